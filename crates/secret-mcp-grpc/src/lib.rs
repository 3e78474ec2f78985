//! Secret MCP: the Tenant Vault over gRPC.
//!
//! The contract is `proto/secret_mcp/v1/secret_mcp.proto` (services
//! `Secrets`, `Tenants` and `System`, plus the standard health service and
//! server reflection); [`pb`] holds the code generated from it by protox and
//! tonic, without a system `protoc`.
//!
//! - [`Server`] serves a [`tenant_vault::Vault`]: an interceptor
//!   authenticates the bearer token of every call and attaches the caller's
//!   principal; the handler runs the matching `Session` method, so
//!   authorization, tenant isolation, rate limits and the audit trail are
//!   exactly those of embedded use. Every core error becomes the status code
//!   the contract lists, with a message that never holds a value. TLS and
//!   mutual TLS use rustls; plaintext is refused off loopback unless
//!   explicitly allowed.
//! - [`Client`] is the typed client: vault types in, vault types out, with
//!   retries of `UNAVAILABLE` for the calls that are safe to repeat.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use secret_mcp_grpc::{Client, ClientOptions, Server, ServerOptions};
//! use tenant_vault::{
//!     Role, ScopeKind, Secret, SecretPath, Slug, SqliteStore, TokenSpec, Unlock, Vault,
//!     VaultOptions, create_key_file,
//! };
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! create_key_file(dir.path().join("vault.key"))?;
//! let vault = Arc::new(Vault::init(
//!     SqliteStore::open(dir.path().join("vault.db"))?,
//!     &Unlock::KeyFile(dir.path().join("vault.key")),
//!     VaultOptions::default(),
//! )?);
//! let acme = Slug::parse("acme")?;
//! vault.root_session().create_scope(&acme, ScopeKind::Enterprise)?;
//! let issued = vault.root_session().issue_token(&TokenSpec {
//!     tenant: Some(acme),
//!     role: Some(Role::User),
//!     ..Default::default()
//! })?;
//!
//! // Serve on a free loopback port until `stop` is sent.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let addr = listener.local_addr()?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(Server::new(vault, ServerOptions::default()).serve(
//!     listener,
//!     async move {
//!         let _ = stopped.await;
//!     },
//! ));
//!
//! // A service of tenant `acme`, with its token.
//! let client = Client::connect(
//!     &addr.to_string(),
//!     ClientOptions { token: Some(issued.token), ..Default::default() },
//! )
//! .await?;
//! let path = SecretPath::parse("tenant/acme/slack-token")?;
//! client.put(&path, &Secret::from("xoxb-demo"), None).await?;
//! assert_eq!(client.get(&path, None).await?.value.expose(), b"xoxb-demo");
//!
//! // Another tenant's path is refused, whatever the token's role.
//! let other = SecretPath::parse("tenant/globex/slack-token")?;
//! let refused = client.get(&other, None).await.unwrap_err();
//! assert!(matches!(
//!     refused,
//!     secret_mcp_grpc::Error::Status { code: tonic::Code::PermissionDenied, .. }
//! ));
//!
//! let _ = stop.send(());
//! server.await??;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod client;
mod convert;
mod error;
mod server;

/// Code generated from `proto/secret_mcp/v1/secret_mcp.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("secret_mcp.v1");

    /// The encoded file descriptor set, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("secret_mcp_descriptor");
}

pub use crate::client::{Client, ClientOptions, ClientTls, WatchStream};
pub use crate::error::Error;
pub use crate::server::{Server, ServerOptions, ServerTls, shutdown_signal};
