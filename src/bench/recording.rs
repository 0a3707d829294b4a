//! A run's raw latency histograms, whole and second by second: what `--plot` draws, what
//! `--hdr-log` keeps, and what `socketkit report` adds up across runs. Sans-IO.

use std::time::Duration;

#[cfg(feature = "hdr-log")]
use base64::Engine as _;
#[cfg(feature = "hdr-log")]
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;

use super::counters::histogram;
#[cfg(feature = "hdr-log")]
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

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

/// One second of a run (from its start): the requests completed in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Second {
    /// Latencies in nanoseconds of the requests answered in this second.
    pub latency: Histogram<u64>,
    /// How late the requests sent in this second left, in nanoseconds (`--rate` only; empty
    /// otherwise).
    pub lag: Histogram<u64>,
    /// The second's length: a whole second but for the run's last, which may be cut short.
    pub length: Duration,
}

impl Second {
    /// Good replies per second in this second.
    pub fn requests_per_second(&self) -> f64 {
        self.latency.len() as f64 / self.length.as_secs_f64().max(1e-3)
    }
}

/// A run's histograms (nanoseconds, 1 µs to 60 s, three significant digits).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recording {
    /// Every latency of the run; `None` when no request was timed (`stream`).
    pub latency: Option<Histogram<u64>>,
    /// Every schedule lag of the run; `None` without `--rate`.
    pub lag: Option<Histogram<u64>>,
    /// Second by second, from the run's start; empty where only the whole was kept (a
    /// `bench --json` output read back).
    pub seconds: Vec<Second>,
}

impl Recording {
    /// The recording of a run that lasted `elapsed`, from its seconds' histograms (latencies,
    /// lags), the whole being their sum.
    pub(crate) fn of_seconds(
        seconds: Vec<(Histogram<u64>, Histogram<u64>)>,
        elapsed: Duration,
    ) -> Recording {
        let mut seconds = seconds;
        // Seconds with no reply at the end of the run (a server that stalled, every request
        // timing out) are seconds of the run all the same: kept empty, so the plot and the log
        // show the stall rather than a shorter run. A run that timed nothing keeps none.
        if !seconds.is_empty() {
            let whole = usize::try_from(elapsed.as_secs()).unwrap_or(usize::MAX);
            while seconds.len() < whole {
                seconds.push((histogram(), histogram()));
            }
        }
        let count = seconds.len();
        let seconds: Vec<Second> = seconds
            .into_iter()
            .enumerate()
            .map(|(i, (latency, lag))| {
                let from = Duration::from_secs(i as u64);
                let length = if i + 1 == count {
                    elapsed
                        .saturating_sub(from)
                        .clamp(Duration::from_millis(1), Duration::from_secs(1))
                } else {
                    Duration::from_secs(1)
                };
                Second {
                    latency,
                    lag,
                    length,
                }
            })
            .collect();
        Recording::of(seconds)
    }

    /// The recording made of `seconds`, the whole being their sum.
    pub(crate) fn of(seconds: Vec<Second>) -> Recording {
        let sum = |pick: fn(&Second) -> &Histogram<u64>| {
            let mut all: Option<Histogram<u64>> = None;
            for second in &seconds {
                add_into(&mut all, pick(second));
            }
            all.filter(|h| !h.is_empty())
        };
        Recording {
            latency: sum(|s| &s.latency),
            lag: sum(|s| &s.lag),
            seconds,
        }
    }

    /// Adds `other` into this one: the whole histograms, and each second to the same second
    /// (runs from several machines are taken to have started together).
    pub fn add(&mut self, other: &Recording) {
        if let Some(h) = &other.latency {
            add_into(&mut self.latency, h);
        }
        if let Some(h) = &other.lag {
            add_into(&mut self.lag, h);
        }
        for (i, theirs) in other.seconds.iter().enumerate() {
            match self.seconds.get_mut(i) {
                Some(ours) => {
                    ours.latency.auto(true);
                    ours.lag.auto(true);
                    let _ = ours.latency.add(&theirs.latency);
                    let _ = ours.lag.add(&theirs.lag);
                    ours.length = ours.length.max(theirs.length);
                }
                None => self.seconds.push(theirs.clone()),
            }
        }
    }

    /// The latency percentiles, in microseconds.
    pub fn latency_percentiles(&self) -> Option<Latency> {
        self.latency.as_ref().and_then(Latency::of)
    }

    /// The schedule lag percentiles, in microseconds.
    pub fn lag_percentiles(&self) -> Option<Latency> {
        self.lag.as_ref().and_then(Latency::of)
    }
}

/// `all += h`, creating `all` from `h` if need be. The sum grows its range as needed: a
/// foreign log's histograms may reach past socketkit's 60 s.
pub(crate) fn add_into(all: &mut Option<Histogram<u64>>, h: &Histogram<u64>) {
    match all {
        Some(all) => {
            all.auto(true);
            let _ = all.add(h);
        }
        None => *all = Some(h.clone()),
    }
}

impl Latency {
    /// The percentiles of a histogram of nanoseconds, in microseconds; `None` when empty.
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Some(Latency {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1_000.0,
        })
    }
}

#[cfg(feature = "hdr-log")]
/// A histogram as HdrHistogram's compressed V2 encoding in base64 (`HISTFAAA...`), the form
/// of an interval log's last column and of `bench --json`'s `latency_histogram`.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .expect("serializing to memory does not fail");
    STANDARD.encode(bytes)
}

/// Reads [`encode`]'s form back.
///
/// # Errors
///
/// A one-line reason when the text is not base64 or not a V2 histogram (compressed or not).
#[cfg(feature = "hdr-log")]
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("the histogram is not base64 ({e})"))?;
    let mut h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("the histogram cannot be decoded ({e:?})"))?;
    h.auto(true);
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_without_a_reply_at_the_end_of_a_run_are_kept_empty() {
        let mut h = histogram();
        h.record(5_000).unwrap();
        // Replies in the first 2 s of a 5.0004 s run, none after: the server stalled.
        let seconds = vec![(h.clone(), histogram()), (h, histogram())];
        let recording = Recording::of_seconds(seconds, Duration::from_micros(5_000_400));
        assert_eq!(recording.seconds.len(), 5, "the stalled seconds are shown");
        assert!(recording.seconds[2..].iter().all(|s| s.latency.is_empty()));
        assert_eq!(recording.seconds[4].length, Duration::from_secs(1));
        assert_eq!(recording.latency.unwrap().len(), 2);
        // A run that timed nothing (stream mode) has no seconds to show.
        assert!(
            Recording::of_seconds(Vec::new(), Duration::from_secs(5))
                .seconds
                .is_empty()
        );
    }
}
