//! Installed apps: create (idempotent with a key), read, list, edit (re-auth in place, rule
//! 5) and delete (rule 3 of docs/rules.md: the app goes and its integrations break, in one transaction).

use std::sync::Arc;

use crate::crypto::{Aad, Credentials};
use crate::store::{
    APP_WITH_COUNT, After, AppFilter, AppRow, AppWithCount, IntegrationCounts, IntegrationFilter,
};

use super::context::{Audited, Context, Done, check_etag, not_found_app};
use super::credentials::app_owner;
use super::credentials::{Idempotency, check_credentials, settle_insert};
use super::error::{Error, Result};
use super::keyed_reads::KeyedReads;
use super::model::{
    Actor, AppEventKind, AppState, AuditAction, BrokenReason, InstalledApp, Integration, Role,
};
use super::oauth::Authorizations;
use super::reauth::{Transition, change_state, restore_rejected};
use super::types::{
    AppName, ConnectedTo, DisplayName, IdempotencyKey, Page, PageRequest, TeamId, new_id,
};
use super::verify::apps::{Health, health_row};
use super::verify::scopes::put_health;
use super::verify::{Verdict, Verifier};

/// The installed apps' operations (this file, `suspension.rs`, `transfer.rs`, and the report
/// of rejected credentials in `reauth.rs`).
#[derive(Clone)]
pub struct InstalledApps {
    ctx: Arc<Context>,
    /// The grants of apps authorized through OAuth (their health, a refresh before a
    /// rejection is believed).
    authorizations: Authorizations,
    /// Verification of credentials with their provider (`verify/`).
    verifier: Verifier,
    /// Reads of apps the read cache cannot answer, batched (`keyed_reads.rs`).
    reads: Arc<KeyedReads<AppWithCount>>,
}

impl InstalledApps {
    pub(super) fn new(
        ctx: Arc<Context>,
        authorizations: Authorizations,
        verifier: Verifier,
    ) -> InstalledApps {
        InstalledApps {
            reads: Arc::new(KeyedReads::new(ctx.store().clone(), &APP_WITH_COUNT)),
            ctx,
            authorizations,
            verifier,
        }
    }

    pub(super) fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Attaches what reads show beside an app's row: its OAuth grant and its health.
    async fn attach(&self, team: &TeamId, apps: &mut [InstalledApp]) -> Result<()> {
        self.authorizations.attach_grants(team, apps).await?;
        self.attach_health(team, apps).await
    }

    pub(super) fn ctx(&self) -> &Context {
        &self.ctx
    }

    pub(super) fn authorizations(&self) -> &Authorizations {
        &self.authorizations
    }
}

/// What the page tokens of ListInstalledApps are bound to.
const APPS_LISTING: &str = "installedApps";

/// The filters of ListInstalledApps; `None` selects every value.
#[derive(Default)]
pub struct AppQuery {
    pub service: Option<String>,
    pub state: Option<AppState>,
    /// Only apps never used, or last used before this time (microseconds).
    pub unused_since: Option<i64>,
    /// Only apps this subject owns, or set up.
    pub owner: Option<String>,
    pub creator: Option<String>,
}

impl AppQuery {
    /// What a page token is bound to: a token of one filter is refused with another.
    fn listing(&self) -> String {
        if self.service.is_none() && self.state.is_none() && self.unused_since.is_none() {
            return APPS_LISTING.to_owned() + &people_listing(&self.owner, &self.creator);
        }
        format!(
            "{APPS_LISTING}:{}:{}:{}{}",
            self.service.as_deref().unwrap_or(""),
            self.state.map(|s| s.as_str()).unwrap_or(""),
            self.unused_since.map(|t| t.to_string()).unwrap_or_default(),
            people_listing(&self.owner, &self.creator)
        )
    }
}

