//! `AuditService`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{actor, convert, status};
use crate::domain::audit::AuditQuery;
use crate::domain::model::AuditAction;
use crate::domain::types::{PageSize, ParentRef};
use crate::domain::{Error, Hub, Violations};
use crate::pb;
use crate::pb::audit_service_server::AuditService;

/// Longest `actor` filter, as long as the longest subject a token may carry.
const MAX_ACTOR_CHARS: usize = 256;

pub struct AuditLog {
    hub: Arc<Hub>,
}

impl AuditLog {
    pub fn new(hub: Arc<Hub>) -> Self {
        AuditLog { hub }
    }
}

fn action_filter(value: &str) -> Result<Option<AuditAction>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    AuditAction::find(value).map(Some).ok_or_else(|| {
        let known: Vec<&str> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        format!("is not an audit action; one of {}", known.join(", "))
    })
}

fn actor_filter(value: &str) -> Result<Option<String>, String> {
    match value {
        "" => Ok(None),
        v if v.chars().count() > MAX_ACTOR_CHARS => {
            Err(format!("must be at most {MAX_ACTOR_CHARS} characters"))
        }
        v => Ok(Some(v.to_owned())),
    }
}

fn time_filter(value: Option<&prost_types::Timestamp>) -> Result<Option<i64>, String> {
    value.map(convert::micros).transpose()
}

#[tonic::async_trait]
impl AuditService for AuditLog {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let actor = actor(&request)?;
        let req = request.into_inner();
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let page_size = v.check("page_size", PageSize::parse(req.page_size));
        let action = v.check("action", action_filter(&req.action));
        let by = v.check("actor", actor_filter(&req.actor));
        let start_time = v.check("start_time", time_filter(req.start_time.as_ref()));
        let end_time = v.check("end_time", time_filter(req.end_time.as_ref()));
        v.finish().map_err(status)?;
        let (
            Some(parent),
            Some(page_size),
            Some(action),
            Some(by),
            Some(start_time),
            Some(end_time),
        ) = (parent, page_size, action, by, start_time, end_time)
        else {
            return Err(status(Error::internal("checked fields missing")));
        };
        let team = self.hub.team_of_parent(&actor, &parent).map_err(status)?;
        let query = AuditQuery {
            action,
            actor: by,
            start_time,
            end_time,
        };
        let page = self
            .hub
            .list_audit_events(&team, query, page_size, &req.page_token)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            audit_events: page.items.iter().map(convert::audit_event).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
