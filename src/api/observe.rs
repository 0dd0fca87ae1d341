//! The outermost layer: one span per call (gRPC semantic-convention attributes, the caller's
//! W3C trace context continued), a request id (`x-request-id`, made when absent and returned)
//! on every log line of the call, and the request metrics. A panic below it becomes an
//! INTERNAL answer with an opaque message (the panic goes to the log), never a reset stream.

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

use crate::metrics::Metrics;
use crate::pb::ErrorReason;

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

/// Every error carries one `ErrorInfo` (DESIGN.md). Our handlers and layers always attach it;
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

/// The gRPC status code of a response whose status is in its headers (errors, and
/// trailers-only answers); `OK` otherwise, since a successful unary answer carries its status
/// in the trailers.
fn code_of<B>(response: &http::Response<B>) -> String {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map(|c| format!("{:?}", tonic::Code::from_i32(c)))
        .unwrap_or_else(|| "Ok".to_owned())
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
        let path = request.uri().path().to_owned();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", ""));
        let id = request_id_of(request.headers());
        let span = tracing::info_span!(
            "rpc",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
            request_id = %id,
            team = tracing::field::Empty,
            role = tracing::field::Empty,
        );
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
                    let code = code_of(response);
                    tracing::Span::current().record("rpc.grpc.status_code", code.as_str());
                    metrics.record_request(&path, &code, started.elapsed());
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
