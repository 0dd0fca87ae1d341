//! Each installed app's verification with its provider (`app_verifications`): written with
//! the app at create and credential changes, by on-demand checks, and by the scheduled
//! checker, whose per-app lease is taken by one conditional UPDATE, so of any number of
//! replicas exactly one checks an app at a time (as the OAuth refresher's lease).

use std::collections::BTreeSet;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::{Result, Store, Tx};

pub mod app_verification {
    use sea_orm::entity::prelude::*;

    use crate::store::VerificationState;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "app_verifications")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub installed_app_id: String,
        pub team: String,
        pub service: String,
        pub state: VerificationState,
        /// Space-separated; `None` when the provider does not say.
        pub granted_scopes: Option<String>,
        /// When the provider last accepted the credentials.
        pub last_verified_time: Option<i64>,
        /// When they were last checked, whatever it found.
        pub last_check_time: Option<i64>,
        /// Why the last check did not verify them; never a secret or a provider's body.
        pub last_error: Option<String>,
        /// When the scheduled checker should next look; `None`: never (not verifiable).
        pub next_check_time: Option<i64>,
        pub lease_owner: Option<String>,
        pub lease_until: Option<i64>,
        pub check_count: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use app_verification::Column as C;
pub use app_verification::Model as VerificationRow;

impl Store {
    /// The verifications of these apps of a team.
    pub async fn verifications_of(
        &self,
        team: &str,
        app_ids: &[String],
    ) -> Result<Vec<VerificationRow>> {
        if app_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(app_verification::Entity::find()
            .filter(C::Team.eq(team))
            .filter(C::InstalledAppId.is_in(app_ids.iter().cloned()))
            .all(self.conn())
            .await?)
    }

    /// Up to `limit` apps due for a check at `now` whose lease is free, soonest first.
    pub async fn due_verifications(&self, now: i64, limit: u64) -> Result<Vec<VerificationRow>> {
        Ok(app_verification::Entity::find()
            .filter(C::NextCheckTime.lte(now))
            .filter(C::LeaseUntil.is_null().or(C::LeaseUntil.lt(now)))
            .order_by_asc(C::NextCheckTime)
            .limit(limit)
            .all(self.conn())
            .await?)
    }

    /// Takes the check lease of an app for `owner` until `until`, if nobody holds it at `now`
    /// and it is still due at the time the taker saw (`seen`): a replica that checked it
    /// meanwhile moved that time, so the interval's one check is not made twice.
    pub async fn take_verify_lease(
        &self,
        app_id: &str,
        owner: &str,
        seen: i64,
        now: i64,
        until: i64,
    ) -> Result<bool> {
        let result = app_verification::Entity::update_many()
            .col_expr(C::LeaseOwner, Expr::value(owner.to_owned()))
            .col_expr(C::LeaseUntil, Expr::value(until))
            .filter(C::InstalledAppId.eq(app_id))
            .filter(C::NextCheckTime.eq(seen))
            .filter(C::LeaseUntil.is_null().or(C::LeaseUntil.lt(now)))
            .exec(self.conn())
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Records a check made under the lease of `owner` (the row as the check left it, its
    /// lease released); false when the lease was lost.
    pub async fn record_check(&self, row: &VerificationRow, owner: &str) -> Result<bool> {
        let result = app_verification::Entity::update_many()
            .col_expr(C::State, Expr::value(row.state))
            .col_expr(C::GrantedScopes, Expr::value(row.granted_scopes.clone()))
            .col_expr(C::LastVerifiedTime, Expr::value(row.last_verified_time))
            .col_expr(C::LastCheckTime, Expr::value(row.last_check_time))
            .col_expr(C::LastError, Expr::value(row.last_error.clone()))
            .col_expr(C::NextCheckTime, Expr::value(row.next_check_time))
            .col_expr(C::CheckCount, Expr::value(row.check_count))
            .col_expr(C::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(C::LeaseUntil, Expr::value(Option::<i64>::None))
            .filter(C::InstalledAppId.eq(&row.installed_app_id))
            .filter(C::LeaseOwner.eq(owner))
            .exec(self.conn())
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Up to `limit` apps that have no verification yet (made before verification was on,
    /// or by a path that does not verify): (id, team, service).
    pub async fn apps_never_verified(&self, limit: u64) -> Result<Vec<(String, String, String)>> {
        use super::entities::installed_app;
        use sea_orm::sea_query::Query;
        let verified = Query::select()
            .column(C::InstalledAppId)
            .from(app_verification::Entity)
            .to_owned();
        let rows = installed_app::Entity::find()
            .filter(installed_app::Column::Id.not_in_subquery(verified))
            .order_by_asc(installed_app::Column::CreateTime)
            .limit(limit)
            .all(self.conn())
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.id, row.team, row.service))
            .collect())
    }

    /// Inserts these verifications, leaving alone any an app already has (another replica
    /// adopted it first).
    pub async fn adopt_verifications(&self, rows: Vec<VerificationRow>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        app_verification::Entity::insert_many(
            rows.into_iter().map(app_verification::ActiveModel::from),
        )
        .on_conflict(
            OnConflict::column(C::InstalledAppId)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(self.conn())
        .await?;
        Ok(())
    }

    /// Removes the verification of an app that no longer exists.
    pub async fn forget_verification(&self, app_id: &str) -> Result<()> {
        app_verification::Entity::delete_many()
            .filter(C::InstalledAppId.eq(app_id))
            .exec(self.conn())
            .await?;
        Ok(())
    }
}

impl Tx {
    /// An app's verification as this transaction sees it.
    pub async fn verification(&self, app_id: &str) -> Result<Option<VerificationRow>> {
        Ok(app_verification::Entity::find_by_id(app_id.to_owned())
            .one(self.conn())
            .await?)
    }

    /// The verifications of the apps with these ids, as this transaction sees them (the
    /// creates written together check their scopes with them). Each row names its team:
    /// callers match it with the app's.
    pub async fn verifications_of_ids(&self, ids: BTreeSet<&str>) -> Result<Vec<VerificationRow>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(app_verification::Entity::find()
            .filter(C::InstalledAppId.is_in(ids))
            .all(self.conn())
            .await?)
    }

    /// Stores an app's verification, replacing the one it had.
    pub async fn put_verification(&self, row: VerificationRow) -> Result<()> {
        self.delete_verification(&row.installed_app_id).await?;
        app_verification::Entity::insert(row.into_active_model().reset_all())
            .exec_without_returning(self.conn())
            .await?;
        Ok(())
    }

    pub async fn delete_verification(&self, app_id: &str) -> Result<()> {
        app_verification::Entity::delete_many()
            .filter(C::InstalledAppId.eq(app_id))
            .exec(self.conn())
            .await?;
        Ok(())
    }
}
