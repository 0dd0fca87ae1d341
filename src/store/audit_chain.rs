//! The audit chain's rows: each team's head and checkpoint (`audit_chains`), the records'
//! places in their team's chain (`audit_chain_runs`: one row per team and sealing batch,
//! holding that batch's places of the team, so the log's own rows and indexes are never
//! rewritten and a batch writes a row per team, not per record), the starting checkpoint of
//! records written before the chain and how far the sealer got (`audit_chain_state`), and the
//! keeper's lease. What the MACs are is the domain's (`domain::audit_chain`); this module
//! only reads and writes them (how a run holds its places: `audit_runs`; what the sealer
//! chains: `audit_pending`).
//!
//! `sealed_through` says how far the sealer got: every record at or below it has its place
//! (or was left out for a reason verification names). On PostgreSQL a
//! sequence number is handed out at insert and becomes visible at commit, so a record could
//! commit below a point the sealer already passed. So every transaction that appends audit
//! records has its transaction id assigned before its first record gets a number
//! (the statement that appends them does it first), and the sealer's bound
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

use super::audit_runs::{Place, RUN_SPAN, decode_places, run_row, runs_of};
use super::entities::{audit_chain, audit_chain_run, audit_event};
use super::sets::is_one_of;
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

/// Runs one statement writes.
const RUN_CHUNK: usize = 64;
/// Runs one read of a chain takes at a time.
const RUNS_READ: u64 = 16;
/// Record sequence numbers one statement names.
pub(super) const SEQ_CHUNK: usize = 500;

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
    let mut places = Vec::new();
    // Runs in the order of their last place: one after another, unless edited.
    let mut cursor: Option<(i64, i64)> = None;
    loop {
        let mut query = audit_chain_run::Entity::find()
            .filter(audit_chain_run::Column::Team.eq(team))
            .filter(audit_chain_run::Column::LastPos.gt(after));
        if let Some((last_pos, first_seq)) = cursor {
            query = query.filter(
                Condition::any()
                    .add(audit_chain_run::Column::LastPos.gt(last_pos))
                    .add(
                        Condition::all()
                            .add(audit_chain_run::Column::LastPos.eq(last_pos))
                            .add(audit_chain_run::Column::FirstSeq.gt(first_seq)),
                    ),
            );
        }
        let runs = query
            .order_by_asc(audit_chain_run::Column::LastPos)
            .order_by_asc(audit_chain_run::Column::FirstSeq)
            .limit(RUNS_READ)
            .all(conn)
            .await?;
        let read_all = (runs.len() as u64) < RUNS_READ;
        for run in runs {
            cursor = Some((run.last_pos, run.first_seq));
            places.extend(
                decode_places(&run.places)
                    .into_iter()
                    .filter(|place| place.pos > after),
            );
        }
        if read_all || places.len() as u64 >= limit {
            break;
        }
    }
    places.sort_by_key(|place| (place.pos, place.seq));
    places.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let more = places
        .last()
        .filter(|_| places.len() as u64 == limit)
        .map(|last| last.pos);
    let seqs: Vec<i64> = places.iter().map(|place| place.seq).collect();
    let mut rows: HashMap<i64, AuditRow> = audits_numbered(conn, &seqs)
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

/// The records numbered `seqs` (those still stored), whole, in statements of [`SEQ_CHUNK`].
pub(super) async fn audits_numbered(
    conn: &impl ConnectionTrait,
    seqs: &[i64],
) -> Result<Vec<AuditRow>> {
    let mut rows = Vec::with_capacity(seqs.len());
    for seqs in seqs.chunks(SEQ_CHUNK) {
        rows.extend(
            audit_event::Entity::find()
                .filter(audit_event::Column::Seq.is_in(seqs.iter().copied()))
                .all(conn)
                .await?,
        );
    }
    Ok(rows)
}

