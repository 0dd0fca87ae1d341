//! The outermost layer: one span per call (gRPC semantic-convention attributes, the caller's
//! W3C trace context continued), a request id (`x-request-id`, made when absent and returned)
//! on every log line of the call, one log line per failed call at the level its code deserves
//! ([`level_of`]), and the request metrics. A panic below it becomes an INTERNAL answer with
//! an opaque message (the panic goes to the log), never a reset stream.
//!
//! Everything here runs before authentication, so what the caller chose reaches the span and
//! the metrics only bounded: the method as [`method_label`] names it (a served method or
//! `unknown`), the path of an unknown one cut and escaped by [`loggable`], the request id
//! only when it is short and printable.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};
use std::time::Instant;

use futures_util::FutureExt;
use opentelemetry::propagation::Extractor;
use tonic::codegen::http;
use tonic::codegen::{BoxFuture, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::auth_layer::{REQUEST_ID_HEADER, request_id_of};
use super::status_with_reason;
use std::sync::Arc;

use crate::metrics::{Metrics, UNKNOWN_METHOD, code_label, method_label};
use crate::pb::ErrorReason;
use crate::text::loggable;

/// The most bytes of a caller's path (when it names no served method) on a log line.
const MAX_LOGGED_PATH: usize = 160;
/// The most bytes of an error message on a log line.
const MAX_LOGGED_MESSAGE: usize = 300;

#[derive(Clone, Default)]
pub struct ObserveLayer {
    metrics: Arc<Metrics>,
}

impl ObserveLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        ObserveLayer { metrics }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = ObserveService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ObserveService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct ObserveService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Every error carries one `ErrorInfo` (README, "Errors"). Our handlers and layers always attach it;
/// errors tonic makes by itself (a request over the size limit, from its codec) do not: give
/// them one here. A request over the size limit is RESOURCE_EXHAUSTED, as in other gRPC
/// implementations, rather than tonic's OUT_OF_RANGE.
fn with_error_info<B: Default>(response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers();
    if headers.contains_key("grpc-status-details-bin") {
        return response;
    }
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return response;
    };
    let (code, reason, message) = match status.code() {
        tonic::Code::Ok => return response,
        tonic::Code::OutOfRange if status.message().contains("too large") => (
            tonic::Code::ResourceExhausted,
            ErrorReason::ResourceExhausted,
            "the request message is larger than the server accepts (INTEGRATION_HUB_MAX_MESSAGE_BYTES)"
                .to_owned(),
        ),
        tonic::Code::InvalidArgument | tonic::Code::OutOfRange => (
            status.code(),
            ErrorReason::InvalidArgument,
            status.message().to_owned(),
        ),
        tonic::Code::ResourceExhausted => (
            status.code(),
            ErrorReason::ResourceExhausted,
            status.message().to_owned(),
        ),
        tonic::Code::Cancelled | tonic::Code::DeadlineExceeded | tonic::Code::Unavailable => (
            status.code(),
            ErrorReason::Unavailable,
            status.message().to_owned(),
        ),
        tonic::Code::Internal | tonic::Code::Unknown | tonic::Code::DataLoss => (
            status.code(),
            ErrorReason::Internal,
            "internal error".to_owned(),
        ),
        _ => return response,
    };
    status_with_reason(code, message, reason, HashMap::new()).into_http()
}

/// The gRPC status of a response whose status is in its headers (errors, and trailers-only
/// answers); `None` for a success, since a successful answer carries its status in the
/// trailers.
fn status_of<B>(response: &http::Response<B>) -> Option<tonic::Status> {
    tonic::Status::from_header_map(response.headers())
}

