//! The scale curve: does a call's cost grow with the number of integrations in the database
//! when the work it does stays the same?
//!
//! For each database (SQLite, PostgreSQL) and layout (every integration in the measured team,
//! or spread over other teams, 1,000 by default), one server is started and the measured team
//! gets an app with 200 integrations (the first page of its listing is always the same 50). The
//! database is then grown with SQL, size after size, by copying one integration made through
//! the API to other apps (one team) or to apps of other teams (spread), every copy created
//! after the measured ones so it never enters their page. After each step GetInstalledApp,
//! ListIntegrations (50) and ResolveIntegrationCredentials are measured with the unary load
//! generator; at the largest size the plans of their queries are printed and saved.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use integration_hub::pb;
use integration_hub::pb::integration_service_client::IntegrationServiceClient;
use integration_hub::store::{APP_WITH_COUNT, INTEGRATION_WITH_APP};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement};
use tokio::task::JoinSet;

use crate::pg::Pg;
use crate::seed::{self, Tokens, authed};
use crate::server::{ServerProcess, ServerSpec};
use crate::unary::{self, Call, Load, Stats};
use crate::{GET_APP, LIST, RESOLVE, ms};

/// The team whose calls are measured, and how many integrations its app keeps.
const TEAM: &str = "bench";
const MEASURED: u64 = 200;
/// Other apps in the measured team (one-team layout).
const OTHER_APPS_ONE_TEAM: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Every integration in the measured team (on other apps).
    OneTeam,
    /// The others spread over many other teams (one app each).
    Spread,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::OneTeam => "one team",
            Layout::Spread => "spread",
        })
    }
}

/// What the scale curve runs.
pub struct ScaleRun<'a> {
    /// Total integrations in the database at each step, ascending.
    pub sizes: Vec<u64>,
    pub backends: Vec<Backend>,
    pub layouts: Vec<Layout>,
    /// Teams the spread layout spreads the copies over (one app each).
    pub other_teams: usize,
    pub load: Load,
    pub server_args: Vec<String>,
    pub explain_file: PathBuf,
    pub secret: &'a str,
    pub keys: &'a str,
    pub tokens: &'a Tokens,
    pub pg: &'a Pg,
    pub dir: &'a Path,
}

/// One measured call at one size.
pub struct Point {
    pub backend: Backend,
    pub layout: Layout,
    pub size: u64,
    pub call: &'static str,
    pub stats: Stats,
}

/// Runs the curve; answers every point and writes the plans to `explain_file`.
pub async fn run(cfg: &ScaleRun<'_>) -> anyhow::Result<Vec<Point>> {
    let mut points = Vec::new();
    let mut plans = String::new();
    for &backend in &cfg.backends {
        for &layout in &cfg.layouts {
            eprintln!("scale: {backend}, {layout}");
            let (url, pg_name) = match backend {
                Backend::Sqlite => {
                    let file = cfg.dir.join(format!(
                        "scale-{}.db",
                        if layout == Layout::OneTeam {
                            "one"
                        } else {
                            "spread"
                        }
                    ));
                    (format!("sqlite://{}?mode=rwc", file.display()), None)
                }
                Backend::Postgres => {
                    let name = format!("ih_bench_scale_{}", uuid::Uuid::new_v4().simple());
                    cfg.pg.create_database(&name).await?;
                    (cfg.pg.url(&name), Some(name))
                }
            };
            let result = one_curve(cfg, backend, layout, &url, &mut points, &mut plans).await;
            if let Some(name) = pg_name {
                let _ = cfg.pg.drop_database(&name).await;
            }
            result?;
        }
    }
    std::fs::write(&cfg.explain_file, &plans)
        .with_context(|| format!("write {}", cfg.explain_file.display()))?;
    eprintln!("query plans written to {}", cfg.explain_file.display());
    Ok(points)
}

/// The apps (and their teams) the copies are spread over.
struct Targets {
    /// (team, app id)
    apps: Vec<(String, String)>,
    /// The integration made through the API that every copy copies.
    template: String,
}

