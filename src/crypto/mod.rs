//! Sealing of secrets at rest: installed-app and integration credentials are
//! stored only as AES-256-GCM ciphertext bound to their team and owner record.
//!
//! This module imports nothing else of the crate, so it can be reviewed on its
//! own.
//!
//! # Sealed value format (format version 1)
//!
//! ```text
//! offset  size    field
//! 0       1       format version, always 1
//! 1       4       key version, u32 big-endian, >= 1
//! 5       12      nonce, fresh from the system RNG for every seal
//! 17      n + 16  AES-256-GCM ciphertext of the n plaintext bytes, then the 16-byte tag
//! ```
//!
//! The key version travels in clear so that a ring holding several keys can
//! pick the right one, and so that rotation can find values sealed with an old
//! key ([`KeyRing::sealed_key_version`]) without decrypting them.
//!
//! # Associated data (authenticated, not stored)
//!
//! ```text
//! format version u8 || key version u32 BE
//!   || len(team) u64 BE || team bytes || len(owner) u64 BE || owner bytes
//! ```
//!
//! Every variable-length field is length-prefixed, so no two different
//! `(team, owner)` pairs share an encoding (`("a", "bc")` differs from
//! `("ab", "c")`). A value copied to another team's row or to another owner
//! record therefore fails to open, as does a value whose header was edited.
//!
//! # Key spec
//!
//! `1:<base64>,2:<base64>`: comma-separated `version:key` entries, each key 32
//! bytes in standard base64 (URL-safe accepted, padding optional). The highest
//! version seals; every version at or above the ring's minimum opens.
//!
//! # Credentials plaintext
//!
//! A [`Credentials`] map is sealed as its canonical JSON: a compact object with
//! keys in sorted order, byte-for-byte what `serde_json::to_vec` writes for a
//! `BTreeMap<String, String>`.
//!
//! # Secret hygiene
//!
//! [`SecretString`], [`SecretBytes`] and [`Credentials`] print `[REDACTED]`
//! and wipe their memory on drop; [`KeyRing`] prints its versions only.
//! Errors never carry key bytes, key text or plaintext. (ring does not wipe
//! its expanded AES key schedules; that is outside this module's reach.)

mod format;
mod keyring;
mod secret;
mod tokens;

pub use format::Aad;
pub use keyring::KeyRing;
pub use secret::{Credentials, SecretBytes, SecretString};

/// Everything that can go wrong while loading keys, sealing or opening.
///
/// Messages are written for the operator reading the log; none of them
/// contains key material or plaintext.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The configured key spec is unusable; the message names the entry by
    /// version or position.
    #[error("invalid encryption key spec: {0}")]
    InvalidKeySpec(String),
    /// The sealed value names a key version the ring does not hold.
    #[error(
        "cannot open sealed value: it was sealed with key version {0}, which is not in the configured key ring"
    )]
    UnknownKeyVersion(u32),
    /// The sealed value's key version is below the ring's minimum.
    #[error(
        "cannot open sealed value: key version {0} is retired (below the configured minimum key version); re-seal it with a current key"
    )]
    KeyRetired(u32),
    /// The bytes are not a sealed value this module understands, or the
    /// opened plaintext is not the expected shape.
    #[error(
        "sealed value is malformed: truncated, unknown format version, key version 0, or content of the wrong shape"
    )]
    Malformed,
    /// Authentication failed.
    #[error("cannot open sealed value: wrong key, wrong binding (team/owner) or corrupted data")]
    OpenFailed,
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed; cannot create keys or nonces")]
    Rng,
}
