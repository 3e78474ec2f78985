//! `secret-mcp serve` and `secret-mcp dev`: the vault served over gRPC.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secret_mcp_grpc::{Server, ServerOptions, ServerTls, shutdown_signal};
use serde::Deserialize;
use tenant_vault::{KdfParams, Role, ScopeKind, Secret, SecretPath, Slug, TokenSpec, Vault};
use zeroize::Zeroizing;

use crate::backend::{CmdError, CmdResult, ExitKind};
use crate::local::{self, UnlockArgs};
use crate::{Cli, DevArgs, ServeArgs};

/// Where `serve` and `dev` listen unless told otherwise.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:7443";

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The `serve` configuration file. Every key is optional; relative paths are
/// relative to the file's directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    storage: Option<String>,
    key_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    max_message_bytes: Option<usize>,
    request_timeout_secs: Option<u64>,
    concurrency_limit: Option<usize>,
    audit_file: Option<PathBuf>,
    log_format: Option<LogFormat>,
}

impl ServeConfig {
    fn read(path: &Path) -> CmdResult<ServeConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            CmdError::usage(format!("cannot read the config {}: {e}", path.display()))
        })?;
        let mut cfg: ServeConfig = toml::from_str(&text)
            .map_err(|e| CmdError::usage(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut cfg.data_dir,
            &mut cfg.key_file,
            &mut cfg.tls_cert,
            &mut cfg.tls_key,
            &mut cfg.tls_client_ca,
            &mut cfg.audit_file,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }
}

fn failure(what: &str) -> impl Fn(std::io::Error) -> CmdError + '_ {
    move |e| CmdError::new(ExitKind::Failure, format!("{what}: {e}"))
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // A second call (tests in one process) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn parse_listen(listen: &str) -> CmdResult<SocketAddr> {
    listen.parse().map_err(|_| {
        CmdError::usage(format!(
            "--listen takes an IP address and a port such as 127.0.0.1:7443 or [::1]:7443, \
             not `{listen}`"
        ))
    })
}

fn read_pem(what: &str, path: &Path) -> CmdResult<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| CmdError::usage(format!("cannot read the {what} {}: {e}", path.display())))
}

fn grpc_error(e: secret_mcp_grpc::Error) -> CmdError {
    use secret_mcp_grpc::Error as E;
    match e {
        E::PlaintextNotLoopback(_) | E::Tls(_) | E::InvalidArgument(_) => {
            CmdError::usage(e.to_string())
        }
        other => CmdError::new(ExitKind::Failure, other.to_string()),
    }
}

/// Binds, prints `listening on ADDR`, and serves until SIGTERM or SIGINT.
fn run_server(
    vault: Arc<Vault>,
    addr: SocketAddr,
    options: ServerOptions,
    banner: impl FnOnce(SocketAddr, &mut dyn Write) -> std::io::Result<()>,
    out: &mut dyn Write,
) -> CmdResult<()> {
    if options.tls.is_none() && !addr.ip().is_loopback() && !options.allow_plaintext_non_loopback {
        return Err(grpc_error(secret_mcp_grpc::Error::PlaintextNotLoopback(
            addr,
        )));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(failure("starting the runtime"))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            CmdError::new(ExitKind::Failure, format!("cannot listen on {addr}: {e}"))
        })?;
        let bound = listener
            .local_addr()
            .map_err(failure("reading the bound address"))?;
        writeln!(out, "listening on {bound}").map_err(failure("writing output"))?;
        banner(bound, out).map_err(failure("writing output"))?;
        out.flush().map_err(failure("writing output"))?;
        Server::new(vault, options)
            .serve(listener, shutdown_signal())
            .await
            .map_err(grpc_error)?;
        Ok(())
    })
}

