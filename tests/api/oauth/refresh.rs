//! Refresh ahead of expiry, on demand, across replicas, and what failures do.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use integration_hub::crypto::KeyRing;
use integration_hub::pb;
use serde_json::json;
use tonic::Code;

use super::{
    CLIENT_SECRET, OAuthApp, Provider, app_now, authorize_through_callback, dana, eventually,
    new_slack, oauth_app, oauth_test, service_token, start,
};
use crate::fixtures::report_rejected;
use crate::fixtures::{Clients, WAIT, create_integration, next_events, resolve, watch_live};
use crate::helpers::{Backend, TestDb, authed, free_port};
use crate::process::Server;
use crate::storage_test;

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

fn millis(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000
}

async fn tokens_are_refreshed_ahead_of_expiry_and_resolve_never_answers_an_expired_one(
    t: OAuthApp,
) {
    let app = &t.app;
    t.provider
        .control(json!({"expires_in": 4, "rotate": true}))
        .await;
    let installed = oauth_app(app, "Short-lived").await;
    let job = create_integration(app, &dana(), &installed, "Job").await;
    let mut seen = std::collections::BTreeSet::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(9);
    while tokio::time::Instant::now() < until {
        let resolved = resolve(app, &service_token(), &job.name)
            .await
            .expect("resolves while refreshed");
        let expire = resolved.expire_time.expect("an expiry");
        assert!(
            millis(&expire) > now_millis(),
            "an expired token was resolved"
        );
        seen.insert(resolved.credentials["access_token"].clone());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let refreshes = t.provider.count("refresh_token").await;
    assert!(refreshes >= 2, "refreshed ahead of expiry: {refreshes}");
    assert!(
        seen.len() >= 3,
        "new tokens were handed out: {}",
        seen.len()
    );
    assert_eq!(
        t.provider.count("refresh_rejected").await,
        0,
        "a rotated refresh token was never used twice"
    );
    let after = app_now(app, &installed.name).await;
    assert_eq!(after.state(), pb::installed_app::State::Active);
    assert!(after.last_refresh_time.is_some());
    assert!(after.last_refresh_error.is_empty());
    assert!(millis(after.credentials_expire_time.as_ref().expect("expiry")) > now_millis());

    // A reported rejection of a working grant is answered by a refresh: nothing breaks
    // (unless the token rejected is brand new: a tenth of its lifetime).
    eventually(WAIT, "a token half a second old", || async {
        let shown = app_now(app, &installed.name).await;
        let age = now_millis() - millis(shown.last_refresh_time.as_ref().expect("refreshed"));
        (500..1500).contains(&age)
    })
    .await;
    let before = t.provider.count("refresh_token").await;
    let reported = report_rejected(app, &service_token(), &installed.name, "401")
        .await
        .expect("report");
    assert_eq!(reported.state(), pb::installed_app::State::Active);
    assert!(t.provider.count("refresh_token").await > before);
    let job = crate::fixtures::get_integration(app, &dana(), &job.name)
        .await
        .expect("job");
    assert_eq!(job.state(), pb::integration::State::Active);
}
oauth_test!(tokens_are_refreshed_ahead_of_expiry_and_resolve_never_answers_an_expired_one);

async fn transient_failures_break_nothing_and_a_later_success_restores(t: OAuthApp) {
    let app = &t.app;
    t.provider.control(json!({"expires_in": 3})).await;
    let installed = oauth_app(app, "Flaky").await;
    let job = create_integration(app, &dana(), &installed, "Job").await;
    let (mut events, _) = watch_live(app, &dana()).await;
    t.provider.control(json!({"fail": "500"})).await;
    eventually(WAIT, "a failed refresh is shown", || async {
        app_now(app, &installed.name)
            .await
            .last_refresh_error
            .contains("temporary failure")
    })
    .await;
    let failing = app_now(app, &installed.name).await;
    assert_eq!(failing.state(), pb::installed_app::State::Active);
    // Once the token expired, Resolve answers UNAVAILABLE (retry), not a dead token.
    let expire = millis(failing.credentials_expire_time.as_ref().expect("expiry"));
    tokio::time::sleep(Duration::from_millis(
        (expire - now_millis()).max(0) as u64 + 100,
    ))
    .await;
    let unavailable = resolve(app, &service_token(), &job.name)
        .await
        .expect_err("expired");
    assert_eq!(unavailable.code(), Code::Unavailable, "{unavailable:?}");
    let still = crate::fixtures::get_integration(app, &dana(), &job.name)
        .await
        .expect("job");
    assert_eq!(
        still.state(),
        pb::integration::State::Active,
        "nothing broke"
    );
    assert_eq!(
        app_now(app, &installed.name).await.state(),
        pb::installed_app::State::Active
    );

    // A reported rejection tries one refresh; it fails, so the integration breaks.
    let reported = report_rejected(app, &service_token(), &installed.name, "")
        .await
        .expect("report");
    assert_eq!(reported.state(), pb::installed_app::State::NeedsReauth);
    let broken = next_events(&mut events, 1, WAIT).await;
    assert_eq!(
        broken[0].r#type(),
        pb::IntegrationEventType::IntegrationBroken
    );

    // The provider recovers: the next refresh succeeds, the app is ACTIVE again and its
    // integration restored.
    t.provider.control(json!({"fail": null})).await;
    let restored = next_events(&mut events, 1, Duration::from_secs(40)).await;
    assert_eq!(
        restored[0].r#type(),
        pb::IntegrationEventType::IntegrationRestored
    );
    let recovered = app_now(app, &installed.name).await;
    assert_eq!(recovered.state(), pb::installed_app::State::Active);
    assert!(recovered.last_refresh_error.is_empty());
    resolve(app, &service_token(), &job.name)
        .await
        .expect("resolves again");
}
oauth_test!(transient_failures_break_nothing_and_a_later_success_restores);

async fn a_slow_token_endpoint_times_out_and_breaks_nothing(t: OAuthApp) {
    let app = &t.app;
    t.provider.control(json!({"expires_in": 3})).await;
    let installed = oauth_app(app, "Slow").await;
    t.provider.control(json!({"fail": "slow"})).await;
    eventually(Duration::from_secs(15), "the timeout is shown", || async {
        app_now(app, &installed.name)
            .await
            .last_refresh_error
            .contains("did not answer in time")
    })
    .await;
    assert_eq!(
        app_now(app, &installed.name).await.state(),
        pb::installed_app::State::Active
    );
}
oauth_test!(a_slow_token_endpoint_times_out_and_breaks_nothing);

/// The environment of a server process with OAuth on against `provider`, its files in `dir`
/// (`oauth_files`) and its callback on `port`.
pub(super) fn oauth_env(
    provider: &Provider,
    dir: &std::path::Path,
    port: u16,
) -> Vec<(String, String)> {
    let (catalog, clients) = super::oauth_files(provider, dir);
    vec![
        (
            "INTEGRATION_HUB_CATALOG_FILE".into(),
            catalog.display().to_string(),
        ),
        (
            "INTEGRATION_HUB_OAUTH_CLIENTS_FILE".into(),
            clients.display().to_string(),
        ),
        (
            "INTEGRATION_HUB_HTTP_LISTEN".into(),
            format!("127.0.0.1:{port}"),
        ),
        (
            "INTEGRATION_HUB_PUBLIC_URL".into(),
            format!("http://127.0.0.1:{port}"),
        ),
        (
            "INTEGRATION_HUB_OAUTH_ALLOW_LOOPBACK_HTTP".into(),
            "true".into(),
        ),
        (
            "INTEGRATION_HUB_OAUTH_REFRESH_INTERVAL_SECS".into(),
            "1".into(),
        ),
        ("INTEGRATION_HUB_OAUTH_HTTP_TIMEOUT_SECS".into(), "2".into()),
    ]
}

/// Two replicas on one PostgreSQL database, refresh tokens rotating: each token is
/// refreshed exactly once (a second refresh would use a retired refresh token and be
/// refused), while both replicas resolve it as fast as they can. The background refreshers
/// are slowed down so that both replicas meet the nearly expired token in Resolve at once:
/// only the lease keeps them from both refreshing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgres_refresh_one_app_exactly_once_per_token() {
    crate::needs!(Node, Postgres);
    let provider = Provider::start();
    provider
        .control(json!({"expires_in": 6, "rotate": true}))
        .await;
    let keys = KeyRing::generate(1).expect("key").1;
    let server = Server::fresh(Backend::Postgres).await.keys(&keys);
    let dir = tempfile::tempdir().expect("dir");
    // One catalog and clients file; each replica its own callback port.
    let on_demand_only = [("INTEGRATION_HUB_OAUTH_REFRESH_INTERVAL_SECS", "3600")];
    let env_a = oauth_env(&provider, dir.path(), free_port());
    let env_b = oauth_env(&provider, dir.path(), free_port());
    let a = server.clone().envs(&env_a).envs(&on_demand_only).start();
    let b = server.envs(&env_b).envs(&on_demand_only).start();
    let replica_a = a.clients().await;
    let replica_b = b.clients().await;
    let installed = oauth_app(&replica_a, "Shared").await;
    let job = create_integration(&replica_a, &dana(), &installed, "Job").await;
    let resolving = |replica: (
        integration_hub::pb::installed_app_service_client::InstalledAppServiceClient<
            tonic::transport::Channel,
        >,
        integration_hub::pb::integration_service_client::IntegrationServiceClient<
            tonic::transport::Channel,
        >,
    ),
                     name: String| async move {
        let until = tokio::time::Instant::now() + Duration::from_secs(11);
        let mut answered = 0;
        while tokio::time::Instant::now() < until {
            let resolved = resolve(&replica, &service_token(), &name)
                .await
                .expect("every resolution answers");
            assert!(millis(resolved.expire_time.as_ref().expect("expiry")) > now_millis());
            answered += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        answered
    };
    let from_a = tokio::spawn(resolving(replica_a.clone(), job.name.clone()));
    let from_b = tokio::spawn(resolving(replica_b.clone(), job.name.clone()));
    // Resolve refreshes a token in its last quarter: 4.5 s after issue, then every 4.5 s.
    eventually(Duration::from_secs(10), "the first refresh", || async {
        provider.count("refresh_token").await >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        provider.count("refresh_token").await,
        1,
        "one refresh for one token, from two replicas"
    );
    let (a_calls, b_calls) = (from_a.await.expect("a"), from_b.await.expect("b"));
    let refreshes = provider.count("refresh_token").await;
    assert!(refreshes >= 2, "{refreshes}");
    assert_eq!(
        provider.count("refresh_rejected").await,
        0,
        "no rotated refresh token was ever used twice"
    );
    let shown = app_now(&replica_b, &installed.name).await;
    assert_eq!(shown.state(), pb::installed_app::State::Active);
    println!(
        "two replicas: {a_calls} + {b_calls} resolutions, {refreshes} refreshes in 11 s, none refused"
    );
}

/// Tokens, codes, states and the client secret never appear in the logs (at debug level),
/// in errors, or in the SQLite database file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_stay_out_of_logs_errors_and_the_database_file() {
    crate::needs!(Node);
    let provider = Provider::start();
    provider
        .control(json!({"expires_in": 3, "rotate": true}))
        .await;
    let db = TestDb::new(Backend::Sqlite).await;
    let keys = KeyRing::generate(1).expect("key").1;
    let env = oauth_env(&provider, db.dir.path(), free_port());
    let metrics_port = free_port().to_string();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let server = Server::on(&db.url)
        .keys(&keys)
        .envs(&env)
        .env("RUST_LOG", "debug")
        .env("INTEGRATION_HUB_METRICS_LISTEN", &metrics_listen)
        .start();
    let hub = server.clients().await;
    let installed = oauth_app(&hub, "Secretive").await;
    let job = create_integration(&hub, &dana(), &installed, "Job").await;
    let mut states = Vec::new();
    let mut texts = Vec::new();
    // A refused code, a replay, a refused refresh: the errors they leave.
    let started = start(&hub, &dana(), new_slack("Refused")).await;
    let uri = reqwest::Url::parse(&started.authorization_uri).expect("URL");
    states.push(super::query(&uri, "state"));
    let (mut redirect, cookie) = super::open_sign_in(&started.sign_in_uri).await;
    let state = super::query(&redirect, "state");
    redirect.set_query(Some(&format!("state={state}&code=tampered-code")));
    let (_, _, page) = super::visit_with(&redirect, Some(&cookie)).await;
    texts.push(page);
    let refused = hub
        .apps()
        .complete_installed_app_authorization(authed(
            &dana(),
            pb::CompleteInstalledAppAuthorizationRequest {
                state: state.clone(),
                code: "tampered-code".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("used");
    texts.push(refused.message().to_owned());
    eventually(WAIT, "a refresh", || async {
        provider.count("refresh_token").await >= 1
    })
    .await;
    let resolved = resolve(&hub, &service_token(), &job.name)
        .await
        .expect("resolve");
    provider.control(json!({"fail": "invalid_grant"})).await;
    eventually(
        Duration::from_secs(15),
        "the revocation is seen",
        || async {
            app_now(&hub, &installed.name).await.state() == pb::installed_app::State::NeedsReauth
        },
    )
    .await;
    let shown = app_now(&hub, &installed.name).await;
    texts.push(shown.last_refresh_error.clone());
    texts.push(format!("{shown:?}"));
    let other = start(&hub, &dana(), new_slack("Done")).await;
    provider.control(json!({"fail": null})).await;
    let (_, _, page) = authorize_through_callback(&other.sign_in_uri).await;
    texts.push(page);

    let stats = provider.stats().await;
    let mut secrets: Vec<String> = vec![CLIENT_SECRET.to_owned()];
    for list in ["codes", "access_tokens", "refresh_tokens"] {
        for value in stats["issued"][list].as_array().expect("issued") {
            secrets.push(value.as_str().expect("text").to_owned());
        }
    }
    secrets.extend(states);
    secrets.push(state);
    secrets.push(resolved.credentials["access_token"].clone());
    assert!(secrets.len() >= 8, "{secrets:?}");
    let logs = server.logs().join("\n");
    assert!(logs.contains("token refresh"), "debug logs were captured");
    let mut file = Vec::new();
    for entry in std::fs::read_dir(db.dir.path()).expect("dir") {
        let path = entry.expect("entry").path();
        if path.to_string_lossy().contains("hub.db") {
            file.extend(std::fs::read(&path).expect("db file"));
        }
    }
    assert!(!file.is_empty());
    let file = String::from_utf8_lossy(&file);
    for secret in &secrets {
        // Match a distinctive part: JWTs share their header.
        let needle = &secret[secret.len().saturating_sub(24)..];
        assert!(!logs.contains(needle), "a secret in the logs: {needle}");
        assert!(!file.contains(needle), "a secret in the database file");
        for text in &texts {
            assert!(!text.contains(needle), "a secret in an error: {text}");
        }
    }
    println!(
        "checked {} secrets against {} log lines",
        secrets.len(),
        server.logs().len()
    );

    // The refresh outcomes are exported, with a bounded label.
    let page = crate::fixtures::metrics_page(&metrics_listen).await;
    let count = |outcome: &str| {
        crate::fixtures::outcome_count(&page, "integration_hub_oauth_refreshes_total", outcome)
    };
    assert!(count("refreshed") >= 1.0);
    assert!(count("invalid_grant") >= 1.0);
    assert!(count("failed") >= 0.0 && count("busy") >= 0.0);
    for secret in &secrets {
        assert!(!page.contains(&secret[secret.len().saturating_sub(24)..]));
    }
}

async fn a_rejected_brand_new_token_breaks_at_once_and_manual_credentials_end_the_grant(
    t: OAuthApp,
) {
    let app = &t.app;
    let installed = oauth_app(app, "Fresh").await;
    let job = create_integration(app, &dana(), &installed, "Job").await;
    let reported = report_rejected(app, &service_token(), &installed.name, "403 missing scope")
        .await
        .expect("report");
    assert_eq!(reported.state(), pb::installed_app::State::NeedsReauth);
    assert_eq!(
        t.provider.count("refresh_token").await,
        0,
        "a token this new is not refreshed: another would be rejected too"
    );
    let broken = crate::fixtures::get_integration(app, &dana(), &job.name)
        .await
        .expect("job");
    assert_eq!(broken.state(), pb::integration::State::Broken);

    // Credentials replaced by hand: the app is MANUAL, nothing is refreshed any more.
    let updated = app
        .apps()
        .update_installed_app(authed(
            &dana(),
            crate::fixtures::update_credentials(
                &installed.name,
                crate::fixtures::credentials("xoxb-by-hand"),
            ),
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(
        updated.authorization_kind(),
        pb::installed_app::AuthorizationKind::Manual
    );
    assert!(updated.credentials_expire_time.is_none());
    assert_eq!(updated.state(), pb::installed_app::State::Active);
    let resolved = resolve(app, &service_token(), &job.name)
        .await
        .expect("resolve");
    assert_eq!(resolved.credentials["access_token"], "xoxb-by-hand");
    assert!(resolved.expire_time.is_none());
}
oauth_test!(a_rejected_brand_new_token_breaks_at_once_and_manual_credentials_end_the_grant);

/// More tokens due at once than one read of the refresher returns (four per permit) are all
/// refreshed in one pass: the next page is read as soon as the previous one is done, not an
/// interval later. The server that finds them due starts with an interval of an hour, so
/// only that makes them all refreshed (the old loop refreshed four and slept the hour).
async fn more_tokens_due_than_one_read_returns_are_all_refreshed_in_one_pass(backend: Backend) {
    let provider = Provider::start();
    let db = TestDb::new(backend).await;
    let dir = db.dir.path().to_owned();
    let hourly = |args: &mut integration_hub::config::ServeArgs| {
        super::oauth_args(args, &provider, &dir);
        args.oauth.oauth_refresh_concurrency = 1;
        args.oauth.oauth_refresh_interval_secs = 3600;
    };
    let mut args = crate::helpers::test_args(&db.url);
    hourly(&mut args);
    let app = crate::helpers::spawn_with(backend, db, args).await;
    // Four-second tokens are due two seconds after they were issued.
    provider.control(json!({"expires_in": 4})).await;
    let mut apps = Vec::new();
    for n in 0..24 {
        apps.push(oauth_app(&app, &format!("Due {n}")).await.name);
    }
    let before = provider.count("refresh_token").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // A new replica (the old one's first pass ran before any token was due).
    let mut args = app.restart_args();
    hourly(&mut args);
    let app = app.restart_with(args).await;
    eventually(Duration::from_secs(60), "every token refreshed", || async {
        let mut refreshed = 0;
        for name in &apps {
            if app_now(&app, name).await.last_refresh_time.is_some() {
                refreshed += 1;
            }
        }
        refreshed == apps.len()
    })
    .await;
    assert_eq!(provider.count("refresh_token").await - before, 24);
    let stats = provider.stats().await;
    assert!(
        stats["max_in_flight"].as_u64().unwrap_or(0) <= 1,
        "more refreshes at once than the configured concurrency: {stats}"
    );
}

storage_test!(
    backend more_tokens_due_than_one_read_returns_are_all_refreshed_in_one_pass,
    needs Node
);
