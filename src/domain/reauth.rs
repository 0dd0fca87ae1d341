//! Integration state changes (docs/rules.md): breaking (an app deleted, rule 3, or its credentials rejected,
//! rule 6) and restoring (reauthentication of one integration, or of every integration a
//! deleted app broke onto a replacement, rule 4 of docs/rules.md). Every change of state appends one event
//! per integration.

use crate::crypto::Credentials;
use crate::store::{IntegrationFilter, IntegrationRow, StateChange};

use super::context::{Audited, Done, Write, not_found_app};
use super::credentials::check_credentials;
use super::credentials::integration_owner;
use super::error::{Error, Precondition, Result};
use super::installed_apps::InstalledApps;
use super::integrations::Integrations;
use super::model::{
    Actor, AppEventKind, AppState, AuditAction, BrokenReason, EventKind, InstalledApp, Integration,
    IntegrationState,
};
use super::suspension::suspended_error;
use super::types::{AppName, IntegrationName, RejectionDetail, TeamId};

/// How to reauthenticate a broken integration.
pub enum Reauth {
    App(AppName),
    Credentials(Credentials),
}

/// A change of state applied to many integrations at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Transition {
    /// They become BROKEN for `reason`; `detail` says what happened, for people.
    Break {
        reason: BrokenReason,
        detail: String,
    },
    /// They become ACTIVE again, rebound to the app `rebind_to` when given (bulk
    /// reauthentication), else on the binding they have.
    Restore { rebind_to: Option<String> },
}

impl Transition {
    /// The event each changed integration gets.
    pub fn event_kind(&self) -> EventKind {
        match self {
            Transition::Break { .. } => EventKind::Broken,
            Transition::Restore { .. } => EventKind::Restored,
        }
    }

    pub fn reason(&self) -> Option<BrokenReason> {
        match self {
            Transition::Break { reason, .. } => Some(*reason),
            Transition::Restore { .. } => None,
        }
    }

    /// The new values, at `now`, for the store's bulk update.
    pub fn change(&self, now: i64) -> StateChange {
        match self {
            Transition::Break { reason, detail } => StateChange {
                state: IntegrationState::Broken,
                broken_reason: Some(*reason),
                broken_detail: Some(detail.clone()),
                broken_time: Some(now),
                installed_app_id: None,
                update_time: now,
            },
            Transition::Restore { rebind_to } => StateChange {
                state: IntegrationState::Active,
                broken_reason: None,
                broken_detail: None,
                broken_time: None,
                installed_app_id: rebind_to.clone(),
                update_time: now,
            },
        }
    }
}

/// Applies `change` to a row read before the bulk update, as the update does in the
/// database (one more version, the binding kept unless it rebinds).
pub(super) fn apply(change: &StateChange, row: &mut IntegrationRow) {
    row.state = change.state;
    row.broken_reason = change.broken_reason;
    row.broken_detail = change.broken_detail.clone();
    row.broken_time = change.broken_time;
    row.update_time = change.update_time;
    row.version += 1;
    if let Some(app) = &change.installed_app_id {
        row.installed_app_id = Some(app.clone());
    }
}

/// The detail of integrations broken by a reported rejection: the app's display name, and
/// what the third party said when there is something.
pub(super) fn rejected_detail(app_display_name: &str, said: &str) -> String {
    if said.is_empty() {
        format!("the third party rejected the credentials of installed app \"{app_display_name}\"")
    } else {
        format!(
            "the third party rejected the credentials of installed app \"{app_display_name}\": {said}"
        )
    }
}

/// Applies one state change to every integration of `team` matching `filter`, and an
/// event each on commit; returns the integrations as they are after the change.
pub(super) async fn change_state(
    w: &mut Write<'_>,
    team: &str,
    filter: &IntegrationFilter,
    transition: &Transition,
    now: i64,
) -> Result<Vec<Integration>> {
    let tx = w.tx().await?;
    let rows = tx.lock_integrations(team, filter).await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let change = transition.change(now);
    let changed = tx.change_integrations(team, filter, &change).await?;
    if changed != rows.len() as u64 {
        return Err(Error::internal(
            "bulk change touched other rows than it read",
        ));
    }
    let mut after = Vec::with_capacity(rows.len());
    for mut row in rows {
        apply(&change, &mut row);
        let integration = Integration::from_row(&row)?;
        w.event(transition.event_kind(), &integration, transition.reason())?;
        after.push(integration);
    }
    Ok(after)
}

