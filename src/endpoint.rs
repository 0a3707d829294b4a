//! Endpoints: where a server listens or a client connects, as one parseable text form.
//!
//! One parser serves the CLI, the library and the tests, so `tcp://[::1]:12000` means the same
//! thing everywhere:
//!
//! | text                     | meaning                                  |
//! |--------------------------|------------------------------------------|
//! | `tcp://HOST:PORT`        | TCP over IPv4 or IPv6                    |
//! | `udp://HOST:PORT`        | UDP over IPv4 or IPv6                    |
//! | `unix:///path`           | Unix stream socket at `/path`            |
//! | `unixgram:///path`       | Unix datagram socket at `/path`          |
//! | `HOST:PORT`              | TCP (the scheme may be left out)         |
//!
//! `HOST` is an IPv4 address, an IPv6 address in brackets (`[::1]`, `[fe80::1%lo]`) or a name.
//! `[::]` listens on IPv6 and IPv4 at once (dual stack). Port 0 asks the system for a free port.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::Error;

/// The transport an endpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP: a reliable byte stream.
    Tcp,
    /// UDP: datagrams.
    Udp,
    /// A Unix-domain stream socket.
    Unix,
    /// A Unix-domain datagram socket.
    UnixDatagram,
}

impl Transport {
    /// Whether this transport carries a byte stream (TCP, Unix stream) rather than datagrams.
    pub fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Unix)
    }

    /// The URL scheme of this transport (`tcp`, `udp`, `unix`, `unixgram`).
    pub fn scheme(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Unix => "unix",
            Transport::UnixDatagram => "unixgram",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

/// The host part of an internet endpoint: an address, or a name still to be resolved.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// A literal IPv4 or IPv6 address.
    Ip(IpAddr),
    /// A host name (or a scoped IPv6 literal such as `fe80::1%lo`, which the resolver reads).
    Name(String),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Name(name) if name.contains(':') => write!(f, "[{name}]"),
            Host::Name(name) => f.write_str(name),
        }
    }
}

/// Where a server listens or a client connects.
///
/// # Examples
///
/// ```
/// use socketkit::{Endpoint, Transport};
///
/// let ep: Endpoint = "udp://[::1]:12000".parse()?;
/// assert_eq!(ep.transport(), Transport::Udp);
/// assert_eq!(ep.to_string(), "udp://[::1]:12000");
///
/// // A bare HOST:PORT is TCP.
/// let ep: Endpoint = "127.0.0.1:80".parse()?;
/// assert_eq!(ep.to_string(), "tcp://127.0.0.1:80");
///
/// // Bad text names the part that is wrong.
/// let err = "tcp://127.0.0.1:99999".parse::<Endpoint>().unwrap_err();
/// assert!(err.to_string().contains("port"));
/// # Ok::<(), socketkit::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP endpoint.
    Tcp {
        /// Address or name.
        host: Host,
        /// Port number; 0 asks the system for a free one.
        port: u16,
    },
    /// A UDP endpoint.
    Udp {
        /// Address or name.
        host: Host,
        /// Port number; 0 asks the system for a free one.
        port: u16,
    },
    /// A Unix stream socket path.
    Unix(PathBuf),
    /// A Unix datagram socket path.
    UnixDatagram(PathBuf),
}

impl Endpoint {
    /// A TCP endpoint for a socket address.
    pub fn tcp(addr: SocketAddr) -> Endpoint {
        Endpoint::Tcp {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }

    /// A UDP endpoint for a socket address.
    pub fn udp(addr: SocketAddr) -> Endpoint {
        Endpoint::Udp {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }

    /// The transport this endpoint uses.
    pub fn transport(&self) -> Transport {
        match self {
            Endpoint::Tcp { .. } => Transport::Tcp,
            Endpoint::Udp { .. } => Transport::Udp,
            Endpoint::Unix(_) => Transport::Unix,
            Endpoint::UnixDatagram(_) => Transport::UnixDatagram,
        }
    }

    /// The filesystem path of a Unix endpoint, `None` for TCP and UDP.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Endpoint::Unix(path) | Endpoint::UnixDatagram(path) => Some(path),
            _ => None,
        }
    }

    /// Host and port of a TCP or UDP endpoint, `None` for Unix endpoints.
    pub fn host_port(&self) -> Option<(&Host, u16)> {
        match self {
            Endpoint::Tcp { host, port } | Endpoint::Udp { host, port } => Some((host, *port)),
            _ => None,
        }
    }

