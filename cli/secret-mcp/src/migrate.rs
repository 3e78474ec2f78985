//! `secret-mcp migrate --from URL --to URL`: copies a whole vault into an
//! empty store and verifies the copy.
//!
//! 1. The source must hold a vault, and the unlock material must open it:
//!    checked before anything is written (a wrong key file changes nothing).
//! 2. The target must be empty (no root key, scope, token or audit record):
//!    refused with exit code 5 otherwise, naming the target (never a
//!    password).
//! 3. The source's export (one read snapshot) streams through a bounded
//!    channel into the target's import (one transaction: all or nothing).
//!    Ciphertexts, wrapped keys, token hashes and audit records are copied
//!    as stored; nothing is decrypted or re-encrypted on the way.
//! 4. Verification, after the commit: the target's export must match what
//!    was streamed (a SHA-256 over every item); then both are opened as
//!    vaults with the same unlock material and, for every tenant, secret and
//!    version, metadata (deleted / destroyed states included) must match and
//!    every version that is not destroyed must decrypt in both to the same
//!    SHA-256 digest (values are never printed or kept); finally the
//!    target's audit chain must verify. A mismatch exits with code 7.
//!
//! With `--salvage` the source is a damaged SQLite file that no longer opens
//! as a vault: [`SqliteStore::salvage`] reads every row it still can, and
//! steps 1 and 4 change. The unlock material is checked against the
//! salvaged root key record before the target is written; verification
//! checks the target against what was streamed, decrypts every version the
//! copy holds (there is no source vault to compare with) and verifies the
//! copy's audit chain. Each item lost is then recorded in that chain (one
//! `salvage` record naming it, outcome `lost`) and listed; the command exits
//! with code 7 when anything was lost.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tenant_vault::{
    AuditEntry, DumpItem, Error, ImportCount, ListPrefix, Salvaged, SqliteStore, Store, Timestamp,
    Unlock, Vault, VaultOptions,
};

use crate::MigrateArgs;
use crate::backend::{CmdError, CmdResult, ExitKind};
use crate::local::{Storage, UnlockArgs};

/// Items in flight between the export and the import.
const CHANNEL: usize = 1024;

/// What the value-level verification counted.
#[derive(Debug, Default)]
struct Verified {
    scopes: u64,
    secrets: u64,
    versions: u64,
    destroyed: u64,
    deleted: u64,
    audit_records: u64,
}

/// A running SHA-256 over dump items (their `Debug` form: every field, in
/// a fixed order, the same for both stores in this process).
struct ItemDigest {
    hash: Sha256,
    items: u64,
}

impl ItemDigest {
    fn new() -> Self {
        ItemDigest {
            hash: Sha256::new(),
            items: 0,
        }
    }

    fn add(&mut self, item: &DumpItem) {
        let text = format!("{item:?}");
        self.hash.update((text.len() as u64).to_le_bytes());
        self.hash.update(text.as_bytes());
        self.items += 1;
    }

    fn finish(self) -> ([u8; 32], u64) {
        (self.hash.finalize().into(), self.items)
    }
}

fn integrity(message: impl Into<String>) -> CmdError {
    CmdError::new(ExitKind::Integrity, message)
}

/// Adds which store an error concerns to its message, keeping its code.
fn about(place: &str) -> impl FnOnce(Error) -> CmdError + '_ {
    move |e| {
        let e = CmdError::from(e);
        CmdError::new(e.kind, format!("{place}: {}", e.message))
    }
}

