//! The uppercase service of the slides: the reply is the request in upper case.
//!
//! Python's `str.upper()` applies Unicode's full case mapping (SpecialCasing included), so
//! `straße` becomes `STRASSE` and one character may grow to three (`ΐ` becomes `Ι` and two combining accents). Rust's
//! `char::to_uppercase` applies the same mapping, so it is the oracle here. The slides' server
//! calls `.decode()` and would raise on bytes that are not UTF-8; socketkit passes such bytes
//! through unchanged instead, so nothing is ever dropped or replaced.
//!
//! For speed, most text never reaches `char::to_uppercase`: ASCII, two-byte characters and the
//! 64-code-point blocks without case go through the tables of `upper/table.rs`, which the tests
//! compare with it for every character.
//!
//! Differences from Python come only from the Unicode version each was built with: characters
//! assigned after the Python's Unicode version (Python 3.11 knows Unicode 14.0) are upper-cased
//! by socketkit and left alone by that Python. The test suite compares every character both know.

use bytes::BytesMut;

use super::{Context, Next, Service, StreamSession};

mod table;

/// The uppercase service (`socketkit serve upper`).
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use socketkit::{Transport, service::{Context, Service, Upper}};
///
/// let ctx = Context::new(Transport::Udp, "127.0.0.1:5000".parse().unwrap());
/// let mut reply = BytesMut::new();
/// assert!(Upper.message(&ctx, "straße".as_bytes(), &mut reply));
/// assert_eq!(&reply[..], b"STRASSE");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Upper;

impl Service for Upper {
    type Session = UpperSession;

    fn name(&self) -> &str {
        "upper"
    }

    fn session(&self, _ctx: &Context) -> UpperSession {
        UpperSession::default()
    }

    fn message(&self, _ctx: &Context, request: &[u8], reply: &mut BytesMut) -> bool {
        upper_message(request, reply);
        true
    }
}

/// Upper-cases a byte stream one read at a time, replying as data arrives.
///
/// A character cut in two by the reads is held back (at most 3 bytes) until its end arrives;
/// bytes still cut off at EOF are not UTF-8 and are passed through.
///
/// ```
/// use bytes::BytesMut;
/// use socketkit::service::{StreamSession, UpperSession};
///
/// let mut session = UpperSession::default();
/// let mut out = BytesMut::new();
/// let ss = "ß".as_bytes();
/// session.on_data(&[b'a', ss[0]], &mut out); // ß is cut after its first byte
/// assert_eq!(&out[..], b"A");
/// session.on_data(&ss[1..], &mut out);
/// session.on_eof(&mut out);
/// assert_eq!(&out[..], b"ASS");
/// ```
#[derive(Debug, Default)]
pub struct UpperSession {
    /// Leading bytes of a character that the previous read cut off (at most 3).
    pending: Vec<u8>,
}

impl StreamSession for UpperSession {
    fn on_data(&mut self, mut input: &[u8], out: &mut BytesMut) -> Next {
        // Rare path: finish the character the previous read cut off. A window of the pending
        // bytes and a few new ones is enough to complete it (or to show it is invalid).
        while !self.pending.is_empty() && !input.is_empty() {
            let held = self.pending.len();
            let take = input.len().min(4);
            let mut window = [0u8; 8];
            window[..held].copy_from_slice(&self.pending);
            window[held..held + take].copy_from_slice(&input[..take]);
            let used = upper_prefix(&window[..held + take], out);
            if used >= held {
                self.pending.clear();
                input = &input[used - held..];
            } else if used == 0 {
                // Still incomplete: only possible when all of `input` fit in the window.
                self.pending.extend_from_slice(input);
                return Next::Read;
            } else {
                // Some held bytes were invalid and passed through; retry with the rest.
                self.pending.drain(..used);
            }
        }
        let used = upper_prefix(input, out);
        if used < input.len() {
            self.pending.extend_from_slice(&input[used..]);
        }
        Next::Read
    }

