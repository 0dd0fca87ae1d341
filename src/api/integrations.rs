//! `IntegrationService`, including the `WatchIntegrationEvents` stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::adapters::Map;
use tonic::{Code, Request, Response, Status};

use super::parse::{
    CreateIntegration, DeleteIntegration, ListIntegrations, ReauthenticateAll, ReauthenticateOne,
    TransferIntegration, UpdateIntegration, WatchEvents,
};
use super::{accept, convert, list_page, status_with_reason};
use crate::domain::model::{AuditAction, Event};
use crate::domain::tokens::TeamCursors;
use crate::domain::types::IntegrationName;
use crate::domain::{Error, Hub, Precondition, Promote};
use crate::events::{
    EndReason, EventBus, StreamLimits, WatchError, WatchItem, WatchMemory, Watches,
};
use crate::pb;
use crate::pb::integration_service_server::IntegrationService;

pub struct Integrations {
    hub: Arc<Hub>,
    watches: Watches,
}

impl Integrations {
    pub fn new(
        hub: Arc<Hub>,
        bus: EventBus,
        limits: StreamLimits,
        memory: Arc<WatchMemory>,
        checkpoint_every: Duration,
        stop: watch::Receiver<bool>,
    ) -> Self {
        Integrations {
            hub,
            watches: Watches::new(bus, limits, memory, checkpoint_every, stop),
        }
    }
}

/// Why a watch could not start, as the client sees it.
pub(super) fn watch_refused(err: WatchError) -> Error {
    match err {
        WatchError::CursorAhead => Error::invalid("start_cursor", err.to_string()),
        WatchError::CursorExpired => {
            Error::precondition(Precondition::CursorExpired, err.to_string())
        }
        WatchError::TooMany(message) => Error::ResourceExhausted(message.into()),
        WatchError::Store(err) => err.into(),
    }
}

/// The status ending a watch stream, with the cursor to resume from: UNAVAILABLE, or
/// RESOURCE_EXHAUSTED when the replica's watch memory ran out and this stream was furthest
/// behind.
pub(super) fn stream_ended(cursors: &TeamCursors, pos: i64, reason: EndReason) -> Status {
    let cursor = cursors.encode(pos);
    let (code, reason, message) = match reason {
        EndReason::Shutdown => (
            Code::Unavailable,
            pb::ErrorReason::Unavailable,
            "the server is shutting down",
        ),
        EndReason::Unavailable => (
            Code::Unavailable,
            pb::ErrorReason::Unavailable,
            "the event log is unavailable",
        ),
        EndReason::MemoryBudget => (
            Code::ResourceExhausted,
            pb::ErrorReason::ResourceExhausted,
            "this stream fell furthest behind while the server's memory for watch streams was spent; read faster or filter by type",
        ),
    };
    status_with_reason(
        code,
        format!("{message}; resume from cursor {cursor}"),
        reason,
        HashMap::from([("cursor".to_owned(), cursor)]),
    )
}

/// One message of a watch stream, as the client sees it.
fn watch_message(
    cursors: &TeamCursors,
    item: WatchItem,
) -> Result<pb::WatchIntegrationEventsResponse, Status> {
    match item {
        WatchItem::Message {
            events,
            cursor,
            checkpoint,
        } => {
            let events = events
                .iter()
                .map(|row| Event::from_row(row).map(|e| convert::event(&e, cursors)))
                .collect::<Result<Vec<_>, Error>>()?;
            Ok(pb::WatchIntegrationEventsResponse {
                events,
                cursor: cursors.encode(cursor),
                checkpoint,
            })
        }
        WatchItem::End { cursor, reason } => Err(stream_ended(cursors, cursor, reason)),
    }
}

type ResponseStream = Map<
    crate::events::WatchStream,
    Box<dyn FnMut(WatchItem) -> Result<pb::WatchIntegrationEventsResponse, Status> + Send>,
>;

#[tonic::async_trait]
impl IntegrationService for Integrations {
    async fn create_integration(
        &self,
        request: Request<pb::CreateIntegrationRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        let (actor, req): (_, CreateIntegration) = accept(request)?;
        let team = actor.team_of_parent(&req.parent)?;
        let created = self
            .hub
            .integrations()
            .create_integration(&actor, team, req.integration)
            .await?;
        Ok(Response::new(convert::integration(&created)))
    }

    async fn get_integration(
        &self,
        request: Request<pb::GetIntegrationRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        let (actor, name): (_, IntegrationName) = accept(request)?;
        let integration = self
            .hub
            .integrations()
            .get_integration(&actor, &name)
            .await?;
        Ok(Response::new(convert::integration(&integration)))
    }

