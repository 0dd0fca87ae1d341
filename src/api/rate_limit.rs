//! Per-principal rate limit: one token bucket per (team, subject), refilled at `rate` tokens
//! a second up to `burst`. A call takes one token; with none left it is refused with the
//! time until the next token. Each role has its own rate and burst ([`RoleRateLimits`]): a
//! service account shared by a fleet of workers is not a person at a keyboard.
//!
//! Memory is bounded. A bucket left alone for `burst / rate` seconds is full again, which is
//! exactly a fresh bucket, so idle buckets are dropped without changing any answer; a sweep
//! runs whenever the map has doubled since the last one. If more than [`MAX_BUCKETS`]
//! principals are active at once, the tenth least recently seen are dropped (they start
//! again with a full bucket): principals come from verified tokens, so reaching that needs
//! that many valid identities.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::Role;

/// Most buckets kept at once.
pub const MAX_BUCKETS: usize = 100_000;
/// No sweep below this many buckets.
const SWEEP_FLOOR: usize = 1024;
/// The longest retry delay announced.
const MAX_RETRY: Duration = Duration::from_secs(3600);

struct Bucket {
    tokens: f64,
    last: Instant,
}

struct Buckets {
    map: HashMap<String, Bucket>,
    /// Sweep when the map reaches this size.
    next_sweep: usize,
}

/// Token buckets per principal. Shared by every connection of a replica.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// `rate` calls a second with bursts of `burst`; `None` (no limit) when either is 0.
    pub fn new(rate: f64, burst: u32) -> Option<RateLimiter> {
        if !(rate.is_finite() && rate > 0.0) || burst == 0 {
            return None;
        }
        Some(RateLimiter {
            rate,
            burst: f64::from(burst),
            buckets: Mutex::new(Buckets {
                map: HashMap::new(),
                next_sweep: SWEEP_FLOOR,
            }),
        })
    }

    /// Takes a token of `team`/`subject` now; `Err` carries how long until one is free.
    pub fn check(&self, team: &str, subject: &str) -> Result<(), Duration> {
        self.check_at(team, subject, Instant::now())
    }

    /// [`RateLimiter::check`] at a given instant (tests inject time here).
    pub fn check_at(&self, team: &str, subject: &str, now: Instant) -> Result<(), Duration> {
        // A team id never contains '/', so the key is unambiguous.
        let key = format!("{team}/{subject}");
        // Nothing panics while the lock is held, but a poisoned lock would only mean a stale
        // bucket: keep going rather than fail every call.
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.map.contains_key(&key) {
            self.make_room(&mut buckets, now);
        }
        let bucket = buckets.map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate;
            let wait = Duration::try_from_secs_f64(wait).unwrap_or(MAX_RETRY);
            Err(wait.clamp(Duration::from_millis(1), MAX_RETRY))
        }
    }

    /// How many principals have a bucket.
    pub fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Before adding a bucket: drops the full (idle) ones when the map has grown enough,
    /// and the least recently seen tenth when it is at its bound.
    fn make_room(&self, buckets: &mut Buckets, now: Instant) {
        if buckets.map.len() >= buckets.next_sweep {
            let full_after =
                Duration::try_from_secs_f64(self.burst / self.rate).unwrap_or(MAX_RETRY);
            buckets
                .map
                .retain(|_, b| now.saturating_duration_since(b.last) < full_after);
            buckets.next_sweep = (buckets.map.len() * 2).max(SWEEP_FLOOR);
        }
        if buckets.map.len() >= MAX_BUCKETS {
            let mut seen: Vec<Instant> = buckets.map.values().map(|b| b.last).collect();
            let cut = seen.len() / 10;
            let (_, cutoff, _) = seen.select_nth_unstable(cut);
            let cutoff = *cutoff;
            buckets.map.retain(|_, b| b.last > cutoff);
        }
    }
}

/// One [`RateLimiter`] per role, each with its own buckets; a role without one (rate or
/// burst 0) is not limited.
#[derive(Debug)]
pub struct RoleRateLimits {
    /// Indexed as [`Role::ALL`].
    limiters: [Option<RateLimiter>; 4],
}

fn index(role: Role) -> usize {
    match role {
        Role::Viewer => 0,
        Role::Developer => 1,
        Role::Admin => 2,
        Role::Service => 3,
    }
}

impl RoleRateLimits {
    /// `limit` gives each role's calls a second and burst.
    pub fn new(limit: impl Fn(Role) -> (f64, u32)) -> RoleRateLimits {
        RoleRateLimits {
            limiters: Role::ALL.map(|role| {
                let (rate, burst) = limit(role);
                RateLimiter::new(rate, burst)
            }),
        }
    }

    /// Takes a token of `team`/`subject` under `role`'s limit; `Err` carries how long until
    /// one is free.
    pub fn check(&self, role: Role, team: &str, subject: &str) -> Result<(), Duration> {
        self.check_at(role, team, subject, Instant::now())
    }