    /// All-ASCII input with no character held back: upper-cased in place (ASCII's upper case
    /// is Unicode's for those characters, and has their length). Anything else may change
    /// length or complete a held character: the general path. One pass that checks and
    /// upper-cases a block at a time (a check of the whole input first cost a third of the
    /// speed); a block that is not all ASCII stops it, its ASCII letters already upper-cased,
    /// which the general path answers alike (their upper case is themselves, and no byte of a
    /// multi-byte character is ASCII).
    #[allow(unsafe_code)] // the AVX2 call, on a CPU that has it
    fn on_data_in_place(&mut self, data: &mut [u8]) -> Option<Next> {
        if !self.pending.is_empty() {
            return None;
        }
        if data.len() <= SHORT_BYTES {
            return upper_ascii_short(data).then_some(Next::Read);
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: this CPU has AVX2, checked just above (the result is cached).
            return unsafe { upper_ascii_blocks_avx2(data) }.then_some(Next::Read);
        }
        upper_ascii_blocks(data).then_some(Next::Read)
    }

    fn on_eof(&mut self, out: &mut BytesMut) -> Next {
        out.extend_from_slice(&self.pending); // still cut off at EOF: not UTF-8, pass it through
        self.pending.clear();
        Next::Close
    }

    /// A character cut in two is a message begun: its end must arrive in time.
    fn in_message(&self) -> bool {
        !self.pending.is_empty()
    }
}

/// Upper-cases a whole message: a datagram, or a stream that has ended. Bytes that are not
/// UTF-8 are copied unchanged.
///
/// ```
/// use bytes::BytesMut;
/// let mut out = BytesMut::new();
/// socketkit::service::upper_message(b"caf\xc3\xa9 \xff!", &mut out);
/// assert_eq!(&out[..], b"CAF\xc3\x89 \xff!");
/// ```
pub fn upper_message(input: &[u8], out: &mut BytesMut) {
    let used = upper_prefix(input, out);
    // Checked first: most messages are used whole, and an empty copy still costs a `memcpy`
    // call.
    if used < input.len() {
        out.extend_from_slice(&input[used..]);
    }
}

/// Upper-cases the longest prefix of `input` that does not end inside a character, appending
/// to `out`, and returns its length. Invalid bytes inside the prefix are copied unchanged; an
/// incomplete character at the very end is left for the caller (it may complete in the next read).
///
/// ```
/// use bytes::BytesMut;
/// let mut out = BytesMut::new();
/// let input = "aé".as_bytes();
/// assert_eq!(socketkit::service::upper_prefix(&input[..2], &mut out), 1); // é is cut
/// assert_eq!(&out[..], b"A");
/// ```
pub fn upper_prefix(input: &[u8], out: &mut BytesMut) -> usize {
    let ascii = if input.len() <= SHORT_BYTES {
        push_short_ascii_prefix(input, out)
    } else {
        out.reserve(input.len());
        push_ascii_prefix(input, out)
    };
    if ascii == input.len() {
        return ascii;
    }
    ascii + push_upper(&input[ascii..], out)
}

/// The all-ASCII fast path works on blocks this long, so that each is still in L1 when it is
/// written: 4 and 16 KiB measured the same, 1 KiB 10% slower.
const ASCII_BLOCK_BYTES: usize = 4096;

/// Copies and upper-cases the ASCII prefix of `input`, a block at a time, and returns its length.
/// The common case is a read that is all ASCII: then this is the whole job, at about half the
/// speed of a memcpy (as fast as `make_ascii_uppercase` in place, or `str::to_uppercase`).
fn push_ascii_prefix(input: &[u8], out: &mut BytesMut) -> usize {
    let mut done = 0;
    for block in input.chunks(ASCII_BLOCK_BYTES) {
        let start = out.len();
        // Zeroing is how safe code gets to write into `out`: a memset and one pass that both
        // upper-cases and checks was 10% faster than a copy and then a pass in place.
        out.resize(start + block.len(), 0);
        let mut high = 0;
        for (to, &b) in out[start..].iter_mut().zip(block) {
            high |= b;
            *to = ascii_upper(b);
        }
        if high >= 0x80 {
            let ascii = block.iter().take_while(|b| b.is_ascii()).count();
            out.truncate(start + ascii);
            return done + ascii;
        }
        done += block.len();
    }
    done
}

