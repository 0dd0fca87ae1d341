//! `AccessService` (issue 25, least privilege).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::parse::SetUsableBy;
use super::{accept, convert};
use crate::domain::Hub;
use crate::pb;
use crate::pb::access_service_server::AccessService;

pub struct AccessControl {
    hub: Arc<Hub>,
}

impl AccessControl {
    pub fn new(hub: Arc<Hub>) -> Self {
        AccessControl { hub }
    }
}

#[tonic::async_trait]
impl AccessService for AccessControl {
    async fn set_installed_app_usable_by(
        &self,
        request: Request<pb::SetInstalledAppUsableByRequest>,
    ) -> Result<Response<pb::SetInstalledAppUsableByResponse>, Status> {
        let (actor, req): (_, SetUsableBy) = accept(request)?;
        let change = self
            .hub
            .apps()
            .set_usable_by(&actor, &req.name, req.usable, req.etag, req.validate_only)
            .await?;
        Ok(Response::new(pb::SetInstalledAppUsableByResponse {
            installed_app: Some(convert::installed_app(&change.app)),
            losing_access: change.losing_access,
        }))
    }
}
