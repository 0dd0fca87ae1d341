//! Reads of many distinct records, the shape users bring: `teams` teams, each with one
//! installed app and `per_team` integrations (10,000 in all by default), read at random, call
//! by call: GetIntegration and ResolveIntegrationCredentials of any of the integrations, and
//! ListIntegrations (a page of 50) of any of the teams, each with its own team's token. One
//! server answers them with its read cache on (as deployed), then a second server, on the
//! same database, with the read cache off: every call is then a read of the database.

use std::path::Path;

use integration_hub::pb;
use tonic::transport::Channel;

use crate::seed::{self, Tokens};
use crate::server::{ServerProcess, ServerSpec};
use crate::unary::{Call, Load, frame};
use crate::{Row, Target};

pub const GET: &str = "/integrationhub.v1.IntegrationService/GetIntegration";
const GET_APP: &str = "/integrationhub.v1.InstalledAppService/GetInstalledApp";
const LIST: &str = "/integrationhub.v1.IntegrationService/ListIntegrations";
const RESOLVE: &str = "/integrationhub.v1.IntegrationService/ResolveIntegrationCredentials";

/// One seeded team: its tokens and the names of its integrations.
pub struct Team {
    /// The name of its installed app.
    app: String,
    viewer: String,
    service: String,
    integrations: Vec<String>,
}

/// Seeds `teams` teams of `per_team` integrations: the apps through the API, the
/// integrations with SQL (ids `keys{t}-1` .. `keys{t}-{per_team}`: ids are unique across
/// teams).
pub async fn seed(
    channel: &Channel,
    url: &str,
    tokens: &Tokens,
    teams: usize,
    per_team: usize,
) -> anyhow::Result<Vec<Team>> {
    let mut seeded = Vec::with_capacity(teams);
    for t in 0..teams {
        let team = format!("keys{t}");
        let developer = tokens.mint(&team, "developer", "keys-developer")?;
        let app = seed::create_app(channel, &developer, "Slack (keys)").await?;
        let prefix = format!("{team}-");
        seed::seed_integrations(url, &team, seed::id_of(&app.name), &prefix, per_team).await?;
        seeded.push(Team {
            app: app.name.clone(),
            viewer: tokens.mint(&team, "viewer", "keys-viewer")?,
            service: tokens.mint(&team, "service", "keys-service")?,
            integrations: (1..=per_team)
                .map(|i| format!("teams/{team}/integrations/{prefix}{i}"))
                .collect(),
        });
    }
    Ok(seeded)
}

/// GetIntegration of any seeded integration, with its team's viewer token.
pub fn get(teams: &[Team]) -> Call {
    per_integration(
        teams,
        GET,
        |team| &team.viewer,
        |name| frame(&pb::GetIntegrationRequest { name }),
    )
}

/// ResolveIntegrationCredentials of any seeded integration, with its team's service token.
pub fn resolve(teams: &[Team]) -> Call {
    per_integration(
        teams,
        RESOLVE,
        |team| &team.service,
        |name| frame(&pb::ResolveIntegrationCredentialsRequest { name }),
    )
}

/// One request per seeded integration: `body` of its name, with the token `token` picks.
fn per_integration(
    teams: &[Team],
    path: &'static str,
    token: impl Fn(&Team) -> &String,
    body: impl Fn(String) -> bytes::Bytes,
) -> Call {
    Call::spread(
        path,
        teams.iter().flat_map(|team| {
            team.integrations
                .iter()
                .map(|name| (Some(token(team).clone()), body(name.clone())))
                .collect::<Vec<_>>()
        }),
    )
}

/// GetInstalledApp of any seeded team's app (its integrations counted), with its viewer token.
pub fn get_app(teams: &[Team]) -> Call {
    Call::spread(
        GET_APP,
        teams.iter().map(|team| {
            let request = pb::GetInstalledAppRequest {
                name: team.app.clone(),
            };
            (Some(team.viewer.clone()), frame(&request))
        }),
    )
}

