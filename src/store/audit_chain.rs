//! The audit chain's rows: each team's head and checkpoint (`audit_chains`), the records'
//! places in their team's chain (`audit_chain_places`, insert-only: one small row per record,
//! so the log's own rows and indexes are never rewritten), the starting checkpoint of records
//! written before the chain and how far the sealer got (`audit_chain_state`), and the keeper's
//! lease. What the MACs are is the domain's (`domain::audit_chain`); this module only reads
//! and writes them.
//!
//! The sealer passes every record at or below `sealed_through` once. On PostgreSQL a
//! sequence number is handed out at insert and becomes visible at commit, so a record could
//! commit below a point the sealer already passed. So every transaction that appends audit
//! records has its transaction id assigned before its first record gets a number
//! ([`Tx::assign_audit_xid`]; a change's statement does it itself), and the sealer's bound
//! ([`Store::audit_seal_bound`]) is the newest number visible in a snapshot taken together
//! with it, used once every transaction running at that snapshot has ended. A number below
//! the bound but not visible was taken by a transaction running then (one that began later
//! got its id, and so its numbers, after the snapshot's newest). Nothing waits for the
//! sealer: appends are never held back, the sealer only seals a little later. A write
//! transaction held open for long on the same database delays sealing (not appends) until
//! it ends, at most [`SEAL_WAIT`] per round.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseBackend, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
};

use super::entities::{audit_chain, audit_chain_place, audit_event};
use super::{AuditRow, Result, Store, Tx};

pub use audit_chain::Model as ChainHead;

