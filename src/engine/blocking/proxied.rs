//! The PROXY header step on the thread engines: wait (poll, beside the grace period's
//! trigger) until the socket is readable, take what is there of the header
//! ([`crate::engine::proxied::step`]), until it is whole or the message time-out passes.

use std::os::fd::AsFd;
use std::time::Instant;

use nix::poll::PollFlags;

use super::stream::Conn;
use crate::engine::Shared;
use crate::engine::Traffic;
use crate::engine::proxied::{PEEK_BYTES, Progress, ProxyHeaderError, admit, header_failed, step};
use crate::engine::wait::{Woken, wait_until_ready};
use crate::proxy::{Header, HeaderReader};
use crate::service::Context;

/// With `--proxy-protocol`: reads the connection's header and returns its context with the
/// real client as the peer; `None` when the connection is over (a bad header, reported; a
/// refused client), its end counted in `traffic`. Without it: the context as it is.
pub(crate) fn proxied(
    shared: &Shared,
    conn: &Conn,
    ctx: Context,
    traffic: &Traffic,
) -> Option<Context> {
    if !shared.proxy_protocol {
        return Some(ctx);
    }
    let admitted = match read_header(shared, conn) {
        Ok(header) => admit(shared, traffic.stats(), conn, ctx, header),
        Err(error) => Err(header_failed(&ctx, &error)),
    };
    admitted.map_err(|cause| traffic.ended(cause)).ok()
}

fn read_header(shared: &Shared, conn: &Conn) -> Result<Header, ProxyHeaderError> {
    let limit = shared.limits.message_timeout;
    let deadline = Instant::now() + limit;
    let mut reader = HeaderReader::new();
    let mut buf = vec![0u8; PEEK_BYTES];
    loop {
        let woken = wait_until_ready(
            conn.as_fd(),
            PollFlags::POLLIN,
            &shared.force,
            Some(deadline),
        )
        .map_err(ProxyHeaderError::Io)?;
        match woken {
            Woken::Ready => {}
            Woken::TimedOut => return Err(ProxyHeaderError::TimedOut(limit)),
            Woken::Triggered => return Err(ProxyHeaderError::GraceOver),
        }
        if let Progress::Done(header) = step(conn.as_fd(), &mut reader, &mut buf)? {
            return Ok(header);
        }
    }
}
