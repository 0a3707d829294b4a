//! The options every client takes, checked once, and the report of what a client did.

use std::net::SocketAddr;
use std::time::Duration;

use crate::codec::{Framing, MessageCodec};
use crate::dump::Dump;
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::service::Address;

/// How a client behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendOptions {
    /// The local address to send from (the slides' `bind(('127.0.0.1', 0))`); port 0 lets the
    /// system choose. Default: none, the system chooses address and port.
    pub bind: Option<SocketAddr>,
    /// How long to wait for the connection, and for each reply (each piece of a stream reply).
    /// Default 5 s. More than zero and at most [`crate::MAX_TIMEOUT`]; other values are refused
    /// with [`Error::Config`].
    pub timeout: Duration,
    /// Message boundaries on streams. Default `raw`: bytes go as given and the reply is copied
    /// as it comes. With `line` or `length`, each input line is sent as one message and each
    /// reply message is written on a line of its own.
    pub framing: Framing,
    /// The longest reply line accepted in `line` framing.
    pub max_line: usize,
    /// The largest reply frame accepted in `length` framing.
    pub max_frame: usize,
    /// Streams: once the whole message is sent (the input's end), stop waiting and succeed
    /// when nothing has arrived for this long (nc's `-q`), for a server that replies but keeps
    /// the connection open. It then replaces `timeout` as the bound on silence. Default: none,
    /// wait for the server to close.
    pub quit_after: Option<Duration>,
    /// Send the message and return at once, reading no reply (for discard-like services).
    /// Default false.
    pub no_wait: bool,
    /// A bound on the whole exchange, connecting included, however steadily the reply
    /// trickles in (curl's `--max-time`); passing it is [`Error::TimedOut`]. Default: none.
    pub max_time: Option<Duration>,
    /// Multicast only: the hop limit of the request (`IP_MULTICAST_TTL`,
    /// `IPV6_MULTICAST_HOPS`), 0 to 255; 0 keeps it on this host, 1 on this subnet. Default:
    /// none, the system's (1).
    pub multicast_ttl: Option<u32>,
    /// Multicast only: whether members on this host get the request too
    /// (`IP_MULTICAST_LOOP`, `IPV6_MULTICAST_LOOP`). Default: none, the system's (on).
    pub multicast_loop: Option<bool>,
    /// `tls://` only: what the client trusts and says (the `tls` feature). Default: the
    /// system's roots, the endpoint's host as the server name.
    #[cfg(feature = "tls")]
    pub tls: crate::tls::ClientTlsOptions,
    /// `--dump`: every chunk each way, shown as `hexdump -C` or escaped text. Default: none.
    pub dump: Option<Dump>,
}

impl Default for SendOptions {
    fn default() -> SendOptions {
        let limits = crate::Limits::default();
        SendOptions {
            bind: None,
            timeout: Duration::from_secs(5),
            framing: Framing::Raw,
            max_line: limits.max_line,
            max_frame: limits.max_frame,
            quit_after: None,
            no_wait: false,
            max_time: None,
            multicast_ttl: None,
            multicast_loop: None,
            #[cfg(feature = "tls")]
            tls: crate::tls::ClientTlsOptions::default(),
            dump: None,
        }
    }
}

impl SendOptions {
    /// Refuses options no client can run with, as the command line does: a time-out of zero
    /// (there is no zero "none") or over [`crate::MAX_TIMEOUT`], a zero line or frame limit.
    pub(super) fn check(&self) -> Result<(), Error> {
        let time_outs = [Some(self.timeout), self.max_time, self.quit_after];
        if let Some(bad) = time_outs
            .into_iter()
            .flatten()
            .find(|t| t.is_zero() || *t > crate::MAX_TIMEOUT)
        {
            return Err(Error::Config(format!(
                "a time-out must be more than zero and at most 365 days, not {bad:?}"
            )));
        }
        if self.max_line == 0 || self.max_frame == 0 {
            return Err(Error::Config(
                "the line and frame limits must be at least 1 byte".into(),
            ));
        }
        if let Some(ttl) = self.multicast_ttl.filter(|ttl| *ttl > 255) {
            return Err(Error::Config(format!(
                "a multicast TTL is 0 to 255, not {ttl}"
            )));
        }
        Ok(())
    }

    /// Refuses the multicast options for `endpoint`, which is not a multicast group.
    pub(super) fn refuse_multicast_options(&self, endpoint: &Endpoint) -> Result<(), Error> {
        if self.multicast_ttl.is_some() || self.multicast_loop.is_some() {
            return Err(Error::Config(format!(
                "the multicast TTL and loopback (--ttl, --multicast-loop) are for a multicast \
                 group (224.0.0.0/4 or ff00::/8), and {endpoint} is not one"
            )));
        }
        Ok(())
    }

    pub(super) fn codec(&self) -> Option<MessageCodec> {
        MessageCodec::new(self.framing, self.max_line, self.max_frame)
    }

    /// The longest input line one message may carry, and the limit's name.
    pub(super) fn max_input_line(&self) -> (usize, &'static str) {
        match self.framing {
            Framing::Length(width) => (
                self.max_frame
                    .min(usize::try_from(width.max_payload()).unwrap_or(usize::MAX)),
                "frame",
            ),
            _ => (self.max_line, "line"),
        }
    }
}

/// What a client did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendReport {
    /// The client's own address (`getsockname`).
    pub local: Address,
    /// The server's address that answered.
    pub peer: Address,
    /// Bytes sent (as far as known when the exchange ended).
    pub sent: u64,
    /// Bytes of reply received.
    pub received: u64,
}
