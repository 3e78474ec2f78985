//! Hostile input against a real Secret MCP server (issue 9): messages at and
//! over the size limit, invalid UTF-8 and NUL bytes in paths, a thousand
//! concurrent Watch streams, slow clients, expired and garbage tokens, and the
//! replay of a revoked token. Each test runs an in-process server on
//! 127.0.0.1:0 over a real SQLite vault and checks what the caller gets back,
//! what is stored, and what is audited.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use secret_mcp_grpc::pb::{
    self, secrets_client::SecretsClient, system_client::SystemClient, tenants_client::TenantsClient,
};
use secret_mcp_grpc::{Server, ServerOptions};
use tenant_vault::{
    KdfParams, LimitChange, Role, ScopeKind, SecretPath, Slug, SqliteStore, TokenSpec, Unlock,
    Vault, VaultOptions, create_key_file,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

fn options() -> VaultOptions {
    let mut o = VaultOptions::default();
    o.kdf = KdfParams {
        m_cost_kib: 256,
        t_cost: 1,
        p_cost: 1,
    };
    o
}

/// A server over its own vault, stopped by [`Served::stop`].
struct Served {
    addr: SocketAddr,
    vault: Arc<Vault>,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<Result<(), secret_mcp_grpc::Error>>,
}

impl Served {
    async fn channel(&self) -> Channel {
        connect(self.addr).await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().expect("stopped once").send(());
        (&mut self.handle)
            .await
            .expect("the server task")
            .expect("the server stops cleanly");
    }
}

/// A fresh vault with tenants `acme` and `globex` (their request rate lifted
/// so the tests measure the server, not the token buckets), and its paths.
struct Fixture {
    dir: tempfile::TempDir,
    vault: Arc<Vault>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("vault.key");
        create_key_file(&key).unwrap();
        let vault = Arc::new(
            Vault::init(
                SqliteStore::open(dir.path().join("vault.db")).unwrap(),
                &Unlock::KeyFile(key),
                options(),
            )
            .unwrap(),
        );
        let root = vault.root_session();
        for t in ["acme", "globex"] {
            let slug = Slug::parse(t).unwrap();
            root.create_scope(&slug, ScopeKind::Enterprise).unwrap();
            root.set_limits(
                &slug,
                &LimitChange {
                    rate_per_sec: Some(1e9),
                    ..Default::default()
                },
            )
            .unwrap();
        }
        Fixture { dir, vault }
    }

    fn db(&self) -> std::path::PathBuf {
        self.dir.path().join("vault.db")
    }

    /// A second vault over the same files, as another server process would
    /// have.
    fn reopen(&self) -> Arc<Vault> {
        Arc::new(
            Vault::open(
                SqliteStore::open(self.db()).unwrap(),
                &Unlock::KeyFile(self.dir.path().join("vault.key")),
                options(),
            )
            .unwrap(),
        )
    }

    fn issue(&self, spec: &TokenSpec) -> (String, String) {
        let t = self.vault.root_session().issue_token(spec).unwrap();
        (t.id, String::from_utf8(t.token.expose().to_vec()).unwrap())
    }

    fn tenant_token(&self, tenant: &str, role: Role) -> String {
        self.issue(&TokenSpec {
            tenant: Some(Slug::parse(tenant).unwrap()),
            role: Some(role),
            ..Default::default()
        })
        .1
    }

    fn operator_token(&self) -> String {
        self.issue(&TokenSpec::default()).1
    }

    /// Audit records matching `principal` (or any, when empty) and `outcome`,
    /// read straight from the database.
    fn audited(&self, principal: &str, outcome: &str) -> i64 {
        self.vault.flush_audit().unwrap();
        rusqlite::Connection::open(self.db())
            .unwrap()
            .query_row(
                "SELECT count(*) FROM audit_log
                 WHERE (?1 = '' OR principal = ?1) AND outcome = ?2",
                [principal, outcome],
                |r| r.get(0),
            )
            .unwrap()
    }

    /// Whether anything at all is stored at `path` (any version, any state).
    fn stored(&self, path: &str) -> bool {
        let p = SecretPath::parse(path).unwrap();
        !matches!(
            self.vault.root_session().metadata(&p),
            Err(tenant_vault::Error::SecretNotFound(_))
        )
    }

    /// How many secrets tenant `slug` holds.
    fn count(&self, slug: &str) -> u64 {
        self.vault
            .root_session()
            .scope_status(&Slug::parse(slug).unwrap())
            .unwrap()
            .secrets
    }
}

