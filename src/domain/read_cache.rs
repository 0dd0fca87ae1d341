//! Reads without a database round trip: recent answers of Get, List and the credential
//! resolution's read, kept per team and dropped as soon as the team changes.
//!
//! How current an entry is:
//! - every change committed by this replica ([`super::context::Context::write`]) marks its team
//!   changed before it answers, so this replica reads its own writes;
//! - every event of the outbox, which every replica tails, marks its team changed on the
//!   replica that reads it (another replica's write, tens of milliseconds later);
//! - and an entry is never used after its time to live, whatever the log says (changes that
//!   are not events, such as the last use of a record, or a tailer that lags).
//!
//! A resolution never hands out credentials on the strength of this cache alone: its audit
//! record's transaction checks the versions it read ([`super::audit_batch`]), so a delete,
//! suspension or rejection acknowledged on any replica is never answered from here.
//!
//! Bounded in bytes: an entry is counted by what it holds (credentials are client data), and
//! when the budget is spent the oldest entries go first.

use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long entries live and how many bytes they may hold together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadCacheSettings {
    /// Zero turns the cache off: every read goes to the database.
    pub ttl: Duration,
    pub budget_bytes: usize,
}

impl ReadCacheSettings {
    pub const OFF: ReadCacheSettings = ReadCacheSettings {
        ttl: Duration::ZERO,
        budget_bytes: 0,
    };
}

impl Default for ReadCacheSettings {
    fn default() -> Self {
        ReadCacheSettings {
            ttl: Duration::from_secs(1),
            budget_bytes: 32 * 1024 * 1024,
        }
    }
}

/// What an entry costs beyond the bytes its value declares (key, map slot, bookkeeping).
const ENTRY_OVERHEAD: usize = 160;
/// Teams whose last change is remembered; beyond it every entry is dropped at once.
const MAX_TEAMS: usize = 100_000;

/// The moment a read began, taken before it reads the database: what it read may be kept
/// only if its team has not changed since.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ticket(u64);

struct Entry {
    team: Arc<str>,
    stamp: u64,
    filled: Instant,
    bytes: usize,
    value: Arc<dyn Any + Send + Sync>,
}

#[derive(Default)]
struct Inner {
    /// Counts every change mark; a team's entry holds the count at its last change.
    stamp: u64,
    /// Entries stamped before this are gone (teams forgotten, lag).
    floor: u64,
    changed: HashMap<Arc<str>, u64>,
    entries: HashMap<String, Entry>,
    bytes: usize,
}

impl Inner {
    fn last_change(&self, team: &str) -> u64 {
        self.changed.get(team).copied().unwrap_or(self.floor)
    }

    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.remove(key) {
            self.bytes -= entry.bytes;
        }
    }
}

/// The cache of one replica; see the module comment.
pub struct ReadCache {
    settings: ReadCacheSettings,
    inner: Mutex<Inner>,
}

