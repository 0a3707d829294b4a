//! `socketkit bench --engine uring` against `socketkit serve`: the io_uring load loops verify
//! every reply, say which engine ran, refuse the modes they do not run, and fall back to the
//! async engine where io_uring is refused.

use std::process::Output;

use crate::common::{Spawned, assert_code, socketkit, stderr, stdout};

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
