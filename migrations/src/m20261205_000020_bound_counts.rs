//! GetInstalledApp counts the integrations that use an app with its credentials, and the
//! active ones among them, on every read the cache cannot answer. Through `integrations_app`
//! each count visited every such integration's row (its state and whether it carries its own
//! credentials are not in that index). This partial index holds exactly the rows counted and
//! their state, so both counts are read from the index alone.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_script(
            manager.get_connection(),
            "CREATE INDEX integrations_bound ON integrations (team, installed_app_id, state) \
             WHERE own_credentials IS NULL",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute_script(manager.get_connection(), "DROP INDEX integrations_bound").await
    }
}
