//! Helpers shared by the tenant-vault integration tests.
//!
//! # One suite, two backends
//!
//! The conformance suite (`behaviour.rs`, `access.rs`, `integrity.rs`,
//! `model.rs`) runs unchanged against either store, chosen with the
//! environment variable `TV_STORE`:
//!
//! - `sqlite` (the default, also when unset or empty): each [`TestVault`]
//!   stores in `sqlite://DIR/vault.db` of its temp dir;
//! - `postgres`: each [`TestVault`] stores in a fresh database of the
//!   throwaway cluster the test process shares
//!   ([`pg_harness::PgCluster::shared`]).
//!
//! Either way the temp dir holds the key file and audit files, stores are
//! opened through [`tenant_vault::open_store`] with [`TestVault::url`], and
//! tests that tamper with stored rows do it through [`Raw`], which runs the
//! same SQL on either backend. Checks about SQLite's files themselves (their
//! bytes after a deletion) run only when [`sqlite`] is true; every test runs
//! on both backends, with a backend-neutral check of the stored rows
//! ([`Raw::all_stored_bytes`]) in their place on PostgreSQL.
//!
//! The property tests run their full case counts on both backends (a fresh
//! database per case costs little: the PostgreSQL run of the four files
//! takes a few seconds more than SQLite's). `TV_PROPTEST_CASES_PG`, a
//! percentage (default 100), scales their case counts on PostgreSQL only:
//! down on a slow machine, up to hunt for differences between the backends
//! (see [`cases`]).
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use tenant_vault::{
    KdfParams, ScopeKind, Slug, Store, Unlock, Vault, VaultOptions, create_key_file, open_store,
};

/// The storage backend the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The backend `TV_STORE` names (`sqlite`, the default, or `postgres`).
pub fn backend() -> Backend {
    match std::env::var("TV_STORE").as_deref() {
        Err(_) | Ok("" | "sqlite") => Backend::Sqlite,
        Ok("postgres" | "postgresql") => Backend::Postgres,
        Ok(other) => panic!("TV_STORE={other:?}: expected `sqlite` (the default) or `postgres`"),
    }
}

/// True on SQLite. Tests about the SQLite file itself (its bytes, WAL,
/// pragmas) run only there:
/// `if !sqlite() { eprintln!("sqlite only: ..."); return; }`.
pub fn sqlite() -> bool {
    backend() == Backend::Sqlite
}

/// The case count for a property test: `n` on SQLite; on PostgreSQL, `n`
/// scaled by `TV_PROPTEST_CASES_PG` percent (default 100, at least 1 case).
pub fn cases(n: u32) -> u32 {
    if sqlite() {
        return n;
    }
    let pct: u32 = std::env::var("TV_PROPTEST_CASES_PG")
        .ok()
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| panic!("TV_PROPTEST_CASES_PG={s:?}: expected a percentage"))
        })
        .unwrap_or(100);
    (n * pct / 100).max(1)
}

/// A new, empty storage location: `sqlite://DIR/NAME`, or a fresh
/// PostgreSQL database (`name` is then unused).
pub fn new_storage_url(dir: &Path, name: &str) -> String {
    match backend() {
        Backend::Sqlite => format!("sqlite://{}", dir.join(name).display()),
        Backend::Postgres => pg_harness::PgCluster::shared().fresh_database(),
    }
}

/// A vault in a temp dir, unlocked with a key file (or, for
/// [`passphrase_vault`], a passphrase); its data is at `url`.
pub struct TestVault {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub vault: Vault,
}

impl TestVault {
    /// The SQLite file (only meaningful on SQLite).
    pub fn db_path(&self) -> PathBuf {
        assert!(sqlite(), "db_path is SQLite's");
        self.dir.path().join("vault.db")
    }

    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("vault.key")
    }

    /// Another store on the same data: another connection, as another
    /// process or server would have.
    pub fn store(&self) -> Box<dyn Store> {
        open_store(&self.url).unwrap()
    }

    /// A raw connection on the same data, for tests that read or edit
    /// stored rows directly.
    pub fn raw(&self) -> Raw {
        Raw::open(&self.url)
    }

    /// Runs one or more SQL statements on the stored data.
    pub fn sql(&self, statements: &str) {
        self.raw().batch(statements);
    }

    /// Reopens the vault from its storage and key file.
    pub fn reopen(self, opts: VaultOptions) -> TestVault {
        let TestVault { dir, url, vault } = self;
        drop(vault);
        let store = open_store(&url).unwrap();
        let vault =
            Vault::open(store, &Unlock::KeyFile(dir.path().join("vault.key")), opts).unwrap();
        TestVault { dir, url, vault }
    }
}

