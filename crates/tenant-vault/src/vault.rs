//! The vault: scopes, envelope encryption and versioned key-value semantics
//! on top of a [`Store`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::access::{Policy, Principal, Role};
use crate::audit::{AuditProblem, Auditor, Pending};
use crate::session::{
    IssuedToken, Session, TokenInfo, TokenSpec, new_request_id, operator_grants,
    operator_policy_json,
};
use crate::store::{
    AuditEntry, AuditRecord, LimitChange, Limits, TokenInsert, TokenKindRecord, TokenRecord,
    TokenRevoke,
};

use crate::crypto::{self, Aad, KdfParams, Key};
use crate::error::{Error, Result};
use crate::path::{ListPrefix, SecretPath, Slug};
use crate::secret::Secret;
use crate::store::{
    Changed, DataKeyRecord, Lookup, PutOutcome, PutParams, RootRecord, ScopeId, ScopeKind,
    ScopeRecord, SealInput, Sealed, Store, StoredVersion, Timestamp, UnlockMethod, VersionChange,
    VersionSelector,
};

/// Limits and tuning. The defaults suit production.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VaultOptions {
    /// Largest value accepted by `put`, in bytes. Default 64 KiB.
    pub max_value_bytes: usize,
    /// Most secrets (names) one tenant may hold. Default 100,000.
    pub max_secrets_per_tenant: u64,
    /// Versions kept per secret unless its metadata says otherwise. Default 10.
    pub default_max_versions: u32,
    /// A data key is replaced after this many encryptions. Default 2^30,
    /// a quarter of the 2^32 limit NIST SP 800-38D sets for random 96-bit
    /// nonces.
    pub key_rotation_after: u64,
    /// Argon2id cost used when a passphrase is set.
    pub kdf: KdfParams,
    /// Also write the audit trail, as JSON lines, to this file.
    pub audit_file: Option<PathBuf>,
}

impl Default for VaultOptions {
    fn default() -> Self {
        VaultOptions {
            max_value_bytes: 64 * 1024,
            max_secrets_per_tenant: 100_000,
            default_max_versions: 10,
            key_rotation_after: 1 << 30,
            kdf: KdfParams::default(),
            audit_file: None,
        }
    }
}

/// Largest `max_versions` a secret may keep.
pub const MAX_VERSIONS_LIMIT: u32 = 1000;
/// Most entries in a secret's custom metadata.
pub const MAX_CUSTOM_ENTRIES: usize = 64;
/// Largest page `list` returns.
pub const MAX_LIST_PAGE: usize = 1000;

/// How the root key is unlocked.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Unlock {
    /// An operator passphrase (Argon2id derives the key-encryption key).
    Passphrase(Secret),
    /// A key file holding the key-encryption key as 64 hex characters.
    KeyFile(PathBuf),
}

impl Unlock {
    fn method(&self) -> UnlockMethod {
        match self {
            Unlock::Passphrase(_) => UnlockMethod::Passphrase,
            Unlock::KeyFile(_) => UnlockMethod::KeyFile,
        }
    }
}

/// Creates a key file holding a fresh random key, readable by its owner only.
/// Refuses to overwrite an existing file.
pub fn create_key_file(path: impl Into<PathBuf>) -> Result<()> {
    crypto::create_key_file(&path.into())
}

/// A tenant scope as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeInfo {
    /// The slug.
    pub slug: Slug,
    /// Enterprise or freelance.
    pub kind: ScopeKind,
    /// Creation time.
    pub created_at: Timestamp,
    /// The data-key version new writes use.
    pub key_version: u32,
}

impl From<ScopeRecord> for ScopeInfo {
    fn from(r: ScopeRecord) -> Self {
        ScopeInfo {
            slug: r.slug,
            kind: r.kind,
            created_at: r.created_at,
            key_version: r.active_key_version,
        }
    }
}

/// The result of [`Vault::create_scope`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeCreated {
    /// False when the scope already existed (nothing was changed).
    pub created: bool,
    /// The scope.
    pub scope: ScopeInfo,
}

/// [`Vault::scope_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeStatus {
    /// The scope.
    pub scope: ScopeInfo,
    /// Number of secrets.
    pub secrets: u64,
    /// Ciphertext bytes stored, all versions.
    pub stored_bytes: u64,
}

/// A value read from the vault.
#[derive(Debug, Clone)]
pub struct VersionedSecret {
    /// Its version.
    pub version: u64,
    /// When that version was written.
    pub created_at: Timestamp,
    /// The plaintext.
    pub value: Secret,
}

/// One page of [`Vault::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// Paths, in byte order.
    pub paths: Vec<SecretPath>,
    /// Pass as `after` to get the next page; `None` on the last page.
    pub next: Option<String>,
}

/// Metadata of one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMetadata {
    /// Version number.
    pub version: u64,
    /// Write time.
    pub created_at: Timestamp,
    /// Soft-deletion time.
    pub deleted_at: Option<Timestamp>,
    /// Destroyed for good.
    pub destroyed: bool,
}

/// Metadata of a secret ([`Vault::metadata`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretMetadata {
    /// The secret.
    pub path: SecretPath,
    /// Latest version written.
    pub current_version: u64,
    /// Oldest version kept.
    pub oldest_version: u64,
    /// Versions kept.
    pub max_versions: u32,
    /// First write.
    pub created_at: Timestamp,
    /// Last write or metadata change.
    pub updated_at: Timestamp,
    /// Caller-defined metadata.
    pub custom: BTreeMap<String, String>,
    /// Every version kept, oldest first.
    pub versions: Vec<VersionMetadata>,
}

/// A change to a secret's metadata ([`Vault::update_metadata`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataUpdate {
    /// New `max_versions` (1 to 1000); older versions are pruned at once.
    pub max_versions: Option<u32>,
    /// Replaces the custom metadata. Metadata is not encrypted: never put a
    /// secret in it.
    pub custom: Option<BTreeMap<String, String>>,
}

struct Root {
    key: Key,
    version: u32,
}

