//! Storage: the only place that knows SQL.
//!
//! [`Store`] wraps a SeaORM connection pool to SQLite (the embedded default) or PostgreSQL.
//! Reads run on the pool or inside a [`Tx`]; every change runs inside a [`Tx`] from
//! [`Store::begin_write`], which takes the SQLite write lock up front (`BEGIN IMMEDIATE`), so
//! a transaction that reads before it writes never fails to upgrade its lock.
//!
//! The outbox (`events`) is appended in the same transaction as the change it describes. On
//! PostgreSQL, sequence numbers are handed out at insert time but become visible at commit,
//! so a later number could commit first and a reader could pass a number still in flight.
//! So readers never pass an in-flight number: every appending transaction holds a shared
//! transaction-scoped advisory lock from before its first insert until it ends, and a reader
//! first takes the same lock exclusively (a barrier, [`Store::max_event_seq`]): once it is
//! granted, every number handed out before the reader looked is committed or rolled back,
//! and the reader reads only up to the newest number it saw. Appenders do not wait for each
//! other, so their commits (and WAL flushes) group; they wait only for a barrier, which
//! lasts one statement. (An exclusive lock held by each appender until commit serialized
//! every commit's WAL flush: one write per flush.) The `NOTIFY` that wakes other replicas is
//! sent after commit for the same reason: PostgreSQL serializes the commits of notifying
//! transactions. SQLite has one writer at a time, so its commit order is its sequence order.
//!
//! Rows and errors are the store's own: the domain converts them.

mod audit;
mod entities;
mod rotation;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::sea_query::{Expr, ExprTrait, LockType};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseBackend,
    DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait, FromQueryResult, IsolationLevel,
    QueryFilter, QueryOrder, QuerySelect, QueryTrait, SqlErr, SqliteTransactionMode, Statement,
    TransactionOptions, TransactionTrait,
};
use tokio::sync::Notify;

pub use audit::{AuditFilter, AuditRow, NewAudit};
pub use entities::event::Model as EventRow;
pub use entities::installed_app::Model as AppRow;
pub use entities::integration::Model as IntegrationRow;
pub use rotation::{SealedKind, SealedRow};

use entities::{event, installed_app, integration};

/// Advisory lock key serializing outbox appends on PostgreSQL ("ihub-evt").
const OUTBOX_LOCK_KEY: i64 = 0x6968_7562_2d65_7674;
/// Advisory lock key held while migrations run on PostgreSQL ("ihub-mig").
const MIGRATION_LOCK_KEY: i64 = 0x6968_7562_2d6d_6967;
/// Advisory lock key: one replica prunes the event log at a time ("ihub-prn").
const PRUNE_LOCK_KEY: i64 = 0x6968_7562_2d70_726e;
/// The channel that tells other replicas an append committed.
pub const EVENTS_CHANNEL: &str = "integration_hub_events";
/// Rows per multi-row insert: far below the bind-parameter limits of both databases.
const INSERT_CHUNK: usize = 500;

