//! The Rust client (`integration-hub-client`) against the real server: a watch stream that
//! resumes across restarts, crashes and replica changes and yields every event exactly once
//! and in order; CURSOR_EXPIRED as a typed error; the bearer token sent and refreshed; retries
//! of idempotent calls only; and the `deliver` example end to end.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use integration_hub::crypto::KeyRing;
use integration_hub::domain::types::Cursor;
// The server's generated types, for the scripted server.
use integration_hub::pb as spb;
use integration_hub::store::Store;
use integration_hub_client as hub;
use integration_hub_client::{BearerAuth, Client, RetryPolicy, Token, WatchError};
use tokio::sync::mpsc;
use tonic::Code;
use tonic::transport::channel::Change;
use tonic::transport::{Channel, Endpoint};

use crate::fixtures::{TEAM, WAIT, people, token_of_another_secret};
use crate::helpers::{Backend, TestApp, TestDb, token};
use crate::process::ServerProcess;
use crate::storage_test;

/// The example, compiled into this binary so its delivery logic runs against the real server.
#[allow(dead_code)]
#[path = "../../client/examples/deliver.rs"]
mod deliver_example;

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

/// Creates integrations one after another (each with a request id, so a create cut off by a
/// restart is retried and lands once) until `stop`; returns their names in order.
fn start_writer(
    client: Client,
    installed_app: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut names = Vec::new();
        let run = uuid::Uuid::new_v4().simple().to_string();
        while !stop.load(Ordering::SeqCst) {
            let i = names.len();
            let created = client
                .create_integration(integration_request(
                    &installed_app,
                    &format!("Job {i}"),
                    &format!("{run}-{i}"),
                ))
                .await
                .unwrap_or_else(|status| {
                    panic!("create {i} (retried across restarts): {status:?}")
                });
            names.push(created.name);
        }
        names
    })
}

/// What a consumer task received from its event stream.
struct Consumer {
    events: mpsc::UnboundedReceiver<Result<hub::pb::IntegrationEvent, WatchError>>,
    received: Vec<hub::pb::IntegrationEvent>,
    reconnects: Arc<AtomicUsize>,
}

impl Consumer {
    fn start(mut stream: hub::EventStream) -> Consumer {
        let (tx, events) = mpsc::unbounded_channel();
        let reconnects = Arc::new(AtomicUsize::new(0));
        let seen = reconnects.clone();
        tokio::spawn(async move {
            while let Some(item) = stream.next().await {
                seen.store(stream.reconnects() as usize, Ordering::SeqCst);
                if tx.send(item).is_err() {
                    return;
                }
            }
        });
        Consumer {
            events,
            received: Vec::new(),
            reconnects,
        }
    }

    /// Waits until `n` events in all were received.
    async fn until(&mut self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.received.len() < n {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.events.recv()).await {
                Ok(Some(Ok(event))) => self.received.push(event),
                Ok(Some(Err(err))) => panic!(
                    "the stream failed after {} events: {err}",
                    self.received.len()
                ),
                Ok(None) => panic!("the stream ended after {} events", self.received.len()),
                Err(_) => panic!("only {} of {n} events within 60 s", self.received.len()),
            }
        }
    }
}

/// Every name in `created` is delivered as exactly one CREATED event, in the order of the
/// event log, and nothing else arrived.
fn assert_exactly_once_in_order(received: &[hub::pb::IntegrationEvent], created: &[String]) {
    let delivered: Vec<&str> = received
        .iter()
        .map(|e| e.integration_name.as_str())
        .collect();
    let distinct: HashSet<&str> = delivered.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        delivered.len(),
        "an event was yielded twice"
    );
    let ids: HashSet<&str> = received.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), received.len(), "an event id was yielded twice");
    assert!(
        received
            .iter()
            .all(|e| e.r#type() == hub::pb::IntegrationEventType::IntegrationCreated),
        "only CREATED events"
    );
    assert!(
        received
            .windows(2)
            .all(|w| seq(&w[0].cursor) < seq(&w[1].cursor)),
        "in the order of the log"
    );
    // One writer, one create at a time: the log's order is the order of the creates.
    let created: Vec<&str> = created.iter().map(String::as_str).collect();
    assert_eq!(
        delivered, created,
        "every created integration, once, in order"
    );
}

fn seq(cursor: &str) -> i64 {
    hub::watch::cursor_position(cursor).unwrap_or_else(|| panic!("not a cursor: {cursor:?}"))
}

