//! OAuth 2.0 against a real provider: `oauth2-mock-server` (npm) started from
//! `tests/oauth/provider.mjs` on loopback, with a small control API for what it does not do
//! itself (rotation, short lifetimes, invalid_grant, 500s, a slow token endpoint). The
//! browser is a reqwest client that follows the authorization URL's redirect to our callback.

mod flow;
mod hostile;
mod refresh;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use integration_hub::config::ServeArgs;
use integration_hub::pb;
use serde_json::{Value, json};

use crate::fixtures::{CALL_TIMEOUT, Clients, TEAM};
use crate::helpers::{Backend, TestApp, TestDb, authed, free_port, spawn_with, test_args, token};
use crate::process::{KillOnDrop, start_helper};

/// The local OAuth provider, a Node process killed on drop.
pub struct Provider {
    _child: KillOnDrop,
    pub port: u16,
    http: reqwest::Client,
}

impl Provider {
    /// Starts `node tests/oauth/provider.mjs` on a free loopback port (beside its package,
    /// installed once: `needs::oauth_provider`) and waits for its port line. A test that
    /// starts one begins with `needs!(Node)`.
    pub fn start() -> Provider {
        let script = match crate::needs::oauth_provider() {
            Ok(script) => script,
            Err(why) => panic!("the OAuth provider needs Node.js ({why}): start with needs!(Node)"),
        };
        let (child, port, _) = start_helper(
            Command::new("node")
                .arg(script)
                .current_dir(env!("CARGO_MANIFEST_DIR")),
            "the OAuth provider",
        );
        Provider {
            _child: child,
            port,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Changes how the token endpoint behaves (see provider.mjs).
    pub async fn control(&self, change: Value) {
        self.http
            .post(format!("{}/_control", self.url()))
            .body(change.to_string())
            .send()
            .await
            .expect("control the provider")
            .error_for_status()
            .expect("control accepted");
    }

    /// Counts of token requests, and what was issued.
    pub async fn stats(&self) -> Value {
        self.http
            .get(format!("{}/_stats", self.url()))
            .send()
            .await
            .expect("provider stats")
            .text()
            .await
            .map(|text| serde_json::from_str(&text).expect("stats JSON"))
            .expect("stats body")
    }

    pub async fn count(&self, what: &str) -> u64 {
        self.stats().await[what].as_u64().unwrap_or(0)
    }

    /// The catalog with `slack` pointed at this provider (rotating refresh tokens, the
    /// account read from the token response's `/team/name`).
    pub fn catalog(&self) -> String {
        let mut catalog: Value =
            serde_json::from_str(include_str!("../../../src/domain/catalog.json"))
                .expect("catalog");
        for service in catalog["services"].as_array_mut().expect("services") {
            if service["id"] == "slack" {
                service["oauth"] = json!({
                    "authorization_url": format!("{}/authorize", self.url()),
                    "token_url": format!("{}/token", self.url()),
                    "scopes": ["chat:write", "channels:read"],
                    "scope_separator": ",",
                    "connected_to": {"pointer": "/team/name"},
                    "credential_pointers": {"team_id": "/team/id"},
                    "rotating_refresh_tokens": true
                });
            }
        }
        catalog.to_string()
    }
}

/// The client secret the tests register (it must never show anywhere).
pub const CLIENT_SECRET: &str = "hub-client-s3cret-do-not-leak";

/// Writes the catalog of `provider` and the clients file (with the client secret beside it)
/// into `dir`; returns the paths of the catalog and the clients file.
pub fn oauth_files(provider: &Provider, dir: &Path) -> (PathBuf, PathBuf) {
    let catalog = dir.join("catalog.json");
    std::fs::write(&catalog, provider.catalog()).expect("write catalog");
    let clients = dir.join("oauth-clients.json");
    std::fs::write(dir.join("slack-secret"), CLIENT_SECRET).expect("write secret");
    std::fs::write(
        &clients,
        json!({"slack": {"client_id": "hub-test-client", "client_secret_file": "slack-secret"}})
            .to_string(),
    )
    .expect("write clients");
    (catalog, clients)
}

/// Writes the OAuth files into `dir` and sets the OAuth settings, with the callback on a free
/// loopback port (the public URL must name it before the server binds it); returns the port.
pub fn oauth_args(args: &mut ServeArgs, provider: &Provider, dir: &Path) -> u16 {
    let (catalog, clients) = oauth_files(provider, dir);
    let port = free_port();
    args.catalog_file = Some(catalog);
    args.oauth.oauth_clients_file = Some(clients);
    args.oauth.http_listen = Some(format!("127.0.0.1:{port}").parse().expect("addr"));
    args.oauth.public_url = Some(format!("http://127.0.0.1:{port}"));
    args.oauth.oauth_allow_loopback_http = true;
    args.oauth.oauth_return_origins = vec!["https://app.example.test".to_owned()];
    args.oauth.oauth_refresh_interval_secs = 1;
    args.oauth.oauth_http_timeout_secs = 2;
    port
}

/// A server with OAuth on, its provider and its callback port.
pub struct OAuthApp {
    pub app: TestApp,
    pub provider: Provider,
    pub callback_port: u16,
}

pub async fn spawn_oauth(backend: Backend) -> OAuthApp {
    let provider = Provider::start();
    let db = TestDb::new(backend).await;
    let mut args = test_args(&db.url);
    let callback_port = oauth_args(&mut args, &provider, db.dir.path());
    let app = spawn_with(backend, db, args).await;
    OAuthApp {
        app,
        provider,
        callback_port,
    }
}

/// Runs an OAuth test on SQLite and on PostgreSQL (`storage_test!`), its body taking an
/// `OAuthApp`.
macro_rules! oauth_test {
    ($name:ident) => {
        $crate::storage_test!(@with $name, [Node], $crate::oauth::spawn_oauth);
    };
}
pub(crate) use oauth_test;

pub fn dana() -> String {
    token(TEAM, "developer", "dana")
}

/// The app `name` as dana sees it now.
pub async fn app_now(app: &impl Clients, name: &str) -> pb::InstalledApp {
    crate::fixtures::get_app(app, &dana(), name)
        .await
        .expect("the app")
}

pub fn service_token() -> String {
    token(TEAM, "service", "deliverer")
}

/// Starts an authorization of a new Slack app as `who`.
pub async fn start(
    app: &impl Clients,
    who: &str,
    request: pb::StartInstalledAppAuthorizationRequest,
) -> pb::StartInstalledAppAuthorizationResponse {
    app.apps()
        .start_installed_app_authorization(authed(who, request))
        .await
        .unwrap_or_else(|status| panic!("start authorization: {status:?}"))
        .into_inner()
}

pub fn new_slack(display_name: &str) -> pb::StartInstalledAppAuthorizationRequest {
    pb::StartInstalledAppAuthorizationRequest {
        service: "slack".into(),
        display_name: display_name.into(),
        ..Default::default()
    }
}

/// The browser: a client that follows no redirect by itself.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(CALL_TIMEOUT)
        .build()
        .expect("browser")
}

/// Opens the provider's authorization URL: the provider signs the person in at once and
/// redirects; answers where to (our callback, with `code` and `state`). Nothing binds this
/// browser to the sign-in: the hub's callback refuses it (the RPC completion does not need it).
pub async fn sign_in(authorization_uri: &str) -> reqwest::Url {
    let answer = browser()
        .get(authorization_uri)
        .send()
        .await
        .expect("open the authorization URL");
    assert_eq!(answer.status(), 302, "the provider redirects");
    let location = answer.headers()["location"].to_str().expect("location");
    reqwest::Url::parse(location).expect("an absolute redirect")
}

/// Opens the hub's sign-in URL as the application's form would (a POST, here without an
/// `Origin`), then the provider's page it redirects to: answers the callback URL the
/// provider sends the browser to and the cookie (`name=value`) that binds this browser.
pub async fn open_sign_in(sign_in_uri: &str) -> (reqwest::Url, String) {
    let answer = browser()
        .post(sign_in_uri)
        .send()
        .await
        .expect("open the sign-in URL");
    let status = answer.status();
    let cookie = answer
        .headers()
        .get("set-cookie")
        .map(|c| c.to_str().expect("cookie").to_owned());
    let location = answer
        .headers()
        .get("location")
        .map(|l| l.to_str().expect("location").to_owned());
    let page = answer.text().await.unwrap_or_default();
    assert_eq!(status, 303, "the hub's sign-in URL redirects: {page}");
    let cookie = cookie.expect("a cookie binds the browser");
    for attribute in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/oauth/callback",
        "Max-Age=",
    ] {
        assert!(cookie.contains(attribute), "{attribute}: {cookie}");
    }
    let pair = cookie.split(';').next().expect("name=value").to_owned();
    (sign_in(&location.expect("to the provider")).await, pair)
}

