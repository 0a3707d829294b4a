//! The stream client (TCP and Unix streams): connect, then copy the input out and the reply in,
//! full duplex, until the server closes or a bound of [`Waits`] passes.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use socket2::{Domain, Socket, Type};

use super::errors::{io_err, is_timeout, max_time_passed, no_address_for_bind, timed_out};
use super::input::FrameInput;
use super::options::{SendOptions, SendReport};
use super::output::{FrameOutput, write_out};
use crate::codec::Framing;
use crate::dump::{Direction, Dump};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::service::Address;

/// A connected stream of either kind.
pub(super) enum StreamClient {
    Tcp(TcpStream),
    /// The stream and the server's address (a path or an abstract name).
    Unix(UnixStream, Address),
    /// A `tls://` connection: the plaintext end of its [`Bridge`](crate::tls::Bridge), and the
    /// TCP connection's local and peer addresses.
    #[cfg(feature = "tls")]
    Tls(UnixStream, (Address, Address), crate::tls::Bridge),
}

impl StreamClient {
    /// Connects within `options.timeout`, or what is left of the `deadline` (the end of
    /// `max_time`, and its length) when that is sooner.
    pub(super) fn connect(
        endpoint: &Endpoint,
        options: &SendOptions,
        deadline: Option<(Instant, Duration)>,
    ) -> Result<StreamClient, Error> {
        if let Some(addr) = endpoint.unix_addr() {
            return addr
                .and_then(|addr| UnixStream::connect_addr(&addr))
                .map(|s| StreamClient::Unix(s, unix_server_address(endpoint)))
                .map_err(|source| Error::Connect {
                    endpoint: endpoint.clone(),
                    source,
                });
        }
        #[cfg(feature = "tls")]
        let tls = match endpoint.is_tls() {
            true => Some(crate::tls::ClientTls::new(&options.tls)?),
            false => None,
        };
        #[cfg(not(feature = "tls"))]
        if endpoint.is_tls() {
            return Err(Error::Config(format!(
                "{endpoint}: this socketkit was built without the `tls` feature"
            )));
        }
        // Every address in turn, as Python's `create_connection` does.
        let mut last = None;
        let mut by_max_time = None;
        for addr in endpoint.socket_addrs()? {
            if options.bind.is_some_and(|b| b.is_ipv4() != addr.is_ipv4()) {
                continue;
            }
            let mut wait = options.timeout;
            by_max_time = None;
            if let Some((at, total)) = deadline {
                let left = at.saturating_duration_since(Instant::now());
                if left <= wait {
                    if left.is_zero() {
                        return Err(max_time_passed(total));
                    }
                    (wait, by_max_time) = (left, Some(total));
                }
            }
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)
                .map_err(|e| io_err("cannot create a socket", e))?;
            if let Some(bind) = options.bind {
                // A failed bind is ours, not the server's: exit 7, and no other address helps.
                socket.bind(&bind.into()).map_err(|source| Error::Bind {
                    endpoint: Endpoint::tcp(bind),
                    source,
                })?;
            }
            match socket.connect_timeout(&addr.into(), wait) {
                #[cfg(feature = "tls")]
                Ok(()) if tls.is_some() => {
                    let tcp = TcpStream::from(socket);
                    let addresses = tcp_addresses(&tcp)?;
                    let tls = tls.as_ref().expect("checked");
                    let (plain, bridge) = crate::tls::Bridge::connect(tcp, tls, endpoint, wait)?;
                    return Ok(StreamClient::Tls(plain, addresses, bridge));
                }
                Ok(()) => return Ok(StreamClient::Tcp(TcpStream::from(socket))),
                Err(e) => {
                    tracing::debug!("connecting to {addr} failed: {e}");
                    last = Some(e);
                }
            }
        }
        let source = last.unwrap_or_else(no_address_for_bind);
        if source.kind() == io::ErrorKind::ConnectionReset {
            // Accepted and reset at once (a denied peer), before connect() reported success.
            return Err(Error::Reset {
                endpoint: endpoint.clone(),
                received: 0,
            });
        }
        if is_timeout(&source) {
            if let Some(total) = by_max_time {
                return Err(max_time_passed(total));
            }
            return Err(Error::TimedOut {
                what: "the connection",
                after: options.timeout,
            });
        }
        Err(Error::Connect {
            endpoint: endpoint.clone(),
            source,
        })
    }

    fn addresses(&self) -> Result<(Address, Address), Error> {
        match self {
            StreamClient::Tcp(s) => tcp_addresses(s),
            StreamClient::Unix(_, server) => Ok((Address::Unix(None), server.clone())),
            #[cfg(feature = "tls")]
            StreamClient::Tls(_, addresses, _) => Ok(addresses.clone()),
        }
    }

    fn try_clone(&self) -> io::Result<StreamClient> {
        Ok(match self {
            StreamClient::Tcp(s) => StreamClient::Tcp(s.try_clone()?),
            StreamClient::Unix(s, server) => StreamClient::Unix(s.try_clone()?, server.clone()),
            #[cfg(feature = "tls")]
            StreamClient::Tls(s, addresses, bridge) => {
                StreamClient::Tls(s.try_clone()?, addresses.clone(), bridge.clone())
            }
        })
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            StreamClient::Tcp(s) => s.shutdown(how),
            StreamClient::Unix(s, _) => s.shutdown(how),
            #[cfg(feature = "tls")]
            StreamClient::Tls(s, ..) => s.shutdown(how),
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            StreamClient::Tcp(s) => s.as_fd(),
            StreamClient::Unix(s, _) => s.as_fd(),
            #[cfg(feature = "tls")]
            StreamClient::Tls(s, ..) => s.as_fd(),
        }
    }

    /// Runs the exchange, through the framing codecs when the options ask for them.
    pub(super) fn exchange(
        self,
        endpoint: &Endpoint,
        input: Box<dyn BufRead + Send>,
        output: &mut dyn Write,
        waits: Waits,
        half_close: bool,
        options: &SendOptions,
    ) -> Result<SendReport, Error> {
        let (local, peer) = self.addresses()?;
        tracing::debug!("connected from {local} to {peer}");
        #[cfg(feature = "tls")]
        let bridge = match &self {
            StreamClient::Tls(_, _, bridge) => Some(bridge.clone()),
            _ => None,
        };
        let tap = options.dump.clone().map(|dump| (dump, peer.clone()));
        let (sent, received) = match (options.codec(), options.codec()) {
            (Some(encoder), Some(decoder)) => {
                let messages = Arc::new(AtomicU64::new(0));
                let framed_input = FrameInput {
                    input,
                    codec: encoder,
                    max_line: options.max_input_line(),
                    pending: BytesMut::new(),
                    messages: messages.clone(),
                };
                let mut framed_output = FrameOutput {
                    output,
                    codec: decoder,
                    buffer: BytesMut::new(),
                    header_bytes: match options.framing {
                        Framing::Length(width) => width.bytes() as u64,
                        _ => 0,
                    },
                    pending: 0,
                    replies: 0,
                };
                let input = Box::new(framed_input);
                let (sent, received, eof) =
                    self.pump(endpoint, input, &mut framed_output, waits, half_close, tap)?;
                framed_output.finish(eof, messages.load(Ordering::SeqCst))?;
                (sent, received)
            }
            _ => {
                let (sent, received, _) =
                    self.pump(endpoint, input, output, waits, half_close, tap)?;
                (sent, received)
            }
        };
        #[cfg(feature = "tls")]
        if let Some(bridge) = bridge {
            tls_outcome(&bridge, endpoint, received)?;
        }
        Ok(SendReport {
            local,
            peer,
            sent,
            received,
        })
    }

    /// Copies `input` to the socket on a thread of its own while the socket is copied to
    /// `output` here, so a large message and a server that streams its reply back cannot
    /// deadlock on full buffers. Returns the bytes sent and received, and whether the server
    /// closed (rather than `quit_after` ending the wait), when the server closes or a bound of
    /// `waits` passes (see [`send`](super::send)); a sender still blocked on its input (a terminal) is left
    /// behind, as nc does.
    fn pump(
        self,
        endpoint: &Endpoint,
        mut input: Box<dyn Read + Send>,
        output: &mut dyn Write,
        waits: Waits,
        half_close: bool,
        tap: Option<(Dump, Address)>,
    ) -> Result<(u64, u64, bool), Error> {
        if waits.no_wait {
            let mut writer = Tapped {
                inner: self,
                tap: tap.clone(),
            };
            let sent = io::copy(&mut input, &mut writer).map_err(|e| send_error(endpoint, 0, e))?;
            writer
                .inner
                .shutdown(Shutdown::Write)
                .map_err(|e| send_error(endpoint, 0, e))?;
            #[cfg(feature = "tls")]
            if let StreamClient::Tls(plain, _, bridge) = &writer.inner {
                tls_sent(plain, bridge, endpoint, waits.idle.unwrap_or(Duration::MAX))?;
            }
            return Ok((sent, 0, false));
        }
        let mut writer = Tapped {
            inner: self.try_clone().map_err(|e| io_err("dup", e))?,
            tap: tap.clone(),
        };
        let (mut wake, mut woken_by) = UnixStream::pair().map_err(|e| io_err("socketpair", e))?;
        let sent = Arc::new(AtomicU64::new(0));
        // Set while a write is under way; `failed` is set before it is cleared, so a reader that
        // sees EOF and neither flag knows that no write failed (or is about to).
        let writing = Arc::new(AtomicBool::new(false));
        let failed = Arc::new(AtomicBool::new(false));
        let sender = {
            let sent = sent.clone();
            let writing = writing.clone();
            let failed = failed.clone();
            std::thread::Builder::new()
                .name("socketkit-send".into())
                .spawn(move || -> io::Result<()> {
                    let mut buf = vec![0u8; 64 * 1024];
                    let copied = loop {
                        let n = match input.read(&mut buf) {
                            Ok(0) => break Ok(()),
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => break Err(e),
                        };
                        writing.store(true, Ordering::SeqCst);
                        let written = writer.write_all(&buf[..n]);
                        if written.is_err() {
                            failed.store(true, Ordering::SeqCst);
                        }
                        writing.store(false, Ordering::SeqCst);
                        if let Err(e) = written {
                            break Err(e);
                        }
                        sent.fetch_add(n as u64, Ordering::Relaxed);
                    };
                    let result = copied.and_then(|()| {
                        if half_close {
                            writer.inner.shutdown(Shutdown::Write)?; // the server reads EOF
                            // Over TLS the input is sent once the bridge has written it: a
                            // caller that exits when both ends are done (listen, after the
                            // peer's EOF) would otherwise cut it short.
                            #[cfg(feature = "tls")]
                            if let StreamClient::Tls(_, _, bridge) = &writer.inner {
                                bridge.wait_sent(Duration::MAX)?;
                            }
                        }
                        Ok(())
                    });
                    if result.is_err() {
                        failed.store(true, Ordering::SeqCst);
                    }
                    let _ = wake
                        .write_all(&[1])
                        .and_then(|()| wake.shutdown(Shutdown::Write));
                    result
                })
                .map_err(|e| io_err("cannot start the sending thread", e))?
        };
        let mut sender = Some(sender);
        let mut reader = self;
        let mut received = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut last_data = Instant::now();
        let mut input_done = false;
        // The sender's writes were refused by a server that has closed or reset: only a reply
        // already on its way can still come.
        let mut peer_gone = false;
        // The peer's EOF came while the input still runs, and `waits.both_ends` asks to send
        // the rest: the socket is no longer read.
        let mut peer_eof = false;
        let outcome = loop {
            let quiet_ends_well = input_done && waits.quit_after.is_some();
            let silence = if quiet_ends_well {
                waits.quit_after
            } else {
                waits.idle
            };
            let until = [
                silence.map(|s| last_data + s),
                waits.deadline.map(|(at, _)| at),
            ]
            .into_iter()
            .flatten()
            .min();
            let woken = wait_ready(
                (!peer_eof).then(|| reader.as_fd()),
                sender.as_ref().map(|_| woken_by.as_fd()),
                until,
            );
            match woken {
                Err(e) => break Err(io_err("waiting for the reply", e)),
                Ok(Ready::Wake) => {
                    let _ = woken_by.read(&mut [0u8; 1]);
                    let finished = sender.take().expect("woken by a running sender");
                    match finished.join().expect("the sending thread panicked") {
                        Ok(()) => {
                            input_done = true;
                            last_data = Instant::now();
                        }
                        Err(e) if is_gone(&e) => {
                            tracing::debug!("the server stopped reading: {e}");
                            peer_gone = true;
                        }
                        Err(e) if peer_eof => tracing::debug!("sending after the peer's EOF: {e}"),
                        Err(e) => break Err(send_error(endpoint, received, e)),
                    }
                    if peer_eof {
                        break Ok(true);
                    }
                }
                Ok(Ready::TimedOut) => {
                    let now = Instant::now();
                    if let Some((at, total)) = waits.deadline
                        && now >= at
                    {
                        break Err(max_time_passed(total));
                    }
                    if quiet_ends_well {
                        break Ok(false);
                    }
                    break Err(timed_out(waits.idle.unwrap_or_default()));
                }
                Ok(Ready::Socket) => match reader.read(&mut buf) {
                    Ok(0) if waits.both_ends && sender.is_some() => peer_eof = true,
                    Ok(0) => break Ok(true),
                    Ok(n) => {
                        received += n as u64;
                        if let Some((dump, peer)) = &tap {
                            dump.chunk(peer, Direction::Received, &buf[..n]);
                        }
                        last_data = Instant::now();
                        if let Err(e) = write_out(output, &buf[..n]) {
                            break Err(e);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted || is_timeout(&e) => {}
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                        break Err(Error::Reset {
                            endpoint: endpoint.clone(),
                            received,
                        });
                    }
                    Err(e) => break Err(io_err("reading the reply", e)),
                },
            }
        };
        let _ = reader.shutdown(Shutdown::Both); // unblock a sender waiting on the server
        let eof = outcome?;
        // A write that failed because the server is gone may not have reported it yet: hear it
        // (it returns at once now). A sender blocked on its input (a terminal) is left behind.
        if let Some(running) = sender.take()
            && (writing.load(Ordering::SeqCst)
                || failed.load(Ordering::SeqCst)
                || running.is_finished())
        {
            match running.join().expect("the sending thread panicked") {
                Ok(()) => {}
                Err(e) if is_gone(&e) => peer_gone = true,
                Err(e) => return Err(send_error(endpoint, received, e)),
            }
        }
        // The server answered and closed before reading everything (the slides' servers read
        // one recv(1024)): the reply is what counts. With no reply at all, it refused us.
        if peer_gone && received == 0 {
            return Err(Error::Reset {
                endpoint: endpoint.clone(),
                received,
            });
        }
        Ok((sent.load(Ordering::Relaxed), received, eof))
    }
}

