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
    #[allow(unused_mut)] // mut for the tls feature
    let mut relay = Relay::new(args.target.clone())?
        .connect_timeout(args.timeout)
        .idle_timeout(args.limits.idle_timeout)
        .dump(dump);
    // --tls-alpn goes to each tls:// side; the other flags to their own side.
    let alpn = |side: &socketkit::Endpoint| match side.is_tls() {
        true => args.tls.tls_alpn.clone(),
        false => Vec::new(),
    };
    if !args.listen.is_tls() && !args.target.is_tls() && !args.tls.tls_alpn.is_empty() {
        anyhow::bail!(socketkit::Error::Config(
            "--tls-alpn is for tls:// endpoints, and neither LISTEN nor TARGET is one".into()
        ));
    }
    let listen_tls = args.tls.with_alpn(alpn(&args.listen));
    let target_tls = args.tls_target.with_alpn(alpn(&args.target));
    #[cfg(feature = "tls")]
    let (server_tls, self_signed) = super::tls::server(&listen_tls, &[&args.listen])?.unzip();
    #[cfg(feature = "tls")]
    if args.target.is_tls() {
        let options = super::tls::client(&target_tls, &args.target)?;
        relay = relay.tls(socketkit::tls::ClientTls::new(&options)?)?;
    } else {
        super::tls::client(&target_tls, &args.target)?; // flags without a tls:// TARGET
    }
    #[cfg(not(feature = "tls"))]
    super::tls::refuse(
        listen_tls.any() || target_tls.any(),
        &[&args.listen, &args.target],
    )?;
    if !matches!(args.listen.transport(), Transport::Tcp | Transport::Unix) {
        anyhow::bail!(socketkit::Error::Config(format!(
            "relay listens on tcp://, unix:// or udp://, not {}",
            args.listen
        )));
    }
    // Before binding too, so an address in use is not mistaken for the loop.
    relay.refuse_loop(std::slice::from_ref(&args.listen))?;
    let stoppers = super::serve::stop_on_signals(args.limits.grace)?;
    #[allow(unused_mut)] // mut for the tls feature
    let mut builder = args
        .limits
        .apply(Server::builder(), &access)
        .engine(Engine::Async)
        .listen(args.listen.clone())
        .async_handler(relay.clone());
    #[cfg(feature = "tls")]
    if let Some(tls) = server_tls {
        builder = builder.tls(tls);
    }
    let server = builder.bind()?;
    relay.refuse_loop(server.local_endpoints())?;
    register(&stoppers, server.shutdown_handle());
    #[cfg(feature = "tls")]
    if let Some(line) = self_signed.flatten() {
        tracing::info!("{line}");
    }
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
