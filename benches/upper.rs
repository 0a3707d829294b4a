//! The uppercase transform in bytes per second, against the two yardsticks of issue 5: a plain
//! memcpy of the same bytes (the ceiling for ASCII: target >= 0.7x) and std's
//! `str::to_uppercase` (what a Rust user writes: target >= 2x on text that is not ASCII).
//!
//! Each input is 64 KiB, so it stays in cache and the figures measure the transform, not memory.
//! The stream case feeds the same bytes in 16 KiB reads (`Limits::read_buffer`'s default), which
//! cuts multi-byte characters at read boundaries as a real socket does. `in_place_ascii` is the
//! in-place reply of same-length replies (`StreamSession::on_data_in_place`, what the engines
//! call first): no copy at all; issue 15's target is at least 0.8x `memcpy`'s speed.
//!
//! Run with `cargo bench --bench upper`; about 70 s once built (`-- ascii` for one group).

use std::hint::black_box;
use std::time::Duration;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use socketkit::service::{StreamSession, UpperSession, upper_message};

const INPUT_BYTES: usize = 64 * 1024;
const READ_BYTES: usize = 16 * 1024;

/// The sample texts: each is repeated to [`INPUT_BYTES`] and cut at a character boundary.
const TEXTS: [(&str, &str); 4] = [
    (
        "ascii",
        "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. \
         0123456789 {hello, world} <tcp://127.0.0.1:12000>\n",
    ),
    (
        "latin1",
        "Où est la forêt? À côté de l'église, près du café: déjà vu, crème brûlée, garçon. \
         Die Straße führt über die Brücke; Müller äße gern süße Äpfel, große Grüße aus Köln.\n",
    ),
    (
        "cjk",
        "東京の空は青い。私は毎朝コーヒーを飲みます。北京欢迎你，我们一起学习网络编程。\
         서울은 아름다운 도시입니다. 套接字服务器把每个请求变成大写。\n",
    ),
    (
        "mixed",
        "Hello world, straße café — Γειά σου κόσμε, ΐ — Привет, мир! — 你好，世界 — \
         こんにちは — ﬃ ligature, ǆ digraph, ŉ apostrophe — 😀 emoji ok.\n",
    ),
];

fn sample(text: &str) -> String {
    let mut out = String::with_capacity(INPUT_BYTES + 64);
    'fill: loop {
        for c in text.chars() {
            if out.len() + c.len_utf8() > INPUT_BYTES {
                break 'fill;
            }
            out.push(c);
        }
    }
    out
}

fn upper(c: &mut Criterion) {
    for (name, text) in TEXTS {
        let text = sample(text);
        let bytes = text.as_bytes();
        let mut group = c.benchmark_group(format!("upper/{name}"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        let mut out = BytesMut::with_capacity(3 * INPUT_BYTES);
        upper_message(bytes, &mut out);
        assert_eq!(
            &out[..],
            text.to_uppercase().as_bytes(),
            "{name}: wrong output"
        );

        group.bench_function("memcpy", |b| {
            b.iter(|| {
                out.clear();
                out.extend_from_slice(black_box(bytes));
                black_box(&out);
            })
        });
        group.bench_function("upper_message", |b| {
            b.iter(|| {
                out.clear();
                upper_message(black_box(bytes), &mut out);
                black_box(&out);
            })
        });
        group.bench_function("session_16k_reads", |b| {
            b.iter(|| {
                out.clear();
                let mut session = UpperSession::default();
                for read in black_box(bytes).chunks(READ_BYTES) {
                    session.on_data(read, &mut out);
                }
                session.on_eof(&mut out);
                black_box(&out);
            })
        });
        if name == "ascii" {
            // The in-place reply (issue 15: target >= 0.8x memcpy): the session upper-cases
            // each 16 KiB read where it lies, as the engines call it.
            let mut buf = bytes.to_vec();
            let mut session = UpperSession::default();
            group.bench_function("in_place_ascii", |b| {
                b.iter(|| {
                    for read in black_box(&mut buf[..]).chunks_mut(READ_BYTES) {
                        assert!(session.on_data_in_place(read).is_some());
                    }
                })
            });
        }
        group.bench_function("str_to_uppercase", |b| {
            b.iter(|| black_box(black_box(text.as_str()).to_uppercase()))
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(20)
        .without_plots();
    targets = upper
}
criterion_main!(benches);
