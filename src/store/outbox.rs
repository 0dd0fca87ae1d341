//! The outbox (`events`): appended in the same transaction as the change it describes, read
//! in sequence order, pruned past the retention (a prefix at a time, behind a watermark), and
//! a `LISTEN` that wakes this replica when another one appends.
//!
//! On PostgreSQL, sequence numbers are handed out at insert time but become visible at commit,
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

use std::sync::Arc;
use std::time::Duration;

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, FromQueryResult, QueryFilter,
    QueryOrder, QuerySelect, Statement,
};
use tokio::sync::Notify;

use super::audit_pending::PG_ENTRY;
use super::entities::{
    audit_event, event, inserted_columns, inserted_values, new_row, rows_as_json,
};
use super::{AuditRow, EventRow, Result, Store, Tx};

/// Advisory lock key serializing outbox appends on PostgreSQL ("ihub-evt").
pub(super) const OUTBOX_LOCK_KEY: i64 = 0x6968_7562_2d65_7674;
/// Advisory lock key: one replica prunes the event log at a time ("ihub-prn").
const PRUNE_LOCK_KEY: i64 = 0x6968_7562_2d70_726e;
/// The channel that tells other replicas an append committed.
pub const EVENTS_CHANNEL: &str = "integration_hub_events";

/// The newest event sequence number (see `max_event_seq`), as a column.
pub(super) const MAX_EVENT_SEQ: &str = "COALESCE((SELECT MAX(seq) FROM events), \
     (SELECT pruned_through FROM event_log_state WHERE id = 1), 0)";

fn max_seq(row: Option<sea_orm::QueryResult>) -> Result<i64> {
    Ok(match row {
        Some(row) => row.try_get::<i64>("", "max_seq")?,
        None => 0,
    })
}

#[derive(FromQueryResult)]
struct MaxSeq {
    max_seq: Option<i64>,
}

impl Store {
    /// Woken after every commit that appended events, in this process.
    pub fn appended(&self) -> Arc<Notify> {
        self.appended.clone()
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
        if !tx.try_lease(PRUNE_LOCK_KEY).await? {
            return Ok(0);
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
}

impl Tx {
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

    /// Appends events to the outbox, in order (their `seq` is the database's). The first
    /// append of a transaction takes the outbox lock on PostgreSQL (see the module doc); it
    /// is held until commit.
    pub async fn append_events(&mut self, rows: Vec<EventRow>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        if self.postgres && !self.appended_events {
            // Held until this transaction ends: a reader's barrier waits for it.
            self.lock_shared(OUTBOX_LOCK_KEY).await?;
        }
        self.appended_events = true;
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let size = super::insert_size(rows.len());
            let chunk = rows.by_ref().take(size).map(new_row::<event::ActiveModel>);
            event::Entity::insert_many(chunk)
                .exec_without_returning(&self.inner)
                .await?;
        }
        Ok(())
    }
}

impl Tx {
    /// Appends a change's success records and its events, in order: the end of every change
    /// before its commit. On PostgreSQL one statement takes the audit log's append lock and
    /// writes the records, takes the outbox lock (see the module doc) and writes the events,
    /// so the locks are held for that statement and the commit only, and a change costs one
    /// round trip here whatever it holds (up to the largest insert size of each; more take
    /// further statements).
    pub async fn append_change(
        &mut self,
        events: Vec<EventRow>,
        records: Vec<AuditRow>,
    ) -> Result<()> {
        if !self.postgres {
            self.append_audits(records).await?;
            return self.append_events(events).await;
        }
        self.append_change_pg(events, records).await
    }

    /// [`Tx::append_change`] on PostgreSQL, also what [`Tx::append_audits`] runs there.
    pub(super) async fn append_change_pg(
        &mut self,
        events: Vec<EventRow>,
        records: Vec<AuditRow>,
    ) -> Result<()> {
        self.append_pg(events, records, false).await
    }

