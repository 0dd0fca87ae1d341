//! A unary gRPC load generator on raw HTTP/2 (the `h2` crate), in the manner of h2load:
//! pre-encoded request frames, `connections` connections with `streams` calls in flight on
//! each, and the latency of every call recorded. Unlike h2load it checks every answer's
//! `grpc-status`: a call that fails counts as an error, never as throughput.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::{BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use tokio::net::TcpStream;

/// One gRPC frame: flag 0, 4-byte big-endian length, the message.
pub fn frame(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // The buffer was sized for the message, so encoding cannot run out of room.
    let _ = message.encode(&mut buf);
    buf.freeze()
}

/// One unary method with its requests (each with its bearer token): one request is sent over
/// and over (what a cache answers best); several are picked at random, call by call, the
/// shape of many users each reading their own records.
#[derive(Clone)]
pub struct Call {
    pub path: &'static str,
    requests: Arc<[(Option<String>, Bytes)]>,
}

impl Call {
    pub fn new(path: &'static str, message: &impl prost::Message, token: Option<&str>) -> Call {
        Call::spread(path, [(token.map(str::to_owned), frame(message))])
    }

    /// A call that picks one of `requests` at random each time.
    pub fn spread(
        path: &'static str,
        requests: impl IntoIterator<Item = (Option<String>, Bytes)>,
    ) -> Call {
        Call {
            path,
            requests: requests.into_iter().collect(),
        }
    }

    /// How many distinct requests the call picks from.
    pub fn keys(&self) -> usize {
        self.requests.len()
    }

    /// Every request with its head to `addr` (one head per distinct token, shared by the
    /// requests that carry it).
    fn heads(&self, addr: SocketAddr) -> anyhow::Result<Arc<[(Head, Bytes)]>> {
        let mut heads: std::collections::HashMap<Option<&str>, Head> = Default::default();
        let mut requests = Vec::with_capacity(self.requests.len());
        for (token, body) in self.requests.iter() {
            let head = match heads.get(&token.as_deref()) {
                Some(head) => head.clone(),
                None => {
                    let head = request_head(addr, self.path, token.as_deref())?;
                    heads.insert(token.as_deref(), head.clone());
                    head
                }
            };
            requests.push((head, body.clone()));
        }
        anyhow::ensure!(!requests.is_empty(), "a call without a request");
        Ok(requests.into())
    }
}

/// Sends every request of `call` once, `in_flight` at a time on one connection: what a warm
/// measurement runs first, so that each of its keys has been asked in the last minute. Fails
/// on the first call that fails.
pub async fn sweep(addr: SocketAddr, call: &Call, in_flight: usize) -> anyhow::Result<()> {
    let requests = call.heads(addr)?;
    let send = connect(addr).await?;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight.max(1) {
        let (mut send, requests, next) = (send.clone(), requests.clone(), next.clone());
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((head, body)) = requests.get(i) else {
                    return Ok(());
                };
                match call_once(&mut send, head, body).await {
                    Ok(()) => {}
                    Err(Failure::Call(e) | Failure::Connection(e)) => {
                        anyhow::bail!("sweep of {}: {e}", head.uri)
                    }
                }
            }
        });
    }
    while let Some(joined) = workers.join_next().await {
        joined.context("sweep worker panicked")??;
    }
    Ok(())
}

/// A small xorshift generator: which request a worker sends next (no lock, no allocation).
struct Picker(u64);

impl Picker {
    fn new(worker: usize) -> Picker {
        Picker(0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9))
    }

    fn pick(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

/// How much load: connections x streams in flight, a warm-up, then the measured window.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub connections: usize,
    pub streams: usize,
    pub warmup: Duration,
    pub duration: Duration,
}

/// What one run measured.
pub struct Stats {
    /// CPU time the server process spent in the measured window, when its pid is known.
    pub server_cpu: Option<Duration>,
    /// CPU time this machine's PostgreSQL processes spent in the measured window, when any
    /// runs here ([`postgres_cpu`]).
    pub postgres_cpu: Option<Duration>,
    pub calls: u64,
    /// Calls answered OK over the whole run, warm-up and drain included.
    pub answered: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub window: Duration,
    latencies_us: Vec<u32>,
}