/// The server's cursors and the client's reading of them agree.
#[test]
fn the_client_reads_the_position_of_the_servers_cursors() {
    for position in [0, 1, 255, 256, 1 << 40, i64::MAX] {
        assert_eq!(
            hub::watch::cursor_position(&Cursor(position).encode()),
            Some(position)
        );
    }
}

/// Stops `app` and starts it again on the same database and keys: on the same port, or on a
/// new one that replaces the old in `replicas`.
async fn restart(app: TestApp, replicas: &Replicas, same_port: bool) -> TestApp {
    let old = app.port;
    let mut args = app.restart_args();
    if same_port {
        args.listen = format!("127.0.0.1:{old}").parse().expect("addr");
    }
    let app = app.restart_with(args).await;
    if app.port != old {
        replicas.remove(old).await;
        replicas.add(app.port).await;
    }
    app
}

const RESTARTS: usize = 4;
/// Events the consumer must receive between two restarts.
const EVENTS_PER_PHASE: usize = 25;

async fn a_resuming_watch_yields_every_event_once_and_in_order_across_restarts(mut app: TestApp) {
    let backend = app.backend;
    let replicas = Replicas::at(app.port).await;
    let p = people(&app);
    // The writer's token callback counts its attempts: more attempts than creates means some
    // creates were cut off by a restart and retried.
    let attempts = Arc::new(AtomicUsize::new(0));
    let dev = {
        let (attempts, dana) = (attempts.clone(), p.dana.clone());
        Client::new(
            replicas.channel.clone(),
            BearerAuth::per_request(move || {
                attempts.fetch_add(1, Ordering::SeqCst);
                dana.clone()
            }),
        )
        .with_retry(test_policy())
    };
    let viewer = replicas.client(&p.viewer);
    let slack = add_app(&dev, "Team Slack", "xoxb-1").await;
    let started = Instant::now();

    let listed = viewer
        .list_integrations(hub::pb::ListIntegrationsRequest::default())
        .await
        .expect("list");
    let mut consumer = Consumer::start(viewer.watch_integration_events(
        hub::pb::WatchIntegrationEventsRequest {
            start_cursor: listed.event_cursor,
            ..Default::default()
        },
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(dev.clone(), slack.name.clone(), stop.clone());

    // Writes before, during (the writer keeps writing while the server stops and starts: its
    // creates are retried) and after each restart; the consumer keeps reading throughout.
    for restart_number in 0..RESTARTS {
        consumer
            .until((restart_number + 1) * EVENTS_PER_PHASE)
            .await;
        app = restart(app, &replicas, restart_number % 2 == 0).await;
    }
    consumer.until((RESTARTS + 1) * EVENTS_PER_PHASE).await;
    stop.store(true, Ordering::SeqCst);
    let created = writer.await.expect("writer");
    let writes = attempts.load(Ordering::SeqCst) - 1;
    assert!(
        writes > created.len(),
        "creates were retried across the restarts: {writes} attempts for {} creates",
        created.len()
    );
    consumer.until(created.len()).await;

    // Nothing more follows: the next event is a new one, not a repeat.
    let last = dev
        .create_integration(integration_request(&slack.name, "Sentinel", ""))
        .await
        .expect("sentinel");
    consumer.until(created.len() + 1).await;
    let mut expected = created.clone();
    expected.push(last.name);
    assert_exactly_once_in_order(&consumer.received, &expected);
    let reconnects = consumer.reconnects.load(Ordering::SeqCst);
    assert!(
        reconnects >= RESTARTS,
        "resumed after each restart: {reconnects}"
    );
    println!(
        "{backend:?}: {} events, each once and in order, across {RESTARTS} restarts ({reconnects} reconnects; {writes} create attempts for {} creates) in {:?}",
        consumer.received.len(),
        created.len(),
        started.elapsed()
    );
    app.stop().await;
}

storage_test!(a_resuming_watch_yields_every_event_once_and_in_order_across_restarts);

/// Crashes (SIGKILL: no status, no cursor, a connection that just breaks) and a move to
/// another replica.
async fn a_watch_survives_killed_servers_and_follows_the_replica_that_replaces_them(
    backend: Backend,
) {
    let db = TestDb::new(backend).await;
    let keys = KeyRing::generate(1).expect("key").1;
    let mut server = ServerProcess::start(&db.url, &keys, &[]);
    let replicas = Replicas::at(server.port).await;
    let dev = replicas.client(&token(TEAM, "developer", "dana"));
    let viewer = replicas.client(&token(TEAM, "viewer", "vic"));
    let slack = add_app(&dev, "Team Slack", "xoxb-1").await;
    let listed = viewer
        .list_integrations(hub::pb::ListIntegrationsRequest::default())
        .await
        .expect("list");
    let mut consumer = Consumer::start(viewer.watch_integration_events(
        hub::pb::WatchIntegrationEventsRequest {
            start_cursor: listed.event_cursor,
            ..Default::default()
        },
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(dev.clone(), slack.name.clone(), stop.clone());

    const KILLS: usize = 2;
    for kill in 0..KILLS {
        consumer.until((kill + 1) * EVENTS_PER_PHASE).await;
        let old = server.port;
        server.kill();
        replicas.remove(old).await;
        server = ServerProcess::start(&db.url, &keys, &[]);
        replicas.add(server.port).await;
    }
    consumer.until((KILLS + 1) * EVENTS_PER_PHASE).await;
    stop.store(true, Ordering::SeqCst);
    let created = writer.await.expect("writer");
    consumer.until(created.len()).await;
    let last = dev
        .create_integration(integration_request(&slack.name, "Sentinel", ""))
        .await
        .expect("sentinel");
    consumer.until(created.len() + 1).await;
    let mut expected = created;
    expected.push(last.name);
    assert_exactly_once_in_order(&consumer.received, &expected);
    println!(
        "{backend:?}: {} events, each once and in order, across {KILLS} killed servers",
        consumer.received.len()
    );
}

mod a_watch_survives_killed_servers_and_follows_the_replica_that_replaces_them {
    use crate::helpers::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_watch_survives_killed_servers_and_follows_the_replica_that_replaces_them(
            Backend::Sqlite,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_watch_survives_killed_servers_and_follows_the_replica_that_replaces_them(
            Backend::Postgres,
        )
        .await;
    }
}

async fn next_item(
    stream: &mut hub::EventStream,
) -> Option<Result<hub::pb::IntegrationEvent, WatchError>> {
    next_item_within(stream, WAIT).await
}

async fn an_expired_cursor_ends_the_stream_with_the_typed_error(app: TestApp) {
    let p = people(&app);
    let replicas = Replicas::at(app.port).await;
    let dev = replicas.client(&p.dana);
    let viewer = replicas.client(&p.viewer);
    let slack = add_app(&dev, "Team Slack", "xoxb-1").await;
    let stale = viewer
        .list_integrations(hub::pb::ListIntegrationsRequest::default())
        .await
        .expect("list")
        .event_cursor;
    for i in 0..2 {
        dev.create_integration(integration_request(&slack.name, &format!("Job {i}"), ""))
            .await
            .expect("create");
    }
    // Time is injected through the cutoff: prune as if every event were past the retention.
    let store = Store::connect(&app.db.url, 1).await.expect("store");
    assert_eq!(store.prune_events(i64::MAX).await.expect("prune"), 2);

    let mut stream = viewer.watch_integration_events(hub::pb::WatchIntegrationEventsRequest {
        start_cursor: stale.clone(),
        ..Default::default()
    });
    match next_item(&mut stream).await {
        Some(Err(WatchError::CursorExpired { cursor, message })) => {
            assert_eq!(cursor, stale);
            assert!(message.contains("retention"), "{message}");
        }
        other => panic!("expected CursorExpired, got {other:?}"),
    }
    assert!(
        next_item(&mut stream).await.is_none(),
        "the stream ends after it"
    );
    // Not retried: one call.
    assert_eq!(stream.reconnects(), 0);

    // A subscriber away longer than the retention: it resumes from its own cursor and is told.
    let listed = viewer
        .list_integrations(hub::pb::ListIntegrationsRequest::default())
        .await
        .expect("list");
    let mut stream = viewer.watch_integration_events(hub::pb::WatchIntegrationEventsRequest {
        start_cursor: listed.event_cursor,
        ..Default::default()
    });
    let a = dev
        .create_integration(integration_request(&slack.name, "A", ""))
        .await
        .expect("create");
    let seen = next_item(&mut stream)
        .await
        .expect("an item")
        .expect("an event");
    assert_eq!(seen.integration_name, a.name);
    // The server goes away; the stream retries in the background while nothing answers.
    let old = app.port;
    let pending = tokio::spawn(async move {
        let item = next_item_within(&mut stream, Duration::from_secs(60)).await;
        (item, stream)
    });
    replicas.remove(old).await;
    let app = app.restart().await;
    // Meanwhile, on the new server: more events, all past the retention.
    let client_of_new = Client::new(
        Channel::from_shared(app.address.clone())
            .expect("uri")
            .connect_lazy(),
        BearerAuth::from_static(&p.dana).expect("token"),
    );
    client_of_new
        .create_integration(integration_request(&slack.name, "B", ""))
        .await
        .expect("create");
    assert!(store.prune_events(i64::MAX).await.expect("prune") >= 2);
    replicas.add(app.port).await;
    let (item, mut stream) = pending.await.expect("task");
    match item {
        Some(Err(WatchError::CursorExpired { cursor, .. })) => assert_eq!(cursor, seen.cursor),
        other => panic!("expected CursorExpired, got {other:?}"),
    }
    assert!(next_item(&mut stream).await.is_none());
    store.close().await;
}
storage_test!(an_expired_cursor_ends_the_stream_with_the_typed_error);

async fn next_item_within(
    stream: &mut hub::EventStream,
    wait: Duration,
) -> Option<Result<hub::pb::IntegrationEvent, WatchError>> {
    tokio::time::timeout(wait, stream.next())
        .await
        .expect("the stream answers within the wait")
}

/// A refreshing token whose subject changes at each fetch (`dana-0`, `dana-1`, ...), so the
/// server's `creator` shows which token a call carried. `ttls[n]` is the n-th token's life.
fn counting_tokens(fetches: Arc<AtomicUsize>, ttls: Vec<Duration>) -> BearerAuth {
    BearerAuth::refreshing(move || {
        let n = fetches.fetch_add(1, Ordering::SeqCst);
        let ttl = ttls.get(n).copied().unwrap_or(Duration::from_secs(3600));
        Ok(Token::valid_for(
            token(TEAM, "developer", &format!("dana-{n}")),
            ttl,
        ))
    })
}

async fn the_bearer_token_is_sent_and_refreshed_when_it_expires_or_is_refused(app: TestApp) {
    let channel = Channel::from_shared(app.address.clone())
        .expect("uri")
        .connect_lazy();
    let p = people(&app);

    // Static: every call carries it, through the wrapper and the generated clients alike.
    let fixed = Client::new(
        channel.clone(),
        BearerAuth::from_static(&p.dana).expect("token"),
    );
    assert_eq!(add_app(&fixed, "Static", "xoxb-1").await.creator, "dana");
    let listed = fixed
        .installed_apps()
        .list_installed_apps(hub::pb::ListInstalledAppsRequest::default())
        .await
        .expect("the generated client carries the token")
        .into_inner();
    assert_eq!(listed.installed_apps.len(), 1);
    let anonymous = Client::new(channel.clone(), BearerAuth::none());
    let refused = anonymous
        .list_installed_apps(hub::pb::ListInstalledAppsRequest::default())
        .await
        .expect_err("no token");
    assert_eq!(refused.code(), Code::Unauthenticated);

    // Refreshing: the first token expires at once, the second lasts an hour.
    let fetches = Arc::new(AtomicUsize::new(0));
    let refreshing = Client::new(
        channel.clone(),
        counting_tokens(fetches.clone(), vec![Duration::ZERO]),
    );
    let creators: Vec<String> = {
        let mut creators = Vec::new();
        for i in 0..3 {
            creators.push(
                add_app(&refreshing, &format!("Refreshed {i}"), "xoxb-1")
                    .await
                    .creator,
            );
        }
        creators
    };
    assert_eq!(creators, ["dana-0", "dana-1", "dana-1"]);
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "fetched when expired, not per call"
    );

    // A token the server refuses (signed with another secret, though not expired) is
    // replaced and the call (a create without a request id) is sent once more.
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let refused_first = Client::new(
        channel.clone(),
        BearerAuth::refreshing(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let value = if n == 0 {
                token_of_another_secret()
            } else {
                token(TEAM, "developer", "dana-again")
            };
            Ok(Token::valid_for(value, Duration::from_secs(3600)))
        }),
    );
    let before = fixed
        .list_installed_apps(hub::pb::ListInstalledAppsRequest::default())
        .await
        .expect("list")
        .installed_apps
        .len();
    assert_eq!(
        add_app(&refused_first, "After refusal", "xoxb-1")
            .await
            .creator,
        "dana-again"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    let after = fixed
        .list_installed_apps(hub::pb::ListInstalledAppsRequest::default())
        .await
        .expect("list")
        .installed_apps
        .len();
    assert_eq!(after, before + 1, "the refused call did not run");

    // Per request: the callback runs for each call.
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let dana = p.dana.clone();
    let per_request = Client::new(
        channel.clone(),
        BearerAuth::per_request(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            dana.clone()
        }),
    );
    for _ in 0..3 {
        per_request
            .list_services(hub::pb::ListServicesRequest {})
            .await
            .expect("list services");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Async: fetched once, before the first call.
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let asynchronous = Client::new(
        channel,
        BearerAuth::refreshing_async(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::task::yield_now().await;
                Ok(Token::valid_for(
                    token(TEAM, "developer", &format!("async-{n}")),
                    Duration::from_secs(3600),
                ))
            }
        }),
    );
    assert_eq!(
        add_app(&asynchronous, "Async 1", "xoxb-1").await.creator,
        "async-0"
    );
    assert_eq!(
        add_app(&asynchronous, "Async 2", "xoxb-1").await.creator,
        "async-0"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}
storage_test!(the_bearer_token_is_sent_and_refreshed_when_it_expires_or_is_refused);

/// A client whose token callback counts the attempts (the interceptor runs for each).
fn counting_client(channel: Channel, dana: &str, attempts: Arc<AtomicUsize>) -> Client {
    let dana = dana.to_owned();
    Client::new(
        channel,
        BearerAuth::per_request(move || {
            attempts.fetch_add(1, Ordering::SeqCst);
            dana.clone()
        }),
    )
    .with_retry(RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        ..RetryPolicy::default()
    })
}

/// Attempts `call` made (with the server down, each fails UNAVAILABLE).
async fn attempts_of<T: std::fmt::Debug>(
    attempts: &AtomicUsize,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> usize {
    attempts.store(0, Ordering::SeqCst);
    let status = call.await.expect_err("the server is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    attempts.load(Ordering::SeqCst)
}

async fn only_idempotent_calls_are_retried_while_the_server_is_unavailable(mut app: TestApp) {
    let p = people(&app);
    let port = app.port;
    let channel = Channel::from_shared(app.address.clone())
        .expect("uri")
        .connect_lazy();
    let attempts = Arc::new(AtomicUsize::new(0));
    let client = counting_client(channel, &p.dana, attempts.clone());
    let slack = add_app(&client, "Team Slack", "xoxb-1").await;
    let job = client
        .create_integration(integration_request(&slack.name, "Job", ""))
        .await
        .expect("create");
    app.stop().await;

    // Nothing listens now: each call fails UNAVAILABLE, after 4 attempts or after one.
    let get = hub::pb::GetIntegrationRequest {
        name: job.name.clone(),
    };
    let resolve = hub::pb::ResolveIntegrationCredentialsRequest {
        name: job.name.clone(),
    };
    let preview = hub::pb::DeleteInstalledAppRequest {
        name: slack.name.clone(),
        validate_only: true,
        ..Default::default()
    };
    let delete_app = hub::pb::DeleteInstalledAppRequest {
        name: slack.name.clone(),
        ..Default::default()
    };
    let delete = hub::pb::DeleteIntegrationRequest {
        name: job.name.clone(),
        ..Default::default()
    };
    let rename = hub::pb::UpdateIntegrationRequest {
        integration: Some(hub::pb::Integration {
            name: job.name.clone(),
            display_name: "Renamed".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["display_name".into()],
        }),
    };
    let report = hub::pb::ReportCredentialsRejectedRequest {
        name: slack.name.clone(),
        detail: String::new(),
    };
    let a = &attempts;
    let counted = [
        (
            "GetIntegration",
            attempts_of(a, client.get_integration(get.clone())).await,
        ),
        (
            "ListIntegrations",
            attempts_of(a, client.list_integrations(Default::default())).await,
        ),
        (
            "ListServices",
            attempts_of(a, client.list_services(Default::default())).await,
        ),
        (
            "ResolveIntegrationCredentials",
            attempts_of(a, client.resolve_integration_credentials(resolve)).await,
        ),
        (
            "DeleteInstalledApp validate_only",
            attempts_of(a, client.delete_installed_app(preview)).await,
        ),
        (
            "CreateIntegration with a request id",
            attempts_of(
                a,
                client.create_integration(integration_request(&slack.name, "Retried", "req-1")),
            )
            .await,
        ),
        (
            "CreateIntegration without one",
            attempts_of(
                a,
                client.create_integration(integration_request(&slack.name, "Once", "")),
            )
            .await,
        ),
        (
            "CreateInstalledApp without one",
            attempts_of(
                a,
                client.create_installed_app(app_request("Once", "xoxb-2")),
            )
            .await,
        ),
        (
            "DeleteInstalledApp",
            attempts_of(a, client.delete_installed_app(delete_app)).await,
        ),
        (
            "DeleteIntegration",
            attempts_of(a, client.delete_integration(delete)).await,
        ),
        (
            "UpdateIntegration",
            attempts_of(a, client.update_integration(rename)).await,
        ),
        (
            "ReportCredentialsRejected",
            attempts_of(a, client.report_credentials_rejected(report)).await,
        ),
    ];
    let expected = [4, 4, 4, 4, 4, 4, 1, 1, 1, 1, 1, 1];
    assert_eq!(
        counted.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        expected,
        "attempts per call: {counted:?}"
    );

    // A read started while the server is down completes once it is back on its port.
    attempts.store(0, Ordering::SeqCst);
    let patient = {
        let client = client.clone().with_retry(test_policy());
        tokio::spawn(async move { client.get_integration(get).await })
    };
    let deadline = Instant::now() + WAIT;
    while attempts.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "no retry within {WAIT:?}");
        tokio::task::yield_now().await;
    }
    let mut args = app.restart_args();
    args.listen = format!("127.0.0.1:{port}").parse().expect("addr");
    let app = app.restart_with(args).await;
    let got = patient
        .await
        .expect("task")
        .expect("retried until the server came back");
    assert_eq!(got.name, job.name);
    drop(app);
}
storage_test!(only_idempotent_calls_are_retried_while_the_server_is_unavailable);

/// A server whose answers are scripted, for what the real one does not do on demand: a
/// `RetryInfo` delay on a read, and a watch that repeats events after a reconnect (the server
/// promises at least once) or breaks like a reset connection.
#[derive(Default)]
struct Scripted {
    /// Every call, in order: method, when, and the watch's start cursor.
    calls: std::sync::Mutex<Vec<(&'static str, Instant, String)>>,
}

const SCRIPTED_RETRY_DELAY: Duration = Duration::from_millis(300);

fn scripted_event(seq: i64) -> spb::IntegrationEvent {
    spb::IntegrationEvent {
        event_id: format!("event-{seq}"),
        cursor: Cursor(seq).encode(),
        r#type: spb::IntegrationEventType::IntegrationCreated as i32,
        integration_name: format!("teams/acme/integrations/{seq}"),
        ..Default::default()
    }
}

fn scripted_message(seqs: &[i64]) -> spb::WatchIntegrationEventsResponse {
    spb::WatchIntegrationEventsResponse {
        events: seqs.iter().copied().map(scripted_event).collect(),
        cursor: Cursor(*seqs.last().expect("events")).encode(),
        checkpoint: false,
    }
}

fn unavailable_with(retry: Option<Duration>, metadata: HashMap<String, String>) -> tonic::Status {
    let mut details =
        tonic_types::ErrorDetails::with_error_info("UNAVAILABLE", "integrationhub", metadata);
    details.set_retry_info(retry);
    <tonic::Status as tonic_types::StatusExt>::with_error_details(
        Code::Unavailable,
        "try later",
        details,
    )
}

impl Scripted {
    fn record(&self, method: &'static str, cursor: &str) -> usize {
        let mut calls = self.calls.lock().expect("calls");
        calls.push((method, Instant::now(), cursor.to_owned()));
        calls.iter().filter(|(m, ..)| *m == method).count()
    }

    fn calls_of(&self, method: &str) -> Vec<(Instant, String)> {
        self.calls
            .lock()
            .expect("calls")
            .iter()
            .filter(|(m, ..)| *m == method)
            .map(|(_, at, cursor)| (*at, cursor.clone()))
            .collect()
    }
}

type ScriptedStream = std::pin::Pin<
    Box<
        dyn futures_util::Stream<Item = Result<spb::WatchIntegrationEventsResponse, tonic::Status>>
            + Send,
    >,
>;

/// The service of a [`Scripted`] server.
struct ScriptedService(Arc<Scripted>);

#[tonic::async_trait]
impl spb::integration_service_server::IntegrationService for ScriptedService {
    async fn get_integration(
        &self,
        request: tonic::Request<spb::GetIntegrationRequest>,
    ) -> Result<tonic::Response<spb::Integration>, tonic::Status> {
        // UNAVAILABLE twice, asking for a delay, then the answer.
        if self.0.record("GetIntegration", "") <= 2 {
            return Err(unavailable_with(Some(SCRIPTED_RETRY_DELAY), HashMap::new()));
        }
        Ok(tonic::Response::new(spb::Integration {
            name: request.into_inner().name,
            ..Default::default()
        }))
    }

    async fn update_integration(
        &self,
        _: tonic::Request<spb::UpdateIntegrationRequest>,
    ) -> Result<tonic::Response<spb::Integration>, tonic::Status> {
        self.0.record("UpdateIntegration", "");
        Err(unavailable_with(
            Some(Duration::from_millis(1)),
            HashMap::new(),
        ))
    }

    type WatchIntegrationEventsStream = ScriptedStream;

    async fn watch_integration_events(
        &self,
        request: tonic::Request<spb::WatchIntegrationEventsRequest>,
    ) -> Result<tonic::Response<ScriptedStream>, tonic::Status> {
        use futures_util::stream::{self, StreamExt as _};
        let call = self
            .0
            .record("WatchIntegrationEvents", &request.get_ref().start_cursor);
        let messages: Vec<Result<_, tonic::Status>> = match call {
            // 1 and 2, then a shutdown naming the cursor to resume from: 3, past an event
            // of a type this watch does not ask for.
            1 => vec![
                Ok(scripted_message(&[1, 2])),
                Err(unavailable_with(
                    None,
                    HashMap::from([("cursor".to_owned(), Cursor(3).encode())]),
                )),
            ],
            // At least once: 2 again with 4, then 5, then a broken connection (no ErrorInfo,
            // as the transport reports one).
            2 => vec![
                Ok(scripted_message(&[2, 4])),
                Ok(scripted_message(&[5])),
                Err(tonic::Status::unknown(
                    "error reading a body from connection",
                )),
            ],
            // 5 again, then 6, then nothing more.
            _ => vec![Ok(scripted_message(&[5, 6]))],
        };
        let stream = stream::iter(messages).chain(stream::pending());
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn create_integration(
        &self,
        _: tonic::Request<spb::CreateIntegrationRequest>,
    ) -> Result<tonic::Response<spb::Integration>, tonic::Status> {
        Err(tonic::Status::unimplemented("scripted"))
    }

    async fn list_integrations(
        &self,
        _: tonic::Request<spb::ListIntegrationsRequest>,
    ) -> Result<tonic::Response<spb::ListIntegrationsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("scripted"))
    }

    async fn delete_integration(
        &self,
        _: tonic::Request<spb::DeleteIntegrationRequest>,
    ) -> Result<tonic::Response<()>, tonic::Status> {
        Err(tonic::Status::unimplemented("scripted"))
    }

    async fn reauthenticate_integration(
        &self,
        _: tonic::Request<spb::ReauthenticateIntegrationRequest>,
    ) -> Result<tonic::Response<spb::Integration>, tonic::Status> {
        Err(tonic::Status::unimplemented("scripted"))
    }

    async fn reauthenticate_integrations(
        &self,
        _: tonic::Request<spb::ReauthenticateIntegrationsRequest>,
    ) -> Result<tonic::Response<spb::ReauthenticateIntegrationsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("scripted"))
    }

    async fn resolve_integration_credentials(
        &self,
        _: tonic::Request<spb::ResolveIntegrationCredentialsRequest>,
    ) -> Result<tonic::Response<spb::ResolveIntegrationCredentialsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("scripted"))
    }
}

