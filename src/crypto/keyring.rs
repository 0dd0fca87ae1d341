//! Versioned AES-256-GCM keys: parsing the key spec, sealing and opening.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ring::aead::{self, AES_256_GCM, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::format::{FORMAT_VERSION, HEADER_LEN, SealedView, TAG_LEN};
use super::tokens::TokenKey;
use super::{Aad, Credentials, CryptoError, SecretBytes};

/// AES-256 key length in bytes.
const KEY_LEN: usize = 32;

/// Key decoders: padding is optional because operators strip it by accident,
/// and it carries no information.
const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// A key together with its version.
struct VersionedKey {
    version: u32,
    key: LessSafeKey,
    /// The keys of opaque tokens sealed under this version.
    token: TokenKey,
}

/// Versioned AES-256-GCM keys. The newest key seals; every key at or above the
/// minimum version opens. Debug prints versions only.
pub struct KeyRing {
    /// Kept apart from `older` so that a ring can never be empty: sealing
    /// needs no "no key" error path.
    newest: VersionedKey,
    /// Keys below `newest.version` and at or above `min_version`.
    older: BTreeMap<u32, LessSafeKey>,
    /// Versions below this are retired: they report `KeyRetired`, not
    /// `UnknownKeyVersion`, so the operator knows rotation is the cause.
    min_version: u32,
    /// Per version, the HMAC-SHA256 key derived from the encryption key for keyed
    /// fingerprints ([`KeyRing::fingerprint_contexts`]).
    macs: BTreeMap<u32, hmac::Key>,
    /// Per version, the keys of opaque tokens (cursors, page tokens; see `tokens.rs`).
    tokens: BTreeMap<u32, TokenKey>,
    /// Per version, the HMAC-SHA256 key of the audit chain ([`KeyRing::audit_key`]); kept for
    /// retired versions too, so that records made under them still verify.
    audits: BTreeMap<u32, hmac::Key>,
    rng: SystemRandom,
}

/// The label the fingerprint key is derived under: HMAC-SHA256(encryption key, label). The
/// derived key differs from the encryption key, so no fingerprint reveals anything of it.
const FINGERPRINT_LABEL: &[u8] = b"integrationhub/v1 idempotency fingerprint key";

fn fingerprint_key(raw: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, derive(raw, FINGERPRINT_LABEL).as_ref())
}

/// The label the audit chain key is derived under (as [`FINGERPRINT_LABEL`]).
const AUDIT_LABEL: &[u8] = b"integrationhub/v1 audit chain key";

fn audit_key(raw: &[u8]) -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, derive(raw, AUDIT_LABEL).as_ref())
}

/// A key derived from an encryption key for one purpose: HMAC-SHA256(encryption key, label).
pub(super) fn derive(raw: &[u8], label: &[u8]) -> hmac::Tag {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, raw), label)
}

