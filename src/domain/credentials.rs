//! Credentials: sealing them to their team and owner, the one check of submitted credentials
//! against the catalog, their resolution for a service principal (rule 2 of docs/rules.md), and the
//! fingerprints that make a create with an idempotency key safe to retry.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::crypto::{Aad, Credentials, KeyRing};
use crate::store::{AppRow, IntegrationRow, StoreError};
use crate::text::hex;

use super::audit_batch::{Checked, Uses, Versions, record_uses};
use super::catalog::ServiceDef;
use super::context::{Audited, Done, Write, check_values};
use super::error::{Error, Precondition, Result};
use super::integrations::Integrations;
use super::model::{Actor, AppState, AuditAction, BrokenReason, Integration, IntegrationState};
use super::suspension::suspended_error;
use super::types::{IdempotencyKey, IntegrationName, TeamId};

/// Most credential entries an app or integration may hold.
pub const MAX_CREDENTIAL_ENTRIES: usize = 20;
/// Longest credential value, in bytes (OAuth access tokens can be a few KiB).
pub const MAX_CREDENTIAL_VALUE: usize = 8192;

/// Checks credentials against the fields `service` declares, naming each problem under
/// `field` (`credentials`, or `credentials.values` where the request nests them). A
/// problem's description never contains a submitted value.
pub(super) fn check_credentials(
    service: &ServiceDef,
    field: &str,
    credentials: &Credentials,
) -> Result<()> {
    check_values(
        field,
        &service.credential_fields,
        credentials.expose(),
        MAX_CREDENTIAL_ENTRIES,
        MAX_CREDENTIAL_VALUE,
    )
}

/// The owner an installed app's credentials are sealed to.
pub(super) fn app_owner(id: &str) -> String {
    format!("installedApps/{id}")
}

/// The owner an integration's own credentials are sealed to.
pub(super) fn integration_owner(id: &str) -> String {
    format!("integrations/{id}")
}

/// What ResolveIntegrationCredentials answers.
pub struct Resolved {
    pub integration: Integration,
    pub credentials: Credentials,
    /// When the access token expires, for an app authorized through OAuth 2.0.
    pub expire_time: Option<i64>,
}

/// Feeds length-prefixed parts, so no two sequences of parts share a text.
fn feed(update: &mut impl FnMut(&[u8]), parts: &[&str]) {
    for part in parts {
        update(&(part.len() as u64).to_be_bytes());
        update(part.as_bytes());
    }
}

/// SHA-256 (hex) of the non-secret parts alone: the fingerprint stored before fingerprints
/// covered the credentials. Only compared with records stored then ([`Idempotency::retry_of`]).
fn content_fingerprint(parts: &[&str]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    feed(&mut |bytes| context.update(bytes), parts);
    hex(context.finish().as_ref())
}

/// The keyed fingerprint of a create (`k<version>:<base64url>`, at most 55 characters: the
/// column holds 64) under every key version of the
/// ring, newest first: HMAC-SHA256, keyed by a key derived from the encryption key, of the
/// parts and then the credentials (sorted, each name and value length-prefixed). It never
/// holds the plaintext, and without the key ring nobody can test a guess against it.
fn keyed_fingerprints(
    keys: &KeyRing,
    parts: &[&str],
    credentials: Option<&Credentials>,
) -> Vec<String> {
    keys.fingerprint_contexts()
        .into_iter()
        .map(|(version, mut context)| {
            let mut update = |bytes: &[u8]| context.update(bytes);
            feed(&mut update, parts);
            match credentials {
                None => update(&[0]),
                Some(credentials) => {
                    update(&[1]);
                    update(&(credentials.len() as u64).to_be_bytes());
                    for (name, value) in credentials.expose() {
                        feed(&mut update, &[name, value]);
                    }
                }
            }
            let mac = URL_SAFE_NO_PAD.encode(context.sign().as_ref());
            format!("k{version}:{mac}")
        })
        .collect()
}

/// The keyed fingerprint of credentials alone under the newest key.
pub(super) fn credentials_fingerprint(keys: &KeyRing, credentials: &Credentials) -> Option<String> {
    keyed_fingerprints(keys, &["credentials"], Some(credentials))
        .into_iter()
        .next()
}

