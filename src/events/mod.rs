//! Event fan-out: one tailer reads the outbox in sequence order and broadcasts batches; each
//! watch stream is a task that replays from the database, then follows the broadcast.
//!
//! Delivery is at least once, in order, with no gaps: a batch covers every event in
//! `(after, upto]` (all teams), so a subscriber at position `pos` can tell whether it missed
//! something (`after > pos`) and then reads the missing range from the database. A subscriber
//! that falls behind the broadcast ring (lag) does the same: it never blocks the tailer or
//! other subscribers, and the only memory it holds is its own bounded outgoing queue.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use std::sync::atomic::Ordering;

use crate::metrics::Metrics;
use crate::store::{EventRow, Store, StoreError};

mod queue;
mod stream;

pub use queue::WatchMemory;
pub use stream::{EndReason, MESSAGE_EVENTS, WatchError, WatchItem, WatchStream, Watches};

/// Events the tailer reads from the database per query.
const READ_CHUNK: u64 = 500;
/// Events one watch stream reads from the database per query while it catches up: what it
/// holds beyond its queue while its client does not read.
const CATCH_UP_CHUNK: u64 = MESSAGE_EVENTS as u64;
/// Batches the broadcast ring keeps for slow subscribers before they lag.
const RING_BATCHES: usize = 128;
/// How often the tailer reads the outbox even without a wake-up (other processes append too).
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Every event in `(after, upto]`, in order.
#[derive(Debug)]
pub struct Batch {
    pub after: i64,
    pub upto: i64,
    pub events: Vec<Arc<EventRow>>,
}

/// The tailer's handle: subscribe to batches, read the current position.
#[derive(Clone)]
pub struct EventBus {
    store: Store,
    metrics: Arc<Metrics>,
    batches: broadcast::Sender<Arc<Batch>>,
    position: watch::Receiver<i64>,
}

impl EventBus {
    /// Starts the tailer at the current end of the log; it stops when `shutdown` flips.
    pub async fn start(
        store: Store,
        metrics: Arc<Metrics>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<EventBus, StoreError> {
        let start = store.max_event_seq().await?;
        let (batches, _) = broadcast::channel(RING_BATCHES);
        let (position_tx, position) = watch::channel(start);
        let bus = EventBus {
            store: store.clone(),
            metrics: metrics.clone(),
            batches: batches.clone(),
            position,
        };
        let appended = store.appended();
        let listener = store.clone();
        let listener_stop = shutdown.clone();
        tokio::spawn(async move { listener.listen_for_appends(listener_stop).await });
        tokio::spawn(async move {
            let mut tail = start;
            // While the database is away, the tailer retries every poll; it says so once.
            let mut failing = false;
            loop {
                match tail_once(&store, &metrics, &batches, tail).await {
                    Ok(next) => {
                        tail = next;
                        let _ = position_tx.send(tail);
                        if std::mem::take(&mut failing) {
                            tracing::info!(tail, "event tailer reads the outbox again");
                        }
                    }
                    Err(err) if failing => {
                        tracing::debug!(error = %anyhow::Error::from(err), "event tailer read failed again");
                    }
                    Err(err) => {
                        failing = true;
                        tracing::warn!(error = %anyhow::Error::from(err), "event tailer read failed; retrying every poll until the database answers");
                    }
                }
                tokio::select! {
                    _ = appended.notified() => {}
                    _ = tokio::time::sleep(POLL_INTERVAL) => {}
                    _ = shutdown.changed() => return,
                }
            }
        });
        Ok(bus)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Receives every batch published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Batch>> {
        self.batches.subscribe()
    }

    /// The newest sequence number the tailer has published.
    pub fn position(&self) -> i64 {
        *self.position.borrow()
    }
}

/// Prunes events older than `retention` every `interval`, until `shutdown` flips. `now` gives
/// microseconds since the epoch (injected for tests).
pub fn start_pruner(
    store: Store,
    retention: Duration,
    interval: Duration,
    now: impl Fn() -> i64 + Send + 'static,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let retention = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
        loop {
            match store.prune_events(now().saturating_sub(retention)).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "pruned events past the retention"),
                Err(err) => {
                    tracing::warn!(error = %anyhow::Error::from(err), "pruning events failed")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => return,
            }
        }
    });
}

/// Bounds on open watch streams, in total and per principal.
#[derive(Clone)]
pub struct StreamLimits {
    inner: Arc<std::sync::Mutex<LimitState>>,
    metrics: Arc<Metrics>,
    total: usize,
    per_principal: usize,
}

#[derive(Default)]
struct LimitState {
    open: usize,
    by_principal: std::collections::HashMap<String, usize>,
}

/// One open stream; releases its place when dropped.
pub struct StreamSlot {
    limits: StreamLimits,
    principal: String,
}

impl StreamLimits {
    pub fn new(total: usize, per_principal: usize, metrics: Arc<Metrics>) -> Self {
        StreamLimits {
            inner: Arc::default(),
            metrics,
            total,
            per_principal,
        }
    }

