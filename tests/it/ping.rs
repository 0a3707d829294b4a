//! `socketkit ping`: ICMP echo over both kinds of socket, against the kernel's own echo replies,
//! a scripted Python responder and iputils `ping` on the same target.
//!
//! Every test that pings runs in a network namespace of its own (`ip netns add`), so that
//! `net.ipv4.ping_group_range` and `icmp_echo_ignore_all` are set inside it only, never on the
//! host: a fresh namespace starts with the range "1 0" (no group may open a datagram socket), so
//! root gets the raw socket there; a test widens the range to get the datagram socket, and runs
//! the command as `nobody` (setpriv) so that a raw socket is out of reach and the datagram path
//! is the one tested. Making namespaces needs root and iproute2: where that fails, the test
//! prints SKIP and passes. The comparison with iputils needs its `ping` (`.ci/run` installs
//! iputils-ping); without it that part is skipped with a message. Every run is bounded by -c
//! and -w, and by RUN_TIMEOUT.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wait_timeout::ChildExt;

use crate::common::{SAFETY_TIMEOUT, assert_code, peer, socketkit, stderr, stdout};

/// A bound on every one-shot command.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The `socketkit` binary's path.
const BIN: &str = env!("CARGO_BIN_EXE_socketkit");

/// Namespaces made by this process so far: with the PID, makes their names unique.
static NAMESPACES: AtomicUsize = AtomicUsize::new(0);

