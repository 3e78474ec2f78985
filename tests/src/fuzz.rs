//! The check logic of the `cargo fuzz` targets under `fuzz/`, in one place.
//!
//! Each function takes the raw fuzzer input, feeds it to one parser or
//! service, and panics when an oracle fails (a panic is what libFuzzer reports
//! as a crash). The fuzz targets call these functions, and the normal suite
//! (`tests/tests/fuzz_regressions.rs`) replays the committed seeds and every
//! regression input through the very same functions.
//!
//! | function | what it fuzzes | oracle |
//! |---|---|---|
//! | [`path_parser`] | `SecretPath`, `ListPrefix`, `Slug`, `SecretName` | no panic; whatever parses round-trips through `Display` |
//! | [`token_parse`] | `smcp_token::parse` | no panic; a valid token has the shape and prefix of its kind, and any one-character change is caught |
//! | [`rules_policy`] | `parse_rules`, `RuleSet::new`, `Config::parse` and `apply_rules` | no panic |
//! | [`exceptions_register`] | `Register::parse`, `check_register`, `append_exception` | no panic; a register that parses accepts a valid new entry |
//! | [`archive_walker`] | `visit_bytes` over zip, tar and gzip bytes | no panic; content read stays within the input plus the expansion budget; nothing is written to disk |
//! | [`grpc_handlers`] | every RPC of the Secret MCP server | never INTERNAL or UNKNOWN, no panic, Ping still answers |

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The names of the fuzz targets, each also the name of its function here and
/// of its directories `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/`.
pub const TARGETS: [&str; 6] = [
    "path_parser",
    "token_parse",
    "rules_policy",
    "exceptions_register",
    "archive_walker",
    "grpc_handlers",
];

/// Runs the target named `target` (one of [`TARGETS`]) on `data`.
///
/// # Panics
///
/// When an oracle fails, or when `target` is not a known target.
pub fn run(target: &str, data: &[u8]) {
    match target {
        "path_parser" => path_parser(data),
        "token_parse" => token_parse(data),
        "rules_policy" => rules_policy(data),
        "exceptions_register" => exceptions_register(data),
        "archive_walker" => archive_walker(data),
        "grpc_handlers" => grpc_handlers(data),
        other => panic!("unknown fuzz target `{other}`"),
    }
}

// ---------------------------------------------------------------------------
// path_parser

/// Parses `data` (when it is UTF-8, and its lossy decoding otherwise) as a
/// secret path, a listing prefix, a slug and a secret name.
///
/// Oracle: no panic; a parsed path prints back to exactly its input and
/// parses again to an equal value; a listing prefix prints to a string that
/// parses to an equal prefix; accepted slugs and names obey their grammar and
/// compose into a valid path.
pub fn path_parser(data: &[u8]) {
    use tenant_vault::{ListPrefix, SecretName, SecretPath, Slug};

    let lossy = String::from_utf8_lossy(data);
    let s: &str = &lossy;

    if let Ok(p) = SecretPath::parse(s) {
        let shown = p.to_string();
        assert_eq!(shown, s, "a secret path prints back byte for byte");
        assert_eq!(SecretPath::parse(&shown).as_ref(), Ok(&p));
        assert_eq!(SecretPath::new(p.slug().clone(), p.name().clone()), p);
        assert!(ListPrefix::parse(s).is_ok(), "a path is a listing prefix");
    }
    if let Ok(l) = ListPrefix::parse(s) {
        let shown = l.to_string();
        let again = ListPrefix::parse(&shown).expect("a printed prefix parses");
        assert_eq!(again, l, "listing prefix round trip of {s:?}");
        assert!(shown.starts_with("tenant/"));
    }
    let slug = Slug::parse(s);
    if let Ok(slug) = &slug {
        assert_eq!(slug.as_str(), s);
        assert_eq!(Slug::parse(&slug.to_string()).as_ref(), Ok(slug));
        assert!(!s.is_empty() && s.len() <= tenant_vault::MAX_SLUG_LEN);
        assert_eq!(ListPrefix::tenant(slug.clone()).slug(), slug);
    }
    let name = SecretName::parse(s);
    if let Ok(name) = &name {
        assert_eq!(name.as_str(), s);
        assert!(s.is_ascii() && s.len() <= tenant_vault::MAX_NAME_LEN);
        assert!(
            s.split('/')
                .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        );
        let path = format!("tenant/acme/{s}");
        let p = SecretPath::parse(&path).expect("a valid name makes a valid path");
        assert_eq!(p.name(), name);
    }
    // Split the input at its first `|`: slug and name parsed apart must agree
    // with the whole path parsed at once.
    if let Some((a, b)) = s.split_once('|') {
        let whole = SecretPath::parse(&format!("tenant/{a}/{b}"));
        match (Slug::parse(a), SecretName::parse(b)) {
            (Ok(slug), Ok(name)) if !a.contains('/') => {
                let p = whole.expect("valid parts make a valid path");
                assert_eq!(p, SecretPath::new(slug, name));
            }
            _ => assert!(whole.is_err() || a.contains('/') || b.is_empty()),
        }
    }
}

