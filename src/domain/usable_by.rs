//! Who may build on an installed app (item 2 of least privilege). An app's `usable_by` names subjects
//! and groups (from the configured groups claim); besides admins, only they may create
//! integrations on it or move integrations onto it (reauthenticate one onto it, or many with
//! ReauthenticateIntegrations): [`check_usable`], called by the one rule of binding
//! (`binding::check_bindable`). Everyone of the team still sees it listed, with its
//! `usable_by`. Integrations built before by people who lose access keep working and stay
//! theirs: they are not broken, and their owners may still edit or delete them; they cannot
//! bind new ones. Unset: every developer of the team, as before.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::context::{Audited, Done, check_etag};
use super::error::{Denial, Error, Result};
use super::installed_apps::InstalledApps;
use super::model::{Actor, AuditAction, InstalledApp, Role};
use super::types::AppName;
use crate::store::{AppRow, IntegrationFilter};

/// Most subjects and groups one app's `usable_by` may list, together.
pub const MAX_USABLE_BY: usize = 100;
/// Longest subject or group it may list, in characters.
pub const MAX_USABLE_BY_CHARS: usize = 256;

/// The subjects and groups an installed app is usable by (besides admins).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsableBy {
    pub subjects: BTreeSet<String>,
    pub groups: BTreeSet<String>,
}

impl UsableBy {
    /// The stored column (`None`: usable by every developer of the team).
    pub fn from_stored(stored: Option<&str>) -> Result<Option<UsableBy>> {
        stored
            .map(|text| {
                serde_json::from_str(text)
                    .map_err(|e| Error::Internal(anyhow::Error::new(e).context("stored usable_by")))
            })
            .transpose()
    }

    fn stored(usable: Option<&UsableBy>) -> Result<Option<String>> {
        usable
            .map(|u| {
                serde_json::to_string(u)
                    .map_err(|e| Error::Internal(anyhow::Error::new(e).context("usable_by")))
            })
            .transpose()
    }

    /// Whether `actor` is named, by subject or by one of its token's groups.
    pub fn names(&self, actor: &Actor) -> bool {
        self.subjects.contains(&actor.subject)
            || actor.groups.iter().any(|g| self.groups.contains(g))
    }
}

/// Refuses (PERMISSION_DENIED, INSTALLED_APP_NOT_USABLE) a caller that is neither an admin
/// nor named by the app's `usable_by`.
pub(super) fn check_usable(actor: &Actor, app: &AppRow) -> Result<()> {
    let Some(usable) = UsableBy::from_stored(app.usable_by.as_deref())? else {
        return Ok(());
    };
    if actor.role == Role::Admin || usable.names(actor) {
        return Ok(());
    }
    Err(Error::denied(
        Denial::NotUsable,
        "the installed app is usable only by the people and groups its usable_by names; ask its owner or an admin",
    ))
}

/// What a change of `usable_by` did (or, with `validate_only`, would do).
#[derive(Clone, Debug)]
pub struct UsableByChange {
    pub app: InstalledApp,
    /// Owners of integrations on the app that the old `usable_by` named by subject (or that
    /// had no `usable_by`) and the new one does not name by subject. Group membership is
    /// only known from a caller's own token, so a person listed may keep access through a
    /// group the new `usable_by` names.
    pub losing_access: Vec<String>,
}

impl InstalledApps {
    /// Sets who may build on the app (`None`: every developer). Its owner or an admin. With
    /// `validate_only`, answers who would lose access and changes nothing.
    pub async fn set_usable_by(
        &self,
        actor: &Actor,
        name: &AppName,
        usable: Option<UsableBy>,
        etag: Option<String>,
        validate_only: bool,
    ) -> Result<UsableByChange> {
        let filter = IntegrationFilter {
            installed_app_id: Some(name.id.clone()),
            app_bound_only: true,
            ..Default::default()
        };
        let team = name.team.as_str();
        let decide = |row: &AppRow| -> Result<Option<String>> {
            if actor.role != Role::Admin && row.owner != actor.subject {
                return Err(Error::PermissionDenied(
                    "only an admin or the owner of the installed app may change who may use it"
                        .into(),
                ));
            }
            check_etag(&etag, row.version)?;
            UsableBy::stored(usable.as_ref())
        };
        let losing = |row: &AppRow, owners: Vec<String>| -> Result<Vec<String>> {
            let old = UsableBy::from_stored(row.usable_by.as_deref())?;
            let named = |u: &Option<UsableBy>, who: &String| {
                u.as_ref().is_none_or(|u| u.subjects.contains(who))
            };
            let lost: BTreeSet<String> = owners
                .into_iter()
                .filter(|who| named(&old, who) && !named(&usable, who))
                .collect();
            Ok(lost.into_iter().collect())
        };
        if validate_only {
            // A preview is a read, not audited; it locks what the change would.
            let mut draft = self.ctx().draft(actor);
            let row = draft.lock_app(name).await?;
            decide(&row)?;
            let owners = draft.tx().await?.lock_integrations(team, &filter).await?;
            let losing_access = losing(&row, owners.into_iter().map(|i| i.owner).collect())?;
            let app = self.app_with_count(&row).await?;
            return Ok(UsableByChange { app, losing_access });
        }
        let audited = Audited::app(AuditAction::InstalledAppSetUsableBy, name);
        let (row, losing_access) = self
            .ctx()
            .write(actor, audited, async |w| {
                let mut row = w.lock_app(name).await?;
                let stored = decide(&row)?;
                let owners = w.tx().await?.lock_integrations(team, &filter).await?;
                let lost = losing(&row, owners.into_iter().map(|i| i.owner).collect())?;
                let expected = row.version;
                row.usable_by = stored;
                row.version += 1;
                row.update_time = self.ctx().now();
                if !w.tx().await?.update_app(row.clone(), expected).await? {
                    return Err(Error::internal("locked installed app changed"));
                }
                Ok(Done::Commit((row, lost)))
            })
            .await?;
        let app = self.app_with_count(&row).await?;
        Ok(UsableByChange { app, losing_access })
    }
}
