//! Runs the real `secret-mcp` binary on vaults in temp dirs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_secret-mcp"));
        c.args(args)
            .env("SECRET_MCP_DATA", self.data())
            .env_remove("SECRET_MCP_KEY_FILE")
            .env_remove("SECRET_MCP_PASSPHRASE_FILE")
            .current_dir(self.dir.path());
        c
    }

    fn run_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, b"")
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    fn init(&self) {
        let out = self.ok(&["init", "--key-file", "vault.key"]);
        assert!(out.contains("initialized a vault"), "{out}");
        self.ok(&["tenant", "create", "acme"]);
    }
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn first_run_as_in_the_readme() {
    let e = Env::new();
    e.init();
    assert!(e.dir.path().join("vault.key").exists());
    let o = e.run_with_stdin(&["put", "tenant/acme/slack-token"], b"xoxb-demo-value");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "wrote tenant/acme/slack-token version 1\n"
    );
    assert_eq!(e.ok(&["get", "tenant/acme/slack-token"]), "xoxb-demo-value");
}

#[test]
fn values_round_trip_byte_for_byte_from_every_source() {
    let e = Env::new();
    e.init();
    let binary: Vec<u8> = (0..=255u8).chain([b'\n', b'\n']).collect();
    let o = e.run_with_stdin(&["put", "tenant/acme/bin"], &binary);
    assert!(o.status.success());
    let got = e.cmd(&["get", "tenant/acme/bin"]).output().unwrap();
    assert_eq!(
        got.stdout, binary,
        "stdin to stdout, exact bytes, trailing newlines kept"
    );

    std::fs::write(e.dir.path().join("v.txt"), "from a file\n").unwrap();
    e.ok(&["put", "tenant/acme/f", "--from-file", "v.txt"]);
    assert_eq!(e.ok(&["get", "tenant/acme/f"]), "from a file\n");
    e.ok(&["put", "tenant/acme/f", "--value", "second"]);
    assert_eq!(e.ok(&["get", "tenant/acme/f"]), "second");
    assert_eq!(
        e.ok(&["get", "tenant/acme/f", "--version", "1"]),
        "from a file\n"
    );
}

