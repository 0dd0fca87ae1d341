//! `InstalledAppService`.

use std::sync::Arc;

use tokio_stream::StreamExt;
use tokio_stream::adapters::Map;
use tonic::{Request, Response, Status};

use super::integrations::{stream_ended, watch_refused};
use super::parse::{
    CompleteAuthorization, CreateApp, DeleteApp, ListApps, ReportRejected,
    StartAuthorizationRequest, SuspendApp, TransferApp, UpdateApp, WatchEvents,
};
use super::{accept, convert};
use crate::domain::app_events::AppEvent;
use crate::domain::model::AuditAction;
use crate::domain::oauth::Completer;
use crate::domain::tokens::TeamCursors;
use crate::domain::types::{AppName, AuthorizationName};
use crate::domain::{Error, Hub};
use crate::events::{WatchItem, Watches};
use crate::pb;
use crate::pb::installed_app_service_server::InstalledAppService;

pub struct InstalledApps {
    hub: Arc<Hub>,
    watches: Watches,
}

impl InstalledApps {
    pub fn new(hub: Arc<Hub>, watches: Watches) -> Self {
        InstalledApps { hub, watches }
    }
}

/// One message of an installed-app watch stream, as the client sees it.
fn watch_message(
    cursors: &TeamCursors,
    item: WatchItem,
) -> Result<pb::WatchInstalledAppEventsResponse, Status> {
    match item {
        WatchItem::Message {
            events,
            cursor,
            checkpoint,
        } => {
            let events = events
                .iter()
                .map(|row| AppEvent::from_row(row).map(|e| convert::app_event(&e, cursors)))
                .collect::<Result<Vec<_>, Error>>()?;
            Ok(pb::WatchInstalledAppEventsResponse {
                events,
                cursor: cursors.encode(cursor),
                checkpoint,
            })
        }
        WatchItem::End { cursor, reason } => Err(stream_ended(cursors, cursor, reason)),
    }
}

type ResponseStream = Map<
    crate::events::WatchStream,
    Box<dyn FnMut(WatchItem) -> Result<pb::WatchInstalledAppEventsResponse, Status> + Send>,
>;

#[tonic::async_trait]
impl InstalledAppService for InstalledApps {
    async fn list_services(
        &self,
        _request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let services = self.hub.catalog().services();
        Ok(Response::new(pb::ListServicesResponse {
            services: services.iter().map(convert::service).collect(),
        }))
    }

