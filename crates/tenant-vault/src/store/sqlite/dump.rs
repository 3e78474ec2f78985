//! Whole-vault export and import of the SQLite store:
//! [`Store::export`](crate::Store::export) and [`Store::import`](crate::Store::import).

use rusqlite::{Connection, Row, params};

use super::{
    DATA_KEY_COLUMNS, SqliteStore, TOKEN_COLUMNS, audit_row, data_key_from_row, db, immediate,
    insert_data_key, limits_from_row, name_from_text, read_root, scope_from_row, token_from_row,
    version_from_row, write_root,
};
use crate::error::Result;
use crate::store::{
    DumpItem, ImportCount, ScopeDump, ScopeId, SecretRecord, Timestamp, TokenKindRecord, no_root,
    not_empty,
};

/// Runs `sql` and hands each row, converted by `row`, to `emit`, one at a
/// time (never the whole table in memory).
fn each<T>(
    conn: &Connection,
    ctx: &'static str,
    sql: &str,
    row: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
    mut emit: impl FnMut(T) -> Result<()>,
) -> Result<()> {
    let mut stmt = conn.prepare(sql).map_err(db(ctx))?;
    let mut rows = stmt.query([]).map_err(db(ctx))?;
    while let Some(r) = rows.next().map_err(db(ctx))? {
        emit(row(r).map_err(db(ctx))?)?;
    }
    Ok(())
}

/// The columns [`scope_dump_from_row`] reads.
pub(super) const SCOPE_DUMP_COLUMNS: &str =
    "id, slug, kind, created_at, active_key_version, plan, max_secrets, max_bytes, max_tokens,
     rate_per_sec, bytes_used";

/// A scope row with its plan, overrides and counter, as dumped.
pub(super) fn scope_dump_from_row(r: &Row<'_>) -> rusqlite::Result<ScopeDump> {
    Ok(ScopeDump {
        scope: scope_from_row(r)?,
        plan: r.get("plan")?,
        max_secrets: r.get("max_secrets")?,
        max_bytes: r.get("max_bytes")?,
        max_tokens: r.get("max_tokens")?,
        rate_per_sec: r.get("rate_per_sec")?,
        bytes_used: r.get("bytes_used")?,
    })
}

/// The columns [`secret_dump_from_row`] reads.
pub(super) const SECRET_DUMP_COLUMNS: &str =
    "scope_id, name, current_version, max_versions, custom_metadata, created_at, updated_at";

/// A secret row and the scope it belongs to, as dumped.
pub(super) fn secret_dump_from_row(r: &Row<'_>) -> rusqlite::Result<(ScopeId, SecretRecord)> {
    let custom: String = r.get(4)?;
    Ok((
        ScopeId(r.get(0)?),
        SecretRecord {
            name: name_from_text(&r.get::<_, String>(1)?)?,
            current_version: r.get(2)?,
            max_versions: r.get(3)?,
            custom: serde_json::from_str(&custom)
                .map_err(|e| super::conversion(format!("custom metadata: {e}")))?,
            created_at: Timestamp(r.get(5)?),
            updated_at: Timestamp(r.get(6)?),
        },
    ))
}

/// A version row's columns, ciphertext included (for `version_from_row`
/// with the ciphertext).
pub(super) const VERSION_DUMP_COLUMNS: &str =
    "scope_id, name, version, created_at, deleted_at, destroyed, key_version, nonce, ciphertext";

pub(super) fn export(
    store: &SqliteStore,
    sink: &mut dyn FnMut(DumpItem) -> Result<()>,
) -> Result<()> {
    const CTX: &str = "exporting the vault";
    let mut conn = store.reader();
    // One read transaction: under WAL, every statement below reads the
    // snapshot the first one started.
    let tx = conn.transaction().map_err(db(CTX))?;
    if let Some(root) = read_root(&tx).map_err(db(CTX))? {
        sink(DumpItem::Root(root))?;
    }
    each(
        &tx,
        CTX,
        "SELECT name AS plan, max_secrets, max_bytes, max_tokens, rate_per_sec, burst
         FROM plans ORDER BY name",
        limits_from_row,
        |p| sink(DumpItem::Plan(p)),
    )?;
    each(
        &tx,
        CTX,
        &format!("SELECT {SCOPE_DUMP_COLUMNS} FROM scopes ORDER BY id"),
        scope_dump_from_row,
        |s| sink(DumpItem::Scope(s)),
    )?;
    each(
        &tx,
        CTX,
        &format!("SELECT {DATA_KEY_COLUMNS} FROM data_keys ORDER BY scope_id, version"),
        data_key_from_row,
        |k| sink(DumpItem::DataKey(k)),
    )?;
    each(
        &tx,
        CTX,
        &format!("SELECT {SECRET_DUMP_COLUMNS} FROM secrets ORDER BY scope_id, name"),
        secret_dump_from_row,
        |(scope, secret)| sink(DumpItem::Secret { scope, secret }),
    )?;
    each(
        &tx,
        CTX,
        &format!("SELECT {VERSION_DUMP_COLUMNS} FROM versions ORDER BY scope_id, name, version"),
        |r| {
            Ok((
                ScopeId(r.get("scope_id")?),
                name_from_text(&r.get::<_, String>("name")?)?,
                version_from_row(r, true)?,
            ))
        },
        |(scope, name, version)| {
            sink(DumpItem::Version {
                scope,
                name,
                version,
            })
        },
    )?;
    each(
        &tx,
        CTX,
        &format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens t LEFT JOIN scopes sc ON sc.id = t.scope_id
             ORDER BY t.id"
        ),
        token_from_row,
        |t| sink(DumpItem::Token(t)),
    )?;
    each(
        &tx,
        CTX,
        "SELECT seq, time, request_id, principal, tenant, operation, path, version, outcome,
                prev_hash, hash
         FROM audit_log ORDER BY seq",
        audit_row,
        |a| sink(DumpItem::Audit(a)),
    )?;
    tx.commit().map_err(db(CTX))
}

