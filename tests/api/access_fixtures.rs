//! Records and error readers shared by the access, isolation, validation and secrets tests.

// Not every test module uses every fixture.
#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use integration_hub::pb;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::helpers::{TestApp, authed};

/// The integration type every fixture integration uses, and its valid config.
pub const SLACK_TYPE: &str = "slack.post_monitor_results";

/// Longest wait for one answer of the server; a hang fails the test instead of blocking it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

pub fn slack_config() -> HashMap<String, String> {
    [
        ("channel".to_owned(), "#ops".to_owned()),
        ("monitor_id".to_owned(), "m-1".to_owned()),
    ]
    .into()
}

pub fn slack_credentials(access_token: &str) -> HashMap<String, String> {
    [("access_token".to_owned(), access_token.to_owned())].into()
}

pub fn new_slack_app(display_name: &str, access_token: &str) -> pb::CreateInstalledAppRequest {
    pb::CreateInstalledAppRequest {
        installed_app: Some(pb::InstalledApp {
            service: "slack".into(),
            display_name: display_name.into(),
            connected_to: "acme-workspace".into(),
            ..Default::default()
        }),
        credentials: slack_credentials(access_token),
        ..Default::default()
    }
}

/// A Slack integration request bound to `installed_app`.
pub fn new_slack_integration(
    installed_app: &str,
    display_name: &str,
) -> pb::CreateIntegrationRequest {
    pb::CreateIntegrationRequest {
        integration: Some(pb::Integration {
            installed_app: installed_app.into(),
            r#type: SLACK_TYPE.into(),
            display_name: display_name.into(),
            config: slack_config(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Slack integration request with credentials of its own.
pub fn new_own_slack_integration(
    display_name: &str,
    access_token: &str,
) -> pb::CreateIntegrationRequest {
    pb::CreateIntegrationRequest {
        integration: Some(pb::Integration {
            service: "slack".into(),
            r#type: SLACK_TYPE.into(),
            display_name: display_name.into(),
            config: slack_config(),
            ..Default::default()
        }),
        credentials: slack_credentials(access_token),
        ..Default::default()
    }
}

pub async fn create_slack_app(app: &TestApp, token: &str, display_name: &str) -> pb::InstalledApp {
    app.apps
        .clone()
        .create_installed_app(authed(token, new_slack_app(display_name, "xoxb-fixture")))
        .await
        .expect("create installed app")
        .into_inner()
}

pub async fn create_slack_integration(
    app: &TestApp,
    token: &str,
    installed_app: &str,
    display_name: &str,
) -> pb::Integration {
    app.integrations
        .clone()
        .create_integration(authed(
            token,
            new_slack_integration(installed_app, display_name),
        ))
        .await
        .expect("create integration")
        .into_inner()
}

pub async fn get_app(app: &TestApp, token: &str, name: &str) -> pb::InstalledApp {
    app.apps
        .clone()
        .get_installed_app(authed(
            token,
            pb::GetInstalledAppRequest { name: name.into() },
        ))
        .await
        .expect("get installed app")
        .into_inner()
}

pub async fn get_integration(app: &TestApp, token: &str, name: &str) -> pb::Integration {
    app.integrations
        .clone()
        .get_integration(authed(
            token,
            pb::GetIntegrationRequest { name: name.into() },
        ))
        .await
        .expect("get integration")
        .into_inner()
}

/// Deletes `installed_app` as an admin, so the integrations bound to it break.
pub async fn delete_app(app: &TestApp, admin: &str, installed_app: &str) -> Vec<String> {
    app.apps
        .clone()
        .delete_installed_app(authed(
            admin,
            pb::DeleteInstalledAppRequest {
                name: installed_app.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("delete installed app")
        .into_inner()
        .broken_integrations
}

/// `ErrorInfo.reason`, after checking the domain; panics when the status has none.
pub fn reason(status: &Status) -> String {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "integrationhub", "{status:?}");
    info.reason
}

/// The fields named by the `BadRequest` detail (empty when there is none).
pub fn violation_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// INVALID_ARGUMENT, reason INVALID_ARGUMENT, and a `BadRequest` naming `field`.
#[track_caller]
pub fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, field: &str) {
    let status = match result {
        Ok(answer) => panic!("expected INVALID_ARGUMENT naming {field:?}, got {answer:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    assert_eq!(reason(&status), "INVALID_ARGUMENT", "{field}: {status:?}");
    let fields = violation_fields(&status);
    assert!(
        fields.iter().any(|f| f == field),
        "expected a violation of {field:?}, got {fields:?} in {status:?}"
    );
}

/// The error of a call that must fail.
#[track_caller]
pub fn expect_err<T: std::fmt::Debug>(result: Result<T, Status>, what: &str) -> Status {
    match result {
        Ok(answer) => panic!("{what}: expected an error, got {answer:?}"),
        Err(status) => status,
    }
}
