//! A hostile provider and unlucky timing: a provider that repeats what it was sent in its
//! errors (no secret may reach an error, a field people see or a log line), absurd expiries
//! and text from a provider, and a reauthorization whose app changed hands before it
//! completed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use integration_hub::crypto::KeyRing;
use integration_hub::pb;
use serde_json::json;
use tonic::Code;

use super::refresh::{oauth_env, start_process};
use super::{
    CLIENT_SECRET, OAuthApp, Provider, authorize_through_callback, dana, eventually,
    failed_authorization, free_port, new_slack, oauth_app, oauth_test, service_token, sign_in,
    start, visit,
};
use crate::fixtures::{Clients, TEAM, app_request, assert_invalid, create_integration, resolve};
use crate::helpers::{Backend, TestDb, authed, token};

async fn app_now(app: &impl Clients, name: &str) -> pb::InstalledApp {
    crate::fixtures::get_app(app, &dana(), name)
        .await
        .expect("the app")
}

/// Everything an echoing provider was sent and repeated that is a secret: codes, verifiers,
/// refresh tokens, the client secret, states (what it echoed is listed as `name=value`).
async fn echoed_secrets(provider: &Provider) -> Vec<(String, String)> {
    let stats = provider.stats().await;
    stats["echoed"]
        .as_array()
        .expect("echoed")
        .iter()
        .filter_map(|entry| entry.as_str()?.split_once('='))
        .filter(|(name, _)| {
            matches!(
                *name,
                "code" | "code_verifier" | "refresh_token" | "client_secret" | "state"
            )
        })
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// A provider that puts the whole request (form and headers) into its errors, in the
/// description and in the error code itself, at the code exchange, at the browser's
/// redirect and at refresh (transient and `invalid_grant`): the authorization's error,
/// `last_refresh_error`, the callback's pages and the server's debug log hold none of the
/// client secret, codes, verifiers, refresh tokens or states it repeated.
async fn echoed_inputs_reach_no_error_field_or_log(backend: Backend) {
    let provider = Provider::start();
    provider
        .control(json!({"expires_in": 4, "echo_all": true}))
        .await;
    let db = TestDb::new(backend).await;
    let keys = KeyRing::generate(1).expect("key").1;
    let dir = tempfile::tempdir().expect("dir");
    let env = oauth_env(&provider, dir.path(), free_port());
    let server = start_process(&db, &keys, &env, &[("RUST_LOG", "debug")]);
    let hub = server.clients().await;
    let mut texts = Vec::new();

    // The code exchange answered with the request in error_description, then with the
    // client secret as the error code.
    for (fail, shown) in [
        ("echo", "the provider answered invalid_request"),
        (
            "echo_code",
            "the provider answered an error code repeating a value the service sent",
        ),
    ] {
        provider
            .control(json!({"fail": fail, "fail_times": 1}))
            .await;
        let started = start(&hub, &dana(), new_slack("Echoed")).await;
        let (status, _, page) = authorize_through_callback(&started.authorization_uri).await;
        assert_eq!(status, 400, "{page}");
        let failed = failed_authorization(&hub, &dana(), &started).await;
        assert!(failed.error.contains(shown), "{fail}: {}", failed.error);
        texts.push(page);
        texts.push(failed.error);
    }
    // The browser's redirect: a refusal whose description repeats the state.
    provider.control(json!({"deny": true})).await;
    let started = start(&hub, &dana(), new_slack("Denied")).await;
    let (_, _, page) = authorize_through_callback(&started.authorization_uri).await;
    let denied = failed_authorization(&hub, &dana(), &started).await;
    assert_eq!(denied.error, "the provider answered access_denied");
    texts.push(page);
    texts.push(denied.error);
    provider.control(json!({"deny": false})).await;

    // Refreshes: a transient failure, then invalid_grant, each repeating the refresh token
    // and the client secret.
    let installed = oauth_app(&hub, "Refreshed").await;
    provider.control(json!({"fail": "500"})).await;
    eventually(Duration::from_secs(15), "a failed refresh", || async {
        !app_now(&hub, &installed.name)
            .await
            .last_refresh_error
            .is_empty()
    })
    .await;
    let transient = app_now(&hub, &installed.name).await;
    assert!(
        transient
            .last_refresh_error
            .contains("the provider answered server_error"),
        "{}",
        transient.last_refresh_error
    );
    texts.push(transient.last_refresh_error);
    provider.control(json!({"fail": "invalid_grant"})).await;
    eventually(Duration::from_secs(15), "the revocation", || async {
        app_now(&hub, &installed.name).await.state() == pb::installed_app::State::NeedsReauth
    })
    .await;
    let revoked = app_now(&hub, &installed.name).await;
    assert!(
        revoked
            .last_refresh_error
            .contains("the provider answered invalid_grant"),
        "{}",
        revoked.last_refresh_error
    );
    texts.push(revoked.last_refresh_error.clone());
    texts.push(format!("{revoked:?}"));

    let secrets = echoed_secrets(&provider).await;
    for name in [
        "code",
        "code_verifier",
        "refresh_token",
        "client_secret",
        "state",
    ] {
        assert!(
            secrets.iter().any(|(n, _)| n == name),
            "the provider echoed a {name}: {secrets:?}"
        );
    }
    assert!(secrets.iter().any(|(_, v)| v == CLIENT_SECRET));
    let logs = server.logs().join("\n");
    assert!(
        logs.contains("the provider's own words (scrubbed)") && logs.contains("[hidden]"),
        "the descriptions reached the debug log, scrubbed"
    );
    for (name, secret) in &secrets {
        assert!(!logs.contains(secret.as_str()), "the {name} in the logs");
        for text in &texts {
            assert!(!text.contains(secret.as_str()), "the {name} in {text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_inputs_reach_no_error_field_or_log_sqlite() {
    echoed_inputs_reach_no_error_field_or_log(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_inputs_reach_no_error_field_or_log_postgres() {
    echoed_inputs_reach_no_error_field_or_log(Backend::Postgres).await;
}

/// Latest second a Timestamp may hold (9999-12-31T23:59:59Z).
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// An `expires_in` of 10^13 seconds is believed for ten years at most, and every listing
/// keeps answering times a JSON mapping can write; an account name with a bidirectional
/// override and a line separator is stored without them, while a client's `connected_to`
/// with one is refused naming the field.
async fn absurd_expiries_and_text_from_a_provider_are_cut_and_neutralised(t: OAuthApp) {
    let app = &t.app;
    t.provider
        .control(json!({"expires_in": 10_000_000_000_000_i64, "team_name": "Acme\u{202e}gnp.exe\u{2028}Evil\u{2066}"}))
        .await;
    let installed = oauth_app(app, "Forever").await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let listed = app
        .apps()
        .list_installed_apps(authed(&dana(), pb::ListInstalledAppsRequest::default()))
        .await
        .expect("the listing answers")
        .into_inner()
        .installed_apps;
    let shown = listed
        .iter()
        .find(|a| a.name == installed.name)
        .expect("listed");
    let expires = shown
        .credentials_expire_time
        .as_ref()
        .expect("an expiry")
        .seconds;
    let ten_years = 10 * 365 * 24 * 3600;
    assert!(
        expires <= now + ten_years + 60 && expires > now + ten_years - 3600,
        "cut to ten years: {expires}"
    );
    assert!(expires <= MAX_TIMESTAMP_SECONDS);
    assert_eq!(shown.connected_to, "Acme gnp.exe Evil");
    let job = create_integration(app, &dana(), &installed, "Job").await;
    let resolved = resolve(app, &service_token(), &job.name)
        .await
        .expect("resolve");
    assert!(resolved.expire_time.expect("expiry").seconds <= MAX_TIMESTAMP_SECONDS);

    for hostile in ["Acme\u{202e}gnp.exe", "line\u{2028}break", "mark\u{200f}"] {
        let mut request = app_request("slack", "Manual", "xoxb-manual");
        request.installed_app.as_mut().expect("app").connected_to = hostile.into();
        assert_invalid(
            app.apps()
                .create_installed_app(authed(&dana(), request))
                .await,
            "installed_app.connected_to",
        );
    }
}
oauth_test!(absurd_expiries_and_text_from_a_provider_are_cut_and_neutralised);

/// A reauthorization started by the app's owner, completed after an admin handed the app to
/// someone else: the completion re-checks, so the credentials stay as they were and the
/// authorization ends FAILED saying why.
async fn a_reauthorization_completed_after_a_transfer_replaces_nothing(t: OAuthApp) {
    let app = &t.app;
    let installed = oauth_app(app, "Handed over").await;
    let job = create_integration(app, &dana(), &installed, "Job").await;
    let before = resolve(app, &service_token(), &job.name)
        .await
        .expect("resolve")
        .credentials["access_token"]
        .clone();
    let mut request = new_slack("");
    request.service = String::new();
    request.installed_app = installed.name.clone();
    let started = start(app, &dana(), request).await;
    let redirect = sign_in(&started.authorization_uri).await;
    app.apps()
        .transfer_installed_app(authed(
            &token(TEAM, "admin", "ada"),
            pb::TransferInstalledAppRequest {
                name: installed.name.clone(),
                new_owner: "erik".into(),
            },
        ))
        .await
        .expect("the admin transfers the app");
    let (status, _, page) = visit(&redirect).await;
    assert_eq!(status, 400, "{page}");
    let failed = failed_authorization(app, &dana(), &started).await;
    assert!(failed.error.contains("owner"), "{}", failed.error);
    let after = resolve(app, &service_token(), &job.name)
        .await
        .expect("resolve");
    assert_eq!(
        after.credentials["access_token"], before,
        "the credentials were not replaced"
    );
    let shown = app_now(app, &installed.name).await;
    assert_eq!(shown.owner, "erik");
    // Deleted meanwhile: the same, NOT_FOUND-shaped refusal, nothing recreated.
    let mut request = new_slack("");
    request.service = String::new();
    request.installed_app = installed.name.clone();
    let admin = token(TEAM, "admin", "ada");
    let started = start(app, &admin, request).await;
    let redirect = sign_in(&started.authorization_uri).await;
    crate::fixtures::delete_app(app, &admin, &installed.name, "", false)
        .await
        .expect("the admin deletes the app");
    let (status, _, _) = visit(&redirect).await;
    assert_eq!(status, 400);
    let refused = app
        .apps()
        .get_installed_app(authed(
            &admin,
            pb::GetInstalledAppRequest {
                name: installed.name.clone(),
            },
        ))
        .await
        .expect_err("still deleted");
    assert_eq!(refused.code(), Code::NotFound);
}
oauth_test!(a_reauthorization_completed_after_a_transfer_replaces_nothing);
