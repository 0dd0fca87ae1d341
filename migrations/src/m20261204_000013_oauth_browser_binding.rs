//! The browser an OAuth sign-in was opened in: the SHA-256 of the random value its cookie
//! holds, set once when the sign-in URL is opened through the hub (`POST /oauth/start`); the
//! callback completes the authorization only for the browser that holds it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE oauth_authorizations ADD COLUMN browser_hash VARCHAR(64)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE oauth_authorizations DROP COLUMN browser_hash")
            .await?;
        Ok(())
    }
}
