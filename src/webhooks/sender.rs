//! The HTTP sender of webhooks: a delivery POSTed under the outbound policy for receivers
//! (`crate::outbound`): `https://` (`http://` only to loopback, and loopback at all only with
//! the dev setting), no address inside the deployment's network, checked at create and
//! update and again at every connection, no redirect followed, the timeout, and at most
//! 64 KiB of the answer read (the first KiB kept).

use std::time::{Duration, Instant};

use crate::outbound::{Addresses, BodyLimit, Error as CallError, Outbound, Policy, Refused};

/// Most response bytes read (the rest is dropped with the connection).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most response bytes kept in a delivery record.
pub const KEPT_RESPONSE_BYTES: usize = 1024;
/// Longest wait for a receiver's connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    outbound: Outbound,
}

impl Sender {
    /// A sender to public addresses only, and to loopback (over http too) when
    /// `allow_loopback` (development).
    pub fn new(allow_loopback: bool, timeout: Duration) -> anyhow::Result<Sender> {
        let outbound = Outbound::new(Policy {
            loopback_http: allow_loopback,
            addresses: Addresses::Public {
                loopback: allow_loopback,
            },
            connect_timeout: timeout.min(CONNECT_TIMEOUT),
            ..Policy::new(timeout)
        })?;
        Ok(Sender { outbound })
    }

    /// Whether `url` may receive webhooks now: its scheme, and every address of its host.
    pub async fn check_destination(&self, url: &str) -> Result<(), Refused> {
        self.outbound.check_now(url).await
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
        let timestamp = timestamp.to_string();
        let headers = [
            ("content-type", "application/json"),
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.as_str()),
            ("webhook-signature", signature),
        ];
        let sent = self
            .outbound
            .post(url, &headers, body, BodyLimit::Prefix(MAX_RESPONSE_BYTES))
            .await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(err) => return failed(err, started),
        };
        let status = answer.status;
        let ok = status.is_success();
        Attempt {
            outcome: if ok {
                Outcome::Delivered
            } else {
                Outcome::HttpError
            },
            response_code: Some(status.as_u16()),
            latency: started.elapsed(),
            response_body: stored_text(&answer.body),
            error: if ok {
                String::new()
            } else {
                format!("the receiver answered {status}")
            },
        }
    }
}

/// An attempt that got no answer, and why (never the URL: see `crate::outbound::Error`).
fn failed(err: CallError, started: Instant) -> Attempt {
    let outcome = match &err {
        CallError::Refused(_) => Outcome::DestinationRefused,
        CallError::Timeout => Outcome::Timeout,
        _ => Outcome::ConnectionError,
    };
    Attempt {
        outcome,
        response_code: None,
        latency: started.elapsed(),
        response_body: String::new(),
        error: stored_text(err.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
