//! `socketkit relay LISTEN TARGET`: each peer of LISTEN gets its own connection to TARGET,
//! served by the async engine (permits, time-outs, access lists, drain), stopped like serve.

use std::sync::{Arc, Mutex};

use socketkit::relay::{DatagramRelay, Relay};
use socketkit::{Engine, Server, ShutdownHandle, Transport};

use crate::cli::RelayArgs;

pub fn run(args: RelayArgs, quiet: bool) -> anyhow::Result<()> {
    let access = args.limits.access()?;
    let dump = args.dump.open()?;
    if args.listen.transport() == Transport::Udp {
        let relay = DatagramRelay::bind(&args.listen, args.target.clone())?
            .idle_timeout(args.limits.idle_timeout)
            .max_clients(args.limits.max_connections)
            .access(access)
            .dump(dump);
        let stoppers = super::serve::stop_on_signals(args.limits.grace)?;
        register(&stoppers, relay.shutdown_handle());
        if !quiet {
            crate::say(format_args!(
                "listening on {} (relay to {}, one upstream socket per client)",
                relay.local_endpoint(),
                args.target
            ));
        }
        relay.serve_forever()?;
        tracing::info!("stopped");
        return Ok(());
    }
    let relay = Relay::new(args.target.clone())?
        .connect_timeout(args.timeout)
        .idle_timeout(args.limits.idle_timeout)
        .dump(dump);
    if !matches!(args.listen.transport(), Transport::Tcp | Transport::Unix) {
        anyhow::bail!(socketkit::Error::Config(format!(
            "relay listens on tcp://, unix:// or udp://, not {}",
            args.listen
        )));
    }
    // Before binding too, so an address in use is not mistaken for the loop.
    relay.refuse_loop(std::slice::from_ref(&args.listen))?;
    let stoppers = super::serve::stop_on_signals(args.limits.grace)?;
    let server = args
        .limits
        .apply(Server::builder(), &access)
        .engine(Engine::Async)
        .listen(args.listen.clone())
        .async_handler(relay.clone())
        .bind()?;
    relay.refuse_loop(server.local_endpoints())?;
    register(&stoppers, server.shutdown_handle());
    if !quiet {
        for endpoint in server.local_endpoints() {
            crate::say(format_args!(
                "listening on {endpoint} (relay to {}, async)",
                args.target
            ));
        }
    }
    server.serve_forever()?;
    tracing::info!("stopped");
    Ok(())
}

/// Makes `handle` stop on the signals; one signal already come stops it at once.
fn register(stoppers: &Arc<Mutex<Vec<ShutdownHandle>>>, handle: ShutdownHandle) {
    let mut stops = stoppers.lock().unwrap_or_else(|e| e.into_inner());
    if stops.iter().any(ShutdownHandle::is_shutdown) {
        handle.shutdown();
    }
    stops.push(handle);
}
