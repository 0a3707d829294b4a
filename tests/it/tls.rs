//! TLS (`tls://`) against real peers: `openssl s_server`/`s_client` and `ncat --ssl` both ways,
//! the failures a user meets (wrong name, unknown CA, expired certificate, plain text to a TLS
//! port, TLS to a plain port: one line each, the right exit code, the server unharmed), the
//! start-up errors of bad certificate files (exit 2), and the self-signed certificate's logged
//! fingerprint checked with `openssl x509 -fingerprint -sha256`.
//!
//! Certificates are made here with rcgen: a test CA, a leaf it signs for localhost and
//! 127.0.0.1, and an expired leaf.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use socketkit::Endpoint;

use crate::common::{self, SAFETY_TIMEOUT, Spawned, assert_code, run_peer, socketkit, stderr};

/// PEM files in a temporary directory: `ca.pem`, `leaf.pem` + `leaf.key` (localhost and
/// 127.0.0.1, signed by the CA), `expired.pem` + `expired.key` (the same names, expired in 2001).
pub(crate) struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    pub(crate) fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "socketkit test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        for (name, expired) in [("leaf", false), ("expired", true)] {
            let mut params = CertificateParams::new(names.clone()).unwrap();
            if expired {
                params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            }
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Certs { dir }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// `socketkit serve` of `service` on tls://127.0.0.1:0 with `cert` and `key` (names in
/// `Certs`), and its bound endpoint.
pub(crate) fn serve_tls(
    certs: &Certs,
    cert: &str,
    key: &str,
    extra: &[&str],
) -> (Spawned, Endpoint) {
    let mut command = socketkit();
    command
        .args(["serve", "-l", "tls://127.0.0.1:0", "--tls-cert"])
        .arg(certs.path(cert))
        .arg("--tls-key")
        .arg(certs.path(key))
        .args(extra);
    let mut server = Spawned::start(command);
    let endpoint = server.listening(1).remove(0);
    assert!(endpoint.is_tls(), "{endpoint}");
    (server, endpoint)
}

/// `socketkit send` to `endpoint` as `localhost` with `message` and extra flags.
fn send(endpoint: &Endpoint, message: &str, flags: &[&str]) -> std::process::Output {
    let port = endpoint.host_port().unwrap().1;
    run_peer(
        socketkit()
            .args(["send", &format!("tls://localhost:{port}"), message])
            .args(flags),
        b"",
    )
}

