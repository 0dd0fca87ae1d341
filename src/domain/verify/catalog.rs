//! The verification part of a catalog entry: the one read-only call that proves an installed
//! app's credentials work, how the credentials are presented, what in the answer names the
//! account and the granted scopes, and the provider's own "invalid auth" answer; or, for a
//! service that has no such call, why not. Every service declares one or the other (the
//! catalog's load-time check).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::domain::catalog::FieldDef;

/// How a service's credentials are verified, or why they cannot be.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerificationDef {
    /// The read-only call; absent exactly when `not_verifiable` says why.
    #[serde(default)]
    pub call: Option<VerifyCall>,
    /// Why this service has no read-only call (a bare webhook URL, a signing secret, a
    /// routing key, a signing scheme the hub does not implement).
    #[serde(default)]
    pub not_verifiable: Option<String>,
}

/// The HTTP method of a verification call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Get,
    /// For APIs whose read-only query is a POST (GraphQL).
    Post,
}

/// One read-only call.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyCall {
    #[serde(default)]
    pub method: Method,
    /// Scheme, host (and any path prefix) the call goes to, unless `base_url_from` picks
    /// another from its fixed map, `base_url_field` names a caller's own server, or the
    /// deployment overrides it (`INTEGRATION_HUB_VERIFY_BASE_URLS`).
    pub base_url: String,
    /// A non-secret credential field (such as Datadog's `site`) whose value picks the base
    /// URL from a fixed map: the caller chooses among the catalog's hosts, never types one.
    #[serde(default)]
    pub base_url_from: Option<BaseUrlMap>,
    /// A non-secret credential field holding the caller's own server (a self-managed
    /// GitLab): called only at globally reachable addresses.
    #[serde(default)]
    pub base_url_field: Option<String>,
    /// Path (and query) after the base URL; starts with `/`.
    pub path: String,
    /// Headers sent, each value a template whose `{field}`s are credential fields.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// HTTP Basic from two credential fields (user, password).
    #[serde(default)]
    pub basic: Option<[String; 2]>,
    /// A JSON body (POST only), sent as it is.
    #[serde(default)]
    pub body: Option<Value>,
    /// JSON pointer to the account the credentials belong to (fills `connected_to`).
    #[serde(default)]
    pub account: Option<String>,
    /// Where the granted scopes come from.
    #[serde(default)]
    pub scopes: Option<ScopesFrom>,
    /// A 2xx answer that still says the credentials are invalid (Slack's `ok: false`).
    #[serde(default)]
    pub rejected_when: Option<RejectedWhen>,
}

/// A field's value mapped to a base URL; values not in the map cannot be verified.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseUrlMap {
    pub field: String,
    pub map: BTreeMap<String, String>,
}

/// Where granted scopes are read.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopesFrom {
    /// A header of the answer (such as `X-OAuth-Scopes`).
    #[serde(default)]
    pub header: Option<String>,
    /// A JSON pointer into the answer's body (a string or an array of strings).
    #[serde(default)]
    pub pointer: Option<String>,
    /// A credential field (the `scope` an OAuth token response filled).
    #[serde(default)]
    pub credential: Option<String>,
    /// What separates scopes in a string; `,` and whitespace when absent.
    #[serde(default)]
    pub separator: Option<String>,
}

/// The value at `pointer` equal to `equals` means the credentials were rejected.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RejectedWhen {
    pub pointer: String,
    pub equals: Value,
    /// JSON pointer to the provider's error code (shown when it is a plain code).
    #[serde(default)]
    pub code: Option<String>,
}

/// Longest `not_verifiable` reason, in characters.
const MAX_REASON: usize = 300;

