//! `line` framing: messages end with `\n`; a `\r` before it belongs to the terminator.
//!
//! ```text
//! +---------------------------+-----------+
//! | payload (no \n)           | \n or \r\n|
//! +---------------------------+-----------+
//! ```
//!
//! Hand-written rather than built on tokio-util's `AnyDelimiterCodec`, which this module
//! wrapped until the async engine's profile (callgrind, 64-byte lines in ping-pong) showed it at
//! about 24% of a line-framed request: it tests each byte against a `Vec` of delimiters, and the
//! `\r\n` terminator it lacks cost a second pass and a `Bytes::slice` (a reference count up and
//! down) on every line. Here one `memchr` finds the newline, the scan position is remembered so
//! a partial line is never scanned twice, and the terminator is cut off before the payload is
//! frozen. The behaviour is `AnyDelimiterCodec`'s, exactly, limits and errors included (the
//! unit tests check it against that codec on random lines, limits and splits).
//! (`LinesCodec` is no use here: it yields `String` and would reject bytes that are not UTF-8.)

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::FrameError;

/// One line: its payload and its terminator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The bytes before the terminator.
    pub payload: Bytes,
    /// `b"\n"`, `b"\r\n"`, or `b""` for a last line cut by EOF.
    pub terminator: &'static [u8],
}

/// Decodes and encodes [`Line`]s, with a maximum line length (terminator excluded).
///
/// A line over the limit is an error as soon as the bytes seen show it: `max_line` bytes and
/// one more that is not a `\r` (which may yet begin a `\r\n`). After that error the decoder
/// drops the bytes up to the next newline, as `AnyDelimiterCodec` does; socketkit's servers
/// close the connection instead.
#[derive(Debug)]
pub struct LineCodec {
    max_line: usize,
    /// Where the search for a newline resumes: the bytes before it hold none.
    scanned: usize,
    /// Set by a line over the limit without a newline in sight: the bytes up to the next newline
    /// are dropped before the next line is decoded.
    discarding: bool,
}

impl LineCodec {
    /// A codec that rejects lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> LineCodec {
        LineCodec {
            max_line,
            scanned: 0,
            discarding: false,
        }
    }

    fn too_long(&self) -> FrameError {
        FrameError::LineTooLong {
            limit: self.max_line,
        }
    }

    /// The most bytes searched for a newline: a line, its `\r` and its `\n`.
    fn window(&self) -> usize {
        self.max_line.saturating_add(2)
    }
}

/// Where the line [`LineCodec::decode_span`] found lies at the front of the buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineSpan {
    /// The payload's length: the line is `buffer[..payload]`.
    pub(crate) payload: usize,
    /// The payload and its terminator: what the caller takes off the buffer once it is done.
    pub(crate) consumed: usize,
    /// As [`Line::terminator`].
    pub(crate) terminator: &'static [u8],
}

impl LineCodec {
    /// [`Decoder::decode`], leaving the line in `src`: a framed session answers it from there
    /// and then advances past it (`consumed`), with no `Bytes` made and dropped for every line
    /// (splitting one off makes the buffer shared: a reference count, and a reclaim at the
    /// next read). The caller must take the `consumed` bytes off before the next call.
    pub(crate) fn decode_span(
        &mut self,
        src: &mut BytesMut,
    ) -> Result<Option<LineSpan>, FrameError> {
        loop {
            let end = self.window().min(src.len());
            let from = self.scanned.min(end);
            let newline = memchr::memchr(b'\n', &src[from..end]).map(|at| from + at);
            if self.discarding {
                self.scanned = 0;
                match newline {
                    Some(at) => {
                        src.advance(at + 1);
                        self.discarding = false;
                    }
                    None => {
                        src.advance(end);
                        if src.is_empty() {
                            return Ok(None);
                        }
                    }
                }
                continue;
            }
            let Some(at) = newline else {
                // Past the limit and a '\r' with no newline yet: the line is too long.
                if src.len() > self.max_line.saturating_add(1) {
                    self.discarding = true;
                    return Err(self.too_long());
                }
                self.scanned = end;
                // One byte past the limit may be the '\r' of a CRLF; any other is over it.
                if src.len() > self.max_line && src.last() != Some(&b'\r') {
                    return Err(self.too_long());
                }
                return Ok(None);
            };
            self.scanned = 0;
            let (payload, terminator): (usize, &'static [u8]) = if at > 0 && src[at - 1] == b'\r' {
                (at - 1, b"\r\n")
            } else {
                (at, b"\n")
            };
            if payload > self.max_line {
                src.advance(at + 1);
                return Err(self.too_long());
            }
            return Ok(Some(LineSpan {
                payload,
                consumed: at + 1,
                terminator,
            }));
        }
    }

