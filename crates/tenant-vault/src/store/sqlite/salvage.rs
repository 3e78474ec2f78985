//! Salvage: whatever can still be read from a damaged SQLite vault file
//! (truncated, or with pages that no longer parse), streamed as a dump
//! ([`DumpItem`]s, in [`Store::export`](crate::Store::export)'s order) for
//! [`Store::import`](crate::Store::import) into a new store, with every item
//! that could not be copied named in a [`Salvaged`] report.
//!
//! The file is opened read-only and never written. SQLite refuses a file
//! shorter than its header says unless `writable_schema` is on, which makes
//! it read the pages that are there; a row on a page that is gone, or whose
//! overflow chain is broken, fails on its own with a "malformed" error.
//!
//! Each table is read row by row (row ids first, then each row by id), so
//! one bad page loses only the rows it held: past a page that cannot be
//! read, the following row ids are probed one by one. A version whose row
//! is lost is named from whatever is left of it (its key columns, which sit
//! at the start of the row, or the primary-key index), and is copied as a
//! destroyed version: its secret keeps its history, and reading it says the
//! value is gone rather than returning anything. What depends on a lost row
//! is lost with it (the versions of a secret whose row is lost, the versions
//! sealed by a data key that is lost, everything of a lost tenant). The
//! audit chain is copied up to its first unreadable record, so the copy
//! still verifies; the records after it are reported lost.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Row};

use super::dump::{
    SCOPE_DUMP_COLUMNS, SECRET_DUMP_COLUMNS, VERSION_DUMP_COLUMNS, scope_dump_from_row,
    secret_dump_from_row,
};
use super::{
    DATA_KEY_COLUMNS, MIGRATIONS, TOKEN_COLUMNS, audit_row, data_key_from_row, limits_from_row,
    name_from_text, read_root, token_from_row, version_from_row,
};
use crate::error::{Error, Result};
use crate::store::{
    DumpItem, ScopeDump, ScopeId, SecretRecord, StoredVersion, Timestamp, TokenRecord,
};

/// Row ids probed one by one past a page that cannot be read, before the
/// rest of the table is given up.
const PROBES: i64 = 65_536;

/// What [`SqliteStore::salvage`](super::SqliteStore::salvage) could not copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Salvaged {
    /// Every item that could not be copied, in the order found.
    pub lost: Vec<LostItem>,
    /// Audit records copied: the copy's chain ends at the last of them.
    pub audit_records: u64,
}

/// One item [`SqliteStore::salvage`](super::SqliteStore::salvage) could not
/// copy. Never holds a value: names, ids and the reason only.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LostItem {
    /// What was lost, e.g. ``version 1 of `tenant/acme/certificate` ``.
    pub item: String,
    /// The tenant's slug, when known.
    pub tenant: String,
    /// The secret's path, or the token id, when known.
    pub path: String,
    /// The version, for a lost version.
    pub version: Option<u64>,
    /// Why it was lost.
    pub reason: String,
}

