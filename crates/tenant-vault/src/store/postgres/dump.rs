//! Whole-vault export and import of the PostgreSQL store:
//! [`Store::export`](crate::Store::export) and [`Store::import`](crate::Store::import).

use tokio_postgres::{IsolationLevel, Row};

use super::{
    AUDIT_COLUMNS, DATA_KEY_COLUMNS, PostgresStore, SCOPE_COLUMNS, TOKEN_COLUMNS, audit_from_row,
    begin, bump, col, col_name, col_opt_u64, col_u32, col_u64, data_key_from_row, db, execute,
    insert_data_key, insert_root, opt_i64, query_one, query_opt, root_from_row, scope_from_row,
    to_i64, token_from_row, version_from_row,
};
use crate::error::{Error, Result};
use crate::store::{
    DumpItem, ImportCount, Limits, ScopeDump, ScopeId, SecretRecord, Timestamp, TokenKindRecord,
    no_root, not_empty,
};

/// Rows fetched per round trip while exporting.
const BATCH: i32 = 512;

/// Runs `sql` through a portal and hands each row, converted by `row`, to
/// `sink`, [`BATCH`] rows per round trip (never the whole table in memory).
async fn each(
    tx: &deadpool_postgres::Transaction<'_>,
    ctx: &'static str,
    sql: &str,
    row: impl Fn(&Row) -> Result<DumpItem>,
    sink: &mut dyn FnMut(DumpItem) -> Result<()>,
) -> Result<()> {
    let stmt = tx.prepare_cached(sql).await.map_err(db(ctx))?;
    let portal = tx.bind(&stmt, &[]).await.map_err(db(ctx))?;
    loop {
        let rows = tx.query_portal(&portal, BATCH).await.map_err(db(ctx))?;
        for r in &rows {
            sink(row(r)?)?;
        }
        if rows.len() < BATCH as usize {
            return Ok(());
        }
    }
}