/// A stored record a create made, with the fingerprint of the request that made it.
pub(super) trait Fingerprinted {
    fn fingerprint(&self) -> Option<&str>;
}

impl Fingerprinted for AppRow {
    fn fingerprint(&self) -> Option<&str> {
        self.request_fingerprint.as_deref()
    }
}

impl Fingerprinted for IntegrationRow {
    fn fingerprint(&self) -> Option<&str> {
        self.request_fingerprint.as_deref()
    }
}

/// A create's idempotency key and the fingerprint of its content (AIP-155), credentials
/// included.
pub(super) struct Idempotency {
    pub key: IdempotencyKey,
    /// What is stored: the keyed fingerprint under the newest key.
    pub fingerprint: String,
    /// The keyed fingerprint under every key of the ring (a record made before a rotation).
    accepted: Vec<String>,
    /// The fingerprint of the parts alone, as stored before credentials were covered.
    legacy: String,
    /// The keyed fingerprint of the credentials alone, to compare with a legacy record's.
    credentials: Option<String>,
    keys: Arc<KeyRing>,
}

impl Idempotency {
    /// `None` without a key: such a create is never a retry.
    pub fn of(
        keys: &Arc<KeyRing>,
        key: Option<IdempotencyKey>,
        parts: &[&str],
        credentials: Option<&Credentials>,
    ) -> Option<Idempotency> {
        let key = key?;
        let accepted = keyed_fingerprints(keys, parts, credentials);
        Some(Idempotency {
            key,
            fingerprint: accepted.first().cloned().unwrap_or_default(),
            accepted,
            legacy: content_fingerprint(parts),
            credentials: credentials.and_then(|c| credentials_fingerprint(keys, c)),
            keys: Arc::clone(keys),
        })
    }

    /// What a record found under this key means: a record made by the same content (and
    /// the same credentials) is the one this create retries; one made by other content is
    /// refused (REQUEST_ID_REUSED). A record stored without a fingerprint is taken as the
    /// same request. A record whose fingerprint predates the credentials' (content only) is
    /// a retry only if its credentials, opened by `stored_credentials`, are the ones given.
    /// A fingerprint made under a retired key cannot be recomputed: refused.
    pub fn retry_of<R: Fingerprinted>(
        &self,
        found: Option<R>,
        stored_credentials: impl FnOnce(&R) -> Result<Option<Credentials>>,
    ) -> Result<Option<R>> {
        let Some(row) = found else {
            return Ok(None);
        };
        let same = match row.fingerprint() {
            None => true,
            Some(stored) if self.accepted.iter().any(|f| f == stored) => true,
            Some(stored) if stored == self.legacy => match &self.credentials {
                None => true,
                Some(given) => stored_credentials(&row)?
                    .and_then(|c| credentials_fingerprint(&self.keys, &c))
                    .is_some_and(|stored| stored == *given),
            },
            Some(_) => false,
        };
        if same {
            Ok(Some(row))
        } else {
            Err(Error::IdempotencyKeyReused)
        }
    }
}

/// Settles the insert of a create. A unique conflict on a create with a key is a concurrent
/// retry with the same key that won the race: the write is rolled back (on PostgreSQL the
/// failed insert ended the transaction) and `Some` answers with the record the winner made,
/// found by `earlier`.
pub(super) async fn settle_insert<T>(
    w: &mut Write<'_>,
    inserted: std::result::Result<(), StoreError>,
    create: Option<&Idempotency>,
    earlier: impl AsyncFnOnce(&Idempotency) -> Result<Option<T>>,
) -> Result<Option<T>> {
    match (inserted, create) {
        (Ok(()), _) => Ok(None),
        (Err(StoreError::Conflict), Some(create)) => {
            w.roll_back();
            match earlier(create).await? {
                Some(earlier) => Ok(Some(earlier)),
                None => Err(Error::internal("request id conflict without a row")),
            }
        }
        (Err(err), _) => Err(err.into()),
    }
}

