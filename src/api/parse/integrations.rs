//! Requests of `IntegrationService`.

use std::collections::{BTreeMap, HashSet};

use super::{checked, field, optional_etag, page, take_credentials};
use crate::domain::app_events::integration_kinds;
use crate::domain::model::{EventKind, IntegrationState};
use crate::domain::tokens::check_cursor_text;
use crate::domain::types::{
    AppName, ConnectedTo, DisplayName, IdempotencyKey, IntegrationName, Owner, PageRequest,
    ParentRef,
};
use crate::domain::{
    Binding, Error, IntegrationChanges, IntegrationQuery, NewIntegration, Promote, Reauth, SaveAs,
    Violations,
};
use crate::pb;
use crate::pb::reauthenticate_integration_request::Auth;

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
        let save_as = match (req.save_as_installed_app, &binding) {
            (None, _) => Some(None),
            (Some(save_as), Some(Binding::Own { .. })) => {
                save_as_parts(&mut v, "save_as_installed_app", &save_as).map(Some)
            }
            (Some(_), _) => v.check(
                "save_as_installed_app",
                Err("needs credentials of its own to save".into()),
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
                save_as: checked(save_as)?,
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
        let owner = v.check("owner", super::person_filter(req.owner));
        let creator = v.check("creator", super::person_filter(req.creator));
        v.finish()?;
        Ok(ListIntegrations {
            parent: checked(parent)?,
            query: IntegrationQuery {
                installed_app: checked(installed_app)?,
                state: checked(state)?,
                owner: checked(owner)?,
                creator: checked(creator)?,
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
    /// The start cursor as sent (bounded in length); opened for the team the watch covers
    /// once that is known (`Hub::cursors`).
    pub start_cursor: String,
    /// The event kinds to deliver (their stored names): those asked for, or every kind of
    /// the stream's family (integration or installed-app events) when none is named. Never
    /// empty, so a stream never sees the other family's events.
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
        let start = v.check("start_cursor", check_cursor_text(req.start_cursor));
        let kinds = v.check(
            "types",
            req.types
                .iter()
                .map(|t| event_kind(*t).map(|k| k.as_str()))
                .collect::<Result<HashSet<&'static str>, String>>(),
        );
        v.finish()?;
        let mut kinds = checked(kinds)?;
        if kinds.is_empty() {
            kinds.extend(integration_kinds());
        }
        Ok(WatchEvents {
            parent: checked(parent)?,
            start_cursor: checked(start)?,
            kinds,
        })
    }
}

/// TransferIntegration.
pub struct TransferIntegration {
    pub name: IntegrationName,
    pub new_owner: Owner,
}

impl TryFrom<pb::TransferIntegrationRequest> for TransferIntegration {
    type Error = Error;

    fn try_from(req: pb::TransferIntegrationRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let name = v.check("name", IntegrationName::parse(&req.name));
        let new_owner = v.check("new_owner", Owner::parse(&req.new_owner));
        v.finish()?;
        Ok(TransferIntegration {
            name: checked(name)?,
            new_owner: checked(new_owner)?,
        })
    }
}

/// The app to save credentials as, its fields named under `field`.
fn save_as_parts(
    v: &mut Violations,
    field: &str,
    save_as: &pb::SaveAsInstalledApp,
) -> Option<SaveAs> {
    let display_name = v.check(
        &format!("{field}.display_name"),
        DisplayName::parse(&save_as.display_name),
    );
    let connected_to = v.check(
        &format!("{field}.connected_to"),
        ConnectedTo::parse(&save_as.connected_to),
    );
    Some(SaveAs {
        display_name: display_name?,
        connected_to: connected_to?,
    })
}

impl TryFrom<pb::PromoteIntegrationCredentialsRequest> for Promote {
    type Error = Error;

    fn try_from(req: pb::PromoteIntegrationCredentialsRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let name = v.check("name", IntegrationName::parse(&req.name));
        let save_as = match &req.installed_app {
            Some(save_as) => save_as_parts(&mut v, "installed_app", save_as),
            None => v.check("installed_app", Err("is required".into())),
        };
        v.finish()?;
        Ok(Promote {
            name: checked(name)?,
            save_as: checked(save_as)?,
            include_matching: req.include_matching,
            etag: optional_etag(&req.etag),
        })
    }
}
