//! The PROXY header step on the uring engine: a one-shot poll in the ring on the accepted
//! socket, then [`crate::engine::proxied::step`] takes what is there of the header (the
//! sans-IO reader every engine uses), until it is whole, the message time-out passes or the
//! grace period ends. Only then does the connection get its slot among the
//! [`Streams`](super::stream::Streams): its session is made for the client the header names.
//!
//! A connection that ends here is counted as its listener's end (the cause
//! [`header_failed`] or [`admit`] names). Its descriptor closes once no poll of the ring's
//! refers to it: an operation in flight holds the socket open inside the kernel.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use io_uring::{opcode, squeue, types};

use super::ops::{Op, cancel, user_data};
use super::permits::Permit;
use crate::endpoint::Transport;
use crate::engine::Shared;
use crate::engine::proxied::{PEEK_BYTES, Progress, ProxyHeaderError, admit, header_failed, step};
use crate::proxy::HeaderReader;
use crate::service::{Address, Context};
use crate::stats::{EndCause, ListenerStats};

/// A connection waiting for its header.
struct Waiting {
    fd: OwnedFd,
    /// The context with the socket's peer (the balancer), its transport and local address.
    ctx: Context,
    reader: HeaderReader,
    accepted: Instant,
    permit: Permit,
    stats: Arc<ListenerStats>,
    generation: u32,
    /// Whether its poll is in the ring.
    polling: bool,
    /// Ended (and counted): closed once its poll's cancellation has completed.
    ended: bool,
}

/// A connection whose header is read and whose client is admitted: ready for its session.
pub(super) struct Admitted {
    pub(super) fd: OwnedFd,
    /// The client the header names (or the socket's peer, for `LOCAL` and `UNKNOWN`).
    pub(super) peer: Address,
    pub(super) transport: Transport,
    pub(super) local: Address,
    pub(super) permit: Permit,
    pub(super) stats: Arc<ListenerStats>,
}

/// One thread's connections waiting for their PROXY header.
pub(super) struct Headers {
    slots: Vec<Option<Waiting>>,
    free: Vec<usize>,
    generation: u32,
    live: usize,
    /// Header deadlines: (when, slot, generation), checked against the slot when they pass.
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    /// The peek buffer of [`step`], shared: a step never waits, so it is free between steps.
    buf: Vec<u8>,
}

impl Headers {
    pub(super) fn new() -> Headers {
        Headers {
            slots: Vec::new(),
            free: Vec::new(),
            generation: 0,
            live: 0,
            timers: BinaryHeap::new(),
            buf: Vec::new(),
        }
    }

    /// Connections waiting for their header, or for their poll's cancellation.
    pub(super) fn live(&self) -> usize {
        self.live
    }

