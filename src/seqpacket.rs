//! Unix sequenced-packet sockets (`SOCK_SEQPACKET`, `unixpacket://`): connected, reliable and
//! ordered like a stream, with every record (message) delivered whole, like a datagram.
//!
//! std has no type for them, so the sockets are socket2's, and the record I/O is here, once,
//! for the engines, the clients and `bench`:
//!
//! - a record is read with `MSG_TRUNC`, so `recv` returns its true length: a record longer
//!   than the buffer is reported ([`too_large`]), never taken cut (the kernel would drop its
//!   tail silently);
//! - a record is sent with one `send`, which on `SOCK_SEQPACKET` moves the whole record or
//!   nothing (`EAGAIN`), so no reply is ever split or merged with the next;
//! - [`PacketStream`] gives the async engine and `bench` the same two rules behind tokio's
//!   `AsyncRead`/`AsyncWrite`: one `poll_read` is one record, one `poll_write` one record.
//!
//! An empty record cannot be told from the peer's end: both read as 0 bytes.
//!
//! Only Unix-domain SEQPACKET is offered. SCTP's SEQPACKET (`socket(AF_INET, SOCK_SEQPACKET,
//! IPPROTO_SCTP)`) needs the `sctp` kernel module, which containers and most desktops do not
//! load, and brings multi-homing and streams that a record-per-message service does not use.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use nix::sys::socket::{MsgFlags, recv, send};
use socket2::{Domain, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::endpoint::Endpoint;

/// A new, unbound Unix sequenced-packet socket (close-on-exec, blocking).
pub(crate) fn socket() -> io::Result<Socket> {
    Socket::new(Domain::UNIX, Type::SEQPACKET, None)
}

/// The socket address of a Unix endpoint (a path or an abstract name).
pub(crate) fn address(endpoint: &Endpoint) -> io::Result<SockAddr> {
    use std::os::unix::ffi::OsStringExt;
    match (endpoint.abstract_name(), endpoint.path()) {
        // socket2 reads a leading NUL as a Linux abstract name.
        (Some(name), _) => SockAddr::unix(std::ffi::OsString::from_vec([b"\0", name].concat())),
        (None, Some(path)) => SockAddr::unix(path),
        (None, None) => Err(io::ErrorKind::InvalidInput.into()),
    }
}

/// Connects to `endpoint`, waiting at most `timeout` for room in a full listen queue (Linux
/// makes `SO_SNDTIMEO` the bound of a Unix `connect`). The socket is left blocking.
///
/// # Errors
///
/// The `connect` error as it is (`EPROTOTYPE` for a socket of another type: see
/// [`wrong_kind`]; `WouldBlock` when the queue stayed full).
pub(crate) fn connect(endpoint: &Endpoint, timeout: Duration) -> io::Result<Socket> {
    let socket = socket()?;
    socket.set_write_timeout(Some(timeout))?;
    socket.connect(&address(endpoint)?)?;
    socket.set_write_timeout(None)?;
    Ok(socket)
}

/// Explains a `connect` or `bind` error that comes from what is at the path rather than from
/// a server: a file that is not a socket, or a socket of another type (a stream or datagram
/// socket: `EPROTOTYPE` from `connect`, "address in use" from `bind`). The error keeps its
/// kind (so its exit code); other errors are returned as they are.
pub(crate) fn wrong_kind(endpoint: &Endpoint, error: io::Error) -> io::Error {
    use std::os::unix::fs::FileTypeExt;
    let Some(path) = endpoint.path() else {
        return error;
    };
    let shown = path.display();
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return io::Error::new(
                error.kind(),
                format!("{shown} is not a socket but a {}", file_kind(&meta)),
            );
        }
        Ok(_) => {}
        Err(_) => return error,
    }
    let other_type = error.raw_os_error() == Some(nix::libc::EPROTOTYPE)
        || (error.kind() == io::ErrorKind::AddrInUse
            && probe(path, Type::SEQPACKET) == Some(nix::libc::EPROTOTYPE));
    if !other_type {
        return error;
    }
    // Which type: a stream listener accepts a stream connect (or queues it: EAGAIN). This
    // error path only: the probe is a real connection, which that server sees (and closes).
    let scheme = match probe(path, Type::STREAM) {
        None | Some(nix::libc::EAGAIN) => "a stream socket (unix://",
        _ => "a datagram socket (unixgram://",
    };
    io::Error::new(
        error.kind(),
        format!("{shown} is {scheme}{shown}), not a sequenced-packet socket"),
    )
}

