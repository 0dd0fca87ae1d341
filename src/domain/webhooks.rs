//! Webhook subscriptions: a team's HTTPS endpoints that receive its events, signed to the
//! Standard Webhooks specification. Admins manage them; the signing secret (`whsec_` and the
//! base64 of 32 random bytes) is sealed at rest like credentials and shown once, on create
//! and on rotation. A rotation keeps the old secret signing for a grace period.
//!
//! Delivery itself (the worker, the lease, signing and sending) lives in `crate::webhooks`;
//! this file holds the rules: who may change what, and the one disable path (with its event
//! and audit record) the worker takes when a receiver stays down past the retry window.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::rand::{SecureRandom, SystemRandom};

use crate::crypto::{Aad, KeyRing, SecretBytes, SecretString};
use crate::store::{DeliveryOutcome, DeliveryRow, SubscriptionRow};

use super::app_events::{app_kinds, integration_kinds};
use super::context::{Audited, Context, Done, check_etag};
use super::error::{Error, Precondition, Result};
use super::model::{Actor, AuditAction, etag};
use super::requests::REQUEST_KINDS;
use super::types::{
    Cursor, MAX_DETAIL_CHARS, Page, PageRequest, TeamId, Text, WebhookName, new_id,
};

/// The prefix of a signing secret, as Standard Webhooks libraries expect it.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a signing secret (the specification asks for 24 to 64).
const SECRET_BYTES: usize = 32;
/// Longest URL accepted, in bytes, as stored (after percent-encoding and normalisation).
pub const MAX_URL_BYTES: usize = 2048;
/// Most event types one subscription may name.
pub const MAX_EVENT_TYPES: usize = 32;
/// The event appended when delivery gives up and disables a subscription. Webhooks may
/// subscribe to it (another subscription of the team hears about it); watch streams do not
/// carry it.
pub const DISABLED_KIND: &str = "WEBHOOK_SUBSCRIPTION_DISABLED";
/// The event of an audit record, appended when the record is sealed into its team's chain
/// (`audit_chain::seal`), for teams with a subscription naming it. Delivered only to the
/// subscriptions that name it (a subscription of every type does not get it): a SIEM opts in.
pub const AUDIT_KIND: &str = "AUDIT_EVENT_RECORDED";
/// Who disables a subscription whose receiver stayed down: the audit record's actor.
pub const DELIVERY_ACTOR: &str = "integration-hub/webhook-delivery";
const SUBSCRIPTIONS_LISTING: &str = "webhookSubscriptions";

/// Every event type a subscription may name.
pub fn known_event_types() -> Vec<&'static str> {
    integration_kinds()
        .chain(app_kinds())
        .chain([DISABLED_KIND, AUDIT_KIND])
        .chain(REQUEST_KINDS)
        .collect()
}

/// The owner a subscription's sealed secret is bound to.
pub(super) fn secret_owner(id: &str) -> String {
    format!("webhookSubscriptions/{id}")
}

/// A receiver's URL: `https://` (or `http://`, which only the dev setting allowing loopback
/// lets through: see `crate::webhooks`), a host, no user information, no fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookUrl(String);

