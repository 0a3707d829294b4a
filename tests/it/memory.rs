//! What peers that announce large frames and stall can cost a server: the process's budget
//! for buffered input (`--max-buffered`), and memory given back after they close. Memory is
//! the server process's resident set (VmRSS), so these tests run the binary.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socketkit::Engine;

use crate::common::{SAFETY_TIMEOUT, Spawned, socketkit};

const MIB: u64 = 1024 * 1024;

/// The announced size of every stalled frame: far over what any of them sends.
const ANNOUNCED: u32 = 32 << 20;

/// Starts `serve upper` in length framing on `engine` with the budget `max_buffered`, and
/// returns it with its address once one small frame has been served (the baseline).
fn serve(engine: Engine, max_buffered: &str) -> (Spawned, SocketAddr) {
    let mut command = socketkit();
    command.args([
        "serve",
        "upper",
        "-l",
        "tcp://127.0.0.1:0",
        "--framing",
        "length",
    ]);
    command.args([
        "--max-frame",
        &ANNOUNCED.to_string(),
        "--max-buffered",
        max_buffered,
    ]);
    command.args(["--engine", engine.name(), "--workers", "64"]);
    let mut server = Spawned::start(command);
    let addr = server.listening(1)[0].socket_addrs().unwrap()[0];
    assert_small_frame_is_served(addr, engine);
    (server, addr)
}

pub(crate) fn rss_kib(server: &Spawned) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The server's ends of connections to `port` (state, bytes not yet read), from /proc/net/tcp.
fn server_ends(port: u16) -> Vec<(u8, u64)> {
    let local = format!("0100007F:{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let state = u8::from_str_radix(fields[3], 16).unwrap();
            let queues = fields[4].split_once(':').unwrap();
            (fields[1] == local && state != TCP_LISTEN)
                .then(|| (state, u64::from_str_radix(queues.1, 16).unwrap()))
        })
        .collect()
}

const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LISTEN: u8 = 0x0A;

/// Waits (bounded) until the kernel shows `done` for the server's ends of its connections.
/// Kernel state is the event here: the server gives no other sign that it has read a byte.
fn wait_for_server(addr: SocketAddr, what: &str, done: impl Fn(&[(u8, u64)]) -> bool) {
    let began = Instant::now();
    while !done(&server_ends(addr.port())) {
        assert!(
            began.elapsed() < SAFETY_TIMEOUT,
            "{what}: {:?}",
            server_ends(addr.port())
        );
        std::thread::sleep(Duration::from_millis(10)); // a probe's pace, not a synchronisation
    }
}

/// The server has read everything its open connections sent.
fn all_read(ends: &[(u8, u64)]) -> bool {
    ends.iter()
        .all(|&(state, unread)| state != TCP_ESTABLISHED || unread == 0)
}

/// Every connection is closed on the server's side.
fn all_closed(ends: &[(u8, u64)]) -> bool {
    !ends
        .iter()
        .any(|&(state, _)| state == TCP_ESTABLISHED || state == TCP_CLOSE_WAIT)
}

fn assert_small_frame_is_served(addr: SocketAddr, engine: Engine) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    conn.write_all(b"\x00\x00\x00\x02ok").unwrap();
    let mut reply = [0u8; 6];
    conn.read_exact(&mut reply)
        .unwrap_or_else(|e| panic!("{engine}: a small frame was not served: {e}"));
    assert_eq!(&reply, b"\x00\x00\x00\x02OK", "{engine}");
}

/// A peer that announces [`ANNOUNCED`] bytes, sends `payload` of them and stalls. Stops
/// writing once the server closes the connection.
fn stall(addr: SocketAddr, payload: usize) -> TcpStream {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_write_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    conn.write_all(&ANNOUNCED.to_be_bytes()).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < payload {
        let n = chunk.len().min(payload - sent);
        if conn.write_all(&chunk[..n]).is_err() {
            break; // closed by the server
        }
        sent += n;
    }
    conn
}