    /// [`Decoder::decode_eof`] as [`LineCodec::decode_span`] is `decode`.
    pub(crate) fn decode_eof_span(
        &mut self,
        src: &mut BytesMut,
    ) -> Result<Option<LineSpan>, FrameError> {
        if let Some(span) = self.decode_span(src)? {
            return Ok(Some(span));
        }
        // No newline left: the rest is the last line, whatever it ends with.
        if src.is_empty() {
            return Ok(None);
        }
        self.scanned = 0;
        if src.len() > self.max_line {
            src.clear();
            return Err(self.too_long());
        }
        Ok(Some(LineSpan {
            payload: src.len(),
            consumed: src.len(),
            terminator: b"",
        }))
    }
}

/// A span's line, taken off the front of `src`.
fn take(src: &mut BytesMut, span: LineSpan) -> Line {
    let mut line = src.split_to(span.consumed);
    line.truncate(span.payload);
    Line {
        payload: line.freeze(),
        terminator: span.terminator,
    }
}

impl Decoder for LineCodec {
    type Item = Line;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Line>, FrameError> {
        Ok(self.decode_span(src)?.map(|span| take(src, span)))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Line>, FrameError> {
        Ok(self.decode_eof_span(src)?.map(|span| take(src, span)))
    }
}

impl Encoder<Line> for LineCodec {
    type Error = FrameError;

    fn encode(&mut self, line: Line, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.reserve(line.payload.len() + line.terminator.len());
        dst.extend_from_slice(&line.payload);
        dst.extend_from_slice(line.terminator);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(codec: &mut LineCodec, pieces: &[&[u8]]) -> Result<Vec<Line>, FrameError> {
        let mut buf = BytesMut::new();
        let mut lines = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            while let Some(line) = codec.decode(&mut buf)? {
                lines.push(line);
            }
        }
        while let Some(line) = codec.decode_eof(&mut buf)? {
            lines.push(line);
        }
        Ok(lines)
    }

    #[test]
    fn crlf_and_lf_terminators_are_told_apart() {
        let lines = decode_all(&mut LineCodec::new(64), &[b"a\r\nb\n\nc"]).unwrap();
        let got: Vec<(&[u8], &[u8])> = lines
            .iter()
            .map(|l| (&l.payload[..], l.terminator))
            .collect();
        assert_eq!(
            got,
            [
                (&b"a"[..], &b"\r\n"[..]),
                (b"b", b"\n"),
                (b"", b"\n"),
                (b"c", b"")
            ]
        );
    }

    #[test]
    fn the_limit_and_one_past_it() {
        assert_eq!(
            decode_all(&mut LineCodec::new(4), &[b"abcd\n"])
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            decode_all(&mut LineCodec::new(4), &[b"abcd\r\n"])
                .unwrap()
                .len(),
            1
        );
        assert!(matches!(
            decode_all(&mut LineCodec::new(4), &[b"abcde\n"]),
            Err(FrameError::LineTooLong { limit: 4 })
        ));
        // Without a newline, the error comes as soon as the bytes seen exceed the limit...
        let mut codec = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"abcde"[..]);
        assert!(codec.decode(&mut buf).is_err());
        // ... unless the one extra byte may be the '\r' of a CRLF.
        let mut codec = LineCodec::new(4);
        let mut buf = BytesMut::from(&b"abcd\r"[..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(matches!(
            decode_all(&mut LineCodec::new(4), &[b"abcdef"]),
            Err(FrameError::LineTooLong { .. })
        ));
    }

    /// The codec this module replaced, kept as the reference: tokio-util's
    /// `AnyDelimiterCodec` with room for the `\r` in its limit, and the `\r\n` rule on top.
    struct Reference {
        inner: tokio_util::codec::AnyDelimiterCodec,
        max_line: usize,
    }

    impl Reference {
        fn new(max_line: usize) -> Reference {
            Reference {
                inner: tokio_util::codec::AnyDelimiterCodec::new_with_max_length(
                    b"\n".to_vec(),
                    b"\n".to_vec(),
                    max_line.saturating_add(1),
                ),
                max_line,
            }
        }

        fn line(&self, chunk: Bytes, at_eof: bool) -> Result<Line, FrameError> {
            let (payload, terminator): (Bytes, &'static [u8]) = if at_eof {
                (chunk, b"")
            } else if chunk.last() == Some(&b'\r') {
                (chunk.slice(..chunk.len() - 1), b"\r\n")
            } else {
                (chunk, b"\n")
            };
            if payload.len() > self.max_line {
                return Err(FrameError::LineTooLong {
                    limit: self.max_line,
                });
            }
            Ok(Line {
                payload,
                terminator,
            })
        }

        fn lift(&self, e: tokio_util::codec::AnyDelimiterCodecError) -> FrameError {
            match e {
                tokio_util::codec::AnyDelimiterCodecError::MaxChunkLengthExceeded => {
                    FrameError::LineTooLong {
                        limit: self.max_line,
                    }
                }
                tokio_util::codec::AnyDelimiterCodecError::Io(e) => FrameError::Io(e),
            }
        }
    }

    impl Decoder for Reference {
        type Item = Line;
        type Error = FrameError;

        fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Line>, FrameError> {
            match self.inner.decode(src) {
                Ok(Some(chunk)) => self.line(chunk, false).map(Some),
                Ok(None) if src.len() > self.max_line && src.last() != Some(&b'\r') => {
                    Err(FrameError::LineTooLong {
                        limit: self.max_line,
                    })
                }
                Ok(None) => Ok(None),
                Err(e) => Err(self.lift(e)),
            }
        }

        fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Line>, FrameError> {
            if let Some(line) = self.decode(src)? {
                return Ok(Some(line));
            }
            match self.inner.decode_eof(src) {
                Ok(Some(rest)) => self.line(rest, true).map(Some),
                Ok(None) => Ok(None),
                Err(e) => Err(self.lift(e)),
            }
        }
    }

    /// Everything a decoder says about `pieces` arriving one by one, then EOF: each line, each
    /// "need more", each error, and what stays buffered after each piece. Decoding goes on
    /// after an error (with the next piece), so the states an error leaves are compared too.
    fn transcript<D>(codec: &mut D, pieces: &[Vec<u8>]) -> Vec<String>
    where
        D: Decoder<Item = Line, Error = FrameError>,
    {
        fn said(result: &Result<Option<Line>, FrameError>) -> String {
            match result {
                Ok(Some(line)) => format!("line {:?} {:?}", line.payload, line.terminator),
                Ok(None) => "more".to_string(),
                Err(e) => format!("error {e}"),
            }
        }
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            loop {
                let result = codec.decode(&mut buf);
                out.push(said(&result));
                if !matches!(result, Ok(Some(_))) {
                    break;
                }
            }
            out.push(format!("held {buf:?}"));
        }
        // Bounded: an error that consumes nothing would repeat forever.
        for _ in 0..=pieces.len() + 2 {
            let result = codec.decode_eof(&mut buf);
            out.push(said(&result));
            if matches!(result, Ok(None)) {
                break;
            }
        }
        out.push(format!("held {buf:?}"));
        out
    }

