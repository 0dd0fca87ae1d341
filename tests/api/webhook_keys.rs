//! Webhook signing secrets and key rotation: `rotate-keys` re-seals them (the previous
//! secret too), `serve` refuses to retire a key they still use and names them, and a secret
//! that a running server cannot open is a clear FAILED_PRECONDITION and a NOT_SENT attempt,
//! never INTERNAL or silence.

use integration_hub::crypto::Aad;
use integration_hub::domain::rotation::rotate_keys;
use integration_hub::pb;
use integration_hub::startup::{Application, key_ring};
use integration_hub::store::{AuthorizationRow, AuthorizationStage, SealedKind, Store};
use sea_orm::{ConnectionTrait, Database, DatabaseBackend, Statement};
use tonic::Code;

use crate::fixtures::{create_app, people};
use crate::helpers::{Backend, TestApp, authed, spawn_with, test_args};
use crate::keys::{ring_1, ring_1_2};
use crate::storage_test;
use crate::webhook_hostile::at_least;
use crate::webhook_receiver::Receiver;
use crate::webhooks::{next_acknowledged, shrink, subscribe, webhooks};

fn args(app: &TestApp, keys: &str, min: Option<u32>) -> integration_hub::config::ServeArgs {
    let mut args = test_args(&app.db.url);
    shrink(&mut args.webhooks);
    args.encryption_keys = Some(keys.to_owned());
    args.min_key_version = min;
    args
}

async fn start(backend: Backend, keys: &str, min: Option<u32>) -> TestApp {
    let db = crate::helpers::TestDb::new(backend).await;
    let mut args = test_args(&db.url);
    shrink(&mut args.webhooks);
    args.encryption_keys = Some(keys.to_owned());
    args.min_key_version = min;
    spawn_with(backend, db, args).await
}

async fn restart(app: TestApp, keys: &str, min: Option<u32>) -> TestApp {
    let args = args(&app, keys, min);
    app.restart_with(args).await
}

async fn rotate_secret(
    app: &TestApp,
    admin: &str,
    name: &str,
    grace: Option<i64>,
) -> pb::RotateWebhookSecretResponse {
    webhooks(&app.channel)
        .rotate_webhook_secret(authed(
            admin,
            pb::RotateWebhookSecretRequest {
                name: name.to_owned(),
                grace_period: grace.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            },
        ))
        .await
        .expect("rotate the secret")
        .into_inner()
}

