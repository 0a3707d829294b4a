//! Endpoints: where a server listens or a client connects, as one parseable text form.
//!
//! One parser serves the CLI, the library and the tests, so `tcp://[::1]:12000` means the same
//! thing everywhere:
//!
//! | text                     | meaning                                  |
//! |--------------------------|------------------------------------------|
//! | `tcp://HOST:PORT`        | TCP over IPv4 or IPv6                    |
//! | `tls://HOST:PORT`        | TLS over TCP (the `tls` feature: [`crate::tls`]) |
//! | `udp://HOST:PORT`        | UDP over IPv4 or IPv6                    |
//! | `unix:///path`           | Unix stream socket at `/path`            |
//! | `unixgram:///path`       | Unix datagram socket at `/path`          |
//! | `unixpacket:///path`     | Unix sequenced-packet socket (`SOCK_SEQPACKET`) at `/path` |
//! | `unix://@name`, `unixgram://@name`, `unixpacket://@name` | Linux abstract socket `name` (no file) |
//! | `HOST:PORT`              | TCP (the scheme may be left out)         |
//! | `PORT`, `udp://PORT`     | a port on this machine (see [`Role`])    |
//!
//! `HOST` is an IPv4 address, an IPv6 address in brackets (`[::1]`, `[fe80::1%lo]`) or a name.
//! `[::]` listens on IPv6 and IPv4 at once (dual stack). Port 0 asks the system for a free port.
//! `PORT` is a number or a service name (`http`, `echo`), looked up in the services database
//! for the endpoint's transport when the text is parsed, as nc and socat accept it.
//!
//! A Unix path that starts with `@` names a Linux abstract socket, as systemd's
//! `ListenStream=@name` and socat's `ABSTRACT-LISTEN:name` do (Python writes it `"\0name"`):
//! nothing appears in the filesystem, and the name is gone when its socket closes. A file
//! whose name starts with `@` is written with a directory in front: `unix://./@name`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::Error;
use crate::names::{Protocol, service_by_name};

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
    /// A Unix-domain sequenced-packet socket (`SOCK_SEQPACKET`): connected, reliable and
    /// ordered like a stream, with message boundaries kept like datagrams. Each record is one
    /// message.
    UnixSeqpacket,
}

impl Transport {
    /// Whether this transport carries a byte stream (TCP, Unix stream) rather than datagrams
    /// or records.
    pub fn is_stream(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Unix)
    }

    /// Whether this transport has connections, accepted one by one (TCP, Unix stream, Unix
    /// sequenced packets), rather than datagrams from anyone.
    pub fn is_connected(self) -> bool {
        self.is_stream() || self == Transport::UnixSeqpacket
    }

    /// The URL scheme of this transport (`tcp`, `udp`, `unix`, `unixgram`, `unixpacket`).
    pub fn scheme(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Unix => "unix",
            Transport::UnixDatagram => "unixgram",
            Transport::UnixSeqpacket => "unixpacket",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.scheme())
    }
}

/// Which side an endpoint is parsed for: it decides what a bare `PORT` means, as nc users type
/// it (`nc -l 12000`, `nc 12000` would need a host; `socketkit send 12000` does not).
///
/// [`Endpoint::from_str`] parses for [`Role::Listen`]: `127.0.0.1`, a loopback address that a
/// server and a client on this machine both understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A server's endpoint: a bare `PORT` is `127.0.0.1:PORT`, loopback like socketkit's
    /// default listeners, never every interface by surprise.
    Listen,
    /// A client's endpoint: a bare `PORT` is `localhost:PORT`, so every loopback address the
    /// name has is tried (`::1` and `127.0.0.1`).
    Connect,
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
/// // A bare port is on this machine; a service name stands for its port.
/// let ep: Endpoint = "12000".parse()?;
/// assert_eq!(ep.to_string(), "tcp://127.0.0.1:12000");
/// let ep = Endpoint::parse("udp://7", socketkit::endpoint::Role::Connect)?;
/// assert_eq!(ep.to_string(), "udp://localhost:7");
/// let ep: Endpoint = "udp://127.0.0.1:echo".parse()?;
/// assert_eq!(ep.to_string(), "udp://127.0.0.1:7");
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
    /// A TLS endpoint: TLS over TCP (its [`transport`](Endpoint::transport) is
    /// [`Transport::Tcp`]; [`Endpoint::is_tls`] tells it apart). Served and reached with the
    /// `tls` feature's [`crate::tls`] settings.
    Tls {
        /// Address or name (a client's name is also the TLS server name it checks).
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
    /// A Unix stream socket path, or `@name` for a Linux abstract socket (see
    /// [`Endpoint::abstract_name`]).
    Unix(PathBuf),
    /// A Unix datagram socket path, or `@name` for a Linux abstract socket (see
    /// [`Endpoint::abstract_name`]).
    UnixDatagram(PathBuf),
    /// A Unix sequenced-packet socket path (`SOCK_SEQPACKET`, Go's `unixpacket`), or `@name`
    /// for a Linux abstract socket (see [`Endpoint::abstract_name`]).
    UnixSeqpacket(PathBuf),
}

