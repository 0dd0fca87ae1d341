//! The connections a store keeps between statements outside transactions (instead of giving
//! each back to sqlx's pool, which tests it with one more round trip): they never starve a
//! transaction or the pool's close, and a statement cancelled midway never leaves its answer
//! for the next one.

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::join_all;
use integration_hub::store::Store;

use crate::fixtures::create_app;
use crate::helpers::TestApp;
use crate::storage_test;

fn id_of(name: &str) -> String {
    name.rsplit('/').next().expect("a name").to_owned()
}

/// A pool of two, both connections kept after overlapping reads: a write transaction and a
/// snapshot begun together still get both (without giving them back, each would wait for
/// the pool's 5 s and fail), reads go on after them, and the pool closes.
async fn kept_connections_never_starve_a_transaction_or_the_close(app: TestApp) {
    let dev = app.token("acme", "developer", "dana");
    let id = id_of(&create_app(&app, &dev, "slack", "Slack").await.name);
    let store = Store::connect(&app.db.url, 2).await.expect("store");
    for _ in 0..50 {
        for row in join_all((0..8).map(|_| store.get_app("acme", &id))).await {
            assert_eq!(row.expect("read").expect("found").id, id);
        }
        if store.pool_stats().0 == 2 {
            break;
        }
    }
    assert_eq!(
        store.pool_stats(),
        (2, 2),
        "both connections open, and idle (kept) once the reads are done"
    );
    let (write, snapshot) = tokio::join!(store.begin_write(), store.begin_snapshot());
    let write = write.expect("a write transaction begins");
    let snapshot = snapshot.expect("a snapshot begins beside it");
    drop((write, snapshot));
    let row = store.get_app("acme", &id).await.expect("read after");
    assert_eq!(row.expect("found").id, id);
    tokio::time::timeout(Duration::from_secs(20), store.close())
        .await
        .expect("the pool closes with connections kept");
}
storage_test!(kept_connections_never_starve_a_transaction_or_the_close);

/// Reads cancelled right after they start (polled once: their statement sent, not answered), each
/// followed by a read of another record: every answer is its own read's, never the
/// cancelled one's.
async fn a_cancelled_read_leaves_no_answer_for_the_next(app: TestApp) {
    let dev = app.token("acme", "developer", "dana");
    let a = id_of(&create_app(&app, &dev, "slack", "Slack A").await.name);
    let b = id_of(&create_app(&app, &dev, "slack", "Slack B").await.name);
    let store = Store::connect(&app.db.url, 4).await.expect("store");
    let (mut cancelled, mut round) = (0, 0);
    // Most reads of one poll finish in it; go on until enough were cancelled.
    while cancelled < 20 && round < 5_000 {
        round += 1;
        let (first, second) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        // Polled once, then dropped: cancelled midway (or, now and then, already done).
        if store.get_app("acme", first).now_or_never().is_none() {
            cancelled += 1;
        }
        let row = store.get_app("acme", second).await.expect("read");
        assert_eq!(&row.expect("found").id, second, "round {round}");
    }
    assert_eq!(cancelled, 20, "reads cancelled midway in {round} rounds");
    store.close().await;
}
storage_test!(a_cancelled_read_leaves_no_answer_for_the_next);
