//! A minimal ping: one ICMP echo request to a host and its reply, with the standard library and
//! socket2 only.
//!
//! The slide "Summary of Socket Types" lists `socket.SOCK_RAW`: "Gives access to subnetwork
//! layer". This is it: below UDP and TCP there are no ports, and the program writes the ICMP
//! header itself (type 8, code 0, checksum, identifier, sequence) and reads the IP header the
//! kernel hands back in front of the reply. A raw socket needs root (or CAP_NET_RAW); where
//! `net.ipv4.ping_group_range` allows it, Linux also offers an unprivileged ICMP socket of
//! type SOCK_DGRAM, which this program tries first, as iputils ping does.
//!
//! In Python it would read:
//!   s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
//!   s.sendto(icmp_echo_request, (host, 0))
//!   packet, addr = s.recvfrom(1024)
//!
//! Run: `cargo run --example ping [HOST]` (default 127.0.0.1; IPv4).
//! `socketkit ping` is the full tool (IPv6, counts, statistics).

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// The Internet checksum (RFC 1071): one's complement of the one's complement sum of 16-bit words.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn main() -> io::Result<()> {
    let host: Ipv4Addr = std::env::args()
        .nth(1)
        .map_or(Ipv4Addr::LOCALHOST, |h| h.parse().expect("an IPv4 address"));

    // socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP), else socket(AF_INET, SOCK_RAW, IPPROTO_ICMP).
    let (socket, raw) = match Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)) {
        Ok(socket) => (socket, false),
        Err(_) => (
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?,
            true,
        ),
    };
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;

    // The echo request: type 8, code 0, checksum, identifier, sequence 1, then a payload.
    // (On the SOCK_DGRAM socket the kernel replaces the identifier with its own.)
    let id = std::process::id() as u16;
    let mut request = vec![8, 0, 0, 0];
    request.extend_from_slice(&id.to_be_bytes());
    request.extend_from_slice(&1u16.to_be_bytes());
    request.extend_from_slice(b"the slides' SOCK_RAW");
    let sum = checksum(&request);
    request[2..4].copy_from_slice(&sum.to_be_bytes());

    // connect(): on an ICMP socket it only fixes the peer, so send() needs no address and
    // recv() hears from that host alone.
    socket.connect(&SocketAddr::from((host, 0)).into())?;
    let started = Instant::now();
    socket.send(&request)?;

    // recv(): a raw socket sees every ICMP packet from the host (our own request too, when it
    // is this machine), so wait for an echo reply (type 0) with our sequence number and
    // payload. It comes after the IP header (20 bytes or more) on the raw socket, on its own on
    // the datagram one.
    // The 2 s read time-out restarts with each packet read, so a steady stream of other
    // ICMP packets is bounded by an overall deadline too.
    let deadline = started + Duration::from_secs(2);
    let mut packet = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        socket.set_read_timeout(Some(left))?;
        let n = (&socket).read(&mut packet)?;
        let icmp = if raw {
            let header = usize::from(packet[0] & 0x0f) * 4;
            &packet[header.min(n)..n]
        } else {
            &packet[..n]
        };
        if icmp.len() >= 8 && icmp[0] == 0 && icmp[6..] == request[6..] {
            println!(
                "{} bytes from {host}: icmp_seq=1 time={:.3} ms",
                icmp.len(),
                started.elapsed().as_secs_f64() * 1000.0
            );
            return Ok(());
        }
    }
}
