//! Remote mode: the same commands over gRPC, through the typed client.
//!
//! Server statuses map to the exit codes the local mapping in `backend.rs`
//! gives the core errors behind them, and the status message (the core
//! error's own text) becomes the command's error message, so a command
//! prints the same thing and exits with the same code in both modes.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secret_mcp_grpc::{Client, ClientOptions, ClientTls};
use tenant_vault::{
    AuditRecord, IssuedToken, LimitChange, Limits, ListPage, ListPrefix, MetadataUpdate,
    ScopeCreated, ScopeInfo, ScopeKind, ScopeStatus, Secret, SecretMetadata, SecretPath, Slug,
    TokenInfo, TokenSpec, VersionedSecret,
};
use zeroize::Zeroizing;

use crate::backend::{Backend, CmdError, CmdResult, ExitKind};

/// Where and how to reach the server, as given on the command line.
#[derive(Debug, Default)]
pub(crate) struct RemoteArgs {
    pub(crate) addr: String,
    pub(crate) token: Option<Secret>,
    pub(crate) tls_ca: Option<PathBuf>,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    pub(crate) tls_domain: Option<String>,
}

/// A client and the single-threaded runtime its calls are driven on.
pub(crate) struct Remote {
    rt: tokio::runtime::Runtime,
    client: Client,
}

/// The exit code and message of a client error. A server status keeps its
/// message unchanged (it is the vault error's text, as printed locally).
pub(crate) fn cmd_error(e: secret_mcp_grpc::Error) -> CmdError {
    use secret_mcp_grpc::Error as E;
    use tonic::Code;
    match e {
        E::Status { code, message } => {
            let kind = match code {
                Code::InvalidArgument => ExitKind::Usage,
                Code::NotFound => ExitKind::NotFound,
                // Unavailable: the server is sealed (retried first by the client).
                Code::Unauthenticated | Code::PermissionDenied | Code::Unavailable => {
                    ExitKind::Denied
                }
                Code::FailedPrecondition | Code::AlreadyExists => ExitKind::Conflict,
                Code::ResourceExhausted | Code::OutOfRange => ExitKind::Limit,
                Code::DataLoss => ExitKind::Integrity,
                _ => ExitKind::Failure,
            };
            CmdError::new(kind, message)
        }
        E::InvalidArgument(_) | E::Tls(_) | E::PlaintextNotLoopback(_) => {
            CmdError::usage(e.to_string())
        }
        other => CmdError::new(ExitKind::Failure, other.to_string()),
    }
}

fn read_file(what: &str, path: &Path) -> CmdResult<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| CmdError::usage(format!("cannot read the {what} {}: {e}", path.display())))
}

/// A current-thread runtime for the blocking command line.
pub(crate) fn runtime() -> CmdResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CmdError::new(ExitKind::Failure, format!("starting the runtime: {e}")))
}

impl Remote {
    /// Connects to the server.
    pub(crate) fn connect(args: &RemoteArgs) -> CmdResult<Remote> {
        let tls = if args.tls_ca.is_some()
            || args.tls_cert.is_some()
            || args.tls_key.is_some()
            || args.tls_domain.is_some()
        {
            let identity = match (&args.tls_cert, &args.tls_key) {
                (Some(c), Some(k)) => Some((
                    read_file("client certificate", c)?,
                    Zeroizing::new(read_file("client key", k)?),
                )),
                (None, None) => None,
                _ => {
                    return Err(CmdError::usage(
                        "--tls-cert and --tls-key go together (the client certificate and its key)",
                    ));
                }
            };
            Some(ClientTls {
                ca_pem: args
                    .tls_ca
                    .as_deref()
                    .map(|p| read_file("CA certificate", p))
                    .transpose()?,
                identity,
                domain: args.tls_domain.clone(),
            })
        } else {
            None
        };
        if args.tls_ca.is_none() && (tls.is_some() || args.addr.trim().starts_with("https://")) {
            return Err(CmdError::usage(
                "TLS needs --tls-ca (or SECRET_MCP_TLS_CA): the CA certificate that signed the \
                 server's certificate (no system roots are trusted)",
            ));
        }
        let options = ClientOptions {
            token: args.token.clone(),
            tls,
            timeout: Duration::from_secs(30),
            retries: 3,
        };
        let rt = runtime()?;
        let client = rt
            .block_on(Client::connect(&args.addr, options))
            .map_err(cmd_error)?;
        Ok(Remote { rt, client })
    }

