//! One stream connection on the async engine: its task, the driver loop that obeys
//! [`crate::engine::conn::Connection`] with `.await`, its one timer, and lingering close. The rules are
//! in `conn.rs`; this file only moves bytes and waits.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use crate::Limits;
use crate::endpoint::Transport;
use crate::engine::conn::{Action, Connection, Event, Io, Linger, grace_over};
use crate::engine::{SessionError, Shared, Traffic};
use crate::handler::{
    AsyncStream, AsyncStreamRequest, CatchUnwind, DynAsyncHandler, PeerCredentials,
};
use crate::service::{Address, Context, StreamSession};
use crate::stats::ListenerStats;

/// An accepted connection, kept concrete so the session path can wait for readiness without
/// holding a buffer.
pub(crate) enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
    /// One record per read and per write (see [`crate::seqpacket`]).
    Seqpacket(crate::seqpacket::PacketStream),
    /// A TCP connection after its TLS handshake (see `tls.rs`); boxed: the TLS state is large.
    #[cfg(feature = "tls")]
    Tls(Box<super::tls::TlsConn>),
}

impl std::os::fd::AsFd for Conn {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Conn::Tcp(s) => s.as_fd(),
            Conn::Unix(s) => s.as_fd(),
            Conn::Seqpacket(s) => s.as_fd(),
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.tcp().as_fd(),
        }
    }
}

