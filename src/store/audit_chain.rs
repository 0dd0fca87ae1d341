//! The audit chain's rows: each team's head and checkpoint (`audit_chains`), the records'
//! places in their team's chain, the starting checkpoint of records written before the chain
//! (`audit_chain_state`), and the keeper's lease. What the MACs are is the domain's
//! (`domain::audit_chain`); this module only reads and writes them.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
};

use super::entities::{audit_chain, audit_event};
use super::{AuditRow, Result, Store, Tx};

pub use audit_chain::Model as ChainHead;

/// Advisory lock key: one replica seals and prunes the audit chain at a time ("ihub-aud").
const CHAIN_LOCK_KEY: i64 = 0x6968_7562_2d61_7564;
/// Records whose chain places one statement writes.
const SEAL_CHUNK: usize = 200;

impl Store {
    /// A write transaction of the chain's keeper (the sealer and the pruner), or `None` when
    /// another replica holds the keeper's lease now (PostgreSQL: a transaction-scoped
    /// advisory lock; SQLite: the write lock every write transaction takes).
    pub async fn begin_chain_keeper(&self) -> Result<Option<Tx>> {
        let tx = self.begin_write().await?;
        Ok(tx.try_lease(CHAIN_LOCK_KEY).await?.then_some(tx))
    }

    /// Every team with audit records or a chain head.
    pub async fn audit_teams(&self) -> Result<Vec<String>> {
        let mut teams: Vec<String> = audit_event::Entity::find()
            .select_only()
            .column(audit_event::Column::Team)
            .distinct()
            .into_tuple()
            .all(self.conn())
            .await?;
        let heads: Vec<String> = audit_chain::Entity::find()
            .select_only()
            .column(audit_chain::Column::Team)
            .into_tuple()
            .all(self.conn())
            .await?;
        teams.extend(heads);
        teams.sort();
        teams.dedup();
        Ok(teams)
    }
}

/// A team's chained records after position `after`, in chain order.
fn chained(team: &str, after: i64, limit: u64) -> sea_orm::Select<audit_event::Entity> {
    audit_event::Entity::find()
        .filter(audit_event::Column::Team.eq(team))
        .filter(audit_event::Column::ChainPos.gt(after))
        .order_by_asc(audit_event::Column::ChainPos)
        .order_by_asc(audit_event::Column::Seq)
        .limit(limit)
}

