//! A PostgreSQL cluster of the tests' own: `initdb` into a temporary directory, `pg_ctl start`
//! on a free loopback port with its socket in that directory. Used twice: the one cluster the
//! whole test run shares when no `INTEGRATION_HUB_TEST_POSTGRES_URL` is given (`needs`), and
//! the fault tests' private clusters, which they restart and kill.
//!
//! initdb refuses to run as root: as root the cluster runs as the `postgres` user (what the
//! Debian and RPM packages create) through `runuser`; as anyone else, as that user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where PostgreSQL's server programs may be, besides the PATH: Debian and Ubuntu
/// (`/usr/lib/postgresql/<version>/bin`), the PGDG RPMs (`/usr/pgsql-<version>/bin`) and
/// Homebrew (`<prefix>/opt/postgresql@<version>/bin`). The newest version wins.
const VERSIONED_PLACES: &[(&str, &str, &str)] = &[
    ("/usr/lib/postgresql", "", "bin"),
    ("/usr", "pgsql-", "bin"),
    ("/opt/homebrew/opt", "postgresql@", "bin"),
    ("/usr/local/opt", "postgresql@", "bin"),
];

/// The programs a cluster needs.
const PROGRAMS: [&str; 3] = ["initdb", "pg_ctl", "postgres"];

/// The directory holding `initdb`, `pg_ctl` and `postgres`, or where it was looked for.
pub fn server_programs() -> Result<PathBuf, String> {
    let holds_all = |dir: &Path| PROGRAMS.iter().all(|p| dir.join(p).is_file());
    let path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = std::env::split_paths(&path).find(|dir| holds_all(dir)) {
        return Ok(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = Vec::new();
    for (parent, prefix, bin) in VERSIONED_PLACES {
        let Ok(entries) = std::fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(version) = name.strip_prefix(prefix) else {
                continue;
            };
            let major = version.split('.').next().and_then(|v| v.parse().ok());
            let dir = entry.path().join(bin);
            if let Some(major) = major.filter(|_| holds_all(&dir)) {
                found.push((major, dir));
            }
        }
    }
    found.sort();
    found.pop().map(|(_, dir)| dir).ok_or_else(|| {
        "initdb, pg_ctl and postgres were found neither on the PATH nor in \
         /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin or Homebrew's opt/postgresql@*/bin"
            .to_owned()
    })
}

/// Whether this process runs as root (initdb refuses to).
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `program args`; its output on failure.
pub fn run(program: &str, args: &[&str]) -> Result<(), String> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{program} {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(err) => Err(format!("{program}: {err}")),
    }
}

pub struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    password: String,
    /// Server settings beyond port, socket and address (`-c name=value ...`).
    settings: String,
}

