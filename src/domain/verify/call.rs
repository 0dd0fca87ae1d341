//! One verification call: the request built from the catalog's definition and the app's
//! credentials, and the answer read into a [`Verdict`]. Pure functions: the transport is
//! the caller's ([`super::Verifier`]). What a verdict says is in the service's own words and
//! a checked provider error code: never a credential, a URL or the provider's body.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::crypto::{Credentials, SecretString};
use crate::domain::oauth::http::{CallFailed, HttpAnswer};
use crate::domain::oauth::provider_text::{Sent, error_code};

use super::catalog::{Method, VerifyCall, placeholders};

/// Most scopes kept from an answer; each at most [`MAX_SCOPE_BYTES`].
pub const MAX_SCOPES: usize = 100;
pub const MAX_SCOPE_BYTES: usize = 200;
/// Longest account name kept (the `connected_to` bound).
const MAX_ACCOUNT_CHARS: usize = 200;
/// Longest wait a 429's `Retry-After` is believed for, in seconds (a day).
pub const MAX_RETRY_AFTER_SECS: u64 = 24 * 3600;

/// What a verification found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The provider accepted the credentials.
    Verified {
        account: Option<String>,
        /// `None`: the service does not say which scopes were granted.
        scopes: Option<Vec<String>>,
    },
    /// A definite rejection (401, 403, or the provider's own "invalid auth" answer).
    Rejected(String),
    /// No answer that decides (unreachable, 5xx, 429, a timeout, an answer not understood).
    Unverified {
        error: String,
        /// Seconds the provider asked to wait (a 429's `Retry-After`).
        retry_after: Option<u64>,
    },
    /// The service has no read-only call (the catalog's reason).
    NotVerifiable(String),
    /// Verification is turned off on this deployment.
    Off,
}

/// A built request: its secrets live in `headers` and `sent` and are wiped with them.
pub struct Prepared {
    pub url: String,
    pub method: Method,
    pub headers: Vec<(String, SecretString)>,
    pub body: Option<Vec<u8>>,
    /// The base URL is the caller's own: globally reachable addresses only.
    pub public_only: bool,
    pub sent: Sent,
}

fn unverified(error: impl Into<String>) -> Verdict {
    Verdict::Unverified {
        error: error.into(),
        retry_after: None,
    }
}

/// The base URL a call goes to: the deployment's override, the catalog's map entry for the
/// field's value, the caller's own server (public addresses only), or the catalog's default.
fn base_url(
    call: &VerifyCall,
    credentials: &Credentials,
    overridden: Option<&str>,
) -> Result<(String, bool), Verdict> {
    if let Some(base) = overridden {
        return Ok((base.to_owned(), false));
    }
    let value = |field: &str| {
        credentials
            .get(field)
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    if let Some(from) = &call.base_url_from
        && let Some(chosen) = value(&from.field)
    {
        return match from.map.get(&chosen.to_ascii_lowercase()) {
            Some(base) => Ok((base.clone(), false)),
            None => Err(unverified(format!(
                "the value of {} is not one the catalog knows",
                from.field
            ))),
        };
    }
    if let Some(field) = &call.base_url_field
        && let Some(own) = value(field)
    {
        let valid = reqwest::Url::parse(own).is_ok_and(|u| {
            matches!(u.scheme(), "https" | "http")
                && u.has_host()
                && u.query().is_none()
                && u.username().is_empty()
                && u.password().is_none()
        });
        if !valid {
            return Err(unverified(format!("{field} is not an http(s) URL")));
        }
        return Ok((own.to_owned(), true));
    }
    Ok((call.base_url.clone(), false))
}

/// `template` with each `{field}` replaced by the credential's value (empty when absent).
fn fill(template: &str, credentials: &Credentials) -> String {
    let mut text = template.to_owned();
    for name in placeholders(template).unwrap_or_default() {
        text = text.replace(&format!("{{{name}}}"), credentials.get(name).unwrap_or(""));
    }
    text
}

/// The request `call` makes with `credentials`; a verdict when none can be made.
pub fn prepare(
    call: &VerifyCall,
    credentials: &Credentials,
    overridden: Option<&str>,
) -> Result<Prepared, Verdict> {
    let (base, public_only) = base_url(call, credentials, overridden)?;
    let url = format!("{}{}", base.trim_end_matches('/'), call.path);
    let mut sent = Sent::default();
    for value in credentials.expose().values() {
        sent = sent.with(value);
    }
    let mut headers = vec![(
        "accept".to_owned(),
        SecretString::new("application/json".into()),
    )];
    for (name, template) in &call.headers {
        let lower = name.to_ascii_lowercase();
        headers.retain(|(n, _)| *n != lower);
        headers.push((lower, SecretString::new(fill(template, credentials))));
    }
    if let Some([user, password]) = &call.basic {
        let pair = STANDARD.encode(format!(
            "{}:{}",
            credentials.get(user).unwrap_or(""),
            credentials.get(password).unwrap_or("")
        ));
        sent = sent.with(&pair);
        headers.push((
            "authorization".to_owned(),
            SecretString::new(format!("Basic {pair}")),
        ));
    }
    let body = call.body.as_ref().map(|b| b.to_string().into_bytes());
    Ok(Prepared {
        url,
        method: call.method,
        headers,
        body,
        public_only,
        sent,
    })
}

/// A call that gave no answer, in the words OAuth's calls use.
pub fn call_failed(failed: CallFailed) -> Verdict {
    unverified(crate::domain::oauth::http::call_failed(failed).describe())
}

fn header<'a>(answer: &'a HttpAnswer, name: &str) -> Option<&'a str> {
    answer
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// A 429's `Retry-After` in seconds (a number; a date is not read), at most a day.
fn retry_after(answer: &HttpAnswer) -> Option<u64> {
    header(answer, "retry-after")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| s.min(MAX_RETRY_AFTER_SECS))
}