impl KeyRing {
    /// Parses `1:<base64>,2:<base64>` (see the module doc). Error messages
    /// name an entry by its version or position, never by its key text.
    pub fn parse(spec: &str) -> Result<KeyRing, CryptoError> {
        if spec.trim().is_empty() {
            return Err(invalid("the key spec is empty; expected `1:<base64 key>`"));
        }
        let mut raw: BTreeMap<u32, Zeroizing<Vec<u8>>> = BTreeMap::new();
        for (index, entry) in spec.split(',').enumerate() {
            let position = index + 1;
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(invalid(format!("entry #{position} is empty")));
            }
            let Some((version_text, key_text)) = entry.split_once(':') else {
                return Err(invalid(format!(
                    "entry #{position} is not of the form `<version>:<base64 key>`"
                )));
            };
            // The version text is not echoed: a mangled entry may have key
            // text where the version should be.
            let version = parse_version(version_text.trim()).ok_or_else(|| {
                invalid(format!(
                    "entry #{position}: the key version is not an integer from 1 to {}",
                    u32::MAX
                ))
            })?;
            if raw.contains_key(&version) {
                return Err(invalid(format!(
                    "key version {version} appears more than once (entry #{position})"
                )));
            }
            let bytes = decode_key(key_text.trim()).map_err(|problem| {
                invalid(format!(
                    "key version {version} (entry #{position}): {problem}"
                ))
            })?;
            // The same key under two versions means a rotation that rotated
            // nothing; refuse it rather than give a false sense of safety.
            // (Start-up only, so the non-constant-time comparison is moot.)
            if let Some((&other, _)) = raw.iter().find(|(_, known)| **known == bytes) {
                return Err(invalid(format!(
                    "key versions {other} and {version} hold the same key; a new version needs a new key"
                )));
            }
            raw.insert(version, bytes);
        }
        let mut keys = BTreeMap::new();
        let mut macs = BTreeMap::new();
        let mut tokens = BTreeMap::new();
        let mut audits = BTreeMap::new();
        for (version, bytes) in &raw {
            keys.insert(*version, aes_key(bytes)?);
            macs.insert(*version, fingerprint_key(bytes));
            audits.insert(*version, audit_key(bytes));
            tokens.insert(*version, TokenKey::derive(bytes)?);
        }
        let Some((version, key)) = keys.pop_last() else {
            return Err(invalid("the key spec holds no key"));
        };
        let token = TokenKey::derive(&raw[&version])?;
        Ok(KeyRing {
            newest: VersionedKey {
                version,
                key,
                token,
            },
            older: keys,
            min_version: 1,
            macs,
            tokens,
            audits,
            rng: SystemRandom::new(),
        })
    }

    /// A ring with one fresh random key, and its spec string (for persisting a
    /// development key). The spec contains the key: store it as a secret.
    pub fn generate(version: u32) -> Result<(KeyRing, String), CryptoError> {
        if version == 0 {
            return Err(invalid("key version must be an integer from 1"));
        }
        let rng = SystemRandom::new();
        let mut raw = Zeroizing::new([0u8; KEY_LEN]);
        rng.fill(raw.as_mut()).map_err(|_| CryptoError::Rng)?;
        let key = aes_key(raw.as_ref())?;
        let version_text = version.to_string();
        // Sized up front so the key text is written once, with no reallocation
        // leaving a copy behind.
        let mut spec = String::with_capacity(version_text.len() + 1 + KEY_LEN.div_ceil(3) * 4);
        spec.push_str(&version_text);
        spec.push(':');
        STANDARD.encode_string(raw.as_ref(), &mut spec);
        let ring = KeyRing {
            newest: VersionedKey {
                version,
                key,
                token: TokenKey::derive(raw.as_ref())?,
            },
            older: BTreeMap::new(),
            min_version: 1,
            macs: BTreeMap::from([(version, fingerprint_key(raw.as_ref()))]),
            tokens: BTreeMap::from([(version, TokenKey::derive(raw.as_ref())?)]),
            audits: BTreeMap::from([(version, audit_key(raw.as_ref()))]),
            rng,
        };
        Ok((ring, spec))
    }

    /// The version that [`KeyRing::seal`] uses.
    pub fn newest_version(&self) -> u32 {
        self.newest.version
    }

    /// Versions below this are retired (see [`KeyRing::with_min_version`]); 1 when none is.
    pub fn min_version(&self) -> u32 {
        self.min_version
    }

    /// Versions that can open, ascending.
    pub fn versions(&self) -> Vec<u32> {
        self.older
            .keys()
            .copied()
            .chain(std::iter::once(self.newest.version))
            .collect()
    }

    /// Retires every key below `min`: values sealed with them report
    /// [`CryptoError::KeyRetired`]. Fails if no key would be left.
    pub fn with_min_version(mut self, min: u32) -> Result<KeyRing, CryptoError> {
        if min > self.newest.version {
            return Err(invalid(format!(
                "minimum key version {min} is above the newest key version {}; no key would be left",
                self.newest.version
            )));
        }
        self.older = self.older.split_off(&min);
        self.macs = self.macs.split_off(&min);
        self.tokens = self.tokens.split_off(&min);
        self.min_version = self.min_version.max(min);
        Ok(self)
    }

    /// One HMAC-SHA256 context per usable key version, newest first, each keyed by the key
    /// derived from that version's encryption key (never the encryption key itself). A
    /// keyed fingerprint of secret content made under any version can be recomputed while
    /// that version is in the ring; without the ring it reveals nothing of the content.
    pub fn fingerprint_contexts(&self) -> Vec<(u32, hmac::Context)> {
        self.macs
            .iter()
            .rev()
            .map(|(version, key)| (*version, hmac::Context::with_key(key)))
            .collect()
    }

    /// The audit chain key of `version` (retired versions included: a record keeps
    /// verifying while its key stays in the spec), derived from that version's encryption
    /// key, never the encryption key itself.
    pub fn audit_key(&self, version: u32) -> Option<&hmac::Key> {
        self.audits.get(&version)
    }

    /// The newest version's audit chain key: what new records are made under.
    pub fn newest_audit_key(&self) -> (u32, &hmac::Key) {
        let version = self.newest.version;
        (version, &self.audits[&version])
    }

    /// The newest version's token keys (the ring never lacks them: each version has its own).
    pub(super) fn newest_token_key(&self) -> (u32, &TokenKey) {
        (self.newest.version, &self.newest.token)
    }

    /// The token keys of `version`, if it is in the ring and not retired.
    pub(super) fn token_key(&self, version: u32) -> Option<&TokenKey> {
        self.tokens.get(&version)
    }

    /// Seals `plaintext` with the newest key, bound to `aad`. The layout is in
    /// the module doc.
    pub fn seal(&self, aad: &Aad<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal_with_key(self.newest.version, &self.newest.key, aad, plaintext)
    }

    /// Verifies and decrypts a value sealed by [`KeyRing::seal`] with the same
    /// binding.
    pub fn open(&self, aad: &Aad<'_>, sealed: &[u8]) -> Result<SecretBytes, CryptoError> {
        let view = SealedView::parse(sealed)?;
        let key = self.key_for(view.key_version)?;
        let aad_bytes = aad.encode(view.key_version);
        // Wiped on drop whatever happens: on failure it may hold partly
        // decrypted bytes.
        let mut buf = Zeroizing::new(view.body.to_vec());
        let plaintext_len = key
            .open_in_place(
                Nonce::assume_unique_for_key(view.nonce),
                aead::Aad::from(aad_bytes.as_slice()),
                buf.as_mut_slice(),
            )
            .map_err(|_| CryptoError::OpenFailed)?
            .len();
        buf.truncate(plaintext_len);
        Ok(SecretBytes::new(std::mem::take(&mut *buf)))
    }

    /// The key version a sealed value was sealed with, read from its header
    /// without decrypting (for finding values to re-seal after rotation).
    pub fn sealed_key_version(sealed: &[u8]) -> Result<u32, CryptoError> {
        SealedView::parse(sealed).map(|view| view.key_version)
    }

    /// Seals the canonical JSON of `credentials`.
    pub fn seal_credentials(
        &self,
        aad: &Aad<'_>,
        credentials: &Credentials,
    ) -> Result<Vec<u8>, CryptoError> {
        self.seal(aad, credentials.to_plaintext().expose())
    }

    /// Opens a value sealed by [`KeyRing::seal_credentials`].
    pub fn open_credentials(
        &self,
        aad: &Aad<'_>,
        sealed: &[u8],
    ) -> Result<Credentials, CryptoError> {
        Credentials::from_plaintext(&self.open(aad, sealed)?)
    }

    /// Start-up check: seals a probe with every key and opens it again, and
    /// checks that a wrong binding is refused. Catches a failing RNG or AEAD
    /// implementation with a clear error before any request is served.
    ///
    /// A key that is valid but not the one the data was sealed with can only
    /// be detected by opening a stored value; this check cannot see that.
    pub fn self_test(&self) -> Result<(), CryptoError> {
        const PROBE: &[u8] = b"integration-hub key ring self-test";
        let aad = Aad {
            team: "self-test",
            owner: "self-test/probe",
        };
        let wrong = Aad {
            team: "self-test",
            owner: "self-test/other",
        };
        let older = self.older.iter().map(|(&version, key)| (version, key));
        let all = older.chain(std::iter::once((self.newest.version, &self.newest.key)));
        for (version, key) in all {
            let sealed = self.seal_with_key(version, key, &aad, PROBE)?;
            if Self::sealed_key_version(&sealed)? != version
                || self.open(&aad, &sealed)?.expose() != PROBE
                || self.open(&wrong, &sealed).is_ok()
            {
                return Err(CryptoError::OpenFailed);
            }
        }
        Ok(())
    }

    fn seal_with_key(
        &self,
        version: u32,
        key: &LessSafeKey,
        aad: &Aad<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        // A fresh random nonce per seal: AES-GCM breaks if a nonce repeats
        // under one key. 96 random bits stay safe far beyond the number of
        // values one key will ever seal here (the usual bound is 2^32).
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CryptoError::Rng)?;
        // Sized up front (no reallocation copy) and wiped if sealing fails,
        // since the plaintext is copied in before being encrypted in place.
        let mut out = Zeroizing::new(Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN));
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let aad_bytes = aad.encode(version);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad_bytes.as_slice()),
                &mut out[HEADER_LEN..],
            )
            // ring fails only for inputs beyond AES-GCM's limit (~64 GiB),
            // which no stored value approaches.
            .map_err(|_| CryptoError::Malformed)?;
        out.extend_from_slice(tag.as_ref());
        Ok(std::mem::take(&mut *out))
    }

    fn key_for(&self, version: u32) -> Result<&LessSafeKey, CryptoError> {
        if version == self.newest.version {
            return Ok(&self.newest.key);
        }
        if version < self.min_version {
            return Err(CryptoError::KeyRetired(version));
        }
        self.older
            .get(&version)
            .ok_or(CryptoError::UnknownKeyVersion(version))
    }
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("versions", &self.versions())
            .field("newest_version", &self.newest.version)
            .field("min_version", &self.min_version)
            .finish_non_exhaustive()
    }
}

