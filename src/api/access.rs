//! `AccessService` (issue 25, least privilege).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use std::collections::BTreeSet;

use super::parse::{Handover, SetPolicy, SetUsableBy};
use super::{accept, convert};
use crate::domain::Hub;
use crate::domain::policy::ServicePolicy;
use crate::pb;
use crate::pb::access_service_server::AccessService;

pub struct AccessControl {
    hub: Arc<Hub>,
    /// Service subjects that may call DeprovisionPerson (`INTEGRATION_HUB_DEPROVISIONING_SERVICES`).
    deprovisioners: BTreeSet<String>,
}

impl AccessControl {
    pub fn new(hub: Arc<Hub>, deprovisioners: BTreeSet<String>) -> Self {
        AccessControl {
            hub,
            deprovisioners,
        }
    }
}

fn handed_over(h: &crate::domain::offboarding::Handover) -> pb::TransferOwnershipResponse {
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    pb::TransferOwnershipResponse {
        installed_app_count: count(h.installed_apps),
        integration_count: count(h.integrations),
        reauthorization_recommended: h.reauthorization_recommended.clone(),
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

    async fn transfer_ownership(
        &self,
        request: Request<pb::TransferOwnershipRequest>,
    ) -> Result<Response<pb::TransferOwnershipResponse>, Status> {
        let (actor, req): (_, Handover) = accept(request)?;
        let team = actor.team_of_parent(&req.parent)?;
        let handover = self
            .hub
            .integrations()
            .transfer_ownership(&actor, &team, req.from, req.to, req.validate_only)
            .await?;
        Ok(Response::new(handed_over(&handover)))
    }

    async fn set_service_policy(
        &self,
        request: Request<pb::SetServicePolicyRequest>,
    ) -> Result<Response<pb::SetServicePolicyResponse>, Status> {
        let (actor, req): (_, SetPolicy) = accept(request)?;
        let team = actor.team_of_parent(&req.parent)?;
        let change = (self.hub.apps())
            .set_service_policy(&actor, &team, &req.service, req.policy, req.validate_only)
            .await?;
        let policy = match change.policy {
            ServicePolicy::Allowed => pb::ServicePolicy::Allowed,
            ServicePolicy::ApprovalRequired => pb::ServicePolicy::ApprovalRequired,
            ServicePolicy::Blocked => pb::ServicePolicy::Blocked,
        };
        Ok(Response::new(pb::SetServicePolicyResponse {
            policy: policy as i32,
            suspended_installed_apps: change.suspended,
        }))
    }

    async fn deprovision_person(
        &self,
        request: Request<pb::DeprovisionPersonRequest>,
    ) -> Result<Response<pb::DeprovisionPersonResponse>, Status> {
        let (actor, req): (_, Handover) = accept(request)?;
        let team = actor.team_of_parent(&req.parent)?;
        let permitted = self.deprovisioners.contains(&actor.subject);
        let people = (req.from, req.to);
        let handover = (self.hub.integrations())
            .deprovision_person(&actor, &team, people, permitted, req.validate_only)
            .await?;
        Ok(Response::new(pb::DeprovisionPersonResponse {
            transfer: Some(handed_over(&handover)),
            cancelled_authorization_count: i32::try_from(handover.cancelled_authorizations)
                .unwrap_or(i32::MAX),
        }))
    }
}
