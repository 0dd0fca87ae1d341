//! What a hostile caller can do to the metrics and the logs before (and after) authentication:
//! thousands of calls to made-up paths, control characters, megabyte values. The metrics page
//! is read by a Prometheus text parser that is not ours; the logs are those of the real binary,
//! in both formats.

use std::collections::HashSet;

use integration_hub::metrics::{UNKNOWN_METHOD, method_label};
use integration_hub::pb;
use integration_hub::pb::installed_app_service_client::InstalledAppServiceClient;
use prometheus_parse::{LineInfo, Scrape, Value};
use rand::{Rng, SeedableRng};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataValue, errors::InvalidMetadataValueBytes};
use tonic::transport::Channel;

use crate::fixtures::traced;
use crate::helpers::{Backend, TestDb, authed, spawn_with, test_args, token};
use crate::process::{Server, ServerProcess};

/// Calls `path` with an empty message and `metadata`; the answer's status.
async fn call_path(channel: Channel, path: String, metadata: Vec<(&'static str, Vec<u8>)>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    if grpc.ready().await.is_err() {
        return Code::Unavailable;
    }
    let path = PathAndQuery::from_maybe_shared(path).expect("a path the http crate accepts");
    let mut request = tonic::Request::new(pb::ListServicesRequest {});
    for (key, value) in metadata {
        let value: Result<MetadataValue<_>, InvalidMetadataValueBytes> =
            MetadataValue::try_from(value.as_slice());
        request
            .metadata_mut()
            .insert(key, value.expect("a metadata value HTTP/2 can carry"));
    }
    let codec =
        tonic_prost::ProstCodec::<pb::ListServicesRequest, pb::ListServicesResponse>::default();
    match grpc.unary(request, path, codec).await {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// A path no server serves, with what breaks hand-written exposition text and log lines:
/// quotes, braces, backslashes, C1 control characters (NEL, CSI), Unicode line separators
/// and bidi overrides, lookalikes of served methods, up to 8 KiB long. (A raw C0 control
/// character cannot be sent: HTTP/2 refuses it in `:path` before any layer of ours.)
fn hostile_path(rng: &mut impl Rng, i: usize) -> String {
    const PIECES: [&str; 12] = [
        "\"",
        "{}",
        "}",
        "{le=\"+Inf\"}",
        "\\",
        "\\n",
        "\u{85}",
        "\u{9b}31m",
        "\u{2028}",
        "\u{202e}",
        "%0A",
        "}\u{85}integration_hub_requests_total{code=\"Ok\"}%099",
    ];
    let base = match i % 4 {
        0 => "/integrationhub.v1.InstalledAppService/ListServices",
        1 => "/grpc.health.v1.Health/Check",
        2 => "/integrationhub.v1.IntegrationService/",
        _ => "/",
    };
    let mut path = format!("{base}hostile-{i}");
    for _ in 0..rng.gen_range(1..8) {
        path.push_str(PIECES[rng.gen_range(0..PIECES.len())]);
    }
    if i.is_multiple_of(10) {
        let len = rng.gen_range(1_000..8_000);
        path.push_str(&"x".repeat(len));
    }
    path
}

/// The body of `GET /metrics`, in the Prometheus text format.
async fn scrape(addr: std::net::SocketAddr) -> String {
    let response = crate::observability::scrape(addr).await;
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(
        head.contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_owned()
}

/// Parses the page as a scraper would, refusing any line the parser does not recognise.
fn parse(page: &str) -> Scrape {
    for line in page.lines() {
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored | LineInfo::Empty),
            "a line a Prometheus parser does not read: {line:?}"
        );
    }
    Scrape::parse(page.lines().map(|line| Ok(line.to_owned()))).expect("the page parses")
}

fn requests(scrape: &Scrape, method: &str, code: &str) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "integration_hub_requests_total"
                && s.labels.get("method") == Some(method)
                && s.labels.get("code") == Some(code)
        })
        .map(|s| match s.value {
            Value::Counter(v) | Value::Untyped(v) => v,
            _ => panic!("a counter: {s:?}"),
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_paths_before_authentication_count_as_unknown_and_the_page_stays_small_and_parseable()
 {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut args = test_args(&db.url);
    args.metrics_listen = Some("127.0.0.1:0".parse().expect("addr"));
    let mut app = spawn_with(Backend::Sqlite, db, args).await;
    let addr = app.metrics_addr.expect("metrics are served");
    let viewer = token("acme", "viewer", "vic");
    app.apps
        .list_services(authed(&viewer, pb::ListServicesRequest {}))
        .await
        .expect("list services");
    let before_page = scrape(addr).await;
    let before = parse(&before_page);

    // Unauthenticated calls, and a few with a valid token (refused by the method policy).
    const CALLS: usize = 4000;
    const TASKS: usize = 16;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let channel = app.channel.clone();
        let viewer = viewer.clone();
        tasks.spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(task as u64);
            let mut codes = Vec::new();
            for i in (task..CALLS).step_by(TASKS) {
                let path = hostile_path(&mut rng, i);
                let metadata = if i.is_multiple_of(50) {
                    vec![("authorization", format!("Bearer {viewer}").into_bytes())]
                } else {
                    Vec::new()
                };
                codes.push(call_path(channel.clone(), path, metadata).await);
            }
            codes
        });
    }
    let mut codes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        codes.extend(done.expect("task"));
    }
    assert_eq!(codes.len(), CALLS);
    // Health's prefix passes without a token (and finds no such method); the rest needs one.
    let count = |code| codes.iter().filter(|c| **c == code).count();
    let (unimplemented, denied) = (CALLS / 4, CALLS / 50);
    let unauthenticated = CALLS - unimplemented - denied;
    assert_eq!(count(Code::Unimplemented), unimplemented);
    assert_eq!(count(Code::PermissionDenied), denied);
    assert_eq!(count(Code::Unauthenticated), unauthenticated);

    let after = scrape(addr).await;
    let parsed = parse(&after);
    eprintln!(
        "/metrics: {} bytes before, {} bytes after {CALLS} calls to hostile paths",
        before_page.len(),
        after.len()
    );
    // Nothing of the paths reached the page: only served methods and `unknown` are labels.
    for marker in [
        "hostile", "\u{85}", "\u{9b}", "\u{2028}", "\u{202e}", "xxxx", "%0A",
    ] {
        assert!(!after.contains(marker), "{marker:?} on the page");
    }
    let methods: HashSet<&str> = parsed
        .samples
        .iter()
        .filter_map(|s| s.labels.get("method"))
        .collect();
    for method in &methods {
        assert!(
            *method == UNKNOWN_METHOD || method_label(method) == *method,
            "{method:?} is not a served method"
        );
    }
    assert!(methods.contains(UNKNOWN_METHOD));
    // Every hostile call is counted, under `unknown`.
    assert_eq!(
        requests(&parsed, UNKNOWN_METHOD, "Unauthenticated")
            - requests(&before, UNKNOWN_METHOD, "Unauthenticated"),
        unauthenticated as f64
    );
    assert_eq!(
        requests(&parsed, UNKNOWN_METHOD, "PermissionDenied"),
        denied as f64
    );
    assert_eq!(
        requests(&parsed, UNKNOWN_METHOD, "Unimplemented"),
        unimplemented as f64
    );
    assert_eq!(
        requests(
            &parsed,
            "/integrationhub.v1.InstalledAppService/ListServices",
            "Ok"
        ),
        1.0,
        "the lookalikes of ListServices were not counted as it"
    );
    // Bounded: three new series and one histogram, whatever the number of paths.
    let grown = after.len() - before_page.len();
    assert!(grown < 4096, "the page grew by {grown} bytes");
    app.stop().await;
}

