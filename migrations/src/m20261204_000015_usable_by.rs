//! Issue 25: who may build on an installed app. `usable_by` holds the subjects and groups
//! (JSON: `{"subjects": [...], "groups": [...]}`) that, besides admins, may create
//! integrations on the app or move integrations onto it; NULL: every developer of its team.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE installed_apps ADD COLUMN usable_by TEXT")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE installed_apps DROP COLUMN usable_by")
            .await?;
        Ok(())
    }
}
