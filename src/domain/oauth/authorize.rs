//! The authorization code flow with PKCE: Start stores a pending authorization (only a hash
//! of its state; the code verifier sealed like credentials) and answers the provider's URL;
//! Complete (the RPC, or the hub's own callback) claims it once, exchanges the code and
//! creates the app or replaces its credentials, in one audited write. Whatever fails after
//! the claim leaves the authorization FAILED with the reason and no app half-made.

use super::Authorizations;
use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;

use crate::crypto::Credentials;
use crate::store::{AppRow, AuthorizationRow, AuthorizationStage};

use super::browser::{Completer, opened_in};
use super::catalog::OAuthDef;
use super::provider_text::{Sent, error_code, log_description};
use super::{AUTHORIZATION_TTL_MICROS, MAX_RETURN_URL, OAuth};
use crate::domain::catalog::ServiceDef;
use crate::domain::context::{Audited, Done, Write, not_found_app};
use crate::domain::error::{Error, Precondition, Result};
use crate::domain::model::{Actor, AuditAction, Role};
use crate::domain::types::{AppName, AuthorizationName, ConnectedTo, DisplayName, TeamId, new_id};

/// Most scopes a caller may ask for.
pub const MAX_SCOPES: usize = 50;
/// Most authorizations one person may have pending at once.
pub const MAX_PENDING_PER_PERSON: u64 = 20;

/// A parsed StartInstalledAppAuthorization.
pub struct StartAuthorization {
    /// The service; may be empty when reauthorizing (the app's service then).
    pub service: String,
    pub display_name: Option<DisplayName>,
    pub scopes: Vec<String>,
    pub installed_app: Option<AppName>,
    pub return_url: Option<String>,
}

/// Where to send the person's browser to sign in. Both carry the state: never printed.
pub struct SignInUris {
    /// The provider's authorization URL (for a frontend that completes through the RPC).
    pub provider: String,
    /// The hub's `POST /oauth/start` URL, which binds the sign-in to the browser first.
    pub sign_in: String,
}

impl std::fmt::Debug for SignInUris {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignInUris([REDACTED])")
    }
}

/// How the provider's redirect came back.
pub enum Completion {
    Code(String),
    /// The provider refused (`error`, with its description when it gave one).
    Error(String, Option<String>),
}

/// Where an authorization stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthorizationState {
    Pending,
    Succeeded,
    Failed,
    Expired,
}

/// An authorization as callers see it: never its state, verifier or any token.
#[derive(Clone, Debug)]
pub struct Authorization {
    pub name: AuthorizationName,
    pub service: String,
    pub display_name: String,
    pub scopes: Vec<String>,
    pub installed_app: Option<AppName>,
    pub state: AuthorizationState,
    pub error: Option<String>,
    pub creator: String,
    pub create_time: i64,
    pub expire_time: i64,
    pub complete_time: Option<i64>,
    /// Where the callback sends the browser (already checked at start).
    pub return_url: Option<String>,
}

impl Authorization {
    fn from_row(row: &AuthorizationRow, now: i64) -> Result<Authorization> {
        let team = TeamId::parse(&row.team).map_err(|_| Error::internal("stored team id"))?;
        let state = match row.state {
            AuthorizationStage::Succeeded => AuthorizationState::Succeeded,
            AuthorizationStage::Failed => AuthorizationState::Failed,
            _ if row.expire_time <= now => AuthorizationState::Expired,
            AuthorizationStage::Pending | AuthorizationStage::Exchanging => {
                AuthorizationState::Pending
            }
        };
        Ok(Authorization {
            name: AuthorizationName::new(team.clone(), row.id.clone()),
            service: row.service.clone(),
            display_name: row.display_name.clone(),
            scopes: row
                .scopes
                .split(' ')
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            installed_app: row
                .installed_app_id
                .clone()
                .map(|id| AppName::new(team, id)),
            state,
            error: row.error.clone(),
            creator: row.creator.clone(),
            create_time: row.create_time,
            expire_time: row.expire_time,
            complete_time: row.complete_time,
            return_url: row.return_url.clone(),
        })
    }
}

