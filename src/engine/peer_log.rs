//! What the logs say about peers, on every engine: refused peers (info, rate-limited, so a
//! flood of refusals cannot flood the log), each datagram sender's first datagram, and each
//! stream's bytes in and out and duration at close (debug, `-v`, as `ncat -v` reports them).

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::service::Address;
use crate::stats::{EndCause, ListenerStats};

/// Logs refused peers at info level, at most one line per [`RefusalLog::INTERVAL`]; that line
/// counts the refusals logged only at debug level since the previous one (printk's "N
/// callbacks suppressed"). Shared by every listener of a server.
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    state: Mutex<RefusalState>,
}

#[derive(Debug, Default)]
struct RefusalState {
    /// When the last info line was written.
    last: Option<Instant>,
    /// Refusals since then, logged at debug level only.
    suppressed: u64,
}

impl RefusalLog {
    /// At most one info line per interval: enough to see that someone is being refused, and
    /// a scan or a flood from a denied range costs six lines a minute.
    pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

    /// Logs that `peer` was refused, and `why`.
    pub(crate) fn refused(&self, peer: &Address, why: &str) {
        match self.note(Instant::now()) {
            Some(0) => tracing::info!(%peer, "refused {why}"),
            Some(n) => tracing::info!(
                %peer,
                "refused {why} ({n} more refused since the last such line)"
            ),
            None => tracing::debug!(%peer, "refused {why}"),
        }
    }

    /// Counts a refusal at `now`. `Some(suppressed)` when an info line is due, with the number
    /// of refusals not logged at info level since the previous one; `None` otherwise.
    fn note(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state
            .last
            .is_some_and(|last| now.duration_since(last) < Self::INTERVAL)
        {
            state.suppressed += 1;
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.suppressed))
    }
}

/// The datagram senders seen recently, so `-v` logs each one's first datagram and not every
/// datagram. Bounded: the oldest sender is forgotten first (and logged again if it returns),
/// so a flood from many addresses costs at most [`Senders::CAPACITY`] entries.
#[derive(Debug)]
pub(crate) struct Senders {
    seen: HashSet<Address>,
    order: VecDeque<Address>,
    capacity: usize,
}

impl Senders {
    /// About 300 KB at most, and more distinct peers than a debugging session reads.
    pub(crate) const CAPACITY: usize = 4096;

    pub(crate) fn new() -> Senders {
        Senders::with_capacity(Senders::CAPACITY)
    }

