//! A team's policy per service: ALLOWED (the default), APPROVAL_REQUIRED
//! (an admin installs it, or a developer whose installation request an admin approved,
//! once: `requests.rs`; otherwise APPROVAL_REQUIRED) or BLOCKED (nobody installs it: SERVICE_BLOCKED; setting it suspends
//! the service's apps with the suspension rule, `suspension::suspend_row`).

use super::context::{Audited, Done, Write};
use super::error::{Error, Precondition, Result};
use super::installed_apps::InstalledApps;
use super::model::{Actor, AppState, AuditAction, Role};
use super::types::{AppName, TeamId};
use crate::store::{AppFilter, PolicyRow, RequestState};

pub use crate::store::ServicePolicy;

/// Most apps one block suspends in its transaction.
const MAX_SUSPENDED: u64 = 5_000;

/// Refuses installing an app of `service` in `team` that the team's policy does not let
/// `actor` install. Called by every way an app comes to be: create, OAuth sign-in, promotion.
pub(super) async fn check_installable(
    w: &mut Write<'_>,
    actor: &Actor,
    team: &TeamId,
    service: &str,
    now: i64,
) -> Result<()> {
    match w.tx().await?.service_policy(team.as_str(), service).await? {
        ServicePolicy::Allowed => Ok(()),
        ServicePolicy::ApprovalRequired if actor.role == Role::Admin => Ok(()),
        ServicePolicy::ApprovalRequired => {
            // An approved request of the caller's is used up by this install.
            let tx = w.tx().await?;
            let open = tx
                .open_request(team.as_str(), &actor.subject, service)
                .await?;
            match open {
                Some(mut row) if row.state == RequestState::Approved => {
                    row.state = RequestState::Used;
                    row.update_time = now;
                    if tx.decide_request(row, RequestState::Approved).await? {
                        return Ok(());
                    }
                    Err(Error::EtagMismatch(
                        "the approval was used concurrently".into(),
                    ))
                }
                _ => Err(Error::precondition(
                    Precondition::ApprovalRequired,
                    "the team requires approval to install this service: RequestInstallation, then an admin approves",
                )),
            }
        }
        ServicePolicy::Blocked => Err(Error::precondition(
            Precondition::ServiceBlocked,
            "the team blocked this service",
        )),
    }
}

/// What setting a policy did, or with `validate_only` would do.
#[derive(Clone, Debug)]
pub struct PolicyChange {
    pub policy: ServicePolicy,
    /// The apps of the service a block suspends (names), not suspended before.
    pub suspended: Vec<String>,
}

impl InstalledApps {
    /// Sets `team`'s policy for `service` (admins). BLOCKED suspends every app of the
    /// service not suspended yet, in the same transaction; `validate_only` names them and
    /// changes nothing. Unblocking resumes nothing: an admin resumes each app.
    pub async fn set_service_policy(
        &self,
        actor: &Actor,
        team: &TeamId,
        service: &str,
        policy: ServicePolicy,
        validate_only: bool,
    ) -> Result<PolicyChange> {
        self.ctx().service(service, "service")?;
        let filter = AppFilter {
            service: Some(service.to_owned()),
            ..Default::default()
        };
        let affected = async |w: &mut Write<'_>| -> Result<Vec<String>> {
            if policy != ServicePolicy::Blocked {
                return Ok(Vec::new());
            }
            let rows = (w.tx().await?)
                .list_apps(team.as_str(), &filter, None, MAX_SUSPENDED + 1)
                .await?;
            if rows.len() as u64 > MAX_SUSPENDED {
                return Err(Error::ResourceExhausted(
                    "the service has more than 5000 apps; suspend some first".into(),
                ));
            }
            Ok(rows
                .into_iter()
                .filter(|r| r.state != AppState::Suspended)
                .map(|r| r.id)
                .collect())
        };
        if validate_only {
            let mut draft = self.ctx().draft(actor);
            let ids = affected(&mut draft).await?;
            let suspended = ids
                .into_iter()
                .map(|id| AppName::new(team.clone(), id).to_string());
            return Ok(PolicyChange {
                policy,
                suspended: suspended.collect(),
            });
        }
        let resource = format!("{}/servicePolicies/{service}", team.resource_name());
        let audited = Audited::new(AuditAction::ServicePolicySet, team, resource);
        self.ctx()
            .write(actor, audited, async |w| {
                let now = self.ctx().now();
                let mut suspended = Vec::new();
                for id in affected(w).await? {
                    let name = AppName::new(team.clone(), id);
                    let mut row = w.lock_app(&name).await?;
                    let reason = "the team blocked the service";
                    super::suspension::suspend_row(w, actor, &mut row, reason, now).await?;
                    suspended.push(name.to_string());
                }
                let row = PolicyRow {
                    team: team.as_str().to_owned(),
                    service: service.to_owned(),
                    policy,
                    updated_by: actor.subject.clone(),
                    update_time: now,
                };
                w.tx().await?.put_service_policy(row).await?;
                Ok(Done::Commit(PolicyChange { policy, suspended }))
            })
            .await
    }
}
