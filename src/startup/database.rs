//! The database at start-up: waiting for it to accept connections, refusing a data directory
//! that cannot be written, and the `database` health entry that follows it while serving.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;

use crate::config::DatabaseArgs;
use crate::store::{Store, StoreError};

/// The health entry that follows the database: SERVING while it answers, NOT_SERVING while it
/// does not. The services' own entries (and so readiness) do not follow it: every replica shares
/// the database, and a replica that is up answers UNAVAILABLE with a retry hint and keeps its
/// watch streams, where taking all replicas out of rotation would only refuse connections.
pub const DATABASE_HEALTH: &str = "database";
/// How often the database entry is checked.
const DATABASE_PROBE_INTERVAL: Duration = Duration::from_secs(2);

pub(super) fn spawn_database_probe(
    store: Store,
    reporter: tonic_health::server::HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    use tonic_health::ServingStatus;
    tokio::spawn(async move {
        let mut reported = None;
        loop {
            let up = matches!(
                tokio::time::timeout(DATABASE_PROBE_INTERVAL * 2, store.ping()).await,
                Ok(Ok(()))
            );
            if reported != Some(up) {
                let status = if up {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                reporter.set_service_status(DATABASE_HEALTH, status).await;
                reported = Some(up);
            }
            tokio::select! {
                _ = tokio::time::sleep(DATABASE_PROBE_INTERVAL) => {}
                _ = stop.changed() => return,
            }
        }
    });
}

/// Opens the database `args` names. A SQLite data directory that cannot be written is refused
/// at once, naming the path; an unreachable database is waited for, saying what is waited for
/// and until when, at most `database_wait_secs`.
pub async fn open_database(args: &DatabaseArgs, max_connections: u32) -> anyhow::Result<Store> {
    if args.database_url.is_none() {
        std::fs::create_dir_all(&args.data_dir)
            .with_context(|| format!("cannot create data directory {}", args.data_dir.display()))?;
    }
    if let Some(dir) = args.sqlite_dir() {
        check_writable(&dir)?;
    }
    let url = args.url();
    let database = crate::store::describe_url(&url);
    let wait = Duration::from_secs(args.database_wait_secs);
    let started = Instant::now();
    tracing::info!(%database, wait_secs = wait.as_secs(), "connecting to the database");
    loop {
        // One attempt at most 2 s (the pool's own acquire timeout is longer), so the wait is
        // reported as it goes and ends near its deadline.
        let attempt = wait
            .saturating_sub(started.elapsed())
            .clamp(Duration::from_millis(100), Duration::from_secs(2));
        let connected =
            match tokio::time::timeout(attempt, Store::connect(&url, max_connections)).await {
                Ok(connected) => connected,
                Err(_) => Err(StoreError::Unavailable(sea_orm::DbErr::Conn(
                    sea_orm::RuntimeErr::Internal(format!(
                        "no connection within {} ms",
                        attempt.as_millis()
                    )),
                ))),
            };
        match connected {
            Ok(store) => {
                if started.elapsed() > Duration::from_secs(1) {
                    tracing::info!(%database, waited_secs = started.elapsed().as_secs(), "the database accepts connections");
                }
                return Ok(store);
            }
            Err(StoreError::Unavailable(err)) if started.elapsed() < wait => {
                let left = wait.saturating_sub(started.elapsed());
                tracing::warn!(
                    %database,
                    error = %err,
                    waited_secs = started.elapsed().as_secs(),
                    gives_up_in_secs = left.as_secs(),
                    "waiting for the database to accept connections (INTEGRATION_HUB_DATABASE_WAIT_SECS)"
                );
                tokio::time::sleep(left.min(Duration::from_millis(500))).await;
            }
            Err(err) => {
                return Err(anyhow::Error::new(err).context(format!(
                    "cannot connect to the database {database} (waited {} s of at most {} s: INTEGRATION_HUB_DATABASE_WAIT_SECS)",
                    started.elapsed().as_secs(),
                    wait.as_secs()
                )));
            }
        }
    }
}

/// Refuses a directory the database could not write to, naming it, before SQLite fails on
/// the first write with an error that names nothing.
fn check_writable(dir: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let probe = dir.join(format!(
        ".integration-hub-write-check-{}",
        std::process::id()
    ));
    let written = std::fs::File::create(&probe).and_then(|mut file| {
        file.write_all(b"ok")?;
        file.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    written.with_context(|| {
        format!(
            "the data directory {} is not writable: the database cannot be stored there",
            dir.display()
        )
    })
}