    fn with_capacity(capacity: usize) -> Senders {
        Senders {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Logs a datagram of `len` bytes from `peer` at debug level if it is the first from this
    /// sender. Costs nothing when debug logs are off.
    pub(crate) fn received(&mut self, peer: &Address, len: usize) {
        if tracing::enabled!(tracing::Level::DEBUG) && self.is_new(peer) {
            tracing::debug!(%peer, "first datagram from this sender ({len} bytes)");
        }
    }

    /// Whether `peer` is not in the table; it is from now on.
    fn is_new(&mut self, peer: &Address) -> bool {
        if self.seen.contains(peer) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(peer.clone());
        self.order.push_back(peer.clone());
        true
    }
}

/// One stream connection's traffic, for its close line (`12 bytes in, 12 bytes out in 1.3ms`)
/// and its listener's counters ([`crate::stats`]), to which it is added once, at the end
/// ([`Traffic::ended`]). Atomic so that a handler's reader and writer, which may live on
/// different threads, can both count; uncontended, an add costs a few nanoseconds beside a
/// system call. It counts its connection active from [`Traffic::new`] until it drops.
#[derive(Debug)]
pub(crate) struct Traffic {
    began: Instant,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Replies the service gave (set once, at the end, from the connection machine).
    replies: AtomicU64,
    /// Whether the peer closed its side (the 0-byte read).
    eof: AtomicBool,
    stats: Arc<ListenerStats>,
}

impl Traffic {
    /// A connection of the listener counted by `stats` that begins now.
    pub(crate) fn new(stats: &Arc<ListenerStats>) -> Traffic {
        stats.active(1);
        Traffic {
            began: Instant::now(),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            replies: AtomicU64::new(0),
            eof: AtomicBool::new(false),
            stats: stats.clone(),
        }
    }

    /// `n` bytes were read from the peer.
    pub(crate) fn received(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` bytes were written to the peer.
    pub(crate) fn sent(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// The peer closed its side (a read returned 0 bytes).
    pub(crate) fn eof(&self) {
        self.eof.store(true, Ordering::Relaxed);
    }

    /// The service answered `replies` reads (the connection machine's count, at the end).
    pub(crate) fn answered(&self, replies: u64) {
        self.replies.store(replies, Ordering::Relaxed);
    }

    /// The counters of the connection's listener.
    #[cfg(feature = "proxy")]
    pub(crate) fn stats(&self) -> &ListenerStats {
        &self.stats
    }

    /// Whether the peer's EOF was seen.
    pub(crate) fn saw_eof(&self) -> bool {
        self.eof.load(Ordering::Relaxed)
    }

    /// Adds this connection to its listener's counters, ended for `cause`.
    pub(crate) fn ended(&self, cause: EndCause) {
        self.stats.ended(
            cause,
            (
                self.bytes_in.load(Ordering::Relaxed),
                self.bytes_out.load(Ordering::Relaxed),
            ),
            self.replies.load(Ordering::Relaxed),
            self.began.elapsed(),
        );
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stats.active(-1);
    }
}

impl fmt::Display for Traffic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} bytes in, {} bytes out in {:.1?}",
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
            self.began.elapsed()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_refusal_line_per_interval_counts_the_ones_it_left_out() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        assert_eq!(log.note(t0), Some(0), "the first refusal is logged");
        for ms in 1..=5 {
            assert_eq!(log.note(t0 + Duration::from_millis(ms)), None);
        }
        let next = t0 + RefusalLog::INTERVAL;
        assert_eq!(
            log.note(next),
            Some(5),
            "the next line counts the five left out"
        );
        assert_eq!(log.note(next + Duration::from_secs(1)), None);
        assert_eq!(log.note(next + RefusalLog::INTERVAL * 3), Some(1));
    }

    #[test]
    fn a_sender_is_new_once_until_the_bounded_table_forgets_it() {
        let mut senders = Senders::with_capacity(2);
        let a = Address::Inet("127.0.0.1:1000".parse().unwrap());
        let b = Address::Inet("127.0.0.1:1001".parse().unwrap());
        let c = Address::Unix(Some("/tmp/c.sock".into()));
        assert!(senders.is_new(&a));
        assert!(
            !senders.is_new(&a),
            "a second datagram from the same sender"
        );
        assert!(senders.is_new(&b));
        assert!(senders.is_new(&c)); // the table is full: the oldest, a, is forgotten
        assert_eq!(senders.seen.len(), 2);
        assert_eq!(senders.order.len(), 2);
        assert!(!senders.is_new(&c));
        assert!(senders.is_new(&a), "forgotten, so new again");
    }

    #[test]
    fn traffic_reads_like_ncat() {
        let stats = Arc::new(ListenerStats::new("upper", "tcp://127.0.0.1:1", true));
        let traffic = Traffic::new(&stats);
        assert_eq!(stats.snapshot().connections_active, 1);
        traffic.received(5);
        traffic.received(7);
        traffic.sent(12);
        let text = traffic.to_string();
        assert!(text.starts_with("12 bytes in, 12 bytes out in "), "{text}");
        traffic.answered(2);
        traffic.ended(EndCause::Eof);
        drop(traffic);
        let snap = stats.snapshot();
        assert_eq!((snap.bytes_in, snap.bytes_out, snap.requests), (12, 12, 2));
        assert_eq!(snap.connections_active, 0, "no longer active once dropped");
        assert_eq!(snap.connection_ends[EndCause::Eof as usize], 1);
    }
}