pub(super) fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::internal("the system random source failed"))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// SHA-256 (hex) of a state: what is stored and looked up.
pub(super) fn state_hash(state: &str) -> String {
    crate::text::hex(ring::digest::digest(&ring::digest::SHA256, state.as_bytes()).as_ref())
}

/// What an unknown (or another person's) sign-in state answers.
fn unknown_state() -> Error {
    Error::NotFound {
        kind: AuthorizationName::KIND,
        name: "with this state".to_owned(),
    }
}

impl Authorizations {
    /// The authorization whose state hashes to `hash`, or NOT_FOUND.
    pub(super) async fn authorization_by_state(&self, hash: &str) -> Result<AuthorizationRow> {
        self.ctx()
            .store()
            .authorization_by_state(hash)
            .await?
            .ok_or_else(unknown_state)
    }
}

/// The PKCE S256 challenge of a verifier.
pub fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// The owner a pending authorization's verifier is sealed to.
pub(crate) fn authorization_owner(id: &str) -> String {
    format!("oauthAuthorizations/{id}")
}

/// The origin (`scheme://host[:port]`) of a URL, as browsers compare them.
fn origin(url: &reqwest::Url) -> String {
    url.origin().ascii_serialization()
}

impl OAuth {
    /// Checks a return URL: absolute, https (http only to loopback when loopback http is
    /// allowed), no credentials in it, and of an allowed origin, so the callback can never
    /// be made to redirect anywhere else.
    fn check_return_url(&self, url: &str) -> Result<()> {
        let invalid = |why: &str| Error::invalid("return_url", why);
        if url.len() > MAX_RETURN_URL {
            return Err(invalid("must be at most 2000 characters"));
        }
        let parsed = reqwest::Url::parse(url).map_err(|_| invalid("must be an absolute URL"))?;
        let loopback = matches!(parsed.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
            || matches!(parsed.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
            || parsed.host_str() == Some("localhost");
        match parsed.scheme() {
            "https" => {}
            "http" if loopback && self.settings.allow_loopback_http => {}
            _ => return Err(invalid("must be an https URL")),
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid("must not carry a user name or password"));
        }
        if !self.allows_origin(&origin(&parsed)) {
            return Err(invalid(
                "its origin is not allowed (INTEGRATION_HUB_OAUTH_RETURN_ORIGINS)",
            ));
        }
        Ok(())
    }
}

/// The account name from the provider, cleaned to what `connected_to` holds: scrubbed of
/// the secrets of the exchange, without unsafe characters, at most 200 characters.
pub(super) fn connected_to_text(text: Option<String>, sent: &Sent) -> ConnectedTo {
    let scrubbed = sent.scrub(&text.unwrap_or_default());
    let text: String = crate::text::neutralised(&scrubbed)
        .trim()
        .chars()
        .take(200)
        .collect();
    ConnectedTo::parse(&text).unwrap_or_else(|_| ConnectedTo::parse("").expect("empty text"))
}

impl Authorizations {
    pub(in crate::domain) fn oauth(&self) -> Result<&OAuth> {
        self.oauth.as_deref().ok_or_else(|| {
            Error::precondition(
                Precondition::WrongState,
                "OAuth is not configured on this deployment (INTEGRATION_HUB_OAUTH_CLIENTS_FILE)",
            )
        })
    }

    /// The service's OAuth definition and registered client, or why there is none.
    pub(super) fn oauth_service(&self, id: &str, field: &str) -> Result<(&ServiceDef, &OAuthDef)> {
        let oauth = self.oauth()?;
        let service = self.ctx().service(id, field)?;
        let def = service
            .oauth
            .as_ref()
            .ok_or_else(|| Error::invalid(field, "this service does not offer OAuth 2.0"))?;
        if oauth.settings.clients.get(&service.id).is_none() {
            return Err(Error::invalid(
                field,
                "no OAuth client is configured for this service",
            ));
        }
        Ok((service, def))
    }

