//! Test data: tokens, installed apps and integrations made through the API, and bulk
//! integrations inserted with SQL (as the replica tests seed them).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use integration_hub::auth::{MintClaims, mint_hs256};
use integration_hub::pb;
use integration_hub::pb::installed_app_service_client::InstalledAppServiceClient;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use tonic::Request;
use tonic::transport::Channel;

/// The integration type every seeded integration has, with a valid config.
pub const TYPE_ID: &str = "slack.post_monitor_results";

pub fn config() -> HashMap<String, String> {
    HashMap::from([
        ("channel".to_owned(), "#ops".to_owned()),
        ("monitor_id".to_owned(), "m-1".to_owned()),
    ])
}

/// Mints tokens the servers of this run accept.
#[derive(Clone)]
pub struct Tokens {
    pub secret: String,
}

impl Tokens {
    pub fn mint(&self, team: &str, role: &str, subject: &str) -> anyhow::Result<String> {
        mint_hs256(
            self.secret.as_bytes(),
            &MintClaims {
                subject: subject.to_owned(),
                team: team.to_owned(),
                roles: vec![role.to_owned()],
                issuer: Some(ISSUER.to_owned()),
                audience: Some(AUDIENCE.to_owned()),
                ttl_secs: 24 * 3600,
                team_claim: "team_id".to_owned(),
                roles_claim: "roles".to_owned(),
            },
        )
        .map_err(|e| anyhow::anyhow!("mint a token: {e}"))
    }
}

/// The issuer and audience the bench's servers require and its tokens carry.
pub const ISSUER: &str = "https://bench.integration-hub.test";
pub const AUDIENCE: &str = "integration-hub-bench";

/// A request carrying `token` as its bearer credential.
pub fn authed<T>(token: &str, message: T) -> anyhow::Result<Request<T>> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    Ok(request)
}

pub async fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?)
}

/// Adds a Slack installed app for the team of `token`.
pub async fn create_app(
    channel: &Channel,
    token: &str,
    display_name: &str,
) -> anyhow::Result<pb::InstalledApp> {
    let request = pb::CreateInstalledAppRequest {
        installed_app: Some(pb::InstalledApp {
            service: "slack".into(),
            display_name: display_name.into(),
            connected_to: "bench-workspace".into(),
            ..Default::default()
        }),
        credentials: HashMap::from([(
            "access_token".to_owned(),
            "xoxb-bench-access-token-0123456789abcdef".to_owned(),
        )]),
        ..Default::default()
    };
    Ok(InstalledAppServiceClient::new(channel.clone())
        .create_installed_app(authed(token, request)?)
        .await
        .context("create an installed app")?
        .into_inner())
}

/// The request that adds an integration on `app` (no request id: every call adds one).
pub fn integration_request(app: &pb::InstalledApp) -> pb::CreateIntegrationRequest {
    pb::CreateIntegrationRequest {
        integration: Some(pb::Integration {
            installed_app: app.name.clone(),
            r#type: TYPE_ID.into(),
            display_name: "Bench monitor".into(),
            config: config(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Inserts `count` active integrations of `team` bound to `app_id` with SQL; their ids are
/// `{prefix}1` .. `{prefix}{count}`.
pub async fn seed_integrations(
    url: &str,
    team: &str,
    app_id: &str,
    prefix: &str,
    count: usize,
) -> anyhow::Result<()> {
    let db = Database::connect(url).await?;
    let sql = format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
         INSERT INTO integrations (id, team, installed_app_id, service, type_id, display_name, config, \
           state, creator, version, create_time, update_time) \
         SELECT '{prefix}' || i, '{team}', '{app_id}', 'slack', '{TYPE_ID}', 'Seeded ' || i, \
           '{{\"channel\":\"#ops\",\"monitor_id\":\"m-1\"}}', 'ACTIVE', 'seeder', 1, i, i FROM n"
    );
    db.execute_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .context("seed integrations")?;
    let _ = db.close().await;
    Ok(())
}

/// The id part of a resource name.
pub fn id_of(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// The `n` column of a one-row query (`SELECT COUNT(*) AS n ...`).
pub async fn count(db: &DatabaseConnection, sql: &str) -> anyhow::Result<u64> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            sql.to_owned(),
        ))
        .await?
        .context("no count")?;
    Ok(u64::try_from(row.try_get::<i64>("", "n")?).unwrap_or(0))
}
