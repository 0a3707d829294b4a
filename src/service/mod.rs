//! Sans-IO services: protocol logic with no sockets, no clocks and no threads.
//!
//! A [`Service`] answers datagrams and makes a fresh [`StreamSession`] for each stream
//! connection, like a socketserver handler class makes one handler instance per request. Engines
//! (see [`crate::Engine`]) do all the I/O, so each service is written once and runs on every
//! engine and every transport, and is unit-tested without a socket.

mod chargen;
mod clock;
mod discard;
mod echo;
mod qotd;
mod registry;
mod tap;
mod upper;

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;

use crate::endpoint::Transport;

pub use chargen::{CHARGEN_LINE_CHARS, Chargen, ChargenSession, chargen_line};
pub use clock::{Daytime, OneShotSession, SECONDS_1900_TO_1970, Time, daytime_text, time_bytes};
pub use discard::{Discard, DiscardSession};
pub use echo::{Echo, EchoSession};
pub use qotd::Qotd;
pub use registry::{SERVICES, ServiceInfo, by_name, info, is_service_port};
pub use tap::{Dumped, DumpedSession};
pub use upper::{Upper, UpperSession, upper_message, upper_prefix};

/// What the engine does after an event, once the session's output has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Read more from the peer.
    Read,
    /// Call [`StreamSession::on_writable`] once the output is on the wire (flow control for
    /// services that produce more than they are asked for).
    Write,
    /// Close the connection.
    Close,
}

/// A peer's or a listener's address, whatever the transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Address {
    /// An IPv4 or IPv6 socket address.
    Inet(SocketAddr),
    /// A Unix socket path; `None` for an unnamed (unbound) socket.
    Unix(Option<PathBuf>),
    /// A Linux abstract Unix socket name (no file: shown as `@name`). socketkit's own datagram
    /// clients bind one, so nothing is left behind in the filesystem if they are killed.
    Abstract(Vec<u8>),
}

impl Address {
    /// The internet socket address, if this is one.
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            Address::Inet(addr) => Some(*addr),
            Address::Unix(_) | Address::Abstract(_) => None,
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Address {
        Address::Inet(addr)
    }
}

