//! The real `secret-mcp` binary as a server (`serve`, `dev`), in remote mode
//! against it, and `run`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_secret-mcp");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn data(&self) -> PathBuf {
        self.path().join("data")
    }

    /// A command on the embedded vault (local mode), as root.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .env("SECRET_MCP_DATA", self.data())
            .env("RUST_LOG", "warn")
            .current_dir(self.path())
            .stdin(Stdio::null());
        for v in [
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
        ] {
            c.env_remove(v);
        }
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    }

    /// A key-file vault with tenants acme and globex.
    fn init(&self) {
        self.ok(&["init", "--key-file", "vault.key"]);
        self.ok(&["tenant", "create", "acme"]);
        self.ok(&["tenant", "create", "globex"]);
    }

    fn token(&self, args: &[&str]) -> String {
        let mut a = vec!["token", "issue"];
        a.extend_from_slice(args);
        self.ok(&a).trim().to_owned()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

/// A server process, stopped with SIGTERM when dropped.
struct Running {
    child: Child,
    addr: String,
    /// Every stdout line read so far.
    lines: Vec<String>,
}

impl Running {
    /// Starts `cmd` and reads stdout until `listening on ADDR` and then
    /// until `until` says the banner is complete.
    fn start(mut cmd: Command, until: impl Fn(&[String]) -> bool) -> Running {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
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
        let mut lines = Vec::new();
        let mut addr = None;
        while addr.is_none() || !until(&lines) {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(a) = line.strip_prefix("listening on ") {
                        addr = Some(a.trim().to_owned());
                    }
                    lines.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let o = child.wait_with_output().unwrap();
                    panic!(
                        "the server did not start: stdout {lines:?}, stderr {}",
                        stderr(&o)
                    );
                }
            }
        }
        Running {
            child,
            addr: addr.unwrap(),
            lines,
        }
    }

    /// SIGTERM, then the exit status and stderr.
    fn stop(mut self) -> (i32, String) {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return (s.code().unwrap_or(-1), err);
            }
            assert!(Instant::now() < deadline, "no exit 30 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(e: &Env, extra: &[&str]) -> Running {
    let mut c = e.cmd(&["serve"]);
    c.args(extra);
    Running::start(c, |_| true)
}

#[test]
fn serve_prints_its_address_and_stops_on_sigterm() {
    let e = Env::new();
    e.init();
    std::fs::write(
        e.path().join("server.toml"),
        "# relative paths are relative to this file\nlisten = \"127.0.0.1:0\"\n\
         data_dir = \"data\"\nlog_format = \"json\"\nrequest_timeout_secs = 10\n",
    )
    .unwrap();
    // The config names the data directory: the default one must not be used.
    let mut c = e.cmd(&["serve", "--config", "server.toml"]);
    c.env_remove("SECRET_MCP_DATA").env("RUST_LOG", "info");
    let s = Running::start(c, |_| true);
    assert_eq!(s.lines.len(), 1, "{:?}", s.lines);
    let addr: std::net::SocketAddr = s.addr.parse().unwrap();
    assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
    let operator = e.token(&["--operator"]);
    let o = e
        .cmd(&["tenant", "list"])
        .env("SECRET_MCP_ADDR", &s.addr)
        .env("SECRET_MCP_TOKEN", &operator)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("acme\tenterprise"));
    let (code, err) = s.stop();
    assert_eq!(code, 0, "{err}");
    for line in err.lines().filter(|l| !l.is_empty()) {
        assert!(line.starts_with('{'), "json logs: {line}");
        assert!(
            !line.contains(&operator[6..]),
            "a token in the logs: {line}"
        );
    }
}

