//! Builds the server: `Application::build(settings)` binds the port and prepares everything,
//! `run_until_stopped` serves until the shutdown future resolves. Tests start this very
//! server on port 0.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::api::rate_limit::RoleRateLimits;
use crate::api::{
    AccessControl, AnswerLayer, Answers, AuditLog, AuthLayer, CallLimitLayer, InstalledApps,
    Integrations, ObserveLayer,
};
use crate::auth::{Role, RoleMap, ServiceSubjects, Verifier, VerifierConfig};
use crate::config::{AuthArgs, ServeArgs};
use crate::crypto::KeyRing;
use crate::domain::Hub;
use crate::domain::catalog::Catalog;
use crate::domain::hub::Clock;
use crate::domain::hub::SystemClock;
use crate::domain::oauth::{OAuth, RefreshOutcome};
use crate::domain::read_cache::{ReadCache, ReadCacheSettings};
use crate::domain::rotation::check_stored_keys;
use crate::events::{EventBus, StreamLimits, start_pruner};
use crate::pb::access_service_server::AccessServiceServer;
use crate::pb::audit_service_server::AuditServiceServer;
use crate::pb::installed_app_service_server::InstalledAppServiceServer;
use crate::pb::integration_service_server::IntegrationServiceServer;
use crate::pb::webhook_service_server::WebhookServiceServer;
use crate::store::Store;

mod audit;
mod database;
mod oauth;
mod secrets;
mod verify;
use database::spawn_database_probe;
pub use database::{DATABASE_HEALTH, open_database};
pub use oauth::{oauth_settings, provider_calls, provider_policy};
use secrets::{DEV_KEYS_FILE, dev_secret};
pub use secrets::{jwt_secret, key_ring};
pub use verify::VerifyArgs;

/// A built server, listening, not yet serving.
pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    http_listener: Option<TcpListener>,
    metrics: Arc<crate::metrics::Metrics>,
    local_addr: SocketAddr,
    args: ServeArgs,
    verifier: Arc<Verifier>,
    hub: Arc<Hub>,
    store: Store,
}

/// Outside `--dev` every token must name its issuer and its audience, so a token minted by
/// the same identity provider for another service is not accepted here.
pub fn require_issuer_and_audience(auth: &AuthArgs, dev: bool) -> anyhow::Result<()> {
    if dev {
        return Ok(());
    }
    let missing: Vec<&str> = [
        (auth.jwt_issuer.is_none(), "INTEGRATION_HUB_JWT_ISSUER"),
        (auth.jwt_audience.is_none(), "INTEGRATION_HUB_JWT_AUDIENCE"),
    ]
    .into_iter()
    .filter_map(|(absent, name)| absent.then_some(name))
    .collect();
    if !missing.is_empty() {
        bail!(
            "{} must be set: outside --dev every token must name the configured issuer and audience (or run serve --dev)",
            missing.join(" and ")
        );
    }
    Ok(())
}

/// Signs and verifies one token with the configured secret and claims, so a broken crypto
/// backend or inconsistent token settings stop the start instead of every call.
async fn token_self_test(
    verifier: &Verifier,
    secret: &[u8],
    config: &VerifierConfig,
) -> anyhow::Result<()> {
    let token = crate::auth::mint_hs256(
        secret,
        &crate::auth::MintClaims {
            subject: "integration-hub-self-test".to_owned(),
            team: "self-test".to_owned(),
            roles: config
                .role_map
                .sample_value()
                .map(str::to_owned)
                .into_iter()
                .collect(),
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            ttl_secs: 60,
            team_claim: config.team_claim.clone(),
            roles_claim: config.roles_claim.clone(),
        },
    )
    .map_err(|e| anyhow::anyhow!("token self-test: cannot sign: {e}"))?;
    verifier
        .verify(Some(&format!("Bearer {token}")))
        .await
        .map(drop)
        .map_err(|e| anyhow::anyhow!("token self-test: a freshly signed token was refused: {e}"))
}

