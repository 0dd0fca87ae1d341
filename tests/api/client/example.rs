//! The `deliver` example end to end.

use super::*;

/// The example, compiled into this binary so its delivery logic runs against the real server.
#[allow(dead_code)]
#[path = "../../../client/examples/deliver.rs"]
mod deliver_example;

async fn the_deliver_example_resolves_and_reports_rejected_credentials(app: TestApp) {
    let p = people(&app);
    let channel = Channel::from_shared(app.address.clone())
        .expect("uri")
        .connect_lazy();
    let dev = Client::new(
        channel.clone(),
        BearerAuth::from_static(&p.dana).expect("token"),
    );
    let deliverer = Client::new(channel, BearerAuth::from_static(&p.service).expect("token"));
    let start = dev
        .list_integrations(hub::pb::ListIntegrationsRequest::default())
        .await
        .expect("list")
        .event_cursor;
    let good = add_app(&dev, "Good Slack", "xoxb-works").await;
    let revoked = add_app(&dev, "Revoked Slack", "revoked-1").await;
    let g = dev
        .create_integration(integration_request(&good.name, "G", ""))
        .await
        .expect("create");
    let r = dev
        .create_integration(integration_request(&revoked.name, "R", ""))
        .await
        .expect("create");

    // CREATED G, CREATED R, and the BROKEN R the deliverer's own report causes.
    let outcomes = tokio::time::timeout(
        Duration::from_secs(30),
        deliver_example::deliver(&deliverer, Some(start), Some(3)),
    )
    .await
    .expect("three events within 30 s")
    .expect("deliver");
    use deliver_example::Outcome;
    assert_eq!(
        outcomes,
        [
            Outcome::Delivered {
                integration: g.name.clone()
            },
            Outcome::Rejected {
                integration: r.name.clone(),
                installed_app: revoked.name.clone()
            },
            Outcome::Skipped {
                integration: r.name.clone()
            },
        ]
    );
    let app_now = dev
        .get_installed_app(hub::pb::GetInstalledAppRequest {
            name: revoked.name.clone(),
        })
        .await
        .expect("get");
    assert_eq!(app_now.state(), hub::pb::installed_app::State::NeedsReauth);
    let r_now = dev
        .get_integration(hub::pb::GetIntegrationRequest { name: r.name })
        .await
        .expect("get");
    assert_eq!(
        r_now.broken_reason(),
        hub::pb::integration::BrokenReason::CredentialsRejected
    );
    let g_now = dev
        .get_integration(hub::pb::GetIntegrationRequest { name: g.name })
        .await
        .expect("get");
    assert_eq!(g_now.state(), hub::pb::integration::State::Active);
}
storage_test!(the_deliver_example_resolves_and_reports_rejected_credentials);
