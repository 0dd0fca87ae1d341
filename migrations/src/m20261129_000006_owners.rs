//! Owners: who is responsible for an installed app or an integration. Existing records are
//! owned by their creator.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLES: [&str; 2] = ["installed_apps", "integrations"];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for table in TABLES {
            db.execute_unprepared(&format!(
                "ALTER TABLE {table} ADD COLUMN owner TEXT NOT NULL DEFAULT ''"
            ))
            .await?;
            db.execute_unprepared(&format!("UPDATE {table} SET owner = creator"))
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for table in TABLES {
            db.execute_unprepared(&format!("ALTER TABLE {table} DROP COLUMN owner"))
                .await?;
        }
        Ok(())
    }
}
