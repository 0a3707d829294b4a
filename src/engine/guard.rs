//! Reply-loop guards of a datagram listener: one forged datagram must not set two servers (or a
//! server and itself) answering each other forever.
//!
//! Three rules, checked before a datagram reaches the service or a `DatagramHandler`:
//!
//! 0. **Service ports.** A datagram from the well-known port of a built-in service
//!    ([`is_service_port`]) is never answered: inetd's rule, since such a port answers anybody.
//! 1. **Own addresses.** A datagram whose source is a listening address of this process is never
//!    answered: its reply would come straight back. A wildcard listener (`0.0.0.0:P`, `[::]:P`)
//!    owns port P on every local address; IPv4-mapped sources count as their IPv4 address.
//! 2. **Loops with other servers.** A source whose requests equal, byte for byte, one of the
//!    last [`RECENT_REPLIES`] replies sent to it, [`LOOP_STREAK`] times in a row within
//!    [`LOOP_WINDOW`], is taken for a server answering our replies (an echo loop) and is not
//!    answered for [`MUTE`]. One dropped datagram ends a loop that one forged datagram started.
//!    A `DatagramHandler`'s replies, sent from its own thread, are recorded too
//!    ([`DatagramGuard::replied_fingerprint`]).
//!
//! An echo loop and a client that sends the same payload again each time its reply arrives look
//! alike on the wire. What tells them apart here is the peer's socket: a loop needs a socket
//! that answers anybody, while a client's socket that is *connected* to us (as `socketkit
//! bench`'s, `nc -u`'s and socat's are) takes datagrams from us alone. For peers on this host
//! the kernel says which it is (`/proc/net/udp`), and a connected one is not muted for
//! [`TRUST`], then asked about again (its port may have been reused by a socket that answers
//! anybody). A peer on
//! another host that sends constant payloads faster than [`LOOP_STREAK`] a second cannot be
//! told from a loop and is muted; numbered payloads avoid it.
//!
//! Also here: the rate-limited log of replies that could not be sent at once (a peer that does
//! not read its receive queue must not hold the listener).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::listener::Listener;
use super::sources::{SourceKey, Sources, quick_bytes, quick_mix};
use crate::service::{Address, is_service_port};

/// Requests in a row that equal a recent reply before a source counts as a loop. Far above what
/// a retransmitting client sends (one request per time-out), and a forged datagram buys at most
/// this many replies from each server of a loop.
pub(crate) const LOOP_STREAK: u32 = 100;
/// The streak must be this fast: [`LOOP_STREAK`] echoes within one second (100 a second). A
/// slower loop is not ended, but costs at most that rate.
pub(crate) const LOOP_WINDOW: Duration = Duration::from_secs(1);
/// How long a source taken for a loop is not answered. Any drop ends a loop of one datagram;
/// the pause bounds what an attacker who forges one datagram a second can make two servers
/// exchange.
pub(crate) const MUTE: Duration = Duration::from_secs(1);
/// Replies remembered per source: a loop fed by up to this many forged datagrams at once is
/// recognised (each request equals one of them, though not the last).
pub(crate) const RECENT_REPLIES: usize = 16;
/// How long a source found to be a connected client on this host is not muted; then the
/// kernel is asked again at its next streak (at most one `/proc/net/udp` read per client per
/// this period), since the port may since belong to a socket that answers anybody.
pub(crate) const TRUST: Duration = MUTE;
/// Sources tracked per listener. When full, sources silent for [`LOOP_WINDOW`] are forgotten,
/// and if that frees less than an eighth of the table, the sources answered longest ago (muted
/// ones last) until an eighth is free. Every new source is tracked: an attacker who keeps
/// 4,096 forged sources busy cannot have a loop answered untracked, since a loop in progress
/// is answered every round trip and so is among the newest.
const MAX_TRACKED: usize = 4096;
/// Log lines about one kind of event: at most one every this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Where an admitted source is held (see [`DatagramGuard::admitted`]); checked against the
/// source when used, so a stale one only costs a lookup.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admitted(Option<usize>);

/// The guards of one datagram listener.
pub(crate) struct DatagramGuard {
    own: OwnSnapshot,
    loops: LoopDetector,
    /// Whether a peer on this host has a socket connected to us (a client, not a loop).
    is_connected_client: fn(SocketAddr) -> bool,
    own_log: Option<Instant>,
    loop_log: Option<Instant>,
    send_log: Option<Instant>,
    unsent: u64,
}

impl DatagramGuard {
    /// Guards for one listener. The process's own addresses are recorded by
    /// [`Listening::all`] before any listener serves.
    pub(crate) fn new() -> DatagramGuard {
        DatagramGuard {
            own: OwnSnapshot::default(),
            loops: LoopDetector::default(),
            is_connected_client: connected_on_this_host,
            own_log: None,
            loop_log: None,
            send_log: None,
            unsent: 0,
        }
    }

