//! Clients: the one-shot `send` and the interactive `talk` (behind `socketkit send` and
//! `socketkit client`).
//!
//! On a stream, `send` behaves like the slides' TCP client grown up: it writes the whole
//! message, half-closes its write side (the server then reads EOF, the "0 bytes after close()"
//! of the slides), and copies every byte of the reply until the server closes. On datagrams it
//! sends one datagram and returns the one reply. `talk` is the slides' client in a loop: one
//! datagram per input line, or full duplex on a stream, like nc.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use socket2::{Domain, Socket, Type};

use crate::codec::{Framing, MessageCodec};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::limits::MAX_DATAGRAM_BYTES;
use crate::service::Address;

/// How a client behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendOptions {
    /// The local address to send from (the slides' `bind(('127.0.0.1', 0))`); port 0 lets the
    /// system choose. Default: none, the system chooses address and port.
    pub bind: Option<SocketAddr>,
    /// How long to wait for the connection, and for each reply (each piece of a stream reply).
    /// Default 5 s. More than zero and at most [`crate::MAX_TIMEOUT`]; other values are refused
    /// with [`Error::Config`].
    pub timeout: Duration,
    /// Message boundaries on streams. Default `raw`: bytes go as given and the reply is copied
    /// as it comes. With `line` or `length`, each input line is sent as one message and each
    /// reply message is written on a line of its own.
    pub framing: Framing,
    /// The longest reply line accepted in `line` framing.
    pub max_line: usize,
    /// The largest reply frame accepted in `length` framing.
    pub max_frame: usize,
    /// Streams: once the whole message is sent (the input's end), stop waiting and succeed
    /// when nothing has arrived for this long (nc's `-q`), for a server that replies but keeps
    /// the connection open. It then replaces `timeout` as the bound on silence. Default: none,
    /// wait for the server to close.
    pub quit_after: Option<Duration>,
    /// Send the message and return at once, reading no reply (for discard-like services).
    /// Default false.
    pub no_wait: bool,
    /// A bound on the whole exchange, connecting included, however steadily the reply
    /// trickles in (curl's `--max-time`); passing it is [`Error::TimedOut`]. Default: none.
    pub max_time: Option<Duration>,
}

impl Default for SendOptions {
    fn default() -> SendOptions {
        let limits = crate::Limits::default();
        SendOptions {
            bind: None,
            timeout: Duration::from_secs(5),
            framing: Framing::Raw,
            max_line: limits.max_line,
            max_frame: limits.max_frame,
            quit_after: None,
            no_wait: false,
            max_time: None,
        }
    }
}

impl SendOptions {
    /// Refuses options no client can run with, as the command line does: a time-out of zero
    /// (there is no zero "none") or over [`crate::MAX_TIMEOUT`], a zero line or frame limit.
    fn check(&self) -> Result<(), Error> {
        let time_outs = [Some(self.timeout), self.max_time, self.quit_after];
        if let Some(bad) = time_outs
            .into_iter()
            .flatten()
            .find(|t| t.is_zero() || *t > crate::MAX_TIMEOUT)
        {
            return Err(Error::Config(format!(
                "a time-out must be more than zero and at most 365 days, not {bad:?}"
            )));
        }
        if self.max_line == 0 || self.max_frame == 0 {
            return Err(Error::Config(
                "the line and frame limits must be at least 1 byte".into(),
            ));
        }
        Ok(())
    }

    fn codec(&self) -> Option<MessageCodec> {
        MessageCodec::new(self.framing, self.max_line, self.max_frame)
    }

    /// The longest input line one message may carry, and the limit's name.
    fn max_input_line(&self) -> (usize, &'static str) {
        match self.framing {
            Framing::Length(width) => (
                self.max_frame
                    .min(usize::try_from(width.max_payload()).unwrap_or(usize::MAX)),
                "frame",
            ),
            _ => (self.max_line, "line"),
        }
    }
}

/// What a client did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendReport {
    /// The client's own address (`getsockname`).
    pub local: Address,
    /// The server's address that answered.
    pub peer: Address,
    /// Bytes sent (as far as known when the exchange ended).
    pub sent: u64,
    /// Bytes of reply received.
    pub received: u64,
}

