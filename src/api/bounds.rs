//! What a caller can make this replica hold, bounded.
//!
//! - **Calls in flight**, for the whole replica: past the limit a call is answered
//!   RESOURCE_EXHAUSTED at once, before its token is read, instead of waiting in memory.
//! - **Answers waiting for their client.** HTTP/2 lets a client stop reading (its window at
//!   0) while the server holds answers it already made. An answer is handed to the transport
//!   a slice at a time, so everything but the slice in the transport's hands stays here,
//!   counted: the bytes not yet handed over count against the answer's connection, its
//!   principal and the replica. An answer that would take a budget past its size is answered
//!   RESOURCE_EXHAUSTED instead, and its bytes are dropped at once. A connection with an
//!   answer its client has not taken within the send timeout is closed, which drops every
//!   answer of that connection, the transport's own buffers included.
//!
//! Watch streams have budgets of their own (`events::WatchMemory`); only what a stream has
//! ready when its call returns is counted here.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use clap::Args;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{Semaphore, watch};
use tonic::Code;
use tonic::codegen::{BoxFuture, Bytes, Service, http};

use super::connections::{Connection, ConnectionInfo};
use super::status_with_reason;
use crate::auth::Principal;
use crate::pb::ErrorReason;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The slices an answer is handed over in: one HTTP/2 frame at the default frame size.
const SLICE_BYTES: usize = 16 * 1024;
/// A whole answer of at most this many bytes goes in slices of [`SMALL_SLICE_BYTES`].
const SMALL_ANSWER_BYTES: usize = 2 * 1024;
/// The largest DATA frame the HTTP/2 transport (h2 0.4) copies into the connection's write
/// buffer. From 256 bytes it writes a frame from the answer's own buffer and flushes it before
/// anything queued behind it, so an answer of 256 bytes or more left in two writes (two TCP
/// segments, its client woken twice), its trailers in the second. Copied frames leave with
/// the trailers in one write; BENCHMARKS.md has what the second write cost.
const SMALL_SLICE_BYTES: usize = 255;

/// Limits on calls in flight and on answers waiting for their client.
#[derive(Clone, Debug, Args)]
pub struct BoundsArgs {
    /// Calls this replica serves at once (watch streams count until they are open); past
    /// it a call is answered RESOURCE_EXHAUSTED.
    #[arg(long, env = "INTEGRATION_HUB_MAX_CALLS_IN_FLIGHT", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_calls_in_flight: u64,

    /// Calls one connection may have open at once (HTTP/2 concurrent streams).
    #[arg(long, env = "INTEGRATION_HUB_MAX_STREAMS_PER_CONNECTION", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_streams_per_connection: u32,

    /// Bytes of answers all clients of this replica may leave unread.
    #[arg(long, env = "INTEGRATION_HUB_ANSWER_MEMORY_BYTES", default_value_t = 256 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub answer_memory_bytes: u64,

    /// Bytes of answers one principal (team and subject) may leave unread.
    #[arg(long, env = "INTEGRATION_HUB_ANSWER_MEMORY_PER_PRINCIPAL_BYTES",
          default_value_t = 32 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    pub answer_memory_per_principal_bytes: u64,

    /// Bytes of answers one connection may leave unread.
    #[arg(long, env = "INTEGRATION_HUB_ANSWER_MEMORY_PER_CONNECTION_BYTES",
          default_value_t = 32 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1024..))]
    pub answer_memory_per_connection_bytes: u64,

    /// Milliseconds a client has to take an answer; a connection with an answer left
    /// longer is closed.
    #[arg(long, env = "INTEGRATION_HUB_ANSWER_SEND_TIMEOUT_MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub answer_send_timeout_ms: u64,
}

fn bytes_setting(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

// ---------------------------------------------------------------------------------------
// The budget of answers

/// The replica's account of answers waiting for their clients.
pub struct Answers {
    server_bytes: usize,
    principal_bytes: usize,
    connection_bytes: usize,
    send_timeout: Duration,
    next_id: AtomicU64,
    ledger: Mutex<Ledger>,
}

#[derive(Default)]
struct Ledger {
    used: usize,
    principals: HashMap<Arc<str>, usize>,
    /// Answers with bytes not yet handed over: since when, and on which connection.
    waiting: HashMap<u64, (Instant, Option<Arc<Connection>>)>,
    /// Whether the replica's budget ran out since it was last below half (logged once).
    spent: bool,
}

/// Which budget refused an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Spent {
    Connection,
    Principal,
    Server,
}

