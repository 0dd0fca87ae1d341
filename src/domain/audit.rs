//! The audit log: who did what to which resource, and how it ended.
//!
//! A successful mutation appends its record inside its own transaction, so the record and
//! the change commit or roll back together. A failed call (refused, not found, a failed
//! precondition, ...) rolled its transaction back, so its record is written afterwards in a
//! small transaction of its own, best effort: a failure to record a failure is logged and the
//! caller still gets the original error. A credential resolution changes nothing, so its
//! record is its own small write, and the credentials are handed out only once it committed.
//!
//! A record is filed in the actor's own team (an attempt on another team's resource lands in
//! the attempting team's log, not the target's: a caller cannot write into another tenant's
//! log), or in the resource's team for a service acting on every team. It holds names,
//! roles, an action, an outcome and an `ErrorReason` name: never a credential value.

use super::error::{Error, Result};
use std::sync::Arc;

use super::audit_chain::{self, record_mac};
use super::context::Context;
use super::error::Precondition;
use super::model::{Actor, AuditAction, AuditEvent, AuditOutcome, Role};
use super::tokens::TeamCursors;
use super::types::{Page, PageRequest, TeamId, new_id};
use crate::store::{AuditFilter, AuditRow};

/// Filters of an audit listing.
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub action: Option<AuditAction>,
    pub actor: Option<String>,
    /// Only records at or after this time (microseconds since the epoch).
    pub start_time: Option<i64>,
    /// Only records before this time (microseconds since the epoch).
    pub end_time: Option<i64>,
}

impl AuditQuery {
    /// What a page token is bound to.
    pub(super) fn listing(&self, team: &TeamId) -> String {
        format!(
            "audit|{team}|{}|{}|{:?}|{:?}",
            self.action.map(|a| a.as_str()).unwrap_or(""),
            self.actor.as_deref().unwrap_or(""),
            self.start_time,
            self.end_time
        )
    }
}

impl Context {
    /// A record of `actor` doing `action` on `resource`, a resource of `team`.
    pub(super) fn audit_record(
        &self,
        actor: &Actor,
        team: &TeamId,
        action: AuditAction,
        resource: String,
        outcome: AuditOutcome,
        reason: Option<&'static str>,
    ) -> AuditRow {
        let mut record = AuditRow {
            seq: 0,
            id: new_id(),
            team: actor.team.as_ref().unwrap_or(team).as_str().to_owned(),
            actor: actor.subject.clone(),
            actor_team: actor
                .team
                .as_ref()
                .map(|t| t.as_str())
                .unwrap_or("*")
                .to_owned(),
            role: actor.role.as_str().to_owned(),
            action,
            resource,
            outcome,
            reason: reason.map(str::to_owned),
            request_id: actor.request_id.clone(),
            time: self.now(),
            key_id: None,
            mac: None,
            chain_pos: None,
            chain_mac: None,
        };
        record_mac(self.keys(), &mut record);
        record
    }

    /// The record of a success, to append inside the change's transaction.
    pub(super) fn audit_success(
        &self,
        actor: &Actor,
        team: &TeamId,
        action: AuditAction,
        resource: String,
    ) -> AuditRow {
        self.audit_record(actor, team, action, resource, AuditOutcome::Success, None)
    }

