//! How a client's I/O failures and waits that ran out become [`Error`]s: one wording for the
//! stream, datagram and broadcast clients.

use std::io;
use std::time::Duration;

use crate::error::Error;

pub(super) fn io_err(context: &str, e: io::Error) -> Error {
    Error::io(context.to_string(), e)
}

pub(super) fn max_time_passed(total: Duration) -> Error {
    Error::TimedOut {
        what: "the exchange to end (max time)",
        after: total,
    }
}

pub(super) fn timed_out(timeout: Duration) -> Error {
    Error::TimedOut {
        what: "a reply",
        after: timeout,
    }
}

pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

pub(super) fn no_address_for_bind() -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrNotAvailable,
        "no address of the --bind address's family",
    )
}
