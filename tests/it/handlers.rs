//! The socketserver API on every engine: handlers, verify_request, handle_error, panics,
//! the connection limit, and many clients at once.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use socketkit::codec::LengthWidth;
use socketkit::handler::{
    AsyncStreamHandler, AsyncStreamRequest, DatagramHandler, DatagramRequest, HandlerError,
    StreamHandler, StreamRequest,
};
use socketkit::service::{Context, Next, Service, StreamSession, Upper, UpperSession};
use socketkit::{Engine, ErrorKind, Server, ServerBuilder};

use crate::common::{SAFETY_TIMEOUT, TestServer, exchange};

const THREAD_ENGINES: [Engine; 3] = [Engine::Sequential, Engine::Threaded, Engine::Pool];

fn tcp() -> socketkit::Endpoint {
    "tcp://127.0.0.1:0".parse().unwrap()
}

/// Reverses each line, like the example.
struct Reverse;

impl StreamHandler for Reverse {
    fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
        let mut line = String::new();
        while request.read_line(&mut line)? > 0 {
            let reversed: String = line.trim_end_matches(['\n', '\r']).chars().rev().collect();
            writeln!(request.writer(), "{reversed}")?;
            request.writer().flush()?;
            line.clear();
        }
        Ok(())
    }
}

#[test]
fn a_stream_handler_serves_whole_sessions_on_every_thread_engine() {
    for engine in THREAD_ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .listen(tcp())
                .listen(socketkit::Endpoint::Unix(dir.path().join("reverse.sock")))
                .stream_handler(Reverse),
        );
        for index in 0..2 {
            let reply = exchange(server.endpoint(index), "abc\nstraße\n".as_bytes());
            assert_eq!(
                String::from_utf8(reply).unwrap(),
                "cba\neßarts\n",
                "{engine}"
            );
        }
    }
}

#[test]
fn setup_handle_and_finish_run_in_order_and_finish_runs_after_a_failure() {
    struct Lifecycle(Arc<Mutex<Vec<&'static str>>>);
    impl StreamHandler for Lifecycle {
        fn setup(&self, _: &mut StreamRequest<'_>) -> io::Result<()> {
            self.0.lock().unwrap().push("setup");
            Ok(())
        }
        fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
            self.0.lock().unwrap().push("handle");
            request.writer().write_all(b"bye")?;
            Err(io::Error::other("handle failed on purpose"))
        }
        fn finish(&self, _: &mut StreamRequest<'_>) -> io::Result<()> {
            self.0.lock().unwrap().push("finish");
            Ok(())
        }
    }
    let calls = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let server = TestServer::with(
        Server::builder()
            .engine(Engine::Threaded)
            .listen(tcp())
            .stream_handler(Lifecycle(calls.clone()))
            .handle_error(move |peer, error| {
                seen.lock().unwrap().push((peer.clone(), error.to_string()))
            }),
    );
    let mut conn = TcpStream::connect(server.addr()).unwrap();
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let local = conn.local_addr().unwrap();
    let mut reply = Vec::new();
    let _ = conn.read_to_end(&mut reply);
    server.stop().unwrap();
    assert_eq!(*calls.lock().unwrap(), ["setup", "handle", "finish"]);
    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].0.inet(),
        Some(local),
        "handle_error names the peer"
    );
    assert!(errors[0].1.contains("handle failed on purpose"));
}

/// Echoes each datagram twice: a handler may reply any number of times.
struct EchoTwice;

impl DatagramHandler for EchoTwice {
    fn handle(&self, request: &mut DatagramRequest<'_>) -> io::Result<()> {
        let data = request.data().to_vec();
        request.reply(&data)?;
        request.reply(&data)
    }
}

#[test]
fn a_datagram_handler_serves_each_datagram_on_every_thread_engine() {
    for engine in THREAD_ENGINES {
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .listen("udp://127.0.0.1:0".parse().unwrap())
                .datagram_handler(EchoTwice),
        );
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        socket.connect(server.addr()).unwrap();
        socket.send(b"ping").unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..2 {
            let n = socket.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"ping", "{engine}");
        }
    }
}

struct AsyncShout;

impl AsyncStreamHandler for AsyncShout {
    async fn handle(&self, request: &mut AsyncStreamRequest) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut line = String::new();
        while request.read_line(&mut line).await? > 0 {
            if line.trim() == "panic" {
                panic!("asked to panic");
            }
            let reply = format!("{}!\n", line.trim_end().to_uppercase());
            request.writer().write_all(reply.as_bytes()).await?;
            request.writer().flush().await?;
            line.clear();
        }
        Ok(())
    }
}