/// Reads what is there now into `buf` through tokio's `poll_read`: the bytes and the wait in
/// one call, with no readiness pass before it. `poll_read` also forgets the readiness after a
/// short read, not only after `WouldBlock` (`try_read` keeps it, and in ping-pong every request
/// then cost a second `recv` that failed with `EAGAIN`: 1.74 `recv` per request against the
/// plain tokio server's 1.00, under callgrind).
fn poll_read_into<S: AsyncRead + Unpin + ?Sized>(
    stream: &mut S,
    cx: &mut std::task::Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<usize>> {
    let mut buf = tokio::io::ReadBuf::new(buf);
    std::pin::Pin::new(stream)
        .poll_read(cx, &mut buf)
        .map_ok(|()| buf.filled().len())
}

/// Grows the thread's read buffer to `len` bytes, rarely (see [`READ_BUFFER`]).
#[cold]
fn grow(buf: &mut Vec<u8>, len: usize) {
    buf.resize(len, 0);
}

thread_local! {
    /// Each runtime thread's read buffer. A connection borrows it only between readiness and
    /// the end of its session's `on_data`, never across an await, so an idle connection holds
    /// no read buffer at all (16 KiB each would dominate the memory of 10,000 of them).
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What the connections of one listener have in common: the transport and local address of
/// their [`Context`], held once by the listener rather than by every connection's task.
pub(crate) struct Listening {
    pub(crate) transport: Transport,
    pub(crate) local: Address,
    /// The listener's counters.
    pub(crate) stats: Arc<ListenerStats>,
    /// A `tls://` listener's settings: each connection's handshake comes first.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<crate::tls::ServerTls>,
}

impl Listening {
    /// The context of a connection from `peer`, accepted at `accepted`.
    fn context(&self, peer: &Address, accepted: SystemTime) -> Context {
        Context {
            peer: peer.clone(),
            local: self.local.clone(),
            transport: self.transport,
            now: accepted,
        }
    }
}

/// One connection's task: the async handler if there is one, else the service's session; a
/// panic is caught here and reported like any other failure of this connection alone. The
/// server's stop reaches the driver through a flag (see [`stopping`]); the end of the grace
/// period drops the connection here ([`Event::GraceOver`]'s rule: close at once).
///
/// An idle connection is this task and little else, so its layout is kept tight (5,000 idle
/// connections are a benchmark cell; `the_idle_task_stays_small` bounds it): an `async` block
/// rather than an `async fn`, whose future would keep a second copy of every argument
/// (rust-lang/rust#62958); the arguments used in place, never moved into locals; the
/// [`Context`] built inside and dropped once the session is made; the driver pinned inside the
/// task rather than boxed beside it; the byte counts inline; the async handler's state (rare)
/// boxed.
pub(crate) fn serve_conn(
    mut conn: Conn,
    #[cfg_attr(not(feature = "proxy"), allow(unused_mut))] mut peer: Address,
    listening: &Arc<Listening>,
    shared: Arc<Shared>,
    permit: Option<OwnedSemaphorePermit>,
) -> impl Future<Output = ()> + Send + use<> {
    let listening = listening.clone();
    let accepted = SystemTime::now();
    async move {
        // The PROXY header first, then the TLS handshake: a balancer (HAProxy's send-proxy-v2
        // in front of a TLS backend) sends the header on the TCP connection, before TLS.
        // Boxed: rare, and inline its state would grow every idle connection's task.
        // The header's client replaces the socket's peer in place: a new binding would be a
        // second address beside the captured one for the task's whole life (24 bytes a task).
        #[cfg(feature = "proxy")]
        if shared.proxy_protocol {
            use super::proxied::{Stream, proxied};
            let stream = match &conn {
                Conn::Tcp(s) => Stream::Tcp(s),
                Conn::Unix(s) => Stream::Unix(s),
                Conn::Seqpacket(_) => unreachable!("refused by the builder"),
                #[cfg(feature = "tls")]
                Conn::Tls(_) => unreachable!("the handshake comes after the header"),
            };
            let ctx = listening.context(&peer, accepted);
            match Box::pin(proxied(&shared, &listening.stats, stream, ctx)).await {
                Ok(client) => peer = client,
                Err(cause) => {
                    // Counted as an end, so the accepted connections add up to their ends.
                    let took = accepted.elapsed().unwrap_or_default();
                    listening.stats.ended(cause, (0, 0), 0, took);
                    return drop(permit);
                }
            }
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = &listening.tls {
            // Boxed: the handshake's state is large, and only TLS connections pay for it.
            let handshake = match conn {
                Conn::Tcp(tcp) => Box::pin(super::tls::handshake(tls, tcp, &peer, &shared)).await,
                // Only TCP listeners are ever TLS listeners.
                _ => Err(crate::stats::EndCause::TlsHandshake),
            };
            match handshake {
                Ok(tls) => conn = Conn::Tls(Box::new(tls)),
                Err(cause) => {
                    // Counted as an end, so the accepted connections add up to their ends.
                    let took = accepted.elapsed().unwrap_or_default();
                    listening.stats.ended(cause, (0, 0), 0, took);
                    return drop(permit);
                }
            }
        }
        if let Some(handler) = &shared.app.async_handler {
            let ctx = listening.context(&peer, accepted);
            let stats = &listening.stats;
            Box::pin(serve_handler(handler, conn, ctx, &shared, stats)).await;
        } else {
            // A temporary, gone before the first wait: the task does not keep it.
            let session = shared.session(&listening.context(&peer, accepted));
            let traffic = Traffic::new(&listening.stats);
            // Set once the server stops accepting: a session between messages then closes.
            let stopping = AtomicBool::new(false);
            let limits = &shared.limits;
            let result = match &mut conn {
                Conn::Tcp(s) => {
                    let driven = drive(session, s, limits, &stopping, &traffic);
                    until_forced(&shared, &stopping, caught(std::pin::pin!(driven))).await
                }
                Conn::Unix(s) => {
                    let driven = drive(session, s, limits, &stopping, &traffic);
                    until_forced(&shared, &stopping, caught(std::pin::pin!(driven))).await
                }
                #[cfg(feature = "tls")]
                Conn::Tls(s) => {
                    let driven = drive(session, s.as_mut(), limits, &stopping, &traffic);
                    until_forced(&shared, &stopping, caught(std::pin::pin!(driven))).await
                }
                Conn::Seqpacket(s) => {
                    // Each read takes a whole record: the buffer holds the largest one. Boxed,
                    // with its own limits: rare, and inline they would grow every task.
                    let limits = Box::new(Limits {
                        read_buffer: limits.read_buffer_for(Transport::UnixSeqpacket),
                        ..limits.clone()
                    });
                    let mut driven = Box::pin(drive(session, s, &limits, &stopping, &traffic));
                    until_forced(&shared, &stopping, caught(driven.as_mut())).await
                }
            };
            shared.report_stream(&peer, &traffic, result);
        }
        drop(permit);
    }
}

/// An async handler's connection: its stream, counted, is the handler's until it returns.
async fn serve_handler(
    handler: &Arc<dyn DynAsyncHandler>,
    conn: Conn,
    ctx: Context,
    shared: &Shared,
    stats: &Arc<ListenerStats>,
) {
    let peer = ctx.peer.clone();
    let traffic = Arc::new(Traffic::new(stats));
    let stopping = AtomicBool::new(false); // handlers do not look at it
    let work = async {
        let mut ctx = ctx;
        let mut credentials = None;
        let stream: Box<dyn AsyncStream> = match conn {
            Conn::Tcp(s) => {
                // A handler (exec's TCPLOCALIP) is told the address the peer reached, not the
                // listener's wildcard: one getsockname, for handlers only.
                if ctx.local.inet().is_some_and(|a| a.ip().is_unspecified())
                    && let Ok(local) = s.local_addr()
                {
                    ctx.local = Address::Inet(local);
                }
                Box::new(Counted::new(s, traffic.clone()))
            }
            Conn::Unix(s) => {
                // The peer process, for exec's UNIXREMOTE* variables: one getsockopt per Unix
                // connection of a handler (services never pay it).
                credentials = s.peer_cred().ok().map(|c| PeerCredentials {
                    pid: c.pid(),
                    uid: c.uid(),
                    gid: c.gid(),
                });
                Box::new(Counted::new(s, traffic.clone()))
            }
            Conn::Seqpacket(s) => Box::new(Counted::new(s, traffic.clone())),
            #[cfg(feature = "tls")]
            Conn::Tls(s) => {
                // As for TCP: the address the peer reached, for exec's TCPLOCALIP.
                if ctx.local.inet().is_some_and(|a| a.ip().is_unspecified())
                    && let Ok(local) = s.tcp().local_addr()
                {
                    ctx.local = Address::Inet(local);
                }
                Box::new(Counted::new(s, traffic.clone()))
            }
        };
        let mut request = AsyncStreamRequest::new(ctx, stream, &shared.limits);
        request.set_peer_credentials(credentials);
        let result = CatchUnwind(handler.run(&mut request)).await;
        match result {
            Ok(Ok(())) => {
                request.close().await?;
                linger(request.reader()).await;
                Ok(())
            }
            Ok(Err(e)) => Err(SessionError::Io(e)),
            Err(panic) => Err(SessionError::Panic(panic)),
        }
    };
    let result = until_forced(shared, &stopping, std::pin::pin!(work)).await;
    shared.report_stream(&peer, &traffic, result);
}

/// `driven`, with a panic while polling it turned into this connection's error.
fn caught<F: Future<Output = Result<(), SessionError>> + ?Sized>(
    driven: Pin<&mut F>,
) -> impl Future<Output = Result<(), SessionError>> + '_ {
    let mut driven = CatchUnwind(driven);
    std::future::poll_fn(move |cx| {
        Pin::new(&mut driven)
            .poll(cx)
            .map(|caught| caught.unwrap_or_else(|panic| Err(SessionError::Panic(panic))))
    })
}

/// Runs `work` to its end, but once the server stops, sets `stopping` (polling `work` again
/// lets its session see the flag: see [`stopping`]) and ends it when the grace period does.
/// `work` is polled first at every wake-up, then the trigger: written out rather than with
/// `tokio::select!`, whose state would be larger in every connection's task, and which draws a
/// random number at every wake-up unless biased.
#[allow(clippy::manual_async_fn)] // an `async fn` would hold its arguments twice
fn until_forced<'a, F: Future<Output = Result<(), SessionError>> + Unpin + 'a>(
    shared: &'a Shared,
    stopping: &'a AtomicBool,
    mut work: F,
) -> impl Future<Output = Result<(), SessionError>> + 'a {
    async move {
        {
            // Once the stop holds this task's waker (every waker of a tokio task wakes that
            // task), a wake-up needs only its flag: polling the stop's future at every request
            // cost more than the flag.
            let mut stop = std::pin::pin!(shared.stop.fired());
            let mut registered = false;
            let ended = std::future::poll_fn(|cx| match Pin::new(&mut work).poll(cx) {
                Poll::Ready(result) => Poll::Ready(Some(result)),
                Poll::Pending if registered && !shared.stop.is_fired() => Poll::Pending,
                Poll::Pending => {
                    registered = true;
                    stop.as_mut().poll(cx).map(|()| None)
                }
            })
            .await;
            if let Some(result) = ended {
                return result;
            }
        }
        stopping.store(true, Ordering::Relaxed);
        let mut force = std::pin::pin!(shared.force.fired());
        std::future::poll_fn(|cx| match Pin::new(&mut work).poll(cx) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => force
                .as_mut()
                .poll(cx)
                .map(|()| Err(SessionError::Io(grace_over()))),
        })
        .await
    }
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
            match buf.filled().len() - before {
                0 if buf.remaining() > 0 => this.traffic.eof(),
                n => this.traffic.received(n),
            }
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

/// The async driver: [`Connection`]'s rules, with `.await`. The session is one `poll_fn` that
/// loops over the machine: it tries the I/O first ([`Connection::io`]) and asks for the
/// deadline and looks at the timer only when the I/O would wait, so a request that arrived as
/// the deadline passed or the server stopped is still served, and a request read and answered
/// at once costs neither deadline arithmetic nor a timer poll. One clock reading per wake-up
/// serves every event of that wake-up (the read and the reply's write): the deadlines are
/// seconds, a wake-up microseconds.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    session: Box<dyn StreamSession>,
    conn: &mut S,
    limits: &Limits,
    stop_flag: &AtomicBool,
    traffic: &Traffic,
) -> Result<(), SessionError> {
    let mut now = Instant::now();
    let mut machine = Connection::new(session, limits, now);
    let mut watchdog = Watchdog::new(now + limits.idle_timeout);
    let mut tally = Tally::new(traffic);
    // Whether `now` predates this wake-up (it is read again at the first event that needs it).
    let mut stale = false;
    let driven = std::future::poll_fn(|cx| {
        loop {
            match machine.io() {
                Io::Write(bytes) => match std::pin::Pin::new(&mut *conn).poll_write(cx, bytes) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        tally.sent += n as u64;
                        if stale {
                            (now, stale) = (Instant::now(), false);
                        }
                        machine.handle(Event::Wrote(n), now);
                        continue;
                    }
                    // Tried again, as a read is (and as the pool's writes are).
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                },
                Io::Read => {
                    if !machine.is_stopping() && stop_flag.load(Ordering::Relaxed) {
                        machine.handle(Event::ShutdownBegun, Instant::now());
                        continue;
                    }
                    // One borrow of the thread's buffer for every read of this wake-up: the
                    // request, its in-place reply, and the read that finds no more bytes
                    // (a second borrow cost about 40 instructions a request).
                    let read = READ_BUFFER.with_borrow_mut(|buf| {
                        // Zeroed once per thread (and when a larger buffer is asked for), not
                        // at every read.
                        if buf.len() < limits.read_buffer {
                            grow(buf, limits.read_buffer);
                        }
                        let buf = &mut buf[..limits.read_buffer];
                        loop {
                            let n = match poll_read_into(conn, cx, buf) {
                                Poll::Ready(Ok(n)) => n,
                                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {
                                    return Poll::Ready(Ok(())); // try again
                                }
                                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                                Poll::Pending => return Poll::Pending,
                            };
                            if stale {
                                (now, stale) = (Instant::now(), false);
                            }
                            if n == 0 {
                                traffic.eof();
                                machine.handle(Event::Eof, now);
                                return Poll::Ready(Ok(()));
                            }
                            tally.received += n as u64;
                            let data = &mut buf[..n];
                            if !machine.read_in_place(data, now) {
                                return Poll::Ready(Ok(()));
                            }
                            // The reply is the read buffer, transformed: written from here, and
                            // what does not go at once is copied to the machine's output.
                            let wrote = match std::pin::Pin::new(&mut *conn).poll_write(cx, data) {
                                Poll::Ready(Ok(0)) => {
                                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                                }
                                Poll::Ready(Ok(wrote)) => wrote,
                                Poll::Ready(Err(e)) if e.kind() != io::ErrorKind::Interrupted => {
                                    return Poll::Ready(Err(e));
                                }
                                Poll::Ready(Err(_)) | Poll::Pending => 0,
                            };
                            tally.sent += wrote as u64;
                            machine.wrote_in_place(data, wrote, now);
                            // The next read here only if it is all the machine wants (the
                            // stop's flag is the outer loop's to look at).
                            if machine.io() != Io::Read
                                || (!machine.is_stopping() && stop_flag.load(Ordering::Relaxed))
                            {
                                return Poll::Ready(Ok(()));
                            }
                        }
                    });
                    match read {
                        Poll::Ready(Ok(())) => continue,
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {}
                    }
                }
                Io::Done => return Poll::Ready(Ok(())),
            }
            // The I/O would wait: until the deadline of the action at hand.
            let Some(deadline) = machine.deadline() else {
                continue; // not after a write or a read
            };
            match watchdog.poll_due(cx, deadline) {
                Poll::Ready(at) => {
                    (now, stale) = (at, false);
                    machine.handle(Event::Deadline, at);
                }
                Poll::Pending => {
                    stale = true; // the next poll is a later wake-up
                    return Poll::Pending;
                }
            }
        }
    })
    .await;
    drop(tally);
    // Counted whatever the end: a reply given before a reset was still given.
    traffic.answered(machine.replies());
    driven?;
    match machine.action() {
        Action::Abort(ending) => Err(ending.error().into()),
        _ => {
            // Action::Close: the loop above ends only when the connection is done.
            close_gracefully(conn, &mut watchdog).await;
            Ok(())
        }
    }
}

