//! Clients: the one-shot `send` and the interactive `talk` (behind `socketkit send` and
//! `socketkit client`).
//!
//! On a stream, `send` behaves like the slides' TCP client grown up: it writes the whole
//! message, half-closes its write side (the server then reads EOF, the "0 bytes after close()"
//! of the slides), and copies every byte of the reply until the server closes. On datagrams it
//! sends one datagram and returns the one reply. `talk` is the slides' client in a loop: one
//! datagram per input line, or full duplex on a stream, like nc.
//!
//! This file holds the two entry points; [`broadcast()`], [`multicast()`] and the parts are in
//! their own files:
//! `options` ([`SendOptions`], [`SendReport`]), `stream` (connect and the full-duplex copy),
//! `datagram` (one request, one reply), `listen` ([`listen()`]: nc's `-l`), `input` (the message from the input, and input lines
//! as framed messages), `output` (replies to the output), `errors` (the shared wording of
//! failures and time-outs).

mod broadcast;
mod datagram;
mod errors;
mod input;
mod listen;
mod multicast;
mod options;
mod output;
mod packet;
mod stream;

use std::io::{self, BufRead, Read, Write};
use std::time::Instant;

use crate::endpoint::{Endpoint, Transport};
use crate::error::Error;
use crate::limits::MAX_DATAGRAM_BYTES;

pub use broadcast::broadcast;
use datagram::DatagramClient;
use errors::{io_err, max_time_passed};
use input::{read_datagram, read_message_line};
pub use listen::{ListenEvents, ListenOptions, listen};
pub use multicast::multicast;
pub use options::{SendOptions, SendReport};
use output::write_out;
use stream::{StreamClient, Waits};

/// Sends `input` to `endpoint` and copies the reply to `output`.
///
/// # Examples
///
/// ```
/// use socketkit::{Server, client::{send, SendOptions}};
///
/// let server = Server::builder().listen("udp://127.0.0.1:0".parse()?).bind()?;
/// let endpoint = server.local_endpoints()[0].clone();
/// let stop = server.shutdown_handle();
/// let serving = std::thread::spawn(move || server.serve_forever());
///
/// let mut reply = Vec::new();
/// send(&endpoint, &b"hello"[..], &mut reply, &SendOptions::default())?;
/// assert_eq!(reply, b"HELLO");
/// # stop.shutdown();
/// # serving.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # When it stops waiting
///
/// On a stream, the first of these ends the exchange:
///
/// - the server closes its side (EOF): done;
/// - `quit_after` is set, the whole message has been sent, and nothing has arrived for that
///   long since the last data either way: done (nc's `-q`);
/// - nothing arrives for `timeout` (between two reads, or before the first): [`Error::TimedOut`];
/// - `max_time` passes since the call began, whatever is still arriving: [`Error::TimedOut`].
///
/// On datagrams the one reply ends it, and `timeout` (or `max_time`, if shorter) bounds the
/// wait. With `no_wait`, it returns once the message is sent, on either kind.
///
/// On `unixpacket://` the message goes as one record; then as on a stream: a half-close, and
/// every reply record is copied out until the server closes.
///
/// # Errors
///
/// [`Error::Connect`] when no address accepts the connection (refused: kind `Refused`),
/// [`Error::Bind`] when the `bind` address cannot be bound, [`Error::Reset`] when the server
/// resets the connection (before any reply: kind `Refused`), [`Error::TimedOut`] when the reply
/// does not come in time, [`Error::Protocol`] for a reply that breaks the framing (in `line` or
/// `length` framing, a stream that ends inside a frame or without a reply to any message),
/// [`Error::NameNotFound`] for a host that does not resolve, [`Error::Config`] for a datagram
/// message larger than one datagram, for options out of range (a zero time-out), for a
/// multicast group (see [`multicast()`]) and for multicast options on any other endpoint.
pub fn send(
    endpoint: &Endpoint,
    input: impl Read + Send + 'static,
    output: &mut dyn Write,
    options: &SendOptions,
) -> Result<SendReport, Error> {
    options.check()?;
    refuse_group(endpoint)?;
    options.refuse_multicast_options(endpoint)?;
    let deadline = options
        .max_time
        .map(|total| (Instant::now() + total, total));
    if endpoint.transport() == Transport::UnixSeqpacket {
        return packet::send(endpoint, input, output, options, deadline);
    }
    if endpoint.transport().is_stream() {
        let stream = StreamClient::connect(endpoint, options, deadline)?;
        let input = Box::new(io::BufReader::new(input));
        let waits = Waits {
            idle: Some(options.timeout),
            quit_after: options.quit_after,
            deadline,
            no_wait: options.no_wait,
            both_ends: false,
        };
        return stream.exchange(endpoint, input, output, waits, true, options);
    }
    let message = read_datagram(input)?;
    // One wait for the one reply: -w, or what is left of --max-time if that is shorter.
    let mut datagram_options = options.clone();
    let by_max_time = deadline.filter(|(_, total)| *total < options.timeout);
    if let Some((_, total)) = by_max_time {
        datagram_options.timeout = total;
    }
    let mut client = DatagramClient::connect(endpoint, &datagram_options)?;
    if options.no_wait {
        client.send_only(&message)?;
        return Ok(SendReport {
            local: client.local.clone(),
            peer: client.peer(),
            sent: message.len() as u64,
            received: 0,
        });
    }
    let reply = match (client.request(&message), by_max_time) {
        (Err(Error::TimedOut { .. }), Some((_, total))) => return Err(max_time_passed(total)),
        (result, _) => result?,
    };
    write_out(output, &reply)?;
    Ok(SendReport {
        local: client.local.clone(),
        peer: client.peer(),
        sent: message.len() as u64,
        received: reply.len() as u64,
    })
}

