//! OAuth 2.0 records: pending authorizations and the grants behind apps authorized through
//! them. A grant's refresh lease is taken by one conditional UPDATE, so of any number of
//! replicas exactly one holds it at a time (the database decides, not a clock race).

use sea_orm::sea_query::{Expr, ExprTrait, LockType};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::{AuthorizationStage, Result, Store, Tx};

/// The stages of an authorization that has not ended.
const UNENDED: [AuthorizationStage; 2] =
    [AuthorizationStage::Pending, AuthorizationStage::Exchanging];

pub mod authorization {
    use sea_orm::entity::prelude::*;

    use crate::store::AuthorizationStage;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oauth_authorizations")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// SHA-256 (hex) of the state: the state itself is never stored.
        pub state_hash: String,
        pub team: String,
        pub creator: String,
        pub creator_role: String,
        pub service: String,
        pub display_name: String,
        /// The scopes asked for, space-separated.
        pub scopes: String,
        /// The app being reauthorized, or the app created once it succeeded.
        pub installed_app_id: Option<String>,
        pub return_url: Option<String>,
        /// The PKCE code verifier, sealed to the team and this authorization.
        pub verifier: Vec<u8>,
        pub key_version: i32,
        pub state: AuthorizationStage,
        pub error: Option<String>,
        pub create_time: i64,
        pub expire_time: i64,
        pub complete_time: Option<i64>,
        /// SHA-256 (hex) of the random value the cookie of the browser the sign-in was
        /// opened in holds; `None` until it is opened (once).
        pub browser_hash: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod grant {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "oauth_grants")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub installed_app_id: String,
        pub team: String,
        pub service: String,
        /// When the current access token was issued.
        pub issue_time: i64,
        /// When it expires; `None` when the provider did not say.
        pub expire_time: Option<i64>,
        /// Whether a refresh token is stored with the app's credentials.
        pub refreshable: bool,
        /// When the refresher should next try; `None`: never (no refresh token, or the
        /// grant was revoked).
        pub next_refresh_time: Option<i64>,
        /// Transient failures in a row, for the backoff.
        pub failures: i32,
        pub last_refresh_time: Option<i64>,
        /// Why the last refresh failed; never a token.
        pub last_refresh_error: Option<String>,
        /// The replica refreshing it now, and until when its lease holds.
        pub lease_owner: Option<String>,
        pub lease_until: Option<i64>,
        pub refresh_count: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use authorization::Model as AuthorizationRow;
pub use grant::Model as GrantRow;

/// What a refresh attempt that did not succeed leaves on its grant.
#[derive(Clone, Debug)]
pub struct RefreshFailure {
    pub error: String,
    pub failures: i32,
    pub next_refresh_time: Option<i64>,
}

impl Store {
    pub async fn get_authorization(
        &self,
        team: &str,
        id: &str,
    ) -> Result<Option<AuthorizationRow>> {
        Ok(authorization::Entity::find_by_id(id.to_owned())
            .filter(authorization::Column::Team.eq(team))
            .one(self.conn())
            .await?)
    }

    /// The authorization with this state hash.
    pub async fn authorization_by_state(
        &self,
        state_hash: &str,
    ) -> Result<Option<AuthorizationRow>> {
        Ok(authorization::Entity::find()
            .filter(authorization::Column::StateHash.eq(state_hash))
            .one(self.conn())
            .await?)
    }

    /// Claims the pending authorization with this state hash for one completion: it moves
    /// from PENDING to EXCHANGING in one statement, so of two completions (a replay, or two
    /// replicas) exactly one gets it. Returns the claimed row.
    pub async fn claim_authorization(
        &self,
        state_hash: &str,
        now: i64,
    ) -> Result<Option<AuthorizationRow>> {
        use authorization::Column as C;
        let claimed = authorization::Entity::update_many()
            .col_expr(C::State, Expr::value(AuthorizationStage::Exchanging))
            .filter(C::StateHash.eq(state_hash))
            .filter(C::State.eq(AuthorizationStage::Pending))
            .filter(C::ExpireTime.gt(now))
            .exec(self.conn())
            .await?;
        if claimed.rows_affected != 1 {
            return Ok(None);
        }
        Ok(authorization::Entity::find()
            .filter(C::StateHash.eq(state_hash))
            .one(self.conn())
            .await?)
    }

