//! The public keys of the JWKS file and URL, kept fresh off the request path.
//!
//! One background task owns every read of the file and every fetch of the URL.
//! It refreshes on a timer, and when a request meets an unknown `kid` and asks
//! for it. Such requests are rate-limited (at most one per
//! `min_refresh_interval`, so a stream of tokens with made-up `kid`s cannot
//! turn us into a load generator against the identity provider), and the
//! request waits for the refresh at most `request_wait` before it is refused:
//! the fetch itself carries on in the task, never in a request.
//!
//! A source that fails keeps its last good keys (an identity provider that
//! is briefly down must not log everybody out); a source that answers with
//! fewer keys loses the others at once (that is how a key is revoked).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::AuthError;
use super::jwks::{KeySet, MAX_JWKS_BYTES, ParseReport, PublicKey};
use crate::outbound::{BodyLimit, Error as CallError, Outbound, Policy};

/// Default time between two background refreshes.
pub const DEFAULT_JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// Default least time between two refreshes asked for by unknown `kid`s.
pub const DEFAULT_JWKS_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Default longest time a request waits for such a refresh.
pub const DEFAULT_JWKS_REQUEST_WAIT: Duration = Duration::from_millis(500);
/// Default timeout of one read or fetch.
pub const DEFAULT_JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Where public keys come from and how they are kept fresh.
#[derive(Clone, Debug)]
pub struct JwksConfig {
    /// A JWKS file, re-read on every refresh.
    pub file: Option<PathBuf>,
    /// A JWKS URL: `https://`, or `http://` to a loopback address only, without
    /// credentials. Redirects are not followed.
    pub url: Option<String>,
    /// Time between background refreshes; default 5 minutes.
    pub refresh_interval: Duration,
    /// Least time between two refreshes triggered by unknown `kid`s; default 30 s.
    pub min_refresh_interval: Duration,
    /// Longest a request waits for a refresh it triggered before it is
    /// refused; default 500 ms.
    pub request_wait: Duration,
    /// Timeout of one file read or URL fetch; default 5 s.
    pub fetch_timeout: Duration,
}

impl Default for JwksConfig {
    fn default() -> Self {
        JwksConfig {
            file: None,
            url: None,
            refresh_interval: DEFAULT_JWKS_REFRESH_INTERVAL,
            min_refresh_interval: DEFAULT_JWKS_MIN_REFRESH_INTERVAL,
            request_wait: DEFAULT_JWKS_REQUEST_WAIT,
            fetch_timeout: DEFAULT_JWKS_FETCH_TIMEOUT,
        }
    }
}

impl JwksConfig {
    /// Whether any key source is configured.
    pub fn is_configured(&self) -> bool {
        self.file.is_some() || self.url.is_some()
    }
}

/// The keys of every source, and the refresh machinery.
pub(crate) struct KeyStore {
    file: Option<PathBuf>,
    /// The URL (checked), and the outbound calls that fetch it.
    url: Option<(String, Outbound)>,
    timing: JwksConfig,
    keys: RwLock<Keys>,
    /// Counts key set replacements: whatever was verified under an older count may no longer
    /// verify (a key was rotated out), so caches of verified tokens compare it.
    epoch: std::sync::atomic::AtomicU64,
    demand: Mutex<Demand>,
    /// Wakes the refresh task for a requested refresh.
    wake: Arc<Notify>,
    /// The highest request number whose refresh has finished. Requests wait on it.
    done: watch::Sender<u64>,
    /// Dropped with the store; ends the refresh task.
    _alive: watch::Sender<()>,
}

#[derive(Default)]
struct Keys {
    file: KeySet,
    url: KeySet,
    merged: Arc<KeySet>,
}

#[derive(Default)]
struct Demand {
    /// When the last refresh was requested by a request.
    last: Option<Instant>,
    /// Requests numbered in order; the task serves all up to this one.
    requested: u64,
}

fn config_error(reason: impl Into<String>) -> AuthError {
    AuthError::Invalid(reason.into())
}

