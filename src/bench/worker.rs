//! The load loops, one async task per connection (or socket, or worker).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, sleep_until, timeout};

use super::converse::{Requests, converse, kind_of};
use super::counters::Failure;
use super::pace::Pacer;
use super::plan::Mode;
use super::run::{Run, Tally, describe};
use super::target::Target;

/// One task of the run, by mode.
pub(crate) async fn task(run: Arc<Run>, index: usize) {
    let mut tally = Tally::new(&run);
    match run.plan.mode {
        Mode::Pingpong => pingpong(&run, &mut tally).await,
        Mode::Connect => connect_per_request(&run, &mut tally).await,
        Mode::Udp => udp(&run, &mut tally).await,
        Mode::Stream => stream(&run, index).await,
        Mode::Idle => idle(&run, &mut tally).await,
    }
    tally.finish();
}

async fn pingpong(run: &Run, tally: &mut Tally) {
    let mut pacer = Pacer::new();
    loop {
        if run.out_of_time() {
            return;
        }
        let mut conn = match run.connect().await {
            Ok(conn) => conn,
            Err(e) => {
                // A failed connection costs a request, so a request-bounded run against a
                // server that refuses still ends.
                if run.claim().is_none() {
                    return;
                }
                run.connect_failed(&e);
                run.back_off().await;
                continue;
            }
        };
        let requests = Requests::Claimed(&mut pacer);
        if converse(run, &mut conn, run.plan.pipeline.max(1), requests, tally)
            .await
            .is_ok()
        {
            return;
        }
    }
}

async fn connect_per_request(run: &Run, tally: &mut Tally) {
    let mut pacer = Pacer::new();
    while let Some(ticket) = run.claim() {
        // The connect is part of the request: latency counts from before it.
        let since = run.turn(ticket, &mut pacer, tally).await;
        let mut conn = match run.connect().await {
            Ok(conn) => conn,
            Err(e) => {
                run.connect_failed(&e);
                if e.kind() != io::ErrorKind::TimedOut {
                    run.back_off().await;
                }
                continue;
            }
        };
        let _ = converse(run, &mut conn, 1, Requests::One(since), tally).await;
        // Dropping the connection closes it, as the slides' client does.
    }
}

async fn udp(run: &Run, tally: &mut Tally) {
    let Target::Inet(server) = run.target else {
        return;
    };
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = match tokio::net::UdpSocket::bind(local).await {
        Ok(socket) => socket,
        Err(e) => {
            return run
                .counters
                .fail(Failure::Other, || format!("cannot open a UDP socket: {e}"));
        }
    };
    if let Err(e) = socket.connect(server).await {
        return run.connect_failed(&e);
    }
    let mut pacer = Pacer::new();
    let mut buf = vec![0u8; 65_536];
    while let Some(ticket) = run.claim() {
        let since = run.turn(ticket, &mut pacer, tally).await;
        // A reply that came after its request was counted lost must not pass for this one's.
        while socket.try_recv(&mut buf).is_ok() {}
        let sent = timeout(run.plan.timeout, socket.send(&run.request)).await;
        let received = match sent {
            Err(_) => {
                run.count(&run.counters.timeouts);
                continue;
            }
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => {
                run.counters
                    .add(&run.counters.bytes_sent, run.request.len() as u64);
                match timeout(run.plan.timeout, socket.recv(&mut buf)).await {
                    Err(_) => {
                        run.count(&run.counters.losses);
                        continue;
                    }
                    Ok(received) => received,
                }
            }
        };
        match received {
            Err(e) => {
                run.datagram_failed(&e);
                run.back_off().await;
            }
            Ok(n) => {
                run.counters.add(&run.counters.bytes_received, n as u64);
                if buf[..n] == run.reply[..] {
                    run.record(tally, since);
                } else {
                    run.mismatch(&buf[..n]);
                }
            }
        }
    }
}

