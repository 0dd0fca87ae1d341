//! Scale by simulation: several replicas on one PostgreSQL database, many watch streams spread
//! over them and over many teams, and many admins each deleting an app with many integrations
//! at the same moment.
//!
//! Stream `i` watches team `i mod teams`; each team's streams, and all streams together, are
//! spread evenly over the replicas (`replica_of`), at most `per_connection` streams on one
//! HTTP/2 connection (the server refuses more than 200). The first `admins` teams each have
//! one app with `integrations` integrations (seeded with SQL); their admins delete them all at
//! once, through the replicas in turn. A stream of such a team must receive exactly that many
//! INTEGRATION_BROKEN events; a stream of any other team must receive none. Measured: the time
//! from the deletes until every stream has its team's events, each replica's RSS before and at
//! its peak (sampled every 100 ms), and what was lost, repeated or misdelivered.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use integration_hub::pb;
use integration_hub::pb::installed_app_service_client::InstalledAppServiceClient;
use tokio::task::JoinSet;

use crate::pg::Pg;
use crate::seed::{self, Tokens, authed};
use crate::server::{ServerProcess, ServerSpec};
use crate::unary::{connect, p50_p99};
use crate::watch;
use crate::webhooks::{self, Received};

/// The shape of one run.
pub struct FleetSpec<'a> {
    pub replicas: usize,
    pub teams: usize,
    pub streams: usize,
    /// Teams whose admin deletes an app (one each), all at once.
    pub admins: usize,
    /// Integrations on each deleted app.
    pub integrations: usize,
    /// Webhook subscriptions of each deleting team (to a receiver in the bench), which get
    /// the same burst as the streams; 0 for none.
    pub webhooks_per_team: usize,
    /// Watch streams on one HTTP/2 connection.
    pub per_connection: usize,
    pub secret: &'a str,
    pub keys: &'a str,
    pub tokens: &'a Tokens,
    pub server_args: &'a [String],
    pub dir: &'a Path,
}

/// What one run measured.
pub struct Fleet {
    /// Broken events the deletes made (admins x integrations).
    pub events: usize,
    /// Events each stream of a deleting team must receive (its app's integrations).
    pub per_stream: usize,
    /// Streams of the deleting teams, and how many of them got every event.
    pub expecting: usize,
    pub complete: usize,
    /// From the moment the deletes were sent until the last stream had all its events.
    pub all_delivered: Duration,
    /// The slowest delete call.
    pub slowest_delete: Duration,
    /// Per expecting stream: from the deletes to its last event.
    pub p50: Duration,
    pub p99: Duration,
    /// Events beyond a stream's expected count (delivered twice), and events received by
    /// streams of teams that deleted nothing (another team's: must be none).
    pub repeated: usize,
    pub strays: usize,
    /// Streams that ended with an error.
    pub failed: usize,
    /// The webhook subscriptions' share of the burst, when there were any.
    pub webhooks: Option<Webhooks>,
    /// Each replica's RSS before the deletes (streams open) and at its peak after, KiB.
    pub rss_before_kib: Vec<u64>,
    pub rss_peak_kib: Vec<u64>,
}

/// What the webhook subscriptions received.
pub struct Webhooks {
    pub subscriptions: usize,
    /// Requests the receiver got, and how many it had to get (subscriptions x integrations).
    pub received: u64,
    pub expected: u64,
    /// From the moment the deletes were sent until the last expected request arrived (or the
    /// deadline).
    pub all_delivered: Duration,
    /// Subscriptions that got fewer than their team's events, and requests beyond them.
    pub short: usize,
    pub repeated: u64,
}

impl Fleet {
    /// Events delivered per second, all streams together.
    pub fn events_per_sec(&self) -> f64 {
        (self.complete * self.per_stream) as f64 / self.all_delivered.as_secs_f64().max(1e-9)
    }
}

/// A replica's RSS (0 once it is gone: the sampler keeps the peak it saw).
fn rss_kib(pid: u32) -> u64 {
    crate::server::rss_kib_of(pid).unwrap_or(0)
}