impl InstalledApps {
    /// A service reports that the third party rejected an app's credentials (rule 6 of docs/rules.md): the
    /// app needs reauthentication and its active integrations break.
    #[tracing::instrument(skip_all, fields(installed_app = %name))]
    pub async fn report_credentials_rejected(
        &self,
        actor: &Actor,
        name: &AppName,
        detail: RejectionDetail,
    ) -> Result<InstalledApp> {
        if actor.reach.is_some() {
            // A limited service reports only on apps within its reach (before a refresh
            // would touch the app); the refusal is audited with the app's name.
            let app = self.get_installed_app(actor, name).await?;
            let within = actor.check_reach(&app.service, None, Some(&app.name.id));
            if within.is_err() {
                let action = AuditAction::InstalledAppReportRejected;
                let resource = name.to_string();
                return (self
                    .ctx()
                    .audit_failure(actor, &name.team, action, resource, within)
                    .await)
                    .map(|()| app);
            }
        }
        // An app authorized through OAuth first gets one refresh: a working new token
        // means there is nothing to break.
        if self
            .authorizations()
            .refreshed_instead_of_rejected(actor, name)
            .await?
        {
            tracing::info!("credentials rejected, but a refresh brought new ones");
            return self.get_installed_app(actor, name).await;
        }
        let audited = Audited::app(AuditAction::InstalledAppReportRejected, name);
        let (row, broken) = self
            .ctx()
            .write(actor, audited, async move |w| {
                let mut row = w.lock_app(name).await?;
                if row.state == AppState::Suspended {
                    // Its credentials are not handed out while suspended: nobody can have
                    // tried them since.
                    return Err(suspended_error());
                }
                let now = self.ctx().now();
                let broken = reject_credentials(w, name, &mut row, detail.as_str(), now).await?;
                Ok(Done::Commit((row, broken)))
            })
            .await?;
        tracing::info!(broken, "credentials rejected");
        self.app_with_count(&row).await
    }
}

/// Rule 6 inside a write: the locked app `row` becomes NEEDS_REAUTH (written) and its
/// active integrations BROKEN(CREDENTIALS_REJECTED) with events; returns how many broke.
/// Also what a refresh refused with `invalid_grant` does.
pub(super) async fn reject_credentials(
    w: &mut Write<'_>,
    name: &AppName,
    row: &mut crate::store::AppRow,
    said: &str,
    now: i64,
) -> Result<usize> {
    let filter = IntegrationFilter {
        installed_app_id: Some(name.id.clone()),
        state: Some(IntegrationState::Active),
        app_bound_only: true,
        ..Default::default()
    };
    let transition = Transition::Break {
        reason: BrokenReason::CredentialsRejected,
        detail: rejected_detail(&row.display_name, said),
    };
    let broken = change_state(w, name.team.as_str(), &filter, &transition, now).await?;
    set_judged(
        w,
        row,
        AppState::NeedsReauth,
        AppEventKind::NeedsReauth,
        said,
        now,
    )
    .await?;
    Ok(broken.len())
}

/// The way back from rule 6 inside a write, when the same credentials are verified again:
/// the locked NEEDS_REAUTH app `row` becomes ACTIVE (written) and what their rejection broke
/// is restored with events; returns how many were restored.
pub(super) async fn restore_credentials(
    w: &mut Write<'_>,
    name: &AppName,
    row: &mut crate::store::AppRow,
    said: &str,
    now: i64,
) -> Result<usize> {
    let restored = restore_rejected(w, name.team.as_str(), &row.id, now).await?;
    set_judged(w, row, AppState::Active, AppEventKind::Restored, said, now).await?;
    Ok(restored.len())
}

