//! Tenant-scoped, encrypted, versioned secrets.
//!
//! Secrets are addressed as `tenant/<slug>/<name>` ([`SecretPath`]) and live
//! in tenant *scopes*. Every value is sealed with AES-256-GCM under its
//! tenant's data key; data keys are wrapped by a root key, which is itself
//! wrapped by a key derived with Argon2id from an operator passphrase, or by a
//! key read from a key file (envelope encryption). The associated data of
//! every ciphertext binds it to its scope, tenant, name, version and key
//! version, so a ciphertext moved anywhere else fails to open.
//!
//! Versioning follows Vault's KV v2: `put` with optional check-and-set, `get`
//! of the latest or a given version, soft `delete` / `undelete`, `destroy`,
//! per-secret metadata and `max_versions` pruning.
//!
//! Storage sits behind the [`Store`] trait; [`SqliteStore`] (bundled SQLite,
//! WAL, `synchronous=FULL`) is the embedded default.
//!
//! # Example
//!
//! ```
//! use tenant_vault::{
//!     create_key_file, ScopeKind, Secret, SecretPath, Slug, SqliteStore, Unlock, Vault,
//!     VaultOptions, Error,
//! };
//!
//! # fn main() -> Result<(), Error> {
//! let dir = tempfile::tempdir().unwrap();
//! let key_file = dir.path().join("vault.key");
//! create_key_file(&key_file)?;
//! let store = SqliteStore::open(dir.path().join("vault.db"))?;
//! let vault = Vault::init(store, &Unlock::KeyFile(key_file), VaultOptions::default())?;
//!
//! let acme = Slug::parse("acme")?;
//! assert!(vault.create_scope(&acme, ScopeKind::Enterprise)?.created);
//!
//! let path = SecretPath::parse("tenant/acme/slack-token")?;
//! let v1 = vault.put(&path, &Secret::from("xoxb-not-a-real-token"), Some(0))?;
//! assert_eq!(v1, 1);
//!
//! let read = vault.get(&path)?;
//! assert_eq!(read.value.expose(), b"xoxb-not-a-real-token");
//! // Debug output never shows the value.
//! assert_eq!(format!("{:?}", read.value), "Secret([REDACTED])");
//!
//! // A stale check-and-set is refused.
//! let err = vault.put(&path, &Secret::from("other"), Some(0)).unwrap_err();
//! assert!(matches!(err, Error::CasMismatch { current: 1, .. }));
//! # Ok(())
//! # }
//! ```
//!
//! # Principals, tokens and the audit trail
//!
//! The methods of [`Vault`] are the unaudited core. Requests made on behalf of
//! someone go through a [`Session`]: [`Vault::root_session`] for the holder of
//! the unlock material, or [`Vault::session`] with the [`Principal`] that
//! [`Vault::authenticate`] returns for a token. A session checks the token's
//! request rate, authorizes the request (a tenant token reaches its own tenant
//! only, within its [`Policy`]), and records it in the hash-chained audit
//! trail, allowed or denied.
//!
//! ```
//! # use tenant_vault::*;
//! # fn main() -> Result<(), Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let key_file = dir.path().join("vault.key");
//! # create_key_file(&key_file)?;
//! # let vault = Vault::init(SqliteStore::open(dir.path().join("v.db"))?,
//! #     &Unlock::KeyFile(key_file), VaultOptions::default())?;
//! let root = vault.root_session();
//! for t in ["acme", "globex"] {
//!     root.create_scope(&Slug::parse(t)?, ScopeKind::Enterprise)?;
//! }
//! root.put(&SecretPath::parse("tenant/globex/db")?, &Secret::from("globex only"), None)?;
//!
//! let issued = root.issue_token(&TokenSpec {
//!     tenant: Some(Slug::parse("acme")?),
//!     role: Some(Role::User),
//!     ..TokenSpec::default()
//! })?;
//! let token = std::str::from_utf8(issued.token.expose()).unwrap();
//! let acme = vault.session(vault.authenticate(token)?);
//!
//! acme.put(&SecretPath::parse("tenant/acme/db")?, &Secret::from("acme only"), None)?;
//! let err = acme.get(&SecretPath::parse("tenant/globex/db")?).unwrap_err();
//! assert!(matches!(err, Error::CrossTenant { .. }));
//!
//! // Every request, the denied one included, is in the chain.
//! assert!(vault.verify_audit()?.is_ok());
//! let last = vault.audit_tail(1)?;
//! assert_eq!(last[0].entry.outcome, "cross-tenant-denied");
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod access;
mod audit;
mod crypto;
mod error;
mod path;
mod secret;
mod session;
mod store;
mod vault;

pub use crate::access::{Capability, Policy, Principal, Role, Rule};
pub use crate::audit::{AuditProblem, audit_record_json, verify_audit_file, verify_chain};
pub use crate::crypto::KdfParams;
pub use crate::error::{Error, Result};
pub use crate::path::{
    ListPrefix, MAX_NAME_LEN, MAX_SLUG_LEN, PathError, SecretName, SecretPath, Slug,
};
pub use crate::secret::Secret;
pub use crate::session::{
    Change, IssuedToken, Session, TokenInfo, TokenSpec, Watch, new_request_id,
};
pub use crate::store::postgres::PostgresStore;
pub use crate::store::sqlite::{LostItem, Salvaged, SqliteStore};
pub use crate::store::{
    AuditEntry, AuditRecord, Changed, DataKeyRecord, DumpItem, FoundVersion, ImportCount,
    LimitChange, Limits, Lookup, PutOutcome, PutParams, RootRecord, ScopeDump, ScopeId, ScopeKind,
    ScopeRecord, ScopeUsage, SealInput, Sealed, SecretRecord, Store, StoredVersion, Timestamp,
    TokenInsert, TokenKindRecord, TokenRecord, TokenRevoke, UnlockMethod, VersionChange,
    VersionSelector, open_store,
};
pub use crate::vault::{
    ListPage, MAX_CUSTOM_ENTRIES, MAX_LIST_PAGE, MAX_VERSIONS_LIMIT, MetadataUpdate, ScopeCreated,
    ScopeInfo, ScopeStatus, SecretMetadata, Unlock, Vault, VaultOptions, VersionMetadata,
    VersionedSecret, create_key_file,
};
