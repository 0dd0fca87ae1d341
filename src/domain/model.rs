//! Domain entities and their conversion from the store's rows.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::error::{Denial, Error, Result};
use super::types::{AppName, ParentRef, TeamId};
use crate::store::{AppRow, AuditRow, EventRow, IntegrationCounts, IntegrationRow, stored_enum};

/// A caller's role, as the verified token maps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Viewer,
    Developer,
    Admin,
    Service,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }
}

/// Who is calling: built from the verified token, never from the request.
#[derive(Clone, Debug)]
pub struct Actor {
    pub subject: String,
    /// The caller's team; `None` for a service principal whose token says `*` (every team).
    pub team: Option<TeamId>,
    pub role: Role,
    /// The call's request id (`x-request-id` metadata, or generated): ties audit records to
    /// logs and to the caller's own records.
    pub request_id: String,
    /// For a service principal limited to some services, integration types or installed
    /// apps: what it reaches. `None`: not limited.
    pub reach: Option<Reach>,
    /// The groups the token names (from the configured groups claim): what an installed
    /// app's `usable_by` may list besides subjects.
    pub groups: Vec<String>,
}

/// What a limited service principal reaches (its token's and configuration's limits). A kind
/// left `None` is not limited; a resource is reached when every limited kind lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reach {
    pub services: Option<BTreeSet<String>>,
    pub types: Option<BTreeSet<String>>,
    pub apps: Option<BTreeSet<String>>,
}

impl Reach {
    /// Whether an integration of `service` and `type_id`, using installed app `app` (`None`:
    /// its own credentials), is within reach. A principal limited to apps reaches no
    /// integration with credentials of its own.
    pub fn reaches(&self, service: &str, type_id: Option<&str>, app: Option<&str>) -> bool {
        let listed = |kind: &Option<BTreeSet<String>>, value: Option<&str>| {
            kind.as_ref()
                .is_none_or(|set| value.is_some_and(|v| set.contains(v)))
        };
        listed(&self.services, Some(service))
            && (type_id.is_none() || listed(&self.types, type_id))
            && listed(&self.apps, app)
    }
}

impl Actor {
    /// A task of the hub's own acting for `team` (the refresher, the verifier), as a
    /// service principal of no narrower reach, under its own `subject` in the audit log.
    pub fn system(subject: &str, team: &super::types::TeamId) -> Self {
        Self {
            subject: subject.to_owned(),
            team: Some(team.clone()),
            role: Role::Service,
            request_id: super::types::new_id(),
            reach: None,
            groups: Vec::new(),
        }
    }

    /// Refuses (OUTSIDE_SERVICE_LIMITS) an integration a limited service principal does not
    /// reach; see [`Reach::reaches`].
    pub fn check_reach(
        &self,
        service: &str,
        type_id: Option<&str>,
        app: Option<&str>,
    ) -> Result<()> {
        match &self.reach {
            Some(reach) if !reach.reaches(service, type_id, app) => Err(Error::denied(
                Denial::OutsideServiceLimits,
                "this service principal is limited to other services, integration types or installed apps",
            )),
            _ => Ok(()),
        }
    }

    /// [`Actor::check_reach`] of an integration.
    pub fn check_integration_reach(&self, integration: &Integration) -> Result<()> {
        let app = integration.installed_app_id.as_deref();
        self.check_reach(&integration.service, Some(&integration.type_id), app)
    }

    /// Refuses (OUTSIDE_SERVICE_LIMITS) a limited service principal a call that covers every
    /// service of a team (a watch, a webhook read): no filter of it keeps within the limits.
    pub fn check_unlimited(&self) -> Result<()> {
        match &self.reach {
            Some(_) => Err(Error::denied(
                Denial::OutsideServiceLimits,
                "a service principal limited to some services, integration types or installed apps may not watch events or read webhooks: they cover every service of the team",
            )),
            None => Ok(()),
        }
    }

    /// Whether the caller may see records of `team`.
    pub fn sees(&self, team: &TeamId) -> bool {
        self.team.as_ref().is_none_or(|own| own == team)
    }

