//! Unicode: socketkit's uppercase against Python's `str.upper()`, character by character, and
//! the byte-level cases a real server has to get right (characters cut by reads, bytes that are
//! not UTF-8, replies that grow beyond a read buffer).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};

use bytes::BytesMut;
use socketkit::Engine;
use socketkit::service::upper_message;
use wait_timeout::ChildExt;

use crate::common::{SAFETY_TIMEOUT, TestServer, exchange};

/// Prints Python's `str.upper()` for every code point it considers assigned, compactly: first
/// the Unicode version, then `=A B` for a run A..=B of code points that upper-case to
/// themselves, and `A:X Y` for code point A upper-casing to X Y (all hex).
const PYTHON_UPPER_TABLE: &str = r#"
import sys, unicodedata
out = [unicodedata.unidata_version]
start = None
for cp in range(0x110001):
    c = chr(cp) if cp < 0x110000 else None
    same = c is not None and unicodedata.category(c) not in ("Cn", "Cs") and c.upper() == c
    if same:
        if start is None:
            start = cp
        continue
    if start is not None:
        out.append("=%x %x" % (start, cp - 1))
        start = None
    if c is None or unicodedata.category(c) in ("Cn", "Cs"):
        continue
    out.append("%x:%s" % (cp, " ".join("%x" % ord(u) for u in c.upper())))
sys.stdout.write("\n".join(out) + "\n")
"#;

/// Runs [`PYTHON_UPPER_TABLE`]: Python's Unicode version, and `(code point, upper)` for every
/// character Python knows.
fn python_upper_table() -> (String, Vec<(u32, Vec<u32>)>) {
    let mut child = Command::new("python3")
        .args(["-c", PYTHON_UPPER_TABLE])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn python3");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).map(|_| text)
    });
    let status = match child.wait_timeout(SAFETY_TIMEOUT * 6).unwrap() {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python3 did not print its table in time");
        }
    };
    assert!(status.success(), "python3 failed: {status}");
    let text = reader.join().unwrap().unwrap();
    let hex = |s: &str| u32::from_str_radix(s, 16).unwrap();
    let mut lines = text.lines();
    let version = lines.next().unwrap().to_string();
    let mut table = Vec::new();
    for line in lines {
        if let Some(run) = line.strip_prefix('=') {
            let (a, b) = run.split_once(' ').unwrap();
            table.extend((hex(a)..=hex(b)).map(|cp| (cp, vec![cp])));
        } else {
            let (cp, upper) = line.split_once(':').unwrap();
            table.push((hex(cp), upper.split(' ').map(hex).collect()));
        }
    }
    (version, table)
}

fn rust_upper(c: char) -> Vec<u32> {
    let mut utf8 = [0u8; 4];
    let mut out = BytesMut::new();
    upper_message(c.encode_utf8(&mut utf8).as_bytes(), &mut out);
    std::str::from_utf8(&out)
        .expect("the upper case of a character is UTF-8")
        .chars()
        .map(u32::from)
        .collect()
}

/// Where socketkit's uppercase differs from Python's for a character both know: the mapping
/// changed in a later Unicode version than Python's. `(code point, socketkit's upper case, the
/// Unicode version that gave the character its capital)`; Python leaves each one unchanged.
const NEWER_CAPITALS: [(u32, u32, (u8, u8, u8)); 4] = [
    // U+019B LATIN SMALL LETTER LAMBDA WITH STROKE -> U+A7DC LATIN CAPITAL LETTER LAMBDA WITH STROKE
    (0x019B, 0xA7DC, (16, 0, 0)),
    // U+0264 LATIN SMALL LETTER RAMS HORN -> U+A7CB LATIN CAPITAL LETTER RAMS HORN
    (0x0264, 0xA7CB, (16, 0, 0)),
    // U+A7D3 LATIN SMALL LETTER DOUBLE THORN -> U+A7D2 LATIN CAPITAL LETTER DOUBLE THORN
    (0xA7D3, 0xA7D2, (17, 0, 0)),
    // U+A7D5 LATIN SMALL LETTER DOUBLE WYNN -> U+A7D4 LATIN CAPITAL LETTER DOUBLE WYNN
    (0xA7D5, 0xA7D4, (17, 0, 0)),
];

fn parse_version(text: &str) -> (u8, u8, u8) {
    let mut parts = text.split('.').map(|p| p.parse::<u8>().unwrap());
    let mut next = || parts.next().unwrap_or(0);
    (next(), next(), next())
}

