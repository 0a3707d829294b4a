//! `socketkit bench` against in-process servers: every mode ends by itself, counts right, and
//! fails loudly when replies are wrong or missing.

use std::net::{TcpListener, UdpSocket};

use socketkit::{Engine, Server};

use crate::common::{TestServer, assert_code, socketkit, stdout};

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
    assert_code(&output, 1);
    assert!(json(&output)["errors"].as_u64().unwrap() >= 1);
}

#[test]
fn a_mode_that_does_not_fit_the_endpoint_is_a_usage_error() {
    let output = bench(&["tcp://127.0.0.1:9", "-m", "udp", "-n", "1"]);
    assert_code(&output, 2);
}
