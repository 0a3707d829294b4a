//! `serve --metrics`: real traffic on every engine moves the counters a scrape shows; the text
//! is valid Prometheus text format (checked by a small parser in Python, which also does the
//! scraping, with urllib); only `GET /metrics` is answered; a scraper that never sends its
//! request holds neither another scrape nor serving. And `--log-format json`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use socketkit::Engine;

use crate::common::{SAFETY_TIMEOUT, Spawned, socketkit};

/// Scrapes a URL with urllib and checks the text format; prints
/// `{"status": N, "samples": [[name, {labels}, value], ...]}`. Exits 1 with the reason on stderr
/// when the text is not valid Prometheus text format (0.0.4): every line a comment, HELP, TYPE
/// or sample; each sample in a family declared by TYPE before it (a histogram's `_bucket`,
/// `_sum`, `_count`); well-formed labels and values; no series twice; a histogram's buckets
/// cumulative, its `+Inf` bucket equal to its `_count`.
const SCRAPE: &str = r##"
import json, re, sys, urllib.request, urllib.error
url, method = sys.argv[1], sys.argv[2]
try:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
        status, ctype, body = r.status, r.headers.get("Content-Type", ""), r.read().decode()
except urllib.error.HTTPError as e:
    print(json.dumps({"status": e.code, "samples": []})); sys.exit(0)
def fail(why, line=""):
    print(f"invalid: {why}: {line!r}", file=sys.stderr); sys.exit(1)
if not ctype.startswith("text/plain; version=0.0.4"): fail("content type", ctype)
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
SAMPLE = re.compile(rf"^({NAME})(?:\{{((?:{LABEL})(?:,{LABEL})*)?,?\}})? (\S+)$")
types, samples, seen = {}, [], set()
for line in body.split("\n"):
    if line == "": continue
    if line.startswith("# HELP "):
        if not re.match(rf"^# HELP {NAME} .*$", line): fail("HELP", line)
        continue
    if line.startswith("# TYPE "):
        m = re.match(rf"^# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)$", line)
        if not m or m.group(1) in types: fail("TYPE", line)
        types[m.group(1)] = m.group(2); continue
    if line.startswith("#"): continue
    m = SAMPLE.match(line)
    if not m: fail("sample", line)
    name, labels_text, value = m.group(1), m.group(2) or "", m.group(3)
    try: v = float(value)
    except ValueError: fail("value", line)
    labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels_text))
    family = name if name in types else re.sub(r"_(bucket|sum|count)$", "", name)
    if family not in types: fail("no TYPE before", line)
    if family != name and types[family] != "histogram": fail("suffix of a non-histogram", line)
    key = (name, tuple(sorted(labels.items())))
    if key in seen: fail("series twice", line)
    seen.add(key); samples.append([name, labels, v])
for family, kind in types.items():
    if kind != "histogram": continue
    series = {}
    for name, labels, v in samples:
        if name == family + "_bucket":
            rest = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
            series.setdefault(rest, []).append((float(labels["le"]), v))
    for rest, buckets in series.items():
        counts = [v for _, v in sorted(buckets)]
        if counts != sorted(counts): fail("buckets not cumulative", family)
        total = [v for n, l, v in samples if n == family + "_count"
                 and tuple(sorted(l.items())) == rest]
        if sorted(buckets)[-1][0] != float("inf") or total != [counts[-1]]:
            fail("+Inf bucket and _count", family)
print(json.dumps({"status": status, "samples": samples}))
"##;

/// One scrape: the status and the samples.
struct Scrape {
    status: u64,
    samples: Vec<(String, serde_json::Map<String, Value>, f64)>,
}

impl Scrape {
    /// The sum of the samples named `name` whose labels include all of `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).and_then(Value::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }
}

fn scrape_with(url: &str, method: &str) -> Scrape {
    let output = Command::new("python3")
        .args(["-c", SCRAPE, url, method])
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "the scrape failed or the text is invalid: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    let samples = json["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let name = s[0].as_str().unwrap().to_string();
            (
                name,
                s[1].as_object().unwrap().clone(),
                s[2].as_f64().unwrap(),
            )
        })
        .collect();
    Scrape {
        status: json["status"].as_u64().unwrap(),
        samples,
    }
}