    #[test]
    fn the_reference_transcript_shows_lines_errors_and_what_stays_buffered() {
        let pieces = [b"ab\r\ncdefg".to_vec(), b"h\nij".to_vec()];
        assert_eq!(
            transcript(&mut Reference::new(3), &pieces),
            [
                "line b\"ab\" [13, 10]",
                "error line longer than the limit of 3 bytes",
                "held b\"cdefg\"",
                // The bytes up to the newline are dropped after the error.
                "more",
                "held b\"ij\"",
                "line b\"ij\" []",
                "more",
                "held b\"\"",
            ]
        );
    }

    /// Lines (some over the limit, some with a `\r` inside or at the end, some blank), cut
    /// into random pieces, at random limits.
    fn wire() -> impl Strategy<Value = (usize, Vec<Vec<u8>>)> {
        let byte =
            prop_oneof![4 => Just(b'a'), 1 => Just(b'\r'), 1 => Just(b'\n'), 1 => any::<u8>()];
        (
            prop_oneof![0usize..8, Just(64), Just(usize::MAX)],
            proptest::collection::vec(byte, 0..80),
            proptest::collection::vec(0usize..80, 0..8),
        )
            .prop_map(|(max_line, bytes, mut cuts)| {
                cuts.iter_mut().for_each(|c| *c = (*c).min(bytes.len()));
                cuts.sort_unstable();
                let mut pieces = Vec::new();
                let mut from = 0;
                for cut in cuts.into_iter().chain([bytes.len()]) {
                    pieces.push(bytes[from..cut].to_vec());
                    from = cut;
                }
                (max_line, pieces)
            })
    }

    proptest! {
        #[test]
        fn lines_survive_any_split(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n' && *b != b'\r'), 0..20), 0..6),
            crlf in any::<bool>(),
        ) {
            let terminator: &[u8] = if crlf { b"\r\n" } else { b"\n" };
            let mut wire = Vec::new();
            for p in &payloads {
                wire.extend_from_slice(p);
                wire.extend_from_slice(terminator);
            }
            for cut in 0..=wire.len() {
                let lines = decode_all(&mut LineCodec::new(64), &[&wire[..cut], &wire[cut..]]).unwrap();
                let got: Vec<Vec<u8>> = lines.iter().map(|l| l.payload.to_vec()).collect();
                prop_assert_eq!(&got, &payloads);
                prop_assert!(lines.iter().all(|l| l.terminator == terminator));
            }
        }

        #[test]
        fn the_codec_says_what_any_delimiter_codec_said((max_line, pieces) in wire()) {
            prop_assert_eq!(
                transcript(&mut LineCodec::new(max_line), &pieces),
                transcript(&mut Reference::new(max_line), &pieces)
            );
        }
    }
}
