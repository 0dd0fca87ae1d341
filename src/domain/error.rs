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
    /// ABORTED with reason ETAG_MISMATCH: the etag does not match; read and retry.
    #[error("{0}")]
    EtagMismatch(String),
    /// FAILED_PRECONDITION.
    #[error("{message}")]
    FailedPrecondition {
        reason: Precondition,
        message: String,
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

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Error::Invalid(vec![FieldViolation::new(field, description)])
    }

    pub fn precondition(reason: Precondition, message: impl Into<String>) -> Self {
        Error::FailedPrecondition {
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
            Error::EtagMismatch(_) => "ETAG_MISMATCH",
            Error::FailedPrecondition { reason, .. } => match reason {
                Precondition::WrongState => "FAILED_PRECONDITION",
                Precondition::ServiceMismatch => "SERVICE_MISMATCH",
                Precondition::CursorExpired => "CURSOR_EXPIRED",
                Precondition::AppSuspended => "INSTALLED_APP_SUSPENDED",
            },
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
            StoreError::Db(_) => Error::Internal(err.into()),
        }
    }
}

impl From<crate::crypto::CryptoError> for Error {
    fn from(err: crate::crypto::CryptoError) -> Self {
        Error::Internal(err.into())
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
