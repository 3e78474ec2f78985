//! Storage: the [`Store`] trait the vault logic is written against, and the
//! records that cross it.
//!
//! A store holds only ciphertexts, wrapped keys and metadata. Every method
//! that touches several rows runs in one transaction, and every decision that
//! must be atomic with a write (allocating a version, checking a CAS, counting
//! a key's encryptions, enforcing the secret quota) is taken inside it, so a
//! backend shared by several servers stays correct.

use std::collections::BTreeMap;

use crate::crypto::KdfParams;
use crate::error::Result;
use crate::path::{SecretName, Slug};

pub(crate) mod postgres;
pub(crate) mod sqlite;

/// Milliseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }

    /// RFC 3339, to the millisecond, in UTC: `2026-11-23T09:35:48.123Z`.
    pub fn to_rfc3339(self) -> String {
        let fmt = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|t| t.format(&fmt).ok())
            .unwrap_or_else(|| format!("@{}ms", self.0))
    }
}

/// The internal identity of a tenant scope: 128 random bits, never reused.
/// Re-creating a deleted slug gives a new id, so nothing of the old scope
/// (rows, keys, cache entries, ciphertexts bound to the old id) can ever be
/// reached through the new one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeId(pub String);

impl ScopeId {
    /// A fresh random id.
    pub(crate) fn generate() -> Self {
        use rand::RngCore;
        let mut b = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut b);
        ScopeId(hex::encode(b))
    }
}

/// The kind of tenant, as our platforms sell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ScopeKind {
    /// A company account.
    Enterprise,
    /// A single freelancer's account.
    Freelance,
}

impl ScopeKind {
    /// The stored and printed name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Enterprise => "enterprise",
            ScopeKind::Freelance => "freelance",
        }
    }

    /// Parses `enterprise` or `freelance`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "enterprise" => Some(ScopeKind::Enterprise),
            "freelance" => Some(ScopeKind::Freelance),
            _ => None,
        }
    }
}

/// How the root key is unwrapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum UnlockMethod {
    /// A key-encryption key derived from a passphrase with Argon2id.
    Passphrase,
    /// A key-encryption key read from a key file.
    KeyFile,
}

impl UnlockMethod {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            UnlockMethod::Passphrase => "passphrase",
            UnlockMethod::KeyFile => "key file",
        }
    }
}

/// The wrapped root key and how to unwrap it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootRecord {
    /// Passphrase or key file.
    pub method: UnlockMethod,
    /// Argon2id parameters (passphrase only).
    pub kdf: Option<KdfParams>,
    /// Argon2id salt (passphrase only).
    pub salt: Option<Vec<u8>>,
    /// Increases with every root key rotation.
    pub version: u32,
    /// `nonce || AES-GCM(root key)`.
    pub wrapped: Vec<u8>,
    /// When the vault was initialized.
    pub created_at: Timestamp,
    /// When the root key or its wrapping last changed.
    pub rotated_at: Timestamp,
}

/// A tenant scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeRecord {
    /// Internal identity.
    pub id: ScopeId,
    /// Public name.
    pub slug: Slug,
    /// Enterprise or freelance.
    pub kind: ScopeKind,
    /// Creation time.
    pub created_at: Timestamp,
    /// The data-key version new writes use.
    pub active_key_version: u32,
}

/// A tenant data key, wrapped by the root key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataKeyRecord {
    /// The scope it belongs to.
    pub scope_id: ScopeId,
    /// Its version within the scope (1, 2, ...).
    pub version: u32,
    /// The root key version that wraps it.
    pub root_version: u32,
    /// `nonce || AES-GCM(data key)`.
    pub wrapped: Vec<u8>,
    /// How many values it has encrypted (for the nonce-limit rotation).
    pub encryptions: u64,
    /// Creation time.
    pub created_at: Timestamp,
}

/// Secret metadata (not per version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRecord {
    /// Name within the tenant.
    pub name: SecretName,
    /// Latest version written.
    pub current_version: u64,
    /// Versions kept; older ones are pruned.
    pub max_versions: u32,
    /// Caller-defined key/value metadata (never secret values).
    pub custom: BTreeMap<String, String>,
    /// First write.
    pub created_at: Timestamp,
    /// Last write or metadata change.
    pub updated_at: Timestamp,
}

/// One stored version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// Version number.
    pub version: u64,
    /// Write time.
    pub created_at: Timestamp,
    /// Soft-deletion time.
    pub deleted_at: Option<Timestamp>,
    /// True once destroyed (ciphertext wiped).
    pub destroyed: bool,
    /// Data-key version that sealed it (`None` once destroyed).
    pub key_version: Option<u32>,
    /// AES-GCM nonce (`None` once destroyed).
    pub nonce: Option<Vec<u8>>,
    /// AES-GCM ciphertext and tag (`None` once destroyed).
    pub ciphertext: Option<Vec<u8>>,
}

