//! Listening sockets, made with socket2 so that backlog, SO_REUSEADDR and IPV6_V6ONLY are ours
//! to set. No option may let a second server bind an address in use: SO_REUSEADDR is set on
//! TCP and on multicast group listeners only (see [`group_socket`]), SO_REUSEPORT nowhere, and a Unix socket file is removed only when nothing answers
//! on it (an abstract socket, `unix://@name`, has no file: a name in use is simply refused).
//! Every listener is bound before serving starts, so port 0 is known early (Python's
//! `bind_and_activate`), and is non-blocking: the blocking engines wait in `poll` beside the
//! shutdown trigger, and the async engine adopts the socket as it is.

use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::{Path, PathBuf};

use socket2::{Domain, SockAddr, Socket, Type};

use super::socket_file::{SocketFile, remove_if_stale, remove_if_stale_of};
use crate::endpoint::{Endpoint, Transport};
use crate::error::Error;
use crate::limits::Limits;
use crate::multicast::{self, MulticastInterface};
use crate::service::Address;

/// A bound, listening socket of any transport.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
    Unix(UnixListener, SocketFile),
    UnixDatagram(UnixDatagram, SocketFile),
    /// A Unix sequenced-packet listener (std has no type for it).
    UnixSeqpacket(Socket, SocketFile),
}

impl Listener {
    /// The transport this listener serves.
    pub(crate) fn transport(&self) -> Transport {
        match self {
            Listener::Tcp(_) => Transport::Tcp,
            Listener::Unix(..) => Transport::Unix,
            Listener::Udp(_) => Transport::Udp,
            Listener::UnixDatagram(..) => Transport::UnixDatagram,
            Listener::UnixSeqpacket(..) => Transport::UnixSeqpacket,
        }
    }

    /// The address this listener is bound to, as services see it in their context (an
    /// unnamed Unix socket, or one whose address cannot be read, as `Address::Unix(None)`).
    pub(crate) fn local(&self) -> Address {
        let local = match self {
            Listener::Tcp(l) => l.local_addr().map(Address::Inet),
            Listener::Unix(l, _) => l.local_addr().map(|a| Address::from(&a)),
            Listener::Udp(s) => s.local_addr().map(Address::Inet),
            Listener::UnixDatagram(s, _) => s.local_addr().map(|a| Address::from(&a)),
            Listener::UnixSeqpacket(l, _) => l.local_addr().map(|a| unix_address(&a)),
        };
        local.unwrap_or(Address::Unix(None))
    }

    /// Binds `endpoint`. A name is resolved and the first address bound (as Python does). A
    /// `udp://` multicast group joins the group on `interface` (`None`: the system's choice);
    /// other listeners ignore `interface`.
    pub(crate) fn bind(
        endpoint: &Endpoint,
        limits: &Limits,
        interface: Option<&MulticastInterface>,
    ) -> Result<Listener, Error> {
        let bind_err = |source: io::Error| Error::Bind {
            endpoint: endpoint.clone(),
            source,
        };
        match endpoint {
            Endpoint::Tcp { .. } | Endpoint::Tls { .. } | Endpoint::Udp { .. } => {
                let addr = endpoint.socket_addrs()?[0];
                let stream = endpoint.transport() == Transport::Tcp;
                if !stream && addr.ip().is_multicast() {
                    return group_socket(endpoint, addr, interface).map(Listener::Udp);
                }
                let socket = inet_socket(addr, stream, limits.backlog).map_err(bind_err)?;
                Ok(if stream {
                    Listener::Tcp(socket.into())
                } else {
                    Listener::Udp(socket.into())
                })
            }
            Endpoint::Unix(path) => {
                let socket = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(bind_err)?;
                let file = match endpoint.abstract_name() {
                    // No file: nothing stale to remove, nothing to remove after. A name in use
                    // is refused by bind (EADDRINUSE), as a port is.
                    Some(name) => {
                        socket
                            .bind(&abstract_addr(name).map_err(bind_err)?)
                            .map_err(bind_err)?;
                        SocketFile::none()
                    }
                    None => {
                        remove_if_stale(path, true);
                        let address = SockAddr::unix(path).map_err(bind_err)?;
                        SocketFile::bind(path, || socket.bind(&address))
                            .map_err(bind_err)?
                            .1
                    }
                };
                socket.listen(backlog(limits)).map_err(bind_err)?;
                socket.set_nonblocking(true).map_err(bind_err)?;
                Ok(Listener::Unix(socket.into(), file))
            }
            Endpoint::UnixDatagram(path) => {
                let (socket, file) = match endpoint.abstract_name() {
                    Some(name) => {
                        let socket =
                            Socket::new(Domain::UNIX, Type::DGRAM, None).map_err(bind_err)?;
                        socket
                            .bind(&abstract_addr(name).map_err(bind_err)?)
                            .map_err(bind_err)?;
                        (socket.into(), SocketFile::none())
                    }
                    None => {
                        remove_if_stale(path, false);
                        SocketFile::bind(path, || UnixDatagram::bind(path)).map_err(bind_err)?
                    }
                };
                socket.set_nonblocking(true).map_err(bind_err)?;
                Ok(Listener::UnixDatagram(socket, file))
            }
            Endpoint::UnixSeqpacket(path) => {
                let socket = crate::seqpacket::socket().map_err(bind_err)?;
                let explained = |e| bind_err(crate::seqpacket::wrong_kind(endpoint, e));
                let address = crate::seqpacket::address(endpoint).map_err(bind_err)?;
                let file = match endpoint.abstract_name() {
                    Some(_) => {
                        socket.bind(&address).map_err(bind_err)?;
                        SocketFile::none()
                    }
                    None => {
                        remove_if_stale_of(path, Type::SEQPACKET);
                        SocketFile::bind(path, || socket.bind(&address))
                            .map_err(explained)?
                            .1
                    }
                };
                socket.listen(backlog(limits)).map_err(bind_err)?;
                socket.set_nonblocking(true).map_err(bind_err)?;
                Ok(Listener::UnixSeqpacket(socket, file))
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
            Listener::UnixSeqpacket(l, _) => l.shutdown(std::net::Shutdown::Read),
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
            Listener::Unix(l, file) => Endpoint::Unix(unix_path(file, l.local_addr()?)),
            Listener::UnixDatagram(s, file) => {
                Endpoint::UnixDatagram(unix_path(file, s.local_addr()?))
            }
            Listener::UnixSeqpacket(l, file) => {
                let local = l
                    .local_addr()?
                    .as_unix()
                    .ok_or(io::ErrorKind::InvalidData)?;
                Endpoint::UnixSeqpacket(unix_path(file, local))
            }
        })
    }
}

