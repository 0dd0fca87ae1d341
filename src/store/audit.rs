//! The audit log table: appended inside the transaction of the change it records, listed
//! newest first.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::audit_event;
use super::{Result, Store, Tx};

pub use audit_event::Model as AuditRow;

/// An audit record to append; the store assigns its sequence number.
#[derive(Clone, Debug)]
pub struct NewAudit {
    pub id: String,
    pub team: String,
    pub actor: String,
    pub actor_team: String,
    pub role: String,
    pub action: String,
    pub resource: String,
    pub outcome: String,
    pub reason: Option<String>,
    pub request_id: String,
    pub time: i64,
}

/// Which audit records of a team a listing selects.
#[derive(Clone, Debug, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor: Option<String>,
    /// Only records at or after this time (microseconds).
    pub start_time: Option<i64>,
    /// Only records before this time (microseconds).
    pub end_time: Option<i64>,
}

fn active(record: NewAudit) -> audit_event::ActiveModel {
    use sea_orm::ActiveValue::{NotSet, Set};
    audit_event::ActiveModel {
        seq: NotSet,
        id: Set(record.id),
        team: Set(record.team),
        actor: Set(record.actor),
        actor_team: Set(record.actor_team),
        role: Set(record.role),
        action: Set(record.action),
        resource: Set(record.resource),
        outcome: Set(record.outcome),
        reason: Set(record.reason),
        request_id: Set(record.request_id),
        time: Set(record.time),
    }
}

impl Tx {
    /// Appends one audit record; it commits or rolls back with the change it records.
    pub async fn append_audit(&self, record: NewAudit) -> Result<()> {
        audit_event::Entity::insert(active(record))
            .exec_without_returning(self.conn())
            .await?;
        Ok(())
    }

    /// Appends several audit records in one statement, in order (a group commit).
    pub async fn append_audits(&self, records: Vec<NewAudit>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        audit_event::Entity::insert_many(records.into_iter().map(active))
            .exec_without_returning(self.conn())
            .await?;
        Ok(())
    }
}

impl Store {
    /// A page of a team's audit records matching `filter`, newest first, strictly before
    /// sequence number `before` when given.
    pub async fn list_audit(
        &self,
        team: &str,
        filter: &AuditFilter,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AuditRow>> {
        let mut query = audit_event::Entity::find().filter(audit_event::Column::Team.eq(team));
        if let Some(action) = &filter.action {
            query = query.filter(audit_event::Column::Action.eq(action.as_str()));
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
        Ok(query
            .order_by_desc(audit_event::Column::Seq)
            .limit(limit)
            .all(self.conn())
            .await?)
    }
}
