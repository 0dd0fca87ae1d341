//! The domain's one error enum. `crate::api` maps it to gRPC codes in one place.

use crate::store::StoreError;

/// One problem with one request field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path in the request, such as `installed_app.display_name`.
    pub field: String,
    /// What is wrong with it. Never contains the submitted value.
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        FieldViolation {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Why a precondition failed; becomes the `ErrorInfo` reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// The resource is not in a state that allows the call.
    WrongState,
    /// The installed app's service differs from the integration's.
    ServiceMismatch,
    /// A watch cursor older than the retention.
    CursorExpired,
    /// The installed app is suspended.
    AppSuspended,
    /// The provider rejected the credentials (a create or a credential change).
    CredentialsRejected,
    /// The team blocked the service.
    ServiceBlocked,
    /// The team requires an admin's approval to install the service.
    ApprovalRequired,
}

/// Why a caller is refused beyond its role; becomes the `ErrorInfo` reason of a
/// PERMISSION_DENIED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// A service principal limited to some services, integration types or installed apps
    /// asked for something outside them (or for a watch or webhook reads, which cover every
    /// service of the team).
    OutsideServiceLimits,
    /// The installed app's `usable_by` names neither the caller nor any of its groups, and
    /// the caller is not an admin.
    NotUsable,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// INVALID_ARGUMENT, with a `BadRequest` listing every violation.
    #[error("invalid request: {}", describe(.0))]
    Invalid(Vec<FieldViolation>),
    /// NOT_FOUND: the resource does not exist, or belongs to another team (the same answer,
    /// so nothing leaks whether it exists).
    #[error("{kind} {name} not found")]
    NotFound { kind: &'static str, name: String },
    /// ALREADY_EXISTS.
    #[error("{kind} already exists")]
    AlreadyExists { kind: &'static str },
    /// ALREADY_EXISTS with reason REQUEST_ID_REUSED: a create with this idempotency key
    /// (`request_id`) was made before with different content.
    #[error("this request_id was used by a different create request")]
    IdempotencyKeyReused,
    /// PERMISSION_DENIED: the caller's role or identity may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// PERMISSION_DENIED with a reason of its own ([`Denial`]).
    #[error("{message}")]
    Denied { reason: Denial, message: String },
    /// ABORTED with reason ETAG_MISMATCH: the etag does not match; read and retry.
    #[error("{0}")]
    EtagMismatch(String),
    /// FAILED_PRECONDITION.
    #[error("{message}")]
    FailedPrecondition {
        reason: Precondition,
        message: String,
    },
    /// FAILED_PRECONDITION with reason INSTALLED_APP_LACKS_SCOPES and a
    /// `google.rpc.PreconditionFailure` naming each missing scope: the installed app's grant
    /// lacks scopes the integration type requires.
    #[error("the installed app {app} lacks scopes that {integration_type} requires: {}", .missing.join(" "))]
    MissingScopes {
        app: String,
        integration_type: String,
        missing: Vec<String>,
    },
    /// RESOURCE_EXHAUSTED: a limit was reached.
    #[error("{0}")]
    ResourceExhausted(String),
    /// UNAVAILABLE (with a `RetryInfo`): retry later.
    #[error("{0}")]
    Unavailable(String),
    /// RESOURCE_EXHAUSTED with reason STORAGE_FULL (and a `RetryInfo`): the server's disk is
    /// full; the write was not made. Reads go on working.
    #[error("the server's storage is full: the change was not made; retry once space is freed")]
    StorageFull,
    /// INTERNAL: the client sees an opaque message; the cause chain goes to the log.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// Most violations an error lists; the rest are only counted, so an error stays small
/// however many fields a request gets wrong (its trailers must fit a client's limit).
pub const MAX_LISTED_VIOLATIONS: usize = 20;
/// Longest field path a listed violation shows, in bytes: a path can end in a client's map
/// key, which is never echoed at length.
pub const MAX_VIOLATION_FIELD_BYTES: usize = 64;
/// Longest description a listed violation shows, in bytes.
pub const MAX_VIOLATION_DESCRIPTION_BYTES: usize = 96;

/// `text` cut to at most `max` bytes on a character boundary, ending in `…` when cut.
pub fn truncated(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The violations an error lists (the first [`MAX_LISTED_VIOLATIONS`], each cut to its
/// bounds) and how many more there are.
pub fn listed(violations: &[FieldViolation]) -> (Vec<FieldViolation>, usize) {
    let shown = violations
        .iter()
        .take(MAX_LISTED_VIOLATIONS)
        .map(|v| FieldViolation {
            field: truncated(&v.field, MAX_VIOLATION_FIELD_BYTES),
            description: truncated(&v.description, MAX_VIOLATION_DESCRIPTION_BYTES),
        })
        .collect();
    (
        shown,
        violations.len().saturating_sub(MAX_LISTED_VIOLATIONS),
    )
}

/// Longest list of violations in an error's message, in bytes; the count of the rest
/// follows it, so the whole message stays under the API's message bound (512 bytes).
const MAX_DESCRIBED_BYTES: usize = 400;

fn describe(violations: &[FieldViolation]) -> String {
    let (shown, more) = listed(violations);
    let all = shown
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ");
    let mut text = truncated(&all, MAX_DESCRIBED_BYTES);
    if more > 0 {
        text.push_str(&format!("; and {more} more violations not listed"));
    }
    text
}

impl Error {
    /// Whether the database itself could not serve (a full disk, a lost database): the store
    /// logs when such a fault starts and ends, so nobody above it logs each call it stops.
    pub fn is_database_fault(&self) -> bool {
        matches!(self, Error::StorageFull | Error::Unavailable(_))
    }

    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::Invalid(vec![FieldViolation::new(field, description)])
    }

    pub fn precondition(reason: Precondition, message: impl Into<String>) -> Self {
        Error::FailedPrecondition {
            reason,
            message: message.into(),
        }
    }

    pub fn denied(reason: Denial, message: impl Into<String>) -> Self {
        Error::Denied {
            reason,
            message: message.into(),
        }
    }

    pub fn internal(message: &'static str) -> Self {
        Error::Internal(anyhow::anyhow!(message))
    }

    /// The `ErrorInfo` reason a client sees for this error (an `ErrorReason` name); the
    /// audit log records it for a failed call.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Invalid(_) => "INVALID_ARGUMENT",
            Error::NotFound { .. } => "NOT_FOUND",
            Error::AlreadyExists { .. } => "ALREADY_EXISTS",
            Error::IdempotencyKeyReused => "REQUEST_ID_REUSED",
            Error::PermissionDenied(_) => "PERMISSION_DENIED",
            Error::Denied { reason, .. } => match reason {
                Denial::OutsideServiceLimits => "OUTSIDE_SERVICE_LIMITS",
                Denial::NotUsable => "INSTALLED_APP_NOT_USABLE",
            },
            Error::EtagMismatch(_) => "ETAG_MISMATCH",
            Error::FailedPrecondition { reason, .. } => match reason {
                Precondition::WrongState => "FAILED_PRECONDITION",
                Precondition::ServiceMismatch => "SERVICE_MISMATCH",
                Precondition::CursorExpired => "CURSOR_EXPIRED",
                Precondition::AppSuspended => "INSTALLED_APP_SUSPENDED",
                Precondition::CredentialsRejected => "CREDENTIALS_REJECTED_BY_PROVIDER",
                Precondition::ServiceBlocked => "SERVICE_BLOCKED",
                Precondition::ApprovalRequired => "APPROVAL_REQUIRED",
            },
            Error::MissingScopes { .. } => "INSTALLED_APP_LACKS_SCOPES",
            Error::ResourceExhausted(_) => "RESOURCE_EXHAUSTED",
            Error::Unavailable(_) => "UNAVAILABLE",
            Error::StorageFull => "STORAGE_FULL",
            Error::Internal(_) => "INTERNAL",
        }
    }
}

impl From<StoreError> for Error {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Conflict => Error::EtagMismatch(
                "the resource changed concurrently; read it again and retry".into(),
            ),
            // The store logs when an outage or a full disk starts and ends, not once per call.
            StoreError::Unavailable(_) => {
                Error::Unavailable("the database is unavailable; retry later".into())
            }
            StoreError::StorageFull(_) => Error::StorageFull,
            StoreError::Busy(why) => Error::ResourceExhausted(format!(
                "{why}; retry later, or narrow the read with filters"
            )),
            StoreError::Db(_) => Error::Internal(err.into()),
        }
    }
}

