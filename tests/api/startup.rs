//! Start-up and shutdown of the real server: bad settings stop it with a message naming the
//! setting; thousands of open watch streams do not hold up shutdown.

use std::time::{Duration, Instant};

use integration_hub::pb::installed_app_service_client::InstalledAppServiceClient;
use integration_hub::pb::integration_service_client::IntegrationServiceClient;
use tonic::Code;
use tonic::transport::Channel;

use crate::fixtures::watch_live;
use crate::helpers::{Backend, TestDb, spawn_with, test_args, token};
use crate::process::Server;

/// Runs `serve` with `env` on top of a valid configuration; returns its stderr.
fn serve_fails_with(env: &[(&str, &str)]) -> String {
    // A start that wrongly succeeds would serve forever: give it a bounded time to refuse.
    let (status, stderr) = Server::default_database()
        .envs(env)
        .run_to_exit(Duration::from_secs(30));
    assert!(!status.success(), "serve must refuse {env:?}");
    stderr
}

#[test]
fn an_invalid_setting_stops_the_start_with_a_message_naming_it() {
    let keys = serve_fails_with(&[("INTEGRATION_HUB_ENCRYPTION_KEYS", "1:bm90LWEta2V5")]);
    assert!(keys.contains("INTEGRATION_HUB_ENCRYPTION_KEYS"), "{keys}");
    assert!(
        !keys.contains("bm90LWEta2V5"),
        "the key text is never echoed: {keys}"
    );
    let roles = serve_fails_with(&[("INTEGRATION_HUB_ROLE_MAP", "admin=superuser")]);
    assert!(roles.contains("INTEGRATION_HUB_ROLE_MAP"), "{roles}");
    let listen = serve_fails_with(&[("INTEGRATION_HUB_LISTEN", "not-an-address")]);
    assert!(
        listen.contains("--listen") && listen.contains("not-an-address"),
        "{listen}"
    );
    let interval = serve_fails_with(&[("INTEGRATION_HUB_CHECKPOINT_INTERVAL_SECS", "0")]);
    assert!(
        interval.contains("--checkpoint-interval-secs"),
        "{interval}"
    );
    let catalog =
        serve_fails_with(&[("INTEGRATION_HUB_CATALOG_FILE", "/nonexistent/catalog.json")]);
    assert!(
        catalog.contains("INTEGRATION_HUB_CATALOG_FILE"),
        "{catalog}"
    );
    let secret = serve_fails_with(&[("INTEGRATION_HUB_JWT_HS256_SECRET", "short")]);
    assert!(
        !secret.contains("short\n") && secret.contains("token settings"),
        "{secret}"
    );
}

/// 2,000 open watch streams: shutdown still ends every one with UNAVAILABLE and its cursor,
/// well within the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_thousands_of_watch_streams_within_the_deadline() {
    const CHANNELS: usize = 20;
    const PER_CHANNEL: usize = 100;
    let db = TestDb::new(Backend::Sqlite).await;
    let mut args = test_args(&db.url);
    args.max_watch_streams_per_principal = CHANNELS * PER_CHANNEL;
    args.checkpoint_interval_secs = 3600;
    let mut app = spawn_with(Backend::Sqlite, db, args).await;
    let viewer = token("acme", "viewer", "vic");
    let mut streams = Vec::with_capacity(CHANNELS * PER_CHANNEL);
    for _ in 0..CHANNELS {
        // Separate connections: one HTTP/2 connection carries a bounded number of streams.
        let channel = Channel::from_shared(app.address.clone())
            .expect("uri")
            .connect()
            .await
            .expect("connect");
        let clients = (
            InstalledAppServiceClient::new(channel.clone()),
            IntegrationServiceClient::new(channel),
        );
        for _ in 0..PER_CHANNEL {
            let (stream, _) = watch_live(&clients, &viewer).await;
            streams.push(stream);
        }
    }
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| {
            tokio::spawn(async move {
                loop {
                    match stream.message().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => return None,
                        Err(status) => return Some(status),
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    app.stop().await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(20), "shutdown took {took:?}");
    for reader in readers {
        let status = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .expect("every stream ends")
            .expect("reader")
            .expect("ends with a status, not silently");
        assert_eq!(status.code(), Code::Unavailable);
    }
}
