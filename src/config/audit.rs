//! The audit trail's settings (`serve`) and the `audit` subcommands.

use std::time::Duration;

use clap::{Args, Subcommand};

use super::DatabaseArgs;

/// How the audit chain is kept (`serve`): sealed, pruned and checked.
#[derive(Clone, Debug, Args)]
pub struct AuditKeeperArgs {
    /// Days audit records are kept; older ones are pruned, leaving a checkpoint that keeps
    /// verification whole.
    #[arg(long, env = "INTEGRATION_HUB_AUDIT_RETENTION_DAYS", default_value_t = 400,
          value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub audit_retention_days: u64,

    /// Seconds audit records are kept, instead of whole days (for short-lived set-ups).
    #[arg(long, env = "INTEGRATION_HUB_AUDIT_RETENTION_SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub audit_retention_secs: Option<u64>,

    /// Milliseconds between two sealings of new audit records into their team's chain.
    #[arg(long, env = "INTEGRATION_HUB_AUDIT_SEAL_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=600_000))]
    pub audit_seal_interval_ms: u64,

    /// Seconds between two scheduled verifications of every team's audit chain.
    #[arg(long, env = "INTEGRATION_HUB_AUDIT_VERIFY_INTERVAL_SECS", default_value_t = 6 * 3600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub audit_verify_interval_secs: u64,

    /// Subjects of the service accounts that may watch the audit log (`WatchAuditEvents`)
    /// besides admins, comma-separated: a SIEM's collector.
    #[arg(long, env = "INTEGRATION_HUB_AUDIT_READERS", value_delimiter = ',')]
    pub audit_readers: Vec<String>,

    /// Audit Get and List of installed apps and integrations (the resources that carry
    /// credentials): one record per principal, action, resource and minute.
    #[arg(long, env = "INTEGRATION_HUB_AUDIT_READS", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub audit_reads: bool,

    /// Audit records one pruning transaction deletes at most.
    #[arg(long, env = "INTEGRATION_HUB_AUDIT_PRUNE_BATCH", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub audit_prune_batch: u64,
}

impl AuditKeeperArgs {
    pub fn retention(&self) -> Duration {
        Duration::from_secs(
            self.audit_retention_secs
                .unwrap_or(self.audit_retention_days.saturating_mul(24 * 3600)),
        )
    }
}

/// `integration-hub audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verifies the audit chains and names the first record edited, deleted, reordered or
    /// inserted; exits non-zero when anything is found.
    Verify(Box<AuditVerifyArgs>),
    /// Writes the audit records of a time range to stdout as JSON lines, oldest first (one
    /// object per record, with its MAC and chain place).
    Export(Box<AuditExportArgs>),
}

/// Arguments of `audit export`.
#[derive(Clone, Debug, Args)]
pub struct AuditExportArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Records at or after this time (RFC 3339, such as `2026-12-01T00:00:00Z`).
    #[arg(long, value_parser = rfc3339_micros)]
    pub since: i64,

    /// Records before this time (RFC 3339).
    #[arg(long, value_parser = rfc3339_micros)]
    pub until: i64,

    /// Only this team's records.
    #[arg(long)]
    pub team: Option<String>,
}

/// An RFC 3339 time, as microseconds since the epoch.
fn rfc3339_micros(text: &str) -> Result<i64, String> {
    let time: prost_types::Timestamp = text
        .parse()
        .map_err(|_| "is not an RFC 3339 time such as 2026-12-01T00:00:00Z".to_owned())?;
    time.seconds
        .checked_mul(1_000_000)
        .and_then(|micros| micros.checked_add(i64::from(time.nanos / 1000)))
        .ok_or_else(|| "is out of range".to_owned())
}

/// Arguments of `audit verify`.
#[derive(Clone, Debug, Args)]
pub struct AuditVerifyArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// The key ring the service runs with (every version records were made under).
    #[arg(long, env = "INTEGRATION_HUB_ENCRYPTION_KEYS", hide_env_values = true)]
    pub encryption_keys: String,

    /// Only this team's chain.
    #[arg(long)]
    pub team: Option<String>,
}