pub(super) fn import(
    store: &SqliteStore,
    items: &mut dyn Iterator<Item = Result<DumpItem>>,
) -> Result<ImportCount> {
    const CTX: &str = "importing a vault";
    let mut conn = store.writer();
    // IMMEDIATE: the emptiness check and the writes hold the write lock
    // together. Any early return drops the transaction: a rollback.
    let tx = immediate(&mut conn)?;
    let (root, scopes, tokens, audit): (bool, u64, u64, u64) = tx
        .query_row(
            "SELECT EXISTS (SELECT 1 FROM root_key), (SELECT count(*) FROM scopes),
                    (SELECT count(*) FROM tokens), (SELECT count(*) FROM audit_log)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .map_err(db(CTX))?;
    if let Some(refused) = not_empty(root, scopes, tokens, audit) {
        return Err(refused);
    }
    let mut count = ImportCount::default();
    let mut saw_root = false;
    for item in items {
        let item = item?;
        match &item {
            DumpItem::Root(r) => {
                write_root(&tx, r, true).map_err(db(CTX))?;
                saw_root = true;
            }
            DumpItem::Plan(p) => {
                tx.prepare_cached(
                    "INSERT INTO plans (name, max_secrets, max_bytes, max_tokens, rate_per_sec,
                                        burst)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (name) DO UPDATE SET
                         max_secrets = excluded.max_secrets, max_bytes = excluded.max_bytes,
                         max_tokens = excluded.max_tokens, rate_per_sec = excluded.rate_per_sec,
                         burst = excluded.burst",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        p.plan,
                        p.max_secrets,
                        p.max_bytes,
                        p.max_tokens,
                        p.rate_per_sec,
                        p.burst
                    ])
                })
                .map_err(db(CTX))?;
            }
            DumpItem::Scope(s) => {
                tx.prepare_cached(
                    "INSERT INTO scopes (id, slug, kind, created_at, active_key_version, plan,
                                         max_secrets, max_bytes, max_tokens, rate_per_sec,
                                         bytes_used)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        s.scope.id.0,
                        s.scope.slug.as_str(),
                        s.scope.kind.as_str(),
                        s.scope.created_at.0,
                        s.scope.active_key_version,
                        s.plan,
                        s.max_secrets,
                        s.max_bytes,
                        s.max_tokens,
                        s.rate_per_sec,
                        s.bytes_used
                    ])
                })
                .map_err(db(CTX))?;
            }
            DumpItem::DataKey(k) => {
                insert_data_key(&tx, k).map_err(db(CTX))?;
            }
            DumpItem::Secret { scope, secret } => {
                let custom = serde_json::to_string(&secret.custom)
                    .map_err(|e| crate::Error::storage(CTX, e))?;
                tx.prepare_cached(
                    "INSERT INTO secrets (scope_id, name, current_version, max_versions,
                                          custom_metadata, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        scope.0,
                        secret.name.as_str(),
                        secret.current_version,
                        secret.max_versions,
                        custom,
                        secret.created_at.0,
                        secret.updated_at.0
                    ])
                })
                .map_err(db(CTX))?;
            }
            DumpItem::Version {
                scope,
                name,
                version: v,
            } => {
                tx.prepare_cached(
                    "INSERT INTO versions (scope_id, name, version, created_at, deleted_at,
                                           destroyed, key_version, nonce, ciphertext)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        scope.0,
                        name.as_str(),
                        v.version,
                        v.created_at.0,
                        v.deleted_at.map(|t| t.0),
                        v.destroyed,
                        v.key_version,
                        v.nonce,
                        v.ciphertext
                    ])
                })
                .map_err(db(CTX))?;
            }
            DumpItem::Token(t) => {
                tx.prepare_cached(
                    "INSERT INTO tokens (id, hash, kind, scope_id, role, policy, description,
                                         created_at, expires_at, revoked_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        t.id,
                        t.hash,
                        match t.kind {
                            TokenKindRecord::Operator => "operator",
                            _ => "tenant",
                        },
                        t.scope.as_ref().map(|(id, _)| id.0.as_str()),
                        t.role,
                        t.policy,
                        t.description,
                        t.created_at.0,
                        t.expires_at.map(|e| e.0),
                        t.revoked_at.map(|e| e.0)
                    ])
                })
                .map_err(db(CTX))?;
            }
            DumpItem::Audit(a) => {
                let e = &a.entry;
                tx.prepare_cached(
                    "INSERT INTO audit_log (seq, time, request_id, principal, tenant, operation,
                                           path, version, outcome, prev_hash, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        a.seq,
                        e.time.0,
                        e.request_id,
                        e.principal,
                        e.tenant,
                        e.operation,
                        e.path,
                        e.version,
                        e.outcome,
                        a.prev_hash,
                        a.hash
                    ])
                })
                .map_err(db(CTX))?;
            }
        }
        count.add(&item);
    }
    if !saw_root {
        return Err(no_root());
    }
    super::bump(&tx).map_err(db(CTX))?;
    tx.commit().map_err(db(CTX))?;
    Ok(count)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::Error;
    use crate::store::Store;
    use crate::store::dump_tests::{Tokens, check_copy, export_all, populate};

    /// A populated store: the vault is written through the public API, with
    /// a plan an operator added (raw SQL, as operators do).
    pub(in crate::store::sqlite) fn populated(dir: &std::path::Path) -> (SqliteStore, Tokens) {
        let db = dir.join("src.db");
        drop(SqliteStore::open(&db).unwrap());
        Connection::open(&db)
            .unwrap()
            .execute(
                "INSERT INTO plans VALUES ('custom', 7, 70000, 3, 2.5, 5)",
                [],
            )
            .unwrap();
        let tokens = populate(
            Box::new(SqliteStore::open(&db).unwrap()),
            &dir.join("vault.key"),
        );
        (SqliteStore::open(&db).unwrap(), tokens)
    }

    #[test]
    fn export_then_import_copies_everything() {
        let dir = tempfile::tempdir().unwrap();
        let (src, tokens) = populated(dir.path());
        let items = export_all(&src);
        let target = SqliteStore::open(dir.path().join("dst.db")).unwrap();
        let count = target
            .import(&mut items.iter().cloned().map(Ok::<_, Error>))
            .unwrap();
        assert_eq!(count.scopes, 2);
        assert!(count.versions >= 5 && count.tokens == 4 && count.audit_records > 10);
        assert_eq!(
            export_all(&target),
            items,
            "the copy exports the same items"
        );
        check_copy(Box::new(target), &dir.path().join("vault.key"), &tokens);
    }

    #[test]
    fn import_into_a_non_empty_store_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (src, _) = populated(dir.path());
        let items = export_all(&src);
        // Into itself: refused, nothing changes.
        match src.import(&mut items.iter().cloned().map(Ok::<_, Error>)) {
            Err(Error::StoreNotEmpty(what)) => assert!(what.contains("a root key"), "{what}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(export_all(&src), items);

        // A store holding only audit records is not empty either.
        let other = SqliteStore::open(dir.path().join("other.db")).unwrap();
        other
            .append_audit(&[crate::store::dump_tests::entry()])
            .unwrap();
        let before = export_all(&other);
        match other.import(&mut items.iter().cloned().map(Ok::<_, Error>)) {
            Err(Error::StoreNotEmpty(what)) => assert_eq!(what, "1 audit record"),
            r => panic!("{r:?}"),
        }
        assert_eq!(export_all(&other), before);
    }

    #[test]
    fn a_failed_import_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (src, _) = populated(dir.path());
        let items = export_all(&src);
        let target = SqliteStore::open(dir.path().join("dst.db")).unwrap();
        let empty = export_all(&target);
        // The source fails halfway: nothing of the first half stays.
        let half = items.len() / 2;
        let mut broken = items[..half]
            .iter()
            .cloned()
            .map(Ok::<_, Error>)
            .chain(std::iter::once(Err(Error::storage("exporting", "gone"))));
        assert!(target.import(&mut broken).is_err());
        assert_eq!(export_all(&target), empty);
        // A dump without a root record is refused.
        let mut rootless = items[1..].iter().cloned().map(Ok::<_, Error>);
        assert!(matches!(
            target.import(&mut rootless),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(export_all(&target), empty);
        // And the store still takes the whole dump afterwards.
        target
            .import(&mut items.iter().cloned().map(Ok::<_, Error>))
            .unwrap();
        assert_eq!(export_all(&target), items);
    }
}
