//! `socketkit send --broadcast`: one datagram to a broadcast address, one output line per
//! responder.
//!
//! Loopback has no broadcast address, so these tests build their own little LAN out of Linux
//! network namespaces: a "switch" namespace holding a bridge, and one namespace per host, each
//! joined to the bridge by a veth pair, on the private subnet 10.77.0.0/24 (host N is
//! 10.77.0.N, broadcast 10.77.0.255). The subnet exists only inside those namespaces, and every
//! veth is created directly inside them, so nothing touches the host's own network. Making
//! namespaces needs root and `ip`; where they cannot be made the tests print SKIP to stderr and
//! pass.

use std::io::ErrorKind as IoErrorKind;
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use socketkit::Endpoint;

use crate::common::{SAFETY_TIMEOUT, Spawned, assert_code, socketkit, stderr, stdout};

/// A bound on every one-shot command, so a bug fails the test instead of hanging it.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The port every server listens on; the namespaces are private, so a fixed one is safe.
const PORT: u16 = 12000;

/// The lab's broadcast address.
const BROADCAST: &str = "10.77.0.255";

/// Labs made by this process so far: with the PID, makes namespace names unique.
static LABS: AtomicUsize = AtomicUsize::new(0);

/// The `socketkit` binary's path.
const BIN: &str = env!("CARGO_BIN_EXE_socketkit");

