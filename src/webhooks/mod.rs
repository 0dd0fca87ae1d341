//! Webhooks: the events of the outbox pushed to HTTPS receivers, signed to the Standard
//! Webhooks specification.
//!
//! - [`settings`]: the `INTEGRATION_HUB_WEBHOOK_*` settings.
//! - [`outbound`]: where webhooks may go (no internal addresses, checked at connect), and
//!   the HTTP sender (no redirects, timeouts, response caps).
//! - [`payload`]: the JSON body and the `webhook-signature`.
//! - [`worker`]: the delivery loop (leases, order, retries, disable, each team's share of the
//!   slots).
//!
//! May import `domain`, `store`, `events` and `metrics`.

pub mod outbound;
pub mod payload;
pub mod settings;
pub mod worker;

use std::sync::Arc;

use tokio::sync::watch;

pub use outbound::{Attempt, Outcome, Policy, Refused, Sender};
pub use settings::WebhookArgs;

use crate::domain::Hub;
use crate::domain::hub::{Clock, SystemClock};
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::store::Store;

/// The wall clock, in microseconds since the epoch.
pub type Now = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Builds the sender and starts this replica's delivery worker (it stops when `stop`
/// flips); returns the sender, for SendTestWebhook and the checks at create.
pub fn start(
    hub: Arc<Hub>,
    store: Store,
    bus: EventBus,
    metrics: Arc<Metrics>,
    settings: WebhookArgs,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(Sender, Now)> {
    if settings.webhook_allow_loopback {
        tracing::warn!(
            "INTEGRATION_HUB_WEBHOOK_ALLOW_LOOPBACK is set: webhooks may go to loopback over http (development only)"
        );
    }
    let policy = Policy::new(settings.webhook_allow_loopback);
    let sender = Sender::new(policy, settings.timeout())?;
    let now: Now = Arc::new(|| SystemClock.now_micros());
    let worker = worker::Worker::new(hub, store, sender.clone(), metrics, settings, now.clone());
    tokio::spawn(worker.run(bus, stop));
    Ok((sender, now))
}