    /// Appends one record in a transaction of its own.
    pub(super) async fn append_audit_now(&self, record: AuditRow) -> Result<()> {
        let mut tx = self.store().begin_write().await?;
        tx.append_audit(record).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a failed call (see the module doc); does nothing for a success.
    pub(super) async fn audit_failure<T>(
        &self,
        actor: &Actor,
        team: &TeamId,
        action: AuditAction,
        resource: String,
        result: Result<T>,
    ) -> Result<T> {
        let Err(err) = &result else {
            return result;
        };
        if err.is_database_fault() {
            // The database refused the change itself: a record of the failure would be refused
            // the same way, once per call. The store logs when such a fault starts and ends.
            tracing::debug!(
                action = action.as_str(),
                "a call the database could not serve is not audited"
            );
            return result;
        }
        let outcome = match err {
            Error::PermissionDenied(_) | Error::Denied { .. } => AuditOutcome::Denied,
            // Another team's resource answers NOT_FOUND; for the log, that was a denial.
            Error::NotFound { .. } if !actor.sees(team) => AuditOutcome::Denied,
            _ => AuditOutcome::Failed,
        };
        let record = self.audit_record(actor, team, action, resource, outcome, Some(err.reason()));
        if let Err(audit_err) = self.append_audit_now(record).await {
            tracing::warn!(
                error = %audit_err,
                action = action.as_str(),
                "cannot record a failed call in the audit log"
            );
        }
        result
    }
}

/// The audit log's own operations: reading it, and recording a call refused before it was read.
#[derive(Clone)]
pub struct Audit {
    ctx: Arc<Context>,
}

impl Audit {
    pub(super) fn new(ctx: Arc<Context>) -> Audit {
        Audit { ctx }
    }

    /// Refuses a limited service principal a call that covers every service of a team (a
    /// watch, a webhook read: OUTSIDE_SERVICE_LIMITS), recording the refusal with the
    /// resource it attempted in `team`'s log (none for a watch of every team: the debug log).
    pub async fn refuse_if_limited(
        &self,
        actor: &Actor,
        action: AuditAction,
        team: Option<&TeamId>,
        resource: String,
    ) -> Result<()> {
        let within = actor.check_unlimited();
        match (team, &within) {
            (Some(team), Err(_)) => {
                self.ctx
                    .audit_failure(actor, team, action, resource, within)
                    .await
            }
            _ => within,
        }
    }

    /// [`Audit::refuse_if_limited`] of a watch of `scope` (`None`: every team).
    pub async fn refuse_limited_watch(
        &self,
        actor: &Actor,
        action: AuditAction,
        scope: Option<&TeamId>,
    ) -> Result<()> {
        let watched = scope.map_or("teams/-".to_owned(), |team| format!("teams/{team}"));
        self.refuse_if_limited(actor, action, scope, watched).await
    }

    /// Records a call that the method policy refused before its request was read (so no
    /// resource is known). A service acting on every team has no team to file it in: only
    /// the debug log sees that.
    pub async fn audit_refused(&self, actor: &Actor, action: AuditAction) {
        let Some(team) = actor.team.clone() else {
            return;
        };
        let record = self.ctx.audit_record(
            actor,
            &team,
            action,
            String::new(),
            AuditOutcome::Denied,
            Some(Error::PermissionDenied(String::new()).reason()),
        );
        if let Err(err) = self.ctx.append_audit_now(record).await {
            tracing::warn!(error = %err, action = action.as_str(), "cannot record a refused call in the audit log");
        }
    }

    /// Chains the records not chained yet ([`audit_chain::seal`]).
    pub async fn seal_chain(&self) -> Result<audit_chain::Sealed> {
        Ok(audit_chain::seal(self.ctx.store(), self.ctx.keys()).await?)
    }

    /// Prunes up to `limit` records older than `cutoff` ([`audit_chain::prune`]).
    pub async fn prune(&self, cutoff: i64, limit: u64) -> Result<u64> {
        Ok(audit_chain::prune(self.ctx.store(), self.ctx.keys(), cutoff, limit).await?)
    }

    /// Verifies the chain of `team`, or of every team ([`audit_chain::verify`]).
    pub async fn verify_chain(&self, team: Option<&str>) -> Result<audit_chain::Verification> {
        Ok(audit_chain::verify(self.ctx.store(), self.ctx.keys(), team).await?)
    }