#[test]
fn an_async_handler_serves_sessions_and_survives_a_panic() {
    let panics = Arc::new(AtomicUsize::new(0));
    let counted = panics.clone();
    let server = TestServer::with(
        Server::builder()
            .engine(Engine::Async)
            .listen(tcp())
            .async_handler(AsyncShout)
            .handle_error(move |_, error| {
                if matches!(error, HandlerError::Panic(_)) {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }),
    );
    assert_eq!(
        exchange(server.endpoint(0), b"hi\nthere\n"),
        b"HI!\nTHERE!\n"
    );
    let _ = exchange(server.endpoint(0), b"panic\n");
    assert_eq!(exchange(server.endpoint(0), b"again\n"), b"AGAIN!\n");
    server.stop().unwrap();
    assert_eq!(panics.load(Ordering::SeqCst), 1);
}

#[test]
fn bind_refuses_a_handler_the_engine_cannot_run() {
    let blocking_on_async = Server::builder()
        .engine(Engine::Async)
        .listen(tcp())
        .stream_handler(Reverse)
        .bind()
        .unwrap_err();
    assert_eq!(blocking_on_async.kind(), ErrorKind::Usage);
    assert!(blocking_on_async.to_string().contains("thread engine"));
    let async_on_threads = Server::builder()
        .engine(Engine::Pool)
        .listen(tcp())
        .async_handler(AsyncShout)
        .bind()
        .unwrap_err();
    assert!(async_on_threads.to_string().contains("async engine"));
    let datagram_on_async = Server::builder()
        .listen("udp://127.0.0.1:0".parse().unwrap())
        .datagram_handler(EchoTwice)
        .bind()
        .unwrap_err();
    assert_eq!(datagram_on_async.kind(), ErrorKind::Usage);
}

#[test]
fn verify_request_closes_a_rejected_peer_before_a_byte_is_read() {
    for engine in Engine::ALL {
        let reads = Arc::new(AtomicUsize::new(0));
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .listen(tcp())
                .service(Counting(reads.clone()))
                .verify_request(|_| false),
        );
        let mut conn = TcpStream::connect(server.addr()).unwrap();
        // The refusal's reset can beat even this first call: the socket then reports it here.
        if let Err(e) = conn.set_read_timeout(Some(SAFETY_TIMEOUT)) {
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{engine}");
        }
        let _ = conn.write_all(b"hello");
        let mut buf = [0u8; 16];
        match conn.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0, "{engine}: a rejected peer got a reply"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{engine}"),
        }
        server.stop().unwrap();
        assert_eq!(
            reads.load(Ordering::SeqCst),
            0,
            "{engine}: the service saw bytes"
        );
    }
}

#[test]
fn verify_request_drops_datagrams_from_rejected_peers() {
    for engine in Engine::ALL {
        let rejected = UdpSocket::bind("127.0.0.1:0").unwrap();
        let rejected_addr = rejected.local_addr().unwrap();
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .listen("udp://127.0.0.1:0".parse().unwrap())
                .verify_request(move |peer| peer.inet() != Some(rejected_addr)),
        );
        rejected.send_to(b"no", server.addr()).unwrap();
        assert_eq!(exchange(server.endpoint(0), b"yes"), b"YES", "{engine}");
        rejected
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = [0u8; 8];
        assert!(
            rejected.recv(&mut buf).is_err(),
            "{engine}: a rejected peer got a reply"
        );
    }
}