/// What can go wrong in storage.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint refused the write (a duplicate id or request id).
    #[error("a unique constraint refused the write")]
    Conflict,
    /// The database could not be reached, lost its connection, is restarting or is overloaded;
    /// nothing was changed (or, for a lost commit, the change may be retried idempotently).
    #[error("the database is unavailable")]
    Unavailable(#[source] DbErr),
    /// The database's disk is full (or its files are read-only): the write was refused and
    /// rolled back; reads still work.
    #[error("the database's storage is full")]
    StorageFull(#[source] DbErr),
    /// Anything else: a broken invariant or a bug.
    #[error("database error")]
    Db(#[source] DbErr),
}

impl From<DbErr> for StoreError {
    /// The one place where constraint violations, connection failures and a full disk are
    /// told apart from other errors.
    fn from(err: DbErr) -> Self {
        if let Some(SqlErr::UniqueConstraintViolation(_)) = err.sql_err() {
            return StoreError::Conflict;
        }
        match fault_of(&err) {
            Fault::Unavailable => {
                condition::note_unavailable(&err);
                StoreError::Unavailable(err)
            }
            Fault::StorageFull => {
                condition::note_storage_full(&err);
                StoreError::StorageFull(err)
            }
            Fault::Other => StoreError::Db(err),
        }
    }
}

/// How a database error is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Unavailable,
    StorageFull,
    Other,
}

/// Classifies by the driver's error, never by message text where a code exists.
fn fault_of(err: &DbErr) -> Fault {
    use sea_orm::RuntimeErr;
    use sea_orm::sqlx::Error as Sqlx;
    let sqlx = match err {
        DbErr::Conn(_) | DbErr::ConnectionAcquire(_) => return Fault::Unavailable,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        _ => return Fault::Other,
    };
    match sqlx.as_ref() {
        // The connection broke mid-call (a restart, a kill, a network drop), or the pool could
        // not hand one out in time.
        Sqlx::Io(_)
        | Sqlx::Tls(_)
        | Sqlx::Protocol(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed => Fault::Unavailable,
        Sqlx::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            if db
                .try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>()
                .is_some()
            {
                sqlite_fault(code)
            } else {
                postgres_fault(code)
            }
        }
        _ => Fault::Other,
    }
}

/// SQLite result codes (<https://www.sqlite.org/rescode.html>); `code` is the extended code,
/// whose low byte is the primary one.
fn sqlite_fault(code: &str) -> Fault {
    let Ok(code) = code.parse::<i32>() else {
        return Fault::Other;
    };
    match code & 0xff {
        // SQLITE_FULL: the disk (or the tmpfs, or a quota) is full. SQLITE_READONLY: the files
        // or their directory became read-only. Either way writes cannot be made durable.
        13 | 8 => Fault::StorageFull,
        // SQLITE_BUSY / SQLITE_LOCKED (the busy timeout expired), SQLITE_IOERR,
        // SQLITE_CANTOPEN, SQLITE_PROTOCOL: transient or environmental; the call may be retried.
        5 | 6 | 10 | 14 | 15 => Fault::Unavailable,
        _ => Fault::Other,
    }
}

/// PostgreSQL SQLSTATEs (<https://www.postgresql.org/docs/current/errcodes-appendix.html>).
fn postgres_fault(code: &str) -> Fault {
    match code {
        // disk_full
        "53100" => Fault::StorageFull,
        // connection_exception (08xxx), operator_intervention: admin/crash shutdown, cannot
        // connect now (57P0x), insufficient_resources (53xxx: out of memory, too many
        // connections), serialization_failure, deadlock_detected, lock_not_available,
        // read_only_sql_transaction (a standby after a failover).
        c if c.starts_with("08") || c.starts_with("57P") || c.starts_with("53") => {
            Fault::Unavailable
        }
        "40001" | "40P01" | "55P03" | "25006" => Fault::Unavailable,
        _ => Fault::Other,
    }
}

/// What the process knows of its database's condition, so that an outage or a full disk is
/// logged once when it starts and once when it ends, not once per call. Process-wide: one
/// process serves one database.
pub mod condition {
    use std::sync::atomic::{AtomicBool, Ordering};

    static STORAGE_FULL: AtomicBool = AtomicBool::new(false);
    static UNAVAILABLE: AtomicBool = AtomicBool::new(false);

    pub(super) fn note_storage_full(err: &sea_orm::DbErr) {
        if !STORAGE_FULL.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                error = %err,
                "the database's storage is full (or read-only): writes are refused with RESOURCE_EXHAUSTED until space is freed; reads and watch streams go on"
            );
        }
    }

    pub(super) fn note_unavailable(err: &sea_orm::DbErr) {
        if UNAVAILABLE.swap(true, Ordering::AcqRel) {
            tracing::debug!(error = %err, "database still unavailable");
        } else {
            tracing::warn!(
                error = %err,
                "database unavailable: calls answer UNAVAILABLE until it is back"
            );
        }
    }

    /// A write committed: storage has room again.
    pub(super) fn note_write_committed() {
        if STORAGE_FULL.swap(false, Ordering::AcqRel) {
            tracing::info!("the database's storage accepts writes again");
        }
        note_reachable();
    }

    /// A statement reached the database.
    pub(super) fn note_reachable() {
        if UNAVAILABLE.swap(false, Ordering::AcqRel) {
            tracing::info!("database reachable again");
        }
    }

    /// Whether the last write failed for lack of space (for health and tests).
    pub fn storage_full() -> bool {
        STORAGE_FULL.load(Ordering::Acquire)
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A database URL as it may be logged: scheme, host, port and database; never the user name,
/// the password or the query parameters.
pub fn describe_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.split(['?', ':']).next().unwrap_or_default().to_owned();
    };
    let rest = rest.split('?').next().unwrap_or_default();
    // Everything up to the last `@` is user information, whatever characters it holds.
    let rest = rest.rsplit_once('@').map_or(rest, |(_, after)| after);
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if path.is_empty() {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}/{path}")
    }
}

/// Ordering key of a listing: rows are ordered by creation time, then id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct After {
    pub create_time: i64,
    pub id: String,
}

/// Which integrations of a team a listing or a bulk change selects.
#[derive(Clone, Debug, Default)]
pub struct IntegrationFilter {
    /// Only those bound to (or, when broken, that were bound to) this app.
    pub installed_app_id: Option<String>,
    /// Only those in this state.
    pub state: Option<String>,
    /// Only those broken for this reason.
    pub broken_reason: Option<String>,
    /// Only those using an app's credentials (not credentials of their own).
    pub app_bound_only: bool,
}

/// New values for a bulk change of integrations' state.
#[derive(Clone, Debug)]
pub struct StateChange {
    pub state: String,
    pub broken_reason: Option<String>,
    pub broken_detail: Option<String>,
    pub broken_time: Option<i64>,
    /// Rebind to this app (bulk reauthentication); `None` keeps the current binding.
    pub installed_app_id: Option<String>,
    pub update_time: i64,
}

/// A connection pool to SQLite or PostgreSQL.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    appended: Arc<Notify>,
    /// Kept for the LISTEN connection on PostgreSQL. May hold a password: never log it.
    url: Arc<str>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish()
    }
}

