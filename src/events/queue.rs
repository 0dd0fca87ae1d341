//! What watch streams hold in memory, bounded in bytes: each stream's outgoing queue has a
//! byte limit of its own, and all queues of the replica share one budget. A stream whose
//! client does not read fills its own queue and then waits (and so reads nothing more from
//! the database); when the shared budget is spent, the streams furthest behind are ended with
//! their resume cursor and their queues freed at once, whether or not their clients read.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;

use super::WatchItem;
use crate::store::EventRow;

/// Bytes counted for an event besides its strings (the row, its `Arc`, the message's share).
const EVENT_OVERHEAD: usize = 160;
/// Bytes counted for a message besides its events.
const MESSAGE_OVERHEAD: usize = 96;

/// The bytes an event is counted for while it waits in a queue.
pub fn event_bytes(row: &EventRow) -> usize {
    EVENT_OVERHEAD
        + row.snapshot.len()
        + row.event_id.len()
        + row.team.len()
        + row.kind.len()
        + row.integration_id.len()
        + row.installed_app_id.as_ref().map_or(0, String::len)
        + row.reason.as_ref().map_or(0, String::len)
        + row.actor.len()
}

/// The bytes a queued item is counted for.
pub fn item_bytes(item: &WatchItem) -> usize {
    match item {
        WatchItem::Message { events, .. } => {
            MESSAGE_OVERHEAD + events.iter().map(|e| event_bytes(e)).sum::<usize>()
        }
        WatchItem::End { .. } => MESSAGE_OVERHEAD,
    }
}

/// The byte budget every watch stream of this replica shares, and the registry of open
/// streams it ends when it runs out.
pub struct WatchMemory {
    budget: usize,
    per_stream: usize,
    used: AtomicUsize,
    next_id: AtomicU64,
    streams: Mutex<HashMap<u64, Weak<Queue>>>,
}

impl WatchMemory {
    /// `budget` bytes for all queues together, `per_stream` for each one's.
    pub fn new(budget: usize, per_stream: usize) -> Arc<WatchMemory> {
        Arc::new(WatchMemory {
            budget: budget.max(1),
            per_stream: per_stream.max(1),
            used: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            streams: Mutex::new(HashMap::new()),
        })
    }

    /// Bytes held by all queues now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// Most bytes one stream's queue holds (a single larger message is let through alone).
    pub fn per_stream(&self) -> usize {
        self.per_stream
    }

