//! The Rust client (`integration-hub-client`) against the real server: a watch stream that
//! resumes across restarts, crashes and replica changes and yields every event exactly once
//! and in order; CURSOR_EXPIRED as a typed error; the bearer token sent and refreshed; retries
//! of idempotent calls only; and the `deliver` example end to end.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
// The server's generated types, for the scripted server.
use integration_hub::pb as spb;
use integration_hub::store::Store;
use integration_hub_client as hub;
use integration_hub_client::{BearerAuth, Client, RetryPolicy, Token, WatchError};
use tokio::sync::mpsc;
use tonic::Code;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use crate::fixtures::{TEAM, WAIT, people, seq, token_of_another_secret};
use crate::helpers::{TestApp, token};
use crate::process::Server;
use crate::storage_test;

mod calls;
mod example;
mod scripted;
mod watch;

/// Fast retries, and enough of them to outlast a restart.
fn test_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 200,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(100),
        ..RetryPolicy::default()
    }
}

fn endpoint(port: u16) -> Endpoint {
    Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("uri")
        .connect_timeout(Duration::from_secs(2))
}

/// A channel over a set of replicas the test changes, as a Kubernetes Service's endpoints
/// change: the client reconnects to whichever is in the set.
struct Replicas {
    channel: Channel,
    changes: mpsc::Sender<Change<u16, Endpoint>>,
}

impl Replicas {
    async fn at(port: u16) -> Replicas {
        let (channel, changes) = Channel::balance_channel(8);
        let replicas = Replicas { channel, changes };
        replicas.add(port).await;
        replicas
    }

    async fn add(&self, port: u16) {
        self.changes
            .send(Change::Insert(port, endpoint(port)))
            .await
            .expect("the balance channel is open");
    }

    async fn remove(&self, port: u16) {
        self.changes
            .send(Change::Remove(port))
            .await
            .expect("the balance channel is open");
    }

    fn client(&self, token: &str) -> Client {
        Client::new(
            self.channel.clone(),
            BearerAuth::from_static(token).expect("token"),
        )
        .with_retry(test_policy())
    }
}

fn integration_request(
    installed_app: &str,
    name: &str,
    request_id: &str,
) -> hub::pb::CreateIntegrationRequest {
    hub::pb::CreateIntegrationRequest {
        integration: Some(hub::pb::Integration {
            installed_app: installed_app.into(),
            r#type: "slack.post_monitor_results".into(),
            display_name: name.into(),
            config: HashMap::from([
                ("channel".to_owned(), "#ops".to_owned()),
                ("monitor_id".to_owned(), "m-1".to_owned()),
            ]),
            ..Default::default()
        }),
        request_id: request_id.into(),
        ..Default::default()
    }
}

fn app_request(display_name: &str, secret: &str) -> hub::pb::CreateInstalledAppRequest {
    hub::pb::CreateInstalledAppRequest {
        installed_app: Some(hub::pb::InstalledApp {
            service: "slack".into(),
            display_name: display_name.into(),
            ..Default::default()
        }),
        credentials: HashMap::from([("access_token".to_owned(), secret.to_owned())]),
        ..Default::default()
    }
}

async fn add_app(client: &Client, display_name: &str, secret: &str) -> hub::pb::InstalledApp {
    client
        .create_installed_app(app_request(display_name, secret))
        .await
        .unwrap_or_else(|status| panic!("create installed app: {status:?}"))
}

async fn next_item(
    stream: &mut hub::EventStream,
) -> Option<Result<hub::pb::IntegrationEvent, WatchError>> {
    next_item_within(stream, WAIT).await
}

async fn next_item_within(
    stream: &mut hub::EventStream,
    wait: Duration,
) -> Option<Result<hub::pb::IntegrationEvent, WatchError>> {
    tokio::time::timeout(wait, stream.next())
        .await
        .expect("the stream answers within the wait")
}
