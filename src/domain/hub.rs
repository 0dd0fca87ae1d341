//! The rules of the seed, as operations: each checks the caller, reads, decides, and writes
//! the change and its events in one transaction.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::crypto::{Aad, Credentials, KeyRing};
use crate::store::{
    After, AppRow, IntegrationFilter, IntegrationRow, NewEvent, StateChange, Store, StoreError, Tx,
};

use super::catalog::{Catalog, FieldDef, ServiceDef, check_fields};
use super::error::{Error, FieldViolation, Precondition, Result};
use super::model::{
    Actor, AppState, AuditAction, BrokenReason, EventKind, InstalledApp, Integration,
    IntegrationState, Role, config_json, etag,
};
use super::types::{
    AppName, ConnectedTo, Cursor, DisplayName, IdempotencyKey, IntegrationName, Page, PageSize,
    PageToken, ParentRef, RejectionDetail, TeamId, new_id,
};

/// Most credential entries an app or integration may hold.
pub const MAX_CREDENTIAL_ENTRIES: usize = 20;
/// Longest credential value, in bytes (OAuth access tokens can be a few KiB).
pub const MAX_CREDENTIAL_VALUE: usize = 8192;
/// Most config entries of an integration.
pub const MAX_CONFIG_ENTRIES: usize = 50;
/// Longest config value, in bytes.
pub const MAX_CONFIG_VALUE: usize = 2048;

/// Where time comes from: injected, so tests can control it.
pub trait Clock: Send + Sync {
    /// Microseconds since the Unix epoch.
    fn now_micros(&self) -> i64;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_micros(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(now.as_micros()).unwrap_or(i64::MAX)
    }
}

