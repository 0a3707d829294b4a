//! The standard services (RFC 862-868) against plain peers: small Python 3 programs that use
//! nothing but the standard `socket` module, and OpenBSD `nc`. Each service is checked on TCP
//! and UDP on every engine in process, and all of them at once in one `socketkit serve`
//! process. Loopback only, ephemeral ports; every wait is bounded by the safety time-out, and
//! the only timed waits are short negative ones (discard's silence) and chargen's stall, which
//! is the behaviour under test.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socketkit::{Endpoint, Engine, Server};
use wait_timeout::ChildExt;

use crate::common::{self, SAFETY_TIMEOUT, Spawned, TestServer, drain, run_peer};

/// The engines the `socketkit serve` child-process tests run on: async and a thread engine.
const BINARY_ENGINES: [Engine; 2] = [Engine::Async, Engine::Threaded];

/// A TCP client. `PORT send`: sends stdin (from a thread, so a large echo cannot deadlock),
/// half-closes, reads to EOF. `PORT quiet`: sends nothing, reads until the server closes.
/// `PORT read:N`: reads N bytes, then closes. Prints what it read, raw.
const PY_TCP: &str = r#"
import socket, sys, threading
port, mode = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(('127.0.0.1', port), timeout=5)
limit, sender = None, None
if mode == 'send':
    data = sys.stdin.buffer.read()
    def send():
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
    sender = threading.Thread(target=send)
    sender.start()
elif mode.startswith('read:'):
    limit = int(mode[5:])
got = bytearray()
while limit is None or len(got) < limit:
    chunk = s.recv(65536 if limit is None else min(65536, limit - len(got)))
    if not chunk:
        break
    got += chunk
if sender:
    sender.join()
s.close()
sys.stdout.buffer.write(got)
"#;

