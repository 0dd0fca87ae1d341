//! Schema migrations of integration-hub, for SQLite and PostgreSQL.
//!
//! Each migration is plain SQL per backend: the two differ where it matters (the event
//! sequence must never be reused, binary columns), and plain SQL keeps that visible.

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_core;
mod m20261126_000002_event_retention;
mod m20261126_000003_audit;
mod m20261126_000004_request_fingerprints;
mod m20261129_000005_suspension;
mod m20261129_000006_owners;
mod m20261129_000007_last_used;
mod m20261129_000009_oauth;
mod m20261129_000010_webhooks;
mod m20261204_000011_audit_time;
mod m20261204_000013_oauth_browser_binding;
mod m20261204_000014_verification;
mod m20261204_000015_usable_by;
mod m20261204_000016_audit_chain;
mod m20261205_000017_audit_chain_places;
mod m20261205_000018_audit_chain_runs;
mod m20261205_000019_audit_pending;
mod m20261205_000020_bound_counts;

/// Runs each statement of `script` (statements separated by `;`) in turn.
pub(crate) async fn execute_script(
    db: &SchemaManagerConnection<'_>,
    script: &str,
) -> Result<(), DbErr> {
    use sea_orm_migration::sea_orm::ConnectionTrait;
    for statement in script.split(';') {
        if !statement.trim().is_empty() {
            db.execute_unprepared(statement).await?;
        }
    }
    Ok(())
}

/// Every migration, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_core::Migration),
            Box::new(m20261126_000002_event_retention::Migration),
            Box::new(m20261126_000003_audit::Migration),
            Box::new(m20261126_000004_request_fingerprints::Migration),
            Box::new(m20261129_000005_suspension::Migration),
            Box::new(m20261129_000006_owners::Migration),
            Box::new(m20261129_000007_last_used::Migration),
            Box::new(m20261129_000009_oauth::Migration),
            Box::new(m20261129_000010_webhooks::Migration),
            Box::new(m20261204_000011_audit_time::Migration),
            Box::new(m20261204_000013_oauth_browser_binding::Migration),
            Box::new(m20261204_000014_verification::Migration),
            Box::new(m20261204_000015_usable_by::Migration),
            Box::new(m20261204_000016_audit_chain::Migration),
            Box::new(m20261205_000017_audit_chain_places::Migration),
            Box::new(m20261205_000018_audit_chain_runs::Migration),
            Box::new(m20261205_000019_audit_pending::Migration),
            Box::new(m20261205_000020_bound_counts::Migration),
        ]
    }
}
