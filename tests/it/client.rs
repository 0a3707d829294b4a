//! `socketkit client ENDPOINT`, driven as a user drives it: typing at a terminal (a real
//! pseudo-terminal), or piping lines in and reading them out while the session goes on.
//! Servers are in-process [`TestServer`]s or tiny std servers written for one test, so each
//! test can see what the server saw (an EOF, a source address). No sleeps: every wait is for
//! output, an exit, or a socket event, bounded by [`SAFETY_TIMEOUT`].

use std::io::{ErrorKind as IoErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socketkit::codec::{Framing, LengthWidth};
use socketkit::{Endpoint, Engine};
use wait_timeout::ChildExt;

use crate::common::{SAFETY_TIMEOUT, Spawned, TestServer, socketkit};

/// The prompt of the slides' `input()`, shown when stdin is a terminal.
const PROMPT: &str = "Input a lowercase sentence:";

/// `socketkit ARGS`, with the caller's RUST_LOG removed so log output is what the flags say.
fn command(args: &[&str]) -> Command {
    let mut command = socketkit();
    command.env_remove("RUST_LOG").args(args);
    command
}

/// Runs `socketkit ARGS` to completion with `stdin` piped in (then closed).
fn run(args: &[&str], stdin: &[u8]) -> Output {
    assert_cmd::Command::from_std(command(args))
        .write_stdin(stdin.to_vec())
        .timeout(SAFETY_TIMEOUT)
        .output()
        .expect("run socketkit")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code and exactly `expected` on stdout, showing both streams otherwise.
#[track_caller]
fn assert_output(output: &Output, code: i32, expected: &str) {
    assert_eq!(
        (output.status.code(), text(&output.stdout).as_str()),
        (Some(code), expected),
        "stderr: {:?}",
        text(&output.stderr)
    );
}

/// Collects a child's output on a thread, so a test can wait for a piece of it (an event)
/// while the child keeps running.
struct OutputReader {
    chunks: mpsc::Receiver<Vec<u8>>,
    /// Everything read so far.
    seen: Vec<u8>,
    eof: bool,
}

impl OutputReader {
    fn new(mut source: impl Read + Send + 'static) -> OutputReader {
        let (tx, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // A pty master reports EIO once the terminal's last user has gone: that is EOF too.
            while let Ok(n @ 1..) = source.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        OutputReader {
            chunks,
            seen: Vec::new(),
            eof: false,
        }
    }

    /// Reads until `done(everything so far)` holds; panics at the safety time-out or at EOF.
    #[track_caller]
    fn wait_until(&mut self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + SAFETY_TIMEOUT;
        while !done(&text(&self.seen)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.eof = true;
                    panic!("EOF before {what}; output was {:?}", text(&self.seen))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("no {what} in time; output was {:?}", text(&self.seen))
                }
            }
        }
    }

    /// Waits until the output contains `needle`.
    #[track_caller]
    fn wait_for(&mut self, needle: &str) {
        self.wait_until(&format!("{needle:?}"), |seen| seen.contains(needle));
    }

    /// Reads to EOF (the child has exited and closed its end) and returns everything.
    #[track_caller]
    fn finish(mut self) -> String {
        let deadline = Instant::now() + SAFETY_TIMEOUT;
        while !self.eof {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.chunks.recv_timeout(left) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(mpsc::RecvTimeoutError::Disconnected) => self.eof = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("output never ended; it was {:?}", text(&self.seen))
                }
            }
        }
        text(&self.seen)
    }
}

/// `socketkit client ARGS` running with piped stdin, stdout and stderr; killed on drop.
struct Session {
    process: Spawned,
    stdout: OutputReader,
}

impl Session {
    fn start(args: &[&str]) -> Session {
        let mut process = Spawned::start(command(args));
        let stdout = OutputReader::new(process.child.stdout.take().unwrap());
        Session { process, stdout }
    }

