//! Credentials the service vouches for: each catalog service's read-only call
//! ([`catalog`]), made through the domain's [`ProviderCalls`] (the outbound module, wired at
//! startup) and read into a [`Verdict`] ([`call`]). The domain makes no connection itself.

pub mod apps;
pub mod call;
pub mod catalog;
pub mod checker;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::crypto::Credentials;

use super::catalog::ServiceDef;
use super::oauth::http::{MAX_RESPONSE_BYTES, ProviderCalls, ProviderRequest};

pub use call::Verdict;

/// How verification runs on this deployment.
#[derive(Clone, Debug)]
pub struct VerifySettings {
    /// Longest a caller waits for a verification (the call included).
    pub timeout: Duration,
    /// How often the scheduled checker verifies each app (jittered by up to a tenth).
    pub interval: Duration,
    /// Checks the scheduled checker runs at once against one provider host, per replica.
    pub per_host_concurrency: usize,
    /// Service id -> base URL replacing the catalog's (tests, GitHub Enterprise).
    pub base_urls: BTreeMap<String, String>,
}

/// What is told of each verification made: its outcome (a label of [`Verdict::OUTCOMES`]).
type Observer = Arc<dyn Fn(&'static str) + Send + Sync>;

/// Makes verification calls; off when built without a transport.
#[derive(Clone, Default)]
pub struct Verifier {
    on: Option<(Arc<dyn ProviderCalls>, VerifySettings)>,
    observer: Option<Observer>,
}

impl Verdict {
    /// Every outcome label [`Verdict::outcome`] answers.
    pub const OUTCOMES: [&'static str; 4] =
        ["verified", "unverified", "rejected", "not_verifiable"];

    /// The outcome's label; `None` when verification is off.
    pub fn outcome(&self) -> Option<&'static str> {
        match self {
            Verdict::Verified { .. } => Some("verified"),
            Verdict::Unverified { .. } => Some("unverified"),
            Verdict::Rejected(_) => Some("rejected"),
            Verdict::NotVerifiable(_) => Some("not_verifiable"),
            Verdict::Off => None,
        }
    }
}

impl Verifier {
    /// Verification off: every verdict is [`Verdict::Off`].
    pub fn off() -> Verifier {
        Verifier::default()
    }

    pub fn new(calls: Arc<dyn ProviderCalls>, settings: VerifySettings) -> Verifier {
        Verifier {
            on: Some((calls, settings)),
            observer: None,
        }
    }

    /// This verifier telling `observe` the outcome of each verification (the metrics).
    pub fn observe(mut self, observe: impl Fn(&'static str) + Send + Sync + 'static) -> Verifier {
        self.observer = Some(Arc::new(observe));
        self
    }

    pub fn is_on(&self) -> bool {
        self.on.is_some()
    }

    pub fn settings(&self) -> Option<&VerifySettings> {
        self.on.as_ref().map(|(_, settings)| settings)
    }

    /// When an app checked at `now` is next due: an interval later, give or take a tenth.
    pub fn next_check(&self, now: i64) -> i64 {
        let interval = self
            .settings()
            .map_or(Duration::from_secs(24 * 3600), |s| s.interval);
        let micros = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX / 4);
        let mut byte = [0u8; 1];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut byte);
        let jitter = micros / 10 * (i64::from(byte[0]) - 128) / 128;
        now.saturating_add(micros + jitter)
    }

    /// What `service`'s provider says of `credentials`, within the settings' timeout.
    pub async fn verify(&self, service: &ServiceDef, credentials: &Credentials) -> Verdict {
        let verdict = self.ask(service, credentials).await;
        if let (Some(observe), Some(outcome)) = (&self.observer, verdict.outcome()) {
            observe(outcome);
        }
        verdict
    }

    async fn ask(&self, service: &ServiceDef, credentials: &Credentials) -> Verdict {
        let Some((calls, settings)) = &self.on else {
            return Verdict::Off;
        };
        let call_def = match (
            &service.verification.call,
            &service.verification.not_verifiable,
        ) {
            (Some(call_def), _) => call_def,
            (None, reason) => return Verdict::NotVerifiable(reason.clone().unwrap_or_default()),
        };
        let overridden = settings.base_urls.get(&service.id).map(String::as_str);
        let prepared = match call::prepare(call_def, credentials, overridden) {
            Ok(prepared) => prepared,
            Err(verdict) => return verdict,
        };
        let headers: Vec<(&str, &str)> = prepared
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.expose()))
            .collect();
        let request = ProviderRequest {
            url: &prepared.url,
            headers: &headers,
            body: match prepared.method {
                catalog::Method::Post => Some(prepared.body.clone().unwrap_or_default()),
                catalog::Method::Get => None,
            },
            max_bytes: MAX_RESPONSE_BYTES,
            public_only: prepared.public_only,
        };
        match tokio::time::timeout(settings.timeout, calls.call(request)).await {
            Err(_) => call::call_failed(super::oauth::http::CallFailed::Timeout),
            Ok(Err(failed)) => call::call_failed(failed),
            Ok(Ok(answer)) => call::read(call_def, &answer, credentials, &prepared.sent),
        }
    }
}
