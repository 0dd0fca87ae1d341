//! What a caller can make the server hold: answers its client never reads (HTTP/2 window at
//! 0), calls in flight, and the bytes of one page.

use std::time::Duration;

use integration_hub::pb;
use integration_hub::pb::installed_app_service_client::InstalledAppServiceClient;
use integration_hub::pb::integration_service_client::IntegrationServiceClient;
use prost::Message;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::fixtures::{TEAM, create_app, error_reason, padded_integration};
use crate::helpers::{Backend, TestApp, TestDb, authed, spawn_with, test_args, token};
use crate::storage_test;
use sea_orm::{ConnectionTrait, TransactionTrait};

/// Integrations whose config fills its two free-text fields: about 4 KiB each.
async fn large_integrations(app: &TestApp, admin: &str, n: usize) -> pb::InstalledApp {
    let installed = create_app(app, admin, "slack", "Large").await;
    for i in 0..n {
        app.integrations
            .clone()
            .create_integration(authed(admin, padded_integration(&installed.name, i, 2048)))
            .await
            .unwrap_or_else(|status| panic!("create integration {i}: {status:?}"));
    }
    installed
}

fn list_all(page_token: String) -> pb::ListIntegrationsRequest {
    pb::ListIntegrationsRequest {
        page_size: 1000,
        page_token,
        ..Default::default()
    }
}