async fn scripted_server() -> (Arc<Scripted>, Client) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let scripted = Arc::new(Scripted::default());
    let service = spb::integration_service_server::IntegrationServiceServer::new(ScriptedService(
        scripted.clone(),
    ));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let client =
        Client::new(endpoint(port).connect_lazy(), BearerAuth::none()).with_retry(RetryPolicy {
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            ..RetryPolicy::default()
        });
    (scripted, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_waits_at_least_the_delay_the_server_asks_for() {
    let (scripted, client) = scripted_server().await;
    let got = client
        .get_integration(hub::pb::GetIntegrationRequest {
            name: "teams/acme/integrations/x".into(),
        })
        .await
        .expect("answered on the third attempt");
    assert_eq!(got.name, "teams/acme/integrations/x");
    let calls = scripted.calls_of("GetIntegration");
    assert_eq!(calls.len(), 3);
    for pair in calls.windows(2) {
        let waited = pair[1].0 - pair[0].0;
        // The policy's own backoff is 2 ms at most: the wait is the server's.
        assert!(waited >= SCRIPTED_RETRY_DELAY, "retried after {waited:?}");
    }
    let status = client
        .update_integration(hub::pb::UpdateIntegrationRequest::default())
        .await
        .expect_err("unavailable");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        scripted.calls_of("UpdateIntegration").len(),
        1,
        "an update is sent once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_events_after_a_reconnect_are_yielded_once() {
    let (scripted, client) = scripted_server().await;
    let mut stream =
        client.watch_integration_events(hub::pb::WatchIntegrationEventsRequest::default());
    let mut seqs = Vec::new();
    while seqs.len() < 5 {
        let event = next_item(&mut stream)
            .await
            .expect("an item")
            .expect("an event");
        seqs.push(seq(&event.cursor));
    }
    assert_eq!(seqs, [1, 2, 4, 5, 6], "each once, in order");
    // Each reconnect resumed from the newest cursor received: the shutdown's (ahead of the
    // last event), then the last event's.
    let starts: Vec<String> = scripted
        .calls_of("WatchIntegrationEvents")
        .into_iter()
        .map(|(_, cursor)| cursor)
        .collect();
    assert_eq!(
        starts,
        ["".to_owned(), Cursor(3).encode(), Cursor(5).encode()]
    );
    assert_eq!(stream.cursor(), Some(Cursor(6).encode()));
    assert_eq!(stream.reconnects(), 2);
    // Nothing more: the stream waits for the next event.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), stream.next())
            .await
            .is_err()
    );
}

