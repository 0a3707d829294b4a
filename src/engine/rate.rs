//! The per-source datagram rate limit: one flooding source must not take the whole capacity
//! of a datagram listener from everyone else.
//!
//! Each source (an IPv4 address, an IPv6 /64, or a Unix socket's name) has a token bucket refilled at
//! [`Limits::datagram_rate`](crate::Limits::datagram_rate) per second, holding at most one
//! second's worth. A datagram over its source's rate is dropped unanswered, but only while
//! another source has been heard from in the last 10 seconds: a source alone (a benchmark, a lone
//! client) has the whole server, since it takes nothing from anybody. Dropping costs a
//! receive, answering costs a reply too, so under a flood the listener drains its queue faster
//! and a well-behaved client gets through within a few retries.
//!
//! Sans-IO: the caller passes the time. No crate fits: `governor` has keyed limiters, but its
//! store grows without bound unless swept by hand, and it has no notion of contention.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::sources::{Place, SourceKey, Sources, quick_bytes, quick_mix};
use crate::service::Address;

/// How long another source counts as waiting after its last datagram. Long, because during a
/// flood most of its datagrams may be lost before they reach the server: the limit must hold
/// through the gaps between the few that get through, or the flood wins them back.
const CONTENTION_WINDOW: Duration = Duration::from_secs(10);
/// Sources tracked at once. Beyond it (a flood from many forged addresses), buckets that have
/// refilled are swept, at most once a second; a new source that still finds no room is not
/// limited, as no per-source limit can help against a flood from everywhere.
const MAX_SOURCES: usize = 65_536;

/// What a datagram is counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Ip(IpAddr),
    Unix(Vec<u8>),
}

/// One write per source: the table keeps std's keyed SipHash (sources are the attacker's to
/// choose; see [`Sources`]), whose cost is mostly per write, and the derived hash made four.
impl std::hash::Hash for Source {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Source::Ip(IpAddr::V4(v4)) => state.write_u32(v4.to_bits()),
            Source::Ip(IpAddr::V6(v6)) => state.write_u128(v6.to_bits()),
            Source::Unix(name) => state.write(name),
        }
    }
}

impl SourceKey for Source {
    fn quick_hash(&self) -> u64 {
        match self {
            Source::Ip(IpAddr::V4(v4)) => quick_mix(0, u64::from(v4.to_bits())),
            Source::Ip(IpAddr::V6(v6)) => quick_mix(0, (v6.to_bits() >> 64) as u64),
            Source::Unix(name) => quick_bytes(name),
        }
    }
}

impl Source {
    /// Whether `address` counts against this source: `Source::of(address) == *self`, with no
    /// source made for an IPv4 address.
    #[inline]
    fn is_of(&self, address: &Address) -> bool {
        match (self, address) {
            (Source::Ip(IpAddr::V4(ip)), Address::Inet(SocketAddr::V4(a))) => ip == a.ip(),
            _ => *self == Source::of(address),
        }
    }

    fn of(address: &Address) -> Source {
        match address {
            // A port is free to change; the address is what a flood comes from. IPv4-mapped
            // peers of a dual-stack listener count as their IPv4 address; an IPv6 host owns a
            // whole /64 (its addresses are its to choose), so that is one source.
            Address::Inet(addr) => Source::Ip(match addr.ip().to_canonical() {
                IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
                v4 => v4,
            }),
            Address::Unix(Some(path)) => Source::Unix(path.as_os_str().as_encoded_bytes().to_vec()),
            Address::Unix(None) => Source::Unix(Vec::new()),
            Address::Abstract(name) => {
                let mut key = vec![0];
                key.extend_from_slice(name);
                Source::Unix(key)
            }
        }
    }
}

/// A source heard from recently.
#[derive(Debug)]
struct Heard {
    source: Source,
    at: Instant,
    /// Where its bucket is held, once looked up: the next datagram from the same source (the
    /// common case: a flood, or clients of one host) goes straight to it.
    bucket: Option<Place>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The rate limit of one datagram listener.
#[derive(Debug)]
pub(crate) struct SourceLimiter {
    /// Datagrams per second per source; 0 for no limit.
    rate: u32,
    buckets: Sources<Source, Bucket>,
    /// The two sources heard from last, and when: enough to tell whether a source other than
    /// the current one has spoken within the window.
    recent: [Option<Heard>; 2],
    last_sweep: Option<Instant>,
    last_log: Option<Instant>,
}

impl SourceLimiter {
    pub(crate) fn new(rate: u32) -> SourceLimiter {
        SourceLimiter {
            rate,
            buckets: Sources::default(),
            recent: [None, None],
            last_sweep: None,
            last_log: None,
        }
    }

