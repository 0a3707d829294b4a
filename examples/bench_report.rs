//! The benchmark report: reads the runs `scripts/bench.sh` recorded (`results.ndjson`) and
//! writes `report.md` (a scenario × server matrix of throughput and server CPU per request,
//! ratios against the tokio baseline, the C epoll server and Python's ThreadingTCPServer, the
//! load generator's own CPU, latency, issue 5's targets, the machine) and `chart.svg` (one
//! panel of bars per scenario).
//!
//! Run by the script; by hand (the `plot` feature brings in plotters):
//!
//! ```text
//! cargo run --release --features plot --example bench_report -- \
//!     target/bench-report/results.ndjson target/bench-report
//! ```
//!
//! A cell is the median of its runs. A cell with a failed run shows `error`, never a number,
//! and a scenario a server cannot serve shows `n/a`, its reason in the notes.
//!
//! With `bench.sh --against REV` the results hold a `socketkit@REV ENGINE` server beside each
//! socketkit engine (`ab_of` names it), and the report opens with an A/B table: this tree's
//! server CPU per request and throughput over REV's, paired run by run.

use std::collections::HashMap;
use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde_json::Value;

/// The servers the ratios are taken against, and the one the targets are about.
const TOKIO: &str = "tokio";
/// The C peer (benches/epoll_baseline.c): n/a in every cell where no C compiler was found.
const C_EPOLL: &str = "c-epoll";
const PYTHON: &str = "py-threading";
/// The Python peer of the summary where ThreadingTCPServer cannot serve (UDP).
const PYTHON_UDP: &str = "py-udp";
const ASYNC: &str = "socketkit-async";
/// The io_uring engine's row, measured against C epoll by the performance issue's targets.
const URING: &str = "socketkit-uring";

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(input), Some(out_dir), None) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: bench_report RESULTS.ndjson OUT_DIR");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(&input)
        .map_err(|e| format!("cannot read {}: {e}", input.to_string_lossy()))?;
    let results = Results::parse(&text)?;
    let out_dir = PathBuf::from(out_dir);
    std::fs::write(out_dir.join("report.md"), markdown(&results))?;
    chart(&results, &out_dir.join("chart.svg"))?;
    Ok(())
}

// --- the runs -----------------------------------------------------------------------------

/// What a scenario's cells measure.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    RequestsPerSecond,
    GigabytesPerSecond,
    KilobytesPerConnection,
}

impl Unit {
    fn parse(text: &str) -> Option<Unit> {
        match text {
            "req/s" => Some(Unit::RequestsPerSecond),
            "GB/s" => Some(Unit::GigabytesPerSecond),
            "KB/conn" => Some(Unit::KilobytesPerConnection),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Unit::RequestsPerSecond => "req/s",
            Unit::GigabytesPerSecond => "GB/s",
            Unit::KilobytesPerConnection => "KB/conn",
        }
    }

    /// The unit of the server's CPU time in this scenario.
    fn cpu_label(self) -> &'static str {
        match self {
            Unit::RequestsPerSecond => "CPU µs/req",
            Unit::GigabytesPerSecond => "CPU s/GB",
            Unit::KilobytesPerConnection => "CPU µs/conn",
        }
    }

    fn format(self, value: f64) -> String {
        match self {
            Unit::RequestsPerSecond => si(value),
            Unit::GigabytesPerSecond if value < 0.1 => format!("{value:.3}"),
            Unit::GigabytesPerSecond => format!("{value:.2}"),
            Unit::KilobytesPerConnection => format!("{value:.1}"),
        }
    }
}

struct Server {
    id: String,
    label: String,
    what: String,
    /// An A/B row (`bench.sh --against`): the id of this tree's server it was built from.
    ab_of: Option<String>,
}

struct Scenario {
    id: String,
    label: String,
    unit: Unit,
    args: String,
}

/// One run of one cell, as the script recorded it.
struct Run {
    scenario: String,
    server: String,
    /// Runs with the same number ran close in time (the script interleaves the servers).
    number: u64,
    /// Share of the machine's CPU time that other work took during the run, in ‰.
    others: Option<f64>,
    error: Option<String>,
    cpu_ticks: Option<f64>,
    rss_before_kb: Option<f64>,
    rss_held_kb: Option<f64>,
    /// Idle: the most connections the server had open at once.
    held: Option<f64>,
    /// Idle: the server never had them all open at once (a Python peer's listen backlog).
    short: bool,
    /// `socketkit bench --json`'s report.
    bench: Option<Value>,
}

struct Results {
    meta: Value,
    servers: Vec<Server>,
    scenarios: Vec<Scenario>,
    /// (scenario, server) → why the server cannot serve it.
    not_served: HashMap<(String, String), String>,
    runs: Vec<Run>,
    /// The pacing figure's runs: (closed-loop report, `--rate 1000` report), errors left out.
    pacing: Vec<(Value, Value)>,
}

