//! Reporting: the final table or JSON made of what the workers counted ([`super::counters`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use super::counters::{Counters, Failure};
use super::plan::{Expect, Mode, Plan};
pub use super::recording::Latency;
use super::recording::Recording;

/// The live progress line is a view of the counters, written here with the report's number
/// formats.
impl Counters {
    /// The live progress text: requests (or, streaming, bytes) so far and the rate since the
    /// start, in whole units, with failures when there are any.
    ///
    /// ```
    /// use socketkit::bench::{Counters, Mode};
    /// use std::time::Duration;
    ///
    /// let counters = Counters::default();
    /// counters.ok.store(32_423, std::sync::atomic::Ordering::Relaxed);
    /// let line = counters.progress(Mode::Pingpong, Duration::from_secs(1));
    /// assert_eq!(line, "32,423 requests, 32,423/s");
    /// ```
    pub fn progress(&self, mode: Mode, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let mut line = match mode {
            Mode::Stream => {
                let bytes = self.bytes_received.load(Ordering::Relaxed);
                format!(
                    "{} received, {}",
                    si_size(bytes as f64),
                    si_bytes(bytes as f64 / secs)
                )
            }
            Mode::Idle => format!(
                "{} connections held",
                thousands(self.open.load(Ordering::Relaxed))
            ),
            _ => {
                let done = self.done();
                format!(
                    "{} requests, {}/s",
                    thousands(done),
                    thousands((done as f64 / secs).round() as u64)
                )
            }
        };
        let failed = self.done() - self.ok.load(Ordering::Relaxed);
        if failed > 0 {
            line.push_str(&format!(" ({} failed)", thousands(failed)));
        }
        line
    }
}

/// The load generator's own CPU time: user and system time of this whole process (every
/// thread), as `getrusage(RUSAGE_SELF)` counts it. Over a run it shows when the load generator,
/// not the server, is the limit: CPU time close to the run's wall time is a saturated core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// Time spent in user mode.
    pub user: Duration,
    /// Time spent in the kernel (system calls, most of a load generator's work on loopback).
    pub system: Duration,
}

impl CpuTime {
    /// This process's CPU time so far; `None` if `getrusage` fails (it does not on Linux).
    pub(crate) fn now() -> Option<CpuTime> {
        use nix::sys::resource::{UsageWho, getrusage};
        use nix::sys::time::TimeValLike;
        let usage = getrusage(UsageWho::RUSAGE_SELF).ok()?;
        let duration = |t: nix::sys::time::TimeVal| {
            Duration::from_micros(u64::try_from(t.num_microseconds()).unwrap_or(0))
        };
        Some(CpuTime {
            user: duration(usage.user_time()),
            system: duration(usage.system_time()),
        })
    }

    /// The CPU time spent since `earlier`.
    pub(crate) fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    /// User and system time together.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Report {
    /// The mode run.
    pub mode: Mode,
    /// The engine the load generator really ran on (async where io_uring was refused).
    pub engine: crate::Engine,
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
    /// `errors` by kind (only the kinds that occurred), in [`Failure::ALL`]'s order.
    pub error_kinds: Vec<(Failure, u64)>,
    /// The first error's text.
    pub first_error: Option<String>,
    /// Connections or replies that timed out.
    pub timeouts: u64,
    /// Datagrams lost.
    pub losses: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// Bytes read.
    pub bytes_received: u64,
    /// Connections held at the end (`idle`).
    pub held: u64,
    /// TLS handshakes completed (`tls://`; in `connect` mode, one per request).
    pub tls_handshakes: u64,
    /// Latency, when requests were timed (not `stream`).
    pub latency: Option<Latency>,
    /// How late the load generator itself sent requests against their intended send times
    /// (`--rate` only). Latency counts from the intended time, so it includes this lag.
    pub schedule_lag: Option<Latency>,
    /// What would fit when every failure looks the same (a mode or `--expect` to try).
    pub hint: Option<String>,
    /// The load generator's own CPU time over the run (its connecting included, as in
    /// `elapsed`); `None` if it could not be read.
    pub own_cpu: Option<CpuTime>,
    /// The raw histograms `latency` and `schedule_lag` are read from, whole and per second.
    pub recording: Recording,
}

