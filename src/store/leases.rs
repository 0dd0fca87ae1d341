//! Statements outside a transaction run on connections this store keeps between statements
//! ([`Pooled`]), instead of taking one from sqlx's pool and giving it back each time.
//!
//! Why: sqlx tests every connection given back to its pool before it may be taken again.
//! On PostgreSQL that is one more round trip to the server after every statement; on SQLite,
//! one more hand-off to the connection's worker thread and back (two thread wake-ups). An
//! uncached read is one statement, so that test was a large part of its cost.
//!
//! How: up to as many connections as the pool holds are taken from sqlx's pool and kept
//! here. A statement takes an idle one; when none is idle and all are lent, it waits here
//! (never longer than sqlx's pool would let it wait), and a statement that finishes hands
//! its connection to the next in line.
//!
//! What keeps this as safe as sqlx's own test:
//! - A connection comes back here only from a statement that finished without error. One
//!   whose statement failed, or was cancelled (its caller gone mid-statement), goes back to
//!   sqlx's pool, which tests it and closes it if it is broken.
//! - A connection idle here longer than [`IDLE_TEST_AFTER`] goes back to sqlx's pool rather
//!   than being used (it tests it), as sqlx's pool tests one idle that long.
//! - A connection kept longer than [`KEPT_AT_MOST`] in all goes back to sqlx's pool, which
//!   applies its lifetime limit.
//! - Transactions never run here; they take connections from sqlx's pool as before, and are
//!   never starved by the connections kept here: a transaction that begins, or still waits,
//!   while sqlx's pool has none to give makes this give an idle one back, and while one
//!   waits, every
//!   connection a statement here finishes with goes back to sqlx's pool
//!   ([`Pooled::beginning`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{self, AssertSqlSafe, Postgres, Sqlite};
use sea_orm::{
    ConnAcquireErr, ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, ExecResult,
    QueryResult, RuntimeErr, Statement, Values,
};
use sea_query_sqlx::SqlxValues;
use tokio::sync::oneshot;

/// A connection idle here this long is tested (by sqlx's pool) before it is used again.
const IDLE_TEST_AFTER: Duration = Duration::from_secs(30);
/// A connection is kept here at most this long, then given back to sqlx's pool.
const KEPT_AT_MOST: Duration = Duration::from_secs(300);
/// How often a transaction waiting for sqlx's pool checks whether a connection kept here
/// should go back to it.
const RECHECK: Duration = Duration::from_millis(20);
/// The longest a statement waits for a connection (as long as sqlx's pool lets one wait).
pub(super) const ACQUIRE_WAIT: Duration = Duration::from_secs(5);

/// A connection taken from sqlx's pool.
enum Conn {
    Sqlite(PoolConnection<Sqlite>),
    Postgres(PoolConnection<Postgres>),
}

struct Kept {
    conn: Conn,
    taken: Instant,
    idle_since: Instant,
}

#[derive(Default)]
struct Held {
    idle: Vec<Kept>,
    /// Statements waiting here, first come first served: each is handed a finished
    /// statement's connection, or (`None`) the right to take one from sqlx's pool.
    waiters: VecDeque<oneshot::Sender<Option<Kept>>>,
    /// Connections taken from sqlx's pool and not given back: idle here or lent.
    owned: usize,
    closed: bool,
    /// Transactions waiting for sqlx's pool: while any waits, every connection a statement
    /// finishes with goes back to sqlx's pool (for them).
    begins_waiting: usize,
}

/// The connection pool with the connections kept between statements; see the module doc.
#[derive(Clone)]
pub(super) struct Pooled {
    db: DatabaseConnection,
    kept: Arc<Mutex<Held>>,
    keep: usize,
    max_connections: u32,
}

impl Pooled {
    pub(super) fn new(db: DatabaseConnection, max_connections: u32) -> Pooled {
        Pooled {
            db,
            kept: Arc::default(),
            keep: (max_connections as usize).max(1),
            max_connections,
        }
    }

    /// The pool itself, for transactions, migrations and its statistics.
    pub(super) fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Begins a plain transaction on sqlx's pool ([`Pooled::beginning`]).
    pub(super) async fn begin(&self) -> Result<sea_orm::DatabaseTransaction, DbErr> {
        use sea_orm::TransactionTrait;
        self.beginning(self.db.begin()).await
    }

