//! `socketkit bench`: drive a server, verify every reply, report throughput and latency.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use socketkit::bench::{self, Counters, Mode, Plan};
use socketkit::endpoint::Transport;

use crate::cli::BenchArgs;

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut plan = Plan::new(args.endpoint);
    // A udp:// endpoint has one mode that fits it: take it unless another was asked for.
    plan.mode = args.mode.unwrap_or(match plan.endpoint.transport() {
        Transport::Udp => Mode::Udp,
        _ => Mode::Pingpong,
    });
    plan.connections = args.connections;
    plan.size = args.size;
    plan.pipeline = args.pipeline;
    plan.rate = args.rate;
    plan.duration = args.duration;
    plan.requests = args.requests;
    plan.stream_bytes = args.stream_bytes;
    plan.timeout = args.timeout;
    plan.framing = args.framing.framing();
    plan.payload = args.payload;
    plan.expect = args.expect;
    #[cfg(feature = "tls")]
    {
        plan.tls = super::tls::client(&args.tls, &plan.endpoint)?;
    }
    #[cfg(not(feature = "tls"))]
    super::tls::refuse(args.tls.any(), &[&plan.endpoint])?;

    let counters = Arc::new(Counters::default());
    let done = Arc::new(AtomicBool::new(false));
    let progress = (std::io::stderr().is_terminal() && !args.json)
        .then(|| show_progress(&plan, counters.clone(), done.clone()));
    let report = bench::run(&plan, counters);
    done.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        let _ = progress.join();
    }
    let report = report?;

    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", report.to_json())?;
    } else {
        write!(out, "{report}")?;
    }
    out.flush()?;
    report.verdict(plan.timeout)?;
    Ok(())
}

/// A live bar on stderr: a bar towards the request count, or a spinner with the count so far.
fn show_progress(
    plan: &Plan,
    counters: Arc<Counters>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    // indicatif's own {per_sec} shows four decimals and counts the bar's unit; the library's
    // progress text counts what the mode moves (bytes for a stream) in whole units.
    let mode = plan.mode;
    let bar = match plan
        .requests
        .filter(|_| !matches!(mode, Mode::Stream | Mode::Idle))
    {
        Some(n) => ProgressBar::new(n)
            .with_style(ProgressStyle::with_template("{bar:40} {msg}").expect("a valid template")),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("a valid template"),
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    let start = std::time::Instant::now();
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            bar.set_position(counters.done());
            bar.set_message(counters.progress(mode, start.elapsed()));
            bar.tick();
            std::thread::sleep(Duration::from_millis(100)); // redraw rate, not synchronisation
        }
        bar.finish_and_clear();
    })
}