    /// A new, empty queue for one stream that starts at `position`.
    pub fn queue(self: &Arc<Self>, position: i64) -> Arc<Queue> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(Queue {
            id,
            memory: self.clone(),
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                bytes: 0,
                delivered: position,
                ended: false,
                evicted: false,
                reader_gone: false,
            }),
            readable: Notify::new(),
            writable: Notify::new(),
        });
        lock(&self.streams).insert(id, Arc::downgrade(&queue));
        queue
    }

    fn try_reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                (used + bytes <= self.budget).then_some(used + bytes)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.used.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// Ends the open stream furthest behind among those holding memory (which may be the
    /// asking one); false when none holds any.
    fn evict_furthest_behind(&self) -> bool {
        let candidates: Vec<Arc<Queue>> = {
            let mut streams = lock(&self.streams);
            streams.retain(|_, queue| queue.strong_count() > 0);
            streams.values().filter_map(Weak::upgrade).collect()
        };
        let victim = candidates
            .into_iter()
            .filter_map(|queue| {
                let state = lock(&queue.state);
                (state.bytes > 0 && !state.evicted && !state.reader_gone)
                    .then_some((state.delivered, queue.id))
                    .map(|key| (key, queue.clone()))
            })
            .min_by_key(|(key, _)| *key)
            .map(|(_, queue)| queue);
        match victim {
            Some(queue) => {
                queue.evict();
                true
            }
            None => false,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One stream's outgoing queue: its task pushes, the gRPC response stream pops.
pub struct Queue {
    id: u64,
    memory: Arc<WatchMemory>,
    state: Mutex<QueueState>,
    /// The reader waits here for an item.
    readable: Notify,
    /// The writer waits here for room (or to learn the stream is over).
    writable: Notify,
}

struct QueueState {
    items: VecDeque<(WatchItem, usize)>,
    bytes: usize,
    /// The cursor of the last message the reader took: where its client resumes from.
    delivered: i64,
    /// No more items will be pushed.
    ended: bool,
    /// Ended by the budget: the queue was emptied and holds its end.
    evicted: bool,
    /// The client left.
    reader_gone: bool,
}

/// Why an item was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum Closed {
    /// The client left.
    ReaderGone,
    /// The stream was ended to free memory; its end is queued.
    Evicted,
}

impl Queue {
    /// Queues `item`, waiting while this stream's queue is full (its client is not reading) or
    /// while the shared budget is spent and another stream is being ended to free it.
    pub async fn push(&self, item: WatchItem) -> Result<(), Closed> {
        let bytes = item_bytes(&item);
        let mut item = Some(item);
        loop {
            let writable = self.writable.notified();
            tokio::pin!(writable);
            writable.as_mut().enable();
            let needs_budget = {
                let mut state = lock(&self.state);
                if state.reader_gone {
                    return Err(Closed::ReaderGone);
                }
                if state.evicted {
                    return Err(Closed::Evicted);
                }
                let fits = state.items.is_empty() || state.bytes + bytes <= self.memory.per_stream;
                if fits && self.memory.try_reserve(bytes) {
                    if let Some(item) = item.take() {
                        state.items.push_back((item, bytes));
                    }
                    state.bytes += bytes;
                    drop(state);
                    self.readable.notify_one();
                    return Ok(());
                }
                fits
            };
            if needs_budget {
                // The replica's budget is spent: end the stream furthest behind. If nothing
                // holds memory (all of it is in flight elsewhere), wait and try again.
                if self.memory.evict_furthest_behind() {
                    continue;
                }
                tokio::select! {
                    _ = writable => {}
                    _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
                }
            } else {
                writable.await;
            }
        }
    }

    /// Queues the last item: nothing follows it. Not counted against the budget (it is small
    /// and bounded by the number of streams).
    pub fn finish(&self, item: WatchItem) {
        let mut state = lock(&self.state);
        if !state.evicted && !state.reader_gone {
            state.items.push_back((item, 0));
        }
        state.ended = true;
        drop(state);
        self.readable.notify_one();
    }

    /// Empties the queue, frees its memory and queues the end that tells the client where to
    /// resume.
    fn evict(&self) {
        let mut state = lock(&self.state);
        let freed = state.bytes;
        state.items.clear();
        state.bytes = 0;
        state.evicted = true;
        state.ended = true;
        let cursor = state.delivered;
        state.items.push_back((
            WatchItem::End {
                cursor,
                reason: super::EndReason::MemoryBudget,
            },
            0,
        ));
        drop(state);
        self.memory.release(freed);
        tracing::info!(
            cursor,
            freed,
            "watch stream furthest behind ended: the replica's watch memory budget is spent"
        );
        self.readable.notify_one();
        self.writable.notify_one();
    }

    /// The next item for the client, or `None` once the stream is over.
    pub async fn pop(&self) -> Option<WatchItem> {
        loop {
            let readable = self.readable.notified();
            tokio::pin!(readable);
            readable.as_mut().enable();
            {
                let mut state = lock(&self.state);
                if let Some((item, bytes)) = state.items.pop_front() {
                    state.bytes -= bytes;
                    if let WatchItem::Message { cursor, .. } = &item {
                        state.delivered = *cursor;
                    }
                    drop(state);
                    self.memory.release(bytes);
                    self.writable.notify_one();
                    return Some(item);
                }
                if state.ended {
                    return None;
                }
            }
            readable.await;
        }
    }

    /// Resolves once the client has left.
    pub async fn reader_gone(&self) {
        loop {
            let writable = self.writable.notified();
            tokio::pin!(writable);
            writable.as_mut().enable();
            if lock(&self.state).reader_gone {
                return;
            }
            writable.await;
        }
    }

    /// The client left: free what it would have read, and tell the writer.
    pub fn close_reader(&self) {
        let mut state = lock(&self.state);
        let freed = state.bytes;
        state.items.clear();
        state.bytes = 0;
        state.reader_gone = true;
        drop(state);
        self.memory.release(freed);
        // Both the writer waiting for room and `reader_gone` wait on `writable`.
        self.writable.notify_waiters();
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let freed = lock(&self.state).bytes;
        self.memory.release(freed);
        lock(&self.memory.streams).remove(&self.id);
    }
}

/// The reading end of a queue, as the response stream: closing it (the client left, or the
/// response was dropped) frees the queue at once.
pub struct Reader(pub Arc<Queue>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.close_reader();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: i64, snapshot_bytes: usize) -> Arc<EventRow> {
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
            snapshot: "x".repeat(snapshot_bytes),
        })
    }

    fn message(seq: i64, snapshot_bytes: usize) -> WatchItem {
        WatchItem::Message {
            events: vec![row(seq, snapshot_bytes)],
            cursor: seq,
            checkpoint: false,
        }
    }

    fn memory(budget: usize, per_stream: usize) -> Arc<WatchMemory> {
        WatchMemory::new(budget, per_stream)
    }

    #[tokio::test]
    async fn a_queue_holds_at_most_its_byte_limit_and_its_writer_waits_for_the_reader() {
        let memory = memory(1 << 20, 10_000);
        let queue = memory.queue(0);
        queue.push(message(1, 4_000)).await.expect("first");
        queue.push(message(2, 4_000)).await.expect("second");
        // The third does not fit: the writer waits until the reader takes one.
        let third = tokio::time::timeout(
            std::time::Duration::from_millis(100),
            queue.push(message(3, 4_000)),
        )
        .await;
        assert!(third.is_err(), "a full queue let its writer through");
        assert!(memory.used() <= 10_000, "{}", memory.used());
        let reader = Reader(queue.clone());
        assert!(matches!(
            reader.0.pop().await,
            Some(WatchItem::Message { cursor: 1, .. })
        ));
        queue
            .push(message(3, 4_000))
            .await
            .expect("room after a read");
    }

    #[tokio::test]
    async fn one_message_larger_than_the_limit_passes_alone() {
        let memory = memory(1 << 20, 1_000);
        let queue = memory.queue(0);
        queue.push(message(1, 5_000)).await.expect("alone");
        assert!(memory.used() > 5_000);
    }

    #[tokio::test]
    async fn a_spent_budget_ends_the_stream_furthest_behind_with_its_cursor_and_frees_it() {
        let memory = memory(20_000, 12_000);
        let behind = memory.queue(10);
        let ahead = memory.queue(50);
        behind.push(message(11, 9_000)).await.expect("behind");
        ahead.push(message(51, 9_000)).await.expect("ahead");
        // A third stream needs memory: the one at 10 is furthest behind.
        let third = memory.queue(70);
        third.push(message(71, 9_000)).await.expect("room made");
        assert!(memory.used() <= 20_000);
        // The evicted stream's reader gets its end, resuming after what it had read: 10.
        match behind.pop().await {
            Some(WatchItem::End { cursor, reason }) => {
                assert_eq!(cursor, 10);
                assert_eq!(reason, super::super::EndReason::MemoryBudget);
            }
            other => panic!("expected the end of the evicted stream, got {other:?}"),
        }
        assert!(behind.pop().await.is_none());
        assert_eq!(behind.push(message(12, 10)).await, Err(Closed::Evicted));
        // The others keep theirs.
        assert!(matches!(
            ahead.pop().await,
            Some(WatchItem::Message { cursor: 51, .. })
        ));
    }

    #[tokio::test]
    async fn a_reader_that_leaves_frees_its_queue_and_stops_its_writer() {
        let memory = memory(1 << 20, 10_000);
        let queue = memory.queue(0);
        queue.push(message(1, 4_000)).await.expect("push");
        drop(Reader(queue.clone()));
        assert_eq!(memory.used(), 0);
        assert_eq!(queue.push(message(2, 10)).await, Err(Closed::ReaderGone));
        queue.reader_gone().await;
    }
}
