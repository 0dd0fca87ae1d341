//! Who may call what: the roles table (README, "Roles"), transcribed here as data (independently of
//! the server's method table (`src/api/methods.rs`)), checked against every method of the service descriptors, and the
//! refusals of callers without a valid token.

use integration_hub::api::methods;
use integration_hub::pb;
use prost::Message;
use tonic::{Code, Request, Status};

use crate::fixtures::{
    CALL_TIMEOUT, TEAM, app_request, create_app, create_integration, credentials, error_reason,
    get_app, integration_request_on, rename_app_request, rename_integration_request,
    token_of_another_secret,
};
use crate::helpers::{TestApp, authed, token};
use crate::storage_test;

/// What one role may do with one method, per the roles table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum May {
    Yes,
    No,
    /// Allowed at the method level; the handler then admits only the app's creator.
    IfCreator,
}

use May::{IfCreator, No, Yes};

/// The roles, in the order of the table's columns, with the claim value that maps to each.
const ROLES: [&str; 4] = ["viewer", "developer", "admin", "service"];

/// The roles table: (service, method, [viewer, developer, admin, service]). Watch is "own
/// team" for every role: allowed at the method level.
const ROLES_TABLE: &[(&str, &str, [May; 4])] = &[
    ("InstalledAppService", "ListServices", [Yes, Yes, Yes, Yes]),
    (
        "InstalledAppService",
        "CreateInstalledApp",
        [No, Yes, Yes, No],
    ),
    (
        "InstalledAppService",
        "GetInstalledApp",
        [Yes, Yes, Yes, Yes],
    ),
    (
        "InstalledAppService",
        "ListInstalledApps",
        [Yes, Yes, Yes, Yes],
    ),
    (
        "InstalledAppService",
        "UpdateInstalledApp",
        [No, IfCreator, Yes, No],
    ),
    (
        "InstalledAppService",
        "DeleteInstalledApp",
        [No, No, Yes, No],
    ),
    (
        "InstalledAppService",
        "ReportCredentialsRejected",
        [No, No, No, Yes],
    ),
    (
        "InstalledAppService",
        "SuspendInstalledApp",
        [No, No, Yes, No],
    ),
    (
        "InstalledAppService",
        "ResumeInstalledApp",
        [No, No, Yes, No],
    ),
    (
        "InstalledAppService",
        "TransferInstalledApp",
        [No, No, Yes, No],
    ),
    (
        "InstalledAppService",
        "StartInstalledAppAuthorization",
        [No, Yes, Yes, No],
    ),
    (
        "InstalledAppService",
        "CompleteInstalledAppAuthorization",
        [No, Yes, Yes, No],
    ),
    (
        "InstalledAppService",
        "GetInstalledAppAuthorization",
        [No, Yes, Yes, No],
    ),
    (
        "InstalledAppService",
        "WatchInstalledAppEvents",
        [Yes, Yes, Yes, Yes],
    ),
    (
        "InstalledAppService",
        "VerifyInstalledApp",
        [No, Yes, Yes, No],
    ),
    (
        "IntegrationService",
        "TransferIntegration",
        [No, No, Yes, No],
    ),
    (
        "IntegrationService",
        "PromoteIntegrationCredentials",
        [No, Yes, Yes, No],
    ),
    (
        "IntegrationService",
        "CreateIntegration",
        [No, Yes, Yes, No],
    ),
    ("IntegrationService", "GetIntegration", [Yes, Yes, Yes, Yes]),
    (
        "IntegrationService",
        "ListIntegrations",
        [Yes, Yes, Yes, Yes],
    ),
    (
        "IntegrationService",
        "UpdateIntegration",
        [No, Yes, Yes, No],
    ),
    (
        "IntegrationService",
        "DeleteIntegration",
        [No, Yes, Yes, No],
    ),
    (
        "IntegrationService",
        "ReauthenticateIntegration",
        [No, Yes, Yes, No],
    ),
    (
        "IntegrationService",
        "ReauthenticateIntegrations",
        [No, Yes, Yes, No],
    ),
    (
        "IntegrationService",
        "ResolveIntegrationCredentials",
        [No, No, No, Yes],
    ),
    (
        "IntegrationService",
        "WatchIntegrationEvents",
        [Yes, Yes, Yes, Yes],
    ),
    ("AuditService", "ListAuditEvents", [No, No, Yes, No]),
    (
        "AccessService",
        "SetInstalledAppUsableBy",
        [No, IfCreator, Yes, No],
    ),
    ("AccessService", "TransferOwnership", [No, No, Yes, No]),
    ("AccessService", "SetServicePolicy", [No, No, Yes, No]),
    ("AccessService", "RequestInstallation", [No, Yes, Yes, No]),
    (
        "AccessService",
        "ListInstallationRequests",
        [No, Yes, Yes, No],
    ),
    (
        "AccessService",
        "ApproveInstallationRequest",
        [No, No, Yes, No],
    ),
    (
        "AccessService",
        "DenyInstallationRequest",
        [No, No, Yes, No],
    ),
    // A service: one the server's configuration names (the tests name `svc`).
    ("AccessService", "DeprovisionPerson", [No, No, Yes, Yes]),
    ("AuditService", "WatchAuditEvents", [No, No, Yes, Yes]),
    (
        "WebhookService",
        "CreateWebhookSubscription",
        [No, No, Yes, No],
    ),
    (
        "WebhookService",
        "GetWebhookSubscription",
        [No, No, Yes, Yes],
    ),
    (
        "WebhookService",
        "ListWebhookSubscriptions",
        [No, No, Yes, Yes],
    ),
    (
        "WebhookService",
        "UpdateWebhookSubscription",
        [No, No, Yes, No],
    ),
    (
        "WebhookService",
        "DeleteWebhookSubscription",
        [No, No, Yes, No],
    ),
    ("WebhookService", "RotateWebhookSecret", [No, No, Yes, No]),
    (
        "WebhookService",
        "ListWebhookDeliveries",
        [No, No, Yes, Yes],
    ),
    (
        "WebhookService",
        "RedeliverWebhookEvents",
        [No, No, Yes, No],
    ),
    ("WebhookService", "SendTestWebhook", [No, No, Yes, No]),
];

