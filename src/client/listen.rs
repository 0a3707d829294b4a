//! `listen` (nc's `-l`): wait for a peer, then talk to it over stdin and stdout.
//!
//! A stream peer (TCP, Unix stream) gets the stream client's full-duplex copy (`stream.rs`):
//! the input to the peer, the peer to the output, a half-close once the input ends, done when
//! both ends are. With `keep_open` the next peer is taken after it, one at a time, as
//! OpenBSD nc's `-k`. On datagrams (UDP, Unix datagrams) every datagram is written to the
//! output, and each input line goes to whoever sent the last one.
//!
//! The listening socket is the servers' own ([`Listener`]): the same SO_REUSEADDR rule, the
//! same stale-socket-file rule, the file removed at the end.
//!
//! On `tls://` (the `tls` feature, [`ListenOptions::tls`]) each permitted peer's handshake
//! comes first, through a [`Bridge`](crate::tls::Bridge): the exchange then runs on its
//! plaintext end, so `--dump` shows the plaintext.

use std::io::{self, BufRead, Read, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::errors::io_err;
use super::options::SendOptions;
use super::output::write_out;
use super::stream::{StreamClient, Waits};
use crate::access::AccessList;
use crate::dump::{Direction, Dump};
use crate::endpoint::Endpoint;
use crate::engine::listener::Listener;
use crate::error::Error;
use crate::limits::Limits;
use crate::service::Address;

/// How `listen` behaves.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ListenOptions {
    /// Streams: after a peer is done, wait for the next one (nc's `-k`). Default: one peer.
    pub keep_open: bool,
    /// Streams: keep the write side open after the input ends (ncat's `--no-shutdown`).
    /// Default false: half-close, so the peer reads EOF.
    pub no_shutdown: bool,
    /// Give up when nothing arrives for this long: [`Error::TimedOut`] (ncat's `-i`). On a
    /// stream it counts from the last byte either way; on datagrams from the last datagram.
    /// Default: none.
    pub idle_timeout: Option<Duration>,
    /// Peers allowed and refused (`--allow`, `--deny`), as `serve` checks them: a refused
    /// stream peer is closed before a byte is read, a refused datagram dropped.
    pub access: AccessList,
    /// `--dump`: every chunk each way. Default: none.
    pub dump: Option<Dump>,
    /// `tls://` only: the certificate each peer's handshake shows (the `tls` feature). The
    /// handshake is bounded by `idle_timeout`, else by [`TLS_HANDSHAKE_TIMEOUT`].
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::ServerTls>,
}

/// How long a `tls://` peer's handshake may take when no idle time-out is given.
#[cfg(feature = "tls")]
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What `listen` tells its caller as it goes (the CLI logs these).
pub trait ListenEvents {
    /// The socket is bound and listening at `endpoint` (the real port when 0 was asked for).
    fn listening(&mut self, endpoint: &Endpoint);
    /// A stream peer was accepted, or a datagram came from a new sender.
    fn peer(&mut self, peer: &Address);
}

