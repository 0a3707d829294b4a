//! `socketkit serve`: bind every service's listeners, announce them, serve until a signal,
//! drain.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use socketkit::exec::Program;
use socketkit::{Endpoint, Server, ShutdownHandle, service};

use crate::cli::{ServeArgs, ServiceSpec};

/// The slides' port, on loopback: reachable from this machine only, no privileges needed.
const DEFAULT_LISTEN: [&str; 2] = ["tcp://127.0.0.1:12000", "udp://127.0.0.1:12000"];

/// Several services in one process run as several servers, one per service, stopped together.
pub fn run(args: ServeArgs, quiet: bool) -> anyhow::Result<()> {
    crate::malloc::return_large_buffers();
    let program = program(&args)?;
    let plan = plan(&args)?;
    let access = args.limits.access()?;
    let dump = args.dump.open()?;
    // Handlers first: a signal that arrives once a server is bound must stop it gracefully.
    let groups = group_plans(&plan, args.multicast_if.as_ref())?;
    let all: Vec<&Endpoint> = plan.iter().flat_map(|(_, e)| e).collect();
    #[cfg(feature = "tls")]
    let (tls, self_signed) = super::tls::server(&args.tls, &all)?.unzip();
    #[cfg(not(feature = "tls"))]
    super::tls::refuse(args.tls.any(), &all)?;
    let stoppers = stop_on_signals(args.limits.grace)?;
    let stats = socketkit::stats::Stats::new();
    let mut servers = Vec::new();
    for ((name, endpoints), has_group) in plan.into_iter().zip(groups) {
        let mut builder = args
            .limits
            .apply(Server::builder(), &access)
            .engine(args.engine)
            .datagram_rate(args.datagram_rate)
            .workers(args.workers)
            .threads(args.threads.unwrap_or(0))
            .framing(args.framing.framing())
            .max_line(args.framing.max_line)
            .max_frame(args.framing.max_frame)
            .max_buffered(usize::try_from(args.max_buffered).unwrap_or(usize::MAX))
            .stats(&stats);
        #[cfg(feature = "tls")]
        if let Some(tls) = tls
            .clone()
            .filter(|_| endpoints.iter().any(Endpoint::is_tls))
        {
            builder = builder.tls(tls);
        }
        builder = match &program {
            Some(program) => {
                warn_if_reachable(program, &endpoints, &access);
                builder.exec(program.clone())
            }
            None => {
                let mut service = service::by_name(&name).expect("checked by the parser");
                if let Some(dump) = &dump {
                    // Wrapped only when asked for: without --dump the service runs as it is.
                    service = service::AnyService::new(service::Dumped::new(service, dump.clone()));
                }
                builder.service(service)
            }
        };
        for endpoint in endpoints {
            builder = builder.listen(endpoint);
        }
        if let Some(interface) = args.multicast_if.clone().filter(|_| has_group) {
            builder = builder.multicast_interface(interface);
        }
        let server = builder.bind()?;
        // Each server is stoppable as soon as it is bound; one bound after a stop was asked for
        // stops too.
        let handle = server.shutdown_handle();
        let mut stops = stoppers.lock().unwrap_or_else(|e| e.into_inner());
        if stops.iter().any(ShutdownHandle::is_shutdown) {
            handle.shutdown();
        }
        stops.push(handle);
        drop(stops);
        servers.push(server);
    }
    let _exporter = start_metrics(args.metrics.as_ref(), stats, quiet)?;
    let mut lines = Vec::new();
    for server in &servers {
        for endpoint in server.local_endpoints() {
            lines.push(format!(
                "listening on {endpoint} ({}, {})",
                server.service_name(),
                server.engine()
            ));
        }
    }
    // Every server serves on a thread of its own; the lines come once every one is ready (on
    // the uring engine: each thread has its ring and its accepts armed), so a script or test
    // that waits for them finds every thread taking its turn at the connections.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let count = servers.len();
    let serving: Vec<_> = servers
        .into_iter()
        .map(|server| {
            let ready = ready_tx.clone();
            std::thread::spawn(move || {
                server.serve_forever_with_ready(move || {
                    let _ = ready.send(());
                })
            })
        })
        .collect();
    drop(ready_tx);
    // A server that cannot start drops its sender unused: the others are stopped, and its
    // error is the result.
    let all_ready = (0..count).all(|_| ready_rx.recv().is_ok());
    if all_ready {
        if !quiet {
            for line in &lines {
                crate::say(format_args!("{line}"));
            }
        }
        #[cfg(feature = "tls")]
        if let Some(line) = self_signed.flatten() {
            tracing::info!("{line}");
        }
    } else {
        let stops = stoppers.lock().unwrap_or_else(|e| e.into_inner());
        for stop in stops.iter() {
            stop.shutdown();
        }
    }
    let mut result = Ok(());
    for server in serving {
        let outcome = server.join().expect("a server thread panicked");
        result = result.and(outcome);
    }
    result?;
    tracing::info!("stopped");
    Ok(())
}

