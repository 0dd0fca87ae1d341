//! Requests parsed in one place: one `TryFrom` per proto request, into the domain's input.
//! A conversion checks every field it can and fails with INVALID_ARGUMENT listing every
//! violated field (a `BadRequest` violation each, named by its path in the request). What
//! depends on stored data (the catalog, page tokens bound to their listing, the caller's
//! team) is checked by the domain.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::domain::audit::AuditQuery;
use crate::domain::model::{AuditAction, EventKind, IntegrationState};
use crate::domain::types::{
    AppName, ConnectedTo, Cursor, DisplayName, IdempotencyKey, IntegrationName, PageRequest,
    PageSize, ParentRef, RejectionDetail,
};
use crate::domain::{
    AppChanges, Binding, Credentials, Error, IntegrationChanges, IntegrationQuery, NewApp,
    NewIntegration, Reauth, Violations,
};
use crate::pb;
use crate::pb::reauthenticate_integration_request::Auth;

use super::convert;

/// Longest `actor` filter, as long as the longest subject a token may carry.
const MAX_ACTOR_CHARS: usize = 256;

/// Takes the credentials out of a request map, so the plaintext lives in one place that
/// wipes itself.
fn take_credentials(map: &mut HashMap<String, String>) -> Credentials {
    Credentials::new(std::mem::take(map).into_iter().collect())
}

/// An `etag` field: empty means "do not check".
fn optional_etag(etag: &str) -> Option<String> {
    (!etag.is_empty()).then(|| etag.to_owned())
}

/// The value of a field known to be present once [`Violations::finish`] passed.
fn checked<T>(value: Option<T>) -> Result<T, Error> {
    value.ok_or_else(|| Error::internal("checked fields missing"))
}

/// A field parsed on its own, whose failure answers alone (before the other fields).
fn field<T>(name: &str, parsed: Result<T, String>) -> Result<T, Error> {
    parsed.map_err(|description| Error::invalid(name, description))
}

fn page(v: &mut Violations, page_size: i32, page_token: String) -> Option<PageRequest> {
    v.check("page_size", PageSize::parse(page_size))
        .map(|size| PageRequest {
            size,
            token: page_token,
        })
}

/// CreateInstalledApp: where, and the new app.
pub struct CreateApp {
    pub parent: ParentRef,
    pub app: NewApp,
}

impl TryFrom<pb::CreateInstalledAppRequest> for CreateApp {
    type Error = Error;

    fn try_from(mut req: pb::CreateInstalledAppRequest) -> Result<Self, Error> {
        let credentials = take_credentials(&mut req.credentials);
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let app = req.installed_app.unwrap_or_default();
        if app.service.is_empty() {
            v.check::<()>("installed_app.service", Err("is required".into()));
        }
        let display_name = v.check(
            "installed_app.display_name",
            DisplayName::parse(&app.display_name),
        );
        let connected_to = v.check(
            "installed_app.connected_to",
            ConnectedTo::parse(&app.connected_to),
        );
        let key = v.check(
            "request_id",
            IdempotencyKey::parse_optional(&req.request_id),
        );
        if credentials.is_empty() {
            v.check::<()>("credentials", Err("is required".into()));
        }
        v.finish()?;
        Ok(CreateApp {
            parent: checked(parent)?,
            app: NewApp {
                service: app.service,
                display_name: checked(display_name)?,
                connected_to: checked(connected_to)?,
                credentials,
                idempotency_key: checked(key)?,
            },
        })
    }
}

impl TryFrom<pb::GetInstalledAppRequest> for AppName {
    type Error = Error;

    fn try_from(req: pb::GetInstalledAppRequest) -> Result<Self, Error> {
        field("name", AppName::parse(&req.name))
    }
}

/// ListInstalledApps.
pub struct ListApps {
    pub parent: ParentRef,
    pub page: PageRequest,
}

impl TryFrom<pb::ListInstalledAppsRequest> for ListApps {
    type Error = Error;

    fn try_from(req: pb::ListInstalledAppsRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let page = page(&mut v, req.page_size, req.page_token);
        v.finish()?;
        Ok(ListApps {
            parent: checked(parent)?,
            page: checked(page)?,
        })
    }
}