/// The endpoint path of a bound Unix socket: the file's, or `@name` for an abstract socket.
fn unix_path(file: &SocketFile, local: std::os::unix::net::SocketAddr) -> PathBuf {
    use std::os::linux::net::SocketAddrExt;
    match (file.path(), local.as_abstract_name()) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(name)) => PathBuf::from(OsString::from_vec([b"@", name].concat())),
        (None, None) => local
            .as_pathname()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    }
}

/// A Linux abstract socket address: the name after a NUL byte, which socket2 reads as abstract.
///
/// # Errors
///
/// A name too long for `sun_path` (the parser refuses one; a hand-made `Endpoint` may not).
pub(super) fn abstract_addr(name: &[u8]) -> io::Result<SockAddr> {
    SockAddr::unix(OsString::from_vec([b"\0", name].concat()))
}

fn backlog(limits: &Limits) -> i32 {
    i32::try_from(limits.backlog).unwrap_or(i32::MAX)
}

/// A socket bound to a multicast group's address and joined to the group.
///
/// SO_REUSEADDR is set, unlike on unicast UDP listeners: several receivers of one group and
/// port on one host are the normal case (two services, or a test server beside a real one),
/// and on a multicast address the option shares without stealing. Every socket bound to the
/// group and port gets its own copy of each datagram sent to the group, and a socket bound
/// to a group address never receives unicast datagrams, so no second server can take a port's
/// traffic away from the first (the reason unicast UDP sets no such option). A unicast
/// listener on the same port (bound without the option) still excludes group listeners and
/// is excluded by them: exit 7. SO_REUSEPORT is not needed for this and would let the
/// kernel balance unicast datagrams between sockets. IP_MULTICAST_ALL (IPV6_MULTICAST_ALL)
/// is off, so the socket receives the group only on the interface it joined it on, not on
/// every interface where some other socket of the host joined it.
fn group_socket(
    endpoint: &Endpoint,
    group: SocketAddr,
    interface: Option<&MulticastInterface>,
) -> Result<std::net::UdpSocket, Error> {
    let bind_err = |source: io::Error| Error::Bind {
        endpoint: endpoint.clone(),
        source,
    };
    let addr = multicast::bind_addr(group, interface)?;
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None).map_err(bind_err)?;
    socket.set_reuse_address(true).map_err(bind_err)?;
    // Linux delivers a group's datagrams to every socket bound to the group and port when
    // any socket on the host joined the group on the arriving interface (IP_MULTICAST_ALL
    // defaults to on), so `--multicast-if eth0` would still hear the group from eth1. Off,
    // the socket hears only the memberships it made itself.
    match addr {
        SocketAddr::V4(_) => socket.set_multicast_all_v4(false),
        SocketAddr::V6(_) => socket.set_multicast_all_v6(false),
    }
    .map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    multicast::join(&socket, addr, interface, endpoint)?;
    socket.set_nonblocking(true).map_err(bind_err)?;
    Ok(socket.into())
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

/// A Unix socket address from socket2 (a sequenced-packet peer's or listener's).
pub(crate) fn unix_address(addr: &socket2::SockAddr) -> Address {
    addr.as_unix()
        .map_or(Address::Unix(None), |a| Address::from(&a))
}
