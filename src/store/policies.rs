//! A team's policy per service: one row per (team, service) set; none: ALLOWED.

use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter};

use super::entities::{installation_request, service_policy};
use super::{RequestState, Result, ServicePolicy, Store, Tx};

/// A stored policy.
pub type PolicyRow = service_policy::Model;
/// A stored installation request.
pub type RequestRow = installation_request::Model;

impl Tx {
    /// The team's policy for `service` (ALLOWED when none is stored).
    pub async fn service_policy(&self, team: &str, service: &str) -> Result<ServicePolicy> {
        use service_policy::Column as C;
        let row = service_policy::Entity::find()
            .filter(C::Team.eq(team))
            .filter(C::Service.eq(service))
            .one(self.conn())
            .await?;
        Ok(row.map_or(ServicePolicy::Allowed, |r| r.policy))
    }

    /// Stores a policy, replacing the one before.
    pub async fn put_service_policy(&self, row: PolicyRow) -> Result<()> {
        use service_policy::Column as C;
        service_policy::Entity::delete_many()
            .filter(C::Team.eq(row.team.as_str()))
            .filter(C::Service.eq(row.service.as_str()))
            .exec(self.conn())
            .await?;
        service_policy::Entity::insert(service_policy::ActiveModel::from(row))
            .exec_without_returning(self.conn())
            .await?;
        Ok(())
    }
}

const OPEN: [RequestState; 2] = [RequestState::Pending, RequestState::Approved];

impl Tx {
    pub async fn insert_request(&self, row: RequestRow) -> Result<()> {
        installation_request::Entity::insert(installation_request::ActiveModel::from(row))
            .exec_without_returning(self.conn())
            .await?;
        Ok(())
    }

    /// The requester's open (pending or approved) request for `service`, if any.
    pub async fn open_request(
        &self,
        team: &str,
        requester: &str,
        service: &str,
    ) -> Result<Option<RequestRow>> {
        use installation_request::Column as C;
        Ok(installation_request::Entity::find()
            .filter(C::Team.eq(team))
            .filter(C::Requester.eq(requester))
            .filter(C::Service.eq(service))
            .filter(C::State.is_in(OPEN))
            .one(self.conn())
            .await?)
    }

    /// A team's request.
    pub async fn get_request(&self, team: &str, id: &str) -> Result<Option<RequestRow>> {
        use installation_request::Column as C;
        Ok(installation_request::Entity::find_by_id(id.to_owned())
            .filter(C::Team.eq(team))
            .one(self.conn())
            .await?)
    }

    /// Moves a request from `from` to `row`'s state; false when it was no longer in `from`.
    pub async fn decide_request(&self, row: RequestRow, from: RequestState) -> Result<bool> {
        use installation_request::Column as C;
        let id = row.id.clone();
        let result = installation_request::Entity::update_many()
            .set(installation_request::ActiveModel::from(row).reset_all())
            .filter(C::Id.eq(id))
            .filter(C::State.eq(from))
            .exec(self.conn())
            .await?;
        Ok(result.rows_affected == 1)
    }

    /// The open (pending or approved) requests of `requester` in `team`, oldest first,
    /// locked on PostgreSQL (deprovisioning cancels them). One per service at most.
    pub async fn open_requests_of(&self, team: &str, requester: &str) -> Result<Vec<RequestRow>> {
        use installation_request::Column as C;
        use sea_orm::QueryOrder;
        use sea_orm::QuerySelect;
        use sea_orm::sea_query::LockType;
        let mut query = installation_request::Entity::find()
            .filter(C::Team.eq(team))
            .filter(C::Requester.eq(requester))
            .filter(C::State.is_in(OPEN))
            .order_by_asc(C::CreateTime)
            .order_by_asc(C::Id);
        if self.postgres {
            query = query.lock(LockType::Update);
        }
        Ok(query.all(self.conn()).await?)
    }
}

impl Store {
    /// A team's requests, newest first, at most `limit`, in `state` when given.
    pub async fn list_requests(
        &self,
        team: &str,
        state: Option<RequestState>,
        limit: u64,
    ) -> Result<Vec<RequestRow>> {
        use installation_request::Column as C;
        use sea_orm::{QueryOrder, QuerySelect};
        let mut query = installation_request::Entity::find().filter(C::Team.eq(team));
        if let Some(state) = state {
            query = query.filter(C::State.eq(state));
        }
        Ok(query
            .order_by_desc(C::CreateTime)
            .order_by_desc(C::Id)
            .limit(limit)
            .all(self.conn())
            .await?)
    }
}
