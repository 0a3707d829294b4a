//! The `socketkit` binary driven as a user drives it: arguments in, bytes on stdout, lines on
//! stderr, an exit code out. Servers are child processes; the tests synchronise on their stderr
//! lines, on EOFs and on bound addresses, never on fixed sleeps.

use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal::{SIGHUP, SIGINT, SIGTERM};
use socketkit::{Endpoint, Engine, Host};
use wait_timeout::ChildExt;

use crate::common::{SAFETY_TIMEOUT, Spawned, assert_code, socketkit, stderr, stdout};

/// A bound on every one-shot command, so a bug fails the test instead of hanging it. Generous:
/// the machine may be loaded. Never used to synchronise.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// Every engine's command-line name: async and sequential, and whatever else the library has.
fn engines() -> impl Iterator<Item = &'static str> {
    Engine::ALL.into_iter().map(Engine::name)
}

/// The binary, with the caller's RUST_LOG removed so log output is what the flags say.
fn command() -> std::process::Command {
    let mut command = socketkit();
    command.env_remove("RUST_LOG");
    command
}

/// Runs `socketkit ARGS` to completion with `stdin` as its input.
fn run_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    assert_cmd::Command::from_std(command())
        .args(args)
        .write_stdin(stdin.to_vec())
        .timeout(RUN_TIMEOUT)
        .output()
        .expect("run socketkit")
}

/// Runs `socketkit ARGS` to completion with an empty stdin.
fn run(args: &[&str]) -> Output {
    run_with_stdin(args, b"")
}

/// Asserts that a run succeeded with exactly `expected` on stdout.
#[track_caller]
fn assert_reply(output: &Output, expected: &str) {
    assert_code(output, 0);
    assert_eq!(stdout(output), expected, "stderr: {:?}", stderr(output));
}

