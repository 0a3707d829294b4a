//! `serve -- PROGRAM`: a program as the server (inetd, tcpserver, ncat -e), driven through the
//! CLI with real peers: the UCSPI variables a Python program sees, a crash, a program that
//! never exits, the connection limit counted in the server's children, one run per datagram,
//! and the usage errors.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use socketkit::Endpoint;

use crate::common::{SAFETY_TIMEOUT, Spawned, assert_code, run_peer, socketkit, stderr};

/// `socketkit serve ARGS -- PROGRAM...`, started and listening on `listeners` endpoints.
fn serve(args: &[&str], program: &[&str], listeners: usize) -> (Spawned, Vec<Endpoint>) {
    let mut command = socketkit();
    command.arg("serve").args(args).arg("--").args(program);
    let mut server = Spawned::start(command);
    let endpoints = server.listening(listeners);
    (server, endpoints)
}

fn connect(endpoint: &Endpoint) -> TcpStream {
    let conn = TcpStream::connect(endpoint.socket_addrs().unwrap()[0]).unwrap();
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    conn
}

/// `NAME=value` lines as a map.
fn variables(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Prints the UCSPI variables it was given and the descriptors it holds, then echoes stdin
/// upper-cased: a Python program, as a user would serve one.
const PYTHON_ENV: &str = r#"
import os, sys
for name in ["PROTO", "TCPREMOTEIP", "TCPREMOTEPORT", "TCPLOCALIP", "TCPLOCALPORT",
             "UNIXLOCALPATH", "UNIXLOCALPID", "UNIXREMOTEPID", "UNIXREMOTEEUID", "UNIXREMOTEEGID"]:
    if name in os.environ:
        print(f"{name}={os.environ[name]}")
# Sockets and event descriptors: the server's listeners or runtime leaked into the program.
# (Other descriptors the test's own parent left open pass through every process.)
def kind(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""
leaked = [fd for fd in os.listdir("/proc/self/fd") if kind(fd).startswith(("socket:", "anon_inode:"))]
print(f"FDS={len(leaked)}")
print("ARGS=" + " ".join(sys.argv[1:]), flush=True)
sys.stdout.write(sys.stdin.read().upper())
"#;

#[test]
fn a_python_program_is_told_the_tcp_peer_in_ucspi_variables_and_serves_its_bytes() {
    let (_server, endpoints) = serve(
        &["-l", "tcp://127.0.0.1:0"],
        &["python3", "-c", PYTHON_ENV, "one arg", "$HOME"],
        1,
    );
    let mut conn = connect(&endpoints[0]);
    let (client, server) = (conn.local_addr().unwrap(), conn.peer_addr().unwrap());
    conn.write_all(b"hello, program").unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    let vars = variables(&reply);
    assert_eq!(vars["PROTO"], "TCP", "{reply}");
    assert_eq!(vars["TCPREMOTEIP"], client.ip().to_string());
    assert_eq!(vars["TCPREMOTEPORT"], client.port().to_string());
    assert_eq!(vars["TCPLOCALIP"], server.ip().to_string());
    assert_eq!(vars["TCPLOCALPORT"], server.port().to_string());
    assert_eq!(vars["FDS"], "0", "no socket of the server: {reply}");
    // No shell: the arguments arrive as written, `$HOME` unexpanded.
    assert_eq!(vars["ARGS"], "one arg $HOME");
    assert!(!vars.contains_key("UNIXLOCALPID"));
    assert!(reply.ends_with("HELLO, PROGRAM"), "{reply}");
}

#[test]
fn sixteen_megabytes_through_cat_come_back_whole_and_in_order() {
    // More than the socket buffers and the pipes hold together: both directions flow at once.
    const BYTES: usize = 16 << 20;
    let (_server, endpoints) = serve(&["-l", "tcp://127.0.0.1:0"], &["cat"], 1);
    let mut conn = connect(&endpoints[0]);
    conn.set_write_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let data: Vec<u8> = (0..BYTES).map(|i| (i % 251) as u8).collect();
    let mut reading = conn.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut back = Vec::with_capacity(BYTES);
        reading.read_to_end(&mut back).map(|_| back)
    });
    conn.write_all(&data).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let back = reader.join().unwrap().unwrap();
    assert_eq!(back.len(), BYTES);
    assert!(back == data, "the bytes came back changed");
}

