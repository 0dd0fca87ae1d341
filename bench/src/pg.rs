//! PostgreSQL: scratch databases, and pgbench's single-row insert rate as the baseline for
//! writes.

use std::path::Path;

use anyhow::{Context, bail};
use sea_orm::{ConnectionTrait, Database};
use tokio::process::Command;

#[derive(Clone, Debug)]
pub struct Pg {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// `sslmode` for every connection, the server's and pgbench's (`None`: each driver's
    /// default, `prefer`: TLS when the server offers it).
    pub sslmode: Option<String>,
}

/// What pgbench measured.
pub struct Pgbench {
    pub tps: f64,
    pub latency_ms: f64,
}

impl Pg {
    pub fn url(&self, database: &str) -> String {
        let url = format!(
            "postgres://{}@{}:{}/{database}",
            self.user, self.host, self.port
        );
        match &self.sslmode {
            Some(mode) => format!("{url}?sslmode={mode}"),
            None => url,
        }
    }

    async fn admin(&self, sql: &str) -> anyhow::Result<()> {
        let db = Database::connect(self.url("postgres"))
            .await
            .with_context(|| {
                format!(
                    "PostgreSQL must run at {}:{} (or pass --no-postgres)",
                    self.host, self.port
                )
            })?;
        db.execute_unprepared(sql).await?;
        let _ = db.close().await;
        Ok(())
    }

    pub async fn create_database(&self, name: &str) -> anyhow::Result<()> {
        self.admin(&format!("CREATE DATABASE {name}")).await
    }

    pub async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        self.admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
    }

    /// pgbench with `clients` clients, each running one `INSERT` of one row into a scratch
    /// table of a scratch database, for `seconds`.
    pub async fn insert_rate(
        &self,
        clients: usize,
        seconds: u64,
        dir: &Path,
    ) -> anyhow::Result<Pgbench> {
        let name = format!("ih_bench_scratch_{}", uuid::Uuid::new_v4().simple());
        self.create_database(&name).await?;
        let result = async {
            let db = Database::connect(self.url(&name)).await?;
            db.execute_unprepared(
                "CREATE TABLE scratch (id bigserial PRIMARY KEY, payload text NOT NULL, \
                 created_at timestamptz NOT NULL DEFAULT now())",
            )
            .await?;
            let _ = db.close().await;
            let script = "INSERT INTO scratch (payload) VALUES ('integration');\n";
            self.run_pgbench(&name, script, clients, seconds, dir).await
        }
        .await;
        let _ = self.drop_database(&name).await;
        result
    }

    /// pgbench with `clients` clients, each sending `SELECT 1` (the simple protocol, as the
    /// floor's `ping` does) to database `name`, for `seconds`: a round trip with nothing in
    /// it, from a C client, on the same cores.
    pub async fn select_one_rate(
        &self,
        name: &str,
        clients: usize,
        seconds: u64,
        dir: &Path,
    ) -> anyhow::Result<Pgbench> {
        self.run_pgbench(name, "SELECT 1;\n", clients, seconds, dir)
            .await
    }

    async fn run_pgbench(
        &self,
        name: &str,
        script_text: &str,
        clients: usize,
        seconds: u64,
        dir: &Path,
    ) -> anyhow::Result<Pgbench> {
        let script = dir.join(format!("pgbench-{}.sql", uuid::Uuid::new_v4().simple()));
        std::fs::write(&script, script_text)?;
        let mut command = Command::new("pgbench");
        if let Some(mode) = &self.sslmode {
            command.env("PGSSLMODE", mode);
        }
        let output = command
            .args(["-n", "-h", &self.host, "-p", &self.port.to_string()])
            .args(["-U", &self.user, "-c", &clients.to_string(), "-j", "2"])
            .args(["-T", &seconds.to_string(), "-f"])
            .arg(&script)
            .arg(name)
            .output()
            .await
            .context("run pgbench (install postgresql-client or pass --no-postgres)")?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "pgbench failed: {}{}",
                text,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let number_after = |prefix: &str| {
            text.lines()
                .find_map(|l| l.trim().strip_prefix(prefix))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<f64>().ok())
        };
        Ok(Pgbench {
            tps: number_after("tps = ").context("no tps in pgbench's output")?,
            latency_ms: number_after("latency average = ").unwrap_or(0.0),
        })
    }
}
