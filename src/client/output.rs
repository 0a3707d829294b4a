//! Where replies go: the output, raw or one line per reply message when framed.

use std::io::{self, Write};

use bytes::BytesMut;

use super::errors::io_err;
use crate::codec::MessageCodec;
use crate::error::Error;

pub(super) fn write_out(output: &mut dyn Write, bytes: &[u8]) -> Result<(), Error> {
    output
        .write_all(bytes)
        .and_then(|()| output.flush())
        .map_err(output_error)
}

/// Only the framing adapter reports InvalidData: a reply that broke the framing.
fn output_error(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::InvalidData => Error::Protocol(format!("bad reply: {e}")),
        _ => io_err("writing the reply", e),
    }
}

/// Decodes reply messages from the stream and writes each payload on a line of its own.
pub(super) struct FrameOutput<'a> {
    pub(super) output: &'a mut dyn Write,
    pub(super) codec: MessageCodec,
    pub(super) buffer: BytesMut,
    /// The length header's width (length framing), 0 in line framing.
    pub(super) header_bytes: u64,
    /// Bytes received that no whole message has accounted for yet. The codec may have taken a
    /// header out of `buffer` already, so `buffer` alone cannot tell a frame cut short.
    pub(super) pending: u64,
    /// Reply messages decoded.
    pub(super) replies: u64,
}

impl FrameOutput<'_> {
    fn emit(&mut self, at_eof: bool) -> io::Result<()> {
        loop {
            let message = if at_eof {
                self.codec.decode_eof(&mut self.buffer)
            } else {
                self.codec.decode(&mut self.buffer)
            };
            match message.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))? {
                Some(message) => {
                    let framed = message.payload.len() + message.terminator.len();
                    self.pending = self
                        .pending
                        .saturating_sub(framed as u64 + self.header_bytes);
                    self.replies += 1;
                    self.output.write_all(&message.payload)?;
                    self.output.write_all(b"\n")?;
                }
                None => return self.output.flush(),
            }
        }
    }

    /// The exchange ended (`eof`: the server closed). A last line without newline still
    /// counts; half a frame does not, and neither does a close that answered none of the
    /// `messages` sent: both mean the two sides' framings differ.
    pub(super) fn finish(mut self, eof: bool, messages: u64) -> Result<(), Error> {
        if !eof {
            return Ok(()); // --quit-after: the server may still be sending the rest
        }
        self.emit(true).map_err(output_error)?;
        if self.pending > 0 {
            return Err(Error::Protocol(format!(
                "the reply ended inside a message ({} bytes left over; does the server use \
                 the same --framing?)",
                self.pending
            )));
        }
        if self.replies == 0 && messages > 0 {
            return Err(Error::Protocol(format!(
                "the server closed without replying to any of the {messages} messages sent \
                 (does it use the same --framing?)"
            )));
        }
        Ok(())
    }
}

impl Write for FrameOutput<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        self.pending += bytes.len() as u64;
        self.emit(false)?;
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.output.flush()
    }
}
