//! A throwaway PostgreSQL cluster for tests.
//!
//! [`PgCluster::start`] runs `initdb` in a fresh directory under `/tmp` and
//! `pg_ctl start` on a free TCP port of 127.0.0.1 (and a unix socket in the
//! same directory), with `fsync` off and `trust` authentication on loopback:
//! a disposable server, never one to keep data in. [`PgCluster::fresh_database`]
//! creates an empty database with a unique name and returns its URL, so many
//! tests can share one cluster and still not see each other's rows.
//!
//! # Finding PostgreSQL
//!
//! `initdb` and `pg_ctl` are looked up in `$PG_HARNESS_BIN_DIR` when set, then
//! in `PATH`, then in `/usr/lib/postgresql/<version>/bin` (Debian's
//! `postgresql` package, newest version first), `/usr/local/bin` and
//! `/usr/local/pgsql/bin`. When there is no `initdb` the harness panics with a
//! message saying to install the `postgresql` package: tests that need a
//! database fail, they never skip silently.
//!
//! # Running as root
//!
//! PostgreSQL refuses to run as root. When the tests run as root (as CI
//! does), every PostgreSQL program is run as the `postgres` system user
//! through `runuser -u postgres --`, on a directory chowned to that user.
//! When there is no such user, the harness creates it with
//! `useradd --system --no-create-home postgres` (the only thing it creates
//! outside its temp directory). As any other user, the programs run as that
//! user.
//!
//! # Stopping
//!
//! A cluster is stopped (`pg_ctl -m immediate stop`) and its directory
//! removed when the [`PgCluster`] is dropped, which also happens when a test
//! panics and unwinds. A cluster can also outlive its owner without being
//! dropped: the one [`PgCluster::shared`] keeps in a static (statics are never
//! dropped), or any cluster of a process that aborts or is killed. For those,
//! every cluster has a watchdog: a small `sh` loop, started in its own session
//! so that a Ctrl-C of the test run does not stop it first, which checks every
//! half second that the test process (`/proc/<pid>`) is still there and, once
//! it is gone, stops the cluster and removes the directory. A dropped cluster
//! ends its watchdog first.
#![forbid(unsafe_code)]

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// The system user PostgreSQL runs as when the tests run as root.
const PG_USER: &str = "postgres";
/// Attempts to start on a free port (another process may take the port
/// between the check and the start).
const START_ATTEMPTS: usize = 5;

/// A running throwaway PostgreSQL cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_root: bool,
    watchdog: Mutex<Option<Child>>,
}

/// The PostgreSQL programs' directory, or a panic saying what to install.
fn bin_dir() -> PathBuf {
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os("PG_HARNESS_BIN_DIR") {
        let d = PathBuf::from(d);
        assert!(
            has_tools(&d),
            "pg-harness: PG_HARNESS_BIN_DIR={} holds no initdb and pg_ctl",
            d.display()
        );
        return d;
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.split('.').next()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    debian.sort_by_key(|d| std::cmp::Reverse(d.0));
    candidates.extend(debian.into_iter().map(|(_, p)| p));
    candidates.push("/usr/local/bin".into());
    candidates.push("/usr/local/pgsql/bin".into());
    candidates
        .into_iter()
        .find(|d| has_tools(d))
        .unwrap_or_else(|| {
            panic!(
                "pg-harness: no PostgreSQL server programs (initdb, pg_ctl) in PATH, \
             /usr/lib/postgresql/*/bin or /usr/local/bin. Install Debian's `postgresql` \
             package (apt-get install --no-install-recommends postgresql) or set \
             PG_HARNESS_BIN_DIR; the PostgreSQL tests need it and do not skip."
            )
        })
}

/// True when this process runs as root (`/proc/self` belongs to the
/// effective user).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Output of a command that must succeed.
fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("pg-harness: cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "pg-harness: {what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The uid and gid of the `postgres` user, creating it when missing.
fn postgres_user() -> (u32, u32) {
    let exists = Command::new("id")
        .args(["-u", PG_USER])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        run(
            Command::new("useradd").args(["--system", "--no-create-home", PG_USER]),
            "useradd --system --no-create-home postgres",
        );
    }
    let id = |flag: &str| -> u32 {
        let out = run(Command::new("id").args([flag, PG_USER]), "id postgres");
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("pg-harness: `id {flag} postgres` printed {out:?}"))
    };
    (id("-u"), id("-g"))
}

/// A TCP port of 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("pg-harness: cannot find a free port: {e}"))
}

impl PgCluster {
    /// Creates and starts a new cluster. Panics (with PostgreSQL's log) when
    /// it cannot.
    pub fn start() -> PgCluster {
        PgCluster::start_with(&[], &[])
    }

