//! The event log's retention watermark: every event with a sequence number at or below
//! `pruned_through` has been pruned, so a cursor below it cannot be resumed.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(
            "CREATE TABLE event_log_state (id INTEGER NOT NULL PRIMARY KEY, pruned_through BIGINT NOT NULL)",
        )
        .await?;
        db.execute_unprepared("INSERT INTO event_log_state (id, pruned_through) VALUES (1, 0)")
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS event_log_state")
            .await?;
        Ok(())
    }
}
