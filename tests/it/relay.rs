//! `socketkit relay` between socketkit and Python servers over tcp and unix, half-closes carried
//! both ways, a refusing target, and the loop refused at start.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use crate::common::{self, SAFETY_TIMEOUT, Spawned, TestServer, socketkit};

/// A Python server for one connection: it greets, half-closes, then reads to the client's EOF
/// and prints the byte count and the bytes. Its first line is its port or path.
const HALF_CLOSING_SERVER: &str = r#"
import socket, sys
if sys.argv[1] == "tcp":
    s = socket.socket(); s.bind(("127.0.0.1", 0)); where = s.getsockname()[1]
else:
    s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[2]); where = sys.argv[2]
s.listen()
print(where, flush=True)
c, _ = s.accept()
c.sendall(b"hello from python\n")
c.shutdown(socket.SHUT_WR)
data = b""
while True:
    b = c.recv(65536)
    if not b:
        break
    data += b
print(len(data), data.decode(), flush=True)
"#;

struct Python {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Python {
    fn start(args: &[&str]) -> Python {
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(HALF_CLOSING_SERVER)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Python { child, lines }
    }
    fn line(&self) -> String {
        self.lines.recv_timeout(SAFETY_TIMEOUT).unwrap()
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(args: &[&str]) -> (Spawned, socketkit::Endpoint) {
    let mut command = socketkit();
    command.arg("relay").args(args);
    let mut process = Spawned::start(command);
    let endpoint = process.listening(1).remove(0);
    (process, endpoint)
}

/// The client's side of the half-closing exchange: read the greeting to its EOF (the target's
/// half-close, carried), then send and half-close (carried to the target).
fn half_closing_client(mut stream: impl Read + Write, shutdown: impl FnOnce(&mut dyn Write)) {
    let mut greeting = String::new();
    stream.read_to_string(&mut greeting).unwrap();
    assert_eq!(greeting, "hello from python\n");
    stream.write_all(b"sent after the target's EOF").unwrap();
    shutdown(&mut stream);
}

#[test]
fn relay_carries_half_closes_both_ways_across_tcp_and_unix() {
    let dir = tempfile::tempdir().unwrap();
    let relay_path = dir.path().join("relay.sock");
    let python_path = dir.path().join("python.sock");

    // tcp -> tcp
    let python = Python::start(&["tcp"]);
    let target = format!("127.0.0.1:{}", python.line());
    let (_relay, endpoint) = start_relay(&["tcp://127.0.0.1:0", &target]);
    let stream = TcpStream::connect(endpoint.socket_addrs().unwrap()[0]).unwrap();
    stream.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let writer = stream.try_clone().unwrap();
    half_closing_client(stream, |_| writer.shutdown(Shutdown::Write).unwrap());
    assert_eq!(python.line(), "27 sent after the target's EOF");

    // unix -> tcp
    let python = Python::start(&["tcp"]);
    let target = format!("tcp://127.0.0.1:{}", python.line());
    let listen = format!("unix://{}", relay_path.display());
    let (_relay, _) = start_relay(&[&listen, &target]);
    let stream = UnixStream::connect(&relay_path).unwrap();
    stream.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let writer = stream.try_clone().unwrap();
    half_closing_client(stream, |_| writer.shutdown(Shutdown::Write).unwrap());
    assert_eq!(python.line(), "27 sent after the target's EOF");

    // tcp -> unix
    let python = Python::start(&["unix", python_path.to_str().unwrap()]);
    python.line();
    let target = format!("unix://{}", python_path.display());
    let (_relay, endpoint) = start_relay(&["tcp://127.0.0.1:0", &target]);
    let stream = TcpStream::connect(endpoint.socket_addrs().unwrap()[0]).unwrap();
    stream.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let writer = stream.try_clone().unwrap();
    half_closing_client(stream, |_| writer.shutdown(Shutdown::Write).unwrap());
    assert_eq!(python.line(), "27 sent after the target's EOF");
}

#[test]
fn relay_to_a_socketkit_server_with_many_clients_and_a_max_connections() {
    let server = TestServer::start(socketkit::Engine::Threaded, &["tcp://127.0.0.1:0"]);
    let target = server.endpoint(0).to_string();
    let (_relay, endpoint) = start_relay(&["-m", "4", "tcp://127.0.0.1:0", &target]);
    let addr = endpoint.socket_addrs().unwrap()[0];
    let clients: Vec<_> = (0..16)
        .map(|i| {
            std::thread::spawn(move || {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
                let message = format!("client {i} {}", "x".repeat(100_000));
                stream.write_all(message.as_bytes()).unwrap();
                stream.shutdown(Shutdown::Write).unwrap();
                let mut reply = String::new();
                stream.read_to_string(&mut reply).unwrap();
                assert_eq!(reply, message.to_uppercase());
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
}

#[test]
fn a_refusing_target_closes_only_that_client_with_one_log_line() {
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = gone.local_addr().unwrap().to_string();
    drop(gone);
    let (mut relay, endpoint) = start_relay(&["tcp://127.0.0.1:0", &target]);
    let addr = endpoint.socket_addrs().unwrap()[0];
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let mut reply = Vec::new();
        // Closed (EOF, or a reset if our bytes were still unread): no data either way.
        let _ = stream.read_to_end(&mut reply);
        assert!(reply.is_empty());
        relay.wait_for_line("cannot reach");
    }
    assert!(
        relay.child.try_wait().unwrap().is_none(),
        "the relay goes on"
    );
    relay.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(relay.wait_exit(), Some(0));
    relay.wait_for_line("stopped");
    let lines = relay.lines_so_far();
    assert_eq!(
        lines.iter().filter(|l| l.contains("cannot reach")).count(),
        2,
        "one line per client: {lines:#?}"
    );
}

#[test]
fn a_target_that_is_the_relays_own_address_is_refused_at_start() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let listen = format!("tcp://127.0.0.1:{port}");
    let output = common::run_peer(
        socketkit().args(["relay", &listen, &format!("localhost:{port}")]),
        b"",
    );
    common::assert_code(&output, 2);
    assert!(common::stderr(&output).contains("own listening address"));
    // Connecting to 0.0.0.0 reaches the loopback: the same loop, on streams and datagrams.
    for scheme in ["tcp", "udp"] {
        let listen = format!("{scheme}://127.0.0.1:{port}");
        let target = format!("{scheme}://0.0.0.0:{port}");
        let output = common::run_peer(socketkit().args(["relay", &listen, &target]), b"");
        common::assert_code(&output, 2);
        assert!(common::stderr(&output).contains("own listening address"));
    }
    let output = common::run_peer(
        socketkit().args([
            "relay",
            "unix:///tmp/sk-loop.sock",
            "unix:///tmp/sk-loop.sock",
        ]),
        b"",
    );
    common::assert_code(&output, 2);
    // Datagrams relay only udp:// to udp://.
    for (listen, target) in [
        ("udp://127.0.0.1:0", "tcp://127.0.0.1:9"),
        ("tcp://127.0.0.1:0", "udp://127.0.0.1:9"),
        ("unixgram:///tmp/sk-relay.sock", "tcp://127.0.0.1:9"),
    ] {
        let output = common::run_peer(socketkit().args(["relay", listen, target]), b"");
        common::assert_code(&output, 2);
    }
}

/// A Python UDP server that answers each datagram with its sender's address and the datagram
/// upper-cased, twice (a target that replies more than once). First line: its port.
const UDP_SERVER: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    data, peer = s.recvfrom(65536)
    for _ in range(2):
        s.sendto(b"%s:%d " % (peer[0].encode(), peer[1]) + data.upper(), peer)
"#;

#[test]
fn udp_relay_gives_each_client_its_own_upstream_socket() {
    let mut python = Command::new("python3");
    python.arg("-c").arg(UDP_SERVER).stdout(Stdio::piped());
    let mut python = python.spawn().unwrap();
    let _kill = KillOnDrop(&mut python);
    let port = common::first_stdout_line(_kill.0, "the Python UDP server");
    let target = format!("udp://127.0.0.1:{}", port.trim());
    let (mut relay, endpoint) = start_relay(&["-v", "-i", "1s", "udp://127.0.0.1:0", &target]);
    let addr = endpoint.socket_addrs().unwrap()[0];
    let mut upstreams = Vec::new();
    for name in ["alice", "bob"] {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        client.send_to(name.as_bytes(), addr).unwrap();
        let mut buf = [0u8; 100];
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(from, addr);
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(seen[0], seen[1]);
        let (upstream, reply) = seen[0].split_once(' ').unwrap();
        assert_eq!(reply, name.to_uppercase());
        upstreams.push(upstream.to_string());
        // The same client again: the same upstream socket.
        client.send_to(b"again", addr).unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&buf[..n]),
            format!("{upstream} AGAIN")
        );
        let _ = client.recv_from(&mut buf).unwrap();
    }
    assert_ne!(upstreams[0], upstreams[1], "one upstream socket per client");
    // Idle for -i: the upstream socket is closed, and the client's next datagram gets a new one.
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let local = client.local_addr().unwrap();
    let mut buf = [0u8; 100];
    let mut upstream_of = |message: &[u8]| {
        client.send_to(message, addr).unwrap();
        let (n, _) = client.recv_from(&mut buf).unwrap();
        let _ = client.recv_from(&mut [0u8; 100]).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        text.split_once(' ').unwrap().0.to_string()
    };
    let first = upstream_of(b"one");
    relay.wait_for_line(&format!("{local}: idle for 1s, upstream closed"));
    assert_ne!(upstream_of(b"two"), first);
    relay.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(relay.wait_exit(), Some(0));
}

/// Kills a child on drop, so a failing test leaves no process behind.
struct KillOnDrop<'a>(&'a mut Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn sigterm_lets_a_relayed_connection_finish_within_the_grace_period() {
    let server = TestServer::start(socketkit::Engine::Async, &["tcp://127.0.0.1:0"]);
    let target = server.endpoint(0).to_string();
    let (mut relay, endpoint) = start_relay(&["--grace", "10s", "tcp://127.0.0.1:0", &target]);
    let mut stream = TcpStream::connect(endpoint.socket_addrs().unwrap()[0]).unwrap();
    stream.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    stream.write_all(b"before ").unwrap();
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).unwrap(); // relayed both ways: the connection is in flight
    assert_eq!(&buf, b"BEFORE ");
    relay.signal(nix::sys::signal::Signal::SIGTERM);
    relay.wait_for_line("shutting down");
    // New peers are no longer taken; this one finishes.
    stream.write_all(b"after").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut rest = String::new();
    stream.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "AFTER");
    assert_eq!(relay.wait_exit(), Some(0));
}

#[test]
fn relay_dump_shows_both_ways_with_the_client_as_the_peer() {
    use socketkit::dump::{self, Direction, DumpFormat};
    let server = TestServer::start(socketkit::Engine::Async, &["tcp://127.0.0.1:0"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("relay.dump");
    let spec = format!("--dump=hex={}", file.display());
    let target = server.endpoint(0).to_string();
    let (_relay, endpoint) = start_relay(&[&spec, "tcp://127.0.0.1:0", &target]);
    let mut stream = TcpStream::connect(endpoint.socket_addrs().unwrap()[0]).unwrap();
    stream.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let data = b"relayed \x00\x01 bytes\n".repeat(20);
    stream.write_all(&data).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, data.to_ascii_uppercase());
    // Each chunk is in the dump before it is passed on.
    let text = std::fs::read_to_string(&file).unwrap();
    let chunks = dump::parse(DumpFormat::Hex, &text).unwrap();
    let client = stream.local_addr().unwrap().to_string();
    assert!(chunks.iter().all(|c| c.peer == client), "{text}");
    let joined = |direction| -> Vec<u8> {
        chunks
            .iter()
            .filter(|c| c.direction == direction)
            .flat_map(|c| c.bytes.clone())
            .collect()
    };
    assert_eq!(joined(Direction::Received), data);
    assert_eq!(joined(Direction::Sent), reply);
}
