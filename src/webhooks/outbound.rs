//! Outbound safety and the HTTP sender.
//!
//! A receiver's URL is `https://` (`http://` only to loopback, and loopback at all only
//! with the dev setting). Its host must not be, or resolve to, an address inside the
//! deployment's network: private, loopback, link-local (the cloud metadata service at
//! 169.254.169.254), unspecified, multicast, reserved, IPv6 unique-local, IPv6 forms that
//! embed an IPv4 address (mapped, translated, compatible, NAT64, 6to4, Teredo), and every
//! other IPv6 special-purpose range that is not globally reachable (discard-only,
//! documentation, benchmarking, SRv6, anything outside 2000::/3). The check runs at
//! create and update, and at every connection: the client's DNS resolver is
//! [`GuardedResolver`], which resolves the name itself and hands the connector only
//! addresses it checked, so a name that rebinds between check and connect cannot slip
//! through. Redirects are never followed; requests time out; response bodies are read up
//! to a cap.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most response bytes read (the rest is dropped with the connection).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most response bytes kept in a delivery record.
pub const KEPT_RESPONSE_BYTES: usize = 1024;

/// Why an address may not receive webhooks, if it may not.
pub fn refused_reason(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4, allow_loopback),
        IpAddr::V6(v6) => refused_v6(v6, allow_loopback),
    }
}

fn refused_v4(ip: Ipv4Addr, allow_loopback: bool) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        return (!allow_loopback).then_some("a loopback address");
    }
    if ip == Ipv4Addr::new(169, 254, 169, 254) {
        return Some("the cloud metadata address");
    }
    if ip.is_link_local() {
        return Some("a link-local address");
    }
    if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        return Some("a private address");
    }
    if a == 0 || ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        return Some("an unspecified, broadcast, multicast or reserved address");
    }
    if (a == 192 && b == 0 && (c == 0 || c == 2))
        || (a == 198 && (b & 0xfe) == 18)
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
    {
        return Some("a special-purpose address");
    }
    None
}

/// IPv6 ranges inside the global unicast range (2000::/3) that may not receive webhooks,
/// from IANA's special-purpose address registry, as (prefix, length, why).
const REFUSED_GLOBAL_V6: [(u128, u8, &str); 4] = [
    // 2001::/32 Teredo (embeds an IPv4 address), 2001:2::/48 benchmarking, ORCHID, and the
    // rest of the IETF protocol assignments: refused whole.
    (
        0x2001_0000 << 96,
        23,
        "an IETF protocol address (Teredo, benchmarking, ORCHID)",
    ),
    (0x2001_0db8 << 96, 32, "a documentation address"),
    // 6to4 embeds an IPv4 address.
    (
        0x2002 << 112,
        16,
        "an IPv6 address embedding an IPv4 address",
    ),
    (0x3fff << 112, 20, "a documentation address"),
];

fn in_prefix(ip: Ipv6Addr, prefix: u128, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == prefix & mask
}

fn refused_v6(ip: Ipv6Addr, allow_loopback: bool) -> Option<&'static str> {
    if ip.is_loopback() {
        return (!allow_loopback).then_some("a loopback address");
    }
    let s = ip.segments();
    if ip.is_unspecified() || ip.is_multicast() {
        return Some("an unspecified or multicast address");
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        return Some("a unique-local address");
    }
    if (s[0] & 0xffc0) == 0xfe80 || (s[0] & 0xffc0) == 0xfec0 {
        return Some("a link-local address");
    }
    // ::/96 (compatible), ::ffff:0:0/96 (mapped), ::ffff:0:0:0/96 (translated),
    // 64:ff9b::/96 and 64:ff9b:1::/48 (NAT64): each can reach an IPv4 address the checks
    // above would refuse.
    if s[..4] == [0; 4] || (s[0] == 0x64 && s[1] == 0xff9b) {
        return Some("an IPv6 address embedding an IPv4 address");
    }
    // Everything reachable is in 2000::/3 (global unicast); outside it are the discard-only
    // 100::/64, the SRv6 5f00::/16 and ranges not allocated at all.
    if (s[0] & 0xe000) != 0x2000 {
        return Some("a special-purpose or unallocated address");
    }
    REFUSED_GLOBAL_V6
        .iter()
        .find(|(prefix, len, _)| in_prefix(ip, *prefix, *len))
        .map(|(_, _, why)| *why)
}

