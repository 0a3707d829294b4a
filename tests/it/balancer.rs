//! socketkit behind a real HAProxy: two `socketkit serve --proxy-protocol` backends behind
//! `send-proxy-v2` with TCP health checks, on loopback. Clients are served through the
//! balancer with their own addresses; `--deny` of one client works through it; SIGTERM to one
//! backend under connection-per-request load loses no request (HAProxy retries and
//! redispatches refused connects; socketkit drains the connections it has and those already
//! in its listen queue). In a run without SIGTERM the requests the backends' metrics count
//! add up to what bench counted, and every backend's accepted connections to their ends; one
//! backend there runs the uring engine. A `tls://` backend gets the header before the
//! handshake (`send-proxy-v2` with `ssl`). Skipped, with a message, where `haproxy` is not
//! installed.

use std::net::SocketAddr;
use std::process::Command;

use super::common::{Spawned, assert_code, socketkit, stderr, stdout};

fn have_haproxy() -> bool {
    Command::new("haproxy")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A port free a moment ago (HAProxy's configuration needs a number; nothing reads it back).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One backend: `socketkit serve --proxy-protocol` on an ephemeral loopback port.
fn backend(extra: &[&str]) -> (Spawned, String) {
    let (server, addr, _) = backend_on("tcp://127.0.0.1:0", extra);
    (server, addr)
}

/// A backend listening on `listen`, and its metrics' address if `extra` asks for
/// `--metrics` (announced before the listeners).
fn backend_on(listen: &str, extra: &[&str]) -> (Spawned, String, Option<SocketAddr>) {
    let mut command = socketkit();
    command
        .args(["serve", "-l", listen, "--proxy-protocol", "-v"])
        .args(["--grace", "10s"])
        .args(extra);
    let mut server = Spawned::start(command);
    let metrics = extra.contains(&"--metrics").then(|| {
        let line = server.wait_for_line("metrics on http://");
        let rest = line.split("http://").nth(1).unwrap();
        rest.split('/').next().unwrap().parse().unwrap()
    });
    let endpoint = server.listening(1).remove(0);
    let addr = endpoint.socket_addrs().unwrap()[0].to_string();
    (server, addr, metrics)
}

/// The configuration the README shows, on loopback ports. Health checks connect and send a
/// LOCAL header (`check-send-proxy`), every 100 ms; a refused connect is retried on another
/// server (`option redispatch`, `retries`).
fn config(frontend: u16, backends: &[&str]) -> String {
    config_with(frontend, backends, "")
}

/// [`config`] with more options on every server line (`ssl verify none` for TLS backends).
fn config_with(frontend: u16, backends: &[&str], options: &str) -> String {
    let mut text = format!(
        "global\n    maxconn 1000\n\
         defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    \
         timeout server 10s\n    retries 3\n    option redispatch 1\n\
         frontend socketkit\n    bind 127.0.0.1:{frontend}\n    default_backend upper\n\
         backend upper\n    balance roundrobin\n"
    );
    for (i, addr) in backends.iter().enumerate() {
        text += &format!(
            "    server s{i} {addr} send-proxy-v2 check check-send-proxy inter 100ms fall 1 \
             rise 1{options}\n"
        );
    }
    text
}

/// HAProxy in the foreground, with its configuration file. Killed on drop (by `Spawned`).
struct Haproxy {
    _dir: tempfile::TempDir,
    _process: Spawned,
}

fn haproxy(frontend: u16, backends: &[&str]) -> Haproxy {
    haproxy_with(config(frontend, backends))
}

fn haproxy_with(config: String) -> Haproxy {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, config).unwrap();
    let check = Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", stderr(&check));
    let mut command = Command::new("haproxy");
    command.args(["-db", "-f"]).arg(&path);
    Haproxy {
        _dir: dir,
        _process: Spawned::start(command),
    }
}

#[test]
fn haproxy_balances_socketkit_with_the_real_client_addresses() {
    if !have_haproxy() {
        eprintln!("skipped: haproxy is not installed (Debian's haproxy package)");
        return;
    }
    let (mut one, one_addr) = backend(&["--deny", "127.0.0.3"]);
    let (mut two, two_addr) = backend(&["--deny", "127.0.0.3"]);
    let frontend = free_port();
    let balancer = haproxy(frontend, &[&one_addr, &two_addr]);
    // HAProxy binds its frontend before its first health checks: once both backends have
    // seen one (a LOCAL header: the balancer's own address), it serves.
    one.wait_for_line("connection accepted");
    two.wait_for_line("connection accepted");
    let target = format!("tcp://127.0.0.1:{frontend}");

    for (source, word) in [("127.0.0.2", "two"), ("127.0.0.2", "again")] {
        let out = socketkit()
            .args(["send", "-s", source, &target, word])
            .output()
            .unwrap();
        assert_code(&out, 0);
        assert_eq!(stdout(&out), word.to_uppercase());
    }
    // Round robin: each backend served one of them, and saw the client, not HAProxy.
    one.wait_for_line("client=127.0.0.2:");
    two.wait_for_line("client=127.0.0.2:");

    // Denied through the balancer: nothing comes back, and the backend says why. Two
    // requests, so that round robin takes one to each backend.
    for _ in 0..2 {
        let denied = socketkit()
            .args(["send", "-s", "127.0.0.3", &target, "x"])
            .output()
            .unwrap();
        // HAProxy closes the client's side with a FIN: an empty reply.
        assert_eq!(stdout(&denied), "", "{}", stderr(&denied));
    }
    let refused = "refused by the access list (--allow/--deny) peer=127.0.0.3";
    one.wait_for_line(refused);
    two.wait_for_line(refused);
    drop(balancer);
}

#[test]
fn sigterm_to_one_backend_under_load_through_haproxy_loses_no_request() {
    if !have_haproxy() {
        eprintln!("skipped: haproxy is not installed (Debian's haproxy package)");
        return;
    }
    let (mut one, one_addr) = backend(&[]);
    let (mut two, two_addr, two_metrics) = backend_on("tcp://127.0.0.1:0", METRICS);
    let frontend = free_port();
    let balancer = haproxy(frontend, &[&one_addr, &two_addr]);
    one.wait_for_line("connection accepted");
    two.wait_for_line("connection accepted");
    let target = format!("tcp://127.0.0.1:{frontend}");

    // Connection-per-request load, bounded by its count (and bench's own time-outs).
    let mut command = socketkit();
    command.args([
        "bench", &target, "-m", "connect", "-c", "4", "-n", "1500", "--json",
    ]);
    let mut bench = Spawned::start(command);
    // Once the load reaches the first backend, stop it.
    one.wait_for_line("client=127.0.0.1:");
    one.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(one.wait_exit(), Some(0), "{:#?}", one.seen);
    let status = bench.child.wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(&mut bench.child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(
        status.success(),
        "bench failed: {out} {:#?}",
        bench.lines_so_far()
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["ok"], 1500, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["timeouts"], 0, "{report}");
    // The second backend took the rest.
    assert!(
        two.lines_so_far()
            .iter()
            .any(|l| l.contains("client=127.0.0.1:"))
    );
    // Its counters add up once the balancer (and its health checks) are gone.
    drop(balancer);
    #[cfg(feature = "metrics")]
    settled(two_metrics.unwrap(), "the second backend");
    #[cfg(not(feature = "metrics"))]
    let _ = two_metrics;
}

/// `--metrics` on an ephemeral port, where the build has the exporter.
#[cfg(feature = "metrics")]
const METRICS: &[&str] = &["--metrics", "tcp://127.0.0.1:0"];
#[cfg(not(feature = "metrics"))]
const METRICS: &[&str] = &[];

/// A backend's scrape once every connection it accepted has ended and none is open (the
/// balancer is gone by then: no health check comes in between), within the safety time-out;
/// checks that none ended in a PROXY header error or was refused.
#[cfg(feature = "metrics")]
fn settled(metrics: SocketAddr, what: &str) -> super::metrics::Scrape {
    let scrape = super::metrics::scrape_until(metrics, what, |s| {
        s.value("socketkit_connections_accepted_total", &[])
            == s.value("socketkit_connection_ends_total", &[])
            && s.value("socketkit_connections_active", &[]) == 0.0
    });
    for cause in ["proxy_header", "refused", "error", "panic"] {
        let ends = scrape.value("socketkit_connection_ends_total", &[("cause", cause)]);
        assert_eq!(ends, 0.0, "{what}: {ends} connections ended by {cause}");
    }
    scrape
}

/// Without SIGTERM, the requests the two backends' metrics count add up to what bench
/// counted (HAProxy's health checks send no request), and each backend's accepted
/// connections to their ends. One backend runs the uring engine, the other the async one.
#[cfg(feature = "metrics")]
#[test]
fn the_backends_metrics_add_up_to_what_bench_counted() {
    if !have_haproxy() {
        eprintln!("skipped: haproxy is not installed (Debian's haproxy package)");
        return;
    }
    let uring = [METRICS, &["-e", "uring"]].concat();
    let (mut one, one_addr, one_metrics) = backend_on("tcp://127.0.0.1:0", &uring);
    let (mut two, two_addr, two_metrics) = backend_on("tcp://127.0.0.1:0", METRICS);
    let frontend = free_port();
    let balancer = haproxy(frontend, &[&one_addr, &two_addr]);
    one.wait_for_line("connection accepted");
    two.wait_for_line("connection accepted");
    let target = format!("tcp://127.0.0.1:{frontend}");

    let bench = socketkit()
        .args([
            "bench", &target, "-m", "connect", "-c", "4", "-n", "600", "--json",
        ])
        .output()
        .unwrap();
    assert_code(&bench, 0);
    let report: serde_json::Value = serde_json::from_str(stdout(&bench).trim()).unwrap();
    assert_eq!(report["ok"], 600, "{report}");
    assert_eq!(report["errors"], 0, "{report}");

    drop(balancer);
    let one = settled(one_metrics.unwrap(), "the uring backend");
    let two = settled(two_metrics.unwrap(), "the async backend");
    let requests = |s: &super::metrics::Scrape| s.value("socketkit_requests_total", &[]);
    assert!(requests(&one) > 0.0 && requests(&two) > 0.0, "round robin");
    assert_eq!(requests(&one) + requests(&two), 600.0);
}

/// A `tls://` backend behind HAProxy's `send-proxy-v2` with `ssl`: the header comes on the
/// TCP connection, then the handshake (health checks too), and the backend sees the client.
#[cfg(feature = "tls")]
#[test]
fn haproxy_sends_the_header_before_tls_to_a_tls_backend() {
    if !have_haproxy() {
        eprintln!("skipped: haproxy is not installed (Debian's haproxy package)");
        return;
    }
    let (mut backend, addr, _) = backend_on("tls://127.0.0.1:0", &["--tls-self-signed"]);
    let frontend = free_port();
    let _balancer = haproxy_with(config_with(frontend, &[&addr], " ssl verify none"));
    backend.wait_for_line("TLS handshake done");
    let target = format!("tcp://127.0.0.1:{frontend}");
    let out = socketkit()
        .args(["send", "-s", "127.0.0.2", &target, "through tls"])
        .output()
        .unwrap();
    assert_code(&out, 0);
    assert_eq!(stdout(&out), "THROUGH TLS");
    backend.wait_for_line("client=127.0.0.2:");
    // HAProxy's TLS health checks reset their connection mid-handshake once they know enough
    // ("TLS handshake failed: reset"): their header came first all the same.
    assert!(
        !backend
            .lines_so_far()
            .iter()
            .any(|l| l.contains("PROXY header error")),
        "{:#?}",
        backend.seen
    );
}