fn text(value: &Value, key: &str) -> String {
    match &value[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Results {
    fn parse(ndjson: &str) -> Result<Results> {
        let mut results = Results {
            meta: Value::Null,
            servers: Vec::new(),
            scenarios: Vec::new(),
            not_served: HashMap::new(),
            runs: Vec::new(),
            pacing: Vec::new(),
        };
        for (number, line) in ndjson.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let record: Value = serde_json::from_str(line)
                .map_err(|e| format!("results line {}: {e}", number + 1))?;
            match record["type"].as_str() {
                Some("meta") => results.meta = record,
                Some("server") => results.servers.push(Server {
                    id: text(&record, "id"),
                    label: text(&record, "label"),
                    what: text(&record, "what"),
                    ab_of: record["ab_of"].as_str().map(str::to_owned),
                }),
                Some("scenario") => results.scenarios.push(Scenario {
                    id: text(&record, "id"),
                    label: text(&record, "label"),
                    unit: Unit::parse(&text(&record, "unit"))
                        .ok_or_else(|| format!("results line {}: unknown unit", number + 1))?,
                    args: text(&record, "args"),
                }),
                Some("na") => {
                    results.not_served.insert(
                        (text(&record, "scenario"), text(&record, "server")),
                        text(&record, "reason"),
                    );
                }
                Some("run") => results.runs.push(Run {
                    scenario: text(&record, "scenario"),
                    server: text(&record, "server"),
                    number: record["run"].as_u64().unwrap_or(0),
                    others: record["others_permille"].as_f64(),
                    error: record["error"].as_str().map(str::to_owned),
                    cpu_ticks: record["cpu_ticks"].as_f64(),
                    rss_before_kb: record["rss_before_kb"].as_f64(),
                    rss_held_kb: record["rss_held_kb"].as_f64(),
                    held: record["held"].as_f64(),
                    short: record["short"].as_bool().unwrap_or(false),
                    bench: Some(record["bench"].clone()).filter(|b| b.is_object()),
                }),
                Some("pacing") => {
                    if record["error"].is_null() {
                        results
                            .pacing
                            .push((record["closed"].clone(), record["paced"].clone()));
                    }
                }
                _ => return Err(format!("results line {}: unknown record", number + 1).into()),
            }
        }
        Ok(results)
    }

    fn meta_number(&self, key: &str) -> Option<f64> {
        self.meta[key].as_f64()
    }

    /// The figures of one run: the cell's value, the server's CPU in the scenario's CPU unit,
    /// and the latency p50 and p99 in µs where requests were timed.
    fn figures(&self, run: &Run, unit: Unit) -> Option<Figures> {
        let bench = run.bench.as_ref()?;
        let ok = bench["ok"].as_f64().filter(|&ok| ok > 0.0)?;
        let cpu_s = run
            .cpu_ticks
            .zip(self.meta_number("clk_tck"))
            .map(|(ticks, hz)| ticks / hz);
        // The load generator's own CPU time, from its report (`own_cpu_s`, getrusage).
        let own_s = bench["own_cpu_s"].as_f64();
        let (value, per) = match unit {
            Unit::RequestsPerSecond => (bench["requests_per_s"].as_f64()?, ok / 1e6),
            Unit::GigabytesPerSecond => (
                bench["received_bytes_per_s"].as_f64()? / 1e9,
                bench["bytes_received"].as_f64()? / 1e9,
            ),
            Unit::KilobytesPerConnection => {
                let held = self.meta_number("idle_connections")?;
                ((run.rss_held_kb? - run.rss_before_kb?) / held, ok / 1e6)
            }
        };
        let latency = |key: &str| bench["latency_us"][key].as_f64();
        let elapsed = bench["elapsed_s"].as_f64().filter(|&e| e > 0.0);
        Some(Figures {
            run: run.number,
            value,
            cpu: cpu_s.map(|s| s / per),
            own_cpu: own_s.map(|s| s / per),
            own_busy: own_s.zip(elapsed).map(|(s, e)| s / e),
            p50: latency("p50").filter(|_| unit == Unit::RequestsPerSecond),
            p99: latency("p99").filter(|_| unit == Unit::RequestsPerSecond),
        })
    }

    fn cell(&self, scenario: &Scenario, server: &str) -> Cell {
        let key = (scenario.id.clone(), server.to_owned());
        if self.not_served.contains_key(&key) {
            return Cell::NotServed;
        }
        let runs: Vec<&Run> = self
            .runs
            .iter()
            .filter(|r| r.scenario == scenario.id && r.server == server)
            .collect();
        if runs.is_empty() {
            return Cell::NotRun;
        }
        let failed: Vec<&&Run> = runs.iter().filter(|r| r.error.is_some()).collect();
        if let Some(first) = failed.first() {
            return Cell::Failed {
                failed: failed.len(),
                runs: runs.len(),
                error: first.error.clone().unwrap_or_default(),
            };
        }
        if runs.iter().any(|r| r.short) {
            let held = runs.iter().filter_map(|r| r.held).fold(0.0, f64::max);
            return Cell::Short {
                held,
                wanted: self.meta_number("idle_connections").unwrap_or(f64::NAN),
            };
        }
        let each: Vec<Figures> = runs
            .iter()
            .filter_map(|r| self.figures(r, scenario.unit))
            .collect();
        if each.len() < runs.len() {
            return Cell::Failed {
                failed: runs.len() - each.len(),
                runs: runs.len(),
                error: "a run left no figures (no bench report, or no requests answered)".into(),
            };
        }
        let all = |f: fn(&Figures) -> Option<f64>| -> Option<f64> {
            let values: Option<Vec<f64>> = each.iter().map(f).collect();
            values.map(median)
        };
        let values: Vec<f64> = each.iter().map(|f| f.value).collect();
        Cell::Measured(Measure {
            value: median(values.clone()),
            cpu: all(|f| f.cpu),
            own_cpu: all(|f| f.own_cpu),
            own_busy: all(|f| f.own_busy),
            p50: all(|f| f.p50),
            p99: all(|f| f.p99),
            low: values.iter().copied().fold(f64::INFINITY, f64::min),
            high: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            each,
        })
    }

    fn scenario(&self, id: &str) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.id == id)
    }

    fn label<'a>(&'a self, server: &'a str) -> &'a str {
        self.servers
            .iter()
            .find(|s| s.id == server)
            .map_or(server, |s| &s.label)
    }
}

struct Figures {
    run: u64,
    value: f64,
    cpu: Option<f64>,
    /// The load generator's own CPU, in the unit of `cpu`.
    own_cpu: Option<f64>,
    /// The load generator's CPU time over the run's wall time: 1.0 is one core kept busy.
    own_busy: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
}

/// A cell of the matrix.
enum Cell {
    /// The server cannot serve the scenario (the reason is in the notes).
    NotServed,
    /// Not in the results (a run cut short).
    NotRun,
    /// At least one run failed: the cell has no number.
    Failed {
        failed: usize,
        runs: usize,
        error: String,
    },
    /// Idle: the server never held all the connections at once (at most `held`).
    Short {
        held: f64,
        wanted: f64,
    },
    Measured(Measure),
}

