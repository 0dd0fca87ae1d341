//! What a [`Store`](super::Store) knows of its database's condition, so that an outage, a
//! saturated pool or a full disk is logged once when it starts and once when it ends, not
//! once per call. Each store has its own: two stores in one process (two servers a test
//! starts, a replica and the tool that rotates keys) never see each other's faults.
//!
//! Every statement a store runs goes through [`Noted`], the connection wrapper that tells
//! the store's state about each error; [`StoreError`](super::StoreError)'s conversion only
//! classifies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sea_orm::{ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, Statement};

use super::error::{Fault, fault_of, pool_timed_out};

/// One store's view of its database.
#[derive(Debug, Default)]
pub struct DatabaseState {
    storage_full: AtomicBool,
    unavailable: AtomicBool,
    pool_exhausted: AtomicBool,
}

impl DatabaseState {
    /// Passes `result` on, noting its error if it has one.
    pub(super) fn noted<T>(&self, result: Result<T, DbErr>) -> Result<T, DbErr> {
        if let Err(err) = &result {
            self.note_error(err);
        }
        result
    }

    fn note_error(&self, err: &DbErr) {
        match fault_of(err) {
            Fault::Unavailable if pool_timed_out(err) => self.note_pool_exhausted(),
            Fault::Unavailable => self.note_unavailable(err),
            Fault::StorageFull => self.note_storage_full(err),
            Fault::Other => {}
        }
    }

    fn note_pool_exhausted(&self) {
        if self.pool_exhausted.swap(true, Ordering::AcqRel) {
            tracing::debug!("the connection pool is still saturated");
        } else {
            tracing::warn!(
                "the connection pool is saturated: calls that wait longer than 5 s for a connection answer UNAVAILABLE (INTEGRATION_HUB_DB_MAX_CONNECTIONS)"
            );
        }
    }

    fn note_storage_full(&self, err: &DbErr) {
        if !self.storage_full.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                error = %err,
                "the database's storage is full (or read-only): writes are refused with RESOURCE_EXHAUSTED until space is freed; reads and watch streams go on"
            );
        }
    }

    fn note_unavailable(&self, err: &DbErr) {
        if self.unavailable.swap(true, Ordering::AcqRel) {
            tracing::debug!(error = %err, "database still unavailable");
        } else {
            tracing::warn!(
                error = %err,
                "database unavailable: calls answer UNAVAILABLE until it is back"
            );
        }
    }

    /// A write committed: storage has room again.
    pub(super) fn note_write_committed(&self) {
        if self.storage_full.swap(false, Ordering::AcqRel) {
            tracing::info!("the database's storage accepts writes again");
        }
        self.note_reachable();
    }

    /// A statement reached the database.
    pub(super) fn note_reachable(&self) {
        if self.pool_exhausted.swap(false, Ordering::AcqRel) {
            tracing::info!("the connection pool hands out connections in time again");
        }
        if self.unavailable.swap(false, Ordering::AcqRel) {
            tracing::info!("database reachable again");
        }
    }

    /// Whether the last write failed for lack of space.
    pub fn storage_full(&self) -> bool {
        self.storage_full.load(Ordering::Acquire)
    }

    /// Whether the last statement failed to reach the database.
    pub fn unavailable(&self) -> bool {
        self.unavailable.load(Ordering::Acquire)
    }
}

/// A connection or transaction whose errors are noted in its store's [`DatabaseState`].
pub(super) struct Noted<C> {
    conn: C,
    state: Arc<DatabaseState>,
}

impl<C> Noted<C> {
    pub(super) fn new(conn: C, state: Arc<DatabaseState>) -> Noted<C> {
        Noted { conn, state }
    }

    /// The connection itself, for what is not a statement (begin, close, the pool).
    pub(super) fn raw(&self) -> &C {
        &self.conn
    }

    pub(super) fn into_raw(self) -> C {
        self.conn
    }

    pub(super) fn state(&self) -> &Arc<DatabaseState> {
        &self.state
    }
}

impl Noted<sea_orm::DatabaseTransaction> {
    pub(super) async fn commit(self) -> Result<(), DbErr> {
        self.state.noted(self.conn.commit().await)
    }
}

impl<C: Clone> Clone for Noted<C> {
    fn clone(&self) -> Self {
        Noted {
            conn: self.conn.clone(),
            state: self.state.clone(),
        }
    }
}

#[async_trait::async_trait]
impl<C: ConnectionTrait + Send> ConnectionTrait for Noted<C> {
    fn get_database_backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.state.noted(self.conn.execute_raw(stmt).await)
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.state.noted(self.conn.execute_unprepared(sql).await)
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.state.noted(self.conn.query_one_raw(stmt).await)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.state.noted(self.conn.query_all_raw(stmt).await)
    }

    fn support_returning(&self) -> bool {
        self.conn.support_returning()
    }
}