async fn send_test(
    app: &TestApp,
    admin: &str,
    name: &str,
) -> Result<pb::WebhookDelivery, tonic::Status> {
    webhooks(&app.channel)
        .send_test_webhook(authed(
            admin,
            pb::SendTestWebhookRequest {
                name: name.to_owned(),
            },
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn webhook_secrets_are_resealed_and_the_old_key_can_be_retired(backend: Backend) {
    let app = start(backend, &ring_1(), None).await;
    let p = people(&app);
    let mut receiver = Receiver::start(&[]);
    let (sub, first) = subscribe(&app.channel, &p.admin, &receiver.url(), &[]).await;
    // A rotation with a grace period: the current and the previous secret, both on key 1.
    let second = rotate_secret(&app, &p.admin, &sub.name, Some(3600))
        .await
        .secret;

    // Key 2 arrives; retiring key 1 before the secrets moved off it is refused, naming them.
    let app = restart(app, &ring_1_2(), None).await;
    let refused = match Application::build(args(&app, &ring_1_2(), Some(2))).await {
        Ok(_) => panic!("serve started with webhook secrets on a retired key"),
        Err(err) => format!("{err:#}"),
    };
    assert!(refused.contains("rotate-keys"), "{refused}");
    assert!(
        refused.contains("1 webhook_subscriptions.secret with key version 1")
            && refused.contains("1 webhook_subscriptions.old_secret with key version 1"),
        "{refused}"
    );

    // rotate-keys re-seals both, and nothing is left on key 1.
    let store = Store::connect(&app.db.url, 2).await.expect("store");
    let keys = key_ring(&ring_1_2(), None).expect("ring");
    let summary = rotate_keys(&store, &keys, 1).await.expect("rotate");
    assert_eq!(summary.webhook_secrets, 2, "{summary}");
    assert!(summary.remaining.is_empty(), "{summary}");
    let counts = store.sealed_counts().await.expect("counts");
    assert!(counts.iter().all(|c| c.key_version == 2), "{counts:?}");
    assert!(
        counts
            .iter()
            .any(|c| c.kind == SealedKind::WebhookPreviousSecret)
    );
    store.close().await;

    // Key 1 retired: the server starts, delivers signed with both secrets, tests, rotates.
    let mut app = restart(app, &ring_1_2(), Some(2)).await;
    receiver.verify_with(&[&second, &first]);
    create_app(&app, &p.dana, "slack", "After the rotation").await;
    let request = next_acknowledged(&mut receiver).await;
    assert_eq!(
        request["verified"],
        serde_json::json!([true, true]),
        "{request}"
    );
    let test = send_test(&app, &p.admin, &sub.name)
        .await
        .expect("send test");
    assert_eq!(test.outcome, pb::WebhookDeliveryOutcome::Delivered as i32);
    receiver.next(crate::fixtures::WAIT).await;
    let third = rotate_secret(&app, &p.admin, &sub.name, None).await.secret;
    receiver.verify_with(&[&third, &second]);
    create_app(&app, &p.dana, "slack", "After the secret's rotation").await;
    let request = next_acknowledged(&mut receiver).await;
    assert_eq!(
        request["verified"],
        serde_json::json!([true, true]),
        "{request}"
    );
    app.stop().await;
}

storage_test!(backend webhook_secrets_are_resealed_and_the_old_key_can_be_retired, needs Python);

/// A secret sealed with a key the running server retired (written behind its back, as a
/// replica with an old configuration would): SendTestWebhook says why, the deliverer records
/// NOT_SENT attempts and backs off, and a rotation replaces it.
async fn a_secret_on_a_retired_key_is_a_clear_failure_not_internal(backend: Backend) {
    let mut app = start(backend, &ring_1_2(), Some(2)).await;
    let p = people(&app);
    let mut receiver = Receiver::start(&[]);
    let (sub, _) = subscribe(&app.channel, &p.admin, &receiver.url(), &[]).await;
    let id = sub.name.rsplit('/').next().expect("id").to_owned();
    let owner = format!("webhookSubscriptions/{id}");
    let old_ring = key_ring(&ring_1(), None).expect("ring");
    let sealed = old_ring
        .seal(
            &Aad {
                team: crate::fixtures::TEAM,
                owner: &owner,
            },
            &[7; 32],
        )
        .expect("seal");
    let db = Database::connect(&app.db.url).await.expect("db");
    let (backend_kind, mark) = match backend {
        Backend::Postgres => (DatabaseBackend::Postgres, "$1"),
        Backend::Sqlite => (DatabaseBackend::Sqlite, "?"),
    };
    db.execute_raw(Statement::from_sql_and_values(
        backend_kind,
        format!("UPDATE webhook_subscriptions SET secret = {mark}, key_version = 1"),
        [sealed.into()],
    ))
    .await
    .expect("put a secret on key 1");

    let err = send_test(&app, &p.admin, &sub.name)
        .await
        .expect_err("cannot sign");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("key version 1"), "{err:?}");

    create_app(&app, &p.dana, "slack", "Unsigned").await;
    let list = at_least(&app, &p.admin, &sub.name, 2).await;
    for d in &list {
        assert_eq!(
            d.outcome,
            pb::WebhookDeliveryOutcome::NotSent as i32,
            "{d:?}"
        );
        assert!(d.error.contains("key version 1"), "{d:?}");
    }
    assert_eq!(list.last().map(|d| d.attempt), Some(1));
    assert!(
        receiver
            .maybe_next(std::time::Duration::from_millis(1))
            .await
            .is_none()
    );

    // A rotation (default grace) replaces it and keeps nothing that cannot sign.
    let rotated = rotate_secret(&app, &p.admin, &sub.name, None).await;
    let kept = rotated.webhook_subscription.expect("subscription");
    assert_eq!(
        kept.previous_secret_expire_time, None,
        "no grace for a secret that cannot sign"
    );
    receiver.verify_with(&[&rotated.secret]);
    let request = next_acknowledged(&mut receiver).await;
    assert_eq!(request["verified"], serde_json::json!([true]), "{request}");
    let _ = db.close().await;
    app.stop().await;
}

storage_test!(backend a_secret_on_a_retired_key_is_a_clear_failure_not_internal, needs Python);

/// The verifier of an authorization in progress is re-sealed with the rest; an ended one
/// (its verifier emptied) is neither re-sealed nor counted.
async fn pending_verifiers_are_resealed(backend: Backend) {
    let mut app = start(backend, &ring_1(), None).await;
    let store = Store::connect(&app.db.url, 2).await.expect("store");
    let old_ring = key_ring(&ring_1(), None).expect("ring");
    let tx = store.begin_write().await.expect("tx");
    for (id, state) in [("pending1", "PENDING"), ("ended1", "SUCCEEDED")] {
        let owner = format!("oauthAuthorizations/{id}");
        let verifier = match state {
            "PENDING" => old_ring
                .seal(
                    &Aad {
                        team: crate::fixtures::TEAM,
                        owner: &owner,
                    },
                    br#"{"code_verifier":"v"}"#,
                )
                .expect("seal"),
            _ => Vec::new(),
        };
        tx.insert_authorization(AuthorizationRow {
            id: id.into(),
            state_hash: format!("hash-{id}"),
            team: crate::fixtures::TEAM.into(),
            creator: "dana".into(),
            creator_role: "developer".into(),
            service: "slack".into(),
            display_name: "Slack".into(),
            scopes: String::new(),
            installed_app_id: None,
            return_url: None,
            browser_hash: None,
            verifier,
            key_version: 1,
            state: AuthorizationStage::parse(state).expect("a stage"),
            error: None,
            create_time: 0,
            expire_time: i64::MAX,
            complete_time: None,
        })
        .await
        .expect("insert");
    }
    tx.commit().await.expect("commit");
    let counts = store.sealed_counts().await.expect("counts");
    let verifiers: Vec<_> = counts
        .iter()
        .filter(|c| c.kind == SealedKind::AuthorizationVerifier)
        .map(|c| (c.key_version, c.count))
        .collect();
    assert_eq!(verifiers, [(1, 1)], "the ended one holds nothing");

    let summary = rotate_keys(&store, &key_ring(&ring_1_2(), None).expect("ring"), 10)
        .await
        .expect("rotate");
    assert_eq!(summary.authorization_verifiers, 1, "{summary}");
    assert!(summary.remaining.is_empty(), "{summary}");
    let (kind, row) = store
        .sealed_sample(2)
        .await
        .expect("sample")
        .expect("a value on key 2");
    assert_eq!(
        (kind, row.id.as_str()),
        (SealedKind::AuthorizationVerifier, "pending1")
    );
    let new_ring = key_ring(&ring_1_2(), Some(2)).expect("ring");
    let opened = new_ring
        .open(
            &Aad {
                team: crate::fixtures::TEAM,
                owner: "oauthAuthorizations/pending1",
            },
            &row.sealed,
        )
        .expect("opens with key 2 alone");
    assert_eq!(opened.expose(), br#"{"code_verifier":"v"}"#);
    store.close().await;
    app.stop().await;
}

storage_test!(backend pending_verifiers_are_resealed);
