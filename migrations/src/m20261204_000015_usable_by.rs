//! Who may build on an installed app. `usable_by` holds the subjects and groups
//! (JSON: `{"subjects": [...], "groups": [...]}`) that, besides admins, may create
//! integrations on the app or move integrations onto it; NULL: every developer of its team.
//! `reauthorization_recommended`: the app's OAuth grant lives in the provider account of
//! someone whose apps were handed over (TransferOwnership), until new credentials.
//! `service_policies`: a team's policy per service (ALLOWED, APPROVAL_REQUIRED, BLOCKED); a
//! service without a row is ALLOWED. `installation_requests`: a developer's request to
//! install a service that requires approval, and how an admin decided it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE installed_apps ADD COLUMN usable_by TEXT")
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE installed_apps ADD COLUMN reauthorization_recommended \
                 BOOLEAN NOT NULL DEFAULT FALSE",
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE TABLE service_policies (\
                 team VARCHAR(64) NOT NULL, service VARCHAR(64) NOT NULL, \
                 policy VARCHAR(32) NOT NULL, updated_by TEXT NOT NULL, \
                 update_time BIGINT NOT NULL, PRIMARY KEY (team, service))",
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE TABLE installation_requests (\
                 id VARCHAR(64) PRIMARY KEY, team VARCHAR(64) NOT NULL, \
                 service VARCHAR(64) NOT NULL, requester TEXT NOT NULL, \
                 state VARCHAR(32) NOT NULL, reason TEXT NOT NULL, \
                 decided_by TEXT, decision TEXT, \
                 create_time BIGINT NOT NULL, update_time BIGINT NOT NULL)",
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX installation_requests_team_requester \
                 ON installation_requests (team, requester, service)",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE installation_requests")
            .await?;
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE service_policies")
            .await?;
        manager
            .get_connection()
            .execute_unprepared("ALTER TABLE installed_apps DROP COLUMN usable_by")
            .await?;
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE installed_apps DROP COLUMN reauthorization_recommended",
            )
            .await?;
        Ok(())
    }
}
