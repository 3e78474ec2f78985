//! The gRPC server: the vault's sessions behind tonic services.
//!
//! Every call is authenticated by an interceptor (bearer token in the
//! `authorization` metadata) that attaches the caller's principal and request
//! id to the request; the handler then runs the matching [`Session`] method,
//! which authorizes, rate-limits and audits it exactly as in embedded use.
//! Vault calls are synchronous (SQLite): they run on tokio's blocking pool.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tenant_vault::{
    LimitChange, ListPrefix, MetadataUpdate, Principal, Secret, Session, Unlock, Vault,
};
use tokio::sync::{Notify, mpsc, watch};
use tokio_stream::Stream;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Code, Request, Response, Status};
use tracing::{info, warn};
use zeroize::Zeroizing;

use crate::Error;
use crate::convert::{self, BadField};
use crate::pb;

/// TLS settings of a server.
#[derive(Clone)]
pub struct ServerTls {
    /// Certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// Private key, PEM.
    pub key_pem: Zeroizing<Vec<u8>>,
    /// CA that client certificates must chain to (mTLS: a client without a
    /// valid certificate cannot connect); `None`: no client certificates.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("cert_pem", &format_args!("{} bytes", self.cert_pem.len()))
            .field("key_pem", &"<redacted>")
            .field("client_ca_pem", &self.client_ca_pem.is_some())
            .finish()
    }
}

/// How a server runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// TLS; `None`: plaintext, allowed on a loopback address only unless
    /// `allow_plaintext_non_loopback` is set.
    pub tls: Option<ServerTls>,
    /// Allow plaintext on a non-loopback address (tokens then cross the
    /// network in clear: only behind a TLS-terminating proxy).
    pub allow_plaintext_non_loopback: bool,
    /// Largest request or response message, in bytes.
    pub max_message_bytes: usize,
    /// Per-request timeout (a unary call, or the start of a stream).
    pub request_timeout: Duration,
    /// Requests handled at once over all connections; more wait.
    pub concurrency_limit: usize,
    /// How often Watch streams look for changes made by other processes
    /// (changes made through this server wake them at once).
    pub watch_interval: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            tls: None,
            allow_plaintext_non_loopback: false,
            max_message_bytes: 4 << 20,
            request_timeout: Duration::from_secs(30),
            concurrency_limit: 1024,
            watch_interval: Duration::from_millis(250),
        }
    }
}

/// A Secret MCP server over a vault.
pub struct Server {
    vault: Arc<Vault>,
    options: ServerOptions,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Shared by every service.
struct Shared {
    vault: Arc<Vault>,
    /// Woken after every change made through this server (Watch streams).
    changed: Notify,
    /// Becomes true when the server shuts down (ends Watch streams).
    stopping: watch::Receiver<bool>,
    watch_interval: Duration,
    health: tonic_health::server::HealthReporter,
}

impl Server {
    /// A server for `vault`.
    pub fn new(vault: Arc<Vault>, options: ServerOptions) -> Server {
        Server { vault, options }
    }

    /// Serves on `listener` until `shutdown` resolves; then stops accepting,
    /// ends Watch streams, lets in-flight calls finish, and flushes the audit
    /// trail before returning.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Transport(e.to_string()))?;
        if self.options.tls.is_none()
            && !addr.ip().is_loopback()
            && !self.options.allow_plaintext_non_loopback
        {
            return Err(Error::PlaintextNotLoopback(addr));
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let (health, health_service) = tonic_health::server::health_reporter();
        let shared = Arc::new(Shared {
            vault: self.vault.clone(),
            changed: Notify::new(),
            stopping: stop_rx,
            watch_interval: self.options.watch_interval,
            health,
        });
        set_health(&shared).await;

        let max = self.options.max_message_bytes;
        let auth = Auth {
            vault: self.vault.clone(),
            optional: false,
        };
        let secrets = pb::secrets_server::SecretsServer::new(Handler(shared.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let tenants = pb::tenants_server::TenantsServer::new(Handler(shared.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let system = pb::system_server::SystemServer::new(Handler(shared.clone()))
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| Error::Transport(format!("reflection: {e}")))?;

        let mut builder = tonic::transport::Server::builder()
            .timeout(self.options.request_timeout)
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                self.options.concurrency_limit.max(1),
            ));
        if let Some(tls) = &self.options.tls {
            let mut config =
                ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert_pem, &*tls.key_pem));
            if let Some(ca) = &tls.client_ca_pem {
                config = config.client_ca_root(Certificate::from_pem(ca));
            }
            builder = builder
                .tls_config(config)
                .map_err(|e| Error::Tls(e.to_string()))?;
        }
        let router = builder
            .add_service(tonic::service::interceptor::InterceptedService::new(
                secrets,
                auth.clone(),
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                tenants,
                auth.clone(),
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                system,
                Auth {
                    optional: true,
                    ..auth
                },
            ))
            .add_service(health_service)
            .add_service(reflection);

