//! The crate's error type.

use std::net::SocketAddr;

/// What can go wrong serving or calling Secret MCP. Messages never hold a
/// secret value or a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Plaintext gRPC was asked for on an address other than loopback
    /// without [`crate::ServerOptions::allow_plaintext_non_loopback`].
    #[error(
        "refusing to serve plaintext gRPC on {0}: configure TLS, bind a loopback address, or \
         pass --insecure-plaintext-non-loopback"
    )]
    PlaintextNotLoopback(SocketAddr),
    /// A certificate or key could not be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The network: bind, connect, or the transport failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The server answered with an error status.
    #[error("{}", status_text(.code, .message))]
    Status {
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// An address or argument could not be used.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The server sent a message this client cannot read.
    #[error("protocol: {0}")]
    Protocol(String),
}

fn status_text(code: &tonic::Code, message: &str) -> String {
    format!("{message} ({})", code.description())
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        Error::Status {
            code: s.code(),
            message: s.message().to_owned(),
        }
    }
}

impl From<tonic::transport::Error> for Error {
    fn from(e: tonic::transport::Error) -> Self {
        use std::error::Error as _;
        let mut text = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        Error::Transport(text)
    }
}
