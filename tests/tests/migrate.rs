//! `secret-mcp migrate`, with the real binary: a vault built on SQLite is
//! moved to PostgreSQL (a throwaway database of the shared test cluster),
//! served from there, and moved back; a second migrate into the now
//! non-empty database, and one with the wrong key file, change nothing.

use std::path::Path;

use tenant_vault::{DumpItem, Store, open_store};
use tenant_vault_tests::process::{CliEnv, code, path};

/// Everything the store at `url` holds, as its export (on a thread of its
/// own: the PostgreSQL store blocks, which async tests must not do).
fn dump(url: &str) -> Vec<DumpItem> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let store = open_store(&url).unwrap();
        let mut items = Vec::new();
        store
            .export(&mut |i| {
                items.push(i);
                Ok(())
            })
            .unwrap();
        items
    })
    .join()
    .unwrap()
}

/// Runs a command expected to fail; its exit code and stderr.
fn fails(env: &CliEnv, args: &[&str]) -> (i32, String) {
    let o = env.cmd(args).output().unwrap();
    assert!(!o.status.success(), "{args:?} succeeded");
    (
        o.status.code().unwrap(),
        String::from_utf8(o.stderr).unwrap(),
    )
}

/// Points the data directory of `env` at `key`, as `init --key-file` does,
/// so that `serve` and local commands unlock without flags.
fn remember_key(env: &CliEnv, key: &Path) {
    std::fs::create_dir_all(env.data()).unwrap();
    std::fs::write(
        env.data().join("config.toml"),
        format!("key_file = {:?}\n", key.to_str().unwrap()),
    )
    .unwrap();
}

/// A SQLite vault with two tenants: versions live, soft-deleted and
/// destroyed, custom metadata, a limit override, tokens (one revoked).
/// Returns the live owner token of `acme`, its revoked user token, and an
/// operator token.
fn build_source(env: &CliEnv) -> (String, String, String) {
    env.init_with_key_file();
    env.ok(&["tenant", "create", "acme"]);
    env.ok(&["tenant", "create", "globex", "--kind", "freelance"]);
    env.ok(&[
        "tenant",
        "limits",
        "acme",
        "--max-secrets",
        "40",
        "--rate",
        "1000000",
    ]);
    for i in 1..=3 {
        env.ok(&["put", "tenant/acme/db", "--value", &format!("db-{i}")]);
    }
    env.ok(&["delete", "tenant/acme/db", "--versions", "2"]);
    env.ok(&["destroy", "tenant/acme/db", "--versions", "1"]);
    env.ok(&["put", "tenant/acme/api/key", "--value", "api-1"]);
    env.ok(&["put", "tenant/acme/api/key", "--value", "api-2"]);
    env.ok(&[
        "metadata",
        "tenant/acme/api/key",
        "--max-versions",
        "5",
        "--custom",
        "owner=team-a",
    ]);
    env.ok(&["put", "tenant/globex/only", "--value", "globex-secret"]);
    env.ok(&["tenant", "rotate-key", "globex"]);
    env.ok(&["put", "tenant/globex/only", "--value", "globex-secret-2"]);
    let owner = env
        .ok(&["token", "issue", "--tenant", "acme", "--role", "owner"])
        .trim()
        .to_owned();
    let revoked = env
        .ok(&[
            "token",
            "issue",
            "--tenant",
            "acme",
            "--role",
            "user",
            "--description",
            "to-revoke",
        ])
        .trim()
        .to_owned();
    let operator = env.ok(&["token", "issue", "--operator"]).trim().to_owned();
    let list: serde_json::Value =
        serde_json::from_str(&env.ok(&["token", "list", "--tenant", "acme", "--json"])).unwrap();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["description"] == "to-revoke")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.ok(&["token", "revoke", &id]);
    (owner, revoked, operator)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vault_moves_from_sqlite_to_postgres_and_back() {
    let src = CliEnv::new(None);
    let (owner, revoked, operator) = build_source(&src);
    let key = src.key();
    let key_arg = key.to_str().unwrap();
    let sqlite_url = format!("sqlite://{}", src.data().join("vault.db").display());
    let pg_url = pg_harness::PgCluster::shared().fresh_database();
    let before = dump(&sqlite_url);

    // SQLite to PostgreSQL.
    let out = src.ok(&[
        "migrate",
        "--from",
        &sqlite_url,
        "--to",
        &pg_url,
        "--key-file",
        key_arg,
    ]);
    assert!(out.contains("migrated"), "{out}");
    assert!(out.contains("tenants:        2"), "{out}");
    assert!(out.contains("secrets:        3"), "{out}");
    // db: 3 (1 destroyed, 1 deleted), api/key: 2, globex/only: 2.
    assert!(
        out.contains(
            "versions:       6 decrypted in both and matched (1 of them deleted), 1 destroyed"
        ),
        "{out}"
    );
    assert!(out.contains("tokens:         3"), "{out}");
    assert_eq!(dump(&pg_url), before, "the copy holds exactly the source");
    assert_eq!(dump(&sqlite_url), before, "the source is unchanged");

    // Served from PostgreSQL with the same key file.
    let pg = CliEnv::new(Some(pg_url.clone()));
    remember_key(&pg, &key);
    let server = pg.serve("pg");
    let c = server.client(&owner).await;
    let db = path("tenant/acme/db");
    assert_eq!(c.get(&db, None).await.unwrap().value.expose(), b"db-3");
    let deleted = c.get(&db, Some(2)).await.unwrap_err();
    assert_eq!(code(&deleted), Some(tonic::Code::NotFound), "{deleted}");
    let destroyed = c.get(&db, Some(1)).await.unwrap_err();
    assert_eq!(code(&destroyed), Some(tonic::Code::NotFound), "{destroyed}");
    let api = path("tenant/acme/api/key");
    assert_eq!(c.get(&api, Some(1)).await.unwrap().value.expose(), b"api-1");
    assert_eq!(c.get(&api, None).await.unwrap().value.expose(), b"api-2");
    let meta = c.metadata(&api).await.unwrap();
    assert_eq!(meta.max_versions, 5);
    assert_eq!(meta.custom.get("owner").map(String::as_str), Some("team-a"));
    let acme = tenant_vault::Slug::parse("acme").unwrap();
    let ops = server.client(&operator).await;
    let limits = ops.limits(&acme).await.unwrap();
    assert_eq!(limits.max_secrets, 40);
    assert_eq!(limits.rate_per_sec, 1_000_000.0);
    // The other tenant's secrets: still there, still out of acme's reach.
    let other = c.get(&path("tenant/globex/only"), None).await.unwrap_err();
    assert_eq!(code(&other), Some(tonic::Code::PermissionDenied), "{other}");
    let globex = tenant_vault::Slug::parse("globex").unwrap();
    let (key_version, moved) = ops.rotate_key(&globex, true).await.unwrap();
    assert_eq!((key_version, moved), (3, 2), "both versions re-encrypt");
    // The revoked token is refused.
    let gone = server.client(&revoked).await;
    let e = gone.get(&db, None).await.unwrap_err();
    assert_eq!(code(&e), Some(tonic::Code::Unauthenticated), "{e}");
    // Writes continue the copied state and chain.
    assert_eq!(
        c.put(&db, &tenant_vault::Secret::from("db-4"), Some(3))
            .await
            .unwrap(),
        4
    );
    assert!(ops.verify_audit().await.unwrap().is_ok());
    drop(server);
    let verified = pg.ok(&["audit", "verify"]);
    assert!(verified.contains("audit trail intact"), "{verified}");

    // A second migrate into the now non-empty database: exit 5, nothing
    // changes, the message names the database without its password.
    let served = dump(&pg_url);
    // (The cluster trusts loopback connections: the password is not asked.)
    let with_password = pg_url.replacen("postgres@", "postgres:hunter2@", 1);
    let (code5, err) = fails(
        &src,
        &[
            "migrate",
            "--from",
            &sqlite_url,
            "--to",
            &with_password,
            "--key-file",
            key_arg,
        ],
    );
    assert_eq!(code5, 5, "{err}");
    assert!(err.contains("not empty"), "{err}");
    let port = pg_harness::PgCluster::shared().port();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    assert_eq!(dump(&pg_url), served);

    // PostgreSQL back to a new SQLite file.
    let back = src.dir.path().join("back.db");
    let back_url = format!("sqlite://{}", back.display());
    let out = src.ok(&[
        "migrate",
        "--from",
        &pg_url,
        "--to",
        &back_url,
        "--key-file",
        key_arg,
    ]);
    assert!(out.contains("versions:       7 decrypted"), "{out}");
    assert_eq!(dump(&back_url), served);
    let home = CliEnv::new(Some(back_url));
    remember_key(&home, &key);
    assert_eq!(home.ok(&["get", "tenant/acme/db"]), "db-4");
    assert_eq!(
        home.ok(&["get", "tenant/globex/only", "--version", "1"]),
        "globex-secret"
    );
    assert!(home.ok(&["audit", "verify"]).contains("audit trail intact"));
}

