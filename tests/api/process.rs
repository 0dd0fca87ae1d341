//! The real binary as a child process, the one way tests start it: `Server` says on which
//! database, with which keys and settings; `start` runs `integration-hub serve` on port 0,
//! waits for its "serving" line and keeps every line it logs; the `ServerProcess` it returns
//! gives clients, SIGTERM, SIGKILL and a restart on the same data, and is killed on drop.
//! `run_to_exit` runs one that is expected to stop by itself (a refused start).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use integration_hub::pb::installed_app_service_client::InstalledAppServiceClient;
use integration_hub::pb::integration_service_client::IntegrationServiceClient;
use tonic::transport::Channel;

use crate::helpers::{Backend, TEST_AUDIENCE, TEST_ISSUER, TEST_SECRET, TestDb, test_key_spec};

/// Sends `signal` (`libc::SIGTERM`, ...) to process `pid`, as `kill` would (without needing
/// the `kill` program, which a bare machine may lack); false when there is no such process.
pub fn send_signal(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// A child process of the tests, killed and reaped when dropped: when its test ends, however
/// it ends. The one guard of every program the tests start (the server, the OAuth provider,
/// the webhook receiver).
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // Does nothing to a child already reaped.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a program a test runs beside the server (the OAuth provider, the webhook receiver)
/// that prints `{"port": N}` as its first line on stdout once it listens, and JSON lines
/// after it: the running program, its port, and the later lines as they come (stdout is
/// read to its end whether or not they are received, so the program never blocks on it).
pub fn start_helper(
    command: &mut Command,
    what: &str,
) -> (
    KillOnDrop,
    u16,
    tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|err| panic!("start {what}: {err}"));
    let stdout = child.stdout.take().expect("stdout");
    let child = KillOnDrop(child);
    let (port_tx, port_rx) = mpsc::channel();
    let (lines_tx, lines) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        if let Some(first) = lines.next() {
            let _ = port_tx.send(first);
        }
        for line in lines {
            if let Ok(value) = serde_json::from_str(&line) {
                let _ = lines_tx.send(value);
            }
        }
    });
    let first = port_rx
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} prints its port within 20 s"));
    let first: serde_json::Value = serde_json::from_str(&first).expect("a JSON first line");
    let port = first["port"].as_u64().expect("a port") as u16;
    (child, port, lines)
}

/// How to start the server: its database, keys and settings. Cloned by every start, so one
/// value starts replicas on one database and starts a killed one again on the same data.
#[derive(Clone)]
pub struct Server {
    /// None: the SQLite file the server makes in its data directory.
    database_url: Option<String>,
    /// The fresh database this server owns (`fresh`), dropped with the last clone.
    _db: Option<Arc<TestDb>>,
    /// The data directory, unless a test names its own (`INTEGRATION_HUB_DATA_DIR`).
    data_dir: Arc<tempfile::TempDir>,
    keys: String,
    /// Settings on top of the tests' defaults, in order (a later one wins).
    env: Vec<(String, String)>,
}

impl Server {
    /// A server on the database at `url` (a `TestDb`'s, a private cluster's, a proxy's).
    pub fn on(url: &str) -> Server {
        Server::with(Some(url.to_owned()), None)
    }

    /// A server on a fresh database of `backend`, dropped when the last server using it is.
    pub async fn fresh(backend: Backend) -> Server {
        let db = TestDb::new(backend).await;
        Server::with(Some(db.url.clone()), Some(Arc::new(db)))
    }

    /// A server on no database URL: the SQLite file it makes in its data directory.
    pub fn default_database() -> Server {
        Server::with(None, None)
    }

    fn with(database_url: Option<String>, db: Option<Arc<TestDb>>) -> Server {
        Server {
            database_url,
            _db: db,
            data_dir: Arc::new(tempfile::tempdir().expect("temp dir")),
            keys: test_key_spec().to_owned(),
            env: Vec::new(),
        }
    }

    /// The encryption keys (`INTEGRATION_HUB_ENCRYPTION_KEYS`); the run's test key otherwise.
    pub fn keys(mut self, keys: &str) -> Server {
        keys.clone_into(&mut self.keys);
        self
    }

