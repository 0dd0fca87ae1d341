//! Exporting the audit trail: `WatchAuditEvents` delivers a team's records in
//! order from a cursor and resumes after a kill -9 and on another replica, losing and
//! repeating nothing; only admins and the named audit readers may watch; `audit export`
//! writes a time range as JSON lines. Every test runs the built binary on both databases.

use std::time::{Duration, Instant};

use integration_hub::pb;
use integration_hub::pb::audit_service_client::AuditServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::fixtures::app_request;
use crate::helpers::{authed, token};
use crate::process::{Server, ServerProcess};
use crate::storage_test;

/// Creates installed apps named `names` in `team`: one audit record each, naming the app.
async fn created(server: &ServerProcess, team: &str, names: &[&str]) -> Vec<String> {
    let (mut apps, _) = server.clients().await;
    let dev = token(team, "developer", "dana");
    let mut resources = Vec::new();
    for name in names {
        let app = apps
            .create_installed_app(authed(&dev, app_request("slack", name, "xoxb-1")))
            .await
            .expect("create an installed app")
            .into_inner();
        resources.push(app.name);
    }
    resources
}

/// Reads the stream until it has delivered `n` records: their resources, and the last
/// message's cursor.
async fn read(
    stream: &mut tonic::Streaming<pb::WatchAuditEventsResponse>,
    n: usize,
) -> (Vec<String>, String) {
    let (mut resources, mut cursor) = (Vec::new(), String::new());
    let deadline = Instant::now() + Duration::from_secs(30);
    while resources.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {resources:?} of {n} records came"))
            .expect("a message")
            .expect("the stream goes on");
        resources.extend(message.audit_events.into_iter().map(|e| e.resource));
        cursor = message.cursor;
    }
    (resources, cursor)
}

async fn watch(
    channel: Channel,
    bearer: &str,
    parent: &str,
    start_cursor: &str,
) -> Result<tonic::Streaming<pb::WatchAuditEventsResponse>, tonic::Status> {
    Ok(AuditServiceClient::new(channel)
        .watch_audit_events(authed(
            bearer,
            pb::WatchAuditEventsRequest {
                parent: parent.into(),
                start_cursor: start_cursor.into(),
            },
        ))
        .await?
        .into_inner())
}

storage_test!(process the_audit_stream_resumes_after_a_kill_9_losing_and_repeating_nothing);
async fn the_audit_stream_resumes_after_a_kill_9_losing_and_repeating_nothing(server: Server) {
    let server = server.env("INTEGRATION_HUB_AUDIT_SEAL_INTERVAL_MS", "50");
    let admin = token("acme", "admin", "ada");
    let mut running = server.start();
    let first = created(&running, "acme", &["A1", "A2", "A3", "A4", "A5"]).await;
    let mut stream = watch(running.channel().await, &admin, "", "")
        .await
        .expect("watch");
    let (seen, cursor) = read(&mut stream, 5).await;
    assert_eq!(seen, first, "in order, each once");
    // Written, perhaps not yet sealed, when the server dies.
    let during = created(&running, "acme", &["B1", "B2"]).await;
    running.kill();
    drop(stream);
    running.restart();
    let after = created(&running, "acme", &["C1", "C2"]).await;
    // Resumed on another replica of the same database.
    let other = server.start();
    let mut resumed = watch(other.channel().await, &admin, "teams/acme", &cursor)
        .await
        .expect("resume");
    let (seen, _) = read(&mut resumed, 4).await;
    let expected: Vec<String> = during.into_iter().chain(after).collect();
    assert_eq!(seen, expected, "nothing lost, nothing repeated, in order");
    // Nothing more comes: the next message is a checkpoint.
    let next = tokio::time::timeout(Duration::from_secs(10), resumed.message())
        .await
        .expect("a checkpoint in time")
        .expect("a message")
        .expect("the stream goes on");
    assert!(next.checkpoint && next.audit_events.is_empty(), "{next:?}");
    // A cursor is the team's own.
    let theirs = watch(
        other.channel().await,
        &token("beta", "admin", "bob"),
        "",
        &cursor,
    )
    .await
    .expect_err("another team's cursor");
    assert_eq!(theirs.code(), Code::InvalidArgument, "{theirs:?}");
}

