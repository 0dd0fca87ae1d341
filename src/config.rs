//! Settings: every flag also reads an `INTEGRATION_HUB_*` variable. The doc comment of each
//! field is its `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::auth::Role;

mod audit;
pub use audit::{AuditCommand, AuditExportArgs, AuditKeeperArgs, AuditVerifyArgs};

/// integration-hub: installed apps, the integrations built on them, and broken-integration
/// events, over gRPC.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the gRPC server (applying pending migrations first).
    Serve(Box<ServeArgs>),
    /// Applies pending database migrations and exits.
    Migrate(DatabaseArgs),
    /// Prints a bearer token (development only).
    Token(Box<TokenArgs>),
    /// Re-seals every stored credential under the newest encryption key, in small batches,
    /// while the service keeps serving; resumable, and a no-op once done.
    RotateKeys(Box<RotateKeysArgs>),
    /// The audit trail: verify its chains, export its records.
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// Where the data lives.
#[derive(Clone, Debug, Args)]
pub struct DatabaseArgs {
    /// Database URL: `sqlite://path` or `postgres://user@host/db`. Default: a SQLite file in
    /// the data directory.
    #[arg(long, env = "INTEGRATION_HUB_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory for the embedded SQLite database and the development secrets.
    #[arg(
        long,
        env = "INTEGRATION_HUB_DATA_DIR",
        default_value = "./.integration-hub"
    )]
    pub data_dir: PathBuf,

    /// Most database connections in the pool.
    #[arg(long, env = "INTEGRATION_HUB_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long start-up waits for the database to accept connections, in seconds, logging
    /// what it waits for; then it exits non-zero.
    #[arg(long, env = "INTEGRATION_HUB_DATABASE_WAIT_SECS", default_value_t = 60)]
    pub database_wait_secs: u64,
}

impl DatabaseArgs {
    /// The database URL to use: the one given, or the embedded SQLite file.
    pub fn url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("integration-hub.db").display()
            ),
        }
    }

    /// The directory holding the SQLite database file (and its journal), when the database is
    /// a SQLite file.
    pub fn sqlite_dir(&self) -> Option<PathBuf> {
        let url = self.url();
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let path = path.split('?').next().unwrap_or_default();
        if path.is_empty() || path == ":memory:" {
            return None;
        }
        let dir = std::path::Path::new(path).parent()?;
        Some(if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir.to_path_buf()
        })
    }
}

/// How tokens are verified and mapped to roles.
#[derive(Clone, Debug, Args)]
pub struct AuthArgs {
    /// HS256 secret for bearer tokens (at least 32 bytes). `serve --dev` makes one when unset.
    #[arg(long, env = "INTEGRATION_HUB_JWT_HS256_SECRET", hide_env_values = true)]
    pub jwt_hs256_secret: Option<String>,

    /// JWKS file with public keys for RS256, ES256 and EdDSA tokens, chosen by `kid`. Re-read
    /// periodically and when a token names an unknown `kid`.
    #[arg(long, env = "INTEGRATION_HUB_JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// JWKS URL (https; http only to a loopback address) with public keys for RS256, ES256 and
    /// EdDSA tokens, chosen by `kid`. Fetched in the background, periodically and when a token
    /// names an unknown `kid` (at most once per 30 s).
    #[arg(long, env = "INTEGRATION_HUB_JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,

    /// Required `iss` of tokens. `serve` needs it (and the audience) unless `--dev`.
    #[arg(long, env = "INTEGRATION_HUB_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` of tokens. `serve` needs it (and the issuer) unless `--dev`.
    #[arg(long, env = "INTEGRATION_HUB_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// The claim holding the team id.
    #[arg(long, env = "INTEGRATION_HUB_TEAM_CLAIM", default_value = "team_id")]
    pub team_claim: String,

    /// The claim holding the role value(s): a string or an array of strings.
    #[arg(long, env = "INTEGRATION_HUB_ROLES_CLAIM", default_value = "roles")]
    pub roles_claim: String,

    /// Claim value to role table, `value=role,...` with roles viewer, developer, admin,
    /// service. Replaces the default (Postman's names) entirely.
    #[arg(long, env = "INTEGRATION_HUB_ROLE_MAP")]
    pub role_map: Option<String>,