/// The first page (50) of ListIntegrations of any seeded team, with its viewer token.
pub fn list(teams: &[Team]) -> Call {
    let request = pb::ListIntegrationsRequest {
        page_size: 50,
        ..Default::default()
    };
    let body = frame(&request);
    Call::spread(
        LIST,
        teams
            .iter()
            .map(|team| (Some(team.viewer.clone()), body.clone())),
    )
}

/// What a run of the distinct-key scenarios needs.
pub struct KeysRun<'a> {
    pub teams: usize,
    pub per_team: usize,
    pub load: Load,
    pub server_args: Vec<String>,
    pub secret: &'a str,
    pub keys: &'a str,
    pub tokens: &'a Tokens,
    pub dir: &'a Path,
}

/// Seeds the teams on `url` and measures the reads with the read cache on, then off.
pub async fn run(
    run: &KeysRun<'_>,
    backend: &str,
    url: &str,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let postgres = backend == "postgres";
    let start = |cache_on: bool| {
        let mut extra_args = run.server_args.clone();
        if !cache_on {
            extra_args.push("--read-cache-ttl-ms=0".into());
        }
        let name = format!(
            "keys-{backend}-cache-{}",
            if cache_on { "on" } else { "off" }
        );
        async move {
            ServerProcess::start(
                ServerSpec {
                    name: &name,
                    database_url: url,
                    secret: run.secret,
                    encryption_keys: run.keys,
                    extra_args,
                },
                run.dir,
            )
            .await
        }
    };
    eprintln!(
        "distinct keys on {backend}: {} teams x {} integrations, read cache on",
        run.teams, run.per_team
    );
    let server = start(true).await?;
    let seeded = match seed::channel(server.addr).await {
        Ok(channel) => seed(&channel, url, run.tokens, run.teams, run.per_team).await,
        Err(e) => Err(e),
    };
    let result = match &seeded {
        Ok(teams) => measure(&server, teams, true, postgres, run.load, rows).await,
        Err(_) => Ok(()),
    };
    server.stop().await?;
    let teams = seeded?;
    result?;
    eprintln!("distinct keys on {backend}: read cache off");
    let server = start(false).await?;
    let result = measure(&server, &teams, false, postgres, run.load, rows).await;
    server.stop().await?;
    result
}

async fn measure(
    server: &ServerProcess,
    teams: &[Team],
    cache_on: bool,
    postgres: bool,
    load: Load,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let on = if postgres { ", PostgreSQL" } else { "" };
    let cache = if cache_on { "cache on" } else { "cache off" };
    let target = |min_ratio: f64, max_p99_ratio: Option<f64>| Target {
        min_ratio,
        max_p99_ratio,
    };
    // The targets: with the cache on, what the cache is for; with it off, a read of the
    // database on every call.
    let (get_target, resolve_target, list_target) = if cache_on {
        (
            target(0.5, Some(2.5)),
            target(0.5, Some(2.5)),
            target(0.3, Some(3.0)),
        )
    } else {
        (
            target(if postgres { 0.4 } else { 0.5 }, None),
            target(0.4, None),
            target(0.15, None),
        )
    };
    let scenarios = [
        (get(teams), "GetIntegration", get_target),
        (get_app(teams), "GetInstalledApp", get_target),
        (
            resolve(teams),
            "ResolveIntegrationCredentials (first minute)",
            resolve_target,
        ),
        (list(teams), "ListIntegrations (page of 50)", list_target),
    ];
    for (call, method, target) in scenarios {
        let label = format!("{method} ({} keys at random, {cache}{on})", call.keys());
        let mut r = crate::paired(server, &label, &call, load, rows).await?;
        r.target = Some(target);
        rows.push(r);
    }
    // The resolutions above ran in their keys' first minute: many of them wrote the last use
    // of what they used. A resolution of a key used in the last minute writes only its
    // audit record, the steady state of a key asked about more than once a minute. Every key
    // is resolved once, then the same load is measured again.
    let call = resolve(teams);
    crate::unary::sweep(server.addr, &call, 64).await?;
    let label = format!(
        "ResolveIntegrationCredentials ({} keys at random, each resolved in the last minute, {cache}{on})",
        call.keys()
    );
    let mut r = crate::paired(server, &label, &call, load, rows).await?;
    r.target = Some(resolve_target);
    rows.push(r);
    Ok(())
}