/// Cheap Argon2id parameters: the tests exercise the logic, not the cost.
pub fn fast_kdf() -> KdfParams {
    KdfParams {
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
    }
}

pub fn options() -> VaultOptions {
    let mut o = VaultOptions::default();
    o.kdf = fast_kdf();
    o
}

pub fn key_file_vault(opts: VaultOptions) -> TestVault {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("vault.key");
    create_key_file(&key).unwrap();
    let url = new_storage_url(dir.path(), "vault.db");
    let vault = Vault::init(open_store(&url).unwrap(), &Unlock::KeyFile(key), opts).unwrap();
    TestVault { dir, url, vault }
}

/// A vault unlocked with a passphrase (no key file in its dir).
pub fn passphrase_vault(pass: &str, opts: VaultOptions) -> TestVault {
    let dir = tempfile::tempdir().unwrap();
    let url = new_storage_url(dir.path(), "vault.db");
    let unlock = Unlock::Passphrase(tenant_vault::Secret::from(pass));
    let vault = Vault::init(open_store(&url).unwrap(), &unlock, opts).unwrap();
    TestVault { dir, url, vault }
}

pub fn vault_with_tenants(opts: VaultOptions, tenants: &[&str]) -> TestVault {
    let tv = key_file_vault(opts);
    for t in tenants {
        tv.vault
            .create_scope(&slug(t), ScopeKind::Enterprise)
            .unwrap();
    }
    tv
}

pub fn slug(s: &str) -> Slug {
    Slug::parse(s).unwrap()
}

pub fn path(s: &str) -> tenant_vault::SecretPath {
    tenant_vault::SecretPath::parse(s).unwrap()
}

/// Every byte of the SQLite database, its WAL and shared-memory files.
pub fn storage_bytes(db: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(b) = std::fs::read(PathBuf::from(p)) {
            all.extend_from_slice(&b);
        }
    }
    all
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A short, stable name for an error variant, for comparing with a model.
pub fn kind(e: &tenant_vault::Error) -> &'static str {
    use tenant_vault::Error::*;
    match e {
        ScopeNotFound(_) => "no_scope",
        SecretNotFound(_) => "no_secret",
        VersionNotFound { .. } => "no_version",
        VersionDeleted { .. } => "deleted",
        VersionDestroyed { .. } => "destroyed",
        CasMismatch { .. } => "cas",
        ValueTooLarge { .. } => "too_large",
        QuotaExceeded { .. } => "quota",
        Integrity(_) => "integrity",
        _ => "other",
    }
}

/// A value going to or coming from [`Raw`]: what both backends' columns
/// hold (integers of any width and booleans are `Int`).
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Val {
    pub fn int(&self) -> i64 {
        match self {
            Val::Int(i) => *i,
            other => panic!("expected an integer, got {other:?}"),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Val::Text(s) => s.clone(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Val::Bytes(b) => b.clone(),
            other => panic!("expected bytes, got {other:?}"),
        }
    }

    /// The value's bytes as stored: text as UTF-8, integers in decimal.
    fn stored_bytes(&self) -> Vec<u8> {
        match self {
            Val::Null => Vec::new(),
            Val::Int(i) => i.to_string().into_bytes(),
            Val::Real(f) => f.to_string().into_bytes(),
            Val::Text(s) => s.clone().into_bytes(),
            Val::Bytes(b) => b.clone(),
        }
    }
}

/// A statement parameter for [`Raw`].
pub trait Param {
    fn val(&self) -> Val;
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl Param for $t {
            fn val(&self) -> Val {
                Val::Int(i64::try_from(*self).expect("fits in i64"))
            }
        }
    )*};
}
int_param!(i32, i64, u32, u64, usize);

impl Param for &str {
    fn val(&self) -> Val {
        Val::Text((*self).to_owned())
    }
}

impl Param for String {
    fn val(&self) -> Val {
        Val::Text(self.clone())
    }
}

impl Param for Vec<u8> {
    fn val(&self) -> Val {
        Val::Bytes(self.clone())
    }
}

impl Param for Val {
    fn val(&self) -> Val {
        self.clone()
    }
}

