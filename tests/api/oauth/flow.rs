//! The authorization code flow: through the callback, through the RPC, refusals,
//! reauthorization, and where secrets must never appear.

use integration_hub::pb;
use tonic::Code;

use super::{
    OAuthApp, authorize_through_callback, dana, failed_authorization, get_authorization, new_slack,
    oauth_app, oauth_test, open_sign_in, query, service_token, sign_in, start, visit, visit_with,
};
use crate::fixtures::{
    TEAM, WAIT, all_apps, all_events, create_integration, get_app, next_events, resolve, watch_live,
};
use crate::helpers::{authed, token};

async fn an_app_is_added_through_the_callback_and_its_access_token_resolved(t: OAuthApp) {
    let app = &t.app;
    let started = start(app, &dana(), new_slack("Acme Slack")).await;
    let authorization = started.authorization.clone().expect("authorization");
    assert_eq!(
        authorization.state(),
        pb::installed_app_authorization::State::Pending
    );
    assert!(
        authorization
            .name
            .starts_with("teams/acme/installedAppAuthorizations/")
    );
    let uri = reqwest::Url::parse(&started.authorization_uri).expect("a URL");
    assert_eq!(query(&uri, "code_challenge_method"), "S256");
    assert_eq!(query(&uri, "client_id"), "hub-test-client");
    assert_eq!(query(&uri, "scope"), "chat:write,channels:read");
    assert_eq!(
        query(&uri, "redirect_uri"),
        format!("http://127.0.0.1:{}/oauth/callback", t.callback_port)
    );
    assert_eq!(query(&uri, "state").len(), 43, "32 random bytes");
    let expires = authorization.expire_time.expect("expiry").seconds
        - authorization.create_time.expect("created").seconds;
    assert!(
        (1..=600).contains(&expires),
        "at most 10 minutes: {expires}"
    );

    let (status, _, page) = authorize_through_callback(&started.sign_in_uri).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Acme Slack"), "{page}");
    let done = get_authorization(app, &dana(), &authorization.name).await;
    assert_eq!(
        done.state(),
        pb::installed_app_authorization::State::Succeeded
    );
    let installed = get_app(app, &dana(), &done.installed_app)
        .await
        .expect("the app exists");
    assert_eq!(installed.creator, "dana");
    assert_eq!(installed.connected_to, "Acme Workspace", "from /team/name");
    assert_eq!(
        installed.authorization_kind(),
        pb::installed_app::AuthorizationKind::Oauth
    );
    assert_eq!(installed.state(), pb::installed_app::State::Active);
    assert!(installed.credentials_expire_time.is_some());
    assert!(installed.last_refresh_error.is_empty());

    // An integration on it resolves to the access token and its expiry, never the refresh
    // token.
    let job = create_integration(app, &dana(), &installed, "Post results").await;
    let resolved = resolve(app, &service_token(), &job.name)
        .await
        .expect("resolve");
    let stats = t.provider.stats().await;
    let issued_access = stats["issued"]["access_tokens"][0]
        .as_str()
        .expect("a token");
    assert_eq!(resolved.credentials["access_token"], issued_access);
    assert_eq!(resolved.credentials["team_id"], "T0001");
    assert!(!resolved.credentials.contains_key("refresh_token"));
    assert!(resolved.expire_time.is_some());
    assert_eq!(t.provider.count("authorization_code").await, 1);

    // Audited: the start and the completion, by dana (the callback carried no token).
    let admin = token(TEAM, "admin", "ada");
    for (action, resource) in [
        (
            "installed_app.start_authorization",
            authorization.name.as_str(),
        ),
        (
            "installed_app.complete_authorization",
            installed.name.as_str(),
        ),
    ] {
        let records = all_events(
            app,
            &admin,
            pb::ListAuditEventsRequest {
                action: action.into(),
                ..Default::default()
            },
        )
        .await;
        assert_eq!(records.len(), 1, "{action}: {records:?}");
        assert_eq!(records[0].actor, "dana");
        assert_eq!(records[0].resource, resource);
        assert_eq!(records[0].outcome(), pb::audit_event::Outcome::Success);
    }

    // A manual app shows as such.
    let manual = crate::fixtures::create_app(app, &dana(), "slack", "Manual").await;
    assert_eq!(
        manual.authorization_kind(),
        pb::installed_app::AuthorizationKind::Manual
    );
}
oauth_test!(an_app_is_added_through_the_callback_and_its_access_token_resolved);