    /// Runs `begin` (a transaction taking its connection from sqlx's pool) so that the
    /// connections kept here never starve it: while it waits, finished statements give their
    /// connections back to sqlx's pool, and if that pool has no connection to give and can
    /// open none, an idle one kept here goes back to it now.
    pub(super) async fn beginning<T>(&self, begin: impl Future<Output = T>) -> T {
        struct Waiting<'a>(&'a Pooled);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.lock().begins_waiting -= 1;
            }
        }
        self.lock().begins_waiting += 1;
        let _waiting = Waiting(self);
        let mut begin = std::pin::pin!(begin);
        loop {
            // Checked again while it waits: another transaction may have taken the
            // connection sqlx's pool had idle a moment ago.
            self.give_one_back_if_saturated();
            if let Ok(begun) = tokio::time::timeout(RECHECK, begin.as_mut()).await {
                return begun;
            }
        }
    }

    /// Gives an idle kept connection back to sqlx's pool if that pool has none to lend and
    /// may open no other.
    fn give_one_back_if_saturated(&self) {
        let one = {
            let mut kept = self.lock();
            let one = if self.pool_saturated() {
                kept.idle.pop()
            } else {
                None
            };
            kept.owned -= usize::from(one.is_some());
            one
        };
        drop(one);
    }

    /// Whether sqlx's pool has no idle connection and may open no other.
    fn pool_saturated(&self) -> bool {
        let (size, idle) = self.sqlx_pool();
        idle == 0 && size >= self.max_connections
    }

    /// sqlx's pool: the connections it has open, and how many of them are idle there.
    fn sqlx_pool(&self) -> (u32, usize) {
        match self.db.get_database_backend() {
            DatabaseBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => {
                let pool = self.db.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
        }
    }

    /// Connections open, and how many of them are idle (in sqlx's pool, or kept here).
    pub(super) fn stats(&self) -> (u32, usize) {
        let (size, idle) = self.sqlx_pool();
        (size, idle + self.lock().idle.len())
    }

    /// Gives every idle connection back and keeps none from now on (the pool is closing: it
    /// waits for every connection to come back).
    pub(super) fn release_all(&self) {
        let (idle, waiters) = {
            let mut kept = self.lock();
            kept.closed = true;
            let idle = std::mem::take(&mut kept.idle);
            kept.owned -= idle.len();
            (idle, std::mem::take(&mut kept.waiters))
        };
        drop(idle);
        // Their waits end: each then finds the pool closed.
        drop(waiters);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        // The counts stay consistent whatever panicked while holding the lock.
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection fit for use, a new one from sqlx's pool while fewer than the pool's
    /// size are kept, or, in turn, one a statement finishes with.
    async fn take(&self) -> Result<Lease<'_>, DbErr> {
        let now = Instant::now();
        let mut stale = Vec::new();
        let next = {
            let mut kept = self.lock();
            if kept.closed {
                return Err(DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed));
            }
            // Nobody passes those already waiting.
            let found = if kept.waiters.is_empty() {
                loop {
                    match kept.idle.pop() {
                        Some(k) if now.duration_since(k.idle_since) >= IDLE_TEST_AFTER => {
                            stale.push(k)
                        }
                        other => break other,
                    }
                }
            } else {
                None
            };
            kept.owned -= stale.len();
            match found {
                Some(k) => Next::Lend(k),
                None if kept.waiters.is_empty() && kept.owned < self.keep => {
                    kept.owned += 1;
                    Next::Acquire
                }
                None => {
                    let (tx, rx) = oneshot::channel();
                    kept.waiters.push_back(tx);
                    Next::Wait(Turn {
                        home: self,
                        rx: Some(rx),
                    })
                }
            }
        };
        // Outside the lock: given back to sqlx's pool, which tests them.
        drop(stale);
        match next {
            Next::Lend(kept) => Ok(self.lend(kept)),
            Next::Acquire => self.acquire_counted().await,
            Next::Wait(mut turn) => match turn.wait().await {
                Some(Some(kept)) => Ok(self.lend(kept)),
                Some(None) => self.acquire_counted().await,
                None if self.lock().closed => {
                    Err(DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed))
                }
                None => Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
            },
        }
    }

    /// A connection from sqlx's pool, already counted in [`Held::owned`].
    async fn acquire_counted(&self) -> Result<Lease<'_>, DbErr> {
        let taken = Instant::now();
        // Counted from here: a failure (or a cancelled wait) uncounts it.
        let mut pending = Lease {
            home: self,
            kept: None,
            counted: true,
        };
        let conn = self.acquire().await?;
        pending.kept = Some(Kept {
            conn,
            taken,
            idle_since: taken,
        });
        Ok(pending)
    }

    fn lend(&self, kept: Kept) -> Lease<'_> {
        Lease {
            home: self,
            kept: Some(kept),
            counted: true,
        }
    }

    async fn acquire(&self) -> Result<Conn, DbErr> {
        let conn = match self.db.get_database_backend() {
            DatabaseBackend::Postgres => self
                .db
                .get_postgres_connection_pool()
                .acquire()
                .await
                .map(Conn::Postgres),
            _ => self
                .db
                .get_sqlite_connection_pool()
                .acquire()
                .await
                .map(Conn::Sqlite),
        };
        // As SeaORM reports a connection it could not get.
        conn.map_err(|err| match err {
            sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
            sqlx::Error::PoolClosed => DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed),
            err => DbErr::Conn(RuntimeErr::SqlxError(Arc::new(err))),
        })
    }

    /// A lease ended: its connection (if it got one) goes to the first waiting statement or
    /// is kept idle when `finished`, else it goes back to sqlx's pool and the first waiting
    /// statement may take one from there instead.
    fn give_back(&self, kept: Option<Kept>, finished: bool) {
        let now = Instant::now();
        let back = {
            let mut state = self.lock();
            match kept {
                Some(mut k)
                    if finished
                        && !state.closed
                        && state.begins_waiting == 0
                        && now.duration_since(k.taken) < KEPT_AT_MOST =>
                {
                    k.idle_since = now;
                    if let Some(Some(k)) = state.hand_over(Some(k)) {
                        state.idle.push(k);
                    }
                    None
                }
                other => {
                    if state.closed || state.hand_over(None).is_some() {
                        state.owned -= 1;
                    }
                    other
                }
            }
        };
        // Outside the lock: given back to sqlx's pool, which tests it.
        drop(back);
    }
}

