//! The audit chain: `integration-hub audit verify` names the first record edited,
//! deleted, reordered or inserted with SQL; the scheduled check says so in one WARN line;
//! pruning leaves a checkpoint that verifies; two replicas writing at once keep one chain per
//! team. Every test runs the built binary on both databases.

use std::time::{Duration, Instant};

use integration_hub::crypto::KeyRing;
use integration_hub::store::{Place, decode_places, encode_places};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, QueryResult, Statement};

use crate::fixtures::app_request;
use crate::helpers::{authed, test_key_spec, token};
use crate::process::{Server, ServerProcess};
use crate::storage_test;

/// Settings of a server whose chain is sealed quickly.
fn quick(server: Server) -> Server {
    server.env("INTEGRATION_HUB_AUDIT_SEAL_INTERVAL_MS", "50")
}

/// `n` installed apps created in `team`: `n` audit records.
async fn records(server: &ServerProcess, team: &str, n: usize) {
    let (mut apps, _) = server.clients().await;
    let dev = token(team, "developer", "dana");
    for i in 0..n {
        apps.create_installed_app(authed(
            &dev,
            app_request("slack", &format!("App {team} {i}"), "xoxb-1"),
        ))
        .await
        .expect("create an installed app");
    }
}

/// `audit verify` (of `team`, or of every team): whether it passed, and what it printed.
fn verify(server: &Server, team: Option<&str>) -> (bool, String) {
    let mut args = vec!["audit", "verify"];
    if let Some(team) = team {
        args.extend(["--team", team]);
    }
    let (status, out) = server.run_command(&args);
    (status.success(), out)
}

