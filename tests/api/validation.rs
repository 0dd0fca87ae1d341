//! Bad input answers INVALID_ARGUMENT with a `BadRequest` naming the field; listings clamp,
//! page and stay stable; creates are idempotent by request id; an oversized request fails
//! cleanly.

use std::collections::{BTreeSet, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use integration_hub::pb;
use pb::reauthenticate_integration_request::Auth;
use tonic::Code;

use crate::fixtures::{
    CALL_TIMEOUT, TEAM, app_request, assert_invalid, create_app, create_integration, credentials,
    delete_app, error_reason, get_app, get_integration, integration_request_on, job_of,
    own_integration_request,
};
use crate::helpers::{TestApp, authed, token};
use crate::storage_test;

fn developer() -> String {
    token(TEAM, "developer", "dana")
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask {
        paths: paths.iter().map(|p| (*p).to_owned()).collect(),
    })
}

/// Names that are not `teams/{team}/{collection}/{id}`; `other` is the other collection.
fn bad_names(other: &str) -> Vec<String> {
    vec![
        String::new(),
        "teams/a".to_owned(),
        "teams/a/installedApps".to_owned(),
        "teams/a/integrations".to_owned(),
        "teams/a/installedApps/x/y".to_owned(),
        "teams/a/integrations/x/y".to_owned(),
        format!("teams/a/{other}/x"),
        "teams/a b/installedApps/x".to_owned(),
        "teams/a b/integrations/x".to_owned(),
        "installedApps/x".to_owned(),
        "teams//installedApps/x".to_owned(),
        "teams/a/installedApps/".to_owned(),
        "teams/a/integrations/".to_owned(),
    ]
}

