//! Hardening: access lists (IPv4-mapped peers included), the inetd rule against datagram loops
//! between services, and slow peers (the per-message deadline, the write time-out).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use socketkit::codec::Framing;
use socketkit::handler::{
    AsyncStreamHandler, AsyncStreamRequest, DatagramHandler, DatagramRequest, StreamHandler,
    StreamRequest,
};
use socketkit::server::AccessList;
use socketkit::service::{Context, Service, UpperSession};
use socketkit::{Engine, Server};

use crate::common::{SAFETY_TIMEOUT, Spawned, TestServer, exchange, socketkit};

fn access(allow: &[&str], deny: &[&str]) -> AccessList {
    let mut list = AccessList::default();
    for cidr in allow {
        list.allow(cidr).unwrap();
    }
    for cidr in deny {
        list.deny(cidr).unwrap();
    }
    list
}

/// Connects from `local` (an address on loopback), sends, and returns what came back before
/// the server closed.
fn tcp_from(local: &str, server: SocketAddr, request: &[u8]) -> Vec<u8> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(server),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    socket
        .bind(&local.parse::<SocketAddr>().unwrap().into())
        .unwrap();
    match socket.connect(&server.into()) {
        Ok(()) => {}
        // A refusal is a reset, and on a busy host it can come before `connect` returns (the
        // kernel completes the handshake, the server accepts and resets, and only then is
        // this thread scheduled): nothing came back, as for a reset after the request.
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Vec::new(),
        Err(e) => panic!("cannot connect from {local}: {e}"),
    }
    let mut conn = TcpStream::from(socket);
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let _ = conn.write_all(request);
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    match conn.read_to_end(&mut reply) {
        Ok(_) => reply,
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => reply,
        Err(e) => panic!("no close from the server: {e}"),
    }
}

#[test]
fn deny_refuses_a_peer_before_a_byte_is_read_and_allow_admits_only_its_range() {
    for engine in Engine::ALL {
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .listen("tcp://127.0.0.1:0".parse().unwrap())
                .access(access(&["127.0.0.0/30"], &["127.0.0.2"])),
        );
        assert_eq!(
            tcp_from("127.0.0.1:0", server.addr(), b"ok"),
            b"OK",
            "{engine}"
        );
        assert!(
            tcp_from("127.0.0.2:0", server.addr(), b"no").is_empty(),
            "{engine}: denied"
        );
        assert!(
            tcp_from("127.0.0.9:0", server.addr(), b"no").is_empty(),
            "{engine}: not allowed"
        );
    }
}