impl WebhookUrl {
    pub fn parse(value: &str) -> std::result::Result<WebhookUrl, String> {
        if value.is_empty() {
            return Err("is required".into());
        }
        if value.len() > MAX_URL_BYTES {
            return Err(format!("must be at most {MAX_URL_BYTES} bytes"));
        }
        let url = reqwest::Url::parse(value).map_err(|_| "is not a valid URL".to_owned())?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err("must be an https:// URL".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry user information".into());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("must name a host".into());
        }
        if url.fragment().is_some() {
            return Err("must not have a fragment".into());
        }
        // What is stored is the normalised URL: percent-encoding can triple its length.
        let stored = url.to_string();
        if stored.len() > MAX_URL_BYTES {
            return Err(format!(
                "must be at most {MAX_URL_BYTES} bytes once percent-encoded"
            ));
        }
        Ok(WebhookUrl(stored))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The event types of a subscription: known stored kinds, no repeats; empty means every
/// type.
pub fn parse_event_types(values: &[String]) -> std::result::Result<Vec<String>, String> {
    if values.len() > MAX_EVENT_TYPES {
        return Err(format!("must name at most {MAX_EVENT_TYPES} types"));
    }
    let known = known_event_types();
    let mut types = Vec::new();
    for value in values {
        if !known.contains(&value.as_str()) {
            return Err("contains an unknown event type".into());
        }
        if !types.contains(value) {
            types.push(value.clone());
        }
    }
    Ok(types)
}

pub type Description = Text<MAX_DETAIL_CHARS>;

/// A new subscription, parsed.
pub struct NewSubscription {
    pub url: WebhookUrl,
    pub event_types: Vec<String>,
    pub description: Description,
    pub enabled: bool,
}

/// Changes to a subscription; `None` leaves a field as it is.
#[derive(Default)]
pub struct SubscriptionChanges {
    pub etag: Option<String>,
    pub url: Option<WebhookUrl>,
    pub event_types: Option<Vec<String>>,
    pub description: Option<Description>,
    pub enabled: Option<bool>,
}

/// A subscription, without its secret.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub name: WebhookName,
    pub url: String,
    pub event_types: Vec<String>,
    pub description: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub creator: String,
    pub create_time: i64,
    pub update_time: i64,
    pub version: i64,
    /// Until when the secret a rotation replaced still signs.
    pub previous_secret_expire_time: Option<i64>,
    /// The last event acknowledged.
    pub position: i64,
    pub failed_attempts: i32,
    pub next_attempt_time: Option<i64>,
}

impl Subscription {
    pub fn from_row(row: &SubscriptionRow) -> Result<Subscription> {
        let team = TeamId::parse(&row.team).map_err(|_| Error::internal("stored team id"))?;
        Ok(Subscription {
            name: WebhookName::new(team, row.id.clone()),
            url: row.url.clone(),
            event_types: serde_json::from_str(&row.event_types)
                .map_err(|e| Error::Internal(anyhow::Error::new(e).context("event types")))?,
            description: row.description.clone(),
            enabled: row.enabled,
            disabled_reason: row.disabled_reason.clone(),
            creator: row.creator.clone(),
            create_time: row.create_time,
            update_time: row.update_time,
            version: row.version,
            previous_secret_expire_time: row.previous_secret_expire_time,
            position: row.position,
            failed_attempts: row.failed_attempts,
            next_attempt_time: row.next_attempt_time,
        })
    }

    pub fn etag(&self) -> String {
        etag(self.version)
    }

    /// Whether the subscription wants events of `kind`.
    pub fn wants(event_types: &[String], kind: &str) -> bool {
        event_types.iter().any(|t| t == kind) || (event_types.is_empty() && kind != AUDIT_KIND)
    }
}

/// One delivery attempt, as recorded.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub seq: i64,
    pub webhook_id: String,
    pub event_type: String,
    pub event_seq: i64,
    pub attempt: i32,
    pub time: i64,
    pub outcome: DeliveryOutcome,
    pub response_code: Option<i32>,
    pub latency_micros: i64,
    pub response_body: String,
    pub error: String,
}

impl Delivery {
    pub(super) fn from_row(row: DeliveryRow) -> Delivery {
        Delivery {
            seq: row.seq,
            webhook_id: row.webhook_id,
            event_type: row.event_type,
            event_seq: row.event_seq,
            attempt: row.attempt,
            time: row.time,
            outcome: row.outcome,
            response_code: row.response_code,
            latency_micros: row.latency_micros,
            response_body: row.response_body,
            error: row.error,
        }
    }
}

/// A fresh signing secret: its raw bytes (the HMAC key) and what the client is shown.
fn new_secret() -> Result<(SecretBytes, SecretString)> {
    let mut bytes = vec![0u8; SECRET_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::internal("no randomness for a signing secret"))?;
    let shown = SecretString::new(format!("{SECRET_PREFIX}{}", STANDARD.encode(&bytes)));
    Ok((SecretBytes::new(bytes), shown))
}

pub(super) fn not_found(name: &WebhookName) -> Error {
    Error::NotFound {
        kind: WebhookName::KIND,
        name: name.to_string(),
    }
}

fn types_json(types: &[String]) -> Result<String> {
    serde_json::to_string(types).map_err(|e| Error::Internal(e.into()))
}

/// Webhook subscriptions (this file) and their deliveries (`webhook_delivery.rs`).
#[derive(Clone)]
pub struct Webhooks {
    ctx: Arc<Context>,
}

impl Webhooks {
    pub(super) fn new(ctx: Arc<Context>) -> Webhooks {
        Webhooks { ctx }
    }

    pub(super) fn ctx(&self) -> &Context {
        &self.ctx
    }