/// A UDP client: `PORT`, then one request per stdin line in hex (an empty line is an empty
/// datagram). Sends each, waits for its reply, checks the reply comes from the server's
/// address, and prints the reply in hex, one per line.
const PY_UDP: &str = r#"
import socket, sys
server = ('127.0.0.1', int(sys.argv[1]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
for line in sys.stdin:
    s.sendto(bytes.fromhex(line.strip()), server)
    reply, sender = s.recvfrom(65535)
    if sender != server:
        sys.exit(f'a reply from {sender}, not from {server}')
    print(reply.hex())
"#;

/// Discard on TCP: `PORT`. Sends 1 MiB (every byte value), checks that nothing comes back and
/// the connection stays open while the client has not finished (a short negative wait), then
/// half-closes and expects the server's orderly close: a 0-byte read, not a reset.
const PY_DISCARD_TCP: &str = r#"
import select, socket, sys
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)
s.sendall(bytes(range(256)) * 4096)
readable, _, _ = select.select([s], [], [], 0.25)
if readable:
    sys.exit(f'discard spoke or closed before the client was done: {s.recv(100)!r}')
s.shutdown(socket.SHUT_WR)
rest = s.recv(65536)
if rest:
    sys.exit(f'discard sent {rest!r}')
s.close()
print('closed after EOF, nothing sent')
"#;

/// Discard on UDP: `DISCARD_PORT ECHO_PORT`. No reply within 300 ms; then, from the same
/// socket, an echo listener answers, and that answer is the first datagram to arrive (a late
/// discard reply would come first).
const PY_DISCARD_UDP: &str = r#"
import socket, sys
discard = ('127.0.0.1', int(sys.argv[1]))
echo = ('127.0.0.1', int(sys.argv[2]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for request in [b'into the void \xff\xfe', b'']:
    s.sendto(request, discard)
s.settimeout(0.3)
try:
    sys.exit(f'discard replied: {s.recvfrom(65535)!r}')
except socket.timeout:
    pass
s.settimeout(5)
s.sendto(b'still there?', echo)
reply, sender = s.recvfrom(65535)
if (reply, sender) != (b'still there?', echo):
    sys.exit(f'expected the echo from {echo}, got {reply!r} from {sender}')
print('no reply from discard; echo answered')
"#;

/// Daytime and time: `daytime|time SOURCE...`, a source being `tcp:PORT` (connect, read until
/// the server closes), `udp:PORT` (one datagram, one reply) or `hex:BYTES` (a reply another
/// peer fetched). Daytime replies are parsed with `strptime` and must be exactly in RFC 867's
/// example format (the right weekday, the day unpadded, CRLF); time replies are RFC 868's
/// 32-bit big-endian seconds since 1900. Prints `SOURCE DELTA REPLY` per source, DELTA being
/// Python's clock minus the reply, in seconds.
const PY_CLOCK: &str = r#"
import datetime, socket, struct, sys, time
kind = sys.argv[1]
def fetch(source):
    transport, arg = source.split(':', 1)
    if transport == 'hex':
        return bytes.fromhex(arg)
    server = ('127.0.0.1', int(arg))
    if transport == 'tcp':
        s = socket.create_connection(server, timeout=5)
        got = b''
        while chunk := s.recv(1024):
            got += chunk
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.sendto(b'' if kind == 'time' else b'what time is it?', server)
        got, sender = s.recvfrom(65535)
        if sender != server:
            sys.exit(f'a reply from {sender}, not from {server}')
    s.close()
    return got
for source in sys.argv[2:]:
    reply = fetch(source)
    if kind == 'daytime':
        text = reply.decode('ascii')
        when = datetime.datetime.strptime(text, '%A, %B %d, %Y %H:%M:%S-UTC\r\n')
        # strptime takes any whitespace for '\r\n' and ignores %A: check the text exactly.
        exact = f'{when:%A, %B} {when.day}, {when:%Y %H:%M:%S}-UTC\r\n'
        if text != exact:
            sys.exit(f'{text!r} is not {exact!r}')
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        delta = (now - when).total_seconds()
    else:
        if len(reply) != 4:
            sys.exit(f'{source}: {len(reply)} bytes, not 4: {reply!r}')
        (seconds,) = struct.unpack('!I', reply)
        delta = int(time.time()) + 2208988800 - seconds
    print(source[:16], delta, repr(reply))
"#;

/// A chargen client that stops reading: `PORT COUNT AMOUNT`. Opens COUNT connections with a
/// small receive buffer (set before connecting, so the window is small), prints `stalled` and
/// reads nothing until a line arrives on stdin; then reads AMOUNT bytes from each connection
/// and prints them, raw, one connection after the other.
const PY_CHARGEN_STALL: &str = r#"
import socket, sys
port, count, amount = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
conns = []
for _ in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5)
    s.connect(('127.0.0.1', port))
    conns.append(s)
print('stalled', flush=True)
sys.stdin.readline()
out = sys.stdout.buffer
for s in conns:
    got = bytearray()
    while len(got) < amount:
        chunk = s.recv(min(65536, amount - len(got)))
        if not chunk:
            sys.exit('chargen closed the stream')
        got += chunk
    out.write(got)
    s.close()
out.flush()
"#;

/// Parses `socketkit services --json` from stdin: every line one JSON object with exactly
/// name, rfc, port and a summary; prints `NAME RFC PORT` per line.
const PY_SERVICES_JSON: &str = r#"
import json, sys
for line in sys.stdin:
    obj = json.loads(line)
    if set(obj) != {'name', 'rfc', 'port', 'summary'}:
        sys.exit(f'unexpected fields: {obj!r}')
    if not isinstance(obj['summary'], str) or not obj['summary']:
        sys.exit(f'no summary: {obj!r}')
    print(obj['name'], obj['rfc'], obj['port'])
"#;

// ----- running plain peers -----

/// The peer's stdout; fails, with its stderr, unless it exited with status 0.
#[track_caller]
fn succeeded(output: Output, what: &str) -> Vec<u8> {
    assert!(
        output.status.success(),
        "{what}: {}; stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// `python3 -I -c SCRIPT ARGS...` in the C locale (English day and month names).
fn python(script: &str, args: &[&str]) -> Command {
    let mut command = Command::new("python3");
    command
        .args(["-I", "-c", script])
        .args(args)
        .env("LC_ALL", "C")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

#[track_caller]
fn py(script: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    let what = format!("python3 {args:?}");
    succeeded(run_peer(&mut python(script, args), stdin), &what)
}

/// [`PY_TCP`] against `addr` in `mode`.
#[track_caller]
fn py_tcp(addr: SocketAddr, mode: &str, stdin: &[u8]) -> Vec<u8> {
    py(PY_TCP, &[&addr.port().to_string(), mode], stdin)
}

/// [`PY_UDP`]: one datagram per request, the replies in order.
#[track_caller]
fn py_udp(addr: SocketAddr, requests: &[&[u8]]) -> Vec<Vec<u8>> {
    let stdin: String = requests.iter().map(|r| hex(r) + "\n").collect();
    let out = py(PY_UDP, &[&addr.port().to_string()], stdin.as_bytes());
    let out = String::from_utf8(out).unwrap();
    let replies: Vec<Vec<u8>> = out.lines().map(unhex).collect();
    assert_eq!(replies.len(), requests.len(), "one reply per datagram");
    replies
}

/// `nc -N 127.0.0.1 PORT`: stdin to the server, half-close at its end, the reply until the
/// server closes.
#[track_caller]
fn nc_tcp(addr: SocketAddr, stdin: &[u8]) -> Vec<u8> {
    let mut command = Command::new("nc");
    command.args(["-N", "127.0.0.1", &addr.port().to_string()]);
    succeeded(run_peer(&mut command, stdin), "nc -N")
}

/// `nc -u -W1 -w5 127.0.0.1 PORT`: stdin as one datagram; exits at the first reply (empty if
/// none came within 5 s).
#[track_caller]
fn nc_udp(addr: SocketAddr, stdin: &[u8]) -> Vec<u8> {
    let mut command = Command::new("nc");
    command.args(["-u", "-W1", "-w5", "127.0.0.1", &addr.port().to_string()]);
    run_peer(&mut command, stdin).stdout
}

/// `socketkit ARGS...` run to completion.
fn socketkit(args: &[&str]) -> Output {
    let mut command = common::socketkit();
    command.args(args);
    run_peer(&mut command, b"")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Byte strings compared without printing megabytes: the lengths and the first difference.
#[track_caller]
fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let at = got.iter().zip(want).position(|(a, b)| a != b);
    panic!(
        "{what}: got {} bytes, expected {}; first difference at {at:?}",
        got.len(),
        want.len()
    );
}

// ----- servers -----

/// A service's TCP and UDP listeners.
#[derive(Debug, Clone, Copy)]
struct Listeners {
    tcp: SocketAddr,
    udp: SocketAddr,
}

impl Listeners {
    fn of(endpoints: &[Endpoint]) -> Listeners {
        let find = |tcp: bool| {
            endpoints
                .iter()
                .find(|e| matches!(e, Endpoint::Tcp { .. }) == tcp)
                .and_then(|e| e.socket_addrs().ok())
                .map(|addrs| addrs[0])
                .unwrap_or_else(|| {
                    panic!(
                        "no {} listener in {endpoints:?}",
                        ["UDP", "TCP"][usize::from(tcp)]
                    )
                })
        };
        Listeners {
            tcp: find(true),
            udp: find(false),
        }
    }
}

/// The built-in service `name` in process, on `engine`, on TCP and UDP loopback.
fn serve(engine: Engine, name: &str) -> (TestServer, Listeners) {
    let service = socketkit::service::by_name(name).expect("a built-in service");
    let builder = Server::builder()
        .engine(engine)
        .listen("tcp://127.0.0.1:0".parse().unwrap())
        .listen("udp://127.0.0.1:0".parse().unwrap())
        .service(service);
    let server = TestServer::with(builder);
    let listeners = Listeners::of(&[server.endpoint(0).clone(), server.endpoint(1).clone()]);
    (server, listeners)
}

/// The resident set size of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .map(|kib| kib.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

fn utc_day() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400
}

// ----- the services' RFC behaviour -----

/// RFC 862: every byte comes back as it went, on TCP and in UDP datagrams.
fn check_echo(at: Listeners) {
    // 256 KiB of every byte value and some ill-formed UTF-8, larger than the socket buffers.
    let mut payload: Vec<u8> = (0..=255u8).cycle().take(256 * 1024).collect();
    payload.extend_from_slice(b"\xc3\x28 \xed\xa0\x80 \xf4\x90\x80\x80 stra\xc3\x9fe \xff");
    assert_same_bytes(
        &py_tcp(at.tcp, "send", &payload),
        &payload,
        "echo, Python TCP",
    );

    let small = b"nc: \x00\x01\xfe\xff not UTF-8 \xc0\xaf\r\n";
    assert_eq!(nc_tcp(at.tcp, small), small, "echo, nc TCP");

    let largest: Vec<u8> = (0..=255u8).cycle().take(65_507).collect(); // IPv4's largest payload
    let requests: [&[u8]; 4] = [b"hello", b"\xff\xfe\x80 \xc3\x28", b"", &largest];
    for (reply, request) in py_udp(at.udp, &requests).iter().zip(requests) {
        assert_same_bytes(reply, request, "echo, Python UDP");
    }

    let datagram = b"\x80\x81 nc datagram \xff";
    assert_eq!(nc_udp(at.udp, datagram), datagram, "echo, nc UDP");
}

/// RFC 863: nothing ever comes back; a TCP connection is closed (orderly) once the client has
/// closed its side; datagrams get no reply. `echo_udp` is another listener that must still
/// answer afterwards.
fn check_discard(at: Listeners, echo_udp: SocketAddr) {
    py(PY_DISCARD_TCP, &[&at.tcp.port().to_string()], b"");
    assert_eq!(
        nc_tcp(at.tcp, b"discard me \xff\xfe\r\n"),
        b"",
        "discard, nc TCP"
    );
    py(
        PY_DISCARD_UDP,
        &[&at.udp.port().to_string(), &echo_udp.port().to_string()],
        b"",
    );
    // The discard listener itself still serves streams.
    assert_eq!(nc_tcp(at.tcp, b"more"), b"", "discard, nc TCP again");
}

/// Checks `bytes` is chargen output: lines of 72 printable characters and CRLF, each line's
/// characters consecutive through the 95 printable ASCII characters (0x7E wraps to 0x20), and
/// each line starting one character after the previous. A last partial line is a prefix.
#[track_caller]
fn assert_chargen(bytes: &[u8], what: &str) {
    assert!(!bytes.is_empty(), "{what}: no data");
    let first = bytes[0];
    assert!(
        (0x20..=0x7e).contains(&first),
        "{what}: starts with {first:#04x}"
    );
    let offset = usize::from(first - 0x20);
    for (i, &byte) in bytes.iter().enumerate() {
        let (line, column) = (i / 74, i % 74);
        let want = match column {
            72 => b'\r',
            73 => b'\n',
            _ => 0x20 + ((offset + line + column) % 95) as u8,
        };
        if byte != want {
            let start = line * 74;
            let text = String::from_utf8_lossy(&bytes[start..bytes.len().min(start + 74)]);
            panic!(
                "{what}: byte {i} (line {line}, column {column}) is {byte:#04x}, expected \
                 {want:#04x}; the line: {text:?}"
            );
        }
    }
}

/// RFC 864: on TCP a stream of rotating lines; on UDP one 74-byte line per datagram, whatever
/// the datagram holds, successive replies rotating as the stream's lines do.
fn check_chargen(at: Listeners) {
    let stream = py_tcp(at.tcp, "read:10000", b"");
    assert_eq!(stream.len(), 10_000, "chargen, Python TCP");
    assert_chargen(&stream, "chargen, Python TCP"); // 135 lines: the pattern wraps

    let filler = [0u8; 1000];
    let requests: [&[u8]; 5] = [b"", b"x", b"\xff\xfe", b"a line please\r\n", &filler];
    let replies = py_udp(at.udp, &requests);
    for reply in &replies {
        assert_eq!(reply.len(), 74, "chargen, Python UDP: {reply:?}");
        assert_chargen(reply, "chargen, Python UDP");
    }
    for pair in replies.windows(2) {
        let next = 0x20 + (pair[0][0] - 0x20 + 1) % 95;
        assert_eq!(pair[1][0], next, "chargen, UDP: successive lines rotate");
    }

    let line = nc_udp(at.udp, b"\n");
    assert_eq!(line.len(), 74, "chargen, nc UDP: {line:?}");
    assert_chargen(&line, "chargen, nc UDP");
}

/// RFC 865: one short message (under 512 characters of printable ASCII, CR and LF), then the
/// server closes; the same quote over UDP, whatever the datagram holds.
fn check_qotd(at: Listeners) {
    for attempt in 0.. {
        let day = utc_day();
        let mut quotes = vec![
            ("Python TCP", py_tcp(at.tcp, "quiet", b"")),
            ("nc TCP", nc_tcp(at.tcp, b"")),
            ("nc UDP", nc_udp(at.udp, b"\n")),
        ];
        for reply in py_udp(at.udp, &[b"", b"quote, please"]) {
            quotes.push(("Python UDP", reply));
        }
        for (peer, quote) in &quotes {
            let text = String::from_utf8_lossy(quote);
            assert!(
                !quote.is_empty() && quote.len() < 512,
                "qotd, {peer}: {} bytes: {text:?}",
                quote.len()
            );
            assert!(
                quote
                    .iter()
                    .all(|&b| (0x20..=0x7e).contains(&b) || b == b'\r' || b == b'\n'),
                "qotd, {peer}: not printable ASCII: {text:?}"
            );
        }
        if quotes.iter().all(|(_, q)| *q == quotes[0].1) {
            return;
        }
        // The quote changes at midnight UTC: only then may the peers disagree, once.
        assert!(
            attempt == 0 && utc_day() != day,
            "qotd: the peers got different quotes: {quotes:?}"
        );
    }
}

/// RFC 867 (`daytime`) or RFC 868 (`time`): the reply on TCP (then the server closes) and UDP,
/// fetched by Python and by nc, parsed by Python and within a few seconds of Python's clock.
fn check_clock(kind: &str, at: Listeners) {
    let by_nc_tcp = nc_tcp(at.tcp, b"");
    let by_nc_udp = nc_udp(at.udp, b"\n");
    let sources = [
        format!("tcp:{}", at.tcp.port()),
        format!("udp:{}", at.udp.port()),
        format!("hex:{}", hex(&by_nc_tcp)),
        format!("hex:{}", hex(&by_nc_udp)),
    ];
    let mut args = vec![kind];
    args.extend(sources.iter().map(String::as_str));
    let out = String::from_utf8(py(PY_CLOCK, &args, b"")).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), sources.len(), "{kind}: {out}");
    for line in lines {
        let delta: f64 = line.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(
            delta.abs() <= 5.0,
            "{kind}: {delta} s away from Python's clock: {line}"
        );
    }
}

// ----- each service in process, on every engine -----

#[test]
fn echo_returns_every_byte_on_tcp_and_udp() {
    for engine in Engine::ALL {
        let (_server, at) = serve(engine, "echo");
        check_echo(at);
    }
}

#[test]
fn discard_says_nothing_and_closes_after_the_client_does() {
    for engine in Engine::ALL {
        let (_discard, at) = serve(engine, "discard");
        let (_echo, echo) = serve(engine, "echo");
        check_discard(at, echo.udp);
    }
}

#[test]
fn chargen_streams_rotating_lines_and_one_line_per_datagram() {
    for engine in Engine::ALL {
        let (_server, at) = serve(engine, "chargen");
        check_chargen(at);
    }
}

#[test]
fn qotd_sends_one_short_quote_then_closes() {
    for engine in Engine::ALL {
        let (_server, at) = serve(engine, "qotd");
        check_qotd(at);
    }
}

#[test]
fn daytime_is_rfc_867_text_that_python_parses_as_now() {
    for engine in Engine::ALL {
        let (_server, at) = serve(engine, "daytime");
        check_clock("daytime", at);
    }
}

#[test]
fn time_is_seconds_since_1900_big_endian() {
    for engine in Engine::ALL {
        let (_server, at) = serve(engine, "time");
        check_clock("time", at);
    }
}

// ----- the socketkit binary -----

/// Kills a child on drop, so a failing assert leaves no peer behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads a stalled chargen client's stdout: its first line goes to the channel, the rest is
/// returned at its end.
fn read_stall_output(stdout: ChildStdout) -> (mpsc::Receiver<String>, thread::JoinHandle<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = tx.send(line);
        let mut rest = Vec::new();
        let _ = stdout.read_to_end(&mut rest);
        rest
    });
    (rx, reader)
}

