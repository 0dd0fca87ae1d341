//! The records of installed apps and integrations: reads on the pool or in a transaction,
//! row locks, inserts, versioned updates, deletes, and the bulk change of integrations' state.

use std::collections::HashMap;

use sea_orm::sea_query::{Expr, ExprTrait, LockType, SelectStatement};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait,
    FromQueryResult, QueryFilter, QueryOrder, QuerySelect, QueryTrait, Statement,
};

use super::entities::{installed_app, integration};
use super::keyed::KeyedRead;
use super::outbox::MAX_EVENT_SEQ;
use super::sets::is_one_of;
use super::shape::Shape;
use super::{AppRow, AppState, BrokenReason, IntegrationRow, IntegrationState, Result, Store, Tx};

/// Ordering key of a listing: rows are ordered by creation time, then id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct After {
    pub create_time: i64,
    pub id: String,
}

/// Which integrations of a team a listing or a bulk change selects.
#[derive(Clone, Debug, Default)]
pub struct IntegrationFilter {
    /// Only those bound to (or, when broken, that were bound to) this app.
    pub installed_app_id: Option<String>,
    /// Only those in this state.
    pub state: Option<IntegrationState>,
    /// Only those broken for this reason.
    pub broken_reason: Option<BrokenReason>,
    /// Only those using an app's credentials (not credentials of their own).
    pub app_bound_only: bool,
    /// Only those of this service with credentials of their own.
    pub own_credentials_of: Option<String>,
    /// Only those this subject owns.
    pub owner: Option<String>,
    /// Only those this subject created.
    pub creator: Option<String>,
}

/// Which installed apps of a team a listing selects.
#[derive(Clone, Debug, Default)]
pub struct AppFilter {
    /// Only apps of this service.
    pub service: Option<String>,
    /// Only apps in this state.
    pub state: Option<AppState>,
    /// Only apps never used, or last used before this time.
    pub unused_since: Option<i64>,
    /// Only apps this subject owns.
    pub owner: Option<String>,
    /// Only apps this subject set up.
    pub creator: Option<String>,
}

/// New values for a bulk change of integrations' state.
#[derive(Clone, Debug)]
pub struct StateChange {
    pub state: IntegrationState,
    pub broken_reason: Option<BrokenReason>,
    pub broken_detail: Option<String>,
    pub broken_time: Option<i64>,
    /// Rebind to this app (bulk reauthentication); `None` keeps the current binding.
    pub installed_app_id: Option<String>,
    pub update_time: i64,
}

impl Store {
    /// A page of a team's integrations (as [`Tx::list_integrations`]) and an event sequence
    /// number such that every change the page does not show has an event after it (a change
    /// after it may also be in the page: delivery is at least once).
    pub async fn list_integrations_at_cursor(
        &self,
        team: &str,
        filter: &IntegrationFilter,
        after: Option<&After>,
        limit: u64,
    ) -> Result<(Vec<IntegrationRow>, i64)> {
        if self.is_postgres() {
            // The barrier first: everything up to the cursor is committed, so the page, read
            // after it, shows all of it.
            let cursor = self.max_event_seq().await?;
            let rows = self.list_integrations(team, filter, after, limit).await?;
            return Ok((rows, cursor));
        }
        // SQLite commits in sequence order: one statement reads the page and the cursor from
        // one snapshot. An empty page has no row to carry the cursor: a snapshot transaction.
        if let Some(page) = self
            .list_integrations_with_cursor_column(team, filter, after, limit)
            .await?
        {
            return Ok(page);
        }
        let tx = self.begin_snapshot().await?;
        let cursor = tx.max_event_seq().await?;
        let rows = tx.list_integrations(team, filter, after, limit).await?;
        Ok((rows, cursor))
    }