/// Logs of one call: the lines after a marker call made before it, up to the line of a marker
/// call made after it (lines of a call are written before its answer).
struct Marks<'a> {
    server: &'a ServerProcess,
    apps: InstalledAppServiceClient<Channel>,
    admin: String,
    count: usize,
}

impl Marks<'_> {
    /// Makes a marker call (NOT_FOUND) and returns the index of its log line.
    async fn mark(&mut self) -> usize {
        self.count += 1;
        let id = format!("mark-{}", self.count);
        let err = self
            .apps
            .get_installed_app(traced(
                &self.admin,
                &id,
                pb::GetInstalledAppRequest {
                    name: "teams/acme/installedApps/marker".into(),
                },
            ))
            .await
            .expect_err("no such app");
        assert_eq!(err.code(), Code::NotFound);
        self.server
            .wait_for_log(|line| line.contains(&id) && line.contains("call failed"))
            .await
    }

    /// The lines logged while `call` ran.
    async fn lines_of<F: std::future::Future>(&mut self, call: F) -> (F::Output, Vec<String>) {
        let start = self.mark().await + 1;
        let output = call.await;
        let end = self.mark().await;
        (output, self.server.logs()[start..end].to_vec())
    }
}

fn bytes(lines: &[String]) -> usize {
    lines.iter().map(|l| l.len() + 1).sum()
}

