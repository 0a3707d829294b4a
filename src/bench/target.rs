//! Where a run connects: the endpoint resolved once, before the clock starts.

use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;

use crate::endpoint::Endpoint;

/// Where to connect: resolved once, before the clock starts.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Inet(SocketAddr),
    Unix(std::path::PathBuf),
    /// A Unix sequenced-packet endpoint: one request per record, one reply per record.
    Seqpacket(Endpoint),
}

impl Target {
    /// The endpoint's first address (or path), resolved before the clock starts.
    pub(crate) fn of(endpoint: &Endpoint) -> Result<Target, crate::Error> {
        match endpoint {
            // tokio's `connect` reads a leading NUL as a Linux abstract name (`unix://@name`).
            Endpoint::Unix(path) => Ok(Target::Unix(match endpoint.abstract_name() {
                Some(name) => std::ffi::OsString::from_vec([b"\0", name].concat()).into(),
                None => path.clone(),
            })),
            Endpoint::Tcp { .. } | Endpoint::Tls { .. } | Endpoint::Udp { .. } => {
                Ok(Target::Inet(endpoint.socket_addrs()?[0]))
            }
            Endpoint::UnixSeqpacket(_) => Ok(Target::Seqpacket(endpoint.clone())),
            Endpoint::UnixDatagram(_) => Err(crate::Error::Config(
                "bench speaks tcp://, udp://, unix:// and unixpacket:// (not unixgram://)".into(),
            )),
        }
    }
}
