//! The one integration-test binary: the real server on 127.0.0.1:0, real tonic clients,
//! SQLite and PostgreSQL.

mod audit;
mod delivery;
mod helpers;
mod keys;
mod rate_limit;
mod smoke;