#[test]
fn a_panicking_verify_request_refuses_that_peer_and_the_listener_goes_on() {
    for engine in Engine::ALL {
        // The peers the hook panics on, known before they connect or send.
        let tcp_socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        tcp_socket
            .bind(
                &"127.0.0.1:0"
                    .parse::<std::net::SocketAddr>()
                    .unwrap()
                    .into(),
            )
            .unwrap();
        let bad_tcp = tcp_socket.local_addr().unwrap().as_socket().unwrap();
        let bad_udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let bad_udp_addr = bad_udp.local_addr().unwrap();
        let reported = Arc::new(AtomicUsize::new(0));
        let counted = reported.clone();
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .listen(tcp())
                .listen("udp://127.0.0.1:0".parse().unwrap())
                .verify_request(move |peer| {
                    let peer = peer.inet();
                    assert!(
                        peer != Some(bad_tcp) && peer != Some(bad_udp_addr),
                        "a bug in the hook"
                    );
                    true
                })
                .handle_error(move |_peer, error| {
                    if matches!(error, HandlerError::Panic(_)) {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                }),
        );
        tcp_socket.connect(&server.addr().into()).unwrap();
        let mut refused = TcpStream::from(tcp_socket);
        refused.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let mut buf = [0u8; 8];
        assert!(
            matches!(refused.read(&mut buf), Ok(0) | Err(_)),
            "{engine}: the peer the hook panicked on was served"
        );
        bad_udp
            .send_to(b"no", server.endpoint(1).socket_addrs().unwrap()[0])
            .unwrap();
        // Both listeners still serve everyone else.
        assert_eq!(exchange(server.endpoint(0), b"tcp"), b"TCP", "{engine}");
        assert_eq!(exchange(server.endpoint(1), b"udp"), b"UDP", "{engine}");
        assert_eq!(
            reported.load(Ordering::SeqCst),
            2,
            "{engine}: each panic reported"
        );
    }
}

/// Upper case, counting the bytes it is given; panics on "panic".
struct Counting(Arc<AtomicUsize>);
struct CountingSession(Arc<AtomicUsize>, UpperSession);

impl StreamSession for CountingSession {
    fn on_data(&mut self, input: &[u8], out: &mut BytesMut) -> Next {
        if input.starts_with(b"panic") {
            panic!("asked to panic");
        }
        self.0.fetch_add(input.len(), Ordering::SeqCst);
        self.1.on_data(input, out)
    }
    fn on_eof(&mut self, out: &mut BytesMut) -> Next {
        self.1.on_eof(out)
    }
}

impl Service for Counting {
    type Session = CountingSession;
    fn name(&self) -> &str {
        "counting"
    }
    fn session(&self, ctx: &Context) -> CountingSession {
        CountingSession(self.0.clone(), Upper.session(ctx))
    }
    fn message(&self, ctx: &Context, request: &[u8], reply: &mut BytesMut) -> bool {
        if request.starts_with(b"panic") {
            panic!("asked to panic");
        }
        self.0.fetch_add(request.len(), Ordering::SeqCst);
        Upper.message(ctx, request, reply)
    }
}

#[test]
fn a_panicking_handle_error_costs_neither_a_worker_nor_a_listener() {
    for engine in Engine::ALL {
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .workers(1) // the pool's only worker must survive
                .listen(tcp())
                .listen("udp://127.0.0.1:0".parse().unwrap())
                .service(Counting(Arc::default()))
                .handle_error(|_, error| panic!("the hook fails too, on: {error}")),
        );
        for round in 0..2 {
            let _ = exchange(server.endpoint(0), b"panic now");
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            let udp = server.endpoint(1).socket_addrs().unwrap()[0];
            socket.send_to(b"panic now", udp).unwrap();
            assert_eq!(
                exchange(server.endpoint(0), b"tcp"),
                b"TCP",
                "{engine} {round}"
            );
            assert_eq!(
                exchange(server.endpoint(1), b"udp"),
                b"UDP",
                "{engine} {round}"
            );
        }
    }
}

#[test]
fn a_panicking_session_closes_its_connection_only_on_every_engine() {
    for engine in Engine::ALL {
        let errors = Arc::new(AtomicUsize::new(0));
        let counted = errors.clone();
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .listen(tcp())
                .listen("udp://127.0.0.1:0".parse().unwrap())
                .service(Counting(Arc::default()))
                .handle_error(move |_, error| {
                    assert!(error.to_string().contains("asked to panic"));
                    counted.fetch_add(1, Ordering::SeqCst);
                }),
        );
        for index in 0..2 {
            let endpoint = server.endpoint(index);
            if endpoint.transport().is_stream() {
                let _ = exchange(endpoint, b"panic now");
            } else {
                let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
                socket
                    .send_to(b"panic now", server.endpoint(1).socket_addrs().unwrap()[0])
                    .unwrap();
            }
            // The next client is served.
            assert_eq!(exchange(endpoint, b"next"), b"NEXT", "{engine} {endpoint}");
        }
        server.stop().unwrap();
        assert_eq!(
            errors.load(Ordering::SeqCst),
            2,
            "{engine}: handle_error calls"
        );
    }
}