    /// Whether a datagram from `peer` carrying `request`, arriving at `now`, may be answered.
    pub(crate) fn admit(&mut self, peer: &Address, request: &[u8], now: Instant) -> bool {
        if let Address::Inet(from) = peer
            && is_service_port(from.port())
        {
            tracing::debug!(%peer, "no reply to a datagram from a service port (inetd's loop rule)");
            return false;
        }
        if let Address::Inet(from) = peer
            && self.own.contains(*from, now)
        {
            if should_log(&mut self.own_log, now) {
                tracing::warn!(
                    %peer,
                    "dropped a datagram whose source is this server's own listening address \
                     (forged): answering it would start a reply loop"
                );
            }
            return false;
        }
        match self.loops.admit(peer, request, now) {
            Verdict::Answer => true,
            Verdict::Muted => false,
            Verdict::Loop => {
                if let Address::Inet(from) = peer
                    && (self.is_connected_client)(*from)
                {
                    self.loops.trust(peer, now);
                    return true;
                }
                self.loops.mute(peer, now);
                if should_log(&mut self.loop_log, now) {
                    tracing::warn!(
                    %peer,
                    "{LOOP_STREAK} requests in a row within {LOOP_WINDOW:?} were the replies just \
                     sent back: a reply loop with another server; not answered for {MUTE:?}"
                    );
                }
                false
            }
        }
    }

    /// Where the source last admitted is held: [`DatagramGuard::replied_at`] records the
    /// reply to it without a second lookup, when the replies of several datagrams are sent
    /// together after all of them were admitted.
    pub(crate) fn admitted(&mut self) -> Admitted {
        Admitted(self.loops.admitted.take())
    }

    /// Records that `reply` was sent to `peer` at `now`, for a datagram admitted as `admitted`.
    pub(crate) fn replied_at(&mut self, peer: &Address, reply: &[u8], now: Instant, at: Admitted) {
        self.loops.replied_at(peer, reply, now, at.0);
    }

    /// Records that a reply of this [`fingerprint`] was sent to `peer` at `now` (by a
    /// `DatagramHandler`, on another thread).
    pub(crate) fn replied_fingerprint(&mut self, peer: &Address, reply: Fingerprint, now: Instant) {
        self.loops.replied_fingerprint(peer, reply, now);
    }

    /// Logs (at most once every 10 s, with a count) a reply dropped because it could not be
    /// sent at once: a peer that does not read its receive queue must not hold the listener.
    pub(crate) fn not_sent(&mut self, peer: &Address, error: &io::Error, now: Instant) {
        self.unsent += 1;
        if !should_log(&mut self.send_log, now) {
            return;
        }
        let unsent = std::mem::take(&mut self.unsent);
        if error.kind() == io::ErrorKind::WouldBlock {
            tracing::warn!(
                %peer,
                "reply dropped: the peer's receive queue is full (it does not read); \
                 {unsent} replies dropped since the last such line"
            );
        } else {
            tracing::debug!(%peer, "reply not sent: {error} ({unsent} since the last such line)");
        }
    }
}

fn should_log(last: &mut Option<Instant>, now: Instant) -> bool {
    if last.is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY) {
        return false;
    }
    *last = Some(now);
    true
}

// ---------------------------------------------------------------------------------------------
// Own addresses: a process-wide list, since two servers of one process can loop as well.

/// The UDP addresses this process is serving on; a listener may appear twice (not likely).
static LISTENING: Mutex<Vec<SocketAddr>> = Mutex::new(Vec::new());
/// Bumped on every change of [`LISTENING`], so guards copy the list only when it changed.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// One listener's entry in the process's list of listening addresses, removed on drop.
pub(crate) struct Listening(SocketAddr);

impl Listening {
    /// Records the UDP listeners among `listeners` as this process's own, until dropped.
    pub(crate) fn all(listeners: &[Listener]) -> Vec<Listening> {
        listeners
            .iter()
            .filter_map(|l| match l {
                Listener::Udp(s) => s.local_addr().ok(),
                _ => None,
            })
            .map(Listening::register)
            .collect()
    }

    fn register(addr: SocketAddr) -> Listening {
        let addr = canonical(addr);
        LISTENING
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(addr);
        GENERATION.fetch_add(1, Ordering::Release);
        Listening(addr)
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let mut list = LISTENING.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(at) = list.iter().position(|a| *a == self.0) {
            list.swap_remove(at);
        }
        GENERATION.fetch_add(1, Ordering::Release);
    }
}

/// A guard's copy of [`LISTENING`], refreshed when the generation moves.
#[derive(Default)]
struct OwnSnapshot {
    generation: Option<u64>,
    addrs: Vec<SocketAddr>,
    /// The ports of `addrs`: a source on none of them (nearly every datagram) is not ours,
    /// and costs no further comparison (the whole check was about 45 instructions a datagram).
    ports: Vec<u16>,
    local: LocalAddrs,
}

