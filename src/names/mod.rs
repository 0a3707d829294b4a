//! Names, addresses and ports: the helpers of the second sockets lecture, as library calls.
//!
//! The slides reach for Python's `socket` helpers: byte order (`htonl`, `htons`, `ntohl`,
//! `ntohs`), address text (`inet_aton`, `inet_ntoa`), name look-ups (`gethostbyname_ex`,
//! `gethostbyaddr`, `getfqdn`) and well-known ports (`getservbyname`, `getservbyport`). The
//! standard library covers part of this (`u32::to_be`, `Ipv4Addr`); this module gives the rest,
//! with the answers Python gives on the same machine (the test suite compares them).
//!
//! - `addr`: [`aton`] (`inet_aton` with its legacy forms), [`ntoa`], [`htonl`], [`htons`],
//!   [`ntohl`], [`ntohs`], and [`IpAddress`] (IPv4 or IPv6 text, packed bytes, both byte orders).
//! - `resolve`: [`lookup`] (`getaddrinfo` with the canonical name, plus aliases),
//!   [`host_by_name`] (`gethostbyname_ex`), [`host_by_addr`] (`gethostbyaddr`), [`fqdn`]
//!   (`getfqdn`), [`hostname`], and [`with_timeout`] to bound any of them.
//! - `port`: [`service_by_name`], [`service_by_port`] and the built-in [`WELL_KNOWN_PORTS`].
//! - `sys`: the C calls with no safe binding, the only `unsafe` code here.
//!
//! Look-ups use the system resolver (NSS: `/etc/hosts`, then DNS or whatever nsswitch.conf
//! lists), exactly as Python does, so the answers match. They block; [`with_timeout`] bounds them.
//!
//! # Examples
//!
//! ```
//! use socketkit::names;
//!
//! let addr = names::aton("127.1")?; // inet_aton's short form
//! assert_eq!(addr.octets(), [127, 0, 0, 1]);
//! assert_eq!(names::htonl(0x7f00_0001).to_ne_bytes(), addr.octets());
//! let localhost = names::host_by_name("localhost")?;
//! assert!(localhost.addresses.contains(&"127.0.0.1".parse().unwrap()));
//! assert_eq!(names::service_by_name("echo", names::Protocol::Tcp)?.port, 7);
//! # Ok::<(), socketkit::Error>(())
//! ```

mod addr;
mod port;
mod resolve;
mod sys;

pub use addr::{IpAddress, aton, htonl, htons, ntoa, ntohl, ntohs};
pub use port::{
    Protocol, ServiceEntry, Source, WELL_KNOWN_PORTS, WellKnownPort, service_by_name,
    service_by_port,
};
/// The old name of [`IpAddress`], kept for one release.
///
/// Renamed because [`service::Address`](crate::service::Address), a server's peer or listener
/// on any transport, had the same name for another meaning; that one is in every server's API
/// (`verify_request`, `peer()`, `Context`), this one only in the name tools.
#[deprecated(
    since = "0.2.0",
    note = "renamed to `IpAddress`; `service::Address` is a transport peer"
)]
pub type Address = IpAddress;
pub use resolve::{HostEntry, fqdn, host_by_addr, host_by_name, hostname, lookup, with_timeout};