struct PanicHandler;

impl StreamHandler for PanicHandler {
    fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
        let mut line = String::new();
        request.read_line(&mut line)?;
        if line.starts_with("panic") {
            panic!("handler asked to panic");
        }
        request.writer().write_all(line.to_uppercase().as_bytes())
    }
}

#[test]
fn a_panicking_stream_handler_does_not_stop_a_thread_engine() {
    for engine in THREAD_ENGINES {
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .workers(1) // the pool's only worker must survive the panic
                .listen(tcp())
                .stream_handler(PanicHandler),
        );
        let _ = exchange(server.endpoint(0), b"panic\n");
        assert_eq!(
            exchange(server.endpoint(0), b"next\n"),
            b"NEXT\n",
            "{engine}"
        );
    }
}

#[test]
fn a_hundred_concurrent_clients_each_get_their_own_reply() {
    for engine in [Engine::Threaded, Engine::Pool, Engine::Async] {
        let server = TestServer::start(engine, &["tcp://127.0.0.1:0"]);
        let endpoint = server.endpoint(0).clone();
        let start = Arc::new(Barrier::new(100));
        let clients: Vec<_> = (0..100)
            .map(|i| {
                let endpoint = endpoint.clone();
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    let request = format!("client {i} says straße");
                    let reply = exchange(&endpoint, request.as_bytes());
                    assert_eq!(String::from_utf8(reply).unwrap(), request.to_uppercase());
                })
            })
            .collect();
        for client in clients {
            client.join().expect("a client failed");
        }
    }
}

#[test]
fn at_the_connection_limit_the_next_client_waits_until_a_slot_frees() {
    for engine in Engine::ALL {
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .max_connections(1)
                .listen(tcp()),
        );
        let mut first = TcpStream::connect(server.addr()).unwrap();
        first.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        first.write_all(b"a").unwrap();
        let mut reply = [0u8; 1];
        first.read_exact(&mut reply).unwrap(); // the one slot is taken

        let mut second = TcpStream::connect(server.addr()).unwrap(); // in the listen queue
        second.write_all(b"b").unwrap();
        second.shutdown(Shutdown::Write).unwrap();
        second
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 4];
        let early = second.read(&mut buf);
        assert!(
            early.as_ref().is_err_and(|e| matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            )),
            "{engine}: served beyond the limit: {early:?}"
        );

        first.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        first.read_to_end(&mut rest).unwrap(); // the slot frees
        second.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let mut reply = Vec::new();
        second.read_to_end(&mut reply).unwrap();
        assert_eq!(reply, b"B", "{engine}");
    }
}

/// A blocking handler owns its socket for its whole session, as in socketserver, so on the
/// pool each session holds a worker: with `--workers 2`, a third session waits, accepted,
/// until one of the first two ends, and is served then. (Services do not: their connections
/// wait for their peers in the pool's poller; see the resources tests.)
#[test]
fn on_the_pool_each_handler_session_holds_a_worker_until_it_ends() {
    let server = TestServer::with(
        Server::builder()
            .engine(Engine::Pool)
            .workers(2)
            .listen(tcp())
            .stream_handler(Reverse),
    );
    let open_session = || {
        let mut conn = TcpStream::connect(server.addr()).unwrap();
        conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        conn.write_all(b"ab\n").unwrap();
        conn
    };
    let mut holders: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut conn = open_session();
            let mut reply = [0u8; 3];
            conn.read_exact(&mut reply).unwrap(); // its session runs on a worker
            assert_eq!(&reply, b"ba\n");
            conn
        })
        .collect();

    let mut third = open_session();
    third
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 3];
    let early = third.read(&mut buf);
    assert!(
        early.as_ref().is_err_and(|e| matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        )),
        "a third handler session was served beside two on two workers: {early:?}"
    );

    let mut first = holders.remove(0);
    first.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).unwrap(); // its session ends: a worker frees
    third.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let mut reply = [0u8; 3];
    third.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"ba\n", "the third session, once a worker was free");
    // The one still open is served too.
    holders[0].write_all(b"cd\n").unwrap();
    holders[0].read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"dc\n");
}

#[test]
fn an_idle_stream_handler_connection_is_closed() {
    for engine in THREAD_ENGINES {
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .idle_timeout(Duration::from_millis(100))
                .listen(tcp())
                .stream_handler(Reverse),
        );
        let mut conn = TcpStream::connect(server.addr()).unwrap();
        conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let mut buf = [0u8; 8];
        match conn.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0, "{engine}"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{engine}"),
        }
    }
}

