//! A bounded cache of verified bearer tokens, in front of [`Verifier::verify`].
//!
//! Keyed by the SHA-256 of the exact `authorization` value, so only the very bytes that were
//! verified hit it, and it answers exactly what verification answered for them: a token is
//! cached only after it verified, and only until its `exp` (never beyond, and never longer
//! than [`MAX_AGE_SECS`] after it was verified). Verification itself allows `exp` plus a
//! small leeway, so the cache is never more permissive than the verifier; everything else a
//! verification checks (signature, algorithm, issuer, audience, claims, role map) depends only
//! on the bytes and the server's settings, which do not change while it runs, and on the
//! public keys, which a JWKS refresh may change: an entry answers only while the verifier's
//! key epoch is the one it was verified under (a key rotated out is never honoured from here). `nbf` only
//! refuses a token before a time, and a cached token was accepted at a time already past.
//! Refusals are not cached: a bad token costs a verification every time, as before.

use std::collections::HashMap;
use std::sync::Mutex;

use base64::Engine;
use ring::digest;

use super::{AuthError, Principal, Verifier};

/// Most tokens remembered; when full, the cache starts over (amortized O(1) per insert).
pub const CAPACITY: usize = 10_000;
/// Longest a verified token is trusted without verifying it again, whatever its `exp`.
pub const MAX_AGE_SECS: u64 = 60;

struct Entry {
    principal: Principal,
    /// The verifier's key epoch when it was verified.
    epoch: u64,
    /// Seconds since the Unix epoch before which the entry may answer.
    valid_until: u64,
}

/// Verified tokens by the SHA-256 of their `authorization` value.
pub struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    capacity: usize,
}

impl Default for TokenCache {
    fn default() -> Self {
        TokenCache::new(CAPACITY)
    }
}