    /// Who the caller is, for per-principal limits: `{team}/{subject}`, or `*/{subject}` for a
    /// service acting on every team.
    pub fn principal(&self) -> String {
        format!(
            "{}/{}",
            self.team.as_ref().map(|t| t.as_str()).unwrap_or("*"),
            self.subject
        )
    }

    /// The team a request with this `parent` is about. Another team's parent is refused.
    pub fn team_of_parent(&self, parent: &ParentRef) -> Result<TeamId> {
        match (parent, &self.team) {
            (ParentRef::Own, Some(own)) => Ok(own.clone()),
            (ParentRef::Team(team), _) if self.sees(team) => Ok(team.clone()),
            (ParentRef::Own | ParentRef::AllTeams, None) => Err(Error::invalid(
                "parent",
                "a token for every team must name the team: teams/{team}",
            )),
            _ => Err(Error::PermissionDenied(
                "the caller may not act on that team".into(),
            )),
        }
    }

    /// The team a watch covers: one team, or every team (`None`) for an all-teams service.
    pub fn watch_scope(&self, parent: &ParentRef) -> Result<Option<TeamId>> {
        match parent {
            ParentRef::AllTeams if self.team.is_none() => Ok(None),
            ParentRef::Own if self.team.is_none() => Ok(None),
            ParentRef::AllTeams => Err(Error::PermissionDenied(
                "only a service token for every team may watch every team".into(),
            )),
            _ => self.team_of_parent(parent).map(Some),
        }
    }
}

pub use crate::store::{
    AppState, AuditAction, AuditOutcome, BrokenReason, IntegrationState, VerificationState,
};

stored_enum!(
    /// What an event records.
    EventKind {
        Created = "INTEGRATION_CREATED",
        Updated = "INTEGRATION_UPDATED",
        Deleted = "INTEGRATION_DELETED",
        Broken = "INTEGRATION_BROKEN",
        Restored = "INTEGRATION_RESTORED",
    }
);
stored_enum!(
    /// What an installed-app event records.
    AppEventKind {
        Created = "INSTALLED_APP_CREATED",
        CredentialsReplaced = "INSTALLED_APP_CREDENTIALS_REPLACED",
        NeedsReauth = "INSTALLED_APP_NEEDS_REAUTH",
        Restored = "INSTALLED_APP_RESTORED",
        Deleted = "INSTALLED_APP_DELETED",
        RefreshFailed = "INSTALLED_APP_REFRESH_FAILED",
        // Its OAuth grant lives in the account of a person offboarded.
        ReauthorizationRecommended = "INSTALLED_APP_REAUTHORIZATION_RECOMMENDED",
        // A verification found other granted scopes than those stored.
        ScopesChanged = "INSTALLED_APP_SCOPES_CHANGED",
    }
);

impl AuditAction {
    /// The action named `text`, if it is one.
    pub fn find(text: &str) -> Option<AuditAction> {
        AuditAction::parse(text).ok()
    }
}

/// One record of the audit log. It never holds a credential value.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub seq: i64,
    pub id: String,
    pub team: String,
    pub actor: String,
    pub actor_team: String,
    pub role: String,
    pub action: AuditAction,
    pub resource: String,
    pub outcome: AuditOutcome,
    pub reason: Option<String>,
    pub request_id: String,
    pub time: i64,
}

impl AuditEvent {
    pub fn from_row(row: &AuditRow) -> Result<AuditEvent> {
        Ok(AuditEvent {
            seq: row.seq,
            id: row.id.clone(),
            team: row.team.clone(),
            actor: row.actor.clone(),
            actor_team: row.actor_team.clone(),
            role: row.role.clone(),
            action: row.action,
            resource: row.resource.clone(),
            outcome: row.outcome,
            reason: row.reason.clone(),
            request_id: row.request_id.clone(),
            time: row.time,
        })
    }