async fn one_curve(
    cfg: &ScaleRun<'_>,
    backend: Backend,
    layout: Layout,
    url: &str,
    points: &mut Vec<Point>,
    plans: &mut String,
) -> anyhow::Result<()> {
    let name = format!(
        "scale-{}-{}",
        if backend == Backend::Sqlite {
            "sqlite"
        } else {
            "pg"
        },
        if layout == Layout::OneTeam {
            "one"
        } else {
            "spread"
        }
    );
    let server = ServerProcess::start(
        ServerSpec {
            name: &name,
            database_url: url,
            secret: cfg.secret,
            encryption_keys: cfg.keys,
            extra_args: cfg.server_args.clone(),
        },
        cfg.dir,
    )
    .await?;
    let result = curve_on(cfg, backend, layout, url, &server, points, plans).await;
    server.stop().await?;
    result
}

async fn curve_on(
    cfg: &ScaleRun<'_>,
    backend: Backend,
    layout: Layout,
    url: &str,
    server: &ServerProcess,
    points: &mut Vec<Point>,
    plans: &mut String,
) -> anyhow::Result<()> {
    let channel = seed::channel(server.addr).await?;
    let developer = cfg.tokens.mint(TEAM, "developer", "scale-developer")?;
    let viewer = cfg.tokens.mint(TEAM, "viewer", "scale-viewer")?;
    let service = cfg.tokens.mint(TEAM, "service", "scale-service")?;
    let app = seed::create_app(&channel, &developer, "Slack (measured)").await?;
    let app_id = seed::id_of(&app.name).to_owned();
    seed::seed_integrations(url, TEAM, &app_id, "seed", MEASURED as usize).await?;
    let targets = targets(cfg.tokens, &channel, layout, cfg.other_teams).await?;
    // One integration made through the API, in neither the measured app nor its page.
    let base = MEASURED + 1;

    // One connection: the seeding's temporary table lives in it.
    let mut options = ConnectOptions::new(url.to_owned());
    options.max_connections(1).min_connections(1);
    options.sqlx_logging(false);
    let db = Database::connect(options).await?;
    create_targets_table(&db, &targets).await?;

    let calls = [
        (
            "GetInstalledApp",
            Call::new(
                GET_APP,
                &pb::GetInstalledAppRequest {
                    name: app.name.clone(),
                },
                Some(&viewer),
            ),
        ),
        (
            "ListIntegrations (50)",
            Call::new(
                LIST,
                &pb::ListIntegrationsRequest {
                    page_size: 50,
                    ..Default::default()
                },
                Some(&viewer),
            ),
        ),
        (
            "ResolveIntegrationCredentials",
            Call::new(
                RESOLVE,
                &pb::ResolveIntegrationCredentialsRequest {
                    name: format!("teams/{TEAM}/integrations/seed1"),
                },
                Some(&service),
            ),
        ),
    ];

    let mut copies = 0u64;
    let largest = cfg.sizes.iter().copied().max().unwrap_or(0);
    for &size in &cfg.sizes {
        let want = size.saturating_sub(base);
        if want > copies {
            let started = std::time::Instant::now();
            grow(&db, backend, &targets, copies + 1, want).await?;
            eprintln!(
                "  grew to {size} integrations ({} copies added in {:.1} s)",
                want - copies,
                started.elapsed().as_secs_f64()
            );
            copies = want;
        }
        if backend == Backend::Postgres {
            // What autovacuum would do after a bulk load; without it the planner guesses.
            db.execute_unprepared("ANALYZE").await?;
        }
        let total = crate::seed::count(&db, "SELECT COUNT(*) AS n FROM integrations").await?;
        for (label, call) in &calls {
            let stats = unary::run(server.addr, Some(server.pid()), call, cfg.load).await?;
            eprintln!(
                "  {size:>9} {label}: {:.0} req/s, p50 {} ms, p99 {} ms, {} errors",
                stats.rps(),
                ms(stats.percentile(0.5)),
                ms(stats.percentile(0.99)),
                stats.errors
            );
            points.push(Point {
                backend,
                layout,
                size: total,
                call: label,
                stats,
            });
        }
        if size == largest {
            let text = explain(&db, backend, &app_id).await?;
            plans.push_str(&format!(
                "==== {backend}, {layout}, {total} integrations ====\n{text}\n"
            ));
            println!("\nQuery plans: {backend}, {layout}, {total} integrations\n{text}");
        }
    }
    let _ = db.close().await;
    Ok(())
}

