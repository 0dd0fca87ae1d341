//! Thin gRPC adapters: take the principal, parse the request into domain types, call the
//! domain, map the result. A unary handler is [`accept`] (the caller and the request parsed
//! by its `TryFrom` in `parse`), the domain call, and a conversion from `convert`. Errors
//! become `tonic::Status` in one place (`From<Error> for Status`).

mod access;
mod audit;
mod auth_layer;
pub mod bounds;
pub mod callback;
pub mod codec;
pub mod connections;
mod convert;
mod installed_apps;
mod integrations;
pub mod list_page;
pub mod methods;
mod observe;
pub(crate) mod parse;
pub mod rate_limit;
pub mod reflection;
mod webhooks;

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::auth::{Principal, Role as AuthRole};
use crate::domain::Error;
use crate::domain::model::{Actor, Reach, Role};
use crate::domain::types::TeamId;
use crate::pb::ErrorReason;

pub use access::AccessControl;
pub use audit::AuditLog;
pub use auth_layer::{AuthLayer, REQUEST_ID_HEADER};
pub use bounds::{AnswerLayer, Answers, BoundsArgs, CallLimitLayer};
pub use installed_apps::InstalledApps;
pub use integrations::Integrations;
pub use observe::ObserveLayer;
pub use webhooks::Webhooks;

/// `ErrorInfo.domain` of every error.
pub const ERROR_DOMAIN: &str = "integrationhub";

/// Longest message of an error, in bytes. With at most
/// [`crate::domain::error::MAX_LISTED_VIOLATIONS`] bounded violations, an error's trailers
/// (`grpc-message`, percent-encoded, and `grpc-status-details-bin`, base64 of the message
/// and the details) stay under 8 KiB, what every common client accepts.
pub const MAX_MESSAGE_BYTES: usize = 512;

fn bounded(message: String) -> String {
    crate::domain::error::truncated(&message, MAX_MESSAGE_BYTES)
}

/// The service a layer drove to readiness, leaving a clone in its place: the ready one
/// serves the call (tower's usual swap).
fn take_ready<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}

/// A status with one `ErrorInfo`.
pub fn status_with_reason(
    code: Code,
    message: impl Into<String>,
    reason: ErrorReason,
    metadata: HashMap<String, String>,
) -> Status {
    Status::with_error_details(
        code,
        bounded(naming_reason(message.into(), reason)),
        ErrorDetails::with_error_info(reason.as_str_name(), ERROR_DOMAIN, metadata),
    )
}

/// `message`, ending with `(reason X)` when the reason says more than the code does
/// (CURSOR_EXPIRED is more than FAILED_PRECONDITION). The `ErrorInfo` carries it for
/// programs; the message carries it for people whose tool shows details undecoded (`buf
/// curl` prints them as base64: it does not look their types up by reflection).
fn naming_reason(message: String, reason: ErrorReason) -> String {
    match reason {
        ErrorReason::EtagMismatch
        | ErrorReason::CursorExpired
        | ErrorReason::ServiceMismatch
        | ErrorReason::RequestIdReused
        | ErrorReason::StorageFull
        | ErrorReason::InstalledAppSuspended
        | ErrorReason::CredentialsRejectedByProvider
        | ErrorReason::InstalledAppLacksScopes
        | ErrorReason::OutsideServiceLimits
        | ErrorReason::InstalledAppNotUsable
        | ErrorReason::ServiceBlocked
        | ErrorReason::ApprovalRequired => {
            format!("{message} (reason {})", reason.as_str_name())
        }
        _ => message,
    }
}

/// How long a client should wait before retrying a call the database could not serve.
const UNAVAILABLE_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a client should wait before retrying a write refused for a full disk.
const STORAGE_FULL_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// A status with an `ErrorInfo` and a `RetryInfo` saying when to try again.
fn retry_after(
    code: Code,
    message: String,
    reason: ErrorReason,
    delay: std::time::Duration,
) -> Status {
    let mut details =
        ErrorDetails::with_error_info(reason.as_str_name(), ERROR_DOMAIN, HashMap::new());
    details.set_retry_info(Some(delay));
    Status::with_error_details(code, bounded(naming_reason(message, reason)), details)
}

