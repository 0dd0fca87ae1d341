//! Caps checked by counting rows hold under concurrency: 60 creates at once get exactly the
//! cap, the rest RESOURCE_EXHAUSTED, on both databases (on PostgreSQL two transactions
//! counting at once would both see room without the cap's lock).

use std::future::Future;

use integration_hub::pb;
use tonic::Code;

use crate::fixtures::TEAM;
use crate::helpers::{Backend, authed};
use crate::oauth::{dana, new_slack, spawn_oauth};
use crate::storage_test;
use crate::webhooks::{spawn_webhook_app, webhooks};

/// Calls made at once.
const AT_ONCE: usize = 60;

/// Runs `AT_ONCE` calls concurrently; returns how many succeeded and checks every other one
/// answered RESOURCE_EXHAUSTED.
async fn at_once<F, Fut>(call: F) -> usize
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let calls: Vec<_> = (0..AT_ONCE).map(|i| tokio::spawn(call(i))).collect();
    let mut succeeded = 0;
    for call in calls {
        match call.await.expect("the call's task") {
            Ok(()) => succeeded += 1,
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}"),
        }
    }
    succeeded
}

async fn webhook_subscriptions_stay_within_the_cap_under_concurrent_creates(backend: Backend) {
    let mut app = spawn_webhook_app(backend, |w| w.webhook_max_subscriptions = 25).await;
    let admin = app.token(TEAM, "admin", "alice");
    let client = webhooks(&app.channel);
    let created = at_once(|i| {
        let mut client = client.clone();
        let admin = admin.clone();
        async move {
            client
                .create_webhook_subscription(authed(
                    &admin,
                    pb::CreateWebhookSubscriptionRequest {
                        webhook_subscription: Some(pb::WebhookSubscription {
                            url: format!("http://127.0.0.1:9/hooks/{i}"),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ())
        }
    })
    .await;
    assert_eq!(created, 25);
    let listed = webhooks(&app.channel)
        .list_webhook_subscriptions(authed(
            &admin,
            pb::ListWebhookSubscriptionsRequest {
                parent: format!("teams/{TEAM}"),
                page_size: 100,
                ..Default::default()
            },
        ))
        .await
        .expect("list")
        .into_inner()
        .webhook_subscriptions;
    assert_eq!(listed.len(), 25);
    app.stop().await;
}

storage_test!(backend webhook_subscriptions_stay_within_the_cap_under_concurrent_creates);

async fn pending_authorizations_stay_within_the_cap_under_concurrent_starts(backend: Backend) {
    let mut t = spawn_oauth(backend).await;
    let dana = dana();
    let apps = t.app.apps.clone();
    let started = at_once(|i| {
        let mut apps = apps.clone();
        let dana = dana.clone();
        async move {
            apps.start_installed_app_authorization(authed(&dana, new_slack(&format!("Slack {i}"))))
                .await
                .map(|_| ())
        }
    })
    .await;
    assert_eq!(started, 20);
    // Another person of the team has a cap of their own.
    let mut apps = t.app.apps.clone();
    apps.start_installed_app_authorization(authed(
        &t.app.token(TEAM, "developer", "dev-2"),
        new_slack("Theirs"),
    ))
    .await
    .expect("another person's first authorization");
    t.app.stop().await;
}

storage_test!(
    backend pending_authorizations_stay_within_the_cap_under_concurrent_starts,
    needs Node
);
