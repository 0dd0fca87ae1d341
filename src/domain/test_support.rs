//! A [`Hub`] on a fresh SQLite file, with a fixed clock, for the domain's unit tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::crypto::{Credentials, KeyRing};
use crate::store::{AppRow, AppState, AuditFilter, AuditRow, EventRow, Store};

use super::catalog::Catalog;
use super::hub::{Clock, Hub};
use super::model::{Actor, InstalledApp, Integration, Role};
use super::types::{DisplayName, TeamId, Text};
use super::{Binding, NewApp, NewIntegration};

/// The time every test hub says it is.
pub const NOW: i64 = 1_764_000_000_000_000;

struct FixedClock;

impl Clock for FixedClock {
    fn now_micros(&self) -> i64 {
        NOW
    }
}

/// A hub and the directory its database lives in (removed on drop).
pub struct TestHub {
    pub hub: Hub,
    pub store: Store,
    _dir: tempfile::TempDir,
}

pub async fn hub() -> TestHub {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("hub.db").display());
    let store = Store::connect(&url, 4).await.expect("connect");
    store.migrate().await.expect("migrate");
    let keys = Arc::new(KeyRing::generate(1).expect("key").0);
    let hub = Hub::new(
        store.clone(),
        keys,
        Arc::new(Catalog::builtin()),
        Arc::new(FixedClock),
    );
    TestHub {
        hub,
        store,
        _dir: dir,
    }
}

/// An audit record (seq 7, team `acme`, no MAC, not sealed), for tests of the audit chain.
pub fn audit_row() -> AuditRow {
    use crate::store::{AuditAction, AuditOutcome};
    AuditRow {
        seq: 7,
        id: "id1".into(),
        team: "acme".into(),
        actor: "dana".into(),
        actor_team: "acme".into(),
        role: "developer".into(),
        action: AuditAction::InstalledAppCreate,
        resource: "teams/acme/installedApps/a".into(),
        outcome: AuditOutcome::Success,
        reason: None,
        request_id: "r1".into(),
        time: 1,
        key_id: None,
        mac: None,
        chain_pos: None,
        chain_mac: None,
    }
}

/// A stored ACTIVE Slack app `id` of team `acme`, for tests that write rows directly.
pub fn app_row(id: &str) -> AppRow {
    AppRow {
        id: id.to_owned(),
        team: "acme".into(),
        service: "slack".into(),
        display_name: "Slack".into(),
        connected_to: String::new(),
        creator: "dana".into(),
        owner: "dana".into(),
        last_used_time: None,
        state: AppState::Active,
        suspension_reason: None,
        resume_state: None,
        key_version: 1,
        credentials: Vec::new(),
        request_id: None,
        request_fingerprint: None,
        version: 1,
        create_time: NOW,
        update_time: NOW,
        usable_by: None,
        reauthorization_recommended: false,
    }
}

pub fn team() -> TeamId {
    TeamId::parse("acme").expect("team")
}

pub fn actor(role: Role, subject: &str) -> Actor {
    Actor {
        subject: subject.to_owned(),
        team: Some(team()),
        role,
        request_id: "req-1".to_owned(),
        reach: None,
        groups: Vec::new(),
    }
}

pub fn credentials(token: &str) -> Credentials {
    Credentials::new(BTreeMap::from([(
        "access_token".to_owned(),
        token.to_owned(),
    )]))
}

pub fn new_app(display_name: &str) -> NewApp {
    NewApp {
        service: "slack".into(),
        display_name: DisplayName::parse(display_name).expect("name"),
        connected_to: Text::parse("acme.slack.com").expect("text"),
        credentials: credentials("xoxb-1"),
        idempotency_key: None,
    }
}

pub fn new_integration(display_name: &str, binding: Binding) -> NewIntegration {
    NewIntegration {
        type_id: "slack.post_monitor_results".into(),
        display_name: DisplayName::parse(display_name).expect("name"),
        config: BTreeMap::from([
            ("channel".to_owned(), "#ops".to_owned()),
            ("monitor_id".to_owned(), "m1".to_owned()),
        ]),
        binding,
        save_as: None,
        idempotency_key: None,
    }
}

impl TestHub {
    /// Another replica: a hub on the same database and keys, with a read cache of its own
    /// and no event tailer (only what it checks itself keeps it current).
    pub fn replica(&self) -> Hub {
        Hub::new(
            self.store.clone(),
            self.hub.context().keys().clone(),
            Arc::new(Catalog::builtin()),
            Arc::new(FixedClock),
        )
    }

    /// A Slack app set up by the developer dana.
    pub async fn app(&self, display_name: &str) -> InstalledApp {
        let dana = actor(Role::Developer, "dana");
        let app = self
            .hub
            .apps()
            .create_installed_app(&dana, team(), new_app(display_name));
        app.await.expect("create an app")
    }

    /// An integration of dana's using `app`.
    pub async fn bound(&self, app: &InstalledApp, display_name: &str) -> Integration {
        let dana = actor(Role::Developer, "dana");
        let binding = Binding::App(app.name.clone());
        let integration = new_integration(display_name, binding);
        let created = self
            .hub
            .integrations()
            .create_integration(&dana, team(), integration);
        created.await.expect("create an integration")
    }

    /// Every event of the log, oldest first.
    pub async fn events(&self) -> Vec<EventRow> {
        self.store
            .events_after(0, None, None, 1000)
            .await
            .expect("events")
    }

    /// The team's audit log, oldest first.
    pub async fn audit(&self) -> Vec<AuditRow> {
        let mut rows = self
            .store
            .list_audit("acme", &AuditFilter::default(), None, 1000)
            .await
            .expect("audit");
        rows.reverse();
        rows
    }
}
