//! Binding a sign-in to the browser that opened it (against login CSRF: an authorization
//! started by one person, sent as a link and completed by another person's browser, would
//! connect that person's account to the first one's team).
//!
//! StartInstalledAppAuthorization answers, besides the provider's URL, the hub's sign-in URL
//! (`POST /oauth/start?state=...`). Opening it, once, from a page of an allowed origin (a form
//! the application submits; a plain link is a GET and is refused, and another site's page is
//! refused by its `Origin`), draws a random value: the browser gets it in a short-lived
//! cookie, the authorization keeps its SHA-256. The callback completes the authorization only
//! for the browser whose cookie matches; any other browser is refused and nothing is consumed
//! (the authorization stays pending for its starter until it expires). The RPC completion is
//! bound by the caller's token instead (only the starter may complete).

use super::Authorizations;
use std::collections::HashMap;

use reqwest::Url;

use super::authorize::{authorization_owner, challenge, random_token, state_hash};
use super::catalog::OAuthDef;
use super::{AUTHORIZATION_TTL_MICROS, OAuth};
use crate::crypto::Aad;
use crate::domain::error::{Error, Precondition, Result};
use crate::domain::types::TeamId;
use crate::store::{AuthorizationRow, AuthorizationStage};

/// The cookie of an authorization is this prefix and the authorization's id.
pub const COOKIE_PREFIX: &str = "ih_oauth_";
/// Most sign-in cookies one callback request is read for.
pub const MAX_COOKIES: usize = 32;

/// The sign-in cookies a browser sent to the callback: authorization id -> value.
pub type BrowserCookies = HashMap<String, String>;

/// Who completes an authorization.
#[derive(Clone, Copy)]
pub enum Completer<'a> {
    /// The RPC's caller, who must be the person who started it.
    Caller(&'a crate::domain::model::Actor),
    /// The hub's callback: the browser, which must be the one the sign-in was opened in.
    Browser(&'a BrowserCookies),
}

/// A sign-in opened in a browser: the cookie to set and where to send the browser.
pub struct OpenedSignIn {
    pub cookie_name: String,
    pub cookie_value: String,
    /// The callback's path: the only one the cookie is sent to.
    pub cookie_path: String,
    pub max_age_secs: i64,
    /// Whether the cookie is `Secure` (the public URL is https).
    pub secure: bool,
    pub provider_uri: String,
}

impl OAuth {
    /// The provider's authorization URL of a pending authorization.
    pub(super) fn provider_url(
        &self,
        service: &str,
        def: &OAuthDef,
        scopes: &[String],
        state: &str,
        verifier: &str,
    ) -> Result<Url> {
        let redirect_uri = self.redirect_uri().ok_or_else(public_url_missing)?;
        let client_id = self
            .settings
            .clients
            .get(service)
            .map(|c| c.id.clone())
            .ok_or_else(|| Error::internal("client vanished"))?;
        let mut url = self
            .provider
            .check_url(&def.authorization_url)
            .map_err(|e| Error::invalid("service", e.describe()))?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &client_id)
                .append_pair("redirect_uri", &redirect_uri)
                .append_pair("state", state);
            if !scopes.is_empty() {
                query.append_pair("scope", &scopes.join(&def.scope_separator));
            }
            if def.pkce {
                query
                    .append_pair("code_challenge", &challenge(verifier))
                    .append_pair("code_challenge_method", "S256");
            }
            for (name, value) in &def.authorization_params {
                query.append_pair(name, value);
            }
        }
        Ok(url)
    }

    /// `{public_url}/oauth/start?state=...`.
    pub(super) fn sign_in_url(&self, state: &str) -> Result<String> {
        let base = self
            .settings
            .public_url
            .as_ref()
            .ok_or_else(public_url_missing)?;
        let mut url = Url::parse(&format!(
            "{}/oauth/start",
            base.as_str().trim_end_matches('/')
        ))
        .map_err(|_| Error::internal("public URL"))?;
        url.query_pairs_mut().append_pair("state", state);
        Ok(url.to_string())
    }

    /// The origins (`scheme://host[:port]`) whose pages may send a browser here: the public
    /// URL's and those of INTEGRATION_HUB_OAUTH_RETURN_ORIGINS (return URLs are checked
    /// against the same list).
    pub(super) fn allows_origin(&self, origin: &str) -> bool {
        self.settings
            .public_url
            .iter()
            .map(|url| url.origin().ascii_serialization())
            .chain(self.settings.return_origins.iter().cloned())
            .any(|o| o.eq_ignore_ascii_case(origin))
    }
}

