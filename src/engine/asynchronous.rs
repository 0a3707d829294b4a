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

use super::accept::{AcceptLoop, Accepted, drain_queue};
use super::blocking::unnamed_peer;
use super::datagram::{self, Received};
use super::listener::Listener;
use super::{SessionClock, SessionError, Shared, Traffic, context};
use crate::endpoint::Transport;
use crate::error::Error;
use crate::handler::{AsyncStream, AsyncStreamRequest, CatchUnwind};
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
        let mut acceptor = AcceptLoop::new();
        'serving: loop {
            // The slot is taken before accept(): at the limit, clients stay in the kernel's queue.
            let permit = match self.slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    acceptor.at_limit(shared.limits.max_connections);
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
            match acceptor.accepted(shared, accepted) {
                Accepted::Serve(stream, peer) => {
                    let ctx = context(transport, peer, local.clone());
                    self.tracker
                        .spawn(serve_conn(stream, ctx, shared.clone(), Some(permit)));
                }
                Accepted::Next => {}
                Accepted::BackOff(delay) => {
                    drop(permit);
                    tokio::select! {
                        _ = shared.stop.fired() => break 'serving,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.serve_queue(transport, &local);
    }

    /// At shutdown: serves the connections already in the listen queue ([`drain_queue`]); the
    /// listener closes when this acceptor returns. The accepts go straight to the socket: the
    /// runtime may not have seen the last readiness event yet. Past the connection limit a
    /// queued connection goes without a permit (the backlog bounds them).
    fn serve_queue(&self, transport: Transport, local: &Address) {
        let accept_now = || match &self.listener {
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
        drain_queue(&self.shared, accept_now, |stream, peer| {
            let ctx = context(transport, peer, local.clone());
            let permit = self.slots.clone().try_acquire_owned().ok();
            self.tracker
                .spawn(serve_conn(stream, ctx, self.shared.clone(), permit));
        });
    }
}

/// An accepted connection, kept concrete so the session path can wait for readiness without
/// holding a buffer.
enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

impl std::os::fd::AsFd for Conn {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Conn::Tcp(s) => s.as_fd(),
            Conn::Unix(s) => s.as_fd(),
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

/// Streams that can wait for readiness and then read without waiting.
trait ReadReady: AsyncWrite + AsyncRead + Unpin {
    fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>>;
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize>;
}

impl ReadReady for tokio::net::TcpStream {
    fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_read(buf)
    }
}

impl ReadReady for tokio::net::UnixStream {
    fn poll_ready(&self, cx: &mut std::task::Context<'_>) -> std::task::Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.try_read(buf)
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
    let mut datagrams =
        datagram::Datagrams::new(&shared, transport, local.unwrap_or(Address::Unix(None)));
    loop {
        let received = tokio::select! {
            _ = shared.stop.fired() => return,
            received = recv_from(&socket, datagrams.buffer(), transport) => received,
        };
        let (n, ctx) = match datagrams.received(&shared, received) {
            Received::Request(n, ctx) => (n, ctx),
            Received::Next => continue,
            Received::BackOff(delay) => {
                tokio::select! {
                    _ = shared.stop.fired() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        // Sent now or dropped: a peer that does not read must not hold the listener.
        if let Some(reply) = datagrams.answer(&shared, &ctx, n) {
            let sent = try_send_to(&socket, reply, &ctx.peer);
            datagrams.sent(&ctx.peer, sent);
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
                    datagram::recv_datagram(s.as_fd(), buf, transport)
                })
            }
            Datagrams::Unix(s) => {
                s.readable().await?;
                s.try_io(tokio::io::Interest::READABLE, || {
                    datagram::recv_datagram(s.as_fd(), buf, transport)
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
