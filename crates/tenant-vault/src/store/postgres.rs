//! The PostgreSQL store; see [`PostgresStore`] for its design.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{Config, IsolationLevel, Row, Socket, config::Host, config::SslMode};

use super::{
    AuditEntry, AuditRecord, Changed, DataKeyRecord, FoundVersion, LimitChange, Limits, Lookup,
    PutOutcome, PutParams, RootRecord, ScopeId, ScopeKind, ScopeRecord, ScopeUsage, SealInput,
    Sealed, SecretRecord, Store, StoredVersion, Timestamp, TokenInsert, TokenKindRecord,
    TokenRecord, TokenRevoke, UnlockMethod, VersionChange, VersionSelector,
};
use crate::crypto::KdfParams;
use crate::error::{Error, Result};
use crate::path::{SecretName, Slug};

mod dump;

/// Connections kept by the pool.
const POOL_SIZE: usize = 16;
/// How long a call waits for a free connection.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// How long opening a connection may take (when the URL sets no
/// `connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Advisory lock held while migrating (`pg_advisory_xact_lock`).
const MIGRATION_LOCK: i64 = 0x7465_6e61_6e74_0001;
/// Advisory lock held while extending the audit chain.
const AUDIT_LOCK: i64 = 0x7465_6e61_6e74_0002;

/// The schema, one append-only step per entry. Step `i` brings
/// `schema_version.version` from `i` to `i + 1`. Never edit a released step:
/// add one. Step 1 holds everything SQLite's first two steps hold (same
/// tables and columns, PostgreSQL types), plus `vault_state`. Text that is
/// compared or ordered is `COLLATE "C"`: byte order, as in SQLite, whatever
/// the database's collation.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: everything.
    r#"CREATE TABLE root_key (
        id          SMALLINT PRIMARY KEY CHECK (id = 1),
        method      TEXT     NOT NULL CHECK (method IN ('passphrase', 'keyfile')),
        kdf_m_cost  BIGINT,
        kdf_t_cost  BIGINT,
        kdf_p_cost  BIGINT,
        salt        BYTEA,
        version     BIGINT   NOT NULL,
        wrapped     BYTEA    NOT NULL,
        created_at  BIGINT   NOT NULL,
        rotated_at  BIGINT   NOT NULL
    );
    CREATE TABLE plans (
        name          TEXT COLLATE "C" PRIMARY KEY,
        max_secrets   BIGINT           NOT NULL,
        max_bytes     BIGINT           NOT NULL,
        max_tokens    BIGINT           NOT NULL,
        rate_per_sec  DOUBLE PRECISION NOT NULL,
        burst         BIGINT           NOT NULL
    );
    INSERT INTO plans VALUES ('starter',       100,    1048576,   10,   20.0,   40);
    INSERT INTO plans VALUES ('pro',          1000,   16777216,  100,  100.0,  200);
    INSERT INTO plans VALUES ('enterprise', 100000, 1073741824, 1000, 1000.0, 2000);
    CREATE TABLE scopes (
        id                  TEXT COLLATE "C" PRIMARY KEY,
        slug                TEXT COLLATE "C" NOT NULL UNIQUE,
        kind                TEXT   NOT NULL CHECK (kind IN ('enterprise', 'freelance')),
        created_at          BIGINT NOT NULL,
        active_key_version  BIGINT NOT NULL,
        plan                TEXT COLLATE "C" NOT NULL DEFAULT 'starter' REFERENCES plans (name),
        max_secrets         BIGINT,
        max_bytes           BIGINT,
        max_tokens          BIGINT,
        rate_per_sec        DOUBLE PRECISION,
        bytes_used          BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE data_keys (
        scope_id      TEXT COLLATE "C" NOT NULL REFERENCES scopes (id) ON DELETE CASCADE,
        version       BIGINT NOT NULL,
        root_version  BIGINT NOT NULL,
        wrapped       BYTEA  NOT NULL,
        encryptions   BIGINT NOT NULL DEFAULT 0,
        created_at    BIGINT NOT NULL,
        PRIMARY KEY (scope_id, version)
    );
    CREATE TABLE secrets (
        scope_id         TEXT COLLATE "C" NOT NULL REFERENCES scopes (id) ON DELETE CASCADE,
        name             TEXT COLLATE "C" NOT NULL,
        current_version  BIGINT NOT NULL,
        max_versions     BIGINT NOT NULL,
        custom_metadata  TEXT   NOT NULL DEFAULT '{}',
        created_at       BIGINT NOT NULL,
        updated_at       BIGINT NOT NULL,
        PRIMARY KEY (scope_id, name)
    );
    CREATE TABLE versions (
        scope_id     TEXT COLLATE "C" NOT NULL,
        name         TEXT COLLATE "C" NOT NULL,
        version      BIGINT  NOT NULL,
        created_at   BIGINT  NOT NULL,
        deleted_at   BIGINT,
        destroyed    BOOLEAN NOT NULL DEFAULT false,
        key_version  BIGINT,
        nonce        BYTEA,
        ciphertext   BYTEA,
        PRIMARY KEY (scope_id, name, version),
        FOREIGN KEY (scope_id, name) REFERENCES secrets (scope_id, name) ON DELETE CASCADE,
        CHECK ((NOT destroyed) = (ciphertext IS NOT NULL))
    );
    CREATE TABLE tokens (
        id           TEXT COLLATE "C" PRIMARY KEY,
        hash         BYTEA  NOT NULL UNIQUE,
        kind         TEXT   NOT NULL CHECK (kind IN ('tenant', 'operator')),
        scope_id     TEXT COLLATE "C" REFERENCES scopes (id) ON DELETE CASCADE,
        role         TEXT   NOT NULL,
        policy       TEXT   NOT NULL,
        description  TEXT   NOT NULL DEFAULT '',
        created_at   BIGINT NOT NULL,
        expires_at   BIGINT,
        revoked_at   BIGINT,
        CHECK ((kind = 'tenant') = (scope_id IS NOT NULL))
    );
    CREATE INDEX tokens_by_scope ON tokens (scope_id);
    CREATE TABLE audit_log (
        seq         BIGINT PRIMARY KEY,
        time        BIGINT NOT NULL,
        request_id  TEXT   NOT NULL,
        principal   TEXT   NOT NULL,
        tenant      TEXT COLLATE "C" NOT NULL,
        operation   TEXT COLLATE "C" NOT NULL,
        path        TEXT   NOT NULL,
        version     BIGINT,
        outcome     TEXT COLLATE "C" NOT NULL,
        prev_hash   BYTEA  NOT NULL,
        hash        BYTEA  NOT NULL
    );
    CREATE INDEX audit_log_by_tenant ON audit_log (tenant, seq);
    CREATE TABLE vault_state (
        id       SMALLINT PRIMARY KEY CHECK (id = 1),
        changes  BIGINT NOT NULL
    );
    INSERT INTO vault_state VALUES (1, 0);"#,
];

/// Maps a database error to [`Error::Storage`] with what was being done, or
/// to [`Error::Integrity`] when PostgreSQL reports damaged data. Only the
/// severity, message and SQLSTATE of a server error are kept: its DETAIL
/// may quote a row's values (a ciphertext, a token hash), so it is dropped.
fn db(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |e| match e.as_db_error() {
        Some(d) => {
            let msg = format!(
                "{}: {} (SQLSTATE {})",
                d.severity(),
                d.message(),
                d.code().code()
            );
            if *d.code() == SqlState::DATA_CORRUPTED || *d.code() == SqlState::INDEX_CORRUPTED {
                Error::Integrity(format!("the database ({context}: {msg})"))
            } else if unavailable(d.code()) {
                unavailable_error(context, msg)
            } else {
                Error::storage(context, msg)
            }
        }
        // No answer from the server: the connection broke or was closed.
        None if broken_connection(&e) => unavailable_error(context, e),
        None => Error::storage(context, e),
    }
}

/// SQLSTATEs after which the same request may succeed later, on this server
/// or, after a failover, on another: connection exceptions (class 08), the
/// server shutting down or starting (57P01 to 57P03), a standby that cannot
/// take writes (25006, what a primary demoted in a failover answers), too
/// many connections (53300).
fn unavailable(code: &SqlState) -> bool {
    code.code().starts_with("08")
        || [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::READ_ONLY_SQL_TRANSACTION,
            SqlState::TOO_MANY_CONNECTIONS,
        ]
        .contains(code)
}

/// True when a client error means the server could not be reached or the
/// connection broke (refused, reset, timed out, closed), not that the
/// request or the configuration is wrong (a TLS certificate that does not
/// verify is `InvalidData`, and stays a plain storage error).
fn broken_connection(e: &tokio_postgres::Error) -> bool {
    use std::io::ErrorKind as K;
    if e.is_closed() {
        return true;
    }
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::NotConnected
                    | K::BrokenPipe
                    | K::TimedOut
                    | K::UnexpectedEof
                    | K::AddrNotAvailable
            )
        })
}

fn unavailable_error(
    context: &'static str,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::StorageUnavailable {
        context,
        source: source.into(),
    }
}

