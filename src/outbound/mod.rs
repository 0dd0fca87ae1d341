//! Outbound HTTP: the one policy every call the hub makes goes through (the JWKS, OAuth
//! providers, webhook receivers). A leaf: it imports nothing else of the crate.
//!
//! - **The URL**: `https://`; `http://` only to a loopback host (`localhost` or a loopback
//!   address) and only when the policy allows it; no user name or password in it; only the
//!   hosts of the policy's allow-list when it has one.
//! - **Addresses** ([`address`]): any, or only globally reachable ones (loopback too when
//!   allowed), checked when the URL is checked and again at every connection: the client
//!   resolves names through the same check.
//! - **Redirects** are never followed: a 3xx is an answer like any other.
//! - **Timeouts**: one to connect, one for the whole call (reading the answer included).
//! - **Bodies** are read up to a limit each call gives ([`BodyLimit`]).
//! - **One user agent**, `integration-hub/<version>`.
//! - **Proxies** from the environment (`HTTPS_PROXY`, `NO_PROXY`, ...) only where any address
//!   may be reached, and never to a loopback host: a proxy resolves names itself, past the
//!   address checks.
//!
//! What an [`Error`] says names the URL's host at most: never its path or query, a header,
//! what was sent, or what the other side answered.

pub mod address;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use url::Url;

pub use address::{Addresses, Lookup, Refused, SystemLookup, refused_reason};
use address::{GuardedResolver, Reach};

/// The user agent of every call.
pub const USER_AGENT: &str = concat!("integration-hub/", env!("CARGO_PKG_VERSION"));
/// Longest connect timeout [`Policy::new`] sets.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection is kept for the next call, and how many per host.
const POOL_IDLE: Duration = Duration::from_secs(30);
const POOL_IDLE_PER_HOST: usize = 4;

/// What a caller may reach, and how long it waits.
#[derive(Clone)]
pub struct Policy {
    /// Allow `http://` to a loopback host (development and tests, or a sidecar).
    pub loopback_http: bool,
    /// Which addresses may be reached.
    pub addresses: Addresses,
    /// When set, only these hosts (exact, case-insensitive) are called.
    pub allowed_hosts: Option<Vec<String>>,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest a whole call takes: connecting, the answer and its body.
    pub timeout: Duration,
    /// How names are resolved when addresses are checked.
    pub lookup: Arc<dyn Lookup>,
}

impl Policy {
    /// https only, to any address and any host, within `timeout` (at most 5 s of it to
    /// connect).
    pub fn new(timeout: Duration) -> Policy {
        Policy {
            loopback_http: false,
            addresses: Addresses::Any,
            allowed_hosts: None,
            connect_timeout: timeout.min(DEFAULT_CONNECT_TIMEOUT),
            timeout,
            lookup: Arc::new(SystemLookup),
        }
    }
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("loopback_http", &self.loopback_http)
            .field("addresses", &self.addresses)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// How much of an answer's body a call reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLimit {
    /// The whole body, at most this many bytes: a longer one is [`Error::TooLarge`], and a
    /// body that fails or times out fails the call.
    Whole(usize),
    /// At most this many bytes: the rest is dropped with the connection, and a body cut
    /// short (a failure, the timeout) is kept as far as it came. For callers to whom the
    /// status is what counts.
    Prefix(usize),
}

/// An answer: its status and (as much as the [`BodyLimit`] allowed of) its body.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body of a `200 OK`; any other status is [`Error::Status`].
    pub fn body_if_ok(self) -> Result<Vec<u8>, Error> {
        if self.status == reqwest::StatusCode::OK {
            Ok(self.body)
        } else {
            Err(Error::Status(self.status))
        }
    }
}

/// Why a call gave no answer (or none the caller takes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not called: the URL, or an address of its host, is refused by the policy.
    #[error("{0}")]
    Refused(#[from] Refused),
    /// No answer (or no whole body) within the policy's timeout.
    #[error("no answer within the timeout")]
    Timeout,
    /// No connection could be made.
    #[error("the connection failed")]
    Connect,
    /// The body is longer than [`BodyLimit::Whole`] allows (this many bytes).
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    /// An answer with a status the caller does not take ([`Answer::body_if_ok`]).
    #[error("the answer's status is {0}")]
    Status(reqwest::StatusCode),
    /// Anything else, in the HTTP client's words without the URL.
    #[error("the request failed: {0}")]
    Failed(String),
}

/// `https://`, or `http://` to a loopback host when `loopback_http`: the scheme rule, for
/// outbound calls and for the hub's own URLs alike.
pub fn scheme_allowed(url: &Url, loopback_http: bool) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => loopback_http && is_loopback(url),
        _ => false,
    }
}

/// Whether the URL's host is `localhost` or a loopback address.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Makes calls under one [`Policy`]. Cheap to clone (the connections are shared).
#[derive(Clone)]
pub struct Outbound {
    /// Without proxies: every call of a policy that checks addresses, and calls to loopback.
    direct: reqwest::Client,
    /// With the environment's proxies, when the policy may reach any address.
    proxied: Option<reqwest::Client>,
    policy: Arc<Policy>,
    reach: Reach,
}

