//! Tamper evidence for the audit log: each team's records form a chain of keyed MACs.
//!
//! - **At write time** every record gets a MAC of its content ([`record_mac`]: HMAC-SHA256
//!   under the audit key of the key ring's newest version, derived from that version's
//!   encryption key; the version is stored beside it). It costs one HMAC in the process and,
//!   on PostgreSQL, its transaction's id assigned before the record is numbered (the sealer
//!   waits for it to end; nothing waits for the sealer); no read, the same under the group
//!   commit of resolutions and on every replica.
//! - **The sealer** ([`seal`]), one replica at a time under the keeper's lease, never reads
//!   a record back: every commit that appends records also writes one pending row per team
//!   naming them by sequence number with their key version and MAC (`store::audit_pending`),
//!   and the sealer gives each record so named the next place of its team's chain with a MAC
//!   over its place, its sequence number, the MAC the row named and its predecessor's chained
//!   MAC, kept in one row per team and batch (`audit_chain_runs`: the log's rows are never
//!   rewritten), and deletes the pending row. Whether a record's content matches its MAC is
//!   for verification, which recomputes both. The sealer never passes a number still in
//!   flight on PostgreSQL (`store::audit_chain` says how), and the chain's order is the order
//!   it was sealed in, so no reader has to wait for numbers in flight. Each team's
//!   head (last place and its chained MAC) and checkpoint (the last pruned place and its
//!   chained MAC) are kept under a MAC of their own, which also binds the starting
//!   checkpoint.
//! - **The pruner** ([`prune`]) deletes a prefix of a team's chain older than the retention,
//!   after checking it, and moves the checkpoint to its last place: the chain verifies from
//!   there.
//! - **Verification** ([`verify`]) walks each team's chain from its checkpoint and names
//!   what it finds: a record *edited* (its MAC does not hold), *deleted* (a place missing,
//!   inside the chain or at its end, which the head's MAC gives away), *reordered* (a record
//!   whose MAC holds but not at its place or under its sequence number, or that the sealer
//!   passed without a place: its pending row was edited or deleted) or *inserted* (a record
//!   without a MAC, one whose MAC does not hold that no commit of the service named, or a
//!   second record at one place).
//!
//! Records written before the chain existed (at or below `legacy_through`, the starting
//! checkpoint the migration wrote) carry no MAC: they are counted, never verified. A record
//! not sealed yet is protected by its own MAC against edits and insertions, not yet against
//! deletion: the sealer runs every second. What no MAC can show: changes made by someone who
//! holds the keys, and the whole database put back to an earlier state.

use ring::hmac;

pub use super::audit_verify::{Finding, Tamper, Verification, verify};
use super::webhooks::AUDIT_KIND;
use crate::crypto::KeyRing;
use crate::store::{AuditRow, ChainHead, EventRow, Place, SealBound, Store, StoreError};

/// The chained MAC a team's first place follows (and its checkpoint before any pruning).
pub(super) const GENESIS: &[u8] = b"integrationhub/v1 audit chain genesis";
/// Pending rows (each one commit's records of one team) one sealing transaction chains.
pub const SEAL_BATCH: u64 = 64;

fn put(bytes: &mut Vec<u8>, field: &[u8]) {
    bytes.extend_from_slice(&(field.len() as u64).to_be_bytes());
    bytes.extend_from_slice(field);
}

/// The bytes a record's MAC covers: every field it was written with, length-prefixed, and
/// the key version (its sequence number and chain place are the sealer's, covered there).
fn canonical(row: &AuditRow, key_id: i32) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(256);
    put(&mut bytes, b"integrationhub/v1 audit record");
    for field in [
        row.id.as_str(),
        row.team.as_str(),
        row.actor.as_str(),
        row.actor_team.as_str(),
        row.role.as_str(),
        row.action.as_str(),
        row.resource.as_str(),
        row.outcome.as_str(),
        row.request_id.as_str(),
    ] {
        put(&mut bytes, field.as_bytes());
    }
    match &row.reason {
        Some(reason) => put(&mut bytes, format!("+{reason}").as_bytes()),
        None => put(&mut bytes, b"-"),
    }
    put(&mut bytes, &row.time.to_be_bytes());
    put(&mut bytes, &key_id.to_be_bytes());
    bytes
}