// ---------------------------------------------------------------------------
// token_parse

/// Parses `data` (lossy UTF-8) as a Secret MCP token.
///
/// The format has no parsed value to serialize again (`parse` returns only
/// the kind), so the oracle checks what a valid token promises instead: it is
/// [`smcp_token::TOKEN_LEN`] bytes of its kind's prefix and base62, and
/// changing any one of its characters (the position and replacement chosen
/// from the input) makes it invalid.
pub fn token_parse(data: &[u8]) {
    let lossy = String::from_utf8_lossy(data);
    let s: &str = &lossy;
    let parsed = smcp_token::parse(s);
    assert_eq!(smcp_token::is_valid(s), parsed.is_ok());
    match parsed {
        Ok(kind) => {
            assert_eq!(s.len(), smcp_token::TOKEN_LEN);
            assert!(s.starts_with(kind.prefix()));
            assert!(
                s.as_bytes()[smcp_token::PREFIX_LEN..]
                    .iter()
                    .all(u8::is_ascii_alphanumeric)
            );
            // One changed character is always caught.
            let seed = data
                .iter()
                .fold(0usize, |a, &b| a.wrapping_mul(31) ^ b as usize);
            let pos = seed % s.len();
            let mut bytes = s.as_bytes().to_vec();
            let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
            let mut replacement = alphabet[seed % alphabet.len()];
            if replacement == bytes[pos] {
                replacement = alphabet[(seed + 1) % alphabet.len()];
            }
            bytes[pos] = replacement;
            let changed = String::from_utf8(bytes).expect("ASCII");
            assert!(
                smcp_token::parse(&changed).is_err(),
                "a one-character change at {pos} went unnoticed"
            );
        }
        Err(smcp_token::FormatError::WrongLength(n)) => {
            assert_ne!(s.len(), smcp_token::TOKEN_LEN);
            assert_eq!(n, s.chars().count());
        }
        Err(smcp_token::FormatError::BadCharacter(pos)) => {
            assert!(pos >= smcp_token::PREFIX_LEN && pos < s.len());
            assert!(!s.as_bytes()[pos].is_ascii_alphanumeric());
        }
        Err(_) => {}
    }
    // Error messages never repeat a would-be token (any text does: the
    // messages themselves quote `smcpt_`, so only token-like input counts).
    let token_like = s.len() >= 8
        && s.starts_with("smcp")
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if let Err(e) = parsed {
        if token_like {
            assert!(!e.to_string().contains(s));
        }
    }
}

// ---------------------------------------------------------------------------
// rules_policy

/// The built-in rules, parsed once.
fn builtin_rules() -> &'static [tenant_guard_scan::Rule] {
    static RULES: OnceLock<Vec<tenant_guard_scan::Rule>> = OnceLock::new();
    RULES.get_or_init(|| tenant_guard_scan::builtin_rules().expect("the built-in rules parse"))
}

