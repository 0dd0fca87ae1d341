//! Keys: rotation re-seals everything under the newest key, online and idempotently; a
//! ciphertext moved to another row does not open; a wrong or retired key stops `serve`.

use base64::Engine;
use integration_hub::domain::rotation::rotate_keys;
use integration_hub::pb;
use integration_hub::startup::{Application, key_ring};
use integration_hub::store::{SealedKind, Store};
use sea_orm::{ConnectionTrait, Database};
use tonic::Code;
use tonic_types::StatusExt;

use crate::fixtures::{
    all_events, create_app_with, create_integration, create_own_integration, credentials, get_app,
    resolve, update_credentials,
};
use crate::helpers::{TestApp, authed, test_args};
use crate::storage_test;

pub fn key(byte: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([byte; 32])
}

pub fn ring_1() -> String {
    format!("1:{}", key(1))
}

pub fn ring_1_2() -> String {
    format!("1:{},2:{}", key(1), key(2))
}

/// The access token `name` resolves to, as the service `svc`.
async fn access_token(app: &TestApp, svc: &str, name: &str) -> Result<String, tonic::Status> {
    resolve(app, svc, name)
        .await
        .map(|r| r.credentials["access_token"].clone())
}

/// Each `(name, secret)`: `name` resolves, as the service `svc`, to the access token `secret`.
async fn assert_resolve_to(app: &TestApp, svc: &str, expected: &[(&str, &str)]) {
    for (name, secret) in expected {
        assert_eq!(
            access_token(app, svc, name).await.expect("resolve"),
            *secret,
            "{name}"
        );
    }
}

async fn restart(app: TestApp, keys: &str, min_key_version: Option<u32>) -> TestApp {
    let mut args = test_args(&app.db.url);
    args.encryption_keys = Some(keys.to_owned());
    args.min_key_version = min_key_version;
    app.restart_with(args).await
}

/// `Application::build` on this database with these keys: the error text, if it refuses.
async fn start_error(app: &TestApp, keys: &str, min_key_version: Option<u32>) -> Option<String> {
    let mut args = test_args(&app.db.url);
    args.encryption_keys = Some(keys.to_owned());
    args.min_key_version = min_key_version;
    match Application::build(args).await {
        Ok(_) => None,
        Err(err) => Some(format!("{err:#}")),
    }
}

async fn rotation_reseals_every_value_under_the_newest_key(app: TestApp) {
    let app = restart(app, &ring_1(), None).await;
    let dev = app.token("acme", "developer", "dana");
    let other = app.token("other", "developer", "olga");
    let svc = app.token("acme", "service", "deliverer");
    let admin = app.token("acme", "admin", "alice");
    let a = create_app_with(&app, &dev, "slack", "Slack", "xoxb-rotate-A").await;
    let i = create_integration(&app, &dev, &a, "Monitor results").await;
    let own =
        create_own_integration(&app, &dev, "slack", "Monitor results", "xoxb-rotate-own").await;
    create_app_with(&app, &other, "slack", "Theirs", "xoxb-rotate-other").await;

    // Retiring key 1 before the values moved off it: serve refuses, and says what to do.
    let refused = start_error(&app, &ring_1_2(), Some(2))
        .await
        .expect("values still on a retired key");
    assert!(
        refused.contains("the encryption keys cannot open stored credentials"),
        "{refused}"
    );
    assert!(refused.contains("rotate-keys"), "{refused}");

    // Step 1: every replica gets the new key (it seals new writes); step 2: rotate, online.
    let app = restart(app, &ring_1_2(), None).await;
    let before = get_app(&app, &dev, &a.name).await.expect("get");
    let store = Store::connect(&app.db.url, 2).await.expect("store");
    let keys = key_ring(&ring_1_2(), None).expect("ring");
    let summary = rotate_keys(&store, &keys, 1).await.expect("rotate");
    assert_eq!(summary.key_version, 2);
    assert_eq!(summary.installed_apps, 2);
    assert_eq!(summary.integrations, 1);
    assert_eq!((summary.failed, summary.changed_concurrently), (0, 0));
    let counts = store.key_version_counts().await.expect("counts");
    assert_eq!(counts.into_iter().collect::<Vec<_>>(), [(2, 3)]);
    // The service kept serving and reads the re-sealed values; etags did not move.
    assert_resolve_to(
        &app,
        &svc,
        &[(&i.name, "xoxb-rotate-A"), (&own.name, "xoxb-rotate-own")],
    )
    .await;
    let after = get_app(&app, &dev, &a.name).await.expect("get");
    assert_eq!(before.etag, after.etag);

    // A second run has nothing to do.
    let again = rotate_keys(&store, &keys, 100).await.expect("rotate again");
    assert_eq!(again.resealed(), 0);
    store.close().await;

    // Step 3: retire key 1. The service starts and still resolves.
    let mut app = restart(app, &ring_1_2(), Some(2)).await;
    assert_resolve_to(
        &app,
        &svc,
        &[(&i.name, "xoxb-rotate-A"), (&own.name, "xoxb-rotate-own")],
    )
    .await;
    // Rotation writes no audit records of its own, and none holds a value.
    let printed = format!("{:?}", all_events(&app, &admin, Default::default()).await);
    assert!(!printed.contains("xoxb-rotate"));
    app.stop().await;
}
storage_test!(rotation_reseals_every_value_under_the_newest_key);

