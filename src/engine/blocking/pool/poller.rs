//! The pool's poller: one thread that holds the connections waiting for their peer and hands
//! each to a worker when it has something to do.
//!
//! Every connection is registered once, edge-triggered, for both readiness kinds, and stays
//! registered until it is closed: parking and unparking cost no system call. A readiness edge
//! for a parked connection that waits for it queues the connection for a worker; an edge for a
//! connection a worker holds is remembered (`pending`), and the worker serves it again before
//! parking, so no edge is lost between its last read and its parking. The one exception is a
//! worker's brief wait on a quick peer's socket ([`super::ready`]): the connection is muted
//! meanwhile ([`Hub::set_muted`]), so that the peer's next request wakes the worker alone, not
//! the poller too.
//!
//! Deadlines are the connection machine's: a parked connection names the instant it must be
//! served at the latest (the idle, message, write or linger deadline). They wait in a heap of
//! `(deadline, token)` with lazy invalidation: each slot remembers the earliest deadline it has
//! in the heap (`scheduled`), a connection pushes a new entry only when its deadline comes
//! before that one, and a stale entry is skipped (or replaced by the later deadline) when it
//! comes due. A ping-pong connection, whose idle deadline moves later with every request,
//! pushes nothing. The poller sleeps until the earliest deadline; a worker that parks a
//! connection with an earlier one wakes it.
//!
//! The server's stop and force triggers are registered too: when either fires, every parked
//! connection is queued, and its worker reports `ShutdownBegun` or `GraceOver` to its machine,
//! which decides (between messages: close; a raw stream: on to its EOF; grace over: close).

// Parked connections move between the slots, the ready list and the workers as boxes: a move
// copies one pointer, never the connection.
#![allow(clippy::vec_box)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use mio::event::Event;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

use super::pooled::{Pooled, Wants};
use super::work::Work;
use crate::engine::Shared;

const WAKER: Token = Token(usize::MAX);
const STOP: Token = Token(usize::MAX - 1);
const FORCE: Token = Token(usize::MAX - 2);

/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 1024;

/// What the poller and the workers share.
pub(super) struct Hub {
    pub(super) shared: Arc<Shared>,
    registry: Registry,
    waker: Waker,
    table: Mutex<Table>,
    /// The workers' queue, to see whether work waits.
    queue: Receiver<Work>,
}

/// The connections the pool holds, by token, and their deadlines.
#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    free: Vec<usize>,
    deadlines: BinaryHeap<Reverse<(Instant, usize)>>,
    /// When the poller wakes by itself (the earliest deadline when it went to sleep).
    wake_at: Option<Instant>,
    /// The pool is joining: the poller returns.
    closing: bool,
}

#[derive(Default)]
struct Slot {
    state: State,
    /// The earliest deadline of this slot's in the heap; later heap entries for it are stale.
    scheduled: Option<Instant>,
}

#[derive(Default)]
enum State {
    #[default]
    Free,
    /// A worker holds the connection; `pending`: a readiness edge came meanwhile (`closed`:
    /// one that reported the peer's EOF or an error).
    Busy { pending: bool, closed: bool },
    /// Waiting for its peer or its deadline.
    Parked(Box<Pooled>),
}

impl Hub {
    pub(super) fn new(shared: Arc<Shared>, queue: Receiver<Work>) -> io::Result<(Arc<Hub>, Poll)> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let waker = Waker::new(&registry, WAKER)?;
        for (fd, token) in [(shared.stop.fd(), STOP), (shared.force.fd(), FORCE)] {
            registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        }
        let hub = Hub {
            shared,
            registry,
            waker,
            table: Mutex::new(Table::default()),
            queue,
        };
        Ok((Arc::new(hub), poll))
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a slot for a new connection and registers its descriptor; the caller holds it.
    pub(super) fn register(&self, fd: &impl AsRawFd) -> io::Result<usize> {
        let token = {
            let mut table = self.lock();
            let token = match table.free.pop() {
                Some(token) => token,
                None => {
                    table.slots.push(Slot::default());
                    table.slots.len() - 1
                }
            };
            table.slots[token].state = State::Busy {
                pending: false,
                closed: false,
            };
            token
        };
        if let Err(e) = self.register_fd(fd.as_raw_fd(), token) {
            self.release(token);
            return Err(e);
        }
        Ok(token)
    }

