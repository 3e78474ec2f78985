//! The embedded vault in a data directory.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tenant_vault::{
    AuditRecord, IssuedToken, KdfParams, LimitChange, Limits, ListPage, ListPrefix, MetadataUpdate,
    Principal, ScopeCreated, ScopeInfo, ScopeKind, ScopeStatus, Secret, SecretMetadata, SecretPath,
    Session, Slug, SqliteStore, TokenInfo, TokenSpec, Unlock, Vault, VaultOptions, VersionedSecret,
};
use zeroize::Zeroizing;

use crate::backend::{Backend, CmdError, CmdResult, ExitKind};

const DB_FILE: &str = "vault.db";
const CONFIG_FILE: &str = "config.toml";

/// `DATA_DIR/config.toml`: how to unlock the vault without flags and where
/// it is stored. Holds a path and a storage URL, never key material.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataDirConfig {
    /// The key file given to `init --key-file`.
    key_file: Option<PathBuf>,
    /// The storage given to `init --storage` (default: the SQLite file
    /// `vault.db` in the data directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    storage: Option<String>,
}

/// Where the vault is stored: `--storage` / `SECRET_MCP_STORAGE` (or the
/// serve config's `storage`) when given, else what `init --storage`
/// remembered in the data directory, else `DATA_DIR/vault.db`.
#[derive(Debug, Clone)]
pub(crate) enum Storage {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A `postgres://` URL.
    Postgres(String),
}

impl Storage {
    pub(crate) fn resolve(data_dir: &Path, given: Option<&str>) -> CmdResult<Storage> {
        let url = match given {
            Some(u) => Some(u.to_owned()),
            None => read_config(data_dir)?.storage,
        };
        match url {
            None => Ok(Storage::Sqlite(data_dir.join(DB_FILE))),
            Some(u) => Storage::parse(&u),
        }
    }

    pub(crate) fn parse(url: &str) -> CmdResult<Storage> {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .filter(|p| !p.is_empty())
        {
            Ok(Storage::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Storage::Postgres(url.to_owned()))
        } else {
            let scheme = url.split_once(':').map_or("", |(s, _)| s);
            Err(CmdError::usage(format!(
                "--storage is sqlite://PATH or postgres://USER@HOST[:PORT]/DATABASE, not a `{scheme}` URL"
            )))
        }
    }

    /// The URL to remember in the data directory (`None` for the default).
    fn remembered(&self, data_dir: &Path) -> Option<String> {
        match self {
            Storage::Sqlite(p) if p == &data_dir.join(DB_FILE) => None,
            Storage::Sqlite(p) => Some(format!(
                "sqlite://{}",
                fs::canonicalize(p).unwrap_or_else(|_| p.clone()).display()
            )),
            Storage::Postgres(u) => Some(u.clone()),
        }
    }

    /// For messages and logs: the file, or the database's host, port and
    /// name (never a password).
    pub(crate) fn describe(&self) -> String {
        match self {
            Storage::Sqlite(p) => p.display().to_string(),
            Storage::Postgres(u) => {
                let rest = u.split_once("://").map_or(u.as_str(), |(_, r)| r);
                let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
                format!("postgres://{}", host.split('?').next().unwrap_or(host))
            }
        }
    }

    pub(crate) fn open(&self) -> CmdResult<Box<dyn tenant_vault::Store>> {
        Ok(match self {
            Storage::Sqlite(p) => Box::new(SqliteStore::open(p)?),
            Storage::Postgres(u) => Box::new(tenant_vault::PostgresStore::connect(u)?),
        })
    }

    /// Opens the store of an existing vault: a SQLite file must exist; a
    /// database must hold an initialized vault.
    fn open_existing(&self, data_dir: &Path) -> CmdResult<Box<dyn tenant_vault::Store>> {
        let missing = || {
            CmdError::new(
                ExitKind::NotFound,
                match self {
                    Storage::Sqlite(_) => format!(
                        "no vault in {}: run `secret-mcp init` first (or set --data-dir / SECRET_MCP_DATA)",
                        data_dir.display()
                    ),
                    Storage::Postgres(_) => format!(
                        "no vault in {}: run `secret-mcp init --storage URL` first",
                        self.describe()
                    ),
                },
            )
        };
        if let Storage::Sqlite(p) = self {
            if !p.exists() {
                return Err(missing());
            }
        }
        let store = self.open()?;
        if store.root()?.is_none() {
            return Err(missing());
        }
        Ok(store)
    }
}