    /// The earliest header deadline.
    pub(super) fn next_timer(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((at, ..))| *at)
    }

    /// A new connection from `peer`: its header is awaited from now, within the message
    /// time-out.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn open(
        &mut self,
        shared: &Shared,
        fd: OwnedFd,
        peer: Address,
        (transport, local): (Transport, Address),
        permit: Permit,
        stats: &Arc<ListenerStats>,
        now: Instant,
        pending: &mut Vec<squeue::Entry>,
    ) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        self.generation = self.generation.wrapping_add(1) & 0xff_ffff;
        let deadline = now + shared.limits.message_timeout;
        let ctx = Context {
            peer,
            local,
            transport,
            now: SystemTime::now(),
        };
        let waiting = Waiting {
            fd,
            ctx,
            reader: HeaderReader::new(),
            accepted: now,
            permit,
            stats: stats.clone(),
            generation: self.generation,
            polling: true,
            ended: false,
        };
        pending.push(poll_entry(&waiting, slot));
        self.timers.push(Reverse((deadline, slot, self.generation)));
        self.slots[slot] = Some(waiting);
        self.live += 1;
    }

    /// The poll of the connection in `slot` completed (`result`: its events, or an error):
    /// takes what is there of the header. Returns the connection once its header is whole
    /// and its client admitted.
    pub(super) fn ready(
        &mut self,
        shared: &Shared,
        slot: usize,
        generation: u32,
        result: i32,
        pending: &mut Vec<squeue::Entry>,
    ) -> Option<Admitted> {
        let waiting = self
            .slots
            .get_mut(slot)?
            .as_mut()
            .filter(|w| w.generation == generation)?;
        waiting.polling = false;
        if waiting.ended {
            self.release(slot);
            return None;
        }
        let progress = if result < 0 {
            Err(ProxyHeaderError::Io(std::io::Error::from_raw_os_error(
                -result,
            )))
        } else {
            if self.buf.len() < PEEK_BYTES {
                self.buf.resize(PEEK_BYTES, 0);
            }
            step(waiting.fd.as_fd(), &mut waiting.reader, &mut self.buf)
        };
        match progress {
            Ok(Progress::Pending) => {
                waiting.polling = true;
                pending.push(poll_entry(waiting, slot));
                None
            }
            Ok(Progress::Done(header)) => {
                let ctx = waiting.ctx.clone();
                match admit(shared, &waiting.stats, &waiting.fd, ctx, header) {
                    Ok(ctx) => {
                        let waiting = self.slots[slot].take().expect("checked above");
                        self.free.push(slot);
                        self.live -= 1;
                        Some(Admitted {
                            fd: waiting.fd,
                            peer: ctx.peer,
                            transport: ctx.transport,
                            local: ctx.local,
                            permit: waiting.permit,
                            stats: waiting.stats,
                        })
                    }
                    Err(cause) => {
                        self.end(slot, cause, pending);
                        None
                    }
                }
            }
            Err(error) => {
                let cause = header_failed(&waiting.ctx, &error);
                self.end(slot, cause, pending);
                None
            }
        }
    }

    /// Ends the connections whose header deadline has passed.
    pub(super) fn expire(
        &mut self,
        shared: &Shared,
        now: Instant,
        pending: &mut Vec<squeue::Entry>,
    ) {
        while let Some(Reverse((at, slot, generation))) = self.timers.peek().copied() {
            if at > now {
                return;
            }
            self.timers.pop();
            let Some(waiting) = self.slots[slot]
                .as_ref()
                .filter(|w| w.generation == generation && !w.ended)
            else {
                continue;
            };
            let limit = shared.limits.message_timeout;
            let cause = header_failed(&waiting.ctx, &ProxyHeaderError::TimedOut(limit));
            self.end(slot, cause, pending);
        }
    }

    /// The grace period is over: every connection still waiting for its header ends.
    pub(super) fn force(&mut self, pending: &mut Vec<squeue::Entry>) {
        for slot in 0..self.slots.len() {
            let Some(waiting) = self.slots[slot].as_ref().filter(|w| !w.ended) else {
                continue;
            };
            let cause = header_failed(&waiting.ctx, &ProxyHeaderError::GraceOver);
            self.end(slot, cause, pending);
        }
    }

    /// Counts the connection in `slot` as ended for `cause`, and closes it: now, or once its
    /// poll's cancellation completes.
    fn end(&mut self, slot: usize, cause: EndCause, pending: &mut Vec<squeue::Entry>) {
        let Some(waiting) = self.slots[slot].as_mut() else {
            return;
        };
        waiting.ended = true;
        let took = waiting.accepted.elapsed();
        waiting.stats.ended(cause, (0, 0), 0, took);
        if waiting.polling {
            pending.push(cancel(user_data(Op::Header, slot, waiting.generation)));
        } else {
            self.release(slot);
        }
    }

    /// Frees a slot: the descriptor closes and the permit is given back.
    fn release(&mut self, slot: usize) {
        if self.slots[slot].take().is_some() {
            self.free.push(slot);
            self.live -= 1;
        }
    }
}

/// The one-shot poll for bytes (or the EOF, or an error) on a waiting connection.
fn poll_entry(waiting: &Waiting, slot: usize) -> squeue::Entry {
    opcode::PollAdd::new(types::Fd(waiting.fd.as_raw_fd()), libc::POLLIN as u32)
        .build()
        .user_data(user_data(Op::Header, slot, waiting.generation))
}
