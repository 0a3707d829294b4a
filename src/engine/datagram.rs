//! Datagram answering, written once for every engine: receive with truncation detection, the
//! loop guard ([`super::guard`]), `verify_request` and the access list, the per-source rate
//! limit, the first-datagram log of each sender, the service's answer within the datagram
//! limit, and the drop of a reply that cannot be sent at once (a peer that does not read must
//! not hold the listener). The decisions are here, free of waiting; each engine keeps only its
//! I/O: how it waits for a datagram and how it sends a reply.

mod batch;

use std::io;
use std::os::fd::BorrowedFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use socket2::SockAddr;

use super::accept::{Backoff, is_per_connection_error};
use super::guard::{Admitted, DatagramGuard, Fingerprint, fingerprint};
use super::listener::abstract_addr;
use super::peer_log::Senders;
use super::rate::SourceLimiter;
use super::runtime::context_at;
use super::{SessionError, Shared};
use crate::endpoint::Transport;
use crate::handler::HandlerError;
use crate::limits::Limits;
use crate::service::{Address, Context};
use crate::stats::{DropReason, ListenerStats};

pub(crate) use batch::{BATCH, Batch};

/// What a datagram loop does after one receive.
#[derive(Debug)]
pub(crate) enum Received {
    /// A request of this many bytes (in [`Datagrams::request`]) to answer, in this context.
    Request(usize, Context),
    /// Nothing to answer (dropped, refused, over the rate, an error of one datagram): receive
    /// the next.
    Next,
    /// An error of the process or system: wait this long, then receive again.
    BackOff(Duration),
}

/// One datagram listener's state, reused across datagrams: the receive buffer (replies are
/// the batch's, see [`Batch`]) and the rules' memories.
pub(crate) struct Datagrams {
    transport: Transport,
    local: Address,
    buf: Vec<u8>,
    truncation_log: Option<Instant>,
    /// The clock's reading at the last receive: one per datagram serves every rule and the
    /// reply (the rules' windows are a second or more).
    now: Instant,
    rate: SourceLimiter,
    guard: DatagramGuard,
    senders: Senders,
    backoff: Backoff,
    /// Replies a `DatagramHandler` sent from its own thread, for the loop guard (made by the
    /// first [`Datagrams::reply_log`]).
    handler_replies: Option<(SyncSender<SentReply>, Receiver<SentReply>)>,
    /// The listener's counters.
    stats: Arc<ListenerStats>,
}

/// A reply a `DatagramHandler` sent: to whom, its [`fingerprint`], when.
type SentReply = (Address, Fingerprint, Instant);

/// Replies recorded by handlers and not yet seen by the listener. The listener drains the log
/// before each datagram, so it fills only while the listener waits for a free connection
/// slot and the handlers keep replying; records past it are lost (a loop then takes longer to
/// be recognised), and a handler never waits for the listener.
const REPLY_LOG: usize = 4096;

/// The send path of a `DatagramHandler` records each reply here, so the listener's loop guard
/// knows it even though the handler runs on another thread (threaded, pool).
#[derive(Clone)]
pub(crate) struct ReplyLog(SyncSender<SentReply>);

impl ReplyLog {
    /// Records a reply about to be sent to `peer`. Called *before* the send: the peer's answer
    /// to it must not reach the listener's guard before the record does, or the streak that
    /// recognises a loop would start over.
    pub(crate) fn sending(&self, peer: &Address, reply: &[u8]) {
        // Full: see REPLY_LOG. Disconnected: the listener has stopped.
        let _ = self
            .0
            .try_send((peer.clone(), fingerprint(reply), Instant::now()));
    }
}

impl Datagrams {
    /// The state of a datagram listener at `local`, counted by `stats`.
    pub(crate) fn new(
        shared: &Shared,
        transport: Transport,
        local: Address,
        stats: Arc<ListenerStats>,
    ) -> Datagrams {
        Datagrams {
            transport,
            local,
            buf: vec![0u8; DATAGRAM_BUFFER],
            truncation_log: None,
            now: Instant::now(),
            rate: SourceLimiter::new(shared.limits.datagram_rate),
            guard: DatagramGuard::new(),
            senders: Senders::new(),
            backoff: Backoff::new(),
            handler_replies: None,
            stats,
        }
    }

    /// The listener's counters.
    pub(crate) fn stats(&self) -> &Arc<ListenerStats> {
        &self.stats
    }

    /// Where a `DatagramHandler`'s send path records its replies for this listener's loop
    /// guard (see [`ReplyLog`]).
    pub(crate) fn reply_log(&mut self) -> ReplyLog {
        let (log, _) = self
            .handler_replies
            .get_or_insert_with(|| sync_channel(REPLY_LOG));
        ReplyLog(log.clone())
    }