/// UpdateInstalledApp.
pub struct UpdateApp {
    pub name: AppName,
    pub changes: AppChanges,
}

impl TryFrom<pb::UpdateInstalledAppRequest> for UpdateApp {
    type Error = Error;

    fn try_from(mut req: pb::UpdateInstalledAppRequest) -> Result<Self, Error> {
        let credentials = take_credentials(&mut req.credentials);
        let app = req.installed_app.unwrap_or_default();
        let name = field("installed_app.name", AppName::parse(&app.name))?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::default();
        let mut changes = AppChanges {
            etag: optional_etag(&app.etag),
            display_name: None,
            connected_to: None,
            credentials: None,
        };
        for path in &paths {
            match path.as_str() {
                "display_name" => {
                    changes.display_name = v.check(
                        "installed_app.display_name",
                        DisplayName::parse(&app.display_name),
                    );
                }
                "connected_to" => {
                    changes.connected_to = v.check(
                        "installed_app.connected_to",
                        ConnectedTo::parse(&app.connected_to),
                    );
                }
                _ => v
                    .check::<()>(
                        "update_mask",
                        Err("may name only display_name and connected_to".into()),
                    )
                    .unwrap_or_default(),
            }
        }
        if !credentials.is_empty() {
            changes.credentials = Some(credentials);
        } else if paths.is_empty() {
            v.check::<()>(
                "update_mask",
                Err("names nothing to change and no credentials are given".into()),
            );
        }
        v.finish()?;
        Ok(UpdateApp { name, changes })
    }
}

/// DeleteInstalledApp.
pub struct DeleteApp {
    pub name: AppName,
    pub etag: Option<String>,
    pub validate_only: bool,
}

impl TryFrom<pb::DeleteInstalledAppRequest> for DeleteApp {
    type Error = Error;

    fn try_from(req: pb::DeleteInstalledAppRequest) -> Result<Self, Error> {
        Ok(DeleteApp {
            name: field("name", AppName::parse(&req.name))?,
            etag: optional_etag(&req.etag),
            validate_only: req.validate_only,
        })
    }
}

/// ReportCredentialsRejected.
pub struct ReportRejected {
    pub name: AppName,
    pub detail: RejectionDetail,
}

impl TryFrom<pb::ReportCredentialsRejectedRequest> for ReportRejected {
    type Error = Error;

    fn try_from(req: pb::ReportCredentialsRejectedRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let name = v.check("name", AppName::parse(&req.name));
        let detail = v.check("detail", RejectionDetail::parse(&req.detail));
        v.finish()?;
        Ok(ReportRejected {
            name: checked(name)?,
            detail: checked(detail)?,
        })
    }
}

/// CreateIntegration: where, and the new integration.
pub struct CreateIntegration {
    pub parent: ParentRef,
    pub integration: NewIntegration,
}

impl TryFrom<pb::CreateIntegrationRequest> for CreateIntegration {
    type Error = Error;

    fn try_from(mut req: pb::CreateIntegrationRequest) -> Result<Self, Error> {
        let credentials = take_credentials(&mut req.credentials);
        let integration = req.integration.unwrap_or_default();
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let display_name = v.check(
            "integration.display_name",
            DisplayName::parse(&integration.display_name),
        );
        let key = v.check(
            "request_id",
            IdempotencyKey::parse_optional(&req.request_id),
        );
        if integration.r#type.is_empty() {
            v.check::<()>("integration.type", Err("is required".into()));
        }
        let binding = match (credentials.is_empty(), integration.installed_app.is_empty()) {
            (true, false) => v
                .check(
                    "integration.installed_app",
                    AppName::parse(&integration.installed_app),
                )
                .map(Binding::App),
            (false, true) if integration.service.is_empty() => {
                v.check::<()>(
                    "integration.service",
                    Err("is required with credentials of its own".into()),
                );
                None
            }
            (false, true) => Some(Binding::Own {
                service: integration.service,
                credentials,
            }),
            (true, true) => v.check(
                "integration.installed_app",
                Err("is required (or give credentials of its own)".into()),
            ),
            (false, false) => v.check(
                "credentials",
                Err("must be empty when integration.installed_app is set".into()),
            ),
        };
        v.finish()?;
        Ok(CreateIntegration {
            parent: checked(parent)?,
            integration: NewIntegration {
                type_id: integration.r#type,
                display_name: checked(display_name)?,
                config: integration.config.into_iter().collect(),
                binding: checked(binding)?,
                idempotency_key: checked(key)?,
            },
        })
    }
}

