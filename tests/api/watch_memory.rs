//! A viewer's watch streams cannot take a replica's memory: streams that never read, from the
//! oldest cursor, over large events, against the server as its own process with its resident
//! memory measured. The streams furthest behind end with RESOURCE_EXHAUSTED and a cursor from
//! which a new stream resumes without a gap.

use std::time::Duration;

use integration_hub::pb;
use tonic::Code;

use crate::fixtures::{app_request, error_metadata, error_reason, padded_integration, watch_live};
use crate::helpers::{authed, token};
use crate::process::Server;
use crate::storage_test;

/// Integrations created; each event carries two config values of 2 KB.
const INTEGRATIONS: usize = 600;
/// Streams that never read.
const STALLED: usize = 40;
/// The replica's watch memory budget in this test.
const BUDGET: u64 = 8 << 20;

/// Reads a stream until it has delivered `want` creates or ends; the names it delivered and
/// how it ended (`None`: still open).
async fn drain(
    stream: &mut tonic::Streaming<pb::WatchIntegrationEventsResponse>,
    want: usize,
) -> (Vec<String>, Option<tonic::Status>) {
    let mut names = Vec::new();
    while names.len() < want {
        match tokio::time::timeout(Duration::from_secs(20), stream.message()).await {
            Ok(Ok(Some(message))) => names.extend(
                message
                    .events
                    .into_iter()
                    .filter(|e| e.r#type == pb::IntegrationEventType::IntegrationCreated as i32)
                    .map(|e| e.integration_name),
            ),
            Ok(Ok(None)) => panic!("a watch stream ended without a status"),
            Ok(Err(status)) => return (names, Some(status)),
            Err(_) => panic!(
                "a watch stream stalled after {} of {want} events",
                names.len()
            ),
        }
    }
    (names, None)
}

async fn stalled_watch_streams_hold_bounded_memory(server: Server) {
    let backend = server.backend();
    let server = server
        .env("INTEGRATION_HUB_WATCH_MEMORY_BYTES", &BUDGET.to_string())
        .env("INTEGRATION_HUB_WATCH_STREAM_BUFFER_BYTES", "1048576")
        .start();
    let clients = server.clients().await;
    let viewer = token("acme", "viewer", "vic");
    let dev = token("acme", "developer", "dana");
    let (opening, start) = watch_live(&clients, &viewer).await;
    drop(opening);
    let (mut apps, integrations) = clients;
    let app = apps
        .create_installed_app(authed(&dev, app_request("slack", "Ops", "xoxb-1")))
        .await
        .expect("app")
        .into_inner()
        .name;
    let mut created = Vec::with_capacity(INTEGRATIONS);
    for chunk in (0..INTEGRATIONS).collect::<Vec<_>>().chunks(8) {
        let calls: Vec<_> = chunk
            .iter()
            .map(|n| {
                let mut integrations = integrations.clone();
                let request = authed(&dev, padded_integration(&app, *n, 2000));
                tokio::spawn(async move { integrations.create_integration(request).await })
            })
            .collect();
        for call in calls {
            created.push(call.await.expect("task").expect("create").into_inner().name);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kib();

    // Streams from the oldest cursor, each on its own connection, that never read.
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED {
        // A hostile reader: the smallest HTTP/2 windows, so the server cannot push its
        // backlog into the client's buffers.
        let channel =
            tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", server.port))
                .expect("uri")
                .initial_stream_window_size(65_535)
                .initial_connection_window_size(65_535)
                .connect()
                .await
                .expect("connect");
        let mut client =
            integration_hub::pb::integration_service_client::IntegrationServiceClient::new(channel);
        let request = pb::WatchIntegrationEventsRequest {
            start_cursor: start.clone(),
            ..Default::default()
        };
        let stream = client
            .watch_integration_events(authed(&viewer, request))
            .await
            .expect("open a watch")
            .into_inner();
        stalled.push((client, stream));
    }
    // Let every stream fill what it may; the peak is what counts.
    let mut peak = 0;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(server.rss_kib());
    }
    let grown_mib = peak.saturating_sub(before) as f64 / 1024.0;
    println!(
        "{backend:?}: {STALLED} stalled streams over {INTEGRATIONS} events of ~4 KB: RSS {} MiB -> peak {} MiB (+{grown_mib:.1} MiB; budget {} MiB)",
        before / 1024,
        peak / 1024,
        BUDGET >> 20
    );
    // The budget, plus what HTTP/2 buffers per connection outside it (about 0.5 MiB each).
    let allowed_mib = (BUDGET >> 20) as f64 + STALLED as f64 * 0.75 + 16.0;
    assert!(
        grown_mib < allowed_mib,
        "stalled streams grew the replica by {grown_mib:.1} MiB (allowed {allowed_mib:.1})"
    );

    let expected: std::collections::BTreeSet<String> = created.iter().cloned().collect();
    // Now read them all: the furthest behind were ended with their cursor; resuming from it
    // delivers the rest with no gap and nothing twice.
    let mut evicted = 0;
    for (mut client, mut stream) in stalled {
        let (mut names, ended) = drain(&mut stream, INTEGRATIONS).await;
        if let Some(status) = ended {
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert_eq!(error_reason(&status), "RESOURCE_EXHAUSTED");
            let cursor = error_metadata(&status)
                .get("cursor")
                .cloned()
                .expect("the end carries the resume cursor");
            evicted += 1;
            let request = pb::WatchIntegrationEventsRequest {
                start_cursor: cursor,
                ..Default::default()
            };
            let mut resumed = client
                .watch_integration_events(authed(&viewer, request))
                .await
                .expect("resume")
                .into_inner();
            let (rest, ended) = drain(&mut resumed, INTEGRATIONS - names.len()).await;
            assert!(ended.is_none(), "a lone reader was ended again: {ended:?}");
            names.extend(rest);
        }
        let delivered: std::collections::BTreeSet<_> = names.iter().cloned().collect();
        assert_eq!(delivered.len(), names.len(), "a stream repeated an event");
        assert_eq!(delivered, expected, "a stream lost events");
    }
    println!(
        "{backend:?}: {evicted} of {STALLED} streams ended for memory, each resumed without a gap"
    );
    assert!(
        evicted > 0,
        "the budget was never spent: the test proves nothing"
    );
}

storage_test!(process stalled_watch_streams_hold_bounded_memory);
