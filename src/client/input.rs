//! What clients send: a whole input as one datagram, or input lines as framed messages (the
//! stdin framing of `--framing line|length`), never buffering more than one message's limit.

use std::io::{self, BufRead, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;

use super::errors::io_err;
use crate::codec::MessageCodec;
use crate::error::Error;
use crate::limits::MAX_DATAGRAM_BYTES;

/// The whole input as one datagram: more than one datagram holds is refused, not buffered.
pub(super) fn read_datagram(input: impl Read) -> Result<Vec<u8>, Error> {
    read_message(input, MAX_DATAGRAM_BYTES, "datagram")
}

/// The whole input as one message of at most `limit` bytes (a `noun`: datagram, record).
pub(super) fn read_message(input: impl Read, limit: usize, noun: &str) -> Result<Vec<u8>, Error> {
    let mut message = Vec::new();
    input
        .take(limit as u64 + 1)
        .read_to_end(&mut message)
        .map_err(|e| io_err("reading the message", e))?;
    if message.len() > limit {
        return Err(Error::Config(format!(
            "the message is larger than one {noun} ({limit} bytes at most)"
        )));
    }
    Ok(message)
}

/// The next input line, its `\n` or `\r\n` taken off, as one message of at most `limit` bytes
/// (a `noun`); `None` at the end of the input. A longer line is refused, not buffered whole.
pub(super) fn read_message_line(
    input: &mut impl BufRead,
    limit: usize,
    noun: &str,
) -> Result<Option<Vec<u8>>, Error> {
    let mut line = Vec::new();
    let read = read_line_at_most(input, limit.saturating_add(2), &mut line)
        .map_err(|e| io_err("reading input", e))?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    if line.len() > limit {
        return Err(Error::Config(format!(
            "an input line is larger than one {noun} ({limit} bytes at most)"
        )));
    }
    Ok(Some(line))
}

/// Reads lines from the input and hands out each one as a framed message.
pub(super) struct FrameInput {
    pub(super) input: Box<dyn BufRead + Send>,
    pub(super) codec: MessageCodec,
    /// The longest line one message carries (terminator excluded) and the limit's name.
    pub(super) max_line: (usize, &'static str),
    pub(super) pending: BytesMut,
    /// Messages encoded so far.
    pub(super) messages: Arc<AtomicU64>,
}

impl Read for FrameInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pending.is_empty() {
            let (max, limit) = self.max_line;
            let mut line = Vec::new();
            // Never more than the limit and a "\r\n": a line that never ends is refused, not
            // buffered whole.
            if read_line_at_most(&mut self.input, max.saturating_add(2), &mut line)? == 0 {
                return Ok(0);
            }
            let terminator: &'static [u8] = if line.ends_with(b"\r\n") {
                line.truncate(line.len() - 2);
                b"\r\n"
            } else {
                if line.last() == Some(&b'\n') {
                    line.pop();
                }
                b"\n"
            };
            if line.len() > max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("an input line is longer than the {limit} limit of {max} bytes"),
                ));
            }
            self.codec
                .encode(&line, terminator, &mut self.pending)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            self.messages.fetch_add(1, Ordering::SeqCst);
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        Ok(n)
    }
}

/// Appends one line of `input`, `\n` included, to `line`, but no more than `max` bytes: a
/// longer line stops there, without its `\n`. Returns the bytes appended, 0 at the end.
pub(super) fn read_line_at_most(
    input: &mut dyn BufRead,
    max: usize,
    line: &mut Vec<u8>,
) -> io::Result<usize> {
    input.take(max as u64).read_until(b'\n', line)
}
