//! Which role may call which gRPC method, as one table of data.
//!
//! A method missing from [`POLICY`] has no access rule; the caller of
//! [`policy_for`] must refuse it (fail closed), so a new RPC cannot ship
//! unguarded by being forgotten here.

use super::roles::Role;

/// The access rule of one method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Any authenticated caller, services included.
    AnyRole,
    /// A developer or an admin. Not a service: services never create or change.
    Developer,
    /// A developer or an admin at the method level; whether a developer is
    /// the app's owner (its creator unless handed over) is checked later,
    /// against the stored app.
    AppCreatorOrAdmin,
    /// An admin only.
    Admin,
    /// An admin, or a service account (which reads what admins manage).
    AdminOrService,
    /// A service only: these methods hand out or report on credentials for
    /// machines, and a person has no business calling them.
    Service,
}

impl Access {
    /// Whether `role` passes this rule at the method level.
    pub fn allows(self, role: Role) -> bool {
        match self {
            Access::AnyRole => true,
            Access::Developer | Access::AppCreatorOrAdmin => {
                matches!(role, Role::Developer | Role::Admin)
            }
            Access::Admin => role == Role::Admin,
            Access::AdminOrService => matches!(role, Role::Admin | Role::Service),
            Access::Service => role == Role::Service,
        }
    }
}

/// Full gRPC path to access rule.
pub const POLICY: &[(&str, Access)] = &[
    // InstalledAppService
    (
        "/integrationhub.v1.InstalledAppService/ListServices",
        Access::AnyRole,
    ),
    (
        "/integrationhub.v1.InstalledAppService/CreateInstalledApp",
        Access::Developer,
    ),
    (
        "/integrationhub.v1.InstalledAppService/GetInstalledApp",
        Access::AnyRole,
    ),
    (
        "/integrationhub.v1.InstalledAppService/ListInstalledApps",
        Access::AnyRole,
    ),
    (
        "/integrationhub.v1.InstalledAppService/UpdateInstalledApp",
        Access::AppCreatorOrAdmin,
    ),
    (
        "/integrationhub.v1.InstalledAppService/DeleteInstalledApp",
        Access::Admin,
    ),
    (
        "/integrationhub.v1.InstalledAppService/ReportCredentialsRejected",
        Access::Service,
    ),
    (
        "/integrationhub.v1.InstalledAppService/SuspendInstalledApp",
        Access::Admin,
    ),
    (
        "/integrationhub.v1.InstalledAppService/ResumeInstalledApp",
        Access::Admin,
    ),
    (
        "/integrationhub.v1.InstalledAppService/TransferInstalledApp",
        Access::Admin,
    ),
    (
        "/integrationhub.v1.InstalledAppService/StartInstalledAppAuthorization",
        Access::Developer,
    ),
    (
        "/integrationhub.v1.InstalledAppService/CompleteInstalledAppAuthorization",
        Access::Developer,
    ),
    (
        "/integrationhub.v1.InstalledAppService/GetInstalledAppAuthorization",
        Access::Developer,
    ),
    (
        "/integrationhub.v1.InstalledAppService/WatchInstalledAppEvents",
        Access::AnyRole,
    ),
    // IntegrationService
    (
        "/integrationhub.v1.IntegrationService/CreateIntegration",
        Access::Developer,
    ),
    (
        "/integrationhub.v1.IntegrationService/GetIntegration",
        Access::AnyRole,
    ),
    (
        "/integrationhub.v1.IntegrationService/ListIntegrations",
        Access::AnyRole,
    ),
    (
        "/integrationhub.v1.IntegrationService/UpdateIntegration",
        Access::Developer,
    ),
    (
        "/integrationhub.v1.IntegrationService/DeleteIntegration",
        Access::Developer,
    ),
    (
        "/integrationhub.v1.IntegrationService/ReauthenticateIntegration",
        Access::Developer,
    ),
    (
        "/integrationhub.v1.IntegrationService/ReauthenticateIntegrations",
        Access::Developer,
    ),
    (
        "/integrationhub.v1.IntegrationService/ResolveIntegrationCredentials",
        Access::Service,
    ),
    (
        "/integrationhub.v1.IntegrationService/WatchIntegrationEvents",
        Access::AnyRole,
    ),
    (
        "/integrationhub.v1.IntegrationService/TransferIntegration",
        Access::Admin,
    ),
    (
        "/integrationhub.v1.IntegrationService/PromoteIntegrationCredentials",
        Access::Developer,
    ),
    // WebhookService
    (
        "/integrationhub.v1.WebhookService/CreateWebhookSubscription",
        Access::Admin,
    ),
    (
        "/integrationhub.v1.WebhookService/GetWebhookSubscription",
        Access::AdminOrService,
    ),
    (
        "/integrationhub.v1.WebhookService/ListWebhookSubscriptions",
        Access::AdminOrService,
    ),
    (
        "/integrationhub.v1.WebhookService/UpdateWebhookSubscription",
        Access::Admin,
    ),
    (
        "/integrationhub.v1.WebhookService/DeleteWebhookSubscription",
        Access::Admin,
    ),
    (
        "/integrationhub.v1.WebhookService/RotateWebhookSecret",
        Access::Admin,
    ),
    (
        "/integrationhub.v1.WebhookService/ListWebhookDeliveries",
        Access::AdminOrService,
    ),
    (
        "/integrationhub.v1.WebhookService/RedeliverWebhookEvents",
        Access::Admin,
    ),
    (
        "/integrationhub.v1.WebhookService/SendTestWebhook",
        Access::Admin,
    ),
    // AuditService
    (
        "/integrationhub.v1.AuditService/ListAuditEvents",
        Access::Admin,
    ),
];