pub(crate) fn migrate(
    data_dir: &Path,
    args: &MigrateArgs,
    unlock: &UnlockArgs,
    out: &mut dyn Write,
) -> CmdResult<()> {
    let started = Instant::now();
    let parse = |flag: &str, url: &str| {
        Storage::parse(url).map_err(|e| CmdError::usage(e.message.replacen("--storage", flag, 1)))
    };
    let from = parse("--from", &args.from)?;
    let to = parse("--to", &args.to)?;
    let (from_name, to_name) = (from.describe(), to.describe());
    if same_store(&from, &to) {
        return Err(CmdError::usage(format!(
            "--from and --to name the same store ({from_name})"
        )));
    }
    if args.salvage {
        return salvage(data_dir, &from, &to, unlock, out);
    }

    // 1. The source holds a vault that the unlock material opens.
    let source = open_source(&from)?;
    let the_unlock = unlock.resolve(data_dir)?;
    let source_vault = Vault::open(open_source(&from)?, &the_unlock, VaultOptions::default())
        .map_err(about(&from_name))?;

    // 2. The target is empty.
    let created = match &to {
        Storage::Sqlite(p) => !p.exists(),
        Storage::Postgres(_) => false,
    };
    let target = to
        .open()
        .map_err(|e| CmdError::new(e.kind, format!("{to_name}: {e}")))?;
    let result = copy_and_verify(
        &source,
        &target,
        &to,
        &source_vault,
        &the_unlock,
        &from_name,
        &to_name,
    );
    drop(target);
    let (count, verified) = match result {
        Ok(r) => r,
        Err((e, written)) => {
            if created && !written {
                // Nothing was imported: remove the file this command created.
                remove_sqlite(&to);
            }
            return Err(e);
        }
    };

    let mut lines = summary(
        format!("migrated {from_name} to {to_name}"),
        &verified,
        &count,
        "decrypted in both and matched",
        format!("{} (the copy's chain verifies)", verified.audit_records),
        started,
    );
    lines.push(format!("  plans:          {}", count.plans));
    write_lines(out, &lines)
}

/// The report's lines common to a migration and a salvage.
fn summary(
    title: String,
    verified: &Verified,
    count: &ImportCount,
    decrypted: &str,
    audit: String,
    started: Instant,
) -> Vec<String> {
    vec![
        title,
        format!("  tenants:        {}", verified.scopes),
        format!("  secrets:        {}", verified.secrets),
        format!(
            "  versions:       {} {decrypted} ({} of them deleted), {} destroyed",
            verified.versions, verified.deleted, verified.destroyed
        ),
        format!("  data keys:      {}", count.data_keys),
        format!("  tokens:         {}", count.tokens),
        format!("  audit records:  {audit}"),
        format!("  time:           {:.2} s", started.elapsed().as_secs_f64()),
    ]
}

fn write_lines(out: &mut dyn Write, lines: &[String]) -> CmdResult<()> {
    for text in lines {
        writeln!(out, "{text}")
            .map_err(|e| CmdError::new(ExitKind::Failure, format!("writing output: {e}")))?;
    }
    Ok(())
}

/// `migrate --salvage`: copies what can still be read of a damaged SQLite
/// file into an empty store (see the module's documentation).
fn salvage(
    data_dir: &Path,
    from: &Storage,
    to: &Storage,
    unlock: &UnlockArgs,
    out: &mut dyn Write,
) -> CmdResult<()> {
    let started = Instant::now();
    let (from_name, to_name) = (from.describe(), to.describe());
    let Storage::Sqlite(file) = from else {
        return Err(CmdError::usage(
            "--salvage reads a damaged SQLite file: --from must be sqlite://PATH",
        ));
    };
    if !file.exists() {
        return Err(CmdError::new(
            ExitKind::NotFound,
            format!("no vault in {from_name} (the source of the salvage)"),
        ));
    }
    let the_unlock = unlock.resolve(data_dir)?;
    check_unlock(file, &the_unlock).map_err(about(&from_name))?;

    let created = match to {
        Storage::Sqlite(p) => !p.exists(),
        Storage::Postgres(_) => false,
    };
    let target = to
        .open()
        .map_err(|e| CmdError::new(e.kind, format!("{to_name}: {e}")))?;
    let result = salvage_and_verify(file, &target, to, &the_unlock, &from_name, &to_name);
    drop(target);
    let (count, verified, report) = match result {
        Ok(r) => r,
        Err((e, written)) => {
            if created && !written {
                remove_sqlite(to);
            }
            return Err(e);
        }
    };

    let mut lines = summary(
        format!("salvaged {from_name} into {to_name}"),
        &verified,
        &count,
        "decrypted in the copy",
        format!(
            "{} copied, {} added for the items lost (the copy's chain verifies)",
            report.audit_records,
            report.lost.len()
        ),
        started,
    );
    if report.lost.is_empty() {
        lines.push("  lost:           nothing".into());
        return write_lines(out, &lines);
    }
    lines.push(format!("  lost:           {}", report.lost.len()));
    for l in &report.lost {
        lines.push(format!("    {}: {}", l.item, l.reason));
    }
    write_lines(out, &lines)?;
    Err(integrity(format!(
        "{from_name} is damaged: {} item(s) could not be salvaged (listed above); {to_name} \
         holds everything else",
        report.lost.len()
    )))
}

