//! Suspending an installed app (an admin worried its credentials leaked) and resuming it.
//!
//! A suspended app keeps everything: its credentials (which may still be replaced), its
//! integrations and their bindings. Its credentials are not resolved, nothing new is bound to
//! it, and its active integrations are BROKEN(INSTALLED_APP_SUSPENDED) until it is resumed;
//! resuming restores exactly those (and, if its credentials were replaced meanwhile, those
//! broken by a rejection of the old ones).

use super::reauth::change_state;
use crate::store::{AppRow, IntegrationFilter};

use super::context::{Audited, Done, Write};
use super::error::{Error, Precondition, Result};
use super::installed_apps::InstalledApps;
use super::model::{Actor, AppState, AuditAction, BrokenReason, InstalledApp, IntegrationState};
use super::reauth::Transition;
use super::types::{AppName, SuspensionReason};

/// The detail of integrations broken by a suspension.
fn suspended_detail(app_display_name: &str, actor: &Actor, reason: &str) -> String {
    if reason.is_empty() {
        format!(
            "installed app \"{app_display_name}\" was suspended by {}",
            actor.subject
        )
    } else {
        format!(
            "installed app \"{app_display_name}\" was suspended by {}: {reason}",
            actor.subject
        )
    }
}

/// The refusal every use of a suspended app's credentials gets.
pub(super) fn suspended_error() -> Error {
    Error::precondition(
        Precondition::AppSuspended,
        "the installed app is suspended: an admin must resume it first",
    )
}

/// Integrations bound to app `id` in `state`, broken for `reason` when given.
pub(super) fn bound(
    id: &str,
    state: IntegrationState,
    reason: Option<BrokenReason>,
) -> IntegrationFilter {
    IntegrationFilter {
        installed_app_id: Some(id.to_owned()),
        state: Some(state),
        broken_reason: reason,
        app_bound_only: true,
        ..IntegrationFilter::default()
    }
}

/// The suspension rule inside a write: the locked, not suspended app `row` becomes SUSPENDED
/// (written) and its active integrations break, with an event each; returns how many broke.
/// Also what blocking its service does (`policy.rs`).
pub(super) async fn suspend_row(
    w: &mut Write<'_>,
    actor: &Actor,
    row: &mut AppRow,
    reason: &str,
    now: i64,
) -> Result<usize> {
    let suspended = Transition::Break {
        reason: BrokenReason::InstalledAppSuspended,
        detail: suspended_detail(&row.display_name, actor, reason),
    };
    let filter = bound(&row.id, IntegrationState::Active, None);
    let broken = change_state(w, &row.team, &filter, &suspended, now).await?;
    let expected = row.version;
    row.resume_state = Some(row.state);
    row.state = AppState::Suspended;
    row.suspension_reason = Some(reason.to_owned());
    row.version += 1;
    row.update_time = now;
    if !w.tx().await?.update_app(row.clone(), expected).await? {
        return Err(Error::internal("locked installed app changed"));
    }
    Ok(broken.len())
}

impl InstalledApps {
    /// Suspends an app: it becomes SUSPENDED and its active integrations break, with an
    /// event each, in one transaction.
    #[tracing::instrument(skip_all, fields(installed_app = %name))]
    pub async fn suspend_installed_app(
        &self,
        actor: &Actor,
        name: &AppName,
        reason: SuspensionReason,
    ) -> Result<InstalledApp> {
        let audited = Audited::app(AuditAction::InstalledAppSuspend, name);
        let (row, broken) = self
            .ctx()
            .write(actor, audited, async move |w| {
                let mut row = w.lock_app(name).await?;
                if row.state == AppState::Suspended {
                    return Err(Error::precondition(
                        Precondition::WrongState,
                        "the installed app is already suspended",
                    ));
                }
                let now = self.ctx().now();
                let broken = suspend_row(w, actor, &mut row, reason.as_str(), now).await?;
                Ok(Done::Commit((row, broken)))
            })
            .await?;
        tracing::info!(broken, "installed app suspended");
        self.app_with_count(&row).await
    }

    /// Resumes a suspended app: it returns to the state it had (ACTIVE if its credentials
    /// were replaced while suspended) and what the suspension broke is restored.
    #[tracing::instrument(skip_all, fields(installed_app = %name))]
    pub async fn resume_installed_app(
        &self,
        actor: &Actor,
        name: &AppName,
    ) -> Result<InstalledApp> {
        let audited = Audited::app(AuditAction::InstalledAppResume, name);
        let (row, restored) = self
            .ctx()
            .write(actor, audited, async move |w| {
                let mut row = w.lock_app(name).await?;
                if row.state != AppState::Suspended {
                    return Err(Error::precondition(
                        Precondition::WrongState,
                        "the installed app is not suspended",
                    ));
                }
                let state = match row.resume_state {
                    Some(state) if state != AppState::Suspended => state,
                    _ => return Err(Error::internal("suspended app without a state to resume")),
                };
                let now = self.ctx().now();
                let team = name.team.as_str();
                let restore = Transition::Restore { rebind_to: None };
                let mut reasons = vec![BrokenReason::InstalledAppSuspended];
                if state == AppState::Active {
                    // Credentials replaced while suspended: what their rejection broke works
                    // again too, as an update outside a suspension would have done.
                    reasons.push(BrokenReason::CredentialsRejected);
                }
                let mut restored = 0;
                for reason in reasons {
                    let filter = bound(&row.id, IntegrationState::Broken, Some(reason));
                    restored += change_state(w, team, &filter, &restore, now).await?.len();
                }
                let expected = row.version;
                row.state = state;
                row.resume_state = None;
                row.suspension_reason = None;
                row.version += 1;
                row.update_time = now;
                if !w.tx().await?.update_app(row.clone(), expected).await? {
                    return Err(Error::internal("locked installed app changed"));
                }
                Ok(Done::Commit((row, restored)))
            })
            .await?;
        tracing::info!(restored, "installed app resumed");
        self.app_with_count(&row).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detail_names_the_app_and_who_suspended_it() {
        let actor = Actor {
            subject: "ada".into(),
            team: None,
            role: super::super::model::Role::Admin,
            request_id: "r".into(),
            reach: None,
            groups: Vec::new(),
        };
        assert_eq!(
            suspended_detail("Slack", &actor, ""),
            "installed app \"Slack\" was suspended by ada"
        );
        assert_eq!(
            suspended_detail("Slack", &actor, "token leaked"),
            "installed app \"Slack\" was suspended by ada: token leaked"
        );
    }
}