const PACKAGE: &str = "integrationhub.v1";

/// Every (service, method) of package `integrationhub.v1` in the compiled descriptors.
fn described_methods() -> Vec<(String, String)> {
    let set = prost_types::FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    let mut methods = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == PACKAGE) {
        for service in &file.service {
            for method in &service.method {
                methods.push((service.name().to_owned(), method.name().to_owned()));
            }
        }
    }
    assert!(
        methods.len() >= 16,
        "the descriptors hold too few methods: {methods:?}"
    );
    methods
}

fn expectation(service: &str, method: &str) -> Option<[May; 4]> {
    ROLES_TABLE
        .iter()
        .find(|(s, m, _)| *s == service && *m == method)
        .map(|(_, _, row)| *row)
}

#[test]
fn every_described_method_has_an_expectation_here_and_a_policy_in_the_server() {
    let mut missing = Vec::new();
    for (service, method) in described_methods() {
        let path = format!("/{PACKAGE}.{service}/{method}");
        if expectation(&service, &method).is_none() {
            missing.push(format!("{path}: no row in the test's roles table"));
        }
        if methods::method(&path).is_none() {
            missing.push(format!("{path}: no server policy"));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

#[test]
fn the_roles_table_has_no_duplicate_rows() {
    for (i, (service, method, _)) in ROLES_TABLE.iter().enumerate() {
        assert!(
            ROLES_TABLE[i + 1..]
                .iter()
                .all(|(s, m, _)| (s, m) != (service, method)),
            "{service}/{method} twice"
        );
    }
}

/// Records every method's minimal request addresses, in team `acme`.
struct Fixture {
    /// Set up by the developer `dana`, who is the developer of the matrix.
    installed_app: String,
    /// Another app of dana's, for ReportCredentialsRejected (which breaks integrations).
    reported_app: String,
    integration: String,
}

const CREATOR: &str = "dana";

async fn fixture(app: &TestApp) -> Fixture {
    let dana = token(TEAM, "developer", CREATOR);
    let installed = create_app(app, &dana, "slack", "Fixture Slack").await;
    let reported = create_app(app, &dana, "slack", "Reported Slack").await;
    let integration = create_integration(app, &dana, &installed, "Fixture").await;
    Fixture {
        installed_app: installed.name,
        reported_app: reported.name,
        integration: integration.name,
    }
}

/// The subject each role's token carries in the matrix; the developer is the app's creator.
fn subject(role: &str) -> &'static str {
    match role {
        "developer" => CREATOR,
        "viewer" => "vera",
        "admin" => "ada",
        _ => "svc",
    }
}

fn request<T>(authorization: Option<&str>, message: T) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(value) = authorization {
        request.metadata_mut().insert(
            "authorization",
            value.parse().expect("an ASCII metadata value"),
        );
    }
    request
}

/// Calls `service/method` with a minimal, well-formed request (a destructive call addresses a
/// record that does not exist, or only validates) and the given `authorization` value.
async fn call(
    app: &TestApp,
    fx: &Fixture,
    service: &str,
    method: &str,
    authorization: Option<&str>,
) -> Result<(), Status> {
    let answer = tokio::time::timeout(
        CALL_TIMEOUT,
        dispatch(app, fx, service, method, authorization),
    )
    .await;
    answer.unwrap_or_else(|_| panic!("{service}/{method} did not answer in time"))
}

async fn dispatch(
    app: &TestApp,
    fx: &Fixture,
    service: &str,
    method: &str,
    auth: Option<&str>,
) -> Result<(), Status> {
    let mut apps = app.apps.clone();
    let mut integrations = app.integrations.clone();
    let missing_app = format!("teams/{TEAM}/installedApps/nonexistent");
    let missing_integration = format!("teams/{TEAM}/integrations/nonexistent");
    match (service, method) {
        ("InstalledAppService", "ListServices") => apps
            .list_services(request(auth, pb::ListServicesRequest {}))
            .await
            .map(drop),
        ("InstalledAppService", "CreateInstalledApp") => apps
            .create_installed_app(request(auth, app_request("slack", "Matrix", "xoxb-matrix")))
            .await
            .map(drop),
        ("InstalledAppService", "GetInstalledApp") => apps
            .get_installed_app(request(
                auth,
                pb::GetInstalledAppRequest {
                    name: fx.installed_app.clone(),
                },
            ))
            .await
            .map(drop),
        ("InstalledAppService", "ListInstalledApps") => apps
            .list_installed_apps(request(auth, pb::ListInstalledAppsRequest::default()))
            .await
            .map(drop),
        ("InstalledAppService", "UpdateInstalledApp") => apps
            .update_installed_app(request(
                auth,
                rename_app_request(&fx.installed_app, "Renamed"),
            ))
            .await
            .map(drop),
        ("InstalledAppService", "DeleteInstalledApp") => apps
            .delete_installed_app(request(
                auth,
                pb::DeleteInstalledAppRequest {
                    name: fx.installed_app.clone(),
                    validate_only: true,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        ("InstalledAppService", "ReportCredentialsRejected") => apps
            .report_credentials_rejected(request(
                auth,
                pb::ReportCredentialsRejectedRequest {
                    name: fx.reported_app.clone(),
                    detail: "401 from Slack".into(),
                },
            ))
            .await
            .map(drop),
        ("InstalledAppService", "SuspendInstalledApp") => apps
            .suspend_installed_app(request(
                auth,
                pb::SuspendInstalledAppRequest {
                    name: missing_app.clone(),
                    reason: "leaked".into(),
                },
            ))
            .await
            .map(drop),
        ("InstalledAppService", "ResumeInstalledApp") => apps
            .resume_installed_app(request(
                auth,
                pb::ResumeInstalledAppRequest {
                    name: missing_app.clone(),
                },
            ))
            .await
            .map(drop),
        ("InstalledAppService", "TransferInstalledApp") => apps
            .transfer_installed_app(request(
                auth,
                pb::TransferInstalledAppRequest {
                    name: missing_app.clone(),
                    new_owner: "erik".into(),
                },
            ))
            .await
            .map(drop),
        ("InstalledAppService", "StartInstalledAppAuthorization") => apps
            .start_installed_app_authorization(request(
                auth,
                pb::StartInstalledAppAuthorizationRequest {
                    service: "slack".into(),
                    display_name: "Matrix".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        ("InstalledAppService", "CompleteInstalledAppAuthorization") => apps
            .complete_installed_app_authorization(request(
                auth,
                pb::CompleteInstalledAppAuthorizationRequest {
                    state: "unknown-state".into(),
                    code: "unknown-code".into(),
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        ("InstalledAppService", "VerifyInstalledApp") => apps
            .verify_installed_app(request(
                auth,
                pb::VerifyInstalledAppRequest {
                    name: fx.installed_app.clone(),
                },
            ))
            .await
            .map(drop),
        ("InstalledAppService", "GetInstalledAppAuthorization") => apps
            .get_installed_app_authorization(request(
                auth,
                pb::GetInstalledAppAuthorizationRequest {
                    name: format!("teams/{TEAM}/installedAppAuthorizations/nonexistent"),
                },
            ))
            .await
            .map(drop),
        ("IntegrationService", "TransferIntegration") => integrations
            .transfer_integration(request(
                auth,
                pb::TransferIntegrationRequest {
                    name: missing_integration.clone(),
                    new_owner: "erik".into(),
                },
            ))
            .await
            .map(drop),
        ("IntegrationService", "PromoteIntegrationCredentials") => integrations
            .promote_integration_credentials(request(
                auth,
                pb::PromoteIntegrationCredentialsRequest {
                    name: missing_integration.clone(),
                    installed_app: Some(pb::SaveAsInstalledApp {
                        display_name: "Promoted".into(),
                        connected_to: String::new(),
                    }),
                    include_matching: false,
                    etag: String::new(),
                },
            ))
            .await
            .map(drop),
        ("IntegrationService", "CreateIntegration") => integrations
            .create_integration(request(
                auth,
                integration_request_on("slack", &fx.installed_app, "Matrix"),
            ))
            .await
            .map(drop),
        ("IntegrationService", "GetIntegration") => integrations
            .get_integration(request(
                auth,
                pb::GetIntegrationRequest {
                    name: fx.integration.clone(),
                },
            ))
            .await
            .map(drop),
        ("IntegrationService", "ListIntegrations") => integrations
            .list_integrations(request(auth, pb::ListIntegrationsRequest::default()))
            .await
            .map(drop),
        ("IntegrationService", "UpdateIntegration") => integrations
            .update_integration(request(
                auth,
                rename_integration_request(&fx.integration, "Renamed"),
            ))
            .await
            .map(drop),
        ("IntegrationService", "DeleteIntegration") => integrations
            .delete_integration(request(
                auth,
                pb::DeleteIntegrationRequest {
                    name: missing_integration,
                    ..Default::default()
                },
            ))
            .await
            .map(drop),
        ("IntegrationService", "ReauthenticateIntegration") => integrations
            .reauthenticate_integration(request(
                auth,
                pb::ReauthenticateIntegrationRequest {
                    name: fx.integration.clone(),
                    auth: Some(pb::reauthenticate_integration_request::Auth::InstalledApp(
                        fx.installed_app.clone(),
                    )),
                },
            ))
            .await
            .map(drop),
        ("IntegrationService", "ReauthenticateIntegrations") => integrations
            .reauthenticate_integrations(request(
                auth,
                pb::ReauthenticateIntegrationsRequest {
                    parent: String::new(),
                    from_installed_app: missing_app,
                    to_installed_app: fx.installed_app.clone(),
                },
            ))
            .await
            .map(drop),
        ("IntegrationService", "ResolveIntegrationCredentials") => integrations
            .resolve_integration_credentials(request(
                auth,
                pb::ResolveIntegrationCredentialsRequest {
                    name: fx.integration.clone(),
                },
            ))
            .await
            .map(drop),
        ("IntegrationService", "WatchIntegrationEvents") => {
            let mut stream = integrations
                .watch_integration_events(request(
                    auth,
                    pb::WatchIntegrationEventsRequest::default(),
                ))
                .await?
                .into_inner();
            // The first message (a checkpoint) or the stream's error.
            stream.message().await.map(drop)
        }
        ("InstalledAppService", "WatchInstalledAppEvents") => {
            let mut stream = apps
                .watch_installed_app_events(request(
                    auth,
                    pb::WatchInstalledAppEventsRequest::default(),
                ))
                .await?
                .into_inner();
            stream.message().await.map(drop)
        }
        ("AccessService", "SetInstalledAppUsableBy") => {
            pb::access_service_client::AccessServiceClient::new(app.channel.clone())
                .set_installed_app_usable_by(request(
                    auth,
                    pb::SetInstalledAppUsableByRequest {
                        name: fx.installed_app.clone(),
                        subjects: vec![CREATOR.to_owned()],
                        validate_only: true,
                        ..Default::default()
                    },
                ))
                .await
                .map(drop)
        }
        ("AccessService", "TransferOwnership") => {
            pb::access_service_client::AccessServiceClient::new(app.channel.clone())
                .transfer_ownership(request(
                    auth,
                    pb::TransferOwnershipRequest {
                        from_owner: "nobody".into(),
                        to_owner: CREATOR.into(),
                        validate_only: true,
                        ..Default::default()
                    },
                ))
                .await
                .map(drop)
        }
        ("AccessService", "SetServicePolicy") => {
            pb::access_service_client::AccessServiceClient::new(app.channel.clone())
                .set_service_policy(request(
                    auth,
                    pb::SetServicePolicyRequest {
                        service: "github".into(),
                        policy: pb::ServicePolicy::Blocked as i32,
                        validate_only: true,
                        ..Default::default()
                    },
                ))
                .await
                .map(drop)
        }
        ("AccessService", "RequestInstallation") => {
            pb::access_service_client::AccessServiceClient::new(app.channel.clone())
                .request_installation(request(
                    auth,
                    pb::RequestInstallationRequest {
                        service: "slack".into(),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop)
        }
        ("AccessService", "ListInstallationRequests") => {
            pb::access_service_client::AccessServiceClient::new(app.channel.clone())
                .list_installation_requests(request(
                    auth,
                    pb::ListInstallationRequestsRequest::default(),
                ))
                .await
                .map(drop)
        }
        ("AccessService", "ApproveInstallationRequest") => {
            pb::access_service_client::AccessServiceClient::new(app.channel.clone())
                .approve_installation_request(request(
                    auth,
                    pb::ApproveInstallationRequestRequest {
                        name: format!("teams/{TEAM}/installationRequests/nope"),
                    },
                ))
                .await
                .map(drop)
        }
        ("AccessService", "DenyInstallationRequest") => {
            pb::access_service_client::AccessServiceClient::new(app.channel.clone())
                .deny_installation_request(request(
                    auth,
                    pb::DenyInstallationRequestRequest {
                        name: format!("teams/{TEAM}/installationRequests/nope"),
                        ..Default::default()
                    },
                ))
                .await
                .map(drop)
        }
        ("AccessService", "DeprovisionPerson") => {
            pb::access_service_client::AccessServiceClient::new(app.channel.clone())
                .deprovision_person(request(
                    auth,
                    pb::DeprovisionPersonRequest {
                        subject: "nobody".into(),
                        successor: CREATOR.into(),
                        validate_only: true,
                        ..Default::default()
                    },
                ))
                .await
                .map(drop)
        }
        ("AuditService", "WatchAuditEvents") => {
            let mut stream = integration_hub::pb::audit_service_client::AuditServiceClient::new(
                app.channel.clone(),
            )
            .watch_audit_events(request(auth, pb::WatchAuditEventsRequest::default()))
            .await?
            .into_inner();
            stream.message().await.map(drop)
        }
        ("AuditService", "ListAuditEvents") => {
            integration_hub::pb::audit_service_client::AuditServiceClient::new(app.channel.clone())
                .list_audit_events(request(auth, pb::ListAuditEventsRequest::default()))
                .await
                .map(drop)
        }
        ("WebhookService", method) => {
            let mut hooks = integration_hub::pb::webhook_service_client::WebhookServiceClient::new(
                app.channel.clone(),
            );
            let missing = format!("teams/{TEAM}/webhookSubscriptions/nonexistent");
            match method {
                "CreateWebhookSubscription" => hooks
                    .create_webhook_subscription(request(
                        auth,
                        pb::CreateWebhookSubscriptionRequest {
                            webhook_subscription: Some(pb::WebhookSubscription {
                                url: "https://hooks.example.com/in".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop),
                "GetWebhookSubscription" => hooks
                    .get_webhook_subscription(request(
                        auth,
                        pb::GetWebhookSubscriptionRequest { name: missing },
                    ))
                    .await
                    .map(drop),
                "ListWebhookSubscriptions" => hooks
                    .list_webhook_subscriptions(request(
                        auth,
                        pb::ListWebhookSubscriptionsRequest::default(),
                    ))
                    .await
                    .map(drop),
                "UpdateWebhookSubscription" => hooks
                    .update_webhook_subscription(request(
                        auth,
                        pb::UpdateWebhookSubscriptionRequest {
                            webhook_subscription: Some(pb::WebhookSubscription {
                                name: missing,
                                ..Default::default()
                            }),
                            update_mask: Some(prost_types::FieldMask {
                                paths: vec!["description".into()],
                            }),
                        },
                    ))
                    .await
                    .map(drop),
                "DeleteWebhookSubscription" => hooks
                    .delete_webhook_subscription(request(
                        auth,
                        pb::DeleteWebhookSubscriptionRequest {
                            name: missing,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop),
                "RotateWebhookSecret" => hooks
                    .rotate_webhook_secret(request(
                        auth,
                        pb::RotateWebhookSecretRequest {
                            name: missing,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop),
                "ListWebhookDeliveries" => hooks
                    .list_webhook_deliveries(request(
                        auth,
                        pb::ListWebhookDeliveriesRequest {
                            parent: missing,
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(drop),
                "RedeliverWebhookEvents" => hooks
                    .redeliver_webhook_events(request(
                        auth,
                        pb::RedeliverWebhookEventsRequest {
                            name: missing,
                            start_cursor: crate::fixtures::cursors(Some(TEAM)).encode(0),
                        },
                    ))
                    .await
                    .map(drop),
                "SendTestWebhook" => hooks
                    .send_test_webhook(request(auth, pb::SendTestWebhookRequest { name: missing }))
                    .await
                    .map(drop),
                other => panic!("WebhookService/{other} has no call in `dispatch`"),
            }
        }
        (service, method) => panic!(
            "{service}/{method} is described but access.rs has no call for it: add one to `dispatch`"
        ),
    }
}

async fn each_role_may_call_exactly_the_methods_of_the_roles_table(app: TestApp) {
    let fx = fixture(&app).await;
    let mut failures = Vec::new();
    let mut calls = 0;
    for (service, method) in described_methods() {
        let row = expectation(&service, &method)
            .unwrap_or_else(|| panic!("{service}/{method} has no row in the roles table"));
        for (role, may) in ROLES.iter().zip(row) {
            let bearer = format!("Bearer {}", token(TEAM, role, subject(role)));
            let result = call(&app, &fx, &service, &method, Some(&bearer)).await;
            calls += 1;
            let outcome = match (&result, may) {
                (Err(status), No) => {
                    if status.code() == Code::PermissionDenied
                        && error_reason(status) == "PERMISSION_DENIED"
                    {
                        continue;
                    }
                    format!("should be PERMISSION_DENIED, got {status:?}")
                }
                (Ok(()), No) => "should be PERMISSION_DENIED, got OK".to_owned(),
                (Ok(()), Yes | IfCreator) => continue,
                // Allowed: the handler ran. The minimal request may be refused for what it
                // says (NOT_FOUND, INVALID_ARGUMENT, ...), but never as unauthorized, and
                // never by a broken invariant.
                (Err(status), Yes | IfCreator) => {
                    if !matches!(
                        status.code(),
                        Code::PermissionDenied
                            | Code::Unauthenticated
                            | Code::Internal
                            | Code::Unknown
                    ) {
                        continue;
                    }
                    format!("should be allowed, got {status:?}")
                }
            };
            failures.push(format!("{service}/{method} as {role}: {outcome}"));
        }
    }
    assert!(calls >= 64, "only {calls} calls were made");
    assert!(failures.is_empty(), "{failures:#?}");
}
storage_test!(each_role_may_call_exactly_the_methods_of_the_roles_table);

async fn only_the_developer_who_set_up_an_app_or_an_admin_may_edit_it(app: TestApp) {
    let dana = token(TEAM, "developer", CREATOR);
    let dora = token(TEAM, "developer", "dora");
    let admin = token(TEAM, "admin", "ada");
    let installed = create_app(&app, &dana, "slack", "Slack").await;
    let mut apps = app.apps.clone();

    let renamed = apps
        .update_installed_app(authed(
            &dana,
            rename_app_request(&installed.name, "Slack by Dana"),
        ))
        .await
        .expect("the creator renames her app")
        .into_inner();
    assert_eq!(renamed.display_name, "Slack by Dana");

    let refused = apps
        .update_installed_app(authed(
            &dora,
            rename_app_request(&installed.name, "Slack by Dora"),
        ))
        .await
        .expect_err("another developer renames");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(error_reason(&refused), "PERMISSION_DENIED");
    let refused = apps
        .update_installed_app(authed(
            &dora,
            pb::UpdateInstalledAppRequest {
                installed_app: Some(pb::InstalledApp {
                    name: installed.name.clone(),
                    ..Default::default()
                }),
                credentials: credentials("xoxb-dora"),
                ..Default::default()
            },
        ))
        .await
        .expect_err("another developer replaces the credentials");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(error_reason(&refused), "PERMISSION_DENIED");
    assert_eq!(
        get_app(&app, &dana, &installed.name)
            .await
            .expect("get installed app"),
        renamed,
        "a refused edit changes nothing"
    );

    let by_admin = apps
        .update_installed_app(authed(
            &admin,
            rename_app_request(&installed.name, "Slack by Ada"),
        ))
        .await
        .expect("an admin renames any app")
        .into_inner();
    assert_eq!(by_admin.display_name, "Slack by Ada");
    assert_eq!(
        by_admin.creator, CREATOR,
        "an admin's edit keeps the creator"
    );
}
storage_test!(only_the_developer_who_set_up_an_app_or_an_admin_may_edit_it);

async fn every_method_refuses_a_missing_or_invalid_token_with_one_generic_message(app: TestApp) {
    let fx = fixture(&app).await;
    let valid = token(TEAM, "admin", "ada");
    let forged = token_of_another_secret();
    let attempts: [(&str, Option<String>); 6] = [
        ("no token", None),
        (
            "a garbage token",
            Some("Bearer garbage.garbage.garbage".to_owned()),
        ),
        ("an empty bearer", Some("Bearer ".to_owned())),
        (
            "a token of another secret",
            Some(format!("Bearer {forged}")),
        ),
        (
            "the Basic scheme",
            Some("Basic dXNlcjpwYXNzd29yZA==".to_owned()),
        ),
        ("a valid token under Basic", Some(format!("Basic {valid}"))),
    ];
    let mut messages = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for (service, method) in described_methods() {
        for (what, authorization) in &attempts {
            let result = call(&app, &fx, &service, &method, authorization.as_deref()).await;
            match result {
                Err(status)
                    if status.code() == Code::Unauthenticated
                        && error_reason(&status) == "UNAUTHENTICATED" =>
                {
                    assert!(!status.message().contains(&forged));
                    assert!(!status.message().contains(&valid));
                    messages.insert(status.message().to_owned());
                }
                other => failures.push(format!(
                    "{service}/{method} with {what}: expected UNAUTHENTICATED, got {other:?}"
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(
        messages.len(),
        1,
        "every refusal has the same generic message: {messages:?}"
    );
}
storage_test!(every_method_refuses_a_missing_or_invalid_token_with_one_generic_message);

async fn health_and_reflection_answer_without_a_token(app: TestApp) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let mut health = HealthClient::new(app.channel.clone());
    for service in ["", "integrationhub.v1.InstalledAppService"] {
        let answer = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("health of {service:?} without a token: {e:?}"))
            .into_inner();
        assert_eq!(
            answer.status,
            ServingStatus::Serving as i32,
            "health of {service:?}"
        );
    }

    let expected = [
        "integrationhub.v1.InstalledAppService",
        "integrationhub.v1.IntegrationService",
        "grpc.health.v1.Health",
    ];
    {
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

        let mut reflection = ServerReflectionClient::new(app.channel.clone());
        let ask = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter(vec![ask]))
            .await
            .expect("reflection v1 without a token")
            .into_inner();
        let answer = answers
            .message()
            .await
            .expect("a reflection answer")
            .expect("one message");
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("not a service list: {answer:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for name in expected {
            assert!(
                names.iter().any(|n| n == name),
                "v1 lists {name}: {names:?}"
            );
        }
    }
    {
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;

        let mut reflection = ServerReflectionClient::new(app.channel.clone());
        let ask = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = reflection
            .server_reflection_info(tokio_stream::iter(vec![ask]))
            .await
            .expect("reflection v1alpha without a token")
            .into_inner();
        let answer = answers
            .message()
            .await
            .expect("a reflection answer")
            .expect("one message");
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("not a service list: {answer:?}");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for name in expected {
            assert!(
                names.iter().any(|n| n == name),
                "v1alpha lists {name}: {names:?}"
            );
        }
    }
}
storage_test!(health_and_reflection_answer_without_a_token);
