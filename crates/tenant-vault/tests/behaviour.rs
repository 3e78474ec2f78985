//! Scopes, unlocking, check-and-set, versions, limits and key rotation.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use tenant_vault::{
    Error, ListPrefix, MetadataUpdate, ScopeKind, Secret, Unlock, Vault, create_key_file,
    open_store,
};

#[test]
fn create_scope_is_idempotent() {
    let tv = key_file_vault(options());
    let first = tv
        .vault
        .create_scope(&slug("acme"), ScopeKind::Enterprise)
        .unwrap();
    assert!(first.created);
    tv.vault
        .put(&path("tenant/acme/x"), &Secret::from("v"), None)
        .unwrap();
    let again = tv
        .vault
        .create_scope(&slug("acme"), ScopeKind::Freelance)
        .unwrap();
    assert!(!again.created, "second call reports `already exists`");
    assert_eq!(
        again.scope, first.scope,
        "and changes nothing (kind, creation time, key)"
    );
    assert_eq!(
        tv.vault.get(&path("tenant/acme/x")).unwrap().value.expose(),
        b"v"
    );
    assert_eq!(tv.vault.list_scopes().unwrap().len(), 1);
}

#[test]
fn scope_status_reports_usage() {
    let tv = vault_with_tenants(options(), &["acme", "globex"]);
    tv.vault
        .put(&path("tenant/acme/a"), &Secret::from("12345"), None)
        .unwrap();
    tv.vault
        .put(&path("tenant/acme/a"), &Secret::from("1234567890"), None)
        .unwrap();
    tv.vault
        .put(&path("tenant/acme/b"), &Secret::from(""), None)
        .unwrap();
    let st = tv.vault.scope_status(&slug("acme")).unwrap();
    assert_eq!(st.secrets, 2);
    // Each ciphertext is the value plus a 16-byte tag.
    assert_eq!(st.stored_bytes, (5 + 16) + (10 + 16) + 16);
    assert_eq!(st.scope.key_version, 1);
    assert_eq!(st.scope.kind, ScopeKind::Enterprise);
    assert_eq!(tv.vault.scope_status(&slug("globex")).unwrap().secrets, 0);
    assert!(matches!(
        tv.vault.scope_status(&slug("nope")),
        Err(Error::ScopeNotFound(_))
    ));
    let slugs: Vec<_> = tv
        .vault
        .list_scopes()
        .unwrap()
        .into_iter()
        .map(|s| s.slug.to_string())
        .collect();
    assert_eq!(slugs, ["acme", "globex"]);
}

fn root_row(url: &str) -> Vec<u8> {
    let row = Raw::open(url).query_row("SELECT wrapped, salt FROM root_key", &[]);
    [row[0].bytes(), row[1].bytes()].concat()
}

#[test]
fn wrong_passphrase_is_a_typed_error_and_changes_nothing() {
    let TestVault { dir, url, vault: v } =
        passphrase_vault("correct horse battery staple", options());
    v.create_scope(&slug("acme"), ScopeKind::Enterprise)
        .unwrap();
    v.put(&path("tenant/acme/x"), &Secret::from("value"), None)
        .unwrap();
    drop(v);
    let before = root_row(&url);
    let open = |pass: &str| {
        Vault::open(
            open_store(&url).unwrap(),
            &Unlock::Passphrase(Secret::from(pass)),
            options(),
        )
    };
    let err = open("correct horse battery stapler").unwrap_err();
    assert!(matches!(err, Error::WrongPassphrase), "{err}");
    assert_eq!(
        err.to_string(),
        "wrong passphrase: it does not unlock this vault"
    );
    // A key file is not what this vault takes.
    let kf = dir.path().join("k");
    create_key_file(&kf).unwrap();
    let err = Vault::open(open_store(&url).unwrap(), &Unlock::KeyFile(kf), options()).unwrap_err();
    assert!(matches!(err, Error::WrongUnlockMethod { .. }), "{err}");
    // change_passphrase with the wrong current passphrase changes nothing.
    let v = open("correct horse battery staple").unwrap();
    let err = v
        .change_passphrase(
            &Unlock::Passphrase(Secret::from("nope")),
            &Unlock::Passphrase(Secret::from("new")),
        )
        .unwrap_err();
    assert!(matches!(err, Error::WrongPassphrase));
    assert_eq!(root_row(&url), before, "the root record is unchanged");
    assert_eq!(
        v.get(&path("tenant/acme/x")).unwrap().value.expose(),
        b"value"
    );
}