/// Scopes fit to store: printable ASCII without spaces, bounded in length and number.
fn clean_scopes<'a>(scopes: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut kept: Vec<String> = scopes
        .map(str::trim)
        .filter(|s| !s.is_empty() && s.len() <= MAX_SCOPE_BYTES)
        .filter(|s| {
            s.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        })
        .map(str::to_owned)
        .collect();
    kept.sort();
    kept.dedup();
    kept.truncate(MAX_SCOPES);
    kept
}

/// Splits a scope string on `separator`, or on commas and whitespace without one.
pub fn split_scopes(text: &str, separator: Option<&str>) -> Vec<String> {
    match separator {
        Some(sep) if !sep.trim().is_empty() => clean_scopes(text.split(sep)),
        _ => clean_scopes(text.split(|c: char| c == ',' || c.is_whitespace())),
    }
}

fn scopes(
    call: &VerifyCall,
    answer: &HttpAnswer,
    json: Option<&Value>,
    credentials: &Credentials,
) -> Option<Vec<String>> {
    let from = call.scopes.as_ref()?;
    let separator = from.separator.as_deref();
    // Absent: the provider does not say (a fine-grained token has no `X-OAuth-Scopes`),
    // which is not the same as granting none.
    if let Some(name) = &from.header {
        return Some(split_scopes(header(answer, name)?, separator));
    }
    if let Some(field) = &from.credential {
        return Some(split_scopes(credentials.get(field)?, separator));
    }
    let pointer = from.pointer.as_ref()?;
    match json?.pointer(pointer)? {
        Value::String(text) => Some(split_scopes(text, separator)),
        Value::Array(items) => Some(clean_scopes(items.iter().filter_map(Value::as_str))),
        _ => None,
    }
}

fn account(call: &VerifyCall, json: Option<&Value>, sent: &Sent) -> Option<String> {
    let text = match json?.pointer(call.account.as_ref()?)? {
        Value::String(text) => text.clone(),
        Value::Number(number) => number.to_string(),
        _ => return None,
    };
    let text = text.trim();
    let fit = !text.is_empty()
        && text.chars().count() <= MAX_ACCOUNT_CHARS
        && !crate::text::has_unsafe_char(text)
        && sent.scrub(text) == text;
    fit.then(|| text.to_owned())
}

