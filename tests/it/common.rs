//! Shared test fixtures: an in-process server that stops itself, clients for every transport,
//! and a `socketkit` child process whose stderr lines can be awaited.

#![allow(dead_code)] // not every test module uses every helper

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use socketkit::{Endpoint, Engine, Server, ServerBuilder, ShutdownHandle};
use wait_timeout::ChildExt;

/// A safety net on every client socket: a bug fails the test fast instead of hanging it.
/// Never used to synchronise.
pub const SAFETY_TIMEOUT: Duration = Duration::from_secs(10);

/// A server running on its own thread; dropping it shuts it down and joins it, so a failing
/// assert never leaks a server.
pub struct TestServer {
    endpoints: Vec<Endpoint>,
    stop: ShutdownHandle,
    thread: Option<JoinHandle<Result<(), socketkit::Error>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Serves upper on `engine` at each endpoint text. `unix://{dir}/x` style paths may use
    /// the placeholder `{dir}`, replaced by a fresh temporary directory.
    pub fn start(engine: Engine, endpoints: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut builder = Server::builder().engine(engine);
        for text in endpoints {
            let text = text.replace("{dir}", dir.path().to_str().unwrap());
            builder = builder.listen(text.parse().unwrap());
        }
        let mut server = TestServer::with(builder);
        server._dir = Some(dir);
        server
    }

    /// Binds and serves a configured builder.
    pub fn with(builder: ServerBuilder) -> TestServer {
        // A test of the uring engine must run on it: a silent fallback must not pass it.
        let wants_uring = format!("{builder:?}").contains("engine: Uring");
        let server = builder.bind().expect("bind");
        if wants_uring {
            assert_eq!(server.engine(), Engine::Uring, "the uring engine fell back");
        }
        let endpoints = server.local_endpoints().to_vec();
        let stop = server.shutdown_handle();
        let thread = std::thread::spawn(move || server.serve_forever());
        TestServer {
            endpoints,
            stop,
            thread: Some(thread),
            _dir: None,
        }
    }

    pub fn endpoint(&self, index: usize) -> &Endpoint {
        &self.endpoints[index]
    }

    /// The first endpoint's socket address (TCP or UDP).
    pub fn addr(&self) -> SocketAddr {
        self.endpoints[0].socket_addrs().unwrap()[0]
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.stop.clone()
    }

    /// Stops the server and returns what `serve_forever` returned.
    pub fn stop(mut self) -> Result<(), socketkit::Error> {
        self.stop.shutdown();
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("server thread panicked")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Sends `request` the way `socketkit send` does and returns the whole reply: on a stream,
/// write, half-close, read to EOF; on datagrams, one datagram out and one back.
pub fn exchange(endpoint: &Endpoint, request: &[u8]) -> Vec<u8> {
    match endpoint {
        Endpoint::Tcp { .. } => {
            let mut conn = TcpStream::connect(endpoint.socket_addrs().unwrap()[0]).unwrap();
            conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
            conn.write_all(request).unwrap();
            conn.shutdown(Shutdown::Write).unwrap();
            let mut reply = Vec::new();
            conn.read_to_end(&mut reply).unwrap();
            reply
        }
        Endpoint::Unix(_) => {
            let mut conn = UnixStream::connect_addr(&unix_addr(endpoint)).unwrap();
            conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
            conn.write_all(request).unwrap();
            conn.shutdown(Shutdown::Write).unwrap();
            let mut reply = Vec::new();
            conn.read_to_end(&mut reply).unwrap();
            reply
        }
        Endpoint::Udp { .. } => {
            let server = endpoint.socket_addrs().unwrap()[0];
            let local: SocketAddr = if server.is_ipv4() {
                "127.0.0.1:0".parse().unwrap()
            } else {
                "[::1]:0".parse().unwrap()
            };
            let socket = UdpSocket::bind(local).unwrap();
            socket.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
            socket.send_to(request, server).unwrap();
            let mut buf = vec![0u8; 65_536];
            let (n, from) = socket.recv_from(&mut buf).unwrap();
            assert_eq!(from, server);
            buf.truncate(n);
            buf
        }
        Endpoint::UnixSeqpacket(path) => {
            // One record out, a half-close, and the reply records to the end.
            let conn = socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::SEQPACKET, None)
                .unwrap();
            conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
            conn.connect(&socket2::SockAddr::unix(path).unwrap())
                .unwrap();
            conn.send(request).unwrap();
            conn.shutdown(Shutdown::Write).unwrap();
            let mut reply = Vec::new();
            (&conn).read_to_end(&mut reply).unwrap();
            reply
        }
        Endpoint::Tls { .. } => panic!("exchange() speaks plain sockets, not {endpoint}"),
        Endpoint::UnixDatagram(_) => {
            let dir = tempfile::tempdir().unwrap();
            let own = dir.path().join("client.sock");
            let socket = UnixDatagram::bind(&own).unwrap();
            socket.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
            socket.send_to_addr(request, &unix_addr(endpoint)).unwrap();
            let mut buf = vec![0u8; 65_536];
            let n = socket.recv(&mut buf).unwrap();
            buf.truncate(n);
            buf
        }
    }
}

/// A Unix endpoint's socket address: its path, or its Linux abstract name (`unix://@name`).
pub fn unix_addr(endpoint: &Endpoint) -> std::os::unix::net::SocketAddr {
    use std::os::linux::net::SocketAddrExt;
    match endpoint.abstract_name() {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap(),
        None => std::os::unix::net::SocketAddr::from_pathname(endpoint.path().unwrap()).unwrap(),
    }
}

/// The `socketkit` binary built for these tests.
pub fn socketkit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_socketkit"))
}

