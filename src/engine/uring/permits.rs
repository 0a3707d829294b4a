//! The connection permits of one uring server, shared by its threads: `max_connections` in
//! all; a thread that cannot get one stops accepting and is woken when one comes back.
//!
//! The wake-up is a Dekker handshake on two counters: a thread that finds no permit first
//! counts itself in `blocked`, then looks at `open` again ([`Common::block`]); a permit's drop
//! first gives it back in `open`, then looks at `blocked`. All four accesses are `SeqCst`, so
//! they fall in one order: either the drop sees the blocked thread (and wakes it) or the
//! blocked thread sees the permit back (and does not sleep). With acquire/release alone both
//! may read the old value, and a thread that checked before it counted itself could sleep with
//! a permit free and no wake-up coming.

use std::io;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What the threads of one server share: the connection permits and each thread's wake-up.
pub(super) struct Common {
    pub(super) max: usize,
    pub(super) open: AtomicUsize,
    /// Threads that hold accepted connections (or stopped accepting) for want of a permit.
    pub(super) blocked: AtomicUsize,
    /// Each thread's wake-up socket (written to when a permit comes back while some thread
    /// is blocked).
    pub(super) wakers: Vec<UnixStream>,
}

/// One connection's permit, given back on drop.
pub(super) struct Permit(Arc<Common>);

impl Common {
    pub(super) fn try_acquire(self: &Arc<Common>) -> Option<Permit> {
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(self.clone()))
    }

    /// A permit past the limit: for the listen queue drained at shutdown (as the other engines).
    pub(super) fn acquire_at_shutdown(self: &Arc<Common>) -> Permit {
        self.open.fetch_add(1, Ordering::SeqCst);
        Permit(self.clone())
    }

    /// Counts a thread that found no permit among the blocked ones (woken when one comes
    /// back), then looks again: `true` when a permit is free by now, which the drop that
    /// freed it may have missed (see the module docs), so the thread must not sleep on it.
    pub(super) fn block(&self) -> bool {
        self.blocked.fetch_add(1, Ordering::SeqCst);
        self.has_free()
    }

    /// A blocked thread that got going again.
    pub(super) fn unblock(&self) {
        self.blocked.fetch_sub(1, Ordering::SeqCst);
    }

    pub(super) fn has_free(&self) -> bool {
        self.free() > 0
    }

    pub(super) fn free(&self) -> usize {
        self.max.saturating_sub(self.open.load(Ordering::SeqCst))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        // Given back, then the blocked threads looked at, in this order (see the module docs).
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        if self.0.blocked.load(Ordering::SeqCst) > 0 {
            for waker in &self.0.wakers {
                // Full: a wake-up is pending already.
                let _ = io::Write::write(&mut &*waker, &[1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(max: usize) -> (Arc<Common>, UnixStream) {
        let (waker, woken) = UnixStream::pair().unwrap();
        woken.set_nonblocking(true).unwrap();
        let common = Common {
            max,
            open: AtomicUsize::new(0),
            blocked: AtomicUsize::new(0),
            wakers: vec![waker],
        };
        (Arc::new(common), woken)
    }

    fn woken(woken: &UnixStream) -> bool {
        io::Read::read(&mut &*woken, &mut [0; 8]).is_ok_and(|n| n > 0)
    }

    /// The interleaving that lost the wake-up, in order on one thread: a worker finds no
    /// permit; the last permit is dropped while no worker is counted blocked, so no wake-up
    /// is written; the worker then counts itself blocked. It must see the permit then.
    #[test]
    fn a_worker_that_blocks_after_the_last_drop_looked_sees_the_permit() {
        let (common, wake) = common(1);
        let held = common.try_acquire().expect("the one permit");
        assert!(common.try_acquire().is_none());
        drop(held);
        assert!(!woken(&wake), "no worker was blocked yet");
        assert!(
            common.block(),
            "the permit came back: the worker must not sleep"
        );
        assert!(common.try_acquire().is_some());
    }

    #[test]
    fn a_drop_wakes_a_worker_counted_blocked() {
        let (common, wake) = common(1);
        let held = common.try_acquire().expect("the one permit");
        assert!(!common.block(), "no permit free");
        drop(held);
        assert!(woken(&wake));
        common.unblock();
        let held = common.try_acquire().expect("the permit back");
        drop(held);
        assert!(!woken(&wake), "nobody blocked: no wake-up");
    }
}
