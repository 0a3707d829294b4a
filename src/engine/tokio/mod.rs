//! The async engine: tokio, one task per connection (the default engine).

mod batch;
mod stream;
#[cfg(feature = "tls")]
mod tls;

use std::io;
use std::sync::Arc;

use batch::{BATCH, RecvBatch, SendBatch};
use bytes::BytesMut;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, UdpSocket, UnixDatagram, UnixListener};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::task::TaskTracker;

use super::Shared;
use super::accept::{AcceptLoop, Accepted, drain_queue};
use super::datagram::{self, Received};
use super::guard::Admitted;
use super::listener::{Listener, unix_address};
use crate::endpoint::Transport;
use crate::error::Error;
use crate::seqpacket::PacketStream;
use crate::service::Address;
use stream::{Conn, Listening, serve_conn};

pub(super) fn serve(shared: Arc<Shared>, listeners: Vec<Listener>) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("socketkit-async")
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", e))?;
    runtime.block_on(serve_all(shared, listeners))
}

async fn serve_all(shared: Arc<Shared>, listeners: Vec<Listener>) -> Result<(), Error> {
    let tracker = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(shared.limits.max_connections.max(1)));
    let mut loops = JoinSet::new();
    // Unix socket files are removed when their guard drops, after serving.
    let mut _socket_files = Vec::new();
    for listener in listeners {
        let shared = shared.clone();
        let (transport, local) = (listener.transport(), listener.local());
        let adopt = |e| Error::io("cannot adopt a listener into the async runtime", e);
        // Datagram listeners get their loop; stream listeners, adopted, an acceptor each.
        let accept = match listener {
            Listener::Tcp(l) => Accept::Tcp(TcpListener::from_std(l).map_err(adopt)?),
            Listener::Unix(l, file) => {
                _socket_files.push(file);
                Accept::Unix(UnixListener::from_std(l).map_err(adopt)?)
            }
            Listener::UnixSeqpacket(l, file) => {
                _socket_files.push(file);
                Accept::Seqpacket(crate::seqpacket::register(l).map_err(adopt)?)
            }
            Listener::Udp(s) => {
                let s = UdpSocket::from_std(s).map_err(adopt)?;
                loops.spawn(datagram_loop(Datagrams::Udp(s), shared, transport, local));
                continue;
            }
            Listener::UnixDatagram(s, file) => {
                _socket_files.push(file);
                let s = UnixDatagram::from_std(s).map_err(adopt)?;
                loops.spawn(datagram_loop(Datagrams::Unix(s), shared, transport, local));
                continue;
            }
        };
        let acceptor = Acceptor {
            listener: accept,
            listening: Arc::new(Listening {
                #[cfg(feature = "tls")]
                tls: shared.tls_for(&local),
                transport,
                local,
            }),
            shared,
            tracker: tracker.clone(),
            slots: slots.clone(),
        };
        loops.spawn(acceptor.run());
    }
    // The loops end when `stop` fires; then connections in flight get the grace period.
    while loops.join_next().await.is_some() {}
    tracker.close();
    if timeout(shared.limits.grace, tracker.wait()).await.is_err() {
        tracing::info!(
            "grace period over; closing the connections still open ({})",
            tracker.len()
        );
        shared.force.fire();
        tracker.wait().await;
    }
    Ok(())
}

enum Accept {
    Tcp(TcpListener),
    Unix(UnixListener),
    Seqpacket(AsyncFd<socket2::Socket>),
}

struct Acceptor {
    listener: Accept,
    listening: Arc<Listening>,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    slots: Arc<Semaphore>,
}