impl TryFrom<pb::GetIntegrationRequest> for IntegrationName {
    type Error = Error;

    fn try_from(req: pb::GetIntegrationRequest) -> Result<Self, Error> {
        field("name", IntegrationName::parse(&req.name))
    }
}

/// ListIntegrations.
pub struct ListIntegrations {
    pub parent: ParentRef,
    pub query: IntegrationQuery,
    pub page: PageRequest,
}

fn integration_state(value: i32) -> Result<Option<IntegrationState>, String> {
    match pb::integration::State::try_from(value) {
        Ok(pb::integration::State::Unspecified) => Ok(None),
        Ok(pb::integration::State::Active) => Ok(Some(IntegrationState::Active)),
        Ok(pb::integration::State::Broken) => Ok(Some(IntegrationState::Broken)),
        Err(_) => Err("is not a known state".to_owned()),
    }
}

impl TryFrom<pb::ListIntegrationsRequest> for ListIntegrations {
    type Error = Error;

    fn try_from(req: pb::ListIntegrationsRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let page = page(&mut v, req.page_size, req.page_token);
        let installed_app = if req.installed_app.is_empty() {
            Some(None)
        } else {
            v.check("installed_app", AppName::parse(&req.installed_app))
                .map(Some)
        };
        let state = v.check("state", integration_state(req.state));
        v.finish()?;
        Ok(ListIntegrations {
            parent: checked(parent)?,
            query: IntegrationQuery {
                installed_app: checked(installed_app)?,
                state: checked(state)?,
            },
            page: checked(page)?,
        })
    }
}

/// UpdateIntegration.
pub struct UpdateIntegration {
    pub name: IntegrationName,
    pub changes: IntegrationChanges,
}

impl TryFrom<pb::UpdateIntegrationRequest> for UpdateIntegration {
    type Error = Error;

    fn try_from(req: pb::UpdateIntegrationRequest) -> Result<Self, Error> {
        let integration = req.integration.unwrap_or_default();
        let name = field(
            "integration.name",
            IntegrationName::parse(&integration.name),
        )?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::default();
        let mut changes = IntegrationChanges {
            etag: optional_etag(&integration.etag),
            display_name: None,
            config: None,
        };
        if paths.is_empty() {
            v.check::<()>(
                "update_mask",
                Err("is required: display_name and/or config".into()),
            );
        }
        for path in &paths {
            match path.as_str() {
                "display_name" => {
                    changes.display_name = v.check(
                        "integration.display_name",
                        DisplayName::parse(&integration.display_name),
                    );
                }
                "config" => {
                    changes.config = Some(
                        integration
                            .config
                            .clone()
                            .into_iter()
                            .collect::<BTreeMap<_, _>>(),
                    )
                }
                _ => v
                    .check::<()>(
                        "update_mask",
                        Err("may name only display_name and config".into()),
                    )
                    .unwrap_or_default(),
            }
        }
        v.finish()?;
        Ok(UpdateIntegration { name, changes })
    }
}

/// DeleteIntegration.
pub struct DeleteIntegration {
    pub name: IntegrationName,
    pub etag: Option<String>,
}

impl TryFrom<pb::DeleteIntegrationRequest> for DeleteIntegration {
    type Error = Error;

    fn try_from(req: pb::DeleteIntegrationRequest) -> Result<Self, Error> {
        Ok(DeleteIntegration {
            name: field("name", IntegrationName::parse(&req.name))?,
            etag: optional_etag(&req.etag),
        })
    }
}

/// ReauthenticateIntegration.
pub struct ReauthenticateOne {
    pub name: IntegrationName,
    pub reauth: Reauth,
}

impl TryFrom<pb::ReauthenticateIntegrationRequest> for ReauthenticateOne {
    type Error = Error;