#[test]
fn change_passphrase_and_rotate_root_key() {
    let TestVault { dir, url, vault: v } = passphrase_vault("first passphrase", options());
    v.create_scope(&slug("acme"), ScopeKind::Enterprise)
        .unwrap();
    v.create_scope(&slug("globex"), ScopeKind::Freelance)
        .unwrap();
    v.put(&path("tenant/acme/x"), &Secret::from("a"), None)
        .unwrap();
    v.put(&path("tenant/globex/x"), &Secret::from("g"), None)
        .unwrap();
    let first = Unlock::Passphrase(Secret::from("first passphrase"));
    let second = Unlock::Passphrase(Secret::from("second passphrase"));
    v.change_passphrase(&first, &second).unwrap();
    assert_eq!(v.rotate_root_key(&second).unwrap(), 2);
    assert!(matches!(
        v.rotate_root_key(&first),
        Err(Error::WrongPassphrase)
    ));
    drop(v);
    let err = Vault::open(open_store(&url).unwrap(), &first, options()).unwrap_err();
    assert!(matches!(err, Error::WrongPassphrase));
    let v = Vault::open(open_store(&url).unwrap(), &second, options()).unwrap();
    assert_eq!(v.get(&path("tenant/acme/x")).unwrap().value.expose(), b"a");
    assert_eq!(
        v.get(&path("tenant/globex/x")).unwrap().value.expose(),
        b"g"
    );
    // Switching to a key file works the same way.
    let kf = dir.path().join("k");
    create_key_file(&kf).unwrap();
    v.change_passphrase(&second, &Unlock::KeyFile(kf.clone()))
        .unwrap();
    drop(v);
    let v = Vault::open(open_store(&url).unwrap(), &Unlock::KeyFile(kf), options()).unwrap();
    assert_eq!(
        v.get(&path("tenant/globex/x")).unwrap().value.expose(),
        b"g"
    );
}

#[test]
fn wrong_key_file_is_a_typed_error() {
    let tv = vault_with_tenants(options(), &["acme"]);
    let other = tv.dir.path().join("other.key");
    create_key_file(&other).unwrap();
    let store = tv.store();
    let err = Vault::open(store, &Unlock::KeyFile(other.clone()), options()).unwrap_err();
    assert!(
        matches!(&err, Error::WrongKeyFile(p) if *p == other),
        "{err}"
    );
    let store = tv.store();
    let err = Vault::init(store, &Unlock::KeyFile(other), options()).unwrap_err();
    assert!(matches!(err, Error::AlreadyInitialized));
    let empty = tempfile::tempdir().unwrap();
    let store = open_store(&new_storage_url(empty.path(), "v.db")).unwrap();
    assert!(matches!(
        Vault::open(store, &Unlock::KeyFile(tv.key_file()), options()),
        Err(Error::NotInitialized)
    ));
}

#[test]
fn sealed_vault_refuses_everything_until_unsealed() {
    let tv = vault_with_tenants(options(), &["acme"]);
    let p = path("tenant/acme/x");
    tv.vault.put(&p, &Secret::from("v"), None).unwrap();
    tv.vault.seal();
    assert!(tv.vault.is_sealed());
    assert!(matches!(tv.vault.get(&p), Err(Error::Sealed)));
    assert!(matches!(
        tv.vault.put(&p, &Secret::from("w"), None),
        Err(Error::Sealed)
    ));
    assert!(matches!(tv.vault.list_scopes(), Err(Error::Sealed)));
    assert!(matches!(
        tv.vault.delete_scope(&slug("acme")),
        Err(Error::Sealed)
    ));
    let other = tv.dir.path().join("other.key");
    create_key_file(&other).unwrap();
    assert!(tv.vault.unseal(&Unlock::KeyFile(other)).is_err());
    assert!(tv.vault.is_sealed());
    tv.vault.unseal(&Unlock::KeyFile(tv.key_file())).unwrap();
    assert_eq!(tv.vault.get(&p).unwrap().value.expose(), b"v");
    let store = tv.store();
    let sealed = Vault::open_sealed(store, options()).unwrap();
    assert!(matches!(sealed.get(&p), Err(Error::Sealed)));
}