    /// Starts an authorization: answers it, the provider's URL and the hub's sign-in URL
    /// (which binds the sign-in to the browser that opens it, see [`super::browser`]).
    #[tracing::instrument(skip_all, fields(team = %team))]
    pub async fn start_authorization(
        &self,
        actor: &Actor,
        team: TeamId,
        input: StartAuthorization,
    ) -> Result<(Authorization, SignInUris)> {
        let oauth = self.oauth()?;
        if oauth.redirect_uri().is_none() {
            return Err(Error::precondition(
                Precondition::WrongState,
                "the hub's public URL is not configured (INTEGRATION_HUB_PUBLIC_URL)",
            ));
        }
        let resource = match &input.installed_app {
            Some(app) => app.to_string(),
            None => team.resource_name(),
        };
        let audited = Audited::new(AuditAction::InstalledAppStartAuthorization, &team, resource);
        let now = self.ctx().now();
        let (row, uris) = self.ctx()
            .write(actor, audited, async |w| {
                let (service_id, display_name) = match &input.installed_app {
                    Some(name) => {
                        let app = self.reauthorizable(w, actor, &team, name).await?;
                        if !input.service.is_empty() && input.service != app.service {
                            return Err(Error::invalid(
                                "service",
                                "must be the installed app's service (or empty)",
                            ));
                        }
                        (app.service, app.display_name)
                    }
                    None => {
                        let display_name = input.display_name.clone().ok_or_else(|| {
                            Error::invalid("display_name", "is required for a new app")
                        })?;
                        (input.service.clone(), display_name.into_inner())
                    }
                };
                let (service, def) = self.oauth_service(&service_id, "service")?;
                if input.installed_app.is_none() {
                    crate::domain::policy::check_installable(w, actor, &team, &service_id, now).await?;
                }
                if let Some(url) = &input.return_url {
                    oauth.check_return_url(url)?;
                }
                let scopes = if input.scopes.is_empty() {
                    def.scopes.clone()
                } else {
                    input.scopes.clone()
                };
                let pending = w
                    .tx()
                    .await?
                    .pending_authorizations(team.as_str(), &actor.subject, now)
                    .await?;
                if pending >= MAX_PENDING_PER_PERSON {
                    return Err(Error::ResourceExhausted(format!(
                        "at most {MAX_PENDING_PER_PERSON} authorizations may be pending at once; complete one or wait for it to expire (10 minutes)"
                    )));
                }
                let id = new_id();
                let state = random_token()?;
                let verifier = random_token()?;
                let sealed_verifier = Credentials::new(BTreeMap::from([(
                    "code_verifier".to_owned(),
                    verifier.clone(),
                )]));
                let (verifier_sealed, key_version) =
                    self.ctx().seal(&team, &authorization_owner(&id), &sealed_verifier)?;
                let row = AuthorizationRow {
                    id: id.clone(),
                    state_hash: state_hash(&state),
                    team: team.as_str().to_owned(),
                    creator: actor.subject.clone(),
                    creator_role: actor.role.as_str().to_owned(),
                    service: service.id.clone(),
                    display_name,
                    scopes: scopes.join(" "),
                    installed_app_id: input.installed_app.as_ref().map(|a| a.id.clone()),
                    return_url: input.return_url.clone(),
                    verifier: verifier_sealed,
                    key_version,
                    state: AuthorizationStage::Pending,
                    error: None,
                    create_time: now,
                    expire_time: now + AUTHORIZATION_TTL_MICROS,
                    complete_time: None,
                    browser_hash: None,
                };
                let uris = SignInUris {
                    provider: oauth
                        .provider_url(&service.id, def, &scopes, &state, &verifier)?
                        .to_string(),
                    sign_in: oauth.sign_in_url(&state)?,
                };
                w.tx().await?.insert_authorization(row.clone()).await?;
                if input.installed_app.is_none() {
                    w.set_resource(AuthorizationName::new(team.clone(), id).to_string());
                }
                Ok(Done::Commit((row, uris)))
            })
            .await?;
        tracing::info!(authorization = %row.id, service = %row.service, "authorization started");
        Ok((Authorization::from_row(&row, now)?, uris))
    }

