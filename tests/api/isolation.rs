//! Team isolation (rule 7 of docs/rules.md): another team's record answers exactly as a missing one
//! does, a `parent` of another team is refused, and a watcher sees only its own team's events.

use std::future::Future;

use integration_hub::pb;
use pb::reauthenticate_integration_request::Auth;
use tonic::{Code, Status};

use crate::fixtures::{
    CALL_TIMEOUT, app_request, create_app, create_app_with, create_integration, credentials,
    delete_app, error_reason, get_app, get_integration, integration_request_on, rename_app_request,
    rename_integration, rename_integration_request, seq, violated_fields,
};
use crate::helpers::{TestApp, authed, token};
use crate::storage_test;

const A: &str = "team-a";
const B: &str = "team-b";

/// Team A's records that team B tries to reach.
struct TeamA {
    installed_app: String,
    /// Bound to `installed_app`, ACTIVE.
    integration: String,
    /// The app `broken` used; deleted.
    deleted_app: String,
    /// BROKEN(INSTALLED_APP_DELETED).
    broken: String,
}

/// Team B's own records, to aim references at team A from.
struct TeamB {
    installed_app: String,
    /// The app `broken` used; deleted.
    deleted_app: String,
    /// BROKEN(INSTALLED_APP_DELETED).
    broken: String,
}

async fn team_a(app: &TestApp) -> TeamA {
    let dev = token(A, "developer", "alice");
    let admin = token(A, "admin", "anna");
    let installed = create_app_with(app, &dev, "slack", "A Slack", "xoxb-fixture").await;
    let integration = create_integration(app, &dev, &installed, "A job").await;
    let doomed = create_app(app, &dev, "slack", "A old Slack").await;
    let broken = create_integration(app, &dev, &doomed, "A broken job").await;
    assert_eq!(
        delete_app(app, &admin, &doomed.name, "", false)
            .await
            .expect("delete installed app"),
        vec![broken.name.clone()]
    );
    TeamA {
        installed_app: installed.name,
        integration: integration.name,
        deleted_app: doomed.name,
        broken: broken.name,
    }
}

async fn team_b(app: &TestApp) -> TeamB {
    let dev = token(B, "developer", "bob");
    let admin = token(B, "admin", "bea");
    let installed = create_app(app, &dev, "slack", "B Slack").await;
    create_integration(app, &dev, &installed, "B job").await;
    let doomed = create_app(app, &dev, "slack", "B old Slack").await;
    let broken = create_integration(app, &dev, &doomed, "B broken job").await;
    assert_eq!(
        delete_app(app, &admin, &doomed.name, "", false)
            .await
            .expect("delete installed app"),
        vec![broken.name.clone()]
    );
    TeamB {
        installed_app: installed.name,
        deleted_app: doomed.name,
        broken: broken.name,
    }
}

/// Everything team A has, as its own viewer reads it.
#[derive(Debug, PartialEq)]
struct Snapshot {
    apps: Vec<pb::InstalledApp>,
    integrations: Vec<pb::Integration>,
}

