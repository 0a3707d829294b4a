//! The UDP relay: one upstream socket per client, so the target's replies find their way back
//! to the client that asked, and an idle time-out that closes a client's upstream socket once
//! neither side has sent anything for that long (socat's `UDP-LISTEN:a,fork UDP:b` with `-T`).
//!
//! Datagram engines answer one datagram with one reply; a relay's replies come whenever the
//! target sends them, so this is a loop of its own on a current-thread tokio runtime: the
//! listening socket is the servers' own ([`Listener`]), and the access list, the client cap
//! (the server's `max_connections`) and [`ShutdownHandle`] are the servers' too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::access::AccessList;
use crate::dump::{Direction, Dump};
use crate::endpoint::Endpoint;
use crate::engine::listener::Listener;
use crate::error::Error;
use crate::limits::Limits;
use crate::service::Address;
use crate::shutdown::{ShutdownHandle, Trigger};

/// A bound UDP relay; [`serve_forever`](DatagramRelay::serve_forever) runs it.
///
/// # Examples
///
/// ```
/// use std::net::UdpSocket;
/// use socketkit::{Server, relay::DatagramRelay};
///
/// let upper = Server::builder().listen("udp://127.0.0.1:0".parse()?).bind()?;
/// let target = upper.local_endpoints()[0].clone();
/// let upper_stop = upper.shutdown_handle();
/// let upper_serving = std::thread::spawn(move || upper.serve_forever());
///
/// let relay = DatagramRelay::bind(&"udp://127.0.0.1:0".parse()?, target)?;
/// let addr = relay.local_endpoint().socket_addrs()?[0];
/// let stop = relay.shutdown_handle();
/// let relaying = std::thread::spawn(move || relay.serve_forever());
///
/// let client = UdpSocket::bind("127.0.0.1:0")?;
/// client.send_to(b"via the relay", addr)?;
/// let mut buf = [0u8; 64];
/// let (n, from) = client.recv_from(&mut buf)?;
/// assert_eq!((&buf[..n], from), (&b"VIA THE RELAY"[..], addr));
/// # stop.shutdown();
/// # relaying.join().unwrap()?;
/// # upper_stop.shutdown();
/// # upper_serving.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct DatagramRelay {
    socket: std::net::UdpSocket,
    local: Endpoint,
    target: Endpoint,
    addr: SocketAddr,
    idle_timeout: Duration,
    max_clients: usize,
    access: AccessList,
    dump: Option<Dump>,
    stop: Arc<Trigger>,
}

impl DatagramRelay {
    /// Binds `listen` (`udp://`) to relay to `target` (`udp://`, its name resolved now).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for endpoints that are not UDP or a target that is the relay's own
    /// address, [`Error::Bind`], [`Error::NameNotFound`].
    pub fn bind(listen: &Endpoint, target: Endpoint) -> Result<DatagramRelay, Error> {
        use crate::endpoint::Transport::Udp;
        if listen.transport() != Udp || target.transport() != Udp {
            return Err(Error::Config(format!(
                "a datagram relay goes from udp:// to udp://, not {listen} to {target}"
            )));
        }
        let addr = target.socket_addrs()?[0];
        let listener = Listener::bind(listen, &Limits::default(), None)?;
        let local = listener
            .local_endpoint()
            .map_err(|e| Error::io("getsockname", e))?;
        let Listener::Udp(socket) = listener else {
            unreachable!("a udp:// endpoint binds a UDP socket")
        };
        let own = socket
            .local_addr()
            .map_err(|e| Error::io("getsockname", e))?;
        if super::reaches(addr, own) {
            return Err(Error::Config(format!(
                "the target {target} is the relay's own listening address {local}"
            )));
        }
        Ok(DatagramRelay {
            socket,
            local,
            target,
            addr,
            idle_timeout: Limits::default().idle_timeout,
            max_clients: Limits::default().max_connections,
            access: AccessList::default(),
            dump: None,
            stop: Arc::new(Trigger::new().map_err(|e| Error::io("socketpair", e))?),
        })
    }

    /// A client's upstream socket is closed once neither side has sent for this long.
    pub fn idle_timeout(mut self, idle: Duration) -> DatagramRelay {
        self.idle_timeout = idle;
        self
    }

    /// At most this many clients at once; a datagram from one more is dropped.
    pub fn max_clients(mut self, max: usize) -> DatagramRelay {
        self.max_clients = max;
        self
    }

    /// Datagrams from peers the list refuses are dropped.
    pub fn access(mut self, access: AccessList) -> DatagramRelay {
        self.access = access;
        self
    }

    /// Show every datagram each way (the client is the peer named).
    pub fn dump(mut self, dump: Option<Dump>) -> DatagramRelay {
        self.dump = dump;
        self
    }

