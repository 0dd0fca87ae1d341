//! Requests of `AuditService`.

use super::{checked, page};
use crate::api::convert;
use crate::domain::audit::AuditQuery;
use crate::domain::model::AuditAction;
use crate::domain::tokens::check_cursor_text;
use crate::domain::types::{PageRequest, ParentRef};
use crate::domain::{Error, Violations};
use crate::pb;

/// Longest `actor` filter, as long as the longest subject a token may carry.
const MAX_ACTOR_CHARS: usize = 256;

pub struct ListAudit {
    pub parent: ParentRef,
    pub query: AuditQuery,
    pub page: PageRequest,
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

impl TryFrom<pb::ListAuditEventsRequest> for ListAudit {
    type Error = Error;

    fn try_from(req: pb::ListAuditEventsRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let page = page(&mut v, req.page_size, req.page_token);
        let action = v.check("action", action_filter(&req.action));
        let by = v.check("actor", actor_filter(&req.actor));
        let start_time = v.check("start_time", time_filter(req.start_time.as_ref()));
        let end_time = v.check("end_time", time_filter(req.end_time.as_ref()));
        v.finish()?;
        Ok(ListAudit {
            parent: checked(parent)?,
            query: AuditQuery {
                action: checked(action)?,
                actor: checked(by)?,
                start_time: checked(start_time)?,
                end_time: checked(end_time)?,
            },
            page: checked(page)?,
        })
    }
}

/// A WatchAuditEvents request: the team and where to start.
pub struct WatchAudit {
    pub parent: ParentRef,
    /// The start cursor as sent (its shape checked); opened for the team once that is known.
    pub start_cursor: String,
}

impl TryFrom<pb::WatchAuditEventsRequest> for WatchAudit {
    type Error = Error;

    fn try_from(req: pb::WatchAuditEventsRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let start = v.check("start_cursor", check_cursor_text(req.start_cursor));
        v.finish()?;
        Ok(WatchAudit {
            parent: checked(parent)?,
            start_cursor: checked(start)?,
        })
    }
}
