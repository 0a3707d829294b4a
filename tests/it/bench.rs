//! `socketkit bench` against in-process servers: every mode ends by itself, counts right, and
//! fails loudly when replies are wrong or missing.

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Output, Stdio};

use socketkit::{Engine, Server};
use wait_timeout::ChildExt;

use crate::common::{SAFETY_TIMEOUT, TestServer, assert_code, socketkit, stderr, stdout};

fn bench(args: &[&str]) -> std::process::Output {
    socketkit()
        .arg("bench")
        .args(args)
        .output()
        .expect("run socketkit bench")
}

fn json(output: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(stdout(output).trim()).expect("one JSON object")
}

#[test]
fn every_mode_runs_to_its_bound_and_verifies_every_reply() {
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]);
    let tcp = server.endpoint(0).to_string();
    let udp = server.endpoint(1).to_string();
    let cases: [(&str, Vec<&str>); 6] = [
        ("pingpong", vec![&tcp, "-c", "4", "-n", "400"]),
        (
            "pipelined",
            vec![&tcp, "-c", "2", "--pipeline", "8", "-n", "400"],
        ),
        (
            "connect",
            vec![&tcp, "-m", "connect", "-c", "4", "-n", "100"],
        ),
        ("udp", vec![&udp, "-m", "udp", "-c", "2", "-n", "200"]),
        ("unicode", vec![&tcp, "--payload", "unicode", "-n", "100"]),
        ("rate", vec![&tcp, "-r", "500", "-c", "2", "-n", "50"]),
    ];
    for (name, args) in cases {
        let mut args = args;
        args.push("--json");
        let output = bench(&args);
        assert_code(&output, 0);
        let report = json(&output);
        let expected = args[args.iter().position(|a| *a == "-n").unwrap() + 1];
        assert_eq!(report["ok"].to_string(), expected, "{name}: {report}");
        assert_eq!(report["mismatches"], 0, "{name}");
        assert!(
            report["latency_us"]["p99"].as_f64().unwrap() > 0.0,
            "{name}"
        );
    }
}

#[test]
fn stream_and_idle_modes_report_what_they_moved_and_held() {
    let server = TestServer::start(Engine::Threaded, &["tcp://127.0.0.1:0"]);
    let tcp = server.endpoint(0).to_string();
    let output = bench(&[
        &tcp,
        "-m",
        "stream",
        "--stream-bytes",
        "1M",
        "-c",
        "2",
        "--json",
    ]);
    assert_code(&output, 0);
    let report = json(&output);
    assert!(
        report["bytes_received"].as_u64().unwrap() >= 1 << 20,
        "{report}"
    );

    let output = bench(&[&tcp, "-m", "idle", "-c", "20", "-d", "200ms", "--json"]);
    assert_code(&output, 0);
    assert_eq!(json(&output)["held"], 20);
}

#[test]
fn a_wrong_reply_is_a_protocol_error() {
    // The server upper-cases; the bench expects an echo.
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0"]);
    let output = bench(&[
        &server.endpoint(0).to_string(),
        "--expect",
        "echo",
        "-n",
        "10",
    ]);
    assert_code(&output, 3);
    assert!(stdout(&output).contains("mismatches"));
}

#[test]
fn echo_and_length_framing_are_verified_too() {
    let server = TestServer::with(
        Server::builder()
            .service(socketkit::service::Echo)
            .framing(socketkit::codec::Framing::Length(Default::default()))
            .listen("tcp://127.0.0.1:0".parse().unwrap()),
    );
    let endpoint = server.endpoint(0).to_string();
    let output = bench(&[
        &endpoint,
        "--expect",
        "echo",
        "--framing",
        "length",
        "-n",
        "50",
    ]);
    assert_code(&output, 0);
}

#[test]
fn lost_datagrams_and_refused_connections_end_the_run_with_an_error() {
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("udp://{}", silent.local_addr().unwrap());
    let output = bench(&[&endpoint, "-m", "udp", "-n", "3", "-w", "50ms", "--json"]);
    assert_code(&output, 5);
    assert_eq!(json(&output)["losses"], 3);

    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = bench(&[&format!("tcp://{closed}"), "-n", "5", "--json"]);
    assert_code(&output, 4);
    assert!(json(&output)["errors"].as_u64().unwrap() >= 1);
}

#[test]
fn a_mode_that_does_not_fit_the_endpoint_is_a_usage_error() {
    let output = bench(&["tcp://127.0.0.1:9", "-m", "udp", "-n", "1"]);
    assert_code(&output, 2);
}

