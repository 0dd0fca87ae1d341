//! OAuth's calls to providers: a code or a refresh token traded at the token endpoint, an
//! account name read at a userinfo endpoint, and their answers read and their failures
//! told apart. The transport is a [`ProviderCalls`]: the hub's outbound HTTP, wired at
//! startup, which holds the policy (https required, http only to loopback when allowed,
//! the optional allow-list of provider hosts, timeouts, no redirect followed). The domain
//! makes no connection of its own. Nothing here logs or returns a token, a code or a
//! client secret: errors carry the service's own words and the provider's error code,
//! checked by [`provider_text`](super::provider_text), which also scrubs the provider's free
//! text of every secret sent before the debug log sees it.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::future::BoxFuture;
use serde_json::Value;
use url::Url;

use crate::crypto::SecretString;

use super::catalog::{OAuthDef, TokenAuth};
use super::clients::Client;
use super::provider_text::{Sent, error_code, log_description};

/// Largest response body read from a provider; a larger one is refused.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Longest token lifetime believed, in seconds (ten years): a longer `expires_in` is cut to
/// it, so no expiry leaves the range a timestamp can show.
pub const MAX_EXPIRES_IN_SECS: i64 = 10 * 365 * 24 * 3600;

/// Outbound HTTP as the domain asks for it: implemented at startup with the hub's outbound
/// policy. Header values may be secrets (an `Authorization`): an implementation never
/// writes them, the URL's query or an answer's body to a log or an error.
pub trait ProviderCalls: Send + Sync {
    /// `url`, if the policy lets it be called (and a browser be sent there); else why not,
    /// in words that hold no secret.
    fn check(&self, url: &str) -> Result<Url, String>;

    /// Makes `request`: the status and the body of the answer.
    fn call<'a>(
        &'a self,
        request: ProviderRequest<'a>,
    ) -> BoxFuture<'a, Result<HttpAnswer, CallFailed>>;
}

/// A call to a provider.
pub struct ProviderRequest<'a> {
    pub url: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    /// What to POST; none: a GET.
    pub body: Option<Vec<u8>>,
    /// Longest answer body taken; a longer one is [`CallFailed::TooLarge`].
    pub max_bytes: usize,
    /// The host is a caller's choice (a self-managed server named in credentials): only
    /// globally reachable addresses, checked at every connection.
    pub public_only: bool,
}

/// A provider's answer.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    /// The answer's headers whose values are text (names lowercase).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailed {
    /// Not called: the policy refuses the URL (why, without secrets).
    Refused(String),
    Timeout,
    Connect,
    /// The answer was longer than the call allowed.
    TooLarge,
    /// Anything else.
    Failed,
}

/// Why a call to a provider did not give tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// `invalid_grant`: the code or refresh token is revoked, expired or used.
    InvalidGrant(String),
    /// The provider answered with another error (a 4xx, or an OAuth error body).
    Rejected(String),
    /// The provider could not be reached, timed out or failed (5xx): try again later.
    Transient(String),
    /// The call was not made: the URL is not allowed by the settings.
    Refused(String),
}

impl ProviderError {
    /// For people: never a token.
    pub fn describe(&self) -> String {
        match self {
            ProviderError::InvalidGrant(text) => format!("invalid_grant: {text}"),
            ProviderError::Rejected(text) => format!("the provider refused: {text}"),
            ProviderError::Transient(text) => format!("temporary failure: {text}"),
            ProviderError::Refused(text) => format!("not called: {text}"),
        }
    }
}

/// A token endpoint's answer. The tokens are secrets; `body` is kept only to read fields by
/// pointer (the account name) and dropped with this value.
pub struct TokenAnswer {
    pub access_token: SecretString,
    pub refresh_token: Option<SecretString>,
    /// Seconds, as the provider said, within 1 to [`MAX_EXPIRES_IN_SECS`] (none when it said
    /// nothing usable: absent, not a number, zero or negative).
    pub expires_in: Option<i64>,
    pub scope: Option<String>,
    body: Value,
}

impl std::fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAnswer")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl TokenAnswer {
    /// The string at `pointer` in the token response, if there is one.
    pub fn text_at(&self, pointer: &str) -> Option<String> {
        text_at(&self.body, pointer)
    }
}

