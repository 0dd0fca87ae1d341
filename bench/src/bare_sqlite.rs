//! The baseline for creates on SQLite: a bare one-row `INSERT` into a scratch file with the
//! durability the service runs with (WAL, `synchronous=FULL`), each insert its own
//! transaction, over one connection (SQLite has one writer at a time), with `clients` callers
//! keeping it busy. What pgbench is for PostgreSQL.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, Statement};

/// What the bare inserts measured.
pub struct BareInserts {
    pub per_sec: f64,
    pub inserts: u64,
    /// Mean time of one insert, queueing for the connection included.
    pub mean: Duration,
}

/// Inserts rows into `scratch` in a new file under `dir` for `window` (after `warmup`).
pub async fn insert_rate(
    dir: &Path,
    clients: usize,
    warmup: Duration,
    window: Duration,
) -> anyhow::Result<BareInserts> {
    let path = dir.join(format!("bare-{}.db", uuid::Uuid::new_v4().simple()));
    let mut options = ConnectOptions::new(format!("sqlite://{}?mode=rwc", path.display()));
    options
        .max_connections(1)
        .min_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .sqlx_logging(false);
    let db = Database::connect(options)
        .await
        .context("open the bare SQLite file")?;
    db.execute_unprepared(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
         CREATE TABLE scratch (id TEXT PRIMARY KEY, payload TEXT NOT NULL, \
         created_at INTEGER NOT NULL)",
    )
    .await?;
    let journal: String = pragma(&db, "journal_mode").await?;
    ensure!(
        journal == "wal",
        "the scratch file's journal is {journal}, not WAL"
    );
    let synchronous: i64 = pragma(&db, "synchronous").await?;
    ensure!(
        synchronous == 2,
        "synchronous is {synchronous}, not FULL (2)"
    );

    let db = Arc::new(db);
    let stop = Arc::new(AtomicBool::new(false));
    let counted = Arc::new(AtomicU64::new(0));
    let busy = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let (from, to) = (start + warmup, start + warmup + window);
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients.max(1) {
        let (db, stop, counted, busy) = (db.clone(), stop.clone(), counted.clone(), busy.clone());
        tasks.spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let begun = Instant::now();
                db.execute_raw(Statement::from_sql_and_values(
                    db.get_database_backend(),
                    "INSERT INTO scratch (id, payload, created_at) VALUES (?, ?, ?)",
                    [
                        format!("{client}-{n}").into(),
                        "integration".into(),
                        (n as i64).into(),
                    ],
                ))
                .await?;
                n += 1;
                let done = Instant::now();
                if done >= from && done < to {
                    counted.fetch_add(1, Ordering::Relaxed);
                    busy.fetch_add((done - begun).as_micros() as u64, Ordering::Relaxed);
                }
            }
            anyhow::Ok(())
        });
    }
    tokio::time::sleep_until(to.into()).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(joined) = tasks.join_next().await {
        joined.context("an inserting task panicked")??;
    }
    let inserts = counted.load(Ordering::Relaxed);
    let mean = Duration::from_micros(busy.load(Ordering::Relaxed) / inserts.max(1));
    if let Ok(db) = Arc::try_unwrap(db) {
        let _ = db.close().await;
    }
    let _ = std::fs::remove_file(&path);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(BareInserts {
        per_sec: inserts as f64 / window.as_secs_f64(),
        inserts,
        mean,
    })
}

async fn pragma<T: sea_orm::TryGetable>(
    db: &sea_orm::DatabaseConnection,
    name: &str,
) -> anyhow::Result<T> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!("PRAGMA {name}"),
        ))
        .await?
        .with_context(|| format!("PRAGMA {name} answered no row"))?;
    Ok(row.try_get_by_index::<T>(0)?)
}
