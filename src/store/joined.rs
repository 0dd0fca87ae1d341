//! Reads that join a record with what it carries, in one statement: an installed app with
//! its integration counts and its verification (GetInstalledApp), an integration with its
//! app and the app's OAuth grant (a resolution). One statement instead of two or three is
//! what a read the cache cannot answer saves most on.

use sea_orm::sea_query::{Asterisk, Expr, ExprTrait, Func, Query};
use sea_orm::{
    ColumnTrait, DatabaseBackend, EntityTrait, FromQueryResult, QueryFilter, QuerySelect,
    QueryTrait, Statement,
};

use super::entities::{installed_app, integration};
use super::records::IntegrationCounts;
use super::shape::Shape;
use super::{AppRow, GrantRow, IntegrationRow, IntegrationState, Result, Store, VerificationRow};

/// The prefixes of a joined row's columns: the verification's in
/// [`Store::get_app_with_count`], the app's and the grant's in
/// [`Store::get_integration_with_app`].
const VERIFICATION: &str = "v_";
const APP: &str = "a_";
const GRANT: &str = "g_";

/// Selects every column of `E` (a joined table), each under `prefix` and its name, as
/// `FromQueryResult` reads them back with that prefix.
fn select_prefixed<E: EntityTrait + Default>(
    select: &mut sea_orm::sea_query::SelectStatement,
    prefix: &str,
) {
    use sea_orm::sea_query::Alias;
    use sea_orm::{IdenStatic, Iterable};
    for column in E::Column::iter() {
        select.expr_as(
            Expr::col((E::default(), column)),
            Alias::new(format!("{prefix}{}", column.as_str())),
        );
    }
}

impl Store {
    /// An app, how many integrations use it (with its credentials) and its verification, in
    /// one query.
    pub async fn get_app_with_count(
        &self,
        team: &str,
        id: &str,
    ) -> Result<Option<(AppRow, IntegrationCounts, Option<VerificationRow>)>> {
        static SHAPE: Shape<2> = Shape::new(app_with_count);
        let Some(row) = SHAPE.query_one(&self.db, [team, id]).await? else {
            return Ok(None);
        };
        let app = AppRow::from_query_result(&row, "")?;
        let counts = IntegrationCounts {
            total: row.try_get::<i64>("", "integration_count")?,
            active: row.try_get::<i64>("", "active_count")?,
        };
        let verification = VerificationRow::from_query_result_optional(&row, VERIFICATION)?;
        Ok(Some((app, counts, verification)))
    }

    /// An integration, the app it is bound to (of its team) and that app's OAuth grant, in
    /// one query: what a resolution reads.
    pub async fn get_integration_with_app(
        &self,
        team: &str,
        id: &str,
    ) -> Result<Option<(IntegrationRow, Option<AppRow>, Option<GrantRow>)>> {
        static SHAPE: Shape<2> = Shape::new(integration_with_app);
        let Some(row) = SHAPE.query_one(&self.db, [team, id]).await? else {
            return Ok(None);
        };
        Ok(Some((
            IntegrationRow::from_query_result(&row, "")?,
            AppRow::from_query_result_optional(&row, APP)?,
            GrantRow::from_query_result_optional(&row, GRANT)?,
        )))
    }
}

/// [`Store::get_app_with_count`]'s statement.
fn app_with_count(backend: DatabaseBackend, [team, id]: [&str; 2]) -> Statement {
    use super::verification::app_verification::{Column as V, Entity as Verifications};
    use installed_app::{Column as A, Entity as Apps};
    use sea_orm::sea_query::JoinType;
    let mut query = installed_app::Entity::find_by_id(id.to_owned())
        .filter(installed_app::Column::Team.eq(team))
        .column_as(bound_integration_count(team, id, None), "integration_count")
        .column_as(
            bound_integration_count(team, id, Some(IntegrationState::Active)),
            "active_count",
        );
    let select = QueryTrait::query(&mut query);
    select.join(
        JoinType::LeftJoin,
        Verifications,
        Expr::col((Verifications, V::InstalledAppId))
            .equals((Apps, A::Id))
            .and(Expr::col((Verifications, V::Team)).equals((Apps, A::Team))),
    );
    select_prefixed::<Verifications>(select, VERIFICATION);
    query.build(backend)
}

/// [`Store::get_integration_with_app`]'s statement.
fn integration_with_app(backend: DatabaseBackend, [team, id]: [&str; 2]) -> Statement {
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
    query.build(backend)
}

/// How many integrations use the app `app_id` of `team` with its credentials (a column of
/// the app's query); with `state`, how many of those are in it.
fn bound_integration_count(team: &str, app_id: &str, state: Option<IntegrationState>) -> Expr {
    use integration::{Column as I, Entity as Integrations};
    // The app's team and id as values, not as references to the app's row: PostgreSQL then
    // plans the count for this app (a few rows through the app's index) instead of for an
    // average app of the table (at ten million integrations, a sequential scan).
    let mut count = Query::select();
    count
        .expr(Func::count(Expr::col(Asterisk)))
        .from(Integrations)
        .and_where(Expr::col((Integrations, I::Team)).eq(team))
        .and_where(Expr::col((Integrations, I::InstalledAppId)).eq(app_id))
        .and_where(Expr::col((Integrations, I::OwnCredentials)).is_null());
    if let Some(state) = state {
        count.and_where(Expr::col((Integrations, I::State)).eq(state));
    }
    count.into()
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
