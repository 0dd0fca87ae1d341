//! Requests parsed in one place: one `TryFrom` per proto request, into the domain's input.
//! A conversion checks every field it can and fails with INVALID_ARGUMENT listing every
//! violated field (a `BadRequest` violation each, named by its path in the request). What
//! depends on stored data (the catalog, page tokens bound to their listing, the caller's
//! team) is checked by the domain.
//!
//! One file per service; what they share is here.

mod access;
mod audit;
mod installed_apps;
mod integrations;
mod oauth;
mod text;
mod webhooks;

use std::collections::HashMap;

use crate::domain::types::{PageRequest, PageSize};
use crate::domain::{Credentials, Error, Violations};

pub use access::{Decide, Handover, ListRequests, NewRequest, SetPolicy, SetUsableBy};
pub use audit::{ListAudit, WatchAudit};
pub use installed_apps::{
    CreateApp, DeleteApp, ListApps, ReportRejected, SuspendApp, TransferApp, UpdateApp,
};
pub use integrations::{
    CreateIntegration, DeleteIntegration, ListIntegrations, ReauthenticateAll, ReauthenticateOne,
    TransferIntegration, UpdateIntegration, WatchEvents,
};
pub use oauth::{
    CompleteAuthorization, StartAuthorizationRequest, completion as oauth_completion, sign_in_state,
};
pub use text::{Described, check as check_text};
pub use webhooks::{
    CreateWebhook, DeleteWebhook, ListDeliveries, ListWebhooks, Redeliver, RotateWebhook,
    UpdateWebhook,
};

/// Takes the credentials out of a request map, so the plaintext lives in one place that
/// wipes itself.
fn take_credentials(map: &mut HashMap<String, String>) -> Credentials {
    Credentials::new(std::mem::take(map).into_iter().collect())
}

/// An `etag` field: empty means "do not check".
fn optional_etag(etag: &str) -> Option<String> {
    (!etag.is_empty()).then(|| etag.to_owned())
}

/// An owner or creator filter: empty means none; otherwise a subject as
/// `Owner` accepts it.
fn person_filter(value: String) -> Result<Option<String>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    crate::domain::types::Owner::parse(&value).map(|o| Some(o.into_inner()))
}

/// The value of a field known to be present once [`Violations::finish`] passed.
fn checked<T>(value: Option<T>) -> Result<T, Error> {
    value.ok_or_else(|| Error::internal("checked fields missing"))
}

/// A field parsed on its own, whose failure answers alone (before the other fields).
fn field<T>(name: &str, parsed: Result<T, String>) -> Result<T, Error> {
    parsed.map_err(|description| Error::invalid(name, description))
}

fn page(v: &mut Violations, page_size: i32, page_token: String) -> Option<PageRequest> {
    v.check("page_size", PageSize::parse(page_size))
        .map(|size| PageRequest {
            size,
            token: page_token,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Binding;
    use crate::pb;

    fn violated<T>(parsed: Result<T, Error>) -> Vec<String> {
        match parsed {
            Err(Error::Invalid(violations)) => violations.into_iter().map(|v| v.field).collect(),
            Err(other) => panic!("expected INVALID_ARGUMENT, got {other:?}"),
            Ok(_) => panic!("expected INVALID_ARGUMENT, got a parsed request"),
        }
    }

    #[test]
    fn a_create_lists_every_violated_field_at_once() {
        let request = pb::CreateInstalledAppRequest {
            parent: "acme".into(),
            installed_app: Some(pb::InstalledApp {
                display_name: " ".into(),
                connected_to: "a\nb".into(),
                ..Default::default()
            }),
            credentials: HashMap::new(),
            request_id: "a b".into(),
        };
        assert_eq!(
            violated(CreateApp::try_from(request)),
            [
                "parent",
                "installed_app.service",
                "installed_app.display_name",
                "installed_app.connected_to",
                "request_id",
                "credentials",
            ]
        );
    }

    #[test]
    fn a_malformed_name_answers_alone_before_the_rest_of_an_update() {
        let request = pb::UpdateInstalledAppRequest {
            installed_app: Some(pb::InstalledApp {
                name: "apps/1".into(),
                display_name: String::new(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into(), "state".into()],
            }),
            credentials: HashMap::new(),
        };
        assert_eq!(
            violated(UpdateApp::try_from(request)),
            ["installed_app.name"]
        );
    }

    #[test]
    fn a_listing_checks_its_page_size_and_filters_together() {
        let request = pb::ListIntegrationsRequest {
            parent: "teams/".into(),
            page_size: -1,
            page_token: "not checked here".into(),
            installed_app: "nope".into(),
            state: 99,
            ..Default::default()
        };
        assert_eq!(
            violated(ListIntegrations::try_from(request)),
            ["parent", "page_size", "installed_app", "state"]
        );
    }

    #[test]
    fn credentials_move_out_of_the_request_into_a_wiping_map() {
        let mut request = pb::CreateIntegrationRequest {
            integration: Some(pb::Integration {
                r#type: "slack.post_monitor_results".into(),
                display_name: "Job".into(),
                service: "slack".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        request
            .credentials
            .insert("access_token".into(), "xoxb-secret".into());
        let parsed = CreateIntegration::try_from(request).unwrap();
        match parsed.integration.binding {
            Binding::Own {
                service,
                credentials,
            } => {
                assert_eq!(service, "slack");
                assert_eq!(credentials.get("access_token"), Some("xoxb-secret"));
                assert!(!format!("{credentials:?}").contains("xoxb-secret"));
            }
            Binding::App(_) => panic!("expected credentials of its own"),
        }
    }

    #[test]
    fn watch_types_must_be_known_kinds() {
        let request = pb::WatchIntegrationEventsRequest {
            parent: String::new(),
            start_cursor: String::new(),
            types: vec![1, 4],
        };
        let parsed = WatchEvents::try_from(request).unwrap();
        let mut kinds: Vec<_> = parsed.kinds.into_iter().collect();
        kinds.sort();
        assert_eq!(kinds, ["INTEGRATION_BROKEN", "INTEGRATION_CREATED"]);
        let unknown = pb::WatchIntegrationEventsRequest {
            types: vec![0],
            ..Default::default()
        };
        assert_eq!(violated(WatchEvents::try_from(unknown)), ["types"]);
    }
}
