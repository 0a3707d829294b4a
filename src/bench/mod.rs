//! The load generator behind `socketkit bench`: honest numbers for any server.
//!
//! Every reply is checked against the exact bytes expected (the request in upper case for
//! `upper`, the request itself for `echo`); mismatches, errors, time-outs and losses are counted
//! apart. With a fixed rate (`--rate`, an open model) each request's latency counts from the
//! moment it was *meant* to go out, so a server that stalls shows in the percentiles instead of
//! silently slowing the load down (coordinated omission); requests are paced precisely (see
//! `pace`), and how late each actually left is reported apart as the schedule lag. Latencies go
//! into HDR histograms. Replies are read while requests are written, so no message size can
//! deadlock, and `Plan::timeout` bounds every wait.

mod converse;
mod counters;
#[cfg(feature = "hdr-log")]
mod hdrlog;
mod merge;
mod pace;
mod plan;
#[cfg(feature = "plot")]
mod plot;
#[cfg(feature = "hdr-log")]
mod read;
mod recording;
mod report;
mod run;
mod target;
mod timeline;
#[cfg(feature = "uring")]
mod uring;
mod worker;

use std::sync::Arc;

#[cfg(feature = "hdr-log")]
pub use hdrlog::{HdrLogWriter, LogError};
pub use plan::{Expect, Mode, Payload, Plan};
pub use recording::{Recording, Second};
#[cfg(feature = "hdr-log")]
pub use recording::{decode, encode};
pub use report::{Counters, CpuTime, Failure, Latency, Report};
pub use timeline::MAX_POINTS;

use crate::Engine;
use crate::endpoint::Transport;
use crate::error::Error;
use run::Run;
use target::Target;

/// Runs `plan`, updating `counters` as it goes (for a progress display), and returns the report.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use socketkit::bench::{self, Counters, Plan};
/// use socketkit::Server;
///
/// let server = Server::builder().listen("tcp://127.0.0.1:0".parse()?).bind()?;
/// let mut plan = Plan::new(server.local_endpoints()[0].clone());
/// plan.requests = Some(100);
/// let stop = server.shutdown_handle();
/// let serving = std::thread::spawn(move || server.serve_forever());
///
/// let report = bench::run(&plan, Arc::new(Counters::default()))?;
/// assert_eq!(report.ok, 100);
/// assert!(!report.failed());
/// # stop.shutdown();
/// # serving.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Errors
///
/// [`Error::Config`] for a mode that does not fit the endpoint (`udp` needs `udp://`, the others
/// a stream) or settings out of range; [`Error::NameNotFound`] for a host that does not
/// resolve. Failures while running are counted in the report, not returned.
pub fn run(plan: &Plan, counters: Arc<Counters>) -> Result<Report, Error> {
    check(plan)?;
    let target = Target::of(&plan.endpoint)?;
    let mut plan = plan.clone();
    plan.engine = resolve(plan.engine);
    #[cfg(feature = "uring")]
    if plan.engine == Engine::Uring {
        return run_uring(&plan, counters, target);
    }
    let plan = &plan;
    #[cfg(feature = "tls")]
    let tls = match plan.endpoint.is_tls() {
        true => {
            let tls = crate::tls::ClientTls::new(&plan.tls)?;
            let name = tls.server_name(&plan.endpoint)?;
            Some((tls, name))
        }
        false => None,
    };
    #[cfg(not(feature = "tls"))]
    if plan.endpoint.is_tls() {
        return Err(Error::Config(format!(
            "{}: this socketkit was built without the `tls` feature",
            plan.endpoint
        )));
    }
    // With a fixed rate, each task waits on a timerfd of its own.
    raise_descriptor_limit(plan.connections * if plan.rate.is_some() { 2 } else { 1 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("socketkit-bench")
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", e))?;
    let cpu_before = report::CpuTime::now();
    #[allow(unused_mut)] // mut for the tls feature
    let mut run = Run::new(plan.clone(), counters.clone(), target);
    #[cfg(feature = "tls")]
    {
        run.tls = tls;
    }
    let run = Arc::new(run);
    let elapsed = closing_seconds(&run, || {
        runtime.block_on(async {
            let tasks: Vec<_> = (0..plan.connections.max(1))
                .map(|index| tokio::spawn(worker::task(run.clone(), index)))
                .collect();
            for task in tasks {
                let _ = task.await;
            }
            run.start.elapsed()
        })
    })?;
    let own_cpu = report::CpuTime::now()
        .zip(cpu_before)
        .map(|(after, before)| after.since(before));
    Ok(Report::new(plan, &counters, elapsed, own_cpu))
}

/// Runs `load`, the run's seconds closed as they end when the run keeps them (`--plot`,
/// `--hdr-log`), by a thread of its own (the sink may write a file), until the load is over
/// (then the report closes the rest).
fn closing_seconds<T>(run: &Run, load: impl FnOnce() -> T) -> Result<T, Error> {
    if !run.counters.keeps_seconds() {
        return Ok(load());
    }
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let (counters, start) = (run.counters.clone(), run.start.into_std());
    let closer = std::thread::Builder::new()
        .name("socketkit-bench-seconds".into())
        .spawn(move || close_seconds(&counters, start, &stopped))
        .map_err(|e| Error::io("cannot start a thread", e))?;
    let done = load();
    drop(stop);
    let _ = closer.join();
    Ok(done)
}

/// Closes each second of the run as it ends, until `stopped` says the run is over (then the
/// report closes the rest).
fn close_seconds(
    counters: &Counters,
    start: std::time::Instant,
    stopped: &std::sync::mpsc::Receiver<()>,
) {
    let mut next = 1u64;
    loop {
        let at = start + std::time::Duration::from_secs(next);
        let wait = at.saturating_duration_since(std::time::Instant::now());
        match stopped.recv_timeout(wait) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // Read before the tasks' figures are taken: a task records later, into a
                // later second.
                let now = start.elapsed().as_secs();
                counters.close_before(now);
                next = now + 1;
            }
            _ => return,
        }
    }
}