#[test]
fn check_and_set() {
    let tv = vault_with_tenants(options(), &["acme"]);
    let p = path("tenant/acme/x");
    let put = |cas| tv.vault.put(&p, &Secret::from("v"), cas);
    assert!(matches!(
        put(Some(3)),
        Err(Error::CasMismatch {
            expected: 3,
            current: 0,
            ..
        })
    ));
    assert_eq!(put(Some(0)).unwrap(), 1);
    assert!(matches!(
        put(Some(0)),
        Err(Error::CasMismatch {
            expected: 0,
            current: 1,
            ..
        })
    ));
    assert_eq!(put(Some(1)).unwrap(), 2);
    assert!(matches!(
        put(Some(1)),
        Err(Error::CasMismatch {
            expected: 1,
            current: 2,
            ..
        })
    ));
    assert_eq!(put(None).unwrap(), 3);
    // A deleted latest version still counts as current.
    tv.vault.delete(&p, &[]).unwrap();
    assert!(matches!(put(Some(0)), Err(Error::CasMismatch { .. })));
    assert_eq!(put(Some(3)).unwrap(), 4);
}

#[test]
fn concurrent_cas_writers_have_exactly_one_winner_per_version() {
    let tv = vault_with_tenants(options(), &["acme"]);
    let vault = Arc::new(tv.vault);
    let p = path("tenant/acme/hot");
    vault.put(&p, &Secret::from("v1"), Some(0)).unwrap();
    for expected in 1..=5u64 {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let vault = Arc::clone(&vault);
                let p = p.clone();
                std::thread::spawn(move || {
                    vault.put(&p, &Secret::from(format!("w{i}")), Some(expected))
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(winners, vec![&(expected + 1)], "{results:?}");
        assert!(
            results
                .iter()
                .filter(|r| r.is_err())
                .all(|r| matches!(r, Err(Error::CasMismatch { .. })))
        );
    }
}

#[test]
fn max_versions_prunes_the_oldest() {
    let tv = vault_with_tenants(options(), &["acme"]);
    let p = path("tenant/acme/x");
    for i in 1..=15 {
        assert_eq!(
            tv.vault
                .put(&p, &Secret::from(format!("v{i}")), None)
                .unwrap(),
            i
        );
    }
    let md = tv.vault.metadata(&p).unwrap();
    assert_eq!(md.max_versions, 10);
    assert_eq!(md.current_version, 15);
    assert_eq!(md.oldest_version, 6);
    assert_eq!(
        md.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        (6..=15).collect::<Vec<_>>()
    );
    assert!(matches!(
        tv.vault.get_version(&p, 5),
        Err(Error::VersionNotFound { version: 5, .. })
    ));
    assert_eq!(tv.vault.get_version(&p, 6).unwrap().value.expose(), b"v6");
    tv.vault
        .update_metadata(
            &p,
            &MetadataUpdate {
                max_versions: Some(3),
                custom: None,
            },
        )
        .unwrap();
    let md = tv.vault.metadata(&p).unwrap();
    assert_eq!(
        md.versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![13, 14, 15]
    );
    tv.vault.put(&p, &Secret::from("v16"), None).unwrap();
    assert_eq!(tv.vault.metadata(&p).unwrap().oldest_version, 14);
    for bad in [0, 1001] {
        let err = tv
            .vault
            .update_metadata(
                &p,
                &MetadataUpdate {
                    max_versions: Some(bad),
                    custom: None,
                },
            )
            .unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)));
    }
}

