//! A hostile provider and unlucky timing: a provider that repeats what it was sent in its
//! errors (no secret may reach an error, a field people see or a log line), absurd expiries
//! and text from a provider, and a reauthorization whose app changed hands before it
//! completed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use integration_hub::crypto::KeyRing;
use integration_hub::pb;
use serde_json::json;
use tonic::Code;

use super::refresh::oauth_env;
use super::{
    CLIENT_SECRET, OAuthApp, Provider, app_now, authorize_through_callback, dana, eventually,
    failed_authorization, new_slack, oauth_app, oauth_test, open_sign_in, service_token, sign_in,
    start, visit, visit_with,
};
use crate::fixtures::{
    Clients, TEAM, all_apps, app_request, assert_invalid, create_integration, resolve,
};
use crate::helpers::{authed, free_port, token};
use crate::process::Server;
use crate::storage_test;

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
async fn echoed_inputs_reach_no_error_field_or_log(server: Server) {
    let provider = Provider::start();
    provider
        .control(json!({"expires_in": 4, "echo_all": true}))
        .await;
    let keys = KeyRing::generate(1).expect("key").1;
    let dir = tempfile::tempdir().expect("dir");
    let env = oauth_env(&provider, dir.path(), free_port());
    let server = server
        .keys(&keys)
        .envs(&env)
        .env("RUST_LOG", "debug")
        .start();
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
        let (status, _, page) = authorize_through_callback(&started.sign_in_uri).await;
        assert_eq!(status, 400, "{page}");
        let failed = failed_authorization(&hub, &dana(), &started).await;
        assert!(failed.error.contains(shown), "{fail}: {}", failed.error);
        texts.push(page);
        texts.push(failed.error);
    }
    // The browser's redirect: a refusal whose description repeats the state.
    provider.control(json!({"deny": true})).await;
    let started = start(&hub, &dana(), new_slack("Denied")).await;
    let (_, _, page) = authorize_through_callback(&started.sign_in_uri).await;
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

storage_test!(process echoed_inputs_reach_no_error_field_or_log, needs Node);

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
    let listed = all_apps(app, &dana()).await;
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
    let (redirect, cookie) = open_sign_in(&started.sign_in_uri).await;
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
    let exchanged = t.provider.count("authorization_code").await;
    let (status, _, page) = visit_with(&redirect, Some(&cookie)).await;
    assert_eq!(status, 400, "{page}");
    let failed = failed_authorization(app, &dana(), &started).await;
    assert!(failed.error.contains("owner"), "{}", failed.error);
    assert_eq!(
        t.provider.count("authorization_code").await,
        exchanged,
        "the code was not spent"
    );
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
    let (redirect, cookie) = open_sign_in(&started.sign_in_uri).await;
    crate::fixtures::delete_app(app, &admin, &installed.name, "", false)
        .await
        .expect("the admin deletes the app");
    let (status, _, _) = visit_with(&redirect, Some(&cookie)).await;
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

/// Login CSRF: someone of team evil starts an authorization and sends it to a victim, whose
/// browser would connect the victim's account to team evil. The hub's sign-in URL cannot be
/// opened by a link (a GET) or by another site's form (its `Origin` or `Referer`); the
/// provider's URL completes nothing at the callback in a browser that did not open the
/// sign-in, nor with another sign-in's cookie or a forged one; nothing is consumed, and the
/// starter's own browser then completes it.
async fn a_sign_in_completes_only_in_the_browser_that_opened_it(t: OAuthApp) {
    let app = &t.app;
    let mallory = token("evil", "developer", "mallory");
    let started = start(app, &mallory, new_slack("Evil's Slack")).await;
    let authorization = started.authorization.clone().expect("authorization");
    let browser = super::browser();
    let link = browser
        .get(&started.sign_in_uri)
        .send()
        .await
        .expect("the sign-in URL answers");
    assert_eq!(link.status(), 405, "a link is refused");
    assert!(link.headers().get("set-cookie").is_none());
    for (header, value) in [
        ("origin", "https://evil.example.test"),
        ("origin", "null"),
        ("referer", "https://evil.example.test/phish.html"),
    ] {
        let forged = browser
            .post(&started.sign_in_uri)
            .header(header, value)
            .send()
            .await
            .expect("the sign-in URL answers");
        assert_eq!(forged.status(), 403, "{header}: {value}");
        assert!(forged.headers().get("set-cookie").is_none());
    }

    // The provider's URL sent instead: the victim signs in, but the callback refuses a
    // browser without the sign-in's cookie, with another sign-in's, or with a forged value.
    let redirect = sign_in(&started.authorization_uri).await;
    let (_, victims_cookie) = open_sign_in(
        &start(app, &dana(), new_slack("Dana's Slack"))
            .await
            .sign_in_uri,
    )
    .await;
    let forged = format!(
        "ih_oauth_{}=not-the-value",
        authorization.name.rsplit('/').next().expect("id")
    );
    for cookie in [None, Some(victims_cookie.as_str()), Some(forged.as_str())] {
        let (status, location, page) = visit_with(&redirect, cookie).await;
        assert_eq!((status, location), (403, None), "{cookie:?}: {page}");
        assert!(page.contains("not opened in this browser"), "{page}");
    }
    let evil_apps = app
        .apps()
        .list_installed_apps(authed(&mallory, pb::ListInstalledAppsRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .installed_apps;
    assert!(evil_apps.is_empty(), "nothing connected: {evil_apps:?}");
    assert_eq!(
        t.provider.count("authorization_code").await,
        0,
        "no code exchanged"
    );
    let pending = super::get_authorization(app, &mallory, &authorization.name).await;
    assert_eq!(
        pending.state(),
        pb::installed_app_authorization::State::Pending,
        "nothing consumed"
    );

    // The starter's browser, from the application's page (the public URL's origin).
    let opened = browser
        .post(&started.sign_in_uri)
        .header("origin", format!("http://127.0.0.1:{}", t.callback_port))
        .send()
        .await
        .expect("the sign-in URL answers");
    assert_eq!(opened.status(), 303);
    let cookie = opened.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .split(';')
        .next()
        .expect("name=value")
        .to_owned();
    let provider = opened.headers()["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let again = browser
        .post(&started.sign_in_uri)
        .send()
        .await
        .expect("the sign-in URL answers");
    assert_eq!(again.status(), 400, "opened once");
    let (status, _, page) = visit_with(&sign_in(&provider).await, Some(&cookie)).await;
    assert_eq!(status, 200, "{page}");
    let done = super::get_authorization(app, &mallory, &authorization.name).await;
    assert_eq!(
        done.state(),
        pb::installed_app_authorization::State::Succeeded
    );
    assert!(done.installed_app.starts_with("teams/evil/installedApps/"));
    // The visit without a cookie left nothing behind (the replay below is refused as used).
    assert_eq!(visit(&redirect).await.0, 400);
}
oauth_test!(a_sign_in_completes_only_in_the_browser_that_opened_it);
