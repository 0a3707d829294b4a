//! Bounded message reads, free of I/O: a line of at most `max_line` bytes, a length-delimited
//! frame checked against `max_frame` before its payload is kept. [`StreamRequest`] and
//! [`AsyncStreamRequest`] drive the same scans over their buffered readers.
//!
//! [`StreamRequest`]: super::StreamRequest
//! [`AsyncStreamRequest`]: super::AsyncStreamRequest

use std::io;

use crate::codec::{FrameError, LengthWidth};

/// One message being read, a buffer at a time, free of I/O: the blocking and async requests
/// drive the same scans.
pub(crate) trait Scan {
    /// What the read returns.
    type Output;
    /// The message, once whole (asked before every read, so an empty frame needs none).
    fn whole(&mut self) -> Option<Self::Output>;
    /// Takes what belongs to the message from the front of `available` (never empty) and
    /// returns how many bytes that was; fails once the message is over its limit.
    fn take(&mut self, available: &[u8]) -> io::Result<usize>;
    /// The stream ended before the message was whole.
    fn eof(&mut self) -> io::Result<Self::Output>;
}

/// A line of at most `max_line` bytes before its terminator: never more than `max_line + 2`
/// bytes (a `\r\n` line) are taken, so a line that never ends costs no more than that.
pub(crate) struct LineScan<'b> {
    line: &'b mut Vec<u8>,
    max_line: usize,
    taken: usize,
    done: bool,
}

impl<'b> LineScan<'b> {
    pub(crate) fn new(line: &'b mut Vec<u8>, max_line: usize) -> LineScan<'b> {
        LineScan {
            line,
            max_line,
            taken: 0,
            done: false,
        }
    }

    fn too_long(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            FrameError::LineTooLong {
                limit: self.max_line,
            },
        )
    }

    /// Fails when the line taken has more than `max_line` bytes before its terminator.
    fn check(&self, terminator: usize) -> io::Result<usize> {
        if self.taken - terminator > self.max_line {
            return Err(self.too_long());
        }
        Ok(self.taken)
    }
}

impl Scan for LineScan<'_> {
    type Output = usize;

    fn whole(&mut self) -> Option<usize> {
        self.done.then_some(self.taken)
    }

    fn take(&mut self, available: &[u8]) -> io::Result<usize> {
        let cap = self.max_line.saturating_add(2);
        let window = &available[..available.len().min(cap - self.taken)];
        let (n, done) = match window.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (window.len(), false),
        };
        self.line.extend_from_slice(&window[..n]);
        self.taken += n;
        if done {
            let crlf = self.taken >= 2 && self.line.ends_with(b"\r\n");
            self.check(if crlf { 2 } else { 1 })?;
            self.done = true;
        } else if self.taken == cap {
            return Err(self.too_long());
        }
        Ok(n)
    }

    fn eof(&mut self) -> io::Result<usize> {
        self.check(0)
    }
}

/// A length-delimited frame: the header is checked against the limit before a byte of the
/// payload is kept, and the payload's memory grows with the bytes received, never past the
/// size announced (at most twice what has arrived).
pub(crate) struct FrameScan {
    width: usize,
    limit: usize,
    header: [u8; 4],
    header_taken: usize,
    size: Option<usize>,
    payload: Vec<u8>,
}

impl FrameScan {
    pub(crate) fn new(width: LengthWidth, max_frame: usize) -> FrameScan {
        FrameScan {
            width: width.bytes(),
            limit: max_frame.min(usize::try_from(width.max_payload()).unwrap_or(usize::MAX)),
            header: [0; 4],
            header_taken: 0,
            size: None,
            payload: Vec::new(),
        }
    }
}

impl Scan for FrameScan {
    type Output = Option<Vec<u8>>;

    fn whole(&mut self) -> Option<Option<Vec<u8>>> {
        (self.size == Some(self.payload.len())).then(|| Some(std::mem::take(&mut self.payload)))
    }