    /// Whether a datagram from `from`, arriving at `now`, may be answered.
    pub(crate) fn admit(&mut self, from: &Address, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let rate = f64::from(self.rate);
        let (contended, place) = match self.again(from, now) {
            Some(again) => again,
            None => {
                let source = Source::of(from);
                let contended = self.heard(&source, now);
                let Some(place) = self.place(&source, now) else {
                    return true;
                };
                (contended, place)
            }
        };
        let bucket = self.buckets.at_place(place).expect("a current place");
        // Refilled only when time has passed: the datagrams of one receive call share one
        // clock reading, and the same source's next one would add nothing (the subtraction
        // and conversion were a quarter of the limiter's cost per datagram).
        if bucket.updated != now {
            let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
            bucket.updated = now;
        }
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return true;
        }
        if !contended {
            return true; // alone: over its rate, but taking nothing from anybody
        }
        self.dropping(from, now);
        false
    }

    /// Logs (at most once every 10 s) that `from`'s excess is dropped. Out of line: inline,
    /// the log call's registers were saved and restored on every datagram.
    #[cold]
    #[inline(never)]
    fn dropping(&mut self, from: &Address, now: Instant) {
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            self.last_log = Some(now);
            tracing::warn!(
                peer = %from,
                "over {} datagrams a second while other sources wait; dropping its excess",
                self.rate
            );
        }
    }

    /// [`SourceLimiter::heard`] and [`SourceLimiter::place`] in the common case, where
    /// `from` is of the source heard last and its bucket is where it was found (a flood, or
    /// the clients of one host): no key made, and an IPv4 address compared as a number.
    /// `None` in every other case.
    fn again(&mut self, from: &Address, now: Instant) -> Option<(bool, Place)> {
        let [latest, previous] = &mut self.recent;
        let latest = latest.as_mut()?;
        let place = latest.bucket.filter(|p| self.buckets.is_current(*p))?;
        if !latest.source.is_of(from) {
            return None;
        }
        latest.at = now;
        let contended = previous
            .as_ref()
            .is_some_and(|h| now.saturating_duration_since(h.at) < CONTENTION_WINDOW);
        Some((contended, place))
    }

    /// Where the bucket of `source`, the source heard last, is held, made if it is new; `None`
    /// when the table is full of sources that matter (see [`MAX_SOURCES`]).
    fn place(&mut self, source: &Source, now: Instant) -> Option<Place> {
        if let Some(Heard {
            bucket: Some(place),
            ..
        }) = self.recent[0]
            && self.buckets.is_current(place)
        {
            return Some(place);
        }
        if self.buckets.len() >= MAX_SOURCES
            && self.buckets.get_mut(source).is_none()
            && !self.make_room(now)
        {
            return None;
        }
        let rate = f64::from(self.rate);
        let (place, _) = self.buckets.place_or_insert_with(source, || Bucket {
            tokens: rate,
            updated: now,
        });
        self.recent[0].as_mut().expect("heard").bucket = Some(place);
        Some(place)
    }

    /// Records `source` as heard at `now`; returns whether another source was heard within
    /// the contention window.
    fn heard(&mut self, source: &Source, now: Instant) -> bool {
        let [latest, previous] = &mut self.recent;
        if latest.as_ref().is_some_and(|h| h.source == *source) {
            // The common case under a flood: the same source again, no allocation.
        } else if previous.as_ref().is_some_and(|h| h.source == *source) {
            std::mem::swap(latest, previous);
        } else {
            *previous = latest.take();
            *latest = Some(Heard {
                source: source.clone(),
                at: now,
                bucket: None,
            });
        }
        if let Some(h) = latest {
            h.at = now;
        }
        previous
            .as_ref()
            .is_some_and(|h| now.saturating_duration_since(h.at) < CONTENTION_WINDOW)
    }

    /// Whether a new source can be tracked, sweeping refilled buckets if the table is full.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.buckets.len() < MAX_SOURCES {
            return true;
        }
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        self.last_sweep = Some(now);
        // A bucket untouched for a second has refilled: forgetting it changes nothing.
        self.buckets
            .retain(|b| now.saturating_duration_since(b.updated) < Duration::from_secs(1));
        self.buckets.len() < MAX_SOURCES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Address {
        Address::Inet(text.parse().unwrap())
    }

    /// Sends `count` datagrams from `from` evenly over `span` starting at `start`; returns how
    /// many were admitted.
    fn send(
        limiter: &mut SourceLimiter,
        from: &Address,
        start: Instant,
        span: Duration,
        count: u32,
    ) -> u32 {
        (0..count)
            .filter(|i| limiter.admit(from, start + span * *i / count))
            .count() as u32
    }

    #[test]
    fn a_source_alone_is_never_limited() {
        let mut limiter = SourceLimiter::new(100);
        let t0 = Instant::now();
        let flood = addr("10.0.0.1:5000");
        assert_eq!(
            send(&mut limiter, &flood, t0, Duration::from_secs(1), 10_000),
            10_000
        );
    }

    #[test]
    fn a_flooding_source_gets_its_rate_while_another_source_speaks() {
        let mut limiter = SourceLimiter::new(100);
        let t0 = Instant::now();
        let flood = addr("10.0.0.1:5000");
        let client = addr("10.0.0.2:6000");
        assert!(limiter.admit(&client, t0));
        // A second of flood: its burst (one second's worth) and its rate.
        let admitted = send(&mut limiter, &flood, t0, Duration::from_secs(1), 10_000);
        assert!((195..=201).contains(&admitted), "{admitted}");
        // The client, within its rate, is always admitted.
        assert!(limiter.admit(&client, t0 + Duration::from_millis(500)));
    }

    #[test]
    fn the_limit_lifts_once_the_other_source_has_been_silent_for_the_window() {
        let mut limiter = SourceLimiter::new(10);
        let t0 = Instant::now();
        let flood = addr("10.0.0.1:5000");
        limiter.admit(&addr("10.0.0.2:1"), t0);
        let admitted = send(&mut limiter, &flood, t0, Duration::from_millis(500), 100);
        assert!((10..=16).contains(&admitted), "{admitted}");
        let later = t0 + CONTENTION_WINDOW + Duration::from_millis(1);
        assert_eq!(
            send(&mut limiter, &flood, later, Duration::from_millis(100), 100),
            100
        );
    }

    #[test]
    fn ports_do_not_make_new_sources_and_mapped_ipv4_is_ipv4() {
        let mut limiter = SourceLimiter::new(10);
        let t0 = Instant::now();
        limiter.admit(&addr("10.0.0.2:1"), t0);
        let admitted = (0..100)
            .filter(|port| {
                let from = if port % 2 == 0 {
                    format!("10.0.0.1:{}", 1000 + port)
                } else {
                    format!("[::ffff:10.0.0.1]:{}", 1000 + port)
                };
                limiter.admit(&addr(&from), t0)
            })
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let mut limiter = SourceLimiter::new(10);
        let t0 = Instant::now();
        limiter.admit(&addr("10.0.0.2:1"), t0);
        let admitted = (0..100)
            .filter(|i| limiter.admit(&addr(&format!("[2001:db8:0:1::{i:x}]:53")), t0))
            .count();
        assert_eq!(admitted, 10);
        assert!(
            limiter.admit(&addr("[2001:db8:0:2::1]:53"), t0),
            "another /64"
        );
    }

    #[test]
    fn unix_senders_are_told_apart_by_name() {
        let mut limiter = SourceLimiter::new(1);
        let t0 = Instant::now();
        let a = Address::Unix(Some("/tmp/a".into()));
        let b = Address::Abstract(b"/tmp/a".to_vec());
        assert!(limiter.admit(&a, t0));
        assert!(limiter.admit(&b, t0), "an abstract name is not the path");
        assert!(!limiter.admit(&a, t0));
    }

    #[test]
    fn zero_means_no_limit() {
        let mut limiter = SourceLimiter::new(0);
        let t0 = Instant::now();
        limiter.admit(&addr("10.0.0.2:1"), t0);
        assert_eq!(
            send(&mut limiter, &addr("10.0.0.1:1"), t0, Duration::ZERO, 1000),
            1000
        );
    }

    #[test]
    fn the_table_of_sources_stays_bounded_under_forged_addresses() {
        let mut limiter = SourceLimiter::new(10);
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 10_000) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            limiter.admit(&Address::Inet((ip, 53).into()), t0);
        }
        assert_eq!(limiter.buckets.len(), MAX_SOURCES);
        // A second later the refilled buckets are swept and new sources are tracked again.
        limiter.admit(&addr("192.0.2.1:1"), t0 + Duration::from_secs(2));
        assert_eq!(limiter.buckets.len(), 1);
    }
}