    /// Binds a pending authorization to the browser whose cookie hashes to `browser_hash`:
    /// once (a second opening finds it bound), and only while it is pending and unexpired.
    /// Whether it was bound now.
    pub async fn bind_authorization(&self, id: &str, browser_hash: &str, now: i64) -> Result<bool> {
        use authorization::Column as C;
        let bound = authorization::Entity::update_many()
            .col_expr(C::BrowserHash, Expr::value(browser_hash.to_owned()))
            .filter(C::Id.eq(id))
            .filter(C::State.eq(AuthorizationStage::Pending))
            .filter(C::BrowserHash.is_null())
            .filter(C::ExpireTime.gt(now))
            .exec(self.conn())
            .await?;
        Ok(bound.rows_affected == 1)
    }

    /// Ends a claimed authorization without an app: FAILED with `error`. Bookkeeping of the
    /// flow, not a change of any resource.
    pub async fn fail_authorization(&self, id: &str, error: &str, now: i64) -> Result<()> {
        use authorization::Column as C;
        authorization::Entity::update_many()
            .col_expr(C::State, Expr::value(AuthorizationStage::Failed))
            .col_expr(C::Error, Expr::value(error.to_owned()))
            .col_expr(C::CompleteTime, Expr::value(now))
            .col_expr(C::Verifier, Expr::value(Vec::<u8>::new()))
            .filter(C::Id.eq(id))
            .filter(C::State.is_in(UNENDED))
            .exec(self.conn())
            .await?;
        Ok(())
    }

    /// Removes authorizations that ended (or expired) before `before`; returns how many.
    pub async fn prune_authorizations(&self, before: i64) -> Result<u64> {
        use authorization::Column as C;
        let result = authorization::Entity::delete_many()
            .filter(C::ExpireTime.lt(before))
            .exec(self.conn())
            .await?;
        Ok(result.rows_affected)
    }

    pub async fn get_grant(&self, app_id: &str) -> Result<Option<GrantRow>> {
        Ok(grant::Entity::find_by_id(app_id.to_owned())
            .one(self.conn())
            .await?)
    }

    /// The grants of these apps of a team.
    pub async fn grants_of(&self, team: &str, app_ids: &[String]) -> Result<Vec<GrantRow>> {
        if app_ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(grant::Entity::find()
            .filter(grant::Column::Team.eq(team))
            .filter(grant::Column::InstalledAppId.is_in(app_ids.iter().cloned()))
            .all(self.conn())
            .await?)
    }

    /// Up to `limit` grants due for a refresh at `now` whose lease is free, soonest first.
    pub async fn due_grants(&self, now: i64, limit: u64) -> Result<Vec<GrantRow>> {
        use grant::Column as C;
        Ok(grant::Entity::find()
            .filter(C::NextRefreshTime.lte(now))
            .filter(C::Refreshable.eq(true))
            .filter(C::LeaseUntil.is_null().or(C::LeaseUntil.lt(now)))
            .order_by_asc(C::NextRefreshTime)
            .limit(limit)
            .all(self.conn())
            .await?)
    }