async fn the_deliver_example_resolves_and_reports_rejected_credentials(app: TestApp) {
    let p = people(&app);
    let channel = Channel::from_shared(app.address.clone())
        .expect("uri")
        .connect_lazy();
    let dev = Client::new(
        channel.clone(),
        BearerAuth::from_static(&p.dana).expect("token"),
    );
    let deliverer = Client::new(channel, BearerAuth::from_static(&p.service).expect("token"));
    let start = dev
        .list_integrations(hub::pb::ListIntegrationsRequest::default())
        .await
        .expect("list")
        .event_cursor;
    let good = add_app(&dev, "Good Slack", "xoxb-works").await;
    let revoked = add_app(&dev, "Revoked Slack", "revoked-1").await;
    let g = dev
        .create_integration(integration_request(&good.name, "G", ""))
        .await
        .expect("create");
    let r = dev
        .create_integration(integration_request(&revoked.name, "R", ""))
        .await
        .expect("create");

    // CREATED G, CREATED R, and the BROKEN R the deliverer's own report causes.
    let outcomes = tokio::time::timeout(
        Duration::from_secs(30),
        deliver_example::deliver(&deliverer, Some(start), Some(3)),
    )
    .await
    .expect("three events within 30 s")
    .expect("deliver");
    use deliver_example::Outcome;
    assert_eq!(
        outcomes,
        [
            Outcome::Delivered {
                integration: g.name.clone()
            },
            Outcome::Rejected {
                integration: r.name.clone(),
                installed_app: revoked.name.clone()
            },
            Outcome::Skipped {
                integration: r.name.clone()
            },
        ]
    );
    let app_now = dev
        .get_installed_app(hub::pb::GetInstalledAppRequest {
            name: revoked.name.clone(),
        })
        .await
        .expect("get");
    assert_eq!(app_now.state(), hub::pb::installed_app::State::NeedsReauth);
    let r_now = dev
        .get_integration(hub::pb::GetIntegrationRequest { name: r.name })
        .await
        .expect("get");
    assert_eq!(
        r_now.broken_reason(),
        hub::pb::integration::BrokenReason::CredentialsRejected
    );
    let g_now = dev
        .get_integration(hub::pb::GetIntegrationRequest { name: g.name })
        .await
        .expect("get");
    assert_eq!(g_now.state(), hub::pb::integration::State::Active);
}
storage_test!(the_deliver_example_resolves_and_reports_rejected_credentials);
