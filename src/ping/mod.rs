//! ICMP echo ("ping") over IPv4 and IPv6: the slides' `SOCK_RAW`, which "gives access to
//! subnetwork layer", as iputils `ping` uses it.
//!
//! The socket is the one iputils picks: an unprivileged ICMP datagram socket (`SOCK_DGRAM` with
//! `IPPROTO_ICMP` or `IPPROTO_ICMPV6`) where `net.ipv4.ping_group_range` holds the process's
//! group, else a raw socket (`SOCK_RAW`: root or `CAP_NET_RAW`). On the datagram socket the
//! kernel writes the socket's local port into each request's identifier and hands this socket
//! only the replies that carry it; a raw socket sees every ICMP packet of the host (other
//! processes' replies, its own requests on loopback, errors), so replies are matched by
//! identifier, sequence number and payload, and anything else is ignored.
//!
//! [`icmp`] holds the message format (header, checksum, the reply parser), free of I/O;
//! [`RttStats`] the statistics, computed as iputils computes them.

pub mod icmp;
mod socket;
mod stats;
mod track;

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

pub use stats::{RttStats, RttSummary, loss_percent, loss_value, reply_time};

use crate::Error;
use icmp::Packet;
pub use socket::SocketKind;
use socket::{ErrorOrigin, IcmpSocket, QueuedError};
use track::{Tracker, Verdict};

/// The largest ICMP payload over IPv4: 65,535 bytes of IP packet less a 20-byte IPv4 header
/// and the 8-byte ICMP header (iputils' limit for `-s`).
pub const MAX_PAYLOAD_V4: usize = 65_507;
/// The largest ICMPv6 payload: IPv6's 65,535-byte payload length less the 8-byte ICMP header
/// (the 40-byte IPv6 header is not counted in it).
pub const MAX_PAYLOAD_V6: usize = 65_527;
/// The shortest interval between requests a user other than root may ask for (iputils' rule:
/// anything faster is a flood, which only root may send).
pub const MIN_USER_INTERVAL: Duration = Duration::from_millis(2);
/// The most packets (and queued errors) one pass of the loop reads before it looks at the
/// clock, the stop flag and the next send again: a raw socket sees every ICMP packet of the
/// host, so under a flood "until the queue is empty" might never come.
const READ_BATCH: usize = 64;

/// How to ping, with iputils' defaults.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PingOptions {
    /// Requests to send (`-c`); `None`: until stopped or the deadline. With a deadline it is
    /// the number of replies to wait for, as in iputils.
    pub count: Option<u64>,
    /// Time between requests (`-i`, default 1 s).
    pub interval: Duration,
    /// How long each request waits for its reply (`-W`, default 10 s); a reply after that is
    /// counted as late, not received.
    pub timeout: Duration,
    /// Stop after this long, whatever was sent or received (`-w`).
    pub deadline: Option<Duration>,
    /// Payload bytes per request (`-s`, default 56: 64 bytes of ICMP).
    pub size: usize,
}

impl Default for PingOptions {
    fn default() -> Self {
        PingOptions {
            count: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            deadline: None,
            size: 56,
        }
    }
}

/// An IP family to restrict a name to (`-4`, `-6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

/// The address to ping for `host`: the first address of the system resolver's answer (of
/// `family`, if given), as iputils takes it.
///
/// # Errors
///
/// [`Error::NameNotFound`] when the name does not resolve, or has no address of `family`;
/// [`Error::Config`] for an address literal of the other family; [`Error::Resolve`] when the
/// resolver fails otherwise.
///
/// # Examples
///
/// ```
/// use socketkit::ping::{Family, target};
///
/// assert_eq!(target("127.0.0.1", None)?, "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
/// assert!(target("127.0.0.1", Some(Family::V6)).is_err());
/// # Ok::<(), socketkit::Error>(())
/// ```
pub fn target(host: &str, family: Option<Family>) -> Result<IpAddr, Error> {
    let wanted = |ip: &IpAddr| match family {
        None => true,
        Some(Family::V4) => ip.is_ipv4(),
        Some(Family::V6) => ip.is_ipv6(),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return if wanted(&ip) {
            Ok(ip)
        } else {
            Err(Error::Config(format!(
                "{host} is not an {} address",
                if ip.is_ipv4() { "IPv6" } else { "IPv4" }
            )))
        };
    }
    let entry = crate::names::lookup(host)?;
    entry
        .addresses
        .into_iter()
        .find(wanted)
        .ok_or_else(|| no_address(host, family))
}

/// A name that resolved to no address (of `family`, naming it only when one was asked for).
fn no_address(host: &str, family: Option<Family>) -> Error {
    let host = match family {
        None => host.to_string(),
        Some(Family::V4) => format!("{host} (no IPv4 address)"),
        Some(Family::V6) => format!("{host} (no IPv6 address)"),
    };
    Error::NameNotFound { host }
}