/// Signs a new record under the newest audit key: sets its `key_id` and `mac`.
pub(super) fn record_mac(keys: &KeyRing, row: &mut AuditRow) {
    let (version, key) = keys.newest_audit_key();
    let key_id = i32::try_from(version).unwrap_or(i32::MAX);
    row.mac = Some(hmac::sign(key, &canonical(row, key_id)).as_ref().to_vec());
    row.key_id = Some(key_id);
}

/// The audit key a stored key version names.
pub(super) fn key(keys: &KeyRing, key_id: Option<i32>) -> Option<&hmac::Key> {
    keys.audit_key(u32::try_from(key_id?).ok()?)
}

/// Whether a record's MAC holds: `None` when it has none or its key is not in the ring.
pub(super) fn mac_holds(keys: &KeyRing, row: &AuditRow) -> Option<bool> {
    let key = key(keys, row.key_id)?;
    let mac = row.mac.as_ref()?;
    Some(hmac::verify(key, &canonical(row, row.key_id?), mac).is_ok())
}

/// The chained MAC of the record numbered `seq` with MAC `mac` at `pos` of `team`'s chain,
/// after `prev`.
pub(super) fn chain_mac(
    key: &hmac::Key,
    team: &str,
    pos: i64,
    seq: i64,
    mac: &[u8],
    prev: &[u8],
) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(160);
    put(&mut bytes, b"integrationhub/v1 audit chain");
    put(&mut bytes, team.as_bytes());
    put(&mut bytes, &pos.to_be_bytes());
    put(&mut bytes, &seq.to_be_bytes());
    put(&mut bytes, mac);
    put(&mut bytes, prev);
    hmac::sign(key, &bytes).as_ref().to_vec()
}

/// A record's MAC as its chained MAC covers it (empty when it has none).
pub(super) fn row_mac(row: &AuditRow) -> &[u8] {
    row.mac.as_deref().unwrap_or_default()
}

/// The bytes a head's MAC covers.
fn head_bytes(head: &ChainHead, legacy_through: i64) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(160);
    put(&mut bytes, b"integrationhub/v1 audit chain head");
    put(&mut bytes, head.team.as_bytes());
    put(&mut bytes, &legacy_through.to_be_bytes());
    put(&mut bytes, &head.pos.to_be_bytes());
    put(&mut bytes, &head.chain_mac);
    put(&mut bytes, &head.checkpoint_pos.to_be_bytes());
    put(&mut bytes, &head.checkpoint_mac);
    put(&mut bytes, &head.key_id.to_be_bytes());
    bytes
}

/// Signs a head (moved by the sealer or the pruner) under the newest audit key.
fn sign_head(keys: &KeyRing, head: &mut ChainHead, legacy_through: i64) {
    let (version, key) = keys.newest_audit_key();
    head.key_id = i32::try_from(version).unwrap_or(i32::MAX);
    head.mac = hmac::sign(key, &head_bytes(head, legacy_through))
        .as_ref()
        .to_vec();
}

pub(super) fn head_holds(keys: &KeyRing, head: &ChainHead, legacy_through: i64) -> bool {
    key(keys, Some(head.key_id))
        .is_some_and(|key| hmac::verify(key, &head_bytes(head, legacy_through), &head.mac).is_ok())
}

fn genesis(team: &str) -> ChainHead {
    ChainHead {
        team: team.to_owned(),
        pos: 0,
        chain_mac: GENESIS.to_vec(),
        checkpoint_pos: 0,
        checkpoint_mac: GENESIS.to_vec(),
        key_id: 0,
        mac: Vec::new(),
    }
}