    fn register_fd(&self, fd: RawFd, token: usize) -> io::Result<()> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.registry
            .register(&mut SourceFd(&fd), Token(token), interest)
    }

    /// Frees a connection's slot. Its descriptor is closed after this, which takes it out of
    /// epoll; an event already taken for it finds another connection or none, and costs at
    /// most one needless round.
    pub(super) fn release(&self, token: usize) {
        let mut table = self.lock();
        table.slots[token] = Slot::default();
        table.free.push(token);
    }

    /// Parks a connection a worker is done with for now. Returns it instead when it must be
    /// served again at once: an edge came while the worker held it, or a trigger fired that
    /// the worker has not reported yet.
    pub(super) fn park(&self, mut conn: Box<Pooled>) -> Option<Box<Pooled>> {
        let token = conn.token();
        let deadline = conn.deadline();
        let mut table = self.lock();
        let slot = &mut table.slots[token];
        if let State::Busy {
            pending: true,
            closed,
        } = slot.state
        {
            slot.state = State::Busy {
                pending: false,
                closed: false,
            };
            conn.may_have_input(closed);
            return Some(conn);
        }
        if conn.is_behind(&self.shared) {
            return Some(conn);
        }
        slot.state = State::Parked(conn);
        let mut wake = false;
        if slot.scheduled.is_none_or(|at| deadline < at) {
            slot.scheduled = Some(deadline);
            table.deadlines.push(Reverse((deadline, token)));
            wake = table.wake_at.is_none_or(|at| deadline < at);
        }
        drop(table);
        if wake && let Err(e) = self.waker.wake() {
            tracing::error!("cannot wake the pool's poller: {e}");
        }
        None
    }

    /// Whether no work waits in the workers' queue.
    pub(super) fn is_quiet(&self) -> bool {
        self.queue.is_empty()
    }

    /// Mutes or unmutes a connection a worker holds. Muted, it is out of epoll, so a request
    /// that comes while the worker waits on the socket itself does not wake the poller too (no
    /// interest mio offers is quiet: a priority-only registration is woken by every arrival).
    /// It is unmuted before it is parked: epoll reports a readiness that is already there at
    /// once then, so nothing that came meanwhile is missed. The cost: re-added with read and
    /// write interest, a connection whose send buffer has room (nearly always) is reported
    /// ready to write at once, which wakes the poller, and sometimes hands a worker a round
    /// that finds nothing to do.
    pub(super) fn set_muted(&self, conn: &mut Pooled, muted: bool) -> io::Result<()> {
        if conn.muted != muted {
            let fd = conn.conn.as_fd().as_raw_fd();
            match muted {
                true => self.registry.deregister(&mut SourceFd(&fd))?,
                false => self.register_fd(fd, conn.token)?,
            }
            conn.muted = muted;
        }
        Ok(())
    }

    /// Tells the poller to return.
    pub(super) fn close(&self) {
        self.lock().closing = true;
        let _ = self.waker.wake();
    }
}

impl Table {
    /// Takes every parked connection whose deadline has come into `ready`.
    fn expire(&mut self, now: Instant, ready: &mut Vec<Box<Pooled>>) {
        while let Some(&Reverse((at, token))) = self.deadlines.peek() {
            if at > now {
                return;
            }
            self.deadlines.pop();
            let slot = &mut self.slots[token];
            if slot.scheduled != Some(at) {
                continue; // stale: an earlier entry for this slot has replaced it
            }
            slot.scheduled = None;
            let State::Parked(conn) = &slot.state else {
                continue; // a worker holds it and schedules it again when it parks it
            };
            let deadline = conn.deadline();
            if deadline <= now {
                ready.push(take(slot));
            } else {
                // Its deadline moved later since this entry was pushed.
                slot.scheduled = Some(deadline);
                self.deadlines.push(Reverse((deadline, token)));
            }
        }
    }

    /// A readiness event for a connection.
    fn ready(&mut self, event: &Event, ready: &mut Vec<Box<Pooled>>) {
        let Some(slot) = self.slots.get_mut(event.token().0) else {
            return;
        };
        let closed = event.is_read_closed() || event.is_error();
        let readable = event.is_readable() || closed;
        let writable = event.is_writable() || event.is_write_closed() || event.is_error();
        match &mut slot.state {
            State::Free => {}
            State::Busy {
                pending,
                closed: seen,
            } => {
                *pending = true;
                *seen |= closed;
            }
            State::Parked(conn) => {
                if readable {
                    conn.may_have_input(closed);
                }
                let wanted = match conn.wants() {
                    Wants::Read => readable,
                    Wants::Write => writable,
                };
                if wanted {
                    ready.push(take(slot));
                }
            }
        }
    }

    /// Takes every parked connection into `ready`: a trigger fired.
    fn all(&mut self, ready: &mut Vec<Box<Pooled>>) {
        for slot in &mut self.slots {
            if let State::Parked(_) = slot.state {
                ready.push(take(slot));
            }
        }
    }
}

/// Takes a parked connection out of its slot for a worker.
fn take(slot: &mut Slot) -> Box<Pooled> {
    match std::mem::replace(
        &mut slot.state,
        State::Busy {
            pending: false,
            closed: false,
        },
    ) {
        State::Parked(conn) => conn,
        _ => unreachable!("only a parked connection is taken"),
    }
}

/// The poller's loop, until [`Hub::close`].
pub(super) fn run(mut poll: Poll, hub: &Hub, jobs: &Sender<Work>) {
    let mut events = Events::with_capacity(EVENTS);
    let mut ready = Vec::new();
    loop {
        let timeout = {
            let mut table = hub.lock();
            if table.closing {
                return;
            }
            let now = Instant::now();
            table.expire(now, &mut ready);
            let next = table.deadlines.peek().map(|&Reverse((at, _))| at);
            table.wake_at = next;
            next.map(|at| at.saturating_duration_since(now))
        };
        for conn in ready.drain(..) {
            let _ = jobs.send(Work::Ready(conn));
        }
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // epoll_wait fails only on a bad descriptor or buffer: nothing to retry.
            tracing::error!("the pool's poller failed: {e}");
            return;
        }
        let mut table = hub.lock();
        for event in &events {
            match event.token() {
                WAKER => {}
                STOP | FORCE => table.all(&mut ready),
                _ => table.ready(event, &mut ready),
            }
        }
        drop(table);
        for conn in ready.drain(..) {
            let _ = jobs.send(Work::Ready(conn));
        }
    }
}