    fn type_in(&mut self, bytes: &str) {
        let stdin = self.process.stdin.as_mut().expect("stdin is still open");
        stdin.write_all(bytes.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn close_stdin(&mut self) {
        drop(self.process.stdin.take());
    }

    /// Waits for the exit (bounded) and returns the exit code and the whole stdout.
    fn finish(mut self) -> (Option<i32>, String) {
        let code = self.process.wait_exit();
        (code, self.stdout.finish())
    }
}

/// Accepts one connection, bounded by the safety time-out (the client may fail to connect).
fn accept(listener: TcpListener) -> TcpStream {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(listener.accept());
    });
    let (conn, _) = rx
        .recv_timeout(SAFETY_TIMEOUT)
        .expect("the client never connected")
        .expect("accept");
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    conn.set_write_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    conn
}

/// A one-connection TCP server: it reads to EOF, replies with the number of bytes it read,
/// and closes. The thread returns what it read.
fn counting_server() -> (SocketAddr, JoinHandle<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let mut conn = accept(listener);
        let mut request = Vec::new();
        conn.read_to_end(&mut request).expect("read to EOF");
        conn.write_all(request.len().to_string().as_bytes())
            .unwrap();
        request
    });
    (addr, thread)
}

fn tcp(addr: SocketAddr) -> String {
    format!("tcp://{addr}")
}

// ---------------------------------------------------------------------------------------------
// Datagrams at a terminal: one prompt per line

/// Quotes one word for `sh`.
fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// A way to run a command with a pseudo-terminal as its stdin and stdout, fed from a pipe:
/// EOF on the pipe is typed as EOF (^D) on the terminal, and the driver exits with the
/// command's exit code.
#[derive(Debug, Clone, Copy)]
enum PtyDriver {
    /// util-linux `script -qfec CMD /dev/null`.
    Script,
    /// A few lines of Python around `pty.fork()`.
    Python,
}

/// Python's `pty.spawn` never types EOF when its input ends, so the driver is spelled out.
const PY_PTY: &str = r#"
import os, pty, select, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
typing = True
while True:
    ready = select.select([fd, 0] if typing else [fd], [], [])[0]
    if 0 in ready:
        data = os.read(0, 4096)
        os.write(fd, data if data else b"\x04")
        typing = bool(data)
    if fd in ready:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        os.write(1, data)
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"#;

impl PtyDriver {
    /// The drivers this machine has.
    fn available() -> Vec<PtyDriver> {
        let works = |program: &str, args: &[&str], needle: &str| {
            Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|out| out.status.success() && text(&out.stdout).contains(needle))
        };
        let mut drivers = Vec::new();
        if works("script", &["--version"], "util-linux") {
            drivers.push(PtyDriver::Script);
        }
        if works("python3", &["-c", "import pty; print('pty')"], "pty") {
            drivers.push(PtyDriver::Python);
        }
        drivers
    }

    fn command(self, args: &[&str]) -> Command {
        let program = env!("CARGO_BIN_EXE_socketkit");
        let mut command = match self {
            PtyDriver::Script => {
                let line: Vec<String> = std::iter::once(program)
                    .chain(args.iter().copied())
                    .map(sh_quote)
                    .collect();
                let mut command = Command::new("script");
                command
                    .args(["-qfec", &line.join(" "), "/dev/null"])
                    .env("SHELL", "/bin/sh");
                command
            }
            PtyDriver::Python => {
                let mut command = Command::new("python3");
                command.args(["-c", PY_PTY, program]).args(args);
                command
            }
        };
        command.env_remove("RUST_LOG");
        command
    }
}

/// `socketkit client ARGS` at a terminal, typed into through the driver's stdin.
struct TerminalSession {
    process: Spawned,
    screen: OutputReader,
    driver: PtyDriver,
}

impl TerminalSession {
    fn start(driver: PtyDriver, args: &[&str]) -> TerminalSession {
        let mut process = Spawned::start(driver.command(args));
        let screen = OutputReader::new(process.child.stdout.take().unwrap());
        TerminalSession {
            process,
            screen,
            driver,
        }
    }