#[test]
fn tenants_are_idempotent_listed_and_deleted_only_with_yes() {
    let e = Env::new();
    e.init();
    assert_eq!(
        e.ok(&["tenant", "create", "acme", "--kind", "freelance"]),
        "tenant acme already exists (enterprise), unchanged\n"
    );
    assert_eq!(
        e.ok(&["tenant", "create", "globex", "--kind", "freelance"]),
        "created tenant globex (freelance)\n"
    );
    let list: serde_json::Value =
        serde_json::from_str(&e.ok(&["tenant", "list", "--json"])).unwrap();
    let slugs: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["slug"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(slugs, ["acme", "globex"]);
    e.ok(&["put", "tenant/globex/x", "--value", "v"]);
    let st: serde_json::Value =
        serde_json::from_str(&e.ok(&["tenant", "status", "globex", "--json"])).unwrap();
    assert_eq!(st["secrets"], 1);
    assert_eq!(st["stored_bytes"], 17);
    let o = e.run(&["tenant", "delete", "globex"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("--yes"));
    assert_eq!(
        e.ok(&["get", "tenant/globex/x"]),
        "v",
        "nothing deleted without --yes"
    );
    e.ok(&["tenant", "delete", "globex", "--yes"]);
    assert_eq!(code(&e.run(&["get", "tenant/globex/x"])), 3);
    assert_eq!(code(&e.run(&["tenant", "create", "bad_slug"])), 2);
    assert_eq!(
        code(&e.run(&["tenant", "create", "x", "--kind", "startup"])),
        2
    );
}

#[test]
fn list_versions_and_metadata() {
    let e = Env::new();
    e.init();
    for n in ["db/user", "db/password", "api"] {
        e.ok(&["put", &format!("tenant/acme/{n}"), "--value", "v"]);
    }
    assert_eq!(
        e.ok(&["list", "tenant/acme/"]),
        "tenant/acme/api\ntenant/acme/db/password\ntenant/acme/db/user\n"
    );
    assert_eq!(
        e.ok(&["list", "tenant/acme/db/"]),
        "tenant/acme/db/password\ntenant/acme/db/user\n"
    );
    assert_eq!(
        e.ok(&["list", "tenant/acme/", "--limit", "1"]),
        "tenant/acme/api\n"
    );
    e.ok(&["put", "tenant/acme/api", "--value", "v2"]);
    e.ok(&["put", "tenant/acme/api", "--value", "v3"]);
    assert_eq!(
        e.ok(&["delete", "tenant/acme/api"]),
        "deleted tenant/acme/api version 3\n"
    );
    assert_eq!(code(&e.run(&["get", "tenant/acme/api"])), 3);
    assert_eq!(
        e.ok(&["undelete", "tenant/acme/api", "--versions", "3"]),
        "undeleted tenant/acme/api version 3\n"
    );
    assert_eq!(e.ok(&["get", "tenant/acme/api"]), "v3");
    assert_eq!(
        e.ok(&["destroy", "tenant/acme/api", "--versions", "1,2"]),
        "destroyed tenant/acme/api versions 1,2\n"
    );
    assert_eq!(
        code(&e.run(&["get", "tenant/acme/api", "--version", "1"])),
        3
    );
    let md: serde_json::Value = serde_json::from_str(&e.ok(&[
        "metadata",
        "tenant/acme/api",
        "--json",
        "--custom",
        "owner=payments",
        "--max-versions",
        "2",
    ]))
    .unwrap();
    assert_eq!(md["current_version"], 3);
    assert_eq!(md["max_versions"], 2);
    assert_eq!(md["oldest_version"], 2);
    assert_eq!(md["custom_metadata"]["owner"], "payments");
    assert_eq!(md["versions"][0]["destroyed"], true);
    let text = e.ok(&["metadata", "tenant/acme/api"]);
    assert!(text.contains("custom:          owner=payments"), "{text}");
}

#[test]
fn each_failure_kind_has_its_exit_code_and_never_echoes_the_value() {
    let e = Env::new();
    let o = e.run(&["get", "tenant/acme/x"]);
    assert_eq!(code(&o), 3, "no vault yet: {}", stderr(&o));
    assert!(stderr(&o).contains("secret-mcp init"));
    e.init();
    assert_eq!(
        code(&e.run(&["init", "--key-file", "vault.key"])),
        5,
        "already initialized"
    );
    let planted = "PLANTED-SECRET-VALUE-42";
    e.ok(&["put", "tenant/acme/x", "--value", planted]);
    let cases: &[(&[&str], i32)] = &[
        (
            &["put", "tenant/acme/x", "--value", planted, "--cas", "0"],
            5,
        ),
        (&["get", "tenant/acme/nope"], 3),
        (&["get", "tenant/nope/x"], 3),
        (&["get", "tenant/acme/x", "--version", "9"], 3),
        (&["get", "tenant/acme/../x"], 2),
        (&["get", "acme/x"], 2),
        (&["list", "tenant/acme/", "--limit", "0"], 0),
        (&["metadata", "tenant/acme/x", "--max-versions", "0"], 2),
        (&["nonsense"], 2),
    ];
    for (args, want) in cases {
        let o = e.run(args);
        assert_eq!(code(&o), *want, "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains(planted), "{args:?} echoed the value");
    }
    let big = "x".repeat(64 * 1024 + 1);
    let o = e.run_with_stdin(&["put", "tenant/acme/big"], big.as_bytes());
    assert_eq!(code(&o), 6, "{}", stderr(&o));
    // A different key file is refused.
    let other = e.dir.path().join("other.key");
    let o2 = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    o2.ok(&["init", "--key-file", other.to_str().unwrap()]);
    let o = e.run(&[
        "--key-file",
        other.to_str().unwrap(),
        "get",
        "tenant/acme/x",
    ]);
    assert_eq!(code(&o), 4, "{}", stderr(&o));
}

fn passphrase_env() -> Env {
    let e = Env::new();
    let o = e.run_with_stdin(
        &[
            "init",
            "--passphrase-stdin",
            "--kdf-memory-kib",
            "256",
            "--kdf-iterations",
            "1",
        ],
        b"correct horse\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    e
}

#[test]
fn passphrase_vaults() {
    let e = passphrase_env();
    let o = e.run(&["tenant", "list"]);
    assert_eq!(code(&o), 4, "a passphrase is needed: {}", stderr(&o));
    let o = e.run_with_stdin(
        &["--passphrase-stdin", "tenant", "create", "acme"],
        b"wrong horse\n",
    );
    assert_eq!(code(&o), 4);
    assert!(stderr(&o).contains("wrong passphrase"));
    let o = e.run_with_stdin(
        &["--passphrase-stdin", "tenant", "create", "acme"],
        b"correct horse\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // stdin cannot carry both the passphrase and the value.
    let o = e.run_with_stdin(
        &["--passphrase-stdin", "put", "tenant/acme/x"],
        b"correct horse\n",
    );
    assert_eq!(code(&o), 2);
    std::fs::write(e.dir.path().join("pass"), "correct horse\n").unwrap();
    let o = e.run_with_stdin(
        &["--passphrase-file", "pass", "put", "tenant/acme/x"],
        b"value",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = e
        .cmd(&["get", "tenant/acme/x"])
        .env("SECRET_MCP_PASSPHRASE_FILE", "pass")
        .output()
        .unwrap();
    assert_eq!(o.stdout, b"value");
}

#[test]
fn the_vault_lives_where_data_dir_says() {
    let e = Env::new();
    let custom: &Path = &e.dir.path().join("elsewhere");
    let c = custom.to_str().unwrap();
    let o = e
        .cmd(&["--data-dir", c, "init", "--key-file", "k"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(custom.join("vault.db").exists());
    assert!(!e.data().exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(custom).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}

#[test]
fn tokens_are_issued_once_and_checked_like_remote_callers() {
    let e = Env::new();
    e.init();
    e.ok(&["tenant", "create", "globex"]);
    e.ok(&["put", "tenant/globex/db", "--value", "globex-secret"]);
    let o = e.run(&[
        "token",
        "issue",
        "--tenant",
        "acme",
        "--role",
        "user",
        "--ttl",
        "1h",
        "--description",
        "ci",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let token = String::from_utf8(o.stdout.clone())
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        token.starts_with("smcpt_") && token.len() == 55,
        "stdout holds the token alone"
    );
    assert!(stderr(&o).contains("only time the token is shown"));
    let as_token = |args: &[&str]| {
        e.cmd(args)
            .env("SECRET_MCP_TOKEN", &token)
            .output()
            .unwrap()
    };

    let o = as_token(&["put", "tenant/acme/x", "--value", "mine"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(as_token(&["get", "tenant/acme/x"]).stdout, b"mine");
    let o = as_token(&["get", "tenant/globex/db"]);
    assert_eq!(code(&o), 4);
    assert!(stderr(&o).contains("cannot address tenant `globex`"));
    assert!(o.stdout.is_empty());
    assert_eq!(
        code(&as_token(&["destroy", "tenant/acme/x"])),
        4,
        "users cannot destroy"
    );
    assert_eq!(code(&as_token(&["tenant", "list"])), 4);
    assert_eq!(code(&as_token(&["audit", "tail"])), 4);

    let list: serde_json::Value =
        serde_json::from_str(&e.ok(&["token", "list", "--json"])).unwrap();
    assert_eq!(list[0]["tenant"], "acme");
    assert_eq!(list[0]["role"], "user");
    assert!(list[0]["expires_at"].is_string());
    assert!(
        !e.ok(&["token", "list"]).contains(&token[6..]),
        "listings never show the token"
    );
    let id = list[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(e.ok(&["token", "revoke", &id]), format!("revoked {id}\n"));
    let o = as_token(&["get", "tenant/acme/x"]);
    assert_eq!(code(&o), 4);
    assert!(stderr(&o).contains("revoked"));

    let mut typo = token.clone().into_bytes();
    typo[10] = if typo[10] == b'Q' { b'R' } else { b'Q' };
    let o = e
        .cmd(&["get", "tenant/acme/x"])
        .env("SECRET_MCP_TOKEN", String::from_utf8(typo).unwrap())
        .output()
        .unwrap();
    assert_eq!(code(&o), 4);
    assert!(stderr(&o).contains("checksum"));

    // The last owner stays.
    let o = e.run(&["token", "issue", "--tenant", "acme", "--role", "owner"]);
    assert!(o.status.success());
    let list: serde_json::Value =
        serde_json::from_str(&e.ok(&["token", "list", "--tenant", "acme", "--json"])).unwrap();
    let owner = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["role"] == "owner")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(code(&e.run(&["token", "revoke", &owner])), 5);
    assert_eq!(
        code(&e.run(&["token", "issue", "--tenant", "acme", "--role", "root"])),
        2
    );
    assert_eq!(
        code(&e.run(&["token", "issue", "--tenant", "acme", "--ttl", "soon"])),
        2
    );
}

#[test]
fn audit_tail_and_verify_find_tampering() {
    let e = Env::new();
    e.init();
    e.ok(&["put", "tenant/acme/x", "--value", "PLANTED-AUDIT-VALUE"]);
    e.ok(&["get", "tenant/acme/x"]);
    assert_eq!(code(&e.run(&["get", "tenant/acme/missing"])), 3);
    let tail = e.ok(&["audit", "tail", "-n", "3"]);
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 3, "{tail}");
    assert!(
        lines[0].contains("root put acme tenant/acme/x v1 ok"),
        "{tail}"
    );
    assert!(
        lines[1].contains("root get acme tenant/acme/x v1 ok"),
        "{tail}"
    );
    assert!(lines[2].contains("error:not-found"), "{tail}");
    assert!(!tail.contains("PLANTED"));
    let json = e.ok(&["audit", "tail", "-n", "1", "--json"]);
    let rec: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(rec["operation"], "get");
    assert!(
        e.ok(&["audit", "verify"])
            .starts_with("audit trail intact: ")
    );

    let db = e.data().join("vault.db");
    let c = edit_db(
        &db,
        "UPDATE audit_log SET principal = 'someone-else' WHERE seq = 2",
    );
    assert!(c);
    let o = e.run(&["audit", "verify"]);
    assert_eq!(code(&o), 7);
    assert!(
        stderr(&o).contains("record 2 was altered"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn the_audit_file_sink_is_written_and_verified() {
    let e = Env::new();
    e.init();
    let file = e.dir.path().join("audit.jsonl");
    let f = file.to_str().unwrap();
    e.ok(&["--audit-file", f, "put", "tenant/acme/x", "--value", "v"]);
    e.ok(&["--audit-file", f, "get", "tenant/acme/x"]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert_eq!(
        e.ok(&["audit", "verify", "--file", f]),
        "audit trail intact: 2 records\n"
    );
    std::fs::write(&file, text.replace("\"get\"", "\"put\"")).unwrap();
    let o = e.run(&["audit", "verify", "--file", f]);
    assert_eq!(code(&o), 7);
    assert!(stderr(&o).contains("was altered"));
}

/// Edits the database directly, as an attacker with file access would.
fn edit_db(db: &Path, sql: &str) -> bool {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute(sql, []).unwrap() == 1
}
