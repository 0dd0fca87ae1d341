//! Credentials the service vouches for: each catalog service's read-only call
//! ([`catalog`]), made through the domain's [`ProviderCalls`] (the outbound module, wired at
//! startup) and read into a [`Verdict`] ([`call`]). The domain makes no connection itself.

pub mod apps;
pub mod call;
pub mod catalog;
pub mod checker;
pub mod scopes;

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

    /// The interval between an app's checks, in microseconds.
    fn interval_micros(&self) -> i64 {
        let interval = self
            .settings()
            .map_or(Duration::from_secs(24 * 3600), |s| s.interval);
        i64::try_from(interval.as_micros()).unwrap_or(i64::MAX / 4)
    }

    /// When an app checked at `now` is next due: an interval later, give or take a tenth.
    pub fn next_check(&self, now: i64) -> i64 {
        let micros = self.interval_micros();
        let tenth = micros / 10;
        now.saturating_add(micros - tenth + random_below(2 * tenth))
    }

    /// When an app that joins the schedule at `now` is first due: at a random time within
    /// the next interval, so a fleet that joins at once is not checked at once.
    pub fn first_check(&self, now: i64) -> i64 {
        now.saturating_add(random_below(self.interval_micros()))
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

/// A random number in `0..max` (0 when `max` is not positive).
fn random_below(max: i64) -> i64 {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    let max = u64::try_from(max).unwrap_or(0);
    if max == 0 {
        return 0;
    }
    i64::try_from(u64::from_le_bytes(bytes) % max).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Never;

    impl ProviderCalls for Never {
        fn check(&self, _: &str) -> Result<url::Url, String> {
            Err("never".into())
        }

        fn call<'a>(
            &'a self,
            _: ProviderRequest<'a>,
        ) -> futures_util::future::BoxFuture<
            'a,
            Result<super::super::oauth::http::HttpAnswer, super::super::oauth::http::CallFailed>,
        > {
            Box::pin(async { Err(super::super::oauth::http::CallFailed::Failed) })
        }
    }

    #[test]
    fn checks_come_due_an_interval_later_give_or_take_a_tenth_and_joiners_within_one() {
        let verifier = Verifier::new(
            Arc::new(Never),
            VerifySettings {
                timeout: Duration::from_secs(1),
                interval: Duration::from_secs(100),
                per_host_concurrency: 1,
                base_urls: BTreeMap::new(),
            },
        );
        let (now, interval) = (1_000_000_i64, 100_000_000_i64);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1000 {
            let next = verifier.next_check(now) - now;
            assert!(
                (interval * 9 / 10..interval * 11 / 10).contains(&next),
                "{next}"
            );
            let first = verifier.first_check(now) - now;
            assert!((0..interval).contains(&first), "{first}");
            seen.insert(next / 1_000_000);
        }
        assert!(seen.len() > 10, "jittered: {seen:?}");
        assert_eq!(random_below(0), 0);
        assert_eq!(random_below(-5), 0);
    }
}