/// One record as a line of `audit export`: every field, the time in RFC 3339 and in
/// microseconds, the MACs in base64 (they verify only with the keys).
pub fn export_line(row: &AuditRow) -> String {
    use base64::Engine as _;
    let b64 = |bytes: &Option<Vec<u8>>| {
        bytes
            .as_ref()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
    };
    let time = prost_types::Timestamp {
        seconds: row.time.div_euclid(1_000_000),
        nanos: i32::try_from(row.time.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    };
    serde_json::json!({
        "seq": row.seq,
        "id": row.id,
        "team": row.team,
        "time": time.to_string(),
        "time_micros": row.time,
        "actor": row.actor,
        "actor_team": row.actor_team,
        "role": row.role,
        "action": row.action.as_str(),
        "resource": row.resource,
        "outcome": row.outcome.as_str(),
        "reason": row.reason,
        "request_id": row.request_id,
        "key_id": row.key_id,
        "mac": b64(&row.mac),
        "chain_pos": row.chain_pos,
        "chain_mac": b64(&row.chain_mac),
    })
    .to_string()
}

/// The outbox event of a sealed audit record ([`AUDIT_KIND`]): its export line as the
/// snapshot, its id as the event's.
fn audit_event_row(row: &AuditRow) -> EventRow {
    EventRow {
        seq: 0,
        event_id: row.id.clone(),
        team: row.team.clone(),
        kind: AUDIT_KIND.to_owned(),
        integration_id: String::new(),
        installed_app_id: None,
        reason: None,
        actor: row.actor.clone(),
        time: row.time,
        snapshot: export_line(row),
    }
}

/// What one sealing did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sealed {
    /// Records given their place.
    pub chained: u64,
    /// Records without a MAC (not written by the service): place 0, reported by [`verify`].
    pub refused: u64,
    /// Records left for later (a key of their commit's records is not in this replica's ring,
    /// or their team's head does not hold its MAC).
    pub skipped: u64,
    /// Nothing was sealed: a write transaction open on the database for longer than
    /// `store::SEAL_WAIT` may still append below the bound (PostgreSQL).
    pub waiting: bool,
}

/// Chains the records every commit left pending (`audit_pending`), taken once the sealer's
/// bound is known (`Store::audit_seal_bound`: on PostgreSQL it waits for the appends in
/// flight at its snapshot, so it is taken once a sealing, not once a batch), in batches of
/// [`SEAL_BATCH`] pending rows (one transaction each). Stops when another replica's sealer
/// or the pruner moved the chain (the next sealing goes on).
pub async fn seal(store: &Store, keys: &KeyRing) -> Result<Sealed, StoreError> {
    let mut total = Sealed::default();
    // A read first: an idle log costs no write lock (SQLite) and no lease.
    let bound = match store.audit_seal_bound().await? {
        SealBound::Upto(bound) => bound,
        SealBound::Nothing => return Ok(total),
        SealBound::Waiting => {
            total.waiting = true;
            return Ok(total);
        }
    };
    let mut after = 0;
    loop {
        let (sealed, next) = seal_batch(store, keys, bound, after).await?;
        total.chained += sealed.chained;
        total.refused += sealed.refused;
        total.skipped += sealed.skipped;
        match next {
            Some(next) => after = next,
            None => return Ok(total),
        }
    }
}