/// A network namespace with loopback up; deleted on drop, even when an assertion failed.
struct Netns {
    name: String,
    /// A second namespace, joined by a veth pair, when the test made one.
    peer: Option<String>,
}

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
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Netns {
    fn new() -> Result<Netns, String> {
        let name = format!(
            "sk-ping-{}-{}",
            std::process::id(),
            NAMESPACES.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Netns { name, peer: None };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip netns exec NS PROGRAM ARGS`.
    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .env_remove("RUST_LOG");
        command
    }

    /// Runs a command in the namespace to completion.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        assert_cmd::Command::from_std(self.command(program, args))
            .timeout(RUN_TIMEOUT)
            .output()
            .expect("run a command in the namespace")
    }

    /// `socketkit ARGS` in the namespace, as root.
    fn socketkit(&self, args: &[&str]) -> Output {
        self.run(BIN, args)
    }

    /// `socketkit ARGS` in the namespace as the user nobody (uid and gid 65534, no groups).
    fn socketkit_as_nobody(&self, args: &[&str]) -> Output {
        let mut all = vec![
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            BIN,
        ];
        all.extend_from_slice(args);
        self.run("setpriv", &all)
    }

    /// Sets a sysctl inside this namespace only.
    fn sysctl(&self, setting: &str) {
        let output = self.run("sysctl", &["-qw", setting]);
        assert_code(&output, 0);
    }

    /// Routes TEST-NET-2 (198.51.100.0/24, RFC 5737) to a second namespace that drops it: the
    /// peer holds 10.78.0.2 on a veth and forwards nothing, so echo requests to the prefix
    /// leave and nothing comes back. (A `dummy` link would do the same, but the dummy driver is
    /// not in every kernel; veth is.)
    fn route_test_net_to_nowhere(&mut self) -> Result<(), String> {
        let peer = format!("{}-sink", self.name);
        ip(&["netns", "add", &peer])?;
        self.peer = Some(peer.clone());
        ip(&[
            "-n", &self.name, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns",
            &peer,
        ])?;
        ip(&["-n", &self.name, "addr", "add", "10.78.0.1/24", "dev", "v0"])?;
        ip(&["-n", &peer, "addr", "add", "10.78.0.2/24", "dev", "v1"])?;
        ip(&["-n", &self.name, "link", "set", "v0", "up"])?;
        ip(&["-n", &peer, "link", "set", "v1", "up"])?;
        ip(&[
            "-n",
            &self.name,
            "route",
            "add",
            "198.51.100.0/24",
            "via",
            "10.78.0.2",
        ])?;
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in std::iter::once(&self.name).chain(self.peer.as_ref()) {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("ping namespace cleanup: {e}");
            }
        }
    }
}

/// A namespace, or `None` after printing why the test is skipped.
fn netns(test: &str) -> Option<Netns> {
    match Netns::new() {
        Ok(ns) => Some(ns),
        Err(why) => {
            eprintln!(
                "SKIP ping::{test}: cannot make a network namespace (needs root and iproute2): {why}"
            );
            None
        }
    }
}

/// Whether iputils `ping` is installed; prints why a comparison is skipped when it is not.
fn have_iputils(test: &str) -> bool {
    let found = Command::new("ping")
        .arg("-V")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("iputils"));
    if !found {
        eprintln!(
            "SKIP ping::{test}: iputils ping is not installed (apt-get install iputils-ping)"
        );
    }
    found
}

/// The NDJSON lines of a `--json` run.
fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect()
}

/// The last (summary) object of a `--json` run.
fn summary(output: &Output) -> serde_json::Value {
    let lines = json_lines(output);
    let last = lines.last().expect("a summary line").clone();
    assert_eq!(last["type"], "summary", "{lines:#?}");
    last
}

/// A ping transcript with the numbers that differ from run to run replaced: the round-trip
/// times (`time=0.045 ms`, the rtt line's four values) and the run's length (`time 2003ms`).
/// Counts, loss, sequence numbers, TTLs and sizes stay.
fn shape(text: &str) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with("rtt min/avg/max/mdev = ") {
                return "rtt min/avg/max/mdev = A/B/C/D ms".to_string();
            }
            let mut out = String::new();
            let mut rest = line;
            while let Some(at) = rest.find("time") {
                out.push_str(&rest[..at + 4]);
                rest = &rest[at + 4..];
                let sep = rest.chars().next().unwrap_or(' ');
                if sep == '=' || sep == ' ' {
                    let digits = rest[1..]
                        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                        .map_or(rest.len(), |n| n + 1);
                    if digits > 1 {
                        out.push(sep);
                        out.push('T');
                        rest = &rest[digits..];
                    }
                }
            }
            out.push_str(rest);
            out
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn shape_hides_only_the_times() {
    let text = "64 bytes from ::1: icmp_seq=1 ttl=64 time=0.045 ms\n\
                3 packets transmitted, 3 received, 0% packet loss, time 2003ms\n\
                rtt min/avg/max/mdev = 0.024/0.031/0.038/0.007 ms";
    assert_eq!(
        shape(text),
        "64 bytes from ::1: icmp_seq=1 ttl=64 time=T ms\n\
         3 packets transmitted, 3 received, 0% packet loss, time Tms\n\
         rtt min/avg/max/mdev = A/B/C/D ms"
    );
}

/// The raw socket (root, in a namespace whose ping_group_range allows no group), IPv4 and IPv6:
/// every request answered, the kernel's TTL, and the same transcript as iputils' up to times.
#[test]
fn root_pings_loopback_over_a_raw_socket_like_iputils() {
    let Some(ns) = netns("root_pings_loopback_over_a_raw_socket_like_iputils") else {
        return;
    };
    for target in ["127.0.0.1", "::1"] {
        let output = ns.socketkit(&[
            "ping", "-c", "3", "-i", "0.05", "-w", "10", "--json", target,
        ]);
        assert_code(&output, 0);
        let lines = json_lines(&output);
        let replies: Vec<_> = lines.iter().filter(|l| l["type"] == "reply").collect();
        assert_eq!(replies.len(), 3, "{lines:#?}");
        for (n, reply) in replies.iter().enumerate() {
            assert_eq!(reply["seq"], n as u64 + 1);
            assert_eq!(reply["from"], target);
            assert_eq!(reply["bytes"], 64);
            assert_eq!(reply["ttl"], 64);
        }
        let summary = summary(&output);
        assert_eq!(summary["socket"], "raw", "{target}");
        assert_eq!(summary["transmitted"], 3);
        assert_eq!(summary["received"], 3);
        assert_eq!(summary["loss_percent"], 0.0);
        assert!(
            summary["rtt_ms"]["min"].as_f64().unwrap()
                <= summary["rtt_ms"]["max"].as_f64().unwrap()
        );

        let ours = ns.socketkit(&["ping", "-c", "3", "-i", "0.05", "-w", "10", target]);
        assert_code(&ours, 0);
        if have_iputils("root_pings_loopback_over_a_raw_socket_like_iputils") {
            let theirs = ns.run("ping", &["-c", "3", "-i", "0.05", "-w", "10", target]);
            assert_code(&theirs, 0);
            assert_eq!(shape(&stdout(&ours)), shape(&stdout(&theirs)), "{target}");
        }
    }
}

/// The unprivileged datagram socket: the range widened inside the namespace, the command run
/// as nobody (who cannot open a raw socket), replies matched by the kernel's identifier.
#[test]
fn a_user_in_ping_group_range_pings_over_a_datagram_socket_like_iputils() {
    let test = "a_user_in_ping_group_range_pings_over_a_datagram_socket_like_iputils";
    let Some(ns) = netns(test) else { return };
    ns.sysctl("net.ipv4.ping_group_range=0 2147483647");
    for target in ["127.0.0.1", "::1"] {
        let output = ns.socketkit_as_nobody(&[
            "ping", "-c", "3", "-i", "0.05", "-w", "10", "--json", target,
        ]);
        assert_code(&output, 0);
        let summary = summary(&output);
        assert_eq!(summary["socket"], "datagram", "{target}");
        assert_eq!(summary["transmitted"], 3);
        assert_eq!(summary["received"], 3);
        let replies = json_lines(&output)
            .into_iter()
            .filter(|l| l["type"] == "reply" && l["ttl"] == 64)
            .count();
        assert_eq!(
            replies, 3,
            "the TTL comes from IP_RECVTTL / IPV6_RECVHOPLIMIT"
        );

        let ours = ns.socketkit_as_nobody(&["ping", "-c", "2", "-i", "0.05", "-w", "10", target]);
        assert_code(&ours, 0);
        if have_iputils(test) {
            let mut args = vec!["--reuid=65534", "--regid=65534", "--clear-groups", "--"];
            args.extend(["ping", "-c", "2", "-i", "0.05", "-w", "10", target]);
            let theirs = ns.run("setpriv", &args);
            assert_code(&theirs, 0);
            assert_eq!(shape(&stdout(&ours)), shape(&stdout(&theirs)), "{target}");
        }
    }
}

/// Neither socket allowed: one line that names both ways, and no ping.
#[test]
fn without_either_permission_the_error_names_both_ways() {
    let Some(ns) = netns("without_either_permission_the_error_names_both_ways") else {
        return;
    };
    let output = ns.socketkit_as_nobody(&["ping", "-c", "1", "127.0.0.1"]);
    assert_code(&output, 1);
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("net.ipv4.ping_group_range (now \"1 0\""),
        "{err}"
    );
    assert!(err.contains("root or CAP_NET_RAW"), "{err}");
}

/// iputils' 2 ms rule: a user may not ask for a shorter interval, root may.
#[test]
fn an_interval_under_2ms_is_refused_for_a_user_but_not_for_root() {
    let Some(ns) = netns("an_interval_under_2ms_is_refused_for_a_user_but_not_for_root") else {
        return;
    };
    ns.sysctl("net.ipv4.ping_group_range=0 2147483647");
    let output = ns.socketkit_as_nobody(&["ping", "-c", "2", "-i", "0.001", "127.0.0.1"]);
    assert_code(&output, 2);
    assert!(stderr(&output).contains("the shortest a user other than root may use is 2ms"));
    let output = ns.socketkit_as_nobody(&["ping", "-c", "2", "-i", "0.002", "127.0.0.1"]);
    assert_code(&output, 0);
    let output = ns.socketkit(&["ping", "-c", "2", "-i", "0.001", "127.0.0.1"]);
    assert_code(&output, 0);
}

/// A host that never answers: 100% loss and exit 5, with the same counts line as iputils.
#[test]
fn a_host_that_does_not_answer_is_100_percent_loss_and_exit_5() {
    let test = "a_host_that_does_not_answer_is_100_percent_loss_and_exit_5";
    let Some(mut ns) = netns(test) else { return };
    if let Err(why) = ns.route_test_net_to_nowhere() {
        eprintln!("SKIP ping::{test}: cannot route the test prefix: {why}");
        return;
    }
    let args = ["-c", "3", "-i", "0.2", "-W", "0.5", "198.51.100.7"];
    let ours = ns.socketkit(&[&["ping"][..], &args].concat());
    assert_code(&ours, 5);
    let text = stdout(&ours);
    assert!(
        text.contains("3 packets transmitted, 0 received, 100% packet loss"),
        "{text}"
    );
    assert!(!text.contains("rtt"), "{text}");
    assert!(stderr(&ours).contains("timed out"), "{}", stderr(&ours));
    if have_iputils(test) {
        let theirs = ns.run("ping", &args);
        assert_code(&theirs, 1); // iputils' own code for no reply
        assert_eq!(shape(&text), shape(&stdout(&theirs)));
    }
    // -w alone: it sends until the deadline.
    let output = ns.socketkit(&["ping", "-w", "1", "-i", "0.3", "--json", "198.51.100.7"]);
    assert_code(&output, 5);
    let summary = summary(&output);
    assert_eq!(summary["received"], 0);
    assert_eq!(summary["loss_percent"], 100.0);
    assert!(summary["transmitted"].as_u64().unwrap() >= 3, "{summary}");
    assert_eq!(summary["rtt_ms"], serde_json::Value::Null);
}

/// A scripted responder (the kernel's own echo replies switched off in the namespace): a late
/// reply, a duplicate, packets that are not ours (another identifier, another payload, another
/// type, one shorter than a header) and a lost request, each counted for what it is.
#[test]
fn duplicates_late_replies_and_foreign_packets_are_counted_apart() {
    let test = "duplicates_late_replies_and_foreign_packets_are_counted_apart";
    let Some(ns) = netns(test) else { return };
    ns.sysctl("net.ipv4.icmp_echo_ignore_all=1");
    let mut responder = ns
        .command(
            "python3",
            &[peer("icmp_responder.py").to_str().unwrap(), "1.0"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the responder");
    let ready = crate::common::first_stdout_line(&mut responder, "icmp_responder.py");
    assert_eq!(ready.trim(), "ready");
    // Request 1 at 0 s is answered at 1.0 s, after its 0.5 s time-out; 2 at 1.2 s twice; 3 at
    // 2.4 s after the foreign packets; 4 at 3.6 s never.
    // No -w: with one, -c would count replies and it would go on sending (iputils' rule).
    let args = ["-c", "4", "-i", "1.2", "-W", "0.5", "127.0.0.1"];
    let output = ns.socketkit(&[&["ping", "--json"][..], &args].concat());
    let text = ns.socketkit(&[&["ping"][..], &args].concat());
    let _ = responder.kill();
    let _ = responder.wait();
    assert_code(&output, 0);
    let lines = json_lines(&output);
    let kinds: Vec<(String, u64)> = lines
        .iter()
        .filter(|l| l["type"] != "summary")
        .map(|l| {
            (
                l["type"].as_str().unwrap().to_string(),
                l["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = [("late", 1), ("reply", 2), ("duplicate", 2), ("reply", 3)]
        .into_iter()
        .map(|(k, s)| (k.to_string(), s))
        .collect();
    assert_eq!(kinds, expected, "{lines:#?}");
    let summary = summary(&output);
    assert_eq!(summary["transmitted"], 4);
    assert_eq!(summary["received"], 2);
    assert_eq!(summary["duplicates"], 1);
    assert_eq!(summary["late"], 1);
    assert_eq!(summary["loss_percent"], 50.0);

    assert_code(&text, 0);
    let shaped = shape(&stdout(&text));
    assert!(
        shaped.contains("icmp_seq=1 ttl=64 time=T ms (LATE!)"),
        "{shaped}"
    );
    assert!(
        shaped.contains("icmp_seq=2 ttl=64 time=T ms (DUP!)"),
        "{shaped}"
    );
    assert!(
        shaped.contains(
            "4 packets transmitted, 2 received, +1 duplicates, +1 late, 50% packet loss, time Tms"
        ),
        "{shaped}"
    );
}

/// Another ping on the same host at the same time: a raw socket sees its replies too, and
/// none of them may count as ours.
#[test]
fn another_processs_replies_are_not_taken_as_ours() {
    let test = "another_processs_replies_are_not_taken_as_ours";
    let Some(ns) = netns(test) else { return };
    let mut other = ns
        .command(BIN, &["ping", "-c", "40", "-i", "0.01", "-q", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let output = ns.socketkit(&[
        "ping",
        "-c",
        "5",
        "-i",
        "0.05",
        "-w",
        "10",
        "--json",
        "127.0.0.1",
    ]);
    let _ = other.wait_timeout(SAFETY_TIMEOUT);
    let _ = other.kill();
    assert_code(&output, 0);
    let summary = summary(&output);
    assert_eq!(summary["transmitted"], 5);
    assert_eq!(summary["received"], 5);
    assert_eq!(summary["duplicates"], 0, "{summary}");
}

/// SIGINT and SIGTERM stop it with the summary, as in iputils; a reply came, so exit 0.
#[test]
fn a_signal_stops_it_with_the_summary() {
    let Some(ns) = netns("a_signal_stops_it_with_the_summary") else {
        return;
    };
    for signal in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM] {
        // `ip netns exec` execs the command: the child's PID is socketkit's.
        let mut child = ns
            .command(BIN, &["ping", "-i", "0.05", "-w", "20", "127.0.0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        while seen
            .iter()
            .filter(|l: &&String| l.contains("icmp_seq="))
            .count()
            < 2
        {
            seen.push(lines.next().expect("a line before EOF").unwrap());
        }
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
        let status = child
            .wait_timeout(SAFETY_TIMEOUT)
            .unwrap()
            .expect("it exits");
        assert_eq!(status.code(), Some(0), "{signal:?}");
        let rest: Vec<String> = lines.map(Result::unwrap).collect();
        assert_eq!(
            rest[rest.len() - 3],
            "--- 127.0.0.1 ping statistics ---",
            "{rest:#?}"
        );
        assert!(
            rest[rest.len() - 2].contains("packets transmitted"),
            "{rest:#?}"
        );
        assert!(rest[rest.len() - 1].starts_with("rtt min/avg/max/mdev = "));
    }
}

/// Bad input that needs no socket: each one line and its exit code.
#[test]
fn bad_input_is_one_line_and_its_exit_code() {
    for (args, code, needle) in [
        (
            &["ping", "-c", "1", "no-such-host.invalid"][..],
            6,
            "name not found",
        ),
        (
            &["ping", "-c", "1", "-s", "65508", "127.0.0.1"][..],
            2,
            "at most 65507 bytes of payload over IPv4",
        ),
        (
            &["ping", "-c", "1", "-s", "65528", "::1"][..],
            2,
            "at most 65507 bytes over IPv4, 65527 over IPv6",
        ),
        (
            &["ping", "-c", "0", "127.0.0.1"][..],
            2,
            "must be at least 1",
        ),
        (
            &["ping", "-6", "-c", "1", "127.0.0.1"][..],
            2,
            "not an IPv6 address",
        ),
    ] {
        let output = socketkit()
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert_code(&output, code);
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(stdout(&output), "", "{args:?}");
    }
}

/// The largest payload of each family goes through (and one byte more is refused above).
#[test]
fn the_largest_payload_of_each_family_is_echoed() {
    let Some(ns) = netns("the_largest_payload_of_each_family_is_echoed") else {
        return;
    };
    for (size, target, bytes) in [("65507", "127.0.0.1", 65515), ("65527", "::1", 65535)] {
        let output = ns.socketkit(&["ping", "-c", "1", "-s", size, "-w", "10", "--json", target]);
        assert_code(&output, 0);
        assert_eq!(json_lines(&output)[0]["bytes"], bytes, "{target}");
    }
}

/// `examples/ping.rs`, the slide's SOCK_RAW in a few lines: over the raw socket as root, and
/// over the datagram socket as a user whom ping_group_range allows.
#[test]
fn the_minimal_ping_example_gets_its_reply_on_both_sockets() {
    let Some(ns) = netns("the_minimal_ping_example_gets_its_reply_on_both_sockets") else {
        return;
    };
    let example = crate::examples::example("ping");
    let path = example.get_program().to_str().unwrap().to_string();
    let expect_reply = |output: &Output| {
        assert_code(output, 0);
        let text = stdout(output);
        assert!(
            text.starts_with("28 bytes from 127.0.0.1: icmp_seq=1 time="),
            "{text}"
        );
    };
    expect_reply(&ns.run(&path, &[]));
    ns.sysctl("net.ipv4.ping_group_range=0 2147483647");
    expect_reply(&ns.run(
        "setpriv",
        &[
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            &path,
        ],
    ));
}
