//! `integration-hub-bench`: what auth, storage, encryption and streaming cost on top of bare
//! tonic, as ratios to `grpc.health.v1.Health/Check` measured in the same run, at the same
//! concurrency, on the same machine.
//!
//! It starts the real server (`Application::build` + `run_until_stopped`) in child processes
//! of this binary (`server` subcommand): one on SQLite, one on PostgreSQL, one fresh for the
//! idle-stream memory; seeds data; drives each scenario with a raw HTTP/2 load generator; and
//! prints a table. Each unary scenario is paired with a Health/Check run just before it on
//! the same server, so the machine's drift (other jobs on shared cores) cancels out of the
//! ratio.
//!
//! Two longer scenarios run only when named: `--only scale` (the cost of Get, List and
//! Resolve as the database grows to a million integrations, `scale.rs`) and `--only
//! refresher` (thousands of OAuth tokens expiring within one minute, `refresher.rs`).
//! `--smoke` runs everything at toy sizes and fails on any refused call or unfinished
//! scenario: CI's guard that the bench still works.

mod bare_sqlite;
mod distinct;
mod fanout;
mod fleet;
mod floor;
mod pg;
mod refresher;
mod scale;
mod seed;
mod server;
mod unary;
mod watch;
mod webhooks;

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use integration_hub::config::ServeArgs;
use integration_hub::crypto::KeyRing;
use integration_hub::pb;

use crate::pg::Pg;
use crate::seed::Tokens;
use crate::server::{ServerProcess, ServerSpec};
use crate::unary::{Call, Load, Stats};

#[derive(Parser)]
#[command(
    about = "Load-tests integration-hub; prints throughput, p50/p99 and ratios to Health/Check"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand)]
enum Cmd {
    /// Runs the server under test (used by the bench itself; same flags as `serve`).
    #[command(hide = true)]
    Server(Box<ServeArgs>),
    /// Runs a floor server: bare tonic Health/Check after one store read (`floor.rs`).
    #[command(hide = true)]
    Floor(floor::FloorArgs),
}

#[derive(Clone, Debug, clap::Args)]
struct Opts {
    /// HTTP/2 connections of the load generator.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Calls in flight on each connection.
    #[arg(long, default_value_t = 8)]
    streams: usize,
    /// Measured seconds per scenario.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Warm-up seconds before each measurement.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Worker threads of the load generator (the server takes one per core, as in production).
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Scenarios to run (default all but scale, refresher and fleet, which run only when
    /// named): health, get, list, resolve, create (SQLite), get-pg, list-pg, resolve-pg,
    /// create-pg (PostgreSQL), floor, floor-pg (the reads through the store alone, under bare
    /// tonic: what no change above the store can beat), keys, keys-pg (many distinct records,
    /// read cache on and off),
    /// fanout, idle, webhooks, scale, refresher, fleet (replicas on one PostgreSQL, many
    /// streams, many deletes at once).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// CI smoke: every scenario at tiny sizes and durations (seconds in all); fails (exit
    /// status 1) if any call was refused or failed or a scenario did not complete. Never
    /// judges a figure.
    #[arg(long)]
    smoke: bool,
    /// Scale curve: total integrations in the database at each step.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000u64, 100_000, 1_000_000])]
    sizes: Vec<u64>,
    /// Scale curve: databases (sqlite, postgres).
    #[arg(long, value_delimiter = ',', default_values_t = ["sqlite".to_owned(), "postgres".to_owned()])]
    scale_db: Vec<String>,
    /// Scale curve: layouts (one = every integration in the measured team, spread = over
    /// the other teams).
    #[arg(long, value_delimiter = ',', default_values_t = ["one".to_owned(), "spread".to_owned()])]
    scale_layouts: Vec<String>,
    /// Scale curve: teams the spread layout spreads integrations over (one app each).
    #[arg(long, default_value_t = 1_000)]
    scale_other_teams: usize,
    /// Scale curve: connections and calls in flight on each (moderate load).
    #[arg(long, default_value_t = 8)]
    scale_connections: usize,
    #[arg(long, default_value_t = 4)]
    scale_streams: usize,
    /// Scale curve: measured and warm-up seconds per call and size.
    #[arg(long, default_value_t = 3.0)]
    scale_duration_secs: f64,
    #[arg(long, default_value_t = 1.0)]
    scale_warmup_secs: f64,
    /// Scale curve: where the query plans at the largest size are written.
    #[arg(long, default_value = "scale-explain.txt")]
    explain_file: std::path::PathBuf,
    /// Refresher: apps made through the OAuth flow, their tokens expiring within one minute.
    #[arg(long, default_value_t = 10_000)]
    refresher_apps: usize,
    /// Refresher: databases (sqlite, postgres).
    #[arg(long, value_delimiter = ',', default_values_t = ["sqlite".to_owned()])]
    refresher_db: Vec<String>,
    /// Refresher: the server's --oauth-refresh-concurrency.
    #[arg(long, default_value_t = 16)]
    refresh_concurrency: usize,
    /// Refresher: the server's --oauth-refresh-interval-secs.
    #[arg(long, default_value_t = 1)]
    refresh_interval_secs: u64,
    /// Refresher: the local OAuth provider (Node; `npm ci` in the repository first).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/oauth/provider.mjs"))]
    provider_script: std::path::PathBuf,
    /// PostgreSQL host (trust auth), for create-pg and pgbench.
    #[arg(long, default_value = "127.0.0.1")]
    pg_host: String,
    #[arg(long, default_value_t = 5432)]
    pg_port: u16,
    #[arg(long, default_value = "postgres")]
    pg_user: String,
    /// PostgreSQL `sslmode` of the servers and pgbench (e.g. `disable`); unset, each
    /// driver's default (`prefer`: TLS when PostgreSQL offers it).
    #[arg(long)]
    pg_sslmode: Option<String>,
    /// pgbench clients (default: --connections).
    #[arg(long)]
    pgbench_clients: Option<usize>,
    /// Integrations one delete breaks in the fan-out.
    #[arg(long, default_value_t = 10_000)]
    fanout_integrations: usize,
    /// Subscribers watching the fan-out.
    #[arg(long, default_value_t = 100)]
    fanout_subscribers: usize,
    /// Events one webhook subscription delivers in the webhooks scenario.
    #[arg(long, default_value_t = 2_000)]
    webhook_events: usize,
    /// Idle watch streams whose server memory is measured.
    #[arg(long, default_value_t = 10_000)]
    idle_streams: usize,
    /// Idle watch streams per HTTP/2 connection (the server allows 200 per connection).
    #[arg(long, default_value_t = 100)]
    idle_per_connection: usize,
    /// Distinct keys (keys, keys-pg): teams, each with one app and `--keys-per-team`
    /// integrations, read at random.
    #[arg(long, default_value_t = 200)]
    keys_teams: usize,
    #[arg(long, default_value_t = 50)]
    keys_per_team: usize,
    /// Integrations seeded in the team that GetInstalledApp counts and ListIntegrations pages.
    #[arg(long, default_value_t = 200)]
    seeded_integrations: usize,
    /// Fleet: replicas on one PostgreSQL database.
    #[arg(long, default_value_t = 4)]
    fleet_replicas: usize,
    /// Fleet: teams the watch streams are spread over.
    #[arg(long, default_value_t = 1_000)]
    fleet_teams: usize,
    /// Fleet: watch streams, spread over the teams and the replicas.
    #[arg(long, default_value_t = 10_000)]
    fleet_streams: usize,
    /// Fleet: admins (of as many teams) each deleting an app at the same moment.
    #[arg(long, default_value_t = 100)]
    fleet_admins: usize,
    /// Fleet: integrations on each deleted app (each becomes a broken event).
    #[arg(long, default_value_t = 1_000)]
    fleet_integrations: usize,
    /// Fleet: webhook subscriptions of each deleting team, receiving the same burst (0: none;
    /// 10 makes 1,000 subscriptions: about two minutes with `--fleet-integrations 100` on two
    /// cores, about twenty with the default 1,000).
    #[arg(long, default_value_t = 0)]
    fleet_webhooks_per_team: usize,
    /// Extra flags for every server (e.g. `--server-arg=--db-max-connections=4`).
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// Keep the data directory (server logs, SQLite files) after the run.
    #[arg(long)]
    keep: bool,
}

/// Scenarios that run only when named in `--only` (or in the smoke): they take minutes.
const OPT_IN: [&str; 3] = ["scale", "refresher", "fleet"];

impl Opts {
    fn wants(&self, scenario: &str) -> bool {
        let named = self.only.iter().any(|s| s == scenario);
        named || (self.only.is_empty() && !OPT_IN.contains(&scenario))
    }

