//! Storage: the only place that knows SQL.
//!
//! [`Store`] wraps a SeaORM connection pool to SQLite (the embedded default) or PostgreSQL.
//! Reads run on the pool or inside a [`Tx`]; every change runs inside a [`Tx`] from
//! [`Store::begin_write`], which takes the SQLite write lock up front (`BEGIN IMMEDIATE`), so
//! a transaction that reads before it writes never fails to upgrade its lock.
//!
//! The outbox (`events`, [`outbox`]) is appended in the same transaction as the change it
//! describes; its module doc says how readers never pass a sequence number still in flight.
//! The records of apps and integrations are in [`records`]; errors and their classification
//! in [`error`].
//!
//! Rows, the values of their states ([`states`]) and errors are the store's own: the domain
//! uses the rows and states, and converts the errors.

mod audit;
mod audit_chain;
mod audit_pending;
mod audit_runs;
mod checks;
mod creates;
mod entities;
mod error;
mod joined;
mod keyed;
mod leases;
mod oauth;
mod outbox;
mod policies;
mod records;
mod rotation;
mod sets;
mod shape;
mod sizes;
mod sqlite_process;
mod state;
mod states;
mod verification;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseTransaction,
    IsolationLevel, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use tokio::sync::{Notify, mpsc};

pub use audit::{
    AUDIT_LISTINGS_PER_TEAM, AUDIT_STATEMENT_TIMEOUT, AuditFilter, AuditListing, AuditRow,
};
pub use audit_chain::{ChainHead, SEAL_WAIT, SealBound};
pub use audit_pending::Pending;
pub use audit_runs::{PendingRecord, Place, decode_places, encode_places};
pub use entities::event::Model as EventRow;
pub use entities::installed_app::Model as AppRow;
pub use entities::integration::Model as IntegrationRow;
pub use error::StoreError;
pub use joined::{APP_WITH_COUNT, AppWithCount, INTEGRATION_WITH_APP, IntegrationWithApp};
pub use keyed::{KEYS_PER_READ, KeyedRead};
pub use oauth::{AuthorizationRow, GrantRow, RefreshFailure};
pub use outbox::EVENTS_CHANNEL;
pub use policies::{PolicyRow, RequestRow};
pub use records::INTEGRATION;
pub use records::{After, AppFilter, IntegrationCounts, IntegrationFilter, StateChange};
pub use rotation::{SealedCount, SealedKind, SealedRow};
pub use sizes::RowBytes;
pub use sqlite_process::configure_sqlite_process;
pub use state::DatabaseState;
use state::Noted;
pub(crate) use states::stored_enum;
pub use states::{
    AppState, AuditAction, AuditOutcome, AuthorizationStage, BrokenReason, DeliveryOutcome,
    IntegrationState, RequestState, ServicePolicy, UnknownValue, VerificationState,
};
pub use verification::VerificationRow;
pub use webhooks::{DeliveryRow, Failure, SubscriptionRow};

/// Advisory lock key held while migrations run on PostgreSQL ("ihub-mig").
const MIGRATION_LOCK_KEY: i64 = 0x6968_7562_2d6d_6967;

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

/// A connection pool to SQLite or PostgreSQL.
#[derive(Clone)]
pub struct Store {
    db: Noted<leases::Pooled>,
    appended: Arc<Notify>,
    /// PostgreSQL: asks the notifier task to wake every replica's LISTEN connection.
    notifier: Option<mpsc::Sender<()>>,
    /// Kept for the LISTEN connection on PostgreSQL. May hold a password: never log it.
    url: Arc<str>,
    /// Audit listings in progress, bounded (`audit.rs`).
    audit_reads: Arc<audit::AuditReads>,
    /// SQLite: this process's write transactions, one at a time, in the order they asked.
    /// SQLite has one writer anyway; without this queue a writer that finds the database
    /// locked sleeps in its busy handler (backing off up to 100 ms at a time) rather than
    /// starting the moment the previous writer commits.
    write_gate: Option<WriteGate>,
}

/// SQLite's queue of write transactions ([`Store::write_gate`]).
#[derive(Clone)]
struct WriteGate {
    turn: Arc<tokio::sync::Mutex<()>>,
    /// The longest a write waits for its turn before it gives up as busy.
    wait: Duration,
}

