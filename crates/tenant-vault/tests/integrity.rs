//! Stored data is bound to where it lives: editing the stored rows directly
//! (a byte of a ciphertext, a nonce or an associated field, or a ciphertext
//! copied to another row or tenant) makes reads fail with an integrity error,
//! never with wrong data. Deleting a scope crypto-shreds it.

mod common;

use common::*;
use proptest::prelude::*;
use tenant_vault::{Error, Role, ScopeKind, Secret, TokenSpec};

fn assert_integrity<T: std::fmt::Debug>(r: Result<T, Error>) {
    match r {
        Err(Error::Integrity(_)) => {}
        other => panic!("expected an integrity error, got {other:?}"),
    }
}

#[derive(Debug, Clone, Copy)]
enum Field {
    Ciphertext,
    Nonce,
    Version,
    KeyVersion,
    Name,
    Slug,
    ScopeId,
}

fn flip(bytes: &mut [u8], at: usize, delta: u8) {
    let i = at % bytes.len();
    bytes[i] ^= delta;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(96), ..ProptestConfig::default() })]

    /// Any single-byte change to a stored ciphertext, nonce or associated
    /// field makes reading fail with an integrity error.
    #[test]
    fn any_single_byte_change_is_an_integrity_error(
        field in prop_oneof![
            Just(Field::Ciphertext), Just(Field::Nonce), Just(Field::Version),
            Just(Field::KeyVersion), Just(Field::Name), Just(Field::Slug), Just(Field::ScopeId),
        ],
        at in any::<usize>(),
        delta in 1u8..=255,
        value in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let tv = vault_with_tenants(options(), &["acme"]);
        let p = path("tenant/acme/db/password");
        tv.vault.put(&p, &Secret::new(value), None).unwrap();
        let raw = tv.raw();
        raw.disable_foreign_keys();
        let scope_id = raw.query_text("SELECT id FROM scopes", &[]);
        match field {
            Field::Ciphertext | Field::Nonce => {
                let col = if matches!(field, Field::Ciphertext) { "ciphertext" } else { "nonce" };
                let mut b = raw.query_bytes(&format!("SELECT {col} FROM versions"), &[]);
                flip(&mut b, at, delta);
                raw.execute(&format!("UPDATE versions SET {col} = ?1"), &[&b]);
                assert_integrity(tv.vault.get(&p));
            }
            Field::Version => {
                let mut b = 1u64.to_be_bytes();
                flip(&mut b, at, delta);
                let v = u64::from_be_bytes(b);
                prop_assume!(v <= i64::MAX as u64);
                raw.execute("UPDATE versions SET version = ?1", &[&v]);
                raw.execute("UPDATE secrets SET current_version = ?1", &[&v]);
                assert_integrity(tv.vault.get(&p));
                assert_integrity(tv.vault.get_version(&p, v));
            }
            Field::KeyVersion => {
                let mut b = 1u32.to_be_bytes();
                flip(&mut b, at, delta);
                raw.execute("UPDATE versions SET key_version = ?1", &[&u32::from_be_bytes(b)]);
                assert_integrity(tv.vault.get(&p));
            }
            Field::Name => {
                let mut b = b"db/password".to_vec();
                flip(&mut b, at, delta);
                let new = String::from_utf8(b);
                prop_assume!(new.is_ok());
                let new = new.unwrap();
                let moved = tenant_vault::SecretPath::parse(&format!("tenant/acme/{new}"));
                prop_assume!(moved.is_ok());
                raw.execute("UPDATE secrets SET name = ?1", &[&new]);
                raw.execute("UPDATE versions SET name = ?1", &[&new]);
                assert_integrity(tv.vault.get(&moved.unwrap()));
            }
            Field::Slug => {
                let mut b = b"acme".to_vec();
                flip(&mut b, at, delta);
                let new = String::from_utf8(b);
                prop_assume!(new.is_ok());
                let new = new.unwrap();
                // A changed byte may make another valid slug, or a `/` that
                // splits it; only the former moves the secret to a new tenant.
                prop_assume!(tenant_vault::Slug::parse(&new).is_ok());
                let moved = tenant_vault::SecretPath::parse(&format!("tenant/{new}/db/password"));
                prop_assume!(moved.is_ok());
                raw.execute("UPDATE scopes SET slug = ?1", &[&new]);
                assert_integrity(tv.vault.get(&moved.unwrap()));
            }
            Field::ScopeId => {
                let mut b = scope_id.clone().into_bytes();
                flip(&mut b, at, delta);
                let new = String::from_utf8(b);
                prop_assume!(new.is_ok());
                let new = new.unwrap();
                // PostgreSQL text cannot hold a NUL character.
                prop_assume!(sqlite() || !new.contains('\0'));
                for t in ["scopes SET id", "data_keys SET scope_id", "secrets SET scope_id", "versions SET scope_id"] {
                    raw.execute(&format!("UPDATE {t} = ?1"), &[&new]);
                }
                assert_integrity(tv.vault.get(&p));
            }
        }
    }
}

