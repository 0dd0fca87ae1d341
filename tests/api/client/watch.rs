//! The resuming watch stream against real servers: restarts on the same and a new port,
//! killed servers replaced by another replica, and CURSOR_EXPIRED.

use super::*;

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

/// Writes and a consumer: a writer creating integrations on an app of its own, and a consumer
/// watching from a listing made before the first create.
struct Traffic {
    dev: Client,
    installed_app: String,
    consumer: Consumer,
    stop: Arc<AtomicBool>,
    writer: tokio::task::JoinHandle<Vec<String>>,
}

impl Traffic {
    async fn start(dev: Client, viewer: &Client) -> Traffic {
        let installed_app = add_app(&dev, "Team Slack", "xoxb-1").await.name;
        let listed = viewer
            .list_integrations(hub::pb::ListIntegrationsRequest::default())
            .await
            .expect("list");
        let consumer = Consumer::start(viewer.watch_integration_events(
            hub::pb::WatchIntegrationEventsRequest {
                start_cursor: listed.event_cursor,
                ..Default::default()
            },
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = start_writer(dev.clone(), installed_app.clone(), stop.clone());
        Traffic {
            dev,
            installed_app,
            consumer,
            stop,
            writer,
        }
    }

    /// Waits until the consumer has received `phase` times [`EVENTS_PER_PHASE`] events.
    async fn until_phase(&mut self, phase: usize) {
        self.consumer.until(phase * EVENTS_PER_PHASE).await;
    }

    /// Stops the writer and checks that every create reached the consumer once and in order,
    /// and that nothing more follows (the next event is a new one, not a repeat). Returns the
    /// events received and the creates the writer made.
    async fn finish(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::SeqCst);
        let created = self.writer.await.expect("writer");
        self.consumer.until(created.len()).await;
        let last = self
            .dev
            .create_integration(integration_request(&self.installed_app, "Sentinel", ""))
            .await
            .expect("sentinel");
        self.consumer.until(created.len() + 1).await;
        let creates = created.len();
        let mut expected = created;
        expected.push(last.name);
        assert_exactly_once_in_order(&self.consumer.received, &expected);
        (self.consumer.received.len(), creates)
    }

    fn reconnects(&self) -> usize {
        self.consumer.reconnects.load(Ordering::SeqCst)
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
    let started = Instant::now();
    let mut traffic = Traffic::start(dev, &replicas.client(&p.viewer)).await;

    // Writes before, during (the writer keeps writing while the server stops and starts: its
    // creates are retried) and after each restart; the consumer keeps reading throughout.
    for restart_number in 0..RESTARTS {
        traffic.until_phase(restart_number + 1).await;
        app = restart(app, &replicas, restart_number % 2 == 0).await;
    }
    traffic.until_phase(RESTARTS + 1).await;
    let reconnects = traffic.reconnects();
    let (events, creates) = traffic.finish().await;
    // The app, the creates (with their retries) and the sentinel.
    let writes = attempts.load(Ordering::SeqCst) - 2;
    assert!(
        writes > creates,
        "creates were retried across the restarts: {writes} attempts for {creates} creates"
    );
    assert!(
        reconnects >= RESTARTS,
        "resumed after each restart: {reconnects}"
    );
    println!(
        "{backend:?}: {events} events, each once and in order, across {RESTARTS} restarts ({reconnects} reconnects; {writes} create attempts for {creates} creates) in {:?}",
        started.elapsed()
    );
    app.stop().await;
}

storage_test!(a_resuming_watch_yields_every_event_once_and_in_order_across_restarts);

/// Crashes (SIGKILL: no status, no cursor, a connection that just breaks) and a move to
/// another replica.
async fn a_watch_survives_killed_servers_and_follows_the_replica_that_replaces_them(
    server: Server,
) {
    let backend = server.backend();
    let mut server = server.start();
    let replicas = Replicas::at(server.port).await;
    let dev = replicas.client(&token(TEAM, "developer", "dana"));
    let mut traffic = Traffic::start(dev, &replicas.client(&token(TEAM, "viewer", "vic"))).await;

    const KILLS: usize = 2;
    for kill in 0..KILLS {
        traffic.until_phase(kill + 1).await;
        let old = server.port;
        server.kill();
        replicas.remove(old).await;
        server.restart();
        replicas.add(server.port).await;
    }
    traffic.until_phase(KILLS + 1).await;
    let (events, _) = traffic.finish().await;
    println!("{backend:?}: {events} events, each once and in order, across {KILLS} killed servers");
}

storage_test!(process a_watch_survives_killed_servers_and_follows_the_replica_that_replaces_them);

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
    // Two integration events and the app's creation (installed-app events share the log).
    assert_eq!(store.prune_events(i64::MAX).await.expect("prune"), 3);

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
