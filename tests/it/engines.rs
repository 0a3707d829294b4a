//! Every engine on every transport, address family and shutdown path, in process.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use bytes::BytesMut;
use socketkit::codec::Framing;
use socketkit::service::{AnyService, Context, Next, Service, StreamSession};
use socketkit::{Endpoint, Engine, ErrorKind, Server};

use crate::common::{SAFETY_TIMEOUT, TestServer, exchange};

const ALL_TRANSPORTS: [&str; 4] = [
    "tcp://127.0.0.1:0",
    "udp://127.0.0.1:0",
    "unix://{dir}/stream.sock",
    "unixgram://{dir}/dgram.sock",
];

#[test]
fn every_engine_uppercases_on_every_transport() {
    for engine in Engine::ALL {
        let server = TestServer::start(engine, &ALL_TRANSPORTS);
        for index in 0..ALL_TRANSPORTS.len() {
            let endpoint = server.endpoint(index);
            let reply = exchange(endpoint, "hello, straße".as_bytes());
            assert_eq!(
                String::from_utf8(reply).unwrap(),
                "HELLO, STRASSE",
                "{engine} on {endpoint}"
            );
        }
        server.stop().unwrap();
    }
}

#[test]
fn every_engine_serves_ipv6_loopback() {
    for engine in Engine::ALL {
        let server = TestServer::start(engine, &["tcp://[::1]:0", "udp://[::1]:0"]);
        for index in 0..2 {
            assert_eq!(exchange(server.endpoint(index), b"v6"), b"V6", "{engine}");
        }
    }
}

#[test]
fn a_dual_stack_listener_answers_ipv4_and_ipv6() {
    for engine in Engine::ALL {
        let server = TestServer::start(engine, &["tcp://[::]:0", "udp://[::]:0"]);
        for index in 0..2 {
            let port = server.endpoint(index).host_port().unwrap().1;
            for host in ["127.0.0.1", "[::1]"] {
                let scheme = server.endpoint(index).transport();
                let endpoint: Endpoint = format!("{scheme}://{host}:{port}").parse().unwrap();
                assert_eq!(exchange(&endpoint, b"both"), b"BOTH", "{engine} {endpoint}");
            }
        }
    }
}

#[test]
fn local_endpoints_report_the_real_port() {
    let server = Server::builder()
        .listen("tcp://127.0.0.1:0".parse().unwrap())
        .bind()
        .unwrap();
    let (_, port) = server.local_endpoints()[0].host_port().unwrap();
    assert_ne!(port, 0);
    assert_eq!(server.local_addr().unwrap().port(), port);
}

#[test]
fn a_reply_is_streamed_back_before_the_request_ends() {
    for engine in Engine::ALL {
        let server = TestServer::start(engine, &["tcp://127.0.0.1:0"]);
        let mut conn = TcpStream::connect(server.addr()).unwrap();
        conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        for word in ["one ", "two ", "three"] {
            conn.write_all(word.as_bytes()).unwrap();
            let mut reply = vec![0u8; word.len()];
            conn.read_exact(&mut reply).unwrap();
            assert_eq!(reply, word.to_uppercase().as_bytes(), "{engine}");
        }
        conn.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
}

#[test]
fn the_async_engine_serves_clients_concurrently() {
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0"]);
    let mut first = TcpStream::connect(server.addr()).unwrap();
    first.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    first.write_all(b"first ").unwrap();
    let mut reply = [0u8; 6];
    first.read_exact(&mut reply).unwrap(); // the first connection is in flight
    // A second client is served in full while the first stays open.
    assert_eq!(exchange(server.endpoint(0), b"second"), b"SECOND");
    first.shutdown(Shutdown::Write).unwrap();
}

#[test]
fn the_sequential_engine_serves_the_next_client_when_the_first_is_done() {
    let server = TestServer::start(Engine::Sequential, &["tcp://127.0.0.1:0"]);
    let mut first = TcpStream::connect(server.addr()).unwrap();
    first.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    first.write_all(b"a").unwrap();
    let mut reply = [0u8; 1];
    first.read_exact(&mut reply).unwrap(); // the one connection being served

    // The second client is accepted by the kernel (listen queue) but not served yet.
    let mut second = TcpStream::connect(server.addr()).unwrap();
    second.write_all(b"b").unwrap();
    second.shutdown(Shutdown::Write).unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 8];
    let early = second.read(&mut buf);
    assert!(
        early.as_ref().is_err_and(|e| matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )),
        "the second client was served while the first was open: {early:?}"
    );

    first.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).unwrap();
    second.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let mut reply = Vec::new();
    second.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"B");
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    for engine in Engine::ALL {
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .idle_timeout(Duration::from_millis(100))
                .listen("tcp://127.0.0.1:0".parse().unwrap()),
        );
        let mut conn = TcpStream::connect(server.addr()).unwrap();
        conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let mut buf = [0u8; 8];
        // The server closes: EOF (or a reset), never our safety time-out.
        match conn.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0, "{engine}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{engine}"),
        }
    }
}