/// Verifier settings from the auth arguments.
pub fn verifier_config(auth: &AuthArgs, secret: Option<String>) -> anyhow::Result<VerifierConfig> {
    let mut config = VerifierConfig {
        hs256_secret: secret.map(String::into_bytes),
        ..VerifierConfig::default()
    };
    config.jwks.file = auth.jwt_jwks_file.clone();
    config.jwks.url = auth.jwt_jwks_url.clone();
    config.issuer = auth.jwt_issuer.clone();
    config.audience = auth.jwt_audience.clone();
    config.team_claim = auth.team_claim.clone();
    config.roles_claim = auth.roles_claim.clone();
    if let Some(map) = &auth.role_map {
        config.role_map = RoleMap::parse(map)
            .map_err(|e| anyhow::anyhow!("INTEGRATION_HUB_ROLE_MAP is invalid: {e}"))?;
    }
    config.groups_claim = auth.groups_claim.clone();
    config.service_subjects = ServiceSubjects::parse(
        auth.all_teams_services.as_deref(),
        auth.service_limits.as_deref(),
    )
    .map_err(|e| {
        anyhow::anyhow!(
            "INTEGRATION_HUB_ALL_TEAMS_SERVICES or INTEGRATION_HUB_SERVICE_LIMITS is invalid: {e}"
        )
    })?;
    Ok(config)
}

