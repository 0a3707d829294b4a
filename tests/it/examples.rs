//! The programs in `examples/`, run as programs: the slides' clients and servers in Rust
//! talk to the slides' Python programs in `tests/peers/` (and to each other), and the
//! `reverse_handler` framework example serves `socketkit send`.
//!
//! `cargo test` builds the examples into `target/debug/examples/`, but `cargo test --test it`
//! does not, and a binary left from an earlier build may be stale; so the first test to need
//! them runs `cargo build --examples` (a no-op when they are up to date). Servers announce
//! their port on stdout; the tests wait for that line, never sleep.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use wait_timeout::ChildExt;

use crate::common::{self, SAFETY_TIMEOUT};

/// Every example but bench_report (the multicast pair needs a network namespace and is run in
/// tests/it/multicast.rs).
const EXAMPLES: [&str; 11] = [
    "tcp_client",
    "tcp_server_sequential",
    "tcp_server_threaded",
    "udp_client",
    "udp_server",
    "reverse_handler",
    "message_boundaries",
    "seqpacket",
    "ping", // run in tests/it/ping.rs (it needs a namespace)
    "multicast_receiver",
    "multicast_sender",
];

/// Sentences and Python's `str.upper()` of them (Rust's `to_uppercase` agrees: see interop).
const SENTENCES: [(&str, &str); 3] = [
    ("hello world", "HELLO WORLD"),
    ("straße", "STRASSE"),
    ("ǆemal ﬁx café", "ǄEMAL FIX CAFÉ"),
];

/// The prompt of the slides' `input()`.
const PROMPT: &str = "Input a lowercase sentence:";

/// How long building the examples may take (they share the already built library).
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);

/// `target/<profile>/examples`: the test binary itself is in `target/<profile>/deps`.
fn examples_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps");
    profile_dir.join("examples")
}

/// Builds the examples once per test run, in the profile and target directory of this test
/// binary, and returns their directory.
fn examples() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = examples_dir();
        let profile_dir = dir.parent().unwrap();
        let profile = match profile_dir.file_name().unwrap().to_str().unwrap() {
            "debug" => "dev",
            other => other,
        };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command
            .args(["build", "--examples", "--profile", profile])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // Without a --target, the profile directory sits right in the target directory, which
        // cargo marks with CACHEDIR.TAG.
        let target_dir = profile_dir.parent().unwrap();
        if target_dir.join("CACHEDIR.TAG").exists() {
            command.arg("--target-dir").arg(target_dir);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cargo");
        let stderr = child.stderr.take().unwrap();
        let log = std::thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let status = match child.wait_timeout(BUILD_TIMEOUT).unwrap() {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{command:?} did not finish in {BUILD_TIMEOUT:?}");
            }
        };
        let log = log.join().unwrap();
        assert!(status.success(), "{command:?} failed:\n{log}");
        dir
    })
}

/// An example program (built first, once per run).
pub(crate) fn example(name: &str) -> Command {
    let path = examples().join(name);
    assert!(path.is_file(), "{} was not built", path.display());
    Command::new(path)
}