fn copy_sealed(raw: &Raw, from: (&str, &str, u64), to: (&str, &str, u64)) {
    let id = |slug: &str| raw.query_text("SELECT id FROM scopes WHERE slug = ?1", &[&slug]);
    let sealed = raw.query_row(
        "SELECT key_version, nonce, ciphertext FROM versions WHERE scope_id = ?1 AND name = ?2 AND version = ?3",
        &[&id(from.0), &from.1, &from.2],
    );
    let n = raw.execute(
        "UPDATE versions SET key_version = ?4, nonce = ?5, ciphertext = ?6
         WHERE scope_id = ?1 AND name = ?2 AND version = ?3",
        &[&id(to.0), &to.1, &to.2, &sealed[0], &sealed[1], &sealed[2]],
    );
    assert_eq!(n, 1);
}

#[test]
fn a_ciphertext_copied_to_another_row_or_tenant_fails_to_open() {
    let tv = vault_with_tenants(options(), &["acme", "globex"]);
    for p in ["tenant/acme/x", "tenant/acme/y", "tenant/globex/x"] {
        tv.vault
            .put(&path(p), &Secret::from(format!("value of {p} v1")), None)
            .unwrap();
        tv.vault
            .put(&path(p), &Secret::from(format!("value of {p} v2")), None)
            .unwrap();
    }
    let raw = tv.raw();
    // Into another tenant, same name and version.
    copy_sealed(&raw, ("acme", "x", 2), ("globex", "x", 2));
    assert_integrity(tv.vault.get(&path("tenant/globex/x")));
    // Into another name of the same tenant.
    copy_sealed(&raw, ("acme", "x", 2), ("acme", "y", 2));
    assert_integrity(tv.vault.get(&path("tenant/acme/y")));
    // Into another version of the same secret.
    copy_sealed(&raw, ("acme", "x", 1), ("acme", "x", 2));
    assert_integrity(tv.vault.get(&path("tenant/acme/x")));
    // Untouched rows still read.
    assert_eq!(
        tv.vault
            .get_version(&path("tenant/acme/x"), 1)
            .unwrap()
            .value
            .expose(),
        b"value of tenant/acme/x v1"
    );
    assert_eq!(
        tv.vault
            .get_version(&path("tenant/globex/x"), 1)
            .unwrap()
            .value
            .expose(),
        b"value of tenant/globex/x v1"
    );
}

#[test]
fn a_wrapped_data_key_moved_to_another_tenant_fails_to_unwrap() {
    let tv = vault_with_tenants(options(), &["acme", "globex"]);
    tv.vault
        .put(&path("tenant/globex/x"), &Secret::from("g"), None)
        .unwrap();
    let tv = tv.reopen(options()); // empty key cache
    let raw = tv.raw();
    raw.execute(
        "UPDATE data_keys SET wrapped = (SELECT wrapped FROM data_keys d JOIN scopes s ON s.id = d.scope_id WHERE s.slug = 'acme')
         WHERE scope_id = (SELECT id FROM scopes WHERE slug = 'globex')",
        &[],
    );
    assert_integrity(tv.vault.get(&path("tenant/globex/x")));
}