impl Store {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://...`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(max_connections)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(5))
            // Ping a pooled connection only when it sat idle long enough to have been dropped
            // by the server or a proxy: a ping on every acquire doubled the round trips of
            // every query (and on SQLite each round trip is a wake-up of its worker thread).
            .test_before_acquire_if_idle_for(Duration::from_secs(30))
            .sqlx_logging(false)
            .map_sqlx_sqlite_pool_opts(|pool| {
                pool.after_connect(|conn, _| Box::pin(stable_plans(conn)))
                    .after_release(|conn, _| Box::pin(outside_transaction(conn)))
            })
            .map_sqlx_sqlite_opts(|opts| {
                opts.create_if_missing(true)
                    .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    // FULL: a commit is on disk before it is acknowledged, power loss
                    // included (NORMAL in WAL mode keeps it only across a process crash).
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            });
        let db = Database::connect(options).await?;
        Ok(Store {
            db,
            appended: Arc::new(Notify::new()),
            url: url.into(),
        })
    }

    pub fn backend(&self) -> DatabaseBackend {
        self.db.get_database_backend()
    }

    pub fn is_postgres(&self) -> bool {
        self.backend() == DatabaseBackend::Postgres
    }

    /// Applies every pending migration. On PostgreSQL, replicas starting together take turns
    /// under an advisory lock.
    pub async fn migrate(&self) -> Result<()> {
        use migration::MigratorTrait;
        if !self.is_postgres() {
            return Ok(migration::Migrator::up(&self.db, None).await?);
        }
        // Session-level advisory locks belong to one connection: hold one for the whole run.
        let tx = self.db.begin().await?;
        tx.execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [MIGRATION_LOCK_KEY.into()],
        ))
        .await?;
        migration::Migrator::up(&tx, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Woken after every commit that appended events, in this process.
    pub fn appended(&self) -> Arc<Notify> {
        self.appended.clone()
    }

    /// Starts a write transaction (on SQLite: `BEGIN IMMEDIATE`).
    pub async fn begin_write(&self) -> Result<Tx> {
        let inner = if self.is_postgres() {
            self.db.begin().await?
        } else {
            self.db
                .begin_with_options(TransactionOptions {
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                    ..Default::default()
                })
                .await?
        };
        Ok(Tx {
            inner,
            postgres: self.is_postgres(),
            appended_events: false,
            appended: self.appended.clone(),
            notify_pool: self.is_postgres().then(|| self.db.clone()),
        })
    }

    /// Starts a read-only transaction whose reads all see one snapshot (a listing and the
    /// event cursor as of that listing).
    pub async fn begin_snapshot(&self) -> Result<Tx> {
        let inner = if self.is_postgres() {
            self.db
                .begin_with_config(Some(IsolationLevel::RepeatableRead), None)
                .await?
        } else {
            self.db.begin().await?
        };
        Ok(Tx {
            inner,
            postgres: self.is_postgres(),
            appended_events: false,
            appended: self.appended.clone(),
            notify_pool: None,
        })
    }

    fn conn(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Events after `after` (and up to `upto` when given), of one team or of all, oldest first.
    /// Without `upto`, up to [`Store::max_event_seq`]: never past a number still in flight.
    pub async fn events_after(
        &self,
        after: i64,
        upto: Option<i64>,
        team: Option<&str>,
        limit: u64,
    ) -> Result<Vec<EventRow>> {
        let upto = match upto {
            None if self.is_postgres() => Some(self.max_event_seq().await?),
            upto => upto,
        };
        let mut query = event::Entity::find().filter(event::Column::Seq.gt(after));
        if let Some(upto) = upto {
            query = query.filter(event::Column::Seq.lte(upto));
        }
        if let Some(team) = team {
            query = query.filter(event::Column::Team.eq(team));
        }
        Ok(query
            .order_by_asc(event::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// On PostgreSQL, wakes the local tailer whenever another replica's append commits
    /// (`LISTEN`), reconnecting by itself; returns when `stop` flips. A no-op on SQLite (one
    /// process; the tailer's periodic read covers other processes).
    pub async fn listen_for_appends(&self, mut stop: tokio::sync::watch::Receiver<bool>) {
        use sea_orm::sqlx::postgres::PgListener;
        if !self.is_postgres() {
            return;
        }
        let mut failing = false;
        loop {
            let listener = async {
                let mut listener = PgListener::connect(&self.url).await?;
                listener.listen(EVENTS_CHANNEL).await?;
                Ok::<_, sea_orm::sqlx::Error>(listener)
            };
            let mut listener = tokio::select! {
                result = listener => match result {
                    Ok(listener) => listener,
                    Err(err) if failing => {
                        tracing::debug!(error = %err, "cannot LISTEN for events yet");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = stop.changed() => return,
                        }
                    }
                    Err(err) => {
                        failing = true;
                        tracing::warn!(error = %err, "cannot LISTEN for events; retrying every second (the tailer polls meanwhile)");
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                            _ = stop.changed() => return,
                        }
                    }
                },
                _ = stop.changed() => return,
            };
            if std::mem::take(&mut failing) {
                tracing::info!("LISTENing for events again");
            }
            // A lost connection means lost notifications: wake the tailer to read anyway.
            self.appended.notify_one();
            loop {
                tokio::select! {
                    received = listener.recv() => match received {
                        Ok(_) => self.appended.notify_one(),
                        Err(err) => {
                            tracing::warn!(error = %err, "event LISTEN connection lost; reconnecting");
                            break;
                        }
                    },
                    _ = stop.changed() => return,
                }
            }
        }
    }

    /// Whether the database answers a trivial query now.
    pub async fn ping(&self) -> Result<()> {
        self.db
            .execute_unprepared("SELECT 1")
            .await
            .map_err(StoreError::from)?;
        condition::note_reachable();
        Ok(())
    }

    /// Every event with a sequence number at or below this has been pruned.
    pub async fn pruned_through(&self) -> Result<i64> {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                self.backend(),
                "SELECT pruned_through FROM event_log_state WHERE id = 1",
            ))
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<i64>("", "pruned_through")?,
            None => 0,
        })
    }

    /// Deletes the events older than `cutoff` (microseconds), as a prefix of the log, and
    /// moves the watermark. On PostgreSQL only one replica prunes at a time: the others find
    /// the lock taken and return 0.
    pub async fn prune_events(&self, cutoff: i64) -> Result<u64> {
        let tx = self.begin_write().await?;
        if tx.postgres {
            let row = tx
                .inner
                .query_one_raw(Statement::from_sql_and_values(
                    DatabaseBackend::Postgres,
                    "SELECT pg_try_advisory_xact_lock($1) AS locked",
                    [PRUNE_LOCK_KEY.into()],
                ))
                .await?;
            let locked = match row {
                Some(row) => row.try_get::<bool>("", "locked")?,
                None => false,
            };
            if !locked {
                return Ok(0);
            }
        }
        let through = event::Entity::find()
            .select_only()
            .column_as(event::Column::Seq.max(), "max_seq")
            .filter(event::Column::Time.lt(cutoff))
            .into_model::<MaxSeq>()
            .one(&tx.inner)
            .await?
            .and_then(|r| r.max_seq);
        let Some(through) = through else {
            return Ok(0);
        };
        let deleted = event::Entity::delete_many()
            .filter(event::Column::Seq.lte(through))
            .exec(&tx.inner)
            .await?
            .rows_affected;
        tx.inner
            .execute_raw(Statement::from_sql_and_values(
                tx.inner.get_database_backend(),
                match tx.inner.get_database_backend() {
                    DatabaseBackend::Postgres => {
                        "UPDATE event_log_state SET pruned_through = GREATEST(pruned_through, $1) WHERE id = 1"
                    }
                    _ => "UPDATE event_log_state SET pruned_through = MAX(pruned_through, ?) WHERE id = 1",
                },
                [through.into()],
            ))
            .await?;
        tx.commit().await?;
        Ok(deleted)
    }

    /// The newest event sequence number below which nothing is in flight: the last appended,
    /// even if it was pruned since (a prefix of the log is pruned, so the watermark is the
    /// floor); 0 when nothing was ever appended. Every event up to it is committed (or never
    /// will be). On PostgreSQL this is the readers' barrier (see the module doc).
    pub async fn max_event_seq(&self) -> Result<i64> {
        let statement = if self.is_postgres() {
            // The statement's snapshot is taken before the lock is granted: the number it
            // reads was handed out before the lock was asked for, so by a transaction that
            // held the shared lock then and has ended once the lock is granted.
            Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                format!(
                    "SELECT pg_advisory_xact_lock($1)::text AS barrier, {MAX_EVENT_SEQ} AS max_seq"
                ),
                [OUTBOX_LOCK_KEY.into()],
            )
        } else {
            Statement::from_string(self.backend(), format!("SELECT {MAX_EVENT_SEQ} AS max_seq"))
        };
        max_seq(self.db.query_one_raw(statement).await?)
    }

    /// An app and how many integrations use it (with its credentials), in one query.
    pub async fn get_app_with_count(&self, team: &str, id: &str) -> Result<Option<(AppRow, i64)>> {
        let query = installed_app::Entity::find_by_id(id.to_owned())
            .filter(installed_app::Column::Team.eq(team))
            .column_as(Expr::cust(APP_INTEGRATION_COUNT), "integration_count");
        let Some(row) = self.db.query_one_raw(query.build(self.backend())).await? else {
            return Ok(None);
        };
        let app = AppRow::from_query_result(&row, "")?;
        let count = row.try_get::<i64>("", "integration_count")?;
        Ok(Some((app, count)))
    }

    /// A page of a team's integrations (as [`Tx::list_integrations`]) and an event sequence
    /// number such that every change the page does not show has an event after it (a change
    /// after it may also be in the page: delivery is at least once).
    pub async fn list_integrations_at_cursor(
        &self,
        team: &str,
        filter: &IntegrationFilter,
        after: Option<&After>,
        limit: u64,
    ) -> Result<(Vec<IntegrationRow>, i64)> {
        if self.is_postgres() {
            // The barrier first: everything up to the cursor is committed, so the page, read
            // after it, shows all of it.
            let cursor = self.max_event_seq().await?;
            let rows = self.list_integrations(team, filter, after, limit).await?;
            return Ok((rows, cursor));
        }
        // SQLite commits in sequence order: one statement reads the page and the cursor from
        // one snapshot. An empty page has no row to carry the cursor: a snapshot transaction.
        if let Some(page) = self
            .list_integrations_with_cursor_column(team, filter, after, limit)
            .await?
        {
            return Ok(page);
        }
        let tx = self.begin_snapshot().await?;
        let cursor = tx.max_event_seq().await?;
        let rows = tx.list_integrations(team, filter, after, limit).await?;
        Ok((rows, cursor))
    }

    async fn list_integrations_with_cursor_column(
        &self,
        team: &str,
        filter: &IntegrationFilter,
        after: Option<&After>,
        limit: u64,
    ) -> Result<Option<(Vec<IntegrationRow>, i64)>> {
        let mut query = integration::Entity::find().filter(integration_condition(team, filter));
        if let Some(after) = after {
            query = query.filter(after_condition(
                integration::Column::CreateTime,
                integration::Column::Id,
                after,
            ));
        }
        let query = query
            .column_as(Expr::cust(MAX_EVENT_SEQ), "event_cursor")
            .order_by_asc(integration::Column::CreateTime)
            .order_by_asc(integration::Column::Id)
            .limit(limit);
        let rows = self.db.query_all_raw(query.build(self.backend())).await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let cursor = first.try_get::<i64>("", "event_cursor")?;
        let rows = rows
            .iter()
            .map(|r| IntegrationRow::from_query_result(r, ""))
            .collect::<std::result::Result<Vec<_>, DbErr>>()?;
        Ok(Some((rows, cursor)))
    }

    /// Connections open in the pool, and how many of them are idle.
    pub fn pool_stats(&self) -> (u32, usize) {
        if self.is_postgres() {
            let pool = self.db.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        } else {
            let pool = self.db.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        }
    }

    /// Closes the pool.
    pub async fn close(self) {
        let _ = self.db.close().await;
    }
}

