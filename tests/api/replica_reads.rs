//! The read cache across replicas (two server processes on one database): a change a
//! replica acknowledged is never resolved by another, a replica reads its own writes at once,
//! and another replica's Get and List catch up within the documented bound.

use std::time::{Duration, Instant};

use integration_hub::pb;
use tonic::Code;

use crate::fixtures::{
    Clients, TEAM, create_app, create_integration, credentials, delete_app, get_app,
    get_integration, rename_app_request, report_rejected, resolve, suspend, update_credentials,
};
use crate::helpers::{Backend, authed, token};
use crate::process::{Server, ServerProcess};
use crate::storage_test;

type Replica = (
    pb::installed_app_service_client::InstalledAppServiceClient<tonic::transport::Channel>,
    pb::integration_service_client::IntegrationServiceClient<tonic::transport::Channel>,
);

/// Two replicas on one database; the second keeps reads for a minute, so only what
/// the service does on a change (the checked resolution, the events) keeps it current.
fn two_replicas(server: Server) -> (ServerProcess, ServerProcess) {
    let a = server.start();
    let b = server
        .env("INTEGRATION_HUB_READ_CACHE_TTL_MS", "60000")
        .start();
    (a, b)
}

fn dev() -> String {
    token(TEAM, "developer", "dana")
}

fn admin() -> String {
    token(TEAM, "admin", "ada")
}

fn service() -> String {
    token(TEAM, "service", "runner")
}

async fn secrets_changed_on_one_replica_are_never_resolved_by_another(server: Server) {
    let (a, b) = two_replicas(server);
    let (a, b) = (a.clients().await, b.clients().await);
    for change in ["delete", "suspend", "reject", "replace"] {
        let app = create_app(&a, &dev(), "slack", &format!("Slack {change}")).await;
        let job = create_integration(&a, &dev(), &app, "Job").await;
        // B reads (and keeps) the app's credentials, twice.
        for _ in 0..2 {
            let resolved = resolve(&b, &service(), &job.name).await.expect("resolve");
            assert_eq!(
                resolved.credentials["access_token"],
                format!("slack-secret-of-Slack {change}")
            );
        }
        match change {
            "delete" => {
                delete_app(&a, &admin(), &app.name, "", false)
                    .await
                    .expect("delete");
            }
            "suspend" => suspend(&a, &admin(), &app.name, "leaked")
                .await
                .map(drop)
                .expect("suspend"),
            "reject" => report_rejected(&a, &service(), &app.name, "401")
                .await
                .map(drop)
                .expect("reject"),
            _ => {
                a.apps()
                    .update_installed_app(authed(
                        &admin(),
                        update_credentials(&app.name, credentials("xoxb-new")),
                    ))
                    .await
                    .expect("replace");
            }
        }
        // Acknowledged by A: B, asked at once, never answers the old credentials.
        let after = resolve(&b, &service(), &job.name).await;
        match (change, after) {
            ("replace", Ok(resolved)) => {
                assert_eq!(resolved.credentials["access_token"], "xoxb-new");
            }
            ("replace", Err(status)) => panic!("replace: {status:?}"),
            (_, Ok(_)) => panic!("{change}: B resolved credentials A had taken away"),
            (_, Err(status)) => assert_eq!(status.code(), Code::FailedPrecondition, "{change}"),
        }
    }
}

storage_test!(process secrets_changed_on_one_replica_are_never_resolved_by_another);

/// Polls `read` until it answers `wanted`; the time it took, or a failure after `within`.
async fn until<F: AsyncFn() -> bool>(read: F, within: Duration) -> Duration {
    let start = Instant::now();
    while !read().await {
        assert!(
            start.elapsed() < within,
            "not seen within {within:?}: the replica kept an outdated read"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

async fn another_replicas_reads_catch_up_with_its_events(server: Server) {
    let backend = server.backend();
    let (a, b) = two_replicas(server);
    let (a, b) = (a.clients().await, b.clients().await);
    let viewer = token(TEAM, "viewer", "vic");
    let app = create_app(&a, &dev(), "slack", "Slack").await;
    let job = create_integration(&a, &dev(), &app, "Job").await;
    // Both replicas read and keep the app, the integration and the listing.
    for replica in [&a, &b] {
        get_app(replica, &viewer, &app.name).await.expect("get");
        get_integration(replica, &viewer, &job.name)
            .await
            .expect("get");
    }
    let listed = |replica: &Replica| {
        let replica = replica.clone();
        let viewer = viewer.clone();
        async move {
            replica
                .integrations()
                .list_integrations(authed(&viewer, pb::ListIntegrationsRequest::default()))
                .await
                .expect("list")
                .into_inner()
                .integrations
                .len()
        }
    };
    assert_eq!(listed(&b).await, 1);

    // A renames the app and adds an integration: A reads its own writes at once.
    let renamed = a
        .apps()
        .update_installed_app(authed(&dev(), rename_app_request(&app.name, "Renamed")))
        .await
        .expect("rename")
        .into_inner();
    create_integration(&a, &dev(), &app, "Second").await;
    let on_a = get_app(&a, &viewer, &app.name).await.expect("get");
    assert_eq!(
        (on_a.display_name.as_str(), on_a.etag.as_str()),
        ("Renamed", renamed.etag.as_str())
    );
    assert_eq!(on_a.integration_count, 2);
    assert_eq!(listed(&a).await, 2);

    // B, which keeps reads for a minute, sees both as soon as their events reach it.
    let took = until(
        async || {
            get_app(&b, &viewer, &app.name)
                .await
                .is_ok_and(|got| got.display_name == "Renamed" && got.integration_count == 2)
        },
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(listed(&b).await, 2);
    println!("{backend:?}: B saw A's change after {took:?}");

    // A change that is no event (the last use, recorded by a resolution on A) reaches B
    // within B's time to live: here a minute, so B still shows its kept read.
    let before = get_integration(&b, &viewer, &job.name).await.expect("get");
    assert_eq!(before.last_used_time, None);
    resolve(&a, &service(), &job.name).await.expect("resolve");
    let used_on_a = get_integration(&a, &viewer, &job.name).await.expect("get");
    assert!(used_on_a.last_used_time.is_some());
    let kept = get_integration(&b, &viewer, &job.name).await.expect("get");
    assert_eq!(kept.last_used_time, None, "B answers its kept read");
}

storage_test!(process another_replicas_reads_catch_up_with_its_events);

/// With the default time to live (one second), even a change that is no event reaches
/// another replica within it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_without_an_event_reaches_another_replica_within_the_time_to_live() {
    crate::needs!(Postgres);
    let server = Server::fresh(Backend::Postgres).await;
    let (a, b) = (server.start(), server.start());
    let (a, b) = (a.clients().await, b.clients().await);
    let viewer = token(TEAM, "viewer", "vic");
    let app = create_app(&a, &dev(), "slack", "Slack").await;
    let job = create_integration(&a, &dev(), &app, "Job").await;
    let kept = get_integration(&b, &viewer, &job.name).await.expect("get");
    assert_eq!(kept.last_used_time, None);
    resolve(&a, &service(), &job.name).await.expect("resolve");
    let took = until(
        async || {
            get_integration(&b, &viewer, &job.name)
                .await
                .is_ok_and(|got| got.last_used_time.is_some())
        },
        Duration::from_millis(2500),
    )
    .await;
    println!("the last use reached B after {took:?}");
}
