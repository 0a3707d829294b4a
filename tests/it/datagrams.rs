//! The datagram path under hostile peers, on every engine: forged reply loops end, a Unix peer
//! that never reads holds no one up, and IPv6 carries its own largest payload.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use socketkit::handler::{DatagramHandler, DatagramRequest};
use socketkit::service::{Context, EchoSession, Service};
use socketkit::{Endpoint, Engine, Server};

use crate::common::{SAFETY_TIMEOUT, TestServer, exchange, socketkit, stdout};

/// Echo that counts the datagrams it answers.
#[derive(Clone, Default)]
struct CountingEcho(Arc<AtomicUsize>);

impl Service for CountingEcho {
    type Session = EchoSession;
    fn name(&self) -> &str {
        "counting-echo"
    }
    fn session(&self, _ctx: &Context) -> EchoSession {
        EchoSession
    }
    fn message(&self, _ctx: &Context, request: &[u8], reply: &mut BytesMut) -> bool {
        self.0.fetch_add(1, Ordering::SeqCst);
        reply.extend_from_slice(request);
        true
    }
}

/// A raw IPv4 socket that writes whole packets: the only way to forge a UDP source address on
/// loopback. `None` (and the test is skipped, saying so) without CAP_NET_RAW.
fn raw_socket() -> Option<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)) {
        Ok(socket) => {
            socket.set_header_included_v4(true).unwrap();
            Some(socket)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            eprintln!("skipped: forging a source address needs CAP_NET_RAW ({e})");
            None
        }
        Err(e) => panic!("raw socket: {e}"),
    }
}