/// Sends `input` to `endpoint` and copies the reply to `output`.
///
/// # Examples
///
/// ```
/// use socketkit::{Server, client::{send, SendOptions}};
///
/// let server = Server::builder().listen("udp://127.0.0.1:0".parse()?).bind()?;
/// let endpoint = server.local_endpoints()[0].clone();
/// let stop = server.shutdown_handle();
/// let serving = std::thread::spawn(move || server.serve_forever());
///
/// let mut reply = Vec::new();
/// send(&endpoint, &b"hello"[..], &mut reply, &SendOptions::default())?;
/// assert_eq!(reply, b"HELLO");
/// # stop.shutdown();
/// # serving.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # When it stops waiting
///
/// On a stream, the first of these ends the exchange:
///
/// - the server closes its side (EOF): done;
/// - `quit_after` is set, the whole message has been sent, and nothing has arrived for that
///   long since the last data either way: done (nc's `-q`);
/// - nothing arrives for `timeout` (between two reads, or before the first): [`Error::TimedOut`];
/// - `max_time` passes since the call began, whatever is still arriving: [`Error::TimedOut`].
///
/// On datagrams the one reply ends it, and `timeout` (or `max_time`, if shorter) bounds the
/// wait. With `no_wait`, it returns once the message is sent, on either kind.
///
/// # Errors
///
/// [`Error::Connect`] when no address accepts the connection (refused: kind `Refused`),
/// [`Error::Bind`] when the `bind` address cannot be bound, [`Error::Reset`] when the server
/// resets the connection (before any reply: kind `Refused`), [`Error::TimedOut`] when the reply
/// does not come in time, [`Error::Protocol`] for a reply that breaks the framing (in `line` or
/// `length` framing, a stream that ends inside a frame or without a reply to any message),
/// [`Error::NameNotFound`] for a host that does not resolve, [`Error::Config`] for a datagram
/// message larger than one datagram or for options out of range (a zero time-out).
pub fn send(
    endpoint: &Endpoint,
    input: impl Read + Send + 'static,
    output: &mut dyn Write,
    options: &SendOptions,
) -> Result<SendReport, Error> {
    options.check()?;
    let deadline = options
        .max_time
        .map(|total| (Instant::now() + total, total));
    if endpoint.transport().is_stream() {
        let stream = StreamClient::connect(endpoint, options, deadline)?;
        let input = Box::new(io::BufReader::new(input));
        let waits = Waits {
            idle: Some(options.timeout),
            quit_after: options.quit_after,
            deadline,
            no_wait: options.no_wait,
        };
        return stream.exchange(endpoint, input, output, waits, true, options);
    }
    let message = read_datagram(input)?;
    // One wait for the one reply: -w, or what is left of --max-time if that is shorter.
    let mut datagram_options = options.clone();
    let by_max_time = deadline.filter(|(_, total)| *total < options.timeout);
    if let Some((_, total)) = by_max_time {
        datagram_options.timeout = total;
    }
    let mut client = DatagramClient::connect(endpoint, &datagram_options)?;
    if options.no_wait {
        client.send_only(&message)?;
        return Ok(SendReport {
            local: client.local.clone(),
            peer: client.peer(),
            sent: message.len() as u64,
            received: 0,
        });
    }
    let reply = match (client.request(&message), by_max_time) {
        (Err(Error::TimedOut { .. }), Some((_, total))) => return Err(max_time_passed(total)),
        (result, _) => result?,
    };
    write_out(output, &reply)?;
    Ok(SendReport {
        local: client.local.clone(),
        peer: client.peer(),
        sent: message.len() as u64,
        received: reply.len() as u64,
    })
}

