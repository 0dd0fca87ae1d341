//! `IntegrationService`, including the `WatchIntegrationEvents` stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use super::parse::{
    CreateIntegration, DeleteIntegration, ListIntegrations, ReauthenticateAll, ReauthenticateOne,
    UpdateIntegration, WatchEvents,
};
use super::{accept, convert, status, status_with_reason};
use crate::domain::model::Event;
use crate::domain::types::{Cursor, IntegrationName};
use crate::domain::{Error, Hub, Precondition};
use crate::events::{Delivery, EventBus, StreamLimits, follow};
use crate::pb;
use crate::pb::integration_service_server::IntegrationService;

/// Messages buffered per watch stream before the subscriber task waits for the client.
const STREAM_BUFFER: usize = 16;
/// Most events in one stream message.
const MESSAGE_EVENTS: usize = 100;

pub struct Integrations {
    hub: Arc<Hub>,
    bus: EventBus,
    limits: StreamLimits,
    checkpoint_every: Duration,
    stop: watch::Receiver<bool>,
}

impl Integrations {
    pub fn new(
        hub: Arc<Hub>,
        bus: EventBus,
        limits: StreamLimits,
        checkpoint_every: Duration,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Integrations {
            hub,
            bus,
            limits,
            checkpoint_every,
            stop,
        }
    }
}

/// UNAVAILABLE ending a watch stream, with the cursor to resume from.
fn stream_ended(pos: i64, message: &str) -> Status {
    let cursor = Cursor(pos).encode();
    status_with_reason(
        Code::Unavailable,
        format!("{message}; resume from cursor {cursor}"),
        pb::ErrorReason::Unavailable,
        HashMap::from([("cursor".to_owned(), cursor)]),
    )
}

