//! TLS on rustls (the `tls` feature): the settings of a TLS server ([`ServerTls`]) and client
//! ([`ClientTls`]), the handshake, and one-phrase causes for a handshake that failed.
//!
//! TLS here is only a wrapper of a byte stream: [`ServerTls::accept`] and [`ClientTls::connect`]
//! turn any `AsyncRead + AsyncWrite` stream (a TCP connection) into a TLS stream of the same
//! shape, which whatever read and wrote the plain stream reads and writes instead. The async
//! engine does exactly that: the rules of a connection (`engine/conn.rs`) never know. Blocking
//! code (the clients, which copy with threads and `poll`) uses [`Bridge`]: the handshake, then a
//! thread that carries the plaintext to and from one end of a Unix socket pair, which the
//! blocking code treats as the connection (half-close carried both ways).
//!
//! The provider is *ring*: it builds with a C compiler alone, quickly; aws-lc-rs wants cmake
//! (or a long build of its own) on a machine that has only Rust, gcc and Python.
//!
//! Clients trust the system's roots by default (rustls-native-certs: the same store openssl
//! and curl read, with what the administrator added, and no copy of Mozilla's list to go
//! stale inside the binary), or only `--tls-ca FILE`'s.
//!
//! ```
//! use socketkit::{Server, client::{SendOptions, send}, tls::ServerTls};
//!
//! let tls = ServerTls::self_signed(&["127.0.0.1".to_string()], &[])?;
//! assert_eq!(tls.fingerprint().len(), 32 * 3 - 1); // AB:CD:...
//! let server = Server::builder().listen("tls://127.0.0.1:0".parse()?).tls(tls).bind()?;
//! let endpoint = server.local_endpoints()[0].clone(); // tls://127.0.0.1:PORT
//! let stop = server.shutdown_handle();
//! let serving = std::thread::spawn(move || server.serve_forever());
//!
//! let mut options = SendOptions::default();
//! options.tls.insecure = true; // a self-signed certificate: trust it blindly (a warning)
//! let mut reply = Vec::new();
//! send(&endpoint, &b"hello"[..], &mut reply, &options)?;
//! assert_eq!(reply, b"HELLO");
//! # stop.shutdown();
//! # serving.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bridge;
mod cause;
mod files;
mod self_signed;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls;

pub use bridge::Bridge;
pub use cause::cause;
pub use tokio_rustls::{client::TlsStream as ClientStream, server::TlsStream as ServerStream};

use crate::endpoint::{Endpoint, Host};
use crate::error::Error;

/// The crypto provider every configuration here uses (see the module's docs).
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server's settings: its certificate chain and key, and the ALPN protocols it offers.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    fingerprint: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// A server certificate chain and its private key from PEM files (`--tls-cert`,
    /// `--tls-key`); `alpn` lists the protocols offered, most preferred first.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] (exit 2), in one line naming the file: missing or unreadable, no
    /// certificate or key in it, an encrypted key (give it decrypted: `openssl pkey -in
    /// FILE`), or a key that is not the certificate's.
    pub fn from_pem_files(cert: &Path, key: &Path, alpn: &[String]) -> Result<ServerTls, Error> {
        let chain = files::certificates(cert)?;
        let key_der = files::private_key(key)?;
        Self::new(chain, key_der, alpn).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => Error::Config(format!(
                "the TLS key {} is not the key of the certificate {}",
                key.display(),
                cert.display()
            )),
            e => Error::Config(format!(
                "cannot use the TLS certificate {} with the key {}: {e}",
                cert.display(),
                key.display()
            )),
        })
    }

    /// A fresh self-signed certificate for `names` (host names or addresses), made now with
    /// rcgen and valid for a year; its SHA-256 fingerprint is [`ServerTls::fingerprint`], for
    /// clients to check (`openssl x509 -fingerprint -sha256`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a name a certificate cannot carry.
    pub fn self_signed(names: &[String], alpn: &[String]) -> Result<ServerTls, Error> {
        let (cert, key) = self_signed::make(names)?;
        Self::new(vec![cert], key, alpn)
            .map_err(|e| Error::Config(format!("cannot use the self-signed certificate: {e}")))
    }

    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        alpn: &[String],
    ) -> Result<ServerTls, rustls::Error> {
        let fingerprint = chain.first().map(|c| fingerprint(c)).unwrap_or_default();
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            fingerprint,
        })
    }

    /// The SHA-256 fingerprint of the server's certificate, as `openssl x509 -fingerprint
    /// -sha256` prints it: 32 upper-case hex bytes joined by colons.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The server's side of the handshake over `stream`. It is not bounded in time here: the
    /// caller bounds it (the engines by [`Limits::message_timeout`](crate::Limits::message_timeout)).
    ///
    /// # Errors
    ///
    /// The handshake's failure; [`cause`] names it in one phrase.
    pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
    ) -> io::Result<ServerStream<S>> {
        self.acceptor.accept(stream).await
    }
}

