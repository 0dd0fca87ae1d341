//! What some tests need beyond Rust, found or set up once per run, and the tests skipped
//! where the machine lacks it.
//!
//! - **PostgreSQL**: `INTEGRATION_HUB_TEST_POSTGRES_URL` (a database on an existing server the
//!   tests may create databases from), or else one throwaway cluster for the whole run
//!   (`pg_cluster`), started on first use and stopped by its watchdog when the run ends.
//! - **Node.js** for the OAuth tests' provider: `npm ci` of the repository's lock file (its
//!   `oauth2-mock-server`), once, into the cache directory.
//! - **python3** for the webhook tests' verifier: a virtual environment with
//!   `tests/webhooks/requirements.txt`, once, into the cache directory.
//!
//! The cache directory is `$INTEGRATION_HUB_TOOLS_DIR`, else
//! `$XDG_CACHE_HOME/integration-hub/tools`, else `$HOME/.cache/integration-hub/tools`; an entry is keyed by a hash of the files it is made
//! from, so a changed lock file makes a new one and an unchanged one needs no network.
//!
//! A test starts with `needs!(Postgres)` (or `Node`, `Python`, several): where a part is
//! missing it returns at once, after a `SKIPPED` line on stderr (written past the test
//! harness's capture, so it shows). When the test binary exits, an `atexit` handler prints one
//! summary: each missing part, why, the tests it skipped and how to enable them. With
//! `INTEGRATION_HUB_TEST_REQUIRE=all` (or a list: `postgres,node,python,tmpfs`) a missing part fails
//! the test instead.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use crate::pg_cluster::Cluster;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Postgres,
    Node,
    Python,
    /// For the disk fault tests: root and `mount`, for a size-limited tmpfs.
    Tmpfs,
}

impl Part {
    const ALL: [Part; 4] = [Part::Postgres, Part::Node, Part::Python, Part::Tmpfs];

    /// Its name in `INTEGRATION_HUB_TEST_REQUIRE`.
    fn key(self) -> &'static str {
        match self {
            Part::Postgres => "postgres",
            Part::Node => "node",
            Part::Python => "python",
            Part::Tmpfs => "tmpfs",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Part::Postgres => "PostgreSQL (server binaries, or INTEGRATION_HUB_TEST_POSTGRES_URL)",
            Part::Node => "Node.js and npm (the OAuth tests' provider, oauth2-mock-server)",
            Part::Python => "python3 with venv (the webhook tests' verifier, standardwebhooks)",
            Part::Tmpfs => "a size-limited tmpfs (root and the `mount` program)",
        }
    }

    fn enable(self) -> String {
        let tools = tools_dir().display().to_string();
        match self {
            Part::Postgres => "install PostgreSQL's server programs (Debian/Ubuntu: `sudo apt-get \
                install postgresql`; macOS: `brew install postgresql@17`): the tests start and \
                remove a cluster of their own. Or name a server: \
                INTEGRATION_HUB_TEST_POSTGRES_URL=postgres://user:password@host:5432/database"
                .to_owned(),
            Part::Node => format!(
                "install Node.js 18+ with npm (Debian/Ubuntu: `sudo apt-get install nodejs \
                 npm`; macOS: `brew install node`); the next run installs oauth2-mock-server \
                 once from the npm registry into {tools}"
            ),
            Part::Python => format!(
                "install python3 with its venv module (Debian/Ubuntu: `sudo apt-get install \
                 python3-venv`; macOS: `brew install python`); the next run installs \
                 standardwebhooks once from PyPI into {tools}"
            ),
            Part::Tmpfs => "run the tests as root where `mount` is installed (CI does)".to_owned(),
        }
    }

    /// Whether it is there (set up on first ask), or why not.
    fn status(self) -> Result<(), &'static str> {
        let reason = match self {
            Part::Postgres => postgres().as_ref().err(),
            Part::Node => oauth_provider().as_ref().err(),
            Part::Python => webhook_python().as_ref().err(),
            Part::Tmpfs => return Ok(()),
        };
        reason.map_or(Ok(()), |r| Err(r.as_str()))
    }
}

/// Returns from the test, recorded as skipped, unless every part named is there.
#[macro_export]
macro_rules! needs {
    ($($part:ident),*) => {
        if !$crate::needs::all(&[$($crate::needs::Part::$part),*]) {
            return;
        }
    };
}

/// The tests skipped so far: the part each lacked, the test, why.
static SKIPPED: Mutex<Vec<(Part, String, String)>> = Mutex::new(Vec::new());