/// Asserts the exit code, an empty stdout, and one error line on stderr that contains every
/// needle (case-insensitive), and returns that line.
#[track_caller]
fn assert_error(output: &Output, code: i32, needles: &[&str]) -> String {
    assert_code(output, code);
    assert!(output.stdout.is_empty(), "stdout: {:?}", stdout(output));
    let text = stderr(output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected one stderr line, got {lines:#?}");
    let line = lines[0];
    assert!(
        line.starts_with("socketkit: error: "),
        "the error line should start with 'socketkit: error: ': {line:?}"
    );
    for needle in needles {
        assert!(
            line.to_lowercase().contains(&needle.to_lowercase()),
            "{line:?} should mention {needle:?}"
        );
    }
    line.to_string()
}

/// Asserts a usage error (exit 2): one stderr line, `socketkit: error: ...`, that ends with a
/// `--help` hint and contains every needle. Returns the line.
#[track_caller]
fn assert_usage_error(output: &Output, needles: &[&str]) -> String {
    let line = assert_error(output, 2, needles);
    assert!(
        line.contains("try 'socketkit") && line.ends_with(" --help')"),
        "a usage error ends with a --help hint: {line:?}"
    );
    line
}

/// `socketkit serve` as a child process, with the endpoints its stderr announced.
struct Served {
    process: Spawned,
    endpoints: Vec<Endpoint>,
    // Dropped after `process` (fields drop in order): the server is killed before its socket
    // directory goes away.
    _dir: tempfile::TempDir,
}

impl Served {
    /// `socketkit serve -e ENGINE -l L... EXTRA...`, waiting for one listening line per
    /// listener. `{dir}` in a listener is replaced by a fresh temporary directory.
    fn start(engine: &str, listen: &[&str], extra: &[&str]) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let mut command = command();
        command.args(["serve", "-e", engine]).args(extra);
        for text in listen {
            command
                .arg("-l")
                .arg(text.replace("{dir}", dir.path().to_str().unwrap()));
        }
        let mut process = Spawned::start(command);
        let endpoints = process.listening(listen.len());
        Served {
            process,
            endpoints,
            _dir: dir,
        }
    }

    /// The socket address of the first (TCP or UDP) endpoint.
    fn addr(&self) -> SocketAddr {
        self.endpoints[0].socket_addrs().unwrap()[0]
    }

    /// Stops the server with SIGTERM and asserts that it exits with 0.
    fn stop(mut self) {
        self.process.signal(SIGTERM);
        assert_eq!(
            self.process.wait_exit(),
            Some(0),
            "stderr {:#?}",
            self.process.seen
        );
    }
}

/// A child with piped stdout and stderr that the test reads itself (all of it, after the
/// exit), killed on drop.
struct Plain(std::process::Child);

impl Plain {
    fn start(command: &mut std::process::Command) -> Plain {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn socketkit");
        Plain(child)
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// The exit code, failing the test if the child is still running after the safety time-out.
    #[track_caller]
    fn wait_exit(&mut self) -> Option<i32> {
        match self.0.wait_timeout(SAFETY_TIMEOUT).unwrap() {
            Some(status) => status.code(),
            None => panic!("socketkit did not exit within {SAFETY_TIMEOUT:?}"),
        }
    }
}

impl Drop for Plain {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `socketkit send ENDPOINT MESSAGE`.
fn send(endpoint: &Endpoint, message: &str) -> Output {
    run(&["send", &endpoint.to_string(), message])
}

/// A TCP connection with the safety time-out on reads and writes.
fn connect(addr: SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).expect("connect");
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    conn.set_write_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    conn
}

/// Reads exactly `n` bytes: the part of a reply that must already be on its way.
fn read_exactly(conn: &mut TcpStream, n: usize) -> String {
    let mut buf = vec![0u8; n];
    conn.read_exact(&mut buf).expect("the reply so far");
    String::from_utf8(buf).unwrap()
}

/// Polls `ready` until it holds, failing after the safety time-out. For conditions that no
/// event announces (a socket file appearing, a listener being closed); the short pause between
/// tries only keeps the loop from spinning a core.
#[track_caller]
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + SAFETY_TIMEOUT;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until connecting to `addr` is refused: the server has closed its listener. A
/// connection that still gets through (the listener closes just after the stop is logged) is
/// closed at once, without data; one that completed just after the server emptied its listen
/// queue is reset as the listener closes (the connect can see that reset), and also means
/// "not yet".
#[track_caller]
fn wait_until_refused(addr: SocketAddr) {
    wait_until(&format!("a new connection to {addr} is refused"), || {
        match TcpStream::connect_timeout(&addr, SAFETY_TIMEOUT) {
            Err(e) if e.kind() == IoErrorKind::ConnectionRefused => true,
            Err(e) if e.kind() == IoErrorKind::ConnectionReset => false,
            Err(e) => panic!("connecting to {addr}: expected a refusal, got {e}"),
            Ok(_accepted_or_queued) => false,
        }
    })
}

/// A port on 127.0.0.1 that nothing listens on (it was free a moment ago).
fn closed_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn closed_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------------
// Version and help

#[test]
fn version_prints_name_and_version() {
    let output = run(&["--version"]);
    assert_code(&output, 0);
    assert_eq!(stdout(&output).trim_end(), "socketkit 0.1.0");
    assert_eq!(
        stdout(&output),
        format!("socketkit {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn help_lists_the_subcommands_and_every_exit_code() {
    let output = run(&["--help"]);
    assert_code(&output, 0);
    let help = stdout(&output);
    for subcommand in ["serve", "send", "client", "completions"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{subcommand} "))),
            "--help should list the {subcommand} subcommand:\n{help}"
        );
    }
    assert!(help.contains("Exit codes"), "{help}");
    for (code, meaning) in [
        ("0", "success"),
        ("1", "other failure"),
        ("2", "bad usage"),
        ("3", "protocol error"),
        ("4", "connection refused"),
        ("5", "timed out"),
        ("6", "name not found"),
        ("7", "cannot bind"),
        ("130", "second SIGINT"),
    ] {
        assert!(
            help.lines().any(|l| {
                let l = l.trim_start();
                l.starts_with(&format!("{code} ")) && l.contains(meaning)
            }),
            "--help should list exit code {code} ({meaning}):\n{help}"
        );
    }
}

#[test]
fn serve_help_describes_its_options() {
    let output = run(&["serve", "--help"]);
    assert_code(&output, 0);
    let help = stdout(&output);
    for engine in engines() {
        assert!(
            help.contains(engine),
            "serve --help lacks engine {engine}:\n{help}"
        );
    }
    for needle in [
        "--listen",
        "--engine",
        "--grace",
        "--backlog",
        "--idle-timeout",
        "tcp://127.0.0.1:12000",
        "SIGHUP",
        "Exit codes",
    ] {
        assert!(
            help.contains(needle),
            "serve --help lacks {needle:?}:\n{help}"
        );
    }
}

#[test]
fn send_help_describes_its_arguments() {
    let output = run(&["send", "--help"]);
    assert_code(&output, 0);
    let help = stdout(&output);
    for needle in [
        "ENDPOINT",
        "MESSAGE",
        "stdin",
        "--bind",
        "--timeout",
        "unixgram://",
        "Exit codes",
    ] {
        assert!(
            help.contains(needle),
            "send --help lacks {needle:?}:\n{help}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// serve + send on every engine and transport

const ALL_TRANSPORTS: [&str; 4] = [
    "tcp://127.0.0.1:0",
    "udp://127.0.0.1:0",
    "unix://{dir}/stream.sock",
    "unixgram://{dir}/dgram.sock",
];

#[test]
fn send_gets_the_upper_case_from_every_engine_on_every_transport() {
    for engine in engines() {
        let server = Served::start(engine, &ALL_TRANSPORTS, &[]);
        for endpoint in &server.endpoints {
            let output = send(endpoint, "hello, straße");
            assert_reply(&output, "HELLO, STRASSE");
            assert!(
                output.stderr.is_empty(),
                "{engine} {endpoint}: {:?}",
                stderr(&output)
            );
        }
        server.stop();
    }
}

#[test]
fn send_reads_the_message_from_stdin_without_a_message_argument() {
    for engine in engines() {
        let server = Served::start(engine, &ALL_TRANSPORTS, &[]);
        for endpoint in &server.endpoints {
            let output = run_with_stdin(&["send", &endpoint.to_string()], b"from stdin");
            assert_reply(&output, "FROM STDIN");
        }
        server.stop();
    }
}

#[test]
fn send_sends_a_multi_line_stdin_whole_on_streams() {
    let input = "first line\nsecond line, straße\n\nlast line without newline";
    let expected = "FIRST LINE\nSECOND LINE, STRASSE\n\nLAST LINE WITHOUT NEWLINE";
    for engine in engines() {
        let server = Served::start(
            engine,
            &["tcp://127.0.0.1:0", "unix://{dir}/stream.sock"],
            &[],
        );
        for endpoint in &server.endpoints {
            let output = run_with_stdin(&["send", &endpoint.to_string()], input.as_bytes());
            assert_reply(&output, expected);
        }
        server.stop();
    }
}

#[test]
fn send_passes_the_message_through_byte_for_byte() {
    // No newline is added, and whitespace and an empty message survive.
    let server = Served::start("async", &["tcp://127.0.0.1:0", "udp://127.0.0.1:0"], &[]);
    for endpoint in &server.endpoints {
        assert_reply(&send(endpoint, "  spaced out  "), "  SPACED OUT  ");
    }
    assert_reply(&send(&server.endpoints[0], ""), "");
    server.stop();
}

#[test]
fn serve_and_send_work_on_ipv6_loopback() {
    if UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    }
    for engine in engines() {
        let server = Served::start(engine, &["tcp://[::1]:0", "udp://[::1]:0"], &[]);
        for endpoint in &server.endpoints {
            assert!(endpoint.to_string().contains("[::1]:"), "{endpoint}");
            assert_reply(&send(endpoint, "six"), "SIX");
        }
        server.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// What serve prints

#[test]
fn serve_prints_one_listening_line_per_listener_on_stderr() {
    for engine in engines() {
        let mut server = Served::start(engine, &ALL_TRANSPORTS, &[]);
        let lines: Vec<&String> = server
            .process
            .seen
            .iter()
            .filter(|l| l.contains("listening on "))
            .collect();
        assert_eq!(lines.len(), ALL_TRANSPORTS.len(), "{lines:#?}");
        for (line, endpoint) in lines.iter().zip(&server.endpoints) {
            assert_eq!(
                line.as_str(),
                format!("listening on {endpoint} (upper, {engine})")
            );
        }
        // In the order given, with the real ports.
        let schemes: Vec<_> = server
            .endpoints
            .iter()
            .map(|e| e.transport().scheme())
            .collect();
        assert_eq!(schemes, ["tcp", "udp", "unix", "unixgram"]);
        for endpoint in &server.endpoints[..2] {
            let (_, port) = endpoint.host_port().unwrap();
            assert_ne!(port, 0, "{endpoint}: the real port, not 0");
        }
        for endpoint in &server.endpoints[2..] {
            assert!(endpoint.path().unwrap().exists(), "{endpoint}");
        }

        // Nothing at all on stdout: data goes to stdout, and serve has none.
        let mut out = server.process.child.stdout.take().unwrap();
        server.process.signal(SIGTERM);
        assert_eq!(server.process.wait_exit(), Some(0));
        let mut printed = String::new();
        out.read_to_string(&mut printed).unwrap();
        assert_eq!(printed, "", "{engine}: serve wrote to stdout");
        // The socket files are removed on the way out.
        for endpoint in &server.endpoints[2..] {
            assert!(!endpoint.path().unwrap().exists(), "{endpoint} left behind");
        }
    }
}

#[test]
fn quiet_serve_prints_nothing_at_all() {
    for engine in engines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quiet.sock");
        let endpoint: Endpoint = format!("unix://{}", path.display()).parse().unwrap();
        let mut server = Plain::start(command().args([
            "-q",
            "serve",
            "-e",
            engine,
            "-l",
            &endpoint.to_string(),
        ]));
        // No listening line to wait for: wait for the socket we chose to accept connections.
        wait_until(&format!("{} accepts connections", path.display()), || {
            UnixStream::connect(&path).is_ok()
        });
        assert_reply(&send(&endpoint, "shh"), "SHH");
        server.signal(SIGTERM);
        assert_eq!(server.wait_exit(), Some(0), "{engine}");
        let (mut out, mut err) = (String::new(), String::new());
        let child = &mut server.0;
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(err, "", "{engine}: -q should keep stderr empty");
        assert_eq!(out, "", "{engine}");
    }
}

#[test]
fn quiet_still_reports_errors() {
    let endpoint = format!("tcp://127.0.0.1:{}", closed_tcp_port());
    let output = run(&["-q", "send", &endpoint, "x"]);
    assert_error(&output, 4, &["refused"]);
}

#[test]
fn verbose_send_with_bind_logs_its_local_address() {
    let server = Served::start("async", &["tcp://127.0.0.1:0", "udp://127.0.0.1:0"], &[]);
    for endpoint in &server.endpoints {
        let output = run(&[
            "send",
            "--bind",
            "127.0.0.1",
            "-v",
            &endpoint.to_string(),
            "me",
        ]);
        assert_reply(&output, "ME");
        let text = stderr(&output);
        assert!(
            text.lines().any(|l| l.contains("127.0.0.1:")),
            "{endpoint}: -v should log the local address: {text:?}"
        );
    }
    server.stop();
}

#[test]
fn send_bind_with_a_port_sends_from_that_port() {
    let server = Served::start("async", &["udp://127.0.0.1:0"], &[]);
    let port = closed_udp_port();
    let bind = format!("127.0.0.1:{port}");
    let output = run(&[
        "send",
        "--bind",
        &bind,
        "-v",
        &server.endpoints[0].to_string(),
        "p",
    ]);
    assert_reply(&output, "P");
    assert!(stderr(&output).contains(&bind), "{:?}", stderr(&output));
    server.stop();
}

// ---------------------------------------------------------------------------------------------
// Exit codes

#[test]
fn exit_2_for_bad_endpoint_text_naming_the_bad_part() {
    for (text, part) in [
        ("tcp://127.0.0.1:99999", "port"),
        ("tcp://127.0.0.1", "port"),
        ("http://127.0.0.1:80", "scheme"),
        ("tcp://::1:80", "brackets"),
        ("unix://", "path"),
    ] {
        let output = run(&["send", text, "x"]);
        assert_usage_error(&output, &[text, part]);
        let output = run(&["serve", "-l", text]);
        assert_usage_error(&output, &[text, part]);
    }
}

#[test]
fn exit_2_for_other_bad_arguments() {
    for args in [
        &["serve", "-e", "fast"][..],
        &["serve", "--grace", "soon"],
        &["serve", "nosuchservice"],
        &["send", "tcp://127.0.0.1:1", "x", "-w", "soon"],
        &["send", "--bind", "localhost", "tcp://127.0.0.1:1", "x"],
        &["send"],
        &["-q", "-v", "send", "tcp://127.0.0.1:1", "x"],
        &["frobnicate"],
    ] {
        let output = run(args);
        assert_usage_error(&output, &[]);
    }
}

#[test]
fn usage_errors_are_one_line_with_the_commands_help_hint() {
    for (args, needle, hint) in [
        (&["send"][..], "<ENDPOINT>", "socketkit send --help"),
        // clap's tip stays, on the same line.
        (
            &["send", "--tmeout", "3", "tcp://127.0.0.1:1"],
            "similar argument exists: '--timeout'",
            "socketkit send --help",
        ),
        (
            &["-v", "serve", "-e", "fast"],
            "fast",
            "socketkit serve --help",
        ),
        (
            &["bench", "--size", "lots", "tcp://127.0.0.1:1"],
            "not a size",
            "socketkit bench --help",
        ),
        (&["frobnicate"], "frobnicate", "socketkit --help"),
    ] {
        let line = assert_usage_error(&run(args), &[needle]);
        assert!(
            line.contains(&format!("try '{hint}')")),
            "{args:?}: {line:?}"
        );
        assert!(!line.contains("Usage:"), "{line:?}");
    }
}

/// Item 6: one rule per kind of value (time-outs more than 0, counts at least 1, sizes at least
/// 1 byte, each with an upper bound), checked by the parser: one line naming the flag, exit 2,
/// before any socket is opened (a closed port and a busy-looking server are never reached).
#[test]
fn zero_and_out_of_range_values_are_refused_while_parsing() {
    let tcp = format!("tcp://127.0.0.1:{}", closed_tcp_port());
    let udp = format!("udp://127.0.0.1:{}", closed_udp_port());
    let (tcp, udp) = (tcp.as_str(), udp.as_str());
    let cases: &[(&[&str], &str, &str)] = &[
        (&["send", "-w", "0", udp, "x"], "--timeout", "more than 0"),
        (&["send", "-w", "0", tcp, "x"], "--timeout", "more than 0"),
        (&["send", "-w", "0ms", tcp, "x"], "--timeout", "more than 0"),
        (&["client", "-w", "0", tcp], "--timeout", "more than 0"),
        (&["bench", "-w", "0", tcp], "--timeout", "more than 0"),
        (&["bench", "-d", "0", tcp], "--duration", "more than 0"),
        (&["bench", "-c", "0", tcp], "--connections", "at least 1"),
        (
            &["bench", "--pipeline", "0", tcp],
            "--pipeline",
            "at least 1",
        ),
        (&["bench", "-n", "0", tcp], "--requests", "at least 1"),
        (&["bench", "-r", "0", tcp], "--rate", "more than 0"),
        (&["bench", "-r", "nan", tcp], "--rate", "more than 0"),
        (
            &["send", "--max-time", "0", tcp, "x"],
            "--max-time",
            "more than 0",
        ),
        (
            &["send", "--quit-after", "0", tcp, "x"],
            "--quit-after",
            "more than 0",
        ),
        (
            &["resolve", "-w", "0", "localhost"],
            "--timeout",
            "more than 0",
        ),
        (&["serve", "-i", "0"], "--idle-timeout", "more than 0"),
        (
            &["serve", "--message-timeout", "0"],
            "--message-timeout",
            "more than 0",
        ),
        (
            &["serve", "--write-timeout", "0s"],
            "--write-timeout",
            "more than 0",
        ),
        (
            &["send", "-w", "99999999999999999999", tcp, "x"],
            "--timeout",
            "too large: at most 365d",
        ),
        (
            &["serve", "-i", "99999999999999999999s"],
            "--idle-timeout",
            "too large",
        ),
        (&["serve", "--grace", "400d"], "--grace", "too large"),
        (&["serve", "-m", "0"], "--max-connections", "at least 1"),
        (&["serve", "--workers", "0"], "--workers", "at least 1"),
        (&["serve", "--backlog", "0"], "--backlog", "at least 1"),
        (
            &["serve", "-m", "99999999999999999999"],
            "--max-connections",
            "too large",
        ),
        (
            &["serve", "--datagram-rate", "5000000000"],
            "--datagram-rate",
            "too large",
        ),
        (&["serve", "--max-line", "0"], "--max-line", "at least 1"),
        (
            &["send", "--max-frame", "2G", tcp],
            "--max-frame",
            "too large: at most 1G",
        ),
        (
            &["bench", "--size", "10G", tcp],
            "--size",
            "too large: at most 1G",
        ),
        (&["bench", "--size", "0", tcp], "--size", "at least 1"),
        (
            &["bench", "--stream-bytes", "0", tcp],
            "--stream-bytes",
            "at least 1",
        ),
    ];
    for (args, flag, reason) in cases {
        let output = run(args);
        let line = assert_usage_error(&output, &["invalid value", flag, reason]);
        assert!(line.len() < 250, "one short line: {line:?}");
    }
}

/// Every BYTES flag reads the same syntax (K, M, G: powers of 1024), and the values a rule
/// allows at its edges run: --grace 0, counts of 1, --datagram-rate 0 (no limit).
#[test]
fn every_size_flag_takes_the_same_suffixes() {
    let server = Served::start(
        "pool",
        &["tcp://127.0.0.1:0"],
        &[
            "--framing",
            "line",
            "--max-line",
            "1K",
            "--max-frame",
            "1m",
            "--grace",
            "0",
            "--backlog",
            "1",
            "-m",
            "1",
            "--workers",
            "1",
            "--datagram-rate",
            "0",
        ],
    );
    let endpoint = server.endpoints[0].to_string();
    // 1K is 1,024: a line of 1,024 bytes (the terminator not counted) is within the limit.
    let line = format!("{}\n", "a".repeat(1024));
    let output = run_with_stdin(
        &[
            "send",
            "--framing",
            "line",
            "--max-line",
            "64KiB",
            "--max-frame",
            "1MB",
            &endpoint,
        ],
        line.as_bytes(),
    );
    assert_reply(&output, &line.to_uppercase());
    let output = run(&[
        "bench",
        "--framing",
        "line",
        "--size",
        "1K",
        "--stream-bytes",
        "64K",
        "-n",
        "3",
        &endpoint,
    ]);
    assert_code(&output, 0);
}

#[test]
fn grace_0_closes_connections_in_flight_at_once() {
    // Closed long before the default grace (5 s) would end: 0 is not "the default".
    grace_ends_a_message_in_flight("0", Duration::ZERO);
}

/// With `--grace GRACE`, SIGTERM ends a connection stuck in a message no sooner than `at_least`
/// and well before the 5 s default grace would have, on every engine; the server exits 0.
fn grace_ends_a_message_in_flight(grace: &str, at_least: Duration) {
    for engine in engines() {
        let mut server = Served::start(
            engine,
            &["tcp://127.0.0.1:0"],
            &["--grace", grace, "--framing", "line"],
        );
        let mut conn = connect(server.addr());
        begin_a_message(&mut conn); // and never finished
        let signalled = Instant::now();
        server.process.signal(SIGTERM);
        let mut rest = Vec::new();
        match conn.read_to_end(&mut rest) {
            Ok(_) => assert_eq!(rest, b"", "{engine}"),
            Err(e) => assert_eq!(e.kind(), IoErrorKind::ConnectionReset, "{engine}: {e}"),
        }
        let closed_after = signalled.elapsed();
        assert!(
            closed_after >= at_least && closed_after < Duration::from_secs(3),
            "{engine}: --grace {grace} closed the connection after {closed_after:?}"
        );
        assert_eq!(
            server.process.wait_exit(),
            Some(0),
            "{engine}: stderr {:#?}",
            server.process.seen
        );
    }
}

#[test]
fn help_states_the_rules_for_values_and_short_flags() {
    let output = run(&["--help"]);
    assert_code(&output, 0);
    let help = stdout(&output);
    for needle in [
        "0 is refused",
        "--grace alone may be 0",
        "powers of 1024",
        "Short flags mean one thing in every command",
        "-s ADDR",
        "-w DUR",
        "iputils",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
    for command in ["serve", "send", "client", "bench", "resolve"] {
        let output = run(&[command, "--help"]);
        assert!(
            stdout(&output).contains("0 is refused"),
            "{command} --help lacks the rule for values"
        );
    }
}

/// Item 12: every `send` and `client` line of the README's tour talks to an endpoint a `serve`
/// line of the same tour listens on ([::] covers ::1 and 127.0.0.1). The broadcast line goes
/// to the LAN by design and is left out.
#[test]
fn the_readme_tour_talks_only_to_servers_the_tour_starts() {
    let readme = include_str!("../../README.md");
    let tour = readme
        .split("## 30-second tour")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .expect("the README has a tour in a code block");
    let mut served: Vec<Endpoint> = Vec::new();
    let mut used: Vec<Endpoint> = Vec::new();
    for line in tour.lines() {
        let command = line.split(" #").next().unwrap_or_default();
        let words: Vec<&str> = command.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "socketkit") else {
            continue;
        };
        let args = &words[at + 1..];
        match args.first().copied() {
            Some("serve") => {
                let mut own = Vec::new();
                let mut shared = Vec::new();
                let mut iter = args[1..].iter();
                while let Some(arg) = iter.next() {
                    if *arg == "-l" || *arg == "--listen" {
                        shared.push(iter.next().unwrap().parse().unwrap());
                    } else if *arg == "-e" || *arg == "--framing" {
                        iter.next();
                    } else if let Some((_, list)) = arg.split_once('=') {
                        own.extend(list.split(',').map(|e| e.parse::<Endpoint>().unwrap()));
                    }
                }
                let bare_service = own.is_empty();
                if bare_service && shared.is_empty() {
                    shared = vec![
                        "tcp://127.0.0.1:12000".parse().unwrap(),
                        "udp://127.0.0.1:12000".parse().unwrap(),
                    ];
                }
                served.extend(own);
                served.extend(shared);
            }
            Some("send") | Some("client") if !args.contains(&"--broadcast") => {
                let endpoint = args[1..].iter().find(|a| !a.starts_with('-')).unwrap();
                used.push(endpoint.parse().unwrap());
            }
            _ => {}
        }
    }
    assert!(used.len() >= 5, "the tour's clients: {used:?}");
    let covers = |server: &Endpoint, client: &Endpoint| {
        if server.transport() != client.transport() {
            return false;
        }
        match (server.host_port(), client.host_port()) {
            (Some((host, port)), Some((wanted, wanted_port))) => {
                let any = match (host, wanted) {
                    (Host::Ip(IpAddr::V6(ip)), _) => ip.is_unspecified(), // dual stack
                    (Host::Ip(IpAddr::V4(ip)), Host::Ip(IpAddr::V4(_))) => ip.is_unspecified(),
                    _ => false,
                };
                port == wanted_port && (host == wanted || any)
            }
            _ => server.path() == client.path(),
        }
    };
    for client in &used {
        assert!(
            served.iter().any(|server| covers(server, client)),
            "the tour talks to {client}, which no serve line of the tour listens on \
             (served: {served:?})"
        );
    }
}

#[test]
fn exit_2_for_a_datagram_larger_than_one_datagram() {
    // Not a clap error: the message is read first, so this one is socketkit's own line.
    let endpoint = format!("udp://127.0.0.1:{}", closed_udp_port());
    let big = vec![b'a'; 70_000];
    let output = run_with_stdin(&["send", &endpoint], &big);
    assert_error(&output, 2, &["datagram"]);
}

#[test]
fn exit_4_when_the_tcp_connection_is_refused() {
    let endpoint = format!("tcp://127.0.0.1:{}", closed_tcp_port());
    let output = run(&["send", &endpoint, "anyone?"]);
    assert_error(&output, 4, &[&endpoint, "refused"]);
}

#[test]
fn exit_4_when_a_udp_port_is_closed() {
    let endpoint = format!("udp://127.0.0.1:{}", closed_udp_port());
    let output = run(&["send", &endpoint, "anyone?"]);
    assert_error(&output, 4, &[&endpoint, "refused"]);
}

#[test]
fn exit_4_when_nobody_listens_on_a_unix_socket_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // leaves the file behind
    let endpoint = format!("unix://{}", path.display());
    let output = run(&["send", &endpoint, "x"]);
    assert_error(&output, 4, &[&endpoint, "refused"]);
}

#[test]
fn exit_5_when_no_udp_reply_comes() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("udp://{}", silent.local_addr().unwrap());
    let output = run(&["send", "-w", "200ms", &endpoint, "hello?"]);
    assert_error(&output, 5, &["timed out", "200ms"]);
    // The datagram did arrive: the silence was the server's.
    silent.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = silent.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello?");
}

#[test]
fn exit_5_when_a_tcp_server_accepts_but_never_replies() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept, read the whole request, and keep the connection open (the stream is handed back
    // to the test, so it is closed only after the client has given up).
    let mute = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let mut request = Vec::new();
        conn.read_to_end(&mut request).unwrap();
        (conn, request)
    });
    let output = run(&["send", "-w", "200ms", &format!("tcp://{addr}"), "hello?"]);
    assert_error(&output, 5, &["timed out", "200ms"]);
    let (_conn, request) = mute.join().unwrap();
    assert_eq!(request, b"hello?");
}

#[test]
fn exit_6_when_the_name_does_not_exist() {
    for scheme in ["tcp", "udp"] {
        let output = assert_cmd::Command::from_std(command())
            .args(["send", &format!("{scheme}://nonexistent.invalid:1"), "x"])
            .env("RES_OPTIONS", "timeout:1 attempts:1")
            .timeout(RUN_TIMEOUT)
            .output()
            .unwrap();
        assert_error(&output, 6, &["nonexistent.invalid"]);
    }
}

#[test]
fn exit_7_when_the_port_is_taken() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", holder.local_addr().unwrap());
    for engine in engines() {
        let output = run(&["serve", "-e", engine, "-l", &endpoint]);
        let line = assert_error(&output, 7, &["cannot bind", &endpoint]);
        assert!(
            line.to_lowercase().contains("in use"),
            "the cause should be shown: {line:?}"
        );
    }
}

#[test]
fn exit_7_when_a_udp_port_is_taken_by_another_server() {
    // Both servers used to say "listening on", and the second answered the first one's clients.
    for (first, second) in [
        ("udp://127.0.0.1:0", "udp://127.0.0.1:{port}"),
        ("udp://[::1]:0", "udp://[::1]:{port}"),
    ] {
        let live = Served::start("async", &[first], &[]);
        let taken = second.replace("{port}", &live.addr().port().to_string());
        for engine in engines() {
            let output = run(&["serve", "-e", engine, &format!("echo={taken}")]);
            let line = assert_error(&output, 7, &["cannot bind", &taken]);
            assert!(line.to_lowercase().contains("in use"), "{line:?}");
        }
        // The first server still answers (upper, not the would-be echo).
        assert_reply(&send(&live.endpoints[0], "still mine"), "STILL MINE");
        live.stop();
    }
}

#[test]
fn exit_7_when_a_unix_path_cannot_be_bound() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, b"precious").unwrap();
    let missing = dir.path().join("no/such/dir/x.sock");
    for endpoint in [
        format!("unix://{}", file.display()),
        format!("unixgram://{}", file.display()),
        format!("unix://{}", missing.display()),
    ] {
        let output = run(&["serve", "-l", &endpoint]);
        assert_error(&output, 7, &["cannot bind", &endpoint]);
    }
    // A file that is not a socket is never removed to make room.
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
}

