//! The load loops on io_uring (`bench --engine uring`): one ring per thread, many connections
//! per ring. Each loop turn hands every connection's send and receive to the kernel in one
//! `io_uring_enter`, which also waits for the next completions, so a request costs the load
//! generator no readiness bookkeeping and a fraction of a system call. Replies are checked, and
//! latencies and failures counted, by the same code as the async workers ([`Run`], [`Tally`],
//! [`super::converse`]'s failure kinds). Pingpong (TCP and Unix streams) and udp only; no
//! `--rate` (the pacing lives in the async workers).
//!
//! Nothing here blocks the ring's thread, so one slow connection cannot delay the timing of the
//! others: connections are made by the ring (`connect` with the run's time-out, cancelled when
//! it passes), and the pause after a failure (the async workers' back-off) is a time before
//! which that slot alone is left alone.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use socket2::{Domain, SockAddr, Socket, Type};

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use tokio::time::Instant;

use super::converse::{count_pattern, ended, kind_of};
use super::counters::Failure;
use super::plan::Mode;
use super::run::{Run, Tally, describe};
use super::target::Target;
use crate::engine::BufRing;

/// The largest datagram a reply can be.
const DATAGRAM: usize = 65_536;

/// The size of a receive buffer of the streams' provided-buffer ring.
const STREAM_BUF: usize = 4096;

/// How long a wait for completions lasts at most, so the run's deadline is looked at even when
/// nothing completes.
const TICK: Duration = Duration::from_millis(50);

/// The pause after a failed connection attempt or datagram, as the async workers' back-off:
/// a refusing server is not hammered.
const BACK_OFF: Duration = Duration::from_millis(10);

/// Runs the plan on `threads` threads, each with its own ring and its share of the
/// connections (connection `i` on thread `i % threads`).
pub(super) fn run(run: &Run, threads: usize) -> io::Result<()> {
    let connections = run.plan.connections.max(1);
    let threads = threads.clamp(1, connections);
    std::thread::scope(|scope| {
        let loops: Vec<_> = (0..threads)
            .map(|t| {
                let slots = (t..connections).step_by(threads).count();
                std::thread::Builder::new()
                    .name("socketkit-bench".into())
                    .spawn_scoped(scope, move || Loop::new(run, slots)?.go())
            })
            .collect::<io::Result<_>>()?;
        for handle in loops {
            handle
                .join()
                .map_err(|_| io::Error::other("a bench thread panicked"))??;
        }
        Ok(())
    })
}

/// A ring for one thread: only that thread submits, and completions are run when it waits for
/// them (`DEFER_TASKRUN`, Linux 6.1), not by interrupting it; a plain ring on older kernels.
fn ring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(entries)
        .or_else(|_| IoUring::builder().build(entries))
}

/// One connection (or UDP socket) of a ring.
struct Slot {
    fd: Option<OwnedFd>,
    /// Streams: a connect is in the kernel; until when it may take (`None` once cancelled).
    connecting: bool,
    connect_by: Option<Instant>,
    /// After a failure: nothing is started on this slot before then.
    retry_at: Option<Instant>,
    /// The reply being read (streams: one reply's length; udp: the largest datagram).
    buf: Vec<u8>,
    /// Bytes of the current reply read so far (streams).
    got: usize,
    /// Bytes of requests claimed and not yet written.
    to_write: usize,
    sending: bool,
    receiving: bool,
    /// Per request in flight: when its latency counts from, and its deadline.
    in_flight: VecDeque<(Instant, Instant)>,
    /// Whole replies on this connection.
    answered: u64,
    /// Failed (already counted): waiting for its operations before it is closed.
    failed: bool,
    /// Shut down after its last reply: waiting for its receive to end.
    closing: bool,
    /// The connection ended between requests (0: the server closed it; else the error
    /// number): the next request fails, as it would on the async engine, which learns of it
    /// by writing that request. With no next request, nothing failed.
    gone: Option<i32>,
    /// No more requests to claim.
    exhausted: bool,
    /// Finished: closed, nothing more to do.
    done: bool,
}

/// What a completion is for: the low two bits of its user data, the slot above them.
const SEND: u64 = 0;
const RECV: u64 = 1;
const CONNECT: u64 = 2;
/// The user data of cancellations, whose cancelled operations report themselves.
const CANCEL: u64 = u64::MAX;

