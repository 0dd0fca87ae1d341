//! Listings: page arguments are checked, sizes clamp, pages return every record exactly
//! once; watch arguments are checked; an oversized request fails cleanly.

use std::collections::BTreeSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use integration_hub::pb;
use tonic::Code;

use crate::fixtures::{
    CALL_TIMEOUT, TEAM, all_apps, app_request, assert_invalid, create_app, create_integration,
    create_integrations, error_reason, rename_integration,
};
use crate::helpers::{TestApp, authed, token};
use crate::storage_test;
use crate::validation::developer;

async fn page_arguments_are_checked(app: TestApp) {
    let dev = developer();
    let viewer = token(TEAM, "viewer", "vera");
    let mut apps = app.apps.clone();
    let mut integrations = app.integrations.clone();
    let installed = create_app(&app, &dev, "slack", "Slack").await;
    create_app(&app, &dev, "slack", "Slack 2").await;
    create_integration(&app, &dev, &installed, "Job 1").await;
    create_integration(&app, &dev, &installed, "Job 2").await;

    let list_apps = |page_size: i32, page_token: &str| pb::ListInstalledAppsRequest {
        page_size,
        page_token: page_token.into(),
        ..Default::default()
    };
    let list_integrations = |page_size: i32, page_token: &str| pb::ListIntegrationsRequest {
        page_size,
        page_token: page_token.into(),
        ..Default::default()
    };
    for page_size in [-1, i32::MIN] {
        assert_invalid(
            apps.list_installed_apps(authed(&viewer, list_apps(page_size, "")))
                .await,
            "page_size",
        );
        assert_invalid(
            integrations
                .list_integrations(authed(&viewer, list_integrations(page_size, "")))
                .await,
            "page_size",
        );
    }
    for garbage in [
        "garbage!",
        "AAAA",
        "cDF8aW5zdGFsbGVkQXBwc3wxfA",
        &"x".repeat(2000),
    ] {
        assert_invalid(
            apps.list_installed_apps(authed(&viewer, list_apps(1, garbage)))
                .await,
            "page_token",
        );
        assert_invalid(
            integrations
                .list_integrations(authed(&viewer, list_integrations(1, garbage)))
                .await,
            "page_token",
        );
    }

    // A token is bound to the listing and the filter it came from.
    let apps_token = apps
        .list_installed_apps(authed(&viewer, list_apps(1, "")))
        .await
        .expect("list apps")
        .into_inner()
        .next_page_token;
    let integrations_token = integrations
        .list_integrations(authed(&viewer, list_integrations(1, "")))
        .await
        .expect("list integrations")
        .into_inner()
        .next_page_token;
    assert!(!apps_token.is_empty() && !integrations_token.is_empty());
    assert_invalid(
        apps.list_installed_apps(authed(&viewer, list_apps(1, &integrations_token)))
            .await,
        "page_token",
    );
    assert_invalid(
        integrations
            .list_integrations(authed(&viewer, list_integrations(1, &apps_token)))
            .await,
        "page_token",
    );
    assert_invalid(
        integrations
            .list_integrations(authed(
                &viewer,
                pb::ListIntegrationsRequest {
                    page_size: 1,
                    page_token: integrations_token.clone(),
                    state: pb::integration::State::Active as i32,
                    ..Default::default()
                },
            ))
            .await,
        "page_token",
    );
    assert_invalid(
        integrations
            .list_integrations(authed(
                &viewer,
                pb::ListIntegrationsRequest {
                    page_size: 1,
                    page_token: integrations_token.clone(),
                    installed_app: installed.name.clone(),
                    ..Default::default()
                },
            ))
            .await,
        "page_token",
    );
    // Sealed: an edited token, or this team's token in another team's identical listing, is
    // refused; nothing of the row it names (its id) can be read from it.
    let mut edited = URL_SAFE_NO_PAD.decode(&integrations_token).expect("base64");
    let last = edited.len() - 1;
    edited[last] ^= 1;
    assert_invalid(
        integrations
            .list_integrations(authed(
                &viewer,
                list_integrations(1, &URL_SAFE_NO_PAD.encode(&edited)),
            ))
            .await,
        "page_token",
    );
    let other_team = token("globex", "viewer", "gus");
    assert_invalid(
        integrations
            .list_integrations(authed(
                &other_team,
                list_integrations(1, &integrations_token),
            ))
            .await,
        "page_token",
    );
    assert_invalid(
        apps.list_installed_apps(authed(&other_team, list_apps(1, &apps_token)))
            .await,
        "page_token",
    );
    let first_row = integrations
        .list_integrations(authed(&viewer, list_integrations(1, "")))
        .await
        .expect("list")
        .into_inner()
        .integrations
        .remove(0);
    let id = first_row.name.rsplit('/').next().expect("an id").to_owned();
    let clear = URL_SAFE_NO_PAD.decode(&integrations_token).expect("base64");
    assert!(!clear.windows(id.len()).any(|w| w == id.as_bytes()));
    // The same token with the same filter goes on.
    let second = integrations
        .list_integrations(authed(&viewer, list_integrations(1, &integrations_token)))
        .await
        .expect("the token continues its own listing")
        .into_inner();
    assert_eq!(second.integrations.len(), 1);
    assert_invalid(
        integrations
            .list_integrations(authed(
                &viewer,
                pb::ListIntegrationsRequest {
                    state: 99,
                    ..Default::default()
                },
            ))
            .await,
        "state",
    );
}
storage_test!(page_arguments_are_checked);