/// Paths served without a token: health checks and reflection.
const PUBLIC_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The rule of a full gRPC path (exact match); `None` means "refuse".
pub fn policy_for(path: &str) -> Option<Access> {
    POLICY
        .iter()
        .find(|(p, _)| *p == path)
        .map(|&(_, access)| access)
}

/// Whether `path` needs no token at all.
pub fn is_public(path: &str) -> bool {
    PUBLIC_PREFIXES
        .iter()
        .any(|prefix| path.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_access_and_role_pair_is_as_specified() {
        use Role::{Admin as A, Developer as D, Service as S, Viewer as V};
        // (access, [viewer, developer, admin, service])
        let table: [(Access, [(Role, bool); 4]); 5] = [
            (
                Access::AnyRole,
                [(V, true), (D, true), (A, true), (S, true)],
            ),
            (
                Access::Developer,
                [(V, false), (D, true), (A, true), (S, false)],
            ),
            (
                Access::AppCreatorOrAdmin,
                [(V, false), (D, true), (A, true), (S, false)],
            ),
            (
                Access::Admin,
                [(V, false), (D, false), (A, true), (S, false)],
            ),
            (
                Access::Service,
                [(V, false), (D, false), (A, false), (S, true)],
            ),
        ];
        for (access, row) in table {
            for (role, expected) in row {
                assert_eq!(access.allows(role), expected, "{access:?} x {role:?}");
            }
        }
    }

    #[test]
    fn the_table_has_every_method_once_with_its_rule() {
        let expected: &[(&str, &str, Access)] = &[
            ("InstalledAppService", "ListServices", Access::AnyRole),
            (
                "InstalledAppService",
                "CreateInstalledApp",
                Access::Developer,
            ),
            ("InstalledAppService", "GetInstalledApp", Access::AnyRole),
            ("InstalledAppService", "ListInstalledApps", Access::AnyRole),
            (
                "InstalledAppService",
                "UpdateInstalledApp",
                Access::AppCreatorOrAdmin,
            ),
            ("InstalledAppService", "DeleteInstalledApp", Access::Admin),
            (
                "InstalledAppService",
                "ReportCredentialsRejected",
                Access::Service,
            ),
            ("InstalledAppService", "SuspendInstalledApp", Access::Admin),
            ("InstalledAppService", "ResumeInstalledApp", Access::Admin),
            ("InstalledAppService", "TransferInstalledApp", Access::Admin),
            (
                "InstalledAppService",
                "StartInstalledAppAuthorization",
                Access::Developer,
            ),
            (
                "InstalledAppService",
                "CompleteInstalledAppAuthorization",
                Access::Developer,
            ),
            (
                "InstalledAppService",
                "GetInstalledAppAuthorization",
                Access::Developer,
            ),
            (
                "InstalledAppService",
                "WatchInstalledAppEvents",
                Access::AnyRole,
            ),
            ("IntegrationService", "CreateIntegration", Access::Developer),
            ("IntegrationService", "GetIntegration", Access::AnyRole),
            ("IntegrationService", "ListIntegrations", Access::AnyRole),
            ("IntegrationService", "UpdateIntegration", Access::Developer),
            ("IntegrationService", "DeleteIntegration", Access::Developer),
            (
                "IntegrationService",
                "ReauthenticateIntegration",
                Access::Developer,
            ),
            (
                "IntegrationService",
                "ReauthenticateIntegrations",
                Access::Developer,
            ),
            (
                "IntegrationService",
                "ResolveIntegrationCredentials",
                Access::Service,
            ),
            (
                "IntegrationService",
                "WatchIntegrationEvents",
                Access::AnyRole,
            ),
            ("IntegrationService", "TransferIntegration", Access::Admin),
            (
                "IntegrationService",
                "PromoteIntegrationCredentials",
                Access::Developer,
            ),
            ("AuditService", "ListAuditEvents", Access::Admin),
            ("WebhookService", "CreateWebhookSubscription", Access::Admin),
            (
                "WebhookService",
                "GetWebhookSubscription",
                Access::AdminOrService,
            ),
            (
                "WebhookService",
                "ListWebhookSubscriptions",
                Access::AdminOrService,
            ),
            ("WebhookService", "UpdateWebhookSubscription", Access::Admin),
            ("WebhookService", "DeleteWebhookSubscription", Access::Admin),
            ("WebhookService", "RotateWebhookSecret", Access::Admin),
            (
                "WebhookService",
                "ListWebhookDeliveries",
                Access::AdminOrService,
            ),
            ("WebhookService", "RedeliverWebhookEvents", Access::Admin),
            ("WebhookService", "SendTestWebhook", Access::Admin),
        ];
        assert_eq!(POLICY.len(), expected.len());
        for (service, method, access) in expected {
            let path = format!("/integrationhub.v1.{service}/{method}");
            assert_eq!(policy_for(&path), Some(*access), "{path}");
        }
        let unique: HashSet<_> = POLICY.iter().map(|(p, _)| *p).collect();
        assert_eq!(unique.len(), POLICY.len());
    }

    #[test]
    fn unknown_or_almost_matching_paths_have_no_rule() {
        for path in [
            "",
            "/integrationhub.v1.IntegrationService/Nope",
            "/integrationhub.v1.IntegrationService/getintegration",
            "/integrationhub.v1.IntegrationService/GetIntegration/",
            "integrationhub.v1.IntegrationService/GetIntegration",
            "/integrationhub.v2.IntegrationService/GetIntegration",
        ] {
            assert_eq!(policy_for(path), None, "{path:?}");
        }
    }

    #[test]
    fn health_and_reflection_are_public_and_nothing_else_is() {
        assert!(is_public("/grpc.health.v1.Health/Check"));
        assert!(is_public("/grpc.health.v1.Health/Watch"));
        assert!(is_public(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(is_public(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_public("/grpc.health.v1.HealthX/Check"));
        assert!(!is_public("/grpc.health.v1.Health"));
        assert!(!is_public(""));
        for (path, _) in POLICY {
            assert!(!is_public(path), "{path}");
        }
    }
}
