//! `spawn_app`: a fresh database (a temp SQLite file, or a new PostgreSQL database with a
//! random name), the real server on 127.0.0.1:0, typed clients and a token minting helper.

// Not every test uses every helper.
#![allow(dead_code)]

use std::time::Duration;

use integration_hub::auth::{MintClaims, mint_hs256};
use integration_hub::config::ServeArgs;
use integration_hub::crypto::KeyRing;
use integration_hub::pb::audit_service_client::AuditServiceClient;
use integration_hub::pb::installed_app_service_client::InstalledAppServiceClient;
use integration_hub::pb::integration_service_client::IntegrationServiceClient;
use integration_hub::startup::Application;
use sea_orm::{ConnectionTrait, Database};
use tonic::Request;
use tonic::transport::Channel;

pub const TEST_SECRET: &str = "test-secret-test-secret-test-secret-0123456789";
/// `serve` without `--dev` requires both; `token()` mints them.
pub const TEST_ISSUER: &str = "https://idp.integration-hub.test";
pub const TEST_AUDIENCE: &str = "integration-hub-tests";

/// The URL of a database on the tests' PostgreSQL to create test databases from: the
/// throwaway cluster of this run or `INTEGRATION_HUB_TEST_POSTGRES_URL` (see `needs`).
pub fn pg_admin_url() -> &'static str {
    match crate::needs::postgres() {
        Ok(postgres) => &postgres.admin_url,
        Err(why) => panic!(
            "PostgreSQL is not available ({why}); a test that needs it starts with \
             `needs!(Postgres)`, which skips it"
        ),
    }
}

/// The URL of database `name` on the tests' PostgreSQL.
pub fn pg_database_url(name: &str) -> String {
    let mut url = url::Url::parse(pg_admin_url()).expect("INTEGRATION_HUB_TEST_POSTGRES_URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// A free loopback port, for a listener a test must name before the server binds it. Taken
/// below the kernel's ephemeral range: a port found by binding port 0 comes from that range,
/// and an outgoing connection of another test (to PostgreSQL, to a provider) could be given
/// it before the server binds it (seen in CI as "Address already in use"). Within a test
/// process each port is handed out once, from a random start.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOWEST: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral_low <= LOWEST + 1_000 {
        return std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
    }
    let span = ephemeral_low - LOWEST;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        uuid::Uuid::new_v4().as_u128() as u32 % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let port = LOWEST + NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = u16::try_from(port).expect("a port below the ephemeral range");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOWEST} and {ephemeral_low}");
}

/// The tests' PostgreSQL as `host:port`.
pub fn pg_address() -> String {
    let url = url::Url::parse(pg_admin_url()).expect("INTEGRATION_HUB_TEST_POSTGRES_URL");
    format!(
        "{}:{}",
        url.host_str().unwrap_or("localhost"),
        url.port().unwrap_or(5432)
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database: a SQLite file in a temp dir, or a PostgreSQL database dropped on drop.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}?mode=rwc", dir.path().join("hub.db").display()),
                dir,
                pg_name: None,
            },
            Backend::Postgres => {
                let name = format!("ih_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(pg_admin_url())
                    .await
                    .unwrap_or_else(|e| panic!("connect to the tests' PostgreSQL: {e}"));
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                let _ = admin.close().await;
                TestDb {
                    url: pg_database_url(&name),
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    /// Path of the SQLite file (SQLite only).
    pub fn sqlite_path(&self) -> std::path::PathBuf {
        self.dir.path().join("hub.db")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Drop runs outside any runtime guarantee: use a runtime of our own on a thread.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    if let Ok(admin) = Database::connect(pg_admin_url()).await {
                        let _ = admin
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .await;
                        let _ = admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub apps: InstalledAppServiceClient<Channel>,
    pub integrations: IntegrationServiceClient<Channel>,
    pub audit: AuditServiceClient<Channel>,
    pub channel: Channel,
    pub db: TestDb,
    pub backend: Backend,
    /// Where Prometheus metrics are served, when the settings ask for it.
    pub metrics_addr: Option<std::net::SocketAddr>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The key ring the server was started with, so a restart can open what it sealed.
    encryption_keys: Option<String>,
}

/// The key ring spec test servers start with unless a test sets its own: one fresh key per
/// test run, so that tests can open the cursors the servers seal (`fixtures::seq`).
pub fn test_key_spec() -> &'static str {
    static SPEC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| KeyRing::generate(1).expect("key").1)
}

/// Server settings for tests: fixed secret, issuer and audience, a fresh key, port 0, short
/// checkpoints.
pub fn test_args(database_url: &str) -> ServeArgs {
    let mut args = ServeArgs::with_defaults(
        "127.0.0.1:0".parse().expect("addr"),
        database_url.to_owned(),
    );
    args.auth.jwt_hs256_secret = Some(TEST_SECRET.to_owned());
    args.auth.jwt_issuer = Some(TEST_ISSUER.to_owned());
    args.auth.jwt_audience = Some(TEST_AUDIENCE.to_owned());
    args.encryption_keys = Some(test_key_spec().to_owned());
    args.checkpoint_interval_secs = 1;
    // The matrix's service principal (`svc`) may watch the audit log (access.rs).
    args.audit.audit_readers = vec!["svc".to_owned()];
    args.database.db_max_connections = 8;
    // Tests make calls as fast as they can; the rate limits have tests of their own.
    args.rate_limit_per_sec = 0.0;
    args.rate_limit_service_per_sec = 0.0;
    // Tests create apps with made-up credentials: no test calls a real provider. Tests of
    // verification turn it on and point it at a local provider.
    args.verify.verify_credentials = Some(false);
    // The tests' all-teams worker, named as a deployment names its own (no other
    // subject may hold every team).
    args.auth.all_teams_services = Some("worker".to_owned());
    // The access matrix's service subject may deprovision; others may not.
    args.auth.deprovisioning_services = vec!["svc".to_owned()];
    args
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    let db = TestDb::new(backend).await;
    let args = test_args(&db.url);
    spawn_with(backend, db, args).await
}

pub async fn spawn_with(backend: Backend, db: TestDb, args: ServeArgs) -> TestApp {
    let encryption_keys = args.encryption_keys.clone();
    let app = Application::build(args).await.expect("build server");
    let port = app.port();
    let metrics_addr = app.metrics_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    let address = format!("http://127.0.0.1:{port}");
    let channel = Channel::from_shared(address.clone())
        .expect("uri")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the test server");
    TestApp {
        address,
        port,
        apps: InstalledAppServiceClient::new(channel.clone()),
        integrations: IntegrationServiceClient::new(channel.clone()),
        audit: AuditServiceClient::new(channel.clone()),
        channel,
        db,
        backend,
        metrics_addr,
        shutdown: Some(tx),
        server: Some(server),
        encryption_keys,
    }
}

impl TestApp {
    /// A token the server accepts.
    pub fn token(&self, team: &str, role: &str, subject: &str) -> String {
        token(team, role, subject)
    }

    /// Stops this server and starts another on the same database with `args` (whose
    /// database URL is replaced by this one's).
    pub async fn restart_with(mut self, mut args: ServeArgs) -> TestApp {
        self.stop().await;
        args.database.database_url = Some(self.db.url.clone());
        let backend = self.backend;
        // The database outlives this app: move it out, leaving a placeholder that drops nothing.
        let db = std::mem::replace(
            &mut self.db,
            TestDb {
                url: String::new(),
                dir: tempfile::tempdir().expect("temp dir"),
                pg_name: None,
            },
        );
        spawn_with(backend, db, args).await
    }

    /// Settings that start this app's server again: its database and keys, port 0.
    pub fn restart_args(&self) -> ServeArgs {
        let mut args = test_args(&self.db.url);
        args.encryption_keys = self.encryption_keys.clone();
        args
    }

    /// Stops the server (as SIGTERM would) and waits until it has returned.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(30), server)
                .await
                .expect("server stops within 30 s")
                .expect("server task")
                .expect("server returns Ok");
        }
    }
}

