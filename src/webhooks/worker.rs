//! The delivery worker: finds subscriptions with events to deliver, takes their lease, and
//! delivers their events one at a time, in order, each until the receiver acknowledges it.
//!
//! At least once: the position moves only after a 2xx (or past events the subscription does
//! not want), so a replica killed between the send and the acknowledgement sends that event
//! again, with the same `webhook-id`, from wherever the lease goes next. In order: a
//! subscription has one deliverer at a time (the lease, and at most one task per
//! subscription in this replica), and it does not pass an event until the event is
//! acknowledged. A failure waits out the backoff (the lease is released meanwhile); past
//! the retry window the subscription is disabled.
//!
//! Fair between teams: a replica delivers to at most `INTEGRATION_HUB_WEBHOOK_CONCURRENCY`
//! subscriptions at once, and to at most `INTEGRATION_HUB_WEBHOOK_TEAM_CONCURRENCY` of one
//! team ([`Slots`]); a team at its share is not even read among the due subscriptions, so
//! the slow receivers of one team (each held at most the timeout, the answer's body
//! included) never keep another team's deliveries waiting.
//!
//! Every attempt ends in a record, a backoff or a disable: an event that cannot be signed
//! (a secret that does not open) is a NOT_SENT attempt, and a record that cannot be stored
//! is logged while the attempt's outcome still moves the subscription on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::WebhookArgs;
use super::payload::{event_body, signature, webhook_id};
use super::sender::{Attempt, Outcome, Sender};
use crate::domain::types::TeamId;
use crate::domain::webhooks::Subscription;
use crate::domain::{Error, Hub, Result};
use crate::events::EventBus;
use crate::metrics::Metrics;
use crate::store::{DeliveryRow, EventRow, Failure, Store, SubscriptionRow};

/// Events read per query while delivering.
const READ_CHUNK: u64 = 100;
/// Subscriptions looked at per poll.
const DUE_CHUNK: u64 = 100;

/// The subscriptions this replica delivers to now, and their teams: at most `total`, and at
/// most `per_team` of one team.
struct Slots {
    total: usize,
    per_team: usize,
    /// Subscription id -> team.
    active: Mutex<HashMap<String, String>>,
}

impl Slots {
    fn new(total: u64, per_team: u64) -> Slots {
        let total = usize::try_from(total).unwrap_or(1).max(1);
        Slots {
            total,
            per_team: usize::try_from(per_team).unwrap_or(1).clamp(1, total),
            active: Mutex::default(),
        }
    }

    fn active(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The teams holding their whole share.
    fn full_teams(&self) -> Vec<String> {
        let mut held: HashMap<&str, usize> = HashMap::new();
        let active = self.active();
        for team in active.values() {
            *held.entry(team).or_default() += 1;
        }
        held.into_iter()
            .filter(|(_, n)| *n >= self.per_team)
            .map(|(team, _)| team.to_owned())
            .collect()
    }

    /// Takes a slot for subscription `id` of `team`: `None` when it is being delivered
    /// already, or when the replica or the team has no slot free.
    fn take(self: &Arc<Self>, id: &str, team: &str) -> Option<Slot> {
        let mut active = self.active();
        if active.len() >= self.total
            || active.contains_key(id)
            || active.values().filter(|t| *t == team).count() >= self.per_team
        {
            return None;
        }
        active.insert(id.to_owned(), team.to_owned());
        Some(Slot {
            slots: Arc::clone(self),
            id: id.to_owned(),
        })
    }

    fn is_full(&self) -> bool {
        self.active().len() >= self.total
    }
}

/// A slot held; given back when dropped.
struct Slot {
    slots: Arc<Slots>,
    id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.active().remove(&self.id);
    }
}

/// What every delivery task shares.
#[derive(Clone)]
pub struct Worker {
    pub hub: Arc<Hub>,
    pub store: Store,
    pub sender: Sender,
    pub metrics: Arc<Metrics>,
    pub args: WebhookArgs,
    /// This replica's lease owner id: new at every start, so a restarted replica does not
    /// mistake a dead one's lease for its own.
    pub owner: String,
    pub now: Arc<dyn Fn() -> i64 + Send + Sync>,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// A number in [0, 1) for jitter.
fn jitter() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

impl Worker {
    pub fn new(
        hub: Arc<Hub>,
        store: Store,
        sender: Sender,
        metrics: Arc<Metrics>,
        args: WebhookArgs,
        now: Arc<dyn Fn() -> i64 + Send + Sync>,
    ) -> Worker {
        Worker {
            hub,
            store,
            sender,
            metrics,
            args,
            owner: crate::domain::types::new_id(),
            now,
        }
    }

