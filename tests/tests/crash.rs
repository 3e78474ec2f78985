//! Crash consistency of a real `secret-mcp serve` process, on SQLite and on
//! PostgreSQL (a throwaway cluster started by the test).
//!
//! Each cycle starts the server on the same data directory, checks what the
//! previous cycles left, lets several concurrent writers put random values
//! (unconditionally and with check-and-set) on a few hot paths, and kills the
//! server with SIGKILL at a random moment. After every restart:
//!
//! - every acknowledged write is present at its version and decrypts to the
//!   value sent (compared by SHA-256; values are never printed);
//! - no partial version exists: every version the metadata lists decrypts
//!   (or is explicitly deleted or destroyed), versions are contiguous, and
//!   each holds a value some writer sent, at most once;
//! - a write that was in flight when the server died (no answer) is either
//!   fully there, at exactly one version, with the value sent, or fully
//!   absent, now and in every later cycle; a write refused by check-and-set
//!   never appears;
//! - the audit chain verifies (`VerifyAudit`), and at the end also offline
//!   with `secret-mcp audit verify`; every put that is there, acknowledged
//!   or not, has its audit record (the store commits the record in the
//!   put's own transaction).
//!
//! `TV_CRASH_CYCLES` sets the number of kill cycles (default 4; the full run
//! uses 20 or more), `TV_CRASH_SEED` the seed of the values and kill times
//! (printed at start, so that a failure can be replayed).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use secret_mcp_grpc::{Client, Error as GrpcError};
use sha2::{Digest, Sha256};
use tenant_vault::{Secret, SecretPath};
use tenant_vault_tests::process::CliEnv;
use tokio::sync::watch;

/// Hot paths the writers share.
const PATHS: usize = 3;
/// Concurrent writers, each on its own connection.
const WRITERS: usize = 4;
/// Versions kept per secret: high enough that no acknowledged write is
/// pruned in a run of a few hundred cycles' worth of writes.
const MAX_VERSIONS: u32 = 1000;
/// Longest random delay between the first acknowledged write of a cycle and
/// the kill.
const MAX_KILL_DELAY_MS: u64 = 700;

type Hash = [u8; 32];