impl OwnSnapshot {
    /// Whether `from` is one of the process's listening addresses. Inline up to the check of
    /// the port, which nearly every datagram fails.
    #[inline(always)]
    fn contains(&mut self, from: SocketAddr, now: Instant) -> bool {
        let generation = GENERATION.load(Ordering::Acquire);
        if self.generation != Some(generation) {
            self.refresh(generation);
        }
        let port = from.port();
        self.ports.contains(&port) && self.contains_on_port(from, now)
    }

    #[inline(never)]
    fn refresh(&mut self, generation: u64) {
        self.generation = Some(generation);
        self.addrs = LISTENING
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.ports = self.addrs.iter().map(SocketAddr::port).collect();
    }

    /// [`OwnSnapshot::contains`] for a source on one of the ports.
    #[inline(never)]
    fn contains_on_port(&mut self, from: SocketAddr, now: Instant) -> bool {
        let from = canonical(from);
        let mut wildcard = false;
        for own in &self.addrs {
            if own.port() != from.port() {
                continue;
            }
            if own.ip() == from.ip() {
                return true;
            }
            wildcard |= own.ip().is_unspecified() && (own.is_ipv6() || from.is_ipv4()) // `[::]` is dual-stack here
        }
        wildcard && self.local.contains(from.ip(), now)
    }
}

/// The addresses of this host's interfaces, looked up again (at most once a second) when an
/// address is not among them, since addresses come and go.
#[derive(Default)]
struct LocalAddrs {
    addrs: Vec<IpAddr>,
    read: Option<Instant>,
}

