//! The typed Rust client.
//!
//! ```no_run
//! # async fn demo() -> Result<(), secret_mcp_grpc::Error> {
//! use secret_mcp_grpc::{Client, ClientOptions};
//! use tenant_vault::{Secret, SecretPath};
//!
//! let client = Client::connect(
//!     "127.0.0.1:7443",
//!     ClientOptions {
//!         token: Some(Secret::from(std::env::var("SECRET_MCP_TOKEN").unwrap_or_default())),
//!         ..ClientOptions::default()
//!     },
//! )
//! .await?;
//! let path = SecretPath::parse("tenant/acme/slack-token").expect("a valid path");
//! let secret = client.get(&path, None).await?;
//! assert!(!secret.value.is_empty());
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tenant_vault::{
    AuditRecord, Change, IssuedToken, LimitChange, Limits, ListPage, ListPrefix, MetadataUpdate,
    ScopeCreated, ScopeInfo, ScopeKind, ScopeStatus, Secret, SecretMetadata, SecretPath, Slug,
    TokenInfo, TokenSpec, VersionedSecret,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use zeroize::{Zeroize, Zeroizing};

use crate::convert::{self, BadField};
use crate::error::Error;
use crate::pb;
use crate::pb::secrets_client::SecretsClient;
use crate::pb::system_client::SystemClient;
use crate::pb::tenants_client::TenantsClient;

/// The first pause between two attempts; it doubles after each retry.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Largest response message the client accepts.
const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// TLS settings of a client.
///
/// This build trusts no system roots: the server's certificate must chain to
/// [`ClientTls::ca_pem`].
#[derive(Clone, Default)]
pub struct ClientTls {
    /// The CA certificate(s) the server's certificate must chain to, PEM.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate chain and its private key, PEM, for servers that
    /// ask for client certificates (mTLS).
    pub identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    /// The name the server's certificate must carry; default: the host of
    /// the address.
    pub domain: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("ca_pem", &self.ca_pem.as_ref().map(|c| c.len()))
            .field(
                "identity",
                &self.identity.as_ref().map(|_| "(certificate, [REDACTED])"),
            )
            .field("domain", &self.domain)
            .finish()
    }
}

/// How a client connects and calls.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The bearer token sent with every call (`smcpt_...` or `smcpo_...`).
    /// `None`: only [`Client::status`] and [`Client::unseal`] succeed.
    /// Its `Debug` output is redacted.
    pub token: Option<Secret>,
    /// TLS; `None`: plaintext unless the address starts with `https://`.
    pub tls: Option<ClientTls>,
    /// Time allowed to connect, and for each call to be answered. Default
    /// 30 seconds.
    pub timeout: Duration,
    /// How many times a call that is safe to repeat is tried again after an
    /// `UNAVAILABLE` status or a connection failure. Default 3.
    pub retries: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            token: None,
            tls: None,
            timeout: Duration::from_secs(30),
            retries: 3,
        }
    }
}

/// Adds `authorization: Bearer <token>` to every call, marked sensitive so
/// that it is never logged.
#[derive(Clone)]
struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type Chan = InterceptedService<Channel, Auth>;

/// A Secret MCP client: one HTTP/2 connection shared by every clone.
///
/// Each method mirrors one RPC of `proto/secret_mcp/v1/secret_mcp.proto`,
/// with the vault's own types. Errors are [`Error::Status`] with the server's
/// code and message (the message is the vault's own error text), or
/// [`Error::Transport`] when the server could not be reached.
///
/// # Retries
///
/// A call that is safe to repeat — repeating it cannot change the vault
/// beyond what one call does — is tried again, up to
/// [`ClientOptions::retries`] times, after an `UNAVAILABLE` status (the
/// server is sealed, or its audit trail is briefly unwritable) or a
/// connection failure, pausing 50 ms, then 100 ms, 200 ms, and so on. That is
/// every call except:
///
/// - [`Client::put`] (without check-and-set a repeat would write a second
///   version; with it, a repeat of a put that landed would report a
///   conflict for a write that succeeded),
/// - [`Client::delete`], [`Client::undelete`] and [`Client::destroy`] of the
///   current version (empty `versions`: a repeat after another writer's
///   put would act on the newer version; with explicit versions they are
///   retried),
/// - [`Client::issue_token`] (a repeat would issue a second token),
/// - [`Client::rotate_key`] (a repeat would rotate twice).
///
/// [`Client::create_scope`] is idempotent and is retried. Connecting is
/// retried the same way.
#[derive(Clone)]
pub struct Client {
    secrets: SecretsClient<Chan>,
    tenants: TenantsClient<Chan>,
    system: SystemClient<Chan>,
    retries: u32,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

/// Whether a call may be sent again after a failure that may have reached the
/// server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repeat {
    Safe,
    Unsafe,
}

