//! `socketkit listen` (nc -l) against real nc and ncat, both ways, and `--dump` checked against
//! the data and against `hexdump -C`. A listener is ready once it has printed `listening on`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::UdpSocket;
use std::process::{Command, Output};
use std::sync::mpsc;

use socketkit::dump::{self, Direction, DumpFormat};

use crate::common::{self, SAFETY_TIMEOUT, Spawned, TestServer, socketkit};

/// `socketkit listen ARGS...`, started, its endpoint read back from its `listening on` line.
fn start_listen(args: &[&str]) -> (Spawned, socketkit::Endpoint) {
    let mut command = socketkit();
    command.arg("listen").args(args);
    let mut process = Spawned::start(command);
    let endpoint = process.listening(1).remove(0);
    (process, endpoint)
}

fn port(endpoint: &socketkit::Endpoint) -> String {
    endpoint.socket_addrs().unwrap()[0].port().to_string()
}

/// Closes the child's stdin after writing `bytes`, and collects its stdout to the end.
fn finish(mut process: Spawned, bytes: &[u8]) -> (Option<i32>, Vec<u8>) {
    let stdout = common::drain(process.child.stdout.take().unwrap());
    let mut stdin = process.stdin.take().unwrap();
    stdin.write_all(bytes).unwrap();
    drop(stdin);
    let code = process.wait_exit();
    (code, stdout.join().unwrap())
}

fn run(command: &mut Command, stdin: &[u8]) -> Output {
    common::run_peer(command, stdin)
}

#[test]
fn nc_and_listen_talk_both_ways_and_listen_names_the_peer() {
    let (mut listen, endpoint) = start_listen(&["-v", "-p", "0"]);
    let port = port(&endpoint);
    let stdout = common::drain(listen.child.stdout.take().unwrap());
    let mut stdin = listen.stdin.take().unwrap();
    stdin.write_all(b"from listen\n").unwrap();
    drop(stdin);
    // nc -N: half-close after its stdin ends; it then reads until listen closes.
    let nc = run(
        Command::new("nc").args(["-N", "127.0.0.1", &port]),
        b"from nc\n",
    );
    common::assert_code(&nc, 0);
    assert_eq!(common::stdout(&nc), "from listen\n");
    assert_eq!(listen.wait_exit(), Some(0), "{:#?}", listen.seen);
    assert_eq!(stdout.join().unwrap(), b"from nc\n");
    let named = listen.wait_for_line("connection from 127.0.0.1:");
    assert!(named.contains("INFO"), "{named}");
}

#[test]
fn listen_on_unix_with_ncat_sending_only_then_receiving_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("listen.sock");
    let endpoint = format!("unix://{}", path.display());
    let path = path.to_str().unwrap();

    // ncat --send-only: its data reaches listen's stdout; listen's (empty) stdin ends at once.
    let (listen, _) = start_listen(&[&endpoint]);
    let ncat = run(
        Command::new("ncat").args(["--send-only", "-U", path]),
        b"one way\x00\xff\n",
    );
    common::assert_code(&ncat, 0);
    let (code, out) = finish(listen, b"");
    assert_eq!((code, out.as_slice()), (Some(0), &b"one way\x00\xff\n"[..]));

    // ncat --recv-only: listen's stdin reaches ncat, and the half-close ends ncat.
    let (listen, _) = start_listen(&[&endpoint]);
    let stdout = std::thread::spawn({
        let path = path.to_string();
        move || run(Command::new("ncat").args(["--recv-only", "-U", &path]), b"")
    });
    let (code, out) = finish(listen, b"other way\n");
    assert_eq!((code, out.as_slice()), (Some(0), &b""[..]));
    let ncat = stdout.join().unwrap();
    common::assert_code(&ncat, 0);
    assert_eq!(common::stdout(&ncat), "other way\n");
    assert!(
        !std::path::Path::new(path).exists(),
        "socket file left behind"
    );
}