/// Talks to `endpoint` interactively, like the slides' clients in a loop.
///
/// - Datagrams: each line of `input` (without its line ending) is sent as one datagram, and
///   the reply is written to `output` followed by a newline, like Python's `print`. Before
///   each line, `prompt` (if any) is written to `output`. A missing reply is reported on stderr
///   and counted; the session goes on.
/// - Sequenced packets (`unixpacket://`): each line is one record and each reply record is
///   printed on a line of its own, as on datagrams, but full duplex, as on streams.
/// - Streams: full duplex, like nc: `input` is copied to the socket and the socket to `output`;
///   at the end of `input` the write side is half-closed (unless `half_close` is false), and
///   the call returns when the server closes.
///
/// # Errors
///
/// As [`send`]; and [`Error::TimedOut`] at the end when any datagram went unanswered. On
/// streams, `options.quit_after` applies as in [`send`]; `timeout` bounds only the connection.
pub fn talk(
    endpoint: &Endpoint,
    input: impl BufRead + Send + 'static,
    output: &mut dyn Write,
    prompt: Option<&str>,
    half_close: bool,
    options: &SendOptions,
) -> Result<SendReport, Error> {
    options.check()?;
    refuse_group(endpoint)?;
    options.refuse_multicast_options(endpoint)?;
    if endpoint.transport() == Transport::UnixSeqpacket {
        return packet::talk(endpoint, input, output, half_close, options);
    }
    if endpoint.transport().is_stream() {
        let stream = StreamClient::connect(endpoint, options, None)?;
        let waits = Waits {
            idle: None,
            quit_after: options.quit_after,
            deadline: None,
            no_wait: false,
            both_ends: false,
        };
        return stream.exchange(
            endpoint,
            Box::new(input),
            output,
            waits,
            half_close,
            options,
        );
    }
    let mut client = DatagramClient::connect(endpoint, options)?;
    let mut report = SendReport {
        local: client.local.clone(),
        peer: client.peer(),
        sent: 0,
        received: 0,
    };
    let mut missed = 0usize;
    let mut input = input;
    loop {
        if let Some(prompt) = prompt {
            write!(output, "{prompt}")
                .and_then(|()| output.flush())
                .map_err(|e| io_err("writing the prompt", e))?;
        }
        let Some(line) = read_message_line(&mut input, MAX_DATAGRAM_BYTES, "datagram")? else {
            break;
        };
        match client.request(&line) {
            Ok(mut reply) => {
                report.sent += line.len() as u64;
                report.received += reply.len() as u64;
                reply.push(b'\n');
                write_out(output, &reply)?;
            }
            Err(e @ Error::TimedOut { .. }) => {
                missed += 1;
                tracing::warn!("no reply: {e}");
            }
            Err(e) => return Err(e),
        }
    }
    if prompt.is_some() {
        let _ = writeln!(output);
    }
    if missed > 0 {
        return Err(Error::TimedOut {
            what: if missed == 1 {
                "1 reply"
            } else {
                "some replies"
            },
            after: options.timeout,
        });
    }
    Ok(report)
}

/// A group has many members, and `send` and `talk` wait for one reply from one address: its
/// replies come from each member's own address, which a connected socket would never see.
fn refuse_group(endpoint: &Endpoint) -> Result<(), Error> {
    if crate::multicast::group_addr(endpoint)?.is_some() {
        return Err(Error::Config(format!(
            "{endpoint} is a multicast group, whose members reply from their own addresses: \
             `socketkit send` (client::multicast) prints every member's reply"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn options_out_of_range_are_refused_before_any_socket() {
        // Port 9 on loopback: nothing is sent, the options are refused first.
        let endpoint: Endpoint = "udp://127.0.0.1:9".parse().unwrap();
        for options in [
            SendOptions {
                timeout: Duration::ZERO,
                ..SendOptions::default()
            },
            SendOptions {
                timeout: Duration::MAX,
                ..SendOptions::default()
            },
            SendOptions {
                max_line: 0,
                ..SendOptions::default()
            },
        ] {
            let err = send(&endpoint, &b"x"[..], &mut Vec::new(), &options).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Usage, "{err}");
            let err = broadcast(&endpoint, &b"x"[..], &mut Vec::new(), &options).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Usage, "{err}");
        }
    }
}