struct Loop<'a> {
    run: &'a Run,
    ring: IoUring,
    slots: Vec<Slot>,
    tally: Tally,
    udp: bool,
    /// Requests back to back, so one send can carry every request a connection has claimed.
    batch: Vec<u8>,
    /// Streams: the receive buffers the kernel picks from (declared after `ring`, so dropped
    /// after it).
    bufs: Option<BufRing>,
    /// Streams: the target's address, which every connect points to.
    addr: Box<SockAddr>,
}

impl<'a> Loop<'a> {
    fn new(run: &'a Run, slots: usize) -> io::Result<Loop<'a>> {
        let udp = run.plan.mode == Mode::Udp;
        let entries = (2 * slots as u32 + 4).next_power_of_two().min(4096);
        let pipeline = if udp { 1 } else { run.plan.pipeline.max(1) };
        let buf_len = if udp { DATAGRAM } else { run.reply.len() };
        let slots: Vec<Slot> = (0..slots)
            .map(|_| Slot {
                buf: vec![0; buf_len],
                ..Slot::closed(pipeline)
            })
            .collect();
        let addr = Box::new(match &run.target {
            Target::Inet(addr) => SockAddr::from(*addr),
            Target::Unix(path) => SockAddr::unix(path)?,
            Target::Seqpacket(_) => {
                return Err(io::Error::other("unixpacket:// is not run on io_uring"));
            }
        });
        let ring = ring(entries)?;
        // Each slot's socket is a registered file: no descriptor look-up per operation.
        ring.submitter().register_files_sparse(slots.len() as u32)?;
        // Streams receive with one multishot receive per connection, armed once, over buffers
        // the kernel picks: no poll to arm again for each reply.
        let bufs = if udp {
            None
        } else {
            let count = (slots.len() * 4).next_power_of_two().clamp(16, 32_768) as u16;
            Some(BufRing::new(&ring, 0, count, STREAM_BUF)?)
        };
        Ok(Loop {
            run,
            ring,
            bufs,
            slots,
            tally: Tally::new(run),
            udp,
            batch: run.request.repeat(pipeline),
            addr,
        })
    }

    fn go(mut self) -> io::Result<()> {
        while !self.slots.iter().all(|s| s.done) {
            for index in 0..self.slots.len() {
                while self.step(index)? {}
            }
            self.wait()?;
            self.reap()?;
            self.expire()?;
        }
        self.tally.finish();
        Ok(())
    }

    /// Moves one slot on: (re)connects it, claims requests, queues its send and receive.
    /// Returns whether the slot changed state without an operation to wait for, so it is to be
    /// stepped again at once (a replaced connection is made in the same turn, as the async
    /// workers reconnect at once).
    fn step(&mut self, index: usize) -> io::Result<bool> {
        let run = self.run;
        let now = Instant::now();
        let slot = &mut self.slots[index];
        if slot.done || slot.connecting || slot.retry_at.is_some_and(|at| now < at) {
            return Ok(false);
        }
        slot.retry_at = None;
        if slot.sending || slot.receiving {
            if slot.failed || slot.exhausted && slot.in_flight.is_empty() {
                // Its operations are ending; a stream's receive ends with a shutdown.
                if !self.udp && !slot.failed && !slot.sending && !slot.closing {
                    slot.closing = true;
                    if let Some(fd) = &slot.fd {
                        let _ = nix::sys::socket::shutdown(
                            fd.as_raw_fd(),
                            nix::sys::socket::Shutdown::Both,
                        );
                    }
                }
                return Ok(false);
            }
        } else if slot.failed || slot.exhausted && slot.in_flight.is_empty() {
            // A failed connection is replaced, as the async workers do; a finished one closes.
            self.close(index)?;
            let slot = &mut self.slots[index];
            let failed = slot.failed;
            *slot = Slot {
                buf: std::mem::take(&mut slot.buf),
                ..Slot::closed(slot.in_flight.capacity())
            };
            slot.done = !failed || self.udp || run.out_of_time();
            return Ok(!slot.done);
        }
        if slot.fd.is_none() {
            self.open(index)?;
            // A UDP socket is ready at once; a stream waits for its connect.
            let slot = &self.slots[index];
            return Ok(slot.fd.is_some() && !slot.connecting);
        }
        if let Some(gone) = slot.gone {
            match run.claim() {
                Some(_) if gone == 0 => ended(run, Failure::Closed, slot.answered),
                Some(_) => broke(run, slot, &io::Error::from_raw_os_error(gone)),
                None => slot.exhausted = true,
            }
            slot.failed = !slot.exhausted;
            return Ok(true);
        }
        let pipeline = if self.udp {
            1
        } else {
            run.plan.pipeline.max(1)
        };
        while !slot.exhausted && slot.in_flight.len() < pipeline && !(self.udp && slot.sending) {
            match run.claim() {
                Some(_) => {
                    let now = Instant::now();
                    slot.in_flight.push_back((now, now + run.plan.timeout));
                    slot.to_write += run.request.len();
                }
                None => slot.exhausted = true,
            }
        }
        if !self.udp && slot.exhausted && slot.in_flight.is_empty() {
            // Nothing to ask on this connection: closed by the next step.
            return Ok(!slot.receiving);
        }
        let fd = types::Fixed(index as u32);
        let mut entries = Vec::with_capacity(2);
        if slot.to_write > 0 && !slot.sending {
            let bytes = &self.batch[self.batch.len() - slot.to_write..];
            entries.push(
                opcode::Send::new(fd, bytes.as_ptr(), bytes.len() as u32)
                    .build()
                    .user_data(user_data(index, SEND)),
            );
            slot.sending = true;
        }
        // A socket always has a receive posted: a UDP socket's late reply is drained, not
        // taken for the next request's.
        if !slot.receiving && self.udp {
            let room = &mut slot.buf[..];
            entries.push(
                opcode::Recv::new(fd, room.as_mut_ptr(), room.len() as u32)
                    .build()
                    .user_data(user_data(index, RECV)),
            );
            slot.receiving = true;
        } else if !slot.receiving {
            entries.push(
                opcode::RecvMulti::new(fd, 0)
                    .build()
                    .user_data(user_data(index, RECV)),
            );
            slot.receiving = true;
        }
        if self.udp && slot.exhausted && slot.in_flight.is_empty() && slot.receiving {
            slot.failed = true; // ending: the cancelled receive completes it
            entries.push(
                opcode::AsyncCancel::new(user_data(index, RECV))
                    .build()
                    .user_data(CANCEL),
            );
        }
        for entry in entries {
            self.push(entry)?;
        }
        Ok(false)
    }

    /// Gives an idle slot its socket: a UDP socket connected at once, or a stream socket whose
    /// connect the ring makes. A failure counts as the async workers count it.
    fn open(&mut self, index: usize) -> io::Result<()> {
        let run = self.run;
        if run.out_of_time() {
            self.slots[index].done = true;
            return Ok(());
        }
        if self.udp {
            let Target::Inet(addr) = run.target else {
                unreachable!("udp runs on an inet target")
            };
            let local: SocketAddr = if addr.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = match UdpSocket::bind(local) {
                Ok(socket) => socket,
                Err(e) => {
                    self.slots[index].done = true;
                    run.counters
                        .fail(Failure::Other, || format!("cannot open a UDP socket: {e}"));
                    return Ok(());
                }
            };
            if let Err(e) = socket.connect(addr) {
                self.slots[index].done = true;
                run.connect_failed(&e);
                return Ok(());
            }
            return self.adopt(index, socket.into());
        }
        let domain = Domain::from(i32::from(self.addr.family()));
        let socket = match Socket::new(domain, Type::STREAM, None) {
            Ok(socket) => socket,
            Err(e) => return self.connect_failed(index, e),
        };
        if matches!(run.target, Target::Inet(_)) {
            socket.set_tcp_nodelay(true)?;
        }
        self.adopt(index, socket.into())?;
        let slot = &mut self.slots[index];
        slot.connecting = true;
        slot.connect_by = Some(Instant::now() + run.plan.timeout);
        let entry = opcode::Connect::new(
            types::Fixed(index as u32),
            self.addr.as_ptr().cast(),
            self.addr.len(),
        )
        .build()
        .user_data(user_data(index, CONNECT));
        self.push(entry)
    }

    /// Makes `fd` the slot's socket, a registered file at the slot's index.
    fn adopt(&mut self, index: usize, fd: OwnedFd) -> io::Result<()> {
        self.ring
            .submitter()
            .register_files_update(index as u32, &[fd.as_raw_fd()])?;
        self.slots[index].fd = Some(fd);
        Ok(())
    }

    /// Closes the slot's socket (none of its operations is in the kernel).
    fn close(&mut self, index: usize) -> io::Result<()> {
        if self.slots[index].fd.take().is_some() {
            self.ring
                .submitter()
                .register_files_update(index as u32, &[-1])?;
        }
        Ok(())
    }

    /// A connect completed: the slot goes on to its requests, or counts the failure as the
    /// async workers do and backs off.
    fn connected(&mut self, index: usize, result: i32) -> io::Result<()> {
        let slot = &mut self.slots[index];
        slot.connecting = false;
        let timed_out = slot.connect_by.take().is_none();
        match result {
            0.. => Ok(()),
            // Cancelled at its time-out: ECANCELED, or EINTR from a connect that was waiting
            // in the kernel's worker (a Unix connect waiting for room in the listen queue).
            e if timed_out && (-e == libc::ECANCELED || -e == libc::EINTR) => self.connect_failed(
                index,
                io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            ),
            e => self.connect_failed(index, io::Error::from_raw_os_error(-e)),
        }
    }

    /// A connection attempt failed: it costs a request, so a request-bounded run against a
    /// server that refuses still ends; the slot tries again after the back-off.
    fn connect_failed(&mut self, index: usize, error: io::Error) -> io::Result<()> {
        let run = self.run;
        self.close(index)?;
        let slot = &mut self.slots[index];
        if run.claim().is_none() {
            slot.done = true;
        } else {
            run.connect_failed(&error);
            slot.retry_at = Some(Instant::now() + BACK_OFF);
        }
        Ok(())
    }

    /// Queues an operation, submitting what is queued first if the queue is full.
    #[allow(unsafe_code)] // the io_uring API's: the kernel writes into our buffers
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every buffer an operation points into is a slot's `buf`, the loop's
            // `batch` or its boxed `addr`, none of which is moved, resized or freed while an
            // operation on it is in the kernel: a slot is rebuilt only once `sending`,
            // `receiving` and `connecting` are all clear, `batch` and `addr` live as long as
            // the loop, and the loop ends only when every slot is done, so with none pending.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    /// Submits the turn's operations and waits for a completion, at most until the earliest
    /// deadline of a request in flight or of a connect, or the end of a slot's back-off.
    fn wait(&mut self) -> io::Result<()> {
        if self.slots.iter().all(|s| s.done) {
            return Ok(());
        }
        let now = Instant::now();
        let next = self
            .slots
            .iter()
            .flat_map(|s| {
                let request = s.in_flight.front().map(|&(_, deadline)| deadline);
                [request, s.connect_by, s.retry_at]
            })
            .flatten()
            .min()
            .map_or(TICK, |at| at.saturating_duration_since(now).min(TICK));
        let ts = types::Timespec::from(next.max(Duration::from_micros(1)));
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn reap(&mut self) -> io::Result<()> {
        let done: Vec<(u64, i32, u32)> = self
            .ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags()))
            .collect();
        for (data, result, flags) in done {
            if data == CANCEL {
                continue; // the cancelled operation reports itself
            }
            let index = (data >> 2) as usize;
            match data & 3 {
                SEND => self.sent(index, result),
                CONNECT => self.connected(index, result)?,
                _ if self.udp => self.received(index, result),
                _ => self.streamed(index, result, flags),
            }
        }
        Ok(())
    }

