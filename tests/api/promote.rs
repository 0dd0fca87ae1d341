//! Credentials kept as an installed app (issue 13, item 3), on both databases: saved while an
//! integration is added (`save_as_installed_app`) or promoted later
//! (`PromoteIntegrationCredentials`), and the usage counts by state.

use integration_hub::pb;
use pb::IntegrationEventType as Kind;
use sea_orm::{ConnectionTrait, Database, Statement};
use tonic::Code;

use crate::fixtures::*;
use crate::helpers::{TestApp, authed};
use crate::storage_test;

fn save_as(display_name: &str, connected_to: &str) -> pb::SaveAsInstalledApp {
    pb::SaveAsInstalledApp {
        display_name: display_name.into(),
        connected_to: connected_to.into(),
    }
}

async fn create(
    app: &TestApp,
    token: &str,
    request: pb::CreateIntegrationRequest,
) -> Result<pb::Integration, tonic::Status> {
    app.integrations
        .clone()
        .create_integration(authed(token, request))
        .await
        .map(|r| r.into_inner())
}

async fn promote(
    app: &TestApp,
    token: &str,
    request: pb::PromoteIntegrationCredentialsRequest,
) -> Result<pb::PromoteIntegrationCredentialsResponse, tonic::Status> {
    app.integrations
        .clone()
        .promote_integration_credentials(authed(token, request))
        .await
        .map(|r| r.into_inner())
}

fn promote_request(name: &str, include_matching: bool) -> pb::PromoteIntegrationCredentialsRequest {
    pb::PromoteIntegrationCredentialsRequest {
        name: name.into(),
        installed_app: Some(save_as("Promoted Slack", "acme.slack.com")),
        include_matching,
        etag: String::new(),
    }
}

/// How many integrations hold a sealed copy of credentials of their own, by id, read from
/// the database itself.
async fn stored_own_copies(app: &TestApp, ids: &[&str]) -> i64 {
    let db = Database::connect(app.db.url.as_str()).await.expect("db");
    let list = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            format!(
                "SELECT COUNT(*) AS n FROM integrations WHERE id IN ({list}) \
                 AND (own_credentials IS NOT NULL OR key_version IS NOT NULL)"
            ),
        ))
        .await
        .expect("query")
        .expect("a row");
    row.try_get::<i64>("", "n").expect("count")
}

fn id_of(name: &str) -> &str {
    name.rsplit('/').next().expect("an id")
}

async fn creating_an_integration_can_save_its_credentials_as_an_installed_app(app: TestApp) {
    let p = people(&app);
    let mut request = own_integration_request("slack", "Standup", "xoxb-saved");
    request.save_as_installed_app = Some(save_as("Saved Slack", "acme.slack.com"));
    let integration = create(&app, &p.dana, request.clone())
        .await
        .expect("created with its credentials saved as an app");
    assert!(!integration.own_credentials, "{integration:?}");
    assert!(!integration.installed_app.is_empty());
    let saved = get_app(&app, &p.viewer, &integration.installed_app)
        .await
        .expect("the saved app");
    assert_eq!(saved.display_name, "Saved Slack");
    assert_eq!(saved.connected_to, "acme.slack.com");
    assert_eq!(saved.service, "slack");
    assert_eq!(
        (saved.creator.as_str(), saved.owner.as_str()),
        ("dana", "dana")
    );
    assert_eq!(
        (
            saved.integration_count,
            saved.active_integration_count,
            saved.broken_integration_count
        ),
        (1, 1, 0)
    );
    let resolved = resolve(&app, &p.service, &integration.name)
        .await
        .expect("resolves through the app");
    assert_eq!(resolved.credentials["access_token"], "xoxb-saved");
    assert_eq!(
        stored_own_copies(&app, &[id_of(&integration.name)]).await,
        0
    );

    // Both creations are audited, with the same actor.
    let events = all_events(&app, &p.admin, Default::default()).await;
    let records: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.action.as_str(), e.resource.as_str()))
        .collect();
    assert!(records.contains(&("integration.create", integration.name.as_str())));
    assert!(records.contains(&("installed_app.create", saved.name.as_str())));

    // Saving needs credentials of its own, and a valid app.
    let mut bound = integration_request(&saved, "Bound");
    bound.save_as_installed_app = Some(save_as("Another", ""));
    let status = expect_code(create(&app, &p.dana, bound).await, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), vec!["save_as_installed_app"]);
    let mut nameless = own_integration_request("slack", "Nameless", "xoxb-1");
    nameless.save_as_installed_app = Some(save_as("", ""));
    let status = expect_code(create(&app, &p.dana, nameless).await, Code::InvalidArgument);
    assert_eq!(
        violated_fields(&status),
        vec!["save_as_installed_app.display_name"]
    );

    // All or nothing: a create that fails after the app was made leaves no app behind.
    let mut bad_config = own_integration_request("slack", "Bad", "xoxb-2");
    bad_config.save_as_installed_app = Some(save_as("Orphan", ""));
    if let Some(i) = bad_config.integration.as_mut() {
        i.config.insert("no_such_field".into(), "x".into());
    }
    expect_code(
        create(&app, &p.dana, bad_config).await,
        Code::InvalidArgument,
    );
    let apps = all_apps(&app, &p.viewer).await;
    assert_eq!(apps.len(), 1, "{apps:?}");

    // A retry with the same request id answers with the first integration, and saves no
    // second app.
    request.request_id = "save-once".into();
    let first = create(&app, &p.dana, request.clone()).await.expect("first");
    let again = create(&app, &p.dana, request).await.expect("retry");
    assert_eq!(first.name, again.name);
    assert_eq!(all_apps(&app, &p.viewer).await.len(), 2);
}
storage_test!(creating_an_integration_can_save_its_credentials_as_an_installed_app);

