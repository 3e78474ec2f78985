//! The SQLite store: WAL, `synchronous=FULL`, foreign keys, `secure_delete`,
//! a busy timeout, append-only migrations tracked by `user_version`.
//!
//! One connection writes (behind a mutex, every write an `IMMEDIATE`
//! transaction); a small pool of connections reads concurrently, which WAL
//! allows without blocking the writer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior, params,
};

use super::{
    AuditEntry, AuditRecord, Changed, DataKeyRecord, DumpItem, FoundVersion, LimitChange, Limits,
    Lookup, PutOutcome, PutParams, RootRecord, ScopeId, ScopeKind, ScopeRecord, ScopeUsage,
    SealInput, Sealed, SecretRecord, Store, StoredVersion, Timestamp, TokenInsert, TokenKindRecord,
    TokenRecord, TokenRevoke, UnlockMethod, VersionChange, VersionSelector,
};
use crate::crypto::KdfParams;
use crate::error::{Error, Result};
use crate::path::{SecretName, Slug};

mod dump;
mod salvage;

pub use salvage::{LostItem, Salvaged};

/// Read connections kept open besides the writer.
const READERS: usize = 4;
/// How long a statement waits for a lock held by another connection.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The schema, one append-only step per entry. Step `i` brings the schema
/// from `user_version = i` to `i + 1`. Never edit a released step: add one.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: root key, scopes, data keys, secrets, versions.
    "CREATE TABLE root_key (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        method      TEXT    NOT NULL CHECK (method IN ('passphrase', 'keyfile')),
        kdf_m_cost  INTEGER,
        kdf_t_cost  INTEGER,
        kdf_p_cost  INTEGER,
        salt        BLOB,
        version     INTEGER NOT NULL,
        wrapped     BLOB    NOT NULL,
        created_at  INTEGER NOT NULL,
        rotated_at  INTEGER NOT NULL
    );
    CREATE TABLE scopes (
        id                  TEXT    PRIMARY KEY,
        slug                TEXT    NOT NULL UNIQUE,
        kind                TEXT    NOT NULL CHECK (kind IN ('enterprise', 'freelance')),
        created_at          INTEGER NOT NULL,
        active_key_version  INTEGER NOT NULL
    );
    CREATE TABLE data_keys (
        scope_id      TEXT    NOT NULL REFERENCES scopes (id) ON DELETE CASCADE,
        version       INTEGER NOT NULL,
        root_version  INTEGER NOT NULL,
        wrapped       BLOB    NOT NULL,
        encryptions   INTEGER NOT NULL DEFAULT 0,
        created_at    INTEGER NOT NULL,
        PRIMARY KEY (scope_id, version)
    );
    CREATE TABLE secrets (
        scope_id         TEXT    NOT NULL REFERENCES scopes (id) ON DELETE CASCADE,
        name             TEXT    NOT NULL,
        current_version  INTEGER NOT NULL,
        max_versions     INTEGER NOT NULL,
        custom_metadata  TEXT    NOT NULL DEFAULT '{}',
        created_at       INTEGER NOT NULL,
        updated_at       INTEGER NOT NULL,
        PRIMARY KEY (scope_id, name)
    );
    CREATE TABLE versions (
        scope_id     TEXT    NOT NULL,
        name         TEXT    NOT NULL,
        version      INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        deleted_at   INTEGER,
        destroyed    INTEGER NOT NULL DEFAULT 0,
        key_version  INTEGER,
        nonce        BLOB,
        ciphertext   BLOB,
        PRIMARY KEY (scope_id, name, version),
        FOREIGN KEY (scope_id, name) REFERENCES secrets (scope_id, name) ON DELETE CASCADE,
        CHECK ((destroyed = 0) = (ciphertext IS NOT NULL))
    );",
    // 2: plans and per-tenant limits, stored-bytes counter, tokens, audit log.
    "CREATE TABLE plans (
        name          TEXT    PRIMARY KEY,
        max_secrets   INTEGER NOT NULL,
        max_bytes     INTEGER NOT NULL,
        max_tokens    INTEGER NOT NULL,
        rate_per_sec  REAL    NOT NULL,
        burst         INTEGER NOT NULL
    );
    INSERT INTO plans VALUES ('starter',       100,    1048576,   10,   20.0,   40);
    INSERT INTO plans VALUES ('pro',          1000,   16777216,  100,  100.0,  200);
    INSERT INTO plans VALUES ('enterprise', 100000, 1073741824, 1000, 1000.0, 2000);
    -- No column REFERENCES: SQLite refuses one with a default on a populated
    -- table while foreign keys are on. Plan names are checked on write.
    ALTER TABLE scopes ADD COLUMN plan TEXT NOT NULL DEFAULT 'starter';
    ALTER TABLE scopes ADD COLUMN max_secrets INTEGER;
    ALTER TABLE scopes ADD COLUMN max_bytes INTEGER;
    ALTER TABLE scopes ADD COLUMN max_tokens INTEGER;
    ALTER TABLE scopes ADD COLUMN rate_per_sec REAL;
    ALTER TABLE scopes ADD COLUMN bytes_used INTEGER NOT NULL DEFAULT 0;
    UPDATE scopes SET plan = CASE kind WHEN 'enterprise' THEN 'enterprise' ELSE 'starter' END;
    UPDATE scopes SET bytes_used = (SELECT coalesce(sum(length(ciphertext)), 0)
                                    FROM versions WHERE versions.scope_id = scopes.id);
    CREATE TABLE tokens (
        id           TEXT    PRIMARY KEY,
        hash         BLOB    NOT NULL UNIQUE,
        kind         TEXT    NOT NULL CHECK (kind IN ('tenant', 'operator')),
        scope_id     TEXT    REFERENCES scopes (id) ON DELETE CASCADE,
        role         TEXT    NOT NULL,
        policy       TEXT    NOT NULL,
        description  TEXT    NOT NULL DEFAULT '',
        created_at   INTEGER NOT NULL,
        expires_at   INTEGER,
        revoked_at   INTEGER,
        CHECK ((kind = 'tenant') = (scope_id IS NOT NULL))
    );
    CREATE INDEX tokens_by_scope ON tokens (scope_id);
    CREATE TABLE audit_log (
        seq         INTEGER PRIMARY KEY,
        time        INTEGER NOT NULL,
        request_id  TEXT    NOT NULL,
        principal   TEXT    NOT NULL,
        tenant      TEXT    NOT NULL,
        operation   TEXT    NOT NULL,
        path        TEXT    NOT NULL,
        version     INTEGER,
        outcome     TEXT    NOT NULL,
        prev_hash   BLOB    NOT NULL,
        hash        BLOB    NOT NULL
    );",
    // 3: the cache marker: bumped by every change a server caches (root,
    // scopes, data keys, limits, tokens), read by `cache_marker`.
    "CREATE TABLE vault_state (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        changes  INTEGER NOT NULL
    );
    INSERT INTO vault_state VALUES (1, 0);",
];

/// Maps a backend error to [`Error::Storage`] with what was being done, or
/// to [`Error::Integrity`] when SQLite found the file damaged (a page or the
/// header that does not parse): that is not a passing failure to retry.
fn db(context: &'static str) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| {
        if matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        ) {
            Error::Integrity(format!("the database ({context}: {e})"))
        } else {
            Error::storage(context, e)
        }
    }
}

