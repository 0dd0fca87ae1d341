//! The service catalog: which third-party services the hub can install, how
//! each one authenticates, which credential fields an installed app carries
//! and which integration types (with their non-secret config fields) it
//! offers.
//!
//! A catalog ships built in ([`Catalog::builtin`], from `catalog.json` compiled
//! into the binary) and an operator may replace it with a file
//! ([`Catalog::from_file`]). Every catalog is validated when it is loaded, so
//! the rest of the service can trust ids, field names and the "config is never
//! secret" rule.
//!
//! [`check_fields`] checks a submitted key/value map (credentials or config)
//! against the declared fields without ever echoing a submitted value.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The built-in catalog, compiled into the binary.
const BUILTIN_JSON: &str = include_str!("catalog.json");

/// Longest service id, field name or integration type suffix, in characters.
const MAX_NAME_LEN: usize = 64;

/// Longest submitted key accepted by [`check_fields`], in characters.
pub const MAX_KEY_LEN: usize = 64;

/// How a service authorizes the hub; decides which flow installs the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    /// OAuth 2.0 authorization code flow (access and refresh tokens).
    Oauth2,
    /// A long-lived API key issued by the service.
    ApiKey,
    /// A personal access token or app password.
    Token,
    /// A client id / client secret pair (or an access key pair).
    ClientCredentials,
    /// A shared secret that signs or addresses outgoing webhooks.
    WebhookSecret,
}

/// One declared field of a credential or config map.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// Key in the submitted map; matches `[a-z][a-z0-9_]{0,63}`.
    pub name: String,
    /// Human-readable label.
    pub display_name: String,
    /// Whether the key must be present with a non-empty value.
    pub required: bool,
    /// Whether the value is a secret (never shown back, only stored encrypted).
    pub secret: bool,
}

/// One kind of integration a service offers (e.g. `slack.post_monitor_results`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrationTypeDef {
    /// `<service id>.<snake_name>`, unique across the catalog.
    pub id: String,
    /// Human-readable name.
    pub display_name: String,
    /// One-sentence description of what the integration does.
    pub description: String,
    /// Non-secret configuration fields of an integration of this type.
    pub config_fields: Vec<FieldDef>,
    /// Scopes the installed app's grant must hold, as the provider names them: an app whose
    /// verification says it lacks one is refused (an app whose scopes are unknown is not).
    #[serde(default)]
    pub required_scopes: Vec<String>,
}

/// One supported third-party service.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceDef {
    /// Service id; matches `[a-z][a-z0-9_]{0,63}`.
    pub id: String,
    /// Human-readable name.
    pub display_name: String,
    /// How an installed app of this service authenticates.
    pub auth_kind: AuthKind,
    /// Fields of an installed app's credentials (at least one).
    pub credential_fields: Vec<FieldDef>,
    /// Integration types built on an installed app of this service (at least one).
    pub integration_types: Vec<IntegrationTypeDef>,
    /// How to authorize through OAuth 2.0, for a service that offers it.
    #[serde(default)]
    pub oauth: Option<super::oauth::catalog::OAuthDef>,
    /// How the service's credentials are verified, or why they cannot be (required: every
    /// service says one or the other).
    pub verification: super::verify::catalog::VerificationDef,
}

/// The JSON document: `{"services": [...]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    services: Vec<ServiceDef>,
}

