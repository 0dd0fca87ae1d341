//! Audited reads (`INTEGRATION_HUB_AUDIT_READS`): Get and List of the resources that carry
//! credentials (installed apps, integrations) leave a record too, aggregated so that the cost
//! stays bounded: one record per principal, action, resource and minute. Each replica
//! remembers what it recorded this minute (a bounded map), and the record's id is derived
//! from that key, so replicas reading at once still write one (the second insert of an id
//! does nothing). Only successful reads are recorded, best effort: a read whose record
//! cannot be written is answered anyway, with a WARN.

use std::collections::HashMap;
use std::sync::Mutex;

use super::audit_chain::record_mac;
use super::context::Context;
use super::model::{Actor, AuditAction};
use super::types::TeamId;
use crate::text::hex;

/// Keys one replica remembers at most; past it, earlier minutes are forgotten first.
const MAX_REMEMBERED: usize = 100_000;
const MICROS_PER_MINUTE: i64 = 60_000_000;

/// Whether reads are audited, and which were recorded this minute on this replica.
#[derive(Default)]
pub struct ReadAudits {
    enabled: bool,
    recorded: Mutex<HashMap<String, i64>>,
}

impl ReadAudits {
    pub fn new(enabled: bool) -> ReadAudits {
        ReadAudits {
            enabled,
            recorded: Mutex::default(),
        }
    }

    /// Whether `key` has no record in `minute` on this replica yet; remembers it.
    fn first_in(&self, key: &str, minute: i64) -> bool {
        // A panic elsewhere leaves whole entries: the map is usable.
        let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
        if recorded.get(key) == Some(&minute) {
            return false;
        }
        if recorded.len() >= MAX_REMEMBERED {
            recorded.retain(|_, m| *m == minute);
            if recorded.len() >= MAX_REMEMBERED {
                // Another insert of a remembered id does nothing: forgetting costs a write.
                recorded.clear();
            }
        }
        recorded.insert(key.to_owned(), minute);
        true
    }
}

impl Context {
    /// Records that `actor` read `resource` (of `team`) by `action`, once per minute.
    pub(super) async fn audit_read(
        &self,
        actor: &Actor,
        team: &TeamId,
        action: AuditAction,
        resource: String,
    ) {
        if !self.read_audits().enabled {
            return;
        }
        let minute = self.now().div_euclid(MICROS_PER_MINUTE);
        let key = format!(
            "{}|{}|{}|{}|{}",
            actor.team.as_ref().map(|t| t.as_str()).unwrap_or("*"),
            actor.subject.len(),
            actor.subject,
            action.as_str(),
            resource
        );
        if !self.read_audits().first_in(&key, minute) {
            return;
        }
        let mut record = self.audit_success(actor, team, action, resource);
        let digest =
            ring::digest::digest(&ring::digest::SHA256, format!("{key}|{minute}").as_bytes());
        record.id = hex(&digest.as_ref()[..16]);
        record_mac(self.keys(), &mut record);
        let written = async {
            let mut tx = self.store().begin_write().await?;
            tx.append_audit_once(record).await?;
            tx.commit().await
        };
        if let Err(err) = written.await {
            tracing::warn!(error = %err, action = action.as_str(), "cannot record an audited read");
        }
    }
}
