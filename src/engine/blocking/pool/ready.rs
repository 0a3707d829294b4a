//! One round of a pooled connection on a worker: the driver loop over the
//! [`Connection`] machine, with I/O that never waits. A read or write that would block ends the
//! round, and the connection goes back to the poller ([`Hub::park`]) until its peer is ready
//! or the machine's deadline comes.
//!
//! A reply that does not fit in the socket buffer at once is parked for writability rather
//! than waited for on the worker: a peer that reads slowly costs a descriptor, never a worker.
//! The write time-out is still the machine's (the deadline the connection is parked with).
//!
//! A worker keeps serving a connection while it has bytes: it reads again after each reply,
//! and a readiness edge that comes while it holds the connection sends it round again instead
//! of through the poller. One read that returns less than the buffer drained the socket at
//! that moment, and with edge-triggered epoll any later byte brings an edge, so the read that
//! would only say `EAGAIN` after a short one is skipped.
//!
//! A quick peer (one whose last request came within [`BRIEF`] of the reply before it) keeps its
//! worker a little: after each reply the worker waits up to [`BRIEF`] on that one socket
//! (`ppoll`) for the next request, when no other work waits in the queue, and parks the
//! connection only when none comes. A ping-pong connection is then served as on the threaded
//! engine, one wake-up a request, where a trip through the poller costs a wake-up of the
//! poller, a hand-off through the queue and a wake-up of a worker. A peer that is silent or slow
//! costs at most one such wait before it is parked, and loses its quickness with it.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::socket::{MsgFlags, recv, send};
use nix::sys::time::TimeSpec;

use super::poller::Hub;
use super::pooled::{Pooled, Wants};
use crate::engine::conn::{Action, Connection, Event, Linger};
use crate::engine::slots::Permit;
use crate::engine::{Conn, SessionError, Shared, Traffic};
use crate::handler::HandlerError;
use crate::service::Context;

/// How long a worker waits on a quick peer's socket for its next request before parking it
/// (the kernel's timer slack may add up to 50 µs). A client on the same host answers a reply in
/// about 20 µs, but on a busy machine 50 µs still sent one request in 35 through the poller
/// and 200 µs one in 55, at about 10% less CPU a request.
const BRIEF: Duration = Duration::from_micros(200);

