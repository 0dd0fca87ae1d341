//! What a group commit checks before it writes: the versions of records that were read
//! earlier (possibly by another transaction, or kept in a read cache).

use std::collections::{BTreeSet, HashMap};

use sea_orm::sea_query::{Alias, Expr, Query, SelectStatement, UnionType};
use sea_orm::{ConnectionTrait, DatabaseBackend, EntityTrait};

use super::entities::{installed_app, integration};
use super::sets::is_one_of;
use super::{Result, Tx};

/// `SELECT kind, id, version FROM <E> WHERE id IN (ids)`, the ids bound as one value.
fn versions<E: EntityTrait>(
    backend: DatabaseBackend,
    kind: &'static str,
    [id, version]: [E::Column; 2],
    ids: &BTreeSet<&str>,
) -> SelectStatement {
    let mut query = Query::select();
    query
        .expr_as(Expr::val(kind), Alias::new("kind"))
        .column(id)
        .column(version)
        .from(E::default())
        .and_where(is_one_of(backend, id, ids.iter().copied()));
    query
}

impl Tx {
    /// The versions of those of these integrations and installed apps that exist (by id,
    /// across teams), in one statement.
    pub async fn record_versions(
        &self,
        integrations: &BTreeSet<&str>,
        apps: &BTreeSet<&str>,
    ) -> Result<(HashMap<String, i64>, HashMap<String, i64>)> {
        use installed_app::Column as A;
        use integration::Column as I;
        let backend = self.inner.get_database_backend();
        let mut query =
            versions::<integration::Entity>(backend, "i", [I::Id, I::Version], integrations);
        query.union(
            UnionType::All,
            versions::<installed_app::Entity>(backend, "a", [A::Id, A::Version], apps),
        );
        let rows = self.inner.query_all_raw(backend.build(&query)).await?;
        let (mut integrations, mut apps) = (HashMap::new(), HashMap::new());
        for row in rows {
            let kind: String = row.try_get("", "kind")?;
            let id: String = row.try_get("", "id")?;
            let version: i64 = row.try_get("", "version")?;
            match kind.as_str() {
                "i" => integrations.insert(id, version),
                _ => apps.insert(id, version),
            };
        }
        Ok((integrations, apps))
    }
}