impl Outbound {
    pub fn new(policy: Policy) -> anyhow::Result<Outbound> {
        let reach = Reach {
            addresses: policy.addresses,
            lookup: policy.lookup.clone(),
        };
        let direct = client(&policy, &reach, false)?;
        let proxied = match policy.addresses {
            Addresses::Any => Some(client(&policy, &reach, true)?),
            Addresses::Public { .. } => None,
        };
        Ok(Outbound {
            direct,
            proxied,
            policy: Arc::new(policy),
            reach,
        })
    }

    /// `url`, if the policy lets it be called: its scheme, no credentials, its host on the
    /// allow-list, and its host, when written as an address, an address that may be
    /// reached (a name's addresses are checked when it is resolved).
    pub fn check(&self, url: &str) -> Result<Url, Refused> {
        let parsed = Url::parse(url).map_err(|_| Refused("not a valid URL".to_owned()))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(Refused(
                "the URL must not carry a user name or password".to_owned(),
            ));
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Refused("the URL names no host".to_owned()))?
            .to_ascii_lowercase();
        if !scheme_allowed(&parsed, self.policy.loopback_http) {
            return Err(Refused(if self.policy.loopback_http {
                format!("{host}: https is required (http only to a loopback address)")
            } else {
                format!("{host}: https is required")
            }));
        }
        if let Some(allowed) = &self.policy.allowed_hosts
            && !allowed.iter().any(|a| a.eq_ignore_ascii_case(&host))
        {
            return Err(Refused(format!("{host} is not among the allowed hosts")));
        }
        self.reach.check_written(&host)?;
        Ok(parsed)
    }

    /// [`Outbound::check`], and every address the host resolves to now when the policy
    /// checks addresses (a name that does not resolve is refused): for a destination
    /// checked when it is saved. Calls are checked again when they connect.
    pub async fn check_now(&self, url: &str) -> Result<(), Refused> {
        let parsed = self.check(url)?;
        if matches!(self.policy.addresses, Addresses::Public { .. })
            && let Some(host) = parsed.host_str()
        {
            self.reach.resolve(host).await?;
        }
        Ok(())
    }

    /// GETs `url` with `headers`.
    pub async fn get(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        limit: BodyLimit,
    ) -> Result<Answer, Error> {
        self.call(reqwest::Method::GET, url, headers, None, limit)
            .await
    }

    /// POSTs `body` to `url` with `headers` (its content type among them).
    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
        limit: BodyLimit,
    ) -> Result<Answer, Error> {
        self.call(reqwest::Method::POST, url, headers, Some(body), limit)
            .await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
        limit: BodyLimit,
    ) -> Result<Answer, Error> {
        let url = self.check(url)?;
        let client = match &self.proxied {
            Some(proxied) if !is_loopback(&url) => proxied,
            _ => &self.direct,
        };
        let mut request = client.request(method, url);
        for (name, value) in headers {
            // Neither is repeated in the error: a value may be a secret.
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::Failed("a header name is not valid".to_owned()))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| Error::Failed(format!("the {name} header is not valid")))?;
            if name == reqwest::header::AUTHORIZATION {
                value.set_sensitive(true);
            }
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.map_err(failure)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = read(response, limit).await?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// The HTTP client of a policy: no redirects, its timeouts, the one user agent, and, when
/// addresses are checked, the guarded resolver.
fn client(policy: &Policy, reach: &Reach, proxies: bool) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(policy.timeout)
        .connect_timeout(policy.connect_timeout.min(policy.timeout))
        .pool_idle_timeout(POOL_IDLE)
        .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
        .user_agent(USER_AGENT);
    if !proxies {
        builder = builder.no_proxy();
    }
    if matches!(reach.addresses, Addresses::Public { .. }) {
        builder = builder.dns_resolver(Arc::new(GuardedResolver(reach.clone())));
    }
    Ok(builder.build()?)
}

/// Reads the body as `limit` says.
async fn read(mut response: reqwest::Response, limit: BodyLimit) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    match limit {
        BodyLimit::Whole(max) => {
            if response.content_length().is_some_and(|n| n > max as u64) {
                return Err(Error::TooLarge(max));
            }
            while let Some(chunk) = response.chunk().await.map_err(failure)? {
                if body.len() + chunk.len() > max {
                    return Err(Error::TooLarge(max));
                }
                body.extend_from_slice(&chunk);
            }
        }
        BodyLimit::Prefix(max) => {
            while body.len() < max {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        let room = max - body.len();
                        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        }
    }
    Ok(body)
}

/// A call that got no answer, described without the URL (reqwest's words would carry it,
/// query string and all). A refusal of the resolver at connect time is found among the
/// error's sources.
fn failure(err: reqwest::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<Refused>() {
            return Error::Refused(refused.clone());
        }
        source = e.source();
    }
    if err.is_timeout() {
        Error::Timeout
    } else if err.is_connect() {
        Error::Connect
    } else {
        Error::Failed(err.without_url().to_string())
    }
}

#[cfg(test)]
mod tests;