#[test]
fn chargen_does_not_buffer_for_clients_that_stop_reading() {
    const CLIENTS: usize = 8;
    const AMOUNT: usize = 100_000;
    const LIMIT_KIB: u64 = 50 * 1024;
    for engine in BINARY_ENGINES {
        let mut command = common::socketkit();
        command.args([
            "serve",
            "--engine",
            engine.name(),
            "chargen=tcp://127.0.0.1:0",
        ]);
        let mut serve = Spawned::start(command);
        let endpoints = serve.listening(1);
        let addr = endpoints[0].socket_addrs().unwrap()[0];
        let pid = serve.child.id();
        // A first client, so the baseline includes what serving a connection allocates.
        assert_chargen(&py_tcp(addr, "read:20000", b""), "chargen, warm-up");
        let baseline = rss_kib(pid);

        let mut command = python(
            PY_CHARGEN_STALL,
            &[
                &addr.port().to_string(),
                &CLIENTS.to_string(),
                &AMOUNT.to_string(),
            ],
        );
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut stall = KillOnDrop(command.spawn().expect("spawn python3"));
        let stderr = drain(stall.0.stderr.take().unwrap());
        let (first_line, rest) = read_stall_output(stall.0.stdout.take().unwrap());
        let line = first_line
            .recv_timeout(SAFETY_TIMEOUT)
            .expect("the stalled client printed nothing");
        assert_eq!(line, "stalled\n", "{engine}");

        // The clients read nothing for a second; the server must wait for them, not buffer.
        let mut peak = baseline;
        for _ in 0..10 {
            thread::sleep(Duration::from_millis(100));
            peak = peak.max(rss_kib(pid));
        }
        assert!(
            peak < baseline + LIMIT_KIB,
            "{engine}: RSS grew from {baseline} KiB to {peak} KiB while {CLIENTS} clients stalled"
        );

        // Reading resumes where the stream stopped.
        let mut go = stall.0.stdin.take().unwrap();
        go.write_all(b"go\n").unwrap();
        drop(go);
        let status = stall
            .0
            .wait_timeout(SAFETY_TIMEOUT)
            .unwrap()
            .expect("the stalled client did not finish");
        let stderr = stderr.join().unwrap();
        assert!(
            status.success(),
            "{engine}: {status}; stderr:\n{}",
            String::from_utf8_lossy(&stderr)
        );
        let data = rest.join().unwrap();
        assert_eq!(data.len(), CLIENTS * AMOUNT, "{engine}");
        for (i, stream) in data.chunks(AMOUNT).enumerate() {
            assert_chargen(stream, &format!("{engine}: stalled client {i}"));
        }
        let after = rss_kib(pid);
        assert!(
            after < baseline + LIMIT_KIB,
            "{engine}: RSS grew from {baseline} KiB to {after} KiB"
        );
    }
}

