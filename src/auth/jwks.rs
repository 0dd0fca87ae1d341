//! Public keys from a JSON Web Key Set (RFC 7517): which keys we accept and
//! the one algorithm each is pinned to.
//!
//! A key is usable when it has a `kid`, is meant for signatures (`use` absent
//! or `sig`; `key_ops` absent or holding `verify`) and is one of:
//! RSA (2048 bits or more) for RS256, EC P-256 for ES256, OKP Ed25519 for
//! EdDSA. Its `alg`, when present, must be that same algorithm; without one,
//! the algorithm is derived from `kty`/`crv`. Everything else is skipped:
//! symmetric (`kty=oct`) keys above all, since a shared secret published in a
//! key set would let anyone who can read it mint tokens. A skipped key never
//! makes the whole set fail; a set that is not JSON or has no `keys` array does.
//!
//! Parsing is by hand from `serde_json::Value` rather than through
//! `jsonwebtoken::jwk::Jwk`, whose untagged enums reject a whole set for one
//! key of an unknown type, and whose EdDSA verifier slices the key to 32
//! bytes without checking its length (a short `x` would panic per request).

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// Largest key set document we read, from a file or a URL.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Keys past this many in one set are ignored.
pub const MAX_JWKS_KEYS: usize = 100;
/// Longest `kid` we look up; a token naming a longer one is refused without
/// triggering a refresh.
pub const MAX_KID_BYTES: usize = 256;
/// Smallest RSA modulus accepted (RFC 7518 3.3 asks for 2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;
/// Largest RSA modulus accepted (the `rsa` crate refuses more than 4096 bits).
const MAX_RSA_MODULUS_BYTES: usize = 512;

/// The algorithms a key set may carry.
pub const ASYMMETRIC_ALGORITHMS: [Algorithm; 3] =
    [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

/// One usable public key.
#[derive(Clone)]
pub struct PublicKey {
    /// The only algorithm a token verified with this key may name.
    pub alg: Algorithm,
    pub key: DecodingKey,
    /// The decoded key material, to tell a duplicate `kid` with the same key
    /// (harmless) from one with a different key (ambiguous).
    material: Vec<u8>,
}

/// Usable keys by `kid`.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<PublicKey>>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

/// What parsing a document found, for the log: never key material.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParseReport {
    pub usable: usize,
    pub skipped: usize,
    /// `kid`s dropped because two different keys claimed them.
    pub ambiguous: usize,
}

impl KeySet {
    /// Parses a JWKS document. Fails only when the document itself is not a
    /// key set; unusable keys inside it are skipped and counted.
    pub fn parse(document: &[u8]) -> Result<(KeySet, ParseReport), &'static str> {
        if document.len() > MAX_JWKS_BYTES {
            return Err("the key set is larger than 1 MiB");
        }
        let value: Value =
            serde_json::from_slice(document).map_err(|_| "the key set is not valid JSON")?;
        let keys = value
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("the key set has no `keys` array")?;
        let mut report = ParseReport::default();
        let mut found: Vec<(String, PublicKey)> = Vec::new();
        for jwk in keys.iter().take(MAX_JWKS_KEYS) {
            match parse_jwk(jwk) {
                Some(entry) => found.push(entry),
                None => report.skipped += 1,
            }
        }
        report.skipped += keys.len().saturating_sub(MAX_JWKS_KEYS);
        let (set, ambiguous) = KeySet::from_entries(found);
        report.ambiguous = ambiguous;
        report.usable = set.len();
        Ok((set, report))
    }

    /// Several sets as one. A `kid` present in more than one with different
    /// keys is dropped: which key was meant cannot be known.
    pub fn merge<'a>(sets: impl IntoIterator<Item = &'a KeySet>) -> (KeySet, usize) {
        let entries = sets
            .into_iter()
            .flat_map(|s| s.keys.iter())
            .map(|(kid, key)| (kid.clone(), (**key).clone()))
            .collect();
        KeySet::from_entries(entries)
    }

    fn from_entries(entries: Vec<(String, PublicKey)>) -> (KeySet, usize) {
        let mut keys: HashMap<String, Arc<PublicKey>> = HashMap::new();
        let mut ambiguous: Vec<String> = Vec::new();
        for (kid, key) in entries {
            if ambiguous.contains(&kid) {
                continue;
            }
            match keys.get(&kid) {
                Some(existing) if existing.alg == key.alg && existing.material == key.material => {}
                Some(_) => {
                    keys.remove(&kid);
                    ambiguous.push(kid);
                }
                None => {
                    keys.insert(kid, Arc::new(key));
                }
            }
        }
        (KeySet { keys }, ambiguous.len())
    }

    pub fn get(&self, kid: &str) -> Option<Arc<PublicKey>> {
        self.keys.get(kid).cloned()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// One JWK to `(kid, key)`, or `None` when it is not usable.
fn parse_jwk(jwk: &Value) -> Option<(String, PublicKey)> {
    let kid = jwk.get("kid")?.as_str()?;
    if kid.is_empty() || kid.len() > MAX_KID_BYTES {
        return None;
    }
    match jwk.get("use") {
        None => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return None,
    }
    match jwk.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) if ops.iter().any(|op| op.as_str() == Some("verify")) => {}
        Some(_) => return None,
    }
    let (derived, key, material) = match (jwk.get("kty")?.as_str()?, text(jwk, "crv")) {
        ("RSA", _) => {
            let n = decode(jwk, "n")?;
            let e = decode(jwk, "e")?;
            let n_len = n.iter().skip_while(|b| **b == 0).count();
            let e_len = e.iter().skip_while(|b| **b == 0).count();
            if !(MIN_RSA_MODULUS_BYTES..=MAX_RSA_MODULUS_BYTES).contains(&n_len)
                || e_len == 0
                || e_len > 8
            {
                return None;
            }
            let key = DecodingKey::from_rsa_raw_components(&n, &e);
            (Algorithm::RS256, key, [n, e].concat())
        }
        ("EC", Some("P-256")) => {
            let x = decode(jwk, "x")?;
            let y = decode(jwk, "y")?;
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            let key = DecodingKey::from_ec_components(text(jwk, "x")?, text(jwk, "y")?).ok()?;
            (Algorithm::ES256, key, [x, y].concat())
        }
        ("OKP", Some("Ed25519")) => {
            let x = decode(jwk, "x")?;
            // Exactly 32 bytes: jsonwebtoken's verifier slices `[..32]`.
            if x.len() != 32 {
                return None;
            }
            let key = DecodingKey::from_ed_components(text(jwk, "x")?).ok()?;
            (Algorithm::EdDSA, key, x)
        }
        // `oct` (shared secrets), other curves, unknown types.
        _ => return None,
    };
    let alg = match jwk.get("alg") {
        None => derived,
        Some(Value::String(alg)) => {
            let named = match alg.as_str() {
                "RS256" => Algorithm::RS256,
                "ES256" => Algorithm::ES256,
                "EdDSA" => Algorithm::EdDSA,
                _ => return None,
            };
            // A key that says one algorithm but is of another type is broken
            // or hostile; it is not "fixed" by guessing.
            if named != derived {
                return None;
            }
            named
        }
        Some(_) => return None,
    };
    Some((kid.to_owned(), PublicKey { alg, key, material }))
}