fn sha(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

fn short(h: &Hash) -> String {
    h[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn path(i: usize) -> SecretPath {
    SecretPath::parse(&format!("tenant/acme/crash/p{i}")).unwrap()
}

/// What became of one write, as the writer saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    /// No answer yet: the server died with the write in flight.
    InFlight,
    /// Acknowledged with this version.
    Acked(u64),
    /// Refused by check-and-set: never written.
    CasRefused,
    /// The call failed because the server died (no answer).
    Lost(String),
}

#[derive(Debug, Clone)]
struct Write {
    path: usize,
    hash: Hash,
    cas: Option<u64>,
    seen: Seen,
}

/// What one cycle's writers share.
struct Cycle {
    writes: Mutex<Vec<Write>>,
    /// Set just before the kill: no new write starts after it.
    stop: AtomicBool,
    /// Set once the kill has been ordered: an error answer before it is a
    /// failure of the test, after it the loss of the connection.
    killing: AtomicBool,
    /// Highest acknowledged version per path, for check-and-set.
    latest: Vec<AtomicU64>,
    acks: watch::Sender<u64>,
    /// Errors answered while the server was alive.
    unexpected: Mutex<Vec<String>>,
}

async fn writer(client: Client, cycle: Arc<Cycle>, mut rng: StdRng) {
    let mut value = Vec::new();
    while !cycle.stop.load(Ordering::SeqCst) {
        let p = rng.gen_range(0..PATHS);
        // At least 16 random bytes: every value sent is distinct (the
        // checks map each value's hash to its one write; with a few bytes,
        // two writers could send the same value to different paths).
        value.resize(rng.gen_range(16..=512), 0);
        rng.fill_bytes(&mut value);
        let cas = if rng.gen_bool(0.5) {
            // Most often the current version; sometimes a stale one.
            let latest = cycle.latest[p].load(Ordering::SeqCst);
            Some(latest.saturating_sub(u64::from(rng.gen_bool(0.2))))
        } else {
            None
        };
        let index = {
            let mut w = cycle.writes.lock().unwrap();
            w.push(Write {
                path: p,
                hash: sha(&value),
                cas,
                seen: Seen::InFlight,
            });
            w.len() - 1
        };
        let r = client.put(&path(p), &Secret::new(value.clone()), cas).await;
        let seen = match r {
            Ok(v) => {
                cycle.latest[p].fetch_max(v, Ordering::SeqCst);
                cycle.acks.send_modify(|n| *n += 1);
                Seen::Acked(v)
            }
            Err(GrpcError::Status {
                code: tonic::Code::FailedPrecondition,
                ..
            }) if cas.is_some() => Seen::CasRefused,
            Err(e) => {
                if !cycle.killing.load(Ordering::SeqCst) {
                    cycle.unexpected.lock().unwrap().push(e.to_string());
                }
                Seen::Lost(e.to_string())
            }
        };
        cycle.writes.lock().unwrap()[index].seen = seen;
    }
}

/// What the run knows for sure, across cycles.
#[derive(Default)]
struct Known {
    /// Per path, version → value hash of every write known to be durable
    /// (acknowledged, or found after a restart).
    durable: Vec<BTreeMap<u64, Hash>>,
    /// Writes known never to have been made (refused, or in flight and not
    /// found after the restart): they must never appear.
    absent: HashSet<Hash>,
    /// Every hash sent, and its path.
    sent: HashMap<Hash, usize>,
}

#[derive(Default, Debug)]
struct Tally {
    acked: usize,
    cas_refused: usize,
    in_flight_landed: usize,
    in_flight_absent: usize,
    versions_checked: usize,
}

/// Reads every version of every path and checks it against what is known;
/// then settles the outcome of `writes` (the previous cycle's).
async fn check(
    client: &Client,
    operator: &Client,
    known: &mut Known,
    writes: &[Write],
    tally: &mut Tally,
    cycle: usize,
) {
    // The audit trail's successful puts, read before this check adds its
    // own records: every put is committed with its record.
    let audited: HashSet<(String, u64)> = operator
        .audit_tail(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.entry.operation == "put" && r.entry.outcome == "ok")
        .filter_map(|r| Some((r.entry.path, r.entry.version?)))
        .collect();
    assert!(writes.len() < 5_000, "the audit tail covers the last cycle");
    // hash → (path, version) of every readable version.
    let mut found: HashMap<Hash, (usize, u64)> = HashMap::new();
    let mut oldest = [0u64; PATHS];
    for (p, oldest) in oldest.iter_mut().enumerate() {
        let md = client.metadata(&path(p)).await.unwrap();
        assert_eq!(md.max_versions, MAX_VERSIONS, "cycle {cycle}");
        let numbers: Vec<u64> = md.versions.iter().map(|v| v.version).collect();
        let expected: Vec<u64> = (md.oldest_version..=md.current_version).collect();
        assert_eq!(
            numbers, expected,
            "cycle {cycle}: path {p}: versions are not contiguous up to the current one"
        );
        *oldest = md.oldest_version;
        for v in &md.versions {
            if v.destroyed || v.deleted_at.is_some() {
                continue;
            }
            let got = client
                .get(&path(p), Some(v.version))
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "cycle {cycle}: path {p} version {}: a partial version: {e}",
                        v.version
                    )
                });
            assert_eq!(got.version, v.version);
            let h = sha(got.value.expose());
            tally.versions_checked += 1;
            assert_eq!(
                known.sent.get(&h),
                Some(&p),
                "cycle {cycle}: path {p} version {} holds a value no writer sent to it",
                v.version
            );
            assert!(
                !known.absent.contains(&h),
                "cycle {cycle}: path {p} version {} holds a write known absent (refused, or \
                 lost and absent after an earlier restart): {}",
                v.version,
                short(&h)
            );
            if let Some(prev) = found.insert(h, (p, v.version)) {
                panic!(
                    "cycle {cycle}: one write landed twice: path {p} versions {} and {}",
                    prev.1, v.version
                );
            }
        }
    }
    // Every write known durable is still there, unchanged.
    for (p, versions) in known.durable.iter().enumerate() {
        for (&v, h) in versions {
            if v < oldest[p] {
                continue; // pruned by max_versions, as documented
            }
            assert_eq!(
                found.get(h),
                Some(&(p, v)),
                "cycle {cycle}: path {p} version {v}: a durable write ({}) is missing or changed",
                short(h)
            );
        }
    }
    // Settle the previous cycle's writes.
    for w in writes {
        match &w.seen {
            Seen::Acked(v) => {
                tally.acked += 1;
                assert_eq!(
                    found.get(&w.hash),
                    Some(&(w.path, *v)),
                    "cycle {cycle}: an acknowledged write (path {} version {v}, {}) is lost",
                    w.path,
                    short(&w.hash)
                );
                known.durable[w.path].insert(*v, w.hash);
                assert!(
                    audited.contains(&(path(w.path).to_string(), *v)),
                    "cycle {cycle}: the acknowledged put of path {} version {v} is not in the \
                     audit trail",
                    w.path
                );
            }
            Seen::CasRefused => {
                tally.cas_refused += 1;
                assert!(
                    !found.contains_key(&w.hash),
                    "cycle {cycle}: a write refused by check-and-set (cas {:?}) is there",
                    w.cas
                );
                known.absent.insert(w.hash);
            }
            Seen::InFlight | Seen::Lost(_) => match found.get(&w.hash) {
                Some(&(p, v)) => {
                    assert_eq!(p, w.path);
                    if let Some(cas) = w.cas {
                        assert_eq!(
                            v,
                            cas + 1,
                            "cycle {cycle}: a check-and-set write (cas {cas}) landed at version {v}"
                        );
                    }
                    tally.in_flight_landed += 1;
                    assert!(
                        audited.contains(&(path(p).to_string(), v)),
                        "cycle {cycle}: an unanswered put that landed (path {} version {v}) is \
                         not in the audit trail",
                        w.path
                    );
                    known.durable[p].insert(v, w.hash);
                }
                None => {
                    tally.in_flight_absent += 1;
                    known.absent.insert(w.hash);
                }
            },
        }
    }
    // Acknowledged check-and-set writes landed right after the version they
    // named.
    for w in writes {
        if let (Seen::Acked(v), Some(cas)) = (&w.seen, w.cas) {
            assert_eq!(*v, cas + 1, "cycle {cycle}: check-and-set write");
        }
    }
    match operator.verify_audit().await.unwrap() {
        Ok(records) => assert!(records > 0),
        Err(problem) => panic!("cycle {cycle}: the audit chain is broken: {problem}"),
    }
}

