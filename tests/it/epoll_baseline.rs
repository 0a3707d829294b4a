//! The benchmark report's C peer (`benches/epoll_baseline.c`) answers what the load generator
//! checks: compiled with `cc` when there is one (skipped with a message when not), started as
//! `scripts/bench.sh` starts it, and talked to over TCP and UDP.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use socketkit::endpoint::Endpoint;

use crate::common::{SAFETY_TIMEOUT, Spawned};

/// Compiles the C server into `dir` as bench.sh does; `None` (said on stderr) without `cc`.
fn compile(dir: &Path) -> Option<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/epoll_baseline.c");
    let binary = dir.join("epoll_baseline");
    let output = match Command::new("cc")
        .args(["-O2", "-Wall", "-pthread", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("skipped: no C compiler (cc) to build {}", source.display());
            return None;
        }
        Err(e) => panic!("cannot run cc: {e}"),
    };
    assert!(
        output.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(binary)
}

/// The C server on ephemeral TCP and UDP ports, with the addresses from its ready lines.
fn start(binary: &Path) -> (Spawned, Endpoint, Endpoint) {
    let mut command = Command::new(binary);
    command.args(["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"]);
    let mut server = Spawned::start(command);
    let mut endpoints = server.listening(2);
    let udp = endpoints.pop().unwrap();
    let tcp = endpoints.pop().unwrap();
    assert_eq!(tcp.to_string().split("://").next(), Some("tcp"), "{tcp}");
    assert_eq!(udp.to_string().split("://").next(), Some("udp"), "{udp}");
    (server, tcp, udp)
}

fn connect(endpoint: &Endpoint) -> TcpStream {
    let addr = endpoint.to_string().trim_start_matches("tcp://").to_owned();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    stream
}

#[test]
fn c_epoll_baseline_uppercases_ascii_over_tcp_and_udp() {
    let dir = tempfile::tempdir().unwrap();
    let Some(binary) = compile(dir.path()) else {
        return;
    };
    let (_server, tcp, udp) = start(&binary);

    // Two connections at once, served by the one thread in turn; non-ASCII bytes pass as they
    // are (ASCII uppercase only, like the tokio baseline).
    let mut streams = [connect(&tcp), connect(&tcp)];
    for (index, request, reply) in [
        (0, "hello, world\n", "HELLO, WORLD\n"),
        (1, "café au lait\n", "CAFé AU LAIT\n"),
        (0, "again\n", "AGAIN\n"),
    ] {
        streams[index].write_all(request.as_bytes()).unwrap();
        let mut got = vec![0; reply.len()];
        streams[index].read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), reply);
    }
    // A half-close ends the connection once its replies are out.
    streams[1].shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        streams[1].read(&mut [0; 16]).unwrap(),
        0,
        "EOF after a half-close"
    );

    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    socket
        .connect(udp.to_string().trim_start_matches("udp://"))
        .unwrap();
    for request in ["one datagram", "and another, from the same socket"] {
        socket.send(request.as_bytes()).unwrap();
        let mut reply = [0; 128];
        let n = socket.recv(&mut reply).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&reply[..n]),
            request.to_ascii_uppercase()
        );
    }
}

#[test]
fn c_epoll_baseline_stops_reading_a_peer_that_does_not_read_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(binary) = compile(dir.path()) else {
        return;
    };
    let (_server, tcp, _) = start(&binary);
    // More than the socket buffers of both directions hold together (at most about 20 MiB
    // here: tcp_wmem and tcp_rmem's maxima, twice): with this client not reading, the server's
    // writes come up short, it keeps the rest and stops reading, and the client's writes stall.
    const BYTES: usize = 32 << 20;
    const STALL: Duration = Duration::from_secs(1);
    let pattern: Vec<u8> = (0..BYTES)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz\n"[i % 27])
        .collect();
    let mut stream = connect(&tcp);
    let mut writer = stream.try_clone().unwrap();
    // A write that moves nothing for STALL returns WouldBlock: the event "the server stopped
    // reading". (A stall of the machine as long could pass for it, never fail the test.)
    writer.set_write_timeout(Some(STALL)).unwrap();
    let (stalled_tx, stalled) = mpsc::channel();
    let sent = pattern.clone();
    let writing = std::thread::spawn(move || {
        let (mut at, mut stalls) = (0, 0);
        while at < sent.len() {
            match writer.write(&sent[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock && stalls < 60 => {
                    stalls += 1;
                    let _ = stalled_tx.send(at);
                }
                Err(e) => panic!("write at byte {at}: {e}"),
            }
        }
        writer.shutdown(Shutdown::Write).unwrap();
        drop(stalled_tx);
    });
    // Read only once the writes have stalled (or all gone out: the assert below says so).
    let stalled_at = stalled.recv().ok();
    let mut got = Vec::with_capacity(BYTES);
    stream.read_to_end(&mut got).unwrap();
    writing.join().unwrap();
    let stalled_at =
        stalled_at.expect("the client's writes never stalled: the server read on without bound");
    assert!(stalled_at < BYTES, "{stalled_at}");
    assert_eq!(got.len(), BYTES, "every byte comes back, then EOF");
    assert!(
        got == pattern.to_ascii_uppercase(),
        "the replies are the requests in upper case, in order"
    );
}