/// A value sealed for storage.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Data-key version used.
    pub key_version: u32,
    /// Nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// What [`Store::put`] needs besides the sealing callback.
#[derive(Debug)]
pub struct PutParams<'a> {
    /// Tenant.
    pub slug: &'a Slug,
    /// Name.
    pub name: &'a SecretName,
    /// Check-and-set: `Some(0)` create only, `Some(n)` only if current is n.
    pub cas: Option<u64>,
    /// Absolute cap on secrets per scope (the scope's plan may set less).
    pub max_secrets: u64,
    /// Length of the ciphertext to be stored (for the bytes quota).
    pub ciphertext_len: u64,
    /// `max_versions` given to a new secret.
    pub default_max_versions: u32,
    /// Write time.
    pub now: Timestamp,
}

/// What the sealing callback of [`Store::put`] gets, from inside the
/// transaction: where the value will live and the key to seal it with.
#[derive(Debug)]
pub struct SealInput<'a> {
    /// The scope's id.
    pub scope: &'a ScopeId,
    /// The version being written.
    pub version: u64,
    /// The scope's active data key, its use already counted.
    pub key: &'a DataKeyRecord,
}

/// The result of [`Store::put`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PutOutcome {
    /// Written.
    Written {
        /// The new version.
        version: u64,
        /// The data-key version that sealed it.
        key_version: u32,
        /// The data key's encryption count after this write.
        key_encryptions: u64,
    },
    /// No scope with that slug; nothing was written.
    NoScope,
    /// The check-and-set did not hold; nothing was written.
    CasMismatch {
        /// The current version (0: no such secret).
        current: u64,
    },
    /// The scope is at its secret-count quota; nothing was written.
    TooManySecrets(u64),
    /// The write would take the scope past its stored-bytes quota.
    TooManyBytes(u64),
}

/// Which version to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector {
    /// The current version.
    Latest,
    /// A given version.
    Exact(u64),
}

/// The result of a lookup by tenant and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup<T> {
    /// No scope with that slug.
    NoScope,
    /// No secret with that name in the scope.
    NoSecret,
    /// Found.
    Found(T),
}

/// A stored version found by [`Store::version`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundVersion {
    /// The scope's id (bound into the ciphertext's associated data).
    pub scope: ScopeId,
    /// The version, or `None` when the secret has no such version.
    pub version: Option<StoredVersion>,
}

/// Per-version state changes applied by [`Store::change_versions`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionChange {
    /// Soft-delete at the given time.
    Delete(Timestamp),
    /// Clear the deletion mark.
    Undelete,
    /// Wipe the ciphertext for good.
    Destroy,
}

/// The result of [`Store::change_versions`] when the secret exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// A requested version does not exist; nothing was changed.
    NoVersion(u64),
    /// Undelete asked for a destroyed version; nothing was changed.
    Destroyed(u64),
    /// Applied to these versions.
    Versions(Vec<u64>),
}

/// A scope's limits: its plan's, overridden per tenant where set.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Plan name (`starter`, `pro`, `enterprise` or one an operator added).
    pub plan: String,
    /// Most secrets.
    pub max_secrets: u64,
    /// Most ciphertext bytes, all versions.
    pub max_bytes: u64,
    /// Most live tokens.
    pub max_tokens: u64,
    /// Requests per second allowed to each token.
    pub rate_per_sec: f64,
    /// Token-bucket burst.
    pub burst: u64,
}

/// Per-tenant overrides of its plan's limits (`None`: keep the current value).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LimitChange {
    /// Move to this plan.
    pub plan: Option<String>,
    /// Override the secret count.
    pub max_secrets: Option<u64>,
    /// Override the stored bytes.
    pub max_bytes: Option<u64>,
    /// Override the token count.
    pub max_tokens: Option<u64>,
    /// Override the per-token request rate.
    pub rate_per_sec: Option<f64>,
}

/// Who a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenKindRecord {
    /// Bound to one tenant.
    Tenant,
    /// An operator: manages scopes and tokens.
    Operator,
}

/// A stored token: its hash, never the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public id, the only name a token has anywhere else.
    pub id: String,
    /// SHA-256 of the token string.
    pub hash: Vec<u8>,
    /// Tenant or operator.
    pub kind: TokenKindRecord,
    /// The tenant of a tenant token.
    pub scope: Option<(ScopeId, Slug)>,
    /// Role preset name, or `custom`.
    pub role: String,
    /// The policy, as JSON.
    pub policy: String,
    /// Free text.
    pub description: String,
    /// Issue time.
    pub created_at: Timestamp,
    /// Expiry, if any.
    pub expires_at: Option<Timestamp>,
    /// Revocation time, if revoked.
    pub revoked_at: Option<Timestamp>,
}