/// `secret-mcp serve`.
pub(crate) fn serve(cli: &Cli, a: &ServeArgs, out: &mut dyn Write) -> CmdResult<()> {
    let cfg = match &a.config {
        Some(p) => ServeConfig::read(p)?,
        None => ServeConfig::default(),
    };
    init_logging(a.log_format.or(cfg.log_format).unwrap_or(LogFormat::Text));

    let listen = a
        .listen
        .clone()
        .or(cfg.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    let addr = parse_listen(&listen)?;
    let data_dir = if cli.data_dir_given() {
        cli.data_dir.clone()
    } else {
        cfg.data_dir.unwrap_or_else(|| cli.data_dir.clone())
    };
    let mut unlock: UnlockArgs = cli.unlock();
    if unlock.key_file.is_none() && !unlock.passphrase_stdin && unlock.passphrase_file.is_none() {
        unlock.key_file = cfg.key_file;
    }
    let audit_file = cli.audit_file.clone().or(cfg.audit_file);
    let storage =
        local::Storage::resolve(&data_dir, cli.storage.as_deref().or(cfg.storage.as_deref()))?;

    let cert = a.tls_server_cert.clone().or(cfg.tls_cert);
    let key = a.tls_server_key.clone().or(cfg.tls_key);
    let client_ca = a.tls_client_ca.clone().or(cfg.tls_client_ca);
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(ServerTls {
            cert_pem: read_pem("server certificate", &cert)?,
            key_pem: Zeroizing::new(read_pem("server key", &key)?),
            client_ca_pem: client_ca
                .as_deref()
                .map(|p| read_pem("client CA certificate", p))
                .transpose()?,
        }),
        (None, None) if client_ca.is_none() => None,
        (None, None) => {
            return Err(CmdError::usage(
                "client certificates (tls_client_ca) need TLS: give tls_cert and tls_key too",
            ));
        }
        _ => {
            return Err(CmdError::usage(
                "TLS needs both the certificate and the key (tls_cert and tls_key, or \
                 --tls-server-cert and --tls-server-key)",
            ));
        }
    };

    let mut options = ServerOptions {
        tls,
        allow_plaintext_non_loopback: a.insecure_plaintext_non_loopback,
        ..ServerOptions::default()
    };
    if let Some(n) = a.max_message_bytes.or(cfg.max_message_bytes) {
        options.max_message_bytes = n;
    }
    if let Some(s) = a.request_timeout_secs.or(cfg.request_timeout_secs) {
        options.request_timeout = Duration::from_secs(s.max(1));
    }
    if let Some(n) = a.concurrency_limit.or(cfg.concurrency_limit) {
        options.concurrency_limit = n.max(1);
    }
    if options.allow_plaintext_non_loopback && options.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            addr = %addr,
            "INSECURE: serving plaintext gRPC off loopback; tokens and secrets cross the network unencrypted"
        );
    }

    let (vault, sealed) = local::open_for_server(&data_dir, &storage, &unlock, audit_file)?;
    if sealed {
        tracing::warn!(
            storage = %storage.describe(),
            "the vault is unlocked by a passphrase and none was given: starting sealed; \
             every call but Status and Unseal is UNAVAILABLE until System.Unseal \
             (`secret-mcp server unseal --passphrase-stdin`)"
        );
    } else {
        tracing::info!(storage = %storage.describe(), "vault opened and unsealed");
    }
    run_server(Arc::new(vault), addr, options, |_, _| Ok(()), out)
}