/// Talks to `endpoint` interactively, like the slides' clients in a loop.
///
/// - Datagrams: each line of `input` (without its line ending) is sent as one datagram, and
///   the reply is written to `output` followed by a newline, like Python's `print`. Before
///   each line, `prompt` (if any) is written to `output`. A missing reply is reported on stderr
///   and counted; the session goes on.
/// - Streams: full duplex, like nc: `input` is copied to the socket and the socket to `output`;
///   at the end of `input` the write side is half-closed (unless `half_close` is false), and
///   the call returns when the server closes.
///
/// # Errors
///
/// As [`send`]; and [`Error::TimedOut`] at the end when any datagram went unanswered. On
/// streams, `options.quit_after` applies as in [`send`]; `timeout` bounds only the connection.
pub fn talk(
    endpoint: &Endpoint,
    input: impl BufRead + Send + 'static,
    output: &mut dyn Write,
    prompt: Option<&str>,
    half_close: bool,
    options: &SendOptions,
) -> Result<SendReport, Error> {
    options.check()?;
    if endpoint.transport().is_stream() {
        let stream = StreamClient::connect(endpoint, options, None)?;
        let waits = Waits {
            idle: None,
            quit_after: options.quit_after,
            deadline: None,
            no_wait: false,
        };
        return stream.exchange(
            endpoint,
            Box::new(input),
            output,
            waits,
            half_close,
            options,
        );
    }
    let mut client = DatagramClient::connect(endpoint, options)?;
    let mut report = SendReport {
        local: client.local.clone(),
        peer: client.peer(),
        sent: 0,
        received: 0,
    };
    let mut missed = 0usize;
    let mut input = input;
    loop {
        if let Some(prompt) = prompt {
            write!(output, "{prompt}")
                .and_then(|()| output.flush())
                .map_err(|e| io_err("writing the prompt", e))?;
        }
        // One datagram and a "\r\n" at most: a longer line is refused, not buffered whole.
        let mut line = Vec::new();
        let read = read_line_at_most(&mut input, MAX_DATAGRAM_BYTES + 2, &mut line)
            .map_err(|e| io_err("reading input", e))?;
        if read == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.len() > MAX_DATAGRAM_BYTES {
            return Err(Error::Config(format!(
                "an input line is larger than one datagram ({MAX_DATAGRAM_BYTES} bytes at most)"
            )));
        }
        match client.request(&line) {
            Ok(mut reply) => {
                report.sent += line.len() as u64;
                report.received += reply.len() as u64;
                reply.push(b'\n');
                write_out(output, &reply)?;
            }
            Err(e @ Error::TimedOut { .. }) => {
                missed += 1;
                tracing::warn!("no reply: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    if prompt.is_some() {
        let _ = writeln!(output);
    }
    if missed > 0 {
        return Err(Error::TimedOut {
            what: if missed == 1 {
                "1 reply"
            } else {
                "some replies"
            },
            after: options.timeout,
        });
    }
    Ok(report)
}

fn write_out(output: &mut dyn Write, bytes: &[u8]) -> Result<(), Error> {
    output
        .write_all(bytes)
        .and_then(|()| output.flush())
        .map_err(output_error)
}

/// Only the framing adapter reports InvalidData: a reply that broke the framing.
fn output_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::InvalidData => Error::Protocol(format!("bad reply: {e}")),
        _ => io_err("writing the reply", e),
    }
}

fn io_err(context: &str, e: io::Error) -> Error {
    Error::io(context.to_string(), e)
}

fn max_time_passed(total: Duration) -> Error {
    Error::TimedOut {
        what: "the exchange to end (max time)",
        after: total,
    }
}

fn timed_out(timeout: Duration) -> Error {
    Error::TimedOut {
        what: "a reply",
        after: timeout,
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn no_address_for_bind() -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "no address of the --bind address's family",
    )
}

/// A connected stream of either kind.
enum StreamClient {
    Tcp(TcpStream),
    /// The stream and the server's address (a path or an abstract name).
    Unix(UnixStream, Address),
}

impl StreamClient {
    /// Connects within `options.timeout`, or what is left of the `deadline` (the end of
    /// `max_time`, and its length) when that is sooner.
    fn connect(
        endpoint: &Endpoint,
        options: &SendOptions,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<StreamClient, Error> {
        if let Some(addr) = endpoint.unix_addr() {
            return addr
                .and_then(|addr| UnixStream::connect_addr(&addr))
                .map(|s| StreamClient::Unix(s, unix_server_address(endpoint)))
                .map_err(|source| Error::Connect {
                    endpoint: endpoint.clone(),
                    source,
                });
        }
        // Every address in turn, as Python's `create_connection` does.
        let mut last = None;
        let mut by_max_time = None;
        for addr in endpoint.socket_addrs()? {
            if options.bind.is_some_and(|b| b.is_ipv4() != addr.is_ipv4()) {
                continue;
            }
            let mut wait = options.timeout;
            by_max_time = None;
            if let Some((at, total)) = deadline {
                let left = at.saturating_duration_since(Instant::now());
                if left <= wait {
                    if left.is_zero() {
                        return Err(max_time_passed(total));
                    }
                    (wait, by_max_time) = (left, Some(total));
                }
            }
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)
                .map_err(|e| io_err("cannot create a socket", e))?;
            if let Some(bind) = options.bind {
                // A failed bind is ours, not the server's: exit 7, and no other address helps.
                socket.bind(&bind.into()).map_err(|source| Error::Bind {
                    endpoint: Endpoint::tcp(bind),
                    source,
                })?;
            }
            match socket.connect_timeout(&addr.into(), wait) {
                Ok(()) => return Ok(StreamClient::Tcp(TcpStream::from(socket))),
                Err(e) => {
                    tracing::debug!("connecting to {addr} failed: {e}");
                    last = Some(e);
                }
            }
        }
        let source = last.unwrap_or_else(no_address_for_bind);
        if source.kind() == io::ErrorKind::ConnectionReset {
            // Accepted and reset at once (a denied peer), before connect() reported success.
            return Err(Error::Reset {
                endpoint: endpoint.clone(),
                received: 0,
            });
        }
        if is_timeout(&source) {
            if let Some(total) = by_max_time {
                return Err(max_time_passed(total));
            }
            return Err(Error::TimedOut {
                what: "the connection",
                after: options.timeout,
            });
        }
        Err(Error::Connect {
            endpoint: endpoint.clone(),
            source,
        })
    }

    fn addresses(&self) -> Result<(Address, Address), Error> {
        match self {
            StreamClient::Tcp(s) => Ok((
                Address::Inet(s.local_addr().map_err(|e| io_err("getsockname", e))?),
                Address::Inet(s.peer_addr().map_err(|e| io_err("getpeername", e))?),
            )),
            StreamClient::Unix(_, server) => Ok((Address::Unix(None), server.clone())),
        }
    }

    fn try_clone(&self) -> io::Result<StreamClient> {
        Ok(match self {
            StreamClient::Tcp(s) => StreamClient::Tcp(s.try_clone()?),
            StreamClient::Unix(s, server) => StreamClient::Unix(s.try_clone()?, server.clone()),
        })
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            StreamClient::Tcp(s) => s.shutdown(how),
            StreamClient::Unix(s, _) => s.shutdown(how),
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            StreamClient::Tcp(s) => s.as_fd(),
            StreamClient::Unix(s, _) => s.as_fd(),
        }
    }

    /// Runs the exchange, through the framing codecs when the options ask for them.
    fn exchange(
        self,
        endpoint: &Endpoint,
        input: Box<dyn BufRead + Send>,
        output: &mut dyn Write,
        waits: Waits,
        half_close: bool,
        options: &SendOptions,
    ) -> Result<SendReport, Error> {
        let (local, peer) = self.addresses()?;
        tracing::debug!("connected from {local} to {peer}");
        let (sent, received) = match (options.codec(), options.codec()) {
            (Some(encoder), Some(decoder)) => {
                let messages = Arc::new(AtomicU64::new(0));
                let framed_input = FrameInput {
                    input,
                    codec: encoder,
                    max_line: options.max_input_line(),
                    pending: BytesMut::new(),
                    messages: messages.clone(),
                };
                let mut framed_output = FrameOutput {
                    output,
                    codec: decoder,
                    buffer: BytesMut::new(),
                    header_bytes: match options.framing {
                        Framing::Length(width) => width.bytes() as u64,
                        _ => 0,
                    },
                    pending: 0,
                    replies: 0,
                };
                let input = Box::new(framed_input);
                let (sent, received, eof) =
                    self.pump(endpoint, input, &mut framed_output, waits, half_close)?;
                framed_output.finish(eof, messages.load(Ordering::SeqCst))?;
                (sent, received)
            }
            _ => {
                let (sent, received, _) = self.pump(endpoint, input, output, waits, half_close)?;
                (sent, received)
            }
        };
        Ok(SendReport {
            local,
            peer,
            sent,
            received,
        })
    }

    /// Copies `input` to the socket on a thread of its own while the socket is copied to
    /// `output` here, so a large message and a server that streams its reply back cannot
    /// deadlock on full buffers. Returns the bytes sent and received, and whether the server
    /// closed (rather than `quit_after` ending the wait), when the server closes or a bound of
    /// `waits` passes (see [`send`]); a sender still blocked on its input (a terminal) is left
    /// behind, as nc does.
    fn pump(
        self,
        endpoint: &Endpoint,
        mut input: Box<dyn Read + Send>,
        output: &mut dyn Write,
        waits: Waits,
        half_close: bool,
    ) -> Result<(u64, u64, bool), Error> {
        if waits.no_wait {
            let mut writer = self;
            let sent = io::copy(&mut input, &mut writer).map_err(|e| send_error(endpoint, 0, e))?;
            writer
                .shutdown(Shutdown::Write)
                .map_err(|e| send_error(endpoint, 0, e))?;
            return Ok((sent, 0, false));
        }
        let mut writer = self.try_clone().map_err(|e| io_err("dup", e))?;
        let (mut wake, mut woken_by) = UnixStream::pair().map_err(|e| io_err("socketpair", e))?;
        let sent = Arc::new(AtomicU64::new(0));
        // Set while a write is under way; `failed` is set before it is cleared, so a reader that
        // sees EOF and neither flag knows that no write failed (or is about to).
        let writing = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicBool::new(false));
        let sender = {
            let sent = sent.clone();
            let writing = writing.clone();
            let failed = failed.clone();
            std::thread::Builder::new()
                .name("socketkit-send".into())
                .spawn(move || -> io::Result<()> {
                    let mut buf = vec![0u8; 64 * 1024];
                    let copied = loop {
                        let n = match input.read(&mut buf) {
                            Ok(0) => break Ok(()),
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => break Err(e),
                        };
                        writing.store(true, Ordering::SeqCst);
                        let written = writer.write_all(&buf[..n]);
                        if written.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        }
                        writing.store(false, Ordering::SeqCst);
                        if let Err(e) = written {
                            break Err(e);
                        }
                        sent.fetch_add(n as u64, Ordering::Relaxed);
                    };
                    let result = copied.and_then(|()| {
                        if half_close {
                            writer.shutdown(Shutdown::Write)?; // the server reads EOF
                        }
                        Ok(())
                    });
                    if result.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    let _ = wake
                        .write_all(&[1])
                        .and_then(|()| wake.shutdown(Shutdown::Write));
                    result
                })
                .map_err(|e| io_err("cannot start the sending thread", e))?
        };
        let mut sender = Some(sender);
        let mut reader = self;
        let mut received = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut last_data = Instant::now();
        let mut input_done = false;
        // The sender's writes were refused by a server that has closed or reset: only a reply
        // already on its way can still come.
        let mut peer_gone = false;
        let outcome = loop {
            let quiet_ends_well = input_done && waits.quit_after.is_some();
            let silence = if quiet_ends_well {
                waits.quit_after
            } else {
                waits.idle
            };
            let until = [
                silence.map(|s| last_data + s),
                waits.deadline.map(|(at, _)| at),
            ]
            .into_iter()
            .flatten()
            .min();
            let woken = wait_ready(
                reader.as_fd(),
                sender.as_ref().map(|_| woken_by.as_fd()),
                until,
            );
            match woken {
                Err(e) => break Err(io_err("waiting for the reply", e)),
                Ok(Ready::Wake) => {
                    let _ = woken_by.read(&mut [0u8; 1]);
                    let finished = sender.take().expect("woken by a running sender");
                    match finished.join().expect("the sending thread panicked") {
                        Ok(()) => {
                            input_done = true;
                            last_data = Instant::now();
                        }
                        Err(e) if is_gone(&e) => {
                            tracing::debug!("the server stopped reading: {e}");
                            peer_gone = true;
                        }
                        Err(e) => break Err(send_error(endpoint, received, e)),
                    }
                }
                Ok(Ready::TimedOut) => {
                    let now = Instant::now();
                    if let Some((at, total)) = waits.deadline
                        && now >= at
                    {
                        break Err(max_time_passed(total));
                    }
                    if quiet_ends_well {
                        break Ok(false);
                    }
                    break Err(timed_out(waits.idle.unwrap_or_default()));
                }
                Ok(Ready::Socket) => match reader.read(&mut buf) {
                    Ok(0) => break Ok(true),
                    Ok(n) => {
                        received += n as u64;
                        last_data = Instant::now();
                        if let Err(e) = write_out(output, &buf[..n]) {
                            break Err(e);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                        break Err(Error::Reset {
                            endpoint: endpoint.clone(),
                            received,
                        });
                    }
                    Err(e) => break Err(io_err("reading the reply", e)),
                },
            }
        };
        let _ = reader.shutdown(Shutdown::Both); // unblock a sender waiting on the server
        let eof = outcome?;
        // A write that failed because the server is gone may not have reported it yet: hear it
        // (it returns at once now). A sender blocked on its input (a terminal) is left behind.
        if let Some(running) = sender.take()
            && (writing.load(Ordering::SeqCst)
                || failed.load(Ordering::SeqCst)
                || running.is_finished())
        {
            match running.join().expect("the sending thread panicked") {
                Ok(()) => {}
                Err(e) if is_gone(&e) => peer_gone = true,
                Err(e) => return Err(send_error(endpoint, received, e)),
            }
        }
        // The server answered and closed before reading everything (the slides' servers read
        // one recv(1024)): the reply is what counts. With no reply at all, it refused us.
        if peer_gone && received == 0 {
            return Err(Error::Reset {
                endpoint: endpoint.clone(),
                received,
            });
        }
        Ok((sent.load(Ordering::Relaxed), received, eof))
    }
}