/// One reply, as ping prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Who answered.
    pub from: IpAddr,
    /// The ICMP message's length (header and payload): the "64 bytes".
    pub bytes: usize,
    /// The sequence number (iputils' `icmp_seq`, from 1).
    pub seq: u16,
    /// The reply's TTL (IPv4) or hop limit (IPv6), when known.
    pub ttl: Option<u8>,
    /// The round trip, measured by this process from send to receive.
    pub rtt: Duration,
}

/// What happened while pinging, in order, for the caller to print.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The first reply to a request, in time.
    Reply(Reply),
    /// A further reply to a request already answered (`(DUP!)`).
    Duplicate(Reply),
    /// A reply that came after its request's time-out (`-W`): counted as late, not received.
    Late(Reply),
    /// An ICMP error about one of our requests (from a router, say), or a send that failed.
    Error {
        /// The router or host that sent the error; `None` for a local send error.
        from: Option<IpAddr>,
        /// The request's sequence number.
        seq: u16,
        /// The error, as ping words it.
        message: String,
    },
}

/// The counts at the end, as iputils' summary gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Requests sent.
    pub transmitted: u64,
    /// Requests answered in time (duplicates and late replies not counted).
    pub received: u64,
    /// Further replies to requests already answered.
    pub duplicates: u64,
    /// Replies that came after their request's time-out.
    pub late: u64,
    /// ICMP errors about our requests, and failed sends.
    pub errors: u64,
    /// From the first request to the end.
    pub elapsed: Duration,
    /// Round-trip statistics of the replies (duplicates included, as iputils counts them);
    /// `None` when none came.
    pub rtt: Option<RttSummary>,
}

impl Summary {
    /// iputils' counts line: `3 packets transmitted, 3 received, 0% packet loss, time 2003ms`
    /// (with `, +N duplicates`, `, +N late` and `, +N errors` when there are any).
    pub fn counts_line(&self) -> String {
        let mut line = format!(
            "{} packets transmitted, {} received",
            self.transmitted, self.received
        );
        if self.duplicates > 0 {
            line += &format!(", +{} duplicates", self.duplicates);
        }
        if self.late > 0 {
            line += &format!(", +{} late", self.late);
        }
        if self.errors > 0 {
            line += &format!(", +{} errors", self.errors);
        }
        if self.transmitted > 0 {
            line += &format!(
                ", {}% packet loss, time {}ms",
                loss_percent(self.transmitted, self.received),
                (self.elapsed.as_micros() + 500) / 1000
            );
        }
        line
    }
}

/// An ICMP echo session with one target.
///
/// # Examples
///
/// Needs an ICMP socket: root, `CAP_NET_RAW`, or a group inside `net.ipv4.ping_group_range`.
///
/// ```no_run
/// use std::sync::atomic::AtomicBool;
/// use socketkit::ping::{Event, PingOptions, Pinger};
///
/// let mut options = PingOptions::default();
/// options.count = Some(3);
/// let mut pinger = Pinger::open("127.0.0.1".parse().unwrap(), options)?;
/// let summary = pinger.run(&AtomicBool::new(false), |event| {
///     if let Event::Reply(reply) = event {
///         println!("icmp_seq={} time={:?}", reply.seq, reply.rtt);
///     }
/// })?;
/// assert_eq!(summary.received, 3);
/// # Ok::<(), socketkit::Error>(())
/// ```
pub struct Pinger {
    socket: IcmpSocket,
    target: IpAddr,
    options: PingOptions,
    /// The identifier replies must carry (on a datagram socket, the kernel's).
    id: u16,
    /// The payload of every request: 8 bytes of this session's cookie (when the size allows),
    /// then iputils' pattern of counting bytes. A reply must echo it unchanged.
    payload: Vec<u8>,
}

impl Pinger {
    /// Checks the options and opens the socket.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a size over the family's limit ([`MAX_PAYLOAD_V4`],
    /// [`MAX_PAYLOAD_V6`]) or, for a user other than root, an interval under
    /// [`MIN_USER_INTERVAL`]; [`Error::Io`] when no ICMP socket may be opened (naming both ways
    /// to allow one).
    pub fn open(target: IpAddr, options: PingOptions) -> Result<Pinger, Error> {
        let (max, family) = match target {
            IpAddr::V4(_) => (MAX_PAYLOAD_V4, "IPv4"),
            IpAddr::V6(_) => (MAX_PAYLOAD_V6, "IPv6"),
        };
        if options.size > max {
            return Err(Error::Config(format!(
                "size {} is too large: at most {max} bytes of payload over {family}",
                options.size
            )));
        }
        if options.interval < MIN_USER_INTERVAL && !nix::unistd::getuid().is_root() {
            return Err(Error::Config(format!(
                "interval {:?} is too short: the shortest a user other than root may use is 2ms \
                 (iputils' rule)",
                options.interval
            )));
        }
        let socket = IcmpSocket::open(target.is_ipv6())?;
        let cookie = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let id = socket.kernel_id()?.unwrap_or(cookie as u16);
        let mut payload: Vec<u8> = (0..options.size).map(|i| i as u8).collect();
        if payload.len() >= 8 {
            payload[..8].copy_from_slice(&cookie.to_be_bytes());
        }
        tracing::debug!(kind = socket.kind().name(), id, "ICMP socket open");
        Ok(Pinger {
            socket,
            target,
            options,
            id,
            payload,
        })
    }

