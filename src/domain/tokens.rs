//! Cursors and page tokens as clients see them: opaque, sealed with the key ring
//! (`crypto/tokens.rs`), a cursor bound to its team and a page token to its team and listing
//! (its filters). A client can neither read a position from one (the event log's sequence
//! numbers are global, so a readable cursor would show another team's write rate) nor use it
//! elsewhere: another team's, an edited or a made-up token is INVALID_ARGUMENT.
//!
//! Cursors in the format used before they were sealed (`ihc1` and a clear sequence number)
//! expire cleanly: FAILED_PRECONDITION with reason CURSOR_EXPIRED, the answer a subscriber
//! already handles by listing again.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::context::Context;
use super::error::{Error, Precondition, Result};
use super::types::{Cursor, PageRequest, PageToken, SeqPageToken, TeamId};
use crate::crypto::KeyRing;

/// Longest cursor or page token accepted, in bytes of text (a sealed one is 54 to ~150).
pub const MAX_TOKEN_CHARS: usize = 512;

/// The prefix of a cursor in the retired clear format, once base64 decoded.
const RETIRED_CURSOR_PREFIX: &[u8] = b"ihc1";

/// What a token is valid for. `team` is `None` for a watch of every team (an all-teams
/// service): team ids are `[A-Za-z0-9_-]`, so neither `*` nor `|` occurs in one, and no two
/// scopes share a text.
fn scope(kind: &str, team: Option<&TeamId>, listing: &str) -> Vec<u8> {
    let team = team.map(TeamId::as_str).unwrap_or("*");
    format!("{kind}|{team}|{listing}").into_bytes()
}

