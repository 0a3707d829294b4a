//! A request's input buffer and the bounded reads that take messages off it with the codecs:
//! [`LineCodec`] for `read_line`, [`LengthCodec`] for `read_frame`. The raw reader reads from
//! the same buffer, so it sees whatever a bounded read left there.

use std::future::Future;
use std::io::{self, Read};
use std::pin::{Pin, pin};
use std::task::{Context as TaskContext, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncReadExt, ReadBuf};
use tokio_util::codec::Decoder;

use crate::codec::{FrameError, LengthCodec, LengthWidth, Line, LineCodec};

/// The most one read from the socket asks for: the size of std's and tokio's `BufReader`
/// buffers, which the request's reader had before. A message bigger than this makes the
/// buffer grow with its bytes, never by what a header announced.
pub(crate) const READ_BYTES: usize = 8 * 1024;

/// One message a bounded read waits for, decoded off the input buffer by a codec.
pub(crate) trait Bounded {
    /// What the read returns.
    type Output;
    /// The message, once `input` holds all of it; fails once it is over its limit.
    fn decode(&mut self, input: &mut BytesMut) -> io::Result<Option<Self::Output>>;
    /// The stream ended: what is left in `input` is all there is.
    fn decode_eof(&mut self, input: &mut BytesMut) -> io::Result<Self::Output>;
}

/// A line appended to the caller's `line`, terminator included; the output is its length.
pub(crate) struct LineRead<'l> {
    codec: LineCodec,
    line: &'l mut Vec<u8>,
}

impl<'l> LineRead<'l> {
    pub(crate) fn new(line: &'l mut Vec<u8>, max_line: usize) -> LineRead<'l> {
        LineRead {
            codec: LineCodec::new(max_line),
            line,
        }
    }

    fn append(&mut self, line: Line) -> usize {
        self.line.extend_from_slice(&line.payload);
        self.line.extend_from_slice(line.terminator);
        line.payload.len() + line.terminator.len()
    }
}

impl Bounded for LineRead<'_> {
    type Output = usize;

    fn decode(&mut self, input: &mut BytesMut) -> io::Result<Option<usize>> {
        let line = self.codec.decode(input).map_err(invalid)?;
        Ok(line.map(|line| self.append(line)))
    }

    fn decode_eof(&mut self, input: &mut BytesMut) -> io::Result<usize> {
        let line = self.codec.decode_eof(input).map_err(invalid)?;
        Ok(line.map_or(0, |line| self.append(line)))
    }
}

/// A length-delimited frame's payload; `None` when the stream ends before a header.
pub(crate) struct FrameRead(LengthCodec);

impl FrameRead {
    pub(crate) fn new(width: LengthWidth, max_frame: usize) -> FrameRead {
        FrameRead(LengthCodec::new(width, max_frame))
    }
}

impl Bounded for FrameRead {
    type Output = Option<Vec<u8>>;

    fn decode(&mut self, input: &mut BytesMut) -> io::Result<Option<Option<Vec<u8>>>> {
        let frame = self.0.decode(input).map_err(invalid)?;
        Ok(frame.map(|frame| Some(detach(input, frame))))
    }

    fn decode_eof(&mut self, input: &mut BytesMut) -> io::Result<Option<Vec<u8>>> {
        match self.0.decode_eof(input) {
            Ok(frame) => Ok(frame.map(|frame| detach(input, frame))),
            // The codec's word for bytes left over at the end: a frame cut short.
            Err(FrameError::Io(_)) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the stream ended inside a frame",
            )),
            Err(e) => Err(invalid(e)),
        }
    }
}

/// The frame as the handler's `Vec`. A frame bigger than a read made the input grow for it:
/// the bytes after it (less than a read) move to a buffer of their own, so the frame's memory
/// passes to the `Vec` and the input does not keep the frame's size for the rest of the
/// connection.
fn detach(input: &mut BytesMut, frame: Bytes) -> Vec<u8> {
    if frame.len() > READ_BYTES {
        *input = BytesMut::from(&input[..]);
    }
    Vec::from(frame)
}

/// A message over its limit: `InvalidData`, with the codec's error (which names the limit) as
/// the source.
fn invalid(e: FrameError) -> io::Error {
    match e {
        FrameError::Io(e) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, e),
    }
}

/// Appends one read of at most [`READ_BYTES`] from `socket` to `input`; returns its size, 0 at
/// the end of the stream.
pub(crate) fn fill(input: &mut BytesMut, socket: &mut dyn Read) -> io::Result<usize> {
    let len = input.len();
    input.resize(len + READ_BYTES, 0);
    let read = socket.read(&mut input[len..]);
    input.truncate(len + *read.as_ref().unwrap_or(&0));
    read
}

/// The reading half of an [`AsyncStreamRequest`](super::AsyncStreamRequest): the socket and
/// the input buffer that its bounded reads and its raw reader share.
pub(crate) struct AsyncInput<R> {
    socket: R,
    pub(crate) input: BytesMut,
}

impl<R: AsyncRead + Unpin> AsyncInput<R> {
    pub(crate) fn new(socket: R) -> AsyncInput<R> {
        AsyncInput {
            socket,
            input: BytesMut::new(),
        }
    }