/// A catalog file could not be read or is not a valid catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The catalog file could not be read.
    #[error("cannot read catalog file {path}: {source}", path = .path.display())]
    Read {
        /// The file that was being read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not JSON of the catalog's shape (includes unknown keys).
    #[error("catalog is not valid catalog JSON: {0}")]
    Parse(#[from] serde_json::Error),
    /// The catalog declares no service.
    #[error("catalog declares no service")]
    NoServices,
    /// A service id does not match `[a-z][a-z0-9_]{0,63}`.
    #[error("service id {id} must match [a-z][a-z0-9_]{{0,63}}")]
    InvalidServiceId {
        /// The offending id (quoted, truncated).
        id: String,
    },
    /// Two services share an id.
    #[error("service id {id} is declared twice")]
    DuplicateService {
        /// The repeated id (quoted, truncated).
        id: String,
    },
    /// A display name (or description) is empty or blank.
    #[error("{what} has an empty {attribute}")]
    EmptyText {
        /// What carries the text, e.g. `service "slack"`.
        what: String,
        /// Which text: `display_name` or `description`.
        attribute: &'static str,
    },
    /// A service declares no credential field.
    #[error("service {service} declares no credential field")]
    NoCredentialFields {
        /// The service id (quoted).
        service: String,
    },
    /// A service declares no integration type.
    #[error("service {service} declares no integration type")]
    NoIntegrationTypes {
        /// The service id (quoted).
        service: String,
    },
    /// An integration type id is not `<service id>.<[a-z][a-z0-9_]{0,63}>`.
    #[error(
        "integration type {id} of service {service} must be {service_bare}.<[a-z][a-z0-9_]{{0,63}}>"
    )]
    InvalidIntegrationTypeId {
        /// The owning service id (quoted).
        service: String,
        /// The owning service id, unquoted, for the expected pattern.
        service_bare: String,
        /// The offending id (quoted, truncated).
        id: String,
    },
    /// Two integration types (possibly of different services) share an id.
    #[error("integration type id {id} is declared twice")]
    DuplicateIntegrationType {
        /// The repeated id (quoted, truncated).
        id: String,
    },
    /// A field name does not match `[a-z][a-z0-9_]{0,63}`.
    #[error("field name {name} in {list} must match [a-z][a-z0-9_]{{0,63}}")]
    InvalidFieldName {
        /// The field list, e.g. `credential fields of service "slack"`.
        list: String,
        /// The offending name (quoted, truncated).
        name: String,
    },
    /// A field name appears twice in one list.
    #[error("field {name} is declared twice in {list}")]
    DuplicateField {
        /// The field list, e.g. `credential fields of service "slack"`.
        list: String,
        /// The repeated name (quoted).
        name: String,
    },
    /// A service's OAuth 2.0 definition is invalid.
    #[error("service {service}: {problem}")]
    InvalidOAuth {
        /// The service id (quoted).
        service: String,
        /// What is wrong.
        problem: String,
    },
    /// A service's verification definition is invalid.
    #[error("service {service}: {problem}")]
    InvalidVerification {
        /// The service id (quoted).
        service: String,
        /// What is wrong.
        problem: String,
    },
    /// A config field is marked secret; secrets belong in credentials.
    #[error(
        "config field {field} of integration type {integration_type} is marked secret; \
         secrets belong in the service's credential fields"
    )]
    SecretConfigField {
        /// The integration type id (quoted).
        integration_type: String,
        /// The field name (quoted).
        field: String,
    },
}

/// The validated catalog: services sorted by id, with lookup indexes.
#[derive(Clone, Debug)]
pub struct Catalog {
    /// Services sorted by id.
    services: Vec<ServiceDef>,
    /// Service id -> index in `services`.
    by_service: HashMap<String, usize>,
    /// Integration type id -> (service index, type index within the service).
    by_integration_type: HashMap<String, (usize, usize)>,
}

impl Catalog {
    /// The catalog compiled into the binary (`catalog.json`).
    ///
    /// # Panics
    ///
    /// Never in practice: a unit test guarantees the built-in file is valid.
    pub fn builtin() -> Catalog {
        Self::from_json(BUILTIN_JSON)
            .expect("the built-in catalog.json is invalid (a unit test should have caught this)")
    }

    /// Parses and validates a catalog from JSON text.
    ///
    /// # Errors
    ///
    /// [`CatalogError::Parse`] when the text is not JSON of the catalog's shape
    /// (unknown keys included); any other variant when a validation rule is
    /// broken, naming the offending service, integration type or field.
    pub fn from_json(text: &str) -> Result<Catalog, CatalogError> {
        let file: CatalogFile = serde_json::from_str(text)?;
        Self::from_services(file.services)
    }

    /// Reads, parses and validates a catalog file.
    ///
    /// # Errors
    ///
    /// [`CatalogError::Read`] when the file cannot be read, otherwise as
    /// [`Catalog::from_json`].
    pub fn from_file(path: &Path) -> Result<Catalog, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// All services, sorted by id.
    pub fn services(&self) -> &[ServiceDef] {
        &self.services
    }

    /// The service with this id, if any.
    pub fn service(&self, id: &str) -> Option<&ServiceDef> {
        self.by_service.get(id).map(|&index| &self.services[index])
    }

    /// The integration type with this id, with the service that offers it.
    pub fn integration_type(&self, id: &str) -> Option<(&ServiceDef, &IntegrationTypeDef)> {
        self.by_integration_type.get(id).map(|&(service, kind)| {
            let service = &self.services[service];
            (service, &service.integration_types[kind])
        })
    }

    /// Validates services (in file order, first error wins), then sorts and indexes them.
    fn from_services(mut services: Vec<ServiceDef>) -> Result<Catalog, CatalogError> {
        if services.is_empty() {
            return Err(CatalogError::NoServices);
        }
        let mut seen_services: HashSet<&str> = HashSet::new();
        let mut seen_types: HashSet<&str> = HashSet::new();
        for service in &services {
            validate_service(service)?;
            if !seen_services.insert(&service.id) {
                return Err(CatalogError::DuplicateService {
                    id: quoted(&service.id),
                });
            }
            for kind in &service.integration_types {
                if !seen_types.insert(&kind.id) {
                    return Err(CatalogError::DuplicateIntegrationType {
                        id: quoted(&kind.id),
                    });
                }
            }
        }
        services.sort_by(|a, b| a.id.cmp(&b.id));
        let mut by_service = HashMap::with_capacity(services.len());
        let mut by_integration_type = HashMap::new();
        for (service_index, service) in services.iter().enumerate() {
            by_service.insert(service.id.clone(), service_index);
            for (kind_index, kind) in service.integration_types.iter().enumerate() {
                by_integration_type.insert(kind.id.clone(), (service_index, kind_index));
            }
        }
        Ok(Catalog {
            services,
            by_service,
            by_integration_type,
        })
    }
}

