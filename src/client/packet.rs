//! The sequenced-packet client (`unixpacket://`): a connection like a stream's, messages like
//! datagrams. `send` sends the message as one record, half-closes, and writes every reply
//! record out until the server closes; `talk` sends each input line as one record and prints
//! each reply record on a line of its own, full duplex.

use std::io::{self, BufRead, Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::MsgFlags;
use socket2::Socket;

use super::errors::{io_err, max_time_passed, timed_out};
use super::input::{read_message, read_message_line};
use super::options::{SendOptions, SendReport};
use super::output::write_out;
use super::stream::unix_server_address;
use crate::codec::Framing;
use crate::dump::{Direction, Dump};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::limits::MAX_DATAGRAM_BYTES_V6;
use crate::seqpacket;
use crate::service::Address;

/// The largest record sent: what a socketkit server reads by default (`Limits::max_datagram`).
const MAX_RECORD_BYTES: usize = MAX_DATAGRAM_BYTES_V6;
/// The largest reply record taken: above the kernel's default socket buffer (208 KiB), which
/// bounds one record a peer can send unless `net.core.wmem_max` was raised and the peer asked
/// for more (a longer record is then cut to this).
const MAX_REPLY_BYTES: usize = 256 * 1024;

/// Connects, refusing what a record transport cannot do: a framing (records are the
/// messages). A path with a stream or datagram socket is a usage error (the scheme is wrong);
/// a path that is no socket is refused like any connection nobody accepts.
fn connect(endpoint: &Endpoint, options: &SendOptions) -> Result<Socket, Error> {
    if options.framing != Framing::Raw {
        return Err(Error::Config(format!(
            "{endpoint} keeps message boundaries itself (one record is one message): \
             --framing {} does not apply",
            options.framing
        )));
    }
    seqpacket::connect(endpoint, options.timeout).map_err(|e| {
        let other_type = e.raw_os_error() == Some(nix::libc::EPROTOTYPE);
        let e = seqpacket::wrong_kind(endpoint, e);
        if other_type {
            Error::BadEndpoint {
                text: endpoint.to_string(),
                reason: e.to_string(),
            }
        } else if e.kind() == io::ErrorKind::WouldBlock {
            Error::TimedOut {
                what: "the connection",
                after: options.timeout,
            }
        } else {
            Error::Connect {
                endpoint: endpoint.clone(),
                source: e,
            }
        }
    })
}

fn report(endpoint: &Endpoint, sent: u64, received: u64) -> SendReport {
    SendReport {
        local: Address::Unix(None),
        peer: unix_server_address(endpoint),
        sent,
        received,
    }
}

/// Shows a record in the dump, if there is one; the peer is the server's address.
fn tap(dump: Option<&Dump>, endpoint: &Endpoint, direction: Direction, record: &[u8]) {
    if let Some(dump) = dump {
        dump.chunk(&unix_server_address(endpoint), direction, record);
    }
}

/// Receives one reply record, waiting at most `wait` (`None`: the peer's end, 0 bytes).
fn recv(socket: &Socket, buf: &mut [u8], wait: Option<Duration>) -> io::Result<usize> {
    socket.set_read_timeout(wait)?;
    loop {
        match seqpacket::recv_record(socket.as_fd(), buf, MsgFlags::empty()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

fn reply_error(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::InvalidData {
        return Error::Protocol(e.to_string());
    }
    io_err("receiving a reply", e)
}

/// `send` on `unixpacket://`: the whole input as one record; see [`super::send`].
pub(super) fn send(
    endpoint: &Endpoint,
    input: impl Read,
    output: &mut dyn Write,
    options: &SendOptions,
    deadline: Option<(Instant, Duration)>,
) -> Result<SendReport, Error> {
    let message = read_message(input, MAX_RECORD_BYTES, "record")?;
    let socket = connect(endpoint, options)?;
    socket
        .set_write_timeout(Some(options.timeout))
        .and_then(|()| seqpacket::send_record(socket.as_fd(), &message, MsgFlags::empty()))
        .map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock => timed_out(options.timeout),
            _ => io_err("sending the message", e),
        })?;
    let sent = message.len() as u64;
    tap(options.dump.as_ref(), endpoint, Direction::Sent, &message);
    if options.no_wait {
        return Ok(report(endpoint, sent, 0));
    }
    // The server reads the end after the record: it answers, then closes.
    socket
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| io_err("half-closing", e))?;
    let mut buf = vec![0u8; MAX_REPLY_BYTES];
    let mut received = 0u64;
    loop {
        let mut wait = options.quit_after.unwrap_or(options.timeout);
        let mut by_max_time = None;
        if let Some((at, total)) = deadline {
            let left = at.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(max_time_passed(total));
            }
            if left < wait {
                (wait, by_max_time) = (left, Some(total));
            }
        }
        match recv(&socket, &mut buf, Some(wait)) {
            Ok(0) => return Ok(report(endpoint, sent, received)),
            Ok(n) => {
                received += n as u64;
                tap(
                    options.dump.as_ref(),
                    endpoint,
                    Direction::Received,
                    &buf[..n],
                );
                write_out(output, &buf[..n])?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return match (by_max_time, options.quit_after) {
                    (Some(total), _) => Err(max_time_passed(total)),
                    (None, Some(_)) => Ok(report(endpoint, sent, received)),
                    (None, None) => Err(timed_out(options.timeout)),
                };
            }
            Err(e) => return Err(reply_error(e)),
        }
    }
}

