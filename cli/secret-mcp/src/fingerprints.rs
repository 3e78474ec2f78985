//! `secret-mcp fingerprints export`: a file that lets `tenant-guard scan
//! --fingerprints` recognise a tenant's secret values without holding them
//! (format and what it reveals: docs/SCANNER.md, "Fingerprints of vault
//! secrets"). Works the same on the embedded vault and in remote mode: the
//! values are read with the caller's token, hashed here, and dropped.

use std::io::Write;
use std::path::Path;

use tenant_guard_scan::{Added, FingerprintBuilder, MIN_FINGERPRINT_LEN};
use tenant_vault::{ListPrefix, SecretPath, Slug, Timestamp};

use crate::backend::{Backend, CmdError, CmdResult, ExitKind};

/// Every secret path of `slug`, in byte order.
pub(crate) fn tenant_paths(b: &dyn Backend, slug: &Slug) -> CmdResult<Vec<SecretPath>> {
    let prefix = ListPrefix::parse(&format!("tenant/{slug}/"))?;
    let mut paths = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = b.list(&prefix, after.as_deref(), tenant_vault::MAX_LIST_PAGE)?;
        paths.extend(page.paths);
        match page.next {
            Some(n) => after = Some(n),
            None => return Ok(paths),
        }
    }
}

/// Writes the fingerprints of every readable version of every secret of
/// `tenant` to `output` (standard output when `None`), and a summary to
/// `err`.
pub(crate) fn export(
    b: &dyn Backend,
    tenant: &str,
    output: Option<&Path>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> CmdResult<()> {
    let slug = Slug::parse(tenant)?;
    let mut builder = FingerprintBuilder::new(slug.as_str());
    let mut fingerprinted = 0usize;
    let mut short = Vec::new();
    let mut unreadable = 0usize;
    let paths = tenant_paths(b, &slug)?;
    for path in &paths {
        let meta = b.metadata(path)?;
        for v in meta.versions.iter().filter(|v| !v.destroyed) {
            if v.deleted_at.is_some() {
                unreadable += 1;
                continue;
            }
            let secret = match b.get(path, Some(v.version)) {
                Ok(s) => s,
                // Deleted or destroyed since the metadata was read.
                Err(e) if e.kind == ExitKind::NotFound => {
                    unreadable += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match builder.add(&path.to_string(), v.version, secret.value.expose()) {
                Added::TooShort => short.push(format!("{path} (version {})", v.version)),
                _ => fingerprinted += 1,
            }
        }
    }
    let created = Timestamp::now().to_rfc3339();
    let write_failed = |e: std::io::Error| {
        CmdError::new(ExitKind::Failure, format!("writing the fingerprints: {e}"))
    };
    match output {
        Some(file) => {
            let mut f = create_private(file)?;
            builder.write(&mut f, &created).map_err(write_failed)?;
            f.flush().map_err(write_failed)?;
        }
        None => builder.write(out, &created).map_err(write_failed)?,
    }
    let say =
        |e: std::io::Error| CmdError::new(ExitKind::Failure, format!("writing to stderr: {e}"));
    writeln!(
        err,
        "fingerprinted {fingerprinted} version(s) of {} secret(s) of tenant {slug}",
        paths.len()
    )
    .map_err(say)?;
    if !short.is_empty() {
        writeln!(
            err,
            "skipped {} version(s) shorter than {MIN_FINGERPRINT_LEN} bytes, too short to \
             fingerprint safely (listed in the file by path and version only): {}",
            short.len(),
            short.join(", ")
        )
        .map_err(say)?;
    }
    if unreadable > 0 {
        writeln!(
            err,
            "not included: {unreadable} soft-deleted version(s) (undelete them to include them)"
        )
        .map_err(say)?;
    }
    Ok(())
}

/// Creates `path` readable by its owner only: the file lets its holder test
/// guesses of the secrets.
fn create_private(path: &Path) -> CmdResult<std::io::BufWriter<std::fs::File>> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .map(std::io::BufWriter::new)
        .map_err(|e| {
            CmdError::new(
                ExitKind::Failure,
                format!("cannot create {}: {e}", path.display()),
            )
        })
}
