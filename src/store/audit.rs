//! The audit log table: appended inside the transaction of the change it records, listed
//! newest first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use tokio::sync::Semaphore;

use super::entities::{audit_event, new_row};
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
        self.note_audit_appends().await?;
        audit_event::Entity::insert(new_row::<audit_event::ActiveModel>(record))
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(audit_event::Column::Id)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(self.conn())
            .await?;
        Ok(())
    }

    /// Appends several audit records, in order. On PostgreSQL they go through the statement
    /// of a change (`append_change`): one statement, which assigns the transaction's id and
    /// writes their pending rows too. On SQLite, in statements of the fixed insert sizes; the
    /// commit writes their pending rows (`audit_pending.rs`).
    pub async fn append_audits(&mut self, records: Vec<AuditRow>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.postgres {
            return self.append_change_pg(Vec::new(), records).await;
        }
        self.note_audit_appends().await?;
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            let rows = super::insert_size(records.len());
            let chunk = records
                .by_ref()
                .take(rows)
                .map(new_row::<audit_event::ActiveModel>);
            audit_event::Entity::insert_many(chunk)
                .exec_without_returning(self.conn())
                .await?;
        }
        Ok(())
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
