//! What a verification decides of an installed app, and its health as apps show it. On an
//! existing app (on demand, or the scheduled checker) a rejection takes rule 6 through the
//! same rule as ReportCredentialsRejected (`reauth::reject_credentials`: NEEDS_REAUTH, its
//! integrations BROKEN, the same events and webhooks), and a later success restores them
//! (`reauth::restore_credentials`). Unreachable, 5xx, 429 or a timeout change nothing but
//! the health: UNVERIFIED, with the error and when it last verified.

use crate::crypto::{Aad, Credentials};
use crate::store::{AppRow, VerificationRow, VerificationState};

use super::Verdict;
use super::scopes::{missing_scopes, put_health, scope_set};
use crate::domain::context::{Audited, Done, Write};
use crate::domain::credentials::app_owner;
use crate::domain::error::{Error, Precondition, Result, truncated};
use crate::domain::installed_apps::InstalledApps;
use crate::domain::model::{Actor, AppState, AuditAction, InstalledApp};
use crate::domain::reauth::{reject_credentials, restore_credentials};
use crate::domain::suspension::suspended_error;
use crate::domain::types::{AppName, TeamId};

/// Longest `last_verification_error` stored, in bytes.
pub const MAX_ERROR_BYTES: usize = 600;

/// An app's verification as reads answer it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub state: VerificationState,
    /// `None`: the provider does not say which scopes were granted.
    pub granted_scopes: Option<Vec<String>>,
    pub last_verified_time: Option<i64>,
    pub last_check_time: Option<i64>,
    pub last_error: Option<String>,
}

impl Health {
    pub fn of(row: &VerificationRow) -> Health {
        Health {
            state: row.state,
            granted_scopes: row
                .granted_scopes
                .as_ref()
                .map(|s| s.split_whitespace().map(str::to_owned).collect()),
            last_verified_time: row.last_verified_time,
            last_check_time: row.last_check_time,
            last_error: row.last_error.clone(),
        }
    }
}

/// The rule of binding integrations of the type `type_id`, which requires `required`, to
/// the app `name` whose verification is `verification`: refused when it found the grant
/// lacking one of them; allowed when the scopes are not known (never verified, or the
/// provider does not say). A create written alone ([`InstalledApps::check_scopes`]) and the
/// creates written together (`create_batch.rs`) both decide with it.
pub(in crate::domain) fn check_granted_scopes(
    name: &AppName,
    type_id: &str,
    required: &[String],
    verification: Option<&VerificationRow>,
) -> Result<()> {
    let Some(granted) = verification.and_then(|row| row.granted_scopes.as_deref()) else {
        return Ok(());
    };
    let missing: Vec<String> = missing_scopes(required, &scope_set(granted))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::MissingScopes {
        app: name.to_string(),
        integration_type: type_id.to_owned(),
        missing,
    })
}

/// The health `verdict` leaves on `app` at `now` (after `old`, if it had one), to be checked
/// again at `next`; `None` when verification is off.
pub(in crate::domain) fn health_row(
    app: &AppRow,
    verdict: &Verdict,
    old: Option<&VerificationRow>,
    now: i64,
    next: i64,
) -> Option<VerificationRow> {
    let mut row = VerificationRow {
        installed_app_id: app.id.clone(),
        team: app.team.clone(),
        service: app.service.clone(),
        state: VerificationState::Unverified,
        granted_scopes: old.and_then(|o| o.granted_scopes.clone()),
        last_verified_time: old.and_then(|o| o.last_verified_time),
        last_check_time: Some(now),
        last_error: None,
        next_check_time: Some(next),
        lease_owner: None,
        lease_until: None,
        check_count: old.map_or(0, |o| o.check_count) + 1,
    };
    match verdict {
        Verdict::Off => return None,
        Verdict::Verified { scopes, .. } => {
            row.state = VerificationState::Verified;
            row.last_verified_time = Some(now);
            if let Some(scopes) = scopes {
                row.granted_scopes = Some(scopes.join(" "));
            }
        }
        Verdict::Rejected(error) => {
            row.state = VerificationState::Rejected;
            row.last_error = Some(truncated(error, MAX_ERROR_BYTES));
        }
        Verdict::Unverified { error, retry_after } => {
            row.last_error = Some(truncated(error, MAX_ERROR_BYTES));
            let asked = now.saturating_add(
                i64::try_from(retry_after.unwrap_or(0)).unwrap_or(i64::MAX / 2) * 1_000_000,
            );
            row.next_check_time = Some(next.max(asked));
        }
        Verdict::NotVerifiable(reason) => {
            row.state = VerificationState::NotVerifiable;
            row.last_error = Some(truncated(reason, MAX_ERROR_BYTES));
            row.next_check_time = None;
        }
    }
    Some(row)
}

/// The refusal of a create or a credential change the provider rejected: nothing is stored.
pub(in crate::domain) fn rejected_error(said: &str) -> Error {
    Error::precondition(
        Precondition::CredentialsRejected,
        format!("the provider rejected the credentials: {said}; nothing was stored"),
    )
}

impl InstalledApps {
    /// Attaches each app's health.
    pub(in crate::domain) async fn attach_health(
        &self,
        team: &TeamId,
        apps: &mut [InstalledApp],
    ) -> Result<()> {
        if apps.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = apps.iter().map(|a| a.name.id.clone()).collect();
        let rows = self
            .ctx()
            .store()
            .verifications_of(team.as_str(), &ids)
            .await?;
        for app in apps {
            app.health = rows
                .iter()
                .find(|r| r.installed_app_id == app.name.id)
                .map(Health::of);
        }
        Ok(())
    }

