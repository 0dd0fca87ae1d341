//! Reads by key the read cache cannot answer, batched: concurrent GetInstalledApp,
//! GetIntegration and credential resolution reads share statements
//! (`domain/keyed_reads.rs`). Each caller gets what it would have read alone: its own
//! record, its own counts, its own credentials, and NOT_FOUND for what it may not see or
//! what does not exist, whatever else was read in the same statement.

use integration_hub::pb;
use tonic::Code;

use crate::fixtures::*;
use crate::helpers::{Backend, TestApp, TestDb, spawn_with, test_args};

/// A server whose read cache is off: every Get reads the database.
async fn spawn_uncached(backend: Backend) -> TestApp {
    let db = TestDb::new(backend).await;
    let mut args = test_args(&db.url);
    args.read_cache_ttl_ms = 0;
    spawn_with(backend, db, args).await
}

/// What a Get answered, reduced to what differs between the apps of this test.
fn seen(answer: &Result<pb::InstalledApp, tonic::Status>) -> Result<(String, i32, i32), Code> {
    match answer {
        Ok(app) => Ok((
            app.name.clone(),
            app.integration_count,
            app.active_integration_count,
        )),
        Err(status) => Err(status.code()),
    }
}

crate::storage_test!(@with concurrent_uncached_gets_each_read_their_own_app, [], super::spawn_uncached);
async fn concurrent_uncached_gets_each_read_their_own_app(app: TestApp) {
    let p = people(&app);
    let three = create_app(&app, &p.dana, "slack", "Slack three").await;
    create_integrations(&app, &p.dana, &three, "three", 3).await;
    let rejected = create_app(&app, &p.dana, "slack", "Slack rejected").await;
    create_integrations(&app, &p.dana, &rejected, "rejected", 2).await;
    report_rejected(&app, &p.service, &rejected.name, "401 from Slack")
        .await
        .expect("report rejected");
    let empty = create_app(&app, &p.dana, "github", "GitHub empty").await;
    let globex = app.token("globex", "developer", "gina");
    let foreign = create_app(&app, &globex, "slack", "Globex Slack").await;
    create_integrations(&app, &globex, &foreign, "foreign", 1).await;
    let missing = format!("{}-missing", three.name);

    // Who asks for what, and what it reads alone.
    let asks = [
        (p.viewer.clone(), three.name.clone()),
        (p.viewer.clone(), rejected.name.clone()),
        (p.viewer.clone(), empty.name.clone()),
        (globex.clone(), foreign.name.clone()),
        (p.viewer.clone(), foreign.name.clone()),
        (globex.clone(), three.name.clone()),
        (p.viewer.clone(), missing.clone()),
    ];
    let mut alone = Vec::new();
    for (token, name) in &asks {
        alone.push(seen(&get_app(&app, token, name).await));
    }
    assert_eq!(
        alone,
        vec![
            Ok((three.name.clone(), 3, 3)),
            Ok((rejected.name.clone(), 2, 0)),
            Ok((empty.name.clone(), 0, 0)),
            Ok((foreign.name.clone(), 1, 1)),
            Err(Code::NotFound),
            Err(Code::NotFound),
            Err(Code::NotFound),
        ],
        "each read alone"
    );

    // Many at once, interleaved: they share statements.
    let mut calls = tokio::task::JoinSet::new();
    for round in 0..24 {
        for (n, (token, name)) in asks.iter().enumerate() {
            let mut client = app.apps.clone();
            let request =
                crate::helpers::authed(token, pb::GetInstalledAppRequest { name: name.clone() });
            calls.spawn(async move {
                (
                    round,
                    n,
                    client
                        .get_installed_app(request)
                        .await
                        .map(|r| r.into_inner()),
                )
            });
        }
    }
    let mut answered = 0;
    while let Some(done) = calls.join_next().await {
        let (round, n, answer) = done.expect("a get task");
        assert_eq!(
            seen(&answer),
            alone[n],
            "round {round}, ask {n}: the same answer as alone"
        );
        answered += 1;
    }
    assert_eq!(answered, 24 * asks.len());
}