impl From<crate::store::UnknownValue> for Error {
    /// A stored name its enum does not know: the data is not what this server wrote.
    fn from(err: crate::store::UnknownValue) -> Self {
        Error::internal(err.0)
    }
}

impl From<crate::crypto::CryptoError> for Error {
    /// A value sealed with a key this server does not hold or has retired is the operator's
    /// to fix (re-seal, or restore the key): FAILED_PRECONDITION saying so, never INTERNAL. A
    /// value that does not open with the right key (moved, edited, corrupted) stays INTERNAL.
    fn from(err: crate::crypto::CryptoError) -> Self {
        use crate::crypto::CryptoError as C;
        match err {
            C::KeyRetired(version) => Error::precondition(
                Precondition::WrongState,
                format!(
                    "a stored secret is sealed with key version {version}, which is retired on this server; an operator must run `integration-hub rotate-keys` with that key in the ring"
                ),
            ),
            C::UnknownKeyVersion(version) => Error::precondition(
                Precondition::WrongState,
                format!(
                    "a stored secret is sealed with key version {version}, which this server does not hold; an operator must add it to the key ring"
                ),
            ),
            err => Error::Internal(err.into()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Collects the violations of several fields, so one answer lists them all.
#[derive(Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Keeps the value of a parse, or records its failure under `field`.
    pub fn check<T>(&mut self, field: &str, parsed: Result<T, String>) -> Option<T> {
        match parsed {
            Ok(value) => Some(value),
            Err(description) => {
                self.0.push(FieldViolation::new(field, description));
                None
            }
        }
    }

    pub fn push(&mut self, violation: FieldViolation) {
        self.0.push(violation);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Err(Invalid)` if any violation was recorded.
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::Invalid(self.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_lists_the_first_violations_each_bounded_and_counts_the_rest() {
        let key = "k".repeat(5000);
        let many: Vec<FieldViolation> = (0..10_000)
            .map(|i| FieldViolation::new(format!("integration.config.{key}{i}"), "x".repeat(500)))
            .collect();
        let (shown, more) = listed(&many);
        assert_eq!(shown.len(), MAX_LISTED_VIOLATIONS);
        assert_eq!(more, 10_000 - MAX_LISTED_VIOLATIONS);
        for v in &shown {
            assert!(v.field.len() <= MAX_VIOLATION_FIELD_BYTES);
            assert!(v.field.starts_with("integration.config.k") && v.field.ends_with('…'));
            assert!(v.description.len() <= MAX_VIOLATION_DESCRIPTION_BYTES);
        }
        let message = Error::Invalid(many).to_string();
        assert!(message.ends_with("; and 9980 more violations not listed"));
        assert!(message.len() <= 512, "{}", message.len());
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncated("short", 10), "short");
        let cut = truncated(&"é".repeat(100), 10);
        assert!(cut.len() <= 10 && cut.ends_with('…'));
        assert_eq!(truncated("abcdef", 0), "…");
    }
}