/// Listens on `endpoint` and talks to the peer over `input` and `output`, like `nc -l`.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use socketkit::client::{ListenEvents, ListenOptions, listen};
/// use socketkit::{Endpoint, service::Address};
///
/// struct Ready(std::sync::mpsc::Sender<Endpoint>);
/// impl ListenEvents for Ready {
///     fn listening(&mut self, endpoint: &Endpoint) { self.0.send(endpoint.clone()).unwrap() }
///     fn peer(&mut self, _: &Address) {}
/// }
///
/// let (tx, rx) = std::sync::mpsc::channel();
/// let listening = std::thread::spawn(move || {
///     let mut out = Vec::new();
///     let endpoint = "tcp://127.0.0.1:0".parse().unwrap();
///     listen(&endpoint, &b"hi from listen"[..], &mut out, &ListenOptions::default(), &mut Ready(tx))
///         .map(|()| out)
/// });
/// let addr = rx.recv()?.socket_addrs()?[0];
/// let mut peer = std::net::TcpStream::connect(addr)?;
/// peer.write_all(b"hi from the peer")?;
/// peer.shutdown(std::net::Shutdown::Write)?;
/// let mut heard = String::new();
/// peer.read_to_string(&mut heard)?;
/// assert_eq!(heard, "hi from listen");
/// assert_eq!(listening.join().unwrap()?, b"hi from the peer");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::Bind`] when the endpoint cannot be bound, [`Error::TimedOut`] when the idle
/// time-out passes, [`Error::Config`] for a `unixpacket://` endpoint or a multicast group (not
/// supported here) or a `tls://` endpoint without [`ListenOptions::tls`], [`Error::Tls`] for
/// the peer's failed handshake (without `keep_open`), and the errors of the exchange as
/// [`talk`](super::talk) has them.
pub fn listen(
    endpoint: &Endpoint,
    input: impl BufRead + Send + 'static,
    output: &mut dyn Write,
    options: &ListenOptions,
    events: &mut dyn ListenEvents,
) -> Result<(), Error> {
    if endpoint.transport() == crate::Transport::UnixSeqpacket
        || crate::multicast::group_addr(endpoint)?.is_some()
    {
        return Err(Error::Config(format!(
            "listen takes tcp://, unix://, udp:// and unixgram:// endpoints, not {endpoint}"
        )));
    }
    #[cfg(feature = "tls")]
    let has_tls = options.tls.is_some();
    #[cfg(not(feature = "tls"))]
    let has_tls = false;
    if endpoint.is_tls() != has_tls {
        return Err(Error::Config(match endpoint.is_tls() {
            true if cfg!(feature = "tls") => format!(
                "{endpoint} needs a certificate: --tls-cert FILE --tls-key FILE, or \
                 --tls-self-signed"
            ),
            true => format!("{endpoint}: this socketkit was built without the `tls` feature"),
            false => "TLS settings are for a tls:// endpoint".into(),
        }));
    }
    let listener = Listener::bind(endpoint, &Limits::default(), None)?;
    let mut bound = listener
        .local_endpoint()
        .map_err(|e| io_err("getsockname", e))?;
    if let (true, Ok([addr])) = (endpoint.is_tls(), bound.socket_addrs().as_deref()) {
        bound = Endpoint::tls(*addr);
    }
    events.listening(&bound);
    match listener {
        Listener::Tcp(l) => {
            l.set_nonblocking(false)
                .map_err(|e| io_err("listening", e))?;
            let accept = || {
                let (s, peer) = l.accept()?;
                Ok((StreamClient::Tcp(s), Address::Inet(peer)))
            };
            serve_streams(&bound, accept, input, output, options, events)
        }
        Listener::Unix(l, _file) => {
            l.set_nonblocking(false)
                .map_err(|e| io_err("listening", e))?;
            let accept = || {
                let (s, peer) = l.accept()?;
                let peer = Address::from(&peer);
                Ok((StreamClient::Unix(s, peer.clone()), peer))
            };
            serve_streams(&bound, accept, input, output, options, events)
        }
        Listener::Udp(s) => {
            s.set_nonblocking(false)
                .map_err(|e| io_err("listening", e))?;
            serve_datagrams(Datagrams::Udp(s), input, output, options, events)
        }
        Listener::UnixDatagram(s, _file) => {
            s.set_nonblocking(false)
                .map_err(|e| io_err("listening", e))?;
            serve_datagrams(Datagrams::Unix(s), input, output, options, events)
        }
        Listener::UnixSeqpacket(..) => unreachable!("refused above"),
    }
}

/// One stream peer at a time; the input is shared, so with `keep_open` a later peer gets what
/// the earlier ones left of it (nothing, once it has ended).
fn serve_streams(
    bound: &Endpoint,
    accept: impl Fn() -> io::Result<(StreamClient, Address)>,
    input: impl BufRead + Send + 'static,
    output: &mut dyn Write,
    options: &ListenOptions,
    events: &mut dyn ListenEvents,
) -> Result<(), Error> {
    let input = SharedInput(Arc::new(Mutex::new(Box::new(input))));
    let client_options = SendOptions {
        dump: options.dump.clone(),
        ..SendOptions::default()
    };
    loop {
        let (stream, peer) = match accept() {
            Ok(accepted) => accepted,
            // A peer that left before it was accepted costs nothing but itself.
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
            Err(e) => return Err(io_err("accepting", e)),
        };
        if !options.access.permits_peer(&peer) {
            tracing::warn!("refused {peer} (--allow/--deny)");
            drop(stream);
            continue;
        }
        events.peer(&peer);
        #[cfg(feature = "tls")]
        let stream = match (stream, &options.tls) {
            (StreamClient::Tcp(tcp), Some(tls)) => {
                let timeout = options.idle_timeout.unwrap_or(TLS_HANDSHAKE_TIMEOUT);
                let addresses = super::stream::tcp_addresses(&tcp)?;
                match crate::tls::Bridge::accept(tcp, tls, &peer, timeout) {
                    Ok((plain, bridge)) => StreamClient::Tls(plain, addresses, bridge),
                    // With -k one peer's failed handshake is that peer's, as its exchange is.
                    Err(e) if options.keep_open => {
                        tracing::warn!("{e}");
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            (stream, _) => stream,
        };
        let waits = Waits {
            idle: options.idle_timeout,
            quit_after: None,
            deadline: None,
            no_wait: false,
            both_ends: true,
        };
        let exchanged = stream.exchange(
            bound,
            Box::new(io::BufReader::new(input.clone())),
            output,
            waits,
            !options.no_shutdown,
            &client_options,
        );
        match exchanged {
            Ok(report) => tracing::debug!(
                "{peer} done: {} bytes sent, {} received",
                report.sent,
                report.received
            ),
            // With -k one peer's trouble is that peer's: log it, take the next.
            Err(e) if options.keep_open => tracing::warn!("{peer}: {e}"),
            Err(e) => return Err(e),
        }
        if !options.keep_open {
            return Ok(());
        }
    }
}

/// The input, shared by the peers of `keep_open` one after another.
#[derive(Clone)]
struct SharedInput(Arc<Mutex<Box<dyn BufRead + Send>>>);

impl Read for SharedInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .read(buf)
    }
}

/// A bound datagram socket of either kind.
enum Datagrams {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

/// The sender a reply goes to.
#[derive(Clone)]
enum Sender {
    Udp(std::net::SocketAddr),
    Unix(std::os::unix::net::SocketAddr),
}

impl Datagrams {
    fn try_clone(&self) -> io::Result<Datagrams> {
        Ok(match self {
            Datagrams::Udp(s) => Datagrams::Udp(s.try_clone()?),
            Datagrams::Unix(s) => Datagrams::Unix(s.try_clone()?),
        })
    }

    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, Sender)> {
        match self {
            Datagrams::Udp(s) => s.recv_from(buf).map(|(n, a)| (n, Sender::Udp(a))),
            Datagrams::Unix(s) => s.recv_from(buf).map(|(n, a)| (n, Sender::Unix(a))),
        }
    }

    fn send_to(&self, bytes: &[u8], to: &Sender) -> io::Result<usize> {
        match (self, to) {
            (Datagrams::Udp(s), Sender::Udp(a)) => s.send_to(bytes, a),
            (Datagrams::Unix(s), Sender::Unix(a)) => s.send_to_addr(bytes, a),
            _ => unreachable!("a sender of the socket's own kind"),
        }
    }

    fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Datagrams::Udp(s) => s.set_read_timeout(timeout),
            Datagrams::Unix(s) => s.set_read_timeout(timeout),
        }
    }
}