/// What ended a wait in [`wait_ready`].
enum Ready {
    /// The socket has data, an EOF or an error to report.
    Socket,
    /// The sending thread is done.
    Wake,
    /// `until` passed.
    TimedOut,
}

/// Waits until `socket` is readable, `wake` is, or `until` passes.
fn wait_ready(
    socket: BorrowedFd<'_>,
    wake: Option<BorrowedFd<'_>>,
    until: Option<Instant>,
) -> io::Result<Ready> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let timeout = match until {
            None => PollTimeout::NONE,
            Some(until) => {
                let left = until.saturating_duration_since(Instant::now());
                // Round up, so a sub-millisecond remainder does not spin.
                let ms = left.as_millis() + u128::from(left.subsec_nanos() % 1_000_000 != 0);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = vec![PollFd::new(socket, PollFlags::POLLIN)];
        if let Some(wake) = wake {
            fds.push(PollFd::new(wake, PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(0) if until.is_some_and(|u| Instant::now() >= u) => return Ok(Ready::TimedOut),
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) if fds.get(1).is_some_and(|w| w.any().unwrap_or(false)) => {
                return Ok(Ready::Wake);
            }
            Ok(_) => return Ok(Ready::Socket),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A write (or the half-close) refused because the server has closed (EPIPE) or reset
/// (ECONNRESET; ENOTCONN once the reset has closed the socket) the connection.
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
    )
}

/// The sending side failed with `e`.
fn send_error(endpoint: &Endpoint, received: u64, e: io::Error) -> Error {
    match e.kind() {
        // Only the framing adapter reports InvalidInput: a message too large for a frame.
        io::ErrorKind::InvalidInput => Error::Config(format!("cannot send: {e}")),
        io::ErrorKind::ConnectionReset => Error::Reset {
            endpoint: endpoint.clone(),
            received,
        },
        _ => io_err("sending", e),
    }
}

/// When a stream exchange stops waiting; the rule is in [`send`]'s docs.
#[derive(Debug, Clone, Copy)]
struct Waits {
    /// The longest silence allowed before it is an error; `None`: no bound.
    idle: Option<Duration>,
    /// Once the input is all sent, the silence that ends the exchange well.
    quit_after: Option<Duration>,
    /// The end of the whole exchange, and its length.
    deadline: Option<(Instant, Duration)>,
    /// Send, half-close and return, reading nothing.
    no_wait: bool,
}

impl Read for StreamClient {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            StreamClient::Tcp(s) => s.read(buf),
            StreamClient::Unix(s, _) => s.read(buf),
        }
    }
}

