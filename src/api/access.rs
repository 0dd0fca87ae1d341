//! `AccessService` (least privilege).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use std::collections::BTreeSet;

use super::parse::{Decide, Handover, ListRequests, NewRequest, SetPolicy, SetUsableBy};
use super::{accept, convert};
use crate::domain::Hub;
use crate::domain::policy::ServicePolicy;
use crate::domain::requests::{InstallationRequest, RequestState};
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

fn request(r: &InstallationRequest) -> pb::InstallationRequest {
    use pb::installation_request::State as S;
    let state = match r.row.state {
        RequestState::Pending => S::Pending,
        RequestState::Approved => S::Approved,
        RequestState::Denied => S::Denied,
        RequestState::Used => S::Used,
        RequestState::Cancelled => S::Cancelled,
    };
    pb::InstallationRequest {
        name: r.name.to_string(),
        service: r.row.service.clone(),
        requester: r.row.requester.clone(),
        state: state as i32,
        reason: r.row.reason.clone(),
        decided_by: r.row.decided_by.clone().unwrap_or_default(),
        decision: r.row.decision.clone().unwrap_or_default(),
        create_time: Some(convert::timestamp(r.row.create_time)),
        update_time: Some(convert::timestamp(r.row.update_time)),
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

    async fn request_installation(
        &self,
        request: Request<pb::RequestInstallationRequest>,
    ) -> Result<Response<pb::InstallationRequest>, Status> {
        let (actor, req): (_, NewRequest) = accept(request)?;
        let team = actor.team_of_parent(&req.parent)?;
        let made = (self.hub.apps())
            .request_installation(&actor, &team, &req.service, req.reason)
            .await?;
        Ok(Response::new(super::access::request(&made)))
    }

    async fn list_installation_requests(
        &self,
        request: Request<pb::ListInstallationRequestsRequest>,
    ) -> Result<Response<pb::ListInstallationRequestsResponse>, Status> {
        let (actor, req): (_, ListRequests) = accept(request)?;
        let team = actor.team_of_parent(&req.parent)?;
        let listed = (self.hub.apps())
            .list_installation_requests(&team, req.state)
            .await?;
        Ok(Response::new(pb::ListInstallationRequestsResponse {
            installation_requests: listed.iter().map(super::access::request).collect(),
        }))
    }

    async fn approve_installation_request(
        &self,
        request: Request<pb::ApproveInstallationRequestRequest>,
    ) -> Result<Response<pb::InstallationRequest>, Status> {
        let (actor, req): (_, Decide) = accept(request)?;
        let decided = (self.hub.apps())
            .decide_installation_request(&actor, &req.name, true, req.decision)
            .await?;
        Ok(Response::new(super::access::request(&decided)))
    }

    async fn deny_installation_request(
        &self,
        request: Request<pb::DenyInstallationRequestRequest>,
    ) -> Result<Response<pb::InstallationRequest>, Status> {
        let (actor, req): (_, Decide) = accept(request)?;
        let decided = (self.hub.apps())
            .decide_installation_request(&actor, &req.name, false, req.decision)
            .await?;
        Ok(Response::new(super::access::request(&decided)))
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
            cancelled_request_count: i32::try_from(handover.cancelled_requests).unwrap_or(i32::MAX),
        }))
    }
}