/// The longest a write waits for its turn on SQLite (as long as SQLite's own busy timeout).
const SQLITE_WRITE_WAIT: Duration = Duration::from_secs(10);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend())
            .finish()
    }
}

/// Rows sqlx's SQLite worker thread may read ahead of the task taking them (its default is
/// 50): a query's rows cross from the worker to the task in one go instead of the worker
/// waiting to be woken every 50 rows, which on a busy machine is a wait for a core each time.
const SQLITE_ROW_BUFFER: usize = 1024;

/// WAL pages after which a commit copies the log back into the database (SQLite's default is
/// 1,000, 4 MB). A group commit of resolutions over many teams dirties a page of each of the
/// audit log's four team indexes per team: near a thousand pages, so at the default every
/// commit also ran a checkpoint, and every page was written twice. At 8,192 (32 MB) the
/// pages written again and again between checkpoints are copied back once.
const SQLITE_WAL_PAGES: &str = "8192";

impl Store {
    /// Connects to `url` (`sqlite://path?mode=rwc` or `postgres://...`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store> {
        let state = Arc::new(DatabaseState::default());
        let released = state.clone();
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(max_connections)
            .min_connections(1)
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(leases::ACQUIRE_WAIT)
            // Ping a pooled connection only when it sat idle long enough to have been dropped
            // by the server or a proxy: a ping on every acquire doubled the round trips of
            // every query (and on SQLite each round trip is a wake-up of its worker thread).
            .test_before_acquire_if_idle_for(Duration::from_secs(30))
            .sqlx_logging(false)
            // A saturated pool is logged once per episode (`state.rs`), not once
            // per slow acquire as sqlx does by default.
            .map_sqlx_postgres_pool_opts(|pool| pool.acquire_slow_level(log::LevelFilter::Debug))
            .map_sqlx_sqlite_pool_opts(move |pool| {
                let released = released.clone();
                pool.acquire_slow_level(log::LevelFilter::Debug)
                    .after_connect(|conn, _| Box::pin(stable_plans(conn)))
                    .after_release(move |conn, _| {
                        let released = released.clone();
                        Box::pin(async move { outside_transaction(conn, &released).await })
                    })
            })
            .map_sqlx_sqlite_opts(|opts| {
                opts.create_if_missing(true)
                    .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    // FULL: a commit is on disk before it is acknowledged, power loss
                    // included (NORMAL in WAL mode keeps it only across a process crash).
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Full)
                    .busy_timeout(SQLITE_WRITE_WAIT)
                    .foreign_keys(true)
                    .row_buffer_size(SQLITE_ROW_BUFFER)
                    // A statement that changes many rows in a transaction keeps the pages
                    // it would restore if it failed (its statement journal) in memory, not
                    // in a temporary file written as it goes: a group commit's audit
                    // insert touched hundreds of pages.
                    .pragma("temp_store", "memory")
                    .pragma("wal_autocheckpoint", SQLITE_WAL_PAGES)
            });
        let db = state.noted(Database::connect(options).await)?;
        let db = leases::Pooled::new(db, max_connections);
        let postgres = db.get_database_backend() == DatabaseBackend::Postgres;
        let notifier = postgres.then(|| notify_replicas(db.clone()));
        Ok(Store {
            db: Noted::new(db, state),
            appended: Arc::new(Notify::new()),
            notifier,
            url: url.into(),
            audit_reads: Arc::new(audit::AuditReads::new(max_connections)),
            write_gate: (!postgres).then(|| WriteGate {
                turn: Arc::new(tokio::sync::Mutex::new(())),
                wait: SQLITE_WRITE_WAIT,
            }),
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
            return self.noted(migration::Migrator::up(self.db.raw().connection(), None).await);
        }
        // Session-level advisory locks belong to one connection: hold one for the whole run.
        let tx = self.begin_noted().await?;
        tx.execute_raw(Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_advisory_xact_lock($1)",
            [MIGRATION_LOCK_KEY.into()],
        ))
        .await?;
        self.noted(migration::Migrator::up(tx.raw(), None).await)?;
        tx.commit().await?;
        Ok(())
    }

    /// Starts a write transaction (on SQLite: `BEGIN IMMEDIATE`).
    pub async fn begin_write(&self) -> Result<Tx> {
        let turn = match &self.write_gate {
            Some(gate) => Some(
                tokio::time::timeout(gate.wait, gate.turn.clone().lock_owned())
                    .await
                    .map_err(|_| StoreError::Busy("the database is busy with other writes"))?,
            ),
            None => None,
        };
        let pooled = self.db.raw();
        let begun = if self.is_postgres() {
            pooled.begin().await
        } else {
            let options = TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            };
            let begin = pooled.connection().begin_with_options(options);
            pooled.beginning(begin).await
        };
        let inner = Noted::new(self.noted(begun)?, self.state().clone());
        Ok(Tx {
            inner,
            postgres: self.is_postgres(),
            appended_events: false,
            audit_xid_assigned: false,
            audits_after: None,
            appended: self.appended.clone(),
            notifier: self.notifier.clone(),
            _turn: turn,
        })
    }

    /// Starts a read-only transaction whose reads all see one snapshot (a listing and the
    /// event cursor as of that listing).
    pub async fn begin_snapshot(&self) -> Result<Tx> {
        let pooled = self.db.raw();
        let begun = if self.is_postgres() {
            let begin = pooled
                .connection()
                .begin_with_config(Some(IsolationLevel::RepeatableRead), None);
            pooled.beginning(begin).await
        } else {
            pooled.begin().await
        };
        let inner = Noted::new(self.noted(begun)?, self.state().clone());
        Ok(Tx {
            inner,
            postgres: self.is_postgres(),
            appended_events: false,
            audit_xid_assigned: false,
            audits_after: None,
            appended: self.appended.clone(),
            notifier: None,
            _turn: None,
        })
    }

    fn conn(&self) -> &Noted<leases::Pooled> {
        &self.db
    }

    /// What this store knows of its database's condition.
    pub fn state(&self) -> &Arc<DatabaseState> {
        self.db.state()
    }

    /// A plain transaction whose errors are noted.
    async fn begin_noted(&self) -> Result<Noted<DatabaseTransaction>> {
        let tx = self.noted(self.db.raw().begin().await)?;
        Ok(Noted::new(tx, self.state().clone()))
    }

    /// Passes on the result of a call made outside [`Noted`] (a begin, a migration), noting
    /// its error.
    fn noted<T>(&self, result: std::result::Result<T, sea_orm::DbErr>) -> Result<T> {
        Ok(self.state().noted(result)?)
    }

    /// Whether the database answers a trivial query now.
    pub async fn ping(&self) -> Result<()> {
        self.db
            .execute_unprepared("SELECT 1")
            .await
            .map_err(StoreError::from)?;
        self.state().note_reachable();
        Ok(())
    }

    /// Connections open in the pool, and how many of them are idle.
    pub fn pool_stats(&self) -> (u32, usize) {
        self.db.raw().stats()
    }

    /// Closes the pool.
    pub async fn close(self) {
        self.db.raw().release_all();
        let _ = self.db.into_raw().connection().clone().close().await;
    }
}

