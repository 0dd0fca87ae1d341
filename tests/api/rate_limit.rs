//! The per-principal rate limits, per role, end to end with tiny limits.

use integration_hub::config::ServeArgs;
use integration_hub::pb;
use tonic::Code;
use tonic_types::StatusExt;

use crate::fixtures::error_reason;
use crate::helpers::{Backend, TestApp, TestDb, authed, spawn_with, test_args};

/// A server on SQLite whose rate limit allows `burst` calls at once and `per_sec` after.
async fn spawn_limited(burst: u32, per_sec: f64) -> TestApp {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut args = test_args(&db.url);
    args.rate_limit_burst = burst;
    args.rate_limit_per_sec = per_sec;
    spawn_with(Backend::Sqlite, db, args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_its_burst_a_principal_gets_resource_exhausted_with_retry_info() {
    // Three calls at once, then one every 100 s: the test never sees a refill.
    let mut app = spawn_limited(3, 0.01).await;
    let dana = app.token("acme", "developer", "dana");
    let omar = app.token("acme", "developer", "omar");
    let dana_elsewhere = app.token("other", "developer", "dana");
    for _ in 0..3 {
        app.apps
            .list_services(authed(&dana, pb::ListServicesRequest {}))
            .await
            .expect("within the burst");
    }
    let err = app
        .apps
        .list_services(authed(&dana, pb::ListServicesRequest {}))
        .await
        .expect_err("past the burst");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(error_reason(&err), "RESOURCE_EXHAUSTED");
    let retry = err
        .get_details_retry_info()
        .and_then(|r| r.retry_delay)
        .expect("RetryInfo with a delay");
    assert!(
        retry > std::time::Duration::from_secs(50) && retry <= std::time::Duration::from_secs(100),
        "{retry:?}"
    );
    // Refused calls count too: a method the role may not call is still limited.
    let err = app
        .apps
        .delete_installed_app(authed(
            &dana,
            pb::DeleteInstalledAppRequest {
                name: "teams/acme/installedApps/x".into(),
                ..Default::default()
            },
        ))
        .await
        .expect_err("limited before the policy check");
    assert_eq!(err.code(), Code::ResourceExhausted);
    // Other principals (another subject, or the same subject in another team) are not.
    app.apps
        .list_services(authed(&omar, pb::ListServicesRequest {}))
        .await
        .expect("another subject");
    app.apps
        .list_services(authed(&dana_elsewhere, pb::ListServicesRequest {}))
        .await
        .expect("the same subject in another team");
    // A call without a valid token is refused as such, not counted against anyone.
    let err = app
        .apps
        .list_services(authed("not-a-token", pb::ListServicesRequest {}))
        .await
        .expect_err("no principal");
    assert_eq!(err.code(), Code::Unauthenticated);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_rate_disables_the_limit() {
    let mut app = spawn_limited(1, 0.0).await;
    let dana = app.token("acme", "developer", "dana");
    for _ in 0..20 {
        app.apps
            .list_services(authed(&dana, pb::ListServicesRequest {}))
            .await
            .expect("no limit");
    }
    app.stop().await;
}

/// How many calls `token` makes in a row before the first RESOURCE_EXHAUSTED (at most `most`).
async fn calls_before_refusal(app: &mut TestApp, token: &str, most: usize) -> usize {
    for passed in 0..most {
        if let Err(err) = app
            .apps
            .list_services(authed(token, pb::ListServicesRequest {}))
            .await
        {
            assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
            assert!(err.get_details_retry_info().is_some(), "with RetryInfo");
            return passed;
        }
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_has_its_own_limit_and_a_service_is_not_throttled_at_a_developers_rate() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut args = test_args(&db.url);
    // The old settings are the human roles' default; two roles have their own burst. The
    // service role keeps its shipped default. No refill within the test (one call per 100 s).
    args.rate_limit_per_sec = 0.01;
    args.rate_limit_burst = 3;
    args.rate_limit_viewer_burst = Some(2);
    args.rate_limit_admin_burst = Some(5);
    let shipped = ServeArgs::with_defaults("127.0.0.1:0".parse().expect("addr"), String::new());
    args.rate_limit_service_per_sec = shipped.rate_limit_service_per_sec;
    args.rate_limit_service_burst = shipped.rate_limit_service_burst;
    let mut app = spawn_with(Backend::Sqlite, db, args).await;

    let viewer = app.token("acme", "viewer", "vic");
    let developer = app.token("acme", "developer", "dana");
    let admin = app.token("acme", "admin", "ada");
    let fleet = app.token("acme", "service", "delivery-fleet");
    assert_eq!(calls_before_refusal(&mut app, &viewer, 50).await, 2);
    assert_eq!(calls_before_refusal(&mut app, &developer, 50).await, 3);
    assert_eq!(calls_before_refusal(&mut app, &admin, 50).await, 5);
    // One service account for a whole fleet: 300 workers at once, 100 times the developer's
    // burst, and none refused.
    let mut fleet_calls = tokio::task::JoinSet::new();
    for _ in 0..300 {
        let mut apps = app.apps.clone();
        let fleet = fleet.clone();
        fleet_calls.spawn(async move {
            apps.list_services(authed(&fleet, pb::ListServicesRequest {}))
                .await
                .map(drop)
        });
    }
    while let Some(result) = fleet_calls.join_next().await {
        result
            .expect("task")
            .expect("a service call within its role's limit");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_roles_own_limit_applies_to_service_principals() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut args = test_args(&db.url);
    args.rate_limit_per_sec = 0.0;
    args.rate_limit_service_per_sec = 0.01;
    args.rate_limit_service_burst = 4;
    let mut app = spawn_with(Backend::Sqlite, db, args).await;
    let fleet = app.token("acme", "service", "delivery-fleet");
    let other = app.token("acme", "service", "billing-worker");
    let developer = app.token("acme", "developer", "dana");
    assert_eq!(calls_before_refusal(&mut app, &fleet, 50).await, 4);
    assert_eq!(calls_before_refusal(&mut app, &other, 50).await, 4);
    assert_eq!(
        calls_before_refusal(&mut app, &developer, 50).await,
        50,
        "human roles unlimited here"
    );
    app.stop().await;
}