    /// Appends events and audit records on PostgreSQL; with `once`, a record whose id is
    /// stored already is left out (an aggregated read's, which replicas may write at once).
    pub(super) async fn append_pg(
        &mut self,
        events: Vec<EventRow>,
        records: Vec<AuditRow>,
        once: bool,
    ) -> Result<()> {
        let mut events = events.into_iter().peekable();
        let mut records = records.into_iter().peekable();
        while events.peek().is_some() || records.peek().is_some() {
            // Records all at once (one JSON parameter); events in the fixed insert sizes.
            let (n_events, n_records) = (super::insert_size(events.len()), records.len());
            let events_now: Vec<EventRow> = events.by_ref().take(n_events).collect();
            let records_now: Vec<AuditRow> = records.by_ref().take(n_records).collect();
            let lock_events = !self.appended_events && !events_now.is_empty();
            let guard_audits = !self.audit_xid_assigned && !records_now.is_empty();
            self.inner
                .execute_raw(change_statement(
                    Guards {
                        events: lock_events,
                        audits: guard_audits,
                    },
                    events_now,
                    records_now,
                    once,
                )?)
                .await?;
            self.appended_events |= lock_events;
            self.audit_xid_assigned |= guard_audits;
        }
        Ok(())
    }
}

/// What a change's statement takes first: the outbox's shared lock (see the module doc) and
/// the audit log's transaction id (`audit_chain.rs`).
#[derive(Clone, Copy, Debug)]
struct Guards {
    events: bool,
    audits: bool,
}

/// `INSERT INTO <table> (..) SELECT .. FROM (VALUES ..) AS input[, <guard>]`: with a guard
/// (the name of a CTE that takes a lock or the transaction's id), every row is read through
/// it, so the guard is taken before any row gets its sequence number.
fn insert_through<A: sea_orm::ActiveModelTrait>(
    rows: Vec<A>,
    guard: Option<&str>,
) -> std::result::Result<sea_orm::sea_query::InsertStatement, sea_orm::DbErr> {
    use sea_orm::sea_query::{Alias, Expr, Query, ValueTuple};
    let columns = inserted_columns::<A::Entity>();
    let rows: Vec<ValueTuple> = rows
        .into_iter()
        .map(|row| ValueTuple::Many(inserted_values(row)))
        .collect();
    let mut input = Query::select();
    for n in 1..=columns.len() {
        input.expr(Expr::col((
            Alias::new("input"),
            Alias::new(format!("column{n}")),
        )));
    }
    input.from_values(rows, Alias::new("input"));
    insert_select(A::Entity::default(), &columns, input, guard)
}

/// `INSERT INTO <table> (<columns>) <input>[, <guard>]`: the guard (a CTE's name) joined to
/// the input's FROM, so that every row is read through it.
fn insert_select<E: EntityTrait>(
    table: E,
    columns: &[&'static str],
    mut input: sea_orm::sea_query::SelectStatement,
    guard: Option<&str>,
) -> std::result::Result<sea_orm::sea_query::InsertStatement, sea_orm::DbErr> {
    use sea_orm::sea_query::{Alias, Query};
    if let Some(guard) = guard {
        input.from(Alias::new(guard));
    }
    let mut insert = Query::insert();
    insert
        .into_table(table)
        .columns(columns.iter().map(|c| Alias::new(*c)));
    insert
        .select_from(input)
        .map_err(|e| sea_orm::DbErr::Custom(format!("an append's insert: {e}")))?;
    Ok(insert)
}

/// `INSERT INTO audit_events (..) SELECT .. FROM json_populate_recordset(NULL::audit_events,
/// $1::json) AS input[, <guard>]`: `records` as one JSON parameter read into the table's own
/// row type (`entities::rows_as_json`), through the guard as in [`insert_through`].
fn records_through(
    records: Vec<AuditRow>,
    guard: Option<&str>,
) -> std::result::Result<sea_orm::sea_query::InsertStatement, sea_orm::DbErr> {
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, Query};
    let columns = inserted_columns::<audit_event::Entity>();
    let json = rows_as_json(
        records
            .into_iter()
            .map(new_row::<audit_event::ActiveModel>)
            .collect(),
    )?;
    let mut input = Query::select();
    for column in &columns {
        input.expr(Expr::col((Alias::new("input"), Alias::new(*column))));
    }
    input.from_function(
        Func::cust("json_populate_recordset")
            .arg(Expr::cust(format!(
                "NULL::{}",
                sea_orm::EntityName::table_name(&audit_event::Entity)
            )))
            .arg(Expr::val(json).cast_as(Alias::new("json"))),
        Alias::new("input"),
    );
    insert_select(audit_event::Entity, &columns, input, guard)
}

/// One statement that appends `records` to the audit log, with their pending rows for the
/// sealer (one per team, `audit_chain.rs`), and `events` to the outbox, each read through its
/// guard when `guards` asks for it (the outbox's shared lock; the audit log's transaction id,
/// `audit_chain.rs`). Either list may be empty, not both. With `once`, a record whose id is
/// stored already is left out (and named by no pending row). The records go in as one JSON
/// parameter, so one statement of one text (prepared once) appends any number of them.
/// Built by sea-query from the entities: `WITH outbox_lock AS (SELECT
/// pg_advisory_xact_lock_shared(..)), audit_xid AS MATERIALIZED (SELECT pg_current_xact_id()
/// AS xid), audited AS (INSERT INTO audit_events .. SELECT .. FROM
/// json_populate_recordset(NULL::audit_events, $1::json) AS input, audit_xid RETURNING seq,
/// team, key_id, mac), pending AS (INSERT INTO audit_pending ..
/// SELECT team, MIN(seq), string_agg(..) FROM audited GROUP BY team) INSERT INTO events (..)
/// SELECT .. FROM (VALUES ..) AS input, outbox_lock` (the pending rows' insert is the
/// statement itself when there are no events).
fn change_statement(
    guards: Guards,
    events: Vec<EventRow>,
    records: Vec<AuditRow>,
    once: bool,
) -> std::result::Result<Statement, sea_orm::DbErr> {
    use sea_orm::sea_query::{
        Alias, CommonTableExpression, Expr, Func, OnConflict, PostgresQueryBuilder, Query,
        WithClause,
    };
    let lock = |name: &str, key: i64| {
        CommonTableExpression::new()
            .query(
                Query::select()
                    .expr(Func::cust("pg_advisory_xact_lock_shared").arg(key))
                    .to_owned(),
            )
            .table_name(Alias::new(name))
            .to_owned()
    };
    let mut with = WithClause::new();
    let mut common = false;
    if guards.events && !events.is_empty() {
        with.cte(lock("outbox_lock", OUTBOX_LOCK_KEY));
        common = true;
    }
    if guards.audits && !records.is_empty() {
        // The transaction's id, given before any record gets its sequence number (see
        // `audit_chain.rs`); materialized, so it is computed though nothing reads it.
        with.cte(
            CommonTableExpression::new()
                .query(
                    Query::select()
                        .expr_as(Func::cust("pg_current_xact_id"), Alias::new("xid"))
                        .to_owned(),
                )
                .materialized(true)
                .table_name(Alias::new("audit_xid"))
                .to_owned(),
        );
        common = true;
    }
    let pending = if records.is_empty() {
        None
    } else {
        let mut audited = records_through(records, guards.audits.then_some("audit_xid"))?;
        if once {
            audited.on_conflict(OnConflict::column(Alias::new("id")).do_nothing().to_owned());
        }
        audited.returning(
            Query::returning().columns(["seq", "team", "key_id", "mac"].map(Alias::new)),
        );
        with.cte(
            CommonTableExpression::new()
                .query(audited)
                .table_name(Alias::new("audited"))
                .to_owned(),
        );
        common = true;
        let mut pending = Query::insert();
        pending
            .into_table(Alias::new("audit_pending"))
            .columns(["team", "first_seq", "entries"].map(Alias::new))
            .select_from(
                Query::select()
                    .column(Alias::new("team"))
                    .expr(Expr::cust("MIN(seq)"))
                    .expr(Expr::cust(format!(
                        "string_agg({PG_ENTRY}, ',' ORDER BY seq)"
                    )))
                    .from(Alias::new("audited"))
                    .group_by_col(Alias::new("team"))
                    .to_owned(),
            )
            .map_err(|e| sea_orm::DbErr::Custom(format!("an append's pending rows: {e}")))?;
        Some(pending)
    };
    let (sql, values) = if events.is_empty() {
        let Some(pending) = pending else {
            return Ok(Statement::from_string(
                DatabaseBackend::Postgres,
                "SELECT 1",
            ));
        };
        pending.with(with).build(PostgresQueryBuilder)
    } else {
        if let Some(pending) = pending {
            with.cte(
                CommonTableExpression::new()
                    .query(pending)
                    .table_name(Alias::new("pending"))
                    .to_owned(),
            );
        }
        let insert = insert_through(
            events
                .into_iter()
                .map(new_row::<event::ActiveModel>)
                .collect(),
            guards.events.then_some("outbox_lock"),
        )?;
        if common {
            insert.with(with).build(PostgresQueryBuilder)
        } else {
            insert.build(PostgresQueryBuilder)
        }
    };
    Ok(Statement::from_sql_and_values(
        DatabaseBackend::Postgres,
        sql,
        values.0,
    ))
}
