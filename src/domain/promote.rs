//! Credentials kept as an installed app: saved while an integration is created
//! (`save_as_installed_app`, Postman's "securely store the authorization details as an
//! installed app") or promoted later from an integration's own credentials
//! (`PromoteIntegrationCredentials`), the integrations rebound to the new app and their own
//! copies erased, in one transaction.

use crate::crypto::{Aad, Credentials};
use crate::store::{AppRow, IntegrationCounts, IntegrationFilter, IntegrationRow};

use super::context::{Audited, Done, Write, check_etag};
use super::credentials::{credentials_fingerprint, integration_owner};
use super::error::{Error, Precondition, Result};
use super::integrations::Integrations;
use super::model::{Actor, AuditAction, InstalledApp, Integration, IntegrationState};
use super::types::{AppName, ConnectedTo, DisplayName, IntegrationName, TeamId};
use super::verify::Verdict;

/// The installed app to make of an integration's credentials.
pub struct SaveAs {
    pub display_name: DisplayName,
    pub connected_to: ConnectedTo,
}

/// PromoteIntegrationCredentials, parsed.
pub struct Promote {
    pub name: IntegrationName,
    pub save_as: SaveAs,
    /// Also rebind the team's other integrations of the service with identical credentials.
    pub include_matching: bool,
    pub etag: Option<String>,
}

impl Integrations {
    /// The credentials of its own an integration holds, opened; `None` if it uses an app's.
    pub(super) fn own_credentials(
        &self,
        team: &TeamId,
        row: &IntegrationRow,
    ) -> Result<Option<Credentials>> {
        let Some(sealed) = &row.own_credentials else {
            return Ok(None);
        };
        let owner = integration_owner(&row.id);
        let aad = Aad {
            team: team.as_str(),
            owner: &owner,
        };
        Ok(Some(self.ctx().keys().open_credentials(&aad, sealed)?))
    }

    /// Inserts, in `w`'s transaction, a new app of `service` holding `credentials`, created
    /// and owned by `actor`, with the health of `verdict` (what `InstalledApps::verify_new`
    /// found them, as for CreateInstalledApp, before the transaction began); its creation
    /// gets an audit record of its own.
    pub(super) async fn save_as_app(
        &self,
        w: &mut Write<'_>,
        actor: &Actor,
        (team, service): (&TeamId, &str),
        save_as: SaveAs,
        (credentials, verdict): (&Credentials, &Verdict),
    ) -> Result<AppRow> {
        let row = self.apps().new_app_row(
            actor,
            team,
            service,
            (save_as.display_name, save_as.connected_to),
            (credentials, verdict),
            None,
        )?;
        w.tx().await?.insert_app(row.clone()).await?;
        self.apps().put_first_health(w, &row, verdict).await?;
        w.also_audit(
            AuditAction::InstalledAppCreate,
            AppName::new(team.clone(), row.id.clone()).to_string(),
        );
        Ok(row)
    }

    /// Binds the locked `row`, which has credentials of its own, to the app `app_id` and
    /// erases its own copy, as its next version (INTEGRATION_UPDATED).
    async fn rebind_to_app(
        &self,
        w: &mut Write<'_>,
        mut row: IntegrationRow,
        app_id: &str,
    ) -> Result<Integration> {
        let mut integration = Integration::from_row(&row)?;
        integration.installed_app_id = Some(app_id.to_owned());
        integration.own_credentials = false;
        row.own_credentials = None;
        row.key_version = None;
        self.save_update(w, row, integration).await
    }

    /// Stores the integration `name`'s own credentials as a new installed app and binds it
    /// (and, with `include_matching`, every other integration of the team on the same
    /// service whose own credentials have the same keyed fingerprint) to that app.
    #[tracing::instrument(skip_all, fields(integration = %input.name))]
    pub async fn promote_integration_credentials(
        &self,
        actor: &Actor,
        input: Promote,
    ) -> Result<(InstalledApp, Vec<Integration>)> {
        let audited = Audited::integration(AuditAction::IntegrationPromoteCredentials, &input.name);
        let name = input.name.clone();
        // The credentials are verified before the transaction begins (no lock is held while
        // the provider answers), as CreateInstalledApp's are; they are read again under the
        // lock, and a change since is a concurrent edit.
        let seen = self
            .ctx()
            .store()
            .get_integration(name.team.as_str(), &name.id)
            .await?;
        let verdict = match &seen {
            Some(seen) if actor.sees(&name.team) => match self.own_credentials(&name.team, seen)? {
                Some(credentials) => self.apps().verify_new(&seen.service, &credentials).await?,
                None => Verdict::Off,
            },
            _ => Verdict::Off,
        };
        self.ctx().write(actor, audited, async move |w| {
            let team = name.team.clone();
            let row = w.lock_integration(&name).await?;
            check_etag(&input.etag, row.version)?;
            let Some(credentials) = self.own_credentials(&team, &row)? else {
                return Err(Error::precondition(
                    Precondition::WrongState,
                    "the integration uses an installed app's credentials; only credentials of its own can be promoted",
                ));
            };
            if seen.as_ref().map(|s| &s.own_credentials) != Some(&row.own_credentials) {
                return Err(Error::EtagMismatch(
                    "the integration's credentials changed concurrently; promote them again".into(),
                ));
            }
            let service = row.service.clone();
            super::policy::check_installable(w, actor, &team, &service, self.ctx().now()).await?;
            let app = self
                .save_as_app(w, actor, (&team, &service), input.save_as, (&credentials, &verdict))
                .await?;
            let mut rows = Vec::new();
            if input.include_matching {
                let wanted = credentials_fingerprint(self.ctx().keys(), &credentials);
                let filter = IntegrationFilter {
                    own_credentials_of: Some(service),
                    ..Default::default()
                };
                for other in w.tx().await?.lock_integrations(team.as_str(), &filter).await? {
                    if other.id == row.id {
                        continue;
                    }
                    let theirs = self.own_credentials(&team, &other)?;
                    let matches = theirs
                        .as_ref()
                        .and_then(|c| credentials_fingerprint(self.ctx().keys(), c))
                        .is_some_and(|f| Some(&f) == wanted.as_ref());
                    if matches {
                        rows.push(other);
                    }
                }
            }
            let mut rebound = vec![self.rebind_to_app(w, row, &app.id).await?];
            for other in rows {
                let integration = self.rebind_to_app(w, other, &app.id).await?;
                w.also_audit(
                    AuditAction::IntegrationPromoteCredentials,
                    integration.name(),
                );
                rebound.push(integration);
            }
            let counts = IntegrationCounts {
                total: rebound.len() as i64,
                active: rebound
                    .iter()
                    .filter(|i| i.state == IntegrationState::Active)
                    .count() as i64,
            };
            Ok(Done::Commit((InstalledApp::from_row(&app, counts)?, rebound)))
        })
        .await
    }
}