    fn seal_secret(&self, team: &str, id: &str, secret: &SecretBytes) -> Result<(Vec<u8>, i32)> {
        let owner = secret_owner(id);
        let sealed = self.ctx().keys().seal(
            &Aad {
                team,
                owner: &owner,
            },
            secret.expose(),
        )?;
        let version = KeyRing::sealed_key_version(&sealed)? as i32;
        Ok((sealed, version))
    }

    /// Whether a sealed signing secret opens with this server's keys.
    fn secret_opens(&self, team: &str, id: &str, sealed: &[u8]) -> bool {
        let owner = secret_owner(id);
        self.ctx()
            .keys()
            .open(
                &Aad {
                    team,
                    owner: &owner,
                },
                sealed,
            )
            .is_ok()
    }

    /// Adds a subscription; returns it and its signing secret (shown this once). Its
    /// delivery starts after the newest event: it receives what happens from now on.
    #[tracing::instrument(skip_all, fields(team = %team))]
    pub async fn create_webhook_subscription(
        &self,
        actor: &Actor,
        team: TeamId,
        input: NewSubscription,
        max_per_team: u64,
    ) -> Result<(Subscription, SecretString)> {
        let audited = Audited::new(AuditAction::WebhookCreate, &team, team.resource_name());
        self.ctx()
            .write(actor, audited, async move |w| {
                // Read before the write transaction begins (on PostgreSQL a barrier waits for
                // appends in flight).
                let position = self.ctx().store().max_event_seq().await?;
                let tx = w.tx().await?;
                if tx.count_subscriptions(team.as_str()).await? >= max_per_team {
                    return Err(Error::ResourceExhausted(format!(
                        "a team may have at most {max_per_team} webhook subscriptions"
                    )));
                }
                let id = new_id();
                let (secret, shown) = new_secret()?;
                let (sealed, key_version) = self.seal_secret(team.as_str(), &id, &secret)?;
                let now = self.ctx().now();
                let row = SubscriptionRow {
                    id: id.clone(),
                    team: team.as_str().to_owned(),
                    url: input.url.0,
                    event_types: types_json(&input.event_types)?,
                    description: input.description.into_inner(),
                    enabled: input.enabled,
                    disabled_reason: None,
                    secret: sealed,
                    key_version,
                    previous_secret: None,
                    previous_key_version: None,
                    previous_secret_expire_time: None,
                    creator: actor.subject.clone(),
                    version: 1,
                    create_time: now,
                    update_time: now,
                    position,
                    lease_owner: None,
                    lease_expire_time: None,
                    failing_since: None,
                    failed_attempts: 0,
                    next_attempt_time: None,
                };
                w.tx().await?.insert_subscription(row.clone()).await?;
                w.set_resource(WebhookName::new(team.clone(), id).to_string());
                Ok(Done::Commit((Subscription::from_row(&row)?, shown)))
            })
            .await
    }

    pub async fn get_webhook_subscription(
        &self,
        actor: &Actor,
        name: &WebhookName,
    ) -> Result<Subscription> {
        if !actor.sees(&name.team) {
            return Err(not_found(name));
        }
        let row = self
            .ctx()
            .store()
            .get_subscription(name.team.as_str(), &name.id)
            .await?
            .ok_or_else(|| not_found(name))?;
        Subscription::from_row(&row)
    }

    pub async fn list_webhook_subscriptions(
        &self,
        team: &TeamId,
        page: PageRequest,
    ) -> Result<Page<Subscription>> {
        let pages = self.ctx().pages(team, SUBSCRIPTIONS_LISTING);
        let after = pages.after(&page)?.map(|t| (t.create_time, t.id));
        let mut rows = self
            .ctx()
            .store()
            .list_subscriptions(team.as_str(), after, page.size.read_limit())
            .await?;
        let next_page_token = page.size.cut(&mut rows, |last| {
            pages.token_after(last.create_time, &last.id)
        });
        Ok(Page {
            items: rows
                .iter()
                .map(Subscription::from_row)
                .collect::<Result<_>>()?,
            next_page_token,
        })
    }

    /// Reads a subscription the caller may see and locks it until commit; another team's
    /// answers exactly as a missing one (rule 7 of docs/rules.md).
    async fn lock_webhook(
        &self,
        w: &mut super::context::Write<'_>,
        actor: &Actor,
        name: &WebhookName,
    ) -> Result<SubscriptionRow> {
        if !actor.sees(&name.team) {
            return Err(not_found(name));
        }
        w.tx()
            .await?
            .lock_subscription(name.team.as_str(), &name.id)
            .await?
            .ok_or_else(|| not_found(name))
    }

