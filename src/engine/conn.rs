//! The rules of one stream connection, free of I/O: events in, the next I/O action out.
//!
//! quinn-proto keeps a connection's whole state machine, timers included, out of the I/O, and
//! quinn only moves bytes and sleeps until the instant the machine names. [`Connection`] does
//! the same for a socketkit stream: the idle time-out, the per-message deadline, the write
//! time-out, what shutdown does to a connection between messages or inside one, and the end of
//! the grace period are each decided here, once, and every engine's driver is a short loop
//! that obeys [`Connection::action`] and reports what happened with [`Connection::handle`]:
//!
//! ```text
//! loop {
//!     match conn.action() {
//!         Action::Write { bytes, deadline } => write some of `bytes`, giving up at `deadline`
//!                                              -> Event::Wrote(n) or Event::Deadline
//!         Action::Read { deadline, .. }     => wait for bytes until `deadline` (a deadline
//!                                              already past: read only what is there)
//!                                              -> Event::Read(bytes), Eof or Deadline
//!         Action::Close                     => lingering close (see [`Linger`]), report Ok
//!         Action::Abort(ending)             => drop the socket, report ending.error()
//!     }
//!     // and whenever it notices them: Event::ShutdownBegun, Event::GraceOver
//! }
//! ```
//!
//! The time always comes from the driver (`now`), never from a clock in here, so the tests
//! below drive every rule with plain `Instant`s they advance by hand. The byte counts of the
//! close log line ([`super::Traffic`]) stay with the drivers, which see the bytes move.

pub(crate) use crate::handler::{idle_timed_out, write_timed_out};
use std::io;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::Limits;
use crate::service::{Next, StreamSession};
use crate::stats::EndCause;

/// How long a closing connection waits for the peer's EOF after its FIN.
pub(crate) const LINGER: Duration = Duration::from_secs(1);
/// How much a closing connection reads (and discards) while it waits for the peer's EOF.
pub(crate) const LINGER_BYTES: usize = 64 * 1024;

/// What the driver must do next for one connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action<'a> {
    /// Write (some of) these bytes, then report [`Event::Wrote`]; if no byte can be written
    /// by `deadline` (the write time-out since the last progress), report [`Event::Deadline`].
    Write { bytes: &'a [u8], deadline: Instant },
    /// Wait for bytes until `deadline`, then report [`Event::Read`] or [`Event::Eof`], or
    /// [`Event::Deadline`] if none came; `why` names the limit. A deadline already past means:
    /// read only what has already arrived, do not wait.
    Read { deadline: Instant, why: Expiry },
    /// Close gracefully: shut the write side down, drain the peer briefly ([`Linger`]), close.
    /// The connection ended well.
    Close,
    /// Close now (drop the socket): the connection ends with [`Ending::error`].
    Abort(Ending),
}

/// The I/O of [`Connection::action`] without its deadline: what a driver tries at once. A
/// driver that only waits when the I/O cannot go on asks for the deadline (`action`) then, so
/// a request that is read and answered at once costs no deadline arithmetic.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Io<'a> {
    /// [`Action::Write`]: write (some of) these bytes.
    Write(&'a [u8]),
    /// [`Action::Read`]: read.
    Read,
    /// [`Action::Close`] or [`Action::Abort`]: the connection is over.
    Done,
}

/// What the driver reports. Each comes with `now`, the driver's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// These bytes arrived (never empty: an empty read is [`Event::Eof`]).
    Read(&'a [u8]),
    /// The peer closed its write half (the 0-byte read).
    Eof,
    /// This many bytes of the last [`Action::Write`] went out.
    Wrote(usize),
    /// The deadline of the last action passed with nothing read or written. Reported early
    /// (a timer that fired for an earlier deadline), it is ignored.
    Deadline,
    /// The server stopped accepting: connections between messages close now.
    ShutdownBegun,
    /// The shutdown grace period is over: every connection closes now.
    GraceOver,
}

/// Which limit a wait runs into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// Nothing arrived or left for the idle time-out.
    Idle,
    /// A message begun was not whole within the per-message deadline.
    Message,
    /// Shutdown found the connection between messages: read only a request already here.
    Shutdown,
}

/// Why a connection is closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Idle for this long.
    Idle(Duration),
    /// A message took longer than this to arrive.
    Message(Duration),
    /// The peer read nothing for this long.
    Write(Duration),
    /// The shutdown grace period is over.
    GraceOver,
}

impl Ending {
    /// The error the connection's close log line reports: `TimedOut` for the time-outs,
    /// `ConnectionAborted` at the end of the grace period.
    pub(crate) fn error(self) -> io::Error {
        match self {
            Ending::Idle(idle) => idle_timed_out(idle),
            Ending::Message(limit) => EndCause::MessageTimeout.error(
                io::ErrorKind::TimedOut,
                format!("a message took longer than {limit:?} to arrive (message time-out)"),
            ),
            Ending::Write(limit) => write_timed_out(limit),
            Ending::GraceOver => grace_over(),
        }
    }
}