    /// Types a line and the Enter key.
    fn type_line(&mut self, line: &str) {
        let stdin = self.process.stdin.as_mut().unwrap();
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits until the screen (without the terminal's carriage returns) ends with `tail`.
    #[track_caller]
    fn wait_for_screen_to_end_with(&mut self, tail: &str) {
        let driver = self.driver;
        self.screen
            .wait_until(&format!("{tail:?} at the end ({driver:?})"), |screen| {
                screen.replace('\r', "").ends_with(tail)
            });
    }

    /// Types EOF (^D), waits for the exit, returns the exit code and the whole screen.
    fn end(mut self) -> (Option<i32>, String) {
        drop(self.process.stdin.take());
        let code = self.process.wait_exit();
        (code, self.screen.finish().replace('\r', ""))
    }
}

#[test]
fn udp_at_a_terminal_prompts_once_per_line_and_prints_each_reply_on_its_own_line() {
    let drivers = PtyDriver::available();
    assert!(
        !drivers.is_empty(),
        "no pseudo-terminal driver: neither util-linux script nor python3"
    );
    let server = TestServer::start(Engine::Async, &["udp://127.0.0.1:0"]);
    let endpoint = server.endpoint(0).to_string();
    for driver in drivers {
        let mut terminal = TerminalSession::start(driver, &["client", &endpoint]);
        terminal.wait_for_screen_to_end_with(PROMPT);
        terminal.type_line("hello world");
        // The terminal echoes what was typed; the reply follows on its own line, then the
        // next prompt.
        terminal.wait_for_screen_to_end_with(&format!("hello world\nHELLO WORLD\n{PROMPT}"));
        terminal.type_line("straße");
        terminal.wait_for_screen_to_end_with(&format!("straße\nSTRASSE\n{PROMPT}"));
        let (code, screen) = terminal.end();
        assert_eq!(code, Some(0), "{driver:?}: screen {screen:?}");
        assert_eq!(
            screen,
            format!(
                "{PROMPT}hello world\nHELLO WORLD\n\
                 {PROMPT}straße\nSTRASSE\n\
                 {PROMPT}\n"
            ),
            "{driver:?}: one prompt per line, and a newline after the last one at EOF"
        );
    }
}

#[test]
fn unixgram_at_a_terminal_prompts_too() {
    let Some(driver) = PtyDriver::available().first().copied() else {
        panic!("no pseudo-terminal driver: neither util-linux script nor python3");
    };
    let server = TestServer::start(Engine::Sequential, &["unixgram://{dir}/g.sock"]);
    let mut terminal = TerminalSession::start(driver, &["client", &server.endpoint(0).to_string()]);
    terminal.wait_for_screen_to_end_with(PROMPT);
    terminal.type_line("café");
    terminal.wait_for_screen_to_end_with(&format!("café\nCAFÉ\n{PROMPT}"));
    let (code, screen) = terminal.end();
    assert_eq!(code, Some(0), "screen {screen:?}");
    assert_eq!(screen, format!("{PROMPT}café\nCAFÉ\n{PROMPT}\n"));
}

#[test]
fn tcp_at_a_terminal_never_prompts() {
    let Some(driver) = PtyDriver::available().first().copied() else {
        panic!("no pseudo-terminal driver: neither util-linux script nor python3");
    };
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0"]);
    let mut terminal = TerminalSession::start(driver, &["client", &server.endpoint(0).to_string()]);
    terminal.type_line("hello");
    terminal.wait_for_screen_to_end_with("hello\nHELLO\n");
    // ^D: the client half-closes, the server closes, the client exits.
    let (code, screen) = terminal.end();
    assert_eq!(code, Some(0), "screen {screen:?}");
    assert_eq!(screen, "hello\nHELLO\n", "full duplex, like nc: no prompt");
}

// ---------------------------------------------------------------------------------------------
// Datagrams through pipes: no prompts

#[test]
fn udp_piped_prints_exactly_one_reply_line_per_input_line_and_no_prompt() {
    let server = TestServer::start(Engine::Async, &["udp://127.0.0.1:0"]);
    let endpoint = server.endpoint(0).to_string();
    let output = run(&["client", &endpoint], b"a\nb\n");
    assert_output(&output, 0, "A\nB\n");
    assert!(
        !text(&output.stderr).contains(PROMPT),
        "no prompt anywhere when stdin is not a terminal: {:?}",
        text(&output.stderr)
    );
}

#[test]
fn udp_piped_handles_crlf_an_empty_line_unicode_and_a_last_line_without_newline() {
    for engine in [Engine::Async, Engine::Sequential] {
        let server = TestServer::start(engine, &["udp://127.0.0.1:0"]);
        let endpoint = server.endpoint(0).to_string();
        let output = run(
            &["client", &endpoint],
            "hello world\r\n\nstraße\nǆemal ﬁx".as_bytes(),
        );
        assert_output(&output, 0, "HELLO WORLD\n\nSTRASSE\nǄEMAL FIX\n");
    }
}

#[test]
fn unixgram_piped_works_like_udp() {
    let server = TestServer::start(Engine::Async, &["unixgram://{dir}/g.sock"]);
    let endpoint = server.endpoint(0).to_string();
    assert!(endpoint.starts_with("unixgram://"), "{endpoint}");
    let output = run(&["client", &endpoint], "a\nstraße\n".as_bytes());
    assert_output(&output, 0, "A\nSTRASSE\n");
}

/// A UDP server in the test that answers every datagram but those equal to `ignore`, and
/// returns every datagram it got once it has `count` of them.
fn forgetful_udp_server(
    ignore: &'static [u8],
    count: usize,
) -> (SocketAddr, JoinHandle<Vec<Vec<u8>>>) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let addr = socket.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while got.len() < count {
            let (n, from) = socket.recv_from(&mut buf).expect("a datagram");
            got.push(buf[..n].to_vec());
            if &buf[..n] != ignore {
                socket
                    .send_to(&buf[..n].to_ascii_uppercase(), from)
                    .unwrap();
            }
        }
        got
    });
    (addr, thread)
}