/// How long unwrapped data keys are trusted without checking the cache
/// marker when no authentication has checked it meanwhile (an embedded
/// vault used as root): the longest a key rotated or a tenant deleted by
/// another process stays unwrapped here.
const KEY_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// A vault: tenant scopes of encrypted, versioned secrets.
///
/// `Vault` is `Send + Sync`; share it with an `Arc`.
pub struct Vault {
    store: Arc<dyn Store>,
    auditor: Auditor,
    /// Verified tokens by hash, valid while the store's cache marker holds.
    tokens: Mutex<(u64, HashMap<Vec<u8>, Principal>)>,
    /// Token buckets by token id: (tokens left, last refill).
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
    opts: VaultOptions,
    root: RwLock<Option<Arc<Root>>>,
    /// Unwrapped data keys by scope id (never reused) and key version.
    keys: RwLock<HashMap<ScopeId, HashMap<u32, Arc<Key>>>>,
    /// The cache marker the keys were last checked against, and when: every
    /// authentication checks it; a key lookup without one checks it once
    /// [`KEY_RECHECK`] has passed. When it moved (a key rotated, a tenant
    /// deleted, on any server), every unwrapped key is dropped.
    keys_marker: Mutex<(u64, Instant)>,
    /// Serializes changes to the root key within this process.
    root_change: Mutex<()>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault")
            .field("sealed", &self.is_sealed())
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

/// Compares a stored token hash with the presented token's hash in constant
/// time (`subtle`): the time taken does not depend on where they differ.
pub(crate) fn token_hash_matches(stored: &[u8], presented: &[u8]) -> subtle::Choice {
    stored.ct_eq(presented)
}

fn root_aad(version: u32) -> Aad {
    Aad::new("tenant-vault/root-key/v1")
        .int(version.into())
        .done()
}

fn data_key_aad(scope: &ScopeId, version: u32, root_version: u32) -> Aad {
    Aad::new("tenant-vault/data-key/v1")
        .field(scope.0.as_bytes())
        .int(version.into())
        .int(root_version.into())
        .done()
}

fn value_aad(scope: &ScopeId, path: &SecretPath, version: u64, key_version: u32) -> Aad {
    Aad::new("tenant-vault/value/v1")
        .field(scope.0.as_bytes())
        .field(path.slug().as_str().as_bytes())
        .field(path.name().as_str().as_bytes())
        .int(version)
        .int(key_version.into())
        .done()
}

/// Derives or reads the key-encryption key that `unlock` stands for, checking
/// it against `root` when given.
fn key_encryption_key(unlock: &Unlock, root: &RootRecord) -> Result<Key> {
    match (unlock, root.method) {
        (Unlock::Passphrase(p), UnlockMethod::Passphrase) => {
            let (Some(kdf), Some(salt)) = (root.kdf, root.salt.as_deref()) else {
                return Err(Error::Integrity(
                    "the root key record (Argon2id parameters)".into(),
                ));
            };
            kdf.derive(p.expose(), salt)
        }
        (Unlock::KeyFile(path), UnlockMethod::KeyFile) => crypto::read_key_file(path),
        (given, expected) => Err(Error::WrongUnlockMethod {
            expected: expected.as_str(),
            given: given.method().as_str(),
        }),
    }
}

fn unwrap_root(unlock: &Unlock, rec: &RootRecord) -> Result<Root> {
    let kek = key_encryption_key(unlock, rec)?;
    let key = kek
        .unwrap_key(&root_aad(rec.version), &rec.wrapped)
        .ok_or_else(|| match unlock {
            Unlock::Passphrase(_) => Error::WrongPassphrase,
            Unlock::KeyFile(p) => Error::WrongKeyFile(p.clone()),
        })?;
    Ok(Root {
        key,
        version: rec.version,
    })
}

/// Builds a root record wrapping `root` for `unlock`.
fn wrap_root(
    unlock: &Unlock,
    root: &Root,
    kdf: KdfParams,
    created_at: Timestamp,
) -> Result<RootRecord> {
    let (kek, kdf, salt) = match unlock {
        Unlock::Passphrase(p) => {
            if p.is_empty() {
                return Err(Error::InvalidArgument("the passphrase is empty".into()));
            }
            let salt = crypto::random_salt();
            (kdf.derive(p.expose(), &salt)?, Some(kdf), Some(salt))
        }
        Unlock::KeyFile(path) => (crypto::read_key_file(path)?, None, None),
    };
    Ok(RootRecord {
        method: unlock.method(),
        kdf,
        salt,
        version: root.version,
        wrapped: kek.wrap(&root_aad(root.version), &root.key),
        created_at,
        rotated_at: Timestamp::now(),
    })
}

impl Vault {
    /// Initializes a new vault in an empty store: a random root key wrapped
    /// for `unlock`. The vault is returned unsealed.
    pub fn init(store: impl Store + 'static, unlock: &Unlock, opts: VaultOptions) -> Result<Vault> {
        if store.root()?.is_some() {
            return Err(Error::AlreadyInitialized);
        }
        let root = Root {
            key: Key::generate(),
            version: 1,
        };
        let rec = wrap_root(unlock, &root, opts.kdf, Timestamp::now())?;
        store.init_root(&rec)?;
        Vault::new(Arc::new(store), opts, Some(root))
    }

    /// Opens an initialized vault and unlocks it.
    pub fn open(store: impl Store + 'static, unlock: &Unlock, opts: VaultOptions) -> Result<Vault> {
        let rec = store.root()?.ok_or(Error::NotInitialized)?;
        let root = unwrap_root(unlock, &rec)?;
        Vault::new(Arc::new(store), opts, Some(root))
    }

    /// Opens an initialized vault sealed: it answers only [`Vault::unseal`]
    /// and [`Vault::is_sealed`] until unsealed.
    pub fn open_sealed(store: impl Store + 'static, opts: VaultOptions) -> Result<Vault> {
        store.root()?.ok_or(Error::NotInitialized)?;
        Vault::new(Arc::new(store), opts, None)
    }