/// Checks one service on its own (everything but cross-service uniqueness).
fn validate_service(service: &ServiceDef) -> Result<(), CatalogError> {
    if !is_name(&service.id) {
        return Err(CatalogError::InvalidServiceId {
            id: quoted(&service.id),
        });
    }
    let what = format!("service {}", quoted(&service.id));
    require_text(&service.display_name, &what, "display_name")?;
    if service.credential_fields.is_empty() {
        return Err(CatalogError::NoCredentialFields {
            service: quoted(&service.id),
        });
    }
    validate_fields(
        &service.credential_fields,
        &format!("credential fields of service {}", quoted(&service.id)),
    )?;
    if let Some(oauth) = &service.oauth {
        let fields: Vec<String> = service
            .credential_fields
            .iter()
            .map(|f| f.name.clone())
            .collect();
        if let Some(problem) = oauth.problem(&fields) {
            return Err(CatalogError::InvalidOAuth {
                service: quoted(&service.id),
                problem,
            });
        }
    }
    if let Some(problem) = service.verification.problem(&service.credential_fields) {
        return Err(CatalogError::InvalidVerification {
            service: quoted(&service.id),
            problem,
        });
    }
    if service.integration_types.is_empty() {
        return Err(CatalogError::NoIntegrationTypes {
            service: quoted(&service.id),
        });
    }
    for kind in &service.integration_types {
        let valid_id = kind
            .id
            .strip_prefix(service.id.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(is_name);
        if !valid_id {
            return Err(CatalogError::InvalidIntegrationTypeId {
                service: quoted(&service.id),
                service_bare: service.id.clone(),
                id: quoted(&kind.id),
            });
        }
        let what = format!("integration type {}", quoted(&kind.id));
        require_text(&kind.display_name, &what, "display_name")?;
        require_text(&kind.description, &what, "description")?;
        validate_fields(
            &kind.config_fields,
            &format!("config fields of integration type {}", quoted(&kind.id)),
        )?;
        let scoped = service
            .verification
            .call
            .as_ref()
            .is_some_and(|c| c.scopes.is_some());
        let scope_text =
            |s: &String| !s.is_empty() && s.len() <= 200 && !s.contains(char::is_whitespace);
        if !kind.required_scopes.is_empty()
            && (!scoped || !kind.required_scopes.iter().all(scope_text))
        {
            return Err(CatalogError::InvalidVerification {
                service: quoted(&service.id),
                problem: format!(
                    "integration type {} has required_scopes, but they are blank or the service's verification reads no scopes",
                    quoted(&kind.id)
                ),
            });
        }
        if let Some(field) = kind.config_fields.iter().find(|field| field.secret) {
            return Err(CatalogError::SecretConfigField {
                integration_type: quoted(&kind.id),
                field: quoted(&field.name),
            });
        }
    }
    Ok(())
}

/// Checks one field list: valid, unique names and non-empty display names.
fn validate_fields(fields: &[FieldDef], list: &str) -> Result<(), CatalogError> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(fields.len());
    for field in fields {
        if !is_name(&field.name) {
            return Err(CatalogError::InvalidFieldName {
                list: list.to_owned(),
                name: quoted(&field.name),
            });
        }
        if !seen.insert(&field.name) {
            return Err(CatalogError::DuplicateField {
                list: list.to_owned(),
                name: quoted(&field.name),
            });
        }
        require_text(
            &field.display_name,
            &format!("field {} in {list}", quoted(&field.name)),
            "display_name",
        )?;
    }
    Ok(())
}

/// Refuses an empty or blank text attribute.
fn require_text(text: &str, what: &str, attribute: &'static str) -> Result<(), CatalogError> {
    if text.trim().is_empty() {
        return Err(CatalogError::EmptyText {
            what: what.to_owned(),
            attribute,
        });
    }
    Ok(())
}

/// Whether `name` matches `[a-z][a-z0-9_]{0,63}`.
fn is_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(first) if first.is_ascii_lowercase() => {
            bytes.len() <= MAX_NAME_LEN
                && bytes[1..]
                    .iter()
                    .all(|&byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_')
        }
        _ => false,
    }
}

