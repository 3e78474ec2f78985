//! Random sequences of operations across several tenants give exactly what a
//! simple in-memory model gives, and no tenant ever sees another's names.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use proptest::prelude::*;
use tenant_vault::{ListPrefix, Secret, SecretName, SecretPath};

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const NAMES: [&str; 5] = ["a", "b", "db/password", "db/user", "dbx"];
const PREFIXES: [&str; 5] = ["", "d", "db/", "db/p", "zz"];
const MAX_VERSIONS: u32 = 3;

#[derive(Debug, Clone)]
enum Op {
    Put {
        t: usize,
        n: usize,
        value: Vec<u8>,
        cas: Option<u64>,
    },
    Get {
        t: usize,
        n: usize,
    },
    GetVersion {
        t: usize,
        n: usize,
        v: u64,
    },
    Delete {
        t: usize,
        n: usize,
        vs: Vec<u64>,
    },
    Undelete {
        t: usize,
        n: usize,
        vs: Vec<u64>,
    },
    Destroy {
        t: usize,
        n: usize,
        vs: Vec<u64>,
    },
    List {
        t: usize,
        p: usize,
        page: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let t = 0..TENANTS.len();
    let n = 0..NAMES.len();
    let vs = proptest::collection::vec(1u64..8, 0..3);
    prop_oneof![
        4 => (t.clone(), n.clone(), proptest::collection::vec(any::<u8>(), 0..24),
              proptest::option::of(0u64..6))
            .prop_map(|(t, n, value, cas)| Op::Put { t, n, value, cas }),
        3 => (t.clone(), n.clone()).prop_map(|(t, n)| Op::Get { t, n }),
        2 => (t.clone(), n.clone(), 0u64..8).prop_map(|(t, n, v)| Op::GetVersion { t, n, v }),
        1 => (t.clone(), n.clone(), vs.clone()).prop_map(|(t, n, vs)| Op::Delete { t, n, vs }),
        1 => (t.clone(), n.clone(), vs.clone()).prop_map(|(t, n, vs)| Op::Undelete { t, n, vs }),
        1 => (t.clone(), n.clone(), vs).prop_map(|(t, n, vs)| Op::Destroy { t, n, vs }),
        1 => (t, 0..PREFIXES.len(), 1usize..4).prop_map(|(t, p, page)| Op::List { t, p, page }),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Out {
    Version(u64),
    Value(u64, Vec<u8>),
    Versions(Vec<u64>),
    Names(Vec<String>),
    Err(&'static str),
}

#[derive(Debug, Clone, Default)]
struct VState {
    value: Vec<u8>,
    deleted: bool,
    destroyed: bool,
}

#[derive(Debug, Clone, Default)]
struct SModel {
    current: u64,
    versions: BTreeMap<u64, VState>,
}

#[derive(Default)]
struct Model(HashMap<(usize, usize), SModel>);

impl Model {
    fn apply(&mut self, op: &Op) -> Out {
        match op {
            Op::Put { t, n, value, cas } => {
                let cur = self.0.get(&(*t, *n)).map_or(0, |s| s.current);
                if let Some(e) = cas {
                    if *e != cur {
                        return Out::Err("cas");
                    }
                }
                let s = self.0.entry((*t, *n)).or_default();
                s.current = cur + 1;
                s.versions.insert(
                    s.current,
                    VState {
                        value: value.clone(),
                        ..Default::default()
                    },
                );
                let floor = s.current.saturating_sub(u64::from(MAX_VERSIONS));
                s.versions.retain(|v, _| *v > floor);
                Out::Version(s.current)
            }
            Op::Get { t, n } => match self.0.get(&(*t, *n)) {
                None => Out::Err("no_secret"),
                Some(s) => Self::read(s, s.current),
            },
            Op::GetVersion { t, n, v } => match self.0.get(&(*t, *n)) {
                None => Out::Err("no_secret"),
                Some(s) if !s.versions.contains_key(v) => Out::Err("no_version"),
                Some(s) => Self::read(s, *v),
            },
            Op::Delete { t, n, vs } | Op::Undelete { t, n, vs } | Op::Destroy { t, n, vs } => {
                let Some(s) = self.0.get_mut(&(*t, *n)) else {
                    return Out::Err("no_secret");
                };
                let mut wanted = if vs.is_empty() {
                    vec![s.current]
                } else {
                    vs.clone()
                };
                wanted.sort_unstable();
                wanted.dedup();
                for v in &wanted {
                    match s.versions.get(v) {
                        None => return Out::Err("no_version"),
                        Some(st) if st.destroyed && matches!(op, Op::Undelete { .. }) => {
                            return Out::Err("destroyed");
                        }
                        Some(_) => {}
                    }
                }
                for v in &wanted {
                    let st = s.versions.get_mut(v).unwrap();
                    match op {
                        Op::Delete { .. } if !st.destroyed => st.deleted = true,
                        Op::Undelete { .. } => st.deleted = false,
                        Op::Destroy { .. } => {
                            st.destroyed = true;
                            st.value.clear();
                        }
                        _ => {}
                    }
                }
                Out::Versions(wanted)
            }
            Op::List { t, p, .. } => {
                let mut names: Vec<String> = self
                    .0
                    .keys()
                    .filter(|(tt, n)| tt == t && NAMES[*n].starts_with(PREFIXES[*p]))
                    .map(|(_, n)| format!("tenant/{}/{}", TENANTS[*t], NAMES[*n]))
                    .collect();
                names.sort();
                Out::Names(names)
            }
        }
    }

    fn read(s: &SModel, v: u64) -> Out {
        let st = &s.versions[&v];
        if st.destroyed {
            Out::Err("destroyed")
        } else if st.deleted {
            Out::Err("deleted")
        } else {
            Out::Value(v, st.value.clone())
        }
    }
}

fn spath(t: usize, n: usize) -> SecretPath {
    SecretPath::new(slug(TENANTS[t]), SecretName::parse(NAMES[n]).unwrap())
}

fn run(tv: &TestVault, op: &Op) -> Out {
    let v = &tv.vault;
    let res = match op {
        Op::Put { t, n, value, cas } => v
            .put(&spath(*t, *n), &Secret::new(value.clone()), *cas)
            .map(Out::Version),
        Op::Get { t, n } => v
            .get(&spath(*t, *n))
            .map(|s| Out::Value(s.version, s.value.expose().to_vec())),
        Op::GetVersion { t, n, v: ver } => v
            .get_version(&spath(*t, *n), *ver)
            .map(|s| Out::Value(s.version, s.value.expose().to_vec())),
        Op::Delete { t, n, vs } => v.delete(&spath(*t, *n), vs).map(Out::Versions),
        Op::Undelete { t, n, vs } => v.undelete(&spath(*t, *n), vs).map(Out::Versions),
        Op::Destroy { t, n, vs } => v.destroy(&spath(*t, *n), vs).map(Out::Versions),
        Op::List { t, p, page } => {
            let prefix =
                ListPrefix::parse(&format!("tenant/{}/{}", TENANTS[*t], PREFIXES[*p])).unwrap();
            let mut all = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let pg = match v.list(&prefix, after.as_deref(), *page) {
                    Ok(pg) => pg,
                    Err(e) => return Out::Err(kind(&e)),
                };
                for p in &pg.paths {
                    // Isolation: a tenant's listing never shows another tenant.
                    assert_eq!(p.slug().as_str(), TENANTS[*t], "listing crossed tenants");
                }
                all.extend(pg.paths.iter().map(ToString::to_string));
                match pg.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
            Ok(Out::Names(all))
        }
    };
    res.unwrap_or_else(|e| Out::Err(kind(&e)))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(48), ..ProptestConfig::default() })]

    #[test]
    fn vault_matches_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut opts = options();
        opts.default_max_versions = MAX_VERSIONS;
        let tv = vault_with_tenants(opts, &TENANTS);
        let mut model = Model::default();
        for (i, op) in ops.iter().enumerate() {
            let want = model.apply(op);
            let got = run(&tv, op);
            prop_assert_eq!(&got, &want, "step {} {:?}", i, op);
        }
        // The stored-bytes counter the quota relies on matches what is stored.
        let rows = tv.raw().query(
            "SELECT slug, bytes_used,
                    (SELECT coalesce(sum(length(ciphertext)), 0) FROM versions v
                     WHERE v.scope_id = scopes.id)
             FROM scopes",
            &[],
        );
        for r in rows {
            prop_assert_eq!(r[1].int(), r[2].int(), "bytes_used of {}", r[0].text());
        }
    }
}