/// The driver's byte counts for the close log line: plain additions, handed to the
/// connection's [`Traffic`] once, when the driver ends or is dropped (the end of the grace
/// period drops it mid-wait), where an atomic add per read and per write cost two locked
/// instructions a request.
struct Tally<'a> {
    traffic: &'a Traffic,
    received: u64,
    sent: u64,
}

impl<'a> Tally<'a> {
    fn new(traffic: &'a Traffic) -> Tally<'a> {
        Tally {
            traffic,
            received: 0,
            sent: 0,
        }
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        self.traffic.received(self.received as usize);
        self.traffic.sent(self.sent as usize);
    }
}

/// A connection's one timer, re-armed only when it fired or must fire sooner, and polled only
/// when the connection would otherwise wait and the timer does not hold its waker already.
/// Resetting a tokio timer around every read and write (`tokio::time::timeout`) touches the
/// timer wheel twice per request, and polling an armed timer at every wait still registers the
/// waker again; here a request that is read and answered at once never touches the timer at
/// all. The waker the timer holds stays good because one task polls the connection for its
/// whole life, and every waker of a tokio task wakes that task.
struct Watchdog {
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
    armed: Instant,
    /// Whether the timer holds this task's waker for `armed` (until it fires or is re-armed).
    registered: bool,
}

impl Watchdog {
    fn new(due: Instant) -> Watchdog {
        Watchdog {
            timer: Box::pin(tokio::time::sleep_until(due.into())),
            armed: due,
            registered: false,
        }
    }

