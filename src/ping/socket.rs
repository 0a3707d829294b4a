//! The ICMP socket: an unprivileged datagram ("ping") socket where the system allows one, a raw
//! socket otherwise, as iputils chooses. socket2 makes it; nix's `recvmsg` reads the TTL (or
//! hop limit) that comes as a control message.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use nix::sys::socket::{MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::icmp::Layout;
use crate::Error;

/// Where the kernel's rule for unprivileged ICMP sockets lives.
const PING_GROUP_RANGE: &str = "/proc/sys/net/ipv4/ping_group_range";

/// Which kind of ICMP socket a `Pinger` uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketKind {
    /// An unprivileged ICMP datagram socket (`SOCK_DGRAM`, allowed by `ping_group_range`).
    Datagram,
    /// A raw socket (`SOCK_RAW`: root or `CAP_NET_RAW`).
    Raw,
}

impl SocketKind {
    /// `datagram` or `raw`.
    pub fn name(self) -> &'static str {
        match self {
            SocketKind::Datagram => "datagram",
            SocketKind::Raw => "raw",
        }
    }
}

/// An open ICMP socket of either kind, for one family.
pub(crate) struct IcmpSocket {
    socket: Socket,
    kind: SocketKind,
    v6: bool,
    /// Room for the largest IP packet (65,535 bytes) and one byte more to see truncation.
    buffer: Vec<u8>,
}

/// One datagram read from the socket.
pub(crate) struct Received<'a> {
    pub(crate) bytes: &'a [u8],
    pub(crate) from: Option<IpAddr>,
    /// The TTL or hop limit from the control message, when one came.
    pub(crate) ttl: Option<u8>,
}

impl IcmpSocket {
    /// Opens a datagram ICMP socket, or a raw one where that is refused; a clear error naming
    /// both ways when neither is allowed.
    pub(crate) fn open(v6: bool) -> Result<IcmpSocket, Error> {
        let (domain, protocol) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        let (socket, kind) = match Socket::new(domain, Type::DGRAM, Some(protocol)) {
            Ok(socket) => (socket, SocketKind::Datagram),
            Err(e) if is_denied(&e) => match Socket::new(domain, Type::RAW, Some(protocol)) {
                Ok(socket) => (socket, SocketKind::Raw),
                Err(e) if is_denied(&e) => return Err(Error::io(not_allowed(), e)),
                Err(e) => return Err(Error::io("cannot open a raw ICMP socket", e)),
            },
            Err(e) => return Err(Error::io("cannot open an ICMP datagram socket", e)),
        };
        socket
            .set_nonblocking(true)
            .map_err(|e| Error::io("cannot make the ICMP socket non-blocking", e))?;
        let fd = socket.as_fd();
        let asked = if v6 {
            setsockopt(&fd, sockopt::Ipv6RecvHopLimit, &true)
        } else if kind == SocketKind::Datagram {
            setsockopt(&fd, sockopt::Ipv4RecvTtl, &true)
        } else {
            Ok(()) // a raw IPv4 socket reads the TTL from the IP header
        };
        asked.map_err(|e| Error::io("cannot ask for the TTL of replies", e.into()))?;
        if kind == SocketKind::Datagram {
            // Binding port 0 makes the kernel pick the identifier (the "port") now, so that
            // replies can be matched by it from the first one.
            let any: SocketAddr = if v6 {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            };
            socket
                .bind(&any.into())
                .map_err(|e| Error::io("cannot bind the ICMP datagram socket", e))?;
        }
        Ok(IcmpSocket {
            socket,
            kind,
            v6,
            buffer: vec![0; 65_536],
        })
    }

    pub(crate) fn kind(&self) -> SocketKind {
        self.kind
    }

    /// The layout of what this socket receives.
    pub(crate) fn layout(&self) -> Layout {
        match (self.v6, self.kind) {
            (true, _) => Layout::V6,
            (false, SocketKind::Datagram) => Layout::V4,
            (false, SocketKind::Raw) => Layout::V4WithIpHeader,
        }
    }

    /// On a datagram socket, the identifier the kernel writes into every request (and expects
    /// in replies): the socket's local port.
    pub(crate) fn kernel_id(&self) -> Result<Option<u16>, Error> {
        if self.kind == SocketKind::Raw {
            return Ok(None);
        }
        let local = self
            .socket
            .local_addr()
            .map_err(|e| Error::io("cannot read the ICMP socket's identifier", e))?;
        Ok(local.as_socket().map(|a| a.port()))
    }

    /// Sends one ICMP message to `target`.
    pub(crate) fn send(&self, packet: &[u8], target: IpAddr) -> io::Result<()> {
        let to: SockAddr = SocketAddr::new(target, 0).into();
        self.socket.send_to(packet, &to).map(|_| ())
    }

    /// Waits until a packet can be read or `wait` passes (`Ok(false)`); a signal ends the wait
    /// early (`Ok(false)` too), so the caller sees a stop flag at once.
    pub(crate) fn wait_readable(&self, wait: Duration) -> io::Result<bool> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        // Whole milliseconds, rounded up so a short wait does not spin; at most 200 ms, which
        // bounds how late a stop flag set just before the poll is seen.
        let ms = wait.as_micros().div_ceil(1000).min(200) as u16;
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads one packet without waiting: `Ok(None)` when none is queued.
    pub(crate) fn recv(&mut self) -> io::Result<Option<Received<'_>>> {
        let mut control = nix::cmsg_space!(libc::c_int);
        let (len, from, ttl) = {
            let mut iov = [IoSliceMut::new(&mut self.buffer)];
            let message = match recvmsg::<SockaddrStorage>(
                self.socket.as_raw_fd(),
                &mut iov,
                Some(&mut control),
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(message) => message,
                Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let from = message.address.and_then(|a| {
                a.as_sockaddr_in()
                    .map(|a| IpAddr::V4(a.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
            });
            let mut ttl = None;
            if let Ok(cmsgs) = message.cmsgs() {
                for cmsg in cmsgs {
                    use nix::sys::socket::ControlMessageOwned as C;
                    match cmsg {
                        C::Ipv4Ttl(t) | C::Ipv6HopLimit(t) => ttl = u8::try_from(t).ok(),
                        _ => {}
                    }
                }
            }
            (message.bytes, from, ttl)
        };
        Ok(Some(Received {
            bytes: &self.buffer[..len],
            from,
            ttl,
        }))
    }
}

fn is_denied(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM))
}

/// The error when neither kind of socket may be opened: both ways to allow one.
fn not_allowed() -> String {
    let range = std::fs::read_to_string(PING_GROUP_RANGE)
        .map(|r| r.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unreadable".into());
    format!(
        "not allowed to open an ICMP socket: an unprivileged ICMP datagram socket needs the \
         process's group inside net.ipv4.ping_group_range (now \"{range}\"; e.g. sysctl -w \
         net.ipv4.ping_group_range=\"0 2147483647\"), a raw socket needs root or CAP_NET_RAW \
         (e.g. setcap cap_net_raw+ep on the binary)"
    )
}