    /// Subjects whose service tokens may claim every team (`*`), `worker,exporter`. Any
    /// other token claiming every team is refused; unset, none may.
    #[arg(long, env = "INTEGRATION_HUB_ALL_TEAMS_SERVICES")]
    pub all_teams_services: Option<String>,

    /// Limits per service subject, `subject=services:slack|github;types:...;apps:...,...`:
    /// what the subject's tokens may resolve, narrowing what their role values grant.
    #[arg(long, env = "INTEGRATION_HUB_SERVICE_LIMITS")]
    pub service_limits: Option<String>,

    /// The claim holding the caller's groups (a string or an array of strings), which an
    /// installed app's `usable_by` may name. Unset: tokens carry no groups.
    #[arg(long, env = "INTEGRATION_HUB_GROUPS_CLAIM")]
    pub groups_claim: Option<String>,

    /// Service subjects that may call DeprovisionPerson (an identity provider's
    /// deprovisioning hook), `scim-bridge,...`. Admins always may.
    #[arg(
        long,
        env = "INTEGRATION_HUB_DEPROVISIONING_SERVICES",
        value_delimiter = ','
    )]
    pub deprovisioning_services: Vec<String>,
}

impl AuthArgs {
    /// Whether public keys come from a JWKS file or URL.
    pub fn has_jwks(&self) -> bool {
        self.jwt_jwks_file.is_some() || self.jwt_jwks_url.is_some()
    }
}

