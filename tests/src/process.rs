//! A vault driven through the real `secret-mcp` binary: local commands, and
//! `secret-mcp serve` processes started on 127.0.0.1:0 and killed with
//! SIGKILL, on SQLite (the default) or on the storage URL given.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use secret_mcp_grpc::{Client, ClientOptions, Error as GrpcError};
use tenant_vault::{Secret, SecretPath};

/// A path the test spells out.
pub fn path(s: &str) -> SecretPath {
    SecretPath::parse(s).unwrap()
}

/// The status code of a client error (`None`: not a status).
pub fn code(e: &GrpcError) -> Option<tonic::Code> {
    match e {
        GrpcError::Status { code, .. } => Some(*code),
        _ => None,
    }
}

/// Every variable `secret-mcp` reads, removed from the children's
/// environment so the caller's shell cannot leak into a test.
const ENV_VARS: [&str; 18] = [
    "SECRET_MCP_KEY_FILE",
    "SECRET_MCP_PASSPHRASE_FILE",
    "SECRET_MCP_TOKEN",
    "SECRET_MCP_ADDR",
    "SECRET_MCP_AUDIT_FILE",
    "SECRET_MCP_CONFIG",
    "SECRET_MCP_LISTEN",
    "SECRET_MCP_TLS_CA",
    "SECRET_MCP_TLS_CERT",
    "SECRET_MCP_TLS_KEY",
    "SECRET_MCP_TLS_DOMAIN",
    "SECRET_MCP_TLS_SERVER_CERT",
    "SECRET_MCP_TLS_SERVER_KEY",
    "SECRET_MCP_TLS_CLIENT_CA",
    "SECRET_MCP_STORAGE",
    "SECRET_MCP_DATA",
    "SECRET_MCP_MIGRATE_FROM",
    "SECRET_MCP_MIGRATE_TO",
];

/// A vault in a temporary directory (data directory, key file, logs),
/// stored in `DIR/data/vault.db` or in the storage URL given.
#[derive(Debug)]
pub struct CliEnv {
    /// The temporary directory.
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    storage: Option<String>,
}

impl CliEnv {
    /// An empty environment; `storage` is passed as `SECRET_MCP_STORAGE`.
    pub fn new(storage: Option<String>) -> CliEnv {
        CliEnv {
            dir: tempfile::tempdir().unwrap(),
            bin: crate::bin("secret-mcp", "secret-mcp"),
            storage,
        }
    }

    /// The data directory.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The key file `init_with_key_file` creates.
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("vault.key")
    }

    /// `secret-mcp ARGS` in this environment, stdin closed.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        for v in ENV_VARS {
            c.env_remove(v);
        }
        c.args(args)
            .env("SECRET_MCP_DATA", self.data())
            .env("RUST_LOG", "warn")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        if let Some(s) = &self.storage {
            c.env("SECRET_MCP_STORAGE", s);
        }
        c
    }

    /// Runs a command that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args).output().unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// `init` with a new key file.
    pub fn init_with_key_file(&self) {
        self.ok(&["init", "--key-file", self.key().to_str().unwrap()]);
    }

    /// Starts `serve` on 127.0.0.1:0 and waits for its `listening on` line;
    /// its log goes to `DIR/serve-LABEL.log`.
    pub fn serve(&self, label: &str) -> ServerProc {
        let log = self.dir.path().join(format!("serve-{label}.log"));
        let mut child = self
            .cmd(&["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Reads to the end even once nobody waits for lines: closing the
            // pipe early would make the server's next write (the rest of its
            // banner) fail, and the server exit.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        return ServerProc {
                            child,
                            addr: a.trim().to_owned(),
                            log,
                        };
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "server {label} did not start: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
        }
    }
}

/// A running `secret-mcp serve`; killed when dropped.
#[derive(Debug)]
pub struct ServerProc {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    log: PathBuf,
}

impl ServerProc {
    /// SIGKILL (`Child::kill`), then reaps it.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert!(!status.success(), "the server was killed: {status}");
    }

    /// A client holding `token` that never repeats a call (a repeated
    /// check-and-set put after a lost answer would report a conflict for a
    /// write that landed).
    pub async fn client(&self, token: &str) -> Client {
        Client::connect(
            &self.addr,
            ClientOptions {
                token: Some(Secret::from(token)),
                timeout: Duration::from_secs(20),
                retries: 0,
                ..Default::default()
            },
        )
        .await
        .unwrap()
    }

    /// What the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
