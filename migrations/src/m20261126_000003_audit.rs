//! The audit log: who did what to which resource, how it ended, and under which request id.
//! Rows are appended in the same transaction as the change they record; nothing updates or
//! deletes them. `seq` orders them (newest first in listings) and is the page token's anchor.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The table, with `{SEQ}` standing for the backend's never-reused sequence column.
const TABLE: &str = r#"
CREATE TABLE audit_events (
    seq          {SEQ},
    id           VARCHAR(64)  NOT NULL,
    team         VARCHAR(64)  NOT NULL,
    actor        VARCHAR(256) NOT NULL,
    actor_team   VARCHAR(64)  NOT NULL,
    role         VARCHAR(16)  NOT NULL,
    action       VARCHAR(64)  NOT NULL,
    resource     VARCHAR(300) NOT NULL,
    outcome      VARCHAR(16)  NOT NULL,
    reason       VARCHAR(32),
    request_id   VARCHAR(128) NOT NULL,
    time         BIGINT       NOT NULL
);
CREATE UNIQUE INDEX audit_events_id ON audit_events (id);
CREATE INDEX audit_events_team_seq ON audit_events (team, seq);
CREATE INDEX audit_events_team_action_seq ON audit_events (team, action, seq);
CREATE INDEX audit_events_team_actor_seq ON audit_events (team, actor, seq);
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let seq = match manager.get_database_backend() {
            DatabaseBackend::Postgres => "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
            _ => "INTEGER PRIMARY KEY AUTOINCREMENT",
        };
        crate::execute_script(db, &TABLE.replace("{SEQ}", seq)).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS audit_events")
            .await?;
        Ok(())
    }
}
