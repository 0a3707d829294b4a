//! A run kept as an HdrHistogram V2 interval log (`bench --hdr-log`), and read back from one
//! or from a `bench --json` line (`socketkit report`). Sans-IO: the writer writes to any
//! [`Write`], the reader reads text.
//!
//! The log is the standard text format, so HdrHistogram's own tools read it (Java's
//! `HistogramLogProcessor`, Python's `hdrh.log.HistogramLogReader`, the `hdrhistogram` crate's
//! `IntervalLogIterator`); the intervals are the lines the hdrhistogram crate's writer writes,
//! and socketkit adds three comment lines (`#` lines, which every reader skips). It is
//! written as the run goes, each second as it ends ([`HdrLogWriter`]), so a run of any length
//! holds no second of it in memory, and the run's results come last:
//!
//! ```text
//! #[socketkit bench: {"mode":"pingpong","endpoint":"tcp://127.0.0.1:12000",...}]   the run's parameters
//! #[StartTime: 1796212800.000 (seconds since epoch)]
//! #[BaseTime: 1796212800.000 (seconds since epoch)]
//! #[MaxValueDivisor: 1000000.000]                   the max column in ms; values are ns
//! 0.000,1.000,0.412,HISTFAAAAC...                   latencies of second 0 (untagged)
//! Tag=lag,0.000,1.000,0.031,HISTFAAAAB...           schedule lags of second 0 (--rate only)
//! 1.000,1.000,0.388,HISTFAAAAC...
//! #[socketkit report: {"elapsed_s":2.0,"ok":1500,...}]   the run's results
//! #[socketkit end: 2 seconds]                        absent: the log was cut short
//! ```
//!
//! A log written before the results moved to the end (the whole report on the first line, no
//! `report` line) reads the same.

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, LogIteratorError,
};

use super::counters::Counters;
use super::plan::Plan;
use super::recording::{Recording, Second, add_into, decode, encode};
use super::report::Report;
use super::timeline::{MAX_POINTS, Timeline};

const HEADER: &str = "#[socketkit bench: ";
const RESULTS: &str = "#[socketkit report: ";
const END: &str = "#[socketkit end: ";
/// The tag of the schedule-lag intervals; latencies are untagged, so tools that read only the
/// untagged histograms (most do by default) see the latencies.
const LAG_TAG: &str = "lag";
/// The fields of a report that are the run's parameters: the log's first line. The others are
/// its results: the last lines.
const PARAMETERS: [&str; 6] = [
    "mode",
    "endpoint",
    "connections",
    "size",
    "pipeline",
    "rate",
];

/// Why a log or a JSON report could not be read: the line (from 1) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogError {
    /// The line, counted from 1.
    pub line: usize,
    /// What is wrong, for a person.
    pub reason: String,
}

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for LogError {}

/// Writes a run's HdrHistogram V2 interval log as the run goes: the parameters and the start
/// time at once ([`HdrLogWriter::new`]), each second as it ends ([`HdrLogWriter::write`],
/// from [`Counters::each_second`]), the results and the closing line at the end
/// ([`HdrLogWriter::finish`]). It holds no histogram: a day's run costs no more memory than a
/// second's.
///
/// # Examples
///
/// ```
/// # use std::sync::{Arc, Mutex};
/// # use socketkit::bench::{self, Counters, HdrLogWriter, Plan, Report};
/// # use socketkit::Server;
/// # let server = Server::builder().listen("tcp://127.0.0.1:0".parse()?).bind()?;
/// # let mut plan = Plan::new(server.local_endpoints()[0].clone());
/// # plan.requests = Some(50);
/// # let stop = server.shutdown_handle();
/// # let serving = std::thread::spawn(move || server.serve_forever());
/// let writer = HdrLogWriter::new(Vec::new(), &plan, std::time::SystemTime::now())?;
/// let writer = Arc::new(Mutex::new(Some(writer)));
/// let sink = writer.clone();
/// let counters = Counters::default().each_second(move |number, second| {
///     if let Some(w) = sink.lock().unwrap().as_mut() {
///         w.write(number, second);
///     }
/// });
/// let report = bench::run(&plan, Arc::new(counters))?;
/// let log = writer.lock().unwrap().take().unwrap().finish(&report)?;
/// let back = Report::from_hdr_log(std::str::from_utf8(&log)?)?;
/// assert_eq!(back.recording.latency.unwrap().len(), 50);
/// # stop.shutdown();
/// # serving.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct HdrLogWriter<W: Write> {
    out: W,
    /// Whether the run has schedule lags (`--rate`): each second then has a `lag` line too.
    lags: bool,
    /// Where the latest second written ends, from the run's start.
    end: Duration,
    /// The first write that failed: later ones are not tried, [`HdrLogWriter::finish`] says.
    error: Option<io::Error>,
}

