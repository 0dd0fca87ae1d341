//! Streaming scenarios: the fan-out of one delete that breaks many integrations to many
//! subscribers, and the memory of many idle watch streams.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use integration_hub::pb;
use integration_hub::pb::installed_app_service_client::InstalledAppServiceClient;

use crate::seed::{Tokens, authed};
use crate::server::ServerProcess;
use crate::unary::{connect, p50_p99};
use crate::watch;

/// What the fan-out measured.
pub struct Fanout {
    pub subscribers: usize,
    pub events_each: usize,
    /// From the delete call to the last subscriber having every event.
    pub all_delivered: Duration,
    /// The delete call itself.
    pub delete_call: Duration,
    /// Per subscriber: from the delete call to its last event.
    pub p50: Duration,
    pub p99: Duration,
    pub complete: usize,
}

impl Fanout {
    /// Events delivered per second, all subscribers together.
    pub fn events_per_sec(&self) -> f64 {
        (self.subscribers * self.events_each) as f64 / self.all_delivered.as_secs_f64()
    }
}

/// `subscribers` watch the team of `app`; an admin deletes `app`, which breaks `expected`
/// integrations; measures until every subscriber has every event.
pub async fn fanout(
    addr: SocketAddr,
    tokens: &Tokens,
    team: &str,
    app: &pb::InstalledApp,
    expected: usize,
    subscribers: usize,
    connections: usize,
) -> anyhow::Result<Fanout> {
    let connections = connections.clamp(1, subscribers.max(1));
    let mut sends = Vec::with_capacity(connections);
    for _ in 0..connections {
        sends.push(connect(addr).await?);
    }
    let mut watches = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let token = tokens.mint(team, "viewer", &format!("watcher-{i}"))?;
        watches.push(watch::open(&mut sends[i % connections], addr, &token).await?);
    }
    let started = Instant::now();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    for mut watch in watches {
        let done_tx = done_tx.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            let result = async {
                while seen < expected {
                    match watch.next().await? {
                        Some(message) => seen += message.events,
                        None => bail!("the watch ended after {seen} events"),
                    }
                }
                Ok(Instant::now())
            }
            .await;
            let _ = done_tx.send(result.map_err(|e| (e, seen)));
        });
    }
    drop(done_tx);
    let admin = tokens.mint(team, "admin", "bench-admin")?;
    let channel = crate::seed::channel(addr).await?;
    let deleted = InstalledAppServiceClient::new(channel)
        .delete_installed_app(authed(
            &admin,
            pb::DeleteInstalledAppRequest {
                name: app.name.clone(),
                ..Default::default()
            },
        )?)
        .await
        .context("delete the installed app")?
        .into_inner();
    let delete_call = started.elapsed();
    if deleted.broken_integrations.len() != expected {
        bail!(
            "the delete broke {} integrations, not {expected}",
            deleted.broken_integrations.len()
        );
    }
    let mut finished = Vec::with_capacity(subscribers);
    let mut complete = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while let Ok(Some(result)) = tokio::time::timeout_at(deadline, done_rx.recv()).await {
        match result {
            Ok(at) => {
                complete += 1;
                finished.push(at - started);
            }
            Err((error, seen)) => {
                eprintln!("a subscriber failed after {seen} events: {error:#}");
            }
        }
    }
    let all_delivered = finished.iter().max().copied().unwrap_or_default();
    let (p50, p99) = p50_p99(&finished);
    Ok(Fanout {
        subscribers,
        events_each: expected,
        all_delivered,
        delete_call,
        p50,
        p99,
        complete,
    })
}

/// What the idle streams measured.
pub struct Idle {
    pub streams: usize,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    pub open_time: Duration,
}

impl Idle {
    pub fn kib_per_stream(&self) -> f64 {
        self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64 / self.streams as f64
    }
}

/// Opens `streams` live watches (`per_connection` on each connection, `per_subject` for each
/// token subject), each past its first checkpoint, and reads the server's RSS before and after.
pub async fn idle_streams(
    server: &ServerProcess,
    tokens: &Tokens,
    streams: usize,
    per_connection: usize,
    per_subject: usize,
) -> anyhow::Result<Idle> {
    let addr = server.addr;
    let connections = streams.div_ceil(per_connection.max(1));
    let mut sends = Vec::with_capacity(connections);
    for _ in 0..connections {
        sends.push(connect(addr).await?);
    }
    let subjects = streams.div_ceil(per_subject.max(1));
    let tokens_for = tokens;
    let tokens: Vec<String> = (0..subjects)
        .map(|i| tokens_for.mint("idle", "viewer", &format!("idle-{i}")))
        .collect::<anyhow::Result<_>>()?;
    // Warm up: one stream on each connection opened and closed, so the connections' own
    // buffers are counted in the baseline, not per stream.
    for (i, send) in sends.iter_mut().enumerate() {
        let warm = tokens_for.mint("idle", "viewer", &format!("idle-warm-{i}"))?;
        drop(watch::open(send, addr, &warm).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_kib = server.rss_kib()?;
    let started = Instant::now();
    let mut open = Vec::with_capacity(streams);
    let mut pending = tokio::task::JoinSet::new();
    for i in 0..streams {
        let mut send = sends[i % connections].clone();
        let token = tokens[i / per_subject.max(1)].clone();
        pending.spawn(async move { watch::open(&mut send, addr, &token).await });
        // Keep a bounded number of opens in flight.
        if pending.len() >= 256
            && let Some(joined) = pending.join_next().await
        {
            open.push(joined??);
        }
    }
    while let Some(joined) = pending.join_next().await {
        open.push(joined??);
    }
    let open_time = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_kib = server.rss_kib()?;
    drop(open);
    Ok(Idle {
        streams,
        rss_before_kib,
        rss_after_kib,
        open_time,
    })
}
