//! OAuth 2.0: pending authorizations (the authorization code flow in progress) and the grant
//! behind an app authorized that way (its access token's expiry, its refresh health and the
//! lease that lets one replica at a time refresh it).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DatabaseBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `{BLOB}` stands for the binary column type.
const TABLES: &str = r#"
CREATE TABLE oauth_authorizations (
    id               VARCHAR(64)   NOT NULL PRIMARY KEY,
    state_hash       VARCHAR(64)   NOT NULL,
    team             VARCHAR(64)   NOT NULL,
    creator          VARCHAR(256)  NOT NULL,
    creator_role     VARCHAR(16)   NOT NULL,
    service          VARCHAR(64)   NOT NULL,
    display_name     VARCHAR(200)  NOT NULL,
    scopes           TEXT          NOT NULL,
    installed_app_id VARCHAR(64),
    return_url       VARCHAR(2000),
    verifier         {BLOB}        NOT NULL,
    key_version      INTEGER       NOT NULL,
    state            VARCHAR(16)   NOT NULL,
    error            VARCHAR(600),
    create_time      BIGINT        NOT NULL,
    expire_time      BIGINT        NOT NULL,
    complete_time    BIGINT
);
CREATE UNIQUE INDEX oauth_authorizations_state ON oauth_authorizations (state_hash);
CREATE INDEX oauth_authorizations_expiry ON oauth_authorizations (expire_time);
CREATE TABLE oauth_grants (
    installed_app_id   VARCHAR(64)  NOT NULL PRIMARY KEY,
    team               VARCHAR(64)  NOT NULL,
    service            VARCHAR(64)  NOT NULL,
    issue_time         BIGINT       NOT NULL,
    expire_time        BIGINT,
    refreshable        BOOLEAN      NOT NULL,
    next_refresh_time  BIGINT,
    failures           INTEGER      NOT NULL,
    last_refresh_time  BIGINT,
    last_refresh_error VARCHAR(600),
    lease_owner        VARCHAR(64),
    lease_until        BIGINT,
    refresh_count      BIGINT       NOT NULL
);
CREATE INDEX oauth_grants_due ON oauth_grants (next_refresh_time);
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let blob = match manager.get_database_backend() {
            DatabaseBackend::Postgres => "BYTEA",
            _ => "BLOB",
        };
        let db = manager.get_connection();
        crate::execute_script(db, &TABLES.replace("{BLOB}", blob)).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared("DROP TABLE oauth_grants").await?;
        db.execute_unprepared("DROP TABLE oauth_authorizations")
            .await?;
        Ok(())
    }
}
