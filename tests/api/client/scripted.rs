//! A scripted server, for what the real one does not do on demand.

use super::*;

/// A server whose answers are scripted, for what the real one does not do on demand: a
/// `RetryInfo` delay on a read, and a watch that repeats events after a reconnect (the server
/// promises at least once) or breaks like a reset connection.
#[derive(Default)]
struct Scripted {
    /// Every call, in order: method, when, and the watch's start cursor.
    calls: std::sync::Mutex<Vec<(&'static str, Instant, String)>>,
}

const SCRIPTED_RETRY_DELAY: Duration = Duration::from_millis(300);

/// A scripted server's cursor: opaque to the client, like the real server's.
fn scripted_cursor(seq: i64) -> String {
    format!("scripted-{seq}")
}

/// The position of a scripted event, from its id.
fn scripted_seq(event: &hub::pb::IntegrationEvent) -> i64 {
    event
        .event_id
        .strip_prefix("event-")
        .and_then(|n| n.parse().ok())
        .expect("a scripted event")
}

fn scripted_event(seq: i64) -> spb::IntegrationEvent {
    spb::IntegrationEvent {
        event_id: format!("event-{seq}"),
        cursor: scripted_cursor(seq),
        r#type: spb::IntegrationEventType::IntegrationCreated as i32,
        integration_name: format!("teams/acme/integrations/{seq}"),
        ..Default::default()
    }
}

fn scripted_message(seqs: &[i64]) -> spb::WatchIntegrationEventsResponse {
    spb::WatchIntegrationEventsResponse {
        events: seqs.iter().copied().map(scripted_event).collect(),
        cursor: scripted_cursor(*seqs.last().expect("events")),
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
                    HashMap::from([("cursor".to_owned(), scripted_cursor(3))]),
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

    async fn transfer_integration(
        &self,
        _: tonic::Request<spb::TransferIntegrationRequest>,
    ) -> Result<tonic::Response<spb::Integration>, tonic::Status> {
        Err(tonic::Status::unimplemented("scripted"))
    }

    async fn promote_integration_credentials(
        &self,
        _: tonic::Request<spb::PromoteIntegrationCredentialsRequest>,
    ) -> Result<tonic::Response<spb::PromoteIntegrationCredentialsResponse>, tonic::Status> {
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
        seqs.push(scripted_seq(&event));
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
        ["".to_owned(), scripted_cursor(3), scripted_cursor(5)]
    );
    assert_eq!(stream.cursor(), Some(scripted_cursor(6)));
    assert_eq!(stream.reconnects(), 2);
    // Nothing more: the stream waits for the next event.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), stream.next())
            .await
            .is_err()
    );
}