impl LocalAddrs {
    fn contains(&mut self, ip: IpAddr, now: Instant) -> bool {
        if ip.is_loopback() || self.addrs.contains(&ip) {
            return true;
        }
        if self
            .read
            .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        self.read = Some(now);
        self.addrs = nix::ifaddrs::getifaddrs()
            .map(|all| {
                all.filter_map(|a| a.address)
                    .filter_map(|a| {
                        a.as_sockaddr_in()
                            .map(|v4| IpAddr::V4(v4.ip()))
                            .or_else(|| a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                    })
                    .map(|ip| ip.to_canonical())
                    .collect()
            })
            .unwrap_or_default();
        self.addrs.contains(&ip)
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

// ---------------------------------------------------------------------------------------------
// Loops with other servers: sans-IO, the caller passes the time.

/// What to do with one datagram.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Answer,
    /// The source is muted: drop it.
    Muted,
    /// This datagram completes a loop's streak: mute the source, unless it is a client.
    Loop,
}

/// What is remembered of one source.
#[derive(Debug)]
struct Exchange {
    /// The last replies sent to it (a ring): the [`Fingerprint`]s' heads and hashes apart, so
    /// that a request is compared with all the heads at once.
    heads: [u32; RECENT_REPLIES],
    hashes: [u64; RECENT_REPLIES],
    next: usize,
    /// Requests in a row that equalled a recent reply, and when the first of them came.
    streak: u32,
    streak_began: Instant,
    last_reply: Instant,
    muted_until: Option<Instant>,
    /// A client on this host (its socket is connected to us): not muted until then.
    trusted_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct LoopDetector {
    sources: Sources<PeerKey, Exchange>,
    /// The slot of the source last admitted, so that the reply to it is recorded without a
    /// second lookup (checked against the key: a slot freed or reused since is only a miss).
    admitted: Option<usize>,
}

impl LoopDetector {
    fn admit(&mut self, peer: &Address, request: &[u8], now: Instant) -> Verdict {
        // A source never answered cannot be sending our replies back.
        let found = self
            .sources
            .find_as(peer_hash(peer), |key| key.is(peer), || PeerKey::of(peer));
        let Some((slot, ex)) = found else {
            self.admitted = None;
            return Verdict::Answer;
        };
        self.admitted = Some(slot);
        if ex.muted_until.is_some_and(|until| now < until) {
            return Verdict::Muted;
        }
        ex.muted_until = None;
        if ex.trusted_until.is_some_and(|until| now < until) {
            return Verdict::Answer;
        }
        ex.trusted_until = None;
        if !ex.sent_before(request) {
            ex.streak = 0;
            return Verdict::Answer;
        }
        if ex.streak == 0 || now.saturating_duration_since(ex.streak_began) > LOOP_WINDOW {
            ex.streak = 0;
            ex.streak_began = now;
        }
        ex.streak += 1;
        if ex.streak < LOOP_STREAK {
            return Verdict::Answer;
        }
        ex.streak = 0;
        Verdict::Loop
    }

    fn mute(&mut self, peer: &Address, now: Instant) {
        if let Some(ex) = self.sources.get_mut(&PeerKey::of(peer)) {
            ex.muted_until = Some(now + MUTE);
        }
    }

    fn trust(&mut self, peer: &Address, now: Instant) {
        if let Some(ex) = self.sources.get_mut(&PeerKey::of(peer)) {
            ex.trusted_until = Some(now + TRUST);
        }
    }

    /// Remembers `reply` sent to `peer`, the source last admitted or another.
    #[cfg(test)]
    fn replied(&mut self, peer: &Address, reply: &[u8], now: Instant) {
        let slot = self.admitted.take();
        self.replied_at(peer, reply, now, slot);
    }

    /// Remembers `reply` sent to `peer`, found at `slot` if it was admitted there.
    fn replied_at(&mut self, peer: &Address, reply: &[u8], now: Instant, slot: Option<usize>) {
        self.record(peer, now, slot, || fingerprint(reply));
    }

    fn replied_fingerprint(&mut self, peer: &Address, reply: Fingerprint, now: Instant) {
        self.record(peer, now, None, || reply);
    }

    /// Remembers a reply sent to `peer`; its fingerprint is taken only if it is needed.
    fn record(
        &mut self,
        peer: &Address,
        now: Instant,
        slot: Option<usize>,
        reply: impl FnOnce() -> Fingerprint,
    ) {
        let ex = match slot.and_then(|slot| self.sources.at_if(slot, |key| key.is(peer))) {
            Some(ex) => ex,
            None => self.exchange(&PeerKey::of(peer), now),
        };
        if ex.trusted_until.is_some_and(|until| now < until) {
            return; // no need to remember what a client was told
        }
        let reply = reply();
        ex.heads[ex.next] = reply.head;
        ex.hashes[ex.next] = reply.hash;
        ex.next = (ex.next + 1) % RECENT_REPLIES;
        ex.last_reply = now;
    }

    /// The exchange with `key`, made (room made first in a full table) if it is new.
    fn exchange(&mut self, key: &PeerKey, now: Instant) -> &mut Exchange {
        if self.sources.len() >= MAX_TRACKED && self.sources.get_mut(key).is_none() {
            self.make_room(now);
        }
        self.sources.get_or_insert_with(key, || Exchange {
            heads: [0; RECENT_REPLIES],
            hashes: [0; RECENT_REPLIES],
            next: 0,
            streak: 0,
            streak_began: now,
            last_reply: now,
            muted_until: None,
            trusted_until: None,
        })
    }

    /// Makes room for a new source in a full table. First the sources that no longer matter
    /// are forgotten (not muted, silent for longer than a streak may take); if that frees less
    /// than an eighth of the table, the sources answered longest ago, muted ones last, until an
    /// eighth is free. Freeing an eighth at a time keeps the cost of the scan to a few steps
    /// per new source.
    fn make_room(&mut self, now: Instant) {
        let muted = |ex: &Exchange| ex.muted_until.is_some_and(|until| now < until);
        self.sources
            .retain(|ex| muted(ex) || now.saturating_duration_since(ex.last_reply) < LOOP_WINDOW);
        let keep = MAX_TRACKED - MAX_TRACKED / 8;
        if self.sources.len() <= keep {
            return;
        }
        let mut ages: Vec<(bool, Instant)> = self
            .sources
            .values()
            .map(|ex| (muted(ex), ex.last_reply))
            .collect();
        let forget = ages.len() - keep;
        let (_, &mut newest_forgotten, _) = ages.select_nth_unstable(forget - 1);
        self.sources
            .retain(|ex| (muted(ex), ex.last_reply) > newest_forgotten);
    }
}

/// A source as the key of [`LoopDetector`]'s table, hashed in one write. The table keeps
/// std's keyed SipHash (sources are the attacker's to choose; see [`Sources`]), whose cost is
/// mostly per write: the derived hash of an [`Address`] made five (two discriminants, a
/// length, the bytes, the port).
#[derive(Debug, Clone, Eq)]
struct PeerKey(Address);

/// [`Address`]'s equality with the common case first: the derived one over the nested enums
/// cost three times as much, and every datagram compares its key twice (admit, reply).
impl PartialEq for PeerKey {
    #[inline]
    fn eq(&self, other: &PeerKey) -> bool {
        self.is(&other.0)
    }
}

impl SourceKey for PeerKey {
    fn quick_hash(&self) -> u64 {
        peer_hash(&self.0)
    }
}

/// The [`SourceKey::quick_hash`] of `peer`'s [`PeerKey`], with no key made. The IPv4 case
/// inline, the others out of line (each not inlined cost a call, about 25 instructions, twice
/// a datagram with [`PeerKey::is`]).
#[inline(always)]
fn peer_hash(peer: &Address) -> u64 {
    match peer {
        Address::Inet(SocketAddr::V4(a)) => {
            quick_mix(0, u64::from(a.ip().to_bits()) << 16 | u64::from(a.port()))
        }
        other => peer_hash_other(other),
    }
}

#[inline(never)]
fn peer_hash_other(peer: &Address) -> u64 {
    match peer {
        Address::Inet(SocketAddr::V4(a)) => {
            quick_mix(0, u64::from(a.ip().to_bits()) << 16 | u64::from(a.port()))
        }
        Address::Inet(SocketAddr::V6(a)) => {
            let ip = a.ip().to_bits();
            quick_mix(
                quick_mix(0, ip as u64),
                (ip >> 64) as u64 ^ u64::from(a.port()),
            )
        }
        Address::Unix(Some(path)) => quick_bytes(path.as_os_str().as_encoded_bytes()),
        Address::Abstract(name) => quick_bytes(name),
        Address::Unix(None) => 0,
    }
}

impl PeerKey {
    fn of(peer: &Address) -> PeerKey {
        PeerKey(peer.clone())
    }

    /// Whether this is the key of `peer` (no key made to compare); as [`peer_hash`], the
    /// IPv4 case inline.
    #[inline(always)]
    fn is(&self, peer: &Address) -> bool {
        match (&self.0, peer) {
            (Address::Inet(SocketAddr::V4(a)), Address::Inet(SocketAddr::V4(b))) => {
                a.ip().to_bits() == b.ip().to_bits() && a.port() == b.port()
            }
            (a, b) => equal_addresses(a, b),
        }
    }
}

#[inline(never)]
fn equal_addresses(a: &Address, b: &Address) -> bool {
    a == b
}

impl std::hash::Hash for PeerKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Equal keys write the same: the fields left out (IPv6 flow and scope) only collide.
        match &self.0 {
            Address::Inet(SocketAddr::V4(a)) => {
                state.write_u64(u64::from(a.ip().to_bits()) << 16 | u64::from(a.port()));
            }
            Address::Inet(SocketAddr::V6(a)) => {
                state.write_u128(a.ip().to_bits() ^ u128::from(a.port()));
            }
            other => other.hash(state),
        }
    }
}

impl Exchange {
    /// Whether `request` equals one of the replies remembered (by [`Fingerprint`]). Its head
    /// first, against all the heads at once: a request that is not an echo (a client's, which
    /// differs from our reply to it) usually differs there, and then costs no hash of its bytes
    /// (on 64-byte ping-pong the hash was about 70 instructions a datagram).
    fn sent_before(&self, request: &[u8]) -> bool {
        let head = head(request);
        // A fold, not `contains`: without the early exit the compiler compares all the heads
        // in a few vector instructions.
        if !self.heads.iter().fold(false, |seen, h| seen | (*h == head)) {
            return false;
        }
        let hash = hash_bytes(request);
        self.heads
            .iter()
            .zip(&self.hashes)
            .any(|(h, r)| *h == head && *r == hash)
    }
}

/// What the loop rule remembers of a reply, cheap enough to take of every reply: its [`head`]
/// and a 64-bit hash of all its bytes ([`hash_bytes`]). Equal datagrams have equal
/// fingerprints; a collision only ever counts towards a streak, so an adversary who crafts one
/// can mute no one but the address it sends from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    head: u32,
    hash: u64,
}

