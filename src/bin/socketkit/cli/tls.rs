//! The TLS flags of `tls://` endpoints: a server's (serve, listen, relay's LISTEN) and a
//! client's (send, client, bench, relay's TARGET).

use std::path::PathBuf;

use clap::Args;

/// `serve`'s TLS flags.
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "TLS (tls:// endpoints; the async engine only)")]
pub struct TlsServerArgs {
    /// The server's certificate chain, PEM (the server's certificate first). With --tls-key.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "tls_self_signed"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The certificate's private key, PEM, not encrypted (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Make a fresh self-signed certificate at start for the tls:// listen names (an
    /// unspecified address stands for localhost, 127.0.0.1 and ::1), and log its SHA-256
    /// fingerprint for clients to check (openssl x509 -fingerprint -sha256).
    #[arg(long)]
    pub tls_self_signed: bool,

    /// ALPN protocols to offer, most preferred first (comma-separated or repeated).
    #[arg(long, value_name = "PROTO", value_delimiter = ',')]
    pub tls_alpn: Vec<String>,
}

/// A client's TLS flags (send, client, bench).
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "TLS (tls:// endpoints)")]
pub struct TlsClientArgs {
    /// Trust only the CA certificates in this PEM file [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// The server name to ask for (SNI) and check the certificate against [default: the
    /// endpoint's host].
    #[arg(long, value_name = "NAME")]
    pub tls_servername: Option<String>,

    /// Check neither the certificate nor the name (ncat's default, socat's verify=0): anyone
    /// in the path can read and change the traffic. Logged as a warning.
    #[arg(long, conflicts_with = "tls_ca")]
    pub tls_insecure: bool,

    /// ALPN protocols to offer, most preferred first (comma-separated or repeated).
    #[arg(long, value_name = "PROTO", value_delimiter = ',')]
    pub tls_alpn: Vec<String>,
}

/// `relay`'s TLS flags for a tls:// target: a client's, less --tls-alpn (relay's one
/// --tls-alpn, of [`TlsServerArgs`], serves every tls:// side).
#[derive(Debug, Args, Default)]
#[command(next_help_heading = "TLS of a tls:// TARGET")]
pub struct TlsTargetArgs {
    /// Trust only the CA certificates in this PEM file [default: the system's roots].
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// The server name to ask the target for (SNI) and check its certificate against
    /// [default: TARGET's host].
    #[arg(long, value_name = "NAME")]
    pub tls_servername: Option<String>,

    /// Check neither the target's certificate nor its name: anyone in the path can read and
    /// change the traffic. Logged as a warning.
    #[arg(long, conflicts_with = "tls_ca")]
    pub tls_insecure: bool,
}

impl TlsTargetArgs {
    /// The client's flags these are, with `alpn` (relay's --tls-alpn, when TARGET is tls://).
    pub fn with_alpn(&self, alpn: Vec<String>) -> TlsClientArgs {
        TlsClientArgs {
            tls_ca: self.tls_ca.clone(),
            tls_servername: self.tls_servername.clone(),
            tls_insecure: self.tls_insecure,
            tls_alpn: alpn,
        }
    }
}

impl TlsClientArgs {
    /// Whether any TLS flag was given (they are for tls:// endpoints only).
    pub fn any(&self) -> bool {
        self.tls_ca.is_some()
            || self.tls_servername.is_some()
            || self.tls_insecure
            || !self.tls_alpn.is_empty()
    }
}

impl TlsServerArgs {
    /// The same flags with `alpn` in place of --tls-alpn.
    pub fn with_alpn(&self, alpn: Vec<String>) -> TlsServerArgs {
        TlsServerArgs {
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_self_signed: self.tls_self_signed,
            tls_alpn: alpn,
        }
    }

    /// Whether any TLS flag was given (they are for tls:// endpoints only).
    pub fn any(&self) -> bool {
        self.tls_cert.is_some() || self.tls_self_signed || !self.tls_alpn.is_empty()
    }
}
