//! The load loops, one async task per connection (or socket, or worker).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStringExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep, sleep_until, timeout};

use super::pace::Pacer;
use super::plan::{Expect, Mode, Plan};
use super::report::{Counters, Failure, histogram};
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
    /// The reply the other `--expect` wants: a mismatch equal to it earns a hint.
    other_reply: Vec<u8>,
}

/// Where to connect: resolved once, before the clock starts.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Inet(SocketAddr),
    Unix(std::path::PathBuf),
}

impl Run {
    pub(crate) fn new(plan: Plan, counters: Arc<Counters>, target: Target) -> Run {
        let datagram = plan.mode == Mode::Udp;
        let (request, reply) = plan.exchange(datagram);
        let mut other = plan.clone();
        other.expect = match plan.expect {
            Expect::Upper => Expect::Echo,
            Expect::Echo => Expect::Upper,
        };
        let (_, other_reply) = other.exchange(datagram);
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
            other_reply,
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

    /// Waits for a request's turn and returns the time its latency counts from: the intended
    /// send time with a fixed rate (recording how late it actually left), else now.
    async fn turn(&self, ticket: u64, pacer: &mut Pacer, tally: &mut Tally) -> Instant {
        match self.intended(ticket) {
            Some(at) => {
                pacer.until(at).await;
                tally.lag(at);
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

    /// Counts a failed connection attempt: a time-out, or an error of its kind.
    fn connect_failed(&self, error: &io::Error) {
        if error.kind() == io::ErrorKind::TimedOut {
            return self.count(&self.counters.timeouts);
        }
        let kind = match error.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            // A reset during the handshake (a listener that refuses by RST after accept).
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => Failure::Reset,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                Failure::Unreachable
            }
            _ => Failure::Other,
        };
        self.counters.fail(kind, || {
            format!(
                "cannot connect to {}: {}",
                self.plan.endpoint,
                describe(kind, error)
            )
        });
    }

    /// Counts a mismatched reply, and whether it is what the other `--expect` wants.
    fn mismatch(&self, reply: &[u8]) {
        self.count(&self.counters.mismatches);
        if reply == self.other_reply {
            self.count(&self.counters.other_expect);
        }
    }

    fn count(&self, counter: &AtomicU64) {
        self.counters.add(counter, 1);
    }

    /// After a failed connection attempt: pause briefly so a refusing server is not hammered.
    async fn back_off(&self) {
        sleep(Duration::from_millis(10)).await;
    }

    fn record(&self, tally: &mut Tally, since: Instant) {
        let ns = Instant::now().saturating_duration_since(since).as_nanos();
        let _ = tally
            .latencies
            .record(u64::try_from(ns).unwrap_or(u64::MAX).clamp(1_000, MAX_NS));
        self.count(&self.counters.ok);
    }
}

/// The histograms' top (60 s, in ns): a larger value is recorded as this.
const MAX_NS: u64 = 60_000_000_000;

/// One task's figures, merged into the run's at its end.
struct Tally {
    /// Latencies in ns.
    latencies: Histogram<u64>,
    /// How late requests left against their intended send time, in ns (`--rate` only).
    lags: Histogram<u64>,
}

impl Tally {
    fn lag(&mut self, at: Instant) {
        let ns = Instant::now().saturating_duration_since(at).as_nanos();
        let _ = self
            .lags
            .record(u64::try_from(ns).unwrap_or(u64::MAX).min(MAX_NS));
    }
}

/// An I/O error's text with what it means here.
fn describe(kind: Failure, error: &io::Error) -> String {
    match kind {
        Failure::Reset => format!("connection reset by the server before any reply ({error})"),
        Failure::Truncated => format!("the connection ended in the middle of a reply ({error})"),
        _ => error.to_string(),
    }
}

/// One task of the run, by mode.
pub(crate) async fn task(run: Arc<Run>, index: usize) {
    let mut tally = Tally {
        latencies: histogram(),
        lags: histogram(),
    };
    match run.plan.mode {
        Mode::Pingpong => pingpong(&run, &mut tally).await,
        Mode::Connect => connect_per_request(&run, &mut tally).await,
        Mode::Udp => udp(&run, &mut tally).await,
        Mode::Stream => stream(&run, index).await,
        Mode::Idle => idle(&run, &mut tally).await,
    }
    run.counters.merge(&tally.latencies, &tally.lags);
}

async fn pingpong(run: &Run, tally: &mut Tally) {
    let mut pacer = Pacer::new();
    loop {
        if run.out_of_time() {
            return;
        }
        let mut conn = match run.connect().await {
            Ok(conn) => conn,
            Err(e) => {
                // A failed connection costs a request, so a request-bounded run against a
                // server that refuses still ends.
                if run.claim().is_none() {
                    return;
                }
                run.connect_failed(&e);
                run.back_off().await;
                continue;
            }
        };
        let requests = Requests::Claimed(&mut pacer);
        if converse(run, &mut conn, run.plan.pipeline.max(1), requests, tally)
            .await
            .is_ok()
        {
            return;
        }
    }
}

async fn connect_per_request(run: &Run, tally: &mut Tally) {
    let mut pacer = Pacer::new();
    while let Some(ticket) = run.claim() {
        // The connect is part of the request: latency counts from before it.
        let since = run.turn(ticket, &mut pacer, tally).await;
        let mut conn = match run.connect().await {
            Ok(conn) => conn,
            Err(e) => {
                run.connect_failed(&e);
                if e.kind() != io::ErrorKind::TimedOut {
                    run.back_off().await;
                }
                continue;
            }
        };
        let _ = converse(run, &mut conn, 1, Requests::One(since), tally).await;
        // Dropping the connection closes it, as the slides' client does.
    }
}

/// Which requests a conversation sends.
enum Requests<'a> {
    /// Claim tickets until the run's bound, each sent at its turn.
    Claimed(&'a mut Pacer),
    /// One request, whose latency counts from this instant.
    One(Instant),
}

/// Why a conversation ended early (already counted).
struct Ended;

/// The kind of an I/O error on a connection that has answered `answered` requests and has
/// `got` bytes of the current reply: a reset before any reply is a refusal in all but name.
fn kind_of(error: &io::Error, answered: u64, got: usize) -> Failure {
    match error.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => {
            if got > 0 {
                Failure::Truncated
            } else if answered == 0 {
                Failure::Reset
            } else {
                Failure::Closed
            }
        }
        io::ErrorKind::ConnectionRefused => Failure::Refused,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => Failure::Unreachable,
        _ => Failure::Other,
    }
}

/// Notes a connection that failed after exactly one reply: the mark of a server that closes
/// after one reply (pingpong's hint).
fn count_pattern(run: &Run, answered: u64) {
    if answered == 1 {
        run.count(&run.counters.after_one_reply);
    }
}

/// Drives one stream connection: writes requests while it reads replies (so that a message
/// larger than both sockets' buffers cannot deadlock), at most `pipeline` in flight, and checks
/// every reply. Every request must be answered within the time-out of its first byte written,
/// so `-w` bounds every wait, on a write as on a read. Returns `Ok` once the requests are all
/// answered, or `Err` at the first failure, counted: the connection is out of step then.
async fn converse(
    run: &Run,
    conn: &mut Box<dyn AsyncStream>,
    pipeline: usize,
    mut requests: Requests<'_>,
    tally: &mut Tally,
) -> Result<(), Ended> {
    let (mut reader, mut writer) = tokio::io::split(conn);
    let request = &run.request[..];
    let mut buf = vec![0u8; run.reply.len()];
    let mut got = 0; // bytes of the reply now being read
    let mut answered = 0u64; // whole replies on this connection
    // Per request in flight: when its latency counts from, and its deadline.
    let mut in_flight: VecDeque<(Instant, Instant)> = VecDeque::with_capacity(pipeline);
    let mut written: Option<usize> = None; // bytes written of the request being written
    let mut due: Option<Instant> = None; // a claimed request waiting for its turn
    let mut exhausted = false;
    let paced = run.plan.rate.is_some();
    loop {
        if written.is_none() && due.is_none() && !exhausted && in_flight.len() < pipeline {
            let next = match &mut requests {
                Requests::Claimed(_) => run
                    .claim()
                    .map(|ticket| run.intended(ticket).unwrap_or_else(Instant::now)),
                Requests::One(since) => Some(*since),
            };
            match next {
                Some(at) => due = Some(at),
                None => exhausted = true,
            }
            if let Requests::One(_) = requests {
                exhausted = true;
            }
        }
        if let Some(at) = due.filter(|_| written.is_none()) {
            let now = Instant::now();
            let waits = matches!(requests, Requests::Claimed(_)) && paced;
            if !waits || now >= at {
                if waits {
                    tally.lag(at);
                }
                in_flight.push_back((at, now + run.plan.timeout));
                written = Some(0);
                due = None;
            }
        }
        if written.is_none() && due.is_none() && in_flight.is_empty() {
            return Ok(());
        }
        let deadline = in_flight.front().map(|&(_, deadline)| deadline);
        let pacer = match &mut requests {
            Requests::Claimed(pacer) => Some(&mut **pacer),
            Requests::One(_) => None,
        };
        let failure = tokio::select! {
            read = reader.read(&mut buf[got..]), if !in_flight.is_empty() => match read {
                Ok(0) => Some(if got == 0 { Failure::Closed } else { Failure::Truncated }),
                Err(e) => {
                    let kind = kind_of(&e, answered, got);
                    run.counters.fail(kind, || describe(kind, &e));
                    count_pattern(run, answered);
                    return Err(Ended);
                }
                Ok(n) => {
                    run.counters.add(&run.counters.bytes_received, n as u64);
                    got += n;
                    if got == buf.len() {
                        got = 0;
                        if buf != run.reply {
                            run.mismatch(&buf);
                            return Err(Ended);
                        }
                        let (since, _) = in_flight.pop_front().expect("a request in flight");
                        run.record(tally, since);
                        answered += 1;
                    }
                    None
                }
            },
            wrote = writer.write(&request[written.unwrap_or(0)..]), if written.is_some() => {
                match wrote {
                    Ok(n) if n > 0 => {
                        run.counters.add(&run.counters.bytes_sent, n as u64);
                        let total = written.unwrap_or(0) + n;
                        written = (total < request.len()).then_some(total);
                        None
                    }
                    Ok(_) => Some(Failure::Other),
                    Err(e) => {
                        let kind = kind_of(&e, answered, got);
                        run.counters.fail(kind, || describe(kind, &e));
                        count_pattern(run, answered);
                        return Err(Ended);
                    }
                }
            }
            () = async {
                match (pacer, due) {
                    (Some(pacer), Some(at)) => pacer.until(at).await,
                    _ => std::future::pending().await,
                }
            }, if due.is_some() && written.is_none() && paced => None,
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                run.count(&run.counters.timeouts);
                return Err(Ended);
            }
        };
        if let Some(kind) = failure {
            run.counters.fail(kind, || match kind {
                Failure::Closed if answered == 0 => {
                    "the server closed the connection before any reply".to_string()
                }
                Failure::Closed => format!(
                    "the server closed the connection after {answered} replies, with a request unanswered"
                ),
                Failure::Truncated => "the server closed the connection in the middle of a reply".to_string(),
                _ => "the connection accepted no more bytes".to_string(),
            });
            count_pattern(run, answered);
            return Err(Ended);
        }
    }
}

