//! A webhook receiver that is not ours: `tests/webhooks/receiver.py` verifies every delivery
//! with the `standardwebhooks` library from PyPI and reports each request as a JSON line.
//! Its Python comes from `WEBHOOK_RECEIVER_PYTHON`, or a venv made once from
//! `tests/webhooks/requirements.txt` (`needs::webhook_python`); a test that starts a receiver
//! begins with `needs!(Python)`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::process::{KillOnDrop, start_helper};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One request the receiver got, as it reported it.
pub type Received = Value;

/// A running receiver, killed on drop.
pub struct Receiver {
    _child: KillOnDrop,
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
        let (child, port, lines) = start_helper(
            Command::new(python)
                .arg(root().join("tests/webhooks/receiver.py"))
                .arg("--secrets-file")
                .arg(secrets.path())
                .args(args),
            "the webhook receiver",
        );
        Receiver {
            _child: child,
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