    async fn create_installed_app(
        &self,
        request: Request<pb::CreateInstalledAppRequest>,
    ) -> Result<Response<pb::InstalledApp>, Status> {
        let (actor, req): (_, CreateApp) = accept(request)?;
        let team = actor.team_of_parent(&req.parent)?;
        let app = self
            .hub
            .apps()
            .create_installed_app(&actor, team, req.app)
            .await?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn get_installed_app(
        &self,
        request: Request<pb::GetInstalledAppRequest>,
    ) -> Result<Response<pb::InstalledApp>, Status> {
        let (actor, name): (_, AppName) = accept(request)?;
        let app = self.hub.apps().get_installed_app(&actor, &name).await?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn list_installed_apps(
        &self,
        request: Request<pb::ListInstalledAppsRequest>,
    ) -> Result<Response<pb::ListInstalledAppsResponse>, Status> {
        let (actor, req): (_, ListApps) = accept(request)?;
        let team = actor.team_of_parent(&req.parent)?;
        let page = self
            .hub
            .apps()
            .list_installed_apps(&actor, &team, req.query, req.page)
            .await?;
        Ok(Response::new(pb::ListInstalledAppsResponse {
            installed_apps: page.items.iter().map(convert::installed_app).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_installed_app(
        &self,
        request: Request<pb::UpdateInstalledAppRequest>,
    ) -> Result<Response<pb::InstalledApp>, Status> {
        let (actor, req): (_, UpdateApp) = accept(request)?;
        let app = self
            .hub
            .apps()
            .update_installed_app(&actor, &req.name, req.changes)
            .await?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn delete_installed_app(
        &self,
        request: Request<pb::DeleteInstalledAppRequest>,
    ) -> Result<Response<pb::DeleteInstalledAppResponse>, Status> {
        let (actor, req): (_, DeleteApp) = accept(request)?;
        let broken = self
            .hub
            .apps()
            .delete_installed_app(&actor, &req.name, req.etag, req.validate_only)
            .await?;
        Ok(Response::new(pb::DeleteInstalledAppResponse {
            broken_integrations: broken.iter().map(|i| i.name()).collect(),
            integrations: broken.iter().map(convert::integration).collect(),
        }))
    }

    async fn report_credentials_rejected(
        &self,
        request: Request<pb::ReportCredentialsRejectedRequest>,
    ) -> Result<Response<pb::InstalledApp>, Status> {
        let (actor, req): (_, ReportRejected) = accept(request)?;
        let app = self
            .hub
            .apps()
            .report_credentials_rejected(&actor, &req.name, req.detail)
            .await?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn verify_installed_app(
        &self,
        request: Request<pb::VerifyInstalledAppRequest>,
    ) -> Result<Response<pb::InstalledApp>, Status> {
        let (actor, name): (_, AppName) = accept(request)?;
        let app = self.hub.apps().verify_installed_app(&actor, &name).await?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn suspend_installed_app(
        &self,
        request: Request<pb::SuspendInstalledAppRequest>,
    ) -> Result<Response<pb::InstalledApp>, Status> {
        let (actor, req): (_, SuspendApp) = accept(request)?;
        let app = self
            .hub
            .apps()
            .suspend_installed_app(&actor, &req.name, req.reason)
            .await?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn resume_installed_app(
        &self,
        request: Request<pb::ResumeInstalledAppRequest>,
    ) -> Result<Response<pb::InstalledApp>, Status> {
        let (actor, name): (_, AppName) = accept(request)?;
        let app = self.hub.apps().resume_installed_app(&actor, &name).await?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn transfer_installed_app(
        &self,
        request: Request<pb::TransferInstalledAppRequest>,
    ) -> Result<Response<pb::InstalledApp>, Status> {
        let (actor, req): (_, TransferApp) = accept(request)?;
        let app = self
            .hub
            .apps()
            .transfer_installed_app(&actor, &req.name, req.new_owner)
            .await?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn start_installed_app_authorization(
        &self,
        request: Request<pb::StartInstalledAppAuthorizationRequest>,
    ) -> Result<Response<pb::StartInstalledAppAuthorizationResponse>, Status> {
        let (actor, req): (_, StartAuthorizationRequest) = accept(request)?;
        let team = actor.team_of_parent(&req.parent)?;
        let (authorization, uris) = self
            .hub
            .authorizations()
            .start_authorization(&actor, team, req.start)
            .await?;
        Ok(Response::new(pb::StartInstalledAppAuthorizationResponse {
            authorization_uri: uris.provider,
            authorization: Some(convert::authorization(&authorization)),
            sign_in_uri: uris.sign_in,
        }))
    }

    async fn complete_installed_app_authorization(
        &self,
        request: Request<pb::CompleteInstalledAppAuthorizationRequest>,
    ) -> Result<Response<pb::InstalledAppAuthorization>, Status> {
        let (actor, req): (_, CompleteAuthorization) = accept(request)?;
        let authorization = self
            .hub
            .authorizations()
            .complete_authorization(Completer::Caller(&actor), &req.state, req.completion)
            .await?;
        Ok(Response::new(convert::authorization(&authorization)))
    }

    async fn get_installed_app_authorization(
        &self,
        request: Request<pb::GetInstalledAppAuthorizationRequest>,
    ) -> Result<Response<pb::InstalledAppAuthorization>, Status> {
        let (actor, name): (_, AuthorizationName) = accept(request)?;
        let authorization = self
            .hub
            .authorizations()
            .get_authorization(&actor, &name)
            .await?;
        Ok(Response::new(convert::authorization(&authorization)))
    }

    type WatchInstalledAppEventsStream = ResponseStream;

    async fn watch_installed_app_events(
        &self,
        request: Request<pb::WatchInstalledAppEventsRequest>,
    ) -> Result<Response<Self::WatchInstalledAppEventsStream>, Status> {
        let (actor, req): (_, WatchEvents) = accept(request)?;
        let scope = actor.watch_scope(&req.parent)?;
        (self.hub.audit())
            .refuse_limited_watch(&actor, AuditAction::InstalledAppWatch, scope.as_ref())
            .await?;
        let cursors = self.hub.cursors(scope.as_ref());
        let start = cursors.open("start_cursor", &req.start_cursor)?;
        let team = scope.map(|t| t.as_str().to_owned());
        let stream = self
            .watches
            .open(&actor.principal(), team, start.map(|c| c.0), req.kinds)
            .await
            .map_err(watch_refused)?;
        let message: Box<dyn FnMut(WatchItem) -> _ + Send> =
            Box::new(move |item| watch_message(&cursors, item));
        Ok(Response::new(stream.map(message)))
    }
}