/// A transaction. Dropped without [`Tx::commit`], it rolls back.
pub struct Tx {
    inner: DatabaseTransaction,
    postgres: bool,
    appended_events: bool,
    appended: Arc<Notify>,
    /// PostgreSQL: where to send the NOTIFY after a commit that appended events.
    notify_pool: Option<DatabaseConnection>,
}

impl Tx {
    fn conn(&self) -> &DatabaseTransaction {
        &self.inner
    }

    pub async fn commit(self) -> Result<()> {
        self.inner.commit().await?;
        condition::note_write_committed();
        if self.appended_events {
            self.appended.notify_one();
            if let Some(pool) = &self.notify_pool {
                // Wakes every replica's LISTEN connection. Outside the transaction: notifying
                // transactions commit one at a time. A lost notification costs a replica at
                // most its poll interval.
                let notified = pool
                    .execute_raw(Statement::from_sql_and_values(
                        DatabaseBackend::Postgres,
                        "SELECT pg_notify($1, '')",
                        [EVENTS_CHANNEL.into()],
                    ))
                    .await;
                if let Err(err) = notified {
                    tracing::warn!(error = %err, "cannot notify other replicas of new events");
                }
            }
        }
        Ok(())
    }

    /// The newest event sequence number as this transaction sees it (see
    /// [`Store::max_event_seq`]; without its barrier, so for SQLite only).
    pub async fn max_event_seq(&self) -> Result<i64> {
        max_seq(
            self.inner
                .query_one_raw(Statement::from_string(
                    self.inner.get_database_backend(),
                    format!("SELECT {MAX_EVENT_SEQ} AS max_seq"),
                ))
                .await?,
        )
    }