impl VerificationDef {
    /// What is wrong with this definition, if anything (for the catalog's load-time check).
    pub fn problem(&self, fields: &[FieldDef]) -> Option<String> {
        match (&self.call, &self.not_verifiable) {
            (Some(call), None) => call.problem(fields),
            (None, Some(reason)) if !reason.trim().is_empty() && reason.len() <= MAX_REASON => None,
            (None, Some(_)) => {
                Some("verification.not_verifiable must give a reason (1 to 300 characters)".into())
            }
            _ => Some("verification must declare exactly one of call and not_verifiable".into()),
        }
    }
}

/// The `{name}` placeholders of a template; `None` when a brace is unbalanced.
pub fn placeholders(template: &str) -> Option<Vec<&str>> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        if rest[open..].starts_with('}') {
            return None;
        }
        let after = &rest[open + 1..];
        let close = after.find('}')?;
        let name = &after[..close];
        if name.contains('{') || name.is_empty() {
            return None;
        }
        names.push(name);
        rest = &after[close + 1..];
    }
    Some(names)
}

fn http_url(text: &str) -> bool {
    matches!(reqwest::Url::parse(text), Ok(u) if matches!(u.scheme(), "https" | "http")
        && u.has_host() && u.query().is_none() && u.username().is_empty() && u.password().is_none())
}