    fn try_from(req: pb::ReauthenticateIntegrationRequest) -> Result<Self, Error> {
        let name = field("name", IntegrationName::parse(&req.name))?;
        let reauth = match req.auth {
            Some(Auth::InstalledApp(app)) => {
                Reauth::App(field("installed_app", AppName::parse(&app))?)
            }
            Some(Auth::Credentials(mut credentials)) => {
                let credentials = take_credentials(&mut credentials.values);
                if credentials.is_empty() {
                    return Err(Error::invalid("credentials.values", "is required"));
                }
                Reauth::Credentials(credentials)
            }
            None => return Err(Error::invalid("auth", "set installed_app or credentials")),
        };
        Ok(ReauthenticateOne { name, reauth })
    }
}

/// ReauthenticateIntegrations (bulk).
pub struct ReauthenticateAll {
    pub parent: ParentRef,
    pub from: AppName,
    pub to: AppName,
}

impl TryFrom<pb::ReauthenticateIntegrationsRequest> for ReauthenticateAll {
    type Error = Error;

    fn try_from(req: pb::ReauthenticateIntegrationsRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let from = v.check(
            "from_installed_app",
            AppName::parse(&req.from_installed_app),
        );
        let to = v.check("to_installed_app", AppName::parse(&req.to_installed_app));
        v.finish()?;
        Ok(ReauthenticateAll {
            parent: checked(parent)?,
            from: checked(from)?,
            to: checked(to)?,
        })
    }
}

impl TryFrom<pb::ResolveIntegrationCredentialsRequest> for IntegrationName {
    type Error = Error;

    fn try_from(req: pb::ResolveIntegrationCredentialsRequest) -> Result<Self, Error> {
        field("name", IntegrationName::parse(&req.name))
    }
}

/// WatchIntegrationEvents.
pub struct WatchEvents {
    pub parent: ParentRef,
    pub start: Option<Cursor>,
    /// The event kinds to deliver (their stored names); empty means every kind.
    pub kinds: HashSet<&'static str>,
}

fn event_kind(value: i32) -> Result<EventKind, String> {
    match pb::IntegrationEventType::try_from(value) {
        Ok(pb::IntegrationEventType::IntegrationCreated) => Ok(EventKind::Created),
        Ok(pb::IntegrationEventType::IntegrationUpdated) => Ok(EventKind::Updated),
        Ok(pb::IntegrationEventType::IntegrationDeleted) => Ok(EventKind::Deleted),
        Ok(pb::IntegrationEventType::IntegrationBroken) => Ok(EventKind::Broken),
        Ok(pb::IntegrationEventType::IntegrationRestored) => Ok(EventKind::Restored),
        _ => Err("contains an unknown or unspecified event type".into()),
    }
}

impl TryFrom<pb::WatchIntegrationEventsRequest> for WatchEvents {
    type Error = Error;

    fn try_from(req: pb::WatchIntegrationEventsRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let start = v.check("start_cursor", Cursor::parse_optional(&req.start_cursor));
        let kinds = v.check(
            "types",
            req.types
                .iter()
                .map(|t| event_kind(*t).map(|k| k.as_str()))
                .collect::<Result<HashSet<&'static str>, String>>(),
        );
        v.finish()?;
        Ok(WatchEvents {
            parent: checked(parent)?,
            start: checked(start)?,
            kinds: checked(kinds)?,
        })
    }
}

/// ListAuditEvents.
pub struct ListAudit {
    pub parent: ParentRef,
    pub query: AuditQuery,
    pub page: PageRequest,
}

fn action_filter(value: &str) -> Result<Option<AuditAction>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    AuditAction::find(value).map(Some).ok_or_else(|| {
        let known: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        format!("is not an audit action; one of {}", known.join(", "))
    })
}

fn actor_filter(value: &str) -> Result<Option<String>, String> {
    match value {
        "" => Ok(None),
        v if v.chars().count() > MAX_ACTOR_CHARS => {
            Err(format!("must be at most {MAX_ACTOR_CHARS} characters"))
        }
        v => Ok(Some(v.to_owned())),
    }
}

fn time_filter(value: Option<&prost_types::Timestamp>) -> Result<Option<i64>, String> {
    value.map(convert::micros).transpose()
}

