//! `InstalledAppService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::parse::{
    CompleteAuthorization, CreateApp, DeleteApp, ListApps, ReportRejected,
    StartAuthorizationRequest, SuspendApp, TransferApp, UpdateApp,
};
use super::{accept, convert, status};
use crate::domain::Hub;
use crate::domain::types::{AppName, AuthorizationName};
use crate::pb;
use crate::pb::installed_app_service_server::InstalledAppService;

pub struct InstalledApps {
    hub: Arc<Hub>,
}

impl InstalledApps {
    pub fn new(hub: Arc<Hub>) -> Self {
        InstalledApps { hub }
    }
}

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
        let team = self
            .hub
            .team_of_parent(&actor, &req.parent)
            .map_err(status)?;
        let app = self
            .hub
            .create_installed_app(&actor, team, req.app)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn get_installed_app(
        &self,
        request: Request<pb::GetInstalledAppRequest>,
    ) -> Result<Response<pb::InstalledApp>, Status> {
        let (actor, name): (_, AppName) = accept(request)?;
        let app = self
            .hub
            .get_installed_app(&actor, &name)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn list_installed_apps(
        &self,
        request: Request<pb::ListInstalledAppsRequest>,
    ) -> Result<Response<pb::ListInstalledAppsResponse>, Status> {
        let (actor, req): (_, ListApps) = accept(request)?;
        let team = self
            .hub
            .team_of_parent(&actor, &req.parent)
            .map_err(status)?;
        let page = self
            .hub
            .list_installed_apps(&team, req.query, req.page)
            .await
            .map_err(status)?;
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
            .update_installed_app(&actor, &req.name, req.changes)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn delete_installed_app(
        &self,
        request: Request<pb::DeleteInstalledAppRequest>,
    ) -> Result<Response<pb::DeleteInstalledAppResponse>, Status> {
        let (actor, req): (_, DeleteApp) = accept(request)?;
        let broken = self
            .hub
            .delete_installed_app(&actor, &req.name, req.etag, req.validate_only)
            .await
            .map_err(status)?;
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
            .report_credentials_rejected(&actor, &req.name, req.detail)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn suspend_installed_app(
        &self,
        request: Request<pb::SuspendInstalledAppRequest>,
    ) -> Result<Response<pb::InstalledApp>, Status> {
        let (actor, req): (_, SuspendApp) = accept(request)?;
        let app = self
            .hub
            .suspend_installed_app(&actor, &req.name, req.reason)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn resume_installed_app(
        &self,
        request: Request<pb::ResumeInstalledAppRequest>,
    ) -> Result<Response<pb::InstalledApp>, Status> {
        let (actor, name): (_, AppName) = accept(request)?;
        let app = self
            .hub
            .resume_installed_app(&actor, &name)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn transfer_installed_app(
        &self,
        request: Request<pb::TransferInstalledAppRequest>,
    ) -> Result<Response<pb::InstalledApp>, Status> {
        let (actor, req): (_, TransferApp) = accept(request)?;
        let app = self
            .hub
            .transfer_installed_app(&actor, &req.name, req.new_owner)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn start_installed_app_authorization(
        &self,
        request: Request<pb::StartInstalledAppAuthorizationRequest>,
    ) -> Result<Response<pb::StartInstalledAppAuthorizationResponse>, Status> {
        let (actor, req): (_, StartAuthorizationRequest) = accept(request)?;
        let team = self
            .hub
            .team_of_parent(&actor, &req.parent)
            .map_err(status)?;
        let (authorization, uri) = self
            .hub
            .start_authorization(&actor, team, req.start)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::StartInstalledAppAuthorizationResponse {
            authorization_uri: uri,
            authorization: Some(convert::authorization(&authorization)),
        }))
    }

    async fn complete_installed_app_authorization(
        &self,
        request: Request<pb::CompleteInstalledAppAuthorizationRequest>,
    ) -> Result<Response<pb::InstalledAppAuthorization>, Status> {
        let (actor, req): (_, CompleteAuthorization) = accept(request)?;
        let authorization = self
            .hub
            .complete_authorization(Some(&actor), &req.state, req.completion)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::authorization(&authorization)))
    }

    async fn get_installed_app_authorization(
        &self,
        request: Request<pb::GetInstalledAppAuthorizationRequest>,
    ) -> Result<Response<pb::InstalledAppAuthorization>, Status> {
        let (actor, name): (_, AuthorizationName) = accept(request)?;
        let authorization = self
            .hub
            .get_authorization(&actor, &name)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::authorization(&authorization)))
    }
}
