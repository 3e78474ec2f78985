//! Tokens, policies, tenant isolation, audit and quotas.

mod common;

use std::time::Duration;

use common::*;
use proptest::prelude::*;
use tenant_vault::{
    AuditProblem, Capability, Error, LimitChange, ListPrefix, Policy, Principal, Role, Rule,
    ScopeKind, Secret, SecretPath, TokenSpec, Unlock, Vault,
};

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const NAMES: [&str; 6] = ["a", "ab", "db/password", "db/user", "db/prod/key", "x/y"];
const GLOBS: [&str; 8] = ["**", "db/*", "db/**", "a?", "a", "*", "*/y", "x/**"];

fn value_of(tenant: &str, name: &str) -> String {
    format!("value-of-{tenant}-{name}")
}

/// The model's glob matcher: plain backtracking, written apart from the
/// implementation.
fn model_glob(p: &[u8], n: &[u8]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            (0..=n.len()).any(|k| model_glob(&p[2..], &n[k..]))
        }
        Some(b'*') => {
            let seg = n.iter().position(|&b| b == b'/').unwrap_or(n.len());
            (0..=seg).any(|k| model_glob(&p[1..], &n[k..]))
        }
        Some(b'?') => !n.is_empty() && n[0] != b'/' && model_glob(&p[1..], &n[1..]),
        Some(&c) => !n.is_empty() && n[0] == c && model_glob(&p[1..], &n[1..]),
    }
}

