//! One thread of the uring engine: its ring, its buffer rings, its connections, its timers,
//! and the loop that submits a turn's operations and reaps their completions.
#![allow(unsafe_code)] // pushing submissions, adopting accepted descriptors: the io_uring API's

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::bufring::BufRing;
use super::dgram::DatagramLoop;
use super::ops::{Op, PACKET_GROUP, STREAM_GROUP, cancel, decode, user_data};
use super::permits::{Common, Permit};
use super::stream::Streams;
use crate::endpoint::Transport;
use crate::engine::Shared;
use crate::engine::accept::{AcceptLoop, Accepted, drain_queue};
use crate::engine::listener::{Listener, unix_address};
use crate::service::Address;
use crate::stats::ListenerStats;

/// Submission entries per ring (completions: twice as many, and the kernel keeps overflow).
const RING_ENTRIES: u32 = 1024;
/// Receive buffers per thread for streams, and for sequenced-packet records (larger).
const STREAM_BUFFERS: u16 = 256;
const PACKET_BUFFERS: u16 = 16;

/// A stream listener that every thread accepts on; the last thread to stop closes it.
pub(super) struct SharedListener {
    listener: Listener,
    users: AtomicUsize,
    stats: Arc<ListenerStats>,
}

impl SharedListener {
    pub(super) fn new(
        listener: Listener,
        threads: usize,
        stats: Arc<ListenerStats>,
    ) -> SharedListener {
        SharedListener {
            listener,
            users: AtomicUsize::new(threads),
            stats,
        }
    }
}

/// One thread's accept on one shared listener.
struct Acceptor {
    listener: Option<Arc<SharedListener>>,
    transport: Transport,
    local: Address,
    stats: Arc<ListenerStats>,
    rules: AcceptLoop,
    armed: bool,
    /// Whether the accept in place is multishot (else one accept, for `permit`).
    multishot: bool,
    /// The permit taken for a one-shot accept, as the other engines take it before accept().
    permit: Option<Permit>,
    /// After an error of the process or system: when to accept again.
    resume_at: Option<Instant>,
}

pub(super) struct Worker {
    // Dropped first: the kernel lets go of the buffer rings before they are freed.
    ring: IoUring,
    streams: Streams,
    shared: Arc<Shared>,
    common: Arc<Common>,
    wake: UnixStream,
    acceptors: Vec<Acceptor>,
    datagrams: Vec<DatagramLoop>,
    /// The epoll instance of the datagram listeners (see [`super::dgram`]), and whether the
    /// ring's poll on it is in place.
    datagram_poll: Option<mio::Poll>,
    datagram_armed: bool,
    /// Accepted and verified, waiting for a permit.
    waiting: VecDeque<(OwnedFd, Address, usize)>,
    blocked: bool,
    stopping: bool,
    now: Instant,
    /// Free permits below which accepts are one-shot, each with a permit taken first.
    headroom: usize,
}