#[test]
fn a_program_on_a_unix_socket_is_told_the_peer_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exec.sock");
    let listen = format!("unix://{}", path.display());
    let (server, _) = serve(&["-l", &listen], &["python3", "-c", PYTHON_ENV], 1);
    let mut conn = UnixStream::connect(&path).unwrap();
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    conn.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    conn.read_to_string(&mut reply).unwrap();
    let vars = variables(&reply);
    assert_eq!(vars["PROTO"], "UNIX", "{reply}");
    assert_eq!(vars["UNIXLOCALPATH"], path.display().to_string());
    assert_eq!(vars["UNIXLOCALPID"], server.child.id().to_string());
    assert_eq!(vars["UNIXREMOTEPID"], std::process::id().to_string());
    assert_eq!(vars["UNIXREMOTEEUID"], nix::unistd::geteuid().to_string());
    assert_eq!(vars["UNIXREMOTEEGID"], nix::unistd::getegid().to_string());
}

#[test]
fn a_crashing_program_costs_only_its_own_connection() {
    // Answers a line with "ok LINE", or dies of SIGSEGV when the line is "crash".
    // No core file left behind by the crash, whatever the machine's limit.
    let program =
        r#"ulimit -c 0; read line; [ "$line" = crash ] && kill -SEGV $$; echo "ok $line""#;
    let (mut server, endpoints) = serve(&["-l", "tcp://127.0.0.1:0"], &["sh", "-c", program], 1);
    // A connection in flight while another one's program crashes.
    let mut before = connect(&endpoints[0]);
    let mut crash = connect(&endpoints[0]);
    crash.write_all(b"crash\n").unwrap();
    let mut reply = Vec::new();
    crash.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"", "the crashed program wrote nothing");
    server.wait_for_line("killed by SIGSEGV");
    before.write_all(b"first\n").unwrap();
    let mut reply = String::new();
    before.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "ok first\n");
    let mut after = connect(&endpoints[0]);
    after.write_all(b"second\n").unwrap();
    let mut reply = String::new();
    after.read_to_string(&mut reply).unwrap();
    assert_eq!(reply, "ok second\n");
}

/// Kills the served program by its PID if a failed assertion leaves it behind (only while its
/// command line is still this test's program, never a process that reused the number).
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.0)).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("time.sleep(1000)") {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0 as i32), Signal::SIGKILL);
        }
    }
}

/// Whether `pid` is still a process (a zombie counts: not reaped).
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_program_that_never_exits_is_killed_at_the_end_of_the_grace_period() {
    // Ignores SIGTERM, so only the SIGKILL that follows it ends it.
    let program = "import os, signal, time\n\
                   signal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
                   print(os.getpid(), flush=True)\n\
                   time.sleep(1000)";
    let (mut server, endpoints) = serve(
        &["-l", "tcp://127.0.0.1:0", "--grace", "300ms"],
        &["python3", "-c", program],
        1,
    );
    let conn = connect(&endpoints[0]);
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line).unwrap();
    let pid: u32 = line.trim().parse().unwrap();
    let _cleanup = KillOnDrop(pid);
    assert!(alive(pid));
    let stopping = Instant::now();
    server.signal(Signal::SIGTERM);
    assert_eq!(server.wait_exit(), Some(0), "{:#?}", server.lines_so_far());
    let took = stopping.elapsed();
    // The grace period, then a second between SIGTERM and SIGKILL, then the reaping.
    assert!(took < Duration::from_secs(5), "serve took {took:?} to stop");
    assert!(!alive(pid), "the program {pid} outlived the server");
    assert!(
        server
            .lines_so_far()
            .iter()
            .any(|l| l.contains("killing 1 program")),
        "{:#?}",
        server.seen
    );
}

#[test]
fn a_program_in_flight_at_shutdown_finishes_within_the_grace_period() {
    let (mut server, endpoints) = serve(
        &["-l", "tcp://127.0.0.1:0", "--grace", "10s"],
        &["sh", "-c", "echo ready; read line; echo \"done $line\""],
        1,
    );
    let mut conn = connect(&endpoints[0]);
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    server.signal(Signal::SIGTERM);
    server.wait_for_line("shutting down");
    // Stopped accepting, yet the run in flight goes on to its end.
    conn.write_all(b"late\n").unwrap();
    let mut rest = String::new();
    reader.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "done late\n");
    assert_eq!(server.wait_exit(), Some(0), "{:#?}", server.lines_so_far());
}

#[test]
fn a_unix_datagram_runs_the_program_with_the_senders_path() {
    let dir = tempfile::tempdir().unwrap();
    let (server_path, client_path) = (dir.path().join("s.sock"), dir.path().join("c.sock"));
    let listen = format!("unixgram://{}", server_path.display());
    let program = r#"printf '%s|%s|%s' "$PROTO" "$UNIXREMOTEPATH" "$(cat)""#;
    let (_server, _) = serve(&["-l", &listen], &["sh", "-c", program], 1);
    let client = std::os::unix::net::UnixDatagram::bind(&client_path).unwrap();
    client.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    client.send_to(b"ping", &server_path).unwrap();
    let mut buf = [0u8; 1024];
    let n = client.recv(&mut buf).unwrap();
    let expected = format!("UNIX|{}|ping", client_path.display());
    assert_eq!(String::from_utf8_lossy(&buf[..n]), expected);
}

