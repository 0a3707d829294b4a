//! A run kept as an HdrHistogram V2 interval log (`bench --hdr-log`), and read back from one
//! or from a `bench --json` line (`socketkit report`). Sans-IO: text in, text out.
//!
//! The log is the standard text format, so HdrHistogram's own tools read it (Java's
//! `HistogramLogProcessor`, Python's `hdrh.log.HistogramLogReader`, the `hdrhistogram` crate's
//! `IntervalLogIterator`); the hdrhistogram crate writes and parses it, socketkit only adds two
//! comment lines (`#` lines, which every reader skips):
//!
//! ```text
//! #[socketkit bench: {"mode":"pingpong","endpoint":"tcp://127.0.0.1:12000",...}]   the run's report
//! #[StartTime: 1796212800.000 (seconds since epoch)]
//! #[BaseTime: 1796212800.000 (seconds since epoch)]
//! #[MaxValueDivisor: 1000000.000]                   the max column in ms; values are ns
//! 0.000,1.000,0.412,HISTFAAAAC...                   latencies of second 0 (untagged)
//! Tag=lag,0.000,1.000,0.031,HISTFAAAAB...           schedule lags of second 0 (--rate only)
//! 1.000,1.000,0.388,HISTFAAAAC...
//! #[socketkit end: 2 seconds]                        absent: the log was cut short
//! ```

use std::time::{Duration, SystemTime};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::serialization::interval_log::{
    IntervalLogIterator, IntervalLogWriterBuilder, LogEntry, LogIteratorError, Tag,
};

use super::counters::histogram;
use super::recording::{Recording, Second, decode};
use super::report::Report;

const HEADER: &str = "#[socketkit bench: ";
const END: &str = "#[socketkit end: ";
/// The tag of the schedule-lag intervals; latencies are untagged, so tools that read only the
/// untagged histograms (most do by default) see the latencies.
const LAG_TAG: &str = "lag";

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

impl Report {
    /// The run as an HdrHistogram V2 interval log, one interval a second; `started` is when the
    /// run began (the log's StartTime).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use socketkit::bench::{self, Counters, Plan, Report};
    /// # use socketkit::Server;
    /// # let server = Server::builder().listen("tcp://127.0.0.1:0".parse()?).bind()?;
    /// # let mut plan = Plan::new(server.local_endpoints()[0].clone());
    /// # plan.requests = Some(50);
    /// # let stop = server.shutdown_handle();
    /// # let serving = std::thread::spawn(move || server.serve_forever());
    /// let report = bench::run(&plan, Arc::new(Counters::default()))?;
    /// let log = report.to_hdr_log(std::time::SystemTime::now());
    /// let back = Report::from_hdr_log(&log)?;
    /// assert_eq!(back.recording.latency.unwrap().len(), 50);
    /// # stop.shutdown();
    /// # serving.join().unwrap()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_hdr_log(&self, started: SystemTime) -> String {
        let mut out = Vec::new();
        let mut serializer = V2DeflateSerializer::new();
        let mut json = self.to_json();
        if let Some(fields) = json.as_object_mut() {
            // The intervals carry them.
            fields.remove("latency_histogram");
            fields.remove("schedule_lag_histogram");
        }
        let mut writer = IntervalLogWriterBuilder::new()
            .add_comment(&format!("{}{json}]", &HEADER[1..]))
            .with_start_time(started)
            .with_base_time(started)
            .with_max_value_divisor(1e6)
            .begin_log_with(&mut out, &mut serializer)
            .expect("writing to memory does not fail");
        let lag = Tag::new(LAG_TAG).expect("a valid tag");
        let mut from = Duration::ZERO;
        for second in &self.recording.seconds {
            let _ = writer.write_histogram(&second.latency, from, second.length, None);
            if self.rate.is_some() {
                let _ = writer.write_histogram(&second.lag, from, second.length, Some(lag));
            }
            from += Duration::from_secs(1);
        }
        let seconds = self.recording.seconds.len();
        let _ = writer.write_comment(&format!("{}{seconds} seconds]", &END[1..]));
        String::from_utf8(out).expect("the log is ASCII")
    }

    /// Reads a log [`Report::to_hdr_log`] wrote: the run's report, its histograms summed from
    /// the intervals.
    ///
    /// # Errors
    ///
    /// [`LogError`] naming the first line that is wrong: not the log format, a histogram that
    /// does not decode, no `#[socketkit bench: ...]` line (a log of another tool: its run's
    /// parameters are unknown), or no closing line (the log was cut short).
    pub fn from_hdr_log(text: &str) -> Result<Report, LogError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let mut report = None;
        let mut ended = false;
        for (i, line) in text.lines().enumerate() {
            if let Some(json) = line.strip_prefix(HEADER) {
                let fail = |reason: String| LogError {
                    line: i + 1,
                    reason,
                };
                let json = json
                    .strip_suffix(']')
                    .ok_or_else(|| fail("the run's line is cut short".into()))?;
                let value: serde_json::Value = serde_json::from_str(json)
                    .map_err(|e| fail(format!("the run's line is not JSON ({e})")))?;
                report = Some(Report::from_fields(&value, false).map_err(fail)?);
            } else if line.starts_with(END) {
                ended = true;
            }
        }
        let mut report = report.ok_or_else(|| LogError {
            line: 1,
            reason: "not a socketkit bench log: no \"#[socketkit bench: ...]\" line names the \
                     run's parameters"
                .into(),
        })?;
        let mut seconds: Vec<(Histogram<u64>, Histogram<u64>, Duration)> = Vec::new();
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
            let index = interval.start_timestamp().as_secs_f64().round() as usize;
            if index > seconds.len() + 3600 {
                return Err(LogError {
                    line: line_of(offset),
                    reason: "an interval starts more than an hour after the one before".into(),
                });
            }
            while seconds.len() <= index {
                seconds.push((histogram(), histogram(), Duration::from_secs(1)));
            }
            let slot = &mut seconds[index];
            slot.2 = interval.duration();
            let into = match interval.tag().map(|t| t.as_str()) {
                None => &mut slot.0,
                Some(LAG_TAG) => &mut slot.1,
                Some(_) => continue,
            };
            into.auto(true);
            let _ = into.add(&h);
        }
        if !ended {
            return Err(LogError {
                line: text.lines().count().max(1),
                reason: "the log ends before its \"#[socketkit end: ...]\" line: it was cut short"
                    .into(),
            });
        }
        let recording = Recording::of(
            seconds
                .into_iter()
                .map(|(latency, lag, length)| Second {
                    latency,
                    lag,
                    length,
                })
                .collect(),
        );
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
    use crate::bench::counters::Counters;
    use crate::bench::plan::Plan;

    /// A report whose run recorded `values` (ns), second `i` getting the values at `i` mod
    /// `seconds`.
    fn run_of(values: &[u64], seconds: usize) -> Report {
        let counters = Counters::default();
        for second in 0..seconds {
            let mut h = histogram();
            for v in values.iter().skip(second).step_by(seconds) {
                h.record(*v).unwrap();
            }
            counters.merge(second, &h, &histogram());
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
}