    fn sent(&mut self, index: usize, result: i32) {
        let run = self.run;
        let slot = &mut self.slots[index];
        slot.sending = false;
        if slot.failed {
            return;
        }
        match result {
            n if n > 0 => {
                run.counters.add(&run.counters.bytes_sent, n as u64);
                // A datagram goes whole or not at all.
                slot.to_write = if self.udp {
                    0
                } else {
                    slot.to_write - n as usize
                };
            }
            0 => self.fail(index, |slot| ended(run, Failure::Other, slot.answered)),
            e => {
                let error = io::Error::from_raw_os_error(-e);
                if self.udp {
                    run.datagram_failed(&error);
                    slot.to_write = 0;
                    slot.in_flight.pop_front();
                    slot.retry_at = Some(Instant::now() + BACK_OFF);
                } else {
                    self.fail(index, |slot| broke(run, slot, &error));
                }
            }
        }
    }

    /// A UDP socket's receive completed: the reply of the request in flight, or a late one.
    fn received(&mut self, index: usize, result: i32) {
        let run = self.run;
        let slot = &mut self.slots[index];
        slot.receiving = false;
        if slot.failed {
            return;
        }
        match result {
            n if n >= 0 => {
                let n = n as usize;
                let Some((since, _)) = slot.in_flight.pop_front() else {
                    return; // the late reply of a request counted lost
                };
                run.counters.add(&run.counters.bytes_received, n as u64);
                if slot.buf[..n] == run.reply[..] {
                    run.record(&mut self.tally, since);
                } else {
                    run.mismatch(&slot.buf[..n]);
                }
            }
            // The cancellation at the end of the run.
            e if -e == libc::ECANCELED => {}
            e => {
                if slot.in_flight.pop_front().is_some() {
                    run.datagram_failed(&io::Error::from_raw_os_error(-e));
                    slot.retry_at = Some(Instant::now() + BACK_OFF);
                }
            }
        }
    }