/// Medians over a cell's runs, and the spread of its value.
struct Measure {
    value: f64,
    cpu: Option<f64>,
    /// The load generator's own CPU per request (same unit as `cpu`) and its busy share.
    own_cpu: Option<f64>,
    own_busy: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    low: f64,
    high: f64,
    /// Every run's figures.
    each: Vec<Figures>,
}

impl Measure {
    /// This cell's value as a multiple of `other`'s: the median of the ratios of the runs with
    /// the same number, which ran close in time, so a slow spell of the machine (other work on
    /// it) cancels out; the ratio of the medians where the runs do not pair up.
    fn ratio(&self, other: &Measure) -> f64 {
        self.paired(other, |f| Some(f.value))
            .unwrap_or(self.value / other.value)
    }

    /// The server's CPU per request as a multiple of `other`'s, paired as [`Measure::ratio`].
    fn cpu_ratio(&self, other: &Measure) -> Option<f64> {
        self.paired(other, |f| f.cpu)
            .or_else(|| Some(self.cpu? / other.cpu?))
    }

    fn paired(&self, other: &Measure, pick: fn(&Figures) -> Option<f64>) -> Option<f64> {
        self.each_ratio(other, pick).map(median)
    }

    /// The ratio of every pair of runs with the same number, when all of them pair up.
    fn each_ratio(&self, other: &Measure, pick: fn(&Figures) -> Option<f64>) -> Option<Vec<f64>> {
        if self.each.len() != other.each.len() || self.each.is_empty() {
            return None;
        }
        self.each
            .iter()
            .map(|mine| {
                let theirs = other.each.iter().find(|f| f.run == mine.run)?;
                Some(pick(mine)? / pick(theirs)?)
            })
            .collect()
    }
}

impl Cell {
    fn measure(&self) -> Option<&Measure> {
        match self {
            Cell::Measured(m) => Some(m),
            _ => None,
        }
    }

    /// What stands in a cell without a number.
    fn mark(&self) -> String {
        match self {
            Cell::NotServed => "n/a".into(),
            Cell::NotRun => "not run".into(),
            Cell::Failed { .. } => "**error**".into(),
            Cell::Short { held, wanted } => format!("held {held} of {wanted}"),
            Cell::Measured(_) => String::new(),
        }
    }

