//! Multicast groups (224.0.0.0/4, ff00::/8): which endpoints are groups, the interface a group
//! is joined on, and the join itself.
//!
//! The second deck's UDP slide says UDP "can broadcast"; multicast is the broadcast that only
//! the hosts which asked for it receive, across subnets if routers forward it. A `udp://GROUP:PORT`
//! listener joins the group (`IP_ADD_MEMBERSHIP`, `IPV6_JOIN_GROUP`) and answers each member's
//! request by unicast, as any UDP listener does; `client::multicast` sends one datagram to a
//! group and prints every member's reply.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use socket2::{InterfaceIndexOrAddress, Socket};

use crate::endpoint::Endpoint;
use crate::error::Error;

/// The network interface a group is joined on (`--multicast-if`): by one of its addresses or
/// by its name.
///
/// Without one, the system chooses: for IPv4 the interface its routing table gives for the
/// group, for IPv6 the interface of the endpoint's zone (`udp://[ff02::1%eth0]:PORT`) or else
/// the system's default.
///
/// ```
/// use socketkit::multicast::MulticastInterface;
/// assert_eq!("eth0".parse::<MulticastInterface>()?, MulticastInterface::Name("eth0".into()));
/// assert_eq!(
///     "10.0.0.1".parse::<MulticastInterface>()?,
///     MulticastInterface::Address("10.0.0.1".parse().unwrap())
/// );
/// assert!("no/slash".parse::<MulticastInterface>().is_err());
/// # Ok::<(), socketkit::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MulticastInterface {
    /// The interface that has this address (IPv4 or IPv6).
    Address(IpAddr),
    /// The interface of this name (`eth0`, `lo`), as `ip link` shows it.
    Name(String),
}

/// The longest interface name Linux allows: `IFNAMSIZ` (16) less the terminating NUL.
const MAX_INTERFACE_NAME_BYTES: usize = 15;

impl FromStr for MulticastInterface {
    type Err = Error;

    /// An IP address, or an interface name as Linux allows one (1 to 15 bytes, no `/`, `:` or
    /// white space, not `.` or `..`). Whether the interface exists is checked when joining.
    fn from_str(text: &str) -> Result<MulticastInterface, Error> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(MulticastInterface::Address(ip));
        }
        let bad = |reason: &str| Error::BadAddress {
            text: text.to_string(),
            reason: format!("not an IP address, and {reason}"),
        };
        if text.is_empty() || text.len() > MAX_INTERFACE_NAME_BYTES {
            return Err(bad("an interface name has 1 to 15 bytes"));
        }
        if text == "."
            || text == ".."
            || text.contains(['/', ':'])
            || text.contains(char::is_whitespace)
        {
            return Err(bad("an interface name has no '/', ':' or white space"));
        }
        Ok(MulticastInterface::Name(text.to_string()))
    }
}

impl fmt::Display for MulticastInterface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MulticastInterface::Address(ip) => write!(f, "{ip}"),
            MulticastInterface::Name(name) => f.write_str(name),
        }
    }
}

/// The group address of a `udp://` endpoint whose (first) address is a multicast group, with
/// its port; `None` for any other endpoint. A name is resolved.
///
/// ```
/// use socketkit::multicast::group_addr;
/// assert!(group_addr(&"udp://239.1.2.3:12000".parse()?)?.is_some());
/// assert!(group_addr(&"udp://[ff15::1]:12000".parse()?)?.is_some());
/// assert!(group_addr(&"udp://127.0.0.1:12000".parse()?)?.is_none());
/// assert!(group_addr(&"tcp://239.1.2.3:12000".parse()?)?.is_none()); // TCP has no groups
/// # Ok::<(), socketkit::Error>(())
/// ```
///
/// # Errors
///
/// As [`Endpoint::socket_addrs`], for a name that does not resolve.
pub fn group_addr(endpoint: &Endpoint) -> Result<Option<SocketAddr>, Error> {
    if !matches!(endpoint, Endpoint::Udp { .. }) {
        return Ok(None);
    }
    Ok(endpoint
        .socket_addrs()?
        .first()
        .copied()
        .filter(|a| a.ip().is_multicast()))
}