pub(super) fn export(
    store: &PostgresStore,
    sink: &mut dyn FnMut(DumpItem) -> Result<()>,
) -> Result<()> {
    const CTX: &str = "exporting the vault";
    store.block(async {
        let mut c = store.conn().await?;
        // REPEATABLE READ: every statement reads the snapshot of the first.
        let tx = c
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db(CTX))?;
        if let Some(r) = query_opt(
            &tx,
            CTX,
            "SELECT method, kdf_m_cost, kdf_t_cost, kdf_p_cost, salt, version, wrapped,
                    created_at, rotated_at FROM root_key WHERE id = 1",
            &[],
        )
        .await?
        {
            sink(DumpItem::Root(root_from_row(&r)?))?;
        }
        each(
            &tx,
            CTX,
            "SELECT name, max_secrets, max_bytes, max_tokens, rate_per_sec, burst
             FROM plans ORDER BY name",
            |r| {
                Ok(DumpItem::Plan(Limits {
                    plan: col(r, 0)?,
                    max_secrets: col_u64(r, 1)?,
                    max_bytes: col_u64(r, 2)?,
                    max_tokens: col_u64(r, 3)?,
                    rate_per_sec: col(r, 4)?,
                    burst: col_u64(r, 5)?,
                }))
            },
            sink,
        )
        .await?;
        each(
            &tx,
            CTX,
            &format!(
                "SELECT {SCOPE_COLUMNS}, plan, max_secrets, max_bytes, max_tokens, rate_per_sec,
                        bytes_used
                 FROM scopes ORDER BY id"
            ),
            |r| {
                Ok(DumpItem::Scope(ScopeDump {
                    scope: scope_from_row(r)?,
                    plan: col(r, 5)?,
                    max_secrets: col_opt_u64(r, 6)?,
                    max_bytes: col_opt_u64(r, 7)?,
                    max_tokens: col_opt_u64(r, 8)?,
                    rate_per_sec: col(r, 9)?,
                    bytes_used: col_u64(r, 10)?,
                }))
            },
            sink,
        )
        .await?;
        each(
            &tx,
            CTX,
            &format!("SELECT {DATA_KEY_COLUMNS} FROM data_keys ORDER BY scope_id, version"),
            |r| data_key_from_row(r).map(DumpItem::DataKey),
            sink,
        )
        .await?;
        each(
            &tx,
            CTX,
            "SELECT scope_id, name, current_version, max_versions, custom_metadata, created_at,
                    updated_at
             FROM secrets ORDER BY scope_id, name",
            |r| {
                let custom: String = col(r, 4)?;
                Ok(DumpItem::Secret {
                    scope: ScopeId(col(r, 0)?),
                    secret: SecretRecord {
                        name: col_name(r, 1)?,
                        current_version: col_u64(r, 2)?,
                        max_versions: col_u32(r, 3)?,
                        custom: serde_json::from_str(&custom).map_err(|e| {
                            Error::storage(CTX, format!("custom metadata does not parse: {e}"))
                        })?,
                        created_at: Timestamp(col(r, 5)?),
                        updated_at: Timestamp(col(r, 6)?),
                    },
                })
            },
            sink,
        )
        .await?;
        each(
            &tx,
            CTX,
            "SELECT scope_id, name, version, created_at, deleted_at, destroyed, key_version,
                    nonce, ciphertext
             FROM versions ORDER BY scope_id, name, version",
            |r| {
                Ok(DumpItem::Version {
                    scope: ScopeId(col(r, 0)?),
                    name: col_name(r, 1)?,
                    version: version_from_row(r, 2, true)?,
                })
            },
            sink,
        )
        .await?;
        each(
            &tx,
            CTX,
            &format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens t LEFT JOIN scopes sc ON sc.id = t.scope_id
                 ORDER BY t.id"
            ),
            |r| token_from_row(r).map(DumpItem::Token),
            sink,
        )
        .await?;
        each(
            &tx,
            CTX,
            &format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY seq"),
            |r| audit_from_row(r).map(DumpItem::Audit),
            sink,
        )
        .await?;
        tx.commit().await.map_err(db(CTX))
    })
}

