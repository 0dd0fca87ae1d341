//! One watch stream: where it starts (the cursor checks), its place in the limits, and the
//! task that follows the log for it and batches what it finds into messages.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::queue::{Queue, Reader, WatchMemory, event_bytes};
use super::{Delivery, EventBus, StreamLimits, follow};
use crate::metrics::Metrics;
use crate::store::{EventRow, StoreError};

/// Most bytes of events in one stream message (but for a single larger event).
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Most events in one stream message.
pub const MESSAGE_EVENTS: usize = 100;

/// Why a watch cannot start. The messages are the client's.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The start cursor is past the end of the log.
    #[error("is ahead of the event log (a cursor of another deployment?)")]
    CursorAhead,
    /// The start cursor is older than the retention: events after it were pruned.
    #[error(
        "the cursor is older than the event retention; list the integrations again and watch from the listing's event_cursor"
    )]
    CursorExpired,
    /// A limit on open streams is reached.
    #[error("{0}")]
    TooMany(&'static str),
    /// The event log could not be read.
    #[error("the event log could not be read")]
    Store(#[from] StoreError),
}

/// What a watch stream sends.
#[derive(Debug)]
pub enum WatchItem {
    /// Events (in order, at most [`MESSAGE_EVENTS`]), or none for a checkpoint, and the
    /// position to resume from.
    Message {
        events: Vec<Arc<EventRow>>,
        cursor: i64,
        checkpoint: bool,
    },
    /// The stream ends; the client resumes from `cursor`.
    End { cursor: i64, reason: EndReason },
}

/// Why a watch stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The server is shutting down.
    Shutdown,
    /// The event log could not be read.
    Unavailable,
    /// The replica's watch memory budget is spent and this stream was furthest behind.
    MemoryBudget,
}

/// What every watch stream shares: the tailer, the limits on open streams, how often an
/// idle stream gets a checkpoint, and the shutdown signal.
#[derive(Clone)]
pub struct Watches {
    bus: EventBus,
    limits: StreamLimits,
    memory: Arc<WatchMemory>,
    checkpoint_every: Duration,
    stop: watch::Receiver<bool>,
}

impl Watches {
    pub fn new(
        bus: EventBus,
        limits: StreamLimits,
        memory: Arc<WatchMemory>,
        checkpoint_every: Duration,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Watches {
            bus,
            limits,
            memory,
            checkpoint_every,
            stop,
        }
    }

    /// Opens a watch stream for `principal` over `team` (every team when `None`): from just
    /// after `start` (replayed from the database, then live), or live from now, with a
    /// checkpoint carrying the current cursor as its first message. `kinds` keeps only
    /// those event kinds (every kind when empty). The stream holds its place in the limits
    /// until it ends or the client leaves.
    pub async fn open(
        &self,
        principal: &str,
        team: Option<String>,
        start: Option<i64>,
        kinds: HashSet<&'static str>,
    ) -> Result<WatchStream, WatchError> {
        let newest = self.bus.store.max_event_seq().await?;
        let pos = match start {
            Some(seq) if seq > newest => return Err(WatchError::CursorAhead),
            Some(seq) => {
                if seq < self.bus.store.pruned_through().await? {
                    return Err(WatchError::CursorExpired);
                }
                seq
            }
            None => newest,
        };
        let slot = self
            .limits
            .acquire(principal)
            .map_err(WatchError::TooMany)?;
        let queue = self.memory.queue(pos);
        let reader = WatchStream::new(queue.clone());
        // Small messages: what the gRPC encoder and HTTP/2 hold per stream, outside the
        // budget, grows with the largest message.
        let max_message_bytes = (self.memory.per_stream() / 2).min(MAX_MESSAGE_BYTES);
        let bus = self.bus.clone();
        let stop = self.stop.clone();
        let every = self.checkpoint_every;
        tokio::spawn(async move {
            // Holds this stream's place in the limits until the stream ends.
            let _slot = slot;
            // Live from now: the first message is a checkpoint carrying the current cursor.
            if start.is_none() && queue.push(checkpoint_at(pos)).await.is_err() {
                return;
            }
            let keep = |e: &EventRow| kinds.is_empty() || kinds.contains(e.kind.as_str());
            // Boxed while it runs, as `follow` boxes its catch-ups: an idle stream's task
            // stays small.
            let deliver = {
                let queue = queue.clone();
                let metrics = bus.metrics().clone();
                move |delivery| {
                    Box::pin(send(
                        queue.clone(),
                        metrics.clone(),
                        delivery,
                        max_message_bytes,
                    ))
                }
            };
            let outcome = tokio::select! {
                outcome = follow(&bus, team, keep, pos, every, stop, deliver) => outcome,
                // The client left: end now, freeing its place, rather than at the next send.
                _ = queue.reader_gone() => return,
            };
            let end = match outcome {
                Ok(pos) => WatchItem::End {
                    cursor: pos,
                    reason: EndReason::Shutdown,
                },
                Err(err) => {
                    tracing::warn!(error = %anyhow::Error::from(err), "watch stream failed");
                    WatchItem::End {
                        cursor: pos,
                        reason: EndReason::Unavailable,
                    }
                }
            };
            // Ignored when the client already left or the stream was ended for memory.
            queue.finish(end);
        });
        Ok(reader)
    }
}

/// The messages of one watch stream, as the response streams them. Dropping it (the client
/// left) frees everything the stream still held.
pub struct WatchStream {
    reader: Reader,
    next: Option<std::pin::Pin<Box<dyn std::future::Future<Output = Option<WatchItem>> + Send>>>,
}

