//! The event delivery contract (README, "Events: what subscribers can rely on"): live watches, resuming from a cursor (also
//! across a restart), type filters, list-then-watch, checkpoints, shutdown and fan-out.

use std::collections::HashSet;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use integration_hub::pb;
use pb::IntegrationEventType as Kind;
use tonic::Code;

use crate::fixtures::*;
use crate::helpers::{Backend, TestApp, TestDb, authed, spawn_with, test_args, token};
use crate::process::Server;
use crate::storage_test;

/// The checkpoint interval of the test servers is 1 s: one must come well within this.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(3);

async fn delete_integration(app: &TestApp, token: &str, name: &str) {
    app.integrations
        .clone()
        .delete_integration(authed(
            token,
            pb::DeleteIntegrationRequest {
                name: name.into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_or_else(|status| panic!("delete integration {name}: {status:?}"));
}

fn ids(events: &[pb::IntegrationEvent]) -> Vec<String> {
    events.iter().map(|e| e.event_id.clone()).collect()
}

async fn a_live_watch_opens_with_a_checkpoint_then_delivers_changes_in_order(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let mut stream = watch(&app, &p.viewer, "", &[]).await;
    let opening = next_message(&mut stream, WAIT).await;
    assert!(opening.checkpoint, "the first message is a checkpoint");
    assert!(opening.events.is_empty());
    let mut last = seq(&opening.cursor);

    let a = create_integration(&app, &p.dana, &slack, "A").await;
    let b = create_integration(&app, &p.dana, &slack, "B").await;
    rename_integration(&app, &p.dana, &a.name, "A renamed").await;
    delete_integration(&app, &p.dana, &b.name).await;

    let mut events = Vec::new();
    while events.len() < 4 {
        let message = next_message(&mut stream, WAIT).await;
        if message.checkpoint {
            assert!(message.events.is_empty(), "a checkpoint carries no events");
            assert!(seq(&message.cursor) >= last, "a checkpoint never goes back");
            last = seq(&message.cursor);
            continue;
        }
        let final_cursor = &message.events.last().expect("events").cursor;
        assert_eq!(
            &message.cursor, final_cursor,
            "a message's cursor is its last event's"
        );
        for event in &message.events {
            assert!(seq(&event.cursor) > last, "cursors strictly increase");
            last = seq(&event.cursor);
        }
        events.extend(message.events);
    }
    assert_eq!(
        summary(&events),
        vec![
            (Kind::IntegrationCreated, a.name.clone()),
            (Kind::IntegrationCreated, b.name.clone()),
            (Kind::IntegrationUpdated, a.name.clone()),
            (Kind::IntegrationDeleted, b.name.clone()),
        ]
    );
    assert_eq!(
        ids(&events).into_iter().collect::<HashSet<_>>().len(),
        4,
        "distinct event ids"
    );
}
storage_test!(a_live_watch_opens_with_a_checkpoint_then_delivers_changes_in_order);

async fn concurrent_changes_reach_a_live_watch_in_order_with_no_gaps(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let (mut stream, opening) = watch_live(&app, &p.viewer).await;
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..30 {
        let mut client = app.integrations.clone();
        let request = authed(&p.erik, integration_request(&slack, &format!("Job {i}")));
        writers.spawn(async move { client.create_integration(request).await });
    }
    let mut created = Vec::new();
    while let Some(result) = writers.join_next().await {
        created.push(result.expect("task").expect("create").into_inner().name);
    }

    let live = next_events(&mut stream, 30, Duration::from_secs(30)).await;
    assert_eq!(
        sorted(live.iter().map(|e| e.integration_name.clone()).collect()),
        sorted(created)
    );
    assert!(
        live.windows(2)
            .all(|w| seq(&w[0].cursor) < seq(&w[1].cursor)),
        "cursors strictly increase"
    );
    // The live stream saw the log exactly as it is stored: a replay gives the same sequence.
    let mut replay = watch(&app, &p.viewer, &opening, &[]).await;
    let replayed = next_events(&mut replay, 30, Duration::from_secs(30)).await;
    assert_eq!(ids(&replayed), ids(&live));
}
storage_test!(concurrent_changes_reach_a_live_watch_in_order_with_no_gaps);

/// Watch streams are not cut off by the request timeout (1 s here).
async fn a_watch_stream_outlives_the_request_timeout(backend: Backend) {
    let db = TestDb::new(backend).await;
    let mut args = test_args(&db.url);
    args.request_timeout_secs = 1;
    let app = spawn_with(backend, db, args).await;
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let (mut stream, opening) = watch_live(&app, &p.viewer).await;
    let opened = tokio::time::Instant::now();
    // Read checkpoints for three request timeouts.
    while opened.elapsed() < Duration::from_secs(3) {
        let message = next_message(&mut stream, CHECKPOINT_WAIT).await;
        assert!(message.checkpoint, "{message:?}");
        assert_eq!(message.cursor, opening);
    }
    let integration = create_integration(&app, &p.dana, &slack, "A").await;
    assert_eq!(
        summary(&next_events(&mut stream, 1, WAIT).await),
        vec![(Kind::IntegrationCreated, integration.name)]
    );
}

storage_test!(backend a_watch_stream_outlives_the_request_timeout);

async fn a_watch_resumed_from_an_event_cursor_gets_exactly_the_events_after_it(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let (mut live, _) = watch_live(&app, &p.viewer).await;
    let a = create_integration(&app, &p.dana, &slack, "A").await;
    let b = create_integration(&app, &p.dana, &slack, "B").await;
    let c = create_integration(&app, &p.dana, &slack, "C").await;
    rename_integration(&app, &p.dana, &a.name, "A renamed").await;
    let before = next_events(&mut live, 4, WAIT).await;
    // Resume after the second event (B created).
    let k = &before[1];
    assert_eq!(
        (event_type(k), k.integration_name.clone()),
        (Kind::IntegrationCreated, b.name.clone())
    );

    rename_integration(&app, &p.dana, &b.name, "B renamed").await;
    delete_integration(&app, &p.dana, &c.name).await;
    let after = next_events(&mut live, 2, WAIT).await;

    let mut resumed = watch(&app, &p.viewer, &k.cursor, &[]).await;
    let replayed = next_events(&mut resumed, 4, WAIT).await;
    let expected: Vec<_> = before[2..].iter().chain(&after).cloned().collect();
    assert_eq!(ids(&replayed), ids(&expected), "exactly the events after k");
    assert_eq!(replayed, expected, "the same events, as first delivered");

    // Nothing older follows: the next event on the resumed watch is a new one.
    rename_integration(&app, &p.dana, &a.name, "A again").await;
    let next = next_events(&mut resumed, 1, WAIT).await;
    assert_eq!(
        summary(&next),
        vec![(Kind::IntegrationUpdated, a.name.clone())]
    );
    assert!(seq(&next[0].cursor) > seq(&after[1].cursor));
}
storage_test!(a_watch_resumed_from_an_event_cursor_gets_exactly_the_events_after_it);

async fn a_watch_filtered_to_broken_events_sees_no_other_types(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let mut stream = watch(&app, &p.viewer, "", &[Kind::IntegrationBroken]).await;
    assert!(next_message(&mut stream, WAIT).await.checkpoint);

    let using = create_integrations(&app, &p.erik, &slack, "Job", 2).await;
    rename_integration(&app, &p.erik, &using[0].name, "Renamed").await;
    delete_app(&app, &p.admin, &slack.name, "", false)
        .await
        .expect("delete");
    let events = next_events(&mut stream, 2, WAIT).await;
    assert_eq!(
        summary(&events),
        using
            .iter()
            .map(|i| (Kind::IntegrationBroken, i.name.clone()))
            .collect::<Vec<_>>(),
        "only the BROKEN events, none of the CREATED or UPDATED before them"
    );

    // A CREATED event followed by a BROKEN one: only the BROKEN one arrives.
    let github = create_app(&app, &p.dana, "github", "GitHub").await;
    let backup = create_integration(&app, &p.erik, &github, "Backup").await;
    delete_app(&app, &p.admin, &github.name, "", false)
        .await
        .expect("delete");
    let next = next_events(&mut stream, 1, WAIT).await;
    assert_eq!(summary(&next), vec![(Kind::IntegrationBroken, backup.name)]);
}
storage_test!(a_watch_filtered_to_broken_events_sees_no_other_types);

async fn watching_from_a_listings_cursor_misses_nothing_and_repeats_nothing(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let a = create_integration(&app, &p.dana, &slack, "A").await;
    let b = create_integration(&app, &p.dana, &slack, "B").await;

    let listed = list_integrations(&app, &p.viewer, "", pb::integration::State::Unspecified).await;
    assert_eq!(
        names(&listed.integrations),
        vec![a.name.clone(), b.name.clone()]
    );
    assert!(!listed.event_cursor.is_empty());

    let c = create_integration(&app, &p.dana, &slack, "C").await;
    rename_integration(&app, &p.dana, &a.name, "A renamed").await;
    delete_integration(&app, &p.dana, &b.name).await;

    let mut stream = watch(&app, &p.viewer, &listed.event_cursor, &[]).await;
    let events = next_events(&mut stream, 3, WAIT).await;
    assert_eq!(
        summary(&events),
        vec![
            (Kind::IntegrationCreated, c.name.clone()),
            (Kind::IntegrationUpdated, a.name.clone()),
            (Kind::IntegrationDeleted, b.name.clone()),
        ]
    );
    rename_integration(&app, &p.dana, &c.name, "C renamed").await;
    assert_eq!(
        summary(&next_events(&mut stream, 1, WAIT).await),
        vec![(Kind::IntegrationUpdated, c.name.clone())]
    );
}
storage_test!(watching_from_a_listings_cursor_misses_nothing_and_repeats_nothing);

async fn a_watch_resumes_across_a_server_restart(mut app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let (mut stream, _) = watch_live(&app, &p.viewer).await;
    let a = create_integration(&app, &p.dana, &slack, "A").await;
    let b = create_integration(&app, &p.dana, &slack, "B").await;
    let seen = next_events(&mut stream, 2, WAIT).await;
    let cursor = seen[1].cursor.clone();

    app.stop().await;
    let (_, status) = stream_end(&mut stream, WAIT).await;
    assert_eq!(status.code(), Code::Unavailable);
    let app = app.restart().await;

    let c = create_integration(&app, &p.dana, &slack, "C").await;
    rename_integration(&app, &p.dana, &a.name, "A renamed").await;
    let mut resumed = watch(&app, &p.viewer, &cursor, &[]).await;
    let events = next_events(&mut resumed, 2, WAIT).await;
    assert_eq!(
        summary(&events),
        vec![
            (Kind::IntegrationCreated, c.name.clone()),
            (Kind::IntegrationUpdated, a.name.clone()),
        ]
    );
    assert!(seq(&events[0].cursor) > seq(&cursor));
    rename_integration(&app, &p.dana, &b.name, "B renamed").await;
    assert_eq!(
        summary(&next_events(&mut resumed, 1, WAIT).await),
        vec![(Kind::IntegrationUpdated, b.name.clone())]
    );
}
storage_test!(a_watch_resumes_across_a_server_restart);

async fn an_idle_watch_receives_checkpoints_carrying_the_current_cursor(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let (mut stream, opening) = watch_live(&app, &p.viewer).await;

    // Nothing happens: the next message is a checkpoint at the same place.
    let idle = next_message(&mut stream, CHECKPOINT_WAIT).await;
    assert!(idle.checkpoint && idle.events.is_empty(), "{idle:?}");
    assert_eq!(idle.cursor, opening);

    // After an event, checkpoints carry that event's cursor.
    create_integration(&app, &p.dana, &slack, "A").await;
    let event = next_events(&mut stream, 1, WAIT).await.remove(0);
    let after = next_message(&mut stream, CHECKPOINT_WAIT).await;
    assert!(after.checkpoint && after.events.is_empty(), "{after:?}");
    assert_eq!(after.cursor, event.cursor);

    // Another team's change is not delivered, but the checkpoints move past it, so a resume
    // does not read it again.
    let globex_dev = app.token("globex", "developer", "gus");
    let globex_app = create_app(&app, &globex_dev, "slack", "Globex Slack").await;
    let (mut globex, _) = watch_live(&app, &app.token("globex", "viewer", "gail")).await;
    create_integration(&app, &globex_dev, &globex_app, "G").await;
    let elsewhere = next_events(&mut globex, 1, WAIT).await.remove(0);
    let deadline = tokio::time::Instant::now() + CHECKPOINT_WAIT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = next_message(&mut stream, left).await;
        assert!(
            message.events.is_empty(),
            "another team's event leaked: {message:?}"
        );
        assert!(seq(&message.cursor) <= seq(&elsewhere.cursor));
        if seq(&message.cursor) == seq(&elsewhere.cursor) {
            break;
        }
    }
}
storage_test!(an_idle_watch_receives_checkpoints_carrying_the_current_cursor);

async fn a_malformed_or_future_start_cursor_is_an_invalid_argument(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    create_integration(&app, &p.dana, &slack, "A").await;

    for malformed in ["not-a-cursor", "aWhjMQ", "12345"] {
        let status = expect_code(
            try_watch(&app, &p.viewer, malformed, &[]).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), vec!["start_cursor".to_owned()]);
    }

    let listed = list_integrations(&app, &p.viewer, "", pb::integration::State::Unspecified).await;
    let head = seq(&listed.event_cursor);
    assert!(head > 0);
    // The head itself is a fine place to start; one past it is not.
    let mut at_head = watch(&app, &p.viewer, &listed.event_cursor, &[]).await;
    let ahead = cursors(Some(TEAM)).encode(head + 1);
    let status = expect_code(
        try_watch(&app, &p.viewer, &ahead, &[]).await,
        Code::InvalidArgument,
    );
    assert_eq!(violated_fields(&status), vec!["start_cursor".to_owned()]);
    let far_ahead = cursors(Some(TEAM)).encode(head + 1_000_000);
    expect_code(
        try_watch(&app, &p.viewer, &far_ahead, &[]).await,
        Code::InvalidArgument,
    );
    // Cursors are sealed: one byte changed, or a cursor of the same position sealed for
    // another team, is not a cursor of this team.
    let mut edited = URL_SAFE_NO_PAD
        .decode(&listed.event_cursor)
        .expect("base64");
    let last = edited.len() - 1;
    edited[last] ^= 1;
    let other_team = cursors(Some("globex")).encode(head);
    assert_ne!(other_team, listed.event_cursor);
    for foreign in [URL_SAFE_NO_PAD.encode(&edited), other_team] {
        let status = expect_code(
            try_watch(&app, &p.viewer, &foreign, &[]).await,
            Code::InvalidArgument,
        );
        assert_eq!(violated_fields(&status), vec!["start_cursor".to_owned()]);
    }
    // The clear cursors of earlier versions (`ihc1` and the sequence number) expire cleanly.
    let mut retired = b"ihc1".to_vec();
    retired.extend_from_slice(&head.to_be_bytes());
    let status = expect_code(
        try_watch(&app, &p.viewer, &URL_SAFE_NO_PAD.encode(retired), &[]).await,
        Code::FailedPrecondition,
    );
    assert_eq!(error_reason(&status), "CURSOR_EXPIRED");
    // Nothing of the position shows in the cursor.
    let clear = URL_SAFE_NO_PAD
        .decode(&listed.event_cursor)
        .expect("base64");
    assert!(!clear.windows(8).any(|w| w == head.to_be_bytes()));

    let b = create_integration(&app, &p.dana, &slack, "B").await;
    assert_eq!(
        summary(&next_events(&mut at_head, 1, WAIT).await),
        vec![(Kind::IntegrationCreated, b.name)]
    );
}
storage_test!(a_malformed_or_future_start_cursor_is_an_invalid_argument);

async fn shutdown_ends_every_watch_with_unavailable_and_a_cursor_that_resumes(mut app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        streams.push(watch_live(&app, &p.viewer).await.0);
    }
    let a = create_integration(&app, &p.dana, &slack, "A").await;
    let b = create_integration(&app, &p.dana, &slack, "B").await;
    let made = [
        (Kind::IntegrationCreated, a.name.clone()),
        (Kind::IntegrationCreated, b.name.clone()),
    ];
    // Two watchers read both events; the third reads nothing before the stop.
    let mut seen = Vec::new();
    for stream in &mut streams[..2] {
        seen.push(next_events(stream, 2, WAIT).await);
    }
    seen.push(Vec::new());

    let started = std::time::Instant::now();
    app.stop().await;
    // Well before the 20 s hard deadline: the streams were ended, not cut off.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the server took {:?} to stop",
        started.elapsed()
    );

    let mut cursors = Vec::new();
    for (stream, seen) in streams.iter_mut().zip(&mut seen) {
        let (rest, status) = stream_end(stream, WAIT).await;
        seen.extend(rest);
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(error_reason(&status), "UNAVAILABLE");
        let cursor = error_metadata(&status)
            .remove("cursor")
            .expect("the cursor to resume from");
        assert_eq!(summary(seen), made[..seen.len()], "delivered in order");
        if let Some(last) = seen.last() {
            assert_eq!(seq(&cursor), seq(&last.cursor));
        }
        cursors.push(cursor);
    }

    let app = app.restart().await;
    let c = create_integration(&app, &p.dana, &slack, "C").await;
    let mut resumed = Vec::new();
    for (cursor, seen) in cursors.iter().zip(&seen) {
        let mut expected = made[seen.len()..].to_vec();
        expected.push((Kind::IntegrationCreated, c.name.clone()));
        let mut stream = watch(&app, &p.viewer, cursor, &[]).await;
        let events = next_events(&mut stream, expected.len(), WAIT).await;
        assert_eq!(summary(&events), expected, "resumed from {cursor}");
        resumed.push(stream);
    }
    rename_integration(&app, &p.dana, &c.name, "C renamed").await;
    for stream in &mut resumed {
        assert_eq!(
            summary(&next_events(stream, 1, WAIT).await),
            vec![(Kind::IntegrationUpdated, c.name.clone())]
        );
    }
}
storage_test!(shutdown_ends_every_watch_with_unavailable_and_a_cursor_that_resumes);

