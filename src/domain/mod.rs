//! The domain: newtypes parsed at the edge, entities, the rules of docs/rules.md, and one error
//! enum. It never imports tonic; storage is reached through `crate::store` and sealing
//! through `crate::crypto` only, and what `api` needs of them is re-exported from here.
//!
//! - [`hub`]: [`Hub`], the holder of the services, one per resource family:
//!   [`InstalledApps`], [`Integrations`], [`oauth::Authorizations`], [`webhooks::Webhooks`],
//!   [`audit::Audit`].
//! - [`context`]: what the services share (store, keys, catalog, clock, read cache), and
//!   [`context::Context::write`], the one way a change is written (its events and its audit
//!   record in its transaction).
//! - [`installed_apps`], [`integrations`]: the operations on each resource.
//! - [`reauth`]: state changes: breaking and restoring integrations, one or in bulk.
//! - [`credentials`]: the credential check, resolution, idempotent creates.
//! - [`suspension`]: suspending an installed app and resuming it; [`transfer`]: handing an
//!   app or an integration over to a new owner.
//! - [`oauth`]: OAuth 2.0 authorization, token refresh ahead of expiry, grant health.
//! - [`audit`]: the audit log. [`rotation`]: re-sealing under a new key.
//! - [`types`], [`model`], [`catalog`], [`error`]: values, entities, the service catalog and
//!   the error enum.

pub mod app_events;
pub mod audit;
mod audit_batch;
pub mod audit_chain;
pub mod audit_reads;
mod audit_verify;
pub mod binding;
pub mod catalog;
pub mod context;
mod create_batch;
pub mod credentials;
pub mod error;
mod group_commit;
pub mod hub;
pub mod installed_apps;
pub mod integrations;
mod keyed_reads;
pub mod model;
pub mod oauth;
pub mod offboarding;
pub mod policy;
pub mod promote;
pub mod read_cache;
pub mod reauth;
pub mod requests;
pub mod rotation;
pub mod suspension;
pub mod tokens;
pub mod transfer;
pub mod types;
pub mod usable_by;
pub mod verify;
pub mod webhook_delivery;
pub mod webhooks;

#[cfg(test)]
pub(crate) mod test_support;

/// Plaintext credentials as requests carry them (they print `[REDACTED]` and wipe
/// themselves).
pub use crate::crypto::Credentials;
pub use credentials::Resolved;
pub use error::{Denial, Error, FieldViolation, Precondition, Result, Violations};
pub use hub::Hub;
pub use installed_apps::{AppChanges, AppQuery, InstalledApps, NewApp};
pub use integrations::{
    Binding, IntegrationChanges, IntegrationQuery, Integrations, NewIntegration,
};
pub use promote::{Promote, SaveAs};
pub use reauth::Reauth;