/// What one answer holds of the budgets, given back as its slices leave or when it is
/// dropped.
struct Charge {
    answers: Arc<Answers>,
    id: u64,
    bytes: usize,
    principal: Option<Arc<str>>,
    connection: Option<Arc<Connection>>,
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    // The ledger's counts are updated in single steps: a panic elsewhere leaves them whole.
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Answers {
    pub fn new(args: &BoundsArgs) -> Arc<Answers> {
        Arc::new(Answers {
            server_bytes: bytes_setting(args.answer_memory_bytes),
            principal_bytes: bytes_setting(args.answer_memory_per_principal_bytes),
            connection_bytes: bytes_setting(args.answer_memory_per_connection_bytes),
            send_timeout: Duration::from_millis(args.answer_send_timeout_ms),
            next_id: AtomicU64::new(1),
            ledger: Mutex::new(Ledger::default()),
        })
    }

    /// Bytes of answers waiting now (for tests and metrics).
    pub fn used(&self) -> usize {
        lock(&self.ledger).used
    }

    /// Charges `bytes` to the three budgets, or says which one has no room. An answer larger
    /// than a budget is let through when its connection and principal hold nothing else,
    /// or it could never be sent.
    fn charge(
        self: &Arc<Self>,
        bytes: usize,
        principal: Option<Arc<str>>,
        connection: Option<Arc<Connection>>,
    ) -> Result<Charge, Spent> {
        let mut ledger = lock(&self.ledger);
        let on_connection = connection
            .as_ref()
            .map_or(0, |c| c.held.load(Ordering::Relaxed));
        let of_principal = principal
            .as_ref()
            .and_then(|p| ledger.principals.get(p).copied())
            .unwrap_or(0);
        let over = |used: usize, budget: usize| used > 0 && used + bytes > budget;
        let refused = if over(on_connection, self.connection_bytes) {
            Some(Spent::Connection)
        } else if over(of_principal, self.principal_bytes) {
            Some(Spent::Principal)
        } else if over(ledger.used, self.server_bytes) {
            Some(Spent::Server)
        } else {
            None
        };
        if let Some(spent) = refused {
            if spent == Spent::Server && !ledger.spent {
                ledger.spent = true;
                tracing::warn!(
                    budget = self.server_bytes,
                    "answers waiting for clients that do not read them fill INTEGRATION_HUB_ANSWER_MEMORY_BYTES: calls are answered RESOURCE_EXHAUSTED until they are taken or their connections time out"
                );
            }
            return Err(spent);
        }
        ledger.used += bytes;
        if let Some(principal) = &principal {
            *ledger.principals.entry(principal.clone()).or_default() += bytes;
        }
        if let Some(connection) = &connection {
            connection.held.fetch_add(bytes, Ordering::Relaxed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        ledger
            .waiting
            .insert(id, (Instant::now(), connection.clone()));
        Ok(Charge {
            answers: self.clone(),
            id,
            bytes,
            principal,
            connection,
        })
    }

    fn release(&self, charge: &mut Charge, bytes: usize) {
        let bytes = bytes.min(charge.bytes);
        if bytes == 0 {
            return;
        }
        charge.bytes -= bytes;
        let mut ledger = lock(&self.ledger);
        ledger.used -= bytes;
        if let Some(principal) = &charge.principal
            && let Some(held) = ledger.principals.get_mut(principal)
        {
            *held -= bytes;
            if *held == 0 {
                ledger.principals.remove(principal);
            }
        }
        if let Some(connection) = &charge.connection {
            connection.held.fetch_sub(bytes, Ordering::Relaxed);
        }
        if charge.bytes == 0 {
            ledger.waiting.remove(&charge.id);
        }
        if ledger.spent && ledger.used <= self.server_bytes / 2 {
            ledger.spent = false;
            tracing::info!("answers waiting for their clients are below half their budget again");
        }
    }

    /// Closes every connection with an answer left unread longer than the send timeout.
    fn close_stalled(&self, now: Instant) -> usize {
        let stalled: Vec<Arc<Connection>> = lock(&self.ledger)
            .waiting
            .values()
            .filter(|(since, _)| now.duration_since(*since) > self.send_timeout)
            .filter_map(|(_, connection)| connection.clone())
            .filter(|connection| !connection.closed())
            .collect();
        for connection in &stalled {
            tracing::debug!(remote = ?connection.remote, "closing a connection that left an answer unread past the send timeout");
            connection.close();
        }
        stalled.len()
    }

    /// Looks for stalled answers until `stop`.
    pub fn start(self: &Arc<Self>, mut stop: watch::Receiver<bool>) {
        let answers = Arc::downgrade(self);
        let every =
            (self.send_timeout / 4).clamp(Duration::from_millis(25), Duration::from_secs(1));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop.changed() => return,
                }
                let Some(answers) = answers.upgrade() else {
                    return;
                };
                answers.close_stalled(Instant::now());
            }
        });
    }

    /// The answer of one call, held here and handed over a slice at a time; or
    /// RESOURCE_EXHAUSTED when it does not fit.
    fn hold<B>(
        self: &Arc<Self>,
        response: http::Response<B>,
        principal: Option<Arc<str>>,
        connection: Option<Arc<Connection>>,
    ) -> http::Response<tonic::body::Body>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (parts, body) = response.into_parts();
        let mut body = Box::pin(body);
        let mut frames = Vec::new();
        let mut bytes = 0;
        let mut failed = None;
        let mut ended = false;
        // What the body has at once: all of a unary answer, the first messages of a stream.
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            match body.as_mut().poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    bytes += frame.data_ref().map_or(0, Bytes::len);
                    frames.push(frame);
                }
                Poll::Ready(Some(Err(err))) => {
                    failed = Some(err.into());
                    break;
                }
                Poll::Ready(None) => {
                    ended = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        let whole = ended && failed.is_none();
        let slice = if whole && bytes <= SMALL_ANSWER_BYTES {
            SMALL_SLICE_BYTES
        } else {
            SLICE_BYTES
        };
        let ready = sliced(frames, slice);
        let charge = if bytes == 0 {
            None
        } else {
            match self.charge(bytes, principal, connection) {
                Ok(charge) => Some(charge),
                Err(spent) => return refused(spent),
            }
        };
        let held = Held {
            ready,
            charge,
            rest: (!ended && failed.is_none()).then_some(body),
            failed,
        };
        http::Response::from_parts(parts, tonic::body::Body::new(held))
    }
}

