//! Embedded `get` and `put` of a 256-byte secret, with 1 tenant and with
//! 10,000 tenants × 100 secrets (1,000,000 secrets), each beside the
//! baselines measured in the same run: a raw rusqlite point read of the same
//! row, a bare AES-256-GCM open of a 256-byte value, and the two together.
//!
//! The vault files live in `/dev/shm` when it exists, so that setting up a
//! million secrets (one durable transaction each) takes seconds rather than
//! hours of fsyncs; the baselines use the same files, so the ratios compare
//! like with like. Set `TV_BENCH_TENANTS` to use fewer tenants for a quick run.
#![allow(missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::{Rng, RngCore};
use tenant_vault::{
    LimitChange, Role, ScopeKind, Secret, SecretPath, Slug, SqliteStore, TokenSpec, Unlock, Vault,
    VaultOptions, create_key_file,
};

const SECRETS_PER_TENANT: usize = 100;
const VALUE_LEN: usize = 256;

fn bench_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: PathBuf,
    vault: Vault,
    paths: Vec<SecretPath>,
}

fn fixture(tenants: usize) -> Fixture {
    let dir = bench_dir();
    let key = dir.path().join("k");
    create_key_file(&key).unwrap();
    let db = dir.path().join("vault.db");
    let vault = Vault::init(
        SqliteStore::open(&db).unwrap(),
        &Unlock::KeyFile(key),
        VaultOptions::default(),
    )
    .unwrap();
    let mut rng = rand::thread_rng();
    let mut value = vec![0u8; VALUE_LEN];
    let mut paths = Vec::with_capacity(tenants * SECRETS_PER_TENANT);
    for t in 0..tenants {
        let slug = Slug::parse(&format!("tenant-{t:05}")).unwrap();
        vault.create_scope(&slug, ScopeKind::Enterprise).unwrap();
        for s in 0..SECRETS_PER_TENANT {
            let p = SecretPath::parse(&format!("tenant/{slug}/service/secret-{s:03}")).unwrap();
            rng.fill_bytes(&mut value);
            vault.put(&p, &Secret::new(value.clone()), None).unwrap();
            paths.push(p);
        }
    }
    Fixture {
        _dir: dir,
        db,
        vault,
        paths,
    }
}

/// A raw primary-key point read of one stored version (scope ids resolved
/// beforehand), on a separate connection with a cached statement: the least
/// any SQLite-backed store must do.
struct RawRead {
    conn: rusqlite::Connection,
    scope_ids: HashMap<String, String>,
}

impl RawRead {
    fn new(db: &Path) -> Self {
        let conn =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
        let scope_ids = conn
            .prepare("SELECT slug, id FROM scopes")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        RawRead { conn, scope_ids }
    }

    fn read(&self, p: &SecretPath) -> (Vec<u8>, Vec<u8>) {
        self.conn
            .prepare_cached(
                "SELECT nonce, ciphertext FROM versions
                 WHERE scope_id = ?1 AND name = ?2 AND version = 1",
            )
            .unwrap()
            .query_row(
                [
                    self.scope_ids[p.slug().as_str()].as_str(),
                    p.name().as_str(),
                ],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    }
}

/// A bare AES-256-GCM open of a 256-byte value with associated data of the
/// size the vault uses.
struct BareAes {
    cipher: Aes256Gcm,
    nonce: [u8; 12],
    aad: Vec<u8>,
    ct: Vec<u8>,
}

impl BareAes {
    fn new() -> Self {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let cipher = Aes256Gcm::new_from_slice(&key).unwrap();
        let nonce: [u8; 12] = rand::thread_rng().r#gen();
        let aad = vec![7u8; 96];
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &[1u8; VALUE_LEN],
                    aad: &aad,
                },
            )
            .unwrap();
        BareAes {
            cipher,
            nonce,
            aad,
            ct,
        }
    }

    fn open(&self, nonce: &[u8], ct: &[u8]) -> Vec<u8> {
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &self.aad,
                },
            )
            .unwrap()
    }
}

