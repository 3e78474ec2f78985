//! A vault whose SQLite file was damaged on disk (issue 9): a ciphertext's
//! bytes overwritten, a page's structure broken, the header overwritten, the
//! file truncated. Each time the damaged item is named by a typed error
//! (`Error::Integrity`), the secrets elsewhere in the file still read back
//! unchanged, nothing wrong is ever returned, and `secret-mcp get` exits with
//! the integrity code (7) without printing any value. A truncated file no
//! longer opens (the error says how much of it is missing);
//! `secret-mcp migrate --salvage` copies every other secret out of it into a
//! new store and names the version that was cut off.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tenant_vault::{
    Error, ScopeKind, Secret, SecretPath, Slug, SqliteStore, Store, Unlock, Vault, VaultOptions,
    create_key_file,
};
use tenant_vault_tests::bin;

/// Secrets of the fixture vault: (path, values of versions 1, 2, ...).
/// Every value is distinct and long enough never to occur by chance in an
/// error message or in the database file.
fn fixture_values() -> Vec<(&'static str, Vec<String>)> {
    let v = |tag: &str| format!("value-{tag}-7f3a9c21d5e84b06a1c2d3e4f5a6b7c8");
    vec![
        ("tenant/acme/api-key", vec![v("acme-api-key")]),
        (
            "tenant/acme/db/password",
            vec![v("acme-db-password-v1"), v("acme-db-password-v2")],
        ),
        ("tenant/acme/slack-token", vec![v("acme-slack")]),
        ("tenant/globex/db/password", vec![v("globex-db-password")]),
    ]
}

/// The large secret, written last: its ciphertext spans overflow pages.
const BIG: &str = "tenant/acme/certificate";

fn big_value() -> Vec<u8> {
    // Not compressible, not repetitive: a byte pattern of a simple LCG.
    let mut x: u32 = 0x1234_5678;
    (0..60 * 1024)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            b'a' + (x >> 24) as u8 % 26
        })
        .collect()
}

struct Damaged {
    _dir: tempfile::TempDir,
    data: PathBuf,
    key: PathBuf,
}

impl Damaged {
    /// A vault with the fixture secrets and [`BIG`], closed, its write-ahead
    /// log checkpointed into the database file.
    fn new() -> Damaged {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let key = dir.path().join("vault.key");
        create_key_file(&key).unwrap();
        {
            let vault = Vault::init(
                SqliteStore::open(data.join("vault.db")).unwrap(),
                &Unlock::KeyFile(key.clone()),
                VaultOptions::default(),
            )
            .unwrap();
            for t in ["acme", "globex"] {
                vault
                    .create_scope(&Slug::parse(t).unwrap(), ScopeKind::Enterprise)
                    .unwrap();
            }
            for (path, versions) in fixture_values() {
                for v in versions {
                    vault
                        .put(&SecretPath::parse(path).unwrap(), &Secret::from(v), None)
                        .unwrap();
                }
            }
            vault
                .put(
                    &SecretPath::parse(BIG).unwrap(),
                    &Secret::from(big_value()),
                    None,
                )
                .unwrap();
            vault.flush_audit().unwrap();
        }
        let d = Damaged {
            _dir: dir,
            data,
            key,
        };
        let c = rusqlite::Connection::open(d.db()).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .unwrap();
        drop(c);
        let wal = d.db().with_extension("db-wal");
        assert!(
            !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
            "everything is in the database file"
        );
        d
    }

    fn db(&self) -> PathBuf {
        self.data.join("vault.db")
    }

    /// A version's ciphertext, read with plain SQL.
    fn ciphertext(&self, path: &str, version: u64) -> Vec<u8> {
        let p = SecretPath::parse(path).unwrap();
        rusqlite::Connection::open(self.db())
            .unwrap()
            .query_row(
                "SELECT v.ciphertext FROM versions v JOIN scopes s ON s.id = v.scope_id
                 WHERE s.slug = ?1 AND v.name = ?2 AND v.version = ?3",
                rusqlite::params![p.slug().as_str(), p.name().as_str(), version],
                |r| r.get(0),
            )
            .unwrap()
    }