    /// One more setting, by its environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Server {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// More settings, by their environment variables.
    pub fn envs<K: AsRef<str>, V: AsRef<str>>(self, env: &[(K, V)]) -> Server {
        env.iter()
            .fold(self, |server, (k, v)| server.env(k.as_ref(), v.as_ref()))
    }

    pub fn database_url(&self) -> &str {
        self.database_url.as_deref().expect("a database URL")
    }

    pub fn backend(&self) -> Backend {
        if self.database_url().starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }

    /// `integration-hub serve` with the tests' settings (those of `helpers::test_args`: the
    /// test token secret, issuer and audience, 1 s checkpoints, no rate limits; JSON logs at
    /// info) and then this server's, its stderr piped and read into its log; the port of its
    /// "serving" line comes on the channel.
    fn spawn(&self) -> (ServerProcess, mpsc::Receiver<u16>) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_integration-hub"));
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("INTEGRATION_HUB_LISTEN", "127.0.0.1:0")
            .env("INTEGRATION_HUB_DATA_DIR", self.data_dir.path())
            .env("INTEGRATION_HUB_ENCRYPTION_KEYS", &self.keys)
            .env("INTEGRATION_HUB_JWT_HS256_SECRET", TEST_SECRET)
            .env("INTEGRATION_HUB_JWT_ISSUER", TEST_ISSUER)
            .env("INTEGRATION_HUB_JWT_AUDIENCE", TEST_AUDIENCE)
            .env("INTEGRATION_HUB_LOG_FORMAT", "json")
            .env("INTEGRATION_HUB_CHECKPOINT_INTERVAL_SECS", "1")
            // Tests call as fast as they can; the rate limits have tests of their own.
            .env("INTEGRATION_HUB_RATE_LIMIT_PER_SEC", "0")
            .env("INTEGRATION_HUB_RATE_LIMIT_SERVICE_PER_SEC", "0")
            // No test calls a real provider (see `helpers::test_args`).
            .env("INTEGRATION_HUB_VERIFY_CREDENTIALS", "false")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(url) = &self.database_url {
            command.env("INTEGRATION_HUB_DATABASE_URL", url);
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start the server binary");
        let (log, port) = Log::read(child.stderr.take().expect("stderr"));
        let process = ServerProcess {
            server: self.clone(),
            child: KillOnDrop(child),
            port: 0,
            log,
            exited: None,
        };
        (process, port)
    }

    /// Starts the server and waits (at most 60 s) until it serves.
    pub fn start(&self) -> ServerProcess {
        let (mut process, port) = self.spawn();
        match port.recv_timeout(Duration::from_secs(60)) {
            Ok(port) => process.port = port,
            Err(_) => panic!("server did not start:\n{}", process.logs().join("\n")),
        }
        process
    }

    /// Runs `integration-hub <args>` (a subcommand other than `serve`) on this server's
    /// database and keys until it exits: its exit status and what it printed (stdout, then
    /// stderr).
    pub fn run_command(&self, args: &[&str]) -> (ExitStatus, String) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_integration-hub"));
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("INTEGRATION_HUB_DATA_DIR", self.data_dir.path())
            .env("INTEGRATION_HUB_ENCRYPTION_KEYS", &self.keys)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        if let Some(url) = &self.database_url {
            command.env("INTEGRATION_HUB_DATABASE_URL", url);
        }
        let output = command.output().expect("run the binary");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status, text)
    }

    /// Runs a server that should stop by itself (a refused start) until it exits, at most
    /// `within`: its exit status and everything it logged.
    pub fn run_to_exit(&self, within: Duration) -> (ExitStatus, String) {
        let (mut process, _) = self.spawn();
        let status = process.wait(within);
        (status, process.logs().join("\n"))
    }
}

/// The lines a server writes to stderr, read on a thread of their own as they come.
struct Log {
    lines: Arc<Mutex<Vec<String>>>,
    /// Joined once the server has exited, so that its last lines are in.
    reader: Option<JoinHandle<()>>,
}