/// Removes a SQLite target this command created (nothing was committed).
fn remove_sqlite(to: &Storage) {
    if let Storage::Sqlite(p) = to {
        for suffix in ["", "-wal", "-shm"] {
            let mut f = p.clone().into_os_string();
            f.push(suffix);
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Checks that `unlock` opens the vault in the damaged `file`, from its
/// root key record alone (copied into a scratch store), before anything is
/// written anywhere.
fn check_unlock(file: &Path, unlock: &Unlock) -> tenant_vault::Result<()> {
    // Owner-only: the scratch store holds the wrapped root key, as
    // sensitive as the vault file itself.
    let scratch = tempfile::Builder::new()
        .prefix("secret-mcp-salvage-")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .map_err(|e| Error::storage("creating a scratch store", e))?;
    let store = SqliteStore::open(scratch.path().join("root.db"))?;
    let mut root = None;
    // Stops the salvage at its first item, the root key record.
    let stop = "stop after the root key record";
    let r = SqliteStore::salvage(file, &mut |item| match item {
        DumpItem::Root(r) => {
            root = Some(r);
            Err(Error::InvalidArgument(stop.into()))
        }
        _ => Err(Error::InvalidArgument(stop.into())),
    });
    match r {
        Err(Error::InvalidArgument(m)) if m == stop => {}
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let root = root.ok_or_else(|| Error::storage("salvaging the vault", "no root key record"))?;
    store.import(&mut std::iter::once(Ok(DumpItem::Root(root))))?;
    Vault::open(store, unlock, VaultOptions::default()).map(drop)
}

/// Salvage into import, verification, then the lost items' audit records.
fn salvage_and_verify(
    file: &Path,
    target: &dyn Store,
    to: &Storage,
    unlock: &Unlock,
    from_name: &str,
    to_name: &str,
) -> Result<(ImportCount, Verified, Salvaged), (CmdError, bool)> {
    let before = |e: CmdError| (e, false);
    let after = |e: CmdError| {
        let message = format!(
            "{}; the salvaged copy was committed to {to_name}: empty that store before \
             salvaging again",
            e.message
        );
        (CmdError::new(e.kind, message), true)
    };
    check_empty(target, to_name).map_err(before)?;
    let mut report = None;
    let report_slot = &mut report;
    let (count, streamed, plans) = stream(
        move |sink: &mut dyn FnMut(DumpItem) -> tenant_vault::Result<()>| {
            *report_slot = Some(SqliteStore::salvage(file, sink)?);
            Ok(())
        },
        target,
        from_name,
        to_name,
    )
    .map_err(before)?;
    let report = report.unwrap_or_default();

    read_back(target, &plans, streamed, from_name, to_name).map_err(after)?;
    let entries: Vec<AuditEntry> = report
        .lost
        .iter()
        .map(|l| AuditEntry {
            time: Timestamp::now(),
            request_id: format!("salvage-{}", Timestamp::now().0),
            principal: "root".into(),
            tenant: l.tenant.clone(),
            operation: "salvage".into(),
            path: if l.path.is_empty() {
                l.item.clone()
            } else {
                l.path.clone()
            },
            version: l.version,
            outcome: "lost".into(),
        })
        .collect();
    if !entries.is_empty() {
        target
            .append_audit(&entries)
            .map_err(|e| after(about(to_name)(e)))?;
    }
    let target_vault = to
        .open()
        .and_then(|store| Ok(Vault::open(store, unlock, VaultOptions::default())?))
        .map_err(|e| after(CmdError::new(e.kind, format!("{to_name}: {}", e.message))))?;
    let verified = verify(None, &target_vault, from_name, to_name).map_err(after)?;
    Ok((count, verified, report))
}

/// Checks that the target exports exactly the items streamed into it (the
/// same count and SHA-256); plans the target had before and the source has
/// not stay out of the comparison.
fn read_back(
    target: &dyn Store,
    plans: &BTreeSet<String>,
    streamed: ([u8; 32], u64),
    from_name: &str,
    to_name: &str,
) -> CmdResult<()> {
    let mut digest = ItemDigest::new();
    target
        .export(&mut |item| {
            if !matches!(&item, DumpItem::Plan(p) if !plans.contains(&p.plan)) {
                digest.add(&item);
            }
            Ok(())
        })
        .map_err(about(to_name))?;
    if digest.finish() != streamed {
        return Err(integrity(format!(
            "the copy in {to_name} does not read back as the {} items streamed from {from_name}",
            streamed.1
        )));
    }
    Ok(())
}

/// True when both name the same SQLite file or the same URL.
fn same_store(a: &Storage, b: &Storage) -> bool {
    match (a, b) {
        (Storage::Sqlite(x), Storage::Sqlite(y)) => {
            x == y
                || matches!(
                    (std::fs::canonicalize(x), std::fs::canonicalize(y)),
                    (Ok(cx), Ok(cy)) if cx == cy
                )
        }
        (Storage::Postgres(x), Storage::Postgres(y)) => x == y,
        _ => false,
    }
}

/// Opens the source store, which must hold a vault (a SQLite file that
/// does not exist is not created).
fn open_source(from: &Storage) -> CmdResult<Box<dyn Store>> {
    let missing = || {
        CmdError::new(
            ExitKind::NotFound,
            format!(
                "no vault in {} (the source of the migration)",
                from.describe()
            ),
        )
    };
    if let Storage::Sqlite(p) = from {
        if !p.exists() {
            return Err(missing());
        }
    }
    let store = from
        .open()
        .map_err(|e| CmdError::new(e.kind, format!("{}: {e}", from.describe())))?;
    if store.root().map_err(about(&from.describe()))?.is_none() {
        return Err(missing());
    }
    Ok(store)
}

/// Steps 2 to 4. On failure, also says whether anything was committed to
/// the target.
fn copy_and_verify(
    source: &dyn Store,
    target: &dyn Store,
    to: &Storage,
    source_vault: &Vault,
    unlock: &Unlock,
    from_name: &str,
    to_name: &str,
) -> Result<(ImportCount, Verified), (CmdError, bool)> {
    let before = |e: CmdError| (e, false);
    let after = |e: CmdError| {
        let message = format!(
            "{}; the copy was committed to {to_name}: empty that store before migrating again",
            e.message
        );
        (CmdError::new(e.kind, message), true)
    };
    check_empty(target, to_name).map_err(before)?;

    // 3. Export into import, streaming.
    let (count, streamed, plans) = stream(
        |sink: &mut dyn FnMut(DumpItem) -> tenant_vault::Result<()>| source.export(sink),
        target,
        from_name,
        to_name,
    )
    .map_err(before)?;

    // 4. Verification, of what was committed.
    read_back(target, &plans, streamed, from_name, to_name).map_err(after)?;
    let target_vault = to
        .open()
        .and_then(|store| Ok(Vault::open(store, unlock, VaultOptions::default())?))
        .map_err(|e| after(CmdError::new(e.kind, format!("{to_name}: {}", e.message))))?;
    let verified = verify(Some(source_vault), &target_vault, from_name, to_name).map_err(after)?;
    Ok((count, verified))
}

/// What [`stream`] imported, and the count and digest of the items streamed
/// with the names of the source's plans.
type Streamed = (ImportCount, ([u8; 32], u64), BTreeSet<String>);

/// Runs `export` (the source's [`Store::export`]) on a thread of its own
/// into the target's import, through a bounded channel; returns what was
/// imported and what was streamed. Whatever fails or stops on either side
/// rolls the import back.
fn stream<E>(export: E, target: &dyn Store, from_name: &str, to_name: &str) -> CmdResult<Streamed>
where
    E: FnOnce(&mut dyn FnMut(DumpItem) -> tenant_vault::Result<()>) -> tenant_vault::Result<()>
        + Send,
{
    // Set once the export has sent its last item: a channel closed without
    // it (an export that panicked) must roll the import back, not commit a
    // truncated copy.
    let finished = AtomicBool::new(false);
    let finished = &finished;
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<tenant_vault::Result<DumpItem>>(CHANNEL);
        let exporter = s.spawn(move || {
            let mut digest = ItemDigest::new();
            let mut plans = BTreeSet::new();
            let mut stopped = false;
            let r = export(&mut |item| {
                digest.add(&item);
                if let DumpItem::Plan(p) = &item {
                    plans.insert(p.plan.clone());
                }
                tx.send(Ok(item)).map_err(|_| {
                    stopped = true;
                    Error::storage("exporting the vault", "the import stopped")
                })
            });
            if r.is_err() && !stopped {
                // The import rolls back on this item; the export's own
                // error is the one reported.
                let _ = tx.send(Err(Error::storage(
                    "importing a vault",
                    "the export from the source failed",
                )));
            }
            if r.is_ok() {
                finished.store(true, Ordering::SeqCst);
            }
            (r.map(|()| (digest.finish(), plans)), stopped)
        });
        let mut ended = false;
        let imported = target.import(&mut std::iter::from_fn(|| {
            if ended {
                return None;
            }
            match rx.recv() {
                Ok(item) => Some(item),
                Err(_) => {
                    ended = true;
                    (!finished.load(Ordering::SeqCst)).then(|| {
                        Err(Error::storage(
                            "importing a vault",
                            "the export stopped before its end",
                        ))
                    })
                }
            }
        }));
        // An import that stopped early unblocks the export's next send.
        drop(rx);
        let (exported, stopped) = exporter.join().unwrap_or_else(|_| {
            (
                Err(Error::storage("exporting the vault", "the export panicked")),
                false,
            )
        });
        match (exported, imported) {
            (Ok((digest, plans)), Ok(count)) => Ok((count, digest, plans)),
            (_, Err(Error::StoreNotEmpty(what))) => Err(CmdError::new(
                ExitKind::Conflict,
                format!(
                    "the target {to_name} is not empty: it holds {what}; migrate copies only \
                     into an empty store, nothing was written"
                ),
            )),
            (Err(e), _) if !stopped => Err(about(from_name)(e)),
            (_, Err(e)) => Err(about(to_name)(e)),
            (Err(e), Ok(_)) => Err(about(from_name)(e)),
        }
    })
}

fn check_empty(target: &dyn Store, to_name: &str) -> CmdResult<()> {
    let mut held = Vec::new();
    if target.root().map_err(about(to_name))?.is_some() {
        held.push("a vault (root key)".to_owned());
    }
    let scopes = target.scopes().map_err(about(to_name))?.len();
    if scopes > 0 {
        held.push(format!("{scopes} tenant(s)"));
    }
    let tokens = target.tokens(None).map_err(about(to_name))?.len();
    if tokens > 0 {
        held.push(format!("{tokens} token(s)"));
    }
    let audit = target.last_audit_seq().map_err(about(to_name))?;
    if audit > 0 {
        held.push(format!("{audit} audit record(s)"));
    }
    if held.is_empty() {
        return Ok(());
    }
    Err(CmdError::new(
        ExitKind::Conflict,
        format!(
            "the target {to_name} is not empty: it holds {}; migrate copies only into an empty \
             store, nothing was written",
            held.join(", ")
        ),
    ))
}

/// Compares the copy `dst` with the source vault tenant by tenant, secret
/// by secret, version by version; with no source (a salvage), checks that
/// every version of the copy that is not destroyed decrypts. Then verifies
/// the copy's audit chain.
fn verify(src: Option<&Vault>, dst: &Vault, from_name: &str, to_name: &str) -> CmdResult<Verified> {
    let mut v = Verified::default();
    let scopes = dst.list_scopes().map_err(about(to_name))?;
    if let Some(src) = src {
        if src.list_scopes().map_err(about(from_name))? != scopes {
            return Err(integrity(format!(
                "the tenants of {to_name} differ from those of {from_name}"
            )));
        }
    }
    for scope in &scopes {
        v.scopes += 1;
        let prefix = ListPrefix::parse(&format!("tenant/{}/", scope.slug))?;
        let mut after: Option<String> = None;
        loop {
            let page = dst
                .list(&prefix, after.as_deref(), tenant_vault::MAX_LIST_PAGE)
                .map_err(about(to_name))?;
            if let Some(src) = src {
                let theirs = src
                    .list(&prefix, after.as_deref(), tenant_vault::MAX_LIST_PAGE)
                    .map_err(about(from_name))?;
                if theirs != page {
                    return Err(integrity(format!(
                        "the secrets of tenant `{}` in {to_name} differ from those in {from_name}",
                        scope.slug
                    )));
                }
            }
            for path in &page.paths {
                v.secrets += 1;
                let meta = dst.metadata(path).map_err(about(to_name))?;
                if let Some(src) = src {
                    if src.metadata(path).map_err(about(from_name))? != meta {
                        return Err(integrity(format!(
                            "`{path}`: its metadata in {to_name} differs from {from_name}"
                        )));
                    }
                }
                for version in &meta.versions {
                    let n = version.version;
                    let copy = dst.version_digest(path, n).map_err(about(to_name))?;
                    let mine = match src {
                        Some(src) => src.version_digest(path, n).map_err(about(from_name))?,
                        None => copy,
                    };
                    match (mine, copy) {
                        (None, None) if version.destroyed => v.destroyed += 1,
                        (Some(a), Some(b)) if a == b && !version.destroyed => {
                            v.versions += 1;
                            if version.deleted_at.is_some() {
                                v.deleted += 1;
                            }
                        }
                        _ => {
                            return Err(integrity(format!(
                                "`{path}` version {n} does not decrypt to the same value in \
                                 {to_name} as in {from_name}"
                            )));
                        }
                    }
                }
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    match dst.verify_audit().map_err(about(to_name))? {
        Ok(n) => v.audit_records = n,
        Err(problem) => {
            return Err(integrity(format!(
                "the audit trail copied into {to_name} does not verify: {problem}"
            )));
        }
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use tenant_vault::{ScopeKind, Secret, SecretPath, Slug, SqliteStore};

    use super::*;

    /// A vault with one secret of two versions, and an exact copy of it
    /// made by export and import; both opened.
    fn vault_and_copy(dir: &Path) -> (Vault, Vault) {
        let key = dir.join("k.key");
        tenant_vault::create_key_file(&key).unwrap();
        let unlock = Unlock::KeyFile(key);
        let a = Vault::init(
            SqliteStore::open(dir.join("a.db")).unwrap(),
            &unlock,
            VaultOptions::default(),
        )
        .unwrap();
        a.create_scope(&Slug::parse("acme").unwrap(), ScopeKind::Enterprise)
            .unwrap();
        let x = SecretPath::parse("tenant/acme/x").unwrap();
        a.put(&x, &Secret::from("one"), None).unwrap();
        a.put(&x, &Secret::from("two"), None).unwrap();
        let source = SqliteStore::open(dir.join("a.db")).unwrap();
        let target = SqliteStore::open(dir.join("b.db")).unwrap();
        let mut items = Vec::new();
        source
            .export(&mut |i| {
                items.push(i);
                Ok(())
            })
            .unwrap();
        target
            .import(&mut items.into_iter().map(Ok::<_, Error>))
            .unwrap();
        let b = Vault::open(target, &unlock, VaultOptions::default()).unwrap();
        (a, b)
    }

    /// An export that dies halfway (a panic closes the channel without an
    /// error item) rolls the import back instead of committing a truncated
    /// copy; so does an export that fails.
    #[test]
    fn an_export_that_stops_halfway_leaves_the_target_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = vault_and_copy(dir.path());
        drop((a, b));
        let source = SqliteStore::open(dir.path().join("a.db")).unwrap();
        let mut items = Vec::new();
        source
            .export(&mut |i| {
                items.push(i);
                Ok(())
            })
            .unwrap();
        let target = SqliteStore::open(dir.path().join("c.db")).unwrap();
        let half = items.len() / 2;
        let panicking = |sink: &mut dyn FnMut(DumpItem) -> tenant_vault::Result<()>| {
            for i in &items[..half] {
                sink(i.clone())?;
            }
            panic!("the export dies");
        };
        let e = stream(panicking, &target, "a", "c").unwrap_err();
        assert!(e.message.contains("the export panicked"), "{e}");
        check_empty(&target, "c").unwrap();
        let failing = |sink: &mut dyn FnMut(DumpItem) -> tenant_vault::Result<()>| {
            for i in &items[..half] {
                sink(i.clone())?;
            }
            Err(Error::storage("reading", "the disk is gone"))
        };
        let e = stream(failing, &target, "a", "c").unwrap_err();
        assert!(
            e.message.starts_with("a: ") && e.message.contains("the disk is gone"),
            "{e}"
        );
        check_empty(&target, "c").unwrap();
        let whole = |sink: &mut dyn FnMut(DumpItem) -> tenant_vault::Result<()>| {
            items.iter().try_for_each(|i| sink(i.clone()))
        };
        let (count, _, _) = stream(whole, &target, "a", "c").unwrap();
        assert_eq!(count.versions, 2);
    }

    #[test]
    fn an_exact_copy_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = vault_and_copy(dir.path());
        let v = verify(Some(&a), &b, "a", "b").unwrap();
        assert_eq!((v.scopes, v.secrets, v.versions), (1, 1, 2));
    }

    #[test]
    fn a_copy_that_differs_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = vault_and_copy(dir.path());
        let x = SecretPath::parse("tenant/acme/x").unwrap();
        // A different state: the metadata no longer matches.
        b.destroy(&x, &[1]).unwrap();
        let e = verify(Some(&a), &b, "a", "b").unwrap_err();
        assert_eq!(e.kind, ExitKind::Integrity, "{e}");
        assert!(e.message.contains("`tenant/acme/x`: its metadata"), "{e}");

        // The same state, but version 2's ciphertext moved to version 1:
        // it no longer decrypts there (the associated data binds the
        // version), and nothing of the values is shown.
        let (a, b) = {
            let dir = dir.path().join("again");
            std::fs::create_dir(&dir).unwrap();
            let (a, b) = vault_and_copy(&dir);
            drop(b);
            let c = rusqlite::Connection::open(dir.join("b.db")).unwrap();
            c.execute_batch(
                "UPDATE versions SET nonce = (SELECT nonce FROM versions WHERE version = 2),
                                     ciphertext = (SELECT ciphertext FROM versions WHERE version = 2)
                 WHERE version = 1",
            )
            .unwrap();
            drop(c);
            let b = Vault::open(
                SqliteStore::open(dir.join("b.db")).unwrap(),
                &Unlock::KeyFile(dir.join("k.key")),
                VaultOptions::default(),
            )
            .unwrap();
            (a, b)
        };
        let e = verify(Some(&a), &b, "a", "b").unwrap_err();
        assert_eq!(e.kind, ExitKind::Integrity, "{e}");
        assert!(e.message.starts_with("b: "), "{e}");
        assert!(
            !e.message.contains("one") && !e.message.contains("two"),
            "{e}"
        );
    }
}
