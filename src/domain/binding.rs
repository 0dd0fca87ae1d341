//! The rules that decide whether a new integration may be bound to an installed app. Written
//! once: a change written alone (`Integrations::bindable_app`) and creates written together
//! (`create_batch.rs`) both decide with them.

use crate::store::AppRow;

use super::context::not_found_app;
use super::error::{Error, Precondition, Result};
use super::model::{Actor, AppState};
use super::types::AppName;

/// Whether `actor` may bind integrations to the app `name`, stored as `app` (`None`: none): it
/// exists, its `usable_by` names the actor (`usable_by.rs`) and it is ACTIVE. The one rule: a
/// change alone ([`Integrations::bindable_app`]) and creates together (`create_batch.rs`).
pub(super) fn check_bindable<'a>(
    actor: &Actor,
    name: &AppName,
    app: Option<&'a AppRow>,
) -> Result<&'a AppRow> {
    let app = app.ok_or_else(|| not_found_app(name))?;
    super::usable_by::check_usable(actor, app)?;
    if app.state == AppState::Suspended {
        return Err(super::suspension::suspended_error());
    }
    if app.state != AppState::Active {
        return Err(Error::precondition(
            Precondition::WrongState,
            "the installed app needs reauthentication; update its credentials first",
        ));
    }
    Ok(app)
}

/// Whether a new integration of `service` may be bound to `app`: the app offers it.
pub(super) fn check_offers(app: &AppRow, service: &str) -> Result<()> {
    if app.service != service {
        return Err(Error::invalid(
            "integration.type",
            "is not offered by the installed app's service",
        ));
    }
    Ok(())
}
