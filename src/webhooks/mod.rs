//! Webhooks: the events of the outbox pushed to HTTPS receivers, signed to the Standard
//! Webhooks specification.
//!
//! - [`settings`]: the `INTEGRATION_HUB_WEBHOOK_*` settings.
//! - [`sender`]: the HTTP sender, under the outbound policy for receivers (no internal
//!   addresses, checked at connect; no redirects; timeouts; response caps), and what an
//!   attempt gives.
//! - [`payload`]: the JSON body and the `webhook-signature`.
//! - [`worker`]: the delivery loop (leases, order, retries, disable, each team's share of the
//!   slots).
//!
//! May import `domain`, `store`, `events`, `metrics` and `outbound`.

pub mod payload;
pub mod sender;
pub mod settings;
pub mod worker;

use std::sync::Arc;

use tokio::sync::watch;

pub use crate::outbound::Refused;
pub use sender::{Attempt, Outcome, Sender};
pub use settings::WebhookArgs;

use crate::domain::hub::{Clock, SystemClock};
use crate::domain::model::Actor;
use crate::domain::types::{WebhookName, new_id};
use crate::domain::{Hub, Result};
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::store::Store;

/// The wall clock, in microseconds since the epoch.
pub type Now = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Builds the sender and starts this replica's delivery worker (it stops when `stop`
/// flips); returns what `WebhookService` needs besides the domain.
pub fn start(
    hub: Arc<Hub>,
    store: Store,
    bus: EventBus,
    metrics: Arc<Metrics>,
    settings: WebhookArgs,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Outgoing> {
    if settings.webhook_allow_loopback {
        tracing::warn!(
            "INTEGRATION_HUB_WEBHOOK_ALLOW_LOOPBACK is set: webhooks may go to loopback over http (development only)"
        );
    }
    let sender = Sender::new(settings.webhook_allow_loopback, settings.timeout())?;
    let now: Now = Arc::new(|| SystemClock.now_micros());
    let worker = worker::Worker::new(
        hub.clone(),
        store,
        sender.clone(),
        metrics,
        settings,
        now.clone(),
    );
    tokio::spawn(worker.run(bus, stop));
    Ok(Outgoing { hub, sender, now })
}

/// What `WebhookService` asks of webhooks: whether a URL may receive them (at create and
/// update), and a test delivery to a subscription.
#[derive(Clone)]
pub struct Outgoing {
    hub: Arc<Hub>,
    sender: Sender,
    now: Now,
}

/// A test delivery: its `webhook-id`, when it was sent, and how it went.
pub struct TestDelivery {
    pub id: String,
    pub time: i64,
    pub attempt: Attempt,
}

impl Outgoing {
    /// Whether `url` may receive webhooks now (resolved now: see [`sender`]).
    pub async fn check_destination(&self, url: &str) -> std::result::Result<(), Refused> {
        self.sender.check_destination(url).await
    }

    /// Signs a test event with the keys of `name` that sign now and sends it once. Nothing
    /// is recorded: the attempt is the answer.
    pub async fn send_test(&self, actor: &Actor, name: &WebhookName) -> Result<TestDelivery> {
        let now = (self.now)();
        let (url, keys) = self
            .hub
            .webhooks()
            .webhook_test_material(actor, name, now)
            .await?;
        let id = format!("msg_test_{}", new_id());
        let timestamp = now.div_euclid(1_000_000);
        let body = payload::test_body(&name.to_string(), now);
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.expose()).collect();
        let signature = payload::signature(&keys, &id, timestamp, &body);
        let attempt = self
            .sender
            .send(&url, &id, timestamp, &signature, body)
            .await;
        Ok(TestDelivery {
            id,
            time: now,
            attempt,
        })
    }
}
