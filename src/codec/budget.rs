//! The memory budget of framed input: what every framed session of the process holds of
//! messages not yet complete, bounded by [`Limits::max_buffered`](crate::Limits::max_buffered).
//!
//! Per-connection limits (`max_frame`, `max_line`) do not bound a server: 10,000 peers that
//! each send most of a 1 MiB frame and then stall would hold 10 GB. So the bytes held are
//! counted in one process-wide counter, and a session that would take it past the budget is
//! closed instead (see [`Budget::hold`] for why closing, not pausing).

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes of buffered input each connection may hold outside the budget. A message that comes
/// in a few small reads (a length header written apart from its payload, a line typed by a
/// person) is then never refused, even when peers that stall mid-frame have taken the whole
/// budget. 10,000 connections hold at most 40 MB this way.
pub(crate) const UNCOUNTED_BYTES: usize = 4 * 1024;

/// The bytes held by every framed session in this process, whichever server runs it: the
/// budget is the process's, as `serve` runs several services in one process.
static PROCESS_BUFFERED: AtomicUsize = AtomicUsize::new(0);

/// One server's view of the process's buffered-input counter: its limit and the counter.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    limit: usize,
    used: &'static AtomicUsize,
}

impl Budget {
    /// The process's counter, with this server's limit.
    pub(crate) fn process(limit: usize) -> Budget {
        Budget {
            limit,
            used: &PROCESS_BUFFERED,
        }
    }

    /// A counter of its own, for unit tests that must not share the process's.
    #[cfg(test)]
    pub(crate) fn isolated(limit: usize) -> Budget {
        Budget {
            limit,
            used: Box::leak(Box::new(AtomicUsize::new(0))),
        }
    }

    /// Moves a session's charge from `*charged` to `want` bytes. Shrinking always succeeds;
    /// growing succeeds only while the process's total stays within the limit, and otherwise
    /// leaves the charge as it was and returns `false`: the session is then closed.
    ///
    /// Closing rather than pausing reads is deliberate: a paused connection waits for others
    /// to finish their frames, and when the budget is held by peers that stall on purpose
    /// every paused one would wait for the message time-out (60 s) with its reads stopped.
    /// Closing the connection that grows past the budget keeps the rule local and immediate;
    /// peers whose messages arrive whole in a read (or within [`UNCOUNTED_BYTES`]) are never
    /// charged, so they are served throughout.
    pub(crate) fn hold(&self, charged: &mut usize, want: usize) -> bool {
        if want == *charged {
            // The common case, after every message of a session that holds nothing: no write
            // to the counter every connection shares.
            return true;
        }
        if want < *charged {
            self.used.fetch_sub(*charged - want, Ordering::Relaxed);
            *charged = want;
            return true;
        }
        let more = want - *charged;
        let grown = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(more).filter(|total| *total <= self.limit)
            });
        if grown.is_ok() {
            *charged = want;
        }
        grown.is_ok()
    }

    /// The limit, for error messages.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// The bytes held now across the process (tests).
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_stops_at_the_limit_and_shrinking_gives_back() {
        let budget = Budget::isolated(100);
        let (mut a, mut b) = (0, 0);
        assert!(budget.hold(&mut a, 60));
        assert!(!budget.hold(&mut b, 41), "60 + 41 is over the limit");
        assert_eq!(b, 0, "a refused charge leaves the old one");
        assert!(budget.hold(&mut b, 40));
        assert!(budget.hold(&mut a, 10));
        assert!(budget.hold(&mut b, 90));
        assert_eq!(budget.used(), 100);
        assert!(budget.hold(&mut a, 0) && budget.hold(&mut b, 0));
        assert_eq!(budget.used(), 0);
    }
}
