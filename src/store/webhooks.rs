//! Webhook subscriptions (with their sealed signing secrets, delivery position and lease) and
//! the record of delivery attempts.
//!
//! One replica delivers a subscription at a time: it holds the lease (`lease_owner`,
//! `lease_expire_time`), taken and renewed with conditional updates, so two replicas racing
//! for it cannot both win. Every change a delivery makes (its position, its failure count)
//! is conditional on still holding the lease: a replica that lost it (stalled past its
//! expiry) writes nothing, and the new holder resumes from the last acknowledged position.

use sea_orm::sea_query::{Expr, Order};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::entities::new_row;
use super::{Result, Store, Tx};

pub mod subscription {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_subscriptions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub team: String,
        pub url: String,
        /// The event kinds delivered, as a JSON array of stored kind names.
        pub event_types: String,
        pub description: String,
        pub enabled: bool,
        pub disabled_reason: Option<String>,
        /// The signing secret, sealed (see `crate::crypto`), never plaintext.
        pub secret: Vec<u8>,
        pub key_version: i32,
        /// The secret a rotation replaced, still signing until `previous_secret_expire_time`
        /// (the columns keep their first names: `old_secret`, ...).
        #[sea_orm(column_name = "old_secret")]
        pub previous_secret: Option<Vec<u8>>,
        #[sea_orm(column_name = "old_key_version")]
        pub previous_key_version: Option<i32>,
        #[sea_orm(column_name = "old_secret_expire_time")]
        pub previous_secret_expire_time: Option<i64>,
        pub creator: String,
        pub version: i64,
        pub create_time: i64,
        pub update_time: i64,
        /// The last event acknowledged (or skipped) for this subscription.
        pub position: i64,
        pub lease_owner: Option<String>,
        pub lease_expire_time: Option<i64>,
        /// When the first failed attempt of the current event was made.
        pub failing_since: Option<i64>,
        pub failed_attempts: i32,
        pub next_attempt_time: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod delivery {
    use sea_orm::entity::prelude::*;

    use crate::store::DeliveryOutcome;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "webhook_deliveries")]
    pub struct Model {
        /// The database's: [`Store::insert_delivery`] ignores what the row holds here (0 by
        /// convention).
        ///
        /// [`Store::insert_delivery`]: crate::store::Store::insert_delivery
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub team: String,
        pub subscription_id: String,
        pub webhook_id: String,
        pub event_type: String,
        pub event_seq: i64,
        pub attempt: i32,
        pub time: i64,
        pub outcome: DeliveryOutcome,
        pub response_code: Option<i32>,
        pub latency_micros: i64,
        /// The start of the response body, truncated.
        pub response_body: String,
        /// Why the attempt failed, for people (never a secret).
        pub error: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub use delivery::Model as DeliveryRow;
pub use subscription::Model as SubscriptionRow;

/// Where a failing subscription stands after an attempt.
#[derive(Clone, Copy, Debug)]
pub struct Failure {
    pub failing_since: i64,
    pub failed_attempts: i32,
    pub next_attempt_time: i64,
}

use subscription::Column as S;

/// A subscription's delivery state: its position, lease and failures, which the deliverer
/// moves and a change of its settings never writes.
const DELIVERY_STATE: [S; 6] = [
    S::Position,
    S::LeaseOwner,
    S::LeaseExpireTime,
    S::FailingSince,
    S::FailedAttempts,
    S::NextAttemptTime,
];

impl Tx {
    /// Which of `teams` have a subscription naming the event kind `kind` (JSON text of its
    /// name, as `event_types` stores it).
    pub async fn teams_subscribed_to(&self, teams: &[&str], kind: &str) -> Result<Vec<String>> {
        if teams.is_empty() {
            return Ok(Vec::new());
        }
        let quoted = serde_json::to_string(kind).unwrap_or_default();
        Ok(subscription::Entity::find()
            .select_only()
            .column(subscription::Column::Team)
            .distinct()
            .filter(subscription::Column::Team.is_in(teams.iter().copied()))
            .filter(subscription::Column::EventTypes.contains(quoted))
            .into_tuple()
            .all(self.conn())
            .await?)
    }

    pub async fn insert_subscription(&self, row: SubscriptionRow) -> Result<()> {
        subscription::Entity::insert(subscription::ActiveModel::from(row))
            .exec_without_returning(&self.inner)
            .await?;
        Ok(())
    }

    /// Reads a subscription of `team` and, on PostgreSQL, locks its row until commit.
    pub async fn lock_subscription(&self, team: &str, id: &str) -> Result<Option<SubscriptionRow>> {
        let mut query = subscription::Entity::find_by_id(id.to_owned()).filter(S::Team.eq(team));
        if self.postgres {
            query = query.lock(sea_orm::sea_query::LockType::Update);
        }
        Ok(query.one(&self.inner).await?)
    }

    /// Replaces a subscription's settings if its version is still `expected_version`. Its
    /// delivery state ([`DELIVERY_STATE`]) is not written: the deliverer moves it
    /// concurrently, and only [`Tx::reset_delivery`] sets it.
    pub async fn update_subscription(
        &self,
        row: SubscriptionRow,
        expected_version: i64,
    ) -> Result<bool> {
        let (id, team) = (row.id.clone(), row.team.clone());
        // `from` marks every value Unchanged, which `set` skips: `reset_all` writes them.
        let mut settings = subscription::ActiveModel::from(row).reset_all();
        for column in DELIVERY_STATE {
            settings.not_set(column);
        }
        let result = subscription::Entity::update_many()
            .set(settings)
            .filter(S::Id.eq(id))
            .filter(S::Team.eq(team))
            .filter(S::Version.eq(expected_version))
            .exec(&self.inner)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Starts delivery afresh: failures cleared, the position moved to `position` when
    /// given, and the lease taken away, so a delivery in flight cannot acknowledge over it
    /// (its conditional writes need the lease).
    pub async fn reset_delivery(&self, team: &str, id: &str, position: Option<i64>) -> Result<()> {
        let mut update = subscription::Entity::update_many()
            .col_expr(S::FailingSince, Expr::value(Option::<i64>::None))
            .col_expr(S::FailedAttempts, Expr::value(0))
            .col_expr(S::NextAttemptTime, Expr::value(Option::<i64>::None))
            .col_expr(S::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(S::LeaseExpireTime, Expr::value(Option::<i64>::None));
        if let Some(position) = position {
            update = update.col_expr(S::Position, Expr::value(position));
        }
        update
            .filter(S::Id.eq(id))
            .filter(S::Team.eq(team))
            .exec(&self.inner)
            .await?;
        Ok(())
    }

    pub async fn delete_subscription(&self, team: &str, id: &str) -> Result<bool> {
        let result = subscription::Entity::delete_many()
            .filter(S::Id.eq(id))
            .filter(S::Team.eq(team))
            .exec(&self.inner)
            .await?;
        delivery::Entity::delete_many()
            .filter(delivery::Column::SubscriptionId.eq(id))
            .exec(&self.inner)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// How many subscriptions `team` has, counted under the team's cap lock
    /// ([`Tx::lock_cap`]): held until commit, so a create that counts here and inserts is not
    /// passed by another.
    pub async fn count_subscriptions(&self, team: &str) -> Result<u64> {
        self.lock_cap(super::Cap::WebhookSubscriptions, team, "")
            .await?;
        Ok(subscription::Entity::find()
            .filter(S::Team.eq(team))
            .count(&self.inner)
            .await?)
    }
}

impl Store {
    pub async fn get_subscription(&self, team: &str, id: &str) -> Result<Option<SubscriptionRow>> {
        Ok(subscription::Entity::find_by_id(id.to_owned())
            .filter(S::Team.eq(team))
            .one(&self.db)
            .await?)
    }

    /// Subscription `id` while `owner` holds its lease, else None: the deliverer reads its
    /// position under the lease, so a reset (redelivery, update) that took the lease away
    /// between the renewal and this read is not undone by a send from the old position.
    pub async fn get_leased_subscription(
        &self,
        team: &str,
        id: &str,
        owner: &str,
    ) -> Result<Option<SubscriptionRow>> {
        Ok(subscription::Entity::find_by_id(id.to_owned())
            .filter(S::Team.eq(team))
            .filter(S::LeaseOwner.eq(owner))
            .one(&self.db)
            .await?)
    }

    /// A team's subscriptions, oldest first, after `(create_time, id)` when given.
    pub async fn list_subscriptions(
        &self,
        team: &str,
        after: Option<(i64, String)>,
        limit: u64,
    ) -> Result<Vec<SubscriptionRow>> {
        let mut query = subscription::Entity::find().filter(S::Team.eq(team));
        if let Some((time, id)) = after {
            query = query.filter(
                Condition::any().add(S::CreateTime.gt(time)).add(
                    Condition::all()
                        .add(S::CreateTime.eq(time))
                        .add(S::Id.gt(id)),
                ),
            );
        }
        Ok(query
            .order_by(S::CreateTime, Order::Asc)
            .order_by(S::Id, Order::Asc)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Enabled subscriptions with something to deliver (behind `newest`), due now, whose
    /// lease is free, expired or `owner`'s, of teams other than `skip_teams` (those whose
    /// share of the deliverer is in use): candidates for [`Store::take_lease`].
    pub async fn due_subscriptions(
        &self,
        owner: &str,
        newest: i64,
        now: i64,
        skip_teams: &[String],
        limit: u64,
    ) -> Result<Vec<SubscriptionRow>> {
        Ok(subscription::Entity::find()
            .filter(S::Enabled.eq(true))
            .filter(S::Team.is_not_in(skip_teams.iter().cloned()))
            .filter(S::Position.lt(newest))
            .filter(
                Condition::any()
                    .add(S::NextAttemptTime.is_null())
                    .add(S::NextAttemptTime.lte(now)),
            )
            .filter(
                Condition::any()
                    .add(S::LeaseOwner.is_null())
                    .add(S::LeaseOwner.eq(owner))
                    .add(S::LeaseExpireTime.lt(now)),
            )
            .order_by(S::Position, Order::Asc)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Takes (or renews) the lease of subscription `id` for `owner` until `until`, if it is
    /// free, expired or already `owner`'s. One conditional update: of two replicas racing,
    /// one wins.
    pub async fn take_webhook_lease(
        &self,
        id: &str,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<bool> {
        let result = subscription::Entity::update_many()
            .col_expr(S::LeaseOwner, Expr::value(owner))
            .col_expr(S::LeaseExpireTime, Expr::value(until))
            .filter(S::Id.eq(id))
            .filter(
                Condition::any()
                    .add(S::LeaseOwner.is_null())
                    .add(S::LeaseOwner.eq(owner))
                    .add(S::LeaseExpireTime.lt(now)),
            )
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Gives the lease back, if `owner` still holds it.
    pub async fn release_webhook_lease(&self, id: &str, owner: &str) -> Result<()> {
        subscription::Entity::update_many()
            .col_expr(S::LeaseOwner, Expr::value(Option::<String>::None))
            .col_expr(S::LeaseExpireTime, Expr::value(Option::<i64>::None))
            .filter(S::Id.eq(id))
            .filter(S::LeaseOwner.eq(owner))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Acknowledges everything up to `position` (delivered or not subscribed) and clears the
    /// failures, if `owner` still holds the lease. False when it lost it.
    pub async fn advance_position(&self, id: &str, owner: &str, position: i64) -> Result<bool> {
        let result = subscription::Entity::update_many()
            .col_expr(S::Position, Expr::value(position))
            .col_expr(S::FailingSince, Expr::value(Option::<i64>::None))
            .col_expr(S::FailedAttempts, Expr::value(0))
            .col_expr(S::NextAttemptTime, Expr::value(Option::<i64>::None))
            .filter(S::Id.eq(id))
            .filter(S::LeaseOwner.eq(owner))
            .filter(S::Position.lte(position))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Records a failed attempt and when to try again, if `owner` still holds the lease.
    pub async fn record_failure(&self, id: &str, owner: &str, failure: Failure) -> Result<bool> {
        let result = subscription::Entity::update_many()
            .col_expr(S::FailingSince, Expr::value(failure.failing_since))
            .col_expr(S::FailedAttempts, Expr::value(failure.failed_attempts))
            .col_expr(S::NextAttemptTime, Expr::value(failure.next_attempt_time))
            .filter(S::Id.eq(id))
            .filter(S::LeaseOwner.eq(owner))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// Records a delivery attempt (its `seq` is the database's).
    pub async fn insert_delivery(&self, row: DeliveryRow) -> Result<()> {
        delivery::Entity::insert(new_row::<delivery::ActiveModel>(row))
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// A subscription's delivery attempts, newest first, before `before` when given.
    pub async fn list_deliveries(
        &self,
        team: &str,
        subscription_id: &str,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<DeliveryRow>> {
        let mut query = delivery::Entity::find()
            .filter(delivery::Column::Team.eq(team))
            .filter(delivery::Column::SubscriptionId.eq(subscription_id));
        if let Some(before) = before {
            query = query.filter(delivery::Column::Seq.lt(before));
        }
        Ok(query
            .order_by(delivery::Column::Seq, Order::Desc)
            .limit(limit)
            .all(&self.db)
            .await?)
    }

    /// Deletes delivery records older than `cutoff` (microseconds).
    pub async fn prune_deliveries(&self, cutoff: i64) -> Result<u64> {
        Ok(delivery::Entity::delete_many()
            .filter(delivery::Column::Time.lt(cutoff))
            .exec(&self.db)
            .await?
            .rows_affected)
    }
}