impl<W: Write> HdrLogWriter<W> {
    /// Begins the log of a run of `plan` that starts at `started` (the log's StartTime): its
    /// parameters, the start time and the units.
    ///
    /// # Errors
    ///
    /// Writing to `out` failed.
    pub fn new(out: W, plan: &Plan, started: SystemTime) -> io::Result<HdrLogWriter<W>> {
        let planned = Report::new(plan, &Counters::default(), Duration::ZERO, None);
        HdrLogWriter::begin(out, &planned, started)
    }

    /// Begins the log of the run `report` describes (its parameters only).
    fn begin(mut out: W, report: &Report, started: SystemTime) -> io::Result<HdrLogWriter<W>> {
        let mut parameters = report.to_json();
        if let Some(fields) = parameters.as_object_mut() {
            fields.retain(|name, _| PARAMETERS.contains(&name.as_str()));
        }
        let mut serializer = V2DeflateSerializer::new();
        IntervalLogWriterBuilder::new()
            .add_comment(&format!("{}{parameters}]", &HEADER[1..]))
            .with_start_time(started)
            .with_base_time(started)
            .with_max_value_divisor(MAX_VALUE_DIVISOR)
            .begin_log_with(&mut out, &mut serializer)?;
        out.flush()?;
        Ok(HdrLogWriter {
            out,
            lags: report.rate.is_some(),
            end: Duration::ZERO,
            error: None,
        })
    }

    /// Writes second `number` of the run (from its start): its latencies, and its schedule
    /// lags with a rate, each line as the hdrhistogram crate's log writer writes it, flushed so
    /// the log is whole up to this second. A failure is kept for [`HdrLogWriter::finish`].
    pub fn write(&mut self, number: u64, second: &Second) {
        self.write_at(Duration::from_secs(number), second);
    }

    fn write_at(&mut self, from: Duration, second: &Second) {
        if self.error.is_some() {
            return;
        }
        let mut line = interval_line(&second.latency, from, second.length, None);
        if self.lags {
            line += &interval_line(&second.lag, from, second.length, Some(LAG_TAG));
        }
        let written = self
            .out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.flush());
        self.error = written.err();
        self.end = self.end.max(from + second.length);
    }

    /// Ends the log with the run's results (`report`, without its histograms: the intervals
    /// carry them) and the closing line, and hands back the output.
    ///
    /// # Errors
    ///
    /// The first write that failed, here or in [`HdrLogWriter::write`].
    pub fn finish(mut self, report: &Report) -> io::Result<W> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        let mut results = report.to_json();
        if let Some(fields) = results.as_object_mut() {
            fields.retain(|name, _| {
                !PARAMETERS.contains(&name.as_str())
                    && name != "latency_histogram"
                    && name != "schedule_lag_histogram"
            });
        }
        let seconds = self.end.as_secs_f64().ceil() as u64;
        writeln!(self.out, "{}{results}]", RESULTS)?;
        writeln!(self.out, "{}{seconds} seconds]", END)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// The log's max column is in milliseconds; the histograms are in nanoseconds.
const MAX_VALUE_DIVISOR: f64 = 1e6;