/// True for the errors SQLite gives for a damaged page.
fn damaged(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

fn storage(e: rusqlite::Error) -> Error {
    Error::storage("salvaging the vault", e)
}

/// The row ids of `table` that can be found, in order. A page that cannot
/// be read is reported in `gaps` (with the last row id before it) and
/// stepped over by probing the row ids after it.
fn rowids(
    conn: &Connection,
    table: &'static str,
    gaps: &mut Vec<(&'static str, i64)>,
) -> Result<Vec<i64>> {
    let mut stmt = conn
        .prepare(&format!(
            "SELECT rowid FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT 1"
        ))
        .map_err(storage)?;
    let mut ids = Vec::new();
    let mut after = i64::MIN;
    loop {
        match stmt.query_row([after], |r| r.get::<_, i64>(0)).optional() {
            Ok(Some(id)) => {
                ids.push(id);
                after = id;
            }
            Ok(None) => break,
            Err(e) if damaged(&e) => {
                gaps.push((table, after));
                // The rows after `after` are on a page that is gone; find
                // the next page that is there, if any.
                let start = after.max(0);
                let mut found = None;
                for probe in start + 1..=start.saturating_add(PROBES) {
                    match stmt.query_row([probe], |r| r.get::<_, i64>(0)).optional() {
                        Ok(Some(id)) => {
                            found = Some(id);
                            break;
                        }
                        Ok(None) => break,
                        Err(e) if damaged(&e) => {}
                        Err(e) => return Err(storage(e)),
                    }
                }
                match found {
                    Some(id) => {
                        ids.push(id);
                        after = id;
                    }
                    None => break,
                }
            }
            Err(e) => return Err(storage(e)),
        }
    }
    Ok(ids)
}

/// The tables whose definitions can be read. Those a vault cannot be
/// salvaged without (root key, tenants, data keys, secrets, versions) must
/// be among them.
fn tables(conn: &Connection, path: &Path) -> Result<BTreeSet<String>> {
    let names = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
        .and_then(|mut s| {
            s.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<BTreeSet<String>>>()
        })
        .map_err(|e| {
            if damaged(&e) {
                Error::Integrity(format!(
                    "{}: the schema cannot be read (it is on a page that is damaged or cut \
                     off), so no secret can be salvaged from it",
                    path.display()
                ))
            } else {
                storage(e)
            }
        })?;
    let missing: Vec<&str> = ["root_key", "scopes", "data_keys", "secrets", "versions"]
        .into_iter()
        .filter(|t| !names.contains(*t))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Integrity(format!(
            "{}: the schema is cut off (the definition of table(s) `{}` is on a page that cannot \
             be read), so no secret can be salvaged from it",
            path.display(),
            missing.join("`, `")
        )));
    }
    Ok(names)
}