fn invalid(message: impl Into<String>) -> CryptoError {
    CryptoError::InvalidKeySpec(message.into())
}

/// A positive decimal u32, digits only (no sign, no spaces).
fn parse_version(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u32>().ok().filter(|&v| v > 0)
}

/// Decodes a base64 key of exactly [`KEY_LEN`] bytes. The error text never
/// quotes the input.
fn decode_key(text: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    // `-` and `_` only occur in the URL-safe alphabet; picking the engine up
    // front avoids a second decoding attempt over the key.
    let engine = if text.contains(['-', '_']) {
        &URL_SAFE_LENIENT
    } else {
        &STANDARD_LENIENT
    };
    // At least the decoder's own size estimate (3 bytes per 4 characters,
    // rounded up), so decode_vec never reallocates and leaves key bytes behind.
    let mut bytes = Zeroizing::new(Vec::with_capacity(text.len() + 3));
    engine
        .decode_vec(text, &mut bytes)
        .map_err(|_| "the key is not valid base64".to_owned())?;
    if bytes.len() != KEY_LEN {
        return Err(format!(
            "the key must be {KEY_LEN} bytes after base64 decoding, got {}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

pub(super) fn aes_key(bytes: &[u8]) -> Result<LessSafeKey, CryptoError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| invalid("a key was rejected by AES-256-GCM"))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    const AAD: Aad<'static> = Aad {
        team: "team-1",
        owner: "installedApps/abc123",
    };

    fn key_text(fill: u8) -> String {
        STANDARD.encode([fill; KEY_LEN])
    }

    fn ring(versions: &[(u32, u8)]) -> KeyRing {
        let spec = versions
            .iter()
            .map(|(v, fill)| format!("{v}:{}", key_text(*fill)))
            .collect::<Vec<_>>()
            .join(",");
        KeyRing::parse(&spec).unwrap()
    }

    fn spec_error(spec: &str) -> String {
        match KeyRing::parse(spec) {
            Err(CryptoError::InvalidKeySpec(message)) => message,
            other => panic!("expected InvalidKeySpec for {spec:?}, got {other:?}"),
        }
    }

    #[test]
    fn round_trip() {
        let ring = ring(&[(1, 1)]);
        for plaintext in [&b""[..], b"x", b"some longer secret value \x00\xff"] {
            let sealed = ring.seal(&AAD, plaintext).unwrap();
            assert_eq!(sealed.len(), HEADER_LEN + plaintext.len() + TAG_LEN);
            assert_eq!(sealed[0], FORMAT_VERSION);
            assert_eq!(KeyRing::sealed_key_version(&sealed).unwrap(), 1);
            assert_eq!(ring.open(&AAD, &sealed).unwrap().expose(), plaintext);
        }
    }

    #[test]
    fn other_team_or_owner_fails() {
        let ring = ring(&[(1, 1)]);
        let sealed = ring.seal(&AAD, b"secret").unwrap();
        for aad in [
            Aad {
                team: "team-2",
                ..AAD
            },
            Aad {
                owner: "installedApps/abc124",
                ..AAD
            },
            Aad {
                team: "team-1installedApps/abc123",
                owner: "",
            },
            Aad {
                team: "",
                owner: "team-1installedApps/abc123",
            },
        ] {
            assert!(matches!(
                ring.open(&aad, &sealed),
                Err(CryptoError::OpenFailed)
            ));
        }
    }

    #[test]
    fn every_single_bit_flip_fails() {
        let ring = ring(&[(1, 1), (2, 2)]);
        let sealed = ring.seal(&AAD, b"short").unwrap();
        for bit in 0..sealed.len() * 8 {
            let mut tampered = sealed.clone();
            tampered[bit / 8] ^= 1 << (bit % 8);
            assert!(
                ring.open(&AAD, &tampered).is_err(),
                "bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_fails_cleanly() {
        let ring = ring(&[(1, 1)]);
        let sealed = ring.seal(&AAD, b"short value").unwrap();
        for len in 0..sealed.len() {
            let err = ring.open(&AAD, &sealed[..len]).unwrap_err();
            assert!(
                matches!(err, CryptoError::Malformed | CryptoError::OpenFailed),
                "length {len}: {err:?}"
            );
        }
        // Longer input fails too.
        let mut extended = sealed;
        extended.push(0);
        assert!(matches!(
            ring.open(&AAD, &extended),
            Err(CryptoError::OpenFailed)
        ));
    }

    #[test]
    fn unknown_key_version_fails() {
        let sealed = ring(&[(3, 3)]).seal(&AAD, b"secret").unwrap();
        assert!(matches!(
            ring(&[(1, 1), (2, 2)]).open(&AAD, &sealed),
            Err(CryptoError::UnknownKeyVersion(3))
        ));
        assert!(matches!(
            ring(&[(1, 1), (4, 4)]).open(&AAD, &sealed),
            Err(CryptoError::UnknownKeyVersion(3))
        ));
    }

    #[test]
    fn same_version_other_key_fails() {
        let sealed = ring(&[(1, 1)]).seal(&AAD, b"secret").unwrap();
        assert!(matches!(
            ring(&[(1, 9)]).open(&AAD, &sealed),
            Err(CryptoError::OpenFailed)
        ));
    }

    #[test]
    fn rotation_seals_new_opens_old() {
        let old = ring(&[(1, 1)]);
        let sealed_v1 = old.seal(&AAD, b"old secret").unwrap();
        let rotated = ring(&[(2, 2), (1, 1)]);
        assert_eq!(rotated.newest_version(), 2);
        assert_eq!(rotated.versions(), [1, 2]);
        let sealed_v2 = rotated.seal(&AAD, b"new secret").unwrap();
        assert_eq!(KeyRing::sealed_key_version(&sealed_v2).unwrap(), 2);
        assert_eq!(KeyRing::sealed_key_version(&sealed_v1).unwrap(), 1);
        assert_eq!(
            rotated.open(&AAD, &sealed_v1).unwrap().expose(),
            b"old secret"
        );
        assert_eq!(
            rotated.open(&AAD, &sealed_v2).unwrap().expose(),
            b"new secret"
        );

        let retired = rotated.with_min_version(2).unwrap();
        assert_eq!(retired.versions(), [2]);
        assert!(matches!(
            retired.open(&AAD, &sealed_v1),
            Err(CryptoError::KeyRetired(1))
        ));
        assert_eq!(
            retired.open(&AAD, &sealed_v2).unwrap().expose(),
            b"new secret"
        );
    }

    #[test]
    fn with_min_version_bounds() {
        let ring3 = || ring(&[(1, 1), (2, 2), (3, 3)]);
        assert_eq!(ring3().with_min_version(0).unwrap().versions(), [1, 2, 3]);
        assert_eq!(ring3().with_min_version(3).unwrap().versions(), [3]);
        assert!(matches!(
            ring3().with_min_version(4),
            Err(CryptoError::InvalidKeySpec(_))
        ));
        // Lowering the minimum again does not bring retired keys back.
        let lowered = ring3()
            .with_min_version(3)
            .unwrap()
            .with_min_version(1)
            .unwrap();
        assert_eq!(lowered.versions(), [3]);
        let v1 = ring(&[(1, 1)]).seal(&AAD, b"x").unwrap();
        assert!(matches!(
            lowered.open(&AAD, &v1),
            Err(CryptoError::KeyRetired(1))
        ));
    }

    #[test]
    fn nonces_are_distinct() {
        let ring = ring(&[(1, 1)]);
        let mut nonces = HashSet::new();
        for _ in 0..100_000 {
            let sealed = ring.seal(&AAD, b"").unwrap();
            let view = SealedView::parse(&sealed).unwrap();
            assert!(nonces.insert(view.nonce), "nonce repeated");
        }
        assert_eq!(nonces.len(), 100_000);
    }

    #[test]
    fn parse_accepts_whitespace_url_safe_and_unpadded() {
        let url_key = URL_SAFE_LENIENT.encode([0xfb; KEY_LEN]);
        assert!(url_key.contains(['-', '_']));
        let unpadded = key_text(1).trim_end_matches('=').to_owned();
        let ring = KeyRing::parse(&format!(
            "  1:{} ,\n 2 : {url_key}\t, 3:{unpadded}  ",
            key_text(7)
        ))
        .unwrap();
        assert_eq!(ring.versions(), [1, 2, 3]);
        assert_eq!(ring.newest_version(), 3);
        assert_eq!(
            KeyRing::parse(&format!("4294967295:{}", key_text(1)))
                .unwrap()
                .newest_version(),
            u32::MAX
        );
    }

    #[test]
    fn parse_errors() {
        let key = key_text(1);
        let short = STANDARD.encode([5u8; 16]);
        let long = STANDARD.encode([6u8; 33]);
        let bad_b64 = format!("{}!", &key[..40]);
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "empty"),
            ("  \n ".to_owned(), "empty"),
            (key.clone(), "entry #1 is not of the form"),
            (format!("1:{key},"), "entry #2 is empty"),
            (format!("1:{key},,2:{}", key_text(2)), "entry #2 is empty"),
            (
                format!("0:{key}"),
                "entry #1: the key version is not an integer",
            ),
            (
                format!("-1:{key}"),
                "entry #1: the key version is not an integer",
            ),
            (
                format!("+1:{key}"),
                "entry #1: the key version is not an integer",
            ),
            (
                format!("x:{key}"),
                "entry #1: the key version is not an integer",
            ),
            (
                format!(":{key}"),
                "entry #1: the key version is not an integer",
            ),
            (
                format!("4294967296:{key}"),
                "entry #1: the key version is not an integer",
            ),
            (
                format!("{key}:1"),
                "entry #1: the key version is not an integer",
            ),
            (
                format!("1:{key},1:{}", key_text(2)),
                "key version 1 appears more than once (entry #2)",
            ),
            (
                format!("1:{key},2:{key}"),
                "key versions 1 and 2 hold the same key",
            ),
            (
                format!("2:{short}"),
                "key version 2 (entry #1): the key must be 32 bytes after base64 decoding, got 16",
            ),
            (format!("2:{long}"), "got 33"),
            (
                "3:".to_owned(),
                "key version 3 (entry #1): the key must be 32 bytes",
            ),
            (
                format!("1:{}, 3:{bad_b64}", key_text(2)),
                "key version 3 (entry #2): the key is not valid base64",
            ),
            (format!("1:{}+-", &key[..42]), "not valid base64"),
        ];
        for (spec, expected) in cases {
            let message = spec_error(&spec);
            assert!(message.contains(expected), "{spec:?}: {message}");
            for secret in [&key, &short, &long, &bad_b64] {
                assert!(!message.contains(secret.as_str()), "{message}");
                assert!(!message.contains(&secret[..20]), "{message}");
            }
            let shown = CryptoError::InvalidKeySpec(message).to_string();
            assert!(shown.starts_with("invalid encryption key spec: "));
        }
    }

    #[test]
    fn generate_gives_a_working_ring_and_spec() {
        let (ring, spec) = KeyRing::generate(7).unwrap();
        assert_eq!(ring.versions(), [7]);
        ring.self_test().unwrap();
        let sealed = ring.seal(&AAD, b"dev").unwrap();
        let reparsed = KeyRing::parse(&spec).unwrap();
        assert_eq!(reparsed.open(&AAD, &sealed).unwrap().expose(), b"dev");
        assert!(spec.starts_with("7:"));
        assert_eq!(spec.len(), 2 + 44);
        let (_, other) = KeyRing::generate(7).unwrap();
        assert_ne!(spec, other);
        assert!(matches!(
            KeyRing::generate(0),
            Err(CryptoError::InvalidKeySpec(_))
        ));
    }

    #[test]
    fn self_test_passes_for_every_key() {
        ring(&[(1, 1), (2, 2), (5, 5)]).self_test().unwrap();
        ring(&[(1, 1), (2, 2)])
            .with_min_version(2)
            .unwrap()
            .self_test()
            .unwrap();
    }

    #[test]
    fn credentials_round_trip() {
        let ring = ring(&[(1, 1)]);
        let creds = Credentials::new(BTreeMap::from([
            ("token".to_owned(), "t0k3n".to_owned()),
            ("user".to_owned(), "me".to_owned()),
        ]));
        let sealed = ring.seal_credentials(&AAD, &creds).unwrap();
        let opened = ring.open_credentials(&AAD, &sealed).unwrap();
        assert_eq!(opened.expose(), creds.expose());
        let other = Aad {
            owner: "integrations/xyz",
            ..AAD
        };
        assert!(matches!(
            ring.open_credentials(&other, &sealed),
            Err(CryptoError::OpenFailed)
        ));
        let not_json = ring.seal(&AAD, b"not json").unwrap();
        assert!(matches!(
            ring.open_credentials(&AAD, &not_json),
            Err(CryptoError::Malformed)
        ));
    }

    #[test]
    fn debug_and_errors_never_show_secrets() {
        const CANARY: &str = "canary-plaintext-7f3a";
        let key = key_text(0x42);
        let ring = KeyRing::parse(&format!("1:{}, 2:{key}", key_text(0x41))).unwrap();
        let printed = format!("{ring:?} {ring:#?}");
        assert!(!printed.contains(&key), "{printed}");
        assert!(!printed.contains(&key_text(0x41)), "{printed}");
        assert_eq!(
            format!("{ring:?}"),
            "KeyRing { versions: [1, 2], newest_version: 2, min_version: 1, .. }"
        );

        let sealed = ring.seal(&AAD, CANARY.as_bytes()).unwrap();
        let opened = ring.open(&AAD, &sealed).unwrap();
        assert!(!format!("{opened:?}{opened}").contains(CANARY));
        let errors = [
            ring.open(&Aad { team: "x", ..AAD }, &sealed).unwrap_err(),
            ring.open(&AAD, &sealed[..3]).unwrap_err(),
            CryptoError::UnknownKeyVersion(9),
            CryptoError::KeyRetired(1),
            CryptoError::Rng,
        ];
        for err in errors {
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(CANARY) && !shown.contains(&key), "{shown}");
        }
        assert_eq!(
            CryptoError::OpenFailed.to_string(),
            "cannot open sealed value: wrong key, wrong binding (team/owner) or corrupted data"
        );
    }

    #[test]
    fn key_ring_is_shareable_across_tasks() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<KeyRing>();
        assert_send_sync::<Credentials>();
        assert_send_sync::<SecretBytes>();
    }

    /// A string and two different split points inside it (on char
    /// boundaries): the same concatenated text, two different bindings.
    fn shifted_split() -> impl Strategy<Value = (String, usize, usize)> {
        any::<String>()
            .prop_filter("needs two split points", |s| !s.is_empty())
            .prop_flat_map(|s| {
                let cuts: Vec<usize> = (0..=s.len()).filter(|&i| s.is_char_boundary(i)).collect();
                let n = cuts.len();
                (Just(s), Just(cuts), 0..n, 0..n)
            })
            .prop_filter("split points must differ", |(_, _, i, j)| i != j)
            .prop_map(|(s, cuts, i, j)| (s, cuts[i], cuts[j]))
    }

    proptest! {
        #[test]
        fn prop_round_trip_and_binding(
            plaintext in proptest::collection::vec(any::<u8>(), 0..256),
            team in any::<String>(),
            owner in any::<String>(),
            other_team in any::<String>(),
            other_owner in any::<String>(),
        ) {
            let ring = ring(&[(1, 1), (2, 2)]);
            let aad = Aad { team: &team, owner: &owner };
            let sealed = ring.seal(&aad, &plaintext).unwrap();
            let opened = ring.open(&aad, &sealed).unwrap();
            prop_assert_eq!(opened.expose(), plaintext.as_slice());
            prop_assume!((&team, &owner) != (&other_team, &other_owner));
            let other = Aad { team: &other_team, owner: &other_owner };
            prop_assert!(matches!(ring.open(&other, &sealed), Err(CryptoError::OpenFailed)));
        }

        #[test]
        fn prop_shifted_boundary_never_opens(
            plaintext in proptest::collection::vec(any::<u8>(), 0..64),
            (text, i, j) in shifted_split(),
        ) {
            let ring = ring(&[(1, 1)]);
            let aad = Aad { team: &text[..i], owner: &text[i..] };
            let shifted = Aad { team: &text[..j], owner: &text[j..] };
            let sealed = ring.seal(&aad, &plaintext).unwrap();
            prop_assert!(matches!(ring.open(&shifted, &sealed), Err(CryptoError::OpenFailed)));
            let opened = ring.open(&aad, &sealed).unwrap();
            prop_assert_eq!(opened.expose(), plaintext.as_slice());
        }
    }
}