fn model_allows(policy: &Policy, name: &str, cap: Capability) -> bool {
    policy
        .rules
        .iter()
        .any(|r| r.capabilities.contains(&cap) && model_glob(r.path.as_bytes(), name.as_bytes()))
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    let cap = prop_oneof![
        Just(Capability::Read),
        Just(Capability::List),
        Just(Capability::Write),
        Just(Capability::Delete),
        Just(Capability::Destroy),
    ];
    let rule =
        (0..GLOBS.len(), proptest::collection::vec(cap, 1..4)).prop_map(|(g, capabilities)| Rule {
            path: GLOBS[g].into(),
            capabilities,
        });
    prop_oneof![
        (0..Role::ALL.len()).prop_map(|i| Role::ALL[i].policy()),
        proptest::collection::vec(rule, 0..3).prop_map(|rules| Policy { rules }),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Get,
    Put,
    List,
    Delete,
    Destroy,
    Metadata,
}

impl Op {
    fn cap(self) -> Capability {
        match self {
            Op::Get => Capability::Read,
            Op::Put => Capability::Write,
            Op::List | Op::Metadata => Capability::List,
            Op::Delete => Capability::Delete,
            Op::Destroy => Capability::Destroy,
        }
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        Just(Op::Get),
        Just(Op::Put),
        Just(Op::List),
        Just(Op::Delete),
        Just(Op::Destroy),
        Just(Op::Metadata)
    ]
}

fn setup(tenants: &[&str]) -> TestVault {
    let tv = vault_with_tenants(options(), tenants);
    let root = tv.vault.root_session();
    for t in tenants {
        root.set_limits(
            &slug(t),
            &LimitChange {
                rate_per_sec: Some(1e9),
                ..Default::default()
            },
        )
        .unwrap();
        for n in NAMES {
            root.put(
                &path(&format!("tenant/{t}/{n}")),
                &Secret::from(value_of(t, n)),
                None,
            )
            .unwrap();
        }
    }
    tv
}

fn tenant_token(tv: &TestVault, tenant: &str, policy: Policy) -> String {
    let issued = tv
        .vault
        .root_session()
        .issue_token(&TokenSpec {
            tenant: Some(slug(tenant)),
            policy: Some(policy),
            ..Default::default()
        })
        .unwrap();
    String::from_utf8(issued.token.expose().to_vec()).unwrap()
}

fn denials_in_audit(tv: &TestVault) -> usize {
    tv.vault.flush_audit().unwrap();
    tv.raw().query_i64(
        "SELECT count(*) FROM audit_log WHERE outcome IN ('denied', 'cross-tenant-denied')",
        &[],
    ) as usize
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(40), ..ProptestConfig::default() })]

    /// Random tokens of 3 tenants with random policies issue random
    /// operations on random paths, other tenants' included. Every allowed
    /// operation is exactly what the policy grants, nothing of one tenant
    /// reaches another's token, and every denial is audited.
    #[test]
    fn access_is_exactly_what_the_policy_grants(
        policies in proptest::collection::vec((0..TENANTS.len(), policy_strategy()), 3..6),
        ops in proptest::collection::vec(
            (any::<prop::sample::Index>(), op_strategy(), 0..TENANTS.len(), 0..NAMES.len()), 1..40),
    ) {
        let tv = setup(&TENANTS);
        let tokens: Vec<(usize, Policy, Principal)> = policies
            .into_iter()
            .map(|(t, p)| {
                let token = tenant_token(&tv, TENANTS[t], p.clone());
                let principal = tv.vault.authenticate(&token).unwrap();
                (t, p, principal)
            })
            .collect();
        let before = denials_in_audit(&tv);
        let mut denials = 0;
        for (which, op, target, n) in ops {
            let (own, policy, principal) = &tokens[which.index(tokens.len())];
            let own_slug = TENANTS[*own];
            let s = tv.vault.session(principal.clone());
            let name = NAMES[n];
            let p = SecretPath::parse(&format!("tenant/{}/{name}", TENANTS[target])).unwrap();
            let same = *own == target;
            let allowed = same && match op {
                Op::List => policy.rules.iter().any(|r| r.capabilities.contains(&Capability::List)),
                Op::Metadata => model_allows(policy, name, Capability::List) || model_allows(policy, name, Capability::Read),
                _ => model_allows(policy, name, op.cap()),
            };
            let result: Result<Option<Vec<u8>>, Error> = match op {
                Op::Get => s.get(&p).map(|v| Some(v.value.expose().to_vec())),
                Op::Put => s.put(&p, &Secret::from(value_of(own_slug, name)), None).map(|_| None),
                Op::Delete => s.delete(&p, &[]).map(|_| None),
                Op::Destroy => s.destroy(&p, &[]).map(|_| None),
                Op::Metadata => s.metadata(&p).map(|_| None),
                Op::List => {
                    let prefix = ListPrefix::tenant(slug(TENANTS[target]));
                    s.list(&prefix, None, 100).map(|page| {
                        for lp in &page.paths {
                            assert_eq!(lp.slug().as_str(), own_slug, "a listing crossed tenants");
                            assert!(model_allows(policy, lp.name().as_str(), Capability::List));
                        }
                        None
                    })
                }
            };
            match result {
                Err(Error::CrossTenant { .. }) => {
                    prop_assert!(!same, "{op:?} on own tenant reported cross-tenant");
                    denials += 1;
                }
                Err(Error::PermissionDenied(_)) => {
                    prop_assert!(!allowed, "{op:?} {name} was allowed by the policy but denied");
                    prop_assert!(same);
                    denials += 1;
                }
                other => {
                    prop_assert!(allowed, "{op:?} on {p} should be denied, got {other:?}");
                    if let Ok(Some(v)) = other {
                        let v = String::from_utf8(v).unwrap();
                        prop_assert!(v.starts_with(&format!("value-of-{own_slug}-")), "tenant {own_slug} read {v}");
                    }
                }
            }
        }
        prop_assert_eq!(denials_in_audit(&tv) - before, denials, "every denial is audited");
        prop_assert_eq!(tv.vault.verify_audit().unwrap(), Ok(tv.vault.audit_tail(usize::MAX).unwrap().len() as u64));
    }
}

fn issue(tv: &TestVault, spec: TokenSpec) -> (String, String) {
    let t = tv.vault.root_session().issue_token(&spec).unwrap();
    (t.id, String::from_utf8(t.token.expose().to_vec()).unwrap())
}

fn tenant_spec(t: &str, role: Role) -> TokenSpec {
    TokenSpec {
        tenant: Some(slug(t)),
        role: Some(role),
        ..Default::default()
    }
}