fn public_url_missing() -> Error {
    Error::precondition(
        Precondition::WrongState,
        "the hub's public URL is not configured (INTEGRATION_HUB_PUBLIC_URL)",
    )
}

/// Whether the browser that sent `cookies` is the one `row`'s sign-in was opened in.
pub(super) fn opened_in(row: &AuthorizationRow, cookies: &BrowserCookies) -> bool {
    // Hashes of a random value: comparing them in variable time reveals nothing usable.
    match (&row.browser_hash, cookies.get(&row.id)) {
        (Some(hash), Some(value)) => *hash == state_hash(value),
        _ => false,
    }
}

impl Authorizations {
    /// Opens a sign-in in a browser (`POST /oauth/start`): the pending authorization of
    /// `state` is bound, once, to a new random value whose hash it keeps; answers the cookie
    /// that carries the value and the provider's URL. `origin` is the page's the browser came
    /// from (its `Origin`, else its `Referer`'s), when it said: it must be an allowed one.
    #[tracing::instrument(skip_all)]
    pub async fn open_sign_in(&self, state: &str, origin: Option<&str>) -> Result<OpenedSignIn> {
        let oauth = self.oauth()?;
        if let Some(origin) = origin
            && !oauth.allows_origin(origin)
        {
            tracing::info!("a sign-in was opened from a page of an origin not allowed");
            return Err(Error::PermissionDenied(
                "open this sign-in from the application that started it".into(),
            ));
        }
        let row = self.authorization_by_state(&state_hash(state)).await?;
        let now = self.ctx().now();
        if row.state != AuthorizationStage::Pending || row.expire_time <= now {
            return Err(Error::precondition(
                Precondition::WrongState,
                "this sign-in was already completed or expired; start a new one",
            ));
        }
        if row.browser_hash.is_some() {
            return Err(Error::precondition(
                Precondition::WrongState,
                "this sign-in was already opened in a browser; start a new one",
            ));
        }
        let team = TeamId::parse(&row.team).map_err(|_| Error::internal("stored team id"))?;
        let (service, def) = self.oauth_service(&row.service, "service")?;
        let sealed = self.ctx().keys().open_credentials(
            &Aad {
                team: team.as_str(),
                owner: &authorization_owner(&row.id),
            },
            &row.verifier,
        )?;
        let verifier = sealed
            .get("code_verifier")
            .ok_or_else(|| Error::internal("sealed verifier without its value"))?;
        let scopes: Vec<String> = row
            .scopes
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let provider_uri = oauth.provider_url(&service.id, def, &scopes, state, verifier)?;
        let value = random_token()?;
        if !self
            .ctx()
            .store()
            .bind_authorization(&row.id, &state_hash(&value), now)
            .await?
        {
            return Err(Error::precondition(
                Precondition::WrongState,
                "this sign-in was already opened in a browser; start a new one",
            ));
        }
        let redirect = oauth.redirect_uri().ok_or_else(public_url_missing)?;
        let cookie_path = Url::parse(&redirect)
            .map(|u| u.path().to_owned())
            .unwrap_or_else(|_| "/oauth/callback".to_owned());
        tracing::info!(authorization = %row.id, "sign-in opened in a browser");
        Ok(OpenedSignIn {
            cookie_name: format!("{COOKIE_PREFIX}{}", row.id),
            cookie_value: value,
            cookie_path,
            max_age_secs: ((row.expire_time - now) / 1_000_000)
                .clamp(1, AUTHORIZATION_TTL_MICROS / 1_000_000),
            secure: oauth
                .settings
                .public_url
                .as_ref()
                .is_some_and(|u| u.scheme() == "https"),
            provider_uri: provider_uri.to_string(),
        })
    }
}
