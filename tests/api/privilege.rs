//! Least privilege: service principals narrowed to services, integration types or
//! installed apps (by a role map value or by configuration per subject), and the all-teams
//! value only for the subjects configuration names. Every refusal on both databases.

use integration_hub::pb;
use tonic::Code;

use crate::fixtures::{
    TEAM, create_app, create_integration, error_reason, expect_code, report_rejected, resolve,
    try_watch,
};
use crate::helpers::{Backend, TestApp, TestDb, authed, spawn_with, test_args, token};

/// The test server with a role value limited to Slack and a subject limited to GitHub by
/// configuration.
pub async fn limited_app(backend: Backend) -> TestApp {
    let db = TestDb::new(backend).await;
    let mut args = test_args(&db.url);
    args.auth.role_map = Some(
        "admin=admin,developer=developer,viewer=viewer,service=service,\
         slack_reader=service;services:slack"
            .to_owned(),
    );
    args.auth.service_limits =
        Some("github-bot=services:github;types:github.backup_collections".to_owned());
    spawn_with(backend, db, args).await
}

#[track_caller]
fn assert_outside<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
    let status = expect_code(result, Code::PermissionDenied);
    assert_eq!(error_reason(&status), "OUTSIDE_SERVICE_LIMITS", "{what}");
    assert!(
        status.message().contains("OUTSIDE_SERVICE_LIMITS"),
        "{what}: {status:?}"
    );
}

/// The team's audit records of `action`, newest first.
pub async fn audit_events(app: &TestApp, admin: &str, action: &str) -> Vec<pb::AuditEvent> {
    let request = pb::ListAuditEventsRequest {
        action: action.to_owned(),
        ..Default::default()
    };
    let listed = app
        .audit
        .clone()
        .list_audit_events(authed(admin, request))
        .await;
    listed.expect("list audit events").into_inner().audit_events
}

async fn denied_records(app: &TestApp, admin: &str, action: &str) -> Vec<pb::AuditEvent> {
    let records = audit_events(app, admin, action).await;
    let denied = pb::audit_event::Outcome::Denied as i32;
    records
        .into_iter()
        .filter(|e| e.outcome == denied)
        .collect()
}

