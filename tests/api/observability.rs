//! Metrics, request ids and OTLP traces, checked with real tools: an HTTP GET of /metrics and
//! a real OTLP TraceService receiver.

use std::time::Duration;

use integration_hub::crypto::KeyRing;
use integration_hub::pb;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::fixtures::{
    WAIT, create_app_with, create_integration, hex, next_events, traced, watch_live,
};
use crate::helpers::{Backend, TestDb, authed, spawn_with, test_args, token};
use crate::process::Server;

/// The whole HTTP answer of `GET /metrics`, checked to be a 200.
pub async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut socket = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to metrics");
    socket
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("send");
    let mut response = String::new();
    socket.read_to_string(&mut response).await.expect("read");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

fn value_of(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_counters_move_with_calls_streams_and_events() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut args = test_args(&db.url);
    args.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let mut app = spawn_with(Backend::Sqlite, db, args).await;
    let addr = app.metrics_addr.expect("metrics are served");
    let dev = token("acme", "developer", "dana");
    let list = "integration_hub_requests_total{method=\"/integrationhub.v1.InstalledAppService/ListServices\",code=\"Ok\"}";
    let denied = "integration_hub_requests_total{method=\"/integrationhub.v1.InstalledAppService/DeleteInstalledApp\",code=\"PermissionDenied\"}";
    let before = scrape(addr).await;
    for _ in 0..3 {
        app.apps
            .list_services(authed(&dev, pb::ListServicesRequest {}))
            .await
            .expect("list services");
    }
    let refused = app
        .apps
        .delete_installed_app(authed(&dev, pb::DeleteInstalledAppRequest::default()))
        .await
        .expect_err("developers may not delete");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let (mut stream, _) = watch_live(&app, &dev).await;
    let created = create_app_with(&app, &dev, "slack", "Slack", "xoxb-1").await;
    create_integration(&app, &dev, &created, "Results").await;
    // The event reaches the stream before we look at the counters.
    next_events(&mut stream, 1, WAIT).await;
    let after = scrape(addr).await;
    assert_eq!(
        value_of(&after, list) - value_of(&before, list),
        3.0,
        "{after}"
    );
    assert_eq!(value_of(&after, denied) - value_of(&before, denied), 1.0);
    assert!(value_of(&after, "integration_hub_watch_streams") >= 1.0);
    assert!(value_of(&after, "integration_hub_events_appended_total") >= 1.0);
    assert!(value_of(&after, "integration_hub_events_delivered_total") >= 1.0);
    assert!(value_of(&after, "integration_hub_db_connections") >= 1.0);
    assert!(after.contains("integration_hub_request_duration_seconds_bucket{method=\"/integrationhub.v1.InstalledAppService/ListServices\",le=\"+Inf\"}"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_answers_with_a_request_id_and_keeps_the_callers() {
    let db = TestDb::new(Backend::Sqlite).await;
    let args = test_args(&db.url);
    let mut app = spawn_with(Backend::Sqlite, db, args).await;
    let dev = token("acme", "viewer", "vic");
    let response = app
        .apps
        .list_services(traced(&dev, "req-1234", pb::ListServicesRequest {}))
        .await
        .expect("call");
    assert_eq!(
        response
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("req-1234")
    );
    let response = app
        .apps
        .list_services(authed(&dev, pb::ListServicesRequest {}))
        .await
        .expect("call");
    let made = response
        .metadata()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("a request id is made when absent");
    assert!(made.len() >= 16 && made != "req-1234", "a fresh id: {made}");
    let err = app
        .apps
        .list_services(tonic::Request::new(pb::ListServicesRequest {}))
        .await
        .expect_err("no token");
    assert!(
        err.metadata().get("x-request-id").is_some(),
        "errors carry it too"
    );
    app.stop().await;
}

/// Collects exported spans.
struct Receiver(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_continuing_the_callers_trace() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let receiver_addr = listener.local_addr().expect("addr");
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(tx)))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let endpoint = format!("http://{receiver_addr}");
    let mut server = Server::fresh(Backend::Sqlite)
        .await
        .keys(&KeyRing::generate(1).expect("key").1)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_SERVICE_NAME", "hub-under-test")
        .start();
    let (mut apps, _) = server.clients().await;
    let dev = token("acme", "developer", "dana");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = authed(&dev, pb::ListServicesRequest {});
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .expect("value"),
    );
    apps.list_services(request).await.expect("call");
    // Spans are flushed at shutdown.
    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(25)))
        .await
        .expect("terminate");
    assert!(status.success());
    let span = loop {
        let export = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("spans exported by the time the server exits")
            .expect("receiver open");
        let service_name = export.resource_spans.iter().any(|rs| {
            rs.resource.as_ref().is_some_and(|r| {
                r.attributes.iter().any(|kv| {
                    kv.key == "service.name"
                        && matches!(kv.value.as_ref().and_then(|v| v.value.as_ref()), Some(Value::StringValue(s)) if s == "hub-under-test")
                })
            })
        });
        assert!(service_name, "OTEL_SERVICE_NAME names the resource");
        let found = export
            .resource_spans
            .into_iter()
            .flat_map(|rs| rs.scope_spans)
            .flat_map(|ss| ss.spans)
            .find(|s| hex(&s.trace_id) == trace_id);
        if let Some(span) = found {
            break span;
        }
    };
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                },
            )
    };
    assert_eq!(attribute("rpc.system").as_deref(), Some("grpc"));
    assert_eq!(
        attribute("rpc.service").as_deref(),
        Some("integrationhub.v1.InstalledAppService")
    );
    assert_eq!(attribute("rpc.method").as_deref(), Some("ListServices"));
    assert_eq!(attribute("team").as_deref(), Some("acme"));
    assert_eq!(attribute("role").as_deref(), Some("developer"));
    assert_eq!(
        hex(&span.parent_span_id),
        "00f067aa0ba902b7",
        "the caller's span is the parent"
    );
    let text = format!("{span:?}");
    assert!(!text.contains(&dev), "the token never reaches a span");
}
