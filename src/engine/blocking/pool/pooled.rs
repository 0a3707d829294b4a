//! A pooled connection's state, parked with the poller or on a worker: the type the poller
//! ([`super::poller`]) and the worker's round ([`super::ready`]) share, in a file of its own so
//! that neither imports the other for it.

use std::time::Instant;

use crate::engine::conn::{Connection, Linger};
use crate::engine::slots::Permit;
use crate::engine::{Conn, Shared, Traffic};
use crate::service::Address;

/// Which readiness serves a parked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wants {
    /// Bytes from the peer (or its EOF, or an error).
    Read,
    /// Room in the send buffer.
    Write,
}

/// A service's connection held by the pool, parked or on a worker.
pub(crate) struct Pooled {
    pub(super) token: usize,
    pub(super) conn: Conn,
    /// `None` once the machine has closed gracefully and the connection lingers.
    pub(super) machine: Option<Connection>,
    pub(super) linger: Linger,
    pub(super) peer: Address,
    pub(super) traffic: Traffic,
    pub(super) _permit: Permit,
    pub(super) wants: Wants,
    /// The latest instant to serve it at: its machine's (or lingering's) deadline.
    pub(super) deadline: Instant,
    /// Whether a read might find bytes: false after a read shorter than the buffer, true
    /// again with the next readable edge.
    pub(super) may_read: bool,
    /// Whether an edge said the peer has shut its side down. A short read does not take its
    /// EOF with the bytes before it, and no edge follows, so every read is made from then on.
    pub(super) peer_closed: bool,
    /// When its last round ended (the reply was out, or a read or write would block).
    pub(super) idle_since: Instant,
    /// Whether its peer came back within a brief wait of that: then a worker waits briefly on
    /// its socket for the next request instead of parking it.
    pub(super) quick: bool,
    /// Whether its poller registration is muted while a worker waits on its socket.
    pub(super) muted: bool,
}

impl Pooled {
    pub(super) fn token(&self) -> usize {
        self.token
    }

    pub(super) fn wants(&self) -> Wants {
        self.wants
    }

    pub(super) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// A readable edge came (`closed`: with the peer's EOF or an error): the next read is
    /// worth its system call.
    pub(super) fn may_have_input(&mut self, closed: bool) {
        self.may_read = true;
        self.peer_closed |= closed;
    }

    /// Whether a trigger has fired that this connection's machine has not been told of yet.
    pub(super) fn is_behind(&self, shared: &Shared) -> bool {
        shared.force.is_fired()
            || (shared.stop.is_fired() && self.machine.as_ref().is_some_and(|m| !m.is_stopping()))
    }
}
