//! Creates written together (the domain's group commit of creates): the apps they bind,
//! read in one query, and their integrations, inserted in one statement.

use std::collections::{BTreeSet, HashSet};

use sea_orm::sea_query::{LockType, OnConflict};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{installed_app, integration};
use super::{AppRow, IntegrationRow, Result, Tx};

impl Tx {
    /// Reads the apps `wanted` (team and id) to bind integrations to them, share-locked on
    /// PostgreSQL as [`Tx::share_app`] does; a missing one is not in the answer.
    pub async fn share_apps(&self, wanted: &[(String, String)]) -> Result<Vec<AppRow>> {
        let ids: BTreeSet<&str> = wanted.iter().map(|(_, id)| id.as_str()).collect();
        let mut query = installed_app::Entity::find()
            .filter(installed_app::Column::Id.is_in(ids))
            .order_by_asc(installed_app::Column::Id);
        if self.postgres {
            query = query.lock(LockType::Share);
        }
        let mut apps = query.all(&self.inner).await?;
        apps.retain(|app| {
            wanted
                .iter()
                .any(|(team, id)| *team == app.team && *id == app.id)
        });
        Ok(apps)
    }

    /// Inserts integrations, each unless an integration of its team has its idempotency key
    /// (in statements of the fixed insert sizes); answers the ids of those inserted. They go
    /// in in the order of (team, key), the same for every writer: two transactions inserting
    /// the same keys then wait for each other instead of deadlocking (PostgreSQL locks each
    /// key's index entry until commit, in the order the rows are inserted).
    pub async fn insert_integrations_unless_taken(
        &self,
        mut rows: Vec<IntegrationRow>,
    ) -> Result<HashSet<String>> {
        if rows.is_empty() {
            return Ok(HashSet::new());
        }
        rows.sort_by(|a, b| (&a.team, &a.request_id).cmp(&(&b.team, &b.request_id)));
        let mut inserted = HashSet::with_capacity(rows.len());
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let size = super::insert_size(rows.len());
            let chunk = rows.by_ref().take(size).map(integration::ActiveModel::from);
            let keys = integration::Entity::insert_many(chunk)
                .on_conflict(
                    OnConflict::columns([
                        integration::Column::Team,
                        integration::Column::RequestId,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .exec_with_returning_keys(&self.inner)
                .await?;
            inserted.extend(keys);
        }
        Ok(inserted)
    }
}
