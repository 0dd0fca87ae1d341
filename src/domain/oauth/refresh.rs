//! Refreshing access tokens before they expire. One refresh of one grant: take its lease
//! (one conditional UPDATE, so one replica at a time, and only for the token generation the
//! taker saw), trade the refresh token at the provider, then commit the new tokens (a rotated
//! refresh token with them) in one audited write before anyone can use the new access token.
//! `invalid_grant` takes the rule-6 path (NEEDS_REAUTH, integrations BROKEN); other failures
//! are retried with backoff and jitter and break nothing.

use super::Authorizations;
use crate::domain::reauth::reject_credentials;
use std::sync::Arc;
use std::time::Duration;

use ring::rand::SecureRandom;
use tokio::sync::{Semaphore, watch};

use crate::crypto::Aad;
use crate::store::{GrantRow, RefreshFailure};

use super::complete::{new_grant, oauth_credentials};
use super::http::ProviderError;
use super::{OAuth, nearly_expired};
use crate::domain::context::{Audited, Done};
use crate::domain::credentials::app_owner;
use crate::domain::error::{Error, Result};
use crate::domain::model::{Actor, AppEventKind, AppState, AuditAction};
use crate::domain::types::{AppName, TeamId};

/// How long a refresh lease holds: well beyond the outbound timeout, so a lease never runs
/// out under a refresh still in flight.
const LEASE_MICROS: i64 = 120_000_000;
/// Longest wait between retries of a failing refresh.
const MAX_BACKOFF_MICROS: i64 = 15 * 60 * 1_000_000;
/// Longest a resolution waits for another replica's refresh of the same app.
const WAIT_FOR_OTHER: Duration = Duration::from_secs(5);
/// A token younger than this (or than a tenth of its lifetime) that is reported rejected is
/// not refreshed first: the report breaks at once.
const FRESH_TOKEN_MICROS: i64 = 10_000_000;
/// Who the audit log names for refreshes.
pub const REFRESHER: &str = "system:oauth-refresher";
/// Authorizations are kept this long after they expire (to show their outcome).
const KEEP_AUTHORIZATIONS_MICROS: i64 = 24 * 3600 * 1_000_000;

/// How one refresh attempt ended (the label of the refresh metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// New tokens committed.
    Refreshed,
    /// The provider answered `invalid_grant`: the app needs reauthorization.
    Revoked,
    /// A transient failure (or a refusal other than `invalid_grant`): retried later.
    Failed,
    /// Another replica (or task) holds the lease or already refreshed this token.
    Busy,
}

impl RefreshOutcome {
    pub const ALL: [RefreshOutcome; 4] = [
        RefreshOutcome::Refreshed,
        RefreshOutcome::Revoked,
        RefreshOutcome::Failed,
        RefreshOutcome::Busy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RefreshOutcome::Refreshed => "refreshed",
            RefreshOutcome::Revoked => "invalid_grant",
            RefreshOutcome::Failed => "failed",
            RefreshOutcome::Busy => "busy",
        }
    }
}

fn refresher(team: &TeamId) -> Actor {
    Actor::system(REFRESHER, team)
}

