//! Offboarding: everything one person owns in a team handed to another
//! in one transaction, and the identity provider's deprovisioning, which also ends the
//! person's pending OAuth sign-ins. An OAuth app whose grant the person made (its creator:
//! the grant lives in their provider account, and ends when that account does) is flagged
//! `reauthorization_recommended`, with an INSTALLED_APP_REAUTHORIZATION_RECOMMENDED event.

use std::collections::{BTreeMap, BTreeSet};

use super::context::{Audited, Done, Write};
use super::error::{Error, Result};
use super::integrations::Integrations;
use super::model::{Actor, AppEventKind, AuditAction, Integration, Role};
use super::requests::cancel_requests_of;
use super::types::{AppName, Owner, TeamId};
use crate::store::{AppFilter, IntegrationFilter};

/// Most apps, and most integrations, one hand-over moves: beyond it the call is refused
/// (RESOURCE_EXHAUSTED) rather than holding a transaction open on an unbounded set.
pub const MAX_HANDOVER: usize = 5_000;

/// What a hand-over did, or with `validate_only` would do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Handover {
    /// Installed apps whose owner changes.
    pub installed_apps: usize,
    /// Integrations whose owner changes.
    pub integrations: usize,
    /// OAuth apps the person authorized, flagged `reauthorization_recommended` (names).
    pub reauthorization_recommended: Vec<String>,
    /// Pending OAuth sign-ins ended (deprovisioning only).
    pub cancelled_authorizations: u64,
    /// Open installation requests cancelled (deprovisioning only), or a preview would.
    pub cancelled_requests: u64,
}

/// Why the audit log records a deprovisioning's cancelled sign-ins.
const CANCELLED: &str = "cancelled: the person was deprovisioned";

impl Integrations {
    /// Hands every app and integration `from` owns in `team` to `to`, in one transaction
    /// (admins). With `validate_only`, answers the counts and changes nothing.
    pub async fn transfer_ownership(
        &self,
        actor: &Actor,
        team: &TeamId,
        from: Owner,
        to: Owner,
        validate_only: bool,
    ) -> Result<Handover> {
        let resource = format!("teams/{team}/people/{}", from.as_str());
        let audited = Audited::new(AuditAction::OwnershipTransfer, team, resource);
        self.offboard(actor, team, (from, to), audited, validate_only, false)
            .await
    }

    /// The identity provider's deprovisioning of `person`: the hand-over to `successor`, and
    /// the person's pending OAuth sign-ins ended, in one transaction. An admin, or a service
    /// configuration names (`permitted`, decided by the caller from the token).
    pub async fn deprovision_person(
        &self,
        actor: &Actor,
        team: &TeamId,
        (person, successor): (Owner, Owner),
        permitted: bool,
        validate_only: bool,
    ) -> Result<Handover> {
        let resource = format!("teams/{team}/people/{}", person.as_str());
        let audited = Audited::new(AuditAction::PersonDeprovision, team, resource);
        let allowed = actor.role == Role::Admin || (actor.role == Role::Service && permitted);
        if !allowed {
            let refused = Err(Error::PermissionDenied(
                "only an admin or a deprovisioning service named by configuration may deprovision"
                    .into(),
            ));
            return self.ctx().write(actor, audited, async |_| refused).await;
        }
        self.offboard(
            actor,
            team,
            (person, successor),
            audited,
            validate_only,
            true,
        )
        .await
    }

