//! The load loops, one async task per connection (or socket, or worker).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep, sleep_until, timeout};

use super::plan::{Mode, Plan};
use super::report::{Counters, histogram};
use crate::endpoint::Endpoint;
use crate::handler::AsyncStream;

/// What every task of a run shares.
pub(crate) struct Run {
    pub(crate) plan: Plan,
    pub(crate) counters: Arc<Counters>,
    pub(crate) target: Target,
    pub(crate) start: Instant,
    pub(crate) deadline: Option<Instant>,
    /// Requests handed out so far: the request bound, and the schedule of a fixed rate.
    tickets: AtomicU64,
    request: Vec<u8>,
    reply: Vec<u8>,
}

/// Where to connect: resolved once, before the clock starts.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Inet(SocketAddr),
    Unix(std::path::PathBuf),
}

impl Run {
    pub(crate) fn new(plan: Plan, counters: Arc<Counters>, target: Target) -> Run {
        let (request, reply) = plan.exchange(plan.mode == Mode::Udp);
        let start = Instant::now();
        let deadline = plan.time_bound().map(|d| start + d);
        Run {
            plan,
            counters,
            target,
            start,
            deadline,
            tickets: AtomicU64::new(0),
            request,
            reply,
        }
    }

    fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The next request's number, or `None` once the run's bound is reached.
    fn claim(&self) -> Option<u64> {
        if self.out_of_time() {
            return None;
        }
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        if self.plan.requests.is_some_and(|n| ticket >= n) {
            return None;
        }
        Some(ticket)
    }

    /// With a fixed rate, when request `ticket` is meant to go out: latency counts from then,
    /// so a stalled server shows in the percentiles instead of slowing the schedule down
    /// (no coordinated omission).
    fn intended(&self, ticket: u64) -> Option<Instant> {
        let rate = self.plan.rate?;
        Some(self.start + Duration::from_secs_f64(ticket as f64 / rate))
    }

    /// Waits for a request's turn and returns the time its latency counts from.
    async fn turn(&self, ticket: u64) -> Instant {
        match self.intended(ticket) {
            Some(at) => {
                sleep_until(at).await;
                at
            }
            None => Instant::now(),
        }
    }

    async fn connect(&self) -> io::Result<Box<dyn AsyncStream>> {
        let connecting = async {
            match &self.target {
                Target::Inet(addr) => {
                    let stream = tokio::net::TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    Ok::<Box<dyn AsyncStream>, io::Error>(Box::new(stream))
                }
                Target::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok(Box::new(stream) as Box<dyn AsyncStream>)
                }
            }
        };
        timeout(self.plan.timeout, connecting)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }

    fn count(&self, counter: &AtomicU64) {
        self.counters.add(counter, 1);
    }

    /// After a failed connection attempt: pause briefly so a refusing server is not hammered.
    async fn back_off(&self) {
        sleep(Duration::from_millis(10)).await;
    }

    fn record(&self, histogram: &mut Histogram<u64>, since: Instant) {
        let ns = Instant::now().saturating_duration_since(since).as_nanos();
        let _ = histogram.record(u64::try_from(ns).unwrap_or(u64::MAX).max(1_000));
        self.count(&self.counters.ok);
    }
}

/// One task of the run, by mode.
pub(crate) async fn task(run: Arc<Run>, index: usize) {
    let mut latencies = histogram();
    match run.plan.mode {
        Mode::Pingpong => pingpong(&run, &mut latencies).await,
        Mode::Connect => connect_per_request(&run, &mut latencies).await,
        Mode::Udp => udp(&run, &mut latencies).await,
        Mode::Stream => stream(&run, index).await,
        Mode::Idle => idle(&run, &mut latencies).await,
    }
    run.counters.merge(&latencies);
}

