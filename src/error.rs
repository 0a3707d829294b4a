//! The library's error type, and the kinds the command line maps to exit codes.

use std::io;

use crate::endpoint::Endpoint;

/// Errors returned by socketkit's library API.
///
/// Callers match on [`Error::kind`] (the CLI turns it into an exit code; a load generator counts
/// refusals and time-outs apart). `Display` is one line and never repeats its source's text:
/// print the chain (`{:#}` with anyhow) to see the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The endpoint text could not be parsed. `reason` names the part that is wrong.
    #[error("bad endpoint {text:?}: {reason}")]
    BadEndpoint {
        /// The text as given.
        text: String,
        /// What is wrong with it, naming the part.
        reason: String,
    },
    /// A host name did not resolve to any address.
    #[error("name not found: {host}")]
    NameNotFound {
        /// The name that was looked up.
        host: String,
    },
    /// Address text (or packed bytes) could not be read. `reason` names the part that is wrong.
    #[error("bad address {text:?}: {reason}")]
    BadAddress {
        /// The text as given (packed bytes as hex).
        text: String,
        /// What is wrong with it, naming the part.
        reason: String,
    },
    /// A service is neither in the system's services database nor in the built-in table.
    #[error("service not found: {service}/{protocol}")]
    ServiceNotFound {
        /// The service name or port number that was looked up.
        service: String,
        /// `tcp` or `udp`.
        protocol: &'static str,
    },
    /// No network interface has this name or address (a multicast group's interface).
    #[error("network interface not found: {interface}")]
    InterfaceNotFound {
        /// The interface's name or address, as given.
        interface: String,
    },
    /// The resolver failed for another reason (a temporary failure, a system error).
    #[error("cannot resolve {host}: {reason}")]
    Resolve {
        /// The name that was looked up.
        host: String,
        /// The resolver's own message.
        reason: String,
    },
    /// Binding a listening socket failed, for example because the address is in use.
    #[error("cannot bind {endpoint}")]
    Bind {
        /// The endpoint that could not be bound.
        endpoint: Endpoint,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
    /// Connecting to a server failed (on every address its name resolved to).
    #[error("cannot connect to {endpoint}")]
    Connect {
        /// The endpoint that was tried.
        endpoint: Endpoint,
        /// The reason the last address failed.
        #[source]
        source: io::Error,
    },
    /// The server reset the connection (an RST): `received` bytes of the reply had arrived.
    /// Before any reply it is a refusal (a denied peer is reset), after part of one a failure.
    #[error("connection to {endpoint} reset by the server {}", reset_when(*.received))]
    Reset {
        /// The endpoint that was connected to.
        endpoint: Endpoint,
        /// Bytes of the reply that had arrived before the reset.
        received: u64,
    },
    /// Requests of a load run (`socketkit bench`) failed with connection errors.
    #[error("{failed} requests failed ({kinds}): first: {first}")]
    RequestsFailed {
        /// How many requests failed.
        failed: u64,
        /// Their counts by kind, for example "86 refused".
        kinds: String,
        /// The first error's text, and a hint when every failure looked the same.
        first: String,
        /// Whether every failure was a refusal (or a reset before any reply): kind `Refused`.
        refused: bool,
    },
    /// Nothing arrived within the allowed time.
    #[error("timed out after {after:?} waiting for {what}")]
    TimedOut {
        /// What was awaited, e.g. "a reply".
        what: &'static str,
        /// How long was waited.
        after: std::time::Duration,
    },
    /// The peer broke the protocol, or a message exceeds a limit.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A setting is invalid or missing (for example a server with no endpoint).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A TLS handshake failed. `cause` names why, in one phrase that starts with the class of
    /// failure (`unknown issuer`, `name mismatch`, `expired`, `protocol`, ...).
    #[error("TLS handshake with {peer} failed: {cause}")]
    Tls {
        /// The peer: the endpoint connected to, or the address of a client.
        peer: String,
        /// Why, naming the class of failure first.
        cause: String,
    },
    /// Any other I/O failure.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The system's reason.
        #[source]
        source: io::Error,
    },
}

fn reset_when(received: u64) -> String {
    match received {
        0 => "before any reply".to_string(),
        1 => "after 1 byte of the reply".to_string(),
        n => format!("after {n} bytes of the reply"),
    }
}

/// The classes of failure that socketkit tells apart, each with its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad usage or arguments (exit code 2).
    Usage,
    /// A protocol error: a bad frame, an oversize message, a reply that failed verification (3).
    Protocol,
    /// The connection was refused (4).
    Refused,
    /// Timed out (5).
    TimedOut,
    /// A name was not found (6).
    NameNotFound,
    /// A listening socket could not be bound: address in use, permission denied (7).
    CannotBind,
    /// A TLS handshake failed: an untrusted or expired certificate, a name mismatch, a peer
    /// that does not speak TLS (8).
    Tls,
    /// Any other failure (1).
    Other,
}

impl ErrorKind {
    /// The process exit code socketkit's command line uses for this kind.
    ///
    /// ```
    /// use socketkit::ErrorKind;
    /// assert_eq!(ErrorKind::Refused.exit_code(), 4);
    /// assert_eq!(ErrorKind::CannotBind.exit_code(), 7);
    /// ```
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Other => 1,
            ErrorKind::Usage => 2,
            ErrorKind::Protocol => 3,
            ErrorKind::Refused => 4,
            ErrorKind::TimedOut => 5,
            ErrorKind::NameNotFound => 6,
            ErrorKind::CannotBind => 7,
            ErrorKind::Tls => 8,
        }
    }

    /// Classifies a bare I/O error, for errors that reach the edge without a socketkit wrapper.
    pub fn of_io(error: &io::Error) -> ErrorKind {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => ErrorKind::Refused,
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ErrorKind::TimedOut,
            io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable => ErrorKind::CannotBind,
            _ => ErrorKind::Other,
        }
    }
}

impl Error {
    /// The class of this error; see [`ErrorKind::exit_code`].
    ///
    /// ```
    /// use socketkit::{Endpoint, ErrorKind};
    /// let err = "tcp://localhost".parse::<Endpoint>().unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::Usage);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::BadEndpoint { .. } | Error::Config(_) => ErrorKind::Usage,
            Error::BadAddress { .. } => ErrorKind::Usage,
            Error::NameNotFound { .. }
            | Error::ServiceNotFound { .. }
            | Error::InterfaceNotFound { .. } => ErrorKind::NameNotFound,
            Error::Resolve { .. } => ErrorKind::Other,
            // Binding fails for many reasons (in use, permission, no such address, a bad path):
            // all of them mean "cannot bind".
            Error::Bind { .. } => ErrorKind::CannotBind,
            Error::Connect { source, .. } => match ErrorKind::of_io(source) {
                ErrorKind::CannotBind => ErrorKind::Other,
                kind => kind,
            },
            Error::Reset { received: 0, .. } => ErrorKind::Refused,
            Error::Reset { .. } => ErrorKind::Other,
            Error::RequestsFailed { refused: true, .. } => ErrorKind::Refused,
            Error::RequestsFailed { .. } => ErrorKind::Other,
            Error::TimedOut { .. } => ErrorKind::TimedOut,
            Error::Protocol(_) => ErrorKind::Protocol,
            Error::Tls { .. } => ErrorKind::Tls,
            Error::Io { source, .. } => match ErrorKind::of_io(source) {
                ErrorKind::CannotBind => ErrorKind::Other,
                kind => kind,
            },
        }
    }

    /// Wraps an I/O error with a short description of what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