#[test]
fn udp_exits_5_after_all_lines_when_a_datagram_went_unanswered() {
    let (addr, server) = forgetful_udp_server(b"b", 3);
    let endpoint = format!("udp://{addr}");
    let output = run(&["client", "-w", "200ms", &endpoint], b"a\nb\nc\n");
    // The session goes on after the missing reply; the exit code tells of it at the end.
    assert_output(&output, 5, "A\nC\n");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("socketkit: error:") && stderr.to_lowercase().contains("timed out"),
        "stderr: {stderr:?}"
    );
    let got = server.join().unwrap();
    assert_eq!(got, [&b"a"[..], b"b", b"c"], "every line was sent");
}

#[test]
fn udp_exits_5_when_the_server_never_answers() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    silent.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let endpoint = format!("udp://{}", silent.local_addr().unwrap());
    let output = run(&["client", "-w", "200ms", &endpoint], b"a\nb\n");
    assert_output(&output, 5, "");
    let mut buf = [0u8; 16];
    for expected in [&b"a"[..], b"b"] {
        let n = silent.recv(&mut buf).expect("the client's datagram");
        assert_eq!(&buf[..n], expected, "both lines were sent");
    }
}

/// Runs `socketkit ARGS` with `first` and then a line that never ends on stdin (64 KiB of `x`
/// at a time, at most `cap` bytes); returns its output, and how much of the endless line went
/// in before the client stopped reading (`None`: all `cap` bytes did).
fn run_with_endless_line(args: &[&str], first: &[u8], cap: usize) -> (Output, Option<usize>) {
    let mut child = command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn socketkit");
    let mut stdin = child.stdin.take().unwrap();
    let first = first.to_vec();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&first).ok()?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut written = 0;
        while written < cap {
            match stdin.write(&chunk) {
                Ok(n) => written += n,
                Err(_) => return Some(written), // the client is gone: the pipe is broken
            }
        }
        None
    });
    let Some(status) = child.wait_timeout(SAFETY_TIMEOUT).unwrap() else {
        let _ = child.kill();
        panic!("socketkit {args:?} did not exit");
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    let written = writer.join().unwrap();
    let output = Output {
        status,
        stdout,
        stderr,
    };
    (output, written)
}