/// What a bounded handler's read failed with: the error's kind and text, and the capacity of
/// the line buffer it was reading into.
type Failures = Arc<Mutex<Vec<(io::ErrorKind, String, usize)>>>;

/// Reverses each line read with the bounded `read_line_bytes`, and records the error that ends
/// the connection.
struct BoundedReverse(Failures);

impl StreamHandler for BoundedReverse {
    fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
        let mut line = Vec::new();
        loop {
            match request.read_line_bytes(&mut line) {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    let end = line.len() - 1;
                    line[..end].reverse();
                    request.writer().write_all(&line)?;
                    request.writer().flush()?;
                    line.clear();
                }
                Err(e) => {
                    let failure = (e.kind(), e.to_string(), line.capacity());
                    self.0.lock().unwrap().push(failure);
                    return Err(e);
                }
            }
        }
    }
}

/// [`BoundedReverse`] for the async engine.
struct AsyncBoundedReverse(Failures);

impl AsyncStreamHandler for AsyncBoundedReverse {
    async fn handle(&self, request: &mut AsyncStreamRequest) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut line = Vec::new();
        loop {
            match request.read_line_bytes(&mut line).await {
                Ok(0) => return Ok(()),
                Ok(_) => {
                    let end = line.len() - 1;
                    line[..end].reverse();
                    request.writer().write_all(&line).await?;
                    request.writer().flush().await?;
                    line.clear();
                }
                Err(e) => {
                    let failure = (e.kind(), e.to_string(), line.capacity());
                    self.0.lock().unwrap().push(failure);
                    return Err(e);
                }
            }
        }
    }
}

/// Echoes each frame (2-byte headers) read with the bounded `read_frame`, and records the
/// error that ends the connection.
struct FrameEcho(Failures);

impl StreamHandler for FrameEcho {
    fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
        loop {
            match request.read_frame(LengthWidth::U16) {
                Ok(None) => return Ok(()),
                Ok(Some(frame)) => {
                    let header = u16::try_from(frame.len()).unwrap().to_be_bytes();
                    request.writer().write_all(&header)?;
                    request.writer().write_all(&frame)?;
                    request.writer().flush()?;
                }
                Err(e) => {
                    self.0.lock().unwrap().push((e.kind(), e.to_string(), 0));
                    return Err(e);
                }
            }
        }
    }
}

/// [`FrameEcho`] for the async engine.
struct AsyncFrameEcho(Failures);

impl AsyncStreamHandler for AsyncFrameEcho {
    async fn handle(&self, request: &mut AsyncStreamRequest) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        loop {
            match request.read_frame(LengthWidth::U16).await {
                Ok(None) => return Ok(()),
                Ok(Some(frame)) => {
                    let header = u16::try_from(frame.len()).unwrap().to_be_bytes();
                    request.writer().write_all(&header).await?;
                    request.writer().write_all(&frame).await?;
                    request.writer().flush().await?;
                }
                Err(e) => {
                    self.0.lock().unwrap().push((e.kind(), e.to_string(), 0));
                    return Err(e);
                }
            }
        }
    }
}

/// A server on `engine` with the bounded reversing handler its engine runs (blocking on the
/// thread engines, async on `async`), listening on TCP.
fn bounded_reverse(engine: Engine, failures: &Failures, builder: ServerBuilder) -> TestServer {
    let builder = builder.engine(engine).listen(tcp());
    TestServer::with(match engine {
        Engine::Async | Engine::Uring => {
            builder.async_handler(AsyncBoundedReverse(failures.clone()))
        }
        _ => builder.stream_handler(BoundedReverse(failures.clone())),
    })
}

/// Writes one line that never ends, 64 KiB of `x` at a time, until a write fails (the server
/// closed the connection); returns the bytes written then, or `None` if `cap` bytes went in
/// without a close.
fn endless_line(conn: &mut TcpStream, cap: usize) -> Option<usize> {
    conn.set_write_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut written = 0;
    while written < cap {
        match conn.write(&chunk) {
            Ok(n) => written += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("the server neither read nor closed after {written} bytes")
            }
            Err(_) => return Some(written),
        }
    }
    None
}