    /// Where `needle` is in the database file (it must be there once).
    fn offset_of(&self, needle: &[u8]) -> usize {
        let bytes = std::fs::read(self.db()).unwrap();
        let found: Vec<usize> = bytes
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(found.len(), 1, "the bytes are in the file exactly once");
        found[0]
    }

    /// Overwrites bytes of the database file in place.
    fn overwrite(&self, at: usize, with: &[u8]) {
        let mut bytes = std::fs::read(self.db()).unwrap();
        bytes[at..at + with.len()].copy_from_slice(with);
        std::fs::write(self.db(), bytes).unwrap();
    }

    fn open(&self) -> Result<Vault, Error> {
        Vault::open(
            SqliteStore::open(self.db())?,
            &Unlock::KeyFile(self.key.clone()),
            VaultOptions::default(),
        )
    }

    /// `secret-mcp --data-dir D --key-file K ARGS`.
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("secret-mcp", "secret-mcp"))
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--key-file")
            .arg(&self.key)
            .args(args)
            .env_remove("SECRET_MCP_ADDR")
            .env_remove("SECRET_MCP_TOKEN")
            .output()
            .unwrap()
    }
}

/// No secret value, nor a piece of the large one, in `text`.
fn assert_no_value(what: &str, text: &[u8]) {
    let text = String::from_utf8_lossy(text);
    for (path, versions) in fixture_values() {
        for v in versions {
            assert!(!text.contains(&v), "{what}: a value of {path} leaked");
        }
    }
    let big = big_value();
    assert!(
        !text.contains(std::str::from_utf8(&big[..32]).unwrap()),
        "{what}: the large value leaked"
    );
}

/// Every fixture secret but those in `except` reads back exactly.
fn assert_others_intact(vault: &Vault, except: &[(&str, u64)]) {
    for (path, versions) in fixture_values() {
        let p = SecretPath::parse(path).unwrap();
        for (i, want) in versions.iter().enumerate() {
            let n = i as u64 + 1;
            if except.contains(&(path, n)) {
                continue;
            }
            let got = vault
                .get_version(&p, n)
                .unwrap_or_else(|e| panic!("{path} version {n} is not readable: {e}"));
            assert!(
                got.value.expose() == want.as_bytes(),
                "{path} version {n} reads back unchanged"
            );
        }
    }
}