/// [`run`] on io_uring: one ring per thread, as many threads as this process may use CPUs.
#[cfg(feature = "uring")]
fn run_uring(plan: &Plan, counters: Arc<Counters>, target: Target) -> Result<Report, Error> {
    raise_descriptor_limit(plan.connections);
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let cpu_before = report::CpuTime::now();
    let run = Run::new(plan.clone(), counters.clone(), target);
    closing_seconds(&run, || uring::run(&run, threads))?
        .map_err(|e| Error::io("cannot run the load on io_uring", e))?;
    let elapsed = run.start.elapsed();
    let own_cpu = report::CpuTime::now()
        .zip(cpu_before)
        .map(|(after, before)| after.since(before));
    Ok(Report::new(plan, &counters, elapsed, own_cpu))
}

/// The engine the load really runs on: io_uring where asked for and the kernel allows it (the
/// uring engine's probe, `SOCKETKIT_URING=refuse` included), else the async engine, with one
/// warning line naming the cause and the fix.
fn resolve(engine: Engine) -> Engine {
    if engine != Engine::Uring {
        return engine;
    }
    match crate::engine::uring_refusal() {
        None => Engine::Uring,
        Some((cause, fix)) => {
            tracing::warn!(
                "bench cannot use io_uring ({cause}); running the load on the async engine \
                 instead. To use io_uring: {fix}"
            );
            Engine::Async
        }
    }
}

/// The modes `--engine uring` runs, for its usage error.
const URING_MODES: &str = "pingpong (tcp:// and unix://) and udp";

fn check(plan: &Plan) -> Result<(), Error> {
    match plan.engine {
        Engine::Async => {}
        Engine::Uring => {
            let transport = plan.endpoint.transport();
            let fits = match plan.mode {
                Mode::Pingpong => matches!(transport, Transport::Tcp | Transport::Unix),
                Mode::Udp => true,
                _ => false,
            };
            if !fits {
                return Err(Error::Config(format!(
                    "bench --engine uring runs {URING_MODES}, not {} on {transport}: use \
                     --engine async",
                    plan.mode.name()
                )));
            }
            if plan.endpoint.is_tls() {
                return Err(Error::Config(
                    "bench --engine uring runs plain tcp://, not tls://: use --engine async".into(),
                ));
            }
            if plan.rate.is_some() {
                return Err(Error::Config(
                    "bench --engine uring runs as fast as replies come: --rate needs --engine \
                     async"
                        .into(),
                ));
            }
        }
        other => {
            return Err(Error::Config(format!(
                "bench runs on the async or uring engine, not {other}"
            )));
        }
    }
    let transport = plan.endpoint.transport();
    let fits = match plan.mode {
        Mode::Udp => transport == Transport::Udp,
        // Many requests per write: on records, one record each would be one request.
        Mode::Stream => transport.is_stream(),
        _ => transport.is_connected(),
    };
    if !fits {
        return Err(Error::Config(format!(
            "mode {} cannot run on {} (udp needs udp://, stream tcp:// or unix://, the others \
             tcp://, unix:// or unixpacket://)",
            plan.mode.name(),
            transport
        )));
    }
    if transport == Transport::UnixSeqpacket && plan.framing != crate::codec::Framing::Raw {
        return Err(Error::Config(format!(
            "{} keeps message boundaries itself (one record is one message): framing {} does \
             not apply",
            plan.endpoint, plan.framing
        )));
    }
    if plan.connections == 0 || plan.pipeline == 0 || plan.size == 0 {
        return Err(Error::Config(
            "connections, pipeline and size must be at least 1".into(),
        ));
    }
    if plan.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(Error::Config("the rate must be a positive number".into()));
    }
    // The same rule as every other time-out in socketkit: more than zero, at most a year.
    if plan.timeout.is_zero() || plan.timeout > crate::MAX_TIMEOUT {
        return Err(Error::Config(
            "the time-out must be more than zero and at most 365 days".into(),
        ));
    }
    Ok(())
}

/// Many connections need many descriptors: raise the soft limit to the hard one, and say so
/// when even that is too low.
fn raise_descriptor_limit(connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let wanted = connections as u64 + 64;
    if soft >= wanted {
        return;
    }
    if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        tracing::debug!("raised the descriptor limit from {soft} to {hard}");
    }
    if hard < wanted {
        tracing::warn!(
            "the descriptor limit ({hard}) is below the {connections} connections asked for"
        );
    }
}