/// What the rejection of an app's credentials broke works again, with events: its bound
/// integrations BROKEN(CREDENTIALS_REJECTED) are restored. The way back from rule 6, also
/// taken when the credentials are replaced by hand.
pub(super) async fn restore_rejected(
    w: &mut Write<'_>,
    team: &str,
    app_id: &str,
    now: i64,
) -> Result<Vec<Integration>> {
    let filter = super::suspension::bound(
        app_id,
        IntegrationState::Broken,
        Some(BrokenReason::CredentialsRejected),
    );
    change_state(
        w,
        team,
        &filter,
        &Transition::Restore { rebind_to: None },
        now,
    )
    .await
}

/// The app's state after a judgement of its credentials, one version on, with its event.
async fn set_judged(
    w: &mut Write<'_>,
    row: &mut crate::store::AppRow,
    state: AppState,
    event: AppEventKind,
    said: &str,
    now: i64,
) -> Result<()> {
    let expected = row.version;
    row.state = state;
    row.version += 1;
    row.update_time = now;
    if !w.tx().await?.update_app(row.clone(), expected).await? {
        return Err(Error::internal("locked installed app changed"));
    }
    w.app_event(event, row, said)
}

impl Integrations {
    /// Brings one broken integration back (rule 4 of docs/rules.md), bound to an app or to credentials of
    /// its own.
    #[tracing::instrument(skip_all, fields(integration = %name))]
    pub async fn reauthenticate_integration(
        &self,
        actor: &Actor,
        name: &IntegrationName,
        reauth: Reauth,
    ) -> Result<Integration> {
        let audited = Audited::integration(AuditAction::IntegrationReauthenticate, name);
        self.ctx()
            .write(actor, audited, async move |w| {
                let mut row = w.lock_integration(name).await?;
                if row.state != IntegrationState::Broken {
                    return Err(Error::precondition(
                        Precondition::WrongState,
                        "the integration is not broken",
                    ));
                }
                let now = self.ctx().now();
                match reauth {
                    Reauth::App(app_name) => {
                        let app = self
                            .bindable_app(actor, w.tx().await?, &name.team, &app_name)
                            .await?;
                        if app.service != row.service {
                            return Err(Error::precondition(
                                Precondition::ServiceMismatch,
                                "the installed app is of another service than the integration",
                            ));
                        }
                        if let Some((_, kind)) = self.ctx().catalog().integration_type(&row.type_id)
                        {
                            self.apps().check_scopes(&app_name, kind).await?;
                        }
                        row.installed_app_id = Some(app.id);
                        row.own_credentials = None;
                        row.key_version = None;
                    }
                    Reauth::Credentials(credentials) => {
                        let service = self.ctx().service(&row.service, "credentials")?;
                        check_credentials(service, "credentials.values", &credentials)?;
                        let (sealed, key_version) = self.ctx().seal(
                            &name.team,
                            &integration_owner(&row.id),
                            &credentials,
                        )?;
                        row.key_version = Some(key_version);
                        row.own_credentials = Some(sealed);
                        row.installed_app_id = None;
                    }
                }
                let expected = row.version;
                apply(
                    &Transition::Restore { rebind_to: None }.change(now),
                    &mut row,
                );
                let integration = Integration::from_row(&row)?;
                if !w.tx().await?.update_integration(row, expected).await? {
                    return Err(Error::internal("locked integration changed"));
                }
                w.event(EventKind::Restored, &integration, None)?;
                Ok(Done::Commit(integration))
            })
            .await
    }