/// Streams this connection's share of the bytes through the server, reading everything back
/// and comparing it with the expected replies as it comes.
async fn stream(run: &Run, index: usize) {
    let connections = run.plan.connections.max(1) as u64;
    let share = run.plan.stream_bytes / connections
        + u64::from((index as u64) < run.plan.stream_bytes % connections);
    let messages = share.div_ceil(run.request.len() as u64);
    let conn = match run.connect().await {
        Ok(conn) => conn,
        Err(e) => return run.connect_failed(&e),
    };
    let (mut reader, mut writer) = tokio::io::split(conn);
    let writing = async {
        // Many messages per write: the stream's cost is the server's, not our system calls.
        let batch: Vec<u8> = run.request.repeat((64 * 1024 / run.request.len()).max(1));
        let per_batch = (batch.len() / run.request.len()) as u64;
        let mut sent = 0u64;
        while sent < messages && !run.out_of_time() {
            let n = per_batch.min(messages - sent);
            let bytes = &batch[..n as usize * run.request.len()];
            match timeout(run.plan.timeout, writer.write_all(bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(Some(e)),
                Err(_) => return Err(None), // the server stopped reading
            }
            run.counters
                .add(&run.counters.bytes_sent, bytes.len() as u64);
            sent += n;
        }
        let _ = timeout(run.plan.timeout, writer.shutdown()).await;
        Ok::<u64, Option<io::Error>>(sent)
    };
    let reading = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut at = 0usize; // position within the expected reply
        let mut whole_replies = 0u64;
        loop {
            let n = match timeout(run.plan.timeout, reader.read(&mut buf)).await {
                Err(_) => return Err(None),
                Ok(Err(e)) => {
                    let kind = kind_of(&e, whole_replies, at);
                    return Err(Some((kind, describe(kind, &e))));
                }
                Ok(Ok(0)) if at > 0 => {
                    let text = "the server closed the connection in the middle of a reply";
                    return Err(Some((Failure::Truncated, text.to_string())));
                }
                Ok(Ok(0)) => return Ok(()),
                Ok(Ok(n)) => n,
            };
            run.counters.add(&run.counters.bytes_received, n as u64);
            let mut chunk = &buf[..n];
            let mut whole = 0;
            while !chunk.is_empty() {
                let take = chunk.len().min(run.reply.len() - at);
                if chunk[..take] != run.reply[at..at + take] {
                    run.count(&run.counters.mismatches);
                    return Err(None);
                }
                chunk = &chunk[take..];
                at += take;
                if at == run.reply.len() {
                    at = 0;
                    whole += 1;
                }
            }
            whole_replies += whole;
            run.counters.add(&run.counters.ok, whole);
        }
    };
    // A failed reader ends the writer too (it would wait in vain for the server to read);
    // a finished writer leaves the reader to drain the replies.
    let (mut writing, mut reading) = (std::pin::pin!(writing), std::pin::pin!(reading));
    let (written, read) = tokio::select! {
        read = &mut reading => (None, read),
        written = &mut writing => (Some(written), reading.await),
    };
    match read {
        Ok(()) => {}
        Err(Some((kind, text))) => return run.counters.fail(kind, || text),
        Err(None)
            if run
                .counters
                .mismatches
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0 => {}
        Err(None) => return run.count(&run.counters.timeouts),
    }
    match written {
        Some(Err(Some(e))) => {
            let kind = kind_of(&e, 1, 0);
            run.counters.fail(kind, || describe(kind, &e));
        }
        Some(Err(None)) => run.count(&run.counters.timeouts),
        _ => {}
    }
}

/// Opens a connection, proves it with one round trip, and holds it until the run ends.
async fn idle(run: &Run, tally: &mut Tally) {
    let since = Instant::now();
    let mut conn = match run.connect().await {
        Ok(conn) => conn,
        Err(e) => return run.connect_failed(&e),
    };
    if converse(run, &mut conn, 1, Requests::One(since), tally)
        .await
        .is_err()
    {
        return;
    }
    run.counters.add(&run.counters.open, 1);
    match run.deadline {
        Some(deadline) => sleep_until(deadline).await,
        None => std::future::pending::<()>().await,
    }
}