fn to_i64(n: u64) -> Result<i64> {
    i64::try_from(n).map_err(|_| Error::InvalidArgument(format!("{n} is out of range")))
}

fn opt_i64(n: Option<u64>) -> Result<Option<i64>> {
    n.map(to_i64).transpose()
}

fn decode_error(msg: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    Error::storage("decoding a stored row", msg)
}

/// Column `i` of a row.
fn col<'a, T: FromSql<'a>>(r: &'a Row, i: usize) -> Result<T> {
    r.try_get(i).map_err(decode_error)
}

fn col_u64(r: &Row, i: usize) -> Result<u64> {
    u64::try_from(col::<i64>(r, i)?).map_err(|_| decode_error("a negative number"))
}

fn col_u32(r: &Row, i: usize) -> Result<u32> {
    u32::try_from(col::<i64>(r, i)?).map_err(|_| decode_error("a number out of range"))
}

fn col_opt_u64(r: &Row, i: usize) -> Result<Option<u64>> {
    col::<Option<i64>>(r, i)?
        .map(|v| u64::try_from(v).map_err(|_| decode_error("a negative number")))
        .transpose()
}

fn col_opt_u32(r: &Row, i: usize) -> Result<Option<u32>> {
    col::<Option<i64>>(r, i)?
        .map(|v| u32::try_from(v).map_err(|_| decode_error("a number out of range")))
        .transpose()
}

fn col_slug(r: &Row, i: usize) -> Result<Slug> {
    Slug::parse(&col::<String>(r, i)?).map_err(|e| decode_error(e.to_string()))
}

fn col_name(r: &Row, i: usize) -> Result<SecretName> {
    SecretName::parse(&col::<String>(r, i)?).map_err(|e| decode_error(e.to_string()))
}

const SCOPE_COLUMNS: &str = "id, slug, kind, created_at, active_key_version";
const DATA_KEY_COLUMNS: &str = "scope_id, version, root_version, wrapped, encryptions, created_at";

fn scope_from_row(r: &Row) -> Result<ScopeRecord> {
    let kind: String = col(r, 2)?;
    Ok(ScopeRecord {
        id: ScopeId(col(r, 0)?),
        slug: col_slug(r, 1)?,
        kind: ScopeKind::parse(&kind)
            .ok_or_else(|| decode_error(format!("unknown scope kind {kind}")))?,
        created_at: Timestamp(col(r, 3)?),
        active_key_version: col_u32(r, 4)?,
    })
}

fn data_key_from_row(r: &Row) -> Result<DataKeyRecord> {
    Ok(DataKeyRecord {
        scope_id: ScopeId(col(r, 0)?),
        version: col_u32(r, 1)?,
        root_version: col_u32(r, 2)?,
        wrapped: col(r, 3)?,
        encryptions: col_u64(r, 4)?,
        created_at: Timestamp(col(r, 5)?),
    })
}

/// A version from columns `version, created_at, deleted_at, destroyed,
/// key_version[, nonce, ciphertext]` starting at `at`.
fn version_from_row(r: &Row, at: usize, with_ciphertext: bool) -> Result<StoredVersion> {
    Ok(StoredVersion {
        version: col_u64(r, at)?,
        created_at: Timestamp(col(r, at + 1)?),
        deleted_at: col::<Option<i64>>(r, at + 2)?.map(Timestamp),
        destroyed: col(r, at + 3)?,
        key_version: col_opt_u32(r, at + 4)?,
        nonce: if with_ciphertext {
            col(r, at + 5)?
        } else {
            None
        },
        ciphertext: if with_ciphertext {
            col(r, at + 6)?
        } else {
            None
        },
    })
}

const LIMIT_COLUMNS: &str = "p.name AS plan,
    coalesce(sc.max_secrets, p.max_secrets) AS max_secrets,
    coalesce(sc.max_bytes, p.max_bytes) AS max_bytes,
    coalesce(sc.max_tokens, p.max_tokens) AS max_tokens,
    coalesce(sc.rate_per_sec, p.rate_per_sec) AS rate_per_sec,
    p.burst AS burst";

/// Limits from `LIMIT_COLUMNS` starting at `at`.
fn limits_from_row(r: &Row, at: usize) -> Result<Limits> {
    Ok(Limits {
        plan: col(r, at)?,
        max_secrets: col_u64(r, at + 1)?,
        max_bytes: col_u64(r, at + 2)?,
        max_tokens: col_u64(r, at + 3)?,
        rate_per_sec: col(r, at + 4)?,
        burst: col_u64(r, at + 5)?,
    })
}

const TOKEN_COLUMNS: &str = "t.id, t.hash, t.kind, t.scope_id, sc.slug, t.role, t.policy,
    t.description, t.created_at, t.expires_at, t.revoked_at";

fn token_from_row(r: &Row) -> Result<TokenRecord> {
    let kind: String = col(r, 2)?;
    let scope = match (col::<Option<String>>(r, 3)?, col::<Option<String>>(r, 4)?) {
        (Some(id), Some(slug)) => Some((
            ScopeId(id),
            Slug::parse(&slug).map_err(|e| decode_error(e.to_string()))?,
        )),
        _ => None,
    };
    Ok(TokenRecord {
        id: col(r, 0)?,
        hash: col(r, 1)?,
        kind: if kind == "operator" {
            TokenKindRecord::Operator
        } else {
            TokenKindRecord::Tenant
        },
        scope,
        role: col(r, 5)?,
        policy: col(r, 6)?,
        description: col(r, 7)?,
        created_at: Timestamp(col(r, 8)?),
        expires_at: col::<Option<i64>>(r, 9)?.map(Timestamp),
        revoked_at: col::<Option<i64>>(r, 10)?.map(Timestamp),
    })
}

const AUDIT_COLUMNS: &str = "seq, time, request_id, principal, tenant, operation, path, version,
    outcome, prev_hash, hash";

