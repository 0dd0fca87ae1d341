//! Group commit: callers queue what they want written and wait; writer tasks each take
//! whatever is queued (up to a batch's size) and write it in one go, then answer every caller of
//! that batch. Concurrent callers share a round trip and a commit instead of each paying
//! for one; a caller alone is written at once (a writer never waits for more).
//!
//! Used for the audit records of resolutions ([`super::audit_batch`]) and for creates bound to
//! an installed app ([`super::create_batch`]).

use std::sync::{Arc, OnceLock};

use tokio::sync::{Mutex, mpsc, oneshot};

/// Items waiting for the writers before callers wait to queue (backpressure).
const QUEUE: usize = 4096;

/// An item queued with the way to answer its caller.
type Waiting<T, R> = (T, oneshot::Sender<R>);

/// How a batch is written: every item's answer, in order.
pub(super) trait WriteBatch<T, R>: Send + Sync + 'static {
    fn write(&self, batch: Vec<T>) -> impl Future<Output = Vec<R>> + Send;
}

/// A queue of items and the writer tasks that write them; the writers start on first use
/// and end when the queue is dropped.
pub(super) struct GroupCommit<T, R, W> {
    writer: Arc<W>,
    writers: usize,
    max_batch: usize,
    queue: OnceLock<mpsc::Sender<Waiting<T, R>>>,
}

impl<T, R, W> GroupCommit<T, R, W>
where
    T: Send + 'static,
    R: Send + 'static,
    W: WriteBatch<T, R>,
{
    /// `writers` batches are written at once (one is gathered while others commit), each
    /// of at most `max_batch` items.
    pub(super) fn new(writer: W, writers: usize, max_batch: usize) -> Self {
        GroupCommit {
            writer: Arc::new(writer),
            writers: writers.max(1),
            max_batch: max_batch.max(1),
            queue: OnceLock::new(),
        }
    }

    /// Queues `item` and waits for its answer; `None` if the writers are gone (the runtime
    /// is shutting down).
    pub(super) async fn submit(&self, item: T) -> Option<R> {
        let queue = self.queue.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            let receiver = Arc::new(Mutex::new(receiver));
            for _ in 0..self.writers {
                tokio::spawn(write_batches(
                    self.writer.clone(),
                    receiver.clone(),
                    self.max_batch,
                ));
            }
            sender
        });
        let (done, answered) = oneshot::channel();
        queue.send((item, done)).await.ok()?;
        answered.await.ok()
    }
}

/// A writer: one batch of whatever is queued at a time, until every sender is gone.
async fn write_batches<T, R, W: WriteBatch<T, R>>(
    writer: Arc<W>,
    receiver: Arc<Mutex<mpsc::Receiver<Waiting<T, R>>>>,
    max_batch: usize,
) {
    let mut queued = Vec::with_capacity(max_batch);
    loop {
        // The queue is held only while taking a batch, not while writing it.
        let taken = receiver
            .lock()
            .await
            .recv_many(&mut queued, max_batch)
            .await;
        if taken == 0 {
            return;
        }
        let (items, callers): (Vec<T>, Vec<oneshot::Sender<R>>) = queued.drain(..).unzip();
        let started = std::time::Instant::now();
        let answers = writer.write(items).await;
        tracing::debug!(
            items = taken,
            micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "batch written"
        );
        for (caller, answer) in callers.into_iter().zip(answers) {
            // A caller that went away (its deadline passed) no longer waits: fine.
            let _ = caller.send(answer);
        }
    }
}