/// `secret-mcp dev`.
pub(crate) fn dev(cli: &Cli, a: &DevArgs, out: &mut dyn Write) -> CmdResult<()> {
    init_logging(a.log_format);
    let addr = parse_listen(&a.listen)?;
    if !addr.ip().is_loopback() {
        return Err(CmdError::usage(format!(
            "the dev server listens on loopback only (plaintext, throwaway tokens), not on {addr}"
        )));
    }
    // The data directory: --data-dir if given on the command line (it must be
    // empty or new, and is kept), else a temporary one removed on exit.
    let mut temp = None;
    let data_dir = if matches!(
        cli.data_dir_source,
        Some(clap::parser::ValueSource::CommandLine)
    ) {
        let d = cli.data_dir.clone();
        if std::fs::read_dir(&d).is_ok_and(|mut entries| entries.next().is_some()) {
            return Err(CmdError::usage(format!(
                "dev starts from an empty vault: {} is not empty (leave out --data-dir for a \
                 temporary one)",
                d.display()
            )));
        }
        d
    } else {
        let t = tempfile::Builder::new()
            .prefix("secret-mcp-dev-")
            .tempdir()
            .map_err(failure("creating a temporary directory"))?;
        let d = t.path().join("vault");
        temp = Some(t);
        d
    };
    local::create_private_dir(&data_dir)?;
    let key_file = data_dir.join("dev.key");
    let unlock = UnlockArgs {
        key_file: Some(key_file.clone()),
        ..UnlockArgs::default()
    };
    let storage = local::Storage::resolve(&data_dir, None)?;
    local::init(&data_dir, &storage, &unlock, KdfParams::default())?;
    let (vault, _) = local::open_for_server(&data_dir, &storage, &unlock, None)?;

    let demo = Slug::parse("demo")?;
    let hello = SecretPath::parse("tenant/demo/hello")?;
    let (operator, owner) = {
        let root = vault.root_session();
        root.create_scope(&demo, ScopeKind::Enterprise)?;
        root.put(
            &hello,
            &Secret::from("hello from the secret-mcp dev server"),
            None,
        )?;
        let operator = root.issue_token(&TokenSpec {
            read_grants: vec![demo.clone()],
            description: "dev server operator".into(),
            ..TokenSpec::default()
        })?;
        let owner = root.issue_token(&TokenSpec {
            tenant: Some(demo.clone()),
            role: Some(Role::Owner),
            description: "dev server demo owner".into(),
            ..TokenSpec::default()
        })?;
        (operator.token, owner.token)
    };
    let text = |s: &Secret| String::from_utf8_lossy(s.expose()).into_owned();
    let (operator, owner) = (
        Zeroizing::new(text(&operator)),
        Zeroizing::new(text(&owner)),
    );
    let kept = temp.is_none();
    let dir_shown = data_dir.display().to_string();
    let key_shown = key_file.display().to_string();
    tracing::warn!(
        "dev server: a throwaway vault and plaintext loopback gRPC, never for real secrets"
    );
    let banner = move |bound: SocketAddr, out: &mut dyn Write| -> std::io::Result<()> {
        writeln!(out)?;
        writeln!(
            out,
            "Secret MCP dev server: a throwaway vault in {dir_shown}{} (key file {key_shown}).",
            if kept { "" } else { ", deleted on exit" }
        )?;
        writeln!(
            out,
            "Never use it for real secrets. Tenant `demo` holds tenant/demo/hello. In another shell:"
        )?;
        writeln!(out)?;
        writeln!(out, "export SECRET_MCP_ADDR=http://{bound}")?;
        writeln!(out, "export SECRET_MCP_TOKEN={}", operator.as_str())?;
        writeln!(out)?;
        writeln!(
            out,
            "The token above is an operator token (manages tenants and tokens, reads `demo`)."
        )?;
        writeln!(
            out,
            "The demo tenant's owner token (reads and writes tenant/demo/...):"
        )?;
        writeln!(out)?;
        writeln!(out, "export SECRET_MCP_DEMO_TOKEN={}", owner.as_str())?;
        writeln!(out)?;
        writeln!(
            out,
            "Try: secret-mcp get tenant/demo/hello; SECRET_MCP_TOKEN=$SECRET_MCP_DEMO_TOKEN \
             secret-mcp put tenant/demo/db --value s3cret. Ctrl-C stops the server."
        )?;
        Ok(())
    };
    let r = run_server(Arc::new(vault), addr, ServerOptions::default(), banner, out);
    drop(temp);
    r
}
