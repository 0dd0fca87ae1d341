//! What a group commit checks before it writes (`Tx::record_versions`): the stored versions
//! of exactly the ids asked for, whatever their number, with the ids bound as one value.

use std::collections::{BTreeSet, HashMap};

use integration_hub::store::Store;
use sea_orm::{ConnectionTrait, Database, Statement};

use crate::fixtures::{create_app_with, create_integration};
use crate::helpers::TestApp;
use crate::storage_test;

fn id_of(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

async fn stored_versions(app: &TestApp, table: &str) -> HashMap<String, i64> {
    let db = Database::connect(&app.db.url).await.expect("db");
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT id, version FROM {table}"),
        ))
        .await
        .expect("versions");
    let _ = db.close().await;
    rows.iter()
        .map(|row| {
            (
                row.try_get::<String>("", "id").expect("id"),
                row.try_get::<i64>("", "version").expect("version"),
            )
        })
        .collect()
}

async fn versions_are_read_for_exactly_the_ids_asked(mut app: TestApp) {
    let dev = app.token("acme", "developer", "dana");
    let a = create_app_with(&app, &dev, "slack", "Slack", "xoxb-1").await;
    let b = create_app_with(&app, &dev, "slack", "Slack two", "xoxb-2").await;
    let mut integrations = Vec::new();
    for i in 0..40 {
        integrations.push(create_integration(&app, &dev, &a, &format!("Monitor {i}")).await);
    }
    let stored_integrations = stored_versions(&app, "integrations").await;
    let stored_apps = stored_versions(&app, "installed_apps").await;
    let store = Store::connect(&app.db.url, 2).await.expect("store");
    // Sets of several sizes, each with ids that match nothing (one that looks like a list
    // of several, one with quotes), asked in one statement with the apps.
    for size in [1, 2, 7, 40] {
        let mut asked: BTreeSet<&str> = integrations[..size]
            .iter()
            .map(|i| id_of(&i.name))
            .collect();
        asked.insert("missing");
        asked.insert("a','b");
        asked.insert("\"quoted\"");
        let apps: BTreeSet<&str> = [id_of(&b.name), "no such app"].into();
        let tx = store.begin_write().await.expect("tx");
        let (found, found_apps) = tx.record_versions(&asked, &apps).await.expect("versions");
        drop(tx);
        let expected: HashMap<String, i64> = integrations[..size]
            .iter()
            .map(|i| {
                let id = id_of(&i.name);
                (id.to_owned(), stored_integrations[id])
            })
            .collect();
        assert_eq!(found, expected, "{size} integrations asked");
        let b_id = id_of(&b.name);
        assert_eq!(
            found_apps,
            HashMap::from([(b_id.to_owned(), stored_apps[b_id])]),
            "the app asked for, and only it"
        );
    }
    // No app asked: none found, and the integrations still are.
    let one: BTreeSet<&str> = [id_of(&integrations[0].name)].into();
    let tx = store.begin_write().await.expect("tx");
    let (found, found_apps) = tx
        .record_versions(&one, &BTreeSet::new())
        .await
        .expect("versions");
    drop(tx);
    assert_eq!(found.len(), 1);
    assert!(found_apps.is_empty());
    store.close().await;
    app.stop().await;
}
storage_test!(versions_are_read_for_exactly_the_ids_asked);