/// How long a record's last use stands before a resolution writes it again: one minute.
pub const USE_RECORD_INTERVAL_MICROS: i64 = 60_000_000;

/// When the records a resolution used were last used, as stored.
#[derive(Clone, Debug)]
struct Used {
    integration: Option<i64>,
    /// The installed app's id and last use, when the credentials are an app's.
    app: Option<(String, Option<i64>)>,
}

impl Integrations {
    /// The credentials an active integration uses, for a service principal (rule 2 of docs/rules.md).
    /// Every resolution is audited; the credentials are handed out only once the success
    /// record is committed. A resolution reads what it needs from the read cache when it
    /// can, and commits its record (and the last use of what it used, when that is due)
    /// together with concurrent resolutions' (`audit_batch.rs`) in a transaction that checks
    /// the versions it read are still stored: what was deleted, suspended or rejected before
    /// the resolution began is never handed out. A failure or an outdated read goes through
    /// [`Context::write`] as every change does.
    // At INFO (production) neither the span nor the line below is written: the audit record
    // is the account of every resolution (what the span and line cost: BENCHMARKS.md).
    #[tracing::instrument(level = "debug", skip_all, fields(integration = %name))]
    pub async fn resolve_credentials(
        &self,
        actor: &Actor,
        name: &IntegrationName,
    ) -> Result<Resolved> {
        let key = format!("resolve|{}|{}", name.team, name.id);
        // Another team's integration is never looked up in the cache: the way below answers
        // it exactly as a missing one (rule 7 of docs/rules.md), and audits the attempt.
        let plan = if actor.sees(&name.team) {
            match self.resolution_plan(actor, name, &key).await {
                Ok(plan) => Some(plan),
                // Whatever stopped the short way (a missing integration, a broken one, the
                // database) is met again by the long way, which answers it and audits the
                // attempt: the caller is told by that, never by this.
                Err(err) => {
                    tracing::debug!(error = %err, "no resolution plan; resolving the long way");
                    None
                }
            }
        } else {
            None
        };
        let fast = match plan {
            Some(plan) if plan.usable(self.ctx().now()) && plan.within_reach(actor) => {
                self.resolve_from_plan(actor, name, &plan, &key).await?
            }
            _ => None,
        };
        let resolved = match fast {
            Some(resolved) => resolved,
            None => {
                self.ctx().cache().forget(&key);
                self.resolve_recording_use(actor, name).await?
            }
        };
        tracing::debug!(
            actor = %actor.subject,
            integration = %name,
            request_id = %actor.request_id,
            "credentials resolved"
        );
        Ok(resolved)
    }

    /// What a resolution of `name` needs: from the read cache, or read (and kept). A nearly
    /// expired OAuth access token is refreshed first.
    async fn resolution_plan(
        &self,
        actor: &Actor,
        name: &IntegrationName,
        key: &str,
    ) -> Result<Arc<ResolutionPlan>> {
        let team = name.team.as_str();
        if !actor.sees(&name.team) {
            return Err(super::context::not_found_integration(name));
        }
        if let Some(plan) = self.ctx().cache().get::<ResolutionPlan>(team, key)
            && !plan.due_for_refresh(self.ctx().now())
        {
            return Ok(plan);
        }
        let ticket = self.ctx().cache().ticket();
        let plan = self.read_plan(actor, name).await?;
        if self.authorizations().configured()
            && plan.due_for_refresh(self.ctx().now())
            && let Some(app_id) = plan.app_id()
        {
            // A nearly expired access token is refreshed before it is handed out; the
            // plan is read again, and not kept while the token is still due.
            self.authorizations().ensure_fresh(app_id).await?;
            return self.read_plan(actor, name).await.map(Arc::new);
        }
        let plan = Arc::new(plan);
        self.ctx()
            .cache()
            .put(team, key.to_owned(), ticket, plan.clone(), plan.bytes());
        Ok(plan)
    }

