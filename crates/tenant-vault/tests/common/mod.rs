//! Helpers shared by the tenant-vault integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use tenant_vault::{
    KdfParams, ScopeKind, Slug, SqliteStore, Unlock, Vault, VaultOptions, create_key_file,
};

/// A vault in a temp dir, unlocked with a key file.
pub struct TestVault {
    pub dir: tempfile::TempDir,
    pub vault: Vault,
}

impl TestVault {
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("vault.db")
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("vault.key")
    }

    /// A second, raw connection on the database file, for tests that edit it.
    pub fn raw(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.db_path()).unwrap()
    }

    /// Reopens the vault from its files.
    pub fn reopen(self, opts: VaultOptions) -> TestVault {
        let TestVault { dir, vault } = self;
        drop(vault);
        let store = SqliteStore::open(dir.path().join("vault.db")).unwrap();
        let vault =
            Vault::open(store, &Unlock::KeyFile(dir.path().join("vault.key")), opts).unwrap();
        TestVault { dir, vault }
    }
}

/// Cheap Argon2id parameters: the tests exercise the logic, not the cost.
pub fn fast_kdf() -> KdfParams {
    KdfParams {
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
    }
}

pub fn options() -> VaultOptions {
    let mut o = VaultOptions::default();
    o.kdf = fast_kdf();
    o
}

pub fn key_file_vault(opts: VaultOptions) -> TestVault {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("vault.key");
    create_key_file(&key).unwrap();
    let store = SqliteStore::open(dir.path().join("vault.db")).unwrap();
    let vault = Vault::init(store, &Unlock::KeyFile(key), opts).unwrap();
    TestVault { dir, vault }
}

pub fn vault_with_tenants(opts: VaultOptions, tenants: &[&str]) -> TestVault {
    let tv = key_file_vault(opts);
    for t in tenants {
        tv.vault
            .create_scope(&slug(t), ScopeKind::Enterprise)
            .unwrap();
    }
    tv
}

pub fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

pub fn path(s: &str) -> tenant_vault::SecretPath {
    tenant_vault::SecretPath::parse(s).unwrap()
}

/// Every byte of the database, its WAL and shared-memory files.
pub fn storage_bytes(db: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(b) = std::fs::read(PathBuf::from(p)) {
            all.extend_from_slice(&b);
        }
    }
    all
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A short, stable name for an error variant, for comparing with a model.
pub fn kind(e: &tenant_vault::Error) -> &'static str {
    use tenant_vault::Error::*;
    match e {
        ScopeNotFound(_) => "no_scope",
        SecretNotFound(_) => "no_secret",
        VersionNotFound { .. } => "no_version",
        VersionDeleted { .. } => "deleted",
        VersionDestroyed { .. } => "destroyed",
        CasMismatch { .. } => "cas",
        ValueTooLarge { .. } => "too_large",
        QuotaExceeded { .. } => "quota",
        Integrity(_) => "integrity",
        _ => "other",
    }
}
