//! The OAuth refresher with many apps whose tokens expire within the same minute.
//!
//! The local provider (`tests/oauth/provider.mjs`, the real `oauth2-mock-server` behind a
//! front that counts token requests in flight) is started with Node; the `slack` entry of the
//! catalog points at it. Apps are made through the whole OAuth flow
//! (StartInstalledAppAuthorization, the provider's authorization page, the hub's callback,
//! which trades the code for tokens), so every app has real sealed credentials and a refresh
//! token the provider knows. Their tokens (an hour long) are then moved with SQL to expire within the
//! same minute, a few minutes out, with the refresh time the server itself computes for such
//! a lifetime ([`refresh_time`]); that is the only change made behind the server's back.
//! Then the bench watches the grants table and the provider until every app is refreshed
//! or the last expiry has passed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use integration_hub::domain::oauth::refresh_time;
use integration_hub::pb;
use integration_hub::pb::installed_app_service_client::InstalledAppServiceClient;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

use crate::pg::Pg;
use crate::scale::Backend;
use crate::seed::{Tokens, authed};
use crate::server::{ServerProcess, ServerSpec};

/// What the refresher scenario runs.
pub struct RefresherRun<'a> {
    pub apps: usize,
    pub backend: Backend,
    /// The server's `--oauth-refresh-concurrency`.
    pub concurrency: usize,
    /// The server's `--oauth-refresh-interval-secs`.
    pub interval_secs: u64,
    /// Every token expires within this window...
    pub window: Duration,
    /// ...and lives this long (issue to expiry), which sets when it is due.
    pub lifetime: Duration,
    /// The first refresh falls due this long after the tokens are moved.
    pub lead: Duration,
    /// OAuth flows run at once while the apps are made.
    pub setup_parallelism: usize,
    pub provider_script: PathBuf,
    pub server_args: Vec<String>,
    pub secret: &'a str,
    pub keys: &'a str,
    pub tokens: &'a Tokens,
    pub pg: &'a Pg,
    pub dir: &'a Path,
}

/// What it measured.
pub struct RefresherResult {
    pub backend: Backend,
    pub apps: usize,
    pub concurrency: usize,
    pub interval_secs: u64,
    pub setup: Duration,
    /// Refreshed (committed and seen by the bench's poll) before the token's expiry.
    pub on_time: usize,
    /// Refreshed, but first seen committed after the token's expiry.
    pub late: usize,
    /// Not refreshed by the end (the last expiry plus a grace period).
    pub never: usize,
    /// Started (the server's own `last_refresh_time`) after the token's expiry.
    pub started_late: usize,
    /// Grants with a recorded refresh failure.
    pub failed: usize,
    /// Least time between a refresh becoming visible and the token's expiry (negative: late).
    pub min_margin: Duration,
    pub min_margin_negative: bool,
    /// From the first refresh due to the last refresh seen committed.
    pub total: Duration,
    /// From the first refresh started to the last seen committed.
    pub busy: Duration,
    pub provider_refreshes: u64,
    pub provider_rejected: u64,
    pub max_in_flight: u64,
}

impl RefresherResult {
    pub fn refreshes_per_sec(&self) -> f64 {
        let done = (self.on_time + self.late) as f64;
        if self.busy.is_zero() {
            0.0
        } else {
            done / self.busy.as_secs_f64()
        }
    }

    /// Everything refreshed before its expiry, no burst above the configured concurrency.
    pub fn ok(&self) -> bool {
        self.never == 0
            && self.late == 0
            && self.provider_rejected == 0
            && self.max_in_flight <= self.concurrency as u64
            && self.max_in_flight > 0
    }