fn text_at(body: &Value, pointer: &str) -> Option<String> {
    match body.pointer(pointer)? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

/// A token response's `expires_in` (a number, or a number in a string), within 1 to
/// [`MAX_EXPIRES_IN_SECS`]: zero, negative or unreadable is none, a longer one is cut.
fn expires_in(value: Option<&Value>) -> Option<i64> {
    let value = value?;
    let seconds = value
        .as_i64()
        .or_else(|| value.as_u64().map(|_| i64::MAX))
        .or_else(|| value.as_f64().map(|f| f as i64))
        .or_else(|| {
            value
                .as_str()
                .and_then(|s| s.trim().parse::<f64>().ok())
                .map(|f| f as i64)
        })?;
    (seconds > 0).then(|| seconds.min(MAX_EXPIRES_IN_SECS))
}

/// The provider calls of OAuth, through the [`ProviderCalls`] wired at startup.
pub struct Provider {
    calls: Arc<dyn ProviderCalls>,
}

impl Provider {
    pub fn new(calls: Arc<dyn ProviderCalls>) -> Provider {
        Provider { calls }
    }

    /// Whether `url` may be called (or a browser sent there): the outbound policy's check.
    pub fn check_url(&self, url: &str) -> Result<Url, ProviderError> {
        self.calls.check(url).map_err(ProviderError::Refused)
    }

    /// Exchanges an authorization code (with its PKCE verifier) for tokens.
    pub async fn exchange_code(
        &self,
        def: &OAuthDef,
        client: &Client,
        code: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
    ) -> Result<TokenAnswer, ProviderError> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
        ];
        if let Some(verifier) = verifier {
            form.push(("code_verifier", verifier));
        }
        self.token_request(def, client, &form).await
    }

    /// Trades a refresh token for a new access token (and, with rotation, a new refresh
    /// token).
    pub async fn refresh(
        &self,
        def: &OAuthDef,
        client: &Client,
        refresh_token: &str,
    ) -> Result<TokenAnswer, ProviderError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        self.token_request(def, client, &form).await
    }

    async fn token_request(
        &self,
        def: &OAuthDef,
        client: &Client,
        form: &[(&str, &str)],
    ) -> Result<TokenAnswer, ProviderError> {
        // The secrets this call sends, looked for in whatever the provider answers.
        let mut sent = form
            .iter()
            .filter(|(name, _)| !matches!(*name, "grant_type" | "redirect_uri"))
            .fold(Sent::default(), |sent, (_, value)| sent.with(value))
            .with(client.secret.expose());
        // Built whole before the call: the serializer must not live across an await.
        let body = {
            let mut body = url::form_urlencoded::Serializer::new(String::new());
            for (name, value) in form {
                body.append_pair(name, value);
            }
            if def.token_auth == TokenAuth::Post {
                body.append_pair("client_id", &client.id);
                body.append_pair("client_secret", client.secret.expose());
            }
            body.finish()
        };
        let mut basic = None;
        if def.token_auth == TokenAuth::Basic {
            let encode =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = STANDARD.encode(format!(
                "{}:{}",
                encode(&client.id),
                encode(client.secret.expose())
            ));
            sent = sent.with(&pair);
            basic = Some(SecretString::new(format!("Basic {pair}")));
        }
        let mut headers = vec![
            ("accept", "application/json"),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        if let Some(basic) = &basic {
            headers.push(("authorization", basic.expose()));
        }
        let answer = self
            .calls
            .call(ProviderRequest {
                url: &def.token_url,
                headers: &headers,
                body: Some(body.into_bytes()),
                max_bytes: MAX_RESPONSE_BYTES,
                public_only: false,
            })
            .await
            .map_err(call_failed)?;
        let status = answer.status;
        let json: Option<Value> = serde_json::from_slice(&answer.body).ok();
        if let Some(error) = json.as_ref().and_then(|j| oauth_error(j, &sent)) {
            return Err(error);
        }
        if status >= 500 || status == 429 {
            return Err(ProviderError::Transient(format!(
                "the token endpoint answered HTTP {status}"
            )));
        }
        if !(200..300).contains(&status) {
            let detail = json
                .as_ref()
                .and_then(|j| j.get("detail").or_else(|| j.get("title")))
                .and_then(Value::as_str)
                .unwrap_or_default();
            log_description("the token endpoint's detail", detail, &sent);
            return Err(ProviderError::Rejected(format!(
                "the token endpoint answered HTTP {status}"
            )));
        }
        let json = json.ok_or_else(|| {
            ProviderError::Rejected("the token endpoint answered no JSON object".to_owned())
        })?;
        let access_token = json
            .get("access_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ProviderError::Rejected("the answer has no access_token".to_owned()))?;
        Ok(TokenAnswer {
            access_token: SecretString::new(access_token.to_owned()),
            refresh_token: json
                .get("refresh_token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(|t| SecretString::new(t.to_owned())),
            expires_in: expires_in(json.get("expires_in")),
            scope: json.get("scope").and_then(Value::as_str).map(str::to_owned),
            body: json,
        })
    }

    /// GETs a userinfo-style endpoint with the access token and reads `pointer`.
    pub async fn account_name(
        &self,
        userinfo_url: &str,
        access_token: &SecretString,
        pointer: &str,
    ) -> Result<Option<String>, ProviderError> {
        let bearer = SecretString::new(format!("Bearer {}", access_token.expose()));
        let headers = [
            ("accept", "application/json"),
            ("authorization", bearer.expose()),
        ];
        let answer = self
            .calls
            .call(ProviderRequest {
                url: userinfo_url,
                headers: &headers,
                body: None,
                max_bytes: MAX_RESPONSE_BYTES,
                public_only: false,
            })
            .await
            .map_err(call_failed)?;
        if !(200..300).contains(&answer.status) {
            return Err(ProviderError::Rejected(format!(
                "the userinfo endpoint answered HTTP {}",
                answer.status
            )));
        }
        let json: Value = serde_json::from_slice(&answer.body).map_err(|_| {
            ProviderError::Rejected("the userinfo endpoint answered no JSON".to_owned())
        })?;
        Ok(text_at(&json, pointer))
    }
}

/// A call that gave no answer, in the service's words (never the URL, whose query could
/// carry a secret).
pub(crate) fn call_failed(failed: CallFailed) -> ProviderError {
    match failed {
        CallFailed::Refused(text) => ProviderError::Refused(text),
        CallFailed::Timeout => {
            ProviderError::Transient("the provider did not answer in time".to_owned())
        }
        CallFailed::Connect => {
            ProviderError::Transient("cannot connect to the provider".to_owned())
        }
        CallFailed::TooLarge => {
            ProviderError::Rejected("the provider's answer is too large".to_owned())
        }
        CallFailed::Failed => {
            ProviderError::Transient("the call to the provider failed".to_owned())
        }
    }
}

/// An OAuth error body (`{"error": "..."}`, or Slack's `{"ok": false, "error": "..."}`):
/// its code, checked, in the service's words; its description to the debug log only.
fn oauth_error(json: &Value, sent: &Sent) -> Option<ProviderError> {
    let code = json.get("error").and_then(Value::as_str)?;
    if json.get("access_token").is_some() && json.get("ok") != Some(&Value::Bool(false)) {
        return None;
    }
    if let Some(description) = json.get("error_description").and_then(Value::as_str) {
        log_description("the token endpoint's error_description", description, sent);
    }
    let text = format!("the provider answered {}", error_code(code, sent));
    Some(match code {
        // Slack's names for a dead grant.
        "invalid_grant"
        | "invalid_refresh_token"
        | "token_revoked"
        | "invalid_code"
        | "code_already_used" => ProviderError::InvalidGrant(text),
        "temporarily_unavailable" | "server_error" | "ratelimited" => {
            ProviderError::Transient(text)
        }
        _ => ProviderError::Rejected(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A transport that answers what the test says and keeps what it was asked.
    struct Canned {
        answer: Result<(u16, &'static str), CallFailed>,
        asked: std::sync::Mutex<Vec<Asked>>,
    }

    #[derive(Clone)]
    struct Asked {
        url: String,
        headers: Vec<(String, String)>,
        body: Option<String>,
        max_bytes: usize,
    }

    impl ProviderCalls for Canned {
        fn check(&self, url: &str) -> Result<Url, String> {
            Url::parse(url).map_err(|_| "not a URL".to_owned())
        }

        fn call<'a>(
            &'a self,
            request: ProviderRequest<'a>,
        ) -> BoxFuture<'a, Result<HttpAnswer, CallFailed>> {
            self.asked.lock().unwrap().push(Asked {
                url: request.url.to_owned(),
                headers: request
                    .headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                body: request.body.map(|b| String::from_utf8(b).unwrap()),
                max_bytes: request.max_bytes,
            });
            let answer = self.answer.clone().map(|(status, body)| HttpAnswer {
                status,
                headers: Vec::new(),
                body: body.as_bytes().to_vec(),
            });
            Box::pin(async move { answer })
        }
    }

    fn canned(answer: Result<(u16, &'static str), CallFailed>) -> Arc<Canned> {
        Arc::new(Canned {
            answer,
            asked: Default::default(),
        })
    }

    fn def(token_auth: TokenAuth) -> OAuthDef {
        serde_json::from_value(json!({
            "authorization_url": "https://idp.example/authorize",
            "token_url": "https://idp.example/token",
            "token_auth": if token_auth == TokenAuth::Basic { "basic" } else { "post" },
        }))
        .unwrap()
    }

    fn client() -> Client {
        Client {
            id: "hub".to_owned(),
            secret: SecretString::new("s3cret".to_owned()),
        }
    }

    /// The domain builds the request and reads the answer; the transport only carries them.
    #[tokio::test]
    async fn a_refresh_is_a_form_posted_through_the_calls_and_its_answer_read() {
        let calls = canned(Ok((200, r#"{"access_token": "at", "expires_in": 60}"#)));
        let provider = Provider::new(calls.clone());
        let answer = provider
            .refresh(&def(TokenAuth::Basic), &client(), "rt")
            .await
            .unwrap();
        assert_eq!(answer.access_token.expose(), "at");
        assert_eq!(answer.expires_in, Some(60));
        let Asked {
            url,
            headers,
            body,
            max_bytes,
        } = calls.asked.lock().unwrap()[0].clone();
        assert_eq!(url, "https://idp.example/token");
        assert_eq!(
            body.as_deref(),
            Some("grant_type=refresh_token&refresh_token=rt")
        );
        assert_eq!(max_bytes, MAX_RESPONSE_BYTES);
        let basic = format!("Basic {}", STANDARD.encode("hub:s3cret"));
        assert!(headers.contains(&("authorization".to_owned(), basic)));
        assert!(headers.contains(&(
            "content-type".to_owned(),
            "application/x-www-form-urlencoded".to_owned()
        )));
    }

    #[tokio::test]
    async fn what_the_transport_says_is_told_in_the_services_words() {
        for (failed, expected) in [
            (
                CallFailed::Refused("idp.example is not among the allowed hosts".to_owned()),
                ProviderError::Refused("idp.example is not among the allowed hosts".to_owned()),
            ),
            (
                CallFailed::Timeout,
                ProviderError::Transient("the provider did not answer in time".to_owned()),
            ),
            (
                CallFailed::TooLarge,
                ProviderError::Rejected("the provider's answer is too large".to_owned()),
            ),
        ] {
            let provider = Provider::new(canned(Err(failed)));
            let err = provider
                .refresh(&def(TokenAuth::Post), &client(), "rt")
                .await
                .unwrap_err();
            assert_eq!(err, expected);
        }
        for (status, transient) in [(500, true), (429, true), (400, false)] {
            let provider = Provider::new(canned(Ok((status, "{}"))));
            let err = provider
                .refresh(&def(TokenAuth::Post), &client(), "rt")
                .await
                .unwrap_err();
            assert_eq!(
                matches!(err, ProviderError::Transient(_)),
                transient,
                "{status}: {err:?}"
            );
        }
    }

    #[test]
    fn oauth_errors_are_told_apart_and_say_only_their_checked_code() {
        let none = Sent::default();
        let grant = oauth_error(
            &json!({"error": "invalid_grant", "error_description": "revoked"}),
            &none,
        );
        assert_eq!(
            grant,
            Some(ProviderError::InvalidGrant(
                "the provider answered invalid_grant".into()
            ))
        );
        assert!(matches!(
            oauth_error(&json!({"ok": false, "error": "token_revoked"}), &none),
            Some(ProviderError::InvalidGrant(_))
        ));
        assert!(matches!(
            oauth_error(&json!({"error": "temporarily_unavailable"}), &none),
            Some(ProviderError::Transient(_))
        ));
        assert!(matches!(
            oauth_error(&json!({"error": "invalid_client"}), &none),
            Some(ProviderError::Rejected(_))
        ));
        assert_eq!(oauth_error(&json!({"access_token": "t"}), &none), None);
        // A provider that echoes what it was sent: neither its description nor a code
        // holding a sent value reaches the error.
        let sent = Sent::default().with("client-s3cret").with("the-code-value");
        let long = "x\u{0007}client-s3cret".repeat(1000);
        match oauth_error(
            &json!({"error": "invalid_request the-code-value", "error_description": long}),
            &sent,
        ) {
            Some(ProviderError::Rejected(text)) => assert_eq!(
                text,
                "the provider answered an error code repeating a value the service sent"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn expiries_are_one_second_to_ten_years_or_none() {
        assert_eq!(expires_in(Some(&json!(3600))), Some(3600));
        assert_eq!(expires_in(Some(&json!("3600"))), Some(3600));
        assert_eq!(
            expires_in(Some(&json!(10_000_000_000_000_i64))),
            Some(MAX_EXPIRES_IN_SECS)
        );
        assert_eq!(
            expires_in(Some(&json!(u64::MAX))),
            Some(MAX_EXPIRES_IN_SECS)
        );
        assert_eq!(expires_in(Some(&json!(1e300))), Some(MAX_EXPIRES_IN_SECS));
        assert_eq!(expires_in(Some(&json!("1e13"))), Some(MAX_EXPIRES_IN_SECS));
        for none in [
            json!(0),
            json!(-5),
            json!("-1"),
            json!("soon"),
            json!(null),
            json!(-1e300),
        ] {
            assert_eq!(expires_in(Some(&none)), None, "{none}");
        }
        assert_eq!(expires_in(None), None);
    }
}
