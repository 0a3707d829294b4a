//! Length framing: hostile headers are refused before memory is reserved; frames decode to
//! at most the limit; a frame re-encodes to the bytes it came from.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use socketkit::codec::{Framing, LengthWidth, MessageCodec};

const LIMIT: usize = 4096;

fuzz_target!(|input: (&[u8], bool)| {
    let (bytes, wide) = input;
    let width = if wide { LengthWidth::U32 } else { LengthWidth::U16 };
    let mut codec = MessageCodec::new(Framing::Length(width), LIMIT, LIMIT).unwrap();
    let mut buf = BytesMut::from(bytes);
    let mut consumed = 0;
    loop {
        let before = buf.len();
        match codec.decode(&mut buf) {
            Ok(Some(frame)) => {
                assert!(frame.payload.len() <= LIMIT);
                let mut again = BytesMut::new();
                codec.encode(&frame.payload, b"", &mut again).unwrap();
                assert_eq!(&again[..], &bytes[consumed..consumed + again.len()]);
                consumed += before - buf.len();
            }
            Ok(None) | Err(_) => break,
        }
        assert!(buf.capacity() <= bytes.len().max(LIMIT) * 2 + 64);
    }
});
