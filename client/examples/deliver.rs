//! Delivers integration work, as a service that runs integrations would: it watches the
//! team's integration events, resolves the credentials of each active integration that was
//! created, changed or restored, calls the third party with them, and reports the installed
//! app's credentials rejected when the third party refuses them (the app becomes
//! NEEDS_REAUTH and its integrations BROKEN, and the watchers are told).
//!
//! The third party is pretend: it refuses a credential value that starts with `revoked-`.
//!
//! Against a development server (from the repository's root):
//!
//! ```sh
//! cargo run -- serve --dev &
//! export INTEGRATION_HUB_TOKEN=$(cargo run -q -- token --dev --team acme --role service --subject deliverer)
//! cargo run -p integration-hub-client --example deliver
//! ```
//!
//! Then add an installed app and an integration as a developer (the README's walk-through);
//! give the app `"credentials": {"access_token": "revoked-1"}` to see a rejection reported.
//!
//! Environment: `INTEGRATION_HUB_TOKEN` (a service token, required),
//! `INTEGRATION_HUB_ENDPOINT` (default `http://127.0.0.1:50051`), `INTEGRATION_HUB_START_CURSOR`
//! (resume from a cursor this program printed; default: list, then watch from the listing),
//! `DELIVER_MAX_EVENTS` (stop after that many events; default: run until interrupted).
//! Credentials are never printed.

use std::collections::HashMap;

use futures_util::StreamExt;
use integration_hub_client::tonic::{Code, Status};
use integration_hub_client::{BearerAuth, Client, WatchError, pb};

/// What became of one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The work was done with the integration's credentials.
    Delivered { integration: String },
    /// The third party refused the credentials; the installed app was reported.
    Rejected {
        integration: String,
        installed_app: String,
    },
    /// The third party refused the integration's own credentials (no installed app to
    /// report): a person has to reauthenticate it.
    RejectedOwnCredentials { integration: String },
    /// Nothing to do (a delete, a break, or an integration that broke meanwhile).
    Skipped { integration: String },
}

/// The pretend third party: whether it accepts these credentials.
fn third_party_accepts(credentials: &HashMap<String, String>) -> bool {
    !credentials
        .values()
        .any(|value| value.starts_with("revoked-"))
}

/// Whether an event asks for work: an active integration that is new, changed or back.
fn wants_work(event: &pb::IntegrationEvent) -> bool {
    use pb::IntegrationEventType as Type;
    let active = event
        .integration
        .as_ref()
        .is_some_and(|i| i.state() == pb::integration::State::Active);
    active
        && matches!(
            event.r#type(),
            Type::IntegrationCreated | Type::IntegrationUpdated | Type::IntegrationRestored
        )
}

/// Handles one event.
pub async fn handle(client: &Client, event: &pb::IntegrationEvent) -> Result<Outcome, Status> {
    let integration = event.integration_name.clone();
    if !wants_work(event) {
        return Ok(Outcome::Skipped { integration });
    }
    let resolved = match client
        .resolve_integration_credentials(pb::ResolveIntegrationCredentialsRequest {
            name: integration.clone(),
        })
        .await
    {
        Ok(resolved) => resolved,
        // Broken or deleted since the event: a later event says so.
        Err(status) if matches!(status.code(), Code::FailedPrecondition | Code::NotFound) => {
            return Ok(Outcome::Skipped { integration });
        }
        Err(status) => return Err(status),
    };
    if third_party_accepts(&resolved.credentials) {
        return Ok(Outcome::Delivered { integration });
    }
    let installed_app = resolved
        .integration
        .map(|i| i.installed_app)
        .unwrap_or_default();
    if installed_app.is_empty() {
        return Ok(Outcome::RejectedOwnCredentials { integration });
    }
    client
        .report_credentials_rejected(pb::ReportCredentialsRejectedRequest {
            name: installed_app.clone(),
            detail: format!(
                "{} answered 401 Unauthorized to a delivery of {integration}",
                resolved.service
            ),
        })
        .await?;
    Ok(Outcome::Rejected {
        integration,
        installed_app,
    })
}

/// The cursor of a fresh listing: watching from it misses nothing the listing does not show.
async fn listing_cursor(client: &Client) -> Result<String, Status> {
    let listed = client
        .list_integrations(pb::ListIntegrationsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await?;
    Ok(listed.event_cursor)
}

/// Watches from `start_cursor` (or from a fresh listing) and handles events until
/// `max_events` were handled (or forever). Returns what became of each.
pub async fn deliver(
    client: &Client,
    start_cursor: Option<String>,
    max_events: Option<usize>,
) -> Result<Vec<Outcome>, Box<dyn std::error::Error>> {
    let mut cursor = match start_cursor {
        Some(cursor) => cursor,
        None => listing_cursor(client).await?,
    };
    let mut outcomes = Vec::new();
    loop {
        let mut events = client.watch_integration_events(pb::WatchIntegrationEventsRequest {
            start_cursor: cursor.clone(),
            ..Default::default()
        });
        while max_events.is_none_or(|most| outcomes.len() < most) {
            let event = match events.next().await {
                Some(Ok(event)) => event,
                Some(Err(WatchError::CursorExpired { .. })) => {
                    // Away longer than the retention: what happened meanwhile is in a listing
                    // (a real deliverer would reconcile it); carry on from there.
                    eprintln!("cursor expired; resuming from a fresh listing");
                    break;
                }
                Some(Err(err)) => return Err(err.into()),
                None => return Ok(outcomes),
            };
            let outcome = handle(client, &event).await?;
            println!(
                "{:?} {} -> {outcome:?} (resume from {})",
                event.r#type(),
                event.integration_name,
                events.cursor().unwrap_or_default()
            );
            outcomes.push(outcome);
        }
        if max_events.is_some_and(|most| outcomes.len() >= most) {
            return Ok(outcomes);
        }
        cursor = listing_cursor(client).await?;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let token = std::env::var("INTEGRATION_HUB_TOKEN")
        .map_err(|_| "set INTEGRATION_HUB_TOKEN to a service token (integration-hub token --dev --role service ...)")?;
    let endpoint = std::env::var("INTEGRATION_HUB_ENDPOINT")
        .unwrap_or_else(|_| "http://127.0.0.1:50051".to_owned());
    let start_cursor = std::env::var("INTEGRATION_HUB_START_CURSOR").ok();
    let max_events = match std::env::var("DELIVER_MAX_EVENTS") {
        Ok(value) => Some(value.parse::<usize>()?),
        Err(_) => None,
    };
    let client = Client::connect_lazy(endpoint, BearerAuth::from_static(&token)?)?;
    let outcomes = tokio::select! {
        outcomes = deliver(&client, start_cursor, max_events) => outcomes?,
        _ = tokio::signal::ctrl_c() => return Ok(()),
    };
    println!("handled {} events", outcomes.len());
    Ok(())
}