/// A TCP connection from `local` (an address on loopback) to `server`.
fn connect_from(local: &str, server: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(server),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    socket
        .bind(&local.parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.connect(&server.into()).unwrap();
    let conn = TcpStream::from(socket);
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    conn
}

#[test]
fn a_refused_stream_peer_is_reset_not_closed_on_every_engine() {
    // A clean close looked like a server with nothing to say: `send` printed nothing, exit 0.
    for engine in Engine::ALL {
        let denied = TestServer::with(
            Server::builder()
                .engine(engine)
                .listen("tcp://127.0.0.1:0".parse().unwrap())
                .access(access(&[], &["127.0.0.2"])),
        );
        let refused_by_hook = TestServer::with(
            Server::builder()
                .engine(engine)
                .listen("tcp://127.0.0.1:0".parse().unwrap())
                .verify_request(|peer| {
                    peer.inet()
                        .is_none_or(|a| a.ip().to_string() != "127.0.0.2")
                }),
        );
        for (server, why) in [(&denied, "--deny"), (&refused_by_hook, "verify_request")] {
            let mut conn = connect_from("127.0.0.2:0", server.addr());
            let err = conn
                .read(&mut [0u8; 16])
                .expect_err(&format!("{engine} {why}: a clean close, not a reset"));
            assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{engine} {why}");
        }
        // A permitted peer is still served, and closed cleanly.
        assert_eq!(
            tcp_from("127.0.0.1:0", denied.addr(), b"ok"),
            b"OK",
            "{engine}"
        );
    }
}

#[test]
fn ipv4_mapped_peers_of_a_dual_stack_listener_match_as_ipv4() {
    let server = TestServer::with(
        Server::builder()
            .listen("tcp://[::]:0".parse().unwrap())
            .listen("udp://[::]:0".parse().unwrap())
            .access(access(&[], &["127.0.0.1/32"])),
    );
    let tcp_port = server.endpoint(0).host_port().unwrap().1;
    let tcp_v4: SocketAddr = format!("127.0.0.1:{tcp_port}").parse().unwrap();
    // Seen by the server as ::ffff:127.0.0.1, and refused as 127.0.0.1.
    assert!(tcp_from("127.0.0.1:0", tcp_v4, b"no").is_empty());
    assert_eq!(tcp_from("[::1]:0", server.addr(), b"yes"), b"YES");

    let udp_port = server.endpoint(1).host_port().unwrap().1;
    let denied = UdpSocket::bind("127.0.0.1:0").unwrap();
    denied.send_to(b"no", ("127.0.0.1", udp_port)).unwrap();
    let allowed: socketkit::Endpoint = format!("udp://[::1]:{udp_port}").parse().unwrap();
    assert_eq!(exchange(&allowed, b"yes"), b"YES"); // served after the denied one arrived
    denied
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        denied.recv(&mut [0u8; 16]).is_err(),
        "a denied datagram was answered"
    );
}

/// Sends `request` over UDP from `local` to `server` and returns the socket, to collect the
/// reply (or its absence) later.
fn udp_ask_from(local: &str, server: SocketAddr, request: &[u8]) -> UdpSocket {
    let socket = UdpSocket::bind(local).unwrap();
    socket.send_to(request, server).unwrap();
    socket
}

/// Whether a reply comes to a socket made by [`udp_ask_from`]. A reply that is expected is
/// waited for up to the safety time-out; one that is not gets 100 ms, and the caller asks the
/// refused peers first, so their datagrams were handled before the served ones were answered.
fn udp_answered(socket: &UdpSocket, expected: bool) -> bool {
    let wait = if expected {
        SAFETY_TIMEOUT
    } else {
        Duration::from_millis(100)
    };
    socket.set_read_timeout(Some(wait)).unwrap();
    socket.recv(&mut [0u8; 64]).is_ok()
}

/// The same IPv4 peers are served or refused whatever form the rule is written in (IPv4 or
/// IPv4-mapped), whatever form the listener sees them in (a plain IPv4 listener, or a
/// dual-stack `[::]` one that sees `::ffff:127.0.0.x`), over TCP and UDP, for allow and deny.
#[test]
fn access_rules_match_alike_in_ipv4_and_ipv4_mapped_form_on_every_listener_and_transport() {
    let peers = ["127.0.0.1", "127.0.0.2"];
    // (rule, which of `peers` it matches)
    let rules = [
        ("127.0.0.1", [true, false]),
        ("::ffff:127.0.0.1", [true, false]),
        ("127.0.0.0/31", [true, false]),
        ("::ffff:127.0.0.0/127", [true, false]),
        ("::ffff:127.0.0.0/104", [true, true]),
        // An IPv6 range wider than /96 that holds all of ::ffff:0:0/96 holds every IPv4 peer.
        ("::ffff:0:0/95", [true, true]),
    ];
    for (rule, matches) in rules {
        for allow in [true, false] {
            for host in ["127.0.0.1", "[::]"] {
                let list = if allow {
                    access(&[rule], &[])
                } else {
                    access(&[], &[rule])
                };
                let server = TestServer::with(
                    Server::builder()
                        .listen(format!("tcp://{host}:0").parse().unwrap())
                        .listen(format!("udp://{host}:0").parse().unwrap())
                        .access(list),
                );
                let port = |i: usize| server.endpoint(i).host_port().unwrap().1;
                let tcp: SocketAddr = ([127, 0, 0, 1], port(0)).into();
                let udp: SocketAddr = ([127, 0, 0, 1], port(1)).into();
                let verb = if allow { "allow" } else { "deny" };
                let mut asked: Vec<_> = peers.iter().zip(matches).collect();
                asked.sort_by_key(|&(_, matched)| matched == allow); // refused peers first
                let sockets: Vec<_> = asked
                    .iter()
                    .map(|(peer, _)| udp_ask_from(&format!("{peer}:0"), udp, b"ping"))
                    .collect();
                for (&(peer, matched), socket) in asked.iter().zip(&sockets).rev() {
                    let served = matched == allow;
                    let what = format!("--{verb} {rule}, listener {host}, peer {peer}");
                    let reply = tcp_from(&format!("{peer}:0"), tcp, b"ping");
                    assert_eq!(!reply.is_empty(), served, "TCP {what}");
                    assert_eq!(udp_answered(socket, served), served, "UDP {what}");
                }
            }
        }
    }
}

