//! `socketkit bench`: drive a server, verify every reply, report throughput and latency.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[cfg_attr(not(any(feature = "plot", feature = "hdr-log")), allow(unused_imports))]
use anyhow::Context;
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
    plan.engine = args.engine;
    #[cfg(feature = "tls")]
    {
        plan.tls = super::tls::client(&args.tls, &plan.endpoint)?;
    }
    #[cfg(not(feature = "tls"))]
    super::tls::refuse(args.tls.any(), &[&plan.endpoint])?;

    if plan.mode == Mode::Stream && (args.plot.is_some() || args.hdr_log.is_some()) {
        return Err(socketkit::Error::Config(
            "--plot and --hdr-log need timed requests: stream mode times none".into(),
        )
        .into());
    }
    check_plot(args.plot.as_deref())?;
    check_hdr_log(args.hdr_log.as_deref())?;

    let counters = Arc::new(Counters::default());
    let done = Arc::new(AtomicBool::new(false));
    let progress = (std::io::stderr().is_terminal() && !args.json)
        .then(|| show_progress(&plan, counters.clone(), done.clone()));
    let started = std::time::SystemTime::now();
    let report = bench::run(&plan, counters);
    done.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        let _ = progress.join();
    }
    let report = report?;

    print(&report, args.json, None)?;
    if let Some(path) = &args.plot {
        write_plot(&report, &report.parameters(), path)?;
    }
    if let Some(path) = &args.hdr_log {
        write_hdr_log(&report, started, path)?;
    }
    report.verdict(plan.timeout)?;
    Ok(())
}

/// The report on stdout, as text or one JSON object; `extra` adds fields to the JSON
/// (`socketkit report`'s list of merged runs).
pub fn print(
    report: &bench::Report,
    json: bool,
    extra: Option<(&str, serde_json::Value)>,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let mut value = report.to_json();
        if let (Some((name, field)), Some(fields)) = (extra, value.as_object_mut()) {
            fields.insert(name.to_string(), field);
        }
        writeln!(out, "{value}")?;
    } else {
        write!(out, "{report}")?;
    }
    out.flush()?;
    Ok(())
}

/// Refuses `--plot` up front (exit 2) when the binary was built without the `plot` feature.
pub fn check_plot(path: Option<&Path>) -> anyhow::Result<()> {
    if path.is_some() && !cfg!(feature = "plot") {
        return Err(socketkit::Error::Config(
            "--plot needs the plot feature: this socketkit was built without it (cargo build \
             --features plot)"
                .into(),
        )
        .into());
    }
    Ok(())
}

/// Refuses `--hdr-log` and `report` up front (exit 2) without the `hdr-log` feature.
pub fn check_hdr_log(path: Option<&Path>) -> anyhow::Result<()> {
    if path.is_some() && !cfg!(feature = "hdr-log") {
        return Err(socketkit::Error::Config(
            "HDR logs need the hdr-log feature: this socketkit was built without it (cargo \
             build --features hdr-log)"
                .into(),
        )
        .into());
    }
    Ok(())
}

/// Draws `report` into the SVG file `path`.
pub fn write_plot(report: &bench::Report, title: &str, path: &Path) -> anyhow::Result<()> {
    #[cfg(feature = "plot")]
    {
        let svg = report.to_svg(title).map_err(socketkit::Error::Config)?;
        std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))
    }
    #[cfg(not(feature = "plot"))]
    {
        let _ = (report, title);
        check_plot(Some(path))
    }
}

/// Writes `report`'s histograms as an HdrHistogram interval log into `path`.
fn write_hdr_log(
    report: &bench::Report,
    started: std::time::SystemTime,
    path: &Path,
) -> anyhow::Result<()> {
    #[cfg(feature = "hdr-log")]
    {
        std::fs::write(path, report.to_hdr_log(started))
            .with_context(|| format!("cannot write {}", path.display()))
    }
    #[cfg(not(feature = "hdr-log"))]
    {
        let _ = (report, started);
        check_hdr_log(Some(path))
    }
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
