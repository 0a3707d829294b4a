//! Relaying (socat's two addresses, `TCP-LISTEN:a,fork TCP:b`): each accepted peer gets its
//! own connection to a target, and bytes are copied both ways, each half-close carried across.
//!
//! A [`Relay`] is an [`AsyncStreamHandler`], so the async engine accepts for it: the
//! connection permit before `accept()`, the access lists, the idle and write time-outs on the
//! client's side, the drain and grace period at shutdown are the server's own. Streams of
//! either kind relay to streams of either kind (tcp → unix, unix → tcp). A target that refuses
//! or does not answer in time costs only that client: it is closed, with one log line.
//!
//! UDP relays to UDP with [`DatagramRelay`] (`datagram.rs`): one upstream socket per client,
//! closed after an idle time-out.
//!
//! TLS (the `tls` feature) on either side: a `tls://` listener's handshake is the server's
//! ([`ServerBuilder::tls`](crate::ServerBuilder::tls)), and a `tls://` target's is made here
//! after the TCP connect, within the connect time-out, with [`Relay::tls`]'s settings. The
//! relay copies plaintext, so its `--dump` shows plaintext.

mod datagram;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::dump::{Direction, Dump};
use crate::endpoint::{Endpoint, Transport};
use crate::error::Error;
use crate::handler::{AsyncStreamHandler, AsyncStreamRequest};
use crate::service::Address;
pub use datagram::DatagramRelay;

/// Bytes read at a time, each way.
const RELAY_CHUNK_BYTES: usize = 64 * 1024;

/// The handler that relays each connection to `target`.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use socketkit::{Engine, Server, relay::Relay};
///
/// // The target: the uppercase service.
/// let upper = Server::builder().listen("tcp://127.0.0.1:0".parse()?).bind()?;
/// let target = upper.local_endpoints()[0].clone();
/// let upper_stop = upper.shutdown_handle();
/// let upper_serving = std::thread::spawn(move || upper.serve_forever());
///
/// let relay = Server::builder()
///     .listen("tcp://127.0.0.1:0".parse()?)
///     .engine(Engine::Async)
///     .async_handler(Relay::new(target)?)
///     .bind()?;
/// let addr = relay.local_addr().unwrap();
/// let stop = relay.shutdown_handle();
/// let serving = std::thread::spawn(move || relay.serve_forever());
///
/// let mut client = std::net::TcpStream::connect(addr)?;
/// client.write_all(b"through the relay")?;
/// client.shutdown(std::net::Shutdown::Write)?; // carried to the target, which then closes
/// let mut reply = String::new();
/// client.read_to_string(&mut reply)?;
/// assert_eq!(reply, "THROUGH THE RELAY");
/// # stop.shutdown();
/// # serving.join().unwrap()?;
/// # upper_stop.shutdown();
/// # upper_serving.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Relay {
    target: Endpoint,
    /// TCP: the target's addresses, resolved once at start (no look-up per connection).
    addrs: Vec<SocketAddr>,
    connect_timeout: Duration,
    idle_timeout: Option<Duration>,
    dump: Option<Dump>,
    /// A `tls://` target's client settings and the name its handshake asks for.
    #[cfg(feature = "tls")]
    tls: Option<(crate::tls::ClientTls, rustls_pki_types::ServerName<'static>)>,
}

impl Relay {
    /// A relay to `target` (`tcp://`, `unix://`, or `tls://` with [`Relay::tls`]), its name
    /// resolved now.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a target that is not a stream (or `tls://` in a build without
    /// the `tls` feature), [`Error::NameNotFound`] for a name that does not resolve.
    pub fn new(target: Endpoint) -> Result<Relay, Error> {
        if target.is_tls() && !cfg!(feature = "tls") {
            return Err(Error::Config(format!(
                "{target}: this socketkit was built without the `tls` feature"
            )));
        }
        let addrs = match target.transport() {
            Transport::Tcp => target.socket_addrs()?,
            Transport::Unix => Vec::new(),
            _ => {
                return Err(Error::Config(format!(
                    "a stream relays to a tcp:// or unix:// target, not {target}"
                )));
            }
        };
        Ok(Relay {
            target,
            addrs,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: None,
            dump: None,
            #[cfg(feature = "tls")]
            tls: None,
        })
    }

