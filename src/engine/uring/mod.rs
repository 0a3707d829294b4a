//! The uring engine: io_uring, thread-per-core. Each thread has its own ring and drives its
//! connections through the same connection machine as every engine ([`super::conn`]):
//!
//! - **accept**: an accept per stream listener per thread, all on the *same* listening
//!   socket (no `SO_REUSEPORT`), so a second server on the port still fails to bind (exit 7)
//!   and the kernel hands each connection to one waiting ring: multishot for a ring alone,
//!   one-shot where rings share the listener (a multishot one would take every connection);
//! - **receive**: a multishot receive per connection over the thread's registered
//!   provided-buffer ring ([`bufring`]): the kernel picks a buffer only when bytes arrive, so an
//!   idle connection holds none; one-shot, armed only while the connection reads, for a peer
//!   that sends ahead of its replies ([`stream`] says why);
//! - **send**: a send operation for each pending reply; all the operations of a loop turn go
//!   to the kernel in one `io_uring_enter`, which also waits for the next completions, with a
//!   time-out at the earliest deadline of the connection machines;
//! - **datagrams** (UDP, Unix datagram, multicast groups): each listener belongs to one thread,
//!   whose ring watches it through an epoll instance ([`dgram`] says why); the datagrams queued
//!   are then received and answered by the rules every engine shares ([`super::datagram`]), a
//!   batch at a time (`recvmmsg`, `sendmmsg`);
//! - **PROXY header** (`--proxy-protocol`): a one-shot poll per waiting connection, then the
//!   header step every engine shares (`proxied`); the connection's session begins after it.
//!
//! Async handlers ([`crate::handler::AsyncStreamHandler`]) run where the async engine runs
//! them: a server with one is handed to the async engine whole. Where io_uring is refused
//! (see [`probe`]), the server builder falls back to the async engine before serving.

mod bufring;
mod dgram;
mod ops;
mod permits;
mod probe;
#[cfg(feature = "proxy")]
mod proxied;
mod stream;
mod worker;

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

pub(crate) use bufring::BufRing;
pub(crate) use probe::probe;

use super::Shared;
use super::listener::Listener;
use crate::error::Error;
use crate::stats::ListenerStats;
use permits::Common;
use worker::Worker;

/// The threads the engine runs: `limits.threads`, or the CPUs this process may run on.
pub(super) fn threads(requested: usize) -> usize {
    match requested {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// Serves; `ready` is called once every thread has made its ring and armed its accepts, so
/// that each thread takes its turn at a shared listener's connections from the first one
/// (a thread that starts late finds the first connections taken by the others).
pub(super) fn serve(
    shared: Arc<Shared>,
    listeners: Vec<Listener>,
    ready: super::Ready,
) -> Result<(), Error> {
    if shared.app.async_handler.is_some() {
        ready();
        return super::tokio::serve(shared, listeners);
    }
    let threads = threads(shared.limits.threads);
    let mut wake_rx = Vec::with_capacity(threads);
    let mut wakers = Vec::with_capacity(threads);
    for _ in 0..threads {
        let (tx, rx) =
            UnixStream::pair().map_err(|e| Error::io("cannot create a wake-up pair", e))?;
        for end in [&tx, &rx] {
            end.set_nonblocking(true)
                .map_err(|e| Error::io("cannot create a wake-up pair", e))?;
        }
        wakers.push(tx);
        wake_rx.push(rx);
    }
    let common = Arc::new(Common {
        max: shared.limits.max_connections.max(1),
        open: AtomicUsize::new(0),
        blocked: AtomicUsize::new(0),
        wakers,
    });
    // Stream listeners are shared by every thread; each datagram listener is one thread's.
    let mut streams = Vec::new();
    let mut datagrams: Vec<Vec<(Listener, Arc<ListenerStats>)>> =
        (0..threads).map(|_| Vec::new()).collect();
    let mut next = 0;
    for (index, listener) in listeners.into_iter().enumerate() {
        let stats = shared.listener_stats(index);
        match listener {
            Listener::Udp(_) | Listener::UnixDatagram(..) => {
                datagrams[next % threads].push((listener, stats));
                next += 1;
            }
            stream => streams.push(Arc::new(worker::SharedListener::new(
                stream, threads, stats,
            ))),
        }
    }
    // Each ring is made on the thread that uses it: the kernel signals a ring's creator when
    // it tears the ring down, which would interrupt a blocking call of the caller's thread.
    let (started_tx, started_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(threads);
    for (i, (wake, own)) in wake_rx.into_iter().zip(datagrams).enumerate() {
        let (shared, common, streams) = (shared.clone(), common.clone(), streams.clone());
        let (started, done) = (started_tx.clone(), done_tx.clone());
        let handle = std::thread::Builder::new()
            .name(format!("socketkit-uring-{i}"))
            .spawn(move || {
                let worker = Worker::new(&shared, &common, &streams, own, wake);
                drop(streams);
                match worker.and_then(Worker::arm) {
                    Ok(worker) => {
                        let _ = started.send(Ok(()));
                        worker.run();
                    }
                    Err(e) => {
                        let _ = started.send(Err(e));
                    }
                }
                let _ = done.send(());
            })
            .map_err(|e| Error::io("cannot start a uring thread", e))?;
        handles.push(handle);
    }
    drop(streams);
    drop(started_tx);
    let mut failed = None;
    for _ in 0..threads {
        if let Ok(Err(e)) = started_rx.recv() {
            failed.get_or_insert(e);
        }
    }
    if let Some(e) = failed {
        // The threads that did start stop at once.
        shared.stop.fire();
        shared.force.fire();
        for handle in handles {
            let _ = handle.join();
        }
        return Err(Error::io("cannot start the uring engine", e));
    }
    ready();
    drop(done_tx);
    // The threads serve until `stop`; then connections in flight get the grace period.
    wait_for(&shared.stop);
    let deadline = Instant::now() + shared.limits.grace;
    let mut finished = 0;
    while finished < threads {
        let left = deadline.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(()) => finished += 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                tracing::info!(
                    "grace period over; closing the connections still open ({})",
                    common.open.load(Ordering::Acquire)
                );
                shared.force.fire();
                break;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for handle in handles {
        if handle.join().is_err() {
            tracing::error!("a uring thread panicked");
        }
    }
    Ok(())
}

/// Blocks until `trigger` fires.
fn wait_for(trigger: &crate::shutdown::Trigger) {
    while !trigger.is_fired() {
        let mut fds = [nix::poll::PollFd::new(
            trigger.fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE);
    }
}
