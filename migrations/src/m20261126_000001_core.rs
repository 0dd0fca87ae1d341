//! Installed apps, integrations and the event outbox.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Tables shared by both backends, with `{BLOB}` standing for the binary column type.
const TABLES: &str = r#"
CREATE TABLE installed_apps (
    id            VARCHAR(64)  NOT NULL PRIMARY KEY,
    team          VARCHAR(64)  NOT NULL,
    service       VARCHAR(64)  NOT NULL,
    display_name  VARCHAR(200) NOT NULL,
    connected_to  VARCHAR(200) NOT NULL,
    creator       VARCHAR(256) NOT NULL,
    state         VARCHAR(16)  NOT NULL,
    credentials   {BLOB}       NOT NULL,
    key_version   INTEGER      NOT NULL,
    request_id    VARCHAR(100),
    version       BIGINT       NOT NULL,
    create_time   BIGINT       NOT NULL,
    update_time   BIGINT       NOT NULL
);
CREATE INDEX installed_apps_team_order ON installed_apps (team, create_time, id);
CREATE UNIQUE INDEX installed_apps_request ON installed_apps (team, request_id);
CREATE TABLE integrations (
    id               VARCHAR(64)  NOT NULL PRIMARY KEY,
    team             VARCHAR(64)  NOT NULL,
    installed_app_id VARCHAR(64),
    service          VARCHAR(64)  NOT NULL,
    type_id          VARCHAR(130) NOT NULL,
    display_name     VARCHAR(200) NOT NULL,
    config           TEXT         NOT NULL,
    state            VARCHAR(16)  NOT NULL,
    broken_reason    VARCHAR(32),
    broken_detail    VARCHAR(1200),
    broken_time      BIGINT,
    own_credentials  {BLOB},
    key_version      INTEGER,
    creator          VARCHAR(256) NOT NULL,
    request_id       VARCHAR(100),
    version          BIGINT       NOT NULL,
    create_time      BIGINT       NOT NULL,
    update_time      BIGINT       NOT NULL
);
CREATE INDEX integrations_team_order ON integrations (team, create_time, id);
CREATE INDEX integrations_app ON integrations (team, installed_app_id, create_time, id);
CREATE UNIQUE INDEX integrations_request ON integrations (team, request_id);
"#;

/// The outbox. The sequence is the event cursor, so it must never be reused, even after the
/// newest rows are pruned: AUTOINCREMENT on SQLite, an identity column on PostgreSQL.
const EVENTS_SQLITE: &str = r#"
CREATE TABLE events (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id         VARCHAR(64) NOT NULL,
    team             VARCHAR(64) NOT NULL,
    kind             VARCHAR(32) NOT NULL,
    integration_id   VARCHAR(64) NOT NULL,
    installed_app_id VARCHAR(64),
    reason           VARCHAR(32),
    actor            VARCHAR(256) NOT NULL,
    time             BIGINT NOT NULL,
    snapshot         TEXT NOT NULL
);
CREATE INDEX events_team_seq ON events (team, seq);
"#;

const EVENTS_POSTGRES: &str = r#"
CREATE TABLE events (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id         VARCHAR(64) NOT NULL,
    team             VARCHAR(64) NOT NULL,
    kind             VARCHAR(32) NOT NULL,
    integration_id   VARCHAR(64) NOT NULL,
    installed_app_id VARCHAR(64),
    reason           VARCHAR(32),
    actor            VARCHAR(256) NOT NULL,
    time             BIGINT NOT NULL,
    snapshot         TEXT NOT NULL
);
CREATE INDEX events_team_seq ON events (team, seq);
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let (blob, events) = match manager.get_database_backend() {
            DatabaseBackend::Postgres => ("BYTEA", EVENTS_POSTGRES),
            _ => ("BLOB", EVENTS_SQLITE),
        };
        for statement in TABLES
            .replace("{BLOB}", blob)
            .split(';')
            .chain(events.split(';'))
        {
            if !statement.trim().is_empty() {
                db.execute_unprepared(statement).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for table in ["events", "integrations", "installed_apps"] {
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        Ok(())
    }
}