/// A connection whose client never reads an answer: its HTTP/2 stream window is 0, so the
/// server may send headers and trailers-only errors but no data.
async fn stalled_channel(app: &TestApp) -> Channel {
    Endpoint::from_shared(app.address.clone())
        .expect("uri")
        .initial_stream_window_size(0)
        .connect()
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_a_client_leaves_unread_are_bounded_per_principal_and_their_connection_is_closed_after_the_send_timeout()
 {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut args = test_args(&db.url);
    args.bounds.answer_memory_per_principal_bytes = 200_000;
    args.bounds.answer_send_timeout_ms = 1_500;
    let app = spawn_with(Backend::Sqlite, db, args).await;
    let admin = token(TEAM, "admin", "ada");
    let viewer = token(TEAM, "viewer", "vic");
    large_integrations(&app, &admin, 20).await;

    // Each answer is about 80 KiB: two fit in the viewer's 200,000 bytes, the rest do not.
    let stalled = IntegrationServiceClient::new(stalled_channel(&app).await);
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let mut client = stalled.clone();
            let viewer = viewer.clone();
            tokio::spawn(async move {
                client
                    .list_integrations(authed(&viewer, list_all(String::new())))
                    .await
            })
        })
        .collect();
    let mut refused = 0;
    let mut cut_off = 0;
    for call in calls {
        // Refused at once, or (for the two held) ended when the connection is closed after
        // the send timeout: no call waits for ever.
        let result = tokio::time::timeout(Duration::from_secs(20), call)
            .await
            .expect("every call ends: refused, or cut off with its connection")
            .expect("task");
        match result {
            Ok(_) => panic!("a client with a window of 0 cannot have read an answer"),
            Err(status) if status.code() == Code::ResourceExhausted => {
                assert_eq!(error_reason(&status), "RESOURCE_EXHAUSTED");
                assert!(status.message().contains("principal"), "{status:?}");
                refused += 1;
            }
            Err(_) => cut_off += 1,
        }
    }
    assert_eq!(
        (refused, cut_off),
        (8, 2),
        "two answers held, eight refused"
    );

    // The held answers were dropped with their connection: the same viewer is served again.
    let page = app
        .integrations
        .clone()
        .list_integrations(authed(&viewer, list_all(String::new())))
        .await
        .expect("served after the stalled connection is gone")
        .into_inner();
    assert_eq!(page.integrations.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_the_servers_limit_in_flight_are_refused_at_once_and_served_again_after() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sqlite = db.sqlite_path();
    let mut args = test_args(&db.url);
    args.bounds.max_calls_in_flight = 2;
    let app = spawn_with(Backend::Sqlite, db, args).await;
    let admin = token(TEAM, "admin", "ada");
    let installed = create_app(&app, &admin, "slack", "Busy").await;

    // Another writer holds SQLite's write lock: two creates wait for it, in flight.
    let blocker = sea_orm::Database::connect(format!("sqlite://{}", sqlite.display()))
        .await
        .expect("open the database file");
    let lock = blocker.begin().await.expect("begin");
    lock.execute_unprepared("CREATE TABLE held_lock (x INTEGER)")
        .await
        .expect("take the write lock");
    let create = |i: usize| {
        let mut client = app.integrations.clone();
        let request = authed(
            &admin,
            crate::fixtures::integration_request(&installed, &format!("Waiting {i}")),
        );
        tokio::spawn(async move { client.create_integration(request).await })
    };
    let mut creates: Vec<_> = (0..2).map(create).collect();

    // While they wait, a third call is refused at once rather than queued. (A probe that
    // runs before both creates are in flight may itself push one out: that one is sent
    // again.)
    let mut apps = InstalledAppServiceClient::new(app.channel.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    let refusal = loop {
        for (i, slot) in creates.iter_mut().enumerate() {
            if slot.is_finished() {
                let pushed_out = std::mem::replace(slot, create(i))
                    .await
                    .expect("task")
                    .expect_err("a create cannot succeed while the lock is held");
                assert_eq!(pushed_out.code(), Code::ResourceExhausted, "{pushed_out:?}");
            }
        }
        let result = apps
            .get_installed_app(authed(
                &admin,
                pb::GetInstalledAppRequest {
                    name: installed.name.clone(),
                },
            ))
            .await;
        if let Err(status) = result {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no call was refused while two were in flight"
        );
        tokio::task::yield_now().await;
    };
    assert_eq!(refusal.code(), Code::ResourceExhausted, "{refusal:?}");
    assert_eq!(error_reason(&refusal), "RESOURCE_EXHAUSTED");
    assert!(refusal.message().contains("2 calls at once"), "{refusal:?}");

    lock.rollback().await.expect("release the lock");
    for create in creates {
        create
            .await
            .expect("task")
            .expect("the creates in flight complete once the lock is released");
    }
    apps.get_installed_app(authed(
        &admin,
        pb::GetInstalledAppRequest {
            name: installed.name.clone(),
        },
    ))
    .await
    .expect("served again");
}

storage_test!(a_page_of_large_integrations_ends_at_its_byte_bound_and_the_next_pages_hold_the_rest);
async fn a_page_of_large_integrations_ends_at_its_byte_bound_and_the_next_pages_hold_the_rest(
    app: TestApp,
) {
    let admin = token(TEAM, "admin", "ada");
    large_integrations(&app, &admin, 300).await;
    let mut names = std::collections::BTreeSet::new();
    let mut pages = 0;
    let mut page_token = String::new();
    loop {
        let page = app
            .integrations
            .clone()
            .list_integrations(authed(&admin, list_all(page_token)))
            .await
            .expect("list")
            .into_inner();
        assert!(
            page.encoded_len() < 1_200_000,
            "a page of {} bytes",
            page.encoded_len()
        );
        pages += 1;
        for integration in &page.integrations {
            assert!(names.insert(integration.name.clone()), "listed twice");
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(names.len(), 300, "every integration, once");
    assert!(
        pages >= 2,
        "300 integrations of 4 KiB take more than one page"
    );
}

fn audit_since_epoch() -> pb::ListAuditEventsRequest {
    pb::ListAuditEventsRequest {
        page_size: 50,
        start_time: Some(prost_types::Timestamp {
            seconds: 1,
            nanos: 0,
        }),
        ..Default::default()
    }
}

/// Audit listings held up in the database (here by a lock on their table; in production by
/// a long log) run at most two per team and a quarter of the pool together, end at their
/// statement timeout, and leave the pool to other teams' calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_listings_held_up_in_the_database_are_bounded_per_team_and_in_the_pool_and_end_at_their_timeout()
 {
    crate::needs!(Postgres);
    let app = crate::helpers::spawn_app(Backend::Postgres).await;
    let acme = token(TEAM, "admin", "ada");
    let other = token("other", "admin", "oli");
    let other_app = create_app(&app, &other, "slack", "Other's").await;

    let blocker = sea_orm::Database::connect(app.db.url.as_str())
        .await
        .expect("connect");
    let lock = blocker.begin().await.expect("begin");
    lock.execute_unprepared("LOCK TABLE audit_events IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock the audit log");

    // Two of acme's listings wait for the lock (the test pool of 8 gives audit listings 2).
    let started = std::time::Instant::now();
    let held: Vec<_> = (0..2)
        .map(|_| {
            let mut audit = app.audit.clone();
            let request = authed(&acme, audit_since_epoch());
            tokio::spawn(async move { audit.list_audit_events(request).await })
        })
        .collect();
    // Both wait for the lock in the database before anything else is asked.
    let waiting = "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%audit_events%'";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let row = blocker
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DatabaseBackend::Postgres,
                waiting,
            ))
            .await
            .expect("pg_stat_activity")
            .expect("a row");
        if row.try_get::<i64>("", "n").expect("count") >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the two listings never reached the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A third of acme's, and one of another team's, are refused at once rather than queued.
    let refused_at_once = |token: String, why: &'static str| {
        let mut audit = app.audit.clone();
        async move {
            let status = tokio::time::timeout(
                Duration::from_secs(3),
                audit.list_audit_events(authed(&token, audit_since_epoch())),
            )
            .await
            .expect("refused at once, not queued behind the held listings")
            .expect_err("refused");
            assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
            assert!(status.message().contains(why), "{status:?}");
        }
    };
    refused_at_once(acme.clone(), "this team").await;
    refused_at_once(other.clone(), "on this server").await;

    // Other calls still find connections: the listings hold two of eight.
    app.apps
        .clone()
        .get_installed_app(authed(
            &other,
            pb::GetInstalledAppRequest {
                name: other_app.name.clone(),
            },
        ))
        .await
        .expect("another team's call is served while the listings wait");

    // The held listings end at their statement timeout (5 s), well before the request's.
    for call in held {
        let status = call
            .await
            .expect("task")
            .expect_err("the lock is still held");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("statement timeout"), "{status:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    lock.rollback().await.expect("unlock");
    app.audit
        .clone()
        .list_audit_events(authed(&acme, audit_since_epoch()))
        .await
        .expect("served once the lock is gone");
}
