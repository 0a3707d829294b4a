//! Hardening promises that are in place: access lists (IPv4-mapped peers included) and the
//! inetd rule against datagram loops between services.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use socketkit::server::AccessList;
use socketkit::{Engine, Server};

use crate::common::{SAFETY_TIMEOUT, TestServer, exchange, socketkit};

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
    socket.connect(&server.into()).unwrap();
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
