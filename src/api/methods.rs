//! Every RPC of the API, one row each: who may call it and the audit action a refused call
//! is recorded under. The policy check and the audit of refusals (`auth_layer`), the health
//! of each service (`startup`), the request metrics' test and the access-matrix tests all read
//! this table, so a new RPC is one row here (plus its proto, parse, handler and domain
//! operation).
//!
//! A method missing from the table has no access rule: [`method`] answers `None` and the
//! caller is refused (fail closed), so a new RPC cannot ship unguarded by being forgotten.

use crate::auth::Access;
use crate::domain::model::AuditAction;

/// One RPC.
#[derive(Clone, Copy, Debug)]
pub struct Method {
    /// Its full gRPC path, `/integrationhub.v1.{service}/{name}`.
    pub path: &'static str,
    /// Its service, such as `InstalledAppService`.
    pub service: &'static str,
    pub name: &'static str,
    /// Who may call it, checked before its handler runs.
    pub access: Access,
    /// For a change or a credential read: the action its audit records carry, so that a
    /// refused call is recorded too. Watches and webhook reads have one for their refusals
    /// (a limited service principal's); their successes are not recorded.
    pub audit: Option<AuditAction>,
}

macro_rules! methods {
    (package $package:literal; $($service:ident { $($name:ident: $access:ident $(=> $action:ident)?,)* })*) => {
        /// The package every service of the API is in.
        pub const PACKAGE: &str = $package;

        /// Every RPC of the API.
        pub const METHODS: &[Method] = &[$($(Method {
            path: concat!("/", $package, ".", stringify!($service), "/", stringify!($name)),
            service: stringify!($service),
            name: stringify!($name),
            access: Access::$access,
            audit: methods!(@audit $($action)?),
        },)*)*];
    };
    (@audit) => { None };
    (@audit $action:ident) => { Some(AuditAction::$action) };
}

methods! {
    package "integrationhub.v1";
    InstalledAppService {
        ListServices: AnyRole,
        CreateInstalledApp: Developer => InstalledAppCreate,
        GetInstalledApp: AnyRole => InstalledAppGet,
        ListInstalledApps: AnyRole => InstalledAppList,
        UpdateInstalledApp: AppCreatorOrAdmin => InstalledAppUpdate,
        DeleteInstalledApp: Admin => InstalledAppDelete,
        ReportCredentialsRejected: Service => InstalledAppReportRejected,
        SuspendInstalledApp: Admin => InstalledAppSuspend,
        ResumeInstalledApp: Admin => InstalledAppResume,
        TransferInstalledApp: Admin => InstalledAppTransfer,
        StartInstalledAppAuthorization: Developer => InstalledAppStartAuthorization,
        CompleteInstalledAppAuthorization: Developer => InstalledAppCompleteAuthorization,
        GetInstalledAppAuthorization: Developer,
        VerifyInstalledApp: Developer => InstalledAppVerify,
        WatchInstalledAppEvents: AnyRole => InstalledAppWatch,
    }
    IntegrationService {
        CreateIntegration: Developer => IntegrationCreate,
        GetIntegration: AnyRole => IntegrationGet,
        ListIntegrations: AnyRole => IntegrationList,
        UpdateIntegration: Developer => IntegrationUpdate,
        DeleteIntegration: Developer => IntegrationDelete,
        ReauthenticateIntegration: Developer => IntegrationReauthenticate,
        ReauthenticateIntegrations: Developer => IntegrationReauthenticateBulk,
        ResolveIntegrationCredentials: Service => IntegrationResolveCredentials,
        WatchIntegrationEvents: AnyRole => IntegrationWatch,
        TransferIntegration: Admin => IntegrationTransfer,
        PromoteIntegrationCredentials: Developer => IntegrationPromoteCredentials,
    }
    WebhookService {
        CreateWebhookSubscription: Admin => WebhookCreate,
        GetWebhookSubscription: AdminOrService => WebhookGet,
        ListWebhookSubscriptions: AdminOrService => WebhookList,
        UpdateWebhookSubscription: Admin => WebhookUpdate,
        DeleteWebhookSubscription: Admin => WebhookDelete,
        RotateWebhookSecret: Admin => WebhookRotateSecret,
        ListWebhookDeliveries: AdminOrService => WebhookListDeliveries,
        RedeliverWebhookEvents: Admin => WebhookRedeliver,
        SendTestWebhook: Admin,
    }
    AuditService {
        ListAuditEvents: Admin,
        WatchAuditEvents: AdminOrService,
    }
    AccessService {
        SetInstalledAppUsableBy: AppCreatorOrAdmin => InstalledAppSetUsableBy,
        TransferOwnership: Admin => OwnershipTransfer,
        DeprovisionPerson: AdminOrService => PersonDeprovision,
        SetServicePolicy: Admin => ServicePolicySet,
        RequestInstallation: Developer => InstallationRequestCreate,
        ListInstallationRequests: Developer,
        ApproveInstallationRequest: Admin => InstallationRequestApprove,
        DenyInstallationRequest: Admin => InstallationRequestDeny,
    }
}

/// The row of a full gRPC path (exact match); `None` means "refuse".
pub fn method(path: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.path == path)
}

/// The full names of the API's services (`integrationhub.v1.InstalledAppService`, ...), each
/// once, in the table's order: what health reports on.
pub fn services() -> Vec<String> {
    let mut services: Vec<String> = Vec::new();
    for m in METHODS {
        let name = format!("{PACKAGE}.{}", m.service);
        if !services.contains(&name) {
            services.push(name);
        }
    }
    services
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deny by default is only safe if nothing is denied by mistake: every method the server
    /// describes (from the descriptors reflection serves) has a row, and every row a method.
    #[test]
    fn every_described_method_has_one_row_and_every_row_a_described_method() {
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let mut described = Vec::new();
        for file in set.file.iter().filter(|f| f.package() == PACKAGE) {
            for service in &file.service {
                for m in &service.method {
                    described.push(format!("/{PACKAGE}.{}/{}", service.name(), m.name()));
                }
            }
        }
        described.sort();
        let mut rows: Vec<String> = METHODS.iter().map(|m| m.path.to_owned()).collect();
        rows.sort();
        assert_eq!(rows, described);
    }

    #[test]
    fn every_audit_action_is_the_action_of_exactly_one_method() {
        for action in AuditAction::ALL {
            let methods: Vec<_> = METHODS
                .iter()
                .filter(|m| m.audit == Some(*action))
                .collect();
            assert_eq!(methods.len(), 1, "{action:?}: {methods:?}");
        }
    }

    #[test]
    fn unknown_or_almost_matching_paths_have_no_row() {
        for path in [
            "",
            "/",
            "integrationhub.v1.IntegrationService/GetIntegration",
            "/integrationhub.v1.IntegrationService/GetIntegration/",
            "/integrationhub.v1.IntegrationService/getIntegration",
            "/integrationhub.v2.IntegrationService/GetIntegration",
        ] {
            assert!(method(path).is_none(), "{path:?}");
        }
        assert!(method("/integrationhub.v1.IntegrationService/GetIntegration").is_some());
    }

    #[test]
    fn the_services_are_the_five_of_the_api() {
        assert_eq!(
            services(),
            [
                "integrationhub.v1.InstalledAppService",
                "integrationhub.v1.IntegrationService",
                "integrationhub.v1.WebhookService",
                "integrationhub.v1.AuditService",
                "integrationhub.v1.AccessService",
            ]
        );
    }
}
