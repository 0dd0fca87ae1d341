//! The records each commit leaves for the audit chain's sealer (`audit_pending`): one row per
//! team and commit, written in that commit, naming its records by sequence number with their
//! key version and MAC, so that the sealer chains them without reading the records back, and
//! deletes the row in the transaction that gives them their places. On PostgreSQL the one
//! statement that appends a batch of records writes their pending rows too (`outbox.rs`:
//! several writers at once, so only that statement knows their numbers); on SQLite every
//! append returns its records' numbers, the transaction keeps them, and its commit writes
//! the pending rows first.

use std::collections::{BTreeMap, HashMap};

use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::audit_chain::SEQ_CHUNK;
use super::audit_runs::{PendingRecord, decode_pending, encode_pending};
use super::entities::{audit_event, audit_pending};
use super::{AuditRow, Result, Tx};

/// One pending entry of a record selected as `seq`, `key_id`, `mac`, as PostgreSQL writes it
/// in the statement that appends the records (`outbox.rs`): the same text as
/// `audit_runs::encode_pending`, which SQLite's appends use.
pub(super) const PG_ENTRY: &str =
    "seq::text || ':' || COALESCE(key_id, 0)::text || ':' || COALESCE(encode(mac, 'hex'), '')";

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
                .filter(audit_pending::Column::Id.is_in(ids.iter().copied()))
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
        let mut rows = Vec::with_capacity(seqs.len());
        for seqs in seqs.chunks(SEQ_CHUNK) {
            rows.extend(
                audit_event::Entity::find()
                    .filter(audit_event::Column::Seq.is_in(seqs.iter().copied()))
                    .all(self.conn())
                    .await?,
            );
        }
        Ok(rows)
    }

    /// Notes the records an append statement wrote (`rows`: the `seq` and `id` it returned;
    /// `appended`: what each record, by id, is to its pending row), for the commit to name
    /// in their pending rows. A record the statement left out returns no row.
    pub(super) fn note_appended(
        &mut self,
        rows: Vec<sea_orm::QueryResult>,
        appended: &mut Appended,
    ) -> Result<()> {
        for row in rows {
            let seq: i64 = row.try_get("", "seq")?;
            let id: String = row.try_get("", "id")?;
            if let Some((team, key_id, mac)) = appended.remove(&id) {
                self.appended_audits
                    .push((team, PendingRecord { seq, key_id, mac }));
            }
        }
        Ok(())
    }

    /// Writes the pending rows of the records this transaction appended, one per team (the
    /// last statement before its commit).
    pub(super) async fn write_pending(&mut self) -> Result<()> {
        let mut teams: BTreeMap<String, Vec<PendingRecord>> = BTreeMap::new();
        for (team, record) in std::mem::take(&mut self.appended_audits) {
            teams.entry(team).or_default().push(record);
        }
        let rows = teams.into_iter().map(|(team, mut records)| {
            records.sort_by_key(|record| record.seq);
            audit_pending::ActiveModel {
                team: Set(team),
                first_seq: Set(records.first().map(|r| r.seq).unwrap_or_default()),
                entries: Set(encode_pending(&records)),
                ..Default::default()
            }
        });
        audit_pending::Entity::insert_many(rows)
            .exec_without_returning(self.conn())
            .await?;
        Ok(())
    }
}

/// What each record of an append is to its pending row (its team, key version and MAC), by
/// its id.
pub(super) type Appended = HashMap<String, (String, Option<i32>, Option<Vec<u8>>)>;

/// What each of `records` is to its pending row, by its id.
pub(super) fn appended_of(
    records: &[AuditRow],
) -> Appended {
    records
        .iter()
        .map(|r| (r.id.clone(), (r.team.clone(), r.key_id, r.mac.clone())))
        .collect()
}
