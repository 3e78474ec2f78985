//! The commands: arguments in, a [`Backend`] call, text out.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};

use serde_json::json;
use tenant_vault::{
    KdfParams, LimitChange, ListPrefix, MetadataUpdate, Policy, Role, ScopeInfo, ScopeKind, Secret,
    SecretPath, Slug, TokenSpec, audit_record_json,
};
use zeroize::Zeroizing;

use crate::backend::{Backend, CmdError, CmdResult, ExitKind};
use crate::local::{self, Local};
use crate::remote::Remote;
use crate::{
    AuditCommand, Cli, Command, FingerprintsCommand, IssueArgs, MetadataArgs, ServerCommand,
    TenantCommand, TokenCommand,
};

fn out_err(e: std::io::Error) -> CmdError {
    CmdError::new(ExitKind::Failure, format!("writing output: {e}"))
}

macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        writeln!($out, $($arg)*).map_err(out_err)?
    };
}

/// Runs one command, writing its output to `out`; returns the exit code
/// (0 but for `run`, which passes its program's code through).
pub(crate) fn run(cli: Cli, out: &mut dyn Write) -> CmdResult<u8> {
    let unlock = cli.unlock();
    let remote = cli.remote();
    match &cli.command {
        Command::Serve(args) => {
            crate::serve::serve(&cli, args, out)?;
            return Ok(0);
        }
        Command::Dev(args) => {
            crate::serve::dev(&cli, args, out)?;
            return Ok(0);
        }
        Command::Init(args) => {
            if remote.is_some() {
                return Err(CmdError::usage(
                    "init creates a vault on this machine and has no remote form: unset --addr \
                     / SECRET_MCP_ADDR, or run it where the server keeps its data",
                ));
            }
            let kdf = KdfParams {
                m_cost_kib: args.kdf_memory_kib,
                t_cost: args.kdf_iterations,
                p_cost: 1,
            };
            let storage = local::Storage::resolve(&cli.data_dir, cli.storage.as_deref())?;
            say!(
                out,
                "{}",
                local::init(&cli.data_dir, &storage, &unlock, kdf)?
            );
            return Ok(0);
        }
        Command::Migrate(args) => {
            if remote.is_some() {
                return Err(CmdError::usage(
                    "migrate copies a vault between stores this machine reaches and has no \
                     remote form: unset --addr / SECRET_MCP_ADDR",
                ));
            }
            crate::migrate::migrate(&cli.data_dir, args, &unlock, out)?;
            return Ok(0);
        }
        Command::Audit(AuditCommand::Verify { file: Some(f) }) => {
            audit_verified(
                tenant_vault::verify_audit_file(f)?.map_err(|p| p.to_string()),
                out,
            )?;
            return Ok(0);
        }
        _ => {}
    }
    let stdin_taken = unlock.uses_stdin();
    if let Some(r) = &remote {
        let backend = Remote::connect(r)?;
        if let Command::Server(s) = cli.command {
            return server(&backend, s, &unlock, out).map(|()| 0);
        }
        return dispatch(&backend, cli.command, stdin_taken, out);
    }
    if let Command::Server(_) = cli.command {
        return Err(CmdError::usage(
            "`server` talks to a running server: give its address with --addr or \
             SECRET_MCP_ADDR",
        ));
    }
    let storage = local::Storage::resolve(&cli.data_dir, cli.storage.as_deref())?;
    let backend = Local::open(
        &cli.data_dir,
        &storage,
        &unlock,
        cli.token.as_deref(),
        cli.audit_file.clone(),
    )?;
    dispatch(&backend, cli.command, stdin_taken, out)
}

