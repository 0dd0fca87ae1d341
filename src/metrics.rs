//! Prometheus metrics: one server's counters, gauges and histograms, written by
//! `prometheus-client` in the Prometheus text format (0.0.4) on
//! `INTEGRATION_HUB_METRICS_LISTEN` (`GET /metrics`).
//!
//! Label values are bounded: a call's `method` is the path of a method this server serves
//! ([`method_label`]) or `unknown`, its `code` one of the seventeen gRPC codes. The path is
//! the caller's choice and is counted before authentication, so labelling by the raw path
//! would let anyone grow the registry, and every scrape, without bound.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The `method` label of every call to a path this server does not serve.
pub const UNKNOWN_METHOD: &str = "unknown";

/// The descriptor sets of every service this server serves: the app's, health, and
/// reflection (v1 and v1alpha).
const SERVED_DESCRIPTOR_SETS: [&[u8]; 4] = [
    crate::pb::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// Every `/package.Service/Method` path of [`SERVED_DESCRIPTOR_SETS`], read once.
fn served_methods() -> &'static HashSet<String> {
    static METHODS: OnceLock<HashSet<String>> = OnceLock::new();
    METHODS.get_or_init(|| {
        use prost::Message;
        let mut methods = HashSet::new();
        for encoded in SERVED_DESCRIPTOR_SETS {
            // Compiled into the binary and checked by a unit test: a set that does not decode
            // would only leave its methods counted as `unknown`.
            let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
                continue;
            };
            for file in &set.file {
                let package = file.package();
                for service in &file.service {
                    for method in &service.method {
                        methods.insert(format!("/{package}.{}/{}", service.name(), method.name()));
                    }
                }
            }
        }
        methods
    })
}

/// The `method` label (and the name logs and spans use) of a request path: the path itself
/// when this server serves it, [`UNKNOWN_METHOD`] for anything else.
pub fn method_label(path: &str) -> &'static str {
    served_methods()
        .get(path)
        .map_or(UNKNOWN_METHOD, String::as_str)
}

