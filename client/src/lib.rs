//! A Rust client for integration-hub: installed apps, the integrations built on them, and
//! the stream of integration events.
//!
//! - [`pb`]: the generated messages and clients (compiled from the service's `proto/`),
//!   re-exported with the clients at the top level. Messages that carry credentials print
//!   them as `[REDACTED]`.
//! - [`BearerAuth`]: the token of every call, static or refreshed by a callback (sync or
//!   async), as a tonic interceptor.
//! - [`Client`]: every method, with idempotent calls retried on UNAVAILABLE (backoff with
//!   jitter, honouring the server's `google.rpc.RetryInfo`; see [`RetryPolicy`]).
//! - [`Client::watch_integration_events`]: an [`EventStream`] that resumes from its cursor
//!   across shutdowns, broken connections and replica changes, yields every event exactly
//!   once and in order, and ends with [`WatchError::CursorExpired`] when the server no longer
//!   has the events after it.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use integration_hub_client::{BearerAuth, Client, WatchError, pb};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let token = std::env::var("INTEGRATION_HUB_TOKEN")?;
//! let client = Client::connect_lazy("http://127.0.0.1:50051", BearerAuth::from_static(&token)?)?;
//!
//! // List, then watch from the listing's cursor: nothing is missed in between.
//! let listed = client.list_integrations(pb::ListIntegrationsRequest::default()).await?;
//! let mut events = client.watch_integration_events(pb::WatchIntegrationEventsRequest {
//!     start_cursor: listed.event_cursor,
//!     ..Default::default()
//! });
//! while let Some(event) = events.next().await {
//!     match event {
//!         Ok(event) => println!("{:?} {}", event.r#type(), event.integration_name),
//!         // Too old to resume: list again and watch from the new listing's cursor.
//!         Err(WatchError::CursorExpired { .. }) => break,
//!         Err(other) => return Err(other.into()),
//!     }
//!     // `events.cursor()` is where to resume after a restart of this program.
//! }
//! # Ok(())
//! # }
//! ```
//!
//! `examples/deliver.rs` delivers integration work: it watches, resolves an integration's
//! credentials and reports them rejected when the third party refuses them.

mod auth;
mod client;
mod redact;
pub mod retry;
pub mod watch;

/// Generated from the service's `proto/integrationhub/v1`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("integrationhub.v1");
}

pub use auth::{BearerAuth, DEFAULT_REFRESH_MARGIN, Token, TokenError};
pub use client::{AuthedChannel, Client};
pub use pb::access_service_client::AccessServiceClient;
pub use pb::audit_service_client::AuditServiceClient;
pub use pb::installed_app_service_client::InstalledAppServiceClient;
pub use pb::integration_service_client::IntegrationServiceClient;
pub use retry::RetryPolicy;
/// tonic, whose `Channel`, `Endpoint` and `Status` this crate's API uses.
pub use tonic;
pub use watch::{EventStream, WatchError};