    /// Creates and starts a new cluster with `files` written into its data
    /// directory first (owned by the server's user, mode 0600: a TLS key
    /// must be) and `settings` passed to the server as `-c name=value`
    /// (values without spaces; relative paths are relative to the data
    /// directory). For TLS: `ssl=on`, `ssl_cert_file=server.pem`,
    /// `ssl_key_file=server.key`.
    pub fn start_with(files: &[(&str, &[u8])], settings: &[(&str, &str)]) -> PgCluster {
        let bin = bin_dir();
        let as_root = running_as_root();
        let owner = as_root.then(postgres_user);
        let dir = tempfile::Builder::new()
            .prefix("pg-harness-")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("pg-harness: cannot create a temp dir: {e}"))
            .keep();
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("pg-harness: cannot chown {}: {e}", dir.display()));
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            port: 0,
            as_root,
            watchdog: Mutex::new(None),
        };
        cluster.start_watchdog();
        let data = cluster.data_dir();
        run(
            cluster
                .pg_command("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "postgres", "--no-sync"])
                .args(["-E", "UTF8", "--locale=C"]),
            "initdb",
        );
        for (name, contents) in files {
            let path = data.join(name);
            std::fs::write(&path, contents)
                .unwrap_or_else(|e| panic!("pg-harness: cannot write {}: {e}", path.display()));
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .unwrap_or_else(|e| panic!("pg-harness: cannot chmod {}: {e}", path.display()));
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .unwrap_or_else(|e| panic!("pg-harness: cannot chown {}: {e}", path.display()));
            }
        }
        let extra: String = settings
            .iter()
            .map(|(k, v)| format!(" -c {k}={v}"))
            .collect();
        for attempt in 1..=START_ATTEMPTS {
            cluster.port = free_port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off -c max_connections=300{extra}",
                cluster.port,
                cluster.dir.display()
            );
            let out = cluster
                .pg_command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(cluster.log_file())
                .args(["-w", "-t", "60", "-o", &options, "start"])
                .output()
                .unwrap_or_else(|e| panic!("pg-harness: cannot run pg_ctl: {e}"));
            if out.status.success() {
                return cluster;
            }
            let log = cluster.log();
            let port_taken = log.contains("could not bind") || log.contains("already in use");
            if !port_taken || attempt == START_ATTEMPTS {
                panic!(
                    "pg-harness: pg_ctl start failed ({}):\n{}\n{}\nserver log:\n{log}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// One cluster per test process, started on first use and stopped by its
    /// watchdog when the process exits (see the crate docs). Give each test
    /// its own database with [`PgCluster::fresh_database`].
    pub fn shared() -> &'static PgCluster {
        static SHARED: OnceLock<PgCluster> = OnceLock::new();
        SHARED.get_or_init(PgCluster::start)
    }

    /// The TCP port the server listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the unix socket (`.s.PGSQL.<port>`), the data
    /// directory (`data/`) and the server log (`postgres.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The URL of the `postgres` database as the `postgres` superuser.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The URL of database `name` on this cluster, as the `postgres`
    /// superuser (no password: loopback connections are trusted).
    pub fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates an empty database with a name used nowhere else and returns
    /// its URL.
    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "t_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        simple_query(&self.url(), &format!("CREATE DATABASE {name}"));
        self.database_url(&name)
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.log_file()) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// A PostgreSQL program, run as `postgres` when we are root, in the
    /// cluster directory.
    fn pg_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", PG_USER, "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.current_dir(&self.dir).stdin(Stdio::null());
        cmd
    }

    /// Starts the process that stops the cluster once this process is gone.
    fn start_watchdog(&self) {
        const SCRIPT: &str = r#"trap '' INT HUP TERM PIPE
while [ -e "/proc/$1" ] && [ -d "$2" ]; do sleep 0.5; done
if [ -d "$2/data" ]; then
    if [ "$4" = root ]; then
        runuser -u postgres -- "$3" -D "$2/data" -m immediate -w stop
    else
        "$3" -D "$2/data" -m immediate -w stop
    fi
fi
rm -rf "$2""#;
        let mut cmd = if Path::new("/usr/bin/setsid").exists() {
            let mut c = Command::new("/usr/bin/setsid");
            c.arg("sh");
            c
        } else {
            Command::new("sh")
        };
        let child = cmd
            .args(["-c", SCRIPT, "pg-harness-watchdog"])
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .arg(self.bin.join("pg_ctl"))
            .arg(if self.as_root { "root" } else { "user" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("pg-harness: cannot start the watchdog: {e}"));
        *self.watchdog.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if let Some(mut w) = self
            .watchdog
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            let _ = w.kill();
            let _ = w.wait();
        }
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self
                .pg_command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `sql` (one or more statements, simple query protocol) on the
/// database at `url` and returns the rows of the last statement that
/// returned any, as text. Panics on any error: it is for test set-up.
pub fn simple_query(url: &str, sql: &str) -> Vec<Vec<Option<String>>> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    // On a thread of its own so that it works from inside a test runtime too.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("pg-harness: cannot build a runtime: {e}"));
        rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("pg-harness: cannot connect to {url}: {e}"));
            let conn = tokio::spawn(conn);
            let messages = client
                .simple_query(&sql)
                .await
                .unwrap_or_else(|e| panic!("pg-harness: {sql:?} failed: {e}"));
            drop(client);
            let _ = conn.await;
            let mut rows = Vec::new();
            for m in messages {
                match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => {
                        rows.push((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect());
                    }
                    tokio_postgres::SimpleQueryMessage::CommandComplete(_) if !rows.is_empty() => {
                        return rows;
                    }
                    _ => {}
                }
            }
            rows
        })
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_serves_fresh_databases_and_stops() {
        let c = PgCluster::start();
        let dir = c.dir().to_owned();
        let a = c.fresh_database();
        let b = c.fresh_database();
        assert_ne!(a, b);
        simple_query(&a, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
        let rows = simple_query(&b, "SELECT count(*) FROM pg_tables WHERE tablename = 't'");
        assert_eq!(rows, vec![vec![Some("0".to_owned())]]);
        let rows = simple_query(&a, "SELECT x FROM t");
        assert_eq!(rows, vec![vec![Some("1".to_owned())]]);
        drop(c);
        assert!(!dir.exists(), "the directory is removed");
    }

    #[test]
    fn a_panicking_test_still_stops_its_cluster() {
        let dir = std::thread::spawn(|| {
            let c = PgCluster::start();
            let d = c.dir().to_owned();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                let _c = c;
                panic!("test failure");
            }));
            assert!(r.is_err());
            d
        })
        .join()
        .unwrap();
        assert!(!dir.exists());
    }
}