/// Where the unlock material comes from, as given on the command line.
#[derive(Debug, Default)]
pub(crate) struct UnlockArgs {
    pub(crate) key_file: Option<PathBuf>,
    pub(crate) passphrase_stdin: bool,
    pub(crate) passphrase_file: Option<PathBuf>,
}

impl UnlockArgs {
    /// True when stdin is taken by the passphrase.
    pub(crate) fn uses_stdin(&self) -> bool {
        self.passphrase_stdin
    }

    /// The passphrase given by --passphrase-stdin or --passphrase-file, if
    /// either was.
    pub(crate) fn passphrase(&self) -> CmdResult<Option<Secret>> {
        if self.key_file.is_some() || (!self.passphrase_stdin && self.passphrase_file.is_none()) {
            return Ok(None);
        }
        match self.resolve(Path::new("."))? {
            Unlock::Passphrase(p) => Ok(Some(p)),
            _ => Ok(None),
        }
    }

    /// True when unlock material is at hand: a flag, or the key file
    /// remembered in the data directory.
    fn available(&self, data_dir: &Path) -> CmdResult<bool> {
        Ok(self.key_file.is_some()
            || self.passphrase_stdin
            || self.passphrase_file.is_some()
            || read_config(data_dir)?.key_file.is_some())
    }

    pub(crate) fn resolve(&self, data_dir: &Path) -> CmdResult<Unlock> {
        if let Some(f) = &self.key_file {
            return Ok(Unlock::KeyFile(f.clone()));
        }
        if self.passphrase_stdin {
            return read_passphrase(std::io::stdin().lock(), "standard input");
        }
        if let Some(f) = &self.passphrase_file {
            let file = fs::File::open(f).map_err(|e| {
                CmdError::usage(format!("cannot read passphrase file {}: {e}", f.display()))
            })?;
            return read_passphrase(file, "the passphrase file");
        }
        let cfg = read_config(data_dir)?;
        match cfg.key_file {
            Some(f) => Ok(Unlock::KeyFile(f)),
            None => Err(CmdError::new(
                ExitKind::Denied,
                "this vault is unlocked with a passphrase: give --passphrase-stdin or \
                 --passphrase-file (or --key-file for a key-file vault)",
            )),
        }
    }
}

/// Reads the first line as the passphrase (without its line ending).
fn read_passphrase(mut r: impl Read, from: &str) -> CmdResult<Unlock> {
    let mut buf = Zeroizing::new(Vec::new());
    r.read_to_end(&mut buf)
        .map_err(|e| CmdError::usage(format!("cannot read the passphrase from {from}: {e}")))?;
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(CmdError::usage(format!(
            "the passphrase read from {from} is empty"
        )));
    }
    Ok(Unlock::Passphrase(Secret::new(line.to_vec())))
}

