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

    // The run over time only for the outputs that show it, each in bounded memory: the plot
    // keeps at most MAX_POINTS points, the log is written as each second ends. --json and
    // the summary need only the whole histograms.
    let mut counters = Counters::default();
    if args.plot.is_some() {
        counters = counters.with_timeline(bench::MAX_POINTS);
    }
    #[cfg(feature = "hdr-log")]
    let log = match &args.hdr_log {
        Some(path) => {
            let log = HdrLog::create(path, &plan, std::time::SystemTime::now())?;
            counters = counters.each_second(log.sink());
            Some(log)
        }
        None => None,
    };
    let counters = Arc::new(counters);
    let done = Arc::new(AtomicBool::new(false));
    let progress = (std::io::stderr().is_terminal() && !args.json)
        .then(|| show_progress(&plan, counters.clone(), done.clone()));
    let report = bench::run(&plan, counters);
    done.store(true, Ordering::Relaxed);
    if let Some(progress) = progress {
        let _ = progress.join();
    }
    #[cfg(feature = "hdr-log")]
    let report = report.inspect_err(|_| {
        if let Some(log) = &log {
            log.discard();
        }
    });
    let report = report?;

    print(&report, args.json, None)?;
    if let Some(path) = &args.plot {
        write_plot(&report, &report.parameters(), path)?;
    }
    #[cfg(feature = "hdr-log")]
    if let Some(log) = log {
        log.finish(&report)?;
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

/// `--hdr-log FILE`: the interval log, written as the run goes (each second as it ends, from
/// the run's closing thread), so a long run holds none of it in memory.
#[cfg(feature = "hdr-log")]
struct HdrLog {
    path: std::path::PathBuf,
    writer: Arc<std::sync::Mutex<Option<bench::HdrLogWriter<std::io::BufWriter<std::fs::File>>>>>,
}

#[cfg(feature = "hdr-log")]
impl HdrLog {
    /// Creates FILE and writes the log's head, before the run: a path that cannot be written
    /// fails at once, not after a long run.
    fn create(path: &Path, plan: &Plan, started: std::time::SystemTime) -> anyhow::Result<HdrLog> {
        let cannot = || format!("cannot write {}", path.display());
        let file = std::fs::File::create(path).with_context(cannot)?;
        let writer = bench::HdrLogWriter::new(std::io::BufWriter::new(file), plan, started)
            .with_context(cannot)?;
        Ok(HdrLog {
            path: path.to_path_buf(),
            writer: Arc::new(std::sync::Mutex::new(Some(writer))),
        })
    }

    /// What [`Counters::each_second`] calls.
    fn sink(&self) -> impl FnMut(u64, &bench::Second) + Send + 'static {
        let writer = self.writer.clone();
        move |number, second| {
            if let Some(writer) = writer.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                writer.write(number, second);
            }
        }
    }

    /// Ends the log with the run's results.
    fn finish(self, report: &bench::Report) -> anyhow::Result<()> {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(writer) = writer {
            let out = writer
                .finish(report)
                .with_context(|| format!("cannot write {}", self.path.display()))?;
            out.into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("cannot write {}", self.path.display()))?;
        }
        Ok(())
    }

    /// Removes the log of a run that could not start.
    fn discard(&self) {
        self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        let _ = std::fs::remove_file(&self.path);
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