/// The `code` label: the code's name as tonic spells it (`Ok`, `NotFound`, ...).
pub fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The registry: call metrics kept by `prometheus-client`, and plain atomics that the event
/// bus and the watch streams move, read at each scrape.
pub struct Metrics {
    requests: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
    /// OAuth token refresh attempts by outcome (a fixed set the domain names).
    oauth_refreshes: Family<OutcomeLabels, Counter>,
    /// Verifications of credentials with their provider by outcome (the domain's fixed set).
    credential_checks: Family<OutcomeLabels, Counter>,
    /// Watch streams open now.
    pub watch_streams: AtomicI64,
    /// Events read from the outbox by this replica's tailer (appended by any replica).
    pub events_appended: AtomicU64,
    /// Events sent to watch streams.
    pub events_delivered: AtomicU64,
    /// Times a subscriber fell behind the broadcast ring and read from the database.
    pub subscriber_lag: AtomicU64,
    /// Newest event sequence number the tailer has published.
    pub event_log_position: AtomicI64,
    /// Database pool: connections open and idle.
    pub db_connections: AtomicI64,
    pub db_connections_idle: AtomicI64,
    /// Webhook delivery attempts by outcome, and their latency.
    webhook_attempts: Family<OutcomeLabels, Counter>,
    webhook_latency: Histogram,
    /// Subscriptions disabled after their receiver failed past the retry window.
    pub webhooks_disabled: AtomicU64,
    /// Findings of the last scheduled verification of the audit chains (0: it verified).
    pub audit_chain_findings: AtomicI64,
    /// Audit records pruned past the retention by this replica.
    pub audit_records_pruned: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            oauth_refreshes: Family::default(),
            credential_checks: Family::default(),
            watch_streams: AtomicI64::new(0),
            events_appended: AtomicU64::new(0),
            events_delivered: AtomicU64::new(0),
            subscriber_lag: AtomicU64::new(0),
            event_log_position: AtomicI64::new(0),
            db_connections: AtomicI64::new(0),
            db_connections_idle: AtomicI64::new(0),
            webhook_attempts: Family::default(),
            webhook_latency: latency_histogram(),
            webhooks_disabled: AtomicU64::new(0),
            audit_chain_findings: AtomicI64::new(0),
            audit_records_pruned: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Records one finished call. `method` comes from [`method_label`], so the label sets
    /// stay few: every served method times every code, at most.
    pub fn record_request(&self, method: &'static str, code: tonic::Code, elapsed: Duration) {
        self.requests
            .get_or_create(&CallLabels {
                method,
                code: code_label(code),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels { method })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts `count` OAuth refresh attempts that ended with `outcome` (one of the few the
    /// domain defines; 0 makes the series appear before the first attempt).
    pub fn record_refresh(&self, outcome: &'static str, count: u64) {
        self.oauth_refreshes
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(count);
    }

    /// Counts `count` verifications of credentials that ended with `outcome` (one of the few
    /// the domain defines; 0 makes the series appear before the first check).
    pub fn record_check(&self, outcome: &'static str, count: u64) {
        self.credential_checks
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(count);
    }

    /// Records one webhook delivery attempt that ended with `outcome` (one of the few the
    /// webhooks define, so the label stays bounded).
    pub fn record_webhook(&self, outcome: &'static str, elapsed: Duration) {
        self.webhook_attempts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.webhook_latency.observe(elapsed.as_secs_f64());
    }

    /// The page in the Prometheus text format (0.0.4).
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        // A registry per scrape: the families are shared handles, the atomics are read now.
        let mut registry = Registry::with_prefix("integration_hub");
        registry.register(
            "requests",
            "gRPC calls by method and status code",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "request_duration",
            "gRPC call latency (until response headers)",
            Unit::Seconds,
            self.latency.clone(),
        );
        registry.register(
            "oauth_refreshes",
            "OAuth access token refresh attempts by outcome",
            self.oauth_refreshes.clone(),
        );
        registry.register(
            "credential_checks",
            "Verifications of credentials with their provider by outcome",
            self.credential_checks.clone(),
        );
        let gauge = |value: &AtomicI64| ConstGauge::new(value.load(Ordering::Relaxed));
        let counter = |value: &AtomicU64| ConstCounter::new(value.load(Ordering::Relaxed));
        registry.register(
            "watch_streams",
            "Watch streams open now",
            gauge(&self.watch_streams),
        );
        registry.register(
            "event_log_position",
            "Newest event sequence number published by the tailer",
            gauge(&self.event_log_position),
        );
        registry.register(
            "db_connections",
            "Database connections open in the pool",
            gauge(&self.db_connections),
        );
        registry.register(
            "db_connections_idle",
            "Idle database connections in the pool",
            gauge(&self.db_connections_idle),
        );
        registry.register(
            "events_appended",
            "Events read from the outbox (appended by any replica)",
            counter(&self.events_appended),
        );
        registry.register(
            "events_delivered",
            "Events sent to watch streams",
            counter(&self.events_delivered),
        );
        registry.register(
            "subscriber_lag",
            "Times a subscriber fell behind and read from the database",
            counter(&self.subscriber_lag),
        );
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by outcome",
            self.webhook_attempts.clone(),
        );
        registry.register_with_unit(
            "webhook_attempt_duration",
            "Webhook delivery attempt latency",
            Unit::Seconds,
            self.webhook_latency.clone(),
        );
        registry.register(
            "webhooks_disabled",
            "Webhook subscriptions disabled after failing past the retry window",
            counter(&self.webhooks_disabled),
        );
        registry.register(
            "audit_chain_findings",
            "Records edited, deleted, reordered or inserted found by the last audit chain check",
            gauge(&self.audit_chain_findings),
        );
        registry.register(
            "audit_records_pruned",
            "Audit records pruned past the retention by this replica",
            counter(&self.audit_records_pruned),
        );
        let mut page = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut page, &registry)?;
        Ok(page)
    }
}

