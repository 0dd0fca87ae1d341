//! The records each commit leaves for the audit chain's sealer (`audit_pending`): one row per
//! team and commit, written in that commit, naming its records by sequence number with their
//! key version and MAC, so that the sealer chains them without reading the records back, and
//! deletes the row in the transaction that gives them their places. On PostgreSQL the one
//! statement that appends a batch of records writes their pending rows too (`outbox.rs`:
//! several writers at once, so only that statement knows their numbers); on SQLite, one
//! writer at a time, the commit does, for every record numbered past the newest before the
//! transaction's first one.

use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};

use super::audit_chain::{SEQ_CHUNK, audits_numbered};
use super::audit_runs::{PendingRecord, decode_pending};
use super::entities::audit_pending;
use super::sets::is_one_of_numbers;
use super::{AuditRow, Result, Tx};

/// One pending entry (`seq:key-version:mac-in-hex`) of a record selected as `seq`, `key_id`,
/// `mac`, as each backend writes it (read back by `audit_runs::decode_pending`).
pub(super) const PG_ENTRY: &str =
    "seq::text || ':' || COALESCE(key_id, 0)::text || ':' || COALESCE(encode(mac, 'hex'), '')";
const SQLITE_ENTRY: &str =
    "seq || ':' || COALESCE(key_id, 0) || ':' || COALESCE(lower(hex(mac)), '')";

/// The records one commit appended for one team, not chained yet (`audit_pending`).
#[derive(Clone, Debug)]
pub struct Pending {
    /// Its row's key.
    pub id: i64,
    pub team: String,
    /// In sequence order.
    pub records: Vec<PendingRecord>,
}

impl Tx {
    /// The oldest pending rows after row `after` (`audit_pending`: the records commits left
    /// for the sealer), up to `limit` of them, in the order they were written; and whether
    /// more may follow.
    pub async fn pending_audits(&self, after: i64, limit: u64) -> Result<(Vec<Pending>, bool)> {
        let rows = audit_pending::Entity::find()
            .filter(audit_pending::Column::Id.gt(after))
            .order_by_asc(audit_pending::Column::Id)
            .limit(limit)
            .all(self.conn())
            .await?;
        let more = rows.len() as u64 == limit;
        let pending = rows
            .into_iter()
            .map(|row| Pending {
                id: row.id,
                records: decode_pending(&row.entries),
                team: row.team,
            })
            .collect();
        Ok((pending, more))
    }

    /// Deletes the pending rows `ids` (chained): how many there were.
    pub async fn take_pending(&self, ids: &[i64]) -> Result<u64> {
        let mut taken = 0;
        for ids in ids.chunks(SEQ_CHUNK) {
            taken += audit_pending::Entity::delete_many()
                .filter(is_one_of_numbers(
                    self.inner.get_database_backend(),
                    audit_pending::Column::Id,
                    ids.iter().copied(),
                ))
                .exec(self.conn())
                .await?
                .rows_affected;
        }
        Ok(taken)
    }

    /// The smallest sequence number a pending row names (none when none is left).
    pub async fn oldest_pending(&self) -> Result<Option<i64>> {
        Ok(audit_pending::Entity::find()
            .select_only()
            .column_as(audit_pending::Column::FirstSeq.min(), "first")
            .into_tuple::<Option<i64>>()
            .one(self.conn())
            .await?
            .flatten())
    }

    /// The records numbered `seqs`, whole (what the sealer turns into webhook events).
    pub async fn audits_numbered(&self, seqs: &[i64]) -> Result<Vec<AuditRow>> {
        audits_numbered(self.conn(), seqs).await
    }

    /// SQLite: notes the newest sequence number before this transaction's first audit record,
    /// so that its commit writes the pending rows of the records it appended (one writer at a
    /// time: every record numbered past it is this transaction's).
    pub(super) async fn note_audit_appends(&mut self) -> Result<()> {
        if self.postgres || self.audits_after.is_some() {
            return Ok(());
        }
        let newest = self
            .inner
            .query_one_raw(Statement::from_string(
                DatabaseBackend::Sqlite,
                "SELECT COALESCE(MAX(seq), 0) AS newest FROM audit_events",
            ))
            .await?
            .map(|row| row.try_get::<i64>("", "newest"))
            .transpose()?
            .unwrap_or(0);
        self.audits_after = Some(newest);
        Ok(())
    }

    /// SQLite: writes the pending rows of the records appended since
    /// [`Tx::note_audit_appends`], one per team (the last statement before the commit).
    pub(super) async fn write_pending(&self, after: i64) -> Result<()> {
        let sql = format!(
            "INSERT INTO audit_pending (team, first_seq, entries) \
             SELECT team, MIN(seq), group_concat({SQLITE_ENTRY}, ',') \
             FROM (SELECT seq, team, key_id, mac FROM audit_events WHERE seq > ? ORDER BY seq) \
             GROUP BY team"
        );
        self.inner
            .execute_raw(Statement::from_sql_and_values(
                DatabaseBackend::Sqlite,
                sql,
                [after.into()],
            ))
            .await?;
        Ok(())
    }
}
