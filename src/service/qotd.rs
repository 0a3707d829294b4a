//! Quote of the day (RFC 865): one short message, under 512 characters, then close. Port 17.

use bytes::BytesMut;

use super::clock::{OneShotSession, unix_days};
use super::{Context, Service};

/// Quotes on networking, one a day in turn.
const QUOTES: &[&str] = &[
    "Be conservative in what you do, be liberal in what you accept from others. -- Jon Postel, RFC 761",
    "The network is reliable. -- the first fallacy of distributed computing",
    "There is no such thing as a free lunch, nor a lossless network.",
    "TCP is a byte stream: if you want messages, carry your own boundaries.",
    "A socket is a door: the sending process shoves the message out of it.",
    "It is easier to move a problem around than it is to solve it. -- RFC 1925",
    "No matter how hard you push, some things cannot be made to go faster. -- RFC 1925",
];

/// The quote of the day service.
///
/// ```
/// use bytes::BytesMut;
/// use socketkit::{Transport, service::{Context, Qotd, Service}};
/// let ctx = Context::new(Transport::Udp, "127.0.0.1:5000".parse().unwrap());
/// let mut reply = BytesMut::new();
/// assert!(Qotd.message(&ctx, b"", &mut reply));
/// assert!(reply.len() < 512 && reply.ends_with(b"\r\n"));
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Qotd;

fn quote(ctx: &Context) -> String {
    let day = unix_days(ctx.now).rem_euclid(QUOTES.len() as i64) as usize;
    format!("{}\r\n", QUOTES[day])
}

impl Service for Qotd {
    type Session = OneShotSession;
    fn name(&self) -> &str {
        "qotd"
    }
    fn session(&self, ctx: &Context) -> OneShotSession {
        OneShotSession(Some(BytesMut::from(quote(ctx).as_bytes())))
    }
    fn message(&self, ctx: &Context, _request: &[u8], reply: &mut BytesMut) -> bool {
        reply.extend_from_slice(quote(ctx).as_bytes());
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_quote_fits_the_rfc() {
        assert!(
            super::QUOTES
                .iter()
                .all(|q| q.len() + 2 < 512 && q.is_ascii())
        );
    }
}