/// Parses `data` (lossy UTF-8) as a rule file (`parse_rules`, then
/// `RuleSet::new` and `check_rules` on what parsed) and as a repository
/// configuration (`Config::parse` from `tenant-guard.toml` text, then
/// `apply_rules` over the built-in rules, not compiled, and `apply_allowlist`).
///
/// Oracle: no panic (errors are fine).
pub fn rules_policy(data: &[u8]) {
    use tenant_guard_scan::{Config, ExceptionCheck, RuleSet, check_rules, parse_rules};

    let lossy = String::from_utf8_lossy(data);
    let text: &str = &lossy;
    if let Ok(rules) = parse_rules("fuzz.toml", text) {
        let _ = check_rules(&rules);
        if let Ok(set) = RuleSet::new(rules) {
            assert_eq!(set.rules().count(), set.len());
        }
    }
    if let Ok(config) = Config::parse("tenant-guard.toml", text) {
        // Not compiled into a `RuleSet`: compiling every built-in rule costs
        // about half a second per input; the rule-file path above compiles
        // fuzzed rules already.
        let _ = config.apply_rules(builtin_rules().to_vec());
        config.apply_allowlist(&mut [], &ExceptionCheck::accept_all());
    }
}

// ---------------------------------------------------------------------------
// exceptions_register

/// Parses `data` (lossy UTF-8) as an exceptions register with
/// `Register::parse` and `check_register`, and appends an entry to it.
///
/// Oracle: no panic; `check_register` reports at least every structural
/// problem of `Register::parse`; on a register that parses, every entry is
/// valid on its own date, the next id is new, and `append_exception` with a
/// well-formed draft succeeds and reads back.
pub fn exceptions_register(data: &[u8]) {
    use tenant_guard_scan::{
        ExceptionDraft, IsoDate, Register, Validity, append_exception, check_register,
    };

    let lossy = String::from_utf8_lossy(data);
    let text: &str = &lossy;
    let today = IsoDate::new(2026, 1, 15).expect("a real date");
    let problems = check_register(text, today);
    match Register::parse(text) {
        Ok(register) => {
            assert_eq!(register.expired(today).len(), problems.len());
            for e in register.exceptions() {
                assert!(matches!(
                    register.validity(&e.id, e.withdraw_by),
                    Validity::Valid
                ));
                assert_eq!(
                    IsoDate::parse(&e.withdraw_by.to_string()),
                    Some(e.withdraw_by)
                );
                let _ = e.to_string();
            }
            let next = register.next_id();
            assert!(register.get(&next).is_none(), "next id {next} is taken");
            let draft = ExceptionDraft {
                title: "Fuzz".into(),
                context: "context".into(),
                cause: "cause".into(),
                decision: "decision".into(),
                withdrawal_plan: "plan".into(),
                withdraw_by: IsoDate::new(2026, 12, 31).expect("a real date"),
            };
            match append_exception("fuzz.md", text, &draft, today) {
                Ok((id, out)) => {
                    assert_eq!(id, next);
                    let again = Register::parse(&out).expect("the appended register parses");
                    assert_eq!(again.exceptions().len(), register.exceptions().len() + 1);
                }
                Err(e) => panic!("appending to a well-formed register failed: {e}"),
            }
        }
        Err(structural) => {
            assert!(!structural.is_empty());
            assert!(problems.len() >= structural.len());
        }
    }
    for line in text.lines().take(64) {
        let _ = IsoDate::parse(line);
    }
}

// ---------------------------------------------------------------------------
// archive_walker

/// The expansion budget of [`archive_walker`]: 256 KiB.
pub const ARCHIVE_BUDGET: u64 = 256 << 10;

/// Reads every byte it is given, counting, without keeping any.
struct CountingVisitor {
    content_bytes: u64,
    max_bytes: u64,
    contents: usize,
    notices: usize,
}

impl tenant_guard_scan::Visitor for CountingVisitor {
    fn content(&mut self, path: &str, content: &mut dyn Read) -> io::Result<()> {
        self.contents += 1;
        assert!(!path.is_empty());
        let mut buf = [0u8; 8192];
        loop {
            let n = content.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            self.content_bytes += n as u64;
            assert!(
                self.content_bytes <= self.max_bytes,
                "the walker handed out {} bytes, more than the input plus the budget ({}): limits not honoured at {path}",
                self.content_bytes,
                self.max_bytes
            );
        }
    }

    fn notice(&mut self, finding: tenant_guard_scan::Finding) {
        self.notices += 1;
        let _ = finding;
    }
}

/// The empty directory tree the archive walker runs in, made (and entered,
/// as the current directory) on first use: `<tmp>/a/b/c`.
fn sandbox() -> &'static Path {
    static SANDBOX: OnceLock<PathBuf> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("tv-fuzz-sandbox-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let cwd = root.join("a").join("b").join("c");
        std::fs::create_dir_all(&cwd).expect("creating the sandbox");
        std::env::set_current_dir(&cwd).expect("entering the sandbox");
        root
    })
}