/// `socketkit serve --metrics tcp://127.0.0.1:0` with `args`; the metrics address and the
/// endpoints bound.
fn serve(args: &[&str], listeners: usize) -> (Spawned, SocketAddr, Vec<socketkit::Endpoint>) {
    let mut command = socketkit();
    command
        .args(["serve", "--metrics", "tcp://127.0.0.1:0"])
        .args(args);
    let mut server = Spawned::start(command);
    let line = server.wait_for_line("metrics on http://");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .parse()
        .unwrap();
    let endpoints = server.listening(listeners);
    (server, addr, endpoints)
}

/// Scrapes until `done` holds (the counters move as the server's threads get to it), for at
/// most the safety time-out; returns that scrape.
fn scrape_until(metrics: SocketAddr, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let began = Instant::now();
    loop {
        let scrape = scrape_with(&format!("http://{metrics}/metrics"), "GET");
        assert_eq!(scrape.status, 200);
        if done(&scrape) {
            return scrape;
        }
        assert!(
            began.elapsed() < SAFETY_TIMEOUT,
            "{what}: never seen; last scrape {:#?}",
            scrape.samples
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&format!("{source}:0").parse::<SocketAddr>().unwrap().into())?;
    socket.connect(&to.into())?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(SAFETY_TIMEOUT))?;
    Ok(stream)
}

/// Reads until the server closes (EOF or a reset); what was read.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

