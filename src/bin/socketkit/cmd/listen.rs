//! `socketkit listen`: nc -l, one peer at a time over stdin and stdout.

use std::io;

use socketkit::Endpoint;
use socketkit::client::{ListenEvents, ListenOptions, listen};
use socketkit::service::Address;

use crate::cli::ListenArgs;

/// Logs what `listen` does: where it listens, and (with -v) each peer, as ncat -v does.
struct Log {
    verbose: bool,
}

impl ListenEvents for Log {
    fn listening(&mut self, endpoint: &Endpoint) {
        tracing::info!("listening on {endpoint}");
    }
    fn peer(&mut self, peer: &Address) {
        if self.verbose {
            tracing::info!("connection from {peer}");
        }
    }
}

pub fn run(args: ListenArgs, verbose: bool) -> anyhow::Result<()> {
    let endpoint = args.endpoint()?;
    let mut options = ListenOptions::default();
    options.keep_open = args.keep_open;
    options.no_shutdown = args.no_shutdown;
    options.idle_timeout = args.idle_timeout;
    for cidr in &args.allow {
        options.access.allow(cidr)?;
    }
    for cidr in &args.deny {
        options.access.deny(cidr)?;
    }
    options.dump = args.dump.open()?;
    #[cfg(feature = "tls")]
    let self_signed = match super::tls::server(&args.tls, &[&endpoint])? {
        Some((tls, line)) => {
            options.tls = Some(tls);
            line
        }
        None => None,
    };
    #[cfg(not(feature = "tls"))]
    super::tls::refuse(args.tls.any(), &[&endpoint])?;
    #[cfg(feature = "tls")]
    if let Some(line) = self_signed {
        tracing::info!("{line}");
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let input = io::BufReader::new(io::stdin());
    listen(&endpoint, input, &mut out, &options, &mut Log { verbose })?;
    Ok(())
}
