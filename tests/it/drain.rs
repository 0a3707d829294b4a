//! Shutdown without cutting anybody off: raw streams run to the peer's EOF within the grace
//! period, and the connections already in the listen queue are accepted and served.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socketkit::{Engine, Server};

use crate::common::{SAFETY_TIMEOUT, TestServer};

/// Upper in raw framing, with a grace period longer than any client here waits.
fn raw_server(engine: Engine, max_connections: usize) -> TestServer {
    TestServer::with(
        Server::builder()
            .engine(engine)
            .grace(SAFETY_TIMEOUT)
            .max_connections(max_connections)
            .listen("tcp://127.0.0.1:0".parse().unwrap()),
    )
}

/// Waits (bounded) until the server's listening socket is gone from /proc/net/tcp: the
/// server has begun its shutdown, and each connection has been told.
fn wait_until_not_listening(addr: SocketAddr) {
    let local = format!("0100007F:{:04X}", addr.port());
    let began = Instant::now();
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let listening = table.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields[1] == local && fields[3] == "0A"
        });
        if !listening {
            return;
        }
        assert!(began.elapsed() < SAFETY_TIMEOUT, "still listening");
        std::thread::sleep(Duration::from_millis(5)); // a probe's pace, not a synchronisation
    }
}

/// Connects and sends the first piece of a request, and reads its answer: the server has
/// answered everything it received, which a raw stream must not take for the end.
fn first_piece(addr: SocketAddr) -> TcpStream {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    conn.write_all(b"the first half, ").unwrap();
    let mut reply = [0u8; 16];
    conn.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"THE FIRST HALF, ");
    conn
}

/// Sends the rest of the request and its EOF; returns the rest of the reply.
fn last_piece(mut conn: TcpStream) -> String {
    let _ = conn.write_all(b"then the second");
    let _ = conn.shutdown(Shutdown::Write);
    let mut rest = String::new();
    let _ = conn.read_to_string(&mut rest);
    rest
}

#[test]
fn raw_clients_sending_in_pieces_across_a_shutdown_get_their_whole_reply() {
    for engine in Engine::ALL {
        let server = raw_server(engine, 10_000);
        // The sequential engine serves one connection at a time.
        let count = if engine == Engine::Sequential { 1 } else { 20 };
        let conns: Vec<TcpStream> = (0..count).map(|_| first_piece(server.addr())).collect();
        server.shutdown_handle().shutdown();
        wait_until_not_listening(server.addr());
        for (i, conn) in conns.into_iter().enumerate() {
            assert_eq!(
                last_piece(conn),
                "THEN THE SECOND",
                "{engine}: client {i} of {count} lost the end of its reply"
            );
        }
        server.stop().unwrap();
    }
}

#[test]
fn connections_queued_at_shutdown_are_accepted_and_served() {
    for engine in Engine::ALL {
        // One connection at a time: the others wait in the kernel's listen queue.
        let server = raw_server(engine, 1);
        let holder = first_piece(server.addr());
        let queued: Vec<TcpStream> = (0..10)
            .map(|i| {
                let mut conn = TcpStream::connect(server.addr()).unwrap();
                conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
                conn.write_all(format!("queued {i}").as_bytes()).unwrap();
                conn.shutdown(Shutdown::Write).unwrap();
                conn
            })
            .collect();
        server.shutdown_handle().shutdown();
        assert_eq!(last_piece(holder), "THEN THE SECOND", "{engine}");
        for (i, mut conn) in queued.into_iter().enumerate() {
            let mut reply = String::new();
            let read = conn.read_to_string(&mut reply);
            assert!(
                read.is_ok() && reply == format!("QUEUED {i}"),
                "{engine}: queued client {i} got {reply:?} ({read:?})"
            );
        }
        server.stop().unwrap();
    }
}
