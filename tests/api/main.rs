//! The one integration-test binary: the real server on 127.0.0.1:0, real tonic clients,
//! SQLite and PostgreSQL.

mod access;
mod access_fixtures;
mod audit;
mod crash;
mod delivery;
mod events;
mod fixtures;
mod helpers;
mod isolation;
mod keys;
mod observability;
mod process;
mod rate_limit;
mod replicas;
mod rules;
mod secrets;
mod smoke;
mod startup;
mod validation;