    /// Polls for due subscriptions until `stop` flips; woken early by every published batch.
    pub async fn run(self, bus: EventBus, mut stop: watch::Receiver<bool>) {
        let slots = Arc::new(Slots::new(
            self.args.webhook_concurrency,
            self.args.webhook_team_concurrency,
        ));
        let mut batches = bus.subscribe();
        let mut pruned_at = 0;
        loop {
            let now = (self.now)();
            if now - pruned_at > 60_000_000 {
                pruned_at = now;
                let retention = micros(Duration::from_secs(
                    self.args.webhook_delivery_retention_secs,
                ));
                if let Err(err) = self.store.prune_deliveries(now - retention).await {
                    tracing::warn!(error = %anyhow::Error::from(err), "pruning webhook deliveries failed");
                }
            }
            if let Err(err) = self.start_due(bus.position(), &slots, &stop).await {
                tracing::warn!(error = %anyhow::Error::from(err), "looking for webhook deliveries failed");
            }
            tokio::select! {
                _ = batches.recv() => {}
                _ = tokio::time::sleep(self.args.poll()) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Starts a task for each due subscription that has a slot (see [`Slots`]) and whose
    /// lease this replica wins.
    async fn start_due(
        &self,
        newest: i64,
        slots: &Arc<Slots>,
        stop: &watch::Receiver<bool>,
    ) -> Result<()> {
        if slots.is_full() {
            return Ok(());
        }
        let now = (self.now)();
        let due = self
            .store
            .due_subscriptions(&self.owner, newest, now, &slots.full_teams(), DUE_CHUNK)
            .await?;
        for row in due {
            if slots.is_full() {
                return Ok(());
            }
            let Some(slot) = slots.take(&row.id, &row.team) else {
                continue;
            };
            let until = now.saturating_add(micros(self.args.lease()));
            if !self
                .store
                .take_webhook_lease(&row.id, &self.owner, now, until)
                .await?
            {
                continue;
            }
            let worker = self.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let id = row.id.clone();
                if let Err(err) = worker.deliver(row, stop).await {
                    tracing::warn!(error = %anyhow::Error::from(err), webhook = %id, "webhook delivery stopped");
                }
                let _ = worker.store.release_webhook_lease(&id, &worker.owner).await;
                drop(slot);
            });
        }
        Ok(())
    }

    /// Delivers one subscription's events in order while it holds the lease, until it is
    /// caught up, a failure must wait, or the replica stops.
    async fn deliver(&self, first: SubscriptionRow, stop: watch::Receiver<bool>) -> Result<()> {
        let team = first.team.clone();
        let id = first.id.clone();
        // The rest of the last chunk read, the events right after position `read_after`:
        // delivered from memory while the stored position is still there, instead of reading
        // a chunk again for every event.
        let mut read: Vec<EventRow> = Vec::new();
        let mut read_after = None;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let now = (self.now)();
            let until = now.saturating_add(micros(self.args.lease()));
            // Renewed before each event: a replica that lost it stops here.
            if !self
                .store
                .take_webhook_lease(&id, &self.owner, now, until)
                .await?
            {
                return Ok(());
            }
            let Some(row) = self
                .store
                .get_leased_subscription(&team, &id, &self.owner)
                .await?
            else {
                return Ok(());
            };
            if !row.enabled || row.next_attempt_time.is_some_and(|t| t > now) {
                return Ok(());
            }
            let mut rows = if read_after == Some(row.position) && !read.is_empty() {
                std::mem::take(&mut read)
            } else {
                self.store
                    .events_after(row.position, None, Some(&team), READ_CHUNK)
                    .await?
            };
            let Some(last) = rows.last().map(|r| r.seq) else {
                return Ok(());
            };
            let types: Vec<String> = serde_json::from_str(&row.event_types).unwrap_or_default();
            let Some(index) = rows
                .iter()
                .position(|e| Subscription::wants(&types, &e.kind))
            else {
                // Nothing wanted in this chunk: acknowledge past it.
                if !self.store.advance_position(&id, &self.owner, last).await? {
                    return Ok(());
                }
                continue;
            };
            // Events of the team before this one were not wanted: acknowledged with it (or
            // before its first failure). Other teams' events leave gaps in the numbers.
            let skipped = index > 0;
            let event = &rows[index];
            let attempt = if skipped { 1 } else { row.failed_attempts + 1 };
            let result = self.attempt(&row, event, attempt).await;
            let event_seq = event.seq;
            if result.outcome == Outcome::Delivered {
                if !self
                    .store
                    .advance_position(&id, &self.owner, event_seq)
                    .await?
                {
                    return Ok(());
                }
                read = rows.split_off(index + 1);
                read_after = Some(event_seq);
                continue;
            }
            if skipped
                && !self
                    .store
                    .advance_position(&id, &self.owner, event.seq - 1)
                    .await?
            {
                return Ok(());
            }
            let failing_since = if skipped {
                now
            } else {
                row.failing_since.unwrap_or(now)
            };
            let window = micros(self.args.retry_window());
            let done = (self.now)();
            if done.saturating_sub(failing_since) >= window {
                let team_id = TeamId::parse(&team)
                    .map_err(|_| crate::domain::Error::internal("stored team id"))?;
                let reason = format!(
                    "the receiver failed every attempt for {}s (last: {})",
                    self.args.webhook_retry_window_secs, result.error
                );
                let position = if skipped { event.seq - 1 } else { row.position };
                if self
                    .hub
                    .webhooks()
                    .disable_webhook(&team_id, &id, position, &reason)
                    .await?
                {
                    self.metrics
                        .webhooks_disabled
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(webhook = %id, "webhook subscription disabled after its retry window");
                }
                return Ok(());
            }
            let wait = self
                .args
                .backoff(u32::try_from(attempt).unwrap_or(u32::MAX), jitter());
            let failure = Failure {
                failing_since,
                failed_attempts: attempt,
                next_attempt_time: done.saturating_add(micros(wait)),
            };
            self.store.record_failure(&id, &self.owner, failure).await?;
            return Ok(());
        }
    }

