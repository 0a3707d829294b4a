//! Character generator (RFC 864): on a stream, an endless sequence of 72-character lines, each
//! starting one character further along the 95 printable ASCII characters; on datagrams, one
//! line per request. Port 19.
//!
//! Flow control: the session produces one batch at a time and asks for [`Next::Write`]; the
//! engine writes the batch completely (waiting for a slow reader) before asking for the next,
//! so a reader that does not keep up costs one batch of memory, never more.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;

use super::{Context, Next, Service, StreamSession};

/// Characters per line, as in RFC 864's example.
pub const CHARGEN_LINE_CHARS: usize = 72;
/// The printable ASCII characters, space to tilde.
const PRINTABLE: usize = 95;
/// Lines per batch: about 16 KiB, one socket buffer's worth.
const BATCH_LINES: usize = 16 * 1024 / (CHARGEN_LINE_CHARS + 2);

/// Appends line number `index` of the rotating pattern, with its CRLF.
///
/// ```
/// use bytes::BytesMut;
/// let mut out = BytesMut::new();
/// socketkit::service::chargen_line(1, &mut out);
/// assert!(out.starts_with(b"!\"#$%&"));
/// assert_eq!(out.len(), 74);
/// ```
pub fn chargen_line(index: usize, out: &mut BytesMut) {
    out.reserve(CHARGEN_LINE_CHARS + 2);
    for i in 0..CHARGEN_LINE_CHARS {
        out.extend_from_slice(&[b' ' + ((index + i) % PRINTABLE) as u8]);
    }
    out.extend_from_slice(b"\r\n");
}

/// The character generator service.
#[derive(Debug, Default)]
pub struct Chargen {
    /// The next line for a datagram, so successive replies rotate as a stream's lines do.
    next_datagram_line: AtomicUsize,
}

/// One chargen stream.
#[derive(Debug, Default)]
pub struct ChargenSession {
    next_line: usize,
}

impl ChargenSession {
    fn batch(&mut self, out: &mut BytesMut) -> Next {
        for _ in 0..BATCH_LINES {
            chargen_line(self.next_line, out);
            self.next_line = (self.next_line + 1) % PRINTABLE;
        }
        Next::Write
    }
}

impl StreamSession for ChargenSession {
    fn on_open(&mut self, out: &mut BytesMut) -> Next {
        self.batch(out)
    }
    fn on_data(&mut self, _input: &[u8], out: &mut BytesMut) -> Next {
        self.batch(out) // what the client sends is thrown away
    }
    fn on_writable(&mut self, out: &mut BytesMut) -> Next {
        self.batch(out)
    }
}

impl Service for Chargen {
    type Session = ChargenSession;
    fn name(&self) -> &str {
        "chargen"
    }
    fn session(&self, _ctx: &Context) -> ChargenSession {
        ChargenSession::default()
    }
    fn message(&self, _ctx: &Context, _request: &[u8], reply: &mut BytesMut) -> bool {
        let line = self.next_datagram_line.fetch_add(1, Ordering::Relaxed) % PRINTABLE;
        chargen_line(line, reply);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_rotate_through_the_printable_characters() {
        let mut session = ChargenSession::default();
        let mut out = BytesMut::new();
        assert_eq!(session.on_open(&mut out), Next::Write);
        let lines: Vec<&[u8]> = out[..].split(|b| *b == b'\n').take(96).collect();
        assert_eq!(&lines[0][..5], b" !\"#$");
        assert_eq!(&lines[1][..5], b"!\"#$%");
        assert_eq!(lines[0], lines[95], "the pattern repeats after 95 lines");
        assert!(
            lines[..95]
                .iter()
                .all(|l| l.len() == 73 && l.ends_with(b"\r"))
        );
    }

    #[test]
    fn one_batch_at_a_time() {
        let mut session = ChargenSession::default();
        let mut out = BytesMut::new();
        session.on_open(&mut out);
        assert!(out.len() <= 16 * 1024);
    }
}
