//! The one-shot client behind `socketkit send`: connect, send a message, print the reply.
//!
//! On a stream it behaves like the slides' TCP client grown up: it writes the whole message,
//! half-closes its write side (the server then reads EOF, the "0 bytes after close()" of the
//! slides), and copies every byte of the reply until the server closes. On datagrams it sends one
//! datagram and returns the one reply.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::server::MAX_DATAGRAM_BYTES;
use crate::service::Address;

/// How [`send`] behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendOptions {
    /// The local address to send from (the slides' `bind(('127.0.0.1', 0))`); port 0 lets the
    /// system choose. Default: none, the system chooses address and port.
    pub bind: Option<SocketAddr>,
    /// How long to wait for the connection, and for each piece of the reply. Default 5 s.
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

/// What [`send`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SendReport {
    /// The client's own address (`getsockname`).
    pub local: Address,
    /// The server's address that answered.
    pub peer: Address,
    /// Bytes sent.
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
    input: impl Read + Send,
    output: &mut dyn Write,
    options: &SendOptions,
) -> Result<SendReport, Error> {
    match endpoint {
        Endpoint::Tcp { .. } => {
            let stream = connect_tcp(endpoint, options)?;
            let local = Address::Inet(stream.local_addr().map_err(|e| io_err("getsockname", e))?);
            let peer = Address::Inet(stream.peer_addr().map_err(|e| io_err("getpeername", e))?);
            tracing::debug!("connected from {local} to {peer}");
            let reader = stream.try_clone().map_err(|e| io_err("dup", e))?;
            let (sent, received) = exchange(reader, stream, input, output, options.timeout)?;
            Ok(SendReport {
                local,
                peer,
                sent,
                received,
            })
        }
        Endpoint::Unix(path) => {
            let stream = UnixStream::connect(path).map_err(|source| Error::Connect {
                endpoint: endpoint.clone(),
                source,
            })?;
            let local = Address::Unix(None);
            let peer = Address::Unix(Some(path.clone()));
            tracing::debug!("connected to {peer}");
            let reader = stream.try_clone().map_err(|e| io_err("dup", e))?;
            let (sent, received) = exchange(reader, stream, input, output, options.timeout)?;
            Ok(SendReport {
                local,
                peer,
                sent,
                received,
            })
        }
        Endpoint::Udp { .. } | Endpoint::UnixDatagram(_) => {
            let message = read_datagram(input)?;
            let (reply, local, peer) = if let Endpoint::UnixDatagram(path) = endpoint {
                unix_datagram_exchange(endpoint, path, &message, options)?
            } else {
                udp_exchange(endpoint, &message, options)?
            };
            output
                .write_all(&reply)
                .and_then(|()| output.flush())
                .map_err(|e| io_err("writing the reply", e))?;
            Ok(SendReport {
                local,
                peer,
                sent: message.len() as u64,
                received: reply.len() as u64,
            })
        }
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

/// Tries every address the endpoint resolves to, in order, as Python's `create_connection` does.
fn connect_tcp(endpoint: &Endpoint, options: &SendOptions) -> Result<TcpStream, Error> {
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
            Ok(stream) => return Ok(stream),
            Err(e) => {
                tracing::debug!("connecting to {addr} failed: {e}");
                last = Some(e);
            }
        }
    }
    let source = last.unwrap_or_else(|| {
        io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "no address of the --bind address's family",
        )
    });
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

/// Writes `input` on one thread while the reply is copied on this one, so a large message and
/// a server that streams its reply back cannot deadlock on full socket buffers.
fn exchange<S>(
    mut reader: S,
    mut writer: S,
    mut input: impl Read + Send,
    output: &mut dyn Write,
    timeout: Duration,
) -> Result<(u64, u64), Error>
where
    S: Read + Write + Send + HalfClose + ReadTimeout,
{
    reader
        .set_read_timeout(Some(timeout))
        .map_err(|e| io_err("setting the read timeout", e))?;
    std::thread::scope(|scope| {
        let sending = scope.spawn(move || {
            let sent = io::copy(&mut input, &mut writer)?;
            writer.shutdown_write()?; // the server reads EOF: the request is complete
            Ok::<u64, io::Error>(sent)
        });
        let mut received = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let read_result = loop {
            match reader.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    received += n as u64;
                    if let Err(e) = output.write_all(&buf[..n]).and_then(|()| output.flush()) {
                        break Err(io_err("writing the reply", e));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_timeout(&e) => break Err(timed_out(timeout)),
                Err(e) => break Err(io_err("reading the reply", e)),
            }
        };
        if read_result.is_err() {
            // Unblock the sender (it may wait on a server that no longer reads).
            let _ = reader.shutdown_both();
        }
        let sent = sending.join().expect("the sending thread panicked");
        read_result?;
        match sent {
            Ok(sent) => Ok((sent, received)),
            // The server answered and closed before reading everything (the slides' servers
            // read one recv(1024)): the reply is what counts.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                tracing::debug!("the server closed before reading everything: {e}");
                Ok((0, received))
            }
            Err(e) => Err(io_err("sending", e)),
        }
    })
}