/// [`rowids`] of a table a salvage can do without: none, reported through
/// `lost`, when its definition cannot be read.
fn optional(
    conn: &Connection,
    table: &'static str,
    present: &BTreeSet<String>,
    gaps: &mut Vec<(&'static str, i64)>,
    lost: &mut dyn FnMut(&str),
) -> Result<Vec<i64>> {
    if present.contains(table) {
        rowids(conn, table, gaps)
    } else {
        lost("the table's definition is on a page that cannot be read");
        Ok(Vec::new())
    }
}

/// Reads row `id` of `table` with `sql` (`... WHERE rowid = ?1`): `None` if
/// its page or overflow chain is damaged.
fn row<T>(
    conn: &Connection,
    sql: &str,
    id: i64,
    f: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> Result<Option<T>> {
    match conn
        .prepare_cached(sql)
        .and_then(|mut s| s.query_row([id], f))
    {
        Ok(t) => Ok(Some(t)),
        Err(e) if damaged(&e) => Ok(None),
        Err(e) => Err(storage(e)),
    }
}

/// One version row as found by the first pass.
struct VersionRow {
    rowid: i64,
    scope: String,
    name: String,
    meta: StoredVersion,
    /// Ciphertext bytes, when the whole row reads.
    bytes: Option<u64>,
}

/// Opens `path` read-only for salvage: `writable_schema` lets SQLite read a
/// file shorter than its header says; `query_only` makes sure nothing is
/// ever written through this connection.
fn open(path: &Path) -> Result<Connection> {
    if !path.exists() {
        return Err(Error::storage(
            "salvaging the vault",
            format!("{} does not exist", path.display()),
        ));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(storage)?;
    conn.pragma_update(None, "writable_schema", "ON")
        .and_then(|()| conn.pragma_update(None, "query_only", "ON"))
        .map_err(storage)?;
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| {
            if damaged(&e) {
                Error::Integrity(format!(
                    "{}: its schema cannot be read, so nothing in it can be salvaged ({e})",
                    path.display()
                ))
            } else {
                storage(e)
            }
        })?;
    if version as usize != MIGRATIONS.len() {
        return Err(Error::storage(
            "salvaging the vault",
            format!(
                "{} is at schema version {version}; salvage reads version {} only",
                path.display(),
                MIGRATIONS.len()
            ),
        ));
    }
    Ok(conn)
}

pub(super) fn salvage(
    path: &Path,
    sink: &mut dyn FnMut(DumpItem) -> Result<()>,
) -> Result<Salvaged> {
    let conn = open(path)?;
    let present = tables(&conn, path)?;
    let mut lost_items = Vec::new();
    let mut gaps = Vec::new();
    let mut lost = |item: String, tenant: &str, path: &str, version: Option<u64>, reason: &str| {
        lost_items.push(LostItem {
            item,
            tenant: tenant.to_owned(),
            path: path.to_owned(),
            version,
            reason: reason.to_owned(),
        });
    };
    const UNREADABLE: &str = "its row is on a page that cannot be read";

    let root = match read_root(&conn) {
        Ok(Some(root)) => root,
        Ok(None) => {
            return Err(Error::storage(
                "salvaging the vault",
                format!("{} holds no vault (no root key record)", path.display()),
            ));
        }
        Err(e) if damaged(&e) => {
            return Err(Error::Integrity(format!(
                "{}: the root key record cannot be read, so no secret in it can be decrypted ({e})",
                path.display()
            )));
        }
        Err(e) => return Err(storage(e)),
    };
    // First, as in an export; a caller may stop here (to check the unlock
    // material against it before reading the rest).
    sink(DumpItem::Root(root))?;

    // Plans.
    let mut plans = Vec::new();
    for id in optional(&conn, "plans", &present, &mut gaps, &mut |reason| {
        lost(
            "the operators' plans (the built-in ones are in every new store)".into(),
            "",
            "",
            None,
            reason,
        )
    })? {
        let plan = row(
            &conn,
            "SELECT name AS plan, max_secrets, max_bytes, max_tokens, rate_per_sec, burst
             FROM plans WHERE rowid = ?1",
            id,
            limits_from_row,
        )?;
        match plan {
            Some(p) => plans.push(p),
            None => lost(format!("plan row {id}"), "", "", None, UNREADABLE),
        }
    }

    // Tenants.
    let mut scopes: BTreeMap<String, ScopeDump> = BTreeMap::new();
    for id in rowids(&conn, "scopes", &mut gaps)? {
        let scope = row(
            &conn,
            &format!("SELECT {SCOPE_DUMP_COLUMNS} FROM scopes WHERE rowid = ?1"),
            id,
            scope_dump_from_row,
        )?;
        match scope {
            Some(s) => {
                scopes.insert(s.scope.id.0.clone(), s);
            }
            None => lost(
                format!("tenant row {id}, with everything it held"),
                "",
                "",
                None,
                UNREADABLE,
            ),
        }
    }
    let slug = |scope: &str| scopes.get(scope).map(|s| s.scope.slug.as_str().to_owned());

    // Data keys.
    let mut keys = Vec::new();
    for id in rowids(&conn, "data_keys", &mut gaps)? {
        let key = row(
            &conn,
            &format!("SELECT {DATA_KEY_COLUMNS} FROM data_keys WHERE rowid = ?1"),
            id,
            data_key_from_row,
        )?;
        match key {
            Some(k) => match slug(&k.scope_id.0) {
                Some(_) => keys.push(k),
                None => lost(
                    format!("data key version {} of a lost tenant", k.version),
                    "",
                    "",
                    None,
                    "its tenant's row cannot be read",
                ),
            },
            None => lost(format!("data key row {id}"), "", "", None, UNREADABLE),
        }
    }
    let key_set: BTreeSet<(String, u32)> = keys
        .iter()
        .map(|k| (k.scope_id.0.clone(), k.version))
        .collect();

    // Secrets.
    let mut secrets: BTreeMap<(String, String), SecretRecord> = BTreeMap::new();
    for id in rowids(&conn, "secrets", &mut gaps)? {
        let secret = row(
            &conn,
            &format!("SELECT {SECRET_DUMP_COLUMNS} FROM secrets WHERE rowid = ?1"),
            id,
            secret_dump_from_row,
        )?;
        match secret {
            Some((ScopeId(scope), s)) => match slug(&scope) {
                Some(_) => {
                    secrets.insert((scope, s.name.as_str().to_owned()), s);
                }
                None => lost(
                    format!("secret `{}` of a lost tenant", s.name.as_str()),
                    "",
                    "",
                    None,
                    "its tenant's row cannot be read",
                ),
            },
            // Named below, from its versions, when they can be read.
            None => lost(format!("secret row {id}"), "", "", None, UNREADABLE),
        }
    }
    let full_path = |scope: &str, name: &str| match slug(scope) {
        Some(s) => format!("tenant/{s}/{name}"),
        None => format!("{name} (of a lost tenant)"),
    };

    // Versions, first pass: which rows read whole, and their sizes.
    let mut versions: Vec<VersionRow> = Vec::new();
    let mut seen: HashSet<(String, String, u64)> = HashSet::new();
    for id in rowids(&conn, "versions", &mut gaps)? {
        let whole = row(
            &conn,
            &format!("SELECT {VERSION_DUMP_COLUMNS} FROM versions WHERE rowid = ?1"),
            id,
            |r| {
                let v = version_from_row(r, true)?;
                let bytes = v.ciphertext.as_ref().map_or(0, |c| c.len() as u64);
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, v, bytes))
            },
        )?;
        let found = match whole {
            Some((scope, name, mut meta, bytes)) => {
                meta.nonce = None;
                meta.ciphertext = None;
                Some((scope, name, meta, Some(bytes)))
            }
            // The key columns come first in the row: they usually read
            // when only the ciphertext's overflow pages are gone.
            None => row(
                &conn,
                "SELECT scope_id, name, version, created_at, deleted_at, destroyed, key_version
                 FROM versions WHERE rowid = ?1",
                id,
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        version_from_row(r, false)?,
                        None,
                    ))
                },
            )?,
        };
        if let Some((scope, name, meta, bytes)) = found {
            seen.insert((scope.clone(), name.clone(), meta.version));
            versions.push(VersionRow {
                rowid: id,
                scope,
                name,
                meta,
                bytes,
            });
        }
    }
    // The primary-key index names the versions whose rows are gone.
    let mut from_index = Vec::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT scope_id, name, version FROM versions ORDER BY scope_id, name, version",
            )
            .map_err(storage)?;
        let mut rows = stmt.query([]).map_err(storage)?;
        loop {
            match rows.next() {
                Ok(Some(r)) => {
                    let key: (String, String, u64) = (
                        r.get(0).map_err(storage)?,
                        r.get(1).map_err(storage)?,
                        r.get(2).map_err(storage)?,
                    );
                    if !seen.contains(&key) {
                        from_index.push(key);
                    }
                }
                Ok(None) => break,
                Err(e) if damaged(&e) => break,
                Err(e) => return Err(storage(e)),
            }
        }
    }

    // Decide what each version becomes: copied, copied as destroyed (lost
    // value), or dropped with its secret.
    // Every version copied: its scope, name and metadata, and the row id to
    // read its ciphertext from again (none for a destroyed one, or one
    // standing for a lost value).
    let mut out: Vec<(String, String, StoredVersion, Option<i64>)> = Vec::new();
    let mut bytes_used: HashMap<String, u64> = HashMap::new();
    let mut has_version: BTreeSet<(String, String, u64)> = BTreeSet::new();
    for v in versions {
        let path = full_path(&v.scope, &v.name);
        let tenant = slug(&v.scope).unwrap_or_default();
        let item = format!("version {} of `{path}`", v.meta.version);
        if !secrets.contains_key(&(v.scope.clone(), v.name.clone())) {
            lost(
                item,
                &tenant,
                &path,
                Some(v.meta.version),
                if tenant.is_empty() {
                    "its tenant's row cannot be read"
                } else {
                    "its secret's row cannot be read"
                },
            );
            continue;
        }
        has_version.insert((v.scope.clone(), v.name.clone(), v.meta.version));
        if v.meta.destroyed {
            // A destroyed version holds no value: nothing of it is lost.
            out.push((v.scope, v.name, v.meta, None));
            continue;
        }
        let reason = match (v.bytes, v.meta.key_version) {
            (None, _) => Some("its ciphertext is on a page that cannot be read"),
            (Some(_), Some(k)) if !key_set.contains(&(v.scope.clone(), k)) => {
                Some("the data key that sealed it cannot be read")
            }
            _ => None,
        };
        match reason {
            None => {
                *bytes_used.entry(v.scope.clone()).or_default() += v.bytes.unwrap_or(0);
                out.push((v.scope, v.name, v.meta, Some(v.rowid)));
            }
            Some(reason) => {
                lost(item, &tenant, &path, Some(v.meta.version), reason);
                let stand_in = destroyed(v.meta.version, v.meta.created_at, v.meta.deleted_at);
                out.push((v.scope, v.name, stand_in, None));
            }
        }
    }
    for (scope, name, version) in from_index {
        let path = full_path(&scope, &name);
        let tenant = slug(&scope).unwrap_or_default();
        let item = format!("version {version} of `{path}`");
        match secrets.get(&(scope.clone(), name.clone())) {
            Some(s) => {
                lost(item, &tenant, &path, Some(version), UNREADABLE);
                has_version.insert((scope.clone(), name.clone(), version));
                out.push((scope, name, destroyed(version, s.updated_at, None), None));
            }
            None => lost(
                item,
                &tenant,
                &path,
                Some(version),
                "its secret's row cannot be read",
            ),
        }
    }
    // A secret whose current version was not found at all.
    for ((scope, name), s) in &secrets {
        if !has_version.contains(&(scope.clone(), name.clone(), s.current_version)) {
            let path = full_path(scope, name);
            lost(
                format!("version {} of `{path}`", s.current_version),
                &slug(scope).unwrap_or_default(),
                &path,
                Some(s.current_version),
                "its row cannot be found: the page that held it is gone",
            );
            let stand_in = destroyed(s.current_version, s.updated_at, None);
            out.push((scope.clone(), name.clone(), stand_in, None));
        }
    }

    // Tokens.
    let mut tokens: Vec<TokenRecord> = Vec::new();
    for id in optional(&conn, "tokens", &present, &mut gaps, &mut |reason| {
        lost("every token".into(), "", "", None, reason)
    })? {
        let token = row(
            &conn,
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens t LEFT JOIN scopes sc ON sc.id = t.scope_id
                 WHERE t.rowid = ?1"
            ),
            id,
            token_from_row,
        )?;
        match token {
            Some(t) => {
                let tenant_lost = matches!(&t.scope, Some((scope, _)) if slug(&scope.0).is_none());
                if tenant_lost {
                    lost(
                        format!("token {}", t.id),
                        "",
                        &t.id,
                        None,
                        "its tenant's row cannot be read",
                    );
                } else {
                    tokens.push(t);
                }
            }
            None => lost(format!("token row {id}"), "", "", None, UNREADABLE),
        }
    }

    for (table, after) in &gaps {
        if *table != "audit_log" {
            let after = if *after == i64::MIN { 0 } else { *after };
            lost(
                format!("rows of table `{table}` after row id {after}"),
                "",
                "",
                None,
                "a page of the table cannot be read; the rows it held that are not named above are lost",
            );
        }
    }

    // The rest, in the dump's order (that of `Store::export`).
    plans.sort_by(|a, b| a.plan.cmp(&b.plan));
    keys.sort_by(|a, b| (&a.scope_id.0, a.version).cmp(&(&b.scope_id.0, b.version)));
    tokens.sort_by(|a, b| a.id.cmp(&b.id));
    for p in plans {
        sink(DumpItem::Plan(p))?;
    }
    for (id, mut s) in scopes.clone() {
        s.bytes_used = bytes_used.get(&id).copied().unwrap_or(0);
        sink(DumpItem::Scope(s))?;
    }
    for k in keys {
        sink(DumpItem::DataKey(k))?;
    }
    for ((scope, _), secret) in secrets {
        sink(DumpItem::Secret {
            scope: ScopeId(scope),
            secret,
        })?;
    }
    out.sort_by(|a, b| (&a.0, &a.1, a.2.version).cmp(&(&b.0, &b.1, b.2.version)));
    for (scope, name, mut version, reread) in out {
        if let Some(rowid) = reread {
            // Second pass: the ciphertext, read again by row id.
            let full = row(
                &conn,
                &format!("SELECT {VERSION_DUMP_COLUMNS} FROM versions WHERE rowid = ?1"),
                rowid,
                |r| version_from_row(r, true),
            )?
            .ok_or_else(|| {
                Error::Integrity(format!(
                    "{}: version {} of `{}` read once and then no more",
                    path.display(),
                    version.version,
                    full_path(&scope, &name)
                ))
            })?;
            version = full;
        }
        let name = name_from_text(&name).map_err(storage)?;
        sink(DumpItem::Version {
            scope: ScopeId(scope),
            name,
            version,
        })?;
    }
    for t in tokens {
        sink(DumpItem::Token(t))?;
    }

    // The audit chain, up to its first unreadable or missing record.
    let mut next = 1u64;
    let audit_ids = optional(&conn, "audit_log", &present, &mut gaps, &mut |reason| {
        lost("the audit trail".into(), "", "", None, reason)
    })?;
    let total = audit_ids.len();
    for id in audit_ids {
        let rec = row(
            &conn,
            "SELECT seq, time, request_id, principal, tenant, operation, path, version, outcome,
                    prev_hash, hash
             FROM audit_log WHERE rowid = ?1",
            id,
            audit_row,
        )?;
        match rec {
            Some(r) if r.seq == next => {
                sink(DumpItem::Audit(r))?;
                next += 1;
            }
            _ => break,
        }
    }
    let audit_records = next - 1;
    let audit_gap = gaps.iter().any(|(t, _)| *t == "audit_log");
    if audit_records < total as u64 || audit_gap {
        lost(
            format!("audit records after record {audit_records}"),
            "",
            "",
            None,
            "the audit chain cannot be read past that record; the copy's chain ends there (an audit file, if one was kept, holds the rest)",
        );
    }
    Ok(Salvaged {
        lost: lost_items,
        audit_records,
    })
}

