//! `WatchIntegrationEvents` as a [`Stream`] of events that outlives its server: it resumes
//! from the last cursor it received across UNAVAILABLE, a server shutdown (which ends the
//! stream with UNAVAILABLE and the cursor in the `ErrorInfo` metadata `cursor`), broken
//! connections and replica changes; it never yields an event twice, and it ends with
//! [`WatchError::CursorExpired`] when the server no longer has the events after its cursor.
//!
//! The server delivers at least once and in order; resuming from the newest cursor received
//! makes the stream exactly once. Cursors are opaque (sealed by the server, bound to the
//! team): this client never reads one. It resumes from the cursor of the last message it
//! received, and also drops any event whose id it yielded recently, so a replay after a
//! reconnect is never yielded twice.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_core::Stream;
use tonic::{Code, Status, Streaming};
use tonic_types::StatusExt;

use crate::Client;
use crate::pb::{IntegrationEvent, WatchIntegrationEventsRequest, WatchIntegrationEventsResponse};
use crate::retry::{error_reason, is_transient};

/// How many recent event ids are kept to drop repeats of events already yielded.
const RECENT_IDS: usize = 4096;

/// Why a watch stream ended. After yielding one, the stream yields nothing more.
#[derive(Debug)]
#[non_exhaustive]
pub enum WatchError {
    /// The cursor is older than the server's event retention (FAILED_PRECONDITION with
    /// reason CURSOR_EXPIRED): events after it are gone. List the integrations again and watch
    /// from the listing's `event_cursor`.
    CursorExpired {
        /// The cursor the stream tried to resume from.
        cursor: String,
        /// The server's message.
        message: String,
    },
    /// An error retrying cannot fix (UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT,
    /// ...), or the last one after `max_watch_reconnects` failed reconnects.
    Status(Status),
}

impl fmt::Display for WatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchError::CursorExpired { message, .. } => {
                write!(f, "the watch cursor expired: {message}")
            }
            WatchError::Status(status) => write!(
                f,
                "the watch stream failed: {:?}: {}",
                status.code(),
                status.message()
            ),
        }
    }
}

impl std::error::Error for WatchError {}

/// What the stream shares with its [`EventStream`] handle.
#[derive(Default)]
struct Progress {
    /// The cursor to resume from after the last item yielded.
    cursor: Mutex<Option<String>>,
    reconnects: AtomicU64,
}

impl Progress {
    fn set_cursor(&self, cursor: &str) {
        *self.cursor.lock().unwrap_or_else(PoisonError::into_inner) = Some(cursor.to_owned());
    }
}

/// A watch stream of integration events; see the [module](self) for what it guarantees.
pub struct EventStream {
    inner: Pin<Box<dyn Stream<Item = Result<IntegrationEvent, WatchError>> + Send>>,
    progress: Arc<Progress>,
}

impl fmt::Debug for EventStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventStream")
            .field("cursor", &self.cursor())
            .field("reconnects", &self.reconnects())
            .finish()
    }
}

impl EventStream {
    /// The cursor after the last event yielded (or the newest checkpoint once everything
    /// received was yielded): store it to resume a later watch from there. `None` until the
    /// server sent one, when the watch started live.
    pub fn cursor(&self) -> Option<String> {
        self.progress
            .cursor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many times the stream opened the call again after a failure.
    pub fn reconnects(&self) -> u64 {
        self.progress.reconnects.load(Ordering::Relaxed)
    }
}

impl Stream for EventStream {
    type Item = Result<IntegrationEvent, WatchError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// What to do after a failed call or a stream that ended.
enum Failure {
    /// Try again from the cursor.
    Retry(Status),
    /// Yield this and end.
    Fatal(WatchError),
}

struct Watcher {
    client: Client,
    request: WatchIntegrationEventsRequest,
    stream: Option<Streaming<WatchIntegrationEventsResponse>>,
    /// Received, not yet yielded, all newer than anything yielded.
    pending: VecDeque<IntegrationEvent>,
    /// The cursor to set once `pending` is empty (the last message's).
    after_pending: Option<String>,
    recent_ids: VecDeque<String>,
    recent_set: HashSet<String>,
    /// Failed attempts since the last message.
    failures: u32,
    /// Whether the last failure was UNAUTHENTICATED with a token that may be refreshed.
    refreshed_after_refusal: bool,
    done: bool,
    progress: Arc<Progress>,
}

impl Watcher {
    fn new(client: Client, request: WatchIntegrationEventsRequest) -> Watcher {
        let progress = Arc::new(Progress::default());
        if !request.start_cursor.is_empty() {
            progress.set_cursor(&request.start_cursor);
        }
        Watcher {
            client,
            request,
            stream: None,
            pending: VecDeque::new(),
            after_pending: None,
            recent_ids: VecDeque::new(),
            recent_set: HashSet::new(),
            failures: 0,
            refreshed_after_refusal: false,
            done: false,
            progress,
        }
    }

