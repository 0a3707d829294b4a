//! Shutdown: a handle that stops a server from any thread or task, waking its loops at once.

use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    pub(crate) async fn fired(&self) {
        self.token.cancelled().await
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