/// `frames` with every DATA frame cut into slices of at most `slice` bytes.
fn sliced(frames: Vec<Frame<Bytes>>, slice: usize) -> VecDeque<Frame<Bytes>> {
    let mut ready = VecDeque::with_capacity(frames.len());
    for frame in frames {
        match frame.into_data() {
            Ok(mut data) => {
                while data.len() > slice {
                    ready.push_back(Frame::data(data.split_to(slice)));
                }
                ready.push_back(Frame::data(data));
            }
            Err(frame) => ready.push_back(frame),
        }
    }
    ready
}

fn refused(spent: Spent) -> http::Response<tonic::body::Body> {
    let whose = match spent {
        Spent::Connection => "this connection",
        Spent::Principal => "this principal",
        Spent::Server => "this server's clients",
    };
    status_with_reason(
        Code::ResourceExhausted,
        format!("answers {whose} has not read fill its budget; read them, or retry later"),
        ErrorReason::ResourceExhausted,
        HashMap::new(),
    )
    .into_http()
}

/// An answer's body: the slices held here, then whatever its inner body had not made yet.
struct Held<B> {
    ready: VecDeque<Frame<Bytes>>,
    charge: Option<Charge>,
    rest: Option<Pin<Box<B>>>,
    failed: Option<BoxError>,
}