    /// The buffer the engine receives into (with [`recv_datagram`]).
    pub(crate) fn buffer(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// The request of a [`Received::Request`].
    pub(crate) fn request(&self, len: usize) -> &[u8] {
        &self.buf[..len]
    }

    /// Decides on one receive result: which datagrams reach the service or handler.
    pub(crate) fn received(
        &mut self,
        shared: &Shared,
        result: io::Result<(usize, Address)>,
    ) -> Received {
        let buf = std::mem::take(&mut self.buf);
        let received = self.received_in(shared, &buf, result, None);
        self.buf = buf;
        received
    }

    /// [`Datagrams::received`] for a datagram received into `buf` (its request is the first
    /// bytes), at `clock` when the engine read the clocks once for the datagrams of one receive
    /// call (the rules' windows are a second or more), else now.
    pub(crate) fn received_in(
        &mut self,
        shared: &Shared,
        buf: &[u8],
        result: io::Result<(usize, Address)>,
        clock: Option<(Instant, SystemTime)>,
    ) -> Received {
        let (n, peer) = match result {
            Ok(got) => {
                self.backoff.reset();
                got
            }
            // ICMP errors from earlier replies surface as ECONNREFUSED: not our concern.
            Err(e)
                if is_per_connection_error(&e) || e.kind() == io::ErrorKind::ConnectionRefused =>
            {
                return Received::Next;
            }
            Err(e) => return Received::BackOff(self.backoff.on_error("receive", &e)),
        };
        self.now = clock.map_or_else(Instant::now, |(now, _)| now);
        if let Some((_, replies)) = &self.handler_replies {
            for (to, reply, at) in replies.try_iter() {
                self.guard.replied_fingerprint(&to, reply, at);
            }
        }
        self.stats.datagram_received(n);
        let dropped = if was_truncated(n, buf.len(), &peer, &mut self.truncation_log) {
            Some(DropReason::Truncated)
        } else if !self.guard.admit(&peer, &buf[..n], self.now) {
            Some(DropReason::Loop)
        } else if shared.verify(&peer).is_err() {
            Some(DropReason::Refused)
        } else if !self.rate.admit(&peer, self.now) {
            Some(DropReason::Rate)
        } else {
            None
        };
        if let Some(why) = dropped {
            self.stats.dropped(why);
            return Received::Next;
        }
        self.senders.received(&peer, n);
        let wall = clock.map_or_else(SystemTime::now, |(_, wall)| wall);
        Received::Request(
            n,
            context_at(self.transport, peer, self.local.clone(), wall),
        )
    }

    /// Where the loop guard holds the sender of the last [`Received::Request`], for
    /// [`Datagrams::sent_reply`].
    pub(crate) fn admitted(&mut self) -> Admitted {
        self.guard.admitted()
    }

    /// [`Datagrams::sent`] for a `reply` of [`answer`] kept by the engine (with the replies
    /// of other datagrams, to send together) to a sender held `at`.
    pub(crate) fn sent_reply(
        &mut self,
        peer: &Address,
        reply: &[u8],
        at: Admitted,
        result: io::Result<()>,
    ) {
        match result {
            Ok(()) => {
                self.stats.datagram_answered(reply.len());
                self.guard.replied_at(peer, reply, self.now, at)
            }
            Err(e) => {
                self.stats.dropped(send_failure(&e));
                self.guard.not_sent(peer, &e, self.now)
            }
        }
    }
}

/// The drop reason of a reply that could not be sent.
pub(crate) fn send_failure(e: &io::Error) -> DropReason {
    match e.kind() {
        io::ErrorKind::WouldBlock => DropReason::SendWouldBlock,
        _ => DropReason::SendError,
    }
}

/// Answers `request` into `reply` with the service (see [`Datagrams::answer`]); `false` for no
/// reply. For an engine that keeps the replies of several datagrams to send them together.
/// A reply over the limit and a panic are counted in `stats`.
pub(crate) fn answer(
    shared: &Shared,
    stats: &ListenerStats,
    ctx: &Context,
    request: &[u8],
    reply: &mut BytesMut,
) -> bool {
    let answered = catch_unwind(AssertUnwindSafe(|| {
        answer_datagram(shared, stats, ctx, request, reply)
    }));
    answered.unwrap_or_else(|panic| {
        stats.panicked();
        let panic = HandlerError::from_panic(panic);
        shared.report(&ctx.peer, Err(SessionError::Panic(panic)));
        false
    })
}

/// Checks a handler's reply against the datagram limit to `peer`; an error to return from
/// [`DatagramRequest::reply`](crate::handler::DatagramRequest::reply) when it is over.
pub(crate) fn check_reply(limits: &Limits, peer: &Address, reply: &[u8]) -> io::Result<()> {
    let limit = reply_limit(limits, peer);
    if reply.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "reply of {} bytes exceeds the datagram limit of {limit} bytes",
                reply.len(),
            ),
        ));
    }
    Ok(())
}

