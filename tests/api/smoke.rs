use integration_hub::pb;

use crate::fixtures::{create_app_with, create_integration};
use crate::helpers::TestApp;
use crate::storage_test;

async fn a_developer_adds_an_app_and_an_integration_on_it(mut app: TestApp) {
    let dev = app.token("acme", "developer", "dana");
    let created = create_app_with(&app, &dev, "slack", "Slack", "xoxb-1").await;
    assert!(created.name.starts_with("teams/acme/installedApps/"));
    let integration = create_integration(&app, &dev, &created, "Monitor results").await;
    assert_eq!(integration.installed_app, created.name);
    assert_eq!(integration.state, pb::integration::State::Active as i32);
    app.stop().await;
}
storage_test!(a_developer_adds_an_app_and_an_integration_on_it);
