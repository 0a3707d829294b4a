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
//! source is a [`FrameError`](crate::codec::FrameError) naming the limit) when a message is too long, and with
//! [`io::ErrorKind::TimedOut`] when a message begun is not whole within
//! [`Limits::message_timeout`](crate::Limits::message_timeout); [`AsyncStreamRequest`] has the
//! same three. What a handler reads through the raw [`StreamRequest::reader`] (`lines()`,
//! `read_to_end`, `read_line` of [`BufRead`]) is bounded by nothing but the idle time-out: the
//! memory it takes is the handler's own responsibility.

use std::fmt;
use std::future::Future;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

mod input;
mod timed;

use bytes::{Buf, BytesMut};

use crate::codec::LengthWidth;
use crate::service::{Address, Context};
use input::{AsyncInput, Bounded, FrameRead, LineRead, READ_BYTES};
use timed::{IdleRead, StallWrite};
pub(crate) use timed::{idle_timed_out, write_timed_out};

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
            reader: Reader {
                socket: read,
                input: BytesMut::new(),
            },
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
    /// [`FrameError::LineTooLong`](crate::codec::FrameError::LineTooLong)) or one that is not UTF-8; [`io::ErrorKind::TimedOut`] when
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
        self.read_bounded(LineRead::new(line, max_line))
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
    /// [`FrameError::FrameTooLong`](crate::codec::FrameError::FrameTooLong)); [`io::ErrorKind::UnexpectedEof`] when the stream ends
    /// inside a frame; [`io::ErrorKind::TimedOut`] as for
    /// [`read_line`](StreamRequest::read_line).
    pub fn read_frame(&mut self, width: LengthWidth) -> io::Result<Option<Vec<u8>>> {
        let max_frame = self.bounds.max_frame;
        self.read_bounded(FrameRead::new(width, max_frame))
    }

    /// Reads from the socket into the reader's buffer until `message` is whole there, the
    /// message deadline running from its first byte; the socket's reads wait no longer than it.
    fn read_bounded<B: Bounded>(&mut self, mut message: B) -> io::Result<B::Output> {
        let message_timeout = self.bounds.message_timeout;
        let reader = &mut self.reader;
        let mut deadline = None;
        let result = loop {
            match message.decode(&mut reader.input) {
                Ok(Some(output)) => break Ok(output),
                Ok(None) => {}
                Err(e) => break Err(e),
            }
            if deadline.is_none() && !reader.input.is_empty() {
                let at = Instant::now() + message_timeout;
                deadline = Some(at);
                reader.socket.set_deadline(Some(at));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Err(message_timed_out(message_timeout));
            }
            match input::fill(&mut reader.input, &mut reader.socket) {
                Ok(0) => break message.decode_eof(&mut reader.input),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if deadline.is_some_and(|d| Instant::now() >= d) => {
                    break Err(if e.kind() == io::ErrorKind::TimedOut {
                        message_timed_out(message_timeout)
                    } else {
                        e
                    });
                }
                Err(e) => break Err(e),
            }
        };
        if deadline.is_some() {
            reader.socket.set_deadline(None);
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
pub struct Reader<'a> {
    socket: Box<dyn SocketRead + 'a>,
    /// Read but not yet consumed: the bounded reads decode their messages from here and leave
    /// what follows a message for the next read, raw or bounded.
    input: BytesMut,
}

impl Read for Reader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() && buf.len() >= READ_BYTES {
            return self.socket.read(buf);
        }
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Reader<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.input.is_empty() {
            input::fill(&mut self.input, &mut self.socket)?;
        }
        Ok(&self.input)
    }
    fn consume(&mut self, amount: usize) {
        self.input.advance(amount)
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
    peer_credentials: Option<PeerCredentials>,
    reader: AsyncInput<IdleRead<AsyncReadHalf>>,
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
            peer_credentials: None,
            reader: AsyncInput::new(IdleRead::new(read, limits.idle_timeout)),
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
        self.read_bounded(LineRead::new(line, max_line)).await
    }

    /// Reads one length-delimited frame, bounded by the frame limit and the message deadline:
    /// [`StreamRequest::read_frame`], awaited.
    ///
    /// # Errors
    ///
    /// As [`StreamRequest::read_frame`].
    pub async fn read_frame(&mut self, width: LengthWidth) -> io::Result<Option<Vec<u8>>> {
        let max_frame = self.0.bounds.max_frame;
        self.read_bounded(FrameRead::new(width, max_frame)).await
    }

    /// [`StreamRequest::read_bounded`], awaited: the deadline cuts a read short.
    async fn read_bounded<B: Bounded + Send>(&mut self, mut message: B) -> io::Result<B::Output> {
        let message_timeout = self.0.bounds.message_timeout;
        let reader = &mut self.0.reader;
        let mut deadline = None;
        loop {
            if let Some(output) = message.decode(&mut reader.input)? {
                return Ok(output);
            }
            if !reader.input.is_empty() {
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + message_timeout);
            }
            // A timeout polls its future first: data that is always ready would never expire it.
            if deadline.is_some_and(|at| tokio::time::Instant::now() >= at) {
                return Err(message_timed_out(message_timeout));
            }
            let filled = match deadline {
                None => reader.fill().await,
                Some(at) => tokio::time::timeout_at(at, reader.fill())
                    .await
                    .map_err(|_| message_timed_out(message_timeout))?,
            };
            if filled? == 0 {
                return message.decode_eof(&mut reader.input);
            }
        }
    }

    /// The buffered writer. Flush it when a reply must go out now. A write fails with
    /// `TimedOut` once the peer has read nothing for the write time-out.
    #[doc(alias = "wfile")]
    pub fn writer(&mut self) -> &mut (impl tokio::io::AsyncWrite + Unpin + Send + use<>) {
        &mut self.0.writer
    }

    /// The reader and the writer at once, for a handler that copies both ways concurrently
    /// (a relay): [`reader`](Self::reader) and [`writer`](Self::writer), with their bounds.
    #[allow(clippy::type_complexity)]
    pub fn split(
        &mut self,
    ) -> (
        &mut (impl tokio::io::AsyncBufRead + Unpin + Send + use<>),
        &mut (impl tokio::io::AsyncWrite + Unpin + Send + use<>),
    ) {
        let parts = &mut *self.0;
        (&mut parts.reader, &mut parts.writer)
    }

    /// The peer's address.
    #[doc(alias = "client_address")]
    pub fn peer(&self) -> &Address {
        &self.0.ctx.peer
    }

    /// The peer process of a Unix stream connection, as the engine read it when it accepted.
    pub(crate) fn peer_credentials(&self) -> Option<PeerCredentials> {
        self.0.peer_credentials
    }

    pub(crate) fn set_peer_credentials(&mut self, credentials: Option<PeerCredentials>) {
        self.0.peer_credentials = credentials;
    }

    /// Everything known about the request.
    pub fn context(&self) -> &Context {
        &self.0.ctx
    }

    /// Flushes and sends the FIN; the engine then lingers on [`reader`](Self::reader) for the
    /// peer's EOF, as it does for every stream.
    ///
    /// Boxed, like the request itself: this future would otherwise sit in every connection's
    /// task.
    pub(crate) fn close(&mut self) -> Pin<Box<dyn Future<Output = io::Result<()>> + Send + '_>> {
        Box::pin(async move {
            use tokio::io::AsyncWriteExt;
            self.0.writer.flush().await?;
            self.0.writer.shutdown().await
        })
    }
}

/// The peer process of a Unix stream connection (`SO_PEERCRED`): what `exec`'s
/// `UNIXREMOTE*` variables say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerCredentials {
    pub(crate) pid: Option<i32>,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
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
/// in that connection (tokio would otherwise swallow it silently inside the task). `F` is a
/// pinned pointer to the future: a box, or a `Pin<&mut _>` to one pinned in place.
pub(crate) struct CatchUnwind<F>(pub(crate) F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = Result<F::Output, HandlerError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let inner = Pin::new(&mut self.0);
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(payload) => Poll::Ready(Err(HandlerError::from_panic(payload))),
        }
    }
}