/// A raw connection on a test vault's data, SQLite or PostgreSQL, for
/// tests that read or tamper with stored rows. Statements use SQLite's
/// numbered parameters `?1`, `?2`, ... (rewritten to `$1`, ... for
/// PostgreSQL); keep their SQL to what both dialects accept.
pub enum Raw {
    Sqlite(rusqlite::Connection),
    Postgres {
        rt: tokio::runtime::Runtime,
        client: tokio_postgres::Client,
    },
}

impl Raw {
    pub fn open(url: &str) -> Raw {
        if let Some(path) = url.strip_prefix("sqlite://") {
            return Raw::Sqlite(rusqlite::Connection::open(path).unwrap());
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
            tokio::spawn(conn);
            client
        });
        Raw::Postgres { rt, client }
    }

    /// Lets this connection break referential integrity (SQLite's
    /// `PRAGMA foreign_keys = OFF`; on PostgreSQL, which checks foreign keys
    /// with triggers, `session_replication_role = replica`, which also stops
    /// other triggers for this connection's changes).
    pub fn disable_foreign_keys(&self) {
        match self {
            Raw::Sqlite(c) => c.pragma_update(None, "foreign_keys", "OFF").unwrap(),
            Raw::Postgres { .. } => self.batch("SET session_replication_role = replica"),
        }
    }

    /// Runs one or more statements without parameters.
    pub fn batch(&self, sql: &str) {
        match self {
            Raw::Sqlite(c) => c
                .execute_batch(sql)
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
            Raw::Postgres { rt, client } => rt
                .block_on(client.batch_execute(sql))
                .unwrap_or_else(|e| panic!("{sql}: {e}")),
        }
    }

    /// Runs one statement; returns the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn Param]) -> u64 {
        let vals: Vec<Val> = params.iter().map(|p| p.val()).collect();
        match self {
            Raw::Sqlite(c) => {
                let vals: Vec<rusqlite::types::Value> = vals.into_iter().map(to_sqlite).collect();
                c.execute(sql, rusqlite::params_from_iter(vals))
                    .unwrap_or_else(|e| panic!("{sql}: {e}")) as u64
            }
            Raw::Postgres { rt, client } => rt.block_on(async {
                let sql = pg_sql(sql);
                let stmt = client
                    .prepare(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                let params = pg_params(&vals, stmt.params());
                client
                    .execute(&stmt, &pg_refs(&params))
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }),
        }
    }

    /// The rows of a query.
    pub fn query(&self, sql: &str, params: &[&dyn Param]) -> Vec<Vec<Val>> {
        let vals: Vec<Val> = params.iter().map(|p| p.val()).collect();
        match self {
            Raw::Sqlite(c) => {
                let vals: Vec<rusqlite::types::Value> = vals.into_iter().map(to_sqlite).collect();
                let mut stmt = c.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                let n = stmt.column_count();
                stmt.query_map(rusqlite::params_from_iter(vals), |r| {
                    (0..n)
                        .map(|i| r.get_ref(i).map(from_sqlite))
                        .collect::<rusqlite::Result<Vec<Val>>>()
                })
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
                .collect::<rusqlite::Result<_>>()
                .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            Raw::Postgres { rt, client } => rt.block_on(async {
                let sql = pg_sql(sql);
                let stmt = client
                    .prepare(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                let params = pg_params(&vals, stmt.params());
                let rows = client
                    .query(&stmt, &pg_refs(&params))
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                rows.iter().map(from_pg_row).collect()
            }),
        }
    }

    /// The one row of a query.
    pub fn query_row(&self, sql: &str, params: &[&dyn Param]) -> Vec<Val> {
        let mut rows = self.query(sql, params);
        assert_eq!(rows.len(), 1, "{sql}: expected one row, got {rows:?}");
        rows.remove(0)
    }

    /// The one value of a query returning one row of one column.
    pub fn query_one(&self, sql: &str, params: &[&dyn Param]) -> Val {
        let mut row = self.query_row(sql, params);
        assert_eq!(row.len(), 1, "{sql}: expected one column, got {row:?}");
        row.remove(0)
    }

    pub fn query_i64(&self, sql: &str, params: &[&dyn Param]) -> i64 {
        self.query_one(sql, params).int()
    }

    pub fn query_text(&self, sql: &str, params: &[&dyn Param]) -> String {
        self.query_one(sql, params).text()
    }

    pub fn query_bytes(&self, sql: &str, params: &[&dyn Param]) -> Vec<u8> {
        self.query_one(sql, params).bytes()
    }

    /// The names of the vault's tables.
    pub fn tables(&self) -> Vec<String> {
        let sql = match self {
            Raw::Sqlite(_) => {
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            }
            Raw::Postgres { .. } => {
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'"
            }
        };
        self.query(sql, &[])
            .into_iter()
            .map(|r| r[0].text())
            .collect()
    }

    /// Every value of every row of every table, its bytes as stored,
    /// concatenated: the logical content of the database, for tests that
    /// check what is (not) stored whatever the backend's files look like.
    pub fn all_stored_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for t in self.tables() {
            for row in self.query(&format!("SELECT * FROM \"{t}\""), &[]) {
                for v in row {
                    all.extend(v.stored_bytes());
                    all.push(0);
                }
            }
        }
        all
    }
}

