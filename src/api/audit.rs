//! `AuditService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::parse::ListAudit;
use super::{accept, convert};
use crate::domain::Hub;
use crate::pb;
use crate::pb::audit_service_server::AuditService;

pub struct AuditLog {
    hub: Arc<Hub>,
}

impl AuditLog {
    pub fn new(hub: Arc<Hub>) -> Self {
        AuditLog { hub }
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
}
