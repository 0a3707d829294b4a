//! A framed stream session: a service's message function plus a codec is itself a
//! [`StreamSession`], so engines only ever drive sessions.

use std::sync::Arc;

use bytes::BytesMut;

use super::{FrameError, MessageCodec};
use crate::service::{Context, DynService, Next, StreamSession};

/// Decodes whole messages from the stream, answers each with [`Service::message`], and
/// encodes the replies. Buffered input never exceeds the frame (or line) limit plus one read.
///
/// [`Service::message`]: crate::service::Service::message
pub(crate) struct FramedSession {
    service: Arc<dyn DynService>,
    ctx: Context,
    codec: MessageCodec,
    input: BytesMut,
    reply: BytesMut,
}

impl FramedSession {
    pub(crate) fn new(service: Arc<dyn DynService>, ctx: Context, codec: MessageCodec) -> Self {
        FramedSession {
            service,
            ctx,
            codec,
            input: BytesMut::new(),
            reply: BytesMut::new(),
        }
    }

    /// Answers every whole message buffered so far.
    fn answer(&mut self, out: &mut BytesMut, at_eof: bool) -> Result<(), FrameError> {
        loop {
            let message = if at_eof {
                self.codec.decode_eof(&mut self.input)?
            } else {
                self.codec.decode(&mut self.input)?
            };
            let Some(message) = message else {
                return Ok(());
            };
            self.reply.clear();
            if self
                .service
                .message(&self.ctx, &message.payload, &mut self.reply)
            {
                self.codec.encode(&self.reply, message.terminator, out)?;
            }
        }
    }

    fn fail(&mut self, error: FrameError) -> Next {
        // The stream cannot be resynchronised after a bad frame: this connection ends here.
        tracing::warn!(peer = %self.ctx.peer, "closing the connection: {error}");
        self.input = BytesMut::new();
        Next::Close
    }
}

impl StreamSession for FramedSession {
    fn on_data(&mut self, input: &[u8], out: &mut BytesMut) -> Next {
        self.input.extend_from_slice(input);
        match self.answer(out, false) {
            Ok(()) => Next::Read,
            Err(e) => self.fail(e),
        }
    }

    fn on_eof(&mut self, out: &mut BytesMut) -> Next {
        match self.answer(out, true) {
            Ok(()) => Next::Close,
            Err(e) => self.fail(e),
        }
    }

    /// Whatever is left buffered after answering is the start of the next message.
    fn in_message(&self) -> bool {
        !self.input.is_empty()
    }

    /// Every whole message has been answered when nothing is left buffered.
    fn between_messages(&self) -> bool {
        self.input.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Framing, LengthWidth};
    use crate::endpoint::Transport;
    use crate::service::Upper;

    fn session(framing: Framing, limit: usize) -> FramedSession {
        let ctx = Context::new(Transport::Tcp, "127.0.0.1:1".parse().unwrap());
        FramedSession::new(
            Arc::new(Upper),
            ctx,
            MessageCodec::new(framing, limit, limit).unwrap(),
        )
    }

    #[test]
    fn upper_in_line_framing_keeps_each_terminator() {
        let mut s = session(Framing::Line, 64);
        let mut out = BytesMut::new();
        assert_eq!(
            s.on_data(b"Hi!\nHope you're well\r\nlast", &mut out),
            Next::Read
        );
        assert_eq!(&out[..], b"HI!\nHOPE YOU'RE WELL\r\n");
        assert_eq!(s.on_eof(&mut out), Next::Close);
        assert_eq!(&out[..], b"HI!\nHOPE YOU'RE WELL\r\nLAST");
    }

    #[test]
    fn a_length_reply_header_carries_the_replys_own_length() {
        let mut s = session(Framing::Length(LengthWidth::U32), 64);
        let mut out = BytesMut::new();
        s.on_data(b"\x00\x00\x00\x02\xc3\x9f", &mut out); // ß
        assert_eq!(&out[..], b"\x00\x00\x00\x02SS");
        let mut s = session(Framing::Length(LengthWidth::U32), 64);
        let mut out = BytesMut::new();
        s.on_data(b"\x00\x00\x00\x02\xce\x90", &mut out); // ΐ grows to 6 bytes
        assert_eq!(&out[..4], b"\x00\x00\x00\x06");
    }

    #[test]
    fn a_reply_over_the_frame_limit_closes_without_sending() {
        let mut s = session(Framing::Length(LengthWidth::U32), 4);
        let mut out = BytesMut::new();
        // 4 bytes in (two ΐ), 12 out: over the limit of 4.
        assert_eq!(
            s.on_data(b"\x00\x00\x00\x04\xce\x90\xce\x90", &mut out),
            Next::Close
        );
        assert!(out.is_empty());
    }

    #[test]
    fn a_partial_message_is_in_message_until_it_is_answered() {
        let mut s = session(Framing::Line, 64);
        let mut out = BytesMut::new();
        assert!(!s.in_message());
        s.on_data(b"one\ntw", &mut out);
        assert!(s.in_message(), "\"tw\" begins the next line");
        assert!(!s.between_messages());
        s.on_data(b"o\n", &mut out);
        assert!(!s.in_message());
        assert!(s.between_messages());
        assert_eq!(&out[..], b"ONE\nTWO\n");
        let mut s = session(Framing::Length(LengthWidth::U16), 64);
        s.on_data(b"\x00", &mut out); // half a header
        assert!(s.in_message());
    }

    #[test]
    fn an_oversized_line_closes_the_session() {
        let mut s = session(Framing::Line, 8);
        let mut out = BytesMut::new();
        assert_eq!(s.on_data(b"ok\n0123456789", &mut out), Next::Close);
        assert_eq!(&out[..], b"OK\n");
    }
}
