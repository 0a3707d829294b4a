//! The PROXY protocol on every engine: the header's client is the peer the service, the access
//! list and handlers see; every bad header closes only its own connection, before the service
//! hears a byte; without the option a header is data.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use socketkit::handler::{StreamHandler, StreamRequest};
use socketkit::proxy::{Version, encode, encode_local};
use socketkit::server::AccessList;
use socketkit::service::{Context, Next, Service, StreamSession};
use socketkit::stats::{EndCause, Refusal, Snapshot, Stats};
use socketkit::{Engine, Server, ServerBuilder};

use super::common::{SAFETY_TIMEOUT, TestServer};

/// Says the peer it was given (a line), then echoes.
struct PeerSays;

struct PeerSession(Option<String>);

impl StreamSession for PeerSession {
    fn on_open(&mut self, out: &mut BytesMut) -> Next {
        if let Some(peer) = self.0.take() {
            out.extend_from_slice(format!("{peer}\n").as_bytes());
        }
        Next::Read
    }
    fn on_data(&mut self, input: &[u8], out: &mut BytesMut) -> Next {
        out.extend_from_slice(input);
        Next::Read
    }
}

impl Service for PeerSays {
    type Session = PeerSession;
    fn name(&self) -> &str {
        "peer"
    }
    fn session(&self, ctx: &Context) -> PeerSession {
        PeerSession(Some(ctx.peer.to_string()))
    }
    fn message(&self, _ctx: &Context, _request: &[u8], _reply: &mut BytesMut) -> bool {
        false
    }
}

fn builder(engine: Engine) -> ServerBuilder {
    let mut access = AccessList::default();
    access.deny("192.0.2.66").unwrap();
    Server::builder()
        .engine(engine)
        .listen("tcp://127.0.0.1:0".parse().unwrap())
        .proxy_protocol(true)
        .access(access)
        .message_timeout(Duration::from_millis(500))
        .service(PeerSays)
}

/// Writes `bytes`, half-closes (unless `keep_open`), and reads to EOF; a reset is an error.
fn talk(addr: SocketAddr, bytes: &[u8]) -> io::Result<Vec<u8>> {
    let mut conn = TcpStream::connect(addr)?;
    conn.set_read_timeout(Some(SAFETY_TIMEOUT))?;
    conn.write_all(bytes)?;
    conn.shutdown(Shutdown::Write)?;
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply)?;
    Ok(reply)
}

/// Whether the connection ended with nothing from the service (EOF or reset, no greeting). A
/// reset that comes between the client's write and its half-close fails the half-close with
/// ENOTCONN.
fn refused(result: io::Result<Vec<u8>>) -> bool {
    match result {
        Ok(reply) => reply.is_empty(),
        Err(e) => matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::NotConnected
        ),
    }
}

fn v2_header(source: &str, destination: SocketAddr) -> Vec<u8> {
    encode(Version::V2, source.parse().unwrap(), destination)
}

#[test]
fn the_headers_client_is_the_peer_on_every_engine() {
    for engine in Engine::ALL {
        let server = TestServer::with(builder(engine));
        let addr = server.addr();
        for version in [Version::V1, Version::V2] {
            let header = encode(version, "192.0.2.7:5000".parse().unwrap(), addr);
            let reply = talk(addr, &[&header[..], b"hello"].concat()).unwrap();
            assert_eq!(reply, b"192.0.2.7:5000\nhello", "{engine} {version:?}");
        }
        // Cut anywhere, across several writes: the same.
        let header = v2_header("[2001:db8::5]:6000", addr);
        let mut conn = TcpStream::connect(addr).unwrap();
        conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        conn.set_nodelay(true).unwrap();
        for piece in header.chunks(5) {
            conn.write_all(piece).unwrap();
        }
        conn.write_all(b"x").unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "[2001:db8::5]:6000\nx", "{engine}");
        // A balancer's health check (LOCAL): the socket's own peer.
        let reply = talk(addr, &encode_local(Version::V2)).unwrap();
        let text = String::from_utf8(reply).unwrap();
        assert!(text.starts_with("127.0.0.1:"), "{engine}: {text:?}");
    }
}

#[test]
fn the_access_list_judges_the_headers_client() {
    for engine in Engine::ALL {
        let server = TestServer::with(builder(engine));
        let addr = server.addr();
        let denied = talk(addr, &[&v2_header("192.0.2.66:1", addr)[..], b"x"].concat());
        assert!(refused(denied), "{engine}: a denied client was served");
        let allowed = talk(addr, &[&v2_header("192.0.2.67:1", addr)[..], b"x"].concat());
        assert_eq!(allowed.unwrap(), b"192.0.2.67:1\nx", "{engine}");
    }
}