impl VerifyCall {
    fn problem(&self, fields: &[FieldDef]) -> Option<String> {
        let field = |name: &str| fields.iter().find(|f| f.name == name);
        let public = |name: &str| field(name).is_some_and(|f| !f.secret);
        if !http_url(&self.base_url) {
            return Some("verification.call.base_url is not an absolute http(s) URL".into());
        }
        if let Some(from) = &self.base_url_from {
            if !public(&from.field) {
                return Some(format!(
                    "verification.call.base_url_from.field {:?} is not a non-secret credential field",
                    from.field
                ));
            }
            if from.map.is_empty() || !from.map.values().all(|u| http_url(u)) {
                return Some(
                    "verification.call.base_url_from.map must map values to http(s) URLs".into(),
                );
            }
        }
        if let Some(name) = &self.base_url_field
            && !public(name)
        {
            return Some(format!(
                "verification.call.base_url_field {name:?} is not a non-secret credential field"
            ));
        }
        if self.base_url_from.is_some() && self.base_url_field.is_some() {
            return Some("verification.call has both base_url_from and base_url_field".into());
        }
        if !self.path.starts_with('/') || self.path.contains(['{', '}', '#']) {
            return Some("verification.call.path must start with / and hold no template".into());
        }
        for (name, template) in &self.headers {
            let valid_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid_name {
                return Some(format!(
                    "verification.call.headers has an invalid name {name:?}"
                ));
            }
            match placeholders(template) {
                Some(names) if names.iter().all(|n| field(n).is_some()) => {}
                _ => {
                    return Some(format!(
                        "verification.call.headers.{name} names a field that is not a credential field"
                    ));
                }
            }
        }
        if let Some(pair) = &self.basic
            && !pair.iter().all(|n| field(n).is_some())
        {
            return Some(
                "verification.call.basic names a field that is not a credential field".into(),
            );
        }
        if self.body.is_some() && self.method != Method::Post {
            return Some("verification.call.body needs method POST".into());
        }
        let scopes = self.scopes.as_ref();
        if let Some(scopes) = scopes {
            let sources = [
                scopes.header.is_some(),
                scopes.pointer.is_some(),
                scopes.credential.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                return Some(
                    "verification.call.scopes must name exactly one of header, pointer and credential"
                        .into(),
                );
            }
            if let Some(name) = &scopes.credential
                && !public(name)
            {
                return Some(format!(
                    "verification.call.scopes.credential {name:?} is not a non-secret credential field"
                ));
            }
        }
        let pointers = self
            .account
            .iter()
            .chain(scopes.and_then(|s| s.pointer.as_ref()))
            .chain(self.rejected_when.iter().map(|r| &r.pointer))
            .chain(self.rejected_when.iter().filter_map(|r| r.code.as_ref()));
        for pointer in pointers {
            if !pointer.starts_with('/') {
                return Some("verification pointers must start with /".into());
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields() -> Vec<FieldDef> {
        let field = |name: &str, secret| FieldDef {
            name: name.to_owned(),
            display_name: name.to_owned(),
            required: true,
            secret,
        };
        vec![
            field("api_key", true),
            field("site", false),
            field("user", false),
        ]
    }

    fn problem(value: Value) -> Option<String> {
        serde_json::from_value::<VerificationDef>(value)
            .unwrap()
            .problem(&fields())
    }

    fn call(edit: impl FnOnce(&mut Value)) -> Value {
        let mut value = json!({"call": {
            "base_url": "https://api.example.test",
            "base_url_from": {"field": "site", "map": {"eu": "https://api.eu.example.test"}},
            "path": "/v1/validate",
            "headers": {"DD-API-KEY": "{api_key}"},
            "account": "/name",
            "scopes": {"header": "X-OAuth-Scopes"},
            "rejected_when": {"pointer": "/ok", "equals": false, "code": "/error"}
        }});
        edit(&mut value["call"]);
        value
    }

    #[test]
    fn a_call_or_a_reason_and_never_both_or_neither() {
        assert_eq!(problem(call(|_| {})), None);
        assert_eq!(
            problem(json!({"not_verifiable": "a signing secret is never sent"})),
            None
        );
        for bad in [
            json!({}),
            json!({"not_verifiable": "  "}),
            json!({"not_verifiable": "x".repeat(301)}),
            {
                let mut both = call(|_| {});
                both["not_verifiable"] = json!("why");
                both
            },
        ] {
            assert!(problem(bad.clone()).is_some(), "{bad}");
        }
    }

    #[test]
    fn hosts_are_the_catalogs_and_templates_name_only_credential_fields() {
        for (edit, says) in [
            (
                (|c: &mut Value| c["base_url"] = json!("ftp://x")) as fn(&mut Value),
                "base_url",
            ),
            (|c| c["base_url"] = json!("https://u:p@x.test"), "base_url"),
            (
                |c| c["base_url_from"]["field"] = json!("api_key"),
                "base_url_from",
            ),
            (|c| c["base_url_from"]["map"] = json!({}), "base_url_from"),
            (|c| c["base_url_field"] = json!("user"), "both"),
            (|c| c["path"] = json!("/{site}/x"), "path"),
            (|c| c["headers"] = json!({"X": "{token}"}), "headers"),
            (|c| c["headers"] = json!({"X": "{api_key"}), "headers"),
            (
                |c| c["headers"] = json!({"X Y": "{api_key}"}),
                "invalid name",
            ),
            (|c| c["basic"] = json!(["user", "password"]), "basic"),
            (|c| c["body"] = json!({"query": "{}"}), "POST"),
            (
                |c| c["scopes"] = json!({"header": "x", "pointer": "/s"}),
                "exactly one",
            ),
            (
                |c| c["scopes"] = json!({"credential": "api_key"}),
                "non-secret",
            ),
            (|c| c["account"] = json!("name"), "pointers"),
        ] {
            let text = problem(call(edit)).expect("refused");
            assert!(text.contains(says), "{text} should say {says}");
        }
        assert!(
            serde_json::from_value::<VerificationDef>(call(|c| c["host"] = json!("x"))).is_err(),
            "unknown keys are refused"
        );
    }

    #[test]
    fn placeholders_are_read_and_unbalanced_braces_refused() {
        assert_eq!(placeholders("Bearer {a}"), Some(vec!["a"]));
        assert_eq!(placeholders("{a}:{b}"), Some(vec!["a", "b"]));
        assert_eq!(placeholders("plain"), Some(vec![]));
        for bad in ["{a", "a}", "{}", "{{a}}"] {
            assert_eq!(placeholders(bad), None, "{bad}");
        }
    }
}
