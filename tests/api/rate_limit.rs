//! The per-principal rate limit, end to end with a tiny limit.

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