    fn new(store: Arc<dyn Store>, opts: VaultOptions, root: Option<Root>) -> Result<Vault> {
        let auditor = Auditor::new(Arc::clone(&store), opts.audit_file.as_ref())?;
        Ok(Vault {
            store,
            auditor,
            tokens: Mutex::new((u64::MAX, HashMap::new())),
            buckets: Mutex::new(HashMap::new()),
            opts,
            root: RwLock::new(root.map(Arc::new)),
            keys: RwLock::new(HashMap::new()),
            keys_marker: Mutex::new((u64::MAX, Instant::now())),
            root_change: Mutex::new(()),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &VaultOptions {
        &self.opts
    }

    /// True while the root key is not in memory.
    pub fn is_sealed(&self) -> bool {
        self.root
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// Unlocks the root key. A wrong passphrase or key file changes nothing.
    pub fn unseal(&self, unlock: &Unlock) -> Result<()> {
        let rec = self.store.root()?.ok_or(Error::NotInitialized)?;
        let root = unwrap_root(unlock, &rec)?;
        *self.root.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(root));
        Ok(())
    }

    /// Drops the root key and every unwrapped data key from memory.
    pub fn seal(&self) {
        *self.root.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.keys.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn root(&self) -> Result<Arc<Root>> {
        self.recheck_keys();
        self.root
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(Error::Sealed)
    }

    /// The unwrapped data key for `rec`, from the cache or unwrapped now.
    fn key_for(&self, root: &Root, slug: &Slug, rec: &DataKeyRecord) -> Result<Arc<Key>> {
        if let Some(k) = self.cached_key(&rec.scope_id, rec.version) {
            return Ok(k);
        }
        if rec.root_version != root.version {
            return Err(Error::Integrity(format!(
                "data key {} of tenant `{slug}`: wrapped by root key version {}, this process \
                 holds version {} (the root key was rotated elsewhere: unseal again)",
                rec.version, rec.root_version, root.version
            )));
        }
        let key = root
            .key
            .unwrap_key(
                &data_key_aad(&rec.scope_id, rec.version, rec.root_version),
                &rec.wrapped,
            )
            .ok_or_else(|| {
                Error::Integrity(format!("data key {} of tenant `{slug}`", rec.version))
            })?;
        let key = Arc::new(key);
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(rec.scope_id.clone())
            .or_default()
            .insert(rec.version, Arc::clone(&key));
        Ok(key)
    }

    /// Drops every unwrapped data key if the cache marker moved since the
    /// last check.
    fn check_keys(&self, marker: u64) {
        let mut seen = self.keys_marker.lock().unwrap_or_else(|p| p.into_inner());
        if seen.0 != marker {
            self.keys.write().unwrap_or_else(|p| p.into_inner()).clear();
        }
        *seen = (marker, Instant::now());
    }

    /// Checks the cache marker if no check happened for [`KEY_RECHECK`]
    /// (every operation passes here). When it cannot be read, the keys are
    /// dropped rather than trusted.
    fn recheck_keys(&self) {
        let stale = self
            .keys_marker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .elapsed()
            >= KEY_RECHECK;
        if stale {
            self.check_keys(self.store.cache_marker().unwrap_or(u64::MAX));
        }
    }

    /// A cached key. Callers hold the root (`root()`), which has already
    /// rechecked the cache marker.
    fn cached_key(&self, scope: &ScopeId, version: u32) -> Option<Arc<Key>> {
        self.keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(scope)
            .and_then(|m| m.get(&version))
            .cloned()
    }

    fn data_key(
        &self,
        root: &Root,
        scope: &ScopeId,
        slug: &Slug,
        version: u32,
    ) -> Result<Arc<Key>> {
        if let Some(k) = self.cached_key(scope, version) {
            return Ok(k);
        }
        let rec = self.store.data_key(scope, version)?.ok_or_else(|| {
            Error::Integrity(format!("data key {version} of tenant `{slug}` (missing)"))
        })?;
        self.key_for(root, slug, &rec)
    }

    fn forget_keys(&self, scope: &ScopeId, versions: Option<&[u32]>) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        match versions {
            None => {
                keys.remove(scope);
            }
            Some(vs) => {
                if let Some(m) = keys.get_mut(scope) {
                    for v in vs {
                        m.remove(v);
                    }
                }
            }
        }
    }

    fn new_data_key(&self, root: &Root, scope: &ScopeId, version: u32) -> (Key, DataKeyRecord) {
        let key = Key::generate();
        let rec = DataKeyRecord {
            scope_id: scope.clone(),
            version,
            root_version: root.version,
            wrapped: root
                .key
                .wrap(&data_key_aad(scope, version, root.version), &key),
            encryptions: 0,
            created_at: Timestamp::now(),
        };
        (key, rec)
    }

    // ----- scopes -------------------------------------------------------

    /// Creates a tenant scope with its first data key. Idempotent: for an
    /// existing slug it reports `created: false` and changes nothing.
    pub fn create_scope(&self, slug: &Slug, kind: ScopeKind) -> Result<ScopeCreated> {
        self.create_scope_audited(slug, kind, None)
    }

    pub(crate) fn create_scope_audited(
        &self,
        slug: &Slug,
        kind: ScopeKind,
        audit: Option<&Pending>,
    ) -> Result<ScopeCreated> {
        let root = self.root()?;
        let id = ScopeId::generate();
        let (key, rec) = self.new_data_key(&root, &id, 1);
        let scope = ScopeRecord {
            id,
            slug: slug.clone(),
            kind,
            created_at: Timestamp::now(),
            active_key_version: 1,
        };
        match self
            .store
            .create_scope(&scope, &rec, Pending::entry(audit))?
        {
            Some(existing) => Ok(ScopeCreated {
                created: false,
                scope: existing.into(),
            }),
            None => {
                Pending::written(audit);
                self.keys
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .entry(scope.id.clone())
                    .or_default()
                    .insert(1, Arc::new(key));
                Ok(ScopeCreated {
                    created: true,
                    scope: scope.into(),
                })
            }
        }
    }

    /// Deletes a tenant scope by crypto-shredding: its data keys, secrets and
    /// versions are removed in one transaction, the deleted bytes are zeroed
    /// in the storage files, and a later scope with the same slug gets a new
    /// identity that can never open anything of the old one.
    pub fn delete_scope(&self, slug: &Slug) -> Result<()> {
        self.delete_scope_audited(slug, None)
    }

    pub(crate) fn delete_scope_audited(&self, slug: &Slug, audit: Option<&Pending>) -> Result<()> {
        self.root()?;
        let id = self
            .store
            .delete_scope(slug, Pending::entry(audit))?
            .ok_or_else(|| Error::ScopeNotFound(slug.to_string()))?;
        Pending::written(audit);
        self.forget_keys(&id, None);
        Ok(())
    }

    /// All scopes, by slug.
    pub fn list_scopes(&self) -> Result<Vec<ScopeInfo>> {
        self.root()?;
        Ok(self.store.scopes()?.into_iter().map(Into::into).collect())
    }

    fn scope(&self, slug: &Slug) -> Result<ScopeRecord> {
        self.store
            .scope(slug)?
            .ok_or_else(|| Error::ScopeNotFound(slug.to_string()))
    }

    /// Secret count, stored bytes, creation time and data-key version.
    pub fn scope_status(&self, slug: &Slug) -> Result<ScopeStatus> {
        self.root()?;
        let scope = self.scope(slug)?;
        let usage = self.store.scope_usage(&scope.id)?;
        Ok(ScopeStatus {
            scope: scope.into(),
            secrets: usage.secrets,
            stored_bytes: usage.bytes,
        })
    }

    // ----- keys ---------------------------------------------------------

    /// Gives the tenant a new data key; new writes use it, older versions stay
    /// readable with their own key until [`Vault::rewrap`]. Returns the new
    /// key version.
    pub fn rotate_tenant_key(&self, slug: &Slug) -> Result<u32> {
        self.rotate_tenant_key_audited(slug, None)
    }

    pub(crate) fn rotate_tenant_key_audited(
        &self,
        slug: &Slug,
        audit: Option<&Pending>,
    ) -> Result<u32> {
        let root = self.root()?;
        let scope = self.scope(slug)?;
        self.add_key_after(&root, &scope, scope.active_key_version, audit)
    }

    fn add_key_after(
        &self,
        root: &Root,
        scope: &ScopeRecord,
        active: u32,
        audit: Option<&Pending>,
    ) -> Result<u32> {
        let version = active + 1;
        let (key, rec) = self.new_data_key(root, &scope.id, version);
        self.store.add_data_key(&rec, Pending::entry(audit))?;
        Pending::written(audit);
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(scope.id.clone())
            .or_default()
            .insert(version, Arc::new(key));
        Ok(version)
    }

    /// Re-encrypts every version of the tenant still sealed under an older
    /// data key with the active one (in one transaction), then deletes the
    /// data keys nothing uses any more. Returns how many versions moved.
    pub fn rewrap(&self, slug: &Slug) -> Result<u64> {
        let root = self.root()?;
        let scope = self.scope(slug)?;
        let active = scope.active_key_version;
        let new_key = self.data_key(&root, &scope.id, slug, active)?;
        let moved = self.store.reseal_all(&scope.id, active, &mut |name, v| {
            let path = SecretPath::new(slug.clone(), name.clone());
            let damaged = || Error::Integrity(format!("`{path}` version {}", v.version));
            let (Some(kv), Some(nonce), Some(ct)) = (v.key_version, &v.nonce, &v.ciphertext) else {
                return Err(damaged());
            };
            let old = self.data_key(&root, &scope.id, slug, kv)?;
            let plain = old
                .open(&value_aad(&scope.id, &path, v.version, kv), nonce, ct)
                .ok_or_else(damaged)?;
            let (nonce, ciphertext) =
                new_key.seal(&value_aad(&scope.id, &path, v.version, active), &plain);
            Ok(Sealed {
                key_version: active,
                nonce: nonce.to_vec(),
                ciphertext,
            })
        })?;
        let removed = self.store.remove_unused_data_keys(&scope.id)?;
        self.forget_keys(&scope.id, Some(&removed));
        Ok(moved)
    }

    /// Re-wraps the root key for a new passphrase or key file. `current`
    /// must unlock the vault as it is; otherwise nothing changes.
    pub fn change_passphrase(&self, current: &Unlock, new: &Unlock) -> Result<()> {
        let _guard = self.root_change.lock().unwrap_or_else(|p| p.into_inner());
        let rec = self.store.root()?.ok_or(Error::NotInitialized)?;
        let root = unwrap_root(current, &rec)?;
        let new_rec = wrap_root(new, &root, self.opts.kdf, rec.created_at)?;
        self.store.replace_root(&new_rec, &[])?;
        *self.root.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(root));
        Ok(())
    }

    /// Replaces the root key with a fresh one and re-wraps every data key
    /// under it, in one transaction (values are not re-encrypted). `current`
    /// must unlock the vault; the new root key is wrapped for it. Returns the
    /// new root key version.
    pub fn rotate_root_key(&self, current: &Unlock) -> Result<u32> {
        let _guard = self.root_change.lock().unwrap_or_else(|p| p.into_inner());
        let rec = self.store.root()?.ok_or(Error::NotInitialized)?;
        let old = unwrap_root(current, &rec)?;
        let new = Root {
            key: Key::generate(),
            version: old.version + 1,
        };
        let mut rewrapped = Vec::new();
        for mut k in self.store.all_data_keys()? {
            let dk = old
                .key
                .unwrap_key(
                    &data_key_aad(&k.scope_id, k.version, k.root_version),
                    &k.wrapped,
                )
                .ok_or_else(|| {
                    Error::Integrity(format!(
                        "data key {} of scope id {}",
                        k.version, k.scope_id.0
                    ))
                })?;
            k.root_version = new.version;
            k.wrapped = new
                .key
                .wrap(&data_key_aad(&k.scope_id, k.version, new.version), &dk);
            rewrapped.push(k);
        }
        let new_rec = wrap_root(
            current,
            &new,
            rec.kdf.unwrap_or(self.opts.kdf),
            rec.created_at,
        )?;
        self.store.replace_root(&new_rec, &rewrapped)?;
        let version = new.version;
        *self.root.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(new));
        Ok(version)
    }

    // ----- secrets ------------------------------------------------------

    /// Writes a new version and returns its number. `cas = Some(0)` writes
    /// only if the secret does not exist; `cas = Some(n)` only if the current
    /// version is `n`.
    pub fn put(&self, path: &SecretPath, value: &Secret, cas: Option<u64>) -> Result<u64> {
        self.put_audited(path, value, cas, None)
    }

    pub(crate) fn put_audited(
        &self,
        path: &SecretPath,
        value: &Secret,
        cas: Option<u64>,
        audit: Option<&Pending>,
    ) -> Result<u64> {
        if value.len() > self.opts.max_value_bytes {
            return Err(Error::ValueTooLarge {
                size: value.len(),
                limit: self.opts.max_value_bytes,
            });
        }
        let root = self.root()?;
        let slug = path.slug();
        let params = PutParams {
            slug,
            name: path.name(),
            cas,
            max_secrets: self.opts.max_secrets_per_tenant,
            ciphertext_len: value.len() as u64 + 16,
            default_max_versions: self.opts.default_max_versions,
            now: Timestamp::now(),
        };
        let mut seal = |input: &SealInput<'_>| -> Result<Sealed> {
            let key = self.key_for(&root, slug, input.key)?;
            let aad = value_aad(input.scope, path, input.version, input.key.version);
            let (nonce, ciphertext) = key.seal(&aad, value.expose());
            Ok(Sealed {
                key_version: input.key.version,
                nonce: nonce.to_vec(),
                ciphertext,
            })
        };
        match self.store.put(&params, &mut seal, Pending::entry(audit))? {
            PutOutcome::Written {
                version,
                key_version,
                key_encryptions,
            } => {
                Pending::written(audit);
                if key_encryptions >= self.opts.key_rotation_after {
                    self.rotate_worn_key(&root, slug, key_version);
                }
                Ok(version)
            }
            PutOutcome::NoScope => Err(Error::ScopeNotFound(slug.to_string())),
            PutOutcome::CasMismatch { current } => Err(Error::CasMismatch {
                path: path.to_string(),
                expected: cas.unwrap_or_default(),
                current,
            }),
            PutOutcome::TooManySecrets(limit) => Err(Error::QuotaExceeded {
                tenant: slug.to_string(),
                what: "secrets",
                limit,
            }),
            PutOutcome::TooManyBytes(limit) => Err(Error::QuotaExceeded {
                tenant: slug.to_string(),
                what: "stored bytes",
                limit,
            }),
        }
    }

