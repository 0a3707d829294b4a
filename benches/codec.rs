//! The framing codecs' decode of many small messages: the per-message cost of `line` and
//! `length` framing, which ping-pong with small messages pays on every request.
//!
//! Each batch is 10,000 messages of 64 bytes on the wire (a 63-byte line and its `\n`, or a
//! 4-byte header and a 60-byte payload), decoded from one buffer and, as a server sees them, from
//! 16 KiB reads that cut messages at arbitrary points.
//!
//! Run with `cargo bench --bench codec`; about 30 s once built.

use std::hint::black_box;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use socketkit::codec::{Framing, LengthWidth, MessageCodec};

const MESSAGES: usize = 10_000;
const WIRE_BYTES: usize = 64;
const READ_BYTES: usize = 16 * 1024;
const MAX_LINE: usize = 64 * 1024;
const MAX_FRAME: usize = 1024 * 1024;

fn lines(terminator: &[u8]) -> BytesMut {
    let payload = WIRE_BYTES - terminator.len();
    let mut wire = BytesMut::with_capacity(MESSAGES * WIRE_BYTES);
    for i in 0..MESSAGES {
        let start = wire.len();
        wire.put_slice(format!("{i:06} ").as_bytes());
        while wire.len() - start < payload {
            wire.put_u8(b'a' + (wire.len() % 26) as u8);
        }
        wire.put_slice(terminator);
    }
    wire
}

fn frames() -> BytesMut {
    let payload = WIRE_BYTES - 4;
    let mut wire = BytesMut::with_capacity(MESSAGES * WIRE_BYTES);
    for i in 0..MESSAGES {
        wire.put_u32(payload as u32);
        wire.put_slice(&[b'a' + (i % 26) as u8; WIRE_BYTES - 4]);
    }
    wire
}

/// Decodes every message in `wire` at once; returns the payload bytes seen.
fn decode_all(codec: &mut MessageCodec, mut wire: BytesMut) -> usize {
    let mut seen = 0;
    while let Some(message) = codec.decode(&mut wire).expect("valid input") {
        seen += message.payload.len();
    }
    seen
}

/// Decodes `wire` as it would arrive in [`READ_BYTES`] reads into one reused buffer.
fn decode_reads(codec: &mut MessageCodec, wire: &[u8], buf: &mut BytesMut) -> usize {
    let mut seen = 0;
    buf.clear();
    for read in wire.chunks(READ_BYTES) {
        buf.extend_from_slice(read);
        while let Some(message) = codec.decode(buf).expect("valid input") {
            seen += message.payload.len();
        }
    }
    seen
}

fn codec(c: &mut Criterion) {
    let cases = [
        ("line_lf", Framing::Line, lines(b"\n"), 63),
        ("line_crlf", Framing::Line, lines(b"\r\n"), 62),
        ("length32", Framing::Length(LengthWidth::U32), frames(), 60),
    ];
    let mut group = c.benchmark_group("decode_10k_x_64B");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    for (name, framing, wire, payload) in cases {
        let codec = || MessageCodec::new(framing, MAX_LINE, MAX_FRAME).expect("not raw");
        assert_eq!(decode_all(&mut codec(), wire.clone()), MESSAGES * payload);

        group.bench_function(format!("{name}/one_buffer"), |b| {
            b.iter_batched(
                || (codec(), wire.clone()),
                |(mut codec, wire)| black_box(decode_all(&mut codec, wire)),
                BatchSize::LargeInput,
            )
        });
        let mut buf = BytesMut::with_capacity(2 * READ_BYTES);
        group.bench_function(format!("{name}/16k_reads"), |b| {
            b.iter(|| black_box(decode_reads(&mut codec(), black_box(&wire), &mut buf)))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .without_plots();
    targets = codec
}
criterion_main!(benches);