/// The level of a line, in either format.
fn level(line: &str) -> &'static str {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
        return match value["level"].as_str() {
            Some("ERROR") => "ERROR",
            Some("WARN") => "WARN",
            Some("INFO") => "INFO",
            Some("DEBUG") => "DEBUG",
            _ => "?",
        };
    }
    ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
        .into_iter()
        .find(|level| line.split_whitespace().nth(1) == Some(*level))
        .unwrap_or("?")
}

/// The one "call failed" line among `lines`.
fn outcome(lines: &[String]) -> &str {
    let found: Vec<&String> = lines.iter().filter(|l| l.contains("call failed")).collect();
    assert_eq!(found.len(), 1, "one outcome line: {lines:#?}");
    found[0]
}

async fn client_errors_are_not_errors_and_hostile_values_are_bounded_in(format: &str) {
    let server = Server::fresh(Backend::Sqlite)
        .await
        .env("INTEGRATION_HUB_LOG_FORMAT", format)
        .env("RUST_LOG", "info")
        .start();
    let channel = server.channel().await;
    let admin = token("acme", "admin", "ada");
    let developer = token("acme", "developer", "dev");
    let mut apps = InstalledAppServiceClient::new(channel.clone());
    let mut marks = Marks {
        server: &server,
        apps: apps.clone(),
        admin: admin.clone(),
        count: 0,
    };

    // Ordinary client errors: INFO or WARN, with their code. DeleteInstalledApp is one whose
    // domain call used to log every error at ERROR.
    let (result, lines) = marks
        .lines_of(apps.delete_installed_app(authed(
            &admin,
            pb::DeleteInstalledAppRequest {
                name: "teams/acme/installedApps/missing".into(),
                ..Default::default()
            },
        )))
        .await;
    assert_eq!(result.expect_err("missing").code(), Code::NotFound);
    assert_eq!(level(outcome(&lines)), "INFO", "{lines:#?}");
    assert!(outcome(&lines).contains("NotFound"));
    // A target of their own, so RUST_LOG can keep them to WARN without the call's span.
    assert!(
        outcome(&lines).contains("integration_hub::calls"),
        "{lines:#?}"
    );
    let (result, lines) = marks
        .lines_of(apps.delete_installed_app(authed(
            &developer,
            pb::DeleteInstalledAppRequest {
                name: "teams/acme/installedApps/missing".into(),
                ..Default::default()
            },
        )))
        .await;
    assert_eq!(
        result.expect_err("admins only").code(),
        Code::PermissionDenied
    );
    assert_eq!(level(outcome(&lines)), "WARN", "{lines:#?}");
    assert!(outcome(&lines).contains("PermissionDenied"));

    // A 1 MB request field full of control characters: INVALID_ARGUMENT, a bounded line.
    let huge = "\u{1b}[31m\n\r\u{85}\"{}".repeat(1_000_000 / 12);
    let (result, lines) = marks
        .lines_of(apps.create_installed_app(authed(
            &developer,
            pb::CreateInstalledAppRequest {
                installed_app: Some(pb::InstalledApp {
                    service: huge.clone(),
                    display_name: "Huge".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )))
        .await;
    assert_eq!(
        result.expect_err("no such service").code(),
        Code::InvalidArgument
    );
    assert_eq!(level(outcome(&lines)), "INFO", "{lines:#?}");
    assert!(outcome(&lines).contains("InvalidArgument"));
    let logged = bytes(&lines);
    eprintln!("{format}: a 1 MB request field added {logged} bytes of log");
    assert!(logged < 2048, "{logged} bytes: {lines:#?}");

    // An unauthenticated call to a hostile 6 KB path, with a hostile request id and trace
    // context (bytes HTTP/2 carries: quotes, braces, C1 controls as obs-text), together just
    // under the server's 16 KiB limit for a request's headers.
    let path = format!(
        "/hostile.Svc/{}{}",
        "\u{9b}31m\u{85}FORGED{\"level\":\"ERROR\"}\\\"{}\u{2028}\u{202e}",
        "A".repeat(6000)
    );
    let mut request_id = b"\x9b31m\x85\"{}\\".to_vec();
    request_id.extend(std::iter::repeat_n(b'B', 3000));
    let metadata = vec![
        ("x-request-id", request_id.clone()),
        ("traceparent", request_id.clone()),
    ];
    let (code, lines) = marks
        .lines_of(call_path(channel.clone(), path, metadata))
        .await;
    assert_eq!(code, Code::Unauthenticated);
    let line = outcome(&lines);
    assert_eq!(level(line), "INFO", "{lines:#?}");
    assert!(line.contains("Unauthenticated") && line.contains("unknown_path"));
    assert!(
        !line.contains("BBBBBBBB"),
        "the hostile request id was replaced"
    );
    let logged = bytes(&lines);
    eprintln!(
        "{format}: a 6 KB hostile path and 3 KB hostile metadata added {logged} bytes of log"
    );
    assert!(logged < 2048, "{logged} bytes: {lines:#?}");

    // A 1 MB request id: refused before any layer of ours (HTTP/2 header limits), or bounded.
    let metadata = vec![("x-request-id", vec![b'C'; 1 << 20])];
    // On a connection of its own: the peer may end the connection that carried such a
    // header, and the marker calls must not share its fate.
    let (code, lines) = marks
        .lines_of(call_path(
            server.channel().await,
            "/integrationhub.v1.InstalledAppService/ListServices".to_owned(),
            metadata,
        ))
        .await;
    assert_ne!(code, Code::Ok);
    let logged = bytes(&lines);
    eprintln!("{format}: a 1 MB request id added {logged} bytes of log ({code:?})");
    assert!(logged < 2048, "{logged} bytes: {lines:#?}");
    // The server still answers.
    marks.mark().await;

    let logs = server.logs();
    for line in &logs {
        assert!(
            !line
                .chars()
                .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202e}')),
            "a raw control character in a log line: {line:?}"
        );
        assert_ne!(level(line), "ERROR", "{line}");
        assert!(!line.starts_with("FORGED"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_not_errors_and_hostile_values_are_bounded_in_json_logs() {
    client_errors_are_not_errors_and_hostile_values_are_bounded_in("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_are_not_errors_and_hostile_values_are_bounded_in_pretty_logs() {
    client_errors_are_not_errors_and_hostile_values_are_bounded_in("pretty").await;
}

/// A call's JSON log line carries its span: the fields known when the call started and those
/// recorded on it later (the caller's team and role, the status code), each once, as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_log_line_carries_the_fields_recorded_on_its_call_s_span() {
    let server = Server::fresh(Backend::Sqlite)
        .await
        .env("INTEGRATION_HUB_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .start();
    let mut marks = Marks {
        server: &server,
        apps: InstalledAppServiceClient::new(server.channel().await),
        admin: token("acme", "admin", "ada"),
        count: 0,
    };
    let index = marks.mark().await;
    let line = &server.logs()[index];
    let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    let span = value["span"].as_object().expect("the call's span");
    assert_eq!(span["request_id"], "mark-1", "{line}");
    assert_eq!(span["team"], "acme", "{line}");
    assert_eq!(span["role"], "admin", "{line}");
    assert_eq!(span["rpc.grpc.status_code"], "NotFound", "{line}");
    assert_eq!(span["rpc.method"], "GetInstalledApp", "{line}");
    for field in ["team", "role", "rpc.grpc.status_code"] {
        assert_eq!(
            line.matches(&format!("\"{field}\":")).count(),
            1,
            "{field} once: {line}"
        );
    }
}