impl Stats {
    /// Calls completed per second in the measured window.
    pub fn rps(&self) -> f64 {
        self.calls as f64 / self.window.as_secs_f64()
    }

    /// The latency below which `p` (0..=1) of the calls finished.
    pub fn percentile(&self, p: f64) -> Duration {
        percentile_us(&self.latencies_us, p)
    }

    /// Server CPU time per completed call.
    pub fn server_cpu_per_call(&self) -> Option<Duration> {
        self.per_call(self.server_cpu)
    }

    /// PostgreSQL's CPU time per completed call (its processes on this machine).
    pub fn postgres_cpu_per_call(&self) -> Option<Duration> {
        self.per_call(self.postgres_cpu)
    }

    fn per_call(&self, cpu: Option<Duration>) -> Option<Duration> {
        let calls = u32::try_from(self.calls).ok().filter(|c| *c > 0)?;
        cpu.map(|cpu| cpu / calls)
    }
}

/// User + system CPU time of a process (all its threads), from `/proc/<pid>/stat`.
pub fn process_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux.
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time of every process on this machine named `postgres` (a PostgreSQL server's
/// backends, WAL writer, checkpointer and the rest): what a local PostgreSQL spends. `None`
/// when none runs here. A backend that exits between two readings takes its time with it;
/// the service keeps its connections, so in a measured window none does.
pub fn postgres_cpu() -> Option<Duration> {
    let mut total = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let named_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|comm| comm.trim_end() == "postgres");
        if let Some(cpu) = named_postgres.then(|| process_cpu(pid)).flatten() {
            total = Some(total.unwrap_or(Duration::ZERO) + cpu);
        }
    }
    total
}

/// `p` (0..=1) of sorted microsecond samples, as a duration (zero without samples).
pub fn percentile_us(sorted: &[u32], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    Duration::from_micros(u64::from(sorted[index]))
}

/// The p50 and p99 of durations (zero without any).
pub fn p50_p99(durations: &[Duration]) -> (Duration, Duration) {
    let mut micros: Vec<u32> = durations
        .iter()
        .map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
        .collect();
    micros.sort_unstable();
    (percentile_us(&micros, 0.50), percentile_us(&micros, 0.99))
}

/// An HTTP/2 connection with large windows (the server's answers are never throttled by us).
pub async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Bytes>> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (send, connection) = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(1 << 24)
        .handshake::<_, Bytes>(tcp)
        .await
        .context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(send)
}

/// The request head of a gRPC call to `path`.
pub fn request_head(addr: SocketAddr, path: &str, token: Option<&str>) -> anyhow::Result<Head> {
    let uri: Uri = format!("http://{addr}{path}").parse()?;
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("te", HeaderValue::from_static("trailers"));
    if let Some(token) = token {
        headers.insert("authorization", format!("Bearer {token}").parse()?);
    }
    Ok(Head { uri, headers })
}

/// A request head, cloned for every call (its parts are reference-counted).
#[derive(Clone)]
pub struct Head {
    uri: Uri,
    headers: HeaderMap,
}

