//! What a benchmark run does: the mode, its sizes and bounds, and the messages it sends.

use std::time::Duration;

use bytes::BytesMut;

use crate::codec::{Framing, MessageCodec};
use crate::endpoint::Endpoint;
use crate::service::upper_message;

/// The load pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Persistent connections; each sends a message and waits for the whole reply before the
    /// next (or keeps `pipeline` requests in flight).
    #[default]
    Pingpong,
    /// A new connection per request: connect, send, read the reply, close (the slides' client).
    Connect,
    /// One datagram per request; a reply that does not come in time counts as a loss.
    Udp,
    /// Connections that stream bytes through the server and read them all back.
    Stream,
    /// Open connections, one verified round trip each, then hold them (memory per connection).
    Idle,
}

impl Mode {
    /// Every mode, for `--help`.
    pub const ALL: [Mode; 5] = [
        Mode::Pingpong,
        Mode::Connect,
        Mode::Udp,
        Mode::Stream,
        Mode::Idle,
    ];

    /// The mode's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pingpong => "pingpong",
            Mode::Connect => "connect",
            Mode::Udp => "udp",
            Mode::Stream => "stream",
            Mode::Idle => "idle",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(text: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == text)
            .ok_or_else(|| format!("unknown mode {text:?}"))
    }
}

/// What the messages contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Payload {
    /// Lowercase ASCII (the default).
    #[default]
    Ascii,
    /// A mix of scripts (Latin with accents, Greek, Cyrillic, CJK, ß), so the uppercase
    /// transform does real Unicode work and replies can be longer than requests.
    Unicode,
}

/// How a reply is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Expect {
    /// The request in upper case (socketkit's `upper`, the slides' servers).
    #[default]
    Upper,
    /// The request itself (`echo`).
    Echo,
}

/// A benchmark run's settings.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Plan {
    /// The server under test.
    pub endpoint: Endpoint,
    /// The load pattern.
    pub mode: Mode,
    /// Connections (sockets for `udp`, workers for `connect`).
    pub connections: usize,
    /// Message size in bytes: a line with its `\n`, or a length frame's payload (the header
    /// comes on top).
    pub size: usize,
    /// Requests in flight per connection (`pingpong`).
    pub pipeline: usize,
    /// A fixed total request rate per second (open model), or `None` for as fast as replies come.
    pub rate: Option<f64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    pub requests: Option<u64>,
    /// Bytes to stream through the server in all (`stream`).
    pub stream_bytes: u64,
    /// How long a request may wait for its reply (and a connection for its connect).
    pub timeout: Duration,
    /// Message framing on streams.
    pub framing: Framing,
    /// Message content.
    pub payload: Payload,
    /// Reply check.
    pub expect: Expect,
    /// The load generator's engine: [`Engine::Async`](crate::Engine::Async) (tokio tasks, every
    /// mode) or [`Engine::Uring`](crate::Engine::Uring) (io_uring, one ring per thread:
    /// `pingpong` on TCP and Unix streams, and `udp`, without `rate`). Where io_uring is
    /// refused, [`run`](fn@super::run) falls back to the async engine with one warning line.
    pub engine: crate::Engine,
    /// `tls://` only: what the load generator trusts and says (the `tls` feature).
    #[cfg(feature = "tls")]
    pub tls: crate::tls::ClientTlsOptions,
}

impl Plan {
    /// A plan with the defaults: ping-pong, 1 connection, 64-byte lines, 10 seconds.
    pub fn new(endpoint: Endpoint) -> Plan {
        Plan {
            endpoint,
            mode: Mode::Pingpong,
            connections: 1,
            size: 64,
            pipeline: 1,
            rate: None,
            duration: None,
            requests: None,
            stream_bytes: 64 * 1024 * 1024,
            timeout: Duration::from_secs(5),
            framing: Framing::Raw,
            payload: Payload::Ascii,
            expect: Expect::Upper,
            engine: crate::Engine::Async,
            #[cfg(feature = "tls")]
            tls: crate::tls::ClientTlsOptions::default(),
        }
    }

