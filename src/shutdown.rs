//! Shutdown: a handle that stops a server from any thread or task, waking its loops at once.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Poll, Waker};

use tokio_util::sync::CancellationToken;

/// A one-shot signal that wakes both async tasks (a [`CancellationToken`]) and blocking loops
/// (a socket pair whose read end becomes readable, polled beside the listener), so nobody polls
/// on a timer. socketserver polls every 0.5 s and says itself that this "reduces our
/// responsiveness ... and wastes cpu".
#[derive(Debug)]
pub(crate) struct Trigger {
    token: CancellationToken,
    /// The same fact as the token, readable without its lock: blocking writers check it
    /// before every write.
    fired: AtomicBool,
    /// Becomes readable (and stays so: it is never drained) once the trigger fires.
    wake_rx: UnixStream,
    wake_tx: UnixStream,
}

impl Trigger {
    pub(crate) fn new() -> io::Result<Trigger> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        Ok(Trigger {
            token: CancellationToken::new(),
            fired: AtomicBool::new(false),
            wake_rx,
            wake_tx,
        })
    }

    /// Fires the trigger; later calls do nothing.
    pub(crate) fn fire(&self) {
        if !self.fired.swap(true, Ordering::SeqCst) {
            self.token.cancel();
            // One byte is enough: level-triggered poll sees it for every waiter. A full buffer
            // (WouldBlock) means a byte is already there.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }

    pub(crate) fn is_fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }

    /// A descriptor that is readable once the trigger has fired, for `poll`.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.wake_rx.as_fd()
    }

    /// Completes once the trigger has fired.
    ///
    /// Cheap to poll again: a connection's task polls this beside its session at every wake-up,
    /// and the token's own future takes two mutexes shared by every connection at each poll
    /// (the token's state and its waiter list). So once registered, a poll with the same waker
    /// reads one atomic flag instead; `fire` sets that flag before it wakes the waiters.
    pub(crate) async fn fired(&self) {
        let mut cancelled = std::pin::pin!(self.token.cancelled());
        let mut registered: Option<Waker> = None;
        std::future::poll_fn(|cx| {
            if self.is_fired() {
                return Poll::Ready(());
            }
            if registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                return Poll::Pending;
            }
            let polled = cancelled.as_mut().poll(cx);
            if polled.is_pending() {
                registered = Some(cx.waker().clone());
            }
            polled
        })
        .await
    }
}

/// Stops a server: it stops accepting at once and gives connections in flight the grace period
/// (see [`crate::Limits::grace`]) to finish. Cheap to clone; usable from any thread or task,
/// before or during serving, any number of times.
///
/// # Examples
///
/// ```
/// use socketkit::Server;
///
/// let server = Server::builder().listen("tcp://127.0.0.1:0".parse()?).bind()?;
/// let stop = server.shutdown_handle();
/// stop.shutdown(); // before serving: serve_forever returns at once
/// stop.shutdown(); // again: no effect
/// server.serve_forever()?;
/// # Ok::<(), socketkit::Error>(())
/// ```
#[derive(Debug, Clone)]
#[doc(alias = "shutdown")]
pub struct ShutdownHandle {
    pub(crate) stop: Arc<Trigger>,
}

impl ShutdownHandle {
    /// Asks the server to stop. Returns at once; `serve_forever` returns once the drain is done.
    pub fn shutdown(&self) {
        self.stop.fire();
    }

    /// Whether [`ShutdownHandle::shutdown`] has been called.
    pub fn is_shutdown(&self) -> bool {
        self.stop.is_fired()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Context, Wake};

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn woken(count: &Arc<Count>) -> usize {
        count.0.load(Ordering::SeqCst)
    }

    #[test]
    fn fired_polled_again_and_again_still_wakes_its_task_when_the_trigger_fires() {
        let trigger = Trigger::new().unwrap();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fired = std::pin::pin!(trigger.fired());
        for _ in 0..3 {
            assert!(fired.as_mut().poll(&mut cx).is_pending());
        }
        trigger.fire();
        assert_eq!(woken(&count), 1);
        assert!(fired.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn fired_wakes_the_latest_waker_it_was_polled_with() {
        let trigger = Trigger::new().unwrap();
        let (first, second) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let mut fired = std::pin::pin!(trigger.fired());
        for count in [&first, &second] {
            let waker = Waker::from(count.clone());
            assert!(
                fired
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending()
            );
        }
        trigger.fire();
        assert_eq!(woken(&second), 1, "the task that polled last is woken");
        assert!(trigger.is_fired());
        // Fired already: a new wait completes at its first poll.
        let waker = Waker::from(first.clone());
        let mut again = std::pin::pin!(trigger.fired());
        assert!(
            again
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_ready()
        );
    }
}
