//! The socketserver API: request handlers for people who would rather write `handle()` than a
//! sans-IO state machine.
//!
//! Python's `socketserver` makes a server from an address and a handler class; each connection
//! (TCP) or datagram (UDP) gets a handler whose `handle()` serves it: one whole session on a
//! stream, one message on datagrams. socketkit keeps that shape:
//!
//! | Python                              | socketkit                                      |
//! |-------------------------------------|------------------------------------------------|
//! | `StreamRequestHandler`              | [`StreamHandler`] (blocking)                    |
//! | `self.rfile`, `self.wfile`          | [`StreamRequest::reader`], [`StreamRequest::writer`] |
//! | `DatagramRequestHandler`            | [`DatagramHandler`] (blocking)                  |
//! | `setup()`, `handle()`, `finish()`   | the same names; `finish` runs even when `handle` fails |
//! | `self.client_address`              | `request.peer()`                               |
//! | `server.verify_request`            | [`ServerBuilder::verify_request`](crate::ServerBuilder::verify_request) |
//! | `server.handle_error`              | [`ServerBuilder::handle_error`](crate::ServerBuilder::handle_error) |
//! | an asyncio-style handler            | [`AsyncStreamHandler`]                          |
//!
//! Which handler runs where: blocking handlers ([`StreamHandler`], [`DatagramHandler`]) run on
//! the thread engines (`sequential`, `threaded`, `pool`); [`AsyncStreamHandler`] runs on `async`;
//! sans-IO services ([`crate::service::Service`]) run everywhere. `bind()` refuses a
//! combination that cannot run.
//!
//! Python makes one handler *instance* per request; here one handler value serves every request
//! (`&self`), and per-request state lives in `handle`'s local variables.

use std::fmt;
use std::future::Future;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use crate::service::{Address, Context};

/// A blocking stream handler: `handle` serves one whole connection.
///
/// # Examples
///
/// A line-reversing service:
///
/// ```
/// use std::io::{self, BufRead, Write};
/// use socketkit::handler::{StreamHandler, StreamRequest};
///
/// struct Reverse;
///
/// impl StreamHandler for Reverse {
///     fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
///         let mut line = String::new();
///         while request.reader().read_line(&mut line)? > 0 {
///             let reversed: String = line.trim_end().chars().rev().collect();
///             writeln!(request.writer(), "{reversed}")?;
///             request.writer().flush()?;
///             line.clear();
///         }
///         Ok(())
///     }
/// }
/// ```
#[doc(alias = "StreamRequestHandler")]
#[doc(alias = "BaseRequestHandler")]
pub trait StreamHandler: Send + Sync + 'static {
    /// Called before [`StreamHandler::handle`]; an error skips `handle` (but not `finish`).
    fn setup(&self, _request: &mut StreamRequest<'_>) -> io::Result<()> {
        Ok(())
    }

    /// Serves the whole connection. Return when done: the server flushes the writer and
    /// closes the connection.
    fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()>;

    /// Called after `handle`, even when `setup` or `handle` failed.
    fn finish(&self, _request: &mut StreamRequest<'_>) -> io::Result<()> {
        Ok(())
    }
}

/// One stream connection, as a [`StreamHandler`] sees it: a buffered reader and writer over
/// the socket (Python's `makefile`), the peer's address and the request's context.
///
/// Reads wait at most the server's idle time-out and end when the shutdown grace period is
/// over (both as an [`io::Error`]); a write fails once the peer has read nothing for the write
/// time-out. The per-message deadline is the handler's own affair: only it knows where its
/// messages end.
pub struct StreamRequest<'a> {
    ctx: &'a Context,
    reader: Reader<'a>,
    writer: Writer<'a>,
}

impl<'a> StreamRequest<'a> {
    pub(crate) fn new(
        ctx: &'a Context,
        read: Box<dyn Read + Send + 'a>,
        write: Box<dyn Write + Send + 'a>,
    ) -> StreamRequest<'a> {
        StreamRequest {
            ctx,
            reader: Reader(BufReader::new(read)),
            writer: Writer(BufWriter::new(write)),
        }
    }

    /// The buffered reader (`self.rfile` in Python).
    #[doc(alias = "rfile")]
    pub fn reader(&mut self) -> &mut Reader<'a> {
        &mut self.reader
    }

    /// The buffered writer (`self.wfile` in Python). Flush it when a reply must go out now.
    #[doc(alias = "wfile")]
    pub fn writer(&mut self) -> &mut Writer<'a> {
        &mut self.writer
    }

    /// Both halves at once, to read and write in one loop.
    pub fn split(&mut self) -> (&mut Reader<'a>, &mut Writer<'a>) {
        (&mut self.reader, &mut self.writer)
    }

    /// The peer's address.
    #[doc(alias = "client_address")]
    pub fn peer(&self) -> &Address {
        &self.ctx.peer
    }

    /// Everything known about the request.
    pub fn context(&self) -> &Context {
        self.ctx
    }

    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// The reading half of a [`StreamRequest`]: [`Read`] and [`BufRead`].
