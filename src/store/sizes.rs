//! Roughly how many bytes a row takes once it is answered: what pages are bounded by. Only
//! the text a client may make long counts; fixed-size fields are a constant per row.

use super::entities::{audit_event, installed_app, integration};
use super::webhooks::{DeliveryRow, SubscriptionRow};

/// What every row costs besides its text (ids, times, states, field tags).
const ROW_OVERHEAD: usize = 64;

/// The size of a row in an answer, estimated from its text.
pub trait RowBytes {
    fn row_bytes(&self) -> usize;
}

fn text<const N: usize>(fields: [&str; N]) -> usize {
    ROW_OVERHEAD + fields.iter().map(|f| f.len()).sum::<usize>()
}

fn opt(field: &Option<String>) -> &str {
    field.as_deref().unwrap_or("")
}

impl RowBytes for integration::Model {
    fn row_bytes(&self) -> usize {
        text([
            &self.id,
            &self.team,
            opt(&self.installed_app_id),
            &self.service,
            &self.type_id,
            &self.display_name,
            &self.config,
            opt(&self.broken_detail),
            &self.creator,
            &self.owner,
        ])
    }
}

impl RowBytes for installed_app::Model {
    fn row_bytes(&self) -> usize {
        text([
            &self.id,
            &self.team,
            &self.service,
            &self.display_name,
            &self.connected_to,
            &self.creator,
            &self.owner,
            opt(&self.suspension_reason),
            opt(&self.usable_by),
        ])
    }
}

impl RowBytes for audit_event::Model {
    fn row_bytes(&self) -> usize {
        text([
            &self.id,
            &self.team,
            &self.actor,
            &self.actor_team,
            self.action.as_str(),
            &self.resource,
            opt(&self.reason),
            &self.request_id,
        ])
    }
}

impl RowBytes for SubscriptionRow {
    fn row_bytes(&self) -> usize {
        text([
            &self.id,
            &self.team,
            &self.url,
            &self.event_types,
            &self.description,
            opt(&self.disabled_reason),
            &self.creator,
        ])
    }
}

impl RowBytes for DeliveryRow {
    fn row_bytes(&self) -> usize {
        text([
            &self.team,
            &self.subscription_id,
            &self.webhook_id,
            &self.event_type,
            &self.response_body,
            &self.error,
        ])
    }
}