impl Acceptor {
    async fn run(self) {
        let shared = &self.shared;
        let listening = &self.listening;
        let mut acceptor = AcceptLoop::new();
        'serving: loop {
            // The slot is taken before accept(): at the limit, clients stay in the kernel's queue.
            let permit = match self.slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    acceptor.at_limit(shared.limits.max_connections);
                    tokio::select! {
                        _ = shared.stop.fired() => break 'serving,
                        permit = self.slots.clone().acquire_owned() => match permit {
                            Ok(permit) => permit,
                            Err(_) => return,
                        },
                    }
                }
            };
            let accepted = tokio::select! {
                _ = shared.stop.fired() => break 'serving,
                accepted = accept(&self.listener) => accepted,
            };
            match acceptor.accepted(shared, accepted) {
                Accepted::Serve(stream, peer) => {
                    let conn = serve_conn(stream, peer, listening, shared.clone(), Some(permit));
                    self.tracker.spawn(conn);
                }
                Accepted::Next => {}
                Accepted::BackOff(delay) => {
                    drop(permit);
                    tokio::select! {
                        _ = shared.stop.fired() => break 'serving,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.serve_queue(listening);
    }

    /// At shutdown: serves the connections already in the listen queue ([`drain_queue`]); the
    /// listener closes when this acceptor returns. The accepts go straight to the socket: the
    /// runtime may not have seen the last readiness event yet. Past the connection limit a
    /// queued connection goes without a permit (the backlog bounds them).
    fn serve_queue(&self, listening: &Arc<Listening>) {
        let accept_now = || match &self.listener {
            Accept::Tcp(l) => socket2::SockRef::from(l).accept().and_then(|(s, _)| {
                let s = std::net::TcpStream::from(s);
                s.set_nonblocking(true)?;
                let peer = Address::Inet(s.peer_addr()?);
                Ok((Conn::Tcp(tokio::net::TcpStream::from_std(s)?), peer))
            }),
            Accept::Unix(l) => socket2::SockRef::from(l).accept().and_then(|(s, _)| {
                let s = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(s));
                s.set_nonblocking(true)?;
                let peer = Address::from(&s.peer_addr()?);
                Ok((Conn::Unix(tokio::net::UnixStream::from_std(s)?), peer))
            }),
            Accept::Seqpacket(l) => l
                .get_ref()
                .accept()
                .and_then(|(s, a)| Ok((Conn::Seqpacket(PacketStream::new(s)?), unix_address(&a)))),
        };
        drain_queue(&self.shared, accept_now, |stream, peer| {
            let permit = self.slots.clone().try_acquire_owned().ok();
            let conn = serve_conn(stream, peer, listening, self.shared.clone(), permit);
            self.tracker.spawn(conn);
        });
    }
}

async fn accept(listener: &Accept) -> io::Result<(Conn, Address)> {
    match listener {
        Accept::Tcp(l) => {
            let (s, a) = l.accept().await?;
            Ok((Conn::Tcp(s), Address::Inet(a)))
        }
        Accept::Unix(l) => {
            let (s, a) = l.accept().await?;
            Ok((Conn::Unix(s), Address::from(&a.into())))
        }
        Accept::Seqpacket(l) => {
            let (s, a) = l
                .async_io(tokio::io::Interest::READABLE, |l| l.accept())
                .await?;
            Ok((Conn::Seqpacket(PacketStream::new(s)?), unix_address(&a)))
        }
    }
}

