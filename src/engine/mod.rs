//! Engines: the I/O drivers. Each runs any service on every transport.
//!
//! An engine accepts connections and receives datagrams, feeds the bytes to a
//! [`StreamSession`](crate::service::StreamSession) or a service's `datagram` method, and writes
//! what comes back. The protocol logic is not here: it lives in [`crate::service`].

mod async_stream;
mod asynchronous;
mod blocking;
mod blocking_stream;
mod conn;
mod guard;
mod peer_log;
mod pool;
mod slots;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::codec::budget::Budget;
use crate::codec::session::FramedSession;
use crate::codec::{Framing, MessageCodec};
use crate::endpoint::Transport;
use crate::handler::{DatagramHandler, DynAsyncHandler, HandlerError, StreamHandler};
use crate::server::Limits;
use crate::server::listener::Listener;
use crate::server::shutdown::Trigger;
use crate::service::{Address, Context, DynService, StreamSession};
pub(crate) use blocking_stream::Conn;
pub(crate) use conn::write_timed_out;
pub(crate) use peer_log::{RefusalLog, Senders, Traffic};

/// How a server runs its connections.
///
/// | engine | a connection runs on | handlers it runs |
/// |---|---|---|
/// | [`Engine::Async`] | a tokio task | services, [`AsyncStreamHandler`](crate::handler::AsyncStreamHandler) |
/// | [`Engine::Sequential`] | the listener's own thread, one at a time | services, blocking handlers |
/// | [`Engine::Threaded`] | a new thread | services, blocking handlers |
/// | [`Engine::Pool`] | one of [`Limits::workers`] threads while it has bytes to read or write (a blocking handler: for its whole session); a poller between | services, blocking handlers |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Engine {
    /// tokio tasks: one lightweight task per connection (the default).
    #[default]
    Async,
    /// One connection at a time per listener, each listener in its own loop: the slides'
    /// iterative server. A second client waits in the listen queue until the first is done.
    #[doc(alias = "TCPServer")]
    #[doc(alias = "iterative")]
    Sequential,
    /// A new thread per connection: the slides' concurrent server, Python's `ThreadingMixIn`.
    #[doc(alias = "ThreadingMixIn")]
    #[doc(alias = "ThreadingTCPServer")]
    Threaded,
    /// A fixed pool of worker threads ([`Limits::workers`]) behind a poller, like Apache's
    /// event MPM: a service's connection takes a worker only while it has bytes to read or a
    /// reply to write, and waits for its peer in the poller (epoll) otherwise, so silent and
    /// slow peers cost a descriptor and a little memory each, never a worker. A blocking
    /// [`StreamHandler`] owns its socket for its whole session, as in socketserver, so each
    /// session holds a worker until it ends; sessions beyond `workers` wait, accepted, for a
    /// free one.
    #[doc(alias = "ThreadPool")]
    Pool,
}

impl Engine {
    /// Every engine, for tests and `--help`.
    pub const ALL: [Engine; 4] = [
        Engine::Async,
        Engine::Sequential,
        Engine::Threaded,
        Engine::Pool,
    ];