    /// The run's time bound: the duration given, or 10 s when no bound is given at all (a
    /// stream is bounded by its byte count instead).
    pub(crate) fn time_bound(&self) -> Option<Duration> {
        match (self.duration, self.requests) {
            // A stream is bounded by its bytes; other modes by 10 s when nothing else is given.
            (None, None) if self.mode != Mode::Stream => Some(Duration::from_secs(10)),
            (duration, _) => duration,
        }
    }

    /// The request message and the exact reply bytes expected on the wire.
    pub(crate) fn exchange(&self, datagram: bool) -> (Vec<u8>, Vec<u8>) {
        let newline = !datagram && !matches!(self.framing, Framing::Length(_));
        let text = payload_text(self.payload, self.size.saturating_sub(usize::from(newline)));
        let transform = |input: &[u8]| -> Vec<u8> {
            match self.expect {
                Expect::Echo => input.to_vec(),
                Expect::Upper => {
                    let mut out = BytesMut::new();
                    upper_message(input, &mut out);
                    out.to_vec()
                }
            }
        };
        let codec = if datagram {
            None
        } else {
            MessageCodec::new(self.framing, usize::MAX, usize::MAX)
        };
        match codec {
            Some(MessageCodec::Length(mut codec)) => {
                use tokio_util::codec::Encoder;
                let (mut request, mut reply) = (BytesMut::new(), BytesMut::new());
                codec.encode(text.as_bytes(), &mut request).expect("fits");
                codec
                    .encode(&transform(text.as_bytes())[..], &mut reply)
                    .expect("fits");
                (request.to_vec(), reply.to_vec())
            }
            _ => {
                let mut request = text.into_bytes();
                if newline {
                    request.push(b'\n');
                }
                let reply = transform(&request);
                (request, reply)
            }
        }
    }
}

/// `len` bytes (or fewer, at a character boundary) of the payload's text.
fn payload_text(payload: Payload, len: usize) -> String {
    let source: &str = match payload {
        Payload::Ascii => "the quick brown fox jumps over the lazy dog ",
        Payload::Unicode => "straße café ñandú αβγ δέλτα мир 東京 ß ǆ ﬁx ",
    };
    // Whole copies first: a character at a time took seconds for a 16 MiB message in a debug
    // build, before the run's clock even started.
    let mut text = String::with_capacity(len);
    while text.len() + source.len() <= len {
        text.push_str(source);
    }
    for c in source.chars() {
        if text.len() + c.len_utf8() > len {
            break;
        }
        text.push(c);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::LengthWidth;

    fn plan(framing: Framing, payload: Payload) -> Plan {
        let mut plan = Plan::new("tcp://127.0.0.1:1".parse().unwrap());
        plan.framing = framing;
        plan.payload = payload;
        plan
    }

    #[test]
    fn messages_are_lines_of_the_requested_size() {
        let (request, reply) = plan(Framing::Raw, Payload::Ascii).exchange(false);
        assert_eq!(request.len(), 64);
        assert!(request.ends_with(b"\n"));
        assert_eq!(reply, request.to_ascii_uppercase());
    }

    #[test]
    fn length_frames_carry_their_own_size() {
        let (request, reply) =
            plan(Framing::Length(LengthWidth::U32), Payload::Unicode).exchange(false);
        assert!(request.len() <= 64 + 4, "a 64-byte payload and its header");
        let announced = u32::from_be_bytes(reply[..4].try_into().unwrap()) as usize;
        assert_eq!(announced, reply.len() - 4);
        assert_ne!(reply[4..], request[4..], "the payload was upper-cased");
    }

    #[test]
    fn a_payload_is_its_text_repeated_and_cut_at_a_character_boundary() {
        for payload in [Payload::Ascii, Payload::Unicode] {
            for len in [0, 1, 43, 44, 45, 100, 1000] {
                let text = payload_text(payload, len);
                let slow: String = {
                    let source = payload_text(payload, 4096);
                    let mut t = String::new();
                    for c in source.chars() {
                        if t.len() + c.len_utf8() > len {
                            break;
                        }
                        t.push(c);
                    }
                    t
                };
                assert_eq!(text, slow, "{payload:?} {len}");
                assert!(text.len() <= len && text.len() + 4 > len);
            }
        }
    }

    #[test]
    fn datagrams_carry_no_newline() {
        let (request, _) = plan(Framing::Raw, Payload::Ascii).exchange(true);
        assert!(!request.ends_with(b"\n"));
    }
}