/// Upper-cases `data` in place a block at a time while it is ASCII; `false` at the first
/// block that is not (see [`UpperSession::on_data_in_place`]).
#[inline(always)]
fn upper_ascii_blocks(data: &mut [u8]) -> bool {
    for block in data.chunks_mut(IN_PLACE_BLOCK) {
        let mut high = 0;
        for b in block.iter_mut() {
            high |= *b;
            *b = ascii_upper(*b);
        }
        if high >= 0x80 {
            return false;
        }
    }
    true
}

/// [`upper_ascii_blocks`] in 32-byte vectors: the default x86-64 target has 16-byte ones
/// only, which held the in-place reply to 0.68x the speed of glibc's (AVX) `memcpy`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn upper_ascii_blocks_avx2(data: &mut [u8]) -> bool {
    upper_ascii_blocks(data)
}

/// The in-place path checks for non-ASCII bytes once per block this long: short enough that
/// text with an accent early stops soon, long enough to vectorise.
const IN_PLACE_BLOCK: usize = 256;

/// Inputs up to this long (a request line, a ping-pong message) take the short path.
const SHORT_BYTES: usize = 256;

/// [`push_ascii_prefix`] for a short input: a copy, then the case change in place, in one
/// vectorized pass that also finds whether all of it is ASCII. On a 64-byte request the block
/// loop's zeroing and bookkeeping cost more than the case change itself: `UpperSession::on_data`
/// took 231 instructions the long way, 169 this way (callgrind).
fn push_short_ascii_prefix(input: &[u8], out: &mut BytesMut) -> usize {
    let start = out.len();
    out.extend_from_slice(input);
    if upper_ascii_short(&mut out[start..]) {
        return input.len();
    }
    let ascii = input.iter().take_while(|b| b.is_ascii()).count();
    out.truncate(start + ascii);
    ascii
}

/// Upper-cases the ASCII letters of a short `data` (at most [`SHORT_BYTES`]) in place, all of
/// it, and says whether it was all ASCII: the case change and the check of a ping-pong request
/// or a datagram. In 32-byte lanes (one AVX2 vector each where the CPU has it): the block loop
/// took 90 instructions on a 64-byte request, four 16-byte steps and their set-up and
/// reduction; this takes about 30 (callgrind).
#[inline]
#[allow(unsafe_code)] // the AVX2 call, on a CPU that has it
fn upper_ascii_short(data: &mut [u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: this CPU has AVX2, checked just above (the result is cached).
        return unsafe { upper_ascii_lanes_avx2(data) };
    }
    upper_ascii_lanes(data)
}

/// [`upper_ascii_short`]'s loop: whole 32-byte lanes, each OR-ed into a lane of high bits
/// (checked once, at the end). The bytes after the last whole lane go in one more lane, the
/// last 32 bytes, which overlaps bytes already done: the case change is idempotent, so they
/// come out the same, and a byte-at-a-time tail cost ~110 instructions on a 63-byte message
/// (a line without its newline). Inputs shorter than a lane go a byte at a time.
#[inline(always)]
fn upper_ascii_lanes(data: &mut [u8]) -> bool {
    const LANE: usize = 32;
    #[inline(always)]
    fn lane(high: &mut [u8; LANE], lane: &mut [u8]) {
        for (h, b) in high.iter_mut().zip(lane.iter_mut()) {
            *h |= *b;
            *b = ascii_upper(*b);
        }
    }
    let len = data.len();
    if len < LANE {
        let mut high = 0;
        for b in data {
            high |= *b;
            *b = ascii_upper(*b);
        }
        return high < 0x80;
    }
    let mut high = [0u8; LANE];
    for whole in data.chunks_exact_mut(LANE) {
        lane(&mut high, whole);
    }
    if !len.is_multiple_of(LANE) {
        lane(&mut high, &mut data[len - LANE..]);
    }
    high.iter().fold(0, |all, &h| all | h) < 0x80
}