async fn serve_vault(vault: Arc<Vault>, server_options: ServerOptions) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(Server::new(vault.clone(), server_options).serve(
        listener,
        async move {
            let _ = rx.await;
        },
    ));
    Served {
        addr,
        vault,
        stop: Some(tx),
        handle,
    }
}

async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn req<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

fn put(path: &str, value: &[u8]) -> pb::PutRequest {
    pb::PutRequest {
        path: path.into(),
        value: value.to_vec(),
        cas: None,
    }
}

fn get(path: &str) -> pb::GetRequest {
    pb::GetRequest {
        path: path.into(),
        version: None,
    }
}

fn refused<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Status {
    match r {
        Ok(x) => panic!("expected a refusal, got {x:?}"),
        Err(s) => s,
    }
}

/// The server answers a cheap authenticated call.
async fn still_serving(addr: SocketAddr, token: &str) {
    let mut sys = SystemClient::new(connect(addr).await);
    tokio::time::timeout(
        Duration::from_secs(10),
        sys.ping(req(pb::PingRequest {}, token)),
    )
    .await
    .expect("the server answers within 10 s")
    .expect("ping is served");
}

fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// Encoded size of a `PutRequest { path, value, cas: None }` (protobuf: a
/// tag byte, a varint length and the bytes, for each of the two fields).
fn put_request_len(path: &str, value_len: usize) -> usize {
    1 + varint_len(path.len() as u64) + path.len() + 1 + varint_len(value_len as u64) + value_len
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_exactly_at_the_size_limit_is_served_one_byte_over_is_refused() {
    const LIMIT: usize = 4096;
    let fx = Fixture::new();
    let tok = fx.tenant_token("acme", Role::Owner);
    let served = serve_vault(
        fx.vault.clone(),
        ServerOptions {
            max_message_bytes: LIMIT,
            ..Default::default()
        },
    )
    .await;
    let mut sec = SecretsClient::new(served.channel().await);

    let at = "tenant/acme/at-limit";
    let over = "tenant/acme/over-limi"; // one byte longer path, same value
    let value_len = (1..LIMIT)
        .rev()
        .find(|&n| put_request_len(at, n) == LIMIT)
        .expect("a value length that gives exactly the limit");
    assert_eq!(put_request_len(over, value_len), LIMIT + 1);
    let value = vec![b'v'; value_len];

    // One byte over: refused with a size code, nothing stored.
    let e = refused(sec.put(req(put(over, &value), &tok)).await);
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );
    assert!(
        e.message().contains(&(LIMIT + 1).to_string()) && e.message().contains(&LIMIT.to_string()),
        "the refusal gives the size and the limit: {}",
        e.message()
    );
    assert!(!fx.stored(over), "nothing is stored for a refused message");

    // Exactly at the limit, on the same connection: served, and the value
    // reads back whole.
    let v = sec
        .put(req(put(at, &value), &tok))
        .await
        .expect("a message of exactly max_message_bytes is accepted")
        .into_inner()
        .version;
    assert_eq!(v, 1);
    let back = sec.get(req(get(at), &tok)).await.unwrap().into_inner();
    assert_eq!(back.value.len(), value_len);
    assert!(back.value == value, "the value reads back unchanged");

    // A stream request over the limit is refused the same way.
    let mut watch = SecretsClient::new(served.channel().await);
    let e = refused(
        watch
            .watch(req(
                pb::WatchRequest {
                    prefix: format!("tenant/acme/{}", "p".repeat(LIMIT)),
                },
                &tok,
            ))
            .await,
    );
    assert!(
        matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{e:?}"
    );

    // The refusals hurt nothing: the same connection and a new one are served.
    sec.put(req(put("tenant/acme/after", b"x"), &tok))
        .await
        .unwrap();
    still_serving(served.addr, &tok).await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_bytes_in_paths_slugs_and_prefixes_are_invalid_argument_naming_the_field() {
    let fx = Fixture::new();
    let tok = fx.tenant_token("acme", Role::Owner);
    let op = fx.operator_token();
    let served = serve_vault(fx.vault.clone(), ServerOptions::default()).await;
    let ch = served.channel().await;
    let (mut sec, mut ten) = (SecretsClient::new(ch.clone()), TenantsClient::new(ch));
    let scopes_before = fx.vault.root_session().list_scopes().unwrap().len();

    let check = |what: &str, field: &str, s: tonic::Status| {
        assert_eq!(s.code(), Code::InvalidArgument, "{what}: {s:?}");
        assert!(
            s.message().starts_with(&format!("{field}:")),
            "{what}: the message names the field `{field}`: {}",
            s.message()
        );
    };
    for path in [
        "tenant/acme/a\0b",
        "tenant/acme/\0",
        "tenant/ac\0me/x",
        "\0tenant/acme/x",
        "tenant/acme/x\0",
    ] {
        check(
            "put",
            "path",
            refused(sec.put(req(put(path, b"v"), &tok)).await),
        );
        check("get", "path", refused(sec.get(req(get(path), &tok)).await));
        check(
            "delete",
            "path",
            refused(
                sec.delete(req(
                    pb::DeleteRequest {
                        path: path.into(),
                        versions: vec![],
                    },
                    &tok,
                ))
                .await,
            ),
        );
    }
    for prefix in ["tenant/acme/\0", "tenant/ac\0me/", "tenant/acme/a\0/"] {
        check(
            "list",
            "prefix",
            refused(
                sec.list(req(
                    pb::ListRequest {
                        prefix: prefix.into(),
                        after: String::new(),
                        limit: 0,
                    },
                    &tok,
                ))
                .await,
            ),
        );
        check(
            "watch",
            "prefix",
            refused(
                sec.watch(req(
                    pb::WatchRequest {
                        prefix: prefix.into(),
                    },
                    &tok,
                ))
                .await,
            ),
        );
    }
    for slug in ["ac\0me", "\0", "new\0tenant"] {
        check(
            "create scope",
            "slug",
            refused(
                ten.create_scope(req(
                    pb::CreateScopeRequest {
                        slug: slug.into(),
                        kind: 0,
                    },
                    &op,
                ))
                .await,
            ),
        );
    }
    // Nothing was stored, no tenant was created.
    assert_eq!(fx.count("acme"), 0);
    assert_eq!(
        fx.vault.root_session().list_scopes().unwrap().len(),
        scopes_before
    );
    still_serving(served.addr, &tok).await;
    served.stop().await;
}

/// A TCP proxy in front of `upstream` that replaces every occurrence of
/// `from` by `to` (same length, so no HTTP/2 frame length changes) in what
/// the client sends; what the server sends comes back untouched. It lets a
/// tonic client put bytes on the wire that a Rust `String` cannot hold.
/// Returns the proxy's address and how many replacements it made.
async fn rewriting_proxy(
    upstream: SocketAddr,
    from: Vec<u8>,
    to: Vec<u8>,
) -> (SocketAddr, Arc<AtomicUsize>) {
    assert_eq!(from.len(), to.len());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let replaced = Arc::new(AtomicUsize::new(0));
    let count = replaced.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(upstream).await.unwrap();
            client.set_nodelay(true).unwrap();
            server.set_nodelay(true).unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
            let (from, to, count) = (from.clone(), to.clone(), count.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let chunk = &mut buf[..n];
                    let mut i = 0;
                    while i + from.len() <= chunk.len() {
                        if chunk[i..i + from.len()] == from[..] {
                            chunk[i..i + from.len()].copy_from_slice(&to);
                            count.fetch_add(1, Ordering::SeqCst);
                            i += from.len();
                        } else {
                            i += 1;
                        }
                    }
                    if sw.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, replaced)
}

/// Invalid UTF-8 in a `string` field cannot be decoded into the request
/// message at all, so it never reaches a handler: checked here on paths,
/// slugs and list prefixes sent through a proxy that swaps a marker for
/// invalid bytes on the wire. The refusal names the field, nothing is
/// stored, and the server keeps serving. The contract (the proto's header)
/// says INTERNAL for a request that is not valid protobuf, as gRPC's status
/// code guide does for a request that cannot be parsed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_paths_slugs_and_prefixes_is_refused_and_nothing_is_stored() {
    let fx = Fixture::new();
    let tok = fx.tenant_token("acme", Role::Owner);
    let op = fx.operator_token();
    let served = serve_vault(fx.vault.clone(), ServerOptions::default()).await;
    let (statuses, replaced) = send_invalid_utf8(served.addr, &tok, &op).await;
    assert_eq!(
        replaced, 3,
        "the proxy put invalid UTF-8 into each of the three requests"
    );
    for (field, s) in &statuses {
        assert!(
            s.code() == Code::Internal,
            "{field}: refused as a malformed message, not served: {s:?}"
        );
        assert!(
            s.message().contains(field) && s.message().contains("UTF-8"),
            "{field}: the refusal names the field and the problem: {}",
            s.message()
        );
    }
    assert_eq!(fx.count("acme"), 0, "nothing stored");
    assert!(
        fx.vault
            .root_session()
            .list_scopes()
            .unwrap()
            .iter()
            .all(|s| ["acme", "globex"].contains(&s.slug.as_str())),
        "no tenant created"
    );
    still_serving(served.addr, &tok).await;
    served.stop().await;
}