    fn take(&mut self, available: &[u8]) -> io::Result<usize> {
        let Some(size) = self.size else {
            let n = (self.width - self.header_taken).min(available.len());
            self.header[self.header_taken..self.header_taken + n].copy_from_slice(&available[..n]);
            self.header_taken += n;
            if self.header_taken == self.width {
                let announced = self.header[..self.width]
                    .iter()
                    .fold(0u64, |size, &b| (size << 8) | u64::from(b));
                if announced > self.limit as u64 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        FrameError::FrameTooLong {
                            size: announced,
                            limit: self.limit,
                        },
                    ));
                }
                self.size = Some(announced as usize); // within the limit, a usize
            }
            return Ok(n);
        };
        let n = (size - self.payload.len()).min(available.len());
        let needed = self.payload.len() + n;
        if needed > self.payload.capacity() {
            let grown = needed.max(self.payload.capacity() * 2).min(size);
            self.payload.reserve_exact(grown - self.payload.len());
        }
        self.payload.extend_from_slice(&available[..n]);
        Ok(n)
    }

    fn eof(&mut self) -> io::Result<Option<Vec<u8>>> {
        if self.header_taken == 0 {
            return Ok(None);
        }
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the stream ended inside a frame",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Drives `scan` over `input` cut into pieces of `piece` bytes, as a reader's buffer
    /// would hand them over; returns the output (or error) and the bytes taken.
    fn drive<S: Scan>(mut scan: S, input: &[u8], piece: usize) -> (io::Result<S::Output>, usize) {
        let mut at = 0;
        loop {
            if let Some(output) = scan.whole() {
                return (Ok(output), at);
            }
            if at == input.len() {
                return (scan.eof(), at);
            }
            let end = (at + piece).min(input.len());
            match scan.take(&input[at..end]) {
                Ok(n) => at += n,
                Err(e) => return (Err(e), at),
            }
        }
    }

    fn line_too_long(e: &io::Error) -> bool {
        e.kind() == io::ErrorKind::InvalidData
            && matches!(
                e.get_ref().and_then(|e| e.downcast_ref::<FrameError>()),
                Some(FrameError::LineTooLong { limit: 8 })
            )
    }

    proptest! {
        #[test]
        fn a_line_is_taken_whole_up_to_the_limit_and_refused_past_it(
            payload in 0usize..12, crlf: bool, piece in 1usize..16,
        ) {
            let mut input = vec![b'x'; payload];
            input.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            input.extend_from_slice(b"next\n");
            let mut line = b"kept".to_vec();
            let (result, taken) = drive(LineScan::new(&mut line, 8), &input, piece);
            if payload <= 8 {
                let whole = payload + 1 + usize::from(crlf);
                prop_assert_eq!(result.unwrap(), whole);
                prop_assert_eq!(taken, whole);
                prop_assert_eq!(&line[4..], &input[..whole]);
            } else {
                prop_assert!(line_too_long(&result.unwrap_err()));
                prop_assert!(taken <= 8 + 2, "took {} bytes", taken);
            }
        }

        #[test]
        fn a_line_that_never_ends_costs_at_most_the_limit(piece in 1usize..64) {
            let input = vec![b'x'; 1000];
            let mut line = Vec::new();
            let (result, _) = drive(LineScan::new(&mut line, 8), &input, piece);
            prop_assert!(line_too_long(&result.unwrap_err()));
            prop_assert_eq!(line.len(), 8 + 2);
        }

        #[test]
        fn a_frame_is_taken_whole_at_any_split(size in 0usize..40, piece in 1usize..50) {
            let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let mut input = (size as u16).to_be_bytes().to_vec();
            input.extend_from_slice(&payload);
            input.extend_from_slice(b"more");
            let (result, taken) = drive(FrameScan::new(LengthWidth::U16, 40), &input, piece);
            prop_assert_eq!(result.unwrap(), Some(payload));
            prop_assert_eq!(taken, 2 + size);
        }
    }

    #[test]
    fn the_last_line_without_newline_counts_and_an_empty_stream_is_zero() {
        let mut line = Vec::new();
        assert_eq!(
            drive(LineScan::new(&mut line, 8), b"12345678", 3)
                .0
                .unwrap(),
            8
        );
        assert_eq!(line, b"12345678");
        let mut line = Vec::new();
        let (result, _) = drive(LineScan::new(&mut line, 8), b"123456789", 3);
        assert!(line_too_long(&result.unwrap_err()));
        assert_eq!(
            drive(LineScan::new(&mut Vec::new(), 8), b"", 3).0.unwrap(),
            0
        );
    }

    #[test]
    fn a_frame_header_over_the_limit_is_refused_before_the_payload() {
        // A 4 GiB announcement, then bytes that must not be taken.
        let mut scan = FrameScan::new(LengthWidth::U32, 1024);
        let error = scan.take(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            error.to_string(),
            "frame of 4294967295 bytes exceeds the limit of 1024 bytes"
        );
        assert_eq!(scan.payload.capacity(), 0);
    }

    #[test]
    fn frame_memory_follows_the_bytes_received() {
        let mut scan = FrameScan::new(LengthWidth::U32, 1 << 20);
        assert_eq!(scan.take(&(1u32 << 20).to_be_bytes()).unwrap(), 4);
        assert_eq!(
            scan.payload.capacity(),
            0,
            "nothing reserved for the header"
        );
        assert_eq!(scan.take(&[7; 1000]).unwrap(), 1000);
        assert!(
            scan.payload.capacity() < 4096,
            "{}",
            scan.payload.capacity()
        );
        let mut received = 1000;
        while received < 1 << 20 {
            received += scan
                .take(&[7; 60_000][..60_000.min((1 << 20) - received)])
                .unwrap();
            assert!(scan.payload.capacity() <= 2 * received.max(1000));
            assert!(scan.payload.capacity() <= 1 << 20);
        }
        assert_eq!(scan.whole().unwrap().unwrap().len(), 1 << 20);
    }

    #[test]
    fn a_stream_that_ends_inside_a_frame_is_an_error_and_before_one_is_none() {
        let (result, _) = drive(FrameScan::new(LengthWidth::U32, 64), &[0, 0, 0, 9, 1], 2);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert!(matches!(
            drive(FrameScan::new(LengthWidth::U32, 64), &[], 2).0,
            Ok(None)
        ));
        let (result, _) = drive(FrameScan::new(LengthWidth::U32, 64), &[0, 0], 2);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
