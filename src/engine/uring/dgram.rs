//! A datagram listener on the uring engine (UDP, Unix datagram, multicast groups): one
//! thread's, registered with that thread's epoll instance, which the ring watches with one
//! multishot poll; the datagrams queued are received and answered by the rules every engine
//! shares ([`crate::engine::datagram`]), each reply sent at once or dropped (a peer that does not
//! read must not hold the listener).
//!
//! Why an epoll instance between the ring and the sockets: an operation in the ring holds its
//! socket open inside the kernel until it completes, and after a SIGKILL the kernel completes
//! them only when it tears the ring down, a moment later; a datagram port would stay taken
//! past the process (a new server on it failed with EADDRINUSE). epoll holds no such reference:
//! the sockets close with the process.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use crate::endpoint::Transport;
use crate::engine::Shared;
use crate::engine::datagram::{self, Datagrams, Received, recv_datagram};
use crate::engine::listener::Listener;
use crate::service::Address;
use crate::stats::ListenerStats;

/// Datagrams answered per wake-up before the loop turns (the other listeners and the
/// connections of the thread get their turn; the rest are answered at the next).
const PER_TURN: usize = 64;

pub(super) struct DatagramLoop {
    socket: Option<Listener>,
    transport: Transport,
    rules: Datagrams,
    /// Whether datagrams may be queued: answer them without waiting.
    pub(super) ready: bool,
    /// After an error of the process or system: when to receive again.
    pub(super) resume_at: Option<Instant>,
}

impl DatagramLoop {
    pub(super) fn new(
        shared: &Arc<Shared>,
        listener: Listener,
        stats: Arc<ListenerStats>,
    ) -> DatagramLoop {
        let (transport, local) = (listener.transport(), listener.local());
        DatagramLoop {
            socket: Some(listener),
            transport,
            rules: Datagrams::new(shared, transport, local, stats),
            ready: false,
            resume_at: None,
        }
    }

    /// The socket's descriptor, for the thread's epoll instance.
    pub(super) fn raw_fd(&self) -> Option<RawFd> {
        match self.socket.as_ref()? {
            Listener::Udp(s) => Some(s.as_raw_fd()),
            Listener::UnixDatagram(s, _) => Some(s.as_raw_fd()),
            _ => None,
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

    /// The server stopped: the socket closes (and leaves the epoll instance).
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