#[test]
fn expiry_and_revocation_take_effect_on_the_next_call() {
    let tv = setup(&["acme"]);
    let (_, short) = issue(
        &tv,
        TokenSpec {
            ttl: Some(Duration::from_millis(300)),
            ..tenant_spec("acme", Role::User)
        },
    );
    let p = tv.vault.authenticate(&short).unwrap();
    tv.vault.session(p).get(&path("tenant/acme/a")).unwrap();
    std::thread::sleep(Duration::from_millis(350));
    assert!(
        matches!(tv.vault.authenticate(&short), Err(Error::Unauthenticated(m)) if m.contains("expired"))
    );

    let (id, tok) = issue(&tv, tenant_spec("acme", Role::User));
    tv.vault.authenticate(&tok).unwrap();
    // Revoked through another vault instance on the same files (another process).
    let other = Vault::open(tv.store(), &Unlock::KeyFile(tv.key_file()), options()).unwrap();
    other.root_session().revoke_token(&id).unwrap();
    assert!(
        matches!(tv.vault.authenticate(&tok), Err(Error::Unauthenticated(m)) if m.contains("revoked"))
    );
    // Revoking again is harmless; an unknown id is reported.
    other.root_session().revoke_token(&id).unwrap();
    assert!(matches!(
        other.root_session().revoke_token("tok_nope"),
        Err(Error::TokenNotFound(_))
    ));
}

#[test]
fn the_last_owner_cannot_be_revoked() {
    let tv = setup(&["acme", "globex"]);
    let root = tv.vault.root_session();
    let (o1, _) = issue(&tv, tenant_spec("acme", Role::Owner));
    assert!(matches!(root.revoke_token(&o1), Err(Error::LastOwner(_))));
    let (o2, _) = issue(&tv, tenant_spec("acme", Role::Owner));
    root.revoke_token(&o1).unwrap();
    assert!(matches!(root.revoke_token(&o2), Err(Error::LastOwner(_))));
    // An expired owner does not count as a live one.
    let (_, _) = issue(
        &tv,
        TokenSpec {
            ttl: Some(Duration::from_millis(1)),
            ..tenant_spec("acme", Role::Owner)
        },
    );
    std::thread::sleep(Duration::from_millis(5));
    assert!(matches!(root.revoke_token(&o2), Err(Error::LastOwner(_))));
    // Another tenant's owners do not count either.
    issue(&tv, tenant_spec("globex", Role::Owner));
    assert!(matches!(root.revoke_token(&o2), Err(Error::LastOwner(_))));
}

#[test]
fn a_mistyped_token_is_rejected_by_its_checksum() {
    let tv = setup(&["acme"]);
    let (_, tok) = issue(&tv, tenant_spec("acme", Role::Viewer));
    let mut typo = tok.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let err = tv
        .vault
        .authenticate(std::str::from_utf8(&typo).unwrap())
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unauthenticated(m) if m.contains("checksum")),
        "{err}"
    );
    assert!(
        !err.to_string().contains(&tok[6..]),
        "the error never holds the token"
    );
    // A well-formed token that was never issued is unknown.
    let forged = smcp_token::generate(smcp_token::TokenKind::Tenant);
    assert!(
        matches!(tv.vault.authenticate(&forged), Err(Error::Unauthenticated(m)) if m == "unknown token")
    );
}

#[test]
fn operators_do_not_read_secrets_unless_granted() {
    let tv = setup(&["acme", "globex"]);
    let (_, plain) = issue(&tv, TokenSpec::default());
    let (_, granted) = issue(
        &tv,
        TokenSpec {
            read_grants: vec![slug("acme")],
            ..Default::default()
        },
    );
    let op = tv.vault.session(tv.vault.authenticate(&plain).unwrap());
    op.create_scope(&slug("initech"), ScopeKind::Freelance)
        .unwrap();
    assert_eq!(op.list_scopes().unwrap().len(), 3);
    assert!(matches!(
        op.get(&path("tenant/acme/a")),
        Err(Error::PermissionDenied(_))
    ));
    let g = tv.vault.session(tv.vault.authenticate(&granted).unwrap());
    assert_eq!(
        g.get(&path("tenant/acme/a")).unwrap().value.expose(),
        value_of("acme", "a").as_bytes()
    );
    assert!(matches!(
        g.get(&path("tenant/globex/a")),
        Err(Error::PermissionDenied(_))
    ));
    assert!(matches!(
        g.put(&path("tenant/acme/a"), &Secret::from("w"), None),
        Err(Error::PermissionDenied(_))
    ));
}

