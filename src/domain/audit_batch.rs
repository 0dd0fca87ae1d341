//! Group commit of the audit records of credential resolutions. A resolution hands out
//! credentials only once its record is durable; committing each record in a transaction of
//! its own made every resolution wait for a disk flush (SQLite `synchronous=FULL`) or a
//! PostgreSQL commit by itself. Here concurrent resolutions share one: a single writer task
//! takes every record queued while the previous commit was running, appends them in one
//! transaction and one statement, commits, and only then answers each waiting resolution.
//! Nothing is lost (no answer before its commit), and a failed commit fails every resolution
//! of its batch, none of which hands out credentials.
//!
//! The same transaction checks what each resolution read (possibly from the read cache):
//! the versions of its integration and app must still be the stored ones. A resolution whose
//! records changed since (deleted, suspended, rejected, new credentials) gets no success
//! record and answers nothing from what it read: it reads again. It also records the last
//! use of the integrations and apps the current resolutions used, where that is due (one
//! statement per table for the batch): a resolution of a record not used for a minute costs
//! no transaction of its own.

use std::collections::{BTreeSet, HashMap};

use crate::store::{AuditRow, Store, StoreError, Tx};

use super::error::{Error, Result};
use super::group_commit::{GroupCommit, WriteBatch};

/// Most records committed together.
const MAX_BATCH: usize = 512;
/// Batches committing at once on PostgreSQL: one gathers while the other commits. At three,
/// resolutions ran at 0.7-1.0 of the rate (smaller batches, more server CPU each); at six,
/// at about half (BENCHMARKS.md).
const PG_WRITERS: usize = 2;

/// The versions a resolution read, which must still be stored when its record commits, and
/// the last uses it records with it.
#[derive(Clone, Debug)]
pub(super) struct Versions {
    pub integration: (String, i64),
    pub app: Option<(String, i64)>,
    pub uses: Uses,
}

/// The records (ids) whose last use a resolution records at `now`, where it is stored as
/// older than `stale_before`.
#[derive(Clone, Debug, Default)]
pub(super) struct Uses {
    pub integration: Option<String>,
    pub app: Option<String>,
    pub now: i64,
    pub stale_before: i64,
}

impl Uses {
    pub(super) fn is_empty(&self) -> bool {
        self.integration.is_none() && self.app.is_none()
    }
}

/// Writes the last uses of several resolutions: one statement per table, at the latest
/// `now` among them (and its `stale_before`).
pub(super) async fn record_uses<'a>(
    tx: &Tx,
    uses: impl IntoIterator<Item = &'a Uses>,
) -> Result<(), StoreError> {
    let uses: Vec<&Uses> = uses.into_iter().filter(|u| !u.is_empty()).collect();
    let Some((now, stale_before)) = uses.iter().map(|u| (u.now, u.stale_before)).max() else {
        return Ok(());
    };
    let integrations: BTreeSet<&str> = uses
        .iter()
        .filter_map(|u| u.integration.as_deref())
        .collect();
    let apps: BTreeSet<&str> = uses.iter().filter_map(|u| u.app.as_deref()).collect();
    let integrations: Vec<&str> = integrations.into_iter().collect();
    let apps: Vec<&str> = apps.into_iter().collect();
    tx.touch_integrations(&integrations, now, stale_before)
        .await?;
    tx.touch_apps(&apps, now, stale_before).await?;
    Ok(())
}

/// What became of a checked record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Checked {
    /// Committed: the versions read are the stored ones.
    Committed,
    /// Not written: a record read has changed or is gone.
    Outdated,
}

/// How a batch's commit ended, for every resolution in it.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Committed,
    Outdated,
    StorageFull,
    Unavailable,
    Failed,
}

impl From<&StoreError> for Outcome {
    fn from(err: &StoreError) -> Self {
        match err {
            StoreError::StorageFull(_) => Outcome::StorageFull,
            StoreError::Unavailable(_) => Outcome::Unavailable,
            StoreError::Conflict | StoreError::Busy(_) | StoreError::Db(_) => Outcome::Failed,
        }
    }
}

struct Queued {
    record: AuditRow,
    check: Option<Versions>,
}

/// The group commit of resolution records.
pub(super) struct AuditBatch {
    batch: GroupCommit<Queued, Outcome, Records>,
}

/// Writes a batch of records: [`commit`].
struct Records {
    store: Store,
}

impl WriteBatch<Queued, Outcome> for Records {
    async fn write(&self, batch: Vec<Queued>) -> Vec<Outcome> {
        match commit(&self.store, &batch).await {
            Ok(current) => current
                .into_iter()
                .map(|current| {
                    if current {
                        Outcome::Committed
                    } else {
                        Outcome::Outdated
                    }
                })
                .collect(),
            Err(err) => vec![Outcome::from(&err); batch.len()],
        }
    }
}

