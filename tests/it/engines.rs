//! Every engine on every transport, address family and shutdown path, in process.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

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

#[test]
fn shutdown_from_another_thread_drains_a_connection_in_flight() {
    for engine in Engine::ALL {
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .grace(SAFETY_TIMEOUT)
                .listen("tcp://127.0.0.1:0".parse().unwrap()),
        );
        let addr = server.addr();
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        conn.write_all(b"in ").unwrap();
        let mut reply = [0u8; 3];
        conn.read_exact(&mut reply).unwrap();

        let stop = server.shutdown_handle();
        let stopper = std::thread::spawn(move || stop.shutdown());
        stopper.join().unwrap();

        // The request in flight still completes.
        conn.write_all(b"flight").unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"FLIGHT", "{engine}");
        server.stop().unwrap();
        assert!(
            TcpStream::connect(addr).is_err(),
            "{engine}: still accepting"
        );
    }
}

#[test]
fn the_grace_period_ends_connections_that_do_not_finish() {
    for engine in Engine::ALL {
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .grace(Duration::from_millis(100))
                .listen("tcp://127.0.0.1:0".parse().unwrap()),
        );
        let mut conn = TcpStream::connect(server.addr()).unwrap();
        conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        conn.write_all(b"x").unwrap();
        let mut reply = [0u8; 1];
        conn.read_exact(&mut reply).unwrap();
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