/// Asserts that the sandbox still holds nothing but `a/b/c`.
fn assert_sandbox_untouched(root: &Path) {
    let mut dir = root.to_path_buf();
    for expected in ["a", "b", "c"] {
        let entries: Vec<_> = std::fs::read_dir(&dir)
            .expect("reading the sandbox")
            .map(|e| e.expect("a sandbox entry").file_name())
            .collect();
        assert_eq!(
            entries,
            [expected],
            "the archive walker wrote into {}",
            dir.display()
        );
        dir.push(expected);
    }
    let left = std::fs::read_dir(&dir)
        .expect("reading the sandbox")
        .count();
    assert_eq!(left, 0, "the archive walker wrote into {}", dir.display());
}

/// Walks `data[1..]` with `tenant_guard_scan::visit_bytes` and a visitor that
/// reads all content; `data[0]` picks the limits (depth 0 to 3, an expansion
/// ratio of 2 to 65, a budget of [`ARCHIVE_BUDGET`]).
///
/// Oracle: no panic; bytes that are no archive are handed over once, whole;
/// the visitor is never handed more bytes than the input plus the budget (libFuzzer's `-rss_limit_mb` catches allocations); and the
/// walk writes nothing: the process runs in an empty sandbox directory
/// (entered on the first call, a side effect on the current directory), which
/// must hold nothing new afterwards, so an entry named `../x` or `x` would show.
pub fn archive_walker(data: &[u8]) {
    let root = sandbox();
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let limits = tenant_guard_scan::ArchiveLimits::default()
        .max_depth(usize::from(selector & 3))
        .max_ratio(2 + u64::from(selector >> 2))
        .max_expanded_bytes(ARCHIVE_BUDGET);
    let mut visitor = CountingVisitor {
        content_bytes: 0,
        max_bytes: bytes.len() as u64 + ARCHIVE_BUDGET,
        contents: 0,
        notices: 0,
    };
    tenant_guard_scan::visit_bytes("input", bytes, limits, &mut visitor);
    // Bytes that are no archive are handed over once, whole. (Archives may
    // legitimately yield nothing: only directories, or entry types that are
    // not scanned.)
    let archive = bytes.starts_with(b"PK\x03\x04")
        || bytes.starts_with(b"PK\x05\x06")
        || bytes.starts_with(&[0x1f, 0x8b])
        || bytes.get(257..262) == Some(b"ustar".as_slice());
    if !archive {
        assert_eq!(visitor.contents, 1, "plain bytes are one content");
        assert_eq!(visitor.content_bytes, bytes.len() as u64);
        assert_eq!(visitor.notices, 0, "plain bytes raise no notice");
    }
    assert_sandbox_untouched(root);
}

// ---------------------------------------------------------------------------
// grpc_handlers

/// The RPCs [`grpc_handlers`] can call, in the order the selector byte
/// picks them (`data[0] % 25`).
pub const RPCS: [&str; 25] = [
    "Secrets/Put",
    "Secrets/Get",
    "Secrets/List",
    "Secrets/Delete",
    "Secrets/Undelete",
    "Secrets/Destroy",
    "Secrets/GetMetadata",
    "Secrets/UpdateMetadata",
    "Secrets/Watch",
    "Tenants/CreateScope",
    "Tenants/DeleteScope",
    "Tenants/ListScopes",
    "Tenants/GetScopeStatus",
    "Tenants/RotateKey",
    "Tenants/GetLimits",
    "Tenants/SetLimits",
    "Tenants/IssueToken",
    "Tenants/RevokeToken",
    "Tenants/ListTokens",
    "System/Status",
    "System/Seal",
    "System/Unseal",
    "System/Ping",
    "System/VerifyAudit",
    "System/AuditTail",
];

/// The tenant the fuzzed server's tenant token belongs to.
pub const FUZZ_TENANT: &str = "acme";

/// A Secret MCP server started once per process for [`grpc_handlers`].
struct GrpcHarness {
    runtime: tokio::runtime::Runtime,
    channel: tonic::transport::Channel,
    vault: Arc<tenant_vault::Vault>,
    key: PathBuf,
    /// Operator token, tenant token.
    tokens: Mutex<(String, String)>,
    /// A well-formed token that was never issued.
    stranger: String,
    _dir: tempfile::TempDir,
}

