//! Receivers that work against the deliverer: answers no database stores as they are, and
//! answers trickled a byte at a time to hold the replica's delivery slots.

use std::time::Duration;

use integration_hub::pb;
use integration_hub::webhooks::WebhookArgs;
use serde_json::Value;

use crate::fixtures::{create_app, people};
use crate::helpers::{TestApp, authed};
use crate::webhook_receiver::Receiver;
use crate::webhooks::{deliveries, next_acknowledged, subscribe, webhook_test, webhooks};

const WAIT: Duration = Duration::from_secs(20);

/// The deliveries of `name` once there are at least `count` (polled through the API: a
/// record is written just after the receiver answered).
pub async fn at_least(
    app: &TestApp,
    token: &str,
    name: &str,
    count: usize,
) -> Vec<pb::WebhookDelivery> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let list = deliveries(app, token, name).await;
        if list.len() >= count {
            return list;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{count} delivery records of {name} expected, found {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// NUL and invalid UTF-8 in a receiver's answer.
const HOSTILE_BODY: &str = "626164 00 fffe 20616e73776572 00";

fn hex(spaced: &str) -> String {
    spaced.replace(' ', "")
}

async fn an_answer_with_nul_and_invalid_utf8_is_recorded_and_the_subscription_moves_on(
    app: TestApp,
) {
    let p = people(&app);
    let body = hex(HOSTILE_BODY);
    let mut failing = Receiver::start(&["--status", "500", "--body-hex", &body]);
    let mut accepting = Receiver::start(&["--status", "200", "--body-hex", &body]);
    let (failing_sub, _) = subscribe(&app.channel, &p.admin, &failing.url(), &[]).await;
    let (accepting_sub, _) = subscribe(&app.channel, &p.admin, &accepting.url(), &[]).await;
    let first = create_app(&app, &p.dana, "slack", "First").await;
    let second = create_app(&app, &p.dana, "slack", "Second").await;

    // Acknowledged with such an answer: the next event comes next, not the same one again.
    let names: Vec<Value> = [
        next_acknowledged(&mut accepting).await,
        next_acknowledged(&mut accepting).await,
    ]
    .iter()
    .map(|r| r["body"]["data"]["installedAppName"].clone())
    .collect();
    assert_eq!(names, [first.name.as_str(), second.name.as_str()]);
    let list = at_least(&app, &p.admin, &accepting_sub.name, 2).await;
    assert!(
        list.iter()
            .all(|d| d.outcome == pb::WebhookDeliveryOutcome::Delivered as i32)
    );

    // Refused with such an answer: every attempt is recorded, with the answer made storable,
    // and retried with backoff.
    for _ in 0..3 {
        failing.next(WAIT).await;
    }
    let list = at_least(&app, &p.admin, &failing_sub.name, 3).await;
    let stored = "bad\u{FFFD}\u{FFFD}\u{FFFD} answer\u{FFFD}";
    for d in &list {
        assert_eq!(d.outcome, pb::WebhookDeliveryOutcome::HttpError as i32);
        assert_eq!(d.response_code, 500);
        assert_eq!(d.response_body, stored);
    }
    let attempts: Vec<i32> = list.iter().rev().map(|d| d.attempt).collect();
    assert_eq!(attempts[..3], [1, 2, 3], "counted: the backoff grows");
    let got = webhooks(&app.channel)
        .get_webhook_subscription(authed(
            &p.admin,
            pb::GetWebhookSubscriptionRequest {
                name: failing_sub.name.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner();
    // The third record follows the second failure's backoff.
    assert!(got.failed_attempts >= 2 && got.next_attempt_time.is_some());
}
webhook_test!(an_answer_with_nul_and_invalid_utf8_is_recorded_and_the_subscription_moves_on);

/// Four slots, two per team, answers trickled for up to 30 s.
fn two_slots_per_team(w: &mut WebhookArgs) {
    w.webhook_concurrency = 4;
    w.webhook_team_concurrency = 2;
    w.webhook_timeout_ms = 30_000;
    w.webhook_lease_secs = 60;
}

/// Whether a line of the trickling receiver says an answer ended.
fn trickle_done(line: &Value) -> bool {
    line.get("trickle_done").is_some()
}

async fn a_teams_trickling_receivers_hold_only_its_share_and_another_team_is_delivered_meanwhile(
    app: TestApp,
) {
    let p = people(&app);
    let other_admin = app.token("other", "admin", "olga");
    let other_dev = app.token("other", "developer", "oscar");
    // Team acme: four subscriptions, each answered a byte every 100 ms.
    let mut trickling = Receiver::start(&["--trickle-first", "100"]);
    for _ in 0..4 {
        subscribe(&app.channel, &p.admin, &trickling.url(), &[]).await;
    }
    let mut prompt = Receiver::start(&[]);
    subscribe(&app.channel, &other_admin, &prompt.url(), &[]).await;

    create_app(&app, &p.dana, "slack", "Acme Slack").await;
    // Two of acme's deliveries hold their answers: the team's whole share.
    for _ in 0..2 {
        let request = trickling.next(WAIT).await;
        assert!(!trickle_done(&request), "{request}");
    }

    // Another team's event is delivered while they hold.
    let theirs = create_app(&app, &other_dev, "slack", "Other Slack").await;
    let request = next_acknowledged(&mut prompt).await;
    assert_eq!(
        request["body"]["data"]["installedAppName"],
        theirs.name.as_str()
    );
    // Still holding (no answer ended), and acme got no third slot.
    if let Some(line) = trickling.maybe_next(Duration::from_millis(1)).await {
        assert!(!trickle_done(&line), "an answer ended first: {line}");
        panic!("acme held more than its share: {line}");
    }
    drop(trickling);
}
webhook_test!(
    a_teams_trickling_receivers_hold_only_its_share_and_another_team_is_delivered_meanwhile,
    two_slots_per_team
);

/// The timeout covers reading the answer: a receiver that trickles its body is cut off (the
/// test schedule's 1 s timeout), and the attempt is recorded.
async fn a_trickled_answer_is_cut_off_at_the_timeout(app: TestApp) {
    let p = people(&app);
    let mut trickling = Receiver::start(&["--trickle-first", "1"]);
    let (sub, _) = subscribe(&app.channel, &p.admin, &trickling.url(), &[]).await;
    create_app(&app, &p.dana, "slack", "Trickled").await;
    let request = trickling.next(WAIT).await;
    assert_eq!(request["status"], 200, "{request}");
    // The receiver would trickle for 10 minutes; the deliverer hangs up first.
    let done = trickling.next(WAIT).await;
    assert!(trickle_done(&done), "{done}");
    let list = at_least(&app, &p.admin, &sub.name, 1).await;
    assert_eq!(list[0].response_code, 200);
    assert!(list[0].response_body.starts_with('x'), "{:?}", list[0]);
}
webhook_test!(a_trickled_answer_is_cut_off_at_the_timeout);

/// Measurement (ignored by default; prints its figures): 32 subscriptions of two teams whose
/// receivers trickle their answers for the whole 10 s timeout, then one event of a third
/// team: how long its delivery takes, without a per-team share (32 of 32 slots, as before
/// the share existed) and with the default share (4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn another_teams_delivery_latency_behind_trickling_receivers() {
    crate::needs!(Python);
    for share in [32, 4] {
        let mut app = crate::webhooks::spawn_webhook_app(crate::helpers::Backend::Sqlite, |w| {
            w.webhook_timeout_ms = 10_000;
            w.webhook_lease_secs = 60;
            w.webhook_team_concurrency = share;
        })
        .await;
        let mut trickling = Receiver::start(&["--trickle-first", "1000"]);
        for team in ["slow-a", "slow-b"] {
            let admin = app.token(team, "admin", "mallory");
            for _ in 0..16 {
                subscribe(&app.channel, &admin, &trickling.url(), &[]).await;
            }
        }
        let mut prompt = Receiver::start(&[]);
        subscribe(
            &app.channel,
            &app.token("victim", "admin", "vera"),
            &prompt.url(),
            &[],
        )
        .await;
        for team in ["slow-a", "slow-b"] {
            create_app(
                &app,
                &app.token(team, "developer", "mallory"),
                "slack",
                "Slow",
            )
            .await;
        }
        // Every slot the two teams may take is taken.
        for _ in 0..share.min(16) * 2 {
            trickling.next(WAIT).await;
        }
        let started = std::time::Instant::now();
        create_app(
            &app,
            &app.token("victim", "developer", "vic"),
            "slack",
            "Victim",
        )
        .await;
        next_acknowledged(&mut prompt).await;
        println!(
            "per-team share {share} of 32 slots: another team's delivery took {:.2} s",
            started.elapsed().as_secs_f64()
        );
        drop(trickling);
        app.stop().await;
    }
}