/// Arguments of `serve`.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "INTEGRATION_HUB_LISTEN",
        default_value = "127.0.0.1:50051"
    )]
    pub listen: SocketAddr,

    /// Address for Prometheus metrics (`GET /metrics`); off when unset.
    #[arg(long, env = "INTEGRATION_HUB_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub auth: AuthArgs,

    #[command(flatten)]
    pub webhooks: crate::webhooks::WebhookArgs,

    #[command(flatten)]
    pub bounds: crate::api::BoundsArgs,

    /// Encryption key ring, `1:<base64 32 bytes>,2:<base64>`; the newest seals, all open.
    #[arg(long, env = "INTEGRATION_HUB_ENCRYPTION_KEYS", hide_env_values = true)]
    pub encryption_keys: Option<String>,

    /// Retire keys below this version: values sealed with them no longer open, and the
    /// service refuses to start while any stored value still uses one (run `rotate-keys`
    /// first).
    #[arg(long, env = "INTEGRATION_HUB_MIN_KEY_VERSION",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub min_key_version: Option<u32>,

    /// Calls a second each principal (team and subject) of a human role (viewer, developer,
    /// admin) may make on this replica, refilled continuously, unless its role has a setting
    /// of its own; 0 disables the limit. Service principals have their own setting.
    #[arg(long, env = "INTEGRATION_HUB_RATE_LIMIT_PER_SEC", default_value_t = 50.0,
          value_parser = non_negative_rate)]
    pub rate_limit_per_sec: f64,

    /// Calls a principal of a human role may make at once before the per-second rate
    /// applies, unless its role has a setting of its own; 0 disables the limit.
    #[arg(long, env = "INTEGRATION_HUB_RATE_LIMIT_BURST", default_value_t = 100)]
    pub rate_limit_burst: u32,

    /// Calls a second per viewer principal on this replica; 0 disables the limit. Default:
    /// INTEGRATION_HUB_RATE_LIMIT_PER_SEC.
    #[arg(long, env = "INTEGRATION_HUB_RATE_LIMIT_VIEWER_PER_SEC",
          value_parser = non_negative_rate)]
    pub rate_limit_viewer_per_sec: Option<f64>,

    /// Burst per viewer principal; 0 disables the limit. Default:
    /// INTEGRATION_HUB_RATE_LIMIT_BURST.
    #[arg(long, env = "INTEGRATION_HUB_RATE_LIMIT_VIEWER_BURST")]
    pub rate_limit_viewer_burst: Option<u32>,

    /// Calls a second per developer principal on this replica; 0 disables the limit.
    /// Default: INTEGRATION_HUB_RATE_LIMIT_PER_SEC.
    #[arg(long, env = "INTEGRATION_HUB_RATE_LIMIT_DEVELOPER_PER_SEC",
          value_parser = non_negative_rate)]
    pub rate_limit_developer_per_sec: Option<f64>,

    /// Burst per developer principal; 0 disables the limit. Default:
    /// INTEGRATION_HUB_RATE_LIMIT_BURST.
    #[arg(long, env = "INTEGRATION_HUB_RATE_LIMIT_DEVELOPER_BURST")]
    pub rate_limit_developer_burst: Option<u32>,

    /// Calls a second per admin principal on this replica; 0 disables the limit. Default:
    /// INTEGRATION_HUB_RATE_LIMIT_PER_SEC.
    #[arg(long, env = "INTEGRATION_HUB_RATE_LIMIT_ADMIN_PER_SEC",
          value_parser = non_negative_rate)]
    pub rate_limit_admin_per_sec: Option<f64>,

    /// Burst per admin principal; 0 disables the limit. Default:
    /// INTEGRATION_HUB_RATE_LIMIT_BURST.
    #[arg(long, env = "INTEGRATION_HUB_RATE_LIMIT_ADMIN_BURST")]
    pub rate_limit_admin_burst: Option<u32>,

    /// Calls a second per service principal on this replica; 0 disables the limit. A
    /// service account is often shared by a whole fleet of workers, so its default is sized
    /// for service-to-service traffic (SECURITY.md says why), not for a person.
    #[arg(long, env = "INTEGRATION_HUB_RATE_LIMIT_SERVICE_PER_SEC", default_value_t = 1000.0,
          value_parser = non_negative_rate)]
    pub rate_limit_service_per_sec: f64,

    /// Burst per service principal (a fleet starting up at once); 0 disables the limit.
    #[arg(
        long,
        env = "INTEGRATION_HUB_RATE_LIMIT_SERVICE_BURST",
        default_value_t = 2000
    )]
    pub rate_limit_service_burst: u32,

    /// Development mode: makes and keeps a secret and a key in the data directory, listens on
    /// loopback only, pretty logs.
    #[arg(long, env = "INTEGRATION_HUB_DEV")]
    pub dev: bool,

    /// Do not apply migrations at start (a migration job runs `integration-hub migrate`).
    #[arg(long, env = "INTEGRATION_HUB_SKIP_MIGRATIONS")]
    pub skip_migrations: bool,

    /// Replace the built-in service catalog with this JSON file.
    #[arg(long, env = "INTEGRATION_HUB_CATALOG_FILE")]
    pub catalog_file: Option<PathBuf>,

    /// Seconds between checkpoints on an idle watch stream.
    #[arg(long, env = "INTEGRATION_HUB_CHECKPOINT_INTERVAL_SECS", default_value_t = 15,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub checkpoint_interval_secs: u64,

    /// Seconds events are kept; a watch cursor older than this answers CURSOR_EXPIRED.
    #[arg(long, env = "INTEGRATION_HUB_EVENT_RETENTION_SECS", default_value_t = 7 * 24 * 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub event_retention_secs: u64,

    /// Seconds between two prunings of the event log.
    #[arg(long, env = "INTEGRATION_HUB_PRUNE_INTERVAL_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub prune_interval_secs: u64,

    #[command(flatten)]
    pub audit: AuditKeeperArgs,

    /// Most watch streams open at once on this replica.
    #[arg(
        long,
        env = "INTEGRATION_HUB_MAX_WATCH_STREAMS",
        default_value_t = 20_000
    )]
    pub max_watch_streams: usize,

    /// Most watch streams one principal (team and subject) may hold open on this replica.
    #[arg(
        long,
        env = "INTEGRATION_HUB_MAX_WATCH_STREAMS_PER_PRINCIPAL",
        default_value_t = 100
    )]
    pub max_watch_streams_per_principal: usize,

    /// Bytes all watch streams of this replica may hold in their outgoing queues together.
    /// When it is spent, the streams furthest behind end with RESOURCE_EXHAUSTED and their
    /// resume cursor. Size it well under the memory limit (the chart's is 512 MiB).
    #[arg(
        long,
        env = "INTEGRATION_HUB_WATCH_MEMORY_BYTES",
        default_value_t = 128 * 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(1024..)
    )]
    pub watch_memory_bytes: u64,

    /// Bytes one watch stream may hold in its outgoing queue; a stream whose client does not
    /// read waits there and reads nothing more from the database.
    #[arg(
        long,
        env = "INTEGRATION_HUB_WATCH_STREAM_BUFFER_BYTES",
        default_value_t = 1024 * 1024,
        value_parser = clap::value_parser!(u64).range(1024..)
    )]
    pub watch_stream_buffer_bytes: u64,

    /// Milliseconds a read kept by this replica (Get, List, the read of a credential
    /// resolution) may be answered again. A change made through this replica is seen at once;
    /// one made through another replica as soon as its event reaches this one, and never
    /// later than this. 0 turns the read cache off.
    #[arg(long, env = "INTEGRATION_HUB_READ_CACHE_TTL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub read_cache_ttl_ms: u64,

    /// Bytes the read cache of this replica may hold.
    #[arg(long, env = "INTEGRATION_HUB_READ_CACHE_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub read_cache_bytes: usize,

    /// Seconds a request may take before it is cancelled (not watch streams).
    #[arg(long, env = "INTEGRATION_HUB_REQUEST_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout_secs: u64,

    /// Largest request message, in bytes.
    #[arg(long, env = "INTEGRATION_HUB_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_message_bytes: usize,

    /// Seconds to wait for in-flight calls at shutdown before stopping anyway.
    #[arg(
        long,
        env = "INTEGRATION_HUB_SHUTDOWN_DEADLINE_SECS",
        default_value_t = 20
    )]
    pub shutdown_deadline_secs: u64,

    /// Log format: `json` or `pretty` (default: pretty with --dev, json otherwise).
    #[arg(long, env = "INTEGRATION_HUB_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    #[command(flatten)]
    pub oauth: OAuthArgs,

    #[command(flatten)]
    pub verify: crate::startup::VerifyArgs,
}

