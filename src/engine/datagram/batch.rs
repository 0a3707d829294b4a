//! Batched datagrams for every engine's datagram loop (UDP and Unix datagram listeners that
//! answer with a service): `recvmmsg` takes every datagram queued (up to [`BATCH`]) in one
//! system call and `sendmmsg` sends their replies in one, where a call per datagram and per
//! reply, and one more to learn that the queue was empty, cost most of the server's time on
//! ping-pong. Linux system calls with no safe binding in the crates used here (nix has no
//! `recvmmsg` over our own buffers without copying, socket2 none); the engines' only `unsafe`
//! code besides the sequenced-packet records.
//!
//! Truncation is detected per message: `MSG_TRUNC` in the flags makes each message's length its
//! real length, longer than its buffer when the datagram was cut. The rules (loop guard, access
//! list, rate limit, the datagram limit of replies) are [`Datagrams`]'s, applied to each
//! datagram of a batch as to one received alone.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use socket2::SockAddr;

use super::{DATAGRAM_BUFFER, Datagrams, Received, answer, reply_addr};
use crate::engine::Shared;
use crate::engine::guard::Admitted;
use crate::service::Address;

/// Datagrams received (and replies sent) at most per system call.
pub(crate) const BATCH: usize = 16;

/// The receive side: [`BATCH`] buffers of [`DATAGRAM_BUFFER`] bytes and their headers. The
/// buffers are one zeroed allocation the kernel maps lazily: only the pages datagrams touch
/// become resident.
pub(crate) struct RecvBatch {
    bufs: Vec<u8>,
    names: Box<[libc::sockaddr_storage; BATCH]>,
    /// Held for `hdrs`, which point into it; not read by this code.
    _iovs: Box<[libc::iovec; BATCH]>,
    hdrs: Box<[libc::mmsghdr; BATCH]>,
    /// Headers the kernel wrote into at the last receive, to reset before the next: the
    /// others are as [`RecvBatch::new`] left them. On ping-pong most receives take one or two
    /// datagrams, and resetting all [`BATCH`] headers each time cost more than the rules of one.
    used: usize,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point into `bufs`, `names` and `iovs`, heap
// allocations this value owns (their addresses do not change when it moves); they are used
// only through `&mut self`, so moving the batch to another thread moves them with their targets.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub(crate) fn new() -> RecvBatch {
        let mut bufs = vec![0u8; BATCH * DATAGRAM_BUFFER];
        // SAFETY: all-zero is a valid sockaddr_storage, iovec and mmsghdr (null pointers,
        // zero lengths); the pointers are set just below.
        let mut names: Box<[libc::sockaddr_storage; BATCH]> =
            Box::new(unsafe { MaybeUninit::zeroed().assume_init() });
        let mut iovs: Box<[libc::iovec; BATCH]> =
            Box::new(unsafe { MaybeUninit::zeroed().assume_init() });
        let mut hdrs: Box<[libc::mmsghdr; BATCH]> =
            Box::new(unsafe { MaybeUninit::zeroed().assume_init() });
        for (i, buf) in bufs.chunks_exact_mut(DATAGRAM_BUFFER).enumerate() {
            iovs[i].iov_base = buf.as_mut_ptr().cast();
            iovs[i].iov_len = buf.len();
        }
        for i in 0..BATCH {
            hdrs[i].msg_hdr.msg_name = (&raw mut names[i]).cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = &raw mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        RecvBatch {
            bufs,
            names,
            _iovs: iovs,
            hdrs,
            used: 0,
        }
    }