    /// Takes a place for `principal`, or says which limit is reached.
    pub fn acquire(&self, principal: &str) -> Result<StreamSlot, &'static str> {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if state.open >= self.total {
            return Err("too many watch streams are open on this server; retry later");
        }
        let mine = state.by_principal.entry(principal.to_owned()).or_default();
        if *mine >= self.per_principal {
            return Err("this principal has too many watch streams open");
        }
        *mine += 1;
        state.open += 1;
        self.metrics.watch_streams.fetch_add(1, Ordering::Relaxed);
        Ok(StreamSlot {
            limits: self.clone(),
            principal: principal.to_owned(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut state = self.limits.inner.lock().unwrap_or_else(|p| p.into_inner());
        state.open = state.open.saturating_sub(1);
        self.limits
            .metrics
            .watch_streams
            .fetch_sub(1, Ordering::Relaxed);
        if let Some(count) = state.by_principal.get_mut(&self.principal) {
            *count -= 1;
            if *count == 0 {
                state.by_principal.remove(&self.principal);
            }
        }
    }
}

/// Reads and publishes everything after `tail`; returns the new tail.
async fn tail_once(
    store: &Store,
    metrics: &Metrics,
    batches: &broadcast::Sender<Arc<Batch>>,
    mut tail: i64,
) -> Result<i64, StoreError> {
    loop {
        let rows = store.events_after(tail, None, None, READ_CHUNK).await?;
        let Some(last) = rows.last().map(|r| r.seq) else {
            return Ok(tail);
        };
        let full = rows.len() as u64 == READ_CHUNK;
        metrics
            .events_appended
            .fetch_add(rows.len() as u64, Ordering::Relaxed);
        metrics.event_log_position.store(last, Ordering::Relaxed);
        let batch = Batch {
            after: tail,
            upto: last,
            events: rows.into_iter().map(Arc::new).collect(),
        };
        // No receiver is fine: nobody is watching.
        let _ = batches.send(Arc::new(batch));
        tail = last;
        if !full {
            return Ok(tail);
        }
    }
}

/// What a subscriber is told.
pub enum Delivery {
    /// Events (already filtered) and the position after them.
    Events(Vec<Arc<EventRow>>, i64),
    /// Nothing new for this subscriber; the position to resume from.
    Checkpoint(i64),
}

/// Follows the log for one subscriber from `pos`, calling `deliver` for each message; returns
/// when `deliver` says the client is gone (returns false), or with the final position when
/// `stop` fires, or with an error when the database fails.
pub async fn follow<F, Fut>(
    bus: &EventBus,
    team: Option<String>,
    keep: impl Fn(&EventRow) -> bool,
    mut pos: i64,
    checkpoint_every: Duration,
    mut stop: watch::Receiver<bool>,
    mut deliver: F,
) -> Result<i64, StoreError>
where
    F: FnMut(Delivery) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    // Subscribe before the first read, so nothing published meanwhile is missed.
    let mut rx = bus.subscribe();
    let mut checkpoint = tokio::time::interval(checkpoint_every);
    checkpoint.reset();
    // Replay: everything after `pos` that is already in the database. Each catch-up (a read
    // of the database, a large future) is boxed while it runs, so the task of an idle stream
    // holds only what waiting takes: that size is what every open stream costs.
    pos = match Box::pin(catch_up(
        bus,
        team.as_deref(),
        &keep,
        pos,
        None,
        &mut deliver,
    ))
    .await?
    {
        Some(pos) => pos,
        None => return Ok(pos),
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return Ok(pos),
            received = rx.recv() => {
                let next = match received {
                    Ok(batch) if batch.upto <= pos => continue,
                    Ok(batch) if batch.after <= pos => {
                        let events: Vec<_> = batch
                            .events
                            .iter()
                            .filter(|e| e.seq > pos && team.as_deref().is_none_or(|t| e.team == t) && keep(e))
                            .cloned()
                            .collect();
                        if !events.is_empty() && !deliver(Delivery::Events(events, batch.upto)).await {
                            return Ok(pos);
                        }
                        Some(batch.upto)
                    }
                    // A gap before this batch (we subscribed or caught up meanwhile): read it.
                    Ok(batch) => Box::pin(catch_up(bus, team.as_deref(), &keep, pos, Some(batch.upto), &mut deliver)).await?,
                    // The ring passed us: fall back to the database from where we are.
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "watch subscriber lagged; reading from the database");
                        bus.metrics.subscriber_lag.fetch_add(1, Ordering::Relaxed);
                        Box::pin(catch_up(bus, team.as_deref(), &keep, pos, Some(bus.position()), &mut deliver)).await?
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(pos),
                };
                match next {
                    Some(next) => pos = next,
                    None => return Ok(pos),
                }
            }
            _ = checkpoint.tick() => {
                if !deliver(Delivery::Checkpoint(pos)).await {
                    return Ok(pos);
                }
            }
        }
    }
}

/// Delivers, from the database, the subscriber's events in `(pos, upto]` (or to the end of
/// the log when `upto` is `None`). Returns the new position, or `None` if the client left.
async fn catch_up<F, Fut>(
    bus: &EventBus,
    team: Option<&str>,
    keep: &impl Fn(&EventRow) -> bool,
    mut pos: i64,
    upto: Option<i64>,
    deliver: &mut F,
) -> Result<Option<i64>, StoreError>
where
    F: FnMut(Delivery) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    loop {
        let rows = bus
            .store
            .events_after(pos, upto, team, CATCH_UP_CHUNK)
            .await?;
        let full = rows.len() as u64 == CATCH_UP_CHUNK;
        let last = rows.last().map(|r| r.seq);
        let events: Vec<_> = rows.into_iter().filter(|e| keep(e)).map(Arc::new).collect();
        if let Some(last) = last {
            pos = last;
            if !events.is_empty() && !deliver(Delivery::Events(events, pos)).await {
                return Ok(None);
            }
        }
        if !full {
            // Everything up to `upto` has been read, even if the last ones were other teams'.
            if let Some(upto) = upto {
                pos = pos.max(upto);
            }
            return Ok(Some(pos));
        }
    }
}
