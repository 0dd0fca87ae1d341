//! Requests of `InstalledAppService`.

use super::{checked, field, optional_etag, page, take_credentials};
use crate::api::convert::micros;
use std::collections::HashSet;

use super::WatchEvents;
use crate::domain::app_events::app_kinds;
use crate::domain::model::{AppEventKind, AppState};
use crate::domain::tokens::check_cursor_text;
use crate::domain::types::{
    AppName, ConnectedTo, DisplayName, IdempotencyKey, Owner, PageRequest, ParentRef,
    RejectionDetail, SuspensionReason,
};
use crate::domain::{AppChanges, AppQuery, Error, NewApp, Violations};
use crate::pb;

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

/// VerifyInstalledApp.
impl TryFrom<pb::VerifyInstalledAppRequest> for AppName {
    type Error = Error;

    fn try_from(req: pb::VerifyInstalledAppRequest) -> Result<Self, Error> {
        field("name", AppName::parse(&req.name))
    }
}

/// ListInstalledApps.
pub struct ListApps {
    pub parent: ParentRef,
    pub query: AppQuery,
    pub page: PageRequest,
}

fn app_state(value: i32) -> Result<Option<AppState>, String> {
    match pb::installed_app::State::try_from(value) {
        Ok(pb::installed_app::State::Unspecified) => Ok(None),
        Ok(pb::installed_app::State::Active) => Ok(Some(AppState::Active)),
        Ok(pb::installed_app::State::NeedsReauth) => Ok(Some(AppState::NeedsReauth)),
        Ok(pb::installed_app::State::Suspended) => Ok(Some(AppState::Suspended)),
        Err(_) => Err("is not a known state".to_owned()),
    }
}

impl TryFrom<pb::ListInstalledAppsRequest> for ListApps {
    type Error = Error;

    fn try_from(req: pb::ListInstalledAppsRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let page = page(&mut v, req.page_size, req.page_token);
        let state = v.check("state", app_state(req.state));
        let unused_since = match &req.unused_since {
            None => Some(None),
            Some(time) => v.check("unused_since", micros(time)).map(Some),
        };
        let owner = v.check("owner", super::person_filter(req.owner));
        let creator = v.check("creator", super::person_filter(req.creator));
        v.finish()?;
        Ok(ListApps {
            parent: checked(parent)?,
            query: AppQuery {
                service: (!req.service.is_empty()).then_some(req.service),
                state: checked(state)?,
                unused_since: checked(unused_since)?,
                owner: checked(owner)?,
                creator: checked(creator)?,
            },
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

/// SuspendInstalledApp.
pub struct SuspendApp {
    pub name: AppName,
    pub reason: SuspensionReason,
}

impl TryFrom<pb::SuspendInstalledAppRequest> for SuspendApp {
    type Error = Error;

    fn try_from(req: pb::SuspendInstalledAppRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let name = v.check("name", AppName::parse(&req.name));
        let reason = v.check("reason", SuspensionReason::parse(&req.reason));
        v.finish()?;
        Ok(SuspendApp {
            name: checked(name)?,
            reason: checked(reason)?,
        })
    }
}

impl TryFrom<pb::ResumeInstalledAppRequest> for AppName {
    type Error = Error;

    fn try_from(req: pb::ResumeInstalledAppRequest) -> Result<Self, Error> {
        field("name", AppName::parse(&req.name))
    }
}

/// TransferInstalledApp.
pub struct TransferApp {
    pub name: AppName,
    pub new_owner: Owner,
}

impl TryFrom<pb::TransferInstalledAppRequest> for TransferApp {
    type Error = Error;

    fn try_from(req: pb::TransferInstalledAppRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let name = v.check("name", AppName::parse(&req.name));
        let new_owner = v.check("new_owner", Owner::parse(&req.new_owner));
        v.finish()?;
        Ok(TransferApp {
            name: checked(name)?,
            new_owner: checked(new_owner)?,
        })
    }
}

fn app_event_kind(value: i32) -> Result<AppEventKind, String> {
    use pb::InstalledAppEventType as T;
    match T::try_from(value) {
        Ok(T::InstalledAppCreated) => Ok(AppEventKind::Created),
        Ok(T::InstalledAppCredentialsReplaced) => Ok(AppEventKind::CredentialsReplaced),
        Ok(T::InstalledAppNeedsReauth) => Ok(AppEventKind::NeedsReauth),
        Ok(T::InstalledAppRefreshFailed) => Ok(AppEventKind::RefreshFailed),
        Ok(T::InstalledAppReauthorizationRecommended) => {
            Ok(AppEventKind::ReauthorizationRecommended)
        }
        Ok(T::InstalledAppRestored) => Ok(AppEventKind::Restored),
        Ok(T::InstalledAppDeleted) => Ok(AppEventKind::Deleted),
        Ok(T::InstalledAppScopesChanged) => Ok(AppEventKind::ScopesChanged),
        _ => Err("contains an unknown or unspecified event type".into()),
    }
}

/// WatchInstalledAppEvents: the same shape as WatchIntegrationEvents, over the app kinds.
impl TryFrom<pb::WatchInstalledAppEventsRequest> for WatchEvents {
    type Error = Error;

    fn try_from(req: pb::WatchInstalledAppEventsRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let start = v.check("start_cursor", check_cursor_text(req.start_cursor));
        let kinds = v.check(
            "types",
            req.types
                .iter()
                .map(|t| app_event_kind(*t).map(|k| k.as_str()))
                .collect::<Result<HashSet<&'static str>, String>>(),
        );
        v.finish()?;
        let mut kinds = checked(kinds)?;
        if kinds.is_empty() {
            kinds.extend(app_kinds());
        }
        Ok(WatchEvents {
            parent: checked(parent)?,
            start_cursor: checked(start)?,
            kinds,
        })
    }
}