impl Held {
    /// Hands `what` (a connection, or the right to take one from sqlx's pool) to the first
    /// statement still waiting; gives it back when none is.
    fn hand_over(&mut self, mut what: Option<Kept>) -> Option<Option<Kept>> {
        while let Some(waiter) = self.waiters.pop_front() {
            match waiter.send(what) {
                Ok(()) => return None,
                // That one stopped waiting (cancelled, or out of time).
                Err(back) => what = back,
            }
        }
        Some(what)
    }
}

/// What a statement does to get a connection.
enum Next<'a> {
    Lend(Kept),
    Acquire,
    Wait(Turn<'a>),
}

/// A statement's place in line. Dropped with something handed to it but not taken (its
/// statement cancelled, or out of time at that moment), it passes that on.
struct Turn<'a> {
    home: &'a Pooled,
    rx: Option<oneshot::Receiver<Option<Kept>>>,
}

impl Turn<'_> {
    /// What was handed over (see [`Held::waiters`]), or `None` when nothing came in
    /// [`ACQUIRE_WAIT`] or the pool closed.
    async fn wait(&mut self) -> Option<Option<Kept>> {
        let rx = self.rx.as_mut()?;
        let got = tokio::time::timeout(ACQUIRE_WAIT, rx).await;
        match got {
            Ok(Ok(what)) => {
                self.rx = None;
                Some(what)
            }
            // Out of time: whatever is handed over from now on goes to the next in line.
            Err(_) => self.take_late(),
            Ok(Err(_)) => None,
        }
    }

    /// Closes the line's end of this turn and takes what was handed over before.
    fn take_late(&mut self) -> Option<Option<Kept>> {
        let mut rx = self.rx.take()?;
        rx.close();
        rx.try_recv().ok()
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(what) = self.take_late() {
            // Handed over, never used: counted in `owned`, so given back as a lease is.
            self.home.give_back(what, true);
        }
    }
}

/// A connection lent to one statement. Dropped without [`Lease::finished`] (the statement
/// failed or was cancelled), it goes back to sqlx's pool, which tests it.
struct Lease<'a> {
    home: &'a Pooled,
    kept: Option<Kept>,
    /// Counted in [`Held::owned`] until given back.
    counted: bool,
}

