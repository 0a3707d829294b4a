//! The async engine: tokio, one task per connection (the default engine).

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use tokio::net::{TcpListener, UdpSocket, UnixDatagram, UnixListener};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::task::TaskTracker;

use super::async_stream::{Conn, serve_conn};
use super::blocking::unnamed_peer;
use super::guard::DatagramGuard;
use super::{
    Backoff, Senders, SessionError, Shared, answer_datagram, context, is_per_connection_error,
    refuse,
};
use crate::endpoint::Transport;
use crate::error::Error;
use crate::handler::HandlerError;
use crate::server::listener::Listener;
use crate::server::rate::SourceLimiter;
use crate::service::Address;

pub(super) fn serve(shared: Arc<Shared>, listeners: Vec<Listener>) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("socketkit-async")
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", e))?;
    runtime.block_on(serve_all(shared, listeners))
}

async fn serve_all(shared: Arc<Shared>, listeners: Vec<Listener>) -> Result<(), Error> {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections.max(1)));
    let mut loops = JoinSet::new();
    // Unix socket files are removed when their guard drops, after serving.
    let mut _socket_files = Vec::new();
    for listener in listeners {
        let shared = shared.clone();
        let adopt = |e| Error::io("cannot adopt a listener into the async runtime", e);
        match listener {
            Listener::Tcp(l) => {
                let l = TcpListener::from_std(l).map_err(adopt)?;
                let acceptor = Acceptor {
                    listener: Accept::Tcp(l),
                    shared,
                    tracker: tracker.clone(),
                    slots: slots.clone(),
                };
                loops.spawn(acceptor.run());
            }
            Listener::Unix(l, file) => {
                _socket_files.push(file);
                let l = UnixListener::from_std(l).map_err(adopt)?;
                let acceptor = Acceptor {
                    listener: Accept::Unix(l),
                    shared,
                    tracker: tracker.clone(),
                    slots: slots.clone(),
                };
                loops.spawn(acceptor.run());
            }
            Listener::Udp(s) => {
                let s = UdpSocket::from_std(s).map_err(adopt)?;
                loops.spawn(datagram_loop(Datagrams::Udp(s), shared));
            }
            Listener::UnixDatagram(s, file) => {
                _socket_files.push(file);
                let s = UnixDatagram::from_std(s).map_err(adopt)?;
                loops.spawn(datagram_loop(Datagrams::Unix(s), shared));
            }
        }
    }
    // The loops end when `stop` fires; then connections in flight get the grace period.
    while loops.join_next().await.is_some() {}
    tracker.close();
    if timeout(shared.limits.grace, tracker.wait()).await.is_err() {
        tracing::info!("grace period over; closing the connections still open");
        shared.force.fire();
        tracker.wait().await;
    }
    Ok(())
}

enum Accept {
    Tcp(TcpListener),
    Unix(UnixListener),
}

struct Acceptor {
    listener: Accept,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    slots: Arc<Semaphore>,
}

impl Acceptor {
    async fn run(self) {
        let shared = &self.shared;
        let (transport, local) = match &self.listener {
            Accept::Tcp(l) => (Transport::Tcp, l.local_addr().map(Address::Inet)),
            Accept::Unix(l) => (
                Transport::Unix,
                l.local_addr().map(|a| Address::from(&a.into())),
            ),
        };
        let local = local.unwrap_or(Address::Unix(None));
        let mut backoff = Backoff::new();
        let mut last_limit_log: Option<std::time::Instant> = None;
        'serving: loop {
            // The slot is taken before accept(): at the limit, clients stay in the kernel's queue.
            let permit = match self.slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    let now = std::time::Instant::now();
                    if last_limit_log.is_none_or(|t| now.duration_since(t).as_secs() >= 10) {
                        last_limit_log = Some(now);
                        tracing::warn!(
                            "connection limit reached ({}); new clients wait in the listen queue",
                            shared.limits.max_connections
                        );
                    }
                    tokio::select! {
                        _ = shared.stop.fired() => break 'serving,
                        permit = self.slots.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => return,
                        },
                    }
                }
            };
            let accepted = tokio::select! {
                _ = shared.stop.fired() => break 'serving,
                accepted = accept(&self.listener) => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff.reset();
                    if !shared.verify(&peer) {
                        match &stream {
                            Conn::Tcp(s) => refuse(s),
                            Conn::Unix(s) => refuse(s),
                        }
                        continue; // dropping the stream resets it before a byte is read
                    }
                    tracing::debug!(%peer, "connection accepted");
                    let ctx = context(transport, peer, local.clone());
                    self.tracker
                        .spawn(serve_conn(stream, ctx, shared.clone(), Some(permit)));
                }
                Err(e) if is_per_connection_error(&e) => {}
                Err(e) => {
                    drop(permit);
                    let delay = backoff.on_error("accept", &e);
                    tokio::select! {
                        _ = shared.stop.fired() => break 'serving,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.serve_queue(transport, &local);
    }

    /// At shutdown: accepts every connection the kernel has already completed, without
    /// waiting, and serves it (a balancer does not retry a connection that was established);
    /// the listener closes when this acceptor returns. The accepts go straight to the socket:
    /// the runtime may not have seen the last readiness event yet. Past the connection limit a
    /// queued connection goes without a permit (the backlog bounds them).
    fn serve_queue(&self, transport: Transport, local: &Address) {
        loop {
            let accepted = match &self.listener {
                Accept::Tcp(l) => socket2::SockRef::from(l).accept().and_then(|(s, _)| {
                    let s = std::net::TcpStream::from(s);
                    s.set_nonblocking(true)?;
                    let peer = Address::Inet(s.peer_addr()?);
                    Ok((Conn::Tcp(tokio::net::TcpStream::from_std(s)?), peer))
                }),
                Accept::Unix(l) => socket2::SockRef::from(l).accept().and_then(|(s, _)| {
                    let s = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(s));
                    s.set_nonblocking(true)?;
                    let peer = Address::from(&s.peer_addr()?);
                    Ok((Conn::Unix(tokio::net::UnixStream::from_std(s)?), peer))
                }),
            };
            match accepted {
                Ok((stream, peer)) => {
                    if !self.shared.verify(&peer) {
                        match &stream {
                            Conn::Tcp(s) => refuse(s),
                            Conn::Unix(s) => refuse(s),
                        }
                        continue;
                    }
                    tracing::debug!(%peer, "connection accepted from the queue at shutdown");
                    let ctx = context(transport, peer, local.clone());
                    let permit = self.slots.clone().try_acquire_owned().ok();
                    self.tracker
                        .spawn(serve_conn(stream, ctx, self.shared.clone(), permit));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_per_connection_error(&e) => {}
                Err(e) => {
                    tracing::warn!("accepting the queue at shutdown failed: {e}");
                    return;
                }
            }
        }
    }
}