    /// Ready, with the clock's reading, once `due` has passed; until then the task is woken
    /// at `due` at the latest (earlier when the timer was armed for an earlier deadline).
    #[inline]
    fn poll_due(&mut self, cx: &mut std::task::Context<'_>, due: Instant) -> Poll<Instant> {
        // The wait of almost every request: the timer holds the waker for an earlier deadline.
        if self.registered && due >= self.armed && !self.timer.is_elapsed() {
            return Poll::Pending;
        }
        self.poll_timer(cx, due)
    }

    /// [`Watchdog::poll_due`] when the timer must be re-armed or polled.
    #[inline(never)]
    fn poll_timer(&mut self, cx: &mut std::task::Context<'_>, due: Instant) -> Poll<Instant> {
        if due < self.armed {
            self.arm(due);
        }
        loop {
            if self.registered && !self.timer.is_elapsed() {
                return Poll::Pending;
            }
            // A poll counts as registered only if the task had coop budget left: without
            // budget, tokio's `Sleep` answers `Pending` without taking the waker (a flood of
            // writes spends the budget), and a poll skipped after that would never wake: a
            // peer that stopped reading was never closed at its write time-out.
            let budget = tokio::task::coop::has_budget_remaining();
            if self.timer.as_mut().poll(cx).is_pending() {
                self.registered = budget;
                return Poll::Pending;
            }
            self.registered = false;
            let now = Instant::now();
            if now >= due {
                return Poll::Ready(now);
            }
            self.arm(due); // it fired for an earlier deadline: wait for this one
        }
    }

