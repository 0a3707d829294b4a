//! The uppercase service of the slides: the reply is the request in upper case.
//!
//! Python's `str.upper()` applies Unicode's full case mapping (SpecialCasing included), so
//! `straße` becomes `STRASSE` and one character may grow to three (`ΐ` becomes `Ι` and two combining accents). Rust's
//! `char::to_uppercase` applies the same mapping, so it is the oracle here. The slides' server
//! calls `.decode()` and would raise on bytes that are not UTF-8; socketkit passes such bytes
//! through unchanged instead, so nothing is ever dropped or replaced.
//!
//! Differences from Python come only from the Unicode version each was built with: characters
//! assigned after the Python's Unicode version (Python 3.11 knows Unicode 14.0) are upper-cased
//! by socketkit and left alone by that Python. The test suite compares every character both know.

use bytes::BytesMut;

use super::{Context, Next, Service, StreamSession};

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
        self.pending.extend_from_slice(&input[used..]);
        Next::Read
    }

    fn on_eof(&mut self, out: &mut BytesMut) -> Next {
        out.extend_from_slice(&self.pending); // still cut off at EOF: not UTF-8, pass it through
        self.pending.clear();
        Next::Close
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
    out.extend_from_slice(&input[used..]);
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
    out.reserve(input.len());
    // ASCII fast path: the common case is one run of ASCII for the whole read.
    let ascii = ascii_prefix_len(input);
    push_ascii_upper(&input[..ascii], out);
    if ascii == input.len() {
        return ascii;
    }
    let mut used = ascii;
    for chunk in input[ascii..].utf8_chunks() {
        push_str_upper(chunk.valid(), out);
        used += chunk.valid().len();
        let invalid = chunk.invalid();
        if invalid.is_empty() {
            continue;
        }
        let at_end = used + invalid.len() == input.len();
        if at_end && std::str::from_utf8(invalid).is_err_and(|e| e.error_len().is_none()) {
            break; // an incomplete character: the rest may arrive in the next read
        }
        out.extend_from_slice(invalid);
        used += invalid.len();
    }
    used
}

fn push_ascii_upper(ascii: &[u8], out: &mut BytesMut) {
    let start = out.len();
    out.extend_from_slice(ascii);
    out[start..].make_ascii_uppercase();
}

fn push_str_upper(s: &str, out: &mut BytesMut) {
    // Output is staged on the stack: one append per 256 bytes, not one per character or run.
    let mut stage = [0u8; 256];
    let mut rest = s;
    while !rest.is_empty() {
        let ascii = ascii_prefix_len(rest.as_bytes());
        push_ascii_upper(&rest.as_bytes()[..ascii], out);
        rest = &rest[ascii..];
        let mut staged = 0;
        let mut end = rest.len();
        let mut in_ascii_run = false;
        for (at, c) in rest.char_indices() {
            if staged + MAX_UPPER_UTF8 > stage.len() {
                out.extend_from_slice(&stage[..staged]);
                staged = 0;
            }
            if c.is_ascii() {
                // Where an ASCII run starts, a long one goes back to the bulk path; the few
                // letters between accented ones (French, German) are cheaper staged here.
                let run_starts = !in_ascii_run;
                in_ascii_run = true;
                if run_starts
                    && rest.as_bytes()[at..]
                        .get(..LONG_ASCII_RUN)
                        .is_some_and(<[u8]>::is_ascii)
                {
                    end = at;
                    break;
                }
                stage[staged] = (c as u8).to_ascii_uppercase();
                staged += 1;
                continue;
            }
            in_ascii_run = false;
            if is_caseless(c) {
                staged += c.encode_utf8(&mut stage[staged..]).len();
            } else {
                for upper in c.to_uppercase() {
                    staged += upper.encode_utf8(&mut stage[staged..]).len();
                }
            }
        }
        out.extend_from_slice(&stage[..staged]);
        rest = &rest[end..];
    }
}

/// An ASCII run this long is worth leaving the per-character loop for.
const LONG_ASCII_RUN: usize = 32;

/// The most UTF-8 one character's upper case takes: three characters of four bytes.
const MAX_UPPER_UTF8: usize = 12;

/// Kana, CJK ideographs, Yi, Lisu, Vai and Hangul have no case: skip the table search for them
/// (it made CJK text 3x slower than copying; the test below checks every character of these
/// ranges against `char::to_uppercase`).
fn is_caseless(c: char) -> bool {
    matches!(c, '\u{3040}'..='\u{A63F}' | '\u{AC00}'..='\u{D7FF}')
}

fn ascii_prefix_len(input: &[u8]) -> usize {
    // `<[u8]>::is_ascii` checks a word at a time; a byte-at-a-time `position` cost 10x on
    // all-ASCII reads (criterion, benches/upper.rs).
    const BLOCK: usize = 64;
    let mut len = 0;
    for block in input.chunks(BLOCK) {
        if block.is_ascii() {
            len += block.len();
        } else {
            return len
                + block
                    .iter()
                    .position(|b| !b.is_ascii())
                    .unwrap_or(block.len());
        }
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
        let ranges = ['\u{3040}'..='\u{A63F}', '\u{AC00}'..='\u{D7FF}'];
        for c in ranges.into_iter().flatten() {
            assert!(is_caseless(c));
            assert!(c.to_uppercase().eq([c]), "{c:?} has an upper case");
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