/// A vault store in one SQLite database file.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Only asked for `PRAGMA data_version`, which changes when any other
    /// connection (this process's writer included) commits.
    marker: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its
    /// schema up to date. A file that is damaged is an [`Error::Integrity`]
    /// naming it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::open_file(path.to_owned()).map_err(|e| match e {
            Error::Integrity(what) => Error::Integrity(format!(
                "{}: {}",
                path.display(),
                truncation(path).unwrap_or(what)
            )),
            other => other,
        })
    }

    /// Reads whatever can still be read of the damaged vault file at `path`
    /// (truncated, or with pages that do not parse) and streams it to
    /// `sink` as a dump, in [`Store::export`]'s order, for
    /// [`Store::import`] into a new, empty store. The file is opened
    /// read-only and never changed.
    ///
    /// Every row is read on its own, so a damaged page loses only the rows
    /// it held. A version whose value cannot be read is copied as destroyed
    /// (its secret keeps its history; reading it says the value is gone);
    /// what depends on a lost row goes with it (the versions of a lost
    /// secret, those sealed by a lost data key, a lost tenant's items). The
    /// audit chain is copied up to its first unreadable record, so the copy
    /// verifies. The report names each item lost, never a value.
    ///
    /// Fails, copying nothing, when the schema or the root key record cannot
    /// be read: then no secret in the file can be decrypted.
    pub fn salvage(
        path: impl AsRef<Path>,
        sink: &mut dyn FnMut(DumpItem) -> Result<()>,
    ) -> Result<Salvaged> {
        salvage::salvage(path.as_ref(), sink)
    }

    fn open_file(path: PathBuf) -> Result<Self> {
        let mut writer = Connection::open(&path).map_err(db("opening the database"))?;
        configure(&writer).map_err(db("configuring the database"))?;
        let mode: String = writer
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(db("enabling WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::storage(
                "enabling WAL",
                format!("the database stays in journal mode {mode}"),
            ));
        }
        migrate(&mut writer, MIGRATIONS.len())?;
        let readers = (0..READERS)
            .map(|_| {
                let c = Connection::open_with_flags(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                configure(&c)?;
                Ok(Mutex::new(c))
            })
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(db("opening read connections"))?;
        let marker = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| configure(&c).map(|()| c))
            .map_err(db("opening read connections"))?;
        Ok(SqliteStore {
            path,
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            marker: Mutex::new(marker),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a transaction open:
        // rusqlite rolls back an unfinished transaction when it is dropped.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.readers.len() {
            if let Ok(c) = self.readers[(start + i) % self.readers.len()].try_lock() {
                return c;
            }
        }
        self.readers[start % self.readers.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Copies the WAL into the database file and truncates it, so that bytes
    /// that were just deleted (zeroed by `secure_delete`) leave no copy in the
    /// log.
    fn checkpoint(conn: &Connection) -> Result<()> {
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(db("checkpointing the write-ahead log"))
    }
}

/// When the file at `path` is shorter than its header says, what is
/// missing (SQLite reports only "malformed"). The header's page count is
/// trusted only when SQLite marked it valid (offset 92 equal to the change
/// counter at offset 24).
fn truncation(path: &Path) -> Option<String> {
    let mut header = [0u8; 100];
    let mut file = std::fs::File::open(path).ok()?;
    std::io::Read::read_exact(&mut file, &mut header).ok()?;
    let len = file.metadata().ok()?.len();
    let u32_at = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let page_size = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65_536u64,
        n => u64::from(n),
    };
    let pages = u64::from(u32_at(28));
    if page_size == 0 || pages == 0 || u32_at(24) != u32_at(92) || len >= pages * page_size {
        return None;
    }
    Some(format!(
        "the file is truncated: it holds {} of the {pages} pages its header records ({len} of {} bytes); \
         `secret-mcp migrate --salvage` copies what can still be read into a new store",
        len / page_size,
        pages * page_size
    ))
}

fn configure(c: &Connection) -> rusqlite::Result<()> {
    c.busy_timeout(BUSY_TIMEOUT)?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    c.pragma_update(None, "synchronous", "FULL")?;
    c.pragma_update(None, "secure_delete", "ON")?;
    // 16 MiB of page cache per connection keeps every B-tree's inner pages
    // in memory for millions of secrets.
    c.pragma_update(None, "cache_size", -16_384)?;
    c.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Applies migrations until the schema is at `target` (each step in its own
/// transaction, with the version bump). Refuses a schema newer than this build.
pub(crate) fn migrate(conn: &mut Connection, target: usize) -> Result<()> {
    let current: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db("reading the schema version"))?;
    let supported = u32::try_from(MIGRATIONS.len()).expect("few migrations");
    if current > supported {
        return Err(Error::SchemaTooNew {
            found: current,
            supported,
        });
    }
    for (i, step) in MIGRATIONS
        .iter()
        .enumerate()
        .take(target)
        .skip(current as usize)
    {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db("migrating the schema"))?;
        tx.execute_batch(step).map_err(db("migrating the schema"))?;
        tx.pragma_update(None, "user_version", i + 1)
            .map_err(db("migrating the schema"))?;
        tx.commit().map_err(db("migrating the schema"))?;
    }
    Ok(())
}

/// Extends the audit chain from its stored end, inside `tx` (the caller's
/// transaction: a mutation's record commits with the mutation).
fn append_in(
    tx: &Transaction<'_>,
    entries: impl IntoIterator<Item = AuditEntry>,
) -> rusqlite::Result<Vec<AuditRecord>> {
    let mut entries = entries.into_iter().peekable();
    if entries.peek().is_none() {
        return Ok(Vec::new());
    }
    let (mut seq, mut prev): (u64, Vec<u8>) = tx
        .query_row(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, vec![0u8; 32]));
    let mut stmt = tx.prepare_cached(
        "INSERT INTO audit_log (seq, time, request_id, principal, tenant, operation, path,
                                version, outcome, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?;
    let mut out = Vec::new();
    for e in entries {
        seq += 1;
        let hash = crate::audit::chain_hash(&prev, seq, &e).to_vec();
        stmt.execute(params![
            seq,
            e.time.0,
            e.request_id,
            e.principal,
            e.tenant,
            e.operation,
            e.path,
            e.version,
            e.outcome,
            prev,
            hash
        ])?;
        out.push(AuditRecord {
            seq,
            entry: e,
            prev_hash: std::mem::replace(&mut prev, hash.clone()),
            hash,
        });
    }
    Ok(out)
}

/// Moves the cache marker, inside `tx` (see [`Store::cache_marker`]).
pub(super) fn bump(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    tx.execute(
        "UPDATE vault_state SET changes = changes + 1 WHERE id = 1",
        [],
    )
    .map(drop)
}

fn immediate(conn: &mut Connection) -> Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db("starting a transaction"))
}

fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::InvalidArgument(format!("{n} is out of range")))
}

fn scope_from_row(r: &Row<'_>) -> rusqlite::Result<ScopeRecord> {
    let slug: String = r.get("slug")?;
    let kind: String = r.get("kind")?;
    Ok(ScopeRecord {
        id: ScopeId(r.get("id")?),
        slug: Slug::parse(&slug).map_err(|e| conversion(e.to_string()))?,
        kind: ScopeKind::parse(&kind).ok_or_else(|| conversion(format!("unknown kind {kind}")))?,
        created_at: Timestamp(r.get("created_at")?),
        active_key_version: r.get("active_key_version")?,
    })
}

fn data_key_from_row(r: &Row<'_>) -> rusqlite::Result<DataKeyRecord> {
    Ok(DataKeyRecord {
        scope_id: ScopeId(r.get("scope_id")?),
        version: r.get("version")?,
        root_version: r.get("root_version")?,
        wrapped: r.get("wrapped")?,
        encryptions: r.get("encryptions")?,
        created_at: Timestamp(r.get("created_at")?),
    })
}

fn version_from_row(r: &Row<'_>, with_ciphertext: bool) -> rusqlite::Result<StoredVersion> {
    Ok(StoredVersion {
        version: r.get("version")?,
        created_at: Timestamp(r.get("created_at")?),
        deleted_at: r.get::<_, Option<i64>>("deleted_at")?.map(Timestamp),
        destroyed: r.get("destroyed")?,
        key_version: r.get("key_version")?,
        nonce: if with_ciphertext {
            r.get("nonce")?
        } else {
            None
        },
        ciphertext: if with_ciphertext {
            r.get("ciphertext")?
        } else {
            None
        },
    })
}

fn name_from_text(s: &str) -> rusqlite::Result<SecretName> {
    SecretName::parse(s).map_err(|e| conversion(e.to_string()))
}

fn conversion(msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, msg.into())
}

const SCOPE_COLUMNS: &str = "id, slug, kind, created_at, active_key_version";
const DATA_KEY_COLUMNS: &str = "scope_id, version, root_version, wrapped, encryptions, created_at";

fn scope_id_of(tx: &Connection, slug: &Slug) -> rusqlite::Result<Option<ScopeId>> {
    tx.prepare_cached("SELECT id FROM scopes WHERE slug = ?1")?
        .query_row([slug.as_str()], |r| Ok(ScopeId(r.get(0)?)))
        .optional()
}