impl AuditBatch {
    pub(super) fn new(store: Store) -> AuditBatch {
        // SQLite has one writer at a time; PostgreSQL commits concurrent transactions
        // together, so there one batch gathers while others commit.
        let writers = if store.is_postgres() { PG_WRITERS } else { 1 };
        AuditBatch {
            batch: GroupCommit::new(Records { store }, writers, MAX_BATCH),
        }
    }

    /// Appends `record` and returns once it is committed (with the records of concurrent
    /// callers), or the error that stopped its commit.
    #[cfg(test)]
    pub(super) async fn append(&self, record: AuditRow) -> Result<()> {
        self.append_checked(record, None).await.map(|_| ())
    }

    /// Appends `record` if the records `check` names still have the versions it gives, and
    /// returns once that is committed; [`Checked::Outdated`] (nothing written) otherwise.
    pub(super) async fn append_checked(
        &self,
        record: AuditRow,
        check: Option<Versions>,
    ) -> Result<Checked> {
        let outcome = self
            .batch
            .submit(Queued { record, check })
            .await
            .ok_or_else(|| Error::Unavailable("the audit writer stopped; retry later".into()))?;
        match outcome {
            Outcome::Committed => Ok(Checked::Committed),
            Outcome::Outdated => Ok(Checked::Outdated),
            Outcome::StorageFull => Err(Error::StorageFull),
            Outcome::Unavailable => Err(Error::Unavailable(
                "the database is unavailable; retry later".into(),
            )),
            Outcome::Failed => Err(Error::internal("the audit record was not written")),
        }
    }
}

/// Checks every queued resolution's versions and appends the records of those still
/// current, in one transaction; answers which were.
async fn commit(store: &Store, batch: &[Queued]) -> Result<Vec<bool>, StoreError> {
    let mut tx = store.begin_write().await?;
    let checks = || batch.iter().filter_map(|q| q.check.as_ref());
    let (integrations, apps) = if checks().next().is_some() {
        // Each id once (concurrent resolutions often use the same integration), both tables
        // in one statement.
        let integration_ids: BTreeSet<&str> = checks().map(|c| c.integration.0.as_str()).collect();
        let app_ids: BTreeSet<&str> = checks()
            .filter_map(|c| c.app.as_ref().map(|(id, _)| id.as_str()))
            .collect();
        tx.record_versions(&integration_ids, &app_ids).await?
    } else {
        (HashMap::new(), HashMap::new())
    };
    let stored = |(id, version): &(String, i64), versions: &HashMap<String, i64>| {
        versions.get(id) == Some(version)
    };
    let current: Vec<bool> = batch
        .iter()
        .map(|q| match &q.check {
            None => true,
            Some(check) => {
                stored(&check.integration, &integrations)
                    && check.app.as_ref().is_none_or(|app| stored(app, &apps))
            }
        })
        .collect();
    let committed = || {
        batch
            .iter()
            .zip(&current)
            .filter(|(_, current)| **current)
            .map(|(q, _)| q)
    };
    record_uses(
        &tx,
        committed().filter_map(|q| q.check.as_ref().map(|c| &c.uses)),
    )
    .await?;
    tx.append_audits(committed().map(|q| q.record.clone()).collect())
        .await?;
    tx.commit().await?;
    Ok(current)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::domain::model::{AuditAction, Role};
    use crate::domain::test_support::{self, actor, team};
    use crate::store::AuditFilter;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_records_are_all_committed_before_their_callers_return() {
        let t = Arc::new(test_support::hub().await);
        let mut tasks = Vec::new();
        for i in 0..200 {
            let t = t.clone();
            tasks.push(tokio::spawn(async move {
                let record = t.hub.context().audit_success(
                    &actor(Role::Service, &format!("svc-{i}")),
                    &team(),
                    AuditAction::IntegrationResolveCredentials,
                    format!("teams/acme/integrations/i{i}"),
                );
                t.hub
                    .integrations()
                    .resolutions()
                    .append(record)
                    .await
                    .expect("committed");
                // Returned: the record is there for any reader.
                let rows = t
                    .store
                    .list_audit(
                        "acme",
                        &AuditFilter {
                            actor: Some(format!("svc-{i}")),
                            ..AuditFilter::default()
                        },
                        None,
                        10,
                    )
                    .await
                    .expect("list");
                assert_eq!(rows.len(), 1, "svc-{i}");
            }));
        }
        for task in tasks {
            task.await.expect("task");
        }
        let all = t
            .store
            .list_audit("acme", &AuditFilter::default(), None, 1000)
            .await
            .expect("list");
        assert_eq!(all.len(), 200);
    }
}