/// A live listener whose accept queue is full is alive: start-up is refused at once (a
/// blocking probe would wait for room in that queue for ever).
#[test]
fn exit_7_at_once_when_a_live_unix_listener_has_a_full_queue() {
    use socket2::{Domain, SockAddr, Socket, Type};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.sock");
    let live = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    live.bind(&SockAddr::unix(&path).unwrap()).unwrap();
    live.listen(0).unwrap();
    // Connect without blocking until the queue is full; bounded, never accepted.
    let mut queued = Vec::new();
    let full = (0..10_000).any(|_| {
        let client = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        client.set_nonblocking(true).unwrap();
        match client.connect(&SockAddr::unix(&path).unwrap()) {
            Ok(()) => {
                queued.push(client);
                false
            }
            Err(e) => {
                assert_eq!(e.kind(), IoErrorKind::WouldBlock, "{e}");
                true
            }
        }
    });
    assert!(full, "the accept queue never filled");
    let endpoint = format!("unix://{}", path.display());
    let started = Instant::now();
    let output = run(&["serve", "-l", &endpoint]);
    assert_error(&output, 7, &["cannot bind", &endpoint, "in use"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "start-up took {:?}",
        started.elapsed()
    );
    assert!(path.exists(), "the live listener's socket file was removed");
}

/// A socket file that nobody listens on any more (a server that was killed) is replaced.
#[test]
fn serve_replaces_a_stale_socket_file_and_removes_its_own_on_exit() {
    use std::os::unix::net::{UnixDatagram, UnixListener};
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("stream.sock");
    let gram = dir.path().join("gram.sock");
    drop(UnixListener::bind(&stream).unwrap());
    drop(UnixDatagram::bind(&gram).unwrap());
    assert!(stream.exists() && gram.exists());
    let mut command = command();
    command.args([
        "serve",
        "-l",
        &format!("unix://{}", stream.display()),
        "-l",
        &format!("unixgram://{}", gram.display()),
    ]);
    let mut server = Spawned::start(command);
    for endpoint in server.listening(2) {
        assert_reply(&send(&endpoint, "fresh"), "FRESH");
    }
    server.signal(SIGTERM);
    assert_eq!(server.wait_exit(), Some(0), "{:#?}", server.seen);
    assert!(
        !stream.exists() && !gram.exists(),
        "socket files left behind"
    );
}

#[test]
fn exit_7_leaves_no_listener_behind_when_a_later_endpoint_fails() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = format!("tcp://{}", holder.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("first.sock");
    let first = format!("unix://{}", path.display());
    let output = run(&["serve", "-l", &first, "-l", &taken]);
    assert_error(&output, 7, &["cannot bind", &taken]);
    assert!(
        !path.exists(),
        "the first listener's socket file was left behind"
    );
}

// ---------------------------------------------------------------------------------------------
// What the server logs about peers

/// Waits for a stderr line that contains every needle (a log line's fields follow its message).
fn wait_for_all(process: &mut Spawned, needles: &[&str]) -> String {
    loop {
        let line = process.wait_for_line(needles[0]);
        if needles.iter().all(|needle| line.contains(needle)) {
            return line;
        }
    }
}

#[test]
fn serve_resets_a_denied_peer_and_logs_refusals_once_per_interval() {
    let mut served = Served::start("async", &["tcp://127.0.0.1:0"], &["--deny", "127.0.0.1"]);
    let began = Instant::now();
    for _ in 0..5 {
        let mut conn = connect(served.addr());
        let err = conn
            .read(&mut [0u8; 16])
            .expect_err("a clean close, not a reset");
        assert_eq!(err.kind(), IoErrorKind::ConnectionReset);
    }
    let elapsed = began.elapsed();
    let first = served.process.wait_for_line("refused");
    assert!(first.contains("INFO"), "logged at info level: {first:?}");
    assert!(
        first.contains("127.0.0.1") && first.contains("access list"),
        "{first:?}"
    );
    served.process.signal(SIGTERM);
    served.process.wait_for_line("stopped"); // every earlier line has been seen
    let refusals = served
        .process
        .seen
        .iter()
        .filter(|line| line.contains("refused"))
        .count();
    // One line per 10 s interval: the other refusals are counted in the next line.
    let allowed = 1 + (elapsed.as_secs() / 10) as usize;
    assert!(
        refusals <= allowed,
        "{refusals} refusal lines: {:#?}",
        served.process.seen
    );
    assert_eq!(served.process.wait_exit(), Some(0));
}

#[test]
fn verbose_serve_logs_stream_traffic_at_close_and_each_datagram_senders_first_datagram() {
    for engine in engines() {
        let mut served = Served::start(
            engine,
            &[
                "tcp://127.0.0.1:0",
                "udp://127.0.0.1:0",
                "unixgram://{dir}/dgram.sock",
            ],
            &["-v"],
        );
        // A stream: 5 bytes in, 5 out, then the close line carries both and a duration.
        let mut conn = connect(served.addr());
        let client = conn.local_addr().unwrap().to_string();
        conn.write_all(b"hello").unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        conn.read_to_string(&mut reply).unwrap();
        assert_eq!(reply, "HELLO");
        let closed = wait_for_all(&mut served.process, &["connection closed", &client]);
        assert!(
            closed.contains("5 bytes in, 5 bytes out in "),
            "{engine}: {closed:?}"
        );

        // Datagrams: a sends twice, then b once; b's line comes after a's second datagram
        // has been served, so a's count of lines is final by then.
        let udp = served.endpoints[1].socket_addrs().unwrap()[0];
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        for (socket, text) in [(&a, "one"), (&a, "two"), (&b, "three")] {
            socket.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
            socket.send_to(text.as_bytes(), udp).unwrap();
            socket.recv(&mut [0u8; 64]).expect("a reply");
        }
        let b_addr = b.local_addr().unwrap().to_string();
        let line = wait_for_all(&mut served.process, &["first datagram", &b_addr]);
        assert!(line.contains("(5 bytes)"), "{engine}: {line:?}");
        let a_addr = a.local_addr().unwrap().to_string();
        let a_lines = served
            .process
            .seen
            .iter()
            .filter(|l| l.contains("first datagram") && l.contains(&a_addr))
            .count();
        assert_eq!(a_lines, 1, "{engine}: {:#?}", served.process.seen);

        // A Unix datagram sender, by its path.
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("client.sock");
        let unix = std::os::unix::net::UnixDatagram::bind(&own).unwrap();
        unix.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let Endpoint::UnixDatagram(server_path) = &served.endpoints[2] else {
            panic!("not a unixgram endpoint: {}", served.endpoints[2]);
        };
        unix.send_to(b"four", server_path).unwrap();
        unix.recv(&mut [0u8; 64]).expect("a reply");
        let own = own.display().to_string();
        wait_for_all(&mut served.process, &["first datagram", &own]);
        served.stop();
    }
}

/// A second SIGINT (or SIGTERM) while connections drain stops at once, with 130.
fn second_signal_forces_exit_130(
    engine: &str,
    first: nix::sys::signal::Signal,
    second: nix::sys::signal::Signal,
) {
    let mut server = Served::start(
        engine,
        &["tcp://127.0.0.1:0"],
        &["--grace", "30s", "--framing", "line"],
    );
    let mut conn = connect(server.addr());
    begin_a_message(&mut conn);
    server.process.signal(first);
    server.process.wait_for_line("shutting down");
    server.process.signal(second);
    assert_eq!(
        server.process.wait_exit(),
        Some(130),
        "{engine}: stderr {:#?}",
        server.process.seen
    );
    server.process.wait_for_line("stopping now");
    // The held connection went with the process.
    let mut rest = Vec::new();
    match conn.read_to_end(&mut rest) {
        Ok(_) => assert_eq!(rest, b""),
        Err(e) => assert_eq!(e.kind(), IoErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn exit_130_on_a_second_sigint_during_the_drain() {
    for engine in engines() {
        second_signal_forces_exit_130(engine, SIGINT, SIGINT);
    }
}

#[test]
fn exit_130_on_a_second_sigterm_or_a_mix() {
    second_signal_forces_exit_130("async", SIGTERM, SIGTERM);
    second_signal_forces_exit_130("sequential", SIGTERM, SIGINT);
}

/// `serve` on a unix:// and a unixgram:// listener, with a Unix stream connection in the middle
/// of a line (so the drain waits for it), and the two socket paths.
fn serve_unix_with_a_message_in_flight(
    engine: &str,
) -> (Served, UnixStream, [std::path::PathBuf; 2]) {
    let server = Served::start(
        engine,
        &["unix://{dir}/stream.sock", "unixgram://{dir}/gram.sock"],
        &["--grace", "30s", "--framing", "line"],
    );
    let paths = [0, 1].map(|i| server.endpoints[i].path().unwrap().to_path_buf());
    assert_reply(&send(&server.endpoints[1], "datagram"), "DATAGRAM");
    let mut conn = UnixStream::connect(&paths[0]).unwrap();
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    conn.write_all(b"done\nhalf a ").unwrap();
    let mut reply = [0u8; 5];
    conn.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"DONE\n");
    (server, conn, paths)
}

/// SIGHUP (a terminal that closes) is a graceful stop exactly like SIGTERM: the message in
/// flight is finished and answered, the process exits 0, and its socket files are gone.
#[test]
fn sighup_drains_like_sigterm_and_removes_the_socket_files() {
    for engine in engines() {
        let (mut server, mut conn, paths) = serve_unix_with_a_message_in_flight(engine);
        server.process.signal(SIGHUP);
        server.process.wait_for_line("SIGHUP: shutting down");
        conn.write_all(b"line\n").unwrap();
        let mut rest = String::new();
        conn.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "HALF A LINE\n", "{engine}");
        assert_eq!(
            server.process.wait_exit(),
            Some(0),
            "{engine}: stderr {:#?}",
            server.process.seen
        );
        for path in &paths {
            assert!(!path.exists(), "{engine}: {} left behind", path.display());
        }
    }
}

/// The forced stop (a second signal, exit 130) skips the drain and the destructors, but not
/// the removal of the socket files.
#[test]
fn exit_130_removes_the_socket_files_too() {
    let pairs = [(SIGTERM, SIGTERM), (SIGHUP, SIGHUP), (SIGINT, SIGHUP)];
    for (engine, (first, second)) in engines().zip(pairs.iter().cycle()) {
        let (mut server, _conn, paths) = serve_unix_with_a_message_in_flight(engine);
        server.process.signal(*first);
        server.process.wait_for_line("shutting down");
        server.process.signal(*second);
        assert_eq!(
            server.process.wait_exit(),
            Some(130),
            "{engine}: stderr {:#?}",
            server.process.seen
        );
        for path in &paths {
            assert!(
                !path.exists(),
                "{engine} {first}, {second}: {} left behind",
                path.display()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Graceful stop

/// Over line framing, answers one line and sends half of the next: the connection is then in a
/// message, which shutdown lets finish (a connection between messages is closed at once).
fn begin_a_message(conn: &mut TcpStream) {
    conn.write_all(b"done\nhalf a ").unwrap();
    assert_eq!(read_exactly(conn, 5), "DONE\n");
}

/// SIGTERM stops accepting at once; a connection in a message finishes it within the grace,
/// then closes; an idle connection closes at once.
fn sigterm_drains_a_connection_in_flight(engine: &str) {
    let mut server = Served::start(
        engine,
        &["tcp://127.0.0.1:0"],
        &["--grace", "10s", "--framing", "line"],
    );
    let addr = server.addr();
    let mut conn = connect(addr);
    begin_a_message(&mut conn);
    server.process.signal(SIGTERM);
    server.process.wait_for_line("shutting down");
    wait_until_refused(addr);
    conn.write_all(b"line\n").unwrap();
    let mut rest = String::new();
    conn.read_to_string(&mut rest).unwrap(); // EOF: idle again, it is closed
    assert_eq!(rest, "HALF A LINE\n");
    assert_eq!(
        server.process.wait_exit(),
        Some(0),
        "{engine}: stderr {:#?}",
        server.process.seen
    );
}

#[test]
fn sigterm_drains_a_connection_in_flight_async() {
    sigterm_drains_a_connection_in_flight("async");
}

#[test]
fn sigterm_drains_a_connection_in_flight_sequential() {
    sigterm_drains_a_connection_in_flight("sequential");
}

#[test]
fn sigterm_drains_a_connection_in_flight_on_the_other_engines() {
    for engine in engines().filter(|e| !["async", "sequential"].contains(e)) {
        sigterm_drains_a_connection_in_flight(engine);
    }
}

/// How one request of the load fared across a SIGTERM.
#[derive(Debug, Default)]
struct Tally {
    answered: usize,
    /// Refused, or reset before any byte of a reply (still in the listen queue when the
    /// listener closed): the server never took the request.
    not_taken: usize,
    /// Anything else: a partial or wrong reply, or a refusal before the signal. Must stay empty.
    lost: Vec<String>,
}

/// One request on a fresh connection; `signalled` says whether SIGTERM has been sent yet.
fn one_request(
    addr: SocketAddr,
    n: usize,
    signalled: &std::sync::atomic::AtomicBool,
    tally: &std::sync::Mutex<Tally>,
) {
    use std::sync::atomic::Ordering;
    let request = format!("request {n}\n");
    let expected = request.to_uppercase();
    let outcome = (|| -> std::io::Result<Vec<u8>> {
        let mut conn = TcpStream::connect(addr)?;
        conn.set_read_timeout(Some(SAFETY_TIMEOUT))?;
        conn.write_all(request.as_bytes())?;
        conn.shutdown(std::net::Shutdown::Write)?;
        let mut reply = Vec::new();
        match conn.read_to_end(&mut reply) {
            Ok(_) => Ok(reply),
            Err(e) if reply.is_empty() => Err(e),
            Err(_) => Ok(reply), // reset after a partial reply: judged below
        }
    })();
    // Read the flag after the outcome: a refusal is only excused if the signal came first.
    let after_signal = signalled.load(Ordering::SeqCst);
    let mut tally = tally.lock().unwrap();
    match outcome {
        Ok(reply) if reply == expected.as_bytes() => tally.answered += 1,
        // A clean close without a reply would mean the server read the request and dropped
        // it: lost. A connection the server never accepted is reset (or refused) instead; when
        // the reset comes between the client's write and its half-close, the half-close fails
        // with ENOTCONN (NotConnected): a reset all the same, the request unread.
        Err(e)
            if after_signal
                && matches!(
                    e.kind(),
                    IoErrorKind::ConnectionRefused
                        | IoErrorKind::ConnectionReset
                        | IoErrorKind::BrokenPipe
                        | IoErrorKind::NotConnected
                ) =>
        {
            tally.not_taken += 1
        }
        other => tally.lost.push(format!("{request:?}: {other:?}")),
    }
}

/// SIGTERM while clients keep connecting and others are in the middle of a message: every
/// request is answered whole or never taken (refused), none is cut, every message in flight is
/// finished, and the process exits 0.
fn sigterm_under_load_loses_no_reply(engine: &str, held: usize, workers: usize) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let mut server = Served::start(
        engine,
        &["tcp://127.0.0.1:0"],
        &["--grace", "10s", "--framing", "line"],
    );
    let addr = server.addr();
    let mut in_flight: Vec<TcpStream> = (0..held).map(|_| connect(addr)).collect();
    for conn in &mut in_flight {
        begin_a_message(conn);
    }
    let signalled = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..workers)
        .map(|worker| {
            let (signalled, stop, tally, started) = (
                signalled.clone(),
                stop.clone(),
                tally.clone(),
                started.clone(),
            );
            std::thread::spawn(move || {
                for i in 0..5_000 {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    started.fetch_add(1, Ordering::SeqCst);
                    one_request(addr, worker * 10_000 + i, &signalled, &tally);
                }
            })
        })
        .collect();
    // Signal once the load is well under way (or at the latest after the safety time-out).
    let under_way = Instant::now();
    while tally.lock().unwrap().answered < 200 && under_way.elapsed() < SAFETY_TIMEOUT {
        std::thread::yield_now();
    }
    signalled.store(true, Ordering::SeqCst);
    server.process.signal(SIGTERM);
    server.process.wait_for_line("shutting down");
    wait_until_refused(addr);
    // The messages in flight at the signal are finished, then their connections close.
    for conn in &mut in_flight {
        conn.write_all(b"line\n").unwrap();
        let mut rest = String::new();
        conn.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "HALF A LINE\n", "{engine}");
    }
    stop.store(true, Ordering::SeqCst);
    for worker in load {
        worker.join().unwrap();
    }
    assert_eq!(
        server.process.wait_exit(),
        Some(0),
        "{engine}: stderr {:#?}",
        server.process.seen
    );
    let tally = tally.lock().unwrap();
    eprintln!("{engine}: {tally:?}");
    assert!(
        tally.answered >= 200,
        "{engine}: too little load: {tally:?}"
    );
    assert!(
        tally.lost.is_empty(),
        "{engine}: lost replies: {:#?}",
        tally.lost
    );
}

#[test]
fn sigterm_under_load_loses_no_reply_async() {
    sigterm_under_load_loses_no_reply("async", 8, 8);
}

#[test]
fn sigterm_under_load_loses_no_reply_on_the_thread_engines() {
    sigterm_under_load_loses_no_reply("threaded", 8, 8);
    sigterm_under_load_loses_no_reply("pool", 8, 8);
    // One connection at a time: the one in a message holds the listener, the load queues.
    sigterm_under_load_loses_no_reply("sequential", 0, 2);
}

#[test]
fn sigint_stops_an_idle_server_with_0() {
    for engine in engines() {
        let mut server = Served::start(engine, &ALL_TRANSPORTS, &[]);
        // At once: a signal that follows the announcement must find the handlers installed.
        server.process.signal(SIGINT);
        server.process.wait_for_line("shutting down");
        assert_eq!(
            server.process.wait_exit(),
            Some(0),
            "{engine}: stderr {:#?}",
            server.process.seen
        );
    }
}

#[test]
fn the_grace_period_ends_a_connection_that_does_not_finish() {
    // 150 ms rather than 200: the signal's delivery and the client's wake-up blur the edges.
    grace_ends_a_message_in_flight("200ms", Duration::from_millis(150));
}

#[test]
fn sigterm_stops_the_server_even_when_stderr_is_gone() {
    // `socketkit serve 2>&1 | head -n1`: the reader of stderr goes away after the first line.
    let mut server = Plain::start(command().args(["serve", "-l", "tcp://127.0.0.1:0"]));
    let mut stderr = std::io::BufReader::new(server.0.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    assert!(line.starts_with("listening on "), "{line:?}");
    let endpoint: Endpoint = line["listening on ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_reply(&send(&endpoint, "up"), "UP"); // serving
    drop(stderr);
    server.signal(SIGTERM);
    assert_eq!(server.wait_exit(), Some(0));
}

// ---------------------------------------------------------------------------------------------
// send: resets, binding, when it stops waiting, framing mismatches, nc-style endpoints

/// A one-connection TCP server on 127.0.0.1 that hands the accepted stream (with the safety
/// time-outs set) to `serve`, on a thread whose result the test joins.
fn one_connection<T: Send + 'static>(
    serve: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (SocketAddr, std::thread::JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        conn.set_write_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        serve(conn)
    });
    (addr, thread)
}

/// Reads the whole request (the client's half-close is the sync point).
fn read_request(conn: &mut TcpStream) -> Vec<u8> {
    let mut request = Vec::new();
    conn.read_to_end(&mut request)
        .expect("the request, up to EOF");
    request
}

/// Closes with an RST instead of a FIN, as a server refusing a denied peer does.
fn reset(conn: TcpStream) {
    socket2::SockRef::from(&conn)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(conn);
}

#[test]
fn send_exits_4_when_the_server_resets_before_any_reply() {
    // After reading the request: the reader meets the reset.
    let (addr, server) = one_connection(|mut conn| {
        let request = read_request(&mut conn);
        reset(conn);
        request
    });
    let output = run(&["send", &format!("tcp://{addr}"), "knock"]);
    assert_error(&output, 4, &["reset by the server", "before any reply"]);
    assert_eq!(server.join().unwrap(), b"knock");

    // At once, before reading: whichever of the writer and the reader meets it, the same.
    let (addr, server) = one_connection(reset);
    let big = vec![b'x'; 1 << 20];
    let output = run_with_stdin(&["send", &format!("tcp://{addr}")], &big);
    assert_error(&output, 4, &["reset by the server", "before any reply"]);
    server.join().unwrap();
}

#[test]
fn send_exits_1_when_the_server_resets_after_part_of_a_reply() {
    let (addr, server) = one_connection(|mut conn| {
        read_request(&mut conn);
        conn.write_all(b"PART").unwrap();
        reset(conn);
    });
    let output = run(&["send", &format!("tcp://{addr}"), "knock"]);
    assert_code(&output, 1);
    assert_eq!(stdout(&output), "PART", "the part that came is printed");
    let text = stderr(&output);
    assert!(
        text.contains("reset by the server after 4 bytes of the reply"),
        "{text:?}"
    );
    server.join().unwrap();
}

#[test]
fn send_exits_7_when_its_source_address_cannot_be_bound() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    // The issue's own command: the source is the server's own listening address.
    let output = run(&["send", "-s", &taken, &taken, "x"]);
    let line = assert_error(&output, 7, &["cannot bind", &taken, "in use"]);
    assert!(!line.contains("cannot connect"), "{line:?}");
}

#[test]
fn send_quit_after_ends_well_when_the_server_keeps_the_connection_open() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (addr, server) = one_connection(move |mut conn| {
        read_request(&mut conn);
        conn.write_all(b"REPLY").unwrap();
        // Keep the connection open until the test is done with the client.
        let _ = rx.recv_timeout(SAFETY_TIMEOUT);
    });
    let started = Instant::now();
    let output = run(&[
        "send",
        "-w",
        "20s",
        "--quit-after",
        "300ms",
        &format!("tcp://{addr}"),
        "hello",
    ]);
    assert_reply(&output, "REPLY");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "--quit-after, not -w, ended the wait: {:?}",
        started.elapsed()
    );
    tx.send(()).unwrap();
    server.join().unwrap();

    // Without it, the same server makes send wait for -w and fail.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (addr, server) = one_connection(move |mut conn| {
        read_request(&mut conn);
        conn.write_all(b"REPLY").unwrap();
        let _ = rx.recv_timeout(SAFETY_TIMEOUT);
    });
    let output = run(&["send", "-w", "300ms", &format!("tcp://{addr}"), "hello"]);
    assert_code(&output, 5);
    assert_eq!(stdout(&output), "REPLY");
    tx.send(()).unwrap();
    server.join().unwrap();
}

