//! The ICMP echo messages, sans-IO: the Internet checksum, the echo request's bytes, and a parser
//! for what an ICMP socket hands back, which is untrusted input (fuzzed in `fuzz/`).
//!
//! An echo request or reply (RFC 792 for IPv4, RFC 4443 for IPv6):
//!
//! ```text
//!  0        8        16                32
//! +--------+--------+-----------------+
//! |  type  |  code  |    checksum     |   type: 8 request / 0 reply (IPv4),
//! +--------+--------+-----------------+         128 request / 129 reply (IPv6)
//! |    identifier   | sequence number |
//! +-----------------+-----------------+
//! |  payload (echoed back unchanged)  |
//! +-----------------------------------+
//! ```
//!
//! A raw IPv4 socket delivers the IP header in front; a raw IPv6 socket and both datagram
//! ("ping") sockets deliver the ICMP message alone. An error message (destination unreachable,
//! time exceeded) quotes the start of the packet that caused it: its IP header and the first 8
//! bytes of our echo request, which carry the identifier and the sequence number.

/// The ICMP header's length in bytes: type, code, checksum, identifier, sequence.
pub const HEADER_BYTES: usize = 8;

/// ICMPv4 echo request and reply, destination unreachable, time exceeded (RFC 792).
const V4_ECHO_REQUEST: u8 = 8;
const V4_ECHO_REPLY: u8 = 0;
const V4_UNREACHABLE: u8 = 3;
const V4_TIME_EXCEEDED: u8 = 11;
/// ICMPv6 destination unreachable, time exceeded, echo request and reply (RFC 4443).
const V6_UNREACHABLE: u8 = 1;
const V6_TIME_EXCEEDED: u8 = 3;
const V6_ECHO_REQUEST: u8 = 128;
const V6_ECHO_REPLY: u8 = 129;

/// IPv4's protocol number for ICMP, and the length of an IPv6 header (which has no options of
/// its own length field; extension headers are not followed in quoted packets).
const IPPROTO_ICMP: u8 = 1;
const V6_HEADER_BYTES: usize = 40;
const IPPROTO_ICMPV6: u8 = 58;

/// How a socket frames what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// A raw IPv4 socket: the IPv4 header, then the ICMP message.
    V4WithIpHeader,
    /// An IPv4 datagram (ping) socket: the ICMP message alone.
    V4,
    /// Any IPv6 ICMP socket: the ICMPv6 message alone.
    V6,
}

/// What one received packet is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// An echo reply.
    EchoReply {
        /// The identifier (on a datagram socket, the kernel's: the socket's local port).
        id: u16,
        /// The sequence number.
        seq: u16,
        /// The echoed payload.
        payload: &'a [u8],
        /// The ICMP message's length (header and payload): what ping's "64 bytes" counts.
        icmp_bytes: usize,
        /// The IPv4 header's TTL, when the packet carried the header.
        ttl: Option<u8>,
    },
    /// An error message that quotes an echo request: which one, and what went wrong.
    Error {
        /// The quoted request's identifier.
        id: u16,
        /// The quoted request's sequence number.
        seq: u16,
        /// The error as ping words it ("Destination Host Unreachable").
        message: &'static str,
    },
    /// Anything else: other types, our own requests looped back, error messages about packets
    /// that were not echo requests.
    Other,
}

