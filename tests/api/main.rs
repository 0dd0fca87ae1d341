//! The one integration-test binary: the real server on 127.0.0.1:0, real tonic clients,
//! SQLite and PostgreSQL.

mod delivery;
mod helpers;
mod jwks;
mod smoke;
/// Test keys and a tiny JWKS server, shared with the unit tests in `src/auth`.
#[path = "../../src/auth/test_support.rs"]
mod test_support;