fn decode(text: &str) -> Option<Vec<u8>> {
    if text.len() > MAX_TOKEN_CHARS {
        return None;
    }
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Whether `text` has the shape of a cursor (sealed, or of the retired clear format), checked
/// where a request is parsed so that its violations are listed together; only
/// [`TeamCursors::open`] says whether it is one of the team's.
pub fn check_cursor_text(text: String) -> std::result::Result<String, String> {
    if text.is_empty() {
        return Ok(text);
    }
    match decode(&text) {
        Some(bytes) if bytes.len() == RETIRED_CURSOR_PREFIX.len() + 8 || bytes.len() >= 32 => {
            Ok(text)
        }
        _ => Err("is not a cursor this service gave this team".to_owned()),
    }
}

/// The cursors of one team's view of the event log.
#[derive(Clone)]
pub struct TeamCursors {
    keys: Arc<KeyRing>,
    scope: Vec<u8>,
}

impl TeamCursors {
    /// The cursors of `team`'s view of the event log (`None`: the view of every team).
    pub fn new(keys: Arc<KeyRing>, team: Option<&TeamId>) -> TeamCursors {
        TeamCursors {
            keys,
            scope: scope("cursor", team, ""),
        }
    }

    /// The cursors of `team`'s audit chain (`WatchAuditEvents`): positions are chain places,
    /// and no cursor of the event log opens here, nor one of another team.
    pub fn audit(keys: Arc<KeyRing>, team: &TeamId) -> TeamCursors {
        TeamCursors {
            keys,
            scope: scope("audit-cursor", Some(team), ""),
        }
    }

    /// The cursor of the position `seq` (after the event with that sequence number).
    pub fn encode(&self, seq: i64) -> String {
        URL_SAFE_NO_PAD.encode(self.keys.seal_token(&self.scope, &seq.to_be_bytes()))
    }

    /// The position a cursor of this team names; `None` for an empty one. `field` names the
    /// request field in the INVALID_ARGUMENT of a cursor that is not one of this team's.
    pub fn open(&self, field: &str, text: &str) -> Result<Option<Cursor>> {
        if text.is_empty() {
            return Ok(None);
        }
        let invalid = || Error::invalid(field, "is not a cursor this service gave this team");
        let bytes = decode(text).ok_or_else(invalid)?;
        if bytes.len() == RETIRED_CURSOR_PREFIX.len() + 8
            && bytes.starts_with(RETIRED_CURSOR_PREFIX)
        {
            return Err(Error::precondition(
                Precondition::CursorExpired,
                "cursors issued before they were sealed are no longer accepted; list the integrations again and watch from the listing's event_cursor",
            ));
        }
        let plain = self
            .keys
            .open_token(&self.scope, &bytes)
            .ok_or_else(invalid)?;
        let seq = <[u8; 8]>::try_from(plain.as_slice())
            .map(i64::from_be_bytes)
            .ok()
            .filter(|seq| *seq >= 0)
            .ok_or_else(invalid)?;
        Ok(Some(Cursor(seq)))
    }
}

/// The page tokens of one listing (a team and the listing's filters).
pub struct ListingPages {
    keys: Arc<KeyRing>,
    scope: Vec<u8>,
}

fn page_token_invalid() -> Error {
    Error::invalid(
        "page_token",
        "is not a page token of this listing (a token works only with the filters it was given with)",
    )
}

impl ListingPages {
    /// The page tokens of `listing` (its filters, in a stable text form) of `team`.
    pub fn new(keys: Arc<KeyRing>, team: &TeamId, listing: &str) -> ListingPages {
        ListingPages {
            keys,
            scope: scope("page", Some(team), listing),
        }
    }

    /// The token of the page after the row created at `create_time` with `id`.
    pub fn token_after(&self, create_time: i64, id: &str) -> String {
        let mut plain = create_time.to_be_bytes().to_vec();
        plain.extend_from_slice(id.as_bytes());
        URL_SAFE_NO_PAD.encode(self.keys.seal_token(&self.scope, &plain))
    }

    /// The token of the page after the row with sequence number `seq` (newest first).
    pub fn token_after_seq(&self, seq: i64) -> String {
        self.token_after(seq, "")
    }

    fn open(&self, request: &PageRequest) -> Result<Option<(i64, String)>> {
        if request.token.is_empty() {
            return Ok(None);
        }
        let bytes = decode(&request.token).ok_or_else(page_token_invalid)?;
        let plain = self
            .keys
            .open_token(&self.scope, &bytes)
            .ok_or_else(page_token_invalid)?;
        let (position, id) = plain.split_at_checked(8).ok_or_else(page_token_invalid)?;
        let position = i64::from_be_bytes(position.try_into().map_err(|_| page_token_invalid())?);
        let id = String::from_utf8(id.to_vec()).map_err(|_| page_token_invalid())?;
        Ok(Some((position, id)))
    }

    /// Where the requested page starts: after the row its token names.
    pub fn after(&self, request: &PageRequest) -> Result<Option<PageToken>> {
        Ok(self
            .open(request)?
            .map(|(create_time, id)| PageToken { create_time, id }))
    }

    /// As [`ListingPages::after`], for a listing ordered by sequence number.
    pub fn after_seq(&self, request: &PageRequest) -> Result<Option<SeqPageToken>> {
        match self.open(request)? {
            None => Ok(None),
            Some((seq, id)) if seq > 0 && id.is_empty() => Ok(Some(SeqPageToken(seq))),
            Some(_) => Err(page_token_invalid()),
        }
    }
}

impl Context {
    /// The page tokens of `listing` (its filters, in a stable text form) of `team`.
    pub(super) fn pages(&self, team: &TeamId, listing: &str) -> ListingPages {
        ListingPages::new(self.keys().clone(), team, listing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::types::PageSize;

    fn keys() -> Arc<KeyRing> {
        Arc::new(KeyRing::generate(1).unwrap().0)
    }

    fn cursors(keys: &Arc<KeyRing>, team: &str) -> TeamCursors {
        TeamCursors::new(keys.clone(), Some(&TeamId::parse(team).unwrap()))
    }

    #[test]
    fn a_cursor_opens_for_its_team_only_and_hides_its_position() {
        let keys = keys();
        let (a, b) = (cursors(&keys, "a"), cursors(&keys, "b"));
        for seq in [0, 1, 2, 41, i64::MAX] {
            let text = a.encode(seq);
            assert_eq!(a.open("start_cursor", &text).unwrap(), Some(Cursor(seq)));
            assert!(matches!(
                b.open("start_cursor", &text),
                Err(Error::Invalid(_))
            ));
            assert_eq!(text, a.encode(seq), "the same position, the same cursor");
        }
        assert_ne!(a.encode(1), b.encode(1));
        assert_eq!(a.open("start_cursor", "").unwrap(), None);
        // The view of every team is a scope of its own.
        let every = TeamCursors::new(keys.clone(), None);
        assert!(every.open("start_cursor", &a.encode(1)).is_err());
        assert!(a.open("start_cursor", &every.encode(1)).is_err());
    }

    #[test]
    fn made_up_and_edited_cursors_are_invalid_and_retired_ones_expire() {
        let keys = keys();
        let a = cursors(&keys, "a");
        let text = a.encode(7);
        let mut edited = URL_SAFE_NO_PAD.decode(&text).unwrap();
        edited[20] ^= 1;
        for bad in [
            "x".to_owned(),
            "!!".to_owned(),
            URL_SAFE_NO_PAD.encode(edited),
            "A".repeat(MAX_TOKEN_CHARS + 4),
            text[..text.len() - 2].to_owned(),
        ] {
            let err = a.open("start_cursor", &bad).unwrap_err();
            assert!(matches!(err, Error::Invalid(_)), "{bad:?}: {err:?}");
        }
        // The clear format of earlier versions: `ihc1` and a big-endian sequence number.
        let mut retired = b"ihc1".to_vec();
        retired.extend_from_slice(&5i64.to_be_bytes());
        let err = a
            .open("start_cursor", &URL_SAFE_NO_PAD.encode(retired))
            .unwrap_err();
        assert!(matches!(
            err,
            Error::FailedPrecondition {
                reason: Precondition::CursorExpired,
                ..
            }
        ));
    }

    #[test]
    fn page_tokens_are_bound_to_team_and_listing() {
        let keys = keys();
        let pages = |team: &str, listing: &str| {
            ListingPages::new(keys.clone(), &TeamId::parse(team).unwrap(), listing)
        };
        let request = |token: String| PageRequest {
            size: PageSize::parse(0).unwrap(),
            token,
        };
        let own = pages("a", "integrations::");
        let token = own.token_after(123, "abc");
        assert_eq!(
            own.after(&request(token.clone())).unwrap(),
            Some(PageToken {
                create_time: 123,
                id: "abc".into()
            })
        );
        for other in [
            pages("b", "integrations::"),
            pages("a", "integrations::BROKEN"),
        ] {
            assert!(other.after(&request(token.clone())).is_err());
        }
        let seq = own.token_after_seq(9);
        assert_eq!(own.after_seq(&request(seq)).unwrap(), Some(SeqPageToken(9)));
        assert!(own.after_seq(&request(token)).is_err());
        assert!(own.after(&request("garbage".into())).is_err());
    }
}
