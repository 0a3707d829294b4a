//! The streaming uppercaser, differential against a simple reference: std's `to_uppercase` on
//! each valid UTF-8 run, invalid bytes copied. Reads are split at fuzzer-chosen points.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use socketkit::service::{StreamSession, UpperSession};

fn reference(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in input.utf8_chunks() {
        out.extend_from_slice(chunk.valid().to_uppercase().as_bytes());
        out.extend_from_slice(chunk.invalid());
    }
    out
}

fuzz_target!(|input: (&[u8], Vec<u8>)| {
    let (bytes, cuts) = input;
    let mut session = UpperSession::default();
    let mut out = BytesMut::new();
    let mut rest = bytes;
    for cut in cuts {
        let at = usize::from(cut).min(rest.len());
        if at > 0 {
            session.on_data(&rest[..at], &mut out);
            rest = &rest[at..];
        }
    }
    if !rest.is_empty() {
        session.on_data(rest, &mut out);
    }
    session.on_eof(&mut out);
    assert_eq!(&out[..], &reference(bytes)[..]);
});
