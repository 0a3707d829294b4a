//! Engines: the I/O drivers. Each runs any service on every transport.
//!
//! An engine accepts connections and receives datagrams, feeds the bytes to a
//! [`StreamSession`](crate::service::StreamSession) or a service's `datagram` method, and writes
//! what comes back. The protocol logic is not here: it lives in [`crate::service`].

mod accept;
mod asynchronous;
mod blocking;
mod datagram;
mod guard;
pub(crate) mod listener;
mod peer_log;
mod pool;
mod rate;
mod runtime;
mod slots;
pub(crate) mod socket_file;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nix::poll::{PollFd, PollFlags, PollTimeout};

pub(crate) use crate::handler::write_timed_out;
use crate::limits::Limits;
use crate::service::{Next, StreamSession};
use crate::shutdown::Trigger;
use listener::Listener;
pub(crate) use peer_log::Traffic;
pub(crate) use runtime::{App, ErrorHook, SessionError, Shared, VerifyHook, context};

/// How a server runs its connections.
///
/// | engine | a connection runs on | handlers it runs |
/// |---|---|---|
/// | [`Engine::Async`] | a tokio task | services, [`AsyncStreamHandler`](crate::handler::AsyncStreamHandler) |
/// | [`Engine::Sequential`] | the listener's own thread, one at a time | services, blocking handlers |
/// | [`Engine::Threaded`] | a new thread | services, blocking handlers |
/// | [`Engine::Pool`] | one of [`Limits::workers`] threads | services, blocking handlers |
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
    /// A fixed pool of worker threads ([`Limits::workers`]); connections beyond it wait,
    /// accepted, for a free worker.
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
fn wait_until_ready(
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

/// An accepted stream connection on a blocking engine.
#[derive(Debug)]
pub(crate) enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    pub(crate) fn set_blocking(&self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_nonblocking(false),
            Conn::Unix(s) => s.set_nonblocking(false),
        }
    }

    pub(crate) fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Write),
            Conn::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Tcp(s) => s.as_fd(),
            Conn::Unix(s) => s.as_fd(),
        }
    }
}

impl Conn {
    /// Reads through a shared reference, so a handler's reader and writer can coexist.
    fn read_shared(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => (&*s).read(buf),
            Conn::Unix(s) => (&*s).read(buf),
        }
    }

    /// Sends what fits without waiting (`MSG_DONTWAIT`; `MSG_NOSIGNAL`, as std does).
    fn send_now(&self, buf: &[u8]) -> io::Result<usize> {
        use nix::sys::socket::{MsgFlags, send};
        use std::os::fd::AsRawFd;
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        send(self.as_fd().as_raw_fd(), buf, flags).map_err(io::Error::from)
    }
}

/// The reading side of a blocking connection: every read waits at most the idle time-out
/// (`TimedOut`) and ends when the grace period does (`ConnectionAborted`), so no peer can hold
/// a thread forever and shutdown always ends.
pub(crate) struct GuardedRead<'a> {
    pub(crate) conn: &'a Conn,
    pub(crate) idle: Duration,
    pub(crate) force: &'a Trigger,
    pub(crate) traffic: &'a Traffic,
    /// The message deadline of a handler's bounded read: no read waits past it.
    pub(crate) deadline: Option<Instant>,
}

impl Read for GuardedRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let wait = match self.deadline {
                Some(at) => self.idle.min(at.saturating_duration_since(Instant::now())),
                None => self.idle,
            };
            match wait_readable(self.conn.as_fd(), self.force, Some(wait))? {
                Woken::Triggered => return Err(grace_over()),
                Woken::TimedOut if wait < self.idle => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the message deadline passed",
                    ));
                }
                Woken::TimedOut => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("idle for {:?}", self.idle),
                    ));
                }
                Woken::Ready => match self.conn.read_shared(buf) {
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                        ) => {}
                    Ok(n) => {
                        self.traffic.received(n);
                        return Ok(n);
                    }
                    result => return result,
                },
            }
        }
    }
}

impl crate::handler::SocketRead for GuardedRead<'_> {
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

/// The writing side of a blocking connection. A write that cannot proceed waits for room
/// with `poll`, beside the end of the grace period: it fails with `TimedOut` once the peer has
/// read nothing for the write time-out (measured between two successive writes), and with
/// `ConnectionAborted` when the grace period ends, even for a session that never reads (chargen
/// to a fast reader) or a write already waiting.
pub(crate) struct SharedWrite<'a> {
    pub(crate) conn: &'a Conn,
    pub(crate) timeout: Duration,
    pub(crate) force: &'a Trigger,
    pub(crate) traffic: &'a Traffic,
}

impl Write for SharedWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            if self.force.is_fired() {
                return Err(grace_over());
            }
            match self.conn.send_now(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let fd = self.conn.as_fd();
                    match wait_until_ready(fd, PollFlags::POLLOUT, self.force, Some(self.timeout))?
                    {
                        Woken::Ready => {}
                        Woken::TimedOut => return Err(write_timed_out(self.timeout)),
                        Woken::Triggered => return Err(grace_over()),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(n) => {
                    self.traffic.sent(n);
                    return Ok(n);
                }
                result => return result,
            }
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The error that ends a connection when the shutdown grace period is over.
pub(crate) fn grace_over() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "closed at the end of the shutdown grace period",
    )
}