/// Deletes versions that fell out of the `max_versions` window and takes
/// their bytes off the scope's counter.
fn prune(
    tx: &Connection,
    scope: &ScopeId,
    name: &str,
    current: u64,
    max: u32,
) -> rusqlite::Result<()> {
    if current > u64::from(max) {
        let freed: Vec<i64> = tx
            .prepare_cached(
                "DELETE FROM versions WHERE scope_id = ?1 AND name = ?2 AND version <= ?3
                 RETURNING coalesce(length(ciphertext), 0)",
            )?
            .query_map(params![scope.0, name, current - u64::from(max)], |r| {
                r.get(0)
            })?
            .collect::<rusqlite::Result<_>>()?;
        let freed: i64 = freed.iter().sum();
        if freed > 0 {
            tx.prepare_cached("UPDATE scopes SET bytes_used = bytes_used - ?2 WHERE id = ?1")?
                .execute(params![scope.0, freed])?;
        }
    }
    Ok(())
}

const LIMIT_COLUMNS: &str = "p.name AS plan,
    coalesce(sc.max_secrets, p.max_secrets) AS max_secrets,
    coalesce(sc.max_bytes, p.max_bytes) AS max_bytes,
    coalesce(sc.max_tokens, p.max_tokens) AS max_tokens,
    coalesce(sc.rate_per_sec, p.rate_per_sec) AS rate_per_sec,
    p.burst AS burst";

fn limits_from_row(r: &Row<'_>) -> rusqlite::Result<Limits> {
    Ok(Limits {
        plan: r.get("plan")?,
        max_secrets: r.get("max_secrets")?,
        max_bytes: r.get("max_bytes")?,
        max_tokens: r.get("max_tokens")?,
        rate_per_sec: r.get("rate_per_sec")?,
        burst: r.get("burst")?,
    })
}

const TOKEN_COLUMNS: &str = "t.id, t.hash, t.kind, t.scope_id, sc.slug, t.role, t.policy,
    t.description, t.created_at, t.expires_at, t.revoked_at";

fn token_from_row(r: &Row<'_>) -> rusqlite::Result<TokenRecord> {
    let kind: String = r.get(2)?;
    let scope = match (
        r.get::<_, Option<String>>(3)?,
        r.get::<_, Option<String>>(4)?,
    ) {
        (Some(id), Some(slug)) => Some((
            ScopeId(id),
            Slug::parse(&slug).map_err(|e| conversion(e.to_string()))?,
        )),
        _ => None,
    };
    Ok(TokenRecord {
        id: r.get(0)?,
        hash: r.get(1)?,
        kind: if kind == "operator" {
            TokenKindRecord::Operator
        } else {
            TokenKindRecord::Tenant
        },
        scope,
        role: r.get(5)?,
        policy: r.get(6)?,
        description: r.get(7)?,
        created_at: Timestamp(r.get(8)?),
        expires_at: r.get::<_, Option<i64>>(9)?.map(Timestamp),
        revoked_at: r.get::<_, Option<i64>>(10)?.map(Timestamp),
    })
}

impl Store for SqliteStore {
    fn root(&self) -> Result<Option<RootRecord>> {
        read_root(&self.reader()).map_err(db("reading the root key"))
    }

    fn init_root(&self, root: &RootRecord) -> Result<()> {
        let mut conn = self.writer();
        let tx = immediate(&mut conn)?;
        let exists: bool = tx
            .query_row("SELECT EXISTS (SELECT 1 FROM root_key)", [], |r| r.get(0))
            .map_err(db("initializing the vault"))?;
        if exists {
            return Err(Error::AlreadyInitialized);
        }
        write_root(&tx, root, true).map_err(db("initializing the vault"))?;
        bump(&tx).map_err(db("initializing the vault"))?;
        tx.commit().map_err(db("initializing the vault"))
    }

