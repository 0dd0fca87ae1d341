//! The authenticated caller: who, for which team, with which role.

use super::AuthError;
use super::limits::Limits;
use super::roles::Role;

/// The team value that means "every team"; only a service may hold it.
pub const ALL_TEAMS: &str = "*";

const MAX_SUBJECT_CHARS: usize = 256;
const MAX_TEAM_CHARS: usize = 64;

/// An authenticated caller. Build it with [`Principal::new`], which checks
/// the fields; the verifier never hands out one that did not pass it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`: 1-256 characters, none of them control, bidirectional or line
    /// separator characters (`crate::text::is_unsafe_char`).
    pub subject: String,
    /// A team id (1-64 of `[A-Za-z0-9_-]`) or `*` (all teams, services only).
    pub team: String,
    /// The one role the token's role values resolved to.
    pub role: Role,
    /// For a service: the services, integration types or installed apps it is limited to
    /// (the role map's and configuration's, narrowest); `None`: not limited.
    pub limits: Option<Limits>,
    /// The groups the configured groups claim names (none without one).
    pub groups: Vec<String>,
}

impl Principal {
    /// Checks subject and team and returns the principal.
    pub fn new(subject: String, team: String, role: Role) -> Result<Principal, AuthError> {
        check_subject(&subject)?;
        if team == ALL_TEAMS {
            // Cross-team reach is for workers that serve every team; a person
            // with `*` would read every tenant's data.
            if role != Role::Service {
                return Err(AuthError::BadClaims(
                    "the all-teams value is only allowed for the service role".to_owned(),
                ));
            }
        } else {
            check_team_id(&team)?;
        }
        Ok(Principal {
            subject,
            team,
            role,
            limits: None,
            groups: Vec::new(),
        })
    }

    /// Whether this principal may act on every team. Also checks the role,
    /// so a hand-built principal with `*` and a human role gets no reach.
    pub fn all_teams(&self) -> bool {
        self.team == ALL_TEAMS && self.role == Role::Service
    }
}

/// 1-256 characters, no control, bidirectional or line separator characters (they would
/// forge or disguise log lines).
pub(crate) fn check_subject(subject: &str) -> Result<(), AuthError> {
    let len = subject.chars().count();
    if len == 0 || len > MAX_SUBJECT_CHARS {
        return Err(AuthError::BadClaims(
            "subject must be 1-256 characters".to_owned(),
        ));
    }
    if crate::text::has_unsafe_char(subject) {
        return Err(AuthError::BadClaims(
            "subject contains a control, bidirectional or line separator character".to_owned(),
        ));
    }
    Ok(())
}

/// Most groups a token may name, and the longest name, in characters.
const MAX_GROUPS: usize = 64;
const MAX_GROUP_CHARS: usize = 128;

/// The groups a token names: bounded, and checked as subjects are (no control,
/// bidirectional or line separator characters).
pub(crate) fn check_groups(values: Vec<&str>) -> Result<Vec<String>, AuthError> {
    let bad = |reason: &str| AuthError::BadClaims(reason.to_owned());
    if values.len() > MAX_GROUPS {
        return Err(bad("the groups claim names more than 64 groups"));
    }
    values
        .into_iter()
        .map(|group| {
            let len = group.chars().count();
            if len == 0 || len > MAX_GROUP_CHARS || crate::text::has_unsafe_char(group) {
                return Err(bad(
                    "a group is empty, too long or holds a control or bidirectional character",
                ));
            }
            Ok(group.to_owned())
        })
        .collect()
}

/// A team id: 1-64 of `[A-Za-z0-9_-]`, or `*`. The role check for `*` is
/// [`Principal::new`]'s; this one is about shape only.
pub(crate) fn check_team(team: &str) -> Result<(), AuthError> {
    if team == ALL_TEAMS {
        return Ok(());
    }
    check_team_id(team)
}

fn check_team_id(team: &str) -> Result<(), AuthError> {
    let ok = (1..=MAX_TEAM_CHARS).contains(&team.len())
        && team
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(AuthError::BadClaims(
            "team must be 1-64 characters of [A-Za-z0-9_-] or `*`".to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(subject: &str, team: &str, role: Role) -> Result<Principal, AuthError> {
        Principal::new(subject.to_owned(), team.to_owned(), role)
    }

    #[test]
    fn a_plain_team_member_is_accepted() {
        let p = principal("alice@example.com", "team_A-1", Role::Developer).unwrap();
        assert!(!p.all_teams());
        assert_eq!(p.team, "team_A-1");
    }

    #[test]
    fn only_a_service_may_hold_all_teams() {
        assert!(principal("worker", "*", Role::Service).unwrap().all_teams());
        for role in [Role::Viewer, Role::Developer, Role::Admin] {
            assert!(matches!(
                principal("bob", "*", role),
                Err(AuthError::BadClaims(_))
            ));
        }
    }

    #[test]
    fn a_hand_built_principal_with_star_and_a_human_role_gets_no_reach() {
        let p = Principal {
            subject: "bob".to_owned(),
            team: "*".to_owned(),
            role: Role::Admin,
            limits: None,
            groups: Vec::new(),
        };
        assert!(!p.all_teams());
    }

    #[test]
    fn bad_team_ids_are_refused() {
        let long = "a".repeat(65);
        for team in ["", "a b", "team/1", "té", "**", "a*", long.as_str()] {
            assert!(principal("bob", team, Role::Service).is_err(), "{team:?}");
        }
        assert!(principal("bob", &"a".repeat(64), Role::Viewer).is_ok());
    }

    #[test]
    fn groups_are_bounded_and_checked() {
        assert_eq!(
            check_groups(vec!["payments", "ops"]).unwrap(),
            ["payments", "ops"]
        );
        let many = vec!["g"; 65];
        let long = "g".repeat(129);
        for bad in [many, vec![""], vec![long.as_str()], vec!["a\u{202e}b"]] {
            assert!(check_groups(bad).is_err());
        }
    }

    #[test]
    fn bad_subjects_are_refused() {
        let long = "é".repeat(257);
        for subject in [
            "",
            "bob\n",
            "a\u{7f}b",
            "ad\u{202e}nimda",
            "a\u{2028}b",
            long.as_str(),
        ] {
            assert!(
                principal(subject, "t", Role::Viewer).is_err(),
                "{subject:?}"
            );
        }
        assert!(principal(&"é".repeat(256), "t", Role::Viewer).is_ok());
    }
}
