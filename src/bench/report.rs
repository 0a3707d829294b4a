//! Counting and reporting: what every worker adds up, and the final table or JSON.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

use super::plan::{Mode, Plan};

/// Live counters, shared by the workers and read by a progress display.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests answered with the expected reply.
    pub ok: AtomicU64,
    /// Replies that differed from what was expected.
    pub mismatches: AtomicU64,
    /// Connection or I/O errors (refused, reset, closed early).
    pub errors: AtomicU64,
    /// Requests whose reply did not come within the timeout (streams).
    pub timeouts: AtomicU64,
    /// Datagrams never answered within the timeout (UDP).
    pub losses: AtomicU64,
    /// Bytes written.
    pub bytes_sent: AtomicU64,
    /// Bytes read.
    pub bytes_received: AtomicU64,
    /// Connections open now (`idle`).
    pub open: AtomicU64,
    pub(crate) latencies: Mutex<Option<Histogram<u64>>>,
}

impl Counters {
    pub(crate) fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Merges one worker's latencies (nanoseconds).
    pub(crate) fn merge(&self, histogram: &Histogram<u64>) {
        let mut all = self.latencies.lock().unwrap_or_else(|e| e.into_inner());
        match all.as_mut() {
            Some(all) => {
                let _ = all.add(histogram);
            }
            None => *all = Some(histogram.clone()),
        }
    }

    /// Requests finished so far, whatever their outcome.
    pub fn done(&self) -> u64 {
        [
            &self.ok,
            &self.mismatches,
            &self.errors,
            &self.timeouts,
            &self.losses,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

/// A new latency histogram: 1 µs to 60 s in nanoseconds, three significant digits.
pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The largest.
    pub max: f64,
    /// The mean.
    pub mean: f64,
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Report {
    /// The mode run.
    pub mode: Mode,
    /// The endpoint, as text.
    pub endpoint: String,
    /// Connections (or sockets, or workers).
    pub connections: usize,
    /// Message size in bytes.
    pub size: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// The fixed rate asked for, if any.
    pub rate: Option<f64>,
    /// Wall time of the measured part.
    pub elapsed: Duration,
    /// Good replies.
    pub ok: u64,
    /// Replies that differed from the expected ones.
    pub mismatches: u64,
    /// Connection and I/O errors.
    pub errors: u64,
    /// Stream replies that timed out.
    pub timeouts: u64,
    /// Datagrams lost.
    pub losses: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// Bytes read.
    pub bytes_received: u64,
    /// Connections held at the end (`idle`).
    pub held: u64,
    /// Latency, when requests were timed (not `stream` or `idle`).
    pub latency: Option<Latency>,
}

impl Report {
    pub(crate) fn new(plan: &Plan, counters: &Counters, elapsed: Duration) -> Report {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let latencies = counters.latencies.lock().unwrap_or_else(|e| e.into_inner());
        let latency = latencies.as_ref().filter(|h| !h.is_empty()).map(|h| {
            let us = |ns: u64| ns as f64 / 1_000.0;
            Latency {
                p50: us(h.value_at_quantile(0.50)),
                p90: us(h.value_at_quantile(0.90)),
                p99: us(h.value_at_quantile(0.99)),
                p999: us(h.value_at_quantile(0.999)),
                max: us(h.max()),
                mean: h.mean() / 1_000.0,
            }
        });
        Report {
            mode: plan.mode,
            endpoint: plan.endpoint.to_string(),
            connections: plan.connections,
            size: plan.size,
            pipeline: plan.pipeline,
            rate: plan.rate,
            elapsed,
            ok: load(&counters.ok),
            mismatches: load(&counters.mismatches),
            errors: load(&counters.errors),
            timeouts: load(&counters.timeouts),
            losses: load(&counters.losses),
            bytes_sent: load(&counters.bytes_sent),
            bytes_received: load(&counters.bytes_received),
            held: load(&counters.open),
            latency,
        }
    }

    /// Good replies per second.
    pub fn requests_per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Bytes read per second.
    pub fn received_per_second(&self) -> f64 {
        self.bytes_received as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Whether anything went wrong.
    pub fn failed(&self) -> bool {
        self.mismatches + self.errors + self.timeouts + self.losses > 0
    }

    /// The report as one JSON object (the `--json` output; field names are stable).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "mode": self.mode.name(),
            "endpoint": self.endpoint,
            "connections": self.connections,
            "size": self.size,
            "pipeline": self.pipeline,
            "rate": self.rate,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "ok": self.ok,
            "mismatches": self.mismatches,
            "errors": self.errors,
            "timeouts": self.timeouts,
            "losses": self.losses,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "held": self.held,
            "requests_per_s": self.requests_per_second(),
            "received_bytes_per_s": self.received_per_second(),
            "latency_us": self.latency.map(|l| serde_json::json!({
                "p50": l.p50, "p90": l.p90, "p99": l.p99, "p999": l.p999, "max": l.max,
                "mean": l.mean,
            })),
        })
    }
}

fn si_bytes(bytes_per_s: f64) -> String {
    if bytes_per_s >= 1e9 {
        format!("{:.2} GB/s", bytes_per_s / 1e9)
    } else {
        format!("{:.2} MB/s", bytes_per_s / 1e6)
    }
}

fn duration_us(us: f64) -> String {
    if us >= 1_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else {
        format!("{us:.0} µs")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<10} {} against {}: {} connection(s), {}-byte messages{}{}",
            "run",
            self.mode.name(),
            self.endpoint,
            self.connections,
            self.size,
            if self.pipeline > 1 {
                format!(", pipeline {}", self.pipeline)
            } else {
                String::new()
            },
            self.rate
                .map(|r| format!(", fixed rate {r}/s"))
                .unwrap_or_default(),
        )?;
        writeln!(
            f,
            "{:<10} {} ok in {:.2} s ({} mismatches, {} errors, {} timeouts, {} losses)",
            "requests",
            self.ok,
            self.elapsed.as_secs_f64(),
            self.mismatches,
            self.errors,
            self.timeouts,
            self.losses
        )?;
        writeln!(
            f,
            "{:<10} {:.0} requests/s, {} received",
            "rate",
            self.requests_per_second(),
            si_bytes(self.received_per_second())
        )?;
        if let Some(l) = self.latency {
            writeln!(
                f,
                "{:<10} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
                "latency",
                duration_us(l.p50),
                duration_us(l.p90),
                duration_us(l.p99),
                duration_us(l.p999),
                duration_us(l.max)
            )?;
        }
        if self.mode == Mode::Idle {
            writeln!(f, "{:<10} {} connections held", "held", self.held)?;
        }
        Ok(())
    }
}