#[test]
fn tenant_admins_manage_their_own_tenant_only() {
    let tv = setup(&["acme", "globex"]);
    let (_, admin) = issue(&tv, tenant_spec("acme", Role::Admin));
    let (globex_id, _) = issue(&tv, tenant_spec("globex", Role::User));
    let s = tv.vault.session(tv.vault.authenticate(&admin).unwrap());
    let (v, _) = s.rotate_key(&slug("acme"), true).unwrap();
    assert_eq!(v, 2);
    assert_eq!(
        s.scope_status(&slug("acme")).unwrap().secrets,
        NAMES.len() as u64
    );
    let minted = s.issue_token(&tenant_spec("acme", Role::Viewer)).unwrap();
    assert!(matches!(
        s.issue_token(&tenant_spec("acme", Role::Owner)),
        Err(Error::PermissionDenied(_))
    ));
    assert!(matches!(
        s.issue_token(&tenant_spec("globex", Role::Viewer)),
        Err(Error::CrossTenant { .. })
    ));
    assert!(matches!(
        s.issue_token(&TokenSpec::default()),
        Err(Error::PermissionDenied(_))
    ));
    assert!(
        matches!(s.revoke_token(&globex_id), Err(Error::TokenNotFound(_))),
        "other tenants' tokens are out of reach"
    );
    s.revoke_token(&minted.id).unwrap();
    assert!(
        s.list_tokens(Some(&slug("acme")))
            .unwrap()
            .iter()
            .all(|t| t.tenant == Some(slug("acme")))
    );
    assert!(matches!(
        s.list_tokens(Some(&slug("globex"))),
        Err(Error::CrossTenant { .. })
    ));
    assert!(matches!(
        s.create_scope(&slug("evil"), ScopeKind::Enterprise),
        Err(Error::PermissionDenied(_))
    ));
    // Another tenant's scope is a cross-tenant attempt; its own needs an operator.
    assert!(matches!(
        s.delete_scope(&slug("globex")),
        Err(Error::CrossTenant { .. })
    ));
    assert!(matches!(
        s.delete_scope(&slug("acme")),
        Err(Error::PermissionDenied(_))
    ));
    assert!(matches!(
        s.set_limits(&slug("globex"), &LimitChange::default()),
        Err(Error::CrossTenant { .. })
    ));
    // A user cannot manage the tenant.
    let (_, user) = issue(&tv, tenant_spec("acme", Role::User));
    let u = tv.vault.session(tv.vault.authenticate(&user).unwrap());
    assert!(matches!(
        u.issue_token(&tenant_spec("acme", Role::Viewer)),
        Err(Error::PermissionDenied(_))
    ));
}

fn audit_verify(tv: &TestVault) -> Result<u64, AuditProblem> {
    tv.vault.verify_audit().unwrap()
}

#[test]
fn audit_verify_catches_each_kind_of_tampering() {
    let mut opts = options();
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("audit.jsonl");
    opts.audit_file = Some(jsonl.clone());
    let tv = vault_with_tenants(opts, &["acme"]);
    let root = tv.vault.root_session();
    for i in 0..8 {
        root.put(
            &path(&format!("tenant/acme/s{i}")),
            &Secret::from("v"),
            None,
        )
        .unwrap();
    }
    let n = audit_verify(&tv).unwrap();
    assert_eq!(n, 8);
    assert_eq!(tenant_vault::verify_audit_file(&jsonl).unwrap(), Ok(8));
    let raw = tv.raw();

    raw.execute("UPDATE audit_log SET outcome = 'denied' WHERE seq = 3", &[]);
    assert_eq!(audit_verify(&tv), Err(AuditProblem::Altered { seq: 3 }));
    raw.execute("UPDATE audit_log SET outcome = 'ok' WHERE seq = 3", &[]);
    assert_eq!(audit_verify(&tv), Ok(8));

    raw.batch(
        "UPDATE audit_log SET seq = 100 WHERE seq = 5;
         UPDATE audit_log SET seq = 5 WHERE seq = 6;
         UPDATE audit_log SET seq = 6 WHERE seq = 100;",
    );
    assert_eq!(audit_verify(&tv), Err(AuditProblem::OutOfOrder { seq: 5 }));
    raw.batch(
        "UPDATE audit_log SET seq = 100 WHERE seq = 5;
         UPDATE audit_log SET seq = 5 WHERE seq = 6;
         UPDATE audit_log SET seq = 6 WHERE seq = 100;",
    );
    assert_eq!(audit_verify(&tv), Ok(8));

    raw.execute("DELETE FROM audit_log WHERE seq = 4", &[]);
    assert_eq!(
        audit_verify(&tv),
        Err(AuditProblem::Missing { from: 4, to: 4 })
    );

    // The JSON-lines file: alter a line, then drop one.
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let altered = text.replacen("tenant/acme/s2", "tenant/acme/s9", 1);
    std::fs::write(&jsonl, &altered).unwrap();
    assert_eq!(
        tenant_vault::verify_audit_file(&jsonl).unwrap(),
        Err(AuditProblem::Altered { seq: 3 })
    );
    let dropped: String = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 5)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(&jsonl, dropped).unwrap();
    assert_eq!(
        tenant_vault::verify_audit_file(&jsonl).unwrap(),
        Err(AuditProblem::Missing { from: 6, to: 6 })
    );
}