async fn an_app_is_added_through_the_rpc_by_its_starter_only_and_a_state_is_used_once(t: OAuthApp) {
    let app = &t.app;
    let started = start(app, &dana(), new_slack("By RPC")).await;
    let redirect = sign_in(&started.authorization_uri).await;
    let (state, code) = (query(&redirect, "state"), query(&redirect, "code"));
    let complete = |who: String| {
        let mut apps = app.apps.clone();
        let (state, code) = (state.clone(), code.clone());
        async move {
            apps.complete_installed_app_authorization(authed(
                &who,
                pb::CompleteInstalledAppAuthorizationRequest {
                    state,
                    code,
                    ..Default::default()
                },
            ))
            .await
        }
    };
    // Another person of the team, and someone of another team: as if it did not exist.
    for foreign in [
        token(TEAM, "developer", "erik"),
        token(TEAM, "admin", "ada"),
        token("other", "developer", "dana"),
    ] {
        let refused = complete(foreign)
            .await
            .expect_err("a foreign state is refused");
        assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
        assert!(!refused.message().contains(&state) && !refused.message().contains(&code));
    }
    let done = complete(dana())
        .await
        .expect("the starter completes")
        .into_inner();
    assert_eq!(
        done.state(),
        pb::installed_app_authorization::State::Succeeded
    );
    assert!(done.installed_app.starts_with("teams/acme/installedApps/"));
    // Replayed: through the RPC and through the callback.
    let replayed = complete(dana()).await.expect_err("a state is used once");
    assert_eq!(replayed.code(), Code::FailedPrecondition);
    let (status, _, page) = visit(&redirect).await;
    assert_eq!(status, 400, "{page}");
    assert_eq!(
        t.provider.count("authorization_code").await,
        1,
        "one exchange"
    );
    let apps = all_apps(app, &dana()).await;
    assert_eq!(apps.len(), 1, "exactly one app");
    // An unknown state at the callback: a page, no redirect. Hostile values (a huge state, a
    // NUL, markup) get the same plain answer, escaped, and nothing else is served.
    let long = "s".repeat(50_000);
    for hostile in [
        "state=forged&code=whatever".to_owned(),
        format!("state={long}&code=c"),
        "state=a%00b&code=c".to_owned(),
        "state=x&error=%3Cscript%3Ealert(1)%3C%2Fscript%3E".to_owned(),
        String::new(),
    ] {
        let mut forged = redirect.clone();
        forged.set_query(Some(&hostile));
        let (status, location, page) = visit(&forged).await;
        assert_eq!((status, location), (400, None), "{hostile:.60}");
        assert!(!page.contains("<script>"), "{page}");
    }
    let mut elsewhere = redirect.clone();
    elsewhere.set_path("/metrics");
    assert_eq!(visit(&elsewhere).await.0, 404);
}
oauth_test!(an_app_is_added_through_the_rpc_by_its_starter_only_and_a_state_is_used_once);

