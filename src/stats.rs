//! What a server has done, counted per listener: the numbers behind `serve --metrics`.
//!
//! A leaf: atomics and nothing else, always compiled, so every engine counts the same way
//! whether or not the `metrics` feature (the Prometheus exporter, `socketkit::metrics`) is
//! built. The hot path stays cheap: a stream connection's bytes and replies are counted by its
//! engine in the connection's own [`Traffic`](crate::engine) record as before and added to its
//! listener's totals once, when it ends; the listener's atomics are touched once per accepted
//! connection, per datagram and per end, never per read or write of a stream.
//!
//! # For an engine
//!
//! Every engine counts through the shared rules, so a new engine (io_uring) gets the counts by
//! using them: `AcceptLoop::new(stats)` counts accepted and refused connections and the limit;
//! `Datagrams::new(.., stats)` counts datagrams received, answered and dropped; one
//! `Traffic::new(&stats)` per connection counts it active until it drops, and the driver
//! reports `traffic.received(n)`, `sent(n)`, `eof()` at the 0-byte read and, at the end,
//! `answered(machine.replies())`, then `Shared::report_stream`, which adds it all to the
//! listener's totals with the cause of the end ([`EndCause`]). An engine takes its listener's
//! counters from `Shared::listener_stats(i)` (`i`: the listener's index).
//!
//! A rule that ends a connection names its cause in the error it ends it with,
//! `EndCause::X.error(kind, text)` (the time-outs, the grace period; a bad PROXY header:
//! `EndCause::ProxyHeader`), and the end is counted by that cause, not by the error's text.

use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The counters of every listener of one or more servers: give one to
/// [`ServerBuilder::stats`](crate::ServerBuilder::stats) for each server, and read it (or hand
/// it to the Prometheus exporter). Cloning shares it.
///
/// ```
/// use socketkit::{Server, stats::Stats};
///
/// let stats = Stats::new();
/// let server = Server::builder()
///     .listen("tcp://127.0.0.1:0".parse()?)
///     .stats(&stats)
///     .bind()?;
/// let listeners = stats.listeners();
/// assert_eq!(listeners.len(), 1);
/// assert_eq!(listeners[0].service(), "upper");
/// assert_eq!(listeners[0].snapshot().connections_accepted, 0);
/// # drop(server);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Stats {
    listeners: Arc<Mutex<Vec<Arc<ListenerStats>>>>,
}

impl Stats {
    /// An empty registry.
    pub fn new() -> Stats {
        Stats::default()
    }

    /// Every listener registered so far, in the order their servers were bound.
    pub fn listeners(&self) -> Vec<Arc<ListenerStats>> {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Registers a listener's counters.
    pub(crate) fn add(&self, listener: Arc<ListenerStats>) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }
}

/// Why a stream connection ended: the `cause` label of `socketkit_connection_ends_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndCause {
    /// The peer closed its side (the 0-byte read), and the connection closed after it.
    Eof,
    /// The server closed it normally (the service said so, or shutdown found it between
    /// messages) without the peer's EOF.
    Closed,
    /// The idle time-out (`--idle-timeout`).
    Idle,
    /// The per-message deadline (`--message-timeout`).
    MessageTimeout,
    /// The peer read nothing for the write time-out (`--write-timeout`).
    WriteTimeout,
    /// The peer reset the connection or went away mid-write.
    Reset,
    /// Closed at the end of the shutdown grace period.
    GraceOver,
    /// A missing, garbled or late PROXY protocol header (`--proxy-protocol`).
    ProxyHeader,
    /// A failed TLS handshake on a `tls://` listener (or one cut short by the time-out).
    TlsHandshake,
    /// Any other I/O error, reported to `handle_error`.
    Error,
    /// The handler or service panicked.
    Panic,
}

impl EndCause {
    /// Every cause, in label order.
    pub const ALL: [EndCause; 11] = [
        EndCause::Eof,
        EndCause::Closed,
        EndCause::Idle,
        EndCause::MessageTimeout,
        EndCause::WriteTimeout,
        EndCause::Reset,
        EndCause::GraceOver,
        EndCause::ProxyHeader,
        EndCause::TlsHandshake,
        EndCause::Error,
        EndCause::Panic,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            EndCause::Eof => "eof",
            EndCause::Closed => "closed",
            EndCause::Idle => "idle",
            EndCause::MessageTimeout => "message_timeout",
            EndCause::WriteTimeout => "write_timeout",
            EndCause::Reset => "reset",
            EndCause::GraceOver => "grace_over",
            EndCause::ProxyHeader => "proxy_header",
            EndCause::TlsHandshake => "tls_handshake",
            EndCause::Error => "error",
            EndCause::Panic => "panic",
        }
    }

    /// An `io::Error` that ends a connection for this cause: the error is classified by its
    /// cause, not by its text, when the connection's end is counted.
    pub(crate) fn error(self, kind: std::io::ErrorKind, message: String) -> std::io::Error {
        std::io::Error::new(
            kind,
            CauseError {
                cause: self,
                message,
            },
        )
    }

    /// The cause an `io::Error` made with [`EndCause::error`] carries.
    pub(crate) fn of(error: &std::io::Error) -> Option<EndCause> {
        error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<CauseError>())
            .map(|e| e.cause)
    }
}