/// Apps made through the API for the copies: other apps of the measured team, or one app in
/// each of `other_teams` other teams; and the integration they copy.
async fn targets(
    tokens: &Tokens,
    channel: &tonic::transport::Channel,
    layout: Layout,
    other_teams: usize,
) -> anyhow::Result<Targets> {
    let teams: Vec<String> = match layout {
        Layout::OneTeam => vec![TEAM.to_owned(); OTHER_APPS_ONE_TEAM],
        Layout::Spread => (0..other_teams.max(1))
            .map(|i| format!("other{i:04}"))
            .collect(),
    };
    let mut apps = Vec::with_capacity(teams.len());
    let mut pending = JoinSet::new();
    for (i, team) in teams.into_iter().enumerate() {
        let token = tokens.mint(&team, "developer", "scale-developer")?;
        let channel = channel.clone();
        pending.spawn(async move {
            let app = seed::create_app(&channel, &token, &format!("Slack {i}")).await?;
            anyhow::Ok((i, team, app))
        });
        if pending.len() >= 8
            && let Some(done) = pending.join_next().await
        {
            apps.push(done??);
        }
    }
    while let Some(done) = pending.join_next().await {
        apps.push(done??);
    }
    apps.sort_by_key(|(i, _, _)| *i);
    let (_, team, first) = &apps[0];
    let token = tokens.mint(team, "developer", "scale-developer")?;
    let template = IntegrationServiceClient::new(channel.clone())
        .create_integration(authed(&token, seed::integration_request(first))?)
        .await
        .context("create the template integration")?
        .into_inner();
    Ok(Targets {
        apps: apps
            .into_iter()
            .map(|(_, team, app)| (team, seed::id_of(&app.name).to_owned()))
            .collect(),
        template: seed::id_of(&template.name).to_owned(),
    })
}

async fn create_targets_table(db: &DatabaseConnection, targets: &Targets) -> anyhow::Result<()> {
    db.execute_unprepared(
        "CREATE TEMPORARY TABLE bench_targets (k INTEGER PRIMARY KEY, team TEXT NOT NULL, \
         app TEXT NOT NULL)",
    )
    .await?;
    let values: Vec<String> = targets
        .apps
        .iter()
        .enumerate()
        .map(|(k, (team, app))| format!("({k}, '{team}', '{app}')"))
        .collect();
    db.execute_unprepared(&format!(
        "INSERT INTO bench_targets (k, team, app) VALUES {}",
        values.join(", ")
    ))
    .await?;
    Ok(())
}

/// Adds copies `from..=to` of the template: id `x<i>`, created after every measured row,
/// on target app `i % targets`. One statement (a recursive CTE on SQLite, generate_series on
/// PostgreSQL).
async fn grow(
    db: &DatabaseConnection,
    backend: Backend,
    targets: &Targets,
    from: u64,
    to: u64,
) -> anyhow::Result<()> {
    let k = targets.apps.len();
    let template = &targets.template;
    let numbers = match backend {
        Backend::Sqlite => format!(
            "WITH RECURSIVE n(i) AS (SELECT {from} UNION ALL SELECT i + 1 FROM n WHERE i < {to}) "
        ),
        Backend::Postgres => String::new(),
    };
    let source = match backend {
        Backend::Sqlite => "n",
        Backend::Postgres => &format!("generate_series({from}::bigint, {to}::bigint) AS n(i)"),
    };
    let sql = format!(
        "{numbers}INSERT INTO integrations (id, team, installed_app_id, service, type_id, \
           display_name, config, state, creator, owner, version, create_time, update_time) \
         SELECT 'x' || n.i, bt.team, bt.app, t.service, t.type_id, 'Copy ' || n.i, t.config, \
           t.state, t.creator, t.owner, 1, 1000 + n.i, 1000 + n.i \
         FROM {source} JOIN bench_targets bt ON bt.k = n.i % {k} \
         CROSS JOIN (SELECT * FROM integrations WHERE id = '{template}') AS t"
    );
    let result = db
        .execute_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .context("grow the integrations")?;
    if result.rows_affected() != to - from + 1 {
        bail!(
            "grew by {} rows, not {}",
            result.rows_affected(),
            to - from + 1
        );
    }
    Ok(())
}