    /// The client's TLS settings for a `tls://` target (required for one): the handshake
    /// follows each TCP connect, within the connect time-out.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a target that is not `tls://`, or whose host a certificate cannot
    /// carry (see [`ClientTls::server_name`](crate::tls::ClientTls::server_name)).
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::tls::ClientTls) -> Result<Relay, Error> {
        if !self.target.is_tls() {
            return Err(Error::Config(format!(
                "TLS settings are for a tls:// target, not {}",
                self.target
            )));
        }
        let name = tls.server_name(&self.target)?;
        self.tls = Some((tls, name));
        Ok(self)
    }

    /// How long connecting to the target may take (default 5 s); past it, that client is
    /// closed.
    pub fn connect_timeout(mut self, timeout: Duration) -> Relay {
        self.connect_timeout = timeout;
        self
    }

    /// Close both sides when the target sends nothing for this long. The client's side is
    /// bounded by the server's idle time-out already. Default: none.
    pub fn idle_timeout(mut self, timeout: Duration) -> Relay {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Show every chunk each way in `dump` (the client is the peer named).
    pub fn dump(mut self, dump: Option<Dump>) -> Relay {
        self.dump = dump;
        self
    }

    /// Refuses a target that is one of the relay's own listening endpoints (`bound`, as
    /// [`Server::local_endpoints`](crate::Server::local_endpoints) gives them): each
    /// connection would open another, until the limits stop it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`], naming the endpoint.
    pub fn refuse_loop(&self, bound: &[Endpoint]) -> Result<(), Error> {
        for listening in bound {
            let same = match (listening, &self.target) {
                // tcp:// and tls:// alike: the same port is the same socket.
                (own, to)
                    if own.transport() == Transport::Tcp && to.transport() == Transport::Tcp =>
                {
                    let ours = listening.socket_addrs()?;
                    ours.iter()
                        .any(|own| self.addrs.iter().any(|to| reaches(*to, *own)))
                }
                (Endpoint::Unix(own), Endpoint::Unix(to)) => own == to,
                _ => false,
            };
            if same {
                return Err(Error::Config(format!(
                    "the target {} is the relay's own listening address {listening}",
                    self.target
                )));
            }
        }
        Ok(())
    }

    /// Connects to the target within the connect time-out.
    async fn connect(&self) -> io::Result<Box<dyn Upstream>> {
        let connecting = async {
            if let Some(addr) = self.target.unix_addr() {
                let stream = std::os::unix::net::UnixStream::connect_addr(&addr?)?;
                stream.set_nonblocking(true)?;
                let stream = tokio::net::UnixStream::from_std(stream)?;
                return Ok(Box::new(stream) as Box<dyn Upstream>);
            }
            let stream = tokio::net::TcpStream::connect(&self.addrs[..]).await?;
            stream.set_nodelay(true)?;
            #[cfg(feature = "tls")]
            if let Some((tls, name)) = &self.tls {
                // Kind `Other`: a reset or abort kind would be taken for the client gone
                // and logged at debug level only.
                let stream = tls.connect(name.clone(), stream).await.map_err(|e| {
                    io::Error::other(format!("TLS handshake failed: {}", crate::tls::cause(&e)))
                })?;
                return Ok(Box::new(stream) as Box<dyn Upstream>);
            }
            if self.target.is_tls() {
                return Err(io::Error::other(
                    "a tls:// target needs Relay::tls's settings",
                ));
            }
            Ok(Box::new(stream) as Box<dyn Upstream>)
        };
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(connected) => connected,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("timed out after {:?}", self.connect_timeout),
            )),
        }
    }
}

/// A connection to the target, of either kind.
trait Upstream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Upstream for T {}

impl AsyncStreamHandler for Relay {
    async fn handle(&self, request: &mut AsyncStreamRequest) -> io::Result<()> {
        let client = request.peer().clone();
        let upstream = self
            .connect()
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot reach {}: {e}", self.target)))?;
        tracing::debug!("{client}: relaying to {}", self.target);
        let (mut from_target, mut to_target) = tokio::io::split(upstream);
        let (from_client, to_client) = request.split();
        let tap = |direction| self.dump.as_ref().map(|dump| (dump, &client, direction));
        let up = copy(from_client, &mut to_target, None, tap(Direction::Received));
        let down = copy(
            &mut from_target,
            to_client,
            self.idle_timeout,
            tap(Direction::Sent),
        );
        let (sent_up, sent_down) = tokio::try_join!(up, down)?;
        tracing::debug!("{client}: {sent_up} bytes to the target, {sent_down} back");
        Ok(())
    }
}

/// Copies `from` to `to` until EOF, then shuts `to`'s write side down (the half-close carried
/// across). Each read waits at most `idle`, if given.
async fn copy(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    idle: Option<Duration>,
    tap: Option<(&Dump, &Address, Direction)>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; RELAY_CHUNK_BYTES];
    let mut copied = 0u64;
    loop {
        let n = match idle {
            None => from.read(&mut buf).await?,
            Some(idle) => tokio::time::timeout(idle, from.read(&mut buf))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the target sent nothing for {idle:?}"),
                    )
                })??,
        };
        if n == 0 {
            break;
        }
        if let Some((dump, peer, direction)) = tap {
            dump.chunk(peer, direction, &buf[..n]);
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        copied += n as u64;
    }
    to.shutdown().await?;
    Ok(copied)
}

/// Whether connecting to `to` reaches the socket bound to `own`: the same port, and the same
/// address or `own` the wildcard (a socket bound to 0.0.0.0 takes every local address). A
/// connection to 0.0.0.0 or `::` goes to the loopback (Linux), so it counts as one to it.
fn reaches(to: SocketAddr, own: SocketAddr) -> bool {
    let to_ip = match to.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    to.port() == own.port() && (to_ip == own.ip() || own.ip().is_unspecified())
}
