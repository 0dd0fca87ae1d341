//! Key rotation: re-sealing every stored sealed value (credentials, webhook signing
//! secrets and the ones a rotation replaced, pending authorizations' verifiers: every
//! [`SealedKind`]) under the newest key (`integration-hub rotate-keys`), and the start-up
//! check that the configured keys open what is stored.
//!
//! Rotation walks each column in id order over the values sealed with an older key, a small
//! batch per transaction. A batch that committed stays done, so a killed run resumes where
//! it stopped, and a run after a complete one finds nothing. It runs while the service
//! serves: a value is replaced only if it is still the one read (every seal draws a new
//! nonce), so a concurrent change is never overwritten; such a row is picked up by another
//! pass. At the end it counts what is still on an older key: a run that leaves anything
//! says so.

use std::collections::HashSet;
use std::time::Duration;

use crate::crypto::{Aad, CryptoError, KeyRing};
use crate::store::{SealedCount, SealedKind, SealedRow, Store, StoreError};

use super::credentials::{app_owner, integration_owner};
use super::error::{Error, Result};
use super::oauth::authorize::authorization_owner;
use super::webhooks::secret_owner;

/// Passes over a table while rows keep changing under the rotation.
const MAX_PASSES: u32 = 5;
/// Attempts of one batch that the database refused for a transient reason (a lock timeout,
/// a deadlock with a concurrent bulk change).
const BATCH_ATTEMPTS: u32 = 5;

/// What a rotation did: counts only.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationSummary {
    /// The key version values are now sealed with.
    pub key_version: u32,
    /// Installed apps' credentials re-sealed.
    pub installed_apps: u64,
    /// Integrations' own credentials re-sealed.
    pub integrations: u64,
    /// Webhook signing secrets re-sealed (current ones, and old ones still stored).
    pub webhook_secrets: u64,
    /// Verifiers of authorizations in progress re-sealed.
    pub authorization_verifiers: u64,
    /// Values that could not be opened (a retired or missing key, a wrong key, corruption):
    /// left as they are; the log names their rows.
    pub failed: u64,
    /// Values still on an older key because their rows kept changing during the run; run
    /// again.
    pub changed_concurrently: u64,
    /// What is still sealed with an older key when the run ended, per column (failures,
    /// concurrent changes, or values a replica without the newest key sealed meanwhile).
    pub remaining: Vec<SealedCount>,
}

impl RotationSummary {
    pub fn resealed(&self) -> u64 {
        self.installed_apps
            + self.integrations
            + self.webhook_secrets
            + self.authorization_verifiers
    }

    fn count(&mut self, kind: SealedKind) -> &mut u64 {
        match kind {
            SealedKind::App => &mut self.installed_apps,
            SealedKind::Integration => &mut self.integrations,
            SealedKind::WebhookSecret | SealedKind::WebhookPreviousSecret => {
                &mut self.webhook_secrets
            }
            SealedKind::AuthorizationVerifier => &mut self.authorization_verifiers,
        }
    }

    /// How many values are still on an older key.
    pub fn remaining_total(&self) -> u64 {
        self.remaining.iter().map(|c| c.count).sum()
    }
}