    /// [`RoleRateLimits::check`] at a given instant (tests inject time here).
    pub fn check_at(
        &self,
        role: Role,
        team: &str,
        subject: &str,
        now: Instant,
    ) -> Result<(), Duration> {
        match &self.limiters[index(role)] {
            Some(limiter) => limiter.check_at(team, subject, now),
            None => Ok(()),
        }
    }

    /// Whether `role`'s principals are limited at all.
    pub fn limits(&self, role: Role) -> bool {
        self.limiters[index(role)].is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_has_its_own_limit_and_buckets() {
        let limits = RoleRateLimits::new(|role| match role {
            Role::Viewer => (1.0, 1),
            Role::Developer => (1.0, 2),
            Role::Admin => (0.0, 5),
            Role::Service => (1000.0, 50),
        });
        let t0 = Instant::now();
        let passed = |role| {
            (0..100)
                .take_while(|_| limits.check_at(role, "acme", "same", t0).is_ok())
                .count()
        };
        assert_eq!(passed(Role::Viewer), 1);
        assert_eq!(passed(Role::Developer), 2);
        assert_eq!(
            passed(Role::Service),
            50,
            "its bucket is not the developer's"
        );
        assert_eq!(passed(Role::Admin), 100, "a rate of 0 is no limit");
        assert!(!limits.limits(Role::Admin));
        assert!(limits.limits(Role::Viewer));
        // The service bucket refills at its own rate: 1 ms later, one more call.
        let t1 = t0 + Duration::from_millis(1);
        assert!(limits.check_at(Role::Service, "acme", "same", t1).is_ok());
        assert!(limits.check_at(Role::Service, "acme", "same", t1).is_err());
        assert!(
            limits
                .check_at(Role::Developer, "acme", "same", t1)
                .is_err()
        );
    }

    #[test]
    fn zero_rate_or_burst_means_no_limit() {
        assert!(RateLimiter::new(0.0, 10).is_none());
        assert!(RateLimiter::new(5.0, 0).is_none());
        assert!(RateLimiter::new(f64::NAN, 10).is_none());
        assert!(RateLimiter::new(-1.0, 10).is_none());
        assert!(RateLimiter::new(0.5, 1).is_some());
    }

    #[test]
    fn a_burst_passes_then_calls_wait_for_the_refill() {
        let limiter = RateLimiter::new(2.0, 3).unwrap();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check_at("acme", "dana", t0).is_ok());
        }
        let wait = limiter.check_at("acme", "dana", t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        // Half a second later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(500);
        assert!(limiter.check_at("acme", "dana", t1).is_ok());
        assert!(limiter.check_at("acme", "dana", t1).is_err());
        // Long idle: the bucket is full again, never fuller.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(limiter.check_at("acme", "dana", t2).is_ok());
        }
        assert!(limiter.check_at("acme", "dana", t2).is_err());
    }

    #[test]
    fn principals_have_buckets_of_their_own() {
        let limiter = RateLimiter::new(1.0, 1).unwrap();
        let t0 = Instant::now();
        assert!(limiter.check_at("acme", "dana", t0).is_ok());
        assert!(limiter.check_at("acme", "dana", t0).is_err());
        assert!(limiter.check_at("acme", "omar", t0).is_ok());
        assert!(limiter.check_at("other", "dana", t0).is_ok());
    }

    #[test]
    fn idle_buckets_are_dropped_and_memory_stays_bounded() {
        let limiter = RateLimiter::new(10.0, 10).unwrap();
        let t0 = Instant::now();
        for i in 0..SWEEP_FLOOR {
            assert!(limiter.check_at("t", &format!("s{i}"), t0).is_ok());
        }
        assert_eq!(limiter.len(), SWEEP_FLOOR);
        // A second later every bucket is full again: the next new principal sweeps them.
        let t1 = t0 + Duration::from_secs(1);
        assert!(limiter.check_at("t", "new", t1).is_ok());
        assert_eq!(limiter.len(), 1);

        // Many principals active at once: the map never grows past its bound.
        let t2 = t1 + Duration::from_secs(10);
        for i in 0..MAX_BUCKETS + 50 {
            let now = t2 + Duration::from_nanos(i as u64);
            assert!(limiter.check_at("t", &format!("p{i}"), now).is_ok());
            assert!(limiter.len() <= MAX_BUCKETS);
        }
        // The most recent principal kept its bucket.
        let last = format!("p{}", MAX_BUCKETS + 49);
        let now = t2 + Duration::from_nanos((MAX_BUCKETS + 50) as u64);
        for _ in 0..9 {
            assert!(limiter.check_at("t", &last, now).is_ok());
        }
        assert!(limiter.check_at("t", &last, now).is_err());
    }

    #[test]
    fn tiny_rates_announce_a_bounded_retry_delay() {
        let limiter = RateLimiter::new(1e-12, 1).unwrap();
        let t0 = Instant::now();
        assert!(limiter.check_at("t", "s", t0).is_ok());
        assert_eq!(limiter.check_at("t", "s", t0).unwrap_err(), MAX_RETRY);
    }
}