#[test]
fn remote_mode_prints_what_local_mode_prints() {
    let e = Env::new();
    e.init();
    e.ok(&["put", "tenant/globex/db", "--value", "globex only"]);
    let owner = e.token(&["--tenant", "acme", "--role", "owner"]);
    let viewer = e.token(&["--tenant", "acme", "--role", "viewer"]);
    let operator = e.token(&["--operator", "--grant-read", "acme"]);
    let s = serve(&e, &["--listen", "127.0.0.1:0"]);
    let run = |remote: bool, token: &str, args: &[&str], stdin: &[u8]| -> Output {
        let mut c = e.cmd(args);
        c.env("SECRET_MCP_TOKEN", token).stdin(Stdio::piped());
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        if remote {
            c.env("SECRET_MCP_ADDR", &s.addr);
        }
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    };

    // Writes: the same output for a new secret, each mode its own.
    let binary: Vec<u8> = (0..=255u8).chain([b'\n']).collect();
    for (remote, name) in [(false, "local"), (true, "remote")] {
        let path = format!("tenant/acme/{name}");
        let o = run(remote, &owner, &["put", &path], &binary);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            format!("wrote {path} version 1\n")
        );
    }

    let cases: &[(&str, &[&str], i32)] = &[
        (&owner, &["get", "tenant/acme/local"], 0),
        (&owner, &["get", "tenant/acme/remote"], 0),
        (&owner, &["get", "tenant/acme/remote", "--version", "1"], 0),
        (&owner, &["list", "tenant/acme/"], 0),
        (&owner, &["list", "tenant/acme/", "--limit", "1"], 0),
        (&owner, &["metadata", "tenant/acme/local", "--json"], 0),
        (&owner, &["get", "tenant/acme/missing"], 3),
        (&owner, &["get", "tenant/acme/local", "--version", "9"], 3),
        (&owner, &["get", "tenant/globex/db"], 4),
        (&owner, &["list", "tenant/globex/"], 4),
        (&viewer, &["put", "tenant/acme/local", "--value", "no"], 4),
        (&viewer, &["get", "tenant/acme/local"], 0),
        (
            &owner,
            &["put", "tenant/acme/local", "--value", "x", "--cas", "0"],
            5,
        ),
        (&owner, &["get", "tenant/ACME/x"], 2),
        (&owner, &["tenant", "status", "nope"], 4),
        (&operator, &["tenant", "list"], 0),
        (&operator, &["tenant", "list", "--json"], 0),
        (&operator, &["tenant", "status", "globex"], 0),
        (&operator, &["tenant", "limits", "acme"], 0),
        (&operator, &["token", "list", "--tenant", "acme"], 0),
        (&operator, &["get", "tenant/acme/local"], 0),
        (&operator, &["get", "tenant/globex/db"], 4),
        (&operator, &["tenant", "status", "nope"], 3),
        (&owner, &["token", "revoke", "tok_000000000000"], 3),
        (&viewer, &["token", "list"], 4),
        (&owner, &["audit", "verify"], 4),
        (&owner, &["audit", "tail"], 4),
    ];
    for (token, args, want) in cases {
        let local = run(false, token, args, b"");
        let remote = run(true, token, args, b"");
        assert_eq!(code(&local), *want, "{args:?} local: {}", stderr(&local));
        assert_eq!(
            code(&remote),
            code(&local),
            "{args:?}: remote {} vs local {}",
            stderr(&remote),
            stderr(&local)
        );
        assert_eq!(remote.stdout, local.stdout, "{args:?} stdout");
        assert_eq!(stderr(&remote), stderr(&local), "{args:?} stderr");
    }
    assert_eq!(
        run(true, &owner, &["get", "tenant/acme/local"], b"").stdout,
        binary
    );

    // A token that is no token is refused the same way.
    let bogus = format!("smcpt_{}", "A".repeat(49));
    let local = run(false, &bogus, &["get", "tenant/acme/local"], b"");
    let remote = run(true, &bogus, &["get", "tenant/acme/local"], b"");
    assert_eq!(code(&local), 4, "{}", stderr(&local));
    assert_eq!(code(&remote), 4, "{}", stderr(&remote));
    assert_eq!(stderr(&remote), stderr(&local));

    // init has no remote form.
    let o = run(true, &owner, &["init", "--key-file", "other.key"], b"");
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("no remote form"), "{}", stderr(&o));
    s.stop();
}

#[test]
fn remote_mode_without_a_server_fails_with_code_1() {
    let e = Env::new();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let o = e
        .cmd(&["get", "tenant/acme/x"])
        .env("SECRET_MCP_ADDR", &addr)
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("transport"), "{}", stderr(&o));
}

