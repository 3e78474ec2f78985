//! `secret-mcp`: the Tenant Vault command line.
//!
//! `main` parses the command line, dispatches to `commands`, and maps errors
//! to exit codes. Commands are written against the `Backend` trait, so they
//! work the same on the embedded vault (`local.rs`) and, in remote mode, over
//! gRPC (`remote.rs`). `serve.rs` runs the gRPC server (`serve`, `dev`) and
//! `run.rs` starts a program with a tenant's secrets in its environment.

mod backend;
mod commands;
mod fingerprints;
mod local;
mod migrate;
mod remote;
mod run;
mod serve;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::backend::{CmdError, ExitKind};
use crate::local::UnlockArgs;
use crate::remote::RemoteArgs;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure not listed below; in remote mode, the server cannot be reached
  2  bad command line or argument
  3  tenant, secret or version not found (or deleted / destroyed)
  4  refused: wrong passphrase, key file or token, permission denied, sealed
  5  conflict: check-and-set mismatch, vault already initialized, migrate target
     not empty
  6  limit: value too large, quota or rate limit reached
  7  stored data or the audit trail failed its integrity check
`run` exits with its program's code instead (128+N when a signal N killed it).";

/// Tenant Vault: tenant-scoped, encrypted, versioned secrets.
#[derive(Parser)]
#[command(name = "secret-mcp", version, after_help = EXIT_CODES)]
struct Cli {
    /// Directory of the embedded vault.
    #[arg(
        long,
        global = true,
        env = "SECRET_MCP_DATA",
        default_value = ".secret-mcp"
    )]
    data_dir: PathBuf,

    /// Where the embedded vault (or the server's) is stored:
    /// `sqlite://PATH` or `postgres://USER@HOST[:PORT]/DATABASE[?sslmode=require]`
    /// (default: `vault.db` in the data directory, or what `init --storage`
    /// remembered there). Prefer the environment variable when the URL holds
    /// a password: a flag is visible in the process list.
    #[arg(
        long,
        global = true,
        env = "SECRET_MCP_STORAGE",
        hide_env_values = true
    )]
    storage: Option<String>,

    /// Key file that unlocks the vault (64 hex characters). `init` creates it
    /// if it does not exist and remembers its path in the data directory.
    #[arg(long, global = true, env = "SECRET_MCP_KEY_FILE")]
    key_file: Option<PathBuf>,

    /// Read the vault passphrase from the first line of standard input.
    #[arg(long, global = true, conflicts_with_all = ["key_file", "passphrase_file"])]
    passphrase_stdin: bool,

    /// Read the vault passphrase from the first line of this file.
    #[arg(
        long,
        global = true,
        env = "SECRET_MCP_PASSPHRASE_FILE",
        conflicts_with = "key_file"
    )]
    passphrase_file: Option<PathBuf>,

    /// Act as the holder of this token: requests are then authorized and
    /// audited exactly as a remote caller's (prefer the environment variable:
    /// a flag is visible in the process list).
    #[arg(long, global = true, env = "SECRET_MCP_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Also write the audit trail as JSON lines to this file.
    #[arg(long, global = true, env = "SECRET_MCP_AUDIT_FILE")]
    audit_file: Option<PathBuf>,

    /// Remote mode: run the command on this Secret MCP server over gRPC
    /// (host:port, http://host:port or https://host:port) instead of on the
    /// embedded vault, as the holder of --token.
    #[arg(long, global = true, env = "SECRET_MCP_ADDR")]
    addr: Option<String>,

    /// Remote mode: the CA certificate (PEM) the server's certificate must
    /// chain to; turns TLS on.
    #[arg(long, global = true, env = "SECRET_MCP_TLS_CA")]
    tls_ca: Option<PathBuf>,

    /// Remote mode: a client certificate (PEM) for servers that ask for one
    /// (mTLS); needs --tls-key.
    #[arg(long, global = true, env = "SECRET_MCP_TLS_CERT")]
    tls_cert: Option<PathBuf>,

    /// Remote mode: the client certificate's private key (PEM).
    #[arg(long, global = true, env = "SECRET_MCP_TLS_KEY")]
    tls_key: Option<PathBuf>,

    /// Remote mode: the name the server's certificate must carry (default:
    /// the host of --addr).
    #[arg(long, global = true, env = "SECRET_MCP_TLS_DOMAIN")]
    tls_domain: Option<String>,

    /// Whether --data-dir came from the command line or the environment
    /// (rather than its default).
    #[arg(skip)]
    data_dir_source: Option<ValueSource>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new vault in the data directory.
    Init(InitArgs),
    /// Manage tenant scopes.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Write a new version of a secret (value from --value, --from-file or stdin).
    Put(PutArgs),
    /// Print a secret's value alone, byte for byte (for scripts).
    Get(GetArgs),
    /// List the secrets under a prefix such as `tenant/acme/` or `tenant/acme/db/`.
    List(ListArgs),
    /// Soft-delete versions (the current one by default); `undelete` restores them.
    Delete(VersionsArgs),
    /// Restore soft-deleted versions (the current one by default).
    Undelete(VersionsArgs),
    /// Wipe versions' ciphertexts for good (the current one by default).
    Destroy(VersionsArgs),
    /// Show a secret's metadata; with --max-versions or --custom, change it first.
    Metadata(MetadataArgs),
    /// Issue, list and revoke tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Check and read the audit trail.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Run CMD with a tenant's secrets as environment variables (never
    /// written to disk); exits with CMD's exit code.
    Run(RunArgs),
    /// Serve the vault over gRPC (Secret MCP), configured by a TOML file,
    /// flags and the environment.
    Serve(ServeArgs),
    /// Start a throwaway server on a fresh vault with a demo tenant, and
    /// print the address and tokens to use it (for trying things out only).
    Dev(DevArgs),
    /// Remote mode only: the server's seal state, sealing and unsealing.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Fingerprints of a tenant's secret values, for `tenant-guard scan
    /// --fingerprints`: they recognise the values without containing them.
    #[command(subcommand)]
    Fingerprints(FingerprintsCommand),
    /// Copy a whole vault into an empty store (SQLite to PostgreSQL or
    /// back): ciphertexts, keys, tokens and the audit trail as stored, in
    /// one transaction, then verified by decrypting every version in both.
    /// The root key is copied wrapped, so the same --key-file or passphrase
    /// unlocks the copy. Stop the servers writing to the source first. With
    /// --salvage, recovers what can still be read of a damaged SQLite file.
    Migrate(MigrateArgs),
}

