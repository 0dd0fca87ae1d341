//! Installed-app events: what the log records when an app is created, gets new credentials,
//! needs reauthentication, works again, or is deleted. They share the outbox (and so the
//! cursor, retention and watch machinery) with integration events; their kinds tell them
//! apart, and their snapshot is the app without its credentials.

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::model::{AppEventKind, AppState, EventKind, InstalledApp};
use super::types::{AppName, TeamId};
use crate::store::{AppRow, EventRow};

/// An installed app as an event records it: never its credentials. Fields added later must
/// have defaults, since events written before them are read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppSnapshot {
    pub team: String,
    pub id: String,
    pub service: String,
    pub display_name: String,
    pub connected_to: String,
    pub creator: String,
    pub owner: String,
    pub state: AppState,
    #[serde(default)]
    pub suspension_reason: Option<String>,
    #[serde(default)]
    pub last_used_time: Option<i64>,
    pub create_time: i64,
    pub update_time: i64,
    pub version: i64,
    #[serde(default)]
    pub reauthorization_recommended: bool,
    /// Not the app's but its event's, for INSTALLED_APP_SCOPES_CHANGED.
    #[serde(default, skip_serializing_if = "ScopeChange::is_empty")]
    pub scopes: ScopeChange,
}

/// What a change of an app's granted scopes added and removed, and the names of the app's
/// integrations whose type's required scopes it satisfies (usable) or no longer satisfies
/// (unusable); each sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeChange {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub usable: Vec<String>,
    pub unusable: Vec<String>,
}

impl ScopeChange {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

impl AppSnapshot {
    pub fn of(row: &AppRow) -> Result<AppSnapshot> {
        Ok(AppSnapshot {
            team: row.team.clone(),
            id: row.id.clone(),
            service: row.service.clone(),
            display_name: row.display_name.clone(),
            connected_to: row.connected_to.clone(),
            creator: row.creator.clone(),
            owner: row.owner.clone(),
            state: row.state,
            suspension_reason: row.suspension_reason.clone(),
            last_used_time: row.last_used_time,
            create_time: row.create_time,
            update_time: row.update_time,
            version: row.version,
            reauthorization_recommended: row.reauthorization_recommended,
            scopes: ScopeChange::default(),
        })
    }

    /// The app as the API shows it. Event snapshots do not count integrations: 0.
    pub fn app(&self) -> Result<InstalledApp> {
        let team = TeamId::parse(&self.team).map_err(|_| Error::internal("stored team id"))?;
        Ok(InstalledApp {
            name: AppName::new(team, self.id.clone()),
            service: self.service.clone(),
            display_name: self.display_name.clone(),
            connected_to: self.connected_to.clone(),
            creator: self.creator.clone(),
            owner: self.owner.clone(),
            last_used_time: self.last_used_time,
            state: self.state,
            suspension_reason: self.suspension_reason.clone(),
            integration_count: 0,
            active_integration_count: 0,
            oauth: None,
            health: None,
            usable_by: None,
            reauthorization_recommended: self.reauthorization_recommended,
            create_time: self.create_time,
            update_time: self.update_time,
            version: self.version,
        })
    }
}

/// One installed-app event of the log, decoded.
#[derive(Clone, Debug)]
pub struct AppEvent {
    pub seq: i64,
    pub event_id: String,
    pub team: String,
    pub kind: AppEventKind,
    /// Why, for people (what the third party said, for NEEDS_REAUTH); may be empty.
    pub reason: String,
    pub actor: String,
    pub time: i64,
    pub app: InstalledApp,
    /// For INSTALLED_APP_SCOPES_CHANGED; empty otherwise.
    pub scopes: ScopeChange,
}

impl AppEvent {
    pub fn from_row(row: &EventRow) -> Result<AppEvent> {
        let snapshot: AppSnapshot = serde_json::from_str(&row.snapshot)
            .map_err(|e| Error::Internal(anyhow::Error::new(e).context("app event snapshot")))?;
        Ok(AppEvent {
            seq: row.seq,
            event_id: row.event_id.clone(),
            team: row.team.clone(),
            kind: AppEventKind::parse(&row.kind)?,
            reason: row.reason.clone().unwrap_or_default(),
            actor: row.actor.clone(),
            time: row.time,
            app: snapshot.app()?,
            scopes: snapshot.scopes,
        })
    }

    /// `teams/{team}/installedApps/{id}`.
    pub fn installed_app_name(&self) -> String {
        self.app.name.to_string()
    }
}

/// Every stored kind of the integration events.
pub fn integration_kinds() -> impl Iterator<Item = &'static str> {
    EventKind::ALL.iter().map(|k| k.as_str())
}

/// Every stored kind of the installed-app events.
pub fn app_kinds() -> impl Iterator<Item = &'static str> {
    AppEventKind::ALL.iter().map(|k| k.as_str())
}

/// Whether a stored event is about an installed app (rather than an integration).
pub fn is_app_event(kind: &str) -> bool {
    AppEventKind::ALL.iter().any(|k| k.as_str() == kind)
}