/// The Internet checksum (RFC 1071): the one's complement of the one's complement sum of the
/// 16-bit big-endian words, an odd last byte padded with a zero byte.
///
/// A message that carries its correct checksum sums to 0.
///
/// # Examples
///
/// ```
/// use socketkit::ping::icmp::checksum;
///
/// // RFC 1071's worked example: the words 0001 f203 f4f5 f6f7 sum to ddf2 (checksum 220d).
/// assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0x220d);
/// ```
pub fn checksum(bytes: &[u8]) -> u16 {
    let mut chunks = bytes.chunks_exact(2);
    // A u64 holds 2^48 words' sum without overflow: far more than any packet.
    let mut sum: u64 = chunks
        .by_ref()
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request's bytes: the header, then `payload`. `v6` picks ICMPv6's type.
///
/// The checksum is filled in for IPv4. For IPv6 it covers a pseudo-header with the source
/// address, which only the kernel knows, so it is left 0 and the kernel fills it in (it always
/// does on ICMPv6 sockets).
///
/// # Examples
///
/// ```
/// use socketkit::ping::icmp::{checksum, echo_request};
///
/// let request = echo_request(false, 0x1234, 1, b"hi");
/// assert_eq!(&request[..2], &[8, 0]); // echo request, code 0
/// assert_eq!(checksum(&request), 0);
/// ```
pub fn echo_request(v6: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = Vec::with_capacity(HEADER_BYTES + payload.len());
    packet.push(if v6 { V6_ECHO_REQUEST } else { V4_ECHO_REQUEST });
    packet.push(0);
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(payload);
    if !v6 {
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// Reads one received packet. Never panics, whatever the bytes: anything malformed, shorter
/// than a header, or (IPv4) with a wrong checksum is [`Packet::Other`].
///
/// # Examples
///
/// ```
/// use socketkit::ping::icmp::{Layout, Packet, echo_request, parse};
///
/// let mut reply = echo_request(false, 7, 3, b"data");
/// reply[0] = 0; // an echo reply: the same bytes with type 0 and the checksum adjusted
/// reply[2..4].copy_from_slice(&[0, 0]);
/// let sum = socketkit::ping::icmp::checksum(&reply);
/// reply[2..4].copy_from_slice(&sum.to_be_bytes());
/// match parse(&reply, Layout::V4) {
///     Packet::EchoReply { id, seq, payload, .. } => assert_eq!((id, seq, payload), (7, 3, &b"data"[..])),
///     other => panic!("{other:?}"),
/// }
/// assert_eq!(parse(&reply[..7], Layout::V4), Packet::Other); // shorter than a header
/// ```
pub fn parse(bytes: &[u8], layout: Layout) -> Packet<'_> {
    let (icmp, ttl) = match layout {
        Layout::V4WithIpHeader => match ipv4_payload(bytes, IPPROTO_ICMP) {
            Some((icmp, ttl)) => (icmp, Some(ttl)),
            None => return Packet::Other,
        },
        Layout::V4 | Layout::V6 => (bytes, None),
    };
    if icmp.len() < HEADER_BYTES {
        return Packet::Other;
    }
    let v6 = layout == Layout::V6;
    if !v6 && checksum(icmp) != 0 {
        return Packet::Other;
    }
    let (kind, code) = (icmp[0], icmp[1]);
    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
    let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
    let echo_reply = if v6 { V6_ECHO_REPLY } else { V4_ECHO_REPLY };
    if kind == echo_reply && code == 0 {
        return Packet::EchoReply {
            id,
            seq,
            payload: &icmp[HEADER_BYTES..],
            icmp_bytes: icmp.len(),
            ttl,
        };
    }
    let message = match error_message(v6, kind, code) {
        Some(message) => message,
        None => return Packet::Other,
    };
    // The quoted packet follows the 8-byte error header: an IP header, then our request's start.
    let quoted = &icmp[HEADER_BYTES..];
    let request = if v6 {
        (quoted.len() >= V6_HEADER_BYTES && quoted[0] >> 4 == 6 && quoted[6] == IPPROTO_ICMPV6)
            .then(|| &quoted[V6_HEADER_BYTES..])
    } else {
        quoted_ipv4_payload(quoted)
    };
    match request {
        Some(r) if r.len() >= HEADER_BYTES && r[0] == echo_request_type(v6) && r[1] == 0 => {
            Packet::Error {
                id: u16::from_be_bytes([r[4], r[5]]),
                seq: u16::from_be_bytes([r[6], r[7]]),
                message,
            }
        }
        _ => Packet::Other,
    }
}

fn echo_request_type(v6: bool) -> u8 {
    if v6 { V6_ECHO_REQUEST } else { V4_ECHO_REQUEST }
}

/// The IPv4 packet's payload and TTL, if it is a well-formed IPv4 packet of `protocol`.
fn ipv4_payload(bytes: &[u8], protocol: u8) -> Option<(&[u8], u8)> {
    let header = ipv4_header_len(bytes)?;
    if bytes[9] != protocol {
        return None;
    }
    // The total length may be less than what arrived (padding), never more.
    let total = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
    let end = if (header..=bytes.len()).contains(&total) {
        total
    } else {
        bytes.len()
    };
    Some((&bytes[header..end], bytes[8]))
}

/// A quoted IPv4 packet's payload (only its first 8 bytes are quoted, so its total length is
/// not checked), if it carried ICMP.
fn quoted_ipv4_payload(bytes: &[u8]) -> Option<&[u8]> {
    let header = ipv4_header_len(bytes)?;
    (bytes[9] == IPPROTO_ICMP).then(|| &bytes[header..])
}

/// The IPv4 header's length, if `bytes` start with one that is whole.
fn ipv4_header_len(bytes: &[u8]) -> Option<usize> {
    let first = *bytes.first()?;
    let header = usize::from(first & 0x0f) * 4;
    (first >> 4 == 4 && header >= 20 && bytes.len() >= header).then_some(header)
}

/// ping's words for an ICMP error of this type and code (ICMPv6's when `v6`), as iputils prints
/// them: `Destination Host Unreachable`; `None` for a type that is not an error about a packet.
///
/// # Examples
///
/// ```
/// use socketkit::ping::icmp::error_words;
///
/// assert_eq!(error_words(false, 3, 1), Some("Destination Host Unreachable"));
/// assert_eq!(error_words(false, 0, 0), None); // an echo reply
/// ```
pub fn error_words(v6: bool, kind: u8, code: u8) -> Option<&'static str> {
    error_message(v6, kind, code)
}

/// ping's words for an error message, as iputils prints them; `None` for a type that is not
/// an error about a packet.
fn error_message(v6: bool, kind: u8, code: u8) -> Option<&'static str> {
    let message = match (v6, kind, code) {
        (false, V4_UNREACHABLE, 0) => "Destination Net Unreachable",
        (false, V4_UNREACHABLE, 1) => "Destination Host Unreachable",
        (false, V4_UNREACHABLE, 2) => "Destination Protocol Unreachable",
        (false, V4_UNREACHABLE, 3) => "Destination Port Unreachable",
        (false, V4_UNREACHABLE, 4) => "Frag needed",
        (false, V4_UNREACHABLE, 5) => "Source Route Failed",
        (false, V4_UNREACHABLE, 6) => "Destination Net Unknown",
        (false, V4_UNREACHABLE, 7) => "Destination Host Unknown",
        (false, V4_UNREACHABLE, 8) => "Source Host Isolated",
        (false, V4_UNREACHABLE, 9) => "Destination Net Prohibited",
        (false, V4_UNREACHABLE, 10) => "Destination Host Prohibited",
        (false, V4_UNREACHABLE, 11) => "Destination Net Unreachable for Type of Service",
        (false, V4_UNREACHABLE, 12) => "Destination Host Unreachable for Type of Service",
        (false, V4_UNREACHABLE, 13) => "Packet filtered",
        (false, V4_UNREACHABLE, 14) => "Precedence Violation",
        (false, V4_UNREACHABLE, 15) => "Precedence Cutoff",
        (false, V4_UNREACHABLE, _) => "Destination Unreachable",
        (false, V4_TIME_EXCEEDED, 0) => "Time to live exceeded",
        (false, V4_TIME_EXCEEDED, _) => "Frag reassembly time exceeded",
        (true, V6_UNREACHABLE, 0) => "Destination unreachable: No route",
        (true, V6_UNREACHABLE, 1) => "Destination unreachable: Administratively prohibited",
        (true, V6_UNREACHABLE, 3) => "Destination unreachable: Address unreachable",
        (true, V6_UNREACHABLE, 4) => "Destination unreachable: Port unreachable",
        (true, V6_UNREACHABLE, _) => "Destination unreachable",
        (true, V6_TIME_EXCEEDED, 0) => "Time exceeded: Hop limit",
        (true, V6_TIME_EXCEEDED, _) => "Time exceeded: Defragmentation failure",
        _ => return None,
    };
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 as written, word by word with an end-around carry at every step: the reference
    /// the fast sum is checked against.
    fn reference_checksum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut i = 0;
        while i < bytes.len() {
            let hi = u32::from(bytes[i]) << 8;
            let lo = bytes.get(i + 1).map_or(0, |&b| u32::from(b));
            sum += hi | lo;
            if sum > 0xffff {
                sum = (sum & 0xffff) + 1;
            }
            i += 2;
        }
        !(sum as u16)
    }

    /// An echo reply as the peer would send it.
    fn reply(v6: bool, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut packet = echo_request(v6, id, seq, payload);
        packet[0] = if v6 { V6_ECHO_REPLY } else { V4_ECHO_REPLY };
        packet[2..4].copy_from_slice(&[0, 0]);
        if !v6 {
            let sum = checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        packet
    }

    /// A minimal IPv4 header (20 bytes) in front of `payload`.
    fn with_ipv4_header(ttl: u8, protocol: u8, payload: &[u8]) -> Vec<u8> {
        let total = (20 + payload.len()) as u16;
        let mut packet = vec![0x45, 0];
        packet.extend_from_slice(&total.to_be_bytes());
        packet.extend_from_slice(&[0, 0, 0, 0, ttl, protocol, 0, 0]);
        packet.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        packet.extend_from_slice(payload);
        packet
    }

    proptest! {
        #[test]
        fn checksum_agrees_with_rfc_1071_as_written(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(checksum(&bytes), reference_checksum(&bytes));
        }

        #[test]
        fn a_request_carrying_its_checksum_sums_to_zero(
            id: u16, seq: u16, payload in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            prop_assert_eq!(checksum(&echo_request(false, id, seq, &payload)), 0);
        }

        #[test]
        fn replies_parse_back_on_every_layout(
            id: u16, seq: u16, ttl: u8, payload in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            let v4 = reply(false, id, seq, &payload);
            let expected = |ttl| Packet::EchoReply {
                id, seq, payload: &payload, icmp_bytes: payload.len() + 8, ttl,
            };
            prop_assert_eq!(parse(&v4, Layout::V4), expected(None));
            let raw = with_ipv4_header(ttl, IPPROTO_ICMP, &v4);
            prop_assert_eq!(parse(&raw, Layout::V4WithIpHeader), expected(Some(ttl)));
            let v6 = reply(true, id, seq, &payload);
            prop_assert_eq!(parse(&v6, Layout::V6), expected(None));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            for layout in [Layout::V4WithIpHeader, Layout::V4, Layout::V6] {
                let _ = parse(&bytes, layout);
            }
        }
    }

    #[test]
    fn a_reply_shorter_than_a_header_is_dropped() {
        let full = reply(false, 1, 1, b"");
        for len in 0..HEADER_BYTES {
            assert_eq!(parse(&full[..len], Layout::V4), Packet::Other, "{len}");
            assert_eq!(parse(&full[..len], Layout::V6), Packet::Other, "{len}");
            let raw = with_ipv4_header(64, IPPROTO_ICMP, &full[..len]);
            assert_eq!(parse(&raw, Layout::V4WithIpHeader), Packet::Other);
        }
        // A truncated IP header, and an IHL that points past the end.
        let raw = with_ipv4_header(64, IPPROTO_ICMP, &full);
        assert_eq!(parse(&raw[..19], Layout::V4WithIpHeader), Packet::Other);
        let mut long_ihl = raw.clone();
        long_ihl[0] = 0x4f;
        assert_eq!(parse(&long_ihl, Layout::V4WithIpHeader), Packet::Other); // 60-byte header, 28 bytes
    }

    #[test]
    fn our_own_requests_and_other_types_are_not_replies() {
        // On loopback a raw socket also sees the requests it sent.
        assert_eq!(
            parse(&echo_request(false, 1, 1, b"x"), Layout::V4),
            Packet::Other
        );
        assert_eq!(
            parse(&echo_request(true, 1, 1, b"x"), Layout::V6),
            Packet::Other
        );
        // An IPv6 reply type read as IPv4 and the other way round.
        assert_eq!(parse(&reply(true, 1, 1, b""), Layout::V4), Packet::Other);
        // Router advertisement (134), timestamp reply (14).
        assert_eq!(
            parse(&[134, 0, 0, 0, 0, 0, 0, 0], Layout::V6),
            Packet::Other
        );
        let mut timestamp = reply(false, 1, 1, b"");
        timestamp[0] = 14;
        assert_eq!(parse(&timestamp, Layout::V4), Packet::Other);
        // A raw IPv4 packet that is not ICMP.
        let udp = with_ipv4_header(64, 17, &reply(false, 1, 1, b""));
        assert_eq!(parse(&udp, Layout::V4WithIpHeader), Packet::Other);
    }

    #[test]
    fn an_ipv4_reply_with_a_bad_checksum_is_dropped() {
        let mut bad = reply(false, 1, 1, b"payload");
        bad[9] ^= 0xff;
        assert_eq!(parse(&bad, Layout::V4), Packet::Other);
    }

    #[test]
    fn errors_quoting_our_request_name_its_sequence() {
        // Host unreachable (3/1) from a router, quoting our request's IP header and first 8 bytes.
        let request = echo_request(false, 0xbeef, 42, b"payload");
        let quoted = with_ipv4_header(63, IPPROTO_ICMP, &request[..8]);
        let mut error = vec![V4_UNREACHABLE, 1, 0, 0, 0, 0, 0, 0];
        error.extend_from_slice(&quoted);
        let sum = checksum(&error);
        error[2..4].copy_from_slice(&sum.to_be_bytes());
        let raw = with_ipv4_header(64, IPPROTO_ICMP, &error);
        assert_eq!(
            parse(&raw, Layout::V4WithIpHeader),
            Packet::Error {
                id: 0xbeef,
                seq: 42,
                message: "Destination Host Unreachable"
            }
        );
        // The same error about a UDP datagram is not ours.
        let mut udp_error = vec![V4_UNREACHABLE, 3, 0, 0, 0, 0, 0, 0];
        udp_error.extend_from_slice(&with_ipv4_header(63, 17, &[0; 8]));
        let sum = checksum(&udp_error);
        udp_error[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(parse(&udp_error, Layout::V4), Packet::Other);

        // ICMPv6 address unreachable (1/3), quoting a 40-byte IPv6 header.
        let request = echo_request(true, 9, 7, b"");
        let mut v6_header = vec![0x60, 0, 0, 0, 0, 8, IPPROTO_ICMPV6, 64];
        v6_header.extend_from_slice(&[0; 32]);
        let mut error = vec![V6_UNREACHABLE, 3, 0, 0, 0, 0, 0, 0];
        error.extend_from_slice(&v6_header);
        error.extend_from_slice(&request);
        assert_eq!(
            parse(&error, Layout::V6),
            Packet::Error {
                id: 9,
                seq: 7,
                message: "Destination unreachable: Address unreachable"
            }
        );
    }
}
