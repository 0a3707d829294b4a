//! Framing through real servers: the message-boundary lesson, and limits that close one
//! connection only.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};

use bytes::BytesMut;
use socketkit::codec::{Framing, LengthWidth, MessageCodec};
use socketkit::{Engine, Server};

use crate::common::{SAFETY_TIMEOUT, TestServer, exchange, socketkit};

const LESSON: [&str; 2] = ["Hi!", "Hope you're well"];
const FRAMINGS: [Framing; 3] = [
    Framing::Raw,
    Framing::Line,
    Framing::Length(LengthWidth::U32),
];

fn encode(framing: Framing, messages: &[&[u8]]) -> Vec<u8> {
    let mut wire = BytesMut::new();
    for message in messages {
        match MessageCodec::new(framing, 1 << 20, 1 << 20) {
            Some(mut codec) => codec.encode(message, b"\n", &mut wire).unwrap(),
            None => wire.extend_from_slice(message),
        }
    }
    wire.to_vec()
}

fn decode(framing: Framing, wire: &[u8]) -> Vec<Vec<u8>> {
    let Some(mut codec) = MessageCodec::new(framing, 1 << 20, 1 << 20) else {
        return vec![wire.to_vec()];
    };
    let mut buf = BytesMut::from(wire);
    let mut messages = Vec::new();
    while let Some(message) = codec.decode_eof(&mut buf).unwrap() {
        messages.push(message.payload.to_vec());
    }
    messages
}

#[test]
fn two_writes_coalesce_in_raw_and_stay_two_messages_when_framed() {
    for framing in FRAMINGS {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut receiver, _) = listener.accept().unwrap();
        receiver.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        for message in LESSON {
            sender
                .write_all(&encode(framing, &[message.as_bytes()]))
                .unwrap();
        }
        sender.shutdown(Shutdown::Write).unwrap(); // both writes are in the receiver's buffer
        let mut first_read = vec![0u8; 1024];
        let n = receiver.read(&mut first_read).unwrap(); // the slides' recv(1024)
        let seen = decode(framing, &first_read[..n]);
        if framing == Framing::Raw {
            assert_eq!(
                seen,
                [b"Hi!Hope you're well".to_vec()],
                "raw keeps no boundary"
            );
        } else {
            let expected: Vec<Vec<u8>> = LESSON.iter().map(|m| m.as_bytes().to_vec()).collect();
            assert_eq!(seen, expected, "{framing}");
        }
    }
}

#[test]
fn the_uppercase_service_answers_each_message_in_every_framing() {
    for engine in [Engine::Async, Engine::Pool] {
        for framing in FRAMINGS {
            let server = TestServer::with(
                Server::builder()
                    .engine(engine)
                    .framing(framing)
                    .listen("tcp://127.0.0.1:0".parse().unwrap()),
            );
            let request = encode(framing, &[b"Hi!", "straße".as_bytes(), b""]);
            let reply = exchange(server.endpoint(0), &request);
            let messages = decode(framing, &reply);
            let expected: Vec<Vec<u8>> = if framing == Framing::Raw {
                vec![b"HI!STRASSE".to_vec()]
            } else {
                vec![b"HI!".to_vec(), b"STRASSE".to_vec(), b"".to_vec()]
            };
            assert_eq!(messages, expected, "{engine} {framing}");
        }
    }
}

#[test]
fn a_line_reply_ends_with_the_requests_terminator() {
    let server = TestServer::with(
        Server::builder()
            .framing(Framing::Line)
            .listen("tcp://127.0.0.1:0".parse().unwrap()),
    );
    let reply = exchange(server.endpoint(0), b"crlf\r\nlf\nlast");
    assert_eq!(reply, b"CRLF\r\nLF\nLAST");
}