/// The one map from domain errors to gRPC statuses: the code is decided here, the
/// `ErrorInfo` reason by the error itself ([`Error::reason`], which the audit log records too).
impl From<Error> for Status {
    fn from(err: Error) -> Status {
        let reason = ErrorReason::from_str_name(err.reason()).unwrap_or(ErrorReason::Internal);
        let code = match &err {
            Error::Invalid(_) => Code::InvalidArgument,
            Error::NotFound { .. } => Code::NotFound,
            Error::AlreadyExists { .. } | Error::IdempotencyKeyReused => Code::AlreadyExists,
            Error::PermissionDenied(_) | Error::Denied { .. } => Code::PermissionDenied,
            Error::EtagMismatch(_) => Code::Aborted,
            Error::FailedPrecondition { .. } | Error::MissingScopes { .. } => {
                Code::FailedPrecondition
            }
            Error::ResourceExhausted(_) | Error::StorageFull => Code::ResourceExhausted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Internal(_) => Code::Internal,
        };
        match err {
            Error::Invalid(violations) => {
                // The first violations, each bounded; the message counts the rest.
                let (shown, _) = crate::domain::error::listed(&violations);
                let message = bounded(Error::Invalid(violations).to_string());
                let mut details = ErrorDetails::with_error_info(
                    reason.as_str_name(),
                    ERROR_DOMAIN,
                    HashMap::new(),
                );
                for v in shown {
                    details.add_bad_request_violation(v.field, v.description);
                }
                Status::with_error_details(code, message, details)
            }
            e @ Error::MissingScopes { .. } => {
                let message = bounded(naming_reason(e.to_string(), reason));
                let Error::MissingScopes { app, missing, .. } = e else {
                    unreachable!("matched above")
                };
                let mut details = ErrorDetails::with_error_info(
                    reason.as_str_name(),
                    ERROR_DOMAIN,
                    HashMap::new(),
                );
                for scope in missing
                    .iter()
                    .take(crate::domain::error::MAX_LISTED_VIOLATIONS)
                {
                    details.add_precondition_failure_violation(
                        "SCOPE",
                        app.clone(),
                        format!("scope {scope} is not granted"),
                    );
                }
                Status::with_error_details(code, message, details)
            }
            Error::Unavailable(message) => retry_after(code, message, reason, UNAVAILABLE_RETRY),
            e @ Error::StorageFull => retry_after(code, e.to_string(), reason, STORAGE_FULL_RETRY),
            Error::Internal(cause) => {
                // The cause chain goes to the log; the client sees an opaque message.
                tracing::error!(error = ?cause, "internal error");
                status_with_reason(code, "internal error", reason, HashMap::new())
            }
            e => status_with_reason(code, e.to_string(), reason, HashMap::new()),
        }
    }
}

/// The call's request id, put in the request extensions by [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// The verified caller, put in the request extensions by [`AuthLayer`].
pub fn actor<T>(request: &tonic::Request<T>) -> Result<Actor, Status> {
    let principal = request.extensions().get::<Principal>().ok_or_else(|| {
        // The layer runs before every method: reaching here without a principal is a bug.
        Status::from(Error::internal("request without a verified principal"))
    })?;
    let request_id = match request.extensions().get::<RequestId>() {
        Some(id) => id.0.clone(),
        None => crate::domain::types::new_id(),
    };
    actor_of(principal, &request_id)
}

/// The domain's view of a verified principal.
pub fn actor_of(principal: &Principal, request_id: &str) -> Result<Actor, Status> {
    let team = if principal.all_teams() {
        None
    } else {
        Some(TeamId::parse(&principal.team).map_err(|_| {
            status_with_reason(
                Code::Unauthenticated,
                "missing or invalid credentials",
                ErrorReason::Unauthenticated,
                HashMap::new(),
            )
        })?)
    };
    Ok(Actor {
        subject: principal.subject.clone(),
        team,
        role: match principal.role {
            AuthRole::Viewer => Role::Viewer,
            AuthRole::Developer => Role::Developer,
            AuthRole::Admin => Role::Admin,
            AuthRole::Service => Role::Service,
        },
        request_id: request_id.to_owned(),
        reach: principal.limits.as_ref().map(|limits| Reach {
            services: limits.services.clone(),
            types: limits.types.clone(),
            apps: limits.apps.clone(),
        }),
        groups: principal.groups.clone(),
    })
}

/// The verified caller and the request parsed into its domain input (INVALID_ARGUMENT
/// listing every violated field when it does not parse). A string no database accepts (with
/// a NUL) answers first, naming its fields, whatever the request type.
pub fn accept<R, T>(request: tonic::Request<R>) -> Result<(Actor, T), Status>
where
    R: parse::Described,
    T: TryFrom<R, Error = Error>,
{
    let actor = actor(&request)?;
    let message = request.into_inner();
    parse::check_text(&message)?;
    let input = T::try_from(message)?;
    Ok((actor, input))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{FieldViolation, Precondition};

    #[test]
    fn the_audited_reason_is_the_reason_the_client_sees() {
        let errors = [
            Error::Invalid(vec![FieldViolation::new("f", "bad")]),
            Error::NotFound {
                kind: "integration",
                name: "x".into(),
            },
            Error::AlreadyExists { kind: "x" },
            Error::PermissionDenied("no".into()),
            Error::denied(crate::domain::Denial::OutsideServiceLimits, "no"),
            Error::denied(crate::domain::Denial::NotUsable, "no"),
            Error::EtagMismatch("stale".into()),
            Error::precondition(Precondition::WrongState, "m"),
            Error::precondition(Precondition::ServiceMismatch, "m"),
            Error::precondition(Precondition::CursorExpired, "m"),
            Error::precondition(Precondition::ServiceBlocked, "m"),
            Error::precondition(Precondition::ApprovalRequired, "m"),
            Error::ResourceExhausted("m".into()),
            Error::Unavailable("m".into()),
            Error::StorageFull,
            Error::internal("m"),
        ];
        for err in errors {
            let reason = err.reason();
            let sent = Status::from(err)
                .get_details_error_info()
                .map(|info| info.reason)
                .unwrap_or_default();
            assert_eq!(sent, reason);
        }
    }
}