    async fn list_integrations(
        &self,
        request: Request<pb::ListIntegrationsRequest>,
    ) -> Result<Response<pb::ListIntegrationsResponse>, Status> {
        let (actor, req): (_, ListIntegrations) = accept(request)?;
        let team = actor.team_of_parent(&req.parent)?;
        let listed = self
            .hub
            .integrations()
            .list_integrations(&actor, &team, req.query, req.page)
            .await?;
        // A page the read cache answers again is sent as the bytes encoded the first time.
        let encoded = listed
            .encoded
            .get_or_init(|| list_page::encode_integrations(&listed.page.items));
        Ok(Response::new(pb::ListIntegrationsResponse::encoded(
            encoded.clone(),
            listed.page.next_page_token.clone(),
            self.hub.cursors(Some(&team)).encode(listed.cursor.0),
        )))
    }

    async fn update_integration(
        &self,
        request: Request<pb::UpdateIntegrationRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        let (actor, req): (_, UpdateIntegration) = accept(request)?;
        let updated = self
            .hub
            .integrations()
            .update_integration(&actor, &req.name, req.changes)
            .await?;
        Ok(Response::new(convert::integration(&updated)))
    }

    async fn delete_integration(
        &self,
        request: Request<pb::DeleteIntegrationRequest>,
    ) -> Result<Response<()>, Status> {
        let (actor, req): (_, DeleteIntegration) = accept(request)?;
        self.hub
            .integrations()
            .delete_integration(&actor, &req.name, req.etag)
            .await?;
        Ok(Response::new(()))
    }

    async fn reauthenticate_integration(
        &self,
        request: Request<pb::ReauthenticateIntegrationRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        let (actor, req): (_, ReauthenticateOne) = accept(request)?;
        let integration = self
            .hub
            .integrations()
            .reauthenticate_integration(&actor, &req.name, req.reauth)
            .await?;
        Ok(Response::new(convert::integration(&integration)))
    }

    async fn reauthenticate_integrations(
        &self,
        request: Request<pb::ReauthenticateIntegrationsRequest>,
    ) -> Result<Response<pb::ReauthenticateIntegrationsResponse>, Status> {
        let (actor, req): (_, ReauthenticateAll) = accept(request)?;
        let team = actor.team_of_parent(&req.parent)?;
        let restored = self
            .hub
            .integrations()
            .reauthenticate_integrations(&actor, team, req.from, req.to)
            .await?;
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
            .integrations()
            .resolve_credentials(&actor, &name)
            .await?;
        Ok(Response::new(pb::ResolveIntegrationCredentialsResponse {
            service: resolved.integration.service.clone(),
            integration: Some(convert::integration(&resolved.integration)),
            expire_time: resolved.expire_time.map(convert::timestamp),
            credentials: resolved.credentials.into_map().into_iter().collect(),
        }))
    }

    async fn transfer_integration(
        &self,
        request: Request<pb::TransferIntegrationRequest>,
    ) -> Result<Response<pb::Integration>, Status> {
        let (actor, req): (_, TransferIntegration) = accept(request)?;
        let integration = self
            .hub
            .integrations()
            .transfer_integration(&actor, &req.name, req.new_owner)
            .await?;
        Ok(Response::new(convert::integration(&integration)))
    }

    async fn promote_integration_credentials(
        &self,
        request: Request<pb::PromoteIntegrationCredentialsRequest>,
    ) -> Result<Response<pb::PromoteIntegrationCredentialsResponse>, Status> {
        let (actor, req): (_, Promote) = accept(request)?;
        let (app, integrations) = self
            .hub
            .integrations()
            .promote_integration_credentials(&actor, req)
            .await?;
        Ok(Response::new(pb::PromoteIntegrationCredentialsResponse {
            installed_app: Some(convert::installed_app(&app)),
            integrations: integrations.iter().map(convert::integration).collect(),
        }))
    }

    type WatchIntegrationEventsStream = ResponseStream;

    async fn watch_integration_events(
        &self,
        request: Request<pb::WatchIntegrationEventsRequest>,
    ) -> Result<Response<Self::WatchIntegrationEventsStream>, Status> {
        let (actor, req): (_, WatchEvents) = accept(request)?;
        let scope = actor.watch_scope(&req.parent)?;
        (self.hub.audit())
            .refuse_limited_watch(&actor, AuditAction::IntegrationWatch, scope.as_ref())
            .await?;
        let cursors = self.hub.cursors(scope.as_ref());
        let start = cursors.open("start_cursor", &req.start_cursor)?;
        let team = scope.map(|t| t.as_str().to_owned());
        let stream = self
            .watches
            .open(&actor.principal(), team, start.map(|c| c.0), req.kinds)
            .await
            .map_err(watch_refused)?;
        let message: Box<dyn FnMut(WatchItem) -> _ + Send> =
            Box::new(move |item| watch_message(&cursors, item));
        Ok(Response::new(stream.map(message)))
    }
}