        info!(%addr, tls = self.options.tls.is_some(), sealed = self.vault.is_sealed(), "serving");
        // Nagle's algorithm would hold the second write of a response until
        // the client's delayed ACK (~40 ms per call): off, as tonic does for
        // the listeners it binds itself.
        let incoming = tokio_stream::StreamExt::map(
            tonic::transport::server::TcpIncoming::from(listener)
                .with_nodelay(Some(true))
                .with_keepalive(Some(Duration::from_secs(60))),
            |accepted| accepted.map(Conn::new),
        );
        let signal = async move {
            shutdown.await;
            info!("shutting down: draining in-flight calls");
            let _ = stop_tx.send(true);
        };
        let served = router
            .serve_with_incoming_shutdown(incoming, signal)
            .await
            .map_err(Error::from);
        let flushed = {
            let vault = self.vault.clone();
            tokio::task::spawn_blocking(move || vault.flush_audit())
                .await
                .map_err(|e| Error::Transport(e.to_string()))?
        };
        served?;
        flushed.map_err(|e| Error::Transport(format!("flushing the audit trail: {e}")))?;
        info!("stopped; audit trail flushed");
        Ok(())
    }
}

/// An accepted connection whose writes are gathered until HTTP/2 flushes,
/// so that the frames of every response ready at once leave in one `write`.
///
/// Over a socket that offers vectored writes, h2 sends a DATA frame of 256
/// bytes or more from its own buffer, and writes it out before it encodes
/// the next frame: a Get of a 256-byte value then cost two writes (the
/// response's headers and data, then its trailers), and the responses of
/// the calls in flight on a connection could not share one. Here h2 sees a
/// socket without vectored writes (it then copies frames of up to 1 KiB into
/// its buffer) and this buffer gathers whatever h2 writes before it flushes:
/// a flush is one `write` to the socket. h2 flushes after every round of
/// frames it encodes, so nothing waits in the buffer.
struct Conn(tokio::io::BufWriter<tokio::net::TcpStream>);

impl Conn {
    /// Larger than h2's own write buffer (16 KiB) plus a frame.
    const BUFFER: usize = 64 << 10;

    fn new(stream: tokio::net::TcpStream) -> Conn {
        Conn(tokio::io::BufWriter::with_capacity(Conn::BUFFER, stream))
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::Connected::connect_info(self.0.get_ref())
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    /// No: h2 then copies small DATA frames into its buffer instead of
    /// writing each one out on its own (see [`Conn`]).
    fn is_write_vectored(&self) -> bool {
        false
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = ctrl_c => {},
            () = term => {},
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

async fn set_health(shared: &Shared) {
    let sealed = shared.vault.is_sealed();
    for name in [
        "secret_mcp.v1.Secrets",
        "secret_mcp.v1.Tenants",
        "", // the server as a whole
    ] {
        let status = if sealed {
            tonic_health::ServingStatus::NotServing
        } else {
            tonic_health::ServingStatus::Serving
        };
        shared.health.set_service_status(name, status).await;
    }
    shared
        .health
        .set_service_status("secret_mcp.v1.System", tonic_health::ServingStatus::Serving)
        .await;
}

// ----- authentication ----------------------------------------------------

/// Who is calling, attached to the request by [`Auth`].
#[derive(Clone)]
struct Caller {
    /// `None` on System calls made without a token.
    principal: Option<Principal>,
    /// The token, kept for Watch streams to re-authenticate while they run.
    token: Option<Arc<Secret>>,
    request_id: String,
}

/// The interceptor: reads `authorization: Bearer <token>` and
/// `x-request-id`, authenticates, attaches a [`Caller`].
#[derive(Clone)]
struct Auth {
    vault: Arc<Vault>,
    /// The System service: Status and Unseal need no token.
    optional: bool,
}

const REQUEST_ID: &str = "x-request-id";

fn request_id_of<T>(req: &Request<T>) -> String {
    req.metadata()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
        .map_or_else(tenant_vault::new_request_id, str::to_owned)
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let request_id = request_id_of(&req);
        let token = match req.metadata().get("authorization") {
            None => None,
            Some(v) => {
                let v = v.to_str().map_err(|_| {
                    with_id(
                        Status::unauthenticated("the authorization header is not ASCII"),
                        &request_id,
                    )
                })?;
                let t = v
                    .strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .ok_or_else(|| {
                        with_id(
                            Status::unauthenticated(
                                "the authorization header must be `Bearer <token>`",
                            ),
                            &request_id,
                        )
                    })?;
                Some(Secret::from(t.trim()))
            }
        };
        let principal = match &token {
            None if self.optional => None,
            None => {
                warn!(request_id, "unauthenticated: no token");
                return Err(with_id(
                    Status::unauthenticated("no token: send `authorization: Bearer <token>`"),
                    &request_id,
                ));
            }
            Some(t) => {
                let text = std::str::from_utf8(t.expose()).unwrap_or("");
                match self.vault.authenticate(text) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        warn!(request_id, error = %e, "unauthenticated");
                        return Err(with_id(status(&e), &request_id));
                    }
                }
            }
        };
        req.extensions_mut().insert(Caller {
            principal,
            token: token.map(Arc::new),
            request_id,
        });
        Ok(req)
    }
}