#[test]
fn send_quit_after_counts_from_the_last_data_not_from_the_start() {
    // Four pieces 400 ms apart (1.2 s in all) with --quit-after 700ms: counted from the last
    // data every piece arrives; counted from the start, the last two would be cut off.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (addr, server) = one_connection(move |mut conn| {
        read_request(&mut conn);
        for piece in [&b"a"[..], b"b", b"c", b"d"] {
            conn.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(400)); // pacing, not synchronisation
        }
        let _ = rx.recv_timeout(SAFETY_TIMEOUT);
    });
    let output = run(&[
        "send",
        "--quit-after",
        "700ms",
        &format!("tcp://{addr}"),
        "x",
    ]);
    assert_reply(&output, "abcd");
    tx.send(()).unwrap();
    server.join().unwrap();
}

#[test]
fn send_no_wait_sends_and_exits_0_without_a_reply() {
    // UDP: a discard-like service that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    silent.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let endpoint = format!("udp://{}", silent.local_addr().unwrap());
    let output = run(&["send", "-w", "20s", "--no-wait", &endpoint, "into the void"]);
    assert_reply(&output, "");
    let mut buf = [0u8; 64];
    let (n, _) = silent.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"into the void");

    // TCP: the server gets the message and the EOF, and never has to answer.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (addr, server) = one_connection(move |mut conn| {
        let request = read_request(&mut conn);
        let _ = rx.recv_timeout(SAFETY_TIMEOUT);
        request
    });
    let output = run(&[
        "send",
        "-w",
        "20s",
        "--no-wait",
        &format!("tcp://{addr}"),
        "x",
    ]);
    assert_reply(&output, "");
    tx.send(()).unwrap();
    assert_eq!(server.join().unwrap(), b"x");
}

