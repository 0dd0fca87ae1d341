//! Shared fixtures of the API tests: one team with its people, request builders, installed
//! apps and integrations made through the real API, watch streams read with a timeout, and
//! readers of error details.

// Not every test uses every fixture.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use integration_hub::auth::{MintClaims, mint_hs256};
use integration_hub::crypto::KeyRing;
use integration_hub::domain::tokens::TeamCursors;
use integration_hub::domain::types::TeamId;
use integration_hub::pb;
use integration_hub::pb::installed_app_service_client::InstalledAppServiceClient;
use integration_hub::pb::integration_service_client::IntegrationServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};
use tonic_types::StatusExt;

use crate::helpers::{TestApp, authed, test_key_spec};

/// The team every test works in.
pub const TEAM: &str = "acme";
/// How long a test waits for something that should happen at once.
pub const WAIT: Duration = Duration::from_secs(10);
/// Longest wait for one answer of the server; a hang fails the test instead of blocking it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// The clients a fixture calls the server through: a `TestApp`'s, or those of a server
/// process (`ServerProcess::clients`).
pub trait Clients {
    fn apps(&self) -> InstalledAppServiceClient<Channel>;
    fn integrations(&self) -> IntegrationServiceClient<Channel>;
}

impl Clients for TestApp {
    fn apps(&self) -> InstalledAppServiceClient<Channel> {
        self.apps.clone()
    }

    fn integrations(&self) -> IntegrationServiceClient<Channel> {
        self.integrations.clone()
    }
}

impl Clients
    for (
        InstalledAppServiceClient<Channel>,
        IntegrationServiceClient<Channel>,
    )
{
    fn apps(&self) -> InstalledAppServiceClient<Channel> {
        self.0.clone()
    }

    fn integrations(&self) -> IntegrationServiceClient<Channel> {
        self.1.clone()
    }
}

/// Tokens of the team's people, by role.
pub struct People {
    /// The developer who sets up the apps.
    pub dana: String,
    /// Another developer of the team.
    pub erik: String,
    pub admin: String,
    pub viewer: String,
    /// A system service account of the team.
    pub service: String,
}

pub fn people(app: &TestApp) -> People {
    People {
        dana: app.token(TEAM, "developer", "dana"),
        erik: app.token(TEAM, "developer", "erik"),
        admin: app.token(TEAM, "admin", "ada"),
        viewer: app.token(TEAM, "viewer", "vic"),
        service: app.token(TEAM, "service", "monitor-runner"),
    }
}

/// Tokens of dana (a developer) and ada (an admin) of the team, for servers started as
/// processes.
pub fn people_tokens() -> (String, String) {
    (
        crate::helpers::token(TEAM, "developer", "dana"),
        crate::helpers::token(TEAM, "admin", "ada"),
    )
}

/// A token that is well formed and current but signed with another secret.
pub fn token_of_another_secret() -> String {
    mint_hs256(
        b"another-secret-another-secret-another-secret",
        &MintClaims {
            subject: "mallory".into(),
            team: TEAM.into(),
            roles: vec!["admin".into()],
            issuer: None,
            audience: None,
            ttl_secs: 3600,
            team_claim: "team_id".into(),
            roles_claim: "roles".into(),
        },
    )
    .expect("mint")
}

/// Credentials for `service` (every catalog service used here takes an `access_token`).
pub fn credentials(secret: &str) -> HashMap<String, String> {
    HashMap::from([("access_token".to_owned(), secret.to_owned())])
}

/// An integration type of `service` and a valid config for it.
pub fn job_of(service: &str) -> (&'static str, HashMap<String, String>) {
    let config = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    match service {
        "slack" => (
            "slack.post_monitor_results",
            config(&[("channel", "#ops"), ("monitor_id", "m-1")]),
        ),
        "github" => (
            "github.backup_collections",
            config(&[("repository", "acme/api"), ("collection_id", "c-1")]),
        ),
        other => panic!("no job fixture for service {other}"),
    }
}

/// The request that adds an installed app of `service` with an `access_token` of `secret`.
pub fn app_request(
    service: &str,
    display_name: &str,
    secret: &str,
) -> pb::CreateInstalledAppRequest {
    pb::CreateInstalledAppRequest {
        installed_app: Some(pb::InstalledApp {
            service: service.into(),
            display_name: display_name.into(),
            connected_to: "acme-workspace".into(),
            ..Default::default()
        }),
        credentials: credentials(secret),
        ..Default::default()
    }
}

