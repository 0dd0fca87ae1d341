//! Signed webhooks end to end: the real server delivers to a receiver on loopback that
//! verifies every request with the `standardwebhooks` library (see `webhook_receiver`).

use std::collections::HashSet;
use std::time::Duration;

use integration_hub::pb;
use integration_hub::pb::webhook_service_client::WebhookServiceClient;
use serde_json::Value;
use tonic::Code;
use tonic::transport::Channel;

use crate::fixtures::*;
use crate::helpers::{Backend, TestApp, TestDb, authed, spawn_with, test_args};
use crate::storage_test;
use crate::webhook_receiver::Receiver;

const WAIT: Duration = Duration::from_secs(20);

/// Runs a webhook test on SQLite and on PostgreSQL (`storage_test!`), against a server whose
/// webhook settings are shrunk for tests (loopback allowed, 100 ms first retry, 1 s timeout),
/// then changed by the function `$tweak` of the test's module when one is named.
macro_rules! webhook_test {
    ($name:ident $(, $tweak:ident)?) => {
        $crate::storage_test!(@with $name, [Python], |backend| {
            $crate::webhooks::spawn_webhook_app(
                backend,
                |args: &mut integration_hub::webhooks::WebhookArgs| {
                    $(super::$tweak(args);)?
                    let _ = args;
                },
            )
        });
    };
}
pub(crate) use webhook_test;

pub async fn spawn_webhook_app(
    backend: Backend,
    tweak: impl FnOnce(&mut integration_hub::webhooks::WebhookArgs),
) -> TestApp {
    let db = TestDb::new(backend).await;
    let mut args = test_args(&db.url);
    shrink(&mut args.webhooks);
    tweak(&mut args.webhooks);
    spawn_with(backend, db, args).await
}

/// The test schedule: loopback allowed, retries after 100 ms doubling to 400 ms, a retry
/// window of a minute, a 1 s timeout, a 2 s lease, polling every 50 ms.
pub fn shrink(w: &mut integration_hub::webhooks::WebhookArgs) {
    w.webhook_allow_loopback = true;
    w.webhook_retry_initial_ms = 100;
    w.webhook_retry_max_ms = 400;
    w.webhook_retry_window_secs = 60;
    w.webhook_timeout_ms = 1_000;
    w.webhook_lease_secs = 2;
    w.webhook_poll_ms = 50;
}

pub fn webhooks(channel: &Channel) -> WebhookServiceClient<Channel> {
    WebhookServiceClient::new(channel.clone())
}