    /// Receives the datagrams queued on the non-blocking UDP socket `fd`, at most [`BATCH`],
    /// without waiting (`WouldBlock` when there is none). Returns how many; the `i`-th is
    /// [`RecvBatch::get`]`(i)`.
    pub(crate) fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        for hdr in &mut self.hdrs[..self.used] {
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdr.msg_hdr.msg_flags = 0;
            hdr.msg_len = 0;
        }
        self.used = 0;
        // SAFETY: `hdrs` holds BATCH valid headers whose name and iovec pointers point to
        // writable memory of the lengths they state (owned by `self`, see `new`); the kernel
        // writes no further than those lengths. No timeout (null): MSG_DONTWAIT returns at once.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                (libc::MSG_DONTWAIT | libc::MSG_TRUNC) as _,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.used = n as usize;
        Ok(n as usize)
    }

    /// The `i`-th datagram of the last [`RecvBatch::recv`]: its buffer (the request is its
    /// first `len` bytes), its real length (over the buffer's when it was cut) and its sender.
    pub(crate) fn get(&self, i: usize) -> (&[u8], io::Result<(usize, Address)>) {
        let buf = &self.bufs[i * DATAGRAM_BUFFER..(i + 1) * DATAGRAM_BUFFER];
        let hdr = &self.hdrs[i];
        let mut len = hdr.msg_len as usize;
        if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            len = len.max(buf.len() + 1);
        }
        let (name, namelen) = (&self.names[i], hdr.msg_hdr.msg_namelen);
        let from = match i32::from(name.ss_family) {
            // An unbound Unix sender has an empty name (the family alone, or nothing).
            _ if namelen as usize <= size_of::<libc::sa_family_t>() => Some(Address::Unix(None)),
            libc::AF_UNIX => {
                let mut storage = socket2::SockAddrStorage::zeroed();
                // SAFETY: `sockaddr_storage` is one of this platform's socket address types,
                // and the kernel wrote a sockaddr_un of `namelen` bytes (at most the storage's
                // size) into `name`, so the copy holds a valid address of that length.
                let addr = unsafe {
                    *storage.view_as::<libc::sockaddr_storage>() = *name;
                    SockAddr::new(storage, namelen)
                };
                Some(match (addr.as_pathname(), addr.as_abstract_namespace()) {
                    (Some(path), _) => Address::Unix(Some(path.to_path_buf())),
                    (None, Some(name)) => Address::Abstract(name.to_vec()),
                    (None, None) => Address::Unix(None),
                })
            }
            _ => socket_addr(name, namelen as usize).map(Address::Inet),
        };
        let from =
            from.ok_or_else(|| io::Error::other("a datagram from an address of no known family"));
        (buf, from.map(|from| (len, from)))
    }
}

/// The IPv4 or IPv6 address of `len` bytes the kernel wrote into `name`.
fn socket_addr(name: &libc::sockaddr_storage, len: usize) -> Option<SocketAddr> {
    match i32::from(name.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the family says the storage holds a sockaddr_in, which it is large
            // and aligned enough for.
            let a = unsafe { &*(&raw const *name).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(&raw const *name).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            let port = u16::from_be(a.sin6_port);
            Some(SocketAddrV6::new(ip, port, a.sin6_flowinfo, a.sin6_scope_id).into())
        }
        _ => None,
    }
}

/// The send side: up to [`BATCH`] replies, each to its own address.
pub(crate) struct SendBatch {
    iovs: Box<[libc::iovec; BATCH]>,
    hdrs: Box<[libc::mmsghdr; BATCH]>,
}

// SAFETY: the pointers in `iovs` and `hdrs` are set by `send` before its system calls and never
// dereferenced outside it (they dangle between calls, unused).
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub(crate) fn new() -> SendBatch {
        // SAFETY: all-zero is a valid iovec and mmsghdr (null pointers, zero lengths).
        SendBatch {
            iovs: Box::new(unsafe { MaybeUninit::zeroed().assume_init() }),
            hdrs: Box::new(unsafe { MaybeUninit::zeroed().assume_init() }),
        }
    }

    /// Sends `replies[i]` to `to[i]` for each `i`, now or not at all, in as few system calls
    /// as the kernel allows: `sendmmsg` stops at the first reply it cannot send, which gets that
    /// error, and the rest go in the next call. Calls `sent(i, result)` for each reply, in order.
    pub(crate) fn send<R: AsRef<[u8]>>(
        &mut self,
        fd: BorrowedFd<'_>,
        replies: &[R],
        to: &[SockAddr],
        mut sent: impl FnMut(usize, io::Result<()>),
    ) {
        let count = replies.len().min(to.len()).min(BATCH);
        for i in 0..count {
            let reply = replies[i].as_ref();
            self.iovs[i].iov_base = reply.as_ptr().cast_mut().cast();
            self.iovs[i].iov_len = reply.len();
            let hdr = &mut self.hdrs[i].msg_hdr;
            hdr.msg_name = to[i].as_ptr().cast_mut().cast();
            hdr.msg_namelen = to[i].len();
            hdr.msg_iov = &raw mut self.iovs[i];
            hdr.msg_iovlen = 1;
        }
        let mut at = 0;
        while at < count {
            // SAFETY: headers `at..count` point to the replies and addresses borrowed for this
            // call (set just above), which the kernel only reads.
            let n = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    self.hdrs[at..].as_mut_ptr(),
                    (count - at) as libc::c_uint,
                    libc::MSG_DONTWAIT as _,
                )
            };
            if n <= 0 {
                // The reply at `at` could not go: it is dropped, the rest are tried.
                let error = match n {
                    0 => io::ErrorKind::WouldBlock.into(),
                    _ => io::Error::last_os_error(),
                };
                sent(at, Err(error));
                at += 1;
                continue;
            }
            for i in at..at + n as usize {
                sent(i, Ok(()));
            }
            at += n as usize;
        }
    }
}

