//! A webhook receiver that is not ours: `tests/webhooks/receiver.py` verifies every delivery
//! with the `standardwebhooks` library from PyPI and reports each request as a JSON line.
//! Its Python comes from `WEBHOOK_RECEIVER_PYTHON`, or a venv made once from
//! `tests/webhooks/requirements.txt` (`needs::webhook_python`); a test that starts a receiver
//! begins with `needs!(Python)`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One request the receiver got, as it reported it.
pub type Received = Value;

pub struct Receiver {
    child: Child,
    pub port: u16,
    lines: mpsc::UnboundedReceiver<Received>,
    secrets: tempfile::NamedTempFile,
}

impl Receiver {
    /// Starts a receiver with extra arguments (`--fail-first 2`, ...).
    pub fn start(args: &[&str]) -> Receiver {
        let secrets = tempfile::NamedTempFile::new().expect("secrets file");
        let python = match crate::needs::webhook_python() {
            Ok(python) => python,
            Err(why) => panic!("the webhook receiver needs python3 ({why}): needs!(Python)"),
        };
        let mut child = Command::new(python)
            .arg(root().join("tests/webhooks/receiver.py"))
            .arg("--secrets-file")
            .arg(secrets.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the receiver");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        // The first line, `{"port": N}`, comes as soon as the receiver listens.
        let mut first = String::new();
        stdout.read_line(&mut first).expect("the receiver's port");
        let first: Value = serde_json::from_str(&first).expect("the receiver's first line");
        let port = first["port"].as_u64().expect("port") as u16;
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(value);
                }
            }
        });
        Receiver {
            child,
            port,
            lines,
            secrets,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    /// The secrets each delivery is verified with, from now on (each must verify).
    pub fn verify_with(&self, secrets: &[&str]) {
        std::fs::write(self.secrets.path(), secrets.join("\n")).expect("write secrets");
    }

    /// The next request, or a failure after `wait`.
    pub async fn next(&mut self, wait: Duration) -> Received {
        tokio::time::timeout(wait, self.lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no webhook request within {wait:?}"))
            .expect("the receiver is running")
    }

    /// The next request within `wait`, if one comes.
    pub async fn maybe_next(&mut self, wait: Duration) -> Option<Received> {
        tokio::time::timeout(wait, self.lines.recv())
            .await
            .ok()
            .flatten()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
