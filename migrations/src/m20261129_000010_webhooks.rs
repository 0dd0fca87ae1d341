//! Installed-app events in the outbox (longer kinds, free-text reasons) and webhooks:
//! subscriptions (with their sealed signing secrets, delivery position and lease) and the
//! record of delivery attempts.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Installed-app kinds are longer than 32 characters, and their reason is a person's text
/// (up to 1000 characters). SQLite does not enforce VARCHAR lengths.
const WIDEN_EVENTS_POSTGRES: &str = "ALTER TABLE events ALTER COLUMN kind TYPE VARCHAR(64), \
     ALTER COLUMN reason TYPE TEXT";

/// `position` is the sequence number of the last event acknowledged (or skipped) for the
/// subscription: a replica that takes the lease over resumes after it. `lease_owner` and
/// `lease_expire_time` make one replica at a time deliver a subscription.
const TABLES: &str = r#"
CREATE TABLE webhook_subscriptions (
    id                     VARCHAR(64) PRIMARY KEY,
    team                   VARCHAR(64) NOT NULL,
    url                    TEXT NOT NULL,
    event_types            TEXT NOT NULL,
    description            TEXT NOT NULL,
    enabled                BOOLEAN NOT NULL,
    disabled_reason        TEXT,
    secret                 {BLOB} NOT NULL,
    key_version            INTEGER NOT NULL,
    old_secret             {BLOB},
    old_key_version        INTEGER,
    old_secret_expire_time BIGINT,
    creator                VARCHAR(256) NOT NULL,
    version                BIGINT NOT NULL,
    create_time            BIGINT NOT NULL,
    update_time            BIGINT NOT NULL,
    position               BIGINT NOT NULL,
    lease_owner            VARCHAR(64),
    lease_expire_time      BIGINT,
    failing_since          BIGINT,
    failed_attempts        INTEGER NOT NULL,
    next_attempt_time      BIGINT
);
CREATE INDEX webhook_subscriptions_team ON webhook_subscriptions (team, create_time, id);
CREATE TABLE webhook_deliveries (
    seq             {SEQ},
    team            VARCHAR(64) NOT NULL,
    subscription_id VARCHAR(64) NOT NULL,
    webhook_id      VARCHAR(128) NOT NULL,
    event_type      VARCHAR(64) NOT NULL,
    event_seq       BIGINT NOT NULL,
    attempt         INTEGER NOT NULL,
    time            BIGINT NOT NULL,
    outcome         VARCHAR(32) NOT NULL,
    response_code   INTEGER,
    latency_micros  BIGINT NOT NULL,
    response_body   TEXT NOT NULL,
    error           TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_subscription ON webhook_deliveries (subscription_id, seq);
CREATE INDEX webhook_deliveries_time ON webhook_deliveries (time);
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let (blob, seq) = match manager.get_database_backend() {
            DatabaseBackend::Postgres => {
                db.execute_unprepared(WIDEN_EVENTS_POSTGRES).await?;
                ("BYTEA", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
            }
            _ => ("BLOB", "INTEGER PRIMARY KEY AUTOINCREMENT"),
        };
        crate::execute_script(db, &TABLES.replace("{BLOB}", blob).replace("{SEQ}", seq)).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for table in ["webhook_deliveries", "webhook_subscriptions"] {
            db.execute_unprepared(&format!("DROP TABLE IF EXISTS {table}"))
                .await?;
        }
        Ok(())
    }
}
