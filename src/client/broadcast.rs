//! UDP broadcast: one datagram out, every reply within the time-out in, one line per responder.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};

use super::errors::{io_err, is_timeout, timed_out};
use super::input::read_datagram;
use super::options::SendOptions;
use super::output::write_out;
use crate::endpoint::Endpoint;
use crate::error::Error;

/// Appends `reply` as the rest of one output line: a trailing line ending is dropped, and any
/// other CR or LF is written as `\r` or `\n`, so each responder stays on a line of its own.
fn one_line(reply: &[u8], line: &mut Vec<u8>) {
    let reply = reply
        .strip_suffix(b"\r\n")
        .or_else(|| reply.strip_suffix(b"\n"))
        .unwrap_or(reply);
    for &byte in reply {
        match byte {
            b'\n' => line.extend_from_slice(b"\\n"),
            b'\r' => line.extend_from_slice(b"\\r"),
            other => line.push(other),
        }
    }
    line.push(b'\n');
}

/// Sends one UDP datagram to a broadcast address and writes every reply that arrives within
/// the timeout as `ADDRESS REPLY` lines (the second deck: "UDP can broadcast"); a reply's own
/// final line ending is dropped and inner CR/LF are escaped, one line per responder. Returns the
/// responders in the order they answered.
///
/// # Errors
///
/// [`Error::Config`] for an endpoint that is not IPv4 UDP (IPv6 has no broadcast), a
/// multicast group (see [`multicast`](super::multicast())), multicast options, or options out
/// of range; [`Error::TimedOut`] when nobody answers.
pub fn broadcast(
    endpoint: &Endpoint,
    input: impl Read,
    output: &mut dyn Write,
    options: &SendOptions,
) -> Result<Vec<SocketAddr>, Error> {
    options.check()?;
    let target = match endpoint {
        Endpoint::Udp { .. } => endpoint
            .socket_addrs()?
            .into_iter()
            .find(SocketAddr::is_ipv4),
        _ => None,
    }
    .ok_or_else(|| Error::Config("broadcast needs an IPv4 udp:// endpoint".into()))?;
    if target.ip().is_multicast() {
        return Err(Error::Config(format!(
            "{} is a multicast group, not a broadcast address: send to it without --broadcast \
             (every member's reply is printed)",
            target.ip()
        )));
    }
    options.refuse_multicast_options(endpoint)?;
    let message = read_datagram(input)?;
    let socket = open(options, target)?;
    socket
        .set_broadcast(true)
        .map_err(|e| io_err("setting SO_BROADCAST", e))?;
    gather(&socket, target, &message, output, options)
}

/// An unconnected UDP socket on `options.bind` (default: the wildcard address of `target`'s
/// family, port 0): unconnected, because replies come from each responder's own address, not
/// from the broadcast or group address the request went to.
pub(super) fn open(options: &SendOptions, target: SocketAddr) -> Result<UdpSocket, Error> {
    let local = options.bind.unwrap_or_else(|| match target {
        SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
    });
    UdpSocket::bind(local).map_err(|source| Error::Bind {
        endpoint: Endpoint::udp(local),
        source,
    })
}

/// Sends `message` to `target` once, then writes every reply that arrives on `socket` within
/// `options.timeout` as one `ADDRESS REPLY` line, from whoever it comes. Returns the
/// responders in the order they answered (with `no_wait`, none: it returns once sent).
///
/// # Errors
///
/// [`Error::TimedOut`] when nobody answers; I/O errors of the socket or the output.
pub(super) fn gather(
    socket: &UdpSocket,
    target: SocketAddr,
    message: &[u8],
    output: &mut dyn Write,
    options: &SendOptions,
) -> Result<Vec<SocketAddr>, Error> {
    socket
        .send_to(message, target)
        .map_err(|e| io_err("sending the datagram", e))?;
    if options.no_wait {
        return Ok(Vec::new());
    }
    let deadline = std::time::Instant::now() + options.timeout;
    let mut responders = Vec::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(|e| io_err("setting the read timeout", e))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => {
                let mut line = format!("{from} ").into_bytes();
                one_line(&buf[..n], &mut line);
                write_out(output, &line)?;
                responders.push(from);
            }
            Err(e) if is_timeout(&e) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err("receiving replies", e)),
        }
    }
    if responders.is_empty() {
        return Err(timed_out(options.timeout));
    }
    Ok(responders)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_broadcast_reply_stays_on_one_line() {
        let mut line = Vec::new();
        super::one_line(b"Saturday\r\n", &mut line);
        super::one_line(b"a\nb\rc\n", &mut line);
        super::one_line(b"plain", &mut line);
        assert_eq!(line, b"Saturday\na\\nb\\rc\nplain\n");
    }
}