/// Serves `GET /metrics` on `listener` until `stop` flips.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    refresh: impl Fn(&Metrics) + Send + Sync + 'static,
) {
    let refresh = Arc::new(refresh);
    loop {
        let (mut socket, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "metrics listener accept failed");
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let refresh = refresh.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            // One small request per connection; anything larger than 8 KiB is not ours.
            let mut buffer = vec![0u8; 8192];
            let mut read = 0;
            let complete = tokio::time::timeout(Duration::from_secs(5), async {
                while read < buffer.len() {
                    let n = socket.read(&mut buffer[read..]).await.ok()?;
                    if n == 0 {
                        return None;
                    }
                    read += n;
                    if buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        return Some(());
                    }
                }
                None
            })
            .await;
            if !matches!(complete, Ok(Some(()))) {
                return;
            }
            let response = if buffer[..read].starts_with(b"GET /metrics ") {
                refresh(&metrics);
                match metrics.render() {
                    Ok(body) => format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                        body.len()
                    ),
                    Err(_) => {
                        tracing::error!("encoding the metrics page failed");
                        "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            .to_owned()
                    }
                }
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_method_is_its_own_label_and_anything_else_is_unknown() {
        // The app's methods (each has a policy entry), health and both reflection versions.
        for method in crate::api::methods::METHODS {
            assert_eq!(method_label(method.path), method.path);
        }
        for path in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(method_label(path), path);
        }
        assert_eq!(
            served_methods().len(),
            crate::api::methods::METHODS.len() + 4,
            "every descriptor set decodes, and nothing else is served"
        );
        for hostile in [
            "",
            "/",
            "/grpc.health.v1.Health/",
            "/grpc.health.v1.Health/Check/",
            "/GRPC.HEALTH.V1.HEALTH/CHECK",
            "/integrationhub.v1.InstalledAppService/ListServices\"} 1\nfake_metric 1",
            "/x{}\\\"",
        ] {
            assert_eq!(method_label(hostile), UNKNOWN_METHOD, "{hostile:?}");
        }
    }

    #[test]
    fn the_page_keeps_its_metric_names_and_stays_small_whatever_the_paths() {
        let metrics = Metrics::default();
        let list = "/integrationhub.v1.InstalledAppService/ListServices";
        metrics.record_request(
            method_label(list),
            tonic::Code::Ok,
            Duration::from_millis(3),
        );
        let before = metrics.render().expect("render");
        for i in 0..2000 {
            let path = format!("/evil\"{{{i}}}\n/{}", "x".repeat(i));
            metrics.record_request(
                method_label(&path),
                tonic::Code::Unauthenticated,
                Duration::from_micros(i as u64),
            );
        }
        let after = metrics.render().expect("render");
        assert!(after.len() < before.len() + 2048, "{after}");
        assert!(after.contains(
            "integration_hub_requests_total{method=\"unknown\",code=\"Unauthenticated\"} 2000\n"
        ));
        assert!(after.contains(&format!(
            "integration_hub_requests_total{{method=\"{list}\",code=\"Ok\"}} 1\n"
        )));
        assert!(after.contains(&format!(
            "integration_hub_request_duration_seconds_bucket{{method=\"{list}\",le=\"0.005\"}} 1\n"
        )));
        assert!(after.contains(&format!(
            "integration_hub_request_duration_seconds_count{{method=\"{list}\"}} 1\n"
        )));
        metrics.watch_streams.store(3, Ordering::Relaxed);
        metrics.events_delivered.store(7, Ordering::Relaxed);
        let page = metrics.render().expect("render");
        for (line, value) in [
            ("# TYPE integration_hub_requests_total counter", ""),
            (
                "# TYPE integration_hub_request_duration_seconds histogram",
                "",
            ),
            ("# TYPE integration_hub_watch_streams gauge", ""),
            ("integration_hub_watch_streams", " 3"),
            ("integration_hub_event_log_position", " 0"),
            ("integration_hub_db_connections", " 0"),
            ("integration_hub_db_connections_idle", " 0"),
            ("integration_hub_events_appended_total", " 0"),
            ("integration_hub_events_delivered_total", " 7"),
            ("integration_hub_subscriber_lag_total", " 0"),
        ] {
            assert!(
                page.lines().any(|l| l == format!("{line}{value}")),
                "{line}{value} in\n{page}"
            );
        }
    }
}
