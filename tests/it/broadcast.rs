//! `socketkit send --broadcast`: one datagram to a broadcast address, one output line per
//! responder.
//!
//! Loopback has no broadcast address, so these tests build their own little LAN out of Linux
//! network namespaces ([`crate::netns::Lab`]: host N is 10.77.0.N, broadcast 10.77.0.255);
//! where they cannot be made the tests print SKIP to stderr and pass.

use std::io::ErrorKind as IoErrorKind;
use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::{Spawned, assert_code, socketkit, stderr, stdout};
use crate::netns::{Lab, RUN_TIMEOUT, or_skip};

/// The port every server listens on; the namespaces are private, so a fixed one is safe.
const PORT: u16 = 12000;

/// The lab's broadcast address.
const BROADCAST: &str = "10.77.0.255";

/// A lab of `count` hosts, or `None` after printing why `test` is skipped.
fn lab(count: usize, test: &str) -> Option<Lab> {
    or_skip(&format!("broadcast::{test}"), || Lab::new("bc", count))
}

/// Starts `socketkit serve SERVICE -l udp://0.0.0.0:PORT` on host `n` and waits until it
/// listens.
fn serve(lab: &Lab, n: usize, service: &str) -> Spawned {
    lab.host(n)
        .serve(&format!("udp://0.0.0.0:{PORT}"), &[service])
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
        serve(&lab, 2, "upper"),
        serve(&lab, 3, "echo"),
        serve(&lab, 4, "upper"),
    ];
    let target = format!("udp://{BROADCAST}:{PORT}");

    let output = lab
        .host(1)
        .run(&["send", "--broadcast", &target, "hello", "-w", "1s"]);
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
    let output = lab
        .host(1)
        .run(&["send", "-b", &target, "Mixed case", "-w", "1s"]);
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
    let output = lab
        .host(1)
        .run(&["send", "--broadcast", &target, "hello", "-w", "500ms"]);
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
    let discard = serve(&lab, 2, "discard");
    let output = lab
        .host(1)
        .run(&["send", "--broadcast", &target, "hello", "-w", "500ms"]);
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