/// The error that ends a connection when the shutdown grace period is over.
pub(crate) fn grace_over() -> io::Error {
    EndCause::GraceOver.error(
        io::ErrorKind::ConnectionAborted,
        "closed at the end of the shutdown grace period".into(),
    )
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Serving: the action follows from the output and the clocks.
    Open,
    /// Done, gracefully: every action from now on is [`Action::Close`].
    Closed,
    /// Done, at once: every action from now on is [`Action::Abort`].
    Aborted(Ending),
}

/// The limits one connection obeys, copied out of [`Limits`].
#[derive(Debug, Clone, Copy)]
struct Timeouts {
    idle: Duration,
    message: Duration,
    write: Duration,
    /// Output capacity kept between bursts.
    keep_out: usize,
}

/// One stream connection's rules. It owns the session and its output buffer; the driver owns
/// the socket, the read buffer and the clock.
pub(crate) struct Connection<S = Box<dyn StreamSession>> {
    session: S,
    /// What the session has said and the peer has not yet been sent all of.
    out: BytesMut,
    /// How much of `out` is already on the wire.
    written: usize,
    /// What the session wants once `out` is on the wire.
    next: Next,
    state: State,
    limits: Timeouts,
    /// The `now` of the latest event.
    now: Instant,
    /// The last read or write progress: the idle and write time-outs run from here.
    last_activity: Instant,
    /// When the bytes of the message still incomplete began to arrive (or the last reply).
    message_began: Option<Instant>,
    /// Whether the peer has sent anything yet.
    spoke: bool,
    /// Whether the server has stopped accepting.
    stopping: bool,
    /// Reads (and the EOF) the session answered with some bytes: the `requests` counter.
    replies: u64,
}

impl<S: StreamSession> Connection<S> {
    /// A connection accepted at `now`: the session's `on_open` has had its say.
    pub(crate) fn new(mut session: S, limits: &Limits, now: Instant) -> Connection<S> {
        let mut out = BytesMut::new();
        let next = session.on_open(&mut out);
        let mut conn = Connection {
            session,
            out,
            written: 0,
            next,
            state: State::Open,
            limits: Timeouts {
                idle: limits.idle_timeout,
                message: limits.message_timeout,
                write: limits.write_timeout,
                keep_out: limits.read_buffer.saturating_mul(4),
            },
            now,
            last_activity: now,
            message_began: None,
            spoke: false,
            stopping: false,
            replies: 0,
        };
        conn.settle();
        conn
    }