impl Sender {
    fn address(&self) -> Address {
        match self {
            Sender::Udp(a) => Address::Inet(*a),
            Sender::Unix(a) => Address::from(a),
        }
    }
}

/// The last sender, and whether the input has ended; the replying thread waits on it.
type LastSender = Arc<(Mutex<Option<Sender>>, Condvar)>;

/// Writes every datagram to `output`; a thread sends each input line, its newline kept (as
/// nc does), to the last sender. Runs until the idle time-out passes (or a signal ends it).
fn serve_datagrams(
    socket: Datagrams,
    input: impl BufRead + Send + 'static,
    output: &mut dyn Write,
    options: &ListenOptions,
    events: &mut dyn ListenEvents,
) -> Result<(), Error> {
    let last: LastSender = Arc::new((Mutex::new(None), Condvar::new()));
    let replying = socket.try_clone().map_err(|e| io_err("dup", e))?;
    {
        let last = last.clone();
        let dump = options.dump.clone();
        std::thread::Builder::new()
            .name("socketkit-reply".into())
            .spawn(move || reply_lines(replying, input, &last, dump.as_ref()))
            .map_err(|e| io_err("cannot start the replying thread", e))?;
    }
    socket
        .set_read_timeout(options.idle_timeout)
        .map_err(|e| io_err("setting the read timeout", e))?;
    let mut buf = vec![0u8; 65_536];
    let mut previous: Option<Address> = None;
    loop {
        let (n, sender) = match socket.recv_from(&mut buf) {
            Ok(received) => received,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if super::errors::is_timeout(&e) => {
                return Err(Error::TimedOut {
                    what: "a datagram (idle time-out)",
                    after: options.idle_timeout.unwrap_or_default(),
                });
            }
            Err(e) => return Err(io_err("receiving", e)),
        };
        let peer = sender.address();
        if !options.access.permits_peer(&peer) {
            tracing::debug!("dropped a datagram from {peer} (--allow/--deny)");
            continue;
        }
        if previous.as_ref() != Some(&peer) {
            events.peer(&peer);
            previous = Some(peer.clone());
        }
        // The sender is recorded before the datagram is printed: a line typed in answer to
        // what was printed goes to this sender, not the one before.
        let (slot, wake) = &*last;
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(sender);
        wake.notify_all();
        if let Some(dump) = &options.dump {
            dump.chunk(&peer, Direction::Received, &buf[..n]);
        }
        write_out(output, &buf[..n])?;
    }
}

/// Sends each line of `input` to the last sender, waiting for a first sender before reading.
fn reply_lines(socket: Datagrams, mut input: impl BufRead, last: &LastSender, dump: Option<&Dump>) {
    let (slot, wake) = &**last;
    let mut line = Vec::new();
    loop {
        let to = {
            let mut sender = slot.lock().unwrap_or_else(PoisonError::into_inner);
            while sender.is_none() {
                sender = wake.wait(sender).unwrap_or_else(PoisonError::into_inner);
            }
            sender.clone()
        };
        line.clear();
        match input.read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("reading the input: {e}");
                return;
            }
        }
        // The line goes to whoever sent last when it was read.
        let to = slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .or(to)
            .expect("a sender was set");
        for piece in line.chunks(crate::limits::MAX_DATAGRAM_BYTES) {
            match socket.send_to(piece, &to) {
                Ok(_) => {
                    if let Some(dump) = dump {
                        dump.chunk(&to.address(), Direction::Sent, piece);
                    }
                }
                Err(e) => tracing::warn!("replying to {}: {e}", to.address()),
            }
        }
    }
}
