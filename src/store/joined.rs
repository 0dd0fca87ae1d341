//! Reads that join a record with what it carries, in one statement: an installed app with
//! its integration counts and its verification (GetInstalledApp), an integration with its
//! app and the app's OAuth grant (a resolution). One statement instead of two or three is
//! what a read the cache cannot answer saves most on.

use sea_orm::sea_query::{
    Alias, Asterisk, Expr, ExprTrait, Func, IntoIden, Query, SelectStatement, TableRef,
};
use sea_orm::{
    ColumnTrait, DatabaseBackend, EntityTrait, FromQueryResult, QueryFilter, QueryResult,
    QuerySelect, QueryTrait, Statement,
};

use super::entities::{installed_app, integration};
use super::keyed::KeyedRead;
use super::records::IntegrationCounts;
use super::shape::Shape;
use super::{AppRow, GrantRow, IntegrationRow, IntegrationState, Result, VerificationRow};

/// The prefixes of a joined row's columns: the verification's in
/// [`APP_WITH_COUNT`], the app's and the grant's in [`INTEGRATION_WITH_APP`].
const VERIFICATION: &str = "v_";
const APP: &str = "a_";
const GRANT: &str = "g_";
/// The alias of [`APP_WITH_COUNT`]'s counts, and the names of its two columns.
const COUNTS: &str = "counts";
const TOTAL_COUNT: &str = "integration_count";
const ACTIVE_COUNT: &str = "active_count";

/// Selects every column of `E` (a joined table), each under `prefix` and its name, as
/// `FromQueryResult` reads them back with that prefix.
fn select_prefixed<E: EntityTrait + Default>(
    select: &mut sea_orm::sea_query::SelectStatement,
    prefix: &str,
) {
    use sea_orm::{IdenStatic, Iterable};
    for column in E::Column::iter() {
        select.expr_as(
            Expr::col((E::default(), column)),
            Alias::new(format!("{prefix}{}", column.as_str())),
        );
    }
}

/// An integration, the app it is bound to and that app's OAuth grant.
pub type IntegrationWithApp = (IntegrationRow, Option<AppRow>, Option<GrantRow>);

/// A resolution's read: an integration, its app and the app's grant, by team and id.
pub static INTEGRATION_WITH_APP: KeyedRead<IntegrationWithApp> = KeyedRead::new(
    &INTEGRATION_WITH_APP_SHAPE,
    integration_with_app_select,
    |row| {
        Ok((
            IntegrationRow::from_query_result(row, "")?,
            AppRow::from_query_result_optional(row, APP)?,
            GrantRow::from_query_result_optional(row, GRANT)?,
        ))
    },
    |(integration, _, _)| (integration.team.as_str(), integration.id.as_str()),
);
static INTEGRATION_WITH_APP_SHAPE: Shape<2> = Shape::new(integration_with_app);

/// An app, its integration counts and its verification.
pub type AppWithCount = (AppRow, IntegrationCounts, Option<VerificationRow>);

/// GetInstalledApp's read: an app, its two counts and its verification, by team and id.
pub static APP_WITH_COUNT: KeyedRead<AppWithCount> = KeyedRead::new(
    &APP_WITH_COUNT_SHAPE,
    app_with_count_select,
    app_with_count_of,
    |(app, _, _)| (app.team.as_str(), app.id.as_str()),
);
static APP_WITH_COUNT_SHAPE: Shape<2> = Shape::new(app_with_count);

/// A row of [`app_with_count`]'s statement.
fn app_with_count_of(row: &QueryResult) -> Result<AppWithCount> {
    let app = AppRow::from_query_result(row, "")?;
    let counts = IntegrationCounts {
        total: row.try_get::<i64>("", TOTAL_COUNT)?,
        active: row.try_get::<i64>("", ACTIVE_COUNT)?,
    };
    let verification = VerificationRow::from_query_result_optional(row, VERIFICATION)?;
    Ok((app, counts, verification))
}

/// [`APP_WITH_COUNT`]'s statement of one key.
fn app_with_count(backend: DatabaseBackend, [team, id]: [&str; 2]) -> Statement {
    backend.build(&app_with_count_select(team, id))
}