    /// The kind of socket in use.
    pub fn socket_kind(&self) -> SocketKind {
        self.socket.kind()
    }

    /// The address pinged.
    pub fn target(&self) -> IpAddr {
        self.target
    }

    /// Pings until the count is reached (and every request is answered or timed out), the
    /// deadline passes, or `stop` is set (a signal handler's flag: a signal also cuts the
    /// current wait short). Each reply, duplicate, late reply and error goes to `on_event` as
    /// it happens.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the socket fails while reading. Failed sends are counted as errors
    /// and reported as [`Event::Error`]; no reply at all is not an error here (see
    /// [`Summary::received`]).
    pub fn run(
        &mut self,
        stop: &AtomicBool,
        mut on_event: impl FnMut(&Event),
    ) -> Result<Summary, Error> {
        let options = self.options.clone();
        let mut tracker = Tracker::new(options.timeout);
        let mut stats = RttStats::default();
        let mut summary = Summary {
            transmitted: 0,
            received: 0,
            duplicates: 0,
            late: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            rtt: None,
        };
        let start = Instant::now();
        let end = options.deadline.map(|d| start + d);
        let mut next_send = start;
        loop {
            if stop.load(Ordering::Relaxed) || end.is_some_and(|end| Instant::now() >= end) {
                break;
            }
            // What is queued is read on every pass, before anything is sent: with an interval
            // shorter than one send, a send is due on every pass and the wait below never comes.
            let more_queued =
                self.read_queued(&mut tracker, &mut stats, &mut summary, &mut on_event)?;
            let now = Instant::now();
            // With a deadline, the count is replies to wait for; without, requests to send.
            let done = match (options.count, end) {
                (Some(count), Some(_)) => summary.received >= count,
                (Some(count), None) => {
                    summary.transmitted >= count && tracker.next_expiry(now).is_none()
                }
                (None, _) => false,
            };
            if done {
                break;
            }
            let sending = match (options.count, end) {
                (Some(count), None) => summary.transmitted < count,
                _ => true,
            };
            if sending && now >= next_send {
                let seq = (summary.transmitted + 1) as u16; // icmp_seq counts from 1 and wraps
                let request =
                    icmp::echo_request(self.target.is_ipv6(), self.id, seq, &self.payload);
                summary.transmitted += 1;
                match self.socket.send(&request, self.target) {
                    Ok(()) => tracker.sent(seq, now),
                    Err(e) => {
                        summary.errors += 1;
                        on_event(&Event::Error {
                            from: None,
                            seq,
                            message: e.to_string(),
                        });
                    }
                }
                next_send = now + options.interval;
                continue;
            }
            if more_queued {
                continue; // a read bound was reached: read on before waiting
            }
            let wake = [
                Some(next_send).filter(|_| sending),
                tracker.next_expiry(now),
                end,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + options.interval);
            if wake > now {
                self.socket
                    .wait_readable(wake - now)
                    .map_err(|e| Error::io("cannot wait for ICMP replies", e))?;
            }
        }
        summary.elapsed = start.elapsed();
        summary.rtt = stats.summary();
        Ok(summary)
    }

