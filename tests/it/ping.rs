//! `socketkit ping`: ICMP echo over both kinds of socket, against the kernel's own echo replies,
//! a scripted Python responder, a router that answers with ICMP errors, and iputils `ping` on
//! the same target.
//!
//! Every test that pings runs in network namespaces of its own (tests/it/netns.rs), so that
//! `net.ipv4.ping_group_range` and `icmp_echo_ignore_all` are set inside them only, never on
//! the host: a fresh namespace starts with the range "1 0" (no group may open a datagram
//! socket), so root gets the raw socket there; a test widens the range to get the datagram
//! socket, and runs the command as `nobody` (setpriv) so that a raw socket is out of reach and
//! the datagram path is the one tested. Settings are written to /proc/sys inside the namespace
//! (no sysctl needed). Making namespaces needs root and iproute2: where that fails, the test
//! prints SKIP and passes. The comparison with iputils needs its `ping` (`.ci/run` installs
//! iputils-ping); without it that part is skipped with a message. Every run is bounded by -c
//! and -w, and by RUN_TIMEOUT; every child is killed when its test ends, passed or not.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output};
use std::sync::mpsc;

use crate::common::{SAFETY_TIMEOUT, Spawned, assert_code, peer, socketkit, stderr, stdout};
use crate::netns::{Netns, RUN_TIMEOUT, or_skip};

/// The `socketkit` binary's path.
const BIN: &str = env!("CARGO_BIN_EXE_socketkit");

/// setpriv's arguments that run a program as the user nobody (uid and gid 65534, no groups).
const AS_NOBODY: [&str; 4] = ["--reuid=65534", "--regid=65534", "--clear-groups", "--"];

/// Runs `program ARGS` in the namespace to completion.
fn run(ns: &Netns, program: &str, args: &[&str]) -> Output {
    assert_cmd::Command::from_std(ns.exec(program, args))
        .timeout(RUN_TIMEOUT)
        .output()
        .expect("run a command in the namespace")
}

/// Runs `program ARGS` in the namespace as nobody.
fn run_as_nobody(ns: &Netns, program: &str, args: &[&str]) -> Output {
    run(ns, "setpriv", &[&AS_NOBODY[..], &[program], args].concat())
}

/// Sets a kernel setting inside the namespace only, through /proc/sys (no sysctl needed):
/// `set(ns, "net/ipv4/ping_group_range", "0 2147483647")`.
fn set(ns: &Netns, key: &str, value: &str) {
    let output = run(
        ns,
        "sh",
        &[
            "-c",
            "echo \"$1\" > \"/proc/sys/$0\"",
            key, // $0
            value,
        ],
    );
    assert_code(&output, 0);
}

/// A namespace, or `None` after printing why the test is skipped.
fn netns(test: &str) -> Option<Netns> {
    or_skip(&format!("ping::{test}"), || Netns::new("ping"))
}

/// Two namespaces joined by a veth pair: the pinger (10.78.0.1, fd00:78::1) and a router
/// (10.78.0.2, fd00:78::2) that TEST-NET-2 and TEST-NET-3 (RFC 5737) and 2001:db8::/32 (RFC
/// 3849) are routed to. The router forwards nothing unless a test says so, so echo requests to
/// those prefixes leave and nothing comes back. (A `dummy` link would do, but the dummy driver
/// is not in every kernel; veth is.) Both are deleted on drop.
struct Routed {
    pinger: Netns,
    router: Netns,
}

impl Routed {
    fn new(test: &str) -> Option<Routed> {
        or_skip(&format!("ping::{test}"), || {
            let routed = Routed {
                pinger: Netns::new("ping")?,
                router: Netns::new("ping-r")?,
            };
            let (a, b) = (&routed.pinger, &routed.router);
            a.ip(&[
                "link",
                "add",
                "v0",
                "type",
                "veth",
                "peer",
                "name",
                "v1",
                "netns",
                b.name(),
            ])?;
            a.ip(&["addr", "add", "10.78.0.1/24", "dev", "v0"])?;
            b.ip(&["addr", "add", "10.78.0.2/24", "dev", "v1"])?;
            a.ip(&["addr", "add", "fd00:78::1/64", "dev", "v0", "nodad"])?;
            b.ip(&["addr", "add", "fd00:78::2/64", "dev", "v1", "nodad"])?;
            a.ip(&["link", "set", "v0", "up"])?;
            b.ip(&["link", "set", "v1", "up"])?;
            for prefix in ["198.51.100.0/24", "203.0.113.0/24"] {
                a.ip(&["route", "add", prefix, "via", "10.78.0.2"])?;
            }
            a.ip(&["-6", "route", "add", "2001:db8::/32", "via", "fd00:78::2"])?;
            Ok(routed)
        })
    }