#[test]
fn an_over_long_stdin_line_is_refused_with_exit_2_before_it_is_read_whole() {
    const CAP: usize = 64 << 20;
    let cases: [(Framing, &[&str], &str); 2] = [
        (
            Framing::Line,
            &["--framing", "line", "--max-line", "16"],
            "an input line is longer than the line limit of 16 bytes",
        ),
        (
            Framing::Length(LengthWidth::U16),
            &[
                "--framing",
                "length",
                "--length-bytes",
                "2",
                "--max-frame",
                "16",
            ],
            "an input line is longer than the frame limit of 16 bytes",
        ),
    ];
    for (framing, flags, message) in cases {
        let server = TestServer::with(
            socketkit::Server::builder()
                .framing(framing)
                .listen("tcp://127.0.0.1:0".parse().unwrap()),
        );
        let endpoint = server.endpoint(0).to_string();
        let mut args = vec!["client", endpoint.as_str()];
        args.extend_from_slice(flags);
        let (output, written) = run_with_endless_line(&args, b"ok\n", CAP);
        let stderr = text(&output.stderr);
        // Not sent at all: a usage error, as for a message over one frame or one datagram.
        assert_eq!(
            output.status.code(),
            Some(2),
            "{framing}: stderr: {stderr:?}"
        );
        assert!(stderr.contains(message), "{framing}: stderr: {stderr:?}");
        assert!(
            written.is_some(),
            "{framing}: the client read a {CAP}-byte line whole before refusing it"
        );
    }
}

#[test]
fn an_over_long_stdin_line_for_a_datagram_is_refused_before_it_is_read_whole() {
    const CAP: usize = 64 << 20;
    let server = TestServer::start(Engine::Async, &["udp://127.0.0.1:0"]);
    let endpoint = server.endpoint(0).to_string();
    let (output, written) = run_with_endless_line(&["client", &endpoint], b"ok\n", CAP);
    assert_output(&output, 2, "OK\n");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("an input line is larger than one datagram"),
        "stderr: {stderr:?}"
    );
    assert!(
        written.is_some(),
        "the client read a {CAP}-byte line whole before refusing it"
    );
}

// ---------------------------------------------------------------------------------------------
// Streams: full duplex, half-close

/// Types lines one at a time and reads each reply while stdin is still open, then closes
/// stdin and expects the client to exit 0 once the server has closed.
fn full_duplex(endpoint: &Endpoint) {
    let mut session = Session::start(&["client", &endpoint.to_string()]);
    session.type_in("hello world\n");
    // The reply arrives while stdin is still open: the client reads and writes at once.
    session.stdout.wait_for("HELLO WORLD\n");
    session.type_in("straße\n");
    session.stdout.wait_for("HELLO WORLD\nSTRASSE\n");
    // EOF on stdin: the client half-closes, the server reads EOF and closes, the client exits.
    session.close_stdin();
    let (code, stdout) = session.finish();
    assert_eq!(code, Some(0), "{endpoint}");
    assert_eq!(stdout, "HELLO WORLD\nSTRASSE\n", "{endpoint}");
}

#[test]
fn tcp_is_full_duplex_on_the_async_engine() {
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0"]);
    full_duplex(server.endpoint(0));
}

#[test]
fn tcp_is_full_duplex_on_the_sequential_engine() {
    let server = TestServer::start(Engine::Sequential, &["tcp://127.0.0.1:0"]);
    full_duplex(server.endpoint(0));
}

#[test]
fn unix_streams_are_full_duplex_too() {
    for engine in [Engine::Async, Engine::Sequential] {
        let server = TestServer::start(engine, &["unix://{dir}/s.sock"]);
        assert!(server.endpoint(0).to_string().starts_with("unix://"));
        full_duplex(server.endpoint(0));
    }
}

#[test]
fn tcp_client_exits_when_the_server_closes_first_though_stdin_stays_open() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut conn = accept(listener);
        conn.write_all(b"bye").unwrap();
        // Dropped: closed.
    });
    let mut session = Session::start(&["client", &tcp(addr)]);
    // stdin is never closed: the client must not wait for it.
    session.stdout.wait_for("bye");
    server.join().unwrap();
    assert!(session.process.stdin.is_some());
    let (code, stdout) = session.finish();
    assert_eq!(code, Some(0));
    assert_eq!(stdout, "bye");
}