    /// Reads what is queued, at most [`READ_BATCH`] errors and [`READ_BATCH`] packets, and
    /// counts those that are ours. Returns whether a bound was reached (more may be queued).
    fn read_queued(
        &mut self,
        tracker: &mut Tracker,
        stats: &mut RttStats,
        summary: &mut Summary,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<bool, Error> {
        let errors_left = read_batch(READ_BATCH, || self.read_error(tracker, summary, on_event))?;
        let packets_left = read_batch(READ_BATCH, || {
            self.read_packet(tracker, stats, summary, on_event)
        })?;
        Ok(errors_left || packets_left)
    }

    /// Reads one error from the error queue (a datagram socket's), if one is queued; returns
    /// whether one was.
    fn read_error(
        &mut self,
        tracker: &mut Tracker,
        summary: &mut Summary,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<bool, Error> {
        let queued = self
            .socket
            .recv_error()
            .map_err(|e| Error::io("cannot read ICMP errors", e))?;
        let Some(queued) = queued else {
            return Ok(false);
        };
        // As iputils: only an error about a request of this session counts.
        let QueuedError::About { id, seq, origin } = queued else {
            return Ok(true);
        };
        if id != self.id || !tracker.is_out(seq) {
            return Ok(true);
        }
        let message = match &origin {
            ErrorOrigin::Icmp { kind, code, .. } => {
                icmp::error_words(self.target.is_ipv6(), *kind, *code)
                    .map_or_else(|| format!("ICMP type {kind} code {code}"), str::to_string)
            }
            ErrorOrigin::Local { error, mtu } if error.raw_os_error() == Some(libc::EMSGSIZE) => {
                format!("local error: {error}, mtu={mtu}")
            }
            ErrorOrigin::Local { error, .. } => format!("local error: {error}"),
        };
        let from = match origin {
            ErrorOrigin::Icmp { from, .. } => from,
            ErrorOrigin::Local { .. } => None,
        };
        summary.errors += 1;
        tracker.errored(seq);
        on_event(&Event::Error { from, seq, message });
        Ok(true)
    }

    /// Reads one packet, if one is queued, and counts it if it is ours.
    fn read_packet(
        &mut self,
        tracker: &mut Tracker,
        stats: &mut RttStats,
        summary: &mut Summary,
        on_event: &mut impl FnMut(&Event),
    ) -> Result<bool, Error> {
        let layout = self.socket.layout();
        let (id, payload) = (self.id, &self.payload);
        let received = self
            .socket
            .recv()
            .map_err(|e| Error::io("cannot read ICMP replies", e))?;
        let Some(received) = received else {
            return Ok(false);
        };
        {
            let now = Instant::now();
            let Some(from) = received.from else {
                return Ok(true);
            };
            match icmp::parse(received.bytes, layout) {
                Packet::EchoReply {
                    id: got,
                    seq,
                    payload: echoed,
                    icmp_bytes,
                    ttl,
                } if got == id && echoed == payload.as_slice() => {
                    let reply = |rtt| Reply {
                        from,
                        bytes: icmp_bytes,
                        seq,
                        ttl: ttl.or(received.ttl),
                        rtt,
                    };
                    let event = match tracker.reply(seq, now) {
                        Verdict::First(rtt) => {
                            summary.received += 1;
                            stats.add(rtt);
                            Event::Reply(reply(rtt))
                        }
                        Verdict::Duplicate(rtt) => {
                            summary.duplicates += 1;
                            stats.add(rtt);
                            Event::Duplicate(reply(rtt))
                        }
                        Verdict::Late(rtt) => {
                            summary.late += 1;
                            Event::Late(reply(rtt))
                        }
                        Verdict::Unknown => return Ok(true),
                    };
                    on_event(&event);
                }
                Packet::Error {
                    id: got,
                    seq,
                    message,
                } if got == id => {
                    summary.errors += 1;
                    tracker.errored(seq);
                    on_event(&Event::Error {
                        from: Some(from),
                        seq,
                        message: message.to_string(),
                    });
                }
                _ => {} // not ours: another process's reply, our own request, other types
            }
        }
        Ok(true)
    }
}

/// Calls `read_one` until it reports nothing read (`Ok(false)`) or `limit` calls have read
/// something; returns whether the limit was reached (more may be queued).
fn read_batch(
    limit: usize,
    mut read_one: impl FnMut() -> Result<bool, Error>,
) -> Result<bool, Error> {
    for _ in 0..limit {
        if !read_one()? {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A queue that never empties (a flood seen by a raw socket) ends a pass after the bound,
    /// so the loop gets back to its clock, stop flag and sends.
    #[test]
    fn a_read_pass_stops_at_its_bound_under_a_flood() {
        let mut reads = 0;
        let more = read_batch(READ_BATCH, || {
            reads += 1;
            assert!(reads <= READ_BATCH, "read past the bound");
            Ok(true)
        })
        .unwrap();
        assert!(more);
        assert_eq!(reads, READ_BATCH);
    }

    #[test]
    fn a_read_pass_ends_when_the_queue_is_empty() {
        let mut queued = 3u32;
        let more = read_batch(READ_BATCH, || {
            let got = queued > 0;
            queued = queued.saturating_sub(1);
            Ok(got)
        })
        .unwrap();
        assert!(!more);
        assert_eq!(queued, 0);
    }

    #[test]
    fn a_name_without_addresses_names_the_family_only_when_one_was_asked_for() {
        let text = |family| no_address("example.test", family).to_string();
        assert!(!text(None).contains("IPv4"), "{}", text(None));
        assert!(!text(None).contains("IPv6"), "{}", text(None));
        assert!(text(Some(Family::V4)).contains("(no IPv4 address)"));
        assert!(text(Some(Family::V6)).contains("(no IPv6 address)"));
    }
}