async fn watch_arguments_are_checked(app: TestApp) {
    let viewer = token(TEAM, "viewer", "vera");
    let mut integrations = app.integrations.clone();
    let watch = |start_cursor: &str, types: Vec<i32>| pb::WatchIntegrationEventsRequest {
        parent: String::new(),
        start_cursor: start_cursor.into(),
        types,
    };
    let ahead = crate::fixtures::cursors(Some(TEAM)).encode(1 << 40);
    for cursor in ["garbage!", "AAAAAAAAAAAAAAAA", "aWhjMQ", ahead.as_str()] {
        assert_invalid(
            integrations
                .watch_integration_events(authed(&viewer, watch(cursor, Vec::new())))
                .await,
            "start_cursor",
        );
    }
    for types in [vec![99], vec![0], vec![1, 42], vec![-1]] {
        assert_invalid(
            integrations
                .watch_integration_events(authed(&viewer, watch("", types.clone())))
                .await,
            "types",
        );
    }
    // The valid request still watches.
    let mut stream = integrations
        .watch_integration_events(authed(&viewer, watch("", vec![1, 4])))
        .await
        .expect("watch with known types")
        .into_inner();
    let first = tokio::time::timeout(CALL_TIMEOUT, stream.message())
        .await
        .expect("in time")
        .expect("a message")
        .expect("not the end");
    assert!(first.checkpoint);
}
storage_test!(watch_arguments_are_checked);

async fn a_request_over_the_size_limit_fails_cleanly_and_the_server_goes_on(app: TestApp) {
    let dev = developer();
    let mut apps = app.apps.clone();
    let mut huge = app_request("slack", "Huge", "xoxb-1");
    huge.installed_app.as_mut().expect("app").connected_to = "x".repeat(2 * 1024 * 1024);
    let status = apps
        .create_installed_app(authed(&dev, huge))
        .await
        .expect_err("a 2 MiB request");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(error_reason(&status), "RESOURCE_EXHAUSTED");
    let mut large_credentials = app_request("slack", "Huge", "xoxb-1");
    large_credentials
        .credentials
        .insert("access_token".into(), "t".repeat(1024 * 1024 + 1));
    let status = apps
        .create_installed_app(authed(&dev, large_credentials))
        .await
        .expect_err("a 1 MiB credential");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(error_reason(&status), "RESOURCE_EXHAUSTED");

    // Still serving, on the same connection and on a new one.
    apps.list_services(authed(&dev, pb::ListServicesRequest {}))
        .await
        .expect("still serving");
    let created = create_app(&app, &dev, "slack", "After").await;
    let listed = all_apps(&app, &dev).await;
    assert_eq!(
        listed.into_iter().map(|a| a.name).collect::<Vec<_>>(),
        vec![created.name],
        "only the app after the refused ones exists"
    );
    let mut fresh =
        integration_hub::pb::installed_app_service_client::InstalledAppServiceClient::connect(
            app.address.clone(),
        )
        .await
        .expect("a new connection");
    fresh
        .list_services(authed(&dev, pb::ListServicesRequest {}))
        .await
        .expect("a new connection is served");
}
storage_test!(a_request_over_the_size_limit_fails_cleanly_and_the_server_goes_on);