impl KeyStore {
    /// Checks the sources, loads them once, and starts the refresh task.
    ///
    /// A file that cannot be read or is not a key set is a configuration
    /// error. An unreachable URL is not (the identity provider may come up
    /// after us): it is logged, and retried every `min_refresh_interval`
    /// until it answers.
    pub(crate) async fn start(config: JwksConfig) -> Result<Arc<KeyStore>, AuthError> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| config_error("key refresh needs a tokio runtime"))?;
        if config.min_refresh_interval.is_zero()
            || config.refresh_interval.is_zero()
            || config.fetch_timeout.is_zero()
        {
            return Err(config_error("JWKS refresh intervals must not be zero"));
        }
        let url = match &config.url {
            Some(url) => Some(checked_url(url, config.fetch_timeout)?),
            None => None,
        };
        let file_keys = match &config.file {
            Some(path) => {
                let (set, report) =
                    tokio::time::timeout(config.fetch_timeout, read_file(path.clone()))
                        .await
                        .map_err(|_| config_error("reading the JWKS file timed out"))?
                        .map_err(|e| config_error(format!("the JWKS file: {e}")))?;
                log_loaded("file", &report);
                set
            }
            None => KeySet::default(),
        };
        let (alive, alive_rx) = watch::channel(());
        let store = Arc::new(KeyStore {
            file: config.file.clone(),
            url,
            timing: config,
            keys: RwLock::new(Keys {
                merged: Arc::new(file_keys.clone()),
                file: file_keys,
                url: KeySet::default(),
            }),
            epoch: std::sync::atomic::AtomicU64::new(0),
            demand: Mutex::new(Demand::default()),
            wake: Arc::new(Notify::new()),
            done: watch::channel(0).0,
            _alive: alive,
        });
        let mut healthy = true;
        if store.url.is_some() {
            healthy = store.fetch_url_once().await;
        }
        handle.spawn(refresh_task(Arc::downgrade(&store), alive_rx, healthy));
        Ok(store)
    }

    /// The key for `kid`. An unknown `kid` asks for a refresh (rate-limited)
    /// and waits for it at most `request_wait`.
    pub(crate) async fn key(&self, kid: &str) -> Result<Arc<PublicKey>, AuthError> {
        if let Some(key) = self.current().get(kid) {
            return Ok(key);
        }
        let (target, mut done) = {
            let mut demand = self.demand.lock().unwrap_or_else(PoisonError::into_inner);
            // A refresh already asked for and not finished: wait for that one
            // rather than be refused by the rate limit (a burst of requests
            // with a freshly rotated key all get it). `wait_for` checks the
            // current value first, so one finishing before we wait is not missed.
            let done = self.done.subscribe();
            let in_flight = demand.requested > *done.borrow();
            if !in_flight {
                let allowed = demand
                    .last
                    .is_none_or(|last| last.elapsed() >= self.timing.min_refresh_interval);
                if !allowed {
                    return Err(AuthError::Invalid(
                        "unknown key id (key refresh rate-limited)".to_owned(),
                    ));
                }
                demand.last = Some(Instant::now());
                demand.requested += 1;
                self.wake.notify_one();
            }
            (demand.requested, done)
        };
        let finished =
            tokio::time::timeout(self.timing.request_wait, done.wait_for(|d| *d >= target))
                .await
                .is_ok_and(|r| r.is_ok());
        if !finished {
            return Err(AuthError::Invalid(
                "unknown key id (key refresh did not finish in time)".to_owned(),
            ));
        }
        self.current()
            .get(kid)
            .ok_or_else(|| AuthError::Invalid("unknown key id".to_owned()))
    }

    /// Changes whenever the key set is replaced.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .merged
            .clone()
    }

    /// Re-reads the file and re-fetches the URL (concurrently). Returns
    /// whether every source answered.
    async fn refresh(&self) -> bool {
        let file = async {
            match &self.file {
                Some(path) => Some(
                    tokio::time::timeout(self.timing.fetch_timeout, read_file(path.clone()))
                        .await
                        .unwrap_or(Err("reading the file timed out".to_owned())),
                ),
                None => None,
            }
        };
        let url = async {
            match &self.url {
                Some((url, outbound)) => Some(fetch(outbound, url).await),
                None => None,
            }
        };
        let (file, url) = tokio::join!(file, url);
        let mut healthy = true;
        if let Some(result) = file {
            healthy &= self.install("file", result, |keys| &mut keys.file);
        }
        if let Some(result) = url {
            healthy &= self.install("url", result, |keys| &mut keys.url);
        }
        healthy
    }

    async fn fetch_url_once(&self) -> bool {
        match &self.url {
            Some((url, outbound)) => {
                let result = fetch(outbound, url).await;
                self.install("url", result, |keys| &mut keys.url)
            }
            None => true,
        }
    }

    /// Replaces one source's keys with a fresh set, or keeps them on failure.
    fn install(
        &self,
        source: &'static str,
        result: Result<(KeySet, ParseReport), String>,
        slot: impl FnOnce(&mut Keys) -> &mut KeySet,
    ) -> bool {
        match result {
            Ok((set, report)) => {
                log_loaded(source, &report);
                let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
                *slot(&mut keys) = set;
                let (merged, ambiguous) = KeySet::merge([&keys.file, &keys.url]);
                if ambiguous > 0 {
                    tracing::warn!(
                        ambiguous,
                        "the JWKS file and URL give different keys for the same kid; those kids are not used"
                    );
                }
                if merged.is_empty() {
                    tracing::warn!("no usable public key from any JWKS source");
                }
                keys.merged = Arc::new(merged);
                self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                true
            }
            Err(reason) => {
                tracing::warn!(source, %reason, "JWKS refresh failed; keeping the previous keys");
                false
            }
        }
    }
}

