//! Line framing: any bytes, split anywhere, decode without panicking; every decoded line is
//! within the limit and holds no newline; what is buffered never passes the limit plus a read.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use socketkit::codec::{Framing, MessageCodec};

const LIMIT: usize = 64;

fuzz_target!(|input: (&[u8], u8)| {
    let (bytes, cut) = input;
    let cut = usize::from(cut).min(bytes.len());
    let mut codec = MessageCodec::new(Framing::Line, LIMIT, LIMIT).unwrap();
    let mut buf = BytesMut::new();
    for piece in [&bytes[..cut], &bytes[cut..]] {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(line)) => {
                    assert!(line.payload.len() <= LIMIT);
                    assert!(!line.payload.contains(&b'\n'));
                }
                Ok(None) => break,
                Err(_) => return, // the connection would close here
            }
        }
        assert!(buf.len() <= LIMIT + 1 + piece.len());
    }
    let _ = codec.decode_eof(&mut buf);
});