pub struct Reader<'a>(BufReader<Box<dyn Read + Send + 'a>>);

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl BufRead for Reader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.0.fill_buf()
    }
    fn consume(&mut self, amount: usize) {
        self.0.consume(amount)
    }
}

/// The writing half of a [`StreamRequest`]: a buffered [`Write`].
pub struct Writer<'a>(BufWriter<Box<dyn Write + Send + 'a>>);

impl Write for Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// A blocking datagram handler: `handle` serves one datagram.
///
/// # Examples
///
/// ```
/// use std::io;
/// use socketkit::handler::{DatagramHandler, DatagramRequest};
///
/// struct Echo;
///
/// impl DatagramHandler for Echo {
///     fn handle(&self, request: &mut DatagramRequest<'_>) -> io::Result<()> {
///         let data = request.data().to_vec();
///         request.reply(&data)
///     }
/// }
/// ```
#[doc(alias = "DatagramRequestHandler")]
pub trait DatagramHandler: Send + Sync + 'static {
    /// Serves one datagram; reply with [`DatagramRequest::reply`], as often as needed.
    fn handle(&self, request: &mut DatagramRequest<'_>) -> io::Result<()>;
}

/// One datagram, as a [`DatagramHandler`] sees it.
pub struct DatagramRequest<'a> {
    pub(crate) data: &'a [u8],
    pub(crate) ctx: &'a Context,
    pub(crate) send: &'a (dyn Fn(&[u8]) -> io::Result<()> + Sync),
}

impl DatagramRequest<'_> {
    /// The datagram's bytes.
    pub fn data(&self) -> &[u8] {
        self.data
    }

    /// The peer's address.
    #[doc(alias = "client_address")]
    pub fn peer(&self) -> &Address {
        &self.ctx.peer
    }

    /// Everything known about the request.
    pub fn context(&self) -> &Context {
        self.ctx
    }

    /// Sends one datagram back to the peer.
    ///
    /// # Errors
    ///
    /// When the reply exceeds the server's datagram limit, or the system cannot send it.
    #[doc(alias = "sendto")]
    pub fn reply(&mut self, bytes: &[u8]) -> io::Result<()> {
        (self.send)(bytes)
    }
}

/// An async stream handler, for the async engine.
///
/// # Examples
///
/// ```
/// use std::io;
/// use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
/// use socketkit::handler::{AsyncStreamHandler, AsyncStreamRequest};
///
/// struct Shout;
///
/// impl AsyncStreamHandler for Shout {
///     async fn handle(&self, request: &mut AsyncStreamRequest) -> io::Result<()> {
///         let mut line = String::new();
///         while request.reader().read_line(&mut line).await? > 0 {
///             let reply = line.to_uppercase();
///             request.writer().write_all(reply.as_bytes()).await?;
///             request.writer().flush().await?;
///             line.clear();
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait AsyncStreamHandler: Send + Sync + 'static {
    /// Called before `handle`; an error skips `handle` (but not `finish`).
    fn setup(
        &self,
        _request: &mut AsyncStreamRequest,
    ) -> impl Future<Output = io::Result<()>> + Send {
        async { Ok(()) }
    }

    /// Serves the whole connection.
    fn handle(
        &self,
        request: &mut AsyncStreamRequest,
    ) -> impl Future<Output = io::Result<()>> + Send;

    /// Called after `handle`, even when `setup` or `handle` failed.
    fn finish(
        &self,
        _request: &mut AsyncStreamRequest,
    ) -> impl Future<Output = io::Result<()>> + Send {
        async { Ok(()) }
    }
}

type AsyncReadHalf = tokio::io::ReadHalf<Box<dyn AsyncStream>>;
type AsyncWriteHalf = tokio::io::WriteHalf<Box<dyn AsyncStream>>;

/// A tokio stream of any transport.
pub(crate) trait AsyncStream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> AsyncStream for T {}

/// One stream connection, as an [`AsyncStreamHandler`] sees it.
pub struct AsyncStreamRequest {
    ctx: Context,
    reader: tokio::io::BufReader<IdleRead<AsyncReadHalf>>,
    writer: tokio::io::BufWriter<StallWrite<AsyncWriteHalf>>,
}

impl AsyncStreamRequest {
    pub(crate) fn new(
        ctx: Context,
        stream: Box<dyn AsyncStream>,
        limits: &crate::Limits,
    ) -> AsyncStreamRequest {
        let (read, write) = tokio::io::split(stream);
        AsyncStreamRequest {
            ctx,
            reader: tokio::io::BufReader::new(IdleRead::new(read, limits.idle_timeout)),
            writer: tokio::io::BufWriter::new(StallWrite::new(write, limits.write_timeout)),
        }
    }

