//! Sealed values by key version: what `rotate-keys` re-seals and what `serve` probes at start.
//!
//! Every column that holds a sealed value is a [`SealedKind`]: a new sealed column gets a
//! variant here, and with it rotation and the start-up check.

use std::collections::BTreeMap;

use sea_orm::sea_query::{Alias, Expr, ExprTrait, Order, Query, SelectStatement};
use sea_orm::{ConnectionTrait, FromQueryResult};

use super::{Result, Store, Tx};

/// Where a sealed value is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum SealedKind {
    /// `installed_apps.credentials`.
    App,
    /// `integrations.own_credentials`.
    Integration,
    /// `webhook_subscriptions.secret`.
    WebhookSecret,
    /// `webhook_subscriptions.old_secret`: the secret a rotation replaced.
    WebhookPreviousSecret,
    /// `oauth_authorizations.verifier`: the PKCE verifier of an authorization in progress
    /// (emptied once it ends).
    AuthorizationVerifier,
}

impl SealedKind {
    /// Every sealed column of the store.
    pub const ALL: [SealedKind; 5] = [
        SealedKind::App,
        SealedKind::Integration,
        SealedKind::WebhookSecret,
        SealedKind::WebhookPreviousSecret,
        SealedKind::AuthorizationVerifier,
    ];

    /// The table, the sealed column and its key-version column.
    fn columns(self) -> (&'static str, &'static str, &'static str) {
        match self {
            SealedKind::App => ("installed_apps", "credentials", "key_version"),
            SealedKind::Integration => ("integrations", "own_credentials", "key_version"),
            SealedKind::WebhookSecret => ("webhook_subscriptions", "secret", "key_version"),
            SealedKind::WebhookPreviousSecret => {
                ("webhook_subscriptions", "old_secret", "old_key_version")
            }
            SealedKind::AuthorizationVerifier => {
                ("oauth_authorizations", "verifier", "key_version")
            }
        }
    }

    /// `table.column`, as the log and the start-up check name it.
    pub fn column(self) -> String {
        let (table, column, _) = self.columns();
        format!("{table}.{column}")
    }

    /// The rows of this kind that hold a sealed value (an ended authorization's verifier is
    /// emptied, an integration without credentials of its own has none).
    fn stored(self) -> SelectStatement {
        let (table, column, _) = self.columns();
        let mut query = Query::select();
        query
            .from(Alias::new(table))
            .and_where(Expr::col(Alias::new(column)).is_not_null())
            .and_where(Expr::col(Alias::new(column)).ne(Vec::<u8>::new()));
        query
    }

    /// [`SealedKind::stored`] with the columns of a [`SealedRow`].
    fn rows(self) -> SelectStatement {
        let (_, column, key_version) = self.columns();
        let mut query = self.stored();
        query
            .column(Alias::new("id"))
            .column(Alias::new("team"))
            .expr_as(Expr::col(Alias::new(column)), Alias::new("sealed"))
            .expr_as(
                Expr::col(Alias::new(key_version)),
                Alias::new("key_version"),
            )
            .order_by(Alias::new("id"), Order::Asc);
        query
    }

    fn key_version(self) -> Alias {
        Alias::new(self.columns().2)
    }
}

/// One stored sealed value and what identifies its row.
#[derive(Clone, Debug, FromQueryResult)]
pub struct SealedRow {
    pub id: String,
    pub team: String,
    pub sealed: Vec<u8>,
    pub key_version: i32,
}

/// How many values of one kind one key version seals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedCount {
    pub kind: SealedKind,
    pub key_version: i32,
    pub count: u64,
}

#[derive(FromQueryResult)]
struct VersionCount {
    key_version: i32,
    count: i64,
}

impl Tx {
    /// Up to `limit` values of `kind` sealed with a key version below `below`, with an id
    /// after `after`, in id order: a run that walks them resumes where a killed one stopped,
    /// and finds nothing once every value is sealed with the newest key.
    pub async fn sealed_below(
        &self,
        kind: SealedKind,
        below: i32,
        after: &str,
        limit: u64,
    ) -> Result<Vec<SealedRow>> {
        let mut query = kind.rows();
        query
            .and_where(Expr::col(kind.key_version()).lt(below))
            .and_where(Expr::col(Alias::new("id")).gt(after))
            .limit(limit);
        let statement = self.conn().get_database_backend().build(&query);
        Ok(SealedRow::find_by_statement(statement)
            .all(self.conn())
            .await?)
    }

    /// Replaces a value's ciphertext if it is still the one read (the same bytes under the
    /// same key version); false when a concurrent change came first. Every seal draws a new
    /// nonce, so a value written since differs, and is never overwritten. Nothing else of
    /// the row changes: re-sealing changes nothing a client can see, so etags stay valid.
    pub async fn reseal(
        &self,
        kind: SealedKind,
        row: &SealedRow,
        sealed: Vec<u8>,
        key_version: i32,
    ) -> Result<bool> {
        let (table, column, _) = kind.columns();
        let mut update = Query::update();
        update
            .table(Alias::new(table))
            .value(Alias::new(column), sealed)
            .value(kind.key_version(), key_version)
            .and_where(Expr::col(Alias::new("id")).eq(row.id.as_str()))
            .and_where(Expr::col(Alias::new("team")).eq(row.team.as_str()))
            .and_where(Expr::col(kind.key_version()).eq(row.key_version))
            .and_where(Expr::col(Alias::new(column)).eq(row.sealed.clone()));
        let statement = self.conn().get_database_backend().build(&update);
        Ok(self.conn().execute_raw(statement).await?.rows_affected() == 1)
    }
}

impl Store {
    /// How many stored values each key version seals, per sealed column.
    pub async fn sealed_counts(&self) -> Result<Vec<SealedCount>> {
        let mut counts = Vec::new();
        for kind in SealedKind::ALL {
            let mut query = kind.stored();
            query
                .expr_as(Expr::col(kind.key_version()), Alias::new("key_version"))
                .expr_as(Expr::cust("COUNT(*)"), Alias::new("count"))
                .group_by_col(kind.key_version());
            let statement = self.conn().get_database_backend().build(&query);
            for row in VersionCount::find_by_statement(statement)
                .all(self.conn())
                .await?
            {
                counts.push(SealedCount {
                    kind,
                    key_version: row.key_version,
                    count: u64::try_from(row.count).unwrap_or(0),
                });
            }
        }
        Ok(counts)
    }

    /// How many stored sealed values each key version seals (every column together).
    pub async fn key_version_counts(&self) -> Result<BTreeMap<i32, u64>> {
        let mut counts = BTreeMap::new();
        for row in self.sealed_counts().await? {
            *counts.entry(row.key_version).or_insert(0) += row.count;
        }
        Ok(counts)
    }

    /// One stored sealed value of the given key version (the one with the smallest id, of
    /// the first kind in [`SealedKind::ALL`] that has one), if any.
    pub async fn sealed_sample(&self, key_version: i32) -> Result<Option<(SealedKind, SealedRow)>> {
        for kind in SealedKind::ALL {
            let mut query = kind.rows();
            query
                .and_where(Expr::col(kind.key_version()).eq(key_version))
                .limit(1);
            let statement = self.conn().get_database_backend().build(&query);
            if let Some(row) = SealedRow::find_by_statement(statement)
                .one(self.conn())
                .await?
            {
                return Ok(Some((kind, row)));
            }
        }
        Ok(None)
    }
}