fn with_id(mut s: Status, request_id: &str) -> Status {
    if let Ok(v) = MetadataValue::try_from(request_id) {
        s.metadata_mut().insert(REQUEST_ID, v);
    }
    s
}

/// The status for a vault error: its code, and its message (which never holds
/// a value or a token).
fn status(e: &tenant_vault::Error) -> Status {
    use tenant_vault::Error as E;
    let code = match e {
        E::InvalidPath(_) | E::InvalidArgument(_) => Code::InvalidArgument,
        E::Unauthenticated(_) => Code::Unauthenticated,
        E::PermissionDenied(_)
        | E::CrossTenant { .. }
        | E::WrongPassphrase
        | E::WrongKeyFile(_) => Code::PermissionDenied,
        E::ScopeNotFound(_)
        | E::SecretNotFound(_)
        | E::VersionNotFound { .. }
        | E::VersionDeleted { .. }
        | E::VersionDestroyed { .. }
        | E::TokenNotFound(_) => Code::NotFound,
        E::AlreadyInitialized => Code::AlreadyExists,
        E::CasMismatch { .. }
        | E::LastOwner(_)
        | E::NotInitialized
        | E::WrongUnlockMethod { .. }
        | E::KeyFile { .. }
        | E::SchemaTooNew { .. } => Code::FailedPrecondition,
        E::ValueTooLarge { .. } | E::QuotaExceeded { .. } | E::RateLimited { .. } => {
            Code::ResourceExhausted
        }
        E::Sealed | E::AuditUnavailable(_) | E::StorageUnavailable { .. } => Code::Unavailable,
        E::Integrity(_) => Code::DataLoss,
        _ => Code::Internal,
    };
    Status::new(code, e.to_string())
}

fn invalid(e: BadField) -> Status {
    Status::invalid_argument(e.0)
}

// ----- handlers ----------------------------------------------------------

/// Implements the three services over the shared state.
#[derive(Clone)]
struct Handler(Arc<Shared>);

/// The caller, taken out of the request (no copy of the principal), or
/// `Unauthenticated` (a service without the interceptor).
fn caller<T>(req: &mut Request<T>) -> Result<Caller, Status> {
    req.extensions_mut()
        .remove::<Caller>()
        .ok_or_else(|| Status::unauthenticated("no token"))
}

/// How a handler's vault work runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// A short indexed read (tens of microseconds, no disk write): run on
    /// the async worker, where handing it to the blocking pool would cost as
    /// much as the work itself.
    Quick,
    /// A longer read (listings, the audit chain): on the blocking pool.
    Slow,
    /// A change (waits for its fsync): on the blocking pool, then wakes the
    /// Watch streams.
    Change,
}