impl TryFrom<pb::ListAuditEventsRequest> for ListAudit {
    type Error = Error;

    fn try_from(req: pb::ListAuditEventsRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let page = page(&mut v, req.page_size, req.page_token);
        let action = v.check("action", action_filter(&req.action));
        let by = v.check("actor", actor_filter(&req.actor));
        let start_time = v.check("start_time", time_filter(req.start_time.as_ref()));
        let end_time = v.check("end_time", time_filter(req.end_time.as_ref()));
        v.finish()?;
        Ok(ListAudit {
            parent: checked(parent)?,
            query: AuditQuery {
                action: checked(action)?,
                actor: checked(by)?,
                start_time: checked(start_time)?,
                end_time: checked(end_time)?,
            },
            page: checked(page)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violated<T>(parsed: Result<T, Error>) -> Vec<String> {
        match parsed {
            Err(Error::Invalid(violations)) => violations.into_iter().map(|v| v.field).collect(),
            Err(other) => panic!("expected INVALID_ARGUMENT, got {other:?}"),
            Ok(_) => panic!("expected INVALID_ARGUMENT, got a parsed request"),
        }
    }

    #[test]
    fn a_create_lists_every_violated_field_at_once() {
        let request = pb::CreateInstalledAppRequest {
            parent: "acme".into(),
            installed_app: Some(pb::InstalledApp {
                display_name: " ".into(),
                connected_to: "a\nb".into(),
                ..Default::default()
            }),
            credentials: HashMap::new(),
            request_id: "a b".into(),
        };
        assert_eq!(
            violated(CreateApp::try_from(request)),
            [
                "parent",
                "installed_app.service",
                "installed_app.display_name",
                "installed_app.connected_to",
                "request_id",
                "credentials",
            ]
        );
    }

    #[test]
    fn a_malformed_name_answers_alone_before_the_rest_of_an_update() {
        let request = pb::UpdateInstalledAppRequest {
            installed_app: Some(pb::InstalledApp {
                name: "apps/1".into(),
                display_name: String::new(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into(), "state".into()],
            }),
            credentials: HashMap::new(),
        };
        assert_eq!(
            violated(UpdateApp::try_from(request)),
            ["installed_app.name"]
        );
    }

    #[test]
    fn a_listing_checks_its_page_size_and_filters_together() {
        let request = pb::ListIntegrationsRequest {
            parent: "teams/".into(),
            page_size: -1,
            page_token: "not checked here".into(),
            installed_app: "nope".into(),
            state: 99,
        };
        assert_eq!(
            violated(ListIntegrations::try_from(request)),
            ["parent", "page_size", "installed_app", "state"]
        );
    }

    #[test]
    fn credentials_move_out_of_the_request_into_a_wiping_map() {
        let mut request = pb::CreateIntegrationRequest {
            integration: Some(pb::Integration {
                r#type: "slack.post_monitor_results".into(),
                display_name: "Job".into(),
                service: "slack".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        request
            .credentials
            .insert("access_token".into(), "xoxb-secret".into());
        let parsed = CreateIntegration::try_from(request).unwrap();
        match parsed.integration.binding {
            Binding::Own {
                service,
                credentials,
            } => {
                assert_eq!(service, "slack");
                assert_eq!(credentials.get("access_token"), Some("xoxb-secret"));
                assert!(!format!("{credentials:?}").contains("xoxb-secret"));
            }
            Binding::App(_) => panic!("expected credentials of its own"),
        }
    }

    #[test]
    fn watch_types_must_be_known_kinds() {
        let request = pb::WatchIntegrationEventsRequest {
            parent: String::new(),
            start_cursor: String::new(),
            types: vec![1, 4],
        };
        let parsed = WatchEvents::try_from(request).unwrap();
        let mut kinds: Vec<_> = parsed.kinds.into_iter().collect();
        kinds.sort();
        assert_eq!(kinds, ["INTEGRATION_BROKEN", "INTEGRATION_CREATED"]);
        let unknown = pb::WatchIntegrationEventsRequest {
            types: vec![0],
            ..Default::default()
        };
        assert_eq!(violated(WatchEvents::try_from(unknown)), ["types"]);
    }
}