impl Report {
    /// The run's verdict, the worst failure first: a wrong reply ([`Error::Protocol`], exit 3),
    /// then a time-out or a lost datagram ([`Error::TimedOut`], 5), then failed TLS handshakes
    /// when they are every failure (`Error::Tls`, 8, with the first one's cause), then connection errors
    /// ([`Error::RequestsFailed`]: 4 when every one was a refusal or a reset before any reply,
    /// else 1), each with its cause and the hint; a run that answered nothing fails too.
    /// `timeout` is the run's `-w`, named in the time-out error.
    ///
    /// # Errors
    ///
    /// As above; `Ok` when every request was answered correctly.
    ///
    /// [`Error::Protocol`]: crate::Error::Protocol
    /// [`Error::TimedOut`]: crate::Error::TimedOut
    /// [`Error::RequestsFailed`]: crate::Error::RequestsFailed
    pub fn verdict(&self, timeout: Duration) -> Result<(), crate::Error> {
        let hint = self
            .hint
            .as_deref()
            .map(|h| format!("; hint: {h}"))
            .unwrap_or_default();
        if self.mismatches > 0 {
            return Err(crate::Error::Protocol(format!(
                "{} replies did not match what was expected{hint}",
                self.mismatches
            )));
        }
        if self.timeouts + self.losses > 0 {
            let what = if self.losses > 0 {
                "some replies (datagrams lost)"
            } else {
                "some replies"
            };
            return Err(crate::Error::TimedOut {
                what,
                after: timeout,
            });
        }
        if self.errors > 0
            && self
                .error_kinds
                .iter()
                .all(|(kind, _)| *kind == Failure::Tls)
        {
            return Err(crate::Error::Tls {
                peer: self.endpoint.clone(),
                cause: self.first_error.clone().unwrap_or_default(),
            });
        }
        if self.errors > 0 {
            let kinds: Vec<String> = self
                .error_kinds
                .iter()
                .map(|(kind, n)| format!("{n} {}", kind.describe()))
                .collect();
            return Err(crate::Error::RequestsFailed {
                failed: self.errors,
                kinds: kinds.join(", "),
                first: format!("{}{hint}", self.first_error.as_deref().unwrap_or("no text")),
                refused: self.error_kinds.iter().all(|(kind, _)| kind.is_refusal()),
            });
        }
        if self.ok == 0 {
            return Err(crate::Error::io(
                "no request was answered: the run measured nothing",
                std::io::Error::other("nothing answered"),
            ));
        }
        Ok(())
    }

    pub(crate) fn new(
        plan: &Plan,
        counters: &Counters,
        elapsed: Duration,
        own_cpu: Option<CpuTime>,
    ) -> Report {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let recording = counters.finish(elapsed);
        let error_kinds: Vec<(Failure, u64)> = Failure::ALL
            .into_iter()
            .map(|kind| (kind, load(&counters.kinds[kind.index()])))
            .filter(|(_, n)| *n > 0)
            .collect();
        let errors = load(&counters.errors);
        let mismatches = load(&counters.mismatches);
        // A hint only when every failure of its kind looks the same, and nothing else failed.
        let hint = if errors > 0
            && mismatches == 0
            && plan.mode == Mode::Pingpong
            && load(&counters.after_one_reply) == errors
        {
            Some(
                "the server answered one request per connection and then closed it; \
                 for such a server use -m connect"
                    .to_string(),
            )
        } else if mismatches > 0 && errors == 0 && load(&counters.other_expect) == mismatches {
            Some(match plan.expect {
                Expect::Upper => "every reply was the request itself: use --expect echo".into(),
                Expect::Echo => {
                    "every reply was the request in upper case: use --expect upper".into()
                }
            })
        } else {
            None
        };
        Report {
            mode: plan.mode,
            engine: plan.engine,
            endpoint: plan.endpoint.to_string(),
            connections: plan.connections,
            size: plan.size,
            pipeline: plan.pipeline,
            rate: plan.rate,
            elapsed,
            ok: load(&counters.ok),
            mismatches,
            errors,
            error_kinds,
            first_error: counters
                .first_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            timeouts: load(&counters.timeouts),
            losses: load(&counters.losses),
            bytes_sent: load(&counters.bytes_sent),
            bytes_received: load(&counters.bytes_received),
            held: load(&counters.open),
            tls_handshakes: load(&counters.tls_handshakes),
            latency: recording.latency_percentiles(),
            schedule_lag: recording.lag_percentiles(),
            hint,
            own_cpu,
            recording,
        }
    }

