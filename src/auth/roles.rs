//! Roles and the map from identity-provider role claim values to them.
//!
//! The map is exact and case-sensitive: `Admin` is not `admin`. An identity
//! provider that sends a value we do not know grants nothing, so a typo in
//! either place fails closed instead of silently widening access.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use super::AuthError;
use super::limits::Limits;

/// What a caller may do, as decided from its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Reads everything of its team.
    Viewer,
    /// Reads, and creates and changes integrations and apps of its team.
    Developer,
    /// Everything a developer may, plus deletions and the audit log.
    Admin,
    /// A machine caller (a worker or another service), never a person.
    Service,
}

impl Role {
    /// Every role, for tables and tests.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Developer, Role::Admin, Role::Service];

    /// The lowercase name used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Admin => "admin",
            Role::Service => "service",
        }
    }

    /// Rank among the human roles; `None` for [`Role::Service`], which is
    /// not comparable with them (a service is neither more nor less than an
    /// admin, it is something else).
    fn human_rank(self) -> Option<u8> {
        match self {
            Role::Viewer => Some(0),
            Role::Developer => Some(1),
            Role::Admin => Some(2),
            Role::Service => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ();

    /// Only the exact lowercase names of [`Role::as_str`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|r| r.as_str() == s).ok_or(())
    }
}

/// A role map entry that could not be read; names the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid role map entry `{entry}`: {reason}")]
pub struct RoleMapError {
    /// The offending entry as written (trimmed).
    pub entry: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Claim value (exact, case-sensitive) to [`Role`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleMap {
    entries: HashMap<String, Role>,
    /// Limits of the values mapped to `service;kind:value|value` (a service value without
    /// any is not limited).
    limits: HashMap<String, Limits>,
}

impl Default for RoleMap {
    fn default() -> Self {
        let entries = [
            ("super_admin", Role::Admin),
            ("admin", Role::Admin),
            ("developer", Role::Developer),
            ("editor", Role::Developer),
            ("viewer", Role::Viewer),
            ("guest", Role::Viewer),
            ("billing", Role::Viewer),
            ("service", Role::Service),
        ]
        .into_iter()
        .map(|(value, role)| (value.to_owned(), role))
        .collect();
        RoleMap {
            entries,
            limits: HashMap::new(),
        }
    }
}

impl RoleMap {
    /// One claim value the map grants a role to (the smallest, so it is always the same):
    /// what a start-up self-test puts in a token.
    pub fn sample_value(&self) -> Option<&str> {
        self.entries.keys().map(String::as_str).min()
    }

    /// Reads `value=role,value=role`, which replaces the default map
    /// entirely (a partial merge would leave defaults such as `guest`
    /// granting access the operator did not ask for).
    ///
    /// Whitespace around entries and around `=` is ignored; role names are
    /// `viewer`, `developer`, `admin`, `service`. An empty map, an empty
    /// entry, an unknown role or a value given twice is an error. A service value may carry
    /// limits after a `;` (`slack_reader=service;services:slack`, see `auth::limits`).
    pub fn parse(spec: &str) -> Result<RoleMap, RoleMapError> {
        if spec.trim().is_empty() {
            // An empty map would refuse every caller; that is never what an
            // operator meant, so say so at startup instead.
            return Err(RoleMapError {
                entry: String::new(),
                reason: "the role map is empty",
            });
        }
        let mut entries = HashMap::new();
        let mut limits = HashMap::new();
        for raw in spec.split(',') {
            let entry = raw.trim();
            let bad = |reason| RoleMapError {
                entry: entry.to_owned(),
                reason,
            };
            let Some((value, role)) = entry.split_once('=') else {
                return Err(bad("expected `value=role`"));
            };
            let (role, limit) = match role.split_once(';') {
                Some((role, limit)) => (role, Some(limit)),
                None => (role, None),
            };
            let (value, role) = (value.trim(), role.trim());
            if value.is_empty() {
                return Err(bad("the claim value is empty"));
            }
            if crate::text::has_unsafe_char(value) {
                return Err(bad(
                    "the claim value contains a control, bidirectional or line separator character",
                ));
            }
            let role: Role = role
                .parse()
                .map_err(|()| bad("unknown role (expected viewer, developer, admin or service)"))?;
            if entries.insert(value.to_owned(), role).is_some() {
                return Err(bad("the claim value is mapped twice"));
            }
            if let Some(limit) = limit {
                if role != Role::Service {
                    return Err(bad("only a service value may carry limits"));
                }
                limits.insert(value.to_owned(), Limits::parse(limit).map_err(bad)?);
            }
        }
        Ok(RoleMap { entries, limits })
    }

    /// The role a single claim value maps to, if any.
    pub fn get(&self, value: &str) -> Option<Role> {
        self.entries.get(value).copied()
    }

    /// The one role granted by a token's role values.
    ///
    /// Unknown values are ignored; the highest human role wins
    /// (Admin > Developer > Viewer). A token mapping to both `Service` and
    /// a human role is refused: such a token is either misissued or an
    /// attempt to borrow a service's cross-team reach with a person's
    /// identity, and no rule for combining them would be obviously safe.
    pub fn resolve<'a, I>(&self, values: I) -> Result<Role, AuthError>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut service = false;
        let mut best_human: Option<Role> = None;
        for role in values.into_iter().filter_map(|v| self.get(v)) {
            match role.human_rank() {
                None => service = true,
                Some(rank) => {
                    if best_human
                        .and_then(Role::human_rank)
                        .is_none_or(|b| rank > b)
                    {
                        best_human = Some(role);
                    }
                }
            }
        }
        match (service, best_human) {
            (true, Some(_)) => Err(AuthError::BadClaims(
                "roles mix service and human roles".to_owned(),
            )),
            (true, None) => Ok(Role::Service),
            (false, Some(role)) => Ok(role),
            (false, None) => Err(AuthError::NoRole),
        }
    }
}

impl RoleMap {
    /// The limits a service token's role values grant: `None` (not limited) when any of its
    /// service values is unlimited, otherwise what any of them reaches.
    pub fn resolve_limits<'a, I>(&self, values: I) -> Option<Limits>
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut granted: Option<Limits> = None;
        for value in values {
            if self.get(value) != Some(Role::Service) {
                continue;
            }
            let limits = self.limits.get(value)?;
            granted = Some(match granted {
                Some(g) => g.union(limits),
                None => limits.clone(),
            });
        }
        granted
    }
}

