//! The audit log table: appended inside the transaction of the change it records, listed
//! newest first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::Semaphore;

use super::audit_pending::appended_of;
use super::entities::{audit_event, inserted_columns, new_row, rows_as_json};
use super::{AuditAction, Result, Store, StoreError, Tx};

pub use audit_event::Model as AuditRow;

/// Which audit records of a team a listing selects.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub action: Option<AuditAction>,
    pub actor: Option<String>,
    /// Only records at or after this time (microseconds).
    pub start_time: Option<i64>,
    /// Only records before this time (microseconds).
    pub end_time: Option<i64>,
}

impl Tx {
    /// Appends one audit record (its `seq` is the database's); it commits or rolls back with
    /// the change it records.
    pub async fn append_audit(&mut self, record: AuditRow) -> Result<()> {
        self.append_audits(vec![record]).await
    }

    /// Appends one audit record unless one with its id exists (an aggregated read's, which
    /// replicas may write at once).
    pub async fn append_audit_once(&mut self, record: AuditRow) -> Result<()> {
        if self.postgres {
            return self.append_pg(Vec::new(), vec![record], true).await;
        }
        self.append_sqlite(vec![record], true).await
    }

    /// Appends several audit records, in order, in one statement. On PostgreSQL they go
    /// through the statement of a change (`append_change`), which assigns the transaction's
    /// id and writes their pending rows in the same statement; on SQLite the statement
    /// returns each record's number, for the pending rows the commit writes
    /// (`audit_pending.rs`).
    pub async fn append_audits(&mut self, records: Vec<AuditRow>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.postgres {
            return self.append_change_pg(Vec::new(), records).await;
        }
        self.append_sqlite(records, false).await
    }

    /// SQLite: appends `records` in one statement of one text (prepared once), whatever
    /// their number: `INSERT INTO audit_events (..) SELECT json_extract(value, '$.<column>'),
    /// .. FROM json_each(?)` over the records as one JSON parameter (`entities::rows_as_json`),
    /// returning each record's `seq` and `id`; with `once`, a record whose id is stored
    /// already is left out.
    async fn append_sqlite(&mut self, records: Vec<AuditRow>, once: bool) -> Result<()> {
        use sea_orm::{ColumnTrait, ColumnType, IdenStatic, Iterable};
        let mut appended = appended_of(&records);
        let json = rows_as_json(
            records
                .into_iter()
                .map(new_row::<audit_event::ActiveModel>)
                .collect(),
        )?;
        let columns = inserted_columns::<audit_event::Entity>();
        let values: Vec<String> = audit_event::Column::iter()
            .filter(|column| columns.contains(&column.as_str()))
            .map(|column| {
                let value = format!("json_extract(value, '$.{}')", column.as_str());
                match column.def().get_column_type() {
                    // `\x` and hex digits, as `rows_as_json` writes bytes.
                    ColumnType::Binary(_) | ColumnType::VarBinary(_) | ColumnType::Blob => {
                        format!("unhex(substr({value}, 3))")
                    }
                    _ => value,
                }
            })
            .collect();
        // A SELECT before an upsert clause needs a WHERE (SQLite's parser).
        let once = if once {
            " WHERE true ON CONFLICT (id) DO NOTHING"
        } else {
            ""
        };
        let sql = format!(
            "INSERT INTO audit_events ({}) SELECT {} FROM json_each(?){once} RETURNING seq, id",
            columns.join(", "),
            values.join(", ")
        );
        let statement = sea_orm::Statement::from_sql_and_values(
            sea_orm::DatabaseBackend::Sqlite,
            sql,
            [json.into()],
        );
        let rows = self.inner.query_all_raw(statement).await?;
        self.note_appended(rows, &mut appended)
    }
}

/// Audit listings one team may run at once on a replica.
pub const AUDIT_LISTINGS_PER_TEAM: usize = 2;
/// The longest one audit listing may run on PostgreSQL.
pub const AUDIT_STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Audit listings in progress on this replica: at most [`AUDIT_LISTINGS_PER_TEAM`] per team,
/// and at most a quarter of the connection pool together, so that a burst of listings over
/// a long log never takes the connections other teams' calls need.
pub(super) struct AuditReads {
    pool_share: Arc<Semaphore>,
    teams: Mutex<HashMap<String, usize>>,
}