impl Write for StreamClient {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StreamClient::Tcp(s) => s.write(buf),
            StreamClient::Unix(s, _) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn read_datagram(input: impl Read) -> Result<Vec<u8>, Error> {
    let mut message = Vec::new();
    input
        .take(MAX_DATAGRAM_BYTES as u64 + 1)
        .read_to_end(&mut message)
        .map_err(|e| io_err("reading the message", e))?;
    if message.len() > MAX_DATAGRAM_BYTES {
        return Err(Error::Config(format!(
            "the message is larger than one datagram ({MAX_DATAGRAM_BYTES} bytes at most)"
        )));
    }
    Ok(message)
}

/// The address of a Unix endpoint's server as logs show it: its path, or `@name`.
fn unix_server_address(endpoint: &Endpoint) -> Address {
    match endpoint.abstract_name() {
        Some(name) => Address::Abstract(name.to_vec()),
        None => Address::Unix(endpoint.path().map(PathBuf::from)),
    }
}

/// A datagram socket connected to the server: it hears only from the server, and learns of a
/// closed port (ICMP port unreachable) as "connection refused".
struct DatagramClient {
    endpoint: Endpoint,
    socket: DatagramSocket,
    /// UDP: every address the name resolved to; a refusal moves on to the next.
    addrs: Vec<SocketAddr>,
    current: usize,
    local: Address,
    bind: Option<SocketAddr>,
    timeout: Duration,
}

enum DatagramSocket {
    Udp(UdpSocket),
    /// A Unix datagram client binds a name of its own, or the server could not reply; the
    /// server's address (a path or an abstract name) beside it.
    Unix(UnixDatagram, Address),
}

impl DatagramClient {
    fn connect(endpoint: &Endpoint, options: &SendOptions) -> Result<DatagramClient, Error> {
        if let Some(server) = endpoint.unix_addr() {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            // The server needs an address to reply to. An abstract name (Linux) leaves no file
            // behind, even when the client is killed, and nobody else can create it first.
            use std::os::linux::net::SocketAddrExt;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let name = format!(
                "socketkit-client-{}-{}-{nanos:08x}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let bind_err = |source| Error::Bind {
                endpoint: Endpoint::UnixDatagram(PathBuf::from(format!("@{name}"))),
                source,
            };
            let own = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .map_err(bind_err)?;
            let socket = UnixDatagram::bind_addr(&own).map_err(bind_err)?;
            server
                .and_then(|server| socket.connect_addr(&server))
                .map_err(|source| Error::Connect {
                    endpoint: endpoint.clone(),
                    source,
                })?;
            socket
                .set_read_timeout(Some(options.timeout))
                .map_err(|e| io_err("setting the read timeout", e))?;
            return Ok(DatagramClient {
                endpoint: endpoint.clone(),
                local: Address::Abstract(name.into_bytes()),
                socket: DatagramSocket::Unix(socket, unix_server_address(endpoint)),
                addrs: Vec::new(),
                current: 0,
                bind: options.bind,
                timeout: options.timeout,
            });
        }
        let addrs: Vec<SocketAddr> = endpoint
            .socket_addrs()?
            .into_iter()
            .filter(|a| options.bind.is_none_or(|b| b.is_ipv4() == a.is_ipv4()))
            .collect();
        let Some(&first) = addrs.first() else {
            return Err(Error::Connect {
                endpoint: endpoint.clone(),
                source: no_address_for_bind(),
            });
        };
        let socket = open_udp(endpoint, first, options.bind, options.timeout)?;
        let local = Address::Inet(socket.local_addr().map_err(|e| io_err("getsockname", e))?);
        tracing::debug!("sending from {local} to {first}");
        Ok(DatagramClient {
            endpoint: endpoint.clone(),
            socket: DatagramSocket::Udp(socket),
            addrs,
            current: 0,
            local,
            bind: options.bind,
            timeout: options.timeout,
        })
    }