/// The [`Fingerprint`] of a datagram.
pub(crate) fn fingerprint(bytes: &[u8]) -> Fingerprint {
    Fingerprint {
        head: head(bytes),
        hash: hash_bytes(bytes),
    }
}

/// A 64-bit hash of all of `bytes`, 16 at a time, each step one 64 x 64 -> 128-bit multiply
/// folded to 64 bits (foldhash's mixing): on 64-byte replies about half the instructions of
/// FxHash's word-at-a-time mix, and one is taken of every reply.
fn hash_bytes(bytes: &[u8]) -> u64 {
    const SEEDS: [u64; 3] = [
        0x243f_6a88_85a3_08d3,
        0x1319_8a2e_0370_7344,
        0xa409_3822_299f_31d0,
    ];
    let fold = |x: u64, y: u64| {
        let full = u128::from(x) * u128::from(y);
        full as u64 ^ (full >> 64) as u64
    };
    let step = |h: u64, block: &[u8; 16]| {
        let (a, b) = block.split_at(8);
        let a = u64::from_le_bytes(a.try_into().expect("8 bytes"));
        let b = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        fold(a ^ h, b ^ SEEDS[1])
    };
    let mut h = SEEDS[0] ^ bytes.len() as u64;
    let (blocks, rest) = bytes.as_chunks::<16>();
    for block in blocks {
        h = step(h, block);
    }
    // As in `quick_bytes`: no copy (a `memcpy` call) for an empty rest.
    if !rest.is_empty() {
        let mut tail = [0u8; 16];
        tail[..rest.len()].copy_from_slice(rest);
        h = step(h, &tail);
    }
    fold(h, SEEDS[2])
}

/// A datagram's length and first and last four bytes in one word: a few instructions, and it
/// tells apart most datagrams that differ (a request from the reply it gets, numbered requests).
fn head(bytes: &[u8]) -> u32 {
    let len = bytes.len();
    let ends = match (bytes.first_chunk::<4>(), bytes.last_chunk::<4>()) {
        (Some(first), Some(last)) => {
            u32::from_le_bytes(*first) ^ u32::from_le_bytes(*last).rotate_left(16)
        }
        _ => bytes.iter().fold(0, |h, b| h << 8 | u32::from(*b)),
    };
    ends ^ (len as u32).wrapping_mul(0x9e37_79b9)
}