/// The program after `--`, if any: found now (a missing one is exit 2 before anything is
/// bound), and refused beside SERVICE names or a framing, which it would silently replace.
fn program(args: &ServeArgs) -> anyhow::Result<Option<Program>> {
    if args.program.is_empty() {
        return Ok(None);
    }
    if !args.services.is_empty() {
        let names: Vec<&str> = args.services.iter().map(|s| s.name.as_str()).collect();
        anyhow::bail!(socketkit::Error::Config(format!(
            "serve runs a SERVICE ({}) or a program after --, not both: give the program's \
             endpoints with -l",
            names.join(", ")
        )));
    }
    if args.dump.dump.is_some() {
        anyhow::bail!(socketkit::Error::Config(
            "--dump taps a service's bytes; it does not apply to a program after -- yet".into()
        ));
    }
    if args.framing.framing() != socketkit::codec::Framing::Raw {
        anyhow::bail!(socketkit::Error::Config(
            "--framing does not apply to a program: it gets the connection's bytes as they come"
                .into()
        ));
    }
    Ok(Some(Program::new(args.program.iter().cloned())?))
}

/// One warning line when a program is served beyond this machine to anyone: a program is a
/// shell's worth of power when it is one, and nc's `-e` has burnt people before.
fn warn_if_reachable(
    program: &Program,
    endpoints: &[Endpoint],
    access: &socketkit::server::AccessList,
) {
    let open: Vec<String> = endpoints
        .iter()
        .filter(|e| {
            e.socket_addrs()
                .is_ok_and(|addrs| addrs.iter().any(|a| !a.ip().is_loopback()))
        })
        .map(ToString::to_string)
        .collect();
    if !open.is_empty() && access.is_empty() {
        tracing::warn!(
            "serving {} to anyone who can reach {} (no --allow/--deny)",
            program.argv()[0].to_string_lossy(),
            open.join(", ")
        );
    }
}

/// `--metrics`: the exporter, on its own thread until it drops (after serving).
#[cfg(feature = "metrics")]
fn start_metrics(
    endpoint: Option<&Endpoint>,
    stats: socketkit::stats::Stats,
    quiet: bool,
) -> anyhow::Result<Option<socketkit::metrics::MetricsServer>> {
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let exporter = socketkit::metrics::MetricsServer::start(endpoint, stats)?;
    if !quiet {
        crate::say(format_args!(
            "metrics on http://{}/metrics",
            exporter.local_addr()
        ));
    }
    Ok(Some(exporter))
}

/// `--metrics` in a build without the `metrics` feature: a usage error.
#[cfg(not(feature = "metrics"))]
fn start_metrics(
    endpoint: Option<&Endpoint>,
    _stats: socketkit::stats::Stats,
    _quiet: bool,
) -> anyhow::Result<Option<()>> {
    match endpoint {
        None => Ok(None),
        Some(_) => anyhow::bail!(socketkit::Error::Config(
            "--metrics needs a socketkit built with the `metrics` feature".into()
        )),
    }
}

