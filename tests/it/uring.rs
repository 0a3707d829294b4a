//! The uring engine's own tests: the probe and its fallback, the library's report of the
//! engine that runs, descriptors and receive buffers over 10,000 connections, threads, and the
//! exclusive bind. (Every engine-parametrised test runs it too: it is in `Engine::ALL`.)

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal::SIGTERM;
use socketkit::{Engine, Server};

use crate::common::*;

/// The descriptors a process holds.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// The process's descriptor count once it stopped changing (a closed connection's descriptor
/// goes away asynchronously, with no event to wait for): polled, with a deadline.
fn settled_descriptors(pid: u32) -> usize {
    let deadline = Instant::now() + SAFETY_TIMEOUT;
    let mut last = descriptors(pid);
    let mut unchanged = 0;
    while unchanged < 5 {
        assert!(Instant::now() < deadline, "never settled: {last}");
        std::thread::sleep(Duration::from_millis(10));
        let now = descriptors(pid);
        if now == last {
            unchanged += 1;
        } else {
            (last, unchanged) = (now, 0);
        }
    }
    last
}

#[test]
fn refused_io_uring_falls_back_to_the_async_engine_with_one_warning_and_serves() {
    let mut command = socketkit();
    command.env("SOCKETKIT_URING", "refuse").args([
        "serve",
        "-e",
        "uring",
        "-l",
        "tcp://127.0.0.1:0",
    ]);
    let mut server = Spawned::start(command);
    let line = server.wait_for_line("listening on ");
    assert!(line.ends_with("(upper, async)"), "{line}");
    let endpoint: socketkit::Endpoint = line["listening on ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(exchange(&endpoint, b"fallback"), b"FALLBACK");
    server.signal(SIGTERM);
    assert_eq!(server.wait_exit(), Some(0));
    let warnings: Vec<_> = server
        .lines_so_far()
        .iter()
        .filter(|l| l.contains("WARN"))
        .cloned()
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    // The cause and the fix.
    assert!(
        warnings[0].contains("SOCKETKIT_URING=refuse"),
        "{}",
        warnings[0]
    );
    assert!(warnings[0].contains("unset it"), "{}", warnings[0]);
    assert!(warnings[0].contains("async engine"), "{}", warnings[0]);
}

#[test]
fn the_library_reports_the_engine_that_runs() {
    let server = Server::builder()
        .listen("tcp://127.0.0.1:0".parse().unwrap())
        .engine(Engine::Uring)
        .bind()
        .unwrap();
    // This machine permits io_uring: a fallback here would be a bug of the probe.
    assert_eq!(server.engine(), Engine::Uring);
    assert_eq!("uring".parse::<Engine>(), Ok(Engine::Uring));
}

#[test]
fn ten_thousand_connections_leave_no_descriptor_or_receive_buffer_behind() {
    // One thread: its 256 receive buffers serve every connection, so a buffer not given back
    // per connection would starve the thread long before the last one.
    let mut command = socketkit();
    command.args([
        "serve",
        "-e",
        "uring",
        "--threads",
        "1",
        "-l",
        "tcp://127.0.0.1:0",
    ]);
    let mut server = Spawned::start(command);
    let endpoint = server.listening(1).remove(0);
    let addr = endpoint.socket_addrs().unwrap()[0];
    let pid = server.child.id();
    assert_eq!(exchange(&endpoint, b"first"), b"FIRST");
    let before = settled_descriptors(pid);
    let deadline = Instant::now() + Duration::from_secs(120);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for i in 0..2_500 {
                    assert!(Instant::now() < deadline, "too slow: {i} connections");
                    let mut conn = TcpStream::connect(addr).unwrap();
                    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
                    conn.write_all(b"ping").unwrap();
                    conn.shutdown(Shutdown::Write).unwrap();
                    let mut reply = Vec::new();
                    conn.read_to_end(&mut reply).unwrap();
                    assert_eq!(reply, b"PING");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(settled_descriptors(pid), before, "descriptors leaked");
    assert_eq!(exchange(&endpoint, b"last"), b"LAST");
    server.signal(SIGTERM);
    assert_eq!(server.wait_exit(), Some(0));
}

#[test]
fn threads_sets_the_rings_and_a_second_server_on_the_port_cannot_bind() {
    let mut command = socketkit();
    command.args([
        "serve",
        "-e",
        "uring",
        "--threads",
        "3",
        "-l",
        "tcp://127.0.0.1:0",
    ]);
    let mut server = Spawned::start(command);
    let endpoint = server.listening(1).remove(0);
    assert_eq!(exchange(&endpoint, b"x"), b"X");
    let pid = server.child.id();
    // Thread names are cut to 15 bytes: "socketkit-uring".
    let rings = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter(|task| {
            let comm = task.as_ref().unwrap().path().join("comm");
            std::fs::read_to_string(comm).is_ok_and(|c| c.starts_with("socketkit-uring"))
        })
        .count();
    assert_eq!(rings, 3);
    // The threads share one listening socket: the port is as taken as on any engine.
    let second = run_peer(
        socketkit().args(["serve", "-e", "uring", "-l", &endpoint.to_string()]),
        b"",
    );
    assert_code(&second, 7);
    server.signal(SIGTERM);
    assert_eq!(server.wait_exit(), Some(0));
}

/// The receives armed in each of a process's rings (`IORING_OP_RECV`, 27, in the kernel's
/// list of a ring's armed polls, `/proc/PID/fdinfo`): how many idle connections each holds.
fn receives_per_ring(pid: u32) -> Vec<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| {
            let fd = fd.ok()?;
            let target = std::fs::read_link(fd.path()).ok()?;
            target
                .to_str()?
                .contains("io_uring")
                .then_some(fd.file_name())
        })
        .map(|fd| {
            let info =
                std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.to_str().unwrap()))
                    .unwrap();
            info.lines()
                .filter(|l| l.trim_start().starts_with("op=27,"))
                .count()
        })
        .collect()
}