    /// Makes the router answer with ICMP errors, as a real one does: "Destination Host
    /// Unreachable" for 198.51.100.0/24 and 2001:db8:1::/64 (`unreachable` routes), "filtered"
    /// / "Administratively prohibited" for 203.0.113.0/24 and 2001:db8:2::/64 (`prohibit`).
    /// Its ICMP rate limits are lifted so that a few runs in a row are all answered.
    fn reject(&self) -> Result<(), String> {
        let b = &self.router;
        set(b, "net/ipv4/ip_forward", "1");
        set(b, "net/ipv6/conf/all/forwarding", "1");
        set(b, "net/ipv4/icmp_ratelimit", "0");
        set(b, "net/ipv6/icmp/ratelimit", "0");
        b.ip(&["route", "add", "unreachable", "198.51.100.0/24"])?;
        b.ip(&["route", "add", "prohibit", "203.0.113.0/24"])?;
        b.ip(&["-6", "route", "add", "unreachable", "2001:db8:1::/64"])?;
        b.ip(&["-6", "route", "add", "prohibit", "2001:db8:2::/64"])?;
        Ok(())
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
        let output = ns.run(&[
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

        let ours = ns.run(&["ping", "-c", "3", "-i", "0.05", "-w", "10", target]);
        assert_code(&ours, 0);
        if have_iputils("root_pings_loopback_over_a_raw_socket_like_iputils") {
            let theirs = run(&ns, "ping", &["-c", "3", "-i", "0.05", "-w", "10", target]);
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
    set(&ns, "net/ipv4/ping_group_range", "0 2147483647");
    for target in ["127.0.0.1", "::1"] {
        let output = run_as_nobody(
            &ns,
            BIN,
            &[
                "ping", "-c", "3", "-i", "0.05", "-w", "10", "--json", target,
            ],
        );
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

        let ours = run_as_nobody(
            &ns,
            BIN,
            &["ping", "-c", "2", "-i", "0.05", "-w", "10", target],
        );
        assert_code(&ours, 0);
        if have_iputils(test) {
            let theirs = run_as_nobody(&ns, "ping", &["-c", "2", "-i", "0.05", "-w", "10", target]);
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
    let output = run_as_nobody(&ns, BIN, &["ping", "-c", "1", "127.0.0.1"]);
    assert_code(&output, 1);
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("net.ipv4.ping_group_range (now \"1 0\""),
        "{err}"
    );
    assert!(err.contains("root or CAP_NET_RAW"), "{err}");
}

/// iputils' 2 ms rule: a user may not ask for a shorter interval (0 included), root may.
#[test]
fn an_interval_under_2ms_is_refused_for_a_user_but_not_for_root() {
    let Some(ns) = netns("an_interval_under_2ms_is_refused_for_a_user_but_not_for_root") else {
        return;
    };
    set(&ns, "net/ipv4/ping_group_range", "0 2147483647");
    for interval in ["0.001", "0"] {
        let output = run_as_nobody(&ns, BIN, &["ping", "-c", "2", "-i", interval, "127.0.0.1"]);
        assert_code(&output, 2);
        assert!(stderr(&output).contains("the shortest a user other than root may use is 2ms"));
    }
    let output = run_as_nobody(&ns, BIN, &["ping", "-c", "2", "-i", "0.002", "127.0.0.1"]);
    assert_code(&output, 0);
    for interval in ["0.001", "0"] {
        let output = ns.run(&["ping", "-c", "2", "-i", interval, "127.0.0.1"]);
        assert_code(&output, 0);
    }
}

/// An interval shorter than one send (root's `-i 0`, as iputils allows): every pass sends, and
/// the replies are still read between the sends (they were never read: 60,000 sent, 0
/// received). Over the raw socket, which also sees our own requests on loopback.
#[test]
fn an_interval_shorter_than_a_send_still_receives_the_replies() {
    let Some(ns) = netns("an_interval_shorter_than_a_send_still_receives_the_replies") else {
        return;
    };
    let output = ns.run(&["ping", "-i", "0", "-w", "1", "-q", "127.0.0.1"]);
    assert_code(&output, 0);
    let text = stdout(&output);
    let counts = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("{text}"));
    let number = |after: &str| -> u64 {
        let words: Vec<&str> = counts.split([' ', ',']).filter(|w| !w.is_empty()).collect();
        let at = words.iter().position(|w| *w == after).unwrap();
        words[at - 1].parse().unwrap()
    };
    let (sent, received) = (number("packets"), number("received"));
    assert!(sent >= 100, "{counts}");
    assert!(received * 10 >= sent * 9, "{counts}");
}

/// A host that never answers: 100% loss and exit 5, with the same counts line as iputils.
#[test]
fn a_host_that_does_not_answer_is_100_percent_loss_and_exit_5() {
    let test = "a_host_that_does_not_answer_is_100_percent_loss_and_exit_5";
    let Some(routed) = Routed::new(test) else {
        return;
    };
    let ns = &routed.pinger;
    let args = ["-c", "3", "-i", "0.2", "-W", "0.5", "198.51.100.7"];
    let ours = ns.run(&[&["ping"][..], &args].concat());
    assert_code(&ours, 5);
    let text = stdout(&ours);
    assert!(
        text.contains("3 packets transmitted, 0 received, 100% packet loss"),
        "{text}"
    );
    assert!(!text.contains("rtt"), "{text}");
    assert!(stderr(&ours).contains("timed out"), "{}", stderr(&ours));
    if have_iputils(test) {
        let theirs = run(ns, "ping", &args);
        assert_code(&theirs, 1); // iputils' own code for no reply
        assert_eq!(shape(&text), shape(&stdout(&theirs)));
    }
    // -w alone: it sends until the deadline.
    let output = ns.run(&["ping", "-w", "1", "-i", "0.3", "--json", "198.51.100.7"]);
    assert_code(&output, 5);
    let summary = summary(&output);
    assert_eq!(summary["received"], 0);
    assert_eq!(summary["loss_percent"], 100.0);
    assert!(summary["transmitted"].as_u64().unwrap() >= 3, "{summary}");
    assert_eq!(summary["rtt_ms"], serde_json::Value::Null);
}

/// ICMP errors from a router: printed as iputils prints them ("From ROUTER icmp_seq=N
/// Destination Host Unreachable") and counted as `+N errors`, over the raw socket (the error
/// messages are packets it reads) and over the datagram socket (its error queue:
/// IP_RECVERR / IPV6_RECVERR, MSG_ERRQUEUE), with the same transcript as iputils as the same
/// user. An error also ends the wait for its request, as in iputils.
#[test]
fn icmp_errors_from_a_router_are_printed_on_both_sockets_like_iputils() {
    let test = "icmp_errors_from_a_router_are_printed_on_both_sockets_like_iputils";
    for (target, router, words) in [
        ("198.51.100.7", "10.78.0.2", "Destination Host Unreachable"),
        ("203.0.113.7", "10.78.0.2", "Packet filtered"),
        (
            "2001:db8:1::7",
            "fd00:78::2",
            "Destination unreachable: No route",
        ),
        (
            "2001:db8:2::7",
            "fd00:78::2",
            "Destination unreachable: Administratively prohibited",
        ),
    ] {
        for nobody in [true, false] {
            // A router of its own for each tool: its error rate limit (a burst of 5 per source)
            // is not spent by the runs before.
            let lab = || {
                let routed = Routed::new(test)?;
                if let Err(why) = routed.reject() {
                    panic!("cannot make the router reject: {why}");
                }
                if nobody {
                    // The datagram socket for nobody; root, left out of the range, gets the raw.
                    set(&routed.pinger, "net/ipv4/ping_group_range", "0 2147483647");
                }
                Some(routed)
            };
            let ping = |ns: &Netns, program: &str, args: &[&str]| {
                if nobody {
                    run_as_nobody(ns, program, args)
                } else {
                    run(ns, program, args)
                }
            };
            let Some(routed) = lab() else { return };
            let ns = &routed.pinger;
            let args = ["-c", "2", "-i", "0.2", "-W", "5", target];
            let json = ping(ns, BIN, &[&["ping", "--json"][..], &args].concat());
            assert_code(&json, 5);
            let summary = summary(&json);
            let socket = if nobody { "datagram" } else { "raw" };
            assert_eq!(summary["socket"], socket, "{target}");
            assert_eq!(summary["errors"], 2, "{target} {socket}: {summary}");
            assert!(
                summary["time_ms"].as_u64().unwrap() < 4_000,
                "an error ends the wait for its request: {summary}"
            );
            let ours = ping(ns, BIN, &[&["ping"][..], &args].concat());
            assert_code(&ours, 5);
            let text = stdout(&ours);
            for seq in [1, 2] {
                let line = format!("From {router} icmp_seq={seq} {words}\n");
                assert!(text.contains(&line), "{target} {socket}: {text}");
            }
            assert!(
                text.contains("2 packets transmitted, 0 received, +2 errors, 100% packet loss"),
                "{text}"
            );
            if have_iputils(test) {
                let Some(routed) = lab() else { return };
                let theirs = ping(&routed.pinger, "ping", &args);
                assert_code(&theirs, 1);
                assert_eq!(shape(&text), shape(&stdout(&theirs)), "{target} {socket}");
            }
        }
    }
}

/// A scripted responder (the kernel's own echo replies switched off in the namespace): a late
/// reply, a duplicate, packets that are not ours (another identifier, another payload, another
/// type, one shorter than a header) and a lost request, each counted for what it is.
#[test]
fn duplicates_late_replies_and_foreign_packets_are_counted_apart() {
    let test = "duplicates_late_replies_and_foreign_packets_are_counted_apart";
    let Some(ns) = netns(test) else { return };
    set(&ns, "net/ipv4/icmp_echo_ignore_all", "1");
    // Killed when the test ends, passed or not.
    let mut responder = Spawned::start(ns.exec(
        "python3",
        &[peer("icmp_responder.py").to_str().unwrap(), "2.0"],
    ));
    let ready = crate::common::first_stdout_line(&mut responder.child, "icmp_responder.py");
    assert_eq!(ready.trim(), "ready");
    // Request 1 at 0 s is answered at 2.0 s, a second after its 1 s time-out and half a
    // second before request 2; 2 at 2.5 s twice; 3 at 5 s after the foreign packets; 4 at
    // 7.5 s never. Each margin is a second or half of one.
    // No -w: with one, -c would count replies and it would go on sending (iputils' rule).
    let args = ["-c", "4", "-i", "2.5", "-W", "1", "127.0.0.1"];
    let output = ns.run(&[&["ping", "--json"][..], &args].concat());
    let text = ns.run(&[&["ping"][..], &args].concat());
    drop(responder);
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
/// none of them may count as ours. The other one has had a reply before ours starts and is
/// still running when ours ends, so the two overlap.
#[test]
fn another_processs_replies_are_not_taken_as_ours() {
    let test = "another_processs_replies_are_not_taken_as_ours";
    let Some(ns) = netns(test) else { return };
    let mut other = Spawned::start(ns.exec(
        BIN,
        &["ping", "-c", "2000", "-i", "0.01", "-w", "25", "127.0.0.1"],
    ));
    let lines = stdout_lines(&mut other);
    wait_for_stdout(&lines, "icmp_seq=");
    let output = ns.run(&[
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
    assert!(
        other.child.try_wait().unwrap().is_none(),
        "the other ping ended before ours: no overlap"
    );
    assert_code(&output, 0);
    let summary = summary(&output);
    assert_eq!(summary["transmitted"], 5);
    assert_eq!(summary["received"], 5);
    assert_eq!(summary["duplicates"], 0, "{summary}");
}

/// The child's stdout lines, read on a thread, as they come.
fn stdout_lines(child: &mut Spawned) -> mpsc::Receiver<String> {
    let stdout = child.child.stdout.take().expect("a piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for a stdout line containing `needle`; returns the lines seen up to it.
fn wait_for_stdout(lines: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(SAFETY_TIMEOUT) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!("no stdout line with {needle:?}; saw {seen:#?}"),
        }
    }
}

/// SIGINT and SIGTERM stop it with the summary, as in iputils; a reply came, so exit 0.
#[test]
fn a_signal_stops_it_with_the_summary() {
    let Some(ns) = netns("a_signal_stops_it_with_the_summary") else {
        return;
    };
    for signal in [nix::sys::signal::SIGINT, nix::sys::signal::SIGTERM] {
        // `ip netns exec` execs the command: the child's PID is socketkit's. Killed when the
        // test ends, passed or not.
        let mut child =
            Spawned::start(ns.exec(BIN, &["ping", "-i", "0.05", "-w", "20", "127.0.0.1"]));
        let lines = stdout_lines(&mut child);
        wait_for_stdout(&lines, "icmp_seq=1 ");
        wait_for_stdout(&lines, "icmp_seq=2 ");
        child.signal(signal);
        assert_eq!(child.wait_exit(), Some(0), "{signal:?}");
        let rest: Vec<String> = lines.iter().collect();
        assert!(rest.len() >= 3, "{rest:#?}");
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
        let output = ns.run(&["ping", "-c", "1", "-s", size, "-w", "10", "--json", target]);
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
    expect_reply(&run(&ns, &path, &[]));
    set(&ns, "net/ipv4/ping_group_range", "0 2147483647");
    expect_reply(&run_as_nobody(&ns, &path, &[]));
}