#[test]
fn metadata_records_deletion_destruction_and_custom_fields() {
    let tv = vault_with_tenants(options(), &["acme"]);
    let p = path("tenant/acme/x");
    for i in 1..=3 {
        tv.vault
            .put(&p, &Secret::from(format!("v{i}")), None)
            .unwrap();
    }
    assert_eq!(tv.vault.delete(&p, &[]).unwrap(), vec![3]);
    assert!(matches!(
        tv.vault.get(&p),
        Err(Error::VersionDeleted { version: 3, .. })
    ));
    assert_eq!(tv.vault.destroy(&p, &[1]).unwrap(), vec![1]);
    assert!(matches!(
        tv.vault.undelete(&p, &[1, 3]),
        Err(Error::VersionDestroyed { version: 1, .. })
    ));
    assert!(
        tv.vault.metadata(&p).unwrap().versions[2]
            .deleted_at
            .is_some(),
        "all or nothing"
    );
    assert!(matches!(
        tv.vault.delete(&p, &[9]),
        Err(Error::VersionNotFound { version: 9, .. })
    ));
    assert_eq!(tv.vault.undelete(&p, &[3]).unwrap(), vec![3]);
    assert_eq!(tv.vault.get(&p).unwrap().value.expose(), b"v3");
    let custom = BTreeMap::from([("owner".to_string(), "team-payments".to_string())]);
    tv.vault
        .update_metadata(
            &p,
            &MetadataUpdate {
                max_versions: None,
                custom: Some(custom.clone()),
            },
        )
        .unwrap();
    let md = tv.vault.metadata(&p).unwrap();
    assert_eq!(md.custom, custom);
    assert!(md.versions[0].destroyed && md.versions[0].deleted_at.is_none());
    assert!(!md.versions[1].destroyed && md.versions[1].deleted_at.is_none());
    assert!(md.updated_at >= md.created_at);
}

#[test]
fn size_and_count_limits() {
    let mut opts = options();
    opts.max_secrets_per_tenant = 3;
    let tv = vault_with_tenants(opts, &["acme", "globex"]);
    let p = path("tenant/acme/big");
    tv.vault
        .put(&p, &Secret::new(vec![7; 64 * 1024]), None)
        .unwrap();
    let err = tv
        .vault
        .put(&p, &Secret::new(vec![7; 64 * 1024 + 1]), None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::ValueTooLarge {
                size: 65537,
                limit: 65536
            }
        ),
        "{err}"
    );
    assert_eq!(tv.vault.get(&p).unwrap().version, 1, "nothing written");
    for n in ["a", "b"] {
        tv.vault
            .put(&path(&format!("tenant/acme/{n}")), &Secret::from("v"), None)
            .unwrap();
    }
    let err = tv
        .vault
        .put(&path("tenant/acme/c"), &Secret::from("v"), None)
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::QuotaExceeded {
                what: "secrets",
                limit: 3,
                ..
            }
        ),
        "{err}"
    );
    // A new version of an existing secret is not a new secret.
    tv.vault
        .put(&path("tenant/acme/a"), &Secret::from("v2"), None)
        .unwrap();
    // The quota is per tenant.
    tv.vault
        .put(&path("tenant/globex/c"), &Secret::from("v"), None)
        .unwrap();
}

#[test]
fn errors_and_debug_output_never_hold_a_value() {
    let tv = vault_with_tenants(options(), &["acme"]);
    let value = "sk_live_PLANTED_VALUE_0123456789";
    let p = path("tenant/acme/x");
    tv.vault.put(&p, &Secret::from(value), None).unwrap();
    let mut texts = vec![
        format!("{:?}", tv.vault.get(&p).unwrap()),
        format!("{:?}", tv.vault),
    ];
    for e in [
        tv.vault.put(&p, &Secret::from(value), Some(0)).unwrap_err(),
        tv.vault
            .put(&p, &Secret::new(value.repeat(3000).into_bytes()), None)
            .unwrap_err(),
        tv.vault.get_version(&p, 7).unwrap_err(),
    ] {
        texts.push(e.to_string());
        texts.push(format!("{e:?}"));
    }
    for t in texts {
        assert!(!t.contains("PLANTED_VALUE"), "{t}");
    }
}