/// Adds an installed app of `service` with an `access_token` of `secret`.
pub async fn create_app_with(
    app: &impl Clients,
    token: &str,
    service: &str,
    display_name: &str,
    secret: &str,
) -> pb::InstalledApp {
    app.apps()
        .create_installed_app(authed(token, app_request(service, display_name, secret)))
        .await
        .unwrap_or_else(|status| panic!("create installed app {display_name}: {status:?}"))
        .into_inner()
}

/// Adds an installed app of `service`.
pub async fn create_app(
    app: &impl Clients,
    token: &str,
    service: &str,
    display_name: &str,
) -> pb::InstalledApp {
    let secret = format!("{service}-secret-of-{display_name}");
    create_app_with(app, token, service, display_name, &secret).await
}

/// The request that adds an integration of `service` on the installed app named
/// `installed_app` (without credentials).
pub fn integration_request_on(
    service: &str,
    installed_app: &str,
    display_name: &str,
) -> pb::CreateIntegrationRequest {
    let (type_id, config) = job_of(service);
    pb::CreateIntegrationRequest {
        integration: Some(pb::Integration {
            installed_app: installed_app.into(),
            r#type: type_id.into(),
            display_name: display_name.into(),
            config,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The request that adds integration "Job `n`" of Slack on the app named `installed_app`,
/// its two free-text config values padded to `len` bytes each (2,048 at most): rows and
/// events of a size a test chooses.
pub fn padded_integration(
    installed_app: &str,
    n: usize,
    len: usize,
) -> pb::CreateIntegrationRequest {
    let padded = |prefix: String| format!("{prefix:x<len$}");
    pb::CreateIntegrationRequest {
        integration: Some(pb::Integration {
            installed_app: installed_app.into(),
            r#type: "slack.post_monitor_results".into(),
            display_name: format!("Job {n}"),
            config: HashMap::from([
                ("channel".to_owned(), padded(format!("#{n}-"))),
                ("monitor_id".to_owned(), padded(format!("m{n}-"))),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The request that adds an integration on `installed_app` (without credentials).
pub fn integration_request(
    installed_app: &pb::InstalledApp,
    display_name: &str,
) -> pb::CreateIntegrationRequest {
    integration_request_on(&installed_app.service, &installed_app.name, display_name)
}

/// The request that adds an integration of `service` with credentials of its own.
pub fn own_integration_request(
    service: &str,
    display_name: &str,
    secret: &str,
) -> pb::CreateIntegrationRequest {
    let (type_id, config) = job_of(service);
    pb::CreateIntegrationRequest {
        integration: Some(pb::Integration {
            service: service.into(),
            r#type: type_id.into(),
            display_name: display_name.into(),
            config,
            ..Default::default()
        }),
        credentials: credentials(secret),
        ..Default::default()
    }
}

/// Adds an integration using `installed_app`, without giving credentials.
pub async fn create_integration(
    app: &impl Clients,
    token: &str,
    installed_app: &pb::InstalledApp,
    display_name: &str,
) -> pb::Integration {
    app.integrations()
        .create_integration(authed(
            token,
            integration_request(installed_app, display_name),
        ))
        .await
        .unwrap_or_else(|status| panic!("create integration {display_name}: {status:?}"))
        .into_inner()
}

/// Adds `n` integrations on `installed_app`, named `{prefix} 0` to `{prefix} n-1`.
pub async fn create_integrations(
    app: &impl Clients,
    token: &str,
    installed_app: &pb::InstalledApp,
    prefix: &str,
    n: usize,
) -> Vec<pb::Integration> {
    let mut created = Vec::with_capacity(n);
    for i in 0..n {
        created.push(create_integration(app, token, installed_app, &format!("{prefix} {i}")).await);
    }
    created
}

/// Adds an integration of `service` with credentials of its own.
pub async fn create_own_integration(
    app: &impl Clients,
    token: &str,
    service: &str,
    display_name: &str,
    secret: &str,
) -> pb::Integration {
    app.integrations()
        .create_integration(authed(
            token,
            own_integration_request(service, display_name, secret),
        ))
        .await
        .unwrap_or_else(|status| panic!("create own integration {display_name}: {status:?}"))
        .into_inner()
}

pub async fn get_app(
    app: &impl Clients,
    token: &str,
    name: &str,
) -> Result<pb::InstalledApp, Status> {
    app.apps()
        .get_installed_app(authed(
            token,
            pb::GetInstalledAppRequest { name: name.into() },
        ))
        .await
        .map(|r| r.into_inner())
}

pub async fn get_integration(
    app: &impl Clients,
    token: &str,
    name: &str,
) -> Result<pb::Integration, Status> {
    app.integrations()
        .get_integration(authed(
            token,
            pb::GetIntegrationRequest { name: name.into() },
        ))
        .await
        .map(|r| r.into_inner())
}

pub async fn delete_app(
    app: &impl Clients,
    token: &str,
    name: &str,
    etag: &str,
    validate_only: bool,
) -> Result<Vec<String>, Status> {
    app.apps()
        .delete_installed_app(authed(
            token,
            pb::DeleteInstalledAppRequest {
                name: name.into(),
                etag: etag.into(),
                validate_only,
            },
        ))
        .await
        .map(|r| r.into_inner().broken_integrations)
}

/// The request that replaces the credentials of the installed app `name`.
pub fn update_credentials(
    name: &str,
    credentials: HashMap<String, String>,
) -> pb::UpdateInstalledAppRequest {
    pb::UpdateInstalledAppRequest {
        installed_app: Some(pb::InstalledApp {
            name: name.into(),
            ..Default::default()
        }),
        credentials,
        ..Default::default()
    }
}

/// The request that renames the installed app `name` (and changes nothing else).
pub fn rename_app_request(name: &str, display_name: &str) -> pb::UpdateInstalledAppRequest {
    pb::UpdateInstalledAppRequest {
        installed_app: Some(pb::InstalledApp {
            name: name.into(),
            display_name: display_name.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["display_name".into()],
        }),
        ..Default::default()
    }
}

/// The request that renames the integration `name` (and changes nothing else).
pub fn rename_integration_request(name: &str, display_name: &str) -> pb::UpdateIntegrationRequest {
    pb::UpdateIntegrationRequest {
        integration: Some(pb::Integration {
            name: name.into(),
            display_name: display_name.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["display_name".into()],
        }),
    }
}

/// Renames an integration: a cheap change that appends one INTEGRATION_UPDATED event.
pub async fn rename_integration(
    app: &impl Clients,
    token: &str,
    name: &str,
    display_name: &str,
) -> pb::Integration {
    app.integrations()
        .update_integration(authed(
            token,
            rename_integration_request(name, display_name),
        ))
        .await
        .unwrap_or_else(|status| panic!("rename integration {name}: {status:?}"))
        .into_inner()
}

pub async fn resolve(
    app: &impl Clients,
    token: &str,
    name: &str,
) -> Result<pb::ResolveIntegrationCredentialsResponse, Status> {
    app.integrations()
        .resolve_integration_credentials(authed(
            token,
            pb::ResolveIntegrationCredentialsRequest { name: name.into() },
        ))
        .await
        .map(|r| r.into_inner())
}

pub async fn list_integrations(
    app: &impl Clients,
    token: &str,
    installed_app: &str,
    state: pb::integration::State,
) -> pb::ListIntegrationsResponse {
    app.integrations()
        .list_integrations(authed(
            token,
            pb::ListIntegrationsRequest {
                installed_app: installed_app.into(),
                state: state as i32,
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .unwrap_or_else(|status| panic!("list integrations: {status:?}"))
        .into_inner()
}

/// The installed apps `token` may see: one page of up to 1,000.
pub async fn all_apps(app: &impl Clients, token: &str) -> Vec<pb::InstalledApp> {
    app.apps()
        .list_installed_apps(authed(
            token,
            pb::ListInstalledAppsRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .unwrap_or_else(|status| panic!("list installed apps: {status:?}"))
        .into_inner()
        .installed_apps
}

/// SuspendInstalledApp on the app `name`, as `token`, with `reason`.
pub async fn suspend(
    app: &impl Clients,
    token: &str,
    name: &str,
    reason: &str,
) -> Result<pb::InstalledApp, Status> {
    app.apps()
        .suspend_installed_app(authed(
            token,
            pb::SuspendInstalledAppRequest {
                name: name.into(),
                reason: reason.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// ReportCredentialsRejected on the app `name`, as `token`, with `detail`.
pub async fn report_rejected(
    app: &impl Clients,
    token: &str,
    name: &str,
    detail: &str,
) -> Result<pb::InstalledApp, Status> {
    app.apps()
        .report_credentials_rejected(authed(
            token,
            pb::ReportCredentialsRejectedRequest {
                name: name.into(),
                detail: detail.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// `authed` with an `x-request-id`.
pub fn traced<T>(token: &str, request_id: &str, message: T) -> Request<T> {
    let mut request = authed(token, message);
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().expect("metadata value"));
    request
}

/// Every audit event of the caller's team matching `filter`, newest first, walking pages.
pub async fn all_events(
    app: &TestApp,
    admin: &str,
    filter: pb::ListAuditEventsRequest,
) -> Vec<pb::AuditEvent> {
    let mut audit = app.audit.clone();
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let page = audit
            .list_audit_events(authed(
                admin,
                pb::ListAuditEventsRequest {
                    page_token: token.clone(),
                    ..filter.clone()
                },
            ))
            .await
            .expect("list audit events")
            .into_inner();
        events.extend(page.audit_events);
        if page.next_page_token.is_empty() {
            return events;
        }
        token = page.next_page_token;
    }
}

/// Opens a watch of the token's team.
pub async fn try_watch(
    app: &impl Clients,
    token: &str,
    start_cursor: &str,
    types: &[pb::IntegrationEventType],
) -> Result<Streaming<pb::WatchIntegrationEventsResponse>, Status> {
    app.integrations()
        .watch_integration_events(authed(
            token,
            pb::WatchIntegrationEventsRequest {
                start_cursor: start_cursor.into(),
                types: types.iter().map(|t| *t as i32).collect(),
                ..Default::default()
            },
        ))
        .await
        .map(|r| r.into_inner())
}

pub async fn watch(
    app: &impl Clients,
    token: &str,
    start_cursor: &str,
    types: &[pb::IntegrationEventType],
) -> Streaming<pb::WatchIntegrationEventsResponse> {
    try_watch(app, token, start_cursor, types)
        .await
        .unwrap_or_else(|status| panic!("watch: {status:?}"))
}

/// Opens a live watch of every event type and reads its opening checkpoint: every change
/// made after this returns is delivered on the stream. Returns the stream and the cursor.
pub async fn watch_live(
    app: &impl Clients,
    token: &str,
) -> (Streaming<pb::WatchIntegrationEventsResponse>, String) {
    let mut stream = watch(app, token, "", &[]).await;
    let first = next_message(&mut stream, WAIT).await;
    assert!(
        first.checkpoint && first.events.is_empty(),
        "a live watch opens with a checkpoint: {first:?}"
    );
    assert!(
        !first.cursor.is_empty(),
        "the opening checkpoint has a cursor"
    );
    (stream, first.cursor)
}

/// The next message of a stream; fails on an error, the end of the stream or a timeout.
pub async fn next_message(
    stream: &mut Streaming<pb::WatchIntegrationEventsResponse>,
    wait: Duration,
) -> pb::WatchIntegrationEventsResponse {
    match tokio::time::timeout(wait, stream.message()).await {
        Ok(Ok(Some(message))) => message,
        Ok(Ok(None)) => panic!("the watch stream ended"),
        Ok(Err(status)) => panic!("the watch stream failed: {status:?}"),
        Err(_) => panic!("no watch message within {wait:?}"),
    }
}

/// Reads messages until `n` events have arrived (checkpoints are skipped) and returns exactly
/// those; fails if a message brings more, on an error, or when `wait` passes.
pub async fn next_events(
    stream: &mut Streaming<pb::WatchIntegrationEventsResponse>,
    n: usize,
    wait: Duration,
) -> Vec<pb::IntegrationEvent> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = match tokio::time::timeout(left, stream.message()).await {
            Ok(Ok(Some(message))) => message,
            Ok(Ok(None)) => panic!(
                "the watch stream ended after {} of {n} events",
                events.len()
            ),
            Ok(Err(status)) => panic!(
                "the watch stream failed after {} of {n} events: {status:?}",
                events.len()
            ),
            Err(_) => panic!(
                "only {} of {n} events within {wait:?}: {:?}",
                events.len(),
                summary(&events)
            ),
        };
        events.extend(message.events);
    }
    assert_eq!(
        events.len(),
        n,
        "more events than expected: {:?}",
        summary(&events)
    );
    events
}

/// Reads a stream to its end: the events still delivered and the status it ended with.
pub async fn stream_end(
    stream: &mut Streaming<pb::WatchIntegrationEventsResponse>,
    wait: Duration,
) -> (Vec<pb::IntegrationEvent>, Status) {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, stream.message()).await {
            Ok(Ok(Some(message))) => events.extend(message.events),
            Ok(Ok(None)) => panic!("the watch stream ended without a status"),
            Ok(Err(status)) => return (events, status),
            Err(_) => panic!("the watch stream did not end within {wait:?}"),
        }
    }
}

/// Type and integration of each event, for failure messages and comparisons.
pub fn summary(events: &[pb::IntegrationEvent]) -> Vec<(pb::IntegrationEventType, String)> {
    events
        .iter()
        .map(|e| (event_type(e), e.integration_name.clone()))
        .collect()
}

pub fn event_type(event: &pb::IntegrationEvent) -> pb::IntegrationEventType {
    pb::IntegrationEventType::try_from(event.r#type).expect("a known event type")
}

/// The teams whose cursors [`seq`] can open.
const CURSOR_TEAMS: [Option<&str>; 6] = [
    Some(TEAM),
    Some("globex"),
    Some("other"),
    Some("team-a"),
    Some("team-b"),
    None,
];

/// The cursors of `team` (`None`: of every team) as a server started with the tests' key ring
/// seals them.
pub fn cursors(team: Option<&str>) -> TeamCursors {
    let keys = Arc::new(KeyRing::parse(test_key_spec()).expect("the tests' key ring"));
    let team = team.map(|t| TeamId::parse(t).expect("a team id"));
    TeamCursors::new(keys, team.as_ref())
}

/// The position a cursor stands for. Cursors are sealed and opaque to clients; the tests,
/// which hold the servers' key ring, look inside only to check ordering.
pub fn seq(cursor: &str) -> i64 {
    CURSOR_TEAMS
        .iter()
        .find_map(|team| cursors(*team).open("cursor", cursor).ok().flatten())
        .unwrap_or_else(|| panic!("not a cursor of the test servers: {cursor:?}"))
        .0
}

/// Asserts the code of a failed call and returns the status.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got success: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "unexpected status: {status:?}");
            status
        }
    }
}

/// The `reason` of the status's `ErrorInfo`, after checking its domain; panics when the status
/// has none.
pub fn error_reason(status: &Status) -> String {
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "integrationhub", "{status:?}");
    info.reason
}

/// The `metadata` of the status's `ErrorInfo`.
pub fn error_metadata(status: &Status) -> HashMap<String, String> {
    status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"))
        .metadata
}

/// The fields named by the status's `BadRequest` (empty when there is none).
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

/// INVALID_ARGUMENT, reason INVALID_ARGUMENT, and a `BadRequest` naming `field`.
#[track_caller]
pub fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, field: &str) {
    let status = match result {
        Ok(answer) => panic!("expected INVALID_ARGUMENT naming {field:?}, got {answer:?}"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    assert_eq!(
        error_reason(&status),
        "INVALID_ARGUMENT",
        "{field}: {status:?}"
    );
    let fields = violated_fields(&status);
    assert!(
        fields.iter().any(|f| f == field),
        "expected a violation of {field:?}, got {fields:?} in {status:?}"
    );
}

pub fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

pub fn names(integrations: &[pb::Integration]) -> Vec<String> {
    integrations.iter().map(|i| i.name.clone()).collect()
}

/// Asserts that the next event on `stream` is the sentinel rename of `integration`.
pub async fn expect_sentinel_next(
    app: &impl Clients,
    token: &str,
    stream: &mut tonic::Streaming<pb::WatchIntegrationEventsResponse>,
    integration: &str,
) {
    rename_integration(app, token, integration, "Sentinel").await;
    let next = next_events(stream, 1, WAIT).await;
    assert_eq!(
        summary(&next),
        vec![(
            pb::IntegrationEventType::IntegrationUpdated,
            integration.to_owned()
        )],
        "the sentinel rename is the next event: nothing else was appended"
    );
}

/// `bytes` as lowercase hex digits.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The Prometheus page served at `address` (`host:port`).
pub async fn metrics_page(address: impl std::fmt::Display) -> String {
    reqwest::get(format!("http://{address}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics page")
}

/// The value of the counter `name` with label `outcome` on a metrics `page`; panics when the
/// series is missing.
pub fn outcome_count(page: &str, name: &str, outcome: &str) -> f64 {
    let prefix = format!("{name}{{outcome=\"{outcome}\"}} ");
    page.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {outcome} series of {name}:\n{page}"))
}
