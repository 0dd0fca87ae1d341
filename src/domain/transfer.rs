//! Handing an installed app or an integration over to another person of the team (an admin's
//! act, for when the one who set it up leaves): the owner changes; the creator stays.

use super::context::{Audited, Done};
use super::error::{Error, Result};
use super::installed_apps::InstalledApps;
use super::integrations::Integrations;
use super::model::{Actor, AuditAction, InstalledApp, Integration};
use super::types::{AppName, IntegrationName, Owner};

impl InstalledApps {
    /// Makes `new_owner` the owner of an installed app.
    #[tracing::instrument(skip_all, fields(installed_app = %name))]
    pub async fn transfer_installed_app(
        &self,
        actor: &Actor,
        name: &AppName,
        new_owner: Owner,
    ) -> Result<InstalledApp> {
        let audited = Audited::app(AuditAction::InstalledAppTransfer, name);
        let row = self
            .ctx()
            .write(actor, audited, async move |w| {
                let mut row = w.lock_app(name).await?;
                let expected = row.version;
                row.owner = new_owner.into_inner();
                row.version += 1;
                row.update_time = self.ctx().now();
                if !w.tx().await?.update_app(row.clone(), expected).await? {
                    return Err(Error::internal("locked installed app changed"));
                }
                Ok(Done::Commit(row))
            })
            .await?;
        tracing::info!("installed app transferred");
        self.app_with_count(&row).await
    }
}

impl Integrations {
    /// Makes `new_owner` the owner of an integration, with an INTEGRATION_UPDATED event.
    #[tracing::instrument(skip_all, fields(integration = %name))]
    pub async fn transfer_integration(
        &self,
        actor: &Actor,
        name: &IntegrationName,
        new_owner: Owner,
    ) -> Result<Integration> {
        let audited = Audited::integration(AuditAction::IntegrationTransfer, name);
        self.ctx()
            .write(actor, audited, async move |w| {
                let row = w.lock_integration(name).await?;
                let mut integration = Integration::from_row(&row)?;
                integration.owner = new_owner.into_inner();
                Ok(Done::Commit(self.save_update(w, row, integration).await?))
            })
            .await
    }
}