/// [`upper_ascii_lanes`] with 32-byte vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn upper_ascii_lanes_avx2(data: &mut [u8]) -> bool {
    upper_ascii_lanes(data)
}

/// `u8::to_ascii_uppercase` in one comparison fewer: `b + 5` lands in 0x66..=0x7F, the only
/// bytes above 0x65 as `i8`, exactly when `b` is `a..=z`. Vectorized, that is 4 instructions per
/// 16 bytes instead of 5, 7% on all-ASCII input. Bytes outside `a..=z` are returned unchanged.
fn ascii_upper(b: u8) -> u8 {
    b ^ (u8::from(b.wrapping_add(5) as i8 > 0x65) << 5)
}

/// Output that is not all ASCII is staged on the stack and appended a stage at a time:
/// `BytesMut::extend_from_slice` per character cost more than the case mapping.
const STAGE_BYTES: usize = 1024;

/// The most one step below writes: 8 bytes of ASCII or of a two-byte character's table entry,
/// or a character's upper case (at most three characters, 12 bytes).
const STEP_BYTES: usize = 16;

/// Upper-cases `bytes`, which start with a non-ASCII byte, and returns how many it used (all
/// but an incomplete character at the end). It decodes as it goes, by UTF-8 length: ASCII a
/// word at a time, two-byte characters by table, three- and four-byte ones copied when their
/// 64-code-point block has no case (CJK, kana, Hangul, emoji). Only characters with a case
/// above U+07FF reach `char::to_uppercase`, and only bytes that are not UTF-8 reach
/// `str::from_utf8`. The steps take the whole input and stage and return where they stopped:
/// passing them subslices spilled registers in the three-byte loop and cost 23% on CJK.
#[inline(never)] // its 1 KiB stage would make every caller's frame, the short path's too, as big
fn push_upper(bytes: &[u8], out: &mut BytesMut) -> usize {
    let mut stage = [0u8; STAGE_BYTES];
    let (mut i, mut n) = (0, 0);
    while let Some(&lead) = bytes.get(i) {
        if n > STAGE_BYTES - STEP_BYTES {
            out.extend_from_slice(&stage[..n]);
            n = 0;
        }
        let (next_i, next_n) = match lead {
            0x00..=0x7F => ascii_run(bytes, i, &mut stage, n),
            0xC2..=0xDF => two_byte_char(bytes, i, &mut stage, n),
            0xE0..=0xEF => three_byte_run(bytes, i, &mut stage, n),
            0xF0..=0xF4 => four_byte_char(bytes, i, &mut stage, n),
            _ => (i, n),
        };
        if next_i > i {
            (i, n) = (next_i, next_n);
            continue;
        }
        // Not a character: std decides how many bytes form one invalid sequence.
        let window = &bytes[i..bytes.len().min(i + 4)];
        match std::str::from_utf8(window).map_err(|e| e.error_len()) {
            Err(Some(invalid)) => {
                stage[n..n + invalid].copy_from_slice(&window[..invalid]);
                (i, n) = (i + invalid, n + invalid);
            }
            Err(None) => break, // cut off by the end: the rest may arrive in the next read
            Ok(_) => unreachable!("every valid character is decoded by a step above"),
        }
    }
    out.extend_from_slice(&stage[..n]);
    i
}