    /// A stream's multishot receive completed: the bytes in the buffer the kernel picked are
    /// checked against the replies expected, a whole reply at a time.
    fn streamed(&mut self, index: usize, result: i32, flags: u32) {
        let run = self.run;
        let slot = &mut self.slots[index];
        slot.receiving = cqueue::more(flags);
        let bufs = self.bufs.as_mut().expect("streams have buffers");
        let picked = cqueue::buffer_select(flags);
        if slot.failed || slot.closing || result == -libc::ENOBUFS {
            // Ended, or out of buffers for a moment: armed again at the next turn.
            if let Some(bid) = picked {
                bufs.recycle(bid);
            }
            return;
        }
        if result <= 0 && slot.got == 0 && slot.in_flight.is_empty() {
            slot.gone = Some(-result);
            return;
        }
        if result == 0 {
            let kind = if slot.got == 0 {
                Failure::Closed
            } else {
                Failure::Truncated
            };
            return self.fail(index, |slot| ended(run, kind, slot.answered));
        }
        if result < 0 {
            let error = io::Error::from_raw_os_error(-result);
            return self.fail(index, |slot| broke(run, slot, &error));
        }
        let bid = picked.expect("a receive with bytes names its buffer");
        run.counters
            .add(&run.counters.bytes_received, result as u64);
        let mut chunk = bufs.get(bid, result as usize);
        let mut wrong = false;
        while !chunk.is_empty() {
            let take = chunk.len().min(slot.buf.len() - slot.got);
            slot.buf[slot.got..slot.got + take].copy_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            slot.got += take;
            if slot.got < slot.buf.len() {
                break;
            }
            slot.got = 0;
            // A reply with no request in flight is one the server made up.
            match slot.in_flight.pop_front() {
                Some((since, _)) if slot.buf == run.reply => {
                    run.record(&mut self.tally, since);
                    slot.answered += 1;
                }
                _ => {
                    run.mismatch(&slot.buf);
                    wrong = true;
                    break;
                }
            }
        }
        bufs.recycle(bid);
        if wrong {
            self.fail(index, |_| {});
        }
    }