impl GrpcHarness {
    fn start() -> GrpcHarness {
        use tenant_vault::{KdfParams, SqliteStore, Unlock, Vault, VaultOptions, create_key_file};

        let dir = tempfile::tempdir().expect("a temp dir");
        let key = dir.path().join("vault.key");
        create_key_file(&key).expect("a key file");
        let mut options = VaultOptions::default();
        options.kdf = KdfParams {
            m_cost_kib: 256,
            t_cost: 1,
            p_cost: 1,
        };
        let store = SqliteStore::open(dir.path().join("vault.db")).expect("a store");
        let vault =
            Arc::new(Vault::init(store, &Unlock::KeyFile(key.clone()), options).expect("a vault"));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let server_options = secret_mcp_grpc::ServerOptions {
            request_timeout: Duration::from_secs(10),
            watch_interval: Duration::from_millis(20),
            ..Default::default()
        };
        let channel = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("binding 127.0.0.1:0");
            let addr = listener.local_addr().expect("the bound address");
            let server = secret_mcp_grpc::Server::new(vault.clone(), server_options);
            tokio::spawn(server.serve(listener, std::future::pending()));
            tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .expect("an endpoint")
                .connect()
                .await
                .expect("connecting to the fuzzed server")
        });
        let harness = GrpcHarness {
            runtime,
            channel,
            vault,
            key,
            tokens: Mutex::new((String::new(), String::new())),
            stranger: smcp_token::generate(smcp_token::TokenKind::Tenant).to_string(),
            _dir: dir,
        };
        harness.repair(true);
        harness
    }

    /// Puts the server back in a state where fuzzing is useful: unsealed,
    /// the fuzz tenant present, and (when `reissue`) fresh tokens.
    fn repair(&self, reissue: bool) {
        use tenant_vault::{ScopeKind, Slug, TokenSpec, Unlock};

        if self.vault.is_sealed() {
            self.vault
                .unseal(&Unlock::KeyFile(self.key.clone()))
                .expect("unsealing with the key file");
        }
        let root = self.vault.root_session();
        let slug = Slug::parse(FUZZ_TENANT).expect("a slug");
        let created = root
            .create_scope(&slug, ScopeKind::Enterprise)
            .expect("creating the fuzz tenant");
        if reissue || created.created {
            let issue = |tenant: Option<Slug>, role| {
                let t = root
                    .issue_token(&TokenSpec {
                        tenant,
                        role,
                        ..Default::default()
                    })
                    .expect("issuing a token");
                String::from_utf8(t.token.expose().to_vec()).expect("a UTF-8 token")
            };
            let operator = issue(None, None);
            let tenant = issue(Some(slug), Some(tenant_vault::Role::Owner));
            *self.tokens.lock().unwrap_or_else(|p| p.into_inner()) = (operator, tenant);
        }
    }
}

fn harness() -> &'static GrpcHarness {
    static HARNESS: OnceLock<GrpcHarness> = OnceLock::new();
    HARNESS.get_or_init(GrpcHarness::start)
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if !token.is_empty() {
        if let Ok(v) = format!("Bearer {token}").parse() {
            r.metadata_mut().insert("authorization", v);
        }
    }
    r
}

/// Asserts that `status` is an answer a well-behaved server may give.
fn check_status(rpc: &str, status: &tonic::Status) {
    assert!(
        !matches!(status.code(), tonic::Code::Internal | tonic::Code::Unknown),
        "{rpc} answered {:?}: {}",
        status.code(),
        status.message()
    );
}

