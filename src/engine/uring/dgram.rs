//! A datagram listener on the uring engine (UDP, Unix datagram, multicast groups): one
//! thread's, watched by a multishot poll on that thread's ring; the datagrams queued are
//! received and answered by the rules every engine shares ([`crate::engine::datagram`]), each
//! reply sent at once or dropped (a peer that does not read must not hold the listener).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{cqueue, opcode, squeue, types};

use super::ops::{Op, user_data};
use crate::endpoint::Transport;
use crate::engine::Shared;
use crate::engine::datagram::{self, Datagrams, Received, recv_datagram};
use crate::engine::listener::Listener;
use crate::service::Address;

/// Datagrams answered per wake-up before the loop turns (the other listeners and the
/// connections of the thread get their turn; the rest are answered at the next).
const PER_TURN: usize = 64;

pub(super) struct DatagramLoop {
    socket: Option<Listener>,
    transport: Transport,
    rules: Datagrams,
    /// Whether the multishot poll is in place.
    pub(super) armed: bool,
    /// Whether datagrams may be queued: answer them without waiting.
    pub(super) ready: bool,
    /// After an error of the process or system: when to receive again.
    pub(super) resume_at: Option<Instant>,
}

impl DatagramLoop {
    pub(super) fn new(shared: &Arc<Shared>, listener: Listener) -> DatagramLoop {
        let (transport, local) = (listener.transport(), listener.local());
        DatagramLoop {
            socket: Some(listener),
            transport,
            rules: Datagrams::new(shared, transport, local),
            armed: false,
            ready: false,
            resume_at: None,
        }
    }

    fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self.socket.as_ref()? {
            Listener::Udp(s) => Some(s.as_fd()),
            Listener::UnixDatagram(s, _) => Some(s.as_fd()),
            _ => None,
        }
    }

    /// Whether the poll must be armed (again).
    pub(super) fn needs_arming(&self, now: Instant) -> bool {
        !self.armed && self.socket.is_some() && self.resume_at.is_none_or(|t| now >= t)
    }

    /// The multishot poll that says when datagrams arrive; `index` is this loop's.
    pub(super) fn arm(&mut self, index: usize) -> squeue::Entry {
        self.armed = true;
        let fd = self.fd().map_or(-1, |fd| fd.as_raw_fd());
        opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(user_data(Op::Datagram, index, 0))
    }

    /// The poll's completion.
    pub(super) fn polled(&mut self, result: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.armed = false;
        }
        if result > 0 && self.socket.is_some() {
            self.ready = true;
        }
    }

    /// Receives and answers the datagrams queued, at most [`PER_TURN`].
    pub(super) fn answer(&mut self, shared: &Shared) {
        for _ in 0..PER_TURN {
            let fd = match &self.socket {
                Some(Listener::Udp(s)) => s.as_fd(),
                Some(Listener::UnixDatagram(s, _)) => s.as_fd(),
                _ => {
                    self.ready = false;
                    return;
                }
            };
            let received = recv_datagram(fd, self.rules.buffer(), self.transport);
            if matches!(&received, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
                self.ready = false;
                return;
            }
            let (n, ctx) = match self.rules.received(shared, received) {
                Received::Request(n, ctx) => (n, ctx),
                Received::Next => continue,
                Received::BackOff(delay) => {
                    self.resume_at = Some(Instant::now() + delay);
                    return;
                }
            };
            if let Some(reply) = self.rules.answer(shared, &ctx, n) {
                let sent = send_to(self.socket.as_ref(), reply, &ctx.peer);
                self.rules.sent(&ctx.peer, sent);
            }
        }
    }

    /// The server stopped: the socket closes (a poll still in place is cancelled by the
    /// worker, and holds none of this loop's memory).
    pub(super) fn stop(&mut self) {
        self.socket = None;
        self.ready = false;
    }
}

/// Sends a reply now or never (the socket is non-blocking).
fn send_to(socket: Option<&Listener>, reply: &[u8], peer: &Address) -> io::Result<()> {
    let to = datagram::reply_addr(peer)?;
    match socket {
        Some(Listener::Udp(s)) => socket2::SockRef::from(s).send_to(reply, &to),
        Some(Listener::UnixDatagram(s, _)) => socket2::SockRef::from(s).send_to(reply, &to),
        _ => Err(io::ErrorKind::NotConnected.into()),
    }
    .map(drop)
}
