//! The listener loops the three thread engines share. They differ only in where a connection
//! runs ([`Mode`]): `sequential` runs it inline on the listener's thread (the slides' iterative
//! server), `threaded` on a new thread (`ThreadingMixIn`), `pool` on a worker of a fixed pool.

mod pool;
mod stream;

use std::io;
use std::os::fd::AsFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::accept::{AcceptLoop, Accepted, LimitLog, drain_queue};
use super::datagram::{
    BATCH, Batch, Datagrams, Received, check_reply, recv_datagram, reply_addr, send_failure,
};
use super::listener::{Listener, unix_address};
use super::slots::{Permit, Slots};
use super::wait::{Woken, wait_readable};
use super::{SessionError, Shared, Traffic, context};
use crate::endpoint::Transport;
use crate::error::Error;
use crate::handler::{DatagramRequest, HandlerError};
use crate::service::Address;
use crate::stats::{DropReason, ListenerStats};
use pool::{Job, Pool};
pub(crate) use stream::Conn;
use stream::serve_stream;

/// Where a connection (or a datagram for a blocking handler) runs.
pub(super) enum Mode {
    /// On the listener's own thread: one at a time per listener.
    Inline,
    /// On a new thread each.
    Thread,
    /// On a worker of a fixed pool, parked with its poller between rounds (services) or for
    /// the whole session (blocking handlers).
    Pool,
}

enum Runner {
    Inline,
    Thread,
    Pool(Pool),
}

impl Runner {
    fn run(&self, job: Job) {
        match self {
            Runner::Inline => job(),
            Runner::Thread => {
                let spawned = std::thread::Builder::new()
                    .name("socketkit-conn".into())
                    .spawn(job);
                if let Err(e) = spawned {
                    // The job (and its connection) is dropped: that client alone is refused.
                    tracing::warn!("cannot start a thread for a connection: {e}");
                }
            }
            Runner::Pool(pool) => pool.execute(job),
        }
    }

    /// The job that serves an accepted stream connection (with its permit) where this runner
    /// runs it: the pool parks a service's connection with its poller between rounds.
    fn connection(
        &self,
        shared: Arc<Shared>,
        conn: Conn,
        ctx: crate::service::Context,
        traffic: Traffic,
        permit: Permit,
    ) -> Job {
        match self {
            Runner::Pool(pool) => pool.connection(shared, conn, ctx, traffic, permit),
            Runner::Inline | Runner::Thread => Box::new(move || {
                let _permit = permit;
                serve_stream(&shared, conn, ctx, traffic);
            }),
        }
    }
}

/// Everything a listener thread needs.
struct Loop {
    shared: Arc<Shared>,
    listener: Arc<Listener>,
    slots: Arc<Slots>,
    runner: Arc<Runner>,
    /// The listener's counters.
    stats: Arc<ListenerStats>,
}

pub(super) fn serve(
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    mode: Mode,
) -> Result<(), Error> {
    let runner = Arc::new(match mode {
        Mode::Inline => Runner::Inline,
        Mode::Thread => Runner::Thread,
        Mode::Pool => Runner::Pool(
            Pool::new(shared.clone(), shared.limits.workers)
                .map_err(|e| Error::io("cannot start the worker pool", e))?,
        ),
    });
    let slots = Slots::new(shared.limits.max_connections);
    let listeners: Vec<Arc<Listener>> = listeners.into_iter().map(Arc::new).collect();
    let mut threads = Vec::new();
    for (index, listener) in listeners.iter().enumerate() {
        let worker = Loop {
            shared: shared.clone(),
            listener: listener.clone(),
            slots: slots.clone(),
            runner: runner.clone(),
            stats: shared.listener_stats(index),
        };
        let spawned = std::thread::Builder::new()
            .name("socketkit-listener".into())
            .spawn(move || worker.run());
        match spawned {
            Ok(thread) => threads.push(thread),
            Err(e) => {
                shared.stop.fire();
                slots.close();
                for thread in threads {
                    let _ = thread.join();
                }
                return Err(Error::io("cannot start a listener thread", e));
            }
        }
    }
    // Wait for shutdown; wake listeners blocked on the connection limit; drain.
    let _ = wait_readable(shared.stop.fd(), &shared.stop, None);
    // The connections the kernel has already completed are accepted and served: a balancer
    // does not retry a connection that was established. Then each listener stops accepting at
    // once, even where its thread is busy with a connection (sequential): later clients are
    // refused instead of waiting in a queue nobody will serve.
    let mut joined = Vec::new();
    for (index, (listener, thread)) in listeners.iter().zip(threads).enumerate() {
        let queued = Loop {
            shared: shared.clone(),
            listener: listener.clone(),
            slots: slots.clone(),
            runner: runner.clone(),
            stats: shared.listener_stats(index),
        }
        .take_queue();
        listener.stop_accepting();
        match &*runner {
            // One connection at a time per listener still: the queue is served after the
            // connection its thread is serving.
            Runner::Inline if !queued.is_empty() => {
                let spawned = std::thread::Builder::new()
                    .name("socketkit-listener".into())
                    .spawn(move || {
                        let _ = thread.join();
                        queued.into_iter().for_each(|job| job());
                    });
                match spawned {
                    Ok(drain) => joined.push(drain),
                    Err(e) => tracing::warn!("cannot serve the queued connections: {e}"),
                }
            }
            _ => {
                queued.into_iter().for_each(|job| runner.run(job));
                joined.push(thread);
            }
        }
    }
    let threads = joined;
    drop(listeners);
    slots.close();
    if !slots.wait_idle(Some(shared.limits.grace)) {
        tracing::info!("grace period over; closing the connections still open");
        shared.force.fire();
        slots.wait_idle(None);
    }
    for thread in threads {
        let _ = thread.join();
    }
    if let Runner::Pool(pool) = &*runner {
        pool.join();
    }
    Ok(())
}