/// What `answer` says of the credentials.
pub fn read(
    call: &VerifyCall,
    answer: &HttpAnswer,
    credentials: &Credentials,
    sent: &Sent,
) -> Verdict {
    let status = answer.status;
    if status == 401 || status == 403 {
        return Verdict::Rejected(format!("the provider answered HTTP {status}"));
    }
    if status == 429 {
        return Verdict::Unverified {
            error: "the provider is limiting the rate of calls (HTTP 429)".to_owned(),
            retry_after: retry_after(answer),
        };
    }
    if !(200..300).contains(&status) {
        return unverified(format!("the provider answered HTTP {status}"));
    }
    let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
    if let Some(rule) = &call.rejected_when {
        let Some(json) = &json else {
            return unverified("the provider's answer is not JSON");
        };
        if json.pointer(&rule.pointer) == Some(&rule.equals) {
            let code = rule
                .code
                .as_ref()
                .and_then(|p| json.pointer(p))
                .and_then(Value::as_str);
            return Verdict::Rejected(match code {
                Some(code) => format!("the provider answered {}", error_code(code, sent)),
                None => "the provider answered that the credentials are invalid".to_owned(),
            });
        }
    }
    Verdict::Verified {
        account: account(call, json.as_ref(), sent),
        scopes: scopes(call, answer, json.as_ref(), credentials),
    }
}

