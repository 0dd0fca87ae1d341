//! The second half of an authorization: exchanging the code and writing the app (created,
//! or its credentials replaced) with its grant, in one audited write.

use super::Authorizations;
use crate::domain::reauth::change_state;
use crate::domain::verify::Verdict;
use crate::domain::verify::apps::{health_row, rejected_error};
use crate::domain::verify::scopes::put_health;
use std::collections::BTreeMap;

use crate::crypto::{Aad, Credentials};
use crate::store::{AppRow, AuthorizationRow, GrantRow};

use super::authorize::{authorization_owner, connected_to_text, may_reauthorize};
use super::catalog::OAuthDef;
use super::http::{ProviderError, TokenAnswer};
use super::provider_text::Sent;
use super::{OAuth, refresh_time};
use crate::domain::catalog::ServiceDef;
use crate::domain::context::{Audited, Done, Write, not_found_app};
use crate::domain::credentials::{MAX_CREDENTIAL_VALUE, app_owner};
use crate::domain::error::{Error, Precondition, Result};
use crate::domain::model::{
    Actor, AppEventKind, AppState, AuditAction, BrokenReason, IntegrationState,
};
use crate::domain::reauth::Transition;
use crate::domain::types::{AppName, AuthorizationName, TeamId, new_id};

/// The credentials stored for an app authorized through OAuth: the access token, the
/// refresh token (never resolved), the granted scope and the fields the catalog maps.
pub(super) fn oauth_credentials(
    service: &ServiceDef,
    def: &OAuthDef,
    answer: &TokenAnswer,
    previous: Option<&Credentials>,
) -> std::result::Result<Credentials, ProviderError> {
    let mut map = BTreeMap::new();
    let too_long = || ProviderError::Rejected("the provider's token is too long".to_owned());
    if answer.access_token.expose().len() > MAX_CREDENTIAL_VALUE {
        return Err(too_long());
    }
    map.insert(
        "access_token".to_owned(),
        answer.access_token.expose().to_owned(),
    );
    let refresh = answer
        .refresh_token
        .as_ref()
        .map(|t| t.expose())
        .or_else(|| previous.and_then(|p| p.get("refresh_token")));
    if let Some(refresh) = refresh {
        if refresh.len() > MAX_CREDENTIAL_VALUE {
            return Err(too_long());
        }
        map.insert("refresh_token".to_owned(), refresh.to_owned());
    }
    let declared = |name: &str| service.credential_fields.iter().any(|f| f.name == name);
    if declared("scope")
        && let Some(scope) = &answer.scope
    {
        map.insert("scope".to_owned(), scope.chars().take(2000).collect());
    }
    for (field, pointer) in &def.credential_pointers {
        if let Some(value) = answer.text_at(pointer) {
            map.insert(field.clone(), value.chars().take(2000).collect());
        } else if let Some(value) = previous.and_then(|p| p.get(field)) {
            map.insert(field.clone(), value.to_owned());
        }
    }
    Ok(Credentials::new(map))
}

/// Whether the app a reauthorization replaces the credentials of may still be changed by its
/// starter (an admin may have handed it to someone else since the start), and is still of
/// the authorization's service.
fn still_reauthorizable(actor: &Actor, app: &AppRow, row: &AuthorizationRow) -> Result<()> {
    may_reauthorize(actor, app)?;
    if app.service != row.service {
        return Err(Error::precondition(
            Precondition::WrongState,
            "the installed app is no longer of the service this authorization was for",
        ));
    }
    Ok(())
}

/// The grant row of a token just obtained at `now`.
pub(super) fn new_grant(
    app: &AppRow,
    answer: &TokenAnswer,
    now: i64,
    refreshable: bool,
) -> GrantRow {
    let expire_time = answer
        .expires_in
        .filter(|s| *s > 0)
        .map(|s| now.saturating_add(s.saturating_mul(1_000_000)));
    GrantRow {
        installed_app_id: app.id.clone(),
        team: app.team.clone(),
        service: app.service.clone(),
        issue_time: now,
        expire_time,
        refreshable,
        next_refresh_time: if refreshable {
            expire_time.map(|e| refresh_time(now, e))
        } else {
            None
        },
        failures: 0,
        last_refresh_time: None,
        last_refresh_error: None,
        lease_owner: None,
        lease_until: None,
        refresh_count: 0,
    }
}

