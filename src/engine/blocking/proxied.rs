//! The PROXY header step on the thread engines: wait (poll, beside the grace period's
//! trigger) until the socket is readable, take what is there of the header
//! ([`crate::engine::proxied::step`]), until it is whole or the message time-out passes.

use std::os::fd::AsFd;
use std::time::Instant;

use nix::poll::PollFlags;

use super::stream::Conn;
use crate::engine::Shared;
use crate::engine::proxied::{
    PEEK_BYTES, Progress, ProxyHeaderError, admit, report_header_error, step,
};
use crate::engine::wait::{Woken, wait_until_ready};
use crate::proxy::{Header, HeaderReader};
use crate::service::Context;

/// With `--proxy-protocol`: reads the connection's header and returns its context with the
/// real client as the peer; `None` when the connection is over (a bad header, reported; a
/// refused client). Without it: the context as it is.
pub(crate) fn proxied(shared: &Shared, conn: &Conn, ctx: Context) -> Option<Context> {
    if !shared.proxy_protocol {
        return Some(ctx);
    }
    match read_header(shared, conn) {
        Ok(header) => admit(shared, conn, ctx, header),
        Err(error) => {
            report_header_error(&ctx, &error);
            None
        }
    }
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
