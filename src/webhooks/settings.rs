//! The webhook settings of `serve` (`INTEGRATION_HUB_WEBHOOK_*`).

use std::time::Duration;

use clap::Args;

/// How webhooks are delivered.
#[derive(Clone, Debug, Args)]
pub struct WebhookArgs {
    /// Development only: allow `http://` URLs and loopback addresses (127.0.0.0/8, ::1,
    /// `localhost`) as webhook receivers. Private, link-local and metadata addresses stay
    /// refused.
    #[arg(long, env = "INTEGRATION_HUB_WEBHOOK_ALLOW_LOOPBACK")]
    pub webhook_allow_loopback: bool,

    /// Delay before the first retry of a failed delivery, in milliseconds; each further
    /// retry waits twice as long (with jitter), up to the maximum.
    #[arg(long, env = "INTEGRATION_HUB_WEBHOOK_RETRY_INITIAL_MS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_initial_ms: u64,

    /// Longest wait between two attempts, in milliseconds.
    #[arg(long, env = "INTEGRATION_HUB_WEBHOOK_RETRY_MAX_MS", default_value_t = 3_600_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_max_ms: u64,

    /// How long an event is retried before the subscription is disabled, in seconds.
    #[arg(long, env = "INTEGRATION_HUB_WEBHOOK_RETRY_WINDOW_SECS", default_value_t = 24 * 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_retry_window_secs: u64,

    /// Timeout of one delivery (connect, send, and read the answer), in milliseconds.
    #[arg(long, env = "INTEGRATION_HUB_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=300_000))]
    pub webhook_timeout_ms: u64,

    /// How long a replica holds a subscription's delivery lease without renewing it, in
    /// seconds: a replica that dies is replaced after this.
    #[arg(long, env = "INTEGRATION_HUB_WEBHOOK_LEASE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub webhook_lease_secs: u64,

    /// How often a replica looks for subscriptions with something to deliver, in
    /// milliseconds (it also looks whenever an event is appended).
    #[arg(long, env = "INTEGRATION_HUB_WEBHOOK_POLL_MS", default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(10..))]
    pub webhook_poll_ms: u64,

    /// Most webhook subscriptions a team may have.
    #[arg(long, env = "INTEGRATION_HUB_WEBHOOK_MAX_SUBSCRIPTIONS", default_value_t = 25,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub webhook_max_subscriptions: u64,

    /// Most subscriptions one replica delivers to at once.
    #[arg(long, env = "INTEGRATION_HUB_WEBHOOK_CONCURRENCY", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub webhook_concurrency: u64,

    /// Most subscriptions of one team one replica delivers to at once: a team whose
    /// receivers are slow holds at most this many of the replica's slots, and the other
    /// teams find the rest free. Capped at `INTEGRATION_HUB_WEBHOOK_CONCURRENCY`.
    #[arg(long, env = "INTEGRATION_HUB_WEBHOOK_TEAM_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub webhook_team_concurrency: u64,

    /// How long the old secret keeps signing after RotateWebhookSecret when the request
    /// names no grace period, in seconds.
    #[arg(long, env = "INTEGRATION_HUB_WEBHOOK_SECRET_GRACE_SECS", default_value_t = 24 * 3600)]
    pub webhook_secret_grace_secs: u64,

    /// How long delivery attempts are kept for ListWebhookDeliveries, in seconds.
    #[arg(long, env = "INTEGRATION_HUB_WEBHOOK_DELIVERY_RETENTION_SECS",
          default_value_t = 7 * 24 * 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_delivery_retention_secs: u64,
}

impl WebhookArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.webhook_timeout_ms)
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.webhook_lease_secs)
    }

    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.webhook_poll_ms)
    }

    /// The wait before attempt `failed + 1`, after `failed` failures: exponential from the
    /// initial delay, capped, with up to a quarter of jitter either way (`jitter` in
    /// [0, 1)), so receivers that come back are not hit by every sender at once.
    pub fn backoff(&self, failed: u32, jitter: f64) -> Duration {
        let base = self
            .webhook_retry_initial_ms
            .saturating_mul(1u64 << failed.saturating_sub(1).min(40))
            .min(self.webhook_retry_max_ms) as f64;
        let spread = base * 0.25 * (2.0 * jitter.clamp(0.0, 1.0) - 1.0);
        Duration::from_millis((base + spread).max(1.0) as u64)
    }

    pub fn retry_window(&self) -> Duration {
        Duration::from_secs(self.webhook_retry_window_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> WebhookArgs {
        WebhookArgs {
            webhook_allow_loopback: false,
            webhook_retry_initial_ms: 5_000,
            webhook_retry_max_ms: 3_600_000,
            webhook_retry_window_secs: 24 * 3600,
            webhook_timeout_ms: 10_000,
            webhook_lease_secs: 30,
            webhook_poll_ms: 1_000,
            webhook_max_subscriptions: 25,
            webhook_concurrency: 32,
            webhook_team_concurrency: 4,
            webhook_secret_grace_secs: 24 * 3600,
            webhook_delivery_retention_secs: 7 * 24 * 3600,
        }
    }

    #[test]
    fn the_backoff_doubles_from_the_initial_delay_up_to_the_maximum_with_jitter() {
        let a = args();
        assert_eq!(a.backoff(1, 0.5), Duration::from_secs(5));
        assert_eq!(a.backoff(2, 0.5), Duration::from_secs(10));
        assert_eq!(a.backoff(5, 0.5), Duration::from_secs(80));
        assert_eq!(a.backoff(30, 0.5), Duration::from_secs(3600));
        assert_eq!(a.backoff(1, 0.0), Duration::from_millis(3_750));
        assert!(a.backoff(1, 0.999) > Duration::from_millis(6_240));
        // The default schedule spans about a day before the window closes: count the
        // attempts it makes in 24 hours.
        let (mut waited, mut attempts) = (Duration::ZERO, 1);
        while waited < a.retry_window() {
            waited += a.backoff(attempts, 0.5);
            attempts += 1;
        }
        assert!((25..40).contains(&attempts), "{attempts}");
    }
}
