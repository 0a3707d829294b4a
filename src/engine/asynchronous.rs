//! The async engine: tokio, one task per connection (the default engine).

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket, UnixDatagram, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::task::TaskTracker;

use super::blocking::unnamed_peer;
use super::guard::DatagramGuard;
use super::{
    Backoff, Senders, SessionClock, SessionError, Shared, Traffic, answer_datagram, context,
    is_per_connection_error, refuse,
};
use crate::endpoint::Transport;
use crate::error::Error;
use crate::handler::{AsyncStream, AsyncStreamRequest, CatchUnwind, HandlerError};
use crate::server::listener::Listener;
use crate::server::rate::SourceLimiter;
use crate::service::{Address, Context, Next, StreamSession};

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

/// An accepted connection, kept concrete so the session path can wait for readiness without
/// holding a buffer.
enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
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

/// Streams that can wait for readiness and then read without waiting.
trait ReadReady: AsyncWrite + AsyncRead + Unpin {
    fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>>;
    /// Reads what is there now; `WouldBlock` when nothing is.
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

/// Reads without waiting through tokio's `poll_read`, which forgets the readiness after a short
/// read as well as after `WouldBlock`. `try_read` forgets it only after `WouldBlock`, so in
/// ping-pong every request cost a second `recv` that failed with `EAGAIN` (1.74 `recv` per
/// request against the plain tokio server's 1.00, under callgrind). The no-op waker is never
/// relied on: the caller polls `poll_ready` with its own waker before it sleeps.
fn read_now<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut [u8]) -> io::Result<usize> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut buf = tokio::io::ReadBuf::new(buf);
    match std::pin::Pin::new(stream).poll_read(&mut cx, &mut buf) {
        std::task::Poll::Ready(Ok(())) => Ok(buf.filled().len()),
        std::task::Poll::Ready(Err(e)) => Err(e),
        std::task::Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl ReadReady for tokio::net::TcpStream {
    fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_now(self, buf)
    }
}

impl ReadReady for tokio::net::UnixStream {
    fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        read_now(self, buf)
    }
}