    /// What the driver must do next. Once it is [`Action::Close`] or [`Action::Abort`], it
    /// stays so: a closed connection gets no further action.
    #[inline]
    pub(crate) fn action(&self) -> Action<'_> {
        match self.state {
            State::Closed => Action::Close,
            State::Aborted(ending) => Action::Abort(ending),
            State::Open if self.is_writing() => Action::Write {
                bytes: &self.out[self.written..],
                deadline: self.last_activity + self.limits.write,
            },
            State::Open => {
                let (deadline, why) = self.read_deadline();
                Action::Read { deadline, why }
            }
        }
    }

    /// [`Connection::action`] without the deadline, which costs a clock addition or two.
    #[inline]
    pub(crate) fn io(&self) -> Io<'_> {
        match self.state {
            State::Open if self.is_writing() => Io::Write(&self.out[self.written..]),
            State::Open => Io::Read,
            State::Closed | State::Aborted(_) => Io::Done,
        }
    }

    /// The deadline of [`Connection::action`] alone (`None` once it is `Close` or `Abort`):
    /// what a driver whose I/O would wait asks for. The wait of almost every request, an idle
    /// connection between messages, is one addition here, not [`Connection::read_deadline`]'s
    /// choice among the limits (about 40 instructions a request on the async engine).
    #[inline]
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self.state {
            State::Open if self.is_writing() => Some(self.last_activity + self.limits.write),
            State::Open if self.message_began.is_none() && !self.stopping => {
                Some(self.last_activity + self.limits.idle)
            }
            State::Open => Some(self.read_deadline().0),
            State::Closed | State::Aborted(_) => None,
        }
    }

    /// Applies one event that happened at `now`. The two events of every request (a read, a
    /// write) take an inlined path; the rest, [`Connection::handle_rare`].
    #[inline(always)]
    pub(crate) fn handle(&mut self, event: Event<'_>, now: Instant) {
        if self.state != State::Open {
            return;
        }
        self.now = self.now.max(now);
        match event {
            Event::Read(bytes) => {
                debug_assert!(!self.is_writing(), "a read while output is pending");
                self.last_activity = now;
                self.spoke = true;
                self.next = self.session.on_data(bytes, &mut self.out);
                // `out` was empty: a read comes only once the output is all written.
                self.replies += u64::from(!self.out.is_empty());
                if !self.session.in_message() {
                    self.message_began = None;
                } else if !self.out.is_empty() || self.message_began.is_none() {
                    // A reply is progress: a pipelined stream of large frames, whose reads
                    // seldom end on a frame boundary, is not one endless message.
                    self.message_began = Some(now);
                }
            }
            Event::Wrote(n) => {
                debug_assert!(self.written + n <= self.out.len(), "wrote more than asked");
                self.written = (self.written + n).min(self.out.len());
                if n > 0 {
                    self.last_activity = now;
                }
                if self.written == self.out.len() {
                    self.written = 0;
                    self.out.clear();
                    if self.out.capacity() > self.limits.keep_out {
                        self.out = BytesMut::new(); // a burst's buffer is not kept for an idle connection
                    }
                }
            }
            _ => return self.handle_rare(event, now),
        }
        // `settle`'s common case inline: output to write, or a read wanted.
        if self.is_writing() || self.next == Next::Read {
            return;
        }
        self.settle();
    }

    /// [`Event::Read`] of `data`, which the session may turn into its reply in place
    /// ([`StreamSession::on_data_in_place`]): returns `true` when it did, and then the reply
    /// is `data` itself, to be written before anything else is asked of the machine and
    /// reported with [`Connection::wrote_in_place`]. `false`: the event was handled the
    /// general way (the reply, if any, is in the machine's output). Saves the copy into the
    /// output buffer and its clearing, on every request of a same-length service.
    #[inline(always)]
    pub(crate) fn read_in_place(&mut self, data: &mut [u8], now: Instant) -> bool {
        if self.state != State::Open || self.is_writing() {
            self.handle(Event::Read(data), now);
            return false;
        }
        let Some(next) = self.session.on_data_in_place(data) else {
            self.handle(Event::Read(data), now);
            return false;
        };
        // `Event::Read`'s bookkeeping, for a reply (never empty) that is `data`.
        self.now = self.now.max(now);
        self.last_activity = now;
        self.spoke = true;
        self.replies += 1; // the metrics' `requests`, as `Event::Read` counts them
        self.next = next;
        self.message_began = self.session.in_message().then_some(now);
        true
    }

    /// The driver wrote the first `n` bytes of the in-place `reply` of
    /// [`Connection::read_in_place`] (0: none yet, the socket was full); the rest becomes
    /// output, written the general way.
    #[inline(always)]
    pub(crate) fn wrote_in_place(&mut self, reply: &[u8], n: usize, now: Instant) {
        debug_assert!(
            n <= reply.len() && !self.is_writing(),
            "an in-place write out of turn"
        );
        self.now = self.now.max(now);
        if n > 0 {
            self.last_activity = now;
        }
        if n < reply.len() {
            self.out.extend_from_slice(&reply[n..]);
            return;
        }
        if self.next != Next::Read {
            self.settle();
        }
    }

    /// [`Connection::handle`] for the events other than a read and a write, on an open
    /// connection whose `now` is already advanced.
    #[cold]
    #[inline(never)]
    fn handle_rare(&mut self, event: Event<'_>, now: Instant) {
        match event {
            Event::Read(_) | Event::Wrote(_) => unreachable!("handled by handle"),
            Event::Eof => {
                debug_assert!(!self.is_writing(), "an EOF while output is pending");
                self.last_activity = now;
                self.next = self.session.on_eof(&mut self.out);
                self.replies += u64::from(!self.out.is_empty());
            }
            Event::Deadline => match self.action() {
                Action::Write { deadline, .. } if now >= deadline => {
                    self.state = State::Aborted(Ending::Write(self.limits.write));
                }
                Action::Read { deadline, why } if now >= deadline => {
                    self.state = match why {
                        Expiry::Idle => State::Aborted(Ending::Idle(self.limits.idle)),
                        Expiry::Message => State::Aborted(Ending::Message(self.limits.message)),
                        Expiry::Shutdown => {
                            tracing::debug!("closing a connection idle at shutdown");
                            State::Closed
                        }
                    };
                }
                _ => {} // early: a timer set for an earlier deadline
            },
            Event::ShutdownBegun => self.stopping = true,
            Event::GraceOver => self.state = State::Aborted(Ending::GraceOver),
        }
        self.settle();
    }

    /// How many reads (and EOF) the session answered with some bytes so far: for the
    /// listener's `requests` counter, reported by the driver at the end
    /// (`Traffic::answered`).
    pub(crate) fn replies(&self) -> u64 {
        self.replies
    }

    /// Whether the server's stop has been reported ([`Event::ShutdownBegun`]).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping
    }

    /// Asks the session for more once its output is on the wire, and closes when it says so.
    fn settle(&mut self) {
        while self.state == State::Open && !self.is_writing() {
            match self.next {
                Next::Read => return,
                Next::Write => self.next = self.session.on_writable(&mut self.out),
                Next::Close => self.state = State::Closed,
            }
        }
    }

    fn is_writing(&self) -> bool {
        self.written < self.out.len()
    }

    /// When the next read must end, and which limit that is. At shutdown, a connection that
    /// has spoken and owes nothing (between two messages of a framed protocol) waits no
    /// longer: a request already here is answered, then it closes. One that has not spoken
    /// yet gets the benefit of the doubt (its first request may be on its way, as Go's
    /// `http.Server.Shutdown` assumes), and one in a message finishes it: the grace period
    /// bounds both.
    fn read_deadline(&self) -> (Instant, Expiry) {
        let idle = self.last_activity + self.limits.idle;
        let (deadline, why) = match self.message_began {
            Some(began) if began + self.limits.message < idle => {
                (began + self.limits.message, Expiry::Message)
            }
            _ => (idle, Expiry::Idle),
        };
        if self.stopping && self.spoke && self.session.between_messages() {
            (deadline.min(self.now), Expiry::Shutdown)
        } else {
            (deadline, why)
        }
    }
}