/// Reads until EOF or reset: what a closed connection looks like from the client.
fn read_until_closed(conn: &mut TcpStream) -> Vec<u8> {
    conn.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

#[test]
fn an_oversized_line_closes_only_that_connection() {
    for engine in Engine::ALL {
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .framing(Framing::Line)
                .max_line(16)
                .listen("tcp://127.0.0.1:0".parse().unwrap()),
        );
        let mut hostile = TcpStream::connect(server.addr()).unwrap();
        hostile.write_all(b"ok\n").unwrap();
        let mut reply = [0u8; 3];
        hostile.set_read_timeout(Some(SAFETY_TIMEOUT)).unwrap();
        hostile.read_exact(&mut reply).unwrap();
        // 17 bytes and no newline: one past the limit.
        let _ = hostile.write_all(&[b'x'; 17]);
        assert!(read_until_closed(&mut hostile).is_empty(), "{engine}");
        // Everyone else is still served, up to the limit itself.
        let line = [b'y'; 16];
        let mut request = line.to_vec();
        request.push(b'\n');
        let mut expected = [b'Y'; 16].to_vec();
        expected.push(b'\n');
        assert_eq!(exchange(server.endpoint(0), &request), expected, "{engine}");
    }
}

#[test]
fn a_four_gigabyte_header_closes_the_connection_at_once() {
    for engine in [Engine::Async, Engine::Sequential] {
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .framing(Framing::Length(LengthWidth::U32))
                .listen("tcp://127.0.0.1:0".parse().unwrap()),
        );
        let mut hostile = TcpStream::connect(server.addr()).unwrap();
        hostile.write_all(b"\xff\xff\xff\xff").unwrap(); // and nothing more: no EOF
        assert!(read_until_closed(&mut hostile).is_empty(), "{engine}");
        let request = encode(Framing::Length(LengthWidth::U32), &[b"next"]);
        let reply = exchange(server.endpoint(0), &request);
        assert_eq!(
            decode(Framing::Length(LengthWidth::U32), &reply),
            [b"NEXT".to_vec()]
        );
    }
}

#[test]
fn a_reply_that_outgrows_a_two_byte_header_is_never_sent_wrapped() {
    for engine in [Engine::Async, Engine::Threaded] {
        let framing = Framing::Length(LengthWidth::U16);
        let server = TestServer::with(
            Server::builder()
                .engine(engine)
                .framing(framing)
                .listen("tcp://127.0.0.1:0".parse().unwrap()),
        );
        // 'ΐ' is 2 bytes and upper-cases to 6: 60,000 bytes grow to 180,000.
        let big = "ΐ".repeat(30_000);
        let mut conn = TcpStream::connect(server.addr()).unwrap();
        conn.write_all(&encode(framing, &[big.as_bytes()])).unwrap();
        assert!(
            read_until_closed(&mut conn).is_empty(),
            "{engine}: a reply was sent"
        );
        let reply = exchange(server.endpoint(0), &encode(framing, &[b"fits"]));
        assert_eq!(decode(framing, &reply), [b"FITS".to_vec()], "{engine}");
    }
}

#[test]
fn send_speaks_each_framing_through_the_cli() {
    for (flag, extra) in [("line", &[][..]), ("length", &["--length-bytes", "2"][..])] {
        let framing = if flag == "line" {
            Framing::Line
        } else {
            Framing::Length(LengthWidth::U16)
        };
        let server = TestServer::with(
            Server::builder()
                .framing(framing)
                .listen("tcp://127.0.0.1:0".parse().unwrap()),
        );
        let output = socketkit()
            .args(["send", "--framing", flag])
            .args(extra)
            .arg(server.endpoint(0).to_string())
            .arg("Hi!\nHope you're well\n")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{flag}: {output:?}");
        assert_eq!(
            String::from_utf8(output.stdout).unwrap(),
            "HI!\nHOPE YOU'RE WELL\n",
            "{flag}"
        );
    }
}

#[test]
fn a_reply_frame_over_the_clients_limit_is_a_protocol_error() {
    let server = TestServer::with(
        Server::builder()
            .framing(Framing::Length(LengthWidth::U32))
            .listen("tcp://127.0.0.1:0".parse().unwrap()),
    );
    let output = socketkit()
        .args(["send", "--framing", "length", "--max-frame", "4"])
        .arg(server.endpoint(0).to_string())
        .arg("ΐΐ") // 4 bytes may go out; the 12-byte reply is over the client's own limit
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("exceeds the limit of 4 bytes"), "{stderr}");

    // A message that cannot fit one frame is not sent at all: a usage error.
    let output = socketkit()
        .args(["send", "--framing", "length", "--max-frame", "4"])
        .arg(server.endpoint(0).to_string())
        .arg("abcdefgh")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}