/// Runs bench, killing it (and failing) if it outlives the safety time-out: a hang is a bug.
fn bench_within(args: &[&str]) -> Output {
    let mut child = socketkit()
        .arg("bench")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run socketkit bench");
    if child.wait_timeout(SAFETY_TIMEOUT).unwrap().is_none() {
        child.kill().unwrap();
        let output = child.wait_with_output().unwrap();
        panic!("bench {args:?} hung; stdout: {}", stdout(&output));
    }
    child.wait_with_output().unwrap()
}

/// A blocking echo server on its own thread with small socket buffers (autotuning off), so
/// that a large message fills both sides' buffers; serves `connections` connections.
fn small_buffer_echo(connections: usize) -> (String, std::thread::JoinHandle<()>) {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap(); // inherited by accepted sockets
    socket.set_send_buffer_size(64 * 1024).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(8).unwrap();
    let listener: TcpListener = socket.into();
    let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
    let serving = std::thread::spawn(move || {
        for _ in 0..connections {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        }
    });
    (endpoint, serving)
}

#[test]
fn a_message_larger_than_both_socket_buffers_does_not_deadlock() {
    // 16 MiB against 64 KiB server buffers: written whole before any reply is read, the
    // request and its echo would fill all four buffers and both sides would wait forever.
    let (endpoint, serving) = small_buffer_echo(1);
    let output = bench_within(&[
        &endpoint, "--size", "16777216", "--expect", "echo", "-n", "1", "-w", "5s", "--json",
    ]);
    assert_code(&output, 0);
    let report = json(&output);
    assert_eq!(report["ok"], 1, "{report}");
    assert_eq!(report["bytes_received"], 16_777_216);
    serving.join().unwrap();
}

#[test]
fn the_time_out_bounds_a_write_the_server_never_reads() {
    // Accepts and never reads: the request cannot be written whole, and -w must end the wait.
    // The connections wait in its backlog, never accepted; the kernel buffers what it can.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
    for mode in ["pingpong", "connect"] {
        let output = bench_within(&[
            &endpoint, "-m", mode, "--size", "16777216", "-n", "1", "-w", "300ms", "--json",
        ]);
        assert_code(&output, 5);
        assert_eq!(json(&output)["timeouts"], 1, "{mode}");
    }
    drop(listener);
}

#[test]
fn a_fixed_rate_reports_the_schedule_lag_in_every_paced_mode() {
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]);
    let tcp = server.endpoint(0).to_string();
    let udp = server.endpoint(1).to_string();
    for (mode, endpoint) in [("pingpong", &tcp), ("connect", &tcp), ("udp", &udp)] {
        let output = bench(&[endpoint, "-m", mode, "-r", "1000", "-n", "100", "--json"]);
        assert_code(&output, 0);
        let report = json(&output);
        let lag = &report["schedule_lag_us"];
        let keys = |v: &serde_json::Value| {
            let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(keys(lag), keys(&report["latency_us"]), "{mode}: {report}");
        assert!(lag["p50"].as_f64().unwrap() >= 0.0, "{mode}");
        // Existing fields keep their types; error_kinds is an object beside errors.
        assert!(
            report["ok"].is_u64() && report["errors"].is_u64(),
            "{report}"
        );
        assert!(report["error_kinds"].is_object(), "{report}");

        let human = stdout(&bench(&[endpoint, "-m", mode, "-r", "1000", "-n", "20"]));
        assert!(human.contains("sched lag  p50"), "{mode}: {human}");
    }
    // Closed loop: no schedule, no lag.
    let output = bench(&[&tcp, "-n", "10", "--json"]);
    assert!(json(&output)["schedule_lag_us"].is_null());
}

#[test]
fn refusals_say_so_and_exit_4() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let output = bench(&[&format!("tcp://{closed}"), "-n", "3", "--json"]);
    assert_code(&output, 4);
    let report = json(&output);
    assert_eq!(
        report["error_kinds"]["refused"], report["errors"],
        "{report}"
    );
    let line = stderr(&output);
    assert!(line.contains("3 refused"), "{line}");
    assert!(
        line.contains("Connection refused"),
        "the first error's text: {line}"
    );
}

#[test]
fn a_reset_before_any_reply_counts_as_a_refusal() {
    // Accepts and resets at once (SO_LINGER 0), as a server denying a peer does.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("tcp://{}", listener.local_addr().unwrap());
    let resetting = std::thread::spawn(move || {
        for _ in 0..3 {
            let (conn, _) = listener.accept().unwrap();
            socket2::SockRef::from(&conn)
                .set_linger(Some(std::time::Duration::ZERO))
                .unwrap();
            let mut byte = [0u8; 1];
            let _ = (&conn).read(&mut byte); // the request has come: now reset
        }
    });
    let output = bench_within(&[&endpoint, "-m", "connect", "-n", "3", "--json"]);
    assert_code(&output, 4);
    assert_eq!(
        json(&output)["error_kinds"]["reset"],
        3,
        "{}",
        stdout(&output)
    );
    assert!(
        stderr(&output).contains("reset by the server"),
        "{}",
        stderr(&output)
    );
    resetting.join().unwrap();
}

