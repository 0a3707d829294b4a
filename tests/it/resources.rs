//! Resource promises of "Limits and failure behaviour": a server out of descriptors backs off
//! without spinning, says so at most once a second and recovers by itself; peers that reset in
//! the middle of a request or of a reply cost nothing lasting; thousands of idle connections do
//! not delay a probe (nor cost the async engine more than 2 KiB each), nor does a burst of
//! requests on the pool (whose few workers serve only connections with something to read; on
//! the sequential engine, the idle time-out is what bounds how long one peer holds the
//! listener); a handler may stop its own server without deadlocking it.
//!
//! Servers whose descriptors, CPU time or limits a test reads or changes are `socketkit serve`
//! child processes, so only the server's limit is lowered and only the server's use measured.

use std::collections::BTreeSet;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal::SIGTERM;
use socketkit::handler::{
    AsyncStreamHandler, AsyncStreamRequest, DatagramHandler, DatagramRequest, StreamHandler,
    StreamRequest,
};
use socketkit::{Endpoint, Engine, Server, ServerBuilder, ShutdownHandle};

use crate::common::{SAFETY_TIMEOUT, Spawned, socketkit};

// ---------------------------------------------------------------------------------------------
// A server child process, seen through /proc

/// `socketkit serve` as a child process, with the endpoints it announced.
struct Child {
    process: Spawned,
    endpoints: Vec<Endpoint>,
}

impl Child {
    /// `socketkit serve -e ENGINE ARGS...`, once `listeners` listening lines are out.
    fn start(engine: Engine, args: &[&str], listeners: usize) -> Child {
        let mut command = socketkit();
        command
            .env_remove("RUST_LOG")
            .args(["serve", "-e", engine.name()])
            .args(args);
        let mut process = Spawned::start(command);
        let endpoints = process.listening(listeners);
        Child { process, endpoints }
    }

    fn pid(&self) -> u32 {
        self.process.child.id()
    }

    fn addr(&self, index: usize) -> SocketAddr {
        self.endpoints[index].socket_addrs().unwrap()[0]
    }

    fn proc(&self, entry: &str) -> String {
        format!("/proc/{}/{entry}", self.pid())
    }