#[test]
fn a_wrong_key_file_or_a_missing_source_writes_nothing() {
    let src = CliEnv::new(None);
    build_source(&src);
    let sqlite_url = format!("sqlite://{}", src.data().join("vault.db").display());
    let wrong = src.dir.path().join("wrong.key");
    tenant_vault::create_key_file(&wrong).unwrap();
    let wrong_arg = wrong.to_str().unwrap();

    // Into PostgreSQL: the source does not unlock, so the target is never
    // written (its export holds the built-in plans only).
    let pg_url = pg_harness::PgCluster::shared().fresh_database();
    let empty = dump(&pg_url);
    assert!(empty.iter().all(|i| matches!(i, DumpItem::Plan(_))));
    let (code, err) = fails(
        &src,
        &[
            "migrate",
            "--from",
            &sqlite_url,
            "--to",
            &pg_url,
            "--key-file",
            wrong_arg,
        ],
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("wrong key file"), "{err}");
    assert_eq!(dump(&pg_url), empty);

    // Into SQLite: the file is not even created.
    let target = src.dir.path().join("never.db");
    let target_url = format!("sqlite://{}", target.display());
    let (code, _) = fails(
        &src,
        &[
            "migrate",
            "--from",
            &sqlite_url,
            "--to",
            &target_url,
            "--key-file",
            wrong_arg,
        ],
    );
    assert_eq!(code, 4);
    assert!(!target.exists());

    // A source without a vault: exit 3, and no file appears there either.
    let nothing = src.dir.path().join("nothing.db");
    let (code, err) = fails(
        &src,
        &[
            "migrate",
            "--from",
            &format!("sqlite://{}", nothing.display()),
            "--to",
            &target_url,
            "--key-file",
            src.key().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(!nothing.exists() && !target.exists());

    // Remote mode has no migrate.
    let (code, _) = fails(
        &src,
        &[
            "--addr",
            "127.0.0.1:1",
            "migrate",
            "--from",
            &sqlite_url,
            "--to",
            &target_url,
        ],
    );
    assert_eq!(code, 2);
}