/// Chains the records of the oldest pending rows after row `after`, up to [`SEAL_BATCH`]
/// rows, from what their commits wrote (sequence number, key version, MAC: the records
/// themselves are not read again), deletes those rows, and moves how far the sealer got to
/// `bound` or to just below the oldest record still pending, whichever is lower. Answers
/// the last row read when more may follow. The rows are read in a read transaction; only
/// the places are written in the keeper's transaction (unless another replica holds its
/// lease), so on SQLite the sealer holds the one writer's turn, which the group commit of
/// resolutions shares, only for the writing. Should another sealer or the pruner have
/// moved the chain or taken a row in between, nothing is written: the next round reads
/// again.
async fn seal_batch(
    store: &Store,
    keys: &KeyRing,
    bound: i64,
    after: i64,
) -> Result<(Sealed, Option<i64>), StoreError> {
    let mut sealed = Sealed::default();
    let read = store.begin_snapshot().await?;
    let through = read.audit_sealed_through().await?;
    let (pending, more) = read.pending_audits(after, SEAL_BATCH).await?;
    let next = pending.last().filter(|_| more).map(|row| row.id);
    let legacy = read.audit_legacy_through().await?;
    let mut teams: Vec<&str> = pending.iter().map(|r| r.team.as_str()).collect();
    teams.sort_unstable();
    teams.dedup();
    let read_heads = read.chain_heads(&teams).await?;
    drop(read);
    let mut heads = read_heads.clone();
    let mut moved = std::collections::BTreeSet::new();
    let mut placed: Vec<(&str, Place)> = Vec::new();
    let mut taken = Vec::with_capacity(pending.len());
    for row in &pending {
        let team = row.team.as_str();
        let head = heads
            .entry(row.team.clone())
            .or_insert_with(|| genesis(team));
        let fresh = head.pos == 0 && head.mac.is_empty();
        // Never extend (and so re-sign) a head that does not hold: verify names it. A
        // commit's records are chained together or left for later together.
        let head_holds = fresh || moved.contains(team) || head_holds(keys, head, legacy);
        let keyed = row
            .records
            .iter()
            .all(|r| r.mac.is_none() || key(keys, r.key_id).is_some());
        if !head_holds || !keyed {
            sealed.skipped += row.records.len() as u64;
            continue;
        }
        for record in &row.records {
            match (record.mac.as_deref(), key(keys, record.key_id)) {
                (Some(mac), Some(key)) => {
                    let pos = head.pos + 1;
                    let chained = chain_mac(key, team, pos, record.seq, mac, &head.chain_mac);
                    head.pos = pos;
                    head.chain_mac.clone_from(&chained);
                    moved.insert(row.team.clone());
                    placed.push((
                        team,
                        Place {
                            seq: record.seq,
                            pos,
                            chain_mac: Some(chained),
                        },
                    ));
                    sealed.chained += 1;
                }
                // No MAC (not written by the service): place 0, which verification reports.
                _ => {
                    placed.push((
                        team,
                        Place {
                            seq: record.seq,
                            pos: 0,
                            chain_mac: None,
                        },
                    ));
                    sealed.refused += 1;
                }
            }
        }
        taken.push(row.id);
    }
    let Some(mut tx) = store.begin_chain_keeper().await? else {
        return Ok((Sealed::default(), None));
    };
    let moved: Vec<&str> = moved.iter().map(String::as_str).collect();
    let stored = tx.chain_heads(&moved).await?;
    if tx.audit_sealed_through().await? != through
        || moved
            .iter()
            .any(|team| stored.get(*team) != read_heads.get(*team))
        || tx.take_pending(&taken).await? != taken.len() as u64
    {
        return Ok((Sealed::default(), None));
    }
    // Audit records as webhook events, in chain order, for the teams that subscribed to them.
    let subscribed = tx.teams_subscribed_to(&moved, AUDIT_KIND).await?;
    if !subscribed.is_empty() {
        let events = audit_events_of(&tx, &placed, &subscribed).await?;
        tx.append_events(events).await?;
    }
    tx.place_audits(&placed).await?;
    // Each moved head is signed once, at its last place of this batch.
    for team in moved {
        if let Some(mut head) = heads.remove(team) {
            sign_head(keys, &mut head, legacy);
            tx.put_chain_head(head).await?;
        }
    }
    // Every record up to the bound has committed (or never will), and so has its pending row.
    let reached = match tx.oldest_pending().await? {
        Some(oldest) => bound.min(oldest - 1),
        None => bound,
    };
    if reached > through {
        tx.set_audit_sealed_through(reached).await?;
    }
    tx.commit().await?;
    Ok((sealed, next))
}

