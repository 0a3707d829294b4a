//! A stream connection on the uring engine (TCP, Unix stream, Unix sequenced-packet): the
//! connection machine's actions turned into io_uring operations, and completions into its
//! events. The rules are the machine's ([`crate::engine::conn`]); here is only the I/O:
//!
//! - a multishot receive while the connection reads, for a peer that waits for its replies;
//!   bytes that arrive while a reply is still being written are held (the machine takes no
//!   read while it writes) and handed on after it. A peer that sends ahead is read one buffer
//!   at a time instead, each receive armed only while the machine reads (as the other engines
//!   read only when they can write), so TCP holds it back. A multishot receive cannot be held
//!   to a budget: once bytes wait in the socket, the kernel drains it into the thread's free
//!   buffers before the first completion is seen (up to all 256, 4 MiB), and every one the
//!   machine cannot take while it writes is copied into held input (measured, four peers that
//!   send without reading on one thread: 2.8-4.0 MiB each; read one-shot, 14 KiB). So a
//!   connection starts one-shot and turns multishot once a receive leaves its socket empty
//!   (the peer waits); held input plus unsent output past [`HELD_BYTES`] cancel the multishot
//!   receive at once (before the next completion is looked at) and turn it one-shot again;
//! - one send at a time, of the machine's pending output, which stays unchanged until the
//!   send completes (the machine changes its output only on `Wrote`);
//! - a timer at the deadline the machine names, checked when it fires;
//! - a slot is freed only once no operation of the kernel's refers to it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{cqueue, opcode, squeue, types};

use super::bufring::BufRing;
use super::ops::{Op, PACKET_GROUP, STREAM_GROUP, cancel, user_data};
use super::permits::Permit;
use crate::endpoint::Transport;
use crate::engine::conn::{Action, Connection, Event, Io, Linger};
use crate::engine::runtime::context;
use crate::engine::{SessionError, Shared, Traffic};
use crate::handler::HandlerError;
use crate::service::Address;
use crate::stats::ListenerStats;

/// Held input plus unsent output beyond which a connection's multishot receive stops (see
/// the module docs): two read buffers' worth (default 16 KiB each), so a few small requests
/// sent ahead of their replies keep it going.
const HELD_BYTES: usize = 32 * 1024;

pub(super) struct Conn {
    fd: OwnedFd,
    machine: Connection,
    peer: Address,
    traffic: Traffic,
    /// A sequenced-packet connection: each receive is one record, up to `record_limit`.
    packet: bool,
    record_limit: usize,
    generation: u32,
    recv_armed: bool,
    send_inflight: bool,
    /// Input that arrived while a reply was being written, one receive each (records stay
    /// records), and whether the EOF came after it.
    held: VecDeque<Vec<u8>>,
    held_bytes: usize,
    eof: bool,
    /// Receives are one-shot, armed only while the machine reads: at first, and once the
    /// peer sent ahead of its replies past [`HELD_BYTES`]; until one leaves the socket empty.
    one_shot: bool,
    /// The receive in place is one-shot.
    recv_one_shot: bool,
    /// A cancellation of the multishot receive is on its way.
    recv_stopping: bool,
    /// After the FIN of a graceful close: draining the peer's last bytes.
    linger: Option<Linger>,
    /// The earliest deadline this connection has in the timer heap.
    armed: Option<Instant>,
    /// Closing: waiting for its operations to complete before the slot is freed.
    done: bool,
    result: Result<(), SessionError>,
    _permit: Permit,
}