#[test]
fn deleting_a_scope_crypto_shreds_it() {
    let tv = vault_with_tenants(options(), &["acme", "globex"]);
    let mut acme_values = Vec::new();
    for i in 0..20 {
        let v = format!("acme-plaintext-marker-{i:04}-{}", "q".repeat(200));
        tv.vault
            .put(
                &path(&format!("tenant/acme/s{i}")),
                &Secret::from(v.as_str()),
                None,
            )
            .unwrap();
        acme_values.push(v);
    }
    tv.vault
        .put(
            &path("tenant/globex/keep"),
            &Secret::from("globex value"),
            None,
        )
        .unwrap();
    tv.vault
        .root_session()
        .issue_token(&TokenSpec {
            tenant: Some(slug("acme")),
            role: Some(Role::User),
            ..Default::default()
        })
        .unwrap();
    let raw = tv.raw();
    let mut blobs: Vec<Vec<u8>> = raw
        .query("SELECT v.ciphertext FROM versions v JOIN scopes s ON s.id = v.scope_id WHERE s.slug = 'acme'", &[])
        .iter()
        .map(|r| r[0].bytes())
        .collect();
    let wrapped_key = raw.query_bytes(
        "SELECT d.wrapped FROM data_keys d JOIN scopes s ON s.id = d.scope_id WHERE s.slug = 'acme'",
        &[],
    );
    let old_id = raw.query_text("SELECT id FROM scopes WHERE slug = 'acme'", &[]);
    let token_hash = raw.query_bytes("SELECT hash FROM tokens WHERE scope_id = ?1", &[&old_id]);
    blobs.push(wrapped_key);
    blobs.push(token_hash);
    assert_eq!(blobs.len(), 22);
    let rows_of_scope = || -> Vec<i64> {
        [
            ("scopes", "id"),
            ("data_keys", "scope_id"),
            ("secrets", "scope_id"),
            ("versions", "scope_id"),
            ("tokens", "scope_id"),
        ]
        .iter()
        .map(|(table, col)| {
            raw.query_i64(
                &format!("SELECT count(*) FROM {table} WHERE {col} = ?1"),
                &[&old_id],
            )
        })
        .collect()
    };
    assert_eq!(rows_of_scope(), [1, 1, 20, 20, 1]);
    // What is stored: every value of every row (both backends), and on
    // SQLite every byte of its files too. PostgreSQL keeps deleted rows in
    // dead tuples and its write-ahead log until they are vacuumed and
    // recycled (see `PostgresStore::delete_scope`), so there the property
    // is that no row of the scope, its wrapped data key included, remains.
    let stored = || {
        let mut all = raw.all_stored_bytes();
        if sqlite() {
            all.extend(storage_bytes(&tv.db_path()));
        }
        all
    };
    let before = stored();
    assert!(
        blobs.iter().all(|b| contains(&before, &b[..16])),
        "the search must find what is there"
    );
    assert!(contains(&before, old_id.as_bytes()));

    tv.vault.delete_scope(&slug("acme")).unwrap();

    let after = stored();
    for b in &blobs {
        for window in [
            &b[..16],
            &b[b.len() / 2 - 8..b.len() / 2 + 8],
            &b[b.len() - 16..],
        ] {
            assert!(
                !contains(&after, window),
                "a ciphertext or wrapped key of the deleted tenant is still stored"
            );
        }
    }
    for v in &acme_values {
        assert!(!contains(&after, v.as_bytes()), "plaintext is never stored");
    }
    assert!(
        !contains(&after, old_id.as_bytes()),
        "even the old scope id is gone"
    );
    // No row of the scope remains: its wrapped data key, secrets, versions
    // and tokens are gone (the audit trail names tenants by slug).
    assert_eq!(rows_of_scope(), [0, 0, 0, 0, 0]);
    drop(raw);

    // The other tenant is untouched.
    assert_eq!(
        tv.vault
            .get(&path("tenant/globex/keep"))
            .unwrap()
            .value
            .expose(),
        b"globex value"
    );
    // A re-created slug reads nothing old.
    assert!(
        tv.vault
            .create_scope(&slug("acme"), ScopeKind::Freelance)
            .unwrap()
            .created
    );
    assert!(matches!(
        tv.vault.get(&path("tenant/acme/s0")),
        Err(Error::SecretNotFound(_))
    ));
    let listing = tv
        .vault
        .list(&tenant_vault::ListPrefix::tenant(slug("acme")), None, 100)
        .unwrap();
    assert!(listing.paths.is_empty());
    assert_eq!(tv.vault.scope_status(&slug("acme")).unwrap().secrets, 0);
    // Deleting it again reports the missing scope.
    tv.vault.delete_scope(&slug("acme")).unwrap();
    assert!(matches!(
        tv.vault.delete_scope(&slug("acme")),
        Err(Error::ScopeNotFound(_))
    ));
}

#[test]
fn destroy_wipes_the_ciphertext_from_disk() {
    let tv = vault_with_tenants(options(), &["acme"]);
    let p = path("tenant/acme/x");
    tv.vault
        .put(&p, &Secret::from("v1 ".repeat(50)), None)
        .unwrap();
    tv.vault
        .put(&p, &Secret::from("v2 ".repeat(50)), None)
        .unwrap();
    let ct = tv
        .raw()
        .query_bytes("SELECT ciphertext FROM versions WHERE version = 1", &[]);
    assert_eq!(tv.vault.destroy(&p, &[1]).unwrap(), vec![1]);
    // Every stored value, and on SQLite every byte of its files (PostgreSQL
    // keeps the old row version until it is vacuumed).
    let mut after = tv.raw().all_stored_bytes();
    if sqlite() {
        after.extend(storage_bytes(&tv.db_path()));
    }
    assert!(!contains(&after, &ct[..16]) && !contains(&after, &ct[ct.len() - 16..]));
    assert!(matches!(
        tv.vault.get_version(&p, 1),
        Err(Error::VersionDestroyed { version: 1, .. })
    ));
    assert_eq!(tv.vault.get(&p).unwrap().version, 2);
}
