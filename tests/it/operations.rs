//! Running in production, through the CLI: the clients' `--proxy-protocol` against
//! `serve --proxy-protocol`, `--reuse-port`, and systemd's socket activation and readiness.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{Spawned, assert_code, socketkit, stderr, stdout};

/// `socketkit serve ARGS -v`, waited for until it listens; returns it and its first endpoint.
fn serve(args: &[&str]) -> (Spawned, String) {
    let mut command = socketkit();
    command.arg("serve").args(args).arg("-v");
    let mut server = Spawned::start(command);
    let endpoint = server.listening(1).remove(0).to_string();
    (server, endpoint)
}

#[test]
fn the_clients_proxy_headers_reach_serve_proxy_protocol() {
    let (mut server, endpoint) = serve(&[
        "echo",
        "-l",
        "tcp://127.0.0.1:0",
        "--proxy-protocol",
        "--deny",
        "192.0.2.66",
    ]);
    let send = |args: &[&str]| {
        socketkit()
            .arg("send")
            .arg(&endpoint)
            .args(args)
            .output()
            .unwrap()
    };

    let v1 = send(&[
        "hi",
        "--proxy-protocol",
        "v1",
        "--proxy-source",
        "192.0.2.7:5",
    ]);
    assert_code(&v1, 0);
    assert_eq!(stdout(&v1), "hi");
    server.wait_for_line("client=192.0.2.7:5");

    // The socket's own address when no source is given.
    let own = send(&["own", "--proxy-protocol", "v2"]);
    assert_code(&own, 0);
    assert_eq!(stdout(&own), "own");

    let denied = send(&[
        "x",
        "--proxy-protocol",
        "v2",
        "--proxy-source",
        "192.0.2.66:1",
    ]);
    assert_code(&denied, 4);
    server.wait_for_line("refused by the access list");

    let plain = send(&["no header"]);
    assert_ne!(plain.status.code(), Some(0), "{}", stderr(&plain));
    server.wait_for_line("PROXY header error: no PROXY header");

    let client = socketkit()
        .args([
            "client",
            &endpoint,
            "--proxy-protocol",
            "v1",
            "--proxy-source",
        ])
        .arg("[2001:db8::1]:7")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut client = client;
    std::io::Write::write_all(&mut client.stdin.take().unwrap(), b"typed\n").unwrap();
    let output = client.wait_with_output().unwrap();
    assert_code(&output, 0);
    assert_eq!(stdout(&output), "typed\n");
    server.wait_for_line("client=[2001:db8::1]:7");

    let bench = socketkit()
        .args(["bench", &endpoint, "-m", "connect", "-c", "2", "-n", "40"])
        .args(["--expect", "echo", "--json", "--proxy-protocol", "v2"])
        .output()
        .unwrap();
    assert_code(&bench, 0);
    let report: serde_json::Value = serde_json::from_str(stdout(&bench).trim()).unwrap();
    assert_eq!(report["ok"], 40, "{report}");
    assert_eq!(report["errors"], 0, "{report}");

    // bench's io_uring loops send no header: refused as usage, not run without one.
    let uring = socketkit()
        .args(["bench", &endpoint, "-e", "uring", "--proxy-protocol", "v2"])
        .output()
        .unwrap();
    assert_code(&uring, 2);
    assert!(stderr(&uring).contains("--proxy-protocol needs --engine async"));

    // Datagrams have no header: refused as usage.
    let udp = socketkit()
        .args(["send", "udp://127.0.0.1:9", "x", "--proxy-protocol", "v1"])
        .output()
        .unwrap();
    assert_code(&udp, 2);
}