    /// [`fill`], awaited.
    pub(crate) async fn fill(&mut self) -> io::Result<usize> {
        self.input.reserve(READ_BYTES);
        self.socket.read_buf(&mut self.input).await
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for AsyncInput<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.input.is_empty() && buf.remaining() >= READ_BYTES {
            return Pin::new(&mut self.socket).poll_read(cx, buf);
        }
        let available = std::task::ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncRead + Unpin> AsyncBufRead for AsyncInput<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.input.is_empty() {
            // `fill`'s future holds nothing between polls, so a fresh one per poll is the same.
            std::task::ready!(pin!(this.fill()).poll(cx))?;
        }
        Poll::Ready(Ok(&this.input[..]))
    }

    fn consume(mut self: Pin<&mut Self>, amount: usize) {
        self.input.advance(amount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs `message` over `input` arriving in reads of at most `piece` bytes, as a request
    /// does; returns the output (or error) and the input buffer then.
    fn drive<B: Bounded>(
        mut message: B,
        input: &[u8],
        piece: usize,
    ) -> (io::Result<B::Output>, BytesMut) {
        let mut buf = BytesMut::new();
        let mut at = 0;
        loop {
            match message.decode(&mut buf) {
                Ok(Some(output)) => return (Ok(output), buf),
                Ok(None) => {}
                Err(e) => return (Err(e), buf),
            }
            let end = (at + piece).min(input.len());
            let n = fill(&mut buf, &mut &input[at..end]).unwrap();
            at += n;
            if n == 0 {
                return (message.decode_eof(&mut buf), buf);
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
            let (result, rest) = drive(LineRead::new(&mut line, 8), &input, piece);
            if payload <= 8 {
                let whole = payload + 1 + usize::from(crlf);
                prop_assert_eq!(result.unwrap(), whole);
                prop_assert_eq!(&line[4..], &input[..whole]);
                // What the line did not use stays for the next read (and the raw reader).
                prop_assert!(input[whole..].starts_with(&rest));
            } else {
                prop_assert!(line_too_long(&result.unwrap_err()));
                prop_assert_eq!(&line[..], b"kept");
            }
        }

        #[test]
        fn a_line_that_never_ends_costs_at_most_the_limit_and_a_read(piece in 1usize..64) {
            let input = vec![b'x'; 1000];
            let mut line = Vec::new();
            let (result, rest) = drive(LineRead::new(&mut line, 8), &input, piece);
            prop_assert!(line_too_long(&result.unwrap_err()));
            prop_assert!(rest.len() <= 8 + 1 + piece, "{} bytes held", rest.len());
            prop_assert!(line.is_empty());
        }

        #[test]
        fn a_frame_is_taken_whole_at_any_split(size in 0usize..40, piece in 1usize..50) {
            let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let mut input = (size as u16).to_be_bytes().to_vec();
            input.extend_from_slice(&payload);
            input.extend_from_slice(b"more");
            let (result, rest) = drive(FrameRead::new(LengthWidth::U16, 40), &input, piece);
            prop_assert_eq!(result.unwrap(), Some(payload));
            prop_assert!(b"more".starts_with(&rest));
        }
    }

    #[test]
    fn the_last_line_without_newline_counts_and_an_empty_stream_is_zero() {
        let mut line = Vec::new();
        let (result, _) = drive(LineRead::new(&mut line, 8), b"12345678", 3);
        assert_eq!(result.unwrap(), 8);
        assert_eq!(line, b"12345678");
        let mut line = Vec::new();
        let (result, _) = drive(LineRead::new(&mut line, 8), b"123456789", 3);
        assert!(line_too_long(&result.unwrap_err()));
        let (result, _) = drive(LineRead::new(&mut Vec::new(), 8), b"", 3);
        assert_eq!(result.unwrap(), 0);
    }

    #[test]
    fn a_frame_header_over_the_limit_is_refused_before_the_payload() {
        // A 4 GiB announcement, then bytes that must not be taken.
        let mut input = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3][..]);
        let capacity = input.capacity();
        let error = FrameRead::new(LengthWidth::U32, 1024)
            .decode(&mut input)
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            error.to_string(),
            "frame of 4294967295 bytes exceeds the limit of 1024 bytes"
        );
        assert_eq!(input.capacity(), capacity, "nothing reserved for the frame");
    }

    #[test]
    fn frame_memory_follows_the_bytes_received() {
        let mut frame = FrameRead::new(LengthWidth::U32, 1 << 20);
        let mut input = BytesMut::new();
        fill(&mut input, &mut &(1u32 << 20).to_be_bytes()[..]).unwrap();
        assert!(frame.decode(&mut input).unwrap().is_none());
        assert!(input.capacity() <= 2 * READ_BYTES, "{}", input.capacity());
        let mut received = 0;
        let payload = vec![7; 60_000];
        let output = loop {
            if let Some(output) = frame.decode(&mut input).unwrap() {
                break output;
            }
            let chunk = &payload[..60_000.min((1 << 20) - received)];
            received += fill(&mut input, &mut &chunk[..]).unwrap();
            assert!(input.capacity() <= 2 * (received + 2 * READ_BYTES));
        };
        assert_eq!(output.unwrap().len(), 1 << 20);
        assert!(
            input.capacity() <= READ_BYTES,
            "the input kept the frame's memory"
        );
    }

    #[test]
    fn a_stream_that_ends_inside_a_frame_is_an_error_and_before_one_is_none() {
        let (result, _) = drive(FrameRead::new(LengthWidth::U32, 64), &[0, 0, 0, 9, 1], 2);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let (result, _) = drive(FrameRead::new(LengthWidth::U32, 64), &[], 2);
        assert!(matches!(result, Ok(None)));
        let (result, _) = drive(FrameRead::new(LengthWidth::U32, 64), &[0, 0], 2);
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