/// Sends one UDP datagram from `from` (forged) to `to`. The kernel fills in the IP header's
/// checksum and length; a zero UDP checksum means "none", which IPv4 allows.
fn forge(raw: &socket2::Socket, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) {
    let udp_len = 8 + payload.len() as u16;
    let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    packet[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
    packet.extend_from_slice(&from.ip().octets());
    packet.extend_from_slice(&to.ip().octets());
    packet.extend_from_slice(&from.port().to_be_bytes());
    packet.extend_from_slice(&to.port().to_be_bytes());
    packet.extend_from_slice(&udp_len.to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet.extend_from_slice(payload);
    raw.send_to(&packet, &SocketAddr::from(to).into()).unwrap();
}

fn v4(addr: SocketAddr, ip: Ipv4Addr) -> SocketAddrV4 {
    SocketAddrV4::new(ip, addr.port())
}

#[test]
fn a_datagram_forged_from_the_servers_own_address_is_not_answered() {
    let Some(raw) = raw_socket() else { return };
    let localhost = Ipv4Addr::LOCALHOST;
    // (listener, the forged source's address: the same port, a local address)
    let cases = [
        ("udp://127.0.0.1:0", localhost),
        ("udp://0.0.0.0:0", Ipv4Addr::new(127, 0, 0, 2)),
        ("udp://[::]:0", localhost), // seen as ::ffff:127.0.0.1, IPv4-mapped
    ];
    for engine in Engine::ALL {
        for (listen, source_ip) in cases {
            let count = CountingEcho::default();
            let server = TestServer::with(
                Server::builder()
                    .engine(engine)
                    .service(count.clone())
                    .listen(listen.parse().unwrap()),
            );
            let port = server.addr().port();
            let target = SocketAddrV4::new(localhost, port);
            // The forging works: a forged source that is a plain socket gets its answer.
            let witness = UdpSocket::bind("127.0.0.1:0").unwrap();
            witness.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
            let witness_addr = v4(witness.local_addr().unwrap(), localhost);
            forge(&raw, witness_addr, target, b"witness");
            let mut buf = [0u8; 64];
            let n = witness
                .recv(&mut buf)
                .expect("the forged witness is answered");
            assert_eq!(&buf[..n], b"witness");
            assert_eq!(count.0.load(Ordering::SeqCst), 1);

            forge(&raw, SocketAddrV4::new(source_ip, port), target, b"loop?");
            // Two exchanges later the forged datagram has been dealt with; had it been
            // answered, the server would have been answering itself ever since.
            let client: Endpoint = format!("udp://127.0.0.1:{port}").parse().unwrap();
            assert_eq!(exchange(&client, b"one"), b"one");
            assert_eq!(exchange(&client, b"two"), b"two");
            assert_eq!(
                count.0.load(Ordering::SeqCst),
                3,
                "{engine} {listen}: the forged datagram reached the service"
            );
        }
    }
}

#[test]
fn a_datagram_forged_between_two_listeners_of_one_process_is_not_answered() {
    let Some(raw) = raw_socket() else { return };
    for engine in Engine::ALL {
        let count = CountingEcho::default();
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .service(count.clone())
                .listen("udp://127.0.0.1:0".parse().unwrap())
                .listen("udp://127.0.0.1:0".parse().unwrap()),
        );
        let a = server.endpoint(0).socket_addrs().unwrap()[0];
        let b = server.endpoint(1).socket_addrs().unwrap()[0];
        forge(
            &raw,
            v4(b, Ipv4Addr::LOCALHOST),
            v4(a, Ipv4Addr::LOCALHOST),
            b"loop?",
        );
        assert_eq!(exchange(server.endpoint(0), b"one"), b"one");
        assert_eq!(exchange(server.endpoint(1), b"two"), b"two");
        assert_eq!(count.0.load(Ordering::SeqCst), 2, "{engine}");
    }
}

/// Plays the other server of a loop: answers every datagram with itself, from a socket that
/// answers anybody (unconnected), as an echo server does. Returns how many it got before the
/// loop went quiet (no datagram for a second), stopping at `cap`.
fn reflect(
    mut recv: impl FnMut(&mut [u8]) -> Option<usize>,
    mut send: impl FnMut(&[u8]),
    cap: usize,
) -> usize {
    let mut buf = vec![0u8; 65_536];
    for got in 0..cap {
        let Some(n) = recv(&mut buf) else {
            return got;
        };
        send(&buf[..n]);
    }
    cap
}

#[test]
fn a_reply_loop_with_another_server_ends_within_a_thousand_datagrams() {
    const CAP: usize = 1_000;
    for engine in Engine::ALL {
        let server = TestServer::start(engine, &["udp://127.0.0.1:0", "unixgram://{dir}/g.sock"]);
        // UDP: the other server is an echo on a socket of its own.
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        echo.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let upper = server.addr();
        echo.send_to(b"forged", upper).unwrap();
        let got = reflect(
            |buf| echo.recv(buf).ok(),
            |bytes| drop(echo.send_to(bytes, upper)),
            CAP,
        );
        assert!(
            got < CAP,
            "{engine}: the UDP loop was still going after {got} datagrams"
        );
        // Unix datagrams: the same, from a bound socket.
        let dir = tempfile::tempdir().unwrap();
        let echo = UnixDatagram::bind(dir.path().join("echo.sock")).unwrap();
        echo.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let Endpoint::UnixDatagram(path) = server.endpoint(1) else {
            unreachable!()
        };
        echo.send_to(b"forged", path).unwrap();
        let got = reflect(
            |buf| echo.recv(buf).ok(),
            |bytes| drop(echo.send_to(bytes, path)),
            CAP,
        );
        assert!(
            got < CAP,
            "{engine}: the unixgram loop was still going after {got} datagrams"
        );
        // Only the loop is muted: another client is answered.
        assert_eq!(exchange(server.endpoint(0), b"still"), b"STILL", "{engine}");
    }
}

/// Echoes each datagram, recording who asked: the `DatagramHandler` counterpart of
/// [`CountingEcho`].
#[derive(Clone, Default)]
struct EchoHandler(Arc<std::sync::Mutex<Vec<socketkit::service::Address>>>);

impl DatagramHandler for EchoHandler {
    fn handle(&self, request: &mut DatagramRequest<'_>) -> std::io::Result<()> {
        self.0.lock().unwrap().push(request.peer().clone());
        let data = request.data().to_vec();
        request.reply(&data)
    }
}

const THREAD_ENGINES: [Engine; 3] = [Engine::Sequential, Engine::Threaded, Engine::Pool];

#[test]
fn a_reply_loop_between_a_datagram_handler_and_another_server_ends_within_a_thousand_datagrams() {
    const CAP: usize = 1_000;
    // The async engine runs no DatagramHandler (bind refuses one).
    for engine in THREAD_ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.sock");
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .datagram_handler(EchoHandler::default())
                .listen("udp://127.0.0.1:0".parse().unwrap())
                .listen(Endpoint::UnixDatagram(path.clone())),
        );
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        echo.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let handler = server.addr();
        echo.send_to(b"forged", handler).unwrap();
        let got = reflect(
            |buf| echo.recv(buf).ok(),
            |bytes| drop(echo.send_to(bytes, handler)),
            CAP,
        );
        assert!(
            got < CAP,
            "{engine}: the UDP loop was still going after {got} datagrams"
        );
        let echo = UnixDatagram::bind(dir.path().join("echo.sock")).unwrap();
        echo.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        echo.send_to(b"forged", &path).unwrap();
        let got = reflect(
            |buf| echo.recv(buf).ok(),
            |bytes| drop(echo.send_to(bytes, &path)),
            CAP,
        );
        assert!(
            got < CAP,
            "{engine}: the unixgram loop was still going after {got} datagrams"
        );
        assert_eq!(exchange(server.endpoint(0), b"still"), b"still", "{engine}");
    }
}

