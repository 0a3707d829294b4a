//! A run's histograms over time in memory that does not grow with the run's length: at most
//! [`MAX_POINTS`] points, each the latencies and schedule lags of a span of adjacent seconds.
//! A run starts at one point a second; when a second falls past the last point, adjacent
//! points are added in pairs and the span doubles (1, 2, 4 ... seconds), so a day's run keeps
//! about 340 points of 256 s. Adding histograms loses no value: every point's counts are the
//! sum of its seconds'. Sans-IO.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The most points a timeline keeps: `--plot`'s per-second panels, and `socketkit report`'s
/// reading of an HDR log. A run of up to 10 minutes keeps one point a second; a longer one has
/// its adjacent seconds merged (2, 4, 8 ... s a point), so it keeps between 300 and 600. A
/// point is two histograms (latencies, lags), each as large as its largest value needs: 16 KB
/// below 1 ms, 8 KB more each time the largest doubles, 147 KB at 60 s. So a plot takes from
/// 20 MB to at most 180 MB however long the run, where each second took as much more before
/// (a loopback run of a debug build, with outliers of a few milliseconds, measured about
/// 140 KB a second: 12 GB a day). 600 points are more than the plot's 1000-pixel-wide panels
/// draw apart.
pub const MAX_POINTS: usize = 600;

/// A new latency histogram in nanoseconds, three significant digits, from 1 µs and growing as
/// far as its largest value (at most 60 s, where the workers clamp). Grown on demand rather
/// than sized for 60 s at once (147 KB): a timeline keeps up to [`MAX_POINTS`] of them, and a
/// point whose latencies stay under 1 ms takes 16 KB.
pub(crate) fn histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1_000, 2_000, 3).expect("valid histogram bounds");
    h.auto(true);
    h
}

/// One point: the latencies and schedule lags of `span` adjacent seconds.
pub(crate) type Point = (Histogram<u64>, Histogram<u64>);

/// At most `cap` points of `span` seconds each (a power of two), from the run's start.
#[derive(Debug, Clone)]
pub(crate) struct Timeline {
    cap: usize,
    span: u64,
    points: Vec<Point>,
    /// Where the latest second added ends, from the run's start: the last point's length.
    end: Duration,
}

impl Timeline {
    /// An empty timeline of at most `cap` points (at least 2, so that merging pairs frees room).
    pub(crate) fn new(cap: usize) -> Timeline {
        Timeline {
            cap: cap.max(2),
            span: 1,
            points: Vec::new(),
            end: Duration::ZERO,
        }
    }

    /// Adds the figures of `span` seconds from second `start` (a power of two dividing
    /// `start`, as a timeline's own points are; 1 for one second), which last `length` (less
    /// than `span` seconds for the run's end). Either histogram may be left out (an HDR log
    /// carries latencies and lags on lines of their own).
    pub(crate) fn add(
        &mut self,
        start: u64,
        span: u64,
        latency: Option<&Histogram<u64>>,
        lag: Option<&Histogram<u64>>,
        length: Duration,
    ) {
        while self.span < span {
            self.coarsen();
        }
        while start / self.span >= self.cap as u64 {
            self.coarsen();
        }
        let index = (start / self.span) as usize;
        while self.points.len() <= index {
            self.points.push((histogram(), histogram()));
        }
        let point = &mut self.points[index];
        for (into, h) in [(&mut point.0, latency), (&mut point.1, lag)] {
            if let Some(h) = h.filter(|h| !h.is_empty()) {
                into.auto(true);
                let _ = into.add(h);
            }
        }
        self.end = self
            .end
            .max(Duration::from_secs(start).saturating_add(length));
    }

    /// Adds adjacent points in pairs: half as many, each twice as long.
    fn coarsen(&mut self) {
        let points = std::mem::take(&mut self.points);
        let mut points = points.into_iter();
        while let Some((mut latency, mut lag)) = points.next() {
            if let Some((next_latency, next_lag)) = points.next() {
                let _ = latency.add(&next_latency);
                let _ = lag.add(&next_lag);
            }
            self.points.push((latency, lag));
        }
        self.span *= 2;
    }

    /// How many points it holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }

    /// How many seconds each point spans (the last may be cut short).
    pub(crate) fn span(&self) -> u64 {
        self.span
    }

