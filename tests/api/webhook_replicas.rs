//! Webhook delivery across processes: a deliverer killed with SIGKILL mid-stream is
//! replaced (its lease expires) and everything arrives, duplicates only with the same
//! `webhook-id`; two replicas on one PostgreSQL deliver each event once per subscription.

use std::collections::HashMap;
use std::time::Duration;

use integration_hub::crypto::KeyRing;
use serde_json::Value;

use crate::fixtures::{create_app, people_tokens};
use crate::helpers::Backend;
use crate::process::{Server, ServerProcess};
use crate::storage_test;
use crate::webhook_receiver::Receiver;
use crate::webhooks::subscribe;

const ENV: [(&str, &str); 6] = [
    ("INTEGRATION_HUB_WEBHOOK_ALLOW_LOOPBACK", "true"),
    ("INTEGRATION_HUB_WEBHOOK_RETRY_INITIAL_MS", "100"),
    ("INTEGRATION_HUB_WEBHOOK_RETRY_MAX_MS", "400"),
    ("INTEGRATION_HUB_WEBHOOK_TIMEOUT_MS", "2000"),
    ("INTEGRATION_HUB_WEBHOOK_LEASE_SECS", "2"),
    ("INTEGRATION_HUB_WEBHOOK_POLL_MS", "50"),
];

async fn add_app(server: &ServerProcess, token: &str, name: &str) {
    create_app(&server.clients().await, token, "slack", name).await;
}

/// Reads requests until `n` distinct webhook ids were acknowledged, counting those `before`
/// already acknowledged; returns the requests read, in the order they arrived.
async fn until_acknowledged(receiver: &mut Receiver, before: &[Value], n: usize) -> Vec<Value> {
    let mut acknowledged: std::collections::HashSet<String> = before
        .iter()
        .filter(|r| r["status"] == 204)
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let mut all = Vec::new();
    while acknowledged.len() < n {
        let request = receiver.next(Duration::from_secs(30)).await;
        assert_eq!(request["verified"][0], true, "verifies: {request}");
        if request["status"] == 204 {
            acknowledged.insert(request["id"].as_str().unwrap().to_owned());
        }
        all.push(request);
    }
    all
}

/// The app names in the order they first arrived, and a check that a repeated
/// webhook-id always carries the same event.
fn first_arrivals(requests: &[Value]) -> Vec<String> {
    let mut by_id: HashMap<String, Value> = HashMap::new();
    let mut order = Vec::new();
    for request in requests {
        let id = request["id"].as_str().unwrap().to_owned();
        let data = request["body"]["data"].clone();
        match by_id.get(&id) {
            Some(earlier) => assert_eq!(earlier, &data, "a duplicate is the same event"),
            None => {
                order.push(
                    data["installedApp"]["displayName"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                );
                by_id.insert(id, data);
            }
        }
    }
    order
}

async fn a_killed_deliverer_is_replaced_and_everything_arrives(server: Server) {
    const APPS: usize = 20;
    let backend = server.backend();
    let keys = KeyRing::generate(1).expect("key").1;
    let (dana, admin) = people_tokens();
    let mut server = server.keys(&keys).envs(&ENV).start();
    // Each answer takes 50 ms, so the kill lands mid-stream.
    let mut receiver = Receiver::start(&["--slow-first", "100000", "--slow-secs", "0.05"]);
    let (_, secret) = subscribe(&server.channel().await, &admin, &receiver.url(), &[]).await;
    receiver.verify_with(&[&secret]);
    let names: Vec<String> = (0..APPS).map(|i| format!("App {i:02}")).collect();
    for name in &names {
        add_app(&server, &dana, name).await;
    }
    let mut requests = Vec::new();
    for _ in 0..5 {
        requests.push(receiver.next(Duration::from_secs(30)).await);
    }
    server.kill();
    server.restart();
    let rest = until_acknowledged(&mut receiver, &requests, APPS).await;
    requests.extend(rest);
    let order = first_arrivals(&requests);
    assert_eq!(order, names, "everything arrived, in order");
    println!(
        "kill -9 ({backend:?}): {} requests for {APPS} events",
        requests.len()
    );
}

storage_test!(process a_killed_deliverer_is_replaced_and_everything_arrives, needs Python);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_each_event_once_per_subscription() {
    crate::needs!(Python, Postgres);
    const APPS: usize = 30;
    let keys = KeyRing::generate(1).expect("key").1;
    let (dana, admin) = people_tokens();
    let server = Server::fresh(Backend::Postgres)
        .await
        .keys(&keys)
        .envs(&ENV);
    let (a, b) = (server.start(), server.start());
    let mut receiver = Receiver::start(&[]);
    let (_, secret) = subscribe(&a.channel().await, &admin, &receiver.url(), &[]).await;
    receiver.verify_with(&[&secret]);
    let names: Vec<String> = (0..APPS).map(|i| format!("App {i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        add_app(if i % 2 == 0 { &a } else { &b }, &dana, name).await;
    }
    let mut requests = until_acknowledged(&mut receiver, &[], APPS).await;
    // Anything else that was going to come (a duplicate) comes within a lease or two.
    while let Some(extra) = receiver.maybe_next(Duration::from_secs(3)).await {
        requests.push(extra);
    }
    assert_eq!(first_arrivals(&requests), names, "in order");
    assert_eq!(
        requests.len(),
        APPS,
        "each event delivered once: {} requests",
        requests.len()
    );
}
