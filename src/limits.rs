//! Every limit a server enforces, in one place, each default with its reason.

use std::time::Duration;

/// The largest UDP payload over IPv4: 65,535 minus the 8-byte UDP and 20-byte IP headers.
pub const MAX_DATAGRAM_BYTES: usize = 65_507;

/// The largest UDP payload over IPv6 (without jumbograms): 65,535 minus the 8-byte UDP header,
/// since IPv6's length field does not count its own 40-byte header.
pub const MAX_DATAGRAM_BYTES_V6: usize = 65_527;

/// The longest time-out (and grace period) socketkit takes: 365 days. Longer means "never" to
/// a person, and a deadline this far ahead still fits every clock the engines and clients add
/// it to (a larger one could overflow `Instant` and panic). There is no zero "none": a time-out
/// is always more than zero.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Limits a server enforces. Every field has a documented default (see [`Limits::default`]).
///
/// ```
/// use socketkit::Limits;
/// let limits = Limits::default();
/// assert_eq!(limits.backlog, 128);
/// assert_eq!(limits.max_datagram, socketkit::MAX_DATAGRAM_BYTES_V6);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Length of the kernel's queue of connections not yet accepted (`listen(backlog)`).
    /// Default 128: Linux's historic `SOMAXCONN`, which the kernel caps it to anyway on older
    /// systems. The slides use 5, sized for a lab exercise, not for load.
    pub backlog: u32,
    /// A connection that sends nothing for this long is closed. Default 300 s, the order of
    /// nginx's and HAProxy's client time-outs: long enough for a person typing into `client`.
    pub idle_timeout: Duration,
    /// A message begun (part of a line or frame, a character cut in two) must be complete
    /// within this time, however steadily its bytes trickle in: a peer that sends one byte just
    /// inside every idle time-out cannot hold a connection forever. Default 60 s, nginx's
    /// `client_header_timeout`. Raw streams answer every read at once, so only a cut character
    /// is ever pending there.
    pub message_timeout: Duration,
    /// A write that makes no progress for this long (a peer that stops reading) closes the
    /// connection. Default 60 s, nginx's `send_timeout`: measured between two successive
    /// writes, so a slow reader is served, a stalled one is not.
    pub write_timeout: Duration,
    /// After `shutdown()`, connections in flight get this long to finish before they are
    /// closed. Default 5 s.
    pub grace: Duration,
    /// Datagrams answered per second per source (an IPv4 address whatever its port, an IPv6
    /// /64, or a Unix socket's name), with a burst of one second's worth; 0 for no limit. Beyond it a
    /// datagram is dropped unanswered, but only while another source has been heard from in
    /// the last 10 seconds: a source alone (a benchmark, a lone client) takes nothing from anybody
    /// and is never limited. Default 10,000: far above what a client that waits for its
    /// answers sends over a network, far below a flood.
    pub datagram_rate: u32,
    /// The largest datagram reply sent. A larger reply is not sent, and a log line says so.
    /// On `unixpacket://` connections it is also the largest record read (or
    /// [`Limits::read_buffer`] if that is larger): a larger record closes its connection, with
    /// a log line, unanswered.
    /// Each family's own limit applies too: a UDP reply is at most [`MAX_DATAGRAM_BYTES`] over
    /// IPv4 and [`MAX_DATAGRAM_BYTES_V6`] over IPv6. Default [`MAX_DATAGRAM_BYTES_V6`], so that
    /// only the family's limit bites.
    pub max_datagram: usize,
    /// Connections served at once, on every engine. At the limit the server stops accepting
    /// until a connection ends, so new clients wait in the kernel's listen queue (HAProxy's
    /// behaviour) rather than costing a descriptor or a thread. Default 10,000: well under the
    /// usual descriptor limits once raised, and far above what a test server meets.
    pub max_connections: usize,
    /// Worker threads of the `pool` engine. Default 32. A service's connection holds a worker
    /// only while it has bytes to read or a reply to write (its poller holds it otherwise), so
    /// this bounds the connections served at the same instant, not those open. A blocking
    /// stream handler's session holds a worker to its end, so with handlers this is how many
    /// sessions run at once; more wait, accepted, until a worker is free (at most
    /// `max_connections` in all).
    pub workers: usize,
    /// Threads of the `uring` engine (one ring each) and of the `async` engine's runtime.
    /// Default 0: as many as the CPUs this process may run on (`sched_getaffinity`).
    pub threads: usize,
    /// The longest line in `line` framing, terminator excluded. Default 64 KiB: far above any
    /// line a person types, and small enough that a peer that never sends a newline costs
    /// little. A longer line closes its connection with a log line.
    pub max_line: usize,
    /// The largest frame in `length` framing. Default 1 MiB: a message-level service holds a
    /// whole frame in memory, so this bounds that memory per connection. A larger header
    /// closes its connection with a log line, before anything is reserved.
    pub max_frame: usize,
    /// The most input the process holds for messages not yet complete, all connections and
    /// servers together (`line` and `length` framing). Default 64 MiB: 64 frames of the
    /// default `max_frame` in flight at once. A connection whose buffered input would take
    /// the total past it is closed with a log line; a connection's first 4 KiB are not counted,
    /// so a message that arrives whole, or in a few small reads, is served however full the
    /// budget is. Without it, `max_connections` peers that each send most of a frame and stall
    /// could hold `max_connections` × `max_frame` bytes (10 GB by default).
    pub max_buffered: usize,
    /// Bytes read from a stream at a time. Default 16 KiB: large enough that copying is cheap
    /// per system call, small enough that 10,000 connections need little memory.
    pub read_buffer: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            backlog: 128,
            idle_timeout: Duration::from_secs(300),
            message_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            grace: Duration::from_secs(5),
            datagram_rate: 10_000,
            max_datagram: MAX_DATAGRAM_BYTES_V6,
            max_connections: 10_000,
            workers: 32,
            threads: 0,
            max_line: 64 * 1024,
            max_frame: 1024 * 1024,
            max_buffered: 64 * 1024 * 1024,
            read_buffer: 16 * 1024,
        }
    }
}