    /// The engine's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Async => "async",
            Engine::Sequential => "sequential",
            Engine::Threaded => "threaded",
            Engine::Pool => "pool",
        }
    }

    /// Whether this engine runs blocking handlers (the thread engines) rather than async ones.
    pub fn is_blocking(self) -> bool {
        self != Engine::Async
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Engine {
    type Err = String;

    /// ```
    /// use socketkit::Engine;
    /// assert_eq!("sequential".parse::<Engine>(), Ok(Engine::Sequential));
    /// assert!("fast".parse::<Engine>().is_err());
    /// ```
    fn from_str(text: &str) -> Result<Engine, String> {
        Engine::ALL
            .into_iter()
            .find(|e| e.name() == text)
            .ok_or_else(|| {
                let names: Vec<_> = Engine::ALL.iter().map(|e| e.name()).collect();
                format!("unknown engine {text:?} (expected {})", names.join(", "))
            })
    }
}

/// What a server runs: a service, and optionally handlers that take its place on streams or
/// datagrams.
pub(crate) struct App {
    pub(crate) service: Arc<dyn DynService>,
    pub(crate) stream_handler: Option<Arc<dyn StreamHandler>>,
    pub(crate) datagram_handler: Option<Arc<dyn DatagramHandler>>,
    pub(crate) async_handler: Option<Arc<dyn DynAsyncHandler>>,
}

/// `verify_request`: may this peer be served?
pub(crate) type VerifyHook = Arc<dyn Fn(&Address) -> bool + Send + Sync>;
/// `handle_error`: report a failed connection or datagram.
pub(crate) type ErrorHook = Arc<dyn Fn(&Address, &HandlerError) + Send + Sync>;

/// What every engine needs while serving.
pub(crate) struct Shared {
    pub(crate) app: App,
    pub(crate) framing: Framing,
    pub(crate) limits: Limits,
    pub(crate) verify_request: Option<VerifyHook>,
    pub(crate) access: crate::server::AccessList,
    pub(crate) handle_error: ErrorHook,
    /// Stop accepting.
    pub(crate) stop: Arc<Trigger>,
    /// The grace period is over: close every connection.
    pub(crate) force: Trigger,
    /// Refused peers, logged at info level at most once per interval.
    pub(crate) refusals: RefusalLog,
}

impl Shared {
    /// A session for a new stream: the service's own in `raw` framing, else the service's
    /// message function behind the framing's codec.
    pub(crate) fn session(&self, ctx: &Context) -> Box<dyn StreamSession> {
        match MessageCodec::new(self.framing, self.limits.max_line, self.limits.max_frame) {
            None => self.app.service.session(ctx),
            Some(codec) => Box::new(FramedSession::new(
                self.app.service.clone(),
                ctx.clone(),
                codec,
                Budget::process(self.limits.max_buffered),
            )),
        }
    }

    /// socketserver's `verify_request`: `false` closes the connection before a byte is read
    /// (with a reset: see [`refuse`]). Refusals are logged, rate-limited.
    pub(crate) fn verify(&self, peer: &Address) -> bool {
        if !self.access.permits_peer(peer) {
            self.refusals
                .refused(peer, "by the access list (--allow/--deny)");
            return false;
        }
        // The hook is the program's code, run on the listener's loop: a panic in it refuses
        // this peer (and is reported), it does not end the loop.
        let allowed = self.verify_request.as_ref().is_none_or(|verify| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| verify(peer))).unwrap_or_else(
                |panic| {
                    self.handle_error(peer, &HandlerError::from_panic(panic));
                    false
                },
            )
        });
        if !allowed {
            self.refusals.refused(peer, "by verify_request");
        }
        allowed
    }

    /// Reports how a connection or datagram ended. Expected endings (EOF, a peer that went
    /// away, an idle time-out, the end of the grace period) are logged; real failures and
    /// panics go to `handle_error`.
    pub(crate) fn report(&self, peer: &Address, result: Result<(), SessionError>) {
        self.report_ending(peer, result, None);
    }

    /// [`Shared::report`] for a stream connection: each line carries its traffic, and a
    /// failure reported to `handle_error` gets a debug line with it too.
    pub(crate) fn report_stream(
        &self,
        peer: &Address,
        traffic: &Traffic,
        result: Result<(), SessionError>,
    ) {
        self.report_ending(peer, result, Some(traffic));
    }

    fn report_ending(
        &self,
        peer: &Address,
        result: Result<(), SessionError>,
        traffic: Option<&Traffic>,
    ) {
        let tail = TrafficTail(traffic);
        match result {
            Ok(()) => tracing::debug!(%peer, "connection closed{tail}"),
            Err(SessionError::Io(e)) if is_peer_gone(&e) => {
                tracing::debug!(%peer, "connection ended: {e}{tail}")
            }
            Err(SessionError::Io(e)) if is_timeout(&e) => {
                tracing::info!(%peer, "connection closed: {e}{tail}")
            }
            Err(e) => {
                if traffic.is_some() {
                    tracing::debug!(%peer, "connection failed{tail}");
                }
                match e {
                    SessionError::Io(e) => self.handle_error(peer, &HandlerError::Io(e)),
                    SessionError::Panic(e) => self.handle_error(peer, &e),
                }
            }
        }
    }

    /// Calls the `handle_error` hook. It runs on a listener's loop or a pool worker, so a panic
    /// in it is logged here rather than ending either.
    fn handle_error(&self, peer: &Address, error: &HandlerError) {
        let reported = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (self.handle_error)(peer, error)
        }));
        if reported.is_err() {
            tracing::error!(%peer, "handle_error panicked while reporting: {error}");
        }
    }
}

