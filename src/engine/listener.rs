//! Listening sockets, made with socket2 so that backlog, SO_REUSEADDR and IPV6_V6ONLY are ours
//! to set. No option may let a second server bind an address in use: SO_REUSEADDR is set on
//! TCP only, SO_REUSEPORT nowhere, and a Unix socket file is removed only when nothing answers
//! on it. Every listener is bound before serving starts, so port 0 is known early (Python's
//! `bind_and_activate`), and is non-blocking: the blocking engines wait in `poll` beside the
//! shutdown trigger, and the async engine adopts the socket as it is.

use std::io;
use std::net::SocketAddr;
use std::os::unix::net::{UnixDatagram, UnixListener};

use socket2::{Domain, SockAddr, Socket, Type};

use super::socket_file::{SocketFile, remove_if_stale};
use crate::endpoint::{Endpoint, Transport};
use crate::error::Error;
use crate::limits::Limits;

/// A bound, listening socket of any transport.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
    Unix(UnixListener, SocketFile),
    UnixDatagram(UnixDatagram, SocketFile),
}

impl Listener {
    /// Binds `endpoint`. A name is resolved and the first address bound (as Python does).
    pub(crate) fn bind(endpoint: &Endpoint, limits: &Limits) -> Result<Listener, Error> {
        let bind_err = |source: io::Error| Error::Bind {
            endpoint: endpoint.clone(),
            source,
        };
        match endpoint {
            Endpoint::Tcp { .. } | Endpoint::Udp { .. } => {
                let addr = endpoint.socket_addrs()?[0];
                let stream = endpoint.transport() == Transport::Tcp;
                let socket = inet_socket(addr, stream, limits.backlog).map_err(bind_err)?;
                Ok(if stream {
                    Listener::Tcp(socket.into())
                } else {
                    Listener::Udp(socket.into())
                })
            }
            Endpoint::Unix(path) => {
                remove_if_stale(path, true);
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(bind_err)?;
                let address = SockAddr::unix(path).map_err(bind_err)?;
                let ((), file) =
                    SocketFile::bind(path, || socket.bind(&address)).map_err(bind_err)?;
                socket.listen(backlog(limits)).map_err(bind_err)?;
                socket.set_nonblocking(true).map_err(bind_err)?;
                Ok(Listener::Unix(socket.into(), file))
            }
            Endpoint::UnixDatagram(path) => {
                remove_if_stale(path, false);
                let (socket, file) =
                    SocketFile::bind(path, || UnixDatagram::bind(path)).map_err(bind_err)?;
                socket.set_nonblocking(true).map_err(bind_err)?;
                Ok(Listener::UnixDatagram(socket, file))
            }
        }
    }

    /// Refuses new connections from now on without closing the descriptor, which another
    /// thread may be polling: on Linux, `shutdown(SHUT_RD)` on a listening socket resets the
    /// queued connections and refuses new ones.
    pub(crate) fn stop_accepting(&self) {
        let result = match self {
            Listener::Tcp(l) => socket2::SockRef::from(l).shutdown(std::net::Shutdown::Read),
            Listener::Unix(l, _) => socket2::SockRef::from(l).shutdown(std::net::Shutdown::Read),
            Listener::Udp(_) | Listener::UnixDatagram(..) => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!("shutting a listener down: {e}");
        }
    }

    /// The endpoint actually bound: the real port when port 0 was asked for.
    pub(crate) fn local_endpoint(&self) -> io::Result<Endpoint> {
        Ok(match self {
            Listener::Tcp(l) => Endpoint::tcp(l.local_addr()?),
            Listener::Udp(s) => Endpoint::udp(s.local_addr()?),
            Listener::Unix(_, file) => Endpoint::Unix(file.path().to_path_buf()),
            Listener::UnixDatagram(_, file) => Endpoint::UnixDatagram(file.path().to_path_buf()),
        })
    }
}

fn backlog(limits: &Limits) -> i32 {
    i32::try_from(limits.backlog).unwrap_or(i32::MAX)
}

fn inet_socket(addr: SocketAddr, stream: bool, backlog_len: u32) -> io::Result<Socket> {
    let ty = if stream { Type::STREAM } else { Type::DGRAM };
    let socket = Socket::new(Domain::for_address(addr), ty, None)?;
    if stream {
        // Restarting a server must not fail while old connections sit in TIME_WAIT. Linux
        // still refuses a second listener on the port. On a UDP socket the option means
        // something else: a second socket may bind the same port and take its datagrams, so
        // a second server would silently take over a port in use (no TIME_WAIT to wait for).
        socket.set_reuse_address(true)?;
    }
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // `[::]` means every address, IPv4 included, whatever the system default says.
        socket.set_only_v6(false)?;
    }
    socket.bind(&addr.into())?;
    if stream {
        socket.listen(i32::try_from(backlog_len).unwrap_or(i32::MAX))?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}