/// The probe, at the CLI: rules in IPv4-mapped form on a dual-stack listener.
#[test]
fn serve_applies_ipv4_mapped_rules_to_ipv4_peers_of_a_dual_stack_listener() {
    // (flag, rule, whether 127.0.0.1 is served; ::1 is the other way round)
    for (flag, rule, v4_served) in [
        ("--deny", "::ffff:127.0.0.1", false),
        ("--allow", "::ffff:127.0.0.0/104", true),
    ] {
        let mut command = socketkit();
        command.args([
            "serve",
            "-l",
            "tcp://[::]:0",
            "-l",
            "udp://[::]:0",
            flag,
            rule,
        ]);
        let mut server = Spawned::start(command);
        let endpoints = server.listening(2);
        let port = |i: usize| endpoints[i].host_port().unwrap().1;
        for (local, served) in [("127.0.0.1", v4_served), ("::1", !v4_served)] {
            let ip: std::net::IpAddr = local.parse().unwrap();
            let tcp = SocketAddr::new(ip, port(0));
            let udp = SocketAddr::new(ip, port(1));
            let what = format!("{flag} {rule}, peer {local}");
            let reply = tcp_from(&SocketAddr::new(ip, 0).to_string(), tcp, b"ping");
            assert_eq!(!reply.is_empty(), served, "TCP {what}");
            let socket = udp_ask_from(&SocketAddr::new(ip, 0).to_string(), udp, b"ping");
            assert_eq!(udp_answered(&socket, served), served, "UDP {what}");
        }
        server.signal(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(server.wait_exit(), Some(0));
    }
}

#[test]
fn no_datagram_from_a_service_port_is_answered() {
    // Port 7 (echo) needs privileges; where they are missing there is nothing to test.
    let Ok(from_echo_port) = UdpSocket::bind("127.0.0.1:7") else {
        eprintln!("SKIP no_datagram_from_a_service_port_is_answered: cannot bind port 7");
        return;
    };
    for engine in [Engine::Async, Engine::Sequential] {
        let server = TestServer::start(engine, &["udp://127.0.0.1:0"]);
        from_echo_port.send_to(b"loop?", server.addr()).unwrap();
        assert_eq!(
            exchange(server.endpoint(0), b"normal"),
            b"NORMAL",
            "{engine}"
        );
        from_echo_port
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(
            from_echo_port.recv(&mut [0u8; 16]).is_err(),
            "{engine}: answered port 7"
        );
    }
}

#[test]
fn serve_takes_allow_and_deny_and_refuses_bad_ranges() {
    let output = socketkit()
        .args(["serve", "--allow", "10.0.0.0/33", "-l", "tcp://127.0.0.1:0"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("10.0.0.0/33") && stderr.contains("CIDR"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Slow peers: the per-message deadline and the write time-out

/// Whether the server has closed `conn`: a read that does not wait sees EOF or a reset.
fn closed_by_server(conn: &TcpStream) -> bool {
    conn.set_nonblocking(true).unwrap();
    let closed = match (&*conn).read(&mut [0u8; 256]) {
        Ok(0) => true,
        Ok(_) => false, // a reply: still open
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    conn.set_nonblocking(false).unwrap();
    closed
}

/// Sends one byte of a line that never ends every `pace` (a slowloris), until the server
/// closes the connection; returns how long after the first byte that came, or `None` if it
/// never did within `bytes` bytes.
fn dribble(conn: &mut TcpStream, pace: Duration, bytes: usize) -> Option<Duration> {
    let began = Instant::now();
    for _ in 0..bytes {
        if conn.write_all(b"x").is_err() || closed_by_server(conn) {
            return Some(began.elapsed());
        }
        std::thread::sleep(pace); // the peer's pace, not a synchronisation
    }
    None
}

#[test]
fn a_peer_that_dribbles_a_message_is_closed_at_the_message_deadline_on_every_engine() {
    let deadline = Duration::from_millis(400);
    let pace = Duration::from_millis(40);
    for engine in Engine::ALL {
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .framing(Framing::Line)
                .idle_timeout(3 * SAFETY_TIMEOUT) // never the reason here
                .message_timeout(deadline)
                .listen("tcp://127.0.0.1:0".parse().unwrap()),
        );
        // Whole messages at the same pace for longer than the deadline: served throughout.
        let mut steady = TcpStream::connect(server.addr()).unwrap();
        steady.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        for _ in 0..2 * (deadline.as_millis() / pace.as_millis()) {
            steady.write_all(b"ok\n").unwrap();
            let mut reply = [0u8; 3];
            steady.read_exact(&mut reply).unwrap();
            assert_eq!(&reply, b"OK\n", "{engine}");
            std::thread::sleep(pace);
        }
        drop(steady);

        let mut slow = TcpStream::connect(server.addr()).unwrap();
        // The sequential engine serves one connection at a time: the deadline is what frees
        // the listener for the client queued behind the dribbler.
        let queued = (engine == Engine::Sequential).then(|| {
            let endpoint = server.endpoint(0).clone();
            std::thread::spawn(move || exchange(&endpoint, b"next\n"))
        });
        let closed_after = dribble(&mut slow, pace, 250)
            .unwrap_or_else(|| panic!("{engine}: a dribbling peer held its connection"));
        assert!(
            closed_after >= deadline && closed_after < deadline * 10,
            "{engine}: closed after {closed_after:?}, the deadline is {deadline:?}"
        );
        if let Some(queued) = queued {
            assert_eq!(queued.join().unwrap(), b"NEXT\n");
        }
    }
}

/// Reads what the server sent until it closes; `None` if more than `cap` bytes came (the
/// server was still producing).
fn read_until_closed(conn: &mut TcpStream, cap: usize) -> Option<usize> {
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while total <= cap {
        match conn.read(&mut buf) {
            Ok(0) => return Some(total),
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Some(total),
            Err(e) => panic!("no close from the server: {e}"),
        }
    }
    None
}

const TCP_ESTABLISHED: u8 = 1;

/// The TCP state of the server's end of a loopback IPv4 connection, from /proc/net/tcp
/// (`None` once the socket is gone).
fn server_side_state(server: SocketAddr, client: SocketAddr) -> Option<u8> {
    let hex = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => unreachable!("IPv4 only"),
    };
    let (local, remote) = (hex(server), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&local.as_str()) && fields.get(2) == Some(&remote.as_str()))
            .then(|| u8::from_str_radix(fields[3], 16).unwrap())
    })
}

/// Writes forever (until the write fails): a blocking handler.
struct Flood;

impl StreamHandler for Flood {
    fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
        let chunk = vec![b'z'; 64 * 1024];
        loop {
            request.writer().write_all(&chunk)?;
        }
    }
}

