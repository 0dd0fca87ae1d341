//! Reads by key the cache cannot answer, batched: concurrent GetInstalledApp (or
//! GetIntegration) calls that miss the read cache share one statement
//! ([`Store::read_keys`]), one round trip to the database (on SQLite, one hand-off to a
//! connection's worker thread) for up to [`KEYS_PER_READ`] records. A read alone is sent at
//! once, as before; under load, the reads that queue while the readers are busy go together
//! in the next statement.
//!
//! What each caller gets is what it would have read alone: the statement runs after its
//! call was queued, so it sees every change committed before the call (a replica reads its
//! own writes), and each record is read by its own team and id. A batch that fails sends
//! each of its callers to read alone, so that each is answered with its own read's error.

use crate::store::{KEYS_PER_READ, KeyedRead, Store};

use super::error::Result;
use super::group_commit::{GroupCommit, WriteBatch};

/// Statements in flight at once, each on one pooled connection (4 of the default 16): one
/// gathers while others run.
const READERS: usize = 4;

/// A read's answer: the record, `None` if there is none of that key; `Err(())` if the
/// batch failed.
type Answer<T> = std::result::Result<Option<T>, ()>;

/// Batched reads of one kind of record.
pub(super) struct KeyedReads<T: 'static> {
    batch: GroupCommit<(String, String), Answer<T>, Reader<T>>,
    store: Store,
    read: &'static KeyedRead<T>,
}

struct Reader<T: 'static> {
    store: Store,
    read: &'static KeyedRead<T>,
}

impl<T: Clone + Send + Sync + 'static> WriteBatch<(String, String), Answer<T>> for Reader<T> {
    async fn write(&self, batch: Vec<(String, String)>) -> Vec<Answer<T>> {
        let keys: Vec<(&str, &str)> = batch
            .iter()
            .map(|(team, id)| (team.as_str(), id.as_str()))
            .collect();
        match self.store.read_keys(self.read, &keys).await {
            Ok(records) => records.into_iter().map(Ok).collect(),
            Err(_) => batch.iter().map(|_| Err(())).collect(),
        }
    }
}

impl<T: Clone + Send + Sync + 'static> KeyedReads<T> {
    pub(super) fn new(store: Store, read: &'static KeyedRead<T>) -> Self {
        KeyedReads {
            batch: GroupCommit::new(
                Reader {
                    store: store.clone(),
                    read,
                },
                READERS,
                KEYS_PER_READ,
            ),
            store,
            read,
        }
    }

    /// The record `id` of `team`, read with whatever reads are queued with it (alone, when
    /// that batch failed or the readers are gone).
    pub(super) async fn read(&self, team: &str, id: &str) -> Result<Option<T>> {
        match self.batch.submit((team.to_owned(), id.to_owned())).await {
            Some(Ok(record)) => Ok(record),
            Some(Err(())) | None => Ok(self.store.read_keyed(self.read, team, id).await?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::error::Error;
    use crate::store::APP_WITH_COUNT;

    /// Reads whose batch fails are each read alone and answered with that read's own error,
    /// never left waiting or answered with another's: here the database went away, so each
    /// is UNAVAILABLE. Before it went, a missing app was read as none.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_batch_answers_each_read_with_its_own_error() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("reads.db").display()
        );
        let store = Store::connect(&url, 4).await.expect("connect");
        store.migrate().await.expect("migrate");
        let reads = KeyedReads::new(store.clone(), &APP_WITH_COUNT);
        let missing = reads.read("acme", "no-such-app").await.expect("a read");
        assert!(missing.is_none());

        store.close().await;
        let ids: Vec<String> = (0..16).map(|i| format!("app-{i}")).collect();
        let answers =
            futures_util::future::join_all(ids.iter().map(|id| reads.read("acme", id))).await;
        assert_eq!(answers.len(), ids.len());
        for answer in answers {
            assert!(
                matches!(answer, Err(Error::Unavailable(_))),
                "{:?}",
                answer.map(|read| read.is_some())
            );
        }
    }
}
