//! `serve --dump`: a service wrapped so that every chunk the engine hands its sessions, and
//! every reply they give, is shown in a [`Dump`]. The wrapper is put on only when a dump is
//! asked for, so a server without one runs its service as before, at no cost.

use bytes::BytesMut;

use super::{Address, Context, Next, Service, StreamSession};
use crate::dump::{Direction, Dump};

/// `service`, its traffic shown in a dump: stream bytes as the engine hands them to the
/// session and takes its output; datagrams and (with `line` or `length` framing) messages as
/// the service answers them, one chunk per message and per reply, without the framing.
///
/// # Examples
///
/// ```
/// use bytes::BytesMut;
/// use socketkit::dump::{Dump, DumpFormat};
/// use socketkit::service::{Context, Dumped, Service, Upper};
/// use socketkit::Transport;
///
/// let dump = Dump::to_writer(DumpFormat::Hex, Box::new(std::io::sink()));
/// let service = Dumped::new(Upper, dump);
/// let ctx = Context::new(Transport::Udp, "127.0.0.1:5000".parse().unwrap());
/// let mut reply = BytesMut::new();
/// assert!(service.message(&ctx, b"hi", &mut reply));
/// assert_eq!(&reply[..], b"HI");
/// ```
#[derive(Debug)]
pub struct Dumped<S> {
    inner: S,
    dump: Dump,
}

impl<S: Service> Dumped<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, dump: Dump) -> Dumped<S> {
        Dumped { inner, dump }
    }
}

impl<S: Service> Service for Dumped<S> {
    type Session = DumpedSession<S::Session>;

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn session(&self, ctx: &Context) -> Self::Session {
        DumpedSession {
            inner: self.inner.session(ctx),
            dump: self.dump.clone(),
            peer: ctx.peer.clone(),
        }
    }

    fn message(&self, ctx: &Context, request: &[u8], reply: &mut BytesMut) -> bool {
        self.dump.chunk(&ctx.peer, Direction::Received, request);
        let start = reply.len();
        let answered = self.inner.message(ctx, request, reply);
        if answered {
            self.dump.chunk(&ctx.peer, Direction::Sent, &reply[start..]);
        }
        answered
    }
}

/// A session whose input and output are shown in a dump.
#[derive(Debug)]
pub struct DumpedSession<T> {
    inner: T,
    dump: Dump,
    peer: Address,
}

impl<T> DumpedSession<T> {
    /// Shows what the session added to `out` since `start`.
    fn sent(&self, out: &BytesMut, start: usize) {
        if out.len() > start {
            self.dump.chunk(&self.peer, Direction::Sent, &out[start..]);
        }
    }
}

impl<T: StreamSession> StreamSession for DumpedSession<T> {
    fn on_open(&mut self, out: &mut BytesMut) -> Next {
        let start = out.len();
        let next = self.inner.on_open(out);
        self.sent(out, start);
        next
    }
    fn on_data(&mut self, input: &[u8], out: &mut BytesMut) -> Next {
        self.dump.chunk(&self.peer, Direction::Received, input);
        let start = out.len();
        let next = self.inner.on_data(input, out);
        self.sent(out, start);
        next
    }
    fn on_eof(&mut self, out: &mut BytesMut) -> Next {
        let start = out.len();
        let next = self.inner.on_eof(out);
        self.sent(out, start);
        next
    }
    fn on_writable(&mut self, out: &mut BytesMut) -> Next {
        let start = out.len();
        let next = self.inner.on_writable(out);
        self.sent(out, start);
        next
    }
    fn in_message(&self) -> bool {
        self.inner.in_message()
    }
    fn between_messages(&self) -> bool {
        self.inner.between_messages()
    }
}