pub(super) fn import(
    store: &PostgresStore,
    items: &mut dyn Iterator<Item = Result<DumpItem>>,
) -> Result<ImportCount> {
    const CTX: &str = "importing a vault";
    store.block(async {
        let mut c = store.conn().await?;
        // Any early return drops the transaction: a rollback.
        let tx = begin(&mut c, CTX).await?;
        // Writers wait until the import commits or rolls back, so the
        // emptiness checked here holds until then (readers do not wait).
        tx.batch_execute("LOCK TABLE root_key, scopes, tokens, audit_log IN EXCLUSIVE MODE")
            .await
            .map_err(db(CTX))?;
        let r = query_one(
            &tx,
            CTX,
            "SELECT EXISTS (SELECT 1 FROM root_key), (SELECT count(*) FROM scopes),
                    (SELECT count(*) FROM tokens), (SELECT count(*) FROM audit_log)",
            &[],
        )
        .await?;
        if let Some(refused) = not_empty(
            col(&r, 0)?,
            col_u64(&r, 1)?,
            col_u64(&r, 2)?,
            col_u64(&r, 3)?,
        ) {
            return Err(refused);
        }
        let mut count = ImportCount::default();
        let mut saw_root = false;
        for item in items {
            let item = item?;
            match &item {
                DumpItem::Root(root) => {
                    // The target was checked empty under the table locks.
                    if insert_root(&tx, CTX, root).await? != 1 {
                        return Err(Error::AlreadyInitialized);
                    }
                    saw_root = true;
                }
                DumpItem::Plan(p) => {
                    execute(
                        &tx,
                        CTX,
                        "INSERT INTO plans (name, max_secrets, max_bytes, max_tokens,
                                            rate_per_sec, burst)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (name) DO UPDATE SET
                             max_secrets = excluded.max_secrets, max_bytes = excluded.max_bytes,
                             max_tokens = excluded.max_tokens,
                             rate_per_sec = excluded.rate_per_sec, burst = excluded.burst",
                        &[
                            &p.plan,
                            &to_i64(p.max_secrets)?,
                            &to_i64(p.max_bytes)?,
                            &to_i64(p.max_tokens)?,
                            &p.rate_per_sec,
                            &to_i64(p.burst)?,
                        ],
                    )
                    .await?;
                }
                DumpItem::Scope(s) => {
                    execute(
                        &tx,
                        CTX,
                        "INSERT INTO scopes (id, slug, kind, created_at, active_key_version,
                                             plan, max_secrets, max_bytes, max_tokens,
                                             rate_per_sec, bytes_used)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                        &[
                            &s.scope.id.0,
                            &s.scope.slug.as_str(),
                            &s.scope.kind.as_str(),
                            &s.scope.created_at.0,
                            &i64::from(s.scope.active_key_version),
                            &s.plan,
                            &opt_i64(s.max_secrets)?,
                            &opt_i64(s.max_bytes)?,
                            &opt_i64(s.max_tokens)?,
                            &s.rate_per_sec,
                            &to_i64(s.bytes_used)?,
                        ],
                    )
                    .await?;
                }
                DumpItem::DataKey(k) => insert_data_key(&tx, CTX, k).await?,
                DumpItem::Secret { scope, secret } => {
                    let custom = serde_json::to_string(&secret.custom)
                        .map_err(|e| Error::storage(CTX, e))?;
                    execute(
                        &tx,
                        CTX,
                        "INSERT INTO secrets (scope_id, name, current_version, max_versions,
                                              custom_metadata, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        &[
                            &scope.0,
                            &secret.name.as_str(),
                            &to_i64(secret.current_version)?,
                            &i64::from(secret.max_versions),
                            &custom,
                            &secret.created_at.0,
                            &secret.updated_at.0,
                        ],
                    )
                    .await?;
                }
                DumpItem::Version {
                    scope,
                    name,
                    version: v,
                } => {
                    execute(
                        &tx,
                        CTX,
                        "INSERT INTO versions (scope_id, name, version, created_at, deleted_at,
                                               destroyed, key_version, nonce, ciphertext)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        &[
                            &scope.0,
                            &name.as_str(),
                            &to_i64(v.version)?,
                            &v.created_at.0,
                            &v.deleted_at.map(|t| t.0),
                            &v.destroyed,
                            &v.key_version.map(i64::from),
                            &v.nonce,
                            &v.ciphertext,
                        ],
                    )
                    .await?;
                }
                DumpItem::Token(t) => {
                    execute(
                        &tx,
                        CTX,
                        "INSERT INTO tokens (id, hash, kind, scope_id, role, policy, description,
                                             created_at, expires_at, revoked_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        &[
                            &t.id,
                            &t.hash,
                            &match t.kind {
                                TokenKindRecord::Operator => "operator",
                                _ => "tenant",
                            },
                            &t.scope.as_ref().map(|(id, _)| id.0.as_str()),
                            &t.role,
                            &t.policy,
                            &t.description,
                            &t.created_at.0,
                            &t.expires_at.map(|e| e.0),
                            &t.revoked_at.map(|e| e.0),
                        ],
                    )
                    .await?;
                }
                DumpItem::Audit(a) => {
                    let e = &a.entry;
                    execute(
                        &tx,
                        CTX,
                        "INSERT INTO audit_log (seq, time, request_id, principal, tenant,
                                               operation, path, version, outcome, prev_hash,
                                               hash)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                        &[
                            &to_i64(a.seq)?,
                            &e.time.0,
                            &e.request_id,
                            &e.principal,
                            &e.tenant,
                            &e.operation,
                            &e.path,
                            &opt_i64(e.version)?,
                            &e.outcome,
                            &a.prev_hash,
                            &a.hash,
                        ],
                    )
                    .await?;
                }
            }
            count.add(&item);
        }
        if !saw_root {
            return Err(no_root());
        }
        // Servers' caches of the (empty) store are stale now.
        bump(&tx, CTX).await?;
        tx.commit().await.map_err(db(CTX))?;
        Ok(count)
    })
}

