//! Rules 5 and 6 of docs/rules.md (editing an app, rejected credentials), on both databases;
//! rules 1 to 4 are in `rules.rs`, whose helpers these tests share.

use integration_hub::pb;
use pb::IntegrationEventType as Kind;
use pb::integration::{BrokenReason, State};
use tonic::Code;

use crate::fixtures::*;
use crate::helpers::{TestApp, authed};
use crate::rules::*;
use crate::storage_test;

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