async fn udp(run: &Run, tally: &mut Tally) {
    let Target::Inet(server) = run.target else {
        return;
    };
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = match tokio::net::UdpSocket::bind(local).await {
        Ok(socket) => socket,
        Err(e) => {
            return run
                .counters
                .fail(Failure::Other, || format!("cannot open a UDP socket: {e}"));
        }
    };
    if let Err(e) = socket.connect(server).await {
        return run.connect_failed(&e);
    }
    let mut pacer = Pacer::new();
    let mut buf = vec![0u8; 65_536];
    while let Some(ticket) = run.claim() {
        let since = run.turn(ticket, &mut pacer, tally).await;
        // A reply that came after its request was counted lost must not pass for this one's.
        while socket.try_recv(&mut buf).is_ok() {}
        let sent = timeout(run.plan.timeout, socket.send(&run.request)).await;
        let received = match sent {
            Err(_) => {
                run.count(&run.counters.timeouts);
                continue;
            }
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => {
                run.counters
                    .add(&run.counters.bytes_sent, run.request.len() as u64);
                match timeout(run.plan.timeout, socket.recv(&mut buf)).await {
                    Err(_) => {
                        run.count(&run.counters.losses);
                        continue;
                    }
                    Ok(received) => received,
                }
            }
        };
        match received {
            Err(e) => {
                // A refusal here is the ICMP port unreachable of an earlier datagram.
                let kind = match e.kind() {
                    io::ErrorKind::ConnectionRefused => Failure::Refused,
                    io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                        Failure::Unreachable
                    }
                    _ => Failure::Other,
                };
                run.counters.fail(kind, || {
                    format!("datagram to {}: {}", run.plan.endpoint, describe(kind, &e))
                });
                run.back_off().await;
            }
            Ok(n) => {
                run.counters.add(&run.counters.bytes_received, n as u64);
                if buf[..n] == run.reply[..] {
                    run.record(tally, since);
                } else {
                    run.mismatch(&buf[..n]);
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
        Err(e) => return run.connect_failed(&e),
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
            match timeout(run.plan.timeout, writer.write_all(bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Some(e)),
                Err(_) => return Err(None), // the server stopped reading
            }
            run.counters
                .add(&run.counters.bytes_sent, bytes.len() as u64);
            sent += n;
        }
        let _ = timeout(run.plan.timeout, writer.shutdown()).await;
        Ok::<u64, Option<io::Error>>(sent)
    };
    let reading = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = 0usize; // position within the expected reply
        let mut whole_replies = 0u64;
        loop {
            let n = match timeout(run.plan.timeout, reader.read(&mut buf)).await {
                Err(_) => return Err(None),
                Ok(Err(e)) => {
                    let kind = kind_of(&e, whole_replies, at);
                    return Err(Some((kind, describe(kind, &e))));
                }
                Ok(Ok(0)) if at > 0 => {
                    let text = "the server closed the connection in the middle of a reply";
                    return Err(Some((Failure::Truncated, text.to_string())));
                }
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(n)) => n,
            };
            run.counters.add(&run.counters.bytes_received, n as u64);
            let mut chunk = &buf[..n];
            let mut whole = 0;
            while !chunk.is_empty() {
                let take = chunk.len().min(run.reply.len() - at);
                if chunk[..take] != run.reply[at..at + take] {
                    run.count(&run.counters.mismatches);
                    return Err(None);
                }
                chunk = &chunk[take..];
                at += take;
                if at == run.reply.len() {
                    at = 0;
                    whole += 1;
                }
            }
            whole_replies += whole;
            run.counters.add(&run.counters.ok, whole);
        }
    };
    // A failed reader ends the writer too (it would wait in vain for the server to read);
    // a finished writer leaves the reader to drain the replies.
    let (mut writing, mut reading) = (std::pin::pin!(writing), std::pin::pin!(reading));
    let (written, read) = tokio::select! {
        read = &mut reading => (None, read),
        written = &mut writing => (Some(written), reading.await),
    };
    match read {
        Ok(()) => {}
        Err(Some((kind, text))) => return run.counters.fail(kind, || text),
        Err(None)
            if run
                .counters
                .mismatches
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0 => {}
        Err(None) => return run.count(&run.counters.timeouts),
    }
    match written {
        Some(Err(Some(e))) => {
            let kind = kind_of(&e, 1, 0);
            run.counters.fail(kind, || describe(kind, &e));
        }
        Some(Err(None)) => run.count(&run.counters.timeouts),
        _ => {}
    }
}

/// Opens a connection, proves it with one round trip, and holds it until the run ends.
async fn idle(run: &Run, tally: &mut Tally) {
    let since = Instant::now();
    let mut conn = match run.connect().await {
        Ok(conn) => conn,
        Err(e) => return run.connect_failed(&e),
    };
    if converse(run, &mut conn, 1, Requests::One(since), tally)
        .await
        .is_err()
    {
        return;
    }
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
            // tokio's `connect` reads a leading NUL as a Linux abstract name (`unix://@name`).
            Endpoint::Unix(path) => Ok(Target::Unix(match endpoint.abstract_name() {
                Some(name) => std::ffi::OsString::from_vec([b"\0", name].concat()).into(),
                None => path.clone(),
            })),
            Endpoint::Tcp { .. } | Endpoint::Udp { .. } => {
                Ok(Target::Inet(endpoint.socket_addrs()?[0]))
            }
            Endpoint::UnixDatagram(_) => Err(crate::Error::Config(
                "bench speaks tcp://, udp:// and unix:// (not unixgram://)".into(),
            )),
        }
    }
}