impl Head {
    pub fn request(&self) -> Request<()> {
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Why a call failed: the connection (stop using it) or the call alone.
enum Failure {
    Connection(String),
    Call(String),
}

/// The gRPC status of a header map, as `Err(text)` unless it is OK.
pub fn grpc_status(headers: &HeaderMap) -> Option<Result<(), String>> {
    let status = headers.get("grpc-status")?;
    if status == "0" {
        return Some(Ok(()));
    }
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("");
    Some(Err(format!(
        "grpc-status {} {message}",
        status.to_str().unwrap_or("?")
    )))
}

async fn call_once(
    send: &mut SendRequest<Bytes>,
    head: &Head,
    body: &Bytes,
) -> Result<(), Failure> {
    std::future::poll_fn(|cx| send.poll_ready(cx))
        .await
        .map_err(|e| Failure::Connection(e.to_string()))?;
    let (response, mut stream) = send
        .send_request(head.request(), false)
        .map_err(|e| Failure::Connection(e.to_string()))?;
    stream
        .send_data(body.clone(), true)
        .map_err(|e| Failure::Call(e.to_string()))?;
    let response = response.await.map_err(|e| Failure::Call(e.to_string()))?;
    let (parts, mut body) = response.into_parts();
    if parts.status != http::StatusCode::OK {
        return Err(Failure::Call(format!("HTTP {}", parts.status)));
    }
    // A trailers-only answer carries its status in the headers.
    if let Some(status) = grpc_status(&parts.headers) {
        return status.map_err(Failure::Call);
    }
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| Failure::Call(e.to_string()))?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|e| Failure::Call(e.to_string()))?
        .unwrap_or_default();
    grpc_status(&trailers)
        .unwrap_or_else(|| Err("no grpc-status".to_owned()))
        .map_err(Failure::Call)
}

struct WorkerStats {
    calls: u64,
    answered: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_us: Vec<u32>,
}

/// Sends `call` at the given load and measures.
pub async fn run(
    addr: SocketAddr,
    server_pid: Option<u32>,
    call: &Call,
    load: Load,
) -> anyhow::Result<Stats> {
    let requests = call.heads(addr)?;
    let mut connections = Vec::with_capacity(load.connections);
    for _ in 0..load.connections {
        connections.push(connect(addr).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let measure_to = measure_from + load.duration;
    let mut workers = tokio::task::JoinSet::new();
    for connection in &connections {
        for _ in 0..load.streams {
            let mut send = connection.clone();
            let requests = requests.clone();
            let mut picker = Picker::new(workers.len());
            let stop = stop.clone();
            workers.spawn(async move {
                let mut stats = WorkerStats {
                    calls: 0,
                    answered: 0,
                    errors: 0,
                    first_error: None,
                    latencies_us: Vec::with_capacity(1 << 16),
                };
                while !stop.load(Ordering::Relaxed) {
                    let (head, body) = &requests[picker.pick(requests.len())];
                    let begun = Instant::now();
                    let result = call_once(&mut send, head, body).await;
                    let done = Instant::now();
                    let counted = done >= measure_from && done < measure_to;
                    stats.answered += u64::from(result.is_ok());
                    match result {
                        Ok(()) if counted => {
                            stats.calls += 1;
                            let micros = (done - begun).as_micros();
                            stats
                                .latencies_us
                                .push(u32::try_from(micros).unwrap_or(u32::MAX));
                        }
                        Ok(()) => {}
                        Err(Failure::Call(error)) => {
                            stats.errors += 1;
                            stats.first_error.get_or_insert(error);
                        }
                        Err(Failure::Connection(error)) => {
                            stats.errors += 1;
                            stats.first_error.get_or_insert(error);
                            break;
                        }
                    }
                }
                stats
            });
        }
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_from = server_pid.and_then(process_cpu);
    let postgres_from = postgres_cpu();
    tokio::time::sleep_until(measure_to.into()).await;
    let cpu_to = server_pid.and_then(process_cpu);
    let postgres_to = postgres_cpu();
    stop.store(true, Ordering::Relaxed);
    let mut total = Stats {
        server_cpu: cpu_from.zip(cpu_to).map(|(a, b)| b.saturating_sub(a)),
        postgres_cpu: postgres_from
            .zip(postgres_to)
            .map(|(a, b)| b.saturating_sub(a)),
        calls: 0,
        answered: 0,
        errors: 0,
        first_error: None,
        window: load.duration,
        latencies_us: Vec::new(),
    };
    while let Some(joined) = workers.join_next().await {
        let stats = joined.context("load worker panicked")?;
        total.calls += stats.calls;
        total.answered += stats.answered;
        total.errors += stats.errors;
        if total.first_error.is_none() {
            total.first_error = stats.first_error;
        }
        total.latencies_us.extend(stats.latencies_us);
    }
    total.latencies_us.sort_unstable();
    Ok(total)
}