impl Authorizations {
    /// Exchanges the code and writes the app: created, or its credentials replaced.
    pub(super) async fn finish(
        &self,
        oauth: &OAuth,
        actor: &Actor,
        team: &TeamId,
        row: &AuthorizationRow,
        code: &str,
    ) -> Result<()> {
        let (service, def) = self.oauth_service(&row.service, "service")?;
        let client = oauth
            .settings
            .clients
            .get(&service.id)
            .ok_or_else(|| Error::internal("client vanished"))?;
        let redirect_uri = oauth
            .redirect_uri()
            .ok_or_else(|| Error::internal("public URL vanished"))?;
        let aad = Aad {
            team: team.as_str(),
            owner: &authorization_owner(&row.id),
        };
        if let Some(id) = &row.installed_app_id {
            // Checked before the code is spent (no tokens minted for nothing), and again
            // under the app's lock when the credentials are written.
            let name = AppName::new(team.clone(), id.clone());
            let app = self
                .ctx()
                .store()
                .get_app(team.as_str(), id)
                .await?
                .ok_or_else(|| not_found_app(&name))?;
            still_reauthorizable(actor, &app, row)?;
        }
        let sealed = self.ctx().keys().open_credentials(&aad, &row.verifier)?;
        let verifier = sealed
            .get("code_verifier")
            .ok_or_else(|| Error::internal("sealed verifier without its value"))?;
        let provider_failed =
            |e: ProviderError| Error::precondition(Precondition::WrongState, e.describe());
        let answer = oauth
            .provider
            .exchange_code(
                def,
                client,
                code,
                &redirect_uri,
                def.pkce.then_some(verifier),
            )
            .await
            .map_err(provider_failed)?;
        let account = match &def.connected_to {
            None => None,
            Some(c) => match &c.userinfo_url {
                None => answer.text_at(&c.pointer),
                Some(url) => match oauth
                    .provider
                    .account_name(url, &answer.access_token, &c.pointer)
                    .await
                {
                    Ok(name) => name,
                    Err(err) => {
                        tracing::warn!(reason = %err.describe(), "cannot read the account name");
                        None
                    }
                },
            },
        };
        let secrets = Sent::default()
            .with(code)
            .with(verifier)
            .with(client.secret.expose())
            .with(answer.access_token.expose())
            .with(answer.refresh_token.as_ref().map_or("", |t| t.expose()));
        let connected_to = connected_to_text(account, &secrets);
        // The new tokens are checked with the provider before anything is written (no lock
        // is held while it answers): a rejection stores nothing and fails the authorization.
        let fresh = oauth_credentials(service, def, &answer, None).map_err(provider_failed)?;
        let verdict = match self.verifier.verify(service, &fresh).await {
            Verdict::Rejected(said) => return Err(rejected_error(&said)),
            verdict => verdict,
        };
        let now = self.ctx().now();
        let target = row.installed_app_id.clone();
        let resource = match &target {
            Some(id) => AppName::new(team.clone(), id.clone()).to_string(),
            None => AuthorizationName::new(team.clone(), row.id.clone()).to_string(),
        };
        let audited = Audited::new(
            AuditAction::InstalledAppCompleteAuthorization,
            team,
            resource,
        );
        let app = self
            .ctx()
            .write(actor, audited, async |w| {
                let app = match &target {
                    None => {
                        let credentials = oauth_credentials(service, def, &answer, None)
                            .map_err(provider_failed)?;
                        let id = new_id();
                        let (sealed, key_version) =
                            self.ctx().seal(team, &app_owner(&id), &credentials)?;
                        let app = AppRow {
                            id,
                            team: team.as_str().to_owned(),
                            service: service.id.clone(),
                            display_name: row.display_name.clone(),
                            connected_to: connected_to.as_str().to_owned(),
                            creator: row.creator.clone(),
                            owner: row.creator.clone(),
                            last_used_time: None,
                            state: AppState::Active,
                            suspension_reason: None,
                            resume_state: None,
                            key_version,
                            credentials: sealed,
                            request_id: None,
                            request_fingerprint: None,
                            version: 1,
                            create_time: now,
                            update_time: now,
                            usable_by: None,
                            reauthorization_recommended: false,
                        };
                        w.tx().await?.insert_app(app.clone()).await?;
                        w.set_resource(AppName::new(team.clone(), app.id.clone()).to_string());
                        app
                    }
                    Some(id) => {
                        // Checked again under the lock: a transfer or a deletion since the
                        // check above wins.
                        let name = AppName::new(team.clone(), id.clone());
                        let mut app = w.lock_app(&name).await?;
                        still_reauthorizable(actor, &app, row)?;
                        let owner = app_owner(&app.id);
                        let previous = self.ctx().keys().open_credentials(
                            &Aad {
                                team: team.as_str(),
                                owner: &owner,
                            },
                            &app.credentials,
                        )?;
                        let credentials = oauth_credentials(service, def, &answer, Some(&previous))
                            .map_err(provider_failed)?;
                        self.replace_credentials(w, &mut app, &credentials, now)
                            .await?;
                        if !connected_to.as_str().is_empty() {
                            app.connected_to = connected_to.as_str().to_owned();
                        }
                        let expected = app.version;
                        app.version += 1;
                        app.update_time = now;
                        app.reauthorization_recommended = false;
                        if !w.tx().await?.update_app(app.clone(), expected).await? {
                            return Err(Error::internal("locked installed app changed"));
                        }
                        app
                    }
                };
                let next = self.verifier.next_check(now);
                if let Some(health) = health_row(&app, &verdict, None, now, next) {
                    put_health(w, self.ctx().catalog(), &app, health, now).await?;
                }
                let refreshable = answer.refresh_token.is_some()
                    || (target.is_some() && self.has_refresh_token(&app)?);
                w.tx()
                    .await?
                    .put_grant(new_grant(&app, &answer, now, refreshable))
                    .await?;
                if !w
                    .tx()
                    .await?
                    .succeed_authorization(&row.id, &app.id, now)
                    .await?
                {
                    return Err(Error::internal("claimed authorization changed"));
                }
                Ok(Done::Commit(app))
            })
            .await?;
        tracing::info!(installed_app = %app.id, reauthorized = target.is_some(), "authorization completed");
        Ok(())
    }