async fn one_delete_breaking_200_integrations_reaches_every_watcher_in_order(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let other = create_app(&app, &p.dana, "slack", "Other Slack").await;
    let sentinel = create_integration(&app, &p.dana, &other, "Sentinel").await;
    let using = create_integrations(&app, &p.dana, &slack, "Job", 200).await;
    let mut watchers = Vec::new();
    for i in 0..5 {
        let viewer = app.token(TEAM, "viewer", &format!("watcher-{i}"));
        watchers.push(watch_live(&app, &viewer).await.0);
    }

    let broken = delete_app(&app, &p.admin, &slack.name, "", false)
        .await
        .expect("delete");
    assert_eq!(sorted(broken.clone()), sorted(names(&using)));

    for watcher in &mut watchers {
        let events = next_events(watcher, 200, Duration::from_secs(60)).await;
        assert!(
            events
                .iter()
                .all(|e| event_type(e) == Kind::IntegrationBroken),
            "only BROKEN events"
        );
        let delivered: Vec<String> = events.iter().map(|e| e.integration_name.clone()).collect();
        assert_eq!(delivered, broken, "in the order of the delete, none twice");
        assert!(
            events
                .windows(2)
                .all(|w| seq(&w[0].cursor) < seq(&w[1].cursor)),
            "cursors strictly increase"
        );
        assert_eq!(ids(&events).into_iter().collect::<HashSet<_>>().len(), 200);
    }
    // No duplicate follows either: the next event everyone sees is a new one.
    rename_integration(&app, &p.dana, &sentinel.name, "Sentinel renamed").await;
    for watcher in &mut watchers {
        assert_eq!(
            summary(&next_events(watcher, 1, WAIT).await),
            vec![(Kind::IntegrationUpdated, sentinel.name.clone())]
        );
    }
}
storage_test!(one_delete_breaking_200_integrations_reaches_every_watcher_in_order);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_ends_watch_streams_and_exits_cleanly_on_sigterm() {
    let mut server = Server::fresh(Backend::Sqlite).await.start();
    let hub = server.clients().await;
    let (mut apps, mut client) = hub.clone();
    let viewer = token(TEAM, "viewer", "vic");
    let dana = token(TEAM, "developer", "dana");
    let service = token(TEAM, "service", "monitor-runner");

    let mut stream = watch(&hub, &viewer, "", &[]).await;
    assert!(next_message(&mut stream, WAIT).await.checkpoint);
    let secret = "xoxb-subprocess-secret-4711";
    let slack = apps
        .create_installed_app(authed(
            &dana,
            pb::CreateInstalledAppRequest {
                installed_app: Some(pb::InstalledApp {
                    service: "slack".into(),
                    display_name: "Team Slack".into(),
                    ..Default::default()
                }),
                credentials: credentials(secret),
                ..Default::default()
            },
        ))
        .await
        .expect("create app")
        .into_inner();
    let integration = client
        .create_integration(authed(&dana, integration_request(&slack, "Job")))
        .await
        .expect("create integration")
        .into_inner();
    let resolved = client
        .resolve_integration_credentials(authed(
            &service,
            pb::ResolveIntegrationCredentialsRequest {
                name: integration.name.clone(),
            },
        ))
        .await
        .expect("resolve")
        .into_inner();
    assert_eq!(resolved.credentials, credentials(secret));
    let created = next_events(&mut stream, 1, WAIT).await;
    assert_eq!(created[0].integration_name, integration.name);

    server.sigterm();
    let sigterm = std::time::Instant::now();

    let (_, status) = stream_end(&mut stream, Duration::from_secs(25)).await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let cursor = error_metadata(&status)
        .remove("cursor")
        .expect("the cursor to resume from");
    assert_eq!(cursor, created[0].cursor);

    let left = Duration::from_secs(25).saturating_sub(sigterm.elapsed());
    let exit = tokio::task::block_in_place(|| server.exit_within(left))
        .expect("the process exits within 25 s of SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");

    let lines = server.logs();
    assert!(
        lines.iter().all(|l| !l.contains(secret)),
        "a credential reached the log"
    );
}
