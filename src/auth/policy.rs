//! The access rules a method can have, and the paths served without a token. Which method
//! has which rule is a column of the API's method table (`api::methods`).

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

/// Paths served without a token: health checks and reflection.
const PUBLIC_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// Whether `path` needs no token at all.
pub fn is_public(path: &str) -> bool {
    PUBLIC_PREFIXES
        .iter()
        .any(|prefix| path.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