    /// Whether an app's stored credentials hold a refresh token.
    fn has_refresh_token(&self, app: &AppRow) -> Result<bool> {
        let team = TeamId::parse(&app.team).map_err(|_| Error::internal("stored team id"))?;
        let owner = app_owner(&app.id);
        let credentials = self.ctx().keys().open_credentials(
            &Aad {
                team: team.as_str(),
                owner: &owner,
            },
            &app.credentials,
        )?;
        Ok(credentials.get("refresh_token").is_some())
    }

    /// Seals new credentials into an app's row (not yet written) and brings it back: an app
    /// that needed reauthorization becomes ACTIVE (a suspended one will resume ACTIVE), and
    /// its integrations broken by rejected credentials are restored, with events.
    pub(super) async fn replace_credentials(
        &self,
        w: &mut Write<'_>,
        app: &mut AppRow,
        credentials: &Credentials,
        now: i64,
    ) -> Result<usize> {
        let team = TeamId::parse(&app.team).map_err(|_| Error::internal("stored team id"))?;
        (app.credentials, app.key_version) =
            self.ctx().seal(&team, &app_owner(&app.id), credentials)?;
        if app.state == AppState::Suspended {
            app.resume_state = Some(AppState::Active);
            return Ok(0);
        }
        let was_rejected = app.state == AppState::NeedsReauth;
        app.state = AppState::Active;
        if was_rejected {
            w.app_event(AppEventKind::Restored, app, "new OAuth credentials")?;
        }
        let filter = crate::domain::suspension::bound(
            &app.id,
            IntegrationState::Broken,
            Some(BrokenReason::CredentialsRejected),
        );
        let restore = Transition::Restore { rebind_to: None };
        let restored = change_state(w, team.as_str(), &filter, &restore, now).await?;
        Ok(restored.len())
    }
}