    /// Opens the plan's credentials and commits the success record if the plan's versions
    /// are still stored; `None` when they are not (the caller reads again).
    async fn resolve_from_plan(
        &self,
        actor: &Actor,
        name: &IntegrationName,
        plan: &ResolutionPlan,
        key: &str,
    ) -> Result<Option<Resolved>> {
        let Ok(credentials) = self.open_plan(&name.team, plan) else {
            return Ok(None);
        };
        let uses = self.uses_to_record(name, &plan.used);
        let record = self.ctx().audit_success(
            actor,
            &name.team,
            AuditAction::IntegrationResolveCredentials,
            name.to_string(),
        );
        let recorded_use = !uses.is_empty();
        match self
            .resolutions()
            .append_checked(record, Some(plan.versions(uses)))
            .await?
        {
            Checked::Committed => {
                if recorded_use {
                    // The plan kept holds the last uses before this one: read it again.
                    self.ctx().cache().forget(key);
                }
                Ok(Some(Resolved {
                    integration: plan.integration.clone(),
                    credentials,
                    expire_time: plan.grant.as_ref().and_then(|g| g.expire_time),
                }))
            }
            Checked::Outdated => Ok(None),
        }
    }

    /// A resolution in a write of its own: it records the last use, or its failure.
    async fn resolve_recording_use(
        &self,
        actor: &Actor,
        name: &IntegrationName,
    ) -> Result<Resolved> {
        let audited = Audited::integration(AuditAction::IntegrationResolveCredentials, name);
        self.ctx()
            .write(actor, audited, async |w| {
                let (resolved, used) = self.open_credentials(actor, name).await?;
                self.record_use(w, name, used).await?;
                Ok(Done::Commit(resolved))
            })
            .await
    }

    /// What a resolution that used these records records of their last use: those stored as
    /// used longer ago than [`USE_RECORD_INTERVAL_MICROS`] (a busy record is written at most
    /// once a minute, and its version never moves: usage is not a change).
    fn uses_to_record(&self, name: &IntegrationName, used: &Used) -> Uses {
        let now = self.ctx().now();
        let stale_before = now.saturating_sub(USE_RECORD_INTERVAL_MICROS);
        let stale = |last: Option<i64>| last.is_none_or(|t| t < stale_before);
        Uses {
            integration: stale(used.integration).then(|| name.id.clone()),
            app: used
                .app
                .as_ref()
                .filter(|(_, last)| stale(*last))
                .map(|(id, _)| id.clone()),
            now,
            stale_before,
        }
    }

    /// Records the last use of what a resolution used, in its write.
    async fn record_use(
        &self,
        w: &mut Write<'_>,
        name: &IntegrationName,
        used: Used,
    ) -> Result<()> {
        let uses = self.uses_to_record(name, &used);
        if !uses.is_empty() {
            record_uses(w.tx().await?, [&uses]).await?;
        }
        Ok(())
    }

    async fn open_credentials(
        &self,
        actor: &Actor,
        name: &IntegrationName,
    ) -> Result<(Resolved, Used)> {
        let plan = self.read_plan(actor, name).await?;
        let credentials = self.open_plan(&name.team, &plan)?;
        let resolved = Resolved {
            integration: plan.integration,
            credentials,
            expire_time: plan.grant.and_then(|g| g.expire_time),
        };
        Ok((resolved, plan.used))
    }

