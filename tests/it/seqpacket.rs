//! `unixpacket://` (SOCK_SEQPACKET): records kept whole on every engine, with Python's socket
//! module as the peer; the CLI's send, client and bench on it; and its refusals.

use std::process::Command;

use socketkit::{Engine, Server};

use crate::common::{self, SAFETY_TIMEOUT, TestServer, assert_code, stderr, stdout};

/// Runs the Python SEQPACKET peer against `path` with these records; its stdout lines.
fn python(path: &str, records: &[&str]) -> Vec<String> {
    let mut command = Command::new("python3");
    command
        .arg(common::peer("seqpacket_client.py"))
        .arg(path)
        .args(records)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let output = common::run_peer(&mut command, b"");
    assert!(
        output.status.success(),
        "python peer failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout(&output).lines().map(str::to_string).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn path_of(server: &TestServer) -> String {
    server
        .endpoint(0)
        .path()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn every_engine_answers_python_seqpacket_records_one_by_one() {
    for engine in Engine::ALL {
        let server = TestServer::start(engine, &["unixpacket://{dir}/p.sock"]);
        assert_eq!(
            server.endpoint(0).to_string().split("://").next(),
            Some("unixpacket")
        );
        // Sent back to back: a byte stream would merge them, and a stream session would keep
        // the cut character "\xc3" for the next read. Each record gets its own reply, whole.
        let big = "@60000";
        let lines = python(
            &path_of(&server),
            &["hello", "wor", "ld\u{e9}", "stra\u{df}e", big],
        );
        let expected = [
            hex(b"HELLO"),
            hex(b"WOR"),
            hex("LD\u{c9}".as_bytes()),
            hex(b"STRASSE"),
            hex(&[b'X'; 60000]),
            "eof".to_string(),
        ];
        assert_eq!(lines, expected, "{engine}");
    }
}

#[test]
fn every_engine_closes_only_the_connection_of_an_oversize_record_unanswered() {
    for engine in Engine::ALL {
        let server = TestServer::start(engine, &["unixpacket://{dir}/p.sock"]);
        let path = path_of(&server);
        // Another connection, open and served before and after (the sequential engine serves
        // one connection at a time, so it waits its turn there instead).
        let other = (engine != Engine::Sequential).then(|| {
            let socket = connect(&path);
            assert_eq!(round_trip(&socket, b"before"), b"BEFORE");
            socket
        });
        // 70,000 bytes: over the 65,527-byte receive buffer. No reply, cut or whole. (A record
        // queued behind it would be unread at the close, and the peer's read a reset.)
        let lines = python(&path, &["ok", "@70000"]);
        assert_eq!(lines.len(), 2, "{engine}: {lines:?}");
        assert_eq!(lines[0], hex(b"OK"), "{engine}");
        assert!(
            lines[1] == "eof" || lines[1] == "reset",
            "{engine}: {lines:?}"
        );
        let other = other.unwrap_or_else(|| connect(&path));
        assert_eq!(round_trip(&other, b"after"), b"AFTER", "{engine}");
    }
}

fn connect(path: &str) -> socket2::Socket {
    let socket =
        socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None).unwrap();
    socket.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    socket
        .connect(&socket2::SockAddr::unix(path).unwrap())
        .unwrap();
    socket
}

fn round_trip(socket: &socket2::Socket, record: &[u8]) -> Vec<u8> {
    use std::io::Read;
    socket.send(record).unwrap();
    let mut buf = vec![0u8; 1024];
    let n = (&*socket).read(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn send_client_and_bench_speak_unixpacket() {
    let server = TestServer::start(Engine::Async, &["unixpacket://{dir}/p.sock"]);
    let endpoint = server.endpoint(0).to_string();

    let output = common::run_peer(socketkit().args(["send", &endpoint, "hello"]), b"");
    assert_code(&output, 0);
    assert_eq!(stdout(&output), "HELLO");

    // One record per line, each reply record on a line; the empty line is not sent.
    let output = common::run_peer(socketkit().args(["client", &endpoint]), b"one\n\ntwo\r\n");
    assert_code(&output, 0);
    assert_eq!(stdout(&output), "ONE\nTWO\n");

    let output = common::run_peer(
        socketkit().args(["bench", &endpoint, "-n", "300", "-c", "3", "--json"]),
        b"",
    );
    assert_code(&output, 0);
    let report: serde_json::Value =
        serde_json::from_str(stdout(&output).lines().last().unwrap()).unwrap();
    assert_eq!(report["ok"], 300, "{report}");
}

fn socketkit() -> Command {
    common::socketkit()
}

#[test]
fn a_framing_on_unixpacket_is_refused_as_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("unixpacket://{}/p.sock", dir.path().display());
    for args in [
        vec!["serve", "--framing", "line", "-l", &endpoint],
        vec!["send", "--framing", "length", &endpoint, "x"],
        vec!["client", "--framing", "line", &endpoint],
        vec!["bench", "--framing", "line", &endpoint, "-n", "1"],
    ] {
        let output = common::run_peer(socketkit().args(&args), b"");
        assert_code(&output, 2);
        let err = stderr(&output);
        assert!(err.contains("keeps message boundaries"), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    // In the library too, with the handlers whose buffered reader and writer would merge
    // records.
    let err = Server::builder()
        .listen(endpoint.parse().unwrap())
        .framing(socketkit::codec::Framing::Line)
        .bind()
        .unwrap_err();
    assert_eq!(err.kind(), socketkit::ErrorKind::Usage, "{err}");
}

#[test]
fn a_unixpacket_path_that_is_a_stream_socket_or_a_regular_file_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("stream.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&stream).unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"precious").unwrap();
    let stream = format!("unixpacket://{}", stream.display());
    let file = format!("unixpacket://{}", file.display());
    let cases = [
        (
            vec!["send", stream.as_str(), "x"],
            2,
            "is a stream socket (unix://",
        ),
        (
            vec!["serve", "-l", stream.as_str()],
            7,
            "is a stream socket (unix://",
        ),
        (
            vec!["send", file.as_str(), "x"],
            4,
            "is not a socket but a regular file",
        ),
        (
            vec!["serve", "-l", file.as_str()],
            7,
            "is not a socket but a regular file",
        ),
    ];
    for (args, code, says) in cases {
        let output = common::run_peer(socketkit().args(&args), b"");
        assert_code(&output, code);
        let err = stderr(&output);
        assert!(err.contains(says), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
    assert_eq!(std::fs::read(dir.path().join("file")).unwrap(), b"precious");
}

/// `client`'s report counts the records sent even when the server closes while the input is
/// still open (its input thread then still waits for a line): the count was 0 then.
#[test]
fn the_client_report_counts_what_was_sent_when_the_server_closes_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.sock");
    let server = TestServer::with(
        Server::builder()
            .engine(Engine::Async)
            .idle_timeout(std::time::Duration::from_millis(300))
            .listen(format!("unixpacket://{}", path.display()).parse().unwrap()),
    );
    let (reader, mut writer) = std::io::pipe().unwrap();
    use std::io::Write;
    writer.write_all(b"hello\n").unwrap(); // and the input stays open
    let mut output = Vec::new();
    let report = socketkit::client::talk(
        server.endpoint(0),
        std::io::BufReader::new(reader),
        &mut output,
        None,
        true,
        &socketkit::client::SendOptions::default(),
    )
    .expect("talk");
    assert_eq!(output, b"HELLO\n");
    assert_eq!(report.sent, 5, "{report:?}");
    drop(writer);
}
