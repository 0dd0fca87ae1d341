//! Creates written in one statement on PostgreSQL (`Store::create_integrations_in_one_statement`):
//! each writes its integration, its event and its audit record together, or, when its app
//! is not bindable or its idempotency key is taken, nothing at all, whatever the other
//! creates of the statement do.

use integration_hub::store::{
    AppRow, AppState, AuditAction, AuditFilter, AuditOutcome, AuditRow, EventRow, IntegrationRow,
    IntegrationState, NewCreate, Store,
};

use crate::helpers::{Backend, TestDb};

const TEAM: &str = "acme";

fn app(id: &str, service: &str, state: &str) -> AppRow {
    AppRow {
        id: id.into(),
        team: TEAM.into(),
        service: service.into(),
        display_name: format!("App {id}"),
        connected_to: String::new(),
        creator: "dana".into(),
        owner: "dana".into(),
        last_used_time: None,
        state: AppState::parse(state).expect("a state"),
        suspension_reason: None,
        resume_state: None,
        key_version: 1,
        credentials: vec![1, 2, 3],
        request_id: None,
        request_fingerprint: None,
        version: 1,
        create_time: 1,
        update_time: 1,
    }
}

fn integration(id: &str, app: &str, request_id: Option<&str>) -> IntegrationRow {
    IntegrationRow {
        id: id.into(),
        team: TEAM.into(),
        installed_app_id: Some(app.into()),
        service: "slack".into(),
        type_id: "slack.incoming-webhook".into(),
        display_name: format!("Integration {id}"),
        config: "{}".into(),
        state: IntegrationState::Active,
        broken_reason: None,
        broken_detail: None,
        broken_time: None,
        own_credentials: None,
        key_version: None,
        creator: "erik".into(),
        owner: "erik".into(),
        last_used_time: None,
        request_id: request_id.map(str::to_owned),
        request_fingerprint: request_id.map(|_| "fingerprint".to_owned()),
        version: 1,
        create_time: 2,
        update_time: 2,
    }
}

fn event(id: &str, app: &str) -> EventRow {
    EventRow {
        seq: 0,
        event_id: format!("event-{id}"),
        team: TEAM.into(),
        kind: "INTEGRATION_CREATED".into(),
        integration_id: id.into(),
        installed_app_id: Some(app.into()),
        reason: None,
        actor: "erik".into(),
        time: 2,
        snapshot: "{}".into(),
    }
}

fn record(id: &str) -> AuditRow {
    AuditRow {
        seq: 0,
        id: format!("audit-{id}"),
        team: TEAM.into(),
        actor: "erik".into(),
        actor_team: TEAM.into(),
        role: "developer".into(),
        action: AuditAction::IntegrationCreate,
        resource: format!("teams/{TEAM}/integrations/{id}"),
        outcome: AuditOutcome::Success,
        reason: None,
        request_id: format!("request-{id}"),
        time: 2,
    }
}

async fn store_with_apps(backend: Backend) -> (TestDb, Store) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, 4).await.expect("store");
    store.migrate().await.expect("migrate");
    let tx = store.begin_write().await.expect("begin");
    tx.insert_app(app("slack-ok", "slack", "ACTIVE"))
        .await
        .unwrap();
    tx.insert_app(app("slack-suspended", "slack", "SUSPENDED"))
        .await
        .unwrap();
    tx.insert_app(app("slack-reauth", "slack", "NEEDS_REAUTH"))
        .await
        .unwrap();
    tx.insert_app(app("github-ok", "github", "ACTIVE"))
        .await
        .unwrap();
    tx.commit().await.expect("commit");
    (db, store)
}

fn new_create(id: &str, app: &str, request_id: Option<&str>) -> NewCreate {
    NewCreate {
        row: integration(id, app, request_id),
        event: event(id, app),
        record: record(id),
    }
}

async fn create(store: &Store, creates: Vec<NewCreate>) -> Vec<bool> {
    store
        .create_integrations_in_one_statement(creates)
        .await
        .expect("the statement runs")
}

/// Integrations, events and audit records of the team, as ids.
async fn written(store: &Store) -> (Vec<String>, Vec<String>, Vec<String>) {
    let integrations = store
        .list_integrations(TEAM, &Default::default(), None, 100)
        .await
        .expect("list");
    let events = store
        .events_after(0, None, Some(TEAM), 100)
        .await
        .expect("events");
    let audit = store
        .list_audit(TEAM, &AuditFilter::default(), None, 100)
        .await
        .expect("audit");
    (
        integrations.into_iter().map(|r| r.id).collect(),
        events.into_iter().map(|e| e.event_id).collect(),
        audit.into_iter().map(|a| a.id).collect(),
    )
}

#[tokio::test]
async fn on_postgres_each_create_is_all_written_or_nothing() {
    crate::needs!(Postgres);
    let (_db, store) = store_with_apps(Backend::Postgres).await;

    assert_eq!(
        create(&store, vec![new_create("i1", "slack-ok", Some("key-1"))]).await,
        [true]
    );
    let stored = store
        .get_integration(TEAM, "i1")
        .await
        .expect("read")
        .expect("the integration is stored");
    assert_eq!(stored, integration("i1", "slack-ok", Some("key-1")));
    let events = store.events_after(0, None, Some(TEAM), 100).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].integration_id, "i1");
    assert!(events[0].seq > 0, "the event has its sequence number");

    // One statement, each create on its own: refused, and nothing of it written, when the
    // key is taken (also by an earlier create of the same statement), the app is suspended,
    // needs reauthentication, is of another service, is missing, or is another team's.
    let mut foreign = new_create("i9", "slack-ok", None);
    foreign.row.team = "other".into();
    let answers = create(
        &store,
        vec![
            new_create("i2", "slack-ok", Some("key-1")),
            new_create("i3", "slack-suspended", None),
            new_create("i4", "slack-ok", Some("key-4")),
            new_create("i5", "slack-reauth", None),
            new_create("i6", "github-ok", None),
            new_create("i7", "missing", None),
            new_create("i10", "slack-ok", Some("key-4")),
            foreign,
            new_create("i8", "slack-ok", None),
        ],
    )
    .await;
    assert_eq!(
        answers,
        [false, false, true, false, false, false, false, false, true]
    );
    let (integrations, events, audit) = written(&store).await;
    let mut integrations = integrations;
    integrations.sort();
    assert_eq!(integrations, ["i1", "i4", "i8"]);
    // The events in the order of the creates, after the earlier one.
    assert_eq!(events, ["event-i1", "event-i4", "event-i8"]);
    let mut audit = audit;
    audit.sort();
    assert_eq!(audit, ["audit-i1", "audit-i4", "audit-i8"]);
}

#[tokio::test]
async fn on_sqlite_creates_at_once_decline_and_write_nothing() {
    let (_db, store) = store_with_apps(Backend::Sqlite).await;
    assert_eq!(
        create(&store, vec![new_create("i1", "slack-ok", None)]).await,
        [false]
    );
    assert_eq!(written(&store).await, (vec![], vec![], vec![]));
}