/// Which services listen on a multicast group, so `--multicast-if` goes to those; refused when
/// none does, since then it would do nothing.
fn group_plans(
    plan: &[(String, Vec<Endpoint>)],
    interface: Option<&socketkit::multicast::MulticastInterface>,
) -> anyhow::Result<Vec<bool>> {
    let Some(interface) = interface else {
        return Ok(vec![false; plan.len()]);
    };
    let mut groups = Vec::with_capacity(plan.len());
    for (_, endpoints) in plan {
        let mut any = false;
        for endpoint in endpoints {
            any |= socketkit::multicast::group_addr(endpoint)?.is_some();
        }
        groups.push(any);
    }
    if !groups.contains(&true) {
        anyhow::bail!(socketkit::Error::Config(format!(
            "--multicast-if {interface} is for multicast group listeners, and no endpoint is a \
             group (udp://GROUP:PORT, GROUP in 224.0.0.0/4 or ff00::/8)"
        )));
    }
    Ok(groups)
}

/// Which service listens where. Services given as `NAME=ENDPOINT,...` get those endpoints;
/// a bare `NAME` gets the `-l` endpoints, or the defaults. Two services cannot share them.
fn plan(args: &ServeArgs) -> anyhow::Result<Vec<(String, Vec<Endpoint>)>> {
    let default_specs = [ServiceSpec {
        name: "upper".into(),
        endpoints: Vec::new(),
    }];
    let specs = if args.services.is_empty() {
        &default_specs[..]
    } else {
        &args.services[..]
    };
    let shared: Vec<Endpoint> = if args.listen.is_empty() {
        DEFAULT_LISTEN
            .iter()
            .map(|text| text.parse().expect("a valid default endpoint"))
            .collect()
    } else {
        args.listen.clone()
    };
    let bare: Vec<&str> = specs
        .iter()
        .filter(|s| s.endpoints.is_empty())
        .map(|s| s.name.as_str())
        .collect();
    if bare.len() > 1 {
        anyhow::bail!(socketkit::Error::Config(format!(
            "{} would share the same endpoints: give each its own as \
             SERVICE=ENDPOINT[,ENDPOINT...] (e.g. echo=tcp://127.0.0.1:7007)",
            bare.join(" and ")
        )));
    }
    if bare.is_empty() && !args.listen.is_empty() {
        anyhow::bail!(socketkit::Error::Config(
            "-l gives endpoints to a service named without =ENDPOINT, and every service has \
             its own"
                .into()
        ));
    }
    Ok(specs
        .iter()
        .map(|spec| {
            let endpoints = if spec.endpoints.is_empty() {
                shared.clone()
            } else {
                spec.endpoints.clone()
            };
            (spec.name.clone(), endpoints)
        })
        .collect())
}

/// SIGINT, SIGTERM or SIGHUP starts a graceful stop (SIGHUP too: a terminal that closes must
/// not kill the server with its connections and leave its socket files); a second one ends the
/// process at once (exit 130). Before any server is bound (while resolving names, say), a
/// signal ends the process at once too. Ending at once skips destructors, so it goes through
/// `socketkit::server::exit`, which removes the Unix socket files first.
pub fn stop_on_signals(
    grace: std::time::Duration,
) -> anyhow::Result<Arc<Mutex<Vec<ShutdownHandle>>>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let handles: Arc<Mutex<Vec<ShutdownHandle>>> = Arc::default();
    let slot = handles.clone();
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("cannot install the signal handlers")?;
    std::thread::Builder::new()
        .name("socketkit-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = match signal {
                    SIGINT => "SIGINT",
                    SIGTERM => "SIGTERM",
                    _ => "SIGHUP",
                };
                // Held while stopping, so no server is bound and registered meanwhile.
                let stops = slot.lock().unwrap_or_else(|e| e.into_inner());
                if stops.is_empty() {
                    crate::say(format_args!(
                        "socketkit: {name} before serving started: stopping now"
                    ));
                    socketkit::server::exit(130);
                }
                if stops.iter().any(ShutdownHandle::is_shutdown) {
                    crate::say(format_args!("socketkit: {name} again: stopping now"));
                    socketkit::server::exit(130);
                }
                // Said before it is done, so the line is out before the process may exit; the
                // logger ignores a closed stderr, so saying it cannot stop the stopping.
                tracing::info!(
                    "{name}: shutting down; connections in flight have {grace:?} to finish \
                     (a second signal stops at once)"
                );
                stops.iter().for_each(ShutdownHandle::shutdown);
            }
        })
        .context("cannot start the signal thread")?;
    Ok(handles)
}