/// On a `tls://` listener the PROXY header comes first and the TLS handshake after it, as
/// HAProxy sends them (`send-proxy-v2` with `ssl`): the clients send it so, `serve` reads it
/// so, and the header's client is what the access list, the logs and a program after `--`
/// (its UCSPI variables) see. A TLS client without the header is a header error.
#[cfg(feature = "tls")]
#[test]
fn on_tls_the_proxy_header_comes_before_the_handshake() {
    let mut command = socketkit();
    command.args([
        "-v",
        "serve",
        "-l",
        "tls://127.0.0.1:0",
        "--tls-self-signed",
    ]);
    command.args(["--proxy-protocol", "--deny", "192.0.2.66", "--"]);
    command.args(["sh", "-c", "echo \"$TCPREMOTEIP:$TCPREMOTEPORT\""]);
    let mut server = Spawned::start(command);
    let endpoint = server.listening(1).remove(0).to_string();
    let send = |args: &[&str]| {
        socketkit()
            .args(["send", &endpoint, "x", "--tls-insecure"])
            .args(args)
            .output()
            .unwrap()
    };
    for (version, source) in [("v2", "198.51.100.7:4000"), ("v1", "198.51.100.8:4001")] {
        let out = send(&["--proxy-protocol", version, "--proxy-source", source]);
        assert_code(&out, 0);
        assert_eq!(stdout(&out), format!("{source}\n"), "{version}");
    }
    // Reset after its header: the client's handshake fails (exit 8), nothing served.
    let denied = send(&["--proxy-protocol", "v2", "--proxy-source", "192.0.2.66:1"]);
    assert_code(&denied, 8);
    assert_eq!(stdout(&denied), "");
    server.wait_for_line("refused by the access list (--allow/--deny) peer=192.0.2.66:1");
    // The handshake's first record where the header should be.
    let plain = send(&[]);
    assert_code(&plain, 8);
    server.wait_for_line("PROXY header error: no PROXY header");

    // bench too: each connection's header, then its handshake.
    let (_upper, endpoint) = serve(&[
        "-l",
        "tls://127.0.0.1:0",
        "--tls-self-signed",
        "--proxy-protocol",
    ]);
    let bench = socketkit()
        .args(["bench", &endpoint, "-m", "connect", "-c", "2", "-n", "40"])
        .args(["--json", "--tls-insecure", "--proxy-protocol", "v2"])
        .output()
        .unwrap();
    assert_code(&bench, 0);
    let report: serde_json::Value = serde_json::from_str(stdout(&bench).trim()).unwrap();
    assert_eq!(report["ok"], 40, "{report}");
    assert_eq!(report["tls_handshakes"], 40, "{report}");
}

#[test]
fn reuse_port_lets_servers_share_a_port_and_the_kernel_spreads_connections() {
    let (mut first, endpoint) = serve(&["-l", "tcp://127.0.0.1:0", "--reuse-port"]);
    let (mut second, again) = serve(&["-l", &endpoint, "--reuse-port"]);
    assert_eq!(endpoint, again);
    // Without the option, a third server is still refused the port.
    let third = socketkit()
        .args(["serve", "-l", &endpoint])
        .output()
        .unwrap();
    assert_code(&third, 7);
    // The kernel hashes each new connection's source port: both get some, soon.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut served = [false, false];
    for attempt in 0.. {
        assert!(
            attempt < 400 && Instant::now() < deadline,
            "one server got every connection"
        );
        let out = socketkit().args(["send", &endpoint, "x"]).output().unwrap();
        assert_eq!(stdout(&out), "X");
        for (i, server) in [&mut first, &mut second].into_iter().enumerate() {
            served[i] |= server
                .lines_so_far()
                .iter()
                .any(|l| l.contains("connection accepted"));
        }
        if served == [true, true] {
            break;
        }
    }
}

