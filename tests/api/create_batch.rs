//! Creates written together (the group commit of creates bound to an installed app), on
//! both databases: concurrent creates share a transaction, and each is answered as it would
//! be alone, with its integration, its event and its success record all written, or nothing
//! of it, whatever the other creates of its batch do.

use std::collections::{BTreeSet, HashMap};

use integration_hub::pb;
use pb::integration::State;
use tonic::Code;

use crate::fixtures::*;
use crate::helpers::{TestApp, authed};
use crate::storage_test;

/// Code and reason of an answer (`Ok` for a created integration).
fn outcome(answer: &Result<pb::Integration, tonic::Status>) -> (Code, String) {
    match answer {
        Ok(_) => (Code::Ok, String::new()),
        Err(status) => (status.code(), error_reason(status)),
    }
}

storage_test!(concurrent_creates_are_each_answered_as_alone_and_written_whole);
async fn concurrent_creates_are_each_answered_as_alone_and_written_whole(app: TestApp) {
    let p = people(&app);
    let ok = create_app(&app, &p.dana, "slack", "Slack ok").await;
    let suspended = create_app(&app, &p.dana, "slack", "Slack suspended").await;
    suspend(&app, &p.admin, &suspended.name, "audit")
        .await
        .expect("suspend");
    let rejected = create_app(&app, &p.dana, "slack", "Slack rejected").await;
    report_rejected(&app, &p.service, &rejected.name, "401 from Slack")
        .await
        .expect("report rejected");
    let github = create_app(&app, &p.dana, "github", "GitHub").await;
    let missing = format!("{}-missing", ok.name);
    let others = app.token("globex", "developer", "gina");
    let foreign = create_app(&app, &others, "slack", "Globex Slack").await;

    let (mut stream, _) = watch_live(&app, &p.viewer).await;

    let keyed = |n: usize, key: &str| {
        let mut request = integration_request(&ok, &format!("keyed {n}"));
        request.request_id = key.into();
        request
    };
    let mut requests = Vec::new();
    for n in 0..12 {
        requests.push(integration_request(&ok, &format!("plain {n}")));
        requests.push(integration_request(&suspended, &format!("suspended {n}")));
        requests.push(integration_request(&rejected, &format!("rejected {n}")));
        requests.push(integration_request_on(
            "slack",
            &github.name,
            &format!("wrong service {n}"),
        ));
        requests.push(integration_request_on(
            "slack",
            &missing,
            &format!("missing {n}"),
        ));
        requests.push(integration_request(&foreign, &format!("foreign {n}")));
        // The same key three times: one create, and its answer again for the other two.
        for _ in 0..3 {
            requests.push(keyed(n, &format!("key-{n}")));
        }
    }
    let mut calls = tokio::task::JoinSet::new();
    for (n, request) in requests.iter().enumerate() {
        let mut client = app.integrations.clone();
        let request = authed(&p.erik, request.clone());
        calls.spawn(async move { (n, client.create_integration(request).await) });
    }
    let mut answers: Vec<Option<Result<pb::Integration, tonic::Status>>> =
        (0..requests.len()).map(|_| None).collect();
    while let Some(done) = calls.join_next().await {
        let (n, answer) = done.expect("a create task");
        answers[n] = Some(answer.map(|r| r.into_inner()));
    }
    let answers: Vec<Result<pb::Integration, tonic::Status>> =
        answers.into_iter().map(|a| a.expect("answered")).collect();

    // Each refusal is the one the same create gets alone.
    for (request, answer) in requests.iter().zip(&answers) {
        if answer.is_ok() {
            continue;
        }
        let mut again = request.clone();
        if let Some(integration) = again.integration.as_mut() {
            integration.display_name.push_str(" again");
        }
        let alone = app
            .integrations
            .clone()
            .create_integration(authed(&p.erik, again))
            .await
            .map(|r| r.into_inner());
        assert!(alone.is_err(), "alone it is refused too: {request:?}");
        assert_eq!(outcome(answer), outcome(&alone), "{request:?}");
    }
    let created: Vec<&pb::Integration> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    // 12 plain, and 12 keyed each answered three times with the same integration.
    assert_eq!(created.len(), 12 + 36);
    let mut by_key: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (request, answer) in requests.iter().zip(&answers) {
        if !request.request_id.is_empty() {
            let name = answer
                .as_ref()
                .expect("a keyed create succeeds")
                .name
                .clone();
            by_key
                .entry(request.request_id.clone())
                .or_default()
                .insert(name);
        }
    }
    assert_eq!(by_key.len(), 12);
    assert!(by_key.values().all(|names| names.len() == 1), "{by_key:?}");
    let distinct: BTreeSet<String> = created.iter().map(|i| i.name.clone()).collect();
    assert_eq!(distinct.len(), 24);

    // Stored: exactly the integrations answered, each with one success record.
    let listed: BTreeSet<String> = list_integrations(&app, &p.erik, "", State::Unspecified)
        .await
        .integrations
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(listed, distinct);
    let records = all_events(
        &app,
        &p.admin,
        pb::ListAuditEventsRequest {
            action: "integration.create".into(),
            ..Default::default()
        },
    )
    .await;
    let succeeded: Vec<&str> = records
        .iter()
        .filter(|r| r.outcome == pb::audit_event::Outcome::Success as i32)
        .map(|r| r.resource.as_str())
        .collect();
    assert_eq!(
        succeeded.iter().copied().collect::<BTreeSet<_>>(),
        distinct.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );
    assert_eq!(succeeded.len(), 24, "one success record per integration");

    // And one CREATED event each.
    let events = next_events(&mut stream, 24, WAIT).await;
    let announced: BTreeSet<String> = events
        .iter()
        .filter_map(|e| e.integration.as_ref().map(|i| i.name.clone()))
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e.r#type == pb::IntegrationEventType::IntegrationCreated as i32),
        "{events:?}"
    );
    assert_eq!(announced, distinct);
}
