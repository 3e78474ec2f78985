//! Linearizability of put-with-CAS, get and delete on hot paths.
//!
//! Concurrent clients, each on its own connection to an in-process Secret MCP
//! server, run a random mix of `Put` (with and without check-and-set), `Get`
//! and `Delete` (of the current version) on two hot paths, recording every
//! operation's invocation and response times (one monotonic clock) and its
//! result. Paths are independent, so each path's history is checked on its
//! own against a sequential model of one secret's versions
//! (`docs/VAULT.md`, "Versions"):
//!
//! - `put(value, cas)`: with `cas = Some(n)` and a current version other than
//!   `n`, a check-and-set conflict and no change; else a new version
//!   `current + 1` (the current version counts even when it is deleted);
//! - `get()`: the current (highest) version and its value, or not found when
//!   there is none or it is soft-deleted;
//! - `delete()`: soft-deletes the current version and returns it (again for
//!   one already deleted), or not found when there is none.
//!
//! The checker is the Wing & Gong search with Lowe's memoization of
//! (linearized set, model state): an operation may come next if no other
//! pending operation returned before it was invoked. An operation whose
//! outcome is unknown (a timeout, a transport error) may take effect at any
//! time after its invocation, or never, with any result.
//!
//! The unit tests at the bottom prove that the checker rejects
//! non-linearizable histories as well as accepting linearizable ones.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use secret_mcp_grpc::{Client, ClientOptions, Error as GrpcError, Server, ServerOptions};
use tenant_vault::{
    LimitChange, Role, ScopeKind, Secret, SecretPath, Slug, SqliteStore, TokenSpec, Unlock, Vault,
    VaultOptions, create_key_file,
};

// ------------------------------------------------------------------ model

/// What an operation asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    /// Writes `value` (a unique id), with check-and-set when `cas` is set.
    Put { value: u64, cas: Option<u64> },
    /// Reads the current version.
    Get,
    /// Soft-deletes the current version.
    Delete,
}

/// What it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Output {
    /// Put: the version written.
    Written(u64),
    /// Put: check-and-set conflict.
    CasConflict,
    /// Get: the version and its value id.
    Read(u64, u64),
    /// Delete: the versions deleted.
    Deleted(Vec<u64>),
    /// Get or delete: no secret, or its current version is deleted.
    NotFound,
    /// No answer (timeout, transport error): may or may not have happened.
    Unknown,
}

/// One operation of a history; times in nanoseconds on one monotonic clock.
#[derive(Debug, Clone)]
struct Op {
    client: usize,
    call: u64,
    /// `None`: no answer; the operation may take effect at any time after
    /// `call`, or never.
    ret: Option<u64>,
    input: Input,
    output: Output,
}

/// One secret: its versions' value ids and soft-deletion flags, oldest first
/// (version `i + 1` at index `i`).
type State = Vec<(u64, bool)>;

/// Applies `input` to `state`; `None` if the result cannot be `output`.
fn step(state: &State, input: Input, output: &Output) -> Option<State> {
    let current = state.len() as u64;
    let (expected, next) = match input {
        Input::Put { value, cas } => match cas {
            Some(n) if n != current => (Output::CasConflict, None),
            _ => {
                let mut s = state.clone();
                s.push((value, false));
                (Output::Written(current + 1), Some(s))
            }
        },
        Input::Get => match state.last() {
            Some(&(value, false)) => (Output::Read(current, value), None),
            _ => (Output::NotFound, None),
        },
        Input::Delete => match state.last() {
            None => (Output::NotFound, None),
            Some(_) => {
                let mut s = state.clone();
                if let Some(last) = s.last_mut() {
                    last.1 = true;
                }
                (Output::Deleted(vec![current]), Some(s))
            }
        },
    };
    if *output == Output::Unknown || *output == expected {
        Some(next.unwrap_or_else(|| state.clone()))
    } else {
        None
    }
}

// ---------------------------------------------------------------- checker