impl Handler {
    /// Runs `f` with the caller's session (see [`Work`]), logs the outcome,
    /// and tags the response (or error) with the request id.
    async fn call<M, T>(
        &self,
        method: &'static str,
        mut req: Request<M>,
        work: Work,
        f: impl FnOnce(&Session<'_>, M) -> Result<T, Status> + Send + 'static,
    ) -> Result<Response<T>, Status>
    where
        M: Send + 'static,
        T: Send + 'static,
    {
        let started = Instant::now();
        let caller = caller(&mut req)?;
        let rid = caller.request_id.clone();
        let Some(principal) = caller.principal else {
            return Err(with_id(
                Status::unauthenticated("no token: send `authorization: Bearer <token>`"),
                &rid,
            ));
        };
        // Only for the log line: not built when nothing would print it.
        let who = if tracing::enabled!(tracing::Level::WARN) {
            principal_name(&principal)
        } else {
            String::new()
        };
        let msg = req.into_inner();
        let vault = self.0.vault.clone();
        let id = rid.clone();
        let run = move || {
            let session = vault.session_with_request_id(principal, id);
            f(&session, msg)
        };
        let result = if work == Work::Quick {
            run()
        } else {
            tokio::task::spawn_blocking(run)
                .await
                .unwrap_or_else(|e| Err(Status::internal(format!("the handler failed: {e}"))))
        };
        if work == Work::Change && result.is_ok() {
            self.0.changed.notify_waiters();
        }
        log(method, &rid, &who, started, result.as_ref().err());
        tag(result, &rid)
    }

    fn shared(&self) -> &Shared {
        &self.0
    }
}

fn principal_name(p: &Principal) -> String {
    match p {
        Principal::Root => "root".into(),
        Principal::Operator { token_id, .. } => token_id.clone(),
        Principal::Tenant { token_id, slug, .. } => format!("{token_id}@{slug}"),
        _ => "unknown".into(),
    }
}

fn log(method: &str, rid: &str, who: &str, started: Instant, err: Option<&Status>) {
    let micros = started.elapsed().as_micros() as u64;
    match err {
        None => info!(request_id = rid, method, principal = who, micros, "ok"),
        Some(s) => warn!(
            request_id = rid,
            method,
            principal = who,
            micros,
            code = ?s.code(),
            message = s.message(),
            "refused"
        ),
    }
}

fn tag<T>(result: Result<T, Status>, rid: &str) -> Result<Response<T>, Status> {
    match result {
        Ok(t) => {
            let mut r = Response::new(t);
            if let Ok(v) = MetadataValue::try_from(rid) {
                r.metadata_mut().insert(REQUEST_ID, v);
            }
            Ok(r)
        }
        Err(s) => Err(with_id(s, rid)),
    }
}

fn vault_err(e: tenant_vault::Error) -> Status {
    status(&e)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::secrets_server::Secrets for Handler {
    async fn put(&self, req: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        self.call("Put", req, Work::Change, |s, m| {
            let path = convert::path("path", &m.path).map_err(invalid)?;
            let value = Secret::from(m.value);
            let version = s.put(&path, &value, m.cas).map_err(vault_err)?;
            Ok(pb::PutResponse { version })
        })
        .await
    }

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        self.call("Get", req, Work::Quick, |s, m| {
            let path = convert::path("path", &m.path).map_err(invalid)?;
            let v = match m.version {
                Some(n) => s.get_version(&path, n),
                None => s.get(&path),
            }
            .map_err(vault_err)?;
            Ok(pb::GetResponse {
                version: v.version,
                created_at: Some(convert::ts(v.created_at)),
                value: v.value.expose().to_vec(),
            })
        })
        .await
    }

    async fn list(
        &self,
        req: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        self.call("List", req, Work::Quick, |s, m| {
            let prefix = ListPrefix::parse(&m.prefix)
                .map_err(|e| Status::invalid_argument(format!("prefix: {e}")))?;
            let limit = if m.limit == 0 { 100 } else { m.limit as usize };
            let after = (!m.after.is_empty()).then_some(m.after.as_str());
            let page = s.list(&prefix, after, limit).map_err(vault_err)?;
            Ok(pb::ListResponse {
                paths: page.paths.iter().map(ToString::to_string).collect(),
                next: page.next.unwrap_or_default(),
            })
        })
        .await
    }

    async fn delete(
        &self,
        req: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        self.call("Delete", req, Work::Change, |s, m| {
            let path = convert::path("path", &m.path).map_err(invalid)?;
            let versions = s.delete(&path, &m.versions).map_err(vault_err)?;
            Ok(pb::DeleteResponse { versions })
        })
        .await
    }

    async fn undelete(
        &self,
        req: Request<pb::UndeleteRequest>,
    ) -> Result<Response<pb::UndeleteResponse>, Status> {
        self.call("Undelete", req, Work::Change, |s, m| {
            let path = convert::path("path", &m.path).map_err(invalid)?;
            let versions = s.undelete(&path, &m.versions).map_err(vault_err)?;
            Ok(pb::UndeleteResponse { versions })
        })
        .await
    }

    async fn destroy(
        &self,
        req: Request<pb::DestroyRequest>,
    ) -> Result<Response<pb::DestroyResponse>, Status> {
        self.call("Destroy", req, Work::Change, |s, m| {
            let path = convert::path("path", &m.path).map_err(invalid)?;
            let versions = s.destroy(&path, &m.versions).map_err(vault_err)?;
            Ok(pb::DestroyResponse { versions })
        })
        .await
    }

    async fn get_metadata(
        &self,
        req: Request<pb::GetMetadataRequest>,
    ) -> Result<Response<pb::GetMetadataResponse>, Status> {
        self.call("GetMetadata", req, Work::Quick, |s, m| {
            let path = convert::path("path", &m.path).map_err(invalid)?;
            let md = s.metadata(&path).map_err(vault_err)?;
            Ok(pb::GetMetadataResponse {
                metadata: Some(convert::metadata(&md)),
            })
        })
        .await
    }

    async fn update_metadata(
        &self,
        req: Request<pb::UpdateMetadataRequest>,
    ) -> Result<Response<pb::UpdateMetadataResponse>, Status> {
        self.call("UpdateMetadata", req, Work::Change, |s, m| {
            let path = convert::path("path", &m.path).map_err(invalid)?;
            let update = MetadataUpdate {
                max_versions: m.max_versions,
                custom: m.custom.map(|c| c.entries.into_iter().collect()),
            };
            s.update_metadata(&path, &update).map_err(vault_err)?;
            let md = s.metadata(&path).map_err(vault_err)?;
            Ok(pb::UpdateMetadataResponse {
                metadata: Some(convert::metadata(&md)),
            })
        })
        .await
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let (token, rid) = match req.extensions().get::<Caller>() {
            Some(c) => (c.token.clone(), c.request_id.clone()),
            None => return Err(Status::unauthenticated("no token")),
        };
        let started = self
            .call("Watch", req, Work::Slow, |s, m| {
                let prefix = ListPrefix::parse(&m.prefix)
                    .map_err(|e| Status::invalid_argument(format!("prefix: {e}")))?;
                s.watch(&prefix).map_err(vault_err)
            })
            .await?;
        let mut w = started.into_inner();
        let (tx, rx) = mpsc::channel::<Result<pb::WatchResponse, Status>>(64);
        let shared = self.0.clone();
        let Some(token) = token else {
            return Err(with_id(Status::unauthenticated("no token"), &rid));
        };
        tokio::spawn(async move {
            let mut stopping = shared.stopping.clone();
            let mut tick = tokio::time::interval(shared.watch_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                // Subscribe before polling so no notification is missed.
                let changed = shared.changed.notified();
                let vault = shared.vault.clone();
                let token = token.clone();
                let polled = tokio::task::spawn_blocking(move || {
                    let text = std::str::from_utf8(token.expose()).unwrap_or("");
                    let principal = vault.authenticate(text)?;
                    let session = vault.session(principal);
                    let changes = session.watch_poll(&mut w, 256)?;
                    Ok::<_, tenant_vault::Error>((w, changes))
                })
                .await;
                let (back, changes) = match polled {
                    Ok(Ok(x)) => x,
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(status(&e))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx
                            .send(Err(Status::internal(format!("watch failed: {e}"))))
                            .await;
                        return;
                    }
                };
                w = back;
                let more = changes.len() >= 256;
                for c in &changes {
                    if tx.send(Ok(convert::change(c))).await.is_err() {
                        return;
                    }
                }
                if more {
                    continue;
                }
                tokio::select! {
                    () = changed => {},
                    _ = tick.tick() => {},
                    () = tx.closed() => return,
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        });
        let stream: WatchStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        tag(Ok(stream), &rid)
    }
}

#[tonic::async_trait]
impl pb::tenants_server::Tenants for Handler {
    async fn create_scope(
        &self,
        req: Request<pb::CreateScopeRequest>,
    ) -> Result<Response<pb::CreateScopeResponse>, Status> {
        self.call("CreateScope", req, Work::Change, |s, m| {
            let slug = convert::slug("slug", &m.slug).map_err(invalid)?;
            let kind = convert::from_kind(m.kind).map_err(invalid)?;
            let c = s.create_scope(&slug, kind).map_err(vault_err)?;
            Ok(pb::CreateScopeResponse {
                created: c.created,
                scope: Some(convert::scope(&c.scope)),
            })
        })
        .await
    }

    async fn delete_scope(
        &self,
        req: Request<pb::DeleteScopeRequest>,
    ) -> Result<Response<pb::DeleteScopeResponse>, Status> {
        self.call("DeleteScope", req, Work::Change, |s, m| {
            let slug = convert::slug("slug", &m.slug).map_err(invalid)?;
            s.delete_scope(&slug).map_err(vault_err)?;
            Ok(pb::DeleteScopeResponse {})
        })
        .await
    }

    async fn list_scopes(
        &self,
        req: Request<pb::ListScopesRequest>,
    ) -> Result<Response<pb::ListScopesResponse>, Status> {
        self.call("ListScopes", req, Work::Slow, |s, _| {
            let scopes = s.list_scopes().map_err(vault_err)?;
            Ok(pb::ListScopesResponse {
                scopes: scopes.iter().map(convert::scope).collect(),
            })
        })
        .await
    }

    async fn get_scope_status(
        &self,
        req: Request<pb::GetScopeStatusRequest>,
    ) -> Result<Response<pb::GetScopeStatusResponse>, Status> {
        self.call("GetScopeStatus", req, Work::Quick, |s, m| {
            let slug = convert::slug("slug", &m.slug).map_err(invalid)?;
            let st = s.scope_status(&slug).map_err(vault_err)?;
            Ok(convert::status(&st))
        })
        .await
    }

    async fn rotate_key(
        &self,
        req: Request<pb::RotateKeyRequest>,
    ) -> Result<Response<pb::RotateKeyResponse>, Status> {
        self.call("RotateKey", req, Work::Change, |s, m| {
            let slug = convert::slug("slug", &m.slug).map_err(invalid)?;
            let (key_version, rewrapped) = s.rotate_key(&slug, m.rewrap).map_err(vault_err)?;
            Ok(pb::RotateKeyResponse {
                key_version,
                rewrapped,
            })
        })
        .await
    }

    async fn get_limits(
        &self,
        req: Request<pb::GetLimitsRequest>,
    ) -> Result<Response<pb::GetLimitsResponse>, Status> {
        self.call("GetLimits", req, Work::Quick, |s, m| {
            let slug = convert::slug("slug", &m.slug).map_err(invalid)?;
            let l = s.limits(&slug).map_err(vault_err)?;
            Ok(pb::GetLimitsResponse {
                limits: Some(convert::limits(&l)),
            })
        })
        .await
    }

    async fn set_limits(
        &self,
        req: Request<pb::SetLimitsRequest>,
    ) -> Result<Response<pb::SetLimitsResponse>, Status> {
        self.call("SetLimits", req, Work::Change, |s, m| {
            let slug = convert::slug("slug", &m.slug).map_err(invalid)?;
            let change = LimitChange {
                plan: m.plan,
                max_secrets: m.max_secrets,
                max_bytes: m.max_bytes,
                max_tokens: m.max_tokens,
                rate_per_sec: m.rate_per_sec,
            };
            s.set_limits(&slug, &change).map_err(vault_err)?;
            let l = s.limits(&slug).map_err(vault_err)?;
            Ok(pb::SetLimitsResponse {
                limits: Some(convert::limits(&l)),
            })
        })
        .await
    }

    async fn issue_token(
        &self,
        req: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        self.call("IssueToken", req, Work::Change, |s, m| {
            let spec = convert::token_spec(&m).map_err(invalid)?;
            let t = s.issue_token(&spec).map_err(vault_err)?;
            let token = String::from_utf8(t.token.expose().to_vec())
                .map_err(|_| Status::internal("the issued token is not UTF-8"))?;
            Ok(pb::IssueTokenResponse {
                id: t.id,
                token,
                expires_at: convert::opt_ts(t.expires_at),
            })
        })
        .await
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        self.call("RevokeToken", req, Work::Change, |s, m| {
            s.revoke_token(&m.id).map_err(vault_err)?;
            Ok(pb::RevokeTokenResponse {})
        })
        .await
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.call("ListTokens", req, Work::Slow, |s, m| {
            let tenant = if m.tenant.is_empty() {
                None
            } else {
                Some(convert::slug("tenant", &m.tenant).map_err(invalid)?)
            };
            let tokens = s.list_tokens(tenant.as_ref()).map_err(vault_err)?;
            Ok(pb::ListTokensResponse {
                tokens: tokens.iter().map(convert::token_info).collect(),
            })
        })
        .await
    }
}

/// Operator tokens only (System calls that act on the whole server). The
/// message is the one the embedded command line gives.
fn operator_only(s: &Session<'_>, what: &str) -> Result<(), Status> {
    match s.principal() {
        Principal::Root | Principal::Operator { .. } => Ok(()),
        _ => Err(Status::permission_denied(format!(
            "permission denied: {what} needs an operator token"
        ))),
    }
}

#[tonic::async_trait]
impl pb::system_server::System for Handler {
    async fn status(
        &self,
        mut req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let rid = caller(&mut req)?.request_id;
        tag(
            Ok(pb::StatusResponse {
                sealed: self.shared().vault.is_sealed(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            }),
            &rid,
        )
    }

    async fn seal(
        &self,
        req: Request<pb::SealRequest>,
    ) -> Result<Response<pb::SealResponse>, Status> {
        let r = self
            .call("Seal", req, Work::Slow, |s, _| {
                operator_only(s, "seal")?;
                Ok(pb::SealResponse {})
            })
            .await?;
        self.shared().vault.seal();
        set_health(self.shared()).await;
        warn!("sealed: every call but Status and Unseal is refused until Unseal");
        Ok(r)
    }

    async fn unseal(
        &self,
        mut req: Request<pb::UnsealRequest>,
    ) -> Result<Response<pb::UnsealResponse>, Status> {
        let started = Instant::now();
        let rid = caller(&mut req)?.request_id;
        let passphrase = Zeroizing::new(req.into_inner().passphrase);
        let vault = self.shared().vault.clone();
        let result = if !vault.is_sealed() {
            Err(Status::already_exists("the vault is not sealed"))
        } else {
            tokio::task::spawn_blocking(move || {
                vault
                    .unseal(&Unlock::Passphrase(Secret::from(passphrase.as_str())))
                    .map_err(vault_err)
            })
            .await
            .unwrap_or_else(|e| Err(Status::internal(format!("unseal failed: {e}"))))
        };
        log("Unseal", &rid, "anonymous", started, result.as_ref().err());
        if result.is_ok() {
            set_health(self.shared()).await;
            info!("unsealed");
        }
        tag(result.map(|()| pb::UnsealResponse {}), &rid)
    }

    async fn ping(
        &self,
        mut req: Request<pb::PingRequest>,
    ) -> Result<Response<pb::PingResponse>, Status> {
        let c = caller(&mut req)?;
        if c.principal.is_none() {
            return Err(with_id(
                Status::unauthenticated("no token: send `authorization: Bearer <token>`"),
                &c.request_id,
            ));
        }
        tag(Ok(pb::PingResponse {}), &c.request_id)
    }

    async fn verify_audit(
        &self,
        req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        let vault = self.shared().vault.clone();
        self.call("VerifyAudit", req, Work::Slow, move |s, _| {
            operator_only(s, "audit verify")?;
            Ok(match vault.verify_audit().map_err(vault_err)? {
                Ok(records) => pb::VerifyAuditResponse {
                    intact: true,
                    records,
                    problem: String::new(),
                },
                Err(p) => pb::VerifyAuditResponse {
                    intact: false,
                    records: 0,
                    problem: p.to_string(),
                },
            })
        })
        .await
    }

    async fn audit_tail(
        &self,
        req: Request<pb::AuditTailRequest>,
    ) -> Result<Response<pb::AuditTailResponse>, Status> {
        let vault = self.shared().vault.clone();
        self.call("AuditTail", req, Work::Slow, move |s, m| {
            operator_only(s, "audit tail")?;
            let records = vault
                .audit_tail(m.lines.clamp(1, 10_000) as usize)
                .map_err(vault_err)?;
            Ok(pb::AuditTailResponse {
                records: records.iter().map(convert::audit_record).collect(),
            })
        })
        .await
    }
}
