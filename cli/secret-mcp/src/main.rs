//! `secret-mcp`: the Tenant Vault command line.
//!
//! `main` parses the command line, dispatches to `commands`, and maps errors
//! to exit codes. Commands are written against the `Backend` trait, so they
//! work the same on the embedded vault and, in remote mode, over gRPC.

mod backend;
mod commands;
mod local;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::backend::{CmdError, ExitKind};
use crate::local::UnlockArgs;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure not listed below
  2  bad command line or argument
  3  tenant, secret or version not found (or deleted / destroyed)
  4  refused: wrong passphrase, key file or token, permission denied, sealed
  5  conflict: check-and-set mismatch, vault already initialized
  6  limit: value too large, quota or rate limit reached
  7  stored data or the audit trail failed its integrity check";

/// Tenant Vault: tenant-scoped, encrypted, versioned secrets.
#[derive(Debug, Parser)]
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

#[derive(Debug, Args)]
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
    let cli = Cli::parse();
    let mut stdout = std::io::stdout().lock();
    match commands::run(cli, &mut stdout).and_then(|()| {
        stdout
            .flush()
            .map_err(|e| CmdError::new(ExitKind::Failure, format!("writing output: {e}")))
    }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            drop(stdout);
            let _ = writeln!(std::io::stderr(), "secret-mcp: error: {e}");
            ExitCode::from(e.kind as u8)
        }
    }
}

impl Cli {
    fn unlock(&self) -> UnlockArgs {
        UnlockArgs {
            key_file: self.key_file.clone(),
            passphrase_stdin: self.passphrase_stdin,
            passphrase_file: self.passphrase_file.clone(),
        }
    }
}
