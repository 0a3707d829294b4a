//! What every task of a run shares: the plan, the counters, the request bound and schedule,
//! and how one task tallies its latencies and failures.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::{Instant, sleep, timeout};

use super::counters::{Counters, Failure, Slot};
use super::pace::Pacer;
use super::plan::{Expect, Mode, Plan};
use super::target::Target;
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
    pub(super) request: Vec<u8>,
    pub(super) reply: Vec<u8>,
    /// The reply the other `--expect` wants: a mismatch equal to it earns a hint.
    other_reply: Vec<u8>,
    /// A `tls://` target's client settings and server name, made once before the clock starts.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<(crate::tls::ClientTls, rustls_pki_types::ServerName<'static>)>,
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
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    pub(super) fn out_of_time(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// The next request's number, or `None` once the run's bound is reached.
    pub(super) fn claim(&self) -> Option<u64> {
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
    pub(super) fn intended(&self, ticket: u64) -> Option<Instant> {
        let rate = self.plan.rate?;
        Some(self.start + Duration::from_secs_f64(ticket as f64 / rate))
    }

    /// Waits for a request's turn and returns the time its latency counts from: the intended
    /// send time with a fixed rate (recording how late it actually left), else now.
    pub(super) async fn turn(&self, ticket: u64, pacer: &mut Pacer, tally: &mut Tally) -> Instant {
        match self.intended(ticket) {
            Some(at) => {
                pacer.until(at).await;
                tally.lag(at);
                at
            }
            None => Instant::now(),
        }
    }

    pub(super) async fn connect(&self) -> io::Result<Box<dyn AsyncStream>> {
        let connecting = async {
            match &self.target {
                Target::Inet(addr) => {
                    let stream = tokio::net::TcpStream::connect(addr).await?;
                    stream.set_nodelay(true)?;
                    #[cfg(feature = "tls")]
                    if let Some((tls, name)) = &self.tls {
                        let stream = tls
                            .connect(name.clone(), stream)
                            .await
                            .map_err(|e| io::Error::other(TlsFailed(crate::tls::cause(&e))))?;
                        self.count(&self.counters.tls_handshakes);
                        return Ok(Box::new(stream) as Box<dyn AsyncStream>);
                    }
                    Ok::<Box<dyn AsyncStream>, io::Error>(Box::new(stream))
                }
                Target::Unix(path) => {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok(Box::new(stream) as Box<dyn AsyncStream>)
                }
                Target::Seqpacket(endpoint) => {
                    // A Unix connect waits only for room in the listen queue, bounded by the
                    // same time-out (SO_SNDTIMEO); off the runtime's threads all the same.
                    let (endpoint, wait) = (endpoint.clone(), self.plan.timeout);
                    let socket = tokio::task::spawn_blocking(move || {
                        crate::seqpacket::connect(&endpoint, wait)
                            .map_err(|e| crate::seqpacket::wrong_kind(&endpoint, e))
                    })
                    .await
                    .map_err(io::Error::other)??;
                    let stream = crate::seqpacket::PacketStream::new(socket)?;
                    Ok(Box::new(stream) as Box<dyn AsyncStream>)
                }
            }
        };
        timeout(self.plan.timeout, connecting)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
    }

    /// Counts a failed connection attempt: a time-out, or an error of its kind.
    pub(super) fn connect_failed(&self, error: &io::Error) {
        if error.kind() == io::ErrorKind::TimedOut {
            return self.count(&self.counters.timeouts);
        }
        #[cfg(feature = "tls")]
        if let Some(TlsFailed(cause)) = error.get_ref().and_then(|e| e.downcast_ref()) {
            // The cause alone: a run whose every failure is this becomes `Error::Tls`.
            return self.counters.fail(Failure::Tls, || cause.clone());
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

    /// Counts a datagram whose send or receive failed.
    pub(super) fn datagram_failed(&self, error: &io::Error) {
        // A refusal here is the ICMP port unreachable of an earlier datagram.
        let kind = match error.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                Failure::Unreachable
            }
            _ => Failure::Other,
        };
        self.counters.fail(kind, || {
            format!(
                "datagram to {}: {}",
                self.plan.endpoint,
                describe(kind, error)
            )
        });
    }

    /// Counts a mismatched reply, and whether it is what the other `--expect` wants.
    pub(super) fn mismatch(&self, reply: &[u8]) {
        self.count(&self.counters.mismatches);
        if reply == self.other_reply {
            self.count(&self.counters.other_expect);
        }
    }

    pub(super) fn count(&self, counter: &AtomicU64) {
        self.counters.add(counter, 1);
    }

    /// After a failed connection attempt: pause briefly so a refusing server is not hammered.
    pub(super) async fn back_off(&self) {
        sleep(Duration::from_millis(10)).await;
    }

    pub(super) fn record(&self, tally: &mut Tally, since: Instant) {
        tally.latency(since);
        self.count(&self.counters.ok);
    }
}

/// A failed TLS handshake, with its one-phrase cause, told apart from other connect errors.
#[cfg(feature = "tls")]
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake failed: {0}")]
struct TlsFailed(String);

/// The histograms' top (60 s, in ns): a larger value is recorded as this.
const MAX_NS: u64 = 60_000_000_000;

/// One task's figures of the current second of the run, merged into the run's when the second
/// ends: by the task as it records in a later second (and at its end, [`Tally::finish`]), or
/// by whoever closes the second ([`Counters::close_before`]) while the task waits. The lock is
/// the task's own: the closer takes it once a second.
pub(super) struct Tally {
    slot: Arc<Mutex<Slot>>,
    start: Instant,
    counters: Arc<Counters>,
}

impl Tally {
    pub(super) fn new(run: &Run) -> Tally {
        Tally {
            slot: run.counters.slot(),
            start: run.start,
            counters: run.counters.clone(),
        }
    }

    /// Records a latency: from `since` to now.
    fn latency(&mut self, since: Instant) {
        self.at(|slot, now| {
            let ns = now.saturating_duration_since(since).as_nanos();
            let _ = slot
                .latencies
                .record(u64::try_from(ns).unwrap_or(u64::MAX).clamp(1_000, MAX_NS));
        });
    }

    /// Records a schedule lag: from the intended send time `at` to now.
    pub(super) fn lag(&mut self, at: Instant) {
        self.at(|slot, now| {
            let ns = now.saturating_duration_since(at).as_nanos();
            let _ = slot
                .lags
                .record(u64::try_from(ns).unwrap_or(u64::MAX).min(MAX_NS));
        });
    }

    /// Runs `record` on the slot at the current time, read with the slot locked (so after any
    /// closing of a second that took the slot's figures: a later time, a later second), first
    /// handing the figures of an ended second to the run.
    fn at(&mut self, record: impl FnOnce(&mut Slot, Instant)) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let second = now.saturating_duration_since(self.start).as_secs();
        if second != slot.second {
            self.counters.flush(&mut slot);
            slot.second = second;
        }
        record(&mut slot, now);
    }

    /// At the task's end: hands the last second's figures to the run.
    pub(super) fn finish(self) {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        self.counters.flush(&mut slot);
    }
}

/// An I/O error's text with what it means here.
pub(super) fn describe(kind: Failure, error: &io::Error) -> String {
    match kind {
        Failure::Reset => format!("connection reset by the server before any reply ({error})"),
        Failure::Truncated => format!("the connection ended in the middle of a reply ({error})"),
        _ => error.to_string(),
    }
}
