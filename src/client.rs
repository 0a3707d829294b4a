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
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

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
    /// Default 5 s.
    pub timeout: Duration,
}

impl Default for SendOptions {
    fn default() -> SendOptions {
        SendOptions {
            bind: None,
            timeout: Duration::from_secs(5),
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
/// # Errors
///
/// [`Error::Connect`] when no address accepts the connection (refused: kind `Refused`),
/// [`Error::TimedOut`] when the reply does not come in time, [`Error::NameNotFound`] for a host
/// that does not resolve, [`Error::Config`] for a datagram message larger than one datagram.
pub fn send(
    endpoint: &Endpoint,
    input: impl Read + Send + 'static,
    output: &mut dyn Write,
    options: &SendOptions,
) -> Result<SendReport, Error> {
    if endpoint.transport().is_stream() {
        let stream = StreamClient::connect(endpoint, options)?;
        let (local, peer) = stream.addresses()?;
        tracing::debug!("connected from {local} to {peer}");
        let (sent, received) = stream.pump(Box::new(input), output, Some(options.timeout), true)?;
        return Ok(SendReport {
            local,
            peer,
            sent,
            received,
        });
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
    if endpoint.transport().is_stream() {
        let stream = StreamClient::connect(endpoint, options)?;
        let (local, peer) = stream.addresses()?;
        tracing::debug!("connected from {local} to {peer}");
        let (sent, received) = stream.pump(Box::new(input), output, None, half_close)?;
        return Ok(SendReport {
            local,
            peer,
            sent,
            received,
        });
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
        .map_err(|e| io_err("writing the reply", e))
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
        let sender = {
            let sent = sent.clone();
            std::thread::Builder::new()
                .name("socketkit-send".into())
                .spawn(move || -> io::Result<()> {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match input.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(e),
                        };
                        writer.write_all(&buf[..n])?;
                        sent.fetch_add(n as u64, Ordering::Relaxed);
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
        if sender.is_finished() {
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
    _own_path: Option<OwnPath>,
}

enum DatagramSocket {
    Udp(UdpSocket),
    /// A Unix datagram client binds a path of its own, or the server could not reply.
    Unix(UnixDatagram, PathBuf),
}

/// The client's own Unix socket path, removed on drop.
struct OwnPath(PathBuf);

impl Drop for OwnPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl DatagramClient {
    fn connect(endpoint: &Endpoint, options: &SendOptions) -> Result<DatagramClient, Error> {
        if let Endpoint::UnixDatagram(path) = endpoint {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let own = std::env::temp_dir().join(format!(
                "socketkit-client-{}-{}.sock",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let socket = UnixDatagram::bind(&own).map_err(|source| Error::Bind {
                endpoint: Endpoint::UnixDatagram(own.clone()),
                source,
            })?;
            let own = OwnPath(own);
            socket.connect(path).map_err(|source| Error::Connect {
                endpoint: endpoint.clone(),
                source,
            })?;
            socket
                .set_read_timeout(Some(options.timeout))
                .map_err(|e| io_err("setting the read timeout", e))?;
            return Ok(DatagramClient {
                endpoint: endpoint.clone(),
                local: Address::Unix(Some(own.0.clone())),
                socket: DatagramSocket::Unix(socket, path.clone()),
                addrs: Vec::new(),
                current: 0,
                bind: options.bind,
                timeout: options.timeout,
                _own_path: Some(own),
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
            _own_path: None,
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
        let mut buf = vec![0u8; 65_536];
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