    async fn list_integrations_with_cursor_column(
        &self,
        team: &str,
        filter: &IntegrationFilter,
        after: Option<&After>,
        limit: u64,
    ) -> Result<Option<(Vec<IntegrationRow>, i64)>> {
        let mut query = integration::Entity::find().filter(integration_condition(team, filter));
        if let Some(after) = after {
            query = query.filter(after_condition(
                integration::Column::CreateTime,
                integration::Column::Id,
                after,
            ));
        }
        let query = query
            .column_as(Expr::cust(MAX_EVENT_SEQ), "event_cursor")
            .order_by_asc(integration::Column::CreateTime)
            .order_by_asc(integration::Column::Id)
            .limit(limit);
        let rows = self.db.query_all_raw(query.build(self.backend())).await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let cursor = first.try_get::<i64>("", "event_cursor")?;
        let rows = rows
            .iter()
            .map(|r| IntegrationRow::from_query_result(r, ""))
            .collect::<std::result::Result<Vec<_>, DbErr>>()?;
        Ok(Some((rows, cursor)))
    }
}

impl Tx {
    /// Reads an app and, on PostgreSQL, locks its row until commit, so a delete and an
    /// integration being bound to the app cannot interleave.
    pub async fn lock_app(&self, team: &str, id: &str) -> Result<Option<AppRow>> {
        let mut query = installed_app::Entity::find_by_id(id.to_owned())
            .filter(installed_app::Column::Team.eq(team));
        if self.postgres {
            query = query.lock(LockType::Update);
        }
        Ok(query.one(&self.inner).await?)
    }

    /// Reads an app to bind integrations to it and, on PostgreSQL, holds a share lock on its
    /// row until commit: binders do not wait for each other, while a delete or a state change
    /// (which take [`Tx::lock_app`]) waits for them, and they for it. An exclusive lock here
    /// made every integration created on one app wait for the previous one's commit.
    pub async fn share_app(&self, team: &str, id: &str) -> Result<Option<AppRow>> {
        let mut query = installed_app::Entity::find_by_id(id.to_owned())
            .filter(installed_app::Column::Team.eq(team));
        if self.postgres {
            query = query.lock(LockType::Share);
        }
        Ok(query.one(&self.inner).await?)
    }

    /// Reads an integration and, on PostgreSQL, locks its row until commit.
    pub async fn lock_integration(&self, team: &str, id: &str) -> Result<Option<IntegrationRow>> {
        let mut query = integration::Entity::find_by_id(id.to_owned())
            .filter(integration::Column::Team.eq(team));
        if self.postgres {
            query = query.lock(LockType::Update);
        }
        Ok(query.one(&self.inner).await?)
    }

    /// Every integration of a team matching `filter` (no paging), locked on PostgreSQL.
    pub async fn lock_integrations(
        &self,
        team: &str,
        filter: &IntegrationFilter,
    ) -> Result<Vec<IntegrationRow>> {
        let mut query = integration::Entity::find()
            .filter(integration_condition(team, filter))
            .order_by_asc(integration::Column::CreateTime)
            .order_by_asc(integration::Column::Id);
        if self.postgres {
            query = query.lock(LockType::Update);
        }
        Ok(query.all(&self.inner).await?)
    }

    pub async fn insert_app(&self, row: AppRow) -> Result<()> {
        installed_app::Entity::insert(installed_app::ActiveModel::from(row))
            .exec_without_returning(&self.inner)
            .await?;
        Ok(())
    }