/// A new installed app, parsed.
pub struct NewApp {
    pub service: String,
    pub display_name: DisplayName,
    pub connected_to: ConnectedTo,
    pub credentials: Credentials,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// Changes to an installed app; `None` leaves a field as it is.
pub struct AppChanges {
    pub etag: Option<String>,
    pub display_name: Option<DisplayName>,
    pub connected_to: Option<ConnectedTo>,
    pub credentials: Option<Credentials>,
}

/// How a new integration authenticates.
pub enum Binding {
    App(AppName),
    Own {
        service: String,
        credentials: Credentials,
    },
}

/// A new integration, parsed.
pub struct NewIntegration {
    pub type_id: String,
    pub display_name: DisplayName,
    pub config: BTreeMap<String, String>,
    pub binding: Binding,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// Changes to an integration.
pub struct IntegrationChanges {
    pub etag: Option<String>,
    pub display_name: Option<DisplayName>,
    pub config: Option<BTreeMap<String, String>>,
}

/// How to reauthenticate a broken integration.
pub enum Reauth {
    App(AppName),
    Credentials(Credentials),
}

/// What ResolveIntegrationCredentials answers.
pub struct Resolved {
    pub integration: Integration,
    pub credentials: Credentials,
}

/// The integration-hub domain: the catalog, the key ring and the store.
pub struct Hub {
    store: Store,
    keys: Arc<KeyRing>,
    catalog: Arc<Catalog>,
    clock: Arc<dyn Clock>,
}

pub(super) fn app_owner(id: &str) -> String {
    format!("installedApps/{id}")
}

pub(super) fn integration_owner(id: &str) -> String {
    format!("integrations/{id}")
}

fn not_found_app(name: &AppName) -> Error {
    Error::NotFound {
        kind: AppName::KIND,
        name: name.to_string(),
    }
}

fn not_found_integration(name: &IntegrationName) -> Error {
    Error::NotFound {
        kind: IntegrationName::KIND,
        name: name.to_string(),
    }
}

/// SHA-256 (hex) of the non-secret content of a create request: what a retry with the same
/// idempotency key must repeat. Parts are length-prefixed so no two requests share a text.
fn fingerprint(parts: &[&str]) -> String {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        context.update(&(part.len() as u64).to_be_bytes());
        context.update(part.as_bytes());
    }
    context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A create that reuses an idempotency key must be a retry of the same request (AIP-155).
fn same_request(stored: &Option<String>, wanted: &str) -> Result<()> {
    match stored {
        Some(stored) if stored != wanted => Err(Error::IdempotencyKeyReused),
        _ => Ok(()),
    }
}

fn check_etag(given: &Option<String>, version: i64) -> Result<()> {
    match given {
        Some(given) if *given != etag(version) => Err(Error::EtagMismatch(
            "the etag does not match the current version; read the resource again".into(),
        )),
        _ => Ok(()),
    }
}

/// Checks submitted values against catalog fields, naming each problem under `prefix`.
fn check_values(
    prefix: &str,
    fields: &[FieldDef],
    values: &BTreeMap<String, String>,
    max_entries: usize,
    max_value: usize,
) -> Result<()> {
    check_fields(fields, values, max_entries, max_value).map_err(|problems| {
        Error::Invalid(
            problems
                .iter()
                .map(|p| FieldViolation::new(p.path(prefix), p.description.clone()))
                .collect(),
        )
    })
}

impl Hub {
    pub fn new(
        store: Store,
        keys: Arc<KeyRing>,
        catalog: Arc<Catalog>,
        clock: Arc<dyn Clock>,
    ) -> Hub {
        Hub {
            store,
            keys,
            catalog,
            clock,
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The team a request with this `parent` is about. Another team's parent is refused.
    pub fn team_of_parent(&self, actor: &Actor, parent: &ParentRef) -> Result<TeamId> {
        match (parent, &actor.team) {
            (ParentRef::Own, Some(own)) => Ok(own.clone()),
            (ParentRef::Team(team), _) if actor.sees(team) => Ok(team.clone()),
            (ParentRef::Own | ParentRef::AllTeams, None) => Err(Error::invalid(
                "parent",
                "a token for every team must name the team: teams/{team}",
            )),
            _ => Err(Error::PermissionDenied(
                "the caller may not act on that team".into(),
            )),
        }
    }

    /// The team a watch covers: one team, or every team (`None`) for an all-teams service.
    pub fn watch_scope(&self, actor: &Actor, parent: &ParentRef) -> Result<Option<TeamId>> {
        match parent {
            ParentRef::AllTeams if actor.team.is_none() => Ok(None),
            ParentRef::Own if actor.team.is_none() => Ok(None),
            ParentRef::AllTeams => Err(Error::PermissionDenied(
                "only a service token for every team may watch every team".into(),
            )),
            _ => self.team_of_parent(actor, parent).map(Some),
        }
    }

    fn service(&self, id: &str, field: &str) -> Result<&ServiceDef> {
        self.catalog
            .service(id)
            .ok_or_else(|| Error::invalid(field, "is not a service of the catalog"))
    }

    fn seal(&self, team: &TeamId, owner: &str, credentials: &Credentials) -> Result<Vec<u8>> {
        let aad = Aad {
            team: team.as_str(),
            owner,
        };
        Ok(self.keys.seal_credentials(&aad, credentials)?)
    }

    pub(super) fn now(&self) -> i64 {
        self.clock.now_micros()
    }

    fn event(
        &self,
        kind: EventKind,
        integration: &Integration,
        reason: Option<BrokenReason>,
        actor: &Actor,
    ) -> Result<NewEvent> {
        Ok(NewEvent {
            event_id: new_id(),
            team: integration.team.clone(),
            kind: kind.as_str().to_owned(),
            integration_id: integration.id.clone(),
            installed_app_id: integration.installed_app_id.clone(),
            reason: reason.map(|r| r.as_str().to_owned()),
            actor: actor.subject.clone(),
            time: integration.update_time,
            snapshot: serde_json::to_string(integration).map_err(|e| Error::Internal(e.into()))?,
        })
    }

    async fn app_with_count(&self, row: &AppRow) -> Result<InstalledApp> {
        let team = TeamId::parse(&row.team).map_err(|_| Error::internal("stored team id"))?;
        let counts = self
            .store
            .count_integrations(team.as_str(), std::slice::from_ref(&row.id))
            .await?;
        InstalledApp::from_row(row, counts.get(&row.id).copied().unwrap_or(0))
    }

    // ---- installed apps ----

    pub async fn create_installed_app(
        &self,
        actor: &Actor,
        team: TeamId,
        input: NewApp,
    ) -> Result<InstalledApp> {
        let audit_team = team.clone();
        let result = self.create_installed_app_tx(actor, team, input).await;
        let resource = audit_team.resource_name();
        self.audit_failure(
            actor,
            &audit_team,
            AuditAction::InstalledAppCreate,
            resource,
            result,
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(team = %team, service = %input.service))]
    async fn create_installed_app_tx(
        &self,
        actor: &Actor,
        team: TeamId,
        input: NewApp,
    ) -> Result<InstalledApp> {
        let service = self.service(&input.service, "installed_app.service")?;
        check_values(
            "credentials",
            &service.credential_fields,
            input.credentials.expose(),
            MAX_CREDENTIAL_ENTRIES,
            MAX_CREDENTIAL_VALUE,
        )?;
        let fingerprint = input.idempotency_key.as_ref().map(|_| {
            fingerprint(&[
                "installed_app",
                &service.id,
                input.display_name.as_str(),
                input.connected_to.as_str(),
            ])
        });
        if let (Some(request_id), Some(fingerprint)) = (&input.idempotency_key, &fingerprint)
            && let Some(row) = self
                .store
                .find_app_by_request(team.as_str(), request_id.as_str())
                .await?
        {
            same_request(&row.request_fingerprint, fingerprint)?;
            return self.app_with_count(&row).await;
        }
        let id = new_id();
        let now = self.now();
        let sealed = self.seal(&team, &app_owner(&id), &input.credentials)?;
        let row = AppRow {
            id,
            team: team.as_str().to_owned(),
            service: service.id.clone(),
            display_name: input.display_name.into_inner(),
            connected_to: input.connected_to.into_inner(),
            creator: actor.subject.clone(),
            state: AppState::Active.as_str().to_owned(),
            key_version: crate::crypto::KeyRing::sealed_key_version(&sealed)? as i32,
            credentials: sealed,
            request_id: input
                .idempotency_key
                .as_ref()
                .map(|r| r.as_str().to_owned()),
            request_fingerprint: fingerprint.clone(),
            version: 1,
            create_time: now,
            update_time: now,
        };
        let tx = self.store.begin_write().await?;
        match tx.insert_app(row.clone()).await {
            Ok(()) => {
                let name = AppName::new(team.clone(), row.id.clone());
                tx.append_audit(self.audit_success(
                    actor,
                    &team,
                    AuditAction::InstalledAppCreate,
                    name.to_string(),
                ))
                .await?;
                tx.commit().await?
            }
            // A concurrent retry with the same request id won: answer with its app.
            Err(StoreError::Conflict) if input.idempotency_key.is_some() => {
                drop(tx);
                let request_id = input
                    .idempotency_key
                    .as_ref()
                    .map(|r| r.as_str())
                    .unwrap_or("");
                return match self
                    .store
                    .find_app_by_request(team.as_str(), request_id)
                    .await?
                {
                    Some(existing) => {
                        same_request(
                            &existing.request_fingerprint,
                            &row.request_fingerprint.unwrap_or_default(),
                        )?;
                        self.app_with_count(&existing).await
                    }
                    None => Err(Error::internal("request id conflict without a row")),
                };
            }
            Err(err) => return Err(err.into()),
        }
        tracing::info!(installed_app = %row.id, "installed app created");
        InstalledApp::from_row(&row, 0)
    }

    pub async fn get_installed_app(&self, actor: &Actor, name: &AppName) -> Result<InstalledApp> {
        if !actor.sees(&name.team) {
            return Err(not_found_app(name));
        }
        let (row, count) = self
            .store
            .get_app_with_count(name.team.as_str(), &name.id)
            .await?
            .ok_or_else(|| not_found_app(name))?;
        InstalledApp::from_row(&row, count)
    }

    pub async fn list_installed_apps(
        &self,
        team: &TeamId,
        page_size: PageSize,
        page_token: Option<PageToken>,
    ) -> Result<Page<InstalledApp>> {
        let after = page_token.map(|t| After {
            create_time: t.create_time,
            id: t.id,
        });
        let mut rows = self
            .store
            .list_apps(team.as_str(), after.as_ref(), page_size.get() + 1)
            .await?;
        let more = rows.len() as u64 > page_size.get();
        rows.truncate(page_size.get() as usize);
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let counts = self.store.count_integrations(team.as_str(), &ids).await?;
        let items = rows
            .iter()
            .map(|r| InstalledApp::from_row(r, counts.get(&r.id).copied().unwrap_or(0)))
            .collect::<Result<Vec<_>>>()?;
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => PageToken {
                create_time: last.create_time,
                id: last.id.clone(),
            }
            .encode(APPS_LISTING),
            _ => String::new(),
        };
        Ok(Page {
            items,
            next_page_token,
        })
    }

    pub async fn update_installed_app(
        &self,
        actor: &Actor,
        name: &AppName,
        changes: AppChanges,
    ) -> Result<InstalledApp> {
        let result = self.update_installed_app_tx(actor, name, changes).await;
        self.audit_failure(
            actor,
            &name.team,
            AuditAction::InstalledAppUpdate,
            name.to_string(),
            result,
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(installed_app = %name))]
    async fn update_installed_app_tx(
        &self,
        actor: &Actor,
        name: &AppName,
        changes: AppChanges,
    ) -> Result<InstalledApp> {
        if !actor.sees(&name.team) {
            return Err(not_found_app(name));
        }
        let mut tx = self.store.begin_write().await?;
        let mut row = tx
            .lock_app(name.team.as_str(), &name.id)
            .await?
            .ok_or_else(|| not_found_app(name))?;
        if actor.role != Role::Admin && row.creator != actor.subject {
            return Err(Error::PermissionDenied(
                "only an admin or the developer who set up the installed app may edit it".into(),
            ));
        }
        check_etag(&changes.etag, row.version)?;
        let expected = row.version;
        let now = self.now();
        if let Some(display_name) = changes.display_name {
            row.display_name = display_name.into_inner();
        }
        if let Some(connected_to) = changes.connected_to {
            row.connected_to = connected_to.into_inner();
        }
        let mut restored = Vec::new();
        if let Some(credentials) = &changes.credentials {
            let service = self.service(&row.service, "installed_app.service")?;
            check_values(
                "credentials",
                &service.credential_fields,
                credentials.expose(),
                MAX_CREDENTIAL_ENTRIES,
                MAX_CREDENTIAL_VALUE,
            )?;
            row.credentials = self.seal(&name.team, &app_owner(&row.id), credentials)?;
            row.key_version = KeyRing::sealed_key_version(&row.credentials)? as i32;
            row.state = AppState::Active.as_str().to_owned();
            // Re-auth in place: what broke because these credentials were rejected works again.
            let filter = IntegrationFilter {
                installed_app_id: Some(row.id.clone()),
                state: Some(IntegrationState::Broken.as_str().to_owned()),
                broken_reason: Some(BrokenReason::CredentialsRejected.as_str().to_owned()),
                app_bound_only: true,
            };
            restored = self
                .change_state(
                    &mut tx,
                    actor,
                    name.team.as_str(),
                    &filter,
                    restore(now, None),
                )
                .await?;
        }
        row.version += 1;
        row.update_time = now;
        if !tx.update_app(row.clone(), expected).await? {
            return Err(Error::EtagMismatch(
                "the installed app changed concurrently; read it again".into(),
            ));
        }
        tx.append_audit(self.audit_success(
            actor,
            &name.team,
            AuditAction::InstalledAppUpdate,
            name.to_string(),
        ))
        .await?;
        tx.commit().await?;
        tracing::info!(restored = restored.len(), "installed app updated");
        self.app_with_count(&row).await
    }

    /// Deletes an app and breaks its integrations, all in one transaction (rule 3). With
    /// `validate_only`, answers what would break and changes nothing.
    pub async fn delete_installed_app(
        &self,
        actor: &Actor,
        name: &AppName,
        etag: Option<String>,
        validate_only: bool,
    ) -> Result<Vec<String>> {
        let result = self
            .delete_installed_app_tx(actor, name, etag, validate_only)
            .await;
        // A preview changes nothing: it is a read, and reads are not audited.
        if validate_only {
            return result;
        }
        let action = AuditAction::InstalledAppDelete;
        self.audit_failure(actor, &name.team, action, name.to_string(), result)
            .await
    }

    #[tracing::instrument(skip_all, fields(installed_app = %name, validate_only))]
    async fn delete_installed_app_tx(
        &self,
        actor: &Actor,
        name: &AppName,
        etag: Option<String>,
        validate_only: bool,
    ) -> Result<Vec<String>> {
        if !actor.sees(&name.team) {
            return Err(not_found_app(name));
        }
        let team = name.team.as_str();
        let filter = IntegrationFilter {
            installed_app_id: Some(name.id.clone()),
            app_bound_only: true,
            ..Default::default()
        };
        let mut tx = self.store.begin_write().await?;
        let app = tx
            .lock_app(team, &name.id)
            .await?
            .ok_or_else(|| not_found_app(name))?;
        check_etag(&etag, app.version)?;
        if validate_only {
            let affected = tx.lock_integrations(team, &filter).await?;
            return Ok(affected
                .iter()
                .map(|r| format!("teams/{team}/integrations/{}", r.id))
                .collect());
        }
        let now = self.now();
        let detail = format!(
            "installed app \"{}\" ({}) was deleted by {}",
            app.display_name, name, actor.subject
        );
        let change = StateChange {
            state: IntegrationState::Broken.as_str().to_owned(),
            broken_reason: Some(BrokenReason::InstalledAppDeleted.as_str().to_owned()),
            broken_detail: Some(detail),
            broken_time: Some(now),
            installed_app_id: None,
            update_time: now,
        };
        let broken = self
            .change_state(&mut tx, actor, team, &filter, change)
            .await?;
        if !tx.delete_app(team, &name.id).await? {
            return Err(Error::internal("locked installed app vanished"));
        }
        tx.append_audit(self.audit_success(
            actor,
            &name.team,
            AuditAction::InstalledAppDelete,
            name.to_string(),
        ))
        .await?;
        tx.commit().await?;
        tracing::info!(broken = broken.len(), "installed app deleted");
        Ok(broken.iter().map(Integration::name).collect())
    }

    /// A service reports that the third party rejected an app's credentials (rule 6).
    pub async fn report_credentials_rejected(
        &self,
        actor: &Actor,
        name: &AppName,
        detail: RejectionDetail,
    ) -> Result<InstalledApp> {
        let result = self
            .report_credentials_rejected_tx(actor, name, detail)
            .await;
        self.audit_failure(
            actor,
            &name.team,
            AuditAction::InstalledAppReportRejected,
            name.to_string(),
            result,
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(installed_app = %name))]
    async fn report_credentials_rejected_tx(
        &self,
        actor: &Actor,
        name: &AppName,
        detail: RejectionDetail,
    ) -> Result<InstalledApp> {
        if !actor.sees(&name.team) {
            return Err(not_found_app(name));
        }
        let team = name.team.as_str();
        let mut tx = self.store.begin_write().await?;
        let mut row = tx
            .lock_app(team, &name.id)
            .await?
            .ok_or_else(|| not_found_app(name))?;
        let now = self.now();
        let detail = detail.into_inner();
        let detail = if detail.is_empty() {
            format!(
                "the third party rejected the credentials of installed app \"{}\"",
                row.display_name
            )
        } else {
            format!(
                "the third party rejected the credentials of installed app \"{}\": {detail}",
                row.display_name
            )
        };
        let filter = IntegrationFilter {
            installed_app_id: Some(name.id.clone()),
            state: Some(IntegrationState::Active.as_str().to_owned()),
            app_bound_only: true,
            ..Default::default()
        };
        let change = StateChange {
            state: IntegrationState::Broken.as_str().to_owned(),
            broken_reason: Some(BrokenReason::CredentialsRejected.as_str().to_owned()),
            broken_detail: Some(detail),
            broken_time: Some(now),
            installed_app_id: None,
            update_time: now,
        };
        let broken = self
            .change_state(&mut tx, actor, team, &filter, change)
            .await?;
        let expected = row.version;
        row.state = AppState::NeedsReauth.as_str().to_owned();
        row.version += 1;
        row.update_time = now;
        if !tx.update_app(row.clone(), expected).await? {
            return Err(Error::internal("locked installed app changed"));
        }
        tx.append_audit(self.audit_success(
            actor,
            &name.team,
            AuditAction::InstalledAppReportRejected,
            name.to_string(),
        ))
        .await?;
        tx.commit().await?;
        tracing::info!(broken = broken.len(), "credentials rejected");
        self.app_with_count(&row).await
    }

    /// Applies one state change to every integration matching `filter` and appends one event
    /// each; returns the integrations as they are after the change.
    async fn change_state(
        &self,
        tx: &mut Tx,
        actor: &Actor,
        team: &str,
        filter: &IntegrationFilter,
        change: StateChange,
    ) -> Result<Vec<Integration>> {
        let rows = tx.lock_integrations(team, filter).await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let changed = tx.change_integrations(team, filter, &change).await?;
        if changed != rows.len() as u64 {
            return Err(Error::internal(
                "bulk change touched other rows than it read",
            ));
        }
        let kind = if change.state == IntegrationState::Broken.as_str() {
            EventKind::Broken
        } else {
            EventKind::Restored
        };
        let reason = change
            .broken_reason
            .as_deref()
            .map(BrokenReason::parse)
            .transpose()?;
        let mut after = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        for mut row in rows {
            row.state = change.state.clone();
            row.broken_reason = change.broken_reason.clone();
            row.broken_detail = change.broken_detail.clone();
            row.broken_time = change.broken_time;
            row.update_time = change.update_time;
            row.version += 1;
            if let Some(app) = &change.installed_app_id {
                row.installed_app_id = Some(app.clone());
            }
            let integration = Integration::from_row(&row)?;
            events.push(self.event(kind, &integration, reason, actor)?);
            after.push(integration);
        }
        tx.append_events(events).await?;
        Ok(after)
    }

    // ---- integrations ----

    pub async fn create_integration(
        &self,
        actor: &Actor,
        team: TeamId,
        input: NewIntegration,
    ) -> Result<Integration> {
        let audit_team = team.clone();
        let result = self.create_integration_tx(actor, team, input).await;
        let resource = audit_team.resource_name();
        self.audit_failure(
            actor,
            &audit_team,
            AuditAction::IntegrationCreate,
            resource,
            result,
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(team = %team, integration_type = %input.type_id))]
    async fn create_integration_tx(
        &self,
        actor: &Actor,
        team: TeamId,
        input: NewIntegration,
    ) -> Result<Integration> {
        let Some((service, integration_type)) = self.catalog.integration_type(&input.type_id)
        else {
            return Err(Error::invalid(
                "integration.type",
                "is not an integration type of the catalog",
            ));
        };
        check_values(
            "integration.config",
            &integration_type.config_fields,
            &input.config,
            MAX_CONFIG_ENTRIES,
            MAX_CONFIG_VALUE,
        )?;
        if let Binding::Own {
            service: own_service,
            credentials,
        } = &input.binding
        {
            if *own_service != service.id {
                return Err(Error::invalid(
                    "integration.service",
                    "must be the service of the integration type",
                ));
            }
            check_values(
                "credentials",
                &service.credential_fields,
                credentials.expose(),
                MAX_CREDENTIAL_ENTRIES,
                MAX_CREDENTIAL_VALUE,
            )?;
        }
        let config = config_json(&input.config)?;
        let fingerprint = input.idempotency_key.as_ref().map(|_| {
            let binding = match &input.binding {
                Binding::App(app) => app.to_string(),
                Binding::Own { service, .. } => format!("own:{service}"),
            };
            fingerprint(&[
                "integration",
                &integration_type.id,
                input.display_name.as_str(),
                &config,
                &binding,
            ])
        });
        if let (Some(request_id), Some(fingerprint)) = (&input.idempotency_key, &fingerprint)
            && let Some(row) = self
                .store
                .find_integration_by_request(team.as_str(), request_id.as_str())
                .await?
        {
            same_request(&row.request_fingerprint, fingerprint)?;
            return Integration::from_row(&row);
        }
        let id = new_id();
        let now = self.now();
        let mut row = IntegrationRow {
            id: id.clone(),
            team: team.as_str().to_owned(),
            installed_app_id: None,
            service: service.id.clone(),
            type_id: integration_type.id.clone(),
            display_name: input.display_name.into_inner(),
            config,
            state: IntegrationState::Active.as_str().to_owned(),
            broken_reason: None,
            broken_detail: None,
            broken_time: None,
            own_credentials: None,
            key_version: None,
            creator: actor.subject.clone(),
            request_id: input
                .idempotency_key
                .as_ref()
                .map(|r| r.as_str().to_owned()),
            request_fingerprint: fingerprint.clone(),
            version: 1,
            create_time: now,
            update_time: now,
        };
        if let Binding::Own { credentials, .. } = &input.binding {
            let sealed = self.seal(&team, &integration_owner(&id), credentials)?;
            row.key_version = Some(KeyRing::sealed_key_version(&sealed)? as i32);
            row.own_credentials = Some(sealed);
        }
        let mut tx = self.store.begin_write().await?;
        if let Binding::App(app_name) = &input.binding {
            let app = self.bindable_app(&tx, &team, app_name).await?;
            if app.service != service.id {
                return Err(Error::invalid(
                    "integration.type",
                    "is not offered by the installed app's service",
                ));
            }
            row.installed_app_id = Some(app.id);
        }
        let integration = Integration::from_row(&row)?;
        match tx.insert_integration(row).await {
            Ok(()) => {}
            Err(StoreError::Conflict) if input.idempotency_key.is_some() => {
                drop(tx);
                let request_id = input
                    .idempotency_key
                    .as_ref()
                    .map(|r| r.as_str())
                    .unwrap_or("");
                return match self
                    .store
                    .find_integration_by_request(team.as_str(), request_id)
                    .await?
                {
                    Some(existing) => {
                        same_request(
                            &existing.request_fingerprint,
                            &fingerprint.unwrap_or_default(),
                        )?;
                        Integration::from_row(&existing)
                    }
                    None => Err(Error::internal("request id conflict without a row")),
                };
            }
            Err(err) => return Err(err.into()),
        }
        tx.append_events(vec![self.event(
            EventKind::Created,
            &integration,
            None,
            actor,
        )?])
        .await?;
        tx.append_audit(self.audit_success(
            actor,
            &team,
            AuditAction::IntegrationCreate,
            integration.name(),
        ))
        .await?;
        tx.commit().await?;
        tracing::info!(integration = %integration.id, "integration created");
        Ok(integration)
    }

    /// An app an integration may be bound to: in the same team, existing, and ACTIVE. Share-
    /// locked until commit, so it cannot be deleted (or its state change) under the new binding.
    async fn bindable_app(&self, tx: &Tx, team: &TeamId, name: &AppName) -> Result<AppRow> {
        // Another team's app answers exactly as a missing one (rule 7).
        if name.team != *team {
            return Err(not_found_app(name));
        }
        let app = tx
            .share_app(team.as_str(), &name.id)
            .await?
            .ok_or_else(|| not_found_app(name))?;
        if app.state != AppState::Active.as_str() {
            return Err(Error::precondition(
                Precondition::WrongState,
                "the installed app needs reauthentication; update its credentials first",
            ));
        }
        Ok(app)
    }

    pub async fn get_integration(
        &self,
        actor: &Actor,
        name: &IntegrationName,
    ) -> Result<Integration> {
        if !actor.sees(&name.team) {
            return Err(not_found_integration(name));
        }
        let row = self
            .store
            .get_integration(name.team.as_str(), &name.id)
            .await?
            .ok_or_else(|| not_found_integration(name))?;
        Integration::from_row(&row)
    }

    /// A page of integrations and the event cursor as of the same snapshot.
    pub async fn list_integrations(
        &self,
        team: &TeamId,
        installed_app: Option<AppName>,
        state: Option<IntegrationState>,
        page_size: PageSize,
        page_token: &str,
    ) -> Result<(Page<Integration>, Cursor)> {
        if let Some(app) = &installed_app
            && app.team != *team
        {
            return Err(Error::invalid(
                "installed_app",
                "must be an installed app of the parent team",
            ));
        }
        let listing = format!(
            "integrations:{}:{}",
            installed_app.as_ref().map(|a| a.id.as_str()).unwrap_or(""),
            state.map(|s| s.as_str()).unwrap_or("")
        );
        let token = PageToken::parse(page_token, &listing)
            .map_err(|problem| Error::invalid("page_token", problem))?;
        let filter = IntegrationFilter {
            installed_app_id: installed_app.map(|a| a.id),
            state: state.map(|s| s.as_str().to_owned()),
            ..Default::default()
        };
        let after = token.map(|t| After {
            create_time: t.create_time,
            id: t.id,
        });
        // Every change the listing does not show has an event after the cursor.
        let limit = page_size.get() + 1;
        let (mut rows, cursor) = self
            .store
            .list_integrations_at_cursor(team.as_str(), &filter, after.as_ref(), limit)
            .await?;
        let more = rows.len() as u64 > page_size.get();
        rows.truncate(page_size.get() as usize);
        let next_page_token = match (more, rows.last()) {
            (true, Some(last)) => PageToken {
                create_time: last.create_time,
                id: last.id.clone(),
            }
            .encode(&listing),
            _ => String::new(),
        };
        let items = rows
            .iter()
            .map(Integration::from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok((
            Page {
                items,
                next_page_token,
            },
            Cursor(cursor),
        ))
    }

    pub async fn update_integration(
        &self,
        actor: &Actor,
        name: &IntegrationName,
        changes: IntegrationChanges,
    ) -> Result<Integration> {
        let result = self.update_integration_tx(actor, name, changes).await;
        self.audit_failure(
            actor,
            &name.team,
            AuditAction::IntegrationUpdate,
            name.to_string(),
            result,
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(integration = %name))]
    async fn update_integration_tx(
        &self,
        actor: &Actor,
        name: &IntegrationName,
        changes: IntegrationChanges,
    ) -> Result<Integration> {
        if !actor.sees(&name.team) {
            return Err(not_found_integration(name));
        }
        let mut tx = self.store.begin_write().await?;
        let mut row = tx
            .lock_integration(name.team.as_str(), &name.id)
            .await?
            .ok_or_else(|| not_found_integration(name))?;
        check_etag(&changes.etag, row.version)?;
        let mut integration = Integration::from_row(&row)?;
        if let Some(display_name) = changes.display_name {
            integration.display_name = display_name.into_inner();
        }
        if let Some(config) = changes.config {
            let (_, integration_type) = self
                .catalog
                .integration_type(&integration.type_id)
                .ok_or_else(|| Error::internal("stored integration type left the catalog"))?;
            check_values(
                "integration.config",
                &integration_type.config_fields,
                &config,
                MAX_CONFIG_ENTRIES,
                MAX_CONFIG_VALUE,
            )?;
            integration.config = config;
        }
        let expected = row.version;
        integration.version += 1;
        integration.update_time = self.now();
        integration.apply_to(&mut row)?;
        if !tx.update_integration(row, expected).await? {
            return Err(Error::internal("locked integration changed"));
        }
        tx.append_events(vec![self.event(
            EventKind::Updated,
            &integration,
            None,
            actor,
        )?])
        .await?;
        tx.append_audit(self.audit_success(
            actor,
            &name.team,
            AuditAction::IntegrationUpdate,
            name.to_string(),
        ))
        .await?;
        tx.commit().await?;
        Ok(integration)
    }

    pub async fn delete_integration(
        &self,
        actor: &Actor,
        name: &IntegrationName,
        etag: Option<String>,
    ) -> Result<()> {
        let result = self.delete_integration_tx(actor, name, etag).await;
        self.audit_failure(
            actor,
            &name.team,
            AuditAction::IntegrationDelete,
            name.to_string(),
            result,
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(integration = %name))]
    async fn delete_integration_tx(
        &self,
        actor: &Actor,
        name: &IntegrationName,
        etag: Option<String>,
    ) -> Result<()> {
        if !actor.sees(&name.team) {
            return Err(not_found_integration(name));
        }
        let mut tx = self.store.begin_write().await?;
        let row = tx
            .lock_integration(name.team.as_str(), &name.id)
            .await?
            .ok_or_else(|| not_found_integration(name))?;
        check_etag(&etag, row.version)?;
        let mut integration = Integration::from_row(&row)?;
        integration.update_time = self.now();
        if !tx.delete_integration(name.team.as_str(), &name.id).await? {
            return Err(Error::internal("locked integration vanished"));
        }
        tx.append_events(vec![self.event(
            EventKind::Deleted,
            &integration,
            None,
            actor,
        )?])
        .await?;
        tx.append_audit(self.audit_success(
            actor,
            &name.team,
            AuditAction::IntegrationDelete,
            name.to_string(),
        ))
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Brings one broken integration back (rule 4).
    pub async fn reauthenticate_integration(
        &self,
        actor: &Actor,
        name: &IntegrationName,
        reauth: Reauth,
    ) -> Result<Integration> {
        let result = self
            .reauthenticate_integration_tx(actor, name, reauth)
            .await;
        self.audit_failure(
            actor,
            &name.team,
            AuditAction::IntegrationReauthenticate,
            name.to_string(),
            result,
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(integration = %name))]
    async fn reauthenticate_integration_tx(
        &self,
        actor: &Actor,
        name: &IntegrationName,
        reauth: Reauth,
    ) -> Result<Integration> {
        if !actor.sees(&name.team) {
            return Err(not_found_integration(name));
        }
        let mut tx = self.store.begin_write().await?;
        let mut row = tx
            .lock_integration(name.team.as_str(), &name.id)
            .await?
            .ok_or_else(|| not_found_integration(name))?;
        if row.state != IntegrationState::Broken.as_str() {
            return Err(Error::precondition(
                Precondition::WrongState,
                "the integration is not broken",
            ));
        }
        let now = self.now();
        match reauth {
            Reauth::App(app_name) => {
                let app = self.bindable_app(&tx, &name.team, &app_name).await?;
                if app.service != row.service {
                    return Err(Error::precondition(
                        Precondition::ServiceMismatch,
                        "the installed app is of another service than the integration",
                    ));
                }
                row.installed_app_id = Some(app.id);
                row.own_credentials = None;
                row.key_version = None;
            }
            Reauth::Credentials(credentials) => {
                let service = self.service(&row.service, "credentials")?;
                check_values(
                    "credentials.values",
                    &service.credential_fields,
                    credentials.expose(),
                    MAX_CREDENTIAL_ENTRIES,
                    MAX_CREDENTIAL_VALUE,
                )?;
                let sealed = self.seal(&name.team, &integration_owner(&row.id), &credentials)?;
                row.key_version = Some(KeyRing::sealed_key_version(&sealed)? as i32);
                row.own_credentials = Some(sealed);
                row.installed_app_id = None;
            }
        }
        let expected = row.version;
        row.state = IntegrationState::Active.as_str().to_owned();
        row.broken_reason = None;
        row.broken_detail = None;
        row.broken_time = None;
        row.version += 1;
        row.update_time = now;
        let integration = Integration::from_row(&row)?;
        if !tx.update_integration(row, expected).await? {
            return Err(Error::internal("locked integration changed"));
        }
        tx.append_events(vec![self.event(
            EventKind::Restored,
            &integration,
            None,
            actor,
        )?])
        .await?;
        tx.append_audit(self.audit_success(
            actor,
            &name.team,
            AuditAction::IntegrationReauthenticate,
            name.to_string(),
        ))
        .await?;
        tx.commit().await?;
        Ok(integration)
    }

    /// Rebinds every broken integration that used `from` onto `to`, in one transaction.
    /// Audited with `from` as the resource: the app whose broken integrations were rebound.
    pub async fn reauthenticate_integrations(
        &self,
        actor: &Actor,
        team: TeamId,
        from: AppName,
        to: AppName,
    ) -> Result<Vec<Integration>> {
        let audit_team = team.clone();
        let resource = from.to_string();
        let result = self
            .reauthenticate_integrations_tx(actor, team, from, to)
            .await;
        self.audit_failure(
            actor,
            &audit_team,
            AuditAction::IntegrationReauthenticateBulk,
            resource,
            result,
        )
        .await
    }

    #[tracing::instrument(skip_all, fields(from = %from, to = %to))]
    async fn reauthenticate_integrations_tx(
        &self,
        actor: &Actor,
        team: TeamId,
        from: AppName,
        to: AppName,
    ) -> Result<Vec<Integration>> {
        // Another team's app answers exactly as a missing one (rule 7).
        if from.team != team {
            return Err(not_found_app(&from));
        }
        if from == to {
            return Err(Error::invalid(
                "to_installed_app",
                "must differ from from_installed_app",
            ));
        }
        let mut tx = self.store.begin_write().await?;
        let target = self.bindable_app(&tx, &team, &to).await?;
        let filter = IntegrationFilter {
            installed_app_id: Some(from.id.clone()),
            state: Some(IntegrationState::Broken.as_str().to_owned()),
            app_bound_only: true,
            ..Default::default()
        };
        let candidates = tx.lock_integrations(team.as_str(), &filter).await?;
        if candidates.iter().any(|r| r.service != target.service) {
            return Err(Error::precondition(
                Precondition::ServiceMismatch,
                "the replacement installed app is of another service than the integrations",
            ));
        }
        let now = self.now();
        let restored = self
            .change_state(
                &mut tx,
                actor,
                team.as_str(),
                &filter,
                restore(now, Some(target.id.clone())),
            )
            .await?;
        tx.append_audit(self.audit_success(
            actor,
            &team,
            AuditAction::IntegrationReauthenticateBulk,
            from.to_string(),
        ))
        .await?;
        tx.commit().await?;
        tracing::info!(restored = restored.len(), "integrations reauthenticated");
        Ok(restored)
    }

    /// The credentials an active integration uses, for a service principal (rule 2).
    /// Every resolution is audited; the credentials are handed out only once the success
    /// record is committed.
    pub async fn resolve_credentials(
        &self,
        actor: &Actor,
        name: &IntegrationName,
    ) -> Result<Resolved> {
        let result = self.resolve_credentials_audited(actor, name).await;
        self.audit_failure(
            actor,
            &name.team,
            AuditAction::IntegrationResolveCredentials,
            name.to_string(),
            result,
        )
        .await
    }

    async fn resolve_credentials_audited(
        &self,
        actor: &Actor,
        name: &IntegrationName,
    ) -> Result<Resolved> {
        let resolved = self.open_integration_credentials(actor, name).await?;
        self.append_audit_now(self.audit_success(
            actor,
            &name.team,
            AuditAction::IntegrationResolveCredentials,
            name.to_string(),
        ))
        .await?;
        tracing::info!(
            actor = %actor.subject,
            integration = %name,
            request_id = %actor.request_id,
            "credentials resolved"
        );
        Ok(resolved)
    }

    #[tracing::instrument(skip_all, fields(integration = %name))]
    async fn open_integration_credentials(
        &self,
        actor: &Actor,
        name: &IntegrationName,
    ) -> Result<Resolved> {
        let integration_row = {
            if !actor.sees(&name.team) {
                return Err(not_found_integration(name));
            }
            self.store
                .get_integration(name.team.as_str(), &name.id)
                .await?
                .ok_or_else(|| not_found_integration(name))?
        };
        let integration = Integration::from_row(&integration_row)?;
        if integration.state != IntegrationState::Active {
            return Err(Error::precondition(
                Precondition::WrongState,
                "the integration is broken: there are no credentials to resolve",
            ));
        }
        let credentials = match (
            &integration_row.own_credentials,
            &integration.installed_app_id,
        ) {
            (Some(sealed), _) => {
                let owner = integration_owner(&integration.id);
                self.keys.open_credentials(
                    &Aad {
                        team: name.team.as_str(),
                        owner: &owner,
                    },
                    sealed,
                )?
            }
            (None, Some(app_id)) => {
                let app = self
                    .store
                    .get_app(name.team.as_str(), app_id)
                    .await?
                    .ok_or_else(|| Error::internal("active integration without its app"))?;
                let owner = app_owner(&app.id);
                self.keys.open_credentials(
                    &Aad {
                        team: name.team.as_str(),
                        owner: &owner,
                    },
                    &app.credentials,
                )?
            }
            (None, None) => return Err(Error::internal("integration without credentials")),
        };
        Ok(Resolved {
            integration,
            credentials,
        })
    }
}

const APPS_LISTING: &str = "installedApps";

/// Parses a page token of ListInstalledApps.
pub fn parse_apps_page_token(value: &str) -> std::result::Result<Option<PageToken>, String> {
    PageToken::parse(value, APPS_LISTING)
}

fn restore(now: i64, rebind_to: Option<String>) -> StateChange {
    StateChange {
        state: IntegrationState::Active.as_str().to_owned(),
        broken_reason: None,
        broken_detail: None,
        broken_time: None,
        installed_app_id: rebind_to,
        update_time: now,
    }
}
