//! The one error type of the crate.

use std::path::PathBuf;

use crate::path::PathError;

/// Everything that can go wrong in the vault.
///
/// Errors name the item concerned (tenant, path, version) so that an operator
/// can act on them, but never carry a secret value, a key or a passphrase:
/// their `Display` and `Debug` output is safe to log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path, slug or name did not parse.
    #[error(transparent)]
    InvalidPath(#[from] PathError),

    /// An argument other than a path is out of range or malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The store holds no root key yet: run `init` first.
    #[error("the vault is not initialized (no root key in the store)")]
    NotInitialized,

    /// `init` was called on a store that already has a root key.
    #[error("the vault is already initialized")]
    AlreadyInitialized,

    /// The vault is sealed: the root key is not in memory.
    #[error("the vault is sealed")]
    Sealed,

    /// The passphrase does not unwrap the root key. Nothing was changed.
    #[error("wrong passphrase: it does not unlock this vault")]
    WrongPassphrase,

    /// The key file does not unwrap the root key. Nothing was changed.
    #[error("wrong key file: {} does not unlock this vault", .0.display())]
    WrongKeyFile(PathBuf),

    /// The vault was initialized with a different unlock method.
    #[error("this vault is unlocked with a {expected}, not a {given}")]
    WrongUnlockMethod {
        /// The method the vault was initialized with.
        expected: &'static str,
        /// The method that was offered.
        given: &'static str,
    },

    /// The key file cannot be read, created or parsed.
    #[error("key file {}: {reason}", path.display())]
    KeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// No tenant scope has this slug.
    #[error("tenant `{0}` does not exist")]
    ScopeNotFound(String),

    /// No secret at this path.
    #[error("secret `{0}` does not exist")]
    SecretNotFound(String),

    /// The secret exists but not this version (never written, or pruned).
    #[error("secret `{path}` has no version {version}")]
    VersionNotFound {
        /// The secret's path.
        path: String,
        /// The version asked for.
        version: u64,
    },

    /// The version is soft-deleted; `undelete` brings it back.
    #[error("secret `{path}` version {version} is deleted")]
    VersionDeleted {
        /// The secret's path.
        path: String,
        /// The deleted version.
        version: u64,
    },

    /// The version is destroyed: its ciphertext is gone for good.
    #[error("secret `{path}` version {version} is destroyed")]
    VersionDestroyed {
        /// The secret's path.
        path: String,
        /// The destroyed version.
        version: u64,
    },

    /// A check-and-set write found another current version.
    #[error("check-and-set failed on `{path}`: expected version {expected}, current is {current}")]
    CasMismatch {
        /// The secret's path.
        path: String,
        /// The version the caller expected (0: the secret must not exist).
        expected: u64,
        /// The current version (0: the secret does not exist).
        current: u64,
    },

    /// The value is larger than the configured limit.
    #[error("value is {size} bytes, the limit is {limit} bytes")]
    ValueTooLarge {
        /// Size of the rejected value.
        size: usize,
        /// The limit.
        limit: usize,
    },

    /// A per-tenant limit would be exceeded.
    #[error("tenant `{tenant}` is at its limit of {limit} {what}")]
    QuotaExceeded {
        /// The tenant.
        tenant: String,
        /// What is limited (for example "secrets").
        what: &'static str,
        /// The limit.
        limit: u64,
    },

    /// Stored data failed authentication: a ciphertext, nonce, key or one of
    /// the fields bound to it was altered, moved or damaged. The message names
    /// the damaged item.
    #[error("integrity check failed for {0}: stored data was altered or damaged")]
    Integrity(String),

    /// A whole-vault import ([`Store::import`](crate::Store::import)) was
    /// refused because the target store already holds a vault or part of
    /// one (named in the message). Nothing was changed.
    #[error("the target store is not empty: it holds {0}")]
    StoreNotEmpty(String),

    /// The store was written by a newer version of this software.
    #[error("the store's schema version {found} is newer than this build supports ({supported})")]
    SchemaTooNew {
        /// Schema version found in the store.
        found: u32,
        /// Highest schema version this build knows.
        supported: u32,
    },

    /// No valid token: missing, malformed, unknown, expired or revoked. The
    /// message never contains the token.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),

    /// The principal may not do this.
    #[error("permission denied: {0}")]
    PermissionDenied(String),

    /// A tenant token addressed another tenant. Denied and audited.
    #[error(
        "permission denied: this token belongs to tenant `{own}` and cannot address tenant `{other}`"
    )]
    CrossTenant {
        /// The token's tenant.
        own: String,
        /// The tenant addressed.
        other: String,
    },

    /// The token is over its request rate.
    #[error("rate limit exceeded for token {token_id}: at most {per_sec} requests per second")]
    RateLimited {
        /// The token.
        token_id: String,
        /// Its rate.
        per_sec: f64,
    },

    /// No token with this id (in the caller's reach).
    #[error("token {0} does not exist")]
    TokenNotFound(String),

    /// Revoking this token would leave its tenant without a live owner.
    #[error("token {0} is the last owner token of its tenant and cannot be revoked")]
    LastOwner(String),

    /// The audit trail cannot be written, so the request is refused.
    #[error("the audit trail cannot be written ({0}); requests are refused until it can")]
    AuditUnavailable(String),

    /// The storage backend cannot be reached for now (a database server
    /// that is down, restarting or failing over, or whose connections are
    /// all in use): nothing was changed, and the same request may succeed
    /// later.
    #[error("storage unavailable while {context}: {source}")]
    StorageUnavailable {
        /// What the vault was doing.
        context: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The storage backend failed.
    #[error("storage error while {context}: {source}")]
    Storage {
        /// What the vault was doing.
        context: &'static str,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps a backend error with what the vault was doing.
    pub fn storage(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::Storage {
            context,
            source: source.into(),
        }
    }
}