impl Worker {
    pub(super) fn new(
        shared: &Arc<Shared>,
        common: &Arc<Common>,
        streams: &[Arc<SharedListener>],
        datagrams: Vec<(Listener, Arc<ListenerStats>)>,
        wake: UnixStream,
    ) -> io::Result<Worker> {
        let ring = ring()?;
        let limits = &shared.limits;
        let bufs = BufRing::new(
            &ring,
            STREAM_GROUP,
            STREAM_BUFFERS,
            limits.read_buffer.max(1),
        )?;
        let packet_bufs = if streams
            .iter()
            .any(|s| s.listener.transport() == Transport::UnixSeqpacket)
        {
            // One byte more than a record may have, so that a longer one shows (see stream).
            let size = limits.read_buffer_for(Transport::UnixSeqpacket) + 1;
            Some(BufRing::new(&ring, PACKET_GROUP, PACKET_BUFFERS, size)?)
        } else {
            None
        };
        let acceptors = streams
            .iter()
            .map(|s| Acceptor {
                transport: s.listener.transport(),
                local: s.listener.local(),
                listener: Some(s.clone()),
                stats: s.stats.clone(),
                rules: AcceptLoop::new(s.stats.clone()),
                armed: false,
                multishot: false,
                permit: None,
                resume_at: None,
            })
            .collect();
        let backlog = usize::try_from(limits.backlog).unwrap_or(usize::MAX);
        let headroom = backlog.max(64).saturating_mul(common.wakers.len());
        let datagrams: Vec<DatagramLoop> = datagrams
            .into_iter()
            .map(|(l, stats)| DatagramLoop::new(shared, l, stats))
            .collect();
        let datagram_poll = if datagrams.is_empty() {
            None
        } else {
            let poll = mio::Poll::new()?;
            for (i, d) in datagrams.iter().enumerate() {
                if let Some(fd) = d.raw_fd() {
                    poll.registry().register(
                        &mut mio::unix::SourceFd(&fd),
                        mio::Token(i),
                        mio::Interest::READABLE,
                    )?;
                }
            }
            Some(poll)
        };
        Ok(Worker {
            streams: Streams::new(shared, bufs, packet_bufs),
            ring,
            shared: shared.clone(),
            common: common.clone(),
            wake,
            acceptors,
            datagrams,
            datagram_poll,
            datagram_armed: false,
            waiting: VecDeque::new(),
            blocked: false,
            stopping: false,
            now: Instant::now(),
            headroom,
        })
    }

