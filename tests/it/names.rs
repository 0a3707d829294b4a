//! Names, addresses and ports, compared with Python's `socket` module on this machine: the
//! library calls directly, and `socketkit resolve|addr|port --json` as a user runs them.
//!
//! Python is the reference: each test runs `python3 -c` with its inputs as JSON in argv and
//! reads its answers back as JSON. Look-ups of names that do not exist go through the binary
//! only, with `RES_OPTIONS="timeout:1 attempts:1"` (the resolver gives up on a silent DNS
//! server after a second) and `--timeout`, so they stay fast with or without a DNS server.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use socketkit::names::{self, IpAddress, Protocol, Source, WELL_KNOWN_PORTS};

use crate::common::socketkit;

/// A bound on every child process, so a hung resolver fails the test instead of hanging it.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The resolver options every child gets: one try of one second per DNS server.
const RES_OPTIONS: &str = "timeout:1 attempts:1";

/// Runs `python3 -c CODE INPUT` where INPUT is `input` as JSON (`sys.argv[1]`, parsed into
/// `arg`), and returns what the code printed with `print(json.dumps(...))`.
fn python(code: &str, input: &Value) -> Value {
    let program =
        format!("import json, socket, struct, sys\narg = json.loads(sys.argv[1])\n{code}");
    let output = assert_cmd::Command::new("python3")
        .arg("-c")
        .arg(program)
        .arg(input.to_string())
        .env("RES_OPTIONS", RES_OPTIONS)
        .timeout(RUN_TIMEOUT)
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "python3 failed: {}\n{code}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("python printed JSON")
}

/// Runs `socketkit ARGS` with the short resolver options and an empty environment for logs.
fn run(args: &[&str]) -> Output {
    assert_cmd::Command::from_std(socketkit())
        .args(args)
        .env_remove("RUST_LOG")
        .env("RES_OPTIONS", RES_OPTIONS)
        .timeout(RUN_TIMEOUT)
        .output()
        .expect("run socketkit")
}

