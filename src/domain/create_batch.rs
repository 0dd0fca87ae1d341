//! Group commit of creates bound to an installed app, on both databases. Concurrent creates
//! share one transaction and one commit: under load a round trip to the database (and, on
//! SQLite, a flush to disk) serves many of them. Each answer waits for the commit that holds
//! its create.
//!
//! The batch decides with the rules a create written alone runs, in the same order: the
//! scopes its integration type requires, by [`check_granted_scopes`] on the app's
//! verification (read once for the batch, in its transaction); then its app, read
//! (share-locked on PostgreSQL, as
//! [`Integrations::bindable_app`](super::integrations::Integrations) does) and checked by
//! [`check_bindable`] and [`check_offers`]. A create they refuse is answered with their
//! error. The integrations are inserted unless their idempotency key is taken, and
//! [`commit_change`] appends their events and success records and commits, as it ends every
//! change. A create whose key is taken goes the long way, in a transaction of its own, which
//! finds the earlier create; so does every create of a batch that failed for a reason of its
//! own. A full disk or an unreachable database answers every create of the batch as the long
//! way would.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::store::{AppRow, AuditRow, EventRow, IntegrationRow, Store, VerificationRow};

use super::binding::{check_bindable, check_offers};
use super::context::commit_change;
use super::error::{Error, Result};
use super::group_commit::{GroupCommit, WriteBatch};
use super::model::Actor;
use super::types::AppName;
use super::verify::apps::check_granted_scopes;

/// Most creates written together.
const MAX_BATCH: usize = 128;
/// Batches written at once on PostgreSQL: one gathers while the other commits, each on one
/// pooled connection (2 of the default 16). More writers make smaller batches, each a
/// transaction that holds the outbox's shared lock until it commits: at 8, creates spent
/// 40% more server CPU each and ran at two thirds of the rate (BENCHMARKS.md). SQLite writes
/// one transaction at a time, so there one writer gathers while it waits.
const PG_WRITERS: usize = 2;

/// One create for the batch: the new integration (bound to `app`), its event and its success
/// record.
pub(super) struct QueuedCreate {
    /// Who asks: `usable_by` is decided for them.
    pub actor: Actor,
    pub app: AppName,
    /// The scopes the integration's type (`row.type_id`) requires of the app's grant.
    pub required_scopes: Vec<String>,
    pub row: IntegrationRow,
    pub event: EventRow,
    pub record: AuditRow,
}

/// What became of one queued create.
enum Written {
    /// Committed, with its event and its success record.
    Created,
    /// Refused by the rules: nothing of it was written.
    Refused(Error),
    /// Not written: it goes the long way, which says why.
    NotCreated,
    StorageFull,
    Unavailable,
}

/// The group commit of creates.
pub(super) struct CreateBatch {
    batch: GroupCommit<QueuedCreate, Written, Creates>,
}

/// Writes a batch of creates in one transaction.
struct Creates {
    store: Store,
}

impl WriteBatch<QueuedCreate, Written> for Creates {
    async fn write(&self, batch: Vec<QueuedCreate>) -> Vec<Written> {
        let size = batch.len();
        match write_together(&self.store, batch).await {
            Ok(answers) => answers,
            Err(err) => {
                if !err.is_database_fault() {
                    tracing::warn!(
                        error = %err,
                        creates = size,
                        "creates written together failed; each goes the long way"
                    );
                }
                (0..size)
                    .map(|_| match err {
                        Error::StorageFull => Written::StorageFull,
                        Error::Unavailable(_) => Written::Unavailable,
                        _ => Written::NotCreated,
                    })
                    .collect()
            }
        }
    }
}

/// Writes `batch` in one transaction: the answer for each create, in order.
async fn write_together(store: &Store, batch: Vec<QueuedCreate>) -> Result<Vec<Written>> {
    let tx = store.begin_write().await?;
    let wanted: Vec<(String, String)> = batch
        .iter()
        .map(|c| (c.app.team.as_str().to_owned(), c.app.id.clone()))
        .collect();
    let apps: HashMap<(String, String), AppRow> = tx
        .share_apps(&wanted)
        .await?
        .into_iter()
        .map(|app| ((app.team.clone(), app.id.clone()), app))
        .collect();
    // Keyed by the row's own team and app: a row of another team is never looked up.
    let scoped: BTreeSet<&str> = batch
        .iter()
        .filter(|create| !create.required_scopes.is_empty())
        .map(|create| create.app.id.as_str())
        .collect();
    let verifications: HashMap<(String, String), VerificationRow> = tx
        .verifications_of_ids(scoped)
        .await?
        .into_iter()
        .map(|row| ((row.team.clone(), row.installed_app_id.clone()), row))
        .collect();
    let mut answers = Vec::with_capacity(batch.len());
    let mut allowed = Vec::with_capacity(batch.len());
    for (create, key) in batch.into_iter().zip(wanted) {
        let decided = check_granted_scopes(
            &create.app,
            &create.row.type_id,
            &create.required_scopes,
            verifications.get(&key),
        )
        .and_then(|()| check_bindable(&create.actor, &create.app, apps.get(&key)))
        .and_then(|app| check_offers(app, &create.row.service));
        match decided {
            Ok(()) => {
                answers.push(Written::NotCreated);
                allowed.push((answers.len() - 1, create));
            }
            Err(refused) => answers.push(Written::Refused(refused)),
        }
    }
    let (rows, allowed): (Vec<IntegrationRow>, Vec<_>) = allowed
        .into_iter()
        .map(|(at, c)| {
            let id = c.row.id.clone();
            (c.row, (at, id, c.event, c.record))
        })
        .unzip();
    let inserted: HashSet<String> = tx.insert_integrations_unless_taken(rows).await?;
    let mut events = Vec::with_capacity(inserted.len());
    let mut records = Vec::with_capacity(inserted.len());
    for (at, id, event, record) in allowed {
        if inserted.contains(&id) {
            answers[at] = Written::Created;
            events.push(event);
            records.push(record);
        }
    }
    if !events.is_empty() {
        commit_change(tx, events, records).await?;
    }
    Ok(answers)
}

impl CreateBatch {
    pub(super) fn new(store: Store) -> CreateBatch {
        let writers = if store.is_postgres() { PG_WRITERS } else { 1 };
        CreateBatch {
            batch: GroupCommit::new(Creates { store }, writers, MAX_BATCH),
        }
    }

    /// Writes `create` with whatever creates are queued with it: `true` once it is
    /// committed, the rules' error when they refuse it, `false` when it was not written
    /// (nothing of it was: the caller goes the long way).
    pub(super) async fn create(&self, create: QueuedCreate) -> Result<bool> {
        match self.batch.submit(create).await {
            Some(Written::Created) => Ok(true),
            Some(Written::Refused(err)) => Err(err),
            Some(Written::NotCreated) => Ok(false),
            Some(Written::StorageFull) => Err(Error::StorageFull),
            Some(Written::Unavailable) | None => Err(Error::Unavailable(
                "the database is unavailable; retry later".into(),
            )),
        }
    }
}