fn counters_follow_traffic(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let gram = format!("unixgram://{}/d.sock", dir.path().display());
    let (_server, metrics, endpoints) = serve(
        &[
            "-e",
            engine.name(),
            "-l",
            "tcp://127.0.0.1:0",
            "-l",
            "udp://127.0.0.1:0",
            "-l",
            &gram,
            "--deny",
            "127.0.0.2",
            "-i",
            "1s",
            "--message-timeout",
            "300ms",
            "--datagram-rate",
            "1",
        ],
        3,
    );
    let tcp = endpoints[0].socket_addrs().unwrap()[0];
    let udp = endpoints[1].socket_addrs().unwrap()[0];
    let (tcp_label, udp_label) = (endpoints[0].to_string(), endpoints[1].to_string());
    let gram_label = endpoints[2].to_string();

    // Streams: one answered to its EOF, one refused, one idle, one stuck in a message.
    let mut answered = connect_from("127.0.0.1", tcp).unwrap();
    answered.write_all(b"hello").unwrap();
    answered.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut answered), b"HELLO");
    if let Ok(mut refused) = connect_from("127.0.0.2", tcp) {
        assert_eq!(read_to_close(&mut refused), b"", "refused: nothing read");
    }
    let mut idle = connect_from("127.0.0.1", tcp).unwrap();
    let mut stuck = connect_from("127.0.0.1", tcp).unwrap();
    stuck.write_all(b"\xc3").unwrap(); // the first byte of a two-byte character
    assert_eq!(read_to_close(&mut idle), b"");
    assert_eq!(read_to_close(&mut stuck), b"");

    // Datagrams: answered, over the rate (another source, 127.0.0.3, is heard first: a source
    // alone is never limited), refused, truncated.
    let other = UdpSocket::bind("127.0.0.3:0").unwrap();
    other.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    other.send_to(b"first", udp).unwrap();
    let mut buf = [0u8; 64];
    let n = other.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"FIRST");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    client.send_to(b"hello", udp).unwrap();
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"HELLO");
    for _ in 0..5 {
        client.send_to(b"again", udp).unwrap();
    }
    UdpSocket::bind("127.0.0.2:0")
        .unwrap()
        .send_to(b"nope", udp)
        .unwrap();
    let unix = UnixDatagram::bind(dir.path().join("c.sock")).unwrap();
    let path = dir.path().join("d.sock");
    unix.send_to(&vec![b'x'; 70_000], &path).unwrap(); // over the 64 KiB receive buffer

    let tcp_is = [("listener", tcp_label.as_str()), ("service", "upper")];
    let end = |s: &Scrape, cause: &str| {
        s.value(
            "socketkit_connection_ends_total",
            &[("listener", &tcp_label), ("cause", cause)],
        )
    };
    let udp_drop = |s: &Scrape, reason: &str| {
        s.value(
            "socketkit_datagrams_dropped_total",
            &[("listener", &udp_label), ("reason", reason)],
        )
    };
    let s = scrape_until(metrics, "every connection's end and datagram", |s| {
        end(s, "eof") + end(s, "idle") + end(s, "message_timeout") >= 3.0
            && s.value(
                "socketkit_datagrams_received_total",
                &[("listener", &udp_label)],
            ) >= 8.0
            && s.value(
                "socketkit_datagrams_dropped_total",
                &[("listener", &gram_label)],
            ) >= 1.0
    });
    let name = engine.name();
    assert_eq!(end(&s, "eof"), 1.0, "{name}");
    assert_eq!(end(&s, "idle"), 1.0, "{name}");
    assert_eq!(end(&s, "message_timeout"), 1.0, "{name}");
    assert_eq!(
        s.value("socketkit_connections_accepted_total", &tcp_is),
        3.0
    );
    let refused = [("listener", tcp_label.as_str()), ("reason", "access_list")];
    assert_eq!(
        s.value("socketkit_connections_refused_total", &refused),
        1.0
    );
    assert_eq!(s.value("socketkit_connections_active", &tcp_is), 0.0);
    assert_eq!(s.value("socketkit_requests_total", &tcp_is), 1.0, "HELLO");
    assert_eq!(s.value("socketkit_received_bytes_total", &tcp_is), 6.0);
    assert_eq!(s.value("socketkit_sent_bytes_total", &tcp_is), 5.0);
    let durations = [("listener", tcp_label.as_str())];
    assert_eq!(
        s.value("socketkit_connection_duration_seconds_count", &durations),
        3.0
    );
    let over_a_second = [("listener", tcp_label.as_str()), ("le", "0.5")];
    assert!(
        s.value(
            "socketkit_connection_duration_seconds_bucket",
            &over_a_second
        ) <= 2.0,
        "the idle connection lasted a second"
    );
    assert!(s.value("socketkit_connection_duration_seconds_sum", &durations) >= 1.0);

    let udp_is = [("listener", udp_label.as_str())];
    assert_eq!(s.value("socketkit_datagrams_received_total", &udp_is), 8.0);
    let answered = s.value("socketkit_datagrams_answered_total", &udp_is);
    assert!(answered >= 2.0, "first and hello");
    assert_eq!(udp_drop(&s, "refused"), 1.0, "{name}");
    assert!(udp_drop(&s, "rate") >= 1.0, "{name}: five at once over 1/s");
    assert_eq!(
        answered + udp_drop(&s, "rate") + udp_drop(&s, "refused"),
        8.0
    );
    assert_eq!(s.value("socketkit_received_bytes_total", &udp_is), 39.0);
    assert_eq!(
        s.value("socketkit_sent_bytes_total", &udp_is),
        answered * 5.0
    );
    assert_eq!(s.value("socketkit_requests_total", &udp_is), answered);
    let truncated = [("listener", gram_label.as_str()), ("reason", "truncated")];
    assert_eq!(
        s.value("socketkit_datagrams_dropped_total", &truncated),
        1.0
    );

    // The build and the process.
    assert_eq!(
        s.value(
            "socketkit_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(s.value("process_open_fds", &[]) >= 5.0);
    assert!(s.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(s.has("process_cpu_seconds_total") && s.has("process_start_time_seconds"));
}

#[test]
fn counters_follow_traffic_async() {
    counters_follow_traffic(Engine::Async);
}

#[test]
fn counters_follow_traffic_sequential() {
    counters_follow_traffic(Engine::Sequential);
}

#[test]
fn counters_follow_traffic_threaded() {
    counters_follow_traffic(Engine::Threaded);
}

#[test]
fn counters_follow_traffic_pool() {
    counters_follow_traffic(Engine::Pool);
}

#[test]
fn counters_follow_traffic_uring() {
    counters_follow_traffic(Engine::Uring);
}

/// At `-m 1`, a second client waits in the listen queue: the listener counts the limit reached,
/// and the client is served once the first leaves. (The sequential engine serves one at a time
/// on the listener's own thread and never waits for a slot.)
#[test]
fn the_connection_limit_is_counted() {
    for engine in [Engine::Async, Engine::Threaded, Engine::Pool, Engine::Uring] {
        let (_server, metrics, endpoints) = serve(
            &["-e", engine.name(), "-m", "1", "-l", "tcp://127.0.0.1:0"],
            1,
        );
        let tcp = endpoints[0].socket_addrs().unwrap()[0];
        let mut first = connect_from("127.0.0.1", tcp).unwrap();
        first.write_all(b"a").unwrap();
        let mut buf = [0u8; 1];
        first.read_exact(&mut buf).unwrap(); // served: it holds the one slot
        let mut second = connect_from("127.0.0.1", tcp).unwrap();
        second.write_all(b"b").unwrap();
        second.shutdown(Shutdown::Write).unwrap();
        scrape_until(metrics, "the limit reached", |s| {
            s.value("socketkit_connection_limit_reached_total", &[]) >= 1.0
                && s.value("socketkit_connections_active", &[]) == 1.0
        });
        first.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_close(&mut first), b"");
        assert_eq!(read_to_close(&mut second), b"B", "{engine}");
        let s = scrape_until(metrics, "both ended", |s| {
            s.value("socketkit_connection_ends_total", &[("cause", "eof")]) == 2.0
        });
        assert_eq!(s.value("socketkit_connections_accepted_total", &[]), 2.0);
        assert_eq!(s.value("socketkit_connections_active", &[]), 0.0);
    }
}

/// Only `GET /metrics`; a scraper that never sends its request holds neither another scrape
/// nor serving.
#[test]
fn only_get_metrics_is_answered_and_a_slow_scraper_holds_nothing() {
    let (_server, metrics, endpoints) = serve(&["-l", "tcp://127.0.0.1:0"], 1);
    let mut silent = TcpStream::connect(metrics).unwrap(); // never sends a byte
    for (path, method) in [("/", "GET"), ("/metrics/x", "GET"), ("/metrics", "POST")] {
        let s = scrape_with(&format!("http://{metrics}{path}"), method);
        assert_eq!(s.status, 404, "{method} {path}");
    }
    let s = scrape_with(&format!("http://{metrics}/metrics"), "HEAD");
    assert_eq!(s.status, 404, "HEAD");
    let tcp = endpoints[0].socket_addrs().unwrap()[0];
    let mut client = connect_from("127.0.0.1", tcp).unwrap();
    client.write_all(b"still served").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut client), b"STILL SERVED");
    let s = scrape_until(metrics, "the exchange", |s| {
        s.value("socketkit_connection_ends_total", &[("cause", "eof")]) == 1.0
    });
    assert_eq!(s.value("socketkit_requests_total", &[]), 1.0);
    // The silent scraper is closed after the header time-out.
    silent.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let mut rest = Vec::new();
    let began = Instant::now();
    let _ = silent.read_to_end(&mut rest);
    assert!(
        began.elapsed() < SAFETY_TIMEOUT,
        "the silent scraper was closed"
    );
}