/// `python3` running a peer program, in UTF-8 mode whatever the locale (argv and stdout).
fn python(peer: &str) -> Command {
    let mut command = Command::new("python3");
    command
        .arg(common::peer(peer))
        .env("PYTHONUTF8", "1")
        .env("PYTHONIOENCODING", "utf-8")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

/// Runs a short-lived program with `stdin`, bounded, and returns its stdout; panics, with its
/// stderr, unless it exits with 0.
#[track_caller]
fn run(command: Command, stdin: &str) -> String {
    let what = format!("{command:?}");
    let output: Output = assert_cmd::Command::from_std(command)
        .write_stdin(stdin.as_bytes().to_vec())
        .timeout(SAFETY_TIMEOUT)
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{what} exited with {}; stdout {:?}, stderr {:?}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("stdout is UTF-8")
}

/// A server process that prints one ready line on stdout; killed when dropped.
struct ServerProcess {
    child: Child,
    /// The ready line, without its newline.
    ready: String,
}

impl ServerProcess {
    /// Starts `command` and waits for its first stdout line, which must start with `prefix`.
    fn start(mut command: Command, prefix: &str) -> ServerProcess {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        // The guard exists before the first wait, so a failure below still kills the child.
        let mut server = ServerProcess {
            child,
            ready: String::new(),
        };
        let line = common::first_stdout_line(&mut server.child, &format!("{command:?}"));
        assert!(
            line.starts_with(prefix) && line.ends_with('\n'),
            "{command:?}: ready line {line:?} should start with {prefix:?}"
        );
        server.ready = line.trim_end().to_string();
        server
    }

    /// A slides' server (Rust or Python) on an ephemeral port: it prints its port.
    fn slides(command: Command) -> ServerProcess {
        ServerProcess::start(command, "The server is ready to receive on port ")
    }

    /// The port of a slides' server.
    fn port(&self) -> u16 {
        self.ready
            .rsplit(' ')
            .next()
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {:?}", self.ready))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Rust example server on an ephemeral port.
fn rust_server(name: &str) -> ServerProcess {
    let mut command = example(name);
    command.arg("0");
    ServerProcess::slides(command)
}

/// A Python peer server on an ephemeral port.
fn python_server(peer: &str) -> ServerProcess {
    let mut command = python(peer);
    command.arg("0");
    ServerProcess::slides(command)
}

/// A Python peer client: `PEER 127.0.0.1 PORT SENTENCE`; returns its stdout.
fn python_client(peer: &str, port: u16, sentence: &str) -> String {
    let mut command = python(peer);
    command.args(["127.0.0.1", &port.to_string(), sentence]);
    run(command, "")
}

/// A Rust example client: `NAME 127.0.0.1 PORT`, the sentence typed on stdin.
fn rust_client(name: &str, port: u16, sentence: &str) -> String {
    let mut command = example(name);
    command.args(["127.0.0.1", &port.to_string()]);
    run(command, &format!("{sentence}\n"))
}

#[test]
fn every_example_was_built() {
    let dir = examples();
    for name in EXAMPLES {
        let path = dir.join(name);
        let metadata =
            std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        use std::os::unix::fs::PermissionsExt;
        assert!(
            metadata.is_file() && metadata.permissions().mode() & 0o111 != 0,
            "{} is not an executable",
            path.display()
        );
    }
    // And no example was forgotten in this list (bench_report needs the `plot` feature and is
    // run by scripts/bench.sh instead).
    let sources = std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "rs"))
        .filter(|path| !path.ends_with("bench_report.rs"))
        .count();
    assert_eq!(
        sources,
        EXAMPLES.len(),
        "examples/ has programs not tested here"
    );
}

#[test]
fn rust_tcp_servers_serve_the_python_tcp_client() {
    for name in ["tcp_server_sequential", "tcp_server_threaded"] {
        let server = rust_server(name);
        for (sentence, upper) in SENTENCES {
            assert_eq!(
                python_client("tcp_client.py", server.port(), sentence),
                format!("From Server: {upper}\n"),
                "{name} {sentence:?}"
            );
        }
    }
}

#[test]
fn rust_udp_server_serves_the_python_udp_client() {
    let server = rust_server("udp_server");
    for (sentence, upper) in SENTENCES {
        assert_eq!(
            python_client("udp_client.py", server.port(), sentence),
            format!("From Server: {upper}\n"),
            "{sentence:?}"
        );
    }
}

#[test]
fn rust_tcp_client_talks_to_the_python_tcp_servers() {
    for peer in ["tcp_server_sequential.py", "tcp_server_threaded.py"] {
        let server = python_server(peer);
        for (sentence, upper) in SENTENCES {
            assert_eq!(
                rust_client("tcp_client", server.port(), sentence),
                format!("{PROMPT}From Server: {upper}\n"),
                "{peer} {sentence:?}"
            );
        }
    }
}

#[test]
fn rust_udp_client_talks_to_the_python_udp_server() {
    let server = python_server("udp_server.py");
    for (sentence, upper) in SENTENCES {
        assert_eq!(
            rust_client("udp_client", server.port(), sentence),
            format!("{PROMPT}From Server: {upper}\n"),
            "{sentence:?}"
        );
    }
}

#[test]
fn rust_clients_talk_to_rust_servers() {
    for (client, name) in [
        ("tcp_client", "tcp_server_sequential"),
        ("tcp_client", "tcp_server_threaded"),
        ("udp_client", "udp_server"),
    ] {
        let server = rust_server(name);
        // Several clients in turn: the server goes back to waiting after each one.
        for (sentence, upper) in SENTENCES {
            assert_eq!(
                rust_client(client, server.port(), sentence),
                format!("{PROMPT}From Server: {upper}\n"),
                "{client} to {name}, {sentence:?}"
            );
        }
    }
}

#[test]
fn rust_client_strips_a_crlf_line_ending() {
    let server = rust_server("udp_server");
    let mut command = example("udp_client");
    command.args(["127.0.0.1", &server.port().to_string()]);
    assert_eq!(
        run(command, "windows line\r\n"),
        format!("{PROMPT}From Server: WINDOWS LINE\n")
    );
}

/// `reverse_handler ENDPOINT`, once it has said where it serves.
fn reverse_handler(endpoint: &str) -> (ServerProcess, String) {
    let mut command = example("reverse_handler");
    command.arg(endpoint);
    let server = ServerProcess::start(command, "reversing lines on ");
    let endpoint = server.ready["reversing lines on ".len()..].to_string();
    (server, endpoint)
}

/// `socketkit send ENDPOINT` with `stdin` as the message.
fn socketkit_send(endpoint: &str, stdin: &str) -> String {
    let mut command = common::socketkit();
    command.env_remove("RUST_LOG").args(["send", endpoint]);
    run(command, stdin)
}

#[test]
fn reverse_handler_reverses_each_line_over_tcp() {
    let (_server, endpoint) = reverse_handler("tcp://127.0.0.1:0");
    assert!(
        endpoint.starts_with("tcp://127.0.0.1:") && !endpoint.ends_with(":0"),
        "it names the port it got: {endpoint:?}"
    );
    assert_eq!(
        socketkit_send(&endpoint, "hello\nworld\nstraße\n"),
        "olleh\ndlrow\neßarts\n"
    );
    // A last line without its newline is still a line; an empty line stays empty.
    assert_eq!(socketkit_send(&endpoint, "ab\n\ncd"), "ba\n\ndc\n");
}

#[test]
fn reverse_handler_serves_concurrent_connections() {
    let (_server, endpoint) = reverse_handler("tcp://127.0.0.1:0");
    // A connection that stays open holds one handler; the threaded engine serves others.
    let addr = endpoint
        .parse::<socketkit::Endpoint>()
        .unwrap()
        .socket_addrs()
        .unwrap()[0];
    let _held = std::net::TcpStream::connect(addr).unwrap();
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let endpoint = endpoint.clone();
            std::thread::spawn(move || socketkit_send(&endpoint, &format!("client {i}\n")))
        })
        .collect();
    for (i, client) in clients.into_iter().enumerate() {
        assert_eq!(client.join().unwrap(), format!("{i} tneilc\n"));
    }
}