/// A number of the summary line of `audit verify`, by its label.
fn figure(out: &str, label: &str) -> u64 {
    let line = out.lines().next().unwrap_or_default();
    line.split(", ")
        .find_map(|part| part.strip_prefix(label))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{label}` in {out}"))
}

/// Waits until every record is sealed, at least `at_least` of them, and the chain verifies.
async fn sealed(server: &Server, at_least: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) = verify(server, None);
        if ok && figure(&out, "not sealed yet ") == 0 && figure(&out, "verified ") >= at_least {
            return out;
        }
        assert!(Instant::now() < deadline, "not sealed in time: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn exec(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql).await.expect(sql);
}

async fn query(db: &DatabaseConnection, sql: &str) -> Vec<QueryResult> {
    db.query_all_raw(Statement::from_string(
        db.get_database_backend(),
        sql.to_owned(),
    ))
    .await
    .expect(sql)
}

async fn integers(db: &DatabaseConnection, sql: &str) -> Vec<i64> {
    query(db, sql)
        .await
        .iter()
        .map(|row| row.try_get_by_index::<i64>(0).expect("an integer"))
        .collect()
}

/// Every place of every run, with its team.
async fn places(db: &DatabaseConnection) -> Vec<(String, Place)> {
    query(db, "SELECT team, places FROM audit_chain_runs")
        .await
        .iter()
        .flat_map(|run| {
            let team: String = run.try_get("", "team").expect("a team");
            let places: String = run.try_get("", "places").expect("places");
            decode_places(&places)
                .into_iter()
                .map(move |place| (team.clone(), place))
        })
        .collect()
}

/// A team's chained records' sequence numbers, in chain order.
async fn chain(db: &DatabaseConnection, team: &str) -> Vec<i64> {
    let mut chained: Vec<Place> = places(db)
        .await
        .into_iter()
        .filter(|(of, place)| of == team && place.pos > 0)
        .map(|(_, place)| place)
        .collect();
    chained.sort_by_key(|place| place.pos);
    chained.into_iter().map(|place| place.seq).collect()
}

/// Rewrites the places of a team's runs with SQL, as someone with write access could.
async fn edit_places(db: &DatabaseConnection, team: &str, edit: impl Fn(&mut Place)) {
    let sql = format!("SELECT first_seq, places FROM audit_chain_runs WHERE team = '{team}'");
    for run in query(db, &sql).await {
        let first_seq: i64 = run.try_get("", "first_seq").expect("first_seq");
        let text: String = run.try_get("", "places").expect("places");
        let mut edited = decode_places(&text);
        edited.iter_mut().for_each(&edit);
        exec(
            db,
            &format!(
                "UPDATE audit_chain_runs SET places = '{}' WHERE team = '{team}' AND first_seq = {first_seq}",
                encode_places(&edited)
            ),
        )
        .await;
    }
}

storage_test!(process verify_names_a_record_edited_deleted_reordered_or_inserted);
async fn verify_names_a_record_edited_deleted_reordered_or_inserted(server: Server) {
    let server = quick(server).env("INTEGRATION_HUB_AUDIT_VERIFY_INTERVAL_SECS", "1");
    let running = server.start();
    let teams = ["edit", "gone", "swap", "forge"];
    for team in teams {
        records(&running, team, 4).await;
    }
    let clean = sealed(&server, 16).await;
    assert_eq!(figure(&clean, "findings "), 0, "{clean}");
    let db = Database::connect(server.database_url())
        .await
        .expect("connect");

    let edited = chain(&db, "edit").await[1];
    exec(
        &db,
        &format!("UPDATE audit_events SET resource = 'teams/edit/installedApps/forged' WHERE seq = {edited}"),
    )
    .await;
    let (ok, out) = verify(&server, Some("edit"));
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("team edit: edited: record seq {edited} ")),
        "{out}"
    );

    let gone = chain(&db, "gone").await;
    exec(
        &db,
        &format!("DELETE FROM audit_events WHERE seq = {}", gone[1]),
    )
    .await;
    let (ok, out) = verify(&server, Some("gone"));
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "team gone: deleted: chain places 2..2, before record seq {}",
            gone[2]
        )),
        "{out}"
    );
    // The newest record deleted too: the head gives it away.
    exec(
        &db,
        &format!("DELETE FROM audit_events WHERE seq = {}", gone[3]),
    )
    .await;
    let (_, out) = verify(&server, Some("gone"));
    assert!(
        out.contains("team gone: deleted: chain places 4..4, at the end of the chain"),
        "{out}"
    );

    let swap = chain(&db, "swap").await;
    let (a, b) = (swap[1], swap[2]);
    edit_places(&db, "swap", |place| {
        if place.seq == a {
            place.pos = 3;
        } else if place.seq == b {
            place.pos = 2;
        }
    })
    .await;
    let (ok, out) = verify(&server, Some("swap"));
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("team swap: reordered: record seq {b} ")),
        "{out}"
    );

    let copied = chain(&db, "forge").await[1];
    exec(
        &db,
        &format!(
            "INSERT INTO audit_events (id, team, actor, actor_team, role, action, resource, outcome, reason, request_id, time, key_id, mac) \
             SELECT 'forged-record', team, actor, actor_team, role, action, resource, outcome, reason, request_id, time, key_id, mac \
             FROM audit_events WHERE seq = {copied}"
        ),
    )
    .await;
    let forged = integers(
        &db,
        "SELECT seq FROM audit_events WHERE id = 'forged-record'",
    )
    .await[0];
    let (ok, out) = verify(&server, Some("forge"));
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "team forge: inserted: record seq {forged} (id forged-record)"
        )),
        "{out}"
    );

    // Every team at once: each finding is named, and the exit status says so.
    let (ok, out) = verify(&server, None);
    assert!(!ok, "{out}");
    for team in teams {
        assert!(out.contains(&format!("team {team}: ")), "{team}: {out}");
    }
    // The scheduled check says it in one WARN line naming the first finding.
    let deadline = Instant::now() + Duration::from_secs(30);
    while running
        .log_lines_with("the audit chain does not verify")
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "no WARN line:\n{}",
            running.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = &running.log_lines_with("the audit chain does not verify")[0];
    assert!(line.contains("WARN") && line.contains("team "), "{line}");
}

storage_test!(process pruning_leaves_a_checkpoint_that_verifies);
async fn pruning_leaves_a_checkpoint_that_verifies(server: Server) {
    // Each phase runs its own server over the same database: records are written and checked
    // under a long retention, pruned under a short one, so none is pruned before the phase
    // that checks it has seen it (a busy machine once lost that race).
    let keep = quick(server.clone()).env("INTEGRATION_HUB_AUDIT_RETENTION_SECS", "3600");
    let prune = quick(server).envs(&[
        ("INTEGRATION_HUB_AUDIT_RETENTION_SECS", "2"),
        ("INTEGRATION_HUB_PRUNE_INTERVAL_SECS", "1"),
        // Bounded batches: seven records take three.
        ("INTEGRATION_HUB_AUDIT_PRUNE_BATCH", "3"),
    ]);
    let mut running = keep.start();
    records(&running, "acme", 7).await;
    sealed(&keep, 7).await;
    running.kill();
    let mut running = prune.start();
    let db = Database::connect(keep.database_url())
        .await
        .expect("connect");
    let deadline = Instant::now() + Duration::from_secs(30);
    while integers(&db, "SELECT COUNT(*) FROM audit_events WHERE team = 'acme'").await[0] > 0 {
        assert!(
            Instant::now() < deadline,
            "not pruned:\n{}",
            running.logs().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.kill();
    let checkpoint = integers(
        &db,
        "SELECT checkpoint_pos FROM audit_chains WHERE team = 'acme'",
    )
    .await;
    assert_eq!(checkpoint, vec![7]);
    let running = keep.start();
    records(&running, "acme", 2).await;
    let out = sealed(&keep, 2).await;
    assert_eq!(figure(&out, "findings "), 0, "{out}");
    // The chain goes on from the checkpoint: the first record after it, deleted, is named.
    let after = chain(&db, "acme").await;
    assert_eq!(after.len(), 2);
    exec(
        &db,
        &format!("DELETE FROM audit_events WHERE seq = {}", after[0]),
    )
    .await;
    let (ok, out) = verify(&keep, Some("acme"));
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "team acme: deleted: chain places 8..8, before record seq {}",
            after[1]
        )),
        "{out}"
    );
}

storage_test!(process a_pending_row_edited_or_deleted_before_sealing_is_named);
/// The sealer chains what each commit's pending row names without reading the records back:
/// a pending row edited before it is sealed (another MAC) or deleted (its records never
/// placed) is named by verify all the same.
async fn a_pending_row_edited_or_deleted_before_sealing_is_named(server: Server) {
    // Records written while the sealer waits (its first round runs at the start), then
    // sealed by a server that seals quickly.
    let held = server
        .clone()
        .env("INTEGRATION_HUB_AUDIT_SEAL_INTERVAL_MS", "600000");
    let sealing = quick(server);
    let mut running = held.start();
    records(&running, "edit", 3).await;
    records(&running, "gone", 3).await;
    running.kill();
    let db = Database::connect(held.database_url())
        .await
        .expect("connect");
    let pending = |team: &str| {
        format!("SELECT id FROM audit_pending WHERE team = '{team}' ORDER BY first_seq")
    };
    let (edit, gone) = (
        integers(&db, &pending("edit")).await,
        integers(&db, &pending("gone")).await,
    );
    assert_eq!((edit.len(), gone.len()), (3, 3), "one pending row a commit");
    let seq_of = |id: i64| format!("SELECT first_seq FROM audit_pending WHERE id = {id}");
    let (edited, deleted) = (
        integers(&db, &seq_of(edit[1])).await[0],
        integers(&db, &seq_of(gone[1])).await[0],
    );
    let entries: String = query(
        &db,
        &format!("SELECT entries FROM audit_pending WHERE id = {}", edit[1]),
    )
    .await[0]
        .try_get("", "entries")
        .expect("entries");
    let mut fields: Vec<&str> = entries.split(':').collect();
    let other_mac = "00".repeat(32);
    fields[2] = &other_mac;
    exec(
        &db,
        &format!(
            "UPDATE audit_pending SET entries = '{}' WHERE id = {}",
            fields.join(":"),
            edit[1]
        ),
    )
    .await;
    exec(
        &db,
        &format!("DELETE FROM audit_pending WHERE id = {}", gone[1]),
    )
    .await;
    let running = sealing.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    let out = loop {
        let (ok, out) = verify(&sealing, None);
        if figure(&out, "not sealed yet ") == 0 && figure(&out, "verified ") >= 4 {
            assert!(!ok, "{out}");
            break out;
        }
        assert!(Instant::now() < deadline, "not sealed in time: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(running);
    assert!(
        out.contains(&format!("team edit: reordered: record seq {edited} ")),
        "{out}"
    );
    assert!(
        out.contains(&format!("team gone: reordered: record seq {deleted} ")),
        "{out}"
    );
    assert_eq!(figure(&out, "verified "), 4, "{out}");
    assert_eq!(figure(&out, "findings "), 2, "{out}");
    assert!(
        integers(&db, "SELECT COUNT(*) FROM audit_pending").await[0] == 0,
        "every pending row sealed is gone"
    );
}

/// On PostgreSQL the sealer waits for the write transactions running when it looked. One held
/// open for longer than it waits (`SEAL_WAIT`) delays sealing, not appends: it is named once
/// in a WARN line, and once it ends sealing goes on and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_write_transaction_delays_sealing_not_appends_and_is_logged_once() {
    use sea_orm::TransactionTrait;
    crate::needs!(Postgres);
    const WAITS: &str = "audit sealing waits for a write transaction";
    let server = quick(Server::fresh(crate::helpers::Backend::Postgres).await);
    let running = server.start();
    records(&running, "acme", 1).await;
    sealed(&server, 1).await;
    let db = Database::connect(server.database_url())
        .await
        .expect("connect");
    let placed = places(&db).await.len();
    let long = db.begin().await.expect("begin");
    long.execute_unprepared("SELECT pg_current_xact_id()")
        .await
        .expect("a write transaction's id");
    tokio::time::timeout(Duration::from_secs(10), records(&running, "acme", 2))
        .await
        .expect("appends were held back by an open transaction");
    running.wait_for_log(|line| line.contains(WAITS)).await;
    // More rounds wait; the line is not repeated, and nothing after the transaction's
    // snapshot is sealed while it runs.
    tokio::time::sleep(integration_hub::store::SEAL_WAIT + Duration::from_secs(1)).await;
    assert_eq!(
        running.log_lines_with(WAITS).len(),
        1,
        "{:?}",
        running.logs()
    );
    assert_eq!(
        places(&db).await.len(),
        placed,
        "sealed past a transaction still running"
    );
    long.rollback().await.expect("rollback");
    sealed(&server, 3).await;
    running
        .wait_for_log(|line| line.contains("audit sealing no longer waits"))
        .await;
}

storage_test!(process a_record_committed_late_still_gets_its_place);
/// On PostgreSQL a record can commit after records with higher sequence numbers: the sealer
/// must not pass it, and nothing waits for it. A transaction here appends one as the service
/// does (its id assigned first, its pending row written with it) and stays open while the
/// service writes more; once it commits, the record has its place in the chain (the sealer
/// chains what the pending row names without reading the record back; it is a copy under
/// another id, so its MAC does not hold there, and verify names it). On SQLite, one writer
/// at a time, it is simply the next record.
async fn a_record_committed_late_still_gets_its_place(server: Server) {
    use sea_orm::TransactionTrait;
    let server = quick(server);
    let running = server.start();
    records(&running, "acme", 2).await;
    sealed(&server, 2).await;
    let db = Database::connect(server.database_url())
        .await
        .expect("connect");
    let postgres = db.get_database_backend() == sea_orm::DatabaseBackend::Postgres;
    let late = db.begin().await.expect("begin");
    if postgres {
        late.execute_unprepared("SELECT pg_current_xact_id()")
            .await
            .expect("the transaction's id, before its record is numbered");
    }
    late.execute_unprepared(
        "INSERT INTO audit_events (id, team, actor, actor_team, role, action, resource, outcome, reason, request_id, time, key_id, mac) \
         SELECT 'late-record', team, actor, actor_team, role, action, resource, outcome, reason, request_id, time, key_id, mac \
         FROM audit_events WHERE team = 'acme' ORDER BY seq LIMIT 1",
    )
    .await
    .expect("the late record");
    late.execute_unprepared(&format!(
        "INSERT INTO audit_pending (team, first_seq, entries) \
         SELECT team, seq, {} FROM audit_events WHERE id = 'late-record'",
        if postgres {
            "seq::text || ':' || key_id::text || ':' || encode(mac, 'hex')"
        } else {
            "seq || ':' || key_id || ':' || lower(hex(mac))"
        }
    ))
    .await
    .expect("the late record's pending row");
    let in_flight = late
        .query_one_raw(Statement::from_string(
            late.get_database_backend(),
            "SELECT seq FROM audit_events WHERE id = 'late-record'",
        ))
        .await
        .expect("the late record's number")
        .expect("a row")
        .try_get_by_index::<i64>(0)
        .expect("an integer");
    if postgres {
        // Appends are never held back by a record in flight, and the sealer (every 50 ms)
        // passes none of them while it is.
        tokio::time::timeout(Duration::from_secs(10), records(&running, "acme", 2))
            .await
            .expect("appends were held back while a record was in flight");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let passed = places(&db)
            .await
            .iter()
            .filter(|(_, place)| place.seq > in_flight)
            .count();
        assert_eq!(
            passed, 0,
            "the sealer passed record {in_flight} while it was in flight"
        );
    }
    late.commit().await.expect("commit");
    records(&running, "acme", 1).await;
    let late_seq = integers(&db, "SELECT seq FROM audit_events WHERE id = 'late-record'").await[0];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let placed = places(&db)
            .await
            .iter()
            .filter(|(_, place)| place.seq == late_seq && place.pos > 0)
            .count();
        if placed == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the record committed late (seq {late_seq}) never got its place"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out) = verify(&server, Some("acme"));
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "team acme: edited: record seq {late_seq} (id late-record)"
        )),
        "{out}"
    );
    assert_eq!(figure(&out, "findings "), 1, "{out}");
}

storage_test!(process two_replicas_writing_at_once_keep_one_chain_per_team);
async fn two_replicas_writing_at_once_keep_one_chain_per_team(server: Server) {
    let server = quick(server);
    let (one, two) = (server.start(), server.start());
    tokio::join!(
        records(&one, "acme", 15),
        records(&two, "acme", 15),
        records(&one, "beta", 10),
        records(&two, "beta", 10),
    );
    let out = sealed(&server, 50).await;
    assert_eq!(figure(&out, "findings "), 0, "{out}");
    let db = Database::connect(server.database_url())
        .await
        .expect("connect");
    for (team, n) in [("acme", 30), ("beta", 20)] {
        let positions: std::collections::BTreeSet<i64> = places(&db)
            .await
            .into_iter()
            .filter(|(of, place)| of == team && place.pos > 0)
            .map(|(_, place)| place.pos)
            .collect();
        assert_eq!(
            (positions.len(), positions.last().copied()),
            (n, Some(n as i64)),
            "{team}: one place per record, none missing"
        );
    }
}

storage_test!(process the_chain_verifies_across_key_rotation);
async fn the_chain_verifies_across_key_rotation(server: Server) {
    let only_two = KeyRing::generate(2).expect("key").1;
    let both = format!("{},{only_two}", test_key_spec());
    let server = quick(server);
    let mut running = server.start();
    records(&running, "acme", 3).await;
    sealed(&server, 3).await;
    running.kill();
    // Every replica gets key 2: new records are made under it, the old ones still verify.
    let rotated = server.clone().keys(&both);
    let running = rotated.start();
    records(&running, "acme", 3).await;
    let out = sealed(&rotated, 6).await;
    assert_eq!(figure(&out, "findings "), 0, "{out}");
    let db = Database::connect(server.database_url())
        .await
        .expect("connect");
    let by_key = integers(
        &db,
        "SELECT COUNT(*) FROM audit_events WHERE key_id = 1 UNION ALL SELECT COUNT(*) FROM audit_events WHERE key_id = 2",
    )
    .await;
    assert_eq!(by_key, vec![3, 3]);
    // Without key 1 its records cannot be checked: they are named, never passed.
    let (ok, out) = verify(&server.clone().keys(&only_two), None);
    assert!(!ok, "{out}");
    assert!(out.contains("team acme: unknown key: record seq "), "{out}");
}
