//! The PROXY header step on the async engine: wait for readiness (tokio's), take what is there
//! of the header ([`crate::engine::proxied::step`]), until it is whole, the message time-out
//! passes or the grace period ends.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

use crate::engine::Shared;
use crate::engine::proxied::{PEEK_BYTES, Progress, ProxyHeaderError, admit, header_failed, step};
use crate::proxy::{Header, HeaderReader};
use crate::service::{Address, Context};
use crate::stats::{EndCause, ListenerStats};

/// A byte stream that may carry a PROXY header.
pub(crate) enum Stream<'a> {
    Tcp(&'a TcpStream),
    Unix(&'a UnixStream),
}

impl AsFd for Stream<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }
}

/// Reads the connection's PROXY header and returns the real client, verified; else the
/// connection is over (a bad header, reported; a refused client, counted as refused), and
/// the error is the cause its end is to be counted by. `ctx` is the connection's context
/// with the socket's peer.
pub(crate) async fn proxied(
    shared: &Shared,
    stats: &ListenerStats,
    conn: Stream<'_>,
    ctx: Context,
) -> Result<Address, EndCause> {
    let conn = &conn;
    let limit = shared.limits.message_timeout;
    let read = tokio::select! {
        read = tokio::time::timeout(limit, read_header(conn)) => match read {
            Ok(read) => read,
            Err(_) => Err(ProxyHeaderError::TimedOut(limit)),
        },
        _ = shared.force.fired() => Err(ProxyHeaderError::GraceOver),
    };
    match read {
        Ok(header) => admit(shared, stats, conn, ctx, header).map(|ctx| ctx.peer),
        Err(error) => Err(header_failed(&ctx, &error)),
    }
}

async fn read_header(conn: &Stream<'_>) -> Result<Header, ProxyHeaderError> {
    let mut reader = HeaderReader::new();
    let mut buf = vec![0u8; PEEK_BYTES];
    loop {
        let attempt = || match step(conn.as_fd(), &mut reader, &mut buf) {
            Ok(Progress::Pending) => Err(io::Error::from(io::ErrorKind::WouldBlock)),
            other => Ok(other),
        };
        let tried = match conn {
            Stream::Tcp(s) => {
                s.readable().await.map_err(ProxyHeaderError::Io)?;
                s.try_io(Interest::READABLE, attempt)
            }
            Stream::Unix(s) => {
                s.readable().await.map_err(ProxyHeaderError::Io)?;
                s.try_io(Interest::READABLE, attempt)
            }
        };
        match tried {
            Ok(Ok(Progress::Done(header))) => return Ok(header),
            Ok(Ok(Progress::Pending)) => {}
            Ok(Err(error)) => return Err(error),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(ProxyHeaderError::Io(e)),
        }
    }
}