/// Runs `ip ARGS` to completion; an error describes the failure.
fn ip(args: &[&str]) -> Result<String, String> {
    let output = assert_cmd::Command::new("ip")
        .args(args)
        .timeout(RUN_TIMEOUT)
        .output()
        .map_err(|e| format!("`ip {}`: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// A LAN of network namespaces; dropping it deletes every namespace (and with them their veths
/// and the bridge), even when an assertion failed.
struct Lab {
    switch: String,
    /// Host N (1-based) is `hosts[N - 1]`, address 10.77.0.N.
    hosts: Vec<String>,
}

impl Lab {
    /// Builds a switch and `count` hosts, or says why it cannot (then the caller skips).
    fn new(count: usize) -> Result<Lab, String> {
        let prefix = format!(
            "sk-bc-{}-{}",
            std::process::id(),
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let switch = format!("{prefix}-sw");
        ip(&["netns", "add", &switch])?;
        let mut lab = Lab {
            switch,
            hosts: Vec::new(),
        };
        lab.build(&prefix, count)?;
        Ok(lab)
    }

    fn build(&mut self, prefix: &str, count: usize) -> Result<(), String> {
        let sw = self.switch.clone();
        ip(&["-n", &sw, "link", "set", "lo", "up"])?;
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "br0", "up"])?;
        for n in 1..=count {
            let host = format!("{prefix}-h{n}");
            ip(&["netns", "add", &host])?;
            self.hosts.push(host.clone());
            let port = format!("p{n}");
            let address = format!("10.77.0.{n}/24");
            ip(&["-n", &host, "link", "set", "lo", "up"])?;
            // Made inside the host namespace with its peer put straight into the switch's:
            // the veths never exist in the namespace the tests run in.
            ip(&[
                "-n", &host, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                &sw,
            ])?;
            ip(&["-n", &sw, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &sw, "link", "set", &port, "up"])?;
            ip(&[
                "-n", &host, "addr", "add", &address, "brd", "+", "dev", "eth0",
            ])?;
            ip(&["-n", &host, "link", "set", "eth0", "up"])?;
        }
        // Until the kernel has processed the carrier change a link drops what it is given: wait
        // for every link to be operationally up before any test traffic.
        let mut links = vec![(sw.clone(), "br0".to_string())];
        for (i, host) in self.hosts.iter().enumerate() {
            links.push((sw.clone(), format!("p{}", i + 1)));
            links.push((host.clone(), "eth0".to_string()));
        }
        let deadline = Instant::now() + SAFETY_TIMEOUT;
        for (ns, link) in &links {
            loop {
                let shown = ip(&["-n", ns, "-o", "link", "show", "dev", link])?;
                if shown.contains("state UP") {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("{link} in {ns} never came up: {shown}"));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Host `n`'s namespace.
    fn host(&self, n: usize) -> &str {
        &self.hosts[n - 1]
    }

    /// `ip netns exec HOST socketkit ARGS`, with the caller's RUST_LOG removed.
    fn socketkit(&self, n: usize, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.host(n), BIN])
            .args(args)
            .env_remove("RUST_LOG");
        command
    }

    /// Starts `socketkit serve SERVICE -l udp://0.0.0.0:PORT` on host `n` and waits until it
    /// listens.
    fn serve(&self, n: usize, service: &str) -> Spawned {
        let listen = format!("udp://0.0.0.0:{PORT}");
        let mut server = Spawned::start(self.socketkit(n, &["serve", service, "-l", &listen]));
        let endpoints = server.listening(1);
        assert_eq!(endpoints, vec![listen.parse::<Endpoint>().unwrap()]);
        server
    }

    /// Runs `socketkit ARGS` on host `n` to completion.
    fn run(&self, n: usize, args: &[&str]) -> Output {
        assert_cmd::Command::from_std(self.socketkit(n, args))
            .timeout(RUN_TIMEOUT)
            .output()
            .expect("run socketkit in a namespace")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("broadcast lab cleanup: {e}");
            }
        }
    }
}

/// A lab, or `None` after printing why the test is skipped.
fn lab(count: usize, test: &str) -> Option<Lab> {
    match Lab::new(count) {
        Ok(lab) => Some(lab),
        Err(why) => {
            eprintln!(
                "SKIP broadcast::{test}: cannot build network namespaces \
                 (needs root and iproute2): {why}"
            );
            None
        }
    }
}

/// stdout's lines, sorted: responders answer in any order.
fn sorted_lines(output: &Output) -> Vec<String> {
    let mut lines: Vec<String> = stdout(output).lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// Host `n`'s expected output line.
fn line(n: usize, reply: &str) -> String {
    format!("10.77.0.{n}:{PORT} {reply}")
}

#[test]
fn every_server_on_the_segment_answers_once() {
    let Some(lab) = lab(4, "every_server_on_the_segment_answers_once") else {
        return;
    };
    // Host 1 is the client; the others serve, told apart by their replies.
    let servers = [
        lab.serve(2, "upper"),
        lab.serve(3, "echo"),
        lab.serve(4, "upper"),
    ];
    let target = format!("udp://{BROADCAST}:{PORT}");

    let output = lab.run(1, &["send", "--broadcast", &target, "hello", "-w", "1s"]);
    assert_code(&output, 0);
    assert_eq!(
        sorted_lines(&output),
        vec![line(2, "HELLO"), line(3, "hello"), line(4, "HELLO")],
        "stdout {:?}, stderr {:?}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).ends_with('\n'),
        "every line ends: {:?}",
        stdout(&output)
    );

    // `-b` is the same flag, and a reply with a space in it stays on its responder's line.
    let output = lab.run(1, &["send", "-b", &target, "Mixed case", "-w", "1s"]);
    assert_code(&output, 0);
    assert_eq!(
        sorted_lines(&output),
        vec![
            line(2, "MIXED CASE"),
            line(3, "Mixed case"),
            line(4, "MIXED CASE"),
        ],
        "stderr {:?}",
        stderr(&output)
    );
    drop(servers); // killed by PID before the lab goes away
}

#[test]
fn nobody_answering_exits_5() {
    let Some(lab) = lab(3, "nobody_answering_exits_5") else {
        return;
    };
    let target = format!("udp://{BROADCAST}:{PORT}");

    // Nothing listens anywhere.
    let started = Instant::now();
    let output = lab.run(1, &["send", "--broadcast", &target, "hello", "-w", "500ms"]);
    assert_code(&output, 5);
    assert!(output.stdout.is_empty(), "stdout: {:?}", stdout(&output));
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "gave up before the timeout: {:?}",
        started.elapsed()
    );
    assert!(
        stderr(&output).contains("socketkit: error: "),
        "stderr: {:?}",
        stderr(&output)
    );

    // A server that receives the broadcast but never replies is no answer either.
    let discard = lab.serve(2, "discard");
    let output = lab.run(1, &["send", "--broadcast", &target, "hello", "-w", "500ms"]);
    assert_code(&output, 5);
    assert!(output.stdout.is_empty(), "stdout: {:?}", stdout(&output));
    drop(discard);
}

#[test]
fn broadcast_needs_an_ipv4_udp_endpoint() {
    // On loopback, outside any namespace: the endpoint is refused before anything is sent.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let tcp = format!("tcp://{}", listener.local_addr().unwrap());
    for args in [
        vec!["send", "--broadcast", tcp.as_str(), "hello", "-w", "1s"],
        vec!["send", "-b", tcp.as_str(), "hello"],
        vec!["send", "--broadcast", "udp://[::1]:9", "hello", "-w", "1s"],
    ] {
        let output = assert_cmd::Command::from_std(socketkit())
            .env_remove("RUST_LOG")
            .args(&args)
            .timeout(RUN_TIMEOUT)
            .output()
            .expect("run socketkit");
        assert_code(&output, 2);
        assert!(output.stdout.is_empty(), "stdout: {:?}", stdout(&output));
        let text = stderr(&output);
        assert!(
            text.contains("socketkit: error: ") && text.contains("broadcast"),
            "{args:?}: stderr {text:?}"
        );
    }
    match listener.accept() {
        Err(e) if e.kind() == IoErrorKind::WouldBlock => {}
        other => panic!("--broadcast with tcp:// connected: {other:?}"),
    }
}