/// An error's text with the [`EndCause`] it stands for (see [`EndCause::error`]).
#[derive(Debug)]
struct CauseError {
    cause: EndCause,
    message: String,
}

impl fmt::Display for CauseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CauseError {}

/// Why a datagram got no answer: the `reason` label of `socketkit_datagrams_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Larger than the receive buffer (cut off by the kernel).
    Truncated,
    /// The loop guard recognised a reply loop with another server.
    Loop,
    /// Refused by the access list or `verify_request`.
    Refused,
    /// Over the per-source rate (`--datagram-rate`).
    Rate,
    /// The reply was over the datagram limit.
    Oversize,
    /// The reply could not be sent at once (full socket buffer): dropped rather than waited on.
    SendWouldBlock,
    /// Sending the reply failed otherwise.
    SendError,
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 7] = [
        DropReason::Truncated,
        DropReason::Loop,
        DropReason::Refused,
        DropReason::Rate,
        DropReason::Oversize,
        DropReason::SendWouldBlock,
        DropReason::SendError,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Loop => "loop",
            DropReason::Refused => "refused",
            DropReason::Rate => "rate",
            DropReason::Oversize => "oversize",
            DropReason::SendWouldBlock => "send_would_block",
            DropReason::SendError => "send_error",
        }
    }
}

/// Why a connection was refused before a byte was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// By `--allow`/`--deny` ([`AccessList`](crate::server::AccessList)).
    AccessList,
    /// By the program's `verify_request` hook.
    VerifyRequest,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Refusal; 2] = [Refusal::AccessList, Refusal::VerifyRequest];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::AccessList => "access_list",
            Refusal::VerifyRequest => "verify_request",
        }
    }
}

/// The upper bounds, in seconds, of the connection-duration histogram's buckets (and +Inf).
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 3600.0,
];

/// One listener's counters. Engines add to them; readers take a [`ListenerStats::snapshot`].
#[derive(Debug)]
pub struct ListenerStats {
    service: String,
    listener: String,
    stream: bool,
    accepted: AtomicU64,
    refused: [AtomicU64; Refusal::ALL.len()],
    limit_reached: AtomicU64,
    active: AtomicI64,
    ends: [AtomicU64; EndCause::ALL.len()],
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    requests: AtomicU64,
    datagrams_received: AtomicU64,
    datagrams_answered: AtomicU64,
    dropped: [AtomicU64; DropReason::ALL.len()],
    handler_errors: AtomicU64,
    panics: AtomicU64,
    /// Per bucket of [`DURATION_BUCKETS`], not cumulative; the last is +Inf.
    durations: [AtomicU64; DURATION_BUCKETS.len() + 1],
    duration_micros: AtomicU64,
}

/// A copy of a listener's counters at one instant (each counter read once, relaxed).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Stream connections accepted and served (not the refused ones).
    pub connections_accepted: u64,
    /// Connections refused before a byte was read, by [`Refusal::ALL`]'s order.
    pub connections_refused: [u64; Refusal::ALL.len()],
    /// How often every connection slot (`--max-connections`) was taken when the listener
    /// wanted to accept: new clients then wait in the listen queue (none is refused).
    pub connection_limit_reached: u64,
    /// Stream connections open now.
    pub connections_active: i64,
    /// Stream connections ended, by [`EndCause::ALL`]'s order.
    pub connection_ends: [u64; EndCause::ALL.len()],
    /// Bytes read from peers (streams once they end, datagrams as they come).
    pub bytes_in: u64,
    /// Bytes written to peers (likewise).
    pub bytes_out: u64,
    /// Replies of stream connections that have ended: each read (or EOF) the service answered
    /// with some bytes; a connection-per-request client's request is one.
    pub requests: u64,
    /// Datagrams received.
    pub datagrams_received: u64,
    /// Datagrams answered with a reply sent.
    pub datagrams_answered: u64,
    /// Datagrams dropped, by [`DropReason::ALL`]'s order.
    pub datagrams_dropped: [u64; DropReason::ALL.len()],
    /// Errors of handlers and services reported to `handle_error` (panics not included).
    pub handler_errors: u64,
    /// Panics of handlers and services.
    pub handler_panics: u64,
    /// The connection-duration histogram: cumulative counts per bucket of
    /// [`DURATION_BUCKETS`] (the last is +Inf, the total), and the sum in seconds.
    pub duration_buckets: [u64; DURATION_BUCKETS.len() + 1],
    /// The sum of the durations, in seconds.
    pub duration_seconds: f64,
}

