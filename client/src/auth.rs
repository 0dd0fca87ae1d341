//! The bearer token every call carries: a static token, one made per request by a callback,
//! or one fetched by a (sync or async) callback and kept until it expires.
//!
//! [`BearerAuth`] is a tonic [`Interceptor`]: it sets `authorization: Bearer <token>` on each
//! request, marked sensitive. The token never appears in a `Debug` output or in an error.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// How long before its expiry a cached token is replaced, so a call never sets out with a
/// token that expires on the way.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(30);

/// A token and when it stops being valid, as a token callback returns it.
#[derive(Clone)]
pub struct Token {
    value: String,
    expires_at: Instant,
}

impl Token {
    /// A token valid until `expires_at`.
    pub fn new(value: impl Into<String>, expires_at: Instant) -> Token {
        Token {
            value: value.into(),
            expires_at,
        }
    }

    /// A token valid for `ttl` from now.
    pub fn valid_for(value: impl Into<String>, ttl: Duration) -> Token {
        Token::new(value, Instant::now() + ttl)
    }

    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"[REDACTED]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A token callback failed, or gave something that cannot be a header value. Its message is
/// the callback's own (it must not contain the token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenError(pub String);

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no bearer token: {}", self.0)
    }
}

impl std::error::Error for TokenError {}

type SyncFetch = dyn Fn() -> Result<Token, TokenError> + Send + Sync;
type AsyncFetch =
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Token, TokenError>> + Send>> + Send + Sync;

enum Source {
    None,
    Static(AsciiMetadataValue),
    PerRequest(Box<dyn Fn() -> String + Send + Sync>),
    Refreshing(Box<SyncFetch>),
    RefreshingAsync {
        fetch: Box<AsyncFetch>,
        /// One fetch at a time: concurrent callers wait for it rather than each fetching.
        single_flight: tokio::sync::Mutex<()>,
    },
}

struct Cached {
    header: AsciiMetadataValue,
    /// When the token should be replaced (its expiry less the margin).
    refresh_at: Instant,
}

struct Inner {
    source: Source,
    cache: Mutex<Option<Cached>>,
    /// The refresh margin, in milliseconds.
    margin_ms: AtomicU64,
}

/// The bearer token of every call: an [`Interceptor`] for the generated clients, and what
/// [`crate::Client`] uses.
///
/// Cloning is cheap and clones share the cached token.
#[derive(Clone)]
pub struct BearerAuth(Arc<Inner>);

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.0.source {
            Source::None => "none",
            Source::Static(_) => "static",
            Source::PerRequest(_) => "per request",
            Source::Refreshing(_) => "refreshing",
            Source::RefreshingAsync { .. } => "refreshing (async)",
        };
        write!(f, "BearerAuth({kind}, [REDACTED])")
    }
}