/// `--log-format json`: every stderr line is one JSON object (the "listening on" and
/// "metrics on" lines included), with a level and a message.
#[test]
fn log_format_json_writes_one_object_per_line() {
    let mut command = socketkit();
    command.args([
        "--log-format",
        "json",
        "-v",
        "serve",
        "-l",
        "tcp://127.0.0.1:0",
    ]);
    command.args(["--metrics", "tcp://127.0.0.1:0"]);
    let mut server = Spawned::start(command);
    let endpoints = server.listening(1);
    let tcp = endpoints[0].socket_addrs().unwrap()[0];
    let mut client = connect_from("127.0.0.1", tcp).unwrap();
    client.write_all(b"x").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut client), b"X");
    server.wait_for_line("connection closed");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait_for_line("stopped");
    assert_eq!(server.wait_exit(), Some(0));
    let lines = server.lines_so_far().to_vec();
    assert!(lines.len() >= 4, "{lines:#?}");
    for line in &lines {
        let object: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(object["level"].is_string(), "{line}");
        assert!(object["timestamp"].is_string(), "{line}");
        assert!(object["fields"]["message"].is_string(), "{line}");
    }
    assert!(lines.iter().any(|l| l.contains("metrics on http://")));
}

/// `--metrics` takes a TCP endpoint (exit 2 otherwise) that can be bound (exit 7 otherwise).
#[test]
fn a_bad_metrics_endpoint_is_a_clear_error() {
    let output = socketkit()
        .args([
            "serve",
            "-l",
            "tcp://127.0.0.1:0",
            "--metrics",
            "udp://127.0.0.1:0",
        ])
        .output()
        .unwrap();
    crate::common::assert_code(&output, 2);
    assert!(crate::common::stderr(&output).contains("tcp://"));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", taken.local_addr().unwrap());
    let output = socketkit()
        .args(["serve", "-l", "tcp://127.0.0.1:0", "--metrics", &endpoint])
        .output()
        .unwrap();
    crate::common::assert_code(&output, 7);
}