/// The plans of the queries the three calls run: GetInstalledApp's and a resolution's read
/// are the store's own statements (`KeyedRead::statement`); ListIntegrations' are written by
/// hand to match what `src/store/records.rs` and `src/store/outbox.rs` build (literal values
/// in place of the bound parameters). PostgreSQL's are executed (`EXPLAIN (ANALYZE, BUFFERS)`).
async fn explain(
    db: &DatabaseConnection,
    backend: Backend,
    app_id: &str,
) -> anyhow::Result<String> {
    let db_backend = db.get_database_backend();
    let by_hand = |sql: String| Statement::from_string(db_backend, sql);
    let max_event_seq = "COALESCE((SELECT MAX(seq) FROM events), \
        (SELECT pruned_through FROM event_log_state WHERE id = 1), 0)";
    let mut queries: Vec<(&str, Statement)> = vec![(
        "GetInstalledApp: the app, its two counts and its verification (APP_WITH_COUNT)",
        APP_WITH_COUNT.statement(db_backend, TEAM, app_id),
    )];
    match backend {
        Backend::Sqlite => queries.push((
            "ListIntegrations: the page (51 rows: 50 and one to know there is more) and the event cursor, one statement",
            by_hand(format!(
                "SELECT integrations.*, {max_event_seq} AS event_cursor FROM integrations \
                 WHERE integrations.team = '{TEAM}' \
                 ORDER BY integrations.create_time ASC, integrations.id ASC LIMIT 51"
            )),
        )),
        Backend::Postgres => {
            queries.push((
                "ListIntegrations: the event cursor (after the outbox barrier lock, not shown)",
                by_hand(format!("SELECT {max_event_seq} AS max_seq")),
            ));
            queries.push((
                "ListIntegrations: the page (51 rows: 50 and one to know there is more)",
                by_hand(format!(
                    "SELECT integrations.* FROM integrations WHERE integrations.team = '{TEAM}' \
                     ORDER BY integrations.create_time ASC, integrations.id ASC LIMIT 51"
                )),
            ));
        }
    }
    queries.push((
        "ResolveIntegrationCredentials: the integration, its app and the app's OAuth grant (INTEGRATION_WITH_APP)",
        INTEGRATION_WITH_APP.statement(db_backend, TEAM, "seed1"),
    ));
    let prefix = match backend {
        Backend::Sqlite => "EXPLAIN QUERY PLAN ",
        Backend::Postgres => "EXPLAIN (ANALYZE, BUFFERS) ",
    };
    let mut out = String::new();
    for (label, statement) in queries {
        out.push_str(&format!("-- {label}\n{statement}\n"));
        let explained = Statement {
            sql: format!("{prefix}{}", statement.sql),
            ..statement
        };
        let rows = db
            .query_all_raw(explained)
            .await
            .with_context(|| format!("explain: {label}"))?;
        for row in rows {
            let line = match backend {
                Backend::Sqlite => {
                    let id: i64 = row.try_get("", "id")?;
                    let parent: i64 = row.try_get("", "parent")?;
                    let detail: String = row.try_get("", "detail")?;
                    format!("  [{id} <- {parent}] {detail}")
                }
                Backend::Postgres => {
                    let text: String = row.try_get("", "QUERY PLAN")?;
                    format!("  {text}")
                }
            };
            out.push_str(&line);
            out.push('\n');
        }
        out.push('\n');
    }
    if backend == Backend::Postgres {
        out.push_str(&generic_plans(db, app_id).await?);
    }
    Ok(out)
}

