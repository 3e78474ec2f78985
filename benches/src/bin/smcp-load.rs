//! `smcp-load`: a load generator for the Secret MCP gRPC server.
//!
//! For each concurrency level it runs, in the same process and run:
//! `System.Ping` (authenticates, does nothing: the baseline), `Secrets.Get` of
//! a random 256-byte secret, and `Secrets.Put` of a random 256-byte value.
//! Every call's latency is recorded (microseconds); the table gives calls,
//! throughput, p50, p99 and max, and Get's throughput as a share of Ping's.
//! It also gives this process's CPU time per call over the measured window
//! (server and generator together when the server runs in this process):
//! unlike throughput, that hardly moves with what else the machine runs, and
//! Ping's over Get's is the throughput share to expect when the cores are
//! the limit.
//!
//! By default it starts its own server in-process on `127.0.0.1:0`, over a
//! temporary key-file vault (in `/dev/shm` when it exists) holding tenant
//! `bench` with 1,000 secrets and a tenant token whose rate limit is raised
//! so that the limiter never throttles. The server then shares the machine's
//! cores with the generator. For a fairer split, run the server in its own
//! process (`--serve 127.0.0.1:7700`, which prints the address and a token)
//! and point the generator at it (`--addr ... --token ...`), optionally
//! pinning each to its own core with `taskset`.
//!
//! ```text
//! cargo run --release -p tenant-vault-benches --bin smcp-load -- \
//!     [--addr ADDR --token T] [--duration 5s] [--warmup 1s] \
//!     [--concurrency 1,16,64] [--connections N] [--ops ping,get,put] \
//!     [--secrets 1000] [--tenant bench] [--json FILE] [--parts]
//! ```
//!
//! `--soak` is an open-loop soak instead: requests arrive at a fixed rate
//! (`--rate`, per second) whatever the latency, for `--duration`, each a
//! `Get` (`--read-percent`, default 80) or a `Put` of a random secret of a
//! random one of `--tenants` tenants (default 1,000, each with its own
//! tenant token and `--tenant-secrets` secrets), against a server in this
//! process. Latency is measured from each request's scheduled start, so a
//! stalled server shows in it (no coordinated omission). Every error is
//! counted (the run exits 1 if there is any) and this process's resident
//! memory (VmRSS, server and generator together) is sampled every second:
//!
//! ```text
//! cargo run --release -p tenant-vault-benches --bin smcp-load -- \
//!     --soak --rate 2000 --duration 60s --tenants 1000 [--json FILE]
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, RngCore};
use secret_mcp_grpc::pb::{self, secrets_client::SecretsClient, system_client::SystemClient};
use secret_mcp_grpc::{Server, ServerOptions};
use tenant_vault::{
    LimitChange, Role, ScopeKind, Secret, SecretPath, Slug, SqliteStore, TokenSpec, Unlock, Vault,
    VaultOptions, create_key_file,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

const VALUE_LEN: usize = 256;

const USAGE: &str = "\
smcp-load: Secret MCP gRPC load generator

USAGE:
  smcp-load [OPTIONS]

OPTIONS:
  --addr ADDR[,ADDR]   existing servers (host:port or http://host:port; with
                       several, the connections are spread over them in
                       turn); default: start one in-process on 127.0.0.1:0
  --token T            its tenant token (with --addr)
  --tenant SLUG        the tenant the secrets live in [default: bench]
  --secrets N          secrets to read and write [default: 1000]
  --duration D         measured time per op and level, e.g. 5s, 500ms [default: 5s]
  --warmup D           unmeasured time before each measurement [default: 1s]
  --concurrency LIST   concurrent callers per level [default: 1,16,64]
  --connections N      HTTP/2 connections shared round-robin by the callers
                       (capped at the concurrency) [default: 8]
  --ops LIST           operations, in order per level [default: ping,get,put]
  --json FILE          also write the results as JSON to FILE (`-`: stdout)
  --parts              also time the parts of a Get in-process (no gRPC)
  --serve ADDR         only run a server on ADDR over a fresh bench vault,
                       print its address and token, run until Ctrl-C
  --storage URL        the bench vault's storage (sqlite://PATH or
                       postgres://...) [default: a temporary SQLite file];
                       a storage that already holds a vault is opened with
                       --key-file and served as it is (a second server on
                       one database)
  --key-file FILE      the vault's key file (created when missing)
                       [default: a temporary one]
  --soak               open-loop soak at a fixed rate across many tenants
                       (server in this process; uses --duration,
                       --connections, --json and the options below)
  --rate N             soak: requests per second [default: 2000]
  --tenants N          soak: tenants, each with its own token [default: 1000]
  --tenant-secrets N   soak: secrets per tenant [default: 10]
  --read-percent P     soak: share of Gets, the rest Puts [default: 80]
  --max-in-flight N    soak: requests outstanding before new arrivals are
                       dropped (and counted as errors) [default: 20000]
  -h, --help           this text
";

/// Command-line options.
#[derive(Debug, Clone, PartialEq)]
struct Args {
    addr: Option<String>,
    token: Option<String>,
    tenant: String,
    secrets: usize,
    duration: Duration,
    warmup: Duration,
    concurrency: Vec<usize>,
    connections: usize,
    ops: Vec<Op>,
    json: Option<String>,
    parts: bool,
    serve: Option<String>,
    soak: bool,
    rate: f64,
    tenants: usize,
    tenant_secrets: usize,
    read_percent: u32,
    max_in_flight: usize,
    storage: Option<String>,
    key_file: Option<std::path::PathBuf>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            addr: None,
            token: None,
            tenant: "bench".into(),
            secrets: 1000,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            concurrency: vec![1, 16, 64],
            connections: 8,
            ops: vec![Op::Ping, Op::Get, Op::Put],
            json: None,
            parts: false,
            serve: None,
            soak: false,
            rate: 2000.0,
            tenants: 1000,
            tenant_secrets: 10,
            read_percent: 80,
            storage: None,
            key_file: None,
            max_in_flight: 20_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Ping,
    Get,
    Put,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Ping => "Ping",
            Op::Get => "Get",
            Op::Put => "Put",
        }
    }

    fn parse(s: &str) -> Result<Op, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ping" => Ok(Op::Ping),
            "get" => Ok(Op::Get),
            "put" => Ok(Op::Put),
            other => Err(format!("unknown op `{other}` (ping, get, put)")),
        }
    }
}