    /// Replaces an app's row if its version is still `expected_version`; false otherwise.
    pub async fn update_app(&self, row: AppRow, expected_version: i64) -> Result<bool> {
        let result = installed_app::Entity::update_many()
            // `from` marks every value Unchanged, which `set` skips: `reset_all` writes them.
            .set(installed_app::ActiveModel::from(row.clone()).reset_all())
            .filter(installed_app::Column::Id.eq(row.id))
            .filter(installed_app::Column::Team.eq(row.team))
            .filter(installed_app::Column::Version.eq(expected_version))
            .exec(&self.inner)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Records that apps' credentials were used at `now`, except where that was recorded
    /// after `stale_before` (so a busy record is written at most once per interval). Not a
    /// change: neither version nor update time moves. Ids are primary keys, read under their
    /// team by the caller. Returns how many records it wrote.
    pub async fn touch_apps(&self, ids: &[&str], now: i64, stale_before: i64) -> Result<u64> {
        use installed_app::Column as C;
        self.touch::<installed_app::Entity>([C::Id, C::LastUsedTime], ids, now, stale_before)
            .await
    }

    /// As [`Tx::touch_apps`], for integrations.
    pub async fn touch_integrations(
        &self,
        ids: &[&str],
        now: i64,
        stale_before: i64,
    ) -> Result<u64> {
        use integration::Column as C;
        self.touch::<integration::Entity>([C::Id, C::LastUsedTime], ids, now, stale_before)
            .await
    }

    /// Sets the `last_used` column (the second of `[id, last_used]`) of the records `ids` to
    /// `now` where it is unset or older than `stale_before`.
    async fn touch<E: EntityTrait>(
        &self,
        [id_column, used_column]: [E::Column; 2],
        ids: &[&str],
        now: i64,
        stale_before: i64,
    ) -> Result<u64> {
        if ids.is_empty() {
            return Ok(0);
        }
        let result = E::update_many()
            .col_expr(used_column, Expr::value(now))
            .filter(is_one_of(
                self.inner.get_database_backend(),
                id_column,
                ids.iter().copied(),
            ))
            .filter(used_column.is_null().or(used_column.lt(stale_before)))
            .exec(&self.inner)
            .await?;
        Ok(result.rows_affected)
    }

    pub async fn delete_app(&self, team: &str, id: &str) -> Result<bool> {
        let result = installed_app::Entity::delete_many()
            .filter(installed_app::Column::Id.eq(id))
            .filter(installed_app::Column::Team.eq(team))
            .exec(&self.inner)
            .await?;
        Ok(result.rows_affected == 1)
    }

    pub async fn insert_integration(&self, row: IntegrationRow) -> Result<()> {
        integration::Entity::insert(integration::ActiveModel::from(row))
            .exec_without_returning(&self.inner)
            .await?;
        Ok(())
    }

    /// Replaces an integration's row if its version is still `expected_version`.
    pub async fn update_integration(
        &self,
        row: IntegrationRow,
        expected_version: i64,
    ) -> Result<bool> {
        let result = integration::Entity::update_many()
            // `from` marks every value Unchanged, which `set` skips: `reset_all` writes them.
            .set(integration::ActiveModel::from(row.clone()).reset_all())
            .filter(integration::Column::Id.eq(row.id))
            .filter(integration::Column::Team.eq(row.team))
            .filter(integration::Column::Version.eq(expected_version))
            .exec(&self.inner)
            .await?;
        Ok(result.rows_affected == 1)
    }

    pub async fn delete_integration(&self, team: &str, id: &str) -> Result<bool> {
        let result = integration::Entity::delete_many()
            .filter(integration::Column::Id.eq(id))
            .filter(integration::Column::Team.eq(team))
            .exec(&self.inner)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Applies `change` to every integration matching `filter` in one statement; returns how
    /// many changed. Callers read (and on PostgreSQL lock) the same set first with
    /// [`Tx::lock_integrations`], so the rows changed are exactly the rows read.
    pub async fn change_integrations(
        &self,
        team: &str,
        filter: &IntegrationFilter,
        change: &StateChange,
    ) -> Result<u64> {
        let mut update = integration::Entity::update_many()
            .col_expr(integration::Column::State, Expr::value(change.state))
            .col_expr(
                integration::Column::BrokenReason,
                Expr::value(change.broken_reason),
            )
            .col_expr(
                integration::Column::BrokenDetail,
                Expr::value(change.broken_detail.clone()),
            )
            .col_expr(
                integration::Column::BrokenTime,
                Expr::value(change.broken_time),
            )
            .col_expr(
                integration::Column::UpdateTime,
                Expr::value(change.update_time),
            )
            .col_expr(
                integration::Column::Version,
                Expr::col(integration::Column::Version).add(1),
            );
        if let Some(app) = &change.installed_app_id {
            update = update.col_expr(
                integration::Column::InstalledAppId,
                Expr::value(Some(app.clone())),
            );
        }
        let result = update
            .filter(integration_condition(team, filter))
            .exec(&self.inner)
            .await?;
        Ok(result.rows_affected)
    }
}

fn integration_condition(team: &str, filter: &IntegrationFilter) -> sea_orm::Condition {
    let mut cond = sea_orm::Condition::all().add(integration::Column::Team.eq(team));
    if let Some(app) = &filter.installed_app_id {
        cond = cond.add(integration::Column::InstalledAppId.eq(app.as_str()));
    }
    if let Some(state) = &filter.state {
        cond = cond.add(integration::Column::State.eq(*state));
    }
    if let Some(reason) = &filter.broken_reason {
        cond = cond.add(integration::Column::BrokenReason.eq(*reason));
    }
    if filter.app_bound_only {
        cond = cond.add(integration::Column::OwnCredentials.is_null());
    }
    if let Some(service) = &filter.own_credentials_of {
        cond = cond
            .add(integration::Column::Service.eq(service.as_str()))
            .add(integration::Column::OwnCredentials.is_not_null());
    }
    if let Some(owner) = &filter.owner {
        cond = cond.add(integration::Column::Owner.eq(owner.as_str()));
    }
    if let Some(creator) = &filter.creator {
        cond = cond.add(integration::Column::Creator.eq(creator.as_str()));
    }
    cond
}

fn after_condition<C: ColumnTrait>(time_col: C, id_col: C, after: &After) -> sea_orm::Condition {
    sea_orm::Condition::any()
        .add(time_col.gt(after.create_time))
        .add(
            sea_orm::Condition::all()
                .add(time_col.eq(after.create_time))
                .add(id_col.gt(after.id.as_str())),
        )
}

/// How many integrations use an app with its credentials, and how many of those are ACTIVE
/// (the others are BROKEN).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IntegrationCounts {
    pub total: i64,
    pub active: i64,
}

#[derive(FromQueryResult)]
struct AppCount {
    installed_app_id: Option<String>,
    state: IntegrationState,
    count: i64,
}

/// [`Store::get_app`]'s statement (bound from its [`Shape`]).
fn app_by_id(backend: DatabaseBackend, [team, id]: [&str; 2]) -> Statement {
    installed_app::Entity::find_by_id(id.to_owned())
        .filter(installed_app::Column::Team.eq(team))
        .limit(1)
        .build(backend)
}

/// [`Store::get_integration`]'s statement (bound from its [`Shape`]).
fn integration_by_id(backend: DatabaseBackend, [team, id]: [&str; 2]) -> Statement {
    backend.build(integration_select(team, id).limit(1))
}

/// An integration by team and id: [`integration_by_id`] without its limit.
fn integration_select(team: &str, id: &str) -> SelectStatement {
    integration::Entity::find_by_id(id.to_owned())
        .filter(integration::Column::Team.eq(team))
        .into_query()
}

/// GetIntegration's read of an integration by team and id.
pub static INTEGRATION: KeyedRead<IntegrationRow> = KeyedRead::new(
    &INTEGRATION_SHAPE,
    integration_select,
    |row| Ok(IntegrationRow::from_query_result(row, "")?),
    |integration| (integration.team.as_str(), integration.id.as_str()),
);
static INTEGRATION_SHAPE: Shape<2> = Shape::new(integration_by_id);

/// Reads, available on the pool ([`Store`]) and inside a transaction ([`Tx`]).
macro_rules! reads {
    ($ty:ty) => {
        impl $ty {
            pub async fn get_app(&self, team: &str, id: &str) -> Result<Option<AppRow>> {
                static SHAPE: Shape<2> = Shape::new(app_by_id);
                let row = SHAPE.query_one(self.conn(), [team, id]).await?;
                Ok(row
                    .map(|row| AppRow::from_query_result(&row, ""))
                    .transpose()?)
            }

            pub async fn find_app_by_request(
                &self,
                team: &str,
                request_id: &str,
            ) -> Result<Option<AppRow>> {
                Ok(installed_app::Entity::find()
                    .filter(installed_app::Column::Team.eq(team))
                    .filter(installed_app::Column::RequestId.eq(request_id))
                    .one(self.conn())
                    .await?)
            }

            /// A page of a team's apps, oldest first.
            pub async fn list_apps(
                &self,
                team: &str,
                filter: &AppFilter,
                after: Option<&After>,
                limit: u64,
            ) -> Result<Vec<AppRow>> {
                use installed_app::Column as C;
                let mut query = installed_app::Entity::find().filter(C::Team.eq(team));
                if let Some(service) = &filter.service {
                    query = query.filter(C::Service.eq(service.as_str()));
                }
                if let Some(state) = &filter.state {
                    query = query.filter(C::State.eq(*state));
                }
                if let Some(since) = filter.unused_since {
                    query = query.filter(C::LastUsedTime.is_null().or(C::LastUsedTime.lt(since)));
                }
                if let Some(owner) = &filter.owner {
                    query = query.filter(C::Owner.eq(owner.as_str()));
                }
                if let Some(creator) = &filter.creator {
                    query = query.filter(C::Creator.eq(creator.as_str()));
                }
                if let Some(after) = after {
                    query = query.filter(after_condition(
                        installed_app::Column::CreateTime,
                        installed_app::Column::Id,
                        after,
                    ));
                }
                Ok(query
                    .order_by_asc(installed_app::Column::CreateTime)
                    .order_by_asc(installed_app::Column::Id)
                    .limit(limit)
                    .all(self.conn())
                    .await?)
            }

            /// How many integrations use each of these apps (with their credentials).
            pub async fn count_integrations(
                &self,
                team: &str,
                app_ids: &[String],
            ) -> Result<HashMap<String, IntegrationCounts>> {
                if app_ids.is_empty() {
                    return Ok(HashMap::new());
                }
                let rows = integration::Entity::find()
                    .select_only()
                    .column(integration::Column::InstalledAppId)
                    .column(integration::Column::State)
                    .column_as(integration::Column::Id.count(), "count")
                    .filter(integration::Column::Team.eq(team))
                    .filter(integration::Column::InstalledAppId.is_in(app_ids.iter().cloned()))
                    .filter(integration::Column::OwnCredentials.is_null())
                    .group_by(integration::Column::InstalledAppId)
                    .group_by(integration::Column::State)
                    .into_model::<AppCount>()
                    .all(self.conn())
                    .await?;
                let mut counts: HashMap<String, IntegrationCounts> = HashMap::new();
                for row in rows {
                    let Some(id) = row.installed_app_id else {
                        continue;
                    };
                    let entry = counts.entry(id).or_default();
                    entry.total += row.count;
                    if row.state == IntegrationState::Active {
                        entry.active += row.count;
                    }
                }
                Ok(counts)
            }

            pub async fn get_integration(
                &self,
                team: &str,
                id: &str,
            ) -> Result<Option<IntegrationRow>> {
                let row = INTEGRATION_SHAPE.query_one(self.conn(), [team, id]).await?;
                Ok(row
                    .map(|row| IntegrationRow::from_query_result(&row, ""))
                    .transpose()?)
            }

            pub async fn find_integration_by_request(
                &self,
                team: &str,
                request_id: &str,
            ) -> Result<Option<IntegrationRow>> {
                Ok(integration::Entity::find()
                    .filter(integration::Column::Team.eq(team))
                    .filter(integration::Column::RequestId.eq(request_id))
                    .one(self.conn())
                    .await?)
            }

            /// A page of a team's integrations matching `filter`, oldest first.
            pub async fn list_integrations(
                &self,
                team: &str,
                filter: &IntegrationFilter,
                after: Option<&After>,
                limit: u64,
            ) -> Result<Vec<IntegrationRow>> {
                let mut query =
                    integration::Entity::find().filter(integration_condition(team, filter));
                if let Some(after) = after {
                    query = query.filter(after_condition(
                        integration::Column::CreateTime,
                        integration::Column::Id,
                        after,
                    ));
                }
                Ok(query
                    .order_by_asc(integration::Column::CreateTime)
                    .order_by_asc(integration::Column::Id)
                    .limit(limit)
                    .all(self.conn())
                    .await?)
            }
        }
    };
}

reads!(Store);
reads!(Tx);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_point_reads_are_fixed_shapes_bound_as_built() {
        super::super::shape::assert_bound_as_built("app by id", app_by_id);
        super::super::shape::assert_bound_as_built("integration by id", integration_by_id);
    }
}