async fn accept(listener: &Accept) -> io::Result<(Conn, Address)> {
    match listener {
        Accept::Tcp(l) => {
            let (s, a) = l.accept().await?;
            Ok((Conn::Tcp(s), Address::Inet(a)))
        }
        Accept::Unix(l) => {
            let (s, a) = l.accept().await?;
            Ok((Conn::Unix(s), Address::from(&a.into())))
        }
    }
}

enum Datagrams {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

async fn datagram_loop(socket: Datagrams, shared: Arc<Shared>) {
    let (transport, local) = match &socket {
        Datagrams::Udp(s) => (Transport::Udp, s.local_addr().map(Address::Inet)),
        Datagrams::Unix(s) => (
            Transport::UnixDatagram,
            s.local_addr().map(|a| Address::from(&a.into())),
        ),
    };
    let local = local.unwrap_or(Address::Unix(None));
    let mut buf = vec![0u8; super::DATAGRAM_BUFFER];
    let mut reply = BytesMut::new();
    let mut backoff = Backoff::new();
    let mut truncation_log = None;
    let mut rate = SourceLimiter::new(shared.limits.datagram_rate);
    let mut senders = Senders::new();
    let mut guard = DatagramGuard::new();
    loop {
        let received = tokio::select! {
            _ = shared.stop.fired() => return,
            received = recv_from(&socket, &mut buf, transport) => received,
        };
        let (n, peer) = match received {
            Ok(got) => {
                backoff.reset();
                got
            }
            Err(e)
                if is_per_connection_error(&e) || e.kind() == io::ErrorKind::ConnectionRefused =>
            {
                continue;
            }
            Err(e) => {
                let delay = backoff.on_error("receive", &e);
                tokio::select! {
                    _ = shared.stop.fired() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        if super::was_truncated(n, buf.len(), &peer, &mut truncation_log)
            || !guard.admit(&peer, &buf[..n], Instant::now())
            || !shared.verify(&peer)
            || !rate.admit(&peer, Instant::now())
        {
            continue;
        }
        senders.received(&peer, n);
        let ctx = context(transport, peer, local.clone());
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            answer_datagram(&shared, &ctx, &buf[..n], &mut reply)
        }));
        match answered {
            // Sent now or dropped: a peer that does not read must not hold the listener.
            Ok(true) => match try_send_to(&socket, &reply, &ctx.peer) {
                Ok(()) => guard.replied(&ctx.peer, &reply, Instant::now()),
                Err(e) => guard.not_sent(&ctx.peer, &e, Instant::now()),
            },
            Ok(false) => {}
            Err(panic) => shared.report(
                &ctx.peer,
                Err(SessionError::Panic(HandlerError::from_panic(panic))),
            ),
        }
    }
}

async fn recv_from(
    socket: &Datagrams,
    buf: &mut [u8],
    transport: Transport,
) -> io::Result<(usize, Address)> {
    use std::os::fd::AsFd;
    loop {
        let received = match socket {
            Datagrams::Udp(s) => {
                s.readable().await?;
                s.try_io(tokio::io::Interest::READABLE, || {
                    super::recv_datagram(s.as_fd(), buf, transport)
                })
            }
            Datagrams::Unix(s) => {
                s.readable().await?;
                s.try_io(tokio::io::Interest::READABLE, || {
                    super::recv_datagram(s.as_fd(), buf, transport)
                })
            }
        };
        match received {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            result => return result,
        }
    }
}

/// Sends `reply` now or not at all: a full receive queue at the peer (a Unix datagram socket
/// that does not read) or a full send buffer is `WouldBlock`, and the reply is dropped, as on
/// the blocking engines. The system call is made directly on the non-blocking socket: tokio's
/// `try_send_to` would trust its cached readiness, which a `WouldBlock` clears until the kernel
/// next signals the socket writable, and could then drop replies to everyone without trying.
fn try_send_to(socket: &Datagrams, reply: &[u8], peer: &Address) -> io::Result<()> {
    let to = match peer {
        Address::Inet(addr) => socket2::SockAddr::from(*addr),
        Address::Unix(Some(path)) => socket2::SockAddr::unix(path)?,
        Address::Abstract(name) => {
            let mut raw = vec![0u8];
            raw.extend_from_slice(name);
            socket2::SockAddr::unix(std::ffi::OsStr::from_bytes(&raw))?
        }
        Address::Unix(None) => return Err(unnamed_peer()),
    };
    match socket {
        Datagrams::Udp(s) => socket2::SockRef::from(s).send_to(reply, &to),
        Datagrams::Unix(s) => socket2::SockRef::from(s).send_to(reply, &to),
    }
    .map(drop)
}
