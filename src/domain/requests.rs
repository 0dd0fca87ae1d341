//! Installation requests (issue 25, item 3): on a service whose team policy is
//! APPROVAL_REQUIRED, a developer asks; an admin approves or denies. An approved request lets
//! its requester install the service once (`policy::check_installable` uses it up: a create,
//! or the start of an OAuth sign-in). Each step is audited. Deprovisioning cancels the
//! person's open requests.

use super::context::{Audited, Done};
use super::error::{Error, Precondition, Result};
use super::installed_apps::InstalledApps;
use super::model::{Actor, AuditAction};
use super::policy::ServicePolicy;
use super::types::{RequestName, TeamId, new_id};
use crate::store::RequestRow;
pub use crate::store::RequestState;

/// Most requests a listing answers (the newest).
pub const MAX_LISTED_REQUESTS: u64 = 200;

/// An installation request as the API shows it.
#[derive(Clone, Debug)]
pub struct InstallationRequest {
    pub name: RequestName,
    pub row: RequestRow,
}

impl InstallationRequest {
    fn of(team: &TeamId, row: RequestRow) -> InstallationRequest {
        InstallationRequest {
            name: RequestName::new(team.clone(), row.id.clone()),
            row,
        }
    }
}

impl InstalledApps {
    /// A developer asks to install `service`, which the team's policy requires approval for.
    pub async fn request_installation(
        &self,
        actor: &Actor,
        team: &TeamId,
        service: &str,
        reason: String,
    ) -> Result<InstallationRequest> {
        self.ctx().service(service, "service")?;
        let audited = Audited::new(
            AuditAction::InstallationRequestCreate,
            team,
            team.resource_name(),
        );
        let row = self
            .ctx()
            .write(actor, audited, async |w| {
                let tx = w.tx().await?;
                match tx.service_policy(team.as_str(), service).await? {
                    ServicePolicy::ApprovalRequired => {}
                    ServicePolicy::Blocked => {
                        return Err(Error::precondition(
                            Precondition::ServiceBlocked,
                            "the team blocked this service",
                        ));
                    }
                    ServicePolicy::Allowed => {
                        return Err(Error::precondition(
                            Precondition::WrongState,
                            "the service needs no approval: install it",
                        ));
                    }
                }
                if tx
                    .open_request(team.as_str(), &actor.subject, service)
                    .await?
                    .is_some()
                {
                    return Err(Error::AlreadyExists {
                        kind: "open installation request of this service by the caller",
                    });
                }
                let now = self.ctx().now();
                let row = RequestRow {
                    id: new_id(),
                    team: team.as_str().to_owned(),
                    service: service.to_owned(),
                    requester: actor.subject.clone(),
                    state: RequestState::Pending,
                    reason,
                    decided_by: None,
                    decision: None,
                    create_time: now,
                    update_time: now,
                };
                tx.insert_request(row.clone()).await?;
                w.set_resource(RequestName::new(team.clone(), row.id.clone()).to_string());
                Ok(Done::Commit(row))
            })
            .await?;
        Ok(InstallationRequest::of(team, row))
    }

    /// A team's requests, newest first (at most [`MAX_LISTED_REQUESTS`]).
    pub async fn list_installation_requests(
        &self,
        team: &TeamId,
        state: Option<RequestState>,
    ) -> Result<Vec<InstallationRequest>> {
        let rows = (self.ctx().store())
            .list_requests(team.as_str(), state, MAX_LISTED_REQUESTS)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| InstallationRequest::of(team, r))
            .collect())
    }

    /// An admin approves (or denies, with `decision` saying why) a pending request.
    pub async fn decide_installation_request(
        &self,
        actor: &Actor,
        name: &RequestName,
        approve: bool,
        decision: String,
    ) -> Result<InstallationRequest> {
        let action = if approve {
            AuditAction::InstallationRequestApprove
        } else {
            AuditAction::InstallationRequestDeny
        };
        let audited = Audited::new(action, &name.team, name.to_string());
        let row = self
            .ctx()
            .write(actor, audited, async |w| {
                let missing = || Error::NotFound {
                    kind: RequestName::KIND,
                    name: name.to_string(),
                };
                if !actor.sees(&name.team) {
                    return Err(missing());
                }
                let tx = w.tx().await?;
                let mut row =
                    (tx.get_request(name.team.as_str(), &name.id).await?).ok_or_else(missing)?;
                if row.state != RequestState::Pending {
                    return Err(Error::precondition(
                        Precondition::WrongState,
                        "the installation request is not pending",
                    ));
                }
                row.state = if approve {
                    RequestState::Approved
                } else {
                    RequestState::Denied
                };
                row.decided_by = Some(actor.subject.clone());
                row.decision = (!decision.is_empty()).then_some(decision);
                row.update_time = self.ctx().now();
                if !tx
                    .decide_request(row.clone(), RequestState::Pending)
                    .await?
                {
                    return Err(Error::EtagMismatch(
                        "the request was decided concurrently".into(),
                    ));
                }
                Ok(Done::Commit(row))
            })
            .await?;
        Ok(InstallationRequest::of(&name.team, row))
    }
}