#[test]
fn the_servers_access_list_and_idle_time_out_bound_a_program_too() {
    // Refused before anything runs: the program would say so first.
    let (_denied, endpoints) = serve(
        &["-l", "tcp://127.0.0.1:0", "--deny", "127.0.0.0/8"],
        &["sh", "-c", "echo ran"],
        1,
    );
    let mut conn = connect(&endpoints[0]);
    let mut reply = Vec::new();
    let _ = conn.read_to_end(&mut reply); // a reset or an EOF, never the program's line
    assert_eq!(reply, b"");
    // A silent peer is closed at the idle time-out, and its `cat` with it.
    let (mut server, endpoints) = serve(&["-l", "tcp://127.0.0.1:0", "-i", "300ms"], &["cat"], 1);
    let mut conn = connect(&endpoints[0]);
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).unwrap();
    assert_eq!(reply, b"");
    server.wait_for_line("connection closed: idle for 300ms");
    // Stopped by the server, not a crash: no warning.
    let lines = server.lines_so_far();
    assert!(!lines.iter().any(|l| l.contains("WARN")), "{lines:#?}");
}

/// How many children `parent` has now: /proc/PID/stat's fourth field, over every process (this
/// kernel has no /proc/PID/task/TID/children).
fn children_of(parent: u32) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // The command name may hold spaces and parentheses: the fields follow the last ')'.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .is_some_and(|ppid| ppid == parent.to_string())
        })
        .count()
}

#[test]
fn two_hundred_connections_to_cat_never_run_more_than_fifty_programs_at_once() {
    const CLIENTS: usize = 200;
    const LIMIT: usize = 50;
    let (server, endpoints) = serve(
        &["-l", "tcp://127.0.0.1:0", "-m", "50", "--backlog", "256"],
        &["cat"],
        1,
    );
    let server_pid = server.child.id();
    let addr = endpoints[0].socket_addrs().unwrap()[0];
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut most, mut samples) = (0, 0);
            let start = Instant::now();
            while !done.load(Ordering::Relaxed) && start.elapsed() < SAFETY_TIMEOUT * 3 {
                most = most.max(children_of(server_pid));
                samples += 1;
                // A pause between scans of /proc, so the sampler does not take a core from
                // the server it watches.
                std::thread::sleep(Duration::from_millis(2));
            }
            (most, samples)
        })
    };
    let echoed = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let echoed = echoed.clone();
            std::thread::spawn(move || {
                let mut conn = TcpStream::connect(addr).unwrap();
                conn.set_read_timeout(Some(SAFETY_TIMEOUT * 3)).unwrap();
                let line = format!("client {i}\n");
                conn.write_all(line.as_bytes()).unwrap();
                let mut reply = vec![0; line.len()];
                conn.read_exact(&mut reply).unwrap();
                assert_eq!(reply, line.as_bytes());
                // Held a moment with its program running, so that runs overlap (load shape,
                // not synchronisation: the count is what is asserted).
                std::thread::sleep(Duration::from_millis(20));
                conn.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                conn.read_to_end(&mut rest).unwrap();
                assert_eq!(rest, b"", "cat ends at its stdin's end");
                echoed.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    for client in clients {
        client.join().expect("a client failed");
    }
    done.store(true, Ordering::Relaxed);
    let (most, samples) = sampler.join().unwrap();
    eprintln!("at most {most} programs at once, in {samples} samples");
    assert_eq!(echoed.load(Ordering::Relaxed), CLIENTS);
    assert!(most <= LIMIT, "{most} programs ran at once (limit {LIMIT})");
    // The sampler saw the runs: a count that is always 0 would prove nothing.
    assert!(most >= 2, "at most {most} children in {samples} samples");
}

#[test]
fn each_datagram_runs_the_program_once_and_its_stdout_is_the_reply() {
    let program = r#"printf '%s %s %s' "$$" "$PROTO" "$(cat | tr a-z A-Z)""#;
    let (_server, endpoints) = serve(&["-l", "udp://127.0.0.1:0"], &["sh", "-c", program], 1);
    let port = endpoints[0].socket_addrs().unwrap()[0].port();
    // A Python peer sends three datagrams and prints each reply on a line.
    let script = "import socket, sys\n\
                  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  s.settimeout(10)\n\
                  for word in ['one', 'two', 'three']:\n\
                  \x20   s.sendto(word.encode(), ('127.0.0.1', int(sys.argv[1])))\n\
                  \x20   print(s.recv(65536).decode())\n";
    let output = run_peer(
        Command::new("python3").args(["-c", script, &port.to_string()]),
        b"",
    );
    assert_code(&output, 0);
    let replies: Vec<Vec<String>> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').map(String::from).collect())
        .collect();
    let words: Vec<&str> = replies.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(words, ["ONE", "TWO", "THREE"]);
    assert!(replies.iter().all(|r| r[1] == "UDP"), "{replies:?}");
    let mut pids: Vec<&str> = replies.iter().map(|r| r[0].as_str()).collect();
    pids.dedup();
    assert_eq!(pids.len(), 3, "one run per datagram: {replies:?}");
}

/// Runs `socketkit ARGS` to its end (it must not start serving).
fn refused(args: &[&str]) -> String {
    let output = run_peer(socketkit().args(args), b"");
    assert_code(&output, 2);
    let text = stderr(&output);
    assert!(!text.contains("listening on"), "{text}");
    text
}

#[test]
fn a_program_that_does_not_exist_is_refused_at_start() {
    let text = refused(&[
        "serve",
        "-l",
        "tcp://127.0.0.1:0",
        "--",
        "no-such-program-x",
    ]);
    assert!(
        text.contains("no-such-program-x") && text.contains("not found"),
        "{text}"
    );
    assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
}

#[test]
fn a_service_name_and_a_program_together_are_refused() {
    let text = refused(&["serve", "echo", "--", "cat"]);
    assert!(text.contains("not both"), "{text}");
}

#[test]
fn dash_e_with_a_program_gets_a_hint_that_programs_go_after_the_double_dash() {
    let text = refused(&["serve", "-e", "cat"]);
    assert!(text.contains("after --"), "{text}");
    assert!(text.contains("async"), "the engines are listed: {text}");
}

#[test]
fn a_sequenced_packet_listener_refuses_a_program() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unixpacket://{}", dir.path().join("p.sock").display());
    let text = refused(&["serve", "-l", &listen, "--", "cat"]);
    assert!(text.contains("byte stream"), "{text}");
}