/// Why a destination is refused, for the client (never a secret: the URL's host at most).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Turns a host name into addresses: the system resolver, or a test's.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>>;
}

/// The system resolver (getaddrinfo through tokio).
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(
        &self,
        host: String,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect())
        })
    }
}

/// What may be reached, and how names are resolved.
#[derive(Clone)]
pub struct Policy {
    pub allow_loopback: bool,
    pub lookup: Arc<dyn Lookup>,
}

impl Policy {
    pub fn new(allow_loopback: bool) -> Policy {
        Policy {
            allow_loopback,
            lookup: Arc::new(SystemLookup),
        }
    }

    /// The addresses `host` resolves to, if every one may receive webhooks. A name with
    /// any refused address is refused whole: a receiver cannot pick which one we connect to.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, Refused> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                let lower = host.to_ascii_lowercase();
                let lower = lower.trim_end_matches('.');
                if (lower == "localhost" || lower.ends_with(".localhost")) && !self.allow_loopback {
                    return Err(Refused(format!("{host} is a loopback name")));
                }
                self.lookup
                    .lookup(host.to_owned())
                    .await
                    .map_err(|_| Refused(format!("{host} does not resolve")))?
            }
        };
        if addrs.is_empty() {
            return Err(Refused(format!("{host} does not resolve")));
        }
        for ip in &addrs {
            if let Some(reason) = refused_reason(*ip, self.allow_loopback) {
                return Err(Refused(format!("{host} resolves to {reason}")));
            }
        }
        Ok(addrs)
    }

    /// Whether `url` may receive webhooks now: its scheme, and every address of its host.
    pub async fn check(&self, url: &str) -> Result<(), Refused> {
        let url = reqwest::Url::parse(url).map_err(|_| Refused("not a valid URL".into()))?;
        let host = url
            .host_str()
            .ok_or_else(|| Refused("the URL names no host".into()))?;
        let addrs = self.resolve(host).await?;
        match url.scheme() {
            "https" => Ok(()),
            "http" if self.allow_loopback && addrs.iter().all(IpAddr::is_loopback) => Ok(()),
            "http" => Err(Refused(
                "must be https:// (http:// only to loopback, with the dev setting)".into(),
            )),
            _ => Err(Refused("must be https://".into())),
        }
    }
}

/// reqwest's resolver: resolves through the [`Policy`] so the connector only ever gets
/// addresses that were checked (no gap between check and connect for DNS rebinding).
struct GuardedResolver(Policy);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = policy.resolve(&host).await?;
            let addrs: Vec<SocketAddr> = addrs.into_iter().map(|ip| (ip, 0).into()).collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// How an attempt ended, as stored.
pub use crate::store::DeliveryOutcome as Outcome;

/// One attempt's result.
#[derive(Clone, Debug)]
pub struct Attempt {
    pub outcome: Outcome,
    pub response_code: Option<u16>,
    pub latency: Duration,
    /// The start of the response body as stored ([`stored_text`]).
    pub response_body: String,
    /// Why it failed, for people; empty on success.
    pub error: String,
}

impl Attempt {
    /// An attempt that sent nothing, and why.
    pub fn not_sent(error: String) -> Attempt {
        Attempt {
            outcome: Outcome::NotSent,
            response_code: None,
            latency: Duration::ZERO,
            response_body: String::new(),
            error: stored_text(error.as_bytes()),
        }
    }
}

/// A receiver's bytes as any database stores them: UTF-8 (invalid sequences replaced), NUL
/// replaced (PostgreSQL's text refuses it), cut to [`KEPT_RESPONSE_BYTES`] on a character
/// boundary.
pub fn stored_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(KEPT_RESPONSE_BYTES)]);
    let text = text.replace('\0', "\u{FFFD}");
    crate::domain::error::truncated(&text, KEPT_RESPONSE_BYTES)
}

/// Sends signed webhooks.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: Policy,
}