#[cfg(test)]
mod tests {
    use pg_harness::{PgCluster, simple_query};

    use super::*;
    use crate::SqliteStore;
    use crate::store::Store;
    use crate::store::dump_tests::{Tokens, check_copy, entry, export_all, populate};

    /// A fresh database holding a populated vault (with a plan an operator
    /// added), its URL and the tokens issued.
    fn populated(key: &std::path::Path) -> (String, PostgresStore, Tokens) {
        let url = PgCluster::shared().fresh_database();
        drop(PostgresStore::connect(&url).unwrap());
        simple_query(
            &url,
            "INSERT INTO plans VALUES ('custom', 7, 70000, 3, 2.5, 5)",
        );
        let tokens = populate(Box::new(PostgresStore::connect(&url).unwrap()), key);
        (url.clone(), PostgresStore::connect(&url).unwrap(), tokens)
    }

    #[test]
    fn export_then_import_copies_everything_between_backends() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("vault.key");
        let (_, src, tokens) = populated(&key);
        let items = export_all(&src);

        // PostgreSQL to PostgreSQL.
        let pg = PostgresStore::connect(&PgCluster::shared().fresh_database()).unwrap();
        let count = pg
            .import(&mut items.iter().cloned().map(Ok::<_, Error>))
            .unwrap();
        assert_eq!((count.scopes, count.tokens), (2, 4));
        assert_eq!(export_all(&pg), items, "the copy exports the same items");
        check_copy(Box::new(pg), &key, &tokens);

        // PostgreSQL to SQLite, and back to a third PostgreSQL database.
        let lite = SqliteStore::open(dir.path().join("copy.db")).unwrap();
        lite.import(&mut items.iter().cloned().map(Ok::<_, Error>))
            .unwrap();
        let lite_items = export_all(&lite);
        assert_eq!(lite_items, items);
        let back = PostgresStore::connect(&PgCluster::shared().fresh_database()).unwrap();
        back.import(&mut lite_items.into_iter().map(Ok::<_, Error>))
            .unwrap();
        assert_eq!(export_all(&back), items);
        check_copy(Box::new(lite), &key, &tokens);
    }

    #[test]
    fn import_into_a_non_empty_database_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (_, src, _) = populated(&dir.path().join("vault.key"));
        let items = export_all(&src);
        match src.import(&mut items.iter().cloned().map(Ok::<_, Error>)) {
            Err(Error::StoreNotEmpty(what)) => {
                assert!(what.starts_with("a root key, 2 scopes, 4 tokens"), "{what}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(export_all(&src), items);

        let other = PostgresStore::connect(&PgCluster::shared().fresh_database()).unwrap();
        other.append_audit(&[entry()]).unwrap();
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
        let (_, src, _) = populated(&dir.path().join("vault.key"));
        let items = export_all(&src);
        let target = PostgresStore::connect(&PgCluster::shared().fresh_database()).unwrap();
        let empty = export_all(&target);
        let half = items.len() / 2;
        let mut broken = items[..half]
            .iter()
            .cloned()
            .map(Ok::<_, Error>)
            .chain(std::iter::once(Err(Error::storage("exporting", "gone"))));
        assert!(target.import(&mut broken).is_err());
        assert_eq!(export_all(&target), empty);
        let mut rootless = items[1..].iter().cloned().map(Ok::<_, Error>);
        assert!(matches!(
            target.import(&mut rootless),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(export_all(&target), empty);
        target
            .import(&mut items.iter().cloned().map(Ok::<_, Error>))
            .unwrap();
        assert_eq!(export_all(&target), items);
    }
}