    /// The server's open descriptor numbers.
    fn fds(&self) -> BTreeSet<i32> {
        std::fs::read_dir(self.proc("fd"))
            .expect("the server's /proc/PID/fd")
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// What each open descriptor is, for failure messages.
    fn describe_fds(&self) -> Vec<String> {
        self.fds()
            .into_iter()
            .map(|fd| {
                let target = std::fs::read_link(self.proc(&format!("fd/{fd}")));
                format!(
                    "{fd} -> {}",
                    target.map_or("?".into(), |t| t.display().to_string())
                )
            })
            .collect()
    }

    /// The server's descriptors that are TCP connections (sockets in any state but LISTEN),
    /// found by inode in its network namespace's /proc/PID/net/tcp and tcp6.
    fn connection_fds(&self) -> Vec<i32> {
        let mut connections = BTreeSet::new();
        for table in ["net/tcp", "net/tcp6"] {
            let Ok(text) = std::fs::read_to_string(self.proc(table)) else {
                continue;
            };
            for line in text.lines().skip(1) {
                let columns: Vec<&str> = line.split_whitespace().collect();
                // st is column 3 (0A is LISTEN), the inode column 9.
                if columns.len() > 9 && columns[3] != "0A" {
                    connections.insert(format!("socket:[{}]", columns[9]));
                }
            }
        }
        self.fds()
            .into_iter()
            .filter(|fd| {
                std::fs::read_link(self.proc(&format!("fd/{fd}")))
                    .is_ok_and(|target| connections.contains(target.to_str().unwrap_or("")))
            })
            .collect()
    }

    /// The server's descriptor count once every connection it had is closed: its baseline.
    /// Call it after a first exchange, so descriptors made when serving starts (an async
    /// runtime's) are counted; polls (with a deadline) for that exchange's connection to close.
    fn settled_fd_count(&self) -> usize {
        let deadline = Instant::now() + SAFETY_TIMEOUT;
        loop {
            let count = self.fds().len();
            if self.connection_fds().is_empty() && self.fds().len() == count {
                return count;
            }
            assert!(
                Instant::now() < deadline,
                "the server keeps connections open: {:#?}",
                self.describe_fds()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Polls until the server has exactly `count` descriptors open (none comes with an event
    /// to wait for), failing with the list after the safety time-out.
    #[track_caller]
    fn wait_for_fd_count(&self, count: usize, what: &str) {
        let deadline = Instant::now() + SAFETY_TIMEOUT;
        while self.fds().len() != count {
            assert!(
                Instant::now() < deadline,
                "{what}: the server has {} descriptors open, not {count}: {:#?}",
                self.fds().len(),
                self.describe_fds()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// How often the pool's poller thread has gone to sleep (its voluntary context switches,
    /// from /proc/PID/task/TID/status).
    fn poller_switches(&self) -> u64 {
        let tasks = std::fs::read_dir(self.proc("task")).expect("the server's /proc/PID/task");
        let poller = tasks
            .filter_map(|task| Some(task.ok()?.path()))
            .find(|task| {
                // The kernel keeps the first 15 bytes of a thread's name.
                let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
                comm.trim_end() == &"socketkit-poller"[..15]
            })
            .expect("a socketkit-poller thread");
        let status = std::fs::read_to_string(poller.join("status")).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
            .expect("a voluntary_ctxt_switches line")
            .trim()
            .parse()
            .unwrap()
    }

    /// User plus system CPU time of the whole server process (every thread), from
    /// /proc/PID/stat.
    fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(self.proc("stat")).unwrap();
        // The command name (field 2) is in parentheses and may hold spaces: count from after it.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
            .split_whitespace()
            .collect();
        // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64)
    }

    /// The server's soft RLIMIT_NOFILE, from /proc/PID/limits.
    fn soft_nofile(&self) -> u64 {
        let limits = std::fs::read_to_string(self.proc("limits")).unwrap();
        let line = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .expect("a Max open files line");
        line["Max open files".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Sets the server's soft descriptor limit (the hard one stays, so it can be raised back).
    fn set_soft_nofile(&self, limit: u64) {
        let output = Command::new("prlimit")
            .arg(format!("--pid={}", self.pid()))
            .arg(format!("--nofile={limit}:"))
            .output()
            .expect("run prlimit");
        assert!(
            output.status.success(),
            "prlimit failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(self.soft_nofile(), limit, "prlimit did not apply");
    }

    #[track_caller]
    fn assert_running(&mut self, when: &str) {
        let status = self.process.child.try_wait().unwrap();
        assert!(
            status.is_none(),
            "the server exited {when}: {status:?}; stderr {:#?}",
            self.process.lines_so_far()
        );
    }

    /// SIGTERM, and a clean exit.
    fn stop(mut self) {
        self.process.signal(SIGTERM);
        assert_eq!(
            self.process.wait_exit(),
            Some(0),
            "stderr {:#?}",
            self.process.seen
        );
    }
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(ticks > 0, "sysconf(_SC_CLK_TCK) = {ticks}");
    ticks as u64
}

fn have_prlimit() -> bool {
    Command::new("prlimit")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

/// A connection with the safety time-out on reads and writes.
fn connect(addr: SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    conn.set_write_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    conn
}

/// Sends "probe" to the upper service at `addr` and returns how long the reply took, failing
/// with `what` when it does not come (within the safety time-out) or is wrong.
#[track_caller]
fn probe(addr: SocketAddr, what: &str) -> Duration {
    let started = Instant::now();
    let exchange = || -> io::Result<Vec<u8>> {
        let mut conn = connect(addr);
        conn.write_all(b"probe")?;
        conn.shutdown(Shutdown::Write)?;
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply)?;
        Ok(reply)
    };
    match exchange() {
        Ok(reply) if reply == b"PROBE" => started.elapsed(),
        other => panic!("{what}: a probe was not served: {other:?}"),
    }
}

/// Closes with a reset (SO_LINGER 0) instead of a FIN.
fn reset(conn: TcpStream) {
    socket2::SockRef::from(&conn)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(conn);
}

/// Waits at most `timeout` for `events` on `conn`; whether they came.
fn poll_one(conn: &TcpStream, events: PollFlags, timeout: Duration) -> bool {
    let mut fds = [PollFd::new(conn.as_fd(), events)];
    let timeout = PollTimeout::try_from(timeout).unwrap();
    nix::poll::poll(&mut fds, timeout).expect("poll") > 0
}

// ---------------------------------------------------------------------------------------------
// 1. Out of descriptors

/// How long the CPU use of an exhausted server is measured.
const EXHAUSTED_WINDOW: Duration = Duration::from_secs(1);

/// The soft limit under which a process with `fds` open can open exactly `free` more:
/// RLIMIT_NOFILE bounds the number a new descriptor gets, and the lowest free number is taken.
fn limit_leaving(fds: &BTreeSet<i32>, free: usize) -> u64 {
    (0..)
        .filter(|n| !fds.contains(n))
        .nth(free)
        .expect("a free descriptor number") as u64
}

/// Runs the server out of descriptors: it must stay up, log the failure at most once a second,
/// not spin, and serve again once descriptors are back.
fn out_of_descriptors(engine: Engine) {
    if !have_prlimit() {
        eprintln!("SKIP out_of_descriptors_{engine}: no prlimit(1) to lower the server's limit");
        return;
    }
    let mut server = Child::start(engine, &["-l", "tcp://127.0.0.1:0"], 1);
    let addr = server.addr(0);
    // Serving has started (an async runtime has its descriptors) and the exchange is over.
    probe(addr, &format!("{engine} before"));
    server.settled_fd_count();
    let original = server.soft_nofile();
    // The sequential engine does not accept while it serves its one connection, so it meets
    // EMFILE only with no descriptor left at all, and recovers when the limit is raised again.
    // The others get a few descriptors to fill with connections, and recover when those close.
    let headroom = if engine == Engine::Sequential { 0 } else { 8 };
    let lowered = limit_leaving(&server.fds(), headroom);
    server.set_soft_nofile(lowered);

    // More clients than descriptors: `headroom` are accepted and held, the rest wait in the
    // listen queue while accept() fails.
    let clients: Vec<TcpStream> = (0..headroom + 8).map(|_| connect(addr)).collect();
    let first = server.process.wait_for_line("accept failed");
    assert!(
        first.contains("Too many open files")
            && first.contains(&format!("RLIMIT_NOFILE, {lowered}")),
        "{engine}: the log line should name the limit that was hit: {first:?}"
    );
    let first_seen = Instant::now();

    // CPU time only accumulates over wall time: this wait is the measurement, not a sync.
    let cpu_before = server.cpu_time();
    let started = Instant::now();
    std::thread::sleep(EXHAUSTED_WINDOW);
    let cpu = server.cpu_time().saturating_sub(cpu_before);
    let wall = started.elapsed();
    server.assert_running("while out of descriptors");
    assert!(
        cpu.as_secs_f64() < 0.2 * wall.as_secs_f64(),
        "{engine}: out of descriptors, the server used {cpu:?} of CPU in {wall:?}: it spins"
    );
    let failures = server
        .process
        .lines_so_far()
        .iter()
        .filter(|line| line.contains("accept failed"))
        .count();
    // At most one a second from the first: one more for the second that has begun.
    let allowed = first_seen.elapsed().as_secs() as usize + 2;
    assert!(
        failures <= allowed,
        "{engine}: {failures} accept failure lines in {:?}, more than one a second: {:#?}",
        first_seen.elapsed(),
        server.process.seen
    );

    drop(clients);
    if engine == Engine::Sequential {
        server.set_soft_nofile(original);
    }
    probe(addr, &format!("{engine} once descriptors are back"));
    server.assert_running("after recovering");
    eprintln!(
        "resources: {engine} out of descriptors: {cpu:?} CPU in {wall:?}, {failures} log line(s)"
    );
    server.stop();
}

#[test]
fn out_of_descriptors_async() {
    out_of_descriptors(Engine::Async);
}

#[test]
fn out_of_descriptors_sequential() {
    out_of_descriptors(Engine::Sequential);
}

#[test]
fn out_of_descriptors_threaded() {
    out_of_descriptors(Engine::Threaded);
}

#[test]
fn out_of_descriptors_pool() {
    out_of_descriptors(Engine::Pool);
}

// ---------------------------------------------------------------------------------------------
// 2. Resets

/// Sends part of a request, sees the server working on it, sends half a character more, and
/// resets.
fn reset_in_the_middle_of_a_request(addr: SocketAddr) {
    let mut conn = connect(addr);
    conn.write_all(b"hello, wor").unwrap();
    let mut buf = [0u8; 16];
    let n = conn.read(&mut buf).unwrap();
    assert!(
        n > 0 && b"HELLO, WOR".starts_with(&buf[..n]),
        "{:?}",
        &buf[..n]
    );
    conn.write_all(b"ld stra\xc3").unwrap();
    reset(conn);
}

/// Sends up to 8 MiB without reading the reply, until the server stops reading (it waits to
/// write its reply to us), and resets while the reply waits.
fn reset_while_the_reply_is_written(addr: SocketAddr) {
    const TOTAL: usize = 8 << 20;
    let conn = connect(addr);
    conn.set_nonblocking(true).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    let deadline = Instant::now() + SAFETY_TIMEOUT;
    while sent < TOTAL {
        assert!(Instant::now() < deadline, "8 MiB not written in time");
        match (&conn).write(&chunk[..chunk.len().min(TOTAL - sent)]) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // No event says "the server stopped reading": 200 ms without room is taken as
                // that (an early guess costs nothing: the reply has begun all the same).
                if !poll_one(&conn, PollFlags::POLLOUT, Duration::from_millis(200)) {
                    break;
                }
            }
            Err(e) => panic!("sending the request: {e}"),
        }
    }
    assert!(
        poll_one(&conn, PollFlags::POLLIN, SAFETY_TIMEOUT),
        "the reply never started"
    );
    reset(conn);
}

/// Lets chargen's endless reply start, and resets.
fn reset_during_chargen(addr: SocketAddr) {
    let mut conn = connect(addr);
    let mut buf = vec![0u8; 4096];
    conn.read_exact(&mut buf).unwrap();
    reset(conn);
}

fn resets(engine: Engine) {
    let mut server = Child::start(
        engine,
        &["upper=tcp://127.0.0.1:0", "chargen=tcp://127.0.0.1:0"],
        2,
    );
    assert!(
        server.process.seen[0].contains("(upper,"),
        "{:?}",
        server.process.seen
    );
    assert!(
        server.process.seen[1].contains("(chargen,"),
        "{:?}",
        server.process.seen
    );
    let (upper, chargen) = (server.addr(0), server.addr(1));
    probe(upper, &format!("{engine} before"));
    // Both servers have started serving. (Were a reset connection's descriptor leaked, this
    // one would hide in the baseline; the seven below would not.)
    reset_during_chargen(chargen);
    let baseline = server.settled_fd_count();
    for _ in 0..3 {
        reset_in_the_middle_of_a_request(upper);
        reset_during_chargen(chargen);
    }
    reset_while_the_reply_is_written(upper);
    probe(upper, &format!("{engine} after resets"));
    server.wait_for_fd_count(baseline, &format!("{engine} after resets"));
    server.assert_running("after resets");
    server.stop();
}

#[test]
fn resets_cost_nothing_lasting_async() {
    resets(Engine::Async);
}

#[test]
fn resets_cost_nothing_lasting_sequential() {
    resets(Engine::Sequential);
}

#[test]
fn resets_cost_nothing_lasting_threaded() {
    resets(Engine::Threaded);
}

#[test]
fn resets_cost_nothing_lasting_pool() {
    resets(Engine::Pool);
}

// ---------------------------------------------------------------------------------------------
// 3. Thousands of idle connections

/// One thousands-of-connections test at a time: each costs two descriptors a connection (one
/// here, one in the server, which inherits this process's limit).
static IDLE_CONNECTIONS: Mutex<()> = Mutex::new(());

/// How many idle connections to open: 2,000, or fewer where the descriptor limit, raised to the
/// hard limit if need be, does not leave room for them and the tests running beside.
fn idle_budget() -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    const WANTED: u64 = 2_000;
    const SPARE: u64 = 512;
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < WANTED + SPARE {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(WANTED + SPARE), hard);
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let count = soft.saturating_sub(SPARE).min(WANTED);
    assert!(count >= 100, "RLIMIT_NOFILE {soft}:{hard} leaves no room");
    eprintln!("resources: {count} idle connections (RLIMIT_NOFILE {soft}:{hard})");
    count as usize
}

/// The pool's workers in the thousands-of-connections tests: far fewer than the connections,
/// so a test passes only if a connection waiting for its peer holds no worker.
const FEW_WORKERS: &str = "4";

/// How long a probe may take beside a crowd: 50 times its time alone, or `floor`.
fn probe_bound(baseline: Duration, floor: Duration) -> Duration {
    (baseline * 50).max(floor)
}

/// The median of five probes alone: the baseline a crowd is measured against.
fn probe_baseline(addr: SocketAddr, engine: Engine) -> Duration {
    let alone = format!("{engine} alone");
    let mut samples: Vec<Duration> = (0..5).map(|_| probe(addr, &alone)).collect();
    samples.sort();
    samples[2]
}

fn idle_connections_do_not_delay_a_probe(engine: Engine, floor: Duration) {
    let _one_at_a_time = IDLE_CONNECTIONS.lock().unwrap_or_else(|e| e.into_inner());
    let count = idle_budget();
    let mut args = vec!["-l", "tcp://127.0.0.1:0", "--backlog", "4096"];
    if engine == Engine::Pool {
        args.extend(["--workers", FEW_WORKERS]);
    }
    let server = Child::start(engine, &args, 1);
    let addr = server.addr(0);
    let baseline = probe_baseline(addr, engine);
    let before = server.settled_fd_count();

    let idle: Vec<TcpStream> = (0..count).map(|_| connect(addr)).collect();
    // Accepted and held by the server, not waiting in its listen queue.
    server.wait_for_fd_count(
        before + count,
        &format!("{engine} accepting the idle connections"),
    );

    let bound = probe_bound(baseline, floor);
    let beside = format!("{engine} beside {count} idle connections");
    let probes: Vec<Duration> = (0..3).map(|_| probe(addr, &beside)).collect();
    eprintln!(
        "resources: {engine}: probe {baseline:?} alone, {probes:?} beside {count} idle connections"
    );
    for took in probes {
        assert!(
            took <= bound,
            "{engine}: a probe took {took:?} beside {count} idle connections (alone {baseline:?})"
        );
    }
    drop(idle);
    server.stop();
}

#[test]
fn thousands_of_idle_connections_do_not_delay_a_probe_async() {
    idle_connections_do_not_delay_a_probe(Engine::Async, Duration::from_secs(2));
}

#[test]
fn thousands_of_idle_connections_do_not_delay_a_probe_threaded() {
    idle_connections_do_not_delay_a_probe(Engine::Threaded, Duration::from_secs(2));
}

/// The pool's poller holds the silent connections; its 4 workers serve the probe.
#[test]
fn thousands_of_idle_connections_do_not_delay_a_probe_on_a_pool_of_four_workers() {
    idle_connections_do_not_delay_a_probe(Engine::Pool, Duration::from_secs(1));
}

/// What an idle connection costs the async engine: each of the idle connections, answered
/// once and then silent, adds at most 2 KiB to the server's resident set (the issue-13 target),
/// over a fixed 256 KiB for what the first connections warm up (a read buffer per runtime
/// thread). A connection holds 1.5 KiB in a debug or a release build (2.4 KiB when the task
/// held its arguments twice and boxed its driver beside it; a plain tokio server that reads
/// into a 1 KiB buffer holds 1.9).
#[test]
fn an_idle_connection_costs_the_async_engine_at_most_2_kib() {
    let _one_at_a_time = IDLE_CONNECTIONS.lock().unwrap_or_else(|e| e.into_inner());
    let count = idle_budget();
    // The 256 KiB of slack spread over fewer connections would loosen the bound past 2 KiB
    // each (2.5 KiB at 512).
    if count < 1_000 {
        eprintln!(
            "SKIP an_idle_connection_costs_the_async_engine_at_most_2_kib: the file limit allows \
             only {count} connections, too few for a 2 KiB bound"
        );
        return;
    }
    let args = ["-l", "tcp://127.0.0.1:0", "--backlog", "4096"];
    let server = Child::start(Engine::Async, &args, 1);
    let addr = server.addr(0);
    probe_baseline(addr, Engine::Async);
    let before = crate::memory::rss_kib(&server.process);
    let idle: Vec<TcpStream> = (0..count)
        .map(|_| {
            let mut conn = connect(addr);
            conn.write_all(b"idle\n").unwrap();
            let mut reply = [0; 5];
            conn.read_exact(&mut reply).unwrap();
            assert_eq!(&reply, b"IDLE\n");
            conn
        })
        .collect();
    let grown = crate::memory::rss_kib(&server.process).saturating_sub(before);
    let per_connection = grown as f64 / count as f64;
    eprintln!(
        "resources: async: {grown} KiB for {count} idle connections ({per_connection:.2} KiB each)"
    );
    assert!(
        grown <= 2 * count as u64 + 256,
        "{count} idle connections cost the async engine {grown} KiB ({per_connection:.2} KiB each)"
    );
    drop(idle);
    server.stop();
}

/// What an idle connection costs the uring engine (issue 15's target: at most 1.0 KB each):
/// each idle connection, answered once and then silent, holds no receive buffer (the kernel
/// lends one only when bytes arrive), so it adds at most 1,000 bytes to the resident set over
/// the same fixed 256 KiB of warm-up as the async test. Measured here: 0.54 KiB each (5,000
/// held, one thread, debug build). One thread, and its receive buffers all lent once before
/// the baseline, so that the buffer pages the kernel first touches are not counted.
#[test]
fn an_idle_connection_costs_the_uring_engine_at_most_1_kb() {
    let _one_at_a_time = IDLE_CONNECTIONS.lock().unwrap_or_else(|e| e.into_inner());
    let count = idle_budget();
    if count < 1_000 {
        eprintln!(
            "SKIP an_idle_connection_costs_the_uring_engine_at_most_1_kb: the file limit allows \
             only {count} connections, too few for a 1 KB bound"
        );
        return;
    }
    let args = [
        "-l",
        "tcp://127.0.0.1:0",
        "--backlog",
        "4096",
        "--threads",
        "1",
    ];
    let server = Child::start(Engine::Uring, &args, 1);
    let addr = server.addr(0);
    probe_baseline(addr, Engine::Uring);
    let ask = |conn: &mut TcpStream| {
        conn.write_all(b"idle\n").unwrap();
        let mut reply = [0; 5];
        conn.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"IDLE\n");
    };
    // More requests than the thread has receive buffers (256): each buffer is lent once.
    let mut warm = connect(addr);
    for _ in 0..300 {
        ask(&mut warm);
    }
    let before = crate::memory::rss_kib(&server.process);
    let idle: Vec<TcpStream> = (0..count)
        .map(|_| {
            let mut conn = connect(addr);
            ask(&mut conn);
            conn
        })
        .collect();
    let grown = crate::memory::rss_kib(&server.process).saturating_sub(before);
    let per_connection = grown as f64 * 1024.0 / count as f64;
    eprintln!(
        "resources: uring: {grown} KiB for {count} idle connections ({per_connection:.0} bytes each)"
    );
    assert!(
        grown * 1024 <= 1_000 * count as u64 + 256 * 1024,
        "{count} idle connections cost the uring engine {grown} KiB ({per_connection:.0} bytes each)"
    );
    drop((warm, idle));
    server.stop();
}

/// A burst of thousands of short requests, all sent at once on connections already accepted,
/// reaches every worker through the queue; the first probe after the burst is served within
/// the same bound as beside idle connections, and every request of the burst is answered.
#[test]
fn a_burst_of_thousands_of_short_requests_does_not_delay_the_next_probe_on_a_pool() {
    let engine = Engine::Pool;
    let _one_at_a_time = IDLE_CONNECTIONS.lock().unwrap_or_else(|e| e.into_inner());
    let count = idle_budget();
    let args = [
        "-l",
        "tcp://127.0.0.1:0",
        "--backlog",
        "4096",
        "--workers",
        FEW_WORKERS,
    ];
    let server = Child::start(engine, &args, 1);
    let addr = server.addr(0);
    let baseline = probe_baseline(addr, engine);
    let before = server.settled_fd_count();
    let mut burst: Vec<TcpStream> = (0..count).map(|_| connect(addr)).collect();
    server.wait_for_fd_count(before + count, "pool accepting the burst's connections");

    let sent = Instant::now();
    for conn in &mut burst {
        conn.write_all(b"job").unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
    }
    let sending = sent.elapsed();
    let took = probe(addr, "pool after a burst");
    eprintln!(
        "resources: pool: probe {baseline:?} alone, {took:?} after a burst of {count} requests \
         (sent in {sending:?})"
    );
    let bound = probe_bound(baseline, Duration::from_secs(1));
    assert!(
        took <= bound,
        "pool: the first probe after a burst of {count} requests took {took:?} (alone {baseline:?})"
    );
    for (index, mut conn) in burst.into_iter().enumerate() {
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"JOB", "request {index} of the burst");
    }
    server.stop();
}

/// With every worker held by a silent peer (`holders` of them: one on the sequential engine),
/// a probe is not served until the idle time-out closes a holder, and is served then.
fn the_idle_timeout_bounds_how_long_silent_peers_hold_the_server(
    engine: Engine,
    extra: &[&str],
    holders: usize,
) {
    const IDLE: Duration = Duration::from_secs(1);
    let mut args = vec!["-l", "tcp://127.0.0.1:0", "--idle-timeout", "1s"];
    args.extend(extra);
    let server = Child::start(engine, &args, 1);
    let addr = server.addr(0);
    let held_since = Instant::now();
    let holders: Vec<TcpStream> = (0..holders)
        .map(|_| {
            let mut holder = connect(addr);
            holder.write_all(b"h").unwrap();
            let mut reply = [0u8; 1];
            holder.read_exact(&mut reply).unwrap(); // its session has begun: a worker is taken
            assert_eq!(&reply, b"H");
            holder
        })
        .collect();

    let mut probe = connect(addr);
    probe.write_all(b"probe").unwrap();
    probe.shutdown(Shutdown::Write).unwrap();

    // Whichever comes first: a holder closed by the server, or the probe's reply.
    let mut fds: Vec<PollFd<'_>> = holders
        .iter()
        .chain([&probe])
        .map(|conn| PollFd::new(conn.as_fd(), PollFlags::POLLIN))
        .collect();
    let ready =
        nix::poll::poll(&mut fds, PollTimeout::try_from(SAFETY_TIMEOUT).unwrap()).expect("poll");
    assert!(
        ready > 0,
        "{engine}: neither a holder closed nor the probe was served"
    );
    let closed: Vec<bool> = fds[..holders.len()]
        .iter()
        .map(|fd| fd.any().unwrap_or(false))
        .collect();
    let held_for = held_since.elapsed();
    assert!(
        closed.contains(&true),
        "{engine}: the probe was served while silent peers held every worker"
    );
    assert!(
        held_for >= IDLE * 4 / 5,
        "{engine}: a holder was closed after {held_for:?}, before the idle time-out of {IDLE:?}"
    );
    for (mut holder, closed) in holders.into_iter().zip(closed) {
        if closed {
            let mut buf = [0u8; 8];
            match holder.read(&mut buf) {
                Ok(0) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
                other => panic!("{engine}: a holder should be closed, read {other:?}"),
            }
        }
    }
    let mut reply = Vec::new();
    probe.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"PROBE", "{engine}: served once a holder was closed");
    server.stop();
}

#[test]
fn the_idle_timeout_bounds_how_long_one_silent_peer_holds_the_sequential_listener() {
    the_idle_timeout_bounds_how_long_silent_peers_hold_the_server(Engine::Sequential, &[], 1);
}

/// Peers in the middle of a session that fall silent hold no pool worker: with more of them
/// than `--workers`, a probe is served at once, and each of them is served again when it
/// speaks. (Before the poller, each held a worker until the idle time-out closed it.)
#[test]
fn silent_peers_in_a_session_hold_no_pool_worker() {
    const WORKERS: usize = 2;
    let server = Child::start(
        Engine::Pool,
        &["-l", "tcp://127.0.0.1:0", "--workers", "2"],
        1,
    );
    let addr = server.addr(0);
    let baseline = probe_baseline(addr, Engine::Pool);
    let mut holders: Vec<TcpStream> = (0..WORKERS * 4)
        .map(|_| {
            let mut holder = connect(addr);
            holder.write_all(b"h").unwrap();
            let mut reply = [0u8; 1];
            holder.read_exact(&mut reply).unwrap(); // its session has begun
            assert_eq!(&reply, b"H");
            holder
        })
        .collect();
    let took = probe(addr, "pool beside silent peers in a session");
    let bound = probe_bound(baseline, Duration::from_secs(1));
    assert!(
        took <= bound,
        "pool: a probe took {took:?} beside {} silent peers and {WORKERS} workers (alone {baseline:?})",
        holders.len()
    );
    for holder in &mut holders {
        assert!(
            !poll_one(holder, PollFlags::POLLIN, Duration::ZERO),
            "pool: a silent peer was closed"
        );
        holder.write_all(b"again").unwrap();
        let mut reply = [0u8; 5];
        holder.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"AGAIN");
    }
    server.stop();
}

/// A peer that answers each reply at once keeps its pool worker between requests (the worker
/// waits briefly on its socket) instead of going through the poller each time: over 2,000 round
/// trips the poller thread sleeps and wakes for fewer than half of them, where a trip through
/// it costs one each. Peers that pause for about as long as that brief wait, or longer, are
/// parked with the poller again, and none of their requests is lost on the way.
#[test]
fn a_quick_peer_on_the_pool_is_served_without_waking_the_poller() {
    const ROUNDS: u64 = 2_000;
    let server = Child::start(Engine::Pool, &["-l", "tcp://127.0.0.1:0"], 1);
    let mut conn = connect(server.addr(0));
    let mut exchange = |request: &[u8]| {
        conn.write_all(request).unwrap();
        let mut reply = vec![0; request.len()];
        conn.read_exact(&mut reply).unwrap();
        assert_eq!(reply, request.to_ascii_uppercase());
    };
    exchange(b"warm up");
    let before = server.poller_switches();
    for _ in 0..ROUNDS {
        exchange(b"ping");
    }
    let switches = server.poller_switches() - before;
    eprintln!("resources: pool: the poller slept {switches} times in {ROUNDS} quick round trips");
    assert!(
        switches < ROUNDS / 2,
        "pool: the poller slept and woke {switches} times in {ROUNDS} round trips of a quick peer"
    );
    // Pauses around the brief wait's length (200 µs, plus up to 50 µs of timer slack) and well
    // past it: the request meets a waiting worker, one parking the connection, or the poller.
    for pause_us in [0, 50, 100, 150, 200, 250, 300, 500, 1_000, 20_000] {
        for _ in 0..10 {
            std::thread::sleep(Duration::from_micros(pause_us));
            exchange(b"after a pause");
        }
    }
    drop(conn); // a raw session runs to its peer's EOF, also through shutdown
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// 4. Shutdown from inside a handler

const THREAD_ENGINES: [Engine; 3] = [Engine::Sequential, Engine::Threaded, Engine::Pool];

/// A reply larger than the socket buffers, so most of it is written well after the shutdown.
fn big_reply() -> &'static [u8] {
    static REPLY: OnceLock<Vec<u8>> = OnceLock::new();
    REPLY.get_or_init(|| (0..4 << 20).map(|i| b'a' + (i % 26) as u8).collect())
}

/// The server's own shutdown handle, given to its handler once the server is bound.
type Stopper = Arc<OnceLock<ShutdownHandle>>;

fn stop(stopper: &Stopper) {
    stopper
        .get()
        .expect("the handle is set before serving")
        .shutdown();
}

/// What `serve_forever` returned, once it has.
type Returned = mpsc::Receiver<Result<(), socketkit::Error>>;

/// Asserts that `serve_forever` has not returned while a request is in flight. Only a wait can
/// show that something does not happen: a short one, as a bug returns at once.
#[track_caller]
fn assert_still_serving(returned: &Returned, what: &str) {
    assert!(
        matches!(
            returned.recv_timeout(Duration::from_millis(100)),
            Err(mpsc::RecvTimeoutError::Timeout)
        ),
        "{what}: serve_forever returned while the request that stopped it was in flight"
    );
}

/// Reads "stop", stops its own server, says "stopping", then reads one more line and answers it
/// with [`big_reply`]: a request that goes on for a round trip after the shutdown.
struct StopMidRequest(Stopper);

impl StreamHandler for StopMidRequest {
    fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
        let mut line = String::new();
        request.reader().read_line(&mut line)?;
        stop(&self.0);
        request.writer().write_all(b"stopping\n")?;
        request.writer().flush()?;
        request.reader().read_line(&mut line)?;
        request.writer().write_all(big_reply())
    }
}

struct AsyncStopMidRequest(Stopper);

impl AsyncStreamHandler for AsyncStopMidRequest {
    async fn handle(&self, request: &mut AsyncStreamRequest) -> io::Result<()> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let mut line = String::new();
        request.reader().read_line(&mut line).await?;
        stop(&self.0);
        request.writer().write_all(b"stopping\n").await?;
        request.writer().flush().await?;
        request.reader().read_line(&mut line).await?;
        request.writer().write_all(big_reply()).await
    }
}

/// Stops its own server, tells the test, waits for the test's go-ahead, and answers the
/// datagram in upper case.
struct StopThenAnswer {
    stopper: Stopper,
    stopped: Mutex<mpsc::Sender<()>>,
    go: Mutex<mpsc::Receiver<()>>,
}

impl DatagramHandler for StopThenAnswer {
    fn handle(&self, request: &mut DatagramRequest<'_>) -> io::Result<()> {
        stop(&self.stopper);
        let _ = self.stopped.lock().unwrap().send(());
        let go = self.go.lock().unwrap().recv_timeout(SAFETY_TIMEOUT);
        go.map_err(|_| io::Error::other("no go-ahead from the test"))?;
        let reply = request.data().to_ascii_uppercase();
        request.reply(&reply)
    }
}

/// Serves `builder` on a thread while `client` talks to it, then asserts that `serve_forever`
/// returns by itself, Ok. The grace period is far longer than the wait, so a return in time
/// means the handler's request finished, not that it was cut off.
fn a_handler_stops_its_server(
    what: &str,
    builder: ServerBuilder,
    stopper: &Stopper,
    client: impl FnOnce(&Endpoint, &Returned),
) {
    let server = builder.grace(Duration::from_secs(60)).bind().unwrap();
    let endpoint = server.local_endpoints()[0].clone();
    stopper.set(server.shutdown_handle()).unwrap();
    let (done, returned) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(server.serve_forever());
    });
    client(&endpoint, &returned);
    match returned.recv_timeout(SAFETY_TIMEOUT) {
        Ok(result) => result.unwrap_or_else(|e| panic!("{what}: serve_forever failed: {e}")),
        Err(_) => panic!("{what}: serve_forever did not return after a handler stopped it"),
    }
}