/// The IPv6 multicast scope of `group` (RFC 4291: 1 interface-local, 2 link-local, 5
/// site-local, 14 global).
fn scope_v6(group: &std::net::Ipv6Addr) -> u16 {
    group.segments()[0] & 0x000f
}

/// The address a group listener binds, before it joins: the group itself, so that the socket
/// receives that group's datagrams and no unicast ones (Linux filters on the bound address),
/// and, for an IPv6 group, the interface index as its scope (the kernel requires one for
/// interface- and link-local groups, ff01::/16 and ff02::/16).
///
/// # Errors
///
/// [`Error::Config`] for an interface- or link-local IPv6 group without an interface;
/// [`Error::InterfaceNotFound`] for an interface that does not exist.
pub(crate) fn bind_addr(
    group: SocketAddr,
    interface: Option<&MulticastInterface>,
) -> Result<SocketAddr, Error> {
    match group {
        SocketAddr::V4(_) => Ok(group),
        SocketAddr::V6(mut v6) => {
            let index = match interface {
                Some(interface) => index_of(interface)?,
                None => v6.scope_id(),
            };
            if index == 0 && scope_v6(v6.ip()) <= 2 {
                return Err(Error::Config(format!(
                    "the IPv6 group {} is interface- or link-local and needs an interface: \
                     give it as [{}%NAME] or name one (--multicast-if)",
                    v6.ip(),
                    v6.ip()
                )));
            }
            v6.set_scope_id(index);
            Ok(SocketAddr::V6(v6))
        }
    }
}

/// Joins `group` on `socket` (bound to [`bind_addr`]'s address) on `interface`, or the one
/// the system chooses.
///
/// # Errors
///
/// [`Error::InterfaceNotFound`] for an interface that does not exist (or no interface with
/// that address); otherwise [`Error::Bind`] for `endpoint`, saying which interface was tried.
pub(crate) fn join(
    socket: &Socket,
    group: SocketAddr,
    interface: Option<&MulticastInterface>,
    endpoint: &Endpoint,
) -> Result<(), Error> {
    let joined = match group {
        SocketAddr::V4(v4) => {
            let how = match interface {
                None => InterfaceIndexOrAddress::Address(Ipv4Addr::UNSPECIFIED),
                Some(MulticastInterface::Address(IpAddr::V4(ip))) => {
                    InterfaceIndexOrAddress::Address(*ip)
                }
                Some(other) => InterfaceIndexOrAddress::Index(index_of(other)?),
            };
            socket.join_multicast_v4_n(v4.ip(), &how)
        }
        // bind_addr put the interface's index (or the endpoint's zone) in the scope.
        SocketAddr::V6(v6) => socket.join_multicast_v6(v6.ip(), v6.scope_id()),
    };
    match (joined, interface) {
        (Ok(()), _) => Ok(()),
        // An IPv4 address that no interface has.
        (Err(e), Some(interface)) if e.raw_os_error() == Some(libc::ENODEV) => {
            Err(Error::InterfaceNotFound {
                interface: interface.to_string(),
            })
        }
        (Err(e), _) => {
            let on = match interface {
                Some(interface) => format!("on {interface}"),
                None => "on the system's choice of interface (is there a route to it?)".into(),
            };
            Err(Error::Bind {
                endpoint: endpoint.clone(),
                source: io::Error::new(
                    e.kind(),
                    format!("cannot join the multicast group {} {on}: {e}", group.ip()),
                ),
            })
        }
    }
}

