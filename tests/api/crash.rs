//! The crash harness: SIGKILL at random moments during creates, deletes and bulk
//! reauthentications, restart, and check that nothing was half applied and no event was lost
//! or doubled. `CRASH_ITERATIONS` (default 3) sets the number of kills per backend:
//!
//! ```sh
//! CRASH_ITERATIONS=100 cargo test --test api crash_harness -- --nocapture
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use integration_hub::pb;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

use crate::fixtures::{app_request, integration_request_on};
use crate::helpers::{Backend, authed, token};
use crate::process::{Server, ServerProcess};
use crate::storage_test;

fn iterations() -> usize {
    std::env::var("CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// A small xorshift generator: enough randomness for kill moments, no dependency.
struct Random(u64);

impl Random {
    fn seeded() -> Random {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1);
        Random(nanos | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Creates, deletes and rebinds until the server dies under it.
async fn workload(server: &ServerProcess, round: usize) {
    let (mut apps, mut integrations) = server.clients().await;
    let dev = token("acme", "developer", "dana");
    let admin = token("acme", "admin", "alice");
    for step in 0.. {
        let Ok(app) = apps
            .create_installed_app(authed(
                &dev,
                app_request("slack", &format!("App {round}.{step}"), "xoxb-1"),
            ))
            .await
        else {
            return;
        };
        let app = app.into_inner().name;
        for n in 0..(1 + step % 5) {
            let request = integration_request_on("slack", &app, &format!("Results {n}"));
            if integrations
                .create_integration(authed(&dev, request))
                .await
                .is_err()
            {
                return;
            }
        }
        let delete = pb::DeleteInstalledAppRequest {
            name: app.clone(),
            ..Default::default()
        };
        if apps
            .delete_installed_app(authed(&admin, delete))
            .await
            .is_err()
        {
            return;
        }
        let Ok(replacement) = apps
            .create_installed_app(authed(
                &dev,
                app_request("slack", &format!("Replacement {round}.{step}"), "xoxb-1"),
            ))
            .await
        else {
            return;
        };
        let rebind = pb::ReauthenticateIntegrationsRequest {
            from_installed_app: app,
            to_installed_app: replacement.into_inner().name,
            ..Default::default()
        };
        if integrations
            .reauthenticate_integrations(authed(&dev, rebind))
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Follows the event stream, remembering the last cursor received.
async fn follow_cursor(server: &ServerProcess, start: String, last: Arc<Mutex<String>>) {
    let (_, mut integrations) = server.clients().await;
    let request = pb::WatchIntegrationEventsRequest {
        start_cursor: start,
        ..Default::default()
    };
    let Ok(stream) = integrations
        .watch_integration_events(authed(&token("acme", "viewer", "vic"), request))
        .await
    else {
        return;
    };
    let mut stream = stream.into_inner();
    while let Ok(Some(message)) = stream.message().await {
        *last.lock().expect("cursor lock") = message.cursor;
    }
}

async fn scalar(db: &DatabaseConnection, sql: &str) -> i64 {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await
        .expect("query")
        .expect("a row");
    row.try_get_by_index::<i64>(0).expect("an integer")
}

/// Checks the invariants of the database after a crash and restart.
async fn check_invariants(url: &str, backend: Backend) -> usize {
    let db = Database::connect(url).await.expect("connect");
    if backend == Backend::Sqlite {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "PRAGMA integrity_check".to_owned(),
            ))
            .await
            .expect("integrity check")
            .expect("a row");
        assert_eq!(row.try_get_by_index::<String>(0).expect("text"), "ok");
    }
    // No half-applied delete: nothing active points at a missing app, and whatever points at
    // a missing app was broken by its deletion.
    let dangling = scalar(
        &db,
        "SELECT COUNT(*) FROM integrations i WHERE i.own_credentials IS NULL \
         AND NOT EXISTS (SELECT 1 FROM installed_apps a WHERE a.id = i.installed_app_id) \
         AND NOT (i.state = 'BROKEN' AND i.broken_reason = 'INSTALLED_APP_DELETED')",
    )
    .await;
    assert_eq!(dangling, 0, "an integration of a deleted app is not broken");
    // Exactly one event per change: each integration's events carry versions 1, 2, ..., v
    // where v is its current version, and the last one's state is its current state.
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            // Integration events only: installed-app events share the log.
            "SELECT integration_id, snapshot FROM events WHERE integration_id <> '' ORDER BY seq"
                .to_owned(),
        ))
        .await
        .expect("events");
    let mut versions: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    for row in rows {
        let id: String = row.try_get("", "integration_id").expect("id");
        let snapshot: String = row.try_get("", "snapshot").expect("snapshot");
        let value: serde_json::Value = serde_json::from_str(&snapshot).expect("snapshot json");
        versions.entry(id).or_default().push((
            value["version"].as_i64().expect("version"),
            value["state"].as_str().expect("state").to_owned(),
        ));
    }
    let current = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT id, version, state FROM integrations".to_owned(),
        ))
        .await
        .expect("integrations");
    assert_eq!(
        current.len(),
        versions.len(),
        "every integration has events, and only those"
    );
    for row in current {
        let id: String = row.try_get("", "id").expect("id");
        let version: i64 = row.try_get("", "version").expect("version");
        let state: String = row.try_get("", "state").expect("state");
        let events = versions.get(&id).expect("events of the integration");
        let seen: Vec<i64> = events.iter().map(|(v, _)| *v).collect();
        assert_eq!(
            seen,
            (1..=version).collect::<Vec<_>>(),
            "integration {id}: one event per change"
        );
        assert_eq!(events.last().map(|(_, s)| s.as_str()), Some(state.as_str()));
    }
    let _ = db.close().await;
    versions.values().map(Vec::len).sum()
}