/// Replies a `DatagramHandler` sends itself (through `DatagramRequest::reply`, on the thread
/// engines) count like a service's: the datagram as answered (once, however many replies),
/// the bytes as sent, and a reply over the datagram limit as dropped (oversize).
#[test]
fn a_datagram_handlers_own_replies_are_counted() {
    use socketkit::handler::{DatagramHandler, DatagramRequest};
    use socketkit::stats::{DropReason, Stats};

    struct Twice;
    impl DatagramHandler for Twice {
        fn handle(&self, request: &mut DatagramRequest<'_>) -> std::io::Result<()> {
            let data = request.data().to_vec();
            if data == b"big" {
                return request.reply(&[b'x'; 100]); // over the limit below: not sent
            }
            request.reply(&data)?;
            request.reply(&data)
        }
    }
    for engine in [Engine::Sequential, Engine::Threaded, Engine::Pool] {
        let stats = Stats::new();
        let mut limits = socketkit::Limits::default();
        limits.max_datagram = 64;
        let server = crate::common::TestServer::with(
            socketkit::Server::builder()
                .engine(engine)
                .limits(limits)
                .listen("udp://127.0.0.1:0".parse().unwrap())
                .datagram_handler(Twice)
                .stats(&stats),
        );
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        let mut buf = [0u8; 128];
        for _ in 0..3 {
            client.send_to(b"hello", server.addr()).unwrap();
            for _ in 0..2 {
                let (n, _) = client.recv_from(&mut buf).unwrap();
                assert_eq!(&buf[..n], b"hello", "{engine}");
            }
        }
        client.send_to(b"big", server.addr()).unwrap();
        // The oversize reply is not sent: a last datagram answered shows the handler got past it.
        client.send_to(b"last", server.addr()).unwrap();
        for _ in 0..2 {
            let (n, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"last", "{engine}");
        }
        server.stop().unwrap(); // waits for the handlers: the counts are final
        let snap = stats.listeners()[0].snapshot();
        assert_eq!(snap.datagrams_received, 5, "{engine}");
        assert_eq!(
            snap.datagrams_answered, 4,
            "{engine}: one per datagram answered"
        );
        assert_eq!(snap.bytes_out, 3 * 2 * 5 + 2 * 4, "{engine}");
        assert_eq!(
            snap.datagrams_dropped[DropReason::Oversize as usize],
            1,
            "{engine}"
        );
    }
}

/// A failed TLS handshake is a connection end of its own cause (`tls_handshake`), so the
/// accepted connections still add up to their ends; a good one ends as any connection does.
#[cfg(feature = "tls")]
#[test]
fn a_failed_tls_handshake_is_counted_as_its_own_end() {
    let (_server, metrics, endpoints) = serve(&["-l", "tls://127.0.0.1:0", "--tls-self-signed"], 1);
    let addr = endpoints[0].socket_addrs().unwrap()[0];
    let mut plain = connect_from("127.0.0.1", addr).unwrap();
    plain.write_all(b"hello in plain text\n").unwrap();
    read_to_close(&mut plain); // the alert, then the close
    let s = scrape_until(metrics, "the failed handshake", |s| {
        s.value(
            "socketkit_connection_ends_total",
            &[("cause", "tls_handshake")],
        ) == 1.0
    });
    assert_eq!(s.value("socketkit_connections_accepted_total", &[]), 1.0);
    assert_eq!(s.value("socketkit_connections_active", &[]), 0.0);
    let output = socketkit()
        .args(["send", &endpoints[0].to_string(), "hello", "--tls-insecure"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(output.stdout, b"HELLO");
    let s = scrape_until(metrics, "the good connection's end", |s| {
        s.value("socketkit_connection_ends_total", &[("cause", "eof")]) == 1.0
    });
    assert_eq!(s.value("socketkit_connections_accepted_total", &[]), 2.0);
    assert_eq!(
        s.value(
            "socketkit_connection_ends_total",
            &[("cause", "tls_handshake")]
        ),
        1.0
    );
}
