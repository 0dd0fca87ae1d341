//! A team's policy per service (issue 25): one row per (team, service) set; none: ALLOWED.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use super::entities::service_policy;
use super::{Result, ServicePolicy, Tx};

/// A stored policy.
pub type PolicyRow = service_policy::Model;

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
