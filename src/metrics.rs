//! Prometheus metrics: one server's registry of counters and histograms, rendered as the
//! text exposition format on `INTEGRATION_HUB_METRICS_LISTEN` (`GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The registry.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
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
}

impl Metrics {
    /// Records one finished call.
    pub fn record_request(&self, method: &str, code: &str, elapsed: Duration) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests
            .entry((method.to_owned(), code.to_owned()))
            .or_default() += 1;
        drop(requests);
        let seconds = elapsed.as_secs_f64();
        let mut latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let histogram = latency.entry(method.to_owned()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                histogram.counts[i] += 1;
            }
        }
        histogram.count += 1;
        histogram.sum += seconds;
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP integration_hub_requests_total gRPC calls by method and status code."
        );
        let _ = writeln!(out, "# TYPE integration_hub_requests_total counter");
        for ((method, code), count) in self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "integration_hub_requests_total{{method=\"{method}\",code=\"{code}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP integration_hub_request_duration_seconds gRPC call latency (until response headers)."
        );
        let _ = writeln!(
            out,
            "# TYPE integration_hub_request_duration_seconds histogram"
        );
        for (method, h) in self
            .latency
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "integration_hub_request_duration_seconds_bucket{{method=\"{method}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "integration_hub_request_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "integration_hub_request_duration_seconds_sum{{method=\"{method}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "integration_hub_request_duration_seconds_count{{method=\"{method}\"}} {}",
                h.count
            );
        }
        let gauges: [(&str, &str, &str, i64); 5] = [
            (
                "integration_hub_watch_streams",
                "gauge",
                "Watch streams open now.",
                self.watch_streams.load(Ordering::Relaxed),
            ),
            (
                "integration_hub_event_log_position",
                "gauge",
                "Newest event sequence number published by the tailer.",
                self.event_log_position.load(Ordering::Relaxed),
            ),
            (
                "integration_hub_db_connections",
                "gauge",
                "Database connections open in the pool.",
                self.db_connections.load(Ordering::Relaxed),
            ),
            (
                "integration_hub_db_connections_idle",
                "gauge",
                "Idle database connections in the pool.",
                self.db_connections_idle.load(Ordering::Relaxed),
            ),
            (
                "integration_hub_events_appended_total",
                "counter",
                "Events read from the outbox (appended by any replica).",
                self.events_appended.load(Ordering::Relaxed) as i64,
            ),
        ];
        for (name, kind, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        let counters = [
            (
                "integration_hub_events_delivered_total",
                "Events sent to watch streams.",
                &self.events_delivered,
            ),
            (
                "integration_hub_subscriber_lag_total",
                "Times a subscriber fell behind and read from the database.",
                &self.subscriber_lag,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
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
                let body = metrics.render();
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}