/// Lingering close's rules (nginx's name): after its FIN, a connection reads and discards
/// what the peer still sends until the peer's EOF, for at most [`LINGER`] and
/// [`LINGER_BYTES`]. Closing a socket with unread input sends a reset, and a reset can destroy
/// the reply still in flight: a daytime client that sent a line would never see the time.
/// Each engine kind has one small I/O helper that follows these rules, for services and
/// handlers alike.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Linger {
    deadline: Instant,
    left: usize,
}

impl Linger {
    /// Lingering begins at `now`, right after the FIN.
    pub(crate) fn new(now: Instant) -> Linger {
        Linger {
            deadline: now + LINGER,
            left: LINGER_BYTES,
        }
    }

    /// When to stop waiting for the peer's EOF.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// A read returned `n` bytes (0: the EOF); whether to keep draining.
    pub(crate) fn drained(&mut self, n: usize) -> bool {
        self.left = self.left.saturating_sub(n);
        n > 0 && self.left > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IDLE: Duration = Duration::from_secs(300);
    const MESSAGE: Duration = Duration::from_secs(60);
    const WRITE: Duration = Duration::from_secs(30);

    fn limits() -> Limits {
        Limits {
            idle_timeout: IDLE,
            message_timeout: MESSAGE,
            write_timeout: WRITE,
            ..Limits::default()
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// A line protocol: answers `ok <line>` per line, closes on `quit`, sends `n` chunks of
    /// output with flow control on `chargen n`, and answers `bye` at EOF.
    #[derive(Default)]
    struct Lines {
        pending: Vec<u8>,
        chunks: usize,
        /// Whether it knows where messages end (framed) or is a raw stream.
        framed: bool,
    }

    impl Lines {
        fn framed() -> Lines {
            Lines {
                framed: true,
                ..Lines::default()
            }
        }
    }

    impl StreamSession for Lines {
        fn on_data(&mut self, input: &[u8], out: &mut BytesMut) -> Next {
            self.pending.extend_from_slice(input);
            let mut next = Next::Read;
            while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let line = &line[..line.len() - 1];
                if line == b"quit" {
                    return Next::Close;
                }
                if let Some(n) = line.strip_prefix(b"chargen ") {
                    self.chunks = std::str::from_utf8(n).unwrap().parse().unwrap();
                    next = Next::Write;
                    continue;
                }
                out.extend_from_slice(b"ok ");
                out.extend_from_slice(line);
                out.extend_from_slice(b"\n");
            }
            next
        }
        fn on_eof(&mut self, out: &mut BytesMut) -> Next {
            out.extend_from_slice(b"bye\n");
            Next::Close
        }
        fn on_writable(&mut self, out: &mut BytesMut) -> Next {
            if self.chunks == 0 {
                return Next::Read;
            }
            self.chunks -= 1;
            out.extend_from_slice(b"0123456789\n");
            Next::Write
        }
        fn in_message(&self) -> bool {
            !self.pending.is_empty()
        }
        fn between_messages(&self) -> bool {
            self.framed && self.pending.is_empty()
        }
    }

    /// A session that greets on open and then closes: daytime.
    struct Daytime;

    impl StreamSession for Daytime {
        fn on_open(&mut self, out: &mut BytesMut) -> Next {
            out.extend_from_slice(b"Monday\n");
            Next::Close
        }
        fn on_data(&mut self, _: &[u8], _: &mut BytesMut) -> Next {
            Next::Read
        }
    }

    fn open(session: Lines, t0: Instant) -> Connection<Lines> {
        Connection::new(session, &limits(), t0)
    }

    /// Writes whatever is pending, all at once, at `now`; returns it.
    fn flush<S: StreamSession>(conn: &mut Connection<S>, now: Instant) -> Vec<u8> {
        let mut sent = Vec::new();
        while let Action::Write { bytes, .. } = conn.action() {
            sent.extend_from_slice(bytes);
            let n = bytes.len();
            conn.handle(Event::Wrote(n), now);
        }
        sent
    }

    fn read_deadline<S: StreamSession>(conn: &Connection<S>) -> (Instant, Expiry) {
        match conn.action() {
            Action::Read { deadline, why } => (deadline, why),
            other => panic!("expected a read, got {other:?}"),
        }
    }

    #[test]
    fn a_request_is_answered_and_the_connection_reads_again() {
        let t0 = Instant::now();
        let mut conn = open(Lines::framed(), t0);
        assert_eq!(read_deadline(&conn), (t0 + IDLE, Expiry::Idle));
        conn.handle(Event::Read(b"hi\n"), t0 + secs(1));
        assert_eq!(
            conn.action(),
            Action::Write {
                bytes: b"ok hi\n",
                deadline: t0 + secs(1) + WRITE
            }
        );
        assert_eq!(flush(&mut conn, t0 + secs(2)), b"ok hi\n");
        assert_eq!(read_deadline(&conn), (t0 + secs(2) + IDLE, Expiry::Idle));
    }

    #[test]
    fn the_idle_time_out_runs_from_the_last_activity() {
        let t0 = Instant::now();
        let mut conn = open(Lines::framed(), t0);
        conn.handle(Event::Read(b"a\n"), t0 + secs(10));
        flush(&mut conn, t0 + secs(20));
        assert_eq!(read_deadline(&conn), (t0 + secs(320), Expiry::Idle));
        conn.handle(Event::Deadline, t0 + secs(319)); // early: ignored
        assert_eq!(read_deadline(&conn).0, t0 + secs(320));
        conn.handle(Event::Deadline, t0 + secs(320));
        assert_eq!(conn.action(), Action::Abort(Ending::Idle(IDLE)));
        assert_eq!(Ending::Idle(IDLE).error().kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn a_message_begun_must_end_by_its_deadline_however_often_bytes_arrive() {
        let t0 = Instant::now();
        let mut conn = open(Lines::framed(), t0);
        for second in 0..100 {
            conn.handle(Event::Read(b"x"), t0 + secs(second)); // a byte a second
        }
        assert_eq!(read_deadline(&conn), (t0 + MESSAGE, Expiry::Message));
        // The message completes: the next one gets a deadline of its own.
        conn.handle(Event::Read(b"\n"), t0 + secs(100));
        flush(&mut conn, t0 + secs(100));
        assert_eq!(read_deadline(&conn).1, Expiry::Idle);
        conn.handle(Event::Read(b"y"), t0 + secs(101));
        assert_eq!(read_deadline(&conn), (t0 + secs(161), Expiry::Message));
        conn.handle(Event::Deadline, t0 + secs(161));
        assert_eq!(conn.action(), Action::Abort(Ending::Message(MESSAGE)));
    }

    #[test]
    fn a_reply_restarts_the_deadline_of_the_message_still_open() {
        let t0 = Instant::now();
        let mut conn = open(Lines::framed(), t0);
        // Pipelined lines: every read completes one and ends inside the next.
        for second in 0..100 {
            conn.handle(Event::Read(b"ab\nc"), t0 + secs(second));
            flush(&mut conn, t0 + secs(second));
        }
        assert_eq!(
            read_deadline(&conn),
            (t0 + secs(99) + MESSAGE, Expiry::Message)
        );
    }

    #[test]
    fn a_message_deadline_longer_than_the_idle_time_out_never_wins() {
        let t0 = Instant::now();
        let limits = Limits {
            message_timeout: secs(600),
            ..limits()
        };
        let mut conn = Connection::new(Lines::framed(), &limits, t0);
        conn.handle(Event::Read(b"x"), t0);
        assert_eq!(read_deadline(&conn), (t0 + IDLE, Expiry::Idle));
    }

    #[test]
    fn the_write_time_out_runs_between_successive_writes() {
        let t0 = Instant::now();
        let mut conn = open(Lines::framed(), t0);
        conn.handle(Event::Read(b"hello\n"), t0);
        conn.handle(Event::Wrote(2), t0 + secs(29)); // progress: the clock starts again
        assert_eq!(
            conn.action(),
            Action::Write {
                bytes: b" hello\n",
                deadline: t0 + secs(29) + WRITE
            }
        );
        conn.handle(Event::Wrote(0), t0 + secs(40)); // no progress
        conn.handle(Event::Deadline, t0 + secs(58)); // early
        assert!(matches!(conn.action(), Action::Write { .. }));
        conn.handle(Event::Deadline, t0 + secs(59));
        assert_eq!(conn.action(), Action::Abort(Ending::Write(WRITE)));
        assert!(
            Ending::Write(WRITE)
                .error()
                .to_string()
                .contains("write time-out")
        );
    }

    #[test]
    fn a_writing_connection_is_not_idle_however_long_it_writes() {
        let t0 = Instant::now();
        let mut conn = open(Lines::framed(), t0);
        conn.handle(Event::Read(b"chargen 100\n"), t0);
        for second in 1..=100 {
            let Action::Write { bytes, deadline } = conn.action() else {
                panic!("chargen writes");
            };
            assert_eq!(bytes, b"0123456789\n");
            assert_eq!(deadline, t0 + secs(second - 1) + WRITE);
            conn.handle(Event::Wrote(bytes.len()), t0 + secs(second));
        }
        // on_writable said Read after the last chunk.
        assert_eq!(read_deadline(&conn), (t0 + secs(100) + IDLE, Expiry::Idle));
    }

    #[test]
    fn the_session_closing_closes_gracefully_after_its_output() {
        let t0 = Instant::now();
        let mut conn = open(Lines::framed(), t0);
        conn.handle(Event::Read(b"a\nquit\n"), t0);
        assert_eq!(flush(&mut conn, t0), b"ok a\n");
        assert_eq!(conn.action(), Action::Close);

        let mut conn = Connection::new(Daytime, &limits(), t0);
        assert_eq!(
            flush(&mut conn, t0),
            b"Monday\n",
            "on_open's greeting goes first"
        );
        assert_eq!(conn.action(), Action::Close);
    }

    #[test]
    fn eof_gets_the_sessions_last_word_then_a_graceful_close() {
        let t0 = Instant::now();
        let mut conn = open(Lines::default(), t0);
        conn.handle(Event::Read(b"partial"), t0);
        conn.handle(Event::Eof, t0 + secs(1000));
        let Action::Write { deadline, .. } = conn.action() else {
            panic!("bye is due");
        };
        assert_eq!(deadline, t0 + secs(1000) + WRITE, "EOF is activity");
        assert_eq!(flush(&mut conn, t0 + secs(1000)), b"bye\n");
        assert_eq!(conn.action(), Action::Close);
    }

    #[test]
    fn at_shutdown_a_connection_between_messages_closes_after_a_request_already_here() {
        let t0 = Instant::now();
        let mut conn = open(Lines::framed(), t0);
        conn.handle(Event::Read(b"one\n"), t0);
        flush(&mut conn, t0);
        conn.handle(Event::ShutdownBegun, t0 + secs(5));
        // Read only what has already arrived: the deadline is already here.
        assert_eq!(read_deadline(&conn), (t0 + secs(5), Expiry::Shutdown));
        conn.handle(Event::Read(b"two\n"), t0 + secs(5));
        assert_eq!(flush(&mut conn, t0 + secs(5)), b"ok two\n", "answered");
        assert_eq!(read_deadline(&conn), (t0 + secs(5), Expiry::Shutdown));
        conn.handle(Event::Deadline, t0 + secs(5));
        assert_eq!(conn.action(), Action::Close, "then closed, gracefully");
    }

    #[test]
    fn at_shutdown_a_connection_in_a_message_finishes_it() {
        let t0 = Instant::now();
        let mut conn = open(Lines::framed(), t0);
        conn.handle(Event::Read(b"hal"), t0);
        conn.handle(Event::ShutdownBegun, t0 + secs(1));
        assert_eq!(read_deadline(&conn), (t0 + MESSAGE, Expiry::Message));
        conn.handle(Event::Read(b"f\n"), t0 + secs(2));
        assert_eq!(flush(&mut conn, t0 + secs(2)), b"ok half\n");
        assert_eq!(read_deadline(&conn), (t0 + secs(2), Expiry::Shutdown));
    }

    #[test]
    fn at_shutdown_a_connection_that_has_not_spoken_gets_the_benefit_of_the_doubt() {
        let t0 = Instant::now();
        let mut conn = open(Lines::framed(), t0);
        conn.handle(Event::ShutdownBegun, t0 + secs(1));
        assert_eq!(read_deadline(&conn), (t0 + IDLE, Expiry::Idle));
        conn.handle(Event::Read(b"first\n"), t0 + secs(2));
        assert_eq!(flush(&mut conn, t0 + secs(2)), b"ok first\n");
        assert_eq!(read_deadline(&conn).1, Expiry::Shutdown);
    }

    #[test]
    fn at_shutdown_a_raw_stream_runs_to_the_peers_eof() {
        let t0 = Instant::now();
        let mut conn = open(Lines::default(), t0); // raw: never between messages
        conn.handle(Event::Read(b"a\n"), t0);
        flush(&mut conn, t0);
        conn.handle(Event::ShutdownBegun, t0 + secs(1));
        assert_eq!(read_deadline(&conn), (t0 + IDLE, Expiry::Idle));
        conn.handle(Event::Eof, t0 + secs(2));
        assert_eq!(flush(&mut conn, t0 + secs(2)), b"bye\n");
        assert_eq!(conn.action(), Action::Close);
    }

    #[test]
    fn shutdown_does_not_cut_a_reply_being_written() {
        let t0 = Instant::now();
        let mut conn = open(Lines::framed(), t0);
        conn.handle(Event::Read(b"reply\n"), t0);
        conn.handle(Event::ShutdownBegun, t0);
        assert!(matches!(conn.action(), Action::Write { .. }));
        assert_eq!(flush(&mut conn, t0), b"ok reply\n");
        assert_eq!(read_deadline(&conn).1, Expiry::Shutdown);
    }

    #[test]
    fn the_end_of_the_grace_period_closes_every_connection_at_once() {
        let t0 = Instant::now();
        let writing = {
            let mut conn = open(Lines::framed(), t0);
            conn.handle(Event::Read(b"chargen 5\n"), t0);
            conn
        };
        let reading = open(Lines::default(), t0);
        for mut conn in [writing, reading] {
            conn.handle(Event::ShutdownBegun, t0);
            conn.handle(Event::GraceOver, t0); // a grace period of 0
            assert_eq!(conn.action(), Action::Abort(Ending::GraceOver));
            assert_eq!(
                Ending::GraceOver.error().kind(),
                io::ErrorKind::ConnectionAborted
            );
        }
    }

    #[test]
    fn a_closed_connection_ignores_every_event() {
        let t0 = Instant::now();
        let mut conn = open(Lines::framed(), t0);
        conn.handle(Event::Read(b"quit\n"), t0);
        for event in [
            Event::Read(b"x\n"),
            Event::Eof,
            Event::Deadline,
            Event::ShutdownBegun,
            Event::GraceOver,
        ] {
            conn.handle(event, t0 + secs(1000));
            assert_eq!(conn.action(), Action::Close);
        }
    }

    #[test]
    fn a_bursts_output_buffer_is_not_kept() {
        let t0 = Instant::now();
        let limits = Limits {
            read_buffer: 16,
            ..limits()
        };
        let mut conn = Connection::new(Lines::framed(), &limits, t0);
        let line = [b'x'; 1000];
        conn.handle(Event::Read(&line), t0);
        conn.handle(Event::Read(b"\n"), t0);
        assert!(conn.out.capacity() >= 1000);
        flush(&mut conn, t0);
        assert!(conn.out.capacity() <= 64);
    }

    #[test]
    fn lingering_stops_at_eof_or_at_its_byte_budget() {
        let t0 = Instant::now();
        let mut linger = Linger::new(t0);
        assert_eq!(linger.deadline(), t0 + LINGER);
        assert!(linger.drained(1000));
        assert!(!linger.drained(0), "the peer's EOF");
        let mut linger = Linger::new(t0);
        assert!(linger.drained(LINGER_BYTES - 1));
        assert!(!linger.drained(1), "the byte budget is spent");
    }

    /// A random event, as a driver could report it.
    #[derive(Debug, Clone)]
    enum Step {
        Read(Vec<u8>),
        Eof,
        /// Write this share (in 1/4) of what is asked.
        Wrote(u8),
        /// The deadline, reached (`true`) or reported early by a timer set for another one.
        Deadline(bool),
        ShutdownBegun,
        GraceOver,
        /// Let this many seconds pass before the next event.
        Wait(u16),
    }

    fn step() -> impl Strategy<Value = Step> {
        let input = prop::collection::vec(prop_oneof![Just(b'a'), Just(b'\n'), Just(b' ')], 1..8)
            .prop_map(|mut bytes| {
                if bytes == b"a" {
                    bytes = b"chargen 3\n".to_vec();
                }
                bytes
            });
        prop_oneof![
            4 => input.prop_map(Step::Read),
            1 => Just(Step::Eof),
            4 => (0u8..=4).prop_map(Step::Wrote),
            3 => any::<bool>().prop_map(Step::Deadline),
            1 => Just(Step::ShutdownBegun),
            1 => Just(Step::GraceOver),
            3 => (0u16..400).prop_map(Step::Wait),
        ]
    }

    /// Writes the in-place reply `data` (or the output of a read handled the general way)
    /// `share`/4 at a time at first; returns the bytes written.
    fn reply_in_place<S: StreamSession>(
        conn: &mut Connection<S>,
        data: &mut [u8],
        share: u8,
        now: Instant,
    ) -> Vec<u8> {
        if !conn.read_in_place(data, now) {
            return flush(conn, now);
        }
        let n = data.len() * usize::from(share) / 4;
        let mut sent = data[..n].to_vec();
        conn.wrote_in_place(data, n, now);
        sent.extend(flush(conn, now));
        sent
    }

    proptest! {
        /// A connection whose session replies in place ([`Connection::read_in_place`], the
        /// reply written in part or whole from the read buffer) sends what the general path
        /// sends and ends in the same state, whatever the input and however the writes go.
        #[test]
        fn in_place_replies_agree_with_the_general_path(
            reads in prop::collection::vec(
                (prop_oneof!["[a-z ]{1,12}", "\\PC{1,4}"], 0u8..=4, 0u16..100),
                1..12,
            ),
        ) {
            let t0 = Instant::now();
            let session = || Box::new(crate::service::UpperSession::default()) as Box<dyn StreamSession>;
            let mut general = Connection::new(session(), &limits(), t0);
            let mut in_place = Connection::new(session(), &limits(), t0);
            let mut now = t0;
            for (text, share, wait) in reads {
                now += Duration::from_millis(u64::from(wait));
                general.handle(Event::Read(text.as_bytes()), now);
                let expected = flush(&mut general, now);
                let mut data = text.into_bytes();
                prop_assert_eq!(reply_in_place(&mut in_place, &mut data, share, now), expected);
                prop_assert_eq!(in_place.action(), general.action());
                prop_assert_eq!(in_place.message_began, general.message_began);
                prop_assert_eq!(in_place.replies(), general.replies(), "the requests counted");
            }
            general.handle(Event::Eof, now);
            in_place.handle(Event::Eof, now);
            prop_assert_eq!(flush(&mut in_place, now), flush(&mut general, now));
            prop_assert_eq!(in_place.action(), general.action());
        }

        /// Drives random event sequences (only those a driver could report for the action at
        /// hand) and checks the machine's invariants after each.
        #[test]
        fn the_connection_machine_keeps_its_invariants(
            framed in any::<bool>(),
            steps in prop::collection::vec(step(), 0..60),
        ) {
            let t0 = Instant::now();
            let mut now = t0;
            let session = Lines { framed, ..Lines::default() };
            let mut conn = open(session, t0);
            let mut last_activity = t0;
            let mut grace_over = false;
            let mut finished: Option<String> = None;
            for step in steps {
                match (step, conn.action()) {
                    (Step::Wait(s), _) => now += secs(u64::from(s)),
                    (Step::Read(bytes), Action::Read { .. }) => {
                        conn.handle(Event::Read(&bytes), now);
                        last_activity = now;
                    }
                    (Step::Eof, Action::Read { .. }) => {
                        conn.handle(Event::Eof, now);
                        last_activity = now;
                    }
                    (Step::Wrote(share), Action::Write { bytes, .. }) => {
                        let n = bytes.len() * usize::from(share) / 4;
                        conn.handle(Event::Wrote(n), now);
                        if n > 0 {
                            last_activity = now;
                        }
                    }
                    (Step::Deadline(reached), Action::Read { deadline, .. } | Action::Write { deadline, .. }) => {
                        if reached {
                            now = now.max(deadline);
                        }
                        let before = format!("{:?}", conn.action());
                        conn.handle(Event::Deadline, now);
                        if now < deadline {
                            // An early deadline changes nothing.
                            prop_assert_eq!(format!("{:?}", conn.action()), before);
                        }
                    }
                    (Step::ShutdownBegun, _) => conn.handle(Event::ShutdownBegun, now),
                    (Step::GraceOver, _) => {
                        conn.handle(Event::GraceOver, now);
                        grace_over = true;
                    }
                    // Only a finished connection may see a read it did not ask for.
                    (Step::Read(bytes), _) if finished.is_some() => {
                        conn.handle(Event::Read(&bytes), now);
                    }
                    _ => {}
                }
                let action = conn.action();
                // `io` is `action` without the deadline, and `deadline` its deadline.
                match (&action, conn.io(), conn.deadline()) {
                    (Action::Write { bytes, deadline }, Io::Write(io_bytes), Some(at)) => {
                        prop_assert_eq!(*bytes, io_bytes);
                        prop_assert_eq!(*deadline, at);
                    }
                    (Action::Read { deadline, .. }, Io::Read, Some(at)) => prop_assert_eq!(*deadline, at),
                    (Action::Close | Action::Abort(_), Io::Done, None) => {}
                    (action, io, at) => prop_assert!(false, "action {:?} but io {:?}, deadline {:?}", action, io, at),
                }
                // A closed connection gets no further action.
                if let Some(done) = &finished {
                    prop_assert_eq!(&format!("{action:?}"), done);
                    continue;
                }
                match action {
                    Action::Write { bytes, deadline } => {
                        // The action matches the state: exactly the output not yet sent,
                        // due the write time-out after the last progress.
                        prop_assert_eq!(bytes, &conn.out[conn.written..]);
                        prop_assert!(!bytes.is_empty());
                        prop_assert_eq!(deadline, last_activity + WRITE);
                    }
                    Action::Read { deadline, why } => {
                        prop_assert_eq!(conn.written, conn.out.len());
                        // No read waits past the earliest deadline.
                        prop_assert!(deadline <= last_activity + IDLE);
                        if let Some(began) = conn.message_began {
                            prop_assert!(deadline <= began + MESSAGE);
                        }
                        if conn.stopping && conn.spoke && framed && conn.session.pending.is_empty() {
                            prop_assert_eq!(why, Expiry::Shutdown);
                            prop_assert!(deadline <= now);
                        } else {
                            prop_assert_ne!(why, Expiry::Shutdown);
                        }
                    }
                    Action::Close | Action::Abort(_) => {
                        // A reply already produced is never dropped before the grace period
                        // ends (or its peer stops reading for the write time-out).
                        let unsent = conn.out.len() - conn.written;
                        if unsent > 0 {
                            prop_assert!(
                                grace_over || action == Action::Abort(Ending::Write(WRITE)),
                                "{} bytes dropped by {:?}", unsent, action
                            );
                        }
                        finished = Some(format!("{action:?}"));
                    }
                }
            }
        }
    }
}