#[test]
fn keep_open_takes_peers_one_after_another() {
    let (mut listen, endpoint) = start_listen(&["-k", "-v", "tcp://127.0.0.1:0"]);
    drop(listen.stdin.take()); // each peer gets EOF at once
    let port = port(&endpoint);
    let lines = lines(listen.child.stdout.take().unwrap());
    for word in ["first", "second", "third"] {
        let nc = run(
            Command::new("nc").args(["-N", "127.0.0.1", &port]),
            format!("{word}\n").as_bytes(),
        );
        common::assert_code(&nc, 0);
        assert_eq!(lines.recv_timeout(SAFETY_TIMEOUT).unwrap(), word);
    }
    let named = listen
        .lines_so_far()
        .iter()
        .filter(|l| l.contains("connection from"))
        .count();
    assert!(named >= 2, "{:#?}", listen.seen);
}

/// Lines of a child's stdout, read on a thread, as they come.
fn lines(stdout: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn udp_listen_prints_datagrams_and_answers_the_last_sender() {
    let (mut listen, endpoint) = start_listen(&["-u", "0"]);
    assert_eq!(endpoint.transport(), socketkit::Transport::Udp);
    let addr = endpoint.socket_addrs().unwrap()[0];
    let printed = lines(listen.child.stdout.take().unwrap());
    let mut stdin = listen.stdin.take().unwrap();
    let mut buf = [0u8; 100];
    for name in ["alice", "bob"] {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        peer.send_to(format!("hello from {name}\n").as_bytes(), addr)
            .unwrap();
        assert_eq!(
            printed.recv_timeout(SAFETY_TIMEOUT).unwrap(),
            format!("hello from {name}")
        );
        stdin.write_all(format!("hi {name}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        let (n, from) = peer.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (format!("hi {name}\n").as_bytes(), addr));
    }
    // nc -u as the sender: it prints listen's answer.
    let mut nc = Command::new("nc");
    nc.args(["-u", "127.0.0.1", &addr.port().to_string()]);
    let mut nc = Spawned::start(nc);
    let heard = lines(nc.child.stdout.take().unwrap());
    nc.stdin.as_mut().unwrap().write_all(b"from nc\n").unwrap();
    assert_eq!(printed.recv_timeout(SAFETY_TIMEOUT).unwrap(), "from nc");
    stdin.write_all(b"to nc\n").unwrap();
    assert_eq!(heard.recv_timeout(SAFETY_TIMEOUT).unwrap(), "to nc");
}

#[test]
fn listen_refuses_what_it_cannot_listen_on() {
    for (args, code) in [
        (&["-u", "tcp://127.0.0.1:0"][..], 2),
        (&["unixpacket:///tmp/x.sock"][..], 2),
        (&[][..], 2),
        (&["-p", "1", "2"][..], 2),
    ] {
        let output = run(socketkit().arg("listen").args(args), b"");
        common::assert_code(&output, code);
        assert_eq!(common::stderr(&output).lines().count(), 1, "{args:?}");
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = run(socketkit().args(["listen", &port]), b"");
    common::assert_code(&output, 7);
}

/// Splits a dump into its chunks' bodies (the lines after each header), as text.
fn bodies(dump: &str) -> Vec<String> {
    let mut bodies: Vec<String> = Vec::new();
    for line in dump.lines() {
        if line.starts_with('#') {
            bodies.push(String::new());
        } else if let Some(body) = bodies.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    bodies
}

fn hexdump_c(bytes: &[u8]) -> String {
    let output = run(Command::new("hexdump").arg("-C"), bytes);
    common::assert_code(&output, 0);
    common::stdout(&output)
}

#[test]
fn send_dump_holds_the_bytes_each_way_in_hexdump_c_layout() {
    let server = TestServer::start(socketkit::Engine::Async, &["tcp://127.0.0.1:0"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.txt");
    // Repeated lines (hexdump's `*`), a partial last line, bytes that are not printable.
    let mut data = b"binary \x00\x01\x7f\xff and text\n".to_vec();
    data.extend([b'a'; 64]);
    data.extend(b"tail");
    let output = run(
        socketkit().args([
            "send",
            &format!("--dump=hex={}", file.display()),
            &server.endpoint(0).to_string(),
        ]),
        &data,
    );
    common::assert_code(&output, 0);
    let expected = data.to_ascii_uppercase();
    assert_eq!(output.stdout, expected, "stdout is the data alone");
    let text = std::fs::read_to_string(&file).unwrap();
    let chunks = dump::parse(DumpFormat::Hex, &text).unwrap();
    assert_eq!(joined(&chunks, Direction::Sent), data);
    assert_eq!(joined(&chunks, Direction::Received), expected);
    let peer = server.addr().to_string();
    assert!(chunks.iter().all(|c| c.peer == peer), "{text}");
    for (chunk, body) in chunks.iter().zip(bodies(&text)) {
        assert_eq!(body, hexdump_c(&chunk.bytes));
    }
}

#[test]
fn listen_dump_in_text_to_a_file_holds_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dump.txt");
    let spec = format!("--dump=text={}", file.display());
    let (mut listen, endpoint) = start_listen(&[&spec, "-p", "0"]);
    let port = port(&endpoint);
    let stdout = common::drain(listen.child.stdout.take().unwrap());
    listen
        .stdin
        .take()
        .unwrap()
        .write_all(b"reply\tline\n")
        .unwrap();
    let nc = run(
        Command::new("nc").args(["-N", "127.0.0.1", &port]),
        b"# hash\r\n",
    );
    common::assert_code(&nc, 0);
    assert_eq!(listen.wait_exit(), Some(0));
    assert_eq!(stdout.join().unwrap(), b"# hash\r\n");
    let dump = std::fs::read_to_string(&file).unwrap();
    let chunks = dump::parse(DumpFormat::Text, &dump).unwrap();
    assert_eq!(joined(&chunks, Direction::Received), b"# hash\r\n");
    assert_eq!(joined(&chunks, Direction::Sent), b"reply\tline\n");
    assert!(dump.contains("\\x23 hash\\r\\n\n"), "{dump}");
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
fn a_dump_file_that_cannot_be_opened_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("no/such/dir/dump.txt");
    let spec = format!("--dump=hex={}", file.display());
    for args in [
        vec!["send", &spec, "udp://127.0.0.1:9", "x"],
        vec!["client", &spec, "udp://127.0.0.1:9"],
        vec!["listen", &spec, "0"],
    ] {
        let output = run(socketkit().args(&args), b"");
        common::assert_code(&output, 2);
        assert!(common::stderr(&output).contains("dump file"), "{args:?}");
    }
    let output = run(socketkit().args(["send", "--dump", "octal", "9", "x"]), b"");
    common::assert_code(&output, 2);
}

#[test]
fn client_dump_shows_each_datagram() {
    let server = TestServer::start(socketkit::Engine::Async, &["udp://127.0.0.1:0"]);
    let output = run(
        socketkit().args(["client", "--dump", "hex", &server.endpoint(0).to_string()]),
        b"abc\nxyz\n",
    );
    common::assert_code(&output, 0);
    assert_eq!(common::stdout(&output), "ABC\nXYZ\n");
    // The dump on stderr, after any log lines.
    let stderr: String = common::stderr(&output)
        .lines()
        .skip_while(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let chunks = dump::parse(DumpFormat::Hex, &stderr).unwrap();
    let shown: Vec<(Direction, &[u8])> = chunks
        .iter()
        .map(|c| (c.direction, c.bytes.as_slice()))
        .collect();
    assert_eq!(
        shown,
        [
            (Direction::Sent, &b"abc"[..]),
            (Direction::Received, b"ABC"),
            (Direction::Sent, b"xyz"),
            (Direction::Received, b"XYZ"),
        ]
    );
}

#[test]
fn serve_dump_shows_streams_and_datagrams_on_every_engine() {
    for engine in ["async", "threaded", "pool", "sequential"] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dump.txt");
        let mut command = socketkit();
        command.args([
            "serve",
            "-e",
            engine,
            &format!("--dump=hex={}", file.display()),
            "-l",
            "tcp://127.0.0.1:0",
            "-l",
            "udp://127.0.0.1:0",
        ]);
        let mut serve = Spawned::start(command);
        let endpoints = serve.listening(2);
        let data = b"stream \x00\xfe bytes\n".repeat(5);
        let output = run(socketkit().args(["send", &endpoints[0].to_string()]), &data);
        common::assert_code(&output, 0);
        let output = run(
            socketkit().args(["send", &endpoints[1].to_string(), "datagram"]),
            b"",
        );
        common::assert_code(&output, 0);
        serve.signal(nix::sys::signal::Signal::SIGTERM);
        assert_eq!(serve.wait_exit(), Some(0));
        let text = std::fs::read_to_string(&file).unwrap();
        let chunks = dump::parse(DumpFormat::Hex, &text).unwrap();
        let udp: Vec<_> = chunks.iter().filter(|c| c.bytes == b"datagram").collect();
        assert_eq!(udp.len(), 1, "{engine}: {text}");
        let udp_peer = udp[0].peer.clone();
        let stream: Vec<_> = chunks
            .iter()
            .filter(|c| c.peer != udp_peer)
            .cloned()
            .collect();
        assert_eq!(joined(&stream, Direction::Received), data, "{engine}");
        assert_eq!(
            joined(&stream, Direction::Sent),
            data.to_ascii_uppercase(),
            "{engine}"
        );
        for (chunk, body) in chunks.iter().zip(bodies(&text)) {
            assert_eq!(body, hexdump_c(&chunk.bytes), "{engine}");
        }
    }
}

#[test]
fn client_dump_shows_each_record_on_unixpacket() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("unixpacket://{}", dir.path().join("p.sock").display());
    let server = TestServer::start(socketkit::Engine::Async, &[&endpoint]);
    let output = run(
        socketkit().args(["client", "--dump", "text", &server.endpoint(0).to_string()]),
        b"abc\nxyz\n",
    );
    common::assert_code(&output, 0);
    assert_eq!(common::stdout(&output), "ABC\nXYZ\n");
    let stderr: String = common::stderr(&output)
        .lines()
        .skip_while(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let chunks = dump::parse(DumpFormat::Text, &stderr).unwrap();
    assert_eq!(joined(&chunks, Direction::Sent), b"abcxyz");
    assert_eq!(joined(&chunks, Direction::Received), b"ABCXYZ");
}

#[test]
fn listen_on_unix_datagrams_answers_and_its_idle_timeout_exits_5() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.sock");
    let (mut listen, _) = start_listen(&["-i", "1s", &format!("unixgram://{}", path.display())]);
    let printed = lines(listen.child.stdout.take().unwrap());
    let peer = std::os::unix::net::UnixDatagram::bind(dir.path().join("peer.sock")).unwrap();
    peer.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    peer.send_to(b"over unixgram\n", &path).unwrap();
    assert_eq!(
        printed.recv_timeout(SAFETY_TIMEOUT).unwrap(),
        "over unixgram"
    );
    let mut stdin = listen.stdin.take().unwrap();
    stdin.write_all(b"answered\n").unwrap();
    let mut buf = [0u8; 64];
    let n = peer.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"answered\n");
    // Nothing more for -i: exit 5, one line, the socket file removed.
    assert_eq!(listen.wait_exit(), Some(5));
    listen.wait_for_line("idle time-out");
    assert!(!path.exists());
}
