//! [`Hub`]: the domain's services, one per resource family, over one shared [`Context`].
//!
//! - [`InstalledApps`]: installed apps (create, read, update, delete, suspend, resume, hand
//!   over, report rejected credentials).
//! - [`Integrations`]: integrations (create, read, update, delete, hand over, reauthenticate,
//!   promote their credentials, resolve credentials).
//! - [`Authorizations`]: OAuth 2.0 authorizations and the background refresher.
//! - [`Webhooks`]: webhook subscriptions and their deliveries.
//! - [`Audit`]: the audit log.
//!
//! Each service owns its operations and keeps its parts private; what they share is the
//! [`Context`] (store, keys, catalog, clock, read cache, and [`Context::write`], the one way a
//! change is written). Where one service needs another's rule, it calls that service's
//! method (a service holds a handle of the services it calls) or a rule function.

use std::sync::Arc;

use crate::crypto::KeyRing;
use crate::store::Store;

use super::audit::Audit;
use super::catalog::Catalog;
use super::context::Context;
use super::installed_apps::InstalledApps;
use super::integrations::Integrations;
use super::oauth::{Authorizations, OAuth};
use super::read_cache::{ReadCache, ReadCacheSettings};
use super::tokens::TeamCursors;
use super::types::TeamId;
use super::verify::Verifier;
use super::webhooks::Webhooks;

pub use super::context::{Clock, SystemClock};

/// The integration-hub domain: its services over one shared context.
pub struct Hub {
    ctx: Arc<Context>,
    apps: InstalledApps,
    integrations: Integrations,
    authorizations: Authorizations,
    webhooks: Webhooks,
    audit: Audit,
    verifier: Verifier,
}

impl Hub {
    pub fn new(
        store: Store,
        keys: Arc<KeyRing>,
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
    ) -> Hub {
        Hub::assemble(
            Context::new(store, keys, catalog, clock),
            None,
            Verifier::off(),
        )
    }

    fn assemble(ctx: Context, oauth: Option<Arc<OAuth>>, verifier: Verifier) -> Hub {
        let ctx = Arc::new(ctx);
        let authorizations = Authorizations::new(ctx.clone(), oauth, verifier.clone());
        let apps = InstalledApps::new(ctx.clone(), authorizations.clone(), verifier.clone());
        Hub {
            integrations: Integrations::new(ctx.clone(), apps.clone(), authorizations.clone()),
            webhooks: Webhooks::new(ctx.clone()),
            audit: Audit::new(ctx.clone()),
            apps,
            authorizations,
            ctx,
            verifier,
        }
    }

    /// This hub with a read cache of these settings ([`ReadCacheSettings::OFF`]: none).
    pub fn with_read_cache(self, settings: ReadCacheSettings) -> Hub {
        let ctx = self.ctx.with_read_cache(settings);
        self.with_context(ctx)
    }

    /// This hub on another context, keeping its OAuth settings and verifier.
    fn with_context(self, ctx: Context) -> Hub {
        let oauth = self.authorizations.oauth_handle();
        Hub::assemble(ctx, oauth, self.verifier)
    }

    /// This hub with the service accounts that may watch the audit log
    /// (`INTEGRATION_HUB_AUDIT_READERS`).
    pub fn with_audit_readers(self, readers: Vec<String>) -> Hub {
        let ctx = self.ctx.with_audit_readers(readers);
        self.with_context(ctx)
    }

    /// This hub auditing Get and List of credential-bearing resources, or not
    /// (`INTEGRATION_HUB_AUDIT_READS`).
    pub fn with_read_audits(self, enabled: bool) -> Hub {
        let ctx = self.ctx.with_read_audits(enabled);
        self.with_context(ctx)
    }

    /// This hub with OAuth 2.0 authorization and refresh.
    pub fn with_oauth(self, oauth: OAuth) -> Hub {
        let ctx = self.ctx.as_ref().clone();
        Hub::assemble(ctx, Some(Arc::new(oauth)), self.verifier)
    }

    /// This hub verifying credentials with their providers ([`Verifier::off`]: not).
    pub fn with_verifier(self, verifier: Verifier) -> Hub {
        let oauth = self.authorizations.oauth_handle();
        Hub::assemble(self.ctx.as_ref().clone(), oauth, verifier)
    }

    pub fn apps(&self) -> &InstalledApps {
        &self.apps
    }

    pub fn integrations(&self) -> &Integrations {
        &self.integrations
    }

    pub fn authorizations(&self) -> &Authorizations {
        &self.authorizations
    }

    pub fn webhooks(&self) -> &Webhooks {
        &self.webhooks
    }

    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// The read cache, for the event tailer to mark the teams whose events it reads.
    pub fn read_cache(&self) -> &Arc<ReadCache> {
        self.ctx.cache()
    }

    pub fn catalog(&self) -> &Catalog {
        self.ctx.catalog()
    }

    /// The cursors of `team`'s view of the event log (`None`: the view of every team).
    pub fn cursors(&self, team: Option<&TeamId>) -> TeamCursors {
        TeamCursors::new(self.ctx.keys().clone(), team)
    }

    /// The shared context (the domain's unit tests write through it).
    #[cfg(test)]
    pub(super) fn context(&self) -> &Context {
        &self.ctx
    }
}