    /// The points, each with its length: `span` seconds but for the last, which ends where
    /// the latest second added ends.
    pub(crate) fn into_points(self) -> impl Iterator<Item = (Point, Duration)> {
        let (span, end) = (self.span, self.end);
        self.points.into_iter().enumerate().map(move |(i, point)| {
            let from = Duration::from_secs(i as u64 * span);
            let to = Duration::from_secs((i as u64 + 1) * span).min(end);
            (point, to.saturating_sub(from))
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn one(value: u64) -> Histogram<u64> {
        let mut h = histogram();
        h.record(value).unwrap();
        h
    }

    #[test]
    fn a_run_within_the_cap_keeps_one_point_a_second() {
        let mut timeline = Timeline::new(MAX_POINTS);
        for second in 0..MAX_POINTS as u64 {
            timeline.add(second, 1, Some(&one(5_000)), None, Duration::from_secs(1));
        }
        assert_eq!(timeline.span(), 1);
        let points: Vec<_> = timeline.into_points().collect();
        assert_eq!(points.len(), MAX_POINTS);
        assert!(
            points
                .iter()
                .all(|((l, _), length)| l.len() == 1 && *length == Duration::from_secs(1))
        );
    }

    #[test]
    fn an_hour_keeps_at_most_the_cap_with_every_count() {
        let mut timeline = Timeline::new(MAX_POINTS);
        let hour = 3_600u64;
        let (latency, lag) = (one(5_000), one(2_000));
        for second in 0..hour {
            timeline.add(
                second,
                1,
                Some(&latency),
                Some(&lag),
                Duration::from_millis(if second + 1 == hour { 400 } else { 1_000 }),
            );
            assert!(timeline.points.len() <= MAX_POINTS, "at second {second}");
        }
        assert_eq!(timeline.span(), 8); // past 600, 1200 and 2400 s
        let points: Vec<_> = timeline.into_points().collect();
        assert_eq!(points.len(), 450);
        let latencies: u64 = points.iter().map(|((l, _), _)| l.len()).sum();
        let lags: u64 = points.iter().map(|((_, l), _)| l.len()).sum();
        assert_eq!((latencies, lags), (hour, hour));
        // Whole points of 8 s, and the last one as long as the seconds it holds.
        assert!(
            points[..449]
                .iter()
                .all(|(_, d)| *d == Duration::from_secs(8))
        );
        assert_eq!(points[449].1, Duration::from_millis(7_400));
        let total: Duration = points.iter().map(|(_, d)| *d).sum();
        assert_eq!(total, Duration::from_millis(3_599_400));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// However the seconds come (in any order, with gaps, any cap), the points stay within
        /// the cap, each holds exactly its seconds' values, and each second lands in the
        /// point that covers it.
        #[test]
        fn merged_points_hold_their_seconds_values(
            seconds in prop::collection::vec((0u64..5_000, 1_000u64..10_000_000), 1..200),
            cap in 2usize..40,
        ) {
            let mut timeline = Timeline::new(cap);
            for (second, value) in &seconds {
                timeline.add(*second, 1, Some(&one(*value)), None, Duration::from_secs(1));
                prop_assert!(timeline.points.len() <= cap);
            }
            let span = timeline.span();
            let last = seconds.iter().map(|s| s.0).max().unwrap();
            prop_assert!(last / span < cap as u64);
            prop_assert!(span == 1 || last / (span / 2) >= cap as u64, "no coarser than needed");
            let points: Vec<_> = timeline.into_points().collect();
            for (i, ((latency, _), _)) in points.iter().enumerate() {
                let mut want = histogram();
                for (second, value) in &seconds {
                    if second / span == i as u64 {
                        want.record(*value).unwrap();
                    }
                }
                prop_assert_eq!(latency.len(), want.len());
                for q in [0.0, 0.5, 0.99, 1.0] {
                    prop_assert_eq!(latency.value_at_quantile(q), want.value_at_quantile(q));
                }
            }
        }

        /// Spans added whole (another timeline's points) land where their seconds would.
        #[test]
        fn adding_spans_equals_adding_their_seconds(
            values in prop::collection::vec(1_000u64..10_000_000, 1..300),
            span_exp in 0u32..4,
        ) {
            let span = 1u64 << span_exp;
            let mut spans: Vec<Histogram<u64>> = Vec::new();
            for (second, value) in values.iter().enumerate() {
                let i = second / span as usize;
                if spans.len() <= i {
                    spans.push(histogram());
                }
                spans[i].record(*value).unwrap();
            }
            let mut timeline = Timeline::new(16);
            for (i, h) in spans.iter().enumerate() {
                let start = i as u64 * span;
                let length = Duration::from_secs((values.len() as u64 - start).min(span));
                timeline.add(start, span, Some(h), None, length);
            }
            let every = timeline.span();
            prop_assert!(every >= span);
            let points: Vec<_> = timeline.into_points().collect();
            prop_assert_eq!(points.len(), values.len().div_ceil(every as usize));
            for (i, ((latency, _), length)) in points.iter().enumerate() {
                let seconds = values.iter().skip(i * every as usize).take(every as usize);
                prop_assert_eq!(latency.len(), seconds.count() as u64);
                let want = (values.len() as u64 - i as u64 * every).min(every);
                prop_assert_eq!(*length, Duration::from_secs(want));
            }
        }
    }
}