/// What a TLS client trusts and says: the settings of [`ClientTls::new`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientTlsOptions {
    /// Trust only the certificates in this PEM file (`--tls-ca`), not the system's roots.
    pub ca: Option<PathBuf>,
    /// The name to ask for (SNI) and to check the certificate against (`--tls-servername`).
    /// Default: the endpoint's host.
    pub server_name: Option<String>,
    /// Check nothing: any certificate, any name (`--tls-insecure`; ncat's default, socat's
    /// `verify=0`). A warning is logged once per client.
    pub insecure: bool,
    /// ALPN protocols to offer, most preferred first (`--tls-alpn`).
    pub alpn: Vec<String>,
}

/// A TLS client's settings, made once ([`ClientTls::new`]) for any number of connections.
#[derive(Clone)]
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Builds the client's settings: the roots (system's, or `options.ca`'s), or no checks at
    /// all with `insecure` (logged as a warning).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a CA file that is missing, unreadable or holds no certificate, a
    /// server name that is not a DNS name or an address, and when the system has no roots at
    /// all (then `--tls-ca` is the way).
    pub fn new(options: &ClientTlsOptions) -> Result<ClientTls, Error> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        let mut config = if options.insecure {
            tracing::warn!(
                "--tls-insecure: the server's certificate and name are NOT checked; anyone \
                 in the path can read and change the traffic"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(cause::NoVerification(provider())))
                .with_no_client_auth()
        } else {
            let roots = match &options.ca {
                Some(ca) => files::roots(ca)?,
                None => files::system_roots()?,
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = options.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let server_name = options
            .server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_string()).map_err(|_| {
                    Error::Config(format!(
                        "--tls-servername {name:?} is neither a DNS name nor an address"
                    ))
                })
            })
            .transpose()?;
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The name the handshake with `endpoint` asks for and checks: `--tls-servername`, else
    /// the endpoint's host.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an endpoint without a host (a Unix socket) or a host name that is
    /// not a DNS name.
    pub fn server_name(&self, endpoint: &Endpoint) -> Result<ServerName<'static>, Error> {
        if let Some(name) = &self.server_name {
            return Ok(name.clone());
        }
        match endpoint.host_port().map(|(host, _)| host) {
            Some(Host::Ip(ip)) => Ok(ServerName::IpAddress((*ip).into())),
            Some(Host::Name(name)) => ServerName::try_from(name.clone()).map_err(|_| {
                Error::Config(format!(
                    "{name:?} is not a DNS name a certificate can carry: give --tls-servername"
                ))
            }),
            None => Err(Error::Config(format!(
                "{endpoint} has no host name for TLS: give --tls-servername"
            ))),
        }
    }

    /// The client's side of the handshake with `name` over `stream`, not bounded in time here
    /// (the caller bounds it).
    ///
    /// # Errors
    ///
    /// The handshake's failure; [`cause`] names it in one phrase.
    pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        name: ServerName<'static>,
        stream: S,
    ) -> io::Result<ClientStream<S>> {
        self.connector.connect(name, stream).await
    }
}

/// A handshake that failed, as the one-line [`Error::Tls`] (exit 8).
pub fn handshake_failed(peer: impl std::fmt::Display, e: &io::Error) -> Error {
    Error::Tls {
        peer: peer.to_string(),
        cause: cause(e),
    }
}

/// SHA-256 of a DER certificate, as `openssl x509 -fingerprint -sha256` prints it.
fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}
