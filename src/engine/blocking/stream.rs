//! One stream connection on the thread engines (sequential, threaded, pool): its socket, the
//! blocking I/O helpers that wait beside the shutdown triggers, and the driver loop that obeys
//! [`crate::engine::conn::Connection`]. The rules are in `conn.rs`; this file only moves bytes and waits.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use nix::poll::PollFlags;

use crate::engine::conn::{
    Action, Connection, Event, Linger, grace_over, idle_timed_out, write_timed_out,
};
use crate::engine::wait::{Woken, wait_until_ready};
use crate::engine::{SessionError, Shared, Traffic};
use crate::handler::{HandlerError, StreamRequest, run_stream_handler};
use crate::service::{Context, StreamSession};
use crate::shutdown::Trigger;
use crate::stats::EndCause;

/// An accepted stream connection on a blocking engine.
#[derive(Debug)]
pub(crate) enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
    /// A Unix sequenced-packet connection: each read takes one record, each write sends one.
    Seqpacket(socket2::Socket),
}

impl Conn {
    /// Reads and writes wait in `poll`, beside the triggers, with their own time-outs: an
    /// accepted socket may inherit the listener's non-blocking mode, and is put back in
    /// blocking mode.
    fn set_blocking(&self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.set_nonblocking(false),
            Conn::Unix(s) => s.set_nonblocking(false),
            Conn::Seqpacket(s) => s.set_nonblocking(false),
        }
    }

    /// Whether each read takes one record (and the next may be queued behind it already).
    pub(crate) fn is_record(&self) -> bool {
        matches!(self, Conn::Seqpacket(_))
    }

    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Write),
            Conn::Unix(s) => s.shutdown(Shutdown::Write),
            Conn::Seqpacket(s) => s.shutdown(Shutdown::Write),
        }
    }

    /// Reads through a shared reference, so a handler's reader and writer can coexist.
    fn read_shared(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => (&*s).read(buf),
            Conn::Unix(s) => (&*s).read(buf),
            Conn::Seqpacket(s) => {
                crate::seqpacket::recv_record(s.as_fd(), buf, nix::sys::socket::MsgFlags::empty())
            }
        }
    }

    /// Sends what fits without waiting (`MSG_DONTWAIT`; `MSG_NOSIGNAL`, as std does).
    fn send_now(&self, buf: &[u8]) -> io::Result<usize> {
        use nix::sys::socket::{MsgFlags, send};
        use std::os::fd::AsRawFd;
        // On a sequenced-packet connection, one send is one record, whole or nothing.
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        send(self.as_fd().as_raw_fd(), buf, flags).map_err(io::Error::from)
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Tcp(s) => s.as_fd(),
            Conn::Unix(s) => s.as_fd(),
            Conn::Seqpacket(s) => s.as_fd(),
        }
    }
}

/// How a blocking read or write ended.
enum Waited {
    /// This many bytes moved (a read of 0: the peer's EOF).
    Done(usize),
    /// The deadline passed first.
    Deadline,
    /// The trigger fired first.
    Triggered,
}

/// Waits until bytes arrive, `deadline` passes or `trigger` fires, then reads. A deadline
/// already past reads only what has already arrived.
fn read_until(
    conn: &Conn,
    buf: &mut [u8],
    deadline: Instant,
    trigger: &Trigger,
) -> io::Result<Waited> {
    loop {
        match wait_until_ready(conn.as_fd(), PollFlags::POLLIN, trigger, Some(deadline))? {
            Woken::TimedOut => return Ok(Waited::Deadline),
            Woken::Triggered => return Ok(Waited::Triggered),
            Woken::Ready => match conn.read_shared(buf) {
                Ok(n) => return Ok(Waited::Done(n)),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                    ) => {}
                Err(e) => return Err(e),
            },
        }
    }
}