    /// Refuses binding integrations of `kind` to the app `name` when its last verification
    /// found its grant lacking a scope `kind` requires ([`check_granted_scopes`]).
    pub(in crate::domain) async fn check_scopes(
        &self,
        name: &AppName,
        kind: &crate::domain::catalog::IntegrationTypeDef,
    ) -> Result<()> {
        if kind.required_scopes.is_empty() {
            return Ok(());
        }
        let verification = self
            .ctx()
            .store()
            .verifications_of(name.team.as_str(), std::slice::from_ref(&name.id))
            .await?
            .pop();
        check_granted_scopes(name, &kind.id, &kind.required_scopes, verification.as_ref())
    }

    /// What the provider says of new credentials for `service`, before they are stored: a
    /// rejection is the create's (or change's) refusal.
    pub(in crate::domain) async fn verify_new(
        &self,
        service: &str,
        credentials: &Credentials,
    ) -> Result<Verdict> {
        let Some(def) = self.ctx().catalog().service(service) else {
            return Ok(Verdict::Off);
        };
        match self.verifier().verify(def, credentials).await {
            Verdict::Rejected(said) => Err(rejected_error(&said)),
            verdict => Ok(verdict),
        }
    }

    /// Writes, in `w`'s transaction, the first health of the new app `row` (whose credentials
    /// `verify_new` found `verdict`), as the app shows it; `None` when verification is off.
    pub(in crate::domain) async fn put_first_health(
        &self,
        w: &mut Write<'_>,
        row: &AppRow,
        verdict: &Verdict,
    ) -> Result<Option<Health>> {
        let next = self.verifier().next_check(row.create_time);
        let Some(health) = health_row(row, verdict, None, row.create_time, next) else {
            return Ok(None);
        };
        let shown = Health::of(&health);
        put_health(w, self.ctx().catalog(), row, health, row.create_time).await?;
        Ok(Some(shown))
    }

    /// What the provider says of credentials replacing an app's (`Off` when the app is not
    /// found or they are not of its service's shape: the change then refuses them itself).
    pub(in crate::domain) async fn verify_replacement(
        &self,
        name: &AppName,
        credentials: &Credentials,
    ) -> Result<Verdict> {
        if !self.verifier().is_on() {
            return Ok(Verdict::Off);
        }
        let app = self
            .ctx()
            .store()
            .get_app(name.team.as_str(), &name.id)
            .await?;
        let Some(service) = app.and_then(|a| self.ctx().catalog().service(&a.service).cloned())
        else {
            return Ok(Verdict::Off);
        };
        if crate::domain::credentials::check_credentials(&service, "credentials", credentials)
            .is_err()
        {
            return Ok(Verdict::Off);
        }
        self.verify_new(&service.id, credentials).await
    }

    /// What the provider says of a stored app's credentials now.
    pub(in crate::domain) async fn verify_stored(&self, app: &AppRow) -> Result<Verdict> {
        let owner = app_owner(&app.id);
        let aad = Aad {
            team: &app.team,
            owner: &owner,
        };
        let credentials = self.ctx().keys().open_credentials(&aad, &app.credentials)?;
        let def = self
            .ctx()
            .catalog()
            .service(&app.service)
            .ok_or_else(|| Error::internal("stored service is not in the catalog"))?;
        Ok(self.verifier().verify(def, &credentials).await)
    }

    /// VerifyInstalledApp: checks the app's credentials with its provider now and settles
    /// what that decides (developers and up).
    #[tracing::instrument(skip_all, fields(installed_app = %name))]
    pub async fn verify_installed_app(
        &self,
        actor: &Actor,
        name: &AppName,
    ) -> Result<InstalledApp> {
        if !actor.sees(&name.team) {
            return Err(crate::domain::context::not_found_app(name));
        }
        let app = self
            .ctx()
            .store()
            .get_app(name.team.as_str(), &name.id)
            .await?
            .ok_or_else(|| crate::domain::context::not_found_app(name))?;
        if app.state == AppState::Suspended {
            return Err(suspended_error());
        }
        if !self.verifier().is_on() {
            return Err(Error::precondition(
                Precondition::WrongState,
                "verification of credentials is off on this deployment (INTEGRATION_HUB_VERIFY_CREDENTIALS)",
            ));
        }
        let verdict = self.verify_stored(&app).await?;
        let row = self.settle(actor, name, &verdict).await?;
        self.app_with_count(&row).await
    }

    /// Writes what `verdict` decides of an existing app, in one audited write: rule 6 for
    /// a rejection of an ACTIVE app, the restore of a NEEDS_REAUTH app it verified, and the
    /// app's health either way.
    pub(in crate::domain) async fn settle(
        &self,
        actor: &Actor,
        name: &AppName,
        verdict: &Verdict,
    ) -> Result<AppRow> {
        let old = self
            .ctx()
            .store()
            .verifications_of(name.team.as_str(), std::slice::from_ref(&name.id))
            .await?
            .pop();
        let audited = Audited::app(AuditAction::InstalledAppVerify, name);
        self.ctx()
            .write(actor, audited, async |w| {
                let mut row = w.lock_app(name).await?;
                let now = self.ctx().now();
                match verdict {
                    Verdict::Rejected(said) if row.state == AppState::Active => {
                        let said = format!("verification: {said}");
                        reject_credentials(w, name, &mut row, &said, now).await?;
                    }
                    Verdict::Verified { .. } if row.state == AppState::NeedsReauth => {
                        restore_credentials(w, name, &mut row, "verified again", now).await?;
                    }
                    _ => {}
                }
                let next = self.verifier().next_check(now);
                if let Some(health) = health_row(&row, verdict, old.as_ref(), now, next) {
                    put_health(w, self.ctx().catalog(), &row, health, now).await?;
                }
                Ok(Done::Commit(row))
            })
            .await
    }
}
