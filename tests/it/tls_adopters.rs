//! `tls://` where the blocking and relaying commands adopt it: `listen` (through a
//! `tls::Bridge`) against `openssl s_client`, `relay` with TLS on either side against
//! `openssl s_client` and `openssl s_server`, and `--dump` on a tls:// `send`, which shows the
//! plaintext. Certificates and helpers are `tls.rs`'s.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use socketkit::dump::{self, Direction, DumpFormat};

use crate::common::{self, SAFETY_TIMEOUT, Spawned, TestServer, assert_code, run_peer, socketkit};
use crate::tls::{Certs, Killed, read_until, serve_tls};

/// `openssl s_client` to `addr`, checking the certificate against the test CA for localhost.
fn s_client(certs: &Certs, addr: std::net::SocketAddr) -> Killed {
    Killed(
        Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-verify_return_error",
                "-servername",
                "localhost",
            ])
            .args(["-connect", &addr.to_string(), "-CAfile"])
            .arg(certs.path("ca.pem"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The bytes of every chunk that went one way, in order.
fn joined(chunks: &[dump::Chunk], direction: Direction) -> Vec<u8> {
    chunks
        .iter()
        .filter(|c| c.direction == direction)
        .flat_map(|c| c.bytes.clone())
        .collect()
}

#[test]
fn listen_on_tls_talks_to_openssl_s_client_both_ways_and_dumps_the_plaintext() {
    let certs = Certs::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.txt");
    let mut command = socketkit();
    command
        .args(["listen", "tls://127.0.0.1:0", "--tls-cert"])
        .arg(certs.path("leaf.pem"))
        .arg("--tls-key")
        .arg(certs.path("leaf.key"))
        .arg(format!("--dump=text={}", file.display()));
    let mut listen = Spawned::start(command);
    let endpoint = listen.listening(1).remove(0);
    assert!(endpoint.is_tls(), "{endpoint}");
    let mut client = s_client(&certs, endpoint.socket_addrs().unwrap()[0]);
    client
        .0
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"from openssl\n")
        .unwrap();
    // listen's stdin stays open until s_client's line is through, so neither side ends first.
    let line = common::first_stdout_line(&mut listen.child, "listen");
    assert_eq!(line, "from openssl\n");
    let mut stdin = listen.stdin.take().unwrap();
    stdin.write_all(b"from listen\n").unwrap();
    drop(stdin); // listen half-closes: close_notify, then s_client ends and closes
    let heard = common::first_stdout_line(&mut client.0, "openssl s_client");
    assert_eq!(heard, "from listen\n");
    assert_eq!(listen.wait_exit(), Some(0), "{:#?}", listen.seen);
    let text = std::fs::read_to_string(&file).unwrap();
    let chunks = dump::parse(DumpFormat::Text, &text).unwrap();
    assert_eq!(joined(&chunks, Direction::Received), b"from openssl\n");
    assert_eq!(joined(&chunks, Direction::Sent), b"from listen\n");
}

/// A Python `ssl` client (a memory BIO, for the half-close the socket API lacks) that sends
/// `close_notify` straight after its handshake, as `nc host port < /dev/null` sends nothing,
/// then reads to the end and prints `N close_notify`, or `N truncated` (a close without one).
const HALF_CLOSING_RECEIVER: &str = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
def flush():
    data = outgoing.read()
    if data:
        sock.sendall(data)
def feed():
    data = sock.recv(65536)
    if data:
        incoming.write(data)
    else:
        incoming.write_eof()
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        flush()
        feed()
flush()
try:
    tls.unwrap()
except ssl.SSLWantReadError:
    pass
flush()
got = 0
while True:
    try:
        data = tls.read(65536)
    except ssl.SSLWantReadError:
        feed()
        continue
    except ssl.SSLZeroReturnError:  # the peer's close_notify, after ours
        data = b""
    except (ssl.SSLError, OSError) as e:
        print(got, "truncated", type(e).__name__, flush=True)
        break
    if not data:
        print(got, "close_notify", flush=True)
        break
    got += len(data)
"#;

#[test]
fn listen_on_tls_sends_all_of_its_input_to_a_peer_that_half_closed_first() {
    // nc's file transfer, `listen < FILE` and a peer with nothing to say: the peer's EOF
    // comes first, then listen's input ends and it exits. Over TCP what it wrote is the
    // kernel's to deliver; over TLS the bridge's thread still had records to write, and the
    // exit cut the file short, with exit 0 on both sides.
    let certs = Certs::new();
    let mut command = socketkit();
    command
        .args(["listen", "tls://127.0.0.1:0", "--tls-cert"])
        .arg(certs.path("leaf.pem"))
        .arg("--tls-key")
        .arg(certs.path("leaf.key"));
    let mut listen = Spawned::start(command);
    let endpoint = listen.listening(1).remove(0);
    let port = endpoint.host_port().unwrap().1.to_string();
    let file: Vec<u8> = (0..4_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut stdin = listen.stdin.take().unwrap();
    let feeding = std::thread::spawn(move || {
        let _ = stdin.write_all(&file); // then dropped: listen's input ends
    });
    let output = common::run_peer(
        Command::new("python3")
            .args(["-c", HALF_CLOSING_RECEIVER, &port])
            .arg(certs.path("ca.pem")),
        b"",
    );
    feeding.join().unwrap();
    assert_code(&output, 0);
    assert_eq!(common::stdout(&output).trim(), "4000000 close_notify");
    assert_eq!(listen.wait_exit(), Some(0), "{:#?}", listen.seen);
}

#[test]
fn listen_on_tls_without_a_certificate_is_a_usage_error() {
    let output = run_peer(socketkit().args(["listen", "tls://127.0.0.1:0"]), b"");
    assert_code(&output, 2);
    assert!(
        common::stderr(&output).contains("needs a certificate"),
        "{output:?}"
    );
}

/// `socketkit relay ARGS...`, started, with its bound endpoint.
fn start_relay(args: &[&std::ffi::OsStr]) -> (Spawned, socketkit::Endpoint) {
    let mut command = socketkit();
    command.arg("relay").args(args);
    let mut relay = Spawned::start(command);
    let endpoint = relay.listening(1).remove(0);
    (relay, endpoint)
}

#[test]
fn relay_from_tls_to_tcp_serves_openssl_s_client() {
    let certs = Certs::new();
    let upper = TestServer::start(socketkit::Engine::Async, &["tcp://127.0.0.1:0"]);
    let target = upper.endpoint(0).to_string();
    let (leaf, key) = (certs.path("leaf.pem"), certs.path("leaf.key"));
    let (_relay, endpoint) = start_relay(&[
        "tls://127.0.0.1:0".as_ref(),
        target.as_ref(),
        "--tls-cert".as_ref(),
        leaf.as_os_str(),
        "--tls-key".as_ref(),
        key.as_os_str(),
    ]);
    assert!(endpoint.is_tls(), "{endpoint}");
    let mut client = s_client(&certs, endpoint.socket_addrs().unwrap()[0]);
    client
        .0
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"through a tls relay\n")
        .unwrap();
    let line = common::first_stdout_line(&mut client.0, "openssl s_client");
    assert_eq!(line, "THROUGH A TLS RELAY\n");
}

#[test]
fn relay_from_tcp_to_tls_reaches_openssl_s_server_and_checks_its_certificate() {
    let certs = Certs::new();
    let mut server = Killed(
        Command::new("openssl")
            .args(["s_server", "-rev", "-accept", "0", "-cert"])
            .arg(certs.path("leaf.pem"))
            .arg("-key")
            .arg(certs.path("leaf.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ready = read_until(server.0.stdout.take().unwrap(), "ACCEPT");
    let port = ready.trim().rsplit(':').next().unwrap().to_string();
    let target = format!("tls://localhost:{port}");
    // First a relay that does not trust the target's certificate: that client alone is
    // closed, with one line naming the cause (s_server serves one connection at a time).
    let (mut untrusting, endpoint) = start_relay(&["tcp://127.0.0.1:0".as_ref(), target.as_ref()]);
    let mut plain = TcpStream::connect(endpoint.socket_addrs().unwrap()[0]).unwrap();
    plain.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(got.is_empty(), "{got:?}");
    let line = untrusting.wait_for_line("TLS handshake failed");
    assert!(line.contains("unknown issuer"), "{line}");

    let ca = certs.path("ca.pem");
    let (mut relay, endpoint) = start_relay(&[
        "tcp://127.0.0.1:0".as_ref(),
        target.as_ref(),
        "--tls-ca".as_ref(),
        ca.as_os_str(),
    ]);
    let mut plain = TcpStream::connect(endpoint.socket_addrs().unwrap()[0]).unwrap();
    plain.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    plain.write_all(b"hello relay\n").unwrap();
    let mut line = String::new();
    BufReader::new(&plain).read_line(&mut line).unwrap();
    assert_eq!(line.trim_end(), "yaler olleh");
    drop(plain);

    relay.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(relay.wait_exit(), Some(0), "{:#?}", relay.seen);
}

#[test]
fn send_dump_on_tls_shows_the_plaintext() {
    let certs = Certs::new();
    let (_server, endpoint) = serve_tls(&certs, "leaf.pem", "leaf.key", &[]);
    let port = endpoint.host_port().unwrap().1;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.txt");
    let output = run_peer(
        socketkit()
            .args(["send", &format!("tls://localhost:{port}"), "secret words"])
            .arg("--tls-ca")
            .arg(certs.path("ca.pem"))
            .arg(format!("--dump=hex={}", file.display())),
        b"",
    );
    assert_code(&output, 0);
    assert_eq!(common::stdout(&output), "SECRET WORDS");
    let text = std::fs::read_to_string(&file).unwrap();
    let chunks = dump::parse(DumpFormat::Hex, &text).unwrap();
    assert_eq!(joined(&chunks, Direction::Sent), b"secret words");
    assert_eq!(joined(&chunks, Direction::Received), b"SECRET WORDS");
}

#[test]
fn a_program_after_double_dash_is_served_over_tls() {
    let certs = Certs::new();
    let (_server, endpoint) =
        serve_tls(&certs, "leaf.pem", "leaf.key", &["--", "tr", "a-z", "A-Z"]);
    let port = endpoint.host_port().unwrap().1;
    let output = run_peer(
        socketkit()
            .args(["send", &format!("tls://localhost:{port}"), "from a program"])
            .arg("--tls-ca")
            .arg(certs.path("ca.pem")),
        b"",
    );
    assert_code(&output, 0);
    assert_eq!(common::stdout(&output), "FROM A PROGRAM");
}