    /// Queues an operation; a full submission queue is handed to the kernel first.
    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry pushed here refers only to memory that outlives it: a
            // connection's output buffer (kept, unchanged, until the send completes), the
            // buffer rings (dropped after the ring), or nothing (accept, poll, receive with
            // a provided buffer, cancel).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            if let Err(e) = self.ring.submit() {
                tracing::warn!("io_uring_enter failed: {e}");
            }
        }
    }

    /// Arms the thread's polls and accepts and hands them to the kernel, which puts each
    /// accept in its listener's queue of waiters at once: from then on this thread takes its
    /// turn at the listeners' connections.
    ///
    /// # Errors
    ///
    /// When the kernel takes no submission.
    pub(super) fn arm(mut self) -> io::Result<Worker> {
        let stop = self.shared.stop.fd().as_raw_fd();
        let force = self.shared.force.fd().as_raw_fd();
        let poll_in = libc::POLLIN as u32;
        self.push(
            opcode::PollAdd::new(types::Fd(stop), poll_in)
                .build()
                .user_data(user_data(Op::Stop, 0, 0)),
        );
        self.push(
            opcode::PollAdd::new(types::Fd(force), poll_in)
                .build()
                .user_data(user_data(Op::Force, 0, 0)),
        );
        let wake = self.wake.as_raw_fd();
        self.push(
            opcode::PollAdd::new(types::Fd(wake), poll_in)
                .multi(true)
                .build()
                .user_data(user_data(Op::Wake, 0, 0)),
        );
        self.end_turn();
        self.flush();
        self.ring.submit()?;
        Ok(self)
    }

    /// Serves until the server stops and every connection of this thread is closed.
    pub(super) fn run(mut self) {
        loop {
            self.end_turn();
            if self.stopping && self.streams.live() == 0 {
                break;
            }
            self.wait();
            self.now = Instant::now();
            self.streams.now = self.now;
            self.reap();
            self.streams.expire();
        }
        // The accepts and polls still in place hold their sockets open inside the kernel until
        // they complete: a listener would outlive the server (its port or name still taken)
        // until the kernel tears the ring down, later. So their cancellations are awaited.
        let give_up = Instant::now() + Duration::from_secs(1);
        self.flush();
        while (self.acceptors.iter().any(|a| a.armed) || self.datagram_armed)
            && Instant::now() < give_up
        {
            let ts = types::Timespec::from(Duration::from_millis(10));
            let args = types::SubmitArgs::new().timespec(&ts);
            let _ = self.ring.submitter().submit_with_args(1, &args);
            self.reap();
        }
    }

    /// Submits the turn's operations and waits for a completion, at most until the next
    /// deadline (not at all when a datagram listener still has datagrams queued).
    fn wait(&mut self) {
        self.flush();
        let now = Instant::now();
        let busy = self
            .datagrams
            .iter()
            .any(|d| d.ready && d.resume_at.is_none_or(|t| now >= t));
        let next = self.next_deadline();
        let result = if busy {
            // The kernel flags deferred task work pending (TASKRUN_FLAG, see `ring`), and then
            // this enter asks for events too, which runs it: the stop's poll and the
            // connections' completions are seen even while a datagram flood keeps this loop
            // from sleeping.
            self.ring.submit()
        } else if let Some(at) = next {
            let left = at.saturating_duration_since(Instant::now());
            let ts = types::Timespec::from(left.max(Duration::from_micros(1)));
            let args = types::SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(1, &args)
        } else {
            self.ring.submit_and_wait(1)
        };
        match result {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => tracing::warn!("io_uring_enter failed: {e}"),
        }
    }

    /// Hands the connections' operations to the ring.
    fn flush(&mut self) {
        let mut pending = std::mem::take(&mut self.streams.pending);
        for entry in pending.drain(..) {
            self.push(entry);
        }
        self.streams.pending = pending;
    }

    fn next_deadline(&self) -> Option<Instant> {
        let timers = self.streams.next_timer();
        let accepts = self.acceptors.iter().filter_map(|a| a.resume_at);
        let datagrams = self.datagrams.iter().filter_map(|d| d.resume_at);
        timers.into_iter().chain(accepts).chain(datagrams).min()
    }

    fn reap(&mut self) {
        let mut batch: Vec<cqueue::Entry> = Vec::with_capacity(64);
        loop {
            batch.clear();
            batch.extend(self.ring.completion().take(64));
            if batch.is_empty() {
                return;
            }
            for cqe in &batch {
                self.complete(cqe.user_data(), cqe.result(), cqe.flags());
                if std::mem::take(&mut self.streams.submit_now) {
                    // A multishot receive to stop: every completion it adds is input copied
                    // and held (see `stream`), so it goes to the kernel now.
                    self.flush();
                    if let Err(e) = self.ring.submit() {
                        tracing::warn!("io_uring_enter failed: {e}");
                    }
                }
            }
            self.flush();
        }
    }

    fn complete(&mut self, data: u64, result: i32, flags: u32) {
        let (op, index, generation) = decode(data);
        let Some(op) = op else {
            return;
        };
        match op {
            Op::Recv => self
                .streams
                .received(false, index, generation, result, flags),
            Op::RecvPacket => self
                .streams
                .received(true, index, generation, result, flags),
            Op::Send => self.streams.sent(index, generation, result),
            Op::Accept => self.accepted(index, result, flags),
            Op::Stop => self.stop(),
            Op::Force => self.streams.force(),
            Op::Wake => {
                let mut sink = [0u8; 64];
                while io::Read::read(&mut &self.wake, &mut sink).is_ok_and(|n| n > 0) {}
                if !cqueue::more(flags) {
                    let wake = self.wake.as_raw_fd();
                    self.push(
                        opcode::PollAdd::new(types::Fd(wake), libc::POLLIN as u32)
                            .multi(true)
                            .build()
                            .user_data(user_data(Op::Wake, 0, 0)),
                    );
                }
            }
            Op::Datagram => self.datagrams_ready(flags),
            #[cfg(feature = "proxy")]
            Op::Header => self.streams.header_ready(index, generation, result),
            #[cfg(not(feature = "proxy"))]
            Op::Header => {}
            Op::Cancel => {} // the cancelled operation reports itself
        }
    }

    /// A multishot accept's completion on acceptor `index`.
    fn accepted(&mut self, index: usize, result: i32, flags: u32) {
        let Some(acceptor) = self.acceptors.get_mut(index) else {
            return;
        };
        if !cqueue::more(flags) {
            acceptor.armed = false;
        }
        let permit = acceptor.permit.take();
        // At shutdown, an accept not yet cancelled fails once the listener is shut down.
        if result == -libc::ECANCELED || (result < 0 && self.stopping) {
            return;
        }
        let got = if result < 0 {
            Err(io::Error::from_raw_os_error(-result))
        } else {
            // SAFETY: a successful accept returns a new descriptor that nothing else owns.
            let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(result) };
            peer_of(&fd, acceptor.transport).map(|peer| (fd, peer))
        };
        if acceptor.armed && acceptor.multishot && self.common.free() < self.headroom {
            // Near the limit: a multishot accept would take connections past it.
            self.push(cancel(user_data(Op::Accept, index, 0)));
        }
        let acceptor = &mut self.acceptors[index];
        match acceptor.rules.accepted(&self.shared, got) {
            Accepted::Serve(fd, peer) => match permit.or_else(|| self.common.try_acquire()) {
                Some(permit) if self.waiting.is_empty() => self.open(fd, peer, index, permit),
                _ => {
                    self.acceptors[index].rules.at_limit(self.common.max);
                    self.waiting.push_back((fd, peer, index));
                    // A permit free already is taken by the end of this turn, before any sleep.
                    let _ = self.block();
                }
            },
            Accepted::Next => {}
            Accepted::BackOff(delay) => {
                let acceptor = &mut self.acceptors[index];
                acceptor.resume_at = Some(self.now + delay);
                if acceptor.armed {
                    self.push(cancel(user_data(Op::Accept, index, 0)));
                }
            }
        }
    }

    /// The ring's poll on the datagram listeners' epoll instance completed: which are ready.
    fn datagrams_ready(&mut self, flags: u32) {
        if !cqueue::more(flags) {
            self.datagram_armed = false;
        }
        let Some(poll) = &mut self.datagram_poll else {
            return;
        };
        if let [only] = &mut self.datagrams[..] {
            // The poll completes only when the instance has a ready socket, and this is its
            // one socket: no `epoll_wait` to learn which (a system call per wake-up). The
            // instance's own poll drops a socket found no longer readable from its ready list.
            only.ready = true;
            return;
        }
        let mut events = mio::Events::with_capacity(self.datagrams.len().max(1));
        if poll.poll(&mut events, Some(Duration::ZERO)).is_ok() {
            for event in &events {
                if let Some(d) = self.datagrams.get_mut(event.token().0) {
                    d.ready = true;
                }
            }
        }
    }

    /// Holds accepted connections for a permit: this thread stops accepting until one is
    /// free, and is woken when one comes back. Returns whether one is free already (then the
    /// caller must take it rather than sleep: the drop that freed it may not have seen this
    /// thread blocked; see [`super::permits`]).
    fn block(&mut self) -> bool {
        let free = if self.blocked {
            self.common.has_free()
        } else {
            self.blocked = true;
            self.common.block()
        };
        for index in 0..self.acceptors.len() {
            if self.acceptors[index].armed && self.acceptors[index].multishot {
                self.push(cancel(user_data(Op::Accept, index, 0)));
            }
        }
        free
    }

    /// Serves the connections held for a permit while there are permits, and stops being
    /// blocked once none is held and a permit is free.
    fn take_permits(&mut self) {
        while let Some(permit) = (!self.waiting.is_empty())
            .then(|| self.common.try_acquire())
            .flatten()
        {
            let (fd, peer, index) = self.waiting.pop_front().expect("not empty");
            self.open(fd, peer, index, permit);
        }
        if self.blocked && self.waiting.is_empty() && self.common.has_free() {
            self.blocked = false;
            self.common.unblock();
        }
    }

    /// The end of a loop turn: serves connections held for a permit, arms the accepts and
    /// receives that must be, and the datagram loops' polls.
    fn end_turn(&mut self) {
        self.take_permits();
        self.streams.rearm_starved();
        for i in 0..self.datagrams.len() {
            let now = self.now;
            if self.datagrams[i].ready && self.datagrams[i].resume_at.is_none_or(|t| now >= t) {
                self.datagrams[i].resume_at = None;
                self.datagrams[i].answer(&self.shared);
            }
        }
        if !self.stopping
            && !self.datagram_armed
            && let Some(poll) = &self.datagram_poll
        {
            self.datagram_armed = true;
            let entry = opcode::PollAdd::new(types::Fd(poll.as_raw_fd()), libc::POLLIN as u32)
                .multi(true)
                .build()
                .user_data(user_data(Op::Datagram, 0, 0));
            self.push(entry);
        }
        // A permit that came back as this thread blocked is taken now, not after a sleep that
        // no wake-up might end.
        while self.arm_accepts() {
            self.take_permits();
        }
    }

    /// Arms the accepts that must be; returns `true` when it found no permit but one came
    /// back as it blocked (see [`Worker::block`]), so the turn must try again.
    fn arm_accepts(&mut self) -> bool {
        if self.stopping || self.blocked {
            return false;
        }
        for index in 0..self.acceptors.len() {
            let acceptor = &mut self.acceptors[index];
            if acceptor.armed || acceptor.resume_at.is_some_and(|t| self.now < t) {
                continue;
            }
            let Some(listener) = &acceptor.listener else {
                continue;
            };
            let fd = types::Fd(listener_fd(&listener.listener));
            let entry = if self.common.free() >= self.headroom {
                // A multishot accept stays first in the listener's queue of exclusive waiters:
                // where rings share the listener, it would take every connection (20 of 20 on
                // one of two threads). So they take one-shot accepts, each armed again behind
                // the other rings', and take turns; a ring alone keeps the multishot one.
                acceptor.multishot = self.common.wakers.len() == 1;
                if acceptor.multishot {
                    opcode::AcceptMulti::new(fd)
                        .flags(libc::SOCK_CLOEXEC)
                        .build()
                } else {
                    opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                        .flags(libc::SOCK_CLOEXEC)
                        .build()
                }
            } else if let Some(permit) = self.common.try_acquire() {
                // Near the limit, the other engines' rule: the permit before the accept.
                acceptor.multishot = false;
                acceptor.permit = Some(permit);
                opcode::Accept::new(fd, std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(libc::SOCK_CLOEXEC)
                    .build()
            } else {
                acceptor.rules.at_limit(self.common.max);
                return self.block();
            };
            acceptor.resume_at = None;
            acceptor.armed = true;
            self.push(entry.user_data(user_data(Op::Accept, index, 0)));
        }
        false
    }

    /// A new connection, accepted by acceptor `index`.
    fn open(&mut self, fd: OwnedFd, peer: Address, index: usize, permit: Permit) {
        let acceptor = &self.acceptors[index];
        let (transport, local) = (acceptor.transport, acceptor.local.clone());
        let stats = acceptor.stats.clone();
        self.streams
            .open(fd, peer, (transport, local), permit, &stats);
    }

    /// The server stopped accepting: the listen queues are served, then each thread lets go of
    /// the listeners; connections between messages close.
    fn stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        for index in 0..self.acceptors.len() {
            if self.acceptors[index].armed {
                self.push(cancel(user_data(Op::Accept, index, 0)));
            }
            let Some(shared_listener) = self.acceptors[index].listener.take() else {
                continue;
            };
            let transport = self.acceptors[index].transport;
            let mut queued = Vec::new();
            drain_queue(
                &self.shared,
                &shared_listener.stats,
                || accept_now(&shared_listener.listener, transport),
                |fd, peer| queued.push((fd, peer)),
            );
            if shared_listener.users.fetch_sub(1, Ordering::AcqRel) == 1 {
                shared_listener.listener.stop_accepting();
            }
            for (fd, peer) in queued {
                let permit = self.common.acquire_at_shutdown();
                self.open(fd, peer, index, permit);
            }
        }
        while let Some((fd, peer, index)) = self.waiting.pop_front() {
            let permit = self.common.acquire_at_shutdown();
            self.open(fd, peer, index, permit);
        }
        for d in &mut self.datagrams {
            d.stop();
        }
        if self.datagram_armed {
            self.push(cancel(user_data(Op::Datagram, 0, 0)));
        }
        self.streams.stop();
    }
}