    fn load(&self) -> Load {
        if self.smoke {
            return Load {
                connections: self.connections,
                streams: self.streams,
                warmup: Duration::from_millis(100),
                duration: Duration::from_millis(300),
            };
        }
        Load {
            connections: self.connections,
            streams: self.streams,
            warmup: Duration::from_secs(self.warmup_secs),
            duration: Duration::from_secs(self.duration_secs),
        }
    }

    fn scale_load(&self) -> Load {
        Load {
            connections: self.scale_connections,
            streams: self.scale_streams,
            warmup: Duration::from_secs_f64(self.scale_warmup_secs),
            duration: Duration::from_secs_f64(self.scale_duration_secs),
        }
    }

    /// The smoke's sizes: every scenario, tiny. Extra `--server-arg`s are kept.
    fn into_smoke(mut self) -> Opts {
        self.only = [
            "health",
            "get",
            "list",
            "resolve",
            "create",
            "get-pg",
            "list-pg",
            "resolve-pg",
            "create-pg",
            "floor",
            "floor-pg",
            "keys",
            "keys-pg",
            "fanout",
            "idle",
            "webhooks",
            "scale",
            "refresher",
            "fleet",
        ]
        .map(str::to_owned)
        .to_vec();
        self.connections = 2;
        self.streams = 2;
        self.fanout_integrations = 200;
        self.fanout_subscribers = 4;
        self.idle_streams = 200;
        self.idle_per_connection = 50;
        self.webhook_events = 20;
        self.keys_teams = 3;
        self.keys_per_team = 10;
        self.sizes = vec![300, 600];
        self.scale_other_teams = 10;
        self.scale_connections = 2;
        self.scale_streams = 2;
        self.scale_warmup_secs = 0.1;
        self.scale_duration_secs = 0.3;
        self.refresher_apps = 20;
        self.refresh_concurrency = 4;
        self.refresh_interval_secs = 1;
        self.fleet_replicas = 2;
        self.fleet_teams = 6;
        self.fleet_streams = 24;
        self.fleet_admins = 3;
        self.fleet_integrations = 20;
        self.fleet_webhooks_per_team = 2;
        self
    }
}

fn backends(names: &[String]) -> anyhow::Result<Vec<scale::Backend>> {
    names
        .iter()
        .map(|n| match n.as_str() {
            "sqlite" => Ok(scale::Backend::Sqlite),
            "postgres" | "pg" => Ok(scale::Backend::Postgres),
            other => anyhow::bail!("unknown database {other:?} (sqlite, postgres)"),
        })
        .collect()
}

fn layouts(names: &[String]) -> anyhow::Result<Vec<scale::Layout>> {
    names
        .iter()
        .map(|n| match n.as_str() {
            "one" => Ok(scale::Layout::OneTeam),
            "spread" => Ok(scale::Layout::Spread),
            other => anyhow::bail!("unknown layout {other:?} (one, spread)"),
        })
        .collect()
}

/// The service binary's allocator, so the server this binary runs is the one deployed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    integration_hub::store::configure_sqlite_process();
    let cli = Cli::parse();
    match cli.command {
        Some(Cmd::Server(args)) => return server::serve(*args),
        Some(Cmd::Floor(args)) => return floor::serve(args),
        None => {}
    }
    let mut opts = cli.opts;
    if opts.smoke {
        opts = opts.into_smoke();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.client_threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(run(opts))
}

const HEALTH: &str = "/grpc.health.v1.Health/Check";
const GET_APP: &str = "/integrationhub.v1.InstalledAppService/GetInstalledApp";
const LIST: &str = "/integrationhub.v1.IntegrationService/ListIntegrations";
const CREATE: &str = "/integrationhub.v1.IntegrationService/CreateIntegration";
const RESOLVE: &str = "/integrationhub.v1.IntegrationService/ResolveIntegrationCredentials";

/// One line of the table.
struct Row {
    scenario: String,
    /// Calls (or events) per second.
    rate: f64,
    p50: Duration,
    p99: Duration,
    /// Server CPU time per call (unary scenarios).
    cpu_per_call: Option<Duration>,
    /// PostgreSQL's CPU time per call (unary scenarios on PostgreSQL, when it runs here).
    postgres_cpu_per_call: Option<Duration>,
    /// Calls (or events) answered over the whole run, warm-up included: the smoke's check
    /// that a scenario works, whatever a short window on a busy machine caught.
    answered: u64,
    errors: u64,
    /// What the ratio is taken against: its name, rate and p99.
    baseline: Option<(String, f64, Option<Duration>)>,
    target: Option<Target>,
    note: String,
}

#[derive(Clone, Copy)]
struct Target {
    min_ratio: f64,
    max_p99_ratio: Option<f64>,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.baseline.as_ref().map(|(_, rate, _)| self.rate / rate)
    }