#[derive(Args)]
struct MigrateArgs {
    /// The store holding the vault: sqlite://PATH or postgres://... (prefer
    /// SECRET_MCP_MIGRATE_FROM when the URL holds a password).
    #[arg(long, env = "SECRET_MCP_MIGRATE_FROM", hide_env_values = true)]
    from: String,
    /// The empty store to copy it into (a SQLite file is created if
    /// missing); a store holding anything of a vault is refused (exit 5).
    #[arg(long, env = "SECRET_MCP_MIGRATE_TO", hide_env_values = true)]
    to: String,
    /// The source is a damaged SQLite file (one that no longer opens, say
    /// truncated): copy whatever can still be read, name every item that
    /// cannot be (a lost version is copied as destroyed) and record each in
    /// the copy's audit trail. Exit 7 when anything was lost.
    #[arg(long)]
    salvage: bool,
}

#[derive(Debug, Subcommand)]
enum FingerprintsCommand {
    /// Write the fingerprints of every readable version of every secret of a
    /// tenant (keyed hashes, no value bytes); values shorter than 28 bytes are
    /// listed as skipped. Keep the file as private as a scan report.
    Export {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Write to FILE (created readable by its owner only) instead of
        /// standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The tenant whose secrets are passed.
    #[arg(long)]
    tenant: String,
    /// ENV=NAME: pass secret tenant/SLUG/NAME as the variable ENV (repeat it).
    /// Without --map, every secret of the tenant is passed, as its name in
    /// capitals with every character other than A-Z and 0-9 turned into `_`
    /// (`db/password` becomes DB_PASSWORD).
    #[arg(long = "map", value_name = "ENV=NAME")]
    map: Vec<String>,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// The configuration file (TOML); flags and environment variables
    /// override what it says.
    #[arg(long, env = "SECRET_MCP_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:7443; port 0 picks a free one).
    #[arg(long, env = "SECRET_MCP_LISTEN")]
    listen: Option<String>,
    /// The server's certificate chain (PEM); with --tls-server-key, turns TLS on.
    #[arg(long, env = "SECRET_MCP_TLS_SERVER_CERT")]
    tls_server_cert: Option<PathBuf>,
    /// The server's private key (PEM).
    #[arg(long, env = "SECRET_MCP_TLS_SERVER_KEY")]
    tls_server_key: Option<PathBuf>,
    /// Ask clients for a certificate signed by this CA (PEM): mutual TLS.
    #[arg(long, env = "SECRET_MCP_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Largest request or response message, in bytes (default 4 MiB).
    #[arg(long, env = "SECRET_MCP_MAX_MESSAGE_BYTES")]
    max_message_bytes: Option<usize>,
    /// Time allowed to each request, in seconds (default 30).
    #[arg(long, env = "SECRET_MCP_REQUEST_TIMEOUT_SECS")]
    request_timeout_secs: Option<u64>,
    /// Requests handled at once, over all connections (default 1024).
    #[arg(long, env = "SECRET_MCP_CONCURRENCY_LIMIT")]
    concurrency_limit: Option<usize>,
    /// Log format on stderr: text or json (default text). RUST_LOG filters.
    #[arg(long, env = "SECRET_MCP_LOG_FORMAT")]
    log_format: Option<serve::LogFormat>,
    /// Serve plaintext gRPC on an address other than loopback: tokens and
    /// secrets then cross the network unencrypted. Never in production.
    #[arg(long)]
    insecure_plaintext_non_loopback: bool,
}

#[derive(Debug, Args)]
struct DevArgs {
    /// Loopback address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: String,
    /// Log format on stderr: text or json.
    #[arg(long, default_value = "text")]
    log_format: serve::LogFormat,
}

#[derive(Debug, Subcommand)]
enum ServerCommand {
    /// Print whether the server is sealed, and its version (needs no token).
    Status,
    /// Seal the server: keys leave its memory until `unseal` (operators).
    Seal,
    /// Unseal the server with the vault passphrase, read from
    /// --passphrase-stdin or --passphrase-file.
    Unseal,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue a token; it is printed once, on stdout, and never stored.
    Issue(IssueArgs),
    /// List tokens (never the tokens themselves).
    List {
        /// Only this tenant's tokens.
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token now (the last owner of a tenant cannot be revoked).
    Revoke {
        /// Token id (tok_...).
        id: String,
    },
}

#[derive(Debug, Args)]
struct IssueArgs {
    /// Tenant the token is bound to.
    #[arg(
        long,
        required_unless_present = "operator",
        conflicts_with = "operator"
    )]
    tenant: Option<String>,
    /// Issue an operator token instead (manages tenants and tokens).
    #[arg(long)]
    operator: bool,
    /// Role preset: owner, admin, manager, user or viewer (default user).
    #[arg(long, conflicts_with = "policy_file")]
    role: Option<String>,
    /// A custom policy (JSON: {"rules":[{"path":"db/**","capabilities":["read"]}]}).
    #[arg(long)]
    policy_file: Option<PathBuf>,
    /// Lifetime, e.g. 30m, 24h, 7d (default: until revoked).
    #[arg(long)]
    ttl: Option<String>,
    /// Free text shown in listings.
    #[arg(long, default_value = "")]
    description: String,
    /// Operator tokens: tenants whose secrets it may read (comma-separated).
    #[arg(long, value_delimiter = ',', requires = "operator")]
    grant_read: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the hash chain; names the first altered, missing or reordered record.
    Verify {
        /// Verify this JSON-lines audit file instead of the vault's trail.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Print the last records.
    Tail {
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct InitArgs {
    /// Argon2id memory cost in KiB (passphrase vaults).
    #[arg(long, default_value_t = 64 * 1024)]
    kdf_memory_kib: u32,
    /// Argon2id passes (passphrase vaults).
    #[arg(long, default_value_t = 3)]
    kdf_iterations: u32,
}

#[derive(Debug, Subcommand)]
enum TenantCommand {
    /// Create a tenant scope (idempotent: an existing one is reported, unchanged).
    Create {
        /// Tenant slug (DNS label).
        slug: String,
        /// enterprise or freelance.
        #[arg(long, default_value = "enterprise")]
        kind: String,
    },
    /// List tenant scopes.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a tenant's secret count, stored bytes, creation time and key version.
    Status {
        /// Tenant slug.
        slug: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete a tenant and crypto-shred all its secrets (asks for --yes).
    Delete {
        /// Tenant slug.
        slug: String,
        /// Confirm the irreversible deletion.
        #[arg(long)]
        yes: bool,
    },
    /// Show a tenant's limits; with options, change its plan or override them.
    Limits {
        /// Tenant slug.
        slug: String,
        /// Move to this plan (starter, pro, enterprise).
        #[arg(long)]
        plan: Option<String>,
        /// Override the number of secrets.
        #[arg(long)]
        max_secrets: Option<u64>,
        /// Override the stored bytes.
        #[arg(long)]
        max_bytes: Option<u64>,
        /// Override the number of live tokens.
        #[arg(long)]
        max_tokens: Option<u64>,
        /// Override each token's requests per second.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Give a tenant a new data key; --rewrap re-encrypts older versions too.
    RotateKey {
        /// Tenant slug.
        slug: String,
        /// Re-encrypt every older version and shred the unused keys.
        #[arg(long)]
        rewrap: bool,
    },
}

#[derive(Args)]
struct PutArgs {
    /// Secret path: tenant/SLUG/NAME
    path: String,
    /// The value (visible in the process list and shell history: prefer stdin).
    #[arg(long, conflicts_with = "from_file")]
    value: Option<String>,
    /// Read the value from this file, byte for byte.
    #[arg(long)]
    from_file: Option<PathBuf>,
    /// Check-and-set: 0 writes only a new secret, N only if the current version is N.
    #[arg(long)]
    cas: Option<u64>,
}

#[derive(Debug, Args)]
struct GetArgs {
    /// Secret path: tenant/SLUG/NAME
    path: String,
    /// A given version instead of the current one.
    #[arg(long)]
    version: Option<u64>,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Prefix: tenant/SLUG/ followed by an optional name prefix.
    prefix: String,
    /// Start after this name (for paging by hand).
    #[arg(long)]
    after: Option<String>,
    /// At most this many names (all of them by default).
    #[arg(long)]
    limit: Option<usize>,
}

#[derive(Debug, Args)]
struct VersionsArgs {
    /// Secret path: tenant/SLUG/NAME
    path: String,
    /// Versions, comma-separated (default: the current one).
    #[arg(long, value_delimiter = ',')]
    versions: Vec<u64>,
}

#[derive(Debug, Args)]
struct MetadataArgs {
    /// Secret path: tenant/SLUG/NAME
    path: String,
    /// Keep at most this many versions (1 to 1000); older ones are pruned.
    #[arg(long)]
    max_versions: Option<u32>,
    /// Replace the custom metadata with these KEY=VALUE pairs (not encrypted: no secrets).
    #[arg(long = "custom", value_name = "KEY=VALUE")]
    custom: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    cli.data_dir_source = matches.value_source("data_dir");
    let mut stdout = std::io::stdout().lock();
    match commands::run(cli, &mut stdout).and_then(|code| {
        stdout
            .flush()
            .map_err(|e| CmdError::new(ExitKind::Failure, format!("writing output: {e}")))?;
        Ok(code)
    }) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            drop(stdout);
            let _ = writeln!(std::io::stderr(), "secret-mcp: error: {e}");
            ExitCode::from(e.kind as u8)
        }
    }
}

/// Never shows the token.
impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field("data_dir", &self.data_dir)
            .field("key_file", &self.key_file)
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

/// Never shows a database password.
impl std::fmt::Debug for MigrateArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |url: &str| {
            local::Storage::parse(url)
                .map_or_else(|_| "[not a storage URL]".to_owned(), |s| s.describe())
        };
        f.debug_struct("MigrateArgs")
            .field("from", &shown(&self.from))
            .field("to", &shown(&self.to))
            .finish()
    }
}

/// Never shows the value.
impl std::fmt::Debug for PutArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PutArgs")
            .field("path", &self.path)
            .field("value", &self.value.as_ref().map(|_| "[REDACTED]"))
            .field("from_file", &self.from_file)
            .field("cas", &self.cas)
            .finish()
    }
}

