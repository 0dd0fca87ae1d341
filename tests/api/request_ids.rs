//! Creates are idempotent by request id: a retry answers the first record, a reuse for
//! another create (or other credentials) is refused.

use integration_hub::pb;

use crate::fixtures::{
    TEAM, all_apps, app_request, create_integration, credentials, error_reason,
    integration_request_on, own_integration_request,
};
use crate::helpers::{TestApp, authed, token};
use crate::storage_test;
use crate::validation::developer;

async fn a_create_retried_with_the_same_request_id_returns_the_same_record(app: TestApp) {
    let dev = developer();
    let mut apps = app.apps.clone();
    let mut integrations = app.integrations.clone();
    let mut create = app_request("slack", "Slack", "xoxb-1");
    create.request_id = "retry-1".into();
    let first = apps
        .create_installed_app(authed(&dev, create.clone()))
        .await
        .expect("first create")
        .into_inner();
    let second = apps
        .create_installed_app(authed(&dev, create))
        .await
        .expect("retried create")
        .into_inner();
    assert_eq!(first, second);
    let listed = all_apps(&app, &dev).await;
    assert_eq!(listed, vec![first.clone()], "one app");

    let mut create = integration_request_on("slack", &first.name, "Job");
    create.request_id = "retry-1".into();
    let first_integration = integrations
        .create_integration(authed(&dev, create.clone()))
        .await
        .expect("first create")
        .into_inner();
    let second_integration = integrations
        .create_integration(authed(&dev, create))
        .await
        .expect("retried create")
        .into_inner();
    assert_eq!(first_integration, second_integration);
    let listed = integrations
        .list_integrations(authed(&dev, pb::ListIntegrationsRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .integrations;
    assert_eq!(listed, vec![first_integration], "one integration");
}
storage_test!(a_create_retried_with_the_same_request_id_returns_the_same_record);

async fn a_request_id_reused_for_a_different_create_is_refused(app: TestApp) {
    let dev = developer();
    let mut apps = app.apps.clone();
    let mut integrations = app.integrations.clone();
    let mut create = app_request("slack", "Slack", "xoxb-1");
    create.request_id = "once-1".into();
    let first = apps
        .create_installed_app(authed(&dev, create.clone()))
        .await
        .expect("first create")
        .into_inner();
    // The app is renamed since: a true retry is still answered with it.
    let mut renamed = first.clone();
    renamed.display_name = "Slack (renamed)".into();
    apps.update_installed_app(authed(
        &dev,
        pb::UpdateInstalledAppRequest {
            installed_app: Some(renamed),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into()],
            }),
            ..Default::default()
        },
    ))
    .await
    .expect("rename");
    let retried = apps
        .create_installed_app(authed(&dev, create.clone()))
        .await
        .expect("a retry after a rename")
        .into_inner();
    assert_eq!(retried.name, first.name);
    let mut other = create.clone();
    other.installed_app.as_mut().expect("app").display_name = "Another Slack".into();
    let refused = apps
        .create_installed_app(authed(&dev, other))
        .await
        .expect_err("a different create with the same request_id");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);
    assert_eq!(error_reason(&refused), "REQUEST_ID_REUSED");

    let mut job = integration_request_on("slack", &first.name, "Job");
    job.request_id = "once-2".into();
    integrations
        .create_integration(authed(&dev, job.clone()))
        .await
        .expect("first create");
    job.integration.as_mut().expect("integration").display_name = "Another job".into();
    let refused = integrations
        .create_integration(authed(&dev, job))
        .await
        .expect_err("a different create with the same request_id");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists);
    assert_eq!(error_reason(&refused), "REQUEST_ID_REUSED");
    let listed = all_apps(&app, &dev).await;
    assert_eq!(listed.len(), 1, "nothing was created by the refused calls");
}
storage_test!(a_request_id_reused_for_a_different_create_is_refused);

/// A refused replay: ALREADY_EXISTS, REQUEST_ID_REUSED, naming no secret.
fn assert_reused(refused: tonic::Status, secret: &str) {
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    assert_eq!(error_reason(&refused), "REQUEST_ID_REUSED");
    assert!(!format!("{refused:?}").contains(secret));
}

async fn a_request_id_replayed_with_other_credentials_is_refused(app: TestApp) {
    let dev = developer();
    let service = token(TEAM, "service", "svc");
    let mut apps = app.apps.clone();
    let mut integrations = app.integrations.clone();
    let mut create = app_request("slack", "Slack", "xoxb-first");
    create.request_id = "creds-1".into();
    let first = apps
        .create_installed_app(authed(&dev, create.clone()))
        .await
        .expect("first create")
        .into_inner();
    let mut other = create.clone();
    other.credentials = credentials("xoxb-second");
    let refused = apps
        .create_installed_app(authed(&dev, other))
        .await
        .expect_err("the same request_id and names with other credentials");
    assert_reused(refused, "xoxb-second");
    let retried = apps
        .create_installed_app(authed(&dev, create))
        .await
        .expect("the exact replay")
        .into_inner();
    assert_eq!(retried, first);

    let bound = create_integration(&app, &dev, &first, "Job").await;
    let resolved = crate::fixtures::resolve(&app, &service, &bound.name)
        .await
        .expect("resolve");
    assert_eq!(
        resolved.credentials.get("access_token").map(String::as_str),
        Some("xoxb-first"),
        "the app keeps the credentials it was made with"
    );

    let mut own = own_integration_request("slack", "Own job", "own-first");
    own.request_id = "creds-2".into();
    let first_own = integrations
        .create_integration(authed(&dev, own.clone()))
        .await
        .expect("first create")
        .into_inner();
    let mut other = own.clone();
    other.credentials = credentials("own-second");
    let refused = integrations
        .create_integration(authed(&dev, other))
        .await
        .expect_err("the same request_id and names with other credentials");
    assert_reused(refused, "own-second");
    let retried = integrations
        .create_integration(authed(&dev, own))
        .await
        .expect("the exact replay")
        .into_inner();
    assert_eq!(retried, first_own);
    let resolved = crate::fixtures::resolve(&app, &service, &first_own.name)
        .await
        .expect("resolve");
    assert_eq!(
        resolved.credentials.get("access_token").map(String::as_str),
        Some("own-first")
    );
}
storage_test!(a_request_id_replayed_with_other_credentials_is_refused);