/// Where the steps below write. Each takes the input and the stage with positions `i` and `n`,
/// writes while [`STEP_BYTES`] fit, and returns the new `(i, n)`: unchanged when there is no
/// character of its kind at `i`.
type Stage = [u8; STAGE_BYTES];

/// Upper-cases the ASCII run at `bytes[i]`.
fn ascii_run(bytes: &[u8], i: usize, stage: &mut Stage, n: usize) -> (usize, usize) {
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let Some(word) = bytes[i..].first_chunk::<8>() else {
        stage[n] = ascii_upper(bytes[i]);
        return (i + 1, n + 1);
    };
    // A word at a time, with no branch on where the run ends: all 8 bytes are written, the
    // ASCII prefix is kept (the rest is overwritten by the next step).
    let w = u64::from_le_bytes(*word);
    stage[n..n + 8].copy_from_slice(&swar_upper(w).to_le_bytes());
    let ascii = (w & HIGH_BITS).trailing_zeros() as usize / 8;
    let (mut i, mut n) = (i + ascii, n + ascii);
    if ascii == 8 {
        // Perhaps a long run (English with an accent or an emoji somewhere): 64 bytes at a
        // time, vectorized, 2.3x faster than by word on English with an accent every 4 KiB.
        // The first word is checked alone: without that, text with short runs (French,
        // German) paid 4% for trying.
        while n <= STAGE_BYTES - 64 {
            let Some(block) = bytes[i..].first_chunk::<64>() else {
                break;
            };
            if !(block[..8].is_ascii() && block.is_ascii()) {
                break;
            }
            for (to, &b) in stage[n..n + 64].iter_mut().zip(block) {
                *to = ascii_upper(b);
            }
            (i, n) = (i + 64, n + 64);
        }
    }
    (i, n)
}

/// Upper-cases 8 bytes of ASCII at once; bytes from the first non-ASCII one on come out wrong
/// (a carry may cross into the next byte) and must not be used.
fn swar_upper(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let from_a = w.wrapping_add(ONES * (0x80 - u64::from(b'a')));
    let past_z = w.wrapping_add(ONES * (0x80 - u64::from(b'z') - 1));
    w ^ ((from_a & !past_z & 0x8080_8080_8080_8080) >> 2)
}

/// Upper-cases the two-byte character (Latin, Greek, Cyrillic, Armenian, Hebrew, Arabic) at
/// `bytes[i]`, by table. One at a time: a loop over a run, as for three-byte characters, cost
/// Latin-1 text (an accented letter between ASCII ones) 10% and gained Greek nothing.
fn two_byte_char(bytes: &[u8], i: usize, stage: &mut Stage, n: usize) -> (usize, usize) {
    let Some(&[lead, b1]) = bytes[i..].first_chunk::<2>() else {
        return (i, n);
    };
    if !is_continuation(b1) {
        return (i, n);
    }
    let cp = (usize::from(lead & 0x1F) << 6) | usize::from(b1 & 0x3F);
    let upper = &table::TWO_BYTE_UPPER[cp - 0x80];
    stage[n..n + 8].copy_from_slice(upper);
    (i + 2, n + usize::from(upper[7]))
}

/// Upper-cases the run of three-byte characters (the rest of the BMP: CJK, kana, Hangul,
/// punctuation, symbols) at `bytes[i]`. Looping here rather than in [`push_upper`] made CJK
/// 25% faster.
fn three_byte_run(bytes: &[u8], mut i: usize, stage: &mut Stage, mut n: usize) -> (usize, usize) {
    while n <= STAGE_BYTES - STEP_BYTES {
        let Some(&[lead @ 0xE0..=0xEF, b1, b2]) = bytes[i..].first_chunk::<3>() else {
            break;
        };
        let cp =
            (u32::from(lead & 0x0F) << 12) | (u32::from(b1 & 0x3F) << 6) | u32::from(b2 & 0x3F);
        let valid = is_continuation(b1)
            && is_continuation(b2)
            && cp >= 0x800 // not overlong
            && !(0xD800..=0xDFFF).contains(&cp); // not a surrogate
        if !valid {
            break;
        }
        if table::may_have_upper_case(cp) {
            n += push_char_upper(cp, &mut stage[n..n + STEP_BYTES]);
        } else {
            stage[n..n + 3].copy_from_slice(&[lead, b1, b2]);
            n += 3;
        }
        i += 3;
    }
    (i, n)
}