/// `text` truncated to 64 characters, for use in messages.
fn truncated(text: &str) -> String {
    match text.char_indices().nth(MAX_KEY_LEN) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// `text` truncated to 64 characters and quoted with escapes (safe in logs).
fn quoted(text: &str) -> String {
    format!("{:?}", truncated(text))
}

/// One problem with a submitted map, naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// The bare key (its first 64 characters), or empty for a problem with
    /// the map as a whole (too many entries).
    pub field: String,
    /// What is wrong; never contains a submitted value.
    pub description: String,
}

impl FieldProblem {
    /// The field path under `prefix`: `prefix.field`, or `prefix` alone for a
    /// problem with the whole map.
    pub fn path(&self, prefix: &str) -> String {
        if self.field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.field)
        }
    }
}

/// Checks submitted values against declared fields: every required field present and non-empty,
/// no unknown key, keys at most 64 chars, values at most `max_value_len` bytes, at most `max_entries` entries.
/// Returns every problem found (not just the first), in a stable order. Descriptions must NEVER include the value (values may be secrets); they may include the key (truncated to 64 chars).
///
/// The order is: too many entries (field empty); then missing or blank
/// required fields in declaration order; then, for each submitted key in
/// sorted order, key too long or unknown, then value too long. A blank value
/// (only whitespace) counts as empty.
///
/// # Errors
///
/// Every [`FieldProblem`] found, when there is at least one.
pub fn check_fields(
    fields: &[FieldDef],
    values: &BTreeMap<String, String>,
    max_entries: usize,
    max_value_len: usize,
) -> Result<(), Vec<FieldProblem>> {
    let mut problems = Vec::new();
    if values.len() > max_entries {
        problems.push(FieldProblem {
            field: String::new(),
            description: format!(
                "at most {max_entries} fields may be submitted, got {}",
                values.len()
            ),
        });
    }
    for field in fields.iter().filter(|field| field.required) {
        let problem = match values.get(&field.name) {
            None => "is required but missing",
            Some(value) if value.trim().is_empty() => "is required but empty",
            Some(_) => continue,
        };
        problems.push(problem_for(&field.name, problem));
    }
    for (key, value) in values {
        if key.chars().count() > MAX_KEY_LEN {
            problems.push(problem_for(
                key,
                &format!("has a name longer than {MAX_KEY_LEN} characters"),
            ));
        } else if !fields.iter().any(|field| field.name == *key) {
            problems.push(problem_for(key, "is not a known field"));
        }
        if value.len() > max_value_len {
            problems.push(problem_for(
                key,
                &format!("has a value longer than {max_value_len} bytes"),
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// A problem about `key` (truncated), described as `field "<key>" <problem>`.
fn problem_for(key: &str, problem: &str) -> FieldProblem {
    FieldProblem {
        field: key.chars().take(MAX_KEY_LEN).collect(),
        description: format!("field {} {problem}", quoted(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const ELEVEN: [&str; 11] = [
        "github",
        "gitlab",
        "bitbucket",
        "slack",
        "microsoft_teams",
        "datadog",
        "new_relic",
        "pagerduty",
        "opsgenie",
        "aws_api_gateway",
        "custom_webhook",
    ];

    /// An in-place edit of a catalog JSON value.
    type Edit = fn(&mut Value);

    /// A minimal valid catalog with two services.
    fn base() -> Value {
        json!({"services": [
            {"id": "slack", "display_name": "Slack", "auth_kind": "oauth2",
             "verification": {"call": {"base_url": "https://slack.com", "path": "/api/auth.test",
                "headers": {"Authorization": "Bearer {access_token}"}}},
             "credential_fields": [
                {"name": "access_token", "display_name": "Access token", "required": true, "secret": true}],
             "integration_types": [
                {"id": "slack.post_monitor_results", "display_name": "Post monitor results",
                 "description": "Posts monitor runs.",
                 "config_fields": [
                    {"name": "channel", "display_name": "Channel", "required": true, "secret": false}]}]},
            {"id": "datadog", "display_name": "Datadog", "auth_kind": "api_key",
             "verification": {"not_verifiable": "for the test"},
             "credential_fields": [
                {"name": "api_key", "display_name": "API key", "required": true, "secret": true}],
             "integration_types": [
                {"id": "datadog.send_monitor_results", "display_name": "Send monitor results",
                 "description": "Sends monitor runs.", "config_fields": []}]}
        ]})
    }

    /// Applies `edit` to the base catalog and loads it.
    fn load(edit: impl FnOnce(&mut Value)) -> Result<Catalog, CatalogError> {
        let mut value = base();
        edit(&mut value);
        Catalog::from_json(&value.to_string())
    }

    /// Loads an edited base catalog that must be refused; returns the error and its message.
    fn refused(edit: impl FnOnce(&mut Value)) -> (CatalogError, String) {
        let error = load(edit).expect_err("the edited catalog should be refused");
        let message = error.to_string();
        (error, message)
    }

    fn field(name: &str, required: bool, secret: bool) -> FieldDef {
        FieldDef {
            name: name.to_owned(),
            display_name: name.to_owned(),
            required,
            secret,
        }
    }

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|&(key, value)| (key.to_owned(), value.to_owned()))
            .collect()
    }

    #[test]
    fn builtin_catalog_parses_and_has_all_eleven_services() {
        let catalog = Catalog::from_json(BUILTIN_JSON).expect("built-in catalog must be valid");
        for id in ELEVEN {
            assert!(catalog.service(id).is_some(), "missing service {id}");
        }
        assert!(Catalog::builtin().services().len() >= ELEVEN.len());
    }

    #[test]
    fn builtin_services_are_sorted_by_id() {
        let catalog = Catalog::builtin();
        let ids: Vec<&str> = catalog
            .services()
            .iter()
            .map(|service| service.id.as_str())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn every_builtin_integration_type_id_is_unique_prefixed_and_found() {
        let catalog = Catalog::builtin();
        let mut seen = std::collections::HashSet::new();
        for service in catalog.services() {
            assert!(!service.integration_types.is_empty() && service.integration_types.len() <= 3);
            for kind in &service.integration_types {
                assert!(seen.insert(kind.id.clone()), "duplicate {}", kind.id);
                assert!(
                    kind.id.starts_with(&format!("{}.", service.id)),
                    "{} not prefixed",
                    kind.id
                );
                let (owner, found) = catalog.integration_type(&kind.id).expect("indexed");
                assert_eq!(owner.id, service.id);
                assert_eq!(found, kind);
            }
        }
    }

    #[test]
    fn builtin_examples_have_the_expected_auth_and_fields() {
        let catalog = Catalog::builtin();
        let github = catalog.service("github").unwrap();
        assert_eq!(github.auth_kind, AuthKind::Oauth2);
        assert_eq!(
            github.credential_fields[0],
            FieldDef {
                name: "access_token".into(),
                display_name: "Access token".into(),
                required: true,
                secret: true
            }
        );
        let datadog = catalog.service("datadog").unwrap();
        assert_eq!(datadog.auth_kind, AuthKind::ApiKey);
        let aws = catalog.service("aws_api_gateway").unwrap();
        let secret_access_key = aws
            .credential_fields
            .iter()
            .find(|f| f.name == "secret_access_key")
            .unwrap();
        assert!(secret_access_key.required && secret_access_key.secret);
        let hook = catalog.service("custom_webhook").unwrap();
        assert_eq!(hook.auth_kind, AuthKind::WebhookSecret);
        for id in [
            "slack.post_monitor_results",
            "github.backup_collections",
            "github.sync_api_schema",
            "datadog.send_monitor_results",
            "pagerduty.alert_on_monitor_failure",
            "custom_webhook.post_collection_changes",
            "microsoft_teams.post_team_activity",
        ] {
            assert!(catalog.integration_type(id).is_some(), "missing {id}");
        }
    }

    #[test]
    fn every_builtin_service_has_a_required_secret_credential() {
        for service in Catalog::builtin().services() {
            assert!(
                service
                    .credential_fields
                    .iter()
                    .any(|f| f.required && f.secret),
                "{} has no required secret",
                service.id
            );
        }
    }

    #[test]
    fn lookups_of_unknown_ids_return_none() {
        let catalog = Catalog::builtin();
        assert!(catalog.service("nope").is_none());
        assert!(catalog.integration_type("slack.nope").is_none());
        assert!(catalog.integration_type("slack").is_none());
    }

    #[test]
    fn a_valid_catalog_loads_sorted_with_its_indexes() {
        let catalog = load(|_| {}).unwrap();
        let ids: Vec<&str> = catalog.services().iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["datadog", "slack"]);
        assert_eq!(catalog.service("slack").unwrap().display_name, "Slack");
        let (service, kind) = catalog
            .integration_type("slack.post_monitor_results")
            .unwrap();
        assert_eq!(
            (service.id.as_str(), kind.config_fields.len()),
            ("slack", 1)
        );
    }

    #[test]
    fn a_catalog_file_is_read_and_a_missing_file_is_a_read_error() {
        let dir = std::env::temp_dir().join(format!("catalog-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("catalog.json");
        std::fs::write(&path, base().to_string()).unwrap();
        assert_eq!(Catalog::from_file(&path).unwrap().services().len(), 2);
        std::fs::remove_file(&path).unwrap();
        let error = Catalog::from_file(&path).unwrap_err();
        assert!(matches!(error, CatalogError::Read { .. }));
        assert!(error.to_string().contains("catalog.json"));
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn malformed_json_is_a_parse_error() {
        assert!(matches!(
            Catalog::from_json("{"),
            Err(CatalogError::Parse(_))
        ));
        assert!(matches!(
            Catalog::from_json("{\"services\": 3}"),
            Err(CatalogError::Parse(_))
        ));
    }

    #[test]
    fn an_unknown_auth_kind_is_refused() {
        let (error, _) = refused(|v| v["services"][0]["auth_kind"] = json!("basic"));
        assert!(matches!(error, CatalogError::Parse(_)));
    }

    #[test]
    fn unknown_keys_are_refused_at_every_level() {
        let edits: [Edit; 4] = [
            |v| v["extra"] = json!(1),
            |v| v["services"][0]["extra"] = json!(1),
            |v| v["services"][0]["credential_fields"][0]["extra"] = json!(1),
            |v| v["services"][0]["integration_types"][0]["extra"] = json!(1),
        ];
        for edit in edits {
            let (error, message) = refused(edit);
            assert!(matches!(error, CatalogError::Parse(_)));
            assert!(message.contains("extra"), "{message}");
        }
    }

    #[test]
    fn a_catalog_without_services_is_refused() {
        let (error, _) = refused(|v| v["services"] = json!([]));
        assert!(matches!(error, CatalogError::NoServices));
    }

    #[test]
    fn an_invalid_service_id_is_refused() {
        for id in ["", "Slack", "1slack", "sla-ck", "slack.x", &"a".repeat(65)] {
            let id = id.to_owned();
            let (error, message) = refused(|v| v["services"][0]["id"] = json!(id));
            assert!(
                matches!(error, CatalogError::InvalidServiceId { .. }),
                "{id}: {message}"
            );
        }
        assert!(
            load(|v| {
                let id = "a".repeat(64);
                v["services"][0]["id"] = json!(id);
                v["services"][0]["integration_types"][0]["id"] = json!(format!("{id}.x"));
            })
            .is_ok()
        );
    }

    #[test]
    fn a_duplicate_service_id_is_refused() {
        let (error, message) = refused(|v| {
            let copy = v["services"][0].clone();
            v["services"].as_array_mut().unwrap().push(copy);
        });
        assert!(matches!(error, CatalogError::DuplicateService { .. }));
        assert!(message.contains("\"slack\""), "{message}");
        // Required scopes need a verification that reads scopes, and real scope names.
        let (error, message) = refused(|v| {
            v["services"][0]["integration_types"][0]["required_scopes"] = json!(["chat:write"])
        });
        assert!(
            matches!(error, CatalogError::InvalidVerification { .. }),
            "{error:?}"
        );
        assert!(message.contains("required_scopes"), "{message}");
        let scoped = |scopes: Value| {
            move |v: &mut Value| {
                v["services"][0]["verification"]["call"]["scopes"] =
                    json!({"header": "X-OAuth-Scopes"});
                v["services"][0]["integration_types"][0]["required_scopes"] = scopes;
            }
        };
        assert!(load(scoped(json!(["chat:write"]))).is_ok());
        assert!(load(scoped(json!(["chat write"]))).is_err());
    }

    #[test]
    fn an_integration_type_id_not_prefixed_by_its_service_is_refused() {
        for id in [
            "datadog.post",
            "slack",
            "slack.",
            "slackpost",
            "slack.Post",
            "slack.a.b",
            "slack.1a",
        ] {
            let (error, message) =
                refused(|v| v["services"][0]["integration_types"][0]["id"] = json!(id));
            assert!(
                matches!(error, CatalogError::InvalidIntegrationTypeId { .. }),
                "{id}: {message}"
            );
            assert!(message.contains("slack.<"), "{message}");
        }
    }

    #[test]
    fn a_duplicate_integration_type_id_is_refused_within_and_across_services() {
        let (error, message) = refused(|v| {
            let copy = v["services"][0]["integration_types"][0].clone();
            v["services"][0]["integration_types"]
                .as_array_mut()
                .unwrap()
                .push(copy);
        });
        assert!(matches!(
            error,
            CatalogError::DuplicateIntegrationType { .. }
        ));
        assert!(message.contains("slack.post_monitor_results"), "{message}");
        // Across services: a second "slack"-prefixed service is impossible
        // without a duplicate service id, so the service check fires first.
        let (error, _) = refused(|v| {
            let copy = v["services"][0].clone();
            v["services"].as_array_mut().unwrap().push(copy);
        });
        assert!(matches!(error, CatalogError::DuplicateService { .. }));
    }

    #[test]
    fn an_invalid_field_name_is_refused_in_credentials_and_config() {
        let (error, message) =
            refused(|v| v["services"][0]["credential_fields"][0]["name"] = json!("Access-Token"));
        assert!(matches!(error, CatalogError::InvalidFieldName { .. }));
        assert!(
            message.contains("credential fields of service \"slack\""),
            "{message}"
        );
        let (error, message) = refused(|v| {
            v["services"][0]["integration_types"][0]["config_fields"][0]["name"] = json!("")
        });
        assert!(matches!(error, CatalogError::InvalidFieldName { .. }));
        assert!(message.contains("slack.post_monitor_results"), "{message}");
    }

    #[test]
    fn a_duplicate_field_name_is_refused_within_one_list() {
        let (error, message) = refused(|v| {
            let copy = v["services"][0]["credential_fields"][0].clone();
            v["services"][0]["credential_fields"]
                .as_array_mut()
                .unwrap()
                .push(copy);
        });
        assert!(matches!(error, CatalogError::DuplicateField { .. }));
        assert!(message.contains("\"access_token\""), "{message}");
        // The same name in credentials and config is fine.
        assert!(
            load(
                |v| v["services"][0]["integration_types"][0]["config_fields"][0]["name"] =
                    json!("access_token")
            )
            .is_ok()
        );
    }

    #[test]
    fn a_secret_config_field_is_refused() {
        let (error, message) = refused(|v| {
            v["services"][0]["integration_types"][0]["config_fields"][0]["secret"] = json!(true)
        });
        assert!(matches!(error, CatalogError::SecretConfigField { .. }));
        assert!(
            message.contains("\"channel\"") && message.contains("slack.post_monitor_results"),
            "{message}"
        );
    }

    #[test]
    fn a_service_without_credential_fields_is_refused() {
        let (error, message) = refused(|v| v["services"][1]["credential_fields"] = json!([]));
        assert!(matches!(error, CatalogError::NoCredentialFields { .. }));
        assert!(message.contains("\"datadog\""), "{message}");
    }

    #[test]
    fn a_service_without_integration_types_is_refused() {
        let (error, message) = refused(|v| v["services"][1]["integration_types"] = json!([]));
        assert!(matches!(error, CatalogError::NoIntegrationTypes { .. }));
        assert!(message.contains("\"datadog\""), "{message}");
    }

    #[test]
    fn every_service_declares_its_verification_and_a_bad_one_is_refused() {
        for service in Catalog::builtin().services() {
            let v = &service.verification;
            assert!(
                v.call.is_some() != v.not_verifiable.is_some(),
                "{} must declare a call or why not",
                service.id
            );
        }
        let (error, _) = refused(|v| {
            v["services"][0]
                .as_object_mut()
                .unwrap()
                .remove("verification");
        });
        assert!(matches!(error, CatalogError::Parse(_)), "{error:?}");
        let (error, message) = refused(|v| {
            v["services"][0]["verification"]["call"]["headers"] = json!({"X": "{nope}"})
        });
        assert!(
            matches!(error, CatalogError::InvalidVerification { .. }),
            "{error:?}"
        );
        assert!(message.contains("\"slack\""), "{message}");
    }

    #[test]
    fn empty_display_names_and_descriptions_are_refused() {
        let edits: [(Edit, &str); 5] = [
            (
                |v| v["services"][0]["display_name"] = json!(""),
                "service \"slack\"",
            ),
            (
                |v| v["services"][0]["credential_fields"][0]["display_name"] = json!(" "),
                "\"access_token\"",
            ),
            (
                |v| v["services"][0]["integration_types"][0]["display_name"] = json!(""),
                "slack.post_monitor_results",
            ),
            (
                |v| v["services"][0]["integration_types"][0]["description"] = json!(""),
                "description",
            ),
            (
                |v| {
                    v["services"][0]["integration_types"][0]["config_fields"][0]["display_name"] =
                        json!("")
                },
                "\"channel\"",
            ),
        ];
        for (edit, expected) in edits {
            let (error, message) = refused(edit);
            assert!(matches!(error, CatalogError::EmptyText { .. }), "{message}");
            assert!(message.contains(expected), "{message}");
        }
    }

    #[test]
    fn a_long_offending_id_is_truncated_in_the_message() {
        let id = format!("Z{}", "a".repeat(500));
        let (_, message) = refused(|v| v["services"][0]["id"] = json!(id));
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn check_fields_accepts_a_complete_map() {
        let fields = [field("token", true, true), field("scope", false, false)];
        assert_eq!(
            check_fields(&fields, &values(&[("token", "t")]), 8, 16),
            Ok(())
        );
        assert_eq!(
            check_fields(&fields, &values(&[("token", "t"), ("scope", "")]), 8, 16),
            Ok(())
        );
    }

    #[test]
    fn check_fields_reports_a_missing_required_field() {
        let fields = [field("token", true, true), field("scope", false, false)];
        let problems = check_fields(&fields, &values(&[("scope", "repo")]), 8, 16).unwrap_err();
        assert_eq!(
            problems,
            vec![FieldProblem {
                field: "token".into(),
                description: "field \"token\" is required but missing".into()
            }]
        );
    }

    #[test]
    fn check_fields_reports_an_empty_required_value() {
        let fields = [field("token", true, true)];
        for value in ["", "  \t"] {
            let problems = check_fields(&fields, &values(&[("token", value)]), 8, 16).unwrap_err();
            assert_eq!(problems.len(), 1);
            assert_eq!(problems[0].field, "token");
            assert!(problems[0].description.contains("empty"));
        }
    }

    #[test]
    fn check_fields_reports_an_unknown_key() {
        let fields = [field("token", false, true)];
        let problems = check_fields(&fields, &values(&[("tokn", "x")]), 8, 16).unwrap_err();
        assert_eq!(
            problems,
            vec![FieldProblem {
                field: "tokn".into(),
                description: "field \"tokn\" is not a known field".into()
            }]
        );
    }

    #[test]
    fn check_fields_reports_too_many_entries_on_the_whole_map() {
        let fields = [
            field("a", false, false),
            field("b", false, false),
            field("c", false, false),
        ];
        let problems = check_fields(
            &fields,
            &values(&[("a", "1"), ("b", "2"), ("c", "3")]),
            2,
            16,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "");
        assert!(problems[0].description.contains("at most 2"));
        assert_eq!(problems[0].path("config"), "config");
    }

    #[test]
    fn check_fields_reports_a_too_long_key_truncated() {
        let key = "k".repeat(65);
        let problems = check_fields(&[], &values(&[(&key, "v")]), 8, 16).unwrap_err();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field, "k".repeat(64));
        assert!(
            problems[0]
                .description
                .contains("longer than 64 characters")
        );
        assert!(!problems[0].description.contains(&key));
        // Exactly 64 is allowed as a key length (it is then only unknown).
        let key = "k".repeat(64);
        let problems = check_fields(&[], &values(&[(&key, "v")]), 8, 16).unwrap_err();
        assert!(problems[0].description.contains("not a known field"));
    }

    #[test]
    fn check_fields_reports_a_too_long_value_counted_in_bytes() {
        let fields = [field("token", true, true)];
        assert_eq!(
            check_fields(&fields, &values(&[("token", "1234")]), 8, 4),
            Ok(())
        );
        let problems = check_fields(&fields, &values(&[("token", "12345")]), 8, 4).unwrap_err();
        assert_eq!(
            problems,
            vec![FieldProblem {
                field: "token".into(),
                description: "field \"token\" has a value longer than 4 bytes".into()
            }]
        );
        // Three characters but six bytes.
        assert!(check_fields(&fields, &values(&[("token", "ééé")]), 8, 4).is_err());
    }

    #[test]
    fn check_fields_returns_several_problems_in_a_stable_order() {
        let fields = [
            field("z_required", true, false),
            field("a_required", true, true),
            field("m", false, false),
        ];
        let submitted = values(&[
            ("a_required", ""),
            ("b_unknown", "x"),
            ("m", "far too long"),
            ("c_unknown", "y"),
        ]);
        let problems = check_fields(&fields, &submitted, 3, 4).unwrap_err();
        let summary: Vec<(&str, &str)> = problems
            .iter()
            .map(|p| (p.field.as_str(), p.description.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("", "at most 3 fields may be submitted, got 4"),
                ("z_required", "field \"z_required\" is required but missing"),
                ("a_required", "field \"a_required\" is required but empty"),
                ("b_unknown", "field \"b_unknown\" is not a known field"),
                ("c_unknown", "field \"c_unknown\" is not a known field"),
                ("m", "field \"m\" has a value longer than 4 bytes"),
            ]
        );
        assert_eq!(problems[1].path("credentials"), "credentials.z_required");
        assert_eq!(
            check_fields(&fields, &submitted, 3, 4).unwrap_err(),
            problems
        );
    }

    #[test]
    fn a_canary_secret_value_never_appears_in_any_problem() {
        const CANARY: &str = "CANARY-s3cr3t-7f1d";
        let fields = [field("token", true, true), field("other", true, true)];
        let long_key = format!("{}{CANARY}", "k".repeat(70));
        let long_value = format!("{CANARY}{}", "x".repeat(100));
        let submitted = values(&[
            ("token", &long_value),
            ("unknown", CANARY),
            (&long_key, CANARY),
            ("other", &format!("  {CANARY}  ")),
        ]);
        let problems = check_fields(&fields, &submitted, 1, 16).unwrap_err();
        assert!(problems.len() >= 4, "{problems:?}");
        for problem in &problems {
            assert!(!problem.description.contains("CANARY"), "{problem:?}");
            assert!(!problem.field.contains("CANARY"), "{problem:?}");
            assert!(!format!("{problem:?}").contains("s3cr3t"), "{problem:?}");
        }
    }
}