    fn peer(&self) -> Address {
        match &self.socket {
            DatagramSocket::Udp(_) => Address::Inet(self.addrs[self.current]),
            DatagramSocket::Unix(_, server) => server.clone(),
        }
    }

    /// Sends one datagram and waits for nothing (`--no-wait`).
    fn send_only(&mut self, message: &[u8]) -> Result<(), Error> {
        let sent = match &self.socket {
            DatagramSocket::Udp(s) => s.send(message),
            DatagramSocket::Unix(s, _) => s.send(message),
        };
        sent.map(drop).map_err(|source| Error::Connect {
            endpoint: self.endpoint.clone(),
            source,
        })
    }

    /// Sends one datagram and waits for the one reply.
    fn request(&mut self, message: &[u8]) -> Result<Vec<u8>, Error> {
        if message.len() > MAX_DATAGRAM_BYTES {
            return Err(Error::Config(format!(
                "a message of {} bytes is larger than one datagram ({MAX_DATAGRAM_BYTES} bytes \
                 at most)",
                message.len()
            )));
        }
        let mut buf = vec![0u8; 65_536];
        // A reply that came after its request timed out must not pass for this one's.
        self.discard_late_replies(&mut buf);
        loop {
            let outcome = match &self.socket {
                DatagramSocket::Udp(s) => s.send(message).and_then(|_| s.recv(&mut buf)),
                DatagramSocket::Unix(s, _) => s.send(message).and_then(|_| s.recv(&mut buf)),
            };
            match outcome {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(e) if is_timeout(&e) => return Err(timed_out(self.timeout)),
                Err(e)
                    if e.kind() == io::ErrorKind::ConnectionRefused
                        && self.current + 1 < self.addrs.len() =>
                {
                    // Nobody at this address: try the next one the name resolved to.
                    tracing::debug!("{}: {e}", self.addrs[self.current]);
                    self.current += 1;
                    let next = self.addrs[self.current];
                    let socket = open_udp(&self.endpoint, next, self.bind, self.timeout)?;
                    self.local =
                        Address::Inet(socket.local_addr().map_err(|e| io_err("getsockname", e))?);
                    self.socket = DatagramSocket::Udp(socket);
                }
                Err(source) => {
                    return Err(Error::Connect {
                        endpoint: self.endpoint.clone(),
                        source,
                    });
                }
            }
        }
    }
}

impl DatagramClient {
    fn discard_late_replies(&self, buf: &mut [u8]) {
        let dropped = match &self.socket {
            DatagramSocket::Udp(s) => drain(
                s.set_nonblocking(true),
                || s.recv(buf),
                || s.set_nonblocking(false),
            ),
            DatagramSocket::Unix(s, _) => drain(
                s.set_nonblocking(true),
                || s.recv(buf),
                || s.set_nonblocking(false),
            ),
        };
        if dropped > 0 {
            tracing::warn!("discarded {dropped} late replies to earlier requests");
        }
    }
}

/// Receives without waiting until nothing is left; returns how many datagrams were dropped.
fn drain(
    nonblocking: io::Result<()>,
    mut recv: impl FnMut() -> io::Result<usize>,
    restore: impl FnOnce() -> io::Result<()>,
) -> usize {
    let mut dropped = 0;
    if nonblocking.is_ok() {
        while recv().is_ok() {
            dropped += 1;
        }
    }
    let _ = restore();
    dropped
}

fn open_udp(
    endpoint: &Endpoint,
    server: SocketAddr,
    bind: Option<SocketAddr>,
    timeout: Duration,
) -> Result<UdpSocket, Error> {
    let local = bind.unwrap_or_else(|| {
        if server.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        }
    });
    let socket = UdpSocket::bind(local).map_err(|source| Error::Bind {
        endpoint: Endpoint::udp(local),
        source,
    })?;
    socket.connect(server).map_err(|source| Error::Connect {
        endpoint: endpoint.clone(),
        source,
    })?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| io_err("setting the read timeout", e))?;
    Ok(socket)
}