    /// The app a reauthorization replaces the credentials of: the caller's team's, and the
    /// caller is an admin or its owner (UpdateInstalledApp's rule, [`may_reauthorize`]).
    /// Checked at start, and again at completion (before the code is exchanged, and under
    /// the app's lock when the credentials are written).
    async fn reauthorizable(
        &self,
        w: &mut Write<'_>,
        actor: &Actor,
        team: &TeamId,
        name: &AppName,
    ) -> Result<AppRow> {
        if name.team != *team {
            return Err(not_found_app(name));
        }
        let app = w.lock_app(name).await?;
        may_reauthorize(actor, &app)?;
        Ok(app)
    }

    pub async fn get_authorization(
        &self,
        actor: &Actor,
        name: &AuthorizationName,
    ) -> Result<Authorization> {
        let not_found = || Error::NotFound {
            kind: AuthorizationName::KIND,
            name: name.to_string(),
        };
        if !actor.sees(&name.team) {
            return Err(not_found());
        }
        let row = self
            .ctx()
            .store()
            .get_authorization(name.team.as_str(), &name.id)
            .await?
            .ok_or_else(not_found)?;
        if actor.role != Role::Admin && row.creator != actor.subject {
            return Err(not_found());
        }
        Authorization::from_row(&row, self.ctx().now())
    }