// ---------------------------------------------------------------------------------------------
// Connected clients on this host.

/// Whether `peer` is a UDP socket of this host (this network namespace) connected to one peer:
/// such a socket takes datagrams from that peer alone, so it is a client, never the other end of
/// a forged loop. Read from `/proc/net/udp` and `udp6`; only when a source's streak says
/// "loop", so at most once per [`LOOP_STREAK`] datagrams of a suspect.
fn connected_on_this_host(peer: SocketAddr) -> bool {
    ["/proc/net/udp", "/proc/net/udp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|text| connected_in(&text, canonical(peer)))
    })
}

/// Whether the `/proc/net/udp` table `text` has a connected socket (state 01) whose local
/// address is `peer`.
fn connected_in(text: &str, peer: SocketAddr) -> bool {
    text.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let (Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next())
        else {
            return false;
        };
        state == "01" && parse_proc_addr(local).is_some_and(|local| canonical(local) == peer)
    })
}

/// Parses `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): the kernel prints each
/// 32-bit word of the address in host byte order, the port as a number.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::from(word(0)?),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::from(bytes)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> Address {
        Address::Inet(text.parse().unwrap())
    }

    /// A detector that has answered `peer` once with `payload`.
    fn after_one_reply(peer: &Address, payload: &[u8], t0: Instant) -> LoopDetector {
        let mut loops = LoopDetector::default();
        assert_eq!(loops.admit(peer, payload, t0), Verdict::Answer);
        loops.replied(peer, payload, t0);
        loops
    }

    /// Plays an echo loop: every request is the reply just sent, `gap` apart. Returns how many
    /// requests were answered before the first that was not.
    fn echo_loop(loops: &mut LoopDetector, peer: &Address, t0: Instant, gap: Duration) -> u32 {
        let mut t = t0;
        for answered in 0..10_000 {
            t += gap;
            if loops.admit(peer, b"PING", t) != Verdict::Answer {
                return answered;
            }
            loops.replied(peer, b"PING", t);
        }
        10_000
    }

    #[test]
    fn an_echo_loop_is_stopped_within_its_streak() {
        let t0 = Instant::now();
        let peer = addr("192.0.2.7:9999");
        let mut loops = after_one_reply(&peer, b"PING", t0);
        let answered = echo_loop(&mut loops, &peer, t0, Duration::from_micros(20));
        assert_eq!(answered, LOOP_STREAK - 1);
        loops.mute(&peer, t0);
        // Muted for a while, then answered again.
        assert_eq!(loops.admit(&peer, b"PING", t0 + MUTE / 2), Verdict::Muted);
        assert_eq!(loops.admit(&peer, b"PING", t0 + MUTE), Verdict::Answer);
    }

    #[test]
    fn a_loop_fed_by_several_forged_datagrams_is_recognised() {
        let t0 = Instant::now();
        let peer = addr("192.0.2.7:9999");
        let mut loops = LoopDetector::default();
        let payloads: Vec<Vec<u8>> = (0..RECENT_REPLIES).map(|i| vec![i as u8; 3]).collect();
        let mut t = t0;
        let mut answered = 0;
        'outer: for _round in 0..1_000 {
            for p in &payloads {
                t += Duration::from_micros(20);
                if loops.admit(&peer, p, t) != Verdict::Answer {
                    break 'outer;
                }
                loops.replied(&peer, p, t);
                answered += 1;
            }
        }
        assert!(answered < LOOP_STREAK + RECENT_REPLIES as u32, "{answered}");
    }

    #[test]
    fn a_client_that_retransmits_after_a_loss_is_answered() {
        let t0 = Instant::now();
        let peer = addr("192.0.2.7:5353");
        let mut loops = after_one_reply(&peer, b"query", t0);
        // Each reply is lost; the client asks again after its time-out, forever.
        let answered = echo_loop(&mut loops, &peer, t0, Duration::from_millis(200));
        assert_eq!(answered, 10_000);
    }

    #[test]
    fn a_constant_payload_client_slower_than_the_threshold_is_answered() {
        let t0 = Instant::now();
        let peer = addr("192.0.2.7:4000");
        let mut loops = after_one_reply(&peer, b"PING", t0);
        let gap = LOOP_WINDOW / LOOP_STREAK + Duration::from_millis(1); // just under 100/s
        assert_eq!(echo_loop(&mut loops, &peer, t0, gap), 10_000);
    }

    #[test]
    fn requests_that_differ_from_the_replies_never_count() {
        let t0 = Instant::now();
        let peer = addr("192.0.2.7:4000");
        let mut loops = LoopDetector::default();
        for i in 0..10_000u32 {
            let t = t0 + Duration::from_micros(u64::from(i));
            let request = i.to_le_bytes(); // numbered, as bench may number them
            assert_eq!(loops.admit(&peer, &request, t), Verdict::Answer);
            loops.replied(&peer, &request, t);
        }
    }

    #[test]
    fn a_trusted_client_is_never_muted() {
        let t0 = Instant::now();
        let peer = addr("127.0.0.1:40000");
        let mut loops = after_one_reply(&peer, b"PING", t0);
        loops.trust(&peer, t0);
        assert_eq!(
            echo_loop(&mut loops, &peer, t0, Duration::from_micros(5)),
            10_000
        );
    }

    #[test]
    fn trust_expires_so_a_reused_port_is_checked_again() {
        let t0 = Instant::now();
        let peer = addr("127.0.0.1:40000");
        let mut loops = after_one_reply(&peer, b"PING", t0);
        loops.trust(&peer, t0);
        // The client's socket closes; an unconnected socket that answers anybody gets its port.
        let later = t0 + TRUST;
        loops.replied(&peer, b"PING", later);
        let answered = echo_loop(&mut loops, &peer, later, Duration::from_micros(20));
        assert_eq!(answered, LOOP_STREAK - 1, "the streak is counted again");
    }

    #[test]
    fn the_table_of_sources_stays_bounded() {
        let t0 = Instant::now();
        let mut loops = LoopDetector::default();
        let mut t = t0;
        for i in 0..(MAX_TRACKED as u32 + 1000) {
            let peer = Address::Inet((std::net::Ipv4Addr::from(0x0a00_0000 + i), 53).into());
            t += Duration::from_micros(1);
            loops.replied(&peer, b"x", t);
            assert!(loops.sources.len() <= MAX_TRACKED);
            assert!(
                loops.sources.contains(&PeerKey::of(&peer)),
                "every new source is tracked"
            );
        }
        for i in 0.. {
            if loops.sources.len() == MAX_TRACKED {
                break;
            }
            let peer = Address::Inet((std::net::Ipv4Addr::from(0x0b00_0000 + i), 53).into());
            loops.replied(&peer, b"x", t);
        }
        // Silent sources go first.
        loops.replied(&addr("192.0.2.1:1"), b"x", t + LOOP_WINDOW * 2);
        assert_eq!(loops.sources.len(), 1);
    }

    #[test]
    fn a_loop_is_stopped_while_forged_sources_keep_the_table_full() {
        let t0 = Instant::now();
        let mut loops = LoopDetector::default();
        let mut t = t0;
        let mut forged = 0u32;
        let mut forge_one = |loops: &mut LoopDetector, t: Instant| {
            let peer = Address::Inet((std::net::Ipv4Addr::from(0x0a00_0000 + forged), 53).into());
            forged += 1;
            loops.replied(&peer, b"x", t);
        };
        for _ in 0..MAX_TRACKED {
            t += Duration::from_micros(1);
            forge_one(&mut loops, t);
        }
        // An attacker answers a new forged source between every two rounds of the loop.
        let peer = addr("192.0.2.7:9999");
        let mut answered = 0;
        for _ in 0..10_000 {
            t += Duration::from_micros(10);
            forge_one(&mut loops, t);
            t += Duration::from_micros(10);
            if loops.admit(&peer, b"PING", t) != Verdict::Answer {
                break;
            }
            loops.replied(&peer, b"PING", t);
            answered += 1;
        }
        assert!(answered <= LOOP_STREAK, "{answered} answered");
    }

    #[test]
    fn a_full_table_forgets_the_sources_answered_longest_ago_and_keeps_muted_ones() {
        let t0 = Instant::now();
        let mut loops = LoopDetector::default();
        let muted = addr("192.0.2.9:9");
        loops.replied(&muted, b"x", t0);
        loops.mute(&muted, t0);
        for i in 1..MAX_TRACKED as u32 {
            let peer = Address::Inet((std::net::Ipv4Addr::from(0x0a00_0000 + i), 53).into());
            loops.replied(&peer, b"x", t0 + Duration::from_micros(u64::from(i)));
        }
        assert_eq!(loops.sources.len(), MAX_TRACKED);
        let newcomer = addr("192.0.2.1:1");
        loops.replied(&newcomer, b"x", t0 + Duration::from_millis(10));
        assert_eq!(loops.sources.len(), MAX_TRACKED - MAX_TRACKED / 8 + 1);
        assert!(loops.sources.contains(&PeerKey::of(&newcomer)));
        assert!(
            loops.sources.contains(&PeerKey::of(&muted)),
            "muted sources go last"
        );
        let oldest = Address::Inet((std::net::Ipv4Addr::from(0x0a00_0001), 53).into());
        let newest = Address::Inet((std::net::Ipv4Addr::from(0x0a00_0000 + 4095), 53).into());
        assert!(!loops.sources.contains(&PeerKey::of(&oldest)));
        assert!(loops.sources.contains(&PeerKey::of(&newest)));
    }

    #[test]
    fn own_addresses_include_every_local_address_of_a_wildcard_listener() {
        let t0 = Instant::now();
        // Ports no test binds: the list is process-wide.
        let _v4 = Listening::register("0.0.0.0:7".parse().unwrap());
        let _v6 = Listening::register("[::]:9".parse().unwrap());
        let _one = Listening::register("127.0.0.1:13".parse().unwrap());
        let mut own = OwnSnapshot::default();
        let is_own = |own: &mut OwnSnapshot, a: &str| own.contains(a.parse().unwrap(), t0);
        assert!(is_own(&mut own, "127.0.0.1:7"));
        assert!(is_own(&mut own, "127.9.9.9:7"), "all of 127/8 is local");
        assert!(is_own(&mut own, "[::ffff:127.0.0.1]:7"), "IPv4-mapped");
        assert!(!is_own(&mut own, "[::1]:7"), "0.0.0.0 is IPv4 only");
        assert!(!is_own(&mut own, "192.0.2.1:7"), "not a local address");
        assert!(!is_own(&mut own, "127.0.0.1:8"), "another port");
        assert!(is_own(&mut own, "[::1]:9"));
        assert!(is_own(&mut own, "127.0.0.1:9"), "[::] is dual-stack");
        assert!(is_own(&mut own, "127.0.0.1:13"));
        assert!(is_own(&mut own, "[::ffff:127.0.0.1]:13"));
        assert!(
            !is_own(&mut own, "127.0.0.2:13"),
            "a listener on one address owns it alone"
        );
        drop(_one);
        assert!(!is_own(&mut own, "127.0.0.1:13"), "forgotten once it stops");
    }

    #[test]
    fn proc_net_udp_is_read_as_the_kernel_writes_it() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
          1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0\n\
          2: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1 2 0000000000000000 0\n";
        assert!(connected_in(v4, "127.0.0.1:40000".parse().unwrap()));
        assert!(
            !connected_in(v4, "127.0.0.1:53".parse().unwrap()),
            "unconnected"
        );
        assert!(!connected_in(v4, "127.0.0.1:40001".parse().unwrap()));
        let v6 = "  sl  local_address                         remote_address                        st\n\
          0: 00000000000000000000000001000000:9C40 00000000000000000000000001000000:1F90 01\n\
          1: 0000000000000000FFFF00000100007F:9C41 0000000000000000FFFF00000100007F:1F90 01\n";
        assert!(connected_in(v6, "[::1]:40000".parse().unwrap()));
        assert!(
            connected_in(v6, "127.0.0.1:40001".parse().unwrap()),
            "IPv4-mapped"
        );
    }

    #[test]
    fn a_connected_socket_of_this_host_is_found_and_a_listening_one_is_not() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(server.local_addr().unwrap()).unwrap();
        assert!(connected_on_this_host(client.local_addr().unwrap()));
        assert!(!connected_on_this_host(server.local_addr().unwrap()));
    }

    #[test]
    fn fingerprints_tell_payloads_apart() {
        assert_ne!(fingerprint(b""), fingerprint(b"\0"));
        assert_ne!(fingerprint(b"PING"), fingerprint(b"PONG"));
        assert_ne!(fingerprint(&[0; 8]), fingerprint(&[0; 16]));
        assert_eq!(fingerprint(b"the same"), fingerprint(b"the same"));
        // Every byte counts, in every position, whatever the length (the 16-byte blocks, the
        // tail).
        for len in 1..70 {
            let base: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for at in 0..len {
                let mut other = base.clone();
                other[at] ^= 0x20;
                assert_ne!(hash_bytes(&base), hash_bytes(&other), "{len} {at}");
            }
            let mut longer = base.clone();
            longer.push(0);
            assert_ne!(hash_bytes(&base), hash_bytes(&longer), "{len}");
        }
    }

    /// Heads only spare the hash: a request whose head equals a reply's but whose bytes do not
    /// never counts, and one equal to any of the replies remembered always does.
    #[test]
    fn a_request_counts_only_when_it_equals_a_reply_whatever_the_heads() {
        let t0 = Instant::now();
        let peer = addr("192.0.2.7:9999");
        let reply = b"PING 0001 ............ PONG".to_vec();
        let mut same_ends = reply.clone();
        same_ends[10] = b'x'; // the same length and ends: the same head, another hash
        assert_eq!(head(&same_ends), head(&reply));
        let mut loops = after_one_reply(&peer, &reply, t0);
        for i in 0..1_000 {
            let t = t0 + Duration::from_micros(i);
            assert_eq!(loops.admit(&peer, &same_ends, t), Verdict::Answer);
            loops.replied(&peer, &reply, t);
        }
        // Older replies in the ring count as well as the last one.
        for len in 0..RECENT_REPLIES {
            loops.replied(&peer, &vec![b'a'; len], t0);
        }
        let ex = loops.sources.get_mut(&PeerKey::of(&peer)).unwrap();
        for len in 0..RECENT_REPLIES {
            assert!(ex.sent_before(&vec![b'a'; len]), "{len}");
        }
        assert!(!ex.sent_before(&reply), "pushed out of the ring");
        assert!(!ex.sent_before(&[b'a'; RECENT_REPLIES]));
    }
}