/// `5s`, `500ms`, `2m`, `1.5s`; a bare number is seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration `{s}` (e.g. 5s, 500ms)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("bad duration unit in `{s}` (ms, s, m)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration `{s}`"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_list<T>(s: &str, f: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>, String> {
    let v = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(f)
        .collect::<Result<Vec<_>, _>>()?;
    if v.is_empty() {
        return Err(format!("empty list `{s}`"));
    }
    Ok(v)
}

fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("expected a positive number, got `{s}`")),
    }
}

/// Parses the arguments after the program name. `Ok(None)`: `--help`.
fn parse_args(argv: &[String]) -> Result<Option<Args>, String> {
    let mut a = Args::default();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (flag.as_str(), None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "-h" | "--help" => return Ok(None),
            "--addr" => a.addr = Some(value()?),
            "--token" => a.token = Some(value()?),
            "--tenant" => a.tenant = value()?,
            "--secrets" => a.secrets = parse_count(&value()?)?,
            "--duration" => a.duration = parse_duration(&value()?)?,
            "--warmup" => a.warmup = parse_duration(&value()?)?,
            "--concurrency" => a.concurrency = parse_list(&value()?, parse_count)?,
            "--connections" => a.connections = parse_count(&value()?)?,
            "--ops" => a.ops = parse_list(&value()?, Op::parse)?,
            "--json" => a.json = Some(value()?),
            "--parts" => a.parts = true,
            "--serve" => a.serve = Some(value()?),
            "--soak" => a.soak = true,
            "--rate" => a.rate = parse_rate(&value()?)?,
            "--tenants" => a.tenants = parse_count(&value()?)?,
            "--tenant-secrets" => a.tenant_secrets = parse_count(&value()?)?,
            "--read-percent" => a.read_percent = parse_percent(&value()?)?,
            "--max-in-flight" => a.max_in_flight = parse_count(&value()?)?,
            "--storage" => a.storage = Some(value()?),
            "--key-file" => a.key_file = Some(value()?.into()),
            other => return Err(format!("unknown argument `{other}` (see --help)")),
        }
    }
    if a.addr.is_some() != a.token.is_some() {
        return Err("--addr and --token go together".into());
    }
    if a.serve.is_some() && a.addr.is_some() {
        return Err("--serve runs a server; --addr points at one: pick one".into());
    }
    if a.duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    if a.soak && (a.addr.is_some() || a.serve.is_some()) {
        return Err("--soak runs its own server in this process: no --addr or --serve".into());
    }
    Ok(Some(a))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1e7 => Ok(r),
        _ => Err(format!("expected a rate per second above 0, got `{s}`")),
    }
}

fn parse_percent(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(p) if p <= 100 => Ok(p),
        _ => Err(format!("expected a percentage from 0 to 100, got `{s}`")),
    }
}

/// The `p`-th percentile (0 < p ≤ 100) of sorted values, nearest rank.
fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The results of one op at one concurrency level.
#[derive(Debug, Clone)]
struct Measured {
    op: Op,
    concurrency: usize,
    connections: usize,
    calls: u64,
    errors: u64,
    secs: f64,
    p50_us: u32,
    p99_us: u32,
    max_us: u32,
    /// This process's CPU time (user and system, all threads) over the
    /// measured window, per call: the server's and the generator's together
    /// when the server runs in this process. Unlike throughput, it hardly
    /// depends on what else the machine runs.
    cpu_us_per_call: Option<f64>,
}

impl Measured {
    fn throughput(&self) -> f64 {
        self.calls as f64 / self.secs
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "op": self.op.name(),
            "concurrency": self.concurrency,
            "connections": self.connections,
            "calls": self.calls,
            "errors": self.errors,
            "seconds": self.secs,
            "throughput_per_sec": self.throughput(),
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "max_us": self.max_us,
            "process_cpu_us_per_call": self.cpu_us_per_call,
        })
    }
}

/// The bench vault: tenant `slug`, `n` secrets of 256 random bytes, a `user`
/// token whose limits are raised out of the way (`None` when an existing
/// vault was opened: its token is the first server's).
struct Fixture {
    _dir: tempfile::TempDir,
    vault: Arc<Vault>,
    token: Option<String>,
}

fn bench_dir() -> std::io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
}

fn secret_path(tenant: &str, i: usize) -> String {
    format!("tenant/{tenant}/load/secret-{i:04}")
}

fn fixture(
    tenant: &str,
    n: usize,
    storage: Option<&str>,
    key_file: Option<&Path>,
) -> Result<Fixture, Box<dyn std::error::Error>> {
    let dir = bench_dir()?;
    let key = key_file.map_or_else(|| dir.path().join("vault.key"), Path::to_path_buf);
    if !key.exists() {
        create_key_file(&key)?;
    }
    let store = match storage {
        Some(url) => tenant_vault::open_store(url)?,
        None => Box::new(SqliteStore::open(dir.path().join("vault.db"))?),
    };
    if store.root()?.is_some() {
        let vault = Vault::open(store, &Unlock::KeyFile(key), VaultOptions::default())?;
        return Ok(Fixture {
            _dir: dir,
            vault: Arc::new(vault),
            token: None,
        });
    }
    let vault = Arc::new(Vault::init(
        store,
        &Unlock::KeyFile(key),
        VaultOptions::default(),
    )?);
    let slug = Slug::parse(tenant)?;
    let root = vault.root_session();
    root.create_scope(&slug, ScopeKind::Enterprise)?;
    root.set_limits(
        &slug,
        &LimitChange {
            rate_per_sec: Some(1e9),
            max_secrets: Some(1 << 40),
            max_bytes: Some(1 << 50),
            ..Default::default()
        },
    )?;
    let mut rng = rand::thread_rng();
    let mut value = vec![0u8; VALUE_LEN];
    for i in 0..n {
        rng.fill_bytes(&mut value);
        let p = SecretPath::parse(&secret_path(tenant, i))?;
        root.put(&p, &Secret::new(value.clone()), None)?;
    }
    let issued = root.issue_token(&TokenSpec {
        tenant: Some(slug),
        role: Some(Role::User),
        description: "smcp-load".into(),
        ..Default::default()
    })?;
    let token = String::from_utf8(issued.token.expose().to_vec())?;
    vault.flush_audit()?;
    Ok(Fixture {
        _dir: dir,
        vault,
        token: Some(token),
    })
}

