//! What the domain's services (see [`super::hub`]) share: the [`Context`] (store, key ring,
//! catalog, clock, read cache), and [`Context::write`], the one way an audited change is
//! written: each operation checks the caller, reads, decides, and writes the change, its
//! events and its audit record in one transaction (the rules of docs/rules.md).
//!
//! The operations live beside the things they change, on their service:
//! [`super::installed_apps`], [`super::integrations`], [`super::reauth`] (state changes:
//! breaking and restoring), [`super::credentials`] (the credential check, resolution,
//! idempotent creates), [`super::oauth`], [`super::webhooks`], [`super::audit`].

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::crypto::{Aad, Credentials, KeyRing};
use crate::store::{AppRow, AuditRow, EventRow, IntegrationRow, Store, Tx};

use super::app_events::{AppSnapshot, ScopeChange};
use super::audit_reads::ReadAudits;
use super::catalog::{Catalog, FieldDef, ServiceDef, check_fields};
use super::error::{Error, FieldViolation, Result};
use super::model::{Actor, AppEventKind, AuditAction, BrokenReason, EventKind, Integration, etag};
use super::read_cache::{ReadCache, ReadCacheSettings};
use super::types::{AppName, IntegrationName, TeamId, new_id};

/// Where time comes from: injected, so tests can control it.
pub trait Clock: Send + Sync {
    /// Microseconds since the Unix epoch.
    fn now_micros(&self) -> i64;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
    }
}

/// What every service of the domain shares: the store, the key ring, the catalog, the clock
/// and the read cache; and the one way a change is written ([`Context::write`]). Its parts
/// are private: a service reads them through the accessors below.
#[derive(Clone)]
pub struct Context {
    store: Store,
    keys: Arc<KeyRing>,
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
    /// Recent reads, dropped when their team changes (`read_cache.rs`).
    cache: Arc<ReadCache>,
    /// Subjects of the service accounts that may read every team's audit log.
    audit_readers: Arc<Vec<String>>,
    /// Whether Get and List of credential-bearing resources are audited (`audit_reads.rs`).
    read_audits: Arc<ReadAudits>,
}

pub(super) fn not_found_app(name: &AppName) -> Error {
    Error::NotFound {
        kind: AppName::KIND,
        name: name.to_string(),
    }
}

pub(super) fn not_found_integration(name: &IntegrationName) -> Error {
    Error::NotFound {
        kind: IntegrationName::KIND,
        name: name.to_string(),
    }
}

pub(super) fn check_etag(given: &Option<String>, version: i64) -> Result<()> {
    match given {
        Some(given) if *given != etag(version) => Err(Error::EtagMismatch(
            "the etag does not match the current version; read the resource again".into(),
        )),
        _ => Ok(()),
    }
}

/// Checks submitted values against catalog fields, naming each problem under `prefix`.
pub(super) fn check_values(
    prefix: &str,
    fields: &[FieldDef],
    values: &BTreeMap<String, String>,
    max_entries: usize,
    max_value: usize,
) -> Result<()> {
    check_fields(fields, values, max_entries, max_value).map_err(|problems| {
        Error::Invalid(
            problems
                .iter()
                .map(|p| FieldViolation::new(p.path(prefix), p.description.clone()))
                .collect(),
        )
    })
}

impl Context {
    pub fn new(
        store: Store,
        keys: Arc<KeyRing>,
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
    ) -> Context {
        Context {
            store,
            keys,
            catalog,
            clock,
            cache: Arc::new(ReadCache::new(ReadCacheSettings::default())),
            audit_readers: Arc::default(),
            read_audits: Arc::default(),
        }
    }

    /// This context auditing reads (`INTEGRATION_HUB_AUDIT_READS`) or not.
    pub fn with_read_audits(&self, enabled: bool) -> Context {
        Context {
            read_audits: Arc::new(ReadAudits::new(enabled)),
            ..self.clone()
        }
    }

    pub(super) fn read_audits(&self) -> &ReadAudits {
        &self.read_audits
    }

