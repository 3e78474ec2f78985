//! The PostgreSQL store, on a throwaway cluster (`pg-harness`): through the
//! public `Vault` API, and as several servers sharing one database.
//!
//! One cluster serves the whole test binary ([`PgCluster::shared`], stopped
//! by its watchdog when the process exits); each test gets databases of its
//! own ([`PgCluster::fresh_database`]).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};

use common::{options, path, slug};
use pg_harness::{PgCluster, simple_query};
use tenant_vault::{
    Error, ListPrefix, MetadataUpdate, PostgresStore, Role, ScopeKind, Secret, Store, TokenSpec,
    Unlock, Vault, VaultOptions, create_key_file, verify_chain,
};

/// A vault on a fresh PostgreSQL database, and what a second server needs
/// to open the same vault.
struct PgVault {
    url: String,
    dir: tempfile::TempDir,
    vault: Vault,
}

impl PgVault {
    fn new(opts: VaultOptions) -> PgVault {
        let url = PgCluster::shared().fresh_database();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("vault.key");
        create_key_file(&key).unwrap();
        let vault = Vault::init(store(&url), &Unlock::KeyFile(key), opts).unwrap();
        PgVault { url, dir, vault }
    }

    fn with_tenants(tenants: &[&str]) -> PgVault {
        let v = PgVault::new(options());
        for t in tenants {
            v.vault
                .create_scope(&slug(t), ScopeKind::Enterprise)
                .unwrap();
        }
        v
    }

    /// Another server: its own store (pool, runtime) on the same database.
    fn other_server(&self, opts: VaultOptions) -> Vault {
        Vault::open(
            store(&self.url),
            &Unlock::KeyFile(self.dir.path().join("vault.key")),
            opts,
        )
        .unwrap()
    }

    /// One value of a query on the database, as text.
    fn sql(&self, q: &str) -> Vec<Vec<Option<String>>> {
        simple_query(&self.url, q)
    }
}

fn store(url: &str) -> PostgresStore {
    PostgresStore::connect(url).unwrap()
}

