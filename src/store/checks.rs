//! What a group commit checks before it writes: the versions of records that were read
//! earlier (possibly by another transaction, or kept in a read cache).

use std::collections::{BTreeSet, HashMap};

use sea_orm::{ConnectionTrait, DatabaseBackend, Statement};

use super::{Result, Tx};

impl Tx {
    /// The versions of those of these integrations and installed apps that exist (by id,
    /// across teams), in one statement.
    pub async fn record_versions(
        &self,
        integrations: &BTreeSet<&str>,
        apps: &BTreeSet<&str>,
    ) -> Result<(HashMap<String, i64>, HashMap<String, i64>)> {
        let backend = self.inner.get_database_backend();
        let mut values: Vec<sea_orm::Value> = Vec::new();
        let mut list = |ids: &BTreeSet<&str>| {
            let mut marks = Vec::with_capacity(ids.len());
            for id in ids {
                values.push((*id).into());
                marks.push(match backend {
                    DatabaseBackend::Postgres => format!("${}", values.len()),
                    _ => "?".to_owned(),
                });
            }
            if marks.is_empty() {
                // An empty IN list is not SQL: nothing matches this.
                "NULL".to_owned()
            } else {
                marks.join(", ")
            }
        };
        let sql = format!(
            "SELECT 'i' AS kind, id, version FROM integrations WHERE id IN ({}) \
             UNION ALL SELECT 'a' AS kind, id, version FROM installed_apps WHERE id IN ({})",
            list(integrations),
            list(apps)
        );
        let rows = self
            .inner
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
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