async fn malformed_names_are_refused_naming_the_field(app: TestApp) {
    let dev = developer();
    let admin = token(TEAM, "admin", "ada");
    let service = token(TEAM, "service", "svc");
    let viewer = token(TEAM, "viewer", "vera");
    let mut apps = app.apps.clone();
    let mut integrations = app.integrations.clone();
    let installed = create_app(&app, &dev, "slack", "Slack").await;
    let valid_integration = format!("teams/{TEAM}/integrations/x");

    for name in bad_names("integrations") {
        let n = || name.clone();
        assert_invalid(
            apps.get_installed_app(authed(&viewer, pb::GetInstalledAppRequest { name: n() }))
                .await,
            "name",
        );
        assert_invalid(
            apps.update_installed_app(authed(
                &admin,
                pb::UpdateInstalledAppRequest {
                    installed_app: Some(pb::InstalledApp {
                        name: n(),
                        display_name: "Renamed".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                    ..Default::default()
                },
            ))
            .await,
            "installed_app.name",
        );
        assert_invalid(
            apps.delete_installed_app(authed(
                &admin,
                pb::DeleteInstalledAppRequest {
                    name: n(),
                    ..Default::default()
                },
            ))
            .await,
            "name",
        );
        assert_invalid(
            apps.report_credentials_rejected(authed(
                &service,
                pb::ReportCredentialsRejectedRequest {
                    name: n(),
                    detail: String::new(),
                },
            ))
            .await,
            "name",
        );
        // References to an installed app.
        assert_invalid(
            integrations
                .create_integration(authed(&dev, integration_request_on("slack", &n(), "Job")))
                .await,
            "integration.installed_app",
        );
        assert_invalid(
            integrations
                .reauthenticate_integration(authed(
                    &dev,
                    pb::ReauthenticateIntegrationRequest {
                        name: valid_integration.clone(),
                        auth: Some(Auth::InstalledApp(n())),
                    },
                ))
                .await,
            "installed_app",
        );
        assert_invalid(
            integrations
                .reauthenticate_integrations(authed(
                    &dev,
                    pb::ReauthenticateIntegrationsRequest {
                        parent: String::new(),
                        from_installed_app: n(),
                        to_installed_app: installed.name.clone(),
                    },
                ))
                .await,
            "from_installed_app",
        );
        assert_invalid(
            integrations
                .reauthenticate_integrations(authed(
                    &dev,
                    pb::ReauthenticateIntegrationsRequest {
                        parent: String::new(),
                        from_installed_app: installed.name.clone(),
                        to_installed_app: n(),
                    },
                ))
                .await,
            "to_installed_app",
        );
        if !name.is_empty() {
            // Empty means "no filter" here.
            assert_invalid(
                integrations
                    .list_integrations(authed(
                        &viewer,
                        pb::ListIntegrationsRequest {
                            installed_app: n(),
                            ..Default::default()
                        },
                    ))
                    .await,
                "installed_app",
            );
        }
    }

    for name in bad_names("installedApps") {
        let n = || name.clone();
        assert_invalid(
            integrations
                .get_integration(authed(&viewer, pb::GetIntegrationRequest { name: n() }))
                .await,
            "name",
        );
        assert_invalid(
            integrations
                .update_integration(authed(
                    &dev,
                    pb::UpdateIntegrationRequest {
                        integration: Some(pb::Integration {
                            name: n(),
                            display_name: "Renamed".into(),
                            ..Default::default()
                        }),
                        update_mask: mask(&["display_name"]),
                    },
                ))
                .await,
            "integration.name",
        );
        assert_invalid(
            integrations
                .delete_integration(authed(
                    &dev,
                    pb::DeleteIntegrationRequest {
                        name: n(),
                        ..Default::default()
                    },
                ))
                .await,
            "name",
        );
        assert_invalid(
            integrations
                .reauthenticate_integration(authed(
                    &dev,
                    pb::ReauthenticateIntegrationRequest {
                        name: n(),
                        auth: Some(Auth::InstalledApp(installed.name.clone())),
                    },
                ))
                .await,
            "name",
        );
        assert_invalid(
            integrations
                .resolve_integration_credentials(authed(
                    &service,
                    pb::ResolveIntegrationCredentialsRequest { name: n() },
                ))
                .await,
            "name",
        );
    }
}
storage_test!(malformed_names_are_refused_naming_the_field);

async fn malformed_parents_are_refused_naming_the_field(app: TestApp) {
    let dev = developer();
    let viewer = token(TEAM, "viewer", "vera");
    let mut apps = app.apps.clone();
    let mut integrations = app.integrations.clone();
    let installed = create_app(&app, &dev, "slack", "Slack").await;
    for parent in [
        "acme",
        "team/acme",
        "teams/acme/x",
        "teams/",
        "teams/a b",
        "/teams/acme",
    ] {
        let p = || parent.to_owned();
        assert_invalid(
            apps.list_installed_apps(authed(
                &viewer,
                pb::ListInstalledAppsRequest {
                    parent: p(),
                    ..Default::default()
                },
            ))
            .await,
            "parent",
        );
        assert_invalid(
            integrations
                .list_integrations(authed(
                    &viewer,
                    pb::ListIntegrationsRequest {
                        parent: p(),
                        ..Default::default()
                    },
                ))
                .await,
            "parent",
        );
        let mut create_app = app_request("slack", "Slack", "xoxb-1");
        create_app.parent = p();
        assert_invalid(
            apps.create_installed_app(authed(&dev, create_app)).await,
            "parent",
        );
        let mut create_integration = integration_request_on("slack", &installed.name, "Job");
        create_integration.parent = p();
        assert_invalid(
            integrations
                .create_integration(authed(&dev, create_integration))
                .await,
            "parent",
        );
        assert_invalid(
            integrations
                .reauthenticate_integrations(authed(
                    &dev,
                    pb::ReauthenticateIntegrationsRequest {
                        parent: p(),
                        from_installed_app: format!("teams/{TEAM}/installedApps/old"),
                        to_installed_app: installed.name.clone(),
                    },
                ))
                .await,
            "parent",
        );
        assert_invalid(
            integrations
                .watch_integration_events(authed(
                    &viewer,
                    pb::WatchIntegrationEventsRequest {
                        parent: p(),
                        ..Default::default()
                    },
                ))
                .await,
            "parent",
        );
    }
}
storage_test!(malformed_parents_are_refused_naming_the_field);

/// Display names that are missing, too long, or carry control characters.
fn bad_display_names() -> Vec<String> {
    vec![
        String::new(),
        "   ".to_owned(),
        "x".repeat(201),
        "é".repeat(201),
        "line\nbreak".to_owned(),
        "bell\u{7}".to_owned(),
        "nul\0".to_owned(),
        "esc\u{1b}[31m".to_owned(),
    ]
}

async fn bad_display_names_and_texts_are_refused_naming_the_field(app: TestApp) {
    let dev = developer();
    let service = token(TEAM, "service", "svc");
    let mut apps = app.apps.clone();
    let mut integrations = app.integrations.clone();
    let installed = create_app(&app, &dev, "slack", "Slack").await;
    let integration = create_integration(&app, &dev, &installed, "Job").await;

    for display_name in bad_display_names() {
        assert_invalid(
            apps.create_installed_app(authed(&dev, app_request("slack", &display_name, "xoxb-1")))
                .await,
            "installed_app.display_name",
        );
        assert_invalid(
            integrations
                .create_integration(authed(
                    &dev,
                    integration_request_on("slack", &installed.name, &display_name),
                ))
                .await,
            "integration.display_name",
        );
        assert_invalid(
            apps.update_installed_app(authed(
                &dev,
                pb::UpdateInstalledAppRequest {
                    installed_app: Some(pb::InstalledApp {
                        name: installed.name.clone(),
                        display_name: display_name.clone(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["display_name"]),
                    ..Default::default()
                },
            ))
            .await,
            "installed_app.display_name",
        );
        assert_invalid(
            integrations
                .update_integration(authed(
                    &dev,
                    pb::UpdateIntegrationRequest {
                        integration: Some(pb::Integration {
                            name: integration.name.clone(),
                            display_name: display_name.clone(),
                            ..Default::default()
                        }),
                        update_mask: mask(&["display_name"]),
                    },
                ))
                .await,
            "integration.display_name",
        );
    }
    // A missing app or integration message altogether.
    assert_invalid(
        apps.create_installed_app(authed(
            &dev,
            pb::CreateInstalledAppRequest {
                credentials: credentials("xoxb-1"),
                ..Default::default()
            },
        ))
        .await,
        "installed_app.display_name",
    );
    // The boundary: 200 characters (of two bytes each) are fine.
    let longest = "é".repeat(200);
    let created = apps
        .create_installed_app(authed(&dev, app_request("slack", &longest, "xoxb-1")))
        .await
        .expect("a 200-character display name is accepted")
        .into_inner();
    assert_eq!(created.display_name, longest);

    let mut long_connected_to = app_request("slack", "Slack", "xoxb-1");
    long_connected_to
        .installed_app
        .as_mut()
        .expect("app")
        .connected_to = "x".repeat(201);
    assert_invalid(
        apps.create_installed_app(authed(&dev, long_connected_to))
            .await,
        "installed_app.connected_to",
    );
    assert_invalid(
        apps.update_installed_app(authed(
            &dev,
            pb::UpdateInstalledAppRequest {
                installed_app: Some(pb::InstalledApp {
                    name: installed.name.clone(),
                    connected_to: "tab\there".into(),
                    ..Default::default()
                }),
                update_mask: mask(&["connected_to"]),
                ..Default::default()
            },
        ))
        .await,
        "installed_app.connected_to",
    );
    for request_id in [
        "has space".to_owned(),
        "x".repeat(101),
        "slash/no".to_owned(),
    ] {
        let mut create = app_request("slack", "Slack", "xoxb-1");
        create.request_id = request_id.clone();
        assert_invalid(
            apps.create_installed_app(authed(&dev, create)).await,
            "request_id",
        );
        let mut create = integration_request_on("slack", &installed.name, "Job");
        create.request_id = request_id;
        assert_invalid(
            integrations.create_integration(authed(&dev, create)).await,
            "request_id",
        );
    }
    for detail in ["x".repeat(1001), "new\nline".to_owned()] {
        assert_invalid(
            apps.report_credentials_rejected(authed(
                &service,
                pb::ReportCredentialsRejectedRequest {
                    name: installed.name.clone(),
                    detail,
                },
            ))
            .await,
            "detail",
        );
    }
    // Nothing of the above changed the records.
    let after = get_app(&app, &dev, &installed.name)
        .await
        .expect("get installed app");
    assert_eq!(after, {
        let mut expected = installed.clone();
        expected.integration_count = 1;
        expected.active_integration_count = 1;
        expected
    });
}
storage_test!(bad_display_names_and_texts_are_refused_naming_the_field);

fn many_credentials(count: usize) -> HashMap<String, String> {
    let mut credentials = credentials("xoxb-1");
    for i in 1..count {
        credentials.insert(format!("extra_{i:02}"), "v".into());
    }
    assert_eq!(credentials.len(), count);
    credentials
}

async fn credentials_are_checked_against_the_catalog(app: TestApp) {
    let dev = developer();
    let mut apps = app.apps.clone();
    let mut integrations = app.integrations.clone();
    let create = |service: &str, credentials: HashMap<String, String>| {
        let mut request = app_request("slack", "App", "unused");
        request.installed_app.as_mut().expect("app").service = service.into();
        request.credentials = credentials;
        request
    };

    assert_invalid(
        apps.create_installed_app(authed(&dev, create("nope", credentials("x"))))
            .await,
        "installed_app.service",
    );
    assert_invalid(
        apps.create_installed_app(authed(&dev, create("", credentials("x"))))
            .await,
        "installed_app.service",
    );
    assert_invalid(
        apps.create_installed_app(authed(&dev, create("Slack", credentials("x"))))
            .await,
        "installed_app.service",
    );
    assert_invalid(
        apps.create_installed_app(authed(&dev, create("slack", HashMap::new())))
            .await,
        "credentials",
    );
    assert_invalid(
        apps.create_installed_app(authed(
            &dev,
            create("slack", [("team_id".to_owned(), "T1".to_owned())].into()),
        ))
        .await,
        "credentials.access_token",
    );
    assert_invalid(
        apps.create_installed_app(authed(&dev, create("slack", credentials("  "))))
            .await,
        "credentials.access_token",
    );
    let mut unknown = credentials("xoxb-1");
    unknown.insert("bogus".into(), "x".into());
    assert_invalid(
        apps.create_installed_app(authed(&dev, create("slack", unknown.clone())))
            .await,
        "credentials.bogus",
    );
    assert_invalid(
        apps.create_installed_app(authed(
            &dev,
            create("github", [("team_id".to_owned(), "T1".to_owned())].into()),
        ))
        .await,
        "credentials.team_id",
    );
    let twenty_one = many_credentials(21);
    assert_invalid(
        apps.create_installed_app(authed(&dev, create("slack", twenty_one.clone())))
            .await,
        "credentials",
    );
    let too_long = credentials(&"t".repeat(8193));
    assert_invalid(
        apps.create_installed_app(authed(&dev, create("slack", too_long.clone())))
            .await,
        "credentials.access_token",
    );
    // The boundary: 8192 bytes are fine.
    let installed = apps
        .create_installed_app(authed(
            &dev,
            create("slack", credentials(&"t".repeat(8192))),
        ))
        .await
        .expect("an 8192-byte credential is accepted")
        .into_inner();

    // Replacing an app's credentials is checked the same way.
    let replace = |credentials: HashMap<String, String>| pb::UpdateInstalledAppRequest {
        installed_app: Some(pb::InstalledApp {
            name: installed.name.clone(),
            ..Default::default()
        }),
        credentials,
        ..Default::default()
    };
    assert_invalid(
        apps.update_installed_app(authed(&dev, replace(unknown.clone())))
            .await,
        "credentials.bogus",
    );
    assert_invalid(
        apps.update_installed_app(authed(
            &dev,
            replace([("scope".to_owned(), "chat:write".to_owned())].into()),
        ))
        .await,
        "credentials.access_token",
    );
    assert_invalid(
        apps.update_installed_app(authed(&dev, replace(twenty_one.clone())))
            .await,
        "credentials",
    );
    assert_invalid(
        apps.update_installed_app(authed(&dev, replace(too_long.clone())))
            .await,
        "credentials.access_token",
    );

    // An integration's credentials of its own.
    let own = |credentials: HashMap<String, String>| {
        let mut request = own_integration_request("slack", "Own", "unused");
        request.credentials = credentials;
        request
    };
    assert_invalid(
        integrations
            .create_integration(authed(&dev, own(unknown.clone())))
            .await,
        "credentials.bogus",
    );
    assert_invalid(
        integrations
            .create_integration(authed(
                &dev,
                own([("team_id".to_owned(), "T1".to_owned())].into()),
            ))
            .await,
        "credentials.access_token",
    );
    assert_invalid(
        integrations
            .create_integration(authed(&dev, own(twenty_one.clone())))
            .await,
        "credentials",
    );
    assert_invalid(
        integrations
            .create_integration(authed(&dev, own(too_long.clone())))
            .await,
        "credentials.access_token",
    );
    let mut no_service = own_integration_request("slack", "Own", "xoxb-1");
    no_service
        .integration
        .as_mut()
        .expect("integration")
        .service = String::new();
    assert_invalid(
        integrations
            .create_integration(authed(&dev, no_service))
            .await,
        "integration.service",
    );
    let mut other_service = own_integration_request("slack", "Own", "xoxb-1");
    other_service
        .integration
        .as_mut()
        .expect("integration")
        .service = "github".into();
    assert_invalid(
        integrations
            .create_integration(authed(&dev, other_service))
            .await,
        "integration.service",
    );
    let mut both = integration_request_on("slack", &installed.name, "Both");
    both.credentials = credentials("xoxb-1");
    assert_invalid(
        integrations.create_integration(authed(&dev, both)).await,
        "credentials",
    );

    // Reauthenticating with credentials of its own.
    let integration = create_integration(&app, &dev, &installed, "Job").await;
    delete_app(
        &app,
        &token(TEAM, "admin", "ada"),
        &installed.name,
        "",
        false,
    )
    .await
    .expect("delete installed app");
    let reauth = |values: HashMap<String, String>| pb::ReauthenticateIntegrationRequest {
        name: integration.name.clone(),
        auth: Some(Auth::Credentials(pb::Credentials { values })),
    };
    assert_invalid(
        integrations
            .reauthenticate_integration(authed(&dev, reauth(unknown)))
            .await,
        "credentials.values.bogus",
    );
    assert_invalid(
        integrations
            .reauthenticate_integration(authed(&dev, reauth(HashMap::new())))
            .await,
        "credentials.values",
    );
    assert_invalid(
        integrations
            .reauthenticate_integration(authed(&dev, reauth(twenty_one)))
            .await,
        "credentials.values",
    );
    assert_invalid(
        integrations
            .reauthenticate_integration(authed(&dev, reauth(too_long)))
            .await,
        "credentials.values.access_token",
    );
    assert_invalid(
        integrations
            .reauthenticate_integration(authed(
                &dev,
                pb::ReauthenticateIntegrationRequest {
                    name: integration.name.clone(),
                    auth: None,
                },
            ))
            .await,
        "auth",
    );
    let still = get_integration(&app, &dev, &integration.name)
        .await
        .expect("get integration");
    assert_eq!(still.state, pb::integration::State::Broken as i32);
}
storage_test!(credentials_are_checked_against_the_catalog);

async fn integration_types_and_config_are_checked_against_the_catalog(app: TestApp) {
    let dev = developer();
    let mut integrations = app.integrations.clone();
    let installed = create_app(&app, &dev, "slack", "Slack").await;
    let with = |r#type: &str, config: HashMap<String, String>| {
        let mut request = integration_request_on("slack", &installed.name, "Job");
        let integration = request.integration.as_mut().expect("integration");
        integration.r#type = r#type.into();
        integration.config = config;
        request
    };
    let mut missing = job_of("slack").1;
    missing.remove("monitor_id");
    let mut unknown = job_of("slack").1;
    unknown.insert("bogus".into(), "x".into());
    let mut blank = job_of("slack").1;
    blank.insert("channel".into(), " ".into());

    let slack = "slack.post_monitor_results";
    for (request, field) in [
        (
            with(slack, missing.clone()),
            "integration.config.monitor_id",
        ),
        (with(slack, blank), "integration.config.channel"),
        (with(slack, unknown.clone()), "integration.config.bogus"),
        (with("nope.nothing", job_of("slack").1), "integration.type"),
        (with("", job_of("slack").1), "integration.type"),
        (
            with(
                "github.backup_collections",
                [
                    ("repository".to_owned(), "acme/api".to_owned()),
                    ("collection_id".to_owned(), "c-1".to_owned()),
                ]
                .into(),
            ),
            "integration.type",
        ),
    ] {
        assert_invalid(
            integrations.create_integration(authed(&dev, request)).await,
            field,
        );
    }
    let mut long_value = job_of("slack").1;
    long_value.insert("channel".into(), "c".repeat(2049));
    assert_invalid(
        integrations
            .create_integration(authed(&dev, with(slack, long_value)))
            .await,
        "integration.config.channel",
    );

    let integration = create_integration(&app, &dev, &installed, "Job").await;
    let update = |config: HashMap<String, String>| pb::UpdateIntegrationRequest {
        integration: Some(pb::Integration {
            name: integration.name.clone(),
            config,
            ..Default::default()
        }),
        update_mask: mask(&["config"]),
    };
    assert_invalid(
        integrations
            .update_integration(authed(&dev, update(missing)))
            .await,
        "integration.config.monitor_id",
    );
    assert_invalid(
        integrations
            .update_integration(authed(&dev, update(unknown)))
            .await,
        "integration.config.bogus",
    );
    let unchanged = get_integration(&app, &dev, &integration.name)
        .await
        .expect("get integration");
    assert_eq!(unchanged, integration);
}
storage_test!(integration_types_and_config_are_checked_against_the_catalog);

async fn update_masks_are_checked(app: TestApp) {
    let dev = developer();
    let mut apps = app.apps.clone();
    let mut integrations = app.integrations.clone();
    let installed = create_app(&app, &dev, "slack", "Slack").await;
    let integration = create_integration(&app, &dev, &installed, "Job").await;
    let app_update = |paths: Option<prost_types::FieldMask>| pb::UpdateInstalledAppRequest {
        installed_app: Some(pb::InstalledApp {
            name: installed.name.clone(),
            display_name: "Renamed".into(),
            ..Default::default()
        }),
        update_mask: paths,
        ..Default::default()
    };
    for paths in [
        mask(&["service"]),
        mask(&["credentials"]),
        mask(&["display_name", "state"]),
        mask(&["Display_Name"]),
        mask(&[""]),
        mask(&[]),
        None,
    ] {
        assert_invalid(
            apps.update_installed_app(authed(&dev, app_update(paths.clone())))
                .await,
            "update_mask",
        );
    }
    let integration_update = |paths: Option<prost_types::FieldMask>| pb::UpdateIntegrationRequest {
        integration: Some(pb::Integration {
            name: integration.name.clone(),
            display_name: "Renamed".into(),
            ..Default::default()
        }),
        update_mask: paths,
    };
    for paths in [
        mask(&["type"]),
        mask(&["installed_app"]),
        mask(&["display_name", "state"]),
        mask(&[""]),
        mask(&[]),
        None,
    ] {
        assert_invalid(
            integrations
                .update_integration(authed(&dev, integration_update(paths.clone())))
                .await,
            "update_mask",
        );
    }
    let app_now = get_app(&app, &dev, &installed.name)
        .await
        .expect("get installed app");
    assert_eq!(app_now.display_name, "Slack");
    assert_eq!(app_now.etag, installed.etag);
    let integration_now = get_integration(&app, &dev, &integration.name)
        .await
        .expect("get integration");
    assert_eq!(integration_now, integration);
}
storage_test!(update_masks_are_checked);

async fn page_arguments_are_checked(app: TestApp) {
    let dev = developer();
    let viewer = token(TEAM, "viewer", "vera");
    let mut apps = app.apps.clone();
    let mut integrations = app.integrations.clone();
    let installed = create_app(&app, &dev, "slack", "Slack").await;
    create_app(&app, &dev, "slack", "Slack 2").await;
    create_integration(&app, &dev, &installed, "Job 1").await;
    create_integration(&app, &dev, &installed, "Job 2").await;

    let list_apps = |page_size: i32, page_token: &str| pb::ListInstalledAppsRequest {
        page_size,
        page_token: page_token.into(),
        ..Default::default()
    };
    let list_integrations = |page_size: i32, page_token: &str| pb::ListIntegrationsRequest {
        page_size,
        page_token: page_token.into(),
        ..Default::default()
    };
    for page_size in [-1, i32::MIN] {
        assert_invalid(
            apps.list_installed_apps(authed(&viewer, list_apps(page_size, "")))
                .await,
            "page_size",
        );
        assert_invalid(
            integrations
                .list_integrations(authed(&viewer, list_integrations(page_size, "")))
                .await,
            "page_size",
        );
    }
    for garbage in [
        "garbage!",
        "AAAA",
        "cDF8aW5zdGFsbGVkQXBwc3wxfA",
        &"x".repeat(2000),
    ] {
        assert_invalid(
            apps.list_installed_apps(authed(&viewer, list_apps(1, garbage)))
                .await,
            "page_token",
        );
        assert_invalid(
            integrations
                .list_integrations(authed(&viewer, list_integrations(1, garbage)))
                .await,
            "page_token",
        );
    }

    // A token is bound to the listing and the filter it came from.
    let apps_token = apps
        .list_installed_apps(authed(&viewer, list_apps(1, "")))
        .await
        .expect("list apps")
        .into_inner()
        .next_page_token;
    let integrations_token = integrations
        .list_integrations(authed(&viewer, list_integrations(1, "")))
        .await
        .expect("list integrations")
        .into_inner()
        .next_page_token;
    assert!(!apps_token.is_empty() && !integrations_token.is_empty());
    assert_invalid(
        apps.list_installed_apps(authed(&viewer, list_apps(1, &integrations_token)))
            .await,
        "page_token",
    );
    assert_invalid(
        integrations
            .list_integrations(authed(&viewer, list_integrations(1, &apps_token)))
            .await,
        "page_token",
    );
    assert_invalid(
        integrations
            .list_integrations(authed(
                &viewer,
                pb::ListIntegrationsRequest {
                    page_size: 1,
                    page_token: integrations_token.clone(),
                    state: pb::integration::State::Active as i32,
                    ..Default::default()
                },
            ))
            .await,
        "page_token",
    );
    assert_invalid(
        integrations
            .list_integrations(authed(
                &viewer,
                pb::ListIntegrationsRequest {
                    page_size: 1,
                    page_token: integrations_token.clone(),
                    installed_app: installed.name.clone(),
                    ..Default::default()
                },
            ))
            .await,
        "page_token",
    );
    // Sealed: an edited token, or this team's token in another team's identical listing, is
    // refused; nothing of the row it names (its id) can be read from it.
    let mut edited = URL_SAFE_NO_PAD.decode(&integrations_token).expect("base64");
    let last = edited.len() - 1;
    edited[last] ^= 1;
    assert_invalid(
        integrations
            .list_integrations(authed(
                &viewer,
                list_integrations(1, &URL_SAFE_NO_PAD.encode(&edited)),
            ))
            .await,
        "page_token",
    );
    let other_team = token("globex", "viewer", "gus");
    assert_invalid(
        integrations
            .list_integrations(authed(
                &other_team,
                list_integrations(1, &integrations_token),
            ))
            .await,
        "page_token",
    );
    assert_invalid(
        apps.list_installed_apps(authed(&other_team, list_apps(1, &apps_token)))
            .await,
        "page_token",
    );
    let first_row = integrations
        .list_integrations(authed(&viewer, list_integrations(1, "")))
        .await
        .expect("list")
        .into_inner()
        .integrations
        .remove(0);
    let id = first_row.name.rsplit('/').next().expect("an id").to_owned();
    let clear = URL_SAFE_NO_PAD.decode(&integrations_token).expect("base64");
    assert!(!clear.windows(id.len()).any(|w| w == id.as_bytes()));
    // The same token with the same filter goes on.
    let second = integrations
        .list_integrations(authed(&viewer, list_integrations(1, &integrations_token)))
        .await
        .expect("the token continues its own listing")
        .into_inner();
    assert_eq!(second.integrations.len(), 1);
    assert_invalid(
        integrations
            .list_integrations(authed(
                &viewer,
                pb::ListIntegrationsRequest {
                    state: 99,
                    ..Default::default()
                },
            ))
            .await,
        "state",
    );
}
storage_test!(page_arguments_are_checked);

async fn watch_arguments_are_checked(app: TestApp) {
    let viewer = token(TEAM, "viewer", "vera");
    let mut integrations = app.integrations.clone();
    let watch = |start_cursor: &str, types: Vec<i32>| pb::WatchIntegrationEventsRequest {
        parent: String::new(),
        start_cursor: start_cursor.into(),
        types,
    };
    let ahead = crate::fixtures::cursors(Some(TEAM)).encode(1 << 40);
    for cursor in ["garbage!", "AAAAAAAAAAAAAAAA", "aWhjMQ", ahead.as_str()] {
        assert_invalid(
            integrations
                .watch_integration_events(authed(&viewer, watch(cursor, Vec::new())))
                .await,
            "start_cursor",
        );
    }
    for types in [vec![99], vec![0], vec![1, 42], vec![-1]] {
        assert_invalid(
            integrations
                .watch_integration_events(authed(&viewer, watch("", types.clone())))
                .await,
            "types",
        );
    }
    // The valid request still watches.
    let mut stream = integrations
        .watch_integration_events(authed(&viewer, watch("", vec![1, 4])))
        .await
        .expect("watch with known types")
        .into_inner();
    let first = tokio::time::timeout(CALL_TIMEOUT, stream.message())
        .await
        .expect("in time")
        .expect("a message")
        .expect("not the end");
    assert!(first.checkpoint);
}
storage_test!(watch_arguments_are_checked);

async fn a_request_over_the_size_limit_fails_cleanly_and_the_server_goes_on(app: TestApp) {
    let dev = developer();
    let mut apps = app.apps.clone();
    let mut huge = app_request("slack", "Huge", "xoxb-1");
    huge.installed_app.as_mut().expect("app").connected_to = "x".repeat(2 * 1024 * 1024);
    let status = apps
        .create_installed_app(authed(&dev, huge))
        .await
        .expect_err("a 2 MiB request");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(error_reason(&status), "RESOURCE_EXHAUSTED");
    let mut large_credentials = app_request("slack", "Huge", "xoxb-1");
    large_credentials
        .credentials
        .insert("access_token".into(), "t".repeat(1024 * 1024 + 1));
    let status = apps
        .create_installed_app(authed(&dev, large_credentials))
        .await
        .expect_err("a 1 MiB credential");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(error_reason(&status), "RESOURCE_EXHAUSTED");

    // Still serving, on the same connection and on a new one.
    apps.list_services(authed(&dev, pb::ListServicesRequest {}))
        .await
        .expect("still serving");
    let created = create_app(&app, &dev, "slack", "After").await;
    let listed = apps
        .list_installed_apps(authed(&dev, pb::ListInstalledAppsRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .installed_apps;
    assert_eq!(
        listed.into_iter().map(|a| a.name).collect::<Vec<_>>(),
        vec![created.name],
        "only the app after the refused ones exists"
    );
    let mut fresh =
        integration_hub::pb::installed_app_service_client::InstalledAppServiceClient::connect(
            app.address.clone(),
        )
        .await
        .expect("a new connection");
    fresh
        .list_services(authed(&dev, pb::ListServicesRequest {}))
        .await
        .expect("a new connection is served");
}
storage_test!(a_request_over_the_size_limit_fails_cleanly_and_the_server_goes_on);

async fn a_page_size_above_1000_is_clamped_not_refused(app: TestApp) {
    let dev = developer();
    let mut created = BTreeSet::new();
    for i in 0..3 {
        created.insert(
            create_app(&app, &dev, "slack", &format!("Slack {i}"))
                .await
                .name,
        );
    }
    for page_size in [5000, 1001, i32::MAX] {
        let page = app
            .apps
            .clone()
            .list_installed_apps(authed(
                &dev,
                pb::ListInstalledAppsRequest {
                    page_size,
                    ..Default::default()
                },
            ))
            .await
            .expect("a large page size is accepted")
            .into_inner();
        let names: BTreeSet<String> = page.installed_apps.into_iter().map(|a| a.name).collect();
        assert_eq!(names, created, "page_size {page_size}");
        assert!(page.next_page_token.is_empty());
    }
}
storage_test!(a_page_size_above_1000_is_clamped_not_refused);

async fn pages_of_two_return_every_app_exactly_once(app: TestApp) {
    let dev = developer();
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            create_app(&app, &dev, "slack", &format!("Slack {i}"))
                .await
                .name,
        );
    }
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .apps
            .clone()
            .list_installed_apps(authed(
                &dev,
                pb::ListInstalledAppsRequest {
                    page_size: 2,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("a page")
            .into_inner();
        sizes.push(page.installed_apps.len());
        seen.extend(page.installed_apps.into_iter().map(|a| a.name));
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(sizes.len() < 10, "the listing does not end");
        page_token = page.next_page_token;
    }
    assert_eq!(sizes, vec![2, 2, 2, 1]);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no app twice: {seen:?}");
    assert_eq!(
        unique,
        created.iter().collect::<BTreeSet<_>>(),
        "every app once"
    );
}
storage_test!(pages_of_two_return_every_app_exactly_once);

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
    let listed = apps
        .list_installed_apps(authed(&dev, pb::ListInstalledAppsRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .installed_apps;
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
    let listed = apps
        .list_installed_apps(authed(&dev, pb::ListInstalledAppsRequest::default()))
        .await
        .expect("list")
        .into_inner()
        .installed_apps;
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