/// OAuth 2.0: the callback listener, the clients, and outbound calls to providers.
#[derive(Clone, Debug, Args)]
pub struct OAuthArgs {
    /// Address of the HTTP listener that serves the OAuth sign-in and callback
    /// (`POST /oauth/start`, `GET /oauth/callback`);
    /// off when unset.
    #[arg(long, env = "INTEGRATION_HUB_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,

    /// Base URL browsers reach the HTTP listener at, such as `https://hub.example.com`: the
    /// OAuth redirect URI registered with providers is this plus `/oauth/callback`.
    #[arg(long, env = "INTEGRATION_HUB_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// JSON file of OAuth clients: `{"<service>": {"client_id": "...", "client_secret":
    /// "..."}}` (or `"client_secret_file": "<path>"`). OAuth is off without it.
    #[arg(long, env = "INTEGRATION_HUB_OAUTH_CLIENTS_FILE")]
    pub oauth_clients_file: Option<PathBuf>,

    /// Origins (`https://app.example.com`, comma-separated) an authorization's return URL may
    /// point at, and whose pages may open a sign-in, besides the public URL's own.
    #[arg(
        long,
        env = "INTEGRATION_HUB_OAUTH_RETURN_ORIGINS",
        value_delimiter = ','
    )]
    pub oauth_return_origins: Vec<String>,

    /// Provider hosts outbound OAuth calls may reach (comma-separated); any when unset.
    #[arg(
        long,
        env = "INTEGRATION_HUB_OAUTH_PROVIDER_HOSTS",
        value_delimiter = ','
    )]
    pub oauth_provider_hosts: Vec<String>,

    /// Allow plain http to loopback providers and return URLs (development and tests;
    /// implied by `--dev`). Anything else always needs https.
    #[arg(long, env = "INTEGRATION_HUB_OAUTH_ALLOW_LOOPBACK_HTTP")]
    pub oauth_allow_loopback_http: bool,

    /// Timeout of one outbound call to a provider, in seconds.
    #[arg(long, env = "INTEGRATION_HUB_OAUTH_HTTP_TIMEOUT_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub oauth_http_timeout_secs: u64,

    /// Token refreshes one replica runs at once.
    #[arg(long, env = "INTEGRATION_HUB_OAUTH_REFRESH_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub oauth_refresh_concurrency: u64,

    /// How often the refresher looks for tokens due for a refresh, in seconds.
    #[arg(long, env = "INTEGRATION_HUB_OAUTH_REFRESH_INTERVAL_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub oauth_refresh_interval_secs: u64,
}

fn non_negative_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err("must be a number of calls a second, 0 or more".to_owned()),
    }
}

/// One role's rate limit per principal: calls a second and burst (either 0: no limit).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_sec: f64,
    pub burst: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