    /// The socket addresses of a TCP or UDP endpoint, resolving a name with the system resolver
    /// (`getaddrinfo`, so `/etc/hosts` and nsswitch apply, as in Python). A literal address is
    /// returned as is. Unix endpoints have none: the result is empty.
    ///
    /// # Errors
    ///
    /// [`Error::NameNotFound`] when the name does not exist, [`Error::Resolve`] when the resolver
    /// fails otherwise.
    ///
    /// ```
    /// use socketkit::Endpoint;
    /// let ep: Endpoint = "tcp://127.0.0.1:7".parse()?;
    /// assert_eq!(ep.socket_addrs()?, vec!["127.0.0.1:7".parse().unwrap()]);
    /// # Ok::<(), socketkit::Error>(())
    /// ```
    pub fn socket_addrs(&self) -> Result<Vec<SocketAddr>, Error> {
        let (host, port) = match self.host_port() {
            Some(hp) => hp,
            None => return Ok(Vec::new()),
        };
        match host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, port)]),
            Host::Name(name) => resolve(name, port, self.transport()),
        }
    }
}

/// Resolves `name` with `getaddrinfo`, once per address (not once per socket type).
fn resolve(name: &str, port: u16, transport: Transport) -> Result<Vec<SocketAddr>, Error> {
    use dns_lookup::{AddrInfoHints, LookupErrorKind, SockType};
    let hints = AddrInfoHints {
        socktype: if transport == Transport::Udp {
            SockType::DGram.into()
        } else {
            SockType::Stream.into()
        },
        ..AddrInfoHints::default()
    };
    let found =
        dns_lookup::getaddrinfo(Some(name), None, Some(hints)).map_err(|e| match e.kind() {
            LookupErrorKind::NoName | LookupErrorKind::NoData => Error::NameNotFound {
                host: name.to_string(),
            },
            _ => Error::Resolve {
                host: name.to_string(),
                reason: std::io::Error::from(e).to_string(),
            },
        })?;
    let mut addrs = Vec::new();
    for info in found {
        let info = info.map_err(|e| Error::Resolve {
            host: name.to_string(),
            reason: e.to_string(),
        })?;
        let mut addr = info.sockaddr;
        addr.set_port(port);
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(Error::NameNotFound {
            host: name.to_string(),
        });
    }
    Ok(addrs)
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            Endpoint::Udp { host, port } => write!(f, "udp://{host}:{port}"),
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::UnixDatagram(path) => write!(f, "unixgram://{}", path.display()),
        }
    }
}

impl FromStr for Endpoint {
    type Err = Error;

    fn from_str(text: &str) -> Result<Endpoint, Error> {
        let bad = |reason: String| Error::BadEndpoint {
            text: text.to_string(),
            reason,
        };
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => (None, text),
        };
        let transport = match scheme.map(str::to_ascii_lowercase).as_deref() {
            None | Some("tcp") => Transport::Tcp,
            Some("udp") => Transport::Udp,
            Some("unix") => Transport::Unix,
            Some("unixgram") => Transport::UnixDatagram,
            Some(other) => {
                return Err(bad(format!(
                    "unknown scheme {other:?} (expected tcp, udp, unix or unixgram)"
                )));
            }
        };
        match transport {
            Transport::Unix | Transport::UnixDatagram => {
                if rest.is_empty() {
                    return Err(bad(
                        "missing socket path (e.g. unix:///tmp/socketkit.sock)".into()
                    ));
                }
                if rest.contains('\0') {
                    return Err(bad("the socket path contains a NUL byte".into()));
                }
                let path = PathBuf::from(rest);
                Ok(if transport == Transport::Unix {
                    Endpoint::Unix(path)
                } else {
                    Endpoint::UnixDatagram(path)
                })
            }
            Transport::Tcp | Transport::Udp => {
                let (host, port) = parse_host_port(rest).map_err(bad)?;
                Ok(if transport == Transport::Tcp {
                    Endpoint::Tcp { host, port }
                } else {
                    Endpoint::Udp { host, port }
                })
            }
        }
    }
}