impl Conn {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        shared: &Shared,
        fd: OwnedFd,
        peer: Address,
        transport: Transport,
        local: Address,
        generation: u32,
        permit: Permit,
        now: Instant,
        stats: &Arc<ListenerStats>,
    ) -> Conn {
        let session = shared.session(&context(transport, peer.clone(), local));
        let opened = catch_unwind(AssertUnwindSafe(|| {
            Connection::new(session, &shared.limits, now)
        }));
        let (machine, result) = match opened {
            Ok(machine) => (machine, Ok(())),
            Err(panic) => {
                // A session that panicked in `on_open`: a machine that closes at once.
                let session = Box::new(Silent);
                let machine = Connection::new(session as _, &shared.limits, now);
                (
                    machine,
                    Err(SessionError::Panic(HandlerError::from_panic(panic))),
                )
            }
        };
        let failed = result.is_err();
        Conn {
            fd,
            machine,
            peer,
            traffic: Traffic::new(stats),
            packet: transport == Transport::UnixSeqpacket,
            record_limit: shared.limits.read_buffer_for(transport),
            generation,
            recv_armed: false,
            send_inflight: false,
            held: VecDeque::new(),
            held_bytes: 0,
            eof: false,
            // Until the peer shows it waits for its replies (see the module docs).
            one_shot: true,
            recv_one_shot: false,
            recv_stopping: false,
            linger: None,
            armed: None,
            done: failed,
            result,
            _permit: permit,
        }
    }

    /// Reports how the connection ended; dropping it then closes it and frees its permit.
    pub(super) fn report(self, shared: &Shared) {
        self.traffic.answered(self.machine.replies());
        shared.report_stream(&self.peer, &self.traffic, self.result);
    }

    /// Feeds the machine one event; a panic of the session ends the connection.
    fn handle(&mut self, event: Event<'_>, now: Instant) -> bool {
        let machine = &mut self.machine;
        match catch_unwind(AssertUnwindSafe(|| machine.handle(event, now))) {
            Ok(()) => true,
            Err(panic) => {
                self.result = Err(SessionError::Panic(HandlerError::from_panic(panic)));
                false
            }
        }
    }

    /// The user data of this connection's receive.
    fn recv_data(&self, slot: usize) -> u64 {
        let op = if self.packet {
            Op::RecvPacket
        } else {
            Op::Recv
        };
        user_data(op, slot, self.generation)
    }

    /// Arms a receive, multishot unless the peer sends ahead (see the module docs); lingering
    /// after a close, always multishot.
    fn arm_recv(&mut self, slot: usize) -> squeue::Entry {
        let group = if self.packet {
            PACKET_GROUP
        } else {
            STREAM_GROUP
        };
        let fd = types::Fd(self.fd.as_raw_fd());
        self.recv_armed = true;
        self.recv_stopping = false;
        self.recv_one_shot = self.one_shot && self.linger.is_none();
        let entry = if self.recv_one_shot {
            // Length 0: the whole of the buffer the kernel picks.
            opcode::Recv::new(fd, std::ptr::null_mut(), 0)
                .buf_group(group)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        } else {
            opcode::RecvMulti::new(fd, group).build()
        };
        entry.user_data(self.recv_data(slot))
    }

    /// Output written by the machine and not yet on the wire.
    fn unsent(&self) -> usize {
        match self.machine.io() {
            Io::Write(bytes) => bytes.len(),
            _ => 0,
        }
    }

    fn is_reading(&self) -> bool {
        !self.done && self.linger.is_none() && self.machine.io() == Io::Read
    }
}

/// The session of a connection whose own session panicked when it opened.
struct Silent;

impl crate::service::StreamSession for Silent {
    fn on_open(&mut self, _: &mut bytes::BytesMut) -> crate::service::Next {
        crate::service::Next::Close
    }
    fn on_data(&mut self, _: &[u8], _: &mut bytes::BytesMut) -> crate::service::Next {
        crate::service::Next::Close
    }
}

/// One thread's stream connections: their slots, their timers, the receive buffers, and the
/// operations they want submitted.
pub(super) struct Streams {
    pub(super) bufs: BufRing,
    pub(super) packet_bufs: Option<BufRing>,
    shared: Arc<Shared>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    generation: u32,
    live: usize,
    /// Connection deadlines: (when, slot, generation), checked lazily against the connection.
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// Connections whose multishot receive ended for want of buffers: armed again at the end
    /// of the turn, once this turn's buffers are back.
    starved: Vec<(usize, u32)>,
    /// Operations to submit; the worker hands them to the ring, in this order.
    pub(super) pending: Vec<squeue::Entry>,
    /// `pending` holds the cancellation of a multishot receive that fills buffers for input
    /// that must wait: the worker submits it before it looks at the next completion.
    pub(super) submit_now: bool,
    /// Whether the server has stopped accepting.
    pub(super) stopping: bool,
    /// The clock, read once per loop turn by the worker.
    pub(super) now: Instant,
}