/// A stream's traffic as the tail of its log line (`: 5 bytes in, ...`), or nothing.
struct TrafficTail<'a>(Option<&'a Traffic>);

impl fmt::Display for TrafficTail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(traffic) => write!(f, " ({traffic})"),
            None => Ok(()),
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

/// socketserver's default `handle_error`: one log line with the peer; serving goes on.
pub(crate) fn default_handle_error(peer: &Address, error: &HandlerError) {
    tracing::warn!(%peer, "error while serving: {error}");
}

/// Runs `listeners` on `engine` until `shared.stop` fires and the drain is done.
pub(crate) fn serve(
    engine: Engine,
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
) -> Result<(), crate::Error> {
    // Every listener is this process's own before any of them answers a datagram.
    let _own = guard::Listening::all(&listeners);
    match engine {
        Engine::Async => asynchronous::serve(shared, listeners),
        Engine::Sequential => blocking::serve(shared, listeners, blocking::Mode::Inline),
        Engine::Threaded => blocking::serve(shared, listeners, blocking::Mode::Thread),
        Engine::Pool => blocking::serve(shared, listeners, blocking::Mode::Pool),
    }
}

/// Why a connection ended other than by closing normally. Idle time-outs are
/// `io::ErrorKind::TimedOut`; the end of the grace period is `ConnectionAborted`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(transparent)]
    Panic(HandlerError),
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

fn is_peer_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

/// Builds the context for one request.
pub(crate) fn context(transport: Transport, peer: Address, local: Address) -> Context {
    Context {
        peer,
        local,
        transport,
        now: SystemTime::now(),
    }
}

/// Answers one datagram into `reply`. Returns `false` when nothing is to be sent: the service
/// chose silence, or the reply exceeds the datagram limit (logged: a truncated reply would be
/// a wrong answer).
pub(crate) fn answer_datagram(
    shared: &Shared,
    ctx: &Context,
    request: &[u8],
    reply: &mut BytesMut,
) -> bool {
    reply.clear();
    if let Some(peer) = ctx.peer.inet()
        && crate::service::is_service_port(peer.port())
    {
        tracing::debug!(%peer, "no reply to a datagram from a service port (inetd's loop rule)");
        return false;
    }
    if !shared.app.service.message(ctx, request, reply) {
        return false;
    }
    let limit = reply_limit(&shared.limits, &ctx.peer);
    if reply.len() > limit {
        tracing::warn!(
            peer = %ctx.peer,
            "reply of {} bytes exceeds the datagram limit of {limit} bytes; not sent",
            reply.len(),
        );
        return false;
    }
    true
}

/// The largest reply to `peer`: [`Limits::max_datagram`], within its family's UDP limit
/// (65,507 bytes over IPv4, IPv4-mapped peers of a dual-stack listener included; 65,527 over
/// IPv6).
pub(crate) fn reply_limit(limits: &Limits, peer: &Address) -> usize {
    let family = match peer {
        Address::Inet(addr) if addr.ip().to_canonical().is_ipv4() => crate::MAX_DATAGRAM_BYTES,
        Address::Inet(_) => crate::server::MAX_DATAGRAM_BYTES_V6,
        _ => usize::MAX,
    };
    limits.max_datagram.min(family)
}

/// The receive buffer of a datagram listener: one byte more than the largest UDP payload
/// (65,527 bytes over IPv6), so every UDP datagram arrives whole. A Unix datagram can be
/// larger; one that does not fit is detected (see [`recv_datagram`]) and dropped.
pub(crate) const DATAGRAM_BUFFER: usize = 65_536;

