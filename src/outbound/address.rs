//! Which addresses a call may reach, and the resolver that checks them at connect time.
//!
//! A policy that refuses internal addresses ([`Addresses::Public`]) refuses a host that is,
//! or resolves to, an address inside the deployment's network: private, loopback (unless
//! allowed), link-local (the cloud metadata service at 169.254.169.254), unspecified,
//! multicast, reserved, IPv6 unique-local, IPv6 forms that embed an IPv4 address (mapped,
//! translated, compatible, NAT64, 6to4, Teredo), and every other IPv6 special-purpose range
//! that is not globally reachable (discard-only, documentation, benchmarking, SRv6, anything
//! outside 2000::/3). The HTTP client resolves names through [`GuardedResolver`], which hands
//! the connector only addresses it checked, so a name that rebinds between a check and the
//! connection cannot slip through.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

/// Why a call was not made, for people: never a secret (the URL's host at most, never its
/// path, query or credentials).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Which addresses may be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addresses {
    /// Any address: endpoints the operator configured (a JWKS URL, a provider's token
    /// endpoint) may well be inside the deployment's network.
    Any,
    /// Only globally reachable ones, and loopback too when `loopback` (development): for
    /// destinations that callers choose (webhook receivers).
    Public { loopback: bool },
}

/// Why an address may not be reached under [`Addresses::Public`], if it may not.
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

/// IPv6 ranges inside the global unicast range (2000::/3) that are refused, from IANA's
/// special-purpose address registry, as (prefix, length, why).
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

/// Whether `host` (without brackets, lowercase, no trailing dot) is a name of the loopback
/// interface (RFC 6761).
fn loopback_name(host: &str) -> bool {
    host == "localhost" || host.ends_with(".localhost")
}

/// The address a host is written as, if it is one (`[::1]` included).
pub(super) fn literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// What may be reached, and how names are resolved.
#[derive(Clone)]
pub(super) struct Reach {
    pub addresses: Addresses,
    pub lookup: Arc<dyn Lookup>,
}

impl Reach {
    /// Refuses `host` when it is written as an address that may not be reached, or is a
    /// loopback name where loopback may not be reached: what can be told without resolving
    /// (a name's addresses are checked by [`Reach::resolve`]).
    pub fn check_written(&self, host: &str) -> Result<(), Refused> {
        let Addresses::Public { loopback } = self.addresses else {
            return Ok(());
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Some(ip) = literal(host) {
            return self.check_addresses(host, &[ip]);
        }
        let lower = host.to_ascii_lowercase();
        if !loopback && loopback_name(lower.trim_end_matches('.')) {
            return Err(Refused(format!("{host} is a loopback name")));
        }
        Ok(())
    }

    fn check_addresses(&self, host: &str, addrs: &[IpAddr]) -> Result<(), Refused> {
        if let Addresses::Public { loopback } = self.addresses {
            for ip in addrs {
                if let Some(reason) = refused_reason(*ip, loopback) {
                    return Err(Refused(format!("{host} resolves to {reason}")));
                }
            }
        }
        Ok(())
    }

    /// The addresses `host` resolves to, if every one may be reached. A name with any
    /// refused address is refused whole: the other side cannot pick which one we connect to.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, Refused> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        self.check_written(host)?;
        let addrs = match literal(host) {
            Some(ip) => vec![ip],
            None => self
                .lookup
                .lookup(host.to_owned())
                .await
                .map_err(|_| Refused(format!("{host} does not resolve")))?,
        };
        if addrs.is_empty() {
            return Err(Refused(format!("{host} does not resolve")));
        }
        self.check_addresses(host, &addrs)?;
        Ok(addrs)
    }
}

/// reqwest's resolver: resolves through the [`Reach`] so the connector only ever gets
/// addresses that were checked (no gap between check and connect for DNS rebinding).
pub(super) struct GuardedResolver(pub Reach);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let reach = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = reach.resolve(&host).await?;
            let addrs: Vec<SocketAddr> = addrs.into_iter().map(|ip| (ip, 0).into()).collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
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

    /// The resolver reqwest uses is the same check: a name that resolves to a refused
    /// address at connect time is refused then, whatever it resolved to before.
    #[tokio::test]
    async fn the_connection_resolver_refuses_what_the_check_refuses() {
        use reqwest::dns::Resolve;
        let resolver = GuardedResolver(Reach {
            addresses: Addresses::Public { loopback: false },
            lookup: crate::outbound::tests::fixed(),
        });
        let name = |s: &str| s.parse::<reqwest::dns::Name>().unwrap();
        assert!(resolver.resolve(name("metadata.example")).await.is_err());
        assert!(resolver.resolve(name("localhost")).await.is_err());
        let addrs: Vec<_> = resolver
            .resolve(name("hooks.example"))
            .await
            .map_err(|e| e.to_string())
            .unwrap()
            .collect();
        assert_eq!(addrs, ["93.184.216.34:0".parse::<SocketAddr>().unwrap()]);
    }
}