impl Streams {
    pub(super) fn new(
        shared: &Arc<Shared>,
        bufs: BufRing,
        packet_bufs: Option<BufRing>,
    ) -> Streams {
        Streams {
            bufs,
            packet_bufs,
            shared: shared.clone(),
            conns: Vec::new(),
            free: Vec::new(),
            generation: 0,
            live: 0,
            timers: BinaryHeap::new(),
            starved: Vec::new(),
            pending: Vec::new(),
            submit_now: false,
            stopping: false,
            now: Instant::now(),
        }
    }

    /// Connections open (or closing).
    pub(super) fn live(&self) -> usize {
        self.live
    }

    /// The earliest deadline in the timer heap.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, ..))| *at)
    }

    fn push(&mut self, entry: squeue::Entry) {
        self.pending.push(entry);
    }

    /// Serves a new connection in a free slot.
    pub(super) fn open(
        &mut self,
        fd: OwnedFd,
        peer: Address,
        (transport, local): (Transport, Address),
        permit: Permit,
        stats: &Arc<ListenerStats>,
    ) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        self.generation = self.generation.wrapping_add(1) & 0xff_ffff;
        let conn = Conn::new(
            &self.shared,
            fd,
            peer,
            transport,
            local,
            self.generation,
            permit,
            self.now,
            stats,
        );
        self.conns[slot] = Some(conn);
        self.live += 1;
        self.drive(slot);
    }

    /// Frees a connection's slot once nothing of the kernel's refers to it: reports its end,
    /// closes it, gives its permit back.
    fn release(&mut self, slot: usize) {
        if let Some(conn) = self.conns[slot].take() {
            conn.report(&self.shared);
            self.free.push(slot);
            self.live -= 1;
        }
    }

    /// The server stopped accepting: connections between messages close.
    pub(super) fn stop(&mut self) {
        self.stopping = true;
        for slot in 0..self.conns.len() {
            if self.conns[slot].is_some() {
                self.drive(slot);
            }
        }
    }

    /// The grace period is over: every connection closes now.
    pub(super) fn force(&mut self) {
        for slot in 0..self.conns.len() {
            if self.conns[slot].is_some() {
                self.grace_over(slot);
            }
        }
    }

    /// Pops the deadlines that have passed and tells their connections.
    pub(super) fn expire(&mut self) {
        while let Some(Reverse((at, slot, generation))) = self.timers.peek().copied() {
            if at > self.now {
                return;
            }
            self.timers.pop();
            self.deadline(slot, generation, at);
        }
    }

    /// Arms again the receives that ended for want of buffers.
    pub(super) fn rearm_starved(&mut self) {
        for (slot, generation) in std::mem::take(&mut self.starved) {
            self.rearm(slot, generation);
        }
    }

    fn conn(&mut self, slot: usize, generation: u32) -> Option<&mut Conn> {
        self.conns
            .get_mut(slot)?
            .as_mut()
            .filter(|c| c.generation == generation)
    }

    /// Obeys the machine until it waits for the kernel: queues the send or the receive it
    /// needs and its deadline's timer, or begins the close.
    fn drive(&mut self, slot: usize) {
        let now = self.now;
        let stopping = self.stopping;
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if conn.done {
            self.finish(slot);
            return;
        }
        if conn.linger.is_some() {
            // The receives and the timer finish it; a one-shot receive in place as the
            // machine closed is followed by a multishot one.
            if !conn.recv_armed {
                let entry = conn.arm_recv(slot);
                self.push(entry);
            }
            return;
        }
        let mut entry = None;
        let deadline = loop {
            let ok = match conn.machine.io() {
                Io::Write(bytes) => {
                    if !conn.send_inflight {
                        conn.send_inflight = true;
                        // The bytes stay where they are until the send completes: the machine
                        // changes its output only on `Wrote` (see the module docs).
                        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
                        entry = Some(
                            opcode::Send::new(types::Fd(conn.fd.as_raw_fd()), bytes.as_ptr(), len)
                                .flags(libc::MSG_NOSIGNAL)
                                .build()
                                .user_data(user_data(Op::Send, slot, conn.generation)),
                        );
                    }
                    break Some(action_deadline(&conn.machine));
                }
                Io::Read => {
                    if let Some(bytes) = conn.held.pop_front() {
                        conn.held_bytes -= bytes.len();
                        conn.handle(Event::Read(&bytes), now)
                    } else if conn.eof {
                        conn.eof = false;
                        conn.handle(Event::Eof, now)
                    } else if stopping && !conn.machine.is_stopping() {
                        conn.handle(Event::ShutdownBegun, now)
                    } else {
                        if !conn.recv_armed {
                            entry = Some(conn.arm_recv(slot));
                        }
                        break Some(action_deadline(&conn.machine));
                    }
                }
                Io::Done => match conn.machine.action() {
                    Action::Close => {
                        let fin =
                            socket2::SockRef::from(&conn.fd).shutdown(std::net::Shutdown::Write);
                        if fin.is_err() {
                            conn.done = true;
                            break None;
                        }
                        let linger = Linger::new(now);
                        conn.linger = Some(linger);
                        if !conn.recv_armed {
                            entry = Some(conn.arm_recv(slot));
                        }
                        break Some(linger.deadline());
                    }
                    Action::Abort(ending) => {
                        conn.result = Err(ending.error().into());
                        conn.done = true;
                        break None;
                    }
                    _ => unreachable!("io() is Done"),
                },
            };
            if !ok {
                conn.done = true;
                break None;
            }
        };
        if let Some(at) = deadline
            && conn.armed.is_none_or(|armed| at < armed)
        {
            conn.armed = Some(at);
            self.timers.push(Reverse((at, slot, conn.generation)));
        }
        let done = conn.done;
        if let Some(entry) = entry {
            self.push(entry);
        }
        if done {
            self.finish(slot);
        }
    }

    /// Closes a connection: cancels what it has in flight, and frees it once nothing is.
    fn finish(&mut self, slot: usize) {
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        conn.done = true;
        let mut targets = Vec::new();
        if conn.recv_armed {
            targets.push(conn.recv_data(slot));
        }
        if conn.send_inflight {
            targets.push(user_data(Op::Send, slot, conn.generation));
        }
        if targets.is_empty() {
            self.release(slot);
            return;
        }
        for target in targets {
            self.push(cancel(target));
        }
    }

    /// Frees a closing connection whose operations have all completed.
    fn settle(&mut self, slot: usize) {
        if let Some(conn) = self.conns[slot].as_ref()
            && conn.done
            && !conn.recv_armed
            && !conn.send_inflight
        {
            self.release(slot);
        }
    }

    /// A receive completion: bytes (in a buffer the kernel picked), the EOF, or an error.
    pub(super) fn received(
        &mut self,
        packet: bool,
        slot: usize,
        generation: u32,
        result: i32,
        flags: u32,
    ) {
        let now = self.now;
        let more = cqueue::more(flags);
        let buffer = cqueue::buffer_select(flags);
        let bufs = if packet {
            self.packet_bufs.as_mut().expect("a packet buffer ring")
        } else {
            &mut self.bufs
        };
        let Some(conn) = self
            .conns
            .get_mut(slot)
            .and_then(Option::as_mut)
            .filter(|c| c.generation == generation)
        else {
            if let Some(bid) = buffer {
                bufs.recycle(bid);
            }
            return;
        };
        let one_shot = conn.recv_one_shot;
        if !more {
            conn.recv_armed = false;
        }
        let n = usize::try_from(result).unwrap_or(0);
        if one_shot && result > 0 && n < bufs.size() && !cqueue::sock_nonempty(flags) {
            // The socket is empty after it: the peer waits for its replies; multishot again.
            conn.one_shot = false;
        }
        let bytes = match buffer {
            Some(bid) if result > 0 => bufs.get(bid, n),
            _ => &[][..],
        };
        let mut go_on = true;
        let mut stop_receiving = None;
        if conn.done {
            // Closing: whatever still arrives is dropped.
        } else if let Some(linger) = &mut conn.linger {
            if result <= 0 || !linger.drained(n) {
                conn.done = true;
            }
        } else if result > 0 {
            conn.traffic.received(n);
            if conn.packet && n > conn.record_limit {
                conn.result = Err(crate::seqpacket::too_large(n, conn.record_limit).into());
                conn.done = true;
            } else if conn.is_reading() && conn.held.is_empty() && !conn.eof {
                go_on = conn.handle(Event::Read(bytes), now);
            } else {
                conn.held.push_back(bytes.to_vec());
                conn.held_bytes += n;
                if conn.held_bytes + conn.unsent() > HELD_BYTES {
                    // The peer sends ahead of its replies: held back (see the module docs).
                    conn.one_shot = true;
                    if conn.recv_armed && !conn.recv_one_shot && !conn.recv_stopping {
                        conn.recv_stopping = true;
                        stop_receiving = Some(conn.recv_data(slot));
                    }
                }
            }
        } else if result == 0 {
            conn.traffic.eof();
            if conn.is_reading() && conn.held.is_empty() {
                go_on = conn.handle(Event::Eof, now);
            } else {
                conn.eof = true;
            }
        } else if result == -libc::ENOBUFS {
            self.starved.push((slot, generation));
        } else if result != -libc::ECANCELED {
            conn.result = Err(io::Error::from_raw_os_error(-result).into());
            conn.done = true;
        }
        if let Some(target) = stop_receiving {
            self.push(cancel(target));
            self.submit_now = true;
        }
        let conn = self.conns[slot].as_mut().expect("checked above");
        if !go_on {
            conn.done = true;
        }
        if let Some(bid) = buffer {
            let bufs = if packet {
                self.packet_bufs.as_mut().expect("a packet buffer ring")
            } else {
                &mut self.bufs
            };
            bufs.recycle(bid);
        }
        let conn = self.conns[slot].as_ref().expect("checked above");
        if conn.done {
            if conn.recv_armed || conn.send_inflight {
                self.finish(slot);
            } else {
                self.settle(slot);
            }
        } else if !conn.send_inflight {
            self.drive(slot);
        }
    }

    /// A send completion.
    pub(super) fn sent(&mut self, slot: usize, generation: u32, result: i32) {
        let now = self.now;
        let Some(conn) = self.conn(slot, generation) else {
            return;
        };
        conn.send_inflight = false;
        if conn.done {
            self.settle(slot);
            return;
        }
        match result {
            0 => {
                conn.result = Err(io::Error::from(io::ErrorKind::WriteZero).into());
                conn.done = true;
            }
            n if n > 0 => {
                let n = n as usize;
                conn.traffic.sent(n);
                if !conn.handle(Event::Wrote(n), now) {
                    conn.done = true;
                }
            }
            e if e == -libc::EINTR || e == -libc::EAGAIN || e == -libc::ECANCELED => {}
            e => {
                conn.result = Err(io::Error::from_raw_os_error(-e).into());
                conn.done = true;
            }
        }
        self.drive(slot);
    }

    /// A timer of this connection fired: a deadline may have passed.
    fn deadline(&mut self, slot: usize, generation: u32, at: Instant) {
        let now = self.now;
        let Some(conn) = self.conn(slot, generation) else {
            return;
        };
        if conn.armed == Some(at) {
            conn.armed = None;
        }
        if conn.done {
            return;
        }
        if let Some(linger) = conn.linger {
            if now >= linger.deadline() {
                self.finish(slot);
            } else if conn.armed.is_none() {
                conn.armed = Some(linger.deadline());
                self.timers
                    .push(Reverse((linger.deadline(), slot, generation)));
            }
            return;
        }
        if now >= action_deadline(&conn.machine) && !conn.handle(Event::Deadline, now) {
            conn.done = true;
        }
        // Re-armed (or closed) by the machine's next action.
        self.drive(slot);
    }

    /// The grace period is over for this connection.
    fn grace_over(&mut self, slot: usize) {
        let now = self.now;
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        if conn.done {
            return;
        }
        if conn.linger.is_some() || !conn.handle(Event::GraceOver, now) {
            conn.done = true;
        }
        self.drive(slot);
    }

    /// Arms again a receive that ended for want of buffers, if the connection still wants it.
    fn rearm(&mut self, slot: usize, generation: u32) {
        let Some(conn) = self.conn(slot, generation) else {
            return;
        };
        if conn.done || conn.recv_armed {
            return;
        }
        if conn.linger.is_some() {
            let entry = conn.arm_recv(slot);
            self.push(entry);
        } else {
            self.drive(slot);
        }
    }
}

/// The deadline of the machine's action at hand (a closed machine's: never).
fn action_deadline(machine: &Connection) -> Instant {
    match machine.action() {
        Action::Write { deadline, .. } | Action::Read { deadline, .. } => deadline,
        Action::Close | Action::Abort(_) => Instant::now() + crate::MAX_TIMEOUT,
    }
}