#[test]
fn unix_client_exits_when_the_server_closes_first_though_stdin_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bye.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(b"bye").unwrap();
    });
    let endpoint = format!("unix://{}", path.display());
    let mut session = Session::start(&["client", &endpoint]);
    session.stdout.wait_for("bye");
    server.join().unwrap();
    let (code, stdout) = session.finish();
    assert_eq!(code, Some(0));
    assert_eq!(stdout, "bye");
}

#[test]
fn the_server_sees_eof_once_stdin_ends() {
    let (addr, server) = counting_server();
    let output = run(&["client", &tcp(addr)], b"hello");
    // The server could only count the bytes after reading EOF: the client half-closed.
    assert_output(&output, 0, "5");
    assert_eq!(server.join().unwrap(), b"hello");
}

#[test]
fn the_server_sees_eof_on_a_unix_stream_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("count.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _): (UnixStream, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let mut request = Vec::new();
        conn.read_to_end(&mut request).expect("read to EOF");
        conn.write_all(request.len().to_string().as_bytes())
            .unwrap();
    });
    let endpoint = format!("unix://{}", path.display());
    let output = run(&["client", &endpoint], "straße\n".as_bytes());
    assert_output(&output, 0, "8");
    server.join().unwrap();
}

#[test]
fn no_shutdown_keeps_the_write_side_open_after_stdin_ends() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut session = Session::start(&["client", "--no-shutdown", &tcp(addr)]);
    session.type_in("hello");
    session.close_stdin();
    let mut conn = accept(listener);
    let mut request = [0u8; 5];
    conn.read_exact(&mut request).expect("the client's input");
    assert_eq!(&request, b"hello");

    // The client has read its stdin to the end, yet the server must not see EOF.
    conn.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    match conn.read(&mut buf) {
        Err(e) if matches!(e.kind(), IoErrorKind::WouldBlock | IoErrorKind::TimedOut) => {}
        Ok(0) => panic!("--no-shutdown: the server saw EOF"),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        session.process.child.try_wait().unwrap().is_none(),
        "the client waits for the server"
    );

    // The connection still works both ways: the server answers and closes, the client exits.
    conn.write_all(b"5").unwrap();
    drop(conn);
    let (code, stdout) = session.finish();
    assert_eq!(code, Some(0));
    assert_eq!(stdout, "5");
}

#[test]
fn no_shutdown_client_ends_when_killed_and_the_server_then_sees_eof() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut session = Session::start(&["client", "--no-shutdown", &tcp(addr)]);
    session.close_stdin();
    let mut conn = accept(listener);
    conn.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 16];
    let read = conn.read(&mut buf);
    assert!(
        matches!(&read, Err(e) if matches!(e.kind(), IoErrorKind::WouldBlock | IoErrorKind::TimedOut)),
        "--no-shutdown with an empty stdin: no EOF, got {read:?}"
    );
    session.process.child.kill().unwrap();
    session.process.child.wait_timeout(SAFETY_TIMEOUT).unwrap();
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    assert_eq!(
        conn.read(&mut buf).unwrap(),
        0,
        "the kill closed the socket"
    );
}

// ---------------------------------------------------------------------------------------------
// --bind

/// Whether this machine routes all of 127.0.0.0/8 to loopback (Linux does; macOS only 127.0.0.1).
fn has_second_loopback_address() -> bool {
    UdpSocket::bind("127.0.0.2:0").is_ok()
}