impl Sender {
    pub fn new(policy: Policy, timeout: Duration) -> anyhow::Result<Sender> {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver(policy.clone())))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .user_agent(concat!(
                "integration-hub-webhooks/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        Ok(Sender { client, policy })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// POSTs `body` to `url` with the Standard Webhooks headers.
    pub async fn send(
        &self,
        url: &str,
        id: &str,
        timestamp: i64,
        signature: &str,
        body: Vec<u8>,
    ) -> Attempt {
        let started = Instant::now();
        let refused = |error: String| Attempt {
            outcome: Outcome::DestinationRefused,
            response_code: None,
            latency: started.elapsed(),
            response_body: String::new(),
            error,
        };
        // A literal address never goes through the resolver: checked here. A name is
        // checked here for its scheme, and again by the resolver at connect.
        if let Err(err) = self.policy.check(url).await {
            return refused(err.0);
        }
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(response) => response,
            Err(err) => return failed(err, started),
        };
        let status = response.status();
        let mut kept = Vec::new();
        let mut read = 0;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    read += chunk.len();
                    let room = KEPT_RESPONSE_BYTES.saturating_sub(kept.len());
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if read >= MAX_RESPONSE_BYTES {
                        break;
                    }
                }
                Ok(None) => break,
                // The status is what counts; a body cut short is kept as far as it came.
                Err(_) => break,
            }
        }
        let ok = status.is_success();
        Attempt {
            outcome: if ok {
                Outcome::Delivered
            } else {
                Outcome::HttpError
            },
            response_code: Some(status.as_u16()),
            latency: started.elapsed(),
            response_body: stored_text(&kept),
            error: if ok {
                String::new()
            } else {
                format!("the receiver answered {status}")
            },
        }
    }
}

