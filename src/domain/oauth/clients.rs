//! The OAuth clients the deployment registered with each provider:
//! `INTEGRATION_HUB_OAUTH_CLIENTS_FILE`, JSON `{"<service>": {"client_id": "...",
//! "client_secret": "..."}}`, or `"client_secret_file": "/path"` instead of the secret (a
//! mounted Kubernetes Secret). The secrets print `[REDACTED]`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::crypto::SecretString;

/// One registered client.
#[derive(Debug)]
pub struct Client {
    pub id: String,
    pub secret: SecretString,
}

/// Every registered client, by service id.
#[derive(Debug, Default)]
pub struct Clients(BTreeMap<String, Client>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_file: Option<String>,
}

impl Clients {
    /// Reads the clients file; relative `client_secret_file` paths are taken from its
    /// directory. Errors name the service and the problem, never a secret.
    pub fn from_file(path: &Path) -> anyhow::Result<Clients> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Clients::from_json(&text, dir)
    }

    pub fn from_json(text: &str, dir: &Path) -> anyhow::Result<Clients> {
        // serde_json's messages quote no input values beyond the position: safe to show.
        let entries: BTreeMap<String, Entry> = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("not a JSON object of clients: {e}"))?;
        let mut clients = BTreeMap::new();
        for (service, entry) in entries {
            if entry.client_id.trim().is_empty() || entry.client_id.len() > 500 {
                anyhow::bail!("service {service:?}: client_id must be 1 to 500 characters");
            }
            let secret = match (entry.client_secret, entry.client_secret_file) {
                (Some(secret), None) => secret,
                (None, Some(file)) => {
                    let file = dir.join(file);
                    std::fs::read_to_string(&file)
                        .map_err(|e| {
                            anyhow::anyhow!(
                                "service {service:?}: cannot read client_secret_file {}: {e}",
                                file.display()
                            )
                        })?
                        .trim()
                        .to_owned()
                }
                _ => anyhow::bail!(
                    "service {service:?}: give exactly one of client_secret and client_secret_file"
                ),
            };
            if secret.is_empty() || secret.len() > 2000 {
                anyhow::bail!("service {service:?}: the client secret must be 1 to 2000 bytes");
            }
            clients.insert(
                service,
                Client {
                    id: entry.client_id,
                    secret: SecretString::new(secret),
                },
            );
        }
        Ok(Clients(clients))
    }

    pub fn get(&self, service: &str) -> Option<&Client> {
        self.0.get(service)
    }

    pub fn services(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_come_inline_or_from_a_file_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("slack-secret"), "s3cret-from-file\n").unwrap();
        let clients = Clients::from_json(
            r#"{"github": {"client_id": "gh", "client_secret": "inline-s3cret"},
                "slack": {"client_id": "sl", "client_secret_file": "slack-secret"}}"#,
            dir.path(),
        )
        .unwrap();
        assert_eq!(
            clients.get("github").unwrap().secret.expose(),
            "inline-s3cret"
        );
        assert_eq!(
            clients.get("slack").unwrap().secret.expose(),
            "s3cret-from-file"
        );
        let printed = format!("{clients:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
    }

    #[test]
    fn a_broken_entry_is_named_without_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in [
            (r#"{"x": {"client_id": "a"}}"#, "exactly one"),
            (
                r#"{"x": {"client_id": "a", "client_secret": "s3cret", "client_secret_file": "f"}}"#,
                "exactly one",
            ),
            (
                r#"{"x": {"client_id": "", "client_secret": "s3cret"}}"#,
                "client_id",
            ),
            (
                r#"{"x": {"client_id": "a", "client_secret_file": "missing"}}"#,
                "cannot read",
            ),
            (r#"["s3cret"]"#, "not a JSON object"),
        ] {
            let err = Clients::from_json(text, dir.path())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains("s3cret"), "{err}");
        }
    }
}
