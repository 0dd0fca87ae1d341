//! Requests of `WebhookService`.

use std::time::Duration;

use super::{checked, field, optional_etag, page};
use crate::domain::tokens::check_cursor_text;
use crate::domain::types::{PageRequest, ParentRef, WebhookName};
use crate::domain::webhooks::{
    Description, NewSubscription, SubscriptionChanges, WebhookUrl, parse_event_types,
};
use crate::domain::{Error, Violations};
use crate::pb;

/// Longest grace period a rotation may give the old secret.
pub const MAX_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// CreateWebhookSubscription.
pub struct CreateWebhook {
    pub parent: ParentRef,
    pub input: NewSubscription,
}

impl TryFrom<pb::CreateWebhookSubscriptionRequest> for CreateWebhook {
    type Error = Error;

    fn try_from(req: pb::CreateWebhookSubscriptionRequest) -> Result<Self, Error> {
        let sub = req.webhook_subscription.unwrap_or_default();
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let url = v.check("webhook_subscription.url", WebhookUrl::parse(&sub.url));
        let event_types = v.check(
            "webhook_subscription.event_types",
            parse_event_types(&sub.event_types),
        );
        let description = v.check(
            "webhook_subscription.description",
            Description::parse(&sub.description),
        );
        v.finish()?;
        Ok(CreateWebhook {
            parent: checked(parent)?,
            input: NewSubscription {
                url: checked(url)?,
                event_types: checked(event_types)?,
                description: checked(description)?,
                enabled: !req.disabled,
            },
        })
    }
}

impl TryFrom<pb::GetWebhookSubscriptionRequest> for WebhookName {
    type Error = Error;

    fn try_from(req: pb::GetWebhookSubscriptionRequest) -> Result<Self, Error> {
        field("name", WebhookName::parse(&req.name))
    }
}

impl TryFrom<pb::SendTestWebhookRequest> for WebhookName {
    type Error = Error;

    fn try_from(req: pb::SendTestWebhookRequest) -> Result<Self, Error> {
        field("name", WebhookName::parse(&req.name))
    }
}

/// ListWebhookSubscriptions.
pub struct ListWebhooks {
    pub parent: ParentRef,
    pub page: PageRequest,
}

impl TryFrom<pb::ListWebhookSubscriptionsRequest> for ListWebhooks {
    type Error = Error;

    fn try_from(req: pb::ListWebhookSubscriptionsRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let parent = v.check("parent", ParentRef::parse(&req.parent));
        let page = page(&mut v, req.page_size, req.page_token);
        v.finish()?;
        Ok(ListWebhooks {
            parent: checked(parent)?,
            page: checked(page)?,
        })
    }
}

/// UpdateWebhookSubscription.
pub struct UpdateWebhook {
    pub name: WebhookName,
    pub changes: SubscriptionChanges,
}

impl TryFrom<pb::UpdateWebhookSubscriptionRequest> for UpdateWebhook {
    type Error = Error;

    fn try_from(req: pb::UpdateWebhookSubscriptionRequest) -> Result<Self, Error> {
        let sub = req.webhook_subscription.unwrap_or_default();
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::default();
        let name = v.check("webhook_subscription.name", WebhookName::parse(&sub.name));
        let mut changes = SubscriptionChanges {
            etag: optional_etag(&sub.etag),
            ..Default::default()
        };
        for path in &paths {
            match path.as_str() {
                "url" => {
                    changes.url = v.check("webhook_subscription.url", WebhookUrl::parse(&sub.url))
                }
                "event_types" => {
                    changes.event_types = v.check(
                        "webhook_subscription.event_types",
                        parse_event_types(&sub.event_types),
                    )
                }
                "description" => {
                    changes.description = v.check(
                        "webhook_subscription.description",
                        Description::parse(&sub.description),
                    )
                }
                "enabled" => changes.enabled = Some(sub.enabled),
                _ => v
                    .check::<()>(
                        "update_mask",
                        Err("may name only url, event_types, description and enabled".into()),
                    )
                    .unwrap_or_default(),
            }
        }
        if paths.is_empty() {
            v.check::<()>("update_mask", Err("names nothing to change".into()));
        }
        v.finish()?;
        Ok(UpdateWebhook {
            name: checked(name)?,
            changes,
        })
    }
}

/// DeleteWebhookSubscription.
pub struct DeleteWebhook {
    pub name: WebhookName,
    pub etag: Option<String>,
}

impl TryFrom<pb::DeleteWebhookSubscriptionRequest> for DeleteWebhook {
    type Error = Error;

    fn try_from(req: pb::DeleteWebhookSubscriptionRequest) -> Result<Self, Error> {
        Ok(DeleteWebhook {
            name: field("name", WebhookName::parse(&req.name))?,
            etag: optional_etag(&req.etag),
        })
    }
}

/// RotateWebhookSecret: `grace` is `None` for the server's default.
pub struct RotateWebhook {
    pub name: WebhookName,
    pub grace: Option<Duration>,
}

fn grace(value: &prost_types::Duration) -> Result<Duration, String> {
    if value.seconds < 0 || value.nanos < 0 || value.nanos >= 1_000_000_000 {
        return Err("must not be negative".into());
    }
    let grace = Duration::new(value.seconds as u64, value.nanos as u32);
    if grace > MAX_GRACE {
        return Err("must be at most 7 days".into());
    }
    Ok(grace)
}

impl TryFrom<pb::RotateWebhookSecretRequest> for RotateWebhook {
    type Error = Error;

    fn try_from(req: pb::RotateWebhookSecretRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let name = v.check("name", WebhookName::parse(&req.name));
        let grace = match &req.grace_period {
            Some(value) => v.check("grace_period", grace(value)).map(Some),
            None => Some(None),
        };
        v.finish()?;
        Ok(RotateWebhook {
            name: checked(name)?,
            grace: checked(grace)?,
        })
    }
}

/// ListWebhookDeliveries.
pub struct ListDeliveries {
    pub name: WebhookName,
    pub page: PageRequest,
}

impl TryFrom<pb::ListWebhookDeliveriesRequest> for ListDeliveries {
    type Error = Error;

    fn try_from(req: pb::ListWebhookDeliveriesRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let name = v.check("parent", WebhookName::parse(&req.parent));
        let page = page(&mut v, req.page_size, req.page_token);
        v.finish()?;
        Ok(ListDeliveries {
            name: checked(name)?,
            page: checked(page)?,
        })
    }
}

/// RedeliverWebhookEvents.
pub struct Redeliver {
    pub name: WebhookName,
    /// As sent (bounded); opened for the subscription's team by the handler.
    pub start_cursor: String,
}

impl TryFrom<pb::RedeliverWebhookEventsRequest> for Redeliver {
    type Error = Error;

    fn try_from(req: pb::RedeliverWebhookEventsRequest) -> Result<Self, Error> {
        let mut v = Violations::default();
        let name = v.check("name", WebhookName::parse(&req.name));
        let start = v.check(
            "start_cursor",
            match req.start_cursor.len() {
                0 => Err("is required".to_owned()),
                _ => check_cursor_text(req.start_cursor),
            },
        );
        v.finish()?;
        Ok(Redeliver {
            name: checked(name)?,
            start_cursor: checked(start)?,
        })
    }
}
