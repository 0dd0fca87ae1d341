//! The rules of docs/rules.md, one group of tests per rule, on both databases.
//!
//! "Nothing else happened" is checked without waiting: after the change under test, a test
//! makes a sentinel change (a rename) and asserts that the sentinel is the next event.

use integration_hub::pb;
use pb::IntegrationEventType as Kind;
use pb::integration::{BrokenReason, State};
use pb::reauthenticate_integration_request::Auth;
use tonic::Code;

use crate::fixtures::*;
use crate::helpers::{TestApp, authed};
use crate::storage_test;

fn reauth_request(name: &str, auth: Auth) -> pb::ReauthenticateIntegrationRequest {
    pb::ReauthenticateIntegrationRequest {
        name: name.into(),
        auth: Some(auth),
    }
}

async fn reauthenticate(
    app: &TestApp,
    token: &str,
    name: &str,
    auth: Auth,
) -> Result<pb::Integration, tonic::Status> {
    app.integrations
        .clone()
        .reauthenticate_integration(authed(token, reauth_request(name, auth)))
        .await
        .map(|r| r.into_inner())
}

async fn report_rejected(
    app: &TestApp,
    token: &str,
    name: &str,
    detail: &str,
) -> Result<pb::InstalledApp, tonic::Status> {
    app.apps
        .clone()
        .report_credentials_rejected(authed(
            token,
            pb::ReportCredentialsRejectedRequest {
                name: name.into(),
                detail: detail.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn update_app(
    app: &TestApp,
    token: &str,
    installed_app: pb::InstalledApp,
    paths: &[&str],
    secret: Option<&str>,
) -> Result<pb::InstalledApp, tonic::Status> {
    app.apps
        .clone()
        .update_installed_app(authed(
            token,
            pb::UpdateInstalledAppRequest {
                installed_app: Some(installed_app),
                update_mask: Some(prost_types::FieldMask {
                    paths: paths.iter().map(|p| (*p).to_owned()).collect(),
                }),
                credentials: secret.map(credentials).unwrap_or_default(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

fn assert_active(integration: &pb::Integration) {
    assert_eq!(integration.state, State::Active as i32, "{integration:?}");
    assert_eq!(
        integration.broken_reason,
        BrokenReason::Unspecified as i32,
        "{integration:?}"
    );
    assert!(integration.broken_detail.is_empty(), "{integration:?}");
    assert!(integration.broken_time.is_none(), "{integration:?}");
}

// ---- rule 1: any developer adds apps, and integrations on any of the team's apps ----

async fn another_developer_adds_an_integration_on_an_app_without_its_credentials(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    assert_eq!(slack.integration_count, 0);
    assert_eq!(slack.creator, "dana");
    assert_eq!(slack.state, pb::installed_app::State::Active as i32);

    // Erik did not set the app up and gives no credentials.
    let request = integration_request(&slack, "Monitor results");
    assert!(request.credentials.is_empty());
    let integration = app
        .integrations
        .clone()
        .create_integration(authed(&p.erik, request))
        .await
        .expect("another developer uses the team's app")
        .into_inner();
    assert!(integration.name.starts_with("teams/acme/integrations/"));
    assert_eq!(integration.installed_app, slack.name);
    assert_eq!(integration.service, "slack");
    assert_eq!(integration.creator, "erik");
    assert!(!integration.own_credentials);
    assert_active(&integration);

    let slack = get_app(&app, &p.viewer, &slack.name)
        .await
        .expect("get app");
    assert_eq!(slack.integration_count, 1);
    create_integration(&app, &p.erik, &slack, "Second").await;
    let slack = get_app(&app, &p.viewer, &slack.name)
        .await
        .expect("get app");
    assert_eq!(slack.integration_count, 2);
}
storage_test!(another_developer_adds_an_integration_on_an_app_without_its_credentials);

async fn a_viewer_can_add_neither_an_installed_app_nor_an_integration(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;

    let refused = app
        .apps
        .clone()
        .create_installed_app(authed(
            &p.viewer,
            pb::CreateInstalledAppRequest {
                installed_app: Some(pb::InstalledApp {
                    service: "slack".into(),
                    display_name: "Viewer's Slack".into(),
                    ..Default::default()
                }),
                credentials: credentials("xoxb-viewer"),
                ..Default::default()
            },
        ))
        .await;
    expect_code(refused, Code::PermissionDenied);
    let refused = app
        .integrations
        .clone()
        .create_integration(authed(
            &p.viewer,
            integration_request(&slack, "Viewer's job"),
        ))
        .await;
    expect_code(refused, Code::PermissionDenied);

    let apps = app
        .apps
        .clone()
        .list_installed_apps(authed(&p.viewer, pb::ListInstalledAppsRequest::default()))
        .await
        .expect("list apps")
        .into_inner();
    assert_eq!(apps.installed_apps.len(), 1, "only dana's app exists");
    assert_eq!(apps.installed_apps[0].integration_count, 0);
    let listed = list_integrations(&app, &p.viewer, "", State::Unspecified).await;
    assert!(listed.integrations.is_empty());
}
storage_test!(a_viewer_can_add_neither_an_installed_app_nor_an_integration);

// ---- rule 2: credentials leave only through ResolveIntegrationCredentials ----

async fn a_service_resolves_the_installed_apps_credentials_for_an_integration(app: TestApp) {
    let p = people(&app);
    let slack = create_app_with(&app, &p.dana, "slack", "Team Slack", "xoxb-team-secret").await;
    let integration = create_integration(&app, &p.erik, &slack, "Monitor results").await;

    let resolved = resolve(&app, &p.service, &integration.name)
        .await
        .expect("a service resolves");
    assert_eq!(resolved.service, "slack");
    assert_eq!(resolved.credentials, credentials("xoxb-team-secret"));
    let resolved_integration = resolved.integration.expect("the integration");
    assert_eq!(resolved_integration.name, integration.name);
    assert_eq!(resolved_integration.installed_app, slack.name);
}
storage_test!(a_service_resolves_the_installed_apps_credentials_for_an_integration);

async fn a_service_resolves_an_integrations_own_credentials(app: TestApp) {
    let p = people(&app);
    // An app of the same service exists; the integration must not fall back to it.
    create_app_with(&app, &p.dana, "slack", "Team Slack", "xoxb-team-secret").await;
    let own =
        create_own_integration(&app, &p.erik, "slack", "Private channel", "xoxb-erik-own").await;
    assert!(own.own_credentials);
    assert!(own.installed_app.is_empty());
    assert_active(&own);

    let resolved = resolve(&app, &p.service, &own.name)
        .await
        .expect("a service resolves");
    assert_eq!(resolved.service, "slack");
    assert_eq!(resolved.credentials, credentials("xoxb-erik-own"));
}
storage_test!(a_service_resolves_an_integrations_own_credentials);

async fn only_a_service_may_resolve_credentials(app: TestApp) {
    let p = people(&app);
    let slack = create_app_with(&app, &p.dana, "slack", "Team Slack", "xoxb-team-secret").await;
    let integration = create_integration(&app, &p.dana, &slack, "Monitor results").await;
    for token in [&p.dana, &p.admin, &p.viewer] {
        let status = expect_code(
            resolve(&app, token, &integration.name).await,
            Code::PermissionDenied,
        );
        assert!(!status.message().contains("xoxb-team-secret"));
    }
}
storage_test!(only_a_service_may_resolve_credentials);

async fn resolving_a_broken_integration_is_a_failed_precondition(app: TestApp) {
    let p = people(&app);
    let slack = create_app_with(&app, &p.dana, "slack", "Team Slack", "xoxb-team-secret").await;
    let integration = create_integration(&app, &p.dana, &slack, "Monitor results").await;
    delete_app(&app, &p.admin, &slack.name, "", false)
        .await
        .expect("admin deletes");

    let status = expect_code(
        resolve(&app, &p.service, &integration.name).await,
        Code::FailedPrecondition,
    );
    assert_eq!(error_reason(&status), "FAILED_PRECONDITION");
    assert!(!status.message().contains("xoxb-team-secret"));
}
storage_test!(resolving_a_broken_integration_is_a_failed_precondition);

// ---- rule 3: only an admin deletes; the delete breaks every integration, at once ----

async fn only_an_admin_may_delete_an_installed_app(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let integration = create_integration(&app, &p.dana, &slack, "Monitor results").await;

    // Not even the developer who set it up.
    for token in [&p.dana, &p.erik, &p.viewer, &p.service] {
        let status = expect_code(
            delete_app(&app, token, &slack.name, "", false).await,
            Code::PermissionDenied,
        );
        assert_eq!(error_reason(&status), "PERMISSION_DENIED");
    }
    let still = get_app(&app, &p.dana, &slack.name)
        .await
        .expect("the app is still there");
    assert_eq!(still.integration_count, 1);
    assert_active(
        &get_integration(&app, &p.dana, &integration.name)
            .await
            .unwrap(),
    );

    let broken = delete_app(&app, &p.admin, &slack.name, "", false)
        .await
        .expect("an admin deletes");
    assert_eq!(broken, vec![integration.name.clone()]);
}
storage_test!(only_an_admin_may_delete_an_installed_app);

async fn deleting_an_installed_app_breaks_every_integration_that_used_it(app: TestApp) {
    let p = people(&app);
    let doomed = create_app(&app, &p.dana, "slack", "Ops Slack").await;
    let other = create_app(&app, &p.dana, "slack", "Marketing Slack").await;
    let using = create_integrations(&app, &p.erik, &doomed, "Ops job", 5).await;
    let bystander = create_integration(&app, &p.erik, &other, "Marketing job").await;
    let own = create_own_integration(&app, &p.erik, "slack", "Own job", "xoxb-own").await;
    let (mut stream, _) = watch_live(&app, &p.viewer).await;

    let broken = delete_app(&app, &p.admin, &doomed.name, &doomed.etag, false)
        .await
        .expect("an admin deletes");
    assert_eq!(sorted(broken), sorted(names(&using)), "the 5 names");

    for integration in &using {
        let now = get_integration(&app, &p.viewer, &integration.name)
            .await
            .expect("a broken integration is kept");
        assert_eq!(now.state, State::Broken as i32, "{now:?}");
        assert_eq!(now.broken_reason, BrokenReason::InstalledAppDeleted as i32);
        assert!(now.broken_time.is_some(), "broken_time is set: {now:?}");
        assert!(
            now.broken_detail.contains("Ops Slack"),
            "the detail names the deleted app: {:?}",
            now.broken_detail
        );
        assert_eq!(
            now.installed_app, doomed.name,
            "it still names the deleted app"
        );
        assert_ne!(now.etag, integration.etag);
    }
    assert_active(
        &get_integration(&app, &p.viewer, &bystander.name)
            .await
            .unwrap(),
    );
    let own_now = get_integration(&app, &p.viewer, &own.name).await.unwrap();
    assert_active(&own_now);
    assert!(own_now.own_credentials);
    assert_eq!(
        resolve(&app, &p.service, &own.name)
            .await
            .expect("own credentials still resolve")
            .credentials,
        credentials("xoxb-own")
    );
    let status = expect_code(get_app(&app, &p.admin, &doomed.name).await, Code::NotFound);
    assert_eq!(error_reason(&status), "NOT_FOUND");
    assert_eq!(
        get_app(&app, &p.viewer, &other.name)
            .await
            .unwrap()
            .integration_count,
        1
    );

    let events = next_events(&mut stream, 5, WAIT).await;
    assert_eq!(
        sorted(events.iter().map(|e| e.integration_name.clone()).collect()),
        sorted(names(&using)),
        "one event per integration"
    );
    for event in &events {
        assert_eq!(event_type(event), Kind::IntegrationBroken);
        assert_eq!(event.reason, BrokenReason::InstalledAppDeleted as i32);
        assert_eq!(event.installed_app, doomed.name);
        assert_eq!(event.actor, "ada");
        let snapshot = event.integration.as_ref().expect("a snapshot");
        assert_eq!(snapshot.name, event.integration_name);
        assert_eq!(snapshot.state, State::Broken as i32);
        assert!(snapshot.broken_detail.contains("Ops Slack"));
    }
    expect_sentinel_next(&app, &p.erik, &mut stream, &bystander.name).await;
}
storage_test!(deleting_an_installed_app_breaks_every_integration_that_used_it);

async fn integrations_added_while_their_app_is_deleted_end_up_broken_or_refused(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Ops Slack").await;
    let mut created = names(&create_integrations(&app, &p.erik, &slack, "Before", 3).await);
    let mut racing = tokio::task::JoinSet::new();
    for i in 0..20 {
        let mut client = app.integrations.clone();
        let request = authed(&p.erik, integration_request(&slack, &format!("Racing {i}")));
        racing.spawn(async move { client.create_integration(request).await });
    }
    let broken = delete_app(&app, &p.admin, &slack.name, "", false)
        .await
        .expect("delete");
    while let Some(result) = racing.join_next().await {
        match result.expect("create task") {
            Ok(response) => created.push(response.into_inner().name),
            // Too late: the app is gone.
            Err(status) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
        }
    }

    // Every integration that exists used the app, and the delete broke (and named) it: none
    // slipped in after the delete read the app's integrations.
    assert_eq!(sorted(broken), sorted(created.clone()));
    let listed = list_integrations(&app, &p.viewer, "", State::Unspecified).await;
    assert_eq!(sorted(names(&listed.integrations)), sorted(created));
    for integration in &listed.integrations {
        assert_eq!(integration.state, State::Broken as i32, "{integration:?}");
        assert_eq!(integration.installed_app, slack.name);
    }
}
storage_test!(integrations_added_while_their_app_is_deleted_end_up_broken_or_refused);

async fn validate_only_answers_what_would_break_and_changes_nothing(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Ops Slack").await;
    let using = create_integrations(&app, &p.erik, &slack, "Ops job", 5).await;
    let (mut stream, _) = watch_live(&app, &p.viewer).await;

    let would_break = delete_app(&app, &p.admin, &slack.name, &slack.etag, true)
        .await
        .expect("validate_only");
    assert_eq!(sorted(would_break.clone()), sorted(names(&using)));

    let still = get_app(&app, &p.viewer, &slack.name)
        .await
        .expect("the app is still there");
    assert_eq!(still.etag, slack.etag, "the app did not change");
    assert_eq!(still.integration_count, 5);
    for integration in &using {
        let now = get_integration(&app, &p.viewer, &integration.name)
            .await
            .unwrap();
        assert_active(&now);
        assert_eq!(now.etag, integration.etag);
    }
    expect_sentinel_next(&app, &p.erik, &mut stream, &using[0].name).await;

    // The real delete breaks exactly what validate_only announced.
    let broken = delete_app(&app, &p.admin, &slack.name, "", false)
        .await
        .expect("delete");
    assert_eq!(sorted(broken), sorted(would_break));
}
storage_test!(validate_only_answers_what_would_break_and_changes_nothing);

async fn deleting_with_a_stale_etag_is_aborted_and_changes_nothing(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Ops Slack").await;
    let using = create_integrations(&app, &p.erik, &slack, "Ops job", 2).await;
    let renamed = update_app(
        &app,
        &p.dana,
        pb::InstalledApp {
            name: slack.name.clone(),
            display_name: "Ops Slack (renamed)".into(),
            ..Default::default()
        },
        &["display_name"],
        None,
    )
    .await
    .expect("rename");
    assert_ne!(renamed.etag, slack.etag);
    let (mut stream, _) = watch_live(&app, &p.viewer).await;

    let status = expect_code(
        delete_app(&app, &p.admin, &slack.name, &slack.etag, false).await,
        Code::Aborted,
    );
    assert_eq!(error_reason(&status), "ETAG_MISMATCH");

    let still = get_app(&app, &p.viewer, &slack.name)
        .await
        .expect("the app is still there");
    assert_eq!(still.etag, renamed.etag);
    assert_eq!(still.integration_count, 2);
    for integration in &using {
        assert_active(
            &get_integration(&app, &p.viewer, &integration.name)
                .await
                .unwrap(),
        );
    }
    expect_sentinel_next(&app, &p.erik, &mut stream, &using[0].name).await;

    let broken = delete_app(&app, &p.admin, &slack.name, &renamed.etag, false)
        .await
        .expect("the current etag deletes");
    assert_eq!(sorted(broken), sorted(names(&using)));
}
storage_test!(deleting_with_a_stale_etag_is_aborted_and_changes_nothing);

// ---- rule 4: reauthentication brings a broken integration back ----

async fn reauthenticating_onto_another_app_of_the_same_service_restores_it(app: TestApp) {
    let p = people(&app);
    let old = create_app(&app, &p.dana, "slack", "Old Slack").await;
    let integration = create_integration(&app, &p.erik, &old, "Monitor results").await;
    delete_app(&app, &p.admin, &old.name, "", false)
        .await
        .expect("delete");
    let new = create_app_with(&app, &p.dana, "slack", "New Slack", "xoxb-new").await;
    let (mut stream, _) = watch_live(&app, &p.viewer).await;

    let restored = reauthenticate(
        &app,
        &p.erik,
        &integration.name,
        Auth::InstalledApp(new.name.clone()),
    )
    .await
    .expect("reauthenticate onto the new app");
    assert_active(&restored);
    assert_eq!(restored.installed_app, new.name);
    assert!(!restored.own_credentials);
    assert_eq!(
        get_integration(&app, &p.viewer, &integration.name)
            .await
            .unwrap(),
        restored
    );
    assert_eq!(
        get_app(&app, &p.viewer, &new.name)
            .await
            .unwrap()
            .integration_count,
        1
    );
    assert_eq!(
        resolve(&app, &p.service, &integration.name)
            .await
            .expect("resolves again")
            .credentials,
        credentials("xoxb-new")
    );

    let events = next_events(&mut stream, 1, WAIT).await;
    assert_eq!(
        summary(&events),
        vec![(Kind::IntegrationRestored, integration.name.clone())]
    );
    assert_eq!(events[0].installed_app, new.name);
    assert_eq!(events[0].actor, "erik");
    assert_eq!(events[0].integration.as_ref(), Some(&restored));
}
storage_test!(reauthenticating_onto_another_app_of_the_same_service_restores_it);

async fn reauthenticating_onto_an_app_of_another_service_is_a_service_mismatch(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let integration = create_integration(&app, &p.erik, &slack, "Monitor results").await;
    delete_app(&app, &p.admin, &slack.name, "", false)
        .await
        .expect("delete");
    let github = create_app(&app, &p.dana, "github", "GitHub").await;

    let status = expect_code(
        reauthenticate(
            &app,
            &p.erik,
            &integration.name,
            Auth::InstalledApp(github.name.clone()),
        )
        .await,
        Code::FailedPrecondition,
    );
    assert_eq!(error_reason(&status), "SERVICE_MISMATCH");
    let still = get_integration(&app, &p.viewer, &integration.name)
        .await
        .unwrap();
    assert_eq!(still.state, State::Broken as i32);
    assert_eq!(still.installed_app, slack.name);
    assert_eq!(
        get_app(&app, &p.viewer, &github.name)
            .await
            .unwrap()
            .integration_count,
        0
    );
}
storage_test!(reauthenticating_onto_an_app_of_another_service_is_a_service_mismatch);

async fn reauthenticating_with_credentials_of_its_own_restores_it(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let integration = create_integration(&app, &p.erik, &slack, "Monitor results").await;
    delete_app(&app, &p.admin, &slack.name, "", false)
        .await
        .expect("delete");
    let (mut stream, _) = watch_live(&app, &p.viewer).await;

    let restored = reauthenticate(
        &app,
        &p.erik,
        &integration.name,
        Auth::Credentials(pb::Credentials {
            values: credentials("xoxb-erik-own"),
        }),
    )
    .await
    .expect("reauthenticate with own credentials");
    assert_active(&restored);
    assert!(restored.own_credentials);
    assert!(restored.installed_app.is_empty(), "{restored:?}");

    let resolved = resolve(&app, &p.service, &integration.name)
        .await
        .expect("resolves");
    assert_eq!(resolved.credentials, credentials("xoxb-erik-own"));

    let events = next_events(&mut stream, 1, WAIT).await;
    assert_eq!(
        summary(&events),
        vec![(Kind::IntegrationRestored, integration.name.clone())]
    );
    assert_eq!(events[0].integration.as_ref(), Some(&restored));
}
storage_test!(reauthenticating_with_credentials_of_its_own_restores_it);

async fn reauthenticating_an_active_integration_is_a_failed_precondition(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let other = create_app(&app, &p.dana, "slack", "Other Slack").await;
    let integration = create_integration(&app, &p.erik, &slack, "Monitor results").await;

    for auth in [
        Auth::InstalledApp(other.name.clone()),
        Auth::Credentials(pb::Credentials {
            values: credentials("xoxb-own"),
        }),
    ] {
        let status = expect_code(
            reauthenticate(&app, &p.erik, &integration.name, auth).await,
            Code::FailedPrecondition,
        );
        assert_eq!(error_reason(&status), "FAILED_PRECONDITION");
    }
    let still = get_integration(&app, &p.viewer, &integration.name)
        .await
        .unwrap();
    assert_eq!(still, integration, "nothing changed");
}
storage_test!(reauthenticating_an_active_integration_is_a_failed_precondition);

async fn one_call_rebinds_every_integration_broken_by_a_deleted_app(app: TestApp) {
    let p = people(&app);
    let old = create_app(&app, &p.dana, "slack", "Old Slack").await;
    let unrelated = create_app(&app, &p.dana, "slack", "Unrelated Slack").await;
    let using = create_integrations(&app, &p.erik, &old, "Old job", 3).await;
    let unrelated_job = create_integration(&app, &p.erik, &unrelated, "Unrelated job").await;
    delete_app(&app, &p.admin, &old.name, "", false)
        .await
        .expect("delete old");
    delete_app(&app, &p.admin, &unrelated.name, "", false)
        .await
        .expect("delete unrelated");

    // The deleted app's broken integrations can still be found by its name.
    let listed = list_integrations(&app, &p.viewer, &old.name, State::Broken).await;
    assert_eq!(names(&listed.integrations), names(&using));
    for integration in &listed.integrations {
        assert_eq!(integration.installed_app, old.name);
        assert_eq!(
            integration.broken_reason,
            BrokenReason::InstalledAppDeleted as i32
        );
    }

    let replacement = create_app_with(&app, &p.dana, "slack", "New Slack", "xoxb-new").await;
    let (mut stream, _) = watch_live(&app, &p.viewer).await;
    let restored = app
        .integrations
        .clone()
        .reauthenticate_integrations(authed(
            &p.erik,
            pb::ReauthenticateIntegrationsRequest {
                from_installed_app: old.name.clone(),
                to_installed_app: replacement.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("bulk reauthentication")
        .into_inner()
        .integrations;
    assert_eq!(sorted(names(&restored)), sorted(names(&using)));
    for integration in &restored {
        assert_active(integration);
        assert_eq!(integration.installed_app, replacement.name);
        assert_eq!(
            &get_integration(&app, &p.viewer, &integration.name)
                .await
                .unwrap(),
            integration
        );
        assert_eq!(
            resolve(&app, &p.service, &integration.name)
                .await
                .expect("resolves")
                .credentials,
            credentials("xoxb-new")
        );
    }
    assert!(
        list_integrations(&app, &p.viewer, &old.name, State::Broken)
            .await
            .integrations
            .is_empty()
    );
    assert_eq!(
        get_app(&app, &p.viewer, &replacement.name)
            .await
            .unwrap()
            .integration_count,
        3
    );
    let untouched = get_integration(&app, &p.viewer, &unrelated_job.name)
        .await
        .unwrap();
    assert_eq!(untouched.state, State::Broken as i32);
    assert_eq!(untouched.installed_app, unrelated.name);

    let events = next_events(&mut stream, 3, WAIT).await;
    assert_eq!(
        sorted(events.iter().map(|e| e.integration_name.clone()).collect()),
        sorted(names(&using)),
        "one event per integration"
    );
    for event in &events {
        assert_eq!(event_type(event), Kind::IntegrationRestored);
        assert_eq!(event.installed_app, replacement.name);
    }
    expect_sentinel_next(&app, &p.erik, &mut stream, &using[0].name).await;
}
storage_test!(one_call_rebinds_every_integration_broken_by_a_deleted_app);

// ---- rule 5: the admin or the developer who set an app up edits it ----

async fn the_developer_who_set_up_an_app_may_rename_it_and_change_connected_to(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;

    let updated = update_app(
        &app,
        &p.dana,
        pb::InstalledApp {
            name: slack.name.clone(),
            display_name: "Ops Slack".into(),
            connected_to: "acme-ops.slack.com".into(),
            etag: slack.etag.clone(),
            ..Default::default()
        },
        &["display_name", "connected_to"],
        None,
    )
    .await
    .expect("the creator edits");
    assert_eq!(updated.display_name, "Ops Slack");
    assert_eq!(updated.connected_to, "acme-ops.slack.com");
    assert_ne!(updated.etag, slack.etag, "the etag changes");
    assert_eq!(
        get_app(&app, &p.viewer, &slack.name).await.unwrap(),
        updated
    );

    let status = expect_code(
        update_app(
            &app,
            &p.dana,
            pb::InstalledApp {
                name: slack.name.clone(),
                display_name: "Stale".into(),
                etag: slack.etag.clone(),
                ..Default::default()
            },
            &["display_name"],
            None,
        )
        .await,
        Code::Aborted,
    );
    assert_eq!(error_reason(&status), "ETAG_MISMATCH");
    assert_eq!(
        get_app(&app, &p.viewer, &slack.name)
            .await
            .unwrap()
            .display_name,
        "Ops Slack"
    );
}
storage_test!(the_developer_who_set_up_an_app_may_rename_it_and_change_connected_to);

async fn another_developer_may_not_edit_an_app_but_an_admin_may(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let rename = |display_name: &str| pb::InstalledApp {
        name: slack.name.clone(),
        display_name: display_name.into(),
        ..Default::default()
    };

    let status = expect_code(
        update_app(&app, &p.erik, rename("Erik's"), &["display_name"], None).await,
        Code::PermissionDenied,
    );
    assert_eq!(error_reason(&status), "PERMISSION_DENIED");
    expect_code(
        update_app(
            &app,
            &p.erik,
            rename("Erik's"),
            &[],
            Some("xoxb-erik-replacement"),
        )
        .await,
        Code::PermissionDenied,
    );
    expect_code(
        update_app(&app, &p.viewer, rename("Viewer's"), &["display_name"], None).await,
        Code::PermissionDenied,
    );
    assert_eq!(
        get_app(&app, &p.viewer, &slack.name).await.unwrap(),
        slack,
        "unchanged"
    );

    let by_admin = update_app(&app, &p.admin, rename("Admin's"), &["display_name"], None)
        .await
        .expect("an admin edits any app");
    assert_eq!(by_admin.display_name, "Admin's");
    assert_eq!(
        by_admin.creator, "dana",
        "editing does not change who set it up"
    );
    assert_ne!(by_admin.etag, slack.etag);
}
storage_test!(another_developer_may_not_edit_an_app_but_an_admin_may);

async fn new_credentials_bring_back_integrations_broken_by_rejected_credentials(app: TestApp) {
    let p = people(&app);
    let slack = create_app_with(&app, &p.dana, "slack", "Team Slack", "xoxb-old").await;
    let using = create_integrations(&app, &p.erik, &slack, "Job", 2).await;
    let rejected = report_rejected(&app, &p.service, &slack.name, "invalid_auth")
        .await
        .expect("report");
    assert_eq!(rejected.state, pb::installed_app::State::NeedsReauth as i32);
    let (mut stream, _) = watch_live(&app, &p.viewer).await;

    let updated = update_app(
        &app,
        &p.dana,
        pb::InstalledApp {
            name: slack.name.clone(),
            ..Default::default()
        },
        &[],
        Some("xoxb-new"),
    )
    .await
    .expect("re-auth in place");
    assert_eq!(updated.state, pb::installed_app::State::Active as i32);
    assert_ne!(updated.etag, rejected.etag);
    assert_eq!(updated.display_name, "Team Slack");
    assert_eq!(updated.integration_count, 2);

    for integration in &using {
        let now = get_integration(&app, &p.viewer, &integration.name)
            .await
            .unwrap();
        assert_active(&now);
        assert_eq!(now.installed_app, slack.name);
        assert_eq!(
            resolve(&app, &p.service, &integration.name)
                .await
                .expect("resolves")
                .credentials,
            credentials("xoxb-new")
        );
    }
    let events = next_events(&mut stream, 2, WAIT).await;
    assert_eq!(
        sorted(events.iter().map(|e| e.integration_name.clone()).collect()),
        sorted(names(&using))
    );
    for event in &events {
        assert_eq!(event_type(event), Kind::IntegrationRestored);
        assert_eq!(event.installed_app, slack.name);
        assert_eq!(event.actor, "dana");
    }
    expect_sentinel_next(&app, &p.erik, &mut stream, &using[0].name).await;
}
storage_test!(new_credentials_bring_back_integrations_broken_by_rejected_credentials);

// ---- rule 6: a service reports rejected credentials ----

async fn a_reported_rejection_marks_the_app_and_breaks_its_active_integrations(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let other = create_app(&app, &p.dana, "slack", "Other Slack").await;
    let using = create_integrations(&app, &p.erik, &slack, "Job", 3).await;
    let bystander = create_integration(&app, &p.erik, &other, "Other job").await;
    let (mut stream, _) = watch_live(&app, &p.viewer).await;

    let reported = report_rejected(&app, &p.service, &slack.name, "invalid_auth")
        .await
        .expect("a service reports");
    assert_eq!(reported.state, pb::installed_app::State::NeedsReauth as i32);
    assert_eq!(
        get_app(&app, &p.viewer, &slack.name).await.unwrap().state,
        pb::installed_app::State::NeedsReauth as i32
    );
    assert_eq!(
        get_app(&app, &p.viewer, &other.name).await.unwrap().state,
        pb::installed_app::State::Active as i32
    );

    for integration in &using {
        let now = get_integration(&app, &p.viewer, &integration.name)
            .await
            .unwrap();
        assert_eq!(now.state, State::Broken as i32);
        assert_eq!(now.broken_reason, BrokenReason::CredentialsRejected as i32);
        assert!(now.broken_time.is_some());
        assert!(now.broken_detail.contains("Team Slack"), "{now:?}");
        assert_eq!(now.installed_app, slack.name);
        expect_code(
            resolve(&app, &p.service, &integration.name).await,
            Code::FailedPrecondition,
        );
    }
    assert_active(
        &get_integration(&app, &p.viewer, &bystander.name)
            .await
            .unwrap(),
    );

    let events = next_events(&mut stream, 3, WAIT).await;
    assert_eq!(
        sorted(events.iter().map(|e| e.integration_name.clone()).collect()),
        sorted(names(&using))
    );
    for event in &events {
        assert_eq!(event_type(event), Kind::IntegrationBroken);
        assert_eq!(event.reason, BrokenReason::CredentialsRejected as i32);
        assert_eq!(event.installed_app, slack.name);
        assert_eq!(event.actor, "monitor-runner");
    }
    expect_sentinel_next(&app, &p.erik, &mut stream, &bystander.name).await;
}
storage_test!(a_reported_rejection_marks_the_app_and_breaks_its_active_integrations);

async fn only_a_service_may_report_rejected_credentials(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let integration = create_integration(&app, &p.erik, &slack, "Job").await;
    for token in [&p.dana, &p.admin, &p.viewer] {
        expect_code(
            report_rejected(&app, token, &slack.name, "").await,
            Code::PermissionDenied,
        );
    }
    let still = get_app(&app, &p.viewer, &slack.name).await.unwrap();
    assert_eq!(still.state, pb::installed_app::State::Active as i32);
    assert_eq!(still.etag, slack.etag, "unchanged");
    assert_active(
        &get_integration(&app, &p.viewer, &integration.name)
            .await
            .unwrap(),
    );
}
storage_test!(only_a_service_may_report_rejected_credentials);

async fn no_integration_can_be_added_on_an_app_that_needs_reauthentication(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    report_rejected(&app, &p.service, &slack.name, "token_revoked")
        .await
        .expect("report");

    let status = expect_code(
        app.integrations
            .clone()
            .create_integration(authed(&p.erik, integration_request(&slack, "Job")))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(error_reason(&status), "FAILED_PRECONDITION");
    assert!(
        list_integrations(&app, &p.viewer, "", State::Unspecified)
            .await
            .integrations
            .is_empty()
    );
}
storage_test!(no_integration_can_be_added_on_an_app_that_needs_reauthentication);

// ---- integration changes and their events ----

async fn creating_an_integration_appends_an_integration_created_event(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let (mut stream, _) = watch_live(&app, &p.viewer).await;

    let integration = create_integration(&app, &p.erik, &slack, "Monitor results").await;
    let events = next_events(&mut stream, 1, WAIT).await;
    assert_eq!(
        summary(&events),
        vec![(Kind::IntegrationCreated, integration.name.clone())]
    );
    assert_eq!(events[0].installed_app, slack.name);
    assert_eq!(events[0].actor, "erik");
    assert_eq!(events[0].reason, BrokenReason::Unspecified as i32);
    assert!(!events[0].event_id.is_empty());
    assert!(events[0].time.is_some());
    assert_eq!(events[0].integration.as_ref(), Some(&integration));
}
storage_test!(creating_an_integration_appends_an_integration_created_event);

async fn updating_an_integration_changes_its_name_and_config_with_an_event(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let integration = create_integration(&app, &p.erik, &slack, "Monitor results").await;
    let (mut stream, _) = watch_live(&app, &p.viewer).await;

    let config: std::collections::HashMap<String, String> = [
        ("channel", "#alerts"),
        ("monitor_id", "m-2"),
        ("notify_on", "failures"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let updated = app
        .integrations
        .clone()
        .update_integration(authed(
            &p.dana,
            pb::UpdateIntegrationRequest {
                integration: Some(pb::Integration {
                    name: integration.name.clone(),
                    display_name: "Failures to #alerts".into(),
                    config: config.clone(),
                    etag: integration.etag.clone(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into(), "config".into()],
                }),
            },
        ))
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.display_name, "Failures to #alerts");
    assert_eq!(updated.config, config);
    assert_ne!(updated.etag, integration.etag);
    assert_eq!(updated.installed_app, slack.name);
    assert_active(&updated);
    assert_eq!(
        get_integration(&app, &p.viewer, &integration.name)
            .await
            .unwrap(),
        updated
    );

    let events = next_events(&mut stream, 1, WAIT).await;
    assert_eq!(
        summary(&events),
        vec![(Kind::IntegrationUpdated, integration.name.clone())]
    );
    assert_eq!(events[0].actor, "dana");
    assert_eq!(events[0].integration.as_ref(), Some(&updated));
}
storage_test!(updating_an_integration_changes_its_name_and_config_with_an_event);

async fn deleting_an_integration_appends_an_event_and_it_is_gone(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let integration = create_integration(&app, &p.erik, &slack, "Monitor results").await;
    let (mut stream, _) = watch_live(&app, &p.viewer).await;

    app.integrations
        .clone()
        .delete_integration(authed(
            &p.erik,
            pb::DeleteIntegrationRequest {
                name: integration.name.clone(),
                etag: integration.etag.clone(),
            },
        ))
        .await
        .expect("delete");
    expect_code(
        get_integration(&app, &p.viewer, &integration.name).await,
        Code::NotFound,
    );
    assert_eq!(
        get_app(&app, &p.viewer, &slack.name)
            .await
            .unwrap()
            .integration_count,
        0
    );

    let events = next_events(&mut stream, 1, WAIT).await;
    assert_eq!(
        summary(&events),
        vec![(Kind::IntegrationDeleted, integration.name.clone())]
    );
    assert_eq!(events[0].actor, "erik");
    let snapshot = events[0].integration.as_ref().expect("a snapshot");
    assert_eq!(snapshot.name, integration.name);
    assert_eq!(snapshot.display_name, integration.display_name);
}
storage_test!(deleting_an_integration_appends_an_event_and_it_is_gone);