    pub fn print(&self) {
        println!();
        println!(
            "OAuth refresher ({}): {} apps, tokens expiring within the same minute; \
             --oauth-refresh-concurrency={} --oauth-refresh-interval-secs={}",
            self.backend, self.apps, self.concurrency, self.interval_secs
        );
        println!();
        println!("| measure | value |");
        println!("|---|---:|");
        println!(
            "| apps made through the OAuth flow (setup) | {} in {:.1} s |",
            self.apps,
            self.setup.as_secs_f64()
        );
        println!(
            "| refreshed and committed before expiry | {} |",
            self.on_time
        );
        println!(
            "| refreshed, committed after expiry (late) | {} |",
            self.late
        );
        println!("| never refreshed | {} |", self.never);
        println!(
            "| refresh started after expiry (server's last_refresh_time) | {} |",
            self.started_late
        );
        println!(
            "| grants with a refresh failure recorded | {} |",
            self.failed
        );
        println!(
            "| least margin before expiry | {}{:.1} s |",
            if self.min_margin_negative { "-" } else { "" },
            self.min_margin.as_secs_f64()
        );
        println!(
            "| first due -> last committed | {:.1} s |",
            self.total.as_secs_f64()
        );
        println!(
            "| refreshes/s (first started -> last committed) | {:.0} |",
            self.refreshes_per_sec()
        );
        println!(
            "| provider: refresh_token requests / rejected | {} / {} |",
            self.provider_refreshes, self.provider_rejected
        );
        println!(
            "| provider: most token requests in flight (limit {}) | {} |",
            self.concurrency, self.max_in_flight
        );
        println!();
    }
}

/// The local provider, stopped on drop.
struct Provider {
    child: Child,
    port: u16,
}

impl Provider {
    async fn start(script: &Path) -> anyhow::Result<Provider> {
        let root = script
            .parent()
            .and_then(Path::parent)
            .and_then(Path::parent)
            .context("the provider script lives in <repo>/tests/oauth")?;
        let mut child = Command::new("node")
            .arg(script)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("start node (install Node.js and run `npm ci` in the repository)")?;
        let stdout = child.stdout.take().context("provider stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .context("the provider did not start within 20 s")??
            .context("the provider exited before printing its port (was `npm ci` run?)")?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = number_after(&line, "\"port\":")
            .and_then(|p| u16::try_from(p).ok())
            .with_context(|| format!("no port in the provider's line {line:?}"))?;
        Ok(Provider { child, port })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn control(&self, json: &str) -> anyhow::Result<()> {
        let (status, _, _, _) = http(&format!("{}/_control", self.url()), Send::Json(json)).await?;
        if status != 200 {
            bail!("the provider's control API answered {status}");
        }
        Ok(())
    }

    /// `/_stats` as text (it lists issued tokens: never print it).
    async fn stats(&self) -> anyhow::Result<String> {
        let (status, _, _, body) = http(&format!("{}/_stats", self.url()), Send::Get(None)).await?;
        if status != 200 {
            bail!("the provider's stats answered {status}");
        }
        Ok(body)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The first integer after `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let rest = text[text.find(key)? + key.len()..].trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// What one request sends besides its URL.
#[derive(Clone, Copy)]
enum Send<'a> {
    /// A GET, with the `Cookie` header when given.
    Get(Option<&'a str>),
    /// A POST of a JSON body.
    Json(&'a str),
    /// A POST without a body (the hub's sign-in URL, as a form would open it).
    Post,
}

/// One HTTP/1.1 request to a loopback `http://` URL; answers the status, the `Location`
/// header, the first cookie set (`name=value`) and the body. Enough for the provider's pages
/// and the hub's sign-in and callback, without another HTTP client in the bench.
async fn http(
    url: &str,
    send: Send<'_>,
) -> anyhow::Result<(u16, Option<String>, Option<String>, String)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("not a plain http URL: {}", redact(url)))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut tcp = TcpStream::connect(host)
        .await
        .with_context(|| format!("connect to {host}"))?;
    let request = match send {
        Send::Json(body) => format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
        Send::Post => format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ),
        Send::Get(cookie) => format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{}\r\n",
            cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"))
        ),
    };
    tcp.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), tcp.read_to_end(&mut answer))
        .await
        .with_context(|| format!("no answer from {host} within 30 s"))??;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no HTTP status line")?;
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(name, value)| (name, value.trim()))
        .collect();
    let header = |wanted: &str| {
        headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| *value)
    };
    let location = header("location").map(str::to_owned);
    let cookie = header("set-cookie")
        .and_then(|c| c.split(';').next())
        .map(str::to_owned);
    Ok((status, location, cookie, body.to_owned()))
}