fn text<'a>(jwk: &'a Value, field: &str) -> Option<&'a str> {
    jwk.get(field)?.as_str()
}

/// A base64url (no padding) member, as RFC 7518 6 requires.
fn decode(jwk: &Value, field: &str) -> Option<Vec<u8>> {
    let bytes = URL_SAFE_NO_PAD.decode(text(jwk, field)?).ok()?;
    (!bytes.is_empty()).then_some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa(kid: &str) -> Value {
        // Shape only: parsing never checks that the modulus is a product of primes.
        let mut n = vec![0xC3; 256];
        n[255] = 0x01;
        json!({"kty": "RSA", "kid": kid, "n": b64(&n), "e": "AQAB"})
    }

    fn ec(kid: &str) -> Value {
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&[1; 32]), "y": b64(&[2; 32])})
    }

    fn ed(kid: &str) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(&[3; 32])})
    }

    fn with(mut jwk: Value, field: &str, value: Value) -> Value {
        jwk[field] = value;
        jwk
    }

    fn parse(keys: Vec<Value>) -> (KeySet, ParseReport) {
        KeySet::parse(&serde_json::to_vec(&json!({ "keys": keys })).unwrap()).unwrap()
    }

    fn alg(set: &KeySet, kid: &str) -> Option<Algorithm> {
        set.get(kid).map(|k| k.alg)
    }

    #[test]
    fn algorithms_are_derived_from_the_key_type() {
        let (set, report) = parse(vec![rsa("r"), ec("e"), ed("d")]);
        assert_eq!(report.usable, 3);
        assert_eq!(alg(&set, "r"), Some(Algorithm::RS256));
        assert_eq!(alg(&set, "e"), Some(Algorithm::ES256));
        assert_eq!(alg(&set, "d"), Some(Algorithm::EdDSA));
    }

    #[test]
    fn a_matching_alg_is_kept_and_a_contradicting_one_drops_the_key() {
        let (set, report) = parse(vec![
            with(rsa("r"), "alg", json!("RS256")),
            with(ec("e"), "alg", json!("RS256")),
            with(ed("d"), "alg", json!("ES256")),
            with(rsa("r512"), "alg", json!("RS512")),
            with(rsa("ps"), "alg", json!("PS256")),
            with(rsa("hs"), "alg", json!("HS256")),
            with(rsa("none"), "alg", json!("none")),
            with(rsa("num"), "alg", json!(256)),
        ]);
        assert_eq!(alg(&set, "r"), Some(Algorithm::RS256));
        assert_eq!(report.usable, 1);
        assert_eq!(report.skipped, 7);
    }

    #[test]
    fn symmetric_keys_are_ignored() {
        let oct = json!({"kty": "oct", "kid": "h", "k": b64(&[7; 32]), "alg": "HS256"});
        let (set, report) = parse(vec![oct, rsa("r")]);
        assert!(set.get("h").is_none());
        assert_eq!((report.usable, report.skipped), (1, 1));
    }

    #[test]
    fn keys_not_for_signatures_are_ignored() {
        let (set, _) = parse(vec![
            with(rsa("enc"), "use", json!("enc")),
            with(rsa("ops"), "key_ops", json!(["encrypt"])),
            with(rsa("sig"), "use", json!("sig")),
            with(rsa("verify"), "key_ops", json!(["verify"])),
        ]);
        assert!(set.get("enc").is_none());
        assert!(set.get("ops").is_none());
        assert!(set.get("sig").is_some());
        assert!(set.get("verify").is_some());
    }

    #[test]
    fn malformed_or_weak_keys_are_ignored() {
        let short_rsa = json!({"kty": "RSA", "kid": "short", "n": b64(&[0xC3; 128]), "e": "AQAB"});
        let padded_rsa = json!({"kty": "RSA", "kid": "pad", "n": b64(&[&[0u8; 200][..], &[0xC3; 100][..]].concat()), "e": "AQAB"});
        let (set, report) = parse(vec![
            short_rsa,
            padded_rsa,
            with(rsa("e0"), "e", json!("AA")),
            with(rsa("nb64"), "n", json!("not base64!")),
            with(ed("ed-short"), "x", json!(b64(&[3; 31]))),
            with(ed("ed-long"), "x", json!(b64(&[3; 33]))),
            with(ed("ed-x25519"), "crv", json!("X25519")),
            with(ec("p384"), "crv", json!("P-384")),
            with(ec("ec-short"), "y", json!(b64(&[2; 20]))),
            json!({"kty": "EC", "kid": "no-crv", "x": b64(&[1; 32]), "y": b64(&[2; 32])}),
            json!({"kty": "XYZ", "kid": "odd"}),
            json!("not an object"),
            json!(null),
        ]);
        assert!(set.is_empty(), "{set:?}");
        assert_eq!(report.skipped, 13);
    }

    #[test]
    fn keys_without_a_usable_kid_are_ignored() {
        let mut no_kid = rsa("x");
        no_kid.as_object_mut().unwrap().remove("kid");
        let (set, report) = parse(vec![
            no_kid,
            rsa(""),
            with(rsa("x"), "kid", json!(7)),
            rsa(&"k".repeat(MAX_KID_BYTES + 1)),
        ]);
        assert!(set.is_empty());
        assert_eq!(report.skipped, 4);
    }

    #[test]
    fn a_kid_claimed_by_two_different_keys_is_dropped() {
        let (set, report) = parse(vec![rsa("same"), ec("same"), ed("other"), ed("other")]);
        assert!(set.get("same").is_none());
        assert!(
            set.get("other").is_some(),
            "identical duplicates are harmless"
        );
        assert_eq!(report.ambiguous, 1);
    }

    #[test]
    fn merging_sets_drops_conflicting_kids() {
        let (a, _) = parse(vec![rsa("a"), ec("shared"), ed("same")]);
        let (b, _) = parse(vec![rsa("b"), ed("shared"), ed("same")]);
        let (merged, ambiguous) = KeySet::merge([&a, &b]);
        assert_eq!(ambiguous, 1);
        assert!(merged.get("a").is_some() && merged.get("b").is_some());
        assert!(merged.get("shared").is_none());
        assert!(merged.get("same").is_some());
    }

    #[test]
    fn a_document_that_is_not_a_key_set_is_an_error() {
        for doc in [&b"not json"[..], b"{}", b"{\"keys\": {}}", b"[]", b""] {
            assert!(KeySet::parse(doc).is_err(), "{doc:?}");
        }
        assert!(KeySet::parse(&vec![b' '; MAX_JWKS_BYTES + 1]).is_err());
        assert!(KeySet::parse(b"{\"keys\": []}").unwrap().0.is_empty());
    }

    #[test]
    fn only_the_first_keys_of_a_huge_set_are_read() {
        let keys = (0..MAX_JWKS_KEYS + 5)
            .map(|i| ed(&format!("k{i}")))
            .collect();
        let (set, report) = parse(keys);
        assert_eq!(set.len(), MAX_JWKS_KEYS);
        assert_eq!(report.skipped, 5);
    }

    #[test]
    fn debug_output_lists_kids_only() {
        let (set, _) = parse(vec![ed("visible")]);
        let text = format!("{set:?}");
        assert!(text.contains("visible"));
        assert!(!text.contains(&b64(&[3; 32])));
    }
}