    /// Completes an authorization from the provider's redirect. Through the RPC, the caller
    /// must be the person who started it; through the callback, the browser must be the one
    /// the sign-in was opened in (its cookie, see [`super::browser`]): a browser it was not
    /// opened in is refused (PERMISSION_DENIED) and consumes nothing. Unknown, foreign, used
    /// and expired states are refused; anything that fails after the claim answers the
    /// authorization FAILED.
    #[tracing::instrument(skip_all)]
    pub async fn complete_authorization(
        &self,
        completer: Completer<'_>,
        state: &str,
        completion: Completion,
    ) -> Result<Authorization> {
        let oauth = self.oauth()?;
        let hash = state_hash(state);
        let row = self.authorization_by_state(&hash).await?;
        let team = TeamId::parse(&row.team).map_err(|_| Error::internal("stored team id"))?;
        if let Completer::Caller(caller) = completer
            && (!caller.sees(&team) || caller.subject != row.creator)
        {
            return Err(unknown_state());
        }
        let now = self.ctx().now();
        if row.state != AuthorizationStage::Pending {
            return Err(Error::precondition(
                Precondition::WrongState,
                "this authorization was already completed; start a new one",
            ));
        }
        if row.expire_time <= now {
            self.ctx()
                .store()
                .fail_authorization(&row.id, "expired before it was completed", now)
                .await?;
            return Err(Error::precondition(
                Precondition::WrongState,
                "this authorization expired; start a new one",
            ));
        }
        if let Completer::Browser(cookies) = completer
            && !opened_in(&row, cookies)
        {
            tracing::info!(authorization = %row.id, "a sign-in reached the callback in a browser it was not opened in");
            return Err(Error::PermissionDenied(
                "this sign-in was not opened in this browser: start it again from the application, in this browser".into(),
            ));
        }
        let Some(row) = self.ctx().store().claim_authorization(&hash, now).await? else {
            return Err(Error::precondition(
                Precondition::WrongState,
                "this authorization was already completed; start a new one",
            ));
        };
        let actor = match completer {
            Completer::Caller(caller) => caller.clone(),
            Completer::Browser(_) => Actor {
                subject: row.creator.clone(),
                team: Some(team.clone()),
                role: stored_role(&row.creator_role),
                request_id: new_id(),
                reach: None,
                groups: Vec::new(),
            },
        };
        let outcome = match completion {
            Completion::Error(code, description) => {
                // The redirect's own words: its code, checked; its description to the debug
                // log only, without the state it came back with.
                let sent = Sent::default().with(state);
                log_description(
                    "the redirect's error_description",
                    description.as_deref().unwrap_or_default(),
                    &sent,
                );
                Err(Error::precondition(
                    Precondition::WrongState,
                    format!("the provider answered {}", error_code(&code, &sent)),
                ))
            }
            Completion::Code(code) => self.finish(oauth, &actor, &team, &row, &code).await,
        };
        let authorization_name = AuthorizationName::new(team.clone(), row.id.clone());
        if let Err(err) = outcome {
            let why = match &err {
                Error::Internal(_) => "internal error".to_owned(),
                other => crate::domain::error::truncated(&other.to_string(), 600),
            };
            tracing::info!(authorization = %row.id, reason = %why, "authorization failed");
            self.ctx()
                .store()
                .fail_authorization(&row.id, &why, now)
                .await?;
            let audited = self
                .ctx()
                .audit_failure::<()>(
                    &actor,
                    &team,
                    AuditAction::InstalledAppCompleteAuthorization,
                    authorization_name.to_string(),
                    Err(err),
                )
                .await;
            drop(audited);
        }
        let row = self
            .ctx()
            .store()
            .get_authorization(team.as_str(), &row.id)
            .await?
            .ok_or_else(|| Error::internal("claimed authorization vanished"))?;
        Authorization::from_row(&row, self.ctx().now())
    }
}

/// Whether `actor` may replace `app`'s credentials: an admin, or its owner.
pub(super) fn may_reauthorize(actor: &Actor, app: &AppRow) -> Result<()> {
    if actor.role != Role::Admin && app.owner != actor.subject {
        return Err(Error::PermissionDenied(
            "only an admin or the owner of the installed app may reauthorize it".into(),
        ));
    }
    Ok(())
}

fn stored_role(text: &str) -> Role {
    match text {
        "admin" => Role::Admin,
        "service" => Role::Service,
        "viewer" => Role::Viewer,
        _ => Role::Developer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::time::Duration;

    use crate::crypto::KeyRing;
    use crate::domain::catalog::Catalog;
    use crate::domain::hub::{Clock, Hub};
    use crate::domain::oauth::browser::BrowserCookies;
    use crate::domain::oauth::clients::Clients;
    use crate::domain::oauth::{OAuth, OAuthSettings};
    use crate::domain::test_support::{NOW, actor, team};
    use crate::store::Store;

    struct MovableClock(AtomicI64);

    impl Clock for MovableClock {
        fn now_micros(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    async fn oauth_hub(dir: &std::path::Path) -> (Hub, Arc<MovableClock>) {
        let url = format!("sqlite://{}?mode=rwc", dir.join("hub.db").display());
        let store = Store::connect(&url, 4).await.unwrap();
        store.migrate().await.unwrap();
        let clock = Arc::new(MovableClock(AtomicI64::new(NOW)));
        let clients = Clients::from_json(
            r#"{"slack": {"client_id": "id", "client_secret": "s3cret"}}"#,
            dir,
        )
        .unwrap();
        let settings = OAuthSettings {
            public_url: Some(reqwest::Url::parse("https://hub.example.test").unwrap()),
            clients,
            allow_loopback_http: false,
            return_origins: vec![],
            refresh_concurrency: 1,
            refresh_interval: Duration::from_secs(60),
        };
        let calls =
            crate::startup::provider_calls(crate::outbound::Policy::new(Duration::from_secs(1)))
                .unwrap();
        let oauth = OAuth::new(settings, calls);
        let hub = Hub::new(
            store,
            Arc::new(KeyRing::generate(1).unwrap().0),
            Arc::new(Catalog::builtin()),
            clock.clone(),
        )
        .with_oauth(oauth);
        (hub, clock)
    }

    fn slack(display_name: &str) -> StartAuthorization {
        StartAuthorization {
            service: "slack".into(),
            display_name: Some(DisplayName::parse(display_name).unwrap()),
            scopes: vec![],
            installed_app: None,
            return_url: None,
        }
    }

    fn state_of(url: &str) -> String {
        let url = reqwest::Url::parse(url).unwrap();
        url.query_pairs()
            .find(|(k, _)| k == "state")
            .map(|(_, v)| v.into_owned())
            .unwrap()
    }

    /// Starts a Slack authorization as `who`: it, its URLs and its state.
    async fn start_slack(hub: &Hub, who: &Actor) -> (Authorization, SignInUris, String) {
        let (started, uris) = hub
            .authorizations()
            .start_authorization(who, team(), slack("Slack"))
            .await
            .unwrap();
        let state = state_of(&uris.provider);
        (started, uris, state)
    }

    #[tokio::test]
    async fn an_authorization_expires_after_ten_minutes_and_then_completes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, clock) = oauth_hub(dir.path()).await;
        let dana = actor(Role::Developer, "dana");
        let (started, uris) = hub
            .authorizations()
            .start_authorization(&dana, team(), slack("Slack"))
            .await
            .unwrap();
        let url = uris.provider;
        assert_eq!(started.state, AuthorizationState::Pending);
        assert_eq!(
            started.expire_time - started.create_time,
            AUTHORIZATION_TTL_MICROS
        );
        assert!(url.starts_with("https://slack.com/oauth/v2/authorize?"));
        assert!(url.contains("redirect_uri=https%3A%2F%2Fhub.example.test%2Foauth%2Fcallback"));
        let state = state_of(&url);
        assert_eq!(
            uris.sign_in,
            format!("https://hub.example.test/oauth/start?state={state}")
        );

        clock
            .0
            .store(NOW + AUTHORIZATION_TTL_MICROS + 1, Ordering::SeqCst);
        let shown = hub
            .authorizations()
            .get_authorization(&dana, &started.name)
            .await
            .unwrap();
        assert_eq!(shown.state, AuthorizationState::Expired);
        let refused = hub
            .authorizations()
            .complete_authorization(
                Completer::Caller(&dana),
                &state,
                Completion::Code("c".into()),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(refused, Error::FailedPrecondition { .. }),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("expired"));
        let failed = hub
            .authorizations()
            .get_authorization(&dana, &started.name)
            .await
            .unwrap();
        assert_eq!(failed.state, AuthorizationState::Failed);
        assert!(failed.error.unwrap().contains("expired"));
        // The stored row never holds the state, and the verifier is gone once it ended.
        let row = hub
            .context()
            .store()
            .get_authorization("acme", &started.name.id)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(row.state_hash, state);
        assert!(row.verifier.is_empty());
    }

    #[tokio::test]
    async fn a_foreign_caller_neither_sees_nor_consumes_an_authorization() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, _) = oauth_hub(dir.path()).await;
        let dana = actor(Role::Developer, "dana");
        let (started, _, state) = start_slack(&hub, &dana).await;
        let erik = actor(Role::Developer, "erik");
        for caller in [&erik, &actor(Role::Admin, "ada")] {
            let refused = hub
                .authorizations()
                .complete_authorization(
                    Completer::Caller(caller),
                    &state,
                    Completion::Code("c".into()),
                )
                .await
                .unwrap_err();
            assert!(matches!(refused, Error::NotFound { .. }), "{refused:?}");
        }
        assert!(matches!(
            hub.authorizations()
                .get_authorization(&erik, &started.name)
                .await,
            Err(Error::NotFound { .. })
        ));
        // An admin of the team may look; it is still pending (nothing consumed it).
        let shown = hub
            .authorizations()
            .get_authorization(&actor(Role::Admin, "ada"), &started.name)
            .await
            .unwrap();
        assert_eq!(shown.state, AuthorizationState::Pending);
        // The provider's refusal ends it, and it cannot be completed again.
        let refused = hub
            .authorizations()
            .complete_authorization(
                Completer::Caller(&dana),
                &state,
                Completion::Error("access_denied".into(), None),
            )
            .await
            .unwrap();
        assert_eq!(refused.state, AuthorizationState::Failed);
        assert!(refused.error.unwrap().contains("access_denied"));
        assert!(matches!(
            hub.authorizations()
                .complete_authorization(
                    Completer::Caller(&dana),
                    &state,
                    Completion::Code("c".into())
                )
                .await,
            Err(Error::FailedPrecondition { .. })
        ));
    }

