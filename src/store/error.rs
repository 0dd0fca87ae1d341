//! Storage errors: what went wrong, told apart by the driver's error codes. Each store's
//! view of its database's condition (an outage or a full disk, logged when it starts and
//! when it ends) is `state.rs`, which classifies with [`fault_of`] too.

use sea_orm::{DbErr, SqlErr};

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
    /// A read that costs the database much (listing the audit log) was refused: too many
    /// run at once for its team or for this replica's share of the pool, or it ran past its
    /// statement timeout. Nothing was changed; the caller may retry or narrow the read.
    #[error("{0}")]
    Busy(&'static str),
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
        if postgres_code(&err).as_deref() == Some(QUERY_CANCELED) {
            return StoreError::Busy("the read ran past its statement timeout");
        }
        match fault_of(&err) {
            Fault::Unavailable => StoreError::Unavailable(err),
            Fault::StorageFull => StoreError::StorageFull(err),
            Fault::Other => StoreError::Db(err),
        }
    }
}

/// Whether no pooled connection came free in time (the pool is saturated, the database
/// itself may be fine).
pub(super) fn pool_timed_out(err: &DbErr) -> bool {
    use sea_orm::RuntimeErr;
    use sea_orm::sqlx::Error as Sqlx;
    match err {
        DbErr::ConnectionAcquire(sea_orm::ConnAcquireErr::Timeout) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(e.as_ref(), Sqlx::PoolTimedOut)
        }
        _ => false,
    }
}

/// How a database error is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    Unavailable,
    StorageFull,
    Other,
}

/// Classifies by the driver's error, never by message text where a code exists.
pub(super) fn fault_of(err: &DbErr) -> Fault {
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

/// PostgreSQL's query_canceled: a statement timeout (or an operator's cancel).
const QUERY_CANCELED: &str = "57014";

/// The SQLSTATE of a PostgreSQL error, if it is one.
fn postgres_code(err: &DbErr) -> Option<String> {
    use sea_orm::RuntimeErr;
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = err
    else {
        return None;
    };
    // SQLite's codes are numbers of at most four digits: no SQLSTATE is one.
    e.as_database_error()?.code().map(|code| code.into_owned())
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

#[cfg(test)]
mod tests {
    use super::*;

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
