//! Authentication and method-level authorization.
//!
//! A request's `authorization` metadata (`Bearer <JWT>`: HS256 with the shared
//! secret, or RS256/ES256/EdDSA with a key from a JWKS file or URL, chosen by
//! `kid`) is turned by [`Verifier::verify`] into a [`Principal`]: subject,
//! team (or `*` for a service serving every team) and one [`Role`]. [`policy_for`] then says
//! which roles may call the method; [`is_public`] names the few paths that
//! need no token. Finer checks (same team, app creator) belong to the
//! handlers.
//!
//! Every failure is an [`AuthError`]; the gRPC layer answers all of them
//! alike (UNAUTHENTICATED, "missing or invalid credentials") so a caller
//! learns nothing about why, and logs the variant at debug level. Reasons
//! are fixed strings: never the token, a claim value or the secret.
//!
//! Verified tokens are remembered by [`TokenCache`] (until their `exp`, and only under the
//! keys they were verified with), so a caller's token is not verified again on every call.
//!
//! Standalone but for `text` and `outbound` (the JWKS URL is fetched under the one outbound
//! policy); std, `jsonwebtoken`, `serde_json`, `thiserror`, for the JWKS `tokio` and
//! `tracing`, and for the cache `ring` and `base64`.

mod jwks;
mod keystore;
mod limits;
mod policy;
mod principal;
mod roles;
mod token;
mod token_cache;

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
pub(crate) mod test_support;

pub use jwks::{MAX_JWKS_BYTES, MAX_KID_BYTES};
pub use keystore::{
    DEFAULT_JWKS_FETCH_TIMEOUT, DEFAULT_JWKS_MIN_REFRESH_INTERVAL, DEFAULT_JWKS_REFRESH_INTERVAL,
    DEFAULT_JWKS_REQUEST_WAIT, JwksConfig,
};
pub use limits::{Limits, ServiceSubjects};
pub use policy::{Access, is_public};
pub use principal::{ALL_TEAMS, Principal};
pub use roles::{Role, RoleMap, RoleMapError};
pub use token::{
    DEFAULT_LEEWAY_SECS, DEFAULT_ROLES_CLAIM, DEFAULT_TEAM_CLAIM, MAX_LEEWAY_SECS, MAX_TOKEN_BYTES,
    MIN_SECRET_BYTES, MintClaims, Verifier, VerifierConfig, mint_hs256,
};
pub use token_cache::{TokenCache, now_secs};

/// Why a request was not authenticated. The reasons are for the server's
/// debug log and are fixed text: they never contain the token, a claim
/// value from it, or the secret.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `authorization` metadata.
    #[error("no credentials")]
    Missing,
    /// Not `Bearer <compact JWS>`, empty, or too long.
    #[error("malformed authorization header")]
    Malformed,
    /// The token (or, from `Verifier::new`/`mint_hs256`, the configuration)
    /// failed a check: algorithm, key, signature, time, issuer, audience.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token's role values map to no role.
    #[error("no recognised role")]
    NoRole,
    /// A signed and current token whose own claims are unusable: subject,
    /// team or roles of the wrong type or shape, or a forbidden combination.
    #[error("unusable claims: {0}")]
    BadClaims(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_fixed_text_plus_the_reason() {
        assert_eq!(AuthError::Missing.to_string(), "no credentials");
        assert_eq!(
            AuthError::Malformed.to_string(),
            "malformed authorization header"
        );
        assert_eq!(
            AuthError::Invalid("token expired".to_owned()).to_string(),
            "invalid token: token expired"
        );
        assert_eq!(AuthError::NoRole.to_string(), "no recognised role");
        assert_eq!(
            AuthError::BadClaims("the team claim is missing".to_owned()).to_string(),
            "unusable claims: the team claim is missing"
        );
    }
}