#[test]
fn one_process_serves_six_services_each_on_its_own_endpoints() {
    const OWN: [&str; 5] = ["discard", "chargen", "qotd", "daytime", "time"];
    for engine in BINARY_ENGINES {
        // echo is bare: it takes the -l endpoints; every other service has its own.
        let mut command = common::socketkit();
        command.args([
            "serve",
            "--engine",
            engine.name(),
            "-l",
            "tcp://127.0.0.1:0",
            "-l",
            "udp://127.0.0.1:0",
            "echo",
        ]);
        for name in OWN {
            command.arg(format!("{name}=tcp://127.0.0.1:0,udp://127.0.0.1:0"));
        }
        let mut serve = Spawned::start(command);
        let mut found: HashMap<String, Vec<Endpoint>> = HashMap::new();
        for _ in 0..2 * (OWN.len() + 1) {
            // listening on tcp://127.0.0.1:39449 (echo, async)
            let line = serve.wait_for_line("listening on ");
            let rest = line.split("listening on ").nth(1).unwrap();
            let (endpoint, what) = rest.split_once(" (").unwrap();
            let (service, engine_name) = what.trim_end_matches(')').split_once(", ").unwrap();
            assert_eq!(engine_name, engine.name(), "{line}");
            found
                .entry(service.to_string())
                .or_default()
                .push(endpoint.parse().unwrap());
        }
        let at = |name: &str| Listeners::of(&found[name]);
        let mut ports: Vec<_> = found.values().flatten().map(Endpoint::to_string).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(
            ports.len(),
            12,
            "every listener has its own port: {found:?}"
        );

        check_echo(at("echo"));
        check_discard(at("discard"), at("echo").udp);
        check_chargen(at("chargen"));
        check_qotd(at("qotd"));
        check_clock("daytime", at("daytime"));
        check_clock("time", at("time"));
        assert!(
            serve.child.try_wait().unwrap().is_none(),
            "{engine}: the server exited; stderr {:#?}",
            serve.seen
        );
    }
}

