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
//!
//! # What is bounded for a handler
//!
//! The server bounds what it can see from outside: every read waits at most the idle
//! time-out, every write at most the write time-out, and the grace period ends both. Where a
//! handler's messages end only the handler knows, so the message limits apply to the bounded
//! reads it asks for: [`StreamRequest::read_line`] (and `read_line_bytes`) hold at most
//! [`Limits::max_line`](crate::Limits::max_line) bytes of a line plus its terminator, and
//! [`StreamRequest::read_frame`] checks the length header against
//! [`Limits::max_frame`](crate::Limits::max_frame) before it keeps a byte of the payload (which
//! then grows only as its bytes arrive). Both fail with [`io::ErrorKind::InvalidData`] (the
//! source is a [`FrameError`] naming the limit) when a message is too long, and with
//! [`io::ErrorKind::TimedOut`] when a message begun is not whole within
//! [`Limits::message_timeout`](crate::Limits::message_timeout); [`AsyncStreamRequest`] has the
//! same three. What a handler reads through the raw [`StreamRequest::reader`] (`lines()`,
//! `read_to_end`, `read_line` of [`BufRead`]) is bounded by nothing but the idle time-out: the
//! memory it takes is the handler's own responsibility.

use std::fmt;
use std::future::Future;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use crate::codec::{FrameError, LengthWidth};
use crate::service::{Address, Context};

/// A blocking stream handler: `handle` serves one whole connection.
///
/// # Examples
///
/// A line-reversing service (a line longer than [`Limits::max_line`](crate::Limits::max_line)
/// ends the connection with an error):
///
/// ```
/// use std::io::{self, Write};
/// use socketkit::handler::{StreamHandler, StreamRequest};
///
/// struct Reverse;
///
/// impl StreamHandler for Reverse {
///     fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
///         let mut line = String::new();
///         while request.read_line(&mut line)? > 0 {
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
/// time-out. [`read_line`](StreamRequest::read_line) and
/// [`read_frame`](StreamRequest::read_frame) also bound the message's size and time (see
/// [the module docs](self#what-is-bounded-for-a-handler)); reads through
/// [`reader`](StreamRequest::reader) do not.
pub struct StreamRequest<'a> {
    ctx: &'a Context,
    reader: Reader<'a>,
    writer: Writer<'a>,
    bounds: Bounds,
}