impl Lease<'_> {
    fn conn(&mut self) -> &mut Conn {
        &mut self
            .kept
            .as_mut()
            .expect("a lease holds its connection")
            .conn
    }

    /// The statement finished: the connection may serve the next one.
    fn finished(mut self) {
        self.counted = false;
        self.home.give_back(self.kept.take(), true);
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.home.give_back(self.kept.take(), false);
        }
    }
}

/// As SeaORM reports a statement's error.
fn query_err(err: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)))
}

fn exec_err(err: sqlx::Error) -> DbErr {
    DbErr::Exec(RuntimeErr::SqlxError(Arc::new(err)))
}

/// The statement's SQL and values as sqlx takes them (moved, not copied).
fn parts(stmt: Statement) -> (AssertSqlSafe<String>, SqlxValues) {
    (
        AssertSqlSafe(stmt.sql),
        SqlxValues(stmt.values.unwrap_or(Values(Vec::new()))),
    )
}

/// `$body` with `$c` the lease's connection, whichever database it is on (sqlx's types
/// differ by database; the code does not).
macro_rules! on_conn {
    ($lease:expr, |$c:ident| $body:expr) => {
        match $lease.conn() {
            Conn::Sqlite($c) => $body,
            Conn::Postgres($c) => $body,
        }
    };
}

#[async_trait::async_trait]
impl ConnectionTrait for Pooled {
    fn get_database_backend(&self) -> DatabaseBackend {
        self.db.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        let mut lease = self.take().await?;
        let (sql, values) = parts(stmt);
        let done: ExecResult = on_conn!(lease, |c| sqlx::query_with(sql, values)
            .execute(&mut **c)
            .await
            .map_err(exec_err)?
            .into());
        lease.finished();
        Ok(done)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let mut lease = self.take().await?;
        let sql = AssertSqlSafe(sql.to_owned());
        let done: ExecResult = on_conn!(lease, |c| sqlx::raw_sql(sql)
            .execute(&mut **c)
            .await
            .map_err(exec_err)?
            .into());
        lease.finished();
        Ok(done)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        let mut lease = self.take().await?;
        let (sql, values) = parts(stmt);
        let row: Option<QueryResult> = on_conn!(lease, |c| sqlx::query_with(sql, values)
            .fetch_optional(&mut **c)
            .await
            .map_err(query_err)?
            .map(Into::into));
        lease.finished();
        Ok(row)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        let mut lease = self.take().await?;
        let (sql, values) = parts(stmt);
        let rows: Vec<QueryResult> = on_conn!(lease, |c| sqlx::query_with(sql, values)
            .fetch_all(&mut **c)
            .await
            .map_err(query_err)?
            .into_iter()
            .map(Into::into)
            .collect());
        lease.finished();
        Ok(rows)
    }

    fn support_returning(&self) -> bool {
        self.db.support_returning()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::error::pool_timed_out;

    /// A statement that finds every connection lent waits in line for at most
    /// [`ACQUIRE_WAIT`], then fails as a pool out of time (what the store notes as a saturated
    /// pool); the line it leaves still hands the next finished connection to the statement
    /// waiting after it.
    #[tokio::test]
    async fn a_statement_out_of_time_in_line_fails_as_a_pool_timeout_and_the_line_goes_on() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("l.db").display());
        let store = Store::connect(&url, 1).await.expect("store");
        let pooled = store.db.raw().clone();
        let held = pooled.take().await.expect("the only connection");

        let started = Instant::now();
        let late = pooled.take().await.map(|_| ());
        let waited = started.elapsed();
        let err = late.expect_err("no connection came free");
        assert!(
            matches!(err, DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
            "{err:?}"
        );
        assert!(pool_timed_out(&err));
        assert!(waited >= ACQUIRE_WAIT, "gave up after {waited:?}");

        let next = tokio::spawn({
            let pooled = pooled.clone();
            async move { pooled.take().await.map(Lease::finished) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!next.is_finished(), "took a connection that was lent");
        held.finished();
        tokio::time::timeout(Duration::from_secs(2), next)
            .await
            .expect("handed the connection in time")
            .expect("join")
            .expect("the connection the held statement finished with");
        assert_eq!(pooled.lock().owned, 1, "one connection, counted once");
    }
}
