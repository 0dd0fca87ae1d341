//! A change of an app's granted scopes: every verification's health is written here, and
//! when it finds granted scopes other than the stored ones (both known: an app's first
//! scopes are not a change), an INSTALLED_APP_SCOPES_CHANGED event in the same transaction
//! names the scopes added and removed and the app's integrations this makes usable or
//! unusable (their type's `required_scopes` satisfied now and not before, or the reverse).

use std::collections::BTreeSet;

use super::Verdict;
use crate::domain::app_events::ScopeChange;
use crate::domain::catalog::Catalog;
use crate::domain::context::Write;
use crate::domain::error::Result;
use crate::store::{AppRow, IntegrationFilter, IntegrationRow, VerificationRow};

/// Writes `health`, the new verification of the app `app` found at `now`, in `w`'s
/// transaction, with the event of a change of its scopes.
pub(in crate::domain) async fn put_health(
    w: &mut Write<'_>,
    catalog: &Catalog,
    app: &AppRow,
    health: VerificationRow,
    now: i64,
) -> Result<()> {
    let tx = w.tx().await?;
    let old = tx
        .verification(&app.id)
        .await?
        .and_then(|o| o.granted_scopes);
    let new = health.granted_scopes.clone();
    tx.put_verification(health).await?;
    let (Some(old), Some(new)) = (old, new) else {
        return Ok(());
    };
    let (old, new) = (scope_set(&old), scope_set(&new));
    if old == new {
        return Ok(());
    }
    let filter = IntegrationFilter {
        installed_app_id: Some(app.id.clone()),
        app_bound_only: true,
        ..IntegrationFilter::default()
    };
    let integrations = w.tx().await?.lock_integrations(&app.team, &filter).await?;
    let change = scope_change(catalog, &old, &new, &integrations);
    w.scopes_event(app, change, now)
}

/// Whether `verdict` found granted scopes other than the `stored` ones (both known).
pub(in crate::domain) fn changes_scopes(stored: Option<&str>, verdict: &Verdict) -> bool {
    match (stored, verdict) {
        (
            Some(stored),
            Verdict::Verified {
                scopes: Some(found),
                ..
            },
        ) => scope_set(stored) != found.iter().map(String::as_str).collect(),
        _ => false,
    }
}

/// The scopes a stored grant holds (space-separated, as `granted_scopes` is stored).
pub(super) fn scope_set(scopes: &str) -> BTreeSet<&str> {
    scopes.split_whitespace().collect()
}

/// The scopes of `required` that `granted` lacks: the one statement of "an app's grant
/// satisfies an integration type" (the refusal of a bind and the change event both ask it).
pub(super) fn missing_scopes<'a>(
    required: &'a [String],
    granted: &BTreeSet<&str>,
) -> impl Iterator<Item = &'a String> {
    required.iter().filter(|s| !granted.contains(s.as_str()))
}

/// What going from `old` to `new` scopes adds, removes, and means for `integrations`.
fn scope_change(
    catalog: &Catalog,
    old: &BTreeSet<&str>,
    new: &BTreeSet<&str>,
    integrations: &[IntegrationRow],
) -> ScopeChange {
    let mut change = ScopeChange {
        added: new.difference(old).map(|s| (*s).to_owned()).collect(),
        removed: old.difference(new).map(|s| (*s).to_owned()).collect(),
        ..ScopeChange::default()
    };
    for integration in integrations {
        let Some((_, kind)) = catalog.integration_type(&integration.type_id) else {
            continue;
        };
        let satisfied = |granted| {
            missing_scopes(&kind.required_scopes, granted)
                .next()
                .is_none()
        };
        let name = format!("teams/{}/integrations/{}", integration.team, integration.id);
        match (satisfied(old), satisfied(new)) {
            (false, true) => change.usable.push(name),
            (true, false) => change.unusable.push(name),
            _ => {}
        }
    }
    change.usable.sort();
    change.unusable.sort();
    change
}