#[test]
fn tenant_key_rotation_and_rewrap() {
    let tv = vault_with_tenants(options(), &["acme"]);
    let p = path("tenant/acme/x");
    tv.vault
        .put(&p, &Secret::from("under key 1"), None)
        .unwrap();
    assert_eq!(tv.vault.rotate_tenant_key(&slug("acme")).unwrap(), 2);
    tv.vault
        .put(&p, &Secret::from("under key 2"), None)
        .unwrap();
    let kv = |v: u64| {
        tv.raw()
            .query_i64("SELECT key_version FROM versions WHERE version = ?1", &[&v])
    };
    assert_eq!((kv(1), kv(2)), (1, 2));
    assert_eq!(
        tv.vault
            .scope_status(&slug("acme"))
            .unwrap()
            .scope
            .key_version,
        2
    );
    assert_eq!(tv.vault.rewrap(&slug("acme")).unwrap(), 1);
    assert_eq!(kv(1), 2);
    let keys: Vec<i64> = tv
        .raw()
        .query("SELECT version FROM data_keys", &[])
        .iter()
        .map(|r| r[0].int())
        .collect();
    assert_eq!(keys, vec![2], "the unused old key is shredded");
    let tv = tv.reopen(options());
    assert_eq!(
        tv.vault.get_version(&p, 1).unwrap().value.expose(),
        b"under key 1"
    );
    assert_eq!(tv.vault.get(&p).unwrap().value.expose(), b"under key 2");
    assert_eq!(tv.vault.rewrap(&slug("acme")).unwrap(), 0);
}

#[test]
fn a_data_key_rotates_itself_before_its_encryption_budget_runs_out() {
    let mut opts = options();
    opts.key_rotation_after = 3;
    let tv = vault_with_tenants(opts, &["acme"]);
    let p = path("tenant/acme/x");
    for i in 0..7 {
        tv.vault
            .put(&p, &Secret::from(format!("{i}")), None)
            .unwrap();
    }
    let counts: Vec<(i64, i64)> = tv
        .raw()
        .query(
            "SELECT version, encryptions FROM data_keys ORDER BY version",
            &[],
        )
        .iter()
        .map(|r| (r[0].int(), r[1].int()))
        .collect();
    assert_eq!(counts, vec![(1, 3), (2, 3), (3, 1)]);
    for v in 1..=7u64 {
        assert_eq!(
            tv.vault.get_version(&p, v).unwrap().value.expose(),
            format!("{}", v - 1).as_bytes()
        );
    }
}

#[test]
fn listing_pages_through_one_tenant_only() {
    let tv = vault_with_tenants(options(), &["acme", "acme-2", "globex"]);
    for n in ["a", "b/c", "b/d", "b/e", "bz", "c"] {
        tv.vault
            .put(&path(&format!("tenant/acme/{n}")), &Secret::from("v"), None)
            .unwrap();
        tv.vault
            .put(
                &path(&format!("tenant/acme-2/{n}")),
                &Secret::from("v"),
                None,
            )
            .unwrap();
        tv.vault
            .put(
                &path(&format!("tenant/globex/{n}")),
                &Secret::from("v"),
                None,
            )
            .unwrap();
    }
    let prefix = ListPrefix::parse("tenant/acme/b").unwrap();
    let p1 = tv.vault.list(&prefix, None, 2).unwrap();
    assert_eq!(
        p1.paths.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["tenant/acme/b/c", "tenant/acme/b/d"]
    );
    let p2 = tv.vault.list(&prefix, p1.next.as_deref(), 2).unwrap();
    assert_eq!(
        p2.paths.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["tenant/acme/b/e", "tenant/acme/bz"]
    );
    assert_eq!(p2.next, None);
    let all = tv
        .vault
        .list(&ListPrefix::parse("tenant/acme").unwrap(), None, 1000)
        .unwrap();
    assert_eq!(all.paths.len(), 6);
    assert!(all.paths.iter().all(|p| p.slug().as_str() == "acme"));
    assert!(matches!(
        tv.vault.list(&prefix, None, 0),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        tv.vault
            .list(&ListPrefix::parse("tenant/nope/").unwrap(), None, 10),
        Err(Error::ScopeNotFound(_))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(24), ..ProptestConfig::default() })]

    /// Encryption round-trips for any value up to the limit.
    #[test]
    fn any_value_up_to_the_limit_round_trips(
        value in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..=300),
            proptest::collection::vec(any::<u8>(), 65_000..=65_536),
        ]
    ) {
        let tv = vault_with_tenants(options(), &["acme"]);
        let p = path("tenant/acme/v");
        let v = tv.vault.put(&p, &Secret::new(value.clone()), None).unwrap();
        let got = tv.vault.get(&p).unwrap();
        prop_assert_eq!(got.value.expose(), value.as_slice());
        let tv = tv.reopen(options());
        let got = tv.vault.get_version(&p, v).unwrap();
        prop_assert_eq!(got.value.expose(), value.as_slice());
    }
}
