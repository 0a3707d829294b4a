//! The PROXY protocol (HAProxy's, v1 text and v2 binary), free of I/O: how many bytes of a
//! new connection belong to the header, what the header says, and the header a client sends.
//!
//! A balancer in front of a server (HAProxy's `send-proxy-v2`, nginx's `proxy_protocol on`,
//! Envoy, AWS NLB) opens each backend connection with one header naming the real client:
//!
//! ```text
//! v1: "PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n"            (at most 107 bytes)
//! v2: \r\n\r\n\0\r\nQUIT\n | ver/cmd | fam/proto | len (u16, BE) | addresses | TLVs
//!     <------- 12 bytes (signature) -------> 1 byte   1 byte      2 bytes     len bytes
//! ```
//!
//! The `ppp` crate parses both; this module is the glue the engines' drivers share: it never
//! takes a byte past the header's end, so what follows reaches the service untouched. A driver
//! peeks at what the socket holds (`MSG_PEEK`), offers it to [`HeaderReader::offer`], and reads
//! (consumes) exactly the count it gets back. v2 announces its length in its first 16 bytes; a
//! v1 header ends at its line feed. Bytes before the end are header bytes whatever they turn
//! out to be, so a header that arrives in pieces is consumed as it comes and the driver's next
//! wait is for new bytes, never for ones it already saw.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::service::Address;

/// The longest v1 header, its line end included (the protocol's own limit).
pub const V1_MAX_BYTES: usize = 107;
/// The longest v2 header accepted: the 16 fixed bytes and up to 1 KiB of addresses and TLVs.
/// The addresses take at most 216 bytes (two Unix paths); HAProxy's TLVs (ALPN, authority, SSL
/// details, unique id) fit well within the rest. The protocol allows 64 KiB; a longer header
/// is refused rather than buffered for every connection.
pub const V2_MAX_BYTES: usize = 16 + 1024;

/// The v2 header's first 12 bytes.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 header's first 6 bytes.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The v2 header's fixed part: signature, version and command, family and protocol, length.
const V2_FIXED_BYTES: usize = 16;

/// Which PROXY protocol version a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// The text header (`PROXY TCP4 ...\r\n`).
    V1,
    /// The binary header (HAProxy's `send-proxy-v2`).
    V2,
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Version, String> {
        match s {
            "v1" | "1" => Ok(Version::V1),
            "v2" | "2" => Ok(Version::V2),
            _ => Err(format!("unknown PROXY protocol version {s:?} (v1 or v2)")),
        }
    }
}

/// Why a connection's PROXY header was refused. The connection is closed; nothing of it
/// reaches the service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    /// The connection does not begin with a PROXY header (a bad signature).
    #[error("no PROXY header: the connection began with {0}")]
    Missing(String),
    /// The header is longer than the limit ([`V1_MAX_BYTES`], [`V2_MAX_BYTES`]).
    #[error("PROXY header longer than {0} bytes")]
    TooLong(usize),
    /// The peer closed the connection before the header's end (after this many bytes).
    #[error("PROXY header cut off by EOF after {0} bytes")]
    Truncated(usize),
    /// A v2 signature with a version other than 2.
    #[error("unknown PROXY protocol version {0}")]
    Version(u8),
    /// The addresses do not match the family or transport the header announces.
    #[error("PROXY header's addresses do not match its family: {0}")]
    Family(String),
    /// Anything else the parser refused.
    #[error("garbled PROXY header: {0}")]
    Garbled(String),
}

/// What a complete header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The real client; `None` where the connection speaks for itself (v2 `LOCAL`, a
    /// balancer's health check; v1 `UNKNOWN`; v2 `UNSPEC`): the socket's own peer stands.
    pub source: Option<Address>,
    /// The address the client connected to at the balancer, when the header gives one.
    pub destination: Option<Address>,
    /// The header's length in bytes.
    pub len: usize,
}

/// What the driver does with the bytes it peeked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Consume this many (all header bytes), then wait for more.
    Take(usize),
    /// Consume this many: the header is whole.
    Done(usize, Header),
}

