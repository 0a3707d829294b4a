//! socketkit: a socket-server framework and command-line toolkit.
//!
//! It is the system of two classic networking lectures, as real software: the uppercase
//! client-server application over TCP and UDP, an iterative and a concurrent server, and Python's
//! `socketserver` framework, in Rust.
//!
//! # Layout
//!
//! | module            | concept                                                            |
//! |-------------------|--------------------------------------------------------------------|
//! | [`error`]         | [`Error`] and its [`ErrorKind`]s, which are the CLI's exit codes    |
//! | [`endpoint`]      | `tcp://`, `tls://`, `udp://`, `unix://`, `unixgram://`, `unixpacket://`: one parser |
//! | `seqpacket`       | a leaf: Unix `SOCK_SEQPACKET` record I/O (`MSG_TRUNC`), for engines, clients and `bench` |
//! | [`names`]         | `inet_aton`, byte order, `gethostbyname_ex`, `getfqdn`, ports       |
//! | [`multicast`]     | groups (224.0.0.0/4, ff00::/8): the interface to join on, the join  |
//! | `limits`, `access`, `shutdown` | leaves: [`Limits`], [`server::AccessList`], [`ShutdownHandle`] (re-exported by [`server`]) |
//! | [`service`]       | sans-IO protocol logic ([`service::Upper`]): no sockets, no clocks  |
//! | [`codec`]         | framing: `raw`, `line`, `length` (tokio-util codecs over bytes)     |
//! | [`handler`]       | the socketserver API: `handle()` with a reader and a writer         |
//! | [`exec`]          | a program as the server (`serve -- PROGRAM`, inetd, `tcpserver`, `ncat -e`): an async handler per connection, one run per datagram; inside it `env` (UCSPI's variables), `children` (reaping, SIGTERM then SIGKILL), `stream`, `datagram` |
//! | [`engine`]        | the I/O drivers: `tokio/` (async), `blocking/` (sequential, threaded, and `blocking/pool/`), `uring/` (io_uring: `probe`, `worker`, `stream`, `dgram`, `bufring`); beside them `conn` (the rules of one connection), `accept` and `datagram` (the rules every engine shares; `datagram/batch`: `recvmmsg`/`sendmmsg`), `runtime` (their state), `listener` |
//! | [`server`]        | [`ServerBuilder`], [`Server`]: the only caller of the engines       |
//! | [`client`]        | the clients behind `socketkit send` and `socketkit client`; inside it `options`, `stream`, `datagram`, `broadcast`, `multicast`, `input` and `output` (the framing of stdin and stdout), `errors` |
//! | [`dump`]          | `--dump hex\|text`: `hexdump -C`'s layout of each chunk (sans-IO `format`), and the shared writer
//! | [`relay`]         | `socketkit relay`: an async handler that connects each peer to a target and copies both ways, half-closes carried; a `tls://` target's handshake after the connect (feature `tls`)
//! | [`ping`]          | ICMP echo (`SOCK_RAW`, or the unprivileged ICMP datagram socket): `icmp` (header, checksum, reply parser), the statistics as iputils computes them |
//! | [`stats`]         | a leaf: each listener's counters (connections, datagrams, bytes, ends by cause, durations), which every engine adds to |
//! | `metrics`         | (feature `metrics`) `serve --metrics`: the counters in the Prometheus text format over HTTP (prometheus-client, hyper), with build and process metrics |
//! | `tls` (feature `tls`) | TLS on rustls (ring): `ServerTls`, `ClientTls`, the handshake's one-phrase causes, and `Bridge` (TLS for blocking code over a socket pair); the async engine, the clients and `bench` wrap their byte streams with it |
//! | [`bench`](mod@bench) | the load generator behind `socketkit bench`; inside it `plan`, `target`, `run` (what every task shares), `converse` (one connection's exchange), `pace`, `worker` (the load loops), `uring` (the load loops on io_uring, `--engine uring`, feature `uring`), `counters` (what the workers add up, and each second closed as it ends), `report`, `recording` (the raw histograms, whole and over time), `timeline` (the run over time in at most `MAX_POINTS` points), `merge` (runs added up), `hdrlog` and `read` (HdrHistogram interval logs and `--json` lines, feature `hdr-log`), `plot` (the SVG, feature `plot`) |
//!
//! Imports run one way, up this table: `server` → `engine` → `handler`, `codec`, `service` →
//! the leaves → `endpoint` → `error` (`error` naming the `Endpoint` that failed is the one
//! exception). `scripts/layers.sh` fails CI on an import cycle.
//!
//! A service is written once, as plain code over bytes; every engine runs it on every transport.
//!
//! # Quick start
//!
//! ```
//! use std::net::UdpSocket;
//! use socketkit::{Engine, Server, service::Upper};
//!
//! let server = Server::builder()
//!     .listen("udp://127.0.0.1:0".parse()?)
//!     .engine(Engine::Async)
//!     .service(Upper)
//!     .bind()?;
//! let addr = server.local_addr().unwrap();
//! let stop = server.shutdown_handle();
//! let serving = std::thread::spawn(move || server.serve_forever());
//!
//! // The slides' UDP client.
//! let client = UdpSocket::bind("127.0.0.1:0")?;
//! client.send_to(b"MixedCaseString", addr)?;
//! let mut buf = [0u8; 1024];
//! let (n, _) = client.recv_from(&mut buf)?;
//! assert_eq!(&buf[..n], b"MIXEDCASESTRING");
//!
//! stop.shutdown();
//! serving.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub(crate) mod access;
pub mod bench;
pub mod client;
pub mod codec;
pub mod dump;
pub mod endpoint;
pub mod engine;
pub mod error;
pub mod exec;
pub mod handler;
pub(crate) mod limits;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod multicast;
pub mod names;
pub mod ping;
pub mod relay;
pub(crate) mod seqpacket;
pub mod server;
pub mod service;
pub(crate) mod shutdown;
pub mod stats;
#[cfg(feature = "tls")]
pub mod tls;

pub use endpoint::{Endpoint, Host, Transport};
pub use engine::Engine;
pub use error::{Error, ErrorKind};
pub use server::{
    Limits, MAX_DATAGRAM_BYTES, MAX_DATAGRAM_BYTES_V6, MAX_TIMEOUT, Server, ServerBuilder,
    ShutdownHandle,
};

/// The README's Rust examples, compiled and run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
