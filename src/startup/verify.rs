//! Verification of credentials with their providers: its settings, and the verifier made
//! with the outbound module (the same provider calls as OAuth's, under a policy of its own).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

use crate::domain::catalog::Catalog;
use crate::domain::verify::{Verifier, VerifySettings};
use crate::outbound::Policy;

use super::oauth::provider_calls;

/// Verification of credentials with their provider (each catalog service's read-only call).
#[derive(Clone, Debug, Args)]
pub struct VerifyArgs {
    /// Check credentials with their provider at create, at credential changes, on demand
    /// (VerifyInstalledApp) and on a schedule. On unless set `false`; off by default with
    /// `--dev` (its examples use made-up tokens). The test harness turns it off unless a
    /// test points it at a local provider.
    #[arg(long, env = "INTEGRATION_HUB_VERIFY_CREDENTIALS", action = clap::ArgAction::Set)]
    pub verify_credentials: Option<bool>,

    /// Longest a caller waits for a verification, in seconds: past it, the app is kept
    /// UNVERIFIED.
    #[arg(long, env = "INTEGRATION_HUB_VERIFY_TIMEOUT_SECS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub verify_timeout_secs: u64,

    /// How often the scheduled checker verifies each app, in seconds (jittered by a tenth).
    #[arg(long, env = "INTEGRATION_HUB_VERIFY_INTERVAL_SECS", default_value_t = 6 * 3600,
          value_parser = clap::value_parser!(u64).range(1..=30 * 24 * 3600))]
    pub verify_interval_secs: u64,

    /// Checks the scheduled checker runs at once against one provider host, per replica.
    #[arg(long, env = "INTEGRATION_HUB_VERIFY_CONCURRENCY_PER_HOST", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub verify_concurrency_per_host: u64,

    /// Base URLs replacing the catalog's, `service=url` comma-separated (GitHub Enterprise:
    /// `github=https://github.example.com/api/v3`; tests: a local provider). The only way a
    /// verification call goes elsewhere than the catalog says.
    #[arg(long, env = "INTEGRATION_HUB_VERIFY_BASE_URLS", value_delimiter = ',')]
    pub verify_base_urls: Vec<String>,
}

/// The verifier of these settings: [`Verifier::off`] when verification is off (by default
/// with `--dev`). http is
/// allowed to loopback hosts when OAuth's setting (or `--dev`) allows it.
pub fn verifier(
    args: &VerifyArgs,
    catalog: &Catalog,
    dev: bool,
    loopback_http: bool,
) -> anyhow::Result<Verifier> {
    if !args.verify_credentials.unwrap_or(!dev) {
        return Ok(Verifier::off());
    }
    let mut base_urls = BTreeMap::new();
    for pair in args
        .verify_base_urls
        .iter()
        .filter(|p| !p.trim().is_empty())
    {
        let Some((service, url)) = pair.split_once('=') else {
            bail!("INTEGRATION_HUB_VERIFY_BASE_URLS must be service=url pairs");
        };
        let service = service.trim();
        if catalog.service(service).is_none() {
            bail!(
                "INTEGRATION_HUB_VERIFY_BASE_URLS names {service:?}, which the catalog does not list"
            );
        }
        let parsed = reqwest::Url::parse(url.trim()).map_err(|e| {
            anyhow::anyhow!(
                "INTEGRATION_HUB_VERIFY_BASE_URLS has an invalid URL for {service}: {e}"
            )
        })?;
        if !crate::outbound::scheme_allowed(&parsed, loopback_http) || parsed.query().is_some() {
            bail!(
                "INTEGRATION_HUB_VERIFY_BASE_URLS: the URL for {service} must be https without a query (http only to loopback with INTEGRATION_HUB_OAUTH_ALLOW_LOOPBACK_HTTP)"
            );
        }
        base_urls.insert(service.to_owned(), url.trim().to_owned());
    }
    let timeout = Duration::from_secs(args.verify_timeout_secs);
    let policy = Policy {
        loopback_http,
        ..Policy::new(timeout)
    };
    Ok(Verifier::new(
        provider_calls(policy)?,
        VerifySettings {
            timeout,
            interval: Duration::from_secs(args.verify_interval_secs),
            per_host_concurrency: usize::try_from(args.verify_concurrency_per_host).unwrap_or(4),
            base_urls,
        },
    ))
}