#[test]
fn send_max_time_bounds_a_reply_that_trickles_in() {
    // One byte every 300 ms never trips -w 2s; --max-time 1s ends it all the same.
    let (addr, server) = one_connection(|mut conn| {
        read_request(&mut conn);
        for _ in 0..100 {
            if conn.write_all(b".").is_err() {
                break; // the client gave up
            }
            std::thread::sleep(Duration::from_millis(300)); // pacing, not synchronisation
        }
    });
    let started = Instant::now();
    let output = run(&[
        "send",
        "-w",
        "2s",
        "--max-time",
        "1s",
        &format!("tcp://{addr}"),
        "x",
    ]);
    let elapsed = started.elapsed();
    assert_code(&output, 5);
    assert!(
        stdout(&output).starts_with('.'),
        "the trickle so far is printed"
    );
    assert!(
        stderr(&output).contains("max time"),
        "{:?}",
        stderr(&output)
    );
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    server.join().unwrap();
}

#[test]
fn send_max_time_bounds_a_udp_wait_shorter_than_w() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("udp://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let output = run(&["send", "-w", "20s", "--max-time", "300ms", &endpoint, "x"]);
    assert_error(&output, 5, &["max time", "300ms"]);
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn send_help_gives_the_rule_for_when_it_stops_waiting() {
    let output = run(&["send", "--help"]);
    assert_code(&output, 0);
    let help = stdout(&output);
    for needle in [
        "--quit-after",
        "--no-wait",
        "--max-time",
        "When send stops waiting",
        "between two reads",
    ] {
        assert!(
            help.contains(needle),
            "send --help lacks {needle:?}:\n{help}"
        );
    }
}

#[test]
fn send_exits_3_when_the_servers_framing_differs() {
    // The issue's case: line framing against a length-framed server, which drops the
    // connection on a header it cannot accept. Nothing came back: that is not a success.
    // It closes with a FIN or, when "hello\n" was not all read yet, an RST: exit 3 or 4.
    let served = Served::start("async", &["tcp://127.0.0.1:0"], &["--framing", "length"]);
    let endpoint = served.endpoints[0].to_string();
    let output = run_with_stdin(&["send", "--framing", "line", &endpoint], b"hello\n");
    let code = output.status.code();
    if code == Some(4) {
        assert_error(&output, 4, &["reset by the server before any reply"]);
    } else {
        assert_error(&output, 3, &["without replying", "framing"]);
    }
    served.stop();

    // The same, made certain: the whole request read, then a close (FIN) with no reply.
    let (addr, server) = one_connection(|mut conn| {
        read_request(&mut conn);
    });
    let output = run_with_stdin(
        &["send", "--framing", "line", &format!("tcp://{addr}")],
        b"one\ntwo\n",
    );
    assert_error(
        &output,
        3,
        &["without replying to any of the 2 messages", "framing"],
    );
    server.join().unwrap();

    // A reply that ends inside a frame: the header only, or part of the payload.
    for reply in [&b"\0\0\0\x0a"[..], b"\0\0\0\x0aabc", b"\0\0"] {
        let (addr, server) = one_connection(move |mut conn| {
            read_request(&mut conn);
            conn.write_all(reply).unwrap();
        });
        let output = run_with_stdin(
            &["send", "--framing", "length", &format!("tcp://{addr}")],
            b"hello\n",
        );
        assert_error(&output, 3, &[]);
        server.join().unwrap();
    }
}

#[test]
fn send_and_serve_take_a_bare_port_and_service_names() {
    // serve -l PORT listens on loopback, and send PORT reaches it (localhost).
    let port = closed_tcp_port().to_string();
    let served = Served::start("async", &[&port], &[]);
    assert_eq!(
        served.endpoints[0].to_string(),
        format!("tcp://127.0.0.1:{port}")
    );
    let output = run(&["send", &port, "bare"]);
    assert_reply(&output, "BARE");
    served.stop();

    // SERVICE=PORT, and udp://PORT on both sides.
    let port = closed_udp_port().to_string();
    let mut command = command();
    command.args(["serve", &format!("echo=udp://{port}")]);
    let mut process = Spawned::start(command);
    let endpoints = process.listening(1);
    assert_eq!(endpoints[0].to_string(), format!("udp://127.0.0.1:{port}"));
    let output = run(&["send", &format!("udp://{port}"), "same"]);
    assert_reply(&output, "same");
    drop(process);

    // A service name is its port for the endpoint's transport: discard is 9, echo 7.
    let output = run(&["send", "-w", "2s", "tcp://127.0.0.1:discard", "x"]);
    assert_error(&output, 4, &["tcp://127.0.0.1:9"]);
    let output = run(&["send", "-w", "2s", "udp://127.0.0.1:echo", "x"]);
    assert_error(&output, 4, &["udp://127.0.0.1:7"]);
    let output = run(&["send", "localhost:no-such-service", "x"]);
    assert_usage_error(&output, &["service"]);
}

#[test]
fn a_scheme_with_one_slash_is_named_as_such() {
    for text in [
        "tcp:/127.0.0.1:12000",
        "udp:127.0.0.1:12000",
        "unix:/tmp/x.sock",
    ] {
        let output = run(&["send", text, "x"]);
        assert_usage_error(&output, &[text, "needs '//'"]);
        let output = run(&["serve", "-l", text]);
        assert_usage_error(&output, &[text, "needs '//'"]);
    }
}