impl Cli {
    /// Remote mode's settings, when --addr is set.
    fn remote(&self) -> Option<RemoteArgs> {
        self.addr.as_ref().map(|addr| RemoteArgs {
            addr: addr.clone(),
            token: self.token.as_deref().map(tenant_vault::Secret::from),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_domain: self.tls_domain.clone(),
        })
    }

    /// True when --data-dir was given on the command line or in the
    /// environment, not defaulted.
    fn data_dir_given(&self) -> bool {
        matches!(
            self.data_dir_source,
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    }

    fn unlock(&self) -> UnlockArgs {
        UnlockArgs {
            key_file: self.key_file.clone(),
            passphrase_stdin: self.passphrase_stdin,
            passphrase_file: self.passphrase_file.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn debug_never_shows_the_token_or_a_value() {
        let cli = Cli::try_parse_from([
            "secret-mcp",
            "--token",
            "smcpt_not-a-real-token",
            "put",
            "tenant/acme/x",
            "--value",
            "hunter2-value",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("not-a-real-token"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("tenant/acme/x"), "{shown}");
    }

    #[test]
    fn debug_never_shows_a_database_password() {
        let cli = Cli::try_parse_from([
            "secret-mcp",
            "migrate",
            "--from",
            "sqlite:///var/lib/v.db",
            "--to",
            "postgres://vault:hunter2@db:5432/vault?sslmode=require",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://db:5432/vault"), "{shown}");
    }
}