    /// Reads what resolving `name` needs; an integration that cannot be resolved (broken,
    /// suspended, its token expired) answers the error the caller gets.
    async fn read_plan(&self, actor: &Actor, name: &IntegrationName) -> Result<ResolutionPlan> {
        if !actor.sees(&name.team) {
            return Err(super::context::not_found_integration(name));
        }
        // The integration, its app and the app's grant in one read (with concurrent ones).
        let (row, app, grant_row) = self
            .plans()
            .read(name.team.as_str(), &name.id)
            .await?
            .ok_or_else(|| super::context::not_found_integration(name))?;
        let integration = Integration::from_row(&row)?;
        // A limited service principal learns nothing of an integration beyond its reach
        // (not even whether it is broken); the refusal is audited with its name.
        actor.check_integration_reach(&integration)?;
        if integration.broken_reason == Some(BrokenReason::InstalledAppSuspended) {
            return Err(suspended_error());
        }
        if integration.state != IntegrationState::Active {
            return Err(Error::precondition(
                Precondition::WrongState,
                "the integration is broken: there are no credentials to resolve",
            ));
        }
        let mut used = Used {
            integration: row.last_used_time,
            app: None,
        };
        let mut grant = None;
        let mut app_version = None;
        let (owner, sealed) = match (row.own_credentials, &integration.installed_app_id) {
            (Some(sealed), _) => (integration_owner(&integration.id), sealed),
            (None, Some(_)) => {
                let app =
                    app.ok_or_else(|| Error::internal("active integration without its app"))?;
                if app.state == AppState::Suspended {
                    return Err(suspended_error());
                }
                used.app = Some((app.id.clone(), app.last_used_time));
                app_version = Some(app.version);
                grant = grant_row.map(|g| PlanGrant {
                    issue_time: g.issue_time,
                    expire_time: g.expire_time,
                    refreshable: g.refreshable,
                });
                if grant.as_ref().is_some_and(|g| g.expired(self.ctx().now())) {
                    return Err(token_expired());
                }
                (app_owner(&app.id), app.credentials)
            }
            (None, None) => return Err(Error::internal("integration without credentials")),
        };
        Ok(ResolutionPlan {
            integration,
            used,
            app_version,
            owner,
            sealed,
            grant,
        })
    }

    /// The plan's credentials, opened (without an OAuth refresh token: it stays here).
    fn open_plan(&self, team: &TeamId, plan: &ResolutionPlan) -> Result<Credentials> {
        let aad = Aad {
            team: team.as_str(),
            owner: &plan.owner,
        };
        let mut credentials = self.ctx().keys().open_credentials(&aad, &plan.sealed)?;
        if plan.grant.is_some() {
            // The refresh token stays in the hub: a resolution hands out the access token.
            let mut map = credentials.into_map();
            if let Some(mut token) = map.remove("refresh_token") {
                zeroize::Zeroize::zeroize(&mut token);
            }
            credentials = Credentials::new(map);
        }
        Ok(credentials)
    }
}

fn token_expired() -> Error {
    Error::Unavailable(
        "the installed app's access token expired and could not be refreshed yet; retry later"
            .into(),
    )
}

/// What resolving an integration reads: the integration, where its sealed credentials are
/// and the versions of the rows they came from. Kept in the read cache (sealed: the cache
/// never holds plaintext credentials).
pub(super) struct ResolutionPlan {
    integration: Integration,
    used: Used,
    /// The app's version, when the credentials are an app's.
    app_version: Option<i64>,
    /// Who the credentials are sealed to.
    owner: String,
    sealed: Vec<u8>,
    grant: Option<PlanGrant>,
}

/// The OAuth grant of the app, when it has one.
struct PlanGrant {
    issue_time: i64,
    expire_time: Option<i64>,
    refreshable: bool,
}

impl PlanGrant {
    fn expired(&self, now: i64) -> bool {
        self.expire_time.is_some_and(|expire| expire <= now)
    }
}

impl ResolutionPlan {
    /// Whether the caller reaches it; when not, the long way refuses and audits the attempt.
    fn within_reach(&self, actor: &Actor) -> bool {
        actor.check_integration_reach(&self.integration).is_ok()
    }

    fn app_id(&self) -> Option<&str> {
        self.used.app.as_ref().map(|(id, _)| id.as_str())
    }

    /// Whether its access token is close enough to expiry to be refreshed before use.
    fn due_for_refresh(&self, now: i64) -> bool {
        self.grant.as_ref().is_some_and(|g| {
            g.refreshable
                && g.expire_time
                    .is_some_and(|expire| super::oauth::nearly_expired(g.issue_time, expire, now))
        })
    }

    /// Whether it may be answered now (its access token has not expired).
    fn usable(&self, now: i64) -> bool {
        !self.grant.as_ref().is_some_and(|g| g.expired(now))
    }

    fn versions(&self, uses: Uses) -> Versions {
        Versions {
            uses,
            integration: (self.integration.id.clone(), self.integration.version),
            app: self
                .app_id()
                .map(|id| (id.to_owned(), self.app_version.unwrap_or(0))),
        }
    }