impl Log {
    /// Reads `stderr` to its end; sends the port of the "serving" line on the channel.
    fn read(stderr: std::process::ChildStderr) -> (Log, mpsc::Receiver<u16>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            // Split on bytes, so a line that is not UTF-8 is kept (lossily) rather than ending
            // the capture.
            for line in BufReader::new(stderr).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line).into_owned();
                if let Some(port) = serving_port(&line) {
                    let _ = port_tx.send(port);
                }
                sink.lock().expect("log lock").push(line);
            }
        });
        let log = Log {
            lines,
            reader: Some(reader),
        };
        (log, port_rx)
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("log lock").clone()
    }

    /// Waits for the reader to reach the end of stderr.
    fn finish(&mut self) {
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the log reader");
        }
    }
}

/// The port of the "serving" line, in the JSON format or the pretty one.
fn serving_port(line: &str) -> Option<u16> {
    let listen = match serde_json::from_str::<serde_json::Value>(line) {
        Ok(value) if value["message"] == "serving" => value["listen"].as_str()?.to_owned(),
        Ok(_) => return None,
        Err(_) if line.contains(" serving ") => line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("listen="))?
            .to_owned(),
        Err(_) => return None,
    };
    listen.rsplit(':').next()?.parse().ok()
}

/// A running server (or one that has exited), killed on drop (`KillOnDrop`).
pub struct ServerProcess {
    server: Server,
    child: KillOnDrop,
    pub port: u16,
    log: Log,
    exited: Option<ExitStatus>,
}

impl ServerProcess {
    /// The lines the server has logged so far (all of them once it has exited).
    pub fn logs(&self) -> Vec<String> {
        self.log.lines()
    }

    /// Waits (at most 10 s) for a logged line that `matches`; returns its index.
    pub async fn wait_for_log(&self, matches: impl Fn(&str) -> bool) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(index) = self.logs().iter().position(|line| matches(line)) {
                return index;
            }
            assert!(
                Instant::now() < deadline,
                "no such log line within 10 s:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The log lines written so far that contain `text`.
    pub fn log_lines_with(&self, text: &str) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|line| line.contains(text))
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://127.0.0.1:{}", self.port))
            .expect("uri")
            .connect()
            .await
            .expect("connect to the server process")
    }

    pub async fn clients(
        &self,
    ) -> (
        InstalledAppServiceClient<Channel>,
        IntegrationServiceClient<Channel>,
    ) {
        let channel = self.channel().await;
        (
            InstalledAppServiceClient::new(channel.clone()),
            IntegrationServiceClient::new(channel),
        )
    }

    fn signal(&self, signal: libc::c_int) {
        assert!(send_signal(self.pid(), signal), "kill {signal} failed");
    }

    /// SIGTERM, as an orchestrator stopping it; `exit_within` waits for the exit.
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// SIGTERM, then waits for the exit (at most `within`).
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.sigterm();
        self.wait(within)
    }

    /// SIGKILL: no cleanup at all, as a crash.
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            self.signal(libc::SIGKILL);
            self.exited = Some(self.child.0.wait().expect("wait for the killed server"));
            self.log.finish();
        }
    }

    /// Starts the same server again, on the same data, killing this one first if it runs: a
    /// new process, port and log.
    pub fn restart(&mut self) {
        self.kill();
        *self = self.server.start();
    }

    /// The exit status once the server has exited (at most `within` from now), and then
    /// every line it logged is in `logs`; None if it still runs.
    pub fn exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while self.exited.is_none() {
            if let Some(status) = self.child.0.try_wait().expect("try_wait") {
                self.exited = Some(status);
                self.log.finish();
            } else if Instant::now() >= deadline {
                return None;
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.exited
    }

    /// Waits for the exit (at most `within`), failing when it does not come.
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        self.exit_within(within).unwrap_or_else(|| {
            panic!(
                "server did not exit within {within:?}:\n{}",
                self.logs().join("\n")
            )
        })
    }

    /// Resident memory of the process, in KiB (Linux).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}