    /// Writes a changed subscription (its version moves), or ABORTED when it changed
    /// concurrently.
    pub(super) async fn save_webhook(
        w: &mut super::context::Write<'_>,
        mut row: SubscriptionRow,
        now: i64,
    ) -> Result<SubscriptionRow> {
        let expected = row.version;
        row.version += 1;
        row.update_time = now;
        if !w
            .tx()
            .await?
            .update_subscription(row.clone(), expected)
            .await?
        {
            return Err(Error::EtagMismatch(
                "the webhook subscription changed concurrently; read it again".into(),
            ));
        }
        Ok(row)
    }

    #[tracing::instrument(skip_all, fields(webhook = %name))]
    pub async fn update_webhook_subscription(
        &self,
        actor: &Actor,
        name: &WebhookName,
        changes: SubscriptionChanges,
    ) -> Result<Subscription> {
        let audited = Audited::new(AuditAction::WebhookUpdate, &name.team, name.to_string());
        self.ctx()
            .write(actor, audited, async move |w| {
                let mut row = self.lock_webhook(w, actor, name).await?;
                check_etag(&changes.etag, row.version)?;
                if let Some(url) = changes.url {
                    row.url = url.0;
                }
                if let Some(types) = &changes.event_types {
                    row.event_types = types_json(types)?;
                }
                if let Some(description) = changes.description {
                    row.description = description.into_inner();
                }
                if let Some(enabled) = changes.enabled {
                    if enabled && !row.enabled {
                        // Enabled again: resume from the last acknowledged event, afresh.
                        row.disabled_reason = None;
                        (
                            row.failing_since,
                            row.failed_attempts,
                            row.next_attempt_time,
                        ) = (None, 0, None);
                        w.tx()
                            .await?
                            .reset_delivery(name.team.as_str(), &name.id, None)
                            .await?;
                    }
                    row.enabled = enabled;
                }
                let row = Self::save_webhook(w, row, self.ctx().now()).await?;
                Ok(Done::Commit(Subscription::from_row(&row)?))
            })
            .await
    }

    #[tracing::instrument(skip_all, fields(webhook = %name))]
    pub async fn delete_webhook_subscription(
        &self,
        actor: &Actor,
        name: &WebhookName,
        etag: Option<String>,
    ) -> Result<()> {
        let audited = Audited::new(AuditAction::WebhookDelete, &name.team, name.to_string());
        self.ctx()
            .write(actor, audited, async move |w| {
                let row = self.lock_webhook(w, actor, name).await?;
                check_etag(&etag, row.version)?;
                if !w
                    .tx()
                    .await?
                    .delete_subscription(name.team.as_str(), &name.id)
                    .await?
                {
                    return Err(Error::internal("locked webhook subscription vanished"));
                }
                Ok(Done::Commit(()))
            })
            .await
    }

    /// Replaces the signing secret; the old one keeps signing alongside for `grace`
    /// microseconds (0: not at all, nor when it no longer opens: sealed with a key this
    /// server does not hold). Returns the new secret, shown this once.
    #[tracing::instrument(skip_all, fields(webhook = %name))]
    pub async fn rotate_webhook_secret(
        &self,
        actor: &Actor,
        name: &WebhookName,
        grace_micros: i64,
    ) -> Result<(Subscription, SecretString)> {
        let audited = Audited::new(
            AuditAction::WebhookRotateSecret,
            &name.team,
            name.to_string(),
        );
        self.ctx()
            .write(actor, audited, async move |w| {
                let mut row = self.lock_webhook(w, actor, name).await?;
                let now = self.ctx().now();
                let (secret, shown) = new_secret()?;
                let (sealed, key_version) = self.seal_secret(&row.team, &row.id, &secret)?;
                if grace_micros > 0 && self.secret_opens(&row.team, &row.id, &row.secret) {
                    row.previous_secret = Some(std::mem::replace(&mut row.secret, sealed));
                    row.previous_key_version =
                        Some(std::mem::replace(&mut row.key_version, key_version));
                    row.previous_secret_expire_time = Some(now.saturating_add(grace_micros));
                } else {
                    row.secret = sealed;
                    row.key_version = key_version;
                    row.previous_secret = None;
                    row.previous_key_version = None;
                    row.previous_secret_expire_time = None;
                }
                let row = Self::save_webhook(w, row, now).await?;
                Ok(Done::Commit((Subscription::from_row(&row)?, shown)))
            })
            .await
    }