async fn a_refusal_or_a_bad_code_leaves_nothing_and_says_why(t: OAuthApp) {
    let app = &t.app;
    // The person denies access; the browser returns to the allowed return URL with the error.
    t.provider.control(serde_json::json!({"deny": true})).await;
    let mut request = new_slack("Denied");
    request.return_url = "https://app.example.test/integrations?tab=apps".into();
    let started = start(app, &dana(), request).await;
    let (status, location, _) = authorize_through_callback(&started.sign_in_uri).await;
    assert_eq!(status, 303);
    let location = reqwest::Url::parse(&location.expect("a redirect")).expect("URL");
    assert_eq!(location.host_str(), Some("app.example.test"));
    assert_eq!(query(&location, "tab"), "apps");
    assert!(query(&location, "error").contains("access_denied"));
    assert!(location.query().is_some_and(|q| !q.contains("code=")));
    let name = started.authorization.expect("authorization").name;
    let failed = get_authorization(app, &dana(), &name).await;
    assert_eq!(
        failed.state(),
        pb::installed_app_authorization::State::Failed
    );
    assert!(failed.error.contains("access_denied"), "{}", failed.error);
    t.provider.control(serde_json::json!({"deny": false})).await;

    // A code the provider refuses (tampered): FAILED, nothing made.
    let started = start(app, &dana(), new_slack("Bad code")).await;
    let (mut redirect, cookie) = open_sign_in(&started.sign_in_uri).await;
    let state = query(&redirect, "state");
    redirect.set_query(Some(&format!("state={state}&code=not-the-code")));
    let (status, _, page) = visit_with(&redirect, Some(&cookie)).await;
    assert_eq!(status, 400, "{page}");
    assert!(!page.contains("not-the-code"));
    failed_authorization(app, &dana(), &started).await;
    let apps = all_apps(app, &dana()).await;
    assert!(apps.is_empty(), "nothing half-made: {apps:?}");
    let failures = all_events(
        app,
        &token(TEAM, "admin", "ada"),
        pb::ListAuditEventsRequest {
            action: "installed_app.complete_authorization".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        failures.len(),
        2,
        "the denial and the bad code: {failures:?}"
    );
    assert!(
        failures
            .iter()
            .all(|r| r.outcome() == pb::audit_event::Outcome::Failed && r.actor == "dana")
    );

    // Return URLs outside the allowed origins, or not https, are refused at start.
    for url in [
        "https://evil.example.test/steal",
        "http://app.example.test/x",
        "javascript:alert(1)",
        "https://user:pw@app.example.test/x",
    ] {
        let mut request = new_slack("Redirect");
        request.return_url = url.into();
        let refused = app
            .apps
            .clone()
            .start_installed_app_authorization(authed(&dana(), request))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{url}");
    }
    // A viewer cannot start; a service without OAuth cannot be authorized.
    let mut request = new_slack("Datadog");
    request.service = "datadog".into();
    let refused = app
        .apps
        .clone()
        .start_installed_app_authorization(authed(&dana(), request))
        .await
        .expect_err("no OAuth for datadog");
    assert_eq!(refused.code(), Code::InvalidArgument);
}
oauth_test!(a_refusal_or_a_bad_code_leaves_nothing_and_says_why);

async fn revocation_breaks_the_integrations_and_reauthorization_restores_them(t: OAuthApp) {
    let app = &t.app;
    t.provider
        .control(serde_json::json!({"expires_in": 3}))
        .await;
    let installed = oauth_app(app, "Revoked Slack").await;
    let job = create_integration(app, &dana(), &installed, "Alerts").await;
    let (mut events, _) = watch_live(app, &dana()).await;
    let mut app_events = app
        .apps
        .clone()
        .watch_installed_app_events(authed(
            &dana(),
            pb::WatchInstalledAppEventsRequest::default(),
        ))
        .await
        .expect("watch installed-app events")
        .into_inner();
    // The provider revoked the grant: the next refresh answers invalid_grant, so the app
    // needs reauthorization and its integration breaks.
    t.provider
        .control(serde_json::json!({"revoke": true}))
        .await;
    let broken = next_events(&mut events, 1, WAIT).await;
    let revoked = get_app(app, &dana(), &installed.name).await.expect("app");
    assert_eq!(revoked.state(), pb::installed_app::State::NeedsReauth);
    assert!(
        revoked.last_refresh_error.contains("invalid_grant"),
        "{revoked:?}"
    );
    assert_eq!(
        broken[0].r#type(),
        pb::IntegrationEventType::IntegrationBroken
    );
    assert_eq!(
        broken[0].reason(),
        pb::integration::BrokenReason::CredentialsRejected
    );
    assert_eq!(broken[0].integration_name, job.name);
    let refused = resolve(app, &service_token(), &job.name)
        .await
        .expect_err("nothing to resolve");
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // Reauthorization replaces the credentials and restores the integration.
    let mut request = new_slack("");
    request.service = String::new();
    request.installed_app = installed.name.clone();
    let started = start(app, &dana(), request).await;
    let (status, _, page) = authorize_through_callback(&started.sign_in_uri).await;
    assert_eq!(status, 200, "{page}");
    let restored = next_events(&mut events, 1, WAIT).await;
    assert_eq!(
        restored[0].r#type(),
        pb::IntegrationEventType::IntegrationRestored
    );
    let after = get_app(app, &dana(), &installed.name).await.expect("app");
    assert_eq!(after.state(), pb::installed_app::State::Active);
    assert_eq!(after.name, installed.name, "the same app, reauthorized");
    // Installed-app events: the refused refresh, the app needing reauthorization, then back.
    let mut kinds = Vec::new();
    while !kinds.contains(&pb::InstalledAppEventType::InstalledAppRestored) {
        let message = tokio::time::timeout(WAIT, app_events.message())
            .await
            .expect("installed-app events in time")
            .expect("stream ok")
            .expect("stream open");
        for event in message.events {
            assert_eq!(event.installed_app_name, installed.name);
            kinds.push(event.r#type());
        }
    }
    assert_eq!(
        kinds,
        [
            pb::InstalledAppEventType::InstalledAppRefreshFailed,
            pb::InstalledAppEventType::InstalledAppNeedsReauth,
            pb::InstalledAppEventType::InstalledAppRestored,
        ]
    );
    let resolved = resolve(app, &service_token(), &job.name)
        .await
        .expect("resolve");
    let stats = t.provider.stats().await;
    let newest = stats["issued"]["access_tokens"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|v| v.as_str())
        .expect("issued");
    assert_eq!(resolved.credentials["access_token"], newest);
    // Only the owner or an admin may reauthorize.
    let mut request = new_slack("");
    request.installed_app = installed.name.clone();
    let refused = app
        .apps
        .clone()
        .start_installed_app_authorization(authed(&token(TEAM, "developer", "erik"), request))
        .await
        .expect_err("not the owner");
    assert_eq!(refused.code(), Code::PermissionDenied);
}
oauth_test!(revocation_breaks_the_integrations_and_reauthorization_restores_them);