    /// The value and the server's CPU (`18.3k · 54.1`), or `n/a`, `error`, `not run`.
    fn show(&self, unit: Unit) -> String {
        match self {
            Cell::Failed { failed, runs, .. } => format!("**error** ({failed}/{runs} runs)"),
            Cell::NotServed | Cell::NotRun | Cell::Short { .. } => self.mark(),
            Cell::Measured(m) => match m.cpu {
                Some(cpu) => format!("{} · {}", unit.format(m.value), cpu_figure(cpu)),
                None => unit.format(m.value),
            },
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Three significant figures with k and M: `18.3k`, `1.20M`, `512`.
fn si(value: f64) -> String {
    let (scaled, suffix) = if value >= 1e6 {
        (value / 1e6, "M")
    } else if value >= 1e3 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let decimals = if scaled >= 100.0 {
        0
    } else if scaled >= 10.0 {
        1
    } else {
        2
    };
    format!("{scaled:.decimals$}{suffix}")
}

fn cpu_figure(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn ratio(value: f64) -> String {
    // Against a figure of 0 (a server's CPU below one clock tick in a short run).
    if !value.is_finite() {
        return "—".into();
    }
    if value >= 10.0 {
        format!("{value:.1}×")
    } else {
        format!("{value:.2}×")
    }
}

// --- report.md ------------------------------------------------------------------------------

fn markdown(results: &Results) -> String {
    let mut md = String::new();
    let meta = &results.meta;
    let quick = meta["quick"].as_bool().unwrap_or(false);
    let runs = text(meta, "runs");
    let _ = writeln!(md, "# socketkit benchmark report\n");
    if quick {
        let _ = writeln!(
            md,
            "> **A `--quick` smoke run** (tiny sizes, one run per cell, a `{}` build): it checks \
             that every cell works; its numbers mean nothing.\n",
            text(meta, "profile")
        );
    }
    let _ = writeln!(
        md,
        "{} · {} cores ({}) · {} · {} · {} · `{}` build of {}\n",
        text(meta, "date"),
        text(meta, "cores"),
        text(meta, "cpu"),
        text(meta, "kernel"),
        text(meta, "rustc"),
        text(meta, "python"),
        text(meta, "profile"),
        text(meta, "commit"),
    );
    if let Some(rev) = meta["against"]["rev"].as_str() {
        let _ = writeln!(
            md,
            "**A/B** against `{rev}` ({}): a `socketkit@{rev}` row beside each socketkit \
             engine, paired with it run by run (the A/B table below).\n",
            text(&meta["against"], "subject")
        );
    }
    let pinned = meta["pinned"].as_bool().unwrap_or(false);
    let _ = writeln!(
        md,
        "**Client and server share this machine**: {}. Every server runs alone, started afresh for \
         each run on 127.0.0.1 (port 0). Each cell is the median of {runs} run(s) of `{}` (the \
         stream: its whole size; idle: a `{}` hold); the runs are interleaved (run 1 of every \
         server, then run 2, ...) so drift on the machine hits every server alike. Other work \
         on the machine (neither the server nor the load generator; from `/proc/stat`) took {} \
         of its CPU time during the runs; the 1-minute load average was {} at the start. Server \
         CPU = utime + stime from `/proc/PID/stat` over the run, divided by the requests \
         answered; the load generator's own CPU is its report's (`own_cpu_s`, getrusage). \
         Ratios are medians of the ratios of runs with the same number, which ran close in \
         time. {}\n",
        if pinned {
            "the server is pinned to core 0 and `socketkit bench` to core 1 (`taskset`)"
        } else {
            "not pinned (fewer than two cores, or no `taskset`), so they also compete for the CPU"
        },
        text(meta, "duration"),
        text(meta, "idle_hold"),
        others(results),
        text(meta, "loadavg").split(' ').next().unwrap_or_default(),
        // Reports written before --load-engine have no field: their load ran on async.
        match meta["load_engine"].as_str() {
            Some("uring") => {
                "The load generator ran on io_uring (`socketkit bench -e uring`, \
                 `bench.sh --load-engine uring`) in the ping-pong cells, on async in the others."
            }
            _ => "The load generator ran on its async engine (`socketkit bench -e async`).",
        },
    );

    ab(&mut md, results);
    matrix(
        &mut md,
        results,
        "Throughput and server CPU",
        "Each cell: the median throughput (req/s, GB/s) or memory (KB per idle connection: \
         server VmRSS while they are held minus before, divided by their number) · the server's \
         CPU time per request (per GB for the stream, per connection for idle).",
        true,
        |scenario, cell| cell.show(scenario.unit),
    );
    matrix(
        &mut md,
        results,
        "Load generator CPU",
        &format!(
            "Each cell: the load generator's own CPU time in µs per request (s per GB for the \
             stream, µs per connection for idle; `socketkit bench`'s `own_cpu_s`, every \
             thread) · that time as a share of the run's wall time (100% is one core busy \
             throughout). {}Near 100% (marked `(bound)` from {:.0}%) the load generator, not \
             the server, sets the throughput: compare the servers' CPU per request there, not \
             their throughput.",
            if pinned {
                "It runs pinned to one core. "
            } else {
                ""
            },
            BOUND_BUSY * 100.0
        ),
        false,
        |scenario, cell| match cell.measure() {
            Some(Measure {
                own_cpu: Some(cpu),
                own_busy: Some(busy),
                ..
            }) => format!(
                "{} · {:.0}%{}",
                cpu_figure(*cpu),
                busy * 100.0,
                if scenario.unit != Unit::KilobytesPerConnection && *busy >= BOUND_BUSY {
                    " (bound)"
                } else {
                    ""
                }
            ),
            Some(_) => "—".into(),
            None => cell.mark(),
        },
    );
    for (reference, name) in [
        (TOKIO, "the tokio baseline"),
        (C_EPOLL, "the C epoll baseline"),
        (PYTHON, "Python's ThreadingTCPServer"),
    ] {
        let title = format!("Against {name}");
        let note = format!(
            "Throughput ÷ {name}'s · server CPU per request ÷ {name}'s. Above 1× is faster in the \
             first figure, below 1× is cheaper in the second; in the idle row the one figure is \
             memory per connection (below 1× is smaller). `—` where {name} has no figure."
        );
        matrix(&mut md, results, &title, &note, false, |scenario, cell| {
            let reference = results.cell(scenario, reference);
            match (cell.measure(), reference.measure()) {
                (Some(m), Some(r)) if scenario.unit == Unit::KilobytesPerConnection => {
                    ratio(m.ratio(r))
                }
                (Some(m), Some(r)) => match m.cpu_ratio(r) {
                    Some(cpu) => format!("{} · {}", ratio(m.ratio(r)), ratio(cpu)),
                    None => ratio(m.ratio(r)),
                },
                (Some(_), None) => "—".into(),
                (None, _) => cell.mark(),
            }
        });
    }

    summary(&mut md, results);

    let timed: Vec<&Scenario> = results
        .scenarios
        .iter()
        .filter(|s| s.unit == Unit::RequestsPerSecond)
        .collect();
    let _ = writeln!(md, "## Latency\n");
    let _ = writeln!(
        md,
        "p50 / p99 in µs (medians over the runs), closed loop: each connection sends its next \
         request when the reply to the last has come, so these are latencies at the throughput \
         above. For latency at a fixed load use `socketkit bench --rate`, which counts from each \
         request's intended send time (no coordinated omission).\n"
    );
    header(&mut md, results);
    for scenario in timed {
        let cells: Vec<String> = results
            .servers
            .iter()
            .map(|server| {
                let cell = results.cell(scenario, &server.id);
                match cell.measure() {
                    Some(Measure {
                        p50: Some(p50),
                        p99: Some(p99),
                        ..
                    }) => format!("{} / {}", cpu_figure(*p50), cpu_figure(*p99)),
                    Some(_) => "—".into(),
                    None => cell.mark(),
                }
            })
            .collect();
        let _ = writeln!(md, "| {} | {} |", scenario.label, cells.join(" | "));
    }
    md.push('\n');

    targets(&mut md, results);
    notes(&mut md, results);
    md
}

/// `bench.sh --against REV`: this tree's engines against REV's, cell by cell. Nothing without
/// A/B rows.
fn ab(md: &mut String, results: &Results) {
    let pairs: Vec<(&Server, &Server)> = results
        .servers
        .iter()
        .filter_map(|rev| {
            let ours = results
                .servers
                .iter()
                .find(|s| Some(&s.id) == rev.ab_of.as_ref())?;
            Some((ours, rev))
        })
        .collect();
    if pairs.is_empty() {
        return;
    }
    let against = &results.meta["against"];
    let rev = text(against, "rev");
    let _ = writeln!(md, "## A/B: this tree against {rev}\n");
    let _ = writeln!(
        md,
        "This tree (`{}`) against `{rev}` ({}; asked for as `{}`), built alike and measured in \
         this run: the two runs of a pair ran back to back (this tree first in odd runs, {rev} \
         first in even ones) under this tree's load generator. Each ratio is this tree's figure \
         ÷ {rev}'s, the median over the pairs of runs (their range in brackets when there are \
         several): below 1× is cheaper in server CPU per request (per GB for the stream, per \
         connection for idle), above 1× is faster in throughput (for idle: memory per \
         connection, below 1× is smaller). Where the load generator is the limit (its table \
         below), compare CPU per request.\n",
        text(&results.meta, "commit"),
        text(against, "subject"),
        text(against, "asked"),
    );
    let _ = writeln!(
        md,
        "| cell | engine | server CPU: this tree · {rev} | ÷ | throughput: this tree · {rev} | ÷ |\n\
         |---|---|---|---|---|---|"
    );
    let shown = |m: &Measure, other: &Measure, pick: fn(&Figures) -> Option<f64>| {
        let Some(each) = m.each_ratio(other, pick) else {
            return "—".to_owned();
        };
        let middle = ratio(median(each.clone()));
        if each.len() < 2 {
            return middle;
        }
        let low = each.iter().copied().fold(f64::INFINITY, f64::min);
        let high = each.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{middle} ({}–{})", ratio(low), ratio(high))
    };
    for scenario in &results.scenarios {
        let unit = scenario.unit;
        for (ours, theirs) in &pairs {
            let (mine, base) = (
                results.cell(scenario, &ours.id),
                results.cell(scenario, &theirs.id),
            );
            if matches!(mine, Cell::NotServed) && matches!(base, Cell::NotServed) {
                continue;
            }
            let engine = ours.label.trim_start_matches("socketkit ");
            let (cpu, cpu_ratio, value, value_ratio) = match (mine.measure(), base.measure()) {
                (Some(m), Some(b)) => (
                    match (m.cpu, b.cpu) {
                        (Some(c), Some(d)) => format!(
                            "{} · {} {}",
                            cpu_figure(c),
                            cpu_figure(d),
                            unit.cpu_label().trim_start_matches("CPU ")
                        ),
                        _ => "—".to_owned(),
                    },
                    shown(m, b, |f| f.cpu),
                    format!(
                        "{} · {} {}",
                        unit.format(m.value),
                        unit.format(b.value),
                        unit.label()
                    ),
                    shown(m, b, |f| Some(f.value)),
                ),
                _ => {
                    let marks = format!("{} · {}", or_figure(&mine), or_figure(&base));
                    (marks.clone(), "—".to_owned(), marks, "—".to_owned())
                }
            };
            let _ = writeln!(
                md,
                "| {} | {engine} | {cpu} | {cpu_ratio} | {value} | {value_ratio} |",
                scenario.label
            );
        }
    }
    md.push('\n');
}

/// A cell's mark, or `ok` where it has figures (beside a partner cell that has none).
fn or_figure(cell: &Cell) -> String {
    match cell {
        Cell::Measured(_) => "ok".to_owned(),
        other => other.mark(),
    }
}

/// socketkit's engines in ratios against the peers: the table the README shows.
fn summary(md: &mut String, results: &Results) {
    let engines: Vec<&Server> = results
        .servers
        .iter()
        .filter(|s| s.id.starts_with("socketkit-"))
        .collect();
    let names: Vec<&str> = engines
        .iter()
        .map(|s| s.label.trim_start_matches("socketkit "))
        .collect();
    let python = |scenario: &Scenario| -> (Cell, &str) {
        let threading = results.cell(scenario, PYTHON);
        match threading {
            Cell::NotServed => (results.cell(scenario, PYTHON_UDP), "slides UDP"),
            other => (other, ""),
        }
    };
    let _ = writeln!(md, "## Summary: socketkit against the peers\n");
    let _ = writeln!(
        md,
        "Throughput of each socketkit engine as a multiple of the tokio baseline's · of Python's \
         (ThreadingTCPServer; in the UDP rows the slides' UDP server); for the idle row, memory \
         per connection (below 1× is smaller). The C epoll server's own figures stand beside \
         the peers' (its ratios: \"Against the C epoll baseline\" above).\n"
    );
    let _ = writeln!(
        md,
        "| scenario | tokio baseline | C epoll | Python | {} |\n|---|---|---|---|{}",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for scenario in &results.scenarios {
        let unit = scenario.unit;
        let tokio = results.cell(scenario, TOKIO);
        let (python, which) = python(scenario);
        let absolute = |cell: &Cell| match cell.measure() {
            Some(m) => format!("{} {}", unit.format(m.value), unit.label()),
            None => cell.mark(),
        };
        let against = |m: &Measure, reference: &Cell| {
            reference
                .measure()
                .map_or("—".to_owned(), |r| ratio(m.ratio(r)))
        };
        let cells: Vec<String> = engines
            .iter()
            .map(|engine| {
                let cell = results.cell(scenario, &engine.id);
                match cell.measure() {
                    Some(m) => format!("{} · {}", against(m, &tokio), against(m, &python)),
                    None => cell.mark(),
                }
            })
            .collect();
        let python = if which.is_empty() {
            absolute(&python)
        } else {
            format!("{} ({which})", absolute(&python))
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {python} | {} |",
            scenario.label,
            absolute(&tokio),
            absolute(&results.cell(scenario, C_EPOLL)),
            cells.join(" | ")
        );
    }
    let _ = writeln!(
        md,
        "\nServer CPU per request (per GB for the stream, per connection for idle) as a multiple \
         of the tokio baseline's · of Python's (below 1× is cheaper):\n"
    );
    let _ = writeln!(
        md,
        "| scenario | tokio baseline | C epoll | Python | {} |\n|---|---|---|---|{}",
        names.join(" | "),
        "---|".repeat(names.len())
    );
    for scenario in &results.scenarios {
        let unit = scenario.unit;
        let tokio = results.cell(scenario, TOKIO);
        let (python, _) = python(scenario);
        let absolute = |cell: &Cell| match cell.measure() {
            Some(Measure { cpu: Some(cpu), .. }) => {
                format!(
                    "{} {}",
                    cpu_figure(*cpu),
                    unit.cpu_label().trim_start_matches("CPU ")
                )
            }
            Some(_) => "—".into(),
            None => cell.mark(),
        };
        let against = |m: &Measure, reference: &Cell| {
            reference
                .measure()
                .and_then(|r| m.cpu_ratio(r))
                .map_or("—".to_owned(), ratio)
        };
        let cells: Vec<String> = engines
            .iter()
            .map(|engine| {
                let cell = results.cell(scenario, &engine.id);
                match cell.measure() {
                    Some(m) if m.cpu.is_some() => {
                        format!("{} · {}", against(m, &tokio), against(m, &python))
                    }
                    Some(_) => "—".into(),
                    None => cell.mark(),
                }
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            scenario.label,
            absolute(&tokio),
            absolute(&results.cell(scenario, C_EPOLL)),
            absolute(&python),
            cells.join(" | ")
        );
    }
    md.push('\n');
}

/// A run during which other work took this much of the machine is flagged in the notes.
const BUSY_PERCENT: f64 = 25.0;

/// A cell whose load generator kept this share of one core busy (median) is marked `(bound)`:
/// its throughput is the load generator's more than the server's.
const BOUND_BUSY: f64 = 0.9;

/// The largest share of the machine (%) that other work took during a run of this cell.
fn busiest(results: &Results, scenario: &Scenario, server: &Server) -> f64 {
    results
        .runs
        .iter()
        .filter(|r| r.scenario == scenario.id && r.server == server.id)
        .filter_map(|r| r.others)
        .fold(0.0, f64::max)
        / 10.0
}

/// How much of the machine other work took during the runs: the median and the range.
fn others(results: &Results) -> String {
    let shares: Vec<f64> = results
        .runs
        .iter()
        .filter_map(|r| r.others)
        .map(|permille| permille / 10.0)
        .collect();
    if shares.is_empty() {
        return "an unknown share".into();
    }
    let low = shares.iter().copied().fold(f64::INFINITY, f64::min);
    let high = shares.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{:.0}% (median of the runs; from {low:.0}% to {high:.0}%)",
        median(shares)
    )
}

fn header(md: &mut String, results: &Results) {
    let labels: Vec<&str> = results.servers.iter().map(|s| s.label.as_str()).collect();
    let _ = writeln!(md, "| scenario | {} |", labels.join(" | "));
    let _ = writeln!(md, "|---|{}", "---|".repeat(labels.len()));
}

fn matrix(
    md: &mut String,
    results: &Results,
    title: &str,
    note: &str,
    units: bool,
    show: impl Fn(&Scenario, &Cell) -> String,
) {
    let _ = writeln!(md, "## {title}\n\n{note}\n");
    header(md, results);
    for scenario in &results.scenarios {
        let cells: Vec<String> = results
            .servers
            .iter()
            .map(|server| show(scenario, &results.cell(scenario, &server.id)))
            .collect();
        let label = if units {
            format!(
                "{} ({} · {})",
                scenario.label,
                scenario.unit.label(),
                scenario.unit.cpu_label()
            )
        } else {
            scenario.label.clone()
        };
        let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
    }
    md.push('\n');
}

/// The issues' targets (the first benchmark issue's, the engine core's, the performance issue's), measured.
fn targets(md: &mut String, results: &Results) {
    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(md, "| target | measured | |\n|---|---|---|");
    let cell = |scenario: &str, server: &str| -> Cell {
        results
            .scenario(scenario)
            .map_or(Cell::NotRun, |s| results.cell(s, server))
    };
    let mut row = |target: String, measured: Option<f64>, bound: f64, at_least: bool| {
        let (shown, verdict) = match measured {
            None => ("not measured".to_owned(), "—".to_owned()),
            Some(m) if (at_least && m >= bound) || (!at_least && m <= bound) => {
                (format!("{m:.2}"), "met".to_owned())
            }
            Some(m) => {
                // A miss that rounds to the bound shows the digit that decides it.
                let digits = if format!("{m:.2}") == format!("{bound:.2}") {
                    3
                } else {
                    2
                };
                let gap = if at_least {
                    (bound - m) / bound
                } else {
                    (m - bound) / bound
                };
                (
                    format!("{m:.digits$}"),
                    format!("**missed** by {:.1}%", gap * 100.0),
                )
            }
        };
        let _ = writeln!(md, "| {target} | {shown} | {verdict} |");
    };
    // CPU bounds: the engine-core issue's 1.0× on the two ping-pongs, the first issue's 1.05×
    // on the stream, and the performance issue's 0.9× for batched datagrams.
    for (scenario, cpu_bounds) in [
        ("pingpong-50", &[1.0][..]),
        ("udp-8", &[1.0, 0.9][..]),
        ("stream", &[1.05][..]),
    ] {
        let label = results.scenario(scenario).map_or(scenario, |s| &s.label);
        let (ours, base) = (cell(scenario, ASYNC), cell(scenario, TOKIO));
        let both = ours.measure().zip(base.measure());
        row(
            format!("async ≥ 0.95× tokio baseline in throughput, {label}"),
            both.map(|(o, b)| o.ratio(b)),
            0.95,
            true,
        );
        for &bound in cpu_bounds {
            row(
                format!("async ≤ {bound:.2}× tokio baseline in CPU per request, {label}"),
                both.and_then(|(o, b)| o.cpu_ratio(b)),
                bound,
                false,
            );
        }
    }
    for (scenario, bound) in [("pingpong-50", 4.0), ("stream", 5.0)] {
        let label = results.scenario(scenario).map_or(scenario, |s| &s.label);
        row(
            format!("async ≥ {bound}× Python ThreadingTCPServer, {label}"),
            cell(scenario, ASYNC)
                .measure()
                .zip(cell(scenario, PYTHON).measure())
                .map(|(o, p)| o.ratio(p)),
            bound,
            true,
        );
    }
    let held = text(&results.meta, "idle_connections");
    row(
        format!("async memory per idle connection ({held} held) ≤ 2 KB"),
        cell("idle", ASYNC).measure().map(|m| m.value),
        2.0,
        false,
    );
    // The performance issue's bounds for the uring engine, against the C epoll server.
    for scenario in ["pingpong-50", "udp-8"] {
        let label = results.scenario(scenario).map_or(scenario, |s| &s.label);
        row(
            format!("uring ≤ 0.80× C epoll in CPU per request, {label}"),
            cell(scenario, URING)
                .measure()
                .zip(cell(scenario, C_EPOLL).measure())
                .and_then(|(u, c)| u.cpu_ratio(c)),
            0.8,
            false,
        );
    }
    let label = results.scenario("stream").map_or("stream", |s| &s.label);
    row(
        format!("uring ≥ 1.00× C epoll in throughput, {label}"),
        cell("stream", URING)
            .measure()
            .zip(cell("stream", C_EPOLL).measure())
            .map(|(u, c)| u.ratio(c)),
        1.0,
        true,
    );
    row(
        format!("uring memory per idle connection ({held} held) ≤ 1 KB"),
        cell("idle", URING).measure().map(|m| m.value),
        1.0,
        false,
    );
    // Pacing: the medians over the runs of the paced p50, the closed-loop p50 and the lag.
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        (!values.is_empty()).then(|| values[values.len() / 2])
    };
    let p50s = |pick: fn(&(Value, Value)) -> &Value, key: &str| {
        median(
            results
                .pacing
                .iter()
                .filter_map(|pair| pick(pair)[key]["p50"].as_f64())
                .collect(),
        )
    };
    let closed = p50s(|(closed, _)| closed, "latency_us");
    let paced = p50s(|(_, paced)| paced, "latency_us");
    let lag = p50s(|(_, paced)| paced, "schedule_lag_us");
    match (closed, paced) {
        (Some(closed), Some(paced)) => {
            let bound = 3.0 * closed + 100.0;
            let verdict = if paced <= bound {
                "met".to_owned()
            } else {
                format!("**missed** by {:.0}%", (paced - bound) / bound * 100.0)
            };
            let _ = writeln!(
                md,
                "| `bench --rate 1000` p50 ≤ 3× closed-loop p50 + 100 µs (async, 1 connection) | \
                 {paced:.0} µs against {bound:.0} µs (closed loop {closed:.0} µs; schedule lag \
                 p50 {} µs) | {verdict} |",
                lag.map_or("—".to_owned(), |l| format!("{l:.1}"))
            );
        }
        _ => {
            let _ = writeln!(
                md,
                "| `bench --rate 1000` p50 ≤ 3× closed-loop p50 + 100 µs | not measured | — |"
            );
        }
    }
    let _ = writeln!(
        md,
        "| uppercase ≥ 0.7× memcpy (ASCII), ≥ 2× `str::to_uppercase` (mixed scripts) | \
         not measured by this script: `cargo bench --bench upper` | — |\n"
    );
}

fn notes(md: &mut String, results: &Results) {
    let _ = writeln!(md, "## Notes\n");
    // n/a cells, one line per server and reason.
    let mut reasons: Vec<(String, String, Vec<&str>)> = Vec::new();
    for server in &results.servers {
        for scenario in &results.scenarios {
            let key = (scenario.id.clone(), server.id.clone());
            let Some(reason) = results.not_served.get(&key) else {
                continue;
            };
            match reasons
                .iter_mut()
                .find(|(s, r, _)| *s == server.id && r == reason)
            {
                Some((_, _, scenarios)) => scenarios.push(&scenario.label),
                None => reasons.push((server.id.clone(), reason.clone(), vec![&scenario.label])),
            }
        }
    }
    for (server, reason, scenarios) in reasons {
        let _ = writeln!(
            md,
            "- `n/a`, {} ({}): {reason}.",
            results.label(&server),
            scenarios.join("; ")
        );
    }
    for scenario in &results.scenarios {
        for server in &results.servers {
            match results.cell(scenario, &server.id) {
                Cell::Failed {
                    failed,
                    runs,
                    error,
                } => {
                    let _ = writeln!(
                        md,
                        "- **error**, {} ({}): {failed} of {runs} runs failed; the first: {error}",
                        server.label, scenario.label
                    );
                }
                Cell::Short { held, wanted } => {
                    let _ = writeln!(
                        md,
                        "- held {held} of {wanted}, {} ({}): `socketkit bench -m idle` opens them \
                         all at once; the listen backlog of 5 (socketserver's \
                         `request_queue_size`) drops most of that burst, and the retried SYNs \
                         came too late, so at most {held} were open at once and memory per \
                         connection is not given.",
                        server.label, scenario.label
                    );
                }
                Cell::Measured(m) if m.each.len() > 1 && m.high > 1.25 * m.low => {
                    let _ = writeln!(
                        md,
                        "- spread, {} ({}): runs ranged {} to {} {} (over ±12% around the median).",
                        server.label,
                        scenario.label,
                        scenario.unit.format(m.low),
                        scenario.unit.format(m.high),
                        scenario.unit.label()
                    );
                }
                _ => {}
            }
        }
    }
    let measured: Vec<f64> = results
        .scenarios
        .iter()
        .flat_map(|scenario| {
            results
                .servers
                .iter()
                .filter(|server| results.cell(scenario, &server.id).measure().is_some())
                .map(|server| busiest(results, scenario, server))
        })
        .collect();
    let busy: Vec<f64> = measured
        .iter()
        .copied()
        .filter(|&b| b >= BUSY_PERCENT)
        .collect();
    if !busy.is_empty() {
        let _ = writeln!(
            md,
            "- Busy machine: in {} of the {} measured cells, other work took {BUSY_PERCENT:.0}% \
             or more of the CPU during at least one run (at most {:.0}%). Its share is in \
             `results.ndjson` (`others_permille`) for every run.",
            busy.len(),
            measured.len(),
            busy.iter().copied().fold(0.0, f64::max)
        );
    }
    let (wanted, held) = (
        text(&results.meta, "idle_wanted"),
        text(&results.meta, "idle_connections"),
    );
    let (before, after) = (
        text(&results.meta, "nofile_before"),
        text(&results.meta, "nofile"),
    );
    let _ = writeln!(
        md,
        "- Descriptors: {} (hard limit {}){}.",
        if before == after {
            format!("soft limit {after}")
        } else {
            format!("soft limit raised from {before} to {after}")
        },
        text(&results.meta, "nofile_hard"),
        if wanted == held {
            format!("; enough for {held} idle connections")
        } else {
            format!("; the hard limit allows only {held} of the {wanted} idle connections wanted")
        }
    );
    let _ = writeln!(md, "\nThe servers:\n");
    for server in &results.servers {
        let _ = writeln!(md, "- **{}**: {}", server.label, server.what);
    }
    let _ = writeln!(
        md,
        "\nThe scenarios (`socketkit bench ENDPOINT ARGS --json`):\n"
    );
    for scenario in &results.scenarios {
        let _ = writeln!(md, "- {}: `{}`", scenario.label, scenario.args);
    }
}

// --- chart.svg ------------------------------------------------------------------------------

/// The colours of the servers: socketkit's engines in blues and greens, the tokio baseline in
/// orange, the Python peers in purple and browns, the C epoll server in red; others by their
/// place in the list. An A/B row has its engine's colour, paler.
fn colour(server: &Server, index: usize) -> RGBColor {
    if let Some(ours) = &server.ab_of {
        let RGBColor(r, g, b) = colour_of(ours, index);
        let pale = |c: u8| c + (255 - c) / 2;
        return RGBColor(pale(r), pale(g), pale(b));
    }
    colour_of(&server.id, index)
}

fn colour_of(id: &str, index: usize) -> RGBColor {
    let known = [
        "socketkit-async",
        "socketkit-sequential",
        "socketkit-threaded",
        "socketkit-pool",
        "tokio",
        "py-threading",
        "py-sequential",
        "py-threaded",
        "py-udp",
        "c-epoll",
        "socketkit-uring",
    ];
    let at = known.iter().position(|&k| k == id).unwrap_or(index);
    COLOURS[at % COLOURS.len()]
}

const COLOURS: [RGBColor; 11] = [
    RGBColor(31, 119, 180),
    RGBColor(107, 174, 214),
    RGBColor(44, 160, 44),
    RGBColor(152, 223, 138),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(196, 156, 148),
    RGBColor(227, 119, 194),
    RGBColor(214, 39, 40),
    RGBColor(127, 127, 127),
];

/// A panel of bars per scenario (each in its own unit) and a legend.
fn chart(results: &Results, path: &Path) -> Result<()> {
    let columns = 4;
    let rows = (results.scenarios.len() + 1).div_ceil(columns);
    let root = SVGBackend::new(path, (1400, 380 * rows as u32 + 40)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "socketkit bench: medians, {} · {} cores, client and server on one machine",
        text(&results.meta, "date"),
        text(&results.meta, "cores")
    );
    let root = root.titled(&title, ("sans-serif", 20))?;
    let panels = root.split_evenly((rows, columns));
    let servers = results.servers.len();
    for (panel, scenario) in panels.iter().zip(&results.scenarios) {
        let cells: Vec<Cell> = results
            .servers
            .iter()
            .map(|server| results.cell(scenario, &server.id))
            .collect();
        let top = cells
            .iter()
            .filter_map(|c| c.measure().map(|m| m.value))
            .fold(0.0, f64::max);
        let top = if top > 0.0 { top * 1.1 } else { 1.0 };
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("{} ({})", scenario.label, scenario.unit.label()),
                ("sans-serif", 14),
            )
            .margin(10)
            .x_label_area_size(4)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..servers as f64, 0f64..top)?;
        let unit = scenario.unit;
        let axis = |v: &f64| match unit {
            Unit::RequestsPerSecond => si(*v),
            _ => format!("{v:.2}"),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .max_light_lines(0)
            .y_labels(6)
            .y_label_formatter(&axis)
            .label_style(("sans-serif", 11))
            .draw()?;
        for (index, cell) in cells.iter().enumerate() {
            let x = index as f64;
            match cell {
                Cell::Measured(m) => {
                    chart.draw_series(std::iter::once(Rectangle::new(
                        [(x + 0.12, 0.0), (x + 0.88, m.value)],
                        colour(&results.servers[index], index).filled(),
                    )))?;
                }
                other => {
                    let (mark, style) = match other {
                        Cell::NotServed => ("n/a", ("sans-serif", 10).into_font().color(&BLACK)),
                        Cell::Short { .. } => {
                            ("short", ("sans-serif", 10).into_font().color(&BLACK))
                        }
                        _ => ("err", ("sans-serif", 10).into_font().color(&RED)),
                    };
                    chart.draw_series(std::iter::once(Text::new(
                        mark,
                        (x + 0.1, top * 0.06),
                        style,
                    )))?;
                }
            }
        }
    }
    if let Some(legend) = panels.get(results.scenarios.len()) {
        // Closer lines when the servers are many (A/B rows), so the notes stay in the panel.
        let step = (270 / servers.max(1) as i32).clamp(14, 28);
        for (index, server) in results.servers.iter().enumerate() {
            let y = 30 + step * index as i32;
            legend.draw(&Rectangle::new(
                [(20, y), (38, y + step.min(20) - 2)],
                colour(server, index).filled(),
            ))?;
            legend.draw(&Text::new(
                server.label.as_str(),
                (46, y + 2),
                ("sans-serif", 14),
            ))?;
        }
        let notes = [
            "n/a: the server cannot serve the scenario",
            "short: it never held all the idle connections",
            "err: a run failed (see report.md)",
        ];
        for (line, note) in notes.into_iter().enumerate() {
            let y = 40 + step * servers as i32 + 18 * line as i32;
            legend.draw(&Text::new(note, (20, y), ("sans-serif", 12)))?;
        }
    }
    root.present()?;
    Ok(())
}
