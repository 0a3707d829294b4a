//! TLS for blocking code: the handshake, then a thread of its own that carries the plaintext
//! between the TLS connection and one end of a Unix socket pair. The blocking code reads,
//! writes, polls, clones and half-closes the other end as it would the TCP connection.
//!
//! Half-close is carried both ways: the plain end's EOF (a `shutdown(Write)`) becomes
//! `close_notify` and a FIN on the TLS side, and the peer's `close_notify` (or FIN) becomes an
//! EOF on the plain end. A failure of the TLS side (a reset, a bad record) is kept for
//! [`Bridge::finish`], and the plain end then reads EOF.
//!
//! Adopting it is a few lines wherever a blocking `TcpStream` is in hand:
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::time::Duration;
//! use socketkit::tls::{Bridge, ClientTls, ClientTlsOptions};
//!
//! let endpoint: socketkit::Endpoint = "tls://example.org:443".parse()?;
//! let tls = ClientTls::new(&ClientTlsOptions::default())?;
//! let tcp = std::net::TcpStream::connect(endpoint.socket_addrs()?[0]).unwrap();
//! let (mut plain, bridge) = Bridge::connect(tcp, &tls, &endpoint, Duration::from_secs(5))?;
//! plain.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
//! plain.shutdown(std::net::Shutdown::Write).unwrap();
//! let mut reply = Vec::new();
//! plain.read_to_end(&mut reply).unwrap();
//! bridge.finish().unwrap(); // the TLS side's error, if it had one
//! # Ok::<(), socketkit::Error>(())
//! ```

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::{ClientTls, ServerTls, handshake_failed};
use crate::endpoint::Endpoint;
use crate::error::Error;

/// A TLS connection carried by a thread to a Unix socket pair (see the module's docs).
#[derive(Debug, Clone)]
pub struct Bridge {
    failed: Arc<Mutex<Option<io::Error>>>,
    sent: Arc<Sent>,
    alpn: Option<Vec<u8>>,
}

/// How the outbound direction ended (see [`Bridge::wait_sent`]): `None` while it runs.
#[derive(Debug, Default)]
struct Sent {
    outcome: Mutex<Option<Result<(), io::ErrorKind>>>,
    ended: Condvar,
}

impl Sent {
    fn end(&self, outcome: &io::Result<()>) {
        if let Ok(mut slot) = self.outcome.lock() {
            *slot = Some(outcome.as_ref().map(|_| ()).map_err(io::Error::kind));
            self.ended.notify_all();
        }
    }
}

impl Bridge {
    /// The client's side: the handshake with `endpoint`'s server over `tcp` (a connected
    /// blocking stream), within `timeout`; then the plaintext end and the bridge.
    ///
    /// # Errors
    ///
    /// [`Error::Tls`] when the handshake fails (exit 8), [`Error::TimedOut`] when it does not
    /// end within `timeout`, [`Error::Config`] for a server name a certificate cannot carry.
    pub fn connect(
        tcp: std::net::TcpStream,
        tls: &ClientTls,
        endpoint: &Endpoint,
        timeout: Duration,
    ) -> Result<(UnixStream, Bridge), Error> {
        let name = tls.server_name(endpoint)?;
        let (tls, peer) = (tls.clone(), endpoint.to_string());
        start(tcp, timeout, peer, move |tcp| async move {
            let stream = tls.connect(name, tcp).await?;
            let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            Ok((stream, alpn))
        })
    }

    /// The server's side: the handshake with the client `peer` (for messages) over `tcp` (an
    /// accepted blocking stream), within `timeout`; then the plaintext end and the bridge.
    ///
    /// # Errors
    ///
    /// As [`Bridge::connect`].
    pub fn accept(
        tcp: std::net::TcpStream,
        tls: &ServerTls,
        peer: impl std::fmt::Display,
        timeout: Duration,
    ) -> Result<(UnixStream, Bridge), Error> {
        let tls = tls.clone();
        start(tcp, timeout, peer.to_string(), move |tcp| async move {
            let stream = tls.accept(tcp).await?;
            let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            Ok((stream, alpn))
        })
    }