#[test]
fn a_datagram_reply_over_the_limit_is_not_sent_and_service_goes_on() {
    for engine in Engine::ALL {
        let server = TestServer::start(engine, &["udp://127.0.0.1:0"]);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        socket.connect(server.addr()).unwrap();
        // 'ΐ' is 2 bytes and upper-cases to 6: 40,000 bytes in, 120,000 out.
        socket.send("ΐ".repeat(20_000).as_bytes()).unwrap();
        socket.send(b"after").unwrap();
        let mut buf = vec![0u8; 65_536];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            b"AFTER",
            "{engine}: the oversized reply was sent"
        );
    }
}

#[test]
fn the_largest_udp_datagram_is_answered_whole() {
    for engine in Engine::ALL {
        let server = TestServer::start(engine, &["udp://127.0.0.1:0"]);
        let request = vec![b'x'; socketkit::MAX_DATAGRAM_BYTES];
        let reply = exchange(server.endpoint(0), &request);
        assert_eq!(reply, vec![b'X'; socketkit::MAX_DATAGRAM_BYTES], "{engine}");
    }
}

#[test]
fn shutdown_before_serving_returns_at_once_and_repeats_harmlessly() {
    for engine in Engine::ALL {
        let server = Server::builder()
            .engine(engine)
            .listen("tcp://127.0.0.1:0".parse().unwrap())
            .listen("udp://127.0.0.1:0".parse().unwrap())
            .bind()
            .unwrap();
        let stop = server.shutdown_handle();
        stop.shutdown();
        stop.shutdown();
        assert!(stop.is_shutdown());
        server.serve_forever().unwrap();
        stop.shutdown();
    }
}

/// Over line framing, answers one line and sends half of the next: the connection is then in a
/// message, which shutdown lets finish.
fn begin_a_message(conn: &mut TcpStream) {
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    conn.write_all(b"one\nin ").unwrap();
    let mut reply = [0u8; 4];
    conn.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ONE\n");
}

fn line_server(engine: Engine, grace: Duration) -> TestServer {
    TestServer::with(
        Server::builder()
            .engine(engine)
            .grace(grace)
            .framing(Framing::Line)
            .listen("tcp://127.0.0.1:0".parse().unwrap()),
    )
}

#[test]
fn shutdown_from_another_thread_drains_a_connection_in_flight() {
    for engine in Engine::ALL {
        let server = line_server(engine, SAFETY_TIMEOUT);
        let addr = server.addr();
        let mut conn = TcpStream::connect(addr).unwrap();
        begin_a_message(&mut conn);

        let stop = server.shutdown_handle();
        let stopper = std::thread::spawn(move || stop.shutdown());
        stopper.join().unwrap();

        // The message in flight still completes; then the connection is idle, and closed.
        conn.write_all(b"flight\n").unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"IN FLIGHT\n", "{engine}");
        server.stop().unwrap();
        assert!(
            TcpStream::connect(addr).is_err(),
            "{engine}: still accepting"
        );
    }
}

#[test]
fn shutdown_closes_a_connection_between_messages_at_once() {
    for engine in Engine::ALL {
        // A grace period longer than the client waits: only the idle rule can close it in time.
        let server = line_server(engine, 3 * SAFETY_TIMEOUT);
        let mut conn = TcpStream::connect(server.addr()).unwrap();
        conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        conn.write_all(b"one\n").unwrap();
        let mut reply = [0u8; 4];
        conn.read_exact(&mut reply).unwrap();
        server.shutdown_handle().shutdown();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("{engine}: the idle connection was not closed: {e}"));
        assert_eq!(rest, b"", "{engine}");
        server.stop().unwrap();
    }
}

