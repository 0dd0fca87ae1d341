//! Bad input answers INVALID_ARGUMENT with a `BadRequest` naming the field (listings are in
//! `pages.rs`, request ids in `request_ids.rs`).

use std::collections::HashMap;

use integration_hub::pb;
use pb::reauthenticate_integration_request::Auth;

use crate::fixtures::{
    TEAM, app_request, assert_invalid, create_app, create_integration, credentials, delete_app,
    get_app, get_integration, integration_request_on, job_of, own_integration_request,
};
use crate::helpers::{TestApp, authed, token};
use crate::storage_test;

pub fn developer() -> String {
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