/// After a restart, a subscriber resuming from its last cursor gets every later event, in
/// order: the same ids as the database holds after that cursor.
async fn check_resume(server: &ServerProcess, url: &str, cursor: &str) {
    let db = Database::connect(url).await.expect("connect");
    let seq = crate::fixtures::seq(cursor);
    let expected: Vec<String> = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            // What an integration watch replays: installed-app events share the log.
            format!(
                "SELECT event_id FROM events WHERE seq > {seq} AND integration_id <> '' ORDER BY seq"
            ),
        ))
        .await
        .expect("events")
        .into_iter()
        .map(|r| r.try_get::<String>("", "event_id").expect("event id"))
        .collect();
    let _ = db.close().await;
    let (_, mut integrations) = server.clients().await;
    let mut stream = integrations
        .watch_integration_events(authed(
            &token("acme", "viewer", "vic"),
            pb::WatchIntegrationEventsRequest {
                start_cursor: cursor.to_owned(),
                ..Default::default()
            },
        ))
        .await
        .expect("resume")
        .into_inner();
    let mut received = Vec::new();
    while received.len() < expected.len() {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("events in time")
            .expect("stream ok")
            .expect("stream open");
        received.extend(message.events.into_iter().map(|e| e.event_id));
    }
    assert_eq!(
        received, expected,
        "resuming replays exactly what follows the cursor"
    );
}

async fn crash_harness(server: Server) {
    let (url, backend) = (server.database_url().to_owned(), server.backend());
    let mut random = Random::seeded();
    let mut server = server.start();
    let cursor = Arc::new(Mutex::new(String::new()));
    for round in 0..iterations() {
        let start = cursor.lock().expect("cursor lock").clone();
        let follower = {
            let cursor = cursor.clone();
            let server_ref = &server;
            let start = if start.is_empty() {
                // A live watch first, so the cursor is known before any change.
                let (_, mut integrations) = server_ref.clients().await;
                let first = integrations
                    .watch_integration_events(authed(
                        &token("acme", "viewer", "vic"),
                        pb::WatchIntegrationEventsRequest::default(),
                    ))
                    .await
                    .expect("watch")
                    .into_inner()
                    .message()
                    .await
                    .expect("stream ok")
                    .expect("checkpoint");
                first.cursor
            } else {
                start
            };
            *cursor.lock().expect("cursor lock") = start.clone();
            follow_cursor(server_ref, start, cursor)
        };
        let kill_after = Duration::from_millis(100 + random.below(600));
        tokio::select! {
            _ = workload(&server, round) => panic!("the workload stopped before the kill"),
            _ = follower => {},
            _ = tokio::time::sleep(kill_after) => {},
        }
        server.kill();
        server.restart();
        let events = check_invariants(&url, backend).await;
        let last = cursor.lock().expect("cursor lock").clone();
        check_resume(&server, &url, &last).await;
        println!(
            "crash round {round} ({backend:?}): killed after {kill_after:?}; {events} events in the log; invariants hold"
        );
    }
}

storage_test!(process crash_harness);