impl ReadCache {
    pub fn new(settings: ReadCacheSettings) -> ReadCache {
        ReadCache {
            settings,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn settings(&self) -> ReadCacheSettings {
        self.settings
    }

    fn enabled(&self) -> bool {
        !self.settings.ttl.is_zero() && self.settings.budget_bytes > 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent maps: keep using them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks `team` changed: nothing read of it before now is answered again.
    pub fn changed(&self, team: &str) {
        if !self.enabled() {
            return;
        }
        let mut inner = self.lock();
        inner.stamp += 1;
        let stamp = inner.stamp;
        if let Some(last) = inner.changed.get_mut(team) {
            *last = stamp;
            return;
        }
        if inner.changed.len() >= MAX_TEAMS {
            inner.changed.clear();
            inner.floor = stamp;
            inner.entries.clear();
            inner.bytes = 0;
            return;
        }
        inner.changed.insert(Arc::from(team), stamp);
    }

    /// Forgets everything (the event tailer lagged: changes may have been missed).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.stamp += 1;
        inner.floor = inner.stamp;
        inner.changed.clear();
        inner.entries.clear();
        inner.bytes = 0;
    }

    /// Taken before a read whose answer may be kept with [`ReadCache::put`].
    pub(super) fn ticket(&self) -> Ticket {
        Ticket(self.lock().stamp)
    }

    /// The value kept under `key` for `team`, if its team has not changed since it was read
    /// and it is younger than the time to live.
    pub(super) fn get<T: Any + Send + Sync>(&self, team: &str, key: &str) -> Option<Arc<T>> {
        if !self.enabled() {
            return None;
        }
        let mut inner = self.lock();
        let last_change = inner.last_change(team);
        let entry = inner.entries.get(key)?;
        if entry.stamp < last_change
            || entry.filled.elapsed() >= self.settings.ttl
            || *entry.team != *team
        {
            inner.remove(key);
            return None;
        }
        entry.value.clone().downcast::<T>().ok()
    }

    /// Keeps `value`, read for `team` after `ticket` was taken, under `key`; `bytes` is what
    /// it holds. Nothing is kept if the team changed since the ticket (the read may predate
    /// the change) or the value alone exceeds a sixteenth of the budget.
    pub(super) fn put<T: Any + Send + Sync>(
        &self,
        team: &str,
        key: String,
        ticket: Ticket,
        value: Arc<T>,
        bytes: usize,
    ) {
        if !self.enabled() {
            return;
        }
        let bytes = bytes + key.len() + team.len() + ENTRY_OVERHEAD;
        let budget = self.settings.budget_bytes;
        if bytes > budget / 16 {
            return;
        }
        let mut inner = self.lock();
        if inner.last_change(team) > ticket.0 || ticket.0 < inner.floor {
            return;
        }
        inner.remove(&key);
        if inner.bytes + bytes > budget {
            evict_oldest(&mut inner, budget - budget / 4);
        }
        let team = match inner.changed.get_key_value(team) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(team),
        };
        inner.bytes += bytes;
        inner.entries.insert(
            key,
            Entry {
                team,
                stamp: ticket.0,
                filled: Instant::now(),
                bytes,
                value,
            },
        );
    }

    /// Drops the entry under `key` (its value turned out to be outdated).
    pub(super) fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Bytes held, as counted.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl super::context::Context {
    /// The answer kept for `key` of `team`, or `read`'s, then kept (with its size by `bytes`).
    pub(super) async fn read_through_cache<T: Send + Sync + 'static>(
        &self,
        team: &str,
        key: String,
        bytes: impl FnOnce(&T) -> usize,
        read: impl AsyncFnOnce() -> super::error::Result<T>,
    ) -> super::error::Result<Arc<T>> {
        if let Some(kept) = self.cache().get::<T>(team, &key) {
            return Ok(kept);
        }
        let ticket = self.cache().ticket();
        let value = Arc::new(read().await?);
        let size = bytes(&value);
        self.cache().put(team, key, ticket, value.clone(), size);
        Ok(value)
    }
}

/// Drops the oldest entries until at most `target` bytes remain.
fn evict_oldest(inner: &mut Inner, target: usize) {
    let mut by_age: Vec<(Instant, String)> = inner
        .entries
        .iter()
        .map(|(key, entry)| (entry.filled, key.clone()))
        .collect();
    by_age.sort_unstable_by_key(|(filled, _)| *filled);
    for (_, key) in by_age {
        if inner.bytes <= target {
            break;
        }
        inner.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(ttl_ms: u64, budget: usize) -> ReadCache {
        ReadCache::new(ReadCacheSettings {
            ttl: Duration::from_millis(ttl_ms),
            budget_bytes: budget,
        })
    }

    fn keep(cache: &ReadCache, team: &str, key: &str, value: u32) {
        let ticket = cache.ticket();
        cache.put(team, key.to_owned(), ticket, Arc::new(value), 8);
    }

    #[test]
    fn a_kept_value_is_answered_until_its_team_changes() {
        let c = cache(60_000, 1 << 20);
        keep(&c, "acme", "a", 1);
        keep(&c, "globex", "g", 2);
        assert_eq!(c.get::<u32>("acme", "a").as_deref(), Some(&1));
        c.changed("acme");
        assert_eq!(c.get::<u32>("acme", "a"), None, "the team changed");
        assert_eq!(
            c.get::<u32>("globex", "g").as_deref(),
            Some(&2),
            "another team's change does not matter"
        );
        assert_eq!(c.len(), 1, "the outdated entry is gone");
    }

    #[test]
    fn a_read_that_began_before_a_change_is_not_kept() {
        let c = cache(60_000, 1 << 20);
        let ticket = c.ticket();
        c.changed("acme");
        c.put("acme", "a".into(), ticket, Arc::new(1u32), 8);
        assert_eq!(c.get::<u32>("acme", "a"), None);
        // Read after the change: kept.
        keep(&c, "acme", "a", 2);
        assert_eq!(c.get::<u32>("acme", "a").as_deref(), Some(&2));
    }

    #[test]
    fn an_entry_is_not_answered_after_its_time_to_live() {
        let c = cache(30, 1 << 20);
        keep(&c, "acme", "a", 1);
        assert!(c.get::<u32>("acme", "a").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get::<u32>("acme", "a"), None);
    }

    #[test]
    fn a_key_of_another_team_or_type_is_not_answered() {
        let c = cache(60_000, 1 << 20);
        keep(&c, "acme", "a", 1);
        assert_eq!(c.get::<u32>("globex", "a"), None);
        keep(&c, "acme", "a", 1);
        assert_eq!(c.get::<String>("acme", "a"), None);
    }

    #[test]
    fn the_byte_budget_holds_and_the_oldest_go_first() {
        let budget = 64 * 1024;
        let c = cache(60_000, budget);
        for i in 0..1000 {
            let ticket = c.ticket();
            c.put("acme", format!("k{i}"), ticket, Arc::new(i), 1000);
            assert!(c.bytes() <= budget, "{} bytes held", c.bytes());
        }
        assert!(c.get::<i32>("acme", "k999").is_some(), "the newest stays");
        assert_eq!(c.get::<i32>("acme", "k0"), None, "the oldest went");
        // One value beyond a sixteenth of the budget is never kept.
        let ticket = c.ticket();
        c.put("acme", "huge".into(), ticket, Arc::new(0), budget / 8);
        assert_eq!(c.get::<i32>("acme", "huge"), None);
    }

    #[test]
    fn clear_and_too_many_teams_drop_everything() {
        let c = cache(60_000, 1 << 20);
        keep(&c, "acme", "a", 1);
        c.clear();
        assert_eq!(c.get::<u32>("acme", "a"), None);
        keep(&c, "acme", "a", 1);
        let ticket = c.ticket();
        for i in 0..=MAX_TEAMS {
            c.changed(&format!("team-{i}"));
        }
        assert_eq!(c.get::<u32>("acme", "a"), None);
        // A read that began before the teams were forgotten is not kept either.
        c.put("acme", "b".into(), ticket, Arc::new(2u32), 8);
        assert_eq!(c.get::<u32>("acme", "b"), None);
        assert!(c.lock().changed.len() < MAX_TEAMS);
    }

    #[test]
    fn off_keeps_nothing() {
        let c = ReadCache::new(ReadCacheSettings::OFF);
        keep(&c, "acme", "a", 1);
        assert_eq!(c.get::<u32>("acme", "a"), None);
        assert!(c.is_empty());
    }

    mod resolutions {
        use crate::domain::error::Error;
        use crate::domain::installed_apps::AppChanges;
        use crate::domain::model::Role;
        use crate::domain::test_support::{actor, credentials, hub};
        use crate::domain::types::{IntegrationName, RejectionDetail};

        #[derive(Clone, Copy, Debug)]
        enum Change {
            Delete,
            Suspend,
            Reject,
            NewCredentials,
        }

        /// Replica B kept a resolution's read; replica A (no event reaches B: B has no
        /// tailer) changes the app and answers. B never hands out the old credentials.
        #[tokio::test]
        async fn a_change_acknowledged_by_another_replica_is_never_answered_from_the_cache() {
            let t = hub().await;
            let b = t.replica();
            let runner = actor(Role::Service, "runner");
            let admin = actor(Role::Admin, "alice");
            for change in [
                Change::Delete,
                Change::Suspend,
                Change::Reject,
                Change::NewCredentials,
            ] {
                let app = t.app(&format!("Slack {change:?}")).await;
                let job = t.bound(&app, "Job").await;
                let name = IntegrationName::parse(&job.name()).unwrap();
                // The first use is recorded (a write of its own); the second is kept.
                for _ in 0..2 {
                    let first = b
                        .integrations()
                        .resolve_credentials(&runner, &name)
                        .await
                        .unwrap();
                    assert_eq!(first.credentials.expose()["access_token"], "xoxb-1");
                }
                let key = format!("resolve|{}|{}", name.team, name.id);
                assert!(
                    b.read_cache()
                        .get::<crate::domain::credentials::ResolutionPlan>("acme", &key)
                        .is_some(),
                    "B kept what it read"
                );
                let reason = RejectionDetail::parse("leaked").unwrap();
                match change {
                    Change::Delete => {
                        t.hub
                            .apps()
                            .delete_installed_app(&admin, &app.name, None, false)
                            .await
                            .unwrap();
                    }
                    Change::Suspend => {
                        t.hub
                            .apps()
                            .suspend_installed_app(&admin, &app.name, reason)
                            .await
                            .unwrap();
                    }
                    Change::Reject => {
                        t.hub
                            .apps()
                            .report_credentials_rejected(&runner, &app.name, reason)
                            .await
                            .unwrap();
                    }
                    Change::NewCredentials => {
                        let changes = AppChanges {
                            etag: None,
                            display_name: None,
                            connected_to: None,
                            credentials: Some(credentials("xoxb-2")),
                        };
                        t.hub
                            .apps()
                            .update_installed_app(&admin, &app.name, changes)
                            .await
                            .unwrap();
                    }
                }
                let after = b.integrations().resolve_credentials(&runner, &name).await;
                match (change, after) {
                    (Change::NewCredentials, Ok(resolved)) => {
                        assert_eq!(resolved.credentials.expose()["access_token"], "xoxb-2");
                    }
                    (Change::Delete | Change::Reject, Err(Error::FailedPrecondition { .. })) => {}
                    (Change::Suspend, Err(err)) => {
                        assert!(err.to_string().contains("suspended"), "{err}");
                    }
                    (change, other) => panic!(
                        "{change:?}: B answered {:?}",
                        other.map(|r| r.credentials.expose().len())
                    ),
                }
            }
        }
    }
}