/// Writes forever (until the write fails): an async handler.
struct AsyncFlood;

impl AsyncStreamHandler for AsyncFlood {
    async fn handle(&self, request: &mut AsyncStreamRequest) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let chunk = vec![b'z'; 64 * 1024];
        loop {
            request.writer().write_all(&chunk).await?;
        }
    }
}

#[test]
fn a_peer_that_stops_reading_is_closed_at_the_write_timeout() {
    let limit = Duration::from_millis(300);
    let chargen = || socketkit::service::by_name("chargen").unwrap();
    let servers = Engine::ALL
        .into_iter()
        .map(|engine| {
            (
                format!("chargen on {engine}"),
                engine,
                Server::builder().engine(engine).service(chargen()),
            )
        })
        .chain([
            (
                "a blocking handler".into(),
                Engine::Threaded,
                Server::builder()
                    .engine(Engine::Threaded)
                    .stream_handler(Flood),
            ),
            (
                "an async handler".into(),
                Engine::Async,
                Server::builder().async_handler(AsyncFlood),
            ),
        ]);
    for (what, engine, builder) in servers {
        let server = TestServer::with(
            builder
                .idle_timeout(3 * SAFETY_TIMEOUT) // never the reason here
                .write_timeout(limit)
                .listen("tcp://127.0.0.1:0".parse().unwrap()),
        );
        let mut stalled = TcpStream::connect(server.addr()).unwrap();
        let queued = (engine == Engine::Sequential).then(|| {
            let endpoint = server.endpoint(0).clone();
            std::thread::spawn(move || {
                let mut conn = TcpStream::connect(endpoint.socket_addrs().unwrap()[0]).unwrap();
                read_until_closed(&mut conn, 0)
            })
        });
        // The peer reads nothing until the server has given up on it: its end of the
        // connection leaves ESTABLISHED (no event announces that; polled, with a deadline).
        let client = stalled.local_addr().unwrap();
        let deadline = Instant::now() + 3 * SAFETY_TIMEOUT;
        while server_side_state(server.addr(), client) == Some(TCP_ESTABLISHED) {
            assert!(
                Instant::now() < deadline,
                "{what}: still sending to a peer that stopped reading"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // What the buffers held comes out, then the close: a producer still writing would
        // never stop.
        assert!(
            read_until_closed(&mut stalled, 256 * 1024 * 1024).is_some(),
            "{what}: the server kept writing to a peer that stopped reading"
        );
        if let Some(queued) = queued {
            // Served (chargen then streams to it) once the stalled peer was cut off.
            assert_eq!(queued.join().unwrap(), None, "{what}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Datagrams

/// Answers a datagram with its length: a cut datagram would show in the answer.
struct Length;

impl Service for Length {
    type Session = UpperSession;
    fn name(&self) -> &str {
        "length"
    }
    fn session(&self, _ctx: &Context) -> UpperSession {
        UpperSession::default()
    }
    fn message(&self, _ctx: &Context, request: &[u8], reply: &mut BytesMut) -> bool {
        reply.extend_from_slice(request.len().to_string().as_bytes());
        true
    }
}

/// Answers a datagram with its length, as a thread engine's datagram handler.
struct LengthHandler;

impl DatagramHandler for LengthHandler {
    fn handle(&self, request: &mut DatagramRequest<'_>) -> io::Result<()> {
        let len = request.data().len().to_string();
        request.reply(len.as_bytes())
    }
}

#[test]
fn an_unbound_unix_sender_costs_its_datagram_only() {
    for engine in Engine::ALL {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upper.sock");
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .listen(socketkit::Endpoint::UnixDatagram(path.clone())),
        );
        // No address to answer to: dropped (a debug log says why), and the listener lives on.
        let unbound = std::os::unix::net::UnixDatagram::unbound().unwrap();
        unbound.send_to(b"from nowhere", &path).unwrap();
        assert_eq!(
            exchange(server.endpoint(0), b"still here"),
            b"STILL HERE",
            "{engine}"
        );
    }
}

#[test]
fn a_truncated_datagram_is_dropped_never_answered() {
    let servers = Engine::ALL
        .into_iter()
        .map(|engine| {
            (
                format!("a service on {engine}"),
                Server::builder().engine(engine).service(Length),
            )
        })
        .chain([(
            "a datagram handler".to_string(),
            Server::builder()
                .engine(Engine::Pool)
                .datagram_handler(LengthHandler),
        )]);
    for (what, builder) in servers {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("length.sock");
        let server =
            TestServer::with(builder.listen(socketkit::Endpoint::UnixDatagram(path.clone())));
        let client =
            std::os::unix::net::UnixDatagram::bind(dir.path().join("client.sock")).unwrap();
        client.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        // A Unix datagram may be larger than any UDP one: 100,000 bytes do not fit the
        // server's 65,536-byte buffer.
        client.send_to(&vec![b'a'; 100_000], &path).unwrap();
        client.send_to(&vec![b'b'; 65_535], &path).unwrap(); // fits
        let mut reply = [0u8; 64];
        let n = client.recv(&mut reply).unwrap();
        assert_eq!(&reply[..n], b"65535", "{what}");
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(
            client.recv(&mut reply).is_err(),
            "{what}: the cut datagram was answered"
        );
        drop(server);
    }
}

/// Floods `server` from 127.0.0.1 for `span` (and at most a few million datagrams) while a
/// well-behaved client on 127.0.0.2 sends a request every 100 ms, retrying each up to `tries`
/// times. Returns the tries each request needed, and the replies the flooder got once the
/// client had been heard.
fn flood(server: SocketAddr, span: Duration, tries: u32) -> (Vec<u32>, usize) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let flooder = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    flooder
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let heard = Arc::new(AtomicBool::new(false)); // the client has had an answer
    let counted = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let (flooder, done, sent) = (flooder.clone(), done.clone(), sent.clone());
        std::thread::spawn(move || {
            for _ in 0..5_000_000 {
                if done.load(Ordering::Relaxed) {
                    break;
                }
                let _ = flooder.send_to(b"flood", server);
                sent.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let counter = {
        let (flooder, done, heard, counted) = (
            flooder.clone(),
            done.clone(),
            heard.clone(),
            counted.clone(),
        );
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !done.load(Ordering::Relaxed) {
                if flooder.recv(&mut buf).is_ok() && heard.load(Ordering::Relaxed) {
                    counted.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    // The flood is under way before the client speaks.
    let started = Instant::now();
    while sent.load(Ordering::Relaxed) < 10_000 && started.elapsed() < SAFETY_TIMEOUT {
        std::thread::yield_now();
    }
    let client = UdpSocket::bind("127.0.0.2:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let began = Instant::now();
    let mut needed = Vec::new();
    while began.elapsed() < span {
        let mut try_count = 0;
        let answered = loop {
            try_count += 1;
            client.send_to(b"hello", server).unwrap();
            let mut buf = [0u8; 64];
            match client.recv(&mut buf) {
                Ok(n) => break Some(buf[..n].to_vec()),
                Err(_) if try_count < tries => continue,
                Err(_) => break None,
            }
        };
        let Some(reply) = answered else {
            needed.push(u32::MAX);
            break;
        };
        assert_eq!(reply, b"HELLO");
        needed.push(try_count);
        heard.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(100)); // the client's own pace
    }
    done.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    counter.join().unwrap();
    (needed, counted.load(Ordering::Relaxed))
}

#[test]
fn one_flooding_source_cannot_take_a_datagram_listener_from_the_others() {
    let rate = 200;
    let span = Duration::from_millis(1500);
    for engine in Engine::ALL {
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .datagram_rate(rate)
                .listen("udp://127.0.0.1:0".parse().unwrap()),
        );
        let (needed, flooder_got) = flood(server.addr(), span, 50);
        eprintln!("{engine}: tries per request {needed:?}; the flooder got {flooder_got} replies");
        assert!(
            needed.iter().all(|&n| n <= 50),
            "{engine}: the client went unanswered: {needed:?}"
        );
        // Its burst, its rate over the span, and what sat in its buffers: far below what an
        // unlimited server sends it.
        let bound = rate as usize * (1 + span.as_millis() as usize / 1000) + 1000;
        assert!(
            flooder_got <= bound,
            "{engine}: the flooder got {flooder_got} replies (bound {bound})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Limits spent before resources

/// A process's open descriptors and threads, from /proc.
fn fds_and_threads(pid: u32) -> (usize, usize) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap();
    (fds, threads)
}

/// The descriptor and thread counts once they have stopped changing (a closed connection's
/// descriptor and thread go away asynchronously, with no event to wait for): polled, with a
/// deadline.
fn settled(pid: u32) -> (usize, usize) {
    let deadline = Instant::now() + SAFETY_TIMEOUT;
    let mut last = fds_and_threads(pid);
    let mut unchanged = 0;
    while unchanged < 5 {
        assert!(
            Instant::now() < deadline,
            "the counts never settled: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
        let now = fds_and_threads(pid);
        if now == last {
            unchanged += 1;
        } else {
            (last, unchanged) = (now, 0);
        }
    }
    last
}

#[test]
fn a_connection_flood_costs_no_more_descriptors_or_threads_than_the_limit() {
    let limit = 4;
    let flood = 100; // under the backlog of 128: all of them complete their handshake
    for engine in Engine::ALL {
        let mut server = Spawned::start({
            let mut command = socketkit();
            command.args(["serve", "-e", engine.name(), "-m", &limit.to_string()]);
            command.args(["--workers", "2", "-l", "tcp://127.0.0.1:0"]);
            command
        });
        let endpoint = server.listening(1).remove(0);
        let addr = endpoint.socket_addrs().unwrap()[0];
        let pid = server.child.id();
        // Serving has started (an async runtime opens its descriptors after the listening
        // line) and the probe's connection (and thread) are gone.
        assert_eq!(exchange(&endpoint, b"probe"), b"PROBE");
        let (fds_before, threads_before) = settled(pid);
        let mut conns: Vec<TcpStream> = Vec::new();
        for _ in 0..flood {
            let mut conn = TcpStream::connect(addr).unwrap();
            conn.write_all(b"x").unwrap(); // then never a byte more, never a close
            conns.push(conn);
        }
        // The first are served (their "X" comes back); the rest wait in the queue.
        // Served at once: one on the sequential engine, one per worker on the pool.
        let served = match engine {
            Engine::Sequential => 1,
            Engine::Pool => 2,
            _ => limit,
        };
        for (i, conn) in conns[..served].iter_mut().enumerate() {
            conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
            let mut reply = [0u8; 1];
            conn.read_exact(&mut reply)
                .unwrap_or_else(|e| panic!("{engine}: connection {i} not served: {e}"));
        }
        let (fds, threads) = fds_and_threads(pid);
        assert!(
            fds <= fds_before + limit,
            "{engine}: {fds} descriptors, {fds_before} before a flood of {flood} with a limit of {limit}"
        );
        // The threaded engine starts a thread per connection served, no more; the others none.
        assert!(
            threads <= threads_before + limit,
            "{engine}: {threads} threads, {threads_before} before a flood of {flood}"
        );
        // One leaves: the next in the queue is served.
        drop(conns.remove(0));
        let next = &mut conns[served - 1];
        next.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let mut reply = [0u8; 1];
        next.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"X", "{engine}");
    }
}
