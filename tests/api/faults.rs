//! Faults under load: a full disk, a PostgreSQL restart, its postmaster killed with -9, and a
//! network that drops every database connection for a while. The server runs as its own
//! process; each test writes until the fault has come and gone and then checks the contract:
//! no INTERNAL, every acknowledged write present, no event without its change, and an open
//! watch stream that delivered every event once.
//!
//! The disk fault needs root (a tmpfs mount); the PostgreSQL faults a private cluster
//! (`pg_cluster`), so that restarting it disturbs no other test. Without them they are
//! skipped (`needs::skip`).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use integration_hub::crypto::KeyRing;
use integration_hub::pb;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::fixtures::{error_reason, padded_integration, watch_live};
use crate::helpers::{authed, pg_address, pg_admin_url, pg_database_url, token};
use crate::pg_cluster::{Cluster, run};
use crate::process::{Server, ServerProcess};

/// What happened to the writes of a load.
#[derive(Default)]
struct Outcomes {
    /// Names of the integrations whose create answered OK.
    acknowledged: Vec<String>,
    /// Answers by code.
    codes: HashMap<Code, usize>,
    /// Error reasons by code, for the report.
    reasons: BTreeSet<(String, String)>,
}

impl Outcomes {
    fn record(&mut self, result: Result<tonic::Response<pb::Integration>, tonic::Status>) {
        match result {
            Ok(created) => {
                *self.codes.entry(Code::Ok).or_default() += 1;
                self.acknowledged.push(created.into_inner().name);
            }
            Err(status) => {
                *self.codes.entry(status.code()).or_default() += 1;
                self.reasons
                    .insert((format!("{:?}", status.code()), error_reason(&status)));
            }
        }
    }

    fn count(&self, code: Code) -> usize {
        self.codes.get(&code).copied().unwrap_or(0)
    }

    fn calls(&self) -> usize {
        self.codes.values().sum()
    }

    /// Only OK and the codes a client retries on: never INTERNAL, UNKNOWN or a cancellation.
    fn assert_only(&self, allowed: &[Code], what: &str) {
        for (code, n) in &self.codes {
            assert!(
                allowed.contains(code),
                "{what}: {n} calls answered {code:?} (reasons {:?}); only {allowed:?} are allowed",
                self.reasons
            );
        }
    }

    fn report(&self, what: &str) {
        let mut codes: Vec<_> = self
            .codes
            .iter()
            .map(|(c, n)| format!("{c:?}={n}"))
            .collect();
        codes.sort();
        println!(
            "{what}: {} calls, {}, {} acknowledged",
            self.calls(),
            codes.join(" "),
            self.acknowledged.len()
        );
    }
}

/// A create request with config values of 200 bytes, so the disk fills sooner.
fn bulky_integration(app: &str, n: usize) -> pb::CreateIntegrationRequest {
    padded_integration(app, n, 200)
}

async fn create_app(server: &ServerProcess) -> String {
    let dev = token("acme", "developer", "dana");
    let clients = server.clients().await;
    crate::fixtures::create_app(&clients, &dev, "slack", "Ops Slack")
        .await
        .name
}

/// Follows a live watch stream in the background, keeping every event it delivers.
struct Follower {
    events: Arc<Mutex<Vec<pb::IntegrationEvent>>>,
    ended: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    async fn start(server: &ServerProcess) -> Follower {
        let clients = server.clients().await;
        let (mut stream, _) = watch_live(&clients, &token("acme", "viewer", "vic")).await;
        let events = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(Mutex::new(None));
        let (sink, end) = (events.clone(), ended.clone());
        let task = tokio::spawn(async move {
            loop {
                match stream.message().await {
                    Ok(Some(message)) => sink.lock().expect("lock").extend(message.events),
                    Ok(None) => {
                        *end.lock().expect("lock") = Some("the stream ended".into());
                        return;
                    }
                    Err(status) => {
                        *end.lock().expect("lock") = Some(format!("{status:?}"));
                        return;
                    }
                }
            }
        });
        Follower {
            events,
            ended,
            task,
        }
    }

