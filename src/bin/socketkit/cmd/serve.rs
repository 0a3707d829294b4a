//! `socketkit serve`: bind, announce, serve until a signal, drain.

use std::sync::{Arc, Mutex};

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
        .idle_timeout(args.idle_timeout)
        .max_connections(args.max_connections)
        .workers(args.workers);
    builder = match args.service.as_str() {
        "upper" => builder.service(Upper),
        other => anyhow::bail!("unknown service {other:?}"),
    };
    for endpoint in endpoints {
        builder = builder.listen(endpoint);
    }
    // Handlers first: a signal that arrives once the port is announced must stop us gracefully.
    let stopper = stop_on_signals(args.grace)?;
    let server = builder.bind()?;
    *stopper.lock().unwrap_or_else(|e| e.into_inner()) = Some(server.shutdown_handle());
    if !quiet {
        for endpoint in server.local_endpoints() {
            eprintln!(
                "listening on {endpoint} ({}, {})",
                server.service_name(),
                server.engine()
            );
        }
    }
    server.serve_forever()?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGINT or SIGTERM starts a graceful stop; a second one ends the process at once (exit 130).
/// Before the server exists (while binding), a signal ends the process at once too.
fn stop_on_signals(
    grace: std::time::Duration,
) -> anyhow::Result<Arc<Mutex<Option<ShutdownHandle>>>> {
    let handle: Arc<Mutex<Option<ShutdownHandle>>> = Arc::default();
    let slot = handle.clone();
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
                let stop = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let Some(stop) = stop else {
                    eprintln!("socketkit: {name} before serving started: stopping now");
                    std::process::exit(130);
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
    Ok(handle)
}