async fn a_reseal_never_overwrites_a_concurrent_credential_change(app: TestApp) {
    let mut app = restart(app, &ring_1_2(), None).await;
    let dev = app.token("acme", "developer", "dana");
    let svc = app.token("acme", "service", "deliverer");
    let a = create_app_with(&app, &dev, "slack", "Slack", "xoxb-old").await;
    let i = create_integration(&app, &dev, &a, "Monitor results").await;
    let store = Store::connect(&app.db.url, 2).await.expect("store");
    // Pretend the app is still on key 1 and read it as a rotation batch would.
    let db = Database::connect(&app.db.url).await.expect("db");
    db.execute_unprepared("UPDATE installed_apps SET key_version = 1")
        .await
        .expect("pretend");
    let tx = store.begin_write().await.expect("tx");
    let rows = tx
        .sealed_below(SealedKind::App, 2, "", 10)
        .await
        .expect("read batch");
    drop(tx);
    assert_eq!(rows.len(), 1);
    // Meanwhile a developer replaces the credentials.
    app.apps
        .update_installed_app(authed(
            &dev,
            update_credentials(&a.name, credentials("xoxb-new")),
        ))
        .await
        .expect("replace credentials");
    // The stale re-seal does not apply.
    let tx = store.begin_write().await.expect("tx");
    let applied = tx
        .reseal(SealedKind::App, &rows[0], rows[0].sealed.clone(), 2)
        .await
        .expect("reseal");
    tx.commit().await.expect("commit");
    assert!(!applied, "a changed row is left alone");
    assert_eq!(
        access_token(&app, &svc, &i.name).await.expect("resolve"),
        "xoxb-new"
    );
    let _ = db.close().await;
    store.close().await;
    app.stop().await;
}
storage_test!(a_reseal_never_overwrites_a_concurrent_credential_change);