#[test]
fn a_never_ending_line_gives_the_handler_the_limit_error_and_others_are_served() {
    const MAX_LINE: usize = 1024;
    const CAP: usize = 64 << 20;
    for engine in Engine::ALL {
        let failures = Failures::default();
        let server = bounded_reverse(engine, &failures, Server::builder().max_line(MAX_LINE));
        // A line exactly at the limit, CRLF included, is served.
        let mut at_limit = vec![b'a'; MAX_LINE];
        at_limit[0] = b'z';
        at_limit.extend_from_slice(b"\r\n");
        let mut reversed = at_limit.clone();
        reversed[..MAX_LINE + 1].reverse();
        assert_eq!(
            exchange(server.endpoint(0), &at_limit),
            reversed,
            "{engine}"
        );

        let mut hog = TcpStream::connect(server.addr()).unwrap();
        let endpoint = server.endpoint(0).clone();
        let hogging = std::thread::spawn(move || endless_line(&mut hog, CAP));
        // Served while the hog writes (and, on the sequential engine, once it is closed).
        assert_eq!(exchange(&endpoint, b"abc\n"), b"cba\n", "{engine}");
        let written = hogging.join().unwrap();
        assert!(
            written.is_some(),
            "{engine}: the server read a {CAP}-byte line without closing"
        );
        assert_eq!(exchange(&endpoint, b"def\n"), b"fed\n", "{engine}");
        server.stop().unwrap();
        let failures = failures.lock().unwrap();
        let [(kind, text, capacity)] = failures.as_slice() else {
            panic!("{engine}: one failure expected: {failures:?}");
        };
        assert_eq!(*kind, io::ErrorKind::InvalidData, "{engine}: {text}");
        assert!(text.contains(&MAX_LINE.to_string()), "{engine}: {text}");
        assert!(
            *capacity <= 4 * MAX_LINE,
            "{engine}: the line buffer grew to {capacity} bytes"
        );
    }
}