/// Reads lines from the input and hands out each one as a framed message.
struct FrameInput {
    input: Box<dyn BufRead + Send>,
    codec: MessageCodec,
    /// The longest line one message carries (terminator excluded) and the limit's name.
    max_line: (usize, &'static str),
    pending: BytesMut,
    /// Messages encoded so far.
    messages: Arc<AtomicU64>,
}

impl Read for FrameInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            let (max, limit) = self.max_line;
            let mut line = Vec::new();
            // Never more than the limit and a "\r\n": a line that never ends is refused, not
            // buffered whole.
            if read_line_at_most(&mut self.input, max.saturating_add(2), &mut line)? == 0 {
                return Ok(0);
            }
            let terminator: &'static [u8] = if line.ends_with(b"\r\n") {
                line.truncate(line.len() - 2);
                b"\r\n"
            } else {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                b"\n"
            };
            if line.len() > max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("an input line is longer than the {limit} limit of {max} bytes"),
                ));
            }
            self.codec
                .encode(&line, terminator, &mut self.pending)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            self.messages.fetch_add(1, Ordering::SeqCst);
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

/// Appends one line of `input`, `\n` included, to `line`, but no more than `max` bytes: a
/// longer line stops there, without its `\n`. Returns the bytes appended, 0 at the end.
fn read_line_at_most(input: &mut dyn BufRead, max: usize, line: &mut Vec<u8>) -> io::Result<usize> {
    input.take(max as u64).read_until(b'\n', line)
}

/// Decodes reply messages from the stream and writes each payload on a line of its own.
struct FrameOutput<'a> {
    output: &'a mut dyn Write,
    codec: MessageCodec,
    buffer: BytesMut,
    /// The length header's width (length framing), 0 in line framing.
    header_bytes: u64,
    /// Bytes received that no whole message has accounted for yet. The codec may have taken a
    /// header out of `buffer` already, so `buffer` alone cannot tell a frame cut short.
    pending: u64,
    /// Reply messages decoded.
    replies: u64,
}

