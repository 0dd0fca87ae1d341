//! How far a service principal reaches inside its team (or every team): some services, some
//! integration types, some installed apps. Limits come from the role map (a claim value
//! mapped to `service;services:slack`) and from configuration per subject
//! (`INTEGRATION_HUB_SERVICE_LIMITS`); the principal gets the narrower of the two. Which
//! subjects may hold the all-teams value `*` is configuration too (`INTEGRATION_HUB_ALL_TEAMS_SERVICES`).
//!
//! Written `services:slack|github;types:slack.bot;apps:ia_1` (any of the three kinds, each at
//! most once, values separated by `|`). A kind left out is not limited.

use std::collections::{BTreeSet, HashMap};

/// Most values one kind of limit may list.
const MAX_VALUES: usize = 64;
/// Longest value, in bytes.
const MAX_VALUE_BYTES: usize = 128;

/// The three kinds of reach a service principal can be narrowed to. `None` in a field: not
/// limited by that kind. A principal with limits reaches a resource only when every kind
/// that is limited lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Catalog service ids, such as `slack`.
    pub services: Option<BTreeSet<String>>,
    /// Integration type ids.
    pub types: Option<BTreeSet<String>>,
    /// Installed app ids.
    pub apps: Option<BTreeSet<String>>,
}

impl Limits {
    /// Reads `kind:value|value;kind:value`. Errors are fixed text.
    pub fn parse(spec: &str) -> Result<Limits, &'static str> {
        let mut limits = Limits::default();
        if spec.trim().is_empty() {
            return Err("the limits are empty");
        }
        for part in spec.split(';') {
            let (kind, values) = part
                .split_once(':')
                .ok_or("expected `kind:value|value` (kinds: services, types, apps)")?;
            let field = match kind.trim() {
                "services" => &mut limits.services,
                "types" => &mut limits.types,
                "apps" => &mut limits.apps,
                _ => return Err("unknown kind of limit (expected services, types or apps)"),
            };
            if field.is_some() {
                return Err("a kind of limit is given twice");
            }
            let set: BTreeSet<String> = values.split('|').map(|v| v.trim().to_owned()).collect();
            if set.is_empty() || set.len() > MAX_VALUES {
                return Err("a kind of limit lists 1 to 64 values");
            }
            for value in &set {
                let ok = (1..=MAX_VALUE_BYTES).contains(&value.len())
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
                if !ok {
                    return Err("a limit value is 1-128 characters of [A-Za-z0-9_.-]");
                }
            }
            *field = Some(set);
        }
        Ok(limits)
    }

    /// What either grants: a token with two limited values reaches what each reaches.
    /// (Field-wise, so `services:slack` and `services:github` give both; a kind one side
    /// leaves open stays open.)
    pub fn union(&self, other: &Limits) -> Limits {
        fn either(
            a: &Option<BTreeSet<String>>,
            b: &Option<BTreeSet<String>>,
        ) -> Option<BTreeSet<String>> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.union(b).cloned().collect()),
                _ => None,
            }
        }
        Limits {
            services: either(&self.services, &other.services),
            types: either(&self.types, &other.types),
            apps: either(&self.apps, &other.apps),
        }
    }

    /// What both allow: the token's limits narrowed by the subject's configured ones.
    pub fn intersect(&self, other: &Limits) -> Limits {
        fn both(
            a: &Option<BTreeSet<String>>,
            b: &Option<BTreeSet<String>>,
        ) -> Option<BTreeSet<String>> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.intersection(b).cloned().collect()),
                (Some(x), None) | (None, Some(x)) => Some(x.clone()),
                (None, None) => None,
            }
        }
        Limits {
            services: both(&self.services, &other.services),
            types: both(&self.types, &other.types),
            apps: both(&self.apps, &other.apps),
        }
    }
}