fn seed() -> u64 {
    match std::env::var("TV_CRASH_SEED") {
        Ok(s) => s.trim().parse().expect("TV_CRASH_SEED is a u64"),
        Err(_) => rand::random(),
    }
}

fn cycles() -> usize {
    match std::env::var("TV_CRASH_CYCLES") {
        Ok(s) => s.trim().parse().expect("TV_CRASH_CYCLES is a number"),
        Err(_) => 4,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    crash_suite("sqlite", None).await;
}

/// The same on PostgreSQL: the server's transactions die with its
/// connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_on_postgres() {
    let url = pg_harness::PgCluster::shared().fresh_database();
    crash_suite("postgres", Some(url)).await;
}

async fn crash_suite(backend: &str, storage: Option<String>) {
    let seed = seed();
    let cycles = cycles();
    println!(
        "crash ({backend}): seed {seed}, {cycles} cycles (TV_CRASH_SEED={seed} replays the values and kill times)"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let env = CliEnv::new(storage);
    let started = Instant::now();
    env.init_with_key_file();
    env.ok(&["tenant", "create", "acme"]);
    // The checks read every version after each restart: no rate limit.
    env.ok(&["tenant", "limits", "acme", "--rate", "1000000"]);
    let token = env.ok(&["token", "issue", "--tenant", "acme", "--role", "user"]);
    let token = token.trim().to_owned();
    let operator = env.ok(&["token", "issue", "--operator"]).trim().to_owned();

    let mut known = Known {
        durable: vec![BTreeMap::new(); PATHS],
        ..Default::default()
    };
    for p in 0..PATHS {
        let mut value = vec![0u8; 64];
        rng.fill_bytes(&mut value);
        let file = env.dir.path().join("first-value");
        std::fs::write(&file, &value).unwrap();
        let ps = path(p).to_string();
        env.ok(&["put", &ps, "--from-file", file.to_str().unwrap()]);
        env.ok(&["metadata", &ps, "--max-versions", &MAX_VERSIONS.to_string()]);
        known.sent.insert(sha(&value), p);
        known.durable[p].insert(1, sha(&value));
    }

    let mut tally = Tally::default();
    let mut previous: Vec<Write> = Vec::new();
    let mut last_records = 0;
    for cycle in 0..=cycles {
        let mut server = env.serve(&cycle.to_string());
        let client = server.client(&token).await;
        let op = server.client(&operator).await;
        check(&client, &op, &mut known, &previous, &mut tally, cycle).await;
        if cycle == cycles {
            last_records = op.verify_audit().await.unwrap().unwrap();
            break;
        }

        // Writers, then a kill at a random moment after the first ack.
        let (acks, mut acked) = watch::channel(0u64);
        let state = Arc::new(Cycle {
            writes: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            killing: AtomicBool::new(false),
            latest: (0..PATHS)
                .map(|p| {
                    AtomicU64::new(
                        known.durable[p]
                            .keys()
                            .next_back()
                            .copied()
                            .unwrap_or_default(),
                    )
                })
                .collect(),
            acks,
            unexpected: Mutex::new(Vec::new()),
        });
        let mut tasks = Vec::new();
        for _ in 0..WRITERS {
            let c = server.client(&token).await;
            let r = StdRng::seed_from_u64(rng.next_u64());
            tasks.push(tokio::spawn(writer(c, state.clone(), r)));
        }
        let delay = Duration::from_millis(rng.gen_range(0..=MAX_KILL_DELAY_MS));
        tokio::time::timeout(Duration::from_secs(60), acked.wait_for(|n| *n > 0))
            .await
            .unwrap_or_else(|_| panic!("cycle {cycle}: no write acknowledged: {}", server.log()))
            .unwrap();
        tokio::time::sleep(delay).await;
        state.stop.store(true, Ordering::SeqCst);
        state.killing.store(true, Ordering::SeqCst);
        server.kill();
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("a writer ends once the server is gone")
                .unwrap();
        }
        let unexpected = state.unexpected.lock().unwrap().clone();
        assert!(
            unexpected.is_empty(),
            "cycle {cycle}: errors while the server was up: {unexpected:?}"
        );
        previous = std::mem::take(&mut *state.writes.lock().unwrap());
        for w in &previous {
            known.sent.insert(w.hash, w.path);
        }
        let lost = previous
            .iter()
            .filter(|w| !matches!(w.seen, Seen::Acked(_) | Seen::CasRefused))
            .count();
        println!(
            "crash: cycle {cycle}: killed {} ms after the first ack, {} writes sent, {lost} without an answer",
            delay.as_millis(),
            previous.len()
        );
    }

    // Offline, with the server gone: the command line's own check.
    let out = env.ok(&["audit", "verify"]);
    println!("crash ({backend}): offline `audit verify`: {}", out.trim());
    println!(
        "crash ({backend}): seed {seed}: {cycles} SIGKILL cycles in {:.1} s: {} writes acknowledged, {} refused by \
         check-and-set, in flight at the kill: {} landed whole, each with its audit record, {} absent; \
         {} version reads checked; audit chain intact ({last_records} records)",
        started.elapsed().as_secs_f64(),
        tally.acked,
        tally.cas_refused,
        tally.in_flight_landed,
        tally.in_flight_absent,
        tally.versions_checked
    );
    assert!(tally.acked > 0);
}