/// Decodes `data[1..]` as the request message of the RPC `data[0]` selects
/// (see [`RPCS`]; inputs that do not decode are skipped) and sends it to a
/// real Secret MCP server (started once per process on 127.0.0.1:0 over a
/// temporary key-file vault with tenant [`FUZZ_TENANT`]) with the token
/// `(data[0] / 25) % 4` selects: none, the operator's, the tenant's, or a
/// well-formed token that was never issued.
///
/// Oracle: the server never answers INTERNAL or UNKNOWN (a streamed Watch
/// message included), never panics (a panicking handler answers INTERNAL or
/// breaks the connection), and still answers Ping with the operator token
/// afterwards. Seals, revocations and deleted tenants are repaired after each
/// input so that later inputs still reach the handlers.
pub fn grpc_handlers(data: &[u8]) {
    use prost::Message;
    use secret_mcp_grpc::pb::{
        self, secrets_client::SecretsClient, system_client::SystemClient,
        tenants_client::TenantsClient,
    };

    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let h = harness();
    let rpc_index = usize::from(selector) % RPCS.len();
    let rpc = RPCS[rpc_index];
    let (operator, tenant) = h.tokens.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let token: &str = match (usize::from(selector) / RPCS.len()) % 4 {
        0 => "",
        1 => &operator,
        2 => &tenant,
        _ => &h.stranger,
    };

    let ch = h.channel.clone();
    let (mut sec, mut ten, mut sys) = (
        SecretsClient::new(ch.clone()),
        TenantsClient::new(ch.clone()),
        SystemClient::new(ch),
    );

    macro_rules! call {
        ($client:ident . $method:ident ( $ty:ty )) => {{
            let Ok(msg) = <$ty>::decode(body) else {
                return;
            };
            h.runtime
                .block_on($client.$method(with_token(msg, token)))
                .map(|_| ())
        }};
    }

    let result: Result<(), tonic::Status> = match rpc_index {
        0 => call!(sec.put(pb::PutRequest)),
        1 => call!(sec.get(pb::GetRequest)),
        2 => call!(sec.list(pb::ListRequest)),
        3 => call!(sec.delete(pb::DeleteRequest)),
        4 => call!(sec.undelete(pb::UndeleteRequest)),
        5 => call!(sec.destroy(pb::DestroyRequest)),
        6 => call!(sec.get_metadata(pb::GetMetadataRequest)),
        7 => call!(sec.update_metadata(pb::UpdateMetadataRequest)),
        8 => {
            let Ok(msg) = pb::WatchRequest::decode(body) else {
                return;
            };
            h.runtime.block_on(async {
                let mut stream = sec.watch(with_token(msg, token)).await?.into_inner();
                // A change may be waiting already; otherwise stop waiting soon.
                match tokio::time::timeout(Duration::from_millis(30), stream.message()).await {
                    Ok(Err(status)) => Err(status),
                    _ => Ok(()),
                }
            })
        }
        9 => call!(ten.create_scope(pb::CreateScopeRequest)),
        10 => call!(ten.delete_scope(pb::DeleteScopeRequest)),
        11 => call!(ten.list_scopes(pb::ListScopesRequest)),
        12 => call!(ten.get_scope_status(pb::GetScopeStatusRequest)),
        13 => call!(ten.rotate_key(pb::RotateKeyRequest)),
        14 => call!(ten.get_limits(pb::GetLimitsRequest)),
        15 => call!(ten.set_limits(pb::SetLimitsRequest)),
        16 => call!(ten.issue_token(pb::IssueTokenRequest)),
        17 => call!(ten.revoke_token(pb::RevokeTokenRequest)),
        18 => call!(ten.list_tokens(pb::ListTokensRequest)),
        19 => call!(sys.status(pb::StatusRequest)),
        20 => call!(sys.seal(pb::SealRequest)),
        21 => call!(sys.unseal(pb::UnsealRequest)),
        22 => call!(sys.ping(pb::PingRequest)),
        23 => call!(sys.verify_audit(pb::VerifyAuditRequest)),
        _ => call!(sys.audit_tail(pb::AuditTailRequest)),
    };
    if let Err(status) = &result {
        check_status(rpc, status);
    }

    // Seal, DeleteScope, RevokeToken and SetLimits change what later inputs
    // can reach: put the server back, with fresh tokens when one may be gone.
    let destructive = matches!(rpc_index, 10 | 17 | 20);
    if destructive || h.vault.is_sealed() {
        h.repair(destructive);
    }
    let (operator, _) = h.tokens.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let ping = h.runtime.block_on(
        SystemClient::new(h.channel.clone()).ping(with_token(pb::PingRequest {}, &operator)),
    );
    if let Err(status) = ping {
        panic!(
            "the server no longer answers Ping after {rpc}: {:?} {}",
            status.code(),
            status.message()
        );
    }
}