/// A transaction. Dropped without [`Tx::commit`], it rolls back.
pub struct Tx {
    inner: Noted<DatabaseTransaction>,
    postgres: bool,
    appended_events: bool,
    /// PostgreSQL: this transaction's id is assigned, as it must be before its first audit
    /// record gets a sequence number (`audit_chain.rs`: the sealer's bound).
    audit_xid_assigned: bool,
    /// SQLite: the newest audit sequence number before this transaction's first record; its
    /// commit writes the pending rows of the records past it (`audit_pending.rs`).
    audits_after: Option<i64>,
    appended: Arc<Notify>,
    /// PostgreSQL: where to ask for the NOTIFY after a commit that appended events.
    notifier: Option<mpsc::Sender<()>>,
    /// SQLite: this write's turn ([`Store::write_gate`]), given back when the transaction
    /// ends (the last field: dropped after the transaction).
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

/// A limit checked by counting rows: the count and the insert it allows must not be passed
/// by a concurrent writer of the same limit.
#[derive(Clone, Copy, Debug)]
pub enum Cap {
    /// A team's webhook subscriptions.
    WebhookSubscriptions,
    /// One person's pending OAuth authorizations.
    PendingAuthorizations,
}

/// The first key of the two-key advisory locks of caps ("ihcp"): locks with two `int4`
/// keys never conflict with the one-`bigint` locks of the outbox and the migrations.
const CAP_LOCK_CLASS: i32 = 0x6968_6370;

impl Tx {
    fn conn(&self) -> &Noted<DatabaseTransaction> {
        &self.inner
    }

