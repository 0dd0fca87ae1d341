//! Rule 2 of docs/rules.md: credentials never leave the service except through
//! ResolveIntegrationCredentials. Canary values go in through every write path; they must not
//! come back in any response, error or event, nor sit in the database, nor reach the logs.

use std::fmt::Debug;
use std::process::Command;
use std::time::Duration;

use integration_hub::crypto::KeyRing;
use integration_hub::pb;
use pb::reauthenticate_integration_request::Auth;
use tonic::{Code, Status};

use crate::fixtures::{
    CALL_TIMEOUT, TEAM, app_request, credentials, hex, integration_request_on,
    own_integration_request, token_of_another_secret, update_credentials, watch,
};
use crate::helpers::{Backend, TEST_SECRET, TestApp, authed, token};
use crate::process::Server;
use crate::storage_test;

fn canary() -> String {
    format!("CANARY-{}", uuid::Uuid::new_v4())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The Debug text of everything the server answered, with what it answered to.
#[derive(Default)]
struct Answers {
    canaries: Vec<String>,
    texts: Vec<(String, String)>,
}

impl Answers {
    fn canary(&mut self) -> String {
        let value = canary();
        self.canaries.push(value.clone());
        value
    }

    /// Keeps the Debug text of a response or an error; returns the response.
    fn keep<T: Debug>(
        &mut self,
        what: &str,
        result: Result<tonic::Response<T>, Status>,
    ) -> Result<T, Status> {
        self.texts.push((what.to_owned(), format!("{result:?}")));
        result.map(tonic::Response::into_inner)
    }

    fn ok<T: Debug>(&mut self, what: &str, result: Result<tonic::Response<T>, Status>) -> T {
        self.keep(what, result)
            .unwrap_or_else(|e| panic!("{what}: {e:?}"))
    }

    fn err<T: Debug>(&mut self, what: &str, result: Result<tonic::Response<T>, Status>) -> Status {
        self.keep(what, result).expect_err(what)
    }

    fn assert_clean(&self) {
        assert!(self.texts.len() >= 30, "only {} answers", self.texts.len());
        for (what, text) in &self.texts {
            for canary in &self.canaries {
                assert!(
                    !text.contains(canary.as_str()),
                    "{what} shows a credential: {text}"
                );
            }
        }
    }
}

fn resolve(name: &str) -> pb::ResolveIntegrationCredentialsRequest {
    pb::ResolveIntegrationCredentialsRequest { name: name.into() }
}

/// Resolves `name` as a service; the answer carries exactly `expected` as its access token.
async fn resolves_to(app: &TestApp, service: &str, name: &str, expected: &str, others: &[String]) {
    let resolved = app
        .integrations
        .clone()
        .resolve_integration_credentials(authed(service, resolve(name)))
        .await
        .unwrap_or_else(|e| panic!("resolve {name}: {e:?}"))
        .into_inner();
    let text = format!("{resolved:?}");
    assert!(
        text.contains(expected),
        "resolve of {name} carries its credential"
    );
    assert_eq!(
        resolved.credentials.get("access_token").map(String::as_str),
        Some(expected)
    );
    for other in others.iter().filter(|o| o.as_str() != expected) {
        assert!(
            !text.contains(other.as_str()),
            "resolve of {name} carries only its own credential"
        );
    }
}

async fn no_credential_comes_back_except_through_resolve_nor_rests_in_the_database(
    mut app: TestApp,
) {
    let dev = token(TEAM, "developer", "dana");
    let admin = token(TEAM, "admin", "ada");
    let viewer = token(TEAM, "viewer", "vera");
    let service = token(TEAM, "service", "worker");
    let mut apps = app.apps.clone();
    let mut integrations = app.integrations.clone();
    let mut seen = Answers::default();
    let app_secret = seen.canary();
    let own_secret = seen.canary();

    let start = seen
        .ok(
            "list integrations before",
            integrations
                .list_integrations(authed(&viewer, pb::ListIntegrationsRequest::default()))
                .await,
        )
        .event_cursor;
    let mut live = watch(&app, &viewer, "", &[]).await;

    // Writes carrying credentials.
    let mut create = app_request("slack", "Secret Slack", &app_secret);
    create.credentials.insert("team_id".into(), "T1".into());
    let installed = seen.ok(
        "create app",
        apps.create_installed_app(authed(&dev, create)).await,
    );
    let bound = seen.ok(
        "create bound integration",
        integrations
            .create_integration(authed(
                &dev,
                integration_request_on("slack", &installed.name, "Bound"),
            ))
            .await,
    );
    let own = seen.ok(
        "create own-credentials integration",
        integrations
            .create_integration(authed(
                &dev,
                own_integration_request("slack", "Own", &own_secret),
            ))
            .await,
    );
    assert!(own.own_credentials);

    // Reads.
    seen.ok(
        "list services",
        apps.list_services(authed(&viewer, pb::ListServicesRequest {}))
            .await,
    );
    for token in [&viewer, &dev, &admin, &service] {
        seen.ok(
            "get app",
            apps.get_installed_app(authed(
                token,
                pb::GetInstalledAppRequest {
                    name: installed.name.clone(),
                },
            ))
            .await,
        );
        seen.ok(
            "list apps",
            apps.list_installed_apps(authed(token, pb::ListInstalledAppsRequest::default()))
                .await,
        );
        for name in [&bound.name, &own.name] {
            seen.ok(
                "get integration",
                integrations
                    .get_integration(authed(
                        token,
                        pb::GetIntegrationRequest { name: name.clone() },
                    ))
                    .await,
            );
        }
        seen.ok(
            "list integrations",
            integrations
                .list_integrations(authed(token, pb::ListIntegrationsRequest::default()))
                .await,
        );
    }
    seen.ok(
        "list integrations of the app",
        integrations
            .list_integrations(authed(
                &viewer,
                pb::ListIntegrationsRequest {
                    installed_app: installed.name.clone(),
                    ..Default::default()
                },
            ))
            .await,
    );

    // The one way out.
    resolves_to(&app, &service, &bound.name, &app_secret, &seen.canaries).await;
    resolves_to(&app, &service, &own.name, &own_secret, &seen.canaries).await;
    seen.err(
        "resolve as a developer",
        integrations
            .resolve_integration_credentials(authed(&dev, resolve(&bound.name)))
            .await,
    );
    seen.err(
        "resolve as an admin",
        integrations
            .resolve_integration_credentials(authed(&admin, resolve(&own.name)))
            .await,
    );

    // Edits.
    seen.ok(
        "rename app",
        apps.update_installed_app(authed(
            &dev,
            pb::UpdateInstalledAppRequest {
                installed_app: Some(pb::InstalledApp {
                    name: installed.name.clone(),
                    display_name: "Secret Slack (renamed)".into(),
                    connected_to: "acme-corp".into(),
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["display_name".into(), "connected_to".into()],
                }),
                ..Default::default()
            },
        ))
        .await,
    );
    seen.ok(
        "update integration",
        integrations
            .update_integration(authed(
                &dev,
                pb::UpdateIntegrationRequest {
                    integration: Some(pb::Integration {
                        name: own.name.clone(),
                        display_name: "Own (renamed)".into(),
                        config: [
                            ("channel".to_owned(), "#alerts".to_owned()),
                            ("monitor_id".to_owned(), "m-2".to_owned()),
                        ]
                        .into(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["display_name".into(), "config".into()],
                    }),
                },
            ))
            .await,
    );

    // Rejection, then re-auth in place with new credentials.
    seen.ok(
        "report rejected",
        apps.report_credentials_rejected(authed(
            &service,
            pb::ReportCredentialsRejectedRequest {
                name: installed.name.clone(),
                detail: "401 invalid_auth".into(),
            },
        ))
        .await,
    );
    let refused = seen.err(
        "resolve a broken integration",
        integrations
            .resolve_integration_credentials(authed(&service, resolve(&bound.name)))
            .await,
    );
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let replaced_secret = seen.canary();
    seen.ok(
        "replace app credentials",
        apps.update_installed_app(authed(
            &dev,
            update_credentials(&installed.name, credentials(&replaced_secret)),
        ))
        .await,
    );
    resolves_to(
        &app,
        &service,
        &bound.name,
        &replaced_secret,
        &seen.canaries,
    )
    .await;

    // Delete the app; reauthenticate with credentials of its own.
    seen.ok(
        "preview delete",
        apps.delete_installed_app(authed(
            &admin,
            pb::DeleteInstalledAppRequest {
                name: installed.name.clone(),
                validate_only: true,
                ..Default::default()
            },
        ))
        .await,
    );
    seen.ok(
        "delete app",
        apps.delete_installed_app(authed(
            &admin,
            pb::DeleteInstalledAppRequest {
                name: installed.name.clone(),
                ..Default::default()
            },
        ))
        .await,
    );
    seen.ok(
        "list broken",
        integrations
            .list_integrations(authed(
                &viewer,
                pb::ListIntegrationsRequest {
                    state: pb::integration::State::Broken as i32,
                    ..Default::default()
                },
            ))
            .await,
    );
    let reauth_secret = seen.canary();
    seen.ok(
        "reauthenticate with credentials",
        integrations
            .reauthenticate_integration(authed(
                &dev,
                pb::ReauthenticateIntegrationRequest {
                    name: bound.name.clone(),
                    auth: Some(Auth::Credentials(pb::Credentials {
                        values: credentials(&reauth_secret),
                    })),
                },
            ))
            .await,
    );
    resolves_to(&app, &service, &bound.name, &reauth_secret, &seen.canaries).await;

    // Bulk rebind onto a replacement app.
    let old_secret = seen.canary();
    let old = seen.ok(
        "create old app",
        apps.create_installed_app(authed(&dev, app_request("slack", "Old Slack", &old_secret)))
            .await,
    );
    let moved = seen.ok(
        "create integration on the old app",
        integrations
            .create_integration(authed(
                &dev,
                integration_request_on("slack", &old.name, "Moved"),
            ))
            .await,
    );
    seen.ok(
        "delete old app",
        apps.delete_installed_app(authed(
            &admin,
            pb::DeleteInstalledAppRequest {
                name: old.name.clone(),
                ..Default::default()
            },
        ))
        .await,
    );
    let new_secret = seen.canary();
    let replacement = seen.ok(
        "create replacement app",
        apps.create_installed_app(authed(&dev, app_request("slack", "New Slack", &new_secret)))
            .await,
    );
    seen.ok(
        "bulk reauthenticate",
        integrations
            .reauthenticate_integrations(authed(
                &dev,
                pb::ReauthenticateIntegrationsRequest {
                    parent: String::new(),
                    from_installed_app: old.name.clone(),
                    to_installed_app: replacement.name.clone(),
                },
            ))
            .await,
    );
    resolves_to(&app, &service, &moved.name, &new_secret, &seen.canaries).await;

    // Refusals of requests that carry a credential.
    let refused_secret = seen.canary();
    let mut bad_key = credentials("xoxb-1");
    bad_key.insert("bogus".into(), refused_secret.clone());
    let mut create = app_request("slack", "Refused", "unused");
    create.credentials = bad_key.clone();
    seen.err(
        "create app with an unknown credential",
        apps.create_installed_app(authed(&dev, create)).await,
    );
    let mut create = app_request("slack", "Refused", "unused");
    create.credentials = credentials(&format!("{refused_secret}{}", "x".repeat(8192)));
    seen.err(
        "create app with a too long credential",
        apps.create_installed_app(authed(&dev, create)).await,
    );
    let mut create = app_request("slack", "Refused", &refused_secret);
    create.installed_app.as_mut().expect("app").service = "nope".into();
    seen.err(
        "create app of an unknown service",
        apps.create_installed_app(authed(&dev, create)).await,
    );
    let mut create = app_request("slack", "", &refused_secret);
    create
        .credentials
        .extend((0..25).map(|i| (format!("k{i}"), refused_secret.clone())));
    seen.err(
        "create app with many problems",
        apps.create_installed_app(authed(&dev, create)).await,
    );
    seen.err(
        "create app as a viewer",
        apps.create_installed_app(authed(
            &viewer,
            app_request("slack", "Viewer", &refused_secret),
        ))
        .await,
    );
    seen.err(
        "replace credentials with an unknown key",
        apps.update_installed_app(authed(
            &dev,
            update_credentials(&replacement.name, bad_key.clone()),
        ))
        .await,
    );
    seen.err(
        "replace credentials of another developer's app",
        apps.update_installed_app(authed(
            &token(TEAM, "developer", "dora"),
            update_credentials(&replacement.name, credentials(&refused_secret)),
        ))
        .await,
    );
    seen.err(
        "replace credentials of a deleted app",
        apps.update_installed_app(authed(
            &admin,
            update_credentials(&old.name, credentials(&refused_secret)),
        ))
        .await,
    );
    let mut own_bad = own_integration_request("slack", "Refused", "unused");
    own_bad.credentials = bad_key.clone();
    seen.err(
        "create integration with an unknown credential",
        integrations.create_integration(authed(&dev, own_bad)).await,
    );
    seen.err(
        "reauthenticate an active integration",
        integrations
            .reauthenticate_integration(authed(
                &dev,
                pb::ReauthenticateIntegrationRequest {
                    name: own.name.clone(),
                    auth: Some(Auth::Credentials(pb::Credentials {
                        values: credentials(&refused_secret),
                    })),
                },
            ))
            .await,
    );

    seen.ok(
        "delete integration",
        integrations
            .delete_integration(authed(
                &dev,
                pb::DeleteIntegrationRequest {
                    name: own.name.clone(),
                    ..Default::default()
                },
            ))
            .await,
    );

    // Every event, replayed from before the first change and as it was delivered live.
    for (what, stream) in [("replayed", None), ("live", Some(&mut live))] {
        let mut replay;
        let stream = match stream {
            Some(stream) => stream,
            None => {
                replay = integrations
                    .watch_integration_events(authed(
                        &viewer,
                        pb::WatchIntegrationEventsRequest {
                            start_cursor: start.clone(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .expect("replay")
                    .into_inner();
                &mut replay
            }
        };
        let mut types = Vec::new();
        let read = async {
            loop {
                let message = stream.message().await;
                seen.texts
                    .push((format!("{what} watch message"), format!("{message:?}")));
                let message = message.expect("the stream goes on").expect("not over");
                for event in &message.events {
                    types.push(event.r#type);
                    if event.r#type == pb::IntegrationEventType::IntegrationDeleted as i32 {
                        return;
                    }
                }
            }
        };
        tokio::time::timeout(CALL_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| panic!("{what}: the delete event did not arrive"));
        // Created x3, updated, broken x2 (rejected, deleted), restored x3, broken, deleted.
        assert_eq!(types.len(), 11, "{what}: {types:?}");
    }

    seen.assert_clean();

    // At rest.
    app.stop().await;
    let canaries: Vec<String> = seen.canaries.clone();
    match app.backend {
        Backend::Sqlite => {
            let mut all = Vec::new();
            let mut files = Vec::new();
            for entry in std::fs::read_dir(app.db.dir.path()).expect("the database directory") {
                let path = entry.expect("entry").path();
                let bytes = std::fs::read(&path).expect("read a database file");
                files.push(path.display().to_string());
                for canary in &canaries {
                    assert!(
                        !contains(&bytes, canary.as_bytes()),
                        "{} holds a credential in plaintext",
                        path.display()
                    );
                }
                all.extend(bytes);
            }
            assert!(
                files.iter().any(|f| f.ends_with("hub.db")),
                "the database file exists: {files:?}"
            );
            // The files are the database: its plain data is there.
            assert!(contains(&all, b"Secret Slack (renamed)"), "{files:?}");
        }
        Backend::Postgres => {
            let dump = postgres_text(&app.db.url).await;
            assert!(
                dump.contains("Secret Slack (renamed)"),
                "the dump holds the data"
            );
            for canary in &canaries {
                assert!(
                    !dump.contains(canary.as_str()),
                    "the database holds a credential"
                );
                assert!(
                    !dump.contains(&hex(canary.as_bytes())),
                    "the database holds a credential as bytes"
                );
            }
        }
    }
}
storage_test!(no_credential_comes_back_except_through_resolve_nor_rests_in_the_database);

/// Every row of the test database as text: `pg_dump`, or without it a cast of every row.
async fn postgres_text(url: &str) -> String {
    // The whole URL: the tests' PostgreSQL may be on any port, with a password.
    let dbname = url.to_owned();
    let dump = tokio::task::spawn_blocking(move || {
        Command::new("pg_dump")
            .args(["--no-password", "--dbname", &dbname])
            .output()
    })
    .await
    .expect("pg_dump task");
    match dump {
        Ok(output) => {
            assert!(
                output.status.success(),
                "pg_dump failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8(output.stdout).expect("a text dump")
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => every_row_as_text(url).await,
        Err(err) => panic!("pg_dump: {err}"),
    }
}

async fn every_row_as_text(url: &str) -> String {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(url).await.expect("connect");
    let backend = db.get_database_backend();
    let tables = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT table_name::text AS name FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
        ))
        .await
        .expect("list tables");
    let mut text = String::new();
    for table in tables {
        let name: String = table.try_get("", "name").expect("table name");
        let rows = db
            .query_all_raw(Statement::from_string(
                backend,
                format!("SELECT CAST(t AS text) AS row FROM \"{name}\" t"),
            ))
            .await
            .expect("read a table");
        for row in rows {
            let row: String = row.try_get("", "row").expect("row text");
            text.push_str(&row);
            text.push('\n');
        }
    }
    let _ = db.close().await;
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_a_credential_nor_a_token_reaches_the_logs() {
    let (_, keys) = KeyRing::generate(1).expect("a key");
    let mut server = Server::fresh(Backend::Sqlite)
        .await
        .keys(&keys)
        .env("RUST_LOG", "trace")
        .start();
    let channel = server.channel().await;
    let mut apps =
        pb::installed_app_service_client::InstalledAppServiceClient::new(channel.clone());
    let mut integrations = pb::integration_service_client::IntegrationServiceClient::new(channel);
    let dev = token(TEAM, "developer", "dana");
    let service = token(TEAM, "service", "worker");
    let app_secret = canary();
    let own_secret = canary();
    let refused_secret = canary();

    let installed = apps
        .create_installed_app(authed(
            &dev,
            app_request("slack", "Logged Slack", &app_secret),
        ))
        .await
        .expect("create app")
        .into_inner();
    let bound = integrations
        .create_integration(authed(
            &dev,
            integration_request_on("slack", &installed.name, "Bound"),
        ))
        .await
        .expect("create integration")
        .into_inner();
    let own = integrations
        .create_integration(authed(
            &dev,
            own_integration_request("slack", "Own", &own_secret),
        ))
        .await
        .expect("create own integration")
        .into_inner();
    for (name, secret) in [(&bound.name, &app_secret), (&own.name, &own_secret)] {
        let resolved = integrations
            .resolve_integration_credentials(authed(&service, resolve(name)))
            .await
            .expect("resolve")
            .into_inner();
        assert_eq!(resolved.credentials, credentials(secret));
    }
    let mut bad = app_request("slack", "Refused", "xoxb-1");
    bad.credentials
        .insert("bogus".into(), refused_secret.clone());
    let refused = apps
        .create_installed_app(authed(&dev, bad))
        .await
        .expect_err("an unknown credential key");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let mut bad_update = update_credentials(&installed.name, credentials("xoxb-2"));
    bad_update
        .credentials
        .insert("bogus".into(), refused_secret.clone());
    apps.update_installed_app(authed(&dev, bad_update))
        .await
        .expect_err("an unknown credential key on update");
    // A token signed with another secret is refused, and not logged either.
    let forged = token_of_another_secret();
    let unauthenticated = apps
        .list_services(authed(&forged, pb::ListServicesRequest {}))
        .await
        .expect_err("a forged token");
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);

    server.sigterm();
    let status = tokio::task::block_in_place(|| server.exit_within(Duration::from_secs(30)))
        .expect("the server exits within 30 s of SIGTERM");
    assert!(status.success(), "exit status {status:?}");

    let logs = server.logs().join("\n").into_bytes();
    let text = String::from_utf8_lossy(&logs);
    // The logs are the full trace of this run.
    for expected in [
        "\"serving\"",
        "\"level\":\"TRACE\"",
        "credentials resolved",
        "\"stopped\"",
    ] {
        assert!(text.contains(expected), "the logs have {expected}");
    }
    for (what, secret) in [
        ("the app's credential", app_secret.as_str()),
        ("the integration's credential", own_secret.as_str()),
        ("a refused credential", refused_secret.as_str()),
        ("the developer's token", dev.as_str()),
        ("the service's token", service.as_str()),
        ("a forged token", forged.as_str()),
        ("the token secret", TEST_SECRET),
        ("the encryption keys", keys.as_str()),
    ] {
        assert!(!contains(&logs, secret.as_bytes()), "the logs show {what}");
    }
    // Not even the signature part of a token alone.
    for token in [&dev, &service, &forged] {
        let signature = token.rsplit('.').next().expect("a signature");
        assert!(
            !contains(&logs, signature.as_bytes()),
            "the logs show a token signature"
        );
    }
    let key = keys.split(':').nth(1).expect("a key after its version");
    assert!(
        !contains(&logs, key.as_bytes()),
        "the logs show an encryption key"
    );
}