thread_local! {
    /// Each runtime thread's read buffer. A connection borrows it only between readiness and
    /// the end of its session's `on_data`, never across an await, so an idle connection holds
    /// no read buffer at all (16 KiB each would dominate the memory of 10,000 of them).
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One connection's task: the async handler if there is one, else the service's session; a
/// panic is caught here and reported like any other failure of this connection alone.
async fn serve_conn(
    conn: Conn,
    ctx: Context,
    shared: Arc<Shared>,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let peer = ctx.peer.clone();
    let traffic = Arc::new(Traffic::new());
    // Set once the server stops accepting: a session between messages then closes.
    let stopping = AtomicBool::new(false);
    let work = async {
        match &shared.app.async_handler {
            Some(handler) => {
                let stream: Box<dyn AsyncStream> = match conn {
                    Conn::Tcp(s) => Box::new(Counted::new(s, traffic.clone())),
                    Conn::Unix(s) => Box::new(Counted::new(s, traffic.clone())),
                };
                let mut request = AsyncStreamRequest::new(ctx, stream, &shared.limits);
                let result = CatchUnwind(handler.run(&mut request)).await;
                match result {
                    Ok(Ok(())) => request.close().await.map_err(SessionError::Io),
                    Ok(Err(e)) => Err(SessionError::Io(e)),
                    Err(panic) => Err(SessionError::Panic(panic)),
                }
            }
            None => {
                let session = shared.session(&ctx);
                let driven = match conn {
                    Conn::Tcp(mut s) => {
                        let driven = drive(session, &mut s, &shared, &stopping, &traffic);
                        CatchUnwind(Box::pin(driven)).await
                    }
                    Conn::Unix(mut s) => {
                        let driven = drive(session, &mut s, &shared, &stopping, &traffic);
                        CatchUnwind(Box::pin(driven)).await
                    }
                };
                match driven {
                    Ok(result) => result,
                    Err(panic) => Err(SessionError::Panic(panic)),
                }
            }
        }
    };
    let mut work = std::pin::pin!(work);
    let result = tokio::select! {
        result = &mut work => result,
        () = shared.stop.fired() => {
            // Polling `work` again lets its session see the flag (see `Stopping`).
            stopping.store(true, Ordering::Relaxed);
            tokio::select! {
                () = shared.force.fired() => Err(SessionError::Io(super::grace_over())),
                result = &mut work => result,
            }
        }
    };
    shared.report_stream(&peer, &traffic, result);
}

/// A handler's stream, counting its bytes for the close line.
struct Counted<S> {
    inner: S,
    traffic: Arc<Traffic>,
}

impl<S> Counted<S> {
    fn new(inner: S, traffic: Arc<Traffic>) -> Counted<S> {
        Counted { inner, traffic }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = polled {
            this.traffic.received(buf.filled().len() - before);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = polled {
            this.traffic.sent(n);
        }
        polled
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Completes once `flag` is set. It registers no waker: the connection's task polls it again
/// right after setting the flag, so a stop-watcher per connection costs one atomic load
/// rather than a waiter on the server's shared stop signal at every read.
fn stopping(flag: &AtomicBool) -> impl std::future::Future<Output = ()> + '_ {
    std::future::poll_fn(move |_| {
        if flag.load(Ordering::Relaxed) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
}

/// What ended a wait for input.
enum Wake {
    Readable,
    Stopping,
}

/// The async twin of [`super::drive`]: the same loop over [`Next`], with `.await`, the same
/// [`SessionClock`], and the same rule at shutdown.
async fn drive<S: ReadReady>(
    mut session: Box<dyn StreamSession>,
    conn: &mut S,
    shared: &Shared,
    stop_flag: &AtomicBool,
    traffic: &Traffic,
) -> Result<(), SessionError> {
    let limits = &shared.limits;
    let mut clock = SessionClock::new(limits, Instant::now());
    let mut out = BytesMut::new();
    let mut watchdog = Watchdog::new(clock.read_deadline().0);
    let mut next = session.on_open(&mut out);
    loop {
        if !out.is_empty() {
            let mut written = 0;
            while written < out.len() {
                tokio::select! {
                    biased;
                    n = conn.write(&out[written..]) => match n? {
                        0 => return Err(SessionError::Io(io::ErrorKind::WriteZero.into())),
                        n => {
                            written += n;
                            traffic.sent(n);
                        }
                    },
                    () = watchdog.until(Instant::now() + limits.write_timeout) => {
                        return Err(SessionError::Io(super::write_timed_out(limits.write_timeout)));
                    }
                }
            }
            clock.wrote(Instant::now());
            out.clear();
            if out.capacity() > limits.read_buffer * 4 {
                out = BytesMut::new(); // a burst's buffer is not kept for an idle connection
            }
        }
        next = match next {
            Next::Close => {
                close_gracefully(conn).await;
                return Ok(());
            }
            Next::Write => session.on_writable(&mut out),
            Next::Read => {
                let idle = clock.idle_at_shutdown(session.between_messages());
                let (deadline, expiry) = clock.read_deadline();
                let wake = tokio::select! {
                    biased;
                    ready = std::future::poll_fn(|cx| conn.poll_ready(cx)) => {
                        ready?;
                        Wake::Readable
                    }
                    () = watchdog.until(deadline) => return Err(clock.expired(expiry).into()),
                    () = stopping(stop_flag), if idle => Wake::Stopping,
                };
                let read = READ_BUFFER.with_borrow_mut(|buf| {
                    buf.resize(limits.read_buffer, 0);
                    match conn.read_now(buf) {
                        Ok(0) => Ok(Some(session.on_eof(&mut out))),
                        Ok(n) => {
                            traffic.received(n);
                            let next = session.on_data(&buf[..n], &mut out);
                            clock.read(Instant::now(), session.in_message(), !out.is_empty());
                            Ok(Some(next))
                        }
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                            ) =>
                        {
                            Ok(None)
                        }
                        Err(e) => Err(e),
                    }
                });
                match (read?, wake) {
                    (Some(next), _) => next,
                    (None, Wake::Readable) => Next::Read, // a spurious wake-up: wait again
                    (None, Wake::Stopping) => {
                        // Shutdown, between messages, nothing waiting: an idle connection.
                        tracing::debug!("closing a connection idle at shutdown");
                        close_gracefully(conn).await;
                        return Ok(());
                    }
                }
            }
        };
    }
}

/// A connection's one timer, re-armed only when it fires early or must fire sooner. Resetting
/// a tokio timer around every read and write (`tokio::time::timeout`) touches the timer wheel
/// twice per request; that was the async engine's largest cost against a plain tokio server in
/// ping-pong. Here a read or write that completes at once never polls the timer at all.
struct Watchdog {
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: Instant,
}

impl Watchdog {
    fn new(due: Instant) -> Watchdog {
        Watchdog {
            timer: Box::pin(tokio::time::sleep_until(due.into())),
            armed: due,
        }
    }

    /// Completes at `due`.
    async fn until(&mut self, due: Instant) {
        if due < self.armed {
            self.arm(due);
        }
        loop {
            self.timer.as_mut().await;
            if Instant::now() >= due {
                return;
            }
            self.arm(due); // it fired for an earlier deadline: wait for this one
        }
    }

    fn arm(&mut self, due: Instant) {
        self.timer.as_mut().reset(due.into());
        self.armed = due;
    }
}

/// The async twin of [`super::close_gracefully`]: FIN, then wait briefly for the peer's EOF.
pub(crate) async fn close_gracefully<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(conn: &mut S) {
    if conn.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut buf = vec![0u8; 4096]; // on the heap: an array here would sit in every connection's future
        let mut discarded = 0;
        while discarded < super::LINGER_BYTES {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => discarded += n,
            }
        }
    };
    let _ = timeout(super::LINGER, drain).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A read that does not fill the buffer must forget the readiness it used: otherwise the
    /// next wait returns at once, and a `recv` that fails with `EAGAIN` follows every request.
    #[tokio::test]
    async fn a_short_read_leaves_the_stream_waiting_for_new_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(b"hello").await.unwrap();
        std::future::poll_fn(|cx| server.poll_ready(cx))
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(server.read_now(&mut buf).unwrap(), 5);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            server.poll_ready(&mut cx).is_pending(),
            "readiness kept after a short read"
        );
        client.write_all(b"!").await.unwrap();
        std::future::poll_fn(|cx| server.poll_ready(cx))
            .await
            .unwrap();
        assert_eq!(server.read_now(&mut buf).unwrap(), 1);
        drop(client);
        std::future::poll_fn(|cx| server.poll_ready(cx))
            .await
            .unwrap();
        assert_eq!(server.read_now(&mut buf).unwrap(), 0, "EOF");
    }
}