#[tonic::async_trait]
impl IntegrationService for Integrations {
    async fn create_integration(
        &self,
        request: Request<pb::CreateIntegrationRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        let (actor, req): (_, CreateIntegration) = accept(request)?;
        let team = self
            .hub
            .team_of_parent(&actor, &req.parent)
            .map_err(status)?;
        let created = self
            .hub
            .create_integration(&actor, team, req.integration)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::integration(&created)))
    }

    async fn get_integration(
        &self,
        request: Request<pb::GetIntegrationRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        let (actor, name): (_, IntegrationName) = accept(request)?;
        let integration = self
            .hub
            .get_integration(&actor, &name)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::integration(&integration)))
    }

    async fn list_integrations(
        &self,
        request: Request<pb::ListIntegrationsRequest>,
    ) -> Result<Response<pb::ListIntegrationsResponse>, Status> {
        let (actor, req): (_, ListIntegrations) = accept(request)?;
        let team = self
            .hub
            .team_of_parent(&actor, &req.parent)
            .map_err(status)?;
        let (page, cursor) = self
            .hub
            .list_integrations(&team, req.query, req.page)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListIntegrationsResponse {
            integrations: page.items.iter().map(convert::integration).collect(),
            next_page_token: page.next_page_token,
            event_cursor: cursor.encode(),
        }))
    }

    async fn update_integration(
        &self,
        request: Request<pb::UpdateIntegrationRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        let (actor, req): (_, UpdateIntegration) = accept(request)?;
        let updated = self
            .hub
            .update_integration(&actor, &req.name, req.changes)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::integration(&updated)))
    }

    async fn delete_integration(
        &self,
        request: Request<pb::DeleteIntegrationRequest>,
    ) -> Result<Response<()>, Status> {
        let (actor, req): (_, DeleteIntegration) = accept(request)?;
        self.hub
            .delete_integration(&actor, &req.name, req.etag)
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn reauthenticate_integration(
        &self,
        request: Request<pb::ReauthenticateIntegrationRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        let (actor, req): (_, ReauthenticateOne) = accept(request)?;
        let integration = self
            .hub
            .reauthenticate_integration(&actor, &req.name, req.reauth)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::integration(&integration)))
    }

    async fn reauthenticate_integrations(
        &self,
        request: Request<pb::ReauthenticateIntegrationsRequest>,
    ) -> Result<Response<pb::ReauthenticateIntegrationsResponse>, Status> {
        let (actor, req): (_, ReauthenticateAll) = accept(request)?;
        let team = self
            .hub
            .team_of_parent(&actor, &req.parent)
            .map_err(status)?;
        let restored = self
            .hub
            .reauthenticate_integrations(&actor, team, req.from, req.to)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ReauthenticateIntegrationsResponse {
            integrations: restored.iter().map(convert::integration).collect(),
        }))
    }

    async fn resolve_integration_credentials(
        &self,
        request: Request<pb::ResolveIntegrationCredentialsRequest>,
    ) -> Result<Response<pb::ResolveIntegrationCredentialsResponse>, Status> {
        let (actor, name): (_, IntegrationName) = accept(request)?;
        let resolved = self
            .hub
            .resolve_credentials(&actor, &name)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ResolveIntegrationCredentialsResponse {
            service: resolved.integration.service.clone(),
            integration: Some(convert::integration(&resolved.integration)),
            credentials: resolved.credentials.into_map().into_iter().collect(),
        }))
    }

    type WatchIntegrationEventsStream =
        ReceiverStream<Result<pb::WatchIntegrationEventsResponse, Status>>;

    async fn watch_integration_events(
        &self,
        request: Request<pb::WatchIntegrationEventsRequest>,
    ) -> Result<Response<Self::WatchIntegrationEventsStream>, Status> {
        let (actor, req): (_, WatchEvents) = accept(request)?;
        let scope = self.hub.watch_scope(&actor, &req.parent).map_err(status)?;
        let (start, types) = (req.start, req.kinds);
        let newest = self
            .bus
            .store()
            .max_event_seq()
            .await
            .map_err(|e| status(e.into()))?;
        let pos = match start {
            Some(Cursor(seq)) if seq > newest => {
                return Err(status(Error::invalid(
                    "start_cursor",
                    "is ahead of the event log (a cursor of another deployment?)",
                )));
            }
            Some(Cursor(seq)) => {
                let pruned = self
                    .bus
                    .store()
                    .pruned_through()
                    .await
                    .map_err(|e| status(e.into()))?;
                if seq < pruned {
                    return Err(status(Error::precondition(
                        Precondition::CursorExpired,
                        "the cursor is older than the event retention; list the integrations again and watch from the listing's event_cursor",
                    )));
                }
                seq
            }
            None => newest,
        };
        let principal = format!(
            "{}/{}",
            actor.team.as_ref().map(|t| t.as_str()).unwrap_or("*"),
            actor.subject
        );
        let slot = self
            .limits
            .acquire(&principal)
            .map_err(|message| status(Error::ResourceExhausted(message.into())))?;
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        if start.is_none() {
            let first = pb::WatchIntegrationEventsResponse {
                events: Vec::new(),
                cursor: Cursor(pos).encode(),
                checkpoint: true,
            };
            tx.send(Ok(first))
                .await
                .map_err(|_| status(Error::internal("fresh watch channel closed")))?;
        }
        let bus = self.bus.clone();
        let metrics = self.bus.metrics().clone();
        let stop = self.stop.clone();
        let every = self.checkpoint_every;
        let team = scope.map(|t| t.as_str().to_owned());
        tokio::spawn(async move {
            // Holds this stream's place in the limits until the stream ends.
            let _slot = slot;
            let keep =
                |e: &crate::store::EventRow| types.is_empty() || types.contains(e.kind.as_str());
            let sender = tx.clone();
            let deliver = move |delivery: Delivery| {
                let sender = sender.clone();
                let metrics = metrics.clone();
                async move {
                    let (rows, pos, checkpoint) = match delivery {
                        Delivery::Checkpoint(pos) => (Vec::new(), pos, true),
                        Delivery::Events(rows, pos) => (rows, pos, false),
                    };
                    // At most MESSAGE_EVENTS events a message: what a stalled client holds in its
                    // queue stays small. Each message's cursor is its last event's, and the last
                    // message's is the position after the whole delivery.
                    let chunks: Vec<_> = rows.chunks(MESSAGE_EVENTS).collect();
                    let count = chunks.len().max(1);
                    for index in 0..count {
                        let chunk = chunks.get(index).copied().unwrap_or_default();
                        let cursor = match chunk.last() {
                            Some(last) if index + 1 < count => last.seq,
                            _ => pos,
                        };
                        let message = chunk
                            .iter()
                            .map(|row| Event::from_row(row).map(|e| convert::event(&e)))
                            .collect::<Result<Vec<_>, Error>>()
                            .map(|events| pb::WatchIntegrationEventsResponse {
                                events,
                                cursor: Cursor(cursor).encode(),
                                checkpoint,
                            })
                            .map_err(status);
                        if let Ok(message) = &message {
                            metrics.events_delivered.fetch_add(
                                message.events.len() as u64,
                                std::sync::atomic::Ordering::Relaxed,
                            );
                        }
                        let failed = message.is_err();
                        // A closed channel means the client went away.
                        if sender.send(message).await.is_err() || failed {
                            return false;
                        }
                    }
                    true
                }
            };
            let outcome = tokio::select! {
                outcome = follow(&bus, team, keep, pos, every, stop, deliver) => outcome,
                // The client left: end now, freeing its place, rather than at the next send.
                _ = tx.closed() => return,
            };
            let ended = match outcome {
                Ok(pos) => stream_ended(pos, "the server is shutting down"),
                Err(err) => {
                    tracing::warn!(error = %anyhow::Error::from(err), "watch stream failed");
                    stream_ended(pos, "the event log is unavailable")
                }
            };
            // Ignored when the client already left.
            let _ = tx.send(Err(ended)).await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