/// A ring for the calling thread, which alone submits to it and reaps it. Its completions'
/// task work is deferred until this thread asks the kernel for events (`DEFER_TASKRUN`, Linux
/// 6.1), so the kernel neither interrupts the thread for each completion nor queues task work
/// on it. An enter that does not wait asks for events only when the kernel has flagged task
/// work pending (`TASKRUN_FLAG`): without the flag, a loop kept busy by a datagram flood never
/// ran it and missed the stop (the flood test). Linux 6.0 gets cooperative task work (run at
/// the thread's next kernel entry), older kernels a plain ring.
///
/// Measured on 50-connection ping-pong, server pinned: 11-14 µs of CPU a request with a plain
/// ring, 5.3-5.6 with cooperative task work (perf: 30% of the thread had been task work run by
/// interrupting it, 11% spinning in `lock_sock`); deferred task work trims what is left of the
/// task work's cost (see the README's uring notes for the profile).
fn ring() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag()
        .build(RING_ENTRIES)
        .or_else(|_| {
            IoUring::builder()
                .setup_single_issuer()
                .setup_coop_taskrun()
                .build(RING_ENTRIES)
        })
        .or_else(|_| IoUring::new(RING_ENTRIES))
}

/// The raw descriptor of a stream listener.
fn listener_fd(listener: &Listener) -> i32 {
    match listener {
        Listener::Tcp(l) => l.as_raw_fd(),
        Listener::Unix(l, _) => l.as_raw_fd(),
        Listener::UnixSeqpacket(l, _) => l.as_raw_fd(),
        Listener::Udp(s) => s.as_raw_fd(),
        Listener::UnixDatagram(s, _) => s.as_raw_fd(),
    }
}

