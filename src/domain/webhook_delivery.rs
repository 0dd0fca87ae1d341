//! What delivery needs of webhook subscriptions: the keys that sign now, the record of
//! attempts, and the one disable path (with its event and audit record) the worker takes
//! when a receiver stays down past the retry window. The rules of managing subscriptions
//! are in [`super::webhooks`].

use crate::crypto::{Aad, SecretBytes};
use crate::store::{EventRow, SubscriptionRow};

use super::context::{Audited, Done};
use super::error::Result;
use super::model::{Actor, AuditAction, Role};
use super::types::{Page, PageRequest, TeamId, WebhookName, new_id};
use super::webhooks::Webhooks;
use super::webhooks::{DELIVERY_ACTOR, DISABLED_KIND, Delivery, not_found, secret_owner};

impl Webhooks {
    /// The keys a delivery is signed with now: the current secret, and the one a rotation
    /// replaced while its grace period lasts (left out, with a warning, when it no longer
    /// opens: the current one still signs).
    pub fn webhook_signing_keys(
        &self,
        row: &SubscriptionRow,
        now: i64,
    ) -> Result<Vec<SecretBytes>> {
        let owner = secret_owner(&row.id);
        let aad = Aad {
            team: &row.team,
            owner: &owner,
        };
        let mut keys = vec![self.ctx().keys().open(&aad, &row.secret)?];
        if let (Some(old), Some(until)) = (&row.previous_secret, row.previous_secret_expire_time)
            && until > now
        {
            match self.ctx().keys().open(&aad, old) {
                Ok(key) => keys.push(key),
                Err(err) => {
                    tracing::warn!(webhook = %row.id, error = %err, "the previous signing secret does not open: signing with the current one only");
                }
            }
        }
        Ok(keys)
    }

    /// What SendTestWebhook needs of a subscription the caller may see: its URL and the
    /// keys that sign now.
    pub async fn webhook_test_material(
        &self,
        actor: &Actor,
        name: &WebhookName,
        now: i64,
    ) -> Result<(String, Vec<SecretBytes>)> {
        if !actor.sees(&name.team) {
            return Err(not_found(name));
        }
        let row = self
            .ctx()
            .store()
            .get_subscription(name.team.as_str(), &name.id)
            .await?
            .ok_or_else(|| not_found(name))?;
        Ok((row.url.clone(), self.webhook_signing_keys(&row, now)?))
    }

    /// A subscription's delivery attempts, newest first.
    pub async fn list_webhook_deliveries(
        &self,
        actor: &Actor,
        name: &WebhookName,
        page: PageRequest,
    ) -> Result<Page<Delivery>> {
        self.get_webhook_subscription(actor, name).await?;
        let pages = self
            .ctx()
            .pages(&name.team, &format!("webhookDeliveries:{}", name.id));
        let before = pages.after_seq(&page)?.map(|t| t.0);
        let mut rows = self
            .ctx()
            .store()
            .list_deliveries(name.team.as_str(), &name.id, before, page.size.read_limit())
            .await?;
        let next_page_token = page
            .size
            .cut(&mut rows, |last| pages.token_after_seq(last.seq));
        Ok(Page {
            items: rows.into_iter().map(Delivery::from_row).collect(),
            next_page_token,
        })
    }

    /// Disables a subscription whose receiver stayed down past the retry window, with a
    /// WEBHOOK_SUBSCRIPTION_DISABLED event and an audit record (by the delivery worker).
    /// Nothing when it changed meanwhile (disabled, deleted, or its position moved).
    pub async fn disable_webhook(
        &self,
        team: &TeamId,
        id: &str,
        position: i64,
        reason: &str,
    ) -> Result<bool> {
        let actor = Actor {
            subject: DELIVERY_ACTOR.into(),
            team: Some(team.clone()),
            role: Role::Service,
            request_id: new_id(),
            reach: None,
            groups: Vec::new(),
        };
        let name = WebhookName::new(team.clone(), id.to_owned());
        let audited = Audited::new(AuditAction::WebhookUpdate, team, name.to_string());
        let actor_ref = &actor;
        self.ctx()
            .write(&actor, audited, async move |w| {
                let Some(mut row) = w.tx().await?.lock_subscription(team.as_str(), id).await?
                else {
                    return Ok(Done::Unchanged(false));
                };
                if !row.enabled || row.position != position {
                    return Ok(Done::Unchanged(false));
                }
                let now = self.ctx().now();
                row.enabled = false;
                row.disabled_reason = Some(reason.to_owned());
                let row = Self::save_webhook(w, row, now).await?;
                let snapshot = serde_json::json!({
                    "name": name.to_string(),
                    "url": row.url,
                    "reason": reason,
                });
                w.raw_event(EventRow {
                    seq: 0,
                    event_id: new_id(),
                    team: team.as_str().to_owned(),
                    kind: DISABLED_KIND.to_owned(),
                    integration_id: String::new(),
                    installed_app_id: None,
                    reason: Some(reason.to_owned()),
                    actor: actor_ref.subject.clone(),
                    time: now,
                    snapshot: snapshot.to_string(),
                });
                Ok(Done::Commit(true))
            })
            .await
    }
}