    async fn offboard(
        &self,
        actor: &Actor,
        team: &TeamId,
        (from, to): (Owner, Owner),
        audited: Audited,
        validate_only: bool,
        cancel_sign_ins: bool,
    ) -> Result<Handover> {
        if !actor.sees(team) {
            return Err(Error::PermissionDenied(
                "the caller may not act on that team".into(),
            ));
        }
        let (from, to) = (from.into_inner(), to.into_inner());
        if from == to {
            return Err(Error::invalid(
                "to_owner",
                "must differ from the person handing over",
            ));
        }
        if validate_only {
            // A preview is a read, not audited; it locks what the hand-over would.
            let mut draft = self.ctx().draft(actor);
            let mut handover = self.hand_over(&mut draft, team, &from, &to, false).await?;
            if cancel_sign_ins {
                let now = self.ctx().now();
                let tx = draft.tx().await?;
                handover.cancelled_authorizations =
                    tx.pending_authorizations(team.as_str(), &from, now).await?;
                handover.cancelled_requests =
                    cancel_requests_of(&mut draft, team, (&from, &actor.subject), now, false)
                        .await?;
            }
            return Ok(handover);
        }
        self.ctx()
            .write(actor, audited, async |w| {
                let mut handover = self.hand_over(w, team, &from, &to, true).await?;
                if cancel_sign_ins {
                    let now = self.ctx().now();
                    let tx = w.tx().await?;
                    handover.cancelled_authorizations = tx
                        .cancel_authorizations_of(team.as_str(), &from, CANCELLED, now)
                        .await?;
                    handover.cancelled_requests =
                        cancel_requests_of(w, team, (&from, &actor.subject), now, true).await?;
                }
                Ok(Done::Commit(handover))
            })
            .await
    }

    /// The hand-over inside `w` (written when `write`): apps `from` owns get owner `to`,
    /// OAuth apps `from` authorized are flagged, integrations `from` owns get owner `to`
    /// (each with its INTEGRATION_UPDATED event).
    async fn hand_over(
        &self,
        w: &mut Write<'_>,
        team: &TeamId,
        from: &str,
        to: &str,
        write: bool,
    ) -> Result<Handover> {
        let limit = MAX_HANDOVER as u64 + 1;
        let too_many = || {
            Error::ResourceExhausted(format!(
                "the person owns more than {MAX_HANDOVER} apps or integrations; hand them over in parts"
            ))
        };
        let owned = AppFilter {
            owner: Some(from.to_owned()),
            ..Default::default()
        };
        let created = AppFilter {
            creator: Some(from.to_owned()),
            ..Default::default()
        };
        let tx = w.tx().await?;
        let owned = tx.list_apps(team.as_str(), &owned, None, limit).await?;
        let created = tx.list_apps(team.as_str(), &created, None, limit).await?;
        if owned.len() > MAX_HANDOVER || created.len() > MAX_HANDOVER {
            return Err(too_many());
        }
        let created_ids: Vec<String> = created.iter().map(|a| a.id.clone()).collect();
        let granted: BTreeSet<String> = (self
            .ctx()
            .store()
            .grants_of(team.as_str(), &created_ids)
            .await?)
            .into_iter()
            .map(|g| g.installed_app_id)
            .collect();
        // Each app once: (hand over, flag).
        let mut apps: BTreeMap<String, (bool, bool)> = BTreeMap::new();
        for app in &owned {
            apps.entry(app.id.clone()).or_default().0 = true;
        }
        for app in created
            .iter()
            .filter(|a| granted.contains(&a.id) && !a.reauthorization_recommended)
        {
            apps.entry(app.id.clone()).or_default().1 = true;
        }
        let mut handover = Handover {
            installed_apps: owned.len(),
            ..Handover::default()
        };
        let now = self.ctx().now();
        for (id, (hand, flag)) in apps {
            let name = AppName::new(team.clone(), id);
            let mut row = w.lock_app(&name).await?;
            if flag {
                handover.reauthorization_recommended.push(name.to_string());
            }
            if !write {
                continue;
            }
            let expected = row.version;
            if hand && row.owner == from {
                row.owner = to.to_owned();
            }
            row.reauthorization_recommended |= flag;
            row.version += 1;
            row.update_time = now;
            if !w.tx().await?.update_app(row.clone(), expected).await? {
                return Err(Error::internal("locked installed app changed"));
            }
            if flag {
                let said = format!(
                    "the grant lives in the provider account of {from}, whose apps were handed over"
                );
                w.app_event(AppEventKind::ReauthorizationRecommended, &row, &said)?;
            }
        }
        let filter = IntegrationFilter {
            owner: Some(from.to_owned()),
            ..Default::default()
        };
        let rows = w
            .tx()
            .await?
            .lock_integrations(team.as_str(), &filter)
            .await?;
        if rows.len() > MAX_HANDOVER {
            return Err(too_many());
        }
        handover.integrations = rows.len();
        if write {
            for row in rows {
                let mut integration = Integration::from_row(&row)?;
                integration.owner = to.to_owned();
                self.save_update(w, row, integration).await?;
            }
        }
        Ok(handover)
    }
}