    /// Takes the refresh lease of a grant for `owner` until `until`, if nobody holds it at
    /// `now`. One conditional UPDATE: on PostgreSQL concurrent takers serialize on the row
    /// and the second sees the first's lease, so exactly one wins.
    /// `issue_time` is the token the taker saw: if another replica refreshed it meanwhile,
    /// the lease is not taken (there is nothing left to refresh).
    pub async fn take_lease(
        &self,
        app_id: &str,
        owner: &str,
        issue_time: i64,
        now: i64,
        until: i64,
    ) -> Result<bool> {
        use grant::Column as C;
        let result = grant::Entity::update_many()
            .col_expr(C::LeaseOwner, Expr::value(owner.to_owned()))
            .col_expr(C::LeaseUntil, Expr::value(until))
            .filter(C::InstalledAppId.eq(app_id))
            .filter(C::IssueTime.eq(issue_time))
            .filter(C::LeaseUntil.is_null().or(C::LeaseUntil.lt(now)))
            .exec(self.conn())
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Records a failed refresh by the lease's `owner` and releases the lease.
    pub async fn refresh_failed(
        &self,
        app_id: &str,
        owner: &str,
        failure: &RefreshFailure,
    ) -> Result<bool> {
        use grant::Column as C;
        let result = grant::Entity::update_many()
            .col_expr(C::LastRefreshError, Expr::value(failure.error.clone()))
            .col_expr(C::Failures, Expr::value(failure.failures))
            .col_expr(C::NextRefreshTime, Expr::value(failure.next_refresh_time))
            .col_expr(C::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(C::LeaseUntil, Expr::value(Option::<i64>::None))
            .filter(C::InstalledAppId.eq(app_id))
            .filter(C::LeaseOwner.eq(owner))
            .exec(self.conn())
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Releases a lease `owner` holds without recording anything.
    pub async fn release_lease(&self, app_id: &str, owner: &str) -> Result<()> {
        use grant::Column as C;
        grant::Entity::update_many()
            .col_expr(C::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(C::LeaseUntil, Expr::value(Option::<i64>::None))
            .filter(C::InstalledAppId.eq(app_id))
            .filter(C::LeaseOwner.eq(owner))
            .exec(self.conn())
            .await?;
        Ok(())
    }
}

impl Tx {
    /// How many authorizations `creator` of `team` has pending (not ended, not expired),
    /// counted under the person's cap lock ([`Tx::lock_cap`]): held until commit, so a start
    /// that counts here and inserts is not passed by another.
    pub async fn pending_authorizations(&self, team: &str, creator: &str, now: i64) -> Result<u64> {
        use authorization::Column as C;
        use sea_orm::PaginatorTrait;
        self.lock_cap(super::Cap::PendingAuthorizations, team, creator)
            .await?;
        Ok(authorization::Entity::find()
            .filter(C::Team.eq(team))
            .filter(C::Creator.eq(creator))
            .filter(C::State.is_in(UNENDED))
            .filter(C::ExpireTime.gt(now))
            .count(self.conn())
            .await?)
    }

    /// Ends every pending authorization `creator` of `team` started (FAILED with `error`):
    /// a deprovisioned person's sign-ins never complete. Returns how many.
    pub async fn cancel_authorizations_of(
        &self,
        team: &str,
        creator: &str,
        error: &str,
        now: i64,
    ) -> Result<u64> {
        use authorization::Column as C;
        let result = authorization::Entity::update_many()
            .col_expr(C::State, Expr::value(AuthorizationStage::Failed))
            .col_expr(C::Error, Expr::value(error.to_owned()))
            .col_expr(C::CompleteTime, Expr::value(now))
            .col_expr(C::Verifier, Expr::value(Vec::<u8>::new()))
            .filter(C::Team.eq(team))
            .filter(C::Creator.eq(creator))
            .filter(C::State.is_in(UNENDED))
            .exec(self.conn())
            .await?;
        Ok(result.rows_affected)
    }

    pub async fn insert_authorization(&self, row: AuthorizationRow) -> Result<()> {
        authorization::Entity::insert(authorization::ActiveModel::from(row))
            .exec_without_returning(self.conn())
            .await?;
        Ok(())
    }

    /// Marks a claimed authorization SUCCEEDED with the app it made or reauthorized.
    pub async fn succeed_authorization(&self, id: &str, app_id: &str, now: i64) -> Result<bool> {
        use authorization::Column as C;
        let result = authorization::Entity::update_many()
            .col_expr(C::State, Expr::value(AuthorizationStage::Succeeded))
            .col_expr(C::InstalledAppId, Expr::value(app_id.to_owned()))
            .col_expr(C::CompleteTime, Expr::value(now))
            .col_expr(C::Verifier, Expr::value(Vec::<u8>::new()))
            .filter(C::Id.eq(id))
            .filter(C::State.eq(AuthorizationStage::Exchanging))
            .exec(self.conn())
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// The grant of an app, locked until commit on PostgreSQL.
    pub async fn lock_grant(&self, app_id: &str) -> Result<Option<GrantRow>> {
        let mut query = grant::Entity::find_by_id(app_id.to_owned());
        if self.postgres {
            query = query.lock(LockType::Update);
        }
        Ok(query.one(self.conn()).await?)
    }

    /// Stores an app's grant, replacing the one it had.
    pub async fn put_grant(&self, row: GrantRow) -> Result<()> {
        self.delete_grant(&row.installed_app_id).await?;
        grant::Entity::insert(row.into_active_model().reset_all())
            .exec_without_returning(self.conn())
            .await?;
        Ok(())
    }

    /// Removes an app's grant (its credentials were replaced by hand, or it was deleted).
    pub async fn delete_grant(&self, app_id: &str) -> Result<()> {
        grant::Entity::delete_many()
            .filter(grant::Column::InstalledAppId.eq(app_id))
            .exec(self.conn())
            .await?;
        Ok(())
    }
}