/// Stream sockets that can close one direction.
trait HalfClose {
    fn shutdown_write(&self) -> io::Result<()>;
    fn shutdown_both(&self) -> io::Result<()>;
}

/// Stream sockets with a read time-out.
trait ReadTimeout {
    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()>;
}

macro_rules! stream_socket {
    ($ty:ty) => {
        impl HalfClose for $ty {
            fn shutdown_write(&self) -> io::Result<()> {
                self.shutdown(Shutdown::Write)
            }
            fn shutdown_both(&self) -> io::Result<()> {
                self.shutdown(Shutdown::Both)
            }
        }
        impl ReadTimeout for $ty {
            fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
                <$ty>::set_read_timeout(self, timeout)
            }
        }
    };
}
stream_socket!(TcpStream);
stream_socket!(UnixStream);

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

fn udp_exchange(
    endpoint: &Endpoint,
    message: &[u8],
    options: &SendOptions,
) -> Result<(Vec<u8>, Address, Address), Error> {
    let mut last = None;
    for addr in endpoint.socket_addrs()? {
        if options.bind.is_some_and(|b| b.is_ipv4() != addr.is_ipv4()) {
            continue;
        }
        let local_bind = options.bind.unwrap_or_else(|| {
            let any: SocketAddr = if addr.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            any
        });
        let socket = UdpSocket::bind(local_bind).map_err(|source| Error::Bind {
            endpoint: Endpoint::udp(local_bind),
            source,
        })?;
        // A connected socket hears only from the server, and learns of a closed port (ICMP).
        socket.connect(addr).map_err(|e| io_err("connect", e))?;
        let local = Address::Inet(socket.local_addr().map_err(|e| io_err("getsockname", e))?);
        tracing::debug!("sending from {local} to {addr}");
        socket
            .set_read_timeout(Some(options.timeout))
            .map_err(|e| io_err("setting the read timeout", e))?;
        let outcome = socket.send(message).and_then(|_| {
            let mut buf = vec![0u8; 65_536];
            socket.recv(&mut buf).map(|n| {
                buf.truncate(n);
                buf
            })
        });
        match outcome {
            Ok(reply) => return Ok((reply, local, Address::Inet(addr))),
            Err(e) if is_timeout(&e) => return Err(timed_out(options.timeout)),
            Err(e) => {
                tracing::debug!("{addr}: {e}");
                last = Some(e);
            }
        }
    }
    Err(Error::Connect {
        endpoint: endpoint.clone(),
        source: last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "no address of the --bind address's family",
            )
        }),
    })
}

/// A Unix datagram client must bind a path of its own, or the server has nowhere to reply.
fn unix_datagram_exchange(
    endpoint: &Endpoint,
    path: &PathBuf,
    message: &[u8],
    options: &SendOptions,
) -> Result<(Vec<u8>, Address, Address), Error> {
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
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(own.clone());
    socket.connect(path).map_err(|source| Error::Connect {
        endpoint: endpoint.clone(),
        source,
    })?;
    socket
        .set_read_timeout(Some(options.timeout))
        .map_err(|e| io_err("setting the read timeout", e))?;
    socket.send(message).map_err(|e| io_err("sending", e))?;
    let mut buf = vec![0u8; 65_536];
    let n = socket.recv(&mut buf).map_err(|e| {
        if is_timeout(&e) {
            timed_out(options.timeout)
        } else {
            io_err("receiving", e)
        }
    })?;
    buf.truncate(n);
    Ok((
        buf,
        Address::Unix(Some(own)),
        Address::Unix(Some(path.clone())),
    ))
}
