//! Event delivery limits: retention (CURSOR_EXPIRED), watch stream bounds.

use std::time::Duration;

use integration_hub::pb;
use integration_hub::store::Store;
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{Backend, TestApp, TestDb, authed, spawn_with, test_args};
use crate::storage_test;

async fn add_app_and_integration(app: &mut TestApp, token: &str) -> String {
    let created = app
        .apps
        .create_installed_app(authed(
            token,
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
    app.integrations
        .create_integration(authed(
            token,
            pb::CreateIntegrationRequest {
                integration: Some(pb::Integration {
                    installed_app: created.name.clone(),
                    r#type: "slack.post_monitor_results".into(),
                    display_name: "Results".into(),
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
        .expect("create integration");
    created.name
}

async fn a_cursor_older_than_the_retention_answers_cursor_expired(mut app: TestApp) {
    let dev = app.token("acme", "developer", "dana");
    let listed = app
        .integrations
        .list_integrations(authed(&dev, pb::ListIntegrationsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    let old_cursor = listed.event_cursor;
    add_app_and_integration(&mut app, &dev).await;
    add_app_and_integration(&mut app, &dev).await;

    // Time is injected through the cutoff: prune as if every event were past the retention.
    let store = Store::connect(&app.db.url, 1).await.expect("store");
    let deleted = store.prune_events(i64::MAX).await.expect("prune");
    assert_eq!(deleted, 2, "both CREATED events are pruned");

    let err = app
        .integrations
        .watch_integration_events(authed(
            &dev,
            pb::WatchIntegrationEventsRequest {
                start_cursor: old_cursor,
                ..Default::default()
            },
        ))
        .await
        .expect_err("an expired cursor is refused");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        err.get_details_error_info().expect("ErrorInfo").reason,
        "CURSOR_EXPIRED"
    );

    // The cursor at the end of the log still resumes.
    let fresh = app
        .integrations
        .list_integrations(authed(&dev, pb::ListIntegrationsRequest::default()))
        .await
        .expect("list")
        .into_inner();
    let mut stream = app
        .integrations
        .watch_integration_events(authed(
            &dev,
            pb::WatchIntegrationEventsRequest {
                start_cursor: fresh.event_cursor.clone(),
                ..Default::default()
            },
        ))
        .await
        .expect("a current cursor resumes")
        .into_inner();
    add_app_and_integration(&mut app, &dev).await;
    // Checkpoints may come first; wait for the event.
    let mut message = pb::WatchIntegrationEventsResponse {
        checkpoint: true,
        ..Default::default()
    };
    while message.checkpoint {
        message = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("an event within 10 s")
            .expect("stream ok")
            .expect("a message");
    }
    assert_eq!(
        message.events[0].r#type,
        pb::IntegrationEventType::IntegrationCreated as i32
    );
    store.close().await;
    app.stop().await;
}
storage_test!(a_cursor_older_than_the_retention_answers_cursor_expired);

/// Watch streams per principal are bounded: past the limit RESOURCE_EXHAUSTED, and a place
/// frees up when a stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_per_principal_are_bounded() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut args = test_args(&db.url);
    args.max_watch_streams_per_principal = 2;
    let mut app = spawn_with(Backend::Sqlite, db, args).await;
    let dev = app.token("acme", "developer", "dana");
    let other = app.token("acme", "developer", "omar");
    let watch = |token: &str| authed(token, pb::WatchIntegrationEventsRequest::default());
    let first = app
        .integrations
        .watch_integration_events(watch(&dev))
        .await
        .expect("first stream");
    let _second = app
        .integrations
        .watch_integration_events(watch(&dev))
        .await
        .expect("second stream");
    let err = app
        .integrations
        .watch_integration_events(watch(&dev))
        .await
        .expect_err("third stream is refused");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(
        err.get_details_error_info().expect("ErrorInfo").reason,
        "RESOURCE_EXHAUSTED"
    );
    // Another principal is not affected.
    app.integrations
        .watch_integration_events(watch(&other))
        .await
        .expect("another principal's stream");
    // Ending a stream frees its place (the server notices the client left).
    drop(first);
    let reopened = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match app.integrations.watch_integration_events(watch(&dev)).await {
                Ok(stream) => return stream,
                Err(err) => {
                    assert_eq!(err.code(), Code::ResourceExhausted);
                    tokio::task::yield_now().await;
                }
            }
        }
    })
    .await;
    assert!(reopened.is_ok(), "a place frees up after a stream ends");
    app.stop().await;
}
