//! Webhook sender throughput: one delete breaks N integrations (N INTEGRATION_BROKEN events
//! in one transaction); one subscription delivers them, signed, one at a time in order, to
//! a receiver on loopback that answers 204 at once. Measures from the delete call until the
//! receiver has every event.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use integration_hub::pb;
use integration_hub::pb::installed_app_service_client::InstalledAppServiceClient;
use integration_hub::pb::webhook_service_client::WebhookServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::seed::{self, Tokens, authed};

/// What the webhook scenario measured.
pub struct WebhookRun {
    pub events: usize,
    pub elapsed: Duration,
    pub received: u64,
}

impl WebhookRun {
    pub fn events_per_sec(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64()
    }
}

/// What a receiver counted: every request, and the requests to each path.
#[derive(Default)]
pub struct Received {
    pub total: AtomicU64,
    pub by_path: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

/// A minimal HTTP/1.1 receiver (keep-alive, 204 to every POST) counting requests, in all and
/// per path. Not a verifier: the integration tests verify with the Standard Webhooks library;
/// this one only keeps the receiving side out of the measurement.
pub async fn receiver(count: Arc<Received>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 16 * 1024];
                loop {
                    // Headers, then the body by content-length.
                    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                    let path = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buffer.len() < end + 4 + length {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buffer.drain(..end + 4 + length);
                    if let Ok(mut by_path) = count.by_path.lock() {
                        *by_path.entry(path).or_default() += 1;
                    }
                    count.total.fetch_add(1, Ordering::Relaxed);
                    if socket
                        .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Subscribes the admin's team to INTEGRATION_BROKEN at `url`.
pub async fn subscribe_broken(
    channel: &tonic::transport::Channel,
    admin: &str,
    url: &str,
) -> anyhow::Result<()> {
    WebhookServiceClient::new(channel.clone())
        .create_webhook_subscription(authed(
            admin,
            pb::CreateWebhookSubscriptionRequest {
                webhook_subscription: Some(pb::WebhookSubscription {
                    url: url.to_owned(),
                    event_types: vec!["INTEGRATION_BROKEN".into()],
                    ..Default::default()
                }),
                ..Default::default()
            },
        )?)
        .await
        .context("create a webhook subscription")?;
    Ok(())
}

/// Runs the scenario against `addr` (a server started with `--webhook-allow-loopback`) on
/// the database at `url`.
pub async fn webhooks(
    addr: SocketAddr,
    url: &str,
    tokens: &Tokens,
    events: usize,
) -> anyhow::Result<WebhookRun> {
    let team = "hooks";
    let received = Arc::new(Received::default());
    let receiver = receiver(received.clone()).await?;
    let count = &received.total;
    let channel = seed::channel(addr).await?;
    let developer = tokens.mint(team, "developer", "hook-developer")?;
    let admin = tokens.mint(team, "admin", "hook-admin")?;
    let app = seed::create_app(&channel, &developer, "Slack to delete").await?;
    seed::seed_integrations(url, team, seed::id_of(&app.name), "hook", events).await?;
    subscribe_broken(&channel, &admin, &format!("http://{receiver}/hooks")).await?;
    let started = Instant::now();
    InstalledAppServiceClient::new(channel)
        .delete_installed_app(authed(
            &admin,
            pb::DeleteInstalledAppRequest {
                name: app.name.clone(),
                ..Default::default()
            },
        )?)
        .await
        .context("delete the installed app")?;
    let deadline = started + Duration::from_secs(600);
    while count.load(Ordering::Relaxed) < events as u64 {
        if Instant::now() > deadline {
            bail!(
                "only {} of {events} webhooks arrived in 600 s",
                count.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(WebhookRun {
        events,
        elapsed: started.elapsed(),
        received: count.load(Ordering::Relaxed),
    })
}
