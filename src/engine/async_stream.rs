//! One stream connection on the async engine: its task, the driver loop that obeys
//! [`super::conn::Connection`] with `.await`, its one timer, and lingering close. The rules are
//! in `conn.rs`; this file only moves bytes and waits.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::OwnedSemaphorePermit;

use super::conn::{Action, Connection, Event, Linger, grace_over};
use super::{SessionError, Shared, Traffic};
use crate::Limits;
use crate::handler::{AsyncStream, AsyncStreamRequest, CatchUnwind};
use crate::service::{Context, StreamSession};

/// An accepted connection, kept concrete so the session path can wait for readiness without
/// holding a buffer.
pub(crate) enum Conn {
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
/// panic is caught here and reported like any other failure of this connection alone. The
/// server's stop reaches the driver through a flag (see [`stopping`]); the end of the grace
/// period drops the connection here ([`Event::GraceOver`]'s rule: close at once).
pub(crate) async fn serve_conn(
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
                    Ok(Ok(())) => {
                        request.close().await?;
                        linger(request.reader()).await;
                        Ok(())
                    }
                    Ok(Err(e)) => Err(SessionError::Io(e)),
                    Err(panic) => Err(SessionError::Panic(panic)),
                }
            }
            None => {
                let session = shared.session(&ctx);
                let limits = &shared.limits;
                let driven = match conn {
                    Conn::Tcp(mut s) => {
                        let driven = drive(session, &mut s, limits, &stopping, &traffic);
                        CatchUnwind(Box::pin(driven)).await
                    }
                    Conn::Unix(mut s) => {
                        let driven = drive(session, &mut s, limits, &stopping, &traffic);
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
            // Polling `work` again lets its session see the flag (see `stopping`).
            stopping.store(true, Ordering::Relaxed);
            tokio::select! {
                () = shared.force.fired() => Err(SessionError::Io(grace_over())),
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
    Deadline,
    Stopping,
}

/// The async driver: [`Connection`]'s rules, with `.await`. Each wake-up ends in one read
/// without waiting (`try_read`), which also serves a request that arrived as the deadline
/// passed or the server stopped (the reactor may not have reported it yet).
async fn drive<S: ReadReady>(
    session: Box<dyn StreamSession>,
    conn: &mut S,
    limits: &Limits,
    stop_flag: &AtomicBool,
    traffic: &Traffic,
) -> Result<(), SessionError> {
    let mut machine = Connection::new(session, limits, Instant::now());
    let mut watchdog = Watchdog::new(Instant::now() + limits.idle_timeout);
    loop {
        let (deadline, stopped) = match machine.action() {
            Action::Write { bytes, deadline } => {
                let event = tokio::select! {
                    biased;
                    n = conn.write(bytes) => match n? {
                        0 => return Err(SessionError::Io(io::ErrorKind::WriteZero.into())),
                        n => {
                            traffic.sent(n);
                            Event::Wrote(n)
                        }
                    },
                    () = watchdog.until(deadline) => Event::Deadline,
                };
                machine.handle(event, Instant::now());
                continue;
            }
            Action::Read { deadline, .. } => (deadline, machine.is_stopping()),
            Action::Close => {
                close_gracefully(conn).await;
                return Ok(());
            }
            Action::Abort(ending) => return Err(ending.error().into()),
        };
        let wake = tokio::select! {
            biased;
            ready = std::future::poll_fn(|cx| conn.poll_ready(cx)) => {
                ready?;
                Wake::Readable
            }
            () = watchdog.until(deadline) => Wake::Deadline,
            () = stopping(stop_flag), if !stopped => Wake::Stopping,
        };
        if let Wake::Stopping = wake {
            machine.handle(Event::ShutdownBegun, Instant::now());
        }
        let read = READ_BUFFER.with_borrow_mut(|buf| {
            buf.resize(limits.read_buffer, 0);
            let event = match conn.read_now(buf) {
                Ok(0) => Event::Eof,
                Ok(n) => {
                    traffic.received(n);
                    Event::Read(&buf[..n])
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    match wake {
                        Wake::Deadline => Event::Deadline,
                        Wake::Readable | Wake::Stopping => return Ok(()), // wait again
                    }
                }
                Err(e) => return Err(e),
            };
            machine.handle(event, Instant::now());
            Ok(())
        });
        read?;
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

/// Lingering close ([`Linger`]) on the async engine: FIN, then drain until the peer's EOF.
async fn close_gracefully<S: AsyncRead + AsyncWrite + Unpin + ?Sized>(conn: &mut S) {
    if conn.shutdown().await.is_ok() {
        linger(conn).await;
    }
}

/// The drain of a lingering close, after the FIN: reads and discards until the peer's EOF,
/// within [`Linger`]'s time and byte limits. Async handlers' connections end with it too.
pub(crate) async fn linger<R: AsyncRead + Unpin + ?Sized>(reader: &mut R) {
    let mut linger = Linger::new(Instant::now());
    let deadline = linger.deadline();
    let mut buf = vec![0u8; 4096]; // on the heap: an array here would sit in every connection's future
    let drain = async {
        while let Ok(n) = reader.read(&mut buf).await {
            if !linger.drained(n) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline.into(), drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

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
