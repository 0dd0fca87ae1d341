//! Integrations: create (bound to an installed app or with credentials of their own;
//! idempotent with a key), read, list (with the event cursor as of the listing), edit and
//! delete, each change with its event.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::crypto::Credentials;
use crate::store::{
    After, AppRow, INTEGRATION, INTEGRATION_WITH_APP, IntegrationFilter, IntegrationRow,
    IntegrationWithApp, Tx,
};

use super::audit_batch::AuditBatch;
use super::binding::{check_bindable, check_offers};
use super::catalog::IntegrationTypeDef;
use super::context::{
    Audited, Context, Done, Write, check_etag, check_values, not_found_app, not_found_integration,
};
use super::create_batch::{CreateBatch, QueuedCreate};
use super::credentials::integration_owner;
use super::credentials::{Idempotency, check_credentials, settle_insert};
use super::error::{Error, Result};
use super::installed_apps::InstalledApps;
use super::keyed_reads::KeyedReads;
use super::model::{Actor, AuditAction, EventKind, Integration, IntegrationState, config_json};
use super::oauth::Authorizations;
use super::promote::SaveAs;
use super::types::{
    AppName, Cursor, DisplayName, IdempotencyKey, IntegrationName, Listing, Page, PageRequest,
    TeamId, new_id,
};

/// The integrations' operations (this file, `reauth.rs`, `promote.rs`, `credentials.rs`,
/// `transfer.rs`). Creates bound to an app and the records of credential resolutions are
/// each written in group commits it owns.
pub struct Integrations {
    ctx: Arc<Context>,
    /// The apps integrations are bound to and save their credentials as.
    apps: InstalledApps,
    /// Refreshes a nearly expired token before a resolution hands it out.
    authorizations: Authorizations,
    /// Group commit of creates bound to an installed app (`create_batch.rs`).
    creates: CreateBatch,
    /// Group commit of the audit records of credential resolutions (`audit_batch.rs`).
    resolutions: AuditBatch,
    /// Reads of integrations the read cache cannot answer, batched (`keyed_reads.rs`): alone
    /// (GetIntegration) and with their app and grant (a resolution's).
    reads: KeyedReads<IntegrationRow>,
    plans: KeyedReads<IntegrationWithApp>,
}

impl Integrations {
    pub(super) fn new(
        ctx: Arc<Context>,
        apps: InstalledApps,
        authorizations: Authorizations,
    ) -> Integrations {
        Integrations {
            creates: CreateBatch::new(ctx.store().clone()),
            resolutions: AuditBatch::new(ctx.store().clone()),
            reads: KeyedReads::new(ctx.store().clone(), &INTEGRATION),
            plans: KeyedReads::new(ctx.store().clone(), &INTEGRATION_WITH_APP),
            ctx,
            apps,
            authorizations,
        }
    }

    pub(super) fn ctx(&self) -> &Context {
        &self.ctx
    }

    pub(super) fn apps(&self) -> &InstalledApps {
        &self.apps
    }

    pub(super) fn authorizations(&self) -> &Authorizations {
        &self.authorizations
    }

    /// Reads of an integration with its app and grant (a resolution's), batched.
    pub(super) fn plans(&self) -> &KeyedReads<IntegrationWithApp> {
        &self.plans
    }

    pub(super) fn resolutions(&self) -> &AuditBatch {
        &self.resolutions
    }
}

/// Most config entries of an integration.
pub const MAX_CONFIG_ENTRIES: usize = 50;
/// Longest config value, in bytes.
pub const MAX_CONFIG_VALUE: usize = 2048;

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
    /// Store the credentials of its own as a new installed app and bind it to that app
    /// (only with [`Binding::Own`]).
    pub save_as: Option<SaveAs>,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// Changes to an integration.
pub struct IntegrationChanges {
    pub etag: Option<String>,
    pub display_name: Option<DisplayName>,
    pub config: Option<BTreeMap<String, String>>,
}

/// Filters of an integration listing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IntegrationQuery {
    pub installed_app: Option<AppName>,
    pub state: Option<IntegrationState>,
    pub owner: Option<String>,
    pub creator: Option<String>,
}

