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
            // A datagram socket is told of ICMP errors about its requests only through its
            // error queue, and only when it asks (iputils asks too); a raw socket reads the
            // error messages themselves, as packets.
            let asked = if v6 {
                setsockopt(&fd, sockopt::Ipv6RecvErr, &true)
            } else {
                setsockopt(&fd, sockopt::Ipv4RecvErr, &true)
            };
            asked.map_err(|e| Error::io("cannot ask for ICMP errors", e.into()))?;
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

    /// Waits until a packet (or an error) can be read or `wait` passes (`Ok(false)`); a signal
    /// ends the wait early (`Ok(false)` too), so the caller sees a stop flag at once.
    pub(crate) fn wait_readable(&self, wait: Duration) -> io::Result<bool> {
        wait_readable(self.socket.as_fd(), wait)
    }

    /// Reads one ICMP error about our requests from the error queue without waiting, on a
    /// datagram socket (`Ok(None)` when none is queued, and always on a raw socket, which reads
    /// the error messages as packets).
    pub(crate) fn recv_error(&mut self) -> io::Result<Option<QueuedError>> {
        if self.kind == SocketKind::Raw {
            return Ok(None);
        }
        // The error, and the TTL or hop limit asked for, which come with it.
        let mut control =
            nix::cmsg_space!(libc::sock_extended_err, libc::sockaddr_in6, libc::c_int);
        let mut iov = [IoSliceMut::new(&mut self.buffer)];
        let message = match recvmsg::<SockaddrStorage>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(message) => message,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let len = message.bytes;
        let mut found = None;
        if let Ok(cmsgs) = message.cmsgs() {
            use nix::sys::socket::ControlMessageOwned as C;
            for cmsg in cmsgs {
                let (err, offender) = match cmsg {
                    C::Ipv4RecvErr(err, offender) => (
                        err,
                        offender.map(|a| IpAddr::V4(a.sin_addr.s_addr.to_ne_bytes().into())),
                    ),
                    C::Ipv6RecvErr(err, offender) => (
                        err,
                        offender.map(|a| IpAddr::V6(a.sin6_addr.s6_addr.into())),
                    ),
                    _ => continue,
                };
                found = Some((err, offender));
            }
        }
        let Some((err, offender)) = found else {
            return Ok(Some(QueuedError::Other));
        };
        // The queued bytes are our request as sent (its ICMP header first): the sequence
        // number and identifier say which request it was.
        let request = &self.buffer[..len];
        if request.len() < 8 {
            return Ok(Some(QueuedError::Other));
        }
        let id = u16::from_be_bytes([request[4], request[5]]);
        let seq = u16::from_be_bytes([request[6], request[7]]);
        Ok(Some(QueuedError::About {
            id,
            seq,
            origin: match err.ee_origin {
                libc::SO_EE_ORIGIN_ICMP | libc::SO_EE_ORIGIN_ICMP6 => ErrorOrigin::Icmp {
                    from: offender.filter(|a| !a.is_unspecified()),
                    kind: err.ee_type,
                    code: err.ee_code,
                },
                _ => ErrorOrigin::Local {
                    error: io::Error::from_raw_os_error(err.ee_errno as i32),
                    mtu: err.ee_info,
                },
            },
        }))
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
                // A datagram socket told of an ICMP error also fails its next read once with
                // the error's errno: the error itself is read from the error queue.
                Err(e) if self.kind == SocketKind::Datagram && is_icmp_errno(e) => {
                    return Ok(None);
                }
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

/// An ICMP error read from a datagram socket's error queue.
pub(crate) enum QueuedError {
    /// An error about a request we sent: its identifier and sequence number, and what it says.
    About {
        id: u16,
        seq: u16,
        origin: ErrorOrigin,
    },
    /// Something queued that is not an error about a request.
    Other,
}

/// Where a queued error came from.
pub(crate) enum ErrorOrigin {
    /// An ICMP error message: who sent it, its type and code.
    Icmp {
        from: Option<IpAddr>,
        kind: u8,
        code: u8,
    },
    /// The local stack refused the request after the send (a message too long for the path,
    /// say): the errno, and the MTU when that is the reason.
    Local { error: io::Error, mtu: u32 },
}

/// The errnos an ICMP error sets on a datagram socket (`sk_err`), which its next read returns.
fn is_icmp_errno(errno: nix::errno::Errno) -> bool {
    use nix::errno::Errno as E;
    matches!(
        errno,
        E::EHOSTUNREACH
            | E::ENETUNREACH
            | E::ECONNREFUSED
            | E::EACCES
            | E::EPROTO
            | E::EMSGSIZE
            | E::EHOSTDOWN
            | E::ENOPROTOOPT
            | E::ETIMEDOUT
    )
}

/// Waits until `fd` can be read, has an error, or `wait` passes (`Ok(false)`); a signal ends
/// the wait early (`Ok(false)` too). `ppoll` takes the wait to the nanosecond, so an interval
/// under a millisecond is kept (poll's whole milliseconds would round every wait up to 1 ms).
fn wait_readable(fd: std::os::fd::BorrowedFd<'_>, wait: Duration) -> io::Result<bool> {
    use nix::poll::{PollFd, PollFlags, ppoll};
    // At most 200 ms, which bounds how late a stop flag set just before the wait is seen.
    let wait = wait.min(Duration::from_millis(200));
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match ppoll(&mut fds, Some(wait.into()), None) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A wait under a millisecond is not rounded up to one: `ping -i 0.0002` as root sends
    /// about 5,000 a second, not under 1,000. Timed, but only the lower bound is at stake: the
    /// shortest of 20 waits of 200 µs, which poll's whole milliseconds would keep at 1 ms or more.
    #[test]
    fn a_wait_under_a_millisecond_is_not_rounded_up() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let shortest = (0..20)
            .map(|_| {
                let began = Instant::now();
                let readable = wait_readable(socket.as_fd(), Duration::from_micros(200)).unwrap();
                assert!(!readable, "nothing was sent");
                began.elapsed()
            })
            .min()
            .unwrap();
        assert!(shortest >= Duration::from_micros(200), "{shortest:?}");
        assert!(shortest < Duration::from_micros(900), "{shortest:?}");
    }

    #[test]
    fn a_wait_ends_when_a_packet_is_queued() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.send_to(b"x", socket.local_addr().unwrap()).unwrap();
        assert!(wait_readable(socket.as_fd(), Duration::from_secs(5)).unwrap());
    }
}