#[test]
fn bare_services_cannot_share_the_endpoints() {
    for args in [
        &["serve", "echo", "daytime"][..],
        &[
            "serve",
            "-l",
            "tcp://127.0.0.1:0",
            "echo",
            "daytime",
            "qotd=udp://127.0.0.1:0",
        ],
    ] {
        let output = socketkit(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: stderr {stderr:?}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line: {stderr:?}");
        assert!(
            lines[0].contains("SERVICE=ENDPOINT"),
            "{args:?}: {stderr:?}"
        );
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn serve_rejects_an_unknown_service_listing_the_known_ones() {
    for spec in ["nope", "nope=tcp://127.0.0.1:0"] {
        let output = socketkit(&["serve", spec]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{spec}: stderr {stderr:?}");
        assert!(stderr.contains("nope"), "{stderr:?}");
        for name in [
            "upper", "echo", "discard", "chargen", "qotd", "daytime", "time",
        ] {
            assert!(stderr.contains(name), "{stderr:?} should list {name}");
        }
        assert!(output.stdout.is_empty());
    }
}

/// The services `socketkit services` lists: name, RFC and well-known port.
const LISTED: [(&str, Option<u16>, Option<u16>); 7] = [
    ("upper", None, None),
    ("echo", Some(862), Some(7)),
    ("discard", Some(863), Some(9)),
    ("chargen", Some(864), Some(19)),
    ("qotd", Some(865), Some(17)),
    ("daytime", Some(867), Some(13)),
    ("time", Some(868), Some(37)),
];

#[test]
fn services_lists_each_service_with_its_rfc_and_port() {
    let out = succeeded(socketkit(&["services"]), "socketkit services");
    let out = String::from_utf8(out).unwrap();
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "RFC", "PORT", "DESCRIPTION"]);
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), LISTED.len(), "{out}");
    for (name, rfc, port) in LISTED {
        let row = rows
            .iter()
            .find(|row| row.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{out}"));
        let words: Vec<&str> = row.split_whitespace().collect();
        let rest = match rfc {
            Some(n) => {
                assert_eq!(words[1..3], ["RFC", &n.to_string()], "{row}");
                &words[3..]
            }
            None => {
                assert_eq!(words[1], "-", "{row}");
                &words[2..]
            }
        };
        let want_port = port.map_or("-".to_string(), |p| p.to_string());
        assert_eq!(rest[0], want_port, "{row}");
        assert!(rest.len() > 1, "{row}: no description");
    }
}

#[test]
fn services_json_is_one_object_per_line() {
    let out = succeeded(
        socketkit(&["services", "--json"]),
        "socketkit services --json",
    );
    let text = String::from_utf8(out.clone()).unwrap();
    for line in text.lines() {
        assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    }
    let parsed = String::from_utf8(py(PY_SERVICES_JSON, &[], &out)).unwrap();
    let want: Vec<String> = LISTED
        .iter()
        .map(|(name, rfc, port)| {
            let none = |v: &Option<u16>| v.map_or("None".to_string(), |n| n.to_string());
            format!("{name} {} {}", none(rfc), none(port))
        })
        .collect();
    assert_eq!(parsed.lines().collect::<Vec<_>>(), want);
}