fn read_config(data_dir: &Path) -> CmdResult<DataDirConfig> {
    let p = data_dir.join(CONFIG_FILE);
    match fs::read_to_string(&p) {
        Ok(text) => toml::from_str(&text)
            .map_err(|e| CmdError::new(ExitKind::Failure, format!("{}: {e}", p.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DataDirConfig::default()),
        Err(e) => Err(CmdError::new(
            ExitKind::Failure,
            format!("cannot read {}: {e}", p.display()),
        )),
    }
}

/// `secret-mcp init`: creates the data directory and the vault. With a key
/// file that does not exist yet, creates it with a fresh random key.
pub(crate) fn init(
    data_dir: &Path,
    storage: &Storage,
    unlock: &UnlockArgs,
    kdf: KdfParams,
) -> CmdResult<String> {
    let exists = match storage {
        Storage::Sqlite(db) => db.exists(),
        Storage::Postgres(_) => storage.open()?.root()?.is_some(),
    };
    if exists {
        let place = match storage {
            Storage::Sqlite(db) if db == &data_dir.join(DB_FILE) => data_dir.display().to_string(),
            _ => storage.describe(),
        };
        return Err(CmdError::new(
            ExitKind::Conflict,
            format!("a vault already exists in {place}"),
        ));
    }
    if unlock.key_file.is_none() && !unlock.passphrase_stdin && unlock.passphrase_file.is_none() {
        return Err(CmdError::usage(
            "init needs --key-file FILE or --passphrase-stdin (or --passphrase-file FILE)",
        ));
    }
    let mut created_key = false;
    if let Some(kf) = &unlock.key_file {
        if !kf.exists() {
            tenant_vault::create_key_file(kf)?;
            created_key = true;
        }
    }
    create_private_dir(data_dir)?;
    let the_unlock = unlock.resolve(data_dir)?;
    let mut opts = VaultOptions::default();
    opts.kdf = kdf;
    Vault::init(storage.open()?, &the_unlock, opts)?;
    let remembered = storage.remembered(data_dir);
    if unlock.key_file.is_some() || remembered.is_some() {
        let cfg = DataDirConfig {
            key_file: unlock
                .key_file
                .as_ref()
                .map(|kf| fs::canonicalize(kf).unwrap_or_else(|_| kf.clone())),
            storage: remembered,
        };
        let text = toml::to_string(&cfg)
            .map_err(|e| CmdError::new(ExitKind::Failure, format!("writing the config: {e}")))?;
        fs::write(
            data_dir.join(CONFIG_FILE),
            format!("# written by `secret-mcp init`\n{text}"),
        )
        .map_err(|e| CmdError::new(ExitKind::Failure, format!("writing the config: {e}")))?;
    }
    let how = match (&unlock.key_file, created_key) {
        (Some(kf), true) => format!("a new key file {}", kf.display()),
        (Some(kf), false) => format!("the key file {}", kf.display()),
        (None, _) => "a passphrase (Argon2id)".to_owned(),
    };
    let place = match storage {
        Storage::Sqlite(db) if db == &data_dir.join(DB_FILE) => data_dir.display().to_string(),
        _ => storage.describe(),
    };
    Ok(format!("initialized a vault in {place}, unlocked by {how}"))
}

pub(crate) fn create_private_dir(dir: &Path) -> CmdResult<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir).map_err(|e| {
        CmdError::new(
            ExitKind::Failure,
            format!("cannot create {}: {e}", dir.display()),
        )
    })
}

/// Opens the vault in `data_dir` for a server: unlocked when unlock material
/// is at hand (flags, or the key file remembered by `init`), else sealed,
/// waiting for an Unseal call. Returns the vault and whether it is sealed.
pub(crate) fn open_for_server(
    data_dir: &Path,
    storage: &Storage,
    unlock: &UnlockArgs,
    audit_file: Option<PathBuf>,
) -> CmdResult<(Vault, bool)> {
    let store = storage.open_existing(data_dir)?;
    let mut opts = VaultOptions::default();
    opts.audit_file = audit_file;
    if unlock.available(data_dir)? {
        let unlock = unlock.resolve(data_dir)?;
        Ok((Vault::open(store, &unlock, opts)?, false))
    } else {
        Ok((Vault::open_sealed(store, opts)?, true))
    }
}

/// The embedded vault, used as one principal: the holder of `--token`, or
/// `root` (the unlock material's holder) without one. Every request goes
/// through a session, so it is authorized and audited as a remote one is.
pub(crate) struct Local {
    vault: Vault,
    principal: Principal,
}

impl Local {
    fn session(&self) -> Session<'_> {
        self.vault.session(self.principal.clone())
    }

    /// Opens and unlocks the vault in `data_dir`, as the holder of `token`
    /// when given.
    pub(crate) fn open(
        data_dir: &Path,
        storage: &Storage,
        unlock: &UnlockArgs,
        token: Option<&str>,
        audit_file: Option<PathBuf>,
    ) -> CmdResult<Local> {
        let store = storage.open_existing(data_dir)?;
        let unlock = unlock.resolve(data_dir)?;
        let mut opts = VaultOptions::default();
        opts.audit_file = audit_file;
        let vault = Vault::open(store, &unlock, opts)?;
        let principal = match token {
            Some(t) => vault.authenticate(t)?,
            None => Principal::Root,
        };
        Ok(Local { vault, principal })
    }
}

