//! Installed-app events: the five kinds reach `WatchInstalledAppEvents` in order with their
//! actor, reason and a snapshot without credentials; the stream resumes from a cursor, filters
//! by type, and keeps to its family (integration watches never see app events and back).

use integration_hub::pb;
use pb::InstalledAppEventType as Kind;
use tonic::Code;
use tonic::codec::Streaming;

use crate::fixtures::*;
use crate::helpers::{TestApp, authed};
use crate::storage_test;

async fn watch_apps(
    app: &TestApp,
    token: &str,
    start_cursor: &str,
    types: &[Kind],
) -> Result<Streaming<pb::WatchInstalledAppEventsResponse>, tonic::Status> {
    app.apps
        .clone()
        .watch_installed_app_events(authed(
            token,
            pb::WatchInstalledAppEventsRequest {
                start_cursor: start_cursor.into(),
                types: types.iter().map(|t| *t as i32).collect(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// Reads until `n` app events arrived (checkpoints skipped).
async fn app_events(
    stream: &mut Streaming<pb::WatchInstalledAppEventsResponse>,
    n: usize,
) -> Vec<pb::InstalledAppEvent> {
    let mut events = Vec::new();
    while events.len() < n {
        match tokio::time::timeout(WAIT, stream.message()).await {
            Ok(Ok(Some(message))) => {
                assert!(!message.cursor.is_empty(), "every message has a cursor");
                events.extend(message.events);
            }
            other => panic!("no app events ({} of {n}): {other:?}", events.len()),
        }
    }
    assert_eq!(events.len(), n, "no more than asked for");
    events
}

fn kinds(events: &[pb::InstalledAppEvent]) -> Vec<Kind> {
    events
        .iter()
        .map(|e| Kind::try_from(e.r#type).expect("known type"))
        .collect()
}

async fn every_installed_app_change_is_an_event_with_actor_reason_and_a_snapshot(app: TestApp) {
    let p = people(&app);
    let mut stream = watch_apps(&app, &p.viewer, "", &[]).await.expect("watch");
    let opening = stream.message().await.expect("message").expect("open");
    assert!(opening.checkpoint && opening.events.is_empty());

    let slack = create_app_with(&app, &p.dana, "slack", "Team Slack", "xoxb-first-secret").await;
    report_rejected(&app, &p.service, &slack.name, "invalid_auth from slack")
        .await
        .expect("report");
    app.apps
        .clone()
        .update_installed_app(authed(
            &p.dana,
            update_credentials(&slack.name, credentials("xoxb-second-secret")),
        ))
        .await
        .expect("replace credentials");
    delete_app(&app, &p.admin, &slack.name, "", false)
        .await
        .expect("delete");

    let events = app_events(&mut stream, 5).await;
    assert_eq!(
        kinds(&events),
        [
            Kind::InstalledAppCreated,
            Kind::InstalledAppNeedsReauth,
            Kind::InstalledAppCredentialsReplaced,
            Kind::InstalledAppRestored,
            Kind::InstalledAppDeleted,
        ]
    );
    let actors: Vec<_> = events.iter().map(|e| e.actor.as_str()).collect();
    assert_eq!(actors, ["dana", "monitor-runner", "dana", "dana", "ada"]);
    assert_eq!(events[1].reason, "invalid_auth from slack");
    for event in &events {
        assert_eq!(event.installed_app_name, slack.name);
        let snapshot = event.installed_app.as_ref().expect("snapshot");
        assert_eq!(snapshot.name, slack.name);
        assert_eq!(snapshot.display_name, "Team Slack");
        assert!(event.time.is_some() && !event.event_id.is_empty());
    }
    let state = |i: usize| events[i].installed_app.as_ref().unwrap().state;
    assert_eq!(state(1), pb::installed_app::State::NeedsReauth as i32);
    assert_eq!(state(3), pb::installed_app::State::Active as i32);
    let text = format!("{events:?}");
    assert!(!text.contains("xoxb-first-secret") && !text.contains("xoxb-second-secret"));

    // Resuming after the second event replays the rest, and a filter keeps only its types.
    let mut resumed = watch_apps(&app, &p.viewer, &events[1].cursor, &[])
        .await
        .expect("resume");
    assert_eq!(
        kinds(&app_events(&mut resumed, 3).await),
        [
            Kind::InstalledAppCredentialsReplaced,
            Kind::InstalledAppRestored,
            Kind::InstalledAppDeleted,
        ]
    );
    let mut deleted = watch_apps(
        &app,
        &p.viewer,
        &opening.cursor,
        &[Kind::InstalledAppDeleted],
    )
    .await
    .expect("filtered");
    let only = app_events(&mut deleted, 1).await;
    assert_eq!(only[0].event_id, events[4].event_id);
}
storage_test!(every_installed_app_change_is_an_event_with_actor_reason_and_a_snapshot);

async fn app_and_integration_watches_each_see_only_their_own_events(app: TestApp) {
    let p = people(&app);
    let (mut integrations, start) = watch_live(&app, &p.viewer).await;
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let job = create_integration(&app, &p.dana, &slack, "Job").await;
    // The integration watch skips the app's creation and sees the integration first.
    let seen = next_events(&mut integrations, 1, WAIT).await;
    assert_eq!(seen[0].integration_name, job.name);
    assert_eq!(
        event_type(&seen[0]),
        pb::IntegrationEventType::IntegrationCreated
    );
    // The app watch, from the same cursor, sees the app and not the integration.
    let mut apps = watch_apps(&app, &p.viewer, &start, &[])
        .await
        .expect("watch");
    let events = app_events(&mut apps, 1).await;
    assert_eq!(kinds(&events), [Kind::InstalledAppCreated]);
    create_app(&app, &p.dana, "github", "GitHub").await;
    let next = app_events(&mut apps, 1).await;
    assert_eq!(next[0].installed_app.as_ref().unwrap().service, "github");
}
storage_test!(app_and_integration_watches_each_see_only_their_own_events);

async fn another_teams_app_events_are_invisible_and_bad_requests_are_refused(app: TestApp) {
    let p = people(&app);
    let outsider = app.token("globex", "admin", "gus");
    let mut theirs = watch_apps(&app, &outsider, "", &[]).await.expect("watch");
    theirs
        .message()
        .await
        .expect("message")
        .expect("checkpoint");
    create_app(&app, &p.dana, "slack", "Team Slack").await;
    let mine = create_app(&app, &outsider, "slack", "Globex Slack").await;
    let events = app_events(&mut theirs, 1).await;
    assert_eq!(events[0].installed_app_name, mine.name);

    let other_team = app
        .apps
        .clone()
        .watch_installed_app_events(authed(
            &outsider,
            pb::WatchInstalledAppEventsRequest {
                parent: format!("teams/{TEAM}"),
                ..Default::default()
            },
        ))
        .await;
    expect_code(other_team, Code::PermissionDenied);
    let unknown = app
        .apps
        .clone()
        .watch_installed_app_events(authed(
            &p.viewer,
            pb::WatchInstalledAppEventsRequest {
                types: vec![0, 99],
                start_cursor: "not a cursor".into(),
                ..Default::default()
            },
        ))
        .await;
    let status = expect_code(unknown, Code::InvalidArgument);
    let mut fields = violated_fields(&status);
    fields.sort();
    assert_eq!(fields, ["start_cursor", "types"]);
}
storage_test!(another_teams_app_events_are_invisible_and_bad_requests_are_refused);