/// Whether the machine has every part in `parts`. When not, records the calling test (named by
/// its thread, as the test harness names it) as skipped, or fails it when the part is required.
pub fn all(parts: &[Part]) -> bool {
    let missing: Vec<(Part, &str)> = parts
        .iter()
        .filter_map(|&part| part.status().err().map(|why| (part, why)))
        .collect();
    for &(part, why) in &missing {
        skip(part, why);
    }
    missing.is_empty()
}

/// Records the calling test as skipped for lack of `part` (`why`), or fails it when
/// `INTEGRATION_HUB_TEST_REQUIRE` requires the part. The caller returns.
pub fn skip(part: Part, why: &str) {
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    assert!(
        !required(part),
        "{test} needs {} and INTEGRATION_HUB_TEST_REQUIRE requires it: {why}",
        part.what()
    );
    say(&format!("SKIPPED {test}: needs {} ({why})", part.what()));
    let mut skipped = SKIPPED.lock().unwrap_or_else(|p| p.into_inner());
    if skipped.is_empty() {
        register_summary();
    }
    skipped.push((part, test, why.to_owned()));
}

/// Whether `INTEGRATION_HUB_TEST_REQUIRE` (`all`, or a comma list of part names) names `part`.
fn required(part: Part) -> bool {
    let Ok(list) = std::env::var("INTEGRATION_HUB_TEST_REQUIRE") else {
        return false;
    };
    list.split(',').map(str::trim).any(|name| {
        assert!(
            name == "all" || Part::ALL.iter().any(|p| p.key() == name),
            "INTEGRATION_HUB_TEST_REQUIRE: unknown part {name:?} (all, postgres, node, python, tmpfs)"
        );
        name == "all" || name == part.key()
    })
}

