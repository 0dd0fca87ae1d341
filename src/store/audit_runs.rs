//! The audit chain's places as its runs keep them: one row of `audit_chain_runs` per team
//! and sealing batch, its places as text (`seq:pos:chain-mac-in-hex`, comma-separated, in
//! chain order). `store::audit_chain` reads and writes the rows.

use std::collections::HashMap;
use std::fmt::Write as _;

use sea_orm::ActiveValue::Set;

use super::AuditRow;
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

/// `rows` (placed by one sealing, in sequence order) as runs: one per team, and a new one
/// where a team's records would span [`RUN_SPAN`] sequence numbers or more.
pub(super) fn runs_of(rows: &[AuditRow]) -> Vec<audit_chain_run::ActiveModel> {
    let mut runs: Vec<(&str, Vec<Place>)> = Vec::new();
    // Each team's open run, by its index in `runs`.
    let mut open: HashMap<&str, usize> = HashMap::new();
    for row in rows {
        let place = Place {
            seq: row.seq,
            pos: row.chain_pos.unwrap_or_default(),
            chain_mac: row.chain_mac.clone(),
        };
        let fits = |run: &Vec<Place>| run.first().is_some_and(|p| row.seq - p.seq < RUN_SPAN);
        match open.get(row.team.as_str()) {
            Some(&i) if fits(&runs[i].1) => runs[i].1.push(place),
            _ => {
                open.insert(row.team.as_str(), runs.len());
                runs.push((row.team.as_str(), vec![place]));
            }
        }
    }
    runs.iter()
        .map(|(team, places)| run_row(team, places))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placed(seq: i64, team: &str, pos: i64) -> AuditRow {
        AuditRow {
            seq,
            team: team.into(),
            chain_pos: Some(pos),
            chain_mac: (pos > 0).then(|| vec![u8::try_from(pos % 256).unwrap_or(0); 32]),
            ..crate::domain::test_support::audit_row()
        }
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
        assert_eq!(first[0].chain_mac, rows[0].chain_mac);
    }
}
