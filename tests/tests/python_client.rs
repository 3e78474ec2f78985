//! The Python example client, `examples/python/secret_mcp_example.py`, run
//! for real against a Secret MCP server on 127.0.0.1:0: it generates its stubs
//! from `proto/`, creates a scope, puts and gets a secret with a tenant token
//! and is refused another tenant's path. The vault is then checked from Rust.
//!
//! Needs `python3` with `grpcio` and `grpcio-tools` (`.ci/run` installs
//! `examples/python/requirements.txt`); without them this test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use secret_mcp_grpc::{Server, ServerOptions};
use tenant_vault::{
    KdfParams, SecretPath, Slug, SqliteStore, TokenSpec, Unlock, Vault, VaultOptions,
    create_key_file,
};
use tokio::sync::oneshot;

const SCOPE: &str = "pyexample";
const OTHER: &str = "pyexample-other";
const SECRET_PATH: &str = "tenant/pyexample/example/greeting";
const FOREIGN_PATH: &str = "tenant/pyexample-other/example/greeting";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace root")
        .to_path_buf()
}

/// Fails, naming the fix, when the Python side is not installed.
fn require_python() {
    let requirements = repo_root().join("examples/python/requirements.txt");
    let hint = format!(
        "install the Python example's requirements: python3 -m pip install -r {}",
        requirements.display()
    );
    let probe = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {hint}"));
    assert!(
        probe.status.success(),
        "python3 cannot import grpc and grpc_tools ({}); {hint}",
        String::from_utf8_lossy(&probe.stderr).trim()
    );
}

/// Runs the example once, in a blocking thread so the server keeps serving.
async fn run_example(addr: String, operator: String) -> Output {
    let script = repo_root().join("examples/python/secret_mcp_example.py");
    let run = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(&script)
            .arg(SCOPE)
            .current_dir(repo_root())
            .env("SECRET_MCP_ADDR", addr)
            .env("SECRET_MCP_TOKEN", operator)
            .env_remove("SECRET_MCP_TLS_CA")
            .env_remove("SECRET_MCP_TLS_CERT")
            .env_remove("SECRET_MCP_TLS_KEY")
            .env_remove("SECRET_MCP_TLS_DOMAIN")
            .env_remove("SECRET_MCP_PROTO_DIR")
            .env_remove("SECRET_MCP_EXAMPLE_SCOPE")
            .output()
            .expect("python3 runs")
    });
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the example finishes within 120 s")
        .unwrap()
}

fn check_run(out: &Output, first: bool) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the Python example failed ({}):\n--- stdout\n{stdout}--- stderr\n{stderr}",
        out.status
    );
    let scope_line = |slug: &str| {
        if first {
            format!("scope {slug}: created")
        } else {
            format!("scope {slug}: already exists (created=false)")
        }
    };
    let expected = [
        "stubs generated from ".to_string(),
        "connected to http://127.0.0.1:".to_string(),
        scope_line(SCOPE),
        scope_line(OTHER),
        format!("owner token issued for {SCOPE} (id "),
        format!("put {SECRET_PATH}: version "),
        format!("get {SECRET_PATH}: version "),
        format!("get {FOREIGN_PATH} with the {SCOPE} token: PERMISSION_DENIED, as expected"),
        "all steps passed".to_string(),
    ];
    let lines: Vec<&str> = stdout.lines().collect();
    let mut at = 0;
    for want in &expected {
        match lines[at..]
            .iter()
            .position(|l| l.starts_with(want.as_str()))
        {
            Some(i) => at += i + 1,
            None => panic!("no line starting with {want:?} in order in:\n{stdout}"),
        }
    }
    assert!(
        stdout.contains("value round-trips"),
        "the value round-trips:\n{stdout}"
    );
    stdout
}

/// The token id the example printed for its owner token.
fn token_id(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("owner token issued"))
        .unwrap();
    let rest = &line[line.find("(id ").unwrap() + 4..];
    rest[..rest.find(',').unwrap()].to_string()
}

/// The version the example printed for its put.
fn put_version(stdout: &str) -> u64 {
    let prefix = format!("put {SECRET_PATH}: version ");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_client_works_and_is_refused_another_tenant() {
    require_python();

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("vault.key");
    create_key_file(&key).unwrap();
    let mut options = VaultOptions::default();
    options.kdf = KdfParams {
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
    };
    let vault = Arc::new(
        Vault::init(
            SqliteStore::open(dir.path().join("vault.db")).unwrap(),
            &Unlock::KeyFile(key),
            options,
        )
        .unwrap(),
    );
    let operator = {
        let t = vault
            .root_session()
            .issue_token(&TokenSpec::default())
            .unwrap();
        String::from_utf8(t.token.expose().to_vec()).unwrap()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(Server::new(vault.clone(), ServerOptions::default()).serve(
        listener,
        async move {
            let _ = stopped.await;
        },
    ));

    // First run: everything is created. Second run: the scopes exist already
    // (`created = false`) and the example still passes.
    let first = run_example(addr.clone(), operator.clone()).await;
    let first = check_run(&first, true);
    let second = run_example(addr, operator.clone()).await;
    let second = check_run(&second, false);

    // Nothing secret on stdout: neither the operator token nor the tenant
    // tokens (same prefix scheme) appear.
    for out in [&first, &second] {
        assert!(
            !out.contains(&operator),
            "the operator token is not printed"
        );
        assert!(!out.contains("smcpt_"), "no tenant token is printed");
    }

    let _ = stop.send(());
    server.await.unwrap().unwrap();

    // From the vault's side: the scopes exist, the secret is stored (the
    // second put is its second version), and each cross-tenant attempt was
    // audited as such, by the token the example was issued.
    let root = vault.root_session();
    let scopes: Vec<String> = root
        .list_scopes()
        .unwrap()
        .into_iter()
        .map(|s| s.slug.as_str().to_string())
        .collect();
    assert!(scopes.iter().any(|s| s == SCOPE), "{scopes:?}");
    assert!(scopes.iter().any(|s| s == OTHER), "{scopes:?}");
    let stored = root.get(&SecretPath::parse(SECRET_PATH).unwrap()).unwrap();
    assert_eq!(put_version(&first), 1);
    assert_eq!(put_version(&second), 2);
    assert_eq!(stored.version, 2);
    assert_eq!(stored.value.expose().len(), 24);
    assert_eq!(
        root.scope_status(&Slug::parse(SCOPE).unwrap())
            .unwrap()
            .secrets,
        1
    );
    assert!(
        root.get(&SecretPath::parse(FOREIGN_PATH).unwrap()).is_err(),
        "nothing was written to the other tenant"
    );

    let trail = vault.audit_tail(10_000).unwrap();
    for stdout in [&first, &second] {
        let id = token_id(stdout);
        let denied: Vec<_> = trail
            .iter()
            .filter(|r| r.entry.principal == id && r.entry.outcome == "cross-tenant-denied")
            .collect();
        assert_eq!(denied.len(), 1, "one cross-tenant record for token {id}");
        assert_eq!(denied[0].entry.path, FOREIGN_PATH);
        assert_eq!(denied[0].entry.operation, "get");
        assert!(
            trail.iter().any(|r| r.entry.principal == id
                && r.entry.operation == "put"
                && r.entry.outcome == "ok"),
            "the put by token {id} is audited"
        );
    }
    assert!(vault.verify_audit().unwrap().is_ok());
}
