//! Admin controls (issue 13), on both databases: suspending and resuming an installed app,
//! handing an app or an integration over to a new owner.

use integration_hub::pb;
use pb::IntegrationEventType as Kind;
use pb::installed_app::State as AppState;
use pb::integration::{BrokenReason, State};
use tonic::Code;

use crate::fixtures::*;
use crate::helpers::{TestApp, authed};
use crate::storage_test;

async fn resume(app: &TestApp, token: &str, name: &str) -> Result<pb::InstalledApp, tonic::Status> {
    app.apps
        .clone()
        .resume_installed_app(authed(
            token,
            pb::ResumeInstalledAppRequest { name: name.into() },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn replace_credentials(app: &TestApp, token: &str, name: &str, secret: &str) {
    app.apps
        .clone()
        .update_installed_app(authed(token, update_credentials(name, credentials(secret))))
        .await
        .unwrap_or_else(|status| panic!("update credentials of {name}: {status:?}"));
}

async fn suspend_breaks_the_apps_integrations_and_resume_restores_them(app: TestApp) {
    let p = people(&app);
    let slack = create_app_with(&app, &p.dana, "slack", "Slack", "xoxb-old-secret").await;
    let other = create_app(&app, &p.dana, "slack", "Other Slack").await;
    let jobs = create_integrations(&app, &p.dana, &slack, "Job", 2).await;
    let bystander = create_integration(&app, &p.dana, &other, "Bystander").await;
    let (mut stream, _) = watch_live(&app, &p.viewer).await;

    for token in [&p.dana, &p.viewer, &p.service] {
        let refused = expect_code(
            suspend(&app, token, &slack.name, "").await,
            Code::PermissionDenied,
        );
        assert_eq!(error_reason(&refused), "PERMISSION_DENIED");
    }

    let suspended = suspend(&app, &p.admin, &slack.name, "the token may have leaked")
        .await
        .expect("an admin suspends the app");
    assert_eq!(suspended.state, AppState::Suspended as i32);
    assert_eq!(suspended.suspension_reason, "the token may have leaked");
    assert_eq!(suspended.integration_count, 2);

    let broken = next_events(&mut stream, 2, WAIT).await;
    assert_eq!(
        sorted(broken.iter().map(|e| e.integration_name.clone()).collect()),
        sorted(names(&jobs))
    );
    for event in &broken {
        assert_eq!(event_type(event), Kind::IntegrationBroken);
        assert_eq!(event.reason, BrokenReason::InstalledAppSuspended as i32);
        assert_eq!(event.installed_app, slack.name);
        assert_eq!(event.actor, "ada");
        let snapshot = event.integration.as_ref().expect("a snapshot");
        assert_eq!(snapshot.state, State::Broken as i32);
        assert!(snapshot.broken_detail.contains("suspended"), "{snapshot:?}");
    }
    for job in &jobs {
        let refused = expect_code(
            resolve(&app, &p.service, &job.name).await,
            Code::FailedPrecondition,
        );
        assert_eq!(error_reason(&refused), "INSTALLED_APP_SUSPENDED");
        assert!(refused.message().contains("suspended"), "{refused:?}");
        assert!(!refused.message().contains("xoxb"), "{refused:?}");
        let got = get_integration(&app, &p.viewer, &job.name).await.unwrap();
        assert_eq!(
            got.broken_reason,
            BrokenReason::InstalledAppSuspended as i32
        );
        assert_eq!(got.installed_app, slack.name, "the binding is kept");
    }
    resolve(&app, &p.service, &bystander.name)
        .await
        .expect("another app's integrations are untouched");

    // Nothing new is bound to a suspended app.
    let refused = expect_code(
        app.integrations
            .clone()
            .create_integration(authed(&p.dana, integration_request(&slack, "New")))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(error_reason(&refused), "INSTALLED_APP_SUSPENDED");
    // Suspending twice is refused.
    expect_code(
        suspend(&app, &p.admin, &slack.name, "").await,
        Code::FailedPrecondition,
    );

    // Its credentials may be replaced meanwhile; that does not resume it.
    replace_credentials(&app, &p.dana, &slack.name, "xoxb-new-secret").await;
    let still = get_app(&app, &p.viewer, &slack.name).await.unwrap();
    assert_eq!(still.state, AppState::Suspended as i32);
    expect_code(
        resolve(&app, &p.service, &jobs[0].name).await,
        Code::FailedPrecondition,
    );
    expect_sentinel_next(&app, &p.dana, &mut stream, &bystander.name).await;

    for token in [&p.dana, &p.viewer, &p.service] {
        expect_code(
            resume(&app, token, &slack.name).await,
            Code::PermissionDenied,
        );
    }
    let resumed = resume(&app, &p.admin, &slack.name)
        .await
        .expect("an admin resumes the app");
    assert_eq!(resumed.state, AppState::Active as i32);
    assert_eq!(resumed.suspension_reason, "");
    let restored = next_events(&mut stream, 2, WAIT).await;
    assert_eq!(
        sorted(
            restored
                .iter()
                .map(|e| e.integration_name.clone())
                .collect()
        ),
        sorted(names(&jobs))
    );
    assert!(
        restored
            .iter()
            .all(|e| event_type(e) == Kind::IntegrationRestored)
    );
    let resolved = resolve(&app, &p.service, &jobs[0].name)
        .await
        .expect("resolved again after the resume");
    assert_eq!(resolved.credentials["access_token"], "xoxb-new-secret");
    expect_code(
        resume(&app, &p.admin, &slack.name).await,
        Code::FailedPrecondition,
    );

    let audited = all_events(
        &app,
        &p.admin,
        pb::ListAuditEventsRequest {
            action: "installed_app.suspend".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(
        audited
            .iter()
            .any(|e| e.actor == "ada" && e.resource == slack.name && e.reason.is_empty()),
        "the suspension is audited: {audited:?}"
    );
    assert!(
        audited.iter().any(|e| e.actor == "dana"),
        "the refused suspension is audited too: {audited:?}"
    );
    let resumes = all_events(
        &app,
        &p.admin,
        pb::ListAuditEventsRequest {
            action: "installed_app.resume".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(
        resumes
            .iter()
            .any(|e| e.actor == "ada" && e.resource == slack.name),
        "the resume is audited: {resumes:?}"
    );
}
storage_test!(suspend_breaks_the_apps_integrations_and_resume_restores_them);

async fn resume_restores_only_what_the_suspension_broke(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Slack").await;
    let jobs = create_integrations(&app, &p.dana, &slack, "Job", 2).await;
    let other = create_app(&app, &p.dana, "slack", "Other Slack").await;
    let sentinel = create_integration(&app, &p.dana, &other, "Sentinel").await;
    report_rejected(&app, &p.service, &slack.name, "401")
        .await
        .expect("report");
    let (mut stream, _) = watch_live(&app, &p.viewer).await;

    // Its integrations are already broken by the rejection: the suspension breaks nothing
    // more, and the resume brings nothing back: the app needs reauthentication still.
    suspend(&app, &p.admin, &slack.name, "").await.unwrap();
    let refused = expect_code(
        report_rejected(&app, &p.service, &slack.name, "401").await,
        Code::FailedPrecondition,
    );
    assert_eq!(error_reason(&refused), "INSTALLED_APP_SUSPENDED");
    let resumed = resume(&app, &p.admin, &slack.name).await.unwrap();
    assert_eq!(resumed.state, AppState::NeedsReauth as i32);
    for job in &jobs {
        let got = get_integration(&app, &p.viewer, &job.name).await.unwrap();
        assert_eq!(got.broken_reason, BrokenReason::CredentialsRejected as i32);
    }
    expect_sentinel_next(&app, &p.dana, &mut stream, &sentinel.name).await;

    // New credentials while suspended: nothing comes back until the resume, and then the
    // integrations their rejection broke come back too.
    suspend(&app, &p.admin, &slack.name, "").await.unwrap();
    replace_credentials(&app, &p.dana, &slack.name, "xoxb-replaced").await;
    expect_sentinel_next(&app, &p.dana, &mut stream, &sentinel.name).await;
    let resumed = resume(&app, &p.admin, &slack.name).await.unwrap();
    assert_eq!(resumed.state, AppState::Active as i32);
    let restored = next_events(&mut stream, 2, WAIT).await;
    assert!(
        restored
            .iter()
            .all(|e| event_type(e) == Kind::IntegrationRestored)
    );
    let resolved = resolve(&app, &p.service, &jobs[1].name).await.unwrap();
    assert_eq!(resolved.credentials["access_token"], "xoxb-replaced");
}
storage_test!(resume_restores_only_what_the_suspension_broke);

async fn transfer_app(
    app: &TestApp,
    token: &str,
    name: &str,
    new_owner: &str,
) -> Result<pb::InstalledApp, tonic::Status> {
    app.apps
        .clone()
        .transfer_installed_app(authed(
            token,
            pb::TransferInstalledAppRequest {
                name: name.into(),
                new_owner: new_owner.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn transfer_integration(
    app: &TestApp,
    token: &str,
    name: &str,
    new_owner: &str,
) -> Result<pb::Integration, tonic::Status> {
    app.integrations
        .clone()
        .transfer_integration(authed(
            token,
            pb::TransferIntegrationRequest {
                name: name.into(),
                new_owner: new_owner.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn rename_app(
    app: &TestApp,
    token: &str,
    name: &str,
    display_name: &str,
) -> Result<pb::InstalledApp, tonic::Status> {
    app.apps
        .clone()
        .update_installed_app(authed(token, rename_app_request(name, display_name)))
        .await
        .map(|r| r.into_inner())
}

async fn an_admin_hands_an_app_and_an_integration_over_to_a_new_owner(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Slack").await;
    assert_eq!(slack.owner, "dana", "the one who sets an app up owns it");
    let job = create_integration(&app, &p.dana, &slack, "Job").await;
    assert_eq!(job.owner, "dana");
    let (mut stream, _) = watch_live(&app, &p.viewer).await;

    for token in [&p.dana, &p.erik, &p.viewer, &p.service] {
        let refused = expect_code(
            transfer_app(&app, token, &slack.name, "erik").await,
            Code::PermissionDenied,
        );
        assert_eq!(error_reason(&refused), "PERMISSION_DENIED");
        expect_code(
            transfer_integration(&app, token, &job.name, "erik").await,
            Code::PermissionDenied,
        );
    }
    assert_invalid(
        transfer_app(&app, &p.admin, &slack.name, "").await,
        "new_owner",
    );
    assert_invalid(
        transfer_integration(&app, &p.admin, &job.name, " ").await,
        "new_owner",
    );
    // Before the hand-over, only the owner (and admins) may edit the app.
    expect_code(
        rename_app(&app, &p.erik, &slack.name, "Erik's").await,
        Code::PermissionDenied,
    );

    let moved = transfer_app(&app, &p.admin, &slack.name, "erik")
        .await
        .expect("an admin hands the app over");
    assert_eq!(moved.owner, "erik");
    assert_eq!(moved.creator, "dana", "who set it up is kept");
    assert_ne!(moved.etag, slack.etag);
    let renamed = rename_app(&app, &p.erik, &slack.name, "Erik's Slack")
        .await
        .expect("the new owner may edit the app");
    assert_eq!(renamed.display_name, "Erik's Slack");
    let refused = expect_code(
        rename_app(&app, &p.dana, &slack.name, "Dana's").await,
        Code::PermissionDenied,
    );
    assert_eq!(error_reason(&refused), "PERMISSION_DENIED");
    let listed = app
        .apps
        .clone()
        .list_installed_apps(authed(&p.viewer, pb::ListInstalledAppsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let shown = listed
        .installed_apps
        .iter()
        .find(|a| a.name == slack.name)
        .expect("listed");
    assert_eq!(
        (shown.owner.as_str(), shown.creator.as_str()),
        ("erik", "dana")
    );

    let handed = transfer_integration(&app, &p.admin, &job.name, "erik")
        .await
        .expect("an admin hands the integration over");
    assert_eq!(
        (handed.owner.as_str(), handed.creator.as_str()),
        ("erik", "dana")
    );
    let updated = next_events(&mut stream, 1, WAIT).await;
    assert_eq!(
        summary(&updated),
        vec![(Kind::IntegrationUpdated, job.name.clone())]
    );
    assert_eq!(updated[0].actor, "ada");
    let snapshot = updated[0].integration.as_ref().expect("a snapshot");
    assert_eq!(snapshot.owner, "erik");
    let got = get_integration(&app, &p.viewer, &job.name).await.unwrap();
    assert_eq!(got.owner, "erik");

    for (action, resource) in [
        ("installed_app.transfer", &slack.name),
        ("integration.transfer", &job.name),
    ] {
        let audited = all_events(
            &app,
            &p.admin,
            pb::ListAuditEventsRequest {
                action: action.into(),
                ..Default::default()
            },
        )
        .await;
        assert!(
            audited
                .iter()
                .any(|e| e.actor == "ada" && &e.resource == resource && e.reason.is_empty()),
            "{action} is audited: {audited:?}"
        );
        assert!(
            audited
                .iter()
                .any(|e| e.actor == "dana" && !e.reason.is_empty()),
            "the refused {action} is audited: {audited:?}"
        );
    }
}
storage_test!(an_admin_hands_an_app_and_an_integration_over_to_a_new_owner);

fn micros(time: &Option<prost_types::Timestamp>) -> i64 {
    let time = time.as_ref().expect("a last use");
    time.seconds * 1_000_000 + i64::from(time.nanos / 1000)
}

async fn resolving_records_the_last_use_at_most_once_a_minute(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Slack").await;
    let job = create_integration(&app, &p.dana, &slack, "Job").await;
    let own = create_own_integration(&app, &p.dana, "slack", "Own", "xoxb-own").await;
    assert_eq!(slack.last_used_time, None, "never used yet");
    assert_eq!(job.last_used_time, None);

    resolve(&app, &p.service, &job.name).await.unwrap();
    let first_app = get_app(&app, &p.viewer, &slack.name).await.unwrap();
    let first_job = get_integration(&app, &p.viewer, &job.name).await.unwrap();
    let used_at = micros(&first_app.last_used_time);
    assert_eq!(micros(&first_job.last_used_time), used_at);
    assert_eq!(
        first_app.etag, slack.etag,
        "a use is not a change of the app"
    );
    assert_eq!(first_job.etag, job.etag, "nor of the integration");

    // A busy integration: many resolutions within the minute write neither record again
    // (each write would store a later time). Bounded by time as well as by count, so a slow
    // machine stays inside the minute the first use opened.
    let busy = std::time::Instant::now();
    let mut resolved = 0;
    while resolved < 1000 && busy.elapsed() < std::time::Duration::from_secs(20) {
        resolve(&app, &p.service, &job.name).await.unwrap();
        resolved += 1;
    }
    assert!(resolved >= 20, "only {resolved} resolutions in 20 s");
    let after_app = get_app(&app, &p.viewer, &slack.name).await.unwrap();
    let after_job = get_integration(&app, &p.viewer, &job.name).await.unwrap();
    assert_eq!(micros(&after_app.last_used_time), used_at);
    assert_eq!(micros(&after_job.last_used_time), used_at);
    assert_eq!(
        (after_app.etag, after_app.update_time),
        (slack.etag.clone(), slack.update_time)
    );
    assert_eq!(after_job.update_time, job.update_time);

    // Own credentials: the integration's use is recorded, no app's.
    resolve(&app, &p.service, &own.name).await.unwrap();
    let own_after = get_integration(&app, &p.viewer, &own.name).await.unwrap();
    assert!(own_after.last_used_time.is_some());
}
storage_test!(resolving_records_the_last_use_at_most_once_a_minute);

async fn list_apps(
    app: &TestApp,
    token: &str,
    request: pb::ListInstalledAppsRequest,
) -> Result<pb::ListInstalledAppsResponse, tonic::Status> {
    app.apps
        .clone()
        .list_installed_apps(authed(token, request))
        .await
        .map(|r| r.into_inner())
}

async fn listed(app: &TestApp, token: &str, request: pb::ListInstalledAppsRequest) -> Vec<String> {
    let page = list_apps(app, token, request).await.expect("list apps");
    sorted(page.installed_apps.into_iter().map(|a| a.name).collect())
}

async fn installed_apps_are_listed_by_service_state_and_last_use(app: TestApp) {
    let p = people(&app);
    let used = create_app(&app, &p.dana, "slack", "Used Slack").await;
    let paused = create_app(&app, &p.dana, "slack", "Paused Slack").await;
    let github = create_app(&app, &p.dana, "github", "GitHub").await;
    let job = create_integration(&app, &p.dana, &used, "Job").await;
    resolve(&app, &p.service, &job.name).await.unwrap();
    suspend(&app, &p.admin, &paused.name, "").await.unwrap();
    let used_at = get_app(&app, &p.viewer, &used.name)
        .await
        .unwrap()
        .last_used_time
        .expect("used");

    let by_service = pb::ListInstalledAppsRequest {
        service: "slack".into(),
        ..Default::default()
    };
    assert_eq!(
        listed(&app, &p.viewer, by_service.clone()).await,
        sorted(vec![used.name.clone(), paused.name.clone()])
    );
    let by_state = pb::ListInstalledAppsRequest {
        state: AppState::Suspended as i32,
        ..Default::default()
    };
    assert_eq!(
        listed(&app, &p.viewer, by_state).await,
        vec![paused.name.clone()]
    );
    let unused_since = |time: prost_types::Timestamp| pb::ListInstalledAppsRequest {
        unused_since: Some(time),
        ..Default::default()
    };
    let never_used = sorted(vec![paused.name.clone(), github.name.clone()]);
    assert_eq!(
        listed(&app, &p.viewer, unused_since(used_at)).await,
        never_used,
        "an app used at that time is not unused since then"
    );
    let later = prost_types::Timestamp {
        seconds: used_at.seconds + 1,
        nanos: used_at.nanos,
    };
    assert_eq!(
        listed(&app, &p.viewer, unused_since(later)).await,
        sorted(vec![
            used.name.clone(),
            paused.name.clone(),
            github.name.clone()
        ])
    );
    let both = pb::ListInstalledAppsRequest {
        service: "slack".into(),
        unused_since: Some(used_at),
        ..Default::default()
    };
    assert_eq!(
        listed(&app, &p.viewer, both).await,
        vec![paused.name.clone()]
    );

    assert_invalid(
        list_apps(
            &app,
            &p.viewer,
            pb::ListInstalledAppsRequest {
                service: "no-such-service".into(),
                ..Default::default()
            },
        )
        .await,
        "service",
    );
    assert_invalid(
        list_apps(
            &app,
            &p.viewer,
            pb::ListInstalledAppsRequest {
                state: 99,
                ..Default::default()
            },
        )
        .await,
        "state",
    );
    // A page token is bound to its filters.
    let first = list_apps(
        &app,
        &p.viewer,
        pb::ListInstalledAppsRequest {
            page_size: 1,
            ..by_service
        },
    )
    .await
    .unwrap();
    assert!(!first.next_page_token.is_empty());
    assert_invalid(
        list_apps(
            &app,
            &p.viewer,
            pb::ListInstalledAppsRequest {
                page_size: 1,
                page_token: first.next_page_token,
                ..Default::default()
            },
        )
        .await,
        "page_token",
    );
}
storage_test!(installed_apps_are_listed_by_service_state_and_last_use);

async fn the_delete_preview_shows_each_integration_with_its_last_use(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Slack").await;
    let used = create_integration(&app, &p.dana, &slack, "Used").await;
    let idle = create_integration(&app, &p.dana, &slack, "Idle").await;
    resolve(&app, &p.service, &used.name).await.unwrap();
    let preview = app
        .apps
        .clone()
        .delete_installed_app(authed(
            &p.admin,
            pb::DeleteInstalledAppRequest {
                name: slack.name.clone(),
                validate_only: true,
                ..Default::default()
            },
        ))
        .await
        .expect("preview")
        .into_inner();
    assert_eq!(
        sorted(preview.broken_integrations.clone()),
        sorted(vec![used.name.clone(), idle.name.clone()])
    );
    let shown = |name: &str| {
        preview
            .integrations
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("{name} in the preview: {preview:?}"))
    };
    assert!(shown(&used.name).last_used_time.is_some());
    assert_eq!(shown(&idle.name).last_used_time, None);
    assert_eq!(shown(&idle.name).owner, "dana");
    assert_eq!(
        shown(&idle.name).state,
        State::Active as i32,
        "a preview changes nothing"
    );
    get_app(&app, &p.viewer, &slack.name)
        .await
        .expect("still there");
}
storage_test!(the_delete_preview_shows_each_integration_with_its_last_use);