#[test]
fn every_bad_header_closes_only_its_connection_on_every_engine() {
    let signature = b"\r\n\r\n\0\r\nQUIT\n";
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("missing", b"hello, no header\r\n".to_vec()),
        (
            "bad signature",
            b"\r\n\r\n\0\r\nQUIZ\n\x21\x11\x00\x0c".to_vec(),
        ),
        ("v1 too long", [&b"PROXY TCP4 "[..], &[b'1'; 200]].concat()),
        (
            "v2 too long",
            [&signature[..], &[0x21, 0x11, 0x40, 0x00], &[0; 64]].concat(),
        ),
        (
            "unknown version",
            [&signature[..], &[0x31, 0x11, 0, 12]].concat(),
        ),
        ("v1 family", b"PROXY TCP4 ::1 ::1 1 2\r\nx".to_vec()),
        (
            "v2 family",
            [&signature[..], &[0x21, 0x11, 0, 4, 1, 2, 3, 4], b"x"].concat(),
        ),
        ("cut off by EOF", b"PROXY TCP4 192.0.2.1 192.0".to_vec()),
        (
            "v2 cut off by EOF",
            [&signature[..], &[0x21, 0x11, 0, 12, 1, 2]].concat(),
        ),
    ];
    for engine in Engine::ALL {
        let server = TestServer::with(builder(engine));
        let addr = server.addr();
        for (what, bytes) in &bad {
            let result = talk(addr, bytes);
            let shown = format!("{result:?}");
            assert!(refused(result), "{engine}: {what} was served: {shown}");
        }
        // Not whole within the message time-out (500 ms), though the connection stays open.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        slow.write_all(b"PROXY TCP4 192.0.2.1").unwrap();
        let mut reply = Vec::new();
        let ended = slow.read_to_end(&mut reply);
        assert!(
            refused(ended.map(|_| reply)),
            "{engine}: slow header served"
        );
        // The server goes on.
        let good = talk(addr, &[&v2_header("192.0.2.9:9", addr)[..], b"ok"].concat());
        assert_eq!(good.unwrap(), b"192.0.2.9:9\nok", "{engine}");
    }
}

