//! The connection permits of one uring server, shared by its threads: `max_connections` in
//! all; a thread that cannot get one stops accepting and is woken when one comes back.

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
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Permit(self.clone()))
    }

    /// A permit past the limit: for the listen queue drained at shutdown (as the other engines).
    pub(super) fn acquire_at_shutdown(self: &Arc<Common>) -> Permit {
        self.open.fetch_add(1, Ordering::AcqRel);
        Permit(self.clone())
    }

    pub(super) fn has_free(&self) -> bool {
        self.free() > 0
    }

    pub(super) fn free(&self) -> usize {
        self.max.saturating_sub(self.open.load(Ordering::Acquire))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        if self.0.blocked.load(Ordering::Acquire) > 0 {
            for waker in &self.0.wakers {
                // Full: a wake-up is pending already.
                let _ = io::Write::write(&mut &*waker, &[1]);
            }
        }
    }
}