    /// The load generator's own CPU time per good reply (per message for `stream`, per
    /// connection for `idle`); `None` when nothing was answered or the CPU time is unknown.
    pub fn own_cpu_per_request(&self) -> Option<Duration> {
        let cpu = self.own_cpu?.total();
        (self.ok > 0).then(|| Duration::from_secs_f64(cpu.as_secs_f64() / self.ok as f64))
    }

    /// The run's parameters in a line (the report's first, and a plot's title):
    /// `pingpong against tcp://127.0.0.1:12000: 4 connections, 64-byte messages`.
    pub fn parameters(&self) -> String {
        let peers = match self.mode {
            Mode::Udp => count(self.connections as u64, "socket"),
            Mode::Connect => count(self.connections as u64, "worker"),
            _ => count(self.connections as u64, "connection"),
        };
        format!(
            "{} against {}: {peers}, {}-byte messages{}{}",
            self.mode.name(),
            self.endpoint,
            self.size,
            if self.pipeline > 1 {
                format!(", pipeline {}", self.pipeline)
            } else {
                String::new()
            },
            self.rate
                .map(|r| format!(", fixed rate {r}/s"))
                .unwrap_or_default(),
        )
    }

    /// Good replies per second.
    pub fn requests_per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// TLS handshakes completed per second (`tls://`).
    pub fn tls_handshakes_per_second(&self) -> f64 {
        self.tls_handshakes as f64 / self.elapsed.as_secs_f64().max(1e-9)
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
        let percentiles = |l: Option<Latency>| {
            l.map(|l| {
                serde_json::json!({
                    "p50": l.p50, "p90": l.p90, "p99": l.p99, "p999": l.p999, "max": l.max,
                    "mean": l.mean,
                })
            })
        };
        let kinds: serde_json::Map<String, serde_json::Value> = self
            .error_kinds
            .iter()
            .map(|(kind, n)| (kind.name().to_string(), (*n).into()))
            .collect();
        #[cfg_attr(not(feature = "hdr-log"), allow(unused_mut))]
        let mut json = serde_json::json!({
            "mode": self.mode.name(),
            "engine": self.engine.name(),
            "endpoint": self.endpoint,
            "connections": self.connections,
            "size": self.size,
            "pipeline": self.pipeline,
            "rate": self.rate,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "ok": self.ok,
            "mismatches": self.mismatches,
            "errors": self.errors,
            "error_kinds": kinds,
            "first_error": self.first_error,
            "timeouts": self.timeouts,
            "losses": self.losses,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "held": self.held,
            "tls_handshakes": self.tls_handshakes,
            "tls_handshakes_per_s": self.tls_handshakes_per_second(),
            "requests_per_s": self.requests_per_second(),
            "received_bytes_per_s": self.received_per_second(),
            "latency_us": percentiles(self.latency),
            "schedule_lag_us": percentiles(self.schedule_lag),
            "hint": self.hint,
            "own_cpu_s": self.own_cpu.map(|c| c.total().as_secs_f64()),
            "own_cpu_user_s": self.own_cpu.map(|c| c.user.as_secs_f64()),
            "own_cpu_system_s": self.own_cpu.map(|c| c.system.as_secs_f64()),
            "own_cpu_per_request_us": self
                .own_cpu
                .filter(|_| self.ok > 0)
                .map(|c| c.total().as_secs_f64() * 1e6 / self.ok as f64),
        });
        // The raw histograms, so `socketkit report` can add runs up (HdrHistogram's compressed
        // V2 encoding in base64, as in an interval log).
        #[cfg(feature = "hdr-log")]
        if let Some(fields) = json.as_object_mut() {
            let encoded =
                |h: &Option<hdrhistogram::Histogram<u64>>| h.as_ref().map(super::recording::encode);
            fields.insert(
                "latency_histogram".into(),
                encoded(&self.recording.latency).into(),
            );
            fields.insert(
                "schedule_lag_histogram".into(),
                encoded(&self.recording.lag).into(),
            );
        }
        json
    }
}

fn si_bytes(bytes_per_s: f64) -> String {
    if bytes_per_s >= 1e9 {
        format!("{:.2} GB/s", bytes_per_s / 1e9)
    } else {
        format!("{:.2} MB/s", bytes_per_s / 1e6)
    }
}