    /// Reads an app and, on PostgreSQL, locks its row until commit, so a delete and an
    /// integration being bound to the app cannot interleave.
    pub async fn lock_app(&self, team: &str, id: &str) -> Result<Option<AppRow>> {
        let mut query = installed_app::Entity::find_by_id(id.to_owned())
            .filter(installed_app::Column::Team.eq(team));
        if self.postgres {
            query = query.lock(LockType::Update);
        }
        Ok(query.one(&self.inner).await?)
    }

    /// Reads an app to bind integrations to it and, on PostgreSQL, holds a share lock on its
    /// row until commit: binders do not wait for each other, while a delete or a state change
    /// (which take [`Tx::lock_app`]) waits for them, and they for it. An exclusive lock here
    /// made every integration created on one app wait for the previous one's commit.
    pub async fn share_app(&self, team: &str, id: &str) -> Result<Option<AppRow>> {
        let mut query = installed_app::Entity::find_by_id(id.to_owned())
            .filter(installed_app::Column::Team.eq(team));
        if self.postgres {
            query = query.lock(LockType::Share);
        }
        Ok(query.one(&self.inner).await?)
    }

    /// Reads an integration and, on PostgreSQL, locks its row until commit.
    pub async fn lock_integration(&self, team: &str, id: &str) -> Result<Option<IntegrationRow>> {
        let mut query = integration::Entity::find_by_id(id.to_owned())
            .filter(integration::Column::Team.eq(team));
        if self.postgres {
            query = query.lock(LockType::Update);
        }
        Ok(query.one(&self.inner).await?)
    }

    /// Every integration of a team matching `filter` (no paging), locked on PostgreSQL.
    pub async fn lock_integrations(
        &self,
        team: &str,
        filter: &IntegrationFilter,
    ) -> Result<Vec<IntegrationRow>> {
        let mut query = integration::Entity::find()
            .filter(integration_condition(team, filter))
            .order_by_asc(integration::Column::CreateTime)
            .order_by_asc(integration::Column::Id);
        if self.postgres {
            query = query.lock(LockType::Update);
        }
        Ok(query.all(&self.inner).await?)
    }

    pub async fn insert_app(&self, row: AppRow) -> Result<()> {
        installed_app::Entity::insert(installed_app::ActiveModel::from(row))
            .exec_without_returning(&self.inner)
            .await?;
        Ok(())
    }

    /// Replaces an app's row if its version is still `expected_version`; false otherwise.
    pub async fn update_app(&self, row: AppRow, expected_version: i64) -> Result<bool> {
        let result = installed_app::Entity::update_many()
            // `from` marks every value Unchanged, which `set` skips: `reset_all` writes them.
            .set(installed_app::ActiveModel::from(row.clone()).reset_all())
            .filter(installed_app::Column::Id.eq(row.id))
            .filter(installed_app::Column::Team.eq(row.team))
            .filter(installed_app::Column::Version.eq(expected_version))
            .exec(&self.inner)
            .await?;
        Ok(result.rows_affected == 1)
    }