impl Backend for Local {
    fn create_scope(&self, slug: &Slug, kind: ScopeKind) -> CmdResult<ScopeCreated> {
        Ok(self.session().create_scope(slug, kind)?)
    }
    fn list_scopes(&self) -> CmdResult<Vec<ScopeInfo>> {
        Ok(self.session().list_scopes()?)
    }
    fn scope_status(&self, slug: &Slug) -> CmdResult<ScopeStatus> {
        Ok(self.session().scope_status(slug)?)
    }
    fn delete_scope(&self, slug: &Slug) -> CmdResult<()> {
        Ok(self.session().delete_scope(slug)?)
    }
    fn rotate_key(&self, slug: &Slug, rewrap: bool) -> CmdResult<(u32, u64)> {
        Ok(self.session().rotate_key(slug, rewrap)?)
    }
    fn put(&self, path: &SecretPath, value: &Secret, cas: Option<u64>) -> CmdResult<u64> {
        Ok(self.session().put(path, value, cas)?)
    }
    fn get(&self, path: &SecretPath, version: Option<u64>) -> CmdResult<VersionedSecret> {
        Ok(match version {
            Some(v) => self.session().get_version(path, v)?,
            None => self.session().get(path)?,
        })
    }
    fn list(&self, prefix: &ListPrefix, after: Option<&str>, limit: usize) -> CmdResult<ListPage> {
        Ok(self.session().list(prefix, after, limit)?)
    }
    fn delete(&self, path: &SecretPath, versions: &[u64]) -> CmdResult<Vec<u64>> {
        Ok(self.session().delete(path, versions)?)
    }
    fn undelete(&self, path: &SecretPath, versions: &[u64]) -> CmdResult<Vec<u64>> {
        Ok(self.session().undelete(path, versions)?)
    }
    fn destroy(&self, path: &SecretPath, versions: &[u64]) -> CmdResult<Vec<u64>> {
        Ok(self.session().destroy(path, versions)?)
    }
    fn metadata(&self, path: &SecretPath) -> CmdResult<SecretMetadata> {
        Ok(self.session().metadata(path)?)
    }
    fn update_metadata(&self, path: &SecretPath, update: &MetadataUpdate) -> CmdResult<()> {
        Ok(self.session().update_metadata(path, update)?)
    }
    fn limits(&self, slug: &Slug) -> CmdResult<Limits> {
        Ok(self.session().limits(slug)?)
    }
    fn set_limits(&self, slug: &Slug, change: &LimitChange) -> CmdResult<()> {
        Ok(self.session().set_limits(slug, change)?)
    }
    fn issue_token(&self, spec: &TokenSpec) -> CmdResult<IssuedToken> {
        Ok(self.session().issue_token(spec)?)
    }
    fn revoke_token(&self, id: &str) -> CmdResult<()> {
        Ok(self.session().revoke_token(id)?)
    }
    fn list_tokens(&self, tenant: Option<&Slug>) -> CmdResult<Vec<TokenInfo>> {
        Ok(self.session().list_tokens(tenant)?)
    }
    fn audit_verify(&self) -> CmdResult<Result<u64, String>> {
        self.operator_only("audit verify")?;
        Ok(self.vault.verify_audit()?.map_err(|p| p.to_string()))
    }
    fn audit_tail(&self, n: usize) -> CmdResult<Vec<AuditRecord>> {
        self.operator_only("audit tail")?;
        Ok(self.vault.audit_tail(n)?)
    }
}

impl Local {
    fn operator_only(&self, what: &str) -> CmdResult<()> {
        match self.principal {
            Principal::Root | Principal::Operator { .. } => Ok(()),
            _ => Err(CmdError::new(
                ExitKind::Denied,
                format!("permission denied: {what} needs an operator token"),
            )),
        }
    }
}