impl FromStr for RoleMap {
    type Err = RoleMapError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RoleMap::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_value_is_one_the_map_grants_and_always_the_same() {
        assert_eq!(RoleMap::default().sample_value(), Some("admin"));
        let map = RoleMap::parse("zeta=viewer,ops=service").expect("map");
        assert_eq!(map.sample_value(), Some("ops"));
        assert_eq!(map.get("ops"), Some(Role::Service));
    }

    #[test]
    fn role_names_round_trip_through_as_str() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert_eq!(role.to_string(), role.as_str());
        }
        assert!("Admin".parse::<Role>().is_err());
    }

    #[test]
    fn the_default_map_has_the_documented_entries() {
        let map = RoleMap::default();
        assert_eq!(map.get("super_admin"), Some(Role::Admin));
        assert_eq!(map.get("admin"), Some(Role::Admin));
        assert_eq!(map.get("developer"), Some(Role::Developer));
        assert_eq!(map.get("editor"), Some(Role::Developer));
        assert_eq!(map.get("viewer"), Some(Role::Viewer));
        assert_eq!(map.get("guest"), Some(Role::Viewer));
        assert_eq!(map.get("billing"), Some(Role::Viewer));
        assert_eq!(map.get("service"), Some(Role::Service));
        assert_eq!(map.entries.len(), 8);
    }

    #[test]
    fn the_default_map_is_case_sensitive() {
        let map = RoleMap::default();
        assert_eq!(map.get("Admin"), None);
        assert_eq!(map.get("ADMIN"), None);
        assert_eq!(map.get(" admin"), None);
    }

    #[test]
    fn parse_replaces_the_default_entirely() {
        let map = RoleMap::parse("super_admin=admin, dev = developer").unwrap();
        assert_eq!(map.get("super_admin"), Some(Role::Admin));
        assert_eq!(map.get("dev"), Some(Role::Developer));
        assert_eq!(map.get("admin"), None);
        assert_eq!(map.get("guest"), None);
        assert_eq!(
            "x=service".parse::<RoleMap>().unwrap().get("x"),
            Some(Role::Service)
        );
    }

    #[test]
    fn parse_errors_name_the_bad_entry() {
        let cases = [
            ("admin=admin,oops", "oops"),
            ("admin=admin,dev=root", "dev=root"),
            ("admin=Admin", "admin=Admin"),
            ("=admin", "=admin"),
            ("a=admin,,b=viewer", ""),
            ("a=admin,", ""),
            ("a=admin,a=viewer", "a=viewer"),
            ("a=b=admin", "a=b=admin"),
            ("", ""),
            ("   ", ""),
            ("ad\u{202e}nimda=admin", "ad\u{202e}nimda=admin"),
            ("a\u{2028}b=viewer", "a\u{2028}b=viewer"),
        ];
        for (spec, entry) in cases {
            let err = RoleMap::parse(spec).unwrap_err();
            assert_eq!(err.entry, entry, "spec {spec:?}");
            assert!(err.to_string().contains(&format!("`{entry}`")), "{err}");
        }
    }

    #[test]
    fn service_values_may_carry_limits_and_a_token_gets_what_its_values_grant() {
        let map = RoleMap::parse(
            "slack=service;services:slack, gh=service;services:github;apps:ia_1, svc=service, dev=developer",
        )
        .unwrap();
        assert_eq!(map.get("slack"), Some(Role::Service));
        let slack = map.resolve_limits(["slack"]).unwrap();
        assert_eq!(slack.services.unwrap().len(), 1);
        let both = map.resolve_limits(["slack", "gh", "dev"]).unwrap();
        assert_eq!(both.services.unwrap().len(), 2);
        assert_eq!(both.apps, None);
        assert_eq!(
            map.resolve_limits(["slack", "svc"]),
            None,
            "an unlimited value wins"
        );
        assert_eq!(map.resolve_limits(["dev"]), None);
        for bad in ["a=admin;services:x", "a=service;teams:x", "a=service;"] {
            assert!(RoleMap::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resolve_takes_the_highest_human_role() {
        let map = RoleMap::default();
        assert_eq!(
            map.resolve(["viewer", "admin", "editor"]).unwrap(),
            Role::Admin
        );
        assert_eq!(map.resolve(["guest", "editor"]).unwrap(), Role::Developer);
        assert_eq!(map.resolve(["billing"]).unwrap(), Role::Viewer);
    }

    #[test]
    fn resolve_ignores_unknown_values() {
        let map = RoleMap::default();
        assert_eq!(
            map.resolve(["root", "Admin", "viewer"]).unwrap(),
            Role::Viewer
        );
        assert_eq!(map.resolve(["root", "service"]).unwrap(), Role::Service);
    }

    #[test]
    fn resolve_refuses_no_known_value() {
        let map = RoleMap::default();
        assert!(matches!(
            map.resolve(["root", "Admin"]),
            Err(AuthError::NoRole)
        ));
        assert!(matches!(map.resolve([]), Err(AuthError::NoRole)));
    }

    #[test]
    fn resolve_refuses_service_mixed_with_a_human_role() {
        let map = RoleMap::default();
        assert!(matches!(
            map.resolve(["service", "admin"]),
            Err(AuthError::BadClaims(_))
        ));
        assert!(matches!(
            map.resolve(["viewer", "service"]),
            Err(AuthError::BadClaims(_))
        ));
    }
}
