//! Statements whose text depends only on the database, not on the values they are asked
//! with: the hot reads the cache cannot answer. Each is still written once, as a sea-query
//! builder; [`Shape`] runs that builder once per database with stand-in values, keeps the
//! SQL it printed and where each value goes, and afterwards only binds the call's values.
//! Building a select of forty columns and dropping it was a tenth of an uncached Get's CPU.

use std::sync::OnceLock;

use sea_orm::sea_query::Values;
use sea_orm::{ConnectionTrait, DatabaseBackend, DbErr, QueryResult, Statement, Value};

/// A statement of `N` text arguments: `build` writes it; [`Shape::statement`] answers what
/// `build` would, from what `build` printed the first time.
pub(super) struct Shape<const N: usize> {
    build: fn(DatabaseBackend, [&str; N]) -> Statement,
    sqlite: OnceLock<Option<Template>>,
    postgres: OnceLock<Option<Template>>,
}

/// What `build` printed with stand-in arguments: the SQL and, for each bound value, which
/// argument it is or the value `build` chose itself.
#[derive(Debug)]
struct Template {
    sql: String,
    slots: Vec<Slot>,
}

#[derive(Debug)]
enum Slot {
    Argument(usize),
    Fixed(Value),
}

/// The stand-in for argument `i`: no caller's value looks like it.
fn stand_in(i: usize) -> String {
    format!("\u{1}shape argument {i}\u{1}")
}

impl Template {
    /// `None` when the stand-ins show the statement is not a fixed shape: an argument
    /// printed into the SQL, or changed before it was bound. Such a statement is built
    /// every time, as before.
    fn of<const N: usize>(
        backend: DatabaseBackend,
        build: fn(DatabaseBackend, [&str; N]) -> Statement,
    ) -> Option<Template> {
        let stand_ins: [String; N] = std::array::from_fn(stand_in);
        let built = build(backend, std::array::from_fn(|i| stand_ins[i].as_str()));
        if built.sql.contains('\u{1}') {
            return None;
        }
        let mut slots = Vec::new();
        for value in built.values.map(|v| v.0).unwrap_or_default() {
            let slot = match &value {
                Value::String(Some(s)) if s.contains('\u{1}') => {
                    Slot::Argument(stand_ins.iter().position(|a| a == s)?)
                }
                _ => Slot::Fixed(value),
            };
            slots.push(slot);
        }
        Some(Template {
            sql: built.sql,
            slots,
        })
    }

    fn bind<const N: usize>(&self, backend: DatabaseBackend, args: [&str; N]) -> Statement {
        let values = self
            .slots
            .iter()
            .map(|slot| match slot {
                Slot::Argument(i) => Value::String(Some(args[*i].to_owned())),
                Slot::Fixed(value) => value.clone(),
            })
            .collect();
        Statement {
            sql: self.sql.clone(),
            values: (!self.slots.is_empty()).then_some(Values(values)),
            db_backend: backend,
        }
    }
}

impl<const N: usize> Shape<N> {
    pub(super) const fn new(build: fn(DatabaseBackend, [&str; N]) -> Statement) -> Self {
        Shape {
            build,
            sqlite: OnceLock::new(),
            postgres: OnceLock::new(),
        }
    }

    /// The statement `build` writes for `args` on `backend`.
    pub(super) fn statement(&self, backend: DatabaseBackend, args: [&str; N]) -> Statement {
        let cell = match backend {
            DatabaseBackend::Postgres => &self.postgres,
            _ => &self.sqlite,
        };
        match cell.get_or_init(|| Template::of(backend, self.build)) {
            Some(template) => template.bind(backend, args),
            None => (self.build)(backend, args),
        }
    }

    /// The first row of the statement `build` writes for `args`, run on `conn`.
    pub(super) async fn query_one<C: ConnectionTrait>(
        &self,
        conn: &C,
        args: [&str; N],
    ) -> Result<Option<QueryResult>, DbErr> {
        let statement = self.statement(conn.get_database_backend(), args);
        conn.query_one_raw(statement).await
    }

    /// Whether the statement is bound from its template (tests: a shape that silently
    /// falls back to building saves nothing).
    #[cfg(test)]
    pub(super) fn is_fixed(&self, backend: DatabaseBackend) -> bool {
        Template::of(backend, self.build).is_some()
    }
}