    fn call<T>(&self, f: impl Future<Output = Result<T, secret_mcp_grpc::Error>>) -> CmdResult<T> {
        self.rt.block_on(f).map_err(cmd_error)
    }

    /// The server's seal state and version.
    pub(crate) fn status(&self) -> CmdResult<(bool, String)> {
        self.call(self.client.status())
    }

    /// Seals the server.
    pub(crate) fn seal(&self) -> CmdResult<()> {
        self.call(self.client.seal())
    }

    /// Unseals the server with the passphrase.
    pub(crate) fn unseal(&self, passphrase: &Secret) -> CmdResult<()> {
        self.call(self.client.unseal(passphrase))
    }
}

impl Backend for Remote {
    fn create_scope(&self, slug: &Slug, kind: ScopeKind) -> CmdResult<ScopeCreated> {
        self.call(self.client.create_scope(slug, kind))
    }
    fn list_scopes(&self) -> CmdResult<Vec<ScopeInfo>> {
        self.call(self.client.list_scopes())
    }
    fn scope_status(&self, slug: &Slug) -> CmdResult<ScopeStatus> {
        self.call(self.client.scope_status(slug))
    }
    fn delete_scope(&self, slug: &Slug) -> CmdResult<()> {
        self.call(self.client.delete_scope(slug))
    }
    fn rotate_key(&self, slug: &Slug, rewrap: bool) -> CmdResult<(u32, u64)> {
        self.call(self.client.rotate_key(slug, rewrap))
    }
    fn put(&self, path: &SecretPath, value: &Secret, cas: Option<u64>) -> CmdResult<u64> {
        self.call(self.client.put(path, value, cas))
    }
    fn get(&self, path: &SecretPath, version: Option<u64>) -> CmdResult<VersionedSecret> {
        self.call(self.client.get(path, version))
    }
    fn list(&self, prefix: &ListPrefix, after: Option<&str>, limit: usize) -> CmdResult<ListPage> {
        self.call(self.client.list(prefix, after, limit))
    }
    fn delete(&self, path: &SecretPath, versions: &[u64]) -> CmdResult<Vec<u64>> {
        self.call(self.client.delete(path, versions))
    }
    fn undelete(&self, path: &SecretPath, versions: &[u64]) -> CmdResult<Vec<u64>> {
        self.call(self.client.undelete(path, versions))
    }
    fn destroy(&self, path: &SecretPath, versions: &[u64]) -> CmdResult<Vec<u64>> {
        self.call(self.client.destroy(path, versions))
    }
    fn metadata(&self, path: &SecretPath) -> CmdResult<SecretMetadata> {
        self.call(self.client.metadata(path))
    }
    fn update_metadata(&self, path: &SecretPath, update: &MetadataUpdate) -> CmdResult<()> {
        self.call(self.client.update_metadata(path, update))
            .map(|_| ())
    }
    fn limits(&self, slug: &Slug) -> CmdResult<Limits> {
        self.call(self.client.limits(slug))
    }
    fn set_limits(&self, slug: &Slug, change: &LimitChange) -> CmdResult<()> {
        self.call(self.client.set_limits(slug, change)).map(|_| ())
    }
    fn issue_token(&self, spec: &TokenSpec) -> CmdResult<IssuedToken> {
        self.call(self.client.issue_token(spec))
    }
    fn revoke_token(&self, id: &str) -> CmdResult<()> {
        self.call(self.client.revoke_token(id))
    }
    fn list_tokens(&self, tenant: Option<&Slug>) -> CmdResult<Vec<TokenInfo>> {
        self.call(self.client.list_tokens(tenant))
    }
    fn audit_verify(&self) -> CmdResult<Result<u64, String>> {
        self.call(self.client.verify_audit())
    }
    fn audit_tail(&self, n: usize) -> CmdResult<Vec<AuditRecord>> {
        self.call(self.client.audit_tail(n))
    }
}