/// The result of checking one history.
#[derive(Debug)]
struct Verdict {
    /// A linearization (indices into the history), if there is one.
    order: Option<Vec<usize>>,
    /// Search states explored.
    explored: usize,
}

struct Search<'a> {
    ops: &'a [Op],
    /// Indices sorted by invocation time.
    by_call: Vec<usize>,
    done: Vec<u64>,
    definite_left: usize,
    order: Vec<usize>,
    memo: HashSet<(Vec<u64>, State)>,
}

impl Search<'_> {
    fn is_done(&self, i: usize) -> bool {
        self.done[i / 64] & (1 << (i % 64)) != 0
    }

    fn flip(&mut self, i: usize) {
        self.done[i / 64] ^= 1 << (i % 64);
    }

    fn run(&mut self, state: &State) -> bool {
        if self.definite_left == 0 {
            return true;
        }
        if !self.memo.insert((self.done.clone(), state.clone())) {
            return false;
        }
        // An operation can come next only if no pending operation returned
        // before it was invoked.
        let min_ret = (0..self.ops.len())
            .filter(|&i| !self.is_done(i))
            .filter_map(|i| self.ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        for k in 0..self.by_call.len() {
            let i = self.by_call[k];
            let op = &self.ops[i];
            if op.call > min_ret {
                break;
            }
            if self.is_done(i) {
                continue;
            }
            let Some(next) = step(state, op.input, &op.output) else {
                continue;
            };
            let definite = op.ret.is_some();
            self.flip(i);
            self.order.push(i);
            if definite {
                self.definite_left -= 1;
            }
            if self.run(&next) {
                return true;
            }
            if definite {
                self.definite_left += 1;
            }
            self.order.pop();
            self.flip(i);
        }
        false
    }
}

/// Wing & Gong's search with memoization, for one path's history.
fn check(ops: &[Op]) -> Verdict {
    let mut by_call: Vec<usize> = (0..ops.len()).collect();
    by_call.sort_by_key(|&i| ops[i].call);
    let mut s = Search {
        ops,
        by_call,
        done: vec![0; ops.len().div_ceil(64)],
        definite_left: ops.iter().filter(|o| o.ret.is_some()).count(),
        order: Vec::new(),
        memo: HashSet::new(),
    };
    let ok = s.run(&Vec::new());
    Verdict {
        order: ok.then_some(s.order),
        explored: s.memo.len(),
    }
}

/// A history, one operation a line, for a failure message (value ids only).
fn describe(ops: &[Op]) -> String {
    let t0 = ops.iter().map(|o| o.call).min().unwrap_or(0);
    let mut idx: Vec<usize> = (0..ops.len()).collect();
    idx.sort_by_key(|&i| ops[i].call);
    idx.iter()
        .map(|&i| {
            let o = &ops[i];
            let ret = o
                .ret
                .map_or_else(|| "?".to_owned(), |r| format!("{}", (r - t0) / 1000));
            format!(
                "  #{i} client {} [{} µs, {ret} µs] {:?} -> {:?}\n",
                o.client,
                (o.call - t0) / 1000,
                o.input,
                o.output
            )
        })
        .collect()
}

// ------------------------------------------------------------- live test

const CLIENTS: usize = 5;
const HOT_PATHS: usize = 2;

fn seed() -> u64 {
    match std::env::var("TV_LIN_SEED") {
        Ok(s) => s.trim().parse().expect("TV_LIN_SEED is a u64"),
        Err(_) => rand::random(),
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).map_or(default, |s| {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} is a number"))
    })
}

fn value_bytes(id: u64) -> Vec<u8> {
    format!("lin-value-{id:016x}").into_bytes()
}

fn value_id(bytes: &[u8]) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.strip_prefix("lin-value-"))
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        // A value no client wrote: the model can never read it.
        .unwrap_or(u64::MAX)
}