impl IntegrationQuery {
    /// What a page token is bound to: a token of one filter is refused with another.
    pub(super) fn listing(&self) -> String {
        format!(
            "integrations:{}:{}{}",
            self.installed_app
                .as_ref()
                .map(|a| a.id.as_str())
                .unwrap_or(""),
            self.state.map(|s| s.as_str()).unwrap_or(""),
            super::installed_apps::people_listing(&self.owner, &self.creator)
        )
    }
}

/// Checks an integration's config against the fields its type declares.
fn check_config(
    integration_type: &IntegrationTypeDef,
    config: &BTreeMap<String, String>,
) -> Result<()> {
    check_values(
        "integration.config",
        &integration_type.config_fields,
        config,
        MAX_CONFIG_ENTRIES,
        MAX_CONFIG_VALUE,
    )
}

impl Integrations {
    /// An app an integration may be bound to: in the same team and [`check_bindable`].
    /// Share-locked until commit, so it cannot be deleted (or its state change) under the new
    /// binding.
    pub(super) async fn bindable_app(
        &self,
        actor: &Actor,
        tx: &Tx,
        team: &TeamId,
        name: &AppName,
    ) -> Result<AppRow> {
        // Another team's app answers exactly as a missing one (rule 7 of docs/rules.md).
        if name.team != *team {
            return Err(not_found_app(name));
        }
        let app = tx.share_app(team.as_str(), &name.id).await?;
        check_bindable(actor, name, app.as_ref())?;
        app.ok_or_else(|| not_found_app(name))
    }

    /// A new integration bound to the app `app` of its team, written with the creates
    /// queued with it (`create_batch.rs`): committed with its event and its success record,
    /// or refused by the same rules as a create written alone. `None` when it was not
    /// written and the caller goes the long way: its idempotency key is taken (the long way
    /// finds the earlier create), or the batch failed for a reason of its own.
    async fn create_with_others(
        &self,
        w: &Write<'_>,
        actor: &Actor,
        app: &AppName,
        kind: &IntegrationTypeDef,
        row: &IntegrationRow,
    ) -> Result<Option<Integration>> {
        let mut row = row.clone();
        row.installed_app_id = Some(app.id.clone());
        let integration = Integration::from_row(&row)?;
        let event = w.new_event(EventKind::Created, &integration, None)?;
        let record = self.ctx().audit_success(
            actor,
            &app.team,
            AuditAction::IntegrationCreate,
            integration.name(),
        );
        let written = self
            .creates
            .create(QueuedCreate {
                actor: actor.clone(),
                app: app.clone(),
                required_scopes: kind.required_scopes.clone(),
                row,
                event,
                record,
            })
            .await?;
        Ok(written.then_some(integration))
    }

    /// The integration an earlier create with the same idempotency key made, if any.
    async fn integration_created_before(
        &self,
        team: &TeamId,
        create: Option<&Idempotency>,
    ) -> Result<Option<Integration>> {
        let Some(create) = create else {
            return Ok(None);
        };
        let found = self
            .ctx()
            .store()
            .find_integration_by_request(team.as_str(), create.key.as_str())
            .await?;
        let stored_credentials = |row: &IntegrationRow| self.own_credentials(team, row);
        create
            .retry_of(found, stored_credentials)?
            .map(|row| Integration::from_row(&row))
            .transpose()
    }