storage_test!(process only_admins_and_named_audit_readers_may_watch_the_audit_log);
async fn only_admins_and_named_audit_readers_may_watch_the_audit_log(server: Server) {
    let server = server.envs(&[
        ("INTEGRATION_HUB_AUDIT_SEAL_INTERVAL_MS", "50"),
        ("INTEGRATION_HUB_AUDIT_READERS", "siem,collector"),
        ("INTEGRATION_HUB_ALL_TEAMS_SERVICES", "siem"),
    ]);
    let running = server.start();
    let made = created(&running, "acme", &["S1"]).await;
    let stranger = watch(
        running.channel().await,
        &token("acme", "service", "deliverer"),
        "",
        "",
    )
    .await
    .expect_err("a service that is not an audit reader");
    assert_eq!(stranger.code(), Code::PermissionDenied, "{stranger:?}");
    let developer = watch(
        running.channel().await,
        &token("acme", "developer", "dana"),
        "",
        "",
    )
    .await
    .expect_err("a developer");
    assert_eq!(developer.code(), Code::PermissionDenied, "{developer:?}");
    // The SIEM's collector, with a token for every team, names the team it reads.
    let mut stream = watch(
        running.channel().await,
        &token("*", "service", "siem"),
        "teams/acme",
        "",
    )
    .await
    .expect("an audit reader");
    let (seen, _) = read(&mut stream, 1).await;
    assert_eq!(seen, made);
}

storage_test!(process audit_export_writes_a_time_range_as_json_lines);
async fn audit_export_writes_a_time_range_as_json_lines(server: Server) {
    let running = server.start();
    let acme = created(&running, "acme", &["E1", "E2", "E3"]).await;
    created(&running, "beta", &["F1"]).await;
    let all = [
        "audit",
        "export",
        "--since",
        "2000-01-01T00:00:00Z",
        "--until",
        "2100-01-01T00:00:00Z",
    ];
    let (status, out) = server.run_command(&[&all[..], &["--team", "acme"]].concat());
    assert!(status.success(), "{out}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let resources: Vec<&str> = lines
        .iter()
        .map(|l| l["resource"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(resources, acme, "oldest first, only the team's");
    for line in &lines {
        assert_eq!(line["team"], "acme");
        assert_eq!(line["action"], "installed_app.create");
        assert!(
            line["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
        assert!(line["mac"].as_str().is_some(), "{line}");
    }
    let (status, out) = server.run_command(&all);
    assert!(status.success(), "{out}");
    assert_eq!(out.lines().count(), 4, "{out}");
    let (status, out) = server.run_command(&[
        "audit",
        "export",
        "--since",
        "2000-01-01T00:00:00Z",
        "--until",
        "2000-01-02T00:00:00Z",
    ]);
    assert!(status.success() && out.is_empty(), "{out}");
}

crate::webhooks::webhook_test!(
    audit_records_are_a_webhook_event_type_for_the_subscriptions_that_name_it
);
async fn audit_records_are_a_webhook_event_type_for_the_subscriptions_that_name_it(
    app: crate::helpers::TestApp,
) {
    use crate::webhook_receiver::Receiver;
    use crate::webhooks::{next_acknowledged, subscribe};
    let p = crate::fixtures::people(&app);
    let mut siem = Receiver::start(&[]);
    let (_, secret) = subscribe(
        &app.channel,
        &p.admin,
        &siem.url(),
        &["AUDIT_EVENT_RECORDED"],
    )
    .await;
    siem.verify_with(&[&secret]);
    let mut every = Receiver::start(&[]);
    let (_, every_secret) = subscribe(&app.channel, &p.admin, &every.url(), &[]).await;
    every.verify_with(&[&every_secret]);
    let slack = crate::fixtures::create_app(&app, &p.dana, "slack", "Audited Slack").await;
    // The SIEM's subscription gets the records, in chain order, signed like every delivery:
    // the two subscriptions' creates, then the app's.
    let mut actions = Vec::new();
    loop {
        let request = next_acknowledged(&mut siem).await;
        assert_eq!(request["verified"], serde_json::json!([true]), "{request}");
        let body = &request["body"];
        assert_eq!(body["type"], "AUDIT_EVENT_RECORDED", "{body}");
        let record = &body["data"]["auditEvent"];
        assert!(
            record["mac"].as_str().is_some() && record["chain_pos"].as_i64() > Some(0),
            "{record}"
        );
        actions.push(record["action"].as_str().unwrap_or_default().to_owned());
        if record["resource"] == slack.name.as_str() {
            assert_eq!(record["actor"], "dana");
            break;
        }
    }
    assert_eq!(
        actions.last().map(String::as_str),
        Some("installed_app.create"),
        "{actions:?}"
    );
    // A subscription of every type does not get them: it opted in to nothing of the kind.
    let first = next_acknowledged(&mut every).await;
    assert_eq!(first["body"]["type"], "INSTALLED_APP_CREATED", "{first}");
    while let Some(request) = every.maybe_next(Duration::from_secs(3)).await {
        assert_ne!(request["body"]["type"], "AUDIT_EVENT_RECORDED", "{request}");
    }
}