/// The index of `interface`: `if_nametoindex` for a name, the interface that has the address
/// (`getifaddrs`) for an address.
fn index_of(interface: &MulticastInterface) -> Result<u32, Error> {
    let not_found = || Error::InterfaceNotFound {
        interface: interface.to_string(),
    };
    match interface {
        MulticastInterface::Name(name) => {
            nix::net::if_::if_nametoindex(name.as_str()).map_err(|_| not_found())
        }
        MulticastInterface::Address(ip) => {
            let addrs = nix::ifaddrs::getifaddrs()
                .map_err(|e| Error::io("cannot list the network interfaces", e.into()))?;
            for found in addrs {
                let Some(address) = found.address else {
                    continue;
                };
                let has = match ip {
                    IpAddr::V4(v4) => address.as_sockaddr_in().is_some_and(|a| a.ip() == *v4),
                    IpAddr::V6(v6) => address.as_sockaddr_in6().is_some_and(|a| a.ip() == *v6),
                };
                if has {
                    return nix::net::if_::if_nametoindex(found.interface_name.as_str())
                        .map_err(|_| not_found());
                }
            }
            Err(not_found())
        }
    }
}

/// Sets a sender's multicast options for `group`: the hop limit (`IP_MULTICAST_TTL`,
/// `IPV6_MULTICAST_HOPS`) and whether this host's own members get a copy
/// (`IP_MULTICAST_LOOP`, `IPV6_MULTICAST_LOOP`). `None` keeps the system's default (a TTL of
/// 1: this subnet only; loopback on).
pub(crate) fn set_sender_options(
    socket: socket2::SockRef<'_>,
    group: SocketAddr,
    ttl: Option<u32>,
    loopback: Option<bool>,
) -> io::Result<()> {
    match group {
        SocketAddr::V4(_) => {
            if let Some(ttl) = ttl {
                socket.set_multicast_ttl_v4(ttl)?;
            }
            if let Some(on) = loopback {
                socket.set_multicast_loop_v4(on)?;
            }
        }
        SocketAddr::V6(_) => {
            if let Some(hops) = ttl {
                socket.set_multicast_hops_v6(hops)?;
            }
            if let Some(on) = loopback {
                socket.set_multicast_loop_v6(on)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interface_is_an_address_or_a_valid_name() {
        assert_eq!(
            "::1".parse::<MulticastInterface>().unwrap(),
            MulticastInterface::Address("::1".parse().unwrap())
        );
        assert_eq!(
            "enp0s31f6".parse::<MulticastInterface>().unwrap(),
            MulticastInterface::Name("enp0s31f6".into())
        );
        for bad in ["", "a-name-of-16-byt", "a b", "x/y", "eth0:1", ".", ".."] {
            let err = bad.parse::<MulticastInterface>().unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Usage, "{bad:?}: {err}");
        }
    }

    #[test]
    fn an_unknown_interface_is_not_found() {
        for interface in ["sk-no-such-if", "192.0.2.77"] {
            let interface: MulticastInterface = interface.parse().unwrap();
            let err = index_of(&interface).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::NameNotFound, "{err}");
        }
        assert!(index_of(&"lo".parse().unwrap()).unwrap() > 0);
        assert!(index_of(&"127.0.0.1".parse().unwrap()).unwrap() > 0);
    }

    #[test]
    fn a_link_local_ipv6_group_needs_an_interface() {
        let link_local: SocketAddr = "[ff02::1:2]:12000".parse().unwrap();
        let err = bind_addr(link_local, None).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Usage, "{err}");
        let on_lo = bind_addr(link_local, Some(&"lo".parse().unwrap())).unwrap();
        assert!(matches!(on_lo, SocketAddr::V6(v6) if v6.scope_id() > 0));
        // Site-local and wider groups need none.
        let site: SocketAddr = "[ff05::1:2]:12000".parse().unwrap();
        assert_eq!(bind_addr(site, None).unwrap(), site);
        let v4: SocketAddr = "239.1.2.3:12000".parse().unwrap();
        assert_eq!(bind_addr(v4, None).unwrap(), v4);
    }
}
