//! The flags for running behind a balancer and under a service manager: `serve`'s
//! `--proxy-protocol` and `--reuse-port`, and the clients' `--proxy-protocol` and
//! `--proxy-source` (to test such a server without the balancer).

use std::net::SocketAddr;

use clap::Args;

/// `serve`'s operations flags.
#[derive(Debug, Args)]
pub struct ServeOpsArgs {
    /// Every stream listener (tcp, unix) expects a PROXY protocol header, v1 or v2, from a
    /// balancer (HAProxy's send-proxy-v2): its client is the peer that --allow/--deny and the
    /// logs see. A missing, garbled or cut-off header (v1: at most 107 bytes; v2: at most
    /// 1040), or none within --message-timeout, closes that connection with one log line.
    /// A v2 LOCAL header (a health check) keeps the balancer's address. On tls:// the
    /// header comes before the TLS handshake, as HAProxy sends it (send-proxy-v2 with ssl).
    #[arg(long)]
    pub proxy_protocol: bool,

    /// Set SO_REUSEPORT on TCP and UDP listeners: several `socketkit serve` (one per core)
    /// share the port, and the kernel spreads connections among them. Every one of them must
    /// be given it.
    #[arg(long)]
    pub reuse_port: bool,
}

/// The clients' PROXY protocol flags (send, client, bench).
#[derive(Debug, Args)]
pub struct ProxyClientArgs {
    /// Streams: send a PROXY protocol header first (v1: text, v2: binary), as a balancer
    /// does, to talk to a `serve --proxy-protocol` directly (on tls://, before the handshake).
    #[arg(long, value_name = "v1|v2")]
    pub proxy_protocol: Option<ProxyVersion>,

    /// The client the PROXY header names [default: this socket's own address; over a Unix
    /// stream, a LOCAL/UNKNOWN header].
    #[arg(long, value_name = "ADDR:PORT", requires = "proxy_protocol")]
    pub proxy_source: Option<SocketAddr>,
}

/// A PROXY protocol version, as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyVersion {
    /// The text header.
    V1,
    /// The binary header.
    V2,
}

#[cfg(feature = "proxy")]
impl ProxyClientArgs {
    /// The header to announce, if asked; refused (exit 2) for a transport without one.
    pub fn announce(
        &self,
        endpoint: &socketkit::Endpoint,
    ) -> anyhow::Result<Option<socketkit::proxy::Announce>> {
        use socketkit::endpoint::Transport;
        let Some(version) = self.proxy_protocol else {
            return Ok(None);
        };
        if !matches!(endpoint.transport(), Transport::Tcp | Transport::Unix) {
            anyhow::bail!(socketkit::Error::Config(format!(
                "--proxy-protocol is for byte streams (tcp, unix), not {endpoint}"
            )));
        }
        let version = match version {
            ProxyVersion::V1 => socketkit::proxy::Version::V1,
            ProxyVersion::V2 => socketkit::proxy::Version::V2,
        };
        Ok(Some(socketkit::proxy::Announce {
            version,
            source: self.proxy_source,
        }))
    }
}

#[cfg(not(feature = "proxy"))]
impl ProxyClientArgs {
    /// Refuses the flag in a build without the `proxy` feature.
    pub fn refuse(&self) -> anyhow::Result<()> {
        if self.proxy_protocol.is_some() {
            anyhow::bail!(socketkit::Error::Config(
                "--proxy-protocol needs socketkit built with the `proxy` feature".into()
            ));
        }
        Ok(())
    }
}
