//! The PROXY header step on the async engine: wait for readiness (tokio's), take what is there
//! of the header ([`crate::engine::proxied::step`]), until it is whole, the message time-out
//! passes or the grace period ends.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::io::Interest;

use super::stream::{Conn, Listening};
use crate::engine::Shared;
use crate::engine::proxied::{PEEK_BYTES, Progress, ProxyHeaderError, admit, report, step};
use crate::proxy::{Header, HeaderReader};
use crate::service::Address;

/// Reads the connection's PROXY header and returns the real client, verified; `None` when
/// the connection is over (a bad header, reported; a refused client).
pub(crate) async fn proxied(
    shared: &Shared,
    conn: &Conn,
    peer: Address,
    listening: &Arc<Listening>,
) -> Option<Address> {
    let ctx = listening.context(&peer, SystemTime::now());
    let limit = shared.limits.message_timeout;
    let read = tokio::select! {
        read = tokio::time::timeout(limit, read_header(conn)) => match read {
            Ok(read) => read,
            Err(_) => Err(ProxyHeaderError::TimedOut(limit)),
        },
        _ = shared.force.fired() => Err(ProxyHeaderError::GraceOver),
    };
    match read {
        Ok(header) => admit(shared, conn, ctx, header).map(|ctx| ctx.peer),
        Err(error) => {
            report(&ctx, &error);
            None
        }
    }
}

async fn read_header(conn: &Conn) -> Result<Header, ProxyHeaderError> {
    let mut reader = HeaderReader::new();
    let mut buf = vec![0u8; PEEK_BYTES];
    loop {
        let mut attempt = || match step(conn.as_fd(), &mut reader, &mut buf) {
            Ok(Progress::Pending) => Err(io::Error::from(io::ErrorKind::WouldBlock)),
            other => Ok(other),
        };
        let tried = match conn {
            Conn::Tcp(s) => {
                s.readable().await.map_err(ProxyHeaderError::Io)?;
                s.try_io(Interest::READABLE, attempt)
            }
            Conn::Unix(s) => {
                s.readable().await.map_err(ProxyHeaderError::Io)?;
                s.try_io(Interest::READABLE, attempt)
            }
            // Refused when the server is built: a record is not a byte stream.
            Conn::Seqpacket(_) => attempt(),
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