    /// Replaces a data key that reached its encryption budget. The write that
    /// noticed it has already been committed, so a failure here is not
    /// reported to that caller: every later write through the worn key tries
    /// again, and the budget leaves three quarters of the nonce limit spare.
    /// Two writers noticing at once cannot both add a key: the new version
    /// number is taken from the worn one and the store refuses a duplicate.
    fn rotate_worn_key(&self, root: &Root, slug: &Slug, worn: u32) {
        if let Ok(scope) = self.scope(slug) {
            if scope.active_key_version == worn {
                let _ = self.add_key_after(root, &scope, worn, None);
            }
        }
    }

    /// Reads the current version.
    pub fn get(&self, path: &SecretPath) -> Result<VersionedSecret> {
        self.read(path, VersionSelector::Latest)
    }

    /// Reads a given version.
    pub fn get_version(&self, path: &SecretPath, version: u64) -> Result<VersionedSecret> {
        self.read(path, VersionSelector::Exact(version))
    }

    /// The SHA-256 digest of a version's value, decrypted (and so
    /// authenticated) now, soft-deleted versions included; `None` for a
    /// destroyed version. For checking a copy of a vault against its
    /// original (`secret-mcp migrate`) without handling the values: the
    /// value never leaves this call. Unaudited, as every method of `Vault`.
    pub fn version_digest(&self, path: &SecretPath, version: u64) -> Result<Option<[u8; 32]>> {
        match self.decrypt(path, VersionSelector::Exact(version), true) {
            Ok(v) => Ok(Some(Sha256::digest(v.value.expose()).into())),
            Err(Error::VersionDestroyed { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read(&self, path: &SecretPath, which: VersionSelector) -> Result<VersionedSecret> {
        self.decrypt(path, which, false)
    }

    fn decrypt(
        &self,
        path: &SecretPath,
        which: VersionSelector,
        deleted_too: bool,
    ) -> Result<VersionedSecret> {
        let root = self.root()?;
        let slug = path.slug();
        // A damaged page under this secret's row is reported as this secret's.
        let lookup = self
            .store
            .version(slug, path.name(), which)
            .map_err(|e| match e {
                Error::Integrity(what) => Error::Integrity(format!("`{path}`: {what}")),
                other => other,
            })?;
        let found = match lookup {
            Lookup::NoScope => return Err(Error::ScopeNotFound(slug.to_string())),
            Lookup::NoSecret => return Err(Error::SecretNotFound(path.to_string())),
            Lookup::Found(f) => f,
        };
        let v: StoredVersion = match (found.version, which) {
            (Some(v), _) => v,
            (None, VersionSelector::Exact(version)) => {
                return Err(Error::VersionNotFound {
                    path: path.to_string(),
                    version,
                });
            }
            (None, VersionSelector::Latest) => {
                return Err(Error::Integrity(format!(
                    "`{path}`: its current version is missing"
                )));
            }
        };
        if let VersionSelector::Exact(asked) = which {
            if v.version != asked {
                return Err(Error::Integrity(format!("`{path}` version {asked}")));
            }
        }
        if v.destroyed {
            return Err(Error::VersionDestroyed {
                path: path.to_string(),
                version: v.version,
            });
        }
        if v.deleted_at.is_some() && !deleted_too {
            return Err(Error::VersionDeleted {
                path: path.to_string(),
                version: v.version,
            });
        }
        let damaged = || Error::Integrity(format!("`{path}` version {}", v.version));
        let (Some(kv), Some(nonce), Some(ct)) = (v.key_version, &v.nonce, &v.ciphertext) else {
            return Err(damaged());
        };
        let key = self
            .data_key(&root, &found.scope, slug, kv)
            .map_err(|e| match e {
                Error::Integrity(_) => damaged(),
                other => other,
            })?;
        let plain = key
            .open(&value_aad(&found.scope, path, v.version, kv), nonce, ct)
            .ok_or_else(damaged)?;
        Ok(VersionedSecret {
            version: v.version,
            created_at: v.created_at,
            value: Secret::from(plain),
        })
    }

    /// Lists the secrets under `prefix` (one tenant only), in byte order,
    /// `limit` at a time (at most 1000), starting after the name `after`.
    pub fn list(&self, prefix: &ListPrefix, after: Option<&str>, limit: usize) -> Result<ListPage> {
        self.root()?;
        if limit == 0 || limit > MAX_LIST_PAGE {
            return Err(Error::InvalidArgument(format!(
                "a page holds 1 to {MAX_LIST_PAGE} names, not {limit}"
            )));
        }
        let slug = prefix.slug();
        let mut names = self
            .store
            .list(slug, prefix.name_prefix(), after, limit + 1)?
            .ok_or_else(|| Error::ScopeNotFound(slug.to_string()))?;
        let more = names.len() > limit;
        names.truncate(limit);
        let next = if more {
            names.last().map(|n| n.as_str().to_owned())
        } else {
            None
        };
        Ok(ListPage {
            paths: names
                .into_iter()
                .map(|n| SecretPath::new(slug.clone(), n))
                .collect(),
            next,
        })
    }

    pub(crate) fn change(
        &self,
        path: &SecretPath,
        versions: &[u64],
        change: VersionChange,
        audit: Option<&Pending>,
    ) -> Result<Vec<u64>> {
        self.root()?;
        match self.store.change_versions(
            path.slug(),
            path.name(),
            versions,
            change,
            Pending::entry(audit),
        )? {
            Lookup::NoScope => Err(Error::ScopeNotFound(path.slug().to_string())),
            Lookup::NoSecret => Err(Error::SecretNotFound(path.to_string())),
            Lookup::Found(Changed::NoVersion(version)) => Err(Error::VersionNotFound {
                path: path.to_string(),
                version,
            }),
            Lookup::Found(Changed::Destroyed(version)) => Err(Error::VersionDestroyed {
                path: path.to_string(),
                version,
            }),
            Lookup::Found(Changed::Versions(vs)) => {
                Pending::written(audit);
                Ok(vs)
            }
        }
    }

    /// Soft-deletes the given versions (the current one when `versions` is
    /// empty). Returns the versions concerned. Destroyed versions stay as
    /// they are.
    pub fn delete(&self, path: &SecretPath, versions: &[u64]) -> Result<Vec<u64>> {
        self.change(
            path,
            versions,
            VersionChange::Delete(Timestamp::now()),
            None,
        )
    }

    /// Restores soft-deleted versions (the current one when empty). Fails,
    /// changing nothing, if one of them is destroyed.
    pub fn undelete(&self, path: &SecretPath, versions: &[u64]) -> Result<Vec<u64>> {
        self.change(path, versions, VersionChange::Undelete, None)
    }

    /// Wipes the ciphertext of the given versions (the current one when
    /// empty) for good; their metadata stays.
    pub fn destroy(&self, path: &SecretPath, versions: &[u64]) -> Result<Vec<u64>> {
        self.change(path, versions, VersionChange::Destroy, None)
    }

    /// The secret's metadata and that of each version kept.
    pub fn metadata(&self, path: &SecretPath) -> Result<SecretMetadata> {
        self.root()?;
        let (secret, versions) = match self.store.metadata(path.slug(), path.name())? {
            Lookup::NoScope => return Err(Error::ScopeNotFound(path.slug().to_string())),
            Lookup::NoSecret => return Err(Error::SecretNotFound(path.to_string())),
            Lookup::Found(found) => found,
        };
        Ok(SecretMetadata {
            path: path.clone(),
            current_version: secret.current_version,
            oldest_version: versions
                .first()
                .map_or(secret.current_version, |v| v.version),
            max_versions: secret.max_versions,
            created_at: secret.created_at,
            updated_at: secret.updated_at,
            custom: secret.custom,
            versions: versions
                .into_iter()
                .map(|v| VersionMetadata {
                    version: v.version,
                    created_at: v.created_at,
                    deleted_at: v.deleted_at,
                    destroyed: v.destroyed,
                })
                .collect(),
        })
    }

    /// Changes `max_versions` and/or the custom metadata of a secret.
    pub fn update_metadata(&self, path: &SecretPath, update: &MetadataUpdate) -> Result<()> {
        self.update_metadata_audited(path, update, None)
    }

    pub(crate) fn update_metadata_audited(
        &self,
        path: &SecretPath,
        update: &MetadataUpdate,
        audit: Option<&Pending>,
    ) -> Result<()> {
        self.root()?;
        if let Some(m) = update.max_versions {
            if m == 0 || m > MAX_VERSIONS_LIMIT {
                return Err(Error::InvalidArgument(format!(
                    "max_versions is 1 to {MAX_VERSIONS_LIMIT}, not {m}"
                )));
            }
        }
        if let Some(custom) = &update.custom {
            if custom.len() > MAX_CUSTOM_ENTRIES {
                return Err(Error::InvalidArgument(format!(
                    "custom metadata holds at most {MAX_CUSTOM_ENTRIES} entries"
                )));
            }
            if let Some((k, _)) = custom
                .iter()
                .find(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 512)
            {
                return Err(Error::InvalidArgument(format!(
                    "custom metadata key `{}`: keys are 1 to 128 bytes, values at most 512",
                    k.chars().take(128).collect::<String>()
                )));
            }
        }
        match self.store.update_metadata(
            path.slug(),
            path.name(),
            update.max_versions,
            update.custom.as_ref(),
            Timestamp::now(),
            Pending::entry(audit),
        )? {
            Lookup::NoScope => Err(Error::ScopeNotFound(path.slug().to_string())),
            Lookup::NoSecret => Err(Error::SecretNotFound(path.to_string())),
            Lookup::Found(()) => {
                Pending::written(audit);
                Ok(())
            }
        }
    }

    // ----- principals, tokens, limits, audit --------------------------

    pub(crate) fn store(&self) -> &dyn Store {
        &*self.store
    }

    pub(crate) fn auditor(&self) -> &Auditor {
        &self.auditor
    }

    /// A session for the holder of the root key's unlock material (local use).
    /// Its requests are audited as `root`.
    pub fn root_session(&self) -> Session<'_> {
        Session::new(self, Principal::Root)
    }

    /// A session for an authenticated principal.
    pub fn session(&self, principal: Principal) -> Session<'_> {
        Session::new(self, principal)
    }

    /// A session for an authenticated principal whose audit records carry
    /// the caller's request id (a server passes its own): the same as
    /// `session(principal).with_request_id(request_id)`, without first
    /// drawing an id of its own.
    pub fn session_with_request_id(
        &self,
        principal: Principal,
        request_id: impl Into<String>,
    ) -> Session<'_> {
        Session::with_id(self, principal, request_id.into())
    }

    /// Checks a token string and returns its principal. Expiry and
    /// revocation take effect on the next call, in this process or any
    /// other sharing the store. Failures are audited (with the token's id
    /// when it is known, never the token).
    pub fn authenticate(&self, token: &str) -> Result<Principal> {
        let refuse = |principal: &str, reason: String| -> Result<Principal> {
            self.auditor.record(AuditEntry {
                time: Timestamp::now(),
                request_id: new_request_id(),
                principal: principal.to_owned(),
                tenant: String::new(),
                operation: "authenticate".into(),
                path: String::new(),
                version: None,
                outcome: "unauthenticated".into(),
            })?;
            Err(Error::Unauthenticated(reason))
        };
        if let Err(e) = smcp_token::parse(token) {
            return refuse("anonymous", format!("malformed token: {e}"));
        }
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let marker = self.store.cache_marker()?;
        self.check_keys(marker);
        {
            let mut cache = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if cache.0 != marker {
                *cache = (marker, HashMap::new());
            }
            if let Some(p) = cache.1.get(hash.as_slice()) {
                return Ok(p.clone());
            }
        }
        let Some(rec) = self.store.token_by_hash(&hash)? else {
            return refuse("anonymous", "unknown token".into());
        };
        // The lookup went through an index; confirm in constant time.
        if !bool::from(token_hash_matches(&rec.hash, &hash)) {
            return refuse("anonymous", "unknown token".into());
        }
        if rec.revoked_at.is_some() {
            return refuse(&rec.id, format!("token {} is revoked", rec.id));
        }
        if rec.expires_at.is_some_and(|t| t <= Timestamp::now()) {
            return refuse(&rec.id, format!("token {} has expired", rec.id));
        }
        let principal = match (&rec.kind, &rec.scope) {
            (TokenKindRecord::Tenant, Some((scope, slug))) => {
                let limits = self.store.limits(slug)?.ok_or_else(|| {
                    Error::Unauthenticated(format!("token {}: its tenant is gone", rec.id))
                })?;
                Principal::Tenant {
                    token_id: rec.id.clone(),
                    scope: scope.clone(),
                    slug: slug.clone(),
                    role: rec.role.clone(),
                    policy: Policy::from_json(&rec.policy)?,
                    rate_per_sec: limits.rate_per_sec,
                    burst: limits.burst,
                }
            }
            _ => Principal::Operator {
                token_id: rec.id.clone(),
                read_grants: operator_grants(&rec.policy),
            },
        };
        // Cache only if nothing changed meanwhile, and only until the token
        // would expire: an expired token is refused on the very next call.
        if rec.expires_at.is_none() {
            let mut cache = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
            if cache.0 == marker {
                cache.1.insert(hash.to_vec(), principal.clone());
            }
        }
        Ok(principal)
    }

    /// Takes one request from a token's bucket; false when it is empty.
    pub(crate) fn take_rate(&self, token_id: &str, rate: f64, burst: u64) -> bool {
        let now = Instant::now();
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !b.contains_key(token_id) {
            b.insert(token_id.to_owned(), (burst as f64, now));
        }
        let (left, last) = b.get_mut(token_id).expect("inserted above");
        *left = (*left + now.duration_since(*last).as_secs_f64() * rate).min(burst as f64);
        *last = now;
        if *left >= 1.0 {
            *left -= 1.0;
            true
        } else {
            false
        }
    }

    /// Issues a token (unchecked: [`Session::issue_token`] authorizes).
    /// The record names the token by its id, never the token.
    pub(crate) fn issue_token(
        &self,
        spec: &TokenSpec,
        audit: Option<&Pending>,
    ) -> Result<IssuedToken> {
        self.root()?;
        let now = Timestamp::now();
        let (kind, role, policy) = match &spec.tenant {
            Some(_) => {
                let (role, policy) = match (&spec.policy, spec.role) {
                    (Some(p), None) => ("custom".to_owned(), p.clone()),
                    (None, r) => {
                        let r = r.unwrap_or(Role::User);
                        (r.as_str().to_owned(), r.policy())
                    }
                    (Some(_), Some(_)) => {
                        return Err(Error::InvalidArgument(
                            "give a role or a policy, not both".into(),
                        ));
                    }
                };
                (smcp_token::TokenKind::Tenant, role, policy.to_json())
            }
            None => (
                smcp_token::TokenKind::Operator,
                "operator".to_owned(),
                operator_policy_json(&spec.read_grants),
            ),
        };
        let token = smcp_token::generate(kind);
        let id = format!("tok_{}", &new_request_id()[..12]);
        let expires_at = spec.ttl.map(|d| {
            Timestamp(
                now.0
                    .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            )
        });
        let rec = TokenRecord {
            id: id.clone(),
            hash: Sha256::digest(token.as_bytes()).to_vec(),
            kind: if spec.tenant.is_some() {
                TokenKindRecord::Tenant
            } else {
                TokenKindRecord::Operator
            },
            scope: None,
            role,
            policy,
            description: spec.description.clone(),
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        let entry = Pending::entry(audit).map(|e| AuditEntry {
            path: id.clone(),
            ..e.clone()
        });
        match self
            .store
            .insert_token(&rec, spec.tenant.as_ref(), now, entry.as_ref())?
        {
            TokenInsert::Inserted => {
                Pending::written(audit);
                Ok(IssuedToken {
                    id,
                    token: Secret::new(token.as_bytes().to_vec()),
                    expires_at,
                })
            }
            TokenInsert::NoScope => Err(Error::ScopeNotFound(
                spec.tenant
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            )),
            TokenInsert::TooMany(limit) => Err(Error::QuotaExceeded {
                tenant: spec
                    .tenant
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                what: "tokens",
                limit,
            }),
        }
    }

    pub(crate) fn revoke_token(
        &self,
        id: &str,
        scope: Option<&ScopeId>,
        audit: Option<&Pending>,
    ) -> Result<()> {
        self.root()?;
        let outcome =
            self.store
                .revoke_token(id, scope, Timestamp::now(), Pending::entry(audit))?;
        if outcome == TokenRevoke::Revoked {
            Pending::written(audit);
        }
        match outcome {
            TokenRevoke::Revoked | TokenRevoke::AlreadyRevoked => {
                self.tokens
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .1
                    .clear();
                Ok(())
            }
            TokenRevoke::NotFound => Err(Error::TokenNotFound(id.to_owned())),
            TokenRevoke::LastOwner => Err(Error::LastOwner(id.to_owned())),
        }
    }

    pub(crate) fn list_tokens(&self, tenant: Option<&Slug>) -> Result<Vec<TokenInfo>> {
        self.root()?;
        if let Some(s) = tenant {
            self.scope(s)?;
        }
        Ok(self
            .store
            .tokens(tenant)?
            .into_iter()
            .map(|t| TokenInfo {
                kind: match t.kind {
                    TokenKindRecord::Operator => "operator",
                    _ => "tenant",
                },
                tenant: t.scope.map(|(_, s)| s),
                id: t.id,
                role: t.role,
                description: t.description,
                created_at: t.created_at,
                expires_at: t.expires_at,
                revoked_at: t.revoked_at,
            })
            .collect())
    }

    /// A tenant's limits: its plan's, with its overrides.
    pub fn limits(&self, slug: &Slug) -> Result<Limits> {
        self.store
            .limits(slug)?
            .ok_or_else(|| Error::ScopeNotFound(slug.to_string()))
    }

    /// Moves a tenant to another plan and/or overrides its limits.
    pub fn set_limits(&self, slug: &Slug, change: &LimitChange) -> Result<()> {
        self.set_limits_audited(slug, change, None)
    }

    pub(crate) fn set_limits_audited(
        &self,
        slug: &Slug,
        change: &LimitChange,
        audit: Option<&Pending>,
    ) -> Result<()> {
        self.root()?;
        if !self.store.set_limits(slug, change, Pending::entry(audit))? {
            return Err(Error::ScopeNotFound(slug.to_string()));
        }
        Pending::written(audit);
        self.tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clear();
        Ok(())
    }

    /// Writes every pending audit record now (also done on drop).
    pub fn flush_audit(&self) -> Result<()> {
        self.auditor.flush()
    }

    /// Checks the whole audit chain in the store. Returns the number of
    /// records, or the first problem, naming the record.
    pub fn verify_audit(&self) -> Result<Result<u64, AuditProblem>> {
        self.auditor.flush()?;
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.audit_records(after, 10_000)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            all.extend(page);
        }
        Ok(crate::audit::verify_chain(all))
    }

    /// The last `n` audit records, oldest first.
    pub fn audit_tail(&self, n: usize) -> Result<Vec<AuditRecord>> {
        self.auditor.flush()?;
        let mut tail: std::collections::VecDeque<AuditRecord> = std::collections::VecDeque::new();
        let mut after = 0;
        loop {
            let page = self.store.audit_records(after, 10_000)?;
            let Some(last) = page.last() else { break };
            after = last.seq;
            for r in page {
                if tail.len() == n {
                    tail.pop_front();
                }
                tail.push_back(r);
            }
        }
        Ok(tail.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tenant deleted through another instance (process or server) on the
    /// same store has its unwrapped keys dropped here at the next
    /// authentication, and after [`KEY_RECHECK`] without one; secret writes
    /// and reads do not drop them.
    #[test]
    fn unwrapped_keys_follow_the_cache_marker() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("v.db");
        let key = dir.path().join("v.key");
        create_key_file(&key).unwrap();
        let unlock = Unlock::KeyFile(key);
        let open = || {
            Vault::open(
                crate::SqliteStore::open(&db).unwrap(),
                &unlock,
                VaultOptions::default(),
            )
            .unwrap()
        };
        drop(
            Vault::init(
                crate::SqliteStore::open(&db).unwrap(),
                &unlock,
                VaultOptions::default(),
            )
            .unwrap(),
        );
        let (a, b) = (open(), open());
        let acme = Slug::parse("acme").unwrap();
        let p = SecretPath::parse("tenant/acme/db").unwrap();
        a.create_scope(&acme, ScopeKind::Enterprise).unwrap();
        let token = a
            .root_session()
            .issue_token(&TokenSpec {
                tenant: Some(acme.clone()),
                role: Some(Role::Owner),
                ..Default::default()
            })
            .unwrap();
        let token = String::from_utf8(token.token.expose().to_vec()).unwrap();
        let scope = a.store.scope(&acme).unwrap().unwrap().id;
        let held = |v: &Vault| v.keys.read().unwrap().contains_key(&scope);

        a.authenticate(&token).unwrap();
        a.put(&p, &Secret::from("v"), None).unwrap();
        a.get(&p).unwrap();
        b.put(&p, &Secret::from("w"), None).unwrap();
        a.authenticate(&token).unwrap();
        assert!(held(&a), "writes elsewhere keep the cache");

        b.delete_scope(&acme).unwrap();
        assert!(held(&a));
        assert!(a.authenticate(&token).is_err(), "its token went with it");
        assert!(!held(&a), "dropped at the next authentication");

        // Without authentications: dropped once KEY_RECHECK has passed.
        a.create_scope(&acme, ScopeKind::Enterprise).unwrap();
        a.put(&p, &Secret::from("v"), None).unwrap();
        let scope = a.store.scope(&acme).unwrap().unwrap().id;
        let held = |v: &Vault| v.keys.read().unwrap().contains_key(&scope);
        a.get(&p).unwrap();
        assert!(held(&a));
        b.delete_scope(&acme).unwrap();
        std::thread::sleep(KEY_RECHECK + std::time::Duration::from_millis(50));
        assert!(a.get(&p).is_err());
        assert!(!held(&a), "dropped by the periodic check");
    }

    #[test]
    fn token_hashes_are_compared_in_constant_time() {
        // The comparison returns `subtle::Choice`, the constant-time type,
        // and `ct_eq` on slices also rejects a length mismatch.
        let a = [7u8; 32];
        let mut b = a;
        let same: subtle::Choice = token_hash_matches(&a, &b);
        assert!(bool::from(same));
        b[31] ^= 1;
        assert!(!bool::from(token_hash_matches(&a, &b)));
        b = a;
        b[0] ^= 0x80;
        assert!(!bool::from(token_hash_matches(&a, &b)));
        assert!(!bool::from(token_hash_matches(&a, &a[..31])));
    }
}
