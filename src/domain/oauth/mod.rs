//! OAuth 2.0: adding an installed app by signing in to its service (authorization code flow
//! with PKCE), refreshing its access token before it expires (one replica per app), and the
//! health of that grant.
//!
//! - [`catalog`]: the OAuth part of a catalog entry; [`clients`]: the deployment's client ids
//!   and secrets; [`http`]: the calls to providers and their answers, over the
//!   [`ProviderCalls`] startup wires to the outbound policy (the domain makes no connection
//!   itself); `provider_text`: what of a provider's words may be shown (its checked error
//!   code) and logged (scrubbed).
//! - [`authorize`]: Start, Complete (RPC or callback) and Get of an authorization;
//!   [`browser`]: the sign-in bound to the browser it was opened in (the callback's check).
//! - [`refresh`]: the refresh of one grant (lease, exchange, commit), on demand and in the
//!   background, and what a failure does to the app.

pub mod authorize;
pub mod browser;
pub mod catalog;
pub mod clients;
mod complete;
pub mod http;
pub(crate) mod provider_text;
pub mod refresh;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use url::Url;

use self::clients::Clients;
use self::http::Provider;
use crate::domain::context::Context;
use crate::store::GrantRow;

pub use http::ProviderCalls;

pub use authorize::{
    Authorization, AuthorizationState, Completion, SignInUris, StartAuthorization,
};
pub use browser::{BrowserCookies, COOKIE_PREFIX, Completer, MAX_COOKIES, OpenedSignIn};
pub use refresh::RefreshOutcome;

/// How long a started authorization may be completed.
pub const AUTHORIZATION_TTL_MICROS: i64 = 10 * 60 * 1_000_000;
/// Longest a return URL may be, in bytes.
pub const MAX_RETURN_URL: usize = 2000;

/// The deployment's OAuth settings.
pub struct OAuthSettings {
    /// Where the hub's HTTP listener is reached from browsers: the redirect URI is this plus
    /// `/oauth/callback`. Without it, authorizations cannot start (refresh still works).
    pub public_url: Option<Url>,
    pub clients: Clients,
    /// Allow http to loopback in return URLs (development and tests); the provider calls
    /// have their own policy ([`ProviderCalls`]).
    pub allow_loopback_http: bool,
    /// Origins (`scheme://host[:port]`) a return URL may point at, besides the public URL's.
    pub return_origins: Vec<String>,
    /// How many refreshes one replica runs at once.
    pub refresh_concurrency: usize,
    /// How often the background refresher looks for grants due.
    pub refresh_interval: Duration,
}

/// The deployment's OAuth: its settings, its provider calls, this replica's refreshes.
pub struct OAuth {
    settings: OAuthSettings,
    provider: Provider,
    /// This replica's name in refresh leases.
    replica: String,
    /// One refresh in flight per app in this replica (single flight); across replicas the
    /// lease decides.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    observer: Option<Box<dyn Fn(RefreshOutcome) + Send + Sync>>,
}

impl OAuth {
    /// OAuth with these settings, calling providers through `calls`.
    pub fn new(settings: OAuthSettings, calls: Arc<dyn ProviderCalls>) -> OAuth {
        OAuth {
            settings,
            provider: Provider::new(calls),
            replica: crate::domain::types::new_id(),
            flights: Mutex::new(HashMap::new()),
            observer: None,
        }
    }

    /// Calls `observe` with the outcome of every refresh attempt (for metrics).
    pub fn observe(mut self, observe: impl Fn(RefreshOutcome) + Send + Sync + 'static) -> OAuth {
        self.observer = Some(Box::new(observe));
        self
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    /// `{public_url}/oauth/callback`.
    pub fn redirect_uri(&self) -> Option<String> {
        self.settings
            .public_url
            .as_ref()
            .map(|base| format!("{}/oauth/callback", base.as_str().trim_end_matches('/')))
    }

    fn flight(&self, app_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        // Forget finished flights so the map stays as small as the refreshes in progress.
        flights.retain(|_, f| Arc::strong_count(f) > 1);
        flights.entry(app_id.to_owned()).or_default().clone()
    }

    fn observed(&self, outcome: RefreshOutcome) {
        if let Some(observe) = &self.observer {
            observe(outcome);
        }
    }
}

/// An OAuth grant's health, as InstalledApp shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantHealth {
    pub expire_time: Option<i64>,
    pub last_refresh_time: Option<i64>,
    pub last_refresh_error: Option<String>,
}

