//! `socketkit listen`'s flags (nc -l).

use std::time::Duration;

use clap::Args;
use socketkit::Endpoint;

use super::dump::DumpArgs;
use super::tls::TlsServerArgs;
use super::values::parse_duration;

/// `socketkit listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Where to listen: tcp://HOST:PORT, tls://HOST:PORT (with --tls-cert/--tls-key or
    /// --tls-self-signed), unix:///path, udp://HOST:PORT, unixgram:///path, or a bare PORT
    /// (tcp://127.0.0.1:PORT; with -u, udp://127.0.0.1:PORT).
    #[arg(
        value_name = "ENDPOINT",
        required_unless_present = "port",
        conflicts_with = "port"
    )]
    pub endpoint: Option<String>,

    /// The port to listen on, as nc users type it (`listen -p 12000` = `listen 12000`).
    #[arg(short, long, value_name = "PORT")]
    pub port: Option<u16>,

    /// UDP: a bare PORT (or HOST:PORT) is udp:// (nc's -lu).
    #[arg(short, long)]
    pub udp: bool,

    /// Streams: after a peer is done, wait for the next one, one at a time (nc's -k). A later
    /// peer gets what is left of stdin.
    #[arg(short, long)]
    pub keep_open: bool,

    /// Streams: do not half-close the write side after stdin ends (ncat's --no-shutdown).
    #[arg(long)]
    pub no_shutdown: bool,

    /// Give up (exit 5) when nothing arrives for this long (ncat's -i): on a stream, nothing
    /// either way; on datagrams, no datagram. [default: wait for ever]
    #[arg(short, long, value_parser = parse_duration, value_name = "DUR")]
    pub idle_timeout: Option<Duration>,

    /// Take only peers in this range (CIDR or one address); repeatable, as serve's.
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<String>,

    /// Refuse peers in this range (CIDR or one address); repeatable; wins over --allow.
    #[arg(long, value_name = "CIDR")]
    pub deny: Vec<String>,

    #[command(flatten)]
    pub dump: DumpArgs,

    #[command(flatten)]
    pub tls: TlsServerArgs,
}

impl ListenArgs {
    /// The endpoint the flags name: a bare port is loopback, -u makes it UDP.
    pub fn endpoint(&self) -> Result<Endpoint, socketkit::Error> {
        let text = match (&self.endpoint, self.port) {
            (Some(text), _) => text.clone(),
            (None, Some(port)) => port.to_string(),
            (None, None) => unreachable!("clap requires one"),
        };
        if self.udp && !text.contains("://") {
            return format!("udp://{text}").parse();
        }
        let endpoint: Endpoint = text.parse()?;
        if self.udp && endpoint.transport() != socketkit::Transport::Udp {
            return Err(socketkit::Error::Config(format!(
                "-u asks for UDP and {endpoint} is not udp://"
            )));
        }
        Ok(endpoint)
    }
}