impl<'a> StreamRequest<'a> {
    pub(crate) fn new(
        ctx: &'a Context,
        read: Box<dyn SocketRead + 'a>,
        write: Box<dyn Write + Send + 'a>,
        limits: &crate::Limits,
    ) -> StreamRequest<'a> {
        StreamRequest {
            ctx,
            reader: Reader(BufReader::new(read)),
            writer: Writer(BufWriter::new(write)),
            bounds: Bounds::new(limits),
        }
    }

    /// The buffered reader (`self.rfile` in Python), for reads the handler bounds itself: a
    /// line read through it (`lines()`, [`BufRead::read_line`]) grows for as long as the peer
    /// sends without a newline. Prefer [`read_line`](StreamRequest::read_line) and
    /// [`read_frame`](StreamRequest::read_frame), which share its buffer.
    #[doc(alias = "rfile")]
    pub fn reader(&mut self) -> &mut Reader<'a> {
        &mut self.reader
    }

    /// Reads one line, terminator included, and appends it to `line`, like
    /// [`BufRead::read_line`] (Python's `rfile.readline()`), but bounded: at most
    /// [`Limits::max_line`](crate::Limits::max_line) bytes before the `\n` or `\r\n` are held,
    /// and a line begun must be whole within
    /// [`Limits::message_timeout`](crate::Limits::message_timeout). Returns the bytes read, 0
    /// at the end of the stream; a last line without newline is returned as it is.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::io::{self, Write};
    /// # use socketkit::handler::{StreamHandler, StreamRequest};
    /// # struct Greet;
    /// impl StreamHandler for Greet {
    ///     fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
    ///         let mut name = String::new();
    ///         request.read_line(&mut name)?;
    ///         writeln!(request.writer(), "hello, {}", name.trim_end())
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidData`] for a line over the limit (its source is
    /// [`FrameError::LineTooLong`]) or one that is not UTF-8; [`io::ErrorKind::TimedOut`] when
    /// the message deadline or the idle time-out passes; any error of the socket. After an
    /// error the stream is at an unknown point: end the connection (return the error).
    pub fn read_line(&mut self, line: &mut String) -> io::Result<usize> {
        let mut bytes = Vec::new();
        let n = self.read_line_bytes(&mut bytes)?;
        line.push_str(&utf8(bytes)?);
        Ok(n)
    }

    /// [`read_line`](StreamRequest::read_line) for bytes that need not be UTF-8: appends the
    /// line, terminator included, to `line`.
    ///
    /// # Errors
    ///
    /// As [`read_line`](StreamRequest::read_line), except that any bytes are accepted.
    pub fn read_line_bytes(&mut self, line: &mut Vec<u8>) -> io::Result<usize> {
        let max_line = self.bounds.max_line;
        self.read_bounded(LineScan::new(line, max_line))
    }

    /// Reads one length-delimited frame (a big-endian header of `width`, then that many bytes)
    /// and returns its payload; `None` at the end of the stream before a header. A header
    /// announcing more than [`Limits::max_frame`](crate::Limits::max_frame) bytes fails before
    /// anything is reserved; the payload's memory grows only as its bytes arrive. The whole
    /// frame must arrive within [`Limits::message_timeout`](crate::Limits::message_timeout) of
    /// its first byte.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::io::{self, Write};
    /// use socketkit::codec::LengthWidth;
    /// # use socketkit::handler::{StreamHandler, StreamRequest};
    /// # struct Echo;
    /// impl StreamHandler for Echo {
    ///     fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
    ///         while let Some(frame) = request.read_frame(LengthWidth::U32)? {
    ///             let header = u32::try_from(frame.len()).expect("at most max_frame");
    ///             request.writer().write_all(&header.to_be_bytes())?;
    ///             request.writer().write_all(&frame)?;
    ///             request.writer().flush()?;
    ///         }
    ///         Ok(())
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidData`] for a frame over the limit (its source is
    /// [`FrameError::FrameTooLong`]); [`io::ErrorKind::UnexpectedEof`] when the stream ends
    /// inside a frame; [`io::ErrorKind::TimedOut`] as for
    /// [`read_line`](StreamRequest::read_line).
    pub fn read_frame(&mut self, width: LengthWidth) -> io::Result<Option<Vec<u8>>> {
        let max_frame = self.bounds.max_frame;
        self.read_bounded(FrameScan::new(width, max_frame))
    }

    /// Feeds `scan` from the reader's buffer until its message is whole, the message deadline
    /// running from the first byte taken; the socket's reads wait no longer than it.
    fn read_bounded<S: Scan>(&mut self, mut scan: S) -> io::Result<S::Output> {
        let message_timeout = self.bounds.message_timeout;
        let mut deadline = None;
        let result = loop {
            if let Some(output) = scan.whole() {
                break Ok(output);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Err(message_timed_out(message_timeout));
            }
            let taken = match self.reader.0.fill_buf() {
                Ok([]) => break scan.eof(),
                Ok(available) => scan.take(available),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    break Err(if e.kind() == io::ErrorKind::TimedOut {
                        message_timed_out(message_timeout)
                    } else {
                        e
                    });
                }
                Err(e) => Err(e),
            };
            match taken {
                Ok(n) => self.reader.0.consume(n),
                Err(e) => break Err(e),
            }
            if deadline.is_none() {
                let at = Instant::now() + message_timeout;
                deadline = Some(at);
                self.reader.0.get_mut().set_deadline(Some(at));
            }
        };
        if deadline.is_some() {
            self.reader.0.get_mut().set_deadline(None);
        }
        result
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

/// The socket under a [`StreamRequest`]'s reader: its reads can be cut short at a message
/// deadline, which only the request knows.
pub(crate) trait SocketRead: Read + Send {
    /// From now on, a read that would wait past `deadline` fails with `TimedOut`; `None`
    /// leaves only the reader's own time-outs.
    fn set_deadline(&mut self, deadline: Option<Instant>);
}

/// The reading half of a [`StreamRequest`]: [`Read`] and [`BufRead`], bounded only by the idle
/// time-out (see [`StreamRequest::reader`]).
pub struct Reader<'a>(BufReader<Box<dyn SocketRead + 'a>>);

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
/// use tokio::io::AsyncWriteExt;
/// use socketkit::handler::{AsyncStreamHandler, AsyncStreamRequest};
///
/// struct Shout;
///
/// impl AsyncStreamHandler for Shout {
///     async fn handle(&self, request: &mut AsyncStreamRequest) -> io::Result<()> {
///         let mut line = String::new();
///         while request.read_line(&mut line).await? > 0 {
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