/// A server started by [`start_server`]: its address, the sender that stops
/// it, and its thread.
type RunningServer = (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    std::thread::JoinHandle<()>,
);

/// Runs `server` on its own runtime thread pool, so that the generator's
/// tasks and the server's are scheduled separately (they still share the
/// machine's cores). Returns the address and a sender that stops it.
fn start_server(
    vault: Arc<Vault>,
    bind: &str,
) -> Result<RunningServer, Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("smcp-server")
        .build()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(bind))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        let server = Server::new(vault, ServerOptions::default());
        let r = rt.block_on(server.serve(listener, async move {
            let _ = rx.await;
        }));
        if let Err(e) = r {
            eprintln!("smcp-load: server: {e}");
        }
    });
    Ok((addr, tx, handle))
}

struct Target {
    channels: Vec<Channel>,
    auth: MetadataValue<Ascii>,
    tenant: String,
    secrets: usize,
}

/// `n` connections, spread over the comma-separated addresses in turn.
async fn connect(addrs: &str, n: usize) -> Result<Vec<Channel>, Box<dyn std::error::Error>> {
    let urls: Vec<String> = addrs
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(|a| {
            if a.contains("://") {
                a.to_owned()
            } else {
                format!("http://{a}")
            }
        })
        .collect();
    if urls.is_empty() {
        return Err("no server address".into());
    }
    let mut v = Vec::with_capacity(n);
    for i in 0..n.max(urls.len()) {
        // One `connect()` per channel: a separate TCP connection each.
        v.push(
            Endpoint::from_shared(urls[i % urls.len()].clone())?
                .tcp_nodelay(true)
                .connect()
                .await?,
        );
    }
    Ok(v)
}

fn req<T>(msg: T, auth: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert("authorization", auth.clone());
    r
}

/// One call of `op`; `Err` on any failure status.
async fn call(
    op: Op,
    secrets: &mut SecretsClient<Channel>,
    system: &mut SystemClient<Channel>,
    t: &Target,
    rng: &mut rand::rngs::StdRng,
    value: &mut [u8],
) -> Result<(), tonic::Status> {
    match op {
        Op::Ping => {
            system.ping(req(pb::PingRequest {}, &t.auth)).await?;
        }
        Op::Get => {
            let i = rng.gen_range(0..t.secrets);
            let r = secrets
                .get(req(
                    pb::GetRequest {
                        path: secret_path(&t.tenant, i),
                        version: None,
                    },
                    &t.auth,
                ))
                .await?;
            if r.get_ref().value.len() != VALUE_LEN {
                return Err(tonic::Status::data_loss("a value of the wrong size"));
            }
        }
        Op::Put => {
            let i = rng.gen_range(0..t.secrets);
            rng.fill_bytes(value);
            secrets
                .put(req(
                    pb::PutRequest {
                        path: secret_path(&t.tenant, i),
                        value: value.to_vec(),
                        cas: None,
                    },
                    &t.auth,
                ))
                .await?;
        }
    }
    Ok(())
}