/// Writes what fits of `bytes`, waiting for room until `deadline`, or until `force` fires: a
/// blocking write is the backpressure (nothing is read while the peer is not reading).
fn write_until(
    conn: &Conn,
    bytes: &[u8],
    deadline: Instant,
    force: &Trigger,
) -> io::Result<Waited> {
    loop {
        if force.is_fired() {
            return Ok(Waited::Triggered);
        }
        match conn.send_now(bytes) {
            Ok(n) => return Ok(Waited::Done(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                match wait_until_ready(conn.as_fd(), PollFlags::POLLOUT, force, Some(deadline))? {
                    Woken::Ready => {}
                    Woken::TimedOut => return Ok(Waited::Deadline),
                    Woken::Triggered => return Ok(Waited::Triggered),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Runs one session until it closes, times out, the peer goes away, or shutdown ends it: the
/// rules are [`Connection`]'s, this loop does the I/O. The server's stop is waited for beside
/// every read until it is reported; after that, the end of the grace period (`shared.force`).
fn drive(
    session: Box<dyn StreamSession>,
    conn: &Conn,
    buf: &mut [u8],
    shared: &Shared,
    traffic: &Traffic,
) -> Result<(), SessionError> {
    let mut machine = Connection::new(session, &shared.limits, Instant::now());
    let result = run(&mut machine, conn, buf, shared, traffic);
    // Counted whatever the end: a reply given before a reset was still given.
    traffic.answered(machine.replies());
    result
}

/// [`drive`]'s loop.
fn run(
    machine: &mut Connection,
    conn: &Conn,
    buf: &mut [u8],
    shared: &Shared,
    traffic: &Traffic,
) -> Result<(), SessionError> {
    loop {
        let event = match machine.action() {
            Action::Write { bytes, deadline } => {
                match write_until(conn, bytes, deadline, &shared.force)? {
                    Waited::Done(n) => {
                        traffic.sent(n);
                        Event::Wrote(n)
                    }
                    Waited::Deadline => Event::Deadline,
                    Waited::Triggered => Event::GraceOver,
                }
            }
            Action::Read { deadline, .. } => {
                let stopping = machine.is_stopping();
                let trigger = if stopping {
                    &shared.force
                } else {
                    &*shared.stop
                };
                match read_until(conn, buf, deadline, trigger)? {
                    Waited::Done(0) => {
                        traffic.eof();
                        Event::Eof
                    }
                    Waited::Done(n) => {
                        traffic.received(n);
                        let now = Instant::now();
                        if machine.read_in_place(&mut buf[..n], now) {
                            // The reply is the read buffer, transformed: sent from here, and
                            // what does not go at once is left to the machine's writes.
                            let wrote = match conn.send_now(&buf[..n]) {
                                Ok(wrote) => wrote,
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                                    ) =>
                                {
                                    0
                                }
                                Err(e) => return Err(e.into()),
                            };
                            traffic.sent(wrote);
                            machine.wrote_in_place(&buf[..n], wrote, now);
                        }
                        continue;
                    }
                    Waited::Deadline => Event::Deadline,
                    Waited::Triggered if stopping => Event::GraceOver,
                    Waited::Triggered => Event::ShutdownBegun,
                }
            }
            Action::Close => {
                close_gracefully(conn, &shared.force);
                return Ok(());
            }
            Action::Abort(ending) => return Err(ending.error().into()),
        };
        machine.handle(event, Instant::now());
    }
}

/// Lingering close ([`Linger`]): FIN, then read and discard until the peer's EOF, for a
/// little while at most, or until the grace period ends.
fn close_gracefully(conn: &Conn, force: &Trigger) {
    if conn.shutdown_write().is_err() {
        return;
    }
    let mut linger = Linger::new(Instant::now());
    let mut buf = [0u8; 4096];
    while let Ok(Waited::Done(n)) = read_until(conn, &mut buf, linger.deadline(), force) {
        if !linger.drained(n) {
            return;
        }
    }
}

/// The reading side of a blocking handler's connection: every read waits at most the idle
/// time-out (`TimedOut`) and ends when the grace period does (`ConnectionAborted`), so no peer
/// can hold a thread forever and shutdown always ends.
struct GuardedRead<'a> {
    conn: &'a Conn,
    shared: &'a Shared,
    traffic: &'a Traffic,
    /// The message deadline of a handler's bounded read: no read waits past it.
    deadline: Option<Instant>,
}

impl Read for GuardedRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let idle = self.shared.limits.idle_timeout;
        let idle_ends = Instant::now() + idle;
        let deadline = self.deadline.map_or(idle_ends, |at| at.min(idle_ends));
        match read_until(self.conn, buf, deadline, &self.shared.force)? {
            Waited::Done(0) if !buf.is_empty() => {
                self.traffic.eof();
                Ok(0)
            }
            Waited::Done(n) => {
                self.traffic.received(n);
                Ok(n)
            }
            Waited::Triggered => Err(grace_over()),
            Waited::Deadline if deadline < idle_ends => Err(EndCause::MessageTimeout.error(
                io::ErrorKind::TimedOut,
                "the message deadline passed".into(),
            )),
            Waited::Deadline => Err(idle_timed_out(idle)),
        }
    }
}

impl crate::handler::SocketRead for GuardedRead<'_> {
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

/// The writing side of a blocking handler's connection: a write fails with `TimedOut` once the
/// peer has read nothing for the write time-out (measured between two successive writes), and
/// with `ConnectionAborted` when the grace period ends, even for a write already waiting.
struct SharedWrite<'a> {
    conn: &'a Conn,
    shared: &'a Shared,
    traffic: &'a Traffic,
}

impl Write for SharedWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let timeout = self.shared.limits.write_timeout;
        match write_until(self.conn, buf, Instant::now() + timeout, &self.shared.force)? {
            Waited::Done(n) => {
                self.traffic.sent(n);
                Ok(n)
            }
            Waited::Deadline => Err(write_timed_out(timeout)),
            Waited::Triggered => Err(grace_over()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

thread_local! {
    /// Each thread's read buffer, reused across the connections it serves.
    static READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Serves one stream connection with the stream handler, or else the service; a panic or
/// error stays in this connection, and its ending is reported with its traffic.
pub(crate) fn serve_stream(shared: &Shared, conn: Conn, ctx: Context, traffic: Traffic) {
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<(), SessionError> {
        conn.set_blocking()?;
        match &shared.app.stream_handler {
            Some(handler) => {
                let read = GuardedRead {
                    conn: &conn,
                    shared,
                    traffic: &traffic,
                    deadline: None,
                };
                let write = SharedWrite {
                    conn: &conn,
                    shared,
                    traffic: &traffic,
                };
                let mut request =
                    StreamRequest::new(&ctx, Box::new(read), Box::new(write), &shared.limits);
                run_stream_handler(handler.as_ref(), &mut request)?;
                drop(request);
                close_gracefully(&conn, &shared.force);
                Ok(())
            }
            None => READ_BUFFER.with_borrow_mut(|buf| {
                buf.resize(shared.limits.read_buffer_for(ctx.transport), 0);
                let session = shared.session(&ctx);
                drive(session, &conn, buf, shared, &traffic)
            }),
        }
    }));
    let result = match result {
        Ok(result) => result,
        Err(panic) => Err(SessionError::Panic(HandlerError::from_panic(panic))),
    };
    shared.report_stream(&ctx.peer, &traffic, result);
}
