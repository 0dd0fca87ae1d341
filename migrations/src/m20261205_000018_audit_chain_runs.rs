//! The audit chain's places are kept in runs: one row per team and sealing batch
//! (`audit_chain_runs`), holding the places of that batch's records of the team as text
//! (`seq:pos:mac-in-hex`, comma-separated, in chain order), in place of one row per record.
//! A sealing batch of a thousand records wrote a thousand rows and two thousand index
//! entries; now it writes one row per team it touched. Each run names its first and last
//! sequence number (to find the run holding a record) and its first and last place (to read
//! a chain in order). The places written before this migration become runs of one place.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DatabaseBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `{PLACE}` stands for the backend's expression of one place as text.
const STATEMENTS: &str = r#"
CREATE TABLE audit_chain_runs (
    team              VARCHAR(64) NOT NULL,
    first_seq         BIGINT      NOT NULL,
    last_seq          BIGINT      NOT NULL,
    first_pos         BIGINT      NOT NULL,
    last_pos          BIGINT      NOT NULL,
    places            TEXT        NOT NULL,
    PRIMARY KEY (team, first_seq)
);
CREATE INDEX audit_chain_runs_team_pos ON audit_chain_runs (team, last_pos);
CREATE INDEX audit_chain_runs_last_seq ON audit_chain_runs (last_seq);
INSERT INTO audit_chain_runs (team, first_seq, last_seq, first_pos, last_pos, places)
    SELECT team, seq, seq, pos, pos, {PLACE} FROM audit_chain_places;
DROP TABLE audit_chain_places
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let place = match manager.get_database_backend() {
            DatabaseBackend::Postgres => {
                "seq::text || ':' || pos::text || ':' || COALESCE(encode(chain_mac, 'hex'), '')"
            }
            _ => "seq || ':' || pos || ':' || COALESCE(lower(hex(chain_mac)), '')",
        };
        crate::execute_script(db, &STATEMENTS.replace("{PLACE}", place)).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = manager.get_database_backend();
        let bytes = match backend {
            DatabaseBackend::Postgres => "BYTEA",
            _ => "BLOB",
        };
        db.execute_unprepared(&format!(
            "CREATE TABLE audit_chain_places (seq BIGINT NOT NULL PRIMARY KEY, \
             team VARCHAR(64) NOT NULL, pos BIGINT NOT NULL, chain_mac {bytes})"
        ))
        .await?;
        db.execute_unprepared(
            "CREATE INDEX audit_chain_places_team_pos ON audit_chain_places (team, pos)",
        )
        .await?;
        // Each run back into its places, a run at a time.
        let runs = db
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT team, places FROM audit_chain_runs",
            ))
            .await?;
        for run in runs {
            let team: String = run.try_get("", "team")?;
            let places: String = run.try_get("", "places")?;
            for place in places.split(',') {
                let mut fields = place.splitn(3, ':');
                let (Some(seq), Some(pos), Some(mac)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    continue;
                };
                let (Ok(seq), Ok(pos)) = (seq.parse::<i64>(), pos.parse::<i64>()) else {
                    continue;
                };
                let mac: Option<Vec<u8>> = (!mac.is_empty()).then(|| {
                    (0..mac.len() / 2)
                        .filter_map(|i| u8::from_str_radix(mac.get(2 * i..2 * i + 2)?, 16).ok())
                        .collect()
                });
                let insert = Query::insert()
                    .into_table(Alias::new("audit_chain_places"))
                    .columns(["seq", "team", "pos", "chain_mac"].map(Alias::new))
                    .values([seq.into(), team.clone().into(), pos.into(), mac.into()])
                    .map_err(|error| DbErr::Custom(error.to_string()))?
                    .to_owned();
                db.execute(&insert).await?;
            }
        }
        db.execute_unprepared("DROP TABLE audit_chain_runs").await?;
        Ok(())
    }
}