    pub async fn delete_app(&self, team: &str, id: &str) -> Result<bool> {
        let result = installed_app::Entity::delete_many()
            .filter(installed_app::Column::Id.eq(id))
            .filter(installed_app::Column::Team.eq(team))
            .exec(&self.inner)
            .await?;
        Ok(result.rows_affected == 1)
    }

    pub async fn insert_integration(&self, row: IntegrationRow) -> Result<()> {
        integration::Entity::insert(integration::ActiveModel::from(row))
            .exec_without_returning(&self.inner)
            .await?;
        Ok(())
    }

    /// Replaces an integration's row if its version is still `expected_version`.
    pub async fn update_integration(
        &self,
        row: IntegrationRow,
        expected_version: i64,
    ) -> Result<bool> {
        let result = integration::Entity::update_many()
            // `from` marks every value Unchanged, which `set` skips: `reset_all` writes them.
            .set(integration::ActiveModel::from(row.clone()).reset_all())
            .filter(integration::Column::Id.eq(row.id))
            .filter(integration::Column::Team.eq(row.team))
            .filter(integration::Column::Version.eq(expected_version))
            .exec(&self.inner)
            .await?;
        Ok(result.rows_affected == 1)
    }

    pub async fn delete_integration(&self, team: &str, id: &str) -> Result<bool> {
        let result = integration::Entity::delete_many()
            .filter(integration::Column::Id.eq(id))
            .filter(integration::Column::Team.eq(team))
            .exec(&self.inner)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Applies `change` to every integration matching `filter` in one statement; returns how
    /// many changed. Callers read (and on PostgreSQL lock) the same set first with
    /// [`Tx::lock_integrations`], so the rows changed are exactly the rows read.
    pub async fn change_integrations(
        &self,
        team: &str,
        filter: &IntegrationFilter,
        change: &StateChange,
    ) -> Result<u64> {
        let mut update = integration::Entity::update_many()
            .col_expr(
                integration::Column::State,
                Expr::value(change.state.clone()),
            )
            .col_expr(
                integration::Column::BrokenReason,
                Expr::value(change.broken_reason.clone()),
            )
            .col_expr(
                integration::Column::BrokenDetail,
                Expr::value(change.broken_detail.clone()),
            )
            .col_expr(
                integration::Column::BrokenTime,
                Expr::value(change.broken_time),
            )
            .col_expr(
                integration::Column::UpdateTime,
                Expr::value(change.update_time),
            )
            .col_expr(
                integration::Column::Version,
                Expr::col(integration::Column::Version).add(1),
            );
        if let Some(app) = &change.installed_app_id {
            update = update.col_expr(
                integration::Column::InstalledAppId,
                Expr::value(Some(app.clone())),
            );
        }
        let result = update
            .filter(integration_condition(team, filter))
            .exec(&self.inner)
            .await?;
        Ok(result.rows_affected)
    }

    /// Appends events to the outbox, in order. The first append of a transaction takes the
    /// outbox lock on PostgreSQL (see the module doc); it is held until commit.
    pub async fn append_events(&mut self, rows: Vec<NewEvent>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        if self.postgres && !self.appended_events {
            // Held until this transaction ends: a reader's barrier waits for it.
            self.inner
                .execute_raw(Statement::from_sql_and_values(
                    DatabaseBackend::Postgres,
                    "SELECT pg_advisory_xact_lock_shared($1)",
                    [OUTBOX_LOCK_KEY.into()],
                ))
                .await?;
        }
        self.appended_events = true;
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<event::ActiveModel> = rows
                .by_ref()
                .take(INSERT_CHUNK)
                .map(|e| {
                    use sea_orm::ActiveValue::{NotSet, Set};
                    event::ActiveModel {
                        seq: NotSet,
                        event_id: Set(e.event_id),
                        team: Set(e.team),
                        kind: Set(e.kind),
                        integration_id: Set(e.integration_id),
                        installed_app_id: Set(e.installed_app_id),
                        reason: Set(e.reason),
                        actor: Set(e.actor),
                        time: Set(e.time),
                        snapshot: Set(e.snapshot),
                    }
                })
                .collect();
            event::Entity::insert_many(chunk)
                .exec_without_returning(&self.inner)
                .await?;
        }
        Ok(())
    }
}

/// An event to append; the store assigns its sequence number.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event_id: String,
    pub team: String,
    pub kind: String,
    pub integration_id: String,
    pub installed_app_id: Option<String>,
    pub reason: Option<String>,
    pub actor: String,
    pub time: i64,
    pub snapshot: String,
}

fn integration_condition(team: &str, filter: &IntegrationFilter) -> sea_orm::Condition {
    let mut cond = sea_orm::Condition::all().add(integration::Column::Team.eq(team));
    if let Some(app) = &filter.installed_app_id {
        cond = cond.add(integration::Column::InstalledAppId.eq(app.as_str()));
    }
    if let Some(state) = &filter.state {
        cond = cond.add(integration::Column::State.eq(state.as_str()));
    }
    if let Some(reason) = &filter.broken_reason {
        cond = cond.add(integration::Column::BrokenReason.eq(reason.as_str()));
    }
    if filter.app_bound_only {
        cond = cond.add(integration::Column::OwnCredentials.is_null());
    }
    cond
}

