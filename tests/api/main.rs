//! The one integration-test binary: the real server on 127.0.0.1:0, real tonic clients,
//! SQLite and PostgreSQL. What a test needs beyond Rust (PostgreSQL, Node.js, python3) is
//! found or set up once per run, and a test is skipped, loudly, where it is missing: `needs`.

mod access;
mod admin;
mod app_events;
mod audit;
mod audit_chain;
mod audit_export;
mod audit_reads;
mod bounds;
mod caps;
mod client;
mod crash;
mod create_batch;
mod delivery;
mod events;
mod faults;
mod fixtures;
mod helpers;
mod hostile_input;
mod hostile_telemetry;
mod isolation;
mod jwks;
mod kept_connections;
mod keyed_reads;
mod keys;
mod needs;
mod oauth;
mod observability;
mod offboarding;
mod pages;
mod pg_cluster;
mod privilege;
mod process;
mod promote;
mod rate_limit;
mod replica_reads;
mod replicas;
mod request_ids;
mod rules;
mod rules_apps;
mod secrets;
mod smoke;
mod snapshot;
mod startup;
/// Test keys and a tiny JWKS server, shared with the unit tests in `src/auth`.
#[path = "../../src/auth/test_support.rs"]
mod test_support;
mod validation;
mod verify;
mod version_checks;
mod watch_memory;
mod webhook_hostile;
mod webhook_keys;
mod webhook_receiver;
mod webhook_replicas;
mod webhooks;