impl Endpoint {
    /// Parses `text` for a server ([`Role::Listen`]) or a client ([`Role::Connect`]); the
    /// role only decides what a bare `PORT` means. [`Endpoint::from_str`] is
    /// `Endpoint::parse(text, Role::Listen)`.
    ///
    /// # Errors
    ///
    /// [`Error::BadEndpoint`], naming the part that is wrong.
    ///
    /// ```
    /// use socketkit::{Endpoint, endpoint::Role};
    /// assert_eq!(Endpoint::parse("7007", Role::Listen)?.to_string(), "tcp://127.0.0.1:7007");
    /// assert_eq!(Endpoint::parse("7007", Role::Connect)?.to_string(), "tcp://localhost:7007");
    /// # Ok::<(), socketkit::Error>(())
    /// ```
    pub fn parse(text: &str, role: Role) -> Result<Endpoint, Error> {
        let bad = |reason: String| Error::BadEndpoint {
            text: text.to_string(),
            reason,
        };
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme, rest)) => (Some(scheme), rest),
            None => {
                check_scheme_slashes(text).map_err(bad)?;
                (None, text)
            }
        };
        let scheme = scheme.map(str::to_ascii_lowercase);
        let tls = scheme.as_deref() == Some("tls");
        let transport = match scheme.as_deref() {
            None | Some("tcp") | Some("tls") => Transport::Tcp,
            Some("udp") => Transport::Udp,
            Some("unix") => Transport::Unix,
            Some("unixgram") => Transport::UnixDatagram,
            Some("unixpacket") => Transport::UnixSeqpacket,
            Some(other) => {
                return Err(bad(format!(
                    "unknown scheme {other:?} (expected tcp, tls, udp, unix, unixgram or unixpacket)"
                )));
            }
        };
        match transport {
            Transport::Unix | Transport::UnixDatagram | Transport::UnixSeqpacket => {
                if rest.is_empty() {
                    return Err(bad(
                        "missing socket path (e.g. unix:///tmp/socketkit.sock)".into()
                    ));
                }
                if rest.contains('\0') {
                    return Err(bad("the socket path contains a NUL byte".into()));
                }
                if let Some(name) = rest.strip_prefix('@') {
                    if name.is_empty() {
                        return Err(bad(
                            "missing abstract socket name after '@' (e.g. unix://@socketkit)"
                                .into(),
                        ));
                    }
                    if name.len() > MAX_ABSTRACT_NAME_BYTES {
                        return Err(bad(format!(
                            "the abstract socket name is longer than \
                             {MAX_ABSTRACT_NAME_BYTES} bytes"
                        )));
                    }
                }
                let path = PathBuf::from(rest);
                Ok(match transport {
                    Transport::Unix => Endpoint::Unix(path),
                    Transport::UnixDatagram => Endpoint::UnixDatagram(path),
                    _ => Endpoint::UnixSeqpacket(path),
                })
            }
            Transport::Tcp | Transport::Udp => {
                let (host, port) = if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
                    let host = match role {
                        Role::Listen => Host::Ip(IpAddr::from([127, 0, 0, 1])),
                        Role::Connect => Host::Name("localhost".into()),
                    };
                    (host, parse_port(rest, transport).map_err(bad)?)
                } else {
                    parse_host_port(rest, transport).map_err(bad)?
                };
                Ok(if tls {
                    Endpoint::Tls { host, port }
                } else if transport == Transport::Tcp {
                    Endpoint::Tcp { host, port }
                } else {
                    Endpoint::Udp { host, port }
                })
            }
        }
    }

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

    /// A TLS endpoint for a socket address.
    pub fn tls(addr: SocketAddr) -> Endpoint {
        Endpoint::Tls {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }

    /// Whether this is a `tls://` endpoint (TLS over TCP).
    ///
    /// ```
    /// use socketkit::{Endpoint, Transport};
    /// let ep: Endpoint = "tls://localhost:8443".parse()?;
    /// assert!(ep.is_tls());
    /// assert_eq!(ep.transport(), Transport::Tcp);
    /// assert_eq!(ep.to_string(), "tls://localhost:8443");
    /// # Ok::<(), socketkit::Error>(())
    /// ```
    pub fn is_tls(&self) -> bool {
        matches!(self, Endpoint::Tls { .. })
    }

    /// The transport this endpoint uses (TLS runs over [`Transport::Tcp`]).
    pub fn transport(&self) -> Transport {
        match self {
            Endpoint::Tcp { .. } | Endpoint::Tls { .. } => Transport::Tcp,
            Endpoint::Udp { .. } => Transport::Udp,
            Endpoint::Unix(_) => Transport::Unix,
            Endpoint::UnixDatagram(_) => Transport::UnixDatagram,
            Endpoint::UnixSeqpacket(_) => Transport::UnixSeqpacket,
        }
    }

    /// The filesystem path of a Unix endpoint; `None` for TCP, UDP and abstract sockets.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Endpoint::Unix(path) | Endpoint::UnixDatagram(path) | Endpoint::UnixSeqpacket(path)
                if self.abstract_name().is_none() =>
            {
                Some(path)
            }
            _ => None,
        }
    }

    /// The name of a Linux abstract Unix socket (`unix://@name`, `unixgram://@name`,
    /// `unixpacket://@name`): the bytes
    /// after the `@`, which the socket address carries after a leading NUL byte. `None` for
    /// every other endpoint, a file whose name starts with `@` (`unix://./@name`) included.
    ///
    /// ```
    /// use socketkit::Endpoint;
    /// let ep: Endpoint = "unix://@socketkit".parse()?;
    /// assert_eq!(ep.abstract_name(), Some(&b"socketkit"[..]));
    /// assert_eq!(ep.path(), None);
    /// let ep: Endpoint = "unix://./@socketkit".parse()?;
    /// assert_eq!(ep.abstract_name(), None);
    /// assert_eq!(ep.path(), Some(std::path::Path::new("./@socketkit")));
    /// # Ok::<(), socketkit::Error>(())
    /// ```
    #[doc(alias = "ABSTRACT-LISTEN")]
    pub fn abstract_name(&self) -> Option<&[u8]> {
        use std::os::unix::ffi::OsStrExt;
        match self {
            Endpoint::Unix(path) | Endpoint::UnixDatagram(path) | Endpoint::UnixSeqpacket(path) => {
                path.as_os_str().as_bytes().strip_prefix(b"@")
            }
            _ => None,
        }
    }

    /// The socket address of a Unix endpoint, abstract or a path; `None` for TCP and UDP.
    pub(crate) fn unix_addr(&self) -> Option<std::io::Result<std::os::unix::net::SocketAddr>> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::SocketAddr;
        if let Some(name) = self.abstract_name() {
            return Some(SocketAddr::from_abstract_name(name));
        }
        self.path().map(SocketAddr::from_pathname)
    }

    /// Host and port of a TCP or UDP endpoint, `None` for Unix endpoints.
    pub fn host_port(&self) -> Option<(&Host, u16)> {
        match self {
            Endpoint::Tcp { host, port }
            | Endpoint::Tls { host, port }
            | Endpoint::Udp { host, port } => Some((host, *port)),
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

/// The longest abstract socket name: `sun_path` (108 bytes on Linux) less the leading NUL.
const MAX_ABSTRACT_NAME_BYTES: usize = 107;

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
            Endpoint::Tls { host, port } => write!(f, "tls://{host}:{port}"),
            Endpoint::Udp { host, port } => write!(f, "udp://{host}:{port}"),
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::UnixDatagram(path) => write!(f, "unixgram://{}", path.display()),
            Endpoint::UnixSeqpacket(path) => write!(f, "unixpacket://{}", path.display()),
        }
    }
}