    /// Serializes, until this transaction ends, the writers that count toward one cap of
    /// `team` (and `subject`, for a per-person cap): called before the count, so that the
    /// count and the insert it allows are one step. PostgreSQL (READ COMMITTED) would
    /// otherwise let two writers count the same rows and both insert: a transaction-scoped
    /// advisory lock on the cap's key. SQLite's write transactions already run one at a
    /// time ([`Store::begin_write`] takes the write lock first).
    pub async fn lock_cap(&self, cap: Cap, team: &str, subject: &str) -> Result<()> {
        if !self.postgres {
            return Ok(());
        }
        // Length-prefixed, so no two (team, subject) pairs share a key text; a hash
        // collision only makes two caps wait for each other.
        let key = format!("{cap:?}:{}:{team}:{subject}", team.len());
        self.inner
            .execute_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                [CAP_LOCK_CLASS.into(), key.into()],
            ))
            .await?;
        Ok(())
    }

    /// Whether this transaction holds, until it ends, the lease `key` (a transaction-scoped
    /// advisory lock on PostgreSQL, not waited for: false when another holds it). On SQLite
    /// the write lock every write transaction takes is the lease: always true.
    /// Takes the transaction-scoped advisory lock `key` shared (PostgreSQL), until this
    /// transaction ends.
    pub(super) async fn lock_shared(&self, key: i64) -> Result<()> {
        self.inner
            .execute_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT pg_advisory_xact_lock_shared($1)",
                [key.into()],
            ))
            .await?;
        Ok(())
    }

    pub(super) async fn try_lease(&self, key: i64) -> Result<bool> {
        if !self.postgres {
            return Ok(true);
        }
        let row = self
            .inner
            .query_one_raw(Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT pg_try_advisory_xact_lock($1) AS locked",
                [key.into()],
            ))
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<bool>("", "locked")?,
            None => false,
        })
    }

    pub async fn commit(self) -> Result<()> {
        if let Some(after) = self.audits_after {
            self.write_pending(after).await?;
        }
        let state = self.inner.state().clone();
        self.inner.commit().await?;
        state.note_write_committed();
        if self.appended_events {
            announce_appended(&self.appended, self.notifier.as_ref());
        }
        Ok(())
    }
}

/// After a commit that appended events: wakes this replica's tailer, and asks for the
/// NOTIFY that wakes the others (PostgreSQL).
fn announce_appended(appended: &Notify, notifier: Option<&mpsc::Sender<()>>) {
    appended.notify_one();
    if let Some(notifier) = notifier {
        // Full: a NOTIFY is already queued, and it is sent after this commit.
        let _ = notifier.try_send(());
    }
}

/// The sizes of multi-row inserts, largest first, ending in 1: rows are written in
/// statements of these sizes only, so that each statement is prepared once per connection
/// and reused however many rows a write has (a statement of any other size would be parsed
/// and planned again).
const INSERT_SIZES: [usize; 5] = [256, 64, 16, 4, 1];

/// How many of `left` rows the next insert writes: the largest of [`INSERT_SIZES`] that fits.
fn insert_size(left: usize) -> usize {
    INSERT_SIZES
        .iter()
        .copied()
        .find(|size| *size <= left)
        .unwrap_or(1)
}

