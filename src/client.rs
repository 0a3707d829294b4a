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
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use socket2::{Domain, Socket, Type};

use crate::codec::{Framing, MessageCodec};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::server::MAX_DATAGRAM_BYTES;
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
        }
    }
}

impl SendOptions {
    /// Refuses options no client can run with, as the command line does: a time-out of zero
    /// (there is no zero "none") or over [`crate::MAX_TIMEOUT`], a zero line or frame limit.
    fn check(&self) -> Result<(), Error> {
        if self.timeout.is_zero() || self.timeout > crate::MAX_TIMEOUT {
            return Err(Error::Config(format!(
                "the time-out must be more than zero and at most 365 days, not {:?}",
                self.timeout
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
/// # Errors
///
/// [`Error::Connect`] when no address accepts the connection (refused: kind `Refused`),
/// [`Error::TimedOut`] when the reply does not come in time, [`Error::NameNotFound`] for a host
/// that does not resolve, [`Error::Config`] for a datagram message larger than one datagram
/// or for options out of range (a zero time-out).
pub fn send(
    endpoint: &Endpoint,
    input: impl Read + Send + 'static,
    output: &mut dyn Write,
    options: &SendOptions,
) -> Result<SendReport, Error> {
    options.check()?;
    if endpoint.transport().is_stream() {
        let stream = StreamClient::connect(endpoint, options)?;
        let input = Box::new(io::BufReader::new(input));
        return stream.exchange(input, output, Some(options.timeout), true, options);
    }
    let message = read_datagram(input)?;
    let mut client = DatagramClient::connect(endpoint, options)?;
    let reply = client.request(&message)?;
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
/// As [`send`]; and [`Error::TimedOut`] at the end when any datagram went unanswered.
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
        let stream = StreamClient::connect(endpoint, options)?;
        return stream.exchange(Box::new(input), output, None, half_close, options);
    }
    let mut client = DatagramClient::connect(endpoint, options)?;
    let mut report = SendReport {
        local: client.local.clone(),
        peer: client.peer(),
        sent: 0,
        received: 0,
    };
    let mut missed = 0usize;
    let mut lines = input.split(b'\n');
    loop {
        if let Some(prompt) = prompt {
            write!(output, "{prompt}")
                .and_then(|()| output.flush())
                .map_err(|e| io_err("writing the prompt", e))?;
        }
        let Some(line) = lines.next() else { break };
        let mut line = line.map_err(|e| io_err("reading input", e))?;
        if line.last() == Some(&b'\r') {
            line.pop();
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
    Unix(UnixStream, PathBuf),
}

impl StreamClient {
    fn connect(endpoint: &Endpoint, options: &SendOptions) -> Result<StreamClient, Error> {
        if let Endpoint::Unix(path) = endpoint {
            return UnixStream::connect(path)
                .map(|s| StreamClient::Unix(s, path.clone()))
                .map_err(|source| Error::Connect {
                    endpoint: endpoint.clone(),
                    source,
                });
        }
        // Every address in turn, as Python's `create_connection` does.
        let mut last = None;
        for addr in endpoint.socket_addrs()? {
            if options.bind.is_some_and(|b| b.is_ipv4() != addr.is_ipv4()) {
                continue;
            }
            let attempt = (|| {
                let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
                if let Some(bind) = options.bind {
                    socket.bind(&bind.into())?;
                }
                socket.connect_timeout(&addr.into(), options.timeout)?;
                Ok::<_, io::Error>(TcpStream::from(socket))
            })();
            match attempt {
                Ok(stream) => return Ok(StreamClient::Tcp(stream)),
                Err(e) => {
                    tracing::debug!("connecting to {addr} failed: {e}");
                    last = Some(e);
                }
            }
        }
        let source = last.unwrap_or_else(no_address_for_bind);
        if is_timeout(&source) {
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
            StreamClient::Unix(_, path) => {
                Ok((Address::Unix(None), Address::Unix(Some(path.clone()))))
            }
        }
    }

    fn try_clone(&self) -> io::Result<StreamClient> {
        Ok(match self {
            StreamClient::Tcp(s) => StreamClient::Tcp(s.try_clone()?),
            StreamClient::Unix(s, path) => StreamClient::Unix(s.try_clone()?, path.clone()),
        })
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            StreamClient::Tcp(s) => s.shutdown(how),
            StreamClient::Unix(s, _) => s.shutdown(how),
        }
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            StreamClient::Tcp(s) => s.set_read_timeout(timeout),
            StreamClient::Unix(s, _) => s.set_read_timeout(timeout),
        }
    }

    /// Runs the exchange, through the framing codecs when the options ask for them.
    fn exchange(
        self,
        input: Box<dyn BufRead + Send>,
        output: &mut dyn Write,
        read_timeout: Option<Duration>,
        half_close: bool,
        options: &SendOptions,
    ) -> Result<SendReport, Error> {
        let (local, peer) = self.addresses()?;
        tracing::debug!("connected from {local} to {peer}");
        let (sent, received) = match (options.codec(), options.codec()) {
            (Some(encoder), Some(decoder)) => {
                let framed_input = FrameInput {
                    input,
                    codec: encoder,
                    pending: BytesMut::new(),
                };
                let mut framed_output = FrameOutput {
                    output,
                    codec: decoder,
                    buffer: BytesMut::new(),
                };
                let input = Box::new(framed_input);
                let counts = self.pump(input, &mut framed_output, read_timeout, half_close)?;
                framed_output.finish()?;
                counts
            }
            _ => self.pump(input, output, read_timeout, half_close)?,
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
    /// deadlock on full buffers. Returns when the server closes (or a read times out); a
    /// sender still blocked on its input (a terminal) is left behind, as nc does.
    fn pump(
        self,
        mut input: Box<dyn Read + Send>,
        output: &mut dyn Write,
        read_timeout: Option<Duration>,
        half_close: bool,
    ) -> Result<(u64, u64), Error> {
        let mut writer = self.try_clone().map_err(|e| io_err("dup", e))?;
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicBool::new(false));
        let sender = {
            let sent = sent.clone();
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
                        if let Err(e) = writer.write_all(&buf[..n]) {
                            break Err(e);
                        }
                        sent.fetch_add(n as u64, Ordering::Relaxed);
                    };
                    if let Err(e) = copied {
                        // Wake the reader (the exchange cannot complete), saying why first.
                        failed.store(true, Ordering::SeqCst);
                        let _ = writer.shutdown(Shutdown::Both);
                        return Err(e);
                    }
                    if half_close {
                        writer.shutdown(Shutdown::Write)?; // the server reads EOF
                    }
                    Ok(())
                })
                .map_err(|e| io_err("cannot start the sending thread", e))?
        };
        let mut reader = self;
        reader
            .set_read_timeout(read_timeout)
            .map_err(|e| io_err("setting the read timeout", e))?;
        let mut received = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let read_result = loop {
            match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    received += n as u64;
                    if let Err(e) = write_out(output, &buf[..n]) {
                        break Err(e);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => break Err(timed_out(read_timeout.unwrap_or_default())),
                Err(e) => break Err(io_err("reading the reply", e)),
            }
        };
        if read_result.is_err() {
            let _ = reader.shutdown(Shutdown::Both); // unblock a sender waiting on the server
        }
        read_result?;
        // A sender still blocked on its input (a terminal) is left behind; one that failed is
        // heard, even if it has not quite returned yet.
        if failed.load(Ordering::SeqCst) || sender.is_finished() {
            match sender.join().expect("the sending thread panicked") {
                Ok(()) => {}
                // The server answered and closed before reading everything (the slides'
                // servers read one recv(1024)): the reply is what counts.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                    ) =>
                {
                    tracing::debug!("the server closed before reading everything: {e}");
                }
                // Only the framing adapter reports InvalidInput: a message too large for a frame.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    return Err(Error::Config(format!("cannot send: {e}")));
                }
                Err(e) => return Err(io_err("sending", e)),
            }
        }
        Ok((sent.load(Ordering::Relaxed), received))
    }
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
    /// A Unix datagram client binds a path of its own, or the server could not reply.
    Unix(UnixDatagram, PathBuf),
}

impl DatagramClient {
    fn connect(endpoint: &Endpoint, options: &SendOptions) -> Result<DatagramClient, Error> {
        if let Endpoint::UnixDatagram(path) = endpoint {
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
            socket.connect(path).map_err(|source| Error::Connect {
                endpoint: endpoint.clone(),
                source,
            })?;
            socket
                .set_read_timeout(Some(options.timeout))
                .map_err(|e| io_err("setting the read timeout", e))?;
            return Ok(DatagramClient {
                endpoint: endpoint.clone(),
                local: Address::Abstract(name.into_bytes()),
                socket: DatagramSocket::Unix(socket, path.clone()),
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
            DatagramSocket::Unix(_, path) => Address::Unix(Some(path.clone())),
        }
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
    pending: BytesMut,
}

impl Read for FrameInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            let mut line = Vec::new();
            if self.input.read_until(b'\n', &mut line)? == 0 {
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
            self.codec
                .encode(&line, terminator, &mut self.pending)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

/// Decodes reply messages from the stream and writes each payload on a line of its own.
struct FrameOutput<'a> {
    output: &'a mut dyn Write,
    codec: MessageCodec,
    buffer: BytesMut,
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
                    self.output.write_all(&message.payload)?;
                    self.output.write_all(b"\n")?;
                }
                None => return self.output.flush(),
            }
        }
    }

    /// The stream ended: a last line without newline still counts; half a frame does not.
    fn finish(mut self) -> Result<(), Error> {
        self.emit(true).map_err(output_error)
    }
}

impl Write for FrameOutput<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
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