fn log_loaded(source: &'static str, report: &ParseReport) {
    tracing::debug!(
        source,
        usable = report.usable,
        skipped = report.skipped,
        ambiguous = report.ambiguous,
        "JWKS loaded"
    );
    if report.usable == 0 {
        tracing::warn!(source, "the JWKS holds no usable key");
    }
}

/// The refresh loop. Holds the store only while refreshing, so dropping the
/// verifier drops the store, which ends this task.
async fn refresh_task(store: Weak<KeyStore>, mut alive: watch::Receiver<()>, mut healthy: bool) {
    loop {
        let (wake, pause) = match store.upgrade() {
            Some(s) => (
                s.wake.clone(),
                // After a failure, try again sooner than the usual interval.
                if healthy {
                    s.timing.refresh_interval
                } else {
                    s.timing.min_refresh_interval
                },
            ),
            None => return,
        };
        tokio::select! {
            // Err: the store (and its sender) is gone.
            changed = alive.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(pause) => {}
            _ = wake.notified() => {}
        }
        let Some(store) = store.upgrade() else { return };
        // Every request numbered up to here is served by this refresh, since
        // it reads the sources after they asked.
        let serving = store
            .demand
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .requested;
        healthy = store.refresh().await;
        store.done.send_if_modified(|done| {
            let advanced = serving > *done;
            if advanced {
                *done = serving;
            }
            advanced
        });
    }
}

/// `https://`, or `http://` to a loopback host (a local test server or a sidecar): a key
/// set fetched in clear over a network could be replaced in transit, and with it every key
/// we trust. Any address: the URL is the operator's, and identity providers run inside
/// networks too. The fetch timeout covers the whole call, at most 5 s of it connecting.
fn checked_url(text: &str, timeout: Duration) -> Result<(String, Outbound), AuthError> {
    let outbound = Outbound::new(Policy {
        loopback_http: true,
        ..Policy::new(timeout)
    })
    .map_err(|_| config_error("cannot build the HTTP client for the JWKS URL"))?;
    let url = outbound
        .check(text)
        .map_err(|refused| config_error(format!("the JWKS URL: {refused}")))?;
    Ok((url.to_string(), outbound))
}

async fn read_file(path: PathBuf) -> Result<(KeySet, ParseReport), String> {
    let bytes = read_limited(&path).await?;
    KeySet::parse(&bytes).map_err(str::to_owned)
}

async fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| format!("cannot open {}: {}", path.display(), e.kind()))?;
    let mut bytes = Vec::new();
    // One byte over the limit is enough to know it is too large.
    file.take(MAX_JWKS_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))?;
    Ok(bytes)
}

/// GET the URL: 200 only, no redirects, at most [`MAX_JWKS_BYTES`], within the fetch
/// timeout. Errors name the URL (configuration, not a secret: credentials in it are refused
/// up front) but no response content.
async fn fetch(outbound: &Outbound, url: &str) -> Result<(KeySet, ParseReport), String> {
    let body = outbound
        .get(
            url,
            &[("accept", "application/json")],
            BodyLimit::Whole(MAX_JWKS_BYTES),
        )
        .await
        .and_then(|answer| answer.body_if_ok())
        .map_err(|err| match err {
            CallError::Status(status) => format!("GET {url} answered {status}"),
            CallError::TooLarge(_) => format!("GET {url}: the key set is larger than 1 MiB"),
            CallError::Timeout => format!("GET {url} timed out"),
            other => format!("GET {url} failed: {other}"),
        })?;
    KeySet::parse(&body).map_err(|e| format!("GET {url}: {e}"))
}