/// "stop", then "more" once the server said "stopping"; the whole [`big_reply`] must come.
fn stream_client(what: &str) -> impl FnOnce(&Endpoint, &Returned) {
    move |endpoint: &Endpoint, returned: &Returned| {
        let mut conn = connect(endpoint.socket_addrs().unwrap()[0]);
        conn.write_all(b"stop\n").unwrap();
        let mut stopping = [0u8; 9];
        conn.read_exact(&mut stopping).unwrap();
        assert_eq!(&stopping, b"stopping\n", "{what}");
        assert_still_serving(returned, what);
        conn.write_all(b"more\n").unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        let read = conn.read_to_end(&mut reply);
        assert!(
            read.is_ok() && reply == big_reply(),
            "{what}: {read:?}, {} of {} bytes of the reply",
            reply.len(),
            big_reply().len()
        );
    }
}

#[test]
fn a_stream_handler_that_stops_its_server_finishes_its_request_on_every_thread_engine() {
    for engine in THREAD_ENGINES {
        let stopper = Stopper::default();
        let what = format!("{engine} stream handler");
        a_handler_stops_its_server(
            &what,
            Server::builder()
                .engine(engine)
                .listen("tcp://127.0.0.1:0".parse().unwrap())
                .stream_handler(StopMidRequest(stopper.clone())),
            &stopper,
            stream_client(&what),
        );
    }
}

