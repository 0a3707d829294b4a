//! A datagram listener on the uring engine (UDP, Unix datagram, multicast groups): one
//! thread's, registered with that thread's epoll instance, which the ring watches with one
//! multishot poll; the datagrams queued are received and answered by the rules every engine
//! shares ([`crate::engine::datagram`]) a batch at a time, as the other engines do: one
//! `recvmmsg` takes what is queued and one `sendmmsg` sends the replies, each at once or never
//! (a peer that does not read must not hold the listener).
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

use crate::engine::Shared;
use crate::engine::datagram::{BATCH, Batch, Datagrams};
use crate::engine::listener::Listener;
use crate::stats::ListenerStats;

/// Batches answered per wake-up before the loop turns (the other listeners and the
/// connections of the thread get their turn; the rest are answered at the next): 64 datagrams.
const BATCHES_PER_TURN: usize = 4;

pub(super) struct DatagramLoop {
    socket: Option<Listener>,
    rules: Datagrams,
    batch: Batch,
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
            rules: Datagrams::new(shared, transport, local, stats),
            batch: Batch::new(),
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

    /// Receives and answers the datagrams queued, at most [`BATCHES_PER_TURN`] batches.
    ///
    /// A batch of fewer than [`BATCH`] datagrams left the queue empty (on these unconnected
    /// sockets without IP_RECVERR no error ends a batch early), so the loop waits for the
    /// ring's poll again rather than spend a call to learn so; a datagram that arrives after
    /// the receive wakes the poll (see [`super::worker`]).
    pub(super) fn answer(&mut self, shared: &Shared) {
        for _ in 0..BATCHES_PER_TURN {
            let fd = match &self.socket {
                Some(Listener::Udp(s)) => s.as_fd(),
                Some(Listener::UnixDatagram(s, _)) => s.as_fd(),
                _ => {
                    self.ready = false;
                    return;
                }
            };
            let received = self.batch.recv(fd);
            let short = match &received {
                Ok(count) => *count < BATCH,
                Err(e) => e.kind() == io::ErrorKind::WouldBlock,
            };
            if let Some(delay) = self.batch.answer(fd, &mut self.rules, shared, received) {
                self.resume_at = Some(Instant::now() + delay);
                return;
            }
            if short {
                self.ready = false;
                return;
            }
        }
    }

    /// The server stopped: the socket closes (and leaves the epoll instance).
    pub(super) fn stop(&mut self) {
        self.socket = None;
        self.ready = false;
    }
}