    /// This context with these audit readers (`INTEGRATION_HUB_AUDIT_READERS`).
    pub fn with_audit_readers(&self, readers: Vec<String>) -> Context {
        Context {
            audit_readers: Arc::new(readers),
            ..self.clone()
        }
    }

    /// Whether the service account `subject` is a named audit reader.
    pub fn is_audit_reader(&self, subject: &str) -> bool {
        self.audit_readers.iter().any(|reader| reader == subject)
    }

    /// This context with a read cache of these settings ([`ReadCacheSettings::OFF`]: none).
    pub fn with_read_cache(&self, settings: ReadCacheSettings) -> Context {
        Context {
            cache: Arc::new(ReadCache::new(settings)),
            ..self.clone()
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The read cache (the event tailer marks the teams whose events it reads).
    pub fn cache(&self) -> &Arc<ReadCache> {
        &self.cache
    }

    pub(super) fn service(&self, id: &str, field: &str) -> Result<&ServiceDef> {
        self.catalog
            .service(id)
            .ok_or_else(|| Error::invalid(field, "is not a service of the catalog"))
    }

    pub(super) fn now(&self) -> i64 {
        self.clock.now_micros()
    }

    /// Seals credentials to their team and owner; returns the sealed value and its key version.
    pub(super) fn seal(
        &self,
        team: &TeamId,
        owner: &str,
        credentials: &Credentials,
    ) -> Result<(Vec<u8>, i32)> {
        let aad = Aad {
            team: team.as_str(),
            owner,
        };
        let sealed = self.keys.seal_credentials(&aad, credentials)?;
        let key_version = KeyRing::sealed_key_version(&sealed)? as i32;
        Ok((sealed, key_version))
    }

    /// A write for `actor` that nothing commits: dropped, it rolls back. What [`Context::write`]
    /// runs an operation in, and what a preview (`validate_only`) reads in.
    pub(super) fn draft<'a>(&'a self, actor: &'a Actor) -> Write<'a> {
        Write {
            store: &self.store,
            actor,
            tx: None,
            events: Vec::new(),
            resource: None,
            also_audited: Vec::new(),
        }
    }

    /// Runs one audited change. `op` does the work in a [`Write`]; when it returns
    /// [`Done::Commit`], its events and its success record are appended in the same
    /// transaction, which then commits. Any error rolls everything back and is recorded in
    /// the audit log on its own (see `audit`). This is the only place a change commits, so
    /// no change can lose its events or its record.
    pub(super) async fn write<T>(
        &self,
        actor: &Actor,
        audited: Audited,
        op: impl AsyncFnOnce(&mut Write<'_>) -> Result<Done<T>>,
    ) -> Result<T> {
        let Audited {
            action,
            team,
            resource,
        } = audited;
        let result = async {
            let mut write = self.draft(actor);
            let value = match op(&mut write).await? {
                Done::Commit(value) => value,
                Done::Unchanged(value) => return Ok(value),
                Done::AlreadyCommitted(value) => {
                    self.cache.changed(team.as_str());
                    return Ok(value);
                }
            };
            let named = write.resource.take().unwrap_or_else(|| resource.clone());
            let records = std::iter::once((action, named))
                .chain(std::mem::take(&mut write.also_audited))
                .map(|(action, resource)| self.audit_success(actor, &team, action, resource))
                .collect();
            let events = std::mem::take(&mut write.events);
            write.tx().await?;
            if let Some(tx) = write.tx.take() {
                let committed = commit_change(tx, events, records).await;
                // After the commit (whatever it answered, it may have committed): no read
                // of the team from before it is answered from the cache again.
                self.cache.changed(team.as_str());
                committed?;
            }
            Ok(value)
        }
        .await;
        self.audit_failure(actor, &team, action, resource, result)
            .await
    }
}

/// The end of every change: appends its events and its success records to its transaction,
/// then commits. [`Context::write`] ends each change with it, and the group commit of creates
/// (`create_batch.rs`) the changes it writes together.
pub(super) async fn commit_change(
    mut tx: Tx,
    events: Vec<EventRow>,
    records: Vec<AuditRow>,
) -> Result<()> {
    tx.append_change(events, records).await?;
    tx.commit().await?;
    Ok(())
}

/// What an audited change is: its action, the team whose resource it acts on, and the
/// resource its record names (a create names its team until the new resource exists).
pub(super) struct Audited {
    action: AuditAction,
    team: TeamId,
    resource: String,
}

impl Audited {
    pub fn new(action: AuditAction, team: &TeamId, resource: String) -> Audited {
        Audited {
            action,
            team: team.clone(),
            resource,
        }
    }

    /// A change of the installed app `name`.
    pub fn app(action: AuditAction, name: &AppName) -> Audited {
        Audited::new(action, &name.team, name.to_string())
    }

    /// A change of the integration `name`.
    pub fn integration(action: AuditAction, name: &IntegrationName) -> Audited {
        Audited::new(action, &name.team, name.to_string())
    }
}

/// How an operation run by [`Context::write`] ended.
pub(super) enum Done<T> {
    /// It changed something (or read credentials): commit, with its events and its success
    /// record.
    Commit(T),
    /// It changed nothing (a create retried with its idempotency key answers with the first
    /// one's result): roll back and record nothing.
    Unchanged(T),
    /// It committed its change, with its events and its success record, itself (a create
    /// written with others by the group commit of creates): nothing is left to do.
    AlreadyCommitted(T),
}

/// One change being written: its transaction (begun on first use, so an operation may read
/// and refuse before it takes the write lock) and the events it appends on commit.
pub(super) struct Write<'a> {
    store: &'a Store,
    actor: &'a Actor,
    tx: Option<Tx>,
    events: Vec<EventRow>,
    resource: Option<String>,
    /// Further success records, of what the change did besides its own action (the app a
    /// create saved its credentials as).
    also_audited: Vec<(AuditAction, String)>,
}

impl Write<'_> {
    /// The write transaction (on SQLite: `BEGIN IMMEDIATE`), begun on first use.
    pub async fn tx(&mut self) -> Result<&mut Tx> {
        if self.tx.is_none() {
            self.tx = Some(self.store.begin_write().await?);
        }
        self.tx
            .as_mut()
            .ok_or_else(|| Error::internal("write transaction missing"))
    }

    /// Reads an installed app the caller may see and locks it until commit. Another team's
    /// app answers exactly as a missing one (rule 7 of docs/rules.md), before any lock is taken.
    pub async fn lock_app(&mut self, name: &AppName) -> Result<AppRow> {
        if !self.actor.sees(&name.team) {
            return Err(not_found_app(name));
        }
        self.tx()
            .await?
            .lock_app(name.team.as_str(), &name.id)
            .await?
            .ok_or_else(|| not_found_app(name))
    }

    /// Reads an integration the caller may see and locks it until commit (as
    /// [`Write::lock_app`]).
    pub async fn lock_integration(&mut self, name: &IntegrationName) -> Result<IntegrationRow> {
        if !self.actor.sees(&name.team) {
            return Err(not_found_integration(name));
        }
        self.tx()
            .await?
            .lock_integration(name.team.as_str(), &name.id)
            .await?
            .ok_or_else(|| not_found_integration(name))
    }

    /// Rolls back what was written so far (a create that lost the race to its own retry:
    /// the failed insert ended the transaction on PostgreSQL).
    pub fn roll_back(&mut self) {
        self.tx = None;
        self.events.clear();
        self.also_audited.clear();
    }

    /// The resource the success record names, once it is known (a create).
    pub fn set_resource(&mut self, resource: String) {
        self.resource = Some(resource);
    }

    /// Records, on commit, that the change also did `action` on `resource` (same actor,
    /// team and request).
    pub fn also_audit(&mut self, action: AuditAction, resource: String) {
        self.also_audited.push((action, resource));
    }

    /// Appends, on commit, one event about `integration` as it is after the change.
    pub fn event(
        &mut self,
        kind: EventKind,
        integration: &Integration,
        reason: Option<BrokenReason>,
    ) -> Result<()> {
        let event = self.new_event(kind, integration, reason)?;
        self.events.push(event);
        Ok(())
    }

    /// An event about `integration` as it is after the change, by this change's actor.
    pub fn new_event(
        &self,
        kind: EventKind,
        integration: &Integration,
        reason: Option<BrokenReason>,
    ) -> Result<EventRow> {
        Ok(EventRow {
            seq: 0,
            event_id: new_id(),
            team: integration.team.clone(),
            kind: kind.as_str().to_owned(),
            integration_id: integration.id.clone(),
            installed_app_id: integration.installed_app_id.clone(),
            reason: reason.map(|r| r.as_str().to_owned()),
            actor: self.actor.subject.clone(),
            time: integration.update_time,
            snapshot: serde_json::to_string(integration).map_err(|e| Error::Internal(e.into()))?,
        })
    }

    /// Appends, on commit, an event built elsewhere (a webhook subscription's).
    pub fn raw_event(&mut self, event: EventRow) {
        self.events.push(event);
    }

    /// Appends, on commit, one event about the installed app `row` as it is after the
    /// change (as it was, for a delete): its snapshot holds no credentials.
    pub fn app_event(&mut self, kind: AppEventKind, row: &AppRow, reason: &str) -> Result<()> {
        self.push_app_event(kind, AppSnapshot::of(row)?, reason, row.update_time)
    }

    /// INSTALLED_APP_SCOPES_CHANGED of the app `row`, at `time`, carrying `change`.
    pub fn scopes_event(&mut self, row: &AppRow, change: ScopeChange, time: i64) -> Result<()> {
        let snapshot = AppSnapshot {
            scopes: change,
            ..AppSnapshot::of(row)?
        };
        self.push_app_event(AppEventKind::ScopesChanged, snapshot, "", time)
    }

    fn push_app_event(
        &mut self,
        kind: AppEventKind,
        snapshot: AppSnapshot,
        reason: &str,
        time: i64,
    ) -> Result<()> {
        self.events.push(EventRow {
            seq: 0,
            event_id: new_id(),
            team: snapshot.team.clone(),
            kind: kind.as_str().to_owned(),
            integration_id: String::new(),
            installed_app_id: Some(snapshot.id.clone()),
            reason: (!reason.is_empty()).then(|| reason.to_owned()),
            actor: self.actor.subject.clone(),
            time,
            snapshot: serde_json::to_string(&snapshot).map_err(|e| Error::Internal(e.into()))?,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::{IntegrationState, Role};
    use crate::domain::test_support::{self, NOW, TestHub, actor, app_row, team};
    use crate::domain::{Precondition, error::Error};

    fn integration() -> Integration {
        Integration {
            team: "acme".into(),
            id: "i1".into(),
            installed_app_id: Some("a1".into()),
            service: "slack".into(),
            type_id: "slack.post_monitor_results".into(),
            display_name: "Job".into(),
            config: BTreeMap::new(),
            state: IntegrationState::Active,
            broken_reason: None,
            broken_detail: None,
            broken_time: None,
            own_credentials: false,
            creator: "dana".into(),
            owner: "dana".into(),
            last_used_time: None,
            create_time: NOW,
            update_time: NOW,
            version: 1,
        }
    }

    fn audited() -> Audited {
        Audited::new(
            AuditAction::InstalledAppCreate,
            &team(),
            "teams/acme".into(),
        )
    }

    /// A change with an event, naming what it made.
    async fn change(w: &mut Write<'_>) -> Result<()> {
        w.tx().await?.insert_app(app_row("a1")).await?;
        w.event(EventKind::Created, &integration(), None)?;
        w.set_resource("teams/acme/installedApps/a1".into());
        Ok(())
    }

    async fn app_exists(t: &TestHub, id: &str) -> bool {
        t.store.get_app("acme", id).await.unwrap().is_some()
    }

    #[tokio::test]
    async fn a_committed_change_carries_its_events_and_its_success_record() {
        let t = test_support::hub().await;
        let dana = actor(Role::Developer, "dana");
        let value = t
            .hub
            .context()
            .write(&dana, audited(), async |w| {
                change(w).await?;
                Ok(Done::Commit(7))
            })
            .await
            .unwrap();
        assert_eq!(value, 7);
        assert!(app_exists(&t, "a1").await);
        let events = t.events().await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "INTEGRATION_CREATED");
        assert_eq!(events[0].actor, "dana");
        assert_eq!(events[0].integration_id, "i1");
        let audit = t.audit().await;
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].outcome.as_str(), "success");
        assert_eq!(audit[0].action.as_str(), "installed_app.create");
        assert_eq!(audit[0].resource, "teams/acme/installedApps/a1");
        assert_eq!(audit[0].reason, None);
        assert_eq!(audit[0].request_id, "req-1");
        assert_eq!(audit[0].time, NOW);
    }

    #[tokio::test]
    async fn a_failed_change_rolls_back_everything_and_records_the_failure() {
        let t = test_support::hub().await;
        let dana = actor(Role::Developer, "dana");
        let failures = [
            (
                Error::precondition(Precondition::WrongState, "no"),
                "failed",
                "FAILED_PRECONDITION",
            ),
            (
                Error::PermissionDenied("no".into()),
                "denied",
                "PERMISSION_DENIED",
            ),
        ];
        for (err, outcome, reason) in failures {
            let result: Result<()> = t
                .hub
                .context()
                .write(&dana, audited(), async |w| {
                    change(w).await?;
                    Err(err)
                })
                .await;
            assert_eq!(result.unwrap_err().reason(), reason);
            assert!(!app_exists(&t, "a1").await);
            assert!(t.events().await.is_empty());
            let audit = t.audit().await;
            let last = audit.last().unwrap();
            assert_eq!(last.outcome.as_str(), outcome);
            assert_eq!(last.reason.as_deref(), Some(reason));
            // The resource the operation was about, not the one it had not made yet.
            assert_eq!(last.resource, "teams/acme");
        }
        assert_eq!(t.audit().await.len(), 2);
    }

    #[tokio::test]
    async fn an_operation_that_changed_nothing_rolls_back_and_records_nothing() {
        let t = test_support::hub().await;
        let dana = actor(Role::Developer, "dana");
        let value = t
            .hub
            .context()
            .write(&dana, audited(), async |w| {
                change(w).await?;
                Ok(Done::Unchanged("earlier"))
            })
            .await
            .unwrap();
        assert_eq!(value, "earlier");
        assert!(!app_exists(&t, "a1").await);
        assert!(t.events().await.is_empty());
        assert!(t.audit().await.is_empty());
    }

    #[tokio::test]
    async fn a_read_is_recorded_once_its_record_commits() {
        let t = test_support::hub().await;
        let service = actor(Role::Service, "deliverer");
        let audited = Audited::new(
            AuditAction::IntegrationResolveCredentials,
            &team(),
            "teams/acme/integrations/i1".into(),
        );
        t.hub
            .context()
            .write(&service, audited, async |_| Ok(Done::Commit(())))
            .await
            .unwrap();
        let audit = t.audit().await;
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].action.as_str(), "integration.resolve_credentials");
        assert_eq!(audit[0].role, "service");
        assert!(t.events().await.is_empty());
    }

    #[tokio::test]
    async fn a_rolled_back_create_leaves_nothing_of_its_first_attempt() {
        let t = test_support::hub().await;
        let dana = actor(Role::Developer, "dana");
        t.hub
            .context()
            .write(&dana, audited(), async |w| {
                w.tx().await?.insert_app(app_row("lost")).await?;
                w.event(EventKind::Created, &integration(), None)?;
                w.roll_back();
                w.tx().await?.insert_app(app_row("kept")).await?;
                Ok(Done::Commit(()))
            })
            .await
            .unwrap();
        assert!(!app_exists(&t, "lost").await);
        assert!(app_exists(&t, "kept").await);
        assert!(t.events().await.is_empty());
    }
}