/// Tests of each statement kept as a shape: it is a fixed shape on both databases, and what
/// its shape binds is what `build` writes, for values that would break a printed statement.
#[cfg(test)]
pub(super) fn assert_bound_as_built(
    name: &str,
    build: fn(DatabaseBackend, [&str; 2]) -> Statement,
) {
    let shape = Shape::new(build);
    for backend in [DatabaseBackend::Sqlite, DatabaseBackend::Postgres] {
        assert!(shape.is_fixed(backend), "{name} on {backend:?}");
        for args in [["acme", "a1"], ["globex", "b'2"]] {
            assert_eq!(
                shape.statement(backend, args),
                build(backend, args),
                "{name}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
    use sea_orm::{ConnectionTrait, Database};

    const BACKENDS: [DatabaseBackend; 2] = [DatabaseBackend::Sqlite, DatabaseBackend::Postgres];

    fn by_name(backend: DatabaseBackend, [team, id]: [&str; 2]) -> Statement {
        let mut select = Query::select();
        select
            .column(Alias::new("id"))
            .from(Alias::new("t"))
            .and_where(Expr::col(Alias::new("team")).eq(team))
            .and_where(Expr::col(Alias::new("kind")).eq("fixed"))
            .and_where(Expr::col(Alias::new("id")).eq(id))
            .and_where(Expr::col(Alias::new("owner")).eq(team));
        backend.build(&select)
    }

    fn changed_argument(backend: DatabaseBackend, [team]: [&str; 1]) -> Statement {
        let mut select = Query::select();
        select
            .column(Alias::new("id"))
            .from(Alias::new("t"))
            .and_where(Expr::col(Alias::new("key")).eq(format!("{team}|x")));
        backend.build(&select)
    }

    fn printed_argument(backend: DatabaseBackend, [team]: [&str; 1]) -> Statement {
        let mut select = Query::select();
        select
            .column(Alias::new("id"))
            .from(Alias::new("t"))
            .and_where(Expr::cust(format!("team = '{team}'")));
        backend.build(&select)
    }

    #[test]
    fn a_bound_statement_is_what_the_builder_writes() {
        static SHAPE: Shape<2> = Shape::new(by_name);
        for backend in BACKENDS {
            assert!(SHAPE.is_fixed(backend));
            for args in [["acme", "a1"], ["globex", "it's \u{2603}"], ["", ""]] {
                let expected = by_name(backend, args);
                assert_eq!(SHAPE.statement(backend, args), expected);
                // Twice: the second comes from the template.
                assert_eq!(SHAPE.statement(backend, args), expected);
            }
        }
    }

    #[test]
    fn a_statement_that_is_not_a_fixed_shape_is_built_every_time() {
        static CHANGED: Shape<1> = Shape::new(changed_argument);
        static PRINTED: Shape<1> = Shape::new(printed_argument);
        for backend in BACKENDS {
            assert!(!CHANGED.is_fixed(backend));
            assert!(!PRINTED.is_fixed(backend));
            for team in ["acme", "globex"] {
                assert_eq!(
                    CHANGED.statement(backend, [team]),
                    changed_argument(backend, [team])
                );
                assert_eq!(
                    PRINTED.statement(backend, [team]),
                    printed_argument(backend, [team])
                );
            }
        }
    }

    #[tokio::test]
    async fn a_bound_statement_runs() {
        static SHAPE: Shape<2> = Shape::new(by_name);
        let db = Database::connect("sqlite::memory:").await.unwrap();
        db.execute_unprepared(
            "CREATE TABLE t (id TEXT, team TEXT, kind TEXT, owner TEXT);
             INSERT INTO t VALUES ('a1', 'acme', 'fixed', 'acme'), ('a2', 'acme', 'other', 'acme');",
        )
        .await
        .unwrap();
        let backend = DatabaseBackend::Sqlite;
        let found = db
            .query_all_raw(SHAPE.statement(backend, ["acme", "a1"]))
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        let none = db
            .query_all_raw(SHAPE.statement(backend, ["acme", "a2"]))
            .await
            .unwrap();
        assert!(none.is_empty());
    }
}