impl ServeArgs {
    pub fn checkpoint_interval(&self) -> Duration {
        Duration::from_secs(self.checkpoint_interval_secs)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn shutdown_deadline(&self) -> Duration {
        Duration::from_secs(self.shutdown_deadline_secs)
    }

    /// The rate limit of `role`'s principals: the role's own settings; for a human role
    /// without them, INTEGRATION_HUB_RATE_LIMIT_PER_SEC and _BURST (as before roles had
    /// limits of their own).
    pub fn rate_limit(&self, role: Role) -> RateLimit {
        let (per_sec, burst) = match role {
            Role::Viewer => (self.rate_limit_viewer_per_sec, self.rate_limit_viewer_burst),
            Role::Developer => (
                self.rate_limit_developer_per_sec,
                self.rate_limit_developer_burst,
            ),
            Role::Admin => (self.rate_limit_admin_per_sec, self.rate_limit_admin_burst),
            Role::Service => {
                return RateLimit {
                    per_sec: self.rate_limit_service_per_sec,
                    burst: self.rate_limit_service_burst,
                };
            }
        };
        RateLimit {
            per_sec: per_sec.unwrap_or(self.rate_limit_per_sec),
            burst: burst.unwrap_or(self.rate_limit_burst),
        }
    }

    /// Settings for a server on `listen` with `database_url`, everything else at its default.
    /// Tests and tools start from here.
    pub fn with_defaults(listen: SocketAddr, database_url: String) -> ServeArgs {
        let mut args = ServeArgs::parse_from(["serve"]);
        args.listen = listen;
        args.database.database_url = Some(database_url);
        args
    }
}

impl ServeArgs {
    fn parse_from<I: IntoIterator<Item = &'static str>>(args: I) -> ServeArgs {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            serve: ServeArgs,
        }
        // Only the defaults are parsed here; environment variables still apply, as for `serve`.
        Wrapper::parse_from(args).serve
    }
}

/// Arguments of `token`.
#[derive(Clone, Debug, Args)]
pub struct TokenArgs {
    /// Use the development secret that `serve --dev` keeps in the data directory.
    #[arg(long)]
    pub dev: bool,

    /// Team id (or `*` for a service token that sees every team).
    #[arg(long)]
    pub team: String,

    /// Role claim value, such as `admin`, `developer`, `viewer` or `service`.
    #[arg(long)]
    pub role: String,

    /// Subject (who the token is for).
    #[arg(long, default_value = "dev-user")]
    pub subject: String,

    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_secs: u64,

    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub auth: AuthArgs,
}

/// Arguments of `rotate-keys`.
#[derive(Clone, Debug, Args)]
pub struct RotateKeysArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Encryption key ring, `1:<base64 32 bytes>,2:<base64>`: the same ring the service
    /// runs with, its newest key being the one to re-seal under.
    #[arg(long, env = "INTEGRATION_HUB_ENCRYPTION_KEYS", hide_env_values = true)]
    pub encryption_keys: String,

    /// Keys below this version are retired and do not open (values still sealed with one
    /// are reported as failures).
    #[arg(long, env = "INTEGRATION_HUB_MIN_KEY_VERSION",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub min_key_version: Option<u32>,

    /// Values re-sealed per transaction.
    #[arg(long, env = "INTEGRATION_HUB_ROTATE_BATCH_SIZE", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub batch_size: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> ServeArgs {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Wrapper::parse_from(std::iter::once("serve").chain(args.iter().copied())).serve
    }

    #[test]
    fn human_roles_fall_back_to_the_old_setting_and_services_have_their_own() {
        let limit = |per_sec, burst| RateLimit { per_sec, burst };
        let defaults = serve(&[]);
        for role in [Role::Viewer, Role::Developer, Role::Admin] {
            assert_eq!(defaults.rate_limit(role), limit(50.0, 100), "{role:?}");
        }
        assert_eq!(defaults.rate_limit(Role::Service), limit(1000.0, 2000));

        let args = serve(&[
            "--rate-limit-per-sec",
            "0",
            "--rate-limit-burst",
            "7",
            "--rate-limit-viewer-per-sec",
            "5",
            "--rate-limit-admin-burst",
            "20",
            "--rate-limit-service-per-sec",
            "300",
        ]);
        assert_eq!(args.rate_limit(Role::Viewer), limit(5.0, 7));
        assert_eq!(args.rate_limit(Role::Developer), limit(0.0, 7));
        assert_eq!(args.rate_limit(Role::Admin), limit(0.0, 20));
        assert_eq!(
            args.rate_limit(Role::Service),
            limit(300.0, 2000),
            "the old setting never applies to services"
        );
    }
}