/// The webhook events of the records just `placed` (in chain order) of the `subscribed`
/// teams: the records are read whole for these only.
async fn audit_events_of(
    tx: &crate::store::Tx,
    placed: &[(&str, Place)],
    subscribed: &[String],
) -> Result<Vec<EventRow>, StoreError> {
    let wanted: Vec<&Place> = placed
        .iter()
        .filter(|(team, place)| place.pos > 0 && subscribed.iter().any(|s| s == team))
        .map(|(_, place)| place)
        .collect();
    let seqs: Vec<i64> = wanted.iter().map(|place| place.seq).collect();
    let mut rows: std::collections::HashMap<i64, AuditRow> = tx
        .audits_numbered(&seqs)
        .await?
        .into_iter()
        .map(|row| (row.seq, row))
        .collect();
    Ok(wanted
        .into_iter()
        .filter_map(|place| {
            let mut row = rows.remove(&place.seq)?;
            row.chain_pos = Some(place.pos);
            row.chain_mac.clone_from(&place.chain_mac);
            Some(audit_event_row(&row))
        })
        .collect())
}

/// Deletes, in one transaction, up to `limit` records older than `cutoff` (microseconds):
/// records from before the chain, then prefixes of teams' chains, each checked before it
/// goes and ended by a checkpoint (its last place and chained MAC) in the team's head. A
/// prefix that does not verify is kept from its first problem on, with a WARN: pruning never
/// hides tampering. Returns the records deleted.
pub async fn prune(
    store: &Store,
    keys: &KeyRing,
    cutoff: i64,
    limit: u64,
) -> Result<u64, StoreError> {
    let Some(tx) = store.begin_chain_keeper().await? else {
        return Ok(0);
    };
    let legacy = tx.audit_legacy_through().await?;
    let mut deleted = tx.delete_legacy_audits(legacy, cutoff, limit).await?;
    for team in tx.chain_teams().await? {
        if deleted >= limit {
            break;
        }
        let heads = tx.chain_heads(&[team.as_str()]).await?;
        let Some(mut head) = heads.into_values().next() else {
            continue;
        };
        if !head_holds(keys, &head, legacy) {
            tracing::warn!(team = %team, "the audit chain's head does not hold its MAC; not pruning this team (run `integration-hub audit verify`)");
            continue;
        }
        let (rows, _) = tx
            .chain_page(&team, head.checkpoint_pos, limit - deleted)
            .await?;
        let mut end: Option<(i64, Vec<u8>)> = None;
        for row in rows.iter().take_while(|r| r.time < cutoff) {
            let (pos, prev) = match &end {
                Some((pos, mac)) => (*pos, mac.as_slice()),
                None => (head.checkpoint_pos, head.checkpoint_mac.as_slice()),
            };
            let holds = row.chain_pos == Some(pos + 1)
                && mac_holds(keys, row) == Some(true)
                && key(keys, row.key_id).is_some_and(|key| {
                    Some(chain_mac(key, &team, pos + 1, row.seq, row_mac(row), prev))
                        == row.chain_mac
                });
            if !holds {
                tracing::warn!(team = %team, seq = row.seq, "an audit record to prune does not verify; pruning stops before it (run `integration-hub audit verify`)");
                break;
            }
            end = Some((pos + 1, row.chain_mac.clone().unwrap_or_default()));
        }
        let Some((through, mac)) = end else {
            continue;
        };
        deleted += tx.delete_chained_audits(&team, through).await?;
        head.checkpoint_pos = through;
        head.checkpoint_mac = mac;
        sign_head(keys, &mut head, legacy);
        tx.put_chain_head(head).await?;
    }
    tx.commit().await?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditAction, AuditOutcome};

    fn row() -> AuditRow {
        crate::domain::test_support::audit_row()
    }

    #[test]
    fn a_record_mac_covers_every_field_and_still_verifies_after_rotation() {
        let (one, spec1) = KeyRing::generate(1).expect("key 1");
        let (_, spec2) = KeyRing::generate(2).expect("key 2");
        let both = KeyRing::parse(&format!("{spec1},{spec2}")).expect("ring");
        let mut signed = row();
        record_mac(&one, &mut signed);
        assert_eq!(mac_holds(&one, &signed), Some(true));
        assert_eq!(mac_holds(&both, &signed), Some(true), "a rotated ring");
        let edits: [fn(&mut AuditRow); 12] = [
            |r| r.id.push('x'),
            |r| r.team.push('x'),
            |r| r.actor.push('x'),
            |r| r.actor_team.push('x'),
            |r| r.role.push('x'),
            |r| r.action = AuditAction::InstalledAppDelete,
            |r| r.resource.push('x'),
            |r| r.outcome = AuditOutcome::Failed,
            |r| r.reason = Some("NOT_FOUND".into()),
            |r| r.request_id.push('x'),
            |r| r.time += 1,
            |r| r.key_id = Some(2),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut edited = signed.clone();
            edit(&mut edited);
            assert_eq!(mac_holds(&both, &edited), Some(false), "edit {i}");
        }
        // Fields are length-prefixed: a character moved across a boundary changes the MAC.
        let mut shifted = signed.clone();
        shifted.actor = "dan".into();
        shifted.actor_team = "aacme".into();
        assert_eq!(mac_holds(&one, &shifted), Some(false));
        // A new record is made under the newest key; without that key it cannot be checked.
        let mut newer = row();
        record_mac(&both, &mut newer);
        assert_eq!(newer.key_id, Some(2));
        assert_eq!(mac_holds(&one, &newer), None);
    }

    /// A record the sealer cannot chain yet (its key is not in this replica's ring: another
    /// replica, with a newer ring, committed it) holds the sealer's watermark back; the
    /// records of other commits that it could place are placed once, and the held record
    /// gets its place once the key is there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_record_left_for_later_holds_the_sealer_and_nothing_is_placed_twice() {
        let test = crate::domain::test_support::hub().await;
        let (one, spec1) = KeyRing::generate(1).expect("key 1");
        let (_, spec2) = KeyRing::generate(2).expect("key 2");
        let both = KeyRing::parse(&format!("{spec1},{spec2}")).expect("ring");
        for (i, (team, ring)) in [("acme", &one), ("acme", &both), ("beta", &one)]
            .into_iter()
            .enumerate()
        {
            let mut record = AuditRow {
                id: format!("id{i}"),
                team: team.into(),
                ..row()
            };
            record_mac(ring, &mut record);
            // Each by its own commit (one replica, one ring).
            let mut tx = test.store.begin_write().await.expect("begin");
            tx.append_audit(record).await.expect("append");
            tx.commit().await.expect("commit");
        }
        for round in 0..3 {
            let sealed = seal(&test.store, &one).await.expect("seal");
            let expected = Sealed {
                chained: if round == 0 { 2 } else { 0 },
                skipped: 1,
                ..Sealed::default()
            };
            assert_eq!(sealed, expected, "round {round}");
        }
        let sealed = seal(&test.store, &both).await.expect("seal with both keys");
        assert_eq!((sealed.chained, sealed.skipped), (1, 0));
        let report = verify(&test.store, &both, None).await.expect("verify");
        assert_eq!((report.verified, report.found), (3, 0), "{report:?}");
        assert_eq!(
            seal(&test.store, &both).await.expect("idle"),
            Sealed::default()
        );
    }

    /// A chain sealed when each place was a row of its own verifies after the migrations that
    /// keep places in runs and pending records in rows of their own, and goes on from its
    /// head: a record past the sealer then is chained from the pending row the migration
    /// wrote for it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_chain_sealed_before_places_were_kept_in_runs_still_verifies() {
        use migration::MigratorTrait;
        use sea_orm::{ConnectionTrait, Statement};
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("hub.db").display());
        let db = sea_orm::Database::connect(&url).await.expect("connect");
        // Every migration before the runs.
        let before = migration::Migrator::migrations()
            .iter()
            .position(|m| m.name() == "m20261205_000018_audit_chain_runs")
            .expect("the runs' migration");
        migration::Migrator::up(&db, Some(u32::try_from(before).expect("few")))
            .await
            .expect("migrate to the places");
        let store = Store::connect(&url, 2).await.expect("store");
        let (keys, _) = KeyRing::generate(1).expect("key");
        let (_, key) = keys.newest_audit_key();
        let mut head = genesis("acme");
        for seq in 1..=4 {
            let mut record = AuditRow {
                seq,
                id: format!("id{seq}"),
                ..row()
            };
            record_mac(&keys, &mut record);
            // As that version of the service wrote it: no pending row.
            db.execute_raw(Statement::from_sql_and_values(
                sea_orm::DatabaseBackend::Sqlite,
                "INSERT INTO audit_events (id, team, actor, actor_team, role, action, resource, \
                 outcome, reason, request_id, time, key_id, mac) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    record.id.clone().into(),
                    record.team.clone().into(),
                    record.actor.clone().into(),
                    record.actor_team.clone().into(),
                    record.role.clone().into(),
                    record.action.as_str().into(),
                    record.resource.clone().into(),
                    record.outcome.as_str().into(),
                    record.reason.clone().into(),
                    record.request_id.clone().into(),
                    record.time.into(),
                    record.key_id.into(),
                    record.mac.clone().into(),
                ],
            ))
            .await
            .expect("a record");
            if seq == 4 {
                break;
            }
            let mac = chain_mac(key, "acme", seq, seq, row_mac(&record), &head.chain_mac);
            db.execute_unprepared(&format!(
                "INSERT INTO audit_chain_places (seq, team, pos, chain_mac) \
                 VALUES ({seq}, 'acme', {seq}, X'{}')",
                crate::text::hex(&mac)
            ))
            .await
            .expect("a place");
            head.pos = seq;
            head.chain_mac = mac;
        }
        sign_head(&keys, &mut head, 0);
        let tx = store.begin_write().await.expect("begin");
        tx.put_chain_head(head).await.expect("head");
        tx.set_audit_sealed_through(3)
            .await
            .expect("sealed through");
        tx.commit().await.expect("commit");
        store.migrate().await.expect("migrate to the runs");
        let report = verify(&store, &keys, None).await.expect("verify");
        assert_eq!(
            (report.verified, report.pending, report.found),
            (3, 1, 0),
            "{report:?}"
        );
        let mut tx = store.begin_write().await.expect("begin");
        let mut record = AuditRow {
            id: "id5".into(),
            ..row()
        };
        record_mac(&keys, &mut record);
        tx.append_audit(record).await.expect("append");
        tx.commit().await.expect("commit");
        assert_eq!(seal(&store, &keys).await.expect("seal").chained, 2);
        let report = verify(&store, &keys, None).await.expect("verify");
        assert_eq!(
            (report.verified, report.pending, report.found),
            (5, 0, 0),
            "{report:?}"
        );
    }

    #[test]
    fn a_chained_mac_binds_the_place_the_sequence_number_and_the_predecessor() {
        let (keys, _) = KeyRing::generate(1).expect("key");
        let (_, key) = keys.newest_audit_key();
        let mut record = row();
        record_mac(&keys, &mut record);
        let mac = row_mac(&record);
        let base = chain_mac(key, "acme", 3, record.seq, mac, GENESIS);
        assert_ne!(
            base,
            chain_mac(key, "acme", 4, record.seq, mac, GENESIS),
            "place"
        );
        assert_ne!(
            base,
            chain_mac(key, "beta", 3, record.seq, mac, GENESIS),
            "team"
        );
        assert_ne!(
            base,
            chain_mac(key, "acme", 3, record.seq, mac, b"other"),
            "predecessor"
        );
        assert_ne!(
            base,
            chain_mac(key, "acme", 3, 8, mac, GENESIS),
            "sequence number"
        );
        assert_ne!(
            base,
            chain_mac(key, "acme", 3, record.seq, &[0; 32], GENESIS),
            "the record's MAC"
        );
    }
}
