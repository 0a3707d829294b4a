//! Echo (RFC 862): every byte comes back as it came. Port 7.

use bytes::BytesMut;

use super::{Context, Next, Service, StreamSession};

/// The echo service: the reply is the request.
///
/// ```
/// use bytes::BytesMut;
/// use socketkit::{Transport, service::{Context, Echo, Service}};
/// let ctx = Context::new(Transport::Udp, "127.0.0.1:5000".parse().unwrap());
/// let mut reply = BytesMut::new();
/// assert!(Echo.message(&ctx, b"same", &mut reply));
/// assert_eq!(&reply[..], b"same");
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

/// An echo stream: each read is written back at once.
#[derive(Debug, Default)]
pub struct EchoSession;

impl StreamSession for EchoSession {
    fn on_data(&mut self, input: &[u8], out: &mut BytesMut) -> Next {
        out.extend_from_slice(input);
        Next::Read
    }

    /// The reply is the request: the read buffer goes back as it is.
    fn on_data_in_place(&mut self, _data: &mut [u8]) -> Option<Next> {
        Some(Next::Read)
    }
}

impl Service for Echo {
    type Session = EchoSession;
    fn name(&self) -> &str {
        "echo"
    }
    fn session(&self, _ctx: &Context) -> EchoSession {
        EchoSession
    }
    fn message(&self, _ctx: &Context, request: &[u8], reply: &mut BytesMut) -> bool {
        reply.extend_from_slice(request);
        true
    }
}
