//! Floors: what the reads would cost if every layer of the service above its store were
//! free. A bare tonic server (this binary, `floor` subcommand) answers
//! `grpc.health.v1.Health/Check` after one read of the same database through the service's
//! own `Store`: the same statement, pool, driver and row decoding as GetInstalledApp,
//! GetIntegration or ListIntegrations, but no authentication, no rules, no audit, no
//! conversion to the API's messages. Its rate, as a ratio to the real server's Health/Check
//! in the same run, is the most any change above the store could reach on this machine; a
//! target above it needs a cheaper driver, store or database, not a cheaper service.
//!
//! `none` (no read at all) and `ping` (`SELECT 1`, the driver's round trip) place the
//! floors: what bare tonic costs, and what one statement costs before it reads a row.

use std::net::SocketAddr;

use anyhow::Context;
use integration_hub::store::{APP_WITH_COUNT, INTEGRATION_WITH_APP, IntegrationFilter, Store};
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The read each Health/Check of a floor server makes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Read {
    /// No read: bare tonic.
    None,
    /// `SELECT 1`: one statement through the pool and the driver.
    Ping,
    /// `APP_WITH_COUNT` read alone (GetInstalledApp's read: the app, its two counts, its
    /// verification).
    GetApp,
    /// `INTEGRATION_WITH_APP` read alone (a resolution's read: the integration, its app,
    /// the app's grant).
    GetIntegration,
    /// `Store::list_integrations_at_cursor`, 51 rows (ListIntegrations' read of a page of 50).
    List,
}

impl Read {
    pub fn label(self) -> &'static str {
        match self {
            Read::None => "no read (bare tonic)",
            Read::Ping => "SELECT 1",
            Read::GetApp => "APP_WITH_COUNT (GetInstalledApp's read)",
            Read::GetIntegration => "INTEGRATION_WITH_APP (a resolution's read)",
            Read::List => "Store::list_integrations_at_cursor (51 rows)",
        }
    }

    pub fn arg(self) -> &'static str {
        match self {
            Read::None => "none",
            Read::Ping => "ping",
            Read::GetApp => "get-app",
            Read::GetIntegration => "get-integration",
            Read::List => "list",
        }
    }
}

/// The `floor` subcommand's flags.
#[derive(Clone, Debug, clap::Args)]
pub struct FloorArgs {
    #[arg(long)]
    database_url: String,
    #[arg(long, value_enum)]
    read: Read,
    /// The team whose records are read.
    #[arg(long)]
    team: String,
    /// The app (get-app) or integration (get-integration) read.
    #[arg(long, default_value = "")]
    id: String,
    /// Pool size: the service's default.
    #[arg(long, default_value_t = 16)]
    max_connections: u32,
}

struct FloorHealth {
    store: Store,
    args: FloorArgs,
}

impl FloorHealth {
    async fn read(&self) -> anyhow::Result<()> {
        let (team, id) = (self.args.team.as_str(), self.args.id.as_str());
        match self.args.read {
            Read::None => {}
            Read::Ping => self.store.ping().await?,
            Read::GetApp => {
                self.store
                    .read_keyed(&APP_WITH_COUNT, team, id)
                    .await?
                    .context("no such app")?;
            }
            Read::GetIntegration => {
                self.store
                    .read_keyed(&INTEGRATION_WITH_APP, team, id)
                    .await?
                    .context("no such integration")?;
            }
            Read::List => {
                let (rows, _) = self
                    .store
                    .list_integrations_at_cursor(team, &IntegrationFilter::default(), None, 51)
                    .await?;
                anyhow::ensure!(rows.len() == 51, "a page of {} rows, not 51", rows.len());
            }
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Health for FloorHealth {
    async fn check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        // A failed read fails the call: the load generator counts it, the smoke refuses it.
        self.read()
            .await
            .map_err(|e| Status::internal(format!("floor read failed: {e:#}")))?;
        Ok(Response::new(HealthCheckResponse {
            status: ServingStatus::Serving as i32,
        }))
    }

    type WatchStream = tonic_health::server::WatchStream;

    async fn watch(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        Err(Status::unimplemented("a floor server only answers Check"))
    }
}

/// Child side: serves until its standard input closes, like the server under test.
pub fn serve(args: FloorArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let store = Store::connect(&args.database_url, args.max_connections).await?;
        let health = FloorHealth { store, args };
        // A read that fails now would fail every call: say so before serving.
        health.read().await.context("the floor's read")?;
        let incoming =
            tonic::transport::server::TcpIncoming::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?
                .with_nodelay(Some(true));
        let addr = incoming.local_addr()?;
        println!("{}{addr}", crate::server::READY);
        let stdin_closed = async {
            use tokio::io::AsyncReadExt as _;
            let mut stdin = tokio::io::stdin();
            let mut sink = [0u8; 64];
            while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        tonic::transport::Server::builder()
            .add_service(HealthServer::new(health))
            .serve_with_incoming_shutdown(incoming, stdin_closed)
            .await?;
        Ok(())
    })
}
