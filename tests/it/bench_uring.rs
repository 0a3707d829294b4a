//! `socketkit bench --engine uring` against `socketkit serve` and plain Python socket servers:
//! the io_uring load loops verify every reply, count every request and every failure as the
//! async workers do, record the same histograms, stop at their bound by themselves, say which
//! engine ran, refuse the modes they do not run, and fall back to the async engine where
//! io_uring is refused.

// Without the uring feature only the refusal tests run.
#![cfg_attr(not(feature = "uring"), allow(dead_code, unused_imports))]

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Spawned, assert_code, first_stdout_line, peer, socketkit, stderr, stdout};

/// A `socketkit serve` process running `service` on `endpoints`.
fn serve(service: &str, endpoints: &[&str]) -> (Spawned, Vec<String>) {
    let mut command = socketkit();
    command.args(["serve", service]);
    for endpoint in endpoints {
        command.args(["-l", endpoint]);
    }
    let mut server = Spawned::start(command);
    let found = server
        .listening(endpoints.len())
        .iter()
        .map(ToString::to_string)
        .collect();
    (server, found)
}

fn bench(args: &[&str], env: Option<(&str, &str)>) -> Output {
    let mut command = socketkit();
    command.arg("bench").args(args);
    if let Some((name, value)) = env {
        command.env(name, value);
    }
    command.output().expect("run socketkit bench")
}

fn json(output: &Output) -> serde_json::Value {
    serde_json::from_str(stdout(output).trim()).expect("one JSON object")
}

#[cfg(feature = "uring")]
#[test]
fn uring_bench_verifies_every_reply_on_tcp_unix_and_udp() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix://{}", dir.path().join("s").display());
    let (_server, endpoints) = serve("upper", &["tcp://127.0.0.1:0", &unix, "udp://127.0.0.1:0"]);
    let cases: [(&str, Vec<&str>); 4] = [
        ("tcp", vec![&endpoints[0], "-c", "8", "-n", "2000"]),
        (
            "tcp pipelined",
            vec![&endpoints[0], "-c", "3", "--pipeline", "4", "-n", "900"],
        ),
        ("unix", vec![&endpoints[1], "-c", "5", "-n", "1000"]),
        ("udp", vec![&endpoints[2], "-c", "4", "-n", "800"]),
    ];
    for (name, mut args) in cases {
        args.extend(["--engine", "uring", "--json"]);
        let output = bench(&args, None);
        assert_code(&output, 0);
        let report = json(&output);
        assert_eq!(report["engine"], "uring", "{name}: {report}");
        let expected: u64 = args[args.iter().position(|a| *a == "-n").unwrap() + 1]
            .parse()
            .unwrap();
        assert_eq!(report["ok"], expected, "{name}: {report}");
        assert_eq!(report["mismatches"], 0, "{name}");
        assert_eq!(report["errors"], 0, "{name}");
        assert!(
            report["latency_us"]["p99"].as_f64().unwrap() > 0.0,
            "{name}"
        );
        assert!(report["own_cpu_s"].as_f64().is_some(), "{name}");
    }
    // The human report names the engine too.
    let output = bench(&[&endpoints[0], "-n", "50", "-e", "uring"], None);
    assert_code(&output, 0);
    assert!(
        stdout(&output)
            .lines()
            .any(|l| l.starts_with("engine") && l.ends_with("uring")),
        "{}",
        stdout(&output)
    );
}

