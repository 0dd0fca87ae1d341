//! `WatchIntegrationEvents` as a [`Stream`] of events that outlives its server: it resumes
//! from the last cursor it received across UNAVAILABLE, a server shutdown (which ends the
//! stream with UNAVAILABLE and the cursor in the `ErrorInfo` metadata `cursor`), broken
//! connections and replica changes; it never yields an event twice, and it ends with
//! [`WatchError::CursorExpired`] when the server no longer has the events after its cursor.
//!
//! The server delivers at least once and in order; resuming from the newest cursor received
//! makes the stream exactly once. Cursors are opaque to applications, but this client reads
//! the position an event's cursor encodes (format `ihc1`) to drop anything at or before what
//! it already yielded; an event whose cursor it cannot read is compared by id with the recent
//! ones instead.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_core::Stream;
use tonic::{Code, Status, Streaming};
use tonic_types::StatusExt;

use crate::Client;
use crate::pb::{IntegrationEvent, WatchIntegrationEventsRequest, WatchIntegrationEventsResponse};
use crate::retry::{error_reason, is_transient};

/// How many recent event ids are kept to drop repeats of events whose cursor is unreadable.
const RECENT_IDS: usize = 4096;

/// The event-log position a cursor of this service encodes (`ihc1` and a big-endian 64-bit
/// sequence number, URL-safe base64 without padding), or `None` for any other string.
pub fn cursor_position(cursor: &str) -> Option<i64> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    let rest = bytes.strip_prefix(b"ihc1")?;
    let seq = i64::from_be_bytes(<[u8; 8]>::try_from(rest).ok()?);
    (seq >= 0).then_some(seq)
}

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
    /// The newest position received (yielded, pending, or passed by a cursor).
    position: Option<i64>,
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
            position: cursor_position(&request.start_cursor),
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
                // A shutdown says where to resume; everything before it was received on this
                // stream, in order, so only a cursor ahead of ours is taken.
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

    /// Moves the resume cursor to `cursor` when it is past everything yielded so far.
    fn advance(&mut self, cursor: &str) {
        let ahead = match (cursor_position(cursor), self.position) {
            (Some(new), Some(old)) => new >= old,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if ahead {
            self.position = cursor_position(cursor);
            if self.pending.is_empty() {
                self.after_pending = None;
                self.progress.set_cursor(cursor);
            } else {
                self.after_pending = Some(cursor.to_owned());
            }
        }
    }

    fn accept(&mut self, message: WatchIntegrationEventsResponse) {
        for event in message.events {
            if self.is_new(&event) {
                self.pending.push_back(event);
            }
        }
        if message.cursor.is_empty() {
            return;
        }
        match cursor_position(&message.cursor) {
            Some(_) => self.advance(&message.cursor),
            // Unreadable: trust the server's order.
            None if self.pending.is_empty() => {
                self.after_pending = None;
                self.progress.set_cursor(&message.cursor);
            }
            None => self.after_pending = Some(message.cursor),
        }
    }

    /// Whether `event` comes after everything yielded, and remembers it if so.
    fn is_new(&mut self, event: &IntegrationEvent) -> bool {
        if let Some(seq) = cursor_position(&event.cursor) {
            if self.position.is_some_and(|yielded| seq <= yielded) {
                return false;
            }
            self.position = Some(seq);
            return true;
        }
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
        let mut bytes = b"ihc1".to_vec();
        bytes.extend_from_slice(&seq.to_be_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
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

    #[test]
    fn cursors_of_this_service_decode_to_their_position_and_others_do_not() {
        for seq in [0, 1, 41, i64::MAX] {
            assert_eq!(cursor_position(&cursor(seq)), Some(seq));
        }
        for other in ["", "x", "aWhjMQ", "AAAAAAAAAAAAAAAA", &cursor(-1)] {
            assert_eq!(cursor_position(other), None, "{other:?}");
        }
    }

    #[tokio::test]
    async fn events_at_or_before_the_position_are_dropped() {
        let mut w = watcher(&cursor(2));
        w.accept(message(
            vec![
                event("a", cursor(1)),
                event("b", cursor(2)),
                event("c", cursor(3)),
            ],
            cursor(3),
        ));
        assert_eq!(drain(&mut w), ["c"]);
        // A replay (at least once) after a reconnect: only what is new.
        w.accept(message(
            vec![event("c", cursor(3)), event("d", cursor(4))],
            cursor(4),
        ));
        assert_eq!(drain(&mut w), ["d"]);
        assert_eq!(w.resume_cursor(), Some(cursor(4)));
    }

    #[tokio::test]
    async fn a_shutdown_cursor_only_ever_moves_forward() {
        let mut w = watcher("");
        w.accept(message(vec![event("a", cursor(5))], cursor(5)));
        let _ = drain(&mut w);
        w.advance(&cursor(3));
        assert_eq!(w.resume_cursor(), Some(cursor(5)));
        w.advance(&cursor(7));
        assert_eq!(w.resume_cursor(), Some(cursor(7)));
        w.accept(message(vec![event("b", cursor(6))], cursor(7)));
        assert!(
            w.pending.is_empty(),
            "6 is behind the cursor 7 resumed from"
        );
    }

    #[tokio::test]
    async fn events_with_unreadable_cursors_are_deduplicated_by_id() {
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
