//! `WebhookService`: subscriptions, their secrets, their deliveries.

use std::sync::Arc;
use std::time::Duration;

use tonic::{Request, Response, Status};

use super::accept;
use super::convert::timestamp;
use super::parse::{
    CreateWebhook, DeleteWebhook, ListDeliveries, ListWebhooks, Redeliver, RotateWebhook,
    UpdateWebhook,
};
use crate::domain::model::AuditAction;
use crate::domain::tokens::TeamCursors;
use crate::domain::types::WebhookName;
use crate::domain::webhooks::{Delivery, Subscription};
use crate::domain::{Error, Hub};
use crate::pb;
use crate::pb::webhook_service_server::WebhookService;
use crate::webhooks::{Outcome, Outgoing, TestDelivery};

pub struct Webhooks {
    hub: Arc<Hub>,
    outgoing: Outgoing,
    max_per_team: u64,
    default_grace: Duration,
}

impl Webhooks {
    pub fn new(
        hub: Arc<Hub>,
        outgoing: Outgoing,
        max_per_team: u64,
        default_grace: Duration,
    ) -> Self {
        Webhooks {
            hub,
            outgoing,
            max_per_team,
            default_grace,
        }
    }

    /// INVALID_ARGUMENT when `url` may not receive webhooks (resolved now: see
    /// `crate::webhooks::sender`).
    async fn check_destination(&self, url: &str) -> Result<(), Status> {
        self.outgoing
            .check_destination(url)
            .await
            .map_err(|refused| Error::invalid("webhook_subscription.url", refused.0).into())
    }
}

fn subscription(hub: &Hub, s: &Subscription) -> pb::WebhookSubscription {
    pb::WebhookSubscription {
        name: s.name.to_string(),
        url: s.url.clone(),
        event_types: s.event_types.clone(),
        description: s.description.clone(),
        enabled: s.enabled,
        disabled_reason: s.disabled_reason.clone().unwrap_or_default(),
        creator: s.creator.clone(),
        create_time: Some(timestamp(s.create_time)),
        update_time: Some(timestamp(s.update_time)),
        etag: s.etag(),
        previous_secret_expire_time: s.previous_secret_expire_time.map(timestamp),
        delivered_cursor: hub.cursors(Some(&s.name.team)).encode(s.position),
        failed_attempts: s.failed_attempts,
        next_attempt_time: s.next_attempt_time.map(timestamp),
    }
}

fn outcome(outcome: Outcome) -> pb::WebhookDeliveryOutcome {
    use pb::WebhookDeliveryOutcome as O;
    match outcome {
        Outcome::Delivered => O::Delivered,
        Outcome::HttpError => O::HttpError,
        Outcome::Timeout => O::Timeout,
        Outcome::ConnectionError => O::ConnectionError,
        Outcome::DestinationRefused => O::DestinationRefused,
        Outcome::NotSent => O::NotSent,
    }
}

fn duration(micros: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: micros.div_euclid(1_000_000),
        nanos: (micros.rem_euclid(1_000_000) * 1000) as i32,
    }
}

fn delivery(cursors: &TeamCursors, d: &Delivery) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        webhook_id: d.webhook_id.clone(),
        event_type: d.event_type.clone(),
        event_cursor: cursors.encode(d.event_seq),
        attempt: d.attempt,
        time: Some(timestamp(d.time)),
        outcome: outcome(d.outcome) as i32,
        response_code: d.response_code.unwrap_or_default(),
        latency: Some(duration(d.latency_micros)),
        response_body: d.response_body.clone(),
        error: d.error.clone(),
    }
}

fn test_delivery(test: TestDelivery) -> pb::WebhookDelivery {
    let a = &test.attempt;
    pb::WebhookDelivery {
        webhook_id: test.id,
        event_type: crate::webhooks::payload::TEST_KIND.to_owned(),
        event_cursor: String::new(),
        attempt: 1,
        time: Some(timestamp(test.time)),
        outcome: outcome(a.outcome) as i32,
        response_code: a.response_code.map(i32::from).unwrap_or_default(),
        latency: Some(duration(
            i64::try_from(a.latency.as_micros()).unwrap_or(i64::MAX),
        )),
        response_body: a.response_body.clone(),
        error: a.error.clone(),
    }
}

#[tonic::async_trait]
impl WebhookService for Webhooks {
    async fn create_webhook_subscription(
        &self,
        request: Request<pb::CreateWebhookSubscriptionRequest>,
    ) -> Result<Response<pb::CreateWebhookSubscriptionResponse>, Status> {
        let (actor, req): (_, CreateWebhook) = accept(request)?;
        let team = actor.team_of_parent(&req.parent)?;
        self.check_destination(req.input.url.as_str()).await?;
        let (sub, secret) = self
            .hub
            .webhooks()
            .create_webhook_subscription(&actor, team, req.input, self.max_per_team)
            .await?;
        Ok(Response::new(pb::CreateWebhookSubscriptionResponse {
            webhook_subscription: Some(subscription(&self.hub, &sub)),
            secret: secret.expose().to_owned(),
        }))
    }

