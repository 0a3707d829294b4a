//! `socketkit bench`: drive a server, verify every reply, report throughput and latency.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use socketkit::bench::{self, Counters, Plan};

use crate::cli::BenchArgs;

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let mut plan = Plan::new(args.endpoint);
    plan.mode = args.mode;
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
    if report.mismatches > 0 {
        anyhow::bail!(socketkit::Error::Protocol(format!(
            "{} replies did not match what was sent",
            report.mismatches
        )));
    }
    if report.timeouts + report.losses > 0 {
        anyhow::bail!(socketkit::Error::TimedOut {
            what: "some replies",
            after: plan.timeout,
        });
    }
    if report.errors > 0 {
        anyhow::bail!("{} requests failed with connection errors", report.errors);
    }
    if report.ok == 0 {
        anyhow::bail!("no request was answered: the run measured nothing");
    }
    Ok(())
}

/// A live bar on stderr: a bar towards the request count, or a spinner with the count so far.
fn show_progress(
    plan: &Plan,
    counters: Arc<Counters>,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let bar = match plan.requests {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} requests {per_sec} {msg}")
                .expect("a valid template"),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {elapsed} {pos} requests {per_sec} {msg}")
                .expect("a valid template"),
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    std::thread::spawn(move || {
        while !done.load(Ordering::Relaxed) {
            bar.set_position(counters.done());
            let failed = counters.done() - counters.ok.load(Ordering::Relaxed);
            if failed > 0 {
                bar.set_message(format!("({failed} failed)"));
            }
            bar.tick();
            std::thread::sleep(Duration::from_millis(100)); // redraw rate, not synchronisation
        }
        bar.finish_and_clear();
    })
}
