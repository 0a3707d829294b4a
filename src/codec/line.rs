//! `line` framing: messages end with `\n`; a `\r` before it belongs to the terminator.
//!
//! ```text
//! +---------------------------+-----------+
//! | payload (no \n)           | \n or \r\n|
//! +---------------------------+-----------+
//! ```
//!
//! Built on tokio-util's `AnyDelimiterCodec`, which finds the delimiter without rescanning and
//! enforces the length limit; this module adds what it lacks: the `\r\n` terminator, kept so a
//! reply can end the way its request did. (`LinesCodec` is no use here: it yields `String` and
//! would reject bytes that are not UTF-8.)

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{AnyDelimiterCodec, AnyDelimiterCodecError, Decoder, Encoder};

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
#[derive(Debug)]
pub struct LineCodec {
    inner: AnyDelimiterCodec,
    max_line: usize,
}

impl LineCodec {
    /// A codec that rejects lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> LineCodec {
        LineCodec {
            // +1: the '\r' of a CRLF line is stripped after the search.
            inner: AnyDelimiterCodec::new_with_max_length(
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

    fn lift(&self, e: AnyDelimiterCodecError) -> FrameError {
        match e {
            AnyDelimiterCodecError::MaxChunkLengthExceeded => FrameError::LineTooLong {
                limit: self.max_line,
            },
            AnyDelimiterCodecError::Io(e) => FrameError::Io(e),
        }
    }
}

impl Decoder for LineCodec {
    type Item = Line;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Line>, FrameError> {
        match self.inner.decode(src) {
            Ok(Some(chunk)) => self.line(chunk, false).map(Some),
            // The inner limit leaves room for a '\r'; any other byte past the limit is over it.
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
        // No newline left: the inner codec's own decode_eof hands over the rest (and resets
        // its scan position, which taking the bytes behind its back would not).
        match self.inner.decode_eof(src) {
            Ok(Some(rest)) => self.line(rest, true).map(Some),
            Ok(None) => Ok(None),
            Err(e) => Err(self.lift(e)),
        }
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
    }
}
