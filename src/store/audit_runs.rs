//! The audit chain's places as its runs keep them: one row of `audit_chain_runs` per team
//! and sealing batch, its places as text (`seq:pos:chain-mac-in-hex`, comma-separated, in
//! chain order); and the records a commit left for the sealer as its pending row keeps them
//! (`seq:key-version:mac-in-hex`). `store::audit_chain` reads and writes the rows.

use std::collections::HashMap;
use std::fmt::Write as _;

use sea_orm::ActiveValue::Set;

use super::entities::audit_chain_run;

/// A run's records span fewer sequence numbers than this (the sealer starts a new run where
/// one would not), so the run holding a record starts at most this far below it.
pub const RUN_SPAN: i64 = 1024;

/// One record's place in its team's chain, as its run keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// The record's sequence number.
    pub seq: i64,
    /// 1, 2, ...; 0 when the record's MAC did not hold when it was sealed.
    pub pos: i64,
    /// The MAC over the record and its predecessor (none at place 0).
    pub chain_mac: Option<Vec<u8>>,
}

/// A run's places as stored: `seq:pos:chain-mac-in-hex`, comma-separated.
pub fn encode_places(places: &[Place]) -> String {
    let mut text = String::with_capacity(places.len() * 84);
    for (i, place) in places.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        let _ = write!(text, "{}:{}:", place.seq, place.pos);
        text.push_str(&crate::text::hex(
            place.chain_mac.as_deref().unwrap_or_default(),
        ));
    }
    text
}

/// A run's places back from their stored text. A place that does not read as one is left
/// out: verification then names it missing.
pub fn decode_places(text: &str) -> Vec<Place> {
    text.split(',')
        .filter_map(|place| {
            let mut fields = place.splitn(3, ':');
            let seq = fields.next()?.parse().ok()?;
            let pos = fields.next()?.parse().ok()?;
            let mac = crate::text::unhex(fields.next()?)?;
            Some(Place {
                seq,
                pos,
                chain_mac: (!mac.is_empty()).then_some(mac),
            })
        })
        .collect()
}

/// The row of a run of `team` holding `places` (not empty).
pub(super) fn run_row(team: &str, places: &[Place]) -> audit_chain_run::ActiveModel {
    let seqs = places.iter().map(|p| p.seq);
    let chained = || places.iter().map(|p| p.pos).filter(|pos| *pos > 0);
    audit_chain_run::ActiveModel {
        team: Set(team.to_owned()),
        first_seq: Set(seqs.clone().min().unwrap_or_default()),
        last_seq: Set(seqs.max().unwrap_or_default()),
        first_pos: Set(chained().min().unwrap_or_default()),
        last_pos: Set(chained().max().unwrap_or_default()),
        places: Set(encode_places(places)),
    }
}

/// Places given by one sealing (with their teams, in chain order) as runs: one per team, and
/// a new one where a team's run would span [`RUN_SPAN`] sequence numbers or more (so each run
/// holds consecutive places of its team).
pub(super) fn runs_of(placed: &[(&str, Place)]) -> Vec<audit_chain_run::ActiveModel> {
    // Each run with the smallest and largest sequence number of its places.
    let mut runs: Vec<(&str, Vec<Place>, i64, i64)> = Vec::new();
    // Each team's open run, by its index in `runs`.
    let mut open: HashMap<&str, usize> = HashMap::new();
    for (team, place) in placed {
        let seq = place.seq;
        match open.get(team) {
            Some(&i) if runs[i].3.max(seq) - runs[i].2.min(seq) < RUN_SPAN => {
                let run = &mut runs[i];
                run.1.push(place.clone());
                (run.2, run.3) = (run.2.min(seq), run.3.max(seq));
            }
            _ => {
                open.insert(team, runs.len());
                runs.push((team, vec![place.clone()], seq, seq));
            }
        }
    }
    runs.iter()
        .map(|(team, places, _, _)| run_row(team, places))
        .collect()
}

/// One record a commit appended, as its pending row names it for the sealer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingRecord {
    /// The record's sequence number.
    pub seq: i64,
    /// The key version of its MAC (none when it has none).
    pub key_id: Option<i32>,
    /// Its MAC (none when it has none: the record was not written by the service).
    pub mac: Option<Vec<u8>>,
}