    /// What it holds, in bytes, for the read cache's budget.
    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.integration.bytes()
            + self.sealed.len()
            + self.owner.len()
            + self.used.app.as_ref().map_or(0, |(id, _)| id.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::catalog::Catalog;
    use std::collections::BTreeMap;

    fn credentials(pairs: &[(&str, &str)]) -> Credentials {
        Credentials::new(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
        )
    }

    fn violations(result: Result<()>) -> Vec<(String, String)> {
        match result {
            Err(Error::Invalid(violations)) => violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect(),
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    #[test]
    fn credentials_declared_by_the_service_pass() {
        let catalog = Catalog::builtin();
        let slack = catalog.service("slack").unwrap();
        let given = credentials(&[("access_token", "xoxb-1"), ("team_id", "T1")]);
        assert!(check_credentials(slack, "credentials", &given).is_ok());
    }

    #[test]
    fn each_credential_problem_is_named_under_the_given_field_without_its_value() {
        let catalog = Catalog::builtin();
        let slack = catalog.service("slack").unwrap();
        let long = "s".repeat(MAX_CREDENTIAL_VALUE + 1);
        let given = credentials(&[("bogus", "secret-1"), ("team_id", &long)]);
        let found = violations(check_credentials(slack, "credentials.values", &given));
        let fields: Vec<&str> = found.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "credentials.values.access_token",
                "credentials.values.bogus",
                "credentials.values.team_id",
            ]
        );
        assert!(found[0].1.contains("is required but missing"));
        assert!(found[1].1.contains("is not a known field"));
        assert!(found[2].1.contains("longer than 8192 bytes"));
        for (_, description) in &found {
            assert!(!description.contains("secret-1") && !description.contains(&long));
        }
    }

    #[test]
    fn credentials_are_limited_in_number_and_value_length() {
        let catalog = Catalog::builtin();
        let slack = catalog.service("slack").unwrap();
        let exactly = "v".repeat(MAX_CREDENTIAL_VALUE);
        let at_limit = credentials(&[("access_token", &exactly)]);
        assert!(check_credentials(slack, "credentials", &at_limit).is_ok());

        let mut many: Vec<(String, String)> = (0..MAX_CREDENTIAL_ENTRIES)
            .map(|i| (format!("extra_{i}"), "x".to_owned()))
            .collect();
        many.push(("access_token".into(), "t".into()));
        let many = Credentials::new(many.into_iter().collect());
        let found = violations(check_credentials(slack, "credentials", &many));
        assert_eq!(found[0].0, "credentials");
        assert!(found[0].1.contains("at most 20 fields"));
    }

    fn ring() -> Arc<KeyRing> {
        Arc::new(KeyRing::generate(1).unwrap().0)
    }

    #[test]
    fn legacy_fingerprints_depend_on_every_part_and_its_boundaries() {
        let one = content_fingerprint(&["installed_app", "slack", "Slack", "acme"]);
        assert_eq!(one.len(), 64);
        assert!(one.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            one,
            content_fingerprint(&["installed_app", "slack", "Slack", "acme"])
        );
        assert_ne!(
            one,
            content_fingerprint(&["installed_app", "slack", "Slack", "acme2"])
        );
        // Length prefixes: moving a boundary changes the fingerprint.
        assert_ne!(
            content_fingerprint(&["ab", "c"]),
            content_fingerprint(&["a", "bc"])
        );
        assert_ne!(content_fingerprint(&["a", ""]), content_fingerprint(&["a"]));
    }

    #[test]
    fn keyed_fingerprints_cover_the_credentials_without_containing_them() {
        let keys = ring();
        let parts = ["installed_app", "slack", "Slack", ""];
        let secret = "xoxb-very-secret-token";
        let given = credentials(&[("access_token", secret)]);
        let one = keyed_fingerprints(&keys, &parts, Some(&given));
        assert_eq!(one.len(), 1, "one per key version");
        assert!(one[0].starts_with("k1:"));
        assert_eq!(one[0].len(), 3 + 43, "fits the stored column");
        // Same request, same fingerprint.
        let again = credentials(&[("access_token", secret)]);
        assert_eq!(one, keyed_fingerprints(&keys, &parts, Some(&again)));
        // Other credentials (a value, a name, one more entry, none): another fingerprint.
        for other in [
            Some(credentials(&[("access_token", "xoxb-other")])),
            Some(credentials(&[("team_id", secret)])),
            Some(credentials(&[("access_token", secret), ("team_id", "T1")])),
            None,
        ] {
            assert_ne!(one, keyed_fingerprints(&keys, &parts, other.as_ref()));
        }
        // Boundaries between a name and its value count.
        assert_ne!(
            keyed_fingerprints(&keys, &parts, Some(&credentials(&[("ab", "c")]))),
            keyed_fingerprints(&keys, &parts, Some(&credentials(&[("a", "bc")])))
        );
        // Keyed: another ring gives another fingerprint; it is no plain hash of the content.
        assert_ne!(one, keyed_fingerprints(&ring(), &parts, Some(&given)));
        assert!(!one[0].contains(secret));
        assert!(!one[0].contains(&hex(secret.as_bytes())));
        assert!(!one[0].contains(&URL_SAFE_NO_PAD.encode(secret)));
        assert!(!one[0].contains(&content_fingerprint(&parts)));
        let plain = content_fingerprint(&[
            "installed_app",
            "slack",
            "Slack",
            "",
            "access_token",
            secret,
        ]);
        assert!(!one[0].contains(&plain));
    }

    #[test]
    fn a_fingerprint_made_before_a_rotation_still_matches() {
        let (old, old_spec) = KeyRing::generate(1).unwrap();
        let (_, new_spec) = KeyRing::generate(2).unwrap();
        let rotated = KeyRing::parse(&format!("{old_spec},{new_spec}")).unwrap();
        let given = credentials(&[("access_token", "t")]);
        let before = keyed_fingerprints(&old, &["x"], Some(&given));
        let after = keyed_fingerprints(&rotated, &["x"], Some(&given));
        assert_eq!(after.len(), 2);
        assert!(after[0].starts_with("k2:"), "the newest key is stored");
        assert_eq!(after[1], before[0]);
    }

    fn app_row(fingerprint: Option<&str>) -> AppRow {
        AppRow {
            request_id: Some("k1".into()),
            request_fingerprint: fingerprint.map(str::to_owned),
            ..crate::domain::test_support::app_row("a1")
        }
    }

    #[test]
    fn a_key_reused_with_other_content_is_refused_and_a_retry_is_answered() {
        let keys = ring();
        let key = IdempotencyKey::parse_optional("k1").unwrap();
        let given = credentials(&[("access_token", "xoxb-1")]);
        let parts = ["installed_app", "slack", "Slack", ""];
        assert!(Idempotency::of(&keys, None, &["x"], None).is_none());
        let create = Idempotency::of(&keys, key.clone(), &parts, Some(&given)).unwrap();
        let same = create.fingerprint.clone();
        let none = |_: &AppRow| -> Result<Option<Credentials>> { Ok(None) };

        assert!(create.retry_of::<AppRow>(None, none).unwrap().is_none());
        let retried = create.retry_of(Some(app_row(Some(&same))), none).unwrap();
        assert_eq!(retried.map(|r| r.id), Some("a1".to_owned()));
        assert!(matches!(
            create.retry_of(Some(app_row(Some("another request"))), none),
            Err(Error::IdempotencyKeyReused)
        ));
        // Other credentials, the same names: refused.
        let other = credentials(&[("access_token", "xoxb-2")]);
        let other = Idempotency::of(&keys, key.clone(), &parts, Some(&other)).unwrap();
        assert!(matches!(
            other.retry_of(Some(app_row(Some(&same))), none),
            Err(Error::IdempotencyKeyReused)
        ));
        // A record stored without a fingerprint is taken as the same request.
        assert!(
            create
                .retry_of(Some(app_row(None)), none)
                .unwrap()
                .is_some()
        );
        // A record fingerprinted before credentials were covered: a retry only if its
        // stored credentials are the ones given.
        let legacy = content_fingerprint(&parts);
        let stored = |_: &AppRow| Ok(Some(credentials(&[("access_token", "xoxb-1")])));
        assert!(
            create
                .retry_of(Some(app_row(Some(&legacy))), stored)
                .unwrap()
                .is_some()
        );
        assert!(matches!(
            other.retry_of(Some(app_row(Some(&legacy))), stored),
            Err(Error::IdempotencyKeyReused)
        ));
        // A fingerprint under a key no longer in the ring cannot be checked: refused.
        let retired = keyed_fingerprints(&ring(), &parts, Some(&given));
        assert!(matches!(
            create.retry_of(Some(app_row(Some(&retired[0]))), none),
            Err(Error::IdempotencyKeyReused)
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_first_resolutions_of_many_integrations_all_record_their_use() {
        use crate::domain::model::Role;
        use crate::domain::test_support::{NOW, actor, hub};
        let t = hub().await;
        let app = t.app("Slack").await;
        let mut jobs = Vec::new();
        for i in 0..24 {
            jobs.push(t.bound(&app, &format!("Job {i}")).await);
        }
        let service = actor(Role::Service, "runner");
        // All in flight at once: their records (and uses) share the group commit's batches.
        let mut resolutions = tokio::task::JoinSet::new();
        let t = std::sync::Arc::new(t);
        for job in &jobs {
            let name = IntegrationName::parse(&job.name()).unwrap();
            let (t, service) = (t.clone(), service.clone());
            resolutions.spawn(async move {
                t.hub
                    .integrations()
                    .resolve_credentials(&service, &name)
                    .await
                    .map(|_| ())
            });
        }
        while let Some(resolution) = resolutions.join_next().await {
            resolution.unwrap().unwrap();
        }
        for job in &jobs {
            let stored = t
                .store
                .get_integration("acme", &job.id)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(stored.last_used_time, Some(NOW), "{}", job.id);
            assert_eq!(stored.version, job.version, "usage is not a change");
        }
        let stored_app = t
            .store
            .get_app("acme", &app.name.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored_app.last_used_time, Some(NOW));
        assert_eq!(stored_app.version, app.version);
    }

    #[tokio::test]
    async fn a_resolution_records_the_use_at_most_once_a_minute_without_a_new_version() {
        use crate::domain::model::Role;
        use crate::domain::test_support::{NOW, actor, hub};
        let t = hub().await;
        let app = t.app("Slack").await;
        let job = t.bound(&app, "Job").await;
        let name = IntegrationName::parse(&job.name()).unwrap();
        let service = actor(Role::Service, "runner");
        for _ in 0..3 {
            t.hub
                .integrations()
                .resolve_credentials(&service, &name)
                .await
                .unwrap();
        }
        let stored_app = t
            .store
            .get_app("acme", &app.name.id)
            .await
            .unwrap()
            .unwrap();
        let stored_job = t
            .store
            .get_integration("acme", &job.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored_app.last_used_time, Some(NOW));
        assert_eq!(stored_job.last_used_time, Some(NOW));
        assert_eq!(stored_app.version, app.version, "usage is not a change");
        assert_eq!(stored_job.version, job.version);

        // Within the interval nothing is written; after it, the use is recorded again.
        let tx = t.store.begin_write().await.unwrap();
        let soon = NOW + USE_RECORD_INTERVAL_MICROS / 2;
        let stale_before = soon - USE_RECORD_INTERVAL_MICROS;
        assert_eq!(
            tx.touch_apps(&[&app.name.id], soon, stale_before)
                .await
                .unwrap(),
            0
        );
        assert_eq!(
            tx.touch_integrations(&[&job.id], soon, stale_before)
                .await
                .unwrap(),
            0
        );
        let later = NOW + USE_RECORD_INTERVAL_MICROS + 1;
        let stale_before = later - USE_RECORD_INTERVAL_MICROS;
        assert_eq!(
            tx.touch_apps(&[&app.name.id], later, stale_before)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            tx.touch_integrations(&[&job.id], later, stale_before)
                .await
                .unwrap(),
            1
        );
        tx.commit().await.unwrap();
        let stored_app = t
            .store
            .get_app("acme", &app.name.id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored_app.last_used_time, Some(later));
    }
}