    /// Connects and requests whose time is up: a connect is cancelled (its completion counts
    /// the time-out); a request's time-out ends a stream connection (it is out of step then),
    /// a lost datagram only itself.
    fn expire(&mut self) -> io::Result<()> {
        let now = Instant::now();
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            if slot.connect_by.is_some_and(|at| at <= now) {
                slot.connect_by = None;
                self.push(
                    opcode::AsyncCancel::new(user_data(index, CONNECT))
                        .build()
                        .user_data(CANCEL),
                )?;
                continue;
            }
            if slot.failed || slot.in_flight.front().is_none_or(|&(_, at)| now < at) {
                continue;
            }
            if self.udp {
                slot.in_flight.pop_front();
                self.run.count(&self.run.counters.losses);
            } else {
                let run = self.run;
                self.fail(index, |_| run.count(&run.counters.timeouts));
            }
        }
        Ok(())
    }

    /// Ends a stream connection after a failure (counted by `count`): shuts it down so its
    /// operations complete, and replaces it once they have.
    fn fail(&mut self, index: usize, count: impl FnOnce(&Slot)) {
        let slot = &mut self.slots[index];
        count(slot);
        slot.failed = true;
        if let Some(fd) = &slot.fd {
            let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
    }
}

impl Slot {
    /// A slot with no socket and nothing to do yet.
    fn closed(pipeline: usize) -> Slot {
        Slot {
            fd: None,
            connecting: false,
            connect_by: None,
            retry_at: None,
            buf: Vec::new(),
            got: 0,
            to_write: 0,
            sending: false,
            receiving: false,
            in_flight: VecDeque::with_capacity(pipeline),
            answered: 0,
            failed: false,
            closing: false,
            gone: None,
            exhausted: false,
            done: false,
        }
    }
}

/// Counts an I/O error on a stream connection, as the async workers do.
fn broke(run: &Run, slot: &Slot, error: &io::Error) {
    let kind = kind_of(error, slot.answered, slot.got);
    run.counters.fail(kind, || describe(kind, error));
    count_pattern(run, slot.answered);
}

fn user_data(index: usize, op: u64) -> u64 {
    (index as u64) << 2 | op
}