fn header(token: &str) -> Result<AsciiMetadataValue, TokenError> {
    let mut value: AsciiMetadataValue = format!("Bearer {token}").parse().map_err(|_| {
        // The value itself stays out of the message.
        TokenError("the token has characters a header cannot carry".to_owned())
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn unauthenticated(err: TokenError) -> Status {
    Status::unauthenticated(err.to_string())
}

impl BearerAuth {
    fn with_source(source: Source) -> BearerAuth {
        BearerAuth(Arc::new(Inner {
            source,
            cache: Mutex::new(None),
            margin_ms: AtomicU64::new(DEFAULT_REFRESH_MARGIN.as_millis() as u64),
        }))
    }

    /// No token: only health and reflection answer without one.
    pub fn none() -> BearerAuth {
        BearerAuth::with_source(Source::None)
    }

    /// The same token on every call.
    pub fn from_static(token: &str) -> Result<BearerAuth, TokenError> {
        Ok(BearerAuth::with_source(Source::Static(header(token)?)))
    }

    /// `token` is called for every request (every attempt of a retried call, every reconnect
    /// of a watch): for a token kept fresh elsewhere, such as a file a sidecar rewrites.
    pub fn per_request(token: impl Fn() -> String + Send + Sync + 'static) -> BearerAuth {
        BearerAuth::with_source(Source::PerRequest(Box::new(token)))
    }

    /// `fetch` is called when there is no token yet, when the current one is within the
    /// refresh margin ([`DEFAULT_REFRESH_MARGIN`]) of its expiry, and after the server refused
    /// it (UNAUTHENTICATED). It runs inside the interceptor, so it must not block for long;
    /// use [`BearerAuth::refreshing_async`] for a token that comes over the network.
    pub fn refreshing(
        fetch: impl Fn() -> Result<Token, TokenError> + Send + Sync + 'static,
    ) -> BearerAuth {
        BearerAuth::with_source(Source::Refreshing(Box::new(fetch)))
    }

    /// Like [`BearerAuth::refreshing`], with an async `fetch` (an identity provider's token
    /// endpoint, say). [`crate::Client`] awaits it before each call; with the generated clients
    /// directly, await [`BearerAuth::ready`] before a call.
    pub fn refreshing_async<F, Fut>(fetch: F) -> BearerAuth
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Token, TokenError>> + Send + 'static,
    {
        BearerAuth::with_source(Source::RefreshingAsync {
            fetch: Box::new(move || Box::pin(fetch())),
            single_flight: tokio::sync::Mutex::new(()),
        })
    }

    /// Replaces a cached token this much before its expiry instead of
    /// [`DEFAULT_REFRESH_MARGIN`] (for this value and its clones).
    pub fn with_refresh_margin(self, margin: Duration) -> BearerAuth {
        let millis = u64::try_from(margin.as_millis()).unwrap_or(u64::MAX);
        self.0.margin_ms.store(millis, Ordering::Relaxed);
        self
    }

    /// Whether the token comes from a callback that can give a new one.
    pub fn can_refresh(&self) -> bool {
        matches!(
            self.0.source,
            Source::Refreshing(_) | Source::RefreshingAsync { .. }
        )
    }

    /// Forgets the cached token, so the next call fetches a new one. [`crate::Client`] does
    /// this when the server answers UNAUTHENTICATED.
    pub fn invalidate(&self) {
        *self.lock_cache() = None;
    }

    /// Makes sure a fresh token is cached (fetching it with an async callback if needed).
    /// Does nothing for the other kinds of token.
    pub async fn ready(&self) -> Result<(), TokenError> {
        let Source::RefreshingAsync {
            fetch,
            single_flight,
        } = &self.0.source
        else {
            return Ok(());
        };
        if self.cached().is_some() {
            return Ok(());
        }
        let _flight = single_flight.lock().await;
        // Another caller may have fetched it while this one waited.
        if self.cached().is_some() {
            return Ok(());
        }
        let entry = self.entry(&fetch().await?)?;
        *self.lock_cache() = Some(entry);
        Ok(())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        // The cache holds no invariant a panicking holder could break.
        self.0.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cached(&self) -> Option<AsciiMetadataValue> {
        let cache = self.lock_cache();
        cache
            .as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.header.clone())
    }

    /// What to cache for `token`: its header and when to replace it.
    fn entry(&self, token: &Token) -> Result<Cached, TokenError> {
        let margin = Duration::from_millis(self.0.margin_ms.load(Ordering::Relaxed));
        Ok(Cached {
            header: header(&token.value)?,
            refresh_at: token
                .expires_at
                .checked_sub(margin)
                .unwrap_or(token.expires_at),
        })
    }

    /// The header value for the next request, or why there is none.
    fn authorization(&self) -> Result<Option<AsciiMetadataValue>, TokenError> {
        match &self.0.source {
            Source::None => Ok(None),
            Source::Static(value) => Ok(Some(value.clone())),
            Source::PerRequest(token) => header(&token()).map(Some),
            Source::Refreshing(fetch) => {
                // Held across the fetch: concurrent calls wait for one fetch.
                let mut cache = self.lock_cache();
                if let Some(c) = cache.as_ref().filter(|c| Instant::now() < c.refresh_at) {
                    return Ok(Some(c.header.clone()));
                }
                let entry = self.entry(&fetch()?)?;
                let value = entry.header.clone();
                *cache = Some(entry);
                Ok(Some(value))
            }
            Source::RefreshingAsync { .. } => self.cached().map(Some).ok_or_else(|| {
                TokenError(
                    "the async token is not fetched yet or expired: await BearerAuth::ready() before the call"
                        .to_owned(),
                )
            }),
        }
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = self.authorization().map_err(unauthenticated)? {
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn sent(auth: &mut BearerAuth) -> Result<String, Status> {
        let request = auth.call(Request::new(()))?;
        Ok(request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default())
    }

    #[test]
    fn a_static_token_is_sent_as_a_sensitive_bearer_header() {
        let mut auth = BearerAuth::from_static("tok-1").unwrap();
        assert_eq!(sent(&mut auth).unwrap(), "Bearer tok-1");
        let request = auth.call(Request::new(())).unwrap();
        assert!(
            request
                .metadata()
                .get("authorization")
                .unwrap()
                .is_sensitive()
        );
        assert_eq!(sent(&mut BearerAuth::none()).unwrap(), "");
    }

    #[test]
    fn a_per_request_callback_runs_for_every_request() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let mut auth = BearerAuth::per_request(move || {
            format!("tok-{}", counter.fetch_add(1, Ordering::SeqCst))
        });
        assert_eq!(sent(&mut auth).unwrap(), "Bearer tok-0");
        assert_eq!(sent(&mut auth).unwrap(), "Bearer tok-1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_refreshing_token_is_fetched_again_only_when_it_expires_or_is_refused() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let mut auth = BearerAuth::refreshing(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            // The first token is already within the margin; the others last an hour.
            let ttl = if n == 0 {
                Duration::ZERO
            } else {
                Duration::from_secs(3600)
            };
            Ok(Token::valid_for(format!("tok-{n}"), ttl))
        });
        assert_eq!(sent(&mut auth).unwrap(), "Bearer tok-0");
        assert_eq!(sent(&mut auth).unwrap(), "Bearer tok-1");
        assert_eq!(sent(&mut auth).unwrap(), "Bearer tok-1");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        auth.invalidate();
        assert_eq!(sent(&mut auth).unwrap(), "Bearer tok-2");
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_async_token_is_fetched_once_by_ready_and_refused_without_it() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let mut auth = BearerAuth::refreshing_async(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok(Token::valid_for(
                    format!("tok-{n}"),
                    Duration::from_secs(3600),
                ))
            }
        });
        let refused = sent(&mut auth).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        let (a, b) = tokio::join!(auth.ready(), auth.ready());
        a.unwrap();
        b.unwrap();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "one fetch for concurrent callers"
        );
        assert_eq!(sent(&mut auth).unwrap(), "Bearer tok-0");
    }

    #[test]
    fn neither_debug_output_nor_errors_show_the_token() {
        let secret = "eyJhbGciOiJIUzI1NiJ9.secret-part";
        let auth = BearerAuth::from_static(secret).unwrap();
        assert!(!format!("{auth:?}").contains("secret-part"));
        let token = Token::valid_for(secret, Duration::from_secs(1));
        assert!(!format!("{token:?}").contains("secret-part"));
        let bad = format!("{secret}\nInjected: header");
        let err = BearerAuth::from_static(&bad).unwrap_err();
        assert!(!err.to_string().contains("secret-part"), "{err}");
        let mut failing = BearerAuth::refreshing(|| Err(TokenError("the IdP is down".into())));
        let status = sent(&mut failing).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert!(status.message().contains("the IdP is down"));
    }
}
