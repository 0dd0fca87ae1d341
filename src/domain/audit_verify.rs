//! Verification of the audit chain (`domain::audit_chain` says what the chain is): each
//! team's chain walked from its checkpoint in one snapshot, naming what was edited, deleted,
//! reordered or inserted.

use super::audit_chain::{GENESIS, chain_mac, head_holds, key, mac_holds, row_mac};
use crate::crypto::KeyRing;
use crate::store::{AuditRow, Store, StoreError};

/// Places read at once while verifying.
const VERIFY_PAGE: u64 = 1000;
/// Findings a verification keeps (it counts the rest).
const MAX_FINDINGS: usize = 100;

/// What a verification found wrong with one record (or place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tamper {
    /// Its content does not match its MAC.
    Edited,
    /// Places of the chain are missing.
    Deleted,
    /// Its MAC holds, but not at its place in the chain or under its sequence number.
    Reordered,
    /// It was not written by the service: no MAC, a MAC that did not hold when sealed, or a
    /// second record at one place.
    Inserted,
    /// The team's chain head or checkpoint does not hold its MAC.
    HeadEdited,
    /// Its key version is not in the ring: it cannot be checked.
    UnknownKey,
}

impl Tamper {
    pub fn as_str(self) -> &'static str {
        match self {
            Tamper::Edited => "edited",
            Tamper::Deleted => "deleted",
            Tamper::Reordered => "reordered",
            Tamper::Inserted => "inserted",
            Tamper::HeadEdited => "head edited",
            Tamper::UnknownKey => "unknown key",
        }
    }
}

/// One finding: what, in which team, at which record (its sequence number and id) or place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub kind: Tamper,
    pub team: String,
    pub seq: Option<i64>,
    pub id: Option<String>,
    /// The chain places concerned (first, last).
    pub places: Option<(i64, i64)>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "team {}: {}", self.team, self.kind.as_str())?;
        if self.kind == Tamper::Deleted {
            return match (self.places, self.seq) {
                (Some((first, last)), Some(seq)) => {
                    write!(f, ": chain places {first}..{last}, before record seq {seq}")
                }
                (Some((first, last)), None) => {
                    write!(f, ": chain places {first}..{last}, at the end of the chain")
                }
                _ => Ok(()),
            };
        }
        if let Some(seq) = self.seq {
            write!(f, ": record seq {seq}")?;
        }
        if let Some(id) = &self.id {
            write!(f, " (id {id})")?;
        }
        match self.places {
            Some((first, last)) if first == last => write!(f, " at chain place {first}"),
            Some((first, last)) => write!(f, " at chain places {first}..{last}"),
            None => Ok(()),
        }
    }
}

/// What [`verify`] checked and found.
#[derive(Clone, Debug, Default)]
pub struct Verification {
    pub teams: u64,
    /// Records whose MAC and place held.
    pub verified: u64,
    /// Records whose MAC holds, not sealed yet.
    pub pending: u64,
    /// Records from before the chain (not verifiable).
    pub legacy: u64,
    /// The first findings, in chain order per team ([`MAX_FINDINGS`] at most).
    pub findings: Vec<Finding>,
    /// Every finding, counted.
    pub found: u64,
}

impl Verification {
    fn find(
        &mut self,
        kind: Tamper,
        team: &str,
        row: Option<&AuditRow>,
        places: Option<(i64, i64)>,
    ) {
        self.found += 1;
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(Finding {
                kind,
                team: team.to_owned(),
                seq: row.map(|r| r.seq),
                id: row.map(|r| r.id.clone()),
                places,
            });
        }
    }
}

/// Verifies the chains of `team` (or of every team), each in one snapshot.
pub async fn verify(
    store: &Store,
    keys: &KeyRing,
    team: Option<&str>,
) -> Result<Verification, StoreError> {
    let teams = match team {
        Some(team) => vec![team.to_owned()],
        None => store.audit_teams().await?,
    };
    let mut report = Verification::default();
    for team in teams {
        report.teams += 1;
        verify_team(store, keys, &team, &mut report).await?;
    }
    Ok(report)
}

async fn verify_team(
    store: &Store,
    keys: &KeyRing,
    team: &str,
    report: &mut Verification,
) -> Result<(), StoreError> {
    let tx = store.begin_snapshot().await?;
    let legacy = tx.audit_legacy_through().await?;
    let sealed_through = tx.audit_sealed_through().await?;
    let head = tx.chain_heads(&[team]).await?.remove(team);
    if let Some(head) = &head
        && !head_holds(keys, head, legacy)
    {
        report.find(
            Tamper::HeadEdited,
            team,
            None,
            Some((head.checkpoint_pos, head.pos)),
        );
    }
    let start = head
        .as_ref()
        .map(|h| (h.checkpoint_pos, h.checkpoint_mac.clone()))
        .unwrap_or((0, GENESIS.to_vec()));
    let (mut last, mut prev): (i64, Option<Vec<u8>>) = (start.0, Some(start.1));
    let mut page_after = last.max(0);
    loop {
        let (rows, more) = tx.chain_page(team, page_after, VERIFY_PAGE).await?;
        for row in &rows {
            let pos = row.chain_pos.unwrap_or_default();
            if pos <= last {
                report.find(Tamper::Inserted, team, Some(row), Some((pos, pos)));
                continue;
            }
            if pos > last + 1 {
                report.find(Tamper::Deleted, team, Some(row), Some((last + 1, pos - 1)));
                prev = None;
            }
            match (mac_holds(keys, row), key(keys, row.key_id)) {
                (Some(true), Some(key)) => match &prev {
                    Some(prev)
                        if Some(chain_mac(key, team, pos, row.seq, row_mac(row), prev))
                            != row.chain_mac =>
                    {
                        report.find(Tamper::Reordered, team, Some(row), Some((pos, pos)));
                    }
                    _ => report.verified += 1,
                },
                (None, None) if row.mac.is_some() => {
                    report.find(Tamper::UnknownKey, team, Some(row), Some((pos, pos)))
                }
                _ => report.find(Tamper::Edited, team, Some(row), Some((pos, pos))),
            }
            prev = row.chain_mac.clone();
            last = pos;
        }
        match more {
            Some(place) => page_after = place,
            None => break,
        }
    }
    if let Some(head) = &head {
        if last < head.pos {
            report.find(Tamper::Deleted, team, None, Some((last + 1, head.pos)));
        } else if last == head.pos && prev.is_some() && prev.as_ref() != Some(&head.chain_mac) {
            report.find(Tamper::Reordered, team, None, Some((last, last)));
        }
    } else if last > 0 {
        // Places with no head to have given them.
        report.find(Tamper::Inserted, team, None, Some((1, last)));
    }
    let mut after = 0;
    loop {
        let (rows, more) = tx.unchained_audits(team, after, VERIFY_PAGE).await?;
        for row in &rows {
            match (row.mac.is_some(), row.chain_pos) {
                (false, _) if row.seq <= legacy => report.legacy += 1,
                (true, None) if mac_holds(keys, row) == Some(true) && row.seq > sealed_through => {
                    report.pending += 1
                }
                // Sealed, but its place is gone (the gap in the chain is reported too).
                (true, None) if mac_holds(keys, row) == Some(true) => {
                    report.find(Tamper::Reordered, team, Some(row), None)
                }
                (true, None) if mac_holds(keys, row).is_none() => {
                    report.find(Tamper::UnknownKey, team, Some(row), None)
                }
                _ => report.find(Tamper::Inserted, team, Some(row), None),
            }
        }
        match more {
            Some(seq) => after = seq,
            None => break,
        }
    }
    Ok(())
}