/// Wait before retry number `failures` (1 = the first failure) of a token living
/// `lifetime`: an eighth of it (at least 1 s, at most 30 s) doubled per failure, at most
/// 15 minutes, with up to 20% random jitter either way.
pub fn backoff(failures: i32, lifetime: i64) -> i64 {
    let base = (lifetime / 8).clamp(1_000_000, 30_000_000);
    let doublings = u32::try_from(failures.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    let wait = base.saturating_mul(1 << doublings).min(MAX_BACKOFF_MICROS);
    let mut byte = [0u8; 1];
    let _ = ring::rand::SystemRandom::new().fill(&mut byte);
    // -20% .. +20%
    let jitter = wait / 5 * (i64::from(byte[0]) - 128) / 128;
    wait + jitter
}

impl Authorizations {
    /// Refreshes the grant `seen` unless another task or replica does: one flight per app
    /// in this replica, and the lease across replicas.
    pub(super) async fn refresh_once(&self, seen: &GrantRow) -> Result<RefreshOutcome> {
        let oauth = self.oauth()?;
        let flight = oauth.flight(&seen.installed_app_id);
        let _flying = flight.lock().await;
        let Some(current) = self.ctx().store().get_grant(&seen.installed_app_id).await? else {
            return Ok(RefreshOutcome::Busy);
        };
        if current.issue_time != seen.issue_time {
            // Refreshed while this task waited for the flight.
            return Ok(RefreshOutcome::Busy);
        }
        let now = self.ctx().now();
        let leased = self
            .ctx()
            .store()
            .take_lease(
                &current.installed_app_id,
                &oauth.replica,
                current.issue_time,
                now,
                now + LEASE_MICROS,
            )
            .await?;
        let outcome = if leased {
            let result = self.refresh_leased(oauth, &current).await;
            if result.is_err() {
                let _ = self
                    .ctx()
                    .store()
                    .release_lease(&current.installed_app_id, &oauth.replica)
                    .await;
            }
            result?
        } else {
            RefreshOutcome::Busy
        };
        oauth.observed(outcome);
        tracing::info!(installed_app = %current.installed_app_id, outcome = outcome.as_str(), "token refresh");
        Ok(outcome)
    }

    async fn refresh_leased(&self, oauth: &OAuth, grant: &GrantRow) -> Result<RefreshOutcome> {
        let team = TeamId::parse(&grant.team).map_err(|_| Error::internal("stored team id"))?;
        let name = AppName::new(team.clone(), grant.installed_app_id.clone());
        let now = self.ctx().now();
        let fail = async |error: String, next: Option<i64>| -> Result<RefreshOutcome> {
            let failure = RefreshFailure {
                error,
                failures: grant.failures.saturating_add(1),
                next_refresh_time: next,
            };
            self.ctx()
                .store()
                .refresh_failed(&grant.installed_app_id, &oauth.replica, &failure)
                .await?;
            // The app's grant health changed: this replica answers it at once.
            self.ctx().cache().changed(&grant.team);
            Ok(RefreshOutcome::Failed)
        };
        let Some(app) = self.ctx().store().get_app(team.as_str(), &name.id).await? else {
            return fail("the installed app is gone".into(), None).await;
        };
        let def = self
            .ctx()
            .catalog()
            .service(&app.service)
            .and_then(|s| s.oauth.as_ref());
        let client = oauth.settings.clients.get(&app.service);
        let (Some(def), Some(client)) = (def, client) else {
            let later = now + MAX_BACKOFF_MICROS;
            return fail(
                "no OAuth client is configured for its service".into(),
                Some(later),
            )
            .await;
        };
        let owner = app_owner(&app.id);
        let aad = Aad {
            team: team.as_str(),
            owner: &owner,
        };
        let credentials = self.ctx().keys().open_credentials(&aad, &app.credentials)?;
        let Some(refresh_token) = credentials.get("refresh_token") else {
            return fail("no refresh token is stored".into(), None).await;
        };
        match oauth.provider.refresh(def, client, refresh_token).await {
            Ok(answer) => {
                let service = self
                    .ctx()
                    .catalog()
                    .service(&app.service)
                    .ok_or_else(|| Error::internal("service vanished"))?;
                let new = match oauth_credentials(service, def, &answer, Some(&credentials)) {
                    Ok(new) => new,
                    Err(err) => {
                        let lifetime = answer.expires_in.unwrap_or(0) * 1_000_000;
                        let next = now + backoff(grant.failures + 1, lifetime);
                        return fail(err.describe(), Some(next)).await;
                    }
                };
                let audited = Audited::app(AuditAction::InstalledAppUpdate, &name);
                let restored = self
                    .ctx()
                    .write(&refresher(&team), audited, async |w| {
                        let mut app = w.lock_app(&name).await?;
                        let held = w.tx().await?.lock_grant(&app.id).await?;
                        if held.as_ref().and_then(|g| g.lease_owner.as_deref())
                            != Some(oauth.replica.as_str())
                        {
                            return Err(Error::Unavailable(
                                "the refresh lease was lost; the refresh will be retried".into(),
                            ));
                        }
                        let restored = self.replace_credentials(w, &mut app, &new, now).await?;
                        // New credentials are a change of the row: every such change bumps
                        // the version (a concurrent `rotate-keys` re-seal then stands back).
                        let expected = app.version;
                        app.version += 1;
                        app.update_time = now;
                        if !w.tx().await?.update_app(app.clone(), expected).await? {
                            return Err(Error::internal("locked installed app changed"));
                        }
                        let mut row =
                            new_grant(&app, &answer, now, new.get("refresh_token").is_some());
                        row.last_refresh_time = Some(now);
                        row.refresh_count = grant.refresh_count + 1;
                        w.tx().await?.put_grant(row).await?;
                        Ok(Done::Commit(restored))
                    })
                    .await?;
                if restored > 0 {
                    tracing::info!(installed_app = %name.id, restored, "a refresh restored integrations");
                }
                Ok(RefreshOutcome::Refreshed)
            }
            Err(ProviderError::InvalidGrant(text)) => {
                let said = format!("the provider refused to refresh the token ({text})");
                let audited = Audited::app(AuditAction::InstalledAppReportRejected, &name);
                let error = crate::domain::error::truncated(&format!("invalid_grant: {text}"), 600);
                self.ctx()
                    .write(&refresher(&team), audited, async |w| {
                        let mut app = w.lock_app(&name).await?;
                        w.app_event(AppEventKind::RefreshFailed, &app, &said)?;
                        if app.state != AppState::Suspended {
                            reject_credentials(w, &name, &mut app, &said, now).await?;
                        }
                        if let Some(mut row) = w.tx().await?.lock_grant(&app.id).await? {
                            row.last_refresh_error = Some(error.clone());
                            row.failures = row.failures.saturating_add(1);
                            row.next_refresh_time = None;
                            row.lease_owner = None;
                            row.lease_until = None;
                            w.tx().await?.put_grant(row).await?;
                        }
                        Ok(Done::Commit(()))
                    })
                    .await?;
                Ok(RefreshOutcome::Revoked)
            }
            Err(other) => {
                let lifetime = grant.expire_time.map_or(0, |e| e - grant.issue_time);
                let next = now + backoff(grant.failures + 1, lifetime);
                let error = crate::domain::error::truncated(&other.describe(), 600);
                fail(error, Some(next)).await?;
                Ok(RefreshOutcome::Failed)
            }
        }
    }

    /// Before a resolution: if the app's access token is nearly expired, refresh it now
    /// (single flight), or wait a little for the replica that is doing it.
    pub(in crate::domain) async fn ensure_fresh(&self, app_id: &str) -> Result<()> {
        if self.oauth.is_none() {
            return Ok(());
        }
        let Some(grant) = self.ctx().store().get_grant(app_id).await? else {
            return Ok(());
        };
        let now = self.ctx().now();
        let (Some(expire), Some(next)) = (grant.expire_time, grant.next_refresh_time) else {
            return Ok(());
        };
        if !grant.refreshable || !nearly_expired(grant.issue_time, expire, now) {
            return Ok(());
        }
        if grant.failures > 0 && next > now {
            // Backing off after failures: the resolution answers by the token's expiry.
            return Ok(());
        }
        if self.refresh_once(&grant).await? == RefreshOutcome::Busy {
            self.wait_for_other_refresh(&grant).await?;
        }
        Ok(())
    }

    /// Waits (briefly) until the token `seen` was replaced or nobody holds its lease.
    async fn wait_for_other_refresh(&self, seen: &GrantRow) -> Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHER;
        while tokio::time::Instant::now() < deadline {
            let Some(current) = self.ctx().store().get_grant(&seen.installed_app_id).await? else {
                return Ok(());
            };
            let leased = current
                .lease_until
                .is_some_and(|until| until > self.ctx().now());
            if current.issue_time != seen.issue_time || !leased {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// ReportCredentialsRejected on an app authorized through OAuth: one refresh first.
    /// Whether it brought new credentials (then nothing breaks).
    pub(in crate::domain) async fn refreshed_instead_of_rejected(
        &self,
        actor: &Actor,
        name: &AppName,
    ) -> Result<bool> {
        if self.oauth.is_none() || !actor.sees(&name.team) {
            return Ok(false);
        }
        let Some(grant) = self.ctx().store().get_grant(&name.id).await? else {
            return Ok(false);
        };
        if grant.team != name.team.as_str()
            || !grant.refreshable
            || grant.next_refresh_time.is_none()
        {
            return Ok(false);
        }
        // A token this fresh was rejected: another one would be too, and refreshing on every
        // report would only spin. The rejection stands.
        let lifetime = grant.expire_time.map_or(0, |e| e - grant.issue_time);
        if self.ctx().now() - grant.issue_time < (lifetime / 10).min(FRESH_TOKEN_MICROS) {
            return Ok(false);
        }
        match self.refresh_once(&grant).await? {
            RefreshOutcome::Refreshed => Ok(true),
            RefreshOutcome::Busy => {
                self.wait_for_other_refresh(&grant).await?;
                let after = self.ctx().store().get_grant(&name.id).await?;
                Ok(after.is_some_and(|g| g.issue_time != grant.issue_time))
            }
            RefreshOutcome::Revoked | RefreshOutcome::Failed => Ok(false),
        }
    }

    /// Runs the background refresher until `stop`: every interval, the grants due are
    /// refreshed, at most `refresh_concurrency` at once in this replica. When more are due
    /// than one read returns, the next read follows as soon as those are done, not an
    /// interval later (10,000 tokens expiring in one minute fell behind otherwise).
    pub fn spawn_refresher(&self, mut stop: watch::Receiver<bool>) {
        let Some(oauth) = self.oauth.as_deref() else {
            return;
        };
        let interval = oauth.settings.refresh_interval;
        let concurrency = oauth.settings.refresh_concurrency.max(1);
        let hub = self.clone();
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(concurrency));
            // Whether a refresh of the current page ended in an error (the database refused
            // its write, say): then the next page waits for the interval, so a failing
            // store never turns the refresher into a loop that calls providers back to back.
            let erred = Arc::new(std::sync::atomic::AtomicBool::new(false));
            loop {
                let now = hub.ctx().now();
                let limit = u64::try_from(concurrency * 4).unwrap_or(64);
                let mut more_due = false;
                match hub.ctx().store().due_grants(now, limit).await {
                    Ok(due) => {
                        more_due = due.len() as u64 >= limit;
                        for grant in due {
                            let Ok(permit) = permits.clone().acquire_owned().await else {
                                return;
                            };
                            let hub = hub.clone();
                            let erred = Arc::clone(&erred);
                            tokio::spawn(async move {
                                if let Err(err) = hub.refresh_once(&grant).await {
                                    erred.store(true, std::sync::atomic::Ordering::Relaxed);
                                    tracing::warn!(installed_app = %grant.installed_app_id, error = %err, "token refresh failed");
                                }
                                drop(permit);
                            });
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot read the grants due"),
                }
                if more_due {
                    // Until this read's refreshes are done they are still due: wait for them
                    // (every permit back), then read the next ones.
                    let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
                    match permits.acquire_many(all).await {
                        Ok(done) => drop(done),
                        Err(_) => return,
                    }
                    if *stop.borrow() {
                        return;
                    }
                    if !erred.swap(false, std::sync::atomic::Ordering::Relaxed) {
                        continue;
                    }
                }
                erred.store(false, std::sync::atomic::Ordering::Relaxed);
                if let Err(err) = hub
                    .ctx()
                    .store()
                    .prune_authorizations(now - KEEP_AUTHORIZATIONS_MICROS)
                    .await
                {
                    tracing::debug!(error = %err, "cannot prune old authorizations");
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.changed() => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_an_eighth_of_the_lifetime_with_jitter_and_a_cap() {
        let sec = 1_000_000;
        for _ in 0..50 {
            let first = backoff(1, 3600 * sec);
            assert!((24 * sec..=36 * sec).contains(&first), "{first}");
            let third = backoff(3, 3600 * sec);
            assert!((96 * sec..=144 * sec).contains(&third), "{third}");
            let many = backoff(40, 3600 * sec);
            assert!(many <= MAX_BACKOFF_MICROS * 6 / 5);
            let short = backoff(1, 4 * sec);
            assert!((800_000..=1_200_000).contains(&short), "{short}");
        }
    }
}