fn after_condition<C: ColumnTrait>(time_col: C, id_col: C, after: &After) -> sea_orm::Condition {
    sea_orm::Condition::any()
        .add(time_col.gt(after.create_time))
        .add(
            sea_orm::Condition::all()
                .add(time_col.eq(after.create_time))
                .add(id_col.gt(after.id.as_str())),
        )
}

/// How many integrations use an app with its credentials (a column of an app query).
const APP_INTEGRATION_COUNT: &str = "(SELECT COUNT(*) FROM integrations \
     WHERE integrations.team = installed_apps.team \
     AND integrations.installed_app_id = installed_apps.id \
     AND integrations.own_credentials IS NULL)";

/// The newest event sequence number (see `max_event_seq`), as a column.
const MAX_EVENT_SEQ: &str = "COALESCE((SELECT MAX(seq) FROM events), \
     (SELECT pruned_through FROM event_log_state WHERE id = 1), 0)";

/// Turns on SQLite's query planner stability guarantee on a new connection. Without it,
/// SQLite marks a statement whose `LIMIT` is a bound parameter (every SeaORM `.one()`, every
/// page) to be compiled again whenever its parameters are bound, which the driver does on
/// every execution: a fifth of a listing's CPU went to `sqlite3Reprepare`. With it, cached
/// statements are reused and plans do not depend on bound values.
async fn stable_plans(
    conn: &mut sea_orm::sqlx::SqliteConnection,
) -> std::result::Result<(), sea_orm::sqlx::Error> {
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle();
    // SAFETY: `db` is this connection's open handle, locked for us; ENABLE_QPSG takes an int
    // and an optional out-pointer (null: not wanted).
    let rc = unsafe {
        libsqlite3_sys::sqlite3_db_config(
            db.as_ptr(),
            libsqlite3_sys::SQLITE_DBCONFIG_ENABLE_QPSG,
            1 as std::ffi::c_int,
            std::ptr::null_mut::<std::ffi::c_int>(),
        )
    };
    if rc != libsqlite3_sys::SQLITE_OK {
        tracing::warn!(
            rc,
            "cannot enable SQLite's query planner stability guarantee"
        );
    }
    Ok(())
}

/// Whether a SQLite connection returned to the pool is outside any transaction, as SQLite and
/// sqlx's own bookkeeping both see it; a connection that is not is closed instead of reused.
///
/// Why: on SQLITE_FULL (and SQLITE_IOERR, SQLITE_NOMEM) SQLite may roll a transaction back by
/// itself. The rollback sqlx then sends fails ("no transaction is active") and sqlx keeps
/// counting the connection as one transaction deep. The next `begin` on it then issues
/// `SAVEPOINT` instead of `BEGIN IMMEDIATE`, a later rollback to that savepoint leaves a
/// transaction open, and from then on every "commit" only releases a nested savepoint: the
/// caller is told OK while nothing is committed, and the open transaction holds the write
/// lock so every other connection times out. Closing the connection rolls back whatever it
/// holds.
async fn outside_transaction(
    conn: &mut sea_orm::sqlx::SqliteConnection,
) -> std::result::Result<bool, sea_orm::sqlx::Error> {
    use sea_orm::sqlx::Connection;
    // The common case, free: committed, or never in a transaction.
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // A dropped transaction queued its rollback on the connection's worker; locking the handle
    // waits until the worker has run it.
    let mut handle = conn.lock_handle().await?;
    // SAFETY: `handle` is this connection's open database handle, locked for us.
    let autocommit =
        unsafe { libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) };
    drop(handle);
    let clean = autocommit != 0 && !conn.is_in_transaction();
    if !clean && condition::storage_full() {
        // Expected on every refused write while the disk is full: logged once as that.
        tracing::debug!(
            autocommit,
            "closing a connection SQLite left inside a transaction"
        );
    } else if !clean {
        tracing::warn!(
            autocommit,
            "a database connection was left inside a transaction (SQLite rolled it back by itself, or a rollback failed); closing it"
        );
    }
    Ok(clean)
}

fn max_seq(row: Option<sea_orm::QueryResult>) -> Result<i64> {
    Ok(match row {
        Some(row) => row.try_get::<i64>("", "max_seq")?,
        None => 0,
    })
}

#[derive(FromQueryResult)]
struct AppCount {
    installed_app_id: Option<String>,
    count: i64,
}

#[derive(FromQueryResult)]
struct MaxSeq {
    max_seq: Option<i64>,
}

