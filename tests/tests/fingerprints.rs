//! Vault fingerprints end to end, with the real binaries: `secret-mcp
//! fingerprints export` (embedded vault and remote mode) writes a file that
//! holds no secret bytes, and `tenant-guard scan --fingerprints` finds the
//! secrets in every encoding, inside archives too, reporting path and
//! version and never the value.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use base64::Engine as _;
use tenant_guard_scan::{Encoding, encoded_forms};
use tenant_vault_tests::bin;

fn secret_mcp(data: &Path) -> Command {
    let mut c = Command::new(bin("secret-mcp", "secret-mcp"));
    c.env("SECRET_MCP_DATA", data)
        .env("SECRET_MCP_KEY_FILE", data.with_extension("key"))
        .env("RUST_LOG", "warn")
        .env_remove("SECRET_MCP_ADDR")
        .env_remove("SECRET_MCP_TOKEN")
        .env_remove("SECRET_MCP_PASSPHRASE_FILE")
        .stdin(Stdio::null());
    c
}

fn ok(mut c: Command) -> Output {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn run(data: &Path, args: &[&str]) -> Output {
    let mut c = secret_mcp(data);
    c.args(args);
    ok(c)
}

/// Every 12-byte window of every searched form of `value`.
fn windows_of(value: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for e in Encoding::ALL {
        for form in encoded_forms(value, e) {
            out.extend(form.windows(12).map(<[u8]>::to_vec));
        }
    }
    out
}

fn assert_holds_nothing_of(what: &str, bytes: &[u8], value: &[u8]) {
    for w in windows_of(value) {
        assert!(
            !bytes.windows(w.len()).any(|b| b == w.as_slice()),
            "{what} holds part of a secret ({})",
            String::from_utf8_lossy(&w)
        );
    }
}

/// A `secret-mcp serve` process on a free port, killed when dropped.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(data: &Path) -> Server {
        let mut c = secret_mcp(data);
        c.args(["serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("serve exited before listening")
                .unwrap();
            if let Some(a) = line.strip_prefix("listening on ") {
                break a.trim().to_string();
            }
        };
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn exported_fingerprints_find_secrets_in_every_encoding_and_hold_none() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault");
    let d = data.as_path();
    run(
        d,
        &[
            "init",
            "--key-file",
            d.with_extension("key").to_str().unwrap(),
        ],
    );
    run(d, &["tenant", "create", "acme"]);
    run(d, &["tenant", "create", "globex"]);
    let stripe_v1 = "sk_live_51Hx9QpLzW7vK3mN8bT2cR5yD"; // tenant-guard:allow ADR-001
    let stripe_v2 = "sk_live_51Hx9QpLzW7vK3mN8bT2cR5yE-rotated"; // tenant-guard:allow ADR-001
    let db = "p@ss/w0rd \"with\" 'quotes' & $dollars+plus=eq";
    let globex = "globex-only-value-0123456789abcdef";
    run(d, &["put", "tenant/acme/stripe", "--value", stripe_v1]);
    run(d, &["put", "tenant/acme/stripe", "--value", stripe_v2]);
    run(d, &["put", "tenant/acme/db/password", "--value", db]);
    run(d, &["put", "tenant/acme/pin", "--value", "12345678"]);
    run(d, &["put", "tenant/globex/key", "--value", globex]);

    // The export, to a file: nothing on stdout, a summary naming the skipped
    // short secret on stderr, a file readable by its owner only.
    let fp = dir.path().join("acme.fp");
    let o = run(
        d,
        &[
            "fingerprints",
            "export",
            "--tenant",
            "acme",
            "--output",
            fp.to_str().unwrap(),
        ],
    );
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("fingerprinted 3 version(s) of 3 secret(s)"),
        "{err}"
    );
    assert!(err.contains("tenant/acme/pin (version 1)"), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&fp).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let file = std::fs::read(&fp).unwrap();
    for v in [stripe_v1, stripe_v2, db] {
        assert_holds_nothing_of("the fingerprint file", &file, v.as_bytes());
    }
    assert!(!String::from_utf8_lossy(&file).contains("12345678"));

    // Build outputs carrying the values in every encoding.
    let out = dir.path().join("out");
    std::fs::create_dir_all(out.join("pkg")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD;
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let json = serde_json::to_string(&serde_json::json!({ "password": db })).unwrap();
    let planted: Vec<(&str, String, &str)> = vec![
        (
            "raw.log",
            format!("connecting with {stripe_v2}\n"),
            "stripe (version 2",
        ),
        (
            "hex.txt",
            format!("k={}\n", hex::encode(stripe_v1)),
            "stripe (version 1",
        ),
        (
            "HEX.txt",
            format!("k={}\n", hex::encode_upper(db)),
            "db/password (version 1",
        ),
        (
            "b64-0.txt",
            format!("{}\n", b64.encode(stripe_v2)),
            "stripe (version 2",
        ),
        (
            "b64-1.txt",
            format!("{}\n", b64.encode(format!("x{db}"))),
            "db/password",
        ),
        (
            "b64-2.txt",
            format!("{}\n", b64url.encode(format!("xy{stripe_v1}z"))),
            "stripe (version 1",
        ),
        (
            "url.txt",
            format!("postgres://u:{}@h/db\n", urlencode(db)),
            "db/password",
        ),
        ("config.json", format!("{json}\n"), "db/password"),
        (
            "env.sh",
            format!("export DB='{}'\n", db.replace('\'', "'\\''")),
            "db/password",
        ),
        (
            "pkg/bundle.js",
            format!("var k=\"{}\";\n", b64.encode(stripe_v2)),
            "stripe (version 2",
        ),
    ];
    for (name, text, _) in &planted {
        std::fs::write(out.join(name), text).unwrap();
    }
    // Inside a tar.gz, base64-encoded (the leaky cache of examples/cross-tenant).
    std::fs::write(
        dir.path().join("cache.txt"),
        format!("{}\n", b64.encode(db)),
    )
    .unwrap();
    let tar = Command::new("tar")
        .args(["czf", out.join("cache.tar.gz").to_str().unwrap(), "-C"])
        .arg(dir.path())
        .arg("cache.txt")
        .status()
        .unwrap();
    assert!(tar.success());
    // Another tenant's secret and the short pin are not searched for.
    std::fs::write(out.join("globex.txt"), format!("{globex}\npin=12345678\n")).unwrap();

    let scan = |fp: &Path| {
        Command::new(bin("tenant-guard", "tenant-guard"))
            .args(["scan", "--artifacts", "--format", "json", "--fingerprints"])
            .arg(fp)
            .arg(&out)
            .env("CI", "true")
            .output()
            .unwrap()
    };
    let o = scan(&fp);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("3 secret version(s) of tenant acme"), "{err}");
    assert!(
        err.contains("too short to fingerprint safely: tenant/acme/pin (version 1)"),
        "{err}"
    );
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let vault: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "vault-secret")
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["message"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for (name, _, want) in &planted {
        assert!(
            vault
                .iter()
                .any(|(p, m)| p.ends_with(name) && m.contains(want)),
            "{name}: {want} not reported: {vault:?}"
        );
    }
    assert!(
        vault
            .iter()
            .any(|(p, m)| p.ends_with("cache.tar.gz!/cache.txt") && m.contains("db/password")),
        "{vault:?}"
    );
    assert!(
        !vault.iter().any(|(p, _)| p.ends_with("globex.txt")),
        "{vault:?}"
    );
    // The report names secrets; it never holds their values.
    for f in report["findings"].as_array().unwrap() {
        if f["kind"] == "vault-secret" {
            let text = f.to_string();
            for v in [stripe_v1, stripe_v2, db] {
                assert_holds_nothing_of("a vault-secret finding", text.as_bytes(), v.as_bytes());
            }
        }
    }

    // Remote mode: the same export through a server, with a tenant token.
    let owner = String::from_utf8(
        run(
            d,
            &["token", "issue", "--tenant", "acme", "--role", "viewer"],
        )
        .stdout,
    )
    .unwrap();
    let server = Server::start(d);
    let remote_fp = dir.path().join("acme-remote.fp");
    let mut c = secret_mcp(d);
    c.args(["fingerprints", "export", "--tenant", "acme", "-o"])
        .arg(&remote_fp)
        .env("SECRET_MCP_ADDR", &server.addr)
        .env("SECRET_MCP_TOKEN", owner.trim());
    let o = ok(c);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("fingerprinted 3 version(s)"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = scan(&remote_fp);
    assert_eq!(o.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let remote_count = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "vault-secret")
        .count();
    assert_eq!(remote_count, vault.len());

    // A tenant token cannot export another tenant's secrets.
    let mut c = secret_mcp(d);
    c.args(["fingerprints", "export", "--tenant", "globex"])
        .env("SECRET_MCP_ADDR", &server.addr)
        .env("SECRET_MCP_TOKEN", owner.trim());
    let o = c.output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty());
}

/// Percent-encoding of every byte but the unreserved ones (RFC 3986).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
