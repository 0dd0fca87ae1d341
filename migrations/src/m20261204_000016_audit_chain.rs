//! Tamper evidence for the audit log: every record written from now on carries a
//! keyed MAC of its content (`mac`, under the key ring version `key_id`); a sealer later gives
//! it its place in its team's chain (`chain_pos`, 1, 2, ...; 0 marks a record whose MAC did
//! not hold when it was sealed) and the chained MAC over it and its predecessor (`chain_mac`).
//! `audit_chains` holds each team's chain head and its pruning checkpoint, each under a MAC.
//! `audit_chain_state.legacy_through` is the starting checkpoint: records at or below it were
//! written before this migration, carry no MAC and are reported as such, never verified.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `{BYTES}` stands for the backend's binary column type.
const STATEMENTS: &str = r#"
ALTER TABLE audit_events ADD COLUMN key_id INTEGER;
ALTER TABLE audit_events ADD COLUMN mac {BYTES};
ALTER TABLE audit_events ADD COLUMN chain_pos BIGINT;
ALTER TABLE audit_events ADD COLUMN chain_mac {BYTES};
CREATE INDEX audit_events_unsealed ON audit_events (seq) WHERE chain_pos IS NULL AND mac IS NOT NULL;
CREATE INDEX audit_events_team_chain ON audit_events (team, chain_pos);
CREATE TABLE audit_chains (
    team              VARCHAR(64) NOT NULL PRIMARY KEY,
    pos               BIGINT      NOT NULL,
    chain_mac         {BYTES}     NOT NULL,
    checkpoint_pos    BIGINT      NOT NULL,
    checkpoint_mac    {BYTES}     NOT NULL,
    key_id            INTEGER     NOT NULL,
    mac               {BYTES}     NOT NULL
);
CREATE TABLE audit_chain_state (
    id                INTEGER NOT NULL PRIMARY KEY,
    legacy_through    BIGINT  NOT NULL
);
INSERT INTO audit_chain_state (id, legacy_through) SELECT 1, COALESCE(MAX(seq), 0) FROM audit_events
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let bytes = match manager.get_database_backend() {
            DatabaseBackend::Postgres => "BYTEA",
            _ => "BLOB",
        };
        crate::execute_script(db, &STATEMENTS.replace("{BYTES}", bytes)).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for statement in [
            "DROP TABLE IF EXISTS audit_chain_state",
            "DROP TABLE IF EXISTS audit_chains",
            "DROP INDEX IF EXISTS audit_events_team_chain",
            "DROP INDEX IF EXISTS audit_events_unsealed",
            "ALTER TABLE audit_events DROP COLUMN chain_mac",
            "ALTER TABLE audit_events DROP COLUMN chain_pos",
            "ALTER TABLE audit_events DROP COLUMN mac",
            "ALTER TABLE audit_events DROP COLUMN key_id",
        ] {
            db.execute_unprepared(statement).await?;
        }
        Ok(())
    }
}