impl Application {
    pub async fn build(mut args: ServeArgs) -> anyhow::Result<Application> {
        let data_dir = args.database.data_dir.clone();
        if args.dev {
            // Development mode never listens beyond this machine.
            if !args.listen.ip().is_loopback() {
                tracing::warn!(listen = %args.listen, "--dev listens on loopback only; using 127.0.0.1");
                args.listen.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
        }
        require_issuer_and_audience(&args.auth, args.dev)?;
        let secret = jwt_secret(&args.auth, &data_dir, args.dev)?;
        let config = verifier_config(&args.auth, secret)?;
        let probe = config
            .hs256_secret
            .clone()
            .map(|secret| (secret, config.clone()));
        let verifier = Verifier::new(config)
            .await
            .map_err(|e| anyhow::anyhow!("token settings are invalid: {e}"))?;
        if let Some((secret, config)) = probe {
            token_self_test(&verifier, &secret, &config).await?;
        }
        let keys_spec = match (&args.encryption_keys, args.dev) {
            (Some(spec), _) => spec.clone(),
            (None, true) => dev_secret(&data_dir, DEV_KEYS_FILE, || Ok(KeyRing::generate(1)?.1))?,
            (None, false) => bail!(
                "INTEGRATION_HUB_ENCRYPTION_KEYS is not set: the service refuses to store credentials without keys (or run serve --dev)"
            ),
        };
        let keys = key_ring(&keys_spec, args.min_key_version)?;
        let catalog = match &args.catalog_file {
            Some(path) => Catalog::from_file(path)
                .map_err(|e| anyhow::anyhow!("INTEGRATION_HUB_CATALOG_FILE is invalid: {e}"))?,
            None => Catalog::builtin(),
        };
        let store = open_database(&args.database, args.database.db_max_connections).await?;
        if args.skip_migrations {
            tracing::info!("skipping migrations (INTEGRATION_HUB_SKIP_MIGRATIONS)");
        } else {
            store.migrate().await.context("database migration failed")?;
        }
        // A wrong key would otherwise surface as INTERNAL on the first resolution.
        check_stored_keys(&store, &keys).await?;
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let local_addr = listener.local_addr()?;
        let metrics_listener = match args.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen for metrics on {addr}"))?,
            ),
            None => None,
        };
        if args.dev {
            tracing::warn!(
                listen = %local_addr,
                data_dir = %data_dir.display(),
                "DEVELOPMENT MODE: generated secrets are kept in the data directory; never use this in production"
            );
        }
        let http_listener = match args.oauth.http_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen for the OAuth callback on {addr}"))?,
            ),
            None => None,
        };
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let loopback = args.oauth.oauth_allow_loopback_http || args.dev;
        let observed = metrics.clone();
        let credentials_verifier = verify::verifier(&args.verify, &catalog, args.dev, loopback)?
            .observe(move |outcome| observed.record_check(outcome, 1));
        for outcome in crate::domain::verify::Verdict::OUTCOMES {
            metrics.record_check(outcome, 0);
        }
        let mut hub = Hub::new(
            store.clone(),
            Arc::new(keys),
            Arc::new(catalog),
            Arc::new(SystemClock),
        )
        .with_verifier(credentials_verifier)
        .with_read_cache(ReadCacheSettings {
            ttl: std::time::Duration::from_millis(args.read_cache_ttl_ms),
            budget_bytes: args.read_cache_bytes,
        })
        .with_audit_readers(args.audit.audit_readers.clone())
        .with_read_audits(args.audit.audit_reads);
        // Every outcome's series exists from the start (zero without OAuth), so dashboards
        // and alerts find it.
        for outcome in RefreshOutcome::ALL {
            metrics.record_refresh(outcome.as_str(), 0);
        }
        if let Some(oauth) = oauth_settings(&args.oauth, args.dev)? {
            let calls = provider_calls(provider_policy(&args.oauth, args.dev))?;
            let observed = metrics.clone();
            hub = hub.with_oauth(
                OAuth::new(oauth, calls)
                    .observe(move |outcome| observed.record_refresh(outcome.as_str(), 1)),
            );
        }
        let hub = Arc::new(hub);
        Ok(Application {
            listener,
            metrics_listener,
            http_listener,
            metrics,
            local_addr,
            args,
            verifier: Arc::new(verifier),
            hub,
            store,
        })
    }

    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where the OAuth callback is served, when it is.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Where metrics are served, when they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves; then reports NOT_SERVING, ends watch streams with
    /// their cursor, lets in-flight calls finish, and returns (within the shutdown deadline).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let metrics = self.metrics.clone();
        if let Some(listener) = self.http_listener {
            tokio::spawn(crate::api::callback::serve(
                listener,
                self.hub.clone(),
                stop_rx.clone(),
            ));
        }
        self.hub.authorizations().spawn_refresher(stop_rx.clone());
        self.hub.apps().spawn_checker(stop_rx.clone());
        let bus = EventBus::start(self.store.clone(), metrics.clone(), stop_rx.clone())
            .await
            .context("cannot read the event log")?;
        forget_what_events_change(&bus, self.hub.read_cache().clone(), stop_rx.clone());
        start_pruner(
            self.store.clone(),
            std::time::Duration::from_secs(self.args.event_retention_secs),
            std::time::Duration::from_secs(self.args.prune_interval_secs),
            || SystemClock.now_micros(),
            stop_rx.clone(),
        );
        audit::spawn_audit_keeper(
            self.hub.clone(),
            self.args.audit.clone(),
            std::time::Duration::from_secs(self.args.prune_interval_secs),
            metrics.clone(),
            stop_rx.clone(),
        );
        if let Some(listener) = self.metrics_listener {
            let store = self.store.clone();
            tokio::spawn(crate::metrics::serve(
                listener,
                metrics.clone(),
                stop_rx.clone(),
                move |metrics| {
                    use std::sync::atomic::Ordering;
                    let (open, idle) = store.pool_stats();
                    metrics
                        .db_connections
                        .store(i64::from(open), Ordering::Relaxed);
                    metrics
                        .db_connections_idle
                        .store(idle as i64, Ordering::Relaxed);
                },
            ));
        }
        let limits = StreamLimits::new(
            self.args.max_watch_streams,
            self.args.max_watch_streams_per_principal,
            metrics.clone(),
        );
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        for service in crate::api::methods::services() {
            health_reporter
                .set_service_status(service, ServingStatus::Serving)
                .await;
        }
        spawn_database_probe(self.store.clone(), health_reporter.clone(), stop_rx.clone());
        let reflection_v1 = crate::api::reflection::builder().build_v1()?;
        let reflection_v1alpha = crate::api::reflection::builder().build_v1alpha()?;
        let max_message = self.args.max_message_bytes;
        let memory = crate::events::WatchMemory::new(
            usize::try_from(self.args.watch_memory_bytes).unwrap_or(usize::MAX),
            usize::try_from(self.args.watch_stream_buffer_bytes).unwrap_or(usize::MAX),
        );
        // Both services' streams share one tailer, one set of limits and one memory budget.
        let bus_for_webhooks = bus.clone();
        let app_watches = crate::events::Watches::new(
            bus.clone(),
            limits.clone(),
            memory.clone(),
            self.args.checkpoint_interval(),
            stop_rx.clone(),
        );
        let installed_apps =
            InstalledAppServiceServer::new(InstalledApps::new(self.hub.clone(), app_watches))
                .max_decoding_message_size(max_message);
        let integrations = IntegrationServiceServer::new(Integrations::new(
            self.hub.clone(),
            bus,
            limits.clone(),
            memory,
            self.args.checkpoint_interval(),
            stop_rx.clone(),
        ))
        .max_decoding_message_size(max_message);
        let deprovisioners = self
            .args
            .auth
            .deprovisioning_services
            .iter()
            .cloned()
            .collect();
        let access = AccessServiceServer::new(AccessControl::new(self.hub.clone(), deprovisioners))
            .max_decoding_message_size(max_message);
        let audit = AuditServiceServer::new(AuditLog::new(
            self.hub.clone(),
            limits.clone(),
            self.args.checkpoint_interval(),
            stop_rx.clone(),
        ))
        .max_decoding_message_size(max_message);
        let webhooks = start_webhooks(
            &self.hub,
            &self.store,
            &self.args,
            &bus_for_webhooks,
            &metrics,
            stop_rx.clone(),
        )?;
        let limits = RoleRateLimits::new(|role| {
            let limit = self.args.rate_limit(role);
            (limit.per_sec, limit.burst)
        });
        for role in Role::ALL.into_iter().filter(|role| !limits.limits(*role)) {
            tracing::warn!(
                role = role.as_str(),
                "per-principal rate limit disabled for this role (INTEGRATION_HUB_RATE_LIMIT_*)"
            );
        }

        let deadline = self.args.shutdown_deadline();
        let (drain_tx, drain_rx) = tokio::sync::oneshot::channel::<()>();
        let reporter = health_reporter.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: NOT_SERVING, ending watch streams");
            for service in crate::api::methods::services() {
                reporter
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
            let _ = stop_tx.send(true);
            let _ = drain_tx.send(());
            // Keep the stop signal alive until the process is done with it.
            std::future::pending::<()>().await;
        });
        let answers = Answers::new(&self.args.bounds);
        answers.start(stop_rx.clone());
        let server = Server::builder()
            .timeout(self.args.request_timeout())
            .max_concurrent_streams(self.args.bounds.max_streams_per_connection)
            .layer(
                tower::ServiceBuilder::new()
                    .layer(ObserveLayer::new(metrics))
                    .layer(CallLimitLayer::new(&self.args.bounds))
                    .layer(
                        AuthLayer::new(self.verifier.clone())
                            .with_rate_limits(Arc::new(limits))
                            .with_audit(self.hub.clone()),
                    )
                    .layer(AnswerLayer::new(answers)),
            )
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(installed_apps)
            .add_service(integrations)
            .add_service(audit)
            .add_service(webhooks)
            .add_service(access)
            .serve_with_incoming_shutdown(accepted(self.listener), async move {
                let _ = drain_rx.await;
            });
        tracing::info!(listen = %self.local_addr, "serving");
        let mut server = std::pin::pin!(server);
        let mut stopping = stop_rx.clone();
        tokio::select! {
            result = &mut server => result.context("server failed")?,
            _ = async {
                let _ = stopping.wait_for(|stop| *stop).await;
                tokio::time::sleep(deadline).await;
            } => {
                tracing::warn!(?deadline, "shutdown deadline passed; stopping with calls in flight");
            }
        }
        self.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Starts this replica's webhook delivery worker and builds `WebhookService`.