/// The JSON-lines file is a copy of the stored chain: records committed
/// while the file was not attached (another process, a crash before the
/// copy) are copied when it is attached again, and a file that runs ahead
/// of the vault's chain (another vault's) is refused.
#[test]
fn the_audit_file_catches_up_with_the_stored_chain() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("audit.jsonl");
    let mut with_file = options();
    with_file.audit_file = Some(jsonl.clone());
    let tv = vault_with_tenants(with_file.clone(), &["acme"]);
    let put = |tv: &TestVault, name: &str| {
        tv.vault
            .root_session()
            .put(
                &path(&format!("tenant/acme/{name}")),
                &Secret::from("v"),
                None,
            )
            .unwrap();
    };
    put(&tv, "a");
    put(&tv, "b");
    assert_eq!(tenant_vault::verify_audit_file(&jsonl).unwrap(), Ok(2));

    let tv = tv.reopen(options());
    put(&tv, "c");
    put(&tv, "d");
    assert_eq!(tenant_vault::verify_audit_file(&jsonl).unwrap(), Ok(2));

    let tv = tv.reopen(with_file.clone());
    assert_eq!(tenant_vault::verify_audit_file(&jsonl).unwrap(), Ok(4));
    put(&tv, "e");
    assert_eq!(tenant_vault::verify_audit_file(&jsonl).unwrap(), Ok(5));
    assert_eq!(tv.vault.verify_audit().unwrap(), Ok(5));

    // Another vault, with a shorter chain, refuses this file.
    let other = key_file_vault(options());
    let store = other.store();
    match Vault::open(store, &Unlock::KeyFile(other.key_file()), with_file) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("another vault"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("another vault's audit file was continued"),
    }
}

#[test]
fn the_audit_trail_fails_closed() {
    let tv = setup(&["acme"]);
    let root = tv.vault.root_session();
    let p = path("tenant/acme/a");
    tv.vault.flush_audit().unwrap();
    let raw = tv.raw();
    // A trigger that refuses every audit record: a full disk.
    let (create, drop_trigger) = match backend() {
        Backend::Sqlite => (
            "CREATE TRIGGER audit_full BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
            "DROP TRIGGER audit_full;",
        ),
        Backend::Postgres => (
            "CREATE FUNCTION audit_full() RETURNS trigger LANGUAGE plpgsql
                 AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$;
             CREATE TRIGGER audit_full BEFORE INSERT ON audit_log
                 FOR EACH ROW EXECUTE FUNCTION audit_full();",
            "DROP TRIGGER audit_full ON audit_log; DROP FUNCTION audit_full();",
        ),
    };
    raw.batch(create);
    // A read's record is buffered; once the buffer cannot be written,
    // every request is refused.
    let _ = root.get(&p);
    assert!(matches!(
        tv.vault.flush_audit(),
        Err(Error::AuditUnavailable(_))
    ));
    assert!(matches!(root.get(&p), Err(Error::AuditUnavailable(_))));
    let err = root
        .put(&p, &Secret::from("must not land"), None)
        .unwrap_err();
    assert!(matches!(err, Error::AuditUnavailable(_)), "{err}");
    raw.batch(drop_trigger);
    // Nothing was written while the trail was down.
    assert_eq!(
        root.get(&p).unwrap().value.expose(),
        value_of("acme", "a").as_bytes()
    );
    assert_eq!(tv.vault.metadata(&p).unwrap().current_version, 1);
    // The buffered records were kept and the chain is whole.
    let records = tv.vault.audit_tail(3).unwrap();
    assert!(records.iter().any(|r| r.entry.operation == "get"));
    assert!(audit_verify(&tv).is_ok());
}

