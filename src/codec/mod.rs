//! Framing: where one message ends and the next begins on a byte stream.
//!
//! TCP is a byte stream: "Hi!" and "Hope you're well" written as two messages may arrive as
//! one, so an application that needs messages carries its own boundaries (the second deck:
//! "TCP needs application-level message boundary, by carrying length in application-level
//! header"). socketkit offers three framings:
//!
//! | framing  | a message is                                  | limit |
//! |----------|-----------------------------------------------|-------|
//! | `raw`    | no boundaries: the service streams bytes      | none  |
//! | `line`   | bytes up to `\n` (or `\r\n`)                  | [`crate::Limits::max_line`] |
//! | `length` | a big-endian length header, then that payload | [`crate::Limits::max_frame`] |
//!
//! The codecs are `tokio_util::codec` decoders and encoders over `BytesMut`: sans-IO, shared by
//! the servers (through [`Service::message`](crate::service::Service::message)), the clients
//! and library users. Limits are checked on the header or on the bytes seen so far, before any
//! memory is reserved for the message.

pub(crate) mod budget;
mod length;
mod line;
pub(crate) mod session;

use std::fmt;
use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

pub use length::{LengthCodec, LengthWidth};
pub use line::{Line, LineCodec};

/// Where messages begin and end on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Framing {
    /// No boundaries: a byte stream (the slides' programs). The default.
    #[default]
    Raw,
    /// Newline-delimited messages; a reply ends with the terminator its request used.
    Line,
    /// A big-endian length header that counts the payload only, then the payload.
    Length(LengthWidth),
}

impl Framing {
    /// The framing's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Framing::Raw => "raw",
            Framing::Line => "line",
            Framing::Length(_) => "length",
        }
    }
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl FromStr for Framing {
    type Err = String;

    /// `raw`, `line`, `length` (u32 header), `length16` or `length32`.
    ///
    /// ```
    /// use socketkit::codec::{Framing, LengthWidth};
    /// assert_eq!("line".parse::<Framing>(), Ok(Framing::Line));
    /// assert_eq!("length".parse::<Framing>(), Ok(Framing::Length(LengthWidth::U32)));
    /// ```
    fn from_str(text: &str) -> Result<Framing, String> {
        match text {
            "raw" => Ok(Framing::Raw),
            "line" => Ok(Framing::Line),
            "length" | "length32" => Ok(Framing::Length(LengthWidth::U32)),
            "length16" => Ok(Framing::Length(LengthWidth::U16)),
            other => Err(format!(
                "unknown framing {other:?} (expected raw, line or length)"
            )),
        }
    }
}

/// A framing error. It ends the connection it happened on, and nothing else.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// A line grew past the limit without a newline.
    #[error("line longer than the limit of {limit} bytes")]
    LineTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// A length header announced a frame larger than the limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLong {
        /// The size the header announced.
        size: u64,
        /// The limit in bytes.
        limit: usize,
    },
    /// A reply does not fit the header width or the frame limit; it is not sent.
    #[error("reply of {size} bytes exceeds the limit of {limit} bytes for one frame")]
    ReplyTooLong {
        /// The reply's size.
        size: usize,
        /// The most one frame can carry.
        limit: usize,
    },
    /// Holding the rest of a message would take the process's buffered input past its budget
    /// ([`crate::Limits::max_buffered`]).
    #[error("the server's buffered input is at its budget of {limit} bytes (--max-buffered)")]
    OverBudget {
        /// The budget in bytes.
        limit: usize,
    },
    /// An I/O error from the codec's plumbing.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// One decoded message and how its reply must end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The payload, without terminator or header.
    pub payload: Bytes,
    /// For `line` framing: the terminator the request used (`\n`, `\r\n`, or none for a last
    /// line cut by EOF), which the reply repeats.
    pub terminator: &'static [u8],
}

/// The codec for a framing other than `raw`, with its limits.
#[derive(Debug)]
pub enum MessageCodec {
    /// `line` framing.
    Line(LineCodec),
    /// `length` framing.
    Length(LengthCodec),
}

impl MessageCodec {
    /// The codec for `framing`, or `None` for `raw` (which has no messages).
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use socketkit::codec::{Framing, MessageCodec};
    ///
    /// let mut codec = MessageCodec::new(Framing::Line, 1024, 1024).unwrap();
    /// let mut input = BytesMut::from(&b"Hi!\nHope you're well\r\n"[..]);
    /// let first = codec.decode(&mut input)?.unwrap();
    /// let second = codec.decode(&mut input)?.unwrap();
    /// assert_eq!(&first.payload[..], b"Hi!");
    /// assert_eq!(second.terminator, b"\r\n");
    ///
    /// let mut out = BytesMut::new();
    /// codec.encode(b"HI!", first.terminator, &mut out)?;
    /// assert_eq!(&out[..], b"HI!\n");
    /// # Ok::<(), socketkit::codec::FrameError>(())
    /// ```
    pub fn new(framing: Framing, max_line: usize, max_frame: usize) -> Option<MessageCodec> {
        match framing {
            Framing::Raw => None,
            Framing::Line => Some(MessageCodec::Line(LineCodec::new(max_line))),
            Framing::Length(width) => {
                Some(MessageCodec::Length(LengthCodec::new(width, max_frame)))
            }
        }
    }

    /// Takes the next whole message off the front of `input`; `Ok(None)` means more bytes are
    /// needed.
    ///
    /// # Errors
    ///
    /// [`FrameError::LineTooLong`] or [`FrameError::FrameTooLong`] when a message exceeds its
    /// limit; the stream cannot be resynchronised after that and should be closed.
    pub fn decode(&mut self, input: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        match self {
            MessageCodec::Line(codec) => Ok(codec.decode(input)?.map(Message::from)),
            MessageCodec::Length(codec) => Ok(codec.decode(input)?.map(|payload| Message {
                payload,
                terminator: b"",
            })),
        }
    }

    /// As [`MessageCodec::decode`], at the end of the stream: a last line without a newline is
    /// a message; a partial length frame is an error.
    ///
    /// # Errors
    ///
    /// As [`MessageCodec::decode`], and an `Io` error for a frame cut short by EOF.
    pub fn decode_eof(&mut self, input: &mut BytesMut) -> Result<Option<Message>, FrameError> {
        match self {
            MessageCodec::Line(codec) => Ok(codec.decode_eof(input)?.map(Message::from)),
            MessageCodec::Length(codec) => Ok(codec.decode_eof(input)?.map(|payload| Message {
                payload,
                terminator: b"",
            })),
        }
    }

    /// Appends `payload` as one message to `out`; `terminator` is the request's (line framing).
    ///
    /// # Errors
    ///
    /// [`FrameError::ReplyTooLong`] when the payload does not fit one frame; nothing is written.
    pub fn encode(
        &mut self,
        payload: &[u8],
        terminator: &'static [u8],
        out: &mut BytesMut,
    ) -> Result<(), FrameError> {
        match self {
            // What `Encoder<Line>` writes, without first copying the payload into a `Line`
            // (an allocation per reply).
            MessageCodec::Line(_) => {
                out.reserve(payload.len() + terminator.len());
                out.extend_from_slice(payload);
                out.extend_from_slice(terminator);
                Ok(())
            }
            MessageCodec::Length(codec) => codec.encode(payload, out),
        }
    }
}

impl From<Line> for Message {
    fn from(line: Line) -> Message {
        Message {
            payload: line.payload,
            terminator: line.terminator,
        }
    }
}