    async fn next(&mut self) -> Option<Result<IntegrationEvent, WatchError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                match (self.pending.is_empty(), &self.after_pending) {
                    (true, Some(cursor)) => self.progress.set_cursor(cursor),
                    _ => self.progress.set_cursor(&event.cursor),
                }
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            let failure = match self.stream.as_mut() {
                None => match self.open().await {
                    Ok(stream) => {
                        self.stream = Some(stream);
                        continue;
                    }
                    Err(failure) => failure,
                },
                Some(stream) => match stream.message().await {
                    Ok(Some(message)) => {
                        self.failures = 0;
                        self.refreshed_after_refusal = false;
                        self.accept(message);
                        continue;
                    }
                    // The server never ends a watch with OK; something between ended it.
                    Ok(None) => Failure::Retry(Status::unavailable("the watch stream ended")),
                    Err(status) => self.classify(status),
                },
            };
            self.stream = None;
            match failure {
                Failure::Fatal(err) => {
                    self.done = true;
                    return Some(Err(err));
                }
                Failure::Retry(status) => {
                    let policy = &self.client.retry;
                    if policy
                        .max_watch_reconnects
                        .is_some_and(|most| self.failures >= most)
                    {
                        self.done = true;
                        return Some(Err(WatchError::Status(status)));
                    }
                    let delay = policy.delay(self.failures, &status);
                    self.failures = self.failures.saturating_add(1);
                    self.progress.reconnects.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn open(&mut self) -> Result<Streaming<WatchIntegrationEventsResponse>, Failure> {
        self.client.auth.ready().await.map_err(|err| {
            Failure::Fatal(WatchError::Status(Status::unauthenticated(err.to_string())))
        })?;
        let mut request = self.request.clone();
        if let Some(cursor) = self.resume_cursor() {
            request.start_cursor = cursor;
        }
        let mut integrations = self.client.integrations();
        match integrations.watch_integration_events(request).await {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.classify(status)),
        }
    }

    /// Everything up to it was received (yielded or pending).
    fn resume_cursor(&self) -> Option<String> {
        self.after_pending.clone().or_else(|| {
            self.progress
                .cursor
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        })
    }

    fn classify(&mut self, status: Status) -> Failure {
        let reason = error_reason(&status);
        match (status.code(), reason.as_deref()) {
            (Code::FailedPrecondition, Some("CURSOR_EXPIRED")) => {
                Failure::Fatal(WatchError::CursorExpired {
                    cursor: self.resume_cursor().unwrap_or_default(),
                    message: status.message().to_owned(),
                })
            }
            (Code::Unavailable, _) => {
                // A shutdown says where to resume: the stream's own position, after everything
                // it sent, so past everything received on it.
                if let Some(cursor) = status
                    .get_details_error_info()
                    .and_then(|info| info.metadata.get("cursor").cloned())
                {
                    self.advance(&cursor);
                }
                Failure::Retry(status)
            }
            // Too many streams for this principal (one may still be closing on the server), or
            // the rate limit: wait, then try again.
            (Code::ResourceExhausted, _) => Failure::Retry(status),
            (Code::Unauthenticated, _)
                if self.client.auth.can_refresh() && !self.refreshed_after_refusal =>
            {
                self.client.auth.invalidate();
                self.refreshed_after_refusal = true;
                Failure::Retry(status)
            }
            _ if is_transient(&status) => Failure::Retry(status),
            _ => Failure::Fatal(WatchError::Status(status)),
        }
    }

    /// Moves the resume cursor to `cursor`, a position the current stream reached: at once
    /// when nothing is pending, else once the pending events are yielded.
    fn advance(&mut self, cursor: &str) {
        if self.pending.is_empty() {
            self.after_pending = None;
            self.progress.set_cursor(cursor);
        } else {
            self.after_pending = Some(cursor.to_owned());
        }
    }

    fn accept(&mut self, message: WatchIntegrationEventsResponse) {
        for event in message.events {
            if self.is_new(&event) {
                self.pending.push_back(event);
            }
        }
        if !message.cursor.is_empty() {
            self.advance(&message.cursor);
        }
    }

    /// Whether `event` was not yielded recently, and remembers it if so.
    fn is_new(&mut self, event: &IntegrationEvent) -> bool {
        if self.recent_set.contains(&event.event_id) {
            return false;
        }
        self.recent_set.insert(event.event_id.clone());
        self.recent_ids.push_back(event.event_id.clone());
        if self.recent_ids.len() > RECENT_IDS
            && let Some(oldest) = self.recent_ids.pop_front()
        {
            self.recent_set.remove(&oldest);
        }
        true
    }
}

pub(crate) fn watch(client: Client, request: WatchIntegrationEventsRequest) -> EventStream {
    let watcher = Watcher::new(client, request);
    let progress = watcher.progress.clone();
    let inner = futures_util::stream::unfold(watcher, |mut watcher| async move {
        let item = watcher.next().await?;
        Some((item, watcher))
    });
    EventStream {
        inner: Box::pin(inner),
        progress,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(seq: i64) -> String {
        format!("opaque-{seq}")
    }

    fn event(id: &str, cursor: String) -> IntegrationEvent {
        IntegrationEvent {
            event_id: id.to_owned(),
            cursor,
            ..Default::default()
        }
    }

    fn watcher(start: &str) -> Watcher {
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let client = Client::new(channel, crate::BearerAuth::none());
        Watcher::new(
            client,
            WatchIntegrationEventsRequest {
                start_cursor: start.to_owned(),
                ..Default::default()
            },
        )
    }

    fn message(events: Vec<IntegrationEvent>, cursor: String) -> WatchIntegrationEventsResponse {
        WatchIntegrationEventsResponse {
            checkpoint: events.is_empty(),
            events,
            cursor,
        }
    }

    fn drain(w: &mut Watcher) -> Vec<String> {
        w.pending.drain(..).map(|e| e.event_id).collect()
    }

    #[tokio::test]
    async fn a_replay_after_a_reconnect_is_yielded_once() {
        let mut w = watcher(&cursor(2));
        w.accept(message(
            vec![event("c", cursor(3)), event("d", cursor(4))],
            cursor(4),
        ));
        assert_eq!(drain(&mut w), ["c", "d"]);
        // At least once: a reconnect may deliver the last events again.
        w.accept(message(
            vec![event("d", cursor(4)), event("e", cursor(5))],
            cursor(5),
        ));
        assert_eq!(drain(&mut w), ["e"]);
        assert_eq!(w.resume_cursor(), Some(cursor(5)));
    }

    #[tokio::test]
    async fn the_resume_cursor_waits_for_pending_events() {
        let mut w = watcher("");
        w.accept(message(vec![event("a", cursor(5))], cursor(5)));
        // A shutdown's cursor, while "a" is not yet yielded: resuming from it is right (the
        // stream received "a"), and the progress shown moves once "a" is yielded.
        w.advance(&cursor(7));
        assert_eq!(w.resume_cursor(), Some(cursor(7)));
        assert_eq!(*w.progress.cursor.lock().unwrap(), None);
        assert_eq!(drain(&mut w), ["a"]);
    }

    #[tokio::test]
    async fn events_are_deduplicated_by_id() {
        let mut w = watcher("");
        w.accept(message(
            vec![event("a", "opaque-1".into()), event("b", "opaque-2".into())],
            "opaque-2".into(),
        ));
        w.accept(message(
            vec![event("b", "opaque-2".into()), event("c", "opaque-3".into())],
            "opaque-3".into(),
        ));
        assert_eq!(drain(&mut w), ["a", "b", "c"]);
    }
}
