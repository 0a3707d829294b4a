//! Linux abstract Unix sockets, written `unix://@name` and `unixgram://@name` as socat
//! (`ABSTRACT-LISTEN:name`), systemd (`ListenStream=@name`) and Python (`"\0name"`) know them:
//! served on every engine, answered by socketkit, Python and socat, and never a file.

use std::io::{BufRead, BufReader, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::process::{Command, Stdio};

use nix::sys::signal::Signal::SIGTERM;
use socketkit::{Endpoint, Engine};

use crate::common::{
    Spawned, TestServer, assert_code, exchange, run_peer, socketkit, stderr, stdout,
};

/// A name no other test (nor another run of this one) uses at the same time.
fn unique(what: &str, engine: Engine) -> String {
    format!(
        "socketkit-test-{}-{what}-{}",
        std::process::id(),
        engine.name()
    )
}

/// `socketkit ARGS` with the caller's RUST_LOG removed, run in `dir`.
fn socketkit_in(dir: &std::path::Path, args: &[&str]) -> Command {
    let mut command = socketkit();
    command.env_remove("RUST_LOG").current_dir(dir).args(args);
    command
}

/// Python's stream client: `connect("\0name")`, send, half-close, read to EOF.
fn python_stream(name: &str, message: &str) -> String {
    let script = "import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect('\\0' + sys.argv[1])
s.sendall(sys.argv[2].encode())
s.shutdown(socket.SHUT_WR)
reply = b''
while chunk := s.recv(4096):
    reply += chunk
sys.stdout.write(reply.decode())";
    let output = run_peer(
        Command::new("python3").args(["-c", script, name, message]),
        b"",
    );
    assert_code(&output, 0);
    stdout(&output)
}

/// Python's datagram client: binds an abstract name of its own (or the server could not
/// reply), `sendto("\0name")`, one reply.
fn python_datagram(name: &str, own: &str, message: &str) -> String {
    let script = "import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.settimeout(10)
s.bind('\\0' + sys.argv[2])
s.sendto(sys.argv[3].encode(), '\\0' + sys.argv[1])
sys.stdout.write(s.recv(4096).decode())";
    let output = run_peer(
        Command::new("python3").args(["-c", script, name, own, message]),
        b"",
    );
    assert_code(&output, 0);
    stdout(&output)
}

/// socat's stream client: stdin to `ABSTRACT-CONNECT:name`; the server's close ends it.
fn socat_stream(name: &str, message: &str) -> String {
    let output = run_peer(
        Command::new("socat").args(["-", &format!("ABSTRACT-CONNECT:{name}")]),
        message.as_bytes(),
    );
    assert_code(&output, 0);
    stdout(&output)
}

/// socat's datagram client, bound to the abstract name `own`: one line out, the reply line
/// back (awaited, not timed: socat would otherwise stop half a second after stdin's end).
fn socat_datagram(name: &str, own: &str, line: &str) -> String {
    let mut child = Command::new("socat")
        .args(["-", &format!("ABSTRACT-SENDTO:{name},bind={own}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn socat");
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{line}").unwrap();
    let reply = crate::common::first_stdout_line(&mut child, "socat");
    let _ = child.kill();
    let _ = child.wait();
    reply
}

/// Whether `name` is free in the abstract namespace: binding it works.
fn is_free(name: &str) -> bool {
    UnixListener::bind_addr(&SocketAddr::from_abstract_name(name).unwrap()).is_ok()
}

#[test]
fn every_engine_serves_abstract_sockets_to_socketkit_python_and_socat_and_makes_no_file() {
    for engine in Engine::ALL {
        let stream = unique("stream", engine);
        let gram = unique("gram", engine);
        let dir = tempfile::tempdir().unwrap();
        let (stream_url, gram_url) = (format!("unix://@{stream}"), format!("unixgram://@{gram}"));
        let mut server = Spawned::start(socketkit_in(
            dir.path(),
            &[
                "serve",
                "-v",
                "-e",
                engine.name(),
                "-l",
                &stream_url,
                "-l",
                &gram_url,
            ],
        ));
        let endpoints = server.listening(2);
        assert_eq!(
            endpoints
                .iter()
                .map(Endpoint::to_string)
                .collect::<Vec<_>>(),
            [stream_url.clone(), gram_url.clone()],
            "{engine}: the listening lines show @name"
        );
        assert_eq!(endpoints[0].abstract_name(), Some(stream.as_bytes()));

        // socketkit's own clients; -v names the server as @name.
        let sent = run_peer(
            &mut socketkit_in(dir.path(), &["send", "-v", &stream_url, "hi"]),
            b"",
        );
        assert_code(&sent, 0);
        assert_eq!(stdout(&sent), "HI", "{engine}");
        assert!(
            stderr(&sent).contains(&format!("to @{stream}")),
            "{engine}: {}",
            stderr(&sent)
        );
        let sent = run_peer(
            &mut socketkit_in(dir.path(), &["send", &gram_url, "hi"]),
            b"",
        );
        assert_code(&sent, 0);
        assert_eq!(stdout(&sent), "HI", "{engine}");
        // The datagram client's own abstract name shows as @name in the server's -v log.
        server.wait_for_line("peer=@socketkit-client-");

        // Python and socat, as their users write abstract names.
        assert_eq!(python_stream(&stream, "py"), "PY", "{engine}");
        let own = unique("python-client", engine);
        assert_eq!(python_datagram(&gram, &own, "py"), "PY", "{engine}");
        server.wait_for_line(&format!("peer=@{own}"));
        assert_eq!(socat_stream(&stream, "socat\n"), "SOCAT\n", "{engine}");
        let own = unique("socat-client", engine);
        assert_eq!(socat_datagram(&gram, &own, "socat"), "SOCAT\n", "{engine}");

        // A second server on the same name is refused like a port in use.
        for url in [&stream_url, &gram_url] {
            let second = run_peer(&mut socketkit_in(dir.path(), &["serve", "-l", url]), b"");
            assert_code(&second, 7);
            assert!(
                stderr(&second).contains(&format!("cannot bind {url}")),
                "{second:?}"
            );
        }

        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(files.is_empty(), "{engine}: files appeared: {files:?}");
        server.signal(SIGTERM);
        assert_eq!(server.wait_exit(), Some(0), "{engine}: {:#?}", server.seen);
        assert!(
            is_free(&stream) && is_free(&gram),
            "{engine}: the names go with the server"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

#[test]
fn every_engine_answers_on_abstract_endpoints_in_the_library() {
    for engine in Engine::ALL {
        let stream = format!("unix://@{}", unique("lib-stream", engine));
        let gram = format!("unixgram://@{}", unique("lib-gram", engine));
        let server = TestServer::start(engine, &[&stream, &gram]);
        assert_eq!(server.endpoint(0).to_string(), stream);
        assert_eq!(server.endpoint(1).to_string(), gram);
        for index in 0..2 {
            assert_eq!(
                exchange(server.endpoint(index), b"abc"),
                b"ABC",
                "{engine} {}",
                server.endpoint(index)
            );
        }
        server.stop().unwrap();
    }
}

#[test]
fn a_file_whose_name_starts_with_an_at_sign_has_a_directory_in_front() {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("@{}", unique("file", Engine::ALL[0]));
    let url = format!("unix://./{name}");
    let mut server = Spawned::start(socketkit_in(dir.path(), &["serve", "-l", &url]));
    assert_eq!(server.listening(1)[0].to_string(), url);
    let file = dir.path().join(&name);
    assert!(
        file.exists(),
        "the socket file {name} is in the current directory"
    );
    let sent = run_peer(&mut socketkit_in(dir.path(), &["send", &url, "hi"]), b"");
    assert_code(&sent, 0);
    assert_eq!(stdout(&sent), "HI");
    // The same text without "./" is the abstract name, where nothing listens.
    let abstract_url = format!("unix://{name}");
    let refused = run_peer(
        &mut socketkit_in(dir.path(), &["send", &abstract_url, "hi"]),
        b"",
    );
    assert_code(&refused, 4);
    server.signal(SIGTERM);
    assert_eq!(server.wait_exit(), Some(0), "{:#?}", server.seen);
    assert!(!file.exists(), "the socket file is removed on exit");
}

#[test]
fn send_talks_to_an_abstract_server_that_socat_listens_on() {
    // The client side alone, against a server that is not socketkit.
    let name = unique("socat-server", Engine::ALL[0]);
    let mut socat = Command::new("socat")
        .args([
            "-d",
            "-d",
            &format!("ABSTRACT-LISTEN:{name},fork"),
            "SYSTEM:tr a-z A-Z",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn socat");
    // socat says "listening on" once the socket is bound.
    let mut lines = BufReader::new(socat.stderr.take().unwrap()).lines();
    let ready = lines.find(|line| line.as_ref().is_ok_and(|l| l.contains("listening on")));
    assert!(ready.is_some(), "socat did not start listening");
    let dir = tempfile::tempdir().unwrap();
    let sent = run_peer(
        &mut socketkit_in(dir.path(), &["send", &format!("unix://@{name}"), "hi"]),
        b"",
    );
    let _ = socat.kill();
    let _ = socat.wait();
    assert_code(&sent, 0);
    assert_eq!(stdout(&sent), "HI");
}

#[test]
fn help_names_the_abstract_form() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["serve", "send"] {
        let help = run_peer(&mut socketkit_in(dir.path(), &[command, "--help"]), b"");
        assert_code(&help, 0);
        assert!(
            stdout(&help).contains("unix://@name and unixgram://@name are Linux abstract"),
            "{command} --help: {}",
            stdout(&help)
        );
    }
}