impl From<&std::os::unix::net::SocketAddr> for Address {
    fn from(addr: &std::os::unix::net::SocketAddr) -> Address {
        use std::os::linux::net::SocketAddrExt;
        match (addr.as_pathname(), addr.as_abstract_name()) {
            (Some(path), _) => Address::Unix(Some(PathBuf::from(path))),
            (None, Some(name)) => Address::Abstract(name.to_vec()),
            (None, None) => Address::Unix(None),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Inet(addr) => write!(f, "{addr}"),
            Address::Unix(Some(path)) => write!(f, "{}", path.display()),
            Address::Unix(None) => f.write_str("(unnamed)"),
            Address::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

/// What a service may know about a request: who is asking, on which listener, and when.
///
/// Engines fill it in, so services stay free of system calls (time included: a daytime service
/// formats `now`, it does not read a clock).
#[derive(Debug, Clone)]
pub struct Context {
    /// The peer's address.
    pub peer: Address,
    /// The local address the request arrived on.
    pub local: Address,
    /// The transport the request arrived on.
    pub transport: Transport,
    /// The time the connection was accepted or the datagram received.
    pub now: SystemTime,
}

impl Context {
    /// A context for tests and for calling a service by hand.
    ///
    /// ```
    /// use socketkit::{Transport, service::Context};
    /// let ctx = Context::new(Transport::Udp, "127.0.0.1:5000".parse().unwrap());
    /// assert_eq!(ctx.peer.to_string(), "127.0.0.1:5000");
    /// ```
    pub fn new(transport: Transport, peer: SocketAddr) -> Context {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Context {
            peer: Address::Inet(peer),
            local: Address::Inet(unspecified),
            transport,
            now: SystemTime::now(),
        }
    }
}

/// A network service, free of I/O. Engines run it on every transport.
///
/// Two faces: [`Service::message`] answers one whole message (a datagram, or a frame when the
/// stream is framed), and [`Service::session`] serves a raw byte stream as it arrives.
///
/// # Examples
///
/// A service that answers every message with its length, and on a raw stream sends back
/// nothing but a count at the end:
///
/// ```
/// use bytes::BytesMut;
/// use socketkit::service::{Context, Next, Service, StreamSession};
///
/// struct Count;
/// #[derive(Default)]
/// struct CountSession(usize);
///
/// impl StreamSession for CountSession {
///     fn on_data(&mut self, input: &[u8], _out: &mut BytesMut) -> Next {
///         self.0 += input.len();
///         Next::Read
///     }
///     fn on_eof(&mut self, out: &mut BytesMut) -> Next {
///         out.extend_from_slice(format!("{}\n", self.0).as_bytes());
///         Next::Close
///     }
/// }
///
/// impl Service for Count {
///     type Session = CountSession;
///     fn name(&self) -> &str { "count" }
///     fn session(&self, _ctx: &Context) -> CountSession { CountSession::default() }
///     fn message(&self, _ctx: &Context, request: &[u8], reply: &mut BytesMut) -> bool {
///         reply.extend_from_slice(request.len().to_string().as_bytes());
///         true
///     }
/// }
/// ```
pub trait Service: Send + Sync + 'static {
    /// Per-connection state, made fresh for each stream.
    type Session: StreamSession;

    /// A short name for logs, e.g. `upper`.
    fn name(&self) -> &str;

    /// Starts a session for a new stream connection.
    fn session(&self, ctx: &Context) -> Self::Session;

    /// Answers one whole message by appending the reply to `reply`; returns `false` to send no
    /// reply. A message is a datagram, or one frame of a framed stream (`line` or `length`
    /// framing, see [`crate::codec`]): this is the message-level API, the same whatever the
    /// transport and framing.
    fn message(&self, ctx: &Context, request: &[u8], reply: &mut BytesMut) -> bool;
}

/// One stream session. Each method appends whatever it has to say to `out`; the engine writes it
/// all before it acts on the returned [`Next`].
pub trait StreamSession: Send + 'static {
    /// The connection was accepted.
    fn on_open(&mut self, _out: &mut BytesMut) -> Next {
        Next::Read
    }

    /// Bytes arrived from the peer (never empty).
    fn on_data(&mut self, input: &[u8], out: &mut BytesMut) -> Next;

    /// The in-place reply, for a session whose reply to these bytes has their length (ASCII
    /// upper case, echo): transforms `data` into the reply and returns what
    /// [`StreamSession::on_data`] would have, so the engine writes the read buffer back
    /// instead of copying it into a second one. Must agree with `on_data` exactly: the reply
    /// `on_data(data)` would append is the transformed `data`, the session's state after it is
    /// the same. Returns `None` when it cannot, and the engine calls `on_data` with `data` as
    /// this method left it: unchanged, or changed only in ways `on_data` answers exactly as it
    /// would the original bytes (`upper` may have upper-cased ASCII letters before it found a
    /// character that is not ASCII). The default always returns `None`. Called only when no
    /// earlier output is still pending.
    ///
    /// ```
    /// use socketkit::service::{StreamSession, UpperSession};
    /// let mut data = *b"hello";
    /// assert!(UpperSession::default().on_data_in_place(&mut data).is_some());
    /// assert_eq!(&data, b"HELLO");
    /// let mut data = "straße".as_bytes().to_vec(); // grows: the general path
    /// assert!(UpperSession::default().on_data_in_place(&mut data).is_none());
    /// ```
    fn on_data_in_place(&mut self, _data: &mut [u8]) -> Option<Next> {
        None
    }

    /// The peer closed its write half (the 0-byte read).
    fn on_eof(&mut self, _out: &mut BytesMut) -> Next {
        Next::Close
    }

    /// The previous output is on the wire, after [`Next::Write`].
    fn on_writable(&mut self, _out: &mut BytesMut) -> Next {
        Next::Read
    }

    /// Whether the peer has begun a message that the session has not yet answered: part of a
    /// line or frame, or a character cut in two by the reads. A message begun must be finished
    /// within the per-message deadline
    /// ([`Limits::message_timeout`](crate::Limits::message_timeout)), so a peer that dribbles
    /// a byte at a time cannot hold a connection forever. A read after which the session
    /// replied counts as progress: the deadline of the message still open starts there.
    ///
    /// The default, `false`, puts no deadline on the session (the idle time-out still holds).
    fn in_message(&self) -> bool {
        false
    }

    /// Whether everything the peer has sent so far has been answered, so that at shutdown the
    /// connection can be closed at once without losing a reply (a keep-alive connection
    /// between two requests). A connection that has not sent anything yet is never closed
    /// this way: its first request may be on its way.
    ///
    /// The default, `false`, is the safe answer for a session that may still owe a reply (one
    /// that answers at EOF, say): its connection is let run until it closes or the grace period
    /// ends. It is also the answer for a raw byte stream, which has no message boundaries: a
    /// peer that has had every read answered may be halfway through its request, so the
    /// built-in services' raw sessions run to the peer's EOF within the grace period (HAProxy's
    /// soft stop). Only a session that knows where its protocol's messages end says `true`
    /// (the framed sessions of `line` and `length` framing do).
    fn between_messages(&self) -> bool {
        false
    }
}

impl StreamSession for Box<dyn StreamSession> {
    fn on_open(&mut self, out: &mut BytesMut) -> Next {
        (**self).on_open(out)
    }
    fn on_data(&mut self, input: &[u8], out: &mut BytesMut) -> Next {
        (**self).on_data(input, out)
    }
    fn on_data_in_place(&mut self, data: &mut [u8]) -> Option<Next> {
        (**self).on_data_in_place(data)
    }
    fn on_eof(&mut self, out: &mut BytesMut) -> Next {
        (**self).on_eof(out)
    }
    fn on_writable(&mut self, out: &mut BytesMut) -> Next {
        (**self).on_writable(out)
    }
    fn in_message(&self) -> bool {
        (**self).in_message()
    }
    fn between_messages(&self) -> bool {
        (**self).between_messages()
    }
}

/// Any service, its session type erased: what [`by_name`] returns, so a service chosen at run
/// time (by name, from a command line) can be passed to [`crate::ServerBuilder::service`].
#[derive(Clone)]
pub struct AnyService(Arc<dyn DynService>);

impl AnyService {
    /// Wraps a service.
    pub fn new<S: Service>(service: S) -> AnyService {
        AnyService(Arc::new(service))
    }
}

impl fmt::Debug for AnyService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AnyService").field(&self.0.name()).finish()
    }
}