async fn a_page_size_above_1000_is_clamped_not_refused(app: TestApp) {
    let dev = developer();
    let mut created = BTreeSet::new();
    for i in 0..3 {
        created.insert(
            create_app(&app, &dev, "slack", &format!("Slack {i}"))
                .await
                .name,
        );
    }
    for page_size in [5000, 1001, i32::MAX] {
        let page = app
            .apps
            .clone()
            .list_installed_apps(authed(
                &dev,
                pb::ListInstalledAppsRequest {
                    page_size,
                    ..Default::default()
                },
            ))
            .await
            .expect("a large page size is accepted")
            .into_inner();
        let names: BTreeSet<String> = page.installed_apps.into_iter().map(|a| a.name).collect();
        assert_eq!(names, created, "page_size {page_size}");
        assert!(page.next_page_token.is_empty());
    }
}
storage_test!(a_page_size_above_1000_is_clamped_not_refused);

async fn pages_of_two_return_every_app_exactly_once(app: TestApp) {
    let dev = developer();
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            create_app(&app, &dev, "slack", &format!("Slack {i}"))
                .await
                .name,
        );
    }
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = app
            .apps
            .clone()
            .list_installed_apps(authed(
                &dev,
                pb::ListInstalledAppsRequest {
                    page_size: 2,
                    page_token: page_token.clone(),
                    ..Default::default()
                },
            ))
            .await
            .expect("a page")
            .into_inner();
        sizes.push(page.installed_apps.len());
        seen.extend(page.installed_apps.into_iter().map(|a| a.name));
        if page.next_page_token.is_empty() {
            break;
        }
        assert!(sizes.len() < 10, "the listing does not end");
        page_token = page.next_page_token;
    }
    assert_eq!(sizes, vec![2, 2, 2, 1]);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no app twice: {seen:?}");
    assert_eq!(
        unique,
        created.iter().collect::<BTreeSet<_>>(),
        "every app once"
    );
}
storage_test!(pages_of_two_return_every_app_exactly_once);

/// A page of integrations the read cache answers again (sent as the bytes encoded the first
/// time) is the same page, its next page too; a rename through this replica shows at once.
async fn a_page_answered_again_is_the_same_page_until_a_change(app: TestApp) {
    let dev = developer();
    let installed = create_app(&app, &dev, "slack", "Slack").await;
    let created = create_integrations(&app, &dev, &installed, "Job", 3).await;
    let page = |page_token: String| {
        let mut integrations = app.integrations.clone();
        let dev = dev.clone();
        async move {
            integrations
                .list_integrations(authed(
                    &dev,
                    pb::ListIntegrationsRequest {
                        page_size: 2,
                        page_token,
                        ..Default::default()
                    },
                ))
                .await
                .expect("a page")
                .into_inner()
        }
    };
    let first = page(String::new()).await;
    assert_eq!(first.integrations.len(), 2);
    assert!(!first.next_page_token.is_empty());
    for _ in 0..3 {
        let again = page(String::new()).await;
        assert_eq!(again.integrations, first.integrations);
        assert_eq!(again.next_page_token, first.next_page_token);
        assert!(!again.event_cursor.is_empty());
    }
    let second = page(first.next_page_token.clone()).await;
    let second_again = page(first.next_page_token.clone()).await;
    assert_eq!(second_again.integrations, second.integrations);
    assert_eq!(second.integrations.len(), 1);
    assert!(second.next_page_token.is_empty());
    let listed: Vec<_> = first
        .integrations
        .iter()
        .chain(&second.integrations)
        .collect();
    assert_eq!(listed, created.iter().collect::<Vec<_>>());

    let renamed = rename_integration(&app, &dev, &created[0].name, "Job renamed").await;
    let after = page(String::new()).await;
    assert_eq!(after.integrations[0], renamed);
    assert_eq!(after.integrations[0].display_name, "Job renamed");
    assert_eq!(after.integrations[1], first.integrations[1]);
}
storage_test!(a_page_answered_again_is_the_same_page_until_a_change);