/// Reads one connection's PROXY header in pieces (see the module docs).
#[derive(Debug, Default, Clone)]
pub struct HeaderReader {
    /// The header bytes consumed so far.
    buf: Vec<u8>,
}

impl HeaderReader {
    /// A reader at the start of a connection.
    pub fn new() -> HeaderReader {
        HeaderReader::default()
    }

    /// How many header bytes were consumed so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no byte was consumed yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Offers the bytes waiting in the socket, not yet consumed (at least one). The answer says
    /// how many of them are header bytes (at least one): the driver consumes exactly those.
    ///
    /// # Errors
    ///
    /// [`HeaderError`] when the bytes cannot begin or continue a header: the driver closes
    /// the connection.
    pub fn offer(&mut self, peeked: &[u8]) -> Result<Step, HeaderError> {
        if peeked.is_empty() {
            return Err(self.eof());
        }
        let have = self.buf.len();
        if is_prefix_either_way(&self.buf, V2_SIGNATURE) && is_v2_start(&self.buf, peeked) {
            self.offer_v2(peeked, have)
        } else if is_v1_start(&self.buf, peeked) {
            self.offer_v1(peeked, have)
        } else {
            let mut seen = self.buf.clone();
            seen.extend_from_slice(&peeked[..peeked.len().min(16)]);
            seen.truncate(16);
            Err(HeaderError::Missing(format!("\"{}\"", seen.escape_ascii())))
        }
    }

    /// The error for an EOF before the header's end.
    pub fn eof(&self) -> HeaderError {
        HeaderError::Truncated(self.buf.len())
    }

    fn offer_v2(&mut self, peeked: &[u8], have: usize) -> Result<Step, HeaderError> {
        if have < V2_FIXED_BYTES {
            let take = (V2_FIXED_BYTES - have).min(peeked.len());
            self.buf.extend_from_slice(&peeked[..take]);
            if self.buf.len() < V2_FIXED_BYTES {
                return Ok(Step::Take(take));
            }
            // The fixed part is whole: refuse a bad version, command or family now, before
            // waiting for the bytes its length announces.
            let version = self.buf[12] >> 4;
            if version != 2 {
                return Err(HeaderError::Version(version));
            }
            let len =
                V2_FIXED_BYTES + usize::from(u16::from_be_bytes([self.buf[14], self.buf[15]]));
            if len > V2_MAX_BYTES {
                return Err(HeaderError::TooLong(V2_MAX_BYTES));
            }
            if let Err(e) = ppp::v2::Header::try_from(&self.buf[..])
                && !matches!(e, ppp::v2::ParseError::Partial(..))
            {
                return Err(v2_error(e));
            }
            return match self.finish_v2(len)? {
                Some(header) => Ok(Step::Done(take, header)),
                None => Ok(Step::Take(take)),
            };
        }
        let len = V2_FIXED_BYTES + usize::from(u16::from_be_bytes([self.buf[14], self.buf[15]]));
        let take = (len - have).min(peeked.len());
        self.buf.extend_from_slice(&peeked[..take]);
        match self.finish_v2(len)? {
            Some(header) => Ok(Step::Done(take, header)),
            None => Ok(Step::Take(take)),
        }
    }

    /// The header once all `len` bytes are in.
    fn finish_v2(&self, len: usize) -> Result<Option<Header>, HeaderError> {
        if self.buf.len() < len {
            return Ok(None);
        }
        let header = ppp::v2::Header::try_from(&self.buf[..]).map_err(v2_error)?;
        use ppp::v2::{Addresses, Command, Protocol};
        if header.command == Command::Local {
            return Ok(Some(Header {
                source: None,
                destination: None,
                len,
            }));
        }
        if header.protocol == Protocol::Datagram {
            return Err(HeaderError::Family(
                "a datagram header on a stream connection".into(),
            ));
        }
        let (source, destination) = match header.addresses {
            Addresses::Unspecified => (None, None),
            Addresses::IPv4(a) => (
                Some(inet(SocketAddr::new(
                    a.source_address.into(),
                    a.source_port,
                ))),
                Some(inet(SocketAddr::new(
                    a.destination_address.into(),
                    a.destination_port,
                ))),
            ),
            Addresses::IPv6(a) => (
                Some(inet(SocketAddr::new(
                    a.source_address.into(),
                    a.source_port,
                ))),
                Some(inet(SocketAddr::new(
                    a.destination_address.into(),
                    a.destination_port,
                ))),
            ),
            Addresses::Unix(a) => (Some(unix_path(&a.source)), Some(unix_path(&a.destination))),
        };
        Ok(Some(Header {
            source,
            destination,
            len,
        }))
    }