enum Datagrams {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

async fn datagram_loop(
    socket: Datagrams,
    shared: Arc<Shared>,
    transport: Transport,
    local: Address,
) {
    let mut datagrams = datagram::Datagrams::new(&shared, transport, local);
    // One stop future for the loop's life: a fresh one per datagram registered and removed a
    // waiter on the shared token (two mutexes) at each receive. Polled first, so that a flood
    // that keeps the socket readable cannot hide the stop.
    let mut stop = std::pin::pin!(shared.stop.fired());
    let mut batch = match &socket {
        Datagrams::Udp(_) => Some(Batch::new()),
        Datagrams::Unix(_) => None,
    };
    loop {
        let readable = tokio::select! {
            biased;
            () = &mut stop => return,
            readable = socket.readable() => readable,
        };
        // A wait that finds the socket readable spends none of tokio's coop budget (readiness
        // is not budgeted, nor is the stop's `Notify`), so under a flood this loop would never
        // yield and would keep its worker thread from every other task for as long as the
        // flood lasts (on a one-CPU host: every connection). One unit a wake-up makes it yield
        // once the budget is spent, as a budgeted receive would.
        tokio::task::coop::consume_budget().await;
        // Then the datagrams already queued, without waiting between them: the wait (a poll of
        // the stop and of the socket's readiness) cost about as much as the rules and the
        // reply together, per datagram.
        // An error of the wait goes to the rules as a receive error would.
        let mut failed = readable.err();
        if let (Datagrams::Udp(udp), Some(batch)) = (&socket, &mut batch) {
            if let Some(delay) = batch.answer(udp, &mut datagrams, &shared, failed) {
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(delay) => {}
                }
            }
            continue;
        }
        for _ in 0..DATAGRAMS_PER_WAKE {
            let received = match failed.take() {
                Some(e) => Err(e),
                None => socket.try_recv(datagrams.buffer(), transport),
            };
            let (n, ctx) = match received {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                received => match datagrams.received(&shared, received) {
                    Received::Request(n, ctx) => (n, ctx),
                    Received::Next => continue,
                    Received::BackOff(delay) => {
                        tokio::select! {
                            () = &mut stop => return,
                            () = tokio::time::sleep(delay) => {}
                        }
                        break;
                    }
                },
            };
            // Sent now or dropped: a peer that does not read must not hold the listener.
            if let Some(reply) = datagrams.answer(&shared, &ctx, n) {
                let sent = try_send_to(&socket, reply, &ctx.peer);
                datagrams.sent(&ctx.peer, sent);
            }
        }
    }
}

/// The batches of a UDP loop: the datagrams queued, received in one system call, and their
/// replies, sent in one ([`batch`]).
struct Batch {
    recv: RecvBatch,
    send: SendBatch,
    /// The answered datagrams of the batch: their senders (and where the loop guard holds
    /// them), replies, and the replies' addresses.
    peers: Vec<(Address, Admitted)>,
    replies: Vec<BytesMut>,
    to: Vec<socket2::SockAddr>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            recv: RecvBatch::new(),
            send: SendBatch::new(),
            peers: Vec::with_capacity(BATCH),
            replies: (0..BATCH).map(|_| BytesMut::new()).collect(),
            to: Vec::with_capacity(BATCH),
        }
    }

    /// One wake-up of a UDP loop: receives the datagrams queued (at most [`BATCH`], one
    /// system call), answers them, and sends their replies (one system call, each reply now or
    /// never). `failed` is an error of the wait. Returns how long to back off after an error
    /// of the process or system (of the wait, or of a datagram of the batch).
    fn answer(
        &mut self,
        socket: &UdpSocket,
        datagrams: &mut datagram::Datagrams,
        shared: &Shared,
        failed: Option<io::Error>,
    ) -> Option<std::time::Duration> {
        use std::os::fd::AsFd;
        let mut count = 0;
        let received = match failed {
            Some(e) => Err(e),
            // Fewer datagrams than a batch means the queue is empty: the closure then says
            // `WouldBlock`, so that tokio clears the readiness it saw (a datagram arriving
            // since is a new readiness event), sparing the call that would find the queue
            // empty. On this unconnected socket without IP_RECVERR no error can end a batch
            // early with datagrams still queued (the kernel ignores ICMP errors for it).
            None => socket.try_io(tokio::io::Interest::READABLE, || {
                count = self.recv.recv(socket.as_fd())?;
                match count {
                    BATCH => Ok(()),
                    _ => Err(io::ErrorKind::WouldBlock.into()),
                }
            }),
        };
        if let Err(e) = received
            && count == 0
        {
            if e.kind() == io::ErrorKind::WouldBlock {
                return None;
            }
            return match datagrams.received_in(shared, &[], Err(e), None) {
                Received::BackOff(delay) => Some(delay),
                _ => None,
            };
        }
        // One reading of the clocks for the batch: its datagrams were received together.
        let clock = (std::time::Instant::now(), std::time::SystemTime::now());
        self.peers.clear();
        self.to.clear();
        let mut back_off = None;
        for i in 0..count {
            let (buf, got) = self.recv.get(i);
            let got = got.map(|(n, from)| (n, Address::Inet(from)));
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
            if !datagram::answer(shared, &ctx, &buf[..n], &mut self.replies[at]) {
                continue;
            }
            match datagram::reply_addr(&ctx.peer) {
                Ok(to) => {
                    self.to.push(to);
                    self.peers.push((ctx.peer, admitted));
                }
                Err(e) => datagrams.sent_reply(&ctx.peer, &self.replies[at], admitted, Err(e)),
            }
        }
        let replies: [&[u8]; BATCH] =
            std::array::from_fn(|i| self.replies.get(i).map_or(&[][..], |r| &r[..]));
        let (peers, replies) = (&self.peers, &replies[..self.peers.len()]);
        self.send
            .send(socket.as_fd(), replies, &self.to, |i, sent| {
                let (peer, admitted) = &peers[i];
                datagrams.sent_reply(peer, replies[i], *admitted, sent);
            });
        // A service that once wrote a reply over the limit (not sent) must not leave its
        // buffer that big for the life of the loop. Cut back to the limit, not to nothing: a
        // reply the limit allows may grow a buffer past it (doubling), and must not cost an
        // allocation every time.
        let limit = shared
            .limits
            .max_datagram
            .min(crate::limits::MAX_DATAGRAM_BYTES_V6);
        for reply in &mut self.replies {
            if reply.capacity() > limit {
                *reply = BytesMut::with_capacity(limit);
            }
        }
        back_off
    }
}

