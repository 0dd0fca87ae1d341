//! `IntegrationService`, including the `WatchIntegrationEvents` stream.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status};

use super::installed_apps::take_credentials;
use super::{actor, convert, field, optional_etag, status, status_with_reason};
use crate::domain::hub::{Binding, IntegrationChanges, NewIntegration, Reauth};
use crate::domain::model::{Event, EventKind, IntegrationState};
use crate::domain::types::{
    AppName, Cursor, DisplayName, IdempotencyKey, IntegrationName, PageSize, ParentRef,
};
use crate::domain::{Error, Hub, Precondition, Violations};
use crate::events::{Delivery, EventBus, StreamLimits, follow};
use crate::pb;
use crate::pb::integration_service_server::IntegrationService;
use crate::pb::reauthenticate_integration_request::Auth;

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

fn event_kind(value: i32) -> Result<EventKind, String> {
    match pb::IntegrationEventType::try_from(value) {
        Ok(pb::IntegrationEventType::IntegrationCreated) => Ok(EventKind::Created),
        Ok(pb::IntegrationEventType::IntegrationUpdated) => Ok(EventKind::Updated),
        Ok(pb::IntegrationEventType::IntegrationDeleted) => Ok(EventKind::Deleted),
        Ok(pb::IntegrationEventType::IntegrationBroken) => Ok(EventKind::Broken),
        Ok(pb::IntegrationEventType::IntegrationRestored) => Ok(EventKind::Restored),
        _ => Err("contains an unknown or unspecified event type".into()),
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
        let actor = actor(&request)?;
        let mut req = request.into_inner();
        let credentials = take_credentials(&mut req.credentials);
        let integration = req.integration.unwrap_or_default();
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let display_name = v.check(
            "integration.display_name",
            DisplayName::parse(&integration.display_name),
        );
        let idempotency_key = v.check(
            "request_id",
            IdempotencyKey::parse_optional(&req.request_id),
        );
        if integration.r#type.is_empty() {
            v.check::<()>("integration.type", Err("is required".into()));
        }
        let binding = match (credentials.is_empty(), integration.installed_app.is_empty()) {
            (true, false) => v
                .check(
                    "integration.installed_app",
                    AppName::parse(&integration.installed_app),
                )
                .map(Binding::App),
            (false, true) if integration.service.is_empty() => {
                v.check::<()>(
                    "integration.service",
                    Err("is required with credentials of its own".into()),
                );
                None
            }
            (false, true) => Some(Binding::Own {
                service: integration.service,
                credentials,
            }),
            (true, true) => v.check(
                "integration.installed_app",
                Err("is required (or give credentials of its own)".into()),
            ),
            (false, false) => v.check(
                "credentials",
                Err("must be empty when integration.installed_app is set".into()),
            ),
        };
        v.finish().map_err(status)?;
        let (Some(parent), Some(display_name), Some(idempotency_key), Some(binding)) =
            (parent, display_name, idempotency_key, binding)
        else {
            return Err(status(Error::internal("checked fields missing")));
        };
        let team = self.hub.team_of_parent(&actor, &parent).map_err(status)?;
        let created = self
            .hub
            .create_integration(
                &actor,
                team,
                NewIntegration {
                    type_id: integration.r#type,
                    display_name,
                    config: integration.config.into_iter().collect(),
                    binding,
                    idempotency_key,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(convert::integration(&created)))
    }

    async fn get_integration(
        &self,
        request: Request<pb::GetIntegrationRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        let actor = actor(&request)?;
        let name = field("name", IntegrationName::parse(&request.get_ref().name))?;
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
        let actor = actor(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let page_size = v.check("page_size", PageSize::parse(req.page_size));
        let installed_app = if req.installed_app.is_empty() {
            Some(None)
        } else {
            v.check("installed_app", AppName::parse(&req.installed_app))
                .map(Some)
        };
        let state = v.check(
            "state",
            match pb::integration::State::try_from(req.state) {
                Ok(pb::integration::State::Unspecified) => Ok(None),
                Ok(pb::integration::State::Active) => Ok(Some(IntegrationState::Active)),
                Ok(pb::integration::State::Broken) => Ok(Some(IntegrationState::Broken)),
                Err(_) => Err("is not a known state".to_owned()),
            },
        );
        v.finish().map_err(status)?;
        let (Some(parent), Some(page_size), Some(installed_app), Some(state)) =
            (parent, page_size, installed_app, state)
        else {
            return Err(status(Error::internal("checked fields missing")));
        };
        let team = self.hub.team_of_parent(&actor, &parent).map_err(status)?;
        let (page, cursor) = self
            .hub
            .list_integrations(&team, installed_app, state, page_size, &req.page_token)
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
        let actor = actor(&request)?;
        let req = request.into_inner();
        let integration = req.integration.unwrap_or_default();
        let name = field(
            "integration.name",
            IntegrationName::parse(&integration.name),
        )?;
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::default();
        let mut changes = IntegrationChanges {
            etag: optional_etag(&integration.etag),
            display_name: None,
            config: None,
        };
        if paths.is_empty() {
            v.check::<()>(
                "update_mask",
                Err("is required: display_name and/or config".into()),
            );
        }
        for path in &paths {
            match path.as_str() {
                "display_name" => {
                    changes.display_name = v.check(
                        "integration.display_name",
                        DisplayName::parse(&integration.display_name),
                    );
                }
                "config" => changes.config = Some(integration.config.clone().into_iter().collect()),
                _ => v
                    .check::<()>(
                        "update_mask",
                        Err("may name only display_name and config".into()),
                    )
                    .unwrap_or_default(),
            }
        }
        v.finish().map_err(status)?;
        let updated = self
            .hub
            .update_integration(&actor, &name, changes)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::integration(&updated)))
    }

    async fn delete_integration(
        &self,
        request: Request<pb::DeleteIntegrationRequest>,
    ) -> Result<Response<()>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let name = field("name", IntegrationName::parse(&req.name))?;
        self.hub
            .delete_integration(&actor, &name, optional_etag(&req.etag))
            .await
            .map_err(status)?;
        Ok(Response::new(()))
    }

    async fn reauthenticate_integration(
        &self,
        request: Request<pb::ReauthenticateIntegrationRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let name = field("name", IntegrationName::parse(&req.name))?;
        let reauth = match req.auth {
            Some(Auth::InstalledApp(app)) => {
                Reauth::App(field("installed_app", AppName::parse(&app))?)
            }
            Some(Auth::Credentials(mut credentials)) => {
                let credentials = take_credentials(&mut credentials.values);
                if credentials.is_empty() {
                    return Err(status(Error::invalid("credentials.values", "is required")));
                }
                Reauth::Credentials(credentials)
            }
            None => {
                return Err(status(Error::invalid(
                    "auth",
                    "set installed_app or credentials",
                )));
            }
        };
        let integration = self
            .hub
            .reauthenticate_integration(&actor, &name, reauth)
            .await
            .map_err(status)?;
        Ok(Response::new(convert::integration(&integration)))
    }

    async fn reauthenticate_integrations(
        &self,
        request: Request<pb::ReauthenticateIntegrationsRequest>,
    ) -> Result<Response<pb::ReauthenticateIntegrationsResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let from = v.check(
            "from_installed_app",
            AppName::parse(&req.from_installed_app),
        );
        let to = v.check("to_installed_app", AppName::parse(&req.to_installed_app));
        v.finish().map_err(status)?;
        let (Some(parent), Some(from), Some(to)) = (parent, from, to) else {
            return Err(status(Error::internal("checked fields missing")));
        };
        let team = self.hub.team_of_parent(&actor, &parent).map_err(status)?;
        let restored = self
            .hub
            .reauthenticate_integrations(&actor, team, from, to)
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
        let actor = actor(&request)?;
        let name = field("name", IntegrationName::parse(&request.get_ref().name))?;
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
        let actor = actor(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let start = v.check("start_cursor", Cursor::parse_optional(&req.start_cursor));
        let types = v.check(
            "types",
            req.types
                .iter()
                .map(|t| event_kind(*t).map(|k| k.as_str()))
                .collect::<Result<HashSet<&'static str>, String>>(),
        );
        v.finish().map_err(status)?;
        let (Some(parent), Some(start), Some(types)) = (parent, start, types) else {
            return Err(status(Error::internal("checked fields missing")));
        };
        let scope = self.hub.watch_scope(&actor, &parent).map_err(status)?;
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
