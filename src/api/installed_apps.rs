//! `InstalledAppService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{actor, convert, field, optional_etag, status};
use crate::crypto::Credentials;
use crate::domain::hub::{AppChanges, NewApp, parse_apps_page_token};
use crate::domain::types::{
    AppName, ConnectedTo, DisplayName, IdempotencyKey, PageSize, ParentRef, RejectionDetail,
};
use crate::domain::{Error, Hub, Violations};
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

/// Takes the credentials out of a request map, so the plaintext lives in one place that
/// wipes itself.
pub fn take_credentials(map: &mut std::collections::HashMap<String, String>) -> Credentials {
    Credentials::new(std::mem::take(map).into_iter().collect())
}

#[tonic::async_trait]
impl InstalledAppService for InstalledApps {
    async fn list_services(
        &self,
        _request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let services = self
            .hub
            .catalog()
            .services()
            .iter()
            .map(convert::service)
            .collect();
        Ok(Response::new(pb::ListServicesResponse { services }))
    }

    async fn create_installed_app(
        &self,
        request: Request<pb::CreateInstalledAppRequest>,
    ) -> Result<Response<pb::InstalledApp>, Status> {
        let actor = actor(&request)?;
        let mut req = request.into_inner();
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
        let idempotency_key = v.check(
            "request_id",
            IdempotencyKey::parse_optional(&req.request_id),
        );
        if credentials.is_empty() {
            v.check::<()>("credentials", Err("is required".into()));
        }
        v.finish().map_err(status)?;
        let (Some(parent), Some(display_name), Some(connected_to), Some(idempotency_key)) =
            (parent, display_name, connected_to, idempotency_key)
        else {
            return Err(status(Error::internal("checked fields missing")));
        };
        let team = self.hub.team_of_parent(&actor, &parent).map_err(status)?;
        let created = self
            .hub
            .create_installed_app(
                &actor,
                team,
                NewApp {
                    service: app.service,
                    display_name,
                    connected_to,
                    credentials,
                    idempotency_key,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(convert::installed_app(&created)))
    }

    async fn get_installed_app(
        &self,
        request: Request<pb::GetInstalledAppRequest>,
    ) -> Result<Response<pb::InstalledApp>, Status> {
        let actor = actor(&request)?;
        let name = field("name", AppName::parse(&request.get_ref().name))?;
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
        let actor = actor(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let page_size = v.check("page_size", PageSize::parse(req.page_size));
        let page_token = v.check("page_token", parse_apps_page_token(&req.page_token));
        v.finish().map_err(status)?;
        let (Some(parent), Some(page_size), Some(page_token)) = (parent, page_size, page_token)
        else {
            return Err(status(Error::internal("checked fields missing")));
        };
        let team = self.hub.team_of_parent(&actor, &parent).map_err(status)?;
        let page = self
            .hub
            .list_installed_apps(&team, page_size, page_token)
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
        let actor = actor(&request)?;
        let mut req = request.into_inner();
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
        v.finish().map_err(status)?;
        let app = self
            .hub
            .update_installed_app(&actor, &name, changes)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::installed_app(&app)))
    }

    async fn delete_installed_app(
        &self,
        request: Request<pb::DeleteInstalledAppRequest>,
    ) -> Result<Response<pb::DeleteInstalledAppResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let name = field("name", AppName::parse(&req.name))?;
        let broken = self
            .hub
            .delete_installed_app(&actor, &name, optional_etag(&req.etag), req.validate_only)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DeleteInstalledAppResponse {
            broken_integrations: broken,
        }))
    }

    async fn report_credentials_rejected(
        &self,
        request: Request<pb::ReportCredentialsRejectedRequest>,
    ) -> Result<Response<pb::InstalledApp>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let name = v.check("name", AppName::parse(&req.name));
        let detail = v.check("detail", RejectionDetail::parse(&req.detail));
        v.finish().map_err(status)?;
        let (Some(name), Some(detail)) = (name, detail) else {
            return Err(status(Error::internal("checked fields missing")));
        };
        let app = self
            .hub
            .report_credentials_rejected(&actor, &name, detail)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::installed_app(&app)))
    }
}
