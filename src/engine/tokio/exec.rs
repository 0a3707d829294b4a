//! Datagrams to a program (`serve -- PROGRAM` on udp:// and unixgram://) on the async engine.
//! A run takes milliseconds where a service's answer takes microseconds, so each admitted
//! datagram runs in a task of its own while the loop receives the next; a run holds a
//! connection slot, so `--max-connections` bounds the programs running, and beyond it datagrams
//! wait in the socket's queue (then the kernel drops them, as for any slow UDP server). The
//! rules (access list, rate limit, loop guard) are `engine::datagram`'s, as for services.

use std::io;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::{Datagrams, try_send_to};
use crate::endpoint::Transport;
use crate::engine::Shared;
use crate::engine::datagram::{self, Received};
use crate::exec::Exec;
use crate::service::Address;

/// One datagram listener whose datagrams each run `exec`, until the server stops; runs in
/// flight are the tracker's, so they drain within the grace period like connections.
pub(super) async fn exec_loop(
    socket: Datagrams,
    shared: Arc<Shared>,
    (transport, local): (Transport, Address),
    exec: Arc<Exec>,
    tracker: TaskTracker,
    slots: Arc<Semaphore>,
    stats: Arc<crate::stats::ListenerStats>,
) {
    let socket = Arc::new(socket);
    let mut datagrams = datagram::Datagrams::new(&shared, transport, local, stats.clone());
    // The runs reply from their own tasks: the loop guard learns of their replies here.
    let replies = datagrams.reply_log();
    let mut stop = std::pin::pin!(shared.stop.fired());
    loop {
        // The slot is taken before the receive: at the limit, datagrams wait in the queue.
        let permit = tokio::select! {
            biased;
            () = &mut stop => return,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let readable = tokio::select! {
            biased;
            () = &mut stop => return,
            readable = socket.readable() => readable,
        };
        let received = match readable {
            Ok(()) => socket.try_recv(datagrams.buffer(), transport),
            Err(e) => Err(e),
        };
        if matches!(&received, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            continue;
        }
        let (n, ctx) = match datagrams.received(&shared, received) {
            Received::Request(n, ctx) => (n, ctx),
            Received::Next => continue,
            Received::BackOff(delay) => {
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        let request = datagrams.request(n).to_vec();
        let (shared, exec, socket, replies, stats) = (
            shared.clone(),
            exec.clone(),
            socket.clone(),
            replies.clone(),
            stats.clone(),
        );
        tracker.spawn(async move {
            let limits = &shared.limits;
            let run = exec.answer(&ctx, &request, limits.max_datagram, limits.message_timeout);
            // The end of the grace period drops the run: its program gets SIGTERM, then
            // SIGKILL once serving is over (see `exec::children`).
            let reply = tokio::select! {
                biased;
                () = shared.force.fired() => None,
                reply = run => reply,
            };
            if let Some(reply) = reply {
                replies.sending(&ctx.peer, &reply);
                match try_send_to(&socket, &reply, &ctx.peer) {
                    Ok(_) => stats.datagram_answered(reply.len()),
                    Err(e) => tracing::debug!(peer = %ctx.peer, "reply not sent: {e}"),
                }
            }
            drop(permit);
        });
    }
}