    async fn get_webhook_subscription(
        &self,
        request: Request<pb::GetWebhookSubscriptionRequest>,
    ) -> Result<Response<pb::WebhookSubscription>, Status> {
        let (actor, name): (_, WebhookName) = accept(request)?;
        (self.hub.audit())
            .refuse_if_limited(
                &actor,
                AuditAction::WebhookGet,
                Some(&name.team),
                name.to_string(),
            )
            .await?;
        let sub = self
            .hub
            .webhooks()
            .get_webhook_subscription(&actor, &name)
            .await?;
        Ok(Response::new(subscription(&self.hub, &sub)))
    }

    async fn list_webhook_subscriptions(
        &self,
        request: Request<pb::ListWebhookSubscriptionsRequest>,
    ) -> Result<Response<pb::ListWebhookSubscriptionsResponse>, Status> {
        let (actor, req): (_, ListWebhooks) = accept(request)?;
        let team = actor.team_of_parent(&req.parent)?;
        let listed = format!("teams/{team}/webhookSubscriptions");
        (self.hub.audit())
            .refuse_if_limited(&actor, AuditAction::WebhookList, Some(&team), listed)
            .await?;
        let page = self
            .hub
            .webhooks()
            .list_webhook_subscriptions(&team, req.page)
            .await?;
        Ok(Response::new(pb::ListWebhookSubscriptionsResponse {
            webhook_subscriptions: page
                .items
                .iter()
                .map(|s| subscription(&self.hub, s))
                .collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_webhook_subscription(
        &self,
        request: Request<pb::UpdateWebhookSubscriptionRequest>,
    ) -> Result<Response<pb::WebhookSubscription>, Status> {
        let (actor, req): (_, UpdateWebhook) = accept(request)?;
        if let Some(url) = &req.changes.url {
            // Another team's name answers NOT_FOUND before its URL is looked at.
            self.hub
                .webhooks()
                .get_webhook_subscription(&actor, &req.name)
                .await?;
            self.check_destination(url.as_str()).await?;
        }
        let sub = self
            .hub
            .webhooks()
            .update_webhook_subscription(&actor, &req.name, req.changes)
            .await?;
        Ok(Response::new(subscription(&self.hub, &sub)))
    }

    async fn delete_webhook_subscription(
        &self,
        request: Request<pb::DeleteWebhookSubscriptionRequest>,
    ) -> Result<Response<()>, Status> {
        let (actor, req): (_, DeleteWebhook) = accept(request)?;
        self.hub
            .webhooks()
            .delete_webhook_subscription(&actor, &req.name, req.etag)
            .await?;
        Ok(Response::new(()))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::RotateWebhookSecretResponse>, Status> {
        let (actor, req): (_, RotateWebhook) = accept(request)?;
        let grace = req.grace.unwrap_or(self.default_grace);
        let grace = i64::try_from(grace.as_micros()).unwrap_or(i64::MAX);
        let (sub, secret) = self
            .hub
            .webhooks()
            .rotate_webhook_secret(&actor, &req.name, grace)
            .await?;
        Ok(Response::new(pb::RotateWebhookSecretResponse {
            webhook_subscription: Some(subscription(&self.hub, &sub)),
            secret: secret.expose().to_owned(),
        }))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let (actor, req): (_, ListDeliveries) = accept(request)?;
        let (team, resource) = (&req.name.team, req.name.to_string());
        (self.hub.audit())
            .refuse_if_limited(
                &actor,
                AuditAction::WebhookListDeliveries,
                Some(team),
                resource,
            )
            .await?;
        let page = self
            .hub
            .webhooks()
            .list_webhook_deliveries(&actor, &req.name, req.page)
            .await?;
        let cursors = self.hub.cursors(Some(&req.name.team));
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: page.items.iter().map(|d| delivery(&cursors, d)).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn redeliver_webhook_events(
        &self,
        request: Request<pb::RedeliverWebhookEventsRequest>,
    ) -> Result<Response<pb::WebhookSubscription>, Status> {
        let (actor, req): (_, Redeliver) = accept(request)?;
        let start = self
            .hub
            .cursors(Some(&req.name.team))
            .open("start_cursor", &req.start_cursor)?
            .ok_or_else(|| Error::invalid("start_cursor", "is required"))?;
        let sub = self
            .hub
            .webhooks()
            .redeliver_webhook_events(&actor, &req.name, start)
            .await?;
        Ok(Response::new(subscription(&self.hub, &sub)))
    }

    async fn send_test_webhook(
        &self,
        request: Request<pb::SendTestWebhookRequest>,
    ) -> Result<Response<pb::WebhookDelivery>, Status> {
        let (actor, name): (_, WebhookName) = accept(request)?;
        let test = self.outgoing.send_test(&actor, &name).await?;
        Ok(Response::new(test_delivery(test)))
    }
}