impl FromStr for Endpoint {
    type Err = Error;

    /// Parses `text` for a server: a bare `PORT` is `127.0.0.1:PORT` ([`Role::Listen`]).
    fn from_str(text: &str) -> Result<Endpoint, Error> {
        Endpoint::parse(text, Role::Listen)
    }
}

/// `tcp:/x` and `unix:/tmp/x` are a scheme with too few slashes, not a host named `tcp`: say so
/// before the host and port checks blame brackets or the port.
fn check_scheme_slashes(text: &str) -> Result<(), String> {
    let Some((scheme, tail)) = text.split_once(':') else {
        return Ok(());
    };
    let known = ["tcp", "tls", "udp", "unix", "unixgram", "unixpacket"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme));
    let looks_like_more = tail.starts_with('/') || tail.contains(':') || tail.is_empty();
    if known && looks_like_more {
        let scheme = scheme.to_ascii_lowercase();
        let example = if scheme.starts_with("unix") {
            "unix:///tmp/socketkit.sock"
        } else {
            "tcp://127.0.0.1:12000"
        };
        return Err(format!(
            "the scheme needs '//' after {scheme:?}: {scheme}://... (e.g. {example})"
        ));
    }
    Ok(())
}

/// Splits `HOST:PORT` (with `[v6]` brackets) and checks each part.
fn parse_host_port(text: &str, transport: Transport) -> Result<(Host, u16), String> {
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
    Ok((host_text, parse_port(port_text, transport)?))
}

