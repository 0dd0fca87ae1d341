//! The OAuth 2.0 part of a catalog entry: where the provider's endpoints are, which scopes to
//! ask for, how to read the account the app connects to, and whether refresh tokens rotate.
//! Client ids and secrets are deployment settings ([`super::clients`]), never in a catalog.

use std::collections::BTreeMap;

use serde::Deserialize;

/// How a service's OAuth 2.0 authorization code flow works.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthDef {
    /// The provider's authorization endpoint (the browser is sent there).
    pub authorization_url: String,
    /// The provider's token endpoint (codes and refresh tokens are exchanged there).
    pub token_url: String,
    /// Scopes asked for when the caller names none.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// What joins scopes in the `scope` parameter: a space (RFC 6749), or `,` (Slack).
    #[serde(default = "space")]
    pub scope_separator: String,
    /// Whether to send a PKCE challenge (S256). On unless a provider refuses it.
    #[serde(default = "yes")]
    pub pkce: bool,
    /// How the client authenticates at the token endpoint: `post` (in the body) or `basic`.
    #[serde(default)]
    pub token_auth: TokenAuth,
    /// How to read the account the app connects to (`connected_to`).
    #[serde(default)]
    pub connected_to: Option<ConnectedToDef>,
    /// Whether the provider rotates refresh tokens (each refresh answers a new one and
    /// retires the old): a double refresh would then revoke the grant.
    #[serde(default)]
    pub rotating_refresh_tokens: bool,
    /// Credential fields filled from the token response, by JSON pointer (such as Slack's
    /// `team_id` from `/team/id`). `access_token` and `scope` are filled without one.
    #[serde(default)]
    pub credential_pointers: BTreeMap<String, String>,
    /// Extra query parameters of the authorization URL (such as `access_type=offline`).
    #[serde(default)]
    pub authorization_params: BTreeMap<String, String>,
}

/// How the client authenticates at the token endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    /// `client_id` and `client_secret` in the form body (`client_secret_post`).
    #[default]
    Post,
    /// HTTP Basic (`client_secret_basic`).
    Basic,
}

/// Where the account name comes from: a field of the token response, or a GET of a
/// userinfo-style endpoint with the new access token.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectedToDef {
    /// Endpoint to GET with the access token; absent: read the token response itself.
    #[serde(default)]
    pub userinfo_url: Option<String>,
    /// JSON pointer (RFC 6901) to a string, such as `/team/name` or `/login`.
    pub pointer: String,
}

fn space() -> String {
    " ".to_owned()
}

fn yes() -> bool {
    true
}

impl OAuthDef {
    /// What is wrong with this definition, if anything (for the catalog's load-time check).
    pub fn problem(&self, credential_fields: &[String]) -> Option<String> {
        for (what, url) in [
            ("authorization_url", Some(&self.authorization_url)),
            ("token_url", Some(&self.token_url)),
            (
                "connected_to.userinfo_url",
                self.connected_to
                    .as_ref()
                    .and_then(|c| c.userinfo_url.as_ref()),
            ),
        ] {
            let Some(url) = url else { continue };
            match reqwest::Url::parse(url) {
                Ok(parsed) if matches!(parsed.scheme(), "https" | "http") && parsed.has_host() => {}
                _ => return Some(format!("oauth.{what} is not an absolute http(s) URL")),
            }
        }
        if self
            .scopes
            .iter()
            .any(|s| s.trim().is_empty() || s.len() > 200)
        {
            return Some("oauth.scopes has an empty or overlong scope".to_owned());
        }
        if self.scope_separator.is_empty() || self.scope_separator.len() > 3 {
            return Some("oauth.scope_separator must be 1 to 3 characters".to_owned());
        }
        let pointers = self
            .connected_to
            .iter()
            .map(|c| &c.pointer)
            .chain(self.credential_pointers.values());
        for pointer in pointers {
            if !pointer.starts_with('/') {
                return Some("oauth pointers must start with /".to_owned());
            }
        }
        if let Some(field) = self
            .credential_pointers
            .keys()
            .find(|k| !credential_fields.contains(k))
        {
            return Some(format!(
                "oauth.credential_pointers names {field:?}, which is not a credential field"
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(json: &str) -> OAuthDef {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_are_pkce_space_separated_scopes_and_the_post_client_auth() {
        let d = def(
            r#"{"authorization_url": "https://a.test/auth", "token_url": "https://a.test/token"}"#,
        );
        assert!(d.pkce);
        assert_eq!(d.scope_separator, " ");
        assert_eq!(d.token_auth, TokenAuth::Post);
        assert!(!d.rotating_refresh_tokens);
        assert_eq!(d.problem(&[]), None);
    }

    #[test]
    fn bad_urls_pointers_and_unknown_fields_are_named() {
        let d = def(
            r#"{"authorization_url": "ftp://a.test/auth", "token_url": "https://a.test/token"}"#,
        );
        assert!(d.problem(&[]).unwrap().contains("authorization_url"));
        let d = def(
            r#"{"authorization_url": "https://a.test/auth", "token_url": "https://a.test/token",
                "connected_to": {"pointer": "team/name"}}"#,
        );
        assert!(d.problem(&[]).unwrap().contains("pointers"));
        let d = def(
            r#"{"authorization_url": "https://a.test/auth", "token_url": "https://a.test/token",
                "credential_pointers": {"team_id": "/team/id"}}"#,
        );
        assert!(d.problem(&[]).unwrap().contains("team_id"));
        assert_eq!(d.problem(&["team_id".to_owned()]), None);
        assert!(
            serde_json::from_str::<OAuthDef>(
                r#"{"authorization_url": "https://a", "token_url": "https://b", "client_secret": "x"}"#
            )
            .is_err(),
            "a client secret never belongs in a catalog"
        );
    }
}