/// An attempt that got no response. The message names no URL (reqwest's would, with its
/// query string).
fn failed(err: reqwest::Error, started: Instant) -> Attempt {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    let mut refused = None;
    while let Some(e) = source {
        if let Some(r) = e.downcast_ref::<Refused>() {
            refused = Some(r.0.clone());
        }
        source = e.source();
    }
    let refused = refused.map(|r| stored_text(r.as_bytes()));
    let (outcome, error) = if let Some(reason) = refused {
        (Outcome::DestinationRefused, reason)
    } else if err.is_timeout() {
        (Outcome::Timeout, "no answer within the timeout".to_owned())
    } else if err.is_connect() {
        (Outcome::ConnectionError, "the connection failed".to_owned())
    } else {
        (
            Outcome::ConnectionError,
            stored_text(format!("the request failed: {}", err.without_url()).as_bytes()),
        )
    };
    Attempt {
        outcome,
        response_code: None,
        latency: started.elapsed(),
        response_body: String::new(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str, allow_loopback: bool) -> bool {
        refused_reason(text.parse().unwrap(), allow_loopback).is_some()
    }

    #[test]
    fn internal_addresses_are_refused_and_public_ones_pass() {
        for ip in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "169.254.1.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:8.8.8.8",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            // Translated (RFC 6145), and 127.0.0.1 in it.
            "::ffff:0:7f00:1",
            "::ffff:0:808:808",
            // IPv4-compatible, local-use NAT64.
            "::7f00:1",
            "::808:808",
            "64:ff9b:1::a00:1",
            "64:ff9b::808:808",
            // Discard-only, SRv6, unallocated.
            "100::1",
            "100::ffff:1",
            "5f00::1",
            "4000::1",
            "1::1",
            // IETF protocol assignments: Teredo, benchmarking, ORCHIDv2.
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:20::1",
            "2001:1ff:ffff::1",
            // Documentation, 6to4 of a public address, site-local.
            "2001:db8::1",
            "3fff::1",
            "3fff:fff:ffff::1",
            "2002:808:808::1",
            "fec0::1",
            "ff0e::1",
        ] {
            assert!(refused(ip, false), "{ip} should be refused");
            assert!(
                refused(ip, true),
                "{ip} stays refused with loopback allowed"
            );
        }
        for ip in ["127.0.0.1", "127.1.2.3", "::1"] {
            assert!(refused(ip, false), "{ip}");
            assert!(!refused(ip, true), "{ip} with loopback allowed");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "93.184.216.34",
            // Just past the refused blocks of 2000::/3.
            "2001:200::1",
            "2001:db9::1",
            "2003::1",
            "3ffe::1",
            "3fff:1000::1",
            "2a00:1450:4001::1",
        ] {
            assert!(!refused(ip, false), "{ip} is public");
        }
    }

    #[test]
    fn a_receivers_bytes_are_stored_as_bounded_text_without_nul() {
        let stored = stored_text(b"a\0b\xff\xfec\0");
        assert_eq!(stored, "a\u{FFFD}b\u{FFFD}\u{FFFD}c\u{FFFD}");
        // Invalid bytes triple in size when replaced: still cut to the bound.
        let stored = stored_text(&[0xff; 4 * KEPT_RESPONSE_BYTES]);
        assert!(stored.len() <= KEPT_RESPONSE_BYTES, "{}", stored.len());
        assert!(stored.ends_with('…'));
        for text in ["é".repeat(600), format!("a{}", "é".repeat(600))] {
            assert!(stored_text(text.as_bytes()).len() <= KEPT_RESPONSE_BYTES);
        }
    }

    /// A resolver that answers what the test says, for names no DNS server knows.
    struct Fixed(Vec<(&'static str, Vec<IpAddr>)>);

    impl Lookup for Fixed {
        fn lookup(
            &self,
            host: String,
        ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<IpAddr>>> + Send>> {
            let found = self
                .0
                .iter()
                .find(|(name, _)| *name == host)
                .map(|(_, addrs)| addrs.clone());
            Box::pin(async move { found.ok_or_else(|| std::io::Error::other("no such name")) })
        }
    }

    fn policy(allow_loopback: bool) -> Policy {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        Policy {
            allow_loopback,
            lookup: Arc::new(Fixed(vec![
                ("metadata.example", vec![ip("169.254.169.254")]),
                ("hooks.example", vec![ip("93.184.216.34")]),
                ("mixed.example", vec![ip("93.184.216.34"), ip("10.1.2.3")]),
                ("loop.example", vec![ip("127.0.0.1")]),
                ("localhost", vec![ip("127.0.0.1")]),
            ])),
        }
    }

    #[tokio::test]
    async fn names_are_checked_by_every_address_they_resolve_to() {
        let p = policy(false);
        assert!(p.check("https://hooks.example/in").await.is_ok());
        for url in [
            "https://metadata.example/latest/meta-data",
            "https://mixed.example/",
            "https://loop.example/",
            "https://localhost:8443/",
            "https://LOCALHOST./",
            "https://a.localhost/",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://10.0.0.1/",
            "https://169.254.169.254/",
            "https://[::ffff:169.254.169.254]/",
            "https://[::ffff:0:7f00:1]/",
            "https://[100::1]/",
            "https://unknown.example/",
            "http://hooks.example/",
        ] {
            assert!(p.check(url).await.is_err(), "{url} should be refused");
        }
        let err = p.check("https://metadata.example/").await.unwrap_err();
        assert_eq!(
            err.0,
            "metadata.example resolves to the cloud metadata address"
        );
    }

    #[tokio::test]
    async fn the_dev_setting_allows_loopback_and_http_only_to_loopback() {
        let p = policy(true);
        assert!(p.check("http://localhost:8080/").await.is_ok());
        assert!(p.check("http://127.0.0.1:8080/").await.is_ok());
        assert!(p.check("https://loop.example/").await.is_ok());
        assert!(p.check("http://hooks.example/").await.is_err());
        assert!(p.check("https://metadata.example/").await.is_err());
        assert!(p.check("https://10.0.0.1/").await.is_err());
    }

    /// The resolver reqwest uses is the same check: a name that resolves to a refused
    /// address at connect time is refused then, whatever it resolved to before.
    #[tokio::test]
    async fn the_connection_resolver_refuses_what_the_check_refuses() {
        use reqwest::dns::Resolve;
        let resolver = GuardedResolver(policy(false));
        let name = |s: &str| s.parse::<reqwest::dns::Name>().unwrap();
        assert!(resolver.resolve(name("metadata.example")).await.is_err());
        let addrs: Vec<_> = resolver
            .resolve(name("hooks.example"))
            .await
            .map_err(|e| e.to_string())
            .unwrap()
            .collect();
        assert_eq!(addrs, ["93.184.216.34:0".parse::<SocketAddr>().unwrap()]);
    }
}