#[test]
fn an_async_handler_that_stops_its_server_finishes_its_request() {
    let stopper = Stopper::default();
    a_handler_stops_its_server(
        "async handler",
        Server::builder()
            .engine(Engine::Async)
            .listen("tcp://127.0.0.1:0".parse().unwrap())
            .async_handler(AsyncStopMidRequest(stopper.clone())),
        &stopper,
        stream_client("async handler"),
    );
}

#[test]
fn a_datagram_handler_that_stops_its_server_still_answers_on_every_thread_engine() {
    for engine in THREAD_ENGINES {
        let stopper = Stopper::default();
        let (stopped_tx, stopped) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let handler = StopThenAnswer {
            stopper: stopper.clone(),
            stopped: Mutex::new(stopped_tx),
            go: Mutex::new(go_rx),
        };
        let what = format!("{engine} datagram handler");
        a_handler_stops_its_server(
            &what,
            Server::builder()
                .engine(engine)
                .listen("udp://127.0.0.1:0".parse().unwrap())
                .datagram_handler(handler),
            &stopper,
            |endpoint, returned| {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
                let server = endpoint.socket_addrs().unwrap()[0];
                socket.send_to(b"stop", server).unwrap();
                stopped
                    .recv_timeout(SAFETY_TIMEOUT)
                    .expect("the handler stopped the server");
                assert_still_serving(returned, &what);
                go.send(()).unwrap();
                let mut reply = [0u8; 16];
                let (n, from) = socket.recv_from(&mut reply).expect("the answer");
                assert_eq!((&reply[..n], from), (&b"STOP"[..], server), "{what}");
            },
        );
    }
}