fn audit_from_row(r: &Row) -> Result<AuditRecord> {
    Ok(AuditRecord {
        seq: col_u64(r, 0)?,
        entry: AuditEntry {
            time: Timestamp(col(r, 1)?),
            request_id: col(r, 2)?,
            principal: col(r, 3)?,
            tenant: col(r, 4)?,
            operation: col(r, 5)?,
            path: col(r, 6)?,
            version: col_opt_u64(r, 7)?,
            outcome: col(r, 8)?,
        },
        prev_hash: col(r, 9)?,
        hash: col(r, 10)?,
    })
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

async fn query<C: GenericClient>(
    c: &C,
    ctx: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(db(ctx))?;
    c.query(&stmt, params).await.map_err(db(ctx))
}

async fn query_opt<C: GenericClient>(
    c: &C,
    ctx: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>> {
    let stmt = c.prepare_cached(sql).await.map_err(db(ctx))?;
    c.query_opt(&stmt, params).await.map_err(db(ctx))
}

async fn query_one<C: GenericClient>(
    c: &C,
    ctx: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<Row> {
    let stmt = c.prepare_cached(sql).await.map_err(db(ctx))?;
    c.query_one(&stmt, params).await.map_err(db(ctx))
}

async fn execute<C: GenericClient>(
    c: &C,
    ctx: &'static str,
    sql: &str,
    params: Params<'_>,
) -> Result<u64> {
    let stmt = c.prepare_cached(sql).await.map_err(db(ctx))?;
    c.execute(&stmt, params).await.map_err(db(ctx))
}

/// Counts a change to cached state (see the change marker in
/// [`PostgresStore`]'s docs).
async fn bump<C: GenericClient>(c: &C, ctx: &'static str) -> Result<()> {
    execute(
        c,
        ctx,
        "UPDATE vault_state SET changes = changes + 1 WHERE id = 1",
        &[],
    )
    .await
    .map(drop)
}

/// The root record from a row of `method, kdf_m_cost, kdf_t_cost,
/// kdf_p_cost, salt, version, wrapped, created_at, rotated_at`.
fn root_from_row(r: &Row) -> Result<RootRecord> {
    let method: String = col(r, 0)?;
    let kdf = match (col_opt_u32(r, 1)?, col_opt_u32(r, 2)?, col_opt_u32(r, 3)?) {
        (Some(m_cost_kib), Some(t_cost), Some(p_cost)) => Some(KdfParams {
            m_cost_kib,
            t_cost,
            p_cost,
        }),
        _ => None,
    };
    Ok(RootRecord {
        method: if method == "passphrase" {
            UnlockMethod::Passphrase
        } else {
            UnlockMethod::KeyFile
        },
        kdf,
        salt: col(r, 4)?,
        version: col_u32(r, 5)?,
        wrapped: col(r, 6)?,
        created_at: Timestamp(col(r, 7)?),
        rotated_at: Timestamp(col(r, 8)?),
    })
}

/// Inserts the root record unless there is one; how many rows were
/// inserted (0 or 1).
async fn insert_root<C: GenericClient>(c: &C, ctx: &'static str, root: &RootRecord) -> Result<u64> {
    let kdf = root.kdf;
    execute(
        c,
        ctx,
        "INSERT INTO root_key (id, method, kdf_m_cost, kdf_t_cost, kdf_p_cost, salt,
                               version, wrapped, created_at, rotated_at)
         VALUES (1, $1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (id) DO NOTHING",
        &[
            &method_name(root.method),
            &kdf.map(|k| i64::from(k.m_cost_kib)),
            &kdf.map(|k| i64::from(k.t_cost)),
            &kdf.map(|k| i64::from(k.p_cost)),
            &root.salt,
            &i64::from(root.version),
            &root.wrapped,
            &root.created_at.0,
            &root.rotated_at.0,
        ],
    )
    .await
}

/// The id of the scope with this slug, its row locked until the end of the
/// transaction (`FOR NO KEY UPDATE`: changes within the scope are taken one
/// at a time, on every server).
async fn lock_scope<C: GenericClient>(
    c: &C,
    ctx: &'static str,
    slug: &Slug,
) -> Result<Option<ScopeId>> {
    scope_id_by(
        c,
        ctx,
        "SELECT id FROM scopes WHERE slug = $1 FOR NO KEY UPDATE",
        slug,
    )
    .await
}

async fn scope_id_of<C: GenericClient>(
    c: &C,
    ctx: &'static str,
    slug: &Slug,
) -> Result<Option<ScopeId>> {
    scope_id_by(c, ctx, "SELECT id FROM scopes WHERE slug = $1", slug).await
}

async fn scope_id_by<C: GenericClient>(
    c: &C,
    ctx: &'static str,
    sql: &str,
    slug: &Slug,
) -> Result<Option<ScopeId>> {
    query_opt(c, ctx, sql, &[&slug.as_str()])
        .await?
        .map(|r| col(&r, 0).map(ScopeId))
        .transpose()
}

/// Extends the audit chain from its stored end, inside the caller's
/// transaction (a mutation's record commits with the mutation). The
/// advisory lock serializes appenders of every server until commit.
async fn append_in<C: GenericClient>(
    tx: &C,
    entries: impl IntoIterator<Item = AuditEntry>,
) -> Result<Vec<AuditRecord>> {
    const CTX: &str = "writing the audit trail";
    let mut entries = entries.into_iter().peekable();
    if entries.peek().is_none() {
        return Ok(Vec::new());
    }
    execute(tx, CTX, "SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK]).await?;
    let (mut seq, mut prev): (u64, Vec<u8>) = match query_opt(
        tx,
        CTX,
        "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
        &[],
    )
    .await?
    {
        Some(r) => (col_u64(&r, 0)?, col(&r, 1)?),
        None => (0, vec![0u8; 32]),
    };
    let stmt = tx
        .prepare_cached(
            "INSERT INTO audit_log (seq, time, request_id, principal, tenant, operation, path,
                                    version, outcome, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .await
        .map_err(db(CTX))?;
    let mut out = Vec::new();
    for e in entries {
        seq += 1;
        let hash = crate::audit::chain_hash(&prev, seq, &e).to_vec();
        tx.execute(
            &stmt,
            &[
                &to_i64(seq)?,
                &e.time.0,
                &e.request_id,
                &e.principal,
                &e.tenant,
                &e.operation,
                &e.path,
                &opt_i64(e.version)?,
                &e.outcome,
                &prev,
                &hash,
            ],
        )
        .await
        .map_err(db(CTX))?;
        out.push(AuditRecord {
            seq,
            entry: e,
            prev_hash: std::mem::replace(&mut prev, hash.clone()),
            hash,
        });
    }
    Ok(out)
}

/// Deletes versions that fell out of the `max_versions` window and takes
/// their bytes off the scope's counter.
async fn prune<C: GenericClient>(
    tx: &C,
    ctx: &'static str,
    scope: &ScopeId,
    name: &str,
    current: u64,
    max: u32,
) -> Result<()> {
    if current > u64::from(max) {
        let row = query_one(
            tx,
            ctx,
            "WITH gone AS (
                 DELETE FROM versions WHERE scope_id = $1 AND name = $2 AND version <= $3
                 RETURNING coalesce(length(ciphertext), 0) AS n)
             SELECT coalesce(sum(n), 0)::BIGINT FROM gone",
            &[&scope.0, &name, &to_i64(current - u64::from(max))?],
        )
        .await?;
        let freed: i64 = col(&row, 0)?;
        if freed > 0 {
            execute(
                tx,
                ctx,
                "UPDATE scopes SET bytes_used = bytes_used - $2 WHERE id = $1",
                &[&scope.0, &freed],
            )
            .await?;
        }
    }
    Ok(())
}

async fn insert_data_key<C: GenericClient>(
    tx: &C,
    ctx: &'static str,
    k: &DataKeyRecord,
) -> Result<()> {
    execute(
        tx,
        ctx,
        "INSERT INTO data_keys (scope_id, version, root_version, wrapped, encryptions, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &k.scope_id.0,
            &i64::from(k.version),
            &i64::from(k.root_version),
            &k.wrapped,
            &to_i64(k.encryptions)?,
            &k.created_at.0,
        ],
    )
    .await
    .map(drop)
}

/// How the store reaches the database.
#[derive(Debug)]
struct Target {
    config: Config,
    tls: Option<rustls::ClientConfig>,
    /// `host:port, ...` for messages (never the password).
    display: String,
}

/// Percent-decodes a URL query value.
fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        Error::InvalidArgument("bad percent-encoding in the database URL".into())
                    })?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| Error::InvalidArgument("the database URL is not UTF-8".into()))
}

fn parse_target(url: &str) -> Result<Target> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(Error::InvalidArgument(
            "a PostgreSQL storage URL starts with postgres:// or postgresql://".into(),
        ));
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut sslmode, mut rootcert) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "sslmode" => sslmode = Some(percent_decode(v)?),
            "sslrootcert" => rootcert = Some(percent_decode(v)?),
            _ => kept.push(pair),
        }
    }
    let rebuilt = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config = Config::from_str(&rebuilt)
        .map_err(|e| Error::InvalidArgument(format!("the PostgreSQL URL does not parse: {e}")))?;
    let tls = match (sslmode.as_deref(), rootcert.is_some()) {
        (Some("disable"), _) | (Some("allow" | "prefer") | None, false) => false,
        (Some("allow" | "prefer") | None, true) => true,
        (Some("require" | "verify-ca" | "verify-full"), _) => true,
        (Some(other), _) => {
            return Err(Error::InvalidArgument(format!(
                "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            )));
        }
    };
    config.ssl_mode(if tls {
        SslMode::Require
    } else {
        SslMode::Disable
    });
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("tenant-vault");
    }
    let ports = config.get_ports();
    let display = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = ports
                .get(i)
                .or_else(|| ports.first())
                .copied()
                .unwrap_or(5432);
            match h {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(dir) => format!("{}/.s.PGSQL.{port}", dir.display()),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let tls = if tls {
        Some(tls_config(rootcert.as_deref())?)
    } else {
        None
    };
    Ok(Target {
        config,
        tls,
        display: if display.is_empty() {
            "the default host".into()
        } else {
            display
        },
    })
}

/// A rustls client configuration trusting the CA certificates of the PEM
/// file `root_cert`, or the system's trust store.
fn tls_config(root_cert: Option<&str>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    const CTX: &str = "setting up TLS to the database";
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) if path != "system" => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| Error::storage(CTX, format!("sslrootcert {path}: {e}")))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| Error::storage(CTX, format!("sslrootcert {path}: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::storage(CTX, format!("sslrootcert {path}: {e}")))?;
            }
        }
        _ => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system certificate rustls cannot use is skipped, as
                // every TLS client does.
                let _ = roots.add(cert);
            }
        }
    }
    if roots.is_empty() {
        return Err(Error::storage(
            CTX,
            "no CA certificate to verify the server with (set sslrootcert)",
        ));
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::storage(CTX, e))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// The TLS connector handed to `tokio-postgres`: rustls, verifying the
/// server's chain and name. Without a configuration (plaintext URLs, where
/// `sslmode` is `disable` and it is never asked to connect) it refuses.
#[derive(Clone)]
struct RustlsConnect(Option<Arc<rustls::ClientConfig>>);

/// [`RustlsConnect`] for one host.
struct RustlsConnector {
    config: Option<Arc<rustls::ClientConfig>>,
    domain: String,
}

/// A TLS connection to the database.
struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl MakeTlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnector;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnector> {
        Ok(RustlsConnector {
            config: self.0.clone(),
            domain: domain.to_owned(),
        })
    }
}