/// The result of [`Store::insert_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenInsert {
    /// Stored.
    Inserted,
    /// The tenant does not exist.
    NoScope,
    /// The tenant is at its token quota.
    TooMany(u64),
}

/// The result of [`Store::revoke_token`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenRevoke {
    /// Revoked now.
    Revoked,
    /// No such token (or not in the given tenant).
    NotFound,
    /// Already revoked; nothing changed.
    AlreadyRevoked,
    /// The tenant's last live owner token; nothing changed.
    LastOwner,
}

/// One audit record before it is chained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When.
    pub time: Timestamp,
    /// The request's id.
    pub request_id: String,
    /// Token id, `root` (the key holder) or `anonymous`.
    pub principal: String,
    /// Tenant slug addressed, or empty.
    pub tenant: String,
    /// Operation name, e.g. `get`.
    pub operation: String,
    /// Path or other object addressed, or empty. Never a value or a token.
    pub path: String,
    /// Version concerned, if any.
    pub version: Option<u64>,
    /// `ok`, `denied`, `cross-tenant-denied`, `unauthenticated`, or
    /// `error:<kind>`.
    pub outcome: String,
}

impl AuditEntry {
    /// This entry naming `version` (what a store does when it allocates the
    /// version a mutation's record names).
    pub fn with_version(&self, version: Option<u64>) -> AuditEntry {
        AuditEntry {
            version: version.or(self.version),
            ..self.clone()
        }
    }
}

/// A chained audit record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// The entry.
    pub entry: AuditEntry,
    /// Hash of the previous record (zeros for the first).
    pub prev_hash: Vec<u8>,
    /// SHA-256 over `prev_hash`, `seq` and the entry.
    pub hash: Vec<u8>,
}

/// Usage figures of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScopeUsage {
    /// Number of secrets (names).
    pub secrets: u64,
    /// Bytes of ciphertext stored, all versions.
    pub bytes: u64,
}

/// A scope as [`Store::export`] reads it: the record with its plan, its
/// per-tenant overrides of the plan's limits and its stored-bytes counter.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeDump {
    /// The scope.
    pub scope: ScopeRecord,
    /// The plan's name.
    pub plan: String,
    /// Override of the plan's secret count, if set.
    pub max_secrets: Option<u64>,
    /// Override of the plan's stored bytes, if set.
    pub max_bytes: Option<u64>,
    /// Override of the plan's token count, if set.
    pub max_tokens: Option<u64>,
    /// Override of the plan's per-token request rate, if set.
    pub rate_per_sec: Option<f64>,
    /// Ciphertext bytes stored, all versions (the quota counter).
    pub bytes_used: u64,
}

/// One item of a whole-vault dump: what [`Store::export`] streams and
/// [`Store::import`] applies. A dump holds ciphertexts, wrapped keys, token
/// hashes and metadata, exactly as stored: never a plaintext or an
/// unwrapped key (it is as sensitive as the store itself, no more).
///
/// Items come in an order import can apply: the root record, every plan,
/// the scopes, their data keys, secrets, versions, then the tokens and the
/// audit records (by `seq`). Within a kind the order is fixed (scope id,
/// name, version, token id), so two exports of equal stores are equal
/// item by item, whatever their backends.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DumpItem {
    /// The wrapped root key (the same unlock material opens the copy).
    Root(RootRecord),
    /// A plan row (`plan` is its name); operators can add plans, so every
    /// row is carried, the built-in ones included.
    Plan(Limits),
    /// A tenant scope with its plan, overrides and stored-bytes counter.
    Scope(ScopeDump),
    /// A wrapped data key with its encryption count.
    DataKey(DataKeyRecord),
    /// A secret's metadata (custom metadata and `max_versions` included).
    Secret {
        /// The scope it belongs to.
        scope: ScopeId,
        /// The secret.
        secret: SecretRecord,
    },
    /// One version: nonce and ciphertext as stored (the associated data
    /// binds them to the scope id, path, version and key version, all of
    /// which are copied unchanged), or its deleted / destroyed state.
    Version {
        /// The scope it belongs to.
        scope: ScopeId,
        /// The secret's name.
        name: SecretName,
        /// The version.
        version: StoredVersion,
    },
    /// A token (its hash, never the token), revoked or not.
    Token(TokenRecord),
    /// An audit record as stored (`seq`, `prev_hash`, `hash`), so the chain
    /// still verifies in the copy.
    Audit(AuditRecord),
}

/// What [`Store::import`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportCount {
    /// Plan rows (added or replaced).
    pub plans: u64,
    /// Scopes.
    pub scopes: u64,
    /// Data keys.
    pub data_keys: u64,
    /// Secrets.
    pub secrets: u64,
    /// Versions (destroyed ones included).
    pub versions: u64,
    /// Tokens.
    pub tokens: u64,
    /// Audit records.
    pub audit_records: u64,
}