    #[tokio::test]
    async fn only_the_browser_a_sign_in_was_opened_in_completes_it_at_the_callback() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, _) = oauth_hub(dir.path()).await;
        let dana = actor(Role::Developer, "dana");
        let (started, uris, state) = start_slack(&hub, &dana).await;
        // From another site's page: refused, and nothing is bound.
        let refused = hub
            .authorizations()
            .open_sign_in(&state, Some("https://evil.example.test"))
            .await
            .err()
            .unwrap();
        assert!(matches!(refused, Error::PermissionDenied(_)), "{refused:?}");
        let opened = hub
            .authorizations()
            .open_sign_in(&state, Some("https://hub.example.test"))
            .await
            .unwrap();
        assert_eq!(opened.cookie_name, format!("ih_oauth_{}", started.name.id));
        assert_eq!(opened.cookie_path, "/oauth/callback");
        assert!(opened.secure && (1..=600).contains(&opened.max_age_secs));
        assert_eq!(opened.provider_uri, uris.provider, "the same provider URL");
        // Once: a second browser cannot take it over.
        assert!(matches!(
            hub.authorizations().open_sign_in(&state, None).await,
            Err(Error::FailedPrecondition { .. })
        ));
        let id = started.name.id.clone();
        for cookies in [
            BrowserCookies::new(),
            BrowserCookies::from([(id.clone(), "another value".to_owned())]),
            BrowserCookies::from([("other-id".to_owned(), opened.cookie_value.clone())]),
        ] {
            let refused = hub
                .authorizations()
                .complete_authorization(
                    Completer::Browser(&cookies),
                    &state,
                    Completion::Error("access_denied".into(), None),
                )
                .await
                .unwrap_err();
            assert!(matches!(refused, Error::PermissionDenied(_)), "{refused:?}");
        }
        let shown = hub
            .authorizations()
            .get_authorization(&dana, &started.name)
            .await
            .unwrap();
        assert_eq!(shown.state, AuthorizationState::Pending, "nothing consumed");
        let cookies = BrowserCookies::from([(id, opened.cookie_value)]);
        let done = hub
            .authorizations()
            .complete_authorization(
                Completer::Browser(&cookies),
                &state,
                Completion::Error("access_denied".into(), None),
            )
            .await
            .unwrap();
        assert_eq!(done.state, AuthorizationState::Failed);
        assert_eq!(
            done.error.as_deref(),
            Some("the provider answered access_denied")
        );
    }

    #[tokio::test]
    async fn one_person_has_at_most_twenty_authorizations_pending() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, clock) = oauth_hub(dir.path()).await;
        let dana = actor(Role::Developer, "dana");
        for _ in 0..MAX_PENDING_PER_PERSON {
            hub.authorizations()
                .start_authorization(&dana, team(), slack("Slack"))
                .await
                .unwrap();
        }
        let refused = hub
            .authorizations()
            .start_authorization(&dana, team(), slack("Slack"))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, Error::ResourceExhausted(_)),
            "{refused:?}"
        );
        // Someone else is not held back, and once they expired dana may start again.
        hub.authorizations()
            .start_authorization(&actor(Role::Developer, "erik"), team(), slack("Slack"))
            .await
            .unwrap();
        clock
            .0
            .store(NOW + AUTHORIZATION_TTL_MICROS, Ordering::SeqCst);
        hub.authorizations()
            .start_authorization(&dana, team(), slack("Slack"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn return_urls_must_be_https_on_an_allowed_origin() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, _) = oauth_hub(dir.path()).await;
        let oauth = hub.authorizations().oauth().unwrap();
        assert!(
            oauth
                .check_return_url("https://hub.example.test/done?x=1")
                .is_ok()
        );
        for url in [
            "https://evil.example.test/",
            "http://hub.example.test/",
            "https://user@hub.example.test/",
            "//hub.example.test/",
            "javascript:alert(1)",
            "https://hub.example.test.evil.test/",
        ] {
            assert!(oauth.check_return_url(url).is_err(), "{url}");
        }
    }

    #[test]
    fn the_challenge_is_rfc_7636_s256() {
        // RFC 7636, appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn states_are_random_43_characters_and_only_their_hash_is_kept() {
        let a = random_token().unwrap();
        let b = random_token().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        let hash = state_hash(&a);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&a));
        assert_eq!(hash, state_hash(&a));
    }
}