async fn a_ciphertext_copied_to_another_row_does_not_open(mut app: TestApp) {
    let dev = app.token("acme", "developer", "dana");
    let other = app.token("other", "developer", "olga");
    let svc = app.token("acme", "service", "deliverer");
    let admin = app.token("acme", "admin", "alice");
    let a = create_app_with(&app, &dev, "slack", "Slack A", "xoxb-copy-A").await;
    let b = create_app_with(&app, &dev, "slack", "Slack B", "xoxb-copy-B").await;
    let theirs = create_app_with(&app, &other, "slack", "Theirs", "xoxb-copy-theirs").await;
    let i = create_integration(&app, &dev, &b, "Monitor results").await;
    let own_1 =
        create_own_integration(&app, &dev, "slack", "Monitor results", "xoxb-copy-own-1").await;
    let own_2 =
        create_own_integration(&app, &dev, "slack", "Monitor results", "xoxb-copy-own-2").await;
    assert_eq!(
        access_token(&app, &svc, &i.name).await.expect("resolve"),
        "xoxb-copy-B"
    );
    let id = |name: &str| name.rsplit('/').next().expect("id").to_owned();
    let db = Database::connect(&app.db.url).await.expect("db");
    let copy_app = |from: String, to: String| {
        format!(
            "UPDATE installed_apps SET credentials = \
             (SELECT credentials FROM installed_apps WHERE id = '{from}') WHERE id = '{to}'"
        )
    };
    let cases = [
        // Another app of the same team.
        copy_app(id(&a.name), id(&b.name)),
        // An app of another team.
        copy_app(id(&theirs.name), id(&b.name)),
    ];
    // A copy made behind the service's back changes no version: the replica may answer what
    // it read before the copy (the genuine credentials) for its read cache's time to live,
    // never longer; after it, it reads the copy, which must not open.
    let kept_reads_expire = || tokio::time::sleep(std::time::Duration::from_millis(1100));
    for sql in cases {
        db.execute_unprepared(&sql).await.expect("copy");
        kept_reads_expire().await;
        let err = access_token(&app, &svc, &i.name)
            .await
            .expect_err("must not open");
        assert_eq!(err.code(), Code::Internal);
        assert_eq!(err.message(), "internal error");
        assert_eq!(
            err.get_details_error_info().expect("ErrorInfo").reason,
            "INTERNAL"
        );
        let shown = format!("{err:?}");
        assert!(!shown.contains("xoxb-copy"), "{shown}");
    }
    // Another integration's own credentials.
    db.execute_unprepared(&format!(
        "UPDATE integrations SET own_credentials = \
         (SELECT own_credentials FROM integrations WHERE id = '{}') WHERE id = '{}'",
        id(&own_1.name),
        id(&own_2.name)
    ))
    .await
    .expect("copy own");
    kept_reads_expire().await;
    let err = access_token(&app, &svc, &own_2.name)
        .await
        .expect_err("must not open");
    assert_eq!(err.code(), Code::Internal);
    assert_eq!(err.message(), "internal error");
    assert_eq!(
        access_token(&app, &svc, &own_1.name)
            .await
            .expect("the original still opens"),
        "xoxb-copy-own-1"
    );
    // Each failure is in the audit log, as a failure with an opaque reason.
    let failures: Vec<_> = all_events(
        &app,
        &admin,
        pb::ListAuditEventsRequest {
            action: "integration.resolve_credentials".into(),
            ..Default::default()
        },
    )
    .await
    .into_iter()
    .filter(|e| e.reason == "INTERNAL")
    .collect();
    assert_eq!(failures.len(), 3);
    let _ = db.close().await;
    app.stop().await;
}
storage_test!(a_ciphertext_copied_to_another_row_does_not_open);

async fn serve_refuses_keys_that_cannot_open_stored_credentials(app: TestApp) {
    let mut app = restart(app, &ring_1(), None).await;
    let dev = app.token("acme", "developer", "dana");
    create_own_integration(&app, &dev, "slack", "Monitor results", "xoxb-wrong-key").await;
    let wrong = format!("1:{}", key(9));
    // The same version, another key.
    let message = start_error(&app, &wrong, None)
        .await
        .expect("a wrong key is refused");
    assert!(
        message.contains("the encryption keys cannot open stored credentials"),
        "{message}"
    );
    assert!(
        !message.contains(&key(9)) && !message.contains(&key(1)),
        "{message}"
    );
    // A ring without the version the values are sealed with.
    let missing = format!("2:{}", key(2));
    let message = start_error(&app, &missing, None)
        .await
        .expect("a missing key is refused");
    assert!(
        message.contains("the encryption keys cannot open stored credentials"),
        "{message}"
    );
    // The right ring (with a newer key added) starts.
    assert!(start_error(&app, &ring_1_2(), None).await.is_none());
    app.stop().await;
}
storage_test!(serve_refuses_keys_that_cannot_open_stored_credentials);