    fn offer_v1(&mut self, peeked: &[u8], have: usize) -> Result<Step, HeaderError> {
        let Some(at) = peeked.iter().position(|&b| b == b'\n') else {
            if have + peeked.len() >= V1_MAX_BYTES {
                return Err(HeaderError::TooLong(V1_MAX_BYTES));
            }
            self.buf.extend_from_slice(peeked);
            return Ok(Step::Take(peeked.len()));
        };
        let take = at + 1;
        if have + take > V1_MAX_BYTES {
            return Err(HeaderError::TooLong(V1_MAX_BYTES));
        }
        self.buf.extend_from_slice(&peeked[..take]);
        let header = ppp::v1::Header::try_from(&self.buf[..]).map_err(v1_error)?;
        let (source, destination) = match header.addresses {
            ppp::v1::Addresses::Unknown => (None, None),
            ppp::v1::Addresses::Tcp4(a) => (
                Some(inet(SocketAddr::new(
                    a.source_address.into(),
                    a.source_port,
                ))),
                Some(inet(SocketAddr::new(
                    a.destination_address.into(),
                    a.destination_port,
                ))),
            ),
            ppp::v1::Addresses::Tcp6(a) => (
                Some(inet(SocketAddr::new(
                    a.source_address.into(),
                    a.source_port,
                ))),
                Some(inet(SocketAddr::new(
                    a.destination_address.into(),
                    a.destination_port,
                ))),
            ),
        };
        Ok(Step::Done(
            take,
            Header {
                source,
                destination,
                len: self.buf.len(),
            },
        ))
    }
}

