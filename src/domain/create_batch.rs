//! Group commit of creates on PostgreSQL. A create bound to an installed app is written in
//! one statement with its event and its success record (`store::at_once`); concurrent
//! creates share that statement (and its commit), so under load a round trip to the
//! database serves many of them. Each answer waits for the commit that holds its create.
//!
//! A create the statement did not write (its app changed, its idempotency key is taken, or
//! the statement failed for a reason of its own) goes the long way, in a transaction of its
//! own, which answers why. A full disk or an unreachable database answers every create of
//! the batch as the long way would.

use crate::store::{NewCreate, Store, StoreError};

use super::error::{Error, Result};
use super::group_commit::{GroupCommit, WriteBatch};

/// Most creates written together (in statements of the store's fixed sizes).
const MAX_BATCH: usize = 128;
/// Batches written at once: some gather while others commit. Under 256 creates in flight a
/// batch took ~55 ms of wall time however many creates it held (its statements ran in a few
/// ms; the rest was waiting for the runtime's busy threads): 3 writers wrote ~2,100 creates
/// per second in batches of ~50, 8 writers ~2,800 in batches of ~12. Each writes on one
/// pooled connection at a time (8 of the default 16).
const WRITERS: usize = 8;

/// What became of one queued create.
#[derive(Clone, Copy, Debug)]
enum Written {
    Yes,
    No,
    StorageFull,
    Unavailable,
}

/// The group commit of creates (PostgreSQL).
pub(super) struct CreateBatch {
    batch: GroupCommit<NewCreate, Written, Creates>,
}

/// Writes a batch of creates, a statement per chunk.
struct Creates {
    store: Store,
}

impl WriteBatch<NewCreate, Written> for Creates {
    async fn write(&self, batch: Vec<NewCreate>) -> Vec<Written> {
        let mut answers = Vec::with_capacity(batch.len());
        let mut batch = batch.into_iter();
        while batch.len() > 0 {
            let size = Store::create_statement_size(batch.len());
            let chunk: Vec<NewCreate> = batch.by_ref().take(size).collect();
            match self.store.create_integrations_at_once(chunk).await {
                Ok(written) => answers.extend(
                    written
                        .into_iter()
                        .map(|yes| if yes { Written::Yes } else { Written::No }),
                ),
                Err(err) => {
                    let answer = match err {
                        StoreError::StorageFull(_) => Written::StorageFull,
                        StoreError::Unavailable(_) => Written::Unavailable,
                        StoreError::Conflict | StoreError::Busy(_) | StoreError::Db(_) => {
                            tracing::warn!(
                                error = %err,
                                creates = size,
                                "creates written together failed; each goes the long way"
                            );
                            Written::No
                        }
                    };
                    answers.extend(std::iter::repeat_n(answer, size));
                }
            }
        }
        answers
    }
}

impl CreateBatch {
    pub(super) fn new(store: Store) -> CreateBatch {
        CreateBatch {
            batch: GroupCommit::new(Creates { store }, WRITERS, MAX_BATCH),
        }
    }

    /// Writes `create` with whatever creates are queued with it; `false` when it was not
    /// written (nothing of it was: the caller goes the long way).
    pub(super) async fn create(&self, create: NewCreate) -> Result<bool> {
        match self.batch.submit(create).await {
            Some(Written::Yes) => Ok(true),
            Some(Written::No) => Ok(false),
            Some(Written::StorageFull) => Err(Error::StorageFull),
            Some(Written::Unavailable) | None => Err(Error::Unavailable(
                "the database is unavailable; retry later".into(),
            )),
        }
    }
}
