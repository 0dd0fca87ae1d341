//! Opaque tokens: event cursors and page tokens, sealed so that a client learns nothing from
//! them (not the global sequence numbers that would show another team's write rate, not a
//! record's creation time) and cannot forge or alter one.
//!
//! # Layout
//!
//! ```text
//! offset  size    field
//! 0       4       key version, u32 big-endian
//! 4       12      synthetic nonce: the first 12 bytes of HMAC-SHA256(nonce key, aad || plaintext)
//! 16      n + 16  AES-256-GCM ciphertext of the n plaintext bytes, then the 16-byte tag
//! ```
//!
//! Associated data: `"ihtok1" || key version u32 BE || len(scope) u64 BE || scope`. The scope
//! names what the token is for (a cursor of team T, a page of listing L of team T), so a token
//! is refused anywhere else.
//!
//! Sealing is deterministic (the nonce is derived from the scope and the plaintext, as in
//! SIV): the same position in the same scope always gives the same token under one key, so
//! clients may compare cursors for equality, and equal nonces only ever come with equal
//! plaintexts, which is the one case where reusing a GCM nonce reveals nothing new. Both
//! keys are derived from the version's encryption key under their own labels, never the
//! encryption key itself.

use ring::aead::{Aad as AeadAad, LessSafeKey, NONCE_LEN, Nonce};
use ring::hmac;

use super::CryptoError;
use super::keyring::{KeyRing, aes_key, derive};

const NONCE_LABEL: &[u8] = b"integrationhub/v1 opaque token nonce key";
const SEAL_LABEL: &[u8] = b"integrationhub/v1 opaque token sealing key";
const VERSION_LEN: usize = 4;
const TAG_LEN: usize = 16;

/// The two keys of one key version for opaque tokens.
pub(super) struct TokenKey {
    nonce: hmac::Key,
    seal: LessSafeKey,
}

impl TokenKey {
    pub(super) fn derive(raw: &[u8]) -> Result<TokenKey, CryptoError> {
        Ok(TokenKey {
            nonce: hmac::Key::new(hmac::HMAC_SHA256, derive(raw, NONCE_LABEL).as_ref()),
            seal: aes_key(derive(raw, SEAL_LABEL).as_ref())?,
        })
    }
}

fn associated_data(version: u32, scope: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(6 + 4 + 8 + scope.len());
    aad.extend_from_slice(b"ihtok1");
    aad.extend_from_slice(&version.to_be_bytes());
    aad.extend_from_slice(&(scope.len() as u64).to_be_bytes());
    aad.extend_from_slice(scope);
    aad
}

impl KeyRing {
    /// Seals `plaintext` as an opaque token valid only in `scope`, with the newest key.
    pub fn seal_token(&self, scope: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let (version, key) = self.newest_token_key();
        let aad = associated_data(version, scope);
        let mut mac = hmac::Context::with_key(&key.nonce);
        mac.update(&aad);
        mac.update(plaintext);
        let tag = mac.sign();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
        let mut out = Vec::with_capacity(VERSION_LEN + NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        // Sealing a bounded buffer with a valid key cannot fail; ring reports an error only for
        // inputs beyond GCM's size limit (64 GiB).
        if key
            .seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                AeadAad::from(&aad),
                &mut body,
            )
            .is_err()
        {
            body.clear();
        }
        out.extend_from_slice(&body);
        out
    }

    /// Opens a token sealed by [`KeyRing::seal_token`] for the same `scope`. `None` for
    /// anything else: another scope, an edited byte, a retired or unknown key version.
    pub fn open_token(&self, scope: &[u8], token: &[u8]) -> Option<Vec<u8>> {
        if token.len() < VERSION_LEN + NONCE_LEN + TAG_LEN {
            return None;
        }
        let (version, rest) = token.split_at(VERSION_LEN);
        let version = u32::from_be_bytes(version.try_into().ok()?);
        let key = self.token_key(version)?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let aad = associated_data(version, scope);
        let plain = key
            .seal
            .open_in_place(nonce, AeadAad::from(&aad), &mut body)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(spec).unwrap()
    }

    const ONE: &str = "1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
    const TWO: &str = "2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

    #[test]
    fn tokens_open_in_their_scope_only_and_are_deterministic() {
        let keys = ring(ONE);
        let token = keys.seal_token(b"cursor|team-a", &42i64.to_be_bytes());
        assert_eq!(
            token,
            keys.seal_token(b"cursor|team-a", &42i64.to_be_bytes())
        );
        assert_ne!(
            token,
            keys.seal_token(b"cursor|team-b", &42i64.to_be_bytes())
        );
        assert_ne!(
            token,
            keys.seal_token(b"cursor|team-a", &43i64.to_be_bytes())
        );
        assert_eq!(
            keys.open_token(b"cursor|team-a", &token),
            Some(42i64.to_be_bytes().to_vec())
        );
        assert_eq!(keys.open_token(b"cursor|team-b", &token), None);
        // No byte of the position is visible in the token.
        assert!(!token.windows(8).any(|w| w == 42i64.to_be_bytes()));
    }

    #[test]
    fn every_edited_byte_and_every_truncation_is_refused() {
        let keys = ring(ONE);
        let token = keys.seal_token(b"s", b"position");
        for i in 0..token.len() {
            let mut edited = token.clone();
            edited[i] ^= 0x01;
            assert_eq!(keys.open_token(b"s", &edited), None, "byte {i}");
            assert_eq!(keys.open_token(b"s", &token[..i]), None, "length {i}");
        }
    }

    #[test]
    fn older_keys_open_until_retired_and_the_newest_seals() {
        let old = ring(ONE);
        let token = old.seal_token(b"s", b"p");
        let both = ring(&format!("{ONE},{TWO}"));
        assert_eq!(both.open_token(b"s", &token), Some(b"p".to_vec()));
        assert_eq!(&both.seal_token(b"s", b"p")[..4], &2u32.to_be_bytes());
        let retired = ring(&format!("{ONE},{TWO}")).with_min_version(2).unwrap();
        assert_eq!(retired.open_token(b"s", &token), None);
    }
}
