//! The sequential engine: the slides' iterative server. Each listener has its own thread, which
//! serves one connection (or one datagram) at a time; the next client waits in the kernel's
//! listen queue.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

use bytes::BytesMut;

use super::{
    Backoff, Conn, Shared, Woken, answer_datagram, context, drive, is_per_connection_error,
    log_session_end, wait_readable,
};
use crate::endpoint::Transport;
use crate::error::Error;
use crate::server::listener::Listener;
use crate::service::Address;

pub(super) fn serve(shared: Arc<Shared>, listeners: Vec<Listener>) -> Result<(), Error> {
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        for listener in &listeners {
            let done = done_tx.clone();
            let shared = &*shared;
            let spawned = std::thread::Builder::new()
                .name("socketkit-listener".into())
                .spawn_scoped(scope, move || {
                    run_listener(listener, shared);
                    let _ = done.send(());
                });
            if let Err(e) = spawned {
                shared.stop.fire();
                shared.force.fire();
                return Err(Error::io("cannot start a listener thread", e));
            }
        }
        drop(done_tx);
        // Wait for shutdown, then give connections in flight the grace period.
        let _ = wait_readable(shared.stop.fd(), &shared.stop, None);
        let deadline = Instant::now() + shared.limits.grace;
        loop {
            match done_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(()) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    tracing::info!("grace period over; closing the connections still open");
                    shared.force.fire();
                    break;
                }
            }
        }
        Ok(())
    })
}

fn run_listener(listener: &Listener, shared: &Shared) {
    match listener {
        Listener::Tcp(l) => {
            let local = l.local_addr().map(Address::Inet);
            accept_loop(l.as_fd(), local, Transport::Tcp, shared, || {
                l.accept().map(|(s, a)| (Conn::Tcp(s), Address::Inet(a)))
            })
        }
        Listener::Unix(l, _) => {
            let local = l.local_addr().map(|a| Address::from(&a));
            accept_loop(l.as_fd(), local, Transport::Unix, shared, || {
                l.accept().map(|(s, a)| (Conn::Unix(s), Address::from(&a)))
            })
        }
        Listener::Udp(s) => {
            let local = s.local_addr().map(Address::Inet);
            datagram_loop(
                s.as_fd(),
                local,
                Transport::Udp,
                shared,
                |buf| s.recv_from(buf).map(|(n, a)| (n, Address::Inet(a))),
                |reply, peer| match peer {
                    Address::Inet(addr) => s.send_to(reply, addr).map(drop),
                    Address::Unix(_) => Ok(()),
                },
            )
        }
        Listener::UnixDatagram(s, _) => {
            let local = s.local_addr().map(|a| Address::from(&a));
            datagram_loop(
                s.as_fd(),
                local,
                Transport::UnixDatagram,
                shared,
                |buf| s.recv_from(buf).map(|(n, a)| (n, Address::from(&a))),
                |reply, peer| match peer {
                    Address::Unix(Some(path)) => s.send_to(reply, path).map(drop),
                    _ => Err(unnamed_peer()),
                },
            )
        }
    }
}

pub(super) fn unnamed_peer() -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "the peer's socket is unnamed (unbound), so no reply can reach it",
    )
}

fn accept_loop(
    fd: BorrowedFd<'_>,
    local: io::Result<Address>,
    transport: Transport,
    shared: &Shared,
    mut accept: impl FnMut() -> io::Result<(Conn, Address)>,
) {
    let local = local.unwrap_or(Address::Unix(None));
    let mut buf = vec![0u8; shared.limits.read_buffer];
    let mut backoff = Backoff::new();
    loop {
        match wait_readable(fd, &shared.stop, None) {
            Ok(Woken::Triggered) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::error!("waiting for connections failed: {e}");
                return;
            }
        }
        match accept() {
            Ok((mut conn, peer)) => {
                backoff.reset();
                tracing::debug!(%peer, "connection accepted");
                let ctx = context(transport, peer.clone(), local.clone());
                // A panic in one session closes that connection only; the loop goes on.
                let result = catch_unwind(AssertUnwindSafe(|| {
                    let session = shared.service.session(&ctx);
                    drive(session, &mut conn, &mut buf, &shared.limits, &shared.force)
                }));
                match result {
                    Ok(result) => log_session_end(&peer, &result),
                    Err(_) => tracing::error!(%peer, "session panicked; connection closed"),
                }
            }
            Err(e) if is_per_connection_error(&e) => {}
            Err(e) => {
                let delay = backoff.on_error("accept", &e);
                let _ = wait_readable(shared.stop.fd(), &shared.stop, Some(delay));
            }
        }
    }
}

fn datagram_loop(
    fd: BorrowedFd<'_>,
    local: io::Result<Address>,
    transport: Transport,
    shared: &Shared,
    mut recv: impl FnMut(&mut [u8]) -> io::Result<(usize, Address)>,
    mut send: impl FnMut(&[u8], &Address) -> io::Result<()>,
) {
    let local = local.unwrap_or(Address::Unix(None));
    // One byte more than the largest UDP payload, so every legal datagram arrives whole.
    let mut buf = vec![0u8; 65_536];
    let mut reply = BytesMut::new();
    let mut backoff = Backoff::new();
    loop {
        match wait_readable(fd, &shared.stop, None) {
            Ok(Woken::Triggered) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::error!("waiting for datagrams failed: {e}");
                return;
            }
        }
        let (n, peer) = match recv(&mut buf) {
            Ok(got) => {
                backoff.reset();
                got
            }
            // ICMP errors from earlier replies surface here as ECONNREFUSED: not our concern.
            Err(e)
                if is_per_connection_error(&e) || e.kind() == io::ErrorKind::ConnectionRefused =>
            {
                continue;
            }
            Err(e) => {
                let delay = backoff.on_error("receive", &e);
                let _ = wait_readable(shared.stop.fd(), &shared.stop, Some(delay));
                continue;
            }
        };
        let ctx = context(transport, peer.clone(), local.clone());
        let answered = catch_unwind(AssertUnwindSafe(|| {
            answer_datagram(shared, &ctx, &buf[..n], &mut reply)
        }));
        match answered {
            Ok(true) => {
                if let Err(e) = send(&reply, &peer) {
                    tracing::debug!(%peer, "reply not sent: {e}");
                }
            }
            Ok(false) => {}
            Err(_) => tracing::error!(%peer, "service panicked on a datagram; no reply"),
        }
    }
}