    /// Names of the integrations the stream reported created, failing on a repeated event.
    fn created(&self) -> BTreeSet<String> {
        let events = self.events.lock().expect("lock");
        let mut ids = BTreeSet::new();
        for event in events.iter() {
            assert!(
                ids.insert(event.event_id.clone()),
                "the open stream delivered event {} twice",
                event.event_id
            );
        }
        events
            .iter()
            .filter(|e| e.r#type == pb::IntegrationEventType::IntegrationCreated as i32)
            .map(|e| e.integration_name.clone())
            .collect()
    }

    /// Waits until the stream has reported every one of `names` created.
    async fn wait_for(&self, names: &[String], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let created = self.created();
            let missing: Vec<_> = names.iter().filter(|n| !created.contains(*n)).collect();
            if missing.is_empty() {
                return;
            }
            if let Some(end) = self.ended.lock().expect("lock").clone() {
                panic!(
                    "the open watch stream ended ({end}) with {} events missing",
                    missing.len()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the open watch stream missed {} acknowledged creates, such as {:?}",
                missing.len(),
                missing.first()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every acknowledged integration answers GetIntegration.
async fn assert_present(server: &ServerProcess, names: &[String]) {
    let (_, mut integrations) = server.clients().await;
    let viewer = token("acme", "viewer", "vic");
    for name in names {
        let got = integrations
            .get_integration(authed(
                &viewer,
                pb::GetIntegrationRequest { name: name.clone() },
            ))
            .await;
        assert!(
            got.is_ok(),
            "acknowledged integration {name} is missing: {:?}",
            got.err()
        );
    }
}

fn warnings_and_errors(server: &ServerProcess) -> Vec<String> {
    let mut lines = server.log_lines_with("\"level\":\"WARN\"");
    lines.extend(server.log_lines_with("\"level\":\"ERROR\""));
    lines
}

/// A size-limited tmpfs under a temporary directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts one, or says why it cannot (and the test is skipped).
    fn mount(options: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                options,
                "tmpfs",
                &dir.path().display().to_string(),
            ],
        )?;
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Gives the file system more room, as an operator freeing space would.
    fn grow(&self, size: &str) {
        run(
            "mount",
            &[
                "-o",
                &format!("remount,size={size}"),
                &self.path().display().to_string(),
            ],
        )
        .expect("remount the tmpfs larger");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", &self.dir.path().display().to_string()]);
    }
}

/// On a full disk every write answers RESOURCE_EXHAUSTED (STORAGE_FULL) or UNAVAILABLE, never
/// OK for a write that is then lost; reads and the open stream go on; the warning is logged
/// once; freeing space lets writes succeed again without a restart; after a restart every
/// acknowledged write is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_never_acknowledges_a_lost_write_and_recovers_when_space_is_freed() {
    let disk = match Tmpfs::mount("size=4m") {
        Ok(disk) => disk,
        Err(why) => {
            crate::needs::skip(crate::needs::Part::Tmpfs, &format!("mount a tmpfs: {why}"));
            return;
        }
    };
    let url = format!("sqlite://{}?mode=rwc", disk.path().join("hub.db").display());
    let keys = KeyRing::generate(1).expect("key").1;
    let mut server = Server::on(&url).keys(&keys).start();
    let app = create_app(&server).await;
    let follower = Follower::start(&server).await;
    let (_, mut integrations) = server.clients().await;
    let dev = token("acme", "developer", "dana");

    let before_the_load = warnings_and_errors(&server);
    // Write until the disk has refused twenty writes in a row.
    let mut outcomes = Outcomes::default();
    let mut refused_in_a_row = 0;
    for n in 0..200_000 {
        let result = integrations
            .create_integration(authed(&dev, bulky_integration(&app, n)))
            .await;
        refused_in_a_row = if result.is_ok() {
            0
        } else {
            refused_in_a_row + 1
        };
        outcomes.record(result);
        if refused_in_a_row >= 20 {
            break;
        }
    }
    outcomes.report("disk full (4 MiB tmpfs)");
    assert!(refused_in_a_row >= 20, "the disk never filled");
    outcomes.assert_only(
        &[Code::Ok, Code::ResourceExhausted, Code::Unavailable],
        "while the disk filled",
    );
    assert!(
        outcomes
            .reasons
            .contains(&("ResourceExhausted".into(), "STORAGE_FULL".into())),
        "a full disk answers RESOURCE_EXHAUSTED with reason STORAGE_FULL: {:?}",
        outcomes.reasons
    );

    // Reads and the open stream go on while the disk is full; the stream carries exactly the
    // acknowledged creates: nothing lost, no event without its change.
    assert_present(&server, &outcomes.acknowledged).await;
    follower
        .wait_for(&outcomes.acknowledged, Duration::from_secs(20))
        .await;
    let acknowledged: BTreeSet<String> = outcomes.acknowledged.iter().cloned().collect();
    assert_eq!(
        follower.created(),
        acknowledged,
        "the stream reported a create that was not acknowledged"
    );
    let warnings: Vec<String> = warnings_and_errors(&server)
        .into_iter()
        .filter(|line| !before_the_load.contains(line))
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "the full disk is logged once, not per call: {warnings:?}"
    );
    assert!(warnings[0].contains("storage is full"), "{warnings:?}");

    // Space freed: writes succeed again, without a restart.
    disk.grow("64m");
    let mut resumed = None;
    for n in 0..50 {
        match integrations
            .create_integration(authed(&dev, bulky_integration(&app, 1_000_000 + n)))
            .await
        {
            Ok(created) => {
                resumed = Some(created.into_inner().name);
                break;
            }
            Err(status) => {
                assert!(
                    matches!(status.code(), Code::ResourceExhausted | Code::Unavailable),
                    "after space was freed: {status:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let resumed = resumed.expect("writes succeed again once space is freed, without a restart");
    println!("disk full: writes resumed after space was freed ({resumed})");

    // After a clean stop and a restart, every acknowledged write is there.
    drop(follower);
    assert!(server.terminate(Duration::from_secs(30)).success());
    server.restart();
    let mut expected = outcomes.acknowledged.clone();
    expected.push(resumed);
    assert_present(&server, &expected).await;
    println!(
        "disk full: {} acknowledged writes present after the restart",
        expected.len()
    );
}

/// Writes from `writers` concurrent clients until `stop` flips.
async fn write_load(
    server: &ServerProcess,
    app: &str,
    writers: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Outcomes {
    let outcomes = Arc::new(Mutex::new(Outcomes::default()));
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (_, mut integrations) = server.clients().await;
        let (app, outcomes, stop) = (app.to_owned(), outcomes.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let dev = token("acme", "developer", "dana");
            for n in 0.. {
                if *stop.borrow() {
                    return;
                }
                let result = integrations
                    .create_integration(authed(&dev, bulky_integration(&app, w * 1_000_000 + n)))
                    .await;
                let failed = result.is_err();
                outcomes.lock().expect("lock").record(result);
                if failed {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    Arc::into_inner(outcomes)
        .expect("writers done")
        .into_inner()
        .expect("lock")
}

/// The contract across a database fault: only OK and UNAVAILABLE, every acknowledged write
/// present and delivered to the open stream; what the stream delivered is present too (a create
/// whose commit answer was lost with the connection may have committed). The creates the
/// stream delivered.
async fn assert_nothing_lost(
    server: &ServerProcess,
    follower: &Follower,
    outcomes: &Outcomes,
    what: &str,
) -> Vec<String> {
    outcomes.assert_only(&[Code::Ok, Code::Unavailable], what);
    assert_present(server, &outcomes.acknowledged).await;
    follower
        .wait_for(&outcomes.acknowledged, Duration::from_secs(30))
        .await;
    let created: Vec<String> = follower.created().into_iter().collect();
    assert_present(server, &created).await;
    created
}

#[derive(Clone, Copy, Debug)]
enum DatabaseFault {
    Restart,
    KillPostmaster,
}

/// A write load and an open stream across a database fault: only OK and UNAVAILABLE, every
/// acknowledged write present, every event delivered once to the open stream.
async fn survives(fault: DatabaseFault) {
    // A cluster of this test's own, so that restarting or killing it disturbs no other test.
    let cluster = match Cluster::start("") {
        Ok(cluster) => cluster,
        Err(why) => {
            crate::needs::skip(
                crate::needs::Part::Postgres,
                &format!("a private cluster: {why}"),
            );
            return;
        }
    };
    let keys = KeyRing::generate(1).expect("key").1;
    let server = Server::on(&cluster.url("postgres")).keys(&keys).start();
    let app = create_app(&server).await;
    let follower = Follower::start(&server).await;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let load = write_load(&server, &app, 4, stop);
    let fault_then_stop = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let started = Instant::now();
        tokio::task::block_in_place(|| match fault {
            DatabaseFault::Restart => cluster.restart(),
            DatabaseFault::KillPostmaster => cluster.kill_and_start(),
        });
        println!(
            "{fault:?}: the database was back after {:?}",
            started.elapsed()
        );
        // Long enough for the pool to reconnect and writes to succeed again.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let _ = stop_tx.send(true);
    };
    let (outcomes, ()) = tokio::join!(load, fault_then_stop);
    outcomes.report(&format!("{fault:?} under a write load"));
    let created = assert_nothing_lost(&server, &follower, &outcomes, &format!("{fault:?}")).await;
    assert!(
        outcomes.count(Code::Ok) > 0,
        "no write succeeded across the fault"
    );
    println!(
        "{fault:?}: {} acknowledged present, the open stream delivered {} creates once each",
        outcomes.acknowledged.len(),
        created.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_answers_unavailable_and_loses_nothing() {
    survives(DatabaseFault::Restart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_postmaster_under_load_answers_unavailable_and_loses_nothing() {
    survives(DatabaseFault::KillPostmaster).await;
}

/// A TCP proxy to PostgreSQL that can cut every connection and refuse new ones for a while.
struct Proxy {
    port: u16,
    cut: tokio::sync::watch::Sender<u64>,
    refusing: Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let port = listener.local_addr().expect("addr").port();
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let refusing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cuts, refuse, upstream) = (cut.clone(), refusing.clone(), upstream.to_owned());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if refuse.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                let mut cut = cuts.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Proxy {
            port,
            cut,
            refusing,
        }
    }

    /// Drops every open connection and refuses new ones for `outage`.
    async fn outage(&self, outage: Duration) {
        use std::sync::atomic::Ordering;
        self.refusing.store(true, Ordering::Release);
        self.cut.send_modify(|n| *n += 1);
        tokio::time::sleep(outage).await;
        self.refusing.store(false, Ordering::Release);
    }
}

/// Whether the health entry of the database reaches `status` within `within`.
async fn database_health_becomes(
    health: &mut HealthClient<tonic::transport::Channel>,
    status: ServingStatus,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let answer = health
            .check(HealthCheckRequest {
                service: integration_hub::startup::DATABASE_HEALTH.into(),
            })
            .await;
        if answer.is_ok_and(|a| a.into_inner().status == status as i32) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// How many sessions LISTEN for events in database `name`.
async fn listeners(name: &str) -> i64 {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let admin = Database::connect(pg_admin_url()).await.expect("connect");
    let row = admin
        .query_one_raw(Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            format!(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = '{name}' AND query LIKE 'LISTEN%'"
            ),
        ))
        .await
        .expect("query")
        .expect("a row");
    let _ = admin.close().await;
    row.try_get_by_index::<i64>(0).expect("count")
}

/// Every connection between a replica and PostgreSQL dropped for four seconds: the same
/// invariants, the health entry of the database follows it, and the replica LISTENs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_database_connections_answer_unavailable_and_listen_resumes() {
    crate::needs!(Postgres);
    let db = crate::helpers::TestDb::new(crate::helpers::Backend::Postgres).await;
    let name = db.url.rsplit('/').next().expect("db name").to_owned();
    let proxy = Proxy::start(&pg_address()).await;
    let url = pg_database_url(&name).replace(&pg_address(), &format!("127.0.0.1:{}", proxy.port));
    let keys = KeyRing::generate(1).expect("key").1;
    let server = Server::on(&url).keys(&keys).start();
    let app = create_app(&server).await;
    let follower = Follower::start(&server).await;
    let listening = Instant::now() + Duration::from_secs(10);
    while listeners(&name).await == 0 {
        assert!(Instant::now() < listening, "the replica never LISTENed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let load = write_load(&server, &app, 4, stop);
    let mut health = HealthClient::new(server.channel().await);
    let fault_then_stop = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (_, down) = tokio::join!(
            proxy.outage(Duration::from_secs(4)),
            database_health_becomes(
                &mut health,
                ServingStatus::NotServing,
                Duration::from_secs(4)
            ),
        );
        let up =
            database_health_becomes(&mut health, ServingStatus::Serving, Duration::from_secs(10))
                .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = stop_tx.send(true);
        (down, up)
    };
    let (outcomes, (down, up)) = tokio::join!(load, fault_then_stop);
    assert!(
        down,
        "the database health entry did not turn NOT_SERVING during the outage"
    );
    assert!(
        up,
        "the database health entry did not turn SERVING again after the outage"
    );
    outcomes.report("connections dropped for 4 s under a write load");
    assert_nothing_lost(&server, &follower, &outcomes, "dropped connections").await;
    assert!(
        outcomes.count(Code::Unavailable) > 0,
        "the outage was not noticed: the test proves nothing"
    );
    let listening = Instant::now() + Duration::from_secs(15);
    while listeners(&name).await == 0 {
        assert!(
            Instant::now() < listening,
            "the replica did not LISTEN again after the outage"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The open stream is still live: a write now reaches it.
    let (_, mut integrations) = server.clients().await;
    let after = integrations
        .create_integration(authed(
            &token("acme", "developer", "dana"),
            bulky_integration(&app, 9_999_999),
        ))
        .await
        .expect("a write after the outage")
        .into_inner()
        .name;
    follower.wait_for(&[after], Duration::from_secs(10)).await;
}

/// Start-up with the database unreachable says what it waits for and for how long, never the
/// password, and gives up with a clear message and a non-zero exit after the deadline.
#[test]
fn start_up_waits_for_an_unreachable_database_and_then_exits_non_zero() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://hub:hunter2-secret@127.0.0.1:{closed}/hub");
    let started = Instant::now();
    let (status, stderr) = Server::on(&url)
        .env("INTEGRATION_HUB_DATABASE_WAIT_SECS", "3")
        .run_to_exit(Duration::from_secs(60));
    assert!(!status.success(), "serve exited 0 without a database");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "serve gave up before the deadline"
    );
    let waiting = format!("postgres://127.0.0.1:{closed}/hub");
    assert!(
        stderr.contains("waiting for the database") && stderr.contains(&waiting),
        "start-up does not say what it waits for: {stderr}"
    );
    assert!(
        stderr.contains("wait_secs") || stderr.contains("gives_up_in_secs"),
        "start-up does not say how long it waits: {stderr}"
    );
    assert!(
        stderr.contains("cannot connect to the database"),
        "no clear message at the end: {stderr}"
    );
    assert!(
        !stderr.contains("hunter2"),
        "the database password reached the log"
    );
}

/// A data directory that cannot be written is refused at start, naming the path.
#[test]
fn a_read_only_data_directory_is_refused_at_start_naming_it() {
    let disk = match Tmpfs::mount("ro,size=1m") {
        Ok(disk) => disk,
        Err(why) => {
            crate::needs::skip(crate::needs::Part::Tmpfs, &format!("mount a tmpfs: {why}"));
            return;
        }
    };
    let dir = disk.path().display().to_string();
    let (status, stderr) = Server::default_database()
        .env("INTEGRATION_HUB_DATA_DIR", &dir)
        .run_to_exit(Duration::from_secs(30));
    assert!(
        !status.success(),
        "serve started on a read-only data directory"
    );
    assert!(
        stderr.contains("not writable") && stderr.contains(&dir),
        "the refusal does not name the directory: {stderr}"
    );
}