/// What configuration says about service subjects: the ones that may hold `*`, and limits
/// per subject.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceSubjects {
    /// Subjects whose service tokens may claim every team (`*`). Any other is refused.
    pub all_teams: BTreeSet<String>,
    /// Limits per subject, narrowing whatever the token's role values grant.
    pub limits: HashMap<String, Limits>,
}

impl ServiceSubjects {
    /// Reads the all-teams list (`worker,exporter`) and the limits per subject
    /// (`worker-a=services:slack;apps:ia_1,worker-b=types:github.repo`). A subject holding
    /// `=` or `,` cannot be named here.
    pub fn parse(all_teams: Option<&str>, limits: Option<&str>) -> Result<Self, String> {
        let mut subjects = ServiceSubjects::default();
        for subject in all_teams.unwrap_or_default().split(',') {
            let subject = subject.trim();
            if !subject.is_empty() {
                super::principal::check_subject(subject)
                    .map_err(|_| "an all-teams subject is not a valid subject".to_owned())?;
                subjects.all_teams.insert(subject.to_owned());
            }
        }
        for entry in limits.unwrap_or_default().split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (subject, spec) = entry
                .split_once('=')
                .ok_or_else(|| format!("`{entry}`: expected `subject=kind:value|value`"))?;
            let subject = subject.trim();
            super::principal::check_subject(subject)
                .map_err(|_| format!("`{entry}`: the subject is not a valid subject"))?;
            let parsed = Limits::parse(spec).map_err(|e| format!("`{entry}`: {e}"))?;
            if subjects.limits.insert(subject.to_owned(), parsed).is_some() {
                return Err(format!("`{entry}`: the subject is given twice"));
            }
        }
        Ok(subjects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(values: &[&str]) -> Option<BTreeSet<String>> {
        Some(values.iter().map(|v| (*v).to_owned()).collect())
    }

    #[test]
    fn limits_parse_each_kind_once() {
        let l = Limits::parse("services:slack|github; apps: ia_1").unwrap();
        assert_eq!(l.services, set(&["slack", "github"]));
        assert_eq!(l.apps, set(&["ia_1"]));
        assert_eq!(l.types, None);
        for bad in [
            "",
            "services",
            "teams:a",
            "services:a;services:b",
            "services:",
            "services:a b",
            "services:a|",
        ] {
            assert!(Limits::parse(bad).is_err(), "{bad:?}");
        }
        let many = (0..65)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join("|");
        assert!(Limits::parse(&format!("services:{many}")).is_err());
    }

    #[test]
    fn union_widens_and_intersection_narrows() {
        let slack = Limits::parse("services:slack").unwrap();
        let github = Limits::parse("services:github;apps:ia_1").unwrap();
        let u = slack.union(&github);
        assert_eq!(u.services, set(&["github", "slack"]));
        assert_eq!(u.apps, None, "a kind one side leaves open stays open");
        let i = slack.intersect(&github);
        assert_eq!(
            i.services,
            Some(BTreeSet::new()),
            "nothing in common: nothing reached"
        );
        assert_eq!(i.apps, set(&["ia_1"]));
    }

    #[test]
    fn subjects_parse_and_refuse_what_they_cannot_read() {
        let s = ServiceSubjects::parse(
            Some("worker, exporter"),
            Some("slack-bot=services:slack,gh=types:github.repo"),
        )
        .unwrap();
        assert!(s.all_teams.contains("worker") && s.all_teams.contains("exporter"));
        assert_eq!(s.limits["slack-bot"].services, set(&["slack"]));
        assert_eq!(s.limits["gh"].types, set(&["github.repo"]));
        assert_eq!(
            ServiceSubjects::parse(None, None).unwrap(),
            ServiceSubjects::default()
        );
        for bad in ["a", "a=teams:x", "a=services:x,a=services:y", "=services:x"] {
            assert!(ServiceSubjects::parse(None, Some(bad)).is_err(), "{bad:?}");
        }
        assert!(ServiceSubjects::parse(Some("a\nb"), None).is_err());
    }
}