#[test]
fn a_connection_that_has_not_spoken_yet_is_served_during_shutdown() {
    for engine in Engine::ALL {
        let (accepted, was_accepted) = std::sync::mpsc::channel();
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .grace(SAFETY_TIMEOUT)
                .framing(Framing::Line)
                .verify_request(move |_| accepted.send(()).is_ok())
                .listen("tcp://127.0.0.1:0".parse().unwrap()),
        );
        let mut conn = TcpStream::connect(server.addr()).unwrap();
        conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        // Accepted (verify_request has seen it) before the shutdown begins...
        was_accepted.recv_timeout(SAFETY_TIMEOUT).unwrap();
        server.shutdown_handle().shutdown();
        // ...its first request, sent after the shutdown began, is still answered.
        conn.write_all(b"late\n").unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"LATE\n", "{engine}");
        server.stop().unwrap();
    }
}

/// Counts the bytes of a stream and answers the count at EOF: until then it owes a reply, and
/// (by the trait's default) does not say it is between messages. Each read is reported on the
/// channel, so a test knows the server has seen the bytes.
struct Count(std::sync::mpsc::Sender<()>);

struct CountSession {
    count: usize,
    read: std::sync::mpsc::Sender<()>,
}

impl StreamSession for CountSession {
    fn on_data(&mut self, input: &[u8], _out: &mut BytesMut) -> Next {
        self.count += input.len();
        let _ = self.read.send(());
        Next::Read
    }
    fn on_eof(&mut self, out: &mut BytesMut) -> Next {
        out.extend_from_slice(self.count.to_string().as_bytes());
        Next::Close
    }
}

impl Service for Count {
    type Session = CountSession;
    fn name(&self) -> &str {
        "count"
    }
    fn session(&self, _ctx: &Context) -> CountSession {
        CountSession {
            count: 0,
            read: self.0.clone(),
        }
    }
    fn message(&self, _ctx: &Context, request: &[u8], reply: &mut BytesMut) -> bool {
        reply.extend_from_slice(request.len().to_string().as_bytes());
        true
    }
}

#[test]
fn shutdown_lets_a_session_that_owes_a_reply_finish() {
    for engine in Engine::ALL {
        let (read, was_read) = std::sync::mpsc::channel();
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .grace(SAFETY_TIMEOUT)
                .service(Count(read))
                .listen("tcp://127.0.0.1:0".parse().unwrap()),
        );
        let mut conn = TcpStream::connect(server.addr()).unwrap();
        conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        conn.write_all(b"12345").unwrap();
        was_read.recv_timeout(SAFETY_TIMEOUT).unwrap(); // it has spoken, and owes a count
        server.shutdown_handle().shutdown();
        conn.write_all(b"678").unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "8", "{engine}");
        server.stop().unwrap();
    }
}

/// Starts `service` with a 200 ms grace period, lets `peer` run on a connection until it
/// reports that traffic flows, then stops the server: it must stop, and `peer` must end.
fn grace_ends_a_busy_connection(
    service: AnyService,
    peer: fn(TcpStream, std::sync::mpsc::Sender<()>),
) {
    for engine in Engine::ALL {
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .grace(Duration::from_millis(200))
                .service(service.clone())
                .listen("tcp://127.0.0.1:0".parse().unwrap()),
        );
        let conn = TcpStream::connect(server.addr()).unwrap();
        conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        conn.set_write_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let (flowing, is_flowing) = std::sync::mpsc::channel();
        let peer = std::thread::spawn(move || peer(conn, flowing));
        is_flowing.recv_timeout(SAFETY_TIMEOUT).unwrap();
        let (stopped, has_stopped) = std::sync::mpsc::channel();
        std::thread::spawn(move || stopped.send(server.stop().is_ok()));
        assert_eq!(
            has_stopped.recv_timeout(SAFETY_TIMEOUT),
            Ok(true),
            "{} on {engine}: the server did not stop at the end of the grace period",
            service.name()
        );
        peer.join().unwrap(); // the connection was closed
    }
}