/// Receives one datagram into `buf` without blocking. Returns the datagram's real length,
/// which exceeds `buf.len()` when the kernel had to truncate it (`MSG_TRUNC`), and its sender.
/// std's `recv_from` hides truncation: the slides' `recvfrom(1024)` silently cuts datagrams,
/// and an answer to a cut request is a wrong answer.
pub(crate) fn recv_datagram(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    transport: Transport,
) -> io::Result<(usize, Address)> {
    use nix::sys::socket::{MsgFlags, SockaddrLike, SockaddrStorage, UnixAddr, recvmsg};
    use std::os::fd::AsRawFd;
    let mut iov = [io::IoSliceMut::new(buf)];
    let flags = MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT;
    let fd = fd.as_raw_fd();
    if transport == Transport::UnixDatagram {
        // `UnixAddr`, not `SockaddrStorage`: nix 0.31 leaves a Unix sender's length unset in
        // the latter, and every sender then looks unnamed.
        let msg = recvmsg::<UnixAddr>(fd, &mut iov, None, flags)?;
        let from = match msg.address {
            // An unbound sender has an empty address (length 0), on which nix's `path()`
            // panics: it is unnamed, and no reply can reach it.
            Some(unix)
                if (unix.len() as usize) <= std::mem::size_of::<nix::libc::sa_family_t>() =>
            {
                Address::Unix(None)
            }
            Some(unix) => match (unix.path(), unix.as_abstract()) {
                (Some(path), _) => Address::Unix(Some(path.to_path_buf())),
                (None, Some(name)) => Address::Abstract(name.to_vec()),
                (None, None) => Address::Unix(None),
            },
            None => Address::Unix(None),
        };
        return Ok((msg.bytes, from));
    }
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, None, flags)?;
    let from = msg.address.as_ref().and_then(|from| {
        from.as_sockaddr_in()
            .map(|a| std::net::SocketAddr::from(std::net::SocketAddrV4::from(*a)))
            .or_else(|| {
                from.as_sockaddr_in6()
                    .map(|a| std::net::SocketAddrV6::from(*a).into())
            })
    });
    let from =
        from.ok_or_else(|| io::Error::other("a datagram from an address of no known family"))?;
    Ok((msg.bytes, Address::Inet(from)))
}

/// Whether a datagram of `len` bytes was cut to fit `buf`; logs it (at most once a second).
pub(crate) fn was_truncated(
    len: usize,
    buf: usize,
    peer: &Address,
    log: &mut Option<Instant>,
) -> bool {
    if len <= buf {
        return false;
    }
    let now = Instant::now();
    if log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
        *log = Some(now);
        tracing::warn!(%peer, "dropped a datagram of {len} bytes: larger than the {buf}-byte receive buffer");
    }
    true
}

/// What ended a wait in [`wait_readable`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The descriptor is readable (or has an error or hang-up to report).
    Ready,
    /// The trigger fired.
    Triggered,
    /// The time-out passed.
    TimedOut,
}

/// Waits until `fd` is readable, `trigger` fires, or `timeout` passes. Blocking engines call
/// this before every accept, receive and read, so shutdown and time-outs need no polling.
pub(crate) fn wait_readable(
    fd: BorrowedFd<'_>,
    trigger: &Trigger,
    timeout: Option<Duration>,
) -> io::Result<Woken> {
    wait_until_ready(fd, PollFlags::POLLIN, trigger, timeout)
}

/// Waits until `fd` is ready for `events` (or has an error or hang-up to report), `trigger`
/// fires, or `timeout` passes.
pub(crate) fn wait_until_ready(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    trigger: &Trigger,
    timeout: Option<Duration>,
) -> io::Result<Woken> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        if trigger.is_fired() {
            return Ok(Woken::Triggered);
        }
        let wait = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up so a sub-millisecond remainder does not spin.
                let ms = left.as_millis() + u128::from(left.subsec_nanos() % 1_000_000 != 0);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [
            PollFd::new(fd, events),
            PollFd::new(trigger.fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, wait) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(Woken::TimedOut);
                }
            }
            Ok(_) => {
                if fds[1].any().unwrap_or(false) {
                    return Ok(Woken::Triggered);
                }
                return Ok(Woken::Ready);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
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
