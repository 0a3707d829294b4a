//! `socketkit send`: one message, one reply, on stdout byte for byte (or, with --broadcast,
//! every reply that comes, one line per responder; and so for a multicast group).

use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;

use socketkit::client::{SendOptions, broadcast, multicast, send};

use crate::cli::{FramingArgs, SendArgs};

pub fn run(args: SendArgs) -> anyhow::Result<()> {
    let mut options = options(args.bind, args.timeout, &args.framing);
    options.quit_after = args.quit_after;
    options.no_wait = args.no_wait;
    options.max_time = args.max_time;
    options.multicast_ttl = args.ttl;
    options.multicast_loop = args.multicast_loop;
    #[cfg(feature = "tls")]
    {
        options.tls = super::tls::client(&args.tls, &args.endpoint)?;
    }
    #[cfg(not(feature = "tls"))]
    super::tls::refuse(args.tls.any(), &[&args.endpoint])?;
    options.dump = args.dump.open()?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let input: Box<dyn Read + Send> = match &args.message {
        Some(message) => Box::new(io::Cursor::new(message.as_bytes().to_vec())),
        None => Box::new(io::stdin()),
    };
    if args.broadcast {
        broadcast(&args.endpoint, input, &mut out, &options)?;
    } else if socketkit::multicast::group_addr(&args.endpoint)?.is_some() {
        multicast(&args.endpoint, input, &mut out, &options)?;
    } else {
        send(&args.endpoint, input, &mut out, &options)?;
    }
    Ok(())
}

/// Client options from the shared flags.
pub fn options(
    bind: Option<std::net::SocketAddr>,
    timeout: std::time::Duration,
    framing: &FramingArgs,
) -> SendOptions {
    let mut options = SendOptions::default();
    options.bind = bind;
    options.timeout = timeout;
    options.framing = framing.framing();
    options.max_line = framing.max_line;
    options.max_frame = framing.max_frame;
    options
}
