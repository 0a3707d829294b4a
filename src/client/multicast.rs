//! UDP multicast: one datagram to a group, every member's reply within the time-out, one line
//! per responder (the gathering is broadcast's, shared).

use std::io::{Read, Write};
use std::net::SocketAddr;

use super::broadcast::{gather, open};
use super::errors::io_err;
use super::input::read_datagram;
use super::options::SendOptions;
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::multicast::{group_addr, set_sender_options};

/// Sends one UDP datagram to a multicast group (224.0.0.0/4, ff00::/8) and writes every reply
/// that arrives within the timeout as `ADDRESS REPLY` lines, one per responder, as
/// [`broadcast`](super::broadcast()) does. `options.multicast_ttl` and
/// `options.multicast_loop` set the request's hop limit and whether this host's own members
/// get it. Returns the responders in the order they answered.
///
/// Each member answers from its own unicast address, so the socket is not connected, and
/// replies from any address count.
///
/// # Errors
///
/// [`Error::Config`] for an endpoint that is not a `udp://` multicast group, or options out of
/// range; [`Error::TimedOut`] when nobody answers; [`Error::Bind`] when `options.bind` cannot be
/// bound.
pub fn multicast(
    endpoint: &Endpoint,
    input: impl Read,
    output: &mut dyn Write,
    options: &SendOptions,
) -> Result<Vec<SocketAddr>, Error> {
    options.check()?;
    let group = group_addr(endpoint)?.ok_or_else(|| {
        Error::Config(format!(
            "{endpoint} is not a multicast group (udp://GROUP:PORT, GROUP in 224.0.0.0/4 or \
             ff00::/8)"
        ))
    })?;
    let message = read_datagram(input)?;
    let socket = open(options, group)?;
    set_sender_options(
        socket2::SockRef::from(&socket),
        group,
        options.multicast_ttl,
        options.multicast_loop,
    )
    .map_err(|e| io_err("setting the multicast options", e))?;
    gather(&socket, group, &message, output, options)
}