/// Threads that share a listening socket share its connections: a multishot accept stays
/// first in the socket's queue of exclusive waiters, so its ring took every connection and
/// `--threads 2` served on one thread (20 of 20 on one ring). One-shot accepts, each armed
/// again behind the other rings', take turns.
#[test]
fn threads_sharing_a_listener_take_turns_at_its_connections() {
    let mut command = socketkit();
    command.args(["serve", "upper", "-e", "uring", "--threads", "2"]);
    command.args(["-l", "tcp://127.0.0.1:0"]);
    let mut server = Spawned::start(command);
    let addr = server.listening(1)[0].socket_addrs().unwrap()[0];
    let pid = server.child.id();
    // One at a time, each answered (so accepted and its receive armed) before the next.
    let conns: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut conn = TcpStream::connect(addr).unwrap();
            conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
            conn.write_all(b"x\n").unwrap();
            let mut reply = [0; 2];
            conn.read_exact(&mut reply).unwrap();
            assert_eq!(&reply, b"X\n");
            conn
        })
        .collect();
    let deadline = Instant::now() + SAFETY_TIMEOUT;
    let per_ring = loop {
        let per_ring = receives_per_ring(pid);
        if per_ring.iter().sum::<usize>() == conns.len() || Instant::now() > deadline {
            break per_ring;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(per_ring.len(), 2, "two rings: {per_ring:?}");
    assert_eq!(per_ring.iter().sum::<usize>(), conns.len(), "{per_ring:?}");
    assert!(
        per_ring.iter().all(|&n| n >= 5),
        "the connections of one listener on two threads, by ring: {per_ring:?}"
    );
    drop(conns);
    server.signal(SIGTERM);
    assert_eq!(server.wait_exit(), Some(0));
}

/// One permit shared by two threads: each connection's end gives it back, and the thread that
/// found none (blocked, its accepts stopped) must hear of it, or connections wait in the
/// listen queue for a wake-up that never comes. Two clients take turns at the one permit,
/// each connection served within the safety time-out.
#[test]
fn threads_sharing_one_permit_serve_every_connection_in_turn() {
    let mut command = socketkit();
    command.args(["serve", "upper", "-e", "uring", "--threads", "2"]);
    command.args(["--max-connections", "1", "-l", "tcp://127.0.0.1:0"]);
    let mut server = Spawned::start(command);
    let addr = server.listening(1)[0].socket_addrs().unwrap()[0];
    let deadline = Instant::now() + Duration::from_secs(60);
    let clients: Vec<_> = (0..2)
        .map(|client| {
            std::thread::spawn(move || {
                for i in 0..150 {
                    assert!(
                        Instant::now() < deadline,
                        "client {client}: too slow at {i}"
                    );
                    let mut conn = TcpStream::connect(addr).unwrap();
                    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
                    conn.write_all(b"turn").unwrap();
                    conn.shutdown(Shutdown::Write).unwrap();
                    let mut reply = Vec::new();
                    conn.read_to_end(&mut reply)
                        .unwrap_or_else(|e| panic!("client {client}, connection {i}: {e}"));
                    assert_eq!(reply, b"TURN", "client {client}, connection {i}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    server.signal(SIGTERM);
    assert_eq!(server.wait_exit(), Some(0));
}