/// Starts the task that wakes every replica's LISTEN connection after commits that appended
/// events, and returns its queue. Outside the transactions (notifying transactions commit one
/// at a time, under a lock of the whole cluster) and off the callers' path: commits made while
/// one NOTIFY is on its way share the next one (the queue holds one), so a burst of writes
/// costs a few NOTIFYs, not one each. A lost notification costs a replica at most its poll
/// interval. The task ends when the last store clone is gone.
fn notify_replicas(db: leases::Pooled) -> mpsc::Sender<()> {
    let (sender, mut wanted) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        while wanted.recv().await.is_some() {
            let notified = db
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
    });
    sender
}

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
    state: &DatabaseState,
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
    if !clean && state.storage_full() {
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

    /// Every SQLite connection runs with the settings the store gives it: commits on disk
    /// before they are acknowledged (WAL, `synchronous=FULL`), statement journals in memory,
    /// and the WAL copied back at [`SQLITE_WAL_PAGES`].
    #[tokio::test]
    async fn every_sqlite_connection_runs_with_the_stores_settings() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("s.db").display());
        let store = Store::connect(&url, 2).await.expect("store");
        store.migrate().await.expect("migrate");
        let expected = ["wal", "2", "2", SQLITE_WAL_PAGES];
        // A statement on a kept connection, and one in a transaction (from sqlx's pool)
        // while the first connection is busy in another.
        assert_eq!(sqlite_settings(&store.db).await, expected);
        let write = store.begin_write().await.expect("a write");
        let read = store.begin_noted().await.expect("a second connection");
        assert_eq!(sqlite_settings(&read).await, expected);
        drop(read);
        drop(write);
    }

    /// What a SQLite connection says of its journal mode, synchronous level, temp store and
    /// WAL checkpoint size, in that order.
    async fn sqlite_settings(conn: &impl ConnectionTrait) -> Vec<String> {
        let mut found = Vec::new();
        for pragma in [
            "journal_mode",
            "synchronous",
            "temp_store",
            "wal_autocheckpoint",
        ] {
            let statement =
                Statement::from_string(DatabaseBackend::Sqlite, format!("PRAGMA {pragma}"));
            let row = conn.query_one_raw(statement).await.expect(pragma);
            let row = row.expect("a row");
            let value = row
                .try_get_by_index::<String>(0)
                .or_else(|_| row.try_get_by_index::<i64>(0).map(|v| v.to_string()))
                .expect(pragma);
            found.push(value);
        }
        found
    }

    /// SQLite writes on one server take turns: a second write begins the moment the first
    /// commits, and one that waits longer than the busy timeout gives up as busy (nothing
    /// written) instead of waiting for ever.
    #[tokio::test]
    async fn sqlite_writes_take_turns_and_give_up_as_busy_after_the_wait() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("w.db").display());
        let mut store = Store::connect(&url, 4).await.expect("store");
        store.migrate().await.expect("migrate");
        if let Some(gate) = &mut store.write_gate {
            gate.wait = Duration::from_millis(300);
        }
        let first = store.begin_write().await.expect("the first write");
        let second = tokio::spawn({
            let store = store.clone();
            async move { store.begin_write().await.map(|_| ()) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !second.is_finished(),
            "began while the first write was open"
        );
        first.commit().await.expect("commit");
        second
            .await
            .expect("join")
            .expect("began once the first committed");

        let held = store.begin_write().await.expect("a write held open");
        let started = std::time::Instant::now();
        let refused = store.begin_write().await;
        assert!(
            matches!(refused, Err(StoreError::Busy(_))),
            "{:?}",
            refused.err()
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        drop(held);
        store
            .begin_write()
            .await
            .expect("a write after the held one ended");
    }

    /// Each store keeps its own view of its database: one whose database went away is
    /// unavailable, another in the same process is not, and a statement that reaches the
    /// database again clears it.
    #[tokio::test]
    async fn a_fault_is_noted_by_the_store_that_met_it_only() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = |name: &str| format!("sqlite://{}?mode=rwc", dir.path().join(name).display());
        let failing = Store::connect(&url("a.db"), 2).await.expect("store a");
        let other = Store::connect(&url("b.db"), 2).await.expect("store b");
        failing.ping().await.expect("a answers");
        failing.db.raw().release_all();
        failing
            .db
            .raw()
            .connection()
            .clone()
            .close()
            .await
            .expect("close a's pool");
        let err = failing.ping().await.expect_err("a's pool is closed");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(failing.state().unavailable());
        assert!(!other.state().unavailable());
        other.ping().await.expect("b still answers");
        assert!(!other.state().unavailable());
    }
}