/// One listing's place among [`AuditReads`], given back when dropped.
pub struct AuditListing {
    reads: Arc<AuditReads>,
    team: String,
    _share: tokio::sync::OwnedSemaphorePermit,
}

impl AuditReads {
    pub(super) fn new(max_connections: u32) -> AuditReads {
        AuditReads {
            pool_share: Arc::new(Semaphore::new((max_connections as usize / 4).max(1))),
            teams: Mutex::new(HashMap::new()),
        }
    }

    fn teams(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        // Counts change in single steps: a panic elsewhere leaves them whole.
        self.teams.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start(self: &Arc<Self>, team: &str) -> Result<AuditListing> {
        let mut teams = self.teams();
        if teams.get(team).copied().unwrap_or(0) >= AUDIT_LISTINGS_PER_TEAM {
            return Err(StoreError::Busy(
                "too many audit listings of this team run at once",
            ));
        }
        let share =
            self.pool_share.clone().try_acquire_owned().map_err(|_| {
                StoreError::Busy("too many audit listings run on this server at once")
            })?;
        *teams.entry(team.to_owned()).or_default() += 1;
        Ok(AuditListing {
            reads: self.clone(),
            team: team.to_owned(),
            _share: share,
        })
    }
}

impl Drop for AuditListing {
    fn drop(&mut self) {
        let mut teams = self.reads.teams();
        if let Some(running) = teams.get_mut(&self.team) {
            *running -= 1;
            if *running == 0 {
                teams.remove(&self.team);
            }
        }
    }
}

impl Store {
    /// A place for one caller's audit listing of `team`, or [`StoreError::Busy`] when the
    /// team or this replica already runs as many as they may ([`AuditReads`]).
    pub fn start_audit_listing(&self, team: &str) -> Result<AuditListing> {
        self.audit_reads.start(team)
    }

    /// Up to `limit` records (of `team`, or of every team) with `since <= time < until` after
    /// sequence number `after`, oldest first: a page of an export.
    pub async fn audit_between(
        &self,
        team: Option<&str>,
        (since, until): (i64, i64),
        after: i64,
        limit: u64,
    ) -> Result<Vec<AuditRow>> {
        let mut query = audit_event::Entity::find()
            .filter(audit_event::Column::Seq.gt(after))
            .filter(audit_event::Column::Time.gte(since))
            .filter(audit_event::Column::Time.lt(until));
        if let Some(team) = team {
            query = query.filter(audit_event::Column::Team.eq(team));
        }
        let rows = query
            .order_by_asc(audit_event::Column::Seq)
            .limit(limit)
            .all(self.conn())
            .await?;
        super::audit_chain::with_places(self.conn(), rows).await
    }

    /// A page of a team's audit records matching `filter`, newest first, strictly before
    /// sequence number `before` when given. On PostgreSQL it ends after
    /// [`AUDIT_STATEMENT_TIMEOUT`].
    pub async fn list_audit(
        &self,
        team: &str,
        filter: &AuditFilter,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AuditRow>> {
        let mut query = audit_event::Entity::find().filter(audit_event::Column::Team.eq(team));
        if let Some(action) = &filter.action {
            query = query.filter(audit_event::Column::Action.eq(*action));
        }
        if let Some(actor) = &filter.actor {
            query = query.filter(audit_event::Column::Actor.eq(actor.as_str()));
        }
        if let Some(start) = filter.start_time {
            query = query.filter(audit_event::Column::Time.gte(start));
        }
        if let Some(end) = filter.end_time {
            query = query.filter(audit_event::Column::Time.lt(end));
        }
        if let Some(before) = before {
            query = query.filter(audit_event::Column::Seq.lt(before));
        }
        let query = query.order_by_desc(audit_event::Column::Seq).limit(limit);
        if !self.is_postgres() {
            return Ok(query.all(self.conn()).await?);
        }
        let tx = self.begin_noted().await?;
        tx.execute_unprepared(&format!(
            "SET LOCAL statement_timeout = {}",
            AUDIT_STATEMENT_TIMEOUT.as_millis()
        ))
        .await?;
        let rows = query.all(&tx).await?;
        tx.commit().await?;
        Ok(rows)
    }
}