/// [`app_with_count`]'s select.
fn app_with_count_select(team: &str, id: &str) -> SelectStatement {
    use super::verification::app_verification::{Column as V, Entity as Verifications};
    use installed_app::{Column as A, Entity as Apps};
    use sea_orm::sea_query::JoinType;
    let mut query = installed_app::Entity::find_by_id(id.to_owned())
        .filter(installed_app::Column::Team.eq(team))
        .column_as(
            Expr::col((Alias::new(COUNTS), Alias::new(TOTAL_COUNT))),
            TOTAL_COUNT,
        )
        .column_as(
            Expr::col((Alias::new(COUNTS), Alias::new(ACTIVE_COUNT))),
            ACTIVE_COUNT,
        );
    let select = QueryTrait::query(&mut query);
    select.cross_join(TableRef::SubQuery(
        Box::new(bound_integration_counts(team, id)),
        Alias::new(COUNTS).into_iden(),
    ));
    select.join(
        JoinType::LeftJoin,
        Verifications,
        Expr::col((Verifications, V::InstalledAppId))
            .equals((Apps, A::Id))
            .and(Expr::col((Verifications, V::Team)).equals((Apps, A::Team))),
    );
    select_prefixed::<Verifications>(select, VERIFICATION);
    query.into_query()
}

/// [`INTEGRATION_WITH_APP`]'s statement of one key.
fn integration_with_app(backend: DatabaseBackend, [team, id]: [&str; 2]) -> Statement {
    backend.build(&integration_with_app_select(team, id))
}

/// [`integration_with_app`]'s select.
fn integration_with_app_select(team: &str, id: &str) -> SelectStatement {
    use super::oauth::grant::{Column as G, Entity as Grants};
    use installed_app::{Column as A, Entity as Apps};
    use integration::{Column as I, Entity as Integrations};
    use sea_orm::sea_query::JoinType;
    let mut query =
        integration::Entity::find_by_id(id.to_owned()).filter(integration::Column::Team.eq(team));
    let select = QueryTrait::query(&mut query);
    select
        .join(
            JoinType::LeftJoin,
            Apps,
            Expr::col((Apps, A::Id))
                .equals((Integrations, I::InstalledAppId))
                .and(Expr::col((Apps, A::Team)).equals((Integrations, I::Team))),
        )
        .join(
            JoinType::LeftJoin,
            Grants,
            Expr::col((Grants, G::InstalledAppId)).equals((Apps, A::Id)),
        );
    select_prefixed::<Apps>(select, APP);
    select_prefixed::<Grants>(select, GRANT);
    query.into_query()
}

/// How many integrations use the app `app_id` of `team` with its credentials
/// (`integration_count`), and how many of those are active (`active_count`): one row, joined
/// to the app's. One pass over the app's entries in `integrations_bound` counts both; two
/// counts walked them twice.
fn bound_integration_counts(team: &str, app_id: &str) -> SelectStatement {
    use integration::{Column as I, Entity as Integrations};
    // The app's team and id as values, not as references to the app's row: PostgreSQL then
    // plans the count for this app (a few rows through the app's index) instead of for an
    // average app of the table (at ten million integrations, a sequential scan).
    let active = Expr::case(
        Expr::col((Integrations, I::State)).eq(IntegrationState::Active),
        1,
    );
    let mut counts = Query::select();
    counts
        .expr_as(Func::count(Expr::col(Asterisk)), Alias::new(TOTAL_COUNT))
        .expr_as(Func::count(active), Alias::new(ACTIVE_COUNT))
        .from(Integrations)
        .and_where(Expr::col((Integrations, I::Team)).eq(team))
        .and_where(Expr::col((Integrations, I::InstalledAppId)).eq(app_id))
        .and_where(Expr::col((Integrations, I::OwnCredentials)).is_null());
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_joined_reads_are_fixed_shapes_bound_as_built() {
        super::super::shape::assert_bound_as_built("app with count", app_with_count);
        super::super::shape::assert_bound_as_built("integration with app", integration_with_app);
    }
}