    fn arm(&mut self, due: Instant) {
        self.timer.as_mut().reset(due.into());
        self.armed = due;
        self.registered = false;
    }
}

/// Lingering close ([`Linger`]) on the async engine: FIN, then drain until the peer's EOF,
/// waiting on the connection's own timer. (This and [`drain`] return their futures from plain
/// functions: an `async fn`'s future would hold each argument twice, in every idle connection's
/// task, where the driver's largest state is this one.)
#[allow(clippy::manual_async_fn)] // as for `until_forced`
fn close_gracefully<'a, S: AsyncRead + AsyncWrite + Unpin + ?Sized>(
    conn: &'a mut S,
    watchdog: &'a mut Watchdog,
) -> impl Future<Output = ()> + 'a {
    async move {
        if conn.shutdown().await.is_ok() {
            drain(conn, Linger::new(Instant::now()), watchdog).await;
        }
    }
}

/// The lingering close of an async handler's connection, after its FIN.
pub(crate) async fn linger<R: AsyncRead + Unpin + ?Sized>(reader: &mut R) {
    let linger = Linger::new(Instant::now());
    let mut watchdog = Watchdog::new(linger.deadline());
    drain(reader, linger, &mut watchdog).await;
}

/// What one read of a lingering close takes at most.
const LINGER_READ: usize = 4096;