    /// Where a watch of `team`'s audit records starts (a chain place), after checking the
    /// caller: an admin of the team (the method policy and `team_of_parent` saw to that) or a
    /// service named an audit reader. A cursor from before the team's pruning checkpoint is
    /// CURSOR_EXPIRED; no cursor starts at the oldest record kept.
    pub async fn open_watch(
        &self,
        actor: &Actor,
        team: &TeamId,
        start_cursor: &str,
    ) -> Result<i64> {
        if actor.role == Role::Service && !self.ctx.is_audit_reader(&actor.subject) {
            return Err(Error::PermissionDenied(
                "only the service accounts named in INTEGRATION_HUB_AUDIT_READERS may watch the audit log".into(),
            ));
        }
        let start = TeamCursors::audit(self.ctx.keys().clone(), team)
            .open("start_cursor", start_cursor)?
            .map(|cursor| cursor.0);
        let checkpoint = self.ctx.store().chain_checkpoint(team.as_str()).await?;
        match start {
            Some(place) if place < checkpoint => Err(Error::precondition(
                Precondition::CursorExpired,
                "records after this cursor were pruned past the audit retention; watch again without a cursor",
            )),
            Some(place) => Ok(place),
            None => Ok(checkpoint),
        }
    }

    /// Up to `limit` of `team`'s records after chain place `after`, in chain order, each with
    /// its place.
    pub async fn watch_after(
        &self,
        team: &TeamId,
        after: i64,
        limit: u64,
    ) -> Result<Vec<(i64, AuditEvent)>> {
        let rows = self
            .ctx
            .store()
            .chained_audits(team.as_str(), after, limit)
            .await?;
        rows.iter()
            .map(|row| Ok((row.chain_pos.unwrap_or(after), AuditEvent::from_row(row)?)))
            .collect()
    }

    /// The cursor of chain place `place` of `team`'s audit records.
    pub fn watch_cursor(&self, team: &TeamId, place: i64) -> String {
        TeamCursors::audit(self.ctx.keys().clone(), team).encode(place)
    }

    /// Microseconds since the epoch, by the hub's clock.
    pub fn now(&self) -> i64 {
        self.ctx.now()
    }

    /// A page of a team's audit log, newest first.
    pub async fn list_audit_events(
        &self,
        team: &TeamId,
        query: AuditQuery,
        page: PageRequest,
    ) -> Result<Page<AuditEvent>> {
        if let (Some(start), Some(end)) = (query.start_time, query.end_time)
            && end <= start
        {
            return Err(Error::invalid("end_time", "must be after start_time"));
        }
        let pages = self.ctx.pages(team, &query.listing(team));
        let token = pages.after_seq(&page)?;
        let filter = AuditFilter {
            action: query.action,
            actor: query.actor.clone(),
            start_time: query.start_time,
            end_time: query.end_time,
        };
        // A caller's listing can cost the database much: it takes a bounded place first.
        let _listing = self.ctx.store().start_audit_listing(team.as_str())?;
        let mut rows = self
            .ctx
            .store()
            .list_audit(
                team.as_str(),
                &filter,
                token.map(|t| t.0),
                page.size.read_limit(),
            )
            .await?;
        let next_page_token = page
            .size
            .cut(&mut rows, |last| pages.token_after_seq(last.seq));
        let items = rows
            .iter()
            .map(AuditEvent::from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(Page {
            items,
            next_page_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_audit_page_token_is_bound_to_the_team_and_every_filter() {
        let acme = TeamId::parse("acme").unwrap();
        let other = TeamId::parse("other").unwrap();
        let all = AuditQuery::default();
        let by_dana = AuditQuery {
            actor: Some("dana".into()),
            ..AuditQuery::default()
        };
        let deletes = AuditQuery {
            action: Some(AuditAction::InstalledAppDelete),
            ..AuditQuery::default()
        };
        let since = AuditQuery {
            start_time: Some(5),
            ..AuditQuery::default()
        };
        let listings = [
            all.listing(&acme),
            all.listing(&other),
            by_dana.listing(&acme),
            deletes.listing(&acme),
            since.listing(&acme),
        ];
        // A page token is sealed for its exact listing text (`tokens.rs`), so distinct
        // filters must give distinct texts.
        for (i, a) in listings.iter().enumerate() {
            for (j, b) in listings.iter().enumerate() {
                assert_eq!(a == b, i == j, "{a} vs {b}");
            }
        }
    }
}