/// How loud a finished call is in the log. Client errors are the client's business: they are
/// logged at INFO, or at WARN when an operator may want to look (refusals, timeouts);
/// ERROR is kept for server faults, so an alert on ERROR lines means something is broken here.
fn level_of(code: tonic::Code) -> tracing::Level {
    use tonic::Code;
    match code {
        Code::Ok => tracing::Level::DEBUG,
        Code::Cancelled
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::FailedPrecondition
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::Unauthenticated
        // A full disk or a database outage refuses every call while it lasts: the store logs
        // it at WARN once when it starts and once when it ends, so each call need not.
        | Code::ResourceExhausted
        | Code::Unavailable => tracing::Level::INFO,
        Code::PermissionDenied | Code::DeadlineExceeded => tracing::Level::WARN,
        Code::Internal | Code::Unknown | Code::DataLoss => tracing::Level::ERROR,
    }
}

/// The log target of the outcome lines, so they can be filtered on their own (the call's span
/// has this module's target, and filtering it out would take the request id off every line).
const OUTCOME_TARGET: &str = "integration_hub::calls";

/// The one log line of a finished call: its code, and for an error its message, bounded.
fn log_outcome(status: Option<&tonic::Status>, elapsed: std::time::Duration) {
    let code = status.map_or(tonic::Code::Ok, tonic::Status::code);
    let label = code_label(code);
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    let detail = status.map_or(String::new(), |s| loggable(s.message(), MAX_LOGGED_MESSAGE));
    match level_of(code) {
        tracing::Level::ERROR => {
            tracing::error!(target: OUTCOME_TARGET, code = label, %detail, elapsed_ms, "call failed")
        }
        tracing::Level::WARN => {
            tracing::warn!(target: OUTCOME_TARGET, code = label, %detail, elapsed_ms, "call failed")
        }
        tracing::Level::INFO => {
            tracing::info!(target: OUTCOME_TARGET, code = label, %detail, elapsed_ms, "call failed")
        }
        _ => tracing::debug!(target: OUTCOME_TARGET, code = label, elapsed_ms, "call finished"),
    }
}

