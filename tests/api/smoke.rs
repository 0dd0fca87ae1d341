use integration_hub::pb;

use crate::helpers::{TestApp, authed};
use crate::storage_test;

async fn a_developer_adds_an_app_and_an_integration_on_it(mut app: TestApp) {
    let dev = app.token("acme", "developer", "dana");
    let created = app
        .apps
        .create_installed_app(authed(
            &dev,
            pb::CreateInstalledAppRequest {
                installed_app: Some(pb::InstalledApp {
                    service: "slack".into(),
                    display_name: "Slack".into(),
                    ..Default::default()
                }),
                credentials: [("access_token".to_owned(), "xoxb-1".to_owned())].into(),
                ..Default::default()
            },
        ))
        .await
        .expect("create app")
        .into_inner();
    assert!(created.name.starts_with("teams/acme/installedApps/"));
    let integration = app
        .integrations
        .create_integration(authed(
            &dev,
            pb::CreateIntegrationRequest {
                integration: Some(pb::Integration {
                    installed_app: created.name.clone(),
                    r#type: "slack.post_monitor_results".into(),
                    display_name: "Monitor results".into(),
                    config: [
                        ("channel".to_owned(), "#ops".to_owned()),
                        ("monitor_id".to_owned(), "m-1".to_owned()),
                    ]
                    .into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .expect("create integration")
        .into_inner();
    assert_eq!(integration.installed_app, created.name);
    assert_eq!(integration.state, pb::integration::State::Active as i32);
    app.stop().await;
}
storage_test!(a_developer_adds_an_app_and_an_integration_on_it);
