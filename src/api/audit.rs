//! `AuditService`, including the `WatchAuditEvents` stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::parse::{ListAudit, WatchAudit};
use super::{accept, convert};
use crate::domain::types::TeamId;
use crate::domain::{Error, Hub};
use crate::events::StreamLimits;
use crate::pb;
use crate::pb::audit_service_server::AuditService;

/// Records one message of WatchAuditEvents carries at most.
const WATCH_BATCH: u64 = 200;
/// How often an idle audit watch looks for newly sealed records.
const WATCH_POLL: Duration = Duration::from_millis(500);

pub struct AuditLog {
    hub: Arc<Hub>,
    /// Shared with the event streams: an audit watch takes a place among them.
    limits: StreamLimits,
    checkpoint_every: Duration,
    stop: watch::Receiver<bool>,
}

impl AuditLog {
    pub fn new(
        hub: Arc<Hub>,
        limits: StreamLimits,
        checkpoint_every: Duration,
        stop: watch::Receiver<bool>,
    ) -> Self {
        AuditLog {
            hub,
            limits,
            checkpoint_every,
            stop,
        }
    }
}

/// Follows `team`'s audit chain from place `pos`, sending what was sealed in messages, a
/// checkpoint every `every` while nothing comes; ends when the client goes, at shutdown, or
/// on an error (sent as the stream's last item).
async fn follow(
    hub: Arc<Hub>,
    team: TeamId,
    mut pos: i64,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    out: mpsc::Sender<Result<pb::WatchAuditEventsResponse, Status>>,
) {
    let mut idle_since = tokio::time::Instant::now();
    // The first message comes at once (a checkpoint when nothing is there): the stream is open.
    let mut first = true;
    loop {
        let batch = match hub.audit().watch_after(&team, pos, WATCH_BATCH).await {
            Ok(batch) => batch,
            Err(err) => {
                let _ = out.send(Err(Status::from(err))).await;
                return;
            }
        };
        let full = batch.len() as u64 == WATCH_BATCH;
        let message = if let Some((last, _)) = batch.last() {
            first = false;
            pos = *last;
            idle_since = tokio::time::Instant::now();
            Some(pb::WatchAuditEventsResponse {
                audit_events: batch.iter().map(|(_, e)| convert::audit_event(e)).collect(),
                cursor: hub.audit().watch_cursor(&team, pos),
                checkpoint: false,
            })
        } else if std::mem::take(&mut first) || idle_since.elapsed() >= every {
            idle_since = tokio::time::Instant::now();
            Some(pb::WatchAuditEventsResponse {
                audit_events: Vec::new(),
                cursor: hub.audit().watch_cursor(&team, pos),
                checkpoint: true,
            })
        } else {
            None
        };
        if let Some(message) = message
            && out.send(Ok(message)).await.is_err()
        {
            return;
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(WATCH_POLL) => {}
            _ = out.closed() => return,
            _ = stop.changed() => {
                let _ = out
                    .send(Err(Status::unavailable(
                        "the server is shutting down; resume from the last cursor",
                    )))
                    .await;
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl AuditService for AuditLog {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let (actor, req): (_, ListAudit) = accept(request)?;
        let team = actor.team_of_parent(&req.parent)?;
        let page = self
            .hub
            .audit()
            .list_audit_events(&team, req.query, req.page)
            .await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            audit_events: page.items.iter().map(convert::audit_event).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    type WatchAuditEventsStream = ReceiverStream<Result<pb::WatchAuditEventsResponse, Status>>;

    async fn watch_audit_events(
        &self,
        request: Request<pb::WatchAuditEventsRequest>,
    ) -> Result<Response<Self::WatchAuditEventsStream>, Status> {
        let (actor, req): (_, WatchAudit) = accept(request)?;
        let team = actor.team_of_parent(&req.parent)?;
        let pos = self
            .hub
            .audit()
            .open_watch(&actor, &team, &req.start_cursor)
            .await?;
        let slot = self
            .limits
            .acquire(&actor.principal())
            .map_err(|message| Status::from(Error::ResourceExhausted(message.into())))?;
        let (out, stream) = mpsc::channel(2);
        let (hub, every, stop) = (self.hub.clone(), self.checkpoint_every, self.stop.clone());
        tokio::spawn(async move {
            // Holds this stream's place in the limits until the stream ends.
            let _slot = slot;
            follow(hub, team, pos, every, stop, out).await;
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}