impl Limits {
    /// Bytes read at a time on a connection of `transport`: [`Limits::read_buffer`], and on
    /// a sequenced-packet connection at least [`Limits::max_datagram`], since each read must
    /// take a whole record (a record is a message, as big as a datagram may be).
    pub(crate) fn read_buffer_for(&self, transport: crate::endpoint::Transport) -> usize {
        match transport {
            crate::endpoint::Transport::UnixSeqpacket => self.read_buffer.max(self.max_datagram),
            _ => self.read_buffer,
        }
    }

    /// Refuses limits no server can run with, naming the first: a zero time-out would close
    /// every connection at once (and the kernel refuses a zero `SO_SNDTIMEO`), one over
    /// [`MAX_TIMEOUT`] could overflow a deadline, and a zero count or size would serve nobody
    /// (a zero `max_connections` would accept nobody, a zero `max_line` no line). `grace` may be
    /// zero: connections in flight are then closed at once. `datagram_rate` 0 means no limit.
    pub(crate) fn check(&self) -> Result<(), String> {
        for (name, value) in [
            ("idle time-out", self.idle_timeout),
            ("message time-out", self.message_timeout),
            ("write time-out", self.write_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("the {name} must be longer than zero"));
            }
        }
        for (name, value) in [
            ("idle time-out", self.idle_timeout),
            ("message time-out", self.message_timeout),
            ("write time-out", self.write_timeout),
            ("grace period", self.grace),
        ] {
            if value > MAX_TIMEOUT {
                return Err(format!("the {name} must be at most 365 days"));
            }
        }
        for (name, value) in [
            ("backlog", self.backlog as usize),
            ("connection limit (max_connections)", self.max_connections),
            ("number of workers", self.workers),
            ("line limit (max_line)", self.max_line),
            ("frame limit (max_frame)", self.max_frame),
            ("datagram limit (max_datagram)", self.max_datagram),
            ("read buffer", self.read_buffer),
        ] {
            if value == 0 {
                return Err(format!("the {name} must be at least 1"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_time_outs_are_refused_by_name() {
        assert_eq!(Limits::default().check(), Ok(()));
        let limits = Limits {
            write_timeout: Duration::ZERO,
            ..Limits::default()
        };
        assert_eq!(
            limits.check(),
            Err("the write time-out must be longer than zero".into())
        );
    }

    #[test]
    fn zero_counts_and_endless_time_outs_are_refused_by_name() {
        let zero_connections = Limits {
            max_connections: 0,
            ..Limits::default()
        };
        assert_eq!(
            zero_connections.check(),
            Err("the connection limit (max_connections) must be at least 1".into())
        );
        let zero_workers = Limits {
            workers: 0,
            ..Limits::default()
        };
        assert!(zero_workers.check().unwrap_err().contains("workers"));
        let zero_backlog = Limits {
            backlog: 0,
            ..Limits::default()
        };
        assert!(zero_backlog.check().unwrap_err().contains("backlog"));
        let endless = Limits {
            idle_timeout: Duration::MAX,
            ..Limits::default()
        };
        assert_eq!(
            endless.check(),
            Err("the idle time-out must be at most 365 days".into())
        );
        let longest = Limits {
            idle_timeout: MAX_TIMEOUT,
            grace: Duration::ZERO, // close at once: allowed
            ..Limits::default()
        };
        assert_eq!(longest.check(), Ok(()));
    }
}