    // Recorded once it is known to be a catalog id (see `create_installed_app`). A debug
    // span: at info, creating it and recording the type makes the JSON layer format the
    // span's fields again on every create (its cost: BENCHMARKS.md); the request's span and
    // the "integration created" line (with the id) still say what happened.
    #[tracing::instrument(
        level = "debug",
        skip_all,
        fields(team = %team, integration_type = tracing::field::Empty)
    )]
    pub async fn create_integration(
        &self,
        actor: &Actor,
        team: TeamId,
        input: NewIntegration,
    ) -> Result<Integration> {
        let audited = Audited::new(AuditAction::IntegrationCreate, &team, team.resource_name());
        let (integration, created) = self
            .ctx()
            .write(actor, audited, async move |w| {
                let Some((service, integration_type)) =
                    self.ctx().catalog().integration_type(&input.type_id)
                else {
                    return Err(Error::invalid(
                        "integration.type",
                        "is not an integration type of the catalog",
                    ));
                };
                tracing::Span::current().record("integration_type", integration_type.id.as_str());
                check_config(integration_type, &input.config)?;
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
                    check_credentials(service, "credentials", credentials)?;
                }
                let config = config_json(&input.config)?;
                let binding = match (&input.binding, &input.save_as) {
                    (Binding::App(app), _) => app.to_string(),
                    (Binding::Own { service, .. }, None) => format!("own:{service}"),
                    (Binding::Own { service, .. }, Some(save_as)) => format!(
                        "saved:{service}:{}:{}",
                        save_as.display_name.as_str(),
                        save_as.connected_to.as_str()
                    ),
                };
                let own_credentials = match &input.binding {
                    Binding::Own { credentials, .. } => Some(credentials),
                    Binding::App(_) => None,
                };
                let create = Idempotency::of(
                    self.ctx().keys(),
                    input.idempotency_key,
                    &[
                        "integration",
                        &integration_type.id,
                        input.display_name.as_str(),
                        &config,
                        &binding,
                    ],
                    own_credentials,
                );
                if let Some(earlier) = self
                    .integration_created_before(&team, create.as_ref())
                    .await?
                {
                    return Ok(Done::Unchanged((earlier, false)));
                }
                let id = new_id();
                let now = self.ctx().now();
                let mut row = IntegrationRow {
                    id: id.clone(),
                    team: team.as_str().to_owned(),
                    installed_app_id: None,
                    service: service.id.clone(),
                    type_id: integration_type.id.clone(),
                    display_name: input.display_name.into_inner(),
                    config,
                    state: IntegrationState::Active,
                    broken_reason: None,
                    broken_detail: None,
                    broken_time: None,
                    own_credentials: None,
                    key_version: None,
                    creator: actor.subject.clone(),
                    owner: actor.subject.clone(),
                    last_used_time: None,
                    request_id: create.as_ref().map(|c| c.key.as_str().to_owned()),
                    request_fingerprint: create.as_ref().map(|c| c.fingerprint.clone()),
                    version: 1,
                    create_time: now,
                    update_time: now,
                };
                match &input.binding {
                    Binding::Own { credentials, .. } => match input.save_as {
                        Some(save_as) => {
                            // Verified as CreateInstalledApp's are: a rejection stores nothing.
                            let verdict = self.apps.verify_new(&service.id, credentials).await?;
                            let app = self
                                .save_as_app(
                                    w,
                                    actor,
                                    (&team, &service.id),
                                    save_as,
                                    (credentials, &verdict),
                                )
                                .await?;
                            row.installed_app_id = Some(app.id);
                        }
                        None => {
                            let (sealed, key_version) =
                                self.ctx()
                                    .seal(&team, &integration_owner(&id), credentials)?;
                            row.key_version = Some(key_version);
                            row.own_credentials = Some(sealed);
                        }
                    },
                    Binding::App(app_name) => {
                        if app_name.team == team
                            && let Some(created) = self
                                .create_with_others(w, actor, app_name, integration_type, &row)
                                .await?
                        {
                            return Ok(Done::AlreadyCommitted((created, true)));
                        }
                        self.apps.check_scopes(app_name, integration_type).await?;
                        let app =
                            (self.bindable_app(actor, w.tx().await?, &team, app_name)).await?;
                        check_offers(&app, &service.id)?;
                        row.installed_app_id = Some(app.id);
                    }
                }
                let integration = Integration::from_row(&row)?;
                let inserted = w.tx().await?.insert_integration(row).await;
                let earlier =
                    async |c: &Idempotency| self.integration_created_before(&team, Some(c)).await;
                if let Some(earlier) = settle_insert(w, inserted, create.as_ref(), earlier).await? {
                    return Ok(Done::Unchanged((earlier, false)));
                }
                w.event(EventKind::Created, &integration, None)?;
                w.set_resource(integration.name());
                Ok(Done::Commit((integration, true)))
            })
            .await?;
        if created {
            tracing::info!(integration = %integration.id, "integration created");
        }
        Ok(integration)
    }

    /// An integration's stored row, if the caller may see it (another team's answers exactly
    /// as a missing one, rule 7 of docs/rules.md); read with concurrent reads of others.
    pub(super) async fn integration_row(
        &self,
        actor: &Actor,
        name: &IntegrationName,
    ) -> Result<IntegrationRow> {
        if !actor.sees(&name.team) {
            return Err(not_found_integration(name));
        }
        self.reads
            .read(name.team.as_str(), &name.id)
            .await?
            .ok_or_else(|| not_found_integration(name))
    }

    pub async fn get_integration(
        &self,
        actor: &Actor,
        name: &IntegrationName,
    ) -> Result<Integration> {
        if !actor.sees(&name.team) {
            return Err(not_found_integration(name));
        }
        let team = name.team.as_str();
        let key = format!("integration|{team}|{}", name.id);
        let integration = self
            .ctx()
            .read_through_cache(team, key, Integration::bytes, async || {
                Integration::from_row(&self.integration_row(actor, name).await?)
            })
            .await?;
        let (ctx, read) = (self.ctx(), AuditAction::IntegrationGet);
        ctx.audit_read(actor, &name.team, read, name.to_string())
            .await;
        Ok((*integration).clone())
    }

    /// A page of integrations and the event cursor as of the same snapshot (every change the
    /// page does not show has an event after the cursor). A page kept in the read cache
    /// keeps its cursor: both are as of the same read.
    pub async fn list_integrations(
        &self,
        actor: &Actor,
        team: &TeamId,
        query: IntegrationQuery,
        page: PageRequest,
    ) -> Result<Arc<Listing<Integration>>> {
        let pages = self.ctx().pages(team, &query.listing());
        // The token is checked before the cache is asked: a bad one is refused either way.
        pages.after(&page)?;
        let key = format!(
            "integrations|{team}|{}|{}|{}",
            query.listing(),
            page.size.get(),
            page.token
        );
        // Counted twice: the items, and their encoding the API keeps beside them.
        let bytes = |listed: &Listing<Integration>| {
            let page = &listed.page;
            2 * page.items.iter().map(Integration::bytes).sum::<usize>()
                + page.next_page_token.len()
        };
        let listed = self
            .ctx()
            .read_through_cache(team.as_str(), key, bytes, async || {
                self.read_integrations(team, query, page).await
            })
            .await?;
        let (ctx, read) = (self.ctx(), AuditAction::IntegrationList);
        ctx.audit_read(actor, team, read, format!("teams/{team}/integrations"))
            .await;
        Ok(listed)
    }

    async fn read_integrations(
        &self,
        team: &TeamId,
        query: IntegrationQuery,
        page: PageRequest,
    ) -> Result<Listing<Integration>> {
        if let Some(app) = &query.installed_app
            && app.team != *team
        {
            return Err(Error::invalid(
                "installed_app",
                "must be an installed app of the parent team",
            ));
        }
        let pages = self.ctx().pages(team, &query.listing());
        let after = pages.after(&page)?.map(After::from);
        let filter = IntegrationFilter {
            installed_app_id: query.installed_app.map(|a| a.id),
            state: query.state,
            owner: query.owner,
            creator: query.creator,
            ..Default::default()
        };
        // Every change the listing does not show has an event after the cursor.
        let (mut rows, cursor) = self
            .ctx()
            .store()
            .list_integrations_at_cursor(
                team.as_str(),
                &filter,
                after.as_ref(),
                page.size.read_limit(),
            )
            .await?;
        let next_page_token = page.size.cut(&mut rows, |last| {
            pages.token_after(last.create_time, &last.id)
        });
        let items = rows
            .iter()
            .map(Integration::from_row)
            .collect::<Result<Vec<_>>>()?;
        let page = Page {
            items,
            next_page_token,
        };
        Ok(Listing::new(page, Cursor(cursor)))
    }

    #[tracing::instrument(skip_all, fields(integration = %name))]
    pub async fn update_integration(
        &self,
        actor: &Actor,
        name: &IntegrationName,
        changes: IntegrationChanges,
    ) -> Result<Integration> {
        let audited = Audited::integration(AuditAction::IntegrationUpdate, name);
        self.ctx()
            .write(actor, audited, async move |w| {
                let row = w.lock_integration(name).await?;
                check_etag(&changes.etag, row.version)?;
                let mut integration = Integration::from_row(&row)?;
                if let Some(display_name) = changes.display_name {
                    integration.display_name = display_name.into_inner();
                }
                if let Some(config) = changes.config {
                    let (_, integration_type) = self
                        .ctx()
                        .catalog()
                        .integration_type(&integration.type_id)
                        .ok_or_else(|| {
                            Error::internal("stored integration type left the catalog")
                        })?;
                    check_config(integration_type, &config)?;
                    integration.config = config;
                }
                Ok(Done::Commit(self.save_update(w, row, integration).await?))
            })
            .await
    }

    /// Writes `integration`, changed from the locked `row`, as its next version, with an
    /// INTEGRATION_UPDATED event.
    pub(super) async fn save_update(
        &self,
        w: &mut Write<'_>,
        mut row: IntegrationRow,
        mut integration: Integration,
    ) -> Result<Integration> {
        let expected = row.version;
        integration.version += 1;
        integration.update_time = self.ctx().now();
        integration.apply_to(&mut row)?;
        if !w.tx().await?.update_integration(row, expected).await? {
            return Err(Error::internal("locked integration changed"));
        }
        w.event(EventKind::Updated, &integration, None)?;
        Ok(integration)
    }

    #[tracing::instrument(skip_all, fields(integration = %name))]
    pub async fn delete_integration(
        &self,
        actor: &Actor,
        name: &IntegrationName,
        etag: Option<String>,
    ) -> Result<()> {
        let audited = Audited::integration(AuditAction::IntegrationDelete, name);
        self.ctx()
            .write(actor, audited, async move |w| {
                let row = w.lock_integration(name).await?;
                check_etag(&etag, row.version)?;
                let mut integration = Integration::from_row(&row)?;
                integration.update_time = self.ctx().now();
                if !w
                    .tx()
                    .await?
                    .delete_integration(name.team.as_str(), &name.id)
                    .await?
                {
                    return Err(Error::internal("locked integration vanished"));
                }
                w.event(EventKind::Deleted, &integration, None)?;
                Ok(Done::Commit(()))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_integration_page_token_is_bound_to_the_listings_filters() {
        let app = AppName::parse("teams/acme/installedApps/a1").unwrap();
        let queries = [
            IntegrationQuery::default(),
            IntegrationQuery {
                installed_app: Some(app.clone()),
                ..Default::default()
            },
            IntegrationQuery {
                state: Some(IntegrationState::Broken),
                ..Default::default()
            },
            IntegrationQuery {
                installed_app: Some(app),
                state: Some(IntegrationState::Active),
                ..Default::default()
            },
            IntegrationQuery {
                owner: Some("dana".into()),
                ..Default::default()
            },
            IntegrationQuery {
                creator: Some("dana".into()),
                ..Default::default()
            },
            IntegrationQuery {
                owner: Some("a|creator:-".into()),
                ..Default::default()
            },
        ];
        let listings: Vec<String> = queries.iter().map(IntegrationQuery::listing).collect();
        assert_eq!(listings[0], "integrations::");
        assert_eq!(listings[3], "integrations:a1:ACTIVE");
        // A page token is sealed for its exact listing text (`tokens.rs`), so distinct
        // filters must give distinct texts.
        for (i, a) in listings.iter().enumerate() {
            for (j, b) in listings.iter().enumerate() {
                assert_eq!(a == b, i == j, "{a} vs {b}");
            }
        }
    }
}