impl FrameOutput<'_> {
    fn emit(&mut self, at_eof: bool) -> io::Result<()> {
        loop {
            let message = if at_eof {
                self.codec.decode_eof(&mut self.buffer)
            } else {
                self.codec.decode(&mut self.buffer)
            };
            match message.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
                Some(message) => {
                    let framed = message.payload.len() + message.terminator.len();
                    self.pending = self
                        .pending
                        .saturating_sub(framed as u64 + self.header_bytes);
                    self.replies += 1;
                    self.output.write_all(&message.payload)?;
                    self.output.write_all(b"\n")?;
                }
                None => return self.output.flush(),
            }
        }
    }

    /// The exchange ended (`eof`: the server closed). A last line without newline still
    /// counts; half a frame does not, and neither does a close that answered none of the
    /// `messages` sent: both mean the two sides' framings differ.
    fn finish(mut self, eof: bool, messages: u64) -> Result<(), Error> {
        if !eof {
            return Ok(()); // --quit-after: the server may still be sending the rest
        }
        self.emit(true).map_err(output_error)?;
        if self.pending > 0 {
            return Err(Error::Protocol(format!(
                "the reply ended inside a message ({} bytes left over; does the server use \
                 the same --framing?)",
                self.pending
            )));
        }
        if self.replies == 0 && messages > 0 {
            return Err(Error::Protocol(format!(
                "the server closed without replying to any of the {messages} messages sent \
                 (does it use the same --framing?)"
            )));
        }
        Ok(())
    }
}

impl Write for FrameOutput<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        self.pending += bytes.len() as u64;
        self.emit(false)?;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.output.flush()
    }
}

/// Appends `reply` as the rest of one output line: a trailing line ending is dropped, and any
/// other CR or LF is written as `\r` or `\n`, so each responder stays on a line of its own.
fn one_line(reply: &[u8], line: &mut Vec<u8>) {
    let reply = reply
        .strip_suffix(b"\r\n")
        .or_else(|| reply.strip_suffix(b"\n"))
        .unwrap_or(reply);
    for &byte in reply {
        match byte {
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => line.extend_from_slice(b"\\r"),
            other => line.push(other),
        }
    }
    line.push(b'\n');
}

/// Sends one UDP datagram to a broadcast address and writes every reply that arrives within
/// the timeout as `ADDRESS REPLY` lines (the second deck: "UDP can broadcast"); a reply's own
/// final line ending is dropped and inner CR/LF are escaped, one line per responder. Returns the
/// responders in the order they answered.
///
/// # Errors
///
/// [`Error::Config`] for an endpoint that is not IPv4 UDP (IPv6 has no broadcast) or options
/// out of range, [`Error::TimedOut`] when nobody answers.
pub fn broadcast(
    endpoint: &Endpoint,
    input: impl Read,
    output: &mut dyn Write,
    options: &SendOptions,
) -> Result<Vec<SocketAddr>, Error> {
    options.check()?;
    let target = match endpoint {
        Endpoint::Udp { .. } => endpoint
            .socket_addrs()?
            .into_iter()
            .find(SocketAddr::is_ipv4),
        _ => None,
    }
    .ok_or_else(|| Error::Config("broadcast needs an IPv4 udp:// endpoint".into()))?;
    let message = read_datagram(input)?;
    let local = options
        .bind
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let socket = UdpSocket::bind(local).map_err(|source| Error::Bind {
        endpoint: Endpoint::udp(local),
        source,
    })?;
    socket
        .set_broadcast(true)
        .map_err(|e| io_err("setting SO_BROADCAST", e))?;
    socket
        .send_to(&message, target)
        .map_err(|e| io_err("sending the broadcast", e))?;
    let deadline = std::time::Instant::now() + options.timeout;
    let mut responders = Vec::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| io_err("setting the read timeout", e))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let mut line = format!("{from} ").into_bytes();
                one_line(&buf[..n], &mut line);
                write_out(output, &line)?;
                responders.push(from);
            }
            Err(e) if is_timeout(&e) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("receiving replies", e)),
        }
    }
    if responders.is_empty() {
        return Err(timed_out(options.timeout));
    }
    Ok(responders)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_out_of_range_are_refused_before_any_socket() {
        // Port 9 on loopback: nothing is sent, the options are refused first.
        let endpoint: Endpoint = "udp://127.0.0.1:9".parse().unwrap();
        for options in [
            SendOptions {
                timeout: Duration::ZERO,
                ..SendOptions::default()
            },
            SendOptions {
                timeout: Duration::MAX,
                ..SendOptions::default()
            },
            SendOptions {
                max_line: 0,
                ..SendOptions::default()
            },
        ] {
            let err = send(&endpoint, &b"x"[..], &mut Vec::new(), &options).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Usage, "{err}");
            let err = broadcast(&endpoint, &b"x"[..], &mut Vec::new(), &options).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Usage, "{err}");
        }
    }

    #[test]
    fn a_broadcast_reply_stays_on_one_line() {
        let mut line = Vec::new();
        super::one_line(b"Saturday\r\n", &mut line);
        super::one_line(b"a\nb\rc\n", &mut line);
        super::one_line(b"plain", &mut line);
        assert_eq!(line, b"Saturday\na\\nb\\rc\nplain\n");
    }
}
