//! Event delivery limits: retention (CURSOR_EXPIRED), watch stream bounds.

use std::time::Duration;

use integration_hub::pb;
use integration_hub::store::Store;
use pb::integration::State;
use tonic::Code;

use crate::fixtures::{
    WAIT, create_app_with, create_integration, error_reason, expect_code, list_integrations,
    next_events, try_watch,
};
use crate::helpers::{Backend, TestApp, TestDb, authed, spawn_with, test_args};
use crate::storage_test;

async fn add_app_and_integration(app: &TestApp, token: &str) {
    let installed = create_app_with(app, token, "slack", "Slack", "xoxb-1").await;
    create_integration(app, token, &installed, "Results").await;
}

async fn a_cursor_older_than_the_retention_answers_cursor_expired(mut app: TestApp) {
    let dev = app.token("acme", "developer", "dana");
    let old_cursor = list_integrations(&app, &dev, "", State::Unspecified)
        .await
        .event_cursor;
    add_app_and_integration(&app, &dev).await;
    add_app_and_integration(&app, &dev).await;

    // Time is injected through the cutoff: prune as if every event were past the retention.
    let store = Store::connect(&app.db.url, 1).await.expect("store");
    let deleted = store.prune_events(i64::MAX).await.expect("prune");
    assert_eq!(
        deleted, 4,
        "both integrations' and both apps' CREATED events are pruned"
    );

    let err = expect_code(
        try_watch(&app, &dev, &old_cursor, &[]).await,
        Code::FailedPrecondition,
    );
    assert_eq!(error_reason(&err), "CURSOR_EXPIRED");

    // The cursor at the end of the log still resumes.
    let fresh = list_integrations(&app, &dev, "", State::Unspecified).await;
    let mut stream = try_watch(&app, &dev, &fresh.event_cursor, &[])
        .await
        .expect("a current cursor resumes");
    add_app_and_integration(&app, &dev).await;
    // Checkpoints may come first; wait for the event.
    let events = next_events(&mut stream, 1, WAIT).await;
    assert_eq!(
        events[0].r#type,
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
    assert_eq!(error_reason(&err), "RESOURCE_EXHAUSTED");
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
