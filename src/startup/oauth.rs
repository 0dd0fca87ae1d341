//! OAuth settings from the command line and environment.

use std::time::Duration;

use anyhow::bail;

use crate::config::OAuthArgs;
use crate::domain::oauth::OAuthSettings;
use crate::domain::oauth::clients::Clients;
use crate::domain::oauth::http::HttpSettings;

/// OAuth settings from the arguments: `None` without a clients file. A public URL must be
/// http(s) without a query; https unless it is a loopback address in development.
pub fn oauth_settings(args: &OAuthArgs, dev: bool) -> anyhow::Result<Option<OAuthSettings>> {
    let Some(file) = &args.oauth_clients_file else {
        if args.public_url.is_some() || args.http_listen.is_some() {
            tracing::warn!("INTEGRATION_HUB_OAUTH_CLIENTS_FILE is not set: OAuth is off");
        }
        return Ok(None);
    };
    let clients = Clients::from_file(file)
        .map_err(|e| anyhow::anyhow!("INTEGRATION_HUB_OAUTH_CLIENTS_FILE is invalid: {e}"))?;
    let allow_loopback_http = args.oauth_allow_loopback_http || dev;
    let public_url = match &args.public_url {
        None => None,
        Some(text) => {
            let url = reqwest::Url::parse(text)
                .map_err(|e| anyhow::anyhow!("INTEGRATION_HUB_PUBLIC_URL is invalid: {e}"))?;
            let loopback = url.host_str().is_some_and(|h| {
                h == "localhost"
                    || h.parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
                    || h.trim_matches(['[', ']'])
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            let scheme_ok = url.scheme() == "https"
                || (url.scheme() == "http" && loopback && allow_loopback_http);
            if !scheme_ok || url.query().is_some() || url.fragment().is_some() {
                bail!(
                    "INTEGRATION_HUB_PUBLIC_URL must be an https URL without query or fragment (http only to loopback with INTEGRATION_HUB_OAUTH_ALLOW_LOOPBACK_HTTP)"
                );
            }
            Some(url)
        }
    };
    let mut return_origins = Vec::new();
    for origin in &args.oauth_return_origins {
        let url = reqwest::Url::parse(origin).map_err(|e| {
            anyhow::anyhow!("INTEGRATION_HUB_OAUTH_RETURN_ORIGINS has an invalid origin: {e}")
        })?;
        return_origins.push(url.origin().ascii_serialization());
    }
    let hosts: Vec<String> = args
        .oauth_provider_hosts
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    tracing::info!(
        services = ?clients.services().collect::<Vec<_>>(),
        public_url = ?public_url.as_ref().map(|u| u.as_str()),
        "OAuth is on"
    );
    Ok(Some(OAuthSettings {
        public_url,
        clients,
        http: HttpSettings {
            timeout: Duration::from_secs(args.oauth_http_timeout_secs),
            allow_loopback_http,
            allowed_hosts: (!hosts.is_empty()).then_some(hosts),
        },
        return_origins,
        refresh_concurrency: usize::try_from(args.oauth_refresh_concurrency).unwrap_or(4),
        refresh_interval: Duration::from_secs(args.oauth_refresh_interval_secs),
    }))
}