/// One client's run: `ops` random operations on `paths`; its history, per
/// path index.
async fn client_run(
    id: usize,
    client: Client,
    paths: Arc<Vec<SecretPath>>,
    ops: usize,
    t0: Instant,
    mut rng: StdRng,
) -> Vec<(usize, Op)> {
    let now = || t0.elapsed().as_nanos() as u64;
    // The last version this client saw of each path: its CAS guess.
    let mut seen = vec![0u64; paths.len()];
    let mut history = Vec::with_capacity(ops);
    for n in 0..ops {
        let p = rng.gen_range(0..paths.len());
        let path = &paths[p];
        let roll = rng.gen_range(0..100);
        let input = if roll < 50 {
            let cas = match rng.gen_range(0..10) {
                0..=6 => Some(seen[p]),
                7 => Some(seen[p] + 1),
                _ => None,
            };
            Input::Put {
                value: ((id as u64) << 32) | n as u64,
                cas,
            }
        } else if roll < 85 {
            Input::Get
        } else {
            Input::Delete
        };
        let call = now();
        let output = match input {
            Input::Put { value, cas } => {
                match client
                    .put(path, &Secret::new(value_bytes(value)), cas)
                    .await
                {
                    Ok(v) => Output::Written(v),
                    Err(e) => status(&e, tonic::Code::FailedPrecondition, Output::CasConflict),
                }
            }
            Input::Get => match client.get(path, None).await {
                Ok(v) => Output::Read(v.version, value_id(v.value.expose())),
                Err(e) => status(&e, tonic::Code::NotFound, Output::NotFound),
            },
            Input::Delete => match client.delete(path, &[]).await {
                Ok(vs) => Output::Deleted(vs),
                Err(e) => status(&e, tonic::Code::NotFound, Output::NotFound),
            },
        };
        let ret = now();
        match &output {
            Output::Written(v) | Output::Read(v, _) => seen[p] = *v,
            Output::Deleted(vs) => seen[p] = vs.iter().copied().max().unwrap_or(seen[p]),
            _ => {}
        }
        history.push((
            p,
            Op {
                client: id,
                call,
                ret: (output != Output::Unknown).then_some(ret),
                input,
                output,
            },
        ));
    }
    history
}

fn outcome_name(o: &Output) -> &'static str {
    match o {
        Output::Written(_) => "written",
        Output::CasConflict => "cas-conflict",
        Output::Read(..) => "read",
        Output::Deleted(_) => "deleted",
        Output::NotFound => "not-found",
        Output::Unknown => "unknown",
    }
}

