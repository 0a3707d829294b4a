//! A run's raw latency histograms, whole and over time: what `--plot` draws, what `--hdr-log`
//! keeps, and what `socketkit report` adds up across runs. Sans-IO.

use std::time::Duration;

#[cfg(feature = "hdr-log")]
use base64::Engine as _;
#[cfg(feature = "hdr-log")]
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;

use super::timeline::{MAX_POINTS, Timeline};
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

/// One second of a run (from its start), or one point of a long run's timeline (adjacent
/// seconds added, [`Recording::interval`]): the requests completed in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Second {
    /// Latencies in nanoseconds of the requests answered in this second.
    pub latency: Histogram<u64>,
    /// How late the requests sent in this second left, in nanoseconds (`--rate` only; empty
    /// otherwise).
    pub lag: Histogram<u64>,
    /// The second's length: a whole second (or interval) but for the run's last, which may be
    /// cut short.
    pub length: Duration,
}

impl Second {
    /// Good replies per second in this second (or interval).
    pub fn requests_per_second(&self) -> f64 {
        self.latency.len() as f64 / self.length.as_secs_f64().max(1e-3)
    }
}

/// A run's histograms (nanoseconds, 1 µs to 60 s, three significant digits).
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    /// Every latency of the run; `None` when no request was timed (`stream`).
    pub latency: Option<Histogram<u64>>,
    /// Every schedule lag of the run; `None` without `--rate`.
    pub lag: Option<Histogram<u64>>,
    /// The run over time, from its start, one entry per [`Recording::interval`]; empty where
    /// only the whole was kept (a run without `--plot`, a `bench --json` output read back).
    pub seconds: Vec<Second>,
    /// How long each of `seconds` is (the last may be cut short): one second, or for a run
    /// longer than [`MAX_POINTS`] seconds, a power of two seconds, adjacent seconds added so
    /// that at most `MAX_POINTS` are kept.
    ///
    /// [`MAX_POINTS`]: super::MAX_POINTS
    pub interval: Duration,
}

impl Default for Recording {
    fn default() -> Recording {
        Recording {
            latency: None,
            lag: None,
            seconds: Vec::new(),
            interval: Duration::from_secs(1),
        }
    }
}

impl Recording {
    /// The recording of the whole histograms (latencies, lags) and, where it was kept, the
    /// run over time.
    pub(crate) fn of(
        latency: Option<Histogram<u64>>,
        lag: Option<Histogram<u64>>,
        timeline: Option<Timeline>,
    ) -> Recording {
        let interval = Duration::from_secs(timeline.as_ref().map_or(1, Timeline::span));
        let seconds = timeline
            .into_iter()
            .flat_map(Timeline::into_points)
            .map(|((latency, lag), length)| Second {
                latency,
                lag,
                length,
            })
            .collect();
        Recording {
            latency: latency.filter(|h| !h.is_empty()),
            lag: lag.filter(|h| !h.is_empty()),
            seconds,
            interval,
        }
    }

    /// `seconds` as a timeline to add to.
    fn timeline(&self) -> Timeline {
        let mut timeline = Timeline::new(MAX_POINTS);
        let span = self.interval.as_secs().max(1);
        for (i, second) in self.seconds.iter().enumerate() {
            let start = i as u64 * span;
            timeline.add(
                start,
                span,
                Some(&second.latency),
                Some(&second.lag),
                second.length,
            );
        }
        timeline
    }

    /// Adds `other` into this one: the whole histograms, and the runs over time second by
    /// second (runs from several machines are taken to have started together; where one kept
    /// longer intervals than the other, the sum has the longer).
    pub fn add(&mut self, other: &Recording) {
        if let Some(h) = &other.latency {
            add_into(&mut self.latency, h);
        }
        if let Some(h) = &other.lag {
            add_into(&mut self.lag, h);
        }
        if other.seconds.is_empty() {
            return;
        }
        let mut timeline = self.timeline();
        let span = other.interval.as_secs().max(1);
        for (i, theirs) in other.seconds.iter().enumerate() {
            timeline.add(
                i as u64 * span,
                span,
                Some(&theirs.latency),
                Some(&theirs.lag),
                theirs.length,
            );
        }
        let whole = Recording::of(None, None, Some(timeline));
        self.seconds = whole.seconds;
        self.interval = whole.interval;
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
    use crate::bench::timeline::histogram;

    fn seconds(n: usize, value: u64) -> Recording {
        let mut timeline = Timeline::new(MAX_POINTS);
        let mut h = histogram();
        h.record(value).unwrap();
        for second in 0..n as u64 {
            timeline.add(second, 1, Some(&h), None, Duration::from_secs(1));
        }
        Recording::of(Some(h), None, Some(timeline))
    }

    #[test]
    fn runs_are_added_second_by_second_at_the_longer_interval() {
        // 10 s at one point a second, and 1500 s kept as 4-second points (past 600 and 1200 s).
        let mut short = seconds(10, 5_000);
        let long = seconds(1_500, 7_000);
        assert_eq!(long.interval, Duration::from_secs(4));
        short.add(&long);
        assert_eq!(short.interval, Duration::from_secs(4));
        assert_eq!(short.seconds.len(), 375);
        assert_eq!(short.seconds[0].latency.len(), 4 + 4);
        assert_eq!(
            short.seconds[2].latency.len(),
            2 + 4,
            "seconds 8 and 9, and 8 to 11"
        );
        assert_eq!(short.seconds[3].latency.len(), 4);
        let total: u64 = short.seconds.iter().map(|s| s.latency.len()).sum();
        assert_eq!(total, 1_510);
        assert_eq!(short.seconds[374].length, Duration::from_secs(4));
    }
}
