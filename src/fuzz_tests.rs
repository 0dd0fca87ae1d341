//! Property-based fuzzing (proptest; cargo-fuzz needs a nightly toolchain, which these
//! machines do not have) of everything a client hands the service before any check has
//! passed: every request's validation, cursors, page tokens, sealed values and bearer tokens.
//! Each must answer (a value or a clean error) without a panic and without a hang.
//!
//! CI runs the default number of cases (a few seconds); a longer run:
//!
//! ```sh
//! PROPTEST_CASES=100000 cargo test --lib fuzz_tests
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use prost::Message;

use crate::api::parse::{
    CreateApp, CreateIntegration, CreateWebhook, DeleteApp, DeleteIntegration, DeleteWebhook,
    ListApps, ListAudit, ListDeliveries, ListIntegrations, ListWebhooks, ReauthenticateAll,
    ReauthenticateOne, Redeliver, ReportRejected, RotateWebhook, SuspendApp, TransferApp,
    TransferIntegration, UpdateApp, UpdateIntegration, UpdateWebhook, WatchEvents,
};
use crate::domain::Error;
use crate::domain::tokens::{ListingPages, TeamCursors};
use crate::domain::types::{
    AppName, IntegrationName, PageRequest, PageSize, PageToken, TeamId, WebhookName,
};
use crate::pb;

/// No conversion may take this long, whatever the input.
const SLOW: Duration = Duration::from_millis(500);

/// Strings a hostile client sends: anything, including NUL, controls, lone surrogates' UTF-8
/// neighbours, long runs, and near-misses of valid names and tokens.
fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[\\x00-\\x1f\\x7f\"'{}/\\\\|:%]{0,40}",
        "teams/[a-z0-9*\\x00/ -]{0,20}(/(installedApps|integrations)/[a-zA-Z0-9\\x00/ -]{0,40})?",
        proptest::collection::vec(any::<char>(), 0..1200).prop_map(|c| c.into_iter().collect()),
        "[A-Za-z0-9_-]{0,200}",
    ]
}

fn hostile_map() -> impl Strategy<Value = HashMap<String, String>> {
    proptest::collection::hash_map(hostile_string(), hostile_string(), 0..24)
}

/// Converts `request` with its `TryFrom`, failing the case on a panic or a slow answer. A
/// refusal must be a client error, never INTERNAL.
fn converts<R, T>(request: R) -> Result<(), TestCaseError>
where
    T: TryFrom<R, Error = Error>,
{
    let started = Instant::now();
    let result = T::try_from(request);
    prop_assert!(
        started.elapsed() < SLOW,
        "a conversion took {:?}",
        started.elapsed()
    );
    if let Err(err) = result {
        prop_assert!(
            !matches!(err, Error::Internal(_)),
            "a request's validation answered INTERNAL"
        );
        // The status a client would get is built without a panic, too.
        let _ = tonic::Status::from(err);
    }
    Ok(())
}

/// Decodes `bytes` as each request type and converts what decodes: the generic fuzzer.
fn every_request(bytes: &[u8]) -> Result<(), TestCaseError> {
    macro_rules! each {
        ($($message:ty => $input:ty),* $(,)?) => {
            $(
                if let Ok(request) = <$message>::decode(bytes) {
                    converts::<$message, $input>(request)?;
                }
            )*
        };
    }
    each!(
        pb::CreateInstalledAppRequest => CreateApp,
        pb::GetInstalledAppRequest => AppName,
        pb::ListInstalledAppsRequest => ListApps,
        pb::UpdateInstalledAppRequest => UpdateApp,
        pb::DeleteInstalledAppRequest => DeleteApp,
        pb::ReportCredentialsRejectedRequest => ReportRejected,
        pb::CreateIntegrationRequest => CreateIntegration,
        pb::GetIntegrationRequest => IntegrationName,
        pb::ListIntegrationsRequest => ListIntegrations,
        pb::UpdateIntegrationRequest => UpdateIntegration,
        pb::DeleteIntegrationRequest => DeleteIntegration,
        pb::ReauthenticateIntegrationRequest => ReauthenticateOne,
        pb::ReauthenticateIntegrationsRequest => ReauthenticateAll,
        pb::ResolveIntegrationCredentialsRequest => IntegrationName,
        pb::WatchIntegrationEventsRequest => WatchEvents,
        pb::ListAuditEventsRequest => ListAudit,
        pb::SuspendInstalledAppRequest => SuspendApp,
        pb::ResumeInstalledAppRequest => AppName,
        pb::TransferInstalledAppRequest => TransferApp,
        pb::TransferIntegrationRequest => TransferIntegration,
        pb::StartInstalledAppAuthorizationRequest => crate::api::parse::StartAuthorizationRequest,
        pb::CompleteInstalledAppAuthorizationRequest => crate::api::parse::CompleteAuthorization,
        pb::GetInstalledAppAuthorizationRequest => crate::domain::types::AuthorizationName,
        pb::WatchInstalledAppEventsRequest => WatchEvents,
        pb::CreateWebhookSubscriptionRequest => CreateWebhook,
        pb::GetWebhookSubscriptionRequest => WebhookName,
        pb::ListWebhookSubscriptionsRequest => ListWebhooks,
        pb::UpdateWebhookSubscriptionRequest => UpdateWebhook,
        pb::DeleteWebhookSubscriptionRequest => DeleteWebhook,
        pb::RotateWebhookSecretRequest => RotateWebhook,
        pb::ListWebhookDeliveriesRequest => ListDeliveries,
        pb::RedeliverWebhookEventsRequest => Redeliver,
        pb::SendTestWebhookRequest => WebhookName,
    );
    Ok(())
}