/// Reads, available on the pool ([`Store`]) and inside a transaction ([`Tx`]).
macro_rules! reads {
    ($ty:ty) => {
        impl $ty {
            pub async fn get_app(&self, team: &str, id: &str) -> Result<Option<AppRow>> {
                Ok(installed_app::Entity::find_by_id(id.to_owned())
                    .filter(installed_app::Column::Team.eq(team))
                    .one(self.conn())
                    .await?)
            }

            pub async fn find_app_by_request(
                &self,
                team: &str,
                request_id: &str,
            ) -> Result<Option<AppRow>> {
                Ok(installed_app::Entity::find()
                    .filter(installed_app::Column::Team.eq(team))
                    .filter(installed_app::Column::RequestId.eq(request_id))
                    .one(self.conn())
                    .await?)
            }

            /// A page of a team's apps, oldest first.
            pub async fn list_apps(
                &self,
                team: &str,
                after: Option<&After>,
                limit: u64,
            ) -> Result<Vec<AppRow>> {
                let mut query =
                    installed_app::Entity::find().filter(installed_app::Column::Team.eq(team));
                if let Some(after) = after {
                    query = query.filter(after_condition(
                        installed_app::Column::CreateTime,
                        installed_app::Column::Id,
                        after,
                    ));
                }
                Ok(query
                    .order_by_asc(installed_app::Column::CreateTime)
                    .order_by_asc(installed_app::Column::Id)
                    .limit(limit)
                    .all(self.conn())
                    .await?)
            }

            /// How many integrations use each of these apps (with their credentials).
            pub async fn count_integrations(
                &self,
                team: &str,
                app_ids: &[String],
            ) -> Result<HashMap<String, i64>> {
                if app_ids.is_empty() {
                    return Ok(HashMap::new());
                }
                let rows = integration::Entity::find()
                    .select_only()
                    .column(integration::Column::InstalledAppId)
                    .column_as(integration::Column::Id.count(), "count")
                    .filter(integration::Column::Team.eq(team))
                    .filter(integration::Column::InstalledAppId.is_in(app_ids.iter().cloned()))
                    .filter(integration::Column::OwnCredentials.is_null())
                    .group_by(integration::Column::InstalledAppId)
                    .into_model::<AppCount>()
                    .all(self.conn())
                    .await?;
                Ok(rows
                    .into_iter()
                    .filter_map(|r| r.installed_app_id.map(|id| (id, r.count)))
                    .collect())
            }

            pub async fn get_integration(
                &self,
                team: &str,
                id: &str,
            ) -> Result<Option<IntegrationRow>> {
                Ok(integration::Entity::find_by_id(id.to_owned())
                    .filter(integration::Column::Team.eq(team))
                    .one(self.conn())
                    .await?)
            }

            pub async fn find_integration_by_request(
                &self,
                team: &str,
                request_id: &str,
            ) -> Result<Option<IntegrationRow>> {
                Ok(integration::Entity::find()
                    .filter(integration::Column::Team.eq(team))
                    .filter(integration::Column::RequestId.eq(request_id))
                    .one(self.conn())
                    .await?)
            }

            /// A page of a team's integrations matching `filter`, oldest first.
            pub async fn list_integrations(
                &self,
                team: &str,
                filter: &IntegrationFilter,
                after: Option<&After>,
                limit: u64,
            ) -> Result<Vec<IntegrationRow>> {
                let mut query =
                    integration::Entity::find().filter(integration_condition(team, filter));
                if let Some(after) = after {
                    query = query.filter(after_condition(
                        integration::Column::CreateTime,
                        integration::Column::Id,
                        after,
                    ));
                }
                Ok(query
                    .order_by_asc(integration::Column::CreateTime)
                    .order_by_asc(integration::Column::Id)
                    .limit(limit)
                    .all(self.conn())
                    .await?)
            }
        }
    };
}

reads!(Store);
reads!(Tx);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_logged_database_url_keeps_no_user_password_or_parameters() {
        for (url, shown) in [
            (
                "postgres://app:s3cr3t@db.internal:5432/hub?sslmode=require",
                "postgres://db.internal:5432/hub",
            ),
            // An unencoded `/` or `@` in the password still stays out.
            ("postgres://app:p/w@x@db:5432/hub", "postgres://db:5432/hub"),
            ("postgresql://db/hub", "postgresql://db/hub"),
            (
                "sqlite:///var/lib/hub/integration-hub.db?mode=rwc",
                "sqlite:///var/lib/hub/integration-hub.db",
            ),
            ("sqlite::memory:", "sqlite"),
        ] {
            assert_eq!(describe_url(url), shown, "{url}");
            assert!(!describe_url(url).contains("s3cr3t"));
        }
    }

    #[test]
    fn a_full_or_read_only_sqlite_file_is_storage_full_and_busy_or_io_is_unavailable() {
        // Extended codes: SQLITE_FULL 13, SQLITE_READONLY_DBMOVED 1032, SQLITE_BUSY_SNAPSHOT
        // 517, SQLITE_IOERR_WRITE 778, SQLITE_CANTOPEN 14.
        assert_eq!(sqlite_fault("13"), Fault::StorageFull);
        assert_eq!(sqlite_fault("1032"), Fault::StorageFull);
        assert_eq!(sqlite_fault("8"), Fault::StorageFull);
        for code in ["5", "517", "6", "778", "14"] {
            assert_eq!(sqlite_fault(code), Fault::Unavailable, "{code}");
        }
        // SQLITE_CONSTRAINT_FOREIGNKEY, SQLITE_ERROR, SQLITE_CORRUPT: bugs, not outages.
        for code in ["787", "1", "11", "", "x"] {
            assert_eq!(sqlite_fault(code), Fault::Other, "{code}");
        }
    }

    #[test]
    fn postgres_connection_and_shutdown_states_are_unavailable_and_disk_full_is_storage_full() {
        assert_eq!(postgres_fault("53100"), Fault::StorageFull);
        for code in [
            "08006", "08001", "57P01", "57P02", "57P03", "53300", "40001", "40P01", "25006",
        ] {
            assert_eq!(postgres_fault(code), Fault::Unavailable, "{code}");
        }
        for code in ["23505", "22021", "42P01", "XX000"] {
            assert_eq!(postgres_fault(code), Fault::Other, "{code}");
        }
    }
}
