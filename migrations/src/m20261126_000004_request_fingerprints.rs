//! What a create with a `request_id` asked for (a SHA-256 of its non-secret content), so a
//! retry is told apart from a different request that reuses the id.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for table in ["installed_apps", "integrations"] {
            db.execute_unprepared(&format!(
                "ALTER TABLE {table} ADD COLUMN request_fingerprint VARCHAR(64)"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for table in ["installed_apps", "integrations"] {
            db.execute_unprepared(&format!(
                "ALTER TABLE {table} DROP COLUMN request_fingerprint"
            ))
            .await?;
        }
        Ok(())
    }
}