/// A Unix datagram socket the test binds as systemd's NOTIFY_SOCKET.
fn notify_socket(dir: &std::path::Path) -> (UnixDatagram, std::path::PathBuf) {
    let path = dir.join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(super::common::SAFETY_TIMEOUT))
        .unwrap();
    (socket, path)
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn systemd_socket_activation_adopts_the_sockets_and_says_ready() {
    if !have("systemd-socket-activate") {
        eprintln!("skipped: systemd-socket-activate is not installed (Debian's systemd package)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (notify, notify_path) = notify_socket(dir.path());
    let unix = dir.path().join("upper.sock");
    // Port 0 is not possible here (the activator prints only what it was given): take a
    // free port and give it back.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new("systemd-socket-activate");
    command
        .arg("-l")
        .arg(format!("127.0.0.1:{port}"))
        .arg("-l")
        .arg(&unix)
        .arg("--fdname=echo:unit")
        .args(["-E", "NOTIFY_SOCKET"])
        .env("NOTIFY_SOCKET", &notify_path)
        .arg(env!("CARGO_BIN_EXE_socketkit"))
        .args(["serve", "-v"]);
    let mut activator = Spawned::start(command);
    activator.wait_for_line(&format!("Listening on {}", unix.display()));
    // The first connection starts socketkit, which finds both sockets: `echo` by its name,
    // the other one for the default service (upper). No default endpoint is bound.
    let echo = socketkit()
        .args(["send", &format!("tcp://127.0.0.1:{port}"), "Hi"])
        .output()
        .unwrap();
    assert_code(&echo, 0);
    assert_eq!(stdout(&echo), "Hi");
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY=1 on the notify socket");
    assert_eq!(&buf[..n], b"READY=1\n");
    let upper = socketkit()
        .args(["send", &format!("unix://{}", unix.display()), "Hi"])
        .output()
        .unwrap();
    assert_eq!(stdout(&upper), "HI");
    // Every "listening on" line comes before the readiness line.
    activator.wait_for_line("told the service manager READY=1");
    for line in [
        format!("listening on tcp://127.0.0.1:{port} (echo"),
        format!("listening on unix://{} (upper", unix.display()),
    ] {
        assert!(
            activator.seen.iter().any(|l| l.contains(&line)),
            "{line}: {:#?}",
            activator.seen
        );
    }
    assert!(
        !activator.seen.iter().any(|l| l.contains(":12000")),
        "a default endpoint was bound: {:#?}",
        activator.seen
    );
    activator.signal(nix::sys::signal::Signal::SIGTERM);
    let n = notify
        .recv(&mut buf)
        .expect("STOPPING=1 on the notify socket");
    assert_eq!(&buf[..n], b"STOPPING=1\n");
    assert_eq!(activator.wait_exit(), Some(0));
}

/// Runs `socketkit serve` from Python with descriptor 3 set up by `setup` (Python code that
/// leaves the object to pass in `s`) and the environment `LISTEN_PID` (`self`: the process's
/// own), `LISTEN_FDS=1`; returns the output.
fn activated(setup: &str, listen_pid: &str) -> std::process::Output {
    let script = format!(
        "import os, socket\n{setup}\nos.dup2(s.fileno(), 3)\nos.set_inheritable(3, True)\n\
         pid = str(os.getpid()) if {listen_pid:?} == 'self' else {listen_pid:?}\n\
         os.environ.update(LISTEN_FDS='1', LISTEN_PID=pid)\n\
         os.execv({bin:?}, [{bin:?}, 'serve'])\n",
        bin = env!("CARGO_BIN_EXE_socketkit"),
    );
    Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap()
}

#[test]
fn bad_passed_sockets_are_refused_before_anything_is_served() {
    let cases = [
        ("s = open('/dev/null')", "self", "not a socket (/dev/null)"),
        (
            "s = socket.socket(); s.bind(('127.0.0.1', 0))",
            "self",
            "not listening",
        ),
        (
            "s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)",
            "self",
            "of a kind socketkit does not serve",
        ),
        (
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()",
            "1",
            "LISTEN_PID is 1",
        ),
    ];
    for (setup, pid, expected) in cases {
        let output = activated(setup, pid);
        assert_code(&output, 2);
        let text = stderr(&output);
        assert!(text.contains(expected), "{setup}: {text}");
        assert!(!text.contains("listening on"), "{setup}: {text}");
    }
}

#[test]
fn passed_datagram_sockets_are_served_by_their_named_service() {
    let dir = tempfile::tempdir().unwrap();
    let unix = dir.path().join("dgram");
    // Python binds a UDP and a Unix datagram socket at descriptors 3 and 4, names them for
    // echo and upper, prints the UDP port, and becomes `socketkit serve`.
    let script = format!(
        "import os, socket, sys\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(('127.0.0.1', 0))\n\
         d = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); d.bind({unix:?})\n\
         os.dup2(u.fileno(), 3); os.dup2(d.fileno(), 4)\n\
         os.set_inheritable(3, True); os.set_inheritable(4, True)\n\
         print(u.getsockname()[1], flush=True)\n\
         os.environ.update(LISTEN_FDS='2', LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES='echo:upper')\n\
         os.execv({bin:?}, [{bin:?}, 'serve', '-v'])\n",
        unix = unix.to_str().unwrap(),
        bin = env!("CARGO_BIN_EXE_socketkit"),
    );
    let mut command = Command::new("python3");
    command.args(["-c", &script]);
    let mut server = Spawned::start(command);
    let mut port = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.child.stdout.as_mut().unwrap()),
        &mut port,
    )
    .unwrap();
    server.listening(2);
    let udp = socketkit()
        .args(["send", &format!("udp://127.0.0.1:{}", port.trim()), "Hi"])
        .output()
        .unwrap();
    assert_code(&udp, 0);
    assert_eq!(stdout(&udp), "Hi");
    let dgram = socketkit()
        .args(["send", &format!("unixgram://{}", unix.display()), "Hi"])
        .output()
        .unwrap();
    assert_code(&dgram, 0);
    assert_eq!(stdout(&dgram), "HI");
}