crate::storage_test!(@with concurrent_uncached_integration_gets_each_read_their_own, [], super::spawn_uncached);
async fn concurrent_uncached_integration_gets_each_read_their_own(app: TestApp) {
    let p = people(&app);
    let slack = create_app(&app, &p.dana, "slack", "Slack").await;
    let ours = create_integrations(&app, &p.dana, &slack, "ours", 5).await;
    let globex = app.token("globex", "developer", "gina");
    let foreign_app = create_app(&app, &globex, "slack", "Globex Slack").await;
    let foreign = create_integrations(&app, &globex, &foreign_app, "foreign", 2).await;

    let mut asks: Vec<(String, String, Result<String, Code>)> = Vec::new();
    for integration in &ours {
        let expected = Ok(integration.display_name.clone());
        asks.push((p.viewer.clone(), integration.name.clone(), expected));
        asks.push((
            globex.clone(),
            integration.name.clone(),
            Err(Code::NotFound),
        ));
    }
    for integration in &foreign {
        let expected = Ok(integration.display_name.clone());
        asks.push((globex.clone(), integration.name.clone(), expected));
        asks.push((
            p.viewer.clone(),
            integration.name.clone(),
            Err(Code::NotFound),
        ));
    }
    let missing = format!("{}-missing", ours[0].name);
    asks.push((p.viewer.clone(), missing, Err(Code::NotFound)));

    let mut calls = tokio::task::JoinSet::new();
    for round in 0..16 {
        for (n, (token, name, _)) in asks.iter().enumerate() {
            let mut client = app.integrations.clone();
            let request =
                crate::helpers::authed(token, pb::GetIntegrationRequest { name: name.clone() });
            calls.spawn(async move {
                let answer = client.get_integration(request).await;
                (round, n, answer.map(|r| r.into_inner()))
            });
        }
    }
    let mut answered = 0;
    while let Some(done) = calls.join_next().await {
        let (round, n, answer) = done.expect("a get task");
        let (_, name, expected) = &asks[n];
        let got = match answer {
            Ok(integration) => {
                assert_eq!(
                    &integration.name, name,
                    "round {round}: its own integration"
                );
                Ok(integration.display_name)
            }
            Err(status) => Err(status.code()),
        };
        assert_eq!(&got, expected, "round {round}, ask {n} ({name})");
        answered += 1;
    }
    assert_eq!(answered, 16 * asks.len());
}

crate::storage_test!(@with concurrent_uncached_resolutions_each_hand_out_their_own_credentials, [], super::spawn_uncached);
async fn concurrent_uncached_resolutions_each_hand_out_their_own_credentials(app: TestApp) {
    let p = people(&app);
    let globex = app.token("globex", "developer", "gina");
    let globex_service = app.token("globex", "service", "globex-svc");
    let mut asks: Vec<(String, String, Result<String, Code>)> = Vec::new();
    for (n, (developer, service)) in [(&p.dana, &p.service), (&globex, &globex_service)]
        .into_iter()
        .enumerate()
    {
        for a in 0..2 {
            let secret = format!("secret-{n}-{a}");
            let slack =
                create_app_with(&app, developer, "slack", &format!("Slack {a}"), &secret).await;
            for integration in create_integrations(&app, developer, &slack, "on", 3).await {
                asks.push((
                    service.clone(),
                    integration.name.clone(),
                    Ok(secret.clone()),
                ));
                // Another team's service: exactly as a missing integration.
                let other = if n == 0 { &globex_service } else { &p.service };
                asks.push((other.clone(), integration.name, Err(Code::NotFound)));
            }
        }
    }

    let mut calls = tokio::task::JoinSet::new();
    for round in 0..8 {
        for (n, (token, name, _)) in asks.iter().enumerate() {
            let mut client = app.integrations.clone();
            let request = crate::helpers::authed(
                token,
                pb::ResolveIntegrationCredentialsRequest { name: name.clone() },
            );
            calls.spawn(async move {
                let answer = client.resolve_integration_credentials(request).await;
                (round, n, answer.map(|r| r.into_inner()))
            });
        }
    }
    let mut answered = 0;
    while let Some(done) = calls.join_next().await {
        let (round, n, answer) = done.expect("a resolve task");
        let (_, name, expected) = &asks[n];
        let got = match answer {
            Ok(resolved) => {
                let integration = resolved.integration.expect("its integration");
                assert_eq!(
                    &integration.name, name,
                    "round {round}: its own integration"
                );
                Ok(resolved.credentials["access_token"].clone())
            }
            Err(status) => Err(status.code()),
        };
        assert_eq!(&got, expected, "round {round}, ask {n} ({name})");
        answered += 1;
    }
    assert_eq!(answered, 8 * asks.len());
}