async fn a_service_limited_to_slack_is_refused_github_credentials(backend: Backend) {
    let app = limited_app(backend).await;
    let dev = token(TEAM, "developer", "dana");
    let admin = token(TEAM, "admin", "ada");
    let slack_app = create_app(&app, &dev, "slack", "Slack").await;
    let github_app = create_app(&app, &dev, "github", "GitHub").await;
    let slack_job = create_integration(&app, &dev, &slack_app, "Slack job").await;
    let github_job = create_integration(&app, &dev, &github_app, "GitHub job").await;

    // By the role map's value: Slack only. Twice each: the second answer may come from
    // the replica's read cache, which must refuse the same.
    let slack_reader = token(TEAM, "slack_reader", "reporter");
    for _ in 0..2 {
        let resolved = resolve(&app, &slack_reader, &slack_job.name)
            .await
            .expect("slack");
        assert_eq!(resolved.service, "slack");
        assert_outside(
            resolve(&app, &slack_reader, &github_job.name).await,
            "github by claim",
        );
    }
    // By configuration for the subject: GitHub only, whatever its token's value grants.
    let github_bot = token(TEAM, "service", "github-bot");
    resolve(&app, &github_bot, &github_job.name)
        .await
        .expect("github");
    assert_outside(
        resolve(&app, &github_bot, &slack_job.name).await,
        "slack by subject",
    );
    // Both: the narrower of the two (nothing in common here).
    let both = token(TEAM, "slack_reader", "github-bot");
    assert_outside(resolve(&app, &both, &slack_job.name).await, "slack by both");
    assert_outside(
        resolve(&app, &both, &github_job.name).await,
        "github by both",
    );
    // An unlimited service resolves both.
    let svc = token(TEAM, "service", "svc");
    resolve(&app, &svc, &slack_job.name)
        .await
        .expect("unlimited slack");
    resolve(&app, &svc, &github_job.name)
        .await
        .expect("unlimited github");

    // Reporting on an app beyond its reach is refused too, and changes nothing.
    assert_outside(
        report_rejected(&app, &slack_reader, &github_app.name, "401").await,
        "report on github",
    );

    // Watches and webhook reads cover every service of the team: refused to a limited one.
    assert_outside(try_watch(&app, &slack_reader, "", &[]).await, "watch");
    let apps_watch = app
        .apps
        .clone()
        .watch_installed_app_events(authed(
            &slack_reader,
            pb::WatchInstalledAppEventsRequest::default(),
        ))
        .await;
    assert_outside(apps_watch, "watch apps");
    let webhooks = pb::webhook_service_client::WebhookServiceClient::new(app.channel.clone());
    let listed = webhooks
        .clone()
        .list_webhook_subscriptions(authed(
            &github_bot,
            pb::ListWebhookSubscriptionsRequest::default(),
        ))
        .await;
    assert_outside(listed, "webhook list");
    let got = webhooks
        .clone()
        .get_webhook_subscription(authed(
            &github_bot,
            pb::GetWebhookSubscriptionRequest {
                name: format!("teams/{TEAM}/webhookSubscriptions/nope"),
            },
        ))
        .await;
    assert_outside(got, "webhook get");
    try_watch(&app, &svc, "", &[])
        .await
        .expect("an unlimited service watches");
    webhooks
        .clone()
        .list_webhook_subscriptions(authed(&svc, pb::ListWebhookSubscriptionsRequest::default()))
        .await
        .expect("an unlimited service lists webhooks");

    // Every refusal is in the team's audit log with the resource attempted.
    let resolves = denied_records(&app, &admin, "integration.resolve_credentials").await;
    let attempted: Vec<_> = resolves.iter().map(|e| e.resource.as_str()).collect();
    assert!(
        attempted.contains(&github_job.name.as_str()),
        "{attempted:?}"
    );
    assert!(
        attempted.contains(&slack_job.name.as_str()),
        "{attempted:?}"
    );
    assert!(
        resolves
            .iter()
            .all(|e| e.reason == "OUTSIDE_SERVICE_LIMITS"),
        "{resolves:?}"
    );
    let by_reporter: Vec<_> = resolves.iter().filter(|e| e.actor == "reporter").collect();
    assert_eq!(
        by_reporter.len(),
        2,
        "each refused resolution is recorded: {resolves:?}"
    );
    let watches = denied_records(&app, &admin, "integration.watch").await;
    assert_eq!(watches.len(), 1, "{watches:?}");
    assert_eq!(watches[0].resource, format!("teams/{TEAM}"));
    let lists = denied_records(&app, &admin, "webhook.list").await;
    assert_eq!(
        lists[0].resource,
        format!("teams/{TEAM}/webhookSubscriptions")
    );
    let gets = denied_records(&app, &admin, "webhook.get").await;
    assert_eq!(
        gets[0].resource,
        format!("teams/{TEAM}/webhookSubscriptions/nope")
    );
    let reports = denied_records(&app, &admin, "installed_app.report_credentials_rejected").await;
    assert_eq!(reports[0].resource, github_app.name);
    // The app beyond its reach was not touched.
    let after = app
        .apps
        .clone()
        .get_installed_app(authed(
            &dev,
            pb::GetInstalledAppRequest {
                name: github_app.name.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(after.state, github_app.state);
}
crate::storage_test!(backend a_service_limited_to_slack_is_refused_github_credentials);

async fn every_team_only_for_the_subjects_configuration_names(app: TestApp) {
    let dev = token(TEAM, "developer", "dana");
    let slack_app = create_app(&app, &dev, "slack", "Slack").await;
    let job = create_integration(&app, &dev, &slack_app, "Slack job").await;
    let named = token("*", "service", "worker");
    resolve(&app, &named, &job.name)
        .await
        .expect("the configured all-teams subject");
    for subject in ["stranger", "Worker", "worker "] {
        let other = token("*", "service", subject);
        let status = expect_code(
            resolve(&app, &other, &job.name).await,
            Code::Unauthenticated,
        );
        assert_eq!(error_reason(&status), "UNAUTHENTICATED", "{subject:?}");
        // The same subject for one team is an ordinary service.
        resolve(&app, &token(TEAM, "service", subject), &job.name)
            .await
            .expect("a one-team service");
    }
}
crate::storage_test!(every_team_only_for_the_subjects_configuration_names);

/// A token with a `groups` claim (the server under test reads groups from it).
fn token_with_groups(role: &str, subject: &str, groups: &[&str]) -> String {
    use crate::helpers::{TEST_AUDIENCE, TEST_ISSUER, TEST_SECRET};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "sub": subject, "iss": TEST_ISSUER, "aud": TEST_AUDIENCE, "iat": now, "exp": now + 600,
        "team_id": TEAM, "roles": [role], "groups": groups,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .expect("sign")
}

async fn set_usable_by(
    app: &TestApp,
    token: &str,
    name: &str,
    subjects: &[&str],
    groups: &[&str],
    validate_only: bool,
) -> Result<pb::SetInstalledAppUsableByResponse, tonic::Status> {
    pb::access_service_client::AccessServiceClient::new(app.channel.clone())
        .set_installed_app_usable_by(authed(
            token,
            pb::SetInstalledAppUsableByRequest {
                name: name.to_owned(),
                subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
                groups: groups.iter().map(|s| (*s).to_owned()).collect(),
                validate_only,
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner())
}

#[track_caller]
fn assert_not_usable<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) {
    let status = expect_code(result, Code::PermissionDenied);
    assert_eq!(error_reason(&status), "INSTALLED_APP_NOT_USABLE", "{what}");
}

async fn an_app_usable_by_one_person(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut args = test_args(&db.url);
    args.auth.groups_claim = Some("groups".to_owned());
    let app = spawn_with(backend, db, args).await;
    let dana = token(TEAM, "developer", "dana");
    let dora = token(TEAM, "developer", "dora");
    let admin = token(TEAM, "admin", "ada");
    let gina = token_with_groups("developer", "gina", &["payments"]);
    let svc = token(TEAM, "service", "svc");
    let slack = create_app(&app, &dana, "slack", "Dana's Slack").await;
    let spare = create_app(&app, &dora, "slack", "Dora's Slack").await;
    let doras_job = create_integration(&app, &dora, &slack, "Dora's job").await;
    let doras_other = create_integration(&app, &dora, &spare, "Dora's other job").await;
    // Neither would lose access: Dana stays named, and Erin builds on another app only.
    create_integration(&app, &dana, &slack, "Dana's job").await;
    let erin = token(TEAM, "developer", "erin");
    create_integration(&app, &erin, &spare, "Erin's job").await;

    // The preview names who would lose access and changes nothing.
    let preview = set_usable_by(&app, &dana, &slack.name, &["dana"], &["payments"], true)
        .await
        .expect("preview");
    assert_eq!(preview.losing_access, ["dora"]);
    let now = preview.installed_app.expect("app");
    assert!(now.usable_by_subjects.is_empty() && now.usable_by_groups.is_empty());
    // Only its owner or an admin may change it.
    let refused = set_usable_by(&app, &dora, &slack.name, &["dora"], &[], false).await;
    assert_eq!(
        error_reason(&expect_code(refused, Code::PermissionDenied)),
        "PERMISSION_DENIED"
    );
    let set = set_usable_by(&app, &dana, &slack.name, &["dana"], &["payments"], false)
        .await
        .expect("set")
        .installed_app
        .expect("app");
    assert_eq!(set.usable_by_subjects, ["dana"]);
    assert_eq!(set.usable_by_groups, ["payments"]);
    assert_ne!(set.etag, now.etag, "a change of usable_by is a new version");

    // Dora may no longer build on it: create, reauthenticate onto it, move onto it.
    let mut integrations = app.integrations.clone();
    let create = integrations
        .create_integration(authed(
            &dora,
            crate::fixtures::integration_request(&slack, "New"),
        ))
        .await;
    assert_not_usable(create, "create");
    report_rejected(&app, &svc, &spare.name, "401")
        .await
        .expect("break dora's other job");
    let onto = integrations
        .reauthenticate_integration(authed(
            &dora,
            pb::ReauthenticateIntegrationRequest {
                name: doras_other.name.clone(),
                auth: Some(pb::reauthenticate_integration_request::Auth::InstalledApp(
                    slack.name.clone(),
                )),
            },
        ))
        .await;
    assert_not_usable(onto, "reauthenticate onto it");
    let moved = integrations
        .reauthenticate_integrations(authed(
            &dora,
            pb::ReauthenticateIntegrationsRequest {
                parent: String::new(),
                from_installed_app: spare.name.clone(),
                to_installed_app: slack.name.clone(),
            },
        ))
        .await;
    assert_not_usable(moved, "move onto it");

    // She still sees it listed, with who may use it.
    let listed = crate::fixtures::all_apps(&app, &dora).await;
    let seen = listed
        .iter()
        .find(|a| a.name == slack.name)
        .expect("listed");
    assert_eq!(seen.usable_by_subjects, ["dana"]);
    // What she built before keeps working (README: integrations are not broken).
    let resolved = resolve(&app, &svc, &doras_job.name)
        .await
        .expect("still resolves");
    assert_eq!(
        resolved.integration.expect("integration").state,
        pb::integration::State::Active as i32
    );

    // Dana, a member of the group, and an admin may.
    for (who, token) in [("dana", &dana), ("gina", &gina), ("admin", &admin)] {
        integrations
            .create_integration(authed(
                token,
                crate::fixtures::integration_request(&slack, who),
            ))
            .await
            .unwrap_or_else(|e| panic!("{who} builds on it: {e:?}"));
    }
    // The refusals are audited with their reason; the change itself too.
    let creates = denied_records(&app, &admin, "integration.create").await;
    assert!(
        creates
            .iter()
            .any(|e| e.actor == "dora" && e.reason == "INSTALLED_APP_NOT_USABLE")
    );
    let changes = audit_events(&app, &admin, "installed_app.set_usable_by").await;
    assert_eq!(changes.len(), 2, "one success, one denial: {changes:?}");

    // Unset: everyone again.
    set_usable_by(&app, &dana, &slack.name, &[], &[], false)
        .await
        .expect("unset");
    create_integration(&app, &dora, &slack, "Dora again").await;
}
crate::storage_test!(backend an_app_usable_by_one_person);

async fn lists_filter_by_owner_and_creator(app: TestApp) {
    let dana = token(TEAM, "developer", "dana");
    let dora = token(TEAM, "developer", "dora");
    let admin = token(TEAM, "admin", "ada");
    let danas = create_app(&app, &dana, "slack", "Dana's").await;
    let doras = create_app(&app, &dora, "slack", "Dora's").await;
    let by_dana = create_integration(&app, &dana, &doras, "Dana's job").await;
    create_integration(&app, &dora, &danas, "Dora's job").await;
    // Handed over: dora owns what dana created.
    app.integrations
        .clone()
        .transfer_integration(authed(
            &admin,
            pb::TransferIntegrationRequest {
                name: by_dana.name.clone(),
                new_owner: "dora".into(),
            },
        ))
        .await
        .expect("transfer");
    let apps = |owner: &str, creator: &str| {
        let mut client = app.apps.clone();
        let request = authed(
            &admin,
            pb::ListInstalledAppsRequest {
                owner: owner.into(),
                creator: creator.into(),
                ..Default::default()
            },
        );
        async move {
            let listed = client
                .list_installed_apps(request)
                .await
                .expect("list apps");
            let names: Vec<String> = listed
                .into_inner()
                .installed_apps
                .into_iter()
                .map(|a| a.display_name)
                .collect();
            names
        }
    };
    assert_eq!(apps("dana", "").await, ["Dana's"]);
    assert_eq!(apps("", "dora").await, ["Dora's"]);
    assert!(apps("dana", "dora").await.is_empty());
    let integrations = |owner: &str, creator: &str| {
        let mut client = app.integrations.clone();
        let request = authed(
            &admin,
            pb::ListIntegrationsRequest {
                owner: owner.into(),
                creator: creator.into(),
                ..Default::default()
            },
        );
        async move {
            let listed = client
                .list_integrations(request)
                .await
                .expect("list integrations");
            let mut names: Vec<String> = listed
                .into_inner()
                .integrations
                .into_iter()
                .map(|i| i.display_name)
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(integrations("dora", "").await, ["Dana's job", "Dora's job"]);
    assert_eq!(integrations("", "dana").await, ["Dana's job"]);
    assert!(integrations("dana", "").await.is_empty());
    // A filter is bounded like an owner.
    let long = app
        .apps
        .clone()
        .list_installed_apps(authed(
            &admin,
            pb::ListInstalledAppsRequest {
                owner: "x".repeat(201),
                ..Default::default()
            },
        ))
        .await;
    expect_code(long, Code::InvalidArgument);
}
crate::storage_test!(lists_filter_by_owner_and_creator);

async fn set_policy(
    app: &TestApp,
    token: &str,
    service: &str,
    policy: pb::ServicePolicy,
    validate_only: bool,
) -> Result<pb::SetServicePolicyResponse, tonic::Status> {
    pb::access_service_client::AccessServiceClient::new(app.channel.clone())
        .set_service_policy(authed(
            token,
            pb::SetServicePolicyRequest {
                service: service.into(),
                policy: policy as i32,
                validate_only,
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner())
}

#[track_caller]
fn assert_precondition<T: std::fmt::Debug>(result: Result<T, tonic::Status>, reason: &str) {
    let status = expect_code(result, Code::FailedPrecondition);
    assert_eq!(error_reason(&status), reason, "{status:?}");
}

async fn a_team_blocks_a_service_and_requires_approval_for_another(app: TestApp) {
    use pb::ServicePolicy::{Allowed, ApprovalRequired, Blocked};
    let dana = token(TEAM, "developer", "dana");
    let admin = token(TEAM, "admin", "ada");
    let github = create_app(&app, &dana, "github", "GitHub").await;
    let job = create_integration(&app, &dana, &github, "Backup").await;
    let slack = create_app(&app, &dana, "slack", "Slack").await;
    let mut apps = app.apps.clone();
    let get = async |name: &str| {
        crate::fixtures::get_app(&app, &admin, name)
            .await
            .expect("app")
    };

    let refused = set_policy(&app, &dana, "github", Blocked, false).await;
    expect_code(refused, Code::PermissionDenied);
    let unknown = set_policy(&app, &admin, "nope", Blocked, false).await;
    expect_code(unknown, Code::InvalidArgument);
    // The preview names what a block suspends and changes nothing.
    let preview = set_policy(&app, &admin, "github", Blocked, true)
        .await
        .expect("preview");
    assert_eq!(
        preview.suspended_installed_apps,
        std::slice::from_ref(&github.name)
    );
    assert_eq!(
        get(&github.name).await.state,
        pb::installed_app::State::Active as i32
    );
    let blocked = set_policy(&app, &admin, "github", Blocked, false)
        .await
        .expect("block");
    assert_eq!(
        blocked.suspended_installed_apps,
        std::slice::from_ref(&github.name)
    );
    // Suspended by the suspension rule: the app and what used it.
    assert_eq!(
        get(&github.name).await.state,
        pb::installed_app::State::Suspended as i32
    );
    let broken = crate::fixtures::get_integration(&app, &admin, &job.name)
        .await
        .expect("job");
    assert_eq!(broken.state, pb::integration::State::Broken as i32);
    assert_eq!(
        get(&slack.name).await.state,
        pb::installed_app::State::Active as i32
    );
    for who in [&dana, &admin] {
        let create = apps
            .create_installed_app(authed(
                who,
                crate::fixtures::app_request("github", "Again", "x"),
            ))
            .await;
        assert_precondition(create, "SERVICE_BLOCKED");
    }

    // Approval required: a developer is refused; an admin's install is its own approval.
    set_policy(&app, &admin, "slack", ApprovalRequired, false)
        .await
        .expect("approval");
    let create = apps
        .create_installed_app(authed(
            &dana,
            crate::fixtures::app_request("slack", "Mine", "x"),
        ))
        .await;
    assert_precondition(create, "APPROVAL_REQUIRED");
    let approved = create_app(&app, &admin, "slack", "Approved Slack").await;
    create_integration(&app, &dana, &approved, "Dana builds on it").await;
    installation_requests(&app).await;
    // Apps installed before stay as they were.
    assert_eq!(
        get(&slack.name).await.state,
        pb::installed_app::State::Active as i32
    );
    set_policy(&app, &admin, "slack", Allowed, false)
        .await
        .expect("allowed");
    create_app(&app, &dana, "slack", "Mine").await;

    // Refused installs are in the audit log, as failed with their reason.
    let records = audit_events(&app, &admin, "installed_app.create").await;
    let reasons: Vec<&str> = records.iter().map(|e| e.reason.as_str()).collect();
    assert!(
        reasons.contains(&"SERVICE_BLOCKED") && reasons.contains(&"APPROVAL_REQUIRED"),
        "{reasons:?}"
    );
}
crate::storage_test!(a_team_blocks_a_service_and_requires_approval_for_another);

fn access_client(
    app: &TestApp,
) -> pb::access_service_client::AccessServiceClient<tonic::transport::Channel> {
    pb::access_service_client::AccessServiceClient::new(app.channel.clone())
}

async fn request_installation(
    app: &TestApp,
    token: &str,
    service: &str,
) -> Result<pb::InstallationRequest, tonic::Status> {
    let request = pb::RequestInstallationRequest {
        service: service.into(),
        reason: "alerts for the on-call channel".into(),
        ..Default::default()
    };
    (access_client(app)
        .request_installation(authed(token, request))
        .await)
        .map(|r| r.into_inner())
}

async fn requests_in(app: &TestApp, token: &str) -> Vec<(String, i32)> {
    let listed = access_client(app)
        .list_installation_requests(authed(
            token,
            pb::ListInstallationRequestsRequest::default(),
        ))
        .await
        .expect("list requests")
        .into_inner()
        .installation_requests;
    listed.into_iter().map(|r| (r.requester, r.state)).collect()
}

/// Slack requires approval here (and GitHub is blocked): requested, approved, installed once.
async fn installation_requests(app: &TestApp) {
    use pb::installation_request::State;
    let dana = token(TEAM, "developer", "dana");
    let dora = token(TEAM, "developer", "dora");
    let erin = token(TEAM, "developer", "erin");
    let admin = token(TEAM, "admin", "ada");
    let made = request_installation(app, &dana, "slack")
        .await
        .expect("request");
    assert_eq!(
        (made.state, made.requester.as_str()),
        (State::Pending as i32, "dana")
    );
    expect_code(
        request_installation(app, &dana, "slack").await,
        Code::AlreadyExists,
    );
    assert_precondition(
        request_installation(app, &dana, "github").await,
        "SERVICE_BLOCKED",
    );
    assert_precondition(
        request_installation(app, &dana, "datadog").await,
        "FAILED_PRECONDITION",
    );
    let apps = app.apps.clone();
    let create = async |who: &str| {
        apps.clone()
            .create_installed_app(authed(
                who,
                crate::fixtures::app_request("slack", "Asked", "x"),
            ))
            .await
    };
    assert_precondition(create(&dana).await, "APPROVAL_REQUIRED");
    let approve = pb::ApproveInstallationRequestRequest {
        name: made.name.clone(),
    };
    let by_dana = access_client(app)
        .approve_installation_request(authed(&dana, approve.clone()))
        .await;
    expect_code(by_dana, Code::PermissionDenied);
    let approved = access_client(app)
        .approve_installation_request(authed(&admin, approve.clone()))
        .await
        .expect("approve")
        .into_inner();
    assert_eq!(
        (approved.state, approved.decided_by.as_str()),
        (State::Approved as i32, "ada")
    );
    let twice = access_client(app)
        .approve_installation_request(authed(&admin, approve))
        .await;
    assert_precondition(twice, "FAILED_PRECONDITION");
    create(&dana).await.expect("installed once approved");
    assert_precondition(create(&dana).await, "APPROVAL_REQUIRED");
    // Denied: nothing to install with.
    let asked = request_installation(app, &dora, "slack")
        .await
        .expect("dora asks");
    let deny = pb::DenyInstallationRequestRequest {
        name: asked.name,
        reason: "we have one".into(),
    };
    let denied = access_client(app)
        .deny_installation_request(authed(&admin, deny))
        .await
        .expect("deny")
        .into_inner();
    assert_eq!(
        (denied.state, denied.decision.as_str()),
        (State::Denied as i32, "we have one")
    );
    assert_precondition(create(&dora).await, "APPROVAL_REQUIRED");
    // Deprovisioning cancels what the person asked.
    request_installation(app, &erin, "slack")
        .await
        .expect("erin asks");
    let gone = access_client(app)
        .deprovision_person(authed(
            &admin,
            pb::DeprovisionPersonRequest {
                subject: "erin".into(),
                successor: "ada".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("deprovision")
        .into_inner();
    assert_eq!(gone.cancelled_request_count, 1);
    let states = requests_in(app, &dana).await;
    assert_eq!(
        states,
        [
            ("erin".to_owned(), State::Cancelled as i32),
            ("dora".to_owned(), State::Denied as i32),
            ("dana".to_owned(), State::Used as i32),
        ]
    );
    let audited = async |action: &str| audit_events(app, &admin, action).await.len();
    assert_eq!(
        audited("installation_request.create").await,
        6,
        "3 made, 3 refused"
    );
    assert_eq!(
        audited("installation_request.approve").await,
        3,
        "1 made, 2 refused"
    );
    assert_eq!(audited("installation_request.deny").await, 1);
}

crate::webhooks::webhook_test!(installation_requests_are_webhook_events);
/// Each step of an installation request is an event a webhook subscription receives
/// (webhook-only types): made, approved, denied, and cancelled by deprovisioning, whose
/// preview counts what it would cancel.
async fn installation_requests_are_webhook_events(app: TestApp) {
    use crate::webhook_receiver::Receiver;
    use crate::webhooks::{next_acknowledged, subscribe};
    let admin = token(TEAM, "admin", "ada");
    let dana = token(TEAM, "developer", "dana");
    let dora = token(TEAM, "developer", "dora");
    let erin = token(TEAM, "developer", "erin");
    let mut receiver = Receiver::start(&[]);
    let types = [
        "INSTALLATION_REQUEST_CREATED",
        "INSTALLATION_REQUEST_APPROVED",
        "INSTALLATION_REQUEST_DENIED",
        "INSTALLATION_REQUEST_CANCELLED",
    ];
    let (_, secret) = subscribe(&app.channel, &admin, &receiver.url(), &types).await;
    receiver.verify_with(&[&secret]);
    let approval = pb::ServicePolicy::ApprovalRequired;
    set_policy(&app, &admin, "slack", approval, false)
        .await
        .expect("approval");

    let made = request_installation(&app, &dana, "slack")
        .await
        .expect("dana asks");
    (access_client(&app)
        .approve_installation_request(authed(
            &admin,
            pb::ApproveInstallationRequestRequest {
                name: made.name.clone(),
            },
        ))
        .await)
        .expect("approve");
    let asked = request_installation(&app, &dora, "slack")
        .await
        .expect("dora asks");
    (access_client(&app)
        .deny_installation_request(authed(
            &admin,
            pb::DenyInstallationRequestRequest {
                name: asked.name.clone(),
                reason: "we have one".into(),
            },
        ))
        .await)
        .expect("deny");
    let left = request_installation(&app, &erin, "slack")
        .await
        .expect("erin asks");
    let deprovision = |validate_only| pb::DeprovisionPersonRequest {
        subject: "erin".into(),
        successor: "ada".into(),
        validate_only,
        ..Default::default()
    };
    // The preview counts the request it would cancel, and cancels nothing.
    let preview = access_client(&app)
        .deprovision_person(authed(&admin, deprovision(true)))
        .await
        .expect("preview")
        .into_inner();
    assert_eq!(preview.cancelled_request_count, 1);
    let pending = requests_in(&app, &admin).await;
    assert_eq!(
        pending.first(),
        Some(&(
            "erin".to_owned(),
            pb::installation_request::State::Pending as i32
        ))
    );
    let gone = access_client(&app)
        .deprovision_person(authed(&admin, deprovision(false)))
        .await
        .expect("deprovision")
        .into_inner();
    assert_eq!(gone.cancelled_request_count, 1);

    let expected = [
        ("CREATED", &made.name, "PENDING", "dana"),
        ("APPROVED", &made.name, "APPROVED", "ada"),
        ("CREATED", &asked.name, "PENDING", "dora"),
        ("DENIED", &asked.name, "DENIED", "ada"),
        ("CREATED", &left.name, "PENDING", "erin"),
        ("CANCELLED", &left.name, "CANCELLED", "ada"),
    ];
    for (step, name, state, actor) in expected {
        let kind = format!("INSTALLATION_REQUEST_{step}");
        let request = next_acknowledged(&mut receiver).await;
        assert_eq!(request["verified"], serde_json::json!([true]), "{request}");
        let body = &request["body"];
        assert_eq!(body["type"], kind, "{body}");
        let data = &body["data"];
        assert_eq!(data["actor"], actor, "{body}");
        let seen = &data["installationRequest"];
        assert_eq!(
            (&seen["name"], &seen["state"], &seen["service"]),
            (
                &serde_json::json!(name),
                &serde_json::json!(state),
                &serde_json::json!("slack")
            ),
            "{body}"
        );
    }
}

/// Adds `count` copies of row `id` of `table` (installed_apps or integrations) with SQL, each
/// with its own id and display name and the row's `copied` columns, as a team that grew for
/// years would hold them (test seeding only).
async fn seed_copies(app: &TestApp, table: &str, id: &str, count: usize, copied: &[&str]) {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(app.db.url.as_str())
        .await
        .expect("connect");
    let columns = copied.join(", ");
    let values: Vec<String> = copied.iter().map(|c| format!("a.{c}")).collect();
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
         INSERT INTO {table} (id, display_name, version, create_time, update_time, {columns}) \
         SELECT 'seed' || n.i, 'Seeded ' || n.i, 1, a.create_time + n.i, a.update_time + n.i, \
           {values} FROM n, {table} a WHERE a.id = '{id}'",
        values = values.join(", "),
    );
    db.execute_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("seed copies");
    let _ = db.close().await;
}

/// An admin's TransferOwnership of `from`'s apps and integrations to "frank".
async fn hand_over(
    app: &TestApp,
    admin: &str,
    from: &str,
    validate_only: bool,
) -> Result<pb::TransferOwnershipResponse, tonic::Status> {
    let request = crate::offboarding::transfer(from, "frank", validate_only);
    (access_client(app)
        .transfer_ownership(authed(admin, request))
        .await)
        .map(|r| r.into_inner())
}

/// The id at the end of a resource name.
fn id_of(name: &str) -> String {
    name.rsplit('/').next().expect("id").to_owned()
}

/// A block suspends at most 5,000 apps in its one transaction, and a hand-over moves at most
/// 5,000 apps: past that both are refused as RESOURCE_EXHAUSTED, preview and call alike, and
/// change nothing (no app left active under a block it half applied). At exactly 5,000 the
/// previews name them all.
async fn a_block_or_hand_over_past_5000_apps_is_refused_whole(app: TestApp) {
    use pb::ServicePolicy::Blocked;
    let dana = token(TEAM, "developer", "dana");
    let admin = token(TEAM, "admin", "ada");
    let first = create_app(&app, &dana, "github", "GitHub").await;
    let copied = [
        "team",
        "service",
        "connected_to",
        "creator",
        "owner",
        "state",
        "credentials",
        "key_version",
        "usable_by",
        "reauthorization_recommended",
    ];
    seed_copies(&app, "installed_apps", &id_of(&first.name), 4_999, &copied).await;

    // 5,000 apps of the service, all owned by dana: the previews name every one.
    let preview = set_policy(&app, &admin, "github", Blocked, true)
        .await
        .expect("a preview of 5,000");
    assert_eq!(preview.suspended_installed_apps.len(), 5_000);
    let handover = hand_over(&app, &admin, "dana", true)
        .await
        .expect("a hand-over preview of 5,000");
    assert_eq!(handover.installed_app_count, 5_000);

    // One more: refused whole.
    create_app(&app, &dana, "github", "The 5,001st").await;
    for validate_only in [true, false] {
        let refused = set_policy(&app, &admin, "github", Blocked, validate_only).await;
        let status = expect_code(refused, Code::ResourceExhausted);
        assert!(status.message().contains("5000"), "{status:?}");
        let refused = hand_over(&app, &admin, "dana", validate_only).await;
        expect_code(refused, Code::ResourceExhausted);
    }
    let kept = crate::fixtures::get_app(&app, &admin, &first.name)
        .await
        .expect("app");
    assert_eq!(kept.state, pb::installed_app::State::Active as i32);
    assert_eq!(kept.owner, "dana");
    // The policy was not set: the service can still be installed.
    create_app(&app, &dana, "github", "Still allowed").await;
}
crate::storage_test!(a_block_or_hand_over_past_5000_apps_is_refused_whole);

/// A hand-over moves at most 5,000 integrations: past that it is refused as
/// RESOURCE_EXHAUSTED, preview and call alike, and changes nothing.
async fn a_hand_over_past_5000_integrations_is_refused_whole(app: TestApp) {
    let erin = token(TEAM, "developer", "erin");
    let admin = token(TEAM, "admin", "ada");
    let slack = create_app(&app, &admin, "slack", "Slack").await;
    let first = create_integration(&app, &erin, &slack, "Results").await;
    let copied = [
        "team",
        "installed_app_id",
        "service",
        "type_id",
        "config",
        "state",
        "creator",
        "owner",
    ];
    seed_copies(&app, "integrations", &id_of(&first.name), 4_999, &copied).await;
    let preview = hand_over(&app, &admin, "erin", true)
        .await
        .expect("a hand-over preview of 5,000");
    assert_eq!(preview.integration_count, 5_000);

    create_integration(&app, &erin, &slack, "The 5,001st").await;
    for validate_only in [true, false] {
        let refused = hand_over(&app, &admin, "erin", validate_only).await;
        let status = expect_code(refused, Code::ResourceExhausted);
        assert!(status.message().contains("5000"), "{status:?}");
    }
    let kept = crate::fixtures::get_integration(&app, &admin, &first.name)
        .await
        .expect("integration");
    assert_eq!(kept.owner, "erin");
}
crate::storage_test!(a_hand_over_past_5000_integrations_is_refused_whole);