/// `expected` for an error with `code`; anything else is an unknown outcome.
fn status(e: &GrpcError, code: tonic::Code, expected: Output) -> Output {
    match e {
        GrpcError::Status { code: c, .. } if *c == code => expected,
        _ => {
            eprintln!("linearizability: unknown outcome: {e}");
            Output::Unknown
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_get_delete_are_linearizable() {
    let seed = seed();
    let rounds = env_usize("TV_LIN_ROUNDS", 4);
    let per_client = env_usize("TV_LIN_OPS", 100);
    println!(
        "linearizability: seed {seed}, {rounds} rounds of {CLIENTS} clients x {per_client} ops on \
         {HOT_PATHS} paths (TV_LIN_SEED={seed} replays the choices)"
    );
    let mut rng = StdRng::seed_from_u64(seed);

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("vault.key");
    create_key_file(&key).unwrap();
    let vault = Arc::new(
        Vault::init(
            SqliteStore::open(dir.path().join("vault.db")).unwrap(),
            &Unlock::KeyFile(key),
            VaultOptions::default(),
        )
        .unwrap(),
    );
    let slug = Slug::parse("acme").unwrap();
    let root = vault.root_session();
    root.create_scope(&slug, ScopeKind::Enterprise).unwrap();
    root.set_limits(
        &slug,
        &LimitChange {
            rate_per_sec: Some(1e9),
            ..Default::default()
        },
    )
    .unwrap();
    let token = root
        .issue_token(&TokenSpec {
            tenant: Some(slug),
            role: Some(Role::Manager),
            ..Default::default()
        })
        .unwrap()
        .token;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(Server::new(vault.clone(), ServerOptions::default()).serve(
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(
            Client::connect(
                &addr,
                ClientOptions {
                    token: Some(token.clone()),
                    timeout: Duration::from_secs(20),
                    // One RPC per operation: a retried call is not one
                    // operation of the history.
                    retries: 0,
                    ..Default::default()
                },
            )
            .await
            .unwrap(),
        );
    }

    let t0 = Instant::now();
    let (mut total, mut unknown, mut explored) = (0, 0, 0);
    let mut outcomes: std::collections::BTreeMap<&str, usize> = Default::default();
    let mut corrupted_rejected = 0;
    let mut check_time = Duration::ZERO;
    for round in 0..rounds {
        // Fresh hot paths each round keep each history small.
        let paths: Arc<Vec<SecretPath>> = Arc::new(
            (0..HOT_PATHS)
                .map(|p| SecretPath::parse(&format!("tenant/acme/lin/r{round}/p{p}")).unwrap())
                .collect(),
        );
        let tasks: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(id, c)| {
                let r = StdRng::seed_from_u64(rng.r#gen());
                tokio::spawn(client_run(id, c.clone(), paths.clone(), per_client, t0, r))
            })
            .collect();
        let mut per_path: Vec<Vec<Op>> = vec![Vec::new(); HOT_PATHS];
        for t in tasks {
            for (p, op) in t.await.unwrap() {
                per_path[p].push(op);
            }
        }
        for (p, history) in per_path.iter().enumerate() {
            total += history.len();
            unknown += history.iter().filter(|o| o.ret.is_none()).count();
            let started = Instant::now();
            let v = check(history);
            check_time += started.elapsed();
            explored += v.explored;
            assert!(
                v.order.is_some(),
                "seed {seed}, round {round}, path {p}: the history is not linearizable:\n{}",
                describe(history)
            );
            for o in history {
                *outcomes.entry(outcome_name(&o.output)).or_insert(0) += 1;
            }
            // The same live history with one read changed must be refused:
            // the check is not vacuous on real data.
            if let Some(i) = history
                .iter()
                .position(|o| matches!(o.output, Output::Read(..)))
            {
                let mut bad = history.clone();
                if let Output::Read(v, x) = bad[i].output {
                    bad[i].output = Output::Read(v, x ^ 1);
                }
                assert!(check(&bad).order.is_none(), "a corrupted read was accepted");
                corrupted_rejected += 1;
            }
        }
    }
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    println!(
        "linearizability: seed {seed}: {total} operations checked ({unknown} of unknown outcome), \
         {explored} search states, checker {:.3} s, run {:.1} s; outcomes {outcomes:?}; \
         {corrupted_rejected} live histories with one read corrupted, all rejected",
        check_time.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        unknown * 10 <= total,
        "too many unknown outcomes: {unknown}"
    );
}

// ------------------------------------------------- the checker's own tests

/// An operation from `call` to `ret` (µs), with a definite result.
fn op(client: usize, call: u64, ret: u64, input: Input, output: Output) -> Op {
    Op {
        client,
        call: call * 1000,
        ret: Some(ret * 1000),
        input,
        output,
    }
}

fn put(value: u64, cas: Option<u64>) -> Input {
    Input::Put { value, cas }
}

fn linearizable(ops: &[Op]) -> bool {
    check(ops).order.is_some()
}

#[test]
fn checker_accepts_a_sequential_history() {
    let h = [
        op(0, 0, 1, Input::Get, Output::NotFound),
        op(0, 2, 3, Input::Delete, Output::NotFound),
        op(0, 4, 5, put(10, Some(0)), Output::Written(1)),
        op(0, 6, 7, put(11, Some(0)), Output::CasConflict),
        op(0, 8, 9, Input::Get, Output::Read(1, 10)),
        op(0, 10, 11, put(12, None), Output::Written(2)),
        op(0, 12, 13, Input::Delete, Output::Deleted(vec![2])),
        op(0, 14, 15, Input::Get, Output::NotFound),
        op(0, 16, 17, Input::Delete, Output::Deleted(vec![2])),
        // The deleted current version still counts for check-and-set.
        op(0, 18, 19, put(13, Some(1)), Output::CasConflict),
        op(0, 20, 21, put(13, Some(2)), Output::Written(3)),
        op(0, 22, 23, Input::Get, Output::Read(3, 13)),
    ];
    let v = check(&h);
    assert_eq!(v.order, Some((0..h.len()).collect::<Vec<_>>()));
}

#[test]
fn checker_rejects_a_stale_read() {
    // The put completed before the get began: the get must see it.
    let h = [
        op(0, 0, 1, put(10, Some(0)), Output::Written(1)),
        op(0, 2, 3, put(11, Some(1)), Output::Written(2)),
        op(1, 4, 5, Input::Get, Output::Read(1, 10)),
    ];
    assert!(!linearizable(&h));
    // Overlapping the second put, the same read is fine.
    let h = [
        op(0, 0, 1, put(10, Some(0)), Output::Written(1)),
        op(0, 2, 6, put(11, Some(1)), Output::Written(2)),
        op(1, 4, 5, Input::Get, Output::Read(1, 10)),
    ];
    assert!(linearizable(&h));
}

#[test]
fn checker_rejects_two_winners_of_one_cas() {
    let h = [
        op(0, 0, 10, put(10, Some(0)), Output::Written(1)),
        op(1, 1, 11, put(20, Some(0)), Output::Written(1)),
    ];
    assert!(!linearizable(&h));
    let h = [
        op(0, 0, 10, put(10, Some(0)), Output::Written(1)),
        op(1, 1, 11, put(20, Some(0)), Output::Written(2)),
    ];
    assert!(!linearizable(&h), "the second needed cas 1");
    let h = [
        op(0, 0, 10, put(10, Some(0)), Output::Written(1)),
        op(1, 1, 11, put(20, Some(0)), Output::CasConflict),
        op(2, 2, 12, Input::Get, Output::Read(1, 10)),
    ];
    assert!(linearizable(&h));
}

#[test]
fn checker_rejects_a_lost_update() {
    // Two unconditional puts both answered version 1.
    let h = [
        op(0, 0, 10, put(10, None), Output::Written(1)),
        op(1, 1, 11, put(20, None), Output::Written(1)),
    ];
    assert!(!linearizable(&h));
}

#[test]
fn checker_rejects_a_read_of_a_deleted_version() {
    let h = [
        op(0, 0, 1, put(10, None), Output::Written(1)),
        op(0, 2, 3, Input::Delete, Output::Deleted(vec![1])),
        op(1, 4, 5, Input::Get, Output::Read(1, 10)),
    ];
    assert!(!linearizable(&h));
    let h = [
        op(0, 0, 1, put(10, None), Output::Written(1)),
        op(0, 2, 3, Input::Delete, Output::Deleted(vec![1])),
        op(1, 4, 5, Input::Get, Output::NotFound),
        op(1, 6, 7, put(11, None), Output::Written(2)),
        op(1, 8, 9, Input::Get, Output::Read(2, 11)),
    ];
    assert!(linearizable(&h));
    // Deleting the current version of nothing is not found.
    let h = [op(0, 0, 1, Input::Delete, Output::Deleted(vec![1]))];
    assert!(!linearizable(&h));
}

#[test]
fn checker_finds_an_order_other_than_invocation_order() {
    // Invoked a, b, c; only c, b, a explains the results.
    let h = [
        op(0, 0, 100, put(10, Some(2)), Output::Written(3)),
        op(1, 1, 100, put(20, Some(1)), Output::Written(2)),
        op(2, 2, 100, put(30, Some(0)), Output::Written(1)),
        op(3, 101, 102, Input::Get, Output::Read(3, 10)),
    ];
    assert_eq!(check(&h).order, Some(vec![2, 1, 0, 3]));
}

#[test]
fn checker_rejects_reads_that_disagree_on_the_order() {
    // Two concurrent puts; one reader sees 10 then 20, the other 20 then 10:
    // no single order explains both (versions would also disagree).
    let h = [
        op(0, 0, 100, put(10, None), Output::Written(1)),
        op(1, 0, 100, put(20, None), Output::Written(2)),
        op(2, 10, 20, Input::Get, Output::Read(1, 10)),
        op(2, 30, 40, Input::Get, Output::Read(2, 20)),
        op(3, 10, 20, Input::Get, Output::Read(2, 20)),
        op(3, 30, 40, Input::Get, Output::Read(1, 10)),
    ];
    assert!(!linearizable(&h));
}

#[test]
fn checker_treats_unknown_outcomes_as_maybe() {
    let unknown = |client: usize, call: u64, input: Input| Op {
        client,
        call: call * 1000,
        ret: None,
        input,
        output: Output::Unknown,
    };
    // A timed-out put that someone read later: it took effect.
    let h = [
        unknown(0, 0, put(10, None)),
        op(1, 50, 60, Input::Get, Output::Read(1, 10)),
    ];
    assert!(linearizable(&h));
    // One nobody saw: it may never have happened.
    let h = [
        unknown(0, 0, put(10, None)),
        op(1, 50, 60, Input::Get, Output::NotFound),
        op(1, 70, 80, put(11, Some(0)), Output::Written(1)),
    ];
    assert!(linearizable(&h));
    // But it cannot take effect before it was invoked.
    let h = [
        op(1, 0, 10, Input::Get, Output::Read(1, 10)),
        unknown(0, 20, put(10, None)),
    ];
    assert!(!linearizable(&h));
    // And a value never written cannot be read.
    let h = [
        unknown(0, 0, put(10, None)),
        op(1, 50, 60, Input::Get, Output::Read(1, 99)),
    ];
    assert!(!linearizable(&h));
}

/// Random histories made linearizable by construction are accepted; the
/// same ones with one result changed are mostly rejected.
#[test]
fn checker_on_generated_histories() {
    let mut rng = StdRng::seed_from_u64(9);
    let mut rejected = 0;
    for _ in 0..200 {
        // A sequential run of the model at distinct instants (the
        // linearization points), each operation's interval around its point.
        let mut state = State::new();
        let mut ops = Vec::new();
        for k in 0..30u64 {
            let point = 1000 + 100 * k;
            let input = match rng.gen_range(0..3) {
                0 => put(k, rng.gen_bool(0.7).then(|| rng.gen_range(0..4))),
                1 => Input::Get,
                _ => Input::Delete,
            };
            // The model's own answer.
            let output = [
                Output::CasConflict,
                Output::NotFound,
                Output::Written(state.len() as u64 + 1),
                Output::Deleted(vec![state.len() as u64]),
                state.last().map_or(Output::NotFound, |&(v, _)| {
                    Output::Read(state.len() as u64, v)
                }),
            ]
            .into_iter()
            .find(|o| *o != Output::Unknown && step(&state, input, o).is_some())
            .unwrap();
            state = step(&state, input, &output).unwrap();
            ops.push(op(
                rng.gen_range(0..5),
                point - rng.gen_range(1..250),
                point + rng.gen_range(1..250),
                input,
                output,
            ));
        }
        let v = check(&ops);
        assert!(v.order.is_some(), "{}", describe(&ops));
        // Change one definite result to something else plausible.
        let i = rng.gen_range(0..ops.len());
        ops[i].output = match &ops[i].output {
            Output::Written(v) => Output::Written(v + 1),
            Output::Read(v, x) => Output::Read(*v, x + 1000),
            Output::Deleted(_) | Output::CasConflict => Output::NotFound,
            Output::NotFound => Output::Read(1, 0),
            Output::Unknown => Output::Unknown,
        };
        if !linearizable(&ops) {
            rejected += 1;
        }
    }
    assert!(
        rejected > 150,
        "only {rejected} of 200 corrupted histories rejected"
    );
}
