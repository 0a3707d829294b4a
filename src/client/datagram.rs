//! The datagram client (UDP and Unix datagrams): one request, one reply, on a connected socket.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::errors::{io_err, is_timeout, no_address_for_bind, timed_out};
use super::options::SendOptions;
use super::stream::unix_server_address;
use crate::dump::{Direction, Dump};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::limits::MAX_DATAGRAM_BYTES;
use crate::service::Address;

/// A datagram socket connected to the server: it hears only from the server, and learns of a
/// closed port (ICMP port unreachable) as "connection refused".
pub(super) struct DatagramClient {
    endpoint: Endpoint,
    socket: DatagramSocket,
    /// UDP: every address the name resolved to; a refusal moves on to the next.
    addrs: Vec<SocketAddr>,
    current: usize,
    pub(super) local: Address,
    bind: Option<SocketAddr>,
    timeout: Duration,
    /// `--dump`: where each datagram each way is shown.
    dump: Option<Dump>,
}

enum DatagramSocket {
    Udp(UdpSocket),
    /// A Unix datagram client binds a name of its own, or the server could not reply; the
    /// server's address (a path or an abstract name) beside it.
    Unix(UnixDatagram, Address),
}

impl DatagramClient {
    pub(super) fn connect(
        endpoint: &Endpoint,
        options: &SendOptions,
    ) -> Result<DatagramClient, Error> {
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
                dump: options.dump.clone(),
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
            dump: options.dump.clone(),
        })
    }

    pub(super) fn peer(&self) -> Address {
        match &self.socket {
            DatagramSocket::Udp(_) => Address::Inet(self.addrs[self.current]),
            DatagramSocket::Unix(_, server) => server.clone(),
        }
    }

    /// Sends one datagram and waits for nothing (`--no-wait`).
    pub(super) fn send_only(&mut self, message: &[u8]) -> Result<(), Error> {
        let sent = match &self.socket {
            DatagramSocket::Udp(s) => s.send(message),
            DatagramSocket::Unix(s, _) => s.send(message),
        };
        if sent.is_ok()
            && let Some(dump) = &self.dump
        {
            dump.chunk(&self.peer(), Direction::Sent, message);
        }
        sent.map(drop).map_err(|source| Error::Connect {
            endpoint: self.endpoint.clone(),
            source,
        })
    }

    /// Sends one datagram and waits for the one reply.
    pub(super) fn request(&mut self, message: &[u8]) -> Result<Vec<u8>, Error> {
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
            let peer = self.peer();
            let tap = |direction, bytes: &[u8]| {
                if let Some(dump) = &self.dump {
                    dump.chunk(&peer, direction, bytes);
                }
            };
            let outcome = match &self.socket {
                DatagramSocket::Udp(s) => s.send(message).and_then(|_| {
                    tap(Direction::Sent, message);
                    s.recv(&mut buf)
                }),
                DatagramSocket::Unix(s, _) => s.send(message).and_then(|_| {
                    tap(Direction::Sent, message);
                    s.recv(&mut buf)
                }),
            };
            match outcome {
                Ok(n) => {
                    buf.truncate(n);
                    tap(Direction::Received, &buf);
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
