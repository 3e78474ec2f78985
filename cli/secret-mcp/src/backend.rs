//! What a command needs from a vault, wherever it lives. The embedded vault
//! implements it in `local.rs`; the gRPC client implements the same trait for
//! remote mode, so commands print the same output and exit with the same codes.

use std::fmt;

use tenant_vault::{
    AuditRecord, IssuedToken, LimitChange, Limits, ListPage, ListPrefix, MetadataUpdate,
    ScopeCreated, ScopeInfo, ScopeKind, ScopeStatus, Secret, SecretMetadata, SecretPath, Slug,
    TokenInfo, TokenSpec, VersionedSecret,
};

/// Exit codes, one per kind of failure (documented in `--help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitKind {
    /// 1: anything not listed below.
    Failure = 1,
    /// 2: bad command line or argument (clap uses 2 as well).
    Usage = 2,
    /// 3: tenant, secret or version not found (or deleted/destroyed).
    NotFound = 3,
    /// 4: locked out: wrong passphrase or key file, sealed, not allowed.
    Denied = 4,
    /// 5: conflict: check-and-set mismatch, already initialized, a migrate
    /// target that is not empty.
    Conflict = 5,
    /// 6: a limit: value too large, quota reached.
    Limit = 6,
    /// 7: stored data failed its integrity check.
    Integrity = 7,
}

/// A command failure: a message for stderr and an exit code. Never holds a
/// secret value.
#[derive(Debug)]
pub(crate) struct CmdError {
    pub(crate) kind: ExitKind,
    pub(crate) message: String,
}

impl CmdError {
    pub(crate) fn new(kind: ExitKind, message: impl Into<String>) -> Self {
        CmdError {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        CmdError::new(ExitKind::Usage, message)
    }
}

impl fmt::Display for CmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CmdError {}

impl From<tenant_vault::Error> for CmdError {
    fn from(e: tenant_vault::Error) -> Self {
        use tenant_vault::Error as E;
        let kind = match &e {
            E::InvalidPath(_) | E::InvalidArgument(_) => ExitKind::Usage,
            E::ScopeNotFound(_)
            | E::SecretNotFound(_)
            | E::VersionNotFound { .. }
            | E::VersionDeleted { .. }
            | E::VersionDestroyed { .. }
            | E::TokenNotFound(_)
            | E::NotInitialized => ExitKind::NotFound,
            E::Sealed
            | E::Unauthenticated(_)
            | E::PermissionDenied(_)
            | E::CrossTenant { .. }
            | E::WrongPassphrase
            | E::WrongKeyFile(_)
            | E::WrongUnlockMethod { .. }
            | E::KeyFile { .. } => ExitKind::Denied,
            E::CasMismatch { .. }
            | E::AlreadyInitialized
            | E::LastOwner(_)
            | E::StoreNotEmpty(_) => ExitKind::Conflict,
            E::ValueTooLarge { .. } | E::QuotaExceeded { .. } | E::RateLimited { .. } => {
                ExitKind::Limit
            }
            E::Integrity(_) => ExitKind::Integrity,
            _ => ExitKind::Failure,
        };
        CmdError::new(kind, e.to_string())
    }
}

impl From<tenant_vault::PathError> for CmdError {
    fn from(e: tenant_vault::PathError) -> Self {
        CmdError::usage(e.to_string())
    }
}

pub(crate) type CmdResult<T> = Result<T, CmdError>;

/// The operations behind the commands.
pub(crate) trait Backend {
    fn create_scope(&self, slug: &Slug, kind: ScopeKind) -> CmdResult<ScopeCreated>;
    fn list_scopes(&self) -> CmdResult<Vec<ScopeInfo>>;
    fn scope_status(&self, slug: &Slug) -> CmdResult<ScopeStatus>;
    fn delete_scope(&self, slug: &Slug) -> CmdResult<()>;
    /// Rotates the tenant's data key; with `rewrap`, re-encrypts older
    /// versions too. Returns the new key version and how many versions moved.
    fn rotate_key(&self, slug: &Slug, rewrap: bool) -> CmdResult<(u32, u64)>;
    fn put(&self, path: &SecretPath, value: &Secret, cas: Option<u64>) -> CmdResult<u64>;
    fn get(&self, path: &SecretPath, version: Option<u64>) -> CmdResult<VersionedSecret>;
    fn list(&self, prefix: &ListPrefix, after: Option<&str>, limit: usize) -> CmdResult<ListPage>;
    fn delete(&self, path: &SecretPath, versions: &[u64]) -> CmdResult<Vec<u64>>;
    fn undelete(&self, path: &SecretPath, versions: &[u64]) -> CmdResult<Vec<u64>>;
    fn destroy(&self, path: &SecretPath, versions: &[u64]) -> CmdResult<Vec<u64>>;
    fn metadata(&self, path: &SecretPath) -> CmdResult<SecretMetadata>;
    fn update_metadata(&self, path: &SecretPath, update: &MetadataUpdate) -> CmdResult<()>;
    fn limits(&self, slug: &Slug) -> CmdResult<Limits>;
    fn set_limits(&self, slug: &Slug, change: &LimitChange) -> CmdResult<()>;
    fn issue_token(&self, spec: &TokenSpec) -> CmdResult<IssuedToken>;
    fn revoke_token(&self, id: &str) -> CmdResult<()>;
    fn list_tokens(&self, tenant: Option<&Slug>) -> CmdResult<Vec<TokenInfo>>;
    /// Checks the audit chain: the record count, or the first problem.
    fn audit_verify(&self) -> CmdResult<Result<u64, String>>;
    fn audit_tail(&self, n: usize) -> CmdResult<Vec<AuditRecord>>;
}