/// Upper-cases the four-byte character (emoji, historic scripts, CJK extensions) at `bytes[i]`.
fn four_byte_char(bytes: &[u8], i: usize, stage: &mut Stage, n: usize) -> (usize, usize) {
    let Some(&[lead, b1, b2, b3]) = bytes[i..].first_chunk::<4>() else {
        return (i, n);
    };
    let b1_valid = match lead {
        0xF0 => (0x90..=0xBF).contains(&b1), // not overlong
        0xF4 => (0x80..=0x8F).contains(&b1), // not above U+10FFFF
        _ => is_continuation(b1),
    };
    if !(b1_valid && is_continuation(b2) && is_continuation(b3)) {
        return (i, n);
    }
    let cp = (u32::from(lead & 0x07) << 18)
        | (u32::from(b1 & 0x3F) << 12)
        | (u32::from(b2 & 0x3F) << 6)
        | u32::from(b3 & 0x3F);
    let written = if table::may_have_upper_case(cp) {
        push_char_upper(cp, &mut stage[n..n + STEP_BYTES])
    } else {
        stage[n..n + 4].copy_from_slice(&[lead, b1, b2, b3]);
        4
    };
    (i + 4, n + written)
}

fn is_continuation(b: u8) -> bool {
    b & 0xC0 == 0x80
}

