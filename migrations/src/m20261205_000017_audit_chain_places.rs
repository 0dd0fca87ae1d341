//! The audit chain's places move out of `audit_events` into an insert-only table of their
//! own, `audit_chain_places` (a record's sequence number, its team, its place, the chained
//! MAC). Giving a record its place rewrote its whole row and every one of the log's seven
//! indexes; now it adds one small row. The log loses the two indexes that served the chain
//! (the unsealed records and each team's places): `audit_chain_state.sealed_through` says
//! how far the sealer got (every record at or below it has its place, or is outside the
//! chain for a reason verification names), so finding the records to seal needs no index.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `{BYTES}` stands for the backend's binary column type, `{GREATEST}` for its two-argument
/// maximum.
const STATEMENTS: &str = r#"
CREATE TABLE audit_chain_places (
    seq               BIGINT      NOT NULL PRIMARY KEY,
    team              VARCHAR(64) NOT NULL,
    pos               BIGINT      NOT NULL,
    chain_mac         {BYTES}
);
CREATE INDEX audit_chain_places_team_pos ON audit_chain_places (team, pos);
INSERT INTO audit_chain_places (seq, team, pos, chain_mac)
    SELECT seq, team, chain_pos, chain_mac FROM audit_events WHERE chain_pos IS NOT NULL;
ALTER TABLE audit_chain_state ADD COLUMN sealed_through BIGINT NOT NULL DEFAULT 0;
UPDATE audit_chain_state SET sealed_through = {GREATEST}(legacy_through, COALESCE(
    (SELECT MIN(seq) - 1 FROM audit_events WHERE chain_pos IS NULL AND mac IS NOT NULL),
    (SELECT MAX(seq) FROM audit_events),
    0));
DROP INDEX audit_events_unsealed;
DROP INDEX audit_events_team_chain;
ALTER TABLE audit_events DROP COLUMN chain_mac;
ALTER TABLE audit_events DROP COLUMN chain_pos
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let (bytes, greatest) = match manager.get_database_backend() {
            DatabaseBackend::Postgres => ("BYTEA", "GREATEST"),
            _ => ("BLOB", "MAX"),
        };
        let statements = STATEMENTS
            .replace("{BYTES}", bytes)
            .replace("{GREATEST}", greatest);
        crate::execute_script(db, &statements).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let bytes = match manager.get_database_backend() {
            DatabaseBackend::Postgres => "BYTEA",
            _ => "BLOB",
        };
        for statement in [
            "ALTER TABLE audit_events ADD COLUMN chain_pos BIGINT".to_owned(),
            format!("ALTER TABLE audit_events ADD COLUMN chain_mac {bytes}"),
            "UPDATE audit_events SET chain_pos = (SELECT p.pos FROM audit_chain_places p \
             WHERE p.seq = audit_events.seq), chain_mac = (SELECT p.chain_mac FROM \
             audit_chain_places p WHERE p.seq = audit_events.seq)"
                .to_owned(),
            "CREATE INDEX audit_events_unsealed ON audit_events (seq) \
             WHERE chain_pos IS NULL AND mac IS NOT NULL"
                .to_owned(),
            "CREATE INDEX audit_events_team_chain ON audit_events (team, chain_pos)".to_owned(),
            "ALTER TABLE audit_chain_state DROP COLUMN sealed_through".to_owned(),
            "DROP TABLE audit_chain_places".to_owned(),
        ] {
            db.execute_unprepared(&statement).await?;
        }
        Ok(())
    }
}