/// The one line a failed command wrote on stderr, checked to be one line.
#[track_caller]
fn one_line(output: &std::process::Output) -> String {
    let text = stderr(output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got {text:?}");
    lines[0].to_string()
}

/// The server still answers a good TLS client (the unharmed check after each failure).
#[track_caller]
fn still_serving(endpoint: &Endpoint, certs: &Certs) {
    let ca = certs.path("ca.pem");
    let output = send(endpoint, "still here", &["--tls-ca", ca.to_str().unwrap()]);
    assert_code(&output, 0);
    assert_eq!(common::stdout(&output), "STILL HERE");
}

#[test]
fn send_and_bench_talk_tls_to_socketkit_serve_with_a_ca_signed_certificate() {
    let certs = Certs::new();
    let (_server, endpoint) = serve_tls(&certs, "leaf.pem", "leaf.key", &[]);
    still_serving(&endpoint, &certs);
    // Connect mode: one handshake per request, and the report gives their rate.
    let ca = certs.path("ca.pem");
    let output = run_peer(
        socketkit()
            .args([
                "bench",
                &endpoint.to_string(),
                "-m",
                "connect",
                "-n",
                "40",
                "--json",
            ])
            .args([
                "--tls-ca",
                ca.to_str().unwrap(),
                "--tls-servername",
                "localhost",
            ]),
        b"",
    );
    assert_code(&output, 0);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], 40, "{report}");
    assert_eq!(report["tls_handshakes"], 40, "{report}");
    assert!(
        report["tls_handshakes_per_s"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    // Without the CA every handshake fails: exit 8, the cause in the error line.
    let output = run_peer(
        socketkit().args(["bench", &endpoint.to_string(), "-m", "connect", "-n", "5"]),
        b"",
    );
    assert_code(&output, 8);
    let text = stderr(&output);
    assert!(
        text.contains("TLS handshake") && text.contains("unknown issuer"),
        "{text}"
    );
}

#[test]
fn a_wrong_name_an_unknown_ca_and_an_expired_certificate_each_fail_in_one_line_with_exit_8() {
    let certs = Certs::new();
    let ca = certs.path("ca.pem");
    let ca = ca.to_str().unwrap();
    let (mut server, endpoint) = serve_tls(&certs, "leaf.pem", "leaf.key", &[]);
    let cases: [(&[&str], &str); 2] = [
        (
            &["--tls-ca", ca, "--tls-servername", "wrong.example"],
            "name mismatch",
        ),
        // The system's roots do not know the test CA.
        (&[], "unknown issuer"),
    ];
    for (flags, cause) in cases {
        let output = send(&endpoint, "hello", flags);
        assert_code(&output, 8);
        let line = one_line(&output);
        assert!(
            line.contains("TLS handshake") && line.contains(cause),
            "{line}"
        );
        still_serving(&endpoint, &certs);
    }
    // The server saw each client refuse it, and said so in one line each.
    server.wait_for_line("TLS handshake failed");
    drop(server);

    let (_expired, endpoint) = serve_tls(&certs, "expired.pem", "expired.key", &[]);
    let output = send(&endpoint, "hello", &["--tls-ca", ca]);
    assert_code(&output, 8);
    let line = one_line(&output);
    assert!(line.contains("expired"), "{line}");
}

#[test]
fn a_self_signed_certificate_made_by_openssl_req_x509_is_refused_in_a_line_that_says_why() {
    // The self-signed certificate most people make first: Debian's openssl.cnf gives
    // `req -x509` basicConstraints CA:TRUE, and webpki takes no CA's certificate for a
    // server's own, even the trusted one (openssl and ncat do). The line must say so, not
    // `Other(OtherError(CaUsedAsEndEntity))`.
    let certs = Certs::new();
    let dir = certs.dir.path();
    let made = run_peer(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=localhost", "-addext"])
            .arg("subjectAltName=DNS:localhost,IP:127.0.0.1")
            .arg("-keyout")
            .arg(dir.join("req.key"))
            .arg("-out")
            .arg(dir.join("req.pem")),
        b"",
    );
    assert_code(&made, 0);
    let (_server, endpoint) = serve_tls(&certs, "req.pem", "req.key", &[]);
    let trusted = certs.path("req.pem");
    let output = send(&endpoint, "hello", &["--tls-ca", trusted.to_str().unwrap()]);
    assert_code(&output, 8);
    let line = one_line(&output);
    assert!(
        line.contains("bad certificate:") && line.contains("CA:TRUE"),
        "{line}"
    );
    assert!(!line.contains("OtherError"), "{line}");
    // The certificate is good for a client that checks nothing.
    let output = send(&endpoint, "hello", &["--tls-insecure"]);
    assert_code(&output, 0);
    assert_eq!(common::stdout(&output), "HELLO");
}

/// A Python `ssl` server that takes `connections` clients one after another and prints, for
/// each, the bytes it received and how the stream ended: `N close_notify`, or `N truncated`
/// (a close without close_notify, or a reset). Its port is the first line. With `ack`, it
/// reads 4 KiB at a time and answers each read with one byte.
const TLS_RECEIVER: &str = r#"
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
listener = socket.create_server(("127.0.0.1", 0))
listener.settimeout(30)
print(listener.getsockname()[1], flush=True)
for _ in range(int(sys.argv[3])):
    conn, _ = listener.accept()
    tls = ctx.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False)
    tls.settimeout(10)
    got = 0
    try:
        while True:
            data = tls.recv(4096 if sys.argv[4] == "ack" else 65536)
            if not data:
                print(got, "close_notify", flush=True)
                break
            got += len(data)
            if sys.argv[4] == "ack":
                tls.sendall(b"!")
    except (ssl.SSLError, OSError) as e:
        print(got, "truncated", type(e).__name__, flush=True)
    tls.close()