/// `talk` on `unixpacket://`: each input line (without its ending) is one record, each reply
/// record is printed on a line of its own, as the datagram client does; but full duplex, like
/// a stream, since the connection is reliable: a service may answer no record (discard) or
/// several. At the input's end the write side is half-closed (unless `half_close` is false),
/// and it returns when the server closes.
pub(super) fn talk(
    endpoint: &Endpoint,
    input: impl BufRead + Send + 'static,
    output: &mut dyn Write,
    half_close: bool,
    options: &SendOptions,
) -> Result<SendReport, Error> {
    let socket = connect(endpoint, options)?;
    let writer = socket
        .try_clone()
        .map_err(|e| io_err("cannot clone the socket", e))?;
    // Counted as the input thread goes: it may still wait for a line when the server closes.
    let sent = Arc::new(AtomicU64::new(0));
    let counted = sent.clone();
    let dump = options.dump.clone();
    let server = endpoint.clone();
    let sending = std::thread::Builder::new()
        .name("socketkit-input".into())
        .spawn(move || {
            let shown = |line: &[u8]| tap(dump.as_ref(), &server, Direction::Sent, line);
            send_lines(&writer, input, half_close, &counted, shown)
        })
        .map_err(|e| io_err("cannot start the input thread", e))?;
    let mut buf = vec![0u8; MAX_REPLY_BYTES];
    let mut received = 0u64;
    let read = loop {
        match recv(&socket, &mut buf, None) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                received += n as u64;
                tap(
                    options.dump.as_ref(),
                    endpoint,
                    Direction::Received,
                    &buf[..n],
                );
                let mut line = buf[..n].to_vec();
                line.push(b'\n');
                if let Err(e) = write_out(output, &line) {
                    break Err(e);
                }
            }
            Err(e) => break Err(reply_error(e)),
        }
    };
    // The server closed (or the output failed): the input thread may still wait for a line;
    // its writes now fail, and the process's end does not wait for it.
    let _ = socket.shutdown(std::net::Shutdown::Both);
    read?;
    if sending.is_finished() {
        sending.join().unwrap_or(Ok(()))?;
    }
    Ok(report(endpoint, sent.load(Ordering::Relaxed), received))
}

/// The input thread of [`talk`]: one record per line, adding the bytes sent to `sent`.
fn send_lines(
    socket: &Socket,
    mut input: impl BufRead,
    half_close: bool,
    sent: &AtomicU64,
    shown: impl Fn(&[u8]),
) -> Result<(), Error> {
    while let Some(line) = read_message_line(&mut input, MAX_RECORD_BYTES, "record")? {
        if line.is_empty() {
            continue; // an empty record would read as the end at the server
        }
        match seqpacket::send_record(socket.as_fd(), &line, MsgFlags::empty()) {
            Ok(n) => {
                sent.fetch_add(n as u64, Ordering::Relaxed);
                shown(&line);
            }
            Err(e) => return Err(io_err("sending a line", e)),
        }
    }
    if half_close {
        let _ = socket.shutdown(std::net::Shutdown::Write);
    }
    Ok(())
}
