//! What the sealer chains comes from `audit_pending`: every transaction that appends audit
//! records also writes, in the same commit, one row per team naming them by sequence number
//! with their key version and MAC (`seq:key-version:mac-in-hex`, comma-separated). The sealer
//! chains those rows and deletes them, and never reads the records back. Records past the
//! sealer at this migration that have no place yet are written as pending rows here.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `{ID}`, `{ENTRY}` and `{AGG}` stand for the backend's key column, expression of one
/// record as a pending entry, and text aggregate.
const STATEMENTS: &str = r#"
CREATE TABLE audit_pending (
    id                {ID},
    team              VARCHAR(64) NOT NULL,
    first_seq         BIGINT      NOT NULL,
    entries           TEXT        NOT NULL
);
CREATE INDEX audit_pending_first_seq ON audit_pending (first_seq);
INSERT INTO audit_pending (team, first_seq, entries)
    SELECT team, MIN(seq), {AGG}
    FROM (SELECT e.seq, e.team, e.key_id, e.mac FROM audit_events e
          WHERE e.seq > COALESCE((SELECT sealed_through FROM audit_chain_state WHERE id = 1), 0)
            AND e.seq > COALESCE((SELECT legacy_through FROM audit_chain_state WHERE id = 1), 0)
            AND NOT EXISTS (SELECT 1 FROM audit_chain_runs r
                            WHERE r.team = e.team AND r.first_seq <= e.seq AND r.last_seq >= e.seq
                              AND (',' || r.places) LIKE ('%,' || e.seq || ':%'))
          ORDER BY e.seq) AS unsealed
    GROUP BY team
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let (id, entry, agg) = match manager.get_database_backend() {
            DatabaseBackend::Postgres => (
                "BIGSERIAL PRIMARY KEY",
                "seq::text || ':' || COALESCE(key_id, 0)::text || ':' || \
                 COALESCE(encode(mac, 'hex'), '')",
                "string_agg({ENTRY}, ',' ORDER BY seq)",
            ),
            _ => (
                "INTEGER PRIMARY KEY AUTOINCREMENT",
                "seq || ':' || COALESCE(key_id, 0) || ':' || COALESCE(lower(hex(mac)), '')",
                "group_concat({ENTRY}, ',')",
            ),
        };
        let mut statements = STATEMENTS
            .replace("{ID}", id)
            .replace("{AGG}", agg)
            .replace("{ENTRY}", entry);
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            // A run's places are hex text of MACs: compressing them (PostgreSQL's default for
            // a long value) costs CPU on every sealing and saves little.
            statements
                .push_str(";ALTER TABLE audit_chain_runs ALTER COLUMN places SET STORAGE EXTERNAL");
        }
        crate::execute_script(db, &statements).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE audit_pending")
            .await?;
        Ok(())
    }
}
