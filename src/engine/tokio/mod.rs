//! The async engine: tokio, one task per connection (the default engine).

mod exec;
mod stream;
#[cfg(feature = "tls")]
mod tls;

use std::io;
use std::sync::Arc;

use std::os::fd::{AsFd, BorrowedFd};

use tokio::io::unix::AsyncFd;
use tokio::net::{TcpListener, UdpSocket, UnixDatagram, UnixListener};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::task::TaskTracker;

use super::Shared;
use super::accept::{AcceptLoop, Accepted, drain_queue};
use super::datagram::{self, BATCH, Batch};
use super::listener::{Listener, unix_address};
use crate::endpoint::Transport;
use crate::error::Error;
use crate::seqpacket::PacketStream;
use crate::service::Address;
use stream::{Conn, Listening, serve_conn};

pub(super) fn serve(shared: Arc<Shared>, listeners: Vec<Listener>) -> Result<(), Error> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if shared.limits.threads > 0 {
        builder.worker_threads(shared.limits.threads);
    }
    let runtime = builder
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
    for (index, listener) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let (transport, local) = (listener.transport(), listener.local());
        let stats = shared.listener_stats(index);
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
                let s = Datagrams::Udp(UdpSocket::from_std(s).map_err(adopt)?);
                spawn_datagrams(
                    &mut loops,
                    s,
                    shared,
                    (transport, local),
                    (&tracker, &slots),
                    stats,
                );
                continue;
            }
            Listener::UnixDatagram(s, file) => {
                _socket_files.push(file);
                let s = Datagrams::Unix(UnixDatagram::from_std(s).map_err(adopt)?);
                spawn_datagrams(
                    &mut loops,
                    s,
                    shared,
                    (transport, local),
                    (&tracker, &slots),
                    stats,
                );
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
                stats,
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

/// A datagram listener's loop: a program's runs (`exec`), or the service's answers.
fn spawn_datagrams(
    loops: &mut JoinSet<()>,
    socket: Datagrams,
    shared: Arc<Shared>,
    (transport, local): (Transport, Address),
    (tracker, slots): (&TaskTracker, &Arc<Semaphore>),
    stats: Arc<crate::stats::ListenerStats>,
) {
    match shared.app.exec.clone() {
        Some(program) => loops.spawn(exec::exec_loop(
            socket,
            shared,
            (transport, local),
            program,
            tracker.clone(),
            slots.clone(),
            stats,
        )),
        None => loops.spawn(datagram_loop(socket, shared, transport, local, stats)),
    };
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
        let mut acceptor = AcceptLoop::new(listening.stats.clone());
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
        drain_queue(
            &self.shared,
            &listening.stats,
            accept_now,
            |stream, peer| {
                let permit = self.slots.clone().try_acquire_owned().ok();
                let conn = serve_conn(stream, peer, listening, self.shared.clone(), permit);
                self.tracker.spawn(conn);
            },
        );
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
    stats: Arc<crate::stats::ListenerStats>,
) {
    let mut datagrams = datagram::Datagrams::new(&shared, transport, local, stats);
    // One stop future for the loop's life: a fresh one per datagram registered and removed a
    // waiter on the shared token (two mutexes) at each receive. Polled first, so that a flood
    // that keeps the socket readable cannot hide the stop.
    let mut stop = std::pin::pin!(shared.stop.fired());
    let mut batch = Batch::new();
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
        // Then the datagrams already queued, in one batch: the wait (a poll of the stop and of
        // the socket's readiness) cost about as much as the rules and the reply together, per
        // datagram. An error of the wait goes to the rules as a receive error would.
        let received = match readable {
            Err(e) => Err(e),
            Ok(()) => socket.try_recv_batch(&mut batch),
        };
        if let Some(delay) = batch.answer(socket.as_fd(), &mut datagrams, &shared, received) {
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

impl Datagrams {
    /// Waits until the socket may have a datagram.
    async fn readable(&self) -> io::Result<()> {
        match self {
            Datagrams::Udp(s) => s.readable().await,
            Datagrams::Unix(s) => s.readable().await,
        }
    }

    /// Receives the datagrams queued into `batch` without waiting: how many (`WouldBlock`
    /// when none is queued).
    ///
    /// Fewer datagrams than a batch means the queue is empty: the closure then says
    /// `WouldBlock`, so that tokio clears the readiness it saw (a datagram arriving since is a
    /// new readiness event), sparing the call that would find the queue empty. On these
    /// unconnected sockets without IP_RECVERR no error can end a batch early with datagrams
    /// still queued (the kernel ignores ICMP errors for them).
    fn try_recv_batch(&self, batch: &mut Batch) -> io::Result<usize> {
        let mut count = 0;
        let mut recv = || {
            count = batch.recv(self.as_fd())?;
            match count {
                BATCH => Ok(()),
                _ => Err(io::Error::from(io::ErrorKind::WouldBlock)),
            }
        };
        let received = match self {
            Datagrams::Udp(s) => s.try_io(tokio::io::Interest::READABLE, &mut recv),
            Datagrams::Unix(s) => s.try_io(tokio::io::Interest::READABLE, &mut recv),
        };
        match received {
            Err(e) if count == 0 => Err(e),
            _ => Ok(count),
        }
    }

    /// Receives one queued datagram without waiting (the exec loop's, whose runs answer one
    /// by one from their own tasks).
    fn try_recv(&self, buf: &mut [u8], transport: Transport) -> io::Result<(usize, Address)> {
        match self {
            Datagrams::Udp(s) => s.try_io(tokio::io::Interest::READABLE, || {
                datagram::recv_datagram(s.as_fd(), buf, transport)
            }),
            Datagrams::Unix(s) => s.try_io(tokio::io::Interest::READABLE, || {
                datagram::recv_datagram(s.as_fd(), buf, transport)
            }),
        }
    }

    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Datagrams::Udp(s) => s.as_fd(),
            Datagrams::Unix(s) => s.as_fd(),
        }
    }
}

/// Sends one reply now or not at all: a peer that does not read must not hold the listener.
fn try_send_to(socket: &Datagrams, reply: &[u8], peer: &Address) -> io::Result<()> {
    let to = datagram::reply_addr(peer)?;
    match socket {
        Datagrams::Udp(s) => socket2::SockRef::from(s).send_to(reply, &to),
        Datagrams::Unix(s) => socket2::SockRef::from(s).send_to(reply, &to),
    }
    .map(drop)
}