/// This process's CPU time so far (user and system, every thread, those that
/// ended included), from `/proc/self/stat` (clock ticks of 1/100 s).
fn process_cpu_secs() -> Option<f64> {
    parse_cpu_secs(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

fn parse_cpu_secs(stat: &str) -> Option<f64> {
    // Fields after the command name (which may hold spaces) start at the
    // state, field 3; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// Runs `op` with `concurrency` callers for `warmup` (unmeasured), then for
/// `duration`, recording every call that starts inside the measured window.
async fn measure(
    t: &Arc<Target>,
    op: Op,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
) -> Measured {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let connections = t.channels.len().min(concurrency);
    let cpu_at_start = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        process_cpu_secs()
    });
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let t = t.clone();
        let channel = t.channels[w % connections].clone();
        tasks.push(tokio::spawn(async move {
            use rand::SeedableRng;
            let mut secrets = SecretsClient::new(channel.clone());
            let mut system = SystemClient::new(channel);
            let mut rng = rand::rngs::StdRng::from_entropy();
            let mut value = vec![0u8; VALUE_LEN];
            let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
            let mut errors = 0u64;
            let mut last_error = None;
            loop {
                let t0 = Instant::now();
                if t0 >= end {
                    break;
                }
                let r = call(op, &mut secrets, &mut system, &t, &mut rng, &mut value).await;
                if t0 >= measure_from {
                    match r {
                        Ok(()) => lat.push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32),
                        Err(e) => {
                            errors += 1;
                            last_error = Some(e);
                        }
                    }
                }
            }
            (lat, errors, last_error)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    let mut last_error = None;
    for task in tasks {
        let (lat, e, le) = task.await.expect("a load task panicked");
        all.extend_from_slice(&lat);
        errors += e;
        if le.is_some() {
            last_error = le;
        }
    }
    if let Some(e) = last_error {
        eprintln!(
            "smcp-load: {} at concurrency {concurrency}: {errors} errors, last: {:?} {}",
            op.name(),
            e.code(),
            e.message()
        );
    }
    // Calls that started in the window and finished after it still count:
    // divide by the time up to the last completion.
    let secs = Instant::now().duration_since(measure_from).as_secs_f64();
    let cpu = match (cpu_at_start.await.ok().flatten(), process_cpu_secs()) {
        (Some(a), Some(b)) if !all.is_empty() => Some((b - a) * 1e6 / all.len() as f64),
        _ => None,
    };
    all.sort_unstable();
    Measured {
        op,
        concurrency,
        connections,
        calls: all.len() as u64,
        errors,
        secs,
        p50_us: percentile(&all, 50.0),
        p99_us: percentile(&all, 99.0),
        max_us: all.last().copied().unwrap_or(0),
        cpu_us_per_call: cpu,
    }
}

fn fmt_us(us: u32) -> String {
    if us >= 10_000 {
        format!("{:.1} ms", f64::from(us) / 1000.0)
    } else if us >= 1000 {
        format!("{:.2} ms", f64::from(us) / 1000.0)
    } else {
        format!("{us} µs")
    }
}

/// Get's throughput over Ping's, per concurrency level, where both ran.
fn ratios(results: &[Measured]) -> Vec<(usize, f64)> {
    let mut out = Vec::new();
    for g in results.iter().filter(|m| m.op == Op::Get) {
        if let Some(p) = results
            .iter()
            .find(|m| m.op == Op::Ping && m.concurrency == g.concurrency)
        {
            out.push((g.concurrency, g.throughput() / p.throughput()));
        }
    }
    out
}

/// Ping's process CPU per call over Get's, per concurrency level, where both
/// ran and were timed.
fn cpu_ratios(results: &[Measured]) -> Vec<(usize, f64)> {
    let mut out = Vec::new();
    for g in results.iter().filter(|m| m.op == Op::Get) {
        if let Some(p) = results
            .iter()
            .find(|m| m.op == Op::Ping && m.concurrency == g.concurrency)
        {
            if let (Some(pc), Some(gc)) = (p.cpu_us_per_call, g.cpu_us_per_call) {
                if gc > 0.0 {
                    out.push((g.concurrency, pc / gc));
                }
            }
        }
    }
    out
}

fn print_table(results: &[Measured]) {
    println!(
        "{:<5} {:>5} {:>5} {:>9} {:>12} {:>9} {:>9} {:>9} {:>6} {:>9}",
        "op", "conc", "conns", "calls", "calls/s", "p50", "p99", "max", "errors", "CPU/call"
    );
    for m in results {
        println!(
            "{:<5} {:>5} {:>5} {:>9} {:>12.0} {:>9} {:>9} {:>9} {:>6} {:>9}",
            m.op.name(),
            m.concurrency,
            m.connections,
            m.calls,
            m.throughput(),
            fmt_us(m.p50_us),
            fmt_us(m.p99_us),
            fmt_us(m.max_us),
            m.errors,
            m.cpu_us_per_call
                .map_or_else(|| "-".to_owned(), |us| format!("{us:.1} µs"))
        );
    }
    for (c, r) in ratios(results) {
        println!(
            "Get/Ping throughput at concurrency {c}: {:.0}% (goal ≥ 50%)",
            r * 100.0
        );
    }
    for (c, r) in cpu_ratios(results) {
        println!(
            "Ping/Get process CPU per call at concurrency {c}: {:.0}% (the throughput share \
             to expect when the cores are the limit)",
            r * 100.0
        );
    }
    if let Some(g) = results
        .iter()
        .find(|m| m.op == Op::Get && m.concurrency == 64)
    {
        println!(
            "Get p99 at concurrency 64: {} (goal < 2 ms)",
            fmt_us(g.p99_us)
        );
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Times the parts of a Get without gRPC, on this process's vault: token
/// authentication, the session's get (policy, rate, read, decrypt, audit),
/// and a `spawn_blocking` round trip of an empty closure alone and with 64
/// of them in flight.
fn time_parts(
    vault: &Arc<Vault>,
    token: &str,
    tenant: &str,
    n: usize,
    rt: &tokio::runtime::Runtime,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    const ITERS: u32 = 50_000;
    let paths: Vec<SecretPath> = (0..n)
        .map(|i| SecretPath::parse(&secret_path(tenant, i)))
        .collect::<Result<_, _>>()?;
    let mut rng = rand::thread_rng();
    let t = Instant::now();
    for _ in 0..ITERS {
        std::hint::black_box(vault.authenticate(token)?);
    }
    let auth_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(ITERS);
    let principal = vault.authenticate(token)?;
    let t = Instant::now();
    for _ in 0..ITERS {
        let s = vault.session(principal.clone());
        std::hint::black_box(s.get(&paths[rng.gen_range(0..n)])?);
    }
    let get_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(ITERS);
    let (blocking_us, blocking64_us) = rt.block_on(async {
        let t = Instant::now();
        for _ in 0..ITERS {
            tokio::task::spawn_blocking(|| std::hint::black_box(1))
                .await
                .ok();
        }
        let one = t.elapsed().as_secs_f64() * 1e6 / f64::from(ITERS);
        let t = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                tokio::spawn(async {
                    for _ in 0..ITERS / 64 {
                        tokio::task::spawn_blocking(|| std::hint::black_box(1))
                            .await
                            .ok();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.ok();
        }
        let many = t.elapsed().as_secs_f64() * 1e6 / f64::from(ITERS / 64 * 64);
        (one, many)
    });
    vault.flush_audit()?;
    println!(
        "parts of a Get, in-process, no gRPC ({ITERS} calls each): authenticate {auth_us:.2} µs; \
         session get (policy, rate, read, decrypt, audit) {get_us:.2} µs; \
         spawn_blocking round trip {blocking_us:.2} µs alone, \
         {blocking64_us:.2} µs per call with 64 callers (wall time / calls)"
    );
    Ok(serde_json::json!({
        "authenticate_us": auth_us,
        "session_get_us": get_us,
        "spawn_blocking_us": blocking_us,
        "spawn_blocking_64_callers_us_per_call": blocking64_us,
    }))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.soak {
        return run_soak(&args);
    }
    // --serve: a server in this process only, for a generator in another.
    if let Some(bind) = &args.serve {
        let fx = fixture(
            &args.tenant,
            args.secrets,
            args.storage.as_deref(),
            args.key_file.as_deref(),
        )?;
        let (addr, stop, handle) = start_server(fx.vault.clone(), bind)?;
        println!("addr={addr}");
        if let Some(token) = &fx.token {
            println!("token={token}");
        }
        println!(
            "serving tenant `{}` with {} secrets; Ctrl-C stops",
            args.tenant, args.secrets
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let _ = tokio::signal::ctrl_c().await;
        });
        let _ = stop.send(());
        let _ = handle.join();
        return Ok(());
    }

    let mut fixture_opt = None;
    let mut server = None;
    let (addr, token, in_process) = match (&args.addr, &args.token) {
        (Some(a), Some(t)) => (a.clone(), t.clone(), false),
        _ => {
            let t = Instant::now();
            let fx = fixture(
                &args.tenant,
                args.secrets,
                args.storage.as_deref(),
                args.key_file.as_deref(),
            )?;
            eprintln!(
                "smcp-load: vault with {} secrets ready in {:.1} s",
                args.secrets,
                t.elapsed().as_secs_f64()
            );
            let (addr, stop, handle) = start_server(fx.vault.clone(), "127.0.0.1:0")?;
            let token = fx
                .token
                .clone()
                .ok_or("--storage holds a vault already: give its server's --addr and --token")?;
            fixture_opt = Some(fx);
            server = Some((stop, handle));
            (addr.to_string(), token, true)
        }
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("smcp-load")
        .build()?;
    let max_conc = args.concurrency.iter().copied().max().unwrap_or(1);
    let channels = rt.block_on(connect(&addr, args.connections.min(max_conc)))?;
    let target = Arc::new(Target {
        channels,
        auth: format!("Bearer {token}").parse()?,
        tenant: args.tenant.clone(),
        secrets: args.secrets,
    });

    // Against another server, make sure the secrets exist.
    if !in_process {
        rt.block_on(seed(&target))?;
    }

    let load_before = load_average();
    eprintln!(
        "smcp-load: {} ({}), server {}, {} connections, {:?} + {:?} warm-up per op and level, load average {}",
        machine(),
        if in_process {
            "server in this process"
        } else {
            "server in another process"
        },
        addr,
        target.channels.len(),
        args.duration,
        args.warmup,
        load_before
    );
    let mut results = Vec::new();
    for &c in &args.concurrency {
        for &op in &args.ops {
            let m = rt.block_on(measure(&target, op, c, args.warmup, args.duration));
            eprintln!(
                "smcp-load: {:<4} c={:<3} {:>9.0} calls/s p50 {} p99 {}",
                op.name(),
                c,
                m.throughput(),
                fmt_us(m.p50_us),
                fmt_us(m.p99_us)
            );
            results.push(m);
        }
    }
    let load_after = load_average();
    print_table(&results);
    println!("load average before {load_before}, after {load_after}");

    let parts = match (&fixture_opt, args.parts) {
        (
            Some(Fixture {
                vault,
                token: Some(token),
                ..
            }),
            true,
        ) => Some(time_parts(vault, token, &args.tenant, args.secrets, &rt)?),
        _ => None,
    };

    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "machine": machine(),
            "server": if in_process { "in-process" } else { "separate process" },
            "addr": addr,
            "connections": target.channels.len(),
            "duration_secs": args.duration.as_secs_f64(),
            "warmup_secs": args.warmup.as_secs_f64(),
            "secrets": args.secrets,
            "value_bytes": VALUE_LEN,
            "load_average_before": load_before,
            "load_average_after": load_after,
            "results": results.iter().map(Measured::json).collect::<Vec<_>>(),
            "get_over_ping": ratios(&results)
                .iter()
                .map(|(c, r)| serde_json::json!({"concurrency": c, "ratio": r}))
                .collect::<Vec<_>>(),
            "ping_over_get_cpu_per_call": cpu_ratios(&results)
                .iter()
                .map(|(c, r)| serde_json::json!({"concurrency": c, "ratio": r}))
                .collect::<Vec<_>>(),
            "parts": parts,
        });
        let line = serde_json::to_string(&doc)?;
        if path == "-" {
            println!("{line}");
        } else {
            std::fs::write(path, line + "\n")?;
        }
    }

    drop(target);
    drop(rt);
    if let Some((stop, handle)) = server {
        let _ = stop.send(());
        let _ = handle.join();
    }
    drop(fixture_opt);
    Ok(())
}

/// Writes every bench secret that a Get of it does not find.
async fn seed(t: &Target) -> Result<(), Box<dyn std::error::Error>> {
    let mut secrets = SecretsClient::new(t.channels[0].clone());
    let mut value = vec![0u8; VALUE_LEN];
    let mut written = 0;
    for i in 0..t.secrets {
        let path = secret_path(&t.tenant, i);
        let got = secrets
            .get(req(
                pb::GetRequest {
                    path: path.clone(),
                    version: None,
                },
                &t.auth,
            ))
            .await;
        match got {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {
                rand::thread_rng().fill_bytes(&mut value);
                secrets
                    .put(req(
                        pb::PutRequest {
                            path,
                            value: value.clone(),
                            cas: None,
                        },
                        &t.auth,
                    ))
                    .await?;
                written += 1;
            }
            Err(s) => return Err(s.into()),
        }
    }
    if written > 0 {
        eprintln!("smcp-load: wrote {written} missing secrets");
    }
    Ok(())
}

// ------------------------------------------------------------------ soak

/// The soak vault: `tenants` tenants `soak-NNNN`, each with `per_tenant`
/// secrets of 256 random bytes and its own `user` token (plan limits left
/// as they are: the enterprise plan's rate is far above a soak's per-tenant
/// rate).
struct SoakFixture {
    _dir: tempfile::TempDir,
    vault: Arc<Vault>,
    tokens: Vec<String>,
}

fn soak_slug(t: usize) -> String {
    format!("soak-{t:04}")
}

fn soak_fixture(
    tenants: usize,
    per_tenant: usize,
) -> Result<SoakFixture, Box<dyn std::error::Error>> {
    let dir = bench_dir()?;
    let key = dir.path().join("vault.key");
    create_key_file(&key)?;
    let vault = Arc::new(Vault::init(
        SqliteStore::open(dir.path().join("vault.db"))?,
        &Unlock::KeyFile(key),
        VaultOptions::default(),
    )?);
    let root = vault.root_session();
    let mut rng = rand::thread_rng();
    let mut value = vec![0u8; VALUE_LEN];
    let mut tokens = Vec::with_capacity(tenants);
    for t in 0..tenants {
        let tenant = soak_slug(t);
        let slug = Slug::parse(&tenant)?;
        root.create_scope(&slug, ScopeKind::Enterprise)?;
        for i in 0..per_tenant {
            rng.fill_bytes(&mut value);
            let p = SecretPath::parse(&secret_path(&tenant, i))?;
            root.put(&p, &Secret::new(value.clone()), None)?;
        }
        let issued = root.issue_token(&TokenSpec {
            tenant: Some(slug),
            role: Some(Role::User),
            description: "smcp-load soak".into(),
            ..Default::default()
        })?;
        tokens.push(String::from_utf8(issued.token.expose().to_vec())?);
    }
    vault.flush_audit()?;
    Ok(SoakFixture {
        _dir: dir,
        vault,
        tokens,
    })
}

/// `VmRSS` of a `/proc/PID/status` text, in KiB.
fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// This process's resident memory, KiB.
fn rss_kib() -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// When the `i`-th request of an open-loop run at `rate` per second is due.
fn arrival(start: Instant, rate: f64, i: u64) -> Instant {
    start + Duration::from_secs_f64(i as f64 / rate)
}

/// One per-second sample of a soak.
#[derive(Debug, Clone, PartialEq)]
struct SoakSample {
    secs: f64,
    rss_kib: Option<u64>,
    completed: u64,
    errors: u64,
}

/// What the soak's requests report, shared by them.
#[derive(Default)]
struct SoakStats {
    get_us: Vec<u32>,
    put_us: Vec<u32>,
    completed: u64,
    errors: BTreeMap<String, u64>,
    error_count: u64,
}

struct SoakTarget {
    channels: Vec<Channel>,
    auths: Vec<MetadataValue<Ascii>>,
    per_tenant: usize,
}

/// The outcome of a soak.
#[derive(Debug)]
struct SoakReport {
    scheduled: u64,
    completed: u64,
    /// Arrivals not sent because `--max-in-flight` were outstanding.
    dropped: u64,
    errors: BTreeMap<String, u64>,
    error_count: u64,
    max_in_flight: usize,
    /// From the first arrival to the last answer.
    secs: f64,
    get_us: Vec<u32>,
    put_us: Vec<u32>,
    samples: Vec<SoakSample>,
}

/// Runs the soak: arrivals every `1/rate` s for `duration`, each on its own
/// task so that a slow answer never delays the next arrival.
async fn soak(
    t: Arc<SoakTarget>,
    rate: f64,
    duration: Duration,
    read_percent: u32,
    max_in_flight: usize,
) -> SoakReport {
    use rand::SeedableRng;
    let stats = Arc::new(std::sync::Mutex::new(SoakStats::default()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let end = start + duration;

    // RSS every second, from before the first arrival until the drain ends.
    let (stop_sampler, mut sampler_stopped) = tokio::sync::oneshot::channel::<()>();
    let sampler = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = &mut sampler_stopped => break,
                }
                let (completed, errors) = {
                    let s = stats.lock().unwrap_or_else(|p| p.into_inner());
                    (s.completed, s.error_count)
                };
                samples.push(SoakSample {
                    secs: start.elapsed().as_secs_f64(),
                    rss_kib: rss_kib(),
                    completed,
                    errors,
                });
            }
            samples
        })
    };

    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut tasks = tokio::task::JoinSet::new();
    let (mut scheduled, mut dropped, mut max_seen) = (0u64, 0u64, 0usize);
    loop {
        let due = arrival(start, rate, scheduled);
        if due >= end {
            break;
        }
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        // Reap what has finished, so the set stays small.
        while tasks.try_join_next().is_some() {}
        scheduled += 1;
        let n = in_flight.load(Ordering::Relaxed);
        max_seen = max_seen.max(n);
        if n >= max_in_flight {
            dropped += 1;
            let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
            s.error_count += 1;
            *s.errors
                .entry("dropped: too many in flight".into())
                .or_insert(0) += 1;
            continue;
        }
        let tenant = rng.gen_range(0..t.auths.len());
        let secret = rng.gen_range(0..t.per_tenant);
        let is_get = rng.gen_range(0..100) < read_percent;
        let value = if is_get {
            Vec::new()
        } else {
            let mut v = vec![0u8; VALUE_LEN];
            rng.fill_bytes(&mut v);
            v
        };
        let channel = t.channels[(scheduled as usize) % t.channels.len()].clone();
        let (t, stats, in_flight) = (t.clone(), stats.clone(), in_flight.clone());
        in_flight.fetch_add(1, Ordering::Relaxed);
        tasks.spawn(async move {
            let path = secret_path(&soak_slug(tenant), secret);
            let auth = &t.auths[tenant];
            let r = if is_get {
                SecretsClient::new(channel)
                    .get(req(
                        pb::GetRequest {
                            path,
                            version: None,
                        },
                        auth,
                    ))
                    .await
                    .and_then(|r| {
                        if r.get_ref().value.len() == VALUE_LEN {
                            Ok(())
                        } else {
                            Err(tonic::Status::data_loss("a value of the wrong size"))
                        }
                    })
            } else {
                SecretsClient::new(channel)
                    .put(req(
                        pb::PutRequest {
                            path,
                            value,
                            cas: None,
                        },
                        auth,
                    ))
                    .await
                    .map(|_| ())
            };
            // From the scheduled start: waiting to be sent counts.
            let us = due.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
            s.completed += 1;
            match r {
                Ok(()) if is_get => s.get_us.push(us),
                Ok(()) => s.put_us.push(us),
                Err(e) => {
                    s.error_count += 1;
                    let key = format!(
                        "{} {:?}: {}",
                        if is_get { "Get" } else { "Put" },
                        e.code(),
                        e.message()
                    );
                    *s.errors.entry(key).or_insert(0) += 1;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let secs = start.elapsed().as_secs_f64();
    let _ = stop_sampler.send(());
    let mut samples = sampler.await.unwrap_or_default();
    let (completed, errors, error_count) = {
        let s = stats.lock().unwrap_or_else(|p| p.into_inner());
        (s.completed, s.errors.clone(), s.error_count)
    };
    samples.push(SoakSample {
        secs,
        rss_kib: rss_kib(),
        completed,
        errors: error_count,
    });
    let mut s = std::mem::take(&mut *stats.lock().unwrap_or_else(|p| p.into_inner()));
    s.get_us.sort_unstable();
    s.put_us.sort_unstable();
    SoakReport {
        scheduled,
        completed,
        dropped,
        errors,
        error_count,
        max_in_flight: max_seen,
        secs,
        get_us: s.get_us,
        put_us: s.put_us,
        samples,
    }
}

/// Start, max (and when), end and the first and last quarters' means of the
/// RSS samples, in MiB.
#[derive(Debug, Clone, PartialEq)]
struct RssSummary {
    start: f64,
    max: f64,
    max_at_secs: f64,
    end: f64,
    first_quarter_mean: f64,
    last_quarter_mean: f64,
}

fn rss_summary(samples: &[SoakSample]) -> Option<RssSummary> {
    let v: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| s.rss_kib.map(|k| (s.secs, k as f64 / 1024.0)))
        .collect();
    let (first, last) = (v.first()?, v.last()?);
    let max = v
        .iter()
        .copied()
        .fold(*first, |m, x| if x.1 > m.1 { x } else { m });
    let q = (v.len() / 4).max(1);
    let mean = |s: &[(f64, f64)]| s.iter().map(|x| x.1).sum::<f64>() / s.len() as f64;
    Some(RssSummary {
        start: first.1,
        max: max.1,
        max_at_secs: max.0,
        end: last.1,
        first_quarter_mean: mean(&v[..q]),
        last_quarter_mean: mean(&v[v.len() - q..]),
    })
}

fn run_soak(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let fx = soak_fixture(args.tenants, args.tenant_secrets)?;
    eprintln!(
        "smcp-load: soak vault with {} tenants x {} secrets and {} tokens ready in {:.1} s",
        args.tenants,
        args.tenant_secrets,
        fx.tokens.len(),
        t.elapsed().as_secs_f64()
    );
    let (addr, stop, handle) = start_server(fx.vault.clone(), "127.0.0.1:0")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("smcp-load")
        .build()?;
    let channels = rt.block_on(connect(&addr.to_string(), args.connections))?;
    let auths = fx
        .tokens
        .iter()
        .map(|t| format!("Bearer {t}").parse())
        .collect::<Result<Vec<MetadataValue<Ascii>>, _>>()?;
    let target = Arc::new(SoakTarget {
        channels,
        auths,
        per_tenant: args.tenant_secrets,
    });
    let load_before = load_average();
    eprintln!(
        "smcp-load: soak on {} (server in this process, {}), {} connections, {}/s for {:?}, \
         {}% Get, load average {load_before}",
        machine(),
        addr,
        target.channels.len(),
        args.rate,
        args.duration,
        args.read_percent
    );
    let r = rt.block_on(soak(
        target.clone(),
        args.rate,
        args.duration,
        args.read_percent,
        args.max_in_flight,
    ));
    let load_after = load_average();
    let mut all: Vec<u32> = r.get_us.iter().chain(&r.put_us).copied().collect();
    all.sort_unstable();
    let rss = rss_summary(&r.samples);

    println!(
        "soak: {} tenants x {} secrets, {}% Get / {}% Put, target {}/s for {:.0} s (open loop), \
         {} connections, server in this process",
        args.tenants,
        args.tenant_secrets,
        args.read_percent,
        100 - args.read_percent,
        args.rate,
        args.duration.as_secs_f64(),
        target.channels.len()
    );
    println!(
        "soak: {} scheduled, {} answered in {:.1} s ({:.0}/s), {} errors ({} dropped), \
         at most {} in flight",
        r.scheduled,
        r.completed,
        r.secs,
        r.completed as f64 / r.secs,
        r.error_count,
        r.dropped,
        r.max_in_flight
    );
    for (what, n) in &r.errors {
        println!("soak: error x{n}: {what}");
    }
    for (name, v) in [("all", &all), ("Get", &r.get_us), ("Put", &r.put_us)] {
        println!(
            "soak: {name:<3} {:>7} calls  p50 {:>9}  p99 {:>9}  max {:>9}",
            v.len(),
            fmt_us(percentile(v, 50.0)),
            fmt_us(percentile(v, 99.0)),
            fmt_us(v.last().copied().unwrap_or(0))
        );
    }
    if let Some(s) = &rss {
        println!(
            "soak: RSS (this process: server and generator) start {:.1} MiB, max {:.1} MiB at \
             {:.0} s, end {:.1} MiB; mean of the first quarter {:.1} MiB, of the last {:.1} MiB",
            s.start, s.max, s.max_at_secs, s.end, s.first_quarter_mean, s.last_quarter_mean
        );
        let series: Vec<String> = r
            .samples
            .iter()
            .filter_map(|s| s.rss_kib.map(|k| format!("{:.0}", k as f64 / 1024.0)))
            .collect();
        println!("soak: RSS MiB every second: {}", series.join(" "));
    }
    println!("soak: load average before {load_before}, after {load_after}");

    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "mode": "soak",
            "machine": machine(),
            "server": "in-process",
            "rate_per_sec": args.rate,
            "duration_secs": args.duration.as_secs_f64(),
            "tenants": args.tenants,
            "secrets_per_tenant": args.tenant_secrets,
            "read_percent": args.read_percent,
            "connections": target.channels.len(),
            "value_bytes": VALUE_LEN,
            "scheduled": r.scheduled,
            "completed": r.completed,
            "seconds": r.secs,
            "errors": r.error_count,
            "dropped": r.dropped,
            "error_kinds": r.errors,
            "max_in_flight": r.max_in_flight,
            "p50_us": percentile(&all, 50.0),
            "p99_us": percentile(&all, 99.0),
            "max_us": all.last().copied().unwrap_or(0),
            "get": {"calls": r.get_us.len(), "p50_us": percentile(&r.get_us, 50.0),
                    "p99_us": percentile(&r.get_us, 99.0)},
            "put": {"calls": r.put_us.len(), "p50_us": percentile(&r.put_us, 50.0),
                    "p99_us": percentile(&r.put_us, 99.0)},
            "rss_mib": rss.as_ref().map(|s| serde_json::json!({
                "start": s.start, "max": s.max, "max_at_secs": s.max_at_secs, "end": s.end,
                "first_quarter_mean": s.first_quarter_mean,
                "last_quarter_mean": s.last_quarter_mean,
            })),
            "samples": r.samples.iter().map(|s| serde_json::json!({
                "secs": s.secs, "rss_kib": s.rss_kib, "completed": s.completed, "errors": s.errors,
            })).collect::<Vec<_>>(),
            "load_average_before": load_before,
            "load_average_after": load_after,
        });
        let line = serde_json::to_string(&doc)?;
        if path == "-" {
            println!("{line}");
        } else {
            std::fs::write(path, line + "\n")?;
        }
    }

    drop(target);
    drop(rt);
    let _ = stop.send(());
    let _ = handle.join();
    drop(fx);
    if r.error_count > 0 {
        return Err(format!("soak: {} errors", r.error_count).into());
    }
    Ok(())
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return;
        }
        Err(e) => {
            eprintln!("smcp-load: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("smcp-load: {e}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Option<Args>, String> {
        let v: Vec<String> = s.split_whitespace().map(str::to_owned).collect();
        parse_args(&v)
    }

    #[test]
    fn defaults() {
        assert_eq!(args("").unwrap().unwrap(), Args::default());
        assert_eq!(args("--help").unwrap(), None);
    }

    #[test]
    fn flags() {
        let a = args(
            "--addr 127.0.0.1:7700 --token t --duration 500ms --warmup=2 \
             --concurrency 1,8 --connections 4 --ops get,PING --json out.json --parts",
        )
        .unwrap()
        .unwrap();
        assert_eq!(a.addr.as_deref(), Some("127.0.0.1:7700"));
        assert_eq!(a.token.as_deref(), Some("t"));
        assert_eq!(a.duration, Duration::from_millis(500));
        assert_eq!(a.warmup, Duration::from_secs(2));
        assert_eq!(a.concurrency, vec![1, 8]);
        assert_eq!(a.connections, 4);
        assert_eq!(a.ops, vec![Op::Get, Op::Ping]);
        assert_eq!(a.json.as_deref(), Some("out.json"));
        assert!(a.parts);
    }

    #[test]
    fn bad_flags() {
        assert!(args("--addr x").is_err(), "--addr without --token");
        assert!(args("--concurrency 0").is_err());
        assert!(args("--concurrency").is_err());
        assert!(args("--ops get,post").is_err());
        assert!(args("--duration 5h").is_err());
        assert!(args("--duration 0s").is_err());
        assert!(args("--bogus").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn percentiles() {
        assert_eq!(percentile(&[], 99.0), 0);
        assert_eq!(percentile(&[7], 50.0), 7);
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 99.0), 990);
        assert_eq!(percentile(&[1, 2, 3], 99.0), 3);
    }

    #[test]
    fn soak_flags() {
        let a = args("--soak --rate 2000 --duration 60s --tenants 1000 --read-percent 80")
            .unwrap()
            .unwrap();
        assert!(a.soak);
        assert_eq!(a.rate, 2000.0);
        assert_eq!(a.tenants, 1000);
        assert_eq!(a.read_percent, 80);
        assert_eq!(a.duration, Duration::from_secs(60));
        let a = args("--soak --tenant-secrets 3 --max-in-flight 50 --rate=0.5")
            .unwrap()
            .unwrap();
        assert_eq!((a.tenant_secrets, a.max_in_flight, a.rate), (3, 50, 0.5));
        assert!(args("--soak --rate 0").is_err());
        assert!(args("--soak --rate -5").is_err());
        assert!(args("--soak --rate fast").is_err());
        assert!(args("--soak --read-percent 101").is_err());
        assert!(args("--soak --tenants 0").is_err());
        assert!(args("--soak --addr a --token t").is_err());
        assert!(args("--soak --serve 127.0.0.1:0").is_err());
    }

    #[test]
    fn arrivals_are_evenly_spaced() {
        let start = Instant::now();
        assert_eq!(arrival(start, 2000.0, 0), start);
        assert_eq!(
            arrival(start, 2000.0, 1) - start,
            Duration::from_micros(500)
        );
        assert_eq!(
            arrival(start, 2000.0, 120_000) - start,
            Duration::from_secs(60)
        );
        assert_eq!(arrival(start, 0.5, 3) - start, Duration::from_secs(6));
    }

    #[test]
    fn vm_rss() {
        let status = "Name:\tsmcp-load\nVmPeak:\t  200000 kB\nVmRSS:\t   51234 kB\nThreads:\t9\n";
        assert_eq!(parse_vm_rss(status), Some(51234));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(
            rss_kib().is_some_and(|k| k > 0),
            "/proc/self/status has VmRSS"
        );
    }

    #[test]
    fn rss_series_summary() {
        let s = |secs: f64, mib: u64| SoakSample {
            secs,
            rss_kib: Some(mib * 1024),
            completed: 0,
            errors: 0,
        };
        let samples = [s(0.0, 40), s(1.0, 60), s(2.0, 70), s(3.0, 64), s(4.0, 66)];
        let r = rss_summary(&samples).unwrap();
        assert_eq!(
            (r.start, r.max, r.max_at_secs, r.end),
            (40.0, 70.0, 2.0, 66.0)
        );
        assert_eq!((r.first_quarter_mean, r.last_quarter_mean), (40.0, 66.0));
        assert_eq!(rss_summary(&[]), None);
    }

    /// A short soak, end to end: a handful of tenants, no errors.
    #[test]
    fn short_soak_has_no_errors() {
        let fx = soak_fixture(3, 2).unwrap();
        let (addr, stop, handle) = start_server(fx.vault.clone(), "127.0.0.1:0").unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let channels = rt.block_on(connect(&addr.to_string(), 2)).unwrap();
        let auths = fx
            .tokens
            .iter()
            .map(|t| format!("Bearer {t}").parse().unwrap())
            .collect();
        let t = Arc::new(SoakTarget {
            channels,
            auths,
            per_tenant: 2,
        });
        let r = rt.block_on(soak(t, 200.0, Duration::from_millis(500), 50, 1000));
        assert_eq!(r.scheduled, 100);
        assert_eq!(r.completed, 100);
        assert_eq!(r.error_count, 0, "{:?}", r.errors);
        assert_eq!(r.get_us.len() + r.put_us.len(), 100);
        assert!(
            r.samples.len() >= 2,
            "a sample at the start and one at the end"
        );
        drop(rt);
        let _ = stop.send(());
        handle.join().unwrap();
    }

    #[test]
    fn get_over_ping() {
        let m = |op, concurrency, calls| Measured {
            op,
            concurrency,
            connections: 1,
            calls,
            errors: 0,
            secs: 1.0,
            p50_us: 0,
            p99_us: 0,
            max_us: 0,
            cpu_us_per_call: Some(1e6 / calls as f64),
        };
        let r = ratios(&[m(Op::Ping, 1, 1000), m(Op::Get, 1, 600), m(Op::Get, 16, 5)]);
        assert_eq!(r, vec![(1, 0.6)]);
        let r = cpu_ratios(&[m(Op::Ping, 1, 1000), m(Op::Get, 1, 600), m(Op::Get, 16, 5)]);
        assert_eq!(r.len(), 1);
        assert!((r[0].1 - 0.6).abs() < 1e-9);
    }

    #[test]
    fn cpu_from_proc_stat() {
        let stat = "1234 (smcp load) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0";
        assert_eq!(parse_cpu_secs(stat), Some(3.0));
        assert_eq!(parse_cpu_secs("garbage"), None);
        assert!(process_cpu_secs().is_some());
    }
}