/// Whether the server has closed `conn`: a read that does not wait sees EOF or a reset.
fn closed_by_server(conn: &TcpStream) -> bool {
    conn.set_nonblocking(true).unwrap();
    let closed = match (&*conn).read(&mut [0u8; 256]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    conn.set_nonblocking(false).unwrap();
    closed
}

#[test]
fn a_handler_line_begun_must_be_whole_within_the_message_deadline() {
    let deadline = Duration::from_millis(400);
    let pace = Duration::from_millis(40);
    for engine in Engine::ALL {
        let failures = Failures::default();
        let server = bounded_reverse(
            engine,
            &failures,
            Server::builder()
                .idle_timeout(3 * SAFETY_TIMEOUT) // never the reason here
                .message_timeout(deadline),
        );
        // Whole lines at the same pace for longer than the deadline: served throughout.
        let mut steady = TcpStream::connect(server.addr()).unwrap();
        steady.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        for _ in 0..2 * (deadline.as_millis() / pace.as_millis()) {
            steady.write_all(b"ok\n").unwrap();
            let mut reply = [0u8; 3];
            steady.read_exact(&mut reply).unwrap();
            assert_eq!(&reply, b"ko\n", "{engine}");
            std::thread::sleep(pace); // the peer's pace, not a synchronisation
        }
        drop(steady);

        // One byte of a line that never ends every `pace`: a slowloris.
        let mut slow = TcpStream::connect(server.addr()).unwrap();
        let began = Instant::now();
        let mut closed_after = None;
        for _ in 0..250 {
            if slow.write_all(b"x").is_err() || closed_by_server(&slow) {
                closed_after = Some(began.elapsed());
                break;
            }
            std::thread::sleep(pace); // the peer's pace, not a synchronisation
        }
        let closed_after =
            closed_after.unwrap_or_else(|| panic!("{engine}: a dribbling peer held its handler"));
        assert!(
            closed_after >= deadline && closed_after < deadline * 10,
            "{engine}: closed after {closed_after:?}, the deadline is {deadline:?}"
        );

        // Half a line, then silence: the read waiting for the rest ends at the deadline too.
        let mut stalled = TcpStream::connect(server.addr()).unwrap();
        stalled.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        stalled.write_all(b"half").unwrap();
        let began = Instant::now();
        match stalled.read(&mut [0u8; 8]) {
            Ok(n) => assert_eq!(n, 0, "{engine}"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{engine}"),
        }
        let closed_after = began.elapsed();
        assert!(
            closed_after < deadline * 10,
            "{engine}: a stalled line closed after {closed_after:?}, the deadline is {deadline:?}"
        );
        server.stop().unwrap();
        let failures = failures.lock().unwrap();
        assert_eq!(failures.len(), 2, "{engine}: {failures:?}");
        for (kind, text, _) in failures.iter() {
            assert_eq!(*kind, io::ErrorKind::TimedOut, "{engine}: {text}");
            assert!(text.contains("message deadline"), "{engine}: {text}");
        }
    }
}

#[test]
fn read_frame_serves_frames_and_refuses_a_header_over_the_limit_before_its_payload() {
    for engine in Engine::ALL {
        let failures = Failures::default();
        let builder = Server::builder()
            .engine(engine)
            .max_frame(100)
            .listen(tcp());
        let server = TestServer::with(match engine {
            Engine::Async | Engine::Uring => {
                builder.async_handler(AsyncFrameEcho(failures.clone()))
            }
            _ => builder.stream_handler(FrameEcho(failures.clone())),
        });
        // An empty frame, one at the limit, and one in pieces: echoed.
        let mut frames = vec![0, 0, 0, 100];
        frames.extend_from_slice(&[7; 100]);
        frames.extend_from_slice(&[0, 3, b'a', b'b', b'c']);
        assert_eq!(exchange(server.endpoint(0), &frames), frames, "{engine}");

        // A header announcing 101 bytes: refused at once, though the payload never comes.
        let mut over = TcpStream::connect(server.addr()).unwrap();
        over.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        over.write_all(&[0, 101]).unwrap();
        let mut buf = [0u8; 8];
        match over.read(&mut buf) {
            Ok(n) => assert_eq!(n, 0, "{engine}"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{engine}"),
        }
        assert_eq!(
            exchange(server.endpoint(0), &[0, 1, b'z']),
            [0, 1, b'z'],
            "{engine}"
        );
        server.stop().unwrap();
        let failures = failures.lock().unwrap();
        let [(kind, text, _)] = failures.as_slice() else {
            panic!("{engine}: one failure expected: {failures:?}");
        };
        assert_eq!(*kind, io::ErrorKind::InvalidData, "{engine}: {text}");
        assert_eq!(
            text, "frame of 101 bytes exceeds the limit of 100 bytes",
            "{engine}"
        );
    }
}

/// Reads a line and a frame with the bounded reads, then the rest with the raw reader, and
/// sends back the three, each on a line of its own.
struct Mixed;

impl StreamHandler for Mixed {
    fn handle(&self, request: &mut StreamRequest<'_>) -> io::Result<()> {
        let mut line = Vec::new();
        request.read_line_bytes(&mut line)?;
        let frame = request.read_frame(LengthWidth::U16)?.unwrap_or_default();
        let mut rest = Vec::new();
        request.reader().read_to_end(&mut rest)?;
        for part in [&line[..], &frame, b"\n", &rest] {
            request.writer().write_all(part)?;
        }
        Ok(())
    }
}

/// [`Mixed`] for the async engine.
struct AsyncMixed;

impl AsyncStreamHandler for AsyncMixed {
    async fn handle(&self, request: &mut AsyncStreamRequest) -> io::Result<()> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut line = Vec::new();
        request.read_line_bytes(&mut line).await?;
        let frame = request
            .read_frame(LengthWidth::U16)
            .await?
            .unwrap_or_default();
        let mut rest = Vec::new();
        request.reader().read_to_end(&mut rest).await?;
        for part in [&line[..], &frame, b"\n", &rest] {
            request.writer().write_all(part).await?;
        }
        Ok(())
    }
}

#[test]
fn the_raw_reader_gets_the_bytes_a_bounded_read_left_in_the_buffer() {
    // One write: the line, the frame and the rest arrive in the same read.
    let mut request = b"first line\r\n\x00\x05frame".to_vec();
    let rest = vec![b'r'; 100_000]; // more than one read, raw
    request.extend_from_slice(&rest);
    let mut expected = b"first line\r\nframe\n".to_vec();
    expected.extend_from_slice(&rest);
    for engine in Engine::ALL {
        let builder = Server::builder().engine(engine).listen(tcp());
        let server = TestServer::with(match engine {
            Engine::Async | Engine::Uring => builder.async_handler(AsyncMixed),
            _ => builder.stream_handler(Mixed),
        });
        assert!(
            exchange(server.endpoint(0), &request) == expected,
            "{engine}"
        );
    }
}
