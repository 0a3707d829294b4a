//! The limits, time-outs and access lists every server command takes (serve, relay), written
//! once.

use std::time::Duration;

use clap::Args;
use socketkit::ServerBuilder;
use socketkit::server::AccessList;

use super::values::{parse_backlog, parse_duration, parse_grace, parse_max_connections};

/// The flags of a server's connections: time-outs, grace, backlog, connection cap, access.
#[derive(Debug, Args)]
pub struct ServerLimitArgs {
    /// After SIGINT/SIGTERM/SIGHUP, how long connections may take to finish: in line and length
    /// framing those between messages are closed at once; raw streams run to the peer's EOF.
    /// 0: close them all at once (the one duration that may be 0).
    #[arg(long, default_value = "5s", value_parser = parse_grace, value_name = "DUR")]
    pub grace: Duration,

    /// Length of the queue of connections not yet accepted (listen's backlog); at least 1.
    #[arg(long, default_value_t = 128, value_name = "N", value_parser = parse_backlog)]
    pub backlog: u32,

    /// Close a connection that sends nothing for this long (ncat's -i; not nc's line interval).
    #[arg(short, long, default_value = "300s", value_parser = parse_duration, value_name = "DUR")]
    pub idle_timeout: Duration,

    /// A message begun (part of a line or frame) must be complete within this time, however
    /// steadily its bytes trickle in.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DUR")]
    pub message_timeout: Duration,

    /// Close a connection whose peer reads nothing of a reply for this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DUR")]
    pub write_timeout: Duration,

    /// Connections served at once, on every engine; beyond it, clients wait in the listen queue.
    /// 1 to 1048576.
    #[arg(
        short,
        long,
        default_value_t = 10_000,
        value_name = "N",
        visible_alias = "max-conns",
        value_parser = parse_max_connections
    )]
    pub max_connections: usize,

    /// Serve only peers in this range (CIDR or one address); repeatable. IPv4-mapped IPv6
    /// peers and ranges (::ffff:a.b.c.d/96+N) match as their IPv4 form. Checked before a byte
    /// is read.
    #[arg(long, value_name = "CIDR")]
    pub allow: Vec<String>,

    /// Refuse peers in this range (CIDR or one address); repeatable; wins over --allow. A
    /// refused TCP connection is reset; refusals are logged at most once per 10 s.
    #[arg(long, value_name = "CIDR")]
    pub deny: Vec<String>,
}

impl ServerLimitArgs {
    /// The access list the flags give.
    pub fn access(&self) -> Result<AccessList, socketkit::Error> {
        let mut access = AccessList::default();
        for cidr in &self.allow {
            access.allow(cidr)?;
        }
        for cidr in &self.deny {
            access.deny(cidr)?;
        }
        Ok(access)
    }

    /// `builder` with these limits and `access`.
    pub fn apply(&self, builder: ServerBuilder, access: &AccessList) -> ServerBuilder {
        builder
            .backlog(self.backlog)
            .grace(self.grace)
            .idle_timeout(self.idle_timeout)
            .message_timeout(self.message_timeout)
            .write_timeout(self.write_timeout)
            .max_connections(self.max_connections)
            .access(access.clone())
    }
}