async fn pingpong(run: &Run, latencies: &mut Histogram<u64>) {
    let pipeline = run.plan.pipeline.max(1);
    let mut buf = vec![0u8; run.reply.len()];
    'connection: loop {
        if run.out_of_time() {
            return;
        }
        let mut conn = match run.connect().await {
            Ok(conn) => conn,
            Err(_) => {
                // A failed connection costs a request, so a request-bounded run against a
                // server that refuses still ends.
                run.count(&run.counters.errors);
                if run.claim().is_none() {
                    return;
                }
                run.back_off().await;
                continue;
            }
        };
        let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(pipeline);
        let mut exhausted = false;
        loop {
            while !exhausted && in_flight.len() < pipeline {
                let Some(ticket) = run.claim() else {
                    exhausted = true;
                    break;
                };
                let since = run.turn(ticket).await;
                if conn.write_all(&run.request).await.is_err() {
                    run.count(&run.counters.errors);
                    continue 'connection;
                }
                run.counters
                    .add(&run.counters.bytes_sent, run.request.len() as u64);
                in_flight.push_back(since);
            }
            let Some(since) = in_flight.pop_front() else {
                return;
            };
            match timeout(run.plan.timeout, conn.read_exact(&mut buf)).await {
                Err(_) => {
                    run.count(&run.counters.timeouts);
                    continue 'connection;
                }
                Ok(Err(_)) => {
                    run.count(&run.counters.errors);
                    continue 'connection;
                }
                Ok(Ok(n)) => {
                    run.counters.add(&run.counters.bytes_received, n as u64);
                    if buf != run.reply {
                        run.count(&run.counters.mismatches);
                        continue 'connection; // the stream is out of step now
                    }
                    run.record(latencies, since);
                }
            }
        }
    }
}

async fn connect_per_request(run: &Run, latencies: &mut Histogram<u64>) {
    let mut buf = vec![0u8; run.reply.len()];
    while let Some(ticket) = run.claim() {
        let since = run.turn(ticket).await;
        let mut conn = match run.connect().await {
            Ok(conn) => conn,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                run.count(&run.counters.timeouts);
                continue;
            }
            Err(_) => {
                run.count(&run.counters.errors);
                run.back_off().await;
                continue;
            }
        };
        if conn.write_all(&run.request).await.is_err() {
            run.count(&run.counters.errors);
            continue;
        }
        run.counters
            .add(&run.counters.bytes_sent, run.request.len() as u64);
        match timeout(run.plan.timeout, conn.read_exact(&mut buf)).await {
            Err(_) => run.count(&run.counters.timeouts),
            Ok(Err(_)) => run.count(&run.counters.errors),
            Ok(Ok(n)) => {
                run.counters.add(&run.counters.bytes_received, n as u64);
                if buf == run.reply {
                    run.record(latencies, since);
                } else {
                    run.count(&run.counters.mismatches);
                }
            }
        }
        // Dropping the connection closes it, as the slides' client does.
    }
}

async fn udp(run: &Run, latencies: &mut Histogram<u64>) {
    let Target::Inet(server) = run.target else {
        return;
    };
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = match tokio::net::UdpSocket::bind(local).await {
        Ok(socket) if socket.connect(server).await.is_ok() => socket,
        _ => {
            run.count(&run.counters.errors);
            return;
        }
    };
    let mut buf = vec![0u8; 65_536];
    while let Some(ticket) = run.claim() {
        let since = run.turn(ticket).await;
        // A reply that came after its request was counted lost must not pass for this one's.
        while socket.try_recv(&mut buf).is_ok() {}
        if socket.send(&run.request).await.is_err() {
            run.count(&run.counters.errors);
            run.back_off().await;
            continue;
        }
        run.counters
            .add(&run.counters.bytes_sent, run.request.len() as u64);
        match timeout(run.plan.timeout, socket.recv(&mut buf)).await {
            Err(_) => run.count(&run.counters.losses),
            Ok(Err(_)) => {
                run.count(&run.counters.errors);
                run.back_off().await;
            }
            Ok(Ok(n)) => {
                run.counters.add(&run.counters.bytes_received, n as u64);
                if buf[..n] == run.reply[..] {
                    run.record(latencies, since);
                } else {
                    run.count(&run.counters.mismatches);
                }
            }
        }
    }
}

