//! Sealed values by key version: what `rotate-keys` re-seals and what `serve` probes at start.

use std::collections::BTreeMap;

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, FromQueryResult, QueryFilter, QueryOrder, QuerySelect};

use super::entities::{installed_app, integration};
use super::{Result, Store, Tx};

/// Where a sealed value is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealedKind {
    /// `installed_apps.credentials`.
    App,
    /// `integrations.own_credentials`.
    Integration,
}

/// One stored sealed value and what identifies its row.
#[derive(Clone, Debug, FromQueryResult)]
pub struct SealedRow {
    pub id: String,
    pub team: String,
    pub sealed: Vec<u8>,
    pub key_version: i32,
    /// The row's version when it was read; a re-seal applies only if it is unchanged.
    pub version: i64,
}

#[derive(FromQueryResult)]
struct VersionCount {
    key_version: i32,
    count: i64,
}

macro_rules! sealed_query {
    ($entity:ident, $credentials:ident) => {
        $entity::Entity::find()
            .select_only()
            .column($entity::Column::Id)
            .column($entity::Column::Team)
            .column_as($entity::Column::$credentials, "sealed")
            .column($entity::Column::KeyVersion)
            .column($entity::Column::Version)
            .filter($entity::Column::$credentials.is_not_null())
    };
}

impl Tx {
    /// Up to `limit` values sealed with a key version below `below`, with an id after
    /// `after`, in id order: a run that walks them resumes where a killed one stopped, and
    /// finds nothing once every value is sealed with the newest key.
    pub async fn sealed_below(
        &self,
        kind: SealedKind,
        below: i32,
        after: &str,
        limit: u64,
    ) -> Result<Vec<SealedRow>> {
        let rows = match kind {
            SealedKind::App => {
                sealed_query!(installed_app, Credentials)
                    .filter(installed_app::Column::KeyVersion.lt(below))
                    .filter(installed_app::Column::Id.gt(after))
                    .order_by_asc(installed_app::Column::Id)
                    .limit(limit)
                    .into_model::<SealedRow>()
                    .all(self.conn())
                    .await?
            }
            SealedKind::Integration => {
                sealed_query!(integration, OwnCredentials)
                    .filter(integration::Column::KeyVersion.lt(below))
                    .filter(integration::Column::Id.gt(after))
                    .order_by_asc(integration::Column::Id)
                    .limit(limit)
                    .into_model::<SealedRow>()
                    .all(self.conn())
                    .await?
            }
        };
        Ok(rows)
    }

    /// Replaces a value's ciphertext if its row is as it was read (same version, same key
    /// version); false when a concurrent change came first. Every other change of these
    /// rows bumps the version, so none is ever overwritten. The version itself is left
    /// alone: re-sealing changes nothing a client can see, so etags stay valid.
    pub async fn reseal(
        &self,
        kind: SealedKind,
        row: &SealedRow,
        sealed: Vec<u8>,
        key_version: i32,
    ) -> Result<bool> {
        let affected = match kind {
            SealedKind::App => {
                installed_app::Entity::update_many()
                    .col_expr(installed_app::Column::Credentials, Expr::value(sealed))
                    .col_expr(installed_app::Column::KeyVersion, Expr::value(key_version))
                    .filter(installed_app::Column::Id.eq(row.id.as_str()))
                    .filter(installed_app::Column::Team.eq(row.team.as_str()))
                    .filter(installed_app::Column::Version.eq(row.version))
                    .filter(installed_app::Column::KeyVersion.eq(row.key_version))
                    .exec(self.conn())
                    .await?
                    .rows_affected
            }
            SealedKind::Integration => {
                integration::Entity::update_many()
                    .col_expr(integration::Column::OwnCredentials, Expr::value(sealed))
                    .col_expr(integration::Column::KeyVersion, Expr::value(key_version))
                    .filter(integration::Column::Id.eq(row.id.as_str()))
                    .filter(integration::Column::Team.eq(row.team.as_str()))
                    .filter(integration::Column::Version.eq(row.version))
                    .filter(integration::Column::KeyVersion.eq(row.key_version))
                    .filter(integration::Column::OwnCredentials.is_not_null())
                    .exec(self.conn())
                    .await?
                    .rows_affected
            }
        };
        Ok(affected == 1)
    }
}

impl Store {
    /// How many stored sealed values each key version seals (both tables together).
    pub async fn key_version_counts(&self) -> Result<BTreeMap<i32, u64>> {
        let mut counts = BTreeMap::new();
        let apps = installed_app::Entity::find()
            .select_only()
            .column(installed_app::Column::KeyVersion)
            .column_as(installed_app::Column::Id.count(), "count")
            .group_by(installed_app::Column::KeyVersion)
            .into_model::<VersionCount>()
            .all(self.conn())
            .await?;
        let integrations = integration::Entity::find()
            .select_only()
            .column(integration::Column::KeyVersion)
            .column_as(integration::Column::Id.count(), "count")
            .filter(integration::Column::OwnCredentials.is_not_null())
            .group_by(integration::Column::KeyVersion)
            .into_model::<VersionCount>()
            .all(self.conn())
            .await?;
        for row in apps.into_iter().chain(integrations) {
            *counts.entry(row.key_version).or_insert(0) += u64::try_from(row.count).unwrap_or(0);
        }
        Ok(counts)
    }

    /// One stored sealed value of the given key version (the one with the smallest id,
    /// installed apps first), if any.
    pub async fn sealed_sample(&self, key_version: i32) -> Result<Option<(SealedKind, SealedRow)>> {
        let app = sealed_query!(installed_app, Credentials)
            .filter(installed_app::Column::KeyVersion.eq(key_version))
            .order_by_asc(installed_app::Column::Id)
            .into_model::<SealedRow>()
            .one(self.conn())
            .await?;
        if let Some(row) = app {
            return Ok(Some((SealedKind::App, row)));
        }
        let integration = sealed_query!(integration, OwnCredentials)
            .filter(integration::Column::KeyVersion.eq(key_version))
            .order_by_asc(integration::Column::Id)
            .into_model::<SealedRow>()
            .one(self.conn())
            .await?;
        Ok(integration.map(|row| (SealedKind::Integration, row)))
    }
}