    /// Rebinds every broken integration that used `from` onto `to`, in one transaction.
    /// Audited with `from` as the resource: the app whose broken integrations were rebound.
    #[tracing::instrument(skip_all, fields(from = %from, to = %to))]
    pub async fn reauthenticate_integrations(
        &self,
        actor: &Actor,
        team: TeamId,
        from: AppName,
        to: AppName,
    ) -> Result<Vec<Integration>> {
        let audited = Audited::new(
            AuditAction::IntegrationReauthenticateBulk,
            &team,
            from.to_string(),
        );
        let restored = self
            .ctx()
            .write(actor, audited, async |w| {
                // Another team's app answers exactly as a missing one (rule 7 of docs/rules.md).
                if from.team != team {
                    return Err(not_found_app(&from));
                }
                if from == to {
                    return Err(Error::invalid(
                        "to_installed_app",
                        "must differ from from_installed_app",
                    ));
                }
                let tx = w.tx().await?;
                let target = self.bindable_app(actor, tx, &team, &to).await?;
                let filter = IntegrationFilter {
                    installed_app_id: Some(from.id.clone()),
                    state: Some(IntegrationState::Broken),
                    app_bound_only: true,
                    ..Default::default()
                };
                let candidates = tx.lock_integrations(team.as_str(), &filter).await?;
                if candidates.iter().any(|r| r.service != target.service) {
                    return Err(Error::precondition(
                        Precondition::ServiceMismatch,
                        "the replacement installed app is of another service than the integrations",
                    ));
                }
                let kinds: std::collections::BTreeSet<&str> =
                    candidates.iter().map(|r| r.type_id.as_str()).collect();
                for kind in kinds {
                    if let Some((_, kind)) = self.ctx().catalog().integration_type(kind) {
                        self.apps().check_scopes(&to, kind).await?;
                    }
                }
                let now = self.ctx().now();
                let restore = Transition::Restore {
                    rebind_to: Some(target.id),
                };
                let restored = change_state(w, team.as_str(), &filter, &restore, now).await?;
                Ok(Done::Commit(restored))
            })
            .await?;
        tracing::info!(restored = restored.len(), "integrations reauthenticated");
        Ok(restored)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::installed_apps::AppChanges;
    use crate::domain::model::Role;
    use crate::domain::test_support::{
        self, NOW, TestHub, actor, credentials, new_app, new_integration, team,
    };
    use crate::domain::types::Text;
    use crate::domain::{Binding, Error};

    fn row(state: IntegrationState) -> IntegrationRow {
        IntegrationRow {
            id: "i1".into(),
            team: "acme".into(),
            installed_app_id: Some("a1".into()),
            service: "slack".into(),
            type_id: "slack.post_monitor_results".into(),
            display_name: "Job".into(),
            config: "{}".into(),
            state,
            broken_reason: None,
            broken_detail: None,
            broken_time: None,
            own_credentials: None,
            key_version: None,
            creator: "dana".into(),
            owner: "dana".into(),
            last_used_time: None,
            request_id: None,
            request_fingerprint: None,
            version: 3,
            create_time: 1,
            update_time: 1,
        }
    }

    #[test]
    fn breaking_sets_the_reason_the_detail_and_the_time_and_keeps_the_binding() {
        let broken = Transition::Break {
            reason: BrokenReason::InstalledAppDeleted,
            detail: "gone".into(),
        };
        assert_eq!(broken.event_kind(), EventKind::Broken);
        assert_eq!(broken.reason(), Some(BrokenReason::InstalledAppDeleted));
        let change = broken.change(NOW);
        let mut integration = row(IntegrationState::Active);
        apply(&change, &mut integration);
        assert_eq!(integration.state.as_str(), "BROKEN");
        assert_eq!(
            integration.broken_reason.map(BrokenReason::as_str),
            Some("INSTALLED_APP_DELETED")
        );
        assert_eq!(integration.broken_detail.as_deref(), Some("gone"));
        assert_eq!(integration.broken_time, Some(NOW));
        assert_eq!(integration.update_time, NOW);
        assert_eq!(integration.version, 4);
        // A broken integration keeps the app it used, so it can be found and rebound.
        assert_eq!(integration.installed_app_id.as_deref(), Some("a1"));
    }

    #[test]
    fn restoring_clears_the_break_and_rebinds_only_when_asked() {
        let restore = Transition::Restore { rebind_to: None };
        assert_eq!(restore.event_kind(), EventKind::Restored);
        assert_eq!(restore.reason(), None);
        let broken = Transition::Break {
            reason: BrokenReason::CredentialsRejected,
            detail: "no".into(),
        };
        let mut integration = row(IntegrationState::Active);
        apply(&broken.change(1), &mut integration);
        apply(&restore.change(NOW), &mut integration);
        assert_eq!(integration.state.as_str(), "ACTIVE");
        assert_eq!(integration.broken_reason, None);
        assert_eq!(integration.broken_detail, None);
        assert_eq!(integration.broken_time, None);
        assert_eq!(integration.update_time, NOW);
        assert_eq!(integration.version, 5);
        assert_eq!(integration.installed_app_id.as_deref(), Some("a1"));

        let rebind = Transition::Restore {
            rebind_to: Some("a2".into()),
        };
        apply(&rebind.change(NOW), &mut integration);
        assert_eq!(integration.installed_app_id.as_deref(), Some("a2"));
    }

    #[test]
    fn a_rejection_detail_names_the_app_and_what_the_third_party_said() {
        assert_eq!(
            rejected_detail("Slack (ops)", ""),
            "the third party rejected the credentials of installed app \"Slack (ops)\""
        );
        assert_eq!(
            rejected_detail("Slack (ops)", "invalid_auth"),
            "the third party rejected the credentials of installed app \"Slack (ops)\": invalid_auth"
        );
    }

    async fn states(
        t: &TestHub,
        names: &[&Integration],
    ) -> Vec<(IntegrationState, Option<BrokenReason>)> {
        let admin = actor(Role::Admin, "alice");
        let mut found = Vec::new();
        for integration in names {
            let name = IntegrationName::parse(&integration.name()).unwrap();
            let now = t
                .hub
                .integrations()
                .get_integration(&admin, &name)
                .await
                .unwrap();
            found.push((now.state, now.broken_reason));
        }
        found
    }

    fn kinds(events: &[crate::store::EventRow]) -> Vec<(&str, Option<&str>)> {
        events
            .iter()
            .map(|e| (e.kind.as_str(), e.reason.as_deref()))
            .collect()
    }

    #[tokio::test]
    async fn deleting_an_app_breaks_its_integrations_and_a_bulk_rebind_restores_them() {
        let t = test_support::hub().await;
        let (dana, alice) = (actor(Role::Developer, "dana"), actor(Role::Admin, "alice"));
        let app = t.app("Slack").await;
        let first = t.bound(&app, "One").await;
        let second = t.bound(&app, "Two").await;
        let own = Binding::Own {
            service: "slack".into(),
            credentials: credentials("xoxb-own"),
        };
        let own = t
            .hub
            .integrations()
            .create_integration(&dana, team(), new_integration("Own", own))
            .await
            .unwrap();

        let broken = t
            .hub
            .apps()
            .delete_installed_app(&alice, &app.name, None, false)
            .await
            .unwrap();
        let mut broken: Vec<String> = broken.iter().map(Integration::name).collect();
        broken.sort();
        let mut expected = [first.name(), second.name()];
        expected.sort();
        assert_eq!(broken, expected);
        let deleted = Some(BrokenReason::InstalledAppDeleted);
        assert_eq!(
            states(&t, &[&first, &second, &own]).await,
            [
                (IntegrationState::Broken, deleted),
                (IntegrationState::Broken, deleted),
                (IntegrationState::Active, None),
            ]
        );
        let name = IntegrationName::parse(&first.name()).unwrap();
        let detail = t
            .hub
            .integrations()
            .get_integration(&alice, &name)
            .await
            .unwrap()
            .broken_detail;
        assert_eq!(
            detail.as_deref(),
            Some(
                format!(
                    "installed app \"Slack\" ({}) was deleted by alice",
                    app.name
                )
                .as_str()
            )
        );

        let replacement = t.app("Slack 2").await;
        let restored = t
            .hub
            .integrations()
            .reauthenticate_integrations(&dana, team(), app.name.clone(), replacement.name.clone())
            .await
            .unwrap();
        assert_eq!(restored.len(), 2);
        for integration in &restored {
            assert_eq!(integration.state, IntegrationState::Active);
            assert_eq!(
                integration.installed_app_id.as_deref(),
                Some(replacement.name.id.as_str())
            );
        }
        assert_eq!(
            kinds(&t.events().await),
            [
                ("INSTALLED_APP_CREATED", None),
                ("INTEGRATION_CREATED", None),
                ("INTEGRATION_CREATED", None),
                ("INTEGRATION_CREATED", None),
                ("INTEGRATION_BROKEN", Some("INSTALLED_APP_DELETED")),
                ("INTEGRATION_BROKEN", Some("INSTALLED_APP_DELETED")),
                // The app's own event follows its integrations', in the same transaction.
                ("INSTALLED_APP_DELETED", None),
                ("INSTALLED_APP_CREATED", None),
                ("INTEGRATION_RESTORED", None),
                ("INTEGRATION_RESTORED", None),
            ]
        );
    }

    #[tokio::test]
    async fn a_reported_rejection_breaks_active_integrations_until_new_credentials_arrive() {
        let t = test_support::hub().await;
        let (dana, deliverer) = (
            actor(Role::Developer, "dana"),
            actor(Role::Service, "deliverer"),
        );
        let app = t.app("Slack").await;
        let first = t.bound(&app, "One").await;

        let said = Text::parse("invalid_auth").unwrap();
        let reported = t
            .hub
            .apps()
            .report_credentials_rejected(&deliverer, &app.name, said)
            .await
            .unwrap();
        assert_eq!(reported.state, AppState::NeedsReauth);
        let rejected = Some(BrokenReason::CredentialsRejected);
        assert_eq!(
            states(&t, &[&first]).await,
            [(IntegrationState::Broken, rejected)]
        );
        // Nothing new binds to an app that needs reauthentication.
        let refused = t
            .hub
            .integrations()
            .create_integration(
                &dana,
                team(),
                new_integration("Two", Binding::App(app.name.clone())),
            )
            .await;
        assert!(matches!(refused, Err(Error::FailedPrecondition { .. })));

        let changes = AppChanges {
            etag: None,
            display_name: None,
            connected_to: None,
            credentials: Some(credentials("xoxb-2")),
        };
        let updated = t
            .hub
            .apps()
            .update_installed_app(&dana, &app.name, changes)
            .await
            .unwrap();
        assert_eq!(updated.state, AppState::Active);
        assert_eq!(updated.integration_count, 1);
        assert_eq!(
            states(&t, &[&first]).await,
            [(IntegrationState::Active, None)]
        );
        assert_eq!(
            kinds(&t.events().await),
            [
                ("INSTALLED_APP_CREATED", None),
                ("INTEGRATION_CREATED", None),
                ("INTEGRATION_BROKEN", Some("CREDENTIALS_REJECTED")),
                ("INSTALLED_APP_NEEDS_REAUTH", Some("invalid_auth")),
                ("INTEGRATION_RESTORED", None),
                ("INSTALLED_APP_CREDENTIALS_REPLACED", None),
                ("INSTALLED_APP_RESTORED", Some("new credentials")),
            ]
        );
    }

    #[tokio::test]
    async fn only_a_broken_integration_is_reauthenticated_and_only_onto_its_service() {
        let t = test_support::hub().await;
        let (dana, alice) = (actor(Role::Developer, "dana"), actor(Role::Admin, "alice"));
        let app = t.app("Slack").await;
        let first = t.bound(&app, "One").await;
        let name = IntegrationName::parse(&first.name()).unwrap();
        let again = Reauth::Credentials(credentials("xoxb-own"));
        let active = t
            .hub
            .integrations()
            .reauthenticate_integration(&dana, &name, again)
            .await;
        assert!(matches!(
            active,
            Err(Error::FailedPrecondition {
                reason: Precondition::WrongState,
                ..
            })
        ));

        t.hub
            .apps()
            .delete_installed_app(&alice, &app.name, None, false)
            .await
            .unwrap();
        let mut github = new_app("GitHub");
        github.service = "github".into();
        let github = t
            .hub
            .apps()
            .create_installed_app(&dana, team(), github)
            .await
            .unwrap();
        let other = t
            .hub
            .integrations()
            .reauthenticate_integration(&dana, &name, Reauth::App(github.name.clone()))
            .await;
        assert!(matches!(
            other,
            Err(Error::FailedPrecondition {
                reason: Precondition::ServiceMismatch,
                ..
            })
        ));
        let own = Reauth::Credentials(credentials("xoxb-own"));
        let restored = t
            .hub
            .integrations()
            .reauthenticate_integration(&dana, &name, own)
            .await
            .unwrap();
        assert_eq!(restored.state, IntegrationState::Active);
        assert!(restored.own_credentials);
        assert_eq!(restored.installed_app_id, None);
        // Its own credentials are the ones it resolves to now.
        let deliverer = actor(Role::Service, "deliverer");
        let resolved = t
            .hub
            .integrations()
            .resolve_credentials(&deliverer, &name)
            .await
            .unwrap();
        assert_eq!(resolved.credentials.get("access_token"), Some("xoxb-own"));
    }
}