/// PostgreSQL: the generic plans of GetInstalledApp's query and ListIntegrations' page, the
/// plans a prepared statement (sqlx prepares every statement) may switch to after five
/// executions, planned for any team and app rather than for these values.
async fn generic_plans(db: &DatabaseConnection, app_id: &str) -> anyhow::Result<String> {
    use sea_orm::sea_query::{PostgresQueryBuilder, QueryBuilder};
    let get_app = APP_WITH_COUNT.statement(db.get_database_backend(), TEAM, app_id);
    let get_app_args = get_app
        .values
        .iter()
        .flat_map(|values| values.0.iter())
        .map(|value| PostgresQueryBuilder.value_to_string(value))
        .collect::<Vec<_>>()
        .join(", ");
    let statements = [
        (
            "GetInstalledApp (APP_WITH_COUNT), generic plan",
            get_app.sql,
            get_app_args,
        ),
        (
            "ListIntegrations page, generic plan",
            "SELECT integrations.* FROM integrations WHERE integrations.team = $1 \
             ORDER BY integrations.create_time ASC, integrations.id ASC LIMIT 51"
                .to_owned(),
            format!("'{TEAM}'"),
        ),
    ];
    let mut out = String::new();
    db.execute_unprepared("SET plan_cache_mode = force_generic_plan")
        .await?;
    for (label, sql, args) in statements {
        out.push_str(&format!(
            "-- {label} (plan_cache_mode = force_generic_plan)\n{sql}\n"
        ));
        // The parameters' types are inferred from the statement, as when sqlx prepares it.
        db.execute_unprepared(&format!("PREPARE bench_plan AS {sql}"))
            .await?;
        let rows = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                format!("EXPLAIN (ANALYZE, BUFFERS) EXECUTE bench_plan({args})"),
            ))
            .await;
        db.execute_unprepared("DEALLOCATE bench_plan").await?;
        for row in rows? {
            let text: String = row.try_get("", "QUERY PLAN")?;
            out.push_str(&format!("  {text}\n"));
        }
        out.push('\n');
    }
    db.execute_unprepared("RESET plan_cache_mode").await?;
    Ok(out)
}

/// The table: size x layout x call -> req/s, p50, p99 and their ratios to the smallest size.
pub fn print_table(points: &[Point], load: Load, other_teams: usize) {
    println!();
    println!(
        "Scale curve: {} connections x {} streams, {:.1} s measured after {:.1} s warm-up per call; \
         layouts: one team ({OTHER_APPS_ONE_TEAM} other apps in the measured team), spread \
         ({other_teams} other teams, one app each).",
        load.connections,
        load.streams,
        load.duration.as_secs_f64(),
        load.warmup.as_secs_f64()
    );
    println!();
    println!(
        "| database | layout | integrations | call | req/s | p50 ms | p99 ms | server CPU us/call | errors | p50 / smallest | p99 / smallest | CPU / smallest |"
    );
    println!("|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for p in points {
        let first = points
            .iter()
            .find(|q| q.backend == p.backend && q.layout == p.layout && q.call == p.call)
            .map(|q| &q.stats);
        let ratio = |now: Duration, then: Option<Duration>| match then {
            Some(then) if !then.is_zero() => {
                format!("{:.2}", now.as_secs_f64() / then.as_secs_f64())
            }
            _ => String::new(),
        };
        let s = &p.stats;
        let cpu_ratio = match (
            s.server_cpu_per_call(),
            first.and_then(Stats::server_cpu_per_call),
        ) {
            (Some(now), then) => ratio(now, then),
            _ => String::new(),
        };
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {cpu_ratio} |",
            p.backend,
            p.layout,
            p.size,
            p.call,
            s.rps(),
            ms(s.percentile(0.5)),
            ms(s.percentile(0.99)),
            s.server_cpu_per_call()
                .map(|c| format!("{:.0}", c.as_secs_f64() * 1e6))
                .unwrap_or_default(),
            s.errors,
            ratio(s.percentile(0.5), first.map(|f| f.percentile(0.5))),
            ratio(s.percentile(0.99), first.map(|f| f.percentile(0.99))),
        );
    }
}