async fn promoting_credentials_rebinds_the_integration_and_erases_its_own_copy(app: TestApp) {
    let p = people(&app);
    let first = create_own_integration(&app, &p.dana, "slack", "First", "xoxb-same").await;
    let twin = create_own_integration(&app, &p.erik, "slack", "Twin", "xoxb-same").await;
    let other = create_own_integration(&app, &p.dana, "slack", "Other", "xoxb-other").await;
    let slack = create_app(&app, &p.dana, "slack", "Slack").await;
    let bound = create_integration(&app, &p.dana, &slack, "Bound").await;
    let (mut stream, _) = watch_live(&app, &p.viewer).await;

    // Viewers and services may not; an integration bound to an app has nothing to promote.
    for token in [&p.viewer, &p.service] {
        expect_code(
            promote(&app, token, promote_request(&first.name, true)).await,
            Code::PermissionDenied,
        );
    }
    let refused = expect_code(
        promote(&app, &p.dana, promote_request(&bound.name, false)).await,
        Code::FailedPrecondition,
    );
    assert_eq!(error_reason(&refused), "FAILED_PRECONDITION");
    let mut stale = promote_request(&first.name, true);
    stale.etag = "v99".into();
    expect_code(promote(&app, &p.dana, stale).await, Code::Aborted);
    let mut missing = promote_request(&first.name, true);
    missing.installed_app = None;
    let status = expect_code(promote(&app, &p.dana, missing).await, Code::InvalidArgument);
    assert_eq!(violated_fields(&status), vec!["installed_app"]);

    // With include_matching, the twin with identical credentials moves too; the other stays.
    let promoted = promote(&app, &p.dana, promote_request(&first.name, true))
        .await
        .expect("promoted");
    let new_app = promoted.installed_app.expect("the app");
    assert_eq!(new_app.display_name, "Promoted Slack");
    assert_eq!(new_app.owner, "dana");
    assert_eq!(new_app.integration_count, 2);
    let moved: Vec<&str> = promoted
        .integrations
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(moved, [first.name.as_str(), twin.name.as_str()]);
    for integration in &promoted.integrations {
        assert_eq!(integration.installed_app, new_app.name);
        assert!(!integration.own_credentials);
        let resolved = resolve(&app, &p.service, &integration.name)
            .await
            .expect("resolves through the new app");
        assert_eq!(resolved.credentials["access_token"], "xoxb-same");
    }
    assert_eq!(
        stored_own_copies(&app, &[id_of(&first.name), id_of(&twin.name)]).await,
        0,
        "their own copies are erased"
    );
    assert_eq!(stored_own_copies(&app, &[id_of(&other.name)]).await, 1);
    let untouched = get_integration(&app, &p.viewer, &other.name).await.unwrap();
    assert!(untouched.own_credentials);
    assert_eq!(untouched.etag, other.etag);

    let updates = next_events(&mut stream, 2, WAIT).await;
    assert_eq!(
        summary(&updates),
        vec![
            (Kind::IntegrationUpdated, first.name.clone()),
            (Kind::IntegrationUpdated, twin.name.clone())
        ]
    );
    for event in &updates {
        let snapshot = event.integration.as_ref().expect("snapshot");
        assert_eq!(snapshot.installed_app, new_app.name);
        assert_eq!(event.actor, "dana");
    }

    // Without include_matching, only the one named moves.
    let alone = create_own_integration(&app, &p.dana, "slack", "Alone", "xoxb-other").await;
    let promoted = promote(&app, &p.dana, promote_request(&alone.name, false))
        .await
        .expect("promoted alone");
    assert_eq!(promoted.integrations.len(), 1);
    assert!(
        get_integration(&app, &p.viewer, &other.name)
            .await
            .unwrap()
            .own_credentials
    );

    let records = all_events(&app, &p.admin, Default::default()).await;
    let promotions: Vec<&str> = records
        .iter()
        .filter(|e| e.action == "integration.promote_credentials")
        .map(|e| e.resource.as_str())
        .collect();
    for name in [&first.name, &twin.name, &alone.name] {
        assert!(promotions.contains(&name.as_str()), "{promotions:?}");
    }
}
storage_test!(promoting_credentials_rebinds_the_integration_and_erases_its_own_copy);

async fn an_app_counts_its_integrations_by_state(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Slack").await;
    let jobs = create_integrations(&app, &p.dana, &slack, "Job", 3).await;
    create_own_integration(&app, &p.dana, "slack", "Own", "xoxb-own").await;
    let counts = |a: &pb::InstalledApp| {
        (
            a.integration_count,
            a.active_integration_count,
            a.broken_integration_count,
        )
    };
    let got = get_app(&app, &p.viewer, &slack.name).await.unwrap();
    assert_eq!(counts(&got), (3, 3, 0));
    report_rejected(&app, &p.service, &slack.name, "401")
        .await
        .expect("reported");
    let got = get_app(&app, &p.viewer, &slack.name).await.unwrap();
    assert_eq!(counts(&got), (3, 0, 3));
    // The listing counts the same way.
    let listed = all_apps(&app, &p.viewer).await;
    let row = listed
        .iter()
        .find(|a| a.name == slack.name)
        .expect("listed");
    assert_eq!(counts(row), (3, 0, 3));
    assert_eq!(jobs.len(), 3);
}
storage_test!(an_app_counts_its_integrations_by_state);