/// One interval line, exactly as the hdrhistogram crate's `IntervalLogWriter` writes it (it
/// cannot be kept between seconds: it borrows its output).
fn interval_line(
    h: &Histogram<u64>,
    from: Duration,
    length: Duration,
    tag: Option<&str>,
) -> String {
    format!(
        "{}{:.3},{:.3},{:.3},{}\n",
        tag.map(|t| format!("Tag={t},")).unwrap_or_default(),
        from.as_secs_f64(),
        length.as_secs_f64(),
        h.max() as f64 / MAX_VALUE_DIVISOR,
        encode(h),
    )
}

impl Report {
    /// The run as an HdrHistogram V2 interval log, one interval per entry of its
    /// [`Recording::seconds`] (a second, or a longer run's merged seconds); `started` is when
    /// the run began (the log's StartTime). `bench --hdr-log` writes the same log as the run
    /// goes, with an [`HdrLogWriter`].
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use socketkit::bench::{self, Counters, Plan, Report, MAX_POINTS};
    /// # use socketkit::Server;
    /// # let server = Server::builder().listen("tcp://127.0.0.1:0".parse()?).bind()?;
    /// # let mut plan = Plan::new(server.local_endpoints()[0].clone());
    /// # plan.requests = Some(50);
    /// # let stop = server.shutdown_handle();
    /// # let serving = std::thread::spawn(move || server.serve_forever());
    /// let counters = Counters::default().with_timeline(MAX_POINTS);
    /// let report = bench::run(&plan, Arc::new(counters))?;
    /// let log = report.to_hdr_log(std::time::SystemTime::now());
    /// let back = Report::from_hdr_log(&log)?;
    /// assert_eq!(back.recording.latency.unwrap().len(), 50);
    /// # stop.shutdown();
    /// # serving.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_hdr_log(&self, started: SystemTime) -> String {
        let mut writer = HdrLogWriter::begin(Vec::new(), self, started)
            .expect("writing to memory does not fail");
        let mut from = Duration::ZERO;
        for second in &self.recording.seconds {
            writer.write_at(from, second);
            from += self.recording.interval;
        }
        let out = writer
            .finish(self)
            .expect("writing to memory does not fail");
        String::from_utf8(out).expect("the log is ASCII")
    }

    /// Reads a log [`Report::to_hdr_log`] or an [`HdrLogWriter`] wrote: the run's report, its
    /// histograms summed from the intervals, and the run over time (at most
    /// [`MAX_POINTS`](super::MAX_POINTS) points: a longer run's adjacent seconds are added).
    ///
    /// # Errors
    ///
    /// [`LogError`] naming the first line that is wrong: not the log format, a histogram that
    /// does not decode, no `#[socketkit bench: ...]` line (a log of another tool: its run's
    /// parameters are unknown), or no closing line (the log was cut short).
    pub fn from_hdr_log(text: &str) -> Result<Report, LogError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        // The run's line (parameters; the whole report in a log of an older socketkit) and
        // its results' line, each with its number.
        let mut header = None;
        let mut results = None;
        let mut ended = false;
        for (i, line) in text.lines().enumerate() {
            let fail = |reason: String| LogError {
                line: i + 1,
                reason,
            };
            let json = |json: &str| {
                let json = json
                    .strip_suffix(']')
                    .ok_or_else(|| fail("the run's line is cut short".into()))?;
                serde_json::from_str::<serde_json::Value>(json)
                    .map_err(|e| fail(format!("the run's line is not JSON ({e})")))
            };
            if let Some(text) = line.strip_prefix(HEADER) {
                let value = json(text)?;
                super::read::Parameters::of(&value).map_err(fail)?;
                header = Some((i + 1, value));
            } else if let Some(text) = line.strip_prefix(RESULTS) {
                results = Some((i + 1, json(text)?));
            } else if line.starts_with(END) {
                ended = true;
            }
        }
        let (header_line, mut fields) = header.ok_or_else(|| LogError {
            line: 1,
            reason: "not a socketkit bench log: no \"#[socketkit bench: ...]\" line names the \
                     run's parameters"
                .into(),
        })?;
        let mut latency = None;
        let mut lag = None;
        let mut timeline = Timeline::new(MAX_POINTS);
        let mut last = 0u64;
        for entry in IntervalLogIterator::new(text.as_bytes()) {
            let interval = match entry {
                Ok(LogEntry::Interval(interval)) => interval,
                Ok(_) => continue,
                Err(LogIteratorError::ParseError { offset }) => {
                    let last = !text[offset.min(text.len())..].trim_end().contains('\n');
                    let reason = if last && !text.ends_with('\n') {
                        "the log ends in the middle of a line: it was cut short"
                    } else {
                        "not an interval log line"
                    };
                    return Err(LogError {
                        line: line_of(offset),
                        reason: reason.into(),
                    });
                }
            };
            let encoded = interval.encoded_histogram();
            let offset = encoded.as_ptr() as usize - text.as_ptr() as usize;
            let h = decode(encoded).map_err(|reason| LogError {
                line: line_of(offset),
                reason,
            })?;
            let second = interval.start_timestamp().as_secs_f64().round() as u64;
            if second > last.saturating_add(3600) {
                return Err(LogError {
                    line: line_of(offset),
                    reason: "an interval starts more than an hour after the one before".into(),
                });
            }
            last = last.max(second);
            let (whole, latency_of, lag_of) = match interval.tag().map(|t| t.as_str()) {
                None => (&mut latency, Some(&h), None),
                Some(LAG_TAG) => (&mut lag, None, Some(&h)),
                Some(_) => continue,
            };
            add_into(whole, &h);
            timeline.add(second, 1, latency_of, lag_of, interval.duration());
        }
        if !ended {
            return Err(LogError {
                line: text.lines().count().max(1),
                reason: "the log ends before its \"#[socketkit end: ...]\" line: it was cut short"
                    .into(),
            });
        }
        let line = match (results, fields.as_object_mut()) {
            (Some((line, serde_json::Value::Object(results))), Some(fields)) => {
                for (name, value) in results {
                    if !PARAMETERS.contains(&name.as_str()) {
                        fields.insert(name, value);
                    }
                }
                line
            }
            (Some((line, _)), _) => {
                return Err(LogError {
                    line,
                    reason: "the run's results are not a JSON object".into(),
                });
            }
            (None, _) => header_line,
        };
        let mut report =
            Report::from_fields(&fields, false).map_err(|reason| LogError { line, reason })?;
        let recording = Recording::of(latency, lag, Some(timeline));
        report.latency = recording.latency_percentiles();
        report.schedule_lag = recording.lag_percentiles();
        report.recording = recording;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::bench::plan::Plan;
    use crate::bench::timeline::histogram;

    /// A report whose run recorded `values` (ns), second `i` getting the values at `i` mod
    /// `seconds`.
    fn run_of(values: &[u64], seconds: usize) -> Report {
        let counters = Counters::default().with_timeline(MAX_POINTS);
        for second in 0..seconds {
            let mut h = histogram();
            for v in values.iter().skip(second).step_by(seconds) {
                h.record(*v).unwrap();
            }
            counters.merge(second as u64, &h, &histogram());
        }
        let plan = Plan::new("tcp://127.0.0.1:9".parse().unwrap());
        Report::new(&plan, &counters, Duration::from_secs(seconds as u64), None)
    }

    proptest! {
        /// Two runs, one read back from its log and one from its JSON line, merged: the same
        /// histogram, so the same percentiles, as one fed every value.
        #[test]
        fn merging_two_runs_equals_one_histogram_fed_all_their_values(
            a in prop::collection::vec(1_000u64..60_000_000_000, 1..300),
            b in prop::collection::vec(1_000u64..60_000_000_000, 1..300),
            seconds_a in 1usize..4,
            seconds_b in 1usize..4,
        ) {
            let from_log = Report::from_hdr_log(&run_of(&a, seconds_a).to_hdr_log(SystemTime::UNIX_EPOCH))
                .unwrap();
            let from_json = Report::from_json(&run_of(&b, seconds_b).to_json()).unwrap();
            let merged = Report::merge(&[from_log, from_json]).unwrap();

            let mut all = histogram();
            for v in a.iter().chain(&b) {
                all.record(*v).unwrap();
            }
            let sum = merged.recording.latency.as_ref().unwrap();
            prop_assert_eq!(sum.len(), all.len());
            for q in [0.5, 0.9, 0.99, 0.999, 1.0] {
                prop_assert_eq!(sum.value_at_quantile(q), all.value_at_quantile(q));
            }
            prop_assert_eq!(merged.latency, super::super::Latency::of(&all));
            // Second by second too: the runs' seconds added.
            let per_second: u64 = merged.recording.seconds.iter().map(|s| s.latency.len()).sum();
            prop_assert_eq!(per_second, a.len() as u64);
        }
    }

    #[test]
    fn a_log_without_its_closing_line_is_cut_short() {
        let log = run_of(&[5_000, 7_000], 2).to_hdr_log(SystemTime::UNIX_EPOCH);
        let cut: String = log
            .lines()
            .filter(|l| !l.starts_with(END))
            .map(|l| format!("{l}\n"))
            .collect();
        let error = Report::from_hdr_log(&cut).unwrap_err();
        assert_eq!(error.line, cut.lines().count());
        assert!(error.reason.contains("cut short"), "{error}");
    }

    /// The log as this module wrote it at the run's end before it was written as the run goes
    /// (the hdrhistogram crate's writer; the whole report on the first line).
    fn written_at_once(report: &Report, started: SystemTime) -> String {
        use hdrhistogram::serialization::interval_log::Tag;
        let mut out = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        let mut json = report.to_json();
        if let Some(fields) = json.as_object_mut() {
            fields.remove("latency_histogram");
            fields.remove("schedule_lag_histogram");
        }
        let mut writer = IntervalLogWriterBuilder::new()
            .add_comment(&format!("{}{json}]", &HEADER[1..]))
            .with_start_time(started)
            .with_base_time(started)
            .with_max_value_divisor(1e6)
            .begin_log_with(&mut out, &mut serializer)
            .unwrap();
        let lag = Tag::new(LAG_TAG).unwrap();
        for (i, second) in report.recording.seconds.iter().enumerate() {
            let from = Duration::from_secs(i as u64);
            writer
                .write_histogram(&second.latency, from, second.length, None)
                .unwrap();
            writer
                .write_histogram(&second.lag, from, second.length, Some(lag))
                .unwrap();
        }
        let seconds = report.recording.seconds.len();
        writer
            .write_comment(&format!("{}{seconds} seconds]", &END[1..]))
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_log_written_as_the_run_goes_reads_back_as_the_log_written_at_its_end() {
        let started = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_212_800_123);
        let mut plan = Plan::new("tcp://127.0.0.1:9".parse().unwrap());
        plan.rate = Some(100.0);
        let writer = HdrLogWriter::new(Vec::new(), &plan, started).unwrap();
        let writer = std::sync::Arc::new(std::sync::Mutex::new(Some(writer)));
        let sink = writer.clone();
        let counters =
            Counters::default()
                .with_timeline(MAX_POINTS)
                .each_second(move |number, second| {
                    sink.lock().unwrap().as_mut().unwrap().write(number, second)
                });
        // Seconds 1 and 3 answer nothing (a stall), and the run ends 0.25 s into second 5.
        for second in [0u64, 2, 4, 5] {
            let (mut latency, mut lag) = (histogram(), histogram());
            for i in 0..50 {
                latency
                    .record(20_000 + second * 1_000_000 + i * 997)
                    .unwrap();
                lag.record(1_000 + i * 13).unwrap();
            }
            counters.merge(second, &latency, &lag);
            if second < 5 {
                counters.close_before(second + 1); // the last one closes at the run's end
            }
        }
        let report = Report::new(&plan, &counters, Duration::from_millis(5_250), None);
        let log = writer
            .lock()
            .unwrap()
            .take()
            .unwrap()
            .finish(&report)
            .unwrap();
        let log = String::from_utf8(log).unwrap();
        let at_once = written_at_once(&report, started);

        // The same interval lines, byte for byte, and the same head.
        let intervals = |log: &str| -> Vec<String> {
            log.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(intervals(&log), intervals(&at_once));
        assert_eq!(intervals(&log).len(), 12, "6 seconds, latencies and lags");
        let times = |log: &str| -> Vec<String> {
            log.lines()
                .filter(|l| {
                    l.starts_with("#[StartTime")
                        || l.starts_with("#[BaseTime")
                        || l.starts_with("#[MaxValue")
                        || l.starts_with(END)
                })
                .map(str::to_string)
                .collect()
        };
        assert_eq!(times(&log), times(&at_once));
        assert!(log.starts_with(HEADER) && log.contains(RESULTS));
        assert!(log.lines().last().unwrap().starts_with(END));
        // Read back: the same report, as from a log of the older form.
        let back = Report::from_hdr_log(&log).unwrap();
        assert_eq!(back, Report::from_hdr_log(&at_once).unwrap());
        assert_eq!(back.ok, report.ok);
        assert_eq!(back.rate, Some(100.0));
        assert_eq!(back.recording.latency, report.recording.latency);
        assert_eq!(back.recording.lag, report.recording.lag);
        assert_eq!(back.recording.seconds, report.recording.seconds);
        assert_eq!(back.latency, report.latency);
        assert_eq!(back.schedule_lag, report.schedule_lag);
    }

    #[test]
    fn a_log_cut_short_by_a_killed_run_says_so() {
        let plan = Plan::new("tcp://127.0.0.1:9".parse().unwrap());
        let mut writer = HdrLogWriter::new(Vec::new(), &plan, SystemTime::UNIX_EPOCH).unwrap();
        let mut latency = histogram();
        latency.record(5_000).unwrap();
        let second = Second {
            latency,
            lag: histogram(),
            length: Duration::from_secs(1),
        };
        writer.write(0, &second);
        writer.write(1, &second);
        // The run was killed here: no results, no closing line.
        let log = String::from_utf8(writer.out).unwrap();
        let error = Report::from_hdr_log(&log).unwrap_err();
        assert_eq!(error.line, log.lines().count());
        assert!(error.reason.contains("cut short"), "{error}");
    }

    #[test]
    fn a_long_log_reads_back_in_at_most_the_points_of_a_plot() {
        let plan = Plan::new("tcp://127.0.0.1:9".parse().unwrap());
        let mut writer = HdrLogWriter::new(Vec::new(), &plan, SystemTime::UNIX_EPOCH).unwrap();
        let mut latency = histogram();
        latency.record(5_000).unwrap();
        let second = Second {
            latency,
            lag: histogram(),
            length: Duration::from_secs(1),
        };
        let seconds = 2_000u64;
        for number in 0..seconds {
            writer.write(number, &second);
        }
        let counters = Counters::default();
        counters
            .ok
            .store(seconds, std::sync::atomic::Ordering::Relaxed);
        let report = Report::new(&plan, &counters, Duration::from_secs(seconds), None);
        let log = String::from_utf8(writer.finish(&report).unwrap()).unwrap();
        assert!(log.contains(&format!("{END}{seconds} seconds]")));
        let back = Report::from_hdr_log(&log).unwrap();
        assert_eq!(back.ok, seconds);
        assert_eq!(back.recording.latency.unwrap().len(), seconds);
        assert_eq!(back.recording.interval, Duration::from_secs(4));
        assert_eq!(back.recording.seconds.len(), 500);
        assert!(back.recording.seconds.iter().all(|s| s.latency.len() == 4));
    }
}