#[test]
fn plaintext_off_loopback_is_refused_without_the_loud_flag() {
    let e = Env::new();
    e.init();
    let o = e.cmd(&["serve", "--listen", "0.0.0.0:0"]).output().unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--insecure-plaintext-non-loopback"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_passphrase_vault_starts_sealed_until_unsealed() {
    let e = Env::new();
    std::fs::write(e.path().join("pass"), "correct horse battery staple\n").unwrap();
    std::fs::write(e.path().join("wrong"), "not it\n").unwrap();
    e.ok(&[
        "init",
        "--passphrase-file",
        "pass",
        "--kdf-memory-kib",
        "1024",
        "--kdf-iterations",
        "1",
    ]);
    let p = ["--passphrase-file", "pass"];
    e.ok(&["tenant", "create", "acme", p[0], p[1]]);
    e.ok(&["put", "tenant/acme/x", "--value", "sealed away", p[0], p[1]]);
    let operator = e.token(&["--operator", "--grant-read", "acme", p[0], p[1]]);

    let s = serve(&e, &["--listen", "127.0.0.1:0"]);
    let remote = |args: &[&str]| {
        e.cmd(args)
            .env("SECRET_MCP_ADDR", &s.addr)
            .env("SECRET_MCP_TOKEN", &operator)
            .output()
            .unwrap()
    };
    let o = remote(&["server", "status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("sealed:  true\n"));
    let o = remote(&["get", "tenant/acme/x"]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
    assert!(stderr(&o).contains("sealed"), "{}", stderr(&o));

    assert_eq!(
        code(&remote(&["server", "unseal", "--passphrase-file", "wrong"])),
        4
    );
    let o = remote(&["server", "unseal", "--passphrase-file", "pass"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(remote(&["get", "tenant/acme/x"]).stdout, b"sealed away");
    let (code, err) = s.stop();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("starting sealed"), "{err}");
    assert!(!err.contains("correct horse"), "{err}");

    // With the passphrase given, the server starts unsealed.
    let s = serve(
        &e,
        &["--listen", "127.0.0.1:0", "--passphrase-file", "pass"],
    );
    let o = e
        .cmd(&["get", "tenant/acme/x"])
        .env("SECRET_MCP_ADDR", &s.addr)
        .env("SECRET_MCP_TOKEN", &operator)
        .output()
        .unwrap();
    assert_eq!(o.stdout, b"sealed away", "{}", stderr(&o));
    s.stop();
}

#[test]
fn dev_prints_the_address_and_tokens_and_serves_the_demo_tenant() {
    let e = Env::new();
    let mut c = e.cmd(&["dev", "--listen", "127.0.0.1:0"]);
    c.env_remove("SECRET_MCP_DATA");
    let s = Running::start(c, |lines| {
        lines
            .iter()
            .any(|l| l.starts_with("export SECRET_MCP_DEMO_TOKEN="))
    });
    let export = |name: &str| {
        s.lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .unwrap_or_else(|| panic!("no {name} in {:?}", s.lines))
            .to_owned()
    };
    let addr = export("SECRET_MCP_ADDR");
    assert_eq!(addr, format!("http://{}", s.addr));
    let operator = export("SECRET_MCP_TOKEN");
    let owner = export("SECRET_MCP_DEMO_TOKEN");
    assert!(operator.starts_with("smcpo_"), "{operator}");
    assert!(owner.starts_with("smcpt_"), "{owner}");
    let remote = |token: &str, args: &[&str]| {
        let mut c = e.cmd(args);
        c.env("SECRET_MCP_ADDR", &addr)
            .env("SECRET_MCP_TOKEN", token);
        c.output().unwrap()
    };
    let o = remote(&operator, &["get", "tenant/demo/hello"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"hello from the secret-mcp dev server");
    let o = remote(&owner, &["put", "tenant/demo/db", "--value", "s3cret"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = remote(&operator, &["tenant", "create", "other"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = s
        .lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("Secret MCP dev server: a throwaway vault in ")
                .and_then(|r| r.split(", deleted on exit").next())
        })
        .map(PathBuf::from)
        .expect("the banner names the data directory");
    assert!(dir.exists());
    let (code, err) = s.stop();
    assert_eq!(code, 0, "{err}");
    assert!(!dir.exists(), "the temporary vault is removed on exit");
    assert!(!err.contains(&operator[6..]) && !err.contains(&owner[6..]));
}

fn run_cmd(e: &Env, token: Option<&str>, addr: Option<&str>, args: &[&str]) -> Output {
    let mut c = e.cmd(args);
    if let Some(t) = token {
        c.env("SECRET_MCP_TOKEN", t);
    }
    if let Some(a) = addr {
        c.env("SECRET_MCP_ADDR", a);
    }
    c.output().unwrap()
}

#[test]
fn run_passes_secrets_as_environment_and_the_exit_code_through() {
    let e = Env::new();
    e.init();
    e.ok(&["put", "tenant/acme/db/password", "--value", "pw 1"]);
    e.ok(&["put", "tenant/acme/slack-token", "--value", "xoxb"]);
    e.ok(&["put", "tenant/acme/gone", "--value", "old"]);
    e.ok(&["delete", "tenant/acme/gone"]);
    e.ok(&["put", "tenant/globex/db", "--value", "theirs"]);
    let user = e.token(&["--tenant", "acme", "--role", "user"]);
    let s = serve(&e, &["--listen", "127.0.0.1:0"]);

    for addr in [None, Some(s.addr.as_str())] {
        let o = run_cmd(
            &e,
            Some(&user),
            addr,
            &[
                "run",
                "--tenant",
                "acme",
                "--",
                "sh",
                "-c",
                "printf '%s|%s|%s' \"$DB_PASSWORD\" \"$SLACK_TOKEN\" \"${GONE-unset}\"; exit 7",
            ],
        );
        assert_eq!(code(&o), 7, "{addr:?}: {}", stderr(&o));
        assert_eq!(String::from_utf8_lossy(&o.stdout), "pw 1|xoxb|unset");

        let o = run_cmd(
            &e,
            Some(&user),
            addr,
            &[
                "run",
                "--tenant",
                "acme",
                "--map",
                "PW=db/password",
                "--",
                "sh",
                "-c",
                "printf '%s' \"$PW\"; test -z \"$SLACK_TOKEN$SECRET_MCP_TOKEN\"",
            ],
        );
        assert_eq!(code(&o), 0, "{addr:?}: {}", stderr(&o));
        assert_eq!(o.stdout, b"pw 1");

        // Killed by a signal: 128 + the signal, as a shell reports it.
        let o = run_cmd(
            &e,
            Some(&user),
            addr,
            &[
                "run",
                "--tenant",
                "acme",
                "--",
                "sh",
                "-c",
                "kill -s TERM $$",
            ],
        );
        assert_eq!(code(&o), 128 + 15, "{addr:?}: {}", stderr(&o));

        // Another tenant's secrets are refused before anything runs.
        let o = run_cmd(
            &e,
            Some(&user),
            addr,
            &["run", "--tenant", "globex", "--", "sh", "-c", "echo ran"],
        );
        assert_eq!(code(&o), 4, "{addr:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty());

        let o = run_cmd(
            &e,
            Some(&user),
            addr,
            &[
                "run",
                "--tenant",
                "acme",
                "--map",
                "X=missing",
                "--",
                "true",
            ],
        );
        assert_eq!(code(&o), 3, "{addr:?}: {}", stderr(&o));
    }
    let o = run_cmd(
        &e,
        None,
        None,
        &["run", "--tenant", "acme", "--", "no-such-program-h8"],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    s.stop();
}

/// A CA, a server certificate for `localhost` and a client certificate, as
/// PEM files in the env's directory: ca.pem, server.pem, server.key,
/// client.pem, client.key, and other-ca.pem (a CA that signed nothing).
fn write_pki(e: &Env) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |name: &str, file: &str| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        std::fs::write(e.path().join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(e.path().join(format!("{file}.key")), key.serialize_pem()).unwrap();
    };
    leaf("localhost", "server");
    leaf("client.acme", "client");
    std::fs::write(e.path().join("ca.pem"), ca.pem()).unwrap();
    let other_key = KeyPair::generate().unwrap();
    let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    std::fs::write(
        e.path().join("other-ca.pem"),
        other.self_signed(&other_key).unwrap().pem(),
    )
    .unwrap();
}

#[test]
fn remote_mode_over_tls_and_mutual_tls() {
    let e = Env::new();
    e.init();
    write_pki(&e);
    e.ok(&["put", "tenant/acme/x", "--value", "over tls"]);
    let owner = e.token(&["--tenant", "acme", "--role", "owner"]);
    std::fs::write(
        e.path().join("server.toml"),
        "listen = \"127.0.0.1:0\"\ntls_cert = \"server.pem\"\ntls_key = \"server.key\"\n\
         tls_client_ca = \"ca.pem\"\n",
    )
    .unwrap();
    let s = serve(&e, &["--config", "server.toml"]);
    let port = s.addr.rsplit(':').next().unwrap().to_owned();
    let remote = |addr: &str, flags: &[&str]| {
        let mut c = e.cmd(&["get", "tenant/acme/x"]);
        c.args(flags)
            .env("SECRET_MCP_ADDR", addr)
            .env("SECRET_MCP_TOKEN", &owner);
        c.output().unwrap()
    };
    let mtls = [
        "--tls-ca",
        "ca.pem",
        "--tls-cert",
        "client.pem",
        "--tls-key",
        "client.key",
    ];
    // By name, and by address with --tls-domain.
    let o = remote(&format!("https://localhost:{port}"), &mtls);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"over tls");
    let mut flags = mtls.to_vec();
    flags.extend(["--tls-domain", "localhost"]);
    let o = remote(&s.addr, &flags);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"over tls");

    // No client certificate, a server the CA did not sign, plaintext: refused.
    let o = remote(
        &format!("https://localhost:{port}"),
        &["--tls-ca", "ca.pem"],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let mut other = mtls.to_vec();
    other[1] = "other-ca.pem";
    let o = remote(&format!("https://localhost:{port}"), &other);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    let o = remote(&format!("http://localhost:{port}"), &[]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    // TLS without a CA is a usage error, caught before connecting.
    let o = remote(&format!("https://localhost:{port}"), &[]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    let (code, err) = s.stop();
    assert_eq!(code, 0, "{err}");
}