/// One stream connection, as an [`AsyncStreamHandler`] sees it. Its
/// [`read_line`](AsyncStreamRequest::read_line) and
/// [`read_frame`](AsyncStreamRequest::read_frame) are bounded like [`StreamRequest`]'s (see
/// [the module docs](self#what-is-bounded-for-a-handler)); reads through
/// [`reader`](AsyncStreamRequest::reader) only by the idle time-out.
///
/// Its state is boxed: the engine's task for every connection reserves room for it, so inline
/// it would cost each connection of a service, which never uses it, its 288 bytes.
pub struct AsyncStreamRequest(Box<AsyncRequestParts>);

struct AsyncRequestParts {
    ctx: Context,
    reader: tokio::io::BufReader<IdleRead<AsyncReadHalf>>,
    writer: tokio::io::BufWriter<StallWrite<AsyncWriteHalf>>,
    bounds: Bounds,
}

impl AsyncStreamRequest {
    pub(crate) fn new(
        ctx: Context,
        stream: Box<dyn AsyncStream>,
        limits: &crate::Limits,
    ) -> AsyncStreamRequest {
        let (read, write) = tokio::io::split(stream);
        AsyncStreamRequest(Box::new(AsyncRequestParts {
            ctx,
            reader: tokio::io::BufReader::new(IdleRead::new(read, limits.idle_timeout)),
            writer: tokio::io::BufWriter::new(StallWrite::new(write, limits.write_timeout)),
            bounds: Bounds::new(limits),
        }))
    }

    /// The buffered reader; a read that waits longer than the idle time-out fails. Nothing
    /// else bounds it: a line read through it grows for as long as the peer sends without a
    /// newline. Prefer [`read_line`](AsyncStreamRequest::read_line) and
    /// [`read_frame`](AsyncStreamRequest::read_frame), which share its buffer.
    #[doc(alias = "rfile")]
    pub fn reader(&mut self) -> &mut (impl tokio::io::AsyncBufRead + Unpin + Send + use<>) {
        &mut self.0.reader
    }

    /// Reads one line into `line`, bounded by the line limit and the message deadline:
    /// [`StreamRequest::read_line`], awaited.
    ///
    /// # Errors
    ///
    /// As [`StreamRequest::read_line`].
    pub async fn read_line(&mut self, line: &mut String) -> io::Result<usize> {
        let mut bytes = Vec::new();
        let n = self.read_line_bytes(&mut bytes).await?;
        line.push_str(&utf8(bytes)?);
        Ok(n)
    }

    /// [`StreamRequest::read_line_bytes`], awaited.
    ///
    /// # Errors
    ///
    /// As [`StreamRequest::read_line`], except that any bytes are accepted.
    pub async fn read_line_bytes(&mut self, line: &mut Vec<u8>) -> io::Result<usize> {
        let max_line = self.0.bounds.max_line;
        self.read_bounded(LineScan::new(line, max_line)).await
    }

    /// Reads one length-delimited frame, bounded by the frame limit and the message deadline:
    /// [`StreamRequest::read_frame`], awaited.
    ///
    /// # Errors
    ///
    /// As [`StreamRequest::read_frame`].
    pub async fn read_frame(&mut self, width: LengthWidth) -> io::Result<Option<Vec<u8>>> {
        let max_frame = self.0.bounds.max_frame;
        self.read_bounded(FrameScan::new(width, max_frame)).await
    }

