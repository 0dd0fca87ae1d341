//! OAuth settings from the command line and environment, and the provider calls of the
//! domain made through the outbound module.

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use futures_util::future::BoxFuture;

use crate::config::OAuthArgs;
use crate::domain::oauth::OAuthSettings;
use crate::domain::oauth::clients::Clients;
use crate::domain::oauth::http::{CallFailed, HttpAnswer, ProviderCalls, ProviderRequest};
use crate::outbound::{Addresses, Answer, BodyLimit, Error as CallError, Outbound, Policy};

/// Whether http to loopback is allowed: the setting, or `--dev`.
fn loopback_http(args: &OAuthArgs, dev: bool) -> bool {
    args.oauth_allow_loopback_http || dev
}

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
    let allow_loopback_http = loopback_http(args, dev);
    let public_url = match &args.public_url {
        None => None,
        Some(text) => {
            let url = reqwest::Url::parse(text)
                .map_err(|e| anyhow::anyhow!("INTEGRATION_HUB_PUBLIC_URL is invalid: {e}"))?;
            if !crate::outbound::scheme_allowed(&url, allow_loopback_http)
                || url.query().is_some()
                || url.fragment().is_some()
            {
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
    tracing::info!(
        services = ?clients.services().collect::<Vec<_>>(),
        public_url = ?public_url.as_ref().map(|u| u.as_str()),
        "OAuth is on"
    );
    Ok(Some(OAuthSettings {
        public_url,
        clients,
        allow_loopback_http,
        return_origins,
        refresh_concurrency: usize::try_from(args.oauth_refresh_concurrency).unwrap_or(4),
        refresh_interval: Duration::from_secs(args.oauth_refresh_interval_secs),
    }))
}

/// The policy of calls to providers: https (http to loopback with
/// `INTEGRATION_HUB_OAUTH_ALLOW_LOOPBACK_HTTP` or `--dev`), any address (the catalog is the
/// operator's), only the hosts of `INTEGRATION_HUB_OAUTH_PROVIDER_HOSTS` when it is set, and
/// `INTEGRATION_HUB_OAUTH_HTTP_TIMEOUT_SECS` for a whole call.
pub fn provider_policy(args: &OAuthArgs, dev: bool) -> Policy {
    let hosts: Vec<String> = args
        .oauth_provider_hosts
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    Policy {
        loopback_http: loopback_http(args, dev),
        allowed_hosts: (!hosts.is_empty()).then_some(hosts),
        ..Policy::new(Duration::from_secs(args.oauth_http_timeout_secs))
    }
}

/// The domain's provider calls, made by the outbound module under `policy`; a call to a
/// host a caller chose goes under the same policy restricted to public addresses.
pub fn provider_calls(policy: Policy) -> anyhow::Result<Arc<dyn ProviderCalls>> {
    let public = Policy {
        addresses: Addresses::Public {
            loopback: policy.loopback_http,
        },
        ..policy.clone()
    };
    Ok(Arc::new(ProviderHttp {
        operator: Outbound::new(policy)?,
        public: Outbound::new(public)?,
    }))
}

struct ProviderHttp {
    /// Hosts the catalog or the deployment names.
    operator: Outbound,
    /// Hosts a caller names: globally reachable addresses only.
    public: Outbound,
}

impl ProviderCalls for ProviderHttp {
    fn check(&self, url: &str) -> Result<url::Url, String> {
        self.operator.check(url).map_err(|refused| refused.0)
    }

    fn call<'a>(
        &'a self,
        request: ProviderRequest<'a>,
    ) -> BoxFuture<'a, Result<HttpAnswer, CallFailed>> {
        Box::pin(async move {
            let (url, headers) = (request.url, request.headers);
            let limit = BodyLimit::Whole(request.max_bytes);
            let outbound = if request.public_only {
                &self.public
            } else {
                &self.operator
            };
            answer(match request.body {
                Some(body) => outbound.post(url, headers, body, limit).await,
                None => outbound.get(url, headers, limit).await,
            })
        })
    }
}

fn answer(result: Result<Answer, CallError>) -> Result<HttpAnswer, CallFailed> {
    match result {
        Ok(answer) => Ok(HttpAnswer {
            status: answer.status.as_u16(),
            headers: answer
                .headers
                .iter()
                .filter_map(|(name, value)| {
                    Some((name.to_string(), value.to_str().ok()?.to_owned()))
                })
                .collect(),
            body: answer.body,
        }),
        Err(CallError::Refused(refused)) => Err(CallFailed::Refused(refused.0)),
        Err(CallError::Timeout) => Err(CallFailed::Timeout),
        Err(CallError::Connect) => Err(CallFailed::Connect),
        Err(CallError::TooLarge(_)) => Err(CallFailed::TooLarge),
        Err(CallError::Status(_) | CallError::Failed(_)) => Err(CallFailed::Failed),
    }
}