/// The batches of a datagram loop that answers with a service: the datagrams queued, received
/// in one system call, and their replies, sent in one.
pub(crate) struct Batch {
    recv: RecvBatch,
    send: SendBatch,
    /// The answered datagrams of the batch: their senders (and where the loop guard holds
    /// them), replies, and the replies' addresses.
    peers: Vec<(Address, Admitted)>,
    replies: Vec<BytesMut>,
    to: Vec<socket2::SockAddr>,
}

impl Batch {
    /// Empty batches, [`BATCH`] datagrams each way.
    pub(crate) fn new() -> Batch {
        Batch {
            recv: RecvBatch::new(),
            send: SendBatch::new(),
            peers: Vec::with_capacity(BATCH),
            replies: (0..BATCH).map(|_| BytesMut::new()).collect(),
            to: Vec::with_capacity(BATCH),
        }
    }

    /// Receives the datagrams queued on the non-blocking socket `fd`, at most [`BATCH`],
    /// without waiting (`WouldBlock` when there is none); [`Batch::answer`] answers them.
    pub(crate) fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.recv.recv(fd)
    }

    /// Answers the datagrams of a receive ([`Batch::recv`]: how many, or its error, which
    /// goes to the rules as one datagram's would) and sends their replies on `fd` (one
    /// system call, each reply now or never). Returns how long to back off after an error of
    /// the process or system (of the receive, or of a datagram of the batch).
    pub(crate) fn answer(
        &mut self,
        fd: BorrowedFd<'_>,
        datagrams: &mut Datagrams,
        shared: &Shared,
        received: io::Result<usize>,
    ) -> Option<Duration> {
        let count = match received {
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) => {
                return match datagrams.received_in(shared, &[], Err(e), None) {
                    Received::BackOff(delay) => Some(delay),
                    _ => None,
                };
            }
        };
        // One reading of the clocks for the batch: its datagrams were received together.
        let clock = (Instant::now(), SystemTime::now());
        self.peers.clear();
        self.to.clear();
        let mut back_off = None;
        for i in 0..count {
            let (buf, got) = self.recv.get(i);
            let (n, ctx) = match datagrams.received_in(shared, buf, got, Some(clock)) {
                Received::Request(n, ctx) => (n, ctx),
                Received::Next => continue,
                // As the one-at-a-time loop does, after this batch's replies.
                Received::BackOff(delay) => {
                    back_off = Some(delay);
                    continue;
                }
            };
            let admitted = datagrams.admitted();
            let at = self.peers.len();
            let stats = datagrams.stats();
            if !answer(shared, stats, &ctx, &buf[..n], &mut self.replies[at]) {
                continue;
            }
            match reply_addr(&ctx.peer) {
                Ok(to) => {
                    self.to.push(to);
                    self.peers.push((ctx.peer, admitted));
                }
                Err(e) => datagrams.sent_reply(&ctx.peer, &self.replies[at], admitted, Err(e)),
            }
        }
        let answered = self.peers.len();
        let (peers, replies) = (&self.peers, &self.replies[..answered]);
        self.send.send(fd, replies, &self.to, |i, sent| {
            let (peer, admitted) = &peers[i];
            datagrams.sent_reply(peer, &replies[i], *admitted, sent);
        });
        // A service that once wrote a reply over the limit (not sent) must not leave its
        // buffer that big for the life of the loop. Cut back to the limit, not to nothing: a
        // reply the limit allows may grow a buffer past it (doubling), and must not cost an
        // allocation every time. The buffers written in this batch: the answered ones, and the
        // next, which a datagram answered with no reply (or one over the limit) wrote last.
        let limit = shared
            .limits
            .max_datagram
            .min(crate::limits::MAX_DATAGRAM_BYTES_V6);
        let written = (answered + 1).min(BATCH);
        for reply in &mut self.replies[..written] {
            if reply.capacity() > limit {
                *reply = BytesMut::with_capacity(limit);
            }
        }
        back_off
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    /// Unix datagram senders come back as what they are bound to (a path, an abstract name, or
    /// nothing), and a datagram larger than a buffer is reported with its real length, so the
    /// rules can drop it rather than answer a cut request.
    #[test]
    fn a_unix_batch_names_each_sender_and_reports_a_cut_datagram() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
        let dir = tempfile::tempdir().unwrap();
        let server = UnixDatagram::bind(dir.path().join("server")).unwrap();
        let to = dir.path().join("server");
        let by_path = UnixDatagram::bind(dir.path().join("client")).unwrap();
        let name = format!("socketkit-batch-test-{}", std::process::id());
        let by_name =
            UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let unnamed = UnixDatagram::unbound().unwrap();
        by_path.send_to(b"one", &to).unwrap();
        by_name.send_to(b"two", &to).unwrap();
        unnamed.send_to(b"three", &to).unwrap();
        let big = vec![b'x'; DATAGRAM_BUFFER + 100];
        by_path.send_to(&big, &to).unwrap();
        let mut batch = RecvBatch::new();
        assert_eq!(batch.recv(server.as_fd()).unwrap(), 4);
        let got: Vec<(usize, Address)> = (0..4).map(|i| batch.get(i).1.unwrap()).collect();
        assert_eq!(got[0], (3, Address::Unix(Some(dir.path().join("client")))));
        assert_eq!(got[1], (3, Address::Abstract(name.into_bytes())));
        assert_eq!(got[2], (5, Address::Unix(None)));
        assert!(
            got[3].0 > DATAGRAM_BUFFER,
            "a cut datagram looks whole: {}",
            got[3].0
        );
        assert_eq!(&batch.get(2).0[..5], b"three");
    }

    #[test]
    fn a_batch_takes_what_is_queued_with_each_sender_and_length_and_replies_to_each() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let to = server.local_addr().unwrap();
        let clients: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        // 20 datagrams, more than a batch; sends on loopback are queued before they return.
        for i in 0..20 {
            clients[i % 3].send_to(&vec![b'a'; i + 1], to).unwrap();
        }
        let mut batch = RecvBatch::new();
        assert_eq!(batch.recv(server.as_fd()).unwrap(), BATCH);
        for i in 0..BATCH {
            let (buf, got) = batch.get(i);
            let (len, from) = got.unwrap();
            assert_eq!(len, i + 1);
            assert_eq!(&buf[..len], &vec![b'a'; i + 1][..]);
            assert_eq!(from, Address::Inet(clients[i % 3].local_addr().unwrap()));
        }
        assert_eq!(batch.recv(server.as_fd()).unwrap(), 4, "the rest");
        assert_eq!(batch.get(3).1.unwrap().0, 20);
        let empty = batch.recv(server.as_fd()).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);

        let replies: Vec<Vec<u8>> = (0..3).map(|i| vec![b'A'; i + 1]).collect();
        let replies: Vec<&[u8]> = replies.iter().map(|r| &r[..]).collect();
        let addrs: Vec<SockAddr> = clients
            .iter()
            .map(|c| SockAddr::from(c.local_addr().unwrap()))
            .collect();
        let mut results = Vec::new();
        SendBatch::new().send(server.as_fd(), &replies, &addrs, |i, sent| {
            results.push((i, sent.is_ok()));
        });
        assert_eq!(results, [(0, true), (1, true), (2, true)]);
        for (i, client) in clients.iter().enumerate() {
            // Loopback delivers before the send returns: no waiting.
            client.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 64];
            let (got, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..got], from), (replies[i], to));
        }

        // An IPv6 address on this IPv4 socket: `sendmmsg` sends the first reply and stops, the
        // next call fails on the bad one alone, and the third still goes.
        let mut addrs = addrs;
        addrs[1] = SockAddr::from(std::net::SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], 9)));
        let mut results = Vec::new();
        SendBatch::new().send(server.as_fd(), &replies, &addrs, |i, sent| {
            results.push((i, sent.is_ok()));
        });
        assert_eq!(results, [(0, true), (1, false), (2, true)]);
        for i in [0, 2] {
            let mut buf = [0u8; 64];
            let (got, from) = clients[i].recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..got], from), (replies[i], to));
        }
        let nothing = clients[1].recv_from(&mut [0u8; 64]).unwrap_err();
        assert_eq!(nothing.kind(), io::ErrorKind::WouldBlock);
    }
}
