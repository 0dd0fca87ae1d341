//! The gate in front of every method: verifies the bearer token, looks the method up in the
//! policy table (deny by default: a method without an entry is refused) and puts the
//! `Principal` in the request extensions. Health and reflection pass without a token.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::Code;
use tonic::codegen::http;
use tonic::codegen::{BoxFuture, Service};

use super::status_with_reason;
use super::token_cache::{TokenCache, now_secs};
use crate::auth::{Verifier, is_public, policy_for};
use crate::pb::ErrorReason;

/// Wraps the router with [`AuthService`].
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<Verifier>,
    tokens: Arc<TokenCache>,
}

impl AuthLayer {
    pub fn new(verifier: Arc<Verifier>) -> Self {
        AuthLayer {
            verifier,
            tokens: Arc::default(),
        }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            verifier: self.verifier.clone(),
            tokens: self.tokens.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    verifier: Arc<Verifier>,
    /// Verified tokens, so a caller's token is not verified again on every call.
    tokens: Arc<TokenCache>,
}

fn refuse<B: Default>(code: Code, message: &str, reason: ErrorReason) -> http::Response<B> {
    status_with_reason(code, message, reason, HashMap::new()).into_http()
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
        // The clone that was driven to readiness serves this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_owned();
        if is_public(&path) {
            return Box::pin(inner.call(request));
        }
        let mut values = request
            .headers()
            .get_all(http::header::AUTHORIZATION)
            .iter();
        let header = match (values.next(), values.next()) {
            (Some(value), None) => value.to_str().ok(),
            _ => None,
        };
        let principal = match self.tokens.verify(&self.verifier, header, now_secs()) {
            Ok(principal) => principal,
            Err(err) => {
                // The reason is for operators; it never contains the token.
                tracing::debug!(method = %path, reason = %err, "token refused");
                return Box::pin(async move {
                    Ok(refuse(
                        Code::Unauthenticated,
                        "missing or invalid credentials",
                        ErrorReason::Unauthenticated,
                    ))
                });
            }
        };
        let allowed = policy_for(&path).is_some_and(|access| access.allows(principal.role));
        if !allowed {
            tracing::debug!(method = %path, role = principal.role.as_str(), "method refused to role");
            return Box::pin(async move {
                Ok(refuse(
                    Code::PermissionDenied,
                    "the caller's role may not call this method",
                    ErrorReason::PermissionDenied,
                ))
            });
        }
        let span = tracing::Span::current();
        span.record("team", principal.team.as_str());
        span.record("role", principal.role.as_str());
        request.extensions_mut().insert(principal);
        Box::pin(inner.call(request))
    }
}
