//! A service embedding `tenant-vault` and an operator using `secret-mcp` on
//! the same data directory see the same vault.

use std::io::Write;
use std::process::{Command, Stdio};

use tenant_vault::{
    ScopeKind, Secret, SecretPath, Slug, SqliteStore, Unlock, Vault, VaultOptions, create_key_file,
};
use tenant_vault_tests::bin;

#[test]
fn library_writes_cli_reads_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("vault.key");
    let cli = bin("secret-mcp", "secret-mcp");
    let run = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(&cli)
            .args([
                "--data-dir",
                data.to_str().unwrap(),
                "--key-file",
                key.to_str().unwrap(),
            ])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };

    // The operator initializes with the CLI.
    run(&["init"], b"");
    run(&["tenant", "create", "acme"], b"");
    run(&["put", "tenant/acme/from-cli"], b"cli value");

    // A service links the library on the same files.
    let vault = Vault::open(
        SqliteStore::open(data.join("vault.db")).unwrap(),
        &Unlock::KeyFile(key.clone()),
        VaultOptions::default(),
    )
    .unwrap();
    let p = SecretPath::parse("tenant/acme/from-cli").unwrap();
    assert_eq!(vault.get(&p).unwrap().value.expose(), b"cli value");
    vault
        .create_scope(&Slug::parse("globex").unwrap(), ScopeKind::Freelance)
        .unwrap();
    let q = SecretPath::parse("tenant/globex/from-library").unwrap();
    vault.put(&q, &Secret::from("library value"), None).unwrap();

    // While the library holds the vault open, the CLI reads and writes it.
    assert_eq!(
        run(&["get", "tenant/globex/from-library"], b""),
        b"library value"
    );
    run(
        &["put", "tenant/acme/from-cli", "--cas", "1"],
        b"cli value 2",
    );
    assert_eq!(vault.get(&p).unwrap().value.expose(), b"cli value 2");
    assert_eq!(
        run(&["tenant", "list"], b"")
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        2
    );
}

#[test]
fn a_vault_from_another_key_file_never_opens() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = dir.path().join("k1");
    let k2 = dir.path().join("k2");
    create_key_file(&k1).unwrap();
    create_key_file(&k2).unwrap();
    let db = dir.path().join("vault.db");
    drop(
        Vault::init(
            SqliteStore::open(&db).unwrap(),
            &Unlock::KeyFile(k1),
            VaultOptions::default(),
        )
        .unwrap(),
    );
    let out = Command::new(bin("secret-mcp", "secret-mcp"))
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--key-file",
            k2.to_str().unwrap(),
            "tenant",
            "list",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong key file"));
}