impl<B> Body for Held<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(frame) = this.ready.pop_front() {
            if let (Some(data), Some(charge)) = (frame.data_ref(), this.charge.as_mut()) {
                let answers = charge.answers.clone();
                answers.release(charge, data.len());
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        this.charge = None;
        if let Some(err) = this.failed.take() {
            return Poll::Ready(Some(Err(err)));
        }
        match this.rest.as_mut() {
            Some(rest) => rest
                .as_mut()
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(Into::into))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ready.is_empty()
            && self.failed.is_none()
            && self.rest.as_ref().is_none_or(|rest| rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.rest {
            None => {
                let bytes: usize = self
                    .ready
                    .iter()
                    .filter_map(|frame| frame.data_ref().map(Bytes::len))
                    .sum();
                SizeHint::with_exact(bytes as u64)
            }
            Some(_) => SizeHint::default(),
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let answers = self.answers.clone();
        let bytes = self.bytes;
        answers.release(self, bytes);
    }
}

// ---------------------------------------------------------------------------------------
// The layers

/// Counts calls in flight (outermost, before the token is read) and refuses those past the
/// limit.
#[derive(Clone)]
pub struct CallLimitLayer {
    permits: Arc<Semaphore>,
    max: usize,
}

impl CallLimitLayer {
    pub fn new(args: &BoundsArgs) -> CallLimitLayer {
        let max = bytes_setting(args.max_calls_in_flight).min(Semaphore::MAX_PERMITS);
        CallLimitLayer {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }
}

impl<S> tower::Layer<S> for CallLimitLayer {
    type Service = CallLimit<S>;

    fn layer(&self, inner: S) -> CallLimit<S> {
        CallLimit {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CallLimit<S> {
    inner: S,
    layer: CallLimitLayer,
}

impl<S, ReqBody> Service<http::Request<ReqBody>> for CallLimit<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let mut inner = super::take_ready(&mut self.inner);
        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            let max = self.layer.max;
            return Box::pin(async move {
                Ok(status_with_reason(
                    Code::ResourceExhausted,
                    format!("the server is serving {max} calls at once; retry later"),
                    ErrorReason::ResourceExhausted,
                    HashMap::new(),
                )
                .into_http())
            });
        };
        Box::pin(async move {
            let response = inner.call(request).await;
            drop(permit);
            response
        })
    }
}

/// Holds every answer in [`Answers`] (inside authentication, which names the principal).
#[derive(Clone)]
pub struct AnswerLayer {
    answers: Arc<Answers>,
}

impl AnswerLayer {
    pub fn new(answers: Arc<Answers>) -> AnswerLayer {
        AnswerLayer { answers }
    }
}

impl<S> tower::Layer<S> for AnswerLayer {
    type Service = AnswerService<S>;

    fn layer(&self, inner: S) -> AnswerService<S> {
        AnswerService {
            inner,
            answers: self.answers.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AnswerService<S> {
    inner: S,
    answers: Arc<Answers>,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for AnswerService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let mut inner = super::take_ready(&mut self.inner);
        let principal = request
            .extensions()
            .get::<Principal>()
            .map(|p| Arc::<str>::from(format!("{}/{}", p.team, p.subject)));
        let connection = request
            .extensions()
            .get::<ConnectionInfo>()
            .map(|info| info.connection.clone());
        let answers = self.answers.clone();
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(answers.hold(response, principal, connection))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(server: u64, principal: u64, connection: u64) -> BoundsArgs {
        BoundsArgs {
            max_calls_in_flight: 8,
            max_streams_per_connection: 8,
            answer_memory_bytes: server,
            answer_memory_per_principal_bytes: principal,
            answer_memory_per_connection_bytes: connection,
            answer_send_timeout_ms: 1000,
        }
    }

    fn answer(bytes: usize) -> http::Response<tonic::body::Body> {
        let body = http_body_util::Full::new(Bytes::from(vec![7u8; bytes]));
        http::Response::new(tonic::body::Body::new(body))
    }

    fn status(response: &http::Response<tonic::body::Body>) -> Option<Code> {
        tonic::Status::from_header_map(response.headers()).map(|s| s.code())
    }

    #[test]
    fn an_answer_is_handed_over_in_slices_and_its_bytes_are_given_back_as_they_leave() {
        let answers = Answers::new(&args(1 << 20, 1 << 20, 1 << 20));
        let response = answers.hold(answer(40_000), Some("t/a".into()), None);
        assert_eq!(answers.used(), 40_000);
        let mut body = Box::pin(response.into_body());
        let mut cx = Context::from_waker(Waker::noop());
        let mut sizes = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) {
            sizes.push(frame.into_data().map(|d| d.len()).unwrap_or(0));
        }
        assert_eq!(sizes, [16_384, 16_384, 7_232]);
        assert_eq!(answers.used(), 0);
    }

    /// The sizes of the frames `hold` hands over (`None` for trailers) for a body that yields
    /// `data`, then its trailers and its end; or, with `more`, `data` and nothing yet.
    fn handed_over(data: &[usize], more: bool) -> Vec<Option<usize>> {
        use futures_util::StreamExt as _;
        let answers = Answers::new(&args(1 << 20, 1 << 20, 1 << 20));
        let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = data
            .iter()
            .map(|len| Ok(Frame::data(Bytes::from(vec![7u8; *len]))))
            .collect();
        if !more {
            frames.push(Ok(Frame::trailers(http::HeaderMap::new())));
        }
        let tail = futures_util::stream::pending().take(usize::from(more));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames).chain(tail));
        let response = answers.hold(
            http::Response::new(tonic::body::Body::new(body)),
            None,
            None,
        );
        let mut body = Box::pin(response.into_body());
        let mut cx = Context::from_waker(Waker::noop());
        let mut sizes = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = body.as_mut().poll_frame(&mut cx) {
            sizes.push(frame.into_data().ok().map(|d| d.len()));
        }
        sizes
    }

    #[test]
    fn a_whole_small_answer_goes_in_frames_under_256_bytes_and_others_in_slices() {
        // Whole and at most 2 KiB: every DATA frame under 256 bytes, the trailers last.
        assert_eq!(
            handed_over(&[300, 300], false),
            [Some(255), Some(45), Some(255), Some(45), None]
        );
        assert_eq!(handed_over(&[255], false), [Some(255), None]);
        let most = handed_over(&[2048], false);
        assert_eq!(most.len(), 10, "{most:?}");
        assert!(most.iter().flatten().all(|len| *len <= 255), "{most:?}");
        // Past 2 KiB, or not whole yet (a stream's first messages): 16 KiB slices.
        assert_eq!(handed_over(&[2049], false), [Some(2049), None]);
        assert_eq!(handed_over(&[300], true), [Some(300)]);
    }

    #[test]
    fn an_answer_past_a_budget_is_refused_and_a_dropped_answer_gives_its_bytes_back() {
        let answers = Answers::new(&args(100_000, 50_000, 1 << 20));
        let first = answers.hold(answer(30_000), Some("t/a".into()), None);
        assert_eq!(status(&first), None);
        // The same principal: past its 50,000 bytes.
        let second = answers.hold(answer(30_000), Some("t/a".into()), None);
        assert_eq!(status(&second), Some(Code::ResourceExhausted));
        // Another principal fits the server's budget, a third does not.
        let other = answers.hold(answer(40_000), Some("t/b".into()), None);
        assert_eq!(status(&other), None);
        let third = answers.hold(answer(40_000), Some("t/c".into()), None);
        assert_eq!(status(&third), Some(Code::ResourceExhausted));
        assert_eq!(answers.used(), 70_000);
        drop(first);
        drop(other);
        assert_eq!(answers.used(), 0);
        // Alone, an answer larger than the budget still goes.
        let large = answers.hold(answer(120_000), Some("t/a".into()), None);
        assert_eq!(status(&large), None);
    }

    #[test]
    fn a_connection_past_its_budget_is_refused_and_one_left_unread_past_the_timeout_is_closed() {
        let answers = Answers::new(&args(1 << 20, 1 << 20, 50_000));
        let connection = Connection::detached();
        let held = |p: &str| answers.hold(answer(30_000), Some(p.into()), Some(connection.clone()));
        let first = held("t/a");
        assert_eq!(status(&first), None);
        // Another principal on the same connection: past the connection's 50,000 bytes.
        let second = held("t/b");
        assert_eq!(status(&second), Some(Code::ResourceExhausted));
        let message = tonic::Status::from_header_map(second.headers()).unwrap();
        assert!(message.message().contains("this connection"), "{message:?}");

        // Within the send timeout nothing is closed; past it, the connection is.
        assert_eq!(answers.close_stalled(Instant::now()), 0);
        assert!(!connection.closed());
        let later = Instant::now() + Duration::from_millis(1_001);
        assert_eq!(answers.close_stalled(later), 1);
        assert!(connection.closed());
        // Once the answer is gone, nothing is waiting and nothing more is closed.
        drop(first);
        assert_eq!(answers.used(), 0);
        assert_eq!(answers.close_stalled(later), 0);
    }
}