/// Adds a subscription to `url` for `types` (all when empty); returns it and its secret.
pub async fn subscribe(
    channel: &Channel,
    admin: &str,
    url: &str,
    types: &[&str],
) -> (pb::WebhookSubscription, String) {
    let response = webhooks(channel)
        .create_webhook_subscription(authed(
            admin,
            pb::CreateWebhookSubscriptionRequest {
                webhook_subscription: Some(pb::WebhookSubscription {
                    url: url.into(),
                    event_types: types.iter().map(|t| (*t).to_owned()).collect(),
                    description: "test receiver".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ))
        .await
        .unwrap_or_else(|status| panic!("create subscription: {status:?}"))
        .into_inner();
    (
        response.webhook_subscription.expect("subscription"),
        response.secret,
    )
}

pub async fn deliveries(app: &TestApp, token: &str, name: &str) -> Vec<pb::WebhookDelivery> {
    webhooks(&app.channel)
        .list_webhook_deliveries(authed(
            token,
            pb::ListWebhookDeliveriesRequest {
                parent: name.into(),
                ..Default::default()
            },
        ))
        .await
        .expect("list deliveries")
        .into_inner()
        .deliveries
}

/// The next request that the receiver answered 2xx.
pub async fn next_acknowledged(receiver: &mut Receiver) -> Value {
    loop {
        let request = receiver.next(WAIT).await;
        if request["status"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s))
        {
            return request;
        }
    }
}

fn assert_verified(request: &Value, secrets: usize) {
    let verified: Vec<bool> = request["verified"]
        .as_array()
        .expect("verified")
        .iter()
        .map(|v| v.as_bool().expect("bool"))
        .collect();
    assert_eq!(
        verified,
        vec![true; secrets],
        "every secret verifies: {request}"
    );
    assert_eq!(
        request["tampered_verifies"], false,
        "a tampered body fails verification: {request}"
    );
}

async fn a_delivery_is_signed_to_the_standard_and_verifies_with_the_library(app: TestApp) {
    let p = people(&app);
    let mut receiver = Receiver::start(&[]);
    let (sub, secret) = subscribe(&app.channel, &p.admin, &receiver.url(), &[]).await;
    assert!(secret.starts_with("whsec_"), "a Standard Webhooks secret");
    receiver.verify_with(&[&secret]);
    assert!(sub.enabled && sub.name.starts_with("teams/acme/webhookSubscriptions/"));

    let slack = create_app(&app, &p.dana, "slack", "Team Slack").await;
    let request = next_acknowledged(&mut receiver).await;
    assert_verified(&request, 1);
    assert_eq!(request["content_type"], "application/json");
    assert_eq!(request["body"]["type"], "INSTALLED_APP_CREATED");
    let data = &request["body"]["data"];
    assert_eq!(data["installedAppName"], slack.name.as_str());
    assert_eq!(data["installedApp"]["displayName"], "Team Slack");
    assert_eq!(data["actor"], "dana");
    let event_id = data["eventId"].as_str().expect("event id");
    let sub_id = sub.name.rsplit('/').next().unwrap();
    assert_eq!(request["id"], format!("msg_{event_id}_{sub_id}").as_str());
    let sent: i64 = request["timestamp"].as_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - sent).abs() < 60, "the timestamp is now");
    let text = request.to_string();
    assert!(!text.contains(&secret), "the secret never travels");

    // An integration event: the proto's JSON mapping of IntegrationEvent.
    let job = create_integration(&app, &p.dana, &slack, "Job").await;
    let request = next_acknowledged(&mut receiver).await;
    assert_verified(&request, 1);
    assert_eq!(request["body"]["type"], "INTEGRATION_CREATED");
    assert_eq!(
        request["body"]["data"]["integrationName"],
        job.name.as_str()
    );
    assert_eq!(request["body"]["data"]["integration"]["state"], "ACTIVE");

    // The attempts are recorded (just after the answer), without the secret.
    let mut list = deliveries(&app, &p.service, &sub.name).await;
    for _ in 0..100 {
        if list.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        list = deliveries(&app, &p.service, &sub.name).await;
    }
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(
        |d| d.outcome == pb::WebhookDeliveryOutcome::Delivered as i32
            && d.response_code == 204
            && d.attempt == 1
    ));
    assert_eq!(list[0].event_type, "INTEGRATION_CREATED", "newest first");
    assert!(!format!("{list:?}").contains(&secret));

    // SendTestWebhook: signed the same way, answered synchronously.
    let test = webhooks(&app.channel)
        .send_test_webhook(authed(
            &p.admin,
            pb::SendTestWebhookRequest {
                name: sub.name.clone(),
            },
        ))
        .await
        .expect("send test")
        .into_inner();
    assert_eq!(test.outcome, pb::WebhookDeliveryOutcome::Delivered as i32);
    let request = receiver.next(WAIT).await;
    assert_verified(&request, 1);
    assert_eq!(request["body"]["type"], "WEBHOOK_TEST");
    assert_eq!(request["id"], test.webhook_id.as_str());
}
webhook_test!(a_delivery_is_signed_to_the_standard_and_verifies_with_the_library);

