//! The async engine: tokio, one task per connection (the default engine).

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket, UnixDatagram, UnixListener};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::task::TaskTracker;

use super::sequential::unnamed_peer;
use super::{
    Backoff, SessionError, Shared, answer_datagram, context, is_per_connection_error,
    log_session_end,
};
use crate::endpoint::Transport;
use crate::error::Error;
use crate::server::Limits;
use crate::server::listener::Listener;
use crate::service::{Address, Next, StreamSession};

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
    let mut loops = JoinSet::new();
    // Unix socket files are removed when their guard drops, after serving.
    let mut _socket_files = Vec::new();
    for listener in listeners {
        let shared = shared.clone();
        let tracker = tracker.clone();
        let adopt = |e| Error::io("cannot adopt a listener into the async runtime", e);
        match listener {
            Listener::Tcp(l) => {
                let l = TcpListener::from_std(l).map_err(adopt)?;
                loops.spawn(accept_loop(Accept::Tcp(l), shared, tracker));
            }
            Listener::Unix(l, file) => {
                _socket_files.push(file);
                let l = UnixListener::from_std(l).map_err(adopt)?;
                loops.spawn(accept_loop(Accept::Unix(l), shared, tracker));
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

async fn accept_loop(listener: Accept, shared: Arc<Shared>, tracker: TaskTracker) {
    let (transport, local) = match &listener {
        Accept::Tcp(l) => (Transport::Tcp, l.local_addr().map(Address::Inet)),
        Accept::Unix(l) => (
            Transport::Unix,
            l.local_addr().map(|a| Address::from(&a.into())),
        ),
    };
    let local = local.unwrap_or(Address::Unix(None));
    let mut backoff = Backoff::new();
    loop {
        let accepted = tokio::select! {
            _ = shared.stop.fired() => return,
            accepted = accept(&listener) => accepted,
        };
        match accepted {
            Ok(conn) => {
                backoff.reset();
                let shared = shared.clone();
                let local = local.clone();
                tracker.spawn(async move {
                    let (peer, result) = match conn {
                        (Conn::Tcp(mut s), peer) => {
                            let r = serve_conn(&mut s, &peer, local, transport, &shared).await;
                            (peer, r)
                        }
                        (Conn::Unix(mut s), peer) => {
                            let r = serve_conn(&mut s, &peer, local, transport, &shared).await;
                            (peer, r)
                        }
                    };
                    log_session_end(&peer, &result);
                });
            }
            Err(e) if is_per_connection_error(&e) => {}
            Err(e) => {
                let delay = backoff.on_error("accept", &e);
                tokio::select! {
                    _ = shared.stop.fired() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Accept) -> io::Result<(Conn, Address)> {
    match listener {
        Accept::Tcp(l) => l
            .accept()
            .await
            .map(|(s, a)| (Conn::Tcp(s), Address::Inet(a))),
        Accept::Unix(l) => l
            .accept()
            .await
            .map(|(s, a)| (Conn::Unix(s), Address::from(&a.into()))),
    }
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut S,
    peer: &Address,
    local: Address,
    transport: Transport,
    shared: &Shared,
) -> Result<(), SessionError> {
    tracing::debug!(%peer, "connection accepted");
    let ctx = context(transport, peer.clone(), local);
    let session = shared.service.session(&ctx);
    tokio::select! {
        _ = shared.force.fired() => Err(SessionError::Stopped),
        result = drive(session, conn, &shared.limits) => result,
    }
}

/// The async twin of [`super::drive`]: the same loop over [`Next`], with `.await`.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    mut session: Box<dyn StreamSession>,
    conn: &mut S,
    limits: &Limits,
) -> Result<(), SessionError> {
    let idle = limits.idle_timeout;
    let mut buf = vec![0u8; limits.read_buffer];
    let mut out = BytesMut::new();
    let mut next = session.on_open(&mut out);
    loop {
        if !out.is_empty() {
            timeout(idle, conn.write_all(&out))
                .await
                .map_err(|_| SessionError::IdleTimeout(idle))??;
            out.clear();
        }
        next = match next {
            Next::Close => {
                // A FIN, not a reset: the reply already written must reach the peer.
                let _ = conn.shutdown().await;
                return Ok(());
            }
            Next::Write => session.on_writable(&mut out),
            Next::Read => match timeout(idle, conn.read(&mut buf)).await {
                Err(_) => return Err(SessionError::IdleTimeout(idle)),
                Ok(Ok(0)) => session.on_eof(&mut out),
                Ok(Ok(n)) => session.on_data(&buf[..n], &mut out),
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => Next::Read,
                Ok(Err(e)) => return Err(e.into()),
            },
        };
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
    let mut buf = vec![0u8; 65_536];
    let mut reply = BytesMut::new();
    let mut backoff = Backoff::new();
    loop {
        let received = tokio::select! {
            _ = shared.stop.fired() => return,
            received = recv_from(&socket, &mut buf) => received,
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
        let ctx = context(transport, peer.clone(), local.clone());
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            answer_datagram(&shared, &ctx, &buf[..n], &mut reply)
        }));
        match answered {
            Ok(true) => {
                if let Err(e) = send_to(&socket, &reply, &peer).await {
                    tracing::debug!(%peer, "reply not sent: {e}");
                }
            }
            Ok(false) => {}
            Err(_) => tracing::error!(%peer, "service panicked on a datagram; no reply"),
        }
    }
}

async fn recv_from(socket: &Datagrams, buf: &mut [u8]) -> io::Result<(usize, Address)> {
    match socket {
        Datagrams::Udp(s) => s.recv_from(buf).await.map(|(n, a)| (n, Address::Inet(a))),
        Datagrams::Unix(s) => s
            .recv_from(buf)
            .await
            .map(|(n, a)| (n, Address::from(&a.into()))),
    }
}

async fn send_to(socket: &Datagrams, reply: &[u8], peer: &Address) -> io::Result<()> {
    match (socket, peer) {
        (Datagrams::Udp(s), Address::Inet(addr)) => s.send_to(reply, addr).await.map(drop),
        (Datagrams::Unix(s), Address::Unix(Some(path))) => s.send_to(reply, path).await.map(drop),
        _ => Err(unnamed_peer()),
    }
}