/// A destroyed version standing for one whose value was lost.
fn destroyed(version: u64, created_at: Timestamp, deleted_at: Option<Timestamp>) -> StoredVersion {
    StoredVersion {
        version,
        created_at,
        deleted_at,
        destroyed: true,
        key_version: None,
        nonce: None,
        ciphertext: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::dump_tests::export_all;
    use crate::{ScopeKind, Secret, SecretPath, Slug, SqliteStore, Unlock, Vault, VaultOptions};

    fn salvage_all(path: &Path) -> Result<(Vec<DumpItem>, Salvaged)> {
        let mut items = Vec::new();
        let report = salvage(path, &mut |i| {
            items.push(i);
            Ok(())
        })?;
        Ok((items, report))
    }

    fn checkpoint(db: &Path) {
        Connection::open(db)
            .unwrap()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
    }

    #[test]
    fn an_intact_file_salvages_as_its_export() {
        let dir = tempfile::tempdir().unwrap();
        // The store dump.rs's tests copy, at `src.db`.
        drop(super::super::dump::tests::populated(dir.path()));
        let db = dir.path().join("src.db");
        let export = export_all(&SqliteStore::open(&db).unwrap());
        let (items, report) = salvage_all(&db).unwrap();
        assert_eq!(report.lost, Vec::new());
        assert_eq!(items, export, "nothing lost: the same items as an export");
        assert!(report.audit_records > 10);
    }

    /// 300 secrets of 300 bytes each: the versions table spans many leaf
    /// pages. One leaf in the middle is overwritten with garbage.
    #[test]
    fn a_damaged_page_loses_only_its_rows_and_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("v.db");
        let key = dir.path().join("vault.key");
        crate::create_key_file(&key).unwrap();
        let value = |i: usize| format!("{i:04}-{}", "x".repeat(295));
        {
            let vault = Vault::init(
                SqliteStore::open(&db).unwrap(),
                &Unlock::KeyFile(key.clone()),
                VaultOptions::default(),
            )
            .unwrap();
            vault
                .create_scope(&Slug::parse("acme").unwrap(), ScopeKind::Enterprise)
                .unwrap();
            for i in 0..300 {
                let p = SecretPath::parse(&format!("tenant/acme/s{i:04}")).unwrap();
                vault.put(&p, &Secret::from(value(i)), None).unwrap();
            }
            vault.flush_audit().unwrap();
        }
        checkpoint(&db);
        // The leaf page holding version 1 of s0150's ciphertext.
        let ct: Vec<u8> = Connection::open(&db)
            .unwrap()
            .query_row(
                "SELECT ciphertext FROM versions WHERE name = 's0150'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let mut bytes = std::fs::read(&db).unwrap();
        let at = bytes
            .windows(ct.len())
            .position(|w| w == ct.as_slice())
            .unwrap();
        let page = at / 4096 * 4096;
        bytes[page..page + 8].copy_from_slice(&[0xee; 8]);
        std::fs::write(&db, &bytes).unwrap();

        let (items, report) = salvage_all(&db).unwrap();
        let lost: Vec<&LostItem> = report.lost.iter().filter(|l| l.version.is_some()).collect();
        assert!(
            lost.iter()
                .any(|l| l.path == "tenant/acme/s0150" && l.version == Some(1)),
            "the damaged page's rows are named: {lost:?}"
        );
        assert!(lost.len() < 30, "one page's rows only: {}", lost.len());
        let (mut kept, mut destroyed) = (BTreeSet::new(), BTreeSet::new());
        for item in &items {
            if let DumpItem::Version { name, version, .. } = item {
                if version.destroyed {
                    destroyed.insert(name.as_str().to_owned());
                } else {
                    kept.insert(name.as_str().to_owned());
                }
            }
        }
        assert_eq!(kept.len() + destroyed.len(), 300, "every version is there");
        assert_eq!(destroyed.len(), lost.len(), "the lost ones as destroyed");
        assert!(kept.contains("s0299"), "rows after the page are found");

        // Imported, every kept version decrypts to its value.
        let copy = SqliteStore::open(dir.path().join("copy.db")).unwrap();
        copy.import(&mut items.into_iter().map(Ok)).unwrap();
        let vault = Vault::open(copy, &Unlock::KeyFile(key), VaultOptions::default()).unwrap();
        for name in &kept {
            let i: usize = name[1..].parse().unwrap();
            let p = SecretPath::parse(&format!("tenant/acme/{name}")).unwrap();
            assert!(vault.get(&p).unwrap().value.expose() == value(i).as_bytes());
        }
        vault.verify_audit().unwrap().unwrap();
        // The damaged file was not written.
        assert!(std::fs::read(&db).unwrap() == bytes);
    }

    #[test]
    fn a_cut_off_schema_is_an_integrity_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("v.db");
        drop(SqliteStore::open(&db).unwrap());
        checkpoint(&db);
        // Keep page 1 only: the schema's other pages are gone.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&db)
            .unwrap()
            .set_len(4096)
            .unwrap();
        match salvage_all(&db) {
            Err(Error::Integrity(m)) => {
                assert!(
                    m.contains(&db.display().to_string()) && m.contains("schema"),
                    "{m}"
                )
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
