//! integration-hub: a team's installed apps (encrypted third-party authorizations), the
//! integrations built on them, and the events that say when one breaks.
//!
//! - [`config`]: settings from flags and `INTEGRATION_HUB_*` variables.
//! - [`startup`]: builds the server (`Application::build` -> `port()` -> `run_until_stopped`).
//! - [`telemetry`]: the tracing subscriber and OTLP export; [`metrics`]: Prometheus metrics.
//! - [`auth`]: bearer tokens -> `Principal`, the role map and the method policy table.
//! - [`crypto`]: the key ring; seals and opens credentials (AES-256-GCM).
//! - [`domain`]: newtypes, entities and the rules of docs/rules.md, as one service per
//!   resource family (`hub.apps()`, `hub.integrations()`, ...); one error enum.
//! - [`store`]: SeaORM entities and queries, the only place that knows SQL.
//! - [`events`]: tails the outbox and fans events out to watch streams.
//! - [`webhooks`]: delivers the outbox's events to HTTPS receivers, signed (Standard Webhooks).
//! - [`outbound`]: every outbound HTTP call (JWKS, OAuth providers, webhooks) under one policy.
//! - [`api`]: thin gRPC adapters: principal + parse + call the domain + map the result.
//! - [`pb`]: the generated protobuf types and services.
//! - [`text`]: which characters text people read may hold; how log lines escape the rest.
//!
//! Imports point one way: `api` -> `auth`, `domain`, `events`; `domain` -> `store`, `crypto`;
//! `events` -> `store`; `auth` and `webhooks` -> [`outbound`]; `store`, `crypto` and
//! `outbound` import nothing else of ours, `auth` only [`text`] and [`outbound`] (a unit test
//! checks it). `CONTRIBUTING.md` says more, and where a new RPC goes.

pub mod api;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod events;
pub mod metrics;
pub mod outbound;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod webhooks;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod layout_tests;

/// Generated from `proto/integrationhub/v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("integrationhub.v1");

    /// Written by hand, the same on the wire (`build.rs`).
    pub use crate::api::list_page::ListIntegrationsResponse;

    /// The descriptor set served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("integrationhub_descriptor");
}