#[test]
fn quotas_and_rate_limits() {
    let tv = setup(&["acme"]);
    let root = tv.vault.root_session();
    let acme = slug("acme");
    root.set_limits(
        &acme,
        &LimitChange {
            max_tokens: Some(2),
            max_secrets: Some(7),
            max_bytes: Some(2000),
            ..Default::default()
        },
    )
    .unwrap();
    issue(&tv, tenant_spec("acme", Role::User));
    let (_, t2) = issue(&tv, tenant_spec("acme", Role::User));
    let err = root
        .issue_token(&tenant_spec("acme", Role::User))
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::QuotaExceeded {
                what: "tokens",
                limit: 2,
                ..
            }
        ),
        "{err}"
    );
    root.put(&path("tenant/acme/seventh"), &Secret::from("v"), None)
        .unwrap();
    let err = root
        .put(&path("tenant/acme/eighth"), &Secret::from("v"), None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::QuotaExceeded {
                what: "secrets",
                limit: 7,
                ..
            }
        ),
        "{err}"
    );
    let err = root
        .put(&path("tenant/acme/a"), &Secret::new(vec![0; 1900]), None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::QuotaExceeded {
                what: "stored bytes",
                limit: 2000,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        root.set_limits(
            &acme,
            &LimitChange {
                plan: Some("gold".into()),
                ..Default::default()
            }
        ),
        Err(Error::InvalidArgument(_))
    ));
    // Rate: the starter plan's burst, then refusals.
    root.set_limits(
        &acme,
        &LimitChange {
            plan: Some("starter".into()),
            rate_per_sec: Some(0.001),
            ..Default::default()
        },
    )
    .unwrap();
    let limits = root.limits(&acme).unwrap();
    assert_eq!(limits.plan, "starter");
    let s = tv.vault.session(tv.vault.authenticate(&t2).unwrap());
    for _ in 0..limits.burst {
        s.get(&path("tenant/acme/a")).unwrap();
    }
    let err = s.get(&path("tenant/acme/a")).unwrap_err();
    assert!(matches!(err, Error::RateLimited { .. }), "{err}");
}

#[test]
fn values_and_tokens_never_reach_the_database_or_the_audit_files() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("audit.jsonl");
    let mut opts = options();
    opts.audit_file = Some(jsonl.clone());
    let tv = vault_with_tenants(opts, &["acme", "globex"]);
    let root = tv.vault.root_session();
    let mut planted: Vec<String> = Vec::new();
    for i in 0..5 {
        let v = format!("PLANTED-VALUE-{i}-9f8e7d6c5b4a");
        root.put(
            &path(&format!("tenant/acme/p{i}")),
            &Secret::from(v.as_str()),
            None,
        )
        .unwrap();
        planted.push(v);
    }
    for role in [Role::Owner, Role::User] {
        let (_, t) = issue(&tv, tenant_spec("acme", role));
        let s = tv.vault.session(tv.vault.authenticate(&t).unwrap());
        s.get(&path("tenant/acme/p1")).unwrap();
        let _ = s.get(&path("tenant/globex/p1"));
        let _ = s.put(
            &path("tenant/acme/p2"),
            &Secret::from(planted[2].as_str()),
            Some(0),
        );
        planted.push(t);
    }
    let _ = tv.vault.authenticate(&planted[5][..54]);
    let TestVault { dir, url, vault } = tv;
    drop(vault);
    // Every stored value (both backends) and, on SQLite, every byte of its
    // files; then the audit file.
    let raw = Raw::open(&url);
    let ciphertext = raw.query_bytes("SELECT ciphertext FROM versions WHERE name = 'p0'", &[]);
    let mut files = raw.all_stored_bytes();
    if sqlite() {
        files.extend(storage_bytes(&dir.path().join("vault.db")));
        assert!(files.len() > 10_000);
    }
    files.extend(std::fs::read(&jsonl).unwrap());
    assert!(
        contains(&files, &ciphertext),
        "the search must find what is there"
    );
    for p in &planted {
        assert!(
            !contains(&files, p.as_bytes()),
            "{} found on disk",
            &p[..12]
        );
        assert!(
            !contains(&files, &p.as_bytes()[p.len() - 20..]),
            "a tail of a planted secret found on disk"
        );
    }
}