#[cfg(feature = "uring")]
#[test]
fn a_wrong_reply_counts_as_a_mismatch_on_uring_too() {
    let (_server, endpoints) = serve("echo", &["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]);
    for endpoint in &endpoints {
        let output = bench(
            &[endpoint, "-c", "2", "-n", "40", "-e", "uring", "--json"],
            None,
        );
        assert_code(&output, 3);
        let report = json(&output);
        assert_eq!(report["engine"], "uring");
        assert_eq!(report["ok"], 0, "{report}");
        assert!(report["mismatches"].as_u64().unwrap() > 0, "{report}");
        // Every reply was the request itself: the hint says so, as on the async engine.
        assert!(
            report["hint"].as_str().unwrap().contains("--expect echo"),
            "{report}"
        );
    }
}

#[test]
fn refused_io_uring_runs_the_bench_on_async_with_one_warning() {
    let (_server, endpoints) = serve("upper", &["tcp://127.0.0.1:0"]);
    let output = bench(
        &[&endpoints[0], "-n", "100", "-e", "uring", "--json"],
        Some(("SOCKETKIT_URING", "refuse")),
    );
    assert_code(&output, 0);
    let report = json(&output);
    assert_eq!(report["engine"], "async", "{report}");
    assert_eq!(report["ok"], 100);
    let warnings: Vec<_> = stderr(&output)
        .lines()
        .filter(|l| l.contains("WARN"))
        .map(str::to_string)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(
        warnings[0].contains("SOCKETKIT_URING=refuse"),
        "{}",
        warnings[0]
    );
    assert!(warnings[0].contains("async engine"), "{}", warnings[0]);
    // The default is the async engine, without a warning.
    let output = bench(&[&endpoints[0], "-n", "10", "--json"], None);
    assert_eq!(json(&output)["engine"], "async");
    assert!(!stderr(&output).contains("WARN"), "{}", stderr(&output));
}

#[test]
fn modes_uring_does_not_run_are_a_usage_error_naming_those_it_does() {
    let (_server, endpoints) = serve("upper", &["tcp://127.0.0.1:0"]);
    for extra in [
        &["-m", "connect"][..],
        &["-m", "stream"],
        &["-m", "idle"],
        &["-r", "100"],
    ] {
        let mut args = vec![endpoints[0].as_str(), "-n", "10", "-e", "uring"];
        args.extend(extra);
        let output = bench(&args, None);
        assert_code(&output, 2);
        let text = stderr(&output);
        assert!(text.contains("--engine"), "{extra:?}: {text}");
        if extra[0] == "-m" {
            assert!(text.contains("pingpong") && text.contains("udp"), "{text}");
        }
    }
    let output = bench(&[&endpoints[0], "-n", "10", "-e", "pool"], None);
    assert_code(&output, 2);
    // TLS stays on the async engine, which has the handshake.
    let tls = endpoints[0].replace("tcp://", "tls://");
    let output = bench(&[&tls, "-n", "10", "-e", "uring"], None);
    assert_code(&output, 2);
    assert!(stderr(&output).contains("tls://"), "{}", stderr(&output));
}

#[cfg(feature = "uring")]
#[test]
fn failures_are_counted_by_kind_on_uring_as_on_async() {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    // Refused: every connection attempt costs a request, so the run ends.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = bench(
        &[
            &format!("tcp://{closed}"),
            "-n",
            "3",
            "-e",
            "uring",
            "--json",
        ],
        None,
    );
    assert_code(&output, 4);
    let report = json(&output);
    assert_eq!(report["engine"], "uring");
    assert_eq!(report["error_kinds"]["refused"], 3, "{report}");

    // A server that answers one request per connection and closes: the same hint.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
    let closing = std::thread::spawn(move || {
        for _ in 0..3 {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            conn.read_exact(&mut buf).unwrap();
            conn.write_all(&buf.to_ascii_uppercase()).unwrap();
        }
    });
    let output = bench(&[&endpoint, "-n", "6", "-e", "uring", "--json"], None);
    assert_code(&output, 1);
    let report = json(&output);
    assert_eq!(report["ok"], 3, "{report}");
    assert!(
        report["hint"].as_str().unwrap().contains("-m connect"),
        "{report}"
    );
    closing.join().unwrap();

    // A server that never answers: the time-out bounds the wait (exit 5).
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", silent.local_addr().unwrap());
    let output = bench(
        &[
            &endpoint, "-c", "2", "-n", "4", "-w", "200ms", "-e", "uring", "--json",
        ],
        None,
    );
    assert_code(&output, 5);
    let report = json(&output);
    assert!(report["timeouts"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["ok"], 0, "{report}");
    drop(silent);
}

/// A Python server from `tests/peers`, killed (by its own handle) when dropped.
struct Python {
    child: Child,
    port: u16,
}

impl Python {
    /// Starts `script ARGS` and reads its port, the last word of its first stdout line.
    fn start(script: &str, args: &[&str]) -> Python {
        let child = Command::new("python3")
            .arg(peer(script))
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn python3");
        let mut server = Python { child, port: 0 };
        let line = first_stdout_line(&mut server.child, script);
        server.port = line
            .split_whitespace()
            .last()
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("{script}: no port in {line:?}"));
        server
    }

    fn endpoint(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

impl Drop for Python {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The figures two engines must agree on: exit code and every count.
fn counts(output: &Output) -> (Option<i32>, serde_json::Value) {
    let report = json(output);
    let fields = [
        "ok",
        "errors",
        "error_kinds",
        "timeouts",
        "losses",
        "mismatches",
        "hint",
    ];
    let picked = fields
        .iter()
        .map(|f| (f.to_string(), report[*f].clone()))
        .collect::<serde_json::Map<_, _>>();
    (output.status.code(), serde_json::Value::Object(picked))
}

/// Every request of a request-bounded run ends exactly once: answered, failed, timed out,
/// lost or mismatched.
fn assert_every_request_counted(report: &serde_json::Value, requests: u64) {
    let sum: u64 = ["ok", "errors", "timeouts", "losses", "mismatches"]
        .iter()
        .map(|f| report[*f].as_u64().unwrap())
        .sum();
    assert_eq!(sum, requests, "{report}");
}

#[cfg(feature = "uring")]
#[test]
fn uring_bench_counts_every_request_exactly_against_python_servers() {
    let tcp = Python::start("bench_target.py", &["upper"]);
    let udp = Python::start("udp_server.py", &["0"]);
    for (endpoint, connections, requests) in [
        (tcp.endpoint("tcp"), "4", 1000),
        (udp.endpoint("udp"), "4", 600),
    ] {
        let n = requests.to_string();
        let output = bench(
            &[
                &endpoint,
                "-c",
                connections,
                "-n",
                &n,
                "-e",
                "uring",
                "--json",
            ],
            None,
        );
        assert_code(&output, 0);
        let report = json(&output);
        assert_eq!(report["engine"], "uring", "{report}");
        assert_eq!(report["ok"], requests, "{report}");
        assert_every_request_counted(&report, requests);
        // Every request went out once and every reply came back whole.
        assert_eq!(report["bytes_sent"], requests * 64, "{report}");
        assert_eq!(report["bytes_received"], requests * 64, "{report}");
    }
}

#[cfg(feature = "uring")]
#[test]
fn uring_counts_failures_exactly_as_async_does() {
    let one_reply = Python::start("tcp_server_threaded.py", &["0"]);
    let truncate = Python::start("bench_target.py", &["truncate"]);
    let reset = Python::start("bench_target.py", &["reset"]);
    // Ports bound and closed again: nothing listens there.
    let refused_tcp = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("tcp://{}", listener.local_addr().unwrap())
    };
    let refused_udp = {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        format!("udp://{}", socket.local_addr().unwrap())
    };
    // (server, exit code, ok, failures by kind); one connection, so each count is exact.
    let cases = [
        (one_reply.endpoint("tcp"), 1, 3, ("closed", 3)),
        (truncate.endpoint("tcp"), 1, 0, ("truncated", 6)),
        (reset.endpoint("tcp"), 4, 0, ("reset", 6)),
        (refused_tcp, 4, 0, ("refused", 6)),
        (refused_udp, 4, 0, ("refused", 6)),
    ];
    for (endpoint, code, ok, (kind, failed)) in cases {
        let mut seen = Vec::new();
        for engine in ["async", "uring"] {
            let output = bench(
                &[
                    &endpoint, "-c", "1", "-n", "6", "-w", "5s", "-e", engine, "--json",
                ],
                None,
            );
            assert_code(&output, code);
            let report = json(&output);
            assert_eq!(report["engine"], engine, "{report}");
            assert_eq!(report["ok"], ok, "{engine} {endpoint}: {report}");
            assert_eq!(
                report["error_kinds"][kind], failed,
                "{engine} {endpoint}: {report}"
            );
            assert_every_request_counted(&report, 6);
            seen.push(counts(&output));
        }
        assert_eq!(seen[0], seen[1], "{endpoint}: async, then uring");
    }
    // The server that answers one request per connection earns the hint on both.
    let output = bench(
        &[
            &one_reply.endpoint("tcp"),
            "-c",
            "1",
            "-n",
            "4",
            "-e",
            "uring",
            "--json",
        ],
        None,
    );
    let report = json(&output);
    assert!(
        report["hint"].as_str().unwrap().contains("-m connect"),
        "{report}"
    );
}

#[cfg(feature = "uring")]
#[test]
fn a_uring_connect_waits_no_longer_than_the_time_out() {
    // A Unix listener with a backlog of 0 that never accepts: the first connection is queued
    // (and never answered), every other connect waits for room that never comes.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stalled");
    let listener =
        socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(&socket2::SockAddr::unix(&path).unwrap())
        .unwrap();
    listener.listen(0).unwrap();
    let endpoint = format!("unix://{}", path.display());
    let started = Instant::now();
    let output = bench(
        &[
            &endpoint, "-c", "3", "-n", "6", "-w", "300ms", "-e", "uring", "--json",
        ],
        None,
    );
    let took = started.elapsed();
    assert_code(&output, 5);
    let report = json(&output);
    assert_eq!(report["engine"], "uring");
    assert_eq!(report["timeouts"], 6, "{report}");
    assert_every_request_counted(&report, 6);
    // Six waits of 300 ms, three at a time.
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(listener);
}

#[cfg(feature = "uring")]
#[test]
fn a_duration_bounds_a_uring_run_and_it_stops_by_itself() {
    let (_server, endpoints) = serve("upper", &["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]);
    for endpoint in &endpoints {
        let started = Instant::now();
        let output = bench(
            &[endpoint, "-c", "3", "-d", "700ms", "-e", "uring", "--json"],
            None,
        );
        let took = started.elapsed();
        assert_code(&output, 0);
        let report = json(&output);
        assert_eq!(report["engine"], "uring");
        assert!(report["ok"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(report["errors"], 0, "{report}");
        let elapsed = report["elapsed_s"].as_f64().unwrap();
        assert!((0.7..3.0).contains(&elapsed), "{endpoint}: {elapsed} s");
        assert!(took < Duration::from_secs(10), "{endpoint}: {took:?}");
    }
}

#[cfg(all(feature = "uring", feature = "plot", feature = "hdr-log"))]
#[test]
fn uring_runs_record_the_same_histograms_for_plot_and_hdr_log() {
    let (_server, endpoints) = serve("upper", &["tcp://127.0.0.1:0"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run.hdr");
    let svg = dir.path().join("run.svg");
    // 1.5 s: two seconds of figures, so the per-second series are lines.
    let output = bench(
        &[
            &endpoints[0],
            "-c",
            "2",
            "-d",
            "1.5s",
            "-e",
            "uring",
            "--json",
            "--hdr-log",
            log.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ],
        None,
    );
    assert_code(&output, 0);
    let report = json(&output);
    assert_eq!(report["engine"], "uring");
    let all = crate::report::crate_reads(&log);
    assert_eq!(all.len(), report["ok"].as_u64().unwrap(), "{report}");
    let p99_us = all.value_at_quantile(0.99) as f64 / 1000.0;
    assert_eq!(report["latency_us"]["p99"].as_f64().unwrap(), p99_us);
    let (texts, lines) = crate::report::svg_texts_and_lines(&svg);
    for series in [
        "latency by percentile",
        "good replies per second",
        "p99 latency per second",
    ] {
        assert!(texts.contains(series), "no {series:?} in {texts}");
    }
    // Three series, each drawn once and once more in its legend.
    assert!(lines >= 6, "{lines} lines");
}