impl TlsConnect<Socket> for RustlsConnector {
    type Stream = RustlsStream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let config = self
                .config
                .ok_or_else(|| io::Error::other("TLS is not configured for this database"))?;
            let name = rustls::pki_types::ServerName::try_from(self.domain)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(tls))
        })
    }
}

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl tokio_postgres::tls::TlsStream for RustlsStream {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

/// A vault store in a PostgreSQL database, which any number of servers
/// can share.
///
/// # Opening
///
/// [`PostgresStore::connect`] takes a `postgres://` (or `postgresql://`) URL,
/// as `storage = "postgres://vault@db.internal:5432/vault?sslmode=verify-full"`
/// in a server's configuration. Every parameter `tokio-postgres` knows is
/// accepted (`user`, `password`, `dbname`, `host`, `port`,
/// `connect_timeout`, `application_name`, ...); two more are handled here:
///
/// - `sslmode`: `disable` (and, when it is missing, `allow` or `prefer`)
///   connects in plaintext. `require`, `verify-ca` and `verify-full` connect
///   with TLS (rustls, ring) and all three verify the server's certificate
///   chain *and* host name: stricter than libpq, whose `require` accepts any
///   certificate. Channel binding is not offered (`tls-server-end-point` is
///   not computed), client certificates (`sslcert`, `sslkey`) are not
///   supported.
/// - `sslrootcert=PATH`: the PEM file of the CA certificates to trust (the
///   usual case for a private database CA). Without it, or with
///   `sslrootcert=system`, the system's trust store is used. Giving it
///   without `sslmode` turns TLS on.
///
/// Opening applies this store's own append-only migrations (its own, append-only) in one
/// transaction, under a transaction-level advisory lock, so that several
/// servers starting at once on an empty database all succeed with one schema.
/// A database whose schema is newer than this build is refused
/// ([`Error::SchemaTooNew`]).
///
/// # A synchronous trait on an async client
///
/// [`Store`] is synchronous: the vault calls it from blocking threads (the
/// gRPC server runs every vault call in `spawn_blocking`, the command line
/// calls it from `main`). The store owns a small multi-thread tokio runtime
/// (two workers, which drive the connections' I/O) and a `deadpool` pool of
/// connections. Each method builds one future for its whole body (a
/// transaction, the callbacks of [`Store::put`] and [`Store::reseal_all`]
/// included, so those callbacks run inside the transaction and need not be
/// `Send`) and drives it to completion *on the calling thread* with the
/// runtime's `Handle::block_on`. That works from a plain thread and from a
/// `spawn_blocking` thread of another runtime (neither is an async context).
/// Called on a worker thread of another multi-thread runtime, the call is
/// wrapped in `tokio::task::block_in_place`; from the thread of a
/// current-thread runtime it would panic, as any blocking call there should:
/// do not call a store from async code without `spawn_blocking`.
/// Dropping the store shuts its runtime down in the background, so a store
/// may be dropped anywhere, async code included.
///
/// # Concurrency across servers
///
/// Transactions run at READ COMMITTED and take row locks where a decision
/// must hold until commit:
///
/// - Every change within a scope (put, metadata, version changes, tokens of
///   the scope, key rotation, re-sealing) first locks the scope's row
///   (`FOR NO KEY UPDATE`), then reads what it decides on. Version
///   allocation, check-and-set, the secret and byte quotas, the key's
///   encryption count and the last-owner check are therefore taken by one
///   transaction at a time per scope, on every server: two servers never
///   hand out the same version and a CAS race has exactly one winner, even
///   for the first write of a name (no secret row to lock yet).
/// - Scope creation is `INSERT ... ON CONFLICT (slug) DO NOTHING`.
/// - The audit chain is extended under `pg_advisory_xact_lock`, after every
///   row lock of the transaction, so concurrent appenders (of any server)
///   form one gapless chain; `seq` is also the primary key.
///
/// Locks are always taken in the order scope row, other rows, the
/// `vault_state` row, the audit lock, so transactions do not deadlock.
///
/// # The change marker
///
/// [`Store::change_marker`] is `vault_state.changes + max(audit_log.seq)`,
/// read in one statement. `vault_state.changes` is incremented inside the
/// transaction of every change to state that servers cache (root key,
/// scopes, data keys, limits, tokens); every audited change (a put, a
/// deletion, ...) adds an audit record. Both only grow, so the sum changes
/// whenever either does. Since the increment commits with the change, a
/// cache filled after reading the marker either already saw the change or
/// will see a different marker on its next check: it cannot miss it.
///
/// # Deleting a scope
///
/// See `delete_scope`: the rows go in one transaction;
/// the bytes stay in dead tuples until PostgreSQL vacuums them, and the
/// crypto-shredding rests on the scope's wrapped data keys being deleted.
pub struct PostgresStore {
    pool: Pool,
    handle: tokio::runtime::Handle,
    /// `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
    target: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Never blocks, so a store can be dropped from async code.
            rt.shutdown_background();
        }
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (see the type's docs for the
    /// parameters, TLS included) and brings its schema up to date. A database
    /// that cannot be reached is an [`Error::Storage`] naming its host and
    /// port (never the password).
    pub fn connect(url: &str) -> Result<PostgresStore> {
        let target = parse_target(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tenant-vault-pg")
            .enable_all()
            .build()
            .map_err(|e| Error::storage("starting the database runtime", e))?;
        let tls = RustlsConnect(target.tls.map(Arc::new));
        let manager = Manager::from_config(
            target.config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .build()
            .map_err(|e| Error::storage("creating the connection pool", e))?;
        let store = PostgresStore {
            pool,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            target: target.display,
        };
        store.block(store.migrate())?;
        Ok(store)
    }

    /// The schema version of the database (the number of this store's
    /// migrations applied).
    pub fn schema_version(&self) -> Result<u32> {
        self.block(async {
            let c = self.conn().await?;
            let r = query_one(
                &c,
                "reading the schema version",
                "SELECT version FROM schema_version WHERE id = 1",
                &[],
            )
            .await?;
            col_u32(&r, 0)
        })
    }

    /// Runs `fut` to completion on the calling thread, with this store's
    /// runtime driving its I/O (see the type's docs).
    fn block<F: Future>(&self, fut: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| self.handle.block_on(fut))
            }
            _ => self.handle.block_on(fut),
        }
    }

    async fn conn(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            const CTX: &str = "connecting to the database";
            let transient = match &e {
                deadpool_postgres::PoolError::Timeout(_) => true,
                deadpool_postgres::PoolError::Backend(b) => match b.as_db_error() {
                    Some(d) => unavailable(d.code()),
                    None => broken_connection(b),
                },
                _ => false,
            };
            let msg = format!("{}: {e}", self.target);
            if transient {
                unavailable_error(CTX, msg)
            } else {
                Error::storage(CTX, msg)
            }
        })
    }

    /// Applies the migrations not yet applied, all in one transaction under
    /// an advisory lock.
    async fn migrate(&self) -> Result<()> {
        const CTX: &str = "migrating the schema";
        let mut c = self.conn().await?;
        let tx = c.transaction().await.map_err(db(CTX))?;
        execute(
            &tx,
            CTX,
            "SELECT pg_advisory_xact_lock($1)",
            &[&MIGRATION_LOCK],
        )
        .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 id       SMALLINT PRIMARY KEY CHECK (id = 1),
                 version  BIGINT NOT NULL
             );
             INSERT INTO schema_version VALUES (1, 0) ON CONFLICT (id) DO NOTHING;",
        )
        .await
        .map_err(db(CTX))?;
        let r = query_one(
            &tx,
            CTX,
            "SELECT version FROM schema_version WHERE id = 1",
            &[],
        )
        .await?;
        let current = col_u32(&r, 0)?;
        let supported = u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX);
        if current > supported {
            return Err(Error::SchemaTooNew {
                found: current,
                supported,
            });
        }
        for (i, step) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(step).await.map_err(db(CTX))?;
            execute(
                &tx,
                CTX,
                "UPDATE schema_version SET version = $1 WHERE id = 1",
                &[&(i as i64 + 1)],
            )
            .await?;
        }
        tx.commit().await.map_err(db(CTX))
    }
}

async fn begin<'a>(
    c: &'a mut deadpool_postgres::Object,
    ctx: &'static str,
) -> Result<deadpool_postgres::Transaction<'a>> {
    c.build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(db(ctx))
}

impl Store for PostgresStore {
    fn root(&self) -> Result<Option<RootRecord>> {
        const CTX: &str = "reading the root key";
        self.block(async {
            let c = self.conn().await?;
            let Some(r) = query_opt(
                &c,
                CTX,
                "SELECT method, kdf_m_cost, kdf_t_cost, kdf_p_cost, salt, version, wrapped,
                        created_at, rotated_at FROM root_key WHERE id = 1",
                &[],
            )
            .await?
            else {
                return Ok(None);
            };
            root_from_row(&r).map(Some)
        })
    }

    fn init_root(&self, root: &RootRecord) -> Result<()> {
        const CTX: &str = "initializing the vault";
        self.block(async {
            let mut c = self.conn().await?;
            let tx = begin(&mut c, CTX).await?;
            let n = insert_root(&tx, CTX, root).await?;
            if n == 0 {
                return Err(Error::AlreadyInitialized);
            }
            bump(&tx, CTX).await?;
            tx.commit().await.map_err(db(CTX))
        })
    }