/// A URL without its query (which carries codes and state).
fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A free loopback port for the callback listener (its public URL must name it first).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub async fn run(cfg: &RefresherRun<'_>) -> anyhow::Result<RefresherResult> {
    let provider = Provider::start(&cfg.provider_script).await?;
    let (url, pg_name) = match cfg.backend {
        Backend::Sqlite => (
            format!(
                "sqlite://{}?mode=rwc",
                cfg.dir.join("refresher.db").display()
            ),
            None,
        ),
        Backend::Postgres => {
            let name = format!("ih_bench_oauth_{}", uuid::Uuid::new_v4().simple());
            cfg.pg.create_database(&name).await?;
            (cfg.pg.url(&name), Some(name))
        }
    };
    let result = run_with(cfg, &provider, &url).await;
    if let Some(name) = pg_name {
        let _ = cfg.pg.drop_database(&name).await;
    }
    result
}

async fn run_with(
    cfg: &RefresherRun<'_>,
    provider: &Provider,
    url: &str,
) -> anyhow::Result<RefresherResult> {
    // The catalog with `slack` pointed at the local provider, and its OAuth client.
    let catalog = include_str!("../../src/domain/catalog.json")
        .replace(
            "https://slack.com/oauth/v2/authorize",
            &format!("{}/authorize", provider.url()),
        )
        .replace(
            "https://slack.com/api/oauth.v2.access",
            &format!("{}/token", provider.url()),
        );
    if !catalog.contains(&provider.url()) {
        bail!("the built-in catalog no longer names Slack's OAuth endpoints; update the bench");
    }
    let catalog_file = cfg.dir.join("refresher-catalog.json");
    std::fs::write(&catalog_file, catalog)?;
    let secret_file = cfg.dir.join("refresher-client-secret");
    std::fs::write(
        &secret_file,
        format!("bench-client-{}", uuid::Uuid::new_v4().simple()),
    )?;
    let clients_file = cfg.dir.join("refresher-oauth-clients.json");
    std::fs::write(
        &clients_file,
        format!(
            "{{\"slack\": {{\"client_id\": \"bench-client\", \"client_secret_file\": \"{}\"}}}}",
            secret_file.display()
        ),
    )?;
    let callback_port = free_port()?;
    let mut args = cfg.server_args.clone();
    args.extend([
        format!("--catalog-file={}", catalog_file.display()),
        format!("--oauth-clients-file={}", clients_file.display()),
        format!("--http-listen=127.0.0.1:{callback_port}"),
        format!("--public-url=http://127.0.0.1:{callback_port}"),
        "--oauth-allow-loopback-http".into(),
        format!("--oauth-refresh-concurrency={}", cfg.concurrency),
        format!("--oauth-refresh-interval-secs={}", cfg.interval_secs),
    ]);
    let server = ServerProcess::start(
        ServerSpec {
            name: "refresher",
            database_url: url,
            secret: cfg.secret,
            encryption_keys: cfg.keys,
            extra_args: args,
        },
        cfg.dir,
    )
    .await?;
    let result = measure(cfg, provider, &server, url).await;
    server.stop().await?;
    result
}