    /// [`StreamRequest::read_bounded`], awaited: the deadline cuts a read short.
    async fn read_bounded<S: Scan + Send>(&mut self, mut scan: S) -> io::Result<S::Output> {
        use tokio::io::AsyncBufReadExt;
        let message_timeout = self.0.bounds.message_timeout;
        let mut deadline = None;
        loop {
            if let Some(output) = scan.whole() {
                return Ok(output);
            }
            // A timeout polls its future first: data that is always ready would never expire it.
            if deadline.is_some_and(|at| tokio::time::Instant::now() >= at) {
                return Err(message_timed_out(message_timeout));
            }
            let filled = match deadline {
                None => self.0.reader.fill_buf().await,
                Some(at) => tokio::time::timeout_at(at, self.0.reader.fill_buf())
                    .await
                    .map_err(|_| message_timed_out(message_timeout))?,
            };
            let taken = match filled? {
                [] => return scan.eof(),
                available => scan.take(available)?,
            };
            self.0.reader.consume(taken);
            deadline.get_or_insert_with(|| tokio::time::Instant::now() + message_timeout);
        }
    }

    /// The buffered writer. Flush it when a reply must go out now. A write fails with
    /// `TimedOut` once the peer has read nothing for the write time-out.
    #[doc(alias = "wfile")]
    pub fn writer(&mut self) -> &mut (impl tokio::io::AsyncWrite + Unpin + Send + use<>) {
        &mut self.0.writer
    }

    /// The peer's address.
    #[doc(alias = "client_address")]
    pub fn peer(&self) -> &Address {
        &self.0.ctx.peer
    }

    /// Everything known about the request.
    pub fn context(&self) -> &Context {
        &self.0.ctx
    }

    ///
    /// Boxed, like the request itself: this future's 208 bytes would otherwise sit in every
    /// connection's task.
    pub(crate) fn close(&mut self) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + '_>> {
        Box::pin(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            self.0.writer.flush().await?;
            self.0.writer.shutdown().await?;
            // Lingering close: wait briefly for the peer's EOF, so unread input cannot turn the
            // close into a reset that destroys the reply in flight.
            let mut buf = vec![0u8; 4096]; // on the heap: an array here would sit in every connection's future
            let drain =
                async { while matches!(self.0.reader.read(&mut buf).await, Ok(n) if n > 0) {} };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), drain).await;
            Ok(())
        })
    }
}

/// The limits a request's bounded reads obey, copied from the server's.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    max_line: usize,
    max_frame: usize,
    message_timeout: Duration,
}

impl Bounds {
    fn new(limits: &crate::Limits) -> Bounds {
        Bounds {
            max_line: limits.max_line,
            max_frame: limits.max_frame,
            message_timeout: limits.message_timeout,
        }
    }
}

fn message_timed_out(deadline: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("a message was not whole within the message deadline of {deadline:?}"),
    )
}

fn utf8(bytes: Vec<u8>) -> io::Result<String> {
    String::from_utf8(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

/// One message being read, a buffer at a time, free of I/O: the blocking and async requests
/// drive the same scans.
trait Scan {
    /// What the read returns.
    type Output;
    /// The message, once whole (asked before every read, so an empty frame needs none).
    fn whole(&mut self) -> Option<Self::Output>;
    /// Takes what belongs to the message from the front of `available` (never empty) and
    /// returns how many bytes that was; fails once the message is over its limit.
    fn take(&mut self, available: &[u8]) -> io::Result<usize>;
    /// The stream ended before the message was whole.
    fn eof(&mut self) -> io::Result<Self::Output>;
}

/// A line of at most `max_line` bytes before its terminator: never more than `max_line + 2`
/// bytes (a `\r\n` line) are taken, so a line that never ends costs no more than that.
struct LineScan<'b> {
    line: &'b mut Vec<u8>,
    max_line: usize,
    taken: usize,
    done: bool,
}

impl<'b> LineScan<'b> {
    fn new(line: &'b mut Vec<u8>, max_line: usize) -> LineScan<'b> {
        LineScan {
            line,
            max_line,
            taken: 0,
            done: false,
        }
    }

    fn too_long(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            FrameError::LineTooLong {
                limit: self.max_line,
            },
        )
    }

    /// Fails when the line taken has more than `max_line` bytes before its terminator.
    fn check(&self, terminator: usize) -> io::Result<usize> {
        if self.taken - terminator > self.max_line {
            return Err(self.too_long());
        }
        Ok(self.taken)
    }
}

impl Scan for LineScan<'_> {
    type Output = usize;

    fn whole(&mut self) -> Option<usize> {
        self.done.then_some(self.taken)
    }

    fn take(&mut self, available: &[u8]) -> io::Result<usize> {
        let cap = self.max_line.saturating_add(2);
        let window = &available[..available.len().min(cap - self.taken)];
        let (n, done) = match window.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (window.len(), false),
        };
        self.line.extend_from_slice(&window[..n]);
        self.taken += n;
        if done {
            let crlf = self.taken >= 2 && self.line.ends_with(b"\r\n");
            self.check(if crlf { 2 } else { 1 })?;
            self.done = true;
        } else if self.taken == cap {
            return Err(self.too_long());
        }
        Ok(n)
    }

    fn eof(&mut self) -> io::Result<usize> {
        self.check(0)
    }
}