impl Repeat {
    /// Deleting, restoring or destroying named versions twice is the same
    /// as once; doing it to "the current version" twice is not when another
    /// writer adds a version in between.
    fn versions(versions: &[u64]) -> Repeat {
        if versions.is_empty() {
            Repeat::Unsafe
        } else {
            Repeat::Safe
        }
    }
}

fn protocol(e: BadField) -> Error {
    Error::Protocol(e.0)
}

fn missing(what: &str) -> Error {
    Error::Protocol(format!("{what}: missing"))
}

/// A status made by the client itself (the connection failed, timed out or
/// was refused) carries its cause; one sent by the server does not.
fn from_status(s: tonic::Status) -> Error {
    use std::error::Error as _;
    match s.source() {
        None => Error::from(s),
        Some(source) => {
            let chain = error_chain(source);
            Error::Transport(if s.message().is_empty() || chain.contains(s.message()) {
                chain
            } else {
                format!("{}: {chain}", s.message())
            })
        }
    }
}

/// An error and its causes, each said once (a cause often repeats its
/// wrapper's text).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(e);
    while let Some(e) = next {
        let t = e.to_string();
        if !parts.last().is_some_and(|p| p.contains(&t)) {
            parts.push(t);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// `UNAVAILABLE`: sent by the server (sealed, audit trail briefly
/// unwritable), or made by the client when the connection failed. A timeout
/// or any other failure is not retried.
fn retryable(s: &tonic::Status) -> bool {
    s.code() == tonic::Code::Unavailable
}

/// Builds the endpoint URI and tells whether TLS is asked for.
fn endpoint_uri(addr: &str, tls: bool) -> Result<(String, bool), Error> {
    let addr = addr.trim();
    if addr.is_empty() {
        return Err(Error::InvalidArgument("the server address is empty".into()));
    }
    if let Some(rest) = addr.strip_prefix("https://") {
        Ok((format!("https://{rest}"), true))
    } else if let Some(rest) = addr.strip_prefix("http://") {
        if tls {
            return Err(Error::InvalidArgument(format!(
                "`{addr}` asks for plaintext, but TLS settings were given: use https:// or \
                 host:port"
            )));
        }
        Ok((format!("http://{rest}"), false))
    } else if addr.contains("://") {
        Err(Error::InvalidArgument(format!(
            "`{addr}`: the address is host:port, http://host:port or https://host:port"
        )))
    } else if tls {
        Ok((format!("https://{addr}"), true))
    } else {
        Ok((format!("http://{addr}"), false))
    }
}

fn tls_config(tls: &ClientTls) -> Result<ClientTlsConfig, Error> {
    let ca = tls.ca_pem.as_ref().ok_or_else(|| {
        Error::Tls(
            "a CA certificate is needed to check the server (this client trusts no system \
             roots): give the CA that signed the server's certificate"
                .into(),
        )
    })?;
    let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some((cert, key)) = &tls.identity {
        cfg = cfg.identity(Identity::from_pem(cert, key.as_slice()));
    }
    if let Some(d) = &tls.domain {
        cfg = cfg.domain_name(d.clone());
    }
    Ok(cfg)
}

impl Client {
    /// Connects to `addr`: `host:port`, `http://host:port` or
    /// `https://host:port`. TLS is used for `https://` addresses and whenever
    /// [`ClientOptions::tls`] is set. Connection failures are retried as
    /// calls are (see [`Client`]).
    pub async fn connect(addr: &str, options: ClientOptions) -> Result<Client, Error> {
        let (uri, use_tls) = endpoint_uri(addr, options.tls.is_some())?;
        let mut endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|_| Error::InvalidArgument(format!("`{addr}` is not a valid address")))?
            .connect_timeout(options.timeout)
            .timeout(options.timeout)
            .tcp_nodelay(true);
        if use_tls {
            let tls = options.tls.clone().unwrap_or_default();
            endpoint = endpoint
                .tls_config(tls_config(&tls)?)
                .map_err(|e| Error::Tls(Error::from(e).to_string()))?;
        }
        let auth = match &options.token {
            None => Auth(None),
            Some(t) => {
                let mut text = Zeroizing::new(String::from("Bearer "));
                let token = std::str::from_utf8(t.expose())
                    .map_err(|_| Error::InvalidArgument("the token is not valid text".into()))?;
                text.push_str(token.trim());
                let mut v = MetadataValue::try_from(text.as_str()).map_err(|_| {
                    Error::InvalidArgument(
                        "the token holds characters that cannot be sent in a header".into(),
                    )
                })?;
                v.set_sensitive(true);
                Auth(Some(v))
            }
        };
        let mut attempt = 0;
        let channel = loop {
            match endpoint.connect().await {
                Ok(c) => break c,
                Err(e) if attempt < options.retries => {
                    tracing::debug!(attempt, error = %Error::from(e), "connect failed, retrying");
                    tokio::time::sleep(FIRST_BACKOFF * 2u32.saturating_pow(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    return Err(Error::Transport(format!(
                        "connecting to {uri}: {}",
                        error_chain(&e)
                    )));
                }
            }
        };
        let svc = InterceptedService::new(channel, auth);
        Ok(Client {
            secrets: SecretsClient::new(svc.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES),
            tenants: TenantsClient::new(svc.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES),
            system: SystemClient::new(svc).max_decoding_message_size(MAX_RESPONSE_BYTES),
            retries: options.retries,
        })
    }

    /// Makes one call, trying again as documented on [`Client`].
    async fn call<T, F, Fut>(&self, repeat: Repeat, mut f: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut attempt = 0;
        loop {
            match f().await {
                Ok(r) => return Ok(r.into_inner()),
                Err(s) => {
                    let again = retryable(&s);
                    let e = from_status(s);
                    if repeat == Repeat::Unsafe || attempt >= self.retries || !again {
                        return Err(e);
                    }
                    tracing::debug!(attempt, error = %e, "call failed, retrying");
                    tokio::time::sleep(FIRST_BACKOFF * 2u32.saturating_pow(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    // ------------------------------------------------------------ Secrets

    /// Writes a new version of a secret and returns its number. With `cas`,
    /// writes only if the current version is `cas` (0: only a new secret).
    /// Retried only with `cas`.
    pub async fn put(
        &self,
        path: &SecretPath,
        value: &Secret,
        cas: Option<u64>,
    ) -> Result<u64, Error> {
        let mut req = pb::PutRequest {
            path: path.to_string(),
            value: value.expose().to_vec(),
            cas,
        };
        let r = self
            .call(Repeat::Unsafe, || {
                let mut c = self.secrets.clone();
                let req = req.clone();
                async move { c.put(req).await }
            })
            .await;
        req.value.zeroize();
        Ok(r?.version)
    }

    /// Reads the current version of a secret, or a given one.
    pub async fn get(
        &self,
        path: &SecretPath,
        version: Option<u64>,
    ) -> Result<VersionedSecret, Error> {
        let req = pb::GetRequest {
            path: path.to_string(),
            version,
        };
        let r = self
            .call(Repeat::Safe, || {
                let mut c = self.secrets.clone();
                let req = req.clone();
                async move { c.get(req).await }
            })
            .await?;
        Ok(VersionedSecret {
            version: r.version,
            created_at: convert::from_ts(r.created_at),
            value: Secret::new(r.value),
        })
    }

    /// One page of the names under `prefix`, after the cursor `after`, at
    /// most `limit` of them (1 to 1000; 0: the server's default of 100).
    pub async fn list(
        &self,
        prefix: &ListPrefix,
        after: Option<&str>,
        limit: usize,
    ) -> Result<ListPage, Error> {
        let req = pb::ListRequest {
            prefix: prefix.to_string(),
            after: after.unwrap_or_default().to_owned(),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
        };
        let r = self
            .call(Repeat::Safe, || {
                let mut c = self.secrets.clone();
                let req = req.clone();
                async move { c.list(req).await }
            })
            .await?;
        let paths = r
            .paths
            .iter()
            .map(|p| convert::path("paths", p))
            .collect::<Result<_, _>>()
            .map_err(protocol)?;
        Ok(ListPage {
            paths,
            next: (!r.next.is_empty()).then_some(r.next),
        })
    }

    /// Soft-deletes versions (empty: the current one); returns those deleted.
    pub async fn delete(&self, path: &SecretPath, versions: &[u64]) -> Result<Vec<u64>, Error> {
        let req = pb::DeleteRequest {
            path: path.to_string(),
            versions: versions.to_vec(),
        };
        let r = self
            .call(Repeat::versions(versions), || {
                let mut c = self.secrets.clone();
                let req = req.clone();
                async move { c.delete(req).await }
            })
            .await?;
        Ok(r.versions)
    }

    /// Restores soft-deleted versions (empty: the current one).
    pub async fn undelete(&self, path: &SecretPath, versions: &[u64]) -> Result<Vec<u64>, Error> {
        let req = pb::UndeleteRequest {
            path: path.to_string(),
            versions: versions.to_vec(),
        };
        let r = self
            .call(Repeat::versions(versions), || {
                let mut c = self.secrets.clone();
                let req = req.clone();
                async move { c.undelete(req).await }
            })
            .await?;
        Ok(r.versions)
    }

    /// Wipes versions for good (empty: the current one).
    pub async fn destroy(&self, path: &SecretPath, versions: &[u64]) -> Result<Vec<u64>, Error> {
        let req = pb::DestroyRequest {
            path: path.to_string(),
            versions: versions.to_vec(),
        };
        let r = self
            .call(Repeat::versions(versions), || {
                let mut c = self.secrets.clone();
                let req = req.clone();
                async move { c.destroy(req).await }
            })
            .await?;
        Ok(r.versions)
    }

    /// A secret's metadata and versions.
    pub async fn metadata(&self, path: &SecretPath) -> Result<SecretMetadata, Error> {
        let req = pb::GetMetadataRequest {
            path: path.to_string(),
        };
        let r = self
            .call(Repeat::Safe, || {
                let mut c = self.secrets.clone();
                let req = req.clone();
                async move { c.get_metadata(req).await }
            })
            .await?;
        convert::from_metadata(r.metadata).map_err(protocol)
    }

    /// Changes a secret's metadata; returns it as it now is.
    pub async fn update_metadata(
        &self,
        path: &SecretPath,
        update: &MetadataUpdate,
    ) -> Result<SecretMetadata, Error> {
        let req = pb::UpdateMetadataRequest {
            path: path.to_string(),
            max_versions: update.max_versions,
            custom: update.custom.as_ref().map(|m| pb::CustomMetadata {
                entries: m.clone().into_iter().collect(),
            }),
        };
        let r = self
            .call(Repeat::Safe, || {
                let mut c = self.secrets.clone();
                let req = req.clone();
                async move { c.update_metadata(req).await }
            })
            .await?;
        convert::from_metadata(r.metadata).map_err(protocol)
    }

    /// Watches the secrets under `prefix`: the stream yields each change made
    /// from now on (never a value), and ends with an `UNAUTHENTICATED` error
    /// when the token expires or is revoked.
    pub async fn watch(&self, prefix: &ListPrefix) -> Result<WatchStream, Error> {
        let req = pb::WatchRequest {
            prefix: prefix.to_string(),
        };
        let inner = self
            .call(Repeat::Safe, || {
                let mut c = self.secrets.clone();
                let req = req.clone();
                async move { c.watch(req).await }
            })
            .await?;
        Ok(WatchStream { inner })
    }

    // ------------------------------------------------------------ Tenants

    /// Creates a tenant scope; an existing one is a success with
    /// `created = false`. Idempotent, so retried.
    pub async fn create_scope(&self, slug: &Slug, kind: ScopeKind) -> Result<ScopeCreated, Error> {
        let req = pb::CreateScopeRequest {
            slug: slug.to_string(),
            kind: convert::kind(kind) as i32,
        };
        let r = self
            .call(Repeat::Safe, || {
                let mut c = self.tenants.clone();
                let req = req.clone();
                async move { c.create_scope(req).await }
            })
            .await?;
        Ok(ScopeCreated {
            created: r.created,
            scope: convert::from_scope(r.scope).map_err(protocol)?,
        })
    }

    /// Deletes a tenant scope and crypto-shreds its secrets.
    pub async fn delete_scope(&self, slug: &Slug) -> Result<(), Error> {
        let req = pb::DeleteScopeRequest {
            slug: slug.to_string(),
        };
        self.call(Repeat::Safe, || {
            let mut c = self.tenants.clone();
            let req = req.clone();
            async move { c.delete_scope(req).await }
        })
        .await?;
        Ok(())
    }

    /// Every tenant scope in the caller's reach.
    pub async fn list_scopes(&self) -> Result<Vec<ScopeInfo>, Error> {
        let r = self
            .call(Repeat::Safe, || {
                let mut c = self.tenants.clone();
                async move { c.list_scopes(pb::ListScopesRequest {}).await }
            })
            .await?;
        r.scopes
            .into_iter()
            .map(|s| convert::from_scope(Some(s)))
            .collect::<Result<_, _>>()
            .map_err(protocol)
    }

    /// A tenant's secret count, stored bytes, creation time and key version.
    pub async fn scope_status(&self, slug: &Slug) -> Result<ScopeStatus, Error> {
        let req = pb::GetScopeStatusRequest {
            slug: slug.to_string(),
        };
        let r = self
            .call(Repeat::Safe, || {
                let mut c = self.tenants.clone();
                let req = req.clone();
                async move { c.get_scope_status(req).await }
            })
            .await?;
        convert::from_status(r).map_err(protocol)
    }

    /// Gives a tenant a new data key; with `rewrap`, re-encrypts older
    /// versions too. Returns the new key version and how many versions moved.
    /// Not retried.
    pub async fn rotate_key(&self, slug: &Slug, rewrap: bool) -> Result<(u32, u64), Error> {
        let req = pb::RotateKeyRequest {
            slug: slug.to_string(),
            rewrap,
        };
        let r = self
            .call(Repeat::Unsafe, || {
                let mut c = self.tenants.clone();
                let req = req.clone();
                async move { c.rotate_key(req).await }
            })
            .await?;
        Ok((r.key_version, r.rewrapped))
    }

    /// A tenant's limits.
    pub async fn limits(&self, slug: &Slug) -> Result<Limits, Error> {
        let req = pb::GetLimitsRequest {
            slug: slug.to_string(),
        };
        let r = self
            .call(Repeat::Safe, || {
                let mut c = self.tenants.clone();
                let req = req.clone();
                async move { c.get_limits(req).await }
            })
            .await?;
        convert::from_limits(r.limits).map_err(protocol)
    }

    /// Changes a tenant's plan or overrides its limits; returns the limits as
    /// they now are.
    pub async fn set_limits(&self, slug: &Slug, change: &LimitChange) -> Result<Limits, Error> {
        let req = pb::SetLimitsRequest {
            slug: slug.to_string(),
            plan: change.plan.clone(),
            max_secrets: change.max_secrets,
            max_bytes: change.max_bytes,
            max_tokens: change.max_tokens,
            rate_per_sec: change.rate_per_sec,
        };
        let r = self
            .call(Repeat::Safe, || {
                let mut c = self.tenants.clone();
                let req = req.clone();
                async move { c.set_limits(req).await }
            })
            .await?;
        convert::from_limits(r.limits).map_err(protocol)
    }

    /// Issues a token; the token itself is in the result only. Not retried.
    pub async fn issue_token(&self, spec: &TokenSpec) -> Result<IssuedToken, Error> {
        let req = convert::issue_request(spec);
        let r = self
            .call(Repeat::Unsafe, || {
                let mut c = self.tenants.clone();
                let req = req.clone();
                async move { c.issue_token(req).await }
            })
            .await?;
        let pb::IssueTokenResponse {
            id,
            token,
            expires_at,
        } = r;
        if token.is_empty() {
            return Err(missing("token"));
        }
        Ok(IssuedToken {
            id,
            token: Secret::from(token),
            expires_at: convert::from_opt_ts(expires_at),
        })
    }

    /// Revokes a token by id, at once.
    pub async fn revoke_token(&self, id: &str) -> Result<(), Error> {
        let req = pb::RevokeTokenRequest { id: id.to_owned() };
        self.call(Repeat::Safe, || {
            let mut c = self.tenants.clone();
            let req = req.clone();
            async move { c.revoke_token(req).await }
        })
        .await?;
        Ok(())
    }

    /// Token descriptions (never the tokens): one tenant's, or all.
    pub async fn list_tokens(&self, tenant: Option<&Slug>) -> Result<Vec<TokenInfo>, Error> {
        let req = pb::ListTokensRequest {
            tenant: tenant.map(ToString::to_string).unwrap_or_default(),
        };
        let r = self
            .call(Repeat::Safe, || {
                let mut c = self.tenants.clone();
                let req = req.clone();
                async move { c.list_tokens(req).await }
            })
            .await?;
        r.tokens
            .into_iter()
            .map(convert::from_token_info)
            .collect::<Result<_, _>>()
            .map_err(protocol)
    }

    // ------------------------------------------------------------ System

    /// Whether the server is sealed, and its version. Needs no token.
    pub async fn status(&self) -> Result<(bool, String), Error> {
        let r = self
            .call(Repeat::Safe, || {
                let mut c = self.system.clone();
                async move { c.status(pb::StatusRequest {}).await }
            })
            .await?;
        Ok((r.sealed, r.version))
    }

    /// Seals the server (operators).
    pub async fn seal(&self) -> Result<(), Error> {
        self.call(Repeat::Safe, || {
            let mut c = self.system.clone();
            async move { c.seal(pb::SealRequest {}).await }
        })
        .await?;
        Ok(())
    }

    /// Unseals the server with the vault's passphrase (needs no token).
    pub async fn unseal(&self, passphrase: &Secret) -> Result<(), Error> {
        let text = std::str::from_utf8(passphrase.expose())
            .map_err(|_| Error::InvalidArgument("the passphrase is not valid UTF-8".into()))?;
        let mut req = pb::UnsealRequest {
            passphrase: text.to_owned(),
        };
        let r = self
            .call(Repeat::Safe, || {
                let mut c = self.system.clone();
                let req = req.clone();
                async move { c.unseal(req).await }
            })
            .await;
        req.passphrase.zeroize();
        r.map(|_| ())
    }

    /// Does nothing but authenticate.
    pub async fn ping(&self) -> Result<(), Error> {
        self.call(Repeat::Safe, || {
            let mut c = self.system.clone();
            async move { c.ping(pb::PingRequest {}).await }
        })
        .await?;
        Ok(())
    }

    /// Checks the audit chain (operators): `Ok(records)` when intact, else
    /// `Err(the first problem)`.
    pub async fn verify_audit(&self) -> Result<Result<u64, String>, Error> {
        let r = self
            .call(Repeat::Safe, || {
                let mut c = self.system.clone();
                async move { c.verify_audit(pb::VerifyAuditRequest {}).await }
            })
            .await?;
        Ok(if r.intact {
            Ok(r.records)
        } else {
            Err(r.problem)
        })
    }

    /// The last `lines` audit records, oldest first (operators).
    pub async fn audit_tail(&self, lines: usize) -> Result<Vec<AuditRecord>, Error> {
        let lines = u32::try_from(lines).unwrap_or(u32::MAX);
        let r = self
            .call(Repeat::Safe, || {
                let mut c = self.system.clone();
                async move { c.audit_tail(pb::AuditTailRequest { lines }).await }
            })
            .await?;
        Ok(r.records
            .into_iter()
            .map(convert::from_audit_record)
            .collect())
    }
}

/// The changes of a [`Client::watch`], as they happen. Read them with
/// [`WatchStream::next`], or as a [`tokio_stream::Stream`].
pub struct WatchStream {
    inner: tonic::Streaming<pb::WatchResponse>,
}

impl fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchStream").finish_non_exhaustive()
    }
}

impl WatchStream {
    /// The next change; `None` when the server ended the stream.
    pub async fn next(&mut self) -> Option<Result<Change, Error>> {
        match self.inner.message().await {
            Ok(Some(c)) => Some(convert::from_change(c).map_err(protocol)),
            Ok(None) => None,
            Err(s) => Some(Err(from_status(s))),
        }
    }
}

impl tokio_stream::Stream for WatchStream {
    type Item = Result<Change, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(c))) => {
                Poll::Ready(Some(convert::from_change(c).map_err(protocol)))
            }
            Poll::Ready(Some(Err(s))) => Poll::Ready(Some(Err(from_status(s)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            endpoint_uri("127.0.0.1:7443", false).unwrap(),
            ("http://127.0.0.1:7443".into(), false)
        );
        assert_eq!(
            endpoint_uri("vault.internal:7443", true).unwrap(),
            ("https://vault.internal:7443".into(), true)
        );
        assert_eq!(
            endpoint_uri("https://v:1", false).unwrap(),
            ("https://v:1".into(), true)
        );
        assert_eq!(
            endpoint_uri("http://v:1", false).unwrap(),
            ("http://v:1".into(), false)
        );
        assert!(endpoint_uri("http://v:1", true).is_err());
        assert!(endpoint_uri("ftp://v:1", false).is_err());
        assert!(endpoint_uri(" ", false).is_err());
    }

    #[test]
    fn debug_never_shows_the_token_or_key() {
        let o = ClientOptions {
            token: Some(Secret::from("smcpt_not-a-real-token")),
            tls: Some(ClientTls {
                ca_pem: None,
                identity: Some((b"cert".to_vec(), Zeroizing::new(b"private-key".to_vec()))),
                domain: None,
            }),
            ..ClientOptions::default()
        };
        let shown = format!("{o:?}");
        assert!(!shown.contains("not-a-real-token"), "{shown}");
        assert!(!shown.contains("private-key"), "{shown}");
    }

    #[test]
    fn only_unavailable_is_retried() {
        assert!(retryable(&tonic::Status::unavailable(
            "the vault is sealed"
        )));
        assert!(!retryable(&tonic::Status::not_found("x")));
        assert!(!retryable(&tonic::Status::deadline_exceeded("slow")));
        assert!(!retryable(&tonic::Status::cancelled("timeout")));
    }

    #[tokio::test]
    async fn connect_fails_with_a_transport_error_when_nothing_listens() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        let e = Client::connect(
            &addr.to_string(),
            ClientOptions {
                retries: 1,
                ..ClientOptions::default()
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::Transport(_)), "{e:?}");
    }

    #[tokio::test]
    async fn tls_without_a_ca_is_refused_before_connecting() {
        let e = Client::connect("https://127.0.0.1:1", ClientOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Tls(_)), "{e:?}");
    }
}
