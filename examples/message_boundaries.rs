//! The second deck's lesson: TCP is a byte stream. "Hi!" and "Hope you're well", written as two
//! messages, reach the receiver as one run of bytes unless the application marks where each
//! message ends: with a newline (`line` framing) or a length header (`length` framing).
//!
//! Run: `cargo run --example message_boundaries`. Everything happens on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use bytes::BytesMut;
use socketkit::codec::{Framing, LengthWidth, MessageCodec};

const MESSAGES: [&str; 2] = ["Hi!", "Hope you're well"];

/// Sends both messages with two separate writes, framed as asked, then closes; returns every
/// byte the receiver got, read only after the sender is done (so both writes have arrived).
fn send_and_receive(framing: Framing) -> std::io::Result<Vec<u8>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let mut sender = TcpStream::connect(listener.local_addr()?)?;
    let (mut receiver, _) = listener.accept()?;
    for message in MESSAGES {
        let mut wire = BytesMut::new();
        match MessageCodec::new(framing, 1024, 1024) {
            Some(mut codec) => codec
                .encode(message.as_bytes(), b"\n", &mut wire)
                .expect("a short message fits"),
            None => wire.extend_from_slice(message.as_bytes()),
        }
        sender.write_all(&wire)?; // two writes: two "messages" to the sender
    }
    drop(sender);
    let mut received = Vec::new();
    receiver.read_to_end(&mut received)?;
    Ok(received)
}

/// What the receiver can tell apart: with `raw` only one run of bytes; otherwise the messages.
fn messages_seen(framing: Framing, received: &[u8]) -> Vec<String> {
    let Some(mut codec) = MessageCodec::new(framing, 1024, 1024) else {
        return vec![String::from_utf8_lossy(received).into_owned()];
    };
    let mut buffer = BytesMut::from(received);
    let mut seen = Vec::new();
    while let Some(message) = codec.decode_eof(&mut buffer).expect("well-formed frames") {
        seen.push(String::from_utf8_lossy(&message.payload).into_owned());
    }
    seen
}

fn main() -> std::io::Result<()> {
    for framing in [
        Framing::Raw,
        Framing::Line,
        Framing::Length(LengthWidth::U32),
    ] {
        let received = send_and_receive(framing)?;
        let seen = messages_seen(framing, &received);
        println!("{framing:>6}: {} message(s): {seen:?}", seen.len());
    }
    Ok(())
}