#[test]
fn every_failure_alike_earns_a_hint() {
    // A server that answers one request per connection and closes, as the slides' servers do.
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
    let output = bench_within(&[&endpoint, "-n", "6", "--json"]);
    assert_code(&output, 1);
    let report = json(&output);
    assert_eq!(report["ok"], 3, "{report}");
    assert!(
        report["hint"].as_str().unwrap().contains("-m connect"),
        "{report}"
    );
    assert!(
        stderr(&output).contains("-m connect"),
        "{}",
        stderr(&output)
    );
    closing.join().unwrap();

    // An echo server, checked for upper case.
    let echo = TestServer::with(
        Server::builder()
            .service(socketkit::service::Echo)
            .listen("tcp://127.0.0.1:0".parse().unwrap()),
    );
    let output = bench(&[&echo.endpoint(0).to_string(), "-n", "5"]);
    assert_code(&output, 3);
    assert!(
        stderr(&output).contains("--expect echo"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_udp_endpoint_picks_the_udp_mode() {
    let server = TestServer::start(Engine::Async, &["udp://127.0.0.1:0"]);
    let output = bench(&[&server.endpoint(0).to_string(), "-n", "20", "--json"]);
    assert_code(&output, 0);
    assert_eq!(json(&output)["mode"], "udp");
}

#[test]
fn the_report_speaks_of_what_each_mode_uses() {
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]);
    let tcp = server.endpoint(0).to_string();
    let udp = stdout(&bench(&[
        &server.endpoint(1).to_string(),
        "-c",
        "2",
        "-n",
        "10",
    ]));
    assert!(udp.contains("2 sockets"), "{udp}");
    assert!(!udp.contains("connection"), "{udp}");

    let idle = stdout(&bench(&[&tcp, "-m", "idle", "-c", "3", "-d", "100ms"]));
    assert!(idle.contains("held       3 connections\n"), "{idle}");
    assert!(!idle.contains("requests/s"), "{idle}");

    let stream = stdout(&bench(&[&tcp, "-m", "stream", "--stream-bytes", "1M"]));
    assert!(stream.contains("MB/s received"), "{stream}");
    assert!(!stream.contains("requests/s"), "{stream}");
}

#[test]
fn the_message_size_is_a_long_option_only() {
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0"]);
    let tcp = server.endpoint(0).to_string();
    assert_code(&bench(&[&tcp, "--size", "32", "-n", "1"]), 0);
    assert_code(&bench(&[&tcp, "-s", "32", "-n", "1"]), 2);
}

#[test]
fn the_report_gives_the_load_generators_own_cpu_time_per_request() {
    let server = TestServer::start(Engine::Async, &["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]);
    let tcp = server.endpoint(0).to_string();
    let udp = server.endpoint(1).to_string();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    for (mode, endpoint, requests) in [("pingpong", &tcp, "2000"), ("udp", &udp, "500")] {
        let output = bench(&[endpoint, "-m", mode, "-c", "2", "-n", requests, "--json"]);
        assert_code(&output, 0);
        let report = json(&output);
        let number = |key: &str| {
            report[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{mode}: {key} should be a number: {report}"))
        };
        let (total, user, system) = (
            number("own_cpu_s"),
            number("own_cpu_user_s"),
            number("own_cpu_system_s"),
        );
        let (per_request, ok, elapsed) = (
            number("own_cpu_per_request_us"),
            number("ok"),
            number("elapsed_s"),
        );
        assert!(
            total > 0.0 && user >= 0.0 && system >= 0.0,
            "{mode}: {report}"
        );
        assert!((user + system - total).abs() < 1e-6, "{mode}: {report}");
        // No more than every core busy for the whole run (and getrusage's rounding).
        assert!(total <= elapsed * cores + 0.05, "{mode}: {report}");
        let expected = total * 1e6 / ok;
        assert!(
            (per_request - expected).abs() <= expected * 1e-9 + 1e-6,
            "{mode}: {per_request} µs per request, not {total} s / {ok}: {report}"
        );
    }
    let human = stdout(&bench(&[&tcp, "-n", "100"]));
    assert!(
        human.contains("own cpu") && human.contains("per request"),
        "{human}"
    );
    // Nothing answered: no figure per request, but the time itself is still there.
    let refused = TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("tcp://{}", refused.local_addr().unwrap());
    drop(refused);
    let report = json(&bench(&[&closed, "-n", "5", "--json"]));
    assert!(report["own_cpu_per_request_us"].is_null(), "{report}");
    assert!(report["own_cpu_s"].as_f64().is_some(), "{report}");
}
