//! The scheduled checker: every app with a verifiable service is checked once per interval
//! (jittered by a tenth) by one replica, which takes the app's lease with one conditional
//! UPDATE that also requires the due time it read (a replica that checked it meanwhile has
//! moved that time). At most the setting's number of checks run at once against one
//! provider host in a replica. What a check decides is settled as an on-demand check's is.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use super::Verdict;
use super::apps::health_row;
use super::scopes::changes_scopes;
use crate::domain::error::{Error, Result};
use crate::domain::installed_apps::InstalledApps;
use crate::domain::model::{Actor, AppState};
use crate::domain::types::{AppName, TeamId, new_id};
use crate::store::VerificationRow;

/// Who the audit log names for scheduled checks.
pub const CHECKER: &str = "system:credentials-verifier";
/// How long a check lease holds: well beyond the verification timeout.
const LEASE_MICROS: i64 = 120_000_000;
/// Checks in flight in a replica, over all hosts, as a multiple of the per-host bound.
const HOSTS_IN_FLIGHT: usize = 8;

fn checker(team: &TeamId) -> Actor {
    Actor::system(CHECKER, team)
}

/// How one scheduled check ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// Checked (whatever it found).
    Checked,
    /// Another replica holds the lease or checked it already.
    Busy,
}

impl InstalledApps {
    /// The provider host a due app's check goes to (the key of the per-host bound).
    fn host_of(&self, row: &VerificationRow) -> String {
        let settings = self.verifier().settings();
        let base = settings
            .and_then(|s| s.base_urls.get(&row.service).cloned())
            .or_else(|| {
                let service = self.ctx().catalog().service(&row.service)?;
                Some(service.verification.call.as_ref()?.base_url.clone())
            })
            .unwrap_or_default();
        reqwest::Url::parse(&base)
            .ok()
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
            .unwrap_or(base)
    }

    /// Checks the app of `seen` if this replica takes its lease.
    pub(in crate::domain) async fn check_due(
        &self,
        seen: &VerificationRow,
        replica: &str,
    ) -> Result<CheckOutcome> {
        let Some(due) = seen.next_check_time else {
            return Ok(CheckOutcome::Busy);
        };
        let store = self.ctx().store();
        let now = self.ctx().now();
        let id = &seen.installed_app_id;
        if !store
            .take_verify_lease(id, replica, due, now, now + LEASE_MICROS)
            .await?
        {
            return Ok(CheckOutcome::Busy);
        }
        let team = TeamId::parse(&seen.team).map_err(|_| Error::internal("stored team id"))?;
        let Some(app) = store.get_app(team.as_str(), id).await? else {
            store.forget_verification(id).await?;
            return Ok(CheckOutcome::Checked);
        };
        let next = self.verifier().next_check(now);
        if app.state == AppState::Suspended {
            // Its credentials are not handed out while suspended: looked at again later.
            let row = VerificationRow {
                next_check_time: Some(next),
                ..seen.clone()
            };
            store.record_check(&row, replica).await?;
            return Ok(CheckOutcome::Checked);
        }
        let verdict = self.verify_stored(&app).await?;
        // A change of scopes is an event: written in a transaction, as a decision is.
        let decides = changes_scopes(seen.granted_scopes.as_deref(), &verdict)
            || matches!(
                (&verdict, app.state),
                (Verdict::Rejected(_), AppState::Active)
                    | (Verdict::Verified { .. }, AppState::NeedsReauth)
            );
        if decides {
            let name = AppName::new(team.clone(), id.clone());
            self.settle(&checker(&team), &name, &verdict).await?;
        } else if let Some(row) = health_row(&app, &verdict, Some(seen), now, next) {
            store.record_check(&row, replica).await?;
            // The app's health changed: this replica answers it at once.
            self.ctx().cache().changed(&seen.team);
        }
        Ok(CheckOutcome::Checked)
    }

    /// Gives apps that have no verification yet one, due at a random time within the next
    /// interval (so a fleet adopted at once is not checked at once), or NOT_VERIFIABLE for a
    /// service without a read-only call; answers how many it adopted.
    pub(in crate::domain) async fn adopt_unverified(&self, limit: u64) -> Result<usize> {
        let store = self.ctx().store();
        let found = store.apps_never_verified(limit).await?;
        let now = self.ctx().now();
        let rows: Vec<VerificationRow> = found
            .into_iter()
            .map(|(id, team, service)| {
                let reason = self
                    .ctx()
                    .catalog()
                    .service(&service)
                    .and_then(|s| s.verification.not_verifiable.clone());
                VerificationRow {
                    installed_app_id: id,
                    team,
                    service,
                    state: match reason {
                        Some(_) => crate::store::VerificationState::NotVerifiable,
                        None => crate::store::VerificationState::Unverified,
                    },
                    granted_scopes: None,
                    last_verified_time: None,
                    last_check_time: None,
                    last_error: Some(reason.clone().unwrap_or_else(|| "not checked yet".into())),
                    next_check_time: reason.is_none().then(|| self.verifier().first_check(now)),
                    lease_owner: None,
                    lease_until: None,
                    check_count: 0,
                }
            })
            .collect();
        let adopted = rows.len();
        store.adopt_verifications(rows).await?;
        Ok(adopted)
    }

    /// Runs the scheduled checker until `stop` (nothing when verification is off).
    pub fn spawn_checker(&self, mut stop: watch::Receiver<bool>) {
        let Some(settings) = self.verifier().settings().cloned() else {
            return;
        };
        let apps = self.clone();
        let replica = new_id();
        let per_host = settings.per_host_concurrency.max(1);
        let tick =
            (settings.interval / 10).clamp(Duration::from_millis(100), Duration::from_secs(5));
        tokio::spawn(async move {
            let in_flight = per_host * HOSTS_IN_FLIGHT;
            let all = Arc::new(Semaphore::new(in_flight));
            let mut hosts: HashMap<String, Arc<Semaphore>> = HashMap::new();
            loop {
                let now = apps.ctx().now();
                let limit = u64::try_from(in_flight * 4).unwrap_or(256);
                let mut more_due = false;
                match apps.ctx().store().due_verifications(now, limit).await {
                    Ok(due) => {
                        more_due = due.len() as u64 >= limit;
                        for row in due {
                            let Ok(permit) = all.clone().acquire_owned().await else {
                                return;
                            };
                            let host = hosts
                                .entry(apps.host_of(&row))
                                .or_insert_with(|| Arc::new(Semaphore::new(per_host)))
                                .clone();
                            let (apps, replica) = (apps.clone(), replica.clone());
                            tokio::spawn(async move {
                                let Ok(_host) = host.acquire_owned().await else {
                                    return;
                                };
                                if let Err(err) = apps.check_due(&row, &replica).await {
                                    tracing::warn!(installed_app = %row.installed_app_id, error = %err, "credentials check failed");
                                }
                                drop(permit);
                            });
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot read the apps due for a check")
                    }
                }
                if more_due {
                    // Wait for this read's checks (every permit back), then read on.
                    let every = u32::try_from(in_flight).unwrap_or(u32::MAX);
                    match all.acquire_many(every).await {
                        Ok(done) => drop(done),
                        Err(_) => return,
                    }
                    if *stop.borrow() {
                        return;
                    }
                    continue;
                }
                // Apps made before verification was on (or by a path that does not verify)
                // join the schedule.
                match apps.adopt_unverified(limit).await {
                    Ok(0) => {}
                    Ok(adopted) => tracing::info!(adopted, "apps joined the credentials checks"),
                    Err(err) => tracing::warn!(error = %err, "cannot adopt unverified apps"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(tick) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }
}
