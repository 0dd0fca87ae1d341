//! The secrets a server starts with: the token secret and the encryption key ring, and in
//! `--dev` the ones it makes and keeps in its data directory.

use std::path::Path;

use anyhow::{Context, bail};

use crate::config::AuthArgs;
use crate::crypto::KeyRing;

pub(super) const DEV_SECRET_FILE: &str = "dev-jwt-secret";
pub(super) const DEV_KEYS_FILE: &str = "dev-encryption-keys";

/// Reads a development secret from the data directory, or makes and keeps one.
pub(super) fn dev_secret(
    data_dir: &Path,
    file: &str,
    make: impl FnOnce() -> anyhow::Result<String>,
) -> anyhow::Result<String> {
    let path = data_dir.join(file);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(text.trim().to_owned());
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
    let value = make()?;
    write_private(&path, &value)?;
    Ok(value)
}

fn write_private(path: &Path, value: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(value.as_bytes())?;
    Ok(())
}

fn random_secret() -> anyhow::Result<String> {
    use base64::Engine;
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 48];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The HS256 secret: configured, or (with `--dev`) the one kept in the data directory. Without
/// `--dev` it may be absent when a JWKS file or URL provides the keys.
pub fn jwt_secret(auth: &AuthArgs, data_dir: &Path, dev: bool) -> anyhow::Result<Option<String>> {
    match (&auth.jwt_hs256_secret, dev) {
        (Some(secret), _) => Ok(Some(secret.clone())),
        (None, true) => dev_secret(data_dir, DEV_SECRET_FILE, random_secret).map(Some),
        (None, false) if auth.has_jwks() => Ok(None),
        (None, false) => bail!(
            "no token key is configured: set INTEGRATION_HUB_JWT_HS256_SECRET, INTEGRATION_HUB_JWT_JWKS_FILE or INTEGRATION_HUB_JWT_JWKS_URL (or run serve --dev)"
        ),
    }
}

/// The key ring from `INTEGRATION_HUB_ENCRYPTION_KEYS`, with the keys below
/// `INTEGRATION_HUB_MIN_KEY_VERSION` retired, after its self-test.
pub fn key_ring(spec: &str, min_version: Option<u32>) -> anyhow::Result<KeyRing> {
    let mut keys = KeyRing::parse(spec)
        .map_err(|e| anyhow::anyhow!("INTEGRATION_HUB_ENCRYPTION_KEYS is invalid: {e}"))?;
    if let Some(min) = min_version {
        keys = keys
            .with_min_version(min)
            .map_err(|e| anyhow::anyhow!("INTEGRATION_HUB_MIN_KEY_VERSION is invalid: {e}"))?;
    }
    keys.self_test()
        .map_err(|e| anyhow::anyhow!("encryption self-test failed: {e}"))?;
    Ok(keys)
}