impl Loop {
    fn run(self) {
        let transport = self.listener.transport();
        if transport.is_connected() {
            self.accept_loop(transport)
        } else {
            self.datagram_loop(transport)
        }
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match &*self.listener {
            Listener::Tcp(l) => l.as_fd(),
            Listener::Unix(l, _) => l.as_fd(),
            Listener::Udp(s) => s.as_fd(),
            Listener::UnixDatagram(s, _) => s.as_fd(),
            Listener::UnixSeqpacket(l, _) => l.as_fd(),
        }
    }

    fn accept(&self) -> io::Result<(Conn, Address)> {
        match &*self.listener {
            Listener::Tcp(l) => l.accept().map(|(s, a)| (Conn::Tcp(s), Address::Inet(a))),
            Listener::Unix(l, _) => l.accept().map(|(s, a)| (Conn::Unix(s), Address::from(&a))),
            Listener::UnixSeqpacket(l, _) => l
                .accept()
                .map(|(s, a)| (Conn::Seqpacket(s), unix_address(&a))),
            _ => Err(io::Error::from(io::ErrorKind::Unsupported)),
        }
    }

    /// Waits until the listener is readable; `false` once the server stops (or waiting fails).
    fn wait_for(&self, what: &str) -> bool {
        match wait_readable(self.fd(), &self.shared.stop, None) {
            Ok(Woken::Triggered) => false,
            Ok(_) => true,
            Err(e) => {
                tracing::error!("waiting for {what} failed: {e}");
                false
            }
        }
    }

    /// Waits for a connection slot; logs (at most every 10 s) when the limit holds clients back.
    fn permit(&self, limit_log: &mut LimitLog) -> Option<Permit> {
        if let Some(permit) = self.slots.try_acquire() {
            return Some(permit);
        }
        limit_log.at_limit(self.slots.max(), Instant::now());
        self.slots.acquire()
    }

    fn accept_loop(&self, transport: Transport) {
        let shared = &self.shared;
        let local = self.listener.local();
        let mut acceptor = AcceptLoop::new(self.stats.clone());
        loop {
            if !self.wait_for("connections") {
                return;
            }
            // The slot is taken before accept(): at the limit, clients stay in the kernel's queue.
            let permit = match self.slots.try_acquire() {
                Some(permit) => permit,
                None => {
                    acceptor.at_limit(self.slots.max());
                    match self.slots.acquire() {
                        Some(permit) => permit,
                        None => return, // shutting down
                    }
                }
            };
            if shared.stop.is_fired() {
                return;
            }
            match acceptor.accepted(shared, self.accept()) {
                Accepted::Serve(conn, peer) => {
                    let ctx = context(transport, peer, local.clone());
                    let shared = shared.clone();
                    let traffic = Traffic::new(&self.stats); // from the accept: a pool's queue counts
                    let job = self.runner.connection(shared, conn, ctx, traffic, permit);
                    self.runner.run(job);
                }
                Accepted::Next => {}
                Accepted::BackOff(delay) => {
                    drop(permit);
                    let _ = wait_readable(shared.stop.fd(), &shared.stop, Some(delay));
                }
            }
        }
    }

    /// At shutdown: accepts every connection already in the listen queue, without waiting,
    /// and returns the jobs that serve them. Their permits may go past the connection limit:
    /// the backlog bounds them.
    fn take_queue(&self) -> Vec<Job> {
        let transport = self.listener.transport();
        if !transport.is_connected() {
            return Vec::new();
        }
        let local = self.listener.local();
        let mut jobs: Vec<Job> = Vec::new();
        drain_queue(
            &self.shared,
            &self.stats,
            || self.accept(),
            |conn, peer| {
                let permit = self.slots.acquire_at_shutdown();
                let ctx = context(transport, peer, local.clone());
                let traffic = Traffic::new(&self.stats);
                jobs.push(
                    self.runner
                        .connection(self.shared.clone(), conn, ctx, traffic, permit),
                );
            },
        );
        jobs
    }