/// Whether the server has closed `conn`: a read that does not wait sees EOF or a reset.
fn closed_by_server(conn: &TcpStream) -> bool {
    conn.set_nonblocking(true).unwrap();
    let closed = match (&*conn).read(&mut [0u8; 64]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    conn.set_nonblocking(false).unwrap();
    closed
}

/// How many stalled peers, each sending how much. The sequential engine reads one connection
/// at a time, so one peer there sends more than the whole budget.
fn stalled_peers(engine: Engine) -> (usize, usize) {
    if engine == Engine::Sequential {
        (1, 8 << 20)
    } else {
        (40, 512 << 10)
    }
}

#[test]
fn peers_that_stall_mid_frame_hold_no_more_than_the_budget_on_every_engine() {
    for engine in Engine::ALL {
        let (server, addr) = serve(engine, "4M");
        let base = rss_kib(&server);
        let (count, payload) = stalled_peers(engine);
        let peers: Vec<TcpStream> = (0..count).map(|_| stall(addr, payload)).collect();
        wait_for_server(addr, "the server did not read the stalled frames", all_read);
        let grown = rss_kib(&server).saturating_sub(base);
        // Without the budget: 40 × 512 KiB (20 MiB) held, or 8 MiB on one connection.
        let closed = peers.iter().filter(|p| closed_by_server(p)).count();
        assert!(
            closed >= count * 3 / 4,
            "{engine}: {closed} of {count} stalled peers closed, the budget is 4 MiB"
        );
        assert!(
            grown < 12 * 1024,
            "{engine}: the server grew by {grown} KiB for a budget of 4 MiB"
        );
        // The budget is full of stalled frames, and a whole small frame is still served.
        assert_small_frame_is_served(addr, engine);
    }
}

#[test]
fn buffered_memory_goes_back_to_the_system_after_the_peers_close_on_every_engine() {
    for engine in Engine::ALL {
        let (server, addr) = serve(engine, "1G");
        let base = rss_kib(&server);
        // glibc's allocator keeps freed memory once its mmap threshold has grown, which the
        // first round's frees make it do: the later rounds are the test. The sizes differ so
        // that each engine's allocation pattern meets the grown threshold somewhere.
        let rounds: &[(usize, usize)] = if engine == Engine::Sequential {
            &[(1, 8_000_000); 3]
        } else {
            &[(40, 1_500_000), (40, 700_000), (40, 1_500_000)]
        };
        for (round, &(count, payload)) in rounds.iter().enumerate() {
            let peers: Vec<TcpStream> = (0..count).map(|_| stall(addr, payload)).collect();
            wait_for_server(addr, "the server did not read the stalled frames", all_read);
            let held = rss_kib(&server).saturating_sub(base);
            assert!(
                held * 1024 >= (count * payload / 2) as u64,
                "{engine}: round {round} held only {held} KiB: the frames were not buffered"
            );
            drop(peers);
            wait_for_server(addr, "the server did not close the connections", all_closed);
            let kept = rss_kib(&server).saturating_sub(base);
            assert!(
                kept * 1024 < 6 * MIB,
                "{engine}: round {round} kept {kept} KiB of {held} KiB after every peer closed"
            );
        }
    }
}

/// A peer that sends without ever reading its replies: writes until TCP holds it back (a
/// write that makes no progress for a second: the server reads no more from it), at most
/// `limit` bytes. Returns the connection and whether it was held back.
fn flood(addr: SocketAddr, limit: usize) -> (TcpStream, bool) {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let chunk = vec![b'f'; 64 * 1024];
    let mut sent = 0;
    while sent < limit {
        match conn.write(&chunk) {
            Ok(n) => sent += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return (conn, true);
            }
            Err(e) => panic!("a flooding peer was cut off after {sent} bytes: {e}"),
        }
    }
    (conn, false)
}

/// Peers that send without reading their replies are held back by TCP, as the server reads
/// only what it can answer: each costs it little memory, and other clients are still served.
/// On the uring engine a multishot receive used to drain such a peer's socket into held input
/// (3.3-4.0 MiB per peer). The sequential engine serves one connection at a time, so such a
/// peer holds it until the write time-out, by design: it is left out.
#[test]
fn peers_that_send_without_reading_cost_little_memory_on_every_engine() {
    const PEERS: u64 = 4;
    for engine in Engine::ALL {
        if engine == Engine::Sequential {
            continue;
        }
        let mut command = socketkit();
        command.args(["serve", "upper", "-l", "tcp://127.0.0.1:0"]);
        command.args(["--engine", engine.name()]);
        if engine == Engine::Uring {
            // One ring, whose receive buffers (256 of 16 KiB) the warm-up below touches.
            command.args(["--threads", "1"]);
        }
        let mut server = Spawned::start(command);
        let endpoint = server.listening(1).remove(0);
        let addr = endpoint.socket_addrs().unwrap()[0];
        // Warm-up: 300 requests of a full read buffer, one at a time, so that the buffers
        // every engine keeps for good (uring's rings) are resident before the baseline.
        let mut warm = TcpStream::connect(addr).unwrap();
        warm.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let request = vec![b'w'; 16 * 1024];
        let mut reply = vec![0; request.len()];
        for _ in 0..300 {
            warm.write_all(&request).unwrap();
            warm.read_exact(&mut reply).unwrap();
        }
        drop(warm);
        let base = rss_kib(&server);
        let deadline = Instant::now() + Duration::from_secs(60);
        let peers: Vec<_> = (0..PEERS)
            .map(|_| std::thread::spawn(move || flood(addr, 1 << 30)))
            .collect();
        let peers: Vec<TcpStream> = peers
            .into_iter()
            .map(|peer| {
                let (conn, held_back) = peer.join().unwrap();
                assert!(
                    held_back,
                    "{engine}: the server read 1 GiB it could not answer"
                );
                conn
            })
            .collect();
        assert!(Instant::now() < deadline, "{engine}: too slow");
        let grown = rss_kib(&server).saturating_sub(base);
        assert!(
            grown / PEERS < 256,
            "{engine}: the server grew by {grown} KiB for {PEERS} peers that do not read"
        );
        assert_eq!(
            crate::common::exchange(&endpoint, b"still served"),
            b"STILL SERVED",
            "{engine}"
        );
        drop(peers);
        server.signal(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(server.wait_exit(), Some(0), "{engine}");
    }
}
