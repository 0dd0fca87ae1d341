//! Newtypes parsed at the edge: a value of one of these types is valid by construction.
//! Each `parse` returns a description of the problem (never the value) for a field violation.

use std::fmt;
use std::sync::OnceLock;

use prost::bytes::Bytes;

use crate::store::RowBytes;

/// Longest display name, `connected_to` or similar human text, in characters.
pub const MAX_TEXT_CHARS: usize = 200;
/// Longest detail of a reported rejection, in characters.
pub const MAX_DETAIL_CHARS: usize = 1000;

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

fn parse_id(value: &str, what: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err(format!("{what} is required"));
    }
    if value.len() > 64 || !value.chars().all(is_id_char) {
        return Err(format!(
            "{what} must be 1 to 64 characters of letters, digits, '-' and '_'"
        ));
    }
    Ok(value.to_owned())
}

/// A team id: 1 to 64 characters of `[A-Za-z0-9_-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TeamId(String);

impl TeamId {
    pub fn parse(value: &str) -> Result<TeamId, String> {
        parse_id(value, "team id").map(TeamId)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `teams/{team}`.
    pub fn resource_name(&self) -> String {
        format!("teams/{}", self.0)
    }
}

impl fmt::Display for TeamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which team(s) a request is about, from a `parent` field: `teams/{team}`, `teams/-` (every
/// team) or empty (the caller's own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParentRef {
    Own,
    Team(TeamId),
    AllTeams,
}

impl ParentRef {
    pub fn parse(value: &str) -> Result<ParentRef, String> {
        if value.is_empty() {
            return Ok(ParentRef::Own);
        }
        match value.strip_prefix("teams/") {
            Some("-") => Ok(ParentRef::AllTeams),
            Some(team) => TeamId::parse(team)
                .map(ParentRef::Team)
                .map_err(|_| "must be teams/{team} with a valid team id".to_owned()),
            None => Err("must be teams/{team}".to_owned()),
        }
    }
}

macro_rules! resource_name {
    ($name:ident, $collection:literal, $kind:literal) => {
        #[doc = concat!("`teams/{team}/", $collection, "/{id}`.")]
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        pub struct $name {
            pub team: TeamId,
            pub id: String,
        }

        impl $name {
            pub const KIND: &'static str = $kind;

            pub fn new(team: TeamId, id: String) -> Self {
                $name { team, id }
            }

            pub fn parse(value: &str) -> Result<Self, String> {
                let shape = concat!("must be teams/{team}/", $collection, "/{id}");
                let mut parts = value.split('/');
                match (
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                    parts.next(),
                ) {
                    (Some("teams"), Some(team), Some($collection), Some(id), None) => Ok($name {
                        team: TeamId::parse(team).map_err(|_| shape.to_owned())?,
                        id: parse_id(id, "id").map_err(|_| shape.to_owned())?,
                    }),
                    _ if value.is_empty() => Err("is required".to_owned()),
                    _ => Err(shape.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    concat!("teams/{}/", $collection, "/{}"),
                    self.team, self.id
                )
            }
        }
    };
}

resource_name!(AppName, "installedApps", "installed app");
resource_name!(IntegrationName, "integrations", "integration");
resource_name!(
    AuthorizationName,
    "installedAppAuthorizations",
    "installed app authorization"
);
resource_name!(WebhookName, "webhookSubscriptions", "webhook subscription");
resource_name!(RequestName, "installationRequests", "installation request");

/// A fresh resource id (32 lowercase hex digits): a time-ordered UUID (version 7: the Unix
/// time in milliseconds, then 74 random bits from the system's generator). Ids made later sort later, so a
/// new row lands at the right edge of the unique index on its id (the same few pages for
/// every insert) instead of on a random page: with random ids, each audit record of a group
/// commit dirtied a page of its own, all written to the WAL at commit. Ids are names, not
/// secrets: they say when they were made, as the resources' create times do.
pub fn new_id() -> String {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let Some(random) = id_random() else {
        // The system's generator failed (it does not, once the kernel's is seeded): an id
        // from the version 4 generator, which has its own source, is as unique.
        return uuid::Uuid::new_v4().simple().to_string();
    };
    uuid::Builder::from_unix_timestamp_millis(millis, &random)
        .into_uuid()
        .simple()
        .to_string()
}

/// Random bytes for one id, from a per-thread buffer of the system generator's bytes, filled
/// [`IDS_PER_FILL`] ids at a time: one system call for that many ids, not one for each (a
/// resolution writes an audit record, so every resolution made one). Each byte is used once.
fn id_random() -> Option<[u8; ID_RANDOM]> {
    use std::cell::RefCell;
    thread_local! {
        static BUFFER: RefCell<(Box<[u8; ID_RANDOM * IDS_PER_FILL]>, usize)> =
            RefCell::new((Box::new([0; ID_RANDOM * IDS_PER_FILL]), ID_RANDOM * IDS_PER_FILL));
    }
    BUFFER.with_borrow_mut(|(bytes, used)| {
        if *used == bytes.len() {
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes[..])
                .ok()?;
            *used = 0;
        }
        let mut random = [0u8; ID_RANDOM];
        random.copy_from_slice(&bytes[*used..*used + ID_RANDOM]);
        *used += ID_RANDOM;
        Some(random)
    })
}

/// The random bytes an id takes (74 of their bits are used), and how many ids one fill of
/// [`id_random`]'s buffer serves.
const ID_RANDOM: usize = 10;
const IDS_PER_FILL: usize = 256;

fn check_text(value: &str, max: usize) -> Result<(), String> {
    if value.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    if crate::text::has_unsafe_char(value) {
        return Err(crate::text::UNSAFE_DESCRIPTION.to_owned());
    }
    Ok(())
}

/// A human-readable name: 1 to 200 characters, not blank, none of `crate::text::is_unsafe_char`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(value: &str) -> Result<DisplayName, String> {
        if value.trim().is_empty() {
            return Err("is required".to_owned());
        }
        check_text(value, MAX_TEXT_CHARS)?;
        Ok(DisplayName(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// Free text of at most `MAX` characters without `crate::text::is_unsafe_char` (may be empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Text<const MAX: usize>(String);

impl<const MAX: usize> Text<MAX> {
    pub fn parse(value: &str) -> Result<Self, String> {
        check_text(value, MAX)?;
        Ok(Text(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// The account on the other side of an installed app.
pub type ConnectedTo = Text<MAX_TEXT_CHARS>;
/// Subject of the person who owns a record: 1 to 200 characters, none unsafe (as above).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner(String);

impl Owner {
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.trim().is_empty() {
            return Err("is required".into());
        }
        check_text(value, MAX_TEXT_CHARS)?;
        Ok(Owner(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// What a third party said when it rejected credentials.
pub type RejectionDetail = Text<MAX_DETAIL_CHARS>;
/// Why an admin suspended an installed app: free text of the same bounds.
pub type SuspensionReason = Text<MAX_DETAIL_CHARS>;

/// An idempotency key, from a create request's `request_id`: 1 to 100 characters of
/// `[A-Za-z0-9._:-]`; empty means none. (Not the call's request id, which ties logs and audit
/// records together.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse_optional(value: &str) -> Result<Option<IdempotencyKey>, String> {
        if value.is_empty() {
            return Ok(None);
        }
        let ok = value.len() <= 100
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._:-".contains(c));
        if ok {
            Ok(Some(IdempotencyKey(value.to_owned())))
        } else {
            Err("must be 1 to 100 characters of letters, digits, '.', '_', ':' and '-'".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A page size: 0 means the default (50); above 1000 is lowered to 1000; negative is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSize(u64);

impl PageSize {
    pub const DEFAULT: u64 = 50;
    pub const MAX: u64 = 1000;

    pub fn parse(value: i32) -> Result<PageSize, String> {
        match value {
            v if v < 0 => Err("must not be negative".to_owned()),
            0 => Ok(PageSize(Self::DEFAULT)),
            v => Ok(PageSize((v as u64).min(Self::MAX))),
        }
    }

    pub fn get(self) -> u64 {
        self.0
    }

    /// How many rows to read for a page: one more than it holds, to tell whether another
    /// page follows.
    pub fn read_limit(self) -> u64 {
        self.0 + 1
    }

    /// Cuts `rows` (read with [`PageSize::read_limit`]) to this page, and to
    /// [`MAX_PAGE_BYTES`] (at least one row); returns the token of the next page, made by
    /// `token_after` from the last row kept, or empty when none follows.
    pub fn cut<R: RowBytes>(
        self,
        rows: &mut Vec<R>,
        token_after: impl FnOnce(&R) -> String,
    ) -> String {
        let mut bytes = 0;
        let fits = rows
            .iter()
            .take(self.0 as usize)
            .position(|row| {
                bytes += row.row_bytes();
                bytes > MAX_PAGE_BYTES
            })
            .map_or(self.0 as usize, |past| past.max(1));
        let more = rows.len() > fits;
        rows.truncate(fits);
        match (more, rows.last()) {
            (true, Some(last)) => token_after(last),
            _ => String::new(),
        }
    }
}

/// Most bytes of rows one page holds (as [`RowBytes`] estimates them): a page of large
/// rows ends early, with a token for the rest, so no answer grows with what a team stored.
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;

/// A page of results.
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// A page and the event cursor as of the same read, as a listing answers and the read cache
/// keeps them, with the page's items as the API encoded them the first time it sent the page:
/// kept beside them, so a page answered again from the cache is not encoded again.
pub struct Listing<T> {
    pub page: Page<T>,
    pub cursor: Cursor,
    pub encoded: OnceLock<Bytes>,
}

impl<T> Listing<T> {
    pub fn new(page: Page<T>, cursor: Cursor) -> Self {
        Listing {
            page,
            cursor,
            encoded: OnceLock::new(),
        }
    }
}

/// Which page a listing request asks for. The token is checked where the listing is known
/// (a token is bound to its listing and filters): by the domain, for every listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub size: PageSize,
    pub token: String,
}

/// Where the previous page of a listing ordered by creation ended. Clients see it sealed
/// (`tokens.rs`), bound to its team and listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageToken {
    pub create_time: i64,
    pub id: String,
}

impl PageToken {
    /// The token of the page after the row created at `create_time` with `id`.
    pub fn after(create_time: i64, id: &str) -> PageToken {
        PageToken {
            create_time,
            id: id.to_owned(),
        }
    }
}

impl From<PageToken> for crate::store::After {
    fn from(token: PageToken) -> Self {
        crate::store::After {
            create_time: token.create_time,
            id: token.id,
        }
    }
}

/// Where the previous page of a listing ordered by sequence number (newest first) ended.
/// Clients see it sealed (`tokens.rs`), bound to its team and listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqPageToken(pub i64);

/// A position in the event log: the sequence number of the last event before it. Clients see
/// it sealed and bound to their team (`tokens.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor(pub i64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_unique_and_later_ones_sort_later() {
        let first = new_id();
        let many: std::collections::BTreeSet<String> = (0..10_000).map(|_| new_id()).collect();
        assert_eq!(many.len(), 10_000, "no id repeats");
        assert!(many.iter().all(|id| {
            id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        }));
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = new_id();
        assert!(first < later, "{first} then {later}");
        assert!(
            many.iter().all(|id| *id < later),
            "made a millisecond later, sorts later"
        );
        // A version 7 UUID: 74 random bits, so ids of the same millisecond differ.
        assert_eq!(uuid::Uuid::parse_str(&later).unwrap().get_version_num(), 7);
    }

    #[test]
    fn ids_made_on_many_threads_at_once_never_repeat_their_random_part() {
        // Each thread draws from a buffer of its own, refilled every `IDS_PER_FILL` ids:
        // threads that started together, and each refill, must still give fresh bytes.
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(|| (0..3 * IDS_PER_FILL).map(|_| new_id()).collect::<Vec<_>>())
            })
            .collect();
        let ids: Vec<String> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_default())
            .collect::<Vec<String>>();
        assert_eq!(ids.len(), 8 * 3 * IDS_PER_FILL);
        // The last 16 hex digits are random bits only (the first 16 hold the time).
        let random: std::collections::HashSet<&str> = ids.iter().map(|id| &id[16..]).collect();
        assert_eq!(random.len(), ids.len(), "a random part repeated");
        assert!(
            ids.iter()
                .all(|id| uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 7)),
            "every id is a version 7 UUID (none from the fallback)"
        );
    }

    #[test]
    fn team_ids_accept_the_documented_alphabet_only() {
        assert!(TeamId::parse("team_1-A").is_ok());
        for bad in ["", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(TeamId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resource_names_round_trip_and_refuse_other_shapes() {
        let name = AppName::parse("teams/t1/installedApps/abc").unwrap();
        assert_eq!(name.team.as_str(), "t1");
        assert_eq!(name.to_string(), "teams/t1/installedApps/abc");
        for bad in [
            "",
            "teams/t1/integrations/abc",
            "teams/t1/installedApps/",
            "teams//installedApps/abc",
            "teams/t1/installedApps/abc/x",
            "installedApps/abc",
            "teams/t 1/installedApps/abc",
        ] {
            assert!(AppName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(IntegrationName::parse("teams/t1/integrations/x_1").is_ok());
    }

    #[test]
    fn parents_are_own_team_one_team_or_all() {
        assert_eq!(ParentRef::parse(""), Ok(ParentRef::Own));
        assert_eq!(ParentRef::parse("teams/-"), Ok(ParentRef::AllTeams));
        assert_eq!(
            ParentRef::parse("teams/a"),
            Ok(ParentRef::Team(TeamId::parse("a").unwrap()))
        );
        assert!(ParentRef::parse("a").is_err());
        assert!(ParentRef::parse("teams/a/b").is_err());
    }

    #[test]
    fn display_names_must_be_short_printable_and_not_blank() {
        assert!(DisplayName::parse("Slack (ops)").is_ok());
        assert!(DisplayName::parse(&"é".repeat(200)).is_ok());
        for bad in [
            "",
            "   ",
            "a\nb",
            "a\u{202e}b",
            "a\u{2029}b",
            &"x".repeat(201),
        ] {
            assert!(DisplayName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ConnectedTo::parse("").is_ok());
    }

    #[test]
    fn page_sizes_default_clamp_and_refuse_negatives() {
        assert_eq!(PageSize::parse(0).unwrap().get(), 50);
        assert_eq!(PageSize::parse(7).unwrap().get(), 7);
        assert_eq!(PageSize::parse(5000).unwrap().get(), 1000);
        assert!(PageSize::parse(-1).is_err());
    }

    #[test]
    fn idempotency_keys_are_optional_and_bounded() {
        assert_eq!(IdempotencyKey::parse_optional(""), Ok(None));
        assert!(
            IdempotencyKey::parse_optional("5f0c-retry:1")
                .unwrap()
                .is_some()
        );
        assert!(IdempotencyKey::parse_optional(&"a".repeat(101)).is_err());
        assert!(IdempotencyKey::parse_optional("a b").is_err());
    }

    #[test]
    fn a_page_is_cut_to_its_size_and_names_its_last_row_only_when_more_follow() {
        let size = PageSize::parse(2).unwrap();
        assert_eq!(size.read_limit(), 3);
        let mut rows = vec!["a", "b", "c"];
        assert_eq!(
            size.cut(&mut rows, |last| format!("after {last}")),
            "after b"
        );
        assert_eq!(rows, ["a", "b"]);
        let mut rows = vec!["a", "b"];
        assert_eq!(size.cut(&mut rows, |last| format!("after {last}")), "");
        assert_eq!(rows, ["a", "b"]);
        let mut rows: Vec<&str> = Vec::new();
        assert_eq!(size.cut(&mut rows, |last| format!("after {last}")), "");
    }

    impl RowBytes for &str {
        fn row_bytes(&self) -> usize {
            self.len()
        }
    }

    impl RowBytes for String {
        fn row_bytes(&self) -> usize {
            self.len()
        }
    }

    #[test]
    fn a_page_of_large_rows_ends_at_its_byte_bound_with_a_token_and_a_huge_row_comes_alone() {
        let size = PageSize::parse(1000).unwrap();
        let row = |n: usize| format!("{}{n}", "0".repeat(300_000));
        let mut rows: Vec<String> = (0..10).map(row).collect();
        let token = size.cut(&mut rows, |last| {
            format!("after {}", last.trim_start_matches('0'))
        });
        assert_eq!(
            rows.len(),
            3,
            "3 rows of 300,000 bytes fit in 1 MiB, 4 do not"
        );
        assert_eq!(token, "after 2");
        let mut rows = vec!["x".repeat(MAX_PAGE_BYTES * 2), "y".to_owned()];
        assert!(!size.cut(&mut rows, |_| "more".to_owned()).is_empty());
        assert_eq!(rows.len(), 1);
    }
}
