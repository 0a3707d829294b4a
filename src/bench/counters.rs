//! What every worker adds up while a run goes: the request and failure counters (read live by
//! the progress display) and the latency histogram's shape.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// Why a request failed with a connection or I/O error: the keys of `error_kinds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// The connection was refused (or, for UDP, the port was unreachable).
    Refused,
    /// The server reset the connection before any reply arrived on it: refused in all but name.
    Reset,
    /// The server closed (or reset) the connection between replies, with a request outstanding.
    Closed,
    /// The connection ended (closed or reset) in the middle of a reply.
    Truncated,
    /// No route to the host or network.
    Unreachable,
    /// The TLS handshake failed (`tls://`).
    Tls,
    /// Any other I/O error.
    Other,
}

impl Failure {
    /// Every kind, in the order reports list them.
    pub const ALL: [Failure; 7] = [
        Failure::Refused,
        Failure::Reset,
        Failure::Closed,
        Failure::Truncated,
        Failure::Unreachable,
        Failure::Tls,
        Failure::Other,
    ];

    /// The kind's key in `error_kinds`.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Reset => "reset",
            Failure::Closed => "closed",
            Failure::Truncated => "truncated",
            Failure::Unreachable => "unreachable",
            Failure::Tls => "tls",
            Failure::Other => "other",
        }
    }

    /// What happened, for a person.
    pub fn describe(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Reset => "reset by the server before any reply",
            Failure::Closed => "closed by the server with a request unanswered",
            Failure::Truncated => "ended by the server in the middle of a reply",
            Failure::Unreachable => "unreachable",
            Failure::Tls => "TLS handshakes failed",
            Failure::Other => "other errors",
        }
    }

    /// Whether the server turned the connection away: a refusal, or a reset before any reply
    /// (exit code 4).
    pub fn is_refusal(self) -> bool {
        matches!(self, Failure::Refused | Failure::Reset)
    }

    pub(super) fn index(self) -> usize {
        Failure::ALL
            .iter()
            .position(|k| *k == self)
            .expect("listed")
    }
}

/// Live counters, shared by the workers and read by a progress display.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests answered with the expected reply.
    pub ok: AtomicU64,
    /// Replies that differed from what was expected.
    pub mismatches: AtomicU64,
    /// Connection or I/O errors (refused, reset, closed early), by kind in `error_kinds`.
    pub errors: AtomicU64,
    /// Requests whose connection or reply did not come within the timeout (streams).
    pub timeouts: AtomicU64,
    /// Datagrams never answered within the timeout (UDP).
    pub losses: AtomicU64,
    /// Bytes written.
    pub bytes_sent: AtomicU64,
    /// Bytes read.
    pub bytes_received: AtomicU64,
    /// Connections open now (`idle`).
    pub open: AtomicU64,
    /// TLS handshakes completed (`tls://`).
    pub tls_handshakes: AtomicU64,
    /// Latencies and schedule lags (`--rate` only) by second of the run, from its start: what
    /// the workers flush as each of their seconds ends. The run's whole histograms are their
    /// sum, so the per-second figures (`--plot`, `--hdr-log`) cost no second copy per worker.
    pub(crate) seconds: Mutex<Vec<(Histogram<u64>, Histogram<u64>)>>,
    /// `errors` by [`Failure`], in `Failure::ALL`'s order.
    pub(crate) kinds: [AtomicU64; Failure::ALL.len()],
    /// The first error's text.
    pub(crate) first_error: Mutex<Option<String>>,
    /// Failures of a connection that had answered exactly one request: a server that closes
    /// after one reply, as the slides' servers do.
    pub(crate) after_one_reply: AtomicU64,
    /// Mismatches whose reply is what the other `--expect` wants.
    pub(crate) other_expect: AtomicU64,
}

impl Counters {
    pub(crate) fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one failed request: its kind, and its text if it is the first.
    pub(crate) fn fail(&self, kind: Failure, text: impl FnOnce() -> String) {
        self.add(&self.kinds[kind.index()], 1);
        self.add(&self.errors, 1);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(text());
        }
    }

    /// Merges one worker's latencies and schedule lags (nanoseconds) of second `second`.
    pub(crate) fn merge(&self, second: usize, latencies: &Histogram<u64>, lags: &Histogram<u64>) {
        if latencies.is_empty() && lags.is_empty() {
            return;
        }
        let mut seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        while seconds.len() <= second {
            seconds.push((histogram(), histogram()));
        }
        let _ = seconds[second].0.add(latencies);
        let _ = seconds[second].1.add(lags);
    }

    /// Requests finished so far, whatever their outcome.
    pub fn done(&self) -> u64 {
        [
            &self.ok,
            &self.mismatches,
            &self.errors,
            &self.timeouts,
            &self.losses,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// A new latency histogram in nanoseconds, three significant digits, from 1 µs and growing as
/// far as its largest value (at most 60 s, where the workers clamp). Grown on demand rather
/// than sized for 60 s at once (147 KB): a run keeps one per second for `--plot` and
/// `--hdr-log`, and a second whose latencies stay under 1 ms takes 16 KB.
pub(crate) fn histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1_000, 2_000, 3).expect("valid histogram bounds");
    h.auto(true);
    h
}