/// Splits `HOST:PORT` (with `[v6]` brackets) and checks each part.
fn parse_host_port(text: &str) -> Result<(Host, u16), String> {
    if text.is_empty() {
        return Err("missing HOST:PORT".into());
    }
    let (host_text, port_text) = if let Some(after) = text.strip_prefix('[') {
        let (inside, tail) = after
            .split_once(']')
            .ok_or("missing ']' after the IPv6 address")?;
        let port = tail
            .strip_prefix(':')
            .ok_or("missing port after ']' (e.g. [::1]:12000)")?;
        let host = if let Ok(ip) = inside.parse::<std::net::Ipv6Addr>() {
            Host::Ip(IpAddr::V6(ip))
        } else if inside.contains('%')
            && inside
                .split('%')
                .next()
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
        {
            // A scoped address (fe80::1%lo): getaddrinfo turns the zone into a scope id.
            Host::Name(inside.to_string())
        } else {
            return Err(format!("{inside:?} in brackets is not an IPv6 address"));
        };
        (host, port)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or("missing port (expected HOST:PORT)")?;
        if host.contains(':') {
            return Err("an IPv6 address needs brackets (e.g. [::1]:12000)".into());
        }
        if host.is_empty() {
            return Err("missing host (use 0.0.0.0 or [::] to listen on every address)".into());
        }
        let host = match host.parse::<std::net::Ipv4Addr>() {
            Ok(ip) => Host::Ip(IpAddr::V4(ip)),
            Err(_) => {
                check_host_name(host)?;
                Host::Name(host.to_string())
            }
        };
        (host, port)
    };
    if port_text.is_empty() {
        return Err("missing port (expected HOST:PORT)".into());
    }
    let port = port_text
        .parse::<u16>()
        .map_err(|_| format!("port {port_text:?} is not a number from 0 to 65535"))?;
    Ok((host_text, port))
}

/// Host names: letters, digits, '-', '_' and dots (RFC 1123, with the '_' that real zones use).
fn check_host_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(format!("host {name:?} is not an IP address or a host name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Endpoint, String> {
        text.parse::<Endpoint>().map_err(|e| e.to_string())
    }

    #[test]
    fn canonical_forms_round_trip() {
        for text in [
            "tcp://127.0.0.1:12000",
            "udp://[::1]:0",
            "tcp://[::]:80",
            "tcp://localhost:8080",
            "unix:///tmp/a.sock",
            "unixgram:///tmp/b.sock",
            "unix://relative.sock",
            "tcp://[fe80::1%lo]:22",
        ] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn bare_host_port_is_tcp() {
        assert_eq!(parse("[::1]:5").unwrap().to_string(), "tcp://[::1]:5");
        assert_eq!(parse("example.org:5").unwrap().transport(), Transport::Tcp);
    }

    #[test]
    fn errors_name_the_wrong_part() {
        let cases = [
            ("http://x:1", "scheme"),
            ("tcp://127.0.0.1", "port"),
            ("tcp://127.0.0.1:", "port"),
            ("tcp://127.0.0.1:65536", "port"),
            ("tcp://127.0.0.1:http", "port"),
            ("tcp://:80", "host"),
            ("tcp://::1:80", "brackets"),
            ("tcp://[::1:80", "']'"),
            ("tcp://[::1]80", "port"),
            ("tcp://[nope]:80", "IPv6"),
            ("tcp://bad host:80", "host"),
            ("unix://", "path"),
            ("", "HOST:PORT"),
        ];
        for (text, part) in cases {
            let err = parse(text).unwrap_err();
            assert!(
                err.contains(part),
                "{text:?}: {err:?} should mention {part:?}"
            );
        }
    }

    #[test]
    fn literal_addresses_need_no_lookup() {
        let ep = parse("udp://[::1]:9").unwrap();
        assert_eq!(ep.socket_addrs().unwrap(), vec!["[::1]:9".parse().unwrap()]);
        assert!(
            parse("unix:///x")
                .unwrap()
                .socket_addrs()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn localhost_resolves_through_the_system_resolver() {
        let addrs = parse("tcp://localhost:7").unwrap().socket_addrs().unwrap();
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 7));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(text in "\\PC{0,40}") {
            let _ = text.parse::<Endpoint>();
        }

        #[test]
        fn display_parses_back(a in proptest::prelude::any::<std::net::IpAddr>(), port: u16) {
            let ep = Endpoint::udp(SocketAddr::new(a, port));
            proptest::prop_assert_eq!(ep.to_string().parse::<Endpoint>().unwrap(), ep);
        }
    }
}
