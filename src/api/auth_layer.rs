//! The gate in front of every method: gives the call its request id, verifies the bearer
//! token, applies the per-principal rate limit, looks the method up in the policy table (deny
//! by default: a method without an entry is refused) and puts the `Principal` in the request
//! extensions. Health and reflection pass without a token. A refused call to an audited
//! method is recorded in the audit log.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::codegen::{BoxFuture, Service};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::rate_limit::RoleRateLimits;
use super::{ERROR_DOMAIN, RequestId, actor_of, status_with_reason};
use crate::auth::{TokenCache, Verifier, is_public, now_secs};
use crate::domain::Hub;
use crate::pb::ErrorReason;

/// The metadata key of a call's request id, read from requests and echoed in responses.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Wraps the router with [`AuthService`].
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<Verifier>,
    /// Verified tokens, so a caller's token is not verified again on every call.
    tokens: Arc<TokenCache>,
    limits: Option<Arc<RoleRateLimits>>,
    audit: Option<Arc<Hub>>,
}

impl AuthLayer {
    pub fn new(verifier: Arc<Verifier>) -> Self {
        AuthLayer {
            verifier,
            tokens: Arc::default(),
            limits: None,
            audit: None,
        }
    }

    /// Refuses a principal's calls past its role's limit with RESOURCE_EXHAUSTED.
    pub fn with_rate_limits(mut self, limits: Arc<RoleRateLimits>) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Records refused calls to audited methods in `hub`'s audit log.
    pub fn with_audit(mut self, hub: Arc<Hub>) -> Self {
        self.audit = Some(hub);
        self
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

/// The caller's `x-request-id` if it is 1 to 128 visible ASCII characters, else a fresh id.
pub fn request_id_of(headers: &http::HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(crate::domain::types::new_id)
}

fn refuse<B: Default>(code: Code, message: &str, reason: ErrorReason) -> http::Response<B> {
    status_with_reason(code, message, reason, HashMap::new()).into_http()
}

/// RESOURCE_EXHAUSTED with `RetryInfo` and `ErrorInfo`.
fn rate_limited(retry_after: std::time::Duration) -> Status {
    let mut details = ErrorDetails::with_error_info(
        ErrorReason::ResourceExhausted.as_str_name(),
        ERROR_DOMAIN,
        HashMap::new(),
    );
    details.set_retry_info(Some(retry_after));
    Status::with_error_details(
        Code::ResourceExhausted,
        format!(
            "too many calls from this principal; retry in {} ms",
            retry_after.as_millis().max(1)
        ),
        details,
    )
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AuthService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let mut inner = super::take_ready(&mut self.inner);
        let path = request.uri().path().to_owned();
        if is_public(&path) {
            return Box::pin(inner.call(request));
        }
        let request_id = request_id_of(request.headers());
        // Exactly one value: two `authorization` entries are refused rather than guessing
        // which one counts. Copied out so the future does not borrow the request across the
        // (rare) wait for a key refresh.
        let mut values = request
            .headers()
            .get_all(http::header::AUTHORIZATION)
            .iter();
        let header = match (values.next(), values.next()) {
            (Some(value), None) => value.to_str().ok().map(str::to_owned),
            _ => None,
        };
        let layer = self.layer.clone();
        Box::pin(async move {
            let verified = layer
                .tokens
                .verify(&layer.verifier, header.as_deref(), now_secs())
                .await;
            let principal = match verified {
                Ok(principal) => principal,
                Err(err) => {
                    // The reason is for operators; it never contains the token. The method and
                    // the request id are on the call's span, bounded (the path is the caller's).
                    tracing::debug!(reason = %err, "token refused");
                    return Ok(refuse(
                        Code::Unauthenticated,
                        "missing or invalid credentials",
                        ErrorReason::Unauthenticated,
                    ));
                }
            };
            // Before the policy check, so refused calls count too (and cannot flood the audit
            // log).
            if let Some(limits) = &layer.limits
                && let Err(retry_after) =
                    limits.check(principal.role, &principal.team, &principal.subject)
            {
                tracing::debug!("rate limit reached");
                return Ok(rate_limited(retry_after).into_http());
            }
            let method = super::methods::method(&path);
            let allowed = method.is_some_and(|m| m.access.allows(principal.role));
            if !allowed {
                tracing::debug!(role = principal.role.as_str(), "method refused to role");
                if let (Some(hub), Some(action)) = (&layer.audit, method.and_then(|m| m.audit))
                    && let Ok(actor) = actor_of(&principal, &request_id)
                {
                    hub.audit().audit_refused(&actor, action).await;
                }
                return Ok(refuse(
                    Code::PermissionDenied,
                    "the caller's role may not call this method",
                    ErrorReason::PermissionDenied,
                ));
            }
            let span = tracing::Span::current();
            span.record("team", principal.team.as_str());
            span.record("role", principal.role.as_str());
            request.extensions_mut().insert(principal);
            request.extensions_mut().insert(RequestId(request_id));
            inner.call(request).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_taken_when_sane_and_made_otherwise() {
        let mut headers = http::HeaderMap::new();
        headers.insert(REQUEST_ID_HEADER, "req-42".parse().unwrap());
        assert_eq!(request_id_of(&headers), "req-42");
        headers.insert(REQUEST_ID_HEADER, "a b".parse().unwrap());
        let made = request_id_of(&headers);
        assert_eq!(made.len(), 32);
        headers.insert(REQUEST_ID_HEADER, "x".repeat(129).parse().unwrap());
        assert_eq!(request_id_of(&headers).len(), 32);
        assert_ne!(request_id_of(&http::HeaderMap::new()), made);
    }
}