#[test]
fn a_datagram_handler_answers_no_datagram_from_a_service_port() {
    // Port 7 (echo) needs privileges; where they are missing there is nothing to test.
    let Ok(from_echo_port) = UdpSocket::bind("127.0.0.1:7") else {
        eprintln!("SKIP: cannot bind port 7");
        return;
    };
    for engine in THREAD_ENGINES {
        let handler = EchoHandler::default();
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .datagram_handler(handler.clone())
                .listen("udp://127.0.0.1:0".parse().unwrap()),
        );
        from_echo_port.send_to(b"loop?", server.addr()).unwrap();
        assert_eq!(
            exchange(server.endpoint(0), b"normal"),
            b"normal",
            "{engine}"
        );
        // Stopping joins every handler job: whatever reached the handler has been recorded.
        server.stop().unwrap();
        let asked = handler.0.lock().unwrap();
        assert_eq!(asked.len(), 1, "{engine}: {asked:?}");
        assert_ne!(asked[0].inet().map(|a| a.port()), Some(7), "{engine}");
    }
}

#[test]
fn a_connected_client_that_sends_its_reply_back_is_never_muted() {
    for engine in Engine::ALL {
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .service(socketkit::service::Echo)
                .listen("udp://127.0.0.1:0".parse().unwrap()),
        );
        // A closed-loop client with a constant payload, as fast as it can: an echo loop on the
        // wire, but its socket is connected to the server, so it is a client.
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.connect(server.addr()).unwrap();
        client.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let mut buf = [0u8; 64];
        for i in 0..1_000 {
            client.send(b"ping").unwrap();
            let n = client
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("{engine}: request {i} unanswered: {e}"));
            assert_eq!(&buf[..n], b"ping");
        }
    }
}

#[test]
fn bench_against_the_echo_service_over_udp_loses_nothing() {
    let server = TestServer::with(
        Server::builder()
            .service(socketkit::service::Echo)
            .listen("udp://127.0.0.1:0".parse().unwrap()),
    );
    let output = socketkit()
        .args(["bench", &server.endpoint(0).to_string()])
        .args([
            "-m", "udp", "--expect", "echo", "-c", "2", "-n", "5000", "--json",
        ])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(report["ok"], 5000, "{report}");
    assert_eq!(report["losses"], 0, "{report}");
}

#[test]
fn a_unix_peer_that_never_reads_holds_no_one_up() {
    for engine in Engine::ALL {
        let server = TestServer::start(engine, &["unixgram://{dir}/g.sock"]);
        let Endpoint::UnixDatagram(path) = server.endpoint(0) else {
            unreachable!()
        };
        let dir = tempfile::tempdir().unwrap();
        // Bound, so it can be answered; it never reads, so its receive queue (10 datagrams by
        // default, net.unix.max_dgram_qlen) fills. It sends more than that, each send waiting
        // (boundedly) for room in the server's queue, so the server has more replies for it
        // than its queue takes.
        let hog = UnixDatagram::bind(dir.path().join("hog.sock")).unwrap();
        hog.set_write_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        for _ in 0..40 {
            let _ = hog.send_to(b"never read", path); // a held listener times these out
        }
        let client = UnixDatagram::bind(dir.path().join("client.sock")).unwrap();
        client.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        client.send_to(b"hello", path).unwrap();
        let mut buf = [0u8; 64];
        let n = client.recv(&mut buf).unwrap_or_else(|e| {
            panic!("{engine}: the listener is held by the peer that does not read: {e}")
        });
        assert_eq!(&buf[..n], b"HELLO", "{engine}");
    }
}

#[test]
fn the_largest_ipv6_udp_datagram_is_answered_whole() {
    for engine in Engine::ALL {
        let server = TestServer::start(engine, &["udp://[::1]:0"]);
        let request = vec![b'x'; socketkit::MAX_DATAGRAM_BYTES_V6];
        let reply = exchange(server.endpoint(0), &request);
        assert_eq!(
            reply.len(),
            socketkit::MAX_DATAGRAM_BYTES_V6,
            "{engine}: no reply, or a cut one"
        );
        assert!(reply.iter().all(|b| *b == b'X'), "{engine}");
    }
}