/// A pending row's records back from their stored text (`seq:key-version:mac-in-hex`,
/// comma-separated), in sequence order. One that does not read as one is left out: it is
/// never placed, and verification names its record.
pub fn decode_pending(text: &str) -> Vec<PendingRecord> {
    let mut records: Vec<PendingRecord> = text
        .split(',')
        .filter_map(|entry| {
            let mut fields = entry.splitn(3, ':');
            let seq = fields.next()?.parse().ok()?;
            let key_id: i32 = fields.next()?.parse().ok()?;
            let mac = crate::text::unhex(fields.next()?)?;
            Some(PendingRecord {
                seq,
                key_id: (key_id != 0).then_some(key_id),
                mac: (!mac.is_empty()).then_some(mac),
            })
        })
        .collect();
    records.sort_by_key(|record| record.seq);
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(seq: i64, team: &'static str, pos: i64) -> (&'static str, Place) {
        (
            team,
            Place {
                seq,
                pos,
                chain_mac: (pos > 0).then(|| vec![u8::try_from(pos % 256).unwrap_or(0); 32]),
            },
        )
    }

    #[test]
    fn places_read_back_as_written_and_a_damaged_one_is_left_out() {
        let places = vec![
            Place {
                seq: 7,
                pos: 1,
                chain_mac: Some(vec![0xab; 32]),
            },
            Place {
                seq: 9,
                pos: 0,
                chain_mac: None,
            },
            Place {
                seq: i64::MAX,
                pos: 2,
                chain_mac: Some(vec![0, 1]),
            },
        ];
        let text = encode_places(&places);
        assert_eq!(decode_places(&text), places);
        assert_eq!(decode_places(""), Vec::<Place>::new());
        let damaged = text.replacen("9:0:", "9:x:", 1);
        assert_eq!(
            decode_places(&damaged),
            vec![places[0].clone(), places[2].clone()]
        );
        assert_eq!(decode_places("7:1:abc,8:2:zz,9"), Vec::<Place>::new());
    }

    #[test]
    fn a_sealing_makes_one_run_per_team_and_a_new_one_past_the_span() {
        let rows = [
            placed(10, "acme", 1),
            placed(11, "beta", 1),
            placed(12, "acme", 0),
            placed(13, "acme", 2),
            placed(10 + RUN_SPAN - 1, "acme", 3),
            placed(10 + RUN_SPAN, "acme", 4),
            placed(20, "gamma", 0),
        ];
        let runs: Vec<audit_chain_run::Model> = runs_of(&rows)
            .into_iter()
            .map(|run| audit_chain_run::Model {
                team: run.team.unwrap(),
                first_seq: run.first_seq.unwrap(),
                last_seq: run.last_seq.unwrap(),
                first_pos: run.first_pos.unwrap(),
                last_pos: run.last_pos.unwrap(),
                places: run.places.unwrap(),
            })
            .collect();
        let shape: Vec<_> = runs
            .iter()
            .map(|r| {
                let seqs: Vec<i64> = decode_places(&r.places).iter().map(|p| p.seq).collect();
                (
                    r.team.as_str(),
                    r.first_seq,
                    r.last_seq,
                    r.first_pos,
                    r.last_pos,
                    seqs,
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (
                    "acme",
                    10,
                    10 + RUN_SPAN - 1,
                    1,
                    3,
                    vec![10, 12, 13, 10 + RUN_SPAN - 1]
                ),
                ("beta", 11, 11, 1, 1, vec![11]),
                (
                    "acme",
                    10 + RUN_SPAN,
                    10 + RUN_SPAN,
                    4,
                    4,
                    vec![10 + RUN_SPAN]
                ),
                ("gamma", 20, 20, 0, 0, vec![20]),
            ]
        );
        let first = decode_places(&runs[0].places);
        assert_eq!(first[1].pos, 0);
        assert_eq!(first[1].chain_mac, None);
        assert_eq!(first[0].chain_mac, rows[0].1.chain_mac);
        // Chain order is not sequence order across commits on PostgreSQL: a run spans fewer
        // than `RUN_SPAN` sequence numbers below its first place as well as above.
        let runs = runs_of(&[
            placed(5000, "acme", 1),
            placed(5000 - RUN_SPAN + 1, "acme", 2),
            placed(5001, "acme", 3),
            placed(4000, "acme", 4),
        ]);
        let spans: Vec<(i64, i64, i64, i64)> = runs
            .iter()
            .map(|run| {
                (
                    run.first_seq.clone().unwrap(),
                    run.last_seq.clone().unwrap(),
                    run.first_pos.clone().unwrap(),
                    run.last_pos.clone().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            spans,
            vec![(5000 - RUN_SPAN + 1, 5000, 1, 2), (4000, 5001, 3, 4),]
        );
    }

    #[test]
    fn pending_records_read_back_in_sequence_order_and_a_damaged_one_is_left_out() {
        let records = decode_pending("12:3:abcd,10:1:00ff,11:0:,x:1:ab,13:1:zz");
        assert_eq!(
            records,
            vec![
                PendingRecord {
                    seq: 10,
                    key_id: Some(1),
                    mac: Some(vec![0, 0xff]),
                },
                PendingRecord {
                    seq: 11,
                    key_id: None,
                    mac: None,
                },
                PendingRecord {
                    seq: 12,
                    key_id: Some(3),
                    mac: Some(vec![0xab, 0xcd]),
                },
            ]
        );
        assert_eq!(decode_pending(""), Vec::<PendingRecord>::new());
    }
}