/// Writes the upper case of the valid code point `cp` at the start of `stage` (which has room
/// for [`STEP_BYTES`]) and returns its length.
fn push_char_upper(cp: u32, stage: &mut [u8]) -> usize {
    let c = char::from_u32(cp).expect("decoded from valid UTF-8");
    let mut len = 0;
    for upper in c.to_uppercase() {
        len += upper.encode_utf8(&mut stage[len..]).len();
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An independent oracle: std's `str::to_uppercase` on each valid run, invalid bytes copied.
    fn oracle(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in input.utf8_chunks() {
            out.extend_from_slice(chunk.valid().to_uppercase().as_bytes());
            out.extend_from_slice(chunk.invalid());
        }
        out
    }

    fn streamed(pieces: &[&[u8]]) -> Vec<u8> {
        let mut session = UpperSession::default();
        let mut out = BytesMut::new();
        for piece in pieces {
            if !piece.is_empty() {
                assert_eq!(session.on_data(piece, &mut out), Next::Read);
            }
            assert!(
                session.pending.len() <= 3,
                "held back more than one character"
            );
        }
        assert_eq!(session.on_eof(&mut out), Next::Close);
        out.to_vec()
    }

    #[test]
    fn the_caseless_ranges_really_have_no_case() {
        // Kana, CJK, Yi, Lisu, Vai, Hangul and emoji are copied, never looked up.
        let ranges = [
            '\u{3040}'..='\u{A63F}',
            '\u{AC00}'..='\u{D7FF}',
            '\u{1F300}'..='\u{1FAFF}',
        ];
        for c in ranges.into_iter().flatten() {
            assert!(
                !table::may_have_upper_case(u32::from(c)),
                "{c:?} is looked up"
            );
            assert!(c.to_uppercase().eq([c]), "{c:?} has an upper case");
        }
    }

    #[test]
    fn every_character_is_upper_cased_like_std() {
        let (mut text, mut expected, mut out) = (String::new(), String::new(), BytesMut::new());
        let mut check = |text: &str, expected: &str| {
            out.clear();
            upper_message(text.as_bytes(), &mut out);
            assert_eq!(&out[..], expected.as_bytes(), "{text:?}");
        };
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let upper: String = c.to_uppercase().collect();
            check(c.encode_utf8(&mut [0; 4]), &upper);
            // Also twice in a row, at the start, between ASCII (where it cuts an 8-byte word)
            // and before ASCII: `ccabcdefghiccjk`.
            text.clear();
            expected.clear();
            for (piece, upper_piece) in
                [("", ""), ("abcdefghi", "ABCDEFGHI"), ("", ""), ("jk", "JK")]
            {
                text.push(c);
                text.push_str(piece);
                expected.push_str(&upper);
                expected.push_str(upper_piece);
            }
            check(&text, &expected);
        }
    }

    #[test]
    fn every_short_byte_string_matches_the_oracle() {
        // Every string of one or two bytes, and of three or four bytes from the values where
        // UTF-8's rules change (overlong, surrogate, past U+10FFFF, cut off). What is left
        // unconsumed must be the start of a character cut off by the end.
        const EDGES: [u8; 24] = [
            b'a', b'Z', 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0,
            0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF3, 0xF4, 0xF5, 0xFF,
        ];
        let all: Vec<u8> = (0..=u8::MAX).collect();
        let mut out = BytesMut::new();
        let mut check = |input: &[u8]| {
            out.clear();
            upper_message(input, &mut out);
            assert_eq!(&out[..], oracle(input), "{input:x?}");
            out.clear();
            let rest = &input[upper_prefix(input, &mut out)..];
            assert!(
                rest.is_empty()
                    || std::str::from_utf8(rest)
                        .is_err_and(|e| e.valid_up_to() == 0 && e.error_len().is_none()),
                "{input:x?} left {rest:x?}"
            );
        };
        for &a in &all {
            check(&[a]);
            for &b in &all {
                check(&[a, b]);
            }
        }
        for a in EDGES {
            for b in EDGES {
                for c in EDGES {
                    check(&[a, b, c]);
                    for d in EDGES {
                        check(&[a, b, c, d]);
                    }
                }
            }
        }
    }

    #[test]
    fn special_casing_grows_the_reply() {
        assert_eq!(streamed(&["straße".as_bytes()]), b"STRASSE");
        assert_eq!(streamed(&["é".as_bytes()]), "É".as_bytes());
        assert_eq!(
            streamed(&["ΐ".as_bytes()]),
            "\u{399}\u{308}\u{301}".as_bytes()
        ); // three characters
        assert_eq!(streamed(&["ﬃ".as_bytes()]), b"FFI");
    }

    /// The short path's lanes, the overlapping last lane and the byte-at-a-time path below a
    /// lane: every byte upper-cased once, whatever the length, and a byte with the high bit
    /// seen wherever it is (inside the overlap too).
    #[test]
    fn the_short_lanes_upper_case_every_byte_and_see_every_high_bit() {
        for len in (0..=100).chain([SHORT_BYTES - 1, SHORT_BYTES]) {
            let ascii: Vec<u8> = b"abcXYZ 09{}`~\n"
                .iter()
                .cycle()
                .take(len)
                .copied()
                .collect();
            let mut data = ascii.clone();
            assert!(upper_ascii_short(&mut data), "{len} bytes");
            assert_eq!(data, ascii.to_ascii_uppercase(), "{len} bytes");
            for at in 0..len {
                let mut data = ascii.clone();
                data[at] = 0xC3;
                assert!(!upper_ascii_short(&mut data), "{len} bytes, 0xC3 at {at}");
                let mut expected = ascii.to_ascii_uppercase();
                expected[at] = 0xC3;
                assert_eq!(data, expected, "{len} bytes, 0xC3 at {at}");
            }
        }
    }

    #[test]
    fn short_and_long_inputs_agree_with_the_oracle() {
        // Around the short path's limit and the ASCII block's size, with a character that is
        // not ASCII (or a byte that is not UTF-8) first, inside or last, whole or cut by a read.
        let pieces: [&[u8]; 4] = ["é".as_bytes(), "ΐ".as_bytes(), "😀".as_bytes(), b"\xff"];
        for len in [
            SHORT_BYTES - 2,
            SHORT_BYTES,
            SHORT_BYTES + 1,
            ASCII_BLOCK_BYTES,
            ASCII_BLOCK_BYTES + 3,
        ] {
            for piece in pieces {
                for at in [0, 1, len / 2, len - piece.len(), len] {
                    let mut input = b"abcdefghijklmnopqrstuvwxyz 0123456789\n".repeat(len / 37 + 1);
                    input.truncate(len);
                    input.splice(at..at, piece.iter().copied());
                    let mut out = BytesMut::new();
                    upper_message(&input, &mut out);
                    assert_eq!(
                        out.to_vec(),
                        oracle(&input),
                        "{len} bytes, {piece:?} at {at}"
                    );
                    for cut in at..=at + piece.len() {
                        assert_eq!(
                            streamed(&[&input[..cut], &input[cut..]]),
                            oracle(&input),
                            "{len} bytes, {piece:?} at {at}, cut at {cut}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn invalid_utf8_passes_through_byte_for_byte() {
        let input = b"ab\xffc\xe2\x82d\xc3";
        assert_eq!(streamed(&[input]), b"AB\xffC\xe2\x82D\xc3");
    }

    #[test]
    fn every_split_of_a_four_byte_character() {
        let text = "x😀y".as_bytes();
        for a in 0..=text.len() {
            for b in a..=text.len() {
                assert_eq!(
                    streamed(&[&text[..a], &text[a..b], &text[b..]]),
                    "X😀Y".as_bytes()
                );
            }
        }
    }

    #[test]
    fn held_bytes_that_turn_out_invalid_are_passed_through() {
        // E2 82 looks like the start of '€' but the next read shows it is not.
        assert_eq!(streamed(&[b"a\xe2", b"\x82", b"Z"]), b"A\xe2\x82Z");
        assert_eq!(streamed(&[b"\xf0\x9f", b"\x98x"]), b"\xf0\x9f\x98X");
    }

    #[test]
    fn a_cut_character_is_a_message_begun_until_its_end_arrives() {
        let mut session = UpperSession::default();
        let mut out = BytesMut::new();
        session.on_data(b"ok", &mut out);
        assert!(!session.in_message(), "everything read was answered");
        session.on_data(&"ß".as_bytes()[..1], &mut out);
        assert!(session.in_message());
        session.on_data(&"ß".as_bytes()[1..], &mut out);
        assert!(!session.in_message());
        // A raw stream has no boundaries: the peer may be halfway through what it means to
        // send, so shutdown never takes an answered read for the end of a request.
        assert!(!session.between_messages());
    }

    proptest! {
        #[test]
        fn upper_matches_std_for_any_split(s in "\\PC{0,40}", cut in 0usize..200) {
            let bytes = s.as_bytes();
            let cut = cut.min(bytes.len());
            prop_assert_eq!(streamed(&[&bytes[..cut], &bytes[cut..]]), s.to_uppercase().into_bytes());
        }

        #[test]
        fn any_bytes_at_every_split_point_match_the_oracle(
            bytes in proptest::collection::vec(any::<u8>(), 0..24),
            tail in "\\PC{0,6}",
        ) {
            let mut input = bytes.clone();
            input.extend_from_slice(tail.as_bytes());
            let expected = oracle(&input);
            for cut in 0..=input.len() {
                prop_assert_eq!(streamed(&[&input[..cut], &input[cut..]]), expected.clone());
            }
            let mut whole = BytesMut::new();
            upper_message(&input, &mut whole);
            prop_assert_eq!(whole.to_vec(), expected);
        }

        #[test]
        fn byte_at_a_time_matches_the_oracle(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let pieces: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(streamed(&pieces), oracle(&bytes));
        }
    }
}