fn si_size(bytes: f64) -> String {
    if bytes >= 1e9 {
        format!("{:.2} GB", bytes / 1e9)
    } else {
        format!("{:.1} MB", bytes / 1e6)
    }
}

/// `32423` as `32,423`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 socket`, `2 sockets`.
fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    format!("{} {noun}{}", thousands(n), if n == 1 { "" } else { "s" })
}

fn duration_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1_000_000.0)
    } else if us >= 1_000.0 {
        format!("{:.2} ms", us / 1_000.0)
    } else if us >= 10.0 {
        format!("{us:.0} µs")
    } else {
        format!("{us:.1} µs")
    }
}

fn percentile_line(l: &Latency) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        duration_us(l.p50),
        duration_us(l.p90),
        duration_us(l.p99),
        duration_us(l.p999),
        duration_us(l.max)
    )
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<10} {}", "run", self.parameters())?;
        writeln!(f, "{:<10} {}", "engine", self.engine)?;
        let what = match self.mode {
            Mode::Stream => "messages",
            _ => "requests",
        };
        writeln!(
            f,
            "{:<10} {} ok in {:.2} s ({} mismatches, {} errors, {} timeouts, {} losses)",
            what,
            self.ok,
            self.elapsed.as_secs_f64(),
            self.mismatches,
            self.errors,
            self.timeouts,
            self.losses
        )?;
        if !self.error_kinds.is_empty() {
            let kinds: Vec<String> = self
                .error_kinds
                .iter()
                .map(|(kind, n)| format!("{n} {}", kind.describe()))
                .collect();
            writeln!(f, "{:<10} {}", "errors", kinds.join(", "))?;
        }
        if let Some(first) = &self.first_error {
            writeln!(f, "{:<10} {first}", "first")?;
        }
        match self.mode {
            Mode::Stream => writeln!(
                f,
                "{:<10} {} received, {} sent",
                "rate",
                si_bytes(self.received_per_second()),
                si_size(self.bytes_sent as f64)
            )?,
            // Idle connections make no requests after their first: no rate to speak of.
            Mode::Idle => {}
            _ => writeln!(
                f,
                "{:<10} {:.0} requests/s, {} received",
                "rate",
                self.requests_per_second(),
                si_bytes(self.received_per_second())
            )?,
        }
        if self.tls_handshakes > 0 {
            writeln!(
                f,
                "{:<10} {:.0} handshakes/s ({})",
                "tls",
                self.tls_handshakes_per_second(),
                count(self.tls_handshakes, "handshake")
            )?;
        }
        if let Some(l) = &self.latency {
            writeln!(f, "{:<10} {}", "latency", percentile_line(l))?;
        }
        if let Some(l) = &self.schedule_lag {
            writeln!(
                f,
                "{:<10} {}  (how late requests left; latency includes it)",
                "sched lag",
                percentile_line(l)
            )?;
        }
        if self.mode == Mode::Idle {
            writeln!(f, "{:<10} {}", "held", count(self.held, "connection"))?;
        }
        if let Some(cpu) = self.own_cpu {
            let each = match self.mode {
                Mode::Stream => "message",
                Mode::Idle => "connection",
                _ => "request",
            };
            let total = cpu.total().as_secs_f64();
            writeln!(
                f,
                "{:<10} {} user+system in the load generator ({:.0}% of one core){}",
                "own cpu",
                duration_us(total * 1e6),
                total / self.elapsed.as_secs_f64().max(1e-9) * 100.0,
                self.own_cpu_per_request()
                    .map(|d| format!(", {} per {each}", duration_us(d.as_secs_f64() * 1e6)))
                    .unwrap_or_default()
            )?;
        }
        if let Some(hint) = &self.hint {
            writeln!(f, "{:<10} {hint}", "hint")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_shows_whole_numbers_and_streams_count_bytes() {
        let counters = Counters::default();
        counters.ok.store(97_270, Ordering::Relaxed);
        counters.errors.store(3, Ordering::Relaxed);
        let line = counters.progress(Mode::Pingpong, Duration::from_secs(3));
        assert_eq!(line, "97,273 requests, 32,424/s (3 failed)");

        counters.errors.store(0, Ordering::Relaxed);
        counters.bytes_received.store(64_000_000, Ordering::Relaxed);
        let line = counters.progress(Mode::Stream, Duration::from_secs(2));
        assert_eq!(line, "64.0 MB received, 32.00 MB/s");
    }
}