fn count(url: &str, q: &str) -> i64 {
    simple_query(url, q)[0][0]
        .as_deref()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn secrets_round_trip_through_the_vault() {
    let pv = PgVault::with_tenants(&["acme", "globex"]);
    let v = &pv.vault;
    // Idempotent scope creation.
    assert!(
        !v.create_scope(&slug("acme"), ScopeKind::Enterprise)
            .unwrap()
            .created
    );
    let scopes: Vec<String> = v
        .list_scopes()
        .unwrap()
        .iter()
        .map(|s| s.slug.to_string())
        .collect();
    assert_eq!(scopes, ["acme", "globex"]);

    let p = path("tenant/acme/db/password");
    assert_eq!(v.put(&p, &Secret::from("one"), Some(0)).unwrap(), 1);
    assert_eq!(v.put(&p, &Secret::from("two"), None).unwrap(), 2);
    assert!(matches!(
        v.put(&p, &Secret::from("x"), Some(1)),
        Err(Error::CasMismatch {
            expected: 1,
            current: 2,
            ..
        })
    ));
    assert_eq!(v.get(&p).unwrap().value.expose(), b"two");
    assert_eq!(v.get_version(&p, 1).unwrap().value.expose(), b"one");
    assert!(matches!(
        v.get(&path("tenant/globex/db/password")),
        Err(Error::SecretNotFound(_))
    ));
    assert!(matches!(
        v.get(&path("tenant/nobody/x")),
        Err(Error::ScopeNotFound(_))
    ));

    // Listing is in byte order and pages.
    for n in [
        "db/user", "db/Zeta", "api/key", "db/a-b", "db/a.b", "db/a_b",
    ] {
        v.put(&path(&format!("tenant/acme/{n}")), &Secret::from("v"), None)
            .unwrap();
    }
    let prefix = ListPrefix::parse("tenant/acme/db/").unwrap();
    let mut names = Vec::new();
    let mut after = None;
    loop {
        let page = v.list(&prefix, after.as_deref(), 2).unwrap();
        names.extend(page.paths.iter().map(|p| p.name().to_string()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "byte order");
    assert_eq!(
        names,
        [
            "db/Zeta",
            "db/a-b",
            "db/a.b",
            "db/a_b",
            "db/password",
            "db/user"
        ]
    );

    // Delete, undelete, destroy, metadata.
    assert_eq!(v.delete(&p, &[]).unwrap(), vec![2]);
    assert!(matches!(
        v.get(&p),
        Err(Error::VersionDeleted { version: 2, .. })
    ));
    assert_eq!(v.undelete(&p, &[2]).unwrap(), vec![2]);
    assert_eq!(v.get(&p).unwrap().value.expose(), b"two");
    assert_eq!(v.destroy(&p, &[1]).unwrap(), vec![1]);
    assert!(matches!(
        v.get_version(&p, 1),
        Err(Error::VersionDestroyed { version: 1, .. })
    ));
    assert!(
        v.undelete(&p, &[1]).is_err(),
        "a destroyed version stays destroyed"
    );
    let mut custom = BTreeMap::new();
    custom.insert("owner".to_owned(), "team-db".to_owned());
    v.update_metadata(
        &p,
        &MetadataUpdate {
            max_versions: Some(3),
            custom: Some(custom.clone()),
        },
    )
    .unwrap();
    for i in 3..=6 {
        assert_eq!(v.put(&p, &Secret::from(format!("v{i}")), None).unwrap(), i);
    }
    let m = v.metadata(&p).unwrap();
    assert_eq!(m.current_version, 6);
    assert_eq!(m.max_versions, 3);
    assert_eq!(m.custom, custom);
    assert_eq!(
        m.versions.iter().map(|x| x.version).collect::<Vec<_>>(),
        [4, 5, 6],
        "pruned to max_versions"
    );

    // Usage counts what is stored.
    let status = v.scope_status(&slug("acme")).unwrap();
    assert_eq!(status.secrets, 7);
    let bytes = count(
        &pv.url,
        "SELECT coalesce(sum(length(ciphertext)), 0) FROM versions",
    );
    assert_eq!(status.stored_bytes, bytes as u64);
    assert_eq!(
        count(&pv.url, "SELECT bytes_used FROM scopes WHERE slug = 'acme'"),
        bytes,
        "the stored-bytes counter follows puts, prunes and destroys"
    );

    // Deleting a tenant removes its keys and rows; the slug can be reused
    // and gets a new id.
    let old_id = pv.sql("SELECT id FROM scopes WHERE slug = 'acme'")[0][0].clone();
    v.delete_scope(&slug("acme")).unwrap();
    for table in ["versions", "secrets"] {
        assert_eq!(count(&pv.url, &format!("SELECT count(*) FROM {table}")), 0);
    }
    assert_eq!(
        count(&pv.url, "SELECT count(*) FROM data_keys"),
        1,
        "globex's"
    );
    assert!(matches!(v.get(&p), Err(Error::ScopeNotFound(_))));
    assert!(
        v.create_scope(&slug("acme"), ScopeKind::Freelance)
            .unwrap()
            .created
    );
    assert_ne!(
        pv.sql("SELECT id FROM scopes WHERE slug = 'acme'")[0][0],
        old_id
    );
    assert!(matches!(v.get(&p), Err(Error::SecretNotFound(_))));
}

#[test]
fn sessions_tokens_limits_and_the_audit_chain() {
    let pv = PgVault::with_tenants(&["acme", "globex"]);
    let v = &pv.vault;
    let root = v.root_session();
    root.put(&path("tenant/globex/db"), &Secret::from("g"), None)
        .unwrap();
    let issued = root
        .issue_token(&TokenSpec {
            tenant: Some(slug("acme")),
            role: Some(Role::User),
            ..TokenSpec::default()
        })
        .unwrap();
    let token = std::str::from_utf8(issued.token.expose())
        .unwrap()
        .to_owned();
    let acme = v.session(v.authenticate(&token).unwrap());
    assert_eq!(
        acme.put(&path("tenant/acme/db"), &Secret::from("a"), None)
            .unwrap(),
        1
    );
    assert_eq!(
        acme.get(&path("tenant/acme/db")).unwrap().value.expose(),
        b"a"
    );
    assert!(matches!(
        acme.get(&path("tenant/globex/db")),
        Err(Error::CrossTenant { .. })
    ));
    let listed = root.list_tokens(Some(&slug("acme"))).unwrap();
    assert_eq!(listed.len(), 1);

    // Limits: plan and overrides.
    assert_eq!(v.limits(&slug("acme")).unwrap().plan, "enterprise");
    root.set_limits(
        &slug("acme"),
        &tenant_vault::LimitChange {
            plan: Some("starter".into()),
            max_secrets: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    let l = v.limits(&slug("acme")).unwrap();
    assert_eq!(
        (l.plan.as_str(), l.max_secrets, l.burst),
        ("starter", 1, 40)
    );
    assert!(matches!(
        acme.put(&path("tenant/acme/other"), &Secret::from("x"), None),
        Err(Error::QuotaExceeded { .. })
    ));
    assert!(matches!(
        root.set_limits(
            &slug("acme"),
            &tenant_vault::LimitChange {
                plan: Some("platinum".into()),
                ..Default::default()
            }
        ),
        Err(Error::InvalidArgument(_))
    ));

    root.revoke_token(&issued.id).unwrap();
    assert!(matches!(
        v.authenticate(&token),
        Err(Error::Unauthenticated(_))
    ));

    v.flush_audit().unwrap();
    let n = v.verify_audit().unwrap().unwrap();
    assert!(n >= 8, "{n} records");
    let ops: BTreeSet<String> = v
        .audit_tail(100)
        .unwrap()
        .into_iter()
        .map(|r| r.entry.operation)
        .collect();
    for op in ["put", "get", "issue-token", "revoke-token"] {
        assert!(ops.iter().any(|o| o == op), "{op} in {ops:?}");
    }
    // The stored versions of the puts are in their records.
    let puts = count(
        &pv.url,
        "SELECT count(*) FROM audit_log WHERE operation = 'put' AND outcome = 'ok'
           AND version IS NOT NULL",
    );
    assert!(puts >= 2, "{puts}");
}

#[test]
fn tenant_key_rotation_and_rewrap() {
    let pv = PgVault::with_tenants(&["acme"]);
    let v = &pv.vault;
    let p = path("tenant/acme/x");
    v.put(&p, &Secret::from("under key 1"), None).unwrap();
    assert_eq!(v.rotate_tenant_key(&slug("acme")).unwrap(), 2);
    v.put(&p, &Secret::from("under key 2"), None).unwrap();
    let kv = |version: u64| {
        count(
            &pv.url,
            &format!("SELECT key_version FROM versions WHERE version = {version}"),
        )
    };
    assert_eq!((kv(1), kv(2)), (1, 2));
    assert_eq!(v.rewrap(&slug("acme")).unwrap(), 1);
    assert_eq!(kv(1), 2);
    assert_eq!(
        pv.sql("SELECT version FROM data_keys"),
        vec![vec![Some("2".to_owned())]],
        "the unused old key is shredded"
    );
    let other = pv.other_server(options());
    assert_eq!(
        other.get_version(&p, 1).unwrap().value.expose(),
        b"under key 1"
    );
    assert_eq!(other.get(&p).unwrap().value.expose(), b"under key 2");
    assert_eq!(other.rewrap(&slug("acme")).unwrap(), 0);

    // The root key: rotated on one server, every data key rewrapped.
    let unlock = Unlock::KeyFile(pv.dir.path().join("vault.key"));
    v.rotate_root_key(&unlock).unwrap();
    let third = pv.other_server(options());
    assert_eq!(third.get(&p).unwrap().value.expose(), b"under key 2");
}

#[test]
fn opening_twice_applies_the_migrations_once_and_newer_schemas_are_refused() {
    let url = PgCluster::shared().fresh_database();
    let s = store(&url);
    assert_eq!(s.schema_version().unwrap(), 1);
    let tables = || {
        count(
            &url,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
        )
    };
    let before = tables();
    assert_eq!(before, 10);
    assert_eq!(count(&url, "SELECT count(*) FROM plans"), 3);
    drop(s);
    let s = store(&url);
    assert_eq!(s.schema_version().unwrap(), 1);
    assert_eq!(tables(), before);
    assert_eq!(count(&url, "SELECT count(*) FROM plans"), 3);
    assert_eq!(count(&url, "SELECT count(*) FROM schema_version"), 1);
    drop(s);

    simple_query(&url, "UPDATE schema_version SET version = 99");
    match PostgresStore::connect(&url) {
        Err(Error::SchemaTooNew {
            found: 99,
            supported: 1,
        }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn servers_starting_at_once_on_an_empty_database_all_succeed_with_one_schema() {
    let url = PgCluster::shared().fresh_database();
    let barrier = Arc::new(Barrier::new(6));
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let (url, barrier) = (url.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                PostgresStore::connect(&url).map(|s| s.schema_version())
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap().unwrap().unwrap(), 1);
    }
    assert_eq!(count(&url, "SELECT count(*) FROM plans"), 3);
    assert_eq!(count(&url, "SELECT count(*) FROM vault_state"), 1);
    assert_eq!(count(&url, "SELECT version FROM schema_version"), 1);
}

#[test]
fn concurrent_cas_writers_on_two_servers_have_exactly_one_winner_per_version() {
    let pv = PgVault::with_tenants(&["acme"]);
    let servers = Arc::new([pv.vault, pv_other(&pv.url, &pv.dir)]);
    // The first write of a name (no secret row to lock yet): one winner.
    let p = path("tenant/acme/hot");
    for expected in 0..=4u64 {
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (servers, barrier, p) = (Arc::clone(&servers), Arc::clone(&barrier), p.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    servers[i % 2].put(&p, &Secret::from(format!("w{i}")), Some(expected))
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners, vec![&(expected + 1)], "{results:?}");
        assert!(
            results
                .iter()
                .filter(|r| r.is_err())
                .all(|r| matches!(r, Err(Error::CasMismatch { .. }))),
            "{results:?}"
        );
    }
    // Unconditional writers on both servers: every version handed out once.
    let p = path("tenant/acme/busy");
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let (servers, p) = (Arc::clone(&servers), p.clone());
            std::thread::spawn(move || {
                (0..10)
                    .map(|j| {
                        servers[i % 2]
                            .put(&p, &Secret::from(format!("{i}-{j}")), None)
                            .unwrap()
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=80).collect::<Vec<u64>>(),
        "no duplicates, no gaps"
    );
    assert_eq!(servers[1].metadata(&p).unwrap().current_version, 80);
}

fn pv_other(url: &str, dir: &tempfile::TempDir) -> Vault {
    Vault::open(
        store(url),
        &Unlock::KeyFile(dir.path().join("vault.key")),
        options(),
    )
    .unwrap()
}

#[test]
fn a_key_rotated_on_one_server_is_used_by_the_other() {
    let pv = PgVault::with_tenants(&["acme"]);
    let other = pv.other_server(options());
    let p = path("tenant/acme/x");
    // Both servers have key 1 cached.
    pv.vault.put(&p, &Secret::from("a1"), None).unwrap();
    assert_eq!(other.get(&p).unwrap().value.expose(), b"a1");
    assert_eq!(pv.vault.rotate_tenant_key(&slug("acme")).unwrap(), 2);
    // The other server's next write uses the new key.
    assert_eq!(other.put(&p, &Secret::from("b2"), None).unwrap(), 2);
    assert_eq!(
        count(
            &pv.url,
            "SELECT key_version FROM versions WHERE version = 2"
        ),
        2
    );
    assert_eq!(pv.vault.get(&p).unwrap().value.expose(), b"b2");
    // Rewrapped on the first server: the other still reads version 1.
    assert_eq!(pv.vault.rewrap(&slug("acme")).unwrap(), 1);
    assert_eq!(other.get_version(&p, 1).unwrap().value.expose(), b"a1");
    assert_eq!(
        other.scope_status(&slug("acme")).unwrap().scope.key_version,
        2
    );
}

#[test]
fn a_token_revoked_on_one_server_is_refused_by_the_other() {
    let pv = PgVault::with_tenants(&["acme"]);
    let other = pv.other_server(options());
    let issued = pv
        .vault
        .root_session()
        .issue_token(&TokenSpec {
            tenant: Some(slug("acme")),
            role: Some(Role::User),
            ..TokenSpec::default()
        })
        .unwrap();
    let token = std::str::from_utf8(issued.token.expose())
        .unwrap()
        .to_owned();
    // Authenticated (and cached) on the other server.
    other.authenticate(&token).unwrap();
    other.authenticate(&token).unwrap();
    pv.vault.root_session().revoke_token(&issued.id).unwrap();
    assert!(matches!(
        other.authenticate(&token),
        Err(Error::Unauthenticated(_))
    ));
    // A deleted tenant is gone for the other server too.
    pv.vault.delete_scope(&slug("acme")).unwrap();
    assert!(matches!(
        other.get(&path("tenant/acme/x")),
        Err(Error::ScopeNotFound(_))
    ));
}

#[test]
fn a_watch_sees_changes_made_on_another_server() {
    let pv = PgVault::with_tenants(&["acme"]);
    let other = pv.other_server(options());
    let root = pv.vault.root_session();
    let prefix = ListPrefix::parse("tenant/acme/").unwrap();
    let mut watch = root.watch(&prefix).unwrap();
    assert!(root.watch_poll(&mut watch, 10).unwrap().is_empty());
    other
        .root_session()
        .put(&path("tenant/acme/db"), &Secret::from("v"), None)
        .unwrap();
    let changes = root.watch_poll(&mut watch, 10).unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].operation, "put");
    assert_eq!(changes[0].version, Some(1));
    assert!(root.watch_poll(&mut watch, 10).unwrap().is_empty());
}

#[test]
fn servers_appending_at_once_form_one_gapless_audit_chain() {
    let pv = PgVault::with_tenants(&["acme"]);
    let other = pv.other_server(options());
    let servers = Arc::new([pv.vault, other]);
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let servers = Arc::clone(&servers);
            std::thread::spawn(move || {
                let s = servers[i % 2].root_session();
                for j in 0..15 {
                    let p = path(&format!("tenant/acme/s{i}"));
                    s.put(&p, &Secret::from(format!("{j}")), None).unwrap();
                    s.get(&p).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for s in servers.iter() {
        s.flush_audit().unwrap();
    }
    let n = servers[0].verify_audit().unwrap().unwrap();
    assert_eq!(n, servers[1].verify_audit().unwrap().unwrap());
    assert!(n >= 6 * 15 * 2, "{n}");
    let raw = store(&pv.url);
    let records = raw.audit_records(0, 100_000).unwrap();
    assert_eq!(records.len() as u64, n);
    assert_eq!(raw.last_audit_seq().unwrap(), n);
    assert_eq!(verify_chain(records), Ok(n));
    assert_eq!(
        count(
            &pv.url,
            "SELECT count(*) FROM audit_log WHERE operation = 'put' AND outcome = 'ok'"
        ),
        90
    );
}

/// The store drives its queries on the calling thread with its own runtime:
/// from a plain thread, from `spawn_blocking` of another runtime (as the gRPC
/// server calls it), from a worker of another multi-thread runtime, and it
/// can be dropped inside async code.
#[test]
fn the_store_works_from_plain_threads_and_inside_other_runtimes() {
    let url = PgCluster::shared().fresh_database();
    let s = Arc::new(store(&url));
    assert!(s.scopes().unwrap().is_empty());
    let s2 = Arc::clone(&s);
    std::thread::spawn(move || s2.change_marker().unwrap())
        .join()
        .unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let s2 = Arc::clone(&s);
    let n = rt
        .block_on(async move {
            tokio::task::spawn_blocking(move || s2.scopes().map(|v| v.len()))
                .await
                .unwrap()
        })
        .unwrap();
    assert_eq!(n, 0);
    let s2 = Arc::clone(&s);
    let seq = rt
        .block_on(async move {
            tokio::spawn(async move { s2.last_audit_seq() })
                .await
                .unwrap()
        })
        .unwrap();
    assert_eq!(seq, 0);

    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let s2 = Arc::clone(&s);
    let marker = current
        .block_on(async move {
            tokio::task::spawn_blocking(move || s2.change_marker())
                .await
                .unwrap()
        })
        .unwrap();
    assert_eq!(marker, 0);

    // Dropped inside async code (the last reference of a server's vault
    // goes away when its main future ends).
    let url2 = url.clone();
    rt.block_on(async move {
        let s = tokio::task::spawn_blocking(move || PostgresStore::connect(&url2).unwrap())
            .await
            .unwrap();
        drop(s);
    });
    drop(s);
}

#[test]
fn the_change_marker_moves_with_every_change_servers_cache() {
    let pv = PgVault::with_tenants(&["acme"]);
    let s = store(&pv.url);
    let mut last = s.change_marker().unwrap();
    let mut moved = |what: &str| {
        let now = s.change_marker().unwrap();
        assert_ne!(now, last, "{what} moves the marker");
        last = now;
    };
    let root = pv.vault.root_session();
    let issued = root
        .issue_token(&TokenSpec {
            tenant: Some(slug("acme")),
            role: Some(Role::Owner),
            ..TokenSpec::default()
        })
        .unwrap();
    moved("issuing a token");
    let second = root
        .issue_token(&TokenSpec {
            tenant: Some(slug("acme")),
            role: Some(Role::Owner),
            ..TokenSpec::default()
        })
        .unwrap();
    moved("issuing another");
    root.revoke_token(&second.id).unwrap();
    moved("revoking a token");
    assert!(matches!(
        root.revoke_token(&issued.id),
        Err(Error::LastOwner(_))
    ));
    pv.vault.rotate_tenant_key(&slug("acme")).unwrap();
    moved("rotating a data key");
    pv.vault
        .set_limits(
            &slug("acme"),
            &tenant_vault::LimitChange {
                max_tokens: Some(50),
                ..Default::default()
            },
        )
        .unwrap();
    moved("changing limits");
    root.put(&path("tenant/acme/x"), &Secret::from("v"), None)
        .unwrap();
    moved("an audited put");
    pv.vault
        .create_scope(&slug("beta"), ScopeKind::Freelance)
        .unwrap();
    moved("creating a scope");
    pv.vault.delete_scope(&slug("beta")).unwrap();
    moved("deleting a scope");
}

/// A CA and a server certificate for `localhost` and 127.0.0.1, as PEM:
/// (ca, server certificate, server key).
fn tls_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// `sslmode=verify-full` with `sslrootcert`: the connection is TLS, checked
/// against the given CA; another CA, or plaintext required by the server,
/// fails with an error naming the host.
#[test]
fn tls_to_the_database_is_verified_against_sslrootcert() {
    let (ca, cert, key) = tls_pki();
    let cluster = PgCluster::start_with(
        &[
            ("server.pem", cert.as_bytes()),
            ("server.key", key.as_bytes()),
        ],
        &[
            ("ssl", "on"),
            ("ssl_cert_file", "server.pem"),
            ("ssl_key_file", "server.key"),
        ],
    );
    let url = cluster.fresh_database();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let (other_ca, _, _) = tls_pki();
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, other_ca).unwrap();

    let mut open = Vec::new();
    for host in ["127.0.0.1", "localhost"] {
        let tls_url = format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            url.replace("127.0.0.1", host),
            ca_file.display()
        );
        let s = PostgresStore::connect(&tls_url).unwrap();
        assert_eq!(s.schema_version().unwrap(), 1);
        assert!(s.scopes().unwrap().is_empty());
        open.push(s);
    }
    // The server says those sessions are encrypted.
    let in_tls = simple_query(&cluster.url(), "SELECT count(*) FROM pg_stat_ssl WHERE ssl");
    assert!(in_tls[0][0].as_deref().unwrap().parse::<i64>().unwrap() >= 1);

    let wrong = format!("{url}?sslmode=require&sslrootcert={}", other_file.display());
    let err = PostgresStore::connect(&wrong).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Storage { .. }), "{msg}");
    assert!(
        msg.contains(&format!("127.0.0.1:{}", cluster.port())),
        "{msg}"
    );
}