#[test]
fn reverse_handler_reverses_each_line_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reverse.sock");
    let (server, endpoint) = reverse_handler(&format!("unix://{}", path.display()));
    assert_eq!(endpoint, format!("unix://{}", path.display()));
    assert_eq!(socketkit_send(&endpoint, "abc\nxyz\n"), "cba\nzyx\n");
    drop(server); // killed before its directory goes away
}

#[test]
fn seqpacket_example_serves_python_records_and_its_client_talks_to_socketkit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upper.sock");
    let path = path.to_str().unwrap();
    let mut command = example("seqpacket");
    command.args(["server", path]);
    let _server = ServerProcess::start(command, "The server is ready to receive on ");
    // Python's SOCK_SEQPACKET client sends three records back to back: three replies.
    let mut python = python("seqpacket_client.py");
    python.args([path, "hello", "wor", "ld"]);
    let hex: Vec<String> = ["HELLO", "WOR", "LD"]
        .iter()
        .map(|r| r.bytes().map(|b| format!("{b:02x}")).collect())
        .collect();
    assert_eq!(
        run(python, ""),
        format!("{}\n{}\n{}\neof\n", hex[0], hex[1], hex[2])
    );

    let server = common::TestServer::start(
        socketkit::Engine::Threaded,
        &["unixpacket://{dir}/socketkit.sock"],
    );
    let mut client = example("seqpacket");
    let socketkit_path = server
        .endpoint(0)
        .path()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    client.args(["client", &socketkit_path, "hello", "stra\u{df}e"]);
    assert_eq!(
        run(client, ""),
        "From Server: HELLO\nFrom Server: STRASSE\n"
    );
}
