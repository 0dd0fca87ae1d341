//! A condition on a set of values that a caller chose (the ids a group commit checks, the
//! teams and pending rows a sealing batch touches), bound as one value: the statement's
//! text is the same whatever the set's size. An `IN` list of n placeholders is a new
//! statement for every n: each one prepared and planned again (on PostgreSQL a statement
//! runs its first five times with a plan of its own). Over 10,000 keys in 200 teams, 46 of
//! the 96 statements PostgreSQL saw in 3 s of resolutions were the last-use update with a
//! different list, and the version check with a long list was planned as a sequential scan.

use sea_orm::DatabaseBackend;
use sea_orm::sea_query::{Expr, IntoColumnRef};

/// `column` is one of `values` (text), bound as one JSON array.
pub(super) fn is_one_of<'a>(
    backend: DatabaseBackend,
    column: impl IntoColumnRef,
    values: impl IntoIterator<Item = &'a str>,
) -> Expr {
    let values: Vec<&str> = values.into_iter().collect();
    one_of(backend, column, serde_json::Value::from(values), Kind::Text)
}

/// `column` is one of `values` (integers), bound as one JSON array.
pub(super) fn is_one_of_numbers(
    backend: DatabaseBackend,
    column: impl IntoColumnRef,
    values: impl IntoIterator<Item = i64>,
) -> Expr {
    let values: Vec<i64> = values.into_iter().collect();
    one_of(
        backend,
        column,
        serde_json::Value::from(values),
        Kind::Integer,
    )
}

enum Kind {
    Text,
    Integer,
}

fn one_of(
    backend: DatabaseBackend,
    column: impl IntoColumnRef,
    values: serde_json::Value,
    kind: Kind,
) -> Expr {
    let sql = match (backend, kind) {
        // `= ANY` of an array: an index scan that probes each value, as for an `IN` list.
        (DatabaseBackend::Postgres, Kind::Text) => {
            "$1 = ANY(ARRAY(SELECT json_array_elements_text($2::json)))"
        }
        (DatabaseBackend::Postgres, Kind::Integer) => {
            "$1 = ANY(ARRAY(SELECT json_array_elements_text($2::json)::bigint))"
        }
        // SQLite's `json_each` gives a JSON number as an integer, a string as text.
        _ => "? IN (SELECT value FROM json_each(?))",
    };
    Expr::cust_with_exprs(sql, [Expr::col(column), Expr::val(values.to_string())])
}