/// Whether `a` is a prefix of `b` or `b` of `a`.
fn is_prefix_either_way(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

/// Whether the consumed bytes and the peeked ones begin (or may still begin) the v2 signature.
fn is_v2_start(have: &[u8], peeked: &[u8]) -> bool {
    let n = V2_SIGNATURE
        .len()
        .saturating_sub(have.len())
        .min(peeked.len());
    have.len() >= V2_SIGNATURE.len() || V2_SIGNATURE[have.len()..][..n] == peeked[..n]
}

/// Whether the consumed bytes and the peeked ones begin (or may still begin) `PROXY `.
fn is_v1_start(have: &[u8], peeked: &[u8]) -> bool {
    if !is_prefix_either_way(have, V1_PREFIX) {
        return false;
    }
    let n = V1_PREFIX.len().saturating_sub(have.len()).min(peeked.len());
    have.len() >= V1_PREFIX.len() || V1_PREFIX[have.len()..][..n] == peeked[..n]
}

fn inet(addr: SocketAddr) -> Address {
    Address::Inet(addr)
}

/// A v2 Unix address: the path up to its first NUL; an empty path is an unnamed socket.
fn unix_path(raw: &[u8; 108]) -> Address {
    use std::os::unix::ffi::OsStrExt;
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    match end {
        0 => Address::Unix(None),
        _ => Address::Unix(Some(PathBuf::from(std::ffi::OsStr::from_bytes(
            &raw[..end],
        )))),
    }
}

fn v2_error(e: ppp::v2::ParseError) -> HeaderError {
    use ppp::v2::ParseError as E;
    match e {
        E::Version(v) => HeaderError::Version(v >> 4),
        E::AddressFamily(_) | E::Protocol(_) | E::InvalidAddresses(..) => {
            HeaderError::Family(e.to_string())
        }
        e => HeaderError::Garbled(e.to_string()),
    }
}

fn v1_error(e: ppp::v1::BinaryParseError) -> HeaderError {
    use ppp::v1::ParseError as E;
    match e {
        ppp::v1::BinaryParseError::Parse(
            e @ (E::InvalidSourceAddress(_) | E::InvalidDestinationAddress(_) | E::InvalidProtocol),
        ) => HeaderError::Family(e.to_string()),
        ppp::v1::BinaryParseError::Parse(E::HeaderTooLong) => HeaderError::TooLong(V1_MAX_BYTES),
        e => HeaderError::Garbled(e.to_string()),
    }
}

/// The header a client sends first: `source` is the client it speaks for, `destination` the
/// server it connected to. Two addresses of different families are both sent as IPv6 (an
/// IPv4 address as `::ffff:a.b.c.d`), as the protocol has one family per header.
///
/// # Examples
///
/// ```
/// use socketkit::proxy::{Version, encode};
///
/// let header = encode(Version::V1, "192.0.2.7:5000".parse()?, "127.0.0.1:7".parse()?);
/// assert_eq!(header, b"PROXY TCP4 192.0.2.7 127.0.0.1 5000 7\r\n");
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = match (source, destination) {
        (SocketAddr::V4(_), SocketAddr::V6(_)) | (SocketAddr::V6(_), SocketAddr::V4(_)) => {
            (to_v6(source), to_v6(destination))
        }
        pair => pair,
    };
    match version {
        Version::V1 => ppp::v1::Addresses::from((source, destination))
            .to_string()
            .into_bytes(),
        Version::V2 => {
            use ppp::v2::{Builder, Command, Protocol, Version};
            Builder::with_addresses(
                Version::Two | Command::Proxy,
                Protocol::Stream,
                (source, destination),
            )
            .build()
            .expect("a header of two addresses fits its length field")
        }
    }
}

/// The `LOCAL` (v2) or `UNKNOWN` (v1) header: a connection that speaks for itself, as a
/// balancer's health check does; the server keeps the socket's own peer.
pub fn encode_local(version: Version) -> Vec<u8> {
    match version {
        Version::V1 => ppp::v1::Addresses::Unknown.to_string().into_bytes(),
        Version::V2 => {
            use ppp::v2::{Builder, Command, Protocol, Version};
            Builder::with_addresses(
                Version::Two | Command::Local,
                Protocol::Unspecified,
                ppp::v2::Addresses::Unspecified,
            )
            .build()
            .expect("an empty header fits its length field")
        }
    }
}

/// What a client announces in the PROXY header it sends first (`--proxy-protocol`,
/// `--proxy-source`): to test a server that sits behind a balancer without the balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announce {
    /// The header's version.
    pub version: Version,
    /// The client the header names. `None`: the connection's own address.
    pub source: Option<SocketAddr>,
}

impl Announce {
    /// The header for a connection from `local` to `peer` (`None` for a Unix stream): the
    /// source is [`Announce::source`], else `local`; the destination is `peer`, else the
    /// unspecified address of the source's family. With no address at all (a Unix stream and
    /// no source given), the `LOCAL`/`UNKNOWN` header.
    pub fn header(&self, local: Option<SocketAddr>, peer: Option<SocketAddr>) -> Vec<u8> {
        let Some(source) = self.source.or(local) else {
            return encode_local(self.version);
        };
        let destination = peer.unwrap_or_else(|| match source {
            SocketAddr::V4(_) => SocketAddr::from(([0u8; 4], 0)),
            SocketAddr::V6(_) => SocketAddr::from(([0u8; 16], 0)),
        });
        encode(self.version, source, destination)
    }
}

fn to_v6(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) => SocketAddr::new(a.ip().to_ipv6_mapped().into(), a.port()),
        v6 => v6,
    }
}

#[cfg(test)]
#[path = "proxy_tests.rs"]
mod tests;