#[test]
fn the_grace_period_ends_a_session_that_only_writes_to_a_fast_reader() {
    // chargen never waits for the reader, and never reads.
    let chargen = socketkit::service::by_name("chargen").unwrap();
    grace_ends_a_busy_connection(chargen, |mut conn, flowing| {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        while let Ok(n @ 1..) = conn.read(&mut buf) {
            total += n;
            if total > 1 << 20 {
                let _ = flowing.send(());
            }
        }
    });
}

/// Discards what it reads, slowly (a millisecond a read), so its peer can keep more always on
/// the way; owes nothing, so it is between messages after every read.
struct SlowDiscard;

struct SlowDiscardSession;

impl StreamSession for SlowDiscardSession {
    fn on_data(&mut self, _input: &[u8], _out: &mut BytesMut) -> Next {
        std::thread::sleep(Duration::from_millis(1)); // the service's own pace
        Next::Read
    }
    fn between_messages(&self) -> bool {
        true
    }
}

impl Service for SlowDiscard {
    type Session = SlowDiscardSession;
    fn name(&self) -> &str {
        "slow discard"
    }
    fn session(&self, _ctx: &Context) -> SlowDiscardSession {
        SlowDiscardSession
    }
    fn message(&self, _ctx: &Context, _request: &[u8], _reply: &mut BytesMut) -> bool {
        false
    }
}

#[test]
fn the_grace_period_ends_a_session_whose_peer_never_pauses() {
    // Idle after every read, but with more always waiting: shutdown finds no pause to close in.
    grace_ends_a_busy_connection(AnyService::new(SlowDiscard), |mut conn, flowing| {
        let chunk = vec![b'd'; 64 * 1024];
        let mut total = 0usize;
        while conn.write_all(&chunk).is_ok() {
            total += chunk.len();
            if total > 1 << 20 {
                let _ = flowing.send(());
            }
        }
    });
}

#[test]
fn the_grace_period_ends_connections_that_do_not_finish() {
    for engine in Engine::ALL {
        let server = line_server(engine, Duration::from_millis(100));
        let mut conn = TcpStream::connect(server.addr()).unwrap();
        begin_a_message(&mut conn);
        server.stop().unwrap(); // returns once the grace period has closed the connection
        let mut buf = [0u8; 1];
        assert!(matches!(conn.read(&mut buf), Ok(0) | Err(_)), "{engine}");
    }
}

#[test]
fn binding_an_address_in_use_is_a_bind_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = Endpoint::tcp(taken.local_addr().unwrap());
    let err = Server::builder().listen(endpoint).bind().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CannotBind);
    assert_eq!(err.kind().exit_code(), 7);
}

#[test]
fn a_server_needs_an_endpoint() {
    let err = Server::builder().bind().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Usage);
}

/// What now stands at a path: (device, inode), for "is it still the same file".
fn identity(path: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.dev(), meta.ino())
}

/// On the way out a server removes its socket file only while the path still names the socket
/// it made: another server's socket bound there since, or a regular file put there, is kept.
#[test]
fn every_engine_keeps_what_replaced_its_socket_file() {
    use std::os::unix::net::{UnixDatagram, UnixListener};
    for engine in Engine::ALL {
        for scheme in ["unix", "unixgram"] {
            // The directory outlives the servers (TestServer::start's would not).
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.sock");
            let listen = format!("{scheme}://{}", path.display());
            let start = || {
                TestServer::with(
                    Server::builder()
                        .engine(engine)
                        .listen(listen.parse().unwrap()),
                )
            };
            // Another server's socket, of the same kind, re-bound at the path.
            let server = start();
            let endpoint = server.endpoint(0).clone();
            assert_eq!(exchange(&endpoint, b"mine"), b"MINE");
            std::fs::remove_file(&path).unwrap();
            let _other: Box<dyn std::any::Any> = match endpoint {
                Endpoint::Unix(_) => Box::new(UnixListener::bind(&path).unwrap()),
                _ => Box::new(UnixDatagram::bind(&path).unwrap()),
            };
            let theirs = identity(&path);
            server.stop().unwrap();
            assert!(
                path.exists(),
                "{engine} {listen}: another server's socket removed"
            );
            assert_eq!(identity(&path), theirs, "{engine} {listen}");

            // A regular file put at the path while it served.
            std::fs::remove_file(&path).unwrap();
            let server = start();
            std::fs::remove_file(&path).unwrap();
            std::fs::write(&path, b"precious").unwrap();
            server.stop().unwrap();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                b"precious",
                "{engine} {listen}: a regular file removed"
            );
        }
    }
}