/// The peer of an accepted connection (a multishot accept does not return it). A peer that
/// reset before the question (a balancer's connect-and-reset health check does) leaves the
/// socket closed and `getpeername` fails with ENOTCONN: that is this connection's end, an
/// abort like the ones accept itself reports, not an error of the listener to back off from.
fn peer_of(fd: &OwnedFd, transport: Transport) -> io::Result<Address> {
    let addr = socket2::SockRef::from(fd).peer_addr().map_err(|e| {
        if e.raw_os_error() == Some(libc::ENOTCONN) {
            io::Error::new(io::ErrorKind::ConnectionAborted, e)
        } else {
            e
        }
    })?;
    Ok(match transport {
        Transport::Tcp => Address::Inet(addr.as_socket().ok_or(io::ErrorKind::InvalidData)?),
        _ => unix_address(&addr),
    })
}

/// One accept without waiting, for the drain of the listen queue at shutdown.
fn accept_now(listener: &Listener, transport: Transport) -> io::Result<(OwnedFd, Address)> {
    let (socket, _) = match listener {
        Listener::Tcp(l) => socket2::SockRef::from(l).accept(),
        Listener::Unix(l, _) => socket2::SockRef::from(l).accept(),
        Listener::UnixSeqpacket(l, _) => l.accept(),
        Listener::Udp(_) | Listener::UnixDatagram(..) => Err(io::ErrorKind::WouldBlock.into()),
    }?;
    let fd = OwnedFd::from(socket);
    let peer = peer_of(&fd, transport)?;
    Ok((fd, peer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::accept::is_per_connection_error;

    #[test]
    fn a_peer_that_reset_before_its_address_was_read_is_this_connections_end() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = socket2::Socket::from(
            std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap(),
        );
        // SO_LINGER 0: the close sends a reset, delivered on loopback before close returns.
        client.set_linger(Some(std::time::Duration::ZERO)).unwrap();
        drop(client);
        let (accepted, _) = listener.accept().unwrap();
        let e = peer_of(&OwnedFd::from(accepted), Transport::Tcp).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionAborted, "{e}");
        assert!(is_per_connection_error(&e), "{e}");
    }
}