    /// The ALPN protocol agreed in the handshake, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// Waits, at most `timeout`, until what was written to the plain end before its
    /// `shutdown(Write)` has gone out over TLS, with `close_notify` and the FIN after it. The
    /// bridge's thread writes the records: a process that exits straight after its shutdown
    /// (as `send --no-wait` does, where TCP's kernel would still deliver the bytes) must wait
    /// for it, or the peer gets a truncated stream. It must then read the plain end to its EOF
    /// (the peer's close) before it exits, too: a TCP socket closed with bytes unread (a TLS
    /// 1.3 server's session tickets) is reset, and the reset drops what was not sent yet.
    ///
    /// # Errors
    ///
    /// `TimedOut` when they have not gone within `timeout` (a peer that does not read), or
    /// the kind of the TLS side's failure (a reset: the bytes did not all go).
    pub fn wait_sent(&self, timeout: Duration) -> io::Result<()> {
        let slot = self
            .sent
            .outcome
            .lock()
            .map_err(|_| io::Error::other("poisoned"))?;
        let (slot, _) = self
            .sent
            .ended
            .wait_timeout_while(slot, timeout, |outcome| outcome.is_none())
            .map_err(|_| io::Error::other("poisoned"))?;
        match *slot {
            Some(Ok(())) => Ok(()),
            Some(Err(kind)) => Err(kind.into()),
            None => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the TLS records were not all sent within {timeout:?}"),
            )),
        }
    }

    /// The TLS side's failure since the handshake, if it had one (taken: a second call returns
    /// `Ok`). Call it once the plain end has read EOF: a failure ends the plain end with one.
    ///
    /// # Errors
    ///
    /// The TLS side's I/O error (a reset is `ConnectionReset`).
    pub fn finish(&self) -> io::Result<()> {
        match self.failed.lock().map(|mut f| f.take()) {
            Ok(Some(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

/// Starts the bridge's thread: its own one-thread runtime runs `handshake` over `tcp` (bounded
/// by `timeout`) and then the copy; the handshake's outcome comes back before this returns.
fn start<F, Fut, S>(
    tcp: std::net::TcpStream,
    timeout: Duration,
    peer: String,
    handshake: F,
) -> Result<(UnixStream, Bridge), Error>
where
    F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<(S, Option<Vec<u8>>)>>,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (plain, inner) = UnixStream::pair().map_err(|e| Error::io("socketpair", e))?;
    let failed = Arc::new(Mutex::new(None));
    let sent = Arc::new(Sent::default());
    let ended = sent.clone();
    let (done, outcome) = mpsc::channel::<Result<Option<Vec<u8>>, Error>>();
    let keep = failed.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the TLS runtime", e))?;
    std::thread::Builder::new()
        .name("socketkit-tls".into())
        .spawn(move || {
            runtime.block_on(async move {
                let adopted = (|| {
                    tcp.set_nonblocking(true)?;
                    tcp.set_nodelay(true)?; // records go out as written (see the server's)
                    inner.set_nonblocking(true)?;
                    Ok::<_, io::Error>((
                        tokio::net::TcpStream::from_std(tcp)?,
                        tokio::net::UnixStream::from_std(inner)?,
                    ))
                })();
                let (tcp, inner) = match adopted {
                    Ok(both) => both,
                    Err(e) => return drop(done.send(Err(Error::io("adopting the socket", e)))),
                };
                let (stream, alpn) = match tokio::time::timeout(timeout, handshake(tcp)).await {
                    Ok(Ok(done)) => done,
                    Ok(Err(e)) => return drop(done.send(Err(handshake_failed(&peer, &e)))),
                    Err(_) => {
                        let _ = done.send(Err(Error::TimedOut {
                            what: "the TLS handshake",
                            after: timeout,
                        }));
                        return;
                    }
                };
                if done.send(Ok(alpn)).is_err() {
                    return;
                }
                if let Err(e) = carry(stream, inner, &ended).await {
                    tracing::debug!("TLS connection with {peer}: {e}");
                    if let Ok(mut failed) = keep.lock() {
                        *failed = Some(e);
                    }
                }
            })
        })
        .map_err(|e| Error::io("cannot start the TLS thread", e))?;
    let alpn = outcome
        .recv()
        .map_err(|_| Error::io("the TLS thread ended", io::ErrorKind::Other.into()))??;
    Ok((plain, Bridge { failed, sent, alpn }))
}

/// Copies both ways until both directions are done; half-closes carried (see the module's
/// docs). The inbound direction's error is the bridge's; the plain end then reads EOF. The
/// outbound direction's end is told to `sent` as it comes.
async fn carry<S: AsyncRead + AsyncWrite + Unpin>(
    tls: S,
    plain: tokio::net::UnixStream,
    sent: &Sent,
) -> io::Result<()> {
    let (mut tls_in, mut tls_out) = tokio::io::split(tls);
    let (mut plain_in, mut plain_out) = plain.into_split();
    let outbound = async {
        let outcome = async {
            tokio::io::copy(&mut plain_in, &mut tls_out).await?;
            tls_out.shutdown().await // close_notify, then FIN
        }
        .await;
        sent.end(&outcome);
        outcome
    };
    let inbound = async {
        let copied = match tokio::io::copy(&mut tls_in, &mut plain_out).await {
            // A peer that closes without close_notify (many do): an EOF all the same.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                tracing::debug!("the TLS peer closed without close_notify");
                Ok(0)
            }
            copied => copied,
        };
        let _ = plain_out.shutdown().await;
        copied
    };
    let (outbound, inbound) = tokio::join!(outbound, inbound);
    inbound?;
    match outbound {
        // The plain end went away, or the peer closed first: nothing is lost to report.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::NotConnected
            ) =>
        {
            Ok(())
        }
        other => other,
    }
}
