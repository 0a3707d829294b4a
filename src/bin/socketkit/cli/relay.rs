//! `socketkit relay`'s flags (socat's two addresses).

use std::time::Duration;

use clap::Args;
use socketkit::Endpoint;

use super::dump::DumpArgs;
use super::limits::ServerLimitArgs;
use super::tls::{TlsServerArgs, TlsTargetArgs};
use super::values::{parse_connect_endpoint, parse_duration};

/// `socketkit relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// Where to listen (a bare PORT is tcp://127.0.0.1:PORT); tls://HOST:PORT with
    /// --tls-cert/--tls-key or --tls-self-signed.
    #[arg(value_name = "LISTEN")]
    pub listen: Endpoint,

    /// Where each peer is relayed to (a bare PORT is localhost:PORT); tls://HOST:PORT is
    /// checked against the system's roots, or --tls-ca.
    #[arg(value_name = "TARGET", value_parser = parse_connect_endpoint)]
    pub target: Endpoint,

    /// How long connecting to TARGET may take; past it (or when TARGET refuses) that peer is
    /// closed, one line is logged, and the relay goes on.
    #[arg(short = 'w', long, default_value = "5s", value_parser = parse_duration, value_name = "DUR")]
    pub timeout: Duration,

    #[command(flatten)]
    pub limits: ServerLimitArgs,

    #[command(flatten)]
    pub dump: DumpArgs,

    /// LISTEN's TLS flags (when it is tls://); --tls-alpn serves every tls:// side.
    #[command(flatten)]
    pub tls: TlsServerArgs,

    #[command(flatten)]
    pub tls_target: TlsTargetArgs,
}