#[test]
fn upper_matches_python_for_every_assigned_character() {
    let (version, table) = python_upper_table();
    let python_version = parse_version(&version);
    // Unicode 14.0 assigns 282,230 code points that are neither Cn nor Cs; newer versions more.
    assert!(table.len() >= 282_000, "only {} characters", table.len());
    let mut differences = Vec::new();
    for (cp, python) in &table {
        let c = char::from_u32(*cp).unwrap();
        let rust = rust_upper(c);
        if &rust != python {
            differences.push((*cp, python.clone(), rust));
        }
    }
    let expected: Vec<(u32, Vec<u32>, Vec<u32>)> = NEWER_CAPITALS
        .iter()
        .filter(|(_, _, since)| python_version < *since && *since <= char::UNICODE_VERSION)
        .map(|&(cp, upper, _)| (cp, vec![cp], vec![upper]))
        .collect();
    assert_eq!(
        differences,
        expected,
        "(code point, Python's upper, socketkit's upper) with Python's Unicode {version} and \
         Rust's {:?}, over {} characters",
        char::UNICODE_VERSION,
        table.len()
    );
}

/// Reads exactly `n` bytes of reply.
fn read_n(conn: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    conn.read_exact(&mut buf).unwrap();
    buf
}

/// A character cut in two by the client's writes, the second part sent only after the server
/// has answered the first: the server holds the cut bytes back, then completes the character.
fn character_split_across_writes(engine: Engine) {
    let server = TestServer::start(engine, &["tcp://127.0.0.1:0"]);
    for text in ["é", "€", "😀", "ß"] {
        let bytes = text.as_bytes();
        for cut in 1..bytes.len() {
            let mut conn = TcpStream::connect(server.addr()).unwrap();
            conn.set_nodelay(true).unwrap();
            conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
            let mut first = b"a".to_vec();
            first.extend_from_slice(&bytes[..cut]);
            conn.write_all(&first).unwrap();
            // The reply to the first write is the whole characters only: "A", nothing cut.
            assert_eq!(read_n(&mut conn, 1), b"A", "{text:?} cut at {cut}");
            let mut rest = bytes[cut..].to_vec();
            rest.push(b'z');
            conn.write_all(&rest).unwrap();
            conn.shutdown(Shutdown::Write).unwrap();
            let mut reply = Vec::new();
            conn.read_to_end(&mut reply).unwrap();
            let expected = format!("{}Z", text.to_uppercase());
            assert_eq!(
                String::from_utf8(reply).unwrap(),
                expected,
                "{text:?} cut at {cut}"
            );
        }
    }
}

#[test]
fn character_split_across_writes_async() {
    character_split_across_writes(Engine::Async);
}

#[test]
fn character_split_across_writes_sequential() {
    character_split_across_writes(Engine::Sequential);
}

#[test]
fn invalid_utf8_is_returned_byte_for_byte() {
    for engine in Engine::ALL {
        let server = TestServer::start(engine, &["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]);
        for index in 0..2 {
            let endpoint = server.endpoint(index);
            assert_eq!(
                exchange(endpoint, b"ab\xffc\xc3("),
                b"AB\xffC\xc3(",
                "{engine} {endpoint}"
            );
            // A character still cut off when the stream ends is not UTF-8 either.
            assert_eq!(
                exchange(endpoint, b"x\xe2\x82"),
                b"X\xe2\x82",
                "{engine} {endpoint}"
            );
        }
    }
}

/// 1 MiB of ASCII, `ß` (which grows to `SS`), `ɐ` (2 bytes, whose capital `Ɐ` takes 3) and `ΐ`
/// (2 bytes, 6 in upper case): a reply far larger than one read buffer, and larger than the
/// request, written on one thread while read on another (neither side's buffers can fill up).
fn reply_larger_than_a_read_buffer(engine: Engine) {
    let server = TestServer::start(engine, &["tcp://127.0.0.1:0"]);
    let mut request = String::with_capacity(1 << 20);
    let mut i = 0u32;
    while request.len() < 1 << 20 {
        request.push_str(["straße ", "Fuß", "ok ", "ßß", "ɐ", "ΐ "][(i % 6) as usize]);
        i += 1;
    }
    let expected = request.to_uppercase();
    assert!(expected.len() > request.len());

    let mut conn = TcpStream::connect(server.addr()).unwrap();
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    conn.set_write_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let mut writer = conn.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        writer.write_all(request.as_bytes()).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).unwrap();
    writing.join().unwrap();
    assert_eq!(reply.len(), expected.len(), "{engine}");
    assert!(reply == expected.as_bytes(), "{engine}: the reply differs");
}

#[test]
fn reply_larger_than_a_read_buffer_async() {
    reply_larger_than_a_read_buffer(Engine::Async);
}

#[test]
fn reply_larger_than_a_read_buffer_sequential() {
    reply_larger_than_a_read_buffer(Engine::Sequential);
}