fn to_sqlite(v: Val) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match v {
        Val::Null => Value::Null,
        Val::Int(i) => Value::Integer(i),
        Val::Real(f) => Value::Real(f),
        Val::Text(s) => Value::Text(s),
        Val::Bytes(b) => Value::Blob(b),
    }
}

fn from_sqlite(v: rusqlite::types::ValueRef<'_>) -> Val {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Val::Null,
        ValueRef::Integer(i) => Val::Int(i),
        ValueRef::Real(f) => Val::Real(f),
        ValueRef::Text(t) => Val::Text(String::from_utf8(t.to_vec()).unwrap()),
        ValueRef::Blob(b) => Val::Bytes(b.to_vec()),
    }
}

/// SQLite's `?N` parameters as PostgreSQL's `$N`.
fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    out
}

type PgParam = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;

/// The values as the Rust types the statement's parameter types take.
fn pg_params(vals: &[Val], types: &[tokio_postgres::types::Type]) -> Vec<PgParam> {
    use tokio_postgres::types::Type;
    assert_eq!(vals.len(), types.len(), "parameter count");
    vals.iter()
        .zip(types)
        .map(|(v, ty)| -> PgParam {
            match (v, ty) {
                (Val::Null, t) if *t == Type::BYTEA => Box::new(None::<Vec<u8>>),
                (Val::Null, t) if *t == Type::TEXT => Box::new(None::<String>),
                (Val::Null, _) => Box::new(None::<i64>),
                (Val::Int(i), t) if *t == Type::INT2 => Box::new(i16::try_from(*i).unwrap()),
                (Val::Int(i), t) if *t == Type::INT4 => Box::new(i32::try_from(*i).unwrap()),
                (Val::Int(i), t) if *t == Type::INT8 => Box::new(*i),
                (Val::Int(i), t) if *t == Type::BOOL => Box::new(*i != 0),
                (Val::Int(i), t) if *t == Type::FLOAT8 => Box::new(*i as f64),
                (Val::Int(i), t) if *t == Type::TEXT => Box::new(i.to_string()),
                (Val::Real(f), _) => Box::new(*f),
                (Val::Text(s), _) => Box::new(s.clone()),
                (Val::Bytes(b), _) => Box::new(b.clone()),
                (v, t) => panic!("no PostgreSQL parameter of type {t} for {v:?}"),
            }
        })
        .collect()
}

fn pg_refs(params: &[PgParam]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

fn from_pg_row(row: &tokio_postgres::Row) -> Vec<Val> {
    use tokio_postgres::types::Type;
    fn get<'a, T: tokio_postgres::types::FromSql<'a>>(
        row: &'a tokio_postgres::Row,
        i: usize,
        f: impl FnOnce(T) -> Val,
    ) -> Val {
        row.get::<_, Option<T>>(i).map_or(Val::Null, f)
    }
    (0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_();
            if *ty == Type::INT2 {
                get(row, i, |v: i16| Val::Int(v.into()))
            } else if *ty == Type::INT4 {
                get(row, i, |v: i32| Val::Int(v.into()))
            } else if *ty == Type::INT8 {
                get(row, i, Val::Int)
            } else if *ty == Type::BOOL {
                get(row, i, |v: bool| Val::Int(v.into()))
            } else if *ty == Type::FLOAT8 {
                get(row, i, Val::Real)
            } else if *ty == Type::FLOAT4 {
                get(row, i, |v: f32| Val::Real(v.into()))
            } else if *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::NAME {
                get(row, i, Val::Text)
            } else if *ty == Type::BYTEA {
                get(row, i, Val::Bytes)
            } else {
                panic!("column {i}: no test mapping for PostgreSQL type {ty}")
            }
        })
        .collect()
}