/// Runs `socketkit ARGS`, asserts success, and parses each stdout line as JSON.
#[track_caller]
fn run_json(args: &[&str]) -> Vec<Value> {
    let output = run(args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "socketkit {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
        .collect()
}

/// Asserts a failure with `code`, nothing on stdout, and one error line naming `needle`.
#[track_caller]
fn assert_fails(output: &Output, code: i32, needle: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(output.stdout.is_empty(), "stdout: {:?}", output.stdout);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one error line: {lines:#?}");
    assert!(lines[0].starts_with("socketkit: error: "), "{stderr}");
    assert!(
        lines[0].contains(needle),
        "{stderr:?} should mention {needle:?}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// inet_aton inputs: every legal form, the edges, and what glibc rejects.
const ATON_INPUTS: &[&str] = &[
    "0.0.0.0",
    "255.255.255.255",
    "128.119.40.12",
    "127.0.0.1",
    "127.1",
    "0x7f.1",
    "0X7F.0X1",
    "017.1",
    "0177.0.0.01",
    "10.1.300",
    "1.2.65535",
    "1.16777215",
    "4294967295",
    "2130706433",
    "0xffffffff",
    "037777777777",
    "0",
    "00000000000000000001",
    "0x00000000000000000001",
    "1.2.3.4 trailing words",
    "1.2.3.4\t",
    "1.2.3.4\n",
    "1.2.3.4\u{b}",
    // rejected
    "",
    " 1.2.3.4",
    "1.2.3.4.",
    "1.2.3.4.5",
    "1..2",
    ".1.2.3",
    "256.0.0.1",
    "1.2.3.256",
    "1.2.65536",
    "1.16777216",
    "4294967296",
    "0x100000000",
    "040000000000",
    "08",
    "09.1",
    "1.08",
    "0x",
    "0x.1",
    "0xg",
    "1.2.3.0x",
    "+1.2.3.4",
    "-1",
    "1e3",
    "a.b.c.d",
    "localhost",
    "::1",
    "1.2.3.4x",
    "1.2.3.4\u{a0}",
    "\u{ff11}.2.3.4",
];

#[test]
fn inet_aton_agrees_with_python_on_every_form_and_edge() {
    let expected = python(
        "out = []\n\
         for text in arg:\n\
         \x20   try: out.append(socket.inet_aton(text).hex())\n\
         \x20   except OSError: out.append(None)\n\
         print(json.dumps(out))",
        &json!(ATON_INPUTS),
    );
    for (text, expected) in ATON_INPUTS.iter().zip(expected.as_array().unwrap()) {
        let ours = names::aton(text).ok().map(|a| hex(&a.octets()));
        assert_eq!(ours.as_deref(), expected.as_str(), "inet_aton({text:?})");
    }
}

#[test]
fn malformed_ipv4_text_is_a_usage_error_that_names_the_part() {
    for (text, part) in [
        ("1.2.300.4", r#"part 3 "300" is more than 255"#),
        ("10.08.1", r#"part 2 "08" has '8'"#),
        ("1.2.3.4.5", "more than 4 parts"),
        ("1.2.65536", r#"part 3 "65536" is more than 65535"#),
    ] {
        assert_fails(&run(&["addr", text]), 2, part);
    }
}

#[test]
fn inet_ntoa_agrees_with_python() {
    let packed: Vec<[u8; 4]> = vec![[0; 4], [255; 4], [128, 119, 40, 12], [127, 0, 0, 1]];
    let expected = python(
        "print(json.dumps([socket.inet_ntoa(bytes(p)) for p in arg]))",
        &json!(packed),
    );
    for (p, expected) in packed.iter().zip(expected.as_array().unwrap()) {
        assert_eq!(names::ntoa(*p), expected.as_str().unwrap());
    }
}

#[test]
fn byte_order_functions_agree_with_python() {
    let longs: Vec<u32> = vec![0, 1, 0x8077_280c, 0x1234_5678, 0x7f00_0001, u32::MAX];
    let shorts: Vec<u16> = vec![0, 1, 80, 12000, 0x1234, u16::MAX];
    let expected = python(
        "longs, shorts = arg\n\
         print(json.dumps([[socket.htonl(x) for x in longs], [socket.ntohl(x) for x in longs],\n\
         \x20                [socket.htons(x) for x in shorts],\n\
         \x20                [socket.ntohs(x) for x in shorts]]))",
        &json!([longs, shorts]),
    );
    let ours = json!([
        longs.iter().map(|&x| names::htonl(x)).collect::<Vec<_>>(),
        longs.iter().map(|&x| names::ntohl(x)).collect::<Vec<_>>(),
        shorts.iter().map(|&x| names::htons(x)).collect::<Vec<_>>(),
        shorts.iter().map(|&x| names::ntohs(x)).collect::<Vec<_>>(),
    ]);
    assert_eq!(ours, expected);
}

#[test]
fn addr_shows_the_slides_example_in_both_byte_orders_as_python_computes_them() {
    let expected = python(
        "p = socket.inet_aton(arg)\n\
         print(json.dumps({'packed': p.hex(), 'network_order': struct.unpack('!I', p)[0],\n\
         \x20                 'host_order': struct.unpack('=I', p)[0],\n\
         \x20                 'ntohl': socket.ntohl(struct.unpack('=I', p)[0]),\n\
         \x20                 'mapped': socket.inet_ntop(socket.AF_INET6,\n\
         \x20                                           bytes(10) + b'\\xff\\xff' + p)}))",
        &json!("128.119.40.12"),
    );
    let shown = run_json(&["addr", "--json", "128.119.40.12"]);
    assert_eq!(shown.len(), 1);
    let shown = &shown[0];
    assert_eq!(shown["family"], "ipv4");
    assert_eq!(shown["address"], "128.119.40.12");
    assert_eq!(shown["packed"], expected["packed"]);
    assert_eq!(shown["network_order"], expected["network_order"]);
    assert_eq!(shown["network_order"], expected["ntohl"]);
    assert_eq!(shown["host_order"], expected["host_order"]);
    assert_eq!(shown["ipv4_mapped"], expected["mapped"]);
    assert_eq!(shown["scope_id"], Value::Null);
}

#[test]
fn addr_reads_every_inet_aton_form_and_packed_hex() {
    for (text, address) in [
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("017.1", "15.0.0.1"),
        ("4294967295", "255.255.255.255"),
        ("0.0.0.0", "0.0.0.0"),
    ] {
        let shown = run_json(&["addr", "--json", text]);
        assert_eq!(shown[0]["address"], address, "addr {text}");
        assert_eq!(shown[0]["input"], text);
    }
    let shown = run_json(&["addr", "--json", "--packed", "8077280c"]);
    assert_eq!(shown[0]["address"], "128.119.40.12");
    let shown = run_json(&[
        "addr",
        "--json",
        "--packed",
        "00000000000000000000000000000001",
    ]);
    assert_eq!(shown[0]["address"], "::1");
    assert_eq!(shown[0]["network_order"], Value::Null);
    assert_fails(&run(&["addr", "--packed", "7f0000"]), 2, "3 bytes");
    assert_fails(
        &run(&["addr", "--packed", "7f00zz01"]),
        2,
        "'z' at position 5",
    );
}

/// IPv6 text: the edges, IPv4-mapped and -translated forms, and what inet_pton rejects.
const IPV6_INPUTS: &[&str] = &[
    "::",
    "::1",
    "::ffff:1.2.3.4",
    "::ffff:0:1.2.3.4",
    "::ffff:7f00:1",
    "1::",
    "1:2:3:4:5:6:7::",
    "::2:3:4:5:6:7:8",
    "1:0:0:1:0:0:0:1",
    "1:2:3:4:5:6:1.2.3.4",
    "fe80::1",
    "FE80::ABCD",
    "2001:db8::8a2e:370:7334",
    "ff02::1",
    // rejected
    ":::",
    "1:::2",
    "1::2::3",
    ":1::",
    "1::2:",
    "01234::",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7:8::",
    "::ffff:1.2.3",
    "::ffff:01.2.3.4",
    "::ffff:256.1.1.1",
    "1:2:3:4:5:6:7:1.2.3.4",
    "1:2",
    "::g",
    "",
    "fe80::1%lo",
    "1.2.3.4",
];

#[test]
fn ipv6_text_agrees_with_inet_pton_and_inet_ntop() {
    let expected = python(
        "out = []\n\
         for text in arg:\n\
         \x20   try:\n\
         \x20       p = socket.inet_pton(socket.AF_INET6, text)\n\
         \x20       out.append([p.hex(), socket.inet_ntop(socket.AF_INET6, p)])\n\
         \x20   except OSError: out.append(None)\n\
         print(json.dumps(out))",
        &json!(IPV6_INPUTS),
    );
    for (text, expected) in IPV6_INPUTS.iter().zip(expected.as_array().unwrap()) {
        // Our `addr` reads "1.2.3.4" as IPv4 and "fe80::1%lo" with its zone: compare the IPv6
        // reading only.
        let ours = match text.parse::<IpAddress>() {
            Ok(a) if a.ip().is_ipv6() && a.scope_id().is_none() => {
                Some(json!([hex(&a.packed()), a.ip().to_string()]))
            }
            _ => None,
        };
        assert_eq!(
            ours.as_ref().unwrap_or(&Value::Null),
            expected,
            "inet_pton({text:?})"
        );
    }
}

#[test]
fn ipv4_compatible_addresses_print_in_hex_where_glibc_prints_dotted() {
    // The one difference in text: for the deprecated IPv4-compatible form (::a.b.c.d, RFC 4291
    // 2.5.5.1), glibc's inet_ntop writes the IPv4 part dotted, Rust's Display (RFC 5952) in hex.
    // The packed bytes agree.
    let expected = python(
        "p = socket.inet_pton(socket.AF_INET6, arg)\n\
         print(json.dumps([p.hex(), socket.inet_ntop(socket.AF_INET6, p)]))",
        &json!("::1.2.3.4"),
    );
    let ours: IpAddress = "::1.2.3.4".parse().unwrap();
    assert_eq!(hex(&ours.packed()), expected[0].as_str().unwrap());
    assert_eq!(expected[1], "::1.2.3.4");
    assert_eq!(ours.to_string(), "::102:304");
}

#[test]
fn ipv4_mapped_addresses_agree_with_python_both_ways() {
    let v4s = ["0.0.0.0", "127.0.0.1", "255.255.255.255", "128.119.40.12"];
    let expected = python(
        "print(json.dumps([socket.inet_ntop(socket.AF_INET6, bytes(10) + b'\\xff\\xff'\n\
         \x20                + socket.inet_aton(a)) for a in arg]))",
        &json!(v4s),
    );
    for (v4, mapped) in v4s.iter().zip(expected.as_array().unwrap()) {
        let shown = &run_json(&["addr", "--json", v4])[0];
        assert_eq!(&shown["ipv4_mapped"], mapped, "{v4}");
        let back = &run_json(&["addr", "--json", mapped.as_str().unwrap()])[0];
        assert_eq!(back["family"], "ipv6");
        assert_eq!(back["ipv4"], *v4);
        assert_eq!(&back["ipv4_mapped"], mapped);
    }
}

#[test]
fn scoped_ipv6_addresses_get_the_scope_id_getaddrinfo_gives() {
    let inputs = [
        "fe80::1%lo",
        "fe80::1%1",
        "ff02::1%lo",
        "::1%3",
        "::1%lo",
        "fe80::1%nosuchif",
    ];
    let expected = python(
        "out = []\n\
         for text in arg:\n\
         \x20   try: out.append(socket.getaddrinfo(text, None)[0][4][3])\n\
         \x20   except socket.gaierror: out.append(None)\n\
         print(json.dumps(out))",
        &json!(inputs),
    );
    for (text, expected) in inputs.iter().zip(expected.as_array().unwrap()) {
        let ours = text.parse::<IpAddress>().ok().and_then(|a| a.scope_id());
        assert_eq!(json!(ours), *expected, "scope id of {text}");
    }
    let shown = &run_json(&["addr", "--json", "fe80::1%lo"])[0];
    assert_eq!(shown["address"], "fe80::1");
    assert_eq!(shown["scope_id"], expected[0]);
    assert_fails(&run(&["addr", "::1%lo"]), 2, "only for link-local");
}

#[test]
fn gethostbyname_ex_agrees_with_python() {
    for name in ["localhost", "127.1", "127.0.0.1"] {
        let expected = python(
            "h = socket.gethostbyname_ex(arg)\n\
             print(json.dumps({'name': h[0], 'aliases': h[1], 'addresses': h[2]}))",
            &json!(name),
        );
        let ours = names::host_by_name(name).unwrap();
        let addresses: Vec<String> = ours.addresses.iter().map(IpAddr::to_string).collect();
        assert_eq!(
            json!({"name": ours.name, "aliases": ours.aliases, "addresses": addresses}),
            expected,
            "gethostbyname_ex({name:?})"
        );
    }
}

#[test]
fn gethostbyaddr_agrees_with_python() {
    let expected = python(
        "h = socket.gethostbyaddr(arg)\n\
         print(json.dumps({'name': h[0], 'aliases': h[1], 'addresses': h[2]}))",
        &json!("127.0.0.1"),
    );
    let ours = names::host_by_addr(IpAddr::V4(Ipv4Addr::LOCALHOST)).unwrap();
    let addresses: Vec<String> = ours.addresses.iter().map(IpAddr::to_string).collect();
    assert_eq!(
        json!({"name": ours.name, "aliases": ours.aliases, "addresses": addresses}),
        expected
    );
    // And through the binary: a reverse look-up.
    let shown = &run_json(&["resolve", "--json", "127.0.0.1"])[0];
    assert_eq!(shown["type"], "reverse");
    assert_eq!(shown["name"], expected["name"]);
    assert_eq!(shown["aliases"], expected["aliases"]);
    assert_eq!(shown["addresses"], expected["addresses"]);
}

#[test]
fn reverse_look_ups_python_cannot_answer_are_names_not_found() {
    // No /etc/hosts line for ::1 on this machine, nor for a scoped link-local address: Python
    // raises herror (unknown host); socketkit exits 6. Whatever the machine says, both agree.
    for address in ["::1", "fe80::1%lo"] {
        let python_found = python(
            "try: print(json.dumps(socket.gethostbyaddr(arg)[0]))\n\
             except OSError: print('null')",
            &json!(address),
        );
        let output = run(&["resolve", "--json", address]);
        match python_found.as_str() {
            Some(name) => {
                let line: Value = serde_json::from_slice(&output.stdout).unwrap();
                assert_eq!(line["name"], name, "{address}");
            }
            None => assert_fails(&output, 6, "name not found"),
        }
    }
}

#[test]
fn forward_look_ups_agree_with_getaddrinfo_and_gethostbyname_ex() {
    let expected = python(
        "infos = socket.getaddrinfo(arg, None, 0, socket.SOCK_STREAM, 0, socket.AI_CANONNAME)\n\
         addresses = []\n\
         for info in infos:\n\
         \x20   if info[4][0] not in addresses: addresses.append(info[4][0])\n\
         print(json.dumps({'name': infos[0][3], 'aliases': socket.gethostbyname_ex(arg)[1],\n\
         \x20                 'addresses': addresses}))",
        &json!("localhost"),
    );
    let ours = names::lookup("localhost").unwrap();
    let addresses: Vec<String> = ours.addresses.iter().map(IpAddr::to_string).collect();
    assert_eq!(
        json!({"name": ours.name, "aliases": ours.aliases, "addresses": addresses}),
        expected
    );
    let shown = run_json(&["resolve", "--json", "localhost", "127.1"]);
    assert_eq!(shown.len(), 2);
    assert_eq!(shown[0]["query"], "localhost");
    assert_eq!(shown[0]["type"], "forward");
    assert_eq!(shown[0]["name"], expected["name"]);
    assert_eq!(shown[0]["addresses"], expected["addresses"]);
    assert_eq!(shown[1]["name"], "127.1"); // as gethostbyname_ex('127.1') names it
    assert_eq!(shown[1]["addresses"], json!(["127.0.0.1"]));
}

#[test]
fn getfqdn_agrees_with_python() {
    let queries = [
        "",
        "localhost",
        "127.0.0.1",
        "0.0.0.0",
        "::",
        " localhost ",
        "nonexistent.invalid",
    ];
    let expected = python(
        "print(json.dumps([socket.getfqdn(q) for q in arg]))",
        &json!(queries),
    );
    // The library, for the queries that need no DNS.
    assert_eq!(names::fqdn("").unwrap(), expected[0]);
    assert_eq!(names::fqdn("localhost").unwrap(), expected[1]);
    assert_eq!(names::fqdn("127.0.0.1").unwrap(), expected[2]);
    // The binary, for all of them (RES_OPTIONS keeps the missing name's query short).
    let mut args = vec!["resolve", "--fqdn", "--json", "--timeout", "20s"];
    args.extend(queries);
    let shown = run_json(&args);
    let answers: Vec<&Value> = shown.iter().map(|line| &line["name"]).collect();
    let expected: Vec<&Value> = expected.as_array().unwrap().iter().collect();
    assert_eq!(answers, expected);
    assert!(shown.iter().all(|line| line["type"] == "fqdn"));
    // Without a name: this host, one plain line.
    let output = run(&["resolve", "--fqdn"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("{}\n", expected[0].as_str().unwrap())
    );
}

#[test]
fn a_name_that_does_not_exist_exits_6_fast_as_python_fails_it() {
    let python_failed = python(
        "try: socket.gethostbyname_ex(arg); print('false')\n\
         except OSError: print('true')",
        &json!("nonexistent.invalid"),
    );
    assert_eq!(python_failed, true);
    let started = Instant::now();
    let output = run(&["resolve", "--timeout", "10s", "nonexistent.invalid"]);
    assert_fails(&output, 6, "name not found: nonexistent.invalid");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn failures_among_several_names_each_get_a_line_and_the_rest_are_answered() {
    let output = run(&["resolve", "--json", "a.invalid", "localhost", "b.invalid"]);
    assert_eq!(output.status.code(), Some(6));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["query"], "localhost");
    let stderr = String::from_utf8(output.stderr).unwrap();
    let errors: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        errors,
        [
            "socketkit: error: name not found: a.invalid",
            "socketkit: error: name not found: b.invalid"
        ]
    );
}

#[test]
fn a_look_up_that_outlasts_the_timeout_exits_5() {
    // A nanosecond is over before the look-up thread has even started reading /etc/hosts, let
    // alone asked a DNS server, so this does not depend on the network. On a loaded machine the
    // scheduler may still run that thread to its answer (exit 6) before the waiting one looks:
    // a few attempts, of which one must time out.
    for _ in 0..5 {
        let output = run(&["resolve", "--timeout", "1ns", "nonexistent.invalid"]);
        if output.status.code() == Some(6) {
            continue; // the look-up won the race
        }
        assert_fails(&output, 5, "timed out");
        assert!(String::from_utf8_lossy(&output.stderr).contains("nonexistent.invalid"));
        return;
    }
    panic!("a 1 ns time-out never expired before the look-up ended");
}

#[test]
fn resolve_text_output_lists_the_name_and_each_address() {
    let output = run(&["resolve", "localhost"]);
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        stdout.starts_with("query    localhost\nname     "),
        "{stdout}"
    );
    assert!(stdout.contains("\naddress  127.0.0.1\n"), "{stdout}");
}

/// Service names and ports to compare, for TCP and UDP: common ones, aliases, the edges and
/// ones that do not exist.
const SERVICE_NAMES: &[&str] = &[
    "echo",
    "discard",
    "daytime",
    "qotd",
    "chargen",
    "ftp",
    "ssh",
    "telnet",
    "smtp",
    "time",
    "domain",
    "tftp",
    "http",
    "www",
    "pop3",
    "ntp",
    "imap",
    "snmp",
    "https",
    "syslog",
    "shell",
    "nosuchservice",
];
const SERVICE_PORTS: &[u16] = &[
    0, 7, 9, 13, 17, 19, 21, 22, 23, 25, 37, 53, 69, 80, 123, 443, 514, 9999,
];

#[test]
fn getservbyname_and_getservbyport_agree_with_python() {
    let expected = python(
        "names, ports = arg\n\
         def by_name(n, p):\n\
         \x20   try: return socket.getservbyname(n, p)\n\
         \x20   except OSError: return None\n\
         def by_port(n, p):\n\
         \x20   try: return socket.getservbyport(n, p)\n\
         \x20   except OSError: return None\n\
         print(json.dumps({p: [[by_name(n, p) for n in names], [by_port(n, p) for n in ports]]\n\
         \x20                 for p in ['tcp', 'udp']}))",
        &json!([SERVICE_NAMES, SERVICE_PORTS]),
    );
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let expected = &expected[protocol.name()];
        for (name, port) in SERVICE_NAMES.iter().zip(expected[0].as_array().unwrap()) {
            let ours = names::service_by_name(name, protocol);
            match port.as_u64() {
                Some(port) => {
                    let ours = ours.unwrap();
                    assert_eq!(u64::from(ours.port), port, "{name}/{protocol}");
                    assert_eq!(ours.source, Source::System);
                }
                // Python does not know it; socketkit may, from its table only.
                None => assert!(
                    ours.as_ref().is_err() || ours.as_ref().unwrap().source == Source::BuiltIn,
                    "{name}/{protocol}: {ours:?}"
                ),
            }
        }
        for (port, name) in SERVICE_PORTS.iter().zip(expected[1].as_array().unwrap()) {
            let ours = names::service_by_port(*port, protocol);
            match name.as_str() {
                Some(name) => assert_eq!(ours.unwrap().name, name, "{port}/{protocol}"),
                None => assert!(
                    ours.as_ref().is_err() || ours.as_ref().unwrap().source == Source::BuiltIn,
                    "{port}/{protocol}: {ours:?}"
                ),
            }
        }
    }
}

#[test]
fn the_built_in_table_agrees_with_the_services_database() {
    let entries: Vec<Value> = WELL_KNOWN_PORTS
        .iter()
        .flat_map(|w| {
            w.protocols
                .iter()
                .map(move |p| json!([w.name, w.port, p.name()]))
        })
        .collect();
    let expected = python(
        "out = []\n\
         for name, port, proto in arg:\n\
         \x20   try: by_name = socket.getservbyname(name, proto)\n\
         \x20   except OSError: by_name = None\n\
         \x20   try: by_port = socket.getservbyport(port, proto)\n\
         \x20   except OSError: by_port = None\n\
         \x20   out.append([by_name, by_port])\n\
         print(json.dumps(out))",
        &json!(entries),
    );
    let mut compared = 0;
    let mut fallback_checked = false;
    for (entry, answer) in entries.iter().zip(expected.as_array().unwrap()) {
        let (name, port) = (&entry[0], &entry[1]);
        if !answer[0].is_null() {
            assert_eq!(&answer[0], port, "the database's port for {entry}");
            compared += 1;
        } else if !fallback_checked {
            // Unknown to the database (on Debian: nameserver, irc, ...): the table answers.
            fallback_checked = true;
            let mut args = vec!["port", "--json", name.as_str().unwrap()];
            if entry[2] == "udp" {
                args.push("--udp");
            }
            let shown = &run_json(&args)[0];
            assert_eq!(&shown["port"], port, "{entry}");
            assert_eq!(shown["source"], "builtin", "{entry}");
        }
        if let Some(db_name) = answer[1].as_str() {
            let ours = WELL_KNOWN_PORTS
                .iter()
                .find(|w| w.name == name.as_str().unwrap())
                .unwrap();
            assert!(
                ours.name == db_name || ours.aliases.contains(&db_name),
                "the database calls {entry} {db_name:?}"
            );
        }
    }
    // On a machine with no services database there is nothing to compare.
    eprintln!("compared {compared} of {} built-in entries", entries.len());
}

#[test]
fn port_command_agrees_with_python_for_tcp_and_udp() {
    // Each query: the arguments, what Python calls, and the field it answers.
    let queries: [(&[&str], &str, &str); 4] = [
        (&["http"], "socket.getservbyname('http', 'tcp')", "port"),
        (
            &["--udp", "domain"],
            "socket.getservbyname('domain', 'udp')",
            "port",
        ),
        (&["--udp", "53"], "socket.getservbyport(53, 'udp')", "name"),
        (&["22"], "socket.getservbyport(22, 'tcp')", "name"),
    ];
    let calls: Vec<&str> = queries.iter().map(|q| q.1).collect();
    let expected = python(
        "out = []\n\
         for call in arg:\n\
         \x20   try: out.append(eval(call))\n\
         \x20   except OSError: out.append(None)\n\
         print(json.dumps(out))",
        &json!(calls),
    );
    for ((args, call, field), expected) in queries.iter().zip(expected.as_array().unwrap()) {
        let mut all = vec!["port", "--json"];
        all.extend(*args);
        let shown = &run_json(&all)[0];
        assert_eq!(
            shown["protocol"],
            if args[0] == "--udp" { "udp" } else { "tcp" }
        );
        assert_eq!(shown["query"], *args.last().unwrap());
        if expected.is_null() {
            // No services database here: the built-in table answers, and says so.
            assert_eq!(shown["source"], "builtin", "{call}");
        } else {
            assert_eq!(&shown[*field], expected, "{call}");
            assert_eq!(shown["source"], "system", "{call}");
        }
    }
    let output = run(&["port", "http"]);
    assert_eq!(output.status.code(), Some(0));
    let line = String::from_utf8(output.stdout).unwrap();
    assert!(line.starts_with("http 80/tcp"), "{line}");
}

#[test]
fn port_errors_have_their_own_exit_codes() {
    assert_fails(
        &run(&["port", "nosuchservice"]),
        6,
        "service not found: nosuchservice/tcp",
    );
    assert_fails(
        &run(&["port", "--udp", "9999"]),
        6,
        "service not found: 9999/udp",
    );
    let output = run(&["port", "65536"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("0 to 65535"));
}

#[test]
fn the_library_and_the_binary_read_addresses_the_same_way() {
    let v6: Ipv6Addr = "::ffff:127.0.0.1".parse().unwrap();
    let address: IpAddress = "127.1".parse().unwrap();
    assert_eq!(address.ipv4_mapped(), Some(v6));
    let shown = &run_json(&["addr", "--json", "127.1"])[0];
    assert_eq!(shown["ipv4_mapped"], v6.to_string());
    assert_eq!(shown["packed"], "7f000001");
}

/// `names::Address` was renamed `IpAddress` (`service::Address` is a transport peer); the old
/// path still works for one release.
#[test]
#[allow(deprecated)]
fn the_old_name_of_ip_address_still_parses() {
    let old: socketkit::names::Address = "127.1".parse().unwrap();
    let new: IpAddress = "127.0.0.1".parse().unwrap();
    assert_eq!(old, new);
}