    fn datagram_loop(&self, transport: Transport) {
        let shared = &self.shared;
        let mut datagrams =
            Datagrams::new(shared, transport, self.listener.local(), self.stats.clone());
        let Some(handler) = shared.app.datagram_handler.clone() else {
            return self.batch_loop(&mut datagrams);
        };
        let mut limit_log = LimitLog::default();
        loop {
            if !self.wait_for("datagrams") {
                return;
            }
            let received = recv_datagram(self.fd(), datagrams.buffer(), transport);
            let (n, ctx) = match datagrams.received(shared, received) {
                Received::Request(n, ctx) => (n, ctx),
                Received::Next => continue,
                Received::BackOff(delay) => {
                    let _ = wait_readable(shared.stop.fd(), &shared.stop, Some(delay));
                    continue;
                }
            };
            let handler = handler.clone();
            let Some(permit) = self.permit(&mut limit_log) else {
                return;
            };
            let data = datagrams.request(n).to_vec();
            let shared = shared.clone();
            let listener = self.listener.clone();
            let reply_log = datagrams.reply_log();
            let stats = self.stats.clone();
            self.runner.run(Box::new(move || {
                let _permit = permit;
                // The handler's replies, counted like a service's: the datagram answered once
                // however many replies it got, each reply's bytes, each one not sent dropped.
                let replied = AtomicU64::new(0);
                let replied_bytes = AtomicU64::new(0);
                let send = |bytes: &[u8]| {
                    if let Err(e) = check_reply(&shared.limits, &ctx.peer, bytes) {
                        stats.dropped(DropReason::Oversize);
                        return Err(e);
                    }
                    reply_log.sending(&ctx.peer, bytes); // the loop guard sees handlers' replies
                    let sent = send_to(&listener, bytes, &ctx.peer);
                    match &sent {
                        Ok(()) => {
                            replied.fetch_add(1, Ordering::Relaxed);
                            replied_bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                        }
                        Err(e) => stats.dropped(send_failure(e)),
                    }
                    sent
                };
                let mut request = DatagramRequest {
                    data: &data,
                    ctx: &ctx,
                    send: &send,
                };
                let result = catch_unwind(AssertUnwindSafe(|| handler.handle(&mut request)));
                let result = match result {
                    Ok(r) => r.map_err(SessionError::Io),
                    Err(panic) => {
                        stats.panicked();
                        Err(SessionError::Panic(HandlerError::from_panic(panic)))
                    }
                };
                if replied.load(Ordering::Relaxed) > 0 {
                    let bytes = replied_bytes.load(Ordering::Relaxed);
                    stats.datagram_answered(usize::try_from(bytes).unwrap_or(usize::MAX));
                }
                if let Err(SessionError::Io(_)) = result {
                    stats.handler_error();
                }
                if result.is_err() {
                    shared.report(&ctx.peer, result);
                }
            }));
        }
    }
}

impl Loop {
    /// The datagram loop of a sans-IO service, which is quick: it answers on this thread,
    /// whatever the engine, the datagrams queued a batch at a time ([`Batch`]: one system call
    /// to receive them, one to send their replies). After a full batch more may be queued: it
    /// receives again without waiting, once it has looked at the stop.
    fn batch_loop(&self, datagrams: &mut Datagrams) {
        let shared = &self.shared;
        let mut batch = Batch::new();
        let mut full = false;
        loop {
            if full && shared.stop.is_fired() || !full && !self.wait_for("datagrams") {
                return;
            }
            let received = batch.recv(self.fd());
            full = matches!(received, Ok(BATCH));
            if let Some(delay) = batch.answer(self.fd(), datagrams, shared, received) {
                full = false;
                let _ = wait_readable(shared.stop.fd(), &shared.stop, Some(delay));
            }
        }
    }
}

pub(super) fn send_to(listener: &Listener, bytes: &[u8], peer: &Address) -> io::Result<()> {
    let to = reply_addr(peer)?;
    match listener {
        Listener::Udp(s) => socket2::SockRef::from(s).send_to(bytes, &to),
        Listener::UnixDatagram(s, _) => socket2::SockRef::from(s).send_to(bytes, &to),
        Listener::Tcp(_) | Listener::Unix(..) | Listener::UnixSeqpacket(..) => {
            Err(io::Error::from(io::ErrorKind::Unsupported))
        }
    }
    .map(drop)
}
