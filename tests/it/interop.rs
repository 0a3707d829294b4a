//! Interoperability with the lecture's own programs: the Python peers in `tests/peers/`, which
//! use nothing but the standard `socket` module. Python clients talk to socketkit servers, and
//! `socketkit send` talks to Python servers. No sleeps: a Python server is ready once it has
//! printed its ready line, a `socketkit serve` child once it has printed `listening on`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, Command, Stdio};

use socketkit::{Endpoint, Engine};

use crate::common::{self, SAFETY_TIMEOUT, Spawned, TestServer};

/// Sentences and what Python's `str.upper()` makes of them (checked against a real Python by
/// `socketkit_send_against_python_servers`, which compares the two).
const SENTENCES: [(&str, &str); 4] = [
    ("hello world", "HELLO WORLD"),
    ("straße", "STRASSE"),
    ("ǆemal ﬁx café", "ǄEMAL FIX CAFÉ"),
    ("ΐ", "\u{399}\u{308}\u{301}"),
];

/// `python3` running a peer program, in UTF-8 mode whatever the locale (argv and stdout).
fn python(peer: &str) -> Command {
    let mut command = Command::new("python3");
    command
        .arg(common::peer(peer))
        .env("PYTHONUTF8", "1")
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

/// Runs a short-lived child to completion (bounded by the safety timeout) and returns its
/// stdout; panics, with its stderr, unless it exits with status 0.
fn run(mut command: Command) -> String {
    let output = common::run_peer(&mut command, b"");
    assert!(
        output.status.success(),
        "{command:?} failed with {}; stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("stdout is UTF-8")
}

/// A Python server from `tests/peers/`, killed (by its handle) when dropped.
struct PyServer {
    child: Child,
    port: u16,
}

impl PyServer {
    /// Starts `peer` on an ephemeral port and waits for its ready line.
    fn start(peer: &str) -> PyServer {
        let child = python(peer)
            .arg("0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python3");
        // The guard exists before the first wait, so a failure below still kills the child.
        let mut server = PyServer { child, port: 0 };
        let line = crate::common::first_stdout_line(&mut server.child, peer);
        server.port = line
            .strip_prefix("The server is ready to receive on port ")
            .and_then(|port| port.trim_end().parse().ok())
            .unwrap_or_else(|| panic!("{peer}: unexpected ready line {line:?}"));
        server
    }

    fn endpoint(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a Python client peer against `host`/`port` and returns its stdout.
fn python_client(peer: &str, host: &str, port: u16, sentence: &str) -> String {
    let mut command = python(peer);
    command.arg(host).arg(port.to_string()).arg(sentence);
    run(command)
}

/// `socketkit send ENDPOINT MESSAGE`; returns the reply it printed.
fn socketkit_send(endpoint: &str, message: &str) -> String {
    let mut command = common::socketkit();
    command.args(["send", "--timeout", "5s", endpoint, message]);
    run(command)
}

/// The Python TCP and UDP clients against a server's TCP (index 0) and UDP (index 1) endpoints.
fn python_clients_against(tcp: &Endpoint, udp: &Endpoint) {
    let tcp = tcp.socket_addrs().unwrap()[0];
    let udp = udp.socket_addrs().unwrap()[0];
    for (sentence, upper) in SENTENCES {
        let expected = format!("From Server: {upper}\n");
        let host = tcp.ip().to_string();
        assert_eq!(
            python_client("tcp_client.py", &host, tcp.port(), sentence),
            expected,
            "TCP {sentence:?}"
        );
        let host = udp.ip().to_string();
        assert_eq!(
            python_client("udp_client.py", &host, udp.port(), sentence),
            expected,
            "UDP {sentence:?}"
        );
    }
}

#[test]
fn python_clients_against_the_async_engine() {
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]);
    python_clients_against(server.endpoint(0), server.endpoint(1));
}

#[test]
fn python_clients_against_the_sequential_engine() {
    let server = TestServer::start(
        Engine::Sequential,
        &["tcp://127.0.0.1:0", "udp://127.0.0.1:0"],
    );
    python_clients_against(server.endpoint(0), server.endpoint(1));
}

#[test]
fn python_clients_over_ipv6_on_every_engine() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback (::1) on this machine");
        return;
    }
    for engine in Engine::ALL {
        let server = TestServer::start(engine, &["tcp://[::1]:0", "udp://[::1]:0"]);
        python_clients_against(server.endpoint(0), server.endpoint(1));
    }
}

#[test]
fn python_clients_against_the_socketkit_binary_on_every_engine() {
    for engine in Engine::ALL {
        let mut command = common::socketkit();
        command.args([
            "serve",
            "--engine",
            engine.name(),
            "--listen",
            "tcp://127.0.0.1:0",
            "--listen",
            "udp://127.0.0.1:0",
        ]);
        let mut serve = Spawned::start(command);
        let endpoints = serve.listening(2);
        let tcp = endpoints.iter().find(|e| matches!(e, Endpoint::Tcp { .. }));
        let udp = endpoints.iter().find(|e| matches!(e, Endpoint::Udp { .. }));
        python_clients_against(tcp.unwrap(), udp.unwrap());
    }
}

#[test]
fn socketkit_send_against_python_servers() {
    for (peer, scheme) in [
        ("tcp_server_sequential.py", "tcp"),
        ("tcp_server_threaded.py", "tcp"),
        ("udp_server.py", "udp"),
    ] {
        let server = PyServer::start(peer);
        for (sentence, upper) in SENTENCES {
            assert_eq!(
                socketkit_send(&server.endpoint(scheme), sentence),
                upper,
                "{peer} {sentence:?}"
            );
        }
    }
}

#[test]
fn python_threaded_server_serves_concurrent_socketkit_clients() {
    let server = PyServer::start("tcp_server_threaded.py");
    // A client that has connected but not yet sent holds one server thread in recv(). An
    // iterative server would make everyone else wait behind it; the threaded one must not.
    let mut slow = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    slow.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();

    let endpoint = server.endpoint("tcp");
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let endpoint = endpoint.clone();
            std::thread::spawn(move || {
                let message = format!("client {i} straße");
                (socketkit_send(&endpoint, &message), message)
            })
        })
        .collect();
    for client in clients {
        let (reply, message) = client.join().unwrap();
        assert_eq!(reply, message.to_uppercase());
    }

    // The slow client is still served once it speaks.
    slow.write_all("last one, größer".as_bytes()).unwrap();
    slow.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    slow.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "LAST ONE, GRÖSSER");
}
