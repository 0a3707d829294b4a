//! The PROXY header step of a stream connection (`serve --proxy-protocol`), shared by every
//! engine: between the accept and the session, the header is read ([`crate::proxy`] decides
//! how many bytes are header), its client becomes the connection's peer, and that peer is
//! verified (`--allow`/`--deny`, `verify_request`). The accept loop does not verify such a
//! connection: its socket's peer is the balancer.
//!
//! Each engine's driver does the waiting, in its own way (`blocking::proxied`,
//! `tokio::proxied`, `uring::proxied`), and calls [`step`] whenever the socket is readable.
//! The whole header must arrive within the message time-out, and the grace period ends the
//! wait. A connection that ends here is counted as an end of its listener
//! ([`header_failed`]'s cause, or [`EndCause::Refused`]), so its accepted connections still
//! add up to their ends.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::sys::socket::{MsgFlags, recv};

use super::Shared;
use super::accept::refuse;
use crate::proxy::{Header, HeaderError, HeaderReader, Step, V2_MAX_BYTES};
use crate::service::Context;
use crate::stats::{EndCause, ListenerStats};

/// The most a driver peeks at once: the longest header there is.
pub(crate) const PEEK_BYTES: usize = V2_MAX_BYTES;

/// The connection end cause "PROXY header error": the connection closed before its session
/// began, with one log line and nothing sent to the service.
#[derive(Debug)]
pub(crate) enum ProxyHeaderError {
    /// The bytes were not a PROXY header (missing, too long, garbled, cut off by EOF...).
    Header(HeaderError),
    /// The header was not whole within the message time-out.
    TimedOut(Duration),
    /// The shutdown grace period ended first.
    GraceOver,
    /// The socket failed (the peer reset it...).
    Io(io::Error),
}

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyHeaderError::Header(e) => write!(f, "{e}"),
            ProxyHeaderError::TimedOut(limit) => write!(
                f,
                "no whole PROXY header within {limit:?} (message time-out)"
            ),
            ProxyHeaderError::GraceOver => {
                f.write_str("no whole PROXY header by the end of the shutdown grace period")
            }
            ProxyHeaderError::Io(e) => write!(f, "reading the PROXY header: {e}"),
        }
    }
}

/// How far [`step`] got.
pub(crate) enum Progress {
    /// The socket has nothing more now: wait until it is readable again.
    Pending,
    /// The header is whole and consumed: the next byte is the service's.
    Done(Header),
}

/// Reads what the socket holds of the header without waiting: peeks, asks the reader how many
/// bytes are header, consumes exactly those. `buf` holds at least [`PEEK_BYTES`].
pub(crate) fn step(
    fd: BorrowedFd<'_>,
    reader: &mut HeaderReader,
    buf: &mut [u8],
) -> Result<Progress, ProxyHeaderError> {
    loop {
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        let n = match recv(fd.as_raw_fd(), &mut buf[..PEEK_BYTES], flags) {
            Ok(0) => return Err(ProxyHeaderError::Header(reader.eof())),
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN) => return Ok(Progress::Pending),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(ProxyHeaderError::Io(e.into())),
        };
        let step = reader.offer(&buf[..n]).map_err(ProxyHeaderError::Header)?;
        let take = match &step {
            Step::Take(take) | Step::Done(take, _) => *take,
        };
        // The bytes are already in the socket's buffer: this takes them all at once.
        let mut taken = 0;
        while taken < take {
            match recv(
                fd.as_raw_fd(),
                &mut buf[taken..take],
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => return Err(ProxyHeaderError::Header(reader.eof())),
                Ok(n) => taken += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(ProxyHeaderError::Io(e.into())),
            }
        }
        if let Step::Done(_, header) = step {
            return Ok(Progress::Done(header));
        }
    }
}

/// After the header: the context with the header's client as its peer (v2 `LOCAL` and v1
/// `UNKNOWN` keep the socket's), verified. A refused client is counted among the listener's
/// refusals and its connection reset (dropping it closes it); the error is the cause its end
/// is counted by.
pub(crate) fn admit(
    shared: &Shared,
    stats: &ListenerStats,
    conn: &impl AsFd,
    mut ctx: Context,
    header: Header,
) -> Result<Context, EndCause> {
    if let Some(client) = header.source {
        tracing::debug!(peer = %ctx.peer, %client, "PROXY header");
        ctx.peer = client;
    }
    if let Err(why) = shared.verify(&ctx.peer) {
        stats.refused(why);
        refuse(conn);
        return Err(EndCause::Refused);
    }
    Ok(ctx)
}

/// Reports a connection that ended in its header: one line, with the socket's peer (the
/// balancer; there is no client address to name). Returns the cause its end is counted by:
/// a PROXY header error, but the end of the grace period and a peer that went away as such.
pub(crate) fn header_failed(ctx: &Context, error: &ProxyHeaderError) -> EndCause {
    match error {
        ProxyHeaderError::Io(e) if is_peer_gone(e) => {
            tracing::info!(peer = %ctx.peer, "connection closed: PROXY header error: {error}");
            EndCause::Reset
        }
        ProxyHeaderError::GraceOver => {
            tracing::info!(peer = %ctx.peer, "connection closed: PROXY header error: {error}");
            EndCause::GraceOver
        }
        _ => {
            tracing::warn!(peer = %ctx.peer, "connection closed: PROXY header error: {error}");
            EndCause::ProxyHeader
        }
    }
}

fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}