/// A length-delimited frame: the header is checked against the limit before a byte of the
/// payload is kept, and the payload's memory grows with the bytes received, never past the
/// size announced (at most twice what has arrived).
struct FrameScan {
    width: usize,
    limit: usize,
    header: [u8; 4],
    header_taken: usize,
    size: Option<usize>,
    payload: Vec<u8>,
}

impl FrameScan {
    fn new(width: LengthWidth, max_frame: usize) -> FrameScan {
        FrameScan {
            width: width.bytes(),
            limit: max_frame.min(usize::try_from(width.max_payload()).unwrap_or(usize::MAX)),
            header: [0; 4],
            header_taken: 0,
            size: None,
            payload: Vec::new(),
        }
    }
}

impl Scan for FrameScan {
    type Output = Option<Vec<u8>>;

    fn whole(&mut self) -> Option<Option<Vec<u8>>> {
        (self.size == Some(self.payload.len())).then(|| Some(std::mem::take(&mut self.payload)))
    }

    fn take(&mut self, available: &[u8]) -> io::Result<usize> {
        let Some(size) = self.size else {
            let n = (self.width - self.header_taken).min(available.len());
            self.header[self.header_taken..self.header_taken + n].copy_from_slice(&available[..n]);
            self.header_taken += n;
            if self.header_taken == self.width {
                let announced = self.header[..self.width]
                    .iter()
                    .fold(0u64, |size, &b| (size << 8) | u64::from(b));
                if announced > self.limit as u64 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        FrameError::FrameTooLong {
                            size: announced,
                            limit: self.limit,
                        },
                    ));
                }
                self.size = Some(announced as usize); // within the limit, a usize
            }
            return Ok(n);
        };
        let n = (size - self.payload.len()).min(available.len());
        let needed = self.payload.len() + n;
        if needed > self.payload.capacity() {
            let grown = needed.max(self.payload.capacity() * 2).min(size);
            self.payload.reserve_exact(grown - self.payload.len());
        }
        self.payload.extend_from_slice(&available[..n]);
        Ok(n)
    }

    fn eof(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.header_taken == 0 {
            return Ok(None);
        }
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the stream ended inside a frame",
        ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Drives `scan` over `input` cut into pieces of `piece` bytes, as a reader's buffer
    /// would hand them over; returns the output (or error) and the bytes taken.
    fn drive<S: Scan>(mut scan: S, input: &[u8], piece: usize) -> (io::Result<S::Output>, usize) {
        let mut at = 0;
        loop {
            if let Some(output) = scan.whole() {
                return (Ok(output), at);
            }
            if at == input.len() {
                return (scan.eof(), at);
            }
            let end = (at + piece).min(input.len());
            match scan.take(&input[at..end]) {
                Ok(n) => at += n,
                Err(e) => return (Err(e), at),
            }
        }
    }

    fn line_too_long(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::InvalidData
            && matches!(
                e.get_ref().and_then(|e| e.downcast_ref::<FrameError>()),
                Some(FrameError::LineTooLong { limit: 8 })
            )
    }

    proptest! {
        #[test]
        fn a_line_is_taken_whole_up_to_the_limit_and_refused_past_it(
            payload in 0usize..12, crlf: bool, piece in 1usize..16,
        ) {
            let mut input = vec![b'x'; payload];
            input.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            input.extend_from_slice(b"next\n");
            let mut line = b"kept".to_vec();
            let (result, taken) = drive(LineScan::new(&mut line, 8), &input, piece);
            if payload <= 8 {
                let whole = payload + 1 + usize::from(crlf);
                prop_assert_eq!(result.unwrap(), whole);
                prop_assert_eq!(taken, whole);
                prop_assert_eq!(&line[4..], &input[..whole]);
            } else {
                prop_assert!(line_too_long(&result.unwrap_err()));
                prop_assert!(taken <= 8 + 2, "took {} bytes", taken);
            }
        }

        #[test]
        fn a_line_that_never_ends_costs_at_most_the_limit(piece in 1usize..64) {
            let input = vec![b'x'; 1000];
            let mut line = Vec::new();
            let (result, _) = drive(LineScan::new(&mut line, 8), &input, piece);
            prop_assert!(line_too_long(&result.unwrap_err()));
            prop_assert_eq!(line.len(), 8 + 2);
        }

        #[test]
        fn a_frame_is_taken_whole_at_any_split(size in 0usize..40, piece in 1usize..50) {
            let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let mut input = (size as u16).to_be_bytes().to_vec();
            input.extend_from_slice(&payload);
            input.extend_from_slice(b"more");
            let (result, taken) = drive(FrameScan::new(LengthWidth::U16, 40), &input, piece);
            prop_assert_eq!(result.unwrap(), Some(payload));
            prop_assert_eq!(taken, 2 + size);
        }
    }

    #[test]
    fn the_last_line_without_newline_counts_and_an_empty_stream_is_zero() {
        let mut line = Vec::new();
        assert_eq!(
            drive(LineScan::new(&mut line, 8), b"12345678", 3)
                .0
                .unwrap(),
            8
        );
        assert_eq!(line, b"12345678");
        let mut line = Vec::new();
        let (result, _) = drive(LineScan::new(&mut line, 8), b"123456789", 3);
        assert!(line_too_long(&result.unwrap_err()));
        assert_eq!(
            drive(LineScan::new(&mut Vec::new(), 8), b"", 3).0.unwrap(),
            0
        );
    }

    #[test]
    fn a_frame_header_over_the_limit_is_refused_before_the_payload() {
        // A 4 GiB announcement, then bytes that must not be taken.
        let mut scan = FrameScan::new(LengthWidth::U32, 1024);
        let error = scan.take(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            error.to_string(),
            "frame of 4294967295 bytes exceeds the limit of 1024 bytes"
        );
        assert_eq!(scan.payload.capacity(), 0);
    }

    #[test]
    fn frame_memory_follows_the_bytes_received() {
        let mut scan = FrameScan::new(LengthWidth::U32, 1 << 20);
        assert_eq!(scan.take(&(1u32 << 20).to_be_bytes()).unwrap(), 4);
        assert_eq!(
            scan.payload.capacity(),
            0,
            "nothing reserved for the header"
        );
        assert_eq!(scan.take(&[7; 1000]).unwrap(), 1000);
        assert!(
            scan.payload.capacity() < 4096,
            "{}",
            scan.payload.capacity()
        );
        let mut received = 1000;
        while received < 1 << 20 {
            received += scan
                .take(&[7; 60_000][..60_000.min((1 << 20) - received)])
                .unwrap();
            assert!(scan.payload.capacity() <= 2 * received.max(1000));
            assert!(scan.payload.capacity() <= 1 << 20);
        }
        assert_eq!(scan.whole().unwrap().unwrap().len(), 1 << 20);
    }

    #[test]
    fn a_stream_that_ends_inside_a_frame_is_an_error_and_before_one_is_none() {
        let (result, _) = drive(FrameScan::new(LengthWidth::U32, 64), &[0, 0, 0, 9, 1], 2);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert!(matches!(
            drive(FrameScan::new(LengthWidth::U32, 64), &[], 2).0,
            Ok(None)
        ));
        let (result, _) = drive(FrameScan::new(LengthWidth::U32, 64), &[0, 0], 2);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