thread_local! {
    /// Each worker's read buffer, shared by the connections it serves in turn.
    static READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The first round of a newly accepted connection, on a worker: its session is made here
/// (`on_open` is the program's code), then it is registered with the poller and served.
pub(super) fn open(hub: &Arc<Hub>, conn: Conn, ctx: Context, traffic: Traffic, permit: Permit) {
    let shared = &hub.shared;
    let now = Instant::now();
    let opened = catch_unwind(AssertUnwindSafe(|| {
        Connection::new(shared.session(&ctx), &shared.limits, now)
    }));
    let machine = match opened {
        Ok(machine) => machine,
        Err(panic) => {
            let error = SessionError::Panic(HandlerError::from_panic(panic));
            return shared.report_stream(&ctx.peer, &traffic, Err(error));
        }
    };
    let token = match hub.register(&conn.as_fd().as_raw_fd()) {
        Ok(token) => token,
        Err(e) => return shared.report_stream(&ctx.peer, &traffic, Err(e.into())),
    };
    let pooled = Box::new(Pooled {
        token,
        conn,
        machine: Some(machine),
        linger: Linger::new(now),
        peer: ctx.peer,
        traffic,
        _permit: permit,
        wants: Wants::Read,
        deadline: now,
        may_read: true,
        peer_closed: false,
        idle_since: now,
        quick: false,
        muted: false,
    });
    serve(hub, pooled);
}

/// Serves a connection the poller handed on; it is quick if its peer spoke within [`BRIEF`]
/// of the round before.
pub(super) fn resume(hub: &Hub, mut conn: Box<Pooled>) {
    conn.quick = conn.idle_since.elapsed() < BRIEF;
    serve(hub, conn);
}

/// Serves a connection until it would block (then parks it) or ends (then reports it).
pub(super) fn serve(hub: &Hub, mut conn: Box<Pooled>) {
    let shared = &hub.shared;
    let ended = READ_BUFFER.with_borrow_mut(|buf| {
        let transport = match conn.conn.is_record() {
            true => crate::endpoint::Transport::UnixSeqpacket,
            false => crate::endpoint::Transport::Unix, // any stream: the same buffer
        };
        buf.resize(shared.limits.read_buffer_for(transport), 0);
        loop {
            let round = catch_unwind(AssertUnwindSafe(|| conn.round(shared, buf)));
            match round {
                Ok(None) => {
                    if conn.wait_briefly(hub) {
                        continue; // its next request came
                    }
                    if let Err(e) = hub.set_muted(&mut conn, false) {
                        return Some((conn, Err(e.into())));
                    }
                    match hub.park(conn) {
                        None => return None,
                        Some(again) => conn = again,
                    }
                }
                Ok(Some(result)) => return Some((conn, result)),
                Err(panic) => {
                    let error = SessionError::Panic(HandlerError::from_panic(panic));
                    return Some((conn, Err(error)));
                }
            }
        }
    });
    if let Some((conn, result)) = ended {
        hub.release(conn.token);
        if let Some(machine) = &conn.machine {
            conn.traffic.answered(machine.replies()); // an abort: the replies given still count
        }
        let Pooled { peer, traffic, .. } = *conn; // the socket closes here
        shared.report_stream(&peer, &traffic, result);
    }
}

/// What a round ends with: `None` to park, or how the connection ended.
type Round = Option<Result<(), SessionError>>;

impl Pooled {
    /// Obeys the machine until an action would block or the connection is done.
    fn round(&mut self, shared: &Shared, buf: &mut [u8]) -> Round {
        let Some(machine) = self.machine.as_mut() else {
            return self.linger(shared, buf);
        };
        loop {
            let now = Instant::now();
            if shared.force.is_fired() {
                machine.handle(Event::GraceOver, now);
            } else if shared.stop.is_fired() && !machine.is_stopping() {
                machine.handle(Event::ShutdownBegun, now);
            }
            let event = match machine.action() {
                Action::Write { bytes, deadline } => match send_now(&self.conn, bytes) {
                    Ok(n) => {
                        self.traffic.sent(n);
                        Event::Wrote(n)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if now < deadline {
                            (self.wants, self.deadline) = (Wants::Write, deadline);
                            return None;
                        }
                        Event::Deadline
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Some(Err(e.into())),
                },
                Action::Read { deadline, .. } => {
                    let read = match self.may_read || self.peer_closed {
                        true => recv_now(&self.conn, buf),
                        false => Err(io::ErrorKind::WouldBlock.into()),
                    };
                    match read {
                        Ok(0) => {
                            self.traffic.eof();
                            Event::Eof
                        }
                        Ok(n) => {
                            // A record read leaves the records queued behind it, and no
                            // new edge comes for them: read until `EAGAIN`.
                            self.may_read = n == buf.len() || self.conn.is_record();
                            self.traffic.received(n);
                            if !machine.read_in_place(&mut buf[..n], now) {
                                continue;
                            }
                            // The reply is the read buffer, transformed: sent from here, and
                            // what does not go at once is left to the machine's writes.
                            let wrote = match send_now(&self.conn, &buf[..n]) {
                                Ok(wrote) => wrote,
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                                    ) =>
                                {
                                    0
                                }
                                Err(e) => return Some(Err(e.into())),
                            };
                            self.traffic.sent(wrote);
                            machine.wrote_in_place(&buf[..n], wrote, now);
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.may_read = false;
                            if now < deadline {
                                (self.wants, self.deadline) = (Wants::Read, deadline);
                                return None;
                            }
                            Event::Deadline
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Some(Err(e.into())),
                    }
                }
                Action::Close => {
                    // Lingering close, parked like any read: a peer slow to send its EOF
                    // holds no worker.
                    self.traffic.answered(machine.replies());
                    self.machine = None;
                    if socket2::SockRef::from(&self.conn)
                        .shutdown(Shutdown::Write)
                        .is_err()
                    {
                        return Some(Ok(()));
                    }
                    self.linger = Linger::new(now);
                    self.may_read = true;
                    return self.linger(shared, buf);
                }
                Action::Abort(ending) => return Some(Err(ending.error().into())),
            };
            machine.handle(event, now);
        }
    }

    /// After a round that ended waiting for bytes: if the peer is quick and no other work
    /// waits, waits up to [`BRIEF`] on its socket alone (muted with the poller meanwhile).
    /// Returns whether bytes (or the peer's EOF or an error) came; the peer stays quick then.
    fn wait_briefly(&mut self, hub: &Hub) -> bool {
        let now = Instant::now();
        self.idle_since = now;
        let quick = std::mem::take(&mut self.quick);
        let stopping = hub.shared.stop.is_fired() || hub.shared.force.is_fired();
        let wait = BRIEF.min(self.deadline.saturating_duration_since(now));
        if !quick || self.wants != Wants::Read || stopping || wait.is_zero() || !hub.is_quiet() {
            return false;
        }
        if hub.set_muted(self, true).is_err() {
            return false;
        }
        let mut fds = [PollFd::new(self.conn.as_fd(), PollFlags::POLLIN)];
        match ppoll(&mut fds, Some(TimeSpec::from_duration(wait)), None) {
            Ok(0) | Err(_) => false, // none came (or a signal): park it
            Ok(_) => {
                (self.quick, self.may_read) = (true, true);
                true
            }
        }
    }

    /// Lingering close ([`Linger`]): reads and discards until the peer's EOF, the linger
    /// deadline, or the end of the grace period.
    fn linger(&mut self, shared: &Shared, buf: &mut [u8]) -> Round {
        loop {
            if shared.force.is_fired() {
                return Some(Ok(()));
            }
            match recv_now(&self.conn, buf) {
                Ok(n) if self.linger.drained(n) => {}
                Ok(_) => return Some(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let deadline = self.linger.deadline();
                    if Instant::now() >= deadline {
                        return Some(Ok(()));
                    }
                    (self.wants, self.deadline) = (Wants::Read, deadline);
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Some(Ok(())),
            }
        }
    }
}

/// Reads what has arrived, without waiting (`MSG_DONTWAIT`: the socket itself stays as
/// accepted).
fn recv_now(conn: &Conn, buf: &mut [u8]) -> io::Result<usize> {
    if conn.is_record() {
        return crate::seqpacket::recv_record(conn.as_fd(), buf, MsgFlags::MSG_DONTWAIT);
    }
    recv(conn.as_fd().as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
}

/// Sends what fits, without waiting (`MSG_NOSIGNAL`, as std does).
fn send_now(conn: &Conn, bytes: &[u8]) -> io::Result<usize> {
    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
    send(conn.as_fd().as_raw_fd(), bytes, flags).map_err(io::Error::from)
}