impl WatchStream {
    fn new(queue: Arc<Queue>) -> Self {
        WatchStream {
            reader: Reader(queue),
            next: None,
        }
    }
}

impl tokio_stream::Stream for WatchStream {
    type Item = WatchItem;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<WatchItem>> {
        let this = &mut *self;
        let next = this.next.get_or_insert_with(|| {
            let queue = this.reader.0.clone();
            Box::pin(async move { queue.pop().await })
        });
        let item = std::task::ready!(next.as_mut().poll(cx));
        this.next = None;
        std::task::Poll::Ready(item)
    }
}

/// Sends one delivery as messages of at most [`MESSAGE_EVENTS`] events, so what a stalled
/// client holds in its queue stays small. Each message's cursor is its last event's, and the
/// last message's is the position after the whole delivery. False when the client left.
async fn send(
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    delivery: Delivery,
    max_message_bytes: usize,
) -> bool {
    let (rows, pos, checkpoint) = match delivery {
        Delivery::Checkpoint(pos) => (Vec::new(), pos, true),
        Delivery::Events(rows, pos) => (rows, pos, false),
    };
    for message in batches(rows, pos, checkpoint, max_message_bytes) {
        if let WatchItem::Message { events, .. } = &message {
            metrics
                .events_delivered
                .fetch_add(events.len() as u64, Ordering::Relaxed);
        }
        // Waits while the client does not read; fails when it left or the stream was ended
        // to free memory.
        if queue.push(message).await.is_err() {
            return false;
        }
    }
    true
}

fn checkpoint_at(cursor: i64) -> WatchItem {
    WatchItem::Message {
        events: Vec::new(),
        cursor,
        checkpoint: true,
    }
}

/// The messages of one delivery: at least one (a checkpoint has no events), each of at most
/// [`MESSAGE_EVENTS`] events and, but for a single larger event, `max_bytes` bytes.
fn batches(
    rows: Vec<Arc<EventRow>>,
    pos: i64,
    checkpoint: bool,
    max_bytes: usize,
) -> Vec<WatchItem> {
    let mut groups: Vec<Vec<Arc<EventRow>>> = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let size = event_bytes(&row);
        match groups.last_mut() {
            Some(group) if group.len() < MESSAGE_EVENTS && bytes + size <= max_bytes => {
                bytes += size;
                group.push(row);
            }
            _ => {
                bytes = size;
                groups.push(vec![row]);
            }
        }
    }
    if groups.is_empty() {
        groups.push(Vec::new());
    }
    let count = groups.len();
    groups
        .into_iter()
        .enumerate()
        .map(|(index, events)| {
            let cursor = match events.last() {
                Some(last) if index + 1 < count => last.seq,
                _ => pos,
            };
            WatchItem::Message {
                events,
                cursor,
                checkpoint,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64) -> Arc<EventRow> {
        Arc::new(EventRow {
            seq,
            event_id: format!("e{seq}"),
            team: "acme".into(),
            kind: "INTEGRATION_CREATED".into(),
            integration_id: "i".into(),
            installed_app_id: None,
            reason: None,
            actor: "dana".into(),
            time: 0,
            snapshot: "{}".into(),
        })
    }

    fn shape(items: &[WatchItem]) -> Vec<(Vec<i64>, i64, bool)> {
        items
            .iter()
            .map(|item| match item {
                WatchItem::Message {
                    events,
                    cursor,
                    checkpoint,
                } => (events.iter().map(|e| e.seq).collect(), *cursor, *checkpoint),
                WatchItem::End { .. } => panic!("no end in a delivery"),
            })
            .collect()
    }

    #[test]
    fn a_checkpoint_is_one_message_without_events_at_its_position() {
        assert_eq!(
            shape(&batches(Vec::new(), 42, true, usize::MAX)),
            [(vec![], 42, true)]
        );
    }

    #[test]
    fn a_delivery_is_cut_into_messages_of_at_most_100_events_each_resumable() {
        let rows: Vec<_> = (1..=250).map(row).collect();
        let messages = shape(&batches(rows, 300, false, usize::MAX));
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[0].0, (1..=100).collect::<Vec<_>>());
        // A message's cursor is its last event's: resuming from it repeats nothing.
        assert_eq!(messages[0].1, 100);
        assert_eq!(messages[1].1, 200);
        assert_eq!(messages[2].0.len(), 50);
        // The last one's is the position after the whole delivery (other teams' events
        // up to it were read too).
        assert_eq!(messages[2].1, 300);
        assert!(messages.iter().all(|m| !m.2));
    }

    #[test]
    fn a_delivery_is_cut_by_bytes_too_and_a_single_larger_event_passes_alone() {
        let rows: Vec<_> = (1..=10).map(row).collect();
        let one = event_bytes(&rows[0]);
        let messages = shape(&batches(rows, 10, false, one * 3));
        assert_eq!(
            messages.iter().map(|m| m.0.len()).collect::<Vec<_>>(),
            [3, 3, 3, 1]
        );
        assert_eq!(messages[0].1, 3);
        assert_eq!(messages[3].1, 10);
        let messages = shape(&batches((1..=2).map(row).collect(), 2, false, 1));
        assert_eq!(
            messages.len(),
            2,
            "each event alone when one exceeds the limit"
        );
    }

    #[test]
    fn exactly_100_events_make_one_message() {
        let rows: Vec<_> = (1..=100).map(row).collect();
        let messages = shape(&batches(rows, 100, false, usize::MAX));
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].1, 100);
    }
}
