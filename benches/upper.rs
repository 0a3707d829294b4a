//! The uppercase transform in bytes per second, against the two yardsticks of issue 5: a plain
//! memcpy of the same bytes (the ceiling for ASCII: target >= 0.7x) and std's
//! `str::to_uppercase` (what a Rust user writes: target >= 2x on text that is not ASCII).
//!
//! Each input is 64 KiB, so it stays in cache and the figures measure the transform, not memory.
//! The stream case feeds the same bytes in 16 KiB reads (`Limits::read_buffer`'s default), which
//! cuts multi-byte characters at read boundaries as a real socket does.
//!
//! Run with `cargo bench --bench upper`; about 40 s.

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
    prototype::init();
    prototype::check_every_char();
    prototype::check_random_bytes();
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
        out.clear();
        prototype::upper_message(bytes, &mut out);
        assert_eq!(
            &out[..],
            text.to_uppercase().as_bytes(),
            "{name}: prototype"
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
        group.bench_function("prototype_upper_message", |b| {
            b.iter(|| {
                out.clear();
                prototype::upper_message(black_box(bytes), &mut out);
                black_box(&out);
            })
        });
        if name == "ascii" {
            // The in-place fast path STYLE.md allows for same-length replies: no copy at all.
            let mut buf = bytes.to_vec();
            group.bench_function("in_place_ascii", |b| {
                b.iter(|| black_box(&mut buf[..]).make_ascii_uppercase())
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

/// A prototype of a faster `upper_prefix`, kept here so its figures can be reproduced;
/// `src/service/upper.rs` stays the reference. Before anything is measured, its output is
/// checked against std for every `char` and against the oracle on random bytes.
mod prototype {
    use std::sync::LazyLock;

    use bytes::BytesMut;

    /// Output is staged on the stack and appended 4 KiB at a time.
    const STAGE_BYTES: usize = 4096;
    /// The most one step writes: 8 bytes of ASCII, or 3 characters of 4 bytes.
    const STEP_BYTES: usize = 16;
    /// The code points the block bitmap covers: the BMP and plane 1 (emoji, Deseret, Adlam, ...).
    const MAPPED_CPS: usize = 0x20000;

    struct Tables {
        /// The upper case of each code point below U+0800 in UTF-8, padded; its length in the
        /// last byte. Every mapping there fits (the longest, `ΐ`, takes 6 bytes).
        two_byte: [[u8; 8]; 0x800],
        /// One bit per 64 code points, set when one of them has an upper case other than itself.
        cased_blocks: [u64; MAPPED_CPS / 64 / 64],
    }

    static TABLES: LazyLock<Box<Tables>> = LazyLock::new(|| {
        let mut t = Box::new(Tables {
            two_byte: [[0; 8]; 0x800],
            cased_blocks: [0; MAPPED_CPS / 64 / 64],
        });
        for c in (0..MAPPED_CPS as u32).filter_map(char::from_u32) {
            let cp = c as usize;
            if cp < 0x800 {
                let mut entry = [0u8; 8];
                let mut len = 0;
                for upper in c.to_uppercase() {
                    len += upper.encode_utf8(&mut entry[len..]).len();
                }
                entry[7] = len as u8;
                t.two_byte[cp] = entry;
            }
            if c.to_uppercase().ne([c]) {
                t.cased_blocks[cp >> 12] |= 1 << ((cp >> 6) & 63);
            }
        }
        t
    });

    pub fn init() {
        LazyLock::force(&TABLES);
    }

    pub fn upper_message(input: &[u8], out: &mut BytesMut) {
        let used = upper_prefix(input, out);
        out.extend_from_slice(&input[used..]);
    }

    pub fn upper_prefix(input: &[u8], out: &mut BytesMut) -> usize {
        out.reserve(input.len());
        let ascii = push_ascii_prefix(input, out);
        if ascii == input.len() {
            return ascii;
        }
        ascii + push_upper(&input[ascii..], out)
    }

    /// The common case, a read that is all ASCII: upper-cased 4 KiB at a time, checked and
    /// transformed in one pass into a stack buffer that stays in L1.
    fn push_ascii_prefix(input: &[u8], out: &mut BytesMut) -> usize {
        let mut stage = [0u8; STAGE_BYTES];
        let mut done = 0;
        for chunk in input.chunks(STAGE_BYTES) {
            let mut high = 0;
            for (to, b) in stage.iter_mut().zip(chunk) {
                high |= b;
                *to = b.to_ascii_uppercase();
            }
            if high >= 0x80 {
                break;
            }
            out.extend_from_slice(&stage[..chunk.len()]);
            done += chunk.len();
        }
        done
    }

    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

    /// Upper-cases 8 ASCII bytes at once; other bytes come out changed but are not used.
    fn swar_upper(w: u64) -> u64 {
        const ONES: u64 = 0x0101_0101_0101_0101;
        let from_a = w.wrapping_add(ONES * (0x80 - u64::from(b'a')));
        let past_z = w.wrapping_add(ONES * (0x80 - u64::from(b'z') - 1));
        w ^ ((from_a & !past_z & HIGH_BITS) >> 2)
    }

    /// Decodes as it goes: ASCII 8 bytes at a time, two-byte characters by table, three-byte ones
    /// copied when their 64-code-point block has no case; std decides everything else (four-byte
    /// characters, invalid and cut-off bytes).
    fn push_upper(bytes: &[u8], out: &mut BytesMut) -> usize {
        let tables = &*TABLES;
        let mut stage = [0u8; STAGE_BYTES];
        let (mut i, mut n) = (0, 0);
        while i < bytes.len() {
            if n > STAGE_BYTES - STEP_BYTES {
                out.extend_from_slice(&stage[..n]);
                n = 0;
            }
            let lead = bytes[i];
            if lead < 0x80 {
                if let Some(word) = bytes.get(i..i + 8) {
                    let w = u64::from_le_bytes(word.try_into().expect("8 bytes"));
                    stage[n..n + 8].copy_from_slice(&swar_upper(w).to_le_bytes());
                    let high = w & HIGH_BITS;
                    let ascii = if high == 0 {
                        8
                    } else {
                        high.trailing_zeros() as usize / 8
                    };
                    (i, n) = (i + ascii, n + ascii);
                } else {
                    stage[n] = lead.to_ascii_uppercase();
                    (i, n) = (i + 1, n + 1);
                }
                continue;
            }
            let b1 = bytes.get(i + 1).copied().unwrap_or(0);
            if (0xC2..=0xDF).contains(&lead) && b1 & 0xC0 == 0x80 {
                let cp = usize::from(lead & 0x1F) << 6 | usize::from(b1 & 0x3F);
                let entry = &tables.two_byte[cp];
                stage[n..n + 8].copy_from_slice(entry);
                (i, n) = (i + 2, n + usize::from(entry[7]));
                continue;
            }
            let b2 = bytes.get(i + 2).copied().unwrap_or(0);
            let three = match lead {
                0xE0 => (0xA0..=0xBF).contains(&b1),
                0xE1..=0xEC | 0xEE..=0xEF => b1 & 0xC0 == 0x80,
                0xED => (0x80..=0x9F).contains(&b1),
                _ => false,
            };
            if three && b2 & 0xC0 == 0x80 {
                let block = usize::from(lead & 0x0F) << 6 | usize::from(b1 & 0x3F);
                if tables.cased_blocks[block >> 6] >> (block & 63) & 1 == 0 {
                    stage[n..n + 3].copy_from_slice(&bytes[i..i + 3]);
                    (i, n) = (i + 3, n + 3);
                    continue;
                }
            }
            let window = &bytes[i..bytes.len().min(i + 4)];
            let c = match std::str::from_utf8(window) {
                Ok(s) => s.chars().next(),
                Err(e) if e.valid_up_to() > 0 => window[..e.valid_up_to()]
                    .utf8_chunks()
                    .next()
                    .and_then(|chunk| chunk.valid().chars().next()),
                Err(e) => match e.error_len() {
                    Some(invalid) => {
                        stage[n..n + invalid].copy_from_slice(&window[..invalid]);
                        (i, n) = (i + invalid, n + invalid);
                        continue;
                    }
                    None => break, // cut off at the end: the rest may arrive in the next read
                },
            };
            let c = c.expect("a valid prefix holds a character");
            let cp = c as usize;
            if cp < MAPPED_CPS && tables.cased_blocks[cp >> 12] >> ((cp >> 6) & 63) & 1 == 0 {
                n += c.encode_utf8(&mut stage[n..n + 4]).len();
            } else {
                for upper in c.to_uppercase() {
                    n += upper.encode_utf8(&mut stage[n..n + 4]).len();
                }
            }
            i += c.len_utf8();
        }
        out.extend_from_slice(&stage[..n]);
        i
    }

    pub fn check_every_char() {
        let mut out = BytesMut::new();
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let text = format!("{c}a{c}");
            out.clear();
            upper_message(text.as_bytes(), &mut out);
            assert_eq!(
                &out[..],
                text.to_uppercase().as_bytes(),
                "U+{:04X}",
                c as u32
            );
        }
    }

    /// Against the oracle (std on each valid run, invalid bytes copied) on short random byte
    /// strings rich in UTF-8 lead and continuation bytes; a prefix left over must be the start
    /// of a character cut off by the end of the input.
    pub fn check_random_bytes() {
        fn oracle(input: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            for chunk in input.utf8_chunks() {
                out.extend_from_slice(chunk.valid().to_uppercase().as_bytes());
                out.extend_from_slice(chunk.invalid());
            }
            out
        }
        const EDGES: [u8; 22] = [
            b'a', b'Z', 0x80, 0x85, 0x90, 0x9F, 0xA0, 0xB0, 0xBF, 0xC0, 0xC2, 0xC3, 0xCE, 0xDF,
            0xE0, 0xE1, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF,
        ];
        let mut state = 0x2545_F491_4F6C_DD1D_u64; // xorshift64: the same cases every run
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut out = BytesMut::new();
        for _ in 0..500_000 {
            let len = (next() % 12) as usize;
            let input: Vec<u8> = (0..len)
                .map(|_| match next() {
                    r if r % 3 == 0 => (r >> 8) as u8,
                    r => EDGES[(r >> 8) as usize % EDGES.len()],
                })
                .collect();
            out.clear();
            upper_message(&input, &mut out);
            assert_eq!(&out[..], &oracle(&input)[..], "{input:x?}");
            out.clear();
            let rest = &input[upper_prefix(&input, &mut out)..];
            assert!(
                rest.is_empty()
                    || std::str::from_utf8(rest)
                        .is_err_and(|e| e.valid_up_to() == 0 && e.error_len().is_none()),
                "{input:x?}: left {rest:x?}"
            );
        }
    }
}
