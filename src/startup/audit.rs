//! The audit chain's keeper on this replica: the sealer (every
//! `INTEGRATION_HUB_AUDIT_SEAL_INTERVAL_MS`), the pruner (every prune interval, records past
//! `INTEGRATION_HUB_AUDIT_RETENTION_DAYS`, in bounded batches) and the scheduled verification
//! (the `audit_chain_findings` metric and one WARN line naming the first finding). Sealing and
//! pruning run under the keeper's lease (`Store::begin_chain_keeper`): one replica at a time.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::AuditKeeperArgs;
use crate::domain::Hub;
use crate::metrics::Metrics;

/// Pruning batches one round runs at most (the rest waits for the next round).
const PRUNE_ROUNDS: u32 = 100;

pub(super) fn spawn_audit_keeper(
    hub: Arc<Hub>,
    args: AuditKeeperArgs,
    prune_every: Duration,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut seal = tokio::time::interval(Duration::from_millis(args.audit_seal_interval_ms));
        let mut prune = tokio::time::interval(prune_every);
        let verify_every = Duration::from_secs(args.audit_verify_interval_secs);
        let mut verify = tokio::time::interval_at(start + verify_every, verify_every);
        for timer in [&mut seal, &mut prune, &mut verify] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let retention = i64::try_from(args.retention().as_micros()).unwrap_or(i64::MAX);
        // Whether sealing waits for a long write transaction (logged when it starts and ends).
        let mut waiting = false;
        loop {
            tokio::select! {
                _ = seal.tick() => seal_all(&hub, &mut waiting).await,
                _ = prune.tick() => {
                    let cutoff = hub.audit().now().saturating_sub(retention);
                    prune_past(&hub, cutoff, args.audit_prune_batch, &metrics).await;
                }
                _ = verify.tick() => check(&hub, &metrics).await,
                _ = stop.changed() => return,
            }
        }
    });
}

/// Seals what was appended up to now ([`crate::domain::audit_chain::seal`]). A wait for a
/// long write transaction is logged once when it starts (WARN) and once when it ends.
async fn seal_all(hub: &Hub, waiting: &mut bool) {
    match hub.audit().seal_chain().await {
        Ok(sealed) => {
            if sealed.waiting && !*waiting {
                tracing::warn!(
                    wait_secs = crate::store::SEAL_WAIT.as_secs(),
                    "audit sealing waits for a write transaction open on the database for longer than it waits; new audit records stay unsealed until it ends (appends go on)"
                );
            } else if !sealed.waiting && *waiting {
                tracing::info!("audit sealing no longer waits for a write transaction");
            }
            *waiting = sealed.waiting;
            if sealed.refused > 0 {
                tracing::warn!(
                    refused = sealed.refused,
                    "audit records whose MAC does not hold were left out of the chain (run `integration-hub audit verify`)"
                );
            }
        }
        Err(err) if err.is_database_fault() => {}
        Err(err) => tracing::warn!(error = %err, "sealing audit records failed; retrying"),
    }
}

async fn prune_past(hub: &Hub, cutoff: i64, batch: u64, metrics: &Metrics) {
    for _ in 0..PRUNE_ROUNDS {
        match hub.audit().prune(cutoff, batch).await {
            Ok(0) => return,
            Ok(deleted) => {
                metrics
                    .audit_records_pruned
                    .fetch_add(deleted, Ordering::Relaxed);
                tracing::info!(deleted, "pruned audit records past the retention");
                if deleted < batch {
                    return;
                }
            }
            Err(err) if err.is_database_fault() => return,
            Err(err) => {
                tracing::warn!(error = %err, "pruning audit records failed");
                return;
            }
        }
    }
}

/// The scheduled verification: a metric, and one WARN line naming the first finding.
async fn check(hub: &Hub, metrics: &Metrics) {
    match hub.audit().verify_chain(None).await {
        Ok(report) => {
            metrics.audit_chain_findings.store(
                i64::try_from(report.found).unwrap_or(i64::MAX),
                Ordering::Relaxed,
            );
            if let Some(first) = report.findings.first() {
                tracing::warn!(
                    findings = report.found,
                    first = %first,
                    "the audit chain does not verify"
                );
            } else {
                tracing::info!(
                    teams = report.teams,
                    verified = report.verified,
                    "the audit chain verifies"
                );
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot verify the audit chain"),
    }
}
