//! Credentials the service vouches for: each installed app's verification with its provider
//! (its state, the scopes granted, when it last verified and why the last check did not),
//! when the scheduled checker next looks at it, and the lease that lets one replica at a
//! time check it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const TABLE: &str = r#"
CREATE TABLE app_verifications (
    installed_app_id   VARCHAR(64)  NOT NULL PRIMARY KEY,
    team               VARCHAR(64)  NOT NULL,
    service            VARCHAR(64)  NOT NULL,
    state              VARCHAR(16)  NOT NULL,
    granted_scopes     TEXT,
    last_verified_time BIGINT,
    last_check_time    BIGINT,
    last_error         VARCHAR(600),
    next_check_time    BIGINT,
    lease_owner        VARCHAR(64),
    lease_until        BIGINT,
    check_count        BIGINT       NOT NULL
);
CREATE INDEX app_verifications_due ON app_verifications (next_check_time);
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        crate::execute_script(db, TABLE).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE app_verifications")
            .await?;
        Ok(())
    }
}