    /// Delivers again every event after `start` (a cursor of the event log): the
    /// subscription's position moves back (or forward) to it, and its failures are cleared.
    #[tracing::instrument(skip_all, fields(webhook = %name))]
    pub async fn redeliver_webhook_events(
        &self,
        actor: &Actor,
        name: &WebhookName,
        start: Cursor,
    ) -> Result<Subscription> {
        let audited = Audited::new(AuditAction::WebhookRedeliver, &name.team, name.to_string());
        self.ctx()
            .write(actor, audited, async move |w| {
                if start.0 > self.ctx().store().max_event_seq().await? {
                    return Err(Error::invalid(
                        "start_cursor",
                        "is ahead of the event log (a cursor of another deployment?)",
                    ));
                }
                if start.0 < self.ctx().store().pruned_through().await? {
                    return Err(Error::precondition(
                        Precondition::CursorExpired,
                        "the cursor is older than the event retention",
                    ));
                }
                let row = self.lock_webhook(w, actor, name).await?;
                w.tx()
                    .await?
                    .reset_delivery(name.team.as_str(), &name.id, Some(start.0))
                    .await?;
                let mut row = Self::save_webhook(w, row, self.ctx().now()).await?;
                row.position = start.0;
                (
                    row.failing_since,
                    row.failed_attempts,
                    row.next_attempt_time,
                ) = (None, 0, None);
                Ok(Done::Commit(Subscription::from_row(&row)?))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_or_https_with_a_host_and_no_user_information() {
        assert!(WebhookUrl::parse("https://hooks.example.com/in?x=1").is_ok());
        assert!(WebhookUrl::parse("http://127.0.0.1:8080/").is_ok());
        for bad in [
            "",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "not a url",
            "file:///etc/passwd",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(WebhookUrl::parse(&long).is_err());
    }

    /// The limit holds for what is stored: characters that are percent-encoded (up to three
    /// times their bytes) count as encoded.
    #[test]
    fn the_url_limit_holds_for_the_stored_percent_encoded_url() {
        let base = "https://example.com/";
        for filler in ["é", " x", "\"", "<"] {
            let count = (MAX_URL_BYTES - base.len()) / filler.len();
            let url = format!("{base}{}", filler.repeat(count));
            assert!(
                url.len() <= MAX_URL_BYTES,
                "{filler:?}: the input is within the limit"
            );
            let err = WebhookUrl::parse(&url).expect_err(filler);
            assert!(err.contains("percent-encoded"), "{err}");
        }
        // At the limit once encoded: accepted, and stored as encoded.
        let count = (MAX_URL_BYTES - base.len()) / "%C3%A9".len();
        let url = WebhookUrl::parse(&format!("{base}{}", "é".repeat(count))).expect("fits");
        assert!(url.as_str().len() <= MAX_URL_BYTES);
        assert!(url.as_str().contains("%C3%A9"));
        let query = format!("{base}?q={}", "é".repeat(MAX_URL_BYTES / 2 - 20));
        assert!(WebhookUrl::parse(&query).is_err(), "the query counts too");
    }

    #[test]
    fn event_types_are_known_kinds_without_repeats() {
        let types = parse_event_types(&[
            "INTEGRATION_BROKEN".into(),
            "INSTALLED_APP_DELETED".into(),
            "INTEGRATION_BROKEN".into(),
        ])
        .unwrap();
        assert_eq!(types, ["INTEGRATION_BROKEN", "INSTALLED_APP_DELETED"]);
        assert!(parse_event_types(&["NOPE".into()]).is_err());
        assert!(Subscription::wants(&[], "INTEGRATION_CREATED"));
        assert!(!Subscription::wants(&types, "INTEGRATION_CREATED"));
    }

    #[test]
    fn a_secret_is_whsec_and_the_base64_of_32_random_bytes() {
        let (raw, shown) = new_secret().unwrap();
        let encoded = shown.expose().strip_prefix(SECRET_PREFIX).unwrap();
        assert_eq!(STANDARD.decode(encoded).unwrap(), raw.expose());
        assert_eq!(raw.expose().len(), 32);
        assert_ne!(new_secret().unwrap().1.expose(), shown.expose());
        assert_eq!(format!("{shown:?}"), "[REDACTED]");
    }
}
