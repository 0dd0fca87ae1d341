//! The server under test runs in a child process (this same binary, `server` subcommand): the
//! real `Application::build` + `run_until_stopped`, with production telemetry (JSON logs, to a
//! file). A separate process keeps its memory measurable from `/proc` and its CPU apart from
//! the load generator's in a profile.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use integration_hub::config::{LogFormat, ServeArgs};
use integration_hub::startup::Application;
use integration_hub::telemetry;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

pub const READY: &str = "LISTENING ";

/// Child side: serves until its standard input closes (the parent went away or is done).
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Like the production binary's `#[tokio::main]`: one worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let telemetry = telemetry::init(args.log_format.unwrap_or(LogFormat::Json))?;
        let app = Application::build(args).await?;
        println!("{READY}{}", app.local_addr());
        let stdin_closed = async {
            let mut stdin = tokio::io::stdin();
            let mut sink = [0u8; 64];
            while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        let result = app.run_until_stopped(stdin_closed).await;
        telemetry.shutdown();
        result
    })
}

/// Parent side: a running server process.
pub struct ServerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    pub addr: SocketAddr,
    pub log: PathBuf,
    /// Whether its database is PostgreSQL: the rows of its calls then say what PostgreSQL
    /// spent on each.
    pub postgres: bool,
}

/// Resident memory of process `pid`, in KiB.
pub fn rss_kib_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc status")
}

/// What a server is started with.
pub struct ServerSpec<'a> {
    pub name: &'a str,
    pub database_url: &'a str,
    pub secret: &'a str,
    pub encryption_keys: &'a str,
    pub extra_args: Vec<String>,
}

impl ServerProcess {
    pub async fn start(spec: ServerSpec<'_>, dir: &Path) -> anyhow::Result<ServerProcess> {
        let log = dir.join(format!("server-{}.log", spec.name));
        let log_file = std::fs::File::create(&log)?;
        let child = Command::new(std::env::current_exe()?)
            .arg("server")
            .args([
                "--listen",
                "127.0.0.1:0",
                "--database-url",
                spec.database_url,
            ])
            .args(&spec.extra_args)
            .env("INTEGRATION_HUB_JWT_HS256_SECRET", spec.secret)
            .env("INTEGRATION_HUB_JWT_ISSUER", crate::seed::ISSUER)
            .env("INTEGRATION_HUB_JWT_AUDIENCE", crate::seed::AUDIENCE)
            // The bench measures throughput, not the per-principal rate limits.
            .env("INTEGRATION_HUB_RATE_LIMIT_PER_SEC", "0")
            .env("INTEGRATION_HUB_RATE_LIMIT_SERVICE_PER_SEC", "0")
            .env("INTEGRATION_HUB_ENCRYPTION_KEYS", spec.encryption_keys)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .context("start the server process")?;
        let postgres = spec.database_url.starts_with("postgres");
        Self::ready(child, log, postgres).await
    }

    /// A floor server (`floor.rs`) with these flags, stopped like the server under test.
    pub async fn start_floor(
        name: &str,
        args: &[String],
        dir: &Path,
        postgres: bool,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("floor-{name}.log"));
        let child = Command::new(std::env::current_exe()?)
            .arg("floor")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("start the floor process")?;
        Self::ready(child, log, postgres).await
    }

    /// Waits for a started child to print the address it listens on.
    async fn ready(mut child: Child, log: PathBuf, postgres: bool) -> anyhow::Result<Self> {
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .context("the server did not start within 60 s")??;
        let Some(addr) = line.as_deref().and_then(|l| l.strip_prefix(READY)) else {
            bail!("the server did not start; see {} ({line:?})", log.display());
        };
        let addr = addr.parse()?;
        Ok(ServerProcess {
            stdin: child.stdin.take(),
            child,
            addr,
            log,
            postgres,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib_of(self.pid())
    }

    /// Asks the server to stop (closes its stdin) and waits; kills it after 30 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        drop(self.stdin.take());
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                if !status.success() {
                    bail!(
                        "the server exited with {status}; see {}",
                        self.log.display()
                    );
                }
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("the server did not stop within 30 s");
            }
        }
        Ok(())
    }
}