    fn replace_root(&self, root: &RootRecord, rewrapped: &[DataKeyRecord]) -> Result<()> {
        let mut conn = self.writer();
        let tx = immediate(&mut conn)?;
        write_root(&tx, root, false).map_err(db("replacing the root key"))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "UPDATE data_keys SET wrapped = ?3, root_version = ?4
                     WHERE scope_id = ?1 AND version = ?2",
                )
                .map_err(db("rewrapping data keys"))?;
            for k in rewrapped {
                let n = stmt
                    .execute(params![k.scope_id.0, k.version, k.wrapped, k.root_version])
                    .map_err(db("rewrapping data keys"))?;
                if n != 1 {
                    return Err(Error::storage(
                        "rewrapping data keys",
                        "a data key disappeared during the rewrap; nothing was changed",
                    ));
                }
            }
        }
        bump(&tx).map_err(db("replacing the root key"))?;
        tx.commit().map_err(db("replacing the root key"))
    }

    fn all_data_keys(&self) -> Result<Vec<DataKeyRecord>> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {DATA_KEY_COLUMNS} FROM data_keys ORDER BY scope_id, version"
            ))
            .map_err(db("reading data keys"))?;
        stmt.query_map([], data_key_from_row)
            .and_then(|rows| rows.collect())
            .map_err(db("reading data keys"))
    }

    fn create_scope(
        &self,
        scope: &ScopeRecord,
        first_key: &DataKeyRecord,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<ScopeRecord>> {
        let mut conn = self.writer();
        let tx = immediate(&mut conn)?;
        let existing = tx
            .query_row(
                &format!("SELECT {SCOPE_COLUMNS} FROM scopes WHERE slug = ?1"),
                [scope.slug.as_str()],
                scope_from_row,
            )
            .optional()
            .map_err(db("creating a scope"))?;
        if existing.is_some() {
            return Ok(existing);
        }
        tx.execute(
            "INSERT INTO scopes (id, slug, kind, created_at, active_key_version, plan)
             VALUES (?1, ?2, ?3, ?4, ?5,
                     CASE ?3 WHEN 'enterprise' THEN 'enterprise' ELSE 'starter' END)",
            params![
                scope.id.0,
                scope.slug.as_str(),
                scope.kind.as_str(),
                scope.created_at.0,
                scope.active_key_version
            ],
        )
        .map_err(db("creating a scope"))?;
        insert_data_key(&tx, first_key).map_err(db("creating a scope"))?;
        append_in(&tx, audit.cloned()).map_err(db("creating a scope"))?;
        bump(&tx).map_err(db("creating a scope"))?;
        tx.commit().map_err(db("creating a scope"))?;
        Ok(None)
    }

    fn scope(&self, slug: &Slug) -> Result<Option<ScopeRecord>> {
        let conn = self.reader();
        conn.prepare_cached(&format!(
            "SELECT {SCOPE_COLUMNS} FROM scopes WHERE slug = ?1"
        ))
        .and_then(|mut s| s.query_row([slug.as_str()], scope_from_row).optional())
        .map_err(db("reading a scope"))
    }

    fn scopes(&self) -> Result<Vec<ScopeRecord>> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare(&format!("SELECT {SCOPE_COLUMNS} FROM scopes ORDER BY slug"))
            .map_err(db("listing scopes"))?;
        stmt.query_map([], scope_from_row)
            .and_then(|rows| rows.collect())
            .map_err(db("listing scopes"))
    }

    fn delete_scope(&self, slug: &Slug, audit: Option<&AuditEntry>) -> Result<Option<ScopeId>> {
        let mut conn = self.writer();
        let tx = immediate(&mut conn)?;
        let Some(id) = scope_id_of(&tx, slug).map_err(db("deleting a scope"))? else {
            return Ok(None);
        };
        for table in ["versions", "secrets", "data_keys"] {
            tx.execute(&format!("DELETE FROM {table} WHERE scope_id = ?1"), [&id.0])
                .map_err(db("deleting a scope"))?;
        }
        tx.execute("DELETE FROM scopes WHERE id = ?1", [&id.0])
            .map_err(db("deleting a scope"))?;
        append_in(&tx, audit.cloned()).map_err(db("deleting a scope"))?;
        bump(&tx).map_err(db("deleting a scope"))?;
        tx.commit().map_err(db("deleting a scope"))?;
        Self::checkpoint(&conn)?;
        Ok(Some(id))
    }

    fn scope_usage(&self, scope: &ScopeId) -> Result<ScopeUsage> {
        let conn = self.reader();
        conn.query_row(
            "SELECT (SELECT count(*) FROM secrets WHERE scope_id = ?1),
                    (SELECT coalesce(sum(length(ciphertext)), 0) FROM versions WHERE scope_id = ?1)",
            [&scope.0],
            |r| {
                Ok(ScopeUsage {
                    secrets: r.get(0)?,
                    bytes: r.get(1)?,
                })
            },
        )
        .map_err(db("measuring a scope"))
    }

    fn data_key(&self, scope: &ScopeId, version: u32) -> Result<Option<DataKeyRecord>> {
        let conn = self.reader();
        conn.prepare_cached(&format!(
            "SELECT {DATA_KEY_COLUMNS} FROM data_keys WHERE scope_id = ?1 AND version = ?2"
        ))
        .and_then(|mut s| {
            s.query_row(params![scope.0, version], data_key_from_row)
                .optional()
        })
        .map_err(db("reading a data key"))
    }

    fn add_data_key(&self, key: &DataKeyRecord, audit: Option<&AuditEntry>) -> Result<()> {
        let mut conn = self.writer();
        let tx = immediate(&mut conn)?;
        insert_data_key(&tx, key).map_err(db("adding a data key"))?;
        let n = tx
            .execute(
                "UPDATE scopes SET active_key_version = ?2 WHERE id = ?1",
                params![key.scope_id.0, key.version],
            )
            .map_err(db("adding a data key"))?;
        if n != 1 {
            return Err(Error::storage(
                "adding a data key",
                "the scope no longer exists",
            ));
        }
        append_in(
            &tx,
            audit.map(|a| a.with_version(Some(u64::from(key.version)))),
        )
        .map_err(db("adding a data key"))?;
        bump(&tx).map_err(db("adding a data key"))?;
        tx.commit().map_err(db("adding a data key"))
    }

    fn remove_unused_data_keys(&self, scope: &ScopeId) -> Result<Vec<u32>> {
        let mut conn = self.writer();
        let tx = immediate(&mut conn)?;
        let removed: Vec<u32> = tx
            .prepare(
                "DELETE FROM data_keys
                 WHERE scope_id = ?1
                   AND version <> (SELECT active_key_version FROM scopes WHERE id = ?1)
                   AND version NOT IN (SELECT DISTINCT key_version FROM versions
                                       WHERE scope_id = ?1 AND key_version IS NOT NULL)
                 RETURNING version",
            )
            .and_then(|mut s| s.query_map([&scope.0], |r| r.get(0))?.collect())
            .map_err(db("removing unused data keys"))?;
        if !removed.is_empty() {
            bump(&tx).map_err(db("removing unused data keys"))?;
        }
        tx.commit().map_err(db("removing unused data keys"))?;
        Ok(removed)
    }

    fn put(
        &self,
        p: &PutParams<'_>,
        seal: &mut dyn FnMut(&SealInput<'_>) -> Result<Sealed>,
        audit: Option<&AuditEntry>,
    ) -> Result<PutOutcome> {
        const CTX: &str = "writing a secret";
        let mut conn = self.writer();
        let tx = immediate(&mut conn)?;
        let row: Option<(ScopeId, u64, u64, u64)> = tx
            .prepare_cached(
                "SELECT sc.id, coalesce(sc.max_secrets, p.max_secrets),
                        coalesce(sc.max_bytes, p.max_bytes), sc.bytes_used
                 FROM scopes sc JOIN plans p ON p.name = sc.plan WHERE sc.slug = ?1",
            )
            .and_then(|mut s| {
                s.query_row([p.slug.as_str()], |r| {
                    Ok((ScopeId(r.get(0)?), r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()
            })
            .map_err(db(CTX))?;
        let Some((scope, plan_secrets, max_bytes, bytes_used)) = row else {
            return Ok(PutOutcome::NoScope);
        };
        let name = p.name.as_str();
        let existing: Option<(u64, u32)> = tx
            .prepare_cached(
                "SELECT current_version, max_versions FROM secrets WHERE scope_id = ?1 AND name = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![scope.0, name], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(db(CTX))?;
        let current = existing.map_or(0, |(v, _)| v);
        if let Some(expected) = p.cas {
            if expected != current {
                return Ok(PutOutcome::CasMismatch { current });
            }
        }
        if existing.is_none() {
            let max_secrets = plan_secrets.min(p.max_secrets);
            let count: u64 = tx
                .prepare_cached("SELECT count(*) FROM secrets WHERE scope_id = ?1")
                .and_then(|mut s| s.query_row([&scope.0], |r| r.get(0)))
                .map_err(db(CTX))?;
            if count >= max_secrets {
                return Ok(PutOutcome::TooManySecrets(max_secrets));
            }
        }
        if bytes_used + p.ciphertext_len > max_bytes {
            return Ok(PutOutcome::TooManyBytes(max_bytes));
        }
        let key = tx
            .prepare_cached(&format!(
                "UPDATE data_keys SET encryptions = encryptions + 1
                 WHERE scope_id = ?1
                   AND version = (SELECT active_key_version FROM scopes WHERE id = ?1)
                 RETURNING {DATA_KEY_COLUMNS}"
            ))
            .and_then(|mut s| s.query_row([&scope.0], data_key_from_row))
            .map_err(db(CTX))?;
        let version = current + 1;
        let sealed = seal(&SealInput {
            scope: &scope,
            version,
            key: &key,
        })?;
        let now = p.now.0;
        let max_versions = match existing {
            None => {
                tx.prepare_cached(
                    "INSERT INTO secrets (scope_id, name, current_version, max_versions, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                )
                .and_then(|mut s| s.execute(params![scope.0, name, version, p.default_max_versions, now]))
                .map_err(db(CTX))?;
                p.default_max_versions
            }
            Some((_, max)) => {
                tx.prepare_cached(
                    "UPDATE secrets SET current_version = ?3, updated_at = ?4 WHERE scope_id = ?1 AND name = ?2",
                )
                .and_then(|mut s| s.execute(params![scope.0, name, version, now]))
                .map_err(db(CTX))?;
                max
            }
        };
        tx.prepare_cached(
            "INSERT INTO versions (scope_id, name, version, created_at, key_version, nonce, ciphertext)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut s| {
            s.execute(params![
                scope.0,
                name,
                version,
                now,
                sealed.key_version,
                sealed.nonce,
                sealed.ciphertext
            ])
        })
        .map_err(db(CTX))?;
        tx.prepare_cached("UPDATE scopes SET bytes_used = bytes_used + ?2 WHERE id = ?1")
            .and_then(|mut s| s.execute(params![scope.0, sealed.ciphertext.len() as u64]))
            .map_err(db(CTX))?;
        prune(&tx, &scope, name, version, max_versions).map_err(db(CTX))?;
        append_in(&tx, audit.map(|a| a.with_version(Some(version)))).map_err(db(CTX))?;
        tx.commit().map_err(db(CTX))?;
        Ok(PutOutcome::Written {
            version,
            key_version: key.version,
            key_encryptions: key.encryptions,
        })
    }

    fn version(
        &self,
        slug: &Slug,
        name: &SecretName,
        which: VersionSelector,
    ) -> Result<Lookup<FoundVersion>> {
        let conn = self.reader();
        let exact = match which {
            VersionSelector::Latest => None,
            VersionSelector::Exact(v) => Some(to_i64(v)?),
        };
        // The current version is always the highest stored one (pruning
        // never removes it), so a read is one descent into `versions`; the
        // `secrets` row is consulted only to explain a miss.
        let row = conn
            .prepare_cached(
                "SELECT sc.id AS scope_id, v.version, v.created_at, v.deleted_at, v.destroyed,
                        v.key_version, v.nonce, v.ciphertext
                 FROM scopes sc
                 LEFT JOIN versions v ON v.rowid = (
                     SELECT rowid FROM versions
                     WHERE scope_id = sc.id AND name = ?2 AND (?3 IS NULL OR version = ?3)
                     ORDER BY version DESC LIMIT 1)
                 WHERE sc.slug = ?1",
            )
            .and_then(|mut s| {
                s.query_row(params![slug.as_str(), name.as_str(), exact], |r| {
                    let scope = ScopeId(r.get("scope_id")?);
                    let version = match r.get::<_, Option<u64>>("version")? {
                        Some(_) => Some(version_from_row(r, true)?),
                        None => None,
                    };
                    Ok((scope, version))
                })
                .optional()
            })
            .map_err(db("reading a secret"))?;
        Ok(match row {
            None => Lookup::NoScope,
            Some((scope, Some(version))) => Lookup::Found(FoundVersion {
                scope,
                version: Some(version),
            }),
            Some((scope, None)) => {
                let exists: bool = conn
                    .prepare_cached(
                        "SELECT EXISTS (SELECT 1 FROM secrets WHERE scope_id = ?1 AND name = ?2)",
                    )
                    .and_then(|mut s| s.query_row(params![scope.0, name.as_str()], |r| r.get(0)))
                    .map_err(db("reading a secret"))?;
                if exists {
                    Lookup::Found(FoundVersion {
                        scope,
                        version: None,
                    })
                } else {
                    Lookup::NoSecret
                }
            }
        })
    }

    fn list(
        &self,
        slug: &Slug,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<SecretName>>> {
        let conn = self.reader();
        let Some(scope) = scope_id_of(&conn, slug).map_err(db("listing secrets"))? else {
            return Ok(None);
        };
        // Names are ASCII below DEL, so `prefix || DEL` bounds the range.
        let upper = format!("{prefix}\u{7f}");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        conn.prepare_cached(
            "SELECT name FROM secrets
             WHERE scope_id = ?1 AND name >= ?2 AND name < ?3 AND name > ?4
             ORDER BY name LIMIT ?5",
        )
        .and_then(|mut s| {
            s.query_map(
                params![scope.0, prefix, upper, after.unwrap_or(""), limit],
                |r| name_from_text(&r.get::<_, String>(0)?),
            )?
            .collect()
        })
        .map(Some)
        .map_err(db("listing secrets"))
    }

    fn metadata(
        &self,
        slug: &Slug,
        name: &SecretName,
    ) -> Result<Lookup<(SecretRecord, Vec<StoredVersion>)>> {
        const CTX: &str = "reading metadata";
        let conn = self.reader();
        let Some(scope) = scope_id_of(&conn, slug).map_err(db(CTX))? else {
            return Ok(Lookup::NoScope);
        };
        let secret = conn
            .prepare_cached(
                "SELECT current_version, max_versions, custom_metadata, created_at, updated_at
                 FROM secrets WHERE scope_id = ?1 AND name = ?2",
            )
            .and_then(|mut s| {
                s.query_row(params![scope.0, name.as_str()], |r| {
                    let custom: String = r.get(2)?;
                    Ok(SecretRecord {
                        name: name.clone(),
                        current_version: r.get(0)?,
                        max_versions: r.get(1)?,
                        custom: serde_json::from_str(&custom)
                            .map_err(|e| conversion(format!("custom metadata: {e}")))?,
                        created_at: Timestamp(r.get(3)?),
                        updated_at: Timestamp(r.get(4)?),
                    })
                })
                .optional()
            })
            .map_err(db(CTX))?;
        let Some(secret) = secret else {
            return Ok(Lookup::NoSecret);
        };
        let versions = conn
            .prepare_cached(
                "SELECT version, created_at, deleted_at, destroyed, key_version FROM versions
                 WHERE scope_id = ?1 AND name = ?2 ORDER BY version",
            )
            .and_then(|mut s| {
                s.query_map(params![scope.0, name.as_str()], |r| {
                    version_from_row(r, false)
                })?
                .collect()
            })
            .map_err(db(CTX))?;
        Ok(Lookup::Found((secret, versions)))
    }

    fn update_metadata(
        &self,
        slug: &Slug,
        name: &SecretName,
        max_versions: Option<u32>,
        custom: Option<&BTreeMap<String, String>>,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<Lookup<()>> {
        const CTX: &str = "updating metadata";
        let mut conn = self.writer();
        let tx = immediate(&mut conn)?;
        let Some(scope) = scope_id_of(&tx, slug).map_err(db(CTX))? else {
            return Ok(Lookup::NoScope);
        };
        let custom = custom
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::storage(CTX, e))?;
        let row: Option<(u64, u32)> = tx
            .query_row(
                "UPDATE secrets SET max_versions = coalesce(?3, max_versions),
                                    custom_metadata = coalesce(?4, custom_metadata),
                                    updated_at = ?5
                 WHERE scope_id = ?1 AND name = ?2
                 RETURNING current_version, max_versions",
                params![scope.0, name.as_str(), max_versions, custom, now.0],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(db(CTX))?;
        let Some((current, max)) = row else {
            return Ok(Lookup::NoSecret);
        };
        prune(&tx, &scope, name.as_str(), current, max).map_err(db(CTX))?;
        append_in(&tx, audit.cloned()).map_err(db(CTX))?;
        tx.commit().map_err(db(CTX))?;
        Ok(Lookup::Found(()))
    }

    fn change_versions(
        &self,
        slug: &Slug,
        name: &SecretName,
        versions: &[u64],
        change: VersionChange,
        audit: Option<&AuditEntry>,
    ) -> Result<Lookup<Changed>> {
        const CTX: &str = "changing versions";
        let mut conn = self.writer();
        let tx = immediate(&mut conn)?;
        let Some(scope) = scope_id_of(&tx, slug).map_err(db(CTX))? else {
            return Ok(Lookup::NoScope);
        };
        let current: Option<u64> = tx
            .query_row(
                "SELECT current_version FROM secrets WHERE scope_id = ?1 AND name = ?2",
                params![scope.0, name.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(db(CTX))?;
        let Some(current) = current else {
            return Ok(Lookup::NoSecret);
        };
        let mut wanted: Vec<u64> = if versions.is_empty() {
            vec![current]
        } else {
            versions.to_vec()
        };
        wanted.sort_unstable();
        wanted.dedup();
        for &v in &wanted {
            let destroyed: Option<bool> = tx
                .prepare_cached(
                    "SELECT destroyed FROM versions WHERE scope_id = ?1 AND name = ?2 AND version = ?3",
                )
                .and_then(|mut s| {
                    s.query_row(params![scope.0, name.as_str(), to_i64(v).unwrap_or(-1)], |r| r.get(0))
                        .optional()
                })
                .map_err(db(CTX))?;
            match destroyed {
                None => return Ok(Lookup::Found(Changed::NoVersion(v))),
                Some(true) if change == VersionChange::Undelete => {
                    return Ok(Lookup::Found(Changed::Destroyed(v)));
                }
                Some(_) => {}
            }
        }
        let (sql, deleted_at) = match change {
            VersionChange::Delete(at) => (
                "UPDATE versions SET deleted_at = ?4
                 WHERE scope_id = ?1 AND name = ?2 AND version = ?3
                   AND deleted_at IS NULL AND destroyed = 0",
                Some(at.0),
            ),
            VersionChange::Undelete => (
                "UPDATE versions SET deleted_at = NULL
                 WHERE scope_id = ?1 AND name = ?2 AND version = ?3 AND ?4 IS NULL",
                None,
            ),
            VersionChange::Destroy => (
                "UPDATE versions SET destroyed = 1, key_version = NULL, nonce = NULL, ciphertext = NULL
                 WHERE scope_id = ?1 AND name = ?2 AND version = ?3 AND ?4 IS NULL",
                None,
            ),
        };
        if change == VersionChange::Destroy {
            let mut freed = tx
                .prepare_cached(
                    "UPDATE scopes SET bytes_used = bytes_used -
                        (SELECT coalesce(length(ciphertext), 0) FROM versions
                         WHERE scope_id = ?1 AND name = ?2 AND version = ?3)
                     WHERE id = ?1",
                )
                .map_err(db(CTX))?;
            for &v in &wanted {
                freed
                    .execute(params![scope.0, name.as_str(), v])
                    .map_err(db(CTX))?;
            }
        }
        {
            let mut stmt = tx.prepare_cached(sql).map_err(db(CTX))?;
            for &v in &wanted {
                stmt.execute(params![scope.0, name.as_str(), v, deleted_at])
                    .map_err(db(CTX))?;
            }
        }
        let single = (wanted.len() == 1).then(|| wanted[0]);
        append_in(&tx, audit.map(|a| a.with_version(single))).map_err(db(CTX))?;
        tx.commit().map_err(db(CTX))?;
        if change == VersionChange::Destroy {
            Self::checkpoint(&conn)?;
        }
        Ok(Lookup::Found(Changed::Versions(wanted)))
    }

    fn limits(&self, slug: &Slug) -> Result<Option<Limits>> {
        let conn = self.reader();
        conn.prepare_cached(&format!(
            "SELECT {LIMIT_COLUMNS} FROM scopes sc JOIN plans p ON p.name = sc.plan WHERE sc.slug = ?1"
        ))
        .and_then(|mut s| s.query_row([slug.as_str()], limits_from_row).optional())
        .map_err(db("reading limits"))
    }

    fn set_limits(&self, slug: &Slug, c: &LimitChange, audit: Option<&AuditEntry>) -> Result<bool> {
        const CTX: &str = "changing limits";
        let mut conn = self.writer();
        let tx = immediate(&mut conn)?;
        if let Some(plan) = &c.plan {
            let known: bool = tx
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM plans WHERE name = ?1)",
                    [plan],
                    |r| r.get(0),
                )
                .map_err(db(CTX))?;
            if !known {
                return Err(Error::InvalidArgument(format!("there is no plan `{plan}`")));
            }
        }
        let n = tx
            .execute(
                "UPDATE scopes SET plan = coalesce(?2, plan),
                                   max_secrets = coalesce(?3, max_secrets),
                                   max_bytes = coalesce(?4, max_bytes),
                                   max_tokens = coalesce(?5, max_tokens),
                                   rate_per_sec = coalesce(?6, rate_per_sec)
                 WHERE slug = ?1",
                params![
                    slug.as_str(),
                    c.plan,
                    c.max_secrets,
                    c.max_bytes,
                    c.max_tokens,
                    c.rate_per_sec
                ],
            )
            .map_err(db(CTX))?;
        if n == 1 {
            append_in(&tx, audit.cloned()).map_err(db(CTX))?;
            bump(&tx).map_err(db(CTX))?;
        }
        tx.commit().map_err(db(CTX))?;
        Ok(n == 1)
    }

    fn insert_token(
        &self,
        t: &TokenRecord,
        slug: Option<&Slug>,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<TokenInsert> {
        const CTX: &str = "issuing a token";
        let mut conn = self.writer();
        let tx = immediate(&mut conn)?;
        let scope_id = match slug {
            None => None,
            Some(slug) => {
                let row: Option<(String, u64)> = tx
                    .query_row(
                        &format!("SELECT sc.id, {LIMIT_COLUMNS} FROM scopes sc JOIN plans p ON p.name = sc.plan WHERE sc.slug = ?1"),
                        [slug.as_str()],
                        |r| Ok((r.get(0)?, r.get("max_tokens")?)),
                    )
                    .optional()
                    .map_err(db(CTX))?;
                let Some((id, max_tokens)) = row else {
                    return Ok(TokenInsert::NoScope);
                };
                let live: u64 = tx
                    .query_row(
                        "SELECT count(*) FROM tokens WHERE scope_id = ?1 AND revoked_at IS NULL
                           AND (expires_at IS NULL OR expires_at > ?2)",
                        params![id, now.0],
                        |r| r.get(0),
                    )
                    .map_err(db(CTX))?;
                if live >= max_tokens {
                    return Ok(TokenInsert::TooMany(max_tokens));
                }
                Some(id)
            }
        };
        tx.execute(
            "INSERT INTO tokens (id, hash, kind, scope_id, role, policy, description, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                t.id,
                t.hash,
                if scope_id.is_some() { "tenant" } else { "operator" },
                scope_id,
                t.role,
                t.policy,
                t.description,
                t.created_at.0,
                t.expires_at.map(|e| e.0)
            ],
        )
        .map_err(db(CTX))?;
        append_in(&tx, audit.cloned()).map_err(db(CTX))?;
        bump(&tx).map_err(db(CTX))?;
        tx.commit().map_err(db(CTX))?;
        Ok(TokenInsert::Inserted)
    }

    fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRecord>> {
        let conn = self.reader();
        conn.prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens t LEFT JOIN scopes sc ON sc.id = t.scope_id WHERE t.hash = ?1"
        ))
        .and_then(|mut s| s.query_row([hash], token_from_row).optional())
        .map_err(db("reading a token"))
    }

    fn tokens(&self, slug: Option<&Slug>) -> Result<Vec<TokenRecord>> {
        let conn = self.reader();
        conn.prepare_cached(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens t LEFT JOIN scopes sc ON sc.id = t.scope_id
             WHERE ?1 IS NULL OR sc.slug = ?1 ORDER BY t.created_at, t.id"
        ))
        .and_then(|mut s| {
            s.query_map([slug.map(Slug::as_str)], token_from_row)?
                .collect()
        })
        .map_err(db("listing tokens"))
    }

    fn revoke_token(
        &self,
        id: &str,
        scope: Option<&ScopeId>,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<TokenRevoke> {
        const CTX: &str = "revoking a token";
        let mut conn = self.writer();
        let tx = immediate(&mut conn)?;
        let row: Option<(Option<String>, String, Option<i64>)> = tx
            .query_row(
                "SELECT scope_id, role, revoked_at FROM tokens WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(db(CTX))?;
        let Some((token_scope, role, revoked)) = row else {
            return Ok(TokenRevoke::NotFound);
        };
        if let Some(only) = scope {
            if token_scope.as_deref() != Some(only.0.as_str()) {
                return Ok(TokenRevoke::NotFound);
            }
        }
        if revoked.is_some() {
            return Ok(TokenRevoke::AlreadyRevoked);
        }
        if role == "owner" {
            let other_owners: u64 = tx
                .query_row(
                    "SELECT count(*) FROM tokens WHERE scope_id = ?1 AND role = 'owner' AND id <> ?2
                       AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?3)",
                    params![token_scope, id, now.0],
                    |r| r.get(0),
                )
                .map_err(db(CTX))?;
            if other_owners == 0 {
                return Ok(TokenRevoke::LastOwner);
            }
        }
        tx.execute(
            "UPDATE tokens SET revoked_at = ?2 WHERE id = ?1",
            params![id, now.0],
        )
        .map_err(db(CTX))?;
        append_in(&tx, audit.cloned()).map_err(db(CTX))?;
        bump(&tx).map_err(db(CTX))?;
        tx.commit().map_err(db(CTX))?;
        Ok(TokenRevoke::Revoked)
    }

    fn cache_marker(&self) -> Result<u64> {
        let c = self.marker.lock().unwrap_or_else(|p| p.into_inner());
        c.prepare_cached("SELECT changes FROM vault_state WHERE id = 1")
            .and_then(|mut s| s.query_row([], |r| r.get(0)))
            .map_err(db("reading the cache marker"))
    }

    fn change_marker(&self) -> Result<u64> {
        let c = self.marker.lock().unwrap_or_else(|p| p.into_inner());
        c.query_row("PRAGMA data_version", [], |r| r.get(0))
            .map_err(db("reading the change marker"))
    }

    fn append_audit(&self, entries: &[AuditEntry]) -> Result<Vec<AuditRecord>> {
        const CTX: &str = "writing the audit trail";
        let mut conn = self.writer();
        let tx = immediate(&mut conn)?;
        let out = append_in(&tx, entries.iter().cloned()).map_err(db(CTX))?;
        tx.commit().map_err(db(CTX))?;
        Ok(out)
    }

    fn audit_records(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let conn = self.reader();
        conn.prepare_cached(
            "SELECT seq, time, request_id, principal, tenant, operation, path, version, outcome,
                    prev_hash, hash
             FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(
                params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
                audit_row,
            )?
            .collect()
        })
        .map_err(db("reading the audit trail"))
    }

    fn last_audit_seq(&self) -> Result<u64> {
        self.reader()
            .query_row("SELECT coalesce(max(seq), 0) FROM audit_log", [], |r| {
                r.get(0)
            })
            .map_err(db("reading the audit trail"))
    }

    fn audit_changes(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        let conn = self.reader();
        conn.prepare_cached(
            "SELECT seq, time, request_id, principal, tenant, operation, path, version, outcome,
                    prev_hash, hash
             FROM audit_log
             WHERE seq > ?1 AND tenant = ?2 AND outcome = 'ok'
               AND operation IN ('put', 'delete', 'undelete', 'destroy', 'update-metadata',
                                 'delete-scope')
             ORDER BY seq LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(
                params![after, tenant, i64::try_from(limit).unwrap_or(i64::MAX)],
                audit_row,
            )?
            .collect()
        })
        .map_err(db("reading the audit trail"))
    }

    fn reseal_all(
        &self,
        scope: &ScopeId,
        key_version: u32,
        reseal: &mut dyn FnMut(&SecretName, &StoredVersion) -> Result<Sealed>,
    ) -> Result<u64> {
        const CTX: &str = "re-encrypting versions";
        let mut conn = self.writer();
        let tx = immediate(&mut conn)?;
        let rows: Vec<(SecretName, StoredVersion)> = tx
            .prepare(
                "SELECT name, version, created_at, deleted_at, destroyed, key_version, nonce, ciphertext
                 FROM versions
                 WHERE scope_id = ?1 AND ciphertext IS NOT NULL AND key_version <> ?2
                 ORDER BY name, version",
            )
            .and_then(|mut s| {
                s.query_map(params![scope.0, key_version], |r| {
                    Ok((name_from_text(&r.get::<_, String>(0)?)?, version_from_row(r, true)?))
                })?
                .collect()
            })
            .map_err(db(CTX))?;
        {
            let mut update = tx
                .prepare_cached(
                    "UPDATE versions SET key_version = ?4, nonce = ?5, ciphertext = ?6
                     WHERE scope_id = ?1 AND name = ?2 AND version = ?3",
                )
                .map_err(db(CTX))?;
            for (name, v) in &rows {
                let sealed = reseal(name, v)?;
                update
                    .execute(params![
                        scope.0,
                        name.as_str(),
                        v.version,
                        sealed.key_version,
                        sealed.nonce,
                        sealed.ciphertext
                    ])
                    .map_err(db(CTX))?;
            }
        }
        let n = rows.len() as u64;
        tx.execute(
            "UPDATE data_keys SET encryptions = encryptions + ?3 WHERE scope_id = ?1 AND version = ?2",
            params![scope.0, key_version, n],
        )
        .map_err(db(CTX))?;
        tx.commit().map_err(db(CTX))?;
        Ok(n)
    }

    fn export(&self, sink: &mut dyn FnMut(super::DumpItem) -> Result<()>) -> Result<()> {
        dump::export(self, sink)
    }

    fn import(
        &self,
        items: &mut dyn Iterator<Item = Result<super::DumpItem>>,
    ) -> Result<super::ImportCount> {
        dump::import(self, items)
    }
}

fn read_root(conn: &Connection) -> rusqlite::Result<Option<RootRecord>> {
    conn.query_row(
        "SELECT method, kdf_m_cost, kdf_t_cost, kdf_p_cost, salt, version, wrapped,
                created_at, rotated_at FROM root_key WHERE id = 1",
        [],
        |r| {
            let method: String = r.get(0)?;
            let m: Option<u32> = r.get(1)?;
            let t: Option<u32> = r.get(2)?;
            let p: Option<u32> = r.get(3)?;
            Ok(RootRecord {
                method: if method == "passphrase" {
                    UnlockMethod::Passphrase
                } else {
                    UnlockMethod::KeyFile
                },
                kdf: match (m, t, p) {
                    (Some(m_cost_kib), Some(t_cost), Some(p_cost)) => Some(KdfParams {
                        m_cost_kib,
                        t_cost,
                        p_cost,
                    }),
                    _ => None,
                },
                salt: r.get(4)?,
                version: r.get(5)?,
                wrapped: r.get(6)?,
                created_at: Timestamp(r.get(7)?),
                rotated_at: Timestamp(r.get(8)?),
            })
        },
    )
    .optional()
}

fn write_root(tx: &Connection, root: &RootRecord, insert: bool) -> rusqlite::Result<usize> {
    let method = match root.method {
        UnlockMethod::Passphrase => "passphrase",
        UnlockMethod::KeyFile => "keyfile",
    };
    let kdf = root.kdf;
    let sql = if insert {
        "INSERT INTO root_key (id, method, kdf_m_cost, kdf_t_cost, kdf_p_cost, salt, version,
                               wrapped, created_at, rotated_at)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    } else {
        "UPDATE root_key SET method = ?1, kdf_m_cost = ?2, kdf_t_cost = ?3, kdf_p_cost = ?4,
                             salt = ?5, version = ?6, wrapped = ?7, rotated_at = ?9
         WHERE id = 1 AND ?8 = ?8"
    };
    tx.execute(
        sql,
        params![
            method,
            kdf.map(|k| k.m_cost_kib),
            kdf.map(|k| k.t_cost),
            kdf.map(|k| k.p_cost),
            root.salt,
            root.version,
            root.wrapped,
            root.created_at.0,
            root.rotated_at.0
        ],
    )
}

fn insert_data_key(tx: &Connection, k: &DataKeyRecord) -> rusqlite::Result<usize> {
    tx.execute(
        "INSERT INTO data_keys (scope_id, version, root_version, wrapped, encryptions, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            k.scope_id.0,
            k.version,
            k.root_version,
            k.wrapped,
            k.encryptions,
            k.created_at.0
        ],
    )
}

/// An `audit_log` row selected as `seq, time, request_id, principal, tenant,
/// operation, path, version, outcome, prev_hash, hash`.
fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AuditRecord> {
    Ok(AuditRecord {
        seq: r.get(0)?,
        entry: AuditEntry {
            time: Timestamp(r.get(1)?),
            request_id: r.get(2)?,
            principal: r.get(3)?,
            tenant: r.get(4)?,
            operation: r.get(5)?,
            path: r.get(6)?,
            version: r.get(7)?,
            outcome: r.get(8)?,
        },
        prev_hash: r.get(9)?,
        hash: r.get(10)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_version(c: &Connection) -> u32 {
        c.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    fn tables(c: &Connection) -> Vec<String> {
        c.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// Every step applies on top of the one before it, bumps `user_version`
    /// by one, and leaves a database that passes SQLite's own checks.
    #[test]
    fn each_migration_applies_in_order() {
        let mut c = Connection::open_in_memory().unwrap();
        configure(&c).unwrap();
        assert_eq!(user_version(&c), 0);
        for step in 1..=MIGRATIONS.len() {
            migrate(&mut c, step).unwrap();
            assert_eq!(user_version(&c) as usize, step);
            let check: String = c
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .unwrap();
            assert_eq!(check, "ok");
            let fk_problems: i64 = c
                .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(fk_problems, 0);
        }
    }

    #[test]
    fn migration_1_creates_the_core_schema() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c, 1).unwrap();
        assert_eq!(
            tables(&c),
            ["data_keys", "root_key", "scopes", "secrets", "versions"]
        );
        // The constraints hold: a live version must have a ciphertext.
        c.execute_batch(
            "INSERT INTO scopes VALUES ('s', 'acme', 'enterprise', 0, 1);
             INSERT INTO secrets (scope_id, name, current_version, max_versions, created_at, updated_at)
                  VALUES ('s', 'x', 1, 10, 0, 0);",
        )
        .unwrap();
        let err = c.execute(
            "INSERT INTO versions (scope_id, name, version, created_at) VALUES ('s', 'x', 1, 0)",
            [],
        );
        assert!(err.is_err(), "a live version without ciphertext is refused");
        assert!(
            c.execute(
                "INSERT INTO scopes VALUES ('t', 'acme', 'enterprise', 0, 1)",
                []
            )
            .is_err(),
            "slugs are unique"
        );
        assert!(
            c.execute(
                "INSERT INTO scopes VALUES ('u', 'other', 'startup', 0, 1)",
                []
            )
            .is_err(),
            "kinds are checked"
        );
    }

    /// Migration 2 on a version-1 database holding data: plans are set by
    /// kind, the stored-bytes counter is backfilled, the new tables work.
    #[test]
    fn migration_2_upgrades_a_populated_version_1_database() {
        let mut c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "foreign_keys", "ON").unwrap();
        migrate(&mut c, 1).unwrap();
        c.execute_batch(
            "INSERT INTO scopes VALUES ('e', 'acme', 'enterprise', 0, 1);
             INSERT INTO scopes VALUES ('f', 'solo', 'freelance', 0, 1);
             INSERT INTO secrets (scope_id, name, current_version, max_versions, created_at, updated_at)
                  VALUES ('e', 'x', 2, 10, 0, 0);
             INSERT INTO versions (scope_id, name, version, created_at, key_version, nonce, ciphertext)
                  VALUES ('e', 'x', 1, 0, 1, zeroblob(12), zeroblob(30));
             INSERT INTO versions (scope_id, name, version, created_at, key_version, nonce, ciphertext)
                  VALUES ('e', 'x', 2, 0, 1, zeroblob(12), zeroblob(50));",
        )
        .unwrap();
        migrate(&mut c, 2).unwrap();
        assert_eq!(user_version(&c), 2);
        let row = |slug: &str| -> (String, i64) {
            c.query_row(
                "SELECT plan, bytes_used FROM scopes WHERE slug = ?1",
                [slug],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
        };
        assert_eq!(row("acme"), ("enterprise".to_owned(), 80));
        assert_eq!(row("solo"), ("starter".to_owned(), 0));
        let plans: Vec<String> = c
            .prepare("SELECT name FROM plans ORDER BY max_secrets")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(plans, ["starter", "pro", "enterprise"]);
        assert!(tables(&c).contains(&"tokens".to_owned()));
        assert!(tables(&c).contains(&"audit_log".to_owned()));
        // A tenant token needs its scope; an operator token must have none.
        assert!(c
            .execute(
                "INSERT INTO tokens (id, hash, kind, role, policy, created_at) VALUES ('t', x'01', 'tenant', 'user', '{}', 0)",
                [],
            )
            .is_err());
        c.execute(
            "INSERT INTO tokens (id, hash, kind, scope_id, role, policy, created_at) VALUES ('t', x'01', 'tenant', 'e', 'user', '{}', 0)",
            [],
        )
        .unwrap();
        // Deleting the scope takes its tokens with it.
        c.execute_batch(
            "DELETE FROM versions; DELETE FROM secrets; DELETE FROM scopes WHERE id = 'e';",
        )
        .unwrap();
        let left: i64 = c
            .query_row("SELECT count(*) FROM tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0);
    }

    /// Migration 3 adds the cache marker to a populated version 2 database;
    /// the marker then moves with cached state and only with it.
    #[test]
    fn migration_3_adds_the_cache_marker() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.db");
        {
            let mut c = Connection::open(&p).unwrap();
            migrate(&mut c, 2).unwrap();
            c.execute_batch("INSERT INTO scopes (id, slug, kind, created_at, active_key_version) VALUES ('e', 'acme', 'enterprise', 0, 1);")
                .unwrap();
        }
        let s = SqliteStore::open(&p).unwrap();
        assert_eq!(user_version(&s.writer()) as usize, MIGRATIONS.len());
        assert_eq!(s.cache_marker().unwrap(), 0);
        let slug = Slug::parse("acme").unwrap();
        assert!(s.set_limits(&slug, &LimitChange::default(), None).unwrap());
        assert_eq!(s.cache_marker().unwrap(), 1);
        // Audit records and failed changes do not move it.
        s.append_audit(&[AuditEntry {
            time: Timestamp(1),
            request_id: "r".into(),
            principal: "root".into(),
            tenant: String::new(),
            operation: "get".into(),
            path: String::new(),
            version: None,
            outcome: "ok".into(),
        }])
        .unwrap();
        let nobody = Slug::parse("nobody").unwrap();
        assert!(
            !s.set_limits(&nobody, &LimitChange::default(), None)
                .unwrap()
        );
        assert_eq!(s.cache_marker().unwrap(), 1);
        // Another connection's change is seen.
        let other = SqliteStore::open(&p).unwrap();
        other.delete_scope(&slug, None).unwrap();
        assert_eq!(s.cache_marker().unwrap(), 2);
    }

    #[test]
    fn reopening_keeps_data_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.db");
        let s = SqliteStore::open(&p).unwrap();
        let slug = Slug::parse("acme").unwrap();
        let id = ScopeId::generate();
        let rec = ScopeRecord {
            id: id.clone(),
            slug: slug.clone(),
            kind: ScopeKind::Freelance,
            created_at: Timestamp(5),
            active_key_version: 1,
        };
        let key = DataKeyRecord {
            scope_id: id,
            version: 1,
            root_version: 1,
            wrapped: vec![1; 60],
            encryptions: 0,
            created_at: Timestamp(5),
        };
        assert!(s.create_scope(&rec, &key, None).unwrap().is_none());
        drop(s);
        let s = SqliteStore::open(&p).unwrap();
        assert_eq!(s.scope(&slug).unwrap(), Some(rec));
        let c = s.writer();
        assert_eq!(user_version(&c) as usize, MIGRATIONS.len());
        let mode: String = c
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = c.query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
        assert_eq!(sync, 2, "synchronous = FULL");
        let secure: i64 = c
            .query_row("PRAGMA secure_delete", [], |r| r.get(0))
            .unwrap();
        assert_eq!(secure, 1);
        let fk: i64 = c
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1);
    }

    /// A mutation's record commits with it, carrying the version the store
    /// allocated; a mutation that does not apply, or fails inside its
    /// transaction, leaves neither change nor record.
    #[test]
    fn a_mutations_record_commits_in_its_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(dir.path().join("v.db")).unwrap();
        let slug = Slug::parse("acme").unwrap();
        let name = SecretName::parse("db").unwrap();
        let id = ScopeId::generate();
        let rec = ScopeRecord {
            id: id.clone(),
            slug: slug.clone(),
            kind: ScopeKind::Enterprise,
            created_at: Timestamp(5),
            active_key_version: 1,
        };
        let key = DataKeyRecord {
            scope_id: id,
            version: 1,
            root_version: 1,
            wrapped: vec![1; 60],
            encryptions: 0,
            created_at: Timestamp(5),
        };
        let entry = |op: &str| AuditEntry {
            time: Timestamp(6),
            request_id: "r".into(),
            principal: "tok_1".into(),
            tenant: "acme".into(),
            operation: op.into(),
            path: "tenant/acme/db".into(),
            version: None,
            outcome: "ok".into(),
        };
        let scope_entry = entry("create-scope");
        assert!(
            s.create_scope(&rec, &key, Some(&scope_entry))
                .unwrap()
                .is_none()
        );
        // Already there: nothing changes, nothing is appended.
        assert!(
            s.create_scope(&rec, &key, Some(&scope_entry))
                .unwrap()
                .is_some()
        );
        assert_eq!(s.last_audit_seq().unwrap(), 1);

        let params = |cas| PutParams {
            slug: &slug,
            name: &name,
            cas,
            max_secrets: 100,
            ciphertext_len: 20,
            default_max_versions: 10,
            now: Timestamp(7),
        };
        let mut seal = |i: &SealInput<'_>| {
            Ok(Sealed {
                key_version: i.key.version,
                nonce: vec![0; 12],
                ciphertext: vec![1; 20],
            })
        };
        let put = entry("put");
        for want in 1..=2 {
            let out = s.put(&params(None), &mut seal, Some(&put)).unwrap();
            assert!(matches!(out, PutOutcome::Written { version, .. } if version == want));
        }
        let out = s.put(&params(Some(1)), &mut seal, Some(&put)).unwrap();
        assert_eq!(out, PutOutcome::CasMismatch { current: 2 });
        // The seal fails inside the transaction: no version, no record.
        let mut broken = |_: &SealInput<'_>| Err(Error::Sealed);
        assert!(s.put(&params(None), &mut broken, Some(&put)).is_err());
        let changed = s
            .change_versions(
                &slug,
                &name,
                &[1],
                VersionChange::Destroy,
                Some(&entry("destroy")),
            )
            .unwrap();
        assert_eq!(changed, Lookup::Found(Changed::Versions(vec![1])));

        let records = s.audit_records(0, 100).unwrap();
        let seen: Vec<(&str, Option<u64>)> = records
            .iter()
            .map(|r| (r.entry.operation.as_str(), r.entry.version))
            .collect();
        assert_eq!(
            seen,
            [
                ("create-scope", None),
                ("put", Some(1)),
                ("put", Some(2)),
                ("destroy", Some(1)),
            ]
        );
        assert_eq!(crate::audit::verify_chain(records), Ok(4));
        match s.version(&slug, &name, VersionSelector::Latest).unwrap() {
            Lookup::Found(f) => assert_eq!(f.version.unwrap().version, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.db");
        drop(SqliteStore::open(&p).unwrap());
        let c = Connection::open(&p).unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        drop(c);
        match SqliteStore::open(&p) {
            Err(Error::SchemaTooNew {
                found: 99,
                supported,
            }) => {
                assert_eq!(supported as usize, MIGRATIONS.len());
            }
            other => panic!("{other:?}"),
        }
    }
}