/// Datagrams received at most per wake-up of the loop, before the stop is looked at again and
/// one unit of the task's coop budget is spent: a flood delays the stop by no more than this
/// many answers, and the other tasks on the thread by no more than a budget's worth of them.
const DATAGRAMS_PER_WAKE: usize = 16;

impl Datagrams {
    /// Waits until the socket may have a datagram.
    async fn readable(&self) -> io::Result<()> {
        match self {
            Datagrams::Udp(s) => s.readable().await,
            Datagrams::Unix(s) => s.readable().await,
        }
    }

    /// Receives one datagram without waiting (`WouldBlock` when none is queued).
    fn try_recv(&self, buf: &mut [u8], transport: Transport) -> io::Result<(usize, Address)> {
        use std::os::fd::AsFd;
        match self {
            Datagrams::Udp(s) => s.try_io(tokio::io::Interest::READABLE, || {
                datagram::recv_datagram(s.as_fd(), buf, transport)
            }),
            Datagrams::Unix(s) => s.try_io(tokio::io::Interest::READABLE, || {
                datagram::recv_datagram(s.as_fd(), buf, transport)
            }),
        }
    }
}

/// Sends `reply` now or not at all: a full receive queue at the peer (a Unix datagram socket
/// that does not read) or a full send buffer is `WouldBlock`, and the reply is dropped, as on
/// the blocking engines. The system call is made directly on the non-blocking socket: tokio's
/// `try_send_to` would trust its cached readiness, which a `WouldBlock` clears until the kernel
/// next signals the socket writable, and could then drop replies to everyone without trying.
fn try_send_to(socket: &Datagrams, reply: &[u8], peer: &Address) -> io::Result<()> {
    let to = datagram::reply_addr(peer)?;
    match socket {
        Datagrams::Udp(s) => socket2::SockRef::from(s).send_to(reply, &to),
        Datagrams::Unix(s) => socket2::SockRef::from(s).send_to(reply, &to),
    }
    .map(drop)
}