    /// `teams/{team}/auditEvents/{id}`.
    pub fn name(&self) -> String {
        format!("teams/{}/auditEvents/{}", self.team, self.id)
    }
}

/// An installed app, without its credentials.
#[derive(Clone, Debug)]
pub struct InstalledApp {
    pub name: AppName,
    pub service: String,
    pub display_name: String,
    pub connected_to: String,
    pub creator: String,
    pub owner: String,
    pub last_used_time: Option<i64>,
    pub state: AppState,
    /// Why an admin suspended it; `Some` exactly while it is suspended.
    pub suspension_reason: Option<String>,
    /// Integrations using its credentials.
    pub integration_count: i64,
    /// Of those, the ACTIVE ones (the others are BROKEN).
    pub active_integration_count: i64,
    pub create_time: i64,
    pub update_time: i64,
    pub version: i64,
    /// The OAuth grant's health, for an app authorized through OAuth 2.0 (filled by the
    /// reads that answer apps; `None` for credentials entered by hand).
    pub oauth: Option<super::oauth::GrantHealth>,
    /// What the last verification with the provider found (filled by the reads that answer
    /// apps; `None` when it was never verified, verification being off).
    pub health: Option<super::verify::apps::Health>,
    /// Who besides admins may build on it; `None`: every developer of its team.
    pub usable_by: Option<super::usable_by::UsableBy>,
    /// Its OAuth grant lives in the account of a person offboarded.
    pub reauthorization_recommended: bool,
}

impl InstalledApp {
    pub fn from_row(row: &AppRow, counts: IntegrationCounts) -> Result<InstalledApp> {
        Ok(InstalledApp {
            name: AppName::new(team_of(&row.team)?, row.id.clone()),
            service: row.service.clone(),
            display_name: row.display_name.clone(),
            connected_to: row.connected_to.clone(),
            creator: row.creator.clone(),
            owner: row.owner.clone(),
            last_used_time: row.last_used_time,
            state: row.state,
            suspension_reason: row.suspension_reason.clone(),
            integration_count: counts.total,
            active_integration_count: counts.active,
            create_time: row.create_time,
            update_time: row.update_time,
            version: row.version,
            oauth: None,
            health: None,
            usable_by: super::usable_by::UsableBy::from_stored(row.usable_by.as_deref())?,
            reauthorization_recommended: row.reauthorization_recommended,
        })
    }

    pub fn etag(&self) -> String {
        etag(self.version)
    }

    /// What it holds, in bytes (for the read cache's budget).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.name.team.as_str().len()
            + self.name.id.len()
            + self.service.len()
            + self.display_name.len()
            + self.connected_to.len()
            + self.creator.len()
            + self.owner.len()
            + self.suspension_reason.as_ref().map_or(0, String::len)
            + self.usable_by.as_ref().map_or(0, |u| {
                u.subjects
                    .iter()
                    .chain(&u.groups)
                    .map(|s| s.len() + 32)
                    .sum()
            })
            + self
                .oauth
                .as_ref()
                .and_then(|o| o.last_refresh_error.as_ref())
                .map_or(0, String::len)
    }
}

/// An integration. Also the snapshot stored with each event, hence serializable; fields added
/// later must have defaults, since events written before them are read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    pub team: String,
    pub id: String,
    /// The app it uses; a broken integration keeps the app it used.
    pub installed_app_id: Option<String>,
    pub service: String,
    pub type_id: String,
    pub display_name: String,
    pub config: BTreeMap<String, String>,
    pub state: IntegrationState,
    pub broken_reason: Option<BrokenReason>,
    pub broken_detail: Option<String>,
    pub broken_time: Option<i64>,
    pub own_credentials: bool,
    pub creator: String,
    /// Who is responsible for it (events written before owners existed read as empty).
    #[serde(default)]
    pub owner: String,
    /// When its credentials were last resolved (not a change: no event, no new version).
    #[serde(default)]
    pub last_used_time: Option<i64>,
    pub create_time: i64,
    pub update_time: i64,
    pub version: i64,
}