/// What a client sees when the call panicked.
fn panicked<B: Default>(panic: &(dyn std::any::Any + Send)) -> http::Response<B> {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %message, "a call panicked");
    status_with_reason(
        tonic::Code::Internal,
        "internal error",
        ErrorReason::Internal,
        HashMap::new(),
    )
    .into_http()
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ObserveService<S>
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
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let method = method_label(request.uri().path());
        let (service, short_method) = method
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((UNKNOWN_METHOD, UNKNOWN_METHOD));
        let id = request_id_of(request.headers());
        let span = tracing::info_span!(
            "rpc",
            otel.name = %method.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %short_method,
            rpc.grpc.status_code = tracing::field::Empty,
            request_id = %id,
            team = tracing::field::Empty,
            role = tracing::field::Empty,
            unknown_path = tracing::field::Empty,
        );
        if method == UNKNOWN_METHOD {
            span.record(
                "unknown_path",
                loggable(request.uri().path(), MAX_LOGGED_PATH).as_str(),
            );
        }
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&Headers(request.headers()))
        });
        // Without an exporter there is no OpenTelemetry context to join: nothing to do.
        let _ = span.set_parent(parent);
        if let Ok(value) = http::HeaderValue::from_str(&id) {
            request
                .headers_mut()
                .insert(REQUEST_ID_HEADER, value.clone());
        }
        let started = Instant::now();
        let metrics = self.metrics.clone();
        let future = {
            // The inner layers (auth) record the caller's team and role on this span.
            let _entered = span.enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(request)))
        };
        Box::pin(
            async move {
                let result = match future {
                    Ok(future) => match AssertUnwindSafe(future).catch_unwind().await {
                        Ok(result) => result,
                        Err(panic) => Ok(panicked(panic.as_ref())),
                    },
                    Err(panic) => Ok(panicked(panic.as_ref())),
                };
                let result = result.map(with_error_info);
                if let Ok(response) = &result {
                    let status = status_of(response);
                    let code = status.as_ref().map_or(tonic::Code::Ok, tonic::Status::code);
                    let elapsed = started.elapsed();
                    tracing::Span::current().record("rpc.grpc.status_code", code_label(code));
                    metrics.record_request(method, code, elapsed);
                    log_outcome(status.as_ref(), elapsed);
                }
                result.map(|mut response| {
                    if let Ok(value) = http::HeaderValue::from_str(&id) {
                        response.headers_mut().insert(REQUEST_ID_HEADER, value);
                    }
                    response
                })
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that panics: in `call`, or inside its future.
    #[derive(Clone)]
    struct Panics {
        in_future: bool,
    }

    impl Service<http::Request<()>> for Panics {
        type Response = http::Response<String>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Self::Response, Self::Error>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: http::Request<()>) -> Self::Future {
            if !self.in_future {
                panic!("boom in call, secret=hunter2");
            }
            Box::pin(async { panic!("boom in future, secret=hunter2") })
        }
    }

    #[test]
    fn errors_made_by_tonic_itself_get_an_error_info_and_ours_are_left_alone() {
        use tonic_types::StatusExt;
        let bare: http::Response<String> =
            tonic::Status::out_of_range("Error, decoded message length too large").into_http();
        let status =
            tonic::Status::from_header_map(with_error_info(bare).headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            status.get_details_error_info().expect("ErrorInfo").reason,
            "RESOURCE_EXHAUSTED"
        );
        let ours: http::Response<String> = status_with_reason(
            tonic::Code::NotFound,
            "installed app x not found",
            ErrorReason::NotFound,
            HashMap::new(),
        )
        .into_http();
        let status =
            tonic::Status::from_header_map(with_error_info(ours).headers()).expect("a status");
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert_eq!(
            status.get_details_error_info().expect("ErrorInfo").reason,
            "NOT_FOUND"
        );
        let ok = http::Response::new(String::new());
        assert!(
            with_error_info(ok).headers().is_empty(),
            "a success is untouched"
        );
    }

    #[test]
    fn client_errors_are_info_or_warn_and_only_server_faults_are_error() {
        use tonic::Code;
        use tracing::Level;
        for code in [
            Code::NotFound,
            Code::InvalidArgument,
            Code::Aborted,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::ResourceExhausted,
            Code::Unavailable,
        ] {
            assert!(
                matches!(level_of(code), Level::INFO | Level::WARN),
                "{code:?}"
            );
        }
        // Logged once per outage by the store, not per call.
        assert_eq!(level_of(Code::Unavailable), Level::INFO);
        assert_eq!(level_of(Code::ResourceExhausted), Level::INFO);
        for code in [Code::Internal, Code::Unknown, Code::DataLoss] {
            assert_eq!(level_of(code), Level::ERROR, "{code:?}");
        }
        assert_eq!(level_of(Code::Ok), Level::DEBUG);
    }

    #[test]
    fn what_reaches_a_log_line_is_printable_ascii_and_bounded() {
        assert_eq!(loggable("/a.B/C", 100), "/a.B/C");
        assert_eq!(
            loggable("x\n\u{1b}[31m\r\\\"\u{202e}é\0", 100),
            "x\\n\\u{1b}[31m\\r\\\\\"\\u{202e}\\u{e9}\\u{0}"
        );
        let long = "\n".repeat(1 << 20);
        let cut = loggable(&long, 160);
        assert!(cut.len() <= 160 + 24, "{}", cut.len());
        assert!(cut.ends_with("...(1048576 bytes)"), "{cut}");
        for text in [long.as_str(), "a\u{7f}b", "\u{85}\u{2028}"] {
            assert!(
                loggable(text, 1000)
                    .bytes()
                    .all(|b| b.is_ascii_graphic() || b == b' ')
            );
        }
    }

    #[tokio::test]
    async fn a_panicking_call_answers_internal_with_an_opaque_message() {
        for in_future in [false, true] {
            let mut service = tower::Layer::layer(&ObserveLayer::default(), Panics { in_future });
            let request = http::Request::builder()
                .uri("/integrationhub.v1.InstalledAppService/ListServices")
                .body(())
                .expect("request");
            let response = service.call(request).await.expect("an answer, not a panic");
            let status = tonic::Status::from_header_map(response.headers()).expect("grpc status");
            assert_eq!(status.code(), tonic::Code::Internal);
            assert_eq!(status.message(), "internal error");
            assert!(!format!("{status:?}").contains("hunter2"));
        }
    }
}