/// `rows` with their places filled in from their runs.
pub(super) async fn with_places(
    conn: &impl ConnectionTrait,
    mut rows: Vec<AuditRow>,
) -> Result<Vec<AuditRow>> {
    let (Some(min), Some(max)) = (
        rows.iter().map(|r| r.seq).min(),
        rows.iter().map(|r| r.seq).max(),
    ) else {
        return Ok(rows);
    };
    let mut teams: Vec<&str> = rows.iter().map(|r| r.team.as_str()).collect();
    teams.sort_unstable();
    teams.dedup();
    // A run holding one of these records starts at most `RUN_SPAN` below it.
    let runs = audit_chain_run::Entity::find()
        .filter(audit_chain_run::Column::Team.is_in(teams))
        .filter(audit_chain_run::Column::FirstSeq.gt(min.saturating_sub(RUN_SPAN)))
        .filter(audit_chain_run::Column::FirstSeq.lte(max))
        .filter(audit_chain_run::Column::LastSeq.gte(min))
        .all(conn)
        .await?;
    let mut places: HashMap<(String, i64), Place> = HashMap::new();
    for run in runs {
        for place in decode_places(&run.places) {
            if (min..=max).contains(&place.seq) {
                places.insert((run.team.clone(), place.seq), place);
            }
        }
    }
    for row in &mut rows {
        if let Some(place) = places.remove(&(row.team.clone(), row.seq)) {
            row.chain_pos = Some(place.pos);
            row.chain_mac = place.chain_mac;
        }
    }
    Ok(rows)
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
            .filter(is_one_of(
                self.inner.get_database_backend(),
                audit_chain::Column::Team,
                teams.iter().copied(),
            ))
            .all(self.conn())
            .await?
            .into_iter()
            .map(|head| (head.team.clone(), head))
            .collect())
    }

    /// Gives records their places (0 and no MAC for a record left out of its chain), with
    /// their teams, in chain order: a run per team.
    pub async fn place_audits(&self, placed: &[(&str, Place)]) -> Result<()> {
        let runs = runs_of(placed);
        for chunk in runs.chunks(RUN_CHUNK) {
            audit_chain_run::Entity::insert_many(chunk.to_vec())
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
    /// MAC, or whose place is gone) among its next `limit` records after sequence number
    /// `after`, in sequence order, with their place where they have one (0); and the last
    /// sequence number read when all `limit` were (more may follow it).
    pub async fn unchained_audits(
        &self,
        team: &str,
        after: i64,
        limit: u64,
    ) -> Result<(Vec<AuditRow>, Option<i64>)> {
        let rows = audit_event::Entity::find()
            .filter(audit_event::Column::Team.eq(team))
            .filter(audit_event::Column::Seq.gt(after))
            .order_by_asc(audit_event::Column::Seq)
            .limit(limit)
            .all(self.conn())
            .await?;
        let more = rows
            .last()
            .filter(|_| rows.len() as u64 == limit)
            .map(|row| row.seq);
        let mut rows = with_places(self.conn(), rows).await?;
        rows.retain(|row| row.chain_pos.unwrap_or_default() <= 0);
        Ok((rows, more))
    }

    /// Deletes a team's chained records at or below position `through`, and their places (a
    /// prefix: the pruner's). A run reaching past `through` keeps the rest of its places.
    pub async fn delete_chained_audits(&self, team: &str, through: i64) -> Result<u64> {
        let mut deleted = 0;
        loop {
            // Every run touched is gone or starts past `through` afterwards.
            let runs: Vec<_> = audit_chain_run::Entity::find()
                .filter(audit_chain_run::Column::Team.eq(team))
                // A BIGINT like `chained`'s bound: the same text is one prepared statement.
                .filter(audit_chain_run::Column::LastPos.gt(0_i64))
                .order_by_asc(audit_chain_run::Column::LastPos)
                .order_by_asc(audit_chain_run::Column::FirstSeq)
                .limit(RUNS_READ)
                .all(self.conn())
                .await?
                .into_iter()
                .filter(|run| run.first_pos <= through)
                .collect();
            if runs.is_empty() {
                return Ok(deleted);
            }
            for run in runs {
                let (gone, kept): (Vec<Place>, Vec<Place>) = decode_places(&run.places)
                    .into_iter()
                    .partition(|place| place.pos > 0 && place.pos <= through);
                for seqs in gone.chunks(SEQ_CHUNK) {
                    deleted += audit_event::Entity::delete_many()
                        .filter(audit_event::Column::Seq.is_in(seqs.iter().map(|p| p.seq)))
                        .exec(self.conn())
                        .await?
                        .rows_affected;
                }
                audit_chain_run::Entity::delete_by_id((run.team.clone(), run.first_seq))
                    .exec(self.conn())
                    .await?;
                if !kept.is_empty() {
                    audit_chain_run::Entity::insert(run_row(team, &kept))
                        .exec_without_returning(self.conn())
                        .await?;
                }
            }
        }
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