/// `secret-mcp server status|seal|unseal` (remote mode).
fn server(
    r: &Remote,
    s: ServerCommand,
    unlock: &local::UnlockArgs,
    out: &mut dyn Write,
) -> CmdResult<()> {
    match s {
        ServerCommand::Status => {
            let (sealed, version) = r.status()?;
            say!(out, "sealed:  {sealed}");
            say!(out, "version: {version}");
        }
        ServerCommand::Seal => {
            r.seal()?;
            say!(out, "sealed");
        }
        ServerCommand::Unseal => {
            let passphrase = unlock.passphrase()?.ok_or_else(|| {
                CmdError::usage("unseal needs --passphrase-stdin or --passphrase-file")
            })?;
            r.unseal(&passphrase)?;
            say!(out, "unsealed");
        }
    }
    Ok(())
}

/// Runs a command other than `init`, `serve`, `dev` and `server` against any
/// backend; returns the exit code.
fn dispatch(
    b: &dyn Backend,
    command: Command,
    stdin_taken: bool,
    out: &mut dyn Write,
) -> CmdResult<u8> {
    if let Command::Run(a) = command {
        return crate::run::run(b, a);
    }
    commands(b, command, stdin_taken, out).map(|()| 0)
}

fn commands(
    b: &dyn Backend,
    command: Command,
    stdin_taken: bool,
    out: &mut dyn Write,
) -> CmdResult<()> {
    match command {
        Command::Init(_)
        | Command::Run(_)
        | Command::Serve(_)
        | Command::Dev(_)
        | Command::Migrate(_)
        | Command::Server(_) => {
            unreachable!("handled before")
        }
        Command::Tenant(t) => tenant(b, t, out),
        Command::Put(a) => {
            let path = SecretPath::parse(&a.path)?;
            let value = read_value(a.value, a.from_file, stdin_taken)?;
            let v = b.put(&path, &value, a.cas)?;
            say!(out, "wrote {path} version {v}");
            Ok(())
        }
        Command::Get(a) => {
            let path = SecretPath::parse(&a.path)?;
            let s = b.get(&path, a.version)?;
            out.write_all(s.value.expose()).map_err(out_err)?;
            if std::io::stdout().is_terminal() {
                say!(out, "");
            }
            Ok(())
        }
        Command::List(a) => {
            let prefix = ListPrefix::parse(&a.prefix)?;
            let mut after = a.after;
            let mut left = a.limit.unwrap_or(usize::MAX);
            while left > 0 {
                let page = b.list(
                    &prefix,
                    after.as_deref(),
                    left.min(tenant_vault::MAX_LIST_PAGE),
                )?;
                left -= page.paths.len();
                for p in &page.paths {
                    say!(out, "{p}");
                }
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            Ok(())
        }
        Command::Delete(a) => versions_cmd(
            b.delete(&SecretPath::parse(&a.path)?, &a.versions)?,
            "deleted",
            &a.path,
            out,
        ),
        Command::Undelete(a) => versions_cmd(
            b.undelete(&SecretPath::parse(&a.path)?, &a.versions)?,
            "undeleted",
            &a.path,
            out,
        ),
        Command::Destroy(a) => versions_cmd(
            b.destroy(&SecretPath::parse(&a.path)?, &a.versions)?,
            "destroyed",
            &a.path,
            out,
        ),
        Command::Metadata(a) => metadata(b, a, out),
        Command::Fingerprints(FingerprintsCommand::Export { tenant, output }) => {
            crate::fingerprints::export(b, &tenant, output.as_deref(), out, &mut std::io::stderr())
        }
        Command::Token(t) => token(b, t, out),
        Command::Audit(AuditCommand::Verify { .. }) => audit_verified(b.audit_verify()?, out),
        Command::Audit(AuditCommand::Tail { lines, json }) => {
            for r in b.audit_tail(lines)? {
                if json {
                    say!(out, "{}", audit_record_json(&r));
                } else {
                    let e = &r.entry;
                    let version = e.version.map(|v| format!(" v{v}")).unwrap_or_default();
                    say!(
                        out,
                        "{:>6} {} {} {} {} {}{} {}",
                        r.seq,
                        e.time.to_rfc3339(),
                        e.principal,
                        e.operation,
                        if e.tenant.is_empty() { "-" } else { &e.tenant },
                        if e.path.is_empty() { "-" } else { &e.path },
                        version,
                        e.outcome
                    );
                }
            }
            Ok(())
        }
    }
}

fn audit_verified(r: Result<u64, String>, out: &mut dyn Write) -> CmdResult<()> {
    match r {
        Ok(n) => {
            say!(out, "audit trail intact: {n} records");
            Ok(())
        }
        Err(problem) => Err(CmdError::new(
            ExitKind::Integrity,
            format!("audit trail broken: {problem}"),
        )),
    }
}

/// Parses a lifetime such as `90s`, `30m`, `24h` or `7d`.
fn parse_ttl(s: &str) -> CmdResult<std::time::Duration> {
    let bad = || {
        CmdError::usage(format!(
            "--ttl takes a number and a unit (s, m, h, d), e.g. 24h, not `{s}`"
        ))
    };
    let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if n == 0 {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(
        n.checked_mul(secs).ok_or_else(bad)?,
    ))
}

fn token(b: &dyn Backend, t: TokenCommand, out: &mut dyn Write) -> CmdResult<()> {
    match t {
        TokenCommand::Issue(a) => issue(b, a, out),
        TokenCommand::List { tenant, json } => {
            let tenant = tenant.map(|s| Slug::parse(&s)).transpose()?;
            let tokens = b.list_tokens(tenant.as_ref())?;
            let ts = |t: Option<tenant_vault::Timestamp>| t.map(|t| t.to_rfc3339());
            if json {
                let v: Vec<_> = tokens
                    .iter()
                    .map(|t| {
                        json!({
                            "id": t.id,
                            "kind": t.kind,
                            "tenant": t.tenant.as_ref().map(Slug::as_str),
                            "role": t.role,
                            "description": t.description,
                            "created_at": t.created_at.to_rfc3339(),
                            "expires_at": ts(t.expires_at),
                            "revoked_at": ts(t.revoked_at),
                        })
                    })
                    .collect();
                say!(out, "{}", to_text(&json!(v))?);
            } else {
                for t in &tokens {
                    let state = match (t.revoked_at, t.expires_at) {
                        (Some(r), _) => format!("revoked {}", r.to_rfc3339()),
                        (None, Some(e)) => format!("expires {}", e.to_rfc3339()),
                        (None, None) => "no expiry".into(),
                    };
                    say!(
                        out,
                        "{}\t{}\t{}\t{}\t{}",
                        t.id,
                        t.tenant.as_ref().map_or("-", Slug::as_str),
                        t.role,
                        state,
                        t.description
                    );
                }
            }
            Ok(())
        }
        TokenCommand::Revoke { id } => {
            b.revoke_token(&id)?;
            say!(out, "revoked {id}");
            Ok(())
        }
    }
}

fn issue(b: &dyn Backend, a: IssueArgs, out: &mut dyn Write) -> CmdResult<()> {
    let role = a
        .role
        .as_deref()
        .map(|r| {
            Role::parse(r).ok_or_else(|| {
                CmdError::usage(format!(
                    "--role is owner, admin, manager, user or viewer, not `{r}`"
                ))
            })
        })
        .transpose()?;
    let policy = a
        .policy_file
        .as_ref()
        .map(|f| {
            let text = std::fs::read_to_string(f)
                .map_err(|e| CmdError::usage(format!("cannot read {}: {e}", f.display())))?;
            Ok::<_, CmdError>(Policy::from_json(&text)?)
        })
        .transpose()?;
    if a.operator && (role.is_some() || policy.is_some()) {
        return Err(CmdError::usage(
            "operator tokens take --grant-read, not --role or --policy-file",
        ));
    }
    let spec = TokenSpec {
        tenant: a.tenant.map(|s| Slug::parse(&s)).transpose()?,
        role,
        policy,
        ttl: a.ttl.as_deref().map(parse_ttl).transpose()?,
        description: a.description,
        read_grants: a
            .grant_read
            .iter()
            .map(|s| Slug::parse(s))
            .collect::<Result<_, _>>()?,
    };
    let issued = b.issue_token(&spec)?;
    // The token goes to stdout alone, once; what it is goes to stderr.
    out.write_all(issued.token.expose()).map_err(out_err)?;
    say!(out, "");
    let expiry = issued.expires_at.map_or_else(
        || "no expiry".to_owned(),
        |t| format!("expires {}", t.to_rfc3339()),
    );
    let _ = writeln!(
        std::io::stderr(),
        "issued {} ({expiry}); this is the only time the token is shown",
        issued.id
    );
    Ok(())
}

fn versions_cmd(vs: Vec<u64>, verb: &str, path: &str, out: &mut dyn Write) -> CmdResult<()> {
    let list: Vec<String> = vs.iter().map(u64::to_string).collect();
    let noun = if vs.len() == 1 { "version" } else { "versions" };
    say!(out, "{verb} {path} {noun} {}", list.join(","));
    Ok(())
}

fn read_value(
    value: Option<String>,
    from_file: Option<std::path::PathBuf>,
    stdin_taken: bool,
) -> CmdResult<Secret> {
    if let Some(v) = value {
        return Ok(Secret::from(v));
    }
    if let Some(f) = from_file {
        let bytes = std::fs::read(&f)
            .map_err(|e| CmdError::usage(format!("cannot read {}: {e}", f.display())))?;
        return Ok(Secret::new(bytes));
    }
    if stdin_taken {
        return Err(CmdError::usage(
            "standard input carries the passphrase: give the value with --value or --from-file",
        ));
    }
    let mut buf = Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .map_err(|e| CmdError::usage(format!("cannot read the value from standard input: {e}")))?;
    Ok(Secret::from(buf))
}

fn scope_json(s: &ScopeInfo) -> serde_json::Value {
    json!({
        "slug": s.slug.as_str(),
        "kind": s.kind.as_str(),
        "created_at": s.created_at.to_rfc3339(),
        "key_version": s.key_version,
    })
}

fn to_text(v: &serde_json::Value) -> CmdResult<String> {
    serde_json::to_string_pretty(v).map_err(|e| CmdError::new(ExitKind::Failure, e.to_string()))
}

fn tenant(b: &dyn Backend, t: TenantCommand, out: &mut dyn Write) -> CmdResult<()> {
    match t {
        TenantCommand::Create { slug, kind } => {
            let slug = Slug::parse(&slug)?;
            let kind = ScopeKind::parse(&kind).ok_or_else(|| {
                CmdError::usage(format!(
                    "--kind is `enterprise` or `freelance`, not `{kind}`"
                ))
            })?;
            let r = b.create_scope(&slug, kind)?;
            if r.created {
                say!(out, "created tenant {slug} ({})", r.scope.kind.as_str());
            } else {
                say!(
                    out,
                    "tenant {slug} already exists ({}), unchanged",
                    r.scope.kind.as_str()
                );
            }
        }
        TenantCommand::List { json } => {
            let scopes = b.list_scopes()?;
            if json {
                let v: Vec<_> = scopes.iter().map(scope_json).collect();
                say!(out, "{}", to_text(&json!(v))?);
            } else {
                for s in &scopes {
                    say!(
                        out,
                        "{}\t{}\t{}",
                        s.slug,
                        s.kind.as_str(),
                        s.created_at.to_rfc3339()
                    );
                }
            }
        }
        TenantCommand::Status { slug, json } => {
            let st = b.scope_status(&Slug::parse(&slug)?)?;
            if json {
                let mut v = scope_json(&st.scope);
                v["secrets"] = json!(st.secrets);
                v["stored_bytes"] = json!(st.stored_bytes);
                say!(out, "{}", to_text(&v)?);
            } else {
                say!(out, "tenant:       {}", st.scope.slug);
                say!(out, "kind:         {}", st.scope.kind.as_str());
                say!(out, "created at:   {}", st.scope.created_at.to_rfc3339());
                say!(out, "secrets:      {}", st.secrets);
                say!(out, "stored bytes: {}", st.stored_bytes);
                say!(out, "key version:  {}", st.scope.key_version);
            }
        }
        TenantCommand::Delete { slug, yes } => {
            let slug = Slug::parse(&slug)?;
            if !yes {
                return Err(CmdError::usage(format!(
                    "deleting tenant {slug} destroys all its secrets for good: add --yes to confirm"
                )));
            }
            b.delete_scope(&slug)?;
            say!(out, "deleted tenant {slug} (keys and secrets shredded)");
        }
        TenantCommand::Limits {
            slug,
            plan,
            max_secrets,
            max_bytes,
            max_tokens,
            rate,
        } => {
            let slug = Slug::parse(&slug)?;
            let change = LimitChange {
                plan,
                max_secrets,
                max_bytes,
                max_tokens,
                rate_per_sec: rate,
            };
            if change != LimitChange::default() {
                b.set_limits(&slug, &change)?;
            }
            let l = b.limits(&slug)?;
            say!(out, "plan:          {}", l.plan);
            say!(out, "max secrets:   {}", l.max_secrets);
            say!(out, "max bytes:     {}", l.max_bytes);
            say!(out, "max tokens:    {}", l.max_tokens);
            say!(out, "rate per sec:  {}", l.rate_per_sec);
            say!(out, "burst:         {}", l.burst);
        }
        TenantCommand::RotateKey { slug, rewrap } => {
            let slug = Slug::parse(&slug)?;
            let (v, moved) = b.rotate_key(&slug, rewrap)?;
            say!(out, "tenant {slug} now writes with data key {v}");
            if rewrap {
                say!(out, "re-encrypted {moved} older versions");
            }
        }
    }
    Ok(())
}

fn metadata(b: &dyn Backend, a: MetadataArgs, out: &mut dyn Write) -> CmdResult<()> {
    let path = SecretPath::parse(&a.path)?;
    let custom = if a.custom.is_empty() {
        None
    } else {
        let mut m = BTreeMap::new();
        for kv in &a.custom {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| CmdError::usage(format!("--custom takes KEY=VALUE, not `{kv}`")))?;
            m.insert(k.to_owned(), v.to_owned());
        }
        Some(m)
    };
    if a.max_versions.is_some() || custom.is_some() {
        b.update_metadata(
            &path,
            &MetadataUpdate {
                max_versions: a.max_versions,
                custom,
            },
        )?;
    }
    let md = b.metadata(&path)?;
    if a.json {
        let versions: Vec<_> = md
            .versions
            .iter()
            .map(|v| {
                json!({
                    "version": v.version,
                    "created_at": v.created_at.to_rfc3339(),
                    "deleted_at": v.deleted_at.map(|t| t.to_rfc3339()),
                    "destroyed": v.destroyed,
                })
            })
            .collect();
        let v = json!({
            "path": md.path.to_string(),
            "current_version": md.current_version,
            "oldest_version": md.oldest_version,
            "max_versions": md.max_versions,
            "created_at": md.created_at.to_rfc3339(),
            "updated_at": md.updated_at.to_rfc3339(),
            "custom_metadata": md.custom,
            "versions": versions,
        });
        say!(out, "{}", to_text(&v)?);
    } else {
        say!(out, "path:            {}", md.path);
        say!(out, "current version: {}", md.current_version);
        say!(out, "oldest version:  {}", md.oldest_version);
        say!(out, "max versions:    {}", md.max_versions);
        say!(out, "created at:      {}", md.created_at.to_rfc3339());
        say!(out, "updated at:      {}", md.updated_at.to_rfc3339());
        for (k, v) in &md.custom {
            say!(out, "custom:          {k}={v}");
        }
        say!(out, "versions:");
        for v in &md.versions {
            let state = if v.destroyed {
                "destroyed".to_owned()
            } else if let Some(t) = v.deleted_at {
                format!("deleted at {}", t.to_rfc3339())
            } else {
                "live".to_owned()
            };
            say!(
                out,
                "  {:>4}  {}  {state}",
                v.version,
                v.created_at.to_rfc3339()
            );
        }
    }
    Ok(())
}