    fn replace_root(&self, root: &RootRecord, rewrapped: &[DataKeyRecord]) -> Result<()> {
        const CTX: &str = "replacing the root key";
        self.block(async {
            let mut c = self.conn().await?;
            let tx = begin(&mut c, CTX).await?;
            let kdf = root.kdf;
            execute(
                &tx,
                CTX,
                "UPDATE root_key SET method = $1, kdf_m_cost = $2, kdf_t_cost = $3,
                                     kdf_p_cost = $4, salt = $5, version = $6, wrapped = $7,
                                     rotated_at = $8
                 WHERE id = 1",
                &[
                    &method_name(root.method),
                    &kdf.map(|k| i64::from(k.m_cost_kib)),
                    &kdf.map(|k| i64::from(k.t_cost)),
                    &kdf.map(|k| i64::from(k.p_cost)),
                    &root.salt,
                    &i64::from(root.version),
                    &root.wrapped,
                    &root.rotated_at.0,
                ],
            )
            .await?;
            for k in rewrapped {
                let n = execute(
                    &tx,
                    "rewrapping data keys",
                    "UPDATE data_keys SET wrapped = $3, root_version = $4
                     WHERE scope_id = $1 AND version = $2",
                    &[
                        &k.scope_id.0,
                        &i64::from(k.version),
                        &k.wrapped,
                        &i64::from(k.root_version),
                    ],
                )
                .await?;
                if n != 1 {
                    return Err(Error::storage(
                        "rewrapping data keys",
                        "a data key disappeared during the rewrap; nothing was changed",
                    ));
                }
            }
            bump(&tx, CTX).await?;
            tx.commit().await.map_err(db(CTX))
        })
    }

    fn all_data_keys(&self) -> Result<Vec<DataKeyRecord>> {
        const CTX: &str = "reading data keys";
        self.block(async {
            let c = self.conn().await?;
            query(
                &c,
                CTX,
                &format!("SELECT {DATA_KEY_COLUMNS} FROM data_keys ORDER BY scope_id, version"),
                &[],
            )
            .await?
            .iter()
            .map(data_key_from_row)
            .collect()
        })
    }

    fn create_scope(
        &self,
        scope: &ScopeRecord,
        first_key: &DataKeyRecord,
        audit: Option<&AuditEntry>,
    ) -> Result<Option<ScopeRecord>> {
        const CTX: &str = "creating a scope";
        self.block(async {
            let mut c = self.conn().await?;
            let tx = begin(&mut c, CTX).await?;
            let plan = match scope.kind {
                ScopeKind::Enterprise => "enterprise",
                _ => "starter",
            };
            loop {
                let n = execute(
                    &tx,
                    CTX,
                    "INSERT INTO scopes (id, slug, kind, created_at, active_key_version, plan)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (slug) DO NOTHING",
                    &[
                        &scope.id.0,
                        &scope.slug.as_str(),
                        &scope.kind.as_str(),
                        &scope.created_at.0,
                        &i64::from(scope.active_key_version),
                        &plan,
                    ],
                )
                .await?;
                if n == 1 {
                    break;
                }
                // Taken: by a committed scope, read now (READ COMMITTED
                // reads it), unless it was deleted meanwhile: then retry.
                if let Some(r) = query_opt(
                    &tx,
                    CTX,
                    &format!("SELECT {SCOPE_COLUMNS} FROM scopes WHERE slug = $1"),
                    &[&scope.slug.as_str()],
                )
                .await?
                {
                    return scope_from_row(&r).map(Some);
                }
            }
            insert_data_key(&tx, CTX, first_key).await?;
            bump(&tx, CTX).await?;
            append_in(&tx, audit.cloned()).await?;
            tx.commit().await.map_err(db(CTX))?;
            Ok(None)
        })
    }

    fn scope(&self, slug: &Slug) -> Result<Option<ScopeRecord>> {
        const CTX: &str = "reading a scope";
        self.block(async {
            let c = self.conn().await?;
            query_opt(
                &c,
                CTX,
                &format!("SELECT {SCOPE_COLUMNS} FROM scopes WHERE slug = $1"),
                &[&slug.as_str()],
            )
            .await?
            .map(|r| scope_from_row(&r))
            .transpose()
        })
    }

    fn scopes(&self) -> Result<Vec<ScopeRecord>> {
        const CTX: &str = "listing scopes";
        self.block(async {
            let c = self.conn().await?;
            query(
                &c,
                CTX,
                &format!("SELECT {SCOPE_COLUMNS} FROM scopes ORDER BY slug"),
                &[],
            )
            .await?
            .iter()
            .map(scope_from_row)
            .collect()
        })
    }

    /// Deletes the scope's versions, secrets, data keys, tokens and row in
    /// one transaction. PostgreSQL keeps deleted rows as dead tuples until
    /// (auto)vacuum reclaims them, and in its write-ahead log and backups:
    /// the bytes are not wiped at once as SQLite's `secure_delete` does.
    /// Crypto-shredding rests on the scope's wrapped data keys being deleted
    /// in the same transaction: without them (and with the root key never
    /// stored unwrapped) the remaining ciphertexts cannot be opened.
    fn delete_scope(&self, slug: &Slug, audit: Option<&AuditEntry>) -> Result<Option<ScopeId>> {
        const CTX: &str = "deleting a scope";
        self.block(async {
            let mut c = self.conn().await?;
            let tx = begin(&mut c, CTX).await?;
            let Some(id) = query_opt(
                &tx,
                CTX,
                "SELECT id FROM scopes WHERE slug = $1 FOR UPDATE",
                &[&slug.as_str()],
            )
            .await?
            .map(|r| col(&r, 0).map(ScopeId))
            .transpose()?
            else {
                return Ok(None);
            };
            for table in ["versions", "secrets", "data_keys", "tokens"] {
                execute(
                    &tx,
                    CTX,
                    &format!("DELETE FROM {table} WHERE scope_id = $1"),
                    &[&id.0],
                )
                .await?;
            }
            execute(&tx, CTX, "DELETE FROM scopes WHERE id = $1", &[&id.0]).await?;
            bump(&tx, CTX).await?;
            append_in(&tx, audit.cloned()).await?;
            tx.commit().await.map_err(db(CTX))?;
            Ok(Some(id))
        })
    }

    fn scope_usage(&self, scope: &ScopeId) -> Result<ScopeUsage> {
        const CTX: &str = "measuring a scope";
        self.block(async {
            let c = self.conn().await?;
            let r = query_one(
                &c,
                CTX,
                "SELECT (SELECT count(*) FROM secrets WHERE scope_id = $1),
                        (SELECT coalesce(sum(length(ciphertext)), 0)::BIGINT
                         FROM versions WHERE scope_id = $1)",
                &[&scope.0],
            )
            .await?;
            Ok(ScopeUsage {
                secrets: col_u64(&r, 0)?,
                bytes: col_u64(&r, 1)?,
            })
        })
    }

    fn data_key(&self, scope: &ScopeId, version: u32) -> Result<Option<DataKeyRecord>> {
        const CTX: &str = "reading a data key";
        self.block(async {
            let c = self.conn().await?;
            query_opt(
                &c,
                CTX,
                &format!(
                    "SELECT {DATA_KEY_COLUMNS} FROM data_keys WHERE scope_id = $1 AND version = $2"
                ),
                &[&scope.0, &i64::from(version)],
            )
            .await?
            .map(|r| data_key_from_row(&r))
            .transpose()
        })
    }

    fn add_data_key(&self, key: &DataKeyRecord, audit: Option<&AuditEntry>) -> Result<()> {
        const CTX: &str = "adding a data key";
        self.block(async {
            let mut c = self.conn().await?;
            let tx = begin(&mut c, CTX).await?;
            let n = execute(
                &tx,
                CTX,
                "UPDATE scopes SET active_key_version = $2 WHERE id = $1",
                &[&key.scope_id.0, &i64::from(key.version)],
            )
            .await?;
            if n != 1 {
                return Err(Error::storage(CTX, "the scope no longer exists"));
            }
            insert_data_key(&tx, CTX, key).await?;
            bump(&tx, CTX).await?;
            append_in(
                &tx,
                audit.map(|a| a.with_version(Some(u64::from(key.version)))),
            )
            .await?;
            tx.commit().await.map_err(db(CTX))
        })
    }

    fn remove_unused_data_keys(&self, scope: &ScopeId) -> Result<Vec<u32>> {
        const CTX: &str = "removing unused data keys";
        self.block(async {
            let mut c = self.conn().await?;
            let tx = begin(&mut c, CTX).await?;
            let locked = query_opt(
                &tx,
                CTX,
                "SELECT id FROM scopes WHERE id = $1 FOR NO KEY UPDATE",
                &[&scope.0],
            )
            .await?;
            if locked.is_none() {
                return Ok(Vec::new());
            }
            let removed = query(
                &tx,
                CTX,
                "DELETE FROM data_keys
                 WHERE scope_id = $1
                   AND version <> (SELECT active_key_version FROM scopes WHERE id = $1)
                   AND version NOT IN (SELECT DISTINCT key_version FROM versions
                                       WHERE scope_id = $1 AND key_version IS NOT NULL)
                 RETURNING version",
                &[&scope.0],
            )
            .await?
            .iter()
            .map(|r| col_u32(r, 0))
            .collect::<Result<Vec<u32>>>()?;
            if !removed.is_empty() {
                bump(&tx, CTX).await?;
            }
            tx.commit().await.map_err(db(CTX))?;
            Ok(removed)
        })
    }