#[test]
fn a_session_never_touches_another_tenants_rows() {
    // The cross-tenant denial happens before any storage access: even a
    // sealed vault answers it with the denial, not with `Sealed`.
    let tv = setup(&["acme", "globex"]);
    let (_, t) = issue(&tv, tenant_spec("acme", Role::Owner));
    let s = tv.vault.session(tv.vault.authenticate(&t).unwrap());
    tv.vault.seal();
    assert!(matches!(
        s.get(&path("tenant/globex/a")),
        Err(Error::CrossTenant { .. })
    ));
    assert!(matches!(s.get(&path("tenant/acme/a")), Err(Error::Sealed)));
}

#[test]
fn watch_sees_changes_of_its_tenant_and_prefix_only_from_any_process() {
    let tv = setup(&["acme", "globex"]);
    // A second process on the same database file.
    let other = Vault::open(tv.store(), &Unlock::KeyFile(tv.key_file()), options()).unwrap();
    let root = tv.vault.root_session();
    let token = tenant_token(
        &tv,
        "acme",
        Policy {
            rules: vec![Rule {
                path: "db/**".into(),
                capabilities: vec![Capability::List, Capability::Read],
            }],
        },
    );
    let principal = tv.vault.authenticate(&token).unwrap();
    let s = tv.vault.session(principal.clone());
    let mut w = s
        .watch(&ListPrefix::parse("tenant/acme/").unwrap())
        .unwrap();
    assert!(s.watch_poll(&mut w, 100).unwrap().is_empty());

    let put = |v: &Vault, p: &str| {
        v.root_session()
            .put(&path(p), &Secret::from("v"), None)
            .unwrap()
    };
    put(&tv.vault, "tenant/acme/db/password"); // seen
    put(&other, "tenant/acme/db/user"); // seen: another process
    put(&tv.vault, "tenant/globex/db/password"); // another tenant
    put(&tv.vault, "tenant/acme/x/y"); // outside the token's policy
    root.delete(&path("tenant/acme/db/password"), &[]).unwrap();
    let changes = s.watch_poll(&mut w, 100).unwrap();
    let seen: Vec<(String, String, Option<u64>)> = changes
        .iter()
        .map(|c| {
            (
                c.operation.clone(),
                c.path.as_ref().unwrap().to_string(),
                c.version,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("put".into(), "tenant/acme/db/password".into(), Some(2)),
            ("put".into(), "tenant/acme/db/user".into(), Some(2)),
            ("delete".into(), "tenant/acme/db/password".into(), Some(2)),
        ]
    );
    assert!(changes.windows(2).all(|p| p[0].seq < p[1].seq));
    assert!(s.watch_poll(&mut w, 100).unwrap().is_empty());
    // A narrower prefix, and a limit smaller than the backlog.
    let mut narrow = s
        .watch(&ListPrefix::parse("tenant/acme/db/u").unwrap())
        .unwrap();
    put(&tv.vault, "tenant/acme/db/password");
    put(&tv.vault, "tenant/acme/db/user");
    put(&tv.vault, "tenant/acme/db/user");
    let first = s.watch_poll(&mut narrow, 1).unwrap();
    let rest = s.watch_poll(&mut narrow, 100).unwrap();
    assert_eq!((first.len(), rest.len()), (1, 1));
    assert_eq!(first[0].version, Some(3));
    assert_eq!(rest[0].version, Some(4));
    // Another tenant's prefix is refused and audited as cross-tenant.
    let before = denials_in_audit(&tv);
    let e = s
        .watch(&ListPrefix::parse("tenant/globex/").unwrap())
        .unwrap_err();
    assert!(matches!(e, Error::CrossTenant { .. }), "{e:?}");
    assert_eq!(denials_in_audit(&tv), before + 1);
    // A revoked token stops seeing changes.
    let id = match &principal {
        Principal::Tenant { token_id, .. } => token_id.clone(),
        _ => unreachable!(),
    };
    root.revoke_token(&id).unwrap();
    assert!(tv.vault.authenticate(&token).is_err());
}