proptest! {
    #[test]
    fn any_bytes_as_any_request_convert_without_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        every_request(&bytes)?;
    }

    #[test]
    fn hostile_strings_in_app_requests_convert_without_a_panic(
        name in hostile_string(),
        service in hostile_string(),
        display in hostile_string(),
        connected in hostile_string(),
        request_id in hostile_string(),
        etag in hostile_string(),
        page_token in hostile_string(),
        page_size in any::<i32>(),
        credentials in hostile_map(),
        paths in proptest::collection::vec(hostile_string(), 0..8),
    ) {
        let app = pb::InstalledApp {
            name: name.clone(),
            service,
            display_name: display,
            connected_to: connected,
            etag: etag.clone(),
            ..Default::default()
        };
        converts::<_, CreateApp>(pb::CreateInstalledAppRequest {
            parent: name.clone(),
            installed_app: Some(app.clone()),
            credentials: credentials.clone(),
            request_id,
        })?;
        converts::<_, UpdateApp>(pb::UpdateInstalledAppRequest {
            installed_app: Some(app),
            update_mask: Some(prost_types::FieldMask { paths }),
            credentials,
        })?;
        converts::<_, ListApps>(pb::ListInstalledAppsRequest {
            parent: name.clone(),
            page_size,
            page_token,
            service: name.clone(),
            ..Default::default()
        })?;
        converts::<_, DeleteApp>(pb::DeleteInstalledAppRequest {
            name: name.clone(),
            etag,
            validate_only: false,
        })?;
        converts::<_, ReportRejected>(pb::ReportCredentialsRejectedRequest {
            name: name.clone(),
            detail: name.clone(),
        })?;
        converts::<_, AppName>(pb::GetInstalledAppRequest { name })?;
    }

    #[test]
    fn hostile_strings_in_integration_requests_convert_without_a_panic(
        name in hostile_string(),
        app in hostile_string(),
        kind in hostile_string(),
        display in hostile_string(),
        cursor in hostile_string(),
        page_token in hostile_string(),
        config in hostile_map(),
        credentials in hostile_map(),
        types in proptest::collection::vec(any::<i32>(), 0..8),
        state in any::<i32>(),
    ) {
        let integration = pb::Integration {
            name: name.clone(),
            installed_app: app.clone(),
            r#type: kind,
            display_name: display,
            config,
            ..Default::default()
        };
        converts::<_, CreateIntegration>(pb::CreateIntegrationRequest {
            parent: name.clone(),
            integration: Some(integration.clone()),
            credentials: credentials.clone(),
            ..Default::default()
        })?;
        converts::<_, UpdateIntegration>(pb::UpdateIntegrationRequest {
            integration: Some(integration),
            ..Default::default()
        })?;
        converts::<_, ListIntegrations>(pb::ListIntegrationsRequest {
            parent: name.clone(),
            page_token,
            installed_app: app.clone(),
            state,
            ..Default::default()
        })?;
        converts::<_, WatchEvents>(pb::WatchIntegrationEventsRequest {
            parent: name.clone(),
            start_cursor: cursor,
            types,
        })?;
        converts::<_, ReauthenticateAll>(pb::ReauthenticateIntegrationsRequest {
            parent: name.clone(),
            from_installed_app: app.clone(),
            to_installed_app: name.clone(),
        })?;
        converts::<_, IntegrationName>(pb::GetIntegrationRequest { name })?;
    }

    #[test]
    fn cursors_and_page_tokens_parse_without_a_panic(
        text in hostile_string(),
        listing in hostile_string(),
        // Listings are the server's own (a kind and validated filter values).
        own_listing in "[a-z]{1,12}(:[a-zA-Z0-9_|-]{0,40}){0,3}",
        time in any::<i64>(),
    ) {
        let keys = std::sync::Arc::new(crate::crypto::KeyRing::generate(1).expect("key").0);
        let team = TeamId::parse("acme").expect("team");
        let _ = TeamCursors::new(keys.clone(), Some(&team)).open("start_cursor", &text);
        let hostile = ListingPages::new(keys.clone(), &team, &listing);
        let request = PageRequest { size: PageSize::parse(0).expect("size"), token: text };
        let _ = hostile.after(&request);
        let _ = hostile.after_seq(&request);
        // A token reads back as what it was made from, in its own listing only.
        let own = ListingPages::new(keys.clone(), &team, &own_listing);
        let request = PageRequest {
            size: PageSize::parse(0).expect("size"),
            token: own.token_after(time, "abc123"),
        };
        prop_assert_eq!(own.after(&request).ok(), Some(Some(PageToken::after(time, "abc123"))));
        let other = ListingPages::new(keys, &team, &format!("{}x", own_listing));
        prop_assert!(other.after(&request).is_err());
    }

    #[test]
    fn sealed_values_open_without_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..512),
        team in hostile_string(),
    ) {
        let ring = crate::crypto::KeyRing::generate(1).expect("key").0;
        let aad = crate::crypto::Aad { team: &team, owner: "installedApps/x" };
        prop_assert!(ring.open(&aad, &bytes).is_err(), "random bytes opened");
        let _ = crate::crypto::KeyRing::sealed_key_version(&bytes);
    }
}