#[test]
fn a_stale_unix_socket_file_is_replaced_but_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let endpoint = Endpoint::Unix(path.clone());
    // A socket file nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let live = TestServer::with(Server::builder().listen(endpoint.clone()));
    assert_eq!(exchange(&endpoint, b"ok"), b"OK");
    // While it serves, a second server must not steal the path.
    let err = Server::builder()
        .listen(endpoint.clone())
        .bind()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CannotBind);
    live.stop().unwrap();
    assert!(!path.exists(), "the socket file is removed after serving");
}

/// The text of `endpoint` with its port (from `port_of`) in place of `{port}`.
fn on_port(text: &str, port_of: &Endpoint) -> Endpoint {
    let port = port_of.host_port().unwrap().1;
    text.replace("{port}", &port.to_string()).parse().unwrap()
}

#[test]
fn a_second_server_on_a_live_udp_or_tcp_address_is_a_bind_error() {
    // (first server, second server): SO_REUSEADDR on a UDP socket would let the second bind
    // the same port and take the first one's datagrams.
    let cases = [
        ("udp://127.0.0.1:0", "udp://127.0.0.1:{port}"),
        ("udp://[::1]:0", "udp://[::1]:{port}"),
        ("udp://127.0.0.1:0", "udp://[::]:{port}"), // dual stack covers 127.0.0.1 too
        ("udp://[::]:0", "udp://127.0.0.1:{port}"),
        ("tcp://127.0.0.1:0", "tcp://127.0.0.1:{port}"),
        ("tcp://[::]:0", "tcp://127.0.0.1:{port}"),
    ];
    for (first, second) in cases {
        let live = TestServer::start(Engine::Async, &[first]);
        let taken = on_port(second, live.endpoint(0));
        let err = Server::builder()
            .listen(taken.clone())
            .bind()
            .expect_err(&format!("{taken} was bound while {first} served it"));
        assert_eq!(err.kind(), ErrorKind::CannotBind, "{taken}: {err}");
        // Reached on loopback: replies from `[::]` come from `::1`.
        let reach = match first.strip_suffix("[::]:0") {
            Some(scheme) => on_port(&format!("{scheme}[::1]:{{port}}"), live.endpoint(0)),
            None => live.endpoint(0).clone(),
        };
        assert_eq!(exchange(&reach, b"still"), b"STILL", "{first}");
    }
}

#[test]
fn a_second_server_on_a_live_unix_path_is_a_bind_error_and_leaves_the_first_serving() {
    for (engine, text) in [
        (Engine::Async, "unix://{dir}/s.sock"),
        (Engine::Sequential, "unixgram://{dir}/d.sock"),
    ] {
        let live = TestServer::start(engine, &[text]);
        let endpoint = live.endpoint(0).clone();
        let err = Server::builder()
            .listen(endpoint.clone())
            .bind()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CannotBind, "{endpoint}: {err}");
        assert_eq!(exchange(&endpoint, b"still"), b"STILL", "{endpoint}");
    }
}

#[test]
fn a_live_unix_listener_with_a_full_queue_is_not_taken_over_and_binding_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.sock");
    // A server that accepts nothing, with a queue of one: the second connect would wait.
    let busy = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    busy.bind(&socket2::SockAddr::unix(&path).unwrap()).unwrap();
    busy.listen(0).unwrap();
    let _queued: Vec<_> = (0..2)
        .filter_map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
            s.set_nonblocking(true).unwrap();
            s.connect(&socket2::SockAddr::unix(&path).unwrap())
                .ok()
                .map(|()| s)
        })
        .collect();
    let endpoint = Endpoint::Unix(path.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Server::builder().listen(endpoint).bind().map(drop));
    });
    let bound = rx
        .recv_timeout(SAFETY_TIMEOUT)
        .expect("binding hung on a live server's full queue");
    assert_eq!(bound.unwrap_err().kind(), ErrorKind::CannotBind);
    assert!(path.exists(), "the live server's socket file was removed");
}
