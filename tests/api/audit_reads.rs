//! Audited reads: with `INTEGRATION_HUB_AUDIT_READS`, Get and List of
//! installed apps and integrations leave one record per principal, action, resource and
//! minute, also when two replicas serve the reads; without it, none. On both databases.

use integration_hub::pb;
use integration_hub::pb::audit_service_client::AuditServiceClient;

use crate::fixtures::app_request;
use crate::helpers::{authed, token};
use crate::process::{Server, ServerProcess};
use crate::storage_test;

/// The team's records of `action`: (actor, resource, minute of their time).
async fn records(server: &ServerProcess, action: &str) -> Vec<(String, String, i64)> {
    let admin = token("acme", "admin", "ada");
    let page = AuditServiceClient::new(server.channel().await)
        .list_audit_events(authed(
            &admin,
            pb::ListAuditEventsRequest {
                action: action.into(),
                page_size: 100,
                ..Default::default()
            },
        ))
        .await
        .expect("list audit events")
        .into_inner();
    page.audit_events
        .into_iter()
        .map(|e| {
            let minute = e.time.map(|t| t.seconds.div_euclid(60)).unwrap_or_default();
            (e.actor, e.resource, minute)
        })
        .collect()
}

/// Reads the app `name` and lists the team's apps, `times` each, as `subject`.
async fn read(server: &ServerProcess, subject: &str, name: &str, times: usize) {
    let (mut apps, _) = server.clients().await;
    let viewer = token("acme", "viewer", subject);
    for _ in 0..times {
        apps.get_installed_app(authed(
            &viewer,
            pb::GetInstalledAppRequest { name: name.into() },
        ))
        .await
        .expect("get");
        apps.list_installed_apps(authed(&viewer, pb::ListInstalledAppsRequest::default()))
            .await
            .expect("list");
    }
}

/// Each (actor, resource) has one record a minute: as many as the minutes the reads spanned.
fn one_a_minute(records: &[(String, String, i64)], actor: &str, resource: &str) {
    let mine: Vec<i64> = records
        .iter()
        .filter(|(a, r, _)| a == actor && r == resource)
        .map(|(_, _, minute)| *minute)
        .collect();
    let mut minutes = mine.clone();
    minutes.sort_unstable();
    minutes.dedup();
    assert!(
        !mine.is_empty() && mine.len() == minutes.len(),
        "{actor} {resource}: {records:?}"
    );
}

storage_test!(process reads_are_audited_once_a_minute_per_principal_and_resource_when_asked);
async fn reads_are_audited_once_a_minute_per_principal_and_resource_when_asked(server: Server) {
    let mut plain = server.start();
    let (mut apps, _) = plain.clients().await;
    let app = apps
        .create_installed_app(authed(
            &token("acme", "developer", "dana"),
            app_request("slack", "Read me", "xoxb-1"),
        ))
        .await
        .expect("create")
        .into_inner();
    read(&plain, "vic", &app.name, 2).await;
    assert!(
        records(&plain, "installed_app.get").await.is_empty(),
        "off by default"
    );
    plain.kill();

    let audited = server.env("INTEGRATION_HUB_AUDIT_READS", "true");
    let (one, two) = (audited.start(), audited.start());
    tokio::join!(
        read(&one, "vic", &app.name, 5),
        read(&two, "vic", &app.name, 5),
        read(&one, "wes", &app.name, 2),
    );
    let gets = records(&one, "installed_app.get").await;
    one_a_minute(&gets, "vic", &app.name);
    one_a_minute(&gets, "wes", &app.name);
    let lists = records(&one, "installed_app.list").await;
    one_a_minute(&lists, "vic", "teams/acme/installedApps");
    one_a_minute(&lists, "wes", "teams/acme/installedApps");
    // Their records are signed like every other: the chain verifies.
    let (status, out) = audited.run_command(&["audit", "verify"]);
    assert!(status.success() && out.contains("findings 0"), "{out}");
}