/// The part of a listing's page-token binding that its owner and creator filters add: empty
/// without them, so tokens of the other filters stay as they were.
pub(super) fn people_listing(owner: &Option<String>, creator: &Option<String>) -> String {
    if owner.is_none() && creator.is_none() {
        return String::new();
    }
    // Length-prefixed: no subject can make two filters read as one.
    let part = |p: &Option<String>| {
        p.as_ref()
            .map_or("-".to_owned(), |s| format!("{}.{s}", s.len()))
    };
    format!("|owner:{}|creator:{}", part(owner), part(creator))
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

/// The detail a deleted app's integrations carry: it keeps the app's display name, so a
/// broken integration still says what it used.
pub(super) fn deleted_detail(app: &AppRow, name: &AppName, actor: &Actor) -> String {
    format!(
        "installed app \"{}\" ({}) was deleted by {}",
        app.display_name, name, actor.subject
    )
}

impl InstalledApps {
    /// An app and how many integrations use it with its credentials.
    pub(super) async fn app_with_count(&self, row: &AppRow) -> Result<InstalledApp> {
        let team = TeamId::parse(&row.team).map_err(|_| Error::internal("stored team id"))?;
        let counts = self
            .ctx()
            .store()
            .count_integrations(team.as_str(), std::slice::from_ref(&row.id))
            .await?;
        let mut app =
            InstalledApp::from_row(row, counts.get(&row.id).copied().unwrap_or_default())?;
        self.attach(&team, std::slice::from_mut(&mut app)).await?;
        Ok(app)
    }

    /// A new app's row: ACTIVE, set up and owned by `actor`, holding `credentials` sealed for
    /// it, with the idempotency key and fingerprint of the create that makes it, if any. An
    /// empty `connected_to` is the account the provider named when it verified them.
    pub(super) fn new_app_row(
        &self,
        actor: &Actor,
        team: &TeamId,
        service: &str,
        (display_name, connected_to): (DisplayName, ConnectedTo),
        (credentials, verdict): (&Credentials, &Verdict),
        create: Option<&Idempotency>,
    ) -> Result<AppRow> {
        let connected_to = match verdict {
            Verdict::Verified {
                account: Some(account),
                ..
            } if connected_to.as_str().is_empty() => {
                ConnectedTo::parse(account).unwrap_or(connected_to)
            }
            _ => connected_to,
        };
        let id = new_id();
        let now = self.ctx().now();
        let (sealed, key_version) = self.ctx().seal(team, &app_owner(&id), credentials)?;
        Ok(AppRow {
            id,
            team: team.as_str().to_owned(),
            service: service.to_owned(),
            display_name: display_name.into_inner(),
            connected_to: connected_to.into_inner(),
            creator: actor.subject.clone(),
            owner: actor.subject.clone(),
            last_used_time: None,
            state: AppState::Active,
            suspension_reason: None,
            resume_state: None,
            key_version,
            credentials: sealed,
            request_id: create.map(|c| c.key.as_str().to_owned()),
            request_fingerprint: create.map(|c| c.fingerprint.clone()),
            version: 1,
            create_time: now,
            update_time: now,
            usable_by: None,
            reauthorization_recommended: false,
        })
    }

    /// The app an earlier create with the same idempotency key made, if any.
    async fn app_created_before(
        &self,
        team: &TeamId,
        create: Option<&Idempotency>,
    ) -> Result<Option<InstalledApp>> {
        let Some(create) = create else {
            return Ok(None);
        };
        let found = self
            .ctx()
            .store()
            .find_app_by_request(team.as_str(), create.key.as_str())
            .await?;
        let stored_credentials = |row: &AppRow| -> Result<Option<Credentials>> {
            let owner = app_owner(&row.id);
            let aad = Aad {
                team: team.as_str(),
                owner: &owner,
            };
            Ok(Some(
                self.ctx().keys().open_credentials(&aad, &row.credentials)?,
            ))
        };
        match create.retry_of(found, stored_credentials)? {
            Some(row) => Ok(Some(self.app_with_count(&row).await?)),
            None => Ok(None),
        }
    }

    // The service is recorded once it is known to be a catalog id: a client's string of any
    // length or content never reaches a span field.
    #[tracing::instrument(skip_all, fields(team = %team, service = tracing::field::Empty))]
    pub async fn create_installed_app(
        &self,
        actor: &Actor,
        team: TeamId,
        input: NewApp,
    ) -> Result<InstalledApp> {
        let audited = Audited::new(AuditAction::InstalledAppCreate, &team, team.resource_name());
        let (app, created) = self
            .ctx()
            .write(actor, audited, async move |w| {
                let service = self
                    .ctx()
                    .service(&input.service, "installed_app.service")?;
                tracing::Span::current().record("service", service.id.as_str());
                check_credentials(service, "credentials", &input.credentials)?;
                super::policy::check_installable(w, actor, &team, &service.id, self.ctx().now())
                    .await?;
                let create = Idempotency::of(
                    self.ctx().keys(),
                    input.idempotency_key,
                    &[
                        "installed_app",
                        &service.id,
                        input.display_name.as_str(),
                        input.connected_to.as_str(),
                    ],
                    Some(&input.credentials),
                );
                if let Some(earlier) = self.app_created_before(&team, create.as_ref()).await? {
                    return Ok(Done::Unchanged((earlier, false)));
                }
                // Before the transaction begins: no lock is held while the provider answers.
                let verdict = self.verify_new(&service.id, &input.credentials).await?;
                let row = self.new_app_row(
                    actor,
                    &team,
                    &service.id,
                    (input.display_name, input.connected_to),
                    (&input.credentials, &verdict),
                    create.as_ref(),
                )?;
                let inserted = w.tx().await?.insert_app(row.clone()).await;
                let earlier = async |c: &Idempotency| self.app_created_before(&team, Some(c)).await;
                if let Some(earlier) = settle_insert(w, inserted, create.as_ref(), earlier).await? {
                    return Ok(Done::Unchanged((earlier, false)));
                }
                w.set_resource(AppName::new(team.clone(), row.id.clone()).to_string());
                w.app_event(AppEventKind::Created, &row, "")?;
                let mut app = InstalledApp::from_row(&row, IntegrationCounts::default())?;
                app.health = self.put_first_health(w, &row, &verdict).await?;
                Ok(Done::Commit((app, true)))
            })
            .await?;
        if created {
            tracing::info!(installed_app = %app.name.id, "installed app created");
        }
        Ok(app)
    }

    pub async fn get_installed_app(&self, actor: &Actor, name: &AppName) -> Result<InstalledApp> {
        if !actor.sees(&name.team) {
            return Err(not_found_app(name));
        }
        let team = name.team.as_str();
        let key = format!("app|{team}|{}", name.id);
        let app = self
            .ctx()
            .read_through_cache(team, key, InstalledApp::bytes, async || {
                let (row, count, verification) = self
                    .reads
                    .read(team, &name.id)
                    .await?
                    .ok_or_else(|| not_found_app(name))?;
                let mut app = InstalledApp::from_row(&row, count)?;
                // Its health came with it; its OAuth grant, where OAuth is configured, is read.
                app.health = verification.as_ref().map(Health::of);
                self.authorizations
                    .attach_grants(&name.team, std::slice::from_mut(&mut app))
                    .await?;
                Ok(app)
            })
            .await?;
        self.ctx()
            .audit_read(
                actor,
                &name.team,
                AuditAction::InstalledAppGet,
                name.to_string(),
            )
            .await;
        Ok((*app).clone())
    }

    pub async fn list_installed_apps(
        &self,
        actor: &Actor,
        team: &TeamId,
        query: AppQuery,
        page: PageRequest,
    ) -> Result<Page<InstalledApp>> {
        if let Some(service) = &query.service {
            self.ctx().service(service, "service")?;
        }
        let pages = self.ctx().pages(team, &query.listing());
        let after = pages.after(&page)?.map(After::from);
        let filter = AppFilter {
            service: query.service,
            state: query.state,
            unused_since: query.unused_since,
            owner: query.owner,
            creator: query.creator,
        };
        let mut rows = self
            .ctx()
            .store()
            .list_apps(
                team.as_str(),
                &filter,
                after.as_ref(),
                page.size.read_limit(),
            )
            .await?;
        let next_page_token = page.size.cut(&mut rows, |last| {
            pages.token_after(last.create_time, &last.id)
        });
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let counts = self
            .ctx()
            .store()
            .count_integrations(team.as_str(), &ids)
            .await?;
        let mut items = rows
            .iter()
            .map(|r| InstalledApp::from_row(r, counts.get(&r.id).copied().unwrap_or_default()))
            .collect::<Result<Vec<_>>>()?;
        self.attach(team, &mut items).await?;
        self.ctx()
            .audit_read(
                actor,
                team,
                AuditAction::InstalledAppList,
                format!("teams/{team}/installedApps"),
            )
            .await;
        Ok(Page {
            items,
            next_page_token,
        })
    }

    #[tracing::instrument(skip_all, fields(installed_app = %name))]
    pub async fn update_installed_app(
        &self,
        actor: &Actor,
        name: &AppName,
        changes: AppChanges,
    ) -> Result<InstalledApp> {
        let audited = Audited::app(AuditAction::InstalledAppUpdate, name);
        let (row, restored) = self
            .ctx()
            .write(actor, audited, async move |w| {
                // New credentials are verified before the transaction begins (no lock is
                // held while the provider answers); a rejection stores nothing.
                let verdict = match &changes.credentials {
                    Some(credentials) => self.verify_replacement(name, credentials).await?,
                    None => Verdict::Off,
                };
                let mut row = w.lock_app(name).await?;
                if actor.role != Role::Admin && row.owner != actor.subject {
                    return Err(Error::PermissionDenied(
                        "only an admin or the owner of the installed app may edit it".into(),
                    ));
                }
                check_etag(&changes.etag, row.version)?;
                let expected = row.version;
                let was_rejected = row.state == AppState::NeedsReauth;
                let now = self.ctx().now();
                if let Some(display_name) = changes.display_name {
                    row.display_name = display_name.into_inner();
                }
                if let Some(connected_to) = changes.connected_to {
                    row.connected_to = connected_to.into_inner();
                }
                let mut restored = Vec::new();
                if let Some(credentials) = &changes.credentials {
                    let service = self.ctx().service(&row.service, "installed_app.service")?;
                    check_credentials(service, "credentials", credentials)?;
                    (row.credentials, row.key_version) =
                        self.ctx()
                            .seal(&name.team, &app_owner(&row.id), credentials)?;
                    // Credentials entered by hand: no OAuth grant to refresh any more.
                    w.tx().await?.delete_grant(&row.id).await?;
                    row.reauthorization_recommended = false;
                    if row.state == AppState::Suspended {
                        // Editing a suspended app's credentials does not resume it: it will
                        // resume as ACTIVE, and what their rejection broke is restored then.
                        row.resume_state = Some(AppState::Active);
                    } else {
                        row.state = AppState::Active;
                    }
                }
                if changes.credentials.is_some() && row.state != AppState::Suspended {
                    // Re-auth in place: what broke because these credentials were rejected
                    // works again.
                    restored = restore_rejected(w, name.team.as_str(), &row.id, now).await?;
                }
                row.version += 1;
                row.update_time = now;
                if !w.tx().await?.update_app(row.clone(), expected).await? {
                    return Err(Error::EtagMismatch(
                        "the installed app changed concurrently; read it again".into(),
                    ));
                }
                if let Some(health) =
                    health_row(&row, &verdict, None, now, self.verifier.next_check(now))
                {
                    put_health(w, self.ctx().catalog(), &row, health, now).await?;
                }
                if changes.credentials.is_some() {
                    w.app_event(AppEventKind::CredentialsReplaced, &row, "")?;
                    if was_rejected && row.state == AppState::Active {
                        w.app_event(AppEventKind::Restored, &row, "new credentials")?;
                    }
                }
                Ok(Done::Commit((row, restored.len())))
            })
            .await?;
        tracing::info!(restored, "installed app updated");
        self.app_with_count(&row).await
    }

    /// Deletes an app and breaks its integrations, all in one transaction (rule 3 of docs/rules.md). With
    /// `validate_only`, answers what would break and changes nothing.
    #[tracing::instrument(skip_all, fields(installed_app = %name, validate_only))]
    pub async fn delete_installed_app(
        &self,
        actor: &Actor,
        name: &AppName,
        etag: Option<String>,
        validate_only: bool,
    ) -> Result<Vec<Integration>> {
        let team = name.team.as_str();
        let filter = IntegrationFilter {
            installed_app_id: Some(name.id.clone()),
            app_bound_only: true,
            ..Default::default()
        };
        if validate_only {
            // A preview changes nothing: it is a read, and reads are not audited. It locks
            // what the delete would, so it answers what a delete now would break.
            let mut draft = self.ctx().draft(actor);
            let app = draft.lock_app(name).await?;
            check_etag(&etag, app.version)?;
            let affected = draft.tx().await?.lock_integrations(team, &filter).await?;
            return affected.iter().map(Integration::from_row).collect();
        }
        let audited = Audited::app(AuditAction::InstalledAppDelete, name);
        let broken = self
            .ctx()
            .write(actor, audited, async move |w| {
                let app = w.lock_app(name).await?;
                check_etag(&etag, app.version)?;
                let now = self.ctx().now();
                let deleted = Transition::Break {
                    reason: BrokenReason::InstalledAppDeleted,
                    detail: deleted_detail(&app, name, actor),
                };
                let broken = change_state(w, team, &filter, &deleted, now).await?;
                if !w.tx().await?.delete_app(team, &name.id).await? {
                    return Err(Error::internal("locked installed app vanished"));
                }
                w.tx().await?.delete_grant(&name.id).await?;
                w.tx().await?.delete_verification(&name.id).await?;
                let gone = AppRow {
                    update_time: now,
                    ..app
                };
                w.app_event(AppEventKind::Deleted, &gone, "")?;
                Ok(Done::Commit(broken))
            })
            .await?;
        tracing::info!(broken = broken.len(), "installed app deleted");
        Ok(broken)
    }
}