async fn snapshot(app: &TestApp, team: &str) -> Snapshot {
    let viewer = token(team, "viewer", "victor");
    let apps = app
        .apps
        .clone()
        .list_installed_apps(authed(
            &viewer,
            pb::ListInstalledAppsRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect("list apps")
        .into_inner();
    let integrations = app
        .integrations
        .clone()
        .list_integrations(authed(
            &viewer,
            pb::ListIntegrationsRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect("list integrations")
        .into_inner();
    assert!(apps.next_page_token.is_empty() && integrations.next_page_token.is_empty());
    Snapshot {
        apps: apps.installed_apps,
        integrations: integrations.integrations,
    }
}

fn missing_app() -> String {
    format!("teams/{A}/installedApps/{}", uuid::Uuid::new_v4().simple())
}

fn missing_integration() -> String {
    format!("teams/{A}/integrations/{}", uuid::Uuid::new_v4().simple())
}

/// What a client can tell from an error: code, reason, violated fields, and the message with
/// the addressed name (and its id) blanked out.
fn observable(status: &Status, name: &str) -> (Code, String, Vec<String>, String) {
    let id = name.rsplit('/').next().unwrap_or(name);
    let message = status.message().replace(name, "<name>").replace(id, "<id>");
    (
        status.code(),
        error_reason(status),
        violated_fields(status),
        message,
    )
}

/// Calls `attempt` with team A's existing `name` and with a name that does not exist in team
/// A; both must fail, alike. Returns the answer to the existing name.
async fn same_as_missing<T, F, Fut>(what: &str, existing: &str, missing: &str, attempt: F) -> Status
where
    T: std::fmt::Debug,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let timed = |name: String| {
        let call = attempt(name);
        async move {
            tokio::time::timeout(CALL_TIMEOUT, call)
                .await
                .unwrap_or_else(|_| panic!("{what}: no answer in time"))
        }
    };
    let to_existing = timed(existing.to_owned()).await.expect_err(what);
    let to_missing = timed(missing.to_owned()).await.expect_err(what);
    assert_eq!(
        observable(&to_existing, existing),
        observable(&to_missing, missing),
        "{what}: another team's record must answer as a missing one\n existing: {to_existing:?}\n missing: {to_missing:?}"
    );
    to_existing
}

/// `same_as_missing`, and the answer is NOT_FOUND.
async fn not_found_as_missing<T, F, Fut>(what: &str, existing: &str, missing: &str, attempt: F)
where
    T: std::fmt::Debug,
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let status = same_as_missing(what, existing, missing, attempt).await;
    assert_not_found(&status, what);
}

#[track_caller]
fn assert_not_found(status: &Status, what: &str) {
    assert_eq!(status.code(), Code::NotFound, "{what}: {status:?}");
    assert_eq!(error_reason(status), "NOT_FOUND", "{what}: {status:?}");
}

async fn another_teams_app_answers_as_a_missing_one_and_stays_unchanged(app: TestApp) {
    let a = team_a(&app).await;
    team_b(&app).await;
    let before = snapshot(&app, A).await;
    let viewer_b = token(B, "viewer", "vic");
    let admin_b = token(B, "admin", "bea");
    let service_b = token(B, "service", "worker-b");
    let missing = missing_app();

    not_found_as_missing("GetInstalledApp", &a.installed_app, &missing, |name| {
        let mut apps = app.apps.clone();
        let t = viewer_b.clone();
        async move {
            apps.get_installed_app(authed(&t, pb::GetInstalledAppRequest { name }))
                .await
        }
    })
    .await;

    not_found_as_missing(
        "UpdateInstalledApp rename",
        &a.installed_app,
        &missing,
        |name| {
            let mut apps = app.apps.clone();
            let t = admin_b.clone();
            async move {
                apps.update_installed_app(authed(&t, rename_app_request(&name, "Taken over")))
                    .await
            }
        },
    )
    .await;

    not_found_as_missing(
        "UpdateInstalledApp credentials",
        &a.installed_app,
        &missing,
        |name| {
            let mut apps = app.apps.clone();
            let t = admin_b.clone();
            async move {
                apps.update_installed_app(authed(
                    &t,
                    pb::UpdateInstalledAppRequest {
                        installed_app: Some(pb::InstalledApp {
                            name,
                            ..Default::default()
                        }),
                        credentials: credentials("xoxb-takeover"),
                        ..Default::default()
                    },
                ))
                .await
            }
        },
    )
    .await;

    for validate_only in [true, false] {
        let what = format!("DeleteInstalledApp validate_only={validate_only}");
        not_found_as_missing(&what, &a.installed_app, &missing, |name| {
            let mut apps = app.apps.clone();
            let t = admin_b.clone();
            async move {
                apps.delete_installed_app(authed(
                    &t,
                    pb::DeleteInstalledAppRequest {
                        name,
                        validate_only,
                        ..Default::default()
                    },
                ))
                .await
            }
        })
        .await;
    }

    not_found_as_missing(
        "ReportCredentialsRejected",
        &a.installed_app,
        &missing,
        |name| {
            let mut apps = app.apps.clone();
            let t = service_b.clone();
            async move {
                apps.report_credentials_rejected(authed(
                    &t,
                    pb::ReportCredentialsRejectedRequest {
                        name,
                        detail: "401".into(),
                    },
                ))
                .await
            }
        },
    )
    .await;

    assert_eq!(snapshot(&app, A).await, before, "team A is unchanged");
}
storage_test!(another_teams_app_answers_as_a_missing_one_and_stays_unchanged);

async fn another_teams_integration_answers_as_a_missing_one_and_stays_unchanged(app: TestApp) {
    let a = team_a(&app).await;
    let b = team_b(&app).await;
    let before = snapshot(&app, A).await;
    let viewer_b = token(B, "viewer", "vic");
    let dev_b = token(B, "developer", "bob");
    let service_b = token(B, "service", "worker-b");

    // The active and the broken one: neither existence nor state may show through.
    for existing in [&a.integration, &a.broken] {
        let missing = missing_integration();

        not_found_as_missing("GetIntegration", existing, &missing, |name| {
            let mut integrations = app.integrations.clone();
            let t = viewer_b.clone();
            async move {
                integrations
                    .get_integration(authed(&t, pb::GetIntegrationRequest { name }))
                    .await
            }
        })
        .await;

        not_found_as_missing("UpdateIntegration", existing, &missing, |name| {
            let mut integrations = app.integrations.clone();
            let t = dev_b.clone();
            async move {
                integrations
                    .update_integration(authed(&t, rename_integration_request(&name, "Taken over")))
                    .await
            }
        })
        .await;

        not_found_as_missing("DeleteIntegration", existing, &missing, |name| {
            let mut integrations = app.integrations.clone();
            let t = dev_b.clone();
            async move {
                integrations
                    .delete_integration(authed(
                        &t,
                        pb::DeleteIntegrationRequest {
                            name,
                            ..Default::default()
                        },
                    ))
                    .await
            }
        })
        .await;

        not_found_as_missing(
            "ReauthenticateIntegration onto an app of the caller",
            existing,
            &missing,
            |name| {
                let mut integrations = app.integrations.clone();
                let t = dev_b.clone();
                let to = b.installed_app.clone();
                async move {
                    integrations
                        .reauthenticate_integration(authed(
                            &t,
                            pb::ReauthenticateIntegrationRequest {
                                name,
                                auth: Some(Auth::InstalledApp(to)),
                            },
                        ))
                        .await
                }
            },
        )
        .await;

        not_found_as_missing(
            "ReauthenticateIntegration with credentials",
            existing,
            &missing,
            |name| {
                let mut integrations = app.integrations.clone();
                let t = dev_b.clone();
                async move {
                    integrations
                        .reauthenticate_integration(authed(
                            &t,
                            pb::ReauthenticateIntegrationRequest {
                                name,
                                auth: Some(Auth::Credentials(pb::Credentials {
                                    values: credentials("xoxb-takeover"),
                                })),
                            },
                        ))
                        .await
                }
            },
        )
        .await;

        not_found_as_missing(
            "ResolveIntegrationCredentials",
            existing,
            &missing,
            |name| {
                let mut integrations = app.integrations.clone();
                let t = service_b.clone();
                async move {
                    integrations
                        .resolve_integration_credentials(authed(
                            &t,
                            pb::ResolveIntegrationCredentialsRequest { name },
                        ))
                        .await
                }
            },
        )
        .await;
    }

    assert_eq!(snapshot(&app, A).await, before, "team A is unchanged");
}
storage_test!(another_teams_integration_answers_as_a_missing_one_and_stays_unchanged);

async fn a_reference_to_another_teams_app_answers_as_a_reference_to_a_missing_one(app: TestApp) {
    let a = team_a(&app).await;
    let b = team_b(&app).await;
    let before_a = snapshot(&app, A).await;
    let before_b = snapshot(&app, B).await;
    let dev_b = token(B, "developer", "bob");
    let viewer_b = token(B, "viewer", "vic");
    let missing = missing_app();

    not_found_as_missing(
        "CreateIntegration on another team's app",
        &a.installed_app,
        &missing,
        |installed_app| {
            let mut integrations = app.integrations.clone();
            let t = dev_b.clone();
            async move {
                integrations
                    .create_integration(authed(
                        &t,
                        integration_request_on("slack", &installed_app, "Borrowed"),
                    ))
                    .await
            }
        },
    )
    .await;

    not_found_as_missing(
        "ReauthenticateIntegration onto another team's app",
        &a.installed_app,
        &missing,
        |installed_app| {
            let mut integrations = app.integrations.clone();
            let t = dev_b.clone();
            let name = b.broken.clone();
            async move {
                integrations
                    .reauthenticate_integration(authed(
                        &t,
                        pb::ReauthenticateIntegrationRequest {
                            name,
                            auth: Some(Auth::InstalledApp(installed_app)),
                        },
                    ))
                    .await
            }
        },
    )
    .await;

    // A bulk rebind from one app to another, as team B's developer.
    let rebind = |from_installed_app: String, to_installed_app: String| {
        let mut integrations = app.integrations.clone();
        let t = dev_b.clone();
        async move {
            integrations
                .reauthenticate_integrations(authed(
                    &t,
                    pb::ReauthenticateIntegrationsRequest {
                        parent: String::new(),
                        from_installed_app,
                        to_installed_app,
                    },
                ))
                .await
        }
    };
    not_found_as_missing(
        "ReauthenticateIntegrations onto another team's app",
        &a.installed_app,
        &missing,
        |to_installed_app| rebind(b.deleted_app.clone(), to_installed_app),
    )
    .await;
    not_found_as_missing(
        "ReauthenticateIntegrations from another team's deleted app",
        &a.deleted_app,
        &missing,
        |from_installed_app| rebind(from_installed_app, b.installed_app.clone()),
    )
    .await;

    same_as_missing(
        "ListIntegrations filtered by another team's app",
        &a.installed_app,
        &missing,
        |installed_app| {
            let mut integrations = app.integrations.clone();
            let t = viewer_b.clone();
            async move {
                integrations
                    .list_integrations(authed(
                        &t,
                        pb::ListIntegrationsRequest {
                            installed_app,
                            ..Default::default()
                        },
                    ))
                    .await
            }
        },
    )
    .await;

    assert_eq!(snapshot(&app, A).await, before_a, "team A is unchanged");
    assert_eq!(snapshot(&app, B).await, before_b, "team B is unchanged");
}
storage_test!(a_reference_to_another_teams_app_answers_as_a_reference_to_a_missing_one);

#[track_caller]
fn assert_denied<T: std::fmt::Debug>(result: Result<T, Status>, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::PermissionDenied, "{what}: {status:?}");
    assert_eq!(
        error_reason(&status),
        "PERMISSION_DENIED",
        "{what}: {status:?}"
    );
}

async fn a_parent_of_another_team_is_refused(app: TestApp) {
    let a = team_a(&app).await;
    team_b(&app).await;
    let before = snapshot(&app, A).await;
    let viewer_b = token(B, "viewer", "vic");
    let dev_b = token(B, "developer", "bob");
    let mut apps = app.apps.clone();
    let mut integrations = app.integrations.clone();

    // An existing team, a team nobody has, and every team: the same refusal.
    for parent in [
        format!("teams/{A}"),
        "teams/team-zzz".to_owned(),
        "teams/-".to_owned(),
    ] {
        assert_denied(
            apps.list_installed_apps(authed(
                &viewer_b,
                pb::ListInstalledAppsRequest {
                    parent: parent.clone(),
                    ..Default::default()
                },
            ))
            .await,
            &format!("ListInstalledApps {parent}"),
        );
        assert_denied(
            integrations
                .list_integrations(authed(
                    &viewer_b,
                    pb::ListIntegrationsRequest {
                        parent: parent.clone(),
                        ..Default::default()
                    },
                ))
                .await,
            &format!("ListIntegrations {parent}"),
        );
        let mut create_app = app_request("slack", "Planted", "xoxb-planted");
        create_app.parent = parent.clone();
        assert_denied(
            apps.create_installed_app(authed(&dev_b, create_app)).await,
            &format!("CreateInstalledApp {parent}"),
        );
        let mut create_integration = integration_request_on("slack", &a.installed_app, "Planted");
        create_integration.parent = parent.clone();
        assert_denied(
            integrations
                .create_integration(authed(&dev_b, create_integration))
                .await,
            &format!("CreateIntegration {parent}"),
        );
        assert_denied(
            integrations
                .reauthenticate_integrations(authed(
                    &dev_b,
                    pb::ReauthenticateIntegrationsRequest {
                        parent: parent.clone(),
                        from_installed_app: a.deleted_app.clone(),
                        to_installed_app: a.installed_app.clone(),
                    },
                ))
                .await,
            &format!("ReauthenticateIntegrations {parent}"),
        );
        assert_denied(
            integrations
                .watch_integration_events(authed(
                    &viewer_b,
                    pb::WatchIntegrationEventsRequest {
                        parent: parent.clone(),
                        ..Default::default()
                    },
                ))
                .await,
            &format!("WatchIntegrationEvents {parent}"),
        );
    }
    assert_eq!(snapshot(&app, A).await, before, "team A is unchanged");
}
storage_test!(a_parent_of_another_team_is_refused);

async fn only_an_all_teams_service_token_resolves_credentials_of_any_team(app: TestApp) {
    let a = team_a(&app).await;
    let b_dev = token(B, "developer", "bob");
    let b_app = create_app_with(&app, &b_dev, "slack", "B Slack", "xoxb-fixture").await;
    let b_integration = create_integration(&app, &b_dev, &b_app, "B job").await;
    let all_teams = token("*", "service", "worker");
    let service_b = token(B, "service", "worker-b");
    let mut integrations = app.integrations.clone();

    // Twice each: the second answer comes from what the replica kept of the first, and
    // another team's service must be refused it all the same (below).
    for name in [&a.integration, &b_integration.name, &a.integration] {
        let resolved = integrations
            .resolve_integration_credentials(authed(
                &all_teams,
                pb::ResolveIntegrationCredentialsRequest { name: name.clone() },
            ))
            .await
            .unwrap_or_else(|e| panic!("the all-teams service resolves {name}: {e:?}"))
            .into_inner();
        assert_eq!(resolved.service, "slack");
        assert_eq!(resolved.integration.expect("integration").name, *name);
        assert_eq!(resolved.credentials, credentials("xoxb-fixture"));
    }

    let resolved = integrations
        .resolve_integration_credentials(authed(
            &service_b,
            pb::ResolveIntegrationCredentialsRequest {
                name: b_integration.name.clone(),
            },
        ))
        .await
        .expect("a team's service resolves its own team's integration")
        .into_inner();
    assert_eq!(resolved.credentials, credentials("xoxb-fixture"));

    let refused = integrations
        .resolve_integration_credentials(authed(
            &service_b,
            pb::ResolveIntegrationCredentialsRequest {
                name: a.integration.clone(),
            },
        ))
        .await
        .expect_err("team B's service resolves team A's integration");
    assert_not_found(&refused, "team B's service resolves team A's integration");
    assert!(!format!("{refused:?}").contains("xoxb-fixture"));
    // Team A's integration is as it was.
    let a_dev = token(A, "developer", "alice");
    let still = get_integration(&app, &a_dev, &a.integration)
        .await
        .expect("get integration");
    assert_eq!(still.state, pb::integration::State::Active as i32);
    assert_eq!(
        get_app(&app, &a_dev, &a.installed_app)
            .await
            .expect("get installed app")
            .integration_count,
        1
    );
}
storage_test!(only_an_all_teams_service_token_resolves_credentials_of_any_team);

type Events = tonic::Streaming<pb::WatchIntegrationEventsResponse>;

async fn watch(app: &TestApp, token: &str, parent: &str, start_cursor: &str) -> Events {
    app.integrations
        .clone()
        .watch_integration_events(authed(
            token,
            pb::WatchIntegrationEventsRequest {
                parent: parent.into(),
                start_cursor: start_cursor.into(),
                types: Vec::new(),
            },
        ))
        .await
        .expect("watch")
        .into_inner()
}

/// Reads events until one of type `last_type` about `last` arrives; returns every event read.
async fn events_until(
    stream: &mut Events,
    last: &str,
    last_type: pb::IntegrationEventType,
) -> Vec<pb::IntegrationEvent> {
    let read = async {
        let mut events = Vec::new();
        loop {
            let message = stream
                .message()
                .await
                .expect("the stream goes on")
                .expect("the stream is not over");
            for event in message.events {
                let done = event.integration_name == last && event.r#type == last_type as i32;
                events.push(event);
                if done {
                    return events;
                }
            }
        }
    };
    tokio::time::timeout(CALL_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| panic!("no {last_type:?} event for {last} in time"))
}

fn summary(events: &[pb::IntegrationEvent]) -> Vec<(String, i32)> {
    events
        .iter()
        .map(|e| (e.integration_name.clone(), e.r#type))
        .collect()
}

async fn a_watcher_sees_none_of_another_teams_events(app: TestApp) {
    use pb::IntegrationEventType::{IntegrationCreated as Created, IntegrationUpdated as Updated};
    let viewer_a = token(A, "viewer", "val");
    let viewer_b = token(B, "viewer", "vic");
    let dev_a = token(A, "developer", "alice");
    let dev_b = token(B, "developer", "bob");
    let all_teams = token("*", "service", "worker");

    // Where each view of the log starts: cursors are bound to the team (or to every team).
    let mut starts = Vec::new();
    let mut live = Vec::new();
    for (who, parent) in [(&viewer_b, ""), (&viewer_a, ""), (&all_teams, "teams/-")] {
        let mut stream = watch(&app, who, parent, "").await;
        let first = tokio::time::timeout(CALL_TIMEOUT, stream.message())
            .await
            .expect("a first message in time")
            .expect("the first message")
            .expect("a checkpoint");
        assert!(first.checkpoint && first.events.is_empty(), "{first:?}");
        starts.push(first.cursor);
        live.push(stream);
    }
    let [start, start_a, start_all] = <[String; 3]>::try_from(starts).expect("three starts");
    let mut live_b = live.swap_remove(0);
    // The same position, three different cursors; another team's is refused.
    assert_eq!(seq(&start), seq(&start_a));
    assert_ne!(start, start_a);
    assert_ne!(start, start_all);
    for (who, parent, foreign) in [
        (&viewer_a, "", &start),
        (&viewer_b, "", &start_all),
        (&all_teams, "teams/-", &start),
    ] {
        let refused = app
            .integrations
            .clone()
            .watch_integration_events(authed(
                who,
                pb::WatchIntegrationEventsRequest {
                    parent: parent.into(),
                    start_cursor: foreign.clone(),
                    types: Vec::new(),
                },
            ))
            .await
            .expect_err("another view's cursor");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    }

    let a_app = create_app(&app, &dev_a, "slack", "A Slack").await;
    let b_app = create_app(&app, &dev_b, "slack", "B Slack").await;
    let a_integration = create_integration(&app, &dev_a, &a_app, "A job").await;
    let b_integration = create_integration(&app, &dev_b, &b_app, "B job").await;
    // Team A changes again before team B's last event: it would show up in between.
    rename_integration(&app, &dev_a, &a_integration.name, "Renamed").await;
    rename_integration(&app, &dev_b, &b_integration.name, "Renamed").await;

    let only_b = vec![
        (b_integration.name.clone(), Created as i32),
        (b_integration.name.clone(), Updated as i32),
    ];
    let only_a = vec![
        (a_integration.name.clone(), Created as i32),
        (a_integration.name.clone(), Updated as i32),
    ];

    let live = events_until(&mut live_b, &b_integration.name, Updated).await;
    assert_eq!(summary(&live), only_b, "live watch of team B");

    let mut replay_b = watch(&app, &viewer_b, "", &start).await;
    let replayed = events_until(&mut replay_b, &b_integration.name, Updated).await;
    assert_eq!(summary(&replayed), only_b, "replayed watch of team B");

    let mut explicit_b = watch(&app, &viewer_b, &format!("teams/{B}"), &start).await;
    let explicit = events_until(&mut explicit_b, &b_integration.name, Updated).await;
    assert_eq!(summary(&explicit), only_b, "watch of parent teams/{B}");

    let mut replay_a = watch(&app, &viewer_a, "", &start_a).await;
    let of_a = events_until(&mut replay_a, &a_integration.name, Updated).await;
    assert_eq!(summary(&of_a), only_a, "replayed watch of team A");

    // The events exist for a watcher allowed to see both teams.
    let mut everything = watch(&app, &all_teams, "teams/-", &start_all).await;
    let all = events_until(&mut everything, &b_integration.name, Updated).await;
    assert_eq!(
        summary(&all),
        vec![
            (a_integration.name.clone(), Created as i32),
            (b_integration.name.clone(), Created as i32),
            (a_integration.name.clone(), Updated as i32),
            (b_integration.name.clone(), Updated as i32),
        ],
        "the all-teams service sees both teams"
    );
}
storage_test!(a_watcher_sees_none_of_another_teams_events);