/// What ended a wait in [`wait_ready`].
enum Ready {
    /// The socket has data, an EOF or an error to report.
    Socket,
    /// The sending thread is done.
    Wake,
    /// `until` passed.
    TimedOut,
}

/// Waits until `socket` (if still read) is readable, `wake` is, or `until` passes.
fn wait_ready(
    socket: Option<BorrowedFd<'_>>,
    wake: Option<BorrowedFd<'_>>,
    until: Option<Instant>,
) -> io::Result<Ready> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    loop {
        let timeout = match until {
            None => PollTimeout::NONE,
            Some(until) => {
                let left = until.saturating_duration_since(Instant::now());
                // Round up, so a sub-millisecond remainder does not spin.
                let ms = left.as_millis() + u128::from(left.subsec_nanos() % 1_000_000 != 0);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = Vec::with_capacity(2);
        if let Some(wake) = wake {
            fds.push(PollFd::new(wake, PollFlags::POLLIN));
        }
        if let Some(socket) = socket {
            fds.push(PollFd::new(socket, PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(0) if until.is_some_and(|u| Instant::now() >= u) => return Ok(Ready::TimedOut),
            Ok(0) | Err(nix::errno::Errno::EINTR) => {}
            Ok(_) if wake.is_some() && fds[0].any().unwrap_or(false) => return Ok(Ready::Wake),
            Ok(_) => return Ok(Ready::Socket),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A write (or the half-close) refused because the server has closed (EPIPE) or reset
/// (ECONNRESET; ENOTCONN once the reset has closed the socket) the connection.
fn is_gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::NotConnected
    )
}

/// The sending side failed with `e`.
fn send_error(endpoint: &Endpoint, received: u64, e: io::Error) -> Error {
    match e.kind() {
        // Only the framing adapter reports InvalidInput: a message too large for a frame.
        io::ErrorKind::InvalidInput => Error::Config(format!("cannot send: {e}")),
        io::ErrorKind::ConnectionReset => Error::Reset {
            endpoint: endpoint.clone(),
            received,
        },
        _ => io_err("sending", e),
    }
}

/// When a stream exchange stops waiting; the rule is in [`send`](super::send)'s docs.
#[derive(Debug, Clone, Copy)]
pub(super) struct Waits {
    /// The longest silence allowed before it is an error; `None`: no bound.
    pub(super) idle: Option<Duration>,
    /// Once the input is all sent, the silence that ends the exchange well.
    pub(super) quit_after: Option<Duration>,
    /// The end of the whole exchange, and its length.
    pub(super) deadline: Option<(Instant, Duration)>,
    /// Send, half-close and return, reading nothing.
    pub(super) no_wait: bool,
    /// After the peer's EOF, go on sending until the input ends (`listen`: done when both
    /// ends are); otherwise the peer's EOF ends the exchange at once.
    pub(super) both_ends: bool,
}

/// A writer that shows each chunk written in the dump, if there is one.
struct Tapped<W> {
    inner: W,
    tap: Option<(Dump, Address)>,
}

impl<W: Write> Write for Tapped<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some((dump, peer)) = &self.tap {
            dump.chunk(peer, Direction::Sent, &buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Read for StreamClient {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            StreamClient::Tcp(s) => s.read(buf),
            StreamClient::Unix(s, _) => s.read(buf),
            #[cfg(feature = "tls")]
            StreamClient::Tls(s, ..) => s.read(buf),
        }
    }
}

impl Write for StreamClient {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            StreamClient::Tcp(s) => s.write(buf),
            StreamClient::Unix(s, _) => s.write(buf),
            #[cfg(feature = "tls")]
            StreamClient::Tls(s, ..) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `--no-wait` over TLS, once the plain end is shut down: the bridge's thread still has the
/// records to write, gone with the process if it exits now (TCP's kernel would deliver them),
/// so wait for them, then for the peer's close, its bytes read and dropped: a socket closed
/// with bytes unread (a TLS 1.3 server's session tickets) is reset, and the reset throws away
/// what the kernel had not sent yet. Both within `wait`; a peer that has not closed by then is
/// left, as over TCP.
#[cfg(feature = "tls")]
fn tls_sent(
    plain: &UnixStream,
    bridge: &crate::tls::Bridge,
    endpoint: &Endpoint,
    wait: Duration,
) -> Result<(), Error> {
    let began = Instant::now();
    bridge.wait_sent(wait).map_err(|e| match e.kind() {
        io::ErrorKind::TimedOut => Error::TimedOut {
            what: "sending over TLS",
            after: wait,
        },
        _ => send_error(endpoint, 0, e),
    })?;
    let left = wait.saturating_sub(began.elapsed());
    if plain
        .set_read_timeout(Some(left.max(Duration::from_millis(1))))
        .is_ok()
    {
        let mut buf = [0u8; 16 * 1024];
        while matches!((&*plain).read(&mut buf), Ok(n) if n > 0) {}
    }
    Ok(())
}

/// After the exchange: a failure of the TLS side (its bridge's), which the plain end saw only
/// as an EOF. `received`: the reply's bytes, for a reset.
#[cfg(feature = "tls")]
fn tls_outcome(
    bridge: &crate::tls::Bridge,
    endpoint: &Endpoint,
    received: u64,
) -> Result<(), Error> {
    bridge.finish().map_err(|e| match e.kind() {
        io::ErrorKind::ConnectionReset => Error::Reset {
            endpoint: endpoint.clone(),
            received,
        },
        _ => Error::io(format!("the TLS connection with {endpoint} failed"), e),
    })
}

/// The local and peer addresses of a TCP connection.
pub(super) fn tcp_addresses(s: &TcpStream) -> Result<(Address, Address), Error> {
    Ok((
        Address::Inet(s.local_addr().map_err(|e| io_err("getsockname", e))?),
        Address::Inet(s.peer_addr().map_err(|e| io_err("getpeername", e))?),
    ))
}

/// The address of a Unix endpoint's server as logs show it: its path, or `@name`.
pub(super) fn unix_server_address(endpoint: &Endpoint) -> Address {
    match endpoint.abstract_name() {
        Some(name) => Address::Abstract(name.to_vec()),
        None => Address::Unix(endpoint.path().map(PathBuf::from)),
    }
}