/// Advisory lock key: one replica seals and prunes the audit chain at a time ("ihub-aud").
const CHAIN_LOCK_KEY: i64 = 0x6968_7562_2d61_7564;
/// How long one sealing round waits for the write transactions running at its snapshot.
pub const SEAL_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How far the sealer may go ([`Store::audit_seal_bound`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealBound {
    /// Nothing was appended past `sealed_through`.
    Nothing,
    /// Every record up to this sequence number has committed or never will.
    Upto(i64),
    /// PostgreSQL: a write transaction running at the round's snapshot still ran after
    /// [`SEAL_WAIT`]; the next round looks again.
    Waiting,
}
/// Places one statement writes.
const PLACE_CHUNK: usize = 200;

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

    /// The newest audit sequence number below which nothing is in flight, when it is past
    /// `sealed_through` (there is something to seal). On PostgreSQL, the newest number
    /// visible in this statement's snapshot, answered once every transaction running at that
    /// snapshot has ended (see the module doc), or [`SealBound::Waiting`] when one is still
    /// running after [`SEAL_WAIT`] (the next round takes a new snapshot).
    pub async fn audit_seal_bound(&self) -> Result<SealBound> {
        const BOUND: &str = "(SELECT MAX(seq) FROM audit_events) AS max_seq, \
             (SELECT sealed_through FROM audit_chain_state WHERE id = 1) AS sealed_through";
        let postgres = self.is_postgres();
        let statement = if postgres {
            format!("SELECT pg_current_snapshot()::text AS snapshot, {BOUND}")
        } else {
            format!("SELECT {BOUND}")
        };
        let statement = Statement::from_string(self.backend(), statement);
        let Some(row) = self.conn().query_one_raw(statement).await? else {
            return Ok(SealBound::Nothing);
        };
        let max = row.try_get::<Option<i64>>("", "max_seq")?;
        let through = row.try_get::<Option<i64>>("", "sealed_through")?;
        let Some(max) = max.filter(|max| *max > through.unwrap_or(0)) else {
            return Ok(SealBound::Nothing);
        };
        if !postgres {
            // One writer at a time: what is visible is all that was handed out.
            return Ok(SealBound::Upto(max));
        }
        let snapshot = row.try_get::<String>("", "snapshot")?;
        let ended = Statement::from_sql_and_values(
            DatabaseBackend::Postgres,
            "SELECT pg_snapshot_xmin(pg_current_snapshot()) >= pg_snapshot_xmax($1::pg_snapshot) \
             AS ended",
            [snapshot.into()],
        );
        let deadline = tokio::time::Instant::now() + SEAL_WAIT;
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            let row = self.conn().query_one_raw(ended.clone()).await?;
            if row.map(|r| r.try_get::<bool>("", "ended")).transpose()? == Some(true) {
                return Ok(SealBound::Upto(max));
            }
            if tokio::time::Instant::now() + pause > deadline {
                return Ok(SealBound::Waiting);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
    }

    /// A team's chained records after position `after`, in chain order (what a watch of its
    /// audit records delivers: places are given in one transaction each, so a reader past a
    /// place never misses a record sealed later).
    pub async fn chained_audits(
        &self,
        team: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<AuditRow>> {
        Ok(chained(self.conn(), team, after, limit).await?.0)
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

/// A team's chained records at its next `limit` places after position `after`, in chain
/// order (a place whose record is gone is left out: verification names the gap), and the
/// last place read when all `limit` were (more may follow it).
async fn chained(
    conn: &impl ConnectionTrait,
    team: &str,
    after: i64,
    limit: u64,
) -> Result<(Vec<AuditRow>, Option<i64>)> {
    let places = audit_chain_place::Entity::find()
        .filter(audit_chain_place::Column::Team.eq(team))
        .filter(audit_chain_place::Column::Pos.gt(after))
        .order_by_asc(audit_chain_place::Column::Pos)
        .order_by_asc(audit_chain_place::Column::Seq)
        .limit(limit)
        .all(conn)
        .await?;
    if places.is_empty() {
        return Ok((Vec::new(), None));
    }
    let more = places
        .last()
        .filter(|_| places.len() as u64 == limit)
        .map(|last| last.pos);
    let mut rows: HashMap<i64, AuditRow> = audit_event::Entity::find()
        .filter(audit_event::Column::Seq.is_in(places.iter().map(|p| p.seq)))
        .all(conn)
        .await?
        .into_iter()
        .map(|row| (row.seq, row))
        .collect();
    let chained = places
        .into_iter()
        .filter_map(|place| {
            let mut row = rows.remove(&place.seq)?;
            row.chain_pos = Some(place.pos);
            row.chain_mac = place.chain_mac;
            Some(row)
        })
        .collect();
    Ok((chained, more))
}

/// `rows` with their places filled in from `audit_chain_places`.
pub(super) async fn with_places(
    conn: &impl ConnectionTrait,
    mut rows: Vec<AuditRow>,
) -> Result<Vec<AuditRow>> {
    if rows.is_empty() {
        return Ok(rows);
    }
    let mut places: HashMap<i64, audit_chain_place::Model> = audit_chain_place::Entity::find()
        .filter(audit_chain_place::Column::Seq.is_in(rows.iter().map(|r| r.seq)))
        .all(conn)
        .await?
        .into_iter()
        .map(|place| (place.seq, place))
        .collect();
    for row in &mut rows {
        if let Some(place) = places.remove(&row.seq) {
            row.chain_pos = Some(place.pos);
            row.chain_mac = place.chain_mac;
        }
    }
    Ok(rows)
}

/// The sequence numbers of the places `condition` selects, as a subquery.
fn place_seqs(condition: Condition) -> sea_orm::sea_query::SelectStatement {
    Query::select()
        .column(audit_chain_place::Column::Seq)
        .from(audit_chain_place::Entity)
        .cond_where(condition)
        .to_owned()
}

impl Tx {
    async fn chain_state(&self, column: &str) -> Result<i64> {
        let row = self
            .inner
            .query_one_raw(Statement::from_string(
                self.inner.get_database_backend(),
                format!("SELECT {column} AS value FROM audit_chain_state WHERE id = 1"),
            ))
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<i64>("", "value")?,
            None => 0,
        })
    }

    /// The starting checkpoint: records at or below this sequence number were written before
    /// the chain existed.
    pub async fn audit_legacy_through(&self) -> Result<i64> {
        self.chain_state("legacy_through").await
    }

    /// How far the sealer got: every record at or below this sequence number has its place,
    /// or was left out for a reason verification names.
    pub async fn audit_sealed_through(&self) -> Result<i64> {
        self.chain_state("sealed_through").await
    }

    /// Moves how far the sealer got.
    pub async fn set_audit_sealed_through(&self, through: i64) -> Result<()> {
        use sea_orm::sea_query::Alias;
        let update = Query::update()
            .table(Alias::new("audit_chain_state"))
            .value(Alias::new("sealed_through"), through)
            .and_where(Expr::col(Alias::new("id")).eq(1))
            .to_owned();
        let statement = self.inner.get_database_backend().build(&update);
        self.inner.execute_raw(statement).await?;
        Ok(())
    }

    /// Assigns this transaction its id on PostgreSQL, once, before its first audit record
    /// gets a sequence number (see the module doc; a change's statement does it itself).
    pub(super) async fn assign_audit_xid(&mut self) -> Result<()> {
        if self.postgres && !self.audit_xid_assigned {
            self.inner
                .execute_raw(Statement::from_string(
                    DatabaseBackend::Postgres,
                    "SELECT pg_current_xact_id()",
                ))
                .await?;
            self.audit_xid_assigned = true;
        }
        Ok(())
    }

    /// The oldest records after `after` and up to `upto` (a bound from
    /// [`Store::audit_seal_bound`]) without a place, in sequence order.
    pub async fn audits_to_seal(&self, after: i64, upto: i64, limit: u64) -> Result<Vec<AuditRow>> {
        Ok(audit_event::Entity::find()
            .filter(audit_event::Column::Seq.gt(after))
            .filter(audit_event::Column::Seq.lte(upto))
            .filter(audit_event::Column::Seq.not_in_subquery(place_seqs(
                Condition::all().add(audit_chain_place::Column::Seq.gt(after)),
            )))
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

    /// Gives records their places (`chain_pos` and `chain_mac` of each row: 0 and none for a
    /// record left out of its chain), a statement per chunk.
    pub async fn place_audits(&self, rows: &[AuditRow]) -> Result<()> {
        use sea_orm::ActiveValue::Set;
        for chunk in rows.chunks(PLACE_CHUNK) {
            let places = chunk.iter().map(|row| audit_chain_place::ActiveModel {
                seq: Set(row.seq),
                team: Set(row.team.clone()),
                pos: Set(row.chain_pos.unwrap_or_default()),
                chain_mac: Set(row.chain_mac.clone()),
            });
            audit_chain_place::Entity::insert_many(places)
                .exec_without_returning(self.conn())
                .await?;
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

    /// A page of a team's chain: the records at its next `limit` places after `after`, and
    /// the last place read when all `limit` were (the next page starts after it).
    pub async fn chain_page(
        &self,
        team: &str,
        after: i64,
        limit: u64,
    ) -> Result<(Vec<AuditRow>, Option<i64>)> {
        chained(self.conn(), team, after, limit).await
    }

    /// A team's records outside its chain (not sealed yet, left out by the sealer, without a
    /// MAC, or whose place is gone) after sequence number `after`, in sequence order, with
    /// their place where they have one (0).
    pub async fn unchained_audits(
        &self,
        team: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<AuditRow>> {
        let rows = audit_event::Entity::find()
            .filter(audit_event::Column::Team.eq(team))
            .filter(audit_event::Column::Seq.gt(after))
            .filter(
                audit_event::Column::Seq.not_in_subquery(place_seqs(
                    Condition::all()
                        .add(audit_chain_place::Column::Team.eq(team))
                        .add(audit_chain_place::Column::Pos.gt(0))
                        .add(audit_chain_place::Column::Seq.gt(after)),
                )),
            )
            .order_by_asc(audit_event::Column::Seq)
            .limit(limit)
            .all(self.conn())
            .await?;
        with_places(self.conn(), rows).await
    }

    /// Deletes a team's chained records at or below position `through`, and their places (a
    /// prefix: the pruner's).
    pub async fn delete_chained_audits(&self, team: &str, through: i64) -> Result<u64> {
        let prefix = || {
            Condition::all()
                .add(audit_chain_place::Column::Team.eq(team))
                .add(audit_chain_place::Column::Pos.gt(0))
                .add(audit_chain_place::Column::Pos.lte(through))
        };
        let deleted = audit_event::Entity::delete_many()
            .filter(audit_event::Column::Seq.in_subquery(place_seqs(prefix())))
            .exec(self.conn())
            .await?
            .rows_affected;
        audit_chain_place::Entity::delete_many()
            .filter(prefix())
            .exec(self.conn())
            .await?;
        Ok(deleted)
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