impl ListenerStats {
    /// Counters for a listener at `listener` (an endpoint's text) running `service`; `stream`:
    /// whether it accepts connections (else it receives datagrams).
    pub(crate) fn new(service: &str, listener: &str, stream: bool) -> ListenerStats {
        ListenerStats {
            service: service.to_string(),
            listener: listener.to_string(),
            stream,
            accepted: AtomicU64::new(0),
            refused: Default::default(),
            limit_reached: AtomicU64::new(0),
            active: AtomicI64::new(0),
            ends: Default::default(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            datagrams_received: AtomicU64::new(0),
            datagrams_answered: AtomicU64::new(0),
            dropped: Default::default(),
            handler_errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            durations: Default::default(),
            duration_micros: AtomicU64::new(0),
        }
    }

    /// The service's name (the `service` label).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// The listener's endpoint as bound (the `listener` label).
    pub fn listener(&self) -> &str {
        &self.listener
    }

    /// Whether the listener accepts connections (else it receives datagrams).
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// The counters now.
    pub fn snapshot(&self) -> Snapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut buckets = [0; DURATION_BUCKETS.len() + 1];
        let mut total = 0;
        for (bucket, count) in buckets.iter_mut().zip(&self.durations) {
            total += load(count);
            *bucket = total;
        }
        Snapshot {
            connections_accepted: load(&self.accepted),
            connections_refused: self.refused.each_ref().map(load),
            connection_limit_reached: load(&self.limit_reached),
            connections_active: self.active.load(Ordering::Relaxed),
            connection_ends: self.ends.each_ref().map(load),
            bytes_in: load(&self.bytes_in),
            bytes_out: load(&self.bytes_out),
            requests: load(&self.requests),
            datagrams_received: load(&self.datagrams_received),
            datagrams_answered: load(&self.datagrams_answered),
            datagrams_dropped: self.dropped.each_ref().map(load),
            handler_errors: load(&self.handler_errors),
            handler_panics: load(&self.panics),
            duration_buckets: buckets,
            duration_seconds: load(&self.duration_micros) as f64 / 1e6,
        }
    }

    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn limit_reached(&self) {
        self.limit_reached.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection opens (+1) or closes (-1).
    pub(crate) fn active(&self, delta: i64) {
        self.active.fetch_add(delta, Ordering::Relaxed);
    }

    /// A stream connection ended: its cause, traffic, replies and duration.
    pub(crate) fn ended(
        &self,
        cause: EndCause,
        bytes: (u64, u64),
        requests: u64,
        duration: Duration,
    ) {
        self.ends[cause as usize].fetch_add(1, Ordering::Relaxed);
        self.traffic(bytes.0, bytes.1);
        if requests > 0 {
            self.requests.fetch_add(requests, Ordering::Relaxed);
        }
        match cause {
            EndCause::Error => self.handler_error(),
            EndCause::Panic => self.panicked(),
            _ => {}
        }
        let seconds = duration.as_secs_f64();
        let bucket = DURATION_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(DURATION_BUCKETS.len());
        self.durations[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.duration_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Bytes in and out (a stream's at its end, a datagram's as it comes).
    pub(crate) fn traffic(&self, bytes_in: u64, bytes_out: u64) {
        if bytes_in > 0 {
            self.bytes_in.fetch_add(bytes_in, Ordering::Relaxed);
        }
        if bytes_out > 0 {
            self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        }
    }

    /// A datagram of `len` bytes arrived.
    pub(crate) fn datagram_received(&self, len: usize) {
        self.datagrams_received.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
    }

    /// A reply of `len` bytes went out.
    pub(crate) fn datagram_answered(&self, len: usize) {
        self.datagrams_answered.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(len as u64, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self, why: DropReason) {
        self.dropped[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A handler or service failed (not a panic); reported to `handle_error`.
    pub(crate) fn handler_error(&self) {
        self.handler_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn panicked(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_survives_the_io_error_that_carries_it() {
        let e = EndCause::MessageTimeout.error(std::io::ErrorKind::TimedOut, "slow".into());
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(e.to_string(), "slow");
        assert_eq!(EndCause::of(&e), Some(EndCause::MessageTimeout));
        assert_eq!(EndCause::of(&std::io::ErrorKind::TimedOut.into()), None);
    }

    #[test]
    fn durations_fall_in_cumulative_buckets() {
        let stats = ListenerStats::new("upper", "tcp://127.0.0.1:1", true);
        stats.ended(EndCause::Eof, (3, 4), 1, Duration::from_millis(2));
        stats.ended(EndCause::Idle, (0, 0), 0, Duration::from_secs(7200));
        let snap = stats.snapshot();
        assert_eq!(snap.duration_buckets[0], 0, "2 ms is over 1 ms");
        assert_eq!(snap.duration_buckets[1], 1, "and within 5 ms");
        assert_eq!(snap.duration_buckets[DURATION_BUCKETS.len() - 1], 1);
        assert_eq!(snap.duration_buckets[DURATION_BUCKETS.len()], 2, "+Inf");
        assert!((snap.duration_seconds - 7200.002).abs() < 1e-6);
        assert_eq!((snap.bytes_in, snap.bytes_out, snap.requests), (3, 4, 1));
        assert_eq!(snap.connection_ends[EndCause::Idle as usize], 1);
    }
}
