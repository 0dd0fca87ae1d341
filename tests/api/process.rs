//! The real binary as a child process: for replicas, SIGTERM and SIGKILL.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use integration_hub::pb::installed_app_service_client::InstalledAppServiceClient;
use integration_hub::pb::integration_service_client::IntegrationServiceClient;
use tonic::transport::Channel;

use crate::helpers::{TEST_AUDIENCE, TEST_ISSUER, TEST_SECRET};

/// Sends `signal` (`libc::SIGTERM`, ...) to process `pid`, as `kill` would (without needing
/// the `kill` program, which a bare machine may lack); false when there is no such process.
pub fn send_signal(pid: u32, signal: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of this process.
    unsafe { libc::kill(pid, signal) == 0 }
}

pub struct ServerProcess {
    child: Child,
    pub port: u16,
    /// Every line the server wrote to stderr so far, in order.
    logs: Arc<Mutex<Vec<String>>>,
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

impl ServerProcess {
    /// Starts `integration-hub serve` on port 0 and waits (at most 60 s) for its "serving" line.
    pub fn start(database_url: &str, keys: &str, extra_env: &[(&str, &str)]) -> ServerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_integration-hub"));
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("INTEGRATION_HUB_DATABASE_URL", database_url)
            .env("INTEGRATION_HUB_ENCRYPTION_KEYS", keys)
            .env("INTEGRATION_HUB_JWT_HS256_SECRET", TEST_SECRET)
            .env("INTEGRATION_HUB_JWT_ISSUER", TEST_ISSUER)
            .env("INTEGRATION_HUB_JWT_AUDIENCE", TEST_AUDIENCE)
            .env("INTEGRATION_HUB_LOG_FORMAT", "json")
            .env("INTEGRATION_HUB_CHECKPOINT_INTERVAL_SECS", "1")
            // Tests call as fast as they can; the rate limits have tests of their own.
            .env("INTEGRATION_HUB_RATE_LIMIT_PER_SEC", "0")
            .env("INTEGRATION_HUB_RATE_LIMIT_SERVICE_PER_SEC", "0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start the server binary");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
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
        let port = match port_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not start:\n{}",
                    logs.lock().expect("log lock").join("\n")
                );
            }
        };
        ServerProcess { child, port, logs }
    }

    /// The lines the server has logged so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("log lock").clone()
    }

    /// Waits (at most 10 s) for a logged line that `matches`; returns its index.
    pub async fn wait_for_log(&self, matches: impl Fn(&str) -> bool) -> usize {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(index) = self.logs().iter().position(|line| matches(line)) {
                return index;
            }
            assert!(
                std::time::Instant::now() < deadline,
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
        self.child.id()
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

    /// SIGTERM, then waits for the exit (at most `within`).
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait(within)
    }

    /// SIGKILL: no cleanup at all, as a crash.
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
