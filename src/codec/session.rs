//! A framed stream session: a service's message function plus a codec is itself a
//! [`StreamSession`], so engines only ever drive sessions.

use std::sync::Arc;

use bytes::{Buf, BytesMut};

use super::budget::{Budget, UNCOUNTED_BYTES};
use super::{FrameError, MessageCodec};
use crate::service::{Context, DynService, Next, StreamSession};

/// Decodes whole messages from the stream, answers each with [`Service::message`], and
/// encodes the replies. Buffered input never exceeds the frame (or line) limit plus one read,
/// grows only with the bytes received, and is counted against the process's [`Budget`]
/// beyond [`UNCOUNTED_BYTES`]; after a message is answered the buffer keeps no more than
/// what it still holds, so an idle connection keeps no memory of its largest message.
///
/// [`Service::message`]: crate::service::Service::message
pub(crate) struct FramedSession {
    service: Arc<dyn DynService>,
    ctx: Context,
    codec: MessageCodec,
    input: BytesMut,
    reply: BytesMut,
    budget: Budget,
    /// What this session holds of the budget now.
    charged: usize,
}

impl FramedSession {
    pub(crate) fn new(
        service: Arc<dyn DynService>,
        ctx: Context,
        codec: MessageCodec,
        budget: Budget,
    ) -> Self {
        FramedSession {
            service,
            ctx,
            codec,
            input: BytesMut::new(),
            reply: BytesMut::new(),
            budget,
            charged: 0,
        }
    }

    /// Answers every whole message buffered so far; returns how many.
    fn answer(&mut self, out: &mut BytesMut, at_eof: bool) -> Result<usize, FrameError> {
        if matches!(self.codec, MessageCodec::Line(_)) {
            return self.answer_lines(out, at_eof);
        }
        let mut answered = 0;
        loop {
            let message = if at_eof {
                self.codec.decode_eof(&mut self.input)?
            } else {
                self.codec.decode(&mut self.input)?
            };
            let Some(message) = message else {
                return Ok(answered);
            };
            answered += 1;
            self.reply.clear();
            if self
                .service
                .message(&self.ctx, &message.payload, &mut self.reply)
            {
                self.codec.encode(&self.reply, message.terminator, out)?;
            }
        }
    }

    /// [`FramedSession::answer`] for line framing: each line is answered where it lies in the
    /// input buffer, then taken off it (callgrind: a `Bytes` split off, frozen and dropped for
    /// every line: 2,671 -> 2,601 instructions a line-framed ping-pong request).
    fn answer_lines(&mut self, out: &mut BytesMut, at_eof: bool) -> Result<usize, FrameError> {
        let mut answered = 0;
        loop {
            let MessageCodec::Line(codec) = &mut self.codec else {
                unreachable!("answer sends only line framing here");
            };
            let span = if at_eof {
                codec.decode_eof_span(&mut self.input)?
            } else {
                codec.decode_span(&mut self.input)?
            };
            let Some(span) = span else {
                return Ok(answered);
            };
            answered += 1;
            self.reply.clear();
            let request = &self.input[..span.payload];
            if self.service.message(&self.ctx, request, &mut self.reply) {
                self.codec.encode(&self.reply, span.terminator, out)?;
            }
            self.input.advance(span.consumed);
        }
    }

    /// After answering: gives back memory the buffers no longer need, and charges the budget
    /// for what the input buffer holds (`allocated`: its capacity before the messages were
    /// taken off it). Decoded messages are split off the front of the buffer, so a remainder
    /// keeps the whole allocation alive: it moves to a buffer of its own size (at most one
    /// read's worth after a frame completes, so the copy is small).
    fn settle(&mut self, allocated: usize, answered: usize) -> Result<(), FrameError> {
        let held = if self.input.is_empty() {
            if allocated > UNCOUNTED_BYTES {
                self.input = BytesMut::new();
            }
            0
        } else if answered > 0 && allocated > UNCOUNTED_BYTES {
            self.input = BytesMut::from(&self.input[..]);
            self.input.capacity()
        } else {
            allocated
        };
        if self.reply.capacity() > UNCOUNTED_BYTES {
            self.reply = BytesMut::new(); // a large reply's buffer is not kept for the next
        }
        let want = held.saturating_sub(UNCOUNTED_BYTES);
        if self.budget.hold(&mut self.charged, want) {
            Ok(())
        } else {
            Err(FrameError::OverBudget {
                limit: self.budget.limit(),
            })
        }
    }

    fn fail(&mut self, error: FrameError) -> Next {
        // The stream cannot be resynchronised after a bad frame: this connection ends here.
        tracing::warn!(peer = %self.ctx.peer, "closing the connection: {error}");
        self.input = BytesMut::new();
        self.budget.hold(&mut self.charged, 0);
        Next::Close
    }
}