/// `secret-mcp get` on a damaged item: exit 7, the item named on stderr,
/// nothing on stdout, no value anywhere.
fn assert_cli_integrity(d: &Damaged, args: &[&str], names: &[&str]) {
    let out = d.cli(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: nothing printed on stdout");
    for n in names {
        assert!(stderr.contains(n), "{args:?}: stderr names {n}: {stderr}");
    }
    assert_no_value("stderr", &out.stderr);
}

/// `secret-mcp get PATH` of an intact secret prints its value, byte for byte.
fn assert_cli_reads(d: &Damaged, path: &str, want: &[u8]) {
    let out = d.cli(&["get", path]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == want,
        "{path}: the CLI prints the value unchanged"
    );
}

fn integrity_message(r: Result<impl Sized, Error>) -> String {
    match r {
        Err(e @ Error::Integrity(_)) => e.to_string(),
        Err(e) => panic!("expected an integrity error, got: {e}"),
        Ok(_) => panic!("expected an integrity error, got a value"),
    }
}

#[test]
fn overwritten_ciphertext_bytes_fail_authentication_naming_path_and_version() {
    let d = Damaged::new();
    let ct = d.ciphertext("tenant/acme/db/password", 1);
    let at = d.offset_of(&ct);
    // Flip bytes in the middle of the ciphertext, on disk.
    let mid = at + ct.len() / 2;
    let flipped: Vec<u8> = ct[ct.len() / 2..ct.len() / 2 + 4]
        .iter()
        .map(|b| b ^ 0xff)
        .collect();
    d.overwrite(mid, &flipped);

    let vault = d.open().expect("the vault still opens");
    let p = SecretPath::parse("tenant/acme/db/password").unwrap();
    let msg = integrity_message(vault.get_version(&p, 1));
    assert!(
        msg.contains("`tenant/acme/db/password` version 1"),
        "the error names the path and the version: {msg}"
    );
    assert_no_value("the error", msg.as_bytes());
    // The same secret's other version, and every other secret, are intact.
    assert_others_intact(&vault, &[("tenant/acme/db/password", 1)]);
    assert!(
        vault
            .get(&SecretPath::parse(BIG).unwrap())
            .unwrap()
            .value
            .expose()
            == big_value()
    );
    drop(vault);

    assert_cli_integrity(
        &d,
        &["get", "tenant/acme/db/password", "--version", "1"],
        &["tenant/acme/db/password", "version 1"],
    );
    assert_cli_reads(
        &d,
        "tenant/acme/db/password",
        fixture_values()[1].1[1].as_bytes(),
    );
    assert_cli_reads(
        &d,
        "tenant/globex/db/password",
        fixture_values()[3].1[0].as_bytes(),
    );
}

#[test]
fn a_broken_overflow_page_is_an_integrity_error_naming_the_secret() {
    let d = Damaged::new();
    let ct = d.ciphertext(BIG, 1);
    let page_size: usize = rusqlite::Connection::open(d.db())
        .unwrap()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    // A page in the middle of the large ciphertext's overflow chain: its
    // first 4 bytes point to the next page. Point them past the end of the
    // file, which breaks the chain (the b-tree, not the ciphertext).
    let chunk = &ct[ct.len() / 2..ct.len() / 2 + 64];
    let page_start = d.offset_of(chunk) / page_size * page_size;
    d.overwrite(page_start, &0x7fff_fff0_u32.to_be_bytes());

    let vault = d.open().expect("the vault still opens");
    let msg = integrity_message(vault.get(&SecretPath::parse(BIG).unwrap()));
    assert!(msg.contains(&format!("`{BIG}`")), "names the secret: {msg}");
    assert_no_value("the error", msg.as_bytes());
    assert_others_intact(&vault, &[]);
    drop(vault);

    assert_cli_integrity(&d, &["get", BIG], &[BIG]);
    assert_cli_reads(
        &d,
        "tenant/acme/api-key",
        fixture_values()[0].1[0].as_bytes(),
    );
}

#[test]
fn a_truncated_file_is_refused_by_name_and_salvage_keeps_every_other_secret() {
    let d = Damaged::new();
    let ct = d.ciphertext(BIG, 1);
    let page_size: usize = rusqlite::Connection::open(d.db())
        .unwrap()
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .unwrap();
    // Cut the file in the middle of the large secret's ciphertext, which
    // was written last: the pages after the cut are gone.
    let chunk = &ct[ct.len() / 2..ct.len() / 2 + 64];
    let cut = d.offset_of(chunk) / page_size * page_size;
    let len = std::fs::metadata(d.db()).unwrap().len();
    assert!((cut as u64) < len);
    std::fs::OpenOptions::new()
        .write(true)
        .open(d.db())
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    let damaged_bytes = std::fs::read(d.db()).unwrap();

    // Opening refuses the file: truncated, by how much, and what to do.
    let msg = integrity_message(d.open());
    let pages = format!(
        "holds {} of the {} pages",
        cut / page_size,
        len as usize / page_size
    );
    for want in [
        &d.db().display().to_string(),
        "truncated",
        &pages,
        "--salvage",
    ] {
        assert!(msg.contains(want), "the error says {want:?}: {msg}");
    }
    assert_cli_integrity(&d, &["get", BIG], &["vault.db", "truncated", "--salvage"]);

    // With the wrong key file, salvage writes nothing (checked against the
    // salvaged root key record before the target is created).
    let copy = d.data.join("salvaged.db");
    let wrong = d.data.join("wrong.key");
    create_key_file(&wrong).unwrap();
    let out = Command::new(bin("secret-mcp", "secret-mcp"))
        .arg("--data-dir")
        .arg(&d.data)
        .arg("--key-file")
        .arg(&wrong)
        .args(["migrate", "--salvage", "--from"])
        .arg(format!("sqlite://{}", d.db().display()))
        .arg("--to")
        .arg(format!("sqlite://{}", copy.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("wrong key file"), "{stderr}");
    assert!(!copy.exists(), "nothing was written");

    // Salvage into a new file: exit 7 (something was lost), the lost
    // version named, no value printed anywhere.
    let out = d.cli(&[
        "migrate",
        "--salvage",
        "--from",
        &format!("sqlite://{}", d.db().display()),
        "--to",
        &format!("sqlite://{}", copy.display()),
    ]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(7), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("version 1 of `{BIG}`")),
        "the lost version is named: {stdout}\n{stderr}"
    );
    assert!(stderr.contains("could not be salvaged"), "{stderr}");
    assert_no_value("salvage stdout", &out.stdout);
    assert_no_value("salvage stderr", &out.stderr);
    assert!(
        std::fs::read(d.db()).unwrap() == damaged_bytes,
        "the damaged file is only read"
    );

    // The copy: every other secret reads back unchanged; the lost version
    // is destroyed (its value is gone, nothing else is returned); the
    // audit chain verifies and records the loss.
    let vault = Vault::open(
        SqliteStore::open(&copy).unwrap(),
        &Unlock::KeyFile(d.key.clone()),
        VaultOptions::default(),
    )
    .unwrap();
    assert_others_intact(&vault, &[]);
    let big = SecretPath::parse(BIG).unwrap();
    match vault.get(&big) {
        Err(e @ Error::VersionDestroyed { .. }) => {
            assert!(e.to_string().contains(BIG), "names the secret: {e}")
        }
        other => panic!(
            "the lost version reads as destroyed: {:?}",
            other.map(|_| ())
        ),
    }
    vault
        .verify_audit()
        .unwrap()
        .expect("the copy's chain verifies");
    drop(vault);
    let records = SqliteStore::open(&copy)
        .unwrap()
        .audit_records(0, 100_000)
        .unwrap();
    assert!(
        records.iter().any(|r| r.entry.operation == "salvage"
            && r.entry.path == BIG
            && r.entry.version == Some(1)
            && r.entry.outcome == "lost"),
        "the loss is in the copy's audit trail"
    );
    let out = d.cli(&[
        "--storage",
        &format!("sqlite://{}", copy.display()),
        "get",
        "tenant/globex/db/password",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout == fixture_values()[3].1[0].as_bytes());
}

#[test]
fn an_overwritten_header_is_an_integrity_error_naming_the_file() {
    for (what, at, bytes) in [
        ("magic string", 0usize, &b"Not a database!\0"[..]),
        ("page size", 16, &[0x00, 0x03][..]),
    ] {
        let d = Damaged::new();
        d.overwrite(at, bytes);
        let msg = integrity_message(d.open());
        let file = d.db();
        assert!(
            msg.contains(&file.display().to_string()),
            "{what}: the error names the database file: {msg}"
        );
        assert_cli_integrity(
            &d,
            &["get", "tenant/acme/api-key"],
            &[&file.display().to_string()],
        );
        assert_unchanged_on_disk(&file, at, bytes);
    }
}

/// Opening a damaged file does not "repair" it by writing over it.
fn assert_unchanged_on_disk(file: &Path, at: usize, bytes: &[u8]) {
    let now = std::fs::read(file).unwrap();
    assert!(
        now[at..at + bytes.len()] == *bytes,
        "the damaged bytes are left as found"
    );
}