/// The path of a Python peer program in `tests/peers/`.
pub fn peer(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// A child process whose stderr lines are collected on a thread, so a test can wait for a
/// line (an event) instead of sleeping. Killed on drop.
pub struct Spawned {
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Every stderr line seen so far.
    pub seen: Vec<String>,
    /// Whether the command asked for the uring engine (and did not rule it out): its
    /// `listening on` lines must then name it.
    uring: bool,
}

impl Spawned {
    /// Starts `command` with piped stdin and stderr (stdout piped too, readable via `child`).
    pub fn start(mut command: Command) -> Spawned {
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let refused = command
            .get_envs()
            .any(|(k, v)| k == "SOCKETKIT_URING" && v.is_some_and(|v| v == "refuse"));
        let uring = !refused
            && args
                .windows(2)
                .any(|w| matches!(w[0].as_str(), "-e" | "--engine") && w[1] == "uring");
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Spawned {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            uring,
        }
    }

    /// Waits for a stderr line containing `needle` and returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(SAFETY_TIMEOUT) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no stderr line with {needle:?}; saw {:#?}", self.seen),
            }
        }
    }

    /// Collects the stderr lines that have arrived so far, without waiting, and returns every
    /// line seen.
    pub fn lines_so_far(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Waits for `count` "listening on ENDPOINT (...)" lines and returns the endpoints.
    pub fn listening(&mut self, count: usize) -> Vec<Endpoint> {
        (0..count)
            .map(|_| {
                let line = self.wait_for_line("listening on ");
                if self.uring {
                    assert!(
                        line.ends_with(", uring)"),
                        "the uring engine fell back: {line}"
                    );
                }
                let text = line
                    .split("listening on ")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .unwrap();
                text.parse().unwrap()
            })
            .collect()
    }

    /// Sends a signal to the child.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// Waits for the child to exit (bounded by the safety timeout) and returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        use wait_timeout::ChildExt;
        match self.child.wait_timeout(SAFETY_TIMEOUT).unwrap() {
            Some(status) => status.code(),
            None => panic!("child did not exit; stderr so far {:#?}", self.seen),
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A finished command's stdout, as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A finished command's stderr, as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit code, showing both streams when it differs.
#[track_caller]
pub fn assert_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit status {:?}\nstdout: {:?}\nstderr: {:?}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// The first line a child prints on stdout (a server's ready line), waited for on a thread and
/// bounded by the safety time-out. `what` names the child in the failure message.
pub fn first_stdout_line(child: &mut Child, what: &str) -> String {
    let stdout = child.stdout.take().expect("a piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(SAFETY_TIMEOUT)
        .unwrap_or_else(|_| panic!("{what} printed no ready line"))
}

/// Runs a short-lived peer (Python, nc, socat, socketkit) to completion with `stdin` as its input, reading its output on threads (a
/// chatty child never blocks on a full pipe); kills it and fails after the safety time-out.
pub fn run_peer(command: &mut Command, stdin: &[u8]) -> Output {
    // The program and its short arguments (not a whole inline Python program).
    let what: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|arg| arg.to_string_lossy().into_owned())
        .filter(|arg| arg.len() < 100)
        .collect();
    let what = what.join(" ");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // A peer that does not read its stdin (it exits first) makes this fail with EPIPE: fine.
    let writer = std::thread::spawn(move || drop(input.write_all(&stdin)));
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let Some(status) = child.wait_timeout(SAFETY_TIMEOUT).unwrap() else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} did not finish within {SAFETY_TIMEOUT:?}");
    };
    writer.join().unwrap();
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Reads a child's pipe to its end on a thread of its own.
pub fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}