impl ImportCount {
    /// Counts one imported item.
    pub(crate) fn add(&mut self, item: &DumpItem) {
        match item {
            DumpItem::Root(_) => {}
            DumpItem::Plan(_) => self.plans += 1,
            DumpItem::Scope(_) => self.scopes += 1,
            DumpItem::DataKey(_) => self.data_keys += 1,
            DumpItem::Secret { .. } => self.secrets += 1,
            DumpItem::Version { .. } => self.versions += 1,
            DumpItem::Token(_) => self.tokens += 1,
            DumpItem::Audit(_) => self.audit_records += 1,
        }
    }
}

/// The refusal of [`Store::import`] into a store that already holds
/// something of a vault; `None` when it holds nothing.
pub(crate) fn not_empty(root: bool, scopes: u64, tokens: u64, audit: u64) -> Option<crate::Error> {
    let mut held = Vec::new();
    if root {
        held.push("a root key".to_owned());
    }
    for (n, what) in [
        (scopes, "scope"),
        (tokens, "token"),
        (audit, "audit record"),
    ] {
        match n {
            0 => {}
            1 => held.push(format!("1 {what}")),
            n => held.push(format!("{n} {what}s")),
        }
    }
    (!held.is_empty()).then(|| crate::Error::StoreNotEmpty(held.join(", ")))
}

/// The refusal of a dump without a root record.
pub(crate) fn no_root() -> crate::Error {
    crate::Error::InvalidArgument("the dump holds no root key record: nothing was imported".into())
}

/// Everything the vault needs from a storage backend.
///
/// Implementations hold ciphertexts and wrapped keys only; they never see a
/// plaintext or an unwrapped key. The SQLite implementation is built in; see
/// the crate docs for how to open it.
///
/// # The audit record of a mutation
///
/// Every method that changes stored state on behalf of a request takes
/// `audit: Option<&AuditEntry>`: the request's record. When it is given and
/// the change applies, the store appends it to the audit chain *inside the
/// change's own transaction*, so a change is never stored without its
/// record (a process killed between the two cannot exist). Where the method
/// allocates the version the record names (a put, a data key, a single
/// version changed), the store sets `version`. When the change does not
/// apply (no scope, a CAS mismatch, a quota), nothing is appended and the
/// caller records the refusal itself.
pub trait Store: Send + Sync {
    /// The root key record, if the vault is initialized.
    fn root(&self) -> Result<Option<RootRecord>>;
    /// Stores the first root record; fails with `AlreadyInitialized` if one exists.
    fn init_root(&self, root: &RootRecord) -> Result<()>;
    /// Replaces the root record and, in the same transaction, the wrapping of
    /// the given data keys (all of them when the root key itself changes).
    fn replace_root(&self, root: &RootRecord, rewrapped: &[DataKeyRecord]) -> Result<()>;
    /// Every data key of every scope.
    fn all_data_keys(&self) -> Result<Vec<DataKeyRecord>>;