impl GrantHealth {
    pub fn of(row: &GrantRow) -> GrantHealth {
        GrantHealth {
            expire_time: row.expire_time,
            last_refresh_time: row.last_refresh_time,
            last_refresh_error: row.last_refresh_error.clone(),
        }
    }
}

/// OAuth 2.0 authorizations (`authorize.rs`, `browser.rs`, `complete.rs`) and the refresh
/// of their grants (`refresh.rs`); without OAuth configured, starting one is refused and
/// nothing is refreshed.
#[derive(Clone)]
pub struct Authorizations {
    ctx: Arc<Context>,
    oauth: Option<Arc<OAuth>>,
    /// Checks the credentials an authorization brings before they are stored.
    verifier: crate::domain::verify::Verifier,
}

impl Authorizations {
    pub(in crate::domain) fn new(
        ctx: Arc<Context>,
        oauth: Option<Arc<OAuth>>,
        verifier: crate::domain::verify::Verifier,
    ) -> Authorizations {
        Authorizations {
            ctx,
            oauth,
            verifier,
        }
    }

    fn ctx(&self) -> &Context {
        &self.ctx
    }

    /// The OAuth this service was built with (a hub rebuilt with other settings keeps it).
    pub(in crate::domain) fn oauth_handle(&self) -> Option<Arc<OAuth>> {
        self.oauth.clone()
    }

    /// Whether OAuth is configured on this deployment.
    pub(in crate::domain) fn configured(&self) -> bool {
        self.oauth.is_some()
    }

    /// Fills the OAuth health of apps authorized through OAuth (one query for all of them;
    /// none when OAuth is not configured).
    pub(in crate::domain) async fn attach_grants(
        &self,
        team: &crate::domain::types::TeamId,
        apps: &mut [crate::domain::model::InstalledApp],
    ) -> crate::domain::Result<()> {
        if self.oauth.is_none() || apps.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = apps.iter().map(|a| a.name.id.clone()).collect();
        let grants = self.ctx().store().grants_of(team.as_str(), &ids).await?;
        for app in apps {
            app.oauth = grants
                .iter()
                .find(|g| g.installed_app_id == app.name.id)
                .map(GrantHealth::of);
        }
        Ok(())
    }
}

/// Shortest margin before expiry at which the refresher renews a token (when its lifetime
/// allows: never more than half of it).
pub const MIN_REFRESH_MARGIN_MICROS: i64 = 5 * 60 * 1_000_000;

/// When the refresher should renew a token issued at `issue` expiring at `expire`: a tenth
/// of its lifetime before expiry, at least [`MIN_REFRESH_MARGIN_MICROS`], at most half of it.
pub fn refresh_time(issue: i64, expire: i64) -> i64 {
    let lifetime = (expire - issue).max(0);
    let margin = (lifetime / 10)
        .max(MIN_REFRESH_MARGIN_MICROS)
        .min(lifetime / 2);
    expire - margin
}

/// Whether a token is so close to expiry that a resolution must refresh it first: less than
/// a quarter of its lifetime (at most a minute) left.
pub fn nearly_expired(issue: i64, expire: i64, now: i64) -> bool {
    let lifetime = (expire - issue).max(0);
    expire - now < (lifetime / 4).min(60_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000;

    #[test]
    fn the_refresh_margin_is_a_tenth_at_least_five_minutes_at_most_half() {
        // 12 h: 72 min before expiry.
        assert_eq!(
            refresh_time(0, 12 * 3600 * SEC),
            (12 * 3600 - 72 * 60) * SEC
        );
        // 1 h: a tenth is 6 min.
        assert_eq!(refresh_time(0, 3600 * SEC), 3240 * SEC);
        // 20 min: five minutes.
        assert_eq!(refresh_time(0, 1200 * SEC), 900 * SEC);
        // 6 s: half.
        assert_eq!(refresh_time(0, 6 * SEC), 3 * SEC);
        assert_eq!(refresh_time(10, 10), 10);
    }

    #[test]
    fn a_token_is_nearly_expired_in_its_last_quarter_or_minute() {
        let hour = 3600 * SEC;
        assert!(!nearly_expired(0, hour, hour - 61 * SEC));
        assert!(nearly_expired(0, hour, hour - 59 * SEC));
        assert!(nearly_expired(0, hour, hour + SEC));
        assert!(!nearly_expired(0, 8 * SEC, 5 * SEC));
        assert!(nearly_expired(0, 8 * SEC, 7 * SEC));
    }
}