/// The credentials' names and values as a map, for tests.
#[cfg(test)]
pub fn credentials(pairs: &[(&str, &str)]) -> Credentials {
    Credentials::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<std::collections::BTreeMap<_, _>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn call(value: Value) -> VerifyCall {
        serde_json::from_value(value).unwrap()
    }

    fn slack() -> VerifyCall {
        call(json!({
            "base_url": "https://slack.com", "path": "/api/auth.test",
            "headers": {"Authorization": "Bearer {access_token}"}, "account": "/team",
            "scopes": {"header": "X-OAuth-Scopes", "separator": ","},
            "rejected_when": {"pointer": "/ok", "equals": false, "code": "/error"}
        }))
    }

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> HttpAnswer {
        HttpAnswer {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_request_presents_the_credentials_as_the_catalog_says() {
        let creds = credentials(&[("access_token", "xoxb-secret")]);
        let prepared = prepare(&slack(), &creds, None).unwrap_or_else(|v| panic!("{v:?}"));
        assert_eq!(prepared.url, "https://slack.com/api/auth.test");
        assert!(!prepared.public_only);
        let auth = prepared
            .headers
            .iter()
            .find(|(n, _)| n == "authorization")
            .unwrap();
        assert_eq!(auth.1.expose(), "Bearer xoxb-secret");
        let overridden = prepare(&slack(), &creds, Some("http://127.0.0.1:9/"))
            .ok()
            .unwrap();
        assert_eq!(overridden.url, "http://127.0.0.1:9/api/auth.test");

        let basic = call(json!({"base_url": "https://b.test", "path": "/u",
            "basic": ["username", "app_password"]}));
        let creds = credentials(&[("username", "me"), ("app_password", "pw")]);
        let prepared = prepare(&basic, &creds, None).ok().unwrap();
        let auth = &prepared.headers.last().unwrap().1;
        assert_eq!(auth.expose(), format!("Basic {}", STANDARD.encode("me:pw")));
    }

    #[test]
    fn hosts_come_from_the_catalogs_map_and_a_callers_own_server_is_public_only() {
        let mapped = call(json!({"base_url": "https://api.us.test", "path": "/v",
            "base_url_from": {"field": "site", "map": {"eu": "https://api.eu.test"}}}));
        let url =
            |creds: &[(&str, &str)]| prepare(&mapped, &credentials(creds), None).map(|p| p.url);
        assert_eq!(
            url(&[("site", "EU")]).ok().unwrap(),
            "https://api.eu.test/v"
        );
        assert_eq!(url(&[]).ok().unwrap(), "https://api.us.test/v");
        match url(&[("site", "evil.example@169.254.169.254")]) {
            Err(Verdict::Unverified { error, .. }) => {
                assert!(!error.contains("evil"), "{error}")
            }
            other => panic!("{:?}", other.ok()),
        }
        let own = call(json!({"base_url": "https://gitlab.com", "path": "/api",
            "base_url_field": "base_url"}));
        let creds = credentials(&[("base_url", "https://git.example.org")]);
        let prepared = prepare(&own, &creds, None).ok().unwrap();
        assert!(prepared.public_only);
        assert_eq!(prepared.url, "https://git.example.org/api");
        for bad in ["ftp://x", "https://u:p@x.test", "not a url"] {
            let creds = credentials(&[("base_url", bad)]);
            assert!(prepare(&own, &creds, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_are_told_apart() {
        let creds = credentials(&[("access_token", "xoxb-secret")]);
        let sent = Sent::default().with("xoxb-secret");
        let read = |a: HttpAnswer| read(&slack(), &a, &creds, &sent);
        assert_eq!(
            read(answer(
                200,
                &[("x-oauth-scopes", "chat:write, channels:read")],
                r#"{"ok": true, "team": "Acme"}"#
            )),
            Verdict::Verified {
                account: Some("Acme".into()),
                scopes: Some(vec!["channels:read".into(), "chat:write".into()]),
            }
        );
        assert_eq!(
            read(answer(
                200,
                &[],
                r#"{"ok": false, "error": "invalid_auth"}"#
            )),
            Verdict::Rejected("the provider answered invalid_auth".into())
        );
        assert!(matches!(
            read(answer(200, &[], r#"{"ok": false, "error": "xoxb-secret"}"#)),
            Verdict::Rejected(text) if !text.contains("xoxb")
        ));
        for status in [401, 403] {
            assert!(matches!(
                read(answer(status, &[], "")),
                Verdict::Rejected(_)
            ));
        }
        assert_eq!(
            read(answer(429, &[("Retry-After", "30")], "")),
            Verdict::Unverified {
                error: "the provider is limiting the rate of calls (HTTP 429)".into(),
                retry_after: Some(30),
            }
        );
        assert!(matches!(
            read(answer(429, &[("Retry-After", "99999999")], "")),
            Verdict::Unverified {
                retry_after: Some(MAX_RETRY_AFTER_SECS),
                ..
            }
        ));
        assert!(matches!(read(answer(500, &[], "xoxb-secret")),
            Verdict::Unverified { error, .. } if error == "the provider answered HTTP 500"));
        assert!(matches!(read(answer(200, &[], "{not json")),
            Verdict::Unverified { error, .. } if error.contains("not JSON")));
        // An account name repeating a secret, or unfit to show, is not kept.
        assert!(matches!(
            read(answer(200, &[], r#"{"ok": true, "team": "xoxb-secret"}"#)),
            Verdict::Verified { account: None, .. }
        ));
        assert!(matches!(
            read(answer(200, &[], r#"{"ok": true, "team": "a\u0007b"}"#)),
            Verdict::Verified { account: None, .. }
        ));
    }

    #[test]
    fn scopes_are_bounded_and_read_from_a_body_or_a_credential() {
        let many = (0..500)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(split_scopes(&many, None).len(), MAX_SCOPES);
        assert_eq!(split_scopes("a b\u{7}c \"d", None), vec!["a"]);
        let body = call(json!({"base_url": "https://g.test", "path": "/t",
            "scopes": {"pointer": "/scopes"}}));
        let creds = credentials(&[]);
        let v = read(
            &body,
            &answer(200, &[], r#"{"scopes": ["api", "read_user"]}"#),
            &creds,
            &Sent::default(),
        );
        assert!(
            matches!(v, Verdict::Verified { scopes: Some(s), .. } if s == ["api", "read_user"])
        );
        let from_cred = call(json!({"base_url": "https://g.test", "path": "/t",
            "scopes": {"credential": "scope"}}));
        let creds = credentials(&[("scope", "repo,user")]);
        let v = read(
            &from_cred,
            &answer(200, &[], "not json at all"),
            &creds,
            &Sent::default(),
        );
        assert!(matches!(v, Verdict::Verified { scopes: Some(s), .. } if s == ["repo", "user"]));
        // Not said is not none granted: no header, no credential, no pointer is unknown.
        let v = read(
            &from_cred,
            &answer(200, &[], "{}"),
            &credentials(&[]),
            &Sent::default(),
        );
        assert!(matches!(v, Verdict::Verified { scopes: None, .. }), "{v:?}");
    }
}