async fn failures_and_timeouts_are_retried_with_backoff_and_order_is_kept(app: TestApp) {
    let p = people(&app);
    // Two 500s, then one answer slower than the 1 s timeout, then 204s.
    let mut receiver =
        Receiver::start(&["--fail-first", "2", "--slow-first", "1", "--slow-secs", "2"]);
    let (sub, secret) = subscribe(
        &app.channel,
        &p.admin,
        &receiver.url(),
        &["INSTALLED_APP_CREATED"],
    )
    .await;
    receiver.verify_with(&[&secret]);
    let mut names = Vec::new();
    for i in 0..3 {
        names.push(
            create_app(&app, &p.dana, "slack", &format!("Slack {i}"))
                .await
                .name,
        );
    }
    let mut order = Vec::new();
    let mut ids = Vec::new();
    while ids.len() < 3 {
        let request = receiver.next(WAIT).await;
        assert_verified(&request, 1);
        let name = request["body"]["data"]["installedAppName"]
            .as_str()
            .unwrap()
            .to_owned();
        order.push(name.clone());
        if request["status"] == 204 && request["slow"] == false {
            ids.push(request["id"].as_str().unwrap().to_owned());
        }
    }
    // Every attempt of the first event came before anything of the second: in order.
    let first_other = order
        .iter()
        .position(|n| *n != names[0])
        .expect("later events");
    assert!(
        first_other >= 4,
        "the first event was tried 4 times first: {order:?}"
    );
    let mut seen = order.clone();
    seen.dedup();
    assert_eq!(seen, names, "events arrive in the order they happened");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 3);

    let list = deliveries(&app, &p.admin, &sub.name).await;
    let outcomes: Vec<_> = list
        .iter()
        .rev()
        .map(|d| {
            (
                d.attempt,
                pb::WebhookDeliveryOutcome::try_from(d.outcome).unwrap(),
            )
        })
        .collect();
    use pb::WebhookDeliveryOutcome as O;
    assert_eq!(
        outcomes[..4],
        [
            (1, O::HttpError),
            (2, O::HttpError),
            (3, O::Timeout),
            (4, O::Delivered)
        ]
    );
    assert_eq!(list.last().unwrap().response_code, 500);
    let first: Vec<_> = list.iter().rev().take(4).map(|d| &d.webhook_id).collect();
    assert!(
        first.iter().all(|id| *id == first[0]),
        "every attempt of one event carries the same webhook-id"
    );
    assert_eq!(*first[0], ids[0]);
    let got = webhooks(&app.channel)
        .get_webhook_subscription(authed(
            &p.admin,
            pb::GetWebhookSubscriptionRequest {
                name: sub.name.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.failed_attempts, 0, "healthy again");
}
webhook_test!(failures_and_timeouts_are_retried_with_backoff_and_order_is_kept);

async fn a_receiver_down_past_the_retry_window_disables_the_subscription(backend: Backend) {
    let app = spawn_webhook_app(backend, |w| w.webhook_retry_window_secs = 2).await;
    let p = people(&app);
    // A port nothing listens on: every attempt is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!(
        "http://127.0.0.1:{}/hooks",
        closed.local_addr().unwrap().port()
    );
    drop(closed);
    let (dead, _) = subscribe(&app.channel, &p.admin, &down, &["INSTALLED_APP_CREATED"]).await;
    let mut watcher = Receiver::start(&[]);
    let (_, secret) = subscribe(
        &app.channel,
        &p.admin,
        &watcher.url(),
        &["WEBHOOK_SUBSCRIPTION_DISABLED"],
    )
    .await;
    watcher.verify_with(&[&secret]);
    create_app(&app, &p.dana, "slack", "Team Slack").await;

    let request = next_acknowledged(&mut watcher).await;
    assert_verified(&request, 1);
    assert_eq!(request["body"]["type"], "WEBHOOK_SUBSCRIPTION_DISABLED");
    assert_eq!(
        request["body"]["data"]["webhookSubscription"]["name"],
        dead.name.as_str()
    );
    let got = webhooks(&app.channel)
        .get_webhook_subscription(authed(
            &p.admin,
            pb::GetWebhookSubscriptionRequest {
                name: dead.name.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    assert!(!got.enabled, "disabled");
    assert!(
        got.disabled_reason.contains("failed every attempt"),
        "{got:?}"
    );
    let list = deliveries(&app, &p.admin, &dead.name).await;
    assert!(list.len() >= 3, "retried before giving up: {list:?}");
    assert!(
        list.iter()
            .all(|d| d.outcome == pb::WebhookDeliveryOutcome::ConnectionError as i32)
    );
    let audit = all_events(&app, &p.admin, pb::ListAuditEventsRequest::default()).await;
    assert!(
        audit.iter().any(|e| e.action == "webhook.update"
            && e.actor == "integration-hub/webhook-delivery"
            && e.resource == dead.name),
        "an audit record of the disable"
    );
}

storage_test!(
    backend a_receiver_down_past_the_retry_window_disables_the_subscription,
    needs Python
);

async fn a_rotated_secret_signs_alongside_the_old_one_during_the_grace_period(app: TestApp) {
    let p = people(&app);
    let mut receiver = Receiver::start(&[]);
    let (sub, old) = subscribe(&app.channel, &p.admin, &receiver.url(), &[]).await;
    let rotate = |grace: i64| {
        let mut client = webhooks(&app.channel);
        let request = authed(
            &p.admin,
            pb::RotateWebhookSecretRequest {
                name: sub.name.clone(),
                grace_period: Some(prost_types::Duration {
                    seconds: grace,
                    nanos: 0,
                }),
            },
        );
        async move {
            client
                .rotate_webhook_secret(request)
                .await
                .expect("rotate")
                .into_inner()
        }
    };
    let rotated = rotate(3600).await;
    let new = rotated.secret.clone();
    assert!(new.starts_with("whsec_") && new != old);
    assert!(
        rotated
            .webhook_subscription
            .unwrap()
            .previous_secret_expire_time
            .is_some()
    );
    receiver.verify_with(&[&old, &new]);
    create_app(&app, &p.dana, "slack", "During the grace period").await;
    let request = next_acknowledged(&mut receiver).await;
    assert_eq!(request["signatures"], 2);
    assert_verified(&request, 2);

    // Without a grace period the old secret stops at once.
    let newest = rotate(0).await.secret;
    receiver.verify_with(&[&newest]);
    create_app(&app, &p.dana, "slack", "After").await;
    let request = next_acknowledged(&mut receiver).await;
    assert_eq!(request["signatures"], 1);
    assert_verified(&request, 1);
    receiver.verify_with(&[&new]);
    create_app(&app, &p.dana, "slack", "Old secret").await;
    let request = next_acknowledged(&mut receiver).await;
    assert_eq!(
        request["verified"][0], false,
        "the replaced secret no longer verifies"
    );
}
webhook_test!(a_rotated_secret_signs_alongside_the_old_one_during_the_grace_period);

async fn another_teams_admin_sees_nothing_and_gets_not_found(app: TestApp) {
    let p = people(&app);
    let receiver = Receiver::start(&[]);
    let (sub, _) = subscribe(&app.channel, &p.admin, &receiver.url(), &[]).await;
    let outsider = app.token("globex", "admin", "gus");
    let mut client = webhooks(&app.channel);
    let name = sub.name.clone();
    let get = client
        .get_webhook_subscription(authed(
            &outsider,
            pb::GetWebhookSubscriptionRequest { name: name.clone() },
        ))
        .await;
    expect_code(get, Code::NotFound);
    let update = client
        .update_webhook_subscription(authed(
            &outsider,
            pb::UpdateWebhookSubscriptionRequest {
                webhook_subscription: Some(pb::WebhookSubscription {
                    name: name.clone(),
                    url: "http://127.0.0.1:9/".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["url".into()],
                }),
            },
        ))
        .await;
    expect_code(update, Code::NotFound);
    let rotate = client
        .rotate_webhook_secret(authed(
            &outsider,
            pb::RotateWebhookSecretRequest {
                name: name.clone(),
                grace_period: None,
            },
        ))
        .await;
    expect_code(rotate, Code::NotFound);
    let list = client
        .list_webhook_deliveries(authed(
            &outsider,
            pb::ListWebhookDeliveriesRequest {
                parent: name.clone(),
                ..Default::default()
            },
        ))
        .await;
    expect_code(list, Code::NotFound);
    let test = client
        .send_test_webhook(authed(
            &outsider,
            pb::SendTestWebhookRequest { name: name.clone() },
        ))
        .await;
    expect_code(test, Code::NotFound);
    let delete = client
        .delete_webhook_subscription(authed(
            &outsider,
            pb::DeleteWebhookSubscriptionRequest {
                name: name.clone(),
                etag: String::new(),
            },
        ))
        .await;
    expect_code(delete, Code::NotFound);
    let theirs = client
        .list_webhook_subscriptions(authed(
            &outsider,
            pb::ListWebhookSubscriptionsRequest::default(),
        ))
        .await
        .expect("list")
        .into_inner();
    assert!(theirs.webhook_subscriptions.is_empty());
    // The team's service account reads; it is all still there.
    let ours = client
        .list_webhook_subscriptions(authed(
            &p.service,
            pb::ListWebhookSubscriptionsRequest::default(),
        ))
        .await
        .expect("list")
        .into_inner();
    assert_eq!(ours.webhook_subscriptions.len(), 1);
    assert_eq!(ours.webhook_subscriptions[0].url, receiver.url());
}
webhook_test!(another_teams_admin_sees_nothing_and_gets_not_found);

async fn internal_destinations_are_refused_without_the_dev_setting(app: TestApp) {
    let p = people(&app);
    let mut client = webhooks(&app.channel);
    for url in [
        "https://10.0.0.1/hooks",
        "https://192.168.1.10/hooks",
        "https://169.254.169.254/latest/meta-data/",
        "https://[fd00::1]/hooks",
        "https://[::ffff:127.0.0.1]/hooks",
        "https://localhost/hooks",
        "https://127.0.0.1/hooks",
        "http://hooks.example.com/hooks",
        "ftp://hooks.example.com/",
        "https://user:pw@hooks.example.com/",
    ] {
        let result = client
            .create_webhook_subscription(authed(
                &p.admin,
                pb::CreateWebhookSubscriptionRequest {
                    webhook_subscription: Some(pb::WebhookSubscription {
                        url: url.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ))
            .await;
        let status = expect_code(result, Code::InvalidArgument);
        assert_eq!(
            violated_fields(&status),
            ["webhook_subscription.url"],
            "{url}"
        );
    }
    let listed = client
        .list_webhook_subscriptions(authed(
            &p.admin,
            pb::ListWebhookSubscriptionsRequest::default(),
        ))
        .await
        .expect("list")
        .into_inner();
    assert!(
        listed.webhook_subscriptions.is_empty(),
        "nothing was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_destinations_are_refused_without_the_dev_setting_sqlite() {
    let app = crate::helpers::spawn_app(Backend::Sqlite).await;
    internal_destinations_are_refused_without_the_dev_setting(app).await;
}

async fn a_redirect_is_not_followed(app: TestApp) {
    let p = people(&app);
    let mut target = Receiver::start(&[]);
    let target_url = target.url();
    let mut redirector = Receiver::start(&["--redirect-to", &target_url]);
    let (sub, secret) = subscribe(
        &app.channel,
        &p.admin,
        &redirector.url(),
        &["INSTALLED_APP_CREATED"],
    )
    .await;
    redirector.verify_with(&[&secret]);
    create_app(&app, &p.dana, "slack", "Team Slack").await;
    let request = redirector.next(WAIT).await;
    assert_eq!(request["status"], 302);
    let retried = redirector.next(WAIT).await;
    assert_eq!(
        retried["id"], request["id"],
        "a redirect is a failure: retried"
    );
    assert!(
        target.maybe_next(Duration::from_secs(1)).await.is_none(),
        "the redirect target got nothing"
    );
    let list = deliveries(&app, &p.admin, &sub.name).await;
    assert!(!list.is_empty(), "the attempts are recorded");
    assert!(list.iter().all(
        |d| d.outcome == pb::WebhookDeliveryOutcome::HttpError as i32 && d.response_code == 302
    ));
}
webhook_test!(a_redirect_is_not_followed);

/// Redelivers `sub`'s events from the position it had when it was created.
async fn redeliver_from_creation(app: &TestApp, admin: &str, sub: &pb::WebhookSubscription) {
    webhooks(&app.channel)
        .redeliver_webhook_events(authed(
            admin,
            pb::RedeliverWebhookEventsRequest {
                name: sub.name.clone(),
                start_cursor: sub.delivered_cursor.clone(),
            },
        ))
        .await
        .expect("redeliver");
}

async fn redelivery_replays_from_a_cursor_with_the_same_webhook_ids(app: TestApp) {
    let p = people(&app);
    let mut receiver = Receiver::start(&[]);
    let (sub, secret) = subscribe(&app.channel, &p.admin, &receiver.url(), &[]).await;
    receiver.verify_with(&[&secret]);
    create_app(&app, &p.dana, "slack", "First").await;
    create_app(&app, &p.dana, "slack", "Second").await;
    let first = [
        next_acknowledged(&mut receiver).await,
        next_acknowledged(&mut receiver).await,
    ];
    let mut client = webhooks(&app.channel);
    let missing = client
        .redeliver_webhook_events(authed(
            &p.admin,
            pb::RedeliverWebhookEventsRequest {
                name: sub.name.clone(),
                start_cursor: String::new(),
            },
        ))
        .await;
    assert_invalid(missing, "start_cursor");
    // From the position the subscription had when it was created: both again.
    redeliver_from_creation(&app, &p.admin, &sub).await;
    for earlier in &first {
        let again = next_acknowledged(&mut receiver).await;
        assert_verified(&again, 1);
        assert_eq!(
            again["id"], earlier["id"],
            "the same webhook-id: receivers deduplicate"
        );
        assert_eq!(again["body"]["data"], earlier["body"]["data"]);
    }
}
webhook_test!(redelivery_replays_from_a_cursor_with_the_same_webhook_ids);

/// A redelivery takes the subscription's lease away, and a deliverer that held it can no
/// longer read the position it would send from: it stops and the next lease holder starts
/// from the redelivery's position (without this, a deliverer between its lease renewal and
/// its read sent the first event twice).
async fn a_redelivery_takes_the_lease_from_a_deliverer_in_flight(app: TestApp) {
    let p = people(&app);
    let receiver = Receiver::start(&[]);
    let (sub, _) = subscribe(&app.channel, &p.admin, &receiver.url(), &[]).await;
    let id = sub.name.rsplit('/').next().expect("id").to_owned();
    let store = integration_hub::store::Store::connect(&app.db.url, 1)
        .await
        .expect("store");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as i64;
    let until = now + 60_000_000;
    assert!(
        store
            .take_webhook_lease(&id, "a-deliverer", now, until)
            .await
            .expect("lease"),
        "nothing to deliver: the lease is free"
    );
    let held = store
        .get_leased_subscription("acme", &id, "a-deliverer")
        .await
        .expect("read");
    assert!(held.is_some(), "read under its lease");
    redeliver_from_creation(&app, &p.admin, &sub).await;
    let after = store
        .get_leased_subscription("acme", &id, "a-deliverer")
        .await
        .expect("read");
    assert!(
        after.is_none(),
        "the lease was taken away: held by {:?}",
        after.map(|row| row.lease_owner)
    );
    assert!(
        !store
            .advance_position(&id, "a-deliverer", i64::MAX / 2)
            .await
            .expect("advance"),
        "nor can it acknowledge over the redelivery"
    );
}
webhook_test!(a_redelivery_takes_the_lease_from_a_deliverer_in_flight);