    /// The buffered reader; a read that waits longer than the idle time-out fails.
    #[doc(alias = "rfile")]
    pub fn reader(&mut self) -> &mut (impl tokio::io::AsyncBufRead + Unpin + Send + use<>) {
        &mut self.reader
    }

    /// The buffered writer. Flush it when a reply must go out now. A write fails with
    /// `TimedOut` once the peer has read nothing for the write time-out.
    #[doc(alias = "wfile")]
    pub fn writer(&mut self) -> &mut (impl tokio::io::AsyncWrite + Unpin + Send + use<>) {
        &mut self.writer
    }

    /// The peer's address.
    #[doc(alias = "client_address")]
    pub fn peer(&self) -> &Address {
        &self.ctx.peer
    }

    /// Everything known about the request.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    pub(crate) async fn close(&mut self) -> io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        self.writer.flush().await?;
        self.writer.shutdown().await?;
        // Lingering close: wait briefly for the peer's EOF, so unread input cannot turn the
        // close into a reset that destroys the reply in flight.
        let mut buf = vec![0u8; 4096]; // on the heap: an array here would sit in every connection's future
        let drain = async { while matches!(self.reader.read(&mut buf).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
        Ok(())
    }
}

/// A reader whose every read fails with `TimedOut` after `idle` without data.
pub(crate) struct IdleRead<R> {
    inner: R,
    idle: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<R> IdleRead<R> {
    fn new(inner: R, idle: std::time::Duration) -> IdleRead<R> {
        IdleRead {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for IdleRead<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(result)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("idle for {:?}", this.idle),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// A writer whose write, flush or shutdown fails with `TimedOut` once it has made no progress
/// for `limit` (a peer that stopped reading). The timer is armed only when a write blocks.
pub(crate) struct StallWrite<W> {
    inner: W,
    limit: std::time::Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    blocked: bool,
}

impl<W> StallWrite<W> {
    fn new(inner: W, limit: std::time::Duration) -> StallWrite<W> {
        StallWrite {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            blocked: false,
        }
    }

    /// Passes `polled` through, and turns a wait longer than the limit into an error.
    fn guard<T>(
        &mut self,
        cx: &mut TaskContext<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(result) => {
                self.blocked = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !self.blocked {
                    self.blocked = true;
                    let deadline = tokio::time::Instant::now() + self.limit;
                    self.timer.as_mut().reset(deadline);
                }
                match self.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(crate::engine::write_timed_out(self.limit))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for StallWrite<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.guard(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.guard(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.guard(cx, polled)
    }
}

/// An [`AsyncStreamHandler`] with its futures boxed, so a server can hold any one.
pub(crate) trait DynAsyncHandler: Send + Sync + 'static {
    fn run<'a>(
        &'a self,
        request: &'a mut AsyncStreamRequest,
    ) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>>;
}

impl<H: AsyncStreamHandler> DynAsyncHandler for H {
    fn run<'a>(
        &'a self,
        request: &'a mut AsyncStreamRequest,
    ) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>> {
        Box::pin(async move {
            let mut result = self.setup(request).await;
            if result.is_ok() {
                result = self.handle(request).await;
            }
            let finished = self.finish(request).await;
            result.and(finished)
        })
    }
}

/// Runs a blocking handler's lifecycle: setup, handle, finish (always), flush.
pub(crate) fn run_stream_handler(
    handler: &dyn StreamHandler,
    request: &mut StreamRequest<'_>,
) -> io::Result<()> {
    let mut result = handler.setup(request);
    if result.is_ok() {
        result = handler.handle(request);
    }
    let finished = handler.finish(request);
    result.and(finished).and_then(|()| request.flush())
}

/// What went wrong in one connection or datagram, as [`crate::ServerBuilder::handle_error`] sees it.
#[derive(Debug)]
#[non_exhaustive]
pub enum HandlerError {
    /// The handler, the session or the connection failed with an I/O error (a time-out, a
    /// reset, an error the handler returned).
    Io(io::Error),
    /// The handler or service panicked; the message, when it was a string.
    Panic(String),
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerError::Io(e) => write!(f, "{e}"),
            HandlerError::Panic(message) => write!(f, "panicked: {message}"),
        }
    }
}

impl std::error::Error for HandlerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandlerError::Io(e) => Some(e),
            HandlerError::Panic(_) => None,
        }
    }
}

impl HandlerError {
    /// The panic payload as text.
    pub(crate) fn from_panic(payload: Box<dyn std::any::Any + Send>) -> HandlerError {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string panic payload".into());
        HandlerError::Panic(message)
    }
}

/// A future that turns a panic while polling into an error, so one connection's panic stays
/// in that connection (tokio would otherwise swallow it silently inside the task).
pub(crate) struct CatchUnwind<F: ?Sized>(pub(crate) Pin<Box<F>>);

impl<F: Future + ?Sized> Future for CatchUnwind<F> {
    type Output = Result<F::Output, HandlerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(HandlerError::from_panic(payload))),
        }
    }
}