"#;

#[test]
fn send_no_wait_on_tls_delivers_the_whole_message_and_close_notify_before_it_exits() {
    // With --no-wait, send exits once the message is written; over TCP the kernel still
    // delivers it, over TLS the records are the bridge thread's to write, and an exit before
    // it has lost them with exit 0. Even once they are all in the kernel, the peer's bytes
    // (here one per read; a TLS 1.3 server's session tickets) reaching the closed socket
    // reset it, and the reset drops what the kernel had not sent yet.
    let certs = Certs::new();
    let mut receiver = Killed(
        Command::new("python3")
            .args(["-c", TLS_RECEIVER])
            .arg(certs.path("leaf.pem"))
            .arg(certs.path("leaf.key"))
            .args(["2", "ack"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Bounded: the receiver's accept and reads time out.
    let mut lines = BufReader::new(receiver.0.stdout.take().unwrap()).lines();
    let port = lines.next().unwrap().unwrap();
    let ca = certs.path("ca.pem");
    let big = vec![b'x'; 2 * 1024 * 1024];
    for (message, stdin) in [(Some("hello"), &[][..]), (None, &big[..])] {
        let mut command = socketkit();
        command
            .args(["send", &format!("tls://localhost:{port}"), "--no-wait"])
            .arg("--tls-ca")
            .arg(&ca)
            .args(message);
        let output = run_peer(&mut command, stdin);
        assert_code(&output, 0);
        let sent = message.map_or(stdin.len(), str::len);
        let line = lines.next().unwrap().unwrap();
        assert_eq!(line, format!("{sent} close_notify"));
    }
}

#[test]
fn plain_text_to_a_tls_port_gets_an_alert_and_one_log_line_and_the_server_goes_on() {
    let certs = Certs::new();
    let (mut server, endpoint) = serve_tls(&certs, "leaf.pem", "leaf.key", &[]);
    let addr = endpoint.socket_addrs().unwrap()[0];
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    plain.write_all(b"hello in plain text\n").unwrap();
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply); // the alert, then the close (or a reset)
    assert!(
        reply.is_empty() || reply[0] == 0x15,
        "a TLS alert record or nothing, got {reply:?}"
    );
    let line = server.wait_for_line("TLS handshake failed");
    assert!(line.contains("does not speak TLS"), "{line}");
    still_serving(&endpoint, &certs);
    let failures = server
        .lines_so_far()
        .iter()
        .filter(|l| l.contains("TLS handshake failed"))
        .count();
    assert_eq!(failures, 1, "{:#?}", server.seen);
}

#[test]
fn tls_to_a_plain_port_fails_in_one_line_with_exit_8_and_the_server_goes_on() {
    for service in ["upper", "echo"] {
        let mut command = socketkit();
        command.args(["serve", &format!("{service}=tcp://127.0.0.1:0")]);
        let mut server = Spawned::start(command);
        let endpoint = server.listening(1).remove(0);
        let port = endpoint.host_port().unwrap().1;
        let output = run_peer(
            socketkit().args([
                "send",
                &format!("tls://127.0.0.1:{port}"),
                "hi",
                "--tls-insecure",
                // The plain server answers at once, but a loaded CI machine once took more than
                // the default 5 s: exit 5, not the refusal under test.
                "-w",
                "60s",
            ]),
            b"",
        );
        assert_code(&output, 8);
        let text = stderr(&output);
        let errors: Vec<&str> = text.lines().filter(|l| !l.contains("WARN")).collect();
        assert_eq!(errors.len(), 1, "{text}");
        assert!(errors[0].contains("protocol"), "{text}");
        assert!(
            text.contains("--tls-insecure"),
            "the insecure warning: {text}"
        );
        let expected: &[u8] = if service == "echo" {
            b"plain"
        } else {
            b"PLAIN"
        };
        assert_eq!(common::exchange(&endpoint, b"plain"), expected, "{service}");
    }
}

#[test]
fn the_self_signed_fingerprint_in_the_log_matches_openssl_x509() {
    let mut command = socketkit();
    command.args(["serve", "-l", "tls://127.0.0.1:0", "--tls-self-signed"]);
    let mut server = Spawned::start(command);
    let endpoint = server.listening(1).remove(0);
    let line = server.wait_for_line("fingerprint");
    let logged = line.rsplit(' ').next().unwrap().to_string();
    let addr = endpoint.socket_addrs().unwrap()[0];
    // openssl s_client fetches the certificate; openssl x509 prints its fingerprint.
    let fetched = run_peer(
        Command::new("openssl").args(["s_client", "-connect", &addr.to_string()]),
        b"",
    );
    let pem = common::stdout(&fetched);
    let begin = pem
        .find("-----BEGIN CERTIFICATE-----")
        .expect("a certificate");
    let end = pem.find("-----END CERTIFICATE-----").unwrap() + 25;
    let printed = run_peer(
        Command::new("openssl").args(["x509", "-noout", "-fingerprint", "-sha256"]),
        &pem.as_bytes()[begin..end],
    );
    let printed = common::stdout(&printed);
    assert_eq!(printed.trim().rsplit('=').next().unwrap(), logged, "{line}");
    // And a client that checks nothing (with its warning) is served.
    let output = run_peer(
        socketkit().args(["send", &endpoint.to_string(), "hello", "--tls-insecure"]),
        b"",
    );
    assert_code(&output, 0);
    assert_eq!(common::stdout(&output), "HELLO");
}

#[test]
fn openssl_s_client_talks_to_socketkit_serve_and_socketkit_send_to_openssl_s_server() {
    let certs = Certs::new();
    let ca = certs.path("ca.pem");
    // s_client, verifying against the CA, sends a line and reads the reply line.
    let (_server, endpoint) = serve_tls(&certs, "leaf.pem", "leaf.key", &["--framing", "line"]);
    let addr = endpoint.socket_addrs().unwrap()[0];
    let mut client = Killed(
        Command::new("openssl")
            .args([
                "s_client",
                "-quiet",
                "-verify_return_error",
                "-servername",
                "localhost",
            ])
            .args(["-connect", &addr.to_string(), "-CAfile"])
            .arg(&ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = &mut client.0;
    client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"hello from openssl\n")
        .unwrap();
    let line = common::first_stdout_line(client, "openssl s_client");
    assert_eq!(line, "HELLO FROM OPENSSL\n");

    // s_server -rev answers each line reversed; socketkit send checks its certificate.
    let mut server = Killed(
        Command::new("openssl")
            .args(["s_server", "-rev", "-accept", "0", "-cert"])
            .arg(certs.path("leaf.pem"))
            .arg("-key")
            .arg(certs.path("leaf.key"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ready = read_until(server.0.stdout.take().unwrap(), "ACCEPT");
    let port = ready.trim().rsplit(':').next().unwrap().to_string();
    let output = run_peer(
        socketkit()
            .args([
                "send",
                &format!("tls://localhost:{port}"),
                "hello\n",
                "--quit-after",
                "500ms",
            ])
            .arg("--tls-ca")
            .arg(&ca),
        b"",
    );
    assert_code(&output, 0);
    assert!(common::stdout(&output).contains("olleh"), "{output:?}");
}

#[test]
fn ncat_ssl_talks_to_socketkit_serve_and_socketkit_send_to_ncat_ssl() {
    let certs = Certs::new();
    let ca = certs.path("ca.pem");
    let (_server, endpoint) = serve_tls(&certs, "leaf.pem", "leaf.key", &[]);
    let port = endpoint.host_port().unwrap().1.to_string();
    // ncat verifies the certificate, sends its stdin, and prints the reply until the close.
    let output = run_peer(
        Command::new("ncat")
            .args(["--ssl", "--ssl-verify", "--ssl-trustfile"])
            .arg(&ca)
            .args(["localhost", &port]),
        b"hello from ncat\n",
    );
    assert_code(&output, 0);
    assert_eq!(common::stdout(&output), "HELLO FROM NCAT\n");

    // ncat --ssl -l cannot listen on port 0 and say which port it got: a port just freed.
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let mut command = Command::new("ncat");
    command
        .args(["-v", "--ssl", "--ssl-cert"])
        .arg(certs.path("leaf.pem"))
        .arg("--ssl-key")
        .arg(certs.path("leaf.key"))
        .args([
            "-l",
            "127.0.0.1",
            &port.to_string(),
            "-c",
            "read l; echo \"got $l\"",
        ]);
    let mut ncat = Spawned::start(command);
    ncat.wait_for_line("Listening on");
    // ncat --ssl ends the whole connection at the client's close_notify, before its program
    // answers: the client keeps its side open (--no-shutdown) until ncat closes.
    let output = run_peer(
        socketkit()
            .args([
                "client",
                &format!("tls://localhost:{port}"),
                "--no-shutdown",
            ])
            .arg("--tls-ca")
            .arg(&ca),
        b"hello ncat\n",
    );
    assert_code(&output, 0);
    assert_eq!(common::stdout(&output), "got hello ncat\n");
}

#[test]
fn bad_certificate_files_are_one_line_at_start_with_exit_2() {
    let certs = Certs::new();
    let dir = certs.dir.path();
    std::fs::write(dir.join("empty.pem"), "not a certificate\n").unwrap();
    // An encrypted key, as openssl writes one.
    let encrypted = run_peer(
        Command::new("openssl").args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-aes256",
            "-pass",
            "pass:secret",
        ]),
        b"",
    );
    assert_code(&encrypted, 0);
    std::fs::write(dir.join("encrypted.key"), &encrypted.stdout).unwrap();
    let cases = [
        ("missing.pem", "leaf.key", "cannot read"),
        ("leaf.pem", "missing.key", "cannot read"),
        ("empty.pem", "leaf.key", "no certificate"),
        ("leaf.pem", "expired.key", "not the key of the certificate"),
        ("leaf.pem", "encrypted.key", "encrypted"),
    ];
    for (cert, key, says) in cases {
        let output = run_peer(
            socketkit()
                .args(["serve", "-l", "tls://127.0.0.1:0", "--tls-cert"])
                .arg(dir.join(cert))
                .arg("--tls-key")
                .arg(dir.join(key)),
            b"",
        );
        assert_code(&output, 2);
        let line = one_line(&output);
        assert!(line.contains(says), "{cert} {key}: {line}");
    }
    // TLS flags need a tls:// endpoint; tls:// needs a certificate and the async engine.
    for args in [
        &["serve", "-l", "tcp://127.0.0.1:0", "--tls-self-signed"][..],
        &["serve", "-l", "tls://127.0.0.1:0"],
        &[
            "serve",
            "-e",
            "threaded",
            "-l",
            "tls://127.0.0.1:0",
            "--tls-self-signed",
        ],
        &["send", "tcp://127.0.0.1:9", "x", "--tls-insecure"],
    ] {
        let output = run_peer(socketkit().args(args), b"");
        assert_code(&output, 2);
        one_line(&output);
    }
}

#[test]
fn the_handshake_is_bounded_by_the_message_timeout_and_holds_a_connection_slot() {
    let certs = Certs::new();
    let flags = ["--message-timeout", "300ms", "-m", "1"];
    let (mut server, endpoint) = serve_tls(&certs, "leaf.pem", "leaf.key", &flags);
    let addr = endpoint.socket_addrs().unwrap()[0];
    // A client that never says hello holds the one slot until the time-out closes it.
    let mut silent = TcpStream::connect(addr).unwrap();
    silent.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    // Meanwhile a real client waits in the listen queue, and is served after.
    let port = endpoint.host_port().unwrap().1;
    let ca = certs.path("ca.pem");
    let mut waiting = socketkit();
    waiting
        .args(["send", &format!("tls://localhost:{port}"), "queued"])
        .arg("--tls-ca")
        .arg(&ca);
    let waiting = std::thread::spawn(move || run_peer(&mut waiting, b""));
    let mut rest = Vec::new();
    assert_eq!(
        silent.read_to_end(&mut rest).unwrap(),
        0,
        "closed by the server"
    );
    let line = server.wait_for_line("TLS handshake failed");
    assert!(
        line.contains("timed out") && line.contains("--message-timeout"),
        "{line}"
    );
    let output = waiting.join().unwrap();
    assert_code(&output, 0);
    assert_eq!(common::stdout(&output), "QUEUED");
    silent.shutdown(Shutdown::Both).ok();
}

/// Reads a child's stdout until a line containing `needle`, returned (bounded: the child is
/// killed by its guard if the test fails).
pub(crate) fn read_until(stdout: impl Read + Send + 'static, needle: &str) -> String {
    let needle = needle.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains(&needle) {
                let _ = tx.send(line);
                break;
            }
        }
    });
    rx.recv_timeout(SAFETY_TIMEOUT).expect("the ready line")
}

/// A peer process, killed and reaped when the test ends, however it ends.
pub(crate) struct Killed(pub(crate) std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn alpn_is_offered_and_agreed_and_a_client_with_none_in_common_fails_with_exit_8() {
    let certs = Certs::new();
    let ca = certs.path("ca.pem");
    let ca = ca.to_str().unwrap();
    let (_server, endpoint) = serve_tls(
        &certs,
        "leaf.pem",
        "leaf.key",
        &["--tls-alpn", "upper,x-other"],
    );
    let output = send(
        &endpoint,
        "hello",
        &["--tls-ca", ca, "--tls-alpn", "x-none,upper"],
    );
    assert_code(&output, 0);
    assert_eq!(common::stdout(&output), "HELLO");
    let output = send(
        &endpoint,
        "hello",
        &["--tls-ca", ca, "--tls-alpn", "x-none"],
    );
    assert_code(&output, 8);
    let line = one_line(&output);
    assert!(line.contains("protocol") && line.contains("ALPN"), "{line}");
    // openssl s_client sees the protocol the server chose.
    let addr = endpoint.socket_addrs().unwrap()[0];
    let shown = run_peer(
        Command::new("openssl").args([
            "s_client",
            "-alpn",
            "x-other",
            "-connect",
            &addr.to_string(),
        ]),
        b"",
    );
    assert!(
        common::stdout(&shown).contains("ALPN protocol: x-other"),
        "{}",
        common::stdout(&shown)
    );
}

#[test]
fn a_tls_connection_over_ipv6_finishes_its_exchange_during_a_graceful_stop() {
    let mut command = socketkit();
    command.args(["-v", "serve", "-l", "tls://[::1]:0", "--tls-self-signed"]);
    let mut server = Spawned::start(command);
    let endpoint = server.listening(1).remove(0);
    assert_eq!(endpoint.socket_addrs().unwrap()[0].ip().to_string(), "::1");
    let mut command = socketkit();
    command.args(["client", &endpoint.to_string(), "--tls-insecure"]);
    let mut client = Spawned::start(command);
    client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"before the stop\n")
        .unwrap();
    server.wait_for_line("TLS handshake done");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    server.wait_for_line("shutting down");
    // The connection in flight is served to its end: the client's EOF, the reply, the close.
    client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"after it\n")
        .unwrap();
    drop(client.stdin.take());
    assert_eq!(client.wait_exit(), Some(0), "{:#?}", client.seen);
    let mut reply = String::new();
    client
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut reply)
        .unwrap();
    assert_eq!(reply, "BEFORE THE STOP\nAFTER IT\n");
    assert_eq!(server.wait_exit(), Some(0), "{:#?}", server.seen);
}