#[test]
fn the_thread_engines_refuse_a_program() {
    for engine in ["sequential", "threaded", "pool"] {
        let text = refused(&[
            "serve",
            "-e",
            engine,
            "-l",
            "tcp://127.0.0.1:0",
            "--",
            "cat",
        ]);
        assert!(text.contains("async engine only"), "{engine}: {text}");
    }
}

#[test]
fn a_datagram_run_that_outlives_the_message_time_out_after_its_reply_is_stopped() {
    // Writes its reply and closes its stdout, then lingers: the message time-out bounds the
    // whole run, not only the reply (else it would hold the reply and its slot for 30 s).
    let program = "echo late; exec >&-; exec sleep 30";
    let (mut server, endpoints) = serve(
        &["-l", "udp://127.0.0.1:0", "--message-timeout", "300ms"],
        &["sh", "-c", program],
        1,
    );
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .send_to(b"ping", endpoints[0].socket_addrs().unwrap()[0])
        .unwrap();
    server.wait_for_line("within the message time-out of 300ms: stopped, no reply");
    // The run was stopped before any reply was sent: none ever comes.
    client.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let got = client.recv(&mut buf);
    assert!(
        matches!(&got, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "{got:?}"
    );
}

/// Whether `pid` is gone or a zombie (dead, only not reaped: its parent exited, and reaping it
/// is its new parent's business).
fn dead(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_none_or(|state| state == "Z" || state == "X")
}

#[test]
fn a_second_signal_kills_the_programs_running_before_serve_exits() {
    // Its own process group keeps a terminal's Ctrl-C from it: only the server can stop it.
    let program = "import os, time\n\
                   print(os.getpid(), flush=True)\n\
                   time.sleep(1000)";
    let (mut server, endpoints) = serve(
        &["-l", "tcp://127.0.0.1:0", "--grace", "60s"],
        &["python3", "-c", program],
        1,
    );
    let conn = connect(&endpoints[0]);
    let mut line = String::new();
    BufReader::new(&conn).read_line(&mut line).unwrap();
    let pid: u32 = line.trim().parse().unwrap();
    let _cleanup = KillOnDrop(pid);
    server.signal(Signal::SIGTERM);
    server.wait_for_line("shutting down");
    server.signal(Signal::SIGTERM);
    assert_eq!(
        server.wait_exit(),
        Some(130),
        "{:#?}",
        server.lines_so_far()
    );
    // SIGKILL is delivered asynchronously: bounded wait for the kernel to end it.
    let start = Instant::now();
    while !dead(pid) && start.elapsed() < SAFETY_TIMEOUT {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(dead(pid), "the program {pid} outlived a forced stop");
}
