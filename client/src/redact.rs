//! `Debug` of the messages that carry credentials: the keys show, the values print as
//! `[REDACTED]`, so logging a request or a resolved answer never logs a secret.

use std::collections::HashMap;
use std::fmt;

use crate::pb;

/// A credentials map with its values hidden.
struct Redacted<'a>(&'a HashMap<String, String>);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        f.debug_map()
            .entries(keys.into_iter().map(|k| (k, "[REDACTED]")))
            .finish()
    }
}

impl fmt::Debug for pb::CreateInstalledAppRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateInstalledAppRequest")
            .field("parent", &self.parent)
            .field("installed_app", &self.installed_app)
            .field("credentials", &Redacted(&self.credentials))
            .field("request_id", &self.request_id)
            .finish()
    }
}

impl fmt::Debug for pb::UpdateInstalledAppRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateInstalledAppRequest")
            .field("installed_app", &self.installed_app)
            .field("update_mask", &self.update_mask)
            .field("credentials", &Redacted(&self.credentials))
            .finish()
    }
}

impl fmt::Debug for pb::CompleteInstalledAppAuthorizationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompleteInstalledAppAuthorizationRequest")
            .field("state", &"[REDACTED]")
            .field("code", &"[REDACTED]")
            .field("error", &self.error)
            .finish()
    }
}

impl fmt::Debug for pb::StartInstalledAppAuthorizationResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartInstalledAppAuthorizationResponse")
            .field("authorization_uri", &"[REDACTED]")
            .field("authorization", &self.authorization)
            .field("sign_in_uri", &"[REDACTED]")
            .finish()
    }
}

impl fmt::Debug for pb::CreateIntegrationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateIntegrationRequest")
            .field("parent", &self.parent)
            .field("integration", &self.integration)
            .field("request_id", &self.request_id)
            .field("credentials", &Redacted(&self.credentials))
            .finish()
    }
}

impl fmt::Debug for pb::CreateWebhookSubscriptionResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateWebhookSubscriptionResponse")
            .field("webhook_subscription", &self.webhook_subscription)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

impl fmt::Debug for pb::RotateWebhookSecretResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotateWebhookSecretResponse")
            .field("webhook_subscription", &self.webhook_subscription)
            .field("secret", &"[REDACTED]")
            .finish()
    }
}

impl fmt::Debug for pb::Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("values", &Redacted(&self.values))
            .finish()
    }
}

impl fmt::Debug for pb::ResolveIntegrationCredentialsResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolveIntegrationCredentialsResponse")
            .field("integration", &self.integration)
            .field("service", &self.service)
            .field("credentials", &Redacted(&self.credentials))
            .field("expire_time", &self.expire_time)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_with_credentials_print_their_keys_but_never_their_values() {
        let credentials: HashMap<String, String> =
            [("access_token".to_owned(), "xoxb-very-secret".to_owned())].into();
        let printed = [
            format!(
                "{:?}",
                pb::CreateInstalledAppRequest {
                    credentials: credentials.clone(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                pb::UpdateInstalledAppRequest {
                    credentials: credentials.clone(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                pb::CreateIntegrationRequest {
                    credentials: credentials.clone(),
                    ..Default::default()
                }
            ),
            format!(
                "{:?}",
                pb::ReauthenticateIntegrationRequest {
                    name: "teams/acme/integrations/x".into(),
                    auth: Some(pb::reauthenticate_integration_request::Auth::Credentials(
                        pb::Credentials {
                            values: credentials.clone(),
                        }
                    )),
                }
            ),
            format!(
                "{:?}",
                pb::ResolveIntegrationCredentialsResponse {
                    credentials,
                    service: "slack".into(),
                    ..Default::default()
                }
            ),
        ];
        for text in printed {
            assert!(text.contains("access_token"), "{text}");
            assert!(text.contains("[REDACTED]"), "{text}");
            assert!(!text.contains("xoxb-very-secret"), "{text}");
        }
    }
}