    /// Creates a scope with its first data key, in one transaction. Returns
    /// the existing scope, unchanged, if the slug is taken.
    fn create_scope(
        &self,
        scope: &ScopeRecord,
        first_key: &DataKeyRecord,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<ScopeRecord>>;
    /// The scope with this slug.
    fn scope(&self, slug: &Slug) -> Result<Option<ScopeRecord>>;
    /// All scopes, by slug.
    fn scopes(&self) -> Result<Vec<ScopeRecord>>;
    /// Deletes a scope, its keys, secrets and versions in one transaction,
    /// and removes the deleted bytes from the storage files (crypto-shredding).
    fn delete_scope(&self, slug: &Slug, audit: Option<&AuditEntry>) -> Result<Option<ScopeId>>;
    /// Usage of a scope.
    fn scope_usage(&self, scope: &ScopeId) -> Result<ScopeUsage>;

    /// One data key.
    fn data_key(&self, scope: &ScopeId, version: u32) -> Result<Option<DataKeyRecord>>;
    /// Adds the next data key of a scope and makes it the active one (the
    /// record's version is the key's).
    fn add_data_key(&self, key: &DataKeyRecord, audit: Option<&AuditEntry>) -> Result<()>;
    /// Deletes the scope's data keys that are neither active nor used by any
    /// stored version; returns their versions.
    fn remove_unused_data_keys(&self, scope: &ScopeId) -> Result<Vec<u32>>;

    /// Writes a new version in one transaction: resolves the scope, checks
    /// CAS and quota, allocates the version, counts the active key's
    /// encryption, calls `seal` to produce the ciphertext, prunes versions past
    /// `max_versions`, and appends the record (with the new version) when
    /// written.
    fn put(
        &self,
        params: &PutParams<'_>,
        seal: &mut dyn FnMut(&SealInput<'_>) -> Result<Sealed>,
        audit: Option<&AuditEntry>,
    ) -> Result<PutOutcome>;
    /// Reads a version with its ciphertext, in one query.
    fn version(
        &self,
        slug: &Slug,
        name: &SecretName,
        which: VersionSelector,
    ) -> Result<Lookup<FoundVersion>>;
    /// Names under `prefix` after `after`, in order, at most `limit`.
    /// `None` when the scope does not exist.
    fn list(
        &self,
        slug: &Slug,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<SecretName>>>;
    /// Metadata of a secret and of each of its versions (without ciphertexts).
    fn metadata(
        &self,
        slug: &Slug,
        name: &SecretName,
    ) -> Result<Lookup<(SecretRecord, Vec<StoredVersion>)>>;
    /// Changes `max_versions` (pruning at once) and/or the custom metadata.
    fn update_metadata(
        &self,
        slug: &Slug,
        name: &SecretName,
        max_versions: Option<u32>,
        custom: Option<&BTreeMap<String, String>>,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<Lookup<()>>;
    /// Applies a change to the given versions (the current one when empty),
    /// all or nothing. The record names the version when exactly one changed.
    fn change_versions(
        &self,
        slug: &Slug,
        name: &SecretName,
        versions: &[u64],
        change: VersionChange,
        audit: Option<&AuditEntry>,
    ) -> Result<Lookup<Changed>>;
    /// The scope's limits (plan merged with overrides).
    fn limits(&self, slug: &Slug) -> Result<Option<Limits>>;
    /// Changes a scope's plan and/or overrides; `false` if no such scope.
    /// Fails with `InvalidArgument` for an unknown plan.
    fn set_limits(
        &self,
        slug: &Slug,
        change: &LimitChange,
        audit: Option<&AuditEntry>,
    ) -> Result<bool>;

    /// Stores a token; for a tenant token, checks the tenant's token quota
    /// (live tokens only) in the same transaction.
    fn insert_token(
        &self,
        token: &TokenRecord,
        slug: Option<&Slug>,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<TokenInsert>;
    /// The token with this hash.
    fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRecord>>;
    /// Tokens, of one tenant or (with `None`) all, in issue order.
    fn tokens(&self, slug: Option<&Slug>) -> Result<Vec<TokenRecord>>;
    /// Revokes a token (only within `scope` when given). Refuses to revoke a
    /// tenant's last live owner token, checked in the same transaction.
    fn revoke_token(
        &self,
        id: &str,
        scope: Option<&ScopeId>,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<TokenRevoke>;
    /// A number that changes whenever another connection or process commits
    /// a change (watches poll the audit trail when it moves).
    fn change_marker(&self) -> Result<u64>;
    /// A number that changes whenever, through any connection, process or
    /// server, a change commits to what a server caches: the root record,
    /// scopes, data keys, limits and tokens (it is moved inside those
    /// changes' transactions, so a cache refreshed before a commit sees it
    /// move after). Caches of tokens and unwrapped data keys are valid while
    /// it stays the same; it does not move with secret writes or audit
    /// records.
    fn cache_marker(&self) -> Result<u64>;

    /// Appends entries to the audit chain in one transaction (the chain is
    /// extended from its stored end, so several processes share one chain).
    fn append_audit(&self, entries: &[AuditEntry]) -> Result<Vec<AuditRecord>>;
    /// Audit records with `seq > after`, in order, at most `limit`.
    fn audit_records(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>>;
    /// The sequence number of the last audit record (0 when there is none).
    fn last_audit_seq(&self) -> Result<u64>;
    /// One tenant's successful secret changes (operations `put`, `delete`,
    /// `undelete`, `destroy`, `update-metadata`, `delete-scope`) with
    /// `seq > after`, in order, at most `limit`; other tenants' records are
    /// not read.
    fn audit_changes(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<AuditRecord>>;

    /// Re-seals, in one transaction, every stored version of the scope whose
    /// key version differs from `key_version`; returns how many were resealed.
    /// `reseal` receives the name and the stored version.
    fn reseal_all(
        &self,
        scope: &ScopeId,
        key_version: u32,
        reseal: &mut dyn FnMut(&SecretName, &StoredVersion) -> Result<Sealed>,
    ) -> Result<u64>;

    /// Streams the whole vault to `sink`, item by item in [`DumpItem`]'s
    /// order, from one consistent snapshot (one read transaction): writes
    /// committed meanwhile are either all in the dump or not at all. An
    /// error from `sink` stops the export and is returned.
    fn export(&self, sink: &mut dyn FnMut(DumpItem) -> Result<()>) -> Result<()>;

    /// Writes a dump (as [`Store::export`] produces it) into this store, in
    /// one transaction: all of it or, on any error (an `Err` item
    /// included), nothing. Plan rows replace the store's rows of the same
    /// name. Refuses with [`Error::StoreNotEmpty`](crate::Error::StoreNotEmpty),
    /// changing nothing, a store that already holds a root key, a scope, a
    /// token or an audit record, and with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) a dump
    /// without a root record.
    fn import(&self, items: &mut dyn Iterator<Item = Result<DumpItem>>) -> Result<ImportCount>;
}

/// Opens the store a storage URL names, creating or migrating its schema:
///
/// - `sqlite://PATH` (or `sqlite:PATH`): the SQLite file at `PATH`, relative
///   to the working directory unless absolute (`sqlite:///var/lib/v.db`);
/// - `postgres://…` or `postgresql://…`: a PostgreSQL database, with the
///   connection parameters of [`PostgresStore::connect`](crate::PostgresStore::connect).
///
/// Anything else is an [`Error::InvalidArgument`](crate::Error::InvalidArgument)
/// naming the accepted forms (and never echoing a password).
pub fn open_store(url: &str) -> Result<Box<dyn Store>> {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        if path.is_empty() {
            return Err(crate::Error::InvalidArgument(
                "storage `sqlite://` needs a file path, for example sqlite:///var/lib/secret-mcp/vault.db".into(),
            ));
        }
        return Ok(Box::new(sqlite::SqliteStore::open(path)?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Box::new(postgres::PostgresStore::connect(url)?));
    }
    let scheme = url.split_once(':').map_or("", |(s, _)| s);
    Err(crate::Error::InvalidArgument(format!(
        "storage must be sqlite://PATH or postgres://USER@HOST[:PORT]/DATABASE, not a `{scheme}` URL"
    )))
}

/// A boxed store is a store: the backend can be chosen at run time (see
/// [`open_store`]).
impl<S: Store + ?Sized> Store for Box<S> {
    fn root(&self) -> Result<Option<RootRecord>> {
        (**self).root()
    }

    fn init_root(&self, root: &RootRecord) -> Result<()> {
        (**self).init_root(root)
    }

    fn replace_root(&self, root: &RootRecord, rewrapped: &[DataKeyRecord]) -> Result<()> {
        (**self).replace_root(root, rewrapped)
    }

    fn all_data_keys(&self) -> Result<Vec<DataKeyRecord>> {
        (**self).all_data_keys()
    }

    fn create_scope(
        &self,
        scope: &ScopeRecord,
        first_key: &DataKeyRecord,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<ScopeRecord>> {
        (**self).create_scope(scope, first_key, audit)
    }

    fn scope(&self, slug: &Slug) -> Result<Option<ScopeRecord>> {
        (**self).scope(slug)
    }

    fn scopes(&self) -> Result<Vec<ScopeRecord>> {
        (**self).scopes()
    }

    fn delete_scope(&self, slug: &Slug, audit: Option<&AuditEntry>) -> Result<Option<ScopeId>> {
        (**self).delete_scope(slug, audit)
    }

    fn scope_usage(&self, scope: &ScopeId) -> Result<ScopeUsage> {
        (**self).scope_usage(scope)
    }

    fn data_key(&self, scope: &ScopeId, version: u32) -> Result<Option<DataKeyRecord>> {
        (**self).data_key(scope, version)
    }

    fn add_data_key(&self, key: &DataKeyRecord, audit: Option<&AuditEntry>) -> Result<()> {
        (**self).add_data_key(key, audit)
    }

    fn remove_unused_data_keys(&self, scope: &ScopeId) -> Result<Vec<u32>> {
        (**self).remove_unused_data_keys(scope)
    }

    fn put(
        &self,
        params: &PutParams<'_>,
        seal: &mut dyn FnMut(&SealInput<'_>) -> Result<Sealed>,
        audit: Option<&AuditEntry>,
    ) -> Result<PutOutcome> {
        (**self).put(params, seal, audit)
    }

    fn version(
        &self,
        slug: &Slug,
        name: &SecretName,
        which: VersionSelector,
    ) -> Result<Lookup<FoundVersion>> {
        (**self).version(slug, name, which)
    }

    fn list(
        &self,
        slug: &Slug,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<SecretName>>> {
        (**self).list(slug, prefix, after, limit)
    }

    fn metadata(
        &self,
        slug: &Slug,
        name: &SecretName,
    ) -> Result<Lookup<(SecretRecord, Vec<StoredVersion>)>> {
        (**self).metadata(slug, name)
    }

    fn update_metadata(
        &self,
        slug: &Slug,
        name: &SecretName,
        max_versions: Option<u32>,
        custom: Option<&BTreeMap<String, String>>,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<Lookup<()>> {
        (**self).update_metadata(slug, name, max_versions, custom, now, audit)
    }

    fn change_versions(
        &self,
        slug: &Slug,
        name: &SecretName,
        versions: &[u64],
        change: VersionChange,
        audit: Option<&AuditEntry>,
    ) -> Result<Lookup<Changed>> {
        (**self).change_versions(slug, name, versions, change, audit)
    }

    fn limits(&self, slug: &Slug) -> Result<Option<Limits>> {
        (**self).limits(slug)
    }

    fn set_limits(
        &self,
        slug: &Slug,
        change: &LimitChange,
        audit: Option<&AuditEntry>,
    ) -> Result<bool> {
        (**self).set_limits(slug, change, audit)
    }

    fn insert_token(
        &self,
        token: &TokenRecord,
        slug: Option<&Slug>,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<TokenInsert> {
        (**self).insert_token(token, slug, now, audit)
    }

    fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRecord>> {
        (**self).token_by_hash(hash)
    }

    fn tokens(&self, slug: Option<&Slug>) -> Result<Vec<TokenRecord>> {
        (**self).tokens(slug)
    }

    fn revoke_token(
        &self,
        id: &str,
        scope: Option<&ScopeId>,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<TokenRevoke> {
        (**self).revoke_token(id, scope, now, audit)
    }

    fn change_marker(&self) -> Result<u64> {
        (**self).change_marker()
    }

    fn cache_marker(&self) -> Result<u64> {
        (**self).cache_marker()
    }

    fn append_audit(&self, entries: &[AuditEntry]) -> Result<Vec<AuditRecord>> {
        (**self).append_audit(entries)
    }

    fn audit_records(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        (**self).audit_records(after, limit)
    }

    fn last_audit_seq(&self) -> Result<u64> {
        (**self).last_audit_seq()
    }

    fn audit_changes(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        (**self).audit_changes(tenant, after, limit)
    }

    fn reseal_all(
        &self,
        scope: &ScopeId,
        key_version: u32,
        reseal: &mut dyn FnMut(&SecretName, &StoredVersion) -> Result<Sealed>,
    ) -> Result<u64> {
        (**self).reseal_all(scope, key_version, reseal)
    }

    fn export(&self, sink: &mut dyn FnMut(DumpItem) -> Result<()>) -> Result<()> {
        (**self).export(sink)
    }

    fn import(&self, items: &mut dyn Iterator<Item = Result<DumpItem>>) -> Result<ImportCount> {
        (**self).import(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_urls_select_the_backend() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("v.db");
        let store = open_store(&format!("sqlite://{}", file.display())).unwrap();
        assert_eq!(store.last_audit_seq().unwrap(), 0);
        assert!(file.exists());
        for bad in ["", "sqlite://", "mysql://u:hunter2@h/db", "/var/lib/v.db"] {
            match open_store(bad) {
                Err(crate::Error::InvalidArgument(m)) => {
                    assert!(!m.contains("hunter2"), "{m}");
                }
                Err(e) => panic!("{bad}: {e}"),
                Ok(_) => panic!("{bad}: opened"),
            }
        }
    }

    #[test]
    fn timestamps_format_as_rfc3339() {
        assert_eq!(Timestamp(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_795_426_548_123).to_rfc3339(),
            "2026-11-23T09:35:48.123Z"
        );
    }
}

/// What the export / import tests of both stores share: a vault with
/// something of every kind, and the checks of a copy.
#[cfg(test)]
pub(crate) mod dump_tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::Duration;

    use super::{AuditEntry, DumpItem, LimitChange, Store, Timestamp};
    use crate::path::{SecretPath, Slug};
    use crate::{
        Error, MetadataUpdate, Role, ScopeKind, Secret, TokenSpec, Unlock, Vault, VaultOptions,
    };

    /// Token strings issued by [`populate`].
    pub(crate) struct Tokens {
        /// A live `acme` user token.
        pub(crate) live: String,
        /// A revoked `acme` user token.
        pub(crate) revoked: String,
    }

    fn path(s: &str) -> SecretPath {
        SecretPath::parse(s).unwrap()
    }

    /// Initializes a vault in `store` (unlocked by the key file `key`,
    /// created) and writes two tenants (one on plan `custom`, which the
    /// caller adds, with an override; one with a rate override and a
    /// rotated key), versions live, soft-deleted and destroyed, custom
    /// metadata, and tokens (one revoked, one expiring).
    pub(crate) fn populate(store: Box<dyn Store>, key: &Path) -> Tokens {
        crate::create_key_file(key).unwrap();
        let vault = Vault::init(
            store,
            &Unlock::KeyFile(key.to_owned()),
            VaultOptions::default(),
        )
        .unwrap();
        let root = vault.root_session();
        let (acme, solo) = (Slug::parse("acme").unwrap(), Slug::parse("solo").unwrap());
        root.create_scope(&acme, ScopeKind::Enterprise).unwrap();
        root.create_scope(&solo, ScopeKind::Freelance).unwrap();
        root.set_limits(
            &acme,
            &LimitChange {
                plan: Some("custom".into()),
                max_secrets: Some(5),
                ..LimitChange::default()
            },
        )
        .unwrap();
        root.set_limits(
            &solo,
            &LimitChange {
                rate_per_sec: Some(1000.0),
                max_bytes: Some(1 << 20),
                ..LimitChange::default()
            },
        )
        .unwrap();
        let db = path("tenant/acme/db");
        for i in 1..=3 {
            root.put(&db, &Secret::from(format!("db-{i}")), None)
                .unwrap();
        }
        root.delete(&db, &[2]).unwrap();
        root.destroy(&db, &[1]).unwrap();
        let api = path("tenant/acme/api/key");
        root.put(&api, &Secret::from("api"), None).unwrap();
        root.update_metadata(
            &api,
            &MetadataUpdate {
                max_versions: Some(4),
                custom: Some(BTreeMap::from([("owner".into(), "team-a".into())])),
            },
        )
        .unwrap();
        let x = path("tenant/solo/x");
        root.put(&x, &Secret::from("x-1"), None).unwrap();
        root.rotate_key(&solo, false).unwrap();
        root.put(&x, &Secret::from("x-2"), None).unwrap();
        let issue = |tenant: Option<&Slug>, role, ttl| {
            let t = root
                .issue_token(&TokenSpec {
                    tenant: tenant.cloned(),
                    role,
                    ttl,
                    description: "test".into(),
                    ..TokenSpec::default()
                })
                .unwrap();
            (t.id, String::from_utf8(t.token.expose().to_vec()).unwrap())
        };
        issue(Some(&acme), Some(Role::Owner), None);
        let (_, live) = issue(
            Some(&acme),
            Some(Role::User),
            Some(Duration::from_secs(3600)),
        );
        let (revoked_id, revoked) = issue(Some(&acme), Some(Role::User), None);
        issue(None, None, None);
        root.revoke_token(&revoked_id).unwrap();
        vault.flush_audit().unwrap();
        Tokens { live, revoked }
    }

    /// Everything `store` exports.
    pub(crate) fn export_all(store: &dyn Store) -> Vec<DumpItem> {
        let mut items = Vec::new();
        store
            .export(&mut |i| {
                items.push(i);
                Ok(())
            })
            .unwrap();
        items
    }

    /// An audit entry.
    pub(crate) fn entry() -> AuditEntry {
        AuditEntry {
            time: Timestamp(1),
            request_id: "r".into(),
            principal: "root".into(),
            tenant: String::new(),
            operation: "status".into(),
            path: String::new(),
            version: None,
            outcome: "ok".into(),
        }
    }

    /// The copy opens with the same key file and serves what [`populate`]
    /// wrote: values, deleted and destroyed states, limits, tokens (the
    /// revoked one refused), and an audit chain that verifies.
    pub(crate) fn check_copy(store: Box<dyn Store>, key: &Path, tokens: &Tokens) {
        let vault = Vault::open(
            store,
            &Unlock::KeyFile(key.to_owned()),
            VaultOptions::default(),
        )
        .unwrap();
        let db = path("tenant/acme/db");
        assert_eq!(vault.get(&db).unwrap().value.expose(), b"db-3");
        assert!(matches!(
            vault.get_version(&db, 2),
            Err(Error::VersionDeleted { .. })
        ));
        assert!(matches!(
            vault.get_version(&db, 1),
            Err(Error::VersionDestroyed { .. })
        ));
        assert!(vault.version_digest(&db, 2).unwrap().is_some());
        assert_eq!(vault.version_digest(&db, 1).unwrap(), None);
        let x = path("tenant/solo/x");
        assert_eq!(vault.get_version(&x, 1).unwrap().value.expose(), b"x-1");
        assert_eq!(vault.get_version(&x, 2).unwrap().value.expose(), b"x-2");
        let meta = vault.metadata(&path("tenant/acme/api/key")).unwrap();
        assert_eq!(meta.max_versions, 4);
        assert_eq!(meta.custom.get("owner").map(String::as_str), Some("team-a"));
        let limits = vault.limits(&Slug::parse("acme").unwrap()).unwrap();
        assert_eq!((limits.plan.as_str(), limits.max_secrets), ("custom", 5));
        assert_eq!(limits.max_tokens, 3, "the custom plan's row came along");
        let solo = vault.limits(&Slug::parse("solo").unwrap()).unwrap();
        assert_eq!((solo.rate_per_sec, solo.max_bytes), (1000.0, 1 << 20));
        assert!(vault.authenticate(&tokens.live).is_ok());
        assert!(matches!(
            vault.authenticate(&tokens.revoked),
            Err(Error::Unauthenticated(_))
        ));
        let n = vault.verify_audit().unwrap().unwrap();
        assert!(n > 10, "{n} records");
    }
}