impl Drop for FramedSession {
    fn drop(&mut self) {
        self.budget.hold(&mut self.charged, 0);
    }
}

impl StreamSession for FramedSession {
    fn on_data(&mut self, input: &[u8], out: &mut BytesMut) -> Next {
        self.input.extend_from_slice(input);
        // The buffer grows by at most one read before the budget is checked.
        let allocated = self.input.capacity();
        let answered = self.answer(out, false);
        match answered.and_then(|answered| self.settle(allocated, answered)) {
            Ok(()) => Next::Read,
            Err(e) => self.fail(e),
        }
    }

    fn on_eof(&mut self, out: &mut BytesMut) -> Next {
        match self.answer(out, true) {
            Ok(_) => Next::Close,
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

/// A sequenced-packet connection's session (`unixpacket://`): the transport keeps message
/// boundaries, so each read the engine reports is one whole record, answered with
/// [`Service::message`]; the reply is the session's whole output for that record, which the
/// engine sends as one record. No codec, no buffered input: every record is answered as it
/// comes, so the connection is always between messages.
///
/// [`Service::message`]: crate::service::Service::message
pub(crate) struct RecordSession {
    service: Arc<dyn DynService>,
    ctx: Context,
}

impl RecordSession {
    pub(crate) fn new(service: Arc<dyn DynService>, ctx: Context) -> RecordSession {
        RecordSession { service, ctx }
    }
}

impl StreamSession for RecordSession {
    fn on_data(&mut self, record: &[u8], out: &mut BytesMut) -> Next {
        let start = out.len();
        if !self.service.message(&self.ctx, record, out) {
            out.truncate(start); // no reply: nothing the service wrote goes out
        }
        Next::Read
    }

    fn between_messages(&self) -> bool {
        true
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
            Budget::isolated(usize::MAX),
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

    fn framed(budget: Budget) -> FramedSession {
        let ctx = Context::new(Transport::Tcp, "127.0.0.1:1".parse().unwrap());
        let codec = MessageCodec::new(Framing::Length(LengthWidth::U32), 64, 1 << 20).unwrap();
        FramedSession::new(Arc::new(Upper), ctx, codec, budget)
    }

    #[test]
    fn a_session_that_would_pass_the_budget_is_closed_while_whole_messages_are_served() {
        let budget = Budget::isolated(64 * 1024);
        let mut out = BytesMut::new();
        // Peers that announce 1 MiB and send part of it, 16 KiB a read.
        let mut stalled: Vec<FramedSession> = (0..8).map(|_| framed(budget)).collect();
        let mut closed = 0;
        for session in &mut stalled {
            let mut next = session.on_data(b"\x00\x10\x00\x00", &mut out);
            for _ in 0..4 {
                if next == Next::Read {
                    next = session.on_data(&[b'x'; 16 * 1024], &mut out);
                }
            }
            closed += usize::from(next == Next::Close);
        }
        assert!(budget.used() <= 64 * 1024);
        assert!(
            closed >= 4,
            "only {closed} of 8 closed: 8 × 64 KiB is 512 KiB held"
        );
        assert!(closed < 8, "the budget holds some partial frames");
        // A whole small frame, and one whose header comes apart from its payload, are served.
        let mut small = framed(budget);
        assert_eq!(small.on_data(b"\x00\x00\x00\x02ok", &mut out), Next::Read);
        assert_eq!(small.on_data(b"\x00\x00\x00\x02", &mut out), Next::Read);
        assert_eq!(small.on_data(b"hi", &mut out), Next::Read);
        assert!(out.ends_with(b"\x00\x00\x00\x02OK\x00\x00\x00\x02HI"));
        drop(stalled);
        assert_eq!(budget.used(), 0, "closed sessions give their bytes back");
    }

    #[test]
    fn buffers_shrink_once_a_large_message_is_answered() {
        let budget = Budget::isolated(usize::MAX);
        let mut s = framed(budget);
        let mut out = BytesMut::new();
        s.on_data(&(300_000u32).to_be_bytes(), &mut out);
        for _ in 0..29 {
            s.on_data(&[b'a'; 10_000], &mut out);
        }
        assert!(budget.used() > 0, "a large partial frame is counted");
        let mut last = vec![b'a'; 10_000];
        last.extend_from_slice(b"\x00\x00\x00\x01"); // the next frame begins in the same read
        s.on_data(&last, &mut out);
        assert_eq!(out.len(), 4 + 300_000);
        assert!(s.input.capacity() < 1024, "{}", s.input.capacity());
        assert!(s.reply.capacity() <= UNCOUNTED_BYTES);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn an_oversized_line_closes_the_session() {
        let mut s = session(Framing::Line, 8);
        let mut out = BytesMut::new();
        assert_eq!(s.on_data(b"ok\n0123456789", &mut out), Next::Close);
        assert_eq!(&out[..], b"OK\n");
    }
}
