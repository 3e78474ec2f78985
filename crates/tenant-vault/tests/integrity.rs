//! Stored data is bound to where it lives: editing the SQLite file directly
//! (a byte of a ciphertext, a nonce or an associated field, or a ciphertext
//! copied to another row or tenant) makes reads fail with an integrity error,
//! never with wrong data. Deleting a scope crypto-shreds it.

mod common;

use common::*;
use proptest::prelude::*;
use rusqlite::params;
use tenant_vault::{Error, ScopeKind, Secret};

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
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

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
        raw.pragma_update(None, "foreign_keys", "OFF").unwrap();
        let scope_id: String = raw.query_row("SELECT id FROM scopes", [], |r| r.get(0)).unwrap();
        match field {
            Field::Ciphertext | Field::Nonce => {
                let col = if matches!(field, Field::Ciphertext) { "ciphertext" } else { "nonce" };
                let mut b: Vec<u8> = raw.query_row(&format!("SELECT {col} FROM versions"), [], |r| r.get(0)).unwrap();
                flip(&mut b, at, delta);
                raw.execute(&format!("UPDATE versions SET {col} = ?1"), [b]).unwrap();
                assert_integrity(tv.vault.get(&p));
            }
            Field::Version => {
                let mut b = 1u64.to_be_bytes();
                flip(&mut b, at, delta);
                let v = u64::from_be_bytes(b);
                prop_assume!(v <= i64::MAX as u64);
                raw.execute("UPDATE versions SET version = ?1", [v as i64]).unwrap();
                raw.execute("UPDATE secrets SET current_version = ?1", [v as i64]).unwrap();
                assert_integrity(tv.vault.get(&p));
                assert_integrity(tv.vault.get_version(&p, v));
            }
            Field::KeyVersion => {
                let mut b = 1u32.to_be_bytes();
                flip(&mut b, at, delta);
                raw.execute("UPDATE versions SET key_version = ?1", [u32::from_be_bytes(b)]).unwrap();
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
                raw.execute("UPDATE secrets SET name = ?1", [&new]).unwrap();
                raw.execute("UPDATE versions SET name = ?1", [&new]).unwrap();
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
                raw.execute("UPDATE scopes SET slug = ?1", [&new]).unwrap();
                assert_integrity(tv.vault.get(&moved.unwrap()));
            }
            Field::ScopeId => {
                let mut b = scope_id.clone().into_bytes();
                flip(&mut b, at, delta);
                let new = String::from_utf8(b);
                prop_assume!(new.is_ok());
                let new = new.unwrap();
                for t in ["scopes SET id", "data_keys SET scope_id", "secrets SET scope_id", "versions SET scope_id"] {
                    raw.execute(&format!("UPDATE {t} = ?1"), [&new]).unwrap();
                }
                assert_integrity(tv.vault.get(&p));
            }
        }
    }
}

fn copy_sealed(raw: &rusqlite::Connection, from: (&str, &str, u64), to: (&str, &str, u64)) {
    let id = |slug: &str| -> String {
        raw.query_row("SELECT id FROM scopes WHERE slug = ?1", [slug], |r| {
            r.get(0)
        })
        .unwrap()
    };
    let (kv, nonce, ct): (u32, Vec<u8>, Vec<u8>) = raw
        .query_row(
            "SELECT key_version, nonce, ciphertext FROM versions WHERE scope_id = ?1 AND name = ?2 AND version = ?3",
            params![id(from.0), from.1, from.2],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let n = raw
        .execute(
            "UPDATE versions SET key_version = ?4, nonce = ?5, ciphertext = ?6
             WHERE scope_id = ?1 AND name = ?2 AND version = ?3",
            params![id(to.0), to.1, to.2, kv, nonce, ct],
        )
        .unwrap();
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
        [],
    )
    .unwrap();
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
    let raw = tv.raw();
    let mut blobs: Vec<Vec<u8>> = raw
        .prepare("SELECT v.ciphertext FROM versions v JOIN scopes s ON s.id = v.scope_id WHERE s.slug = 'acme'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let wrapped_key: Vec<u8> = raw
        .query_row(
            "SELECT d.wrapped FROM data_keys d JOIN scopes s ON s.id = d.scope_id WHERE s.slug = 'acme'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let old_id: String = raw
        .query_row("SELECT id FROM scopes WHERE slug = 'acme'", [], |r| {
            r.get(0)
        })
        .unwrap();
    drop(raw);
    blobs.push(wrapped_key);
    assert_eq!(blobs.len(), 21);
    let before = storage_bytes(&tv.db_path());
    assert!(
        blobs.iter().all(|b| contains(&before, &b[..16])),
        "the search must find what is there"
    );

    tv.vault.delete_scope(&slug("acme")).unwrap();

    let after = storage_bytes(&tv.db_path());
    for b in &blobs {
        for window in [
            &b[..16],
            &b[b.len() / 2 - 8..b.len() / 2 + 8],
            &b[b.len() - 16..],
        ] {
            assert!(
                !contains(&after, window),
                "a ciphertext or wrapped key of the deleted tenant is still on disk"
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
    let ct: Vec<u8> = tv
        .raw()
        .query_row(
            "SELECT ciphertext FROM versions WHERE version = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tv.vault.destroy(&p, &[1]).unwrap(), vec![1]);
    let after = storage_bytes(&tv.db_path());
    assert!(!contains(&after, &ct[..16]) && !contains(&after, &ct[ct.len() - 16..]));
    assert!(matches!(
        tv.vault.get_version(&p, 1),
        Err(Error::VersionDestroyed { version: 1, .. })
    ));
    assert_eq!(tv.vault.get(&p).unwrap().version, 2);
}