    fn put(
        &self,
        p: &PutParams<'_>,
        seal: &mut dyn FnMut(&SealInput<'_>) -> Result<Sealed>,
        audit: Option<&AuditEntry>,
    ) -> Result<PutOutcome> {
        const CTX: &str = "writing a secret";
        self.block(async {
            let mut c = self.conn().await?;
            let tx = begin(&mut c, CTX).await?;
            let Some(row) = query_opt(
                &tx,
                CTX,
                "SELECT sc.id, coalesce(sc.max_secrets, p.max_secrets),
                        coalesce(sc.max_bytes, p.max_bytes), sc.bytes_used
                 FROM scopes sc JOIN plans p ON p.name = sc.plan WHERE sc.slug = $1
                 FOR NO KEY UPDATE OF sc",
                &[&p.slug.as_str()],
            )
            .await?
            else {
                return Ok(PutOutcome::NoScope);
            };
            let scope = ScopeId(col(&row, 0)?);
            let plan_secrets = col_u64(&row, 1)?;
            let max_bytes = col_u64(&row, 2)?;
            let bytes_used = col_u64(&row, 3)?;
            let name = p.name.as_str();
            let existing = match query_opt(
                &tx,
                CTX,
                "SELECT current_version, max_versions FROM secrets
                 WHERE scope_id = $1 AND name = $2",
                &[&scope.0, &name],
            )
            .await?
            {
                Some(r) => Some((col_u64(&r, 0)?, col_u32(&r, 1)?)),
                None => None,
            };
            let current = existing.map_or(0, |(v, _)| v);
            if let Some(expected) = p.cas {
                if expected != current {
                    return Ok(PutOutcome::CasMismatch { current });
                }
            }
            if existing.is_none() {
                let max_secrets = plan_secrets.min(p.max_secrets);
                let r = query_one(
                    &tx,
                    CTX,
                    "SELECT count(*) FROM secrets WHERE scope_id = $1",
                    &[&scope.0],
                )
                .await?;
                if col_u64(&r, 0)? >= max_secrets {
                    return Ok(PutOutcome::TooManySecrets(max_secrets));
                }
            }
            if bytes_used.saturating_add(p.ciphertext_len) > max_bytes {
                return Ok(PutOutcome::TooManyBytes(max_bytes));
            }
            let key_row = query_one(
                &tx,
                CTX,
                &format!(
                    "UPDATE data_keys SET encryptions = encryptions + 1
                     WHERE scope_id = $1
                       AND version = (SELECT active_key_version FROM scopes WHERE id = $1)
                     RETURNING {DATA_KEY_COLUMNS}"
                ),
                &[&scope.0],
            )
            .await?;
            let key = data_key_from_row(&key_row)?;
            let version = current + 1;
            let sealed = seal(&SealInput {
                scope: &scope,
                version,
                key: &key,
            })?;
            let now = p.now.0;
            let max_versions = match existing {
                None => {
                    execute(
                        &tx,
                        CTX,
                        "INSERT INTO secrets (scope_id, name, current_version, max_versions,
                                              created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $5)",
                        &[
                            &scope.0,
                            &name,
                            &to_i64(version)?,
                            &i64::from(p.default_max_versions),
                            &now,
                        ],
                    )
                    .await?;
                    p.default_max_versions
                }
                Some((_, max)) => {
                    execute(
                        &tx,
                        CTX,
                        "UPDATE secrets SET current_version = $3, updated_at = $4
                         WHERE scope_id = $1 AND name = $2",
                        &[&scope.0, &name, &to_i64(version)?, &now],
                    )
                    .await?;
                    max
                }
            };
            execute(
                &tx,
                CTX,
                "INSERT INTO versions (scope_id, name, version, created_at, key_version, nonce,
                                       ciphertext)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &scope.0,
                    &name,
                    &to_i64(version)?,
                    &now,
                    &i64::from(sealed.key_version),
                    &sealed.nonce,
                    &sealed.ciphertext,
                ],
            )
            .await?;
            execute(
                &tx,
                CTX,
                "UPDATE scopes SET bytes_used = bytes_used + $2 WHERE id = $1",
                &[&scope.0, &to_i64(sealed.ciphertext.len() as u64)?],
            )
            .await?;
            prune(&tx, CTX, &scope, name, version, max_versions).await?;
            append_in(&tx, audit.map(|a| a.with_version(Some(version)))).await?;
            tx.commit().await.map_err(db(CTX))?;
            Ok(PutOutcome::Written {
                version,
                key_version: key.version,
                key_encryptions: key.encryptions,
            })
        })
    }

    fn version(
        &self,
        slug: &Slug,
        name: &SecretName,
        which: VersionSelector,
    ) -> Result<Lookup<FoundVersion>> {
        const CTX: &str = "reading a secret";
        let exact = match which {
            VersionSelector::Latest => None,
            VersionSelector::Exact(v) => Some(to_i64(v)?),
        };
        self.block(async {
            let c = self.conn().await?;
            // The current version is always the highest stored one (pruning
            // never removes it), so a read is one descent into `versions`;
            // the `secrets` row is consulted only to explain a miss.
            let Some(r) = query_opt(
                &c,
                CTX,
                "SELECT sc.id, v.version, v.created_at, v.deleted_at, v.destroyed,
                        v.key_version, v.nonce, v.ciphertext
                 FROM scopes sc
                 LEFT JOIN LATERAL (
                     SELECT * FROM versions
                     WHERE scope_id = sc.id AND name = $2
                       AND ($3::BIGINT IS NULL OR version = $3::BIGINT)
                     ORDER BY version DESC LIMIT 1) v ON true
                 WHERE sc.slug = $1",
                &[&slug.as_str(), &name.as_str(), &exact],
            )
            .await?
            else {
                return Ok(Lookup::NoScope);
            };
            let scope = ScopeId(col(&r, 0)?);
            if col::<Option<i64>>(&r, 1)?.is_some() {
                return Ok(Lookup::Found(FoundVersion {
                    scope,
                    version: Some(version_from_row(&r, 1, true)?),
                }));
            }
            let exists = query_opt(
                &c,
                CTX,
                "SELECT 1 FROM secrets WHERE scope_id = $1 AND name = $2",
                &[&scope.0, &name.as_str()],
            )
            .await?
            .is_some();
            Ok(if exists {
                Lookup::Found(FoundVersion {
                    scope,
                    version: None,
                })
            } else {
                Lookup::NoSecret
            })
        })
    }

    fn list(
        &self,
        slug: &Slug,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Vec<SecretName>>> {
        const CTX: &str = "listing secrets";
        self.block(async {
            let c = self.conn().await?;
            let Some(scope) = scope_id_of(&c, CTX, slug).await? else {
                return Ok(None);
            };
            // Names are ASCII below DEL, so `prefix || DEL` bounds the range.
            let upper = format!("{prefix}\u{7f}");
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            query(
                &c,
                CTX,
                "SELECT name FROM secrets
                 WHERE scope_id = $1 AND name >= $2 AND name < $3 AND name > $4
                 ORDER BY name LIMIT $5",
                &[&scope.0, &prefix, &upper, &after.unwrap_or(""), &limit],
            )
            .await?
            .iter()
            .map(|r| col_name(r, 0))
            .collect::<Result<Vec<_>>>()
            .map(Some)
        })
    }

    fn metadata(
        &self,
        slug: &Slug,
        name: &SecretName,
    ) -> Result<Lookup<(SecretRecord, Vec<StoredVersion>)>> {
        const CTX: &str = "reading metadata";
        self.block(async {
            let c = self.conn().await?;
            let Some(scope) = scope_id_of(&c, CTX, slug).await? else {
                return Ok(Lookup::NoScope);
            };
            let Some(r) = query_opt(
                &c,
                CTX,
                "SELECT current_version, max_versions, custom_metadata, created_at, updated_at
                 FROM secrets WHERE scope_id = $1 AND name = $2",
                &[&scope.0, &name.as_str()],
            )
            .await?
            else {
                return Ok(Lookup::NoSecret);
            };
            let custom: String = col(&r, 2)?;
            let secret = SecretRecord {
                name: name.clone(),
                current_version: col_u64(&r, 0)?,
                max_versions: col_u32(&r, 1)?,
                custom: serde_json::from_str(&custom)
                    .map_err(|e| decode_error(format!("custom metadata: {e}")))?,
                created_at: Timestamp(col(&r, 3)?),
                updated_at: Timestamp(col(&r, 4)?),
            };
            let versions = query(
                &c,
                CTX,
                "SELECT version, created_at, deleted_at, destroyed, key_version FROM versions
                 WHERE scope_id = $1 AND name = $2 ORDER BY version",
                &[&scope.0, &name.as_str()],
            )
            .await?
            .iter()
            .map(|r| version_from_row(r, 0, false))
            .collect::<Result<Vec<_>>>()?;
            Ok(Lookup::Found((secret, versions)))
        })
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
        let custom = custom
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| Error::storage(CTX, e))?;
        self.block(async {
            let mut c = self.conn().await?;
            let tx = begin(&mut c, CTX).await?;
            let Some(scope) = lock_scope(&tx, CTX, slug).await? else {
                return Ok(Lookup::NoScope);
            };
            let Some(r) = query_opt(
                &tx,
                CTX,
                "UPDATE secrets SET max_versions = coalesce($3::BIGINT, max_versions),
                                    custom_metadata = coalesce($4::TEXT, custom_metadata),
                                    updated_at = $5
                 WHERE scope_id = $1 AND name = $2
                 RETURNING current_version, max_versions",
                &[
                    &scope.0,
                    &name.as_str(),
                    &max_versions.map(i64::from),
                    &custom,
                    &now.0,
                ],
            )
            .await?
            else {
                return Ok(Lookup::NoSecret);
            };
            let (current, max) = (col_u64(&r, 0)?, col_u32(&r, 1)?);
            prune(&tx, CTX, &scope, name.as_str(), current, max).await?;
            append_in(&tx, audit.cloned()).await?;
            tx.commit().await.map_err(db(CTX))?;
            Ok(Lookup::Found(()))
        })
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
        self.block(async {
            let mut c = self.conn().await?;
            let tx = begin(&mut c, CTX).await?;
            let Some(scope) = lock_scope(&tx, CTX, slug).await? else {
                return Ok(Lookup::NoScope);
            };
            let Some(r) = query_opt(
                &tx,
                CTX,
                "SELECT current_version FROM secrets WHERE scope_id = $1 AND name = $2",
                &[&scope.0, &name.as_str()],
            )
            .await?
            else {
                return Ok(Lookup::NoSecret);
            };
            let current = col_u64(&r, 0)?;
            let mut wanted: Vec<u64> = if versions.is_empty() {
                vec![current]
            } else {
                versions.to_vec()
            };
            wanted.sort_unstable();
            wanted.dedup();
            for &v in &wanted {
                let destroyed = match query_opt(
                    &tx,
                    CTX,
                    "SELECT destroyed FROM versions
                     WHERE scope_id = $1 AND name = $2 AND version = $3",
                    &[&scope.0, &name.as_str(), &to_i64(v).unwrap_or(-1)],
                )
                .await?
                {
                    Some(r) => Some(col::<bool>(&r, 0)?),
                    None => None,
                };
                match destroyed {
                    None => return Ok(Lookup::Found(Changed::NoVersion(v))),
                    Some(true) if change == VersionChange::Undelete => {
                        return Ok(Lookup::Found(Changed::Destroyed(v)));
                    }
                    Some(_) => {}
                }
            }
            for &v in &wanted {
                let v = to_i64(v)?;
                let params: [&(dyn ToSql + Sync); 3] = [&scope.0, &name.as_str(), &v];
                match change {
                    VersionChange::Delete(at) => {
                        execute(
                            &tx,
                            CTX,
                            "UPDATE versions SET deleted_at = $4
                             WHERE scope_id = $1 AND name = $2 AND version = $3
                               AND deleted_at IS NULL AND NOT destroyed",
                            &[&scope.0, &name.as_str(), &v, &at.0],
                        )
                        .await?;
                    }
                    VersionChange::Undelete => {
                        execute(
                            &tx,
                            CTX,
                            "UPDATE versions SET deleted_at = NULL
                             WHERE scope_id = $1 AND name = $2 AND version = $3",
                            &params,
                        )
                        .await?;
                    }
                    VersionChange::Destroy => {
                        execute(
                            &tx,
                            CTX,
                            "UPDATE scopes SET bytes_used = bytes_used -
                                (SELECT coalesce(length(ciphertext), 0) FROM versions
                                 WHERE scope_id = $1 AND name = $2 AND version = $3)
                             WHERE id = $1",
                            &params,
                        )
                        .await?;
                        execute(
                            &tx,
                            CTX,
                            "UPDATE versions SET destroyed = true, key_version = NULL,
                                                 nonce = NULL, ciphertext = NULL
                             WHERE scope_id = $1 AND name = $2 AND version = $3",
                            &params,
                        )
                        .await?;
                    }
                }
            }
            let single = (wanted.len() == 1).then(|| wanted[0]);
            append_in(&tx, audit.map(|a| a.with_version(single))).await?;
            tx.commit().await.map_err(db(CTX))?;
            Ok(Lookup::Found(Changed::Versions(wanted)))
        })
    }

    fn limits(&self, slug: &Slug) -> Result<Option<Limits>> {
        const CTX: &str = "reading limits";
        self.block(async {
            let c = self.conn().await?;
            query_opt(
                &c,
                CTX,
                &format!(
                    "SELECT {LIMIT_COLUMNS} FROM scopes sc JOIN plans p ON p.name = sc.plan
                     WHERE sc.slug = $1"
                ),
                &[&slug.as_str()],
            )
            .await?
            .map(|r| limits_from_row(&r, 0))
            .transpose()
        })
    }

    fn set_limits(&self, slug: &Slug, c: &LimitChange, audit: Option<&AuditEntry>) -> Result<bool> {
        const CTX: &str = "changing limits";
        let (max_secrets, max_bytes, max_tokens) = (
            opt_i64(c.max_secrets)?,
            opt_i64(c.max_bytes)?,
            opt_i64(c.max_tokens)?,
        );
        self.block(async {
            let mut conn = self.conn().await?;
            let tx = begin(&mut conn, CTX).await?;
            if let Some(plan) = &c.plan {
                let known = query_opt(&tx, CTX, "SELECT 1 FROM plans WHERE name = $1", &[plan])
                    .await?
                    .is_some();
                if !known {
                    return Err(Error::InvalidArgument(format!("there is no plan `{plan}`")));
                }
            }
            let n = execute(
                &tx,
                CTX,
                "UPDATE scopes SET plan = coalesce($2::TEXT, plan),
                                   max_secrets = coalesce($3::BIGINT, max_secrets),
                                   max_bytes = coalesce($4::BIGINT, max_bytes),
                                   max_tokens = coalesce($5::BIGINT, max_tokens),
                                   rate_per_sec = coalesce($6::DOUBLE PRECISION, rate_per_sec)
                 WHERE slug = $1",
                &[
                    &slug.as_str(),
                    &c.plan,
                    &max_secrets,
                    &max_bytes,
                    &max_tokens,
                    &c.rate_per_sec,
                ],
            )
            .await?;
            if n == 1 {
                bump(&tx, CTX).await?;
                append_in(&tx, audit.cloned()).await?;
            }
            tx.commit().await.map_err(db(CTX))?;
            Ok(n == 1)
        })
    }

    fn insert_token(
        &self,
        t: &TokenRecord,
        slug: Option<&Slug>,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<TokenInsert> {
        const CTX: &str = "issuing a token";
        self.block(async {
            let mut c = self.conn().await?;
            let tx = begin(&mut c, CTX).await?;
            let scope_id = match slug {
                None => None,
                Some(slug) => {
                    let Some(r) = query_opt(
                        &tx,
                        CTX,
                        &format!(
                            "SELECT sc.id, {LIMIT_COLUMNS} FROM scopes sc
                             JOIN plans p ON p.name = sc.plan WHERE sc.slug = $1
                             FOR NO KEY UPDATE OF sc"
                        ),
                        &[&slug.as_str()],
                    )
                    .await?
                    else {
                        return Ok(TokenInsert::NoScope);
                    };
                    let id: String = col(&r, 0)?;
                    let max_tokens = limits_from_row(&r, 1)?.max_tokens;
                    let live = query_one(
                        &tx,
                        CTX,
                        "SELECT count(*) FROM tokens WHERE scope_id = $1 AND revoked_at IS NULL
                           AND (expires_at IS NULL OR expires_at > $2)",
                        &[&id, &now.0],
                    )
                    .await?;
                    if col_u64(&live, 0)? >= max_tokens {
                        return Ok(TokenInsert::TooMany(max_tokens));
                    }
                    Some(id)
                }
            };
            execute(
                &tx,
                CTX,
                "INSERT INTO tokens (id, hash, kind, scope_id, role, policy, description,
                                     created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    &t.id,
                    &t.hash,
                    &if scope_id.is_some() {
                        "tenant"
                    } else {
                        "operator"
                    },
                    &scope_id,
                    &t.role,
                    &t.policy,
                    &t.description,
                    &t.created_at.0,
                    &t.expires_at.map(|e| e.0),
                ],
            )
            .await?;
            bump(&tx, CTX).await?;
            append_in(&tx, audit.cloned()).await?;
            tx.commit().await.map_err(db(CTX))?;
            Ok(TokenInsert::Inserted)
        })
    }

    fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRecord>> {
        const CTX: &str = "reading a token";
        self.block(async {
            let c = self.conn().await?;
            query_opt(
                &c,
                CTX,
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens t
                     LEFT JOIN scopes sc ON sc.id = t.scope_id WHERE t.hash = $1"
                ),
                &[&hash],
            )
            .await?
            .map(|r| token_from_row(&r))
            .transpose()
        })
    }

    fn tokens(&self, slug: Option<&Slug>) -> Result<Vec<TokenRecord>> {
        const CTX: &str = "listing tokens";
        self.block(async {
            let c = self.conn().await?;
            query(
                &c,
                CTX,
                &format!(
                    "SELECT {TOKEN_COLUMNS} FROM tokens t
                     LEFT JOIN scopes sc ON sc.id = t.scope_id
                     WHERE $1::TEXT IS NULL OR sc.slug = $1::TEXT
                     ORDER BY t.created_at, t.id"
                ),
                &[&slug.map(Slug::as_str)],
            )
            .await?
            .iter()
            .map(token_from_row)
            .collect()
        })
    }

    fn revoke_token(
        &self,
        id: &str,
        scope: Option<&ScopeId>,
        now: Timestamp,
        audit: Option<&AuditEntry>,
    ) -> Result<TokenRevoke> {
        const CTX: &str = "revoking a token";
        self.block(async {
            let mut c = self.conn().await?;
            let tx = begin(&mut c, CTX).await?;
            // A token's scope never changes. Lock the scope's row first (the
            // last-owner check counts the scope's other tokens), then the
            // token's.
            let Some(r) = query_opt(
                &tx,
                CTX,
                "SELECT scope_id FROM tokens WHERE id = $1",
                &[&id],
            )
            .await?
            else {
                return Ok(TokenRevoke::NotFound);
            };
            let token_scope: Option<String> = col(&r, 0)?;
            if let Some(only) = scope {
                if token_scope.as_deref() != Some(only.0.as_str()) {
                    return Ok(TokenRevoke::NotFound);
                }
            }
            if let Some(s) = &token_scope {
                query_opt(
                    &tx,
                    CTX,
                    "SELECT id FROM scopes WHERE id = $1 FOR NO KEY UPDATE",
                    &[s],
                )
                .await?;
            }
            let Some(r) = query_opt(
                &tx,
                CTX,
                "SELECT role, revoked_at FROM tokens WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
            else {
                return Ok(TokenRevoke::NotFound);
            };
            let role: String = col(&r, 0)?;
            if col::<Option<i64>>(&r, 1)?.is_some() {
                return Ok(TokenRevoke::AlreadyRevoked);
            }
            if role == "owner" {
                let others = query_one(
                    &tx,
                    CTX,
                    "SELECT count(*) FROM tokens
                     WHERE scope_id = $1 AND role = 'owner' AND id <> $2
                       AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > $3)",
                    &[&token_scope, &id, &now.0],
                )
                .await?;
                if col_u64(&others, 0)? == 0 {
                    return Ok(TokenRevoke::LastOwner);
                }
            }
            execute(
                &tx,
                CTX,
                "UPDATE tokens SET revoked_at = $2 WHERE id = $1",
                &[&id, &now.0],
            )
            .await?;
            bump(&tx, CTX).await?;
            append_in(&tx, audit.cloned()).await?;
            tx.commit().await.map_err(db(CTX))?;
            Ok(TokenRevoke::Revoked)
        })
    }

    fn cache_marker(&self) -> Result<u64> {
        const CTX: &str = "reading the cache marker";
        self.block(async {
            let c = self.conn().await?;
            let r = query_one(&c, CTX, "SELECT changes FROM vault_state WHERE id = 1", &[]).await?;
            col_u64(&r, 0)
        })
    }

    fn change_marker(&self) -> Result<u64> {
        const CTX: &str = "reading the change marker";
        self.block(async {
            let c = self.conn().await?;
            let r = query_one(
                &c,
                CTX,
                "SELECT (SELECT changes FROM vault_state WHERE id = 1)
                      + (SELECT coalesce(max(seq), 0) FROM audit_log)",
                &[],
            )
            .await?;
            col_u64(&r, 0)
        })
    }

    fn append_audit(&self, entries: &[AuditEntry]) -> Result<Vec<AuditRecord>> {
        const CTX: &str = "writing the audit trail";
        self.block(async {
            let mut c = self.conn().await?;
            let tx = begin(&mut c, CTX).await?;
            let out = append_in(&tx, entries.iter().cloned()).await?;
            tx.commit().await.map_err(db(CTX))?;
            Ok(out)
        })
    }

    fn audit_records(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        const CTX: &str = "reading the audit trail";
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.block(async {
            let c = self.conn().await?;
            query(
                &c,
                CTX,
                &format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2"
                ),
                &[&after, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?
            .iter()
            .map(audit_from_row)
            .collect()
        })
    }

    fn last_audit_seq(&self) -> Result<u64> {
        const CTX: &str = "reading the audit trail";
        self.block(async {
            let c = self.conn().await?;
            let r = query_one(&c, CTX, "SELECT coalesce(max(seq), 0) FROM audit_log", &[]).await?;
            col_u64(&r, 0)
        })
    }

    fn audit_changes(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<AuditRecord>> {
        const CTX: &str = "reading the audit trail";
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.block(async {
            let c = self.conn().await?;
            query(
                &c,
                CTX,
                &format!(
                    "SELECT {AUDIT_COLUMNS} FROM audit_log
                     WHERE seq > $1 AND tenant = $2 AND outcome = 'ok'
                       AND operation IN ('put', 'delete', 'undelete', 'destroy',
                                         'update-metadata', 'delete-scope')
                     ORDER BY seq LIMIT $3"
                ),
                &[&after, &tenant, &i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .await?
            .iter()
            .map(audit_from_row)
            .collect()
        })
    }

    fn reseal_all(
        &self,
        scope: &ScopeId,
        key_version: u32,
        reseal: &mut dyn FnMut(&SecretName, &StoredVersion) -> Result<Sealed>,
    ) -> Result<u64> {
        const CTX: &str = "re-encrypting versions";
        self.block(async {
            let mut c = self.conn().await?;
            let tx = begin(&mut c, CTX).await?;
            query_opt(
                &tx,
                CTX,
                "SELECT id FROM scopes WHERE id = $1 FOR NO KEY UPDATE",
                &[&scope.0],
            )
            .await?;
            let rows = query(
                &tx,
                CTX,
                "SELECT name, version, created_at, deleted_at, destroyed, key_version, nonce,
                        ciphertext
                 FROM versions
                 WHERE scope_id = $1 AND ciphertext IS NOT NULL AND key_version <> $2
                 ORDER BY name, version",
                &[&scope.0, &i64::from(key_version)],
            )
            .await?
            .iter()
            .map(|r| Ok((col_name(r, 0)?, version_from_row(r, 1, true)?)))
            .collect::<Result<Vec<(SecretName, StoredVersion)>>>()?;
            for (name, v) in &rows {
                let sealed = reseal(name, v)?;
                execute(
                    &tx,
                    CTX,
                    "UPDATE versions SET key_version = $4, nonce = $5, ciphertext = $6
                     WHERE scope_id = $1 AND name = $2 AND version = $3",
                    &[
                        &scope.0,
                        &name.as_str(),
                        &to_i64(v.version)?,
                        &i64::from(sealed.key_version),
                        &sealed.nonce,
                        &sealed.ciphertext,
                    ],
                )
                .await?;
            }
            let n = rows.len() as u64;
            execute(
                &tx,
                CTX,
                "UPDATE data_keys SET encryptions = encryptions + $3
                 WHERE scope_id = $1 AND version = $2",
                &[&scope.0, &i64::from(key_version), &to_i64(n)?],
            )
            .await?;
            tx.commit().await.map_err(db(CTX))?;
            Ok(n)
        })
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

fn method_name(m: UnlockMethod) -> &'static str {
    match m {
        UnlockMethod::Passphrase => "passphrase",
        _ => "keyfile",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_with_their_tls_parameters() {
        let t = parse_target("postgres://u:secret@db.example:6543/vault").unwrap();
        assert_eq!(t.display, "db.example:6543");
        assert!(t.tls.is_none());
        assert_eq!(t.config.get_ssl_mode(), SslMode::Disable);
        assert_eq!(t.config.get_dbname(), Some("vault"));
        assert_eq!(t.config.get_password(), Some(&b"secret"[..]));
        assert!(!format!("{t:?}").contains("secret"), "Debug redacts it");

        let t = parse_target("postgres://u@h/d?sslmode=prefer&application_name=x").unwrap();
        assert!(t.tls.is_none());
        assert_eq!(t.config.get_application_name(), Some("x"));
        assert_eq!(t.display, "h:5432");

        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        let missing = format!(
            "postgres://u@h/d?sslmode=verify-full&sslrootcert={}",
            ca.display()
        );
        assert!(matches!(parse_target(&missing), Err(Error::Storage { .. })));

        for bad in [
            "mysql://h/d",
            "postgres://h/d?sslmode=sometimes",
            "postgres://h/d?sslrootcert=%zz",
        ] {
            assert!(
                matches!(parse_target(bad), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn connection_failures_name_the_host_but_never_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = PostgresStore::connect(&format!(
            "postgres://vault:hunter2@127.0.0.1:{port}/vault?connect_timeout=2"
        ))
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, Error::StorageUnavailable { .. }),
            "a refused connection may succeed later: {msg}"
        );
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        assert!(!format!("{err:?}").contains("hunter2"));
    }
}