impl Service for AnyService {
    type Session = Box<dyn StreamSession>;
    fn name(&self) -> &str {
        self.0.name()
    }
    fn session(&self, ctx: &Context) -> Box<dyn StreamSession> {
        self.0.session(ctx)
    }
    fn message(&self, ctx: &Context, request: &[u8], reply: &mut BytesMut) -> bool {
        self.0.message(ctx, request, reply)
    }
}

/// `service` behind one `dyn` layer. An [`AnyService`] hands over the service it already
/// wraps: wrapped again, every message and session event would go through two virtual calls,
/// and every session would be boxed twice (one allocation more per connection).
pub(crate) fn erase<S: Service>(service: S) -> Arc<dyn DynService> {
    let mut slot = Some(service);
    if let Some(any) = (&mut slot as &mut dyn std::any::Any).downcast_mut::<Option<AnyService>>() {
        return any.take().expect("the slot was just filled").0;
    }
    Arc::new(slot.expect("the slot was not taken"))
}

/// A [`Service`] with its session type erased, so a server can hold any service (or several)
/// without being generic over it. A boxed session per connection costs one allocation.
pub(crate) trait DynService: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn session(&self, ctx: &Context) -> Box<dyn StreamSession>;
    fn message(&self, ctx: &Context, request: &[u8], reply: &mut BytesMut) -> bool;
}

