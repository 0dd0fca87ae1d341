//! Byte layout of sealed values and of the associated data (see the module
//! doc of `crypto` for the tables).

use ring::aead::NONCE_LEN;

use super::CryptoError;

/// Format version written as the first byte of every sealed value.
pub(super) const FORMAT_VERSION: u8 = 1;
/// Format byte, key version, nonce.
pub(super) const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
/// AES-GCM tag length.
pub(super) const TAG_LEN: usize = 16;

/// What a sealed value is bound to: opening succeeds only with the same
/// binding it was sealed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aad<'a> {
    /// Team id owning the value.
    pub team: &'a str,
    /// Owner record, e.g. `installedApps/abc123` or `integrations/xyz`.
    pub owner: &'a str,
}

impl Aad<'_> {
    /// The associated data for AES-GCM.
    ///
    /// The header fields are repeated here so that editing them in the stored
    /// value breaks authentication; the length prefixes make the encoding
    /// injective, which is what makes the team/owner binding unforgeable.
    pub(super) fn encode(&self, key_version: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + 4 + 8 + self.team.len() + 8 + self.owner.len());
        out.push(FORMAT_VERSION);
        out.extend_from_slice(&key_version.to_be_bytes());
        for field in [self.team, self.owner] {
            // usize -> u64 is lossless on every platform Rust supports (<= 64-bit).
            out.extend_from_slice(&(field.len() as u64).to_be_bytes());
            out.extend_from_slice(field.as_bytes());
        }
        out
    }
}

/// A sealed value whose header has been parsed: holding one proves the format
/// byte is known, the key version is positive and the body is long enough to
/// hold a tag.
#[derive(Debug)]
pub(super) struct SealedView<'a> {
    pub(super) key_version: u32,
    pub(super) nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the tag.
    pub(super) body: &'a [u8],
}

impl<'a> SealedView<'a> {
    pub(super) fn parse(sealed: &'a [u8]) -> Result<Self, CryptoError> {
        let (&format, rest) = sealed.split_first().ok_or(CryptoError::Malformed)?;
        if format != FORMAT_VERSION {
            return Err(CryptoError::Malformed);
        }
        let (version, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(CryptoError::Malformed)?;
        let key_version = u32::from_be_bytes(*version);
        // Version 0 is never issued (versions start at 1), so it can only be
        // corruption.
        if key_version == 0 {
            return Err(CryptoError::Malformed);
        }
        let (nonce, body) = rest
            .split_first_chunk::<NONCE_LEN>()
            .ok_or(CryptoError::Malformed)?;
        if body.len() < TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        Ok(Self {
            key_version,
            nonce: *nonce,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_encoding_is_length_prefixed() {
        let a = Aad {
            team: "a",
            owner: "bc",
        };
        let b = Aad {
            team: "ab",
            owner: "c",
        };
        assert_ne!(a.encode(1), b.encode(1));
        assert_ne!(a.encode(1), a.encode(2));
        assert_eq!(
            a.encode(1),
            [
                &[1u8, 0, 0, 0, 1][..],
                &1u64.to_be_bytes(),
                b"a",
                &2u64.to_be_bytes(),
                b"bc"
            ]
            .concat()
        );
    }

    #[test]
    fn header_parsing() {
        let mut sealed = vec![FORMAT_VERSION, 0, 0, 1, 2];
        sealed.extend_from_slice(&[9; NONCE_LEN]);
        sealed.extend_from_slice(&[0; TAG_LEN]);
        let view = SealedView::parse(&sealed).unwrap();
        assert_eq!(view.key_version, 258);
        assert_eq!(view.nonce, [9; NONCE_LEN]);
        assert_eq!(view.body.len(), TAG_LEN);

        for len in 0..sealed.len() {
            assert!(matches!(
                SealedView::parse(&sealed[..len]),
                Err(CryptoError::Malformed)
            ));
        }
        let mut bad_format = sealed.clone();
        bad_format[0] = 2;
        assert!(matches!(
            SealedView::parse(&bad_format),
            Err(CryptoError::Malformed)
        ));
        let mut version_zero = sealed;
        version_zero[1..5].fill(0);
        assert!(matches!(
            SealedView::parse(&version_zero),
            Err(CryptoError::Malformed)
        ));
    }
}