    /// Sends one event once and records the attempt. Never fails: an event that cannot be
    /// signed is a NOT_SENT attempt, and a record that cannot be stored is logged, so the
    /// caller still acknowledges, backs off or disables.
    async fn attempt(&self, row: &SubscriptionRow, event: &EventRow, attempt: i32) -> Attempt {
        let id = webhook_id(&event.event_id, &row.id);
        let now = (self.now)();
        let timestamp = now.div_euclid(1_000_000);
        let result = match self.signed(row, event, &id, now) {
            Ok((body, signature)) => {
                self.sender
                    .send(&row.url, &id, timestamp, &signature, body)
                    .await
            }
            Err(err) => {
                let reason = match &err {
                    Error::FailedPrecondition { message, .. } => message.clone(),
                    _ => "the delivery could not be signed (see the server log)".to_owned(),
                };
                tracing::warn!(error = %anyhow::Error::from(err), webhook = %row.id, "webhook not sent");
                Attempt::not_sent(reason)
            }
        };
        self.metrics
            .record_webhook(result.outcome.as_str(), result.latency);
        let record = self
            .store
            .insert_delivery(DeliveryRow {
                seq: 0,
                team: row.team.clone(),
                subscription_id: row.id.clone(),
                webhook_id: id,
                event_type: event.kind.clone(),
                event_seq: event.seq,
                attempt,
                time: now,
                outcome: result.outcome,
                response_code: result.response_code.map(i32::from),
                latency_micros: micros(result.latency),
                response_body: result.response_body.clone(),
                error: result.error.clone(),
            })
            .await;
        if let Err(err) = record {
            tracing::warn!(error = %anyhow::Error::from(err), webhook = %row.id, "recording a webhook delivery attempt failed");
        }
        result
    }

    /// The body of `event` for subscription `row` and its signature by the keys that sign
    /// now.
    fn signed(
        &self,
        row: &SubscriptionRow,
        event: &EventRow,
        id: &str,
        now: i64,
    ) -> Result<(Vec<u8>, String)> {
        let team = TeamId::parse(&row.team).map_err(|_| Error::internal("stored team id"))?;
        let body = event_body(event, &self.hub.cursors(Some(&team)))?;
        let keys = self.hub.webhooks().webhook_signing_keys(row, now)?;
        let keys: Vec<&[u8]> = keys.iter().map(|k| k.expose()).collect();
        let signature = signature(&keys, id, now.div_euclid(1_000_000), &body);
        Ok((body, signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_takes_at_most_its_share_and_the_others_find_the_rest() {
        let slots = Arc::new(Slots::new(4, 2));
        let a1 = slots.take("a1", "a").expect("a's first");
        let a2 = slots.take("a2", "a").expect("a's second");
        assert!(slots.take("a3", "a").is_none(), "a's share is taken");
        assert!(slots.take("a1", "a").is_none(), "a1 is being delivered");
        assert_eq!(slots.full_teams(), ["a"]);
        let b1 = slots.take("b1", "b").expect("b finds a slot");
        let c1 = slots.take("c1", "c").expect("c finds a slot");
        assert!(slots.is_full());
        assert!(slots.take("d1", "d").is_none(), "no slot left");
        drop(a1);
        assert!(slots.full_teams().is_empty());
        let a3 = slots.take("a3", "a").expect("a slot came back");
        drop((a2, a3, b1, c1));
        assert!(slots.active().is_empty());
    }
}
