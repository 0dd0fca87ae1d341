//! Installation requests: on a service whose team policy is
//! APPROVAL_REQUIRED, a developer asks; an admin approves or denies. An approved request lets
//! its requester install the service once (`policy::check_installable` uses it up: a create,
//! or the start of an OAuth sign-in). Each step is audited. Deprovisioning cancels the
//! person's open requests.
//!
//! Each step (made, approved, denied, cancelled) is also an event of the outbox, of a
//! webhook-only type (like WEBHOOK_SUBSCRIPTION_DISABLED): webhook subscriptions receive it;
//! watch streams, whose events are about an integration or an installed app, do not.

use serde::{Deserialize, Serialize};

use super::context::{Audited, Done, Write};
use super::error::{Error, Precondition, Result};
use super::installed_apps::InstalledApps;
use super::model::{Actor, AuditAction};
use super::policy::ServicePolicy;
use super::types::{RequestName, TeamId, new_id};
pub use crate::store::RequestState;
use crate::store::{EventRow, RequestRow};

/// Most requests a listing answers (the newest).
pub const MAX_LISTED_REQUESTS: u64 = 200;

/// The event of a request made.
pub const REQUESTED_KIND: &str = "INSTALLATION_REQUEST_CREATED";
/// The event of a request approved.
pub const APPROVED_KIND: &str = "INSTALLATION_REQUEST_APPROVED";
/// The event of a request denied.
pub const DENIED_KIND: &str = "INSTALLATION_REQUEST_DENIED";
/// The event of a request cancelled (its requester was deprovisioned).
pub const CANCELLED_KIND: &str = "INSTALLATION_REQUEST_CANCELLED";
/// Every event type of installation requests (webhook only).
pub const REQUEST_KINDS: [&str; 4] = [REQUESTED_KIND, APPROVED_KIND, DENIED_KIND, CANCELLED_KIND];
/// Why deprovisioning cancelled a request (its `decision`).
const REQUESTER_GONE: &str = "the requester was deprovisioned";

/// Whether a stored event is about an installation request.
pub fn is_request_event(kind: &str) -> bool {
    REQUEST_KINDS.contains(&kind)
}

/// An installation request as its events record it. Fields added later must have defaults,
/// since events written before them are read back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestSnapshot {
    /// `teams/{team}/installationRequests/{id}`.
    pub name: String,
    pub service: String,
    pub requester: String,
    /// The stored state (the proto's value name).
    pub state: String,
    pub reason: String,
    #[serde(default)]
    pub decided_by: Option<String>,
    #[serde(default)]
    pub decision: Option<String>,
    pub create_time: i64,
    pub update_time: i64,
}

/// The outbox event `kind` of the request `row` as it is after the change, by `actor`.
pub(super) fn request_event(kind: &str, row: &RequestRow, actor: &str) -> Result<EventRow> {
    let team = TeamId::parse(&row.team).map_err(|_| Error::internal("stored team id"))?;
    let snapshot = RequestSnapshot {
        name: RequestName::new(team, row.id.clone()).to_string(),
        service: row.service.clone(),
        requester: row.requester.clone(),
        state: row.state.as_str().to_owned(),
        reason: row.reason.clone(),
        decided_by: row.decided_by.clone(),
        decision: row.decision.clone(),
        create_time: row.create_time,
        update_time: row.update_time,
    };
    Ok(EventRow {
        seq: 0,
        event_id: new_id(),
        team: row.team.clone(),
        kind: kind.to_owned(),
        integration_id: String::new(),
        installed_app_id: None,
        reason: row.decision.clone(),
        actor: actor.to_owned(),
        time: row.update_time,
        snapshot: serde_json::to_string(&snapshot).map_err(|e| Error::Internal(e.into()))?,
    })
}

/// Cancels every open request of `requester` in `w` (deprovisioning by `actor`), each with
/// its event; with `write` false, only counts them (a preview). Answers how many.
pub(super) async fn cancel_requests_of(
    w: &mut Write<'_>,
    team: &TeamId,
    (requester, actor): (&str, &str),
    now: i64,
    write: bool,
) -> Result<u64> {
    let tx = w.tx().await?;
    let open = tx.open_requests_of(team.as_str(), requester).await?;
    let count = open.len() as u64;
    if !write {
        return Ok(count);
    }
    for mut row in open {
        let was = row.state;
        row.state = RequestState::Cancelled;
        row.decision = Some(REQUESTER_GONE.to_owned());
        row.update_time = now;
        if !w.tx().await?.decide_request(row.clone(), was).await? {
            return Err(Error::internal("locked installation request changed"));
        }
        let event = request_event(CANCELLED_KIND, &row, actor)?;
        w.raw_event(event);
    }
    Ok(count)
}

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
                w.raw_event(request_event(REQUESTED_KIND, &row, &actor.subject)?);
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
                let kind = if approve { APPROVED_KIND } else { DENIED_KIND };
                w.raw_event(request_event(kind, &row, &actor.subject)?);
                Ok(Done::Commit(row))
            })
            .await?;
        Ok(InstallationRequest::of(&name.team, row))
    }
}