impl Integration {
    /// What it holds, in bytes (for the read cache's budget).
    pub fn bytes(&self) -> usize {
        let config: usize = self
            .config
            .iter()
            .map(|(k, v)| k.len() + v.len() + 3 * std::mem::size_of::<usize>() * 2)
            .sum();
        std::mem::size_of::<Self>()
            + self.team.len()
            + self.id.len()
            + self.installed_app_id.as_ref().map_or(0, String::len)
            + self.service.len()
            + self.type_id.len()
            + self.display_name.len()
            + self.broken_detail.as_ref().map_or(0, String::len)
            + self.creator.len()
            + self.owner.len()
            + config
    }

    pub fn from_row(row: &IntegrationRow) -> Result<Integration> {
        let config = serde_json::from_str(&row.config)
            .map_err(|e| Error::Internal(anyhow::Error::new(e).context("stored config")))?;
        Ok(Integration {
            team: row.team.clone(),
            id: row.id.clone(),
            installed_app_id: row.installed_app_id.clone(),
            service: row.service.clone(),
            type_id: row.type_id.clone(),
            display_name: row.display_name.clone(),
            config,
            state: row.state,
            broken_reason: row.broken_reason,
            broken_detail: row.broken_detail.clone(),
            broken_time: row.broken_time,
            own_credentials: row.own_credentials.is_some(),
            creator: row.creator.clone(),
            owner: row.owner.clone(),
            last_used_time: row.last_used_time,
            create_time: row.create_time,
            update_time: row.update_time,
            version: row.version,
        })
    }

    pub fn name(&self) -> String {
        format!("teams/{}/integrations/{}", self.team, self.id)
    }

    pub fn installed_app_name(&self) -> Option<String> {
        self.installed_app_id
            .as_ref()
            .map(|id| format!("teams/{}/installedApps/{id}", self.team))
    }

    pub fn etag(&self) -> String {
        etag(self.version)
    }

    /// Writes this integration's fields over a stored row (credentials stay as they are).
    pub fn apply_to(&self, row: &mut IntegrationRow) -> Result<()> {
        row.installed_app_id = self.installed_app_id.clone();
        row.display_name = self.display_name.clone();
        row.owner = self.owner.clone();
        row.config = config_json(&self.config)?;
        row.state = self.state;
        row.broken_reason = self.broken_reason;
        row.broken_detail = self.broken_detail.clone();
        row.broken_time = self.broken_time;
        row.update_time = self.update_time;
        row.version = self.version;
        Ok(())
    }
}

pub fn config_json(config: &BTreeMap<String, String>) -> Result<String> {
    serde_json::to_string(config).map_err(|e| Error::Internal(e.into()))
}

/// One event of the log, decoded.
#[derive(Clone, Debug)]
pub struct Event {
    pub seq: i64,
    pub event_id: String,
    pub team: String,
    pub kind: EventKind,
    pub integration_id: String,
    pub installed_app_id: Option<String>,
    pub reason: Option<BrokenReason>,
    pub actor: String,
    pub time: i64,
    pub integration: Integration,
}

impl Event {
    pub fn from_row(row: &EventRow) -> Result<Event> {
        Ok(Event {
            seq: row.seq,
            event_id: row.event_id.clone(),
            team: row.team.clone(),
            kind: EventKind::parse(&row.kind)?,
            integration_id: row.integration_id.clone(),
            installed_app_id: row.installed_app_id.clone(),
            reason: row.reason.as_deref().map(BrokenReason::parse).transpose()?,
            actor: row.actor.clone(),
            time: row.time,
            integration: serde_json::from_str(&row.snapshot)
                .map_err(|e| Error::Internal(anyhow::Error::new(e).context("event snapshot")))?,
        })
    }

    pub fn integration_name(&self) -> String {
        format!("teams/{}/integrations/{}", self.team, self.integration_id)
    }

    pub fn installed_app_name(&self) -> Option<String> {
        self.installed_app_id
            .as_ref()
            .map(|id| format!("teams/{}/installedApps/{id}", self.team))
    }
}

