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
