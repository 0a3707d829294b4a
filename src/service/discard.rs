//! Discard (RFC 863): everything received is thrown away; nothing is ever sent. Port 9.

use bytes::BytesMut;

use super::{Context, Next, Service, StreamSession};

/// The discard service.
///
/// ```
/// use bytes::BytesMut;
/// use socketkit::{Transport, service::{Context, Discard, Service}};
/// let ctx = Context::new(Transport::Udp, "127.0.0.1:5000".parse().unwrap());
/// assert!(!Discard.message(&ctx, b"gone", &mut BytesMut::new()));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Discard;

/// A discard stream: reads until the peer closes, says nothing.
#[derive(Debug, Default)]
pub struct DiscardSession;

impl StreamSession for DiscardSession {
    fn on_data(&mut self, _input: &[u8], _out: &mut BytesMut) -> Next {
        Next::Read
    }
}

impl Service for Discard {
    type Session = DiscardSession;
    fn name(&self) -> &str {
        "discard"
    }
    fn session(&self, _ctx: &Context) -> DiscardSession {
        DiscardSession
    }
    fn message(&self, _ctx: &Context, _request: &[u8], _reply: &mut BytesMut) -> bool {
        false
    }
}