pub fn etag(version: i64) -> String {
    format!("v{version}")
}

fn team_of(stored: &str) -> Result<TeamId> {
    TeamId::parse(stored).map_err(|_| Error::internal("stored team id is invalid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_round_trip_and_every_value_is_listed_once() {
        for action in AuditAction::ALL {
            assert_eq!(AuditAction::parse(action.as_str()).unwrap(), *action);
            assert_eq!(AuditAction::find(action.as_str()), Some(*action));
        }
        assert_eq!(AuditAction::ALL.len(), 39);
        assert_eq!(AuditAction::find("installed_app.nope"), None);
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()).unwrap(), *kind);
        }
        let texts: std::collections::HashSet<_> =
            AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(texts.len(), AuditAction::ALL.len());
        assert!(BrokenReason::parse("SOMETHING_ELSE").is_err());
    }

    #[test]
    fn a_reach_lists_every_limited_kind_and_leaves_the_others_open() {
        let set = |v: &[&str]| Some(v.iter().map(|s| (*s).to_owned()).collect());
        let slack = Reach {
            services: set(&["slack"]),
            ..Reach::default()
        };
        assert!(slack.reaches("slack", Some("slack.post_team_activity"), None));
        assert!(!slack.reaches("github", None, Some("ia_1")));
        let apps = Reach {
            apps: set(&["ia_1"]),
            types: set(&["slack.post_team_activity"]),
            ..Reach::default()
        };
        assert!(apps.reaches("slack", Some("slack.post_team_activity"), Some("ia_1")));
        assert!(
            apps.reaches("slack", None, Some("ia_1")),
            "an app has no type"
        );
        assert!(!apps.reaches("slack", Some("slack.post_monitor_results"), Some("ia_1")));
        assert!(
            !apps.reaches("slack", Some("slack.post_team_activity"), None),
            "own credentials"
        );
        let limited = Actor {
            reach: Some(slack),
            ..crate::domain::test_support::actor(Role::Service, "bot")
        };
        assert_eq!(
            limited
                .check_reach("github", None, None)
                .unwrap_err()
                .reason(),
            "OUTSIDE_SERVICE_LIMITS"
        );
        assert!(limited.check_unlimited().is_err());
        let unlimited = crate::domain::test_support::actor(Role::Service, "svc");
        assert!(unlimited.check_reach("github", None, None).is_ok());
        assert!(unlimited.check_unlimited().is_ok());
    }

    #[test]
    fn a_parent_is_the_callers_own_team_unless_the_token_covers_every_team() {
        use crate::domain::test_support::{actor, team};
        let dana = actor(Role::Developer, "dana");
        let other = TeamId::parse("other").unwrap();
        assert_eq!(dana.team_of_parent(&ParentRef::Own).unwrap(), team());
        assert_eq!(
            dana.team_of_parent(&ParentRef::Team(team())).unwrap(),
            team()
        );
        for parent in [ParentRef::Team(other.clone()), ParentRef::AllTeams] {
            assert!(matches!(
                dana.team_of_parent(&parent),
                Err(Error::PermissionDenied(_))
            ));
        }
        assert!(matches!(
            dana.watch_scope(&ParentRef::AllTeams),
            Err(Error::PermissionDenied(_))
        ));
        assert_eq!(dana.watch_scope(&ParentRef::Own).unwrap(), Some(team()));

        let everywhere = Actor {
            team: None,
            ..actor(Role::Service, "deliverer")
        };
        let other_parent = ParentRef::Team(other.clone());
        assert_eq!(everywhere.team_of_parent(&other_parent).unwrap(), other);
        assert!(matches!(
            everywhere.team_of_parent(&ParentRef::Own),
            Err(Error::Invalid(_))
        ));
        assert_eq!(everywhere.watch_scope(&ParentRef::AllTeams).unwrap(), None);
        assert_eq!(everywhere.watch_scope(&ParentRef::Own).unwrap(), None);
    }
}