impl TestApp {
    /// Stops the server (if it still runs) and starts a new one on the same database with the
    /// same keys, as a redeploy would. Clients of the old server are gone with it.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        let placeholder = TestDb {
            url: String::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            pg_name: None,
        };
        let db = std::mem::replace(&mut self.db, placeholder);
        let mut args = test_args(&db.url);
        args.encryption_keys = self.encryption_keys.clone();
        let backend = self.backend;
        drop(self);
        spawn_with(backend, db, args).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn token(team: &str, role: &str, subject: &str) -> String {
    mint_hs256(
        TEST_SECRET.as_bytes(),
        &MintClaims {
            subject: subject.to_owned(),
            team: team.to_owned(),
            roles: vec![role.to_owned()],
            issuer: Some(TEST_ISSUER.to_owned()),
            audience: Some(TEST_AUDIENCE.to_owned()),
            ttl_secs: 3600,
            team_claim: "team_id".to_owned(),
            roles_claim: "roles".to_owned(),
        },
    )
    .expect("mint token")
}

/// A request carrying `token` as its bearer credential.
pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata value"),
    );
    request
}

/// Runs one async test body against SQLite and against PostgreSQL, as two tests `name::sqlite`
/// and `name::postgres` (the second skipped where there is no PostgreSQL: `needs`).
///
/// - `storage_test!(name)`: the body takes a `TestApp` (`spawn_app`).
/// - `storage_test!(process name)`: the body takes a `process::Server` on a fresh database,
///   and starts the binary (as often as it likes: replicas, restarts).
/// - `storage_test!(backend name)`: the body takes the `Backend` and sets up the rest.
///
/// Each form takes `, needs Part, ...` for what else it needs (`needs!`). `oauth_test!` and
/// `webhook_test!` are this macro with a setup of their own (`@with`).
#[macro_export]
macro_rules! storage_test {
    ($name:ident $(, needs $($part:ident),+)?) => {
        $crate::storage_test!(@with $name, [$($($part),+)?], $crate::helpers::spawn_app);
    };
    (process $name:ident $(, needs $($part:ident),+)?) => {
        $crate::storage_test!(@with $name, [$($($part),+)?], $crate::process::Server::fresh);
    };
    (backend $name:ident $(, needs $($part:ident),+)?) => {
        $crate::storage_test!(@with $name, [$($($part),+)?], ::std::future::ready);
    };
    // The body takes what `$setup(backend).await` makes.
    (@with $name:ident, [$($part:ident),*], $setup:expr) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::needs!($($part),*);
                super::$name(($setup)($crate::helpers::Backend::Sqlite).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::needs!($($part,)* Postgres);
                super::$name(($setup)($crate::helpers::Backend::Postgres).await).await;
            }
        }
    };
}