impl Cluster {
    /// initdb and start, with `settings` added to the server's command line. A user
    /// `postgres` with a random password (scram-sha-256) owns it: nothing else on the
    /// machine can connect without reading the password from this process.
    pub fn start(settings: &str) -> Result<Cluster, String> {
        let bin = server_programs()?;
        let dir = tempfile::Builder::new()
            .prefix("integration-hub-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let path = dir.path().display().to_string();
        if is_root() {
            run("chown", &["postgres:postgres", &path]).map_err(|e| {
                format!("running as root, the cluster runs as the `postgres` user: {e}")
            })?;
        }
        let password = uuid::Uuid::new_v4().simple().to_string();
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password).map_err(|e| e.to_string())?;
        if is_root() {
            run(
                "chown",
                &["postgres:postgres", &pwfile.display().to_string()],
            )?;
        }
        let mut cluster = Cluster {
            dir,
            bin,
            port: 0,
            password,
            settings: settings.to_owned(),
        };
        cluster.as_owner(
            "initdb",
            &[
                "-D",
                &cluster.data(),
                "-U",
                "postgres",
                "-A",
                "scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        // A free port can be taken between the probe and the start: try another.
        let mut last = String::new();
        for _ in 0..3 {
            cluster.port = crate::helpers::free_port();
            match cluster.pg_ctl(&["start"]) {
                Ok(()) => return Ok(cluster),
                Err(err) => last = err,
            }
        }
        Err(format!(
            "pg_ctl start: {last}; its log: {}",
            cluster.log_tail()
        ))
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// The cluster's address, `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A URL of database `database` as the `postgres` user.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres:{}@{}/{database}",
            self.password,
            self.address()
        )
    }

    /// `tool args` as the user that owns the cluster.
    fn owner_command(&self, tool: &str, args: &[&str]) -> Vec<String> {
        let tool = self.bin.join(tool).display().to_string();
        let mut all = Vec::new();
        if is_root() {
            all.extend(["runuser", "-u", "postgres", "--"].map(String::from));
        }
        all.push(tool);
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    }

    fn as_owner(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let all = self.owner_command(tool, args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run(all[0], &all[1..])
    }

    /// `pg_ctl` with this cluster's data directory, options and log, waiting up to 60 s.
    fn pg_ctl_command(&self, action: &[&str]) -> Vec<String> {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 {}",
            self.port,
            self.dir.path().display(),
            self.settings
        );
        let log = self.dir.path().join("log").display().to_string();
        let data = self.data();
        let mut args = vec!["-D", &data, "-o", &options, "-l", &log, "-w", "-t", "60"];
        args.extend_from_slice(action);
        self.owner_command("pg_ctl", &args)
    }

    pub fn pg_ctl(&self, action: &[&str]) -> Result<(), String> {
        let all = self.pg_ctl_command(action);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        run(all[0], &all[1..])
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    pub fn restart(&self) {
        self.pg_ctl(&["-m", "fast", "restart"])
            .expect("restart PostgreSQL");
    }

    /// SIGKILL to the postmaster, then a start (which recovers from the WAL).
    pub fn kill_and_start(&self) {
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid"))
            .expect("postmaster.pid");
        let pid = pid
            .lines()
            .next()
            .expect("pid line")
            .trim()
            .parse()
            .expect("a pid");
        assert!(
            crate::process::send_signal(pid, libc::SIGKILL),
            "kill -9 the postmaster"
        );
        // Its backends notice and exit; until they have, the start refuses.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.pg_ctl(&["start"]) {
                Ok(()) => return,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(err) => panic!("PostgreSQL did not start after kill -9: {err}"),
            }
        }
    }

    /// Hands the cluster to a watchdog: a shell in a process group of its own (so a Ctrl-C at
    /// the terminal does not reach it) that waits for end of file on a pipe only this process
    /// holds, then stops the cluster and removes its directory. The kernel closes the pipe
    /// however this process ends: tests done, a test failed, Ctrl-C or kill -9. The returned
    /// pipe end must live as long as the cluster is used.
    pub fn stop_when_this_process_ends(self) -> Result<(String, std::process::ChildStdin), String> {
        use std::os::unix::process::CommandExt;
        let stop = self.pg_ctl_command(&["-m", "immediate", "stop"]);
        let dir = self.dir.path().display().to_string();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"trap '' INT TERM HUP QUIT; read -r _; "$@" >/dev/null 2>&1; rm -rf "$DIR""#)
            .arg("watchdog")
            .args(&stop)
            .env("DIR", &dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start the cluster's watchdog (sh): {e}"))?;
        let pipe = child.stdin.take().expect("the watchdog's stdin");
        let url = self.url("postgres");
        // The watchdog stops the cluster and removes its directory, not this value's drop.
        std::mem::forget(self);
        Ok((url, pipe))
    }
}

/// Stopped on drop (the fault tests' clusters); `stop_when_this_process_ends` hands the shared
/// one to its watchdog instead.
impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "stop"]);
    }
}

/// The watchdog stops the cluster and removes its directory once the pipe closes, as it does
/// when the test process ends.
#[test]
fn the_watchdog_stops_and_removes_a_cluster_when_its_pipe_closes() {
    let cluster = match Cluster::start("") {
        Ok(cluster) => cluster,
        Err(why) => {
            crate::needs::skip(crate::needs::Part::Postgres, &why);
            return;
        }
    };
    let (dir, address) = (cluster.dir.path().to_owned(), cluster.address());
    let (_, pipe) = cluster.stop_when_this_process_ends().expect("a watchdog");
    assert!(
        std::net::TcpStream::connect(&address).is_ok(),
        "the cluster runs"
    );
    drop(pipe);
    let deadline = Instant::now() + Duration::from_secs(30);
    while dir.exists() || std::net::TcpStream::connect(&address).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the cluster at {address} ({}) still runs 30 s after its pipe closed",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
