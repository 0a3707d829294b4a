//! The thread engines' one way of waiting: `poll` on a descriptor beside a trigger's, with a
//! time-out, so shutdown and deadlines wake a blocked accept, receive, read or write at once.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use crate::shutdown::Trigger;

/// What ended a wait in [`wait_readable`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The descriptor is readable (or has an error or hang-up to report).
    Ready,
    /// The trigger fired.
    Triggered,
    /// The time-out passed.
    TimedOut,
}

/// Waits until `fd` is readable, `trigger` fires, or `timeout` passes. Blocking engines call
/// this before every accept, receive and read, so shutdown and time-outs need no polling.
pub(crate) fn wait_readable(
    fd: BorrowedFd<'_>,
    trigger: &Trigger,
    timeout: Option<Duration>,
) -> io::Result<Woken> {
    let deadline = timeout.map(|t| Instant::now() + t);
    wait_until_ready(fd, PollFlags::POLLIN, trigger, deadline)
}

/// Waits until `fd` is ready for `events` (or has an error or hang-up to report), `trigger`
/// fires, or `deadline` passes (`None`: no deadline).
pub(crate) fn wait_until_ready(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    trigger: &Trigger,
    deadline: Option<Instant>,
) -> io::Result<Woken> {
    loop {
        if trigger.is_fired() {
            return Ok(Woken::Triggered);
        }
        let wait = match deadline {
            None => PollTimeout::NONE,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up so a sub-millisecond remainder does not spin.
                let ms = left.as_millis() + u128::from(left.subsec_nanos() % 1_000_000 != 0);
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds = [
            PollFd::new(fd, events),
            PollFd::new(trigger.fd(), PollFlags::POLLIN),
        ];
        match nix::poll::poll(&mut fds, wait) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(Woken::TimedOut);
                }
            }
            Ok(_) => {
                if fds[1].any().unwrap_or(false) {
                    return Ok(Woken::Triggered);
                }
                return Ok(Woken::Ready);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}