/// The async engine receives the datagrams already queued without waiting between them; the
/// stop must still be seen while a flood keeps the socket readable, on every engine.
#[test]
fn a_flood_that_keeps_the_socket_readable_does_not_hide_the_stop() {
    for engine in Engine::ALL {
        // 200 µs a datagram: the flood outpaces it and the socket stays readable.
        let slow = Slow(Duration::from_micros(200));
        let builder = Server::builder().engine(engine).service(slow);
        let server = TestServer::with(builder.listen("udp://127.0.0.1:0".parse().unwrap()));
        let addr = server.addr();
        let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (began, flood_began) = std::sync::mpsc::channel();
        let flood = {
            let flooding = flooding.clone();
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                socket.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
                socket.connect(addr).unwrap();
                socket.send(b"flood").unwrap();
                let mut reply = [0u8; 64];
                began.send(socket.recv(&mut reply).is_ok()).unwrap();
                let started = std::time::Instant::now();
                let mut sent = 0u64;
                while flooding.load(Ordering::SeqCst)
                    && sent < 50_000_000
                    && started.elapsed() < SAFETY_TIMEOUT * 3
                {
                    // Refused (the ICMP error of an earlier datagram) once the server is gone.
                    let _ = socket.send(b"flood");
                    sent += 1;
                }
            })
        };
        // The flood reached the loop once its first datagram is answered; it goes on.
        assert_eq!(
            flood_began.recv_timeout(SAFETY_TIMEOUT),
            Ok(true),
            "{engine}"
        );
        let (done, stopped) = std::sync::mpsc::channel();
        let stopping = std::thread::spawn(move || done.send(server.stop().is_ok()));
        let stopped = stopped.recv_timeout(SAFETY_TIMEOUT);
        flooding.store(false, Ordering::SeqCst);
        flood.join().unwrap();
        assert_eq!(
            stopped,
            Ok(true),
            "{engine}: the stop was not seen under a flood"
        );
        stopping.join().unwrap().unwrap();
    }
}

/// Echo that takes its time over each datagram (a costly service).
#[derive(Clone)]
struct Slow(Duration);

impl Service for Slow {
    type Session = EchoSession;
    fn name(&self) -> &str {
        "slow-echo"
    }
    fn session(&self, _ctx: &Context) -> EchoSession {
        EchoSession
    }
    fn message(&self, _ctx: &Context, request: &[u8], reply: &mut BytesMut) -> bool {
        std::thread::sleep(self.0);
        reply.extend_from_slice(request);
        true
    }
}

/// A UDP flood must not take the async engine's thread from its other tasks: pinned to one CPU
/// (so tokio runs one worker), the server still accepts and answers a TCP client while a
/// sender keeps its UDP socket readable. Readiness spends no tokio coop budget, so a datagram
/// loop that never finds its socket empty never yielded: the TCP probe waited for the flood's
/// end.
#[test]
fn a_udp_flood_does_not_starve_the_async_engines_other_listeners_on_one_cpu() {
    if std::process::Command::new("taskset")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("skipped: no taskset to pin the server to one CPU");
        return;
    }
    let mut command = std::process::Command::new("taskset");
    command
        .args(["-c", "0"])
        .arg(env!("CARGO_BIN_EXE_socketkit"))
        .args([
            "serve",
            "upper",
            "-e",
            "async",
            "-l",
            "tcp://127.0.0.1:0",
            "-l",
            "udp://127.0.0.1:0",
        ]);
    let mut server = crate::common::Spawned::start(command);
    let endpoints = server.listening(2);
    let tcp = endpoints
        .iter()
        .find(|e| e.to_string().starts_with("tcp://"))
        .unwrap()
        .to_string();
    let udp: SocketAddr = endpoints
        .iter()
        .find(|e| e.to_string().starts_with("udp://"))
        .unwrap()
        .to_string()
        .trim_start_matches("udp://")
        .parse()
        .unwrap();
    // The flood: until the probe is done, bounded at 20 s and 50 million datagrams.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let flooders: Vec<_> = (0..2)
        .map(|_| {
            let (done, sent) = (done.clone(), sent.clone());
            std::thread::spawn(move || {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                let started = std::time::Instant::now();
                while !done.load(Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(20)
                    && sent.load(Ordering::Relaxed) < 50_000_000
                {
                    if socket.send_to(b"flood flood flood\n", udp).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    while sent.load(Ordering::Relaxed) < 20_000 {
        std::thread::yield_now();
    }
    let started = std::time::Instant::now();
    let mut stream =
        std::net::TcpStream::connect(tcp.trim_start_matches("tcp://")).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    use std::io::{Read, Write};
    stream.write_all(b"still here\n").unwrap();
    let mut reply = [0u8; 11];
    let answered = stream.read_exact(&mut reply);
    let waited = started.elapsed();
    done.store(true, Ordering::Relaxed);
    for flooder in flooders {
        flooder.join().unwrap();
    }
    answered.unwrap_or_else(|e| {
        panic!("the TCP probe was not answered during the UDP flood ({e}, after {waited:?})")
    });
    assert_eq!(&reply, b"STILL HERE\n");
}
