//! The closed sets of values columns hold: states, reasons and outcomes. Each value's stored
//! name is written once, in its enum's declaration below; it is at once the column's value
//! (a SeaORM active enum, bound as a parameter in every statement), its serialized form in
//! event snapshots, and what `as_str` answers. No statement spells one as a literal.

/// A stored text that names no value of its enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnknownValue(pub &'static str);

/// Declares an enum whose values are stored (and serialized) as the given names.
macro_rules! stored_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:tt),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash,
            sea_orm::EnumIter, sea_orm::DeriveActiveEnum, serde::Serialize, serde::Deserialize,
        )]
        #[sea_orm(rs_type = "String", db_type = "Text")]
        pub enum $name {
            $($(#[$vmeta])* #[sea_orm(string_value = $text)] #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value a stored name names.
            pub fn parse(text: &str) -> Result<Self, $crate::store::UnknownValue> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::store::UnknownValue(
                        concat!("unknown stored ", stringify!($name)),
                    )),
                }
            }
        }
    };
}
pub(crate) use stored_enum;

stored_enum!(
    /// State of an installed app (`installed_apps.state`, and `resume_state`: the state a
    /// suspended app returns to).
    AppState { Active = "ACTIVE", NeedsReauth = "NEEDS_REAUTH", Suspended = "SUSPENDED" }
);
stored_enum!(
    /// A team's policy for a service (`service_policies.policy`).
    ServicePolicy {
        Allowed = "ALLOWED",
        ApprovalRequired = "APPROVAL_REQUIRED",
        Blocked = "BLOCKED",
    }
);
stored_enum!(
    /// Where an installation request stands (`installation_requests.state`):
    /// APPROVED until the requester installs (USED).
    RequestState {
        Pending = "PENDING",
        Approved = "APPROVED",
        Denied = "DENIED",
        Used = "USED",
        Cancelled = "CANCELLED",
    }
);
stored_enum!(
    /// State of an integration (`integrations.state`).
    IntegrationState { Active = "ACTIVE", Broken = "BROKEN" }
);
stored_enum!(
    /// Why an integration is broken (`integrations.broken_reason`, and the reason of its
    /// events).
    BrokenReason {
        InstalledAppDeleted = "INSTALLED_APP_DELETED",
        CredentialsRejected = "CREDENTIALS_REJECTED",
        InstalledAppSuspended = "INSTALLED_APP_SUSPENDED",
    }
);
stored_enum!(
    /// Where an OAuth authorization stands (`oauth_authorizations.state`): pending, claimed
    /// by one completion exchanging its code, or ended.
    AuthorizationStage {
        Pending = "PENDING",
        Exchanging = "EXCHANGING",
        Succeeded = "SUCCEEDED",
        Failed = "FAILED",
    }
);
stored_enum!(
    /// What the last verification of an app's credentials with their provider found
    /// (`app_verifications.state`).
    VerificationState {
        Verified = "VERIFIED",
        Unverified = "UNVERIFIED",
        Rejected = "REJECTED",
        NotVerifiable = "NOT_VERIFIABLE",
    }
);
stored_enum!(
    /// How a webhook delivery attempt ended (`webhook_deliveries.outcome`;
    /// `WebhookDeliveryOutcome`'s value names).
    DeliveryOutcome {
        Delivered = "DELIVERED",
        HttpError = "HTTP_ERROR",
        Timeout = "TIMEOUT",
        ConnectionError = "CONNECTION_ERROR",
        DestinationRefused = "DESTINATION_REFUSED",
        /// Nothing was sent: the event could not be signed (a secret that does not open).
        NotSent = "NOT_SENT",
    }
);
stored_enum!(
    /// What an audit record records: a mutation or a credential resolution
    /// (`audit_events.action`).
    AuditAction {
        InstalledAppCreate = "installed_app.create",
        InstalledAppUpdate = "installed_app.update",
        InstalledAppDelete = "installed_app.delete",
        InstalledAppReportRejected = "installed_app.report_credentials_rejected",
        InstalledAppSuspend = "installed_app.suspend",
        InstalledAppResume = "installed_app.resume",
        InstalledAppTransfer = "installed_app.transfer",
        InstalledAppStartAuthorization = "installed_app.start_authorization",
        InstalledAppCompleteAuthorization = "installed_app.complete_authorization",
        IntegrationCreate = "integration.create",
        IntegrationUpdate = "integration.update",
        IntegrationDelete = "integration.delete",
        IntegrationReauthenticate = "integration.reauthenticate",
        IntegrationReauthenticateBulk = "integration.reauthenticate_bulk",
        IntegrationResolveCredentials = "integration.resolve_credentials",
        IntegrationTransfer = "integration.transfer",
        IntegrationPromoteCredentials = "integration.promote_credentials",
        WebhookCreate = "webhook.create",
        WebhookUpdate = "webhook.update",
        WebhookDelete = "webhook.delete",
        WebhookRotateSecret = "webhook.rotate_secret",
        WebhookRedeliver = "webhook.redeliver",
        InstalledAppVerify = "installed_app.verify",
        // Reads a limited service principal is refused (recorded when refused only).
        IntegrationWatch = "integration.watch",
        InstalledAppWatch = "installed_app.watch",
        WebhookGet = "webhook.get",
        WebhookList = "webhook.list",
        WebhookListDeliveries = "webhook.list_deliveries",
        InstalledAppSetUsableBy = "installed_app.set_usable_by",
        OwnershipTransfer = "people.transfer_ownership",
        PersonDeprovision = "people.deprovision",
        InstalledAppGet = "installed_app.get",
        InstalledAppList = "installed_app.list",
        IntegrationGet = "integration.get",
        IntegrationList = "integration.list",
        ServicePolicySet = "service_policy.set",
        InstallationRequestCreate = "installation_request.create",
        InstallationRequestApprove = "installation_request.approve",
        InstallationRequestDeny = "installation_request.deny",
    }
);
stored_enum!(
    /// How an audited call ended (`audit_events.outcome`).
    AuditOutcome { Success = "success", Denied = "denied", Failed = "failed" }
);

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::fmt::Debug;

    use sea_orm::ActiveEnum;
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::*;

    /// The column value, the serialized form, `as_str` and `parse` of every value agree, and
    /// no two values share a name.
    fn agree<E>(name: fn(E) -> &'static str, parse: fn(&str) -> Result<E, UnknownValue>)
    where
        E: ActiveEnum<Value = String> + Serialize + DeserializeOwned + Copy + PartialEq + Debug,
    {
        let mut seen = HashSet::new();
        for value in E::iter() {
            let text = name(value);
            assert!(seen.insert(text), "{text} named twice");
            assert_eq!(value.to_value(), text);
            assert_eq!(E::try_from_value(&text.to_owned()).unwrap(), value);
            assert_eq!(
                serde_json::to_string(&value).unwrap(),
                format!("\"{text}\"")
            );
            assert_eq!(
                serde_json::from_str::<E>(&format!("\"{text}\"")).unwrap(),
                value
            );
            assert_eq!(parse(text), Ok(value));
        }
        assert!(parse("NOT_A_STORED_NAME").is_err());
        assert!(E::try_from_value(&"NOT_A_STORED_NAME".to_owned()).is_err());
    }

    #[test]
    fn every_stored_name_is_the_column_value_the_serialized_form_and_as_str() {
        agree(AppState::as_str, AppState::parse);
        agree(IntegrationState::as_str, IntegrationState::parse);
        agree(BrokenReason::as_str, BrokenReason::parse);
        agree(AuthorizationStage::as_str, AuthorizationStage::parse);
        agree(DeliveryOutcome::as_str, DeliveryOutcome::parse);
        agree(AuditAction::as_str, AuditAction::parse);
        agree(AuditOutcome::as_str, AuditOutcome::parse);
    }

    #[test]
    fn stored_states_keep_the_names_existing_rows_hold() {
        fn names<E: Copy>(all: &[E], name: fn(E) -> &'static str) -> Vec<&'static str> {
            all.iter().map(|v| name(*v)).collect()
        }
        assert_eq!(
            names(AppState::ALL, AppState::as_str),
            ["ACTIVE", "NEEDS_REAUTH", "SUSPENDED"]
        );
        assert_eq!(
            names(IntegrationState::ALL, IntegrationState::as_str),
            ["ACTIVE", "BROKEN"]
        );
        assert_eq!(
            names(AuthorizationStage::ALL, AuthorizationStage::as_str),
            ["PENDING", "EXCHANGING", "SUCCEEDED", "FAILED"]
        );
        assert_eq!(
            names(AuditOutcome::ALL, AuditOutcome::as_str),
            ["success", "denied", "failed"]
        );
    }
}
