//! Multicast: `udp://GROUP:PORT` listeners join their group and answer by unicast, and `send` to
//! a group prints every member's reply, one line each.
//!
//! Multicast needs interfaces that carry it, and the host's must not be touched, so these tests
//! run in network namespaces of their own ([`crate::netns`]): a LAN of veth pairs on a bridge,
//! with a multicast route on each host's veth, and a namespace whose loopback is given the
//! MULTICAST flag (which loopback lacks by default) and the route. Where namespaces cannot be
//! made (no root, no `ip`) the tests print SKIP and pass. The refusals of bad input need no
//! namespace and run everywhere.

use std::process::Output;

use socketkit::Engine;

use crate::common::{Spawned, assert_code, first_stdout_line, socketkit, stderr, stdout};
use crate::netns::{Lab, Netns, RUN_TIMEOUT, or_skip};

/// The port every server listens on; the namespaces are private, so a fixed one is safe.
const PORT: u16 = 12000;

/// The IPv4 group of these tests (administratively scoped, RFC 2365).
const GROUP: &str = "239.77.0.1";

/// The IPv6 group: ff15:: is transient and site-local, so it needs no zone.
const GROUP6: &str = "ff15::77";

/// stdout's lines, sorted: members answer in any order.
fn sorted_lines(output: &Output) -> Vec<String> {
    let mut lines: Vec<String> = stdout(output).lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// `send TARGET MESSAGE ARGS...` on `ns`, expected to exit 0 with exactly `expected` lines.
#[track_caller]
fn assert_replies(ns: &Netns, target: &str, extra: &[&str], expected: &[String]) {
    let mut args = vec!["send", target, "hello", "-w", "1s"];
    args.extend_from_slice(extra);
    let output = ns.run(&args);
    assert_code(&output, 0);
    let mut expected = expected.to_vec();
    expected.sort();
    assert_eq!(
        sorted_lines(&output),
        expected,
        "{args:?}: stderr {:?}",
        stderr(&output)
    );
}

/// A LAN of `count` hosts whose veths carry IPv4 and IPv6 multicast: a route for 224.0.0.0/4
/// on each (IPv6 puts ff00::/8 on every link by itself), fd77::N beside 10.77.0.N (no
/// duplicate-address detection, so usable at once), and the bridge flooding multicast rather
/// than learning members from IGMP and MLD reports it may not have seen yet.
fn lab(count: usize, test: &str) -> Option<Lab> {
    or_skip(&format!("multicast::{test}"), || {
        let lab = Lab::new("mc", count)?;
        lab.switch().ip(&[
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        for (i, host) in lab.hosts().iter().enumerate() {
            host.ip(&["route", "add", "224.0.0.0/4", "dev", "eth0"])?;
            let v6 = format!("fd77::{}/64", i + 1);
            host.ip(&["-6", "addr", "add", &v6, "dev", "eth0", "nodad"])?;
        }
        Ok(lab)
    })
}

/// A namespace whose loopback carries IPv4 multicast, with 127.0.0.1 as the source.
fn loopback(test: &str) -> Option<Netns> {
    or_skip(&format!("multicast::{test}"), || {
        let ns = Netns::new("mc-lo")?;
        ns.ip(&["link", "set", "lo", "multicast", "on"])?;
        ns.ip(&[
            "route",
            "add",
            "224.0.0.0/4",
            "dev",
            "lo",
            "src",
            "127.0.0.1",
        ])?;
        Ok(ns)
    })
}

/// Host `n`'s IPv4 reply line.
fn line(n: usize, reply: &str) -> String {
    format!("10.77.0.{n}:{PORT} {reply}")
}

#[test]
fn every_member_answers_and_a_non_member_does_not() {
    let Some(lab) = lab(4, "every_member_answers_and_a_non_member_does_not") else {
        return;
    };
    let group = format!("udp://{GROUP}:{PORT}");
    // Host 1 sends and is a member too; 2 joins on the system's choice, 3 on its address;
    // 4 serves the port by unicast and never joins.
    let servers = [
        lab.host(1).serve(&group, &["upper"]),
        lab.host(2).serve(&group, &["upper"]),
        lab.host(3)
            .serve(&group, &["echo", "--multicast-if", "10.77.0.3"]),
        lab.host(4)
            .serve(&format!("udp://0.0.0.0:{PORT}"), &["upper"]),
    ];
    let members = [line(1, "HELLO"), line(2, "HELLO"), line(3, "hello")];
    assert_replies(lab.host(1), &group, &[], &members);

    // Host 4 is up and answers its unicast address: its silence above is not being down.
    let unicast = format!("udp://10.77.0.4:{PORT}");
    let output = lab.host(1).run(&["send", &unicast, "hello", "-w", "5s"]);
    assert_code(&output, 0);
    assert_eq!(stdout(&output), "HELLO");

    // Without loopback, this host's own member is not asked.
    assert_replies(
        lab.host(1),
        &group,
        &["--multicast-loop", "off"],
        &members[1..],
    );
    // TTL 0 keeps the request on this host: only its own member answers.
    assert_replies(lab.host(1), &group, &["--ttl", "0"], &members[..1]);
    drop(servers);
}

#[test]
fn ipv6_members_answer_on_the_interface_named() {
    let Some(lab) = lab(4, "ipv6_members_answer_on_the_interface_named") else {
        return;
    };
    let group = format!("udp://[{GROUP6}]:{PORT}");
    let servers = [
        lab.host(2)
            .serve(&group, &["upper", "--multicast-if", "eth0"]),
        lab.host(3)
            .serve(&group, &["echo", "--multicast-if", "fd77::3"]),
        lab.host(4).serve(&format!("udp://[::]:{PORT}"), &["upper"]),
    ];
    assert_replies(
        lab.host(1),
        &group,
        &["--ttl", "1"],
        &[
            format!("[fd77::2]:{PORT} HELLO"),
            format!("[fd77::3]:{PORT} hello"),
        ],
    );
    drop(servers);
}

#[test]
fn members_on_one_host_share_the_group_port_on_every_engine() {
    let Some(ns) = loopback("members_on_one_host_share_the_group_port_on_every_engine") else {
        return;
    };
    let group = format!("udp://{GROUP}:{PORT}");
    for engine in Engine::ALL {
        let servers = [
            ns.serve(&group, &["upper", "-e", engine.name()]),
            ns.serve(
                &group,
                &["echo", "-e", engine.name(), "--multicast-if", "lo"],
            ),
        ];
        assert_replies(
            &ns,
            &group,
            &[],
            &[
                format!("127.0.0.1:{PORT} HELLO"),
                format!("127.0.0.1:{PORT} hello"),
            ],
        );
        // A unicast listener on the group's port is refused while members hold it (and the
        // other way round): unicast UDP never shares a port.
        let output = ns.run(&["serve", "-l", &format!("udp://0.0.0.0:{PORT}")]);
        assert_code(&output, 7);
        drop(servers);
        let unicast = ns.serve(
            &format!("udp://0.0.0.0:{PORT}"),
            &["upper", "-e", engine.name()],
        );
        let output = ns.run(&["serve", "-l", &group, "-e", engine.name()]);
        assert_code(&output, 7);
        drop(unicast);
    }
}

#[test]
fn a_member_hears_the_group_only_on_the_interface_it_joined() {
    let Some(lab) = lab(
        2,
        "a_member_hears_the_group_only_on_the_interface_it_joined",
    ) else {
        return;
    };
    lab.host(2)
        .ip(&["link", "set", "lo", "multicast", "on"])
        .expect("give host 2's loopback multicast");
    let group = format!("udp://{GROUP}:{PORT}");
    for engine in Engine::ALL {
        // Both sockets get the datagrams that arrive on eth0, where the second joined, unless
        // the first keeps to its own membership (on lo): it must not answer.
        let servers = [
            lab.host(2).serve(
                &group,
                &["echo", "-e", engine.name(), "--multicast-if", "lo"],
            ),
            lab.host(2).serve(
                &group,
                &["upper", "-e", engine.name(), "--multicast-if", "eth0"],
            ),
        ];
        assert_replies(
            lab.host(1),
            &group,
            &["--multicast-loop", "off"],
            &[line(2, "HELLO")],
        );
        drop(servers);
    }
}

#[test]
fn the_multicast_examples_talk_to_each_other() {
    let Some(ns) = loopback("the_multicast_examples_talk_to_each_other") else {
        return;
    };
    let program = |name: &str| {
        let command = crate::examples::example(name);
        command.get_program().to_str().unwrap().to_string()
    };
    let port = PORT.to_string();
    let receiver_path = program("multicast_receiver");
    let mut receiver = Spawned::start(ns.exec(&receiver_path, &[GROUP, &port]));
    let ready = first_stdout_line(&mut receiver.child, "multicast_receiver");
    assert!(ready.contains(&format!("{GROUP}:{PORT}")), "{ready:?}");

    let output =
        assert_cmd::Command::from_std(ns.exec(&program("multicast_sender"), &[GROUP, &port]))
            .write_stdin("straße\n")
            .timeout(RUN_TIMEOUT)
            .output()
            .expect("run the sender");
    assert_code(&output, 0);
    assert_eq!(
        stdout(&output),
        format!("Input a lowercase sentence:From 127.0.0.1:{PORT}: STRASSE\n")
    );
    // socketkit's send is a sender too.
    assert_replies(
        &ns,
        &format!("udp://{GROUP}:{PORT}"),
        &[],
        &[format!("127.0.0.1:{PORT} HELLO")],
    );
    drop(receiver);
}

/// Runs `socketkit ARGS` on this host; asserts exit `code` and one error line naming `words`.
#[track_caller]
fn assert_refused(args: &[&str], code: i32, words: &[&str]) {
    let output = assert_cmd::Command::from_std(socketkit())
        .env_remove("RUST_LOG")
        .args(args)
        .timeout(RUN_TIMEOUT)
        .output()
        .expect("run socketkit");
    assert_code(&output, code);
    assert!(output.stdout.is_empty(), "stdout: {:?}", stdout(&output));
    let text = stderr(&output);
    assert_eq!(text.lines().count(), 1, "{args:?}: {text:?}");
    assert!(text.starts_with("socketkit: error: "), "{args:?}: {text:?}");
    for word in words {
        assert!(text.contains(word), "{args:?}: {word:?} not in {text:?}");
    }
}

#[test]
fn a_group_where_none_belongs_and_none_where_one_is_needed_are_refused() {
    // Nothing here joins a group or sends a datagram: each is refused first (no namespace).
    let group = format!("udp://{GROUP}:9");
    assert_refused(
        &["send", "--broadcast", &group, "hi"],
        2,
        &[GROUP, "multicast group", "without --broadcast"],
    );
    assert_refused(&["client", &group], 2, &["multicast group"]);
    for flag in [["--ttl", "2"], ["--multicast-loop", "off"]] {
        for target in [
            "udp://127.0.0.1:9",
            "tcp://127.0.0.1:9",
            "udp://127.0.0.255:9",
        ] {
            let mut args = vec!["send", target, "hi"];
            args.extend_from_slice(&flag);
            assert_refused(&args, 2, &["--ttl, --multicast-loop", target]);
        }
        let mut args = vec!["send", "-b", "udp://127.0.0.255:9", "hi"];
        args.extend_from_slice(&flag);
        assert_refused(&args, 2, &["multicast group"]);
    }
    assert_refused(&["send", &group, "hi", "--ttl", "256"], 2, &["--ttl"]);
    assert_refused(
        &["send", &group, "hi", "--multicast-loop", "yes"],
        2,
        &["on or off"],
    );
    assert_refused(
        &["serve", "-l", "udp://127.0.0.1:0", "--multicast-if", "lo"],
        2,
        &["--multicast-if lo", "no endpoint is a group"],
    );
    assert_refused(
        &["serve", "-l", "udp://[ff02::77]:0"],
        2,
        &["ff02::77", "needs an interface"],
    );
    assert_refused(
        &["serve", "-l", "udp://239.77.0.1:0", "--multicast-if", "a b"],
        2,
        &["--multicast-if", "interface name"],
    );
    // The interface is looked up before the group is joined.
    for unknown in ["sk-no-such-if", "192.0.2.77"] {
        assert_refused(
            &[
                "serve",
                "-l",
                "udp://239.77.0.1:0",
                "--multicast-if",
                unknown,
            ],
            6,
            &["network interface not found", unknown],
        );
    }
}