/// Runs the simulation on a scratch database of `pg` (dropped afterwards).
pub async fn run(spec: &FleetSpec<'_>, pg: &Pg) -> anyhow::Result<Fleet> {
    if spec.admins == 0 || spec.admins > spec.teams || spec.replicas == 0 {
        bail!("fleet: need 1 <= admins <= teams and at least one replica");
    }
    let name = format!("ih_bench_fleet_{}", uuid::Uuid::new_v4().simple());
    pg.create_database(&name).await?;
    let url = pg.url(&name);
    let mut servers = Vec::with_capacity(spec.replicas);
    let mut result = Ok(());
    for r in 0..spec.replicas {
        let mut extra = spec.server_args.to_vec();
        extra.push(format!("--max-watch-streams={}", spec.streams + 1000));
        // Four replicas' pools on one server: keep them within its max_connections (100).
        extra.push("--db-max-connections=12".into());
        if spec.webhooks_per_team > 0 {
            extra.push("--webhook-allow-loopback".into());
            extra.push(format!(
                "--webhook-max-subscriptions={}",
                spec.webhooks_per_team.max(25)
            ));
        }
        match ServerProcess::start(
            ServerSpec {
                name: &format!("fleet-{r}"),
                database_url: &url,
                secret: spec.secret,
                encryption_keys: spec.keys,
                extra_args: extra,
            },
            spec.dir,
        )
        .await
        {
            Ok(server) => servers.push(server),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let measured = match result {
        Ok(()) => simulate(spec, &servers, &url).await,
        Err(e) => Err(e),
    };
    for server in servers {
        if let Err(e) = server.stop().await {
            eprintln!("fleet: {e:#}");
        }
    }
    let _ = pg.drop_database(&name).await;
    measured
}

/// The replica stream `i` watches through: its team is `i mod teams`, and the `k`-th stream
/// of a team (`k = i / teams`) goes to replica `(k + team) mod replicas`, so each team's streams
/// and all streams together are spread evenly.
fn replica_of(i: usize, teams: usize, replicas: usize) -> usize {
    (i / teams + i % teams) % replicas
}

fn team(t: usize) -> String {
    format!("fleet-{t}")
}

async fn simulate(
    spec: &FleetSpec<'_>,
    servers: &[ServerProcess],
    url: &str,
) -> anyhow::Result<Fleet> {
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let replicas = addrs.len();
    // The apps to delete, each made through the replica its admin will use.
    let mut apps = Vec::with_capacity(spec.admins);
    for t in 0..spec.admins {
        let channel = seed::channel(addrs[t % replicas]).await?;
        let developer = spec.tokens.mint(&team(t), "developer", "fleet-developer")?;
        let app = seed::create_app(&channel, &developer, "Slack to delete").await?;
        seed::seed_integrations(
            url,
            &team(t),
            seed::id_of(&app.name),
            &format!("fl{t}x"),
            spec.integrations,
        )
        .await?;
        apps.push(app);
    }
    let received = Arc::new(Received::default());
    if spec.webhooks_per_team > 0 {
        subscribe(spec, &addrs, received.clone()).await?;
    }
    eprintln!(
        "fleet: {} apps x {} integrations seeded; opening {} streams over {} teams and {replicas} replicas",
        spec.admins, spec.integrations, spec.streams, spec.teams
    );
    let watches = open_streams(spec, &addrs).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pids: Vec<u32> = servers.iter().map(ServerProcess::pid).collect();
    let rss_before_kib: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();

    // Every stream reads until it has its team's events (or, for the others, until told to stop).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let mut readers = JoinSet::new();
    let mut expecting = 0;
    for (i, mut stream) in watches.into_iter().enumerate() {
        let expected = if i % spec.teams < spec.admins {
            spec.integrations
        } else {
            0
        };
        expecting += usize::from(expected > 0);
        let mut stop = stop_rx.clone();
        // Held until the stream is complete (or fails), so the wait below ends as soon as
        // every expecting stream has either reported or failed.
        let mut done_tx = (expected > 0).then(|| done_tx.clone());
        readers.spawn(async move {
            let mut seen = 0;
            loop {
                tokio::select! {
                    next = stream.next() => match next? {
                        Some(message) => {
                            seen += message.events;
                            if seen >= expected
                                && let Some(done) = done_tx.take()
                            {
                                let _ = done.send(Instant::now());
                            }
                        }
                        None => bail!("a watch ended after {seen} events"),
                    },
                    _ = stop.changed() => break,
                }
            }
            anyhow::Ok((expected, seen))
        });
    }
    // Peak RSS of each replica, sampled until the deliveries end.
    let (rss_stop_tx, mut rss_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn({
        let pids = pids.clone();
        async move {
            let mut peak = vec![0u64; pids.len()];
            loop {
                for (p, pid) in pids.iter().enumerate() {
                    peak[p] = peak[p].max(rss_kib(*pid));
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = &mut rss_stop_rx => return peak,
                }
            }
        }
    });

    let started = Instant::now();
    let mut deletes = JoinSet::new();
    for (t, app) in apps.iter().enumerate() {
        let admin = spec.tokens.mint(&team(t), "admin", "fleet-admin")?;
        let request = authed(
            &admin,
            pb::DeleteInstalledAppRequest {
                name: app.name.clone(),
                ..Default::default()
            },
        )?;
        let addr = addrs[t % replicas];
        let integrations = spec.integrations;
        deletes.spawn(async move {
            let channel = seed::channel(addr).await?;
            let deleted = InstalledAppServiceClient::new(channel)
                .delete_installed_app(request)
                .await
                .context("delete an installed app")?
                .into_inner();
            if deleted.broken_integrations.len() != integrations {
                bail!(
                    "a delete broke {} integrations, not {integrations}",
                    deleted.broken_integrations.len()
                );
            }
            anyhow::Ok(started.elapsed())
        });
    }
    let mut slowest_delete = Duration::ZERO;
    while let Some(joined) = deletes.join_next().await {
        slowest_delete = slowest_delete.max(joined??);
    }

    drop(done_tx);
    // Wait for every expecting stream, then give every stream a moment to show an event
    // delivered twice or to the wrong team.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    let mut finished: Vec<Duration> = Vec::with_capacity(expecting);
    while finished.len() < expecting {
        match tokio::time::timeout_at(deadline, done_rx.recv()).await {
            Ok(Some(at)) => finished.push(at - started),
            // Every expecting stream reported or failed, or the deadline passed: what is
            // missing is reported.
            Ok(None) | Err(_) => break,
        }
    }
    let all_delivered = finished.iter().max().copied().unwrap_or_default();
    let webhooks = if spec.webhooks_per_team > 0 {
        Some(webhooks_received(spec, &received, started).await)
    } else {
        None
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_tx.send(true);
    let mut repeated = 0;
    let mut strays = 0;
    let mut failed = 0;
    while let Some(joined) = readers.join_next().await {
        match joined? {
            Ok((0, seen)) => strays += seen,
            Ok((expected, seen)) => repeated += seen.saturating_sub(expected),
            Err(e) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("fleet: a stream failed: {e:#}");
                }
            }
        }
    }
    let _ = rss_stop_tx.send(());
    let rss_peak_kib = sampler.await?;
    let (p50, p99) = p50_p99(&finished);
    Ok(Fleet {
        events: spec.admins * spec.integrations,
        per_stream: spec.integrations,
        expecting,
        complete: finished.len(),
        all_delivered,
        slowest_delete,
        p50,
        p99,
        repeated,
        strays,
        failed,
        webhooks,
        rss_before_kib,
        rss_peak_kib,
    })
}

/// Gives each deleting team `webhooks_per_team` subscriptions to INTEGRATION_BROKEN, each to
/// a path of its own on a receiver in this process.
async fn subscribe(
    spec: &FleetSpec<'_>,
    addrs: &[SocketAddr],
    received: Arc<Received>,
) -> anyhow::Result<()> {
    let receiver = webhooks::receiver(received).await?;
    for t in 0..spec.admins {
        let channel = seed::channel(addrs[t % addrs.len()]).await?;
        let admin = spec.tokens.mint(&team(t), "admin", "fleet-admin")?;
        for k in 0..spec.webhooks_per_team {
            webhooks::subscribe_broken(
                &channel,
                &admin,
                &format!("http://{receiver}/hooks/{t}/{k}"),
            )
            .await?;
        }
    }
    Ok(())
}

/// Waits (up to 600 s after `started`) until every subscription has its team's events, then
/// counts what each got.
async fn webhooks_received(
    spec: &FleetSpec<'_>,
    received: &Received,
    started: Instant,
) -> Webhooks {
    let subscriptions = spec.admins * spec.webhooks_per_team;
    let expected = (subscriptions * spec.integrations) as u64;
    let deadline = started + Duration::from_secs(600);
    let mut last = started.elapsed();
    loop {
        let total = received.total.load(Ordering::Relaxed);
        if total >= expected || Instant::now() > deadline {
            break;
        }
        last = started.elapsed();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_delivered = if received.total.load(Ordering::Relaxed) >= expected {
        last
    } else {
        started.elapsed()
    };
    // A moment for repeats to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let by_path = received
        .by_path
        .lock()
        .map(|m| m.clone())
        .unwrap_or_default();
    let per = spec.integrations as u64;
    let short = subscriptions.saturating_sub(by_path.values().filter(|n| **n >= per).count());
    let repeated = by_path.values().map(|n| n.saturating_sub(per)).sum();
    Webhooks {
        subscriptions,
        received: received.total.load(Ordering::Relaxed),
        expected,
        all_delivered,
        short,
        repeated,
    }
}

/// Opens every stream (each past its first checkpoint), a bounded number at a time.
async fn open_streams(
    spec: &FleetSpec<'_>,
    addrs: &[SocketAddr],
) -> anyhow::Result<Vec<watch::Watch>> {
    let replicas = addrs.len();
    let per_connection = spec.per_connection.max(1);
    // Each replica's connections, opened as its streams need them (`per_connection` each).
    let mut sends: Vec<Vec<_>> = vec![Vec::new(); replicas];
    let mut opened: Vec<Option<watch::Watch>> = (0..spec.streams).map(|_| None).collect();
    let mut pending = JoinSet::new();
    let mut on_replica = vec![0usize; replicas];
    for i in 0..spec.streams {
        let r = replica_of(i, spec.teams, replicas);
        if on_replica[r].is_multiple_of(per_connection) {
            sends[r].push(connect(addrs[r]).await?);
        }
        let mut send = sends[r][on_replica[r] / per_connection].clone();
        on_replica[r] += 1;
        let addr = addrs[r];
        let token = spec
            .tokens
            .mint(&team(i % spec.teams), "viewer", &format!("watcher-{i}"))?;
        pending.spawn(async move { (i, watch::open(&mut send, addr, &token).await) });
        if pending.len() >= 256
            && let Some(joined) = pending.join_next().await
        {
            let (i, watch) = joined?;
            opened[i] = Some(watch?);
        }
    }
    while let Some(joined) = pending.join_next().await {
        let (i, watch) = joined?;
        opened[i] = Some(watch?);
    }
    opened
        .into_iter()
        .map(|w| w.context("a stream was not opened"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_spread_evenly_over_the_replicas_and_each_teams_over_several() {
        let (teams, replicas, streams) = (1000, 4, 10_000);
        let mut per_replica = vec![0; replicas];
        let mut of_team_zero = std::collections::BTreeSet::new();
        for i in 0..streams {
            per_replica[replica_of(i, teams, replicas)] += 1;
            if i % teams == 0 {
                of_team_zero.insert(replica_of(i, teams, replicas));
            }
        }
        assert_eq!(per_replica, vec![2500; 4]);
        assert_eq!(of_team_zero.len(), 4);
    }
}