/// Streams this connection's share of the bytes through the server, reading everything back
/// and comparing it with the expected replies as it comes.
async fn stream(run: &Run, index: usize) {
    let connections = run.plan.connections.max(1) as u64;
    let share = run.plan.stream_bytes / connections
        + u64::from((index as u64) < run.plan.stream_bytes % connections);
    let messages = share.div_ceil(run.request.len() as u64);
    let conn = match run.connect().await {
        Ok(conn) => conn,
        Err(_) => {
            run.count(&run.counters.errors);
            return;
        }
    };
    let (mut reader, mut writer) = tokio::io::split(conn);
    let writing = async {
        // Many messages per write: the stream's cost is the server's, not our system calls.
        let batch: Vec<u8> = run.request.repeat((64 * 1024 / run.request.len()).max(1));
        let per_batch = (batch.len() / run.request.len()) as u64;
        let mut sent = 0u64;
        while sent < messages && !run.out_of_time() {
            let n = per_batch.min(messages - sent);
            let bytes = &batch[..n as usize * run.request.len()];
            if writer.write_all(bytes).await.is_err() {
                return Err(());
            }
            run.counters
                .add(&run.counters.bytes_sent, bytes.len() as u64);
            sent += n;
        }
        let _ = writer.shutdown().await;
        Ok(sent)
    };
    let reading = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = 0usize; // position within the expected reply
        loop {
            let n = match timeout(run.plan.timeout, reader.read(&mut buf)).await {
                Err(_) => return Err(&run.counters.timeouts),
                Ok(Err(_)) => return Err(&run.counters.errors),
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(n)) => n,
            };
            run.counters.add(&run.counters.bytes_received, n as u64);
            let mut chunk = &buf[..n];
            let mut whole = 0;
            while !chunk.is_empty() {
                let take = chunk.len().min(run.reply.len() - at);
                if chunk[..take] != run.reply[at..at + take] {
                    return Err(&run.counters.mismatches);
                }
                chunk = &chunk[take..];
                at += take;
                if at == run.reply.len() {
                    at = 0;
                    whole += 1;
                }
            }
            run.counters.add(&run.counters.ok, whole);
        }
    };
    let (written, read) = tokio::join!(writing, reading);
    if written.is_err() {
        run.count(&run.counters.errors);
    }
    if let Err(counter) = read {
        run.count(counter);
    }
}

/// Opens a connection, proves it with one round trip, and holds it until the run ends.
async fn idle(run: &Run, latencies: &mut Histogram<u64>) {
    let since = Instant::now();
    let mut conn = match run.connect().await {
        Ok(conn) => conn,
        Err(_) => {
            run.count(&run.counters.errors);
            return;
        }
    };
    if conn.write_all(&run.request).await.is_err() {
        run.count(&run.counters.errors);
        return;
    }
    run.counters
        .add(&run.counters.bytes_sent, run.request.len() as u64);
    let mut buf = vec![0u8; run.reply.len()];
    match timeout(run.plan.timeout, conn.read_exact(&mut buf)).await {
        Err(_) => return run.count(&run.counters.timeouts),
        Ok(Err(_)) => return run.count(&run.counters.errors),
        Ok(Ok(n)) => run.counters.add(&run.counters.bytes_received, n as u64),
    }
    if buf != run.reply {
        return run.count(&run.counters.mismatches);
    }
    run.record(latencies, since);
    drop(buf);
    run.counters.add(&run.counters.open, 1);
    match run.deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending::<()>().await,
    }
}

impl Target {
    /// The endpoint's first address (or path), resolved before the clock starts.
    pub(crate) fn of(endpoint: &Endpoint) -> Result<Target, crate::Error> {
        match endpoint {
            Endpoint::Unix(path) => Ok(Target::Unix(path.clone())),
            Endpoint::Tcp { .. } | Endpoint::Udp { .. } => {
                Ok(Target::Inet(endpoint.socket_addrs()?[0]))
            }
            Endpoint::UnixDatagram(_) => Err(crate::Error::Config(
                "bench speaks tcp://, udp:// and unix:// (not unixgram://)".into(),
            )),
        }
    }
}