impl<S: Service> DynService for S {
    fn name(&self) -> &str {
        Service::name(self)
    }
    fn session(&self, ctx: &Context) -> Box<dyn StreamSession> {
        Box::new(Service::session(self, ctx))
    }
    fn message(&self, ctx: &Context, request: &[u8], reply: &mut BytesMut) -> bool {
        Service::message(self, ctx, request, reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs `reads` through two sessions: one the general way (`on_data` alone), one the way
    /// an engine does with in-place replies (`on_data_in_place` first, `on_data` on the bytes
    /// it left when it declines). The replies, the `Next`s and the message state must agree after every read,
    /// and at the EOF.
    fn in_place_agrees<S: StreamSession>(
        make: impl Fn() -> S,
        reads: &[Vec<u8>],
    ) -> Result<(), TestCaseError> {
        let (mut general, mut in_place) = (make(), make());
        for read in reads.iter().filter(|r| !r.is_empty()) {
            let mut expected = BytesMut::new();
            let next = general.on_data(read, &mut expected);
            let mut data = read.clone();
            let mut got = BytesMut::new();
            let got_next = match in_place.on_data_in_place(&mut data) {
                Some(next) => {
                    got.extend_from_slice(&data);
                    next
                }
                // The engine then hands the general path the bytes as they were left.
                None => in_place.on_data(&data, &mut got),
            };
            prop_assert_eq!(&got[..], &expected[..], "reply to {:?}", read);
            prop_assert_eq!(got_next, next);
            prop_assert_eq!(in_place.in_message(), general.in_message());
            prop_assert_eq!(in_place.between_messages(), general.between_messages());
        }
        let (mut expected, mut got) = (BytesMut::new(), BytesMut::new());
        prop_assert_eq!(in_place.on_eof(&mut got), general.on_eof(&mut expected));
        prop_assert_eq!(&got[..], &expected[..]);
        Ok(())
    }

    /// Reads that are mostly ASCII (the in-place path), some not UTF-8 or cut inside a
    /// character (the general path), in any order.
    fn reads() -> impl Strategy<Value = Vec<Vec<u8>>> {
        let read = prop_oneof![
            4 => "[ -~]{1,40}".prop_map(String::into_bytes),
            2 => "\\PC{1,12}".prop_map(String::into_bytes),
            1 => proptest::collection::vec(any::<u8>(), 1..8),
            // Longer than a block of the in-place path, perhaps not ASCII at the end.
            1 => ("[ -~]{200,700}", "\\PC{0,3}").prop_map(|(a, b)| (a + &b).into_bytes()),
        ];
        proptest::collection::vec(read, 1..10)
    }

    proptest! {
        #[test]
        fn upper_in_place_agrees_with_the_general_path(reads in reads()) {
            in_place_agrees(UpperSession::default, &reads)?;
            // Through the type-erased session an engine holds.
            in_place_agrees(|| Box::new(UpperSession::default()) as Box<dyn StreamSession>, &reads)?;
        }

        #[test]
        fn echo_in_place_agrees_with_the_general_path(reads in reads()) {
            in_place_agrees(|| EchoSession, &reads)?;
        }
    }

    #[test]
    fn an_any_service_is_erased_to_the_service_it_wraps() {
        let any = AnyService::new(Upper);
        let inner = any.0.clone();
        let erased = erase(any);
        assert!(
            Arc::ptr_eq(&erased, &inner),
            "an AnyService was wrapped again"
        );
        let mut out = BytesMut::new();
        let ctx = Context::new(
            crate::endpoint::Transport::Tcp,
            "127.0.0.1:1".parse().unwrap(),
        );
        erased.session(&ctx).on_data(b"hi", &mut out);
        assert_eq!(&out[..], b"HI");
        assert!(
            !Arc::ptr_eq(&erase(Upper), &inner),
            "any other service is wrapped once"
        );
    }
}