    /// The address bound (the real port when 0 was asked for).
    pub fn local_endpoint(&self) -> &Endpoint {
        &self.local
    }

    /// Stops [`serve_forever`](DatagramRelay::serve_forever) from any thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            stop: self.stop.clone(),
        }
    }

    /// Relays until the shutdown handle fires.
    ///
    /// # Errors
    ///
    /// An I/O error of the listening socket or the runtime.
    pub fn serve_forever(self) -> Result<(), Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot start the runtime", e))?;
        runtime.block_on(self.run())
    }

    async fn run(self) -> Result<(), Error> {
        let socket =
            Arc::new(UdpSocket::from_std(self.socket).map_err(|e| Error::io("listening", e))?);
        let mut clients: HashMap<SocketAddr, Client> = HashMap::new();
        let (gone_tx, mut gone_rx) = mpsc::unbounded_channel::<(SocketAddr, u64)>();
        let mut next_id = 0u64;
        let mut buf = vec![0u8; 65_536];
        let stop = self.stop.clone();
        loop {
            let (n, from) = tokio::select! {
                () = stop.fired() => break,
                Some((gone, id)) = gone_rx.recv() => {
                    if clients.get(&gone).is_some_and(|c| c.id == id) {
                        clients.remove(&gone);
                        tracing::debug!("{gone}: idle for {:?}, upstream closed", self.idle_timeout);
                    }
                    continue;
                }
                received = socket.recv_from(&mut buf) => match received {
                    Ok(received) => received,
                    Err(e) => {
                        tracing::debug!("receiving: {e}");
                        continue;
                    }
                },
            };
            let peer = Address::Inet(from);
            if !self.access.permits_peer(&peer) {
                continue;
            }
            if !clients.contains_key(&from) {
                if clients.len() >= self.max_clients {
                    tracing::warn!("{from}: {} clients already, dropped", self.max_clients);
                    continue;
                }
                let upstream = match upstream_socket(self.addr).await {
                    Ok(upstream) => Arc::new(upstream),
                    Err(e) => {
                        tracing::warn!("{from}: cannot reach {}: {e}", self.target);
                        continue;
                    }
                };
                next_id += 1;
                let last = Arc::new(Mutex::new(Instant::now()));
                tokio::spawn(replies(
                    Back {
                        upstream: upstream.clone(),
                        socket: socket.clone(),
                        client: from,
                        target: self.target.clone(),
                        idle: self.idle_timeout,
                        last: last.clone(),
                        dump: self.dump.clone(),
                    },
                    gone_tx.clone(),
                    next_id,
                ));
                clients.insert(
                    from,
                    Client {
                        upstream,
                        last,
                        id: next_id,
                    },
                );
            }
            let client = &clients[&from];
            *client.last.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
            if let Some(dump) = &self.dump {
                dump.chunk(&peer, Direction::Received, &buf[..n]);
            }
            if let Err(e) = client.upstream.send(&buf[..n]).await {
                tracing::warn!("{from}: cannot reach {}: {e}", self.target);
            }
        }
        Ok(())
    }
}

/// One client's upstream socket and when either side last sent.
struct Client {
    upstream: Arc<UdpSocket>,
    last: Arc<Mutex<Instant>>,
    /// Tells this client's upstream from a later one of the same address.
    id: u64,
}

/// What the task that carries a client's replies back needs.
struct Back {
    upstream: Arc<UdpSocket>,
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    target: Endpoint,
    idle: Duration,
    last: Arc<Mutex<Instant>>,
    dump: Option<Dump>,
}

/// A socket of the target's family on an ephemeral port, connected to the target: it hears
/// only the target, and a closed port shows as "connection refused".
async fn upstream_socket(target: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: SocketAddr = if target.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(target).await?;
    Ok(socket)
}

/// Carries the target's replies back to the client until both sides are idle for `idle`.
async fn replies(back: Back, gone: mpsc::UnboundedSender<(SocketAddr, u64)>, id: u64) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let last = *back.last.lock().unwrap_or_else(PoisonError::into_inner);
        let deadline = last + back.idle;
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                let last = *back.last.lock().unwrap_or_else(PoisonError::into_inner);
                if Instant::now() >= last + back.idle {
                    let _ = gone.send((back.client, id));
                    return;
                }
            }
            received = back.upstream.recv(&mut buf) => match received {
                Ok(n) => {
                    *back.last.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
                    if let Some(dump) = &back.dump {
                        dump.chunk(&Address::Inet(back.client), Direction::Sent, &buf[..n]);
                    }
                    if let Err(e) = back.socket.send_to(&buf[..n], back.client).await {
                        tracing::debug!("{}: {e}", back.client);
                    }
                }
                Err(e) => tracing::warn!("{}: cannot reach {}: {e}", back.client, back.target),
            },
        }
    }
}