fn start_webhooks(
    hub: &Arc<Hub>,
    store: &Store,
    args: &ServeArgs,
    bus: &EventBus,
    metrics: &Arc<crate::metrics::Metrics>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<WebhookServiceServer<crate::api::Webhooks>> {
    let w = args.webhooks.clone();
    let (max, grace) = (w.webhook_max_subscriptions, w.webhook_secret_grace_secs);
    let outgoing = crate::webhooks::start(
        hub.clone(),
        store.clone(),
        bus.clone(),
        metrics.clone(),
        w,
        stop,
    )
    .context("cannot start webhook delivery")?;
    let service = crate::api::Webhooks::new(hub.clone(), outgoing, max, Duration::from_secs(grace));
    Ok(WebhookServiceServer::new(service).max_decoding_message_size(args.max_message_bytes))
}

/// Every event the tailer reads (another replica's change, or this one's) marks its team
/// changed in the read cache; a tailer that lagged past the ring forgets everything.
fn forget_what_events_change(
    bus: &EventBus,
    cache: Arc<ReadCache>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batches = bus.subscribe();
    tokio::spawn(async move {
        loop {
            let batch = tokio::select! {
                batch = batches.recv() => batch,
                _ = stop.changed() => return,
            };
            match batch {
                Ok(batch) => {
                    for event in &batch.events {
                        cache.changed(&event.team);
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => cache.clear(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// The accepted connections, each with a handle that can close it (`api::bounds`).
fn accepted(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<crate::api::connections::Accepted>> {
    use tokio_stream::StreamExt as _;
    TcpListenerStream::new(listener)
        .map(|accepted| accepted.map(crate::api::connections::Accepted::new))
}
