//! The audit log: every change and every credential resolution is recorded with who, what,
//! how it ended and the request id; refused and failed attempts too; only admins read it,
//! only their own team's, paginated and filtered.

use std::collections::HashSet;

use integration_hub::pb;
use integration_hub::pb::audit_event::Outcome;
use tonic::Code;
use tonic_types::StatusExt;

use crate::fixtures::{
    all_events, app_request, create_app_with, create_integration, create_own_integration,
    credentials, delete_app, rename_app_request, rename_integration, report_rejected, traced,
    update_credentials,
};
use crate::helpers::{TestApp, authed};
use crate::storage_test;

pub const SECRET_A: &str = "xoxb-audit-secret-A";
pub const SECRET_OWN: &str = "xoxb-audit-own-credentials";

fn find<'a>(events: &'a [pb::AuditEvent], action: &str, resource: &str) -> Vec<&'a pb::AuditEvent> {
    events
        .iter()
        .filter(|e| e.action == action && e.resource == resource)
        .collect()
}

async fn every_change_and_resolution_is_audited(mut app: TestApp) {
    let dev = app.token("acme", "developer", "dana");
    let admin = app.token("acme", "admin", "alice");
    let svc = app.token("acme", "service", "deliverer");

    let created = app
        .apps
        .create_installed_app(traced(
            &dev,
            "req-create-app-1",
            app_request("slack", "Slack", SECRET_A),
        ))
        .await
        .expect("create app");
    assert_eq!(
        created
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str().ok()),
        Some(Some("req-create-app-1")),
        "the request id is echoed"
    );
    let a = created.into_inner();
    let i = create_integration(&app, &dev, &a, "Monitor results").await;
    let own = create_own_integration(&app, &dev, "slack", "Monitor results", SECRET_OWN).await;
    rename_integration(&app, &dev, &i.name, "Renamed").await;
    report_rejected(&app, &svc, &a.name, "401")
        .await
        .expect("report rejected");
    app.apps
        .update_installed_app(authed(
            &dev,
            update_credentials(&a.name, credentials("xoxb-audit-new")),
        ))
        .await
        .expect("replace credentials");
    let resolved = app
        .integrations
        .resolve_integration_credentials(traced(
            &svc,
            "req-resolve-1",
            pb::ResolveIntegrationCredentialsRequest {
                name: i.name.clone(),
            },
        ))
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(resolved.credentials["access_token"], "xoxb-audit-new");
    let b = create_app_with(&app, &dev, "slack", "Slack B", "xoxb-audit-B").await;
    delete_app(&app, &admin, &a.name, "", false)
        .await
        .expect("delete app");
    app.integrations
        .reauthenticate_integration(authed(
            &dev,
            pb::ReauthenticateIntegrationRequest {
                name: i.name.clone(),
                auth: Some(pb::reauthenticate_integration_request::Auth::InstalledApp(
                    b.name.clone(),
                )),
            },
        ))
        .await
        .expect("reauthenticate");
    let c = create_app_with(&app, &dev, "slack", "Slack C", "xoxb-audit-C").await;
    delete_app(&app, &admin, &b.name, "", false)
        .await
        .expect("delete app B");
    app.integrations
        .reauthenticate_integrations(authed(
            &dev,
            pb::ReauthenticateIntegrationsRequest {
                from_installed_app: b.name.clone(),
                to_installed_app: c.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("bulk reauthenticate");
    app.integrations
        .delete_integration(authed(
            &dev,
            pb::DeleteIntegrationRequest {
                name: own.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("delete integration");

    let events = all_events(&app, &admin, Default::default()).await;
    let expected = [
        ("installed_app.create", a.name.as_str(), "dana", "developer"),
        ("integration.create", i.name.as_str(), "dana", "developer"),
        ("integration.create", own.name.as_str(), "dana", "developer"),
        ("integration.update", i.name.as_str(), "dana", "developer"),
        (
            "installed_app.report_credentials_rejected",
            a.name.as_str(),
            "deliverer",
            "service",
        ),
        ("installed_app.update", a.name.as_str(), "dana", "developer"),
        (
            "integration.resolve_credentials",
            i.name.as_str(),
            "deliverer",
            "service",
        ),
        ("installed_app.delete", a.name.as_str(), "alice", "admin"),
        (
            "integration.reauthenticate",
            i.name.as_str(),
            "dana",
            "developer",
        ),
        ("installed_app.delete", b.name.as_str(), "alice", "admin"),
        (
            "integration.reauthenticate_bulk",
            b.name.as_str(),
            "dana",
            "developer",
        ),
        ("integration.delete", own.name.as_str(), "dana", "developer"),
    ];
    for (action, resource, actor, role) in expected {
        let found = find(&events, action, resource);
        assert_eq!(found.len(), 1, "{action} {resource}: {events:#?}");
        let event = found[0];
        assert_eq!(event.outcome, Outcome::Success as i32, "{action}");
        assert_eq!(event.actor, actor, "{action}");
        assert_eq!(event.role, role, "{action}");
        assert_eq!(event.actor_team, "acme");
        assert!(event.reason.is_empty());
        assert!(event.name.starts_with("teams/acme/auditEvents/"));
        assert!(event.time.is_some());
        assert!(!event.request_id.is_empty());
    }
    assert_eq!(
        find(&events, "installed_app.create", &a.name)[0].request_id,
        "req-create-app-1"
    );
    assert_eq!(
        find(&events, "integration.resolve_credentials", &i.name)[0].request_id,
        "req-resolve-1"
    );
    // Newest first: the last call is the first event.
    assert_eq!(events[0].action, "integration.delete");
    let ids: HashSet<_> = events.iter().map(|e| e.request_id.clone()).collect();
    assert_eq!(ids.len(), events.len(), "generated request ids are unique");
    let printed = format!("{events:?}");
    for secret in [SECRET_A, SECRET_OWN, "xoxb-audit-new", "xoxb-audit-B"] {
        assert!(
            !printed.contains(secret),
            "a credential value in the audit log"
        );
    }
    app.stop().await;
}
storage_test!(every_change_and_resolution_is_audited);

/// Creates made at once (on PostgreSQL they share statements: `create_batch.rs`): each one
/// answered has exactly one success record, by its own request, and none other is recorded.
async fn concurrent_creates_each_have_one_record_of_their_own(app: TestApp) {
    let dev = app.token("acme", "developer", "dana");
    let admin = app.token("acme", "admin", "alice");
    let slack = create_app_with(&app, &dev, "slack", "Slack", SECRET_A).await;
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..40 {
        let mut client = app.integrations.clone();
        let request = traced(
            &dev,
            &format!("req-concurrent-{i}"),
            crate::fixtures::integration_request(&slack, &format!("Job {i}")),
        );
        creates.spawn(async move {
            let created = client.create_integration(request).await.expect("create");
            (i, created.into_inner().name)
        });
    }
    let mut created = Vec::new();
    while let Some(answer) = creates.join_next().await {
        created.push(answer.expect("task"));
    }
    let records = all_events(
        &app,
        &admin,
        pb::ListAuditEventsRequest {
            parent: "teams/acme".into(),
            action: "integration.create".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(records.len(), 40, "one record per create, no more");
    for (i, name) in &created {
        let of_it = find(&records, "integration.create", name);
        assert_eq!(of_it.len(), 1, "{name}");
        assert_eq!(of_it[0].request_id, format!("req-concurrent-{i}"));
        assert_eq!(of_it[0].outcome, Outcome::Success as i32);
        assert_eq!(of_it[0].actor, "dana");
    }
}
storage_test!(concurrent_creates_each_have_one_record_of_their_own);

async fn refused_and_failed_attempts_are_audited(mut app: TestApp) {
    let dev = app.token("acme", "developer", "dana");
    let omar = app.token("acme", "developer", "omar");
    let admin = app.token("acme", "admin", "alice");
    let svc = app.token("acme", "service", "deliverer");
    let intruder = app.token("other", "developer", "mallory");
    let other_admin = app.token("other", "admin", "olga");
    let a = create_app_with(&app, &dev, "slack", "Slack", SECRET_A).await;
    let i = create_integration(&app, &dev, &a, "Monitor results").await;

    // Refused by the method policy: a developer may not delete an app.
    let err = app
        .apps
        .delete_installed_app(traced(
            &dev,
            "req-denied-delete",
            pb::DeleteInstalledAppRequest {
                name: a.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("a developer cannot delete an app");
    assert_eq!(err.code(), Code::PermissionDenied);
    // Refused by the rule: omar did not set the app up.
    let err = app
        .apps
        .update_installed_app(authed(&omar, rename_app_request(&a.name, "Mine")))
        .await
        .expect_err("only the creator or an admin edits an app");
    assert_eq!(err.code(), Code::PermissionDenied);
    // A wrong etag: nothing changes, and the failure is recorded.
    let err = app
        .apps
        .delete_installed_app(authed(
            &admin,
            pb::DeleteInstalledAppRequest {
                name: a.name.clone(),
                etag: "v999".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("stale etag");
    assert_eq!(err.code(), Code::Aborted);
    let missing_app = "teams/acme/installedApps/nope";
    let err = app
        .apps
        .delete_installed_app(authed(
            &admin,
            pb::DeleteInstalledAppRequest {
                name: missing_app.into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("missing app");
    assert_eq!(err.code(), Code::NotFound);
    // Resolution: missing, refused to a person, then broken.
    let missing_integration = "teams/acme/integrations/nope";
    let err = app
        .integrations
        .resolve_integration_credentials(authed(
            &svc,
            pb::ResolveIntegrationCredentialsRequest {
                name: missing_integration.into(),
            },
        ))
        .await
        .expect_err("missing integration");
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .integrations
        .resolve_integration_credentials(authed(
            &admin,
            pb::ResolveIntegrationCredentialsRequest {
                name: i.name.clone(),
            },
        ))
        .await
        .expect_err("a person cannot resolve");
    assert_eq!(err.code(), Code::PermissionDenied);
    report_rejected(&app, &svc, &a.name, "")
        .await
        .expect("report rejected");
    let err = app
        .integrations
        .resolve_integration_credentials(authed(
            &svc,
            pb::ResolveIntegrationCredentialsRequest {
                name: i.name.clone(),
            },
        ))
        .await
        .expect_err("a broken integration has nothing to resolve");
    assert_eq!(err.code(), Code::FailedPrecondition);
    // Another team's developer probing acme's integration.
    let err = app
        .integrations
        .delete_integration(authed(
            &intruder,
            pb::DeleteIntegrationRequest {
                name: i.name.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("another team's integration");
    assert_eq!(err.code(), Code::NotFound);

    let events = all_events(&app, &admin, Default::default()).await;
    let check = |action: &str, resource: &str, actor: &str, outcome: Outcome, reason: &str| {
        let found: Vec<_> = events
            .iter()
            .filter(|e| {
                e.action == action
                    && e.resource == resource
                    && e.actor == actor
                    && e.outcome == outcome as i32
            })
            .collect();
        assert_eq!(found.len(), 1, "{action} {resource} {actor}: {events:#?}");
        assert_eq!(found[0].reason, reason, "{action}");
        found[0].clone()
    };
    let denied = check(
        "installed_app.delete",
        "",
        "dana",
        Outcome::Denied,
        "PERMISSION_DENIED",
    );
    assert_eq!(denied.request_id, "req-denied-delete");
    assert_eq!(denied.role, "developer");
    check(
        "installed_app.update",
        &a.name,
        "omar",
        Outcome::Denied,
        "PERMISSION_DENIED",
    );
    check(
        "installed_app.delete",
        &a.name,
        "alice",
        Outcome::Failed,
        "ETAG_MISMATCH",
    );
    check(
        "installed_app.delete",
        missing_app,
        "alice",
        Outcome::Failed,
        "NOT_FOUND",
    );
    check(
        "integration.resolve_credentials",
        missing_integration,
        "deliverer",
        Outcome::Failed,
        "NOT_FOUND",
    );
    check(
        "integration.resolve_credentials",
        "",
        "alice",
        Outcome::Denied,
        "PERMISSION_DENIED",
    );
    check(
        "integration.resolve_credentials",
        &i.name,
        "deliverer",
        Outcome::Failed,
        "FAILED_PRECONDITION",
    );
    // The failed delete left no success behind, and the app is still there.
    assert!(
        !events
            .iter()
            .any(|e| e.action == "installed_app.delete" && e.outcome == Outcome::Success as i32)
    );
    app.apps
        .get_installed_app(authed(
            &dev,
            pb::GetInstalledAppRequest {
                name: a.name.clone(),
            },
        ))
        .await
        .expect("the app survived the failed deletes");
    // The probe is in the prober's team's log, not in the target's.
    assert!(!events.iter().any(|e| e.actor == "mallory"));
    let theirs = all_events(&app, &other_admin, Default::default()).await;
    assert_eq!(theirs.len(), 1, "{theirs:#?}");
    assert_eq!(theirs[0].action, "integration.delete");
    assert_eq!(theirs[0].resource, i.name);
    assert_eq!(theirs[0].outcome, Outcome::Denied as i32);
    assert_eq!(theirs[0].reason, "NOT_FOUND");
    assert!(theirs[0].name.starts_with("teams/other/auditEvents/"));
    app.stop().await;
}
storage_test!(refused_and_failed_attempts_are_audited);

async fn only_admins_read_the_audit_log_of_their_own_team(mut app: TestApp) {
    let dev = app.token("acme", "developer", "dana");
    let other_admin = app.token("other", "admin", "olga");
    let admin = app.token("acme", "admin", "alice");
    create_app_with(&app, &dev, "slack", "Slack", SECRET_A).await;
    for role in ["viewer", "developer", "service"] {
        let token = app.token("acme", role, "someone");
        let err = app
            .audit
            .list_audit_events(authed(&token, pb::ListAuditEventsRequest::default()))
            .await
            .expect_err("not an admin");
        assert_eq!(err.code(), Code::PermissionDenied, "{role}");
    }
    for parent in ["teams/acme", "teams/-"] {
        let err = app
            .audit
            .list_audit_events(authed(
                &other_admin,
                pb::ListAuditEventsRequest {
                    parent: parent.into(),
                    ..Default::default()
                },
            ))
            .await
            .expect_err("another team's log");
        assert_eq!(err.code(), Code::PermissionDenied, "{parent}");
    }
    assert!(
        all_events(&app, &other_admin, Default::default())
            .await
            .is_empty()
    );
    let own = all_events(
        &app,
        &admin,
        pb::ListAuditEventsRequest {
            parent: "teams/acme".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(own.len(), 1);
    app.stop().await;
}
storage_test!(only_admins_read_the_audit_log_of_their_own_team);

async fn the_audit_log_pages_and_filters(mut app: TestApp) {
    let dev = app.token("acme", "developer", "dana");
    let omar = app.token("acme", "developer", "omar");
    let admin = app.token("acme", "admin", "alice");
    let mut names = Vec::new();
    for n in 0..5 {
        names.push(
            create_app_with(&app, &dev, "slack", &format!("Slack {n}"), SECRET_A)
                .await
                .name,
        );
    }
    for n in 0..2 {
        create_app_with(&app, &omar, "slack", &format!("Omar {n}"), SECRET_A).await;
    }
    app.apps
        .delete_installed_app(authed(
            &admin,
            pb::DeleteInstalledAppRequest {
                name: names[0].clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("delete");
    let everything = all_events(&app, &admin, Default::default()).await;
    assert_eq!(everything.len(), 8);
    let micros = |e: &pb::AuditEvent| {
        let t = e.time.expect("time");
        t.seconds * 1_000_000 + i64::from(t.nanos / 1000)
    };
    assert!(
        everything
            .windows(2)
            .all(|w| micros(&w[0]) >= micros(&w[1]))
    );

    // Pages of 3: every event once, in the same order.
    let mut paged = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app
            .audit
            .list_audit_events(authed(
                &admin,
                pb::ListAuditEventsRequest {
                    page_size: 3,
                    page_token: token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("page")
            .into_inner();
        pages += 1;
        assert!(page.audit_events.len() <= 3);
        paged.extend(page.audit_events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(
        paged.iter().map(|e| &e.name).collect::<Vec<_>>(),
        everything.iter().map(|e| &e.name).collect::<Vec<_>>()
    );

    // Filters.
    let deletes = all_events(
        &app,
        &admin,
        pb::ListAuditEventsRequest {
            action: "installed_app.delete".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].resource, names[0]);
    let by_omar = all_events(
        &app,
        &admin,
        pb::ListAuditEventsRequest {
            actor: "omar".into(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(by_omar.len(), 2);
    assert!(by_omar.iter().all(|e| e.actor == "omar"));
    // A time range: [start, end) over the recorded times.
    let pivot = everything[3].time.expect("time");
    let pivot_us = micros(&everything[3]);
    let since = all_events(
        &app,
        &admin,
        pb::ListAuditEventsRequest {
            start_time: Some(pivot),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        since.len(),
        everything.iter().filter(|e| micros(e) >= pivot_us).count()
    );
    assert!(since.len() >= 4);
    let before = all_events(
        &app,
        &admin,
        pb::ListAuditEventsRequest {
            end_time: Some(pivot),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(since.len() + before.len(), everything.len());
    let first = everything.last().expect("oldest").time;
    let window = all_events(
        &app,
        &admin,
        pb::ListAuditEventsRequest {
            start_time: first,
            end_time: Some(pivot),
            actor: "dana".into(),
            action: "installed_app.create".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(
        window.iter().all(|e| e.actor == "dana"
            && e.action == "installed_app.create"
            && micros(e) < pivot_us)
    );

    // Bad input: INVALID_ARGUMENT naming the field.
    let first_page = app
        .audit
        .list_audit_events(authed(
            &admin,
            pb::ListAuditEventsRequest {
                page_size: 2,
                ..Default::default()
            },
        ))
        .await
        .expect("page")
        .into_inner();
    let bad_requests = [
        (
            pb::ListAuditEventsRequest {
                page_size: -1,
                ..Default::default()
            },
            "page_size",
        ),
        (
            pb::ListAuditEventsRequest {
                page_token: "garbage".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            pb::ListAuditEventsRequest {
                page_token: first_page.next_page_token.clone(),
                actor: "omar".into(),
                ..Default::default()
            },
            "page_token",
        ),
        (
            pb::ListAuditEventsRequest {
                action: "installed_app.explode".into(),
                ..Default::default()
            },
            "action",
        ),
        (
            pb::ListAuditEventsRequest {
                start_time: Some(pivot),
                end_time: Some(pivot),
                ..Default::default()
            },
            "end_time",
        ),
        (
            pb::ListAuditEventsRequest {
                actor: "x".repeat(257),
                ..Default::default()
            },
            "actor",
        ),
    ];
    for (request, field) in bad_requests {
        let err = app
            .audit
            .list_audit_events(authed(&admin, request))
            .await
            .expect_err("invalid");
        assert_eq!(err.code(), Code::InvalidArgument, "{field}");
        let violations = err
            .get_details_bad_request()
            .expect("BadRequest")
            .field_violations;
        assert_eq!(violations[0].field, field);
    }
    // Too large a page is lowered, not refused.
    app.audit
        .list_audit_events(authed(
            &admin,
            pb::ListAuditEventsRequest {
                page_size: 5000,
                ..Default::default()
            },
        ))
        .await
        .expect("page size clamped");
    app.stop().await;
}
storage_test!(the_audit_log_pages_and_filters);