#[test]
fn bind_chooses_the_source_address_of_tcp_and_udp() {
    if !has_second_loopback_address() {
        eprintln!("skipped: 127.0.0.2 is not a loopback address here");
        return;
    }
    // TCP: the server replies with the address it sees.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut conn = accept(listener);
        let peer = conn.peer_addr().unwrap();
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
        conn.write_all(peer.ip().to_string().as_bytes()).unwrap();
    });
    let output = run(&["client", "--bind", "127.0.0.2", &tcp(addr)], b"");
    assert_output(&output, 0, "127.0.0.2");
    server.join().unwrap();

    // UDP: likewise, and the port asked for is used too.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let addr = socket.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let (_, from) = socket.recv_from(&mut buf).unwrap();
        socket
            .send_to(from.ip().to_string().as_bytes(), from)
            .unwrap();
    });
    let output = run(
        &["client", "--bind", "127.0.0.2", &format!("udp://{addr}")],
        b"x\n",
    );
    assert_output(&output, 0, "127.0.0.2\n");
    server.join().unwrap();
}

/// A reply that comes after its time-out, but before the next line is sent, must not be
/// printed as the reply to that next line (every later reply would be off by one): the client
/// drops late replies before each send.
#[test]
fn udp_a_late_reply_is_not_taken_for_the_next_lines_reply() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let endpoint = format!("udp://{}", server.local_addr().unwrap());
    let mut session = Session::start(&["client", "-w", "200ms", &endpoint]);
    let mut buf = [0u8; 64];

    session.type_in("a\n");
    let (n, client) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"a");
    // The client gives up on "a" ...
    session.process.wait_for_line("no reply");
    // ... and then the reply comes, late (queued on loopback before send_to returns).
    server.send_to(b"A", client).unwrap();

    session.type_in("b\n");
    let (n, _) = server.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"b");
    server.send_to(b"B", client).unwrap();
    session.close_stdin();
    let (code, stdout) = session.finish();
    assert_eq!(code, Some(5), "one reply was missing");
    assert_eq!(stdout, "B\n", "the reply to \"b\" is B");
}

// ---------------------------------------------------------------------------------------------
// Resets, a source address that cannot be bound, --quit-after

/// Closes with an RST instead of a FIN, as a server refusing a denied peer does.
fn reset(conn: TcpStream) {
    socket2::SockRef::from(&conn)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(conn);
}

#[test]
fn tcp_client_exits_4_when_the_server_resets_before_any_reply() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut conn = accept(listener);
        let mut request = Vec::new();
        conn.read_to_end(&mut request).unwrap();
        reset(conn);
        request
    });
    let output = run(&["client", &tcp(addr)], b"knock\n");
    assert_output(&output, 4, "");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("reset by the server before any reply"),
        "{stderr:?}"
    );
    assert_eq!(server.join().unwrap(), b"knock\n");
}

#[test]
fn tcp_client_exits_1_when_the_server_resets_after_part_of_a_reply() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let mut conn = accept(listener);
        let mut request = Vec::new();
        conn.read_to_end(&mut request).unwrap();
        conn.write_all(b"PA").unwrap();
        reset(conn);
    });
    let output = run(&["client", &tcp(addr)], b"knock\n");
    assert_output(&output, 1, "PA");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("reset by the server after 2 bytes"),
        "{stderr:?}"
    );
    server.join().unwrap();
}

#[test]
fn client_exits_7_when_its_source_address_cannot_be_bound() {
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().to_string();
    let output = run(&["client", "-s", &taken, &taken], b"x\n");
    assert_output(&output, 7, "");
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot bind tcp://{taken}")),
        "{stderr:?}"
    );
}

#[test]
fn tcp_client_quit_after_exits_0_when_the_server_keeps_the_connection_open() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let mut conn = accept(listener);
        let mut request = Vec::new();
        conn.read_to_end(&mut request).unwrap();
        conn.write_all(b"HELLO\n").unwrap();
        let _ = rx.recv_timeout(SAFETY_TIMEOUT); // open until the client is done
    });
    let output = run(&["client", "--quit-after", "300ms", &tcp(addr)], b"hello\n");
    assert_output(&output, 0, "HELLO\n");
    tx.send(()).unwrap();
    server.join().unwrap();
}

#[test]
fn client_takes_a_bare_port_as_localhost() {
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0"]);
    let port = server.addr().port().to_string();
    let output = run(&["client", &port], b"bare\n");
    assert_output(&output, 0, "BARE\n");
}