    fn p99_ratio(&self) -> Option<f64> {
        match &self.baseline {
            Some((_, _, Some(p99))) if !p99.is_zero() => {
                Some(self.p99.as_secs_f64() / p99.as_secs_f64())
            }
            _ => None,
        }
    }

    fn met(&self) -> Option<bool> {
        let target = self.target?;
        let ratio_ok = self.ratio()? >= target.min_ratio;
        let p99_ok = match target.max_p99_ratio {
            Some(max) => self.p99_ratio().is_some_and(|r| r <= max),
            None => true,
        };
        Some(ratio_ok && p99_ok && self.errors == 0)
    }
}

/// A row of `stats`; with what PostgreSQL spent per call when the server's database is
/// `postgres`.
fn row(scenario: &str, stats: &Stats, postgres: bool) -> Row {
    if stats.errors > 0 {
        eprintln!(
            "  {scenario}: {} errors, first: {}",
            stats.errors,
            stats.first_error.as_deref().unwrap_or("?")
        );
    }
    Row {
        scenario: scenario.to_owned(),
        rate: stats.rps(),
        p50: stats.percentile(0.50),
        p99: stats.percentile(0.99),
        cpu_per_call: stats.server_cpu_per_call(),
        postgres_cpu_per_call: stats.postgres_cpu_per_call().filter(|_| postgres),
        answered: stats.answered,
        errors: stats.errors,
        baseline: None,
        target: None,
        note: String::new(),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Runs Health/Check, then `call`, on the same server; the row's ratio is to that health run.
async fn paired(
    server: &ServerProcess,
    label: &str,
    call: &Call,
    load: Load,
    rows: &mut Vec<Row>,
) -> anyhow::Result<Row> {
    let health = health(server, load).await?;
    eprintln!(
        "  Health/Check: {:.0} req/s, p99 {} ms",
        health.rate,
        ms(health.p99)
    );
    let stats = unary::run(server.addr, Some(server.pid()), call, load).await?;
    let mut r = row(label, &stats, server.postgres);
    r.baseline = Some(("Health/Check".into(), health.rate, Some(health.p99)));
    eprintln!(
        "  {label}: {:.0} req/s, p50 {} ms, p99 {} ms",
        r.rate,
        ms(r.p50),
        ms(r.p99)
    );
    rows.push(health);
    Ok(r)
}

/// The real server's Health/Check, then a floor server's (`floor.rs`, its log named after
/// `name`), started with `args` on the same database: the floor's row, as a ratio to the
/// real server's Health.
async fn floor_row(
    server: &ServerProcess,
    label: &str,
    name: &str,
    args: &[String],
    load: Load,
    rows: &mut Vec<Row>,
) -> anyhow::Result<Row> {
    let dir = server.log.parent().context("the server's directory")?;
    let anchor = health(server, load).await?;
    let floor = ServerProcess::start_floor(name, args, dir, server.postgres).await?;
    let call = Call::new(
        HEALTH,
        &tonic_health::pb::HealthCheckRequest::default(),
        None,
    );
    let stats = unary::run(floor.addr, Some(floor.pid()), &call, load).await;
    floor.stop().await?;
    let mut r = row(label, &stats?, server.postgres);
    r.baseline = Some(("Health/Check".into(), anchor.rate, Some(anchor.p99)));
    eprintln!(
        "  {label}: {:.0} req/s against Health's {:.0}",
        r.rate, anchor.rate
    );
    rows.push(anchor);
    Ok(r)
}

/// A duration in whole microseconds, or nothing.
fn micros(d: Option<Duration>) -> String {
    d.map(|c| format!("{:.0}", c.as_secs_f64() * 1e6))
        .unwrap_or_default()
}

async fn health(server: &ServerProcess, load: Load) -> anyhow::Result<Row> {
    let call = Call::new(
        HEALTH,
        &tonic_health::pb::HealthCheckRequest::default(),
        None,
    );
    let stats = unary::run(server.addr, Some(server.pid()), &call, load).await?;
    Ok(row("Health/Check (anchor)", &stats, server.postgres))
}

async fn run(opts: Opts) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("ih-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let result = run_in(&opts, &dir).await;
    if opts.keep || result.is_err() {
        eprintln!("data directory kept: {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_in(opts: &Opts, dir: &std::path::Path) -> anyhow::Result<()> {
    let secret = format!("bench-{}-{}", uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let keys = KeyRing::generate(1)
        .map_err(|e| anyhow::anyhow!("generate a key: {e}"))?
        .1;
    let tokens = Tokens {
        secret: secret.clone(),
    };
    let pg = Pg {
        host: opts.pg_host.clone(),
        port: opts.pg_port,
        user: opts.pg_user.clone(),
        sslmode: opts.pg_sslmode.clone(),
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut notes: Vec<String> = Vec::new();

    // ---- SQLite server: reads, credentials, writes, fan-out ----
    let unary_wanted = [
        "health", "get", "list", "resolve", "create", "floor", "fanout",
    ]
    .iter()
    .any(|s| opts.wants(s));
    if unary_wanted {
        let url = format!("sqlite://{}?mode=rwc", dir.join("sqlite.db").display());
        eprintln!("starting the SQLite server");
        let server = ServerProcess::start(
            ServerSpec {
                name: "sqlite",
                database_url: &url,
                secret: &secret,
                encryption_keys: &keys,
                extra_args: opts.server_arg.clone(),
            },
            dir,
        )
        .await?;
        let result = unary_scenarios(opts, &server, &url, "", &tokens, &mut rows, &mut notes).await;
        server.stop().await?;
        result?;
    }

    // ---- PostgreSQL server: reads and credentials; writes beside pgbench ----
    let pg_wanted = ["get-pg", "list-pg", "resolve-pg", "create-pg", "floor-pg"]
        .iter()
        .any(|s| opts.wants(s));
    if pg_wanted {
        let name = format!("ih_bench_{}", uuid::Uuid::new_v4().simple());
        pg.create_database(&name).await?;
        let url = pg.url(&name);
        eprintln!("starting the PostgreSQL server");
        let started = ServerProcess::start(
            ServerSpec {
                name: "postgres",
                database_url: &url,
                secret: &secret,
                encryption_keys: &keys,
                extra_args: opts.server_arg.clone(),
            },
            dir,
        )
        .await;
        let result = match started {
            Ok(server) => {
                let mut result =
                    unary_scenarios(opts, &server, &url, "-pg", &tokens, &mut rows, &mut notes)
                        .await;
                if result.is_ok() && opts.wants("floor-pg") && !opts.smoke {
                    // pgbench need not be installed for the smoke.
                    result = pgbench_select_row(opts, &server, &pg, &name, dir, &mut rows).await;
                }
                if result.is_ok() && opts.wants("create-pg") {
                    result = postgres_scenario(opts, &server, &pg, &tokens, dir, &mut rows).await;
                }
                server.stop().await?;
                result
            }
            Err(e) => Err(e),
        };
        let _ = pg.drop_database(&name).await;
        result?;
    }

    // ---- many distinct records, read cache on then off (fresh databases) ----
    let keys_run = distinct::KeysRun {
        teams: opts.keys_teams,
        per_team: opts.keys_per_team,
        load: opts.load(),
        server_args: opts.server_arg.clone(),
        secret: &secret,
        keys: &keys,
        tokens: &tokens,
        dir,
    };
    if opts.wants("keys") {
        let url = format!("sqlite://{}?mode=rwc", dir.join("keys.db").display());
        distinct::run(&keys_run, "sqlite", &url, &mut rows).await?;
    }
    if opts.wants("keys-pg") {
        let name = format!("ih_bench_keys_{}", uuid::Uuid::new_v4().simple());
        pg.create_database(&name).await?;
        let result = distinct::run(&keys_run, "postgres", &pg.url(&name), &mut rows).await;
        let _ = pg.drop_database(&name).await;
        result?;
    }

    // ---- a fresh server: memory of idle watch streams ----
    if opts.wants("idle") {
        let url = format!("sqlite://{}?mode=rwc", dir.join("idle.db").display());
        let mut extra = opts.server_arg.clone();
        extra.push(format!(
            "--max-watch-streams={}",
            opts.idle_streams + opts.idle_streams / opts.idle_per_connection.max(1) + 100
        ));
        eprintln!("starting a fresh server for idle watch streams");
        let server = ServerProcess::start(
            ServerSpec {
                name: "idle",
                database_url: &url,
                secret: &secret,
                encryption_keys: &keys,
                extra_args: extra,
            },
            dir,
        )
        .await?;
        // The per-principal limit is 100 by default: 100 streams per token subject.
        let result = fanout::idle_streams(
            &server,
            &tokens,
            opts.idle_streams,
            opts.idle_per_connection,
            100,
        )
        .await;
        server.stop().await?;
        let idle = result?;
        let per = idle.kib_per_stream();
        eprintln!(
            "  idle streams: {} opened in {:.1} s; RSS {} -> {} KiB; {per:.1} KiB per stream",
            idle.streams,
            idle.open_time.as_secs_f64(),
            idle.rss_before_kib,
            idle.rss_after_kib
        );
        notes.push(format!(
            "Idle watch streams: {} streams ({} per connection), server RSS {} KiB -> {} KiB: \
             **{per:.1} KiB per stream** (target <= 10 KiB: {}).",
            idle.streams,
            opts.idle_per_connection,
            idle.rss_before_kib,
            idle.rss_after_kib,
            if per <= 10.0 { "met" } else { "NOT met" }
        ));
    }

    // ---- a fresh server: webhook sender throughput ----
    if opts.wants("webhooks") {
        let url = format!("sqlite://{}?mode=rwc", dir.join("webhooks.db").display());
        let mut extra = opts.server_arg.clone();
        extra.push("--webhook-allow-loopback".into());
        eprintln!("starting a fresh server for webhooks");
        let server = ServerProcess::start(
            ServerSpec {
                name: "webhooks",
                database_url: &url,
                secret: &secret,
                encryption_keys: &keys,
                extra_args: extra,
            },
            dir,
        )
        .await?;
        let result = webhooks::webhooks(server.addr, &url, &tokens, opts.webhook_events).await;
        server.stop().await?;
        let run = result?;
        eprintln!(
            "  webhooks: {} events delivered in {:.2} s: {:.0} events/s",
            run.received,
            run.elapsed.as_secs_f64(),
            run.events_per_sec()
        );
        notes.push(format!(
            "Webhooks: one subscription, {} INTEGRATION_BROKEN events from one delete, each \
             signed and POSTed in order to a receiver on loopback answering 204: all delivered \
             {:.2} s after the delete call, **{:.0} events/s** (SQLite).",
            run.events,
            run.elapsed.as_secs_f64(),
            run.events_per_sec()
        ));
    }

    // ---- replicas on one PostgreSQL: streams over many teams, many deletes at once ----
    if opts.wants("fleet") {
        let spec = fleet::FleetSpec {
            replicas: opts.fleet_replicas,
            teams: opts.fleet_teams,
            streams: opts.fleet_streams,
            admins: opts.fleet_admins,
            integrations: opts.fleet_integrations,
            webhooks_per_team: opts.fleet_webhooks_per_team,
            per_connection: opts.idle_per_connection,
            secret: &secret,
            keys: &keys,
            tokens: &tokens,
            server_args: &opts.server_arg,
            dir,
        };
        fleet_scenario(&spec, &pg, &mut rows, &mut notes).await?;
    }

    // Failures the smoke reports (never a figure: only refused calls and incomplete work).
    let mut failures: Vec<String> = rows
        .iter()
        .filter(|r| r.errors > 0 || r.answered == 0)
        .map(|r| {
            format!(
                "{}: {} errors, {} answered, {:.0}/s",
                r.scenario, r.errors, r.answered, r.rate
            )
        })
        .collect();

    // ---- the scale curve: one server per database and layout ----
    let mut points = Vec::new();
    if opts.wants("scale") {
        let mut sizes = opts.sizes.clone();
        sizes.sort_unstable();
        sizes.dedup();
        let run = scale::ScaleRun {
            sizes,
            backends: backends(&opts.scale_db)?,
            layouts: layouts(&opts.scale_layouts)?,
            other_teams: opts.scale_other_teams,
            load: opts.scale_load(),
            server_args: opts.server_arg.clone(),
            explain_file: if opts.smoke {
                dir.join("scale-explain.txt")
            } else {
                opts.explain_file.clone()
            },
            secret: &secret,
            keys: &keys,
            tokens: &tokens,
            pg: &pg,
            dir,
        };
        points = scale::run(&run).await?;
        for p in &points {
            if p.stats.errors > 0 || p.stats.calls == 0 {
                failures.push(format!(
                    "scale {} {} {} {}: {} errors, {} calls (first error: {})",
                    p.backend,
                    p.layout,
                    p.size,
                    p.call,
                    p.stats.errors,
                    p.stats.calls,
                    p.stats.first_error.as_deref().unwrap_or("none")
                ));
            }
        }
    }

    // ---- the OAuth refresher: many apps expiring within one minute ----
    let mut refreshed = Vec::new();
    if opts.wants("refresher") {
        for backend in backends(&opts.refresher_db)? {
            eprintln!(
                "refresher: {backend}, {} apps, concurrency {}",
                opts.refresher_apps, opts.refresh_concurrency
            );
            // Real runs: a minute of expiries, four-minute tokens (due two minutes before
            // expiry, as the server computes it), the first due 30 s after they are moved.
            // The smoke: the same in seconds.
            let (window, lifetime, lead) = if opts.smoke { (2, 4, 2) } else { (60, 240, 30) };
            let run = refresher::RefresherRun {
                apps: opts.refresher_apps,
                backend,
                concurrency: opts.refresh_concurrency,
                interval_secs: opts.refresh_interval_secs,
                window: Duration::from_secs(window),
                lifetime: Duration::from_secs(lifetime),
                lead: Duration::from_secs(lead),
                setup_parallelism: 16,
                provider_script: opts.provider_script.clone(),
                server_args: opts.server_arg.clone(),
                secret: &secret,
                keys: &keys,
                tokens: &tokens,
                pg: &pg,
                dir,
            };
            let result = refresher::run(&run).await?;
            if !result.ok() {
                failures.push(format!(
                    "refresher {backend}: {} late, {} never refreshed, {} rejected by the provider, \
                     at most {} token requests in flight (limit {})",
                    result.late,
                    result.never,
                    result.provider_rejected,
                    result.max_in_flight,
                    result.concurrency
                ));
            }
            refreshed.push(result);
        }
    }

    print_report(opts, &rows, &notes);
    if !points.is_empty() {
        scale::print_table(&points, opts.scale_load(), opts.scale_other_teams);
    }
    for result in &refreshed {
        result.print();
    }
    if opts.smoke {
        if !failures.is_empty() {
            anyhow::bail!("smoke failed:\n  {}", failures.join("\n  "));
        }
        println!("smoke passed: every call answered OK and every scenario completed");
    }
    Ok(())
}

/// The unary scenarios on one server: SQLite (`suffix` empty: get, list, resolve, create,
/// fanout) or PostgreSQL (`suffix` `-pg`: get-pg, list-pg, resolve-pg).
async fn unary_scenarios(
    opts: &Opts,
    server: &ServerProcess,
    url: &str,
    suffix: &str,
    tokens: &Tokens,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    let wants = |scenario: &str| opts.wants(&format!("{scenario}{suffix}"));
    if ![
        "get", "list", "resolve", "create", "floor", "fanout", "health",
    ]
    .iter()
    .any(|s| wants(s))
    {
        return Ok(());
    }
    let on = if suffix.is_empty() {
        ""
    } else {
        ", PostgreSQL"
    };
    let load = opts.load();
    let team = "bench";
    let developer = tokens.mint(team, "developer", "bench-developer")?;
    let viewer = tokens.mint(team, "viewer", "bench-viewer")?;
    let service = tokens.mint(team, "service", "bench-service")?;
    let channel = seed::channel(server.addr).await?;
    let app = seed::create_app(&channel, &developer, "Slack (bench)").await?;
    seed::seed_integrations(
        url,
        team,
        seed::id_of(&app.name),
        "seed",
        opts.seeded_integrations,
    )
    .await?;

    if suffix.is_empty() && opts.only.len() == 1 && opts.wants("health") {
        rows.push(health(server, load).await?);
    }
    if wants("get") {
        let call = Call::new(
            GET_APP,
            &pb::GetInstalledAppRequest {
                name: app.name.clone(),
            },
            Some(&viewer),
        );
        let name = format!("GetInstalledApp (authenticated{on})");
        let mut r = paired(server, &name, &call, load, rows).await?;
        r.target = Some(Target {
            min_ratio: 0.5,
            max_p99_ratio: Some(2.0),
        });
        rows.push(r);
    }
    if wants("list") {
        let call = Call::new(
            LIST,
            &pb::ListIntegrationsRequest {
                page_size: 50,
                ..Default::default()
            },
            Some(&viewer),
        );
        let name = format!("ListIntegrations (page of 50{on})");
        let mut r = paired(server, &name, &call, load, rows).await?;
        r.target = Some(Target {
            min_ratio: 0.15,
            max_p99_ratio: None,
        });
        rows.push(r);
    }
    if wants("resolve") {
        let name = format!("teams/{team}/integrations/seed1");
        let call = Call::new(
            RESOLVE,
            &pb::ResolveIntegrationCredentialsRequest { name },
            Some(&service),
        );
        let name = format!("ResolveIntegrationCredentials (decrypt{on})");
        let mut r = paired(server, &name, &call, load, rows).await?;
        r.target = Some(Target {
            min_ratio: 0.3,
            max_p99_ratio: Some(3.0),
        });
        rows.push(r);
    }
    if wants("floor") {
        let app_id = seed::id_of(&app.name);
        for read in [
            floor::Read::None,
            floor::Read::Ping,
            floor::Read::GetApp,
            floor::Read::GetIntegration,
            floor::Read::List,
        ] {
            let id = match read {
                floor::Read::GetIntegration => "seed1",
                _ => app_id,
            };
            let args = [
                "--database-url",
                url,
                "--read",
                read.arg(),
                "--team",
                team,
                "--id",
                id,
            ]
            .map(str::to_owned);
            let label = format!("floor: bare tonic Health/Check + {}{on}", read.label());
            let name = format!("{}{suffix}", read.arg());
            let r = floor_row(server, &label, &name, &args, load, rows).await?;
            rows.push(r);
        }
    }
    if !suffix.is_empty() {
        return Ok(());
    }
    if opts.wants("create") {
        let call = Call::new(CREATE, &seed::integration_request(&app), Some(&developer));
        let mut r = paired(server, "CreateIntegration (SQLite)", &call, load, rows).await?;
        // The baseline: a bare one-row insert with the same durability, in the same run.
        let clients = load.connections * load.streams;
        // On the file system of the service's own file (the bench's directory is there too).
        let dir = std::env::temp_dir();
        let bare = bare_sqlite::insert_rate(&dir, clients, load.warmup, load.duration).await?;
        eprintln!(
            "  bare SQLite one-row INSERT (WAL, synchronous=FULL), {clients} callers: {:.0}/s, mean {} ms",
            bare.per_sec,
            ms(bare.mean)
        );
        r.note = format!("vs Health/Check: {:.2}", r.ratio().unwrap_or(0.0));
        r.baseline = Some(("bare SQLite INSERT".into(), bare.per_sec, None));
        r.target = Some(Target {
            min_ratio: 0.5,
            max_p99_ratio: None,
        });
        rows.push(r);
        rows.push(Row {
            scenario: format!(
                "bare SQLite: one-row INSERT, WAL, synchronous=FULL, one connection, {clients} callers"
            ),
            rate: bare.per_sec,
            p50: bare.mean,
            p99: Duration::ZERO,
            cpu_per_call: None,
            postgres_cpu_per_call: None,
            answered: bare.inserts,
            errors: 0,
            baseline: None,
            target: None,
            note: "p50 column: mean time of one insert, queueing included".into(),
        });
    }
    if opts.wants("fanout") {
        let team = "fanout";
        let developer = tokens.mint(team, "developer", "fanout-developer")?;
        let app = seed::create_app(&channel, &developer, "Slack to delete").await?;
        seed::seed_integrations(
            url,
            team,
            seed::id_of(&app.name),
            "fan",
            opts.fanout_integrations,
        )
        .await?;
        let health = health(server, load).await?;
        eprintln!(
            "fan-out: {} subscribers, {} integrations",
            opts.fanout_subscribers, opts.fanout_integrations
        );
        let f = fanout::fanout(
            server.addr,
            tokens,
            team,
            &app,
            opts.fanout_integrations,
            opts.fanout_subscribers,
            opts.connections,
        )
        .await?;
        eprintln!(
            "  fan-out: all delivered in {:.2} s ({:.0} events/s), delete call {:.2} s, {}/{} complete",
            f.all_delivered.as_secs_f64(),
            f.events_per_sec(),
            f.delete_call.as_secs_f64(),
            f.complete,
            f.subscribers
        );
        let incomplete = (f.subscribers - f.complete) as u64;
        rows.push(Row {
            scenario: format!(
                "Fan-out: {} events x {} subscribers (events/s)",
                f.events_each, f.subscribers
            ),
            rate: f.events_per_sec(),
            p50: f.p50,
            p99: f.p99,
            cpu_per_call: None,
            postgres_cpu_per_call: None,
            answered: (f.events_each * f.complete) as u64,
            errors: incomplete,
            baseline: Some(("Health/Check".into(), health.rate, None)),
            target: Some(Target {
                min_ratio: 2.0,
                max_p99_ratio: None,
            }),
            note: format!(
                "all delivered {:.2} s after the delete call; the call took {:.2} s",
                f.all_delivered.as_secs_f64(),
                f.delete_call.as_secs_f64()
            ),
        });
        rows.push(health);
        notes.push(
            "Fan-out p50/p99: time from the delete call until a subscriber has all of its events."
                .into(),
        );
    }
    Ok(())
}

async fn fleet_scenario(
    spec: &fleet::FleetSpec<'_>,
    pg: &Pg,
    rows: &mut Vec<Row>,
    notes: &mut Vec<String>,
) -> anyhow::Result<()> {
    eprintln!(
        "fleet: {} replicas on one PostgreSQL, {} streams over {} teams, {} admins each deleting an app with {} integrations",
        spec.replicas, spec.streams, spec.teams, spec.admins, spec.integrations
    );
    let f = fleet::run(spec, pg).await?;
    let rss: Vec<String> = f
        .rss_before_kib
        .iter()
        .zip(&f.rss_peak_kib)
        .map(|(before, peak)| format!("{} -> {} MiB", before / 1024, peak / 1024))
        .collect();
    eprintln!(
        "  fleet: {}/{} streams complete in {:.2} s ({:.0} events/s), slowest delete {:.2} s; \
         {} repeated, {} to the wrong team, {} streams failed; RSS per replica (streams open -> peak): {}",
        f.complete,
        f.expecting,
        f.all_delivered.as_secs_f64(),
        f.events_per_sec(),
        f.slowest_delete.as_secs_f64(),
        f.repeated,
        f.strays,
        f.failed,
        rss.join(", ")
    );
    rows.push(Row {
        scenario: format!(
            "Fleet: {} replicas, {} deletes x {} integrations to {} of {} streams (events/s)",
            spec.replicas, spec.admins, spec.integrations, f.expecting, spec.streams
        ),
        rate: f.events_per_sec(),
        p50: f.p50,
        p99: f.p99,
        cpu_per_call: None,
        postgres_cpu_per_call: None,
        answered: (f.complete * f.per_stream) as u64,
        errors: (f.expecting - f.complete + f.strays + f.failed) as u64,
        baseline: None,
        target: None,
        note: format!(
            "all delivered {:.2} s after the deletes; slowest delete call {:.2} s",
            f.all_delivered.as_secs_f64(),
            f.slowest_delete.as_secs_f64()
        ),
    });
    if let Some(w) = &f.webhooks {
        eprintln!(
            "  fleet webhooks: {}/{} requests to {} subscriptions in {:.2} s ({:.0}/s); {} subscriptions short, {} repeated",
            w.received,
            w.expected,
            w.subscriptions,
            w.all_delivered.as_secs_f64(),
            w.received as f64 / w.all_delivered.as_secs_f64().max(1e-9),
            w.short,
            w.repeated
        );
        rows.push(Row {
            scenario: format!(
                "Fleet webhooks: {} subscriptions x {} events, same burst (requests/s)",
                w.subscriptions, spec.integrations
            ),
            rate: w.received as f64 / w.all_delivered.as_secs_f64().max(1e-9),
            p50: Duration::ZERO,
            p99: Duration::ZERO,
            cpu_per_call: None,
            postgres_cpu_per_call: None,
            answered: w.received,
            errors: w.short as u64,
            baseline: None,
            target: None,
            note: format!(
                "all received {:.2} s after the deletes; {} repeated",
                w.all_delivered.as_secs_f64(),
                w.repeated
            ),
        });
        notes.push(format!(
            "Fleet webhooks: {} subscriptions ({} for each deleting team) got the same burst: \
             {} of {} signed POSTs at a receiver on loopback {:.2} s after the deletes ({} \
             subscriptions short, {} requests repeated).",
            w.subscriptions,
            spec.webhooks_per_team,
            w.received,
            w.expected,
            w.all_delivered.as_secs_f64(),
            w.short,
            w.repeated
        ));
    }
    notes.push(format!(
        "Fleet: {} replicas on one PostgreSQL; {} watch streams over {} teams (each team's \
         streams spread over the replicas); {} admins each deleted an app with {} integrations \
         at once ({} broken events): every stream of those teams had all of its team's events \
         {:.2} s after the deletes were sent ({}/{} streams complete, {} events delivered twice, \
         {} to another team's stream, {} streams failed). Replica RSS, streams open -> peak: {}.",
        spec.replicas,
        spec.streams,
        spec.teams,
        spec.admins,
        spec.integrations,
        f.events,
        f.all_delivered.as_secs_f64(),
        f.complete,
        f.expecting,
        f.repeated,
        f.strays,
        f.failed,
        rss.join(", ")
    ));
    Ok(())
}

async fn postgres_scenario(
    opts: &Opts,
    server: &ServerProcess,
    pg: &Pg,
    tokens: &Tokens,
    dir: &std::path::Path,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let load = opts.load();
    let developer = tokens.mint("bench", "developer", "bench-developer")?;
    let channel = seed::channel(server.addr).await?;
    let app = seed::create_app(&channel, &developer, "Slack (bench)").await?;
    let call = Call::new(CREATE, &seed::integration_request(&app), Some(&developer));
    let mut r = paired(server, "CreateIntegration (PostgreSQL)", &call, load, rows).await?;
    if opts.smoke {
        // The smoke checks the call, not the comparison: pgbench need not be installed.
        rows.push(r);
        return Ok(());
    }
    let clients = opts.pgbench_clients.unwrap_or(opts.connections);
    let bench = pg.insert_rate(clients, opts.duration_secs, dir).await?;
    eprintln!(
        "  pgbench single-row INSERT, {clients} clients: {:.0} tps, latency {:.2} ms",
        bench.tps, bench.latency_ms
    );
    r.note = format!("vs Health/Check: {:.2}", r.ratio().unwrap_or(0.0));
    r.baseline = Some((
        format!("pgbench INSERT, {clients} clients"),
        bench.tps,
        None,
    ));
    r.target = Some(Target {
        min_ratio: 0.5,
        max_p99_ratio: None,
    });
    rows.push(r);
    rows.push(pgbench_row(
        format!("pgbench: one-row INSERT, {clients} clients"),
        &bench,
        None,
    ));
    Ok(())
}

/// A line of the table for what pgbench measured.
fn pgbench_row(
    scenario: String,
    bench: &pg::Pgbench,
    baseline: Option<(String, f64, Option<Duration>)>,
) -> Row {
    Row {
        scenario,
        rate: bench.tps,
        p50: Duration::from_secs_f64(bench.latency_ms / 1000.0),
        p99: Duration::ZERO,
        cpu_per_call: None,
        postgres_cpu_per_call: None,
        answered: u64::from(bench.tps > 0.0),
        errors: 0,
        baseline,
        target: None,
        note: "p50 column: pgbench's average latency".into(),
    }
}

/// PostgreSQL's own floor for a round trip: pgbench's `SELECT 1` from as many clients as the
/// load generator has connections, as a ratio to the server's Health/Check just before.
async fn pgbench_select_row(
    opts: &Opts,
    server: &ServerProcess,
    pg: &Pg,
    database: &str,
    dir: &std::path::Path,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let anchor = health(server, opts.load()).await?;
    let clients = opts.pgbench_clients.unwrap_or(opts.connections);
    let bench = pg
        .select_one_rate(database, clients, opts.duration_secs, dir)
        .await?;
    eprintln!(
        "  pgbench SELECT 1, {clients} clients: {:.0} tps against Health's {:.0}",
        bench.tps, anchor.rate
    );
    let row = pgbench_row(
        format!("floor: pgbench SELECT 1, {clients} clients (C client, no gRPC)"),
        &bench,
        Some(("Health/Check".into(), anchor.rate, None)),
    );
    rows.push(anchor);
    rows.push(row);
    Ok(())
}

/// `nproc` and the CPU model, for the record.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    format!("{cores} cores, {model}")
}

fn print_report(opts: &Opts, rows: &[Row], notes: &[String]) {
    if rows.is_empty() && notes.is_empty() {
        return;
    }
    println!();
    println!("Machine: {}.", machine());
    println!(
        "Concurrency: {} connections x {} streams; {} s measured after {} s warm-up per scenario; \
         load generator on {} threads, server in its own process. PostgreSQL CPU: every \
         process named `postgres` on this machine, in the measured window (PostgreSQL scenarios).",
        opts.connections, opts.streams, opts.duration_secs, opts.warmup_secs, opts.client_threads
    );
    println!();
    println!(
        "| scenario | req/s | p50 ms | p99 ms | server CPU us/call | PostgreSQL CPU us/call | ratio to | throughput ratio | p99 ratio | target | met |"
    );
    println!("|---|---:|---:|---:|---:|---:|---|---:|---:|---|---|");
    for r in rows {
        let (against, ratio, p99_ratio) = match &r.baseline {
            Some((name, rate, _)) => (
                format!("{name} ({rate:.0}/s)"),
                format!("{:.2}", r.ratio().unwrap_or(0.0)),
                r.p99_ratio().map(|x| format!("{x:.2}")).unwrap_or_default(),
            ),
            None => (String::new(), String::new(), String::new()),
        };
        let target = r
            .target
            .map(|t| match t.max_p99_ratio {
                Some(p) => format!(">= {} (p99 <= {p}x)", t.min_ratio),
                None => format!(">= {}", t.min_ratio),
            })
            .unwrap_or_default();
        let met = match r.met() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        let mut scenario = r.scenario.clone();
        if r.errors > 0 {
            scenario.push_str(&format!(" ({} errors)", r.errors));
        }
        if !r.note.is_empty() {
            scenario.push_str(&format!(" [{}]", r.note));
        }
        println!(
            "| {scenario} | {:.0} | {} | {} | {} | {} | {against} | {ratio} | {p99_ratio} | {target} | {met} |",
            r.rate,
            ms(r.p50),
            if r.p99.is_zero() {
                String::new()
            } else {
                ms(r.p99)
            },
            micros(r.cpu_per_call),
            micros(r.postgres_cpu_per_call),
        );
    }
    println!();
    for note in notes {
        println!("{note}");
    }
}
