//! The async engine's TLS: a `tls://` listener's connections are TCP connections whose
//! handshake runs first, in the connection's own task (holding its slot of the connection
//! limit), bounded by [`Limits::message_timeout`](crate::Limits::message_timeout) and by the end
//! of the grace period. After it, the TLS stream is the connection the driver reads and writes:
//! the rules of `conn.rs` never know.

use crate::engine::Shared;
use crate::service::Address;
use crate::stats::EndCause;
use crate::tls::ServerTls;

/// The server's handshake on `tcp`: the TLS connection, or why the connection ended without
/// one (the end of the grace period, or a failed handshake after one line saying why; the
/// peer alone is affected).
pub(super) async fn handshake(
    tls: &ServerTls,
    tcp: tokio::net::TcpStream,
    peer: &Address,
    shared: &Shared,
) -> Result<TlsConn, EndCause> {
    // TLS writes a flight of records at a time (the session tickets after the handshake,
    // then the first reply): with Nagle's algorithm the reply waited for the ACK of the
    // tickets, which the client delays, and every TLS request in connect mode took 40 ms.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(%peer, "TCP_NODELAY: {e}");
    }
    let limit = shared.limits.message_timeout;
    let handshake = tokio::time::timeout(limit, tls.accept(tcp));
    let outcome = tokio::select! {
        biased;
        outcome = handshake => outcome,
        () = shared.force.fired() => return Err(EndCause::GraceOver),
    };
    match outcome {
        Ok(Ok(stream)) => {
            let alpn = stream
                .get_ref()
                .1
                .alpn_protocol()
                .map(String::from_utf8_lossy);
            tracing::debug!(%peer, "TLS handshake done (ALPN {alpn:?})");
            Ok(TlsConn(stream))
        }
        Ok(Err(e)) => {
            tracing::info!(%peer, "TLS handshake failed: {}", crate::tls::cause(&e));
            Err(EndCause::TlsHandshake)
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake failed: timed out after {limit:?} (--message-timeout)");
            Err(EndCause::TlsHandshake)
        }
    }
}

/// A server's TLS stream whose peer's close without `close_notify` (rustls' `UnexpectedEof`)
/// reads as the EOF it is in practice: openssl's `s_client -quiet`, ncat and many clients close
/// that way, and a session must see its EOF (and answer it) rather than fail.
///
/// A read first sends what earlier writes left in rustls' buffer. tokio-rustls' `poll_write`
/// takes the plaintext and returns as soon as the socket is full, keeping the rest of the
/// records; only a flush or another write sends them, and the driver, which never flushes (a
/// TCP stream has nothing to flush), waits to read after its reply. Woken when the socket has
/// room, it reads, and so the rest goes out.
pub(crate) struct TlsConn(pub(super) crate::tls::ServerStream<tokio::net::TcpStream>);

impl TlsConn {
    pub(super) fn tcp(&self) -> &tokio::net::TcpStream {
        self.0.get_ref().0
    }
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.0.get_ref().1.wants_write() {
            // Pending: the socket's writability wakes this task, which reads again. An
            // error is the next write's to report; the read goes on (an EOF is still one).
            let _ = tokio::io::AsyncWrite::poll_flush(std::pin::Pin::new(&mut this.0), cx);
        }
        match std::pin::Pin::new(&mut this.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                tracing::debug!("the TLS peer closed without close_notify");
                std::task::Poll::Ready(Ok(()))
            }
            polled => polled,
        }
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