/// Prepares an accepted connection for blocking I/O (an accepted socket may inherit the
/// listener's non-blocking mode). Reads and writes wait in `poll`, beside the triggers, with
/// their own time-outs.
pub(crate) fn prepare_blocking(conn: &Conn) -> io::Result<()> {
    conn.set_blocking()
}

/// The clock of one stream connection: when its next read must end, and why. Both engines
/// keep one per connection, so the idle time-out and the per-message deadline mean the same
/// on each.
pub(crate) struct SessionClock<'a> {
    limits: &'a Limits,
    last_activity: Instant,
    /// When the bytes of the message still incomplete began to arrive.
    message_began: Option<Instant>,
    /// Whether the peer has sent anything yet.
    spoke: bool,
}

/// Which bound a read ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Nothing arrived for the idle time-out.
    Idle,
    /// A message begun was not complete within the per-message deadline.
    Message,
}

impl<'a> SessionClock<'a> {
    pub(crate) fn new(limits: &'a Limits, now: Instant) -> SessionClock<'a> {
        SessionClock {
            limits,
            last_activity: now,
            message_began: None,
            spoke: false,
        }
    }

    /// Something was written: the peer is reading, so the connection is not idle.
    pub(crate) fn wrote(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// Bytes arrived and the session has seen them: `in_message` is what it says now, and
    /// `replied` whether it answered something. A reply is progress: a pipelined stream of
    /// large frames, whose reads seldom end on a frame boundary, is not one endless message.
    pub(crate) fn read(&mut self, now: Instant, in_message: bool, replied: bool) {
        self.last_activity = now;
        self.spoke = true;
        if !in_message {
            self.message_began = None;
        } else if replied || self.message_began.is_none() {
            self.message_began = Some(now);
        }
    }

    /// When the next read must end, and which limit that is.
    pub(crate) fn read_deadline(&self) -> (Instant, Expiry) {
        let idle = self.last_activity + self.limits.idle_timeout;
        match self.message_began {
            Some(began) if began + self.limits.message_timeout < idle => {
                (began + self.limits.message_timeout, Expiry::Message)
            }
            _ => (idle, Expiry::Idle),
        }
    }

    /// Whether the connection sits between two messages (the session owes nothing): at
    /// shutdown it is then closed at once. A connection that has not spoken yet is not idle in
    /// this sense: its first request may be on its way (Go's `http.Server.Shutdown` gives new
    /// connections the same benefit of the doubt), and the grace period bounds it anyway.
    pub(crate) fn idle_at_shutdown(&self, owes_nothing: bool) -> bool {
        self.spoke && owes_nothing
    }

    /// The error that ends a connection when a read runs into `expiry`.
    pub(crate) fn expired(&self, expiry: Expiry) -> io::Error {
        let text = match expiry {
            Expiry::Idle => format!("idle for {:?}", self.limits.idle_timeout),
            Expiry::Message => format!(
                "a message took longer than {:?} to arrive (message time-out)",
                self.limits.message_timeout
            ),
        };
        io::Error::new(io::ErrorKind::TimedOut, text)
    }
}

/// Whether bytes (or an EOF or error) are waiting on `fd` right now.
fn readable_now(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    loop {
        match nix::poll::poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) => return Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Runs one session on a blocking stream until it closes, times out, the peer goes away, or
/// shutdown ends it. A blocking write is the backpressure: nothing is read while the peer is
/// not reading, and the write time-out bounds that wait. At shutdown (`shared.stop`) a
/// connection between messages is closed at once; one in a message is let finish it, until the
/// grace period ends (`shared.force`).
pub(crate) fn drive(
    mut session: Box<dyn StreamSession>,
    conn: &Conn,
    buf: &mut [u8],
    shared: &Shared,
    traffic: &Traffic,
) -> Result<(), SessionError> {
    let limits = &shared.limits;
    let mut writer = SharedWrite {
        conn,
        timeout: limits.write_timeout,
        force: &shared.force,
        traffic,
    };
    let mut clock = SessionClock::new(limits, Instant::now());
    let mut out = BytesMut::new();
    let mut next = session.on_open(&mut out);
    loop {
        if !out.is_empty() {
            writer.write_all(&out)?;
            clock.wrote(Instant::now());
            out.clear();
        }
        next = match next {
            Next::Close => {
                close_gracefully(conn, &shared.force);
                return Ok(());
            }
            Next::Write => session.on_writable(&mut out),
            Next::Read => {
                let idle = clock.idle_at_shutdown(session.between_messages());
                let trigger = if idle { &*shared.stop } else { &shared.force };
                let (deadline, expiry) = clock.read_deadline();
                let wait = deadline.saturating_duration_since(Instant::now());
                match wait_readable(conn.as_fd(), trigger, Some(wait))? {
                    Woken::Ready => {}
                    Woken::TimedOut => return Err(clock.expired(expiry).into()),
                    Woken::Triggered if !idle => return Err(grace_over().into()),
                    // The grace period is over: even a peer that never lets the connection
                    // fall idle (it always has more on the way) is closed now.
                    Woken::Triggered if shared.force.is_fired() => {
                        return Err(grace_over().into());
                    }
                    // Shutdown, between messages: serve a request that has already arrived,
                    // close otherwise.
                    Woken::Triggered if readable_now(conn.as_fd())? => {}
                    Woken::Triggered => {
                        tracing::debug!("closing a connection idle at shutdown");
                        close_gracefully(conn, &shared.force);
                        return Ok(());
                    }
                }
                match conn.read_shared(buf) {
                    Ok(0) => session.on_eof(&mut out),
                    Ok(n) => {
                        traffic.received(n);
                        let next = session.on_data(&buf[..n], &mut out);
                        clock.read(Instant::now(), session.in_message(), !out.is_empty());
                        next
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                        ) =>
                    {
                        Next::Read
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
    }
}

/// How long a closing connection waits for the peer's EOF, and how much it reads meanwhile.
pub(crate) const LINGER: Duration = Duration::from_secs(1);
pub(crate) const LINGER_BYTES: usize = 64 * 1024;

/// Closes with a FIN and waits (briefly) for the peer's EOF, discarding what it still sends.
/// Closing a socket with unread input sends a reset, and a reset can destroy the reply still
/// in flight: a daytime client that sent a line would never see the time (nginx calls this
/// "lingering close").
pub(crate) fn close_gracefully(conn: &Conn, force: &Trigger) {
    if conn.shutdown_write().is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER;
    let mut discarded = 0;
    let mut buf = [0u8; 4096];
    while discarded < LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        match wait_readable(conn.as_fd(), force, Some(left)) {
            Ok(Woken::Ready) => match conn.read_shared(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => discarded += n,
            },
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            idle_timeout: Duration::from_secs(300),
            message_timeout: Duration::from_secs(60),
            ..Limits::default()
        }
    }

    #[test]
    fn the_idle_time_out_runs_from_the_last_activity() {
        let limits = limits();
        let t0 = Instant::now();
        let mut clock = SessionClock::new(&limits, t0);
        assert_eq!(
            clock.read_deadline(),
            (t0 + limits.idle_timeout, Expiry::Idle)
        );
        clock.wrote(t0 + Duration::from_secs(10));
        assert_eq!(clock.read_deadline().0, t0 + Duration::from_secs(310));
    }

    #[test]
    fn a_message_begun_must_end_by_its_deadline_however_often_bytes_arrive() {
        let limits = limits();
        let t0 = Instant::now();
        let mut clock = SessionClock::new(&limits, t0);
        clock.read(t0, true, false);
        for second in 1..100 {
            clock.read(t0 + Duration::from_secs(second), true, false); // a byte a second
        }
        assert_eq!(
            clock.read_deadline(),
            (t0 + Duration::from_secs(60), Expiry::Message)
        );
        // The message completes: the next one gets a deadline of its own.
        clock.read(t0 + Duration::from_secs(100), false, true);
        assert_eq!(clock.read_deadline().1, Expiry::Idle);
        clock.read(t0 + Duration::from_secs(101), true, false);
        assert_eq!(clock.read_deadline().0, t0 + Duration::from_secs(161));
    }

    #[test]
    fn a_reply_restarts_the_deadline_of_the_message_still_open() {
        let limits = limits();
        let t0 = Instant::now();
        let mut clock = SessionClock::new(&limits, t0);
        // Pipelined frames: every read completes one and ends inside the next.
        for second in 0..100 {
            clock.read(t0 + Duration::from_secs(second), true, true);
        }
        assert_eq!(
            clock.read_deadline(),
            (t0 + Duration::from_secs(99 + 60), Expiry::Message)
        );
    }

    #[test]
    fn a_message_deadline_longer_than_the_idle_time_out_never_wins() {
        let limits = Limits {
            message_timeout: Duration::from_secs(600),
            ..limits()
        };
        let t0 = Instant::now();
        let mut clock = SessionClock::new(&limits, t0);
        clock.read(t0, true, false);
        assert_eq!(
            clock.read_deadline(),
            (t0 + limits.idle_timeout, Expiry::Idle)
        );
    }

    #[test]
    fn only_a_connection_that_has_spoken_and_finished_its_message_is_idle_at_shutdown() {
        let limits = limits();
        let t0 = Instant::now();
        let mut clock = SessionClock::new(&limits, t0);
        assert!(
            !clock.idle_at_shutdown(true),
            "its first request may be on its way"
        );
        clock.read(t0, true, false);
        assert!(!clock.idle_at_shutdown(false));
        clock.read(t0, false, true);
        assert!(clock.idle_at_shutdown(true));
    }
}