fn key(authorization: &str) -> [u8; 32] {
    let mut key = [0u8; 32];
    key.copy_from_slice(digest::digest(&digest::SHA256, authorization.as_bytes()).as_ref());
    key
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `exp` of a compact JWS in `Bearer <token>`, read without any check: only called on a
/// value that verification has just accepted (so `exp` is there and is an integer).
fn expiry(authorization: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Exp {
        exp: u64,
    }
    let (_, token) = authorization.split_once(' ')?;
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Exp>(&json).ok().map(|e| e.exp)
}

impl TokenCache {
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// What `verifier.verify(authorization)` answers, from the cache when the same value was
    /// verified before and is still before its `exp` at `now` (seconds since the epoch).
    pub async fn verify(
        &self,
        verifier: &Verifier,
        authorization: Option<&str>,
        now: u64,
    ) -> Result<Principal, AuthError> {
        let Some(value) = authorization else {
            return verifier.verify(None).await;
        };
        let key = key(value);
        // Read before verifying: a refresh during the verification makes the entry stale.
        let epoch = verifier.keys_epoch();
        if let Some(principal) = self.get(&key, now, epoch) {
            return Ok(principal);
        }
        let principal = verifier.verify(Some(value)).await?;
        if let Some(exp) = expiry(value) {
            self.insert(key, principal.clone(), exp, now, epoch);
        }
        Ok(principal)
    }

    fn get(&self, key: &[u8; 32], now: u64, epoch: u64) -> Option<Principal> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key) {
            Some(entry) if now < entry.valid_until && entry.epoch == epoch => {
                Some(entry.principal.clone())
            }
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&self, key: [u8; 32], principal: Principal, exp: u64, now: u64, epoch: u64) {
        let valid_until = exp.min(now.saturating_add(MAX_AGE_SECS));
        if now >= valid_until {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, e| now < e.valid_until);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(
            key,
            Entry {
                principal,
                epoch,
                valid_until,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{MintClaims, Role, VerifierConfig, mint_hs256};

    const SECRET: &[u8] = b"token-cache-test-secret-0123456789abcdef";

    async fn verifier() -> Verifier {
        Verifier::new(VerifierConfig::new(SECRET.to_vec()))
            .await
            .expect("verifier")
    }

    fn bearer(subject: &str, ttl_secs: u64) -> String {
        let token = mint_hs256(
            SECRET,
            &MintClaims {
                subject: subject.to_owned(),
                team: "acme".to_owned(),
                roles: vec!["developer".to_owned()],
                issuer: None,
                audience: None,
                ttl_secs,
                team_claim: "team_id".to_owned(),
                roles_claim: "roles".to_owned(),
            },
        )
        .expect("mint");
        format!("Bearer {token}")
    }

    /// A signed token with the given `exp` (in the past, if need be).
    fn bearer_with_exp(subject: &str, exp: u64) -> String {
        let claims = serde_json::json!({
            "sub": subject,
            "exp": exp,
            "team_id": "acme",
            "roles": ["developer"],
        });
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET),
        )
        .expect("sign");
        format!("Bearer {token}")
    }

    fn principal(subject: &str) -> Principal {
        Principal::new(subject.to_owned(), "acme".to_owned(), Role::Developer).expect("principal")
    }

    #[tokio::test]
    async fn a_verified_token_is_answered_from_the_cache_until_its_exp() {
        let cache = TokenCache::default();
        let value = bearer("alice", 3600);
        let exp = expiry(&value).expect("exp");
        let now = now_secs();
        let first = cache
            .verify(&verifier().await, Some(&value), now)
            .await
            .expect("valid");
        assert_eq!(first, principal("alice"));
        assert_eq!(cache.len(), 1);
        // A verifier with another secret would refuse it: a hit never consults it.
        let other = Verifier::new(VerifierConfig::new(vec![7u8; 32]))
            .await
            .expect("verifier");
        assert_eq!(
            cache
                .verify(&other, Some(&value), now + 1)
                .await
                .expect("cached"),
            first
        );
        // At its exp the entry is gone, and verification decides again.
        assert!(cache.verify(&other, Some(&value), exp).await.is_err());
        assert_eq!(cache.len(), 0);
    }

    #[tokio::test]
    async fn an_expired_cached_token_is_refused() {
        let cache = TokenCache::default();
        // A token that expired well beyond the verifier's leeway...
        let now = now_secs();
        let exp = now - 10 * crate::auth::DEFAULT_LEEWAY_SECS;
        let value = bearer_with_exp("bob", exp);
        assert!(verifier().await.verify(Some(&value)).await.is_err());
        // ...was verified while it was valid, and cached then (the cache's clock is injected).
        cache.insert(key(&value), principal("bob"), exp, exp - 10, 0);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&key(&value), exp - 1, 0).is_some());
        // Now it is past its exp: the cache does not answer, and verification refuses it.
        let refused = cache.verify(&verifier().await, Some(&value), now).await;
        assert!(matches!(refused, Err(AuthError::Invalid(_))), "{refused:?}");
        assert_eq!(cache.len(), 0, "the expired entry is dropped");
    }

    #[tokio::test]
    async fn an_entry_is_trusted_for_at_most_the_max_age() {
        let cache = TokenCache::default();
        let value = bearer("carol", 3600);
        let exp = expiry(&value).expect("exp");
        let now = exp - 3600;
        cache.insert(key(&value), principal("carol"), exp, now, 0);
        assert!(cache.get(&key(&value), now + MAX_AGE_SECS - 1, 0).is_some());
        assert!(cache.get(&key(&value), now + MAX_AGE_SECS, 0).is_none());
    }

    #[tokio::test]
    async fn refusals_and_other_bytes_are_not_cached() {
        let cache = TokenCache::default();
        let value = bearer("dave", 3600);
        let now = now_secs();
        cache
            .verify(&verifier().await, Some(&value), now)
            .await
            .expect("valid");
        // The same token with a flipped signature byte is another key, and is verified.
        let mut tampered = value.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert!(
            cache
                .verify(&verifier().await, Some(&tampered), now)
                .await
                .is_err()
        );
        assert!(cache.verify(&verifier().await, None, now).await.is_err());
        assert!(
            cache
                .verify(&verifier().await, Some("Bearer x.y.z"), now)
                .await
                .is_err()
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn an_entry_answers_only_under_the_key_epoch_it_was_verified_under() {
        let cache = TokenCache::default();
        let value = bearer("erin", 3600);
        let exp = expiry(&value).expect("exp");
        let now = exp - 3600;
        cache.insert(key(&value), principal("erin"), exp, now, 4);
        assert!(cache.get(&key(&value), now + 1, 4).is_some());
        // The keys changed (a JWKS refresh): the entry no longer answers.
        assert!(cache.get(&key(&value), now + 1, 5).is_none());
    }

    #[tokio::test]
    async fn the_cache_never_holds_more_than_its_capacity() {
        let cache = TokenCache::new(3);
        let now = now_secs();
        for i in 0..10 {
            let value = bearer(&format!("user-{i}"), 3600);
            cache
                .verify(&verifier().await, Some(&value), now)
                .await
                .expect("valid");
            assert!(cache.len() <= 3);
        }
    }
}