/// Follows the provider's redirect to our callback with no cookie: its status, `Location` and
/// page.
pub async fn visit(url: &reqwest::Url) -> (u16, Option<String>, String) {
    visit_with(url, None).await
}

/// Follows the provider's redirect to our callback, sending `cookie` (`name=value`).
pub async fn visit_with(url: &reqwest::Url, cookie: Option<&str>) -> (u16, Option<String>, String) {
    let mut request = browser().get(url.clone());
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let answer = request.send().await.expect("the callback answers");
    let status = answer.status().as_u16();
    let location = answer
        .headers()
        .get("location")
        .map(|l| l.to_str().expect("location").to_owned());
    let page = answer.text().await.expect("page");
    (status, location, page)
}

/// Opens the hub's sign-in URL, signs in and lands on the callback in the same browser;
/// answers what the callback answered.
pub async fn authorize_through_callback(sign_in_uri: &str) -> (u16, Option<String>, String) {
    let (callback, cookie) = open_sign_in(sign_in_uri).await;
    visit_with(&callback, Some(&cookie)).await
}

pub fn query(url: &reqwest::Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

pub async fn get_authorization(
    app: &impl Clients,
    who: &str,
    name: &str,
) -> pb::InstalledAppAuthorization {
    app.apps()
        .get_installed_app_authorization(authed(
            who,
            pb::GetInstalledAppAuthorizationRequest { name: name.into() },
        ))
        .await
        .unwrap_or_else(|status| panic!("get authorization: {status:?}"))
        .into_inner()
}

/// The authorization `started` began, which must have ended FAILED.
pub async fn failed_authorization(
    app: &impl Clients,
    who: &str,
    started: &pb::StartInstalledAppAuthorizationResponse,
) -> pb::InstalledAppAuthorization {
    let name = &started.authorization.as_ref().expect("authorization").name;
    let failed = get_authorization(app, who, name).await;
    assert_eq!(
        failed.state(),
        pb::installed_app_authorization::State::Failed,
        "{failed:?}"
    );
    failed
}

/// Adds a Slack app through the whole flow (callback) as dana; answers the app.
pub async fn oauth_app(app: &impl Clients, display_name: &str) -> pb::InstalledApp {
    let started = start(app, &dana(), new_slack(display_name)).await;
    let (status, _, page) = authorize_through_callback(&started.sign_in_uri).await;
    assert_eq!(status, 200, "{page}");
    let authorization = get_authorization(
        app,
        &dana(),
        &started.authorization.expect("authorization").name,
    )
    .await;
    assert_eq!(
        authorization.state(),
        pb::installed_app_authorization::State::Succeeded,
        "{authorization:?}"
    );
    crate::fixtures::get_app(app, &dana(), &authorization.installed_app)
        .await
        .expect("the new app")
}

/// Polls `check` every 100 ms until it holds, at most `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