async fn measure(
    cfg: &RefresherRun<'_>,
    provider: &Provider,
    server: &ServerProcess,
    url: &str,
) -> anyhow::Result<RefresherResult> {
    // Hour-long tokens while the apps are made: nothing is due during the setup.
    provider.control("{\"expires_in\": 3600}").await?;
    let started = Instant::now();
    make_apps(cfg, server).await?;
    let setup = started.elapsed();
    eprintln!(
        "  {} apps made through the OAuth flow in {:.1} s",
        cfg.apps,
        setup.as_secs_f64()
    );

    let db = Database::connect(url).await?;
    let grants = crate::seed::count(&db, "SELECT COUNT(*) AS n FROM oauth_grants").await?;
    if grants != cfg.apps as u64 {
        bail!("{grants} OAuth grants, not {}", cfg.apps);
    }

    // Move every token to expire within the window, `lead` after the first refresh falls
    // due; due times as the server computes them for this lifetime.
    let lifetime = micros(cfg.lifetime);
    let margin = lifetime - refresh_time(0, lifetime);
    let window = micros(cfg.window).max(1);
    let first_due = now_micros() + micros(cfg.lead);
    let first_expiry = first_due + margin;
    let random = match cfg.backend {
        Backend::Sqlite => format!("(abs(random()) % {window})"),
        Backend::Postgres => format!("floor(random() * {window})::bigint"),
    };
    exec(
        &db,
        &format!("UPDATE oauth_grants SET expire_time = {first_expiry} + {random}"),
    )
    .await?;
    exec(
        &db,
        &format!(
            "UPDATE oauth_grants SET issue_time = expire_time - {lifetime}, \
             next_refresh_time = expire_time - {margin}, lease_owner = NULL, lease_until = NULL"
        ),
    )
    .await?;
    provider.control("{\"reset_max_in_flight\": true}").await?;
    let expiry: HashMap<String, i64> = rows(
        &db,
        "SELECT installed_app_id, expire_time FROM oauth_grants",
        false,
    )
    .await?
    .into_iter()
    .map(|(id, expire, _, _, _)| (id, expire))
    .collect();
    let last_expiry = expiry.values().copied().max().unwrap_or(first_expiry);
    eprintln!(
        "  tokens expire within {:.0} s from {:.1} s from now; first refresh due in {:.1} s",
        cfg.window.as_secs_f64(),
        (first_expiry - now_micros()) as f64 / 1e6,
        (first_due - now_micros()) as f64 / 1e6
    );

    // Watch the commits: when each refreshed grant is first seen.
    let grace = micros(Duration::from_secs(5));
    let mut seen: HashMap<String, i64> = HashMap::new();
    loop {
        let now = now_micros();
        for (id, ..) in rows(
            &db,
            "SELECT installed_app_id, expire_time FROM oauth_grants WHERE refresh_count > 0",
            false,
        )
        .await?
        {
            seen.entry(id).or_insert(now);
        }
        if seen.len() == cfg.apps || now > last_expiry + grace {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let fin = rows(
        &db,
        "SELECT installed_app_id, expire_time, last_refresh_time, refresh_count, failures \
         FROM oauth_grants",
        true,
    )
    .await?;
    let _ = db.close().await;
    let mut result = RefresherResult {
        backend: cfg.backend,
        apps: cfg.apps,
        concurrency: cfg.concurrency,
        interval_secs: cfg.interval_secs,
        setup,
        on_time: 0,
        late: 0,
        never: 0,
        started_late: 0,
        failed: 0,
        min_margin: Duration::MAX,
        min_margin_negative: false,
        total: Duration::ZERO,
        busy: Duration::ZERO,
        provider_refreshes: 0,
        provider_rejected: 0,
        max_in_flight: 0,
    };
    let mut least = i64::MAX;
    let mut first_start = i64::MAX;
    let mut last_seen = 0;
    for (id, _, last_refresh, refreshes, failures) in fin {
        let Some(&expire) = expiry.get(&id) else {
            continue;
        };
        if failures > 0 {
            result.failed += 1;
        }
        match (refreshes > 0, seen.get(&id)) {
            (true, Some(&at)) => {
                if at <= expire {
                    result.on_time += 1;
                } else {
                    result.late += 1;
                }
                least = least.min(expire - at);
                last_seen = last_seen.max(at);
                if let Some(started) = last_refresh {
                    first_start = first_start.min(started);
                    if started > expire {
                        result.started_late += 1;
                    }
                }
            }
            _ => result.never += 1,
        }
    }
    if least != i64::MAX {
        result.min_margin_negative = least < 0;
        result.min_margin = Duration::from_micros(least.unsigned_abs());
    } else {
        result.min_margin = Duration::ZERO;
    }
    let span = |from: i64, to: i64| Duration::from_micros(u64::try_from(to - from).unwrap_or(0));
    if last_seen > 0 {
        result.total = span(first_due, last_seen);
        result.busy = span(first_start.min(last_seen), last_seen);
    }
    let stats = provider.stats().await?;
    result.provider_refreshes = number_after(&stats, "\"refresh_token\":").unwrap_or(0);
    result.provider_rejected = number_after(&stats, "\"refresh_rejected\":").unwrap_or(0);
    result.max_in_flight = number_after(&stats, "\"max_in_flight\":").unwrap_or(0);
    Ok(result)
}

/// Makes `cfg.apps` Slack apps through the whole OAuth flow, `setup_parallelism` at once
/// (each flow as its own person, so the limit on pending authorizations never bites).
async fn make_apps(cfg: &RefresherRun<'_>, server: &ServerProcess) -> anyhow::Result<()> {
    let channel = crate::seed::channel(server.addr).await?;
    let workers = cfg.setup_parallelism.clamp(1, cfg.apps.max(1));
    let mut set = JoinSet::new();
    for w in 0..workers {
        let token = cfg.tokens.mint(
            &format!("oauth{}", w % 10),
            "developer",
            &format!("dev-{w}"),
        )?;
        let channel = channel.clone();
        let mine: Vec<usize> = (w..cfg.apps).step_by(workers).collect();
        set.spawn(async move {
            let mut client = InstalledAppServiceClient::new(channel);
            for i in mine {
                let started = client
                    .start_installed_app_authorization(authed(
                        &token,
                        pb::StartInstalledAppAuthorizationRequest {
                            service: "slack".into(),
                            display_name: format!("Slack {i}"),
                            ..Default::default()
                        },
                    )?)
                    .await
                    .context("start an authorization")?
                    .into_inner();
                // The hub's sign-in URL binds the sign-in to this "browser" (a cookie), then
                // the provider signs in at once and redirects to the callback.
                let (status, provider, cookie, _) = http(&started.sign_in_uri, Send::Post).await?;
                let (Some(provider), Some(cookie)) = (provider.filter(|_| status == 303), cookie)
                else {
                    bail!("the hub's sign-in URL answered {status}, not a redirect with a cookie");
                };
                let (status, location, _, _) = http(&provider, Send::Get(None)).await?;
                let Some(callback) = location.filter(|_| status == 302) else {
                    bail!("the provider's authorization page answered {status}, not a redirect");
                };
                let (status, _, _, _) = http(&callback, Send::Get(Some(&cookie))).await?;
                if status != 200 {
                    bail!(
                        "the hub's callback ({}) answered {status}",
                        redact(&callback)
                    );
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = set.join_next().await {
        done??;
    }
    Ok(())
}

async fn exec(db: &DatabaseConnection, sql: &str) -> anyhow::Result<()> {
    db.execute_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await?;
    Ok(())
}

/// (installed_app_id, expire_time, last_refresh_time, refresh_count, failures) of each row;
/// unless `full`, the query selects only the first two and the rest are zeros.
async fn rows(
    db: &DatabaseConnection,
    sql: &str,
    full: bool,
) -> anyhow::Result<Vec<(String, i64, Option<i64>, i64, i32)>> {
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await?
    .into_iter()
    .map(|row| {
        let id: String = row.try_get("", "installed_app_id")?;
        let expire: Option<i64> = row.try_get("", "expire_time")?;
        if !full {
            return Ok((id, expire.unwrap_or(0), None, 0, 0));
        }
        Ok((
            id,
            expire.unwrap_or(0),
            row.try_get("", "last_refresh_time")?,
            row.try_get("", "refresh_count")?,
            row.try_get("", "failures")?,
        ))
    })
    .collect()
}