/// The listener's counters once every connection accepted so far has ended and none is
/// active (they are added as each connection's end is handled, a moment after its client
/// sees the close), waited for within the safety time-out.
fn settled(stats: &Stats, accepted: u64, engine: Engine) -> Snapshot {
    let began = Instant::now();
    loop {
        let snap = stats.listeners()[0].snapshot();
        let ended: u64 = snap.connection_ends.iter().sum();
        if snap.connections_accepted == accepted
            && ended == accepted
            && snap.connections_active == 0
        {
            return snap;
        }
        assert!(
            began.elapsed() < SAFETY_TIMEOUT,
            "{engine}: {accepted} connections never all ended: {snap:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Connections that end in their header step are counted as their listener's ends, by cause,
/// so the accepted connections add up to their ends on every engine: a bad header, one cut
/// off by EOF and one too slow are `proxy_header`; a client the access list refuses once the
/// header names it is `refused` (and among the refusals by the access list); a good one ends
/// as any connection does.
#[test]
fn connections_ended_in_their_header_are_counted_on_every_engine() {
    for engine in Engine::ALL {
        let stats = Stats::new();
        let server = TestServer::with(builder(engine).stats(&stats));
        let addr = server.addr();
        assert!(refused(talk(addr, b"hello, no header\r\n")), "{engine}");
        assert!(
            refused(talk(addr, b"PROXY TCP4 192.0.2.1 192.0")),
            "{engine}"
        );
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        slow.write_all(b"PROXY TCP4 192.0.2.1").unwrap();
        let mut reply = Vec::new();
        assert!(
            refused(slow.read_to_end(&mut reply).map(|_| reply)),
            "{engine}"
        );
        let denied = talk(addr, &[&v2_header("192.0.2.66:1", addr)[..], b"x"].concat());
        assert!(refused(denied), "{engine}: a denied client was served");
        let good = talk(addr, &[&v2_header("192.0.2.9:9", addr)[..], b"ok"].concat());
        assert_eq!(good.unwrap(), b"192.0.2.9:9\nok", "{engine}");

        let snap = settled(&stats, 5, engine);
        let ends = |cause: EndCause| snap.connection_ends[cause as usize];
        assert_eq!(ends(EndCause::ProxyHeader), 3, "{engine}: {snap:#?}");
        assert_eq!(ends(EndCause::Refused), 1, "{engine}: {snap:#?}");
        assert_eq!(ends(EndCause::Eof), 1, "{engine}: {snap:#?}");
        assert_eq!(
            snap.connections_refused[Refusal::AccessList as usize],
            1,
            "{engine}"
        );
        assert_eq!(
            snap.requests, 1,
            "{engine}: only the good connection was served"
        );
    }
}

/// A connection still waiting for its header when the server stops is closed at the end of
/// the grace period (it never became a session to drain), counted as `grace_over`, and the
/// server's stop waits for nothing more, on every engine.
#[test]
fn a_header_still_awaited_ends_with_the_grace_period_on_every_engine() {
    for engine in Engine::ALL {
        let stats = Stats::new();
        let grace = Duration::from_millis(300);
        let builder = builder(engine)
            .message_timeout(Duration::from_secs(60))
            .grace(grace)
            .stats(&stats);
        let server = TestServer::with(builder);
        let mut waiting = TcpStream::connect(server.addr()).unwrap();
        waiting.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        waiting.write_all(b"PROXY TCP4 192.0.2.1").unwrap();
        // Accepted (counted) before the stop, so the stop finds it in its header.
        let began = Instant::now();
        while stats.listeners()[0].snapshot().connections_accepted == 0 {
            assert!(began.elapsed() < SAFETY_TIMEOUT, "{engine}: never accepted");
            std::thread::sleep(Duration::from_millis(5));
        }
        let stopping = Instant::now();
        server.stop().unwrap();
        let took = stopping.elapsed();
        assert!(
            took >= grace,
            "{engine}: stopped after {took:?}, before the grace period"
        );
        assert!(
            took < SAFETY_TIMEOUT / 2,
            "{engine}: stopping took {took:?}"
        );
        let mut reply = Vec::new();
        assert!(
            refused(waiting.read_to_end(&mut reply).map(|_| reply)),
            "{engine}"
        );
        // A thread engine's connection thread may still be letting go of it.
        let snap = settled(&stats, 1, engine);
        assert_eq!(
            snap.connection_ends[EndCause::GraceOver as usize],
            1,
            "{engine}: {snap:#?}"
        );
    }
}

#[test]
fn without_the_option_a_header_is_data() {
    for engine in Engine::ALL {
        let server = TestServer::start(engine, &["tcp://127.0.0.1:0"]);
        let addr = server.addr();
        let header = encode(Version::V1, "192.0.2.7:5000".parse().unwrap(), addr);
        let reply = talk(addr, &[&header[..], b"hello"].concat()).unwrap();
        assert_eq!(reply, [&header[..], b"HELLO"].concat(), "{engine}");
    }
}

/// A blocking handler's `peer()` is the header's client.
struct SayPeer;

impl StreamHandler for SayPeer {
    fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
        let peer = request.peer().to_string();
        request.writer().write_all(peer.as_bytes())
    }
}

#[test]
fn handlers_see_the_headers_client() {
    for engine in Engine::ALL.into_iter().filter(|e| e.is_blocking()) {
        let server = TestServer::with(builder(engine).stream_handler(SayPeer));
        let addr = server.addr();
        let reply = talk(addr, &v2_header("198.51.100.4:44", addr)).unwrap();
        assert_eq!(reply, b"198.51.100.4:44", "{engine}");
    }
}

#[test]
fn a_unix_stream_listener_reads_the_header_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    for engine in Engine::ALL {
        let _ = std::fs::remove_file(&path);
        let builder = Server::builder()
            .engine(engine)
            .listen(format!("unix://{}", path.display()).parse().unwrap())
            .proxy_protocol(true)
            .service(PeerSays);
        let _server = TestServer::with(builder);
        let mut conn = UnixStream::connect(&path).unwrap();
        conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let header = encode(
            Version::V1,
            "203.0.113.1:80".parse().unwrap(),
            "203.0.113.2:81".parse().unwrap(),
        );
        conn.write_all(&[&header[..], b"u"].concat()).unwrap();
        conn.shutdown(Shutdown::Write).unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "203.0.113.1:80\nu", "{engine}");
    }
}

#[test]
fn a_sequenced_packet_listener_refuses_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let err = Server::builder()
        .listen(
            format!("unixpacket://{}", dir.path().join("p").display())
                .parse()
                .unwrap(),
        )
        .proxy_protocol(true)
        .bind()
        .unwrap_err();
    assert_eq!(err.kind(), socketkit::ErrorKind::Usage, "{err}");
}