/// The drain of a lingering close, after the FIN: reads and discards until the peer's EOF,
/// within [`Linger`]'s time and byte limits. The bytes go to this thread's read buffer, so a
/// connection holds no buffer and no second timer for it.
fn drain<'a, R: AsyncRead + Unpin + ?Sized>(
    reader: &'a mut R,
    mut linger: Linger,
    watchdog: &'a mut Watchdog,
) -> impl Future<Output = ()> + 'a {
    let deadline = linger.deadline();
    std::future::poll_fn(move |cx| {
        loop {
            let read = READ_BUFFER.with_borrow_mut(|buf| {
                if buf.len() < LINGER_READ {
                    buf.resize(LINGER_READ, 0);
                }
                poll_read_into(reader, cx, &mut buf[..LINGER_READ])
            });
            match read {
                Poll::Ready(Ok(n)) if linger.drained(n) => {}
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => return watchdog.poll_due(cx, deadline).map(drop),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A timer poll that tokio declined for want of coop budget (a flood of writes spends it)
    /// registered no waker: the watchdog must poll the timer again at the next wait, or the
    /// task would never wake at the deadline (a peer that stopped reading was never closed).
    #[tokio::test]
    async fn the_watchdog_wakes_its_task_at_the_deadline_after_a_poll_without_budget() {
        #[derive(Default)]
        struct Woken(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Woken {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let woken = Arc::new(Woken::default());
        let waker = std::task::Waker::from(woken.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let due = Instant::now() + std::time::Duration::from_millis(10);
        let mut watchdog = Watchdog::new(due + std::time::Duration::from_secs(3600));
        // This poll of the test's task spends its budget: tokio declines the timer's poll.
        while std::pin::pin!(tokio::task::coop::consume_budget())
            .poll(&mut cx)
            .is_ready()
        {}
        assert!(watchdog.poll_due(&mut cx, due).is_pending());
        tokio::task::yield_now().await; // the next poll of the task, with a fresh budget
        assert!(watchdog.poll_due(&mut cx, due).is_pending());
        let before = woken.0.load(Ordering::SeqCst);
        // The timer wheel fires the watchdog's deadline no later than this one.
        tokio::time::sleep_until((due + std::time::Duration::from_millis(1)).into()).await;
        assert!(
            woken.0.load(Ordering::SeqCst) > before,
            "the timer did not hold the waker: the task would never wake"
        );
        assert!(watchdog.poll_due(&mut cx, due).is_ready());
    }

    /// The memory of an idle connection is mostly its task: tokio's cell, 112 bytes of
    /// header around this future, rounded up to 128. The future is 768 bytes in a release
    /// build, 776 in a debug one (a 896-byte cell; 1.50 KB a connection in all, 5,000 held);
    /// the bound leaves ~70 bytes for the driver to grow and keeps the cell within 1,024. Each
    /// of the layouts this replaced passes it: an argument or the Context held twice (+88 to
    /// +120), the lingering close's own timer (+160), the handler's state inline (+600).
    #[test]
    fn the_idle_task_stays_small() {
        fn future_size<A, B, C, D, E, F: Future>(_: fn(A, B, &C, D, E) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let size = future_size(serve_conn);
        assert!(size <= 848, "serve_conn's future is {size} bytes");
    }

    /// What a TLS write leaves in rustls' buffer, because the socket was full when it was
    /// written, goes out once the socket has room, although the driver then waits to read:
    /// tokio-rustls' `poll_write` takes the plaintext and returns, and only a flush (or the
    /// next write) sends the rest. Without it the end of an echo stayed in the server until
    /// the peer sent again or the idle time-out closed the connection.
    #[cfg(feature = "tls")]
    #[tokio::test]
    async fn a_tls_reply_written_into_a_full_socket_reaches_a_peer_that_only_reads() {
        use crate::service::Service as _;
        use tokio::io::AsyncReadExt;
        const SENT: usize = 48 * 1024;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = crate::tls::ServerTls::self_signed(&["127.0.0.1".to_string()], &[]).unwrap();
        let server = tokio::spawn(async move {
            let (tcp, peer) = listener.accept().await.unwrap();
            // A small send buffer (fixed: no autotuning) makes the socket full well before
            // the reply ends, and rustls keeps the rest (up to 64 KiB).
            socket2::SockRef::from(&tcp)
                .set_send_buffer_size(4096)
                .unwrap();
            let mut conn = super::super::tls::TlsConn(tls.accept(tcp).await.unwrap());
            let session = crate::service::by_name("echo")
                .unwrap()
                .session(&crate::service::Context::new(Transport::Tcp, peer));
            let stats = Arc::new(ListenerStats::new("echo", "tls", true));
            let traffic = Traffic::new(&stats);
            let (limits, stopping) = (Limits::default(), AtomicBool::new(false));
            let _ = drive(session, &mut conn, &limits, &stopping, &traffic).await;
        });
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let options = crate::tls::ClientTlsOptions {
            insecure: true,
            ..Default::default()
        };
        let client = crate::tls::ClientTls::new(&options).unwrap();
        let name = rustls_pki_types::ServerName::IpAddress(addr.ip().into());
        let mut tls = client.connect(name, tcp).await.unwrap();
        // The whole request first (the server echoes into its buffers: nothing is read here
        // yet), then only reads: the peer sends nothing more, and keeps its side open.
        tls.write_all(&[b'x'; SENT]).await.unwrap();
        tls.flush().await.unwrap();
        let mut echoed = vec![0u8; SENT];
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tls.read_exact(&mut echoed),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(_))),
            "the echo stopped short of {SENT} bytes: {read:?}"
        );
        assert!(echoed.iter().all(|&b| b == b'x'));
        server.abort();
    }

    /// A read that does not fill the buffer must forget the readiness it used: otherwise the
    /// next wait returns at once, and a `recv` that fails with `EAGAIN` follows every request.
    #[tokio::test]
    async fn a_short_read_leaves_the_stream_waiting_for_new_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 64];
        client.write_all(b"hello").await.unwrap();
        let n = std::future::poll_fn(|cx| poll_read_into(&mut server, cx, &mut buf)).await;
        assert_eq!(n.unwrap(), 5);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            server.poll_read_ready(&mut cx).is_pending(),
            "readiness kept after a short read"
        );
        client.write_all(b"!").await.unwrap();
        let n = std::future::poll_fn(|cx| poll_read_into(&mut server, cx, &mut buf)).await;
        assert_eq!(n.unwrap(), 1);
        drop(client);
        let n = std::future::poll_fn(|cx| poll_read_into(&mut server, cx, &mut buf)).await;
        assert_eq!(n.unwrap(), 0, "EOF");
    }
}
