//! Records read by their team and id: one at a time, from its fixed shape, or many in one
//! statement. Concurrent reads the cache cannot answer share a statement that way
//! (`domain/keyed_reads.rs`): one round trip to the database (on SQLite, one hand-off to a
//! connection's worker thread) serves many of them.

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::{SelectStatement, UnionType};
use sea_orm::{ConnectionTrait, DatabaseBackend, QueryResult, Statement};

use super::shape::Shape;
use super::{Result, Store};

/// Most distinct keys one statement of [`Store::read_keys`] reads.
pub const KEYS_PER_READ: usize = 32;

/// How a record of type `T` is read by its key: the select of one key, that select bound
/// from its fixed shape, how a row is decoded and which key a decoded record answers.
pub struct KeyedRead<T: 'static> {
    shape: &'static Shape<2>,
    select: fn(&str, &str) -> SelectStatement,
    decode: fn(&QueryResult) -> Result<T>,
    key: fn(&T) -> (&str, &str),
}

impl<T> KeyedRead<T> {
    /// `shape` builds the statement of one key; `select` is the same select without a
    /// limit, a member of a `UNION ALL`.
    pub(super) const fn new(
        shape: &'static Shape<2>,
        select: fn(&str, &str) -> SelectStatement,
        decode: fn(&QueryResult) -> Result<T>,
        key: fn(&T) -> (&str, &str),
    ) -> Self {
        KeyedRead {
            shape,
            select,
            decode,
            key,
        }
    }

    /// The statement that reads the record of `team` and `id` alone, as
    /// [`Store::read_keyed`] runs it (for a query plan).
    pub fn statement(&self, backend: DatabaseBackend, team: &str, id: &str) -> Statement {
        self.shape.statement(backend, [team, id])
    }
}

impl Store {
    /// The record of `team` and `id`, if there is one.
    pub async fn read_keyed<T>(
        &self,
        read: &KeyedRead<T>,
        team: &str,
        id: &str,
    ) -> Result<Option<T>> {
        match read.shape.query_one(&self.db, [team, id]).await? {
            Some(row) => Ok(Some((read.decode)(&row)?)),
            None => Ok(None),
        }
    }

    /// [`Store::read_keyed`] of each `(team, id)` of `keys`, in order, in one statement for
    /// each [`KEYS_PER_READ`] distinct keys. The statement is the select of one key, once
    /// per key (`UNION ALL`), so each is planned as when read alone. A key asked for twice
    /// is read once. Keys are padded to a power of two with a key no record has (an index
    /// probe that finds nothing), so that few statements are prepared.
    pub async fn read_keys<T: Clone>(
        &self,
        read: &KeyedRead<T>,
        keys: &[(&str, &str)],
    ) -> Result<Vec<Option<T>>> {
        let mut distinct: Vec<(&str, &str)> = Vec::with_capacity(keys.len());
        let mut asked = HashSet::with_capacity(keys.len());
        for key in keys {
            if asked.insert(*key) {
                distinct.push(*key);
            }
        }
        if let [(team, id)] = distinct[..] {
            let record = self.read_keyed(read, team, id).await?;
            return Ok(keys.iter().map(|_| record.clone()).collect());
        }
        let backend = self.backend();
        let mut found: HashMap<(String, String), T> = HashMap::with_capacity(distinct.len());
        for chunk in distinct.chunks(KEYS_PER_READ) {
            let key = |i: usize| chunk.get(i).copied().unwrap_or(("", ""));
            let mut select = (read.select)(key(0).0, key(0).1);
            for i in 1..chunk.len().next_power_of_two() {
                select.union(UnionType::All, (read.select)(key(i).0, key(i).1));
            }
            for row in self.db.query_all_raw(backend.build(&select)).await? {
                let record = (read.decode)(&row)?;
                let (team, id) = (read.key)(&record);
                found.insert((team.to_owned(), id.to_owned()), record);
            }
        }
        Ok(keys
            .iter()
            .map(|(team, id)| found.get(&((*team).to_owned(), (*id).to_owned())).cloned())
            .collect())
    }
}
