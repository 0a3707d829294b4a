//! One stream connection's conversation: requests written while replies are read, pipelined,
//! each reply checked and timed, every failure counted by its kind.

use std::collections::VecDeque;
use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep_until};

use super::counters::Failure;
use super::pace::Pacer;
use super::run::{Run, Tally, describe};
use crate::handler::AsyncStream;

/// Which requests a conversation sends.
pub(super) enum Requests<'a> {
    /// Claim tickets until the run's bound, each sent at its turn.
    Claimed(&'a mut Pacer),
    /// One request, whose latency counts from this instant.
    One(Instant),
}

/// Why a conversation ended early (already counted).
pub(super) struct Ended;

/// The kind of an I/O error on a connection that has answered `answered` requests and has
/// `got` bytes of the current reply: a reset before any reply is a refusal in all but name.
pub(super) fn kind_of(error: &io::Error, answered: u64, got: usize) -> Failure {
    match error.kind() {
        io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => {
            if got > 0 {
                Failure::Truncated
            } else if answered == 0 {
                Failure::Reset
            } else {
                Failure::Closed
            }
        }
        io::ErrorKind::ConnectionRefused => Failure::Refused,
        io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => Failure::Unreachable,
        _ => Failure::Other,
    }
}

/// Counts a connection that ended without an I/O error after `answered` replies: the server
/// closed it (`Closed`, or `Truncated` in the middle of a reply), or it accepted no more bytes.
pub(super) fn ended(run: &Run, kind: Failure, answered: u64) {
    run.counters.fail(kind, || match kind {
        Failure::Closed if answered == 0 => {
            "the server closed the connection before any reply".to_string()
        }
        Failure::Closed => format!(
            "the server closed the connection after {answered} replies, with a request unanswered"
        ),
        Failure::Truncated => {
            "the server closed the connection in the middle of a reply".to_string()
        }
        _ => "the connection accepted no more bytes".to_string(),
    });
    count_pattern(run, answered);
}

/// Notes a connection that failed after exactly one reply: the mark of a server that closes
/// after one reply (pingpong's hint).
pub(super) fn count_pattern(run: &Run, answered: u64) {
    if answered == 1 {
        run.count(&run.counters.after_one_reply);
    }
}

/// Drives one stream connection: writes requests while it reads replies (so that a message
/// larger than both sockets' buffers cannot deadlock), at most `pipeline` in flight, and checks
/// every reply. Every request must be answered within the time-out of its first byte written,
/// so `-w` bounds every wait, on a write as on a read. Returns `Ok` once the requests are all
/// answered, or `Err` at the first failure, counted: the connection is out of step then.
pub(super) async fn converse(
    run: &Run,
    conn: &mut Box<dyn AsyncStream>,
    pipeline: usize,
    mut requests: Requests<'_>,
    tally: &mut Tally,
) -> Result<(), Ended> {
    let (mut reader, mut writer) = tokio::io::split(conn);
    let request = &run.request[..];
    let mut buf = vec![0u8; run.reply.len()];
    let mut got = 0; // bytes of the reply now being read
    let mut answered = 0u64; // whole replies on this connection
    // Per request in flight: when its latency counts from, and its deadline.
    let mut in_flight: VecDeque<(Instant, Instant)> = VecDeque::with_capacity(pipeline);
    let mut written: Option<usize> = None; // bytes written of the request being written
    let mut due: Option<Instant> = None; // a claimed request waiting for its turn
    let mut exhausted = false;
    let paced = run.plan.rate.is_some();
    loop {
        if written.is_none() && due.is_none() && !exhausted && in_flight.len() < pipeline {
            let next = match &mut requests {
                Requests::Claimed(_) => run
                    .claim()
                    .map(|ticket| run.intended(ticket).unwrap_or_else(Instant::now)),
                Requests::One(since) => Some(*since),
            };
            match next {
                Some(at) => due = Some(at),
                None => exhausted = true,
            }
            if let Requests::One(_) = requests {
                exhausted = true;
            }
        }
        if let Some(at) = due.filter(|_| written.is_none()) {
            let now = Instant::now();
            let waits = matches!(requests, Requests::Claimed(_)) && paced;
            if !waits || now >= at {
                if waits {
                    tally.lag(at);
                }
                in_flight.push_back((at, now + run.plan.timeout));
                written = Some(0);
                due = None;
            }
        }
        if written.is_none() && due.is_none() && in_flight.is_empty() {
            return Ok(());
        }
        let deadline = in_flight.front().map(|&(_, deadline)| deadline);
        let pacer = match &mut requests {
            Requests::Claimed(pacer) => Some(&mut **pacer),
            Requests::One(_) => None,
        };
        let failure = tokio::select! {
            read = reader.read(&mut buf[got..]), if !in_flight.is_empty() => match read {
                Ok(0) => Some(if got == 0 { Failure::Closed } else { Failure::Truncated }),
                Err(e) => {
                    let kind = kind_of(&e, answered, got);
                    run.counters.fail(kind, || describe(kind, &e));
                    count_pattern(run, answered);
                    return Err(Ended);
                }
                Ok(n) => {
                    run.counters.add(&run.counters.bytes_received, n as u64);
                    got += n;
                    if got == buf.len() {
                        got = 0;
                        if buf != run.reply {
                            run.mismatch(&buf);
                            return Err(Ended);
                        }
                        let (since, _) = in_flight.pop_front().expect("a request in flight");
                        run.record(tally, since);
                        answered += 1;
                    }
                    None
                }
            },
            wrote = writer.write(&request[written.unwrap_or(0)..]), if written.is_some() => {
                match wrote {
                    Ok(n) if n > 0 => {
                        run.counters.add(&run.counters.bytes_sent, n as u64);
                        let total = written.unwrap_or(0) + n;
                        written = (total < request.len()).then_some(total);
                        None
                    }
                    Ok(_) => Some(Failure::Other),
                    Err(e) => {
                        let kind = kind_of(&e, answered, got);
                        run.counters.fail(kind, || describe(kind, &e));
                        count_pattern(run, answered);
                        return Err(Ended);
                    }
                }
            }
            () = async {
                match (pacer, due) {
                    (Some(pacer), Some(at)) => pacer.until(at).await,
                    _ => std::future::pending().await,
                }
            }, if due.is_some() && written.is_none() && paced => None,
            () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                run.count(&run.counters.timeouts);
                return Err(Ended);
            }
        };
        if let Some(kind) = failure {
            ended(run, kind, answered);
            return Err(Ended);
        }
    }
}