impl Store {
    /// A team's chained records after position `after`, in chain order (what a watch of its
    /// audit records delivers: places are given in one transaction each, so a reader past a
    /// place never misses a record sealed later).
    pub async fn chained_audits(
        &self,
        team: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<AuditRow>> {
        Ok(chained(team, after, limit).all(self.conn()).await?)
    }

    /// Whether any record waits for its place in its chain.
    pub async fn has_unsealed_audits(&self) -> Result<bool> {
        Ok(audit_event::Entity::find()
            .select_only()
            .column(audit_event::Column::Seq)
            .filter(audit_event::Column::ChainPos.is_null())
            .filter(audit_event::Column::Mac.is_not_null())
            .limit(1)
            .into_tuple::<i64>()
            .one(self.conn())
            .await?
            .is_some())
    }

    /// The last place of `team`'s chain that was pruned (0 when none was).
    pub async fn chain_checkpoint(&self, team: &str) -> Result<i64> {
        Ok(audit_chain::Entity::find_by_id(team.to_owned())
            .one(self.conn())
            .await?
            .map(|head| head.checkpoint_pos)
            .unwrap_or(0))
    }
}

impl Tx {
    /// The starting checkpoint: records at or below this sequence number were written before
    /// the chain existed.
    pub async fn audit_legacy_through(&self) -> Result<i64> {
        let row = self
            .inner
            .query_one_raw(Statement::from_string(
                self.inner.get_database_backend(),
                "SELECT legacy_through FROM audit_chain_state WHERE id = 1",
            ))
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<i64>("", "legacy_through")?,
            None => 0,
        })
    }

    /// The oldest records not yet given a place in their chain (those with a MAC: records
    /// without one are never chained), in sequence order.
    pub async fn unsealed_audits(&self, limit: u64) -> Result<Vec<AuditRow>> {
        Ok(audit_event::Entity::find()
            .filter(audit_event::Column::ChainPos.is_null())
            .filter(audit_event::Column::Mac.is_not_null())
            .order_by_asc(audit_event::Column::Seq)
            .limit(limit)
            .all(self.conn())
            .await?)
    }

    /// Every team whose chain holds places not pruned.
    pub async fn chain_teams(&self) -> Result<Vec<String>> {
        Ok(audit_chain::Entity::find()
            .select_only()
            .column(audit_chain::Column::Team)
            .filter(
                Expr::col(audit_chain::Column::CheckpointPos)
                    .lt(Expr::col(audit_chain::Column::Pos)),
            )
            .order_by_asc(audit_chain::Column::Team)
            .into_tuple()
            .all(self.conn())
            .await?)
    }

    /// The chain heads of `teams`, by team.
    pub async fn chain_heads(&self, teams: &[&str]) -> Result<HashMap<String, ChainHead>> {
        if teams.is_empty() {
            return Ok(HashMap::new());
        }
        Ok(audit_chain::Entity::find()
            .filter(audit_chain::Column::Team.is_in(teams.iter().copied()))
            .all(self.conn())
            .await?
            .into_iter()
            .map(|head| (head.team.clone(), head))
            .collect())
    }

    /// Gives records their places: `(seq, chain_pos, chain_mac)` each, one statement a chunk
    /// joined to its places by primary key (`UPDATE .. FROM (VALUES ..)`: a `CASE` per
    /// column cost every row a comparison per place).
    pub async fn seal_audits(&self, places: &[(i64, i64, Option<Vec<u8>>)]) -> Result<()> {
        use sea_orm::sea_query::{Alias, Query, TableRef, ValueTuple};
        let input = Alias::new("places");
        let column = |n: u8| Expr::col((input.clone(), Alias::new(format!("column{n}"))));
        for chunk in places.chunks(SEAL_CHUNK) {
            let rows: Vec<ValueTuple> = chunk
                .iter()
                .map(|(seq, place, mac)| {
                    ValueTuple::Three((*seq).into(), (*place).into(), mac.clone().into())
                })
                .collect();
            let update = Query::update()
                .table(audit_event::Entity)
                .value(audit_event::Column::ChainPos, column(2))
                .value(audit_event::Column::ChainMac, column(3))
                .from(TableRef::ValuesList(rows, input.clone().into()))
                .and_where(Expr::col((audit_event::Entity, audit_event::Column::Seq)).eq(column(1)))
                .to_owned();
            let statement = self.conn().get_database_backend().build(&update);
            self.conn().execute_raw(statement).await?;
        }
        Ok(())
    }

    /// Writes a team's chain head (new or moved).
    pub async fn put_chain_head(&self, head: ChainHead) -> Result<()> {
        use sea_orm::IntoActiveModel;
        audit_chain::Entity::insert(head.into_active_model())
            .on_conflict(
                OnConflict::column(audit_chain::Column::Team)
                    .update_columns([
                        audit_chain::Column::Pos,
                        audit_chain::Column::ChainMac,
                        audit_chain::Column::CheckpointPos,
                        audit_chain::Column::CheckpointMac,
                        audit_chain::Column::KeyId,
                        audit_chain::Column::Mac,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(self.conn())
            .await?;
        Ok(())
    }

    /// A team's chained records after position `after`, in chain order.
    pub async fn chained_audits(
        &self,
        team: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<AuditRow>> {
        Ok(chained(team, after, limit).all(self.conn()).await?)
    }

    /// A team's records outside its chain (not sealed yet, refused by the sealer, or
    /// without a MAC) after sequence number `after`, in sequence order.
    pub async fn unchained_audits(
        &self,
        team: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<AuditRow>> {
        Ok(audit_event::Entity::find()
            .filter(audit_event::Column::Team.eq(team))
            .filter(audit_event::Column::Seq.gt(after))
            .filter(
                audit_event::Column::ChainPos
                    .is_null()
                    .or(audit_event::Column::ChainPos.lte(0)),
            )
            .order_by_asc(audit_event::Column::Seq)
            .limit(limit)
            .all(self.conn())
            .await?)
    }

    /// Deletes a team's chained records at or below position `through` (a prefix: the
    /// pruner's).
    pub async fn delete_chained_audits(&self, team: &str, through: i64) -> Result<u64> {
        Ok(audit_event::Entity::delete_many()
            .filter(audit_event::Column::Team.eq(team))
            .filter(audit_event::Column::ChainPos.gt(0))
            .filter(audit_event::Column::ChainPos.lte(through))
            .exec(self.conn())
            .await?
            .rows_affected)
    }

    /// Deletes up to `limit` records from before the chain (at or below `legacy_through`,
    /// without a MAC) older than `cutoff`.
    pub async fn delete_legacy_audits(
        &self,
        legacy_through: i64,
        cutoff: i64,
        limit: u64,
    ) -> Result<u64> {
        let seqs: Vec<i64> = audit_event::Entity::find()
            .select_only()
            .column(audit_event::Column::Seq)
            .filter(audit_event::Column::Seq.lte(legacy_through))
            .filter(audit_event::Column::Mac.is_null())
            .filter(audit_event::Column::Time.lt(cutoff))
            .order_by_asc(audit_event::Column::Seq)
            .limit(limit)
            .into_tuple()
            .all(self.conn())
            .await?;
        if seqs.is_empty() {
            return Ok(0);
        }
        Ok(audit_event::Entity::delete_many()
            .filter(audit_event::Column::Seq.is_in(seqs))
            .exec(self.conn())
            .await?
            .rows_affected)
    }
}