/// A line on the process's stderr, past the test harness's capture of `eprintln!`, in one
/// write so that it does not interleave with the harness's own lines.
fn say(line: &str) {
    let text = format!("integration-hub tests: {line}\n");
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

fn register_summary() {
    extern "C" fn summary() {
        // At exit: never panic across this boundary, never wait for a lock.
        let Ok(skipped) = SKIPPED.try_lock() else {
            return;
        };
        let mut out = String::new();
        let tests: std::collections::BTreeSet<&str> =
            skipped.iter().map(|(_, t, _)| t.as_str()).collect();
        out.push_str(&format!(
            "{} tests SKIPPED: this machine lacks what they need \
             (INTEGRATION_HUB_TEST_REQUIRE=all turns a skip into a failure)\n",
            tests.len()
        ));
        for part in Part::ALL {
            let mut names: Vec<&str> = skipped
                .iter()
                .filter(|(p, _, _)| *p == part)
                .map(|(_, t, _)| t.as_str())
                .collect();
            if names.is_empty() {
                continue;
            }
            names.sort_unstable();
            let whys: std::collections::BTreeSet<&str> = skipped
                .iter()
                .filter(|(p, _, _)| *p == part)
                .map(|(_, _, why)| why.as_str())
                .collect();
            out.push_str(&format!(
                "- missing {}: {} tests skipped\n  why: {}\n  to run them: {}\n",
                part.what(),
                names.len(),
                whys.into_iter().collect::<Vec<_>>().join("; "),
                part.enable()
            ));
            for name in names {
                out.push_str(&format!("    {name}\n"));
            }
        }
        let text = format!("integration-hub tests: {}\n", out.trim_end());
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
    // SAFETY: `summary` is a plain function that lives as long as the process.
    unsafe {
        libc::atexit(summary);
    }
}

/// Where one-time setups go (the CI scripts' tools too).
fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("INTEGRATION_HUB_TOOLS_DIR").filter(|v| !v.is_empty()) {
        return dir.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    cache.join("integration-hub/tools")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tools/<name>-<hash of inputs>`, made once by `make` into a temporary sibling that is
/// renamed when complete: an interrupted setup is never taken for a finished one, and a
/// concurrent run's finished one is kept.
fn cached(
    name: &str,
    inputs: &[&Path],
    what: &str,
    make: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    for input in inputs {
        let bytes = std::fs::read(input).map_err(|e| format!("{}: {e}", input.display()))?;
        hash.update(&bytes);
    }
    let hex: String = hash.finish().as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tools = tools_dir();
    let dir = tools.join(format!("{name}-{hex}"));
    if dir.is_dir() {
        return Ok(dir);
    }
    std::fs::create_dir_all(&tools).map_err(|e| format!("{}: {e}", tools.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(&format!(".{name}-"))
        .tempdir_in(&tools)
        .map_err(|e| format!("{}: {e}", tools.display()))?;
    say(&format!(
        "one-time setup: {what} into {} (later runs reuse it, offline)",
        dir.display()
    ));
    let started = Instant::now();
    make(scratch.path())?;
    let made = scratch.keep();
    if std::fs::rename(&made, &dir).is_err() && dir.is_dir() {
        let _ = std::fs::remove_dir_all(&made);
    }
    say(&format!("one-time setup done in {:.0?}", started.elapsed()));
    Ok(dir)
}

/// Runs a setup step with its output on the terminal; an error names it.
fn step(command: &mut Command) -> Result<(), String> {
    let shown = format!("{command:?}");
    match command.stdin(Stdio::null()).status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("{shown} failed ({status})")),
        Err(err) => Err(format!("{shown}: {err}")),
    }
}

/// Whether `program args` runs and exits 0.
fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The PostgreSQL the run uses: a URL of a database to create test databases from.
pub struct Postgres {
    pub admin_url: String,
    /// The throwaway cluster's watchdog pipe: closing it (at exit) stops the cluster.
    _watchdog: Option<ChildStdin>,
}

pub fn postgres() -> &'static Result<Postgres, String> {
    static POSTGRES: OnceLock<Result<Postgres, String>> = OnceLock::new();
    POSTGRES.get_or_init(|| {
        if let Some(url) = std::env::var("INTEGRATION_HUB_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            return Ok(Postgres {
                admin_url: url,
                _watchdog: None,
            });
        }
        let started = Instant::now();
        let cluster = Cluster::start("-c fsync=off -c max_connections=300")?;
        let address = cluster.address();
        let (admin_url, watchdog) = cluster.stop_when_this_process_ends()?;
        say(&format!(
            "a throwaway PostgreSQL cluster for this run at {address} (started in {:.1?}; \
             stopped and removed when the tests end)",
            started.elapsed()
        ));
        Ok(Postgres {
            admin_url,
            _watchdog: Some(watchdog),
        })
    })
}

/// The OAuth provider's script, beside an `npm ci` of the repository's lock file.
pub fn oauth_provider() -> &'static Result<PathBuf, String> {
    static PROVIDER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PROVIDER.get_or_init(|| {
        if !works("node", &["--version"]) {
            return Err("`node` was not found on the PATH".into());
        }
        if !works("npm", &["--version"]) {
            return Err("`npm` was not found on the PATH".into());
        }
        let (package, lock) = (
            repo().join("package.json"),
            repo().join("package-lock.json"),
        );
        let dir = cached(
            "oauth-provider",
            &[&package, &lock],
            "npm ci (oauth2-mock-server, the OAuth tests' provider)",
            |dir| {
                for file in [&package, &lock] {
                    let to = dir.join(file.file_name().expect("a file name"));
                    std::fs::copy(file, to).map_err(|e| e.to_string())?;
                }
                // Optional packages are buf's binaries, which the tests do not use.
                step(
                    Command::new("npm")
                        .args(["ci", "--omit=optional", "--no-audit", "--no-fund"])
                        .args(["--loglevel=error"])
                        .current_dir(dir),
                )
            },
        )?;
        // Node resolves the script's imports beside the script: put this run's copy there.
        let script = dir.join("provider.mjs");
        let fresh = tempfile::NamedTempFile::new_in(&dir).map_err(|e| e.to_string())?;
        std::fs::copy(repo().join("tests/oauth/provider.mjs"), fresh.path())
            .map_err(|e| e.to_string())?;
        fresh.persist(&script).map_err(|e| e.to_string())?;
        Ok(script)
    })
}

/// The Python that runs the webhook receiver, with `standardwebhooks` installed:
/// `WEBHOOK_RECEIVER_PYTHON`, or a virtual environment made once.
pub fn webhook_python() -> &'static Result<PathBuf, String> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PYTHON.get_or_init(|| {
        if let Ok(python) = std::env::var("WEBHOOK_RECEIVER_PYTHON") {
            return Ok(python.into());
        }
        if !works("python3", &["--version"]) {
            return Err("`python3` was not found on the PATH".into());
        }
        if !works("python3", &["-c", "import venv, ensurepip"]) {
            return Err("python3 has no venv module with pip (Debian: python3-venv)".into());
        }
        let requirements = repo().join("tests/webhooks/requirements.txt");
        let venv = cached(
            "webhook-receiver-venv",
            &[&requirements],
            "a Python virtual environment with tests/webhooks/requirements.txt \
             (standardwebhooks, the webhook tests' verifier)",
            |dir| {
                step(Command::new("python3").args(["-m", "venv"]).arg(dir))?;
                step(
                    Command::new(dir.join("bin/python"))
                        .args(["-m", "pip", "install", "--quiet"])
                        .args(["--disable-pip-version-check", "-r"])
                        .arg(&requirements),
                )
            },
        )?;
        Ok(venv.join("bin/python"))
    })
}