/// A port number, or a service name looked up for `transport` (`getservbyname`, with the
/// built-in table of classic ports as a fallback).
fn parse_port(text: &str, transport: Transport) -> Result<u16, String> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u16>()
            .map_err(|_| format!("port {text:?} is not a number from 0 to 65535"));
    }
    let protocol = if transport == Transport::Udp {
        Protocol::Udp
    } else {
        Protocol::Tcp
    };
    // Service names are short words (services(5)); anything else is not worth a look-up.
    let name_like = text.len() <= 64
        && text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'/'));
    match name_like.then(|| service_by_name(text, protocol)) {
        Some(Ok(service)) => Ok(service.port),
        _ => Err(format!(
            "port {text:?} is neither a number from 0 to 65535 nor a {protocol} service name"
        )),
    }
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
            "tls://localhost:8443",
            "tls://[::1]:0",
            "unix:///tmp/a.sock",
            "unixgram:///tmp/b.sock",
            "unixpacket:///tmp/c.sock",
            "unixpacket://@sk",
            "unix://relative.sock",
            "tcp://[fe80::1%lo]:22",
        ] {
            assert_eq!(parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn tls_is_tcp_told_apart() {
        let ep = parse("TLS://127.0.0.1:https").unwrap();
        assert!(ep.is_tls());
        assert_eq!(ep.transport(), Transport::Tcp);
        assert_eq!(ep.to_string(), "tls://127.0.0.1:443");
        assert!(!parse("tcp://127.0.0.1:443").unwrap().is_tls());
        assert_eq!(
            Endpoint::parse("8443", Role::Connect).unwrap().to_string(),
            "tcp://localhost:8443",
            "a bare port stays plain TCP"
        );
        assert!(parse("tls:/127.0.0.1:1").unwrap_err().contains("'//'"));
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
            ("tcp://127.0.0.1:no-such-service", "service"),
            ("tcp://127.0.0.1:-1", "port"),
            ("99999", "port"),
            ("tcp:/127.0.0.1:12000", "'//'"),
            ("tcp:127.0.0.1:12000", "'//'"),
            ("UDP:/[::1]:9", "'//'"),
            ("unix:/tmp/x.sock", "unix:///tmp"),
            ("tcp://:80", "host"),
            ("tcp://::1:80", "brackets"),
            ("tcp://[::1:80", "']'"),
            ("tcp://[::1]80", "port"),
            ("tcp://[nope]:80", "IPv6"),
            ("tcp://bad host:80", "host"),
            ("unix://", "path"),
            ("unixpacket://", "path"),
            ("unixpacket:/tmp/x.sock", "unixpacket://"),
            ("unixpacket://@", "abstract"),
            ("seqpacket:///tmp/x", "unixpacket"),
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
    fn a_bare_port_is_loopback_for_servers_and_localhost_for_clients() {
        for (text, listen, connect) in [
            ("12000", "tcp://127.0.0.1:12000", "tcp://localhost:12000"),
            ("udp://7007", "udp://127.0.0.1:7007", "udp://localhost:7007"),
            ("tcp://0", "tcp://127.0.0.1:0", "tcp://localhost:0"),
        ] {
            assert_eq!(
                parse(text).unwrap().to_string(),
                listen,
                "from_str {text:?}"
            );
            let ep = Endpoint::parse(text, Role::Listen).unwrap();
            assert_eq!(ep.to_string(), listen, "listen {text:?}");
            let ep = Endpoint::parse(text, Role::Connect).unwrap();
            assert_eq!(ep.to_string(), connect, "connect {text:?}");
        }
        // A host name is never mistaken for a port, nor a unix path.
        assert_eq!(
            parse("unix://12000").unwrap().path(),
            Some(Path::new("12000"))
        );
    }

    #[test]
    fn a_service_name_stands_for_its_port_on_the_endpoints_transport() {
        assert_eq!(
            parse("localhost:http").unwrap().to_string(),
            "tcp://localhost:80"
        );
        assert_eq!(
            parse("udp://127.0.0.1:echo").unwrap().to_string(),
            "udp://127.0.0.1:7"
        );
        assert_eq!(parse("[::1]:ssh").unwrap().to_string(), "tcp://[::1]:22");
        // domain is both; the protocol asked for is the endpoint's.
        assert_eq!(
            parse("udp://[::1]:domain").unwrap().host_port().unwrap().1,
            53
        );
        // Names listed for TCP only are not UDP ports.
        let err = parse("udp://127.0.0.1:ssh").unwrap_err();
        assert!(err.contains("udp service"), "{err}");
    }

    #[test]
    fn an_at_sign_names_an_abstract_socket_and_a_directory_before_it_a_file() {
        for (text, name) in [("unix://@sk", "sk"), ("unixgram://@a/b c", "a/b c")] {
            let ep = parse(text).unwrap();
            assert_eq!(ep.abstract_name(), Some(name.as_bytes()), "{text}");
            assert_eq!(ep.path(), None, "{text}");
            assert_eq!(ep.to_string(), text, "round trip");
            assert!(ep.socket_addrs().unwrap().is_empty());
        }
        for text in ["unix://./@sk", "unix:///tmp/@sk", "unixgram://x@y"] {
            let ep = parse(text).unwrap();
            assert_eq!(ep.abstract_name(), None, "{text}");
            assert!(ep.path().is_some(), "{text}");
        }
        let err = parse("unix://@").unwrap_err();
        assert!(err.contains("missing abstract socket name"), "{err}");
        assert!(parse(&format!("unix://@{}", "n".repeat(107))).is_ok());
        let err = parse(&format!("unix://@{}", "n".repeat(108))).unwrap_err();
        assert!(err.contains("longer than 107 bytes"), "{err}");
    }

    #[test]
    fn unixpacket_is_a_connected_transport_that_keeps_message_boundaries() {
        let ep = parse("UNIXPACKET:///run/sk.sock").unwrap();
        assert_eq!(ep, Endpoint::UnixSeqpacket(PathBuf::from("/run/sk.sock")));
        assert_eq!(ep.to_string(), "unixpacket:///run/sk.sock");
        assert_eq!(ep.path(), Some(Path::new("/run/sk.sock")));
        let transport = ep.transport();
        assert!(transport.is_connected() && !transport.is_stream());
        assert!(Transport::Unix.is_connected() && !Transport::UnixDatagram.is_connected());
        let ep = parse("unixpacket://@sk").unwrap();
        assert_eq!(ep.abstract_name(), Some(&b"sk"[..]));
        assert!(ep.socket_addrs().unwrap().is_empty());
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
            let ep = Endpoint::tls(SocketAddr::new(a, port));
            proptest::prop_assert_eq!(ep.to_string().parse::<Endpoint>().unwrap(), ep);
        }
    }
}