/// Sends a Put, a List and a CreateScope whose path, prefix and slug hold
/// invalid UTF-8 on the wire; returns each field's refusal and how many
/// fields the proxy rewrote.
async fn send_invalid_utf8(
    upstream: SocketAddr,
    tok: &str,
    op: &str,
) -> (Vec<(&'static str, tonic::Status)>, usize) {
    // Valid in a name, a prefix and a slug, and unlikely anywhere else on
    // the wire.
    const MARKER: &str = "zq7marker7qz";
    // 0xFF never occurs in UTF-8; 0xC3 followed by `(` is a broken sequence.
    let mut bad = MARKER.as_bytes().to_vec();
    bad[0] = 0xFF;
    bad[5] = 0xC3;
    bad[6] = b'(';
    let (addr, replaced) = rewriting_proxy(upstream, MARKER.as_bytes().to_vec(), bad).await;
    let ch = connect(addr).await;
    let (mut sec, mut ten) = (SecretsClient::new(ch.clone()), TenantsClient::new(ch));
    let mut out = Vec::new();
    out.push((
        "path",
        refused(
            sec.put(req(put(&format!("tenant/acme/{MARKER}"), b"v"), tok))
                .await,
        ),
    ));
    out.push((
        "prefix",
        refused(
            sec.list(req(
                pb::ListRequest {
                    prefix: format!("tenant/acme/{MARKER}"),
                    after: String::new(),
                    limit: 0,
                },
                tok,
            ))
            .await,
        ),
    ));
    out.push((
        "slug",
        refused(
            ten.create_scope(req(
                pb::CreateScopeRequest {
                    slug: MARKER.into(),
                    kind: 0,
                },
                op,
            ))
            .await,
        ),
    ));
    (out, replaced.load(Ordering::SeqCst))
}

async fn next_change(
    s: &mut tonic::Streaming<pb::WatchResponse>,
) -> Result<pb::WatchResponse, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(60), s.message())
        .await
        .expect("an event within 60 s")
        .map(|m| m.expect("the stream stays open"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_watch_streams_are_served_and_see_only_their_tenant() {
    const STREAMS: usize = 1000;
    let fx = Fixture::new();
    let acme = fx.tenant_token("acme", Role::Owner);
    let globex = fx.tenant_token("globex", Role::Owner);
    let served = serve_vault(
        fx.vault.clone(),
        ServerOptions {
            // Only changes made through this server wake the streams: the
            // test measures the server, not a thousand timers.
            watch_interval: Duration::from_secs(600),
            ..Default::default()
        },
    )
    .await;
    let started = Instant::now();
    // All on one connection (the worst case for a client), half per tenant.
    let ch = served.channel().await;
    let mut opened = Vec::new();
    for i in 0..STREAMS {
        let (tenant, tok) = if i % 2 == 0 {
            ("acme", acme.clone())
        } else {
            ("globex", globex.clone())
        };
        let mut sec = SecretsClient::new(ch.clone());
        opened.push(tokio::spawn(async move {
            let r = sec
                .watch(req(
                    pb::WatchRequest {
                        prefix: format!("tenant/{tenant}/"),
                    },
                    &tok,
                ))
                .await;
            (tenant, r.map(tonic::Response::into_inner))
        }));
    }
    let mut streams = Vec::new();
    for o in opened {
        let (tenant, r) = o.await.unwrap();
        match r {
            Ok(s) => streams.push((tenant, s)),
            Err(e) => panic!("a Watch of {tenant} was refused: {e:?}"),
        }
    }
    assert_eq!(streams.len(), STREAMS);
    let opened_in = started.elapsed();

    // globex, then acme, then globex again: a stream that leaked another
    // tenant's change would see it before (or instead of) its own.
    let mut sec = SecretsClient::new(served.channel().await);
    for (path, tok) in [
        ("tenant/globex/one", &globex),
        ("tenant/acme/only", &acme),
        ("tenant/globex/two", &globex),
    ] {
        sec.put(req(put(path, b"v"), tok)).await.unwrap();
    }
    let mut readers = Vec::new();
    for (tenant, mut s) in streams {
        readers.push(tokio::spawn(async move {
            let first = next_change(&mut s).await.unwrap();
            let mut seen = vec![first.path];
            if tenant == "globex" {
                seen.push(next_change(&mut s).await.unwrap().path);
            }
            (tenant, seen, s)
        }));
    }
    let mut kept = Vec::new();
    for r in readers {
        let (tenant, seen, s) = r.await.unwrap();
        let want: Vec<String> = if tenant == "acme" {
            vec!["tenant/acme/only".into()]
        } else {
            vec!["tenant/globex/one".into(), "tenant/globex/two".into()]
        };
        assert_eq!(seen, want, "a {tenant} stream sees its own changes only");
        kept.push(s);
    }
    // With every stream still open, the server answers at once.
    let t = Instant::now();
    still_serving(served.addr, &acme).await;
    let ping = t.elapsed();
    eprintln!(
        "{STREAMS} streams opened in {opened_in:?}; delivered in {:?}; ping with them open: {ping:?}",
        started.elapsed()
    );
    drop(kept);
    served.stop().await;
}

/// A proxy that passes what the client sends one byte every `pace`, and
/// publishes how many bytes it passed; answers come back at full speed.
async fn trickling_proxy(
    upstream: SocketAddr,
    pace: Duration,
) -> (SocketAddr, tokio::sync::watch::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (count, passed) = tokio::sync::watch::channel(0usize);
    let count = Arc::new(count);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(upstream).await.unwrap();
            client.set_nodelay(true).unwrap();
            server.set_nodelay(true).unwrap();
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
            });
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    for b in &buf[..n] {
                        if sw.write_all(&[*b]).await.is_err() {
                            return;
                        }
                        count.send_modify(|n| *n += 1);
                        tokio::time::sleep(pace).await;
                    }
                }
            });
        }
    });
    (addr, passed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_clients_do_not_block_others_and_the_request_timeout_applies() {
    const TIMEOUT: Duration = Duration::from_secs(1);
    let fx = Fixture::new();
    let tok = fx.tenant_token("acme", Role::Owner);
    let served = serve_vault(
        fx.vault.clone(),
        ServerOptions {
            request_timeout: TIMEOUT,
            ..Default::default()
        },
    )
    .await;

    // Connections that say nothing, or half of the HTTP/2 preface, and never
    // read.
    let silent = TcpStream::connect(served.addr).await.unwrap();
    let mut half = TcpStream::connect(served.addr).await.unwrap();
    half.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    // A Watch stream whose client never reads a message.
    let mut unread = SecretsClient::new(served.channel().await)
        .watch(req(
            pb::WatchRequest {
                prefix: "tenant/acme/".into(),
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner();

    // A client whose bytes reach the server one every 5 ms: its headers
    // arrive in about a second, then a body of 1 KiB would take 5 s.
    let (slow_addr, mut passed) = trickling_proxy(served.addr, Duration::from_millis(5)).await;
    let slow_done = Arc::new(AtomicBool::new(false));
    let slow = {
        let tok = tok.clone();
        let slow_done = slow_done.clone();
        tokio::spawn(async move {
            let mut sec = SecretsClient::new(connect(slow_addr).await);
            let t = Instant::now();
            let r = sec
                .put(req(put("tenant/acme/slow", &[b's'; 1024]), &tok))
                .await;
            slow_done.store(true, Ordering::SeqCst);
            (r, t.elapsed())
        })
    };
    // Once the slow client is sending its request (past the HTTP/2 preface
    // and settings), other clients are served as usual, and promptly.
    tokio::time::timeout(Duration::from_secs(30), passed.wait_for(|n| *n >= 100))
        .await
        .expect("the slow client is sending")
        .unwrap();
    let mut fast = SecretsClient::new(served.channel().await);
    for i in 0..100 {
        let t = Instant::now();
        let path = format!("tenant/acme/fast{i}");
        fast.put(req(put(&path, b"f"), &tok)).await.unwrap();
        fast.get(req(get(&path), &tok)).await.unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a put and a get took {:?} while slow clients were connected",
            t.elapsed()
        );
    }
    assert!(
        !slow_done.load(Ordering::SeqCst),
        "the other clients were served while the slow one was still sending"
    );
    // The slow request is cut off by the request timeout, long before its
    // body would have arrived; nothing of it is stored.
    let (r, took) = tokio::time::timeout(Duration::from_secs(30), slow)
        .await
        .expect("the slow request ends")
        .unwrap();
    let e = refused(r);
    assert!(
        matches!(e.code(), Code::Cancelled | Code::DeadlineExceeded),
        "{e:?}"
    );
    assert!(
        took < Duration::from_secs(5) + TIMEOUT,
        "cut off by the timeout, not by its end: {took:?}"
    );
    assert!(!fx.stored("tenant/acme/slow"));
    assert_eq!(fx.count("acme"), 100);

    // The watcher that never read is still a live stream: its changes were
    // queued, not lost, and did not hold up the writers.
    let first = next_change(&mut unread).await.unwrap();
    assert!(first.path.starts_with("tenant/acme/fast"), "{first:?}");
    drop((silent, half));
    still_serving(served.addr, &tok).await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_unauthenticated_from_its_expiry_on_and_audited() {
    let fx = Fixture::new();
    let (id, tok) = fx.issue(&TokenSpec {
        tenant: Some(Slug::parse("acme").unwrap()),
        role: Some(Role::Owner),
        ttl: Some(Duration::from_secs(2)),
        ..Default::default()
    });
    let expires_at = fx
        .vault
        .root_session()
        .list_tokens(None)
        .unwrap()
        .into_iter()
        .find(|t| t.id == id)
        .and_then(|t| t.expires_at)
        .expect("the token has an expiry")
        .0;
    let served = serve_vault(
        fx.vault.clone(),
        ServerOptions {
            watch_interval: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .await;
    let ch = served.channel().await;
    let mut sec = SecretsClient::new(ch.clone());
    let mut stream = SecretsClient::new(ch)
        .watch(req(
            pb::WatchRequest {
                prefix: "tenant/acme/".into(),
            },
            &tok,
        ))
        .await
        .expect("the token works before its expiry")
        .into_inner();
    // Calls succeed until the expiry and are refused from then on.
    let now_ms = || tenant_vault::Timestamp::now().0;
    let deadline = Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        assert!(Instant::now() < deadline, "the token never expired");
        let before = now_ms();
        match sec.get(req(get("tenant/acme/missing"), &tok)).await {
            Err(s) if s.code() == Code::NotFound => {
                assert!(before < expires_at, "served after its expiry");
            }
            Err(s) => break s,
            Ok(r) => panic!("{r:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(now_ms() >= expires_at, "refused only once expired");
    assert_eq!(refusal.code(), Code::Unauthenticated, "{refusal:?}");
    assert!(
        refusal.message().contains("expired"),
        "{}",
        refusal.message()
    );
    assert!(
        !refusal.message().contains(&tok[6..]),
        "the token is not echoed"
    );
    for _ in 0..3 {
        let s = refused(sec.get(req(get("tenant/acme/missing"), &tok)).await);
        assert_eq!(s.code(), Code::Unauthenticated);
    }
    // The open Watch stream ends with UNAUTHENTICATED as the contract says.
    let end = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("the stream ends after the expiry");
    match end {
        Err(s) => assert_eq!(s.code(), Code::Unauthenticated, "{s:?}"),
        Ok(m) => panic!("the stream of an expired token went on: {m:?}"),
    }
    // Audited under the token's id, never the token.
    assert!(fx.audited(&id, "unauthenticated") >= 4);
    still_serving(served.addr, &fx.operator_token()).await;
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_tokens_are_unauthenticated_audited_and_never_echoed() {
    let fx = Fixture::new();
    let good = fx.tenant_token("acme", Role::Owner);
    let served = serve_vault(fx.vault.clone(), ServerOptions::default()).await;
    let mut sec = SecretsClient::new(served.channel().await);

    let mut wrong_sum = good.clone().into_bytes();
    let last = wrong_sum.len() - 1;
    wrong_sum[last] = if wrong_sum[last] == b'A' { b'B' } else { b'A' };
    let wrong_sum = String::from_utf8(wrong_sum).unwrap();
    let wrong_kind = good.replacen("smcpt_", "smcpo_", 1);
    let wrong_prefix = good.replacen("smcpt_", "smcpx_", 1);
    // Random base62 of the right length: checksum (almost surely) wrong;
    // and one with a valid shape and checksum that was never issued.
    let random: String = {
        use rand_like::next;
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let alphabet = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        (0..good.len())
            .map(|_| alphabet[(next(&mut seed) % 62) as usize] as char)
            .collect()
    };
    let unknown = {
        let other = Fixture::new();
        other.tenant_token("acme", Role::Owner)
    };
    let big = format!("smcpt_{}", "A".repeat(8 * 1024));
    // Each of these reaches the vault's token check and is audited.
    let checked = [
        ("wrong checksum", wrong_sum),
        ("wrong kind", wrong_kind),
        ("wrong prefix", wrong_prefix),
        ("random", random),
        ("issued by another vault", unknown),
        ("8 KiB", big),
        ("inner space", format!("{} {}", &good[..20], &good[21..])),
    ];
    let audited_before = fx.audited("anonymous", "unauthenticated");
    for (what, token) in &checked {
        let s = refused(sec.get(req(get("tenant/acme/x"), token)).await);
        assert_eq!(s.code(), Code::Unauthenticated, "{what}: {s:?}");
        if token.len() > 8 {
            assert!(
                !s.message().contains(&token[6..]),
                "{what}: the token is not echoed"
            );
        }
    }
    assert_eq!(
        fx.audited("anonymous", "unauthenticated") - audited_before,
        checked.len() as i64,
        "one audit record per refused token"
    );

    // A header over HTTP/2's header list limit (16 KiB) is refused by the
    // transport before any handler runs: never served, never a token lookup.
    // It may cost the connection (the transport decides), so it goes on a
    // channel of its own: the checks after it must not depend on when a
    // torn-down connection is noticed and replaced.
    let huge = format!("smcpt_{}", "A".repeat(64 * 1024));
    let mut own = SecretsClient::new(served.channel().await);
    let s = refused(own.get(req(get("tenant/acme/x"), &huge)).await);
    assert_eq!(s.code(), Code::ResourceExhausted, "64 KiB: {s:?}");
    assert!(!s.message().contains("AAAAAAAA"), "the token is not echoed");
    // Headers that are not a bearer token at all are refused before any
    // lookup.
    let s = refused(sec.get(req(get("tenant/acme/x"), "")).await);
    assert_eq!(s.code(), Code::Unauthenticated, "empty: {s:?}");
    let mut raw = Request::new(get("tenant/acme/x"));
    raw.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(&b"Bearer \xff\xfe\x80garbage"[..]).unwrap(),
    );
    assert_eq!(refused(sec.get(raw).await).code(), Code::Unauthenticated);
    let mut basic = Request::new(get("tenant/acme/x"));
    basic
        .metadata_mut()
        .insert("authorization", format!("Basic {good}").parse().unwrap());
    assert_eq!(refused(sec.get(basic).await).code(), Code::Unauthenticated);

    // None of it reached a secret, and the good token still works.
    assert!(
        fx.vault
            .audit_tail(1000)
            .unwrap()
            .iter()
            .all(|r| r.entry.outcome != "ok" || r.entry.operation != "get"),
        "no garbage token read anything"
    );
    sec.put(req(put("tenant/acme/x", b"v"), &good))
        .await
        .unwrap();
    still_serving(served.addr, &good).await;
    served.stop().await;
}

/// A tiny deterministic generator (splitmix64), so the test needs no
/// randomness crate.
mod rand_like {
    pub(crate) fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_at_once_on_this_server_and_another_on_the_same_store() {
    let fx = Fixture::new();
    let (id, tok) = fx.issue(&TokenSpec {
        tenant: Some(Slug::parse("acme").unwrap()),
        role: Some(Role::User),
        ..Default::default()
    });
    let op = fx.operator_token();
    let a = serve_vault(fx.vault.clone(), ServerOptions::default()).await;
    // A second server over its own vault on the same database file: another
    // replica (or process) with its own token cache.
    let b = serve_vault(
        fx.reopen(),
        ServerOptions {
            watch_interval: Duration::from_millis(100),
            ..Default::default()
        },
    )
    .await;
    let (mut sec_a, mut sec_b) = (
        SecretsClient::new(a.channel().await),
        SecretsClient::new(b.channel().await),
    );
    // Both servers have verified (and cached) the token.
    sec_a
        .put(req(put("tenant/acme/k", b"v"), &tok))
        .await
        .unwrap();
    sec_b.get(req(get("tenant/acme/k"), &tok)).await.unwrap();
    sec_a.get(req(get("tenant/acme/k"), &tok)).await.unwrap();
    let mut stream_b = SecretsClient::new(b.channel().await)
        .watch(req(
            pb::WatchRequest {
                prefix: "tenant/acme/".into(),
            },
            &tok,
        ))
        .await
        .unwrap()
        .into_inner();

    // Revoked through server A by an operator...
    TenantsClient::new(a.channel().await)
        .revoke_token(req(pb::RevokeTokenRequest { id: id.clone() }, &op))
        .await
        .unwrap();
    // ...the very next call is refused, on A and on B, for every RPC.
    let s = refused(sec_a.get(req(get("tenant/acme/k"), &tok)).await);
    assert_eq!(s.code(), Code::Unauthenticated, "A: {s:?}");
    assert!(s.message().contains("revoked"), "{}", s.message());
    let s = refused(sec_b.get(req(get("tenant/acme/k"), &tok)).await);
    assert_eq!(s.code(), Code::Unauthenticated, "B: {s:?}");
    let s = refused(
        sec_b
            .put(req(put("tenant/acme/replayed", b"x"), &tok))
            .await,
    );
    assert_eq!(s.code(), Code::Unauthenticated, "B put: {s:?}");
    let s = refused(
        sec_a
            .watch(req(
                pb::WatchRequest {
                    prefix: "tenant/acme/".into(),
                },
                &tok,
            ))
            .await,
    );
    assert_eq!(s.code(), Code::Unauthenticated, "A watch: {s:?}");
    assert!(!fx.stored("tenant/acme/replayed"));
    // B's open stream ends with UNAUTHENTICATED.
    let end = tokio::time::timeout(Duration::from_secs(30), stream_b.message())
        .await
        .expect("the stream ends after the revocation");
    match end {
        Err(s) => assert_eq!(s.code(), Code::Unauthenticated, "{s:?}"),
        Ok(m) => panic!("the stream of a revoked token went on: {m:?}"),
    }
    // Every replay is audited under the token's id.
    b.vault.flush_audit().unwrap();
    assert!(fx.audited(&id, "unauthenticated") >= 4);
    // A restarted server (a fresh vault over the same file) refuses it too.
    let c = serve_vault(fx.reopen(), ServerOptions::default()).await;
    let s = refused(
        SecretsClient::new(c.channel().await)
            .get(req(get("tenant/acme/k"), &tok))
            .await,
    );
    assert_eq!(s.code(), Code::Unauthenticated, "C: {s:?}");
    still_serving(a.addr, &op).await;
    still_serving(b.addr, &op).await;
    for s in [a, b, c] {
        s.stop().await;
    }
}
