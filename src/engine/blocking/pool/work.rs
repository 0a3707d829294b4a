//! What the pool's workers take from their queue, in a file of its own so that the pool and
//! its poller, which both send work, do not import each other for it.

use super::pooled::Pooled;

/// A job that runs to its end on one worker.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

/// What a worker takes from the queue.
pub(super) enum Work {
    /// Run to the end: a blocking handler's session, a datagram handler's request, or the
    /// first round of a new connection (its session is made there, not on the listener).
    Run(Job),
    /// A connection the poller found ready: serve it until it would block, then park it.
    Ready(Box<Pooled>),
}
