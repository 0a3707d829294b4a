//! The accept loop's rules, written once for every engine (as socketserver's
//! `_handle_request_noblock` is shared by its mix-ins): the connection permit is taken before
//! `accept()` (at the limit, clients wait in the kernel's queue, with a log line), each accepted
//! peer is verified or refused with a reset, errors that concern one connection are skipped and
//! the others back off, and at shutdown the listen queue is drained. The engines keep only their
//! I/O: how they wait, accept and run a connection.

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;
use crate::service::Address;
use crate::stats::ListenerStats;

/// What the accept loop does with one `accept()` result.
#[derive(Debug)]
pub(crate) enum Accepted<C> {
    /// Serve this connection, from this peer.
    Serve(C, Address),
    /// Nothing to serve (a refused peer, an error of that connection alone): accept the next.
    Next,
    /// An error of the process or system (EMFILE...): give the permit back and wait this long.
    BackOff(Duration),
}

/// One listener's accept loop state: its back-off, its limit log, its counters.
#[derive(Debug)]
pub(crate) struct AcceptLoop {
    backoff: Backoff,
    limit_log: LimitLog,
    stats: Arc<ListenerStats>,
}

impl AcceptLoop {
    /// The accept loop of the listener counted by `stats`.
    pub(crate) fn new(stats: Arc<ListenerStats>) -> AcceptLoop {
        AcceptLoop {
            backoff: Backoff::new(),
            limit_log: LimitLog::default(),
            stats,
        }
    }

    /// No permit is free: logs (at most every 10 s) that the limit holds clients back. The
    /// engine then waits for a permit, in its own way.
    pub(crate) fn at_limit(&mut self, max_connections: usize) {
        self.stats.limit_reached();
        self.limit_log.at_limit(max_connections, Instant::now());
    }

    /// Decides on one `accept()` result. A refused peer's connection is reset here (dropping
    /// it then closes it before a byte is read).
    pub(crate) fn accepted<C: AsFd>(
        &mut self,
        shared: &Shared,
        result: io::Result<(C, Address)>,
    ) -> Accepted<C> {
        match result {
            Ok((conn, peer)) => {
                self.backoff.reset();
                // Behind a balancer the peer is the balancer: the client is verified once its
                // PROXY header is read.
                let verdict = match shared.proxy_protocol {
                    true => Ok(()),
                    false => shared.verify(&peer),
                };
                if let Err(why) = verdict {
                    self.stats.refused(why);
                    refuse(&conn);
                    return Accepted::Next;
                }
                self.stats.accepted();
                tracing::debug!(%peer, "connection accepted");
                Accepted::Serve(conn, peer)
            }
            Err(e) if is_per_connection_error(&e) => Accepted::Next,
            Err(e) => Accepted::BackOff(self.backoff.on_error("accept", &e)),
        }
    }
}

/// The connection limit's log line: at most one every 10 s, however long the limit holds.
#[derive(Debug, Default)]
pub(crate) struct LimitLog {
    last: Option<Instant>,
}

impl LimitLog {
    const INTERVAL: Duration = Duration::from_secs(10);

    /// Logs that `max` connections are open and new clients wait, unless it was said lately.
    pub(crate) fn at_limit(&mut self, max: usize, now: Instant) {
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= Self::INTERVAL)
        {
            self.last = Some(now);
            tracing::warn!(
                "connection limit reached ({max}); new clients wait in the listen queue"
            );
        }
    }
}

/// At shutdown: accepts every connection the kernel has already completed (a balancer does
/// not retry a connection that was established), without waiting, and hands each verified one
/// to `serve`. `accept_now` must not block: its `WouldBlock` ends the drain. The caller stops
/// accepting afterwards, so later clients are refused rather than left in a queue nobody serves.
pub(crate) fn drain_queue<C: AsFd>(
    shared: &Shared,
    stats: &ListenerStats,
    mut accept_now: impl FnMut() -> io::Result<(C, Address)>,
    mut serve: impl FnMut(C, Address),
) {
    loop {
        match accept_now() {
            Ok((conn, peer)) => {
                let verdict = match shared.proxy_protocol {
                    true => Ok(()),
                    false => shared.verify(&peer),
                };
                if let Err(why) = verdict {
                    stats.refused(why);
                    refuse(&conn);
                    continue;
                }
                stats.accepted();
                tracing::debug!(%peer, "connection accepted from the queue at shutdown");
                serve(conn, peer);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if is_per_connection_error(&e) => {}
            Err(e) => {
                tracing::warn!("accepting the queue at shutdown failed: {e}");
                return;
            }
        }
    }
}

/// Closes a refused TCP connection with a reset (SO_LINGER 0, then the caller drops it)
/// rather than a FIN: the peer's read fails with ECONNRESET, where a clean close would look
/// like a server with nothing to say. A Unix stream has no reset; it is simply closed.
pub(crate) fn refuse(conn: &impl AsFd) {
    if let Err(e) = socket2::SockRef::from(conn).set_linger(Some(Duration::ZERO)) {
        tracing::debug!("cannot reset a refused connection: {e}");
    }
}

/// Whether an accept error concerns one connection only (retry at once) rather than the
/// process or the system (back off).
pub(crate) fn is_per_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || e.raw_os_error() == Some(nix::libc::EPROTO)
}

/// Back-off after accept or receive errors that concern the whole process or system (EMFILE,
/// ENFILE, ENOBUFS, ENOMEM): retrying at once would spin a core, so wait 5 ms, doubling up to
/// 1 s, reset on the next success; and log at most once a second.
#[derive(Debug)]
pub(crate) struct Backoff {
    delay: Duration,
    last_log: Option<Instant>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> Backoff {
        Backoff {
            delay: Duration::ZERO,
            last_log: None,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.delay = Duration::ZERO;
    }

    /// Logs `error` (rate-limited) and returns how long to wait before trying again.
    pub(crate) fn on_error(&mut self, what: &str, error: &io::Error) -> Duration {
        self.delay = (self.delay * 2).clamp(Self::FIRST, Self::MAX);
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_log = Some(now);
            match limit_reached(error) {
                Some(limit) => tracing::warn!(
                    "{what} failed: {error}: {limit}; retrying in {:?}",
                    self.delay
                ),
                None => tracing::warn!("{what} failed: {error}; retrying in {:?}", self.delay),
            }
        }
        self.delay
    }
}

/// Names the limit a resource error ran into, so the log line says what to raise.
fn limit_reached(error: &io::Error) -> Option<String> {
    use nix::libc::{EMFILE, ENFILE, ENOBUFS, ENOMEM};
    match error.raw_os_error()? {
        EMFILE => {
            let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(soft, _)| soft.to_string())
                .unwrap_or_else(|_| "?".into());
            Some(format!(
                "the process's descriptor limit (RLIMIT_NOFILE, {soft}) is reached; \
                 raise it (ulimit -n) or lower --max-connections"
            ))
        }
        ENFILE => Some("the system's file table is full (fs.file-max)".into()),
        ENOBUFS | ENOMEM => Some("the kernel is out of socket memory".into()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_errors_name_their_limit() {
        let emfile = io::Error::from_raw_os_error(nix::libc::EMFILE);
        let text = limit_reached(&emfile).unwrap();
        assert!(text.contains("RLIMIT_NOFILE"), "{text}");
        assert!(limit_reached(&io::Error::from_raw_os_error(nix::libc::ENFILE)).is_some());
        assert!(limit_reached(&io::Error::from(io::ErrorKind::ConnectionReset)).is_none());
    }
}
