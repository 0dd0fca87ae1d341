//! What both databases accept of a string: no NUL (PostgreSQL refuses U+0000 in text, SQLite
//! keeps it; protobuf already guarantees valid UTF-8). Every string of every request is
//! checked, map keys and values and repeated strings included, by walking the request's
//! encoding with its message descriptor: a new field is covered without a line here.

use std::collections::HashMap;
use std::sync::LazyLock;

use prost::Message;
use prost::encoding::decode_varint;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};

use crate::domain::{Error, FieldViolation};
use crate::pb;

/// What a violation says: never the value.
pub const NUL_DESCRIPTION: &str = "must not contain a NUL character (U+0000)";

/// A request message with its full protobuf name, so its descriptor can be found.
pub trait Described: Message {
    const FULL_NAME: &'static str;
}

macro_rules! described {
    ($($message:ident),* $(,)?) => {
        $(impl Described for pb::$message {
            const FULL_NAME: &'static str = concat!(".integrationhub.v1.", stringify!($message));
        })*
    };
}

described!(
    CreateInstalledAppRequest,
    GetInstalledAppRequest,
    ListInstalledAppsRequest,
    UpdateInstalledAppRequest,
    DeleteInstalledAppRequest,
    ReportCredentialsRejectedRequest,
    CreateIntegrationRequest,
    GetIntegrationRequest,
    ListIntegrationsRequest,
    UpdateIntegrationRequest,
    DeleteIntegrationRequest,
    ReauthenticateIntegrationRequest,
    ReauthenticateIntegrationsRequest,
    ResolveIntegrationCredentialsRequest,
    WatchIntegrationEventsRequest,
    ListAuditEventsRequest,
    SuspendInstalledAppRequest,
    ResumeInstalledAppRequest,
    TransferInstalledAppRequest,
    TransferIntegrationRequest,
    PromoteIntegrationCredentialsRequest,
    StartInstalledAppAuthorizationRequest,
    CompleteInstalledAppAuthorizationRequest,
    GetInstalledAppAuthorizationRequest,
    WatchInstalledAppEventsRequest,
    CreateWebhookSubscriptionRequest,
    GetWebhookSubscriptionRequest,
    ListWebhookSubscriptionsRequest,
    UpdateWebhookSubscriptionRequest,
    DeleteWebhookSubscriptionRequest,
    RotateWebhookSecretRequest,
    ListWebhookDeliveriesRequest,
    RedeliverWebhookEventsRequest,
    SendTestWebhookRequest,
    VerifyInstalledAppRequest,
    SetInstalledAppUsableByRequest,
    TransferOwnershipRequest,
    DeprovisionPersonRequest,
    WatchAuditEventsRequest,
    SetServicePolicyRequest,
    RequestInstallationRequest,
    ListInstallationRequestsRequest,
    ApproveInstallationRequestRequest,
    DenyInstallationRequestRequest,
);

/// Every message of the served descriptor set (imports included), by full name.
static MESSAGES: LazyLock<HashMap<String, DescriptorProto>> = LazyLock::new(|| {
    let mut messages = HashMap::new();
    // The set is compiled into the binary by build.rs: it always decodes.
    let set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).unwrap_or_default();
    for file in set.file {
        let scope = format!(".{}", file.package());
        for message in file.message_type {
            add(&mut messages, &scope, message);
        }
    }
    messages
});

fn add(messages: &mut HashMap<String, DescriptorProto>, scope: &str, message: DescriptorProto) {
    let name = format!("{scope}.{}", message.name());
    for nested in &message.nested_type {
        add(messages, &name, nested.clone());
    }
    messages.insert(name, message);
}

/// INVALID_ARGUMENT naming every field (by its path) holding a string with a NUL.
pub fn check<R: Described>(request: &R) -> Result<(), Error> {
    let mut found = Vec::new();
    walk(
        &request.encode_to_vec(),
        R::FULL_NAME,
        "",
        false,
        &mut found,
    );
    if found.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(
        found
            .into_iter()
            .map(|field| FieldViolation::new(field, NUL_DESCRIPTION))
            .collect(),
    ))
}

/// The paths of the strings holding a NUL in `bytes`, an encoded `message`. A map entry's
/// key and value are named by the map field (a key is client text, never echoed).
fn walk(mut bytes: &[u8], message: &str, path: &str, map_entry: bool, found: &mut Vec<String>) {
    let Some(descriptor) = MESSAGES.get(message) else {
        return;
    };
    while !bytes.is_empty() {
        let Ok(tag) = decode_varint(&mut bytes) else {
            return;
        };
        let skip = match tag & 7 {
            0 => match decode_varint(&mut bytes) {
                Ok(_) => 0,
                Err(_) => return,
            },
            1 => 8,
            5 => 4,
            2 => match decode_varint(&mut bytes).map(usize::try_from) {
                Ok(Ok(len)) => len,
                _ => return,
            },
            _ => return,
        };
        if bytes.len() < skip {
            return;
        }
        let (value, rest) = bytes.split_at(skip);
        bytes = rest;
        if tag & 7 != 2 {
            continue;
        }
        let number = i32::try_from(tag >> 3).unwrap_or_default();
        let Some(field) = descriptor.field.iter().find(|f| f.number() == number) else {
            continue;
        };
        let name = match (map_entry, path) {
            (true, _) => path.to_owned(),
            (false, "") => field.name().to_owned(),
            (false, _) => format!("{path}.{}", field.name()),
        };
        match field.r#type() {
            Type::String if value.contains(&0) && !found.contains(&name) => found.push(name),
            Type::Message => {
                let entry = MESSAGES
                    .get(field.type_name())
                    .and_then(|m| m.options.as_ref())
                    .is_some_and(|o| o.map_entry());
                walk(value, field.type_name(), &name, entry, found);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nul_fields<R: Described>(request: &R) -> Vec<String> {
        match check(request) {
            Ok(()) => Vec::new(),
            Err(Error::Invalid(violations)) => violations.into_iter().map(|v| v.field).collect(),
            Err(other) => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_request_type_has_its_descriptor() {
        fn known<R: Described>() {
            assert!(MESSAGES.contains_key(R::FULL_NAME), "{}", R::FULL_NAME);
        }
        known::<pb::CreateInstalledAppRequest>();
        known::<pb::ListAuditEventsRequest>();
        known::<pb::WatchIntegrationEventsRequest>();
        known::<pb::ReauthenticateIntegrationRequest>();
    }

    #[test]
    fn nested_fields_map_keys_and_values_and_masks_are_named() {
        let mut request = pb::UpdateIntegrationRequest {
            integration: Some(pb::Integration {
                name: "teams/a/integrations/\0".into(),
                display_name: "fine".into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["display_name".into(), "con\0fig".into()],
            }),
        };
        let integration = request.integration.as_mut().unwrap();
        integration.config.insert("k\0".into(), "v".into());
        integration.config.insert("k".into(), "v\0".into());
        assert_eq!(
            nul_fields(&request),
            [
                "integration.name",
                "integration.config",
                "update_mask.paths"
            ]
        );
        let clean = pb::ListAuditEventsRequest {
            actor: "dana".into(),
            ..Default::default()
        };
        assert!(nul_fields(&clean).is_empty());
        let reauth = pb::ReauthenticateIntegrationRequest {
            name: String::new(),
            auth: Some(pb::reauthenticate_integration_request::Auth::Credentials(
                pb::Credentials {
                    values: [("access_token".to_owned(), "a\0".to_owned())].into(),
                },
            )),
        };
        assert_eq!(nul_fields(&reauth), ["credentials.values"]);
    }
}