/// The `errno` of a non-blocking `connect` of type `ty` to `path`; `None` when it connects.
fn probe(path: &std::path::Path, ty: Type) -> Option<i32> {
    let socket = Socket::new(Domain::UNIX, ty, None).ok()?;
    socket.set_nonblocking(true).ok()?;
    let addr = SockAddr::unix(path).ok()?;
    socket
        .connect(&addr)
        .err()
        .map(|e| e.raw_os_error().unwrap_or(0))
}

fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    if meta.is_dir() {
        "directory"
    } else if meta.is_file() {
        "regular file"
    } else {
        "file of another kind"
    }
}

/// The error for a record of `len` bytes that does not fit the `limit` bytes read at a time.
pub(crate) fn too_large(len: usize, limit: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "a record of {len} bytes is larger than the {limit}-byte receive buffer; \
             closing the connection unanswered"
        ),
    )
}

/// Receives one record into `buf` (`MSG_TRUNC` added to `flags`): its length, 0 at the peer's
/// end (or for an empty record).
///
/// # Errors
///
/// [`too_large`] (`InvalidData`) for a record longer than `buf`; what `recv` returns otherwise.
pub(crate) fn recv_record(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    flags: MsgFlags,
) -> io::Result<usize> {
    let n = recv(fd.as_raw_fd(), buf, flags | MsgFlags::MSG_TRUNC).map_err(io::Error::from)?;
    if n > buf.len() {
        return Err(too_large(n, buf.len()));
    }
    Ok(n)
}

/// Sends `record` as one record, whole or not at all (`MSG_NOSIGNAL` added to `flags`).
pub(crate) fn send_record(fd: BorrowedFd<'_>, record: &[u8], flags: MsgFlags) -> io::Result<usize> {
    send(fd.as_raw_fd(), record, flags | MsgFlags::MSG_NOSIGNAL).map_err(io::Error::from)
}

/// A connected sequenced-packet socket in tokio: each `poll_read` is one record (an oversize
/// one is an `InvalidData` error), each `poll_write` one record, sent whole.
pub(crate) struct PacketStream {
    fd: AsyncFd<Socket>,
}

impl PacketStream {
    /// Adopts a connected socket (made non-blocking here) into the current runtime.
    pub(crate) fn new(socket: Socket) -> io::Result<PacketStream> {
        socket.set_nonblocking(true)?;
        Ok(PacketStream {
            fd: register(socket)?,
        })
    }
}

/// Registers a socket with the runtime's reactor (what tokio's own socket types do inside).
#[allow(unsafe_code)]
pub(crate) fn register(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its descriptor, closes it only when dropped, which is after the
    // AsyncFd that owns it, and `as_raw_fd` always returns that descriptor.
    unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)
}

impl AsFd for PacketStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

impl AsyncRead for PacketStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            // A `WouldBlock` clears the readiness; a record read keeps it, so the records
            // queued behind it are read without waiting for an event that will not come.
            match guard.try_io(|fd| recv_record(fd.get_ref().as_fd(), unfilled, MsgFlags::empty()))
            {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PacketStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        record: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.fd.poll_write_ready(cx))?;
            match guard.try_io(|fd| send_record(fd.get_ref().as_fd(), record, MsgFlags::empty())) {
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.fd.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Socket, Socket) {
        Socket::pair(Domain::UNIX, Type::SEQPACKET, None).unwrap()
    }

    #[test]
    fn records_keep_their_boundaries_and_an_oversize_one_is_reported() {
        let (a, b) = pair();
        for record in [&b"one"[..], b"two!", b"three"] {
            send_record(a.as_fd(), record, MsgFlags::empty()).unwrap();
        }
        let mut buf = [0u8; 16];
        for record in [&b"one"[..], b"two!", b"three"] {
            let n = recv_record(b.as_fd(), &mut buf, MsgFlags::empty()).unwrap();
            assert_eq!(&buf[..n], record);
        }
        send_record(a.as_fd(), &[b'x'; 17], MsgFlags::empty()).unwrap();
        let err = recv_record(b.as_fd(), &mut buf, MsgFlags::empty()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("17 bytes"), "{err}");
        drop(a);
        assert_eq!(
            recv_record(b.as_fd(), &mut buf, MsgFlags::empty()).unwrap(),
            0
        );
    }

    #[tokio::test]
    async fn a_packet_stream_reads_one_record_per_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (a, b) = pair();
        let (mut a, mut b) = (PacketStream::new(a).unwrap(), PacketStream::new(b).unwrap());
        a.write_all(b"ab").await.unwrap();
        a.write_all(b"cde").await.unwrap();
        a.shutdown().await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(b.read(&mut buf).await.unwrap(), 2);
        assert_eq!(b.read(&mut buf).await.unwrap(), 3);
        assert_eq!(&buf[..3], b"cde");
        assert_eq!(b.read(&mut buf).await.unwrap(), 0, "the end");
    }
}