fn tenants_large() -> usize {
    std::env::var("TV_BENCH_TENANTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn bench_get(c: &mut Criterion) {
    let aes = BareAes::new();
    let mut g = c.benchmark_group("get_256B");
    for tenants in [1, tenants_large()] {
        let f = fixture(tenants);
        let stored = tenants * SECRETS_PER_TENANT;
        let raw = RawRead::new(&f.db);
        let mut rng = rand::thread_rng();
        g.bench_function(BenchmarkId::new("vault_get", stored), |b| {
            b.iter(|| {
                let p = &f.paths[rng.gen_range(0..f.paths.len())];
                black_box(f.vault.get(p).unwrap())
            })
        });
        g.bench_function(BenchmarkId::new("raw_sqlite_read", stored), |b| {
            b.iter(|| {
                let p = &f.paths[rng.gen_range(0..f.paths.len())];
                black_box(raw.read(p))
            })
        });
        g.bench_function(
            BenchmarkId::new("raw_sqlite_read_plus_aes_open", stored),
            |b| {
                b.iter(|| {
                    let p = &f.paths[rng.gen_range(0..f.paths.len())];
                    let (_nonce, ct) = raw.read(p);
                    black_box(ct);
                    black_box(aes.open(&aes.nonce, &aes.ct))
                })
            },
        );
    }
    g.bench_function("bare_aes_gcm_open", |b| {
        b.iter(|| black_box(aes.open(&aes.nonce, &aes.ct)))
    });
    g.finish();
}

fn bench_put(c: &mut Criterion) {
    let mut g = c.benchmark_group("put_256B");
    for tenants in [1, tenants_large()] {
        let f = fixture(tenants);
        let stored = tenants * SECRETS_PER_TENANT;
        let raw = rusqlite::Connection::open(&f.db).unwrap();
        raw.pragma_update(None, "synchronous", "FULL").unwrap();
        raw.execute_batch("CREATE TABLE IF NOT EXISTS bench_raw (k INTEGER PRIMARY KEY, v BLOB)")
            .unwrap();
        let value = Secret::new(vec![3u8; VALUE_LEN]);
        let mut rng = rand::thread_rng();
        g.bench_function(BenchmarkId::new("vault_put", stored), |b| {
            b.iter(|| {
                let p = &f.paths[rng.gen_range(0..f.paths.len())];
                black_box(f.vault.put(p, &value, None).unwrap())
            })
        });
        let mut k = 0i64;
        g.bench_function(BenchmarkId::new("raw_sqlite_insert_txn", stored), |b| {
            b.iter(|| {
                k += 1;
                let tx = raw.unchecked_transaction().unwrap();
                tx.prepare_cached("INSERT OR REPLACE INTO bench_raw (k, v) VALUES (?1, ?2)")
                    .unwrap()
                    .execute(rusqlite::params![k % 100_000, value.expose()])
                    .unwrap();
                tx.commit().unwrap();
            })
        });
    }
    g.finish();
}

/// What authorization and audit add to an embedded get: the core `get`
/// beside the same get through a tenant session (token rate check, policy
/// check, audit record), and with the token authenticated on every request
/// as a server does.
fn bench_authorized_get(c: &mut Criterion) {
    let f = fixture(1);
    let slug = Slug::parse("tenant-00000").unwrap();
    let root = f.vault.root_session();
    root.set_limits(
        &slug,
        &LimitChange {
            rate_per_sec: Some(1e12),
            ..Default::default()
        },
    )
    .unwrap();
    let issued = root
        .issue_token(&TokenSpec {
            tenant: Some(slug),
            role: Some(Role::Viewer),
            ..Default::default()
        })
        .unwrap();
    let token = String::from_utf8(issued.token.expose().to_vec()).unwrap();
    let principal = f.vault.authenticate(&token).unwrap();
    let mut rng = rand::thread_rng();
    let mut g = c.benchmark_group("get_authorized_256B");
    g.bench_function("core_get", |b| {
        b.iter(|| {
            let p = &f.paths[rng.gen_range(0..f.paths.len())];
            black_box(f.vault.get(p).unwrap())
        })
    });
    let session = f.vault.session(principal);
    g.bench_function("session_get", |b| {
        b.iter(|| {
            let p = &f.paths[rng.gen_range(0..f.paths.len())];
            black_box(session.get(p).unwrap())
        })
    });
    g.bench_function("authenticate_and_session_get", |b| {
        b.iter(|| {
            let p = &f.paths[rng.gen_range(0..f.paths.len())];
            let principal = f.vault.authenticate(&token).unwrap();
            black_box(f.vault.session(principal).get(p).unwrap())
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50);
    targets = bench_authorized_get, bench_get, bench_put
}
criterion_main!(benches);