/// Answers one datagram into `reply`. Returns `false` when nothing is to be sent: the service
/// chose silence, or the reply exceeds the datagram limit (logged: a truncated reply would be
/// a wrong answer).
fn answer_datagram(
    shared: &Shared,
    stats: &ListenerStats,
    ctx: &Context,
    request: &[u8],
    reply: &mut BytesMut,
) -> bool {
    reply.clear();
    if !shared.app.service.message(ctx, request, reply) {
        return false;
    }
    let limit = reply_limit(&shared.limits, &ctx.peer);
    if reply.len() > limit {
        tracing::warn!(
            peer = %ctx.peer,
            "reply of {} bytes exceeds the datagram limit of {limit} bytes; not sent",
            reply.len(),
        );
        stats.dropped(DropReason::Oversize);
        return false;
    }
    true
}

/// The largest reply to `peer`: [`Limits::max_datagram`], within its family's UDP limit
/// (65,507 bytes over IPv4, IPv4-mapped peers of a dual-stack listener included; 65,527 over
/// IPv6).
pub(crate) fn reply_limit(limits: &Limits, peer: &Address) -> usize {
    let family = match peer {
        Address::Inet(addr) if addr.ip().to_canonical().is_ipv4() => {
            crate::limits::MAX_DATAGRAM_BYTES
        }
        Address::Inet(_) => crate::limits::MAX_DATAGRAM_BYTES_V6,
        _ => usize::MAX,
    };
    limits.max_datagram.min(family)
}

/// The socket address a reply to `peer` goes to, on either engine.
///
/// # Errors
///
/// An unnamed (unbound) Unix peer, which no reply can reach; a name too long for `sun_path`.
pub(crate) fn reply_addr(peer: &Address) -> io::Result<SockAddr> {
    match peer {
        Address::Inet(addr) => Ok(SockAddr::from(*addr)),
        Address::Unix(Some(path)) => SockAddr::unix(path),
        Address::Abstract(name) => abstract_addr(name),
        Address::Unix(None) => Err(unnamed_peer()),
    }
}

/// The error of a reply to an unnamed (unbound) Unix peer.
pub(crate) fn unnamed_peer() -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "the peer's socket is unnamed (unbound), so no reply can reach it",
    )
}

/// The receive buffer of a datagram listener: one byte more than the largest UDP payload
/// (65,527 bytes over IPv6), so every UDP datagram arrives whole. A Unix datagram can be
/// larger; one that does not fit is detected (see [`recv_datagram`]) and dropped.
pub(crate) const DATAGRAM_BUFFER: usize = 65_536;

/// Receives one datagram into `buf` without blocking. Returns the datagram's real length,
/// which exceeds `buf.len()` when the kernel had to truncate it (`MSG_TRUNC`), and its sender.
/// std's `recv_from` hides truncation: the slides' `recvfrom(1024)` silently cuts datagrams,
/// and an answer to a cut request is a wrong answer.
pub(crate) fn recv_datagram(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    transport: Transport,
) -> io::Result<(usize, Address)> {
    use nix::sys::socket::{MsgFlags, SockaddrLike, SockaddrStorage, UnixAddr, recvmsg};
    use std::os::fd::AsRawFd;
    let mut iov = [io::IoSliceMut::new(buf)];
    let flags = MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT;
    let fd = fd.as_raw_fd();
    if transport == Transport::UnixDatagram {
        // `UnixAddr`, not `SockaddrStorage`: nix 0.31 leaves a Unix sender's length unset in
        // the latter, and every sender then looks unnamed.
        let msg = recvmsg::<UnixAddr>(fd, &mut iov, None, flags)?;
        let from = match msg.address {
            // An unbound sender has an empty address (length 0), on which nix's `path()`
            // panics: it is unnamed, and no reply can reach it.
            Some(unix)
                if (unix.len() as usize) <= std::mem::size_of::<nix::libc::sa_family_t>() =>
            {
                Address::Unix(None)
            }
            Some(unix) => match (unix.path(), unix.as_abstract()) {
                (Some(path), _) => Address::Unix(Some(path.to_path_buf())),
                (None, Some(name)) => Address::Abstract(name.to_vec()),
                (None, None) => Address::Unix(None),
            },
            None => Address::Unix(None),
        };
        return Ok((msg.bytes, from));
    }
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, None, flags)?;
    let from = msg.address.as_ref().and_then(|from| {
        from.as_sockaddr_in()
            .map(|a| std::net::SocketAddr::from(std::net::SocketAddrV4::from(*a)))
            .or_else(|| {
                from.as_sockaddr_in6()
                    .map(|a| std::net::SocketAddrV6::from(*a).into())
            })
    });
    let from =
        from.ok_or_else(|| io::Error::other("a datagram from an address of no known family"))?;
    Ok((msg.bytes, Address::Inet(from)))
}

/// Whether a datagram of `len` bytes was cut to fit `buf`; logs it (at most once a second).
fn was_truncated(len: usize, buf: usize, peer: &Address, log: &mut Option<Instant>) -> bool {
    if len <= buf {
        return false;
    }
    let now = Instant::now();
    if log.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
        *log = Some(now);
        tracing::warn!(%peer, "dropped a datagram of {len} bytes: larger than the {buf}-byte receive buffer");
    }
    true
}
