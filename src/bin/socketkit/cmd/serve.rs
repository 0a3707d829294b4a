//! `socketkit serve`: bind, announce, serve until a signal, drain.

use anyhow::Context as _;
use socketkit::{Endpoint, Server, ShutdownHandle, service::Upper};

use crate::cli::ServeArgs;

/// The slides' port, on loopback: reachable from this machine only, no privileges needed.
const DEFAULT_LISTEN: [&str; 2] = ["tcp://127.0.0.1:12000", "udp://127.0.0.1:12000"];

pub fn run(args: ServeArgs, quiet: bool) -> anyhow::Result<()> {
    let endpoints: Vec<Endpoint> = if args.listen.is_empty() {
        DEFAULT_LISTEN
            .iter()
            .map(|text| text.parse().expect("a valid default endpoint"))
            .collect()
    } else {
        args.listen
    };
    let mut builder = Server::builder()
        .engine(args.engine)
        .backlog(args.backlog)
        .grace(args.grace)
        .idle_timeout(args.idle_timeout);
    builder = match args.service.as_str() {
        "upper" => builder.service(Upper),
        other => anyhow::bail!("unknown service {other:?}"),
    };
    for endpoint in endpoints {
        builder = builder.listen(endpoint);
    }
    let server = builder.bind()?;
    if !quiet {
        for endpoint in server.local_endpoints() {
            eprintln!(
                "listening on {endpoint} ({}, {})",
                server.service_name(),
                server.engine()
            );
        }
    }
    stop_on_signals(server.shutdown_handle(), args.grace)?;
    server.serve_forever()?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT or SIGTERM starts a graceful stop; a second one ends the process at once (exit 130).
fn stop_on_signals(stop: ShutdownHandle, grace: std::time::Duration) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install the signal handlers")?;
    std::thread::Builder::new()
        .name("socketkit-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                if stop.is_shutdown() {
                    eprintln!("socketkit: {name} again: stopping now");
                    std::process::exit(130);
                }
                tracing::info!(
                    "{name}: shutting down; connections in flight have {grace:?} to finish \
                     (a second signal stops at once)"
                );
                stop.shutdown();
            }
        })
        .context("cannot start the signal thread")?;
    Ok(())
}