/// `3 webhook_subscriptions.secret and 1 installed_apps.credentials with key version 1`.
pub fn describe_counts(counts: &[SealedCount]) -> String {
    counts
        .iter()
        .map(|c| {
            format!(
                "{} {} with key version {}",
                c.count,
                c.kind.column(),
                c.key_version
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Display for RotationSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "re-sealed {} values under key version {} ({} installed apps, {} integrations, {} webhook secrets, {} authorization verifiers); {} could not be opened; {} changed concurrently; {} remain on an older key",
            self.resealed(),
            self.key_version,
            self.installed_apps,
            self.integrations,
            self.webhook_secrets,
            self.authorization_verifiers,
            self.failed,
            self.changed_concurrently,
            self.remaining_total()
        )?;
        if !self.remaining.is_empty() {
            write!(f, " ({})", describe_counts(&self.remaining))?;
        }
        Ok(())
    }
}

/// The owner record a value of `kind` in row `id` is bound to.
fn owner(kind: SealedKind, id: &str) -> String {
    match kind {
        SealedKind::App => app_owner(id),
        SealedKind::Integration => integration_owner(id),
        SealedKind::WebhookSecret | SealedKind::WebhookPreviousSecret => secret_owner(id),
        SealedKind::AuthorizationVerifier => authorization_owner(id),
    }
}

fn newest_version(keys: &KeyRing) -> Result<i32> {
    i32::try_from(keys.newest_version())
        .map_err(|_| Error::internal("key versions above 2^31-1 cannot be stored"))
}

/// Opens a stored value and seals it again under the newest key, with the same binding.
fn reseal_value(keys: &KeyRing, kind: SealedKind, row: &SealedRow) -> Result<Vec<u8>, CryptoError> {
    let owner = owner(kind, &row.id);
    let aad = Aad {
        team: &row.team,
        owner: &owner,
    };
    let plaintext = keys.open(&aad, &row.sealed)?;
    keys.seal(&aad, plaintext.expose())
}

/// Outcome of one batch.
#[derive(Default)]
struct Batch {
    last_id: Option<String>,
    resealed: u64,
    conflicts: u64,
}

async fn run_batch(
    store: &Store,
    keys: &KeyRing,
    kind: SealedKind,
    after: &str,
    batch_size: u64,
    failed: &mut HashSet<String>,
) -> Result<Batch, StoreError> {
    let newest = keys.newest_version() as i32;
    let tx = store.begin_write().await?;
    let rows = tx.sealed_below(kind, newest, after, batch_size).await?;
    let mut batch = Batch {
        last_id: rows.last().map(|r| r.id.clone()),
        ..Default::default()
    };
    let mut failures = Vec::new();
    for row in &rows {
        match reseal_value(keys, kind, row) {
            Ok(sealed) => {
                if tx.reseal(kind, row, sealed, newest).await? {
                    batch.resealed += 1;
                } else {
                    batch.conflicts += 1;
                }
            }
            Err(err) => failures.push((row, err)),
        }
    }
    tx.commit().await?;
    for (row, err) in failures {
        if failed.insert(row.id.clone()) {
            tracing::warn!(
                column = %kind.column(),
                id = %row.id,
                team = %row.team,
                key_version = row.key_version,
                error = %err,
                "cannot re-seal a stored value: left as it is"
            );
        }
    }
    Ok(batch)
}

/// Re-seals every stored value sealed with a key older than the ring's newest, then counts
/// what is left on an older key ([`RotationSummary::remaining`]).
pub async fn rotate_keys(
    store: &Store,
    keys: &KeyRing,
    batch_size: u64,
) -> Result<RotationSummary> {
    let newest = newest_version(keys)?;
    let mut summary = RotationSummary {
        key_version: keys.newest_version(),
        ..Default::default()
    };
    for kind in SealedKind::ALL {
        let mut failed = HashSet::new();
        let mut pass = 0;
        loop {
            pass += 1;
            let mut after = String::new();
            let mut conflicts = 0;
            loop {
                let mut attempt = 0;
                let batch = loop {
                    attempt += 1;
                    match run_batch(store, keys, kind, &after, batch_size, &mut failed).await {
                        Ok(batch) => break batch,
                        Err(StoreError::Unavailable(err)) if attempt < BATCH_ATTEMPTS => {
                            tracing::warn!(error = %err, attempt, "batch refused by the database; retrying");
                            tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt)))
                                .await;
                        }
                        Err(err) => return Err(err.into()),
                    }
                };
                *summary.count(kind) += batch.resealed;
                conflicts += batch.conflicts;
                match batch.last_id {
                    Some(id) => after = id,
                    None => break,
                }
            }
            if conflicts == 0 || pass >= MAX_PASSES {
                summary.changed_concurrently += conflicts;
                break;
            }
        }
        summary.failed += failed.len() as u64;
    }
    summary.remaining = store
        .sealed_counts()
        .await?
        .into_iter()
        .filter(|c| c.key_version < newest)
        .collect();
    Ok(summary)
}

/// Why the configured keys do not fit the stored values.
#[derive(Debug, thiserror::Error)]
pub enum StoredKeysError {
    /// Values are sealed with a key the ring retired; `found` names them by column.
    #[error(
        "the encryption keys cannot open stored credentials: {count} stored values are sealed with key version {version}, below INTEGRATION_HUB_MIN_KEY_VERSION ({found}); run `integration-hub rotate-keys` with the full key ring first, then retire the key"
    )]
    Retired {
        version: i32,
        count: u64,
        found: String,
    },
    /// Values are sealed with a key the ring does not hold; `found` names them by column.
    #[error(
        "the encryption keys cannot open stored credentials: {count} stored values are sealed with key version {version}, which INTEGRATION_HUB_ENCRYPTION_KEYS does not hold ({found})"
    )]
    Missing {
        version: i32,
        count: u64,
        found: String,
    },
    /// A stored value does not open with the ring's key of its version.
    #[error(
        "the encryption keys cannot open stored credentials: the key with version {version} in INTEGRATION_HUB_ENCRYPTION_KEYS does not open a value sealed with version {version} ({resource}); it is not the key the data was sealed with (or the value is corrupted)"
    )]
    WrongKey { version: i32, resource: String },
    /// The database could not be read.
    #[error("cannot read stored credentials to check the encryption keys")]
    Store(#[from] StoreError),
}

/// Checks that `keys` open what is stored: no value sealed with a retired or missing key
/// version, and one stored value of every key version in use opens. Catches a wrong key
/// before the first request does.
pub async fn check_stored_keys(store: &Store, keys: &KeyRing) -> Result<(), StoredKeysError> {
    let held: HashSet<i64> = keys.versions().into_iter().map(i64::from).collect();
    let min = i64::from(keys.min_version());
    let counts = store.sealed_counts().await?;
    for (version, count) in store.key_version_counts().await? {
        if !held.contains(&i64::from(version)) {
            let found: Vec<SealedCount> = counts
                .iter()
                .filter(|c| c.key_version == version)
                .copied()
                .collect();
            let found = describe_counts(&found);
            return Err(if i64::from(version) < min {
                StoredKeysError::Retired {
                    version,
                    count,
                    found,
                }
            } else {
                StoredKeysError::Missing {
                    version,
                    count,
                    found,
                }
            });
        }
        let Some((kind, row)) = store.sealed_sample(version).await? else {
            continue;
        };
        let owner = owner(kind, &row.id);
        let opened = keys.open(
            &Aad {
                team: &row.team,
                owner: &owner,
            },
            &row.sealed,
        );
        if let Err(err) = opened {
            tracing::debug!(error = %err, "stored value did not open");
            return Err(StoredKeysError::WrongKey {
                version,
                resource: format!("teams/{}/{owner}", row.team),
            });
        }
    }
    Ok(())
}
